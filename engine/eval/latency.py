"""The low-latency trade-off (`talkcam eval latency`): session chunk x lookahead against lip sync and live
latency, measured in one run (docs/latency.md).

For each (chunk, lookahead) setting of the live session (engine.runtime.config.SessionConfig):

- **lip sync**: the real-voice measure of `talkcam eval --realsync` (engine.eval.realsync) on the held-out
  real speakers: the student streams each clip's own audio through the live session (40 ms pieces, voice
  gate on), the portrait is rendered and re-measured with the face mesh, and the mouth opening is correlated
  with the speaker's own at lags of -8..+8 frames (r at the best lag). Per setting: the median and mean over
  clips, and the mean paired difference to the model's own geometry (the same clips, so clip difficulty
  cancels out);
- **latency**: the threaded live pipeline (engine.runtime.pipeline.Pipeline, as `talkcam bench` measures it)
  on the benchmark speech paced like a microphone (20 ms pieces in real time), with the renderer at the size
  given (default 512x512, no refiner): mic-to-frame latency p50/p95 (capture of a frame's own audio -> frame
  out). Each setting is measured `rounds` times, interleaved with the others (so a passing load on the
  machine hits all of them alike), and the median of the rounds is reported;
- **algorithmic latency**: the audio a frame waits for, (chunk - 1 + lookahead) x 40 ms for a chunk's first
  frame, lookahead x 40 ms for its last.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from engine.audio.io import FPS

log = logging.getLogger(__name__)

FRAME_MS = 1000 / FPS
SETTINGS: tuple[tuple[int, int], ...] = tuple((k, la) for k in (1, 2, 3) for la in (0, 1, 2))
"""(chunk, lookahead) pairs measured by default: every combination the session accepts."""


@dataclass
class LatencyRow:
    """One setting's measurements."""

    chunk: int
    lookahead: int
    algorithmic_ms_first: float
    """Audio the first frame of a chunk waits for: (chunk - 1 + lookahead) frames."""
    algorithmic_ms_last: float
    """Audio the last frame of a chunk waits for: lookahead frames."""
    r_median: float = float("nan")
    """Lip sync: median over the held-out clips of r at the best lag."""
    r_mean: float = float("nan")
    r_delta: float = float("nan")
    """Mean over clips of r minus r of the reference setting (the model's own chunk and lookahead)."""
    r_delta_se: float = float("nan")
    """Standard error of that mean (over clips)."""
    r_clips: dict = field(default_factory=dict)
    """Per clip: r at the best lag, the lag (frames; + = avatar late) and r at lag 0 (means over the seeds),
    and each seed's."""
    latency_ms_p50: float = float("nan")
    """Mic-to-frame latency p50 (median over the rounds)."""
    latency_ms_p95: float = float("nan")
    dropped_frames: int = 0
    """Frames dropped by the live pipeline (all rounds)."""
    rounds: list = field(default_factory=list)
    """Each round's pipeline summary (latency, processing, fps, dropped, ms per frame per stage)."""


def algorithmic_ms(chunk: int, lookahead: int) -> tuple[float, float]:
    """(first, last) frame of a chunk: milliseconds of audio after the frame's own that it waits for."""
    return (chunk - 1 + lookahead) * FRAME_MS, lookahead * FRAME_MS


def lipsync_scores(heldout: Path, real_root: Path, portrait: Path, settings=SETTINGS, max_seconds: float = 20.0,
                   size: tuple[int, int] = (256, 256), steps: int = 1, student_dir: Path | None = None,
                   cache_dir: Path | None = None, seeds: tuple[int, ...] = (0,)) -> dict[tuple[int, int], dict[str, dict]]:
    """{(chunk, lookahead): {clip id: {"r", "lag", "r0", "seeds"}}} on every clip of the held-out real corpus
    (first `max_seconds` of each), with engine.eval.realsync's session, renderer (no refiner), face mesh and
    correlation. The student samples from noise, so each clip is run with every seed of `seeds`: r, lag and
    r0 are their means, "seeds" each one's. The speaker's mouth is tracked once per clip."""
    from engine import paths
    from engine.audio.io import SAMPLE_RATE
    from engine.data.corpus import read_manifest, read_shard
    from engine.eval import metrics as E
    from engine.eval.evaluate import EvalConfig, Evaluator
    from engine.eval.realsync import _load_source, _source_motion, speaker_mouth

    ev = Evaluator(EvalConfig(size=size, steps=steps, refiner=False))
    framed = ev.frame(portrait, cache_dir)
    shape = framed.shape
    source = _load_source(str(student_dir or paths.student_dir()))  # the live session, voice gate on
    out: dict[tuple[int, int], dict[str, dict]] = {s: {} for s in settings}
    for row in read_manifest(heldout):
        clip = read_shard(heldout / row["shard"])[row["index"]]
        n = min(clip.frames, int(max_seconds * FPS))
        audio = clip.audio[: int(n / FPS * SAMPLE_RATE)]
        ref = speaker_mouth(clip, real_root, ev.landmarker, n)
        for k, la in settings:
            per = []
            for seed in seeds:
                t0 = time.perf_counter()
                mo = _source_motion(source, audio, n, shape, steps, chunk=k, lookahead=la, seed=seed)
                m = ev.measure(ev.render(framed, mo))
                lc = E.lag_corr(m.mouth[:n], ref, 8)
                per.append({"seed": seed, "r": float(lc.r), "lag": int(lc.offset), "r0": float(lc.r0)})
                log.info("lip sync %s chunk %d lookahead %d seed %d: r %.3f lag %+d (%.0f s)", row["id"], k, la, seed,
                         lc.r, lc.offset, time.perf_counter() - t0)
            out[(k, la)][row["id"]] = {"r": float(np.mean([p["r"] for p in per])),
                                       "lag": float(np.mean([p["lag"] for p in per])),
                                       "r0": float(np.mean([p["r0"] for p in per])), "seeds": per}
    return out


