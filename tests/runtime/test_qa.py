"""The QA pass as a user makes it: recordings keep the source's audio quality, `say` is crash-safe, numeric
options are validated, inputs are never overwritten, long jobs show progress and report Ctrl-C truly,
text is spoken as written (SSML, other scripts), output paths are checked before the work starts, and the
small CLI habits (no microphone, misspelled commands, cut-short WAVs, wrong output names)."""

from __future__ import annotations

import hashlib
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from engine.audio.io import load_audio, wav_shortfall
from engine.audio.sources import FileSource
from engine.cli import main
from engine.data.tts import text_script, voice_for_text
from engine.sinks.recorder import RecorderSink

from .conftest import REPO, SAMPLE

LONG_TEXT = " ".join(["This is a long sentence that the avatar keeps on saying for quite a while."] * 30)


def _talkcam() -> list[str]:
    return [sys.executable, "-m", "engine.cli"]


def _stereo_48k(path: Path, seconds: float = 3.0, sr: int = 48000) -> np.ndarray:
    """48 kHz (or `sr`) stereo WAV: 440 Hz on the left, 1000 Hz on the right."""
    t = np.arange(int(sr * seconds)) / sr
    x = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 1000 * t)], 1).astype(np.float32)
    with av.open(str(path), "w") as c:
        st = c.add_stream("pcm_s16le", rate=sr)
        st.layout = "stereo"
        f = av.AudioFrame.from_ndarray(np.round(x * 32767).astype(np.int16).reshape(1, -1), format="s16",
                                       layout="stereo")
        f.sample_rate = sr
        for p in st.encode(f):
            c.mux(p)
        for p in st.encode(None):
            c.mux(p)
    return x


def _audio_of(path: Path) -> tuple[int, int, np.ndarray]:
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        rate, channels = a.codec_context.sample_rate, a.codec_context.channels
        x = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], 1)
    return rate, channels, x


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def _complete_fragments(path: Path, out: Path) -> Path:
    """A copy of a fragmented MP4 up to its last complete fragment (what a kill leaves that is whole)."""
    data = path.read_bytes()
    pos = end = 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
        if size < 8 or pos + size > len(data):
            break
        pos += size
        if kind in (b"mdat", b"moov"):
            end = pos
    out.write_bytes(data[:end])
    return out


