#!/bin/sh
# test_extract_cuda.sh: the extract teachers (common/teachers.c, the code iv2-extract --device
# cuda runs) on the GPU against the CPU. A cache made on the CPU with fp32 storage (tiny
# InternViT at 224, two views) is recomputed on the GPU by `iv2-cache verify --stats --device
# cuda` from its stored frames; every InternViT target must agree with the CPU values (mean
# cosine > 0.999, worst > 0.99; the GPU computes in bf16). VideoMAE targets need the 16-frame
# clip and are not covered here.
# Skips (77) without a GPU or without a CUDA build of bin/iv2-cache. The cache comes from
# IV2_GPU_CACHE (made beforehand on a machine with FFmpeg: the GPU machine has none) or is
# made here with bin/iv2-extract.
cd "$(dirname "$0")/.." || exit 1
{ command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; } || { echo "skipped: no GPU"; exit 77; }
[ -x bin/iv2-cache ] || { echo "bin/iv2-cache missing"; exit 1; }
export IV2_QUIET=1
C=${IV2_GPU_CACHE:-build/tmp/test_extract_cuda/c}
if [ ! -e "$C/data.mdb" ]; then
    { [ -x bin/iv2-extract ] && command -v ffmpeg >/dev/null 2>&1; } || { echo "skipped: no cache and no iv2-extract/ffmpeg to make one"; exit 77; }
    T=$(dirname "$C")
    mkdir -p "$T"
    ffmpeg -v error -y -f lavfi -i testsrc2=size=320x240:rate=30:duration=1 -pix_fmt yuv420p "$T/v.mp4" || exit 1
    echo '{"video":"v.mp4"}' > "$T/m.jsonl"
    ./bin/iv2-extract --manifest "$T/m.jsonl" --cache "$C" --teacher internvit=preset:internvit-tiny:3 \
        --targets clip_b0-5,clip_pool,clip_attn --dtype fp32 --views 2 >/dev/null || exit 1
fi
out=$(./bin/iv2-cache verify --stats --device cuda --sample 4 "$C" 2>&1)
rc=$?
echo "$out"
case "$out" in *"not compiled in"*) echo "skipped: iv2-cache built without CUDA (make CUDA=1)"; exit 77 ;; esac
[ $rc -eq 0 ] || exit 1
echo "$out" | awk '/^stats .* mean cosine/ { n++; if ($6 < 0.999 || $8 < 0.99) { bad++; print "too far: " $0 } }
                   END { exit !(n > 0 && bad == 0) }'
