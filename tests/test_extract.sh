#!/bin/sh
# test_extract.sh: iv2-extract and iv2-cache end to end through the CLI, with tiny random
# teachers (img 112) over videos made here with the ffmpeg CLI.
#   - a rerun skips everything and changes nothing (content digest of iv2-cache verify);
#   - kill -9 inside write transactions (IV2_CACHE_CRASH_AT) and at a random moment: the cache
#     verifies after each kill, and the resumed cache equals the uninterrupted one (digest and
#     export-view files);
#   - --shard 0/2 + 1/2, then iv2-cache merge: equals one run;
#   - bad rows (missing, corrupt, no video stream, span out of range) land in errors, exactly
#     those rows, and the run completes;
#   - changed settings are refused naming the setting; so is a cache another extract holds;
#   - a map that may not grow / a full tmpfs: clear error, cache still valid, resume completes;
#     a disk that fills while the cache is created: never a meta without its target databases;
#   - a read-only cache folder: readable, writing refused.
T=build/tmp/test_extract
. "$(dirname "$0")/extract_common.sh"
X() { ${EXEC:-} ./bin/iv2-extract --teacher "$IVIT" --teacher "$MAE" --compute-threads 1 --threads 2 --views 2 --seed 7 "$@"; }

# videos: small sizes, 1-3 s, different rates
ffmpeg -v error -y -f lavfi -i testsrc=size=64x48:rate=25:duration=2 -pix_fmt yuv420p $T/v0.mp4 || exit 1
ffmpeg -v error -y -f lavfi -i testsrc2=size=320x240:rate=30:duration=1 -pix_fmt yuv420p $T/v1.mp4 || exit 1
ffmpeg -v error -y -f lavfi -i mandelbrot=size=160x120:rate=24 -t 3 -pix_fmt yuv420p $T/v2.mkv || exit 1
ffmpeg -v error -y -f lavfi -i sine=duration=1 $T/audio.m4a || exit 1
head -c 30000 /dev/urandom > $T/corrupt.mp4
cat > $T/good.jsonl <<EOF
{"video":"v0.mp4"}
{"video":"v1.mp4","start":0.2,"end":0.9}
{"video":"v2.mkv","source":"ssv2"}
{"video":"v2.mkv","start":1.0,"end":2.5}
EOF
cat > $T/bad.jsonl <<EOF
{"video":"v0.mp4"}
{"video":"missing.mp4"}
{"video":"corrupt.mp4"}
{"video":"audio.m4a"}
{"video":"v0.mp4","start":10,"end":12}
{"video":"v1.mp4"}
EOF

# ---- the uninterrupted run, and a rerun that skips everything
out=$(X --manifest $T/good.jsonl --cache $T/ref --metrics $T/ref.jsonl) || { echo "FAIL: reference run"; exit 1; }
check "summary: $out" expr "$out" : 'rows done 4, failed 0, skipped 0; views 8;' >/dev/null
D=$(digest $T/ref)
check "reference verifies" test -n "$D"
check "metrics summary line" grep -q '"event":"summary"' $T/ref.jsonl
check "metrics start line first" sh -c "head -n 1 $T/ref.jsonl | grep -q '\"event\":\"start\".*\"rows_to_do\":4,\"views_to_do\":8'"
check "write lines' txn_views, txn_errors add up to the stored views, errors" test \
  "$(jsum $T/ref.jsonl write txn_views) $(jsum $T/ref.jsonl write txn_errors)" = "$(nviews $T/ref) $(nerrors $T/ref)"
out=$(X --manifest $T/good.jsonl --cache $T/ref) || echo "FAIL: rerun"
check "rerun skips: $out" expr "$out" : 'rows done 0, failed 0, skipped 4; views 0;' >/dev/null
check "rerun keeps content" test "$(digest $T/ref)" = "$D"

# ---- kill -9 inside transactions at several points, then at a random moment; resume
for n in 3 30 61; do
    IV2_CACHE_CRASH_AT=$n X --batch 2 --manifest $T/good.jsonl --cache $T/kill >/dev/null 2>&1
    rc=$?
    check "crash at put $n killed the run (rc $rc)" test $rc -eq 137
    check "cache verifies after kill at put $n" ./bin/iv2-cache verify $T/kill >/dev/null