def _durations(path: Path) -> tuple[float, float]:
    """(video seconds, audio seconds) decodable from `path`."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        fps = float(v.average_rate or 25)
        n = sum(1 for _ in c.decode(video=0))
    with av.open(str(path)) as c:
        rate = c.streams.audio[0].codec_context.sample_rate
        a = sum(f.samples for f in c.decode(audio=0))
    return n / fps, a / rate


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- 1. recordings keep the source's audio ----------------------------------------------------------------
def test_render_records_48k_stereo_as_48k_stereo(tmp_path, session_cache):
    wav = tmp_path / "song.wav"
    _stereo_48k(wav)
    out = tmp_path / "song.mp4"
    rc = main(["render", "--audio", str(wav), "--out", str(out), "--size", "128", "128", "--cache-dir",
               str(session_cache)])
    assert rc == 0
    rate, channels, x = _audio_of(out)
    assert (rate, channels) == (48000, 2)
    mid = x[:, 48000:96000]
    assert abs(_peak_hz(mid[0], rate) - 440) < 3 and abs(_peak_hz(mid[1], rate) - 1000) < 3  # L and R kept apart
    v, a = _durations(out)
    assert abs(v - 3.0) <= 0.04 and abs(a - v) <= 1 / 25 + 2 * 1024 / 48000


def test_a_rate_aac_cannot_take_is_recorded_at_48k(tmp_path, session_cache):
    """A 192 kHz studio file: AAC has no 192 kHz, so the recording is 48 kHz stereo (it failed before)."""
    wav = tmp_path / "studio.wav"
    _stereo_48k(wav, 1.0, sr=192000)
    out = tmp_path / "studio.mp4"
    assert main(["render", "--audio", str(wav), "--out", str(out), "--size", "128", "128", "--cache-dir",
                 str(session_cache)]) == 0
    rate, channels, x = _audio_of(out)
    assert (rate, channels) == (48000, 2)
    assert abs(_peak_hz(x[0, 4800:43200], rate) - 440) < 3 and abs(_peak_hz(x[1, 4800:43200], rate) - 1000) < 3


def test_live_recording_keeps_the_sources_own_audio(tmp_path, engine, avatar):
    """The live path (a file paced like a microphone) records 48 kHz stereo, aligned with the frames."""
    wav = tmp_path / "in.wav"
    x = _stereo_48k(wav, 2.0)
    out = tmp_path / "live.mp4"
    rec = RecorderSink(out)
    engine.pipeline_for(FileSource(wav, 640, realtime=True), avatar, [rec]).run()
    assert rec.error is None
    rate, channels, y = _audio_of(out)
    assert (rate, channels) == (48000, 2)
    # AAC is lossy: compare the tones' levels, not samples
    assert abs(np.sqrt((y[0, 4800:-4800] ** 2).mean()) - 0.5 / np.sqrt(2)) < 0.03
    assert abs(np.sqrt((y[1, 4800:-4800] ** 2).mean()) - 0.3 / np.sqrt(2)) < 0.03
    assert abs(_peak_hz(y[1, 9600:57600], rate) - 1000) < 3
    v, a = _durations(out)
    assert abs(a - v) <= 1 / 25 + 2 * 1024 / 48000 and v >= 1.9
    assert len(x) == 96000


# -- 2. say is crash-safe ----------------------------------------------------------------------------------
def _ctrl_c_as_a_terminal_gives_it():
    """In the child: SIGINT as a user's terminal delivers it. A test runner (or an earlier test) may have left
    SIGINT ignored in this process, and an ignored signal is inherited: Python would then never raise
    KeyboardInterrupt (seen in CI: the job ran to its end)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_say(out: Path, tmp_path: Path, *extra: str, preexec=None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def child():
        _ctrl_c_as_a_terminal_gives_it()
        if preexec is not None:
            preexec()

    return subprocess.Popen([*_talkcam(), "say", LONG_TEXT, "--out", str(out), "--size", "256", "256",
                             "--cache-dir", str(tmp_path / "cache"), *extra], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=child)


def _wait_for_size(out: Path, size: int, p: subprocess.Popen, limit: float = 180) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if out.exists() and out.stat().st_size > size:
            return
        if p.poll() is not None:
            raise AssertionError(f"say ended early: {p.stderr.read()[-2000:]}")
        time.sleep(0.1)
    raise AssertionError("say wrote nothing")


def test_say_killed_leaves_a_playable_file_with_equal_streams(tmp_path):
    out = tmp_path / "killed.mp4"
    p = _start_say(out, tmp_path)
    _wait_for_size(out, 150_000, p)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    whole = _complete_fragments(out, tmp_path / "whole.mp4")
    v, a = _durations(whole)
    assert v >= 2.0
    assert abs(v - a) <= 1 / 25 + 2 * 1024 / 22050  # equal streams up to the last complete fragment


def test_say_ctrl_c_ends_the_file_cleanly_and_says_so(tmp_path):
    out = tmp_path / "stopped.mp4"
    p = _start_say(out, tmp_path)
    _wait_for_size(out, 100_000, p)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err[-2000:]
    err = " ".join(err.split())  # the console wraps long lines
    assert "Interrupted" in err and "Traceback" not in err and "Done" not in err
    v, a = _durations(out)
    assert v >= 1.0 and abs(v - a) <= 1 / 25 + 2 * 1024 / 22050


def test_say_on_a_full_disk_says_so_once_and_leaves_a_playable_file(tmp_path):
    import resource

    def limit():  # the disk fills at 200 kB
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    out = tmp_path / "full.mp4"
    p = _start_say(out, tmp_path, "--no-cache", preexec=limit)
    _, err = p.communicate(timeout=600)
    assert p.returncode == 2, err[-2000:]
    err = " ".join(err.split())  # the console wraps long lines
    assert err.count("disk is full") == 1 and "stay playable" in err
    assert out.stat().st_size <= 200_000
    whole = _complete_fragments(out, tmp_path / "whole.mp4")
    v, a = _durations(whole)
    assert v >= 1.0 and abs(v - a) <= 1 / 25 + 2 * 1024 / 22050


# -- 3. numeric options are validated at the boundary ------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["say", "Hi.", "--fps", "0"], "--fps 0 is out of range: it must be from 1 to 60"),
    (["say", "Hi.", "--fps", "-5"], "--fps -5 is out of range"),
    (["say", "Hi.", "--rate", "5"], "--rate 5 is out of range: it must be from 80 to 450"),
    (["render", "--audio", str(SAMPLE), "--max-seconds", "-1"], "--max-seconds -1.0 is out of range"),
    (["render", "--audio", str(SAMPLE), "--guidance", "nan"], "--guidance nan is out of range"),
    (["bench", "--frames", "0"], "--frames 0 is out of range"),
    (["live", "--no-gui", "--seconds", "-3"], "--seconds -3.0 is out of range"),
])
def test_numeric_options_are_checked_before_any_work(args, message, tmp_path, caplog):
    t0 = time.monotonic()
    assert main([*args, "--out", str(tmp_path / "x.mp4")] if args[0] in ("say", "render") else args) == 2
    assert message in caplog.text
    assert time.monotonic() - t0 < 30  # no model was loaded (and nothing hangs)
    assert not (tmp_path / "x.mp4").exists()


