"""Text-to-speech with exact phoneme timings, through libespeak-ng (ctypes).

espeak-ng reports a PHONEME event (IPA, with its position in the audio) for every phoneme it
speaks, so the lip animation can be placed on the exact audio sample where each sound starts.
The library keeps process-wide state, so one `EspeakTTS` object serialises all calls with a lock
and (re)selects its voice and parameters before every utterance.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from dataclasses import dataclass
from typing import Annotated

import numpy as np

from engine.limits import Range

log = logging.getLogger(__name__)

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_PHONEME_IPA = 0x0002
_INIT_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_SSML = 0x10
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_END = 5
_EVENT_MSG_TERMINATED = 6
_EVENT_PHONEME = 7
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_PARAM_RANGE = 4


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                  ctypes.POINTER(_Event))


class TTSError(RuntimeError):
    """espeak-ng is missing or rejected the request; the message says what to do."""


@dataclass(frozen=True)
class Phoneme:
    """One spoken phoneme: IPA symbol(s), start and end in seconds from the utterance start."""

    ipa: str
    start: float
    end: float


@dataclass(frozen=True)
class VoiceInfo:
    name: str
    identifier: str
    languages: tuple[str, ...]
    gender: str


@dataclass
class Utterance:
    """Synthesised speech: mono float32 audio in [-1, 1], its rate, phonemes and word starts."""

    audio: np.ndarray
    sample_rate: int
    phonemes: list[Phoneme]
    text: str

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


@dataclass
class TTSConfig:
    """espeak-ng voice settings."""

    voice: str = "en-us"
    """espeak-ng voice name or language code (see `talkcam voices`)."""
    rate: Annotated[int, Range(80, 450)] = 165
    """Speaking rate in words per minute (80-450)."""
    pitch: Annotated[int, Range(0, 100)] = 50
    """Base pitch, 0-100."""
    pitch_range: Annotated[int, Range(0, 100)] = 50
    """Pitch variation, 0-100 (0 = monotone)."""


SCRIPT_VOICES = {"Han": "cmn", "Japanese": "ja", "Hangul": "ko", "Cyrillic": "ru", "Arabic": "ar", "Greek": "el",
                 "Hebrew": "he", "Devanagari": "hi", "Thai": "th", "Georgian": "ka", "Armenian": "hy",
                 "Bengali": "bn", "Tamil": "ta"}
"""The espeak-ng voice that reads each non-Latin script (`talkcam voices` lists the others)."""

_VOICE_SCRIPTS = {"cmn": "Han", "yue": "Han", "ja": "Japanese", "ko": "Hangul", "ru": "Cyrillic", "uk": "Cyrillic",
                  "be": "Cyrillic", "bg": "Cyrillic", "mk": "Cyrillic", "sr": "Cyrillic", "ky": "Cyrillic",
                  "kk": "Cyrillic", "tt": "Cyrillic", "ba": "Cyrillic", "ar": "Arabic", "fa": "Arabic",
                  "ur": "Arabic", "el": "Greek", "grc": "Greek", "he": "Hebrew", "hi": "Devanagari",
                  "mr": "Devanagari", "ne": "Devanagari", "th": "Thai", "ka": "Georgian", "hy": "Armenian",
                  "bn": "Bengali", "ta": "Tamil"}
_SCRIPT_NAMES = {"CJK": "Han", "HIRAGANA": "Japanese", "KATAKANA": "Japanese", "HANGUL": "Hangul",
                 "CYRILLIC": "Cyrillic", "ARABIC": "Arabic", "GREEK": "Greek", "HEBREW": "Hebrew",
                 "DEVANAGARI": "Devanagari", "THAI": "Thai", "GEORGIAN": "Georgian", "ARMENIAN": "Armenian",
                 "BENGALI": "Bengali", "TAMIL": "Tamil", "LATIN": "Latin"}


def text_script(text: str) -> str:
    """The writing system of most of `text`'s letters: "Latin", a key of SCRIPT_VOICES, or "Other"
    (Japanese when kana appear among Han characters)."""
    import unicodedata

    counts: dict[str, int] = {}
    for ch in text:
        if not ch.isalpha():
            continue
        name = unicodedata.name(ch, "")
        script = _SCRIPT_NAMES.get(name.split(" ")[0], "Other") if name else "Other"
        counts[script] = counts.get(script, 0) + 1
    if not counts:
        return "Latin"
    if counts.get("Japanese") and counts.get("Han"):
        counts["Japanese"] += counts.pop("Han")
    return max(counts, key=counts.__getitem__)


def voice_for_text(text: str, voice: str, default: str = "en-us") -> tuple[str, str | None]:
    """The voice to read `text` with, and a note for the user (None when nothing changes). With the default
    voice, text in another script gets that script's voice; a voice chosen by the user is kept, with a
    warning naming the right one when it cannot read the text's script."""
    script = text_script(text)
    want = SCRIPT_VOICES.get(script)
    base = voice.lower().split("/")[-1].split("-")[0]
    voice_script = _VOICE_SCRIPTS.get(base, "Latin")
    if script in ("Latin", "Other") or voice_script == script:
        return voice, None
    if voice == default and want is not None:
        return want, f"The text is in {script} script: speaking it with the espeak-ng voice {want!r} (--voice sets another)."
    hint = f" Use --voice {want}." if want else " See `talkcam voices`."
    return voice, (f"The text is in {script} script, but the voice {voice!r} reads {voice_script} script: it will "
                   f"spell the characters out.{hint}")


