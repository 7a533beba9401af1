"""The corpus format: shards of clips in safetensors, a JSON-lines manifest, and readers.

A corpus folder holds
  shard-00000.safetensors ...   clips, concatenated per array (layout below)
  manifest.jsonl                one line per clip: id, shard (file name), index, scenario, language, voice,
                                style, text, duration (s), frames, augment record
  corpus.json                   how it was built (command arguments) and totals per scenario/language

Shard arrays (clip i is rows offsets[i]:offsets[i+1] of each array):
  audio         int16  [S]              16 kHz mono, scaled by 32767
  audio_offsets int64  [n+1]
  mel           float16 [4T, 80]        log-mel (engine.audio.features), 4 per video frame
  motion        float32 [T, 33]         motion latent per 25 fps frame (engine.motion)
  viseme        int8   [T]              viseme class per frame (index into VISEME_NAMES; -1 unknown)
  speech        float16 [2T, 384]       optional: speech-encoder features (engine.audio.speech), 2 per video
                                        frame; present in every clip of a shard or in none
  frame_offsets int64  [n+1]
Shard metadata: one key "talkcam" holding JSON {"format": "talkcam-shard-v1", "clips": [per-clip records]}
(everything in the manifest line plus phonemes [[ipa, start, end], ...] and, for songs, notes).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from engine.data.tts import Phoneme
from engine.data.visemes import VISEMES

FORMAT = "talkcam-shard-v1"
VISEME_NAMES = tuple(VISEMES)
SCENARIOS = ("speech", "singing", "pose", "hard", "real")


@dataclass
class Clip:
    """One clip: 16 kHz audio, its mel frames, motion and viseme label per video frame, and its record."""

    audio: np.ndarray
    mel: np.ndarray
    motion: np.ndarray
    viseme: np.ndarray
    info: dict = field(default_factory=dict)
    speech: np.ndarray | None = None
    """Speech-encoder feature rows [2T, 384] (engine.audio.speech), when computed."""

    @property
    def frames(self) -> int:
        return len(self.motion)

    @property
    def phonemes(self) -> list[Phoneme]:
        """The phoneme timings stored with a TTS clip (empty for real clips)."""
        return [Phoneme(p, a, b) for p, a, b in self.info.get("phonemes", [])]


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.safetensors"


def write_shard(path: Path, clips: list[Clip]) -> None:
    """Write atomically (temp file + rename), so an interrupted build never leaves a half shard."""
    a_off = np.cumsum([0] + [len(c.audio) for c in clips]).astype(np.int64)
    f_off = np.cumsum([0] + [c.frames for c in clips]).astype(np.int64)
    tensors = {
        "audio": np.concatenate([np.round(np.clip(c.audio, -1, 1) * 32767).astype(np.int16) for c in clips]),
        "audio_offsets": a_off,
        # "+ 0" turns -0.0 into 0.0, so equal content always gives equal bytes
        "mel": np.concatenate([c.mel.astype(np.float16) + np.float16(0) for c in clips]),
        "motion": np.concatenate([c.motion.astype(np.float32) + np.float32(0) for c in clips]),
        "viseme": np.concatenate([c.viseme.astype(np.int8) for c in clips]),
        "frame_offsets": f_off,
    }
    speech = [c.speech for c in clips if c.speech is not None]
    if clips and len(speech) == len(clips):
        tensors["speech"] = np.concatenate([s.astype(np.float16) + np.float16(0) for s in speech])
    # one metadata key: safetensors writes its metadata map in hash order, so several keys would make
    # the bytes differ from run to run
    meta = {"talkcam": json.dumps({"format": FORMAT, "clips": [c.info for c in clips]}, ensure_ascii=False)}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def shard_records(path: Path) -> list[dict] | None:
    """The clip records of a finished shard, or None when the file is missing or not a valid shard."""
    try:
        with safe_open(str(path), "np") as f:
            meta = _meta(f)
            return meta["clips"] if meta.get("format") == FORMAT else None
    except (OSError, ValueError, KeyError, TypeError, SafetensorError):  # missing, truncated or foreign file
        return None


def _meta(f) -> dict:
    raw = (f.metadata() or {}).get("talkcam")
    return json.loads(raw) if raw else {}


def read_shard(path: Path) -> list[Clip]:
    with safe_open(str(path), "np") as f:
        meta = _meta(f)
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} is not a talkcam shard (format {meta.get('format')!r})")
        arr = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a mapping)
    infos = meta["clips"]
    a, fo = arr["audio_offsets"], arr["frame_offsets"]
    m = len(arr["mel"]) // max(int(fo[-1]), 1) if fo[-1] else 4
    out = []
    for i, info in enumerate(infos):
        out.append(Clip(
            audio=arr["audio"][a[i]:a[i + 1]].astype(np.float32) / 32767.0,
            mel=arr["mel"][fo[i] * m:fo[i + 1] * m].astype(np.float32),
            motion=arr["motion"][fo[i]:fo[i + 1]],
            viseme=arr["viseme"][fo[i]:fo[i + 1]],
            info=info,
            speech=arr["speech"][2 * fo[i]:2 * fo[i + 1]].astype(np.float32) if "speech" in arr else None,
        ))
    return out


def scenario_clips(root: Path, scenarios: tuple[str, ...], limit: int | None = None) -> list[tuple[str, dict, Clip]]:
    """(scenario, manifest row, clip) for the first `limit` clips of each scenario, in manifest order;
    every shard is read once."""
    rows = read_manifest(Path(root))
    shards: dict[str, list[Clip]] = {}
    out = []
    for sc in scenarios:
        for row in [r for r in rows if r["scenario"] == sc][:limit]:
            if row["shard"] not in shards:
                shards[row["shard"]] = read_shard(Path(root) / row["shard"])
            out.append((sc, row, shards[row["shard"]][row["index"]]))
    return out


def manifest_line(info: dict, shard: str, index: int) -> dict:
    keep = {k: v for k, v in info.items() if k not in ("phonemes", "notes")}
    return {**keep, "shard": shard, "index": index}


def read_manifest(root: Path) -> list[dict]:
    path = Path(root) / "manifest.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{root} is not a corpus (no manifest.jsonl); build one with `talkcam data build`.")
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def write_manifest(root: Path, summary_args: dict | None = None) -> dict:
    """Rewrite manifest.jsonl from every valid shard in `root` (sorted by file name, so the same build
    gives the same file; ingested clips are included) and corpus.json with the totals."""
    root = Path(root)
    lines: list[str] = []
    clips, seconds, frames = 0, 0.0, 0
    groups: dict[str, dict[str, dict[str, float]]] = {"scenarios": {}, "languages": {}}
    voices = set()
    shards = 0
    for path in sorted(root.glob("*.safetensors")):
        records = shard_records(path)
        if records is None:
            continue
        shards += 1
        for i, info in enumerate(records):
            lines.append(json.dumps(manifest_line(info, path.name, i), ensure_ascii=False, sort_keys=True))
            clips += 1
            seconds += info["duration"]
            frames += info["frames"]
            for key, name in (("scenarios", info["scenario"]), ("languages", info.get("language", "?"))):
                slot = groups[key].setdefault(name, {"clips": 0, "seconds": 0.0})
                slot["clips"] += 1
                slot["seconds"] += info["duration"]
            voices.add(info.get("voice", "?"))
    totals = {"clips": clips, "seconds": seconds, "frames": frames, **groups, "voices": len(voices),
              "hours": seconds / 3600}
    tmp = root / "manifest.jsonl.tmp"
    tmp.write_text("\n".join(lines) + "\n", "utf-8")
    os.replace(tmp, root / "manifest.jsonl")
    summary = {"format": FORMAT, "args": summary_args or {}, "shards": shards, **totals}
    (root / "corpus.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), "utf-8")
    return summary


def add_speech_features(root: Path, config=None, progress=None, recompute: bool = False) -> int:
    """Compute the speech-encoder rows (engine.audio.speech) of every clip in the corpus `root` that lacks
    them (all clips with `recompute`) and rewrite its shard (atomically; an interrupted run resumes).
    Returns the clips computed."""
    from engine.audio.frontend import speech_settings, stored_speech_settings
    from engine.audio.speech import speech_features

    done = 0
    shards = sorted(Path(root).glob("*.safetensors"))
    task = progress.add_task("speech features", total=len(shards)) if progress is not None else None
    for path in shards:
        if shard_records(path) is None:
            continue
        clips = read_shard(path)
        todo = [c for c in clips if c.speech is None or recompute
                or stored_speech_settings(c.info) != speech_settings(config)]
        for c in todo:
            c.speech = speech_features(c.audio, c.frames, config)
            c.info["speech_features"] = speech_settings(config)
        if todo:
            write_shard(path, clips)
            done += len(todo)
        if task is not None:
            progress.advance(task)
    return done


def viseme_index(name: str) -> int:
    return VISEME_NAMES.index(name)
