"""Static checks that run with the tests: ruff (lint and import order) on engine/, app/, tests/ and installers/,
and mypy (types) on engine/ and app/, both configured in pyproject.toml. Each prints what it found, so a
failure says where."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=900)


def test_ruff_is_clean():
    out = _run("ruff", "check", "--no-cache", "engine", "app", "tests", "installers")
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]


def test_mypy_is_clean_on_engine_and_app():
    out = _run("mypy")  # files, strictness and stub settings: [tool.mypy] in pyproject.toml
    assert out.returncode == 0, out.stdout[-8000:] + out.stderr[-2000:]
    assert "Success: no issues found" in out.stdout