done
# a backgrounded function runs in a subshell: with exec, $! is iv2-extract itself (else the
# kill -9 would hit the subshell and leave the run going beside the resume)
# kill -9 of a fresh run (on 2 cores it takes 0.7-0.9 s; the folder above is nearly done)
(EXEC=exec X --batch 1 --manifest $T/good.jsonl --cache $T/tkill) >/dev/null 2>&1 &
pid=$!
sleep 0.35
kill -9 $pid 2>/dev/null
wait $pid 2>/dev/null
rc=$?; [ $rc -eq 137 ] || echo "note: the run had ended before the timed kill -9 (rc $rc)"
check "cache verifies after a timed kill -9" ./bin/iv2-cache verify $T/tkill >/dev/null
for c in kill tkill; do
    X --manifest $T/good.jsonl --cache $T/$c >/dev/null || echo "FAIL: resume $c"
    check "resumed cache $c equals the uninterrupted one" test "$(digest $T/$c)" = "$D"
done
./bin/iv2-cache export-view $T/ref 2 1 --out $T/e_ref >/dev/null && ./bin/iv2-cache export-view $T/kill 2 1 --out $T/e_kill >/dev/null
check "export-view of resumed = uninterrupted" cmp -s $T/e_ref.safetensors $T/e_kill.safetensors
check "export-view frames" cmp -s $T/e_ref_f7.ppm $T/e_kill_f7.ppm
check "export-view ppm header" sh -c "head -c 2 $T/e_ref_f0.ppm | grep -q P6"

# ---- repair: a flipped frame byte is found by verify, --drop-bad removes that view, the next
# run extracts it again and the cache equals the uninterrupted one
cp -r $T/ref $T/rep
off=$(grep -obUa IV2V $T/rep/data.mdb | sed -n '2s/:.*//p')
printf '\377' | dd of=$T/rep/data.mdb bs=1 seek=$((off + 2048 + 777)) conv=notrunc 2>/dev/null
check "verify finds the flipped byte" sh -c "! ./bin/iv2-cache verify $T/rep >/dev/null 2>&1"
out=$(./bin/iv2-cache verify $T/rep --drop-bad 2>&1)
check "--drop-bad drops one view: $out" sh -c "echo '$out' | grep -q '^dropped 1 bad views'"
check "repaired cache verifies" ./bin/iv2-cache verify $T/rep >/dev/null
out=$(X --manifest $T/good.jsonl --cache $T/rep) || echo "FAIL: extract after --drop-bad"
check "extract redoes the dropped view: $out" expr "$out" : '.*views 1;' >/dev/null
check "repaired + re-extracted equals the uninterrupted one" test "$(digest $T/rep)" = "$D"

# ---- shards then merge
out=$(X --shard 0/2 --manifest $T/good.jsonl --cache $T/s0) || echo "FAIL: shard 0"
check "shard 0 counts only its own 2 rows (the other shard's are not skipped ones): $out" \
  expr "$out" : 'rows done 2, failed 0, skipped 0; views 4;' >/dev/null
X --shard 1/2 --manifest $T/good.jsonl --cache $T/s1 >/dev/null || echo "FAIL: shard 1"
check "shard 0 has rows 0 and 2" sh -c "./bin/iv2-cache verify $T/s0 | grep -q '^views 4,'"
./bin/iv2-cache merge $T/m $T/s0 $T/s1 >/dev/null || echo "FAIL: merge"
check "merged shards equal one run" test "$(digest $T/m)" = "$D"
# each shard holds exactly its rows (r mod 2 = k), the other's are not there
for r in 0 1 2 3; do
    check "row $r is in shard $((r % 2))" ./bin/iv2-cache export-view $T/s$((r % 2)) $r 0 --out $T/sh >/dev/null 2>&1
    check "row $r is not in shard $((1 - r % 2))" sh -c "! ./bin/iv2-cache export-view $T/s$((1 - r % 2)) $r 0 --out $T/sh >/dev/null 2>&1"
done
X --shard 2/2 --manifest $T/good.jsonl --cache $T/s2 >/dev/null 2>&1
check "--shard 2/2 refused, nothing made (rc $?)" sh -c "test $? -ne 0 && test ! -e $T/s2"

