#!/bin/sh
# test_bench_distill_smoke: tests/gpu/bench_distill_cuda.c (iv2-distill from a recipe-size cache:
# the GPU's wait on the data path, issue 8) run on the CPU with iv2-tiny, 4 views, batch 2 and 4
# steps, so the benchmark's code cannot rot between GPU runs: its JSON has the run's shape,
# positive times, a wait fraction in [0, 1], and the cache and run folder are removed.
cd "$(dirname "$0")/.." || exit 1
command -v python3 >/dev/null 2>&1 || { echo "skipped: no python3"; exit 77; }
make -s build/gpu/bench_distill_cuda >/dev/null 2>&1 || { echo "FAIL: cannot build build/gpu/bench_distill_cuda"; exit 1; }
T=$(mktemp -d /tmp/iv2_bench_distill_XXXXXX) || exit 1
trap 'rm -rf "$T"' EXIT
out=$(IV2_BENCH_DEVICE=cpu IV2_BENCH_STUDENT=iv2-tiny IV2_BENCH_VIEWS=4 IV2_BENCH_BATCH=2 IV2_BENCH_STEPS=4 \
      build/gpu/bench_distill_cuda "$T/b.json" 2>&1) || { echo "FAIL: bench_distill_cuda: $out" | tail -n 20; exit 1; }
echo "$out" | tail -n 2
python3 - "$T/b.json" <<'PY' || exit 1
import json, sys
b = json.load(open(sys.argv[1]))
bad = []
if (b["device"], b["student"], b["views"], b["batch"], b["steps"]) != ("cpu", "iv2-tiny", 4, 2, 4): bad.append("shape")
if not (b["step_ms"] > 0 and b["views_per_s"] > 0 and b["copy_ms"] >= 0): bad.append("times")
if abs(b["views_per_s"] - 2 * 1000 / b["step_ms"]) > 0.01 * b["views_per_s"]: bad.append("views/s vs step")
if not (0 <= b["wait_frac_median"] <= 1 and 0 <= b["wait_frac_mean"] <= 1): bad.append("wait fraction")
if b["n_vis"] != 417: bad.append("visible tokens %d" % b["n_vis"])
if bad: print("FAIL:", ", ".join(bad), b); sys.exit(1)
PY
if ls build/gpu/tmp/bench_distill_cuda.* >/dev/null 2>&1; then echo "FAIL: cache or run folder left behind"; exit 1; fi
echo "bench_distill_cuda: the CPU smoke run's figures are consistent"
