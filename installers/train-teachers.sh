#!/usr/bin/env bash
# Recreate the teachers exactly as shipped in assets/models/teachers (see its README.md):
# a 2-hour training corpus, the held-out corpus, the generalist, four specialists fine-tuned from it,
# fp16 copies for assets/, the results table and the guidance sweep.
# On the 2-core CPU: about 15 min of corpus building, 15 min for the generalist, 4 x 4 min per
# specialist, 40 min of evaluation. WORK (default ./work) holds everything; nothing is downloaded.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash installers/setup.sh
TC=.venv/bin/talkcam
WORK=${WORK:-work}
SHARED=${SHARED:-../shared/data}

$TC data build --out "$WORK/train" --hours 2 --seed 0 --split train
$TC data build --out "$WORK/heldout" --hours 0.1 --seed 1 --split heldout --shard-seconds 60
$TC train teacher --corpus "$WORK/train" --heldout "$WORK/heldout" --out "$WORK/teachers/generalist" --steps 4000
for s in speech singing pose hard; do
  extra=()
  if [ "$s" = hard ]; then extra=(--closure-weight 4); fi   # the hard-viseme specialist weighs p/b/m/f/v frames 4x
  $TC train teacher --corpus "$WORK/train" --heldout "$WORK/heldout" --scenarios "$s" \
    --init "$WORK/teachers/generalist/model" --out "$WORK/teachers/$s" --steps 800 --lr 1e-4 --warmup 50 \
    --eval-every 400 "${extra[@]}"
done
.venv/bin/python -m engine.train.export_teachers "$WORK/teachers" assets/models/teachers
$TC train compare --corpus "$WORK/heldout" --real "$SHARED/real" --portrait "$SHARED/portraits/happy.png" \
  --clips 6 --max-seconds 15 --size 256 256 --out "$WORK/compare" \
  --models generalist=assets/models/teachers/generalist speech=assets/models/teachers/speech \
           singing=assets/models/teachers/singing pose=assets/models/teachers/pose hard=assets/models/teachers/hard
$TC train guidance --model assets/models/teachers/generalist --corpus "$WORK/heldout" --out "$WORK/guidance" --clips 6 \
  --portrait "$SHARED/portraits/happy.png"