def live_latency(portrait: Path, settings=SETTINGS, seconds: float = 12.0, rounds: int = 3,
                 size: tuple[int, int] = (512, 512), student_dir: Path | None = None, cache_dir: Path | None = None,
                 base=None) -> dict[tuple[int, int], list[dict]]:
    """{(chunk, lookahead): [pipeline summary per round]}: the live pipeline (`AvatarEngine.pipeline_for`, the
    renderer at `size` without the refiner) on the benchmark speech paced like a microphone for `seconds`
    (engine.eval.bench's latency measure), rounds interleaved over the settings. Before each measurement a
    second of audio runs at full speed (first calls allocate). `base`: the SessionConfig the settings
    modify (default: the defaults)."""
    import dataclasses
    import tempfile

    from engine.audio.sources import FileSource
    from engine.eval.bench import _bench_audio
    from engine.render.renderer import RendererConfig
    from engine.runtime.config import SessionConfig
    from engine.runtime.live import LIVE_PIECE, PIECE, AvatarEngine
    from engine.runtime.stream import StudentStream

    base = base or SessionConfig()
    out: dict[tuple[int, int], list[dict]] = {s: [] for s in settings}
    with tempfile.TemporaryDirectory() as tmp:
        wav = _bench_audio(seconds + 1.0, Path(tmp))
        # the evaluation's fixed framing (no upscale limit), as in docs/latency.md's tables
        engine = AvatarEngine(RendererConfig(size=size, refiner=False, max_upscale=0.0), base, student_dir,
                              cache_dir=cache_dir)
        avatar = engine.avatar(portrait)
        for r in range(rounds):
            for k, la in settings:
                engine.session_config = dataclasses.replace(base, chunk=k, lookahead=la)
                engine.pipeline_for(FileSource(wav, PIECE, max_seconds=1.0), avatar, []).run()
                gc.collect()
                pipe = engine.pipeline_for(FileSource(wav, LIVE_PIECE, realtime=True, max_seconds=seconds), avatar, [])
                s = pipe.run().summary()
                assert isinstance(pipe.stream, StudentStream)  # what AvatarEngine.stream makes
                s["backend"] = getattr(pipe.stream.step, "name", None) or "torch"
                s["load_average_1min"] = os.getloadavg()[0]  # this run counts ~2-3 itself; more: another job ran
                out[(k, la)].append(s)
                log.info("latency round %d chunk %d lookahead %d: p50 %.0f p95 %.0f ms, dropped %d, student %.1f / "
                         "render %.1f ms per frame (%s)", r + 1, k, la, s["latency_ms_p50"], s["latency_ms_p95"],
                         s["dropped_frames"], s["student_ms_per_frame"], s["render_ms_per_frame"], s["backend"])
        engine.session_config = base
    return out


