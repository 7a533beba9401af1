import numpy as np
import pytest

from engine.data.tts import EspeakTTS, TTSConfig, TTSError
from engine.data.visemes import viseme_of


def test_phonemes_cover_the_audio_in_order():
    utt = EspeakTTS().synthesize("Peter Piper picked a peck of pickled peppers.")
    assert utt.sample_rate > 8000 and 1.5 < utt.duration < 6
    starts = [p.start for p in utt.phonemes]
    assert starts == sorted(starts)
    assert all(p.end > p.start for p in utt.phonemes)
    assert utt.phonemes[-1].end <= utt.duration + 1e-6
    bilabials = [p for p in utt.phonemes if viseme_of(p.ipa) == "PP"]
    assert len(bilabials) >= 8  # p p p p p p p (Peter Piper picked a peck ... peppers)
    # audio is quiet during a p closure and louder in the vowel after it
    p = bilabials[1]
    sr = utt.sample_rate
    closure = utt.audio[int(p.start * sr): int((p.start + 0.03) * sr)]
    vowel_ph = utt.phonemes[utt.phonemes.index(p) + 1]
    vowel = utt.audio[int(vowel_ph.start * sr): int(vowel_ph.end * sr)]
    assert np.sqrt(np.mean(closure**2)) < 0.5 * np.sqrt(np.mean(vowel**2))


@pytest.mark.parametrize("voice,text", [("de", "Guten Morgen, wie geht es dir?"), ("cmn", "你好，我是你的虚拟形象。"),
                                        ("ja", "こんにちは"), ("fr", "Bonjour tout le monde")])
def test_other_languages(voice, text):
    utt = EspeakTTS(TTSConfig(voice=voice)).synthesize(text)
    assert utt.duration > 0.3 and len(utt.phonemes) >= 4


def test_rate_changes_duration():
    slow = EspeakTTS(TTSConfig(rate=100)).synthesize("This sentence is spoken at two speeds.")
    fast = EspeakTTS(TTSConfig(rate=300)).synthesize("This sentence is spoken at two speeds.")
    assert fast.duration < 0.6 * slow.duration


def test_voices_and_errors():
    voices = EspeakTTS().voices()
    assert len(voices) > 50
    assert any("en-us" in v.languages for v in voices)
    with pytest.raises(TTSError, match="no voice named 'klingon-xx'"):
        EspeakTTS(TTSConfig(voice="klingon-xx")).synthesize("hello")
    with pytest.raises(TTSError, match="empty"):
        EspeakTTS().synthesize("   ")


def test_viseme_table():
    assert viseme_of("p") == viseme_of("b") == viseme_of("m") == "PP"
    assert viseme_of("f") == "FF" and viseme_of("ˈaɪ") == "aa" and viseme_of("uː") == "U"
    assert viseme_of("oʊ") == "O" and viseme_of("tʃ") == "CH" and viseme_of("ɹ") == "RR"
