"""Style prompts: a small fixed vocabulary of words that describe how the avatar should move.

The prompt is free text ("speaking calmly", "singing", "whispering fast"); words outside the
vocabulary are ignored (and reported by `tokenize`). Training draws a prompt per clip from what the
corpus knows about it (scenario, voice variant, speaking rate, head motion), with synonyms, so the
text embedding learns that "sing" and "song" mean the same.
"""

from __future__ import annotations

import re

import numpy as np

STYLE_WORDS: tuple[str, ...] = (
    "<pad>",
    "speaking", "talking", "speech", "speak", "talk",
    "singing", "sing", "song", "sung",
    "whispering", "whisper", "quietly", "softly",
    "fast", "quickly", "rapid", "rapidly",
    "slow", "slowly",
    "animated", "lively", "moving", "head", "expressive",
    "calm", "calmly", "still", "steady",
    "articulated", "clearly", "precise",
    "listening", "listen", "silent",
)
"""Index 0 is padding. Keep the order: checkpoints store embeddings by index."""
MAX_WORDS = 6
_SYN = {
    "speech": (("speaking",), ("talking",), ("speech",), ("speak",), ("talk",)),
    "singing": (("singing",), ("sing",), ("song",), ("singing", "expressive")),
    "whisper": (("whispering",), ("whisper",), ("quietly",), ("softly",)),
    "fast": (("fast",), ("quickly",), ("rapid",), ("rapidly",)),
    "slow": (("slow",), ("slowly",), ("calmly",)),
    "pose": (("animated",), ("lively",), ("moving", "head"), ("expressive",)),
    "hard": (("articulated",), ("clearly",), ("precise",)),
    "calm": (("calm",), ("calmly",), ("still",), ("steady",)),
}


def tokenize(prompt: str, max_words: int = MAX_WORDS) -> tuple[list[int], list[str]]:
    """Word ids of `prompt` (known words only, at most `max_words`) and the unknown words."""
    ids, unknown = [], []
    for w in re.findall(r"[a-z]+", prompt.lower()):
        if w in STYLE_WORDS[1:]:
            ids.append(STYLE_WORDS.index(w))
        else:
            unknown.append(w)
    return ids[:max_words], unknown


def pad(ids: list[int], max_words: int = MAX_WORDS) -> np.ndarray:
    out = np.zeros(max_words, np.int64)
    out[: len(ids[:max_words])] = ids[:max_words]
    return out


def scenario_prompt(scenario: str) -> str:
    """The plain prompt for a scenario when generating (singing sings, everything else speaks)."""
    return "singing" if scenario == "singing" else "speaking"


def prompt_for(info: dict, rng: np.random.Generator) -> str:
    """A training prompt for a corpus clip (from its scenario, voice, rate and head motion)."""
    scenario = info.get("scenario", "speech")
    parts: list[tuple[str, ...]] = []

    def pick(key: str) -> None:
        options = _SYN[key]
        parts.append(options[rng.integers(len(options))])

    voice = str(info.get("voice", ""))
    rate = float(info.get("tts", {}).get("rate", 170))
    if scenario == "singing":
        pick("singing")
    elif "whisper" in voice:
        pick("whisper")
    else:
        pick("speech")
    if scenario == "hard" and rng.random() < 0.7:
        pick("hard")
    if rate >= 230 and rng.random() < 0.8:
        pick("fast")
    elif rate <= 130 and rng.random() < 0.8:
        pick("slow")
    turns = float(info.get("animator", {}).get("head_turns", 0.0))
    if scenario == "pose" or turns > 0:
        if rng.random() < 0.8:
            pick("pose")
    elif float(info.get("animator", {}).get("head_motion", 1.0)) < 0.7 and rng.random() < 0.5:
        pick("calm")
    return " ".join(w for p in parts for w in p)
