#!/bin/sh
# test_extract_batch.sh: iv2-extract with batched teachers, several devices and the writer
# thread gives the same cache as the one-view-at-a-time run (tiny random teachers at 112 px,
# fp32 storage so that "same" means bit-exact: content digest of iv2-cache verify):
#   - --batch-views 3 (InternViT on 24 frames, VideoMAE on 3 clips per call) = --batch-views 1;
#   - --devices cpu,cpu (two teacher sets on two threads, one writer) = one device;
#   - kill -9 inside write transactions and at a timed moment with batches of 3 on two
#     devices, then resume (batches now made of other views): = the uninterrupted run;
#   - bad rows with two devices: exactly those rows in errors;
#   - the summary and the memory plan per device; bad --device / --batch-views refused.
T=build/tmp/test_extract_batch
. "$(dirname "$0")/extract_common.sh"
X() { ${EXEC:-} ./bin/iv2-extract --teacher "$IVIT" --teacher "$MAE" --compute-threads 1 --threads 2 --views 2 --seed 3 --dtype fp32 "$@"; }

ffmpeg -v error -y -f lavfi -i testsrc=size=64x48:rate=25:duration=2 -pix_fmt yuv420p $T/v0.mp4 || exit 1
ffmpeg -v error -y -f lavfi -i testsrc2=size=320x240:rate=30:duration=1 -pix_fmt yuv420p $T/v1.mp4 || exit 1
ffmpeg -v error -y -f lavfi -i mandelbrot=size=160x120:rate=24 -t 2 -pix_fmt yuv420p $T/v2.mkv || exit 1
head -c 20000 /dev/urandom > $T/corrupt.mp4
cat > $T/m.jsonl <<EOF
{"video":"v0.mp4"}
{"video":"v1.mp4","start":0.2,"end":0.9}
{"video":"v2.mkv"}
{"video":"v2.mkv","start":1.0,"end":2.0}
{"video":"v0.mp4","start":0.5}
EOF
cat > $T/bad.jsonl <<EOF
{"video":"v0.mp4"}
{"video":"missing.mp4"}
{"video":"v1.mp4"}
{"video":"corrupt.mp4"}
{"video":"v0.mp4","start":10,"end":12}
{"video":"v2.mkv"}
EOF

# ---- one view per call, one device: the reference
out=$(X --batch-views 1 --manifest $T/m.jsonl --cache $T/ref) || { echo "FAIL: reference run"; exit 1; }
check "reference summary: $out" expr "$out" : 'rows done 5, failed 0, skipped 0; views 10;' >/dev/null
D=$(digest $T/ref)
check "reference verifies" test -n "$D"

# ---- batches of 3 (10 views: 3 + 3 + 3 + a partial 1), one device
out=$(X --batch-views 3 --batch 4 --manifest $T/m.jsonl --cache $T/b3 --metrics $T/b3.jsonl) || echo "FAIL: batch 3 run"
check "batch 3 summary: $out" expr "$out" : 'rows done 5, failed 0, skipped 0; views 10;' >/dev/null
check "batch 3 = batch 1 (bit-exact, fp32 storage)" test "$(digest $T/b3)" = "$D"
check "metrics name the batch" grep -q '"batch_views":3' $T/b3.jsonl

# ---- two devices, batches of 2, and the memory plan per device (stderr, not quiet)
err=$(IV2_QUIET=0 X --devices cpu,cpu --batch-views 2 --manifest $T/m.jsonl --cache $T/d2 2>&1 >/dev/null) || echo "FAIL: two devices: $err"
check "two devices = one device" test "$(digest $T/d2)" = "$D"
check "memory plan of device 1" sh -c "echo '$err' | grep -q 'memory plan, InternViT on cpu (device 1, batch 2 views)'"
check "summary splits the time" sh -c "echo '$err' | grep -q 'teachers [0-9.]* s on 2 devices x 2 views, encode [0-9.]* s, write'"
check "per-device summary" sh -c "echo '$err' | grep -q 'device 1 (cpu): [0-9]* views'"

# ---- kill -9 inside write transactions, then at a timed moment; resume: equal content
for n in 5 40; do
    IV2_CACHE_CRASH_AT=$n X --devices cpu,cpu --batch-views 3 --batch 2 --manifest $T/m.jsonl --cache $T/kill >/dev/null 2>&1
    rc=$?
    check "crash at put $n killed the run (rc $rc)" test $rc -eq 137
    check "cache verifies after kill at put $n" ./bin/iv2-cache verify $T/kill >/dev/null
done
# a backgrounded function runs in a subshell: with exec, $! is iv2-extract itself (else the
# kill -9 would hit the subshell and leave the run going beside the resume)
(EXEC=exec X --devices cpu,cpu --batch-views 3 --batch 1 --manifest $T/m.jsonl --cache $T/kill) >/dev/null 2>&1 &
pid=$!
sleep 0.3
kill -9 $pid 2>/dev/null
wait $pid 2>/dev/null
rc=$?; [ $rc -eq 137 ] || echo "note: the run had ended before the timed kill -9 (rc $rc)"
check "cache verifies after a timed kill -9" ./bin/iv2-cache verify $T/kill >/dev/null
X --devices cpu,cpu --batch-views 3 --manifest $T/m.jsonl --cache $T/kill >/dev/null || echo "FAIL: resume"
check "resumed (batched, two devices) = uninterrupted" test "$(digest $T/kill)" = "$D"

# ---- bad rows with two devices and batches: exactly those rows in errors
out=$(X --devices cpu,cpu --batch-views 3 --manifest $T/bad.jsonl --cache $T/bad 2>/dev/null) || echo "FAIL: run with bad rows"
check "bad rows summary: $out" expr "$out" : 'rows done 3, failed 3, skipped 0; views 6;' >/dev/null
rows=$(./bin/iv2-cache info $T/bad | sed -n 's/^  row \([0-9]*\): .*/\1/p' | tr '\n' ' ')
check "errors are rows 1, 3, 4 (got '$rows')" test "$rows" = "1 3 4 "

# ---- refusals
err=$(X --devices cpu,cuda --manifest $T/m.jsonl --cache $T/x 2>&1 >/dev/null)
check "mixed devices refused: $err" sh -c "echo '$err' | grep -q 'mixes the CPU and CUDA'"
err=$(X --batch-views 0 --manifest $T/m.jsonl --cache $T/x 2>&1 >/dev/null)
check "batch-views 0 refused: $err" sh -c "echo '$err' | grep -q 'batch-views 0'"
check "nothing made by refusals" test ! -e $T/x/data.mdb

[ $fails -eq 0 ] || { echo "$fails checks failed"; exit 1; }
rm -rf $T
echo "ok"