# -- 4. inputs are never overwritten; outputs only with --overwrite ----------------------------------------
def test_no_command_writes_over_its_input(tmp_path, caplog):
    wav = tmp_path / "same.wav"
    wav.write_bytes(SAMPLE.read_bytes())
    before = _sha(wav)
    assert main(["render", "--audio", str(wav), "--out", str(wav)]) == 2
    assert _sha(wav) == before
    clip = tmp_path / "clip.mp4"  # a video as the audio input, the same name as the output
    clip.write_bytes(b"not really a video")
    assert main(["render", "--audio", str(clip), "--out", str(clip), "--overwrite"]) == 2
    assert "is also an input" in caplog.text and clip.read_bytes() == b"not really a video"
    portrait = tmp_path / "me.mp4"
    portrait.write_bytes(b"x")
    assert main(["say", "Hi.", "--portrait", str(portrait), "--out", str(portrait), "--overwrite"]) == 2
    assert portrait.read_bytes() == b"x"


def test_an_existing_output_is_replaced_only_with_overwrite(tmp_path, caplog, session_cache):
    out = tmp_path / "exists.mp4"
    out.write_bytes(b"keep me")
    assert main(["say", "Hi.", "--out", str(out), "--size", "128", "128", "--cache-dir", str(session_cache)]) == 2
    assert "exists. Add --overwrite" in caplog.text and out.read_bytes() == b"keep me"
    assert main(["say", "Hi.", "--out", str(out), "--size", "128", "128", "--cache-dir", str(session_cache),
                 "--overwrite"]) == 0
    assert _durations(out)[0] > 0.3


# -- 5. progress and the true outcome of Ctrl-C -------------------------------------------------------------
def test_render_and_say_report_progress_to_the_end(tmp_path, session_cache):
    from engine import paths
    from engine.render.renderer import RendererConfig
    from engine.runtime.render_file import render_file
    from engine.runtime.say import say

    seen: list[tuple[float, float]] = []
    render_file(SAMPLE, paths.default_portrait(), tmp_path / "r.mp4", render=RendererConfig(size=(128, 128)),
                cache_dir=session_cache, max_seconds=2.0, progress=lambda d, t: seen.append((d, t)))
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == pytest.approx(2.0) and {t for _, t in seen} == {2.0}
    seen.clear()
    res = say("Hello there, how are you?", paths.default_portrait(), tmp_path / "s.mp4",
              render=RendererConfig(size=(128, 128)), cache_dir=session_cache,
              progress=lambda d, t: seen.append((d, t)))
    assert len(seen) >= 3 and seen[-1] == pytest.approx((res.duration, res.duration))


def test_render_interrupted_says_so_and_exits_non_zero(tmp_path):
    long = tmp_path / "long.wav"
    audio = np.tile(load_audio(SAMPLE), 6)  # about a minute
    from engine.sinks.wav import write_wav

    write_wav(long, audio, 16000)
    out = tmp_path / "r.mp4"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([*_talkcam(), "render", "--audio", str(long), "--out", str(out), "--size", "128", "128",
                          "--cache-dir", str(tmp_path / "cache")], cwd=REPO, env=env, stderr=subprocess.PIPE,
                         text=True, preexec_fn=_ctrl_c_as_a_terminal_gives_it)
    _wait_for_size(out, 30_000, p)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err[-2000:]
    err = " ".join(err.split())  # the console wraps long lines
    assert "Interrupted" in err and "Done" not in err
    v, a = _durations(out)
    assert 0.5 < v < len(audio) / 16000 - 5 and abs(v - a) <= 1 / 25 + 2 * 1024 / 16000


# -- 6. text is spoken as written ---------------------------------------------------------------------------
def test_ssml_is_obeyed_not_read_aloud(tmp_path, session_cache):
    from engine import paths
    from engine.render.renderer import RendererConfig
    from engine.runtime.say import say

    text = '<speak>Hello.<break time="2s"/>World.</speak>'
    kw = dict(render=RendererConfig(size=(128, 128)), cache_dir=session_cache)
    res = say(text, paths.default_portrait(), tmp_path / "a.mp4", **kw)  # detected
    assert 2.5 < res.duration < 4.0  # read aloud, the tags take 5.4 s ("speak", "break time equals ...")
    res2 = say(text, paths.default_portrait(), tmp_path / "b.mp4", ssml=True, **kw)
    assert res2.duration == pytest.approx(res.duration)


