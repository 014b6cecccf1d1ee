#!/bin/sh
# test_extract_valgrind: iv2-extract (good rows, a missing file, an audio-only file, a corrupt
# file; again on two CPU devices with batches of 2 views and the writer thread; a refused
# reopen) and iv2-cache (info, verify --stats, export-view, merge) under valgrind memcheck
# with a full leak check: any invalid access or leak of ours fails. Tiny teachers at 56 px so
# it stays fast. Built here without -march=native (valgrind does not know AVX-512).
# OpenMP's own thread-pool allocations are left out (only "definite" and "indirect" leaks count).
cd "$(dirname "$0")/.." || exit 1
command -v valgrind >/dev/null 2>&1 || { echo "skipped: valgrind not installed"; exit 77; }
command -v ffmpeg >/dev/null 2>&1 || { echo "skipped: ffmpeg CLI not installed"; exit 77; }
T=$(mktemp -d /tmp/iv2_test_extract_vg_XXXXXX) || exit 1
trap 'rm -rf "$T"' EXIT
CC=${CC:-cc}
FF="libavformat libavcodec libswscale libavutil"
CF="-O1 -g -std=c11 -D_GNU_SOURCE -fopenmp -pthread -Icommon -Iextract $(pkg-config --cflags lmdb libcjson openblas $FF)"
objs=""
for f in $(ls common/*.c | grep -v _main.c) extract/pipeline.c extract/decode.c extract/decode_sample.c extract/decode_cli.c; do
    o="$T/$(echo "$f" | tr / _).o"
    objs="$objs $o"
    nice $CC $CF -c "$f" -o "$o" &
done
wait
LIBS="$(pkg-config --libs lmdb libcjson openblas $FF) -lm"
$CC $CF extract/extract_main.c $objs -o "$T/iv2-extract" $LIBS || { echo "cannot build"; exit 1; }
$CC $CF extract/cache_main.c $objs -o "$T/iv2-cache" $LIBS || { echo "cannot build"; exit 1; }

ffmpeg -nostdin -v error -f lavfi -i testsrc=size=64x48:rate=25 -t 1 -pix_fmt yuv420p -y "$T/a.mp4" || exit 1
ffmpeg -nostdin -v error -f lavfi -i sine=d=0.3 -y "$T/audio.wav" || exit 1
echo "not a video" > "$T/notes.mp4"
printf '{"video":"a.mp4"}\n{"video":"missing.mp4"}\n{"video":"audio.wav"}\n{"video":"notes.mp4"}\n{"video":"a.mp4","start":0.2}\n' > "$T/m.jsonl"
printf '{"video":"a.mp4"}\n{"video":"missing.mp4"}\n{"video":"a.mp4","start":0.2}\n' > "$T/m2.jsonl"

export IV2_QUIET=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
VG="valgrind -q --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect --error-exitcode=99"
IVIT='internvit=preset:internvit-tiny:1:{"img":56,"depth":2}'
MAE='videomae=preset:videomae-tiny:2:{"img":56,"depth":1}'
fail=0
run() { # run NAME EXPECTED_RC cmd...
    name=$1 want=$2; shift 2
    t0=$(date +%s); $VG "$@" > "$T/$name.out" 2>&1
    rc=$?; [ -n "$VG_TIMES" ] && echo "$name $(( $(date +%s) - t0 )) s"
    if [ $rc -ne $want ] || grep -q '^==[0-9]*== ' "$T/$name.out"; then
        echo "FAIL $name (exit $rc, want $want):"; grep -v '^$' "$T/$name.out" | head -30
        fail=1
    fi
}
run extract 0 "$T/iv2-extract" --manifest "$T/m.jsonl" --cache "$T/c" --teacher "$IVIT" --teacher "$MAE" \
    --targets clip_b1,clip_pool,clip_attn,mae_b0 --dtype int8 --views 1 --compute-threads 1
run devices 0 "$T/iv2-extract" --manifest "$T/m2.jsonl" --cache "$T/c2" --teacher "$IVIT" --teacher "$MAE" \
    --targets clip_b1,clip_pool,clip_attn,mae_b0 --dtype bf16 --views 1 --compute-threads 1 --devices cpu,cpu --batch-views 2
run refused 1 "$T/iv2-extract" --manifest "$T/m.jsonl" --cache "$T/c" --teacher "$IVIT" --teacher "$MAE" \
    --targets clip_b1,clip_pool,clip_attn,mae_b0 --dtype bf16 --views 1 --compute-threads 1
run info 0 "$T/iv2-cache" info "$T/c"
run verify 0 "$T/iv2-cache" verify --stats --sample 1 "$T/c"
run export 0 "$T/iv2-cache" export-view "$T/c" 4 0 --out "$T/e"
run merge 0 "$T/iv2-cache" merge "$T/m" "$T/c"
run absent 1 "$T/iv2-cache" info "$T/nothing"
grep -q "rows done 2, failed 3" "$T/extract.out" || { echo "FAIL: summary"; cat "$T/extract.out"; fail=1; }
grep -q "rows done 2, failed 1, skipped 0; views 2;" "$T/devices.out" || { echo "FAIL: summary on two devices"; cat "$T/devices.out"; fail=1; }
[ $fail -eq 0 ] || exit 1
echo "valgrind clean"
