#!/bin/sh
# test_bench_step: the whole-training-step rows of tests/gpu/bench_vit.c (issue 8's figure: the
# student, the recipe's heads and loss, clipping and AdamW through distill/'s trainer, at two
# depths extrapolated to full depth) run at toy size on the CPU, so the benchmark's code cannot rot
# between GPU runs: one row, of the batch asked for, positive figures, views/s consistent with
# ms/step. (That a step on the loaded batch is a real step: test_distill_train.)
cd "$(dirname "$0")/.." || exit 1
make -s build/gpu/bench_vit >/dev/null 2>&1 || { echo "FAIL: cannot build build/gpu/bench_vit"; exit 1; }
mkdir -p build/tmp
out=$(build/gpu/bench_vit --step-smoke build/tmp/bench_step.json 2>&1) || { echo "FAIL: bench_vit --step-smoke: $out"; exit 1; }
# the JSON with the step's row alone (the report reads such files; a stray comma once hid two variants)
if command -v python3 >/dev/null 2>&1; then
  python3 -c "import json, sys; m = json.load(open(sys.argv[1]))['models']; assert len(m) == 1 and m[0]['ms'] > 0, m" \
    build/tmp/bench_step.json || { echo "FAIL: bench_vit's JSON"; exit 1; }
fi
echo "$out"
echo "$out" | awk '
  /^iv2-tiny step/ { n++; views = $3; ms = $4; tok = $5; vps = $7
    if (ms <= 0 || tok <= 0 || vps <= 0) { print "FAIL: non-positive figures"; bad = 1 }
    if (views != 2) { print "FAIL: batch " views; bad = 1 }
    d = vps - views * 1000 / ms; if (d < 0) d = -d
    if (d > 0.02 * vps) { print "FAIL: views/s " vps " disagrees with ms/step " ms; bad = 1 } }
  END { if (n != 1) { print "FAIL: " n " step rows"; bad = 1 }; exit bad }'
[ $? -eq 0 ] || exit 1

# bench_vit --ab (check.sh's side-by-side timing of the switches) at toy size on the CPU: the default
# runs with no switch set, each configuration with its own (AdamW beside the forward on the second
# trainer), every configuration timed in every round, the default's ratio 1
ab=$(IV2_AB_ROUNDS=3 IV2_AB_STEPS=2 IV2_NORM_PF=1 build/gpu/bench_vit --ab-smoke build/tmp/bench_ab.json \
  "IV2_OPTIM_OVERLAP=1" "IV2_NORM_PF=1, IV2_GEMM_TUNE=1" 2>&1) || { echo "FAIL: bench_vit --ab-smoke: $ab"; exit 1; }
echo "$ab"
if command -v python3 >/dev/null 2>&1; then
  python3 - build/tmp/bench_ab.json <<'PY' || { echo "FAIL: bench_vit --ab's JSON"; exit 1; }
import json, sys
j = json.load(open(sys.argv[1]))
c = j["configs"]
assert [x["config"] for x in c] == ["default", "IV2_OPTIM_OVERLAP=1", "IV2_NORM_PF=1, IV2_GEMM_TUNE=1"], c
assert [x["overlap"] for x in c] == [0, 1, 0], "overlap per configuration"
assert [x["switches_set"] for x in c] == [0, 1, 2], "switches set during each turn"
assert c[0]["ratio"] == 1 and all(len(x["ms_rounds"]) == 3 and min(x["ms_rounds"]) > 0 for x in c), c
for x in c:
    r = sorted(x["ms_rounds"])[1]
    assert abs(x["ms"] - r) < 1e-3 * r, ("median of the rounds", x)
    assert x["ratio_min"] <= x["ratio"] <= x["ratio_max"], x
PY
fi
echo "$ab" | grep -q "IV2_NORM_PF=1 in the environment is not part of the default" || { echo "FAIL: no note of the switch set at start"; exit 1; }
bad=$(build/gpu/bench_vit --ab-smoke build/tmp/bench_ab.json "IV2_NORM_PF=1 IV2_NOT_A_SWITCH=1" 2>&1)
[ $? -eq 2 ] && echo "$bad" | grep -q "IV2_NOT_A_SWITCH is not a switch" || { echo "FAIL: unknown switch: $bad"; exit 1; }
bad=$(build/gpu/bench_vit --ab-smoke build/tmp/bench_ab.json 'IV2_ATTN_BWD="fd"' 2>&1)
[ $? -eq 2 ] && echo "$bad" | grep -q "not of" || { echo "FAIL: a value with quotes: $bad"; exit 1; }
echo "ok: bench_vit --ab-smoke"
