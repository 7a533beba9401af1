#!/usr/bin/env bash
# Set up (first run) and run talkcam. The desktop window arrives with the GUI; until then, and
# on any machine without a display, this renders the bundled portrait speaking the bundled sample
# (assets/samples/hello.wav) through the live path: the shipped student, streamed chunk by chunk.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/installers/setup.sh"
cd "$ROOT"
OUT="${TALKCAM_OUT:-$ROOT/out/talkcam_hello.mp4}"
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
  echo "[run] (the desktop window is not built yet; rendering the demo video instead)" >&2
fi
"$ROOT/.venv/bin/talkcam" render --audio "$ROOT/assets/samples/hello.wav" --out "$OUT" "$@"
echo "[run] video written to: $OUT" >&2
