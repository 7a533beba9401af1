"""Phonemes (IPA from espeak-ng) -> visemes -> mouth targets in the motion space.

Viseme classes follow the common 15-class set (Oculus/ARKit-style): sil, PP, FF, TH, DD, kk, CH,
SS, nn, RR, aa, E, I, O, U. Each class has a target mouth pose, a dominance (how strongly it
wins against its neighbours: a bilabial must close the lips whatever surrounds it) and whether
closure is mandatory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine import motion as M


@dataclass(frozen=True)
class Viseme:
    name: str
    targets: dict[str, float]
    dominance: float


VISEMES: dict[str, Viseme] = {v.name: v for v in [
    Viseme("sil", {}, 0.6),
    Viseme("PP", {"jawOpen": 0.06, "mouthClose": 0.07, "mouthPress_L": 0.55, "mouthPress_R": 0.55}, 3.0),
    Viseme("FF", {"jawOpen": 0.10, "mouthClose": 0.04, "mouthUpperUp_L": 0.25, "mouthUpperUp_R": 0.25,
                  "mouthPress_L": 0.2, "mouthPress_R": 0.2}, 2.2),
    Viseme("TH", {"jawOpen": 0.16, "mouthStretch_L": 0.1, "mouthStretch_R": 0.1}, 1.4),
    Viseme("DD", {"jawOpen": 0.18, "mouthStretch_L": 0.1, "mouthStretch_R": 0.1}, 1.0),
    Viseme("kk", {"jawOpen": 0.22, "mouthStretch_L": 0.08, "mouthStretch_R": 0.08}, 0.8),
    Viseme("CH", {"jawOpen": 0.16, "mouthFunnel": 0.45, "mouthPucker": 0.25}, 1.6),
    Viseme("SS", {"jawOpen": 0.10, "mouthStretch_L": 0.25, "mouthStretch_R": 0.25, "mouthSmile_L": 0.1,
                  "mouthSmile_R": 0.1}, 1.3),
    Viseme("nn", {"jawOpen": 0.16, "mouthStretch_L": 0.05, "mouthStretch_R": 0.05}, 0.9),
    Viseme("RR", {"jawOpen": 0.18, "mouthFunnel": 0.25, "mouthPucker": 0.2}, 1.1),
    Viseme("aa", {"jawOpen": 0.62, "mouthLowerDown_L": 0.25, "mouthLowerDown_R": 0.25}, 1.2),
    Viseme("E", {"jawOpen": 0.38, "mouthStretch_L": 0.25, "mouthStretch_R": 0.25, "mouthUpperUp_L": 0.1,
                 "mouthUpperUp_R": 0.1}, 1.1),
    Viseme("I", {"jawOpen": 0.22, "mouthStretch_L": 0.35, "mouthStretch_R": 0.35, "mouthSmile_L": 0.2,
                 "mouthSmile_R": 0.2}, 1.1),
    Viseme("O", {"jawOpen": 0.42, "mouthFunnel": 0.55, "mouthPucker": 0.2}, 1.2),
    Viseme("U", {"jawOpen": 0.14, "mouthPucker": 0.75, "mouthFunnel": 0.3}, 1.4),
]}

# IPA symbol (espeak-ng spelling) -> viseme class. Longest match wins; diacritics are ignored.
_IPA: dict[str, str] = {}
for cls, symbols in {
    "PP": "p b m ɓ pʰ",
    "FF": "f v ɱ ʋ ɸ β",
    "TH": "θ ð",
    "DD": "t d ɾ ʈ ɖ tʰ ɗ",
    "kk": "k g ɡ ŋ x ɣ q ɢ ʔ h ɦ kʰ χ ħ ʕ ç ʝ",
    "CH": "ʃ ʒ tʃ dʒ tɕ dʑ ɕ ʑ ʂ ʐ tʂ dʐ ts dz tsʰ tɕʰ tʂʰ",
    "SS": "s z",
    "nn": "n l ɲ ɳ ɫ ʎ ɭ j ʟ ɬ",
    "RR": "ɹ r ʀ ʁ ɻ ɚ ɝ ɐ˞ ɾʲ",
    "aa": "a ɑ æ ʌ ɐ aː ɑː aɪ aʊ ä",
    "E": "e ɛ ə eː ɛː eɪ ɜ ɜː œ ø",
    "I": "i ɪ iː ɨ y ʏ ɪə",
    "O": "o ɔ oː ɔː oʊ əʊ ɒ ɔɪ ɤ",
    "U": "u ʊ uː w ɯ ʉ ɥ ʊə",
}.items():
    for sym in symbols.split():
        _IPA[sym] = cls
_MAXLEN = max(len(k) for k in _IPA)
_STRIP = "ˈˌːˑ̩̯̃̊͡‿ʰʲʷ-_!|"


def viseme_of(ipa: str) -> str:
    """Viseme class of one phoneme as espeak-ng spells it in IPA (diphthongs: the first part)."""
    s = ipa.strip()
    for n in range(min(_MAXLEN, len(s)), 0, -1):
        if s[:n] in _IPA:
            return _IPA[s[:n]]
    core = "".join(ch for ch in s if ch not in _STRIP)
    for n in range(min(_MAXLEN, len(core)), 0, -1):
        if core[:n] in _IPA:
            return _IPA[core[:n]]
    return "sil" if not core else "DD"


def target_vector(viseme: str) -> np.ndarray:
    v = M.zeros()
    for name, val in VISEMES[viseme].targets.items():
        v[M.index(name)] = val
    return v


MOUTH_DIMS = np.array([M.index(n) for n in M.EXPRESSIONS if n.startswith(("jaw", "mouth"))])
