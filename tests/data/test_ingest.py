"""`talkcam data ingest` on the real clip: motion from landmarks, audio features, same shard format."""

from __future__ import annotations

import numpy as np
import pytest

from engine import motion as M
from engine.cli import main
from engine.data.corpus import read_manifest, read_shard
from engine.data.dataset import WindowConfig, WindowDataset
from engine.data.ingest import IngestError, ingest


@pytest.mark.slow
def test_ingest_sun_clip(tmp_path, data_dir, landmarker):
    info = ingest(data_dir / "real" / "sun_video.mp4", tmp_path, audio=data_dir / "real" / "sun_audio.wav",
                  landmarker=landmarker, max_seconds=8)
    assert info["frames"] == 200 and info["scenario"] == "real" and info["source"]["face_found"] == 1.0
    rows = read_manifest(tmp_path)
    assert len(rows) == 1 and rows[0]["shard"].startswith("real-sun_video")
    clip = read_shard(tmp_path / rows[0]["shard"])[0]
    assert clip.mel.shape == (800, 80) and np.isfinite(clip.motion).all()
    assert (clip.viseme == -1).all()  # no phoneme labels for real speech
    jaw = clip.motion[:, M.index("jawOpen")]
    assert jaw.std() > 0.003  # she talks: the fitted jaw moves
    # the fitted motion reproduces her landmarks: the basis fit explains the mouth
    batch = next(iter(WindowDataset(tmp_path, WindowConfig(frames=50), shuffle=False)))
    assert batch["motion"].shape == (50, M.DIM) and batch["valid"].all()


def test_ingest_needs_audio_for_a_silent_video(tmp_path, data_dir, caplog):
    with pytest.raises(IngestError, match="--audio"):
        ingest(data_dir / "real" / "sun_video.mp4", tmp_path)
    rc = main(["data", "ingest", str(data_dir / "real" / "sun_video.mp4"), "--out", str(tmp_path)])
    assert rc == 2 and "--audio" in caplog.text
