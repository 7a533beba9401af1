#!/usr/bin/env bash
# Recreate the default decoder refiner exactly as shipped in assets/models/refiner (see its README.md):
# self-reconstruction pairs from the real videos in ../shared/data/real (the last 5 s of sun_video and of
# d12 held out), training, the evaluation table (held-out pairs, the held-out video range, the shared
# portraits driven by real speech) and the copy into assets/.
# Two training stages: pixel/structure/edge losses (stage 1), then a fine-tune that adds the
# detail-energy term (keeps the mouth sharp) and identity pairs in every batch (stage 2).
# On the 2-core CPU: ~6 min pairs, ~27 + ~14 min training, ~8 min evaluation.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash installers/setup.sh
TC=.venv/bin/talkcam
WORK=${WORK:-work}
SHARED=${SHARED:-../shared/data}

$TC data refiner --videos "$SHARED/real/sun_video.mp4" "$SHARED"/real/faces/*.mp4 --out "$WORK/refiner_pairs" \
  --heldout sun_video:17 d12:4.5 --portraits assets/portraits/astronaut.png --refs-per-clip 10 --targets-per-ref 36
$TC train refiner --data "$WORK/refiner_pairs" --out "$WORK/refiner" --steps 3000 --batch 16 --threads 2 \
  --detail-weight 0 --identity-share 0
$TC train refiner --data "$WORK/refiner_pairs" --out "$WORK/refiner_ft" --init "$WORK/refiner/model" --steps 1500 \
  --lr 2.5e-4 --warmup 50 --batch 16 --threads 2
rm -rf assets/models/refiner.new && mkdir -p assets/models/refiner.new
cp "$WORK/refiner_ft/model/config.json" "$WORK/refiner_ft/model/diffusion_pytorch_model.safetensors" \
  "$WORK/refiner_ft/train.json" assets/models/refiner.new/
cp "$WORK/refiner/train.json" assets/models/refiner.new/train_stage1.json
cp assets/models/refiner/README.md assets/models/refiner.new/ 2>/dev/null || true
rm -rf assets/models/refiner && mv assets/models/refiner.new assets/models/refiner
$TC train refiner-eval --model assets/models/refiner --data "$WORK/refiner_pairs" --video "$SHARED/real/sun_video.mp4" \
  --video-start 17 --portraits "$SHARED"/portraits/* --audio "$SHARED/real/sun_audio.wav" --seconds 8 \
  --out "$WORK/refiner_eval"
