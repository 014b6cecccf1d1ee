#!/bin/sh
# bench_extract: iv2-extract views/s and bytes/view with tiny random teachers on the CPU, time
# split into decode (summed over worker threads), teachers, encoding and writes, one line per
# teacher batch size (--batch-views, BENCH_BATCHES "1 4"). Baseline, same run: the
# teachers alone (views / teacher seconds): the ratio shows how much of decode and writing the
# pipeline hides behind the teachers. Medians of 3 runs (fresh caches). The LMDB-vs-plain
# write figures are in bench_cache.
#   BENCH_ROWS (6), BENCH_SIZE (224 | 112), BENCH_THREADS (compute threads, 0 = all)
cd "$(dirname "$0")/../.." || exit 1
command -v ffmpeg >/dev/null 2>&1 || { echo "skipped: no ffmpeg CLI"; exit 0; }
[ -x bin/iv2-extract ] || { echo "bin/iv2-extract missing (make)"; exit 1; }
T=build/tmp/bench_extract
rows=${BENCH_ROWS:-6}
size=${BENCH_SIZE:-224}
ct=${BENCH_THREADS:-0}
rm -rf $T
mkdir -p $T
: > $T/m.jsonl
i=0
while [ $i -lt $rows ]; do
    ffmpeg -v error -y -f lavfi -i testsrc2=size=320x240:rate=30:duration=2 -pix_fmt yuv420p $T/v$i.mp4 || exit 1
    echo "{\"video\":\"v$i.mp4\"}" >> $T/m.jsonl
    i=$((i + 1))
done
export IV2_QUIET=1
batches=${BENCH_BATCHES:-1 4}
printf "extract: %d rows x 1 view, tiny teachers at %d px, CPU, 2 decode threads, median of 3 runs per batch size\n" $rows $size
printf "  %-6s %8s %12s %10s %9s %8s %9s %15s %7s\n" batch views/s bytes/view decode_s teach_s enc_s write_s "teachers alone" ratio
for B in $batches; do
    for r in 1 2 3; do
        rm -rf $T/c $T/r$r.jsonl   # (metrics files are appended to)
        ./bin/iv2-extract --manifest $T/m.jsonl --cache $T/c --compute-threads $ct --batch-views $B \
            --teacher "internvit=preset:internvit-tiny:1:{\"img\":$size}" \
            --teacher "videomae=preset:videomae-tiny:2:{\"img\":$size}" --metrics $T/r$r.jsonl >$T/r$r.txt 2>/dev/null || exit 1
    done
    # metrics summary line: views_per_s, bytes_per_view, t_decode, t_teachers, t_encode, t_write, views
    awk -v B=$B '
      function num(k,   m) { if (match($0, "\"" k "\":[-0-9.e+]+")) { m = substr($0, RSTART, RLENGTH); sub(/.*:/, "", m); return m + 0 } return 0 }
      /"event":"summary"/ { n++; vps[n] = num("views_per_s"); bpv = num("bytes_per_view"); dec[n] = num("t_decode");
          tea[n] = num("t_teachers"); enc[n] = num("t_encode"); wr[n] = num("t_write"); tv[n] = tea[n] > 0 ? num("views") / tea[n] : 0 }
      function med(a,   x, y, z, t) { x = a[1]; y = a[2]; z = a[3];
          if (x > y) { t = x; x = y; y = t } if (y > z) { t = y; y = z; z = t } if (x > y) { t = x; x = y; y = t } return y }
      END { printf "  %-6d %8.3f %12d %10.2f %9.2f %8.2f %9.2f %15.3f %7.2f\n", B, med(vps), bpv, med(dec), med(tea), med(enc), med(wr), med(tv),
              (med(tv) > 0 ? med(vps) / med(tv) : 0) }' $T/r1.jsonl $T/r2.jsonl $T/r3.jsonl
done
echo "  (decode summed over threads; teachers alone = views / teacher seconds, the baseline; ratio = pipeline / teachers alone)"
rm -rf $T