def latency_table(heldout: Path | None, real_root: Path, portrait: Path, lipsync_portrait: Path | None = None,
                  settings=SETTINGS, seconds: float = 12.0, rounds: int = 3, max_seconds: float = 20.0,
                  size: tuple[int, int] = (512, 512), lipsync_size: tuple[int, int] = (256, 256), steps: int = 1,
                  student_dir: Path | None = None, cache_dir: Path | None = None,
                  seeds: tuple[int, ...] = (0,)) -> list[LatencyRow]:
    """One row per (chunk, lookahead): lip sync on the held-out real speakers (skipped when `heldout` is None)
    and the live pipeline's latency (skipped when `seconds` is 0). The reference for `r_delta` is the model's
    own geometry (the standard preset) when it is among the settings."""
    from engine import paths
    from engine.models.loading import load_student

    st = load_student(Path(student_dir or paths.student_dir()))
    ref_setting = (st.config.chunk, st.audio_encoder.audio_lookahead)
    del st
    rows = {s: LatencyRow(s[0], s[1], *algorithmic_ms(*s)) for s in settings}
    if seconds > 0:
        for s, runs in live_latency(portrait, settings, seconds, rounds, size, student_dir, cache_dir).items():
            row = rows[s]
            row.rounds = runs
            row.latency_ms_p50 = float(np.median([x["latency_ms_p50"] for x in runs]))
            row.latency_ms_p95 = float(np.median([x["latency_ms_p95"] for x in runs]))
            row.dropped_frames = int(sum(x["dropped_frames"] for x in runs))
    if heldout is not None:
        scores = lipsync_scores(heldout, real_root, lipsync_portrait or portrait, settings, max_seconds,
                                lipsync_size, steps, student_dir, cache_dir, seeds)
        ref = scores.get(ref_setting)
        for s, clips in scores.items():
            row = rows[s]
            row.r_clips = clips
            rs = np.array([c["r"] for c in clips.values()])
            row.r_median, row.r_mean = float(np.median(rs)), float(np.mean(rs))
            if ref is not None:
                d = np.array([c["r"] - ref[cid]["r"] for cid, c in clips.items()])
                row.r_delta = float(d.mean())
                row.r_delta_se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return list(rows.values())


def markdown(rows: list[LatencyRow]) -> str:
    """The table of docs/latency.md."""
    lines = ["| chunk | lookahead | algorithmic ms (first / last frame of a chunk) | lip sync r median | r mean "
             "| Δr vs standard (± s.e.) | latency p50 ms | latency p95 ms | dropped frames | student ms/frame |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        stu = np.median([x["student_ms_per_frame"] for x in r.rounds]) if r.rounds else float("nan")
        lines.append(f"| {r.chunk} | {r.lookahead} | {r.algorithmic_ms_first:.0f} / {r.algorithmic_ms_last:.0f} "
                     f"| {r.r_median:.3f} | {r.r_mean:.3f} | {r.r_delta:+.3f} (± {r.r_delta_se:.3f}) | {r.latency_ms_p50:.0f} "
                     f"| {r.latency_ms_p95:.0f} | {r.dropped_frames} | {stu:.1f} |")
    return "\n".join(lines) + "\n"


def write_report(rows: list[LatencyRow], out: Path, meta: dict | None = None) -> None:
    """OUT/latency.md (the table) and OUT/latency.json (every measurement)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "latency.md").write_text(markdown(rows), "utf-8")
    (out / "latency.json").write_text(json.dumps({**(meta or {}), "rows": [asdict(r) for r in rows]}, indent=1,
                                                 default=float), "utf-8")


def run(out: Path, seconds: float = 12.0, rounds: int = 3, heldout: Path | None = None,
        real: Path = Path("../shared/data/real"), portrait: Path | None = None, lipsync_portrait: Path | None = None,
        max_seconds: float = 20.0, size: tuple[int, int] = (512, 512), lipsync_size: tuple[int, int] = (256, 256),
        settings=SETTINGS, steps: int = 1, seeds: tuple[int, ...] = (0, 1, 2), student_dir: Path | None = None,
        cache_dir: Path | None = None) -> list[LatencyRow]:
    """`talkcam eval latency`: measure every setting, write OUT/latency.md and OUT/latency.json, log the table.
    `heldout`: the held-out real corpus of `talkcam data real` (OUT/heldout; None: latency only); `real`: the
    real-media folder its videos came from; `seconds`: paced audio per latency measurement (0: lip sync
    only); `rounds`: latency measurements per setting (median reported); `steps`: the session's denoising
    steps (the live default, 1); `seeds`: noise seeds per clip for lip sync (r averaged over them)."""
    from engine import paths
    from engine.eval.bench import environment

    portrait = Path(portrait or paths.default_portrait())
    for name, s in (("--size", size), ("--lipsync-size", lipsync_size)):
        if len(s) != 2:
            raise ValueError(f"{name} takes a width and a height, got {' '.join(map(str, s))}")
    t0 = time.perf_counter()
    rows = latency_table(heldout, Path(real), portrait, lipsync_portrait, tuple(settings), seconds, rounds, max_seconds,
                         (int(size[0]), int(size[1])), (int(lipsync_size[0]), int(lipsync_size[1])), steps,
                         student_dir, cache_dir, tuple(seeds))
    meta = {"portrait": str(portrait), "lipsync_portrait": str(lipsync_portrait or portrait),
            "heldout": str(heldout) if heldout else None, "seconds": seconds, "rounds": rounds,
            "max_seconds": max_seconds, "steps": steps, "seeds": list(seeds), "size": list(size), "lipsync_size": list(lipsync_size),
            "wall_seconds": time.perf_counter() - t0, "environment": environment()}
    write_report(rows, Path(out), meta)
    log.info("Report: %s\n%s", Path(out) / "latency.md", markdown(rows))
    return rows
