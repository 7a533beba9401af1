"""Sentences for the speech corpus: real words from installed word lists, shaped by a prosody generator.

Word sources (Debian packages; `installers/setup.sh` installs them):
  en wamerican (/usr/share/dict/american-english)   de wngerman   fr wfrench   es wspanish
  ru hunspell-ru (/usr/share/hunspell/ru_RU.dic)     ja mecab-ipadic (katakana readings of its CSVs)
  zh the word list inside the `jieba` Python package (dict.txt, with frequencies)

Every word is assigned to the train or the held-out split by a stable hash, so held-out
sentences never share a content word with training sentences.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

LANGUAGES = ("en", "de", "fr", "es", "ru", "zh", "ja")

# espeak-ng voices per language (Chinese: the pinyin voice reads Hanzi correctly; the plain `cmn`
# voice of Debian's build reads tone digits as English numbers).
VOICES: dict[str, tuple[str, ...]] = {
    "en": ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan"),
    "de": ("de",), "fr": ("fr", "fr-be"), "es": ("es", "es-419"), "ru": ("ru",),
    "zh": ("cmn-latn-pinyin",), "ja": ("ja",),
}
# espeak-ng voice variants (timbre): a voice id is "<voice>+<variant>"
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "croak", "klatt",
            "klatt2", "klatt3", "whisper", "whisperf", "adam", "anika", "belinda", "benjamin", "caleb",
            "david", "grandma", "grandpa", "linda", "max", "michel", "robert", "steph", "travis", "zac")

_SOURCES = {
    "en": ("/usr/share/dict/american-english", "wamerican"),
    "de": ("/usr/share/dict/ngerman", "wngerman"),
    "fr": ("/usr/share/dict/french", "wfrench"),
    "es": ("/usr/share/dict/spanish", "wspanish"),
    "ru": ("/usr/share/hunspell/ru_RU.dic", "hunspell-ru"),
    "ja": ("/usr/share/mecab/dic/ipadic", "mecab-ipadic"),
}

# Small closed-class vocabularies per language so that sentences have a sentence-like rhythm.
_FUNCTION = {
    "en": "the a and of to in is it that with for on my your this we they was not but",
    "de": "der die das und ist nicht ein eine mit auf für wir sie es zu im",
    "fr": "le la les et est un une avec pour dans nous vous il elle pas de",
    "es": "el la los las y es un una con para en nosotros ella no de que",
    "ru": "и в не на я что он она это мы с как но по",
    "zh": "的 了 是 在 我 你 他 我们 和 也 就 都 很 不",
    "ja": "ワ ガ ヲ ニ ト デ モ ノ デス マス",
}
_AND = {"en": "and", "de": "und", "fr": "et", "es": "y", "ru": "и", "zh": "和", "ja": "ト"}
_WH = {"en": "why", "de": "warum", "fr": "pourquoi", "es": "por qué", "ru": "почему", "zh": "为什么", "ja": "ナゼ"}

# Plosive-, bilabial- and labiodental-dense material for the "hard" scenario.
TONGUE_TWISTERS = (
    "Peter Piper picked a peck of pickled peppers.",
    "Bobby brought back big bright blue balloons.",
    "Mommy made me mash my M and Ms.",
    "Fred fed Ted bread, and Ted fed Fred bread.",
    "Five frantic frogs fled from fifty fierce fishes.",
    "Betty Botter bought some butter, but she said the butter's bitter.",
    "A big black bug bit a big black bear, made the big black bear bleed blood.",
    "Vincent vowed vengeance very vehemently.",
    "Pad kid poured curd pulled cod.",
    "Many mumbling mice are making merry music in the moonlight.",
    "Brave Pam bumped into a baby possum by the pump.",
    "Fuzzy Wuzzy was a bear, Fuzzy Wuzzy had no hair.",
    "Fischers Fritz fischt frische Fische.",
    "Blaukraut bleibt Blaukraut und Brautkleid bleibt Brautkleid.",
    "Bonjour madame, mon papa part pour Paris.",
    "Pablito clavó un clavito, ¿qué clavito clavó Pablito?",
)
_LABIAL = set("pbmfvPBMFV")


@functools.lru_cache(maxsize=None)
def words(language: str) -> tuple[str, ...]:
    """All usable words of `language` from its installed word source (cached)."""
    if language == "zh":
        return _jieba_words()
    if language not in _SOURCES:
        raise ValueError(f"no word source for language {language!r}; choose from {', '.join(LANGUAGES)}")
    path, package = _SOURCES[language]
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(
            f"The {language} word list {path} is missing. Install it: sudo apt-get install {package} "
            "(installers/setup.sh does this).")
    if language == "ja":
        return _ipadic_readings(p)
    lines = p.read_text("utf-8", errors="replace").splitlines()
    if language == "ru":
        lines = [ln.split("/")[0] for ln in lines[1:]]
    out = []
    for w in lines:
        w = w.strip()
        if 2 <= len(w) <= 12 and w.isalpha() and w.lower() == w:
            out.append(w)
    return tuple(sorted(set(out)))


def _jieba_words() -> tuple[str, ...]:
    spec = importlib.util.find_spec("jieba")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("The Chinese word list comes with the 'jieba' package: pip install jieba")
    path = Path(spec.submodule_search_locations[0]) / "dict.txt"
    out = []
    for line in path.read_text("utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 2 and int(parts[1]) >= 2000 and 1 <= len(parts[0]) <= 4:
            out.append(parts[0])
    return tuple(sorted(set(out)))


def _ipadic_readings(folder: Path) -> tuple[str, ...]:
    """Katakana readings of ipadic's common nouns, verbs and adjectives (espeak-ng reads kana)."""
    out = []
    for name in ("Noun.csv", "Verb.csv", "Adj.csv", "Adverb.csv"):
        f = folder / name
        if not f.exists():
            continue
        for line in f.read_bytes().decode("euc-jp", errors="replace").splitlines():
            cols = line.split(",")
            if len(cols) > 11 and re.fullmatch(r"[\u30a0-\u30ff]{2,8}", cols[11]):
                out.append(cols[11])
    if not out:
        raise FileNotFoundError(f"No readings found in {folder}; reinstall mecab-ipadic.")
    return tuple(sorted(set(out)))