def test_other_scripts_get_a_voice_that_reads_them(tmp_path, session_cache, caplog):
    from engine import paths
    from engine.render.renderer import RendererConfig
    from engine.runtime.say import say

    assert text_script("你好世界") == "Han" and text_script("こんにちは世界") == "Japanese"
    assert text_script("Привет") == "Cyrillic" and text_script("Hello, 123!") == "Latin"
    assert voice_for_text("你好世界", "en-us")[0] == "cmn"
    voice, note = voice_for_text("你好世界", "en-gb")  # chosen by the user: kept, with the right one named
    assert voice == "en-gb" and "--voice cmn" in note
    assert voice_for_text("Hello", "en-us") == ("en-us", None)
    res = say("你好世界，我是你的头像", paths.default_portrait(), tmp_path / "zh.mp4",
              render=RendererConfig(size=(128, 128)), cache_dir=session_cache)
    assert "voice 'cmn'" in caplog.text
    assert res.duration < 4.5  # with the English voice: "Chinese letter" per character, 5.7 s


# -- 7. output paths are checked before the work starts, and errors are said once --------------------------
def test_bad_output_paths_are_refused_before_any_work(tmp_path, caplog):
    folder = tmp_path / "folder.mp4"
    folder.mkdir()
    t0 = time.monotonic()
    assert main(["render", "--audio", str(SAMPLE), "--out", str(folder)]) == 2
    assert "is a folder" in caplog.text and "Nothing was written" in caplog.text
    assert "stays playable" not in caplog.text and "stay playable" not in caplog.text
    caplog.clear()
    assert main(["say", "Hi.", "--out", "/proc/talkcam-test.mp4"]) == 2
    said = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(said) == 1 and "not writable" in said[0] and "Nothing was written" in said[0]
    caplog.clear()
    assert main(["live", "--no-gui", "--audio", str(SAMPLE), "--record", str(folder)]) == 2
    assert "is a folder" in caplog.text and "Portrait" not in caplog.text  # before any model or portrait
    assert time.monotonic() - t0 < 30


# -- 8. small CLI habits -------------------------------------------------------------------------------------
def test_mics_says_when_there_is_no_microphone(monkeypatch, caplog):
    import engine.audio.mic as mic

    monkeypatch.setattr(mic, "list_microphones", lambda: [])
    assert main(["mics"]) == 1
    assert "No microphone found" in caplog.text


def test_a_misspelled_command_gets_a_suggestion(caplog):
    assert main(["rendr", "--audio", "x.wav"]) == 2
    assert "Did you mean talkcam render?" in caplog.text
    assert main(["train", "studnt"]) == 2
    assert "talkcam train student" in caplog.text


def test_a_cut_short_wav_is_warned_about(tmp_path, caplog):
    full = tmp_path / "full.wav"
    from engine.sinks.wav import write_wav

    write_wav(full, np.tile(load_audio(SAMPLE), 2)[:160000], 16000)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[: 44 + 2 * 48000])  # 3 s of the announced 10 s
    assert wav_shortfall(full) is None
    assert wav_shortfall(cut) == pytest.approx((10.0, 3.0))
    audio = load_audio(cut)
    assert len(audio) == 48000
    assert "cut short" in caplog.text and "announces 10.0 s" in caplog.text


@pytest.mark.parametrize("name", ["x.avi", "x.gif", "x"])
def test_output_names_that_are_not_mp4_are_refused(name, tmp_path, caplog):
    assert main(["say", "Hi.", "--out", str(tmp_path / name)]) == 2
    assert "Name it x.mp4" in caplog.text and not (tmp_path / name).exists()


def test_the_cache_flag_reads_plainly(capsys):
    with pytest.raises(SystemExit):
        main(["say", "--help"])
    text = capsys.readouterr().out
    assert "--no-cache" in text and "--no-no-cache" not in text


# -- console noise (issue 19, item 6) -------------------------------------------------------------------------
def test_the_console_shows_only_talkcams_own_lines(tmp_path):
    """MediaPipe's native absl/TF-Lite chatter, torch's exporter warnings and Python deprecation warnings go
    to the log file, not the user's console (a fresh cache: the ONNX exports run too)."""
    import re

    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_STATE_HOME": str(tmp_path / "state"),
           "PYTHONUNBUFFERED": "1"}
    p = subprocess.run([*_talkcam(), "render", "--audio", str(SAMPLE), "--out", str(tmp_path / "n.mp4"), "--size",
                        "128", "128", "--max-seconds", "1"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    noise = [line for line in p.stderr.splitlines()
             if re.match(r"^([IWEF]\d{4} |INFO: Created|WARNING: All log)", line) or "Warning:" in line
             or "warnings.warn" in line or "return cls.__new__" in line]
    assert noise == [], noise
    logged = (tmp_path / "state" / "talkcam" / "log" / "talkcam.log").read_text()
    assert "mediapipe: " in logged and "Done:" in logged


def test_text_with_nothing_to_speak_is_refused(tmp_path, caplog):
    """Punctuation alone (espeak-ng reads nothing) fails with the reason instead of writing a silent clip."""
    out = tmp_path / "silent.mp4"
    assert main(["say", "...", "--out", str(out)]) == 2
    assert "Nothing to say" in caplog.text and not out.exists()