# ---- --max-views N: the fewest whole rows that reach N views (2 a row here: 4 for N = 4);
# a rerun goes on from there and ends equal to the uninterrupted run
X --max-views 4 --manifest $T/good.jsonl --cache $T/mv >/dev/null || echo "FAIL: --max-views run"
check "--max-views 4 stored $(nviews $T/mv) views, want 4 (whole rows of 2)" test "$(nviews $T/mv)" = 4
out=$(X --manifest $T/good.jsonl --cache $T/mv) || echo "FAIL: run after --max-views"
check "the rerun does the other rows: $out" expr "$out" : 'rows done 2, failed 0, skipped 2; views 4;' >/dev/null
check "and equals the uninterrupted run" test "$(digest $T/mv)" = "$D"
# a merge that cannot be done writes nothing: an input of other settings (another seed), OUT
# among the inputs (also before OUT exists)
head -n 1 $T/good.jsonl > $T/one.jsonl
X --seed 8 --manifest $T/one.jsonl --cache $T/other >/dev/null || echo "FAIL: other-seed cache"
err=$(./bin/iv2-cache merge $T/m2 $T/s0 $T/other 2>&1)
check "merge of other settings refused: $err" sh -c "echo '$err' | grep -q 'does not match'"
check "and OUT was not written" sh -c "! ./bin/iv2-cache info $T/m2 2>/dev/null | grep -q '^views [1-9]'"
err=$(./bin/iv2-cache merge $T/m $T/other 2>&1)
check "merge into a cache of other settings refused: $err" sh -c "echo '$err' | grep -q 'does not match'"
check "and it is unchanged" test "$(digest $T/m)" = "$D"
err=$(./bin/iv2-cache merge $T/m3 $T/s0 $T/./m3/ 2>&1)
check "OUT among the inputs refused: $err" sh -c "echo '$err' | grep -q 'same folder'"
ln -s m $T/mlink
err=$(./bin/iv2-cache merge $T/m $T/s0 $T/mlink 2>&1)
check "OUT among the inputs through a symlink refused: $err" sh -c "echo '$err' | grep -q 'same folder'"
check "and it is unchanged" test "$(digest $T/m)" = "$D"

# ---- bad rows: exactly those in errors, the rest done
out=$(X --manifest $T/bad.jsonl --cache $T/bad --metrics $T/bad_metrics.jsonl 2>/dev/null) || echo "FAIL: run with bad rows"
check "bad rows summary: $out" expr "$out" : 'rows done 2, failed 4, skipped 0; views 4;' >/dev/null
rows=$(./bin/iv2-cache info $T/bad | sed -n 's/^  row \([0-9]*\): .*/\1/p' | tr '\n' ' ')
check "errors are rows 1-4 (got '$rows')" test "$rows" = "1 2 3 4 "
check "reasons name the problem" sh -c "./bin/iv2-cache info $T/bad | grep -q 'row 3: .*no video stream'"
check "a metrics line a failed row" sh -c "test \$(grep -c '\"event\":\"row_failed\"' $T/bad_metrics.jsonl) -eq 4 && grep -q '\"row_failed\",\"row\":1,\"line\":2,\"video\":\"missing.mp4\",\"reason\":\".*no such file' $T/bad_metrics.jsonl"
# the metrics' counts against the cache's own (iv2-cache info) and the manifest's rows
nv=$(nviews $T/bad); ne=$(nerrors $T/bad); nr=$(wc -l < $T/bad.jsonl)
check "write lines' txn_views add up to the stored views ($nv)" test "$(jsum $T/bad_metrics.jsonl write txn_views)" = "$nv"
check "write lines' txn_errors add up to the stored errors ($ne)" test "$(jsum $T/bad_metrics.jsonl write txn_errors)" = "$ne"
f=$T/bad_metrics.jsonl
check "last write line: views, rows done, rows failed" test \
  "$(jnum $f write views | tail -n 1) $(jnum $f write rows_done | tail -n 1) $(jnum $f write rows_failed | tail -n 1)" = "$nv $((nr - ne)) $ne"
check "summary line: rows done, failed, skipped, views" test \
  "$(jnum $f summary rows_done) $(jnum $f summary rows_failed) $(jnum $f summary rows_skipped) $(jnum $f summary views)" = "$((nr - ne)) $ne 0 $nv"
out=$(X --manifest $T/bad.jsonl --cache $T/bad --metrics $T/bad_rerun.jsonl)
check "failed rows are skipped on rerun: $out" expr "$out" : 'rows done 0, failed 0, skipped 6;' >/dev/null
f=$T/bad_rerun.jsonl
check "rerun's start line: nothing to do, every row skipped" test "$(jnum $f start rows_to_do) $(jnum $f start rows_skipped)" = "0 $nr"
check "rerun's summary line: every row skipped" test \
  "$(jnum $f summary rows_done) $(jnum $f summary rows_failed) $(jnum $f summary rows_skipped) $(jnum $f summary views)" = "0 0 $nr 0"
