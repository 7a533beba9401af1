#!/usr/bin/env bash
# GPU check (docs/gpu-check.md): CUDA against CPU equivalence, benchmarks beside CPU baselines, a long run.
#
#   bash installers/gpu-check.sh --prepare                      # here (full install, network): writes .gpucheck/
#   bash installers/gpu-check.sh --device cuda --out "$OUT"     # on the CUDA machine (carry .gpucheck)
#   bash installers/gpu-check.sh --device cpu --out /tmp/gc     # dry run on a CPU: short, proves the plumbing
#
# Options: --dir DIR (prepared folder, default .gpucheck or $GPUCHECK_DIR); --out DIR (default $OUT, else
# DIR/out); anything else goes to `python -m engine.eval.gpu_check prepare|run` (e.g. --dry-run,
# --no-wheels, --sizes 512, --long-run-seconds 120, --budget-seconds 400, --student-backend auto).
# Python: $PYTHON, else .venv/bin/python, else python3 (the device image's). On a Python that lacks the
# engine's pure-Python needs (diffusers, platformdirs, silero-vad) the prepared wheels are installed into
# a temporary folder; PyAV, which the engine imports at module level but the check never uses, gets a
# placeholder module there when it is missing (any use of it raises). The whole run is capped by
# $GPUCHECK_TIMEOUT seconds (default 480: 8 minutes); the check itself ends inside its budget.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
DIR="${GPUCHECK_DIR:-.gpucheck}"
MODE=run
DEVICE=""
OUTDIR="${OUT:-}"
ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --prepare) MODE=prepare ;;
        --device) DEVICE="$2"; shift ;;
        --out) OUTDIR="$2"; shift ;;
        --dir) DIR="$2"; shift ;;
        -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) ARGS+=("$1") ;;
    esac
    shift
done

if [ "$MODE" = prepare ]; then
    # the prepared folder stays out of git (it travels to the device as a carried path)
    if [ -d .git ] && [ "$DIR" = .gpucheck ] && ! grep -qsx "/.gpucheck/" .git/info/exclude; then
        mkdir -p .git/info && echo "/.gpucheck/" >> .git/info/exclude
    fi
    exec "$PY" -m engine.eval.gpu_check prepare --dir "$DIR" ${ARGS[@]+"${ARGS[@]}"}
fi

if [ -z "$DEVICE" ]; then
    echo "gpu-check: give --device cuda (on the GPU machine) or --device cpu (dry run), or --prepare" >&2
    exit 2
fi
if [ ! -f "$DIR/manifest.json" ]; then
    echo "gpu-check: $DIR/manifest.json is missing: run 'bash installers/gpu-check.sh --prepare' first (here)" >&2
    exit 2
fi
OUTDIR="${OUTDIR:-$DIR/out}"
mkdir -p "$OUTDIR"

SITE="$(mktemp -d "${TMPDIR:-/tmp}/gpucheck-site.XXXXXX")"
trap 'rm -rf "$SITE"' EXIT
# wheels only for the modules this Python lacks (an installed one is never shadowed)
MISSING="$("$PY" - <<'EOF'
import importlib.util
for module, wheel in (("diffusers", "diffusers"), ("platformdirs", "platformdirs"), ("silero_vad", "silero_vad")):
    if importlib.util.find_spec(module) is None:
        print(wheel)
EOF
)"
if [ -n "$MISSING" ]; then
    WHEELS=()
    for w in $MISSING; do
        f=("$DIR"/wheels/"$w"-*.whl)
        if [ ! -f "${f[0]}" ]; then
            echo "gpu-check: $w is not installed and $DIR/wheels has no wheel of it (prepare without --no-wheels)" >&2
            exit 2
        fi
        WHEELS+=("${f[0]}")
    done
    echo "gpu-check: installing carried wheels: ${WHEELS[*]}" >&2
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "${WHEELS[@]}"
fi
if ! "$PY" -c "import av" 2>/dev/null; then
    echo "gpu-check: PyAV is missing here: a placeholder module stands in (the check decodes no files)" >&2
    mkdir -p "$SITE/av"
    cat > "$SITE/av/__init__.py" <<'EOF'
"""Placeholder for PyAV, written by installers/gpu-check.sh: this machine has no PyAV, and the engine imports it
at module level (engine/audio/io.py) although the GPU check decodes no file. Any use of it raises."""


def __getattr__(name):
    raise ModuleNotFoundError(f"PyAV is not installed on this machine (av.{name} was used; gpu-check placeholder)")
EOF
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
timeout -k 10 "${GPUCHECK_TIMEOUT:-480}" "$PY" -m engine.eval.gpu_check run --dir "$DIR" --device "$DEVICE" \
    --out "$OUTDIR" ${ARGS[@]+"${ARGS[@]}"}
