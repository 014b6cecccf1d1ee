#!/bin/sh
# test_profile_step: tests/gpu/profile_step.py (the per-kernel table of the GPU check) on the two
# hand-written ncu CSVs beside it: the step found as the repeated tail (a first step with an extra
# kernel, two equal GEMMs at the end of the step, and four equal steps must not mislead it), durations in
# nsecond/usecond/msecond/second with thousands commas, gpu__time_duration.sum preferred over
# other metric rows, names shortened (templates, arguments, namespaces, mangled names), cuBLAS
# kernels in one row and by grid; ERR_NVGPUCTRPERM exits 77, a file without kernels exits 1.
cd "$(dirname "$0")/.." || exit 1
command -v python3 >/dev/null 2>&1 || { echo "skipped: no python3"; exit 77; }
T=$(mktemp -d /tmp/iv2_test_profile_XXXXXX) || exit 1
trap 'rm -rf "$T"' EXIT
P=tests/gpu/profile_step.py F=tests/gpu
fail=0
no() { echo "FAIL: $*"; fail=1; }
# has FILE REGEX...: each extended regex matches a line of FILE
has() {
  f=$1; shift
  for re in "$@"; do grep -qE -- "$re" "$f" || { no "no /$re/ in $f:"; sed 's/^/    /' "$f"; }; done
}

echo '{"models": [{"model": "iv2-1b-train", "ms_timed": [6.0, 17.0]}]}' > "$T/bench.json"
python3 $P $F/profile_step_fixture.csv --bench-json "$T/bench.json" --txt "$T/full.txt" > "$T/out.txt" \
  || no "details fixture: exit $?"
has "$T/out.txt" \
  '^-- one train step: 13 kernels \(the last 13 of 43 profiled; the same 13 repeat 3x' \
  'kernel time 5\.433 ms = 90\.5% of the 6\.000 ms' \
  'by class: attention 76\.1%  cuBLAS GEMM 21\.6%  norms 1\.6%  other 0\.7%' \
  '^  1  attn_bwd_dkv_kernel +1 +2\.000 +36\.8% +2000\.0$' \
  '^  2  flash_fwd2_kernel +1 +1\.234 +22\.7% +1234\.5$' \
  '^  3  cuBLAS GEMM +7 +1\.173 +21\.6% +167\.5$' \
  '^  6  residual8_kernel +1 +0\.040 ' \
  '^  7  norm8_kernel +1 +0\.025 +0\.5% +25\.5$' \
  '^ +2 +0\.610 +11\.2% +305\.1  \(132, 1, 1\) +\(384, 1, 1\) +nvjet_tst_192x192_64x4_2x1_v_bz_coopA_TNN$' \
  ' cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_32x6_tn_align8$' \
  '^ +1 +0\.013 .* splitKreduce_kernel$'
grep -q 'fill_bias\|to_bf16' "$T/out.txt" && no "set-up or first-step kernels counted in the step"
grep -q timeline "$T/out.txt" && no "timeline on stdout"
has "$T/full.txt" '^-- timeline of the step' '^   0 +25\.5  \(13344, 1, 1\) .* norm8_kernel$' \
  '^  12 +100\.0  \(66, 1, 1\) .* nvjet_tst_128x256_64x4_1x2_h_bz_coopB_NTN$'

# a fourth identical step (the whole-step profile's 1 + 3 steps): the longest repeated tail is two
# steps; still one step of 13 is reported, repeated 4x
awk -F'","' 'NR > 3 && $1 ~ /^"[0-9]+$/ { id = substr($1, 2) + 0; if (id >= 30) { sub(/^"[0-9]+"/, "\"" id + 13 "\""); print } }' \
  $F/profile_step_fixture.csv > "$T/extra.csv"
cat $F/profile_step_fixture.csv "$T/extra.csv" > "$T/four.csv"
python3 $P "$T/four.csv" > "$T/four.txt" || no "four steps: exit $?"
has "$T/four.txt" '^-- one train step: 13 kernels \(the last 13 of 56 profiled; the same 13 repeat 4x' \
  'kernel time 5\.433 ms$'

python3 $P $F/profile_step_fixture_raw.csv > "$T/raw.txt" || no "raw fixture: exit $?"
has "$T/raw.txt" '^-- one train step: 8 kernels \(the last 8 of 26' 'kernel time 2\.285 ms$' \
  '^  1  attn_bwd_dkv_kernel +1 +1\.200 +52\.5%' '^  4  cuBLAS GEMM +3 +0\.255 +11\.2% +85\.0$' \
  '^  5  rmsnorm_kernel ' ' splitKreduce_kernel$'

# a line of program output inside the table: left out with a warning, the same step found
sed '20a profile-step: iv2-1b depth 2, 32 views x 417 visible tokens' $F/profile_step_fixture.csv > "$T/stray.csv"
python3 $P "$T/stray.csv" > "$T/stray.txt" || no "stray line: exit $?"
has "$T/stray.txt" '^-- one train step: 13 kernels \(the last 13 of 43' 'kernel time 5\.433 ms$' \
  'stray\.csv: 1 lines are not kernel rows \(first: line 21\)'

printf '==PROF== Connected to process 1 (x)\n==ERROR== ERR_NVGPUCTRPERM - The user does not have permission to access NVIDIA GPU Performance Counters on the target device 0.\n' > "$T/perm.csv"
python3 $P "$T/perm.csv" > "$T/perm.txt"; rc=$?
[ $rc -eq 77 ] || no "ERR_NVGPUCTRPERM: exit $rc, want 77"
: > "$T/empty.csv"
python3 $P "$T/empty.csv" > "$T/empty.txt"; rc=$?
[ $rc -eq 1 ] || no "no kernels: exit $rc, want 1"
has "$T/empty.txt" 'empty\.csv: no kernel with a duration'
[ $fail -eq 0 ] && echo "profile_step.py: both ncu CSV layouts, 77 on ERR_NVGPUCTRPERM, 1 on no kernels"
exit $fail
