#!/usr/bin/env bash
# Recreate the default decoder refiner exactly as shipped in assets/models/refiner (see its README.md):
# self-reconstruction pairs from about 45 real people in ../shared/data/real (talking/ without the held-out
# speakers of engine/data/real.py HELDOUT, one clip per person or style from silent/, faces/ and sun_video;
# sun_video after 4 s and the whole KristiNoem clip held out); stage 1 with pixel, structure and edge losses,
# stage 2 adds a discriminator on the mouth region (DiffAugment, feature matching), the detail-energy and
# the temporal terms; both confine the correction to the mouth (--gate). Then the copy into assets/ and
# the realism evaluation against the previous version's renders (talkcam eval realism).
# On the 2-core CPU: ~20 min pairs, ~25 + ~16 min training, ~15 min evaluation.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash installers/setup.sh
TC=.venv/bin/talkcam
WORK=${WORK:-work}
SHARED=${SHARED:-../shared/data}
R="$SHARED/real"

VIDEOS=()
for f in "$R"/talking/*.mp4; do
  case "$(basename "$f")" in
    DFRF__french.mp4|video-retalking__1.mp4|spectre__M026*|Real3DPortrait__May_5s.mp4|icpr2020dfdc__lynaeydofd.mp4|VisualVoice__noisy_restaurant.mp4) ;;
    *) VIDEOS+=("$f") ;;
  esac
done
for s in EAMM__test_happy EchoMimic__driven_videos_a EchoMimic__driven_videos_b EchoMimic__driven_videos_c \
  dreamtalk__style_clip_M030_front_happy_level3_001 dreamtalk__style_clip_W009_front_surprised_level3_001 \
  dreamtalk__style_clip_W011_front_happy_level3_001 styletalk__source_video_KristiNoem \
  styletalk__source_video_andrew_clip_1 styletalk__source_video_feifeili_clip1 styletalk__source_video_reagan_clip1 \
  styletalk__style_clips_furious_talk1_clip1 styletalk__style_clips_furious_talk2_clip1 \
  styletalk__style_clips_happyenglish_clip1 styletalk__style_clips_nice_clip1 styletalk__style_clips_sad_emotion_clip1 \
  styletalk__style_clips_sadfather_clip1 styletalk__style_clips_sadgirl_clip1 styletalk__style_clips_spata_clip1 \
  styletalk__style_clips_surprisegirl_clip2 styletalk__style_clips_trump_clip1 styletalk__style_clips_vscodehappy_clip1; do
  VIDEOS+=("$R/silent/$s.mp4")
done
VIDEOS+=("$R/sun_video.mp4" "$R"/faces/*.mp4)

$TC data refiner --videos "${VIDEOS[@]}" --out "$WORK/refiner17_pairs" \
  --heldout sun_video:4 styletalk__source_video_KristiNoem:0 --portraits assets/portraits/astronaut.png \
  --refs-per-clip 3 --targets-per-ref 10 --max-seconds 5
$TC train refiner --data "$WORK/refiner17_pairs" --out "$WORK/refiner17_s1" --gate 0.1 --steps 1500 --batch 12 \
  --threads 2 --detail-weight 0 --identity-share 0
$TC train refiner --data "$WORK/refiner17_pairs" --out "$WORK/refiner17" --init "$WORK/refiner17_s1/model" \
  --gate 0.1 --adv-weight 0.05 --fm-weight 1.0 --temporal-weight 2.0 --steps 500 --lr 2.5e-4 --warmup 50 \
  --batch 12 --threads 2
rm -rf assets/models/refiner.new && mkdir -p assets/models/refiner.new
cp "$WORK/refiner17/model/config.json" "$WORK/refiner17/model/diffusion_pytorch_model.safetensors" \
  "$WORK/refiner17/train.json" assets/models/refiner.new/
cp "$WORK/refiner17_s1/train.json" assets/models/refiner.new/train_stage1.json
cp assets/models/refiner/README.md assets/models/refiner.new/ 2>/dev/null || true
rm -rf assets/models/refiner && mv assets/models/refiner.new assets/models/refiner
$TC eval realism --shared "$SHARED" --out "$WORK/realism"