def stable_bucket(token: str, buckets: int = 5) -> int:
    return int(hashlib.sha1(token.encode("utf-8")).hexdigest()[:8], 16) % buckets


def in_split(token: str, split: str) -> bool:
    """One fifth of all words and voices are held out (never used for training)."""
    held = stable_bucket(token) == 0
    return held if split == "heldout" else not held


@functools.lru_cache(maxsize=None)
def split_words(language: str, split: str) -> tuple[str, ...]:
    return tuple(w for w in words(language) if in_split(w, split))


@dataclass
class Sentence:
    text: str
    """Text for espeak-ng (SSML when `ssml`)."""
    ssml: bool
    style: str
    """statement, question, list, emphasis, pauses, exclamation, twister, dense."""


def _join(language: str, tokens: list[str]) -> str:
    return ("" if language in ("zh", "ja") else " ").join(tokens)


def _phrase(language: str, rng: np.random.Generator, pool: tuple[str, ...], n: int) -> list[str]:
    fun = _FUNCTION[language].split()
    out = []
    for _ in range(n):
        out.append(fun[rng.integers(len(fun))] if rng.random() < 0.3 else pool[rng.integers(len(pool))])
    return out


def sentence(language: str, rng: np.random.Generator, split: str = "train", style: str | None = None,
             max_words: int = 12) -> Sentence:
    """One sentence with varied prosody: statements, questions, lists, emphasis, pauses."""
    pool = split_words(language, split)
    style = style or str(rng.choice(["statement", "question", "list", "emphasis", "pauses", "exclamation"],
                                     p=[0.3, 0.2, 0.15, 0.12, 0.13, 0.1]))
    sep = "，" if language == "zh" else ("、" if language == "ja" else ", ")
    if style == "list":
        items = [pool[rng.integers(len(pool))] for _ in range(rng.integers(3, 6))]
        body = sep.join(items[:-1]) + (" " if language not in ("zh", "ja") else "") + _AND[language] + \
            (" " if language not in ("zh", "ja") else "") + items[-1]
        return Sentence(_escape(body) + ".", False, style)
    toks = _phrase(language, rng, pool, int(rng.integers(min(4, max_words), max_words + 1)))
    if style == "question":
        if rng.random() < 0.4:
            toks.insert(0, _WH[language])
        return Sentence(_join(language, toks) + "?", False, style)
    if style == "exclamation":
        return Sentence(_join(language, toks) + "!", False, style)
    if style == "emphasis":
        k = int(rng.integers(len(toks)))
        level = str(rng.choice(["strong", "moderate"]))
        parts = [_escape(t) for t in toks]
        parts[k] = f'<emphasis level="{level}">{parts[k]}</emphasis>'
        return Sentence(f"<speak>{_join(language, parts)}.</speak>", True, style)
    if style == "pauses":
        parts = [_escape(t) for t in toks]
        for k in sorted(rng.choice(len(parts), size=min(2, len(parts) - 1), replace=False), reverse=True):
            parts.insert(int(k) + 1, f'<break time="{int(rng.integers(200, 900))}ms"/>')
        return Sentence(f"<speak>{_join(language, parts)}.</speak>", True, style)
    return Sentence(_join(language, toks) + ".", False, "statement")


def hard_sentence(rng: np.random.Generator, split: str = "train", language: str = "en") -> Sentence:
    """Bilabial/labiodental-dense text: tongue twisters (training split only) or generated dense phrases."""
    if split == "train" and rng.random() < 0.35:
        return Sentence(TONGUE_TWISTERS[rng.integers(len(TONGUE_TWISTERS))], False, "twister")
    pool = split_words(language, split)
    dense = _dense_words(language, split)
    toks = [dense[rng.integers(len(dense))] if rng.random() < 0.8 else pool[rng.integers(len(pool))]
            for _ in range(rng.integers(5, 11))]
    return Sentence(_join(language, toks) + str(rng.choice([".", "!", "?"])), False, "dense")


@functools.lru_cache(maxsize=None)
def _dense_words(language: str, split: str) -> tuple[str, ...]:
    pool = split_words(language, split)
    dense = tuple(w for w in pool if sum(ch in _LABIAL for ch in w) >= 2)
    return dense or pool


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
