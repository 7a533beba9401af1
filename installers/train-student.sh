#!/usr/bin/env bash
# Recreate the default student exactly as shipped in assets/models/student (see its README.md):
# guidance calibration of the generalist, the ODE-regression stage (multi-teacher routing), the DMD
# self-rollout stage with tail forcing, the fp16 export, the results table and the 1000 s drift runs.
# Needs the corpora of installers/train-teachers.sh (WORK/train, WORK/heldout) and the shipped teachers.
# On the 2-core CPU: ~2 min calibration, ~17 min ODE stage, ~14 min DMD stage, ~60 min evaluation.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash installers/setup.sh
TC=.venv/bin/talkcam
WORK=${WORK:-work}
SHARED=${SHARED:-../shared/data}

$TC train calibrate --heldout "$WORK/heldout" --out "$WORK/calib" --clips 6
$TC train student --corpus "$WORK/train" --heldout "$WORK/heldout" --calibration "$WORK/calib/calibration.json" \
  --out "$WORK/student_ode" --steps 800 --eval-every 400 --real-weight 2 --threads 2
$TC train student --stage dmd --init "$WORK/student_ode/model" --corpus "$WORK/train" --heldout "$WORK/heldout" \
  --calibration "$WORK/calib/calibration.json" --out "$WORK/student_dmd" --steps 150 --lr 1e-4 --warmup 20 --critic-updates 2 --regression-weight 0.25 \
  --eval-every 150 --checkpoint-every 50 --log-every 10 --real-weight 2 --threads 2
.venv/bin/python -m engine.train.export_student "$WORK/student_dmd/model" assets/models/student \
  --calibration "$WORK/calib/calibration.json"
$TC train compare --corpus "$WORK/heldout" --real "$SHARED/real" --portrait "$SHARED/portraits/happy.png" \
  --clips 4 --max-seconds 15 --size 256 256 --out "$WORK/compare_student" \
  --models generalist=assets/models/teachers/generalist student-1step=assets/models/student@1 \
           student-2steps=assets/models/student@2 student-4steps=assets/models/student@4
$TC drift --audio-dir "$SHARED/real" --seconds 1000 --out "$WORK/drift"
