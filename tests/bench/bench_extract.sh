#!/bin/sh
# bench_extract: iv2-extract views/s and bytes/view with tiny random teachers on the CPU, time
# split into decode (summed over worker threads), teachers and writes. Baseline, same run: the
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
for r in 1 2 3; do
    rm -rf $T/c
    ./bin/iv2-extract --manifest $T/m.jsonl --cache $T/c --compute-threads $ct \
        --teacher "internvit=preset:internvit-tiny:1:{\"img\":$size}" \
        --teacher "videomae=preset:videomae-tiny:2:{\"img\":$size}" --metrics $T/r$r.jsonl >$T/r$r.txt 2>/dev/null || exit 1
done
# summary: "rows done N, ...; views V; B bytes/view; R views/s; decode D s, teachers X s, write W s"
awk -v rows=$rows -v size=$size '
  { for (i = 1; i <= NF; i++) { if ($i == "views/s;") vps[NR] = $(i-1); if ($i == "bytes/view;") bpv = $(i-1);
      if ($i == "decode") dec[NR] = $(i+1); if ($i == "teachers") tea[NR] = $(i+1); if ($i == "write") wr[NR] = $(i+1);
      if ($i == "views") nv = $(i+1) } }
  function med(a,   x, y, z, t) { x = a[1]; y = a[2]; z = a[3];
      if (x > y) { t = x; x = y; y = t } if (y > z) { t = y; y = z; z = t } if (x > y) { t = x; x = y; y = t } return y }
  END {
    sub(";", "", nv); sub(",", "", dec[1]); sub(",", "", dec[2]); sub(",", "", dec[3]);
    sub(",", "", tea[1]); sub(",", "", tea[2]); sub(",", "", tea[3]);
    for (k = 1; k <= 3; k++) tv[k] = nv / tea[k];
    printf "extract: %d rows x 1 view, tiny teachers at %d px, CPU, 2 decode threads (median of 3)\n", rows, size
    printf "  views/s            %.3f\n", med(vps)
    printf "  bytes/view         %d (%.2f MB)\n", bpv, bpv / 1e6
    printf "  time split (s)     decode %.2f (summed over threads), teachers %.2f, write %.2f\n", med(dec), med(tea), med(wr)
    printf "  teachers alone     %.3f views/s (baseline)\n", med(tv)
    printf "  ratio pipeline / teachers alone %.2f\n", med(vps) / med(tv)
  }' $T/r1.txt $T/r2.txt $T/r3.txt
rm -rf $T
