#!/bin/sh
# make demo: the whole job end to end on a built-in sample, on the CPU, in a few minutes.
#   1. a small real corpus made with the ffmpeg CLI (16 short clips, several codecs and sizes)
#   2. its manifest
#   3. iv2-extract with tiny random teachers (InternViT-tiny, VideoMAE-tiny) -> LMDB cache
#   4. iv2-distill of the tiny student for a few hundred steps, with eval
#   5. where everything is, and how fast each phase ran
# DEMO_OUT (default demo-out/) holds everything; rerunning reuses the corpus and resumes.
set -e
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-demo-out}
STEPS=${DEMO_STEPS:-300}
mkdir -p "$OUT/videos"
T0=$(date +%s)

echo "== 1. corpus: 16 short videos (ffmpeg testsrc2/mandelbrot/life; H.264, HEVC, VP9, MPEG-4 where the encoder is there)"
i=0
for spec in \
  "testsrc2=size=320x240:rate=25 libx264 mp4" "mandelbrot=size=256x256:rate=24 libx264 mp4" \
  "life=size=320x180:rate=30:mold=10:ratio=0.3 mpeg4 avi" "testsrc=size=352x288:rate=25 libvpx-vp9 webm" \
  "smptehdbars=size=426x240:rate=30 libx265 mp4" "rgbtestsrc=size=240x240:rate=25 libx264 mkv" \
  "cellauto=size=320x240:rate=25 mpeg4 mp4" "testsrc2=size=480x270:rate=30 libvpx-vp9 webm" \
  "mandelbrot=size=320x200:rate=25 libx265 mkv" "life=size=256x192:rate=25:mold=5 libx264 mp4" \
  "testsrc2=size=400x224:rate=24 mpeg4 mkv" "testsrc=size=320x240:rate=30 libx264 mov" \
  "yuvtestsrc=size=288x288:rate=25 libx264 mp4" "testsrc2=size=224x400:rate=25 libx265 mp4" \
  "cellauto=size=300x300:rate=24:rule=110 libvpx-vp9 webm" "mandelbrot=size=360x240:rate=30 mpeg4 mp4"; do
  set -- $spec
  f="$OUT/videos/clip$(printf %02d $i).$3"
  if [ ! -s "$f" ]; then
    dur=$((2 + i % 3))
    # moving content: the sources animate; hue rotation adds colour motion
    ffmpeg -nostdin -loglevel error -y -f lavfi -i "$1" -t $dur -vf "hue=h=t*90,format=yuv420p" \
      -c:v $2 $( [ $2 = libx264 ] && echo "-g 30 -bf 2" ) $( [ $2 = libx265 ] && echo "-x265-params log-level=error" ) $( [ $2 = libvpx-vp9 ] && echo "-b:v 400k -deadline realtime -cpu-used 8" ) \
      "$f" || { echo "  (skipping $2: encoder not available)"; rm -f "$f"; }
  fi
  i=$((i+1))
done
ls "$OUT/videos" | wc -l | sed 's/^/  videos: /'

echo "== 2. manifest"
: > "$OUT/manifest.jsonl"
for f in "$OUT"/videos/*; do
  b=$(basename "$f")
  echo "{\"video\": \"videos/$b\", \"id\": \"${b%.*}\", \"source\": \"demo\"}" >> "$OUT/manifest.jsonl"
done
bin/iv2-manifest check "$OUT/manifest.jsonl"

echo "== 3. extract (tiny teachers, 2 views per video)"
T1=$(date +%s)
bin/iv2-extract --manifest "$OUT/manifest.jsonl" --cache "$OUT/cache" \
  --teacher internvit=preset:internvit-tiny --teacher videomae=preset:videomae-tiny \
  --views 2 --metrics "$OUT/extract.jsonl"
T2=$(date +%s)
bin/iv2-cache info "$OUT/cache"

echo "== 4. distill (tiny student, $STEPS steps)"
cat > "$OUT/run.json" <<JSON
{ "student": "iv2-tiny", "batch": 8, "steps": $STEPS, "lr": 3.2e-2, "min_lr": 3.2e-4,
  "warmup_steps": 30, "drop_path": 0.1, "ckpt_every": 100, "eval_views": 4, "eval_every": 100,
  "seed": 0 }
JSON
bin/iv2-distill --cache "$OUT/cache" --config "$OUT/run.json" --out "$OUT/run" $( [ -d "$OUT/run" ] && echo --resume )
T3=$(date +%s)
bin/iv2-distill plot --out "$OUT/run"

echo "== done in $((T3 - T0)) s (extract $((T2 - T1)) s, distill $((T3 - T2)) s)"
echo "  cache:       $OUT/cache ($(du -sh "$OUT/cache" | cut -f1))"
echo "  checkpoints: $OUT/run/"
echo "  metrics:     $OUT/extract.jsonl, $OUT/run/metrics.jsonl"
echo "  loss curve:  $OUT/run/loss.png"
