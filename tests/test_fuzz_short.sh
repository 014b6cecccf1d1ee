#!/bin/sh
# test_fuzz_short: a short, seeded libFuzzer run (~6 s each) of the safetensors, manifest and
# .pth parsers from the committed seed corpora (tests/fuzz/corpus, tests/fixtures/pth), under
# ASan+UBSan. Any crash, leak or sanitizer report
# fails. Skipped when clang's libFuzzer is not installed. Long runs: tests/fuzz/README.md.
cd "$(dirname "$0")/.." || exit 1
out=$(sh tests/fuzz/build.sh 2>&1); rc=$?
[ $rc -eq 77 ] && { echo "$out"; exit 77; }
[ $rc -ne 0 ] && { echo "fuzzer build failed: $out"; exit 1; }
T=$(mktemp -d /tmp/iv2_test_fuzz_XXXXXX) || exit 1
trap 'rm -rf "$T"' EXIT
secs=${FUZZ_SECONDS:-6}
fail=0
for t in safetensors manifest pth; do
  mkdir -p "$T/corpus_$t"
  seeds=tests/fuzz/corpus/$t dict=tests/fuzz/json.dict len=4096
  [ $t = pth ] && { seeds=tests/fixtures/pth dict=tests/fuzz/pth.dict len=16384; }
  build/fuzz/fuzz_$t -seed=1 -max_total_time="$secs" -max_len=$len -dict=$dict \
    -artifact_prefix="$T/" -print_final_stats=1 "$T/corpus_$t" $seeds >"$T/$t.log" 2>&1
  rc=$?
  if [ $rc -ne 0 ]; then
    echo "fuzz_$t: exit $rc"; grep -E 'ERROR|SUMMARY|==[0-9]+==' "$T/$t.log" | head -20
    for a in "$T"/crash-* "$T"/leak-* "$T"/timeout-* "$T"/oom-*; do [ -e "$a" ] && { echo "input: $a"; od -c "$a" | head -5; }; done
    fail=1
  else
    echo "fuzz_$t: $(grep -E 'stat::number_of_executed_units' "$T/$t.log" | awk '{print $2}') runs, no crash"
  fi
done
exit $fail