def looks_like_ssml(text: str) -> bool:
    """True for SSML markup (a document starting with <speak>)."""
    head = text.lstrip()
    if head.startswith("<?xml"):
        head = head[head.find("?>") + 2:].lstrip() if "?>" in head else head
    return head.startswith("<speak")


def _load_library() -> ctypes.CDLL:
    names = ["libespeak-ng.so.1", "libespeak-ng.so", "libespeak-ng.dylib", "libespeak-ng.dll"]
    found = ctypes.util.find_library("espeak-ng")
    if found:
        names.insert(0, found)
    errors = []
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError as exc:
            errors.append(f"{name}: {exc}")
    raise TTSError(
        "espeak-ng's library (libespeak-ng) was not found. Install it: Debian/Ubuntu "
        "'sudo apt-get install espeak-ng libespeak-ng1', macOS 'brew install espeak-ng', Windows: "
        "the espeak-ng MSI from its releases page. Tried: " + "; ".join(errors)
    )


class EspeakTTS:
    """Speech synthesis with phoneme events. Thread-safe; the library is initialised lazily."""

    _lock = threading.Lock()  # libespeak-ng is one process-wide engine
    _lib: ctypes.CDLL | None = None
    _rate: int = 0

    def __init__(self, config: TTSConfig | None = None) -> None:
        self.config = config or TTSConfig()

    @classmethod
    def _library(cls) -> ctypes.CDLL:
        if cls._lib is None:
            lib = _load_library()
            lib.espeak_Initialize.restype = ctypes.c_int
            lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(_Voice)]
            lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
            lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                         ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
            lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
            lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
            rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                         _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA | _INIT_DONT_EXIT)
            if rate <= 0:
                raise TTSError("espeak-ng failed to initialise (its data folder espeak-ng-data is missing?)")
            cls._rate = rate
            cls._lib = lib
        return cls._lib

    @staticmethod
    def _set_by_language(lib: ctypes.CDLL, language: str) -> bool:
        spec = _Voice(name=None, languages=language.encode(), identifier=None, gender=0, age=0, variant=0)
        return lib.espeak_SetVoiceByProperties(ctypes.byref(spec)) == 0

    def voices(self) -> list[VoiceInfo]:
        with self._lock:
            lib = self._library()
            arr = lib.espeak_ListVoices(None)
            out = []
            i = 0
            while arr[i]:
                v = arr[i].contents
                langs = []
                raw = ctypes.string_at(v.languages, 64) if v.languages else b""
                # languages: repeated (priority byte, zero-terminated name), ended by a zero byte
                pos = 0
                while pos < len(raw) and raw[pos] != 0:
                    end = raw.index(b"\0", pos + 1)
                    name = raw[pos + 1:end].decode("utf-8", "replace")
                    if name.isprintable() and name.isascii() and len(name) > 1:
                        langs.append(name)
                    pos = end + 1
                out.append(VoiceInfo(name=v.name.decode("utf-8", "replace"),
                                     identifier=v.identifier.decode("utf-8", "replace"),
                                     languages=tuple(langs),
                                     gender={1: "male", 2: "female"}.get(v.gender, "unknown")))
                i += 1
            return out

    def synthesize(self, text: str, ssml: bool = False) -> Utterance:
        """Speak `text` (SSML markup such as <break>, <emphasis>, <prosody> when `ssml`)."""
        text = text.strip()
        if not text:
            raise TTSError("Nothing to say: the text is empty.")
        cfg = self.config
        chunks: list[np.ndarray] = []
        events: list[tuple[int, int, str]] = []  # (type, audio_position ms, ipa)

        def on_synth(wav, numsamples, event_ptr):
            if numsamples > 0:
                chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
            i = 0
            while event_ptr[i].type != _EVENT_LIST_TERMINATED:
                ev = event_ptr[i]
                if ev.type == _EVENT_PHONEME:
                    events.append((ev.type, ev.audio_position, ev.id.string.decode("utf-8", "replace")))
                elif ev.type in (_EVENT_END, _EVENT_MSG_TERMINATED, _EVENT_WORD):
                    events.append((ev.type, ev.audio_position, ""))
                i += 1
            return 0

        callback = _SynthCallback(on_synth)
        with self._lock:
            lib = self._library()
            if lib.espeak_SetVoiceByName(cfg.voice.encode()) != 0 and not self._set_by_language(lib, cfg.voice):
                raise TTSError(f"espeak-ng has no voice named {cfg.voice!r}; `talkcam voices` lists them.")
            lib.espeak_SetParameter(_PARAM_RATE, int(np.clip(cfg.rate, 80, 450)), 0)
            lib.espeak_SetParameter(_PARAM_PITCH, int(np.clip(cfg.pitch, 0, 100)), 0)
            lib.espeak_SetParameter(_PARAM_RANGE, int(np.clip(cfg.pitch_range, 0, 100)), 0)
            lib.espeak_SetParameter(_PARAM_VOLUME, 100, 0)
            lib.espeak_SetSynthCallback(callback)
            data = text.encode("utf-8")
            err = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0,
                                   _CHARS_UTF8 | (_SSML if ssml else 0), None, None)
            lib.espeak_Synchronize()
            sample_rate = self._rate
        if err != 0:
            raise TTSError(f"espeak-ng could not synthesise the text (error {err}).")
        audio = (np.concatenate(chunks).astype(np.float32) / 32768.0) if chunks else np.zeros(0, np.float32)
        duration = len(audio) / sample_rate
        phonemes = _phonemes_from_events(events, duration)
        log.debug("espeak-ng: %.2f s, %d phonemes for %r", duration, len(phonemes), text[:60])
        return Utterance(audio=audio, sample_rate=sample_rate, phonemes=phonemes, text=text)


def _phonemes_from_events(events: list[tuple[int, int, str]], duration: float) -> list[Phoneme]:
    """Phoneme events give starts; each phoneme ends where the next event (or the audio) begins."""
    # "(en)"-style entries are espeak's language-switch markers, not sounds
    starts = [(pos / 1000.0, ipa) for typ, pos, ipa in events
              if typ == _EVENT_PHONEME and ipa.strip() and not ipa.strip().startswith("(")]
    boundaries = sorted({pos / 1000.0 for typ, pos, _ in events if typ in (_EVENT_END, _EVENT_MSG_TERMINATED)})
    out: list[Phoneme] = []
    for i, (t0, ipa) in enumerate(starts):
        t1 = starts[i + 1][0] if i + 1 < len(starts) else duration
        later_ends = [b for b in boundaries if t0 < b < t1]
        if later_ends:
            t1 = later_ends[0]
        out.append(Phoneme(ipa=ipa.strip(), start=t0, end=max(t1, t0 + 1e-3)))
    return out
