#!/bin/sh
# Runs every test: build/tests/test_* programs and tests/test_*.sh scripts, one line each.
# Exit code 77 means skipped (a GPU, torch or ../shared/media is absent). Ends with the line
# "N passed, N failed, N skipped" and exits non-zero on any failure.
#   TESTS="name ..."  run only these (names without extension)
#   TEST_TIMEOUT=s    per-test limit (default 600)
cd "$(dirname "$0")/.." || exit 1
export IV2_QUIET=${IV2_QUIET:-1}
export IV2_ROOT="$(pwd)"
export IV2_SHARED="${IV2_SHARED:-$(cd .. && pwd)/shared}"
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
limit=${TEST_TIMEOUT:-600}
logdir=build/test-logs
mkdir -p "$logdir"
pass=0 fail=0 skip=0 failed=""
list=""
for t in build/tests/test_* tests/test_*.sh build/gpu/test_*; do
  [ -e "$t" ] || continue
  case "$t" in *.o|*.d) continue;; esac
  name=$(basename "$t" .sh)
  if [ -n "$TESTS" ]; then
    case " $TESTS " in *" $name "*) ;; *) continue;; esac
  fi
  list="$list $t"
done
for t in $list; do
  name=$(basename "$t" .sh)
  t0=$(date +%s.%N)
  case "$t" in
    *.sh) timeout "$limit" sh "$t" >"$logdir/$name.log" 2>&1 ;;
    *)    timeout "$limit" "$t" >"$logdir/$name.log" 2>&1 ;;
  esac
  rc=$?
  dt=$(awk "BEGIN{print $(date +%s.%N) - $t0}")
  case $rc in
    0)  pass=$((pass+1)); printf 'PASS  %-36s %6.1fs\n' "$name" "$dt" ;;
    77) skip=$((skip+1)); printf 'SKIP  %-36s %s\n' "$name" "$(tail -n 1 "$logdir/$name.log")" ;;
    *)  fail=$((fail+1)); failed="$failed $name"
        printf 'FAIL  %-36s (exit %d) log: %s\n' "$name" "$rc" "$logdir/$name.log"
        tail -n 15 "$logdir/$name.log" | sed 's/^/      /' ;;
  esac
done
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