check "stored reasons name the video as the manifest does" sh -c "./bin/iv2-cache info $T/bad | grep -q 'row 1: missing.mp4: no such file'"
# --retry-errors tries the recorded rows again; one that now succeeds loses its error
out=$(X --retry-errors --manifest $T/bad.jsonl --cache $T/bad 2>/dev/null)
check "--retry-errors tries the $ne failed rows again: $out" expr "$out" : "rows done 0, failed $ne, skipped $((nr - ne)); views 0;" >/dev/null
cp $T/v1.mp4 $T/missing.mp4
out=$(X --retry-errors --manifest $T/bad.jsonl --cache $T/bad 2>/dev/null)
check "a fixed row succeeds on --retry-errors: $out" expr "$out" : "rows done 1, failed $((ne - 1)), skipped $((nr - ne)); views 2;" >/dev/null
rows=$(./bin/iv2-cache info $T/bad | sed -n 's/^  row \([0-9]*\): .*/\1/p' | tr '\n' ' ')
check "and loses its error (errors now '$rows')" test "$rows" = "2 3 4 "
check "it verifies" ./bin/iv2-cache verify $T/bad >/dev/null

# ---- a metrics file that cannot be opened is refused before anything is made
X --manifest $T/good.jsonl --cache $T/nometrics --metrics $T/no/such/folder/m.jsonl >/dev/null 2>&1
check "unopenable metrics: refused, no cache folder made" sh -c "test $? -ne 0 && test ! -e $T/nometrics"

# ---- a read that never returns (IV2_TEST_STALL: the row's worker sleeps in its open, as in a
# hung mount's read(), where FFmpeg's time limit cannot reach): the watchdog records the row
# after 1.5 x the limit + 1 s and a new worker does the rest; the run ends (a limit of 3 s, so
# that the other rows' decodes stay well under it on a heavily loaded machine)
printf '{"video":"v0.mp4"}\n{"video":"stalled.mp4"}\n{"video":"v2.mkv"}\n' > $T/stall.jsonl
cp $T/v1.mp4 $T/stalled.mp4
t0=$(date +%s)
out=$(IV2_TEST_STALL=stalled.mp4 timeout 60 ./bin/iv2-extract --teacher "$IVIT" --teacher "$MAE" --compute-threads 1 \
      --threads 1 --views 1 --time-limit 3 --manifest $T/stall.jsonl --cache $T/stall 2>/dev/null)
rc=$?
check "a stalled read ends the row, not the run (rc $rc, $(( $(date +%s) - t0 )) s): $out" \
  expr "$out" : 'rows done 2, failed 1, skipped 0; views 2;' >/dev/null
check "its reason says so" sh -c "./bin/iv2-cache info $T/stall | grep -q 'row 1: stalled.mp4: no progress for 5.5 s in one read'"
check "the cache verifies" ./bin/iv2-cache verify $T/stall >/dev/null

# ---- changed settings are refused, naming the setting
err=$(X --manifest $T/good.jsonl --cache $T/ref --dtype fp16 2>&1 >/dev/null)
check "dtype refused: $err" sh -c "echo '$err' | grep -q 'targets\[0\].dtype is \"fp16\" here, \"bf16\" in the cache'"
err=$(X --manifest $T/good.jsonl --cache $T/ref --seed 8 2>&1 >/dev/null)
check "seed refused: $err" sh -c "echo '$err' | grep -q 'seed is 8 here, 7 in the cache'"
# seeds compare exactly: one apart near 2^53 (within cJSON_Compare's relative epsilon) is another seed
X --manifest $T/one.jsonl --cache $T/bigseed --seed 9007199254740991 >/dev/null 2>&1 || echo "FAIL: seed 2^53 - 1"
err=$(X --manifest $T/one.jsonl --cache $T/bigseed --seed 9007199254740992 2>&1 >/dev/null)
check "a seed one apart near 2^53 refused: $err" sh -c "echo '$err' | grep -q 'seed is 9007199254740992 here, 9007199254740991 in the cache'"
err=$(./bin/iv2-extract --teacher 'internvit=preset:internvit-tiny:5:{"img":112}' --teacher "$MAE" --views 2 --seed 7 --manifest $T/good.jsonl --cache $T/ref 2>&1 >/dev/null)
check "teacher refused: $err" sh -c "echo '$err' | grep -q 'teachers.internvit.weights'"
sed '1s/"v0.mp4"/"v1.mp4"/' $T/good.jsonl > $T/good2.jsonl   # a stored row changed
err=$(X --manifest $T/good2.jsonl --cache $T/ref 2>&1 >/dev/null)
check "other manifest refused: $err" sh -c "echo '$err' | grep -q 'manifest_sha256'"
check "refusals left the cache alone" test "$(digest $T/ref)" = "$D"
# the corpus grows: rows appended to the manifest are extracted, the stored ones kept
cp -r $T/ref $T/grow; rm -f $T/grow/extract.lock
cp $T/good.jsonl $T/grown.jsonl; echo '{"video":"v0.mp4","start":0.5}' >> $T/grown.jsonl
out=$(X --manifest $T/grown.jsonl --cache $T/grow --metrics $T/grow.jsonl 2>/dev/null)
check "grown manifest: only the new row ($out)" expr "$out" : 'rows done 1, failed 0, skipped 4;' >/dev/null
check "a manifest_grew line" grep -q '"event":"manifest_grew","rows_before":4,"rows":5' $T/grow.jsonl
out=$(X --manifest $T/grown.jsonl --cache $T/grow 2>/dev/null)
check "then it resumes as usual ($out)" expr "$out" : 'rows done 0, failed 0, skipped 5;' >/dev/null
err=$(X --manifest $T/good.jsonl --cache $T/grow 2>&1 >/dev/null)
check "the shorter manifest is refused: $err" sh -c "echo '$err' | grep -q 'manifest_sha256'"

