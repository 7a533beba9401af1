"""Torch datasets over a corpus: windows of N motion frames with their audio context.

A window starting at video frame s holds motion[s:s+N], viseme[s:s+N] and the mel frames of
video frames s-past .. s+N-1+lookahead (4 mel frames per video frame), padded with silence at the
clip's edges, so a model sees exactly the audio it would see when streaming.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from engine.audio.frontend import FrontEnd, front_end
from engine.data import styles
from engine.data.corpus import SCENARIOS, Clip, read_manifest, read_shard


@dataclass
class WindowConfig:
    """Window sizes of the training samples."""

    frames: int = 50
    """Motion frames per window (2 s at 25 fps)."""
    past: int = 8
    """Video frames of audio before the window (context)."""
    lookahead: int = 2
    """Video frames of audio after the window's last frame (80 ms)."""
    stride: int = 25
    """Frames between window starts inside a clip."""
    front: FrontEnd = field(default_factory=lambda: front_end(None))
    """Which audio feature rows the model reads (engine.audio.frontend); default log-mel."""
    align: int = 1
    """Window starts are multiples of this (the speech features' chunk grid, so a window's chunks see the
    rows exactly as the streaming session computes them)."""


def window_config(encoder, frames: int) -> WindowConfig:
    """The windows a model with this `AudioEncoder` trains on: its past context and lookahead, its front
    end, and the speech features' chunk grid."""
    front = front_end(encoder.config)
    return WindowConfig(frames=int(frames), past=encoder.past_frames, lookahead=encoder.config.lookahead,
                        front=front, align=front.speech.chunk if front.speech else 1)


def window(clip: Clip, start: int, cfg: WindowConfig, rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
    """The window of `clip` starting at video frame `start` (may run past the end: padded, masked),
    with a style prompt drawn for the clip (`engine.data.styles.prompt_for`) as word ids."""
    n, T = cfg.frames, clip.frames
    start -= start % cfg.align
    front = cfg.front
    rows = front.clip_rows(clip)
    mels_per_frame = front.rows_per_frame
    motion = np.zeros((n, clip.motion.shape[1]), np.float32)
    vis = np.full(n, -1, np.int64)
    valid = np.zeros(n, bool)
    end = min(start + n, T)
    motion[: end - start] = clip.motion[start:end]
    vis[: end - start] = clip.viseme[start:end]
    valid[: end - start] = True
    m0 = (start - cfg.past) * mels_per_frame
    m1 = (start + n + cfg.lookahead) * mels_per_frame
    mel = np.full((m1 - m0, rows.shape[1]), front.pad, np.float32)
    a, b = max(m0, 0), min(m1, len(rows))
    if b > a:
        mel[a - m0: b - m0] = rows[a:b]
    scen = clip.info.get("scenario", "speech")
    ids, _ = styles.tokenize(styles.prompt_for(clip.info, rng or np.random.default_rng(start)))
    return {
        "motion": torch.from_numpy(motion),
        "mel": torch.from_numpy(mel),
        "viseme": torch.from_numpy(vis),
        "valid": torch.from_numpy(valid),
        "scenario": torch.tensor(SCENARIOS.index(scen) if scen in SCENARIOS else 0),
        "style": torch.from_numpy(styles.pad(ids)),
    }


class WindowDataset(IterableDataset):
    """Streams windows shard by shard (each DataLoader worker reads its own shards); shuffles shard
    order and windows within a shard per epoch; optional scenario filter."""

    def __init__(self, root: Path | str, cfg: WindowConfig | None = None, scenarios: tuple[str, ...] | None = None,
                 shuffle: bool = True, seed: int = 0) -> None:
        self.root = Path(root)
        self.cfg = cfg or WindowConfig()
        self.scenarios = scenarios
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        manifest = read_manifest(self.root)
        self.shards = sorted({row["shard"] for row in manifest
                              if scenarios is None or row["scenario"] in scenarios})
        self.windows_estimate = sum(max(1, int(np.ceil(row["frames"] / self.cfg.stride))) for row in manifest
                                    if scenarios is None or row["scenario"] in scenarios)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        info = get_worker_info()
        rng = np.random.default_rng([self.seed, self.epoch])
        shards = list(self.shards)
        if self.shuffle:
            rng.shuffle(shards)
        if info is not None:
            shards = shards[info.id::info.num_workers]
            rng = np.random.default_rng([self.seed, self.epoch, info.id])
        for k in shards:
            clips = [c for c in read_shard(self.root / k)
                     if self.scenarios is None or c.info.get("scenario") in self.scenarios]
            items = [(i, s) for i, c in enumerate(clips)
                     for s in range(0, max(1, c.frames - self.cfg.frames // 2), self.cfg.stride)]
            if self.shuffle:
                rng.shuffle(items)
                jitter = rng.integers(0, self.cfg.stride, len(items))
            else:
                jitter = np.zeros(len(items), int)
            for (i, s), j in zip(items, jitter):
                start = int(min(s + j, max(clips[i].frames - 1, 0)))
                yield window(clips[i], start, self.cfg, rng=rng)
