import numpy as np

from engine import motion as M
from engine.data.animator import AnimatorConfig, ProceduralAnimator
from engine.data.tts import EspeakTTS
from engine.data.visemes import viseme_of

FPS = 25


def _animate(text, **cfg):
    utt = EspeakTTS().synthesize(text)
    n = int(np.ceil(utt.duration * FPS))
    return utt, ProceduralAnimator(AnimatorConfig(**cfg)).animate(utt.phonemes, n, FPS, utt.audio, utt.sample_rate)


def test_bilabials_close_and_vowels_open():
    utt, motion = _animate("Bob saw a big map. Papa bought a mop.")
    jaw = motion[:, M.index("jawOpen")] - motion[:, M.index("mouthClose")]
    at = lambda t: jaw[min(int(t * FPS), len(jaw) - 1)]  # noqa: E731
    closed = [at((p.start + p.end) / 2) for p in utt.phonemes if viseme_of(p.ipa) == "PP"]
    opened = [at((p.start + p.end) / 2) for p in utt.phonemes if viseme_of(p.ipa) in ("aa", "O")]
    assert np.mean(closed) < 0.12 and np.mean(opened) > 0.25
    assert np.mean(opened) > 3 * np.mean(closed)


def test_mouth_leads_the_sound():
    utt = EspeakTTS().synthesize("Ah. Ah. Ah. Ah.")
    n = int(np.ceil(utt.duration * FPS))
    ts = (np.arange(n) + 0.5) / FPS
    early = ProceduralAnimator(AnimatorConfig(anticipation=0.08)).mouth(utt.phonemes, ts, None)
    late = ProceduralAnimator(AnimatorConfig(anticipation=0.0)).mouth(utt.phonemes, ts, None)
    jaw_e, jaw_l = early[:, M.index("jawOpen")], late[:, M.index("jawOpen")]
    lags = range(-4, 5)
    corr = [np.corrcoef(np.roll(jaw_e, k), jaw_l)[0, 1] for k in lags]
    assert list(lags)[int(np.argmax(corr))] in (1, 2)  # 80 ms = 2 frames earlier (frame sampling: 1-2)


def test_blinks_head_and_determinism():
    text = " ".join(["This is a longer passage so that several blinks can happen."] * 4)
    utt = EspeakTTS().synthesize(text)
    n = int(np.ceil(utt.duration * FPS))

    def run(**cfg):
        return ProceduralAnimator(AnimatorConfig(**cfg)).animate(utt.phonemes, n, FPS, utt.audio, utt.sample_rate)

    a, b, c = run(seed=3), run(seed=3), run(seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    blink = a[:, M.index("eyeBlink_L")]
    closures = int(np.sum((blink[1:] >= 0.99) & (blink[:-1] < 0.99)))
    seconds = len(a) / FPS
    assert 1 <= closures <= seconds / 1.2
    yaw = a[:, M.index("headYaw")]
    assert 0.005 < yaw.std() < 0.1 and np.abs(np.diff(yaw)).max() < 0.02  # small, smooth sway
    assert (a >= M.RANGES[:, 0]).all() and (a <= M.RANGES[:, 1]).all()
    still = run(seed=3, head_motion=0.0)
    assert still[:, M.index("headYaw")].std() == 0