# ---- a cache another iv2-extract is writing is refused (it would redo every view): this
# shell holds the folder's lock as a running extract does; released, the cache resumes
exec 9>$T/ref/extract.lock
flock -n 9
err=$(X --manifest $T/good.jsonl --cache $T/ref 2>&1 >/dev/null)
rc=$?
exec 9>&-
check "second writer refused (rc $rc): $err" sh -c "test $rc -ne 0 && echo '$err' | grep -q 'being written by another iv2-extract'"
out=$(X --manifest $T/good.jsonl --cache $T/ref) || echo "FAIL: run after the lock was released"
check "lock released: $out" expr "$out" : 'rows done 0, failed 0, skipped 4;' >/dev/null

# ---- --time-limit: a video over it is recorded with the reason and skipped
err=$(X --time-limit 0.000001 --manifest $T/one.jsonl --cache $T/slow 2>&1 >/dev/null)
check "time limit recorded: $err" sh -c "echo '$err' | grep -q 'time limit of 1e-06 s exceeded'"

# ---- a row names the stream to decode ("stream": the container's index; default the best one)
ffmpeg -v error -y -f lavfi -i testsrc=size=64x48:rate=25:duration=1 -f lavfi -i testsrc2=size=96x80:rate=25:duration=1 \
  -map 0 -map 1 -pix_fmt yuv420p $T/two.mkv || exit 1
printf '{"video":"two.mkv","stream":1}\n{"video":"two.mkv","stream":5}\n' > $T/streams.jsonl
X --views 1 --manifest $T/streams.jsonl --cache $T/streams >/dev/null 2>&1
./bin/iv2-cache export-view $T/streams 0 --out $T/st0 >/dev/null 2>&1
check "row 0 decoded stream 1 (96x80)" sh -c "head -c 1000000 $T/st0.safetensors | grep -aq 'src.\":\[96,80\].*stream.\":1'"
check "row 1: no stream 5, recorded" sh -c "./bin/iv2-cache info $T/streams | grep -q 'no stream 5 (the file has 2)'"

# ---- a manifest that is a pipe is refused (relative paths would resolve under /dev/fd)
err=$(cat $T/good.jsonl | X --manifest /dev/stdin --cache $T/pipe 2>&1 >/dev/null)
check "pipe manifest refused: $err" sh -c "echo '$err' | grep -q 'not a regular file'"

# ---- a run in which every row it tried failed (a missing mount): exit 3, the rows recorded; a
# run with some rows written and some failed exits 0 (the bad rows are recorded and skipped)
printf '{"video":"/nonexistent-mount/a.mp4"}\n{"video":"/nonexistent-mount/b.mp4"}\n' > $T/gone.jsonl
err=$(X --manifest $T/gone.jsonl --cache $T/gone 2>&1 >/dev/null)
rc=$?
check "all rows failed: exit 3 (rc $rc): $err" sh -c "test $rc -eq 3 && echo '$err' | grep -q 'every row failed (2, none stored'"
check "and they are recorded" sh -c "./bin/iv2-cache info $T/gone | grep -q 'errors 2'"
X --manifest $T/gone.jsonl --cache $T/gone >/dev/null 2>&1
rc=$?
check "its plain rerun (the rows skipped) exits 3 too (rc $rc)" test $rc -eq 3

