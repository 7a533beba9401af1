#!/usr/bin/env bash
# Set up (first run) and run talkcam: the desktop window where there is a display (microphone ->
# live avatar, virtual webcam, recording); on a machine without a display, a headless render of the
# bundled portrait speaking the bundled sample (assets/samples/hello.wav) through the same live
# pipeline, to out/talkcam_hello.mp4. Extra arguments go to `talkcam live` / `talkcam render`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/installers/setup.sh"
cd "$ROOT"
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] && [ -z "${TALKCAM_HEADLESS:-}" ]; then
  exec "$ROOT/.venv/bin/talkcam" live "$@"
fi
OUT="${TALKCAM_OUT:-$ROOT/out/talkcam_hello.mp4}"
"$ROOT/.venv/bin/talkcam" render --audio "$ROOT/assets/samples/hello.wav" --out "$OUT" --overwrite "$@"
echo "[run] no display: rendered the demo video to: $OUT" >&2