# ---- a map that may not grow: clear error, valid cache, resume completes
err=$(IV2_CACHE_MAX_MAP=3000000 X --batch 1 --manifest $T/good.jsonl --cache $T/full --metrics $T/full.jsonl 2>&1 >/dev/null)
rc=$?
check "map limit fails the run (rc $rc): $err" sh -c "test $rc -ne 0 && echo '$err' | grep -q 'is full'"
check "and its metrics end with a failed line" sh -c "tail -n 1 $T/full.jsonl | grep -q '\"event\":\"failed\",\"error\":\".*is full'"
check "the failed line counts the views the cache holds ($(nviews $T/full))" test "$(jnum $T/full.jsonl failed views)" = "$(nviews $T/full)"
check "full cache verifies" ./bin/iv2-cache verify $T/full >/dev/null
X --manifest $T/good.jsonl --cache $T/full >/dev/null || echo "FAIL: resume after full"
check "grown cache equals the uninterrupted one" test "$(digest $T/full)" = "$D"

# ---- a full disk (small tmpfs) and a read-only folder, in a private mount namespace
if unshare -m true 2>/dev/null && unshare -m sh -c "mkdir -p $T/mnt && mount -t tmpfs -o size=64k tmpfs $T/mnt" 2>/dev/null; then
    export T IVIT MAE
    unshare -m sh -c '
        X() { ./bin/iv2-extract --teacher "$IVIT" --teacher "$MAE" --compute-threads 1 --threads 2 --views 2 --seed 7 "$@"; }
        mkdir -p $T/tmpfs $T/ro
        mount -t tmpfs -o size=2500k tmpfs $T/tmpfs || exit 2
        err=$(X --batch 1 --manifest $T/good.jsonl --cache $T/tmpfs/c 2>&1 >/dev/null) && { echo "FAIL: full disk did not fail"; exit 1; }
        echo "$err" | grep -q "disk full\|No space\|is full" || { echo "FAIL: full disk message: $err"; exit 1; }
        ./bin/iv2-cache verify $T/tmpfs/c >/dev/null || { echo "FAIL: cache on a full disk does not verify"; exit 1; }
        # a disk that fills while the cache is created (40k: once between the meta and its
        # targets'"'"' databases): never a meta whose target databases are missing
        for kb in 28 32 36 40 44 48; do
            mkdir -p $T/tiny$kb && mount -t tmpfs -o size=${kb}k tmpfs $T/tiny$kb || exit 2
            X --batch 1 --manifest $T/good.jsonl --cache $T/tiny$kb/c >/dev/null 2>&1 && { echo "FAIL: ${kb}k disk did not fail"; exit 1; }
            v=$(./bin/iv2-cache verify $T/tiny$kb/c 2>&1) || echo "$v" | grep -q "no meta record" ||
                { echo "FAIL: cache on a ${kb}k disk: $v"; exit 1; }
            umount $T/tiny$kb
        done
        mount --bind $T/ref $T/ro && mount -o remount,ro,bind $T/ro || exit 2
        ./bin/iv2-cache verify $T/ro | grep -q "^views 8," || { echo "FAIL: read-only folder not readable"; exit 1; }
        err=$(X --manifest $T/good.jsonl --cache $T/ro 2>&1 >/dev/null) && { echo "FAIL: write to a read-only folder"; exit 1; }
        echo "$err" | grep -q "not writable" || { echo "FAIL: read-only message: $err"; exit 1; }
        exit 0'
    rc=$?
    [ $rc -eq 2 ] && echo "note: mounts unavailable, tmpfs/read-only parts skipped"
    [ $rc -eq 1 ] && fails=$((fails + 1))
elif [ "$(id -u)" != 0 ]; then
    chmod -R a-w $T/ref
    check "read-only folder readable" sh -c "./bin/iv2-cache verify $T/ref | grep -q '^views 8,'"
    err=$(X --manifest $T/good.jsonl --cache $T/ref 2>&1 >/dev/null)
    rc=$?
    check "write to read-only folder refused: $err" sh -c "test $rc -ne 0 && echo '$err' | grep -q 'not writable'"
    chmod -R u+w $T/ref
else
    echo "note: no mount namespace and running as root: read-only/tmpfs parts skipped"
fi

[ $fails -eq 0 ] || { echo "$fails checks failed"; exit 1; }
rm -rf $T
echo "ok"
