#!/bin/sh
# test_bench_torch_smoke: the PyTorch baseline of the GPU check (tests/gpu/bench_torch.py) runs
# only on the GPU machine, rarely; here its training rows run at toy width on the CPU so the
# script cannot rot between GPU runs: the fwd+bwd step and the whole step (heads, loss, clipping,
# AdamW), eager and under torch.compile (a compile the machine cannot do is reported by the
# script as "failed" and accepted here; an eager row must run). No figure is checked: at toy size
# on a loaded machine the extrapolation from depths 1 and 2 can even come out negative.
# Skipped where torch is absent.
cd "$(dirname "$0")/.." || exit 1
python3 -c 'import torch' 2>/dev/null || { echo "skipped: no torch"; exit 77; }
# a private compile cache: torch.compile runs of other processes on the machine stay out of it
cache=$(mktemp -d); trap 'rm -rf "$cache"' EXIT
out=$(OMP_NUM_THREADS=2 TORCHINDUCTOR_CACHE_DIR="$cache" TRITON_CACHE_DIR="$cache/triton" \
      python3 tests/gpu/bench_torch.py --cpu-smoke 2>&1); rc=$?
echo "$out"
[ $rc -eq 0 ] || { echo "FAIL: bench_torch.py --cpu-smoke exited $rc"; exit 1; }
echo "$out" | awk '
  /^iv2-1b (train|step) .*eager\)$/ { eager++ }
  /^iv2-1b (train|step) .*torch\.compile/ { compiled++ }
  END { if (eager != 2) { print "FAIL: " eager + 0 " eager rows of 2"; bad = 1 }
        if (compiled != 2) { print "FAIL: " compiled + 0 " compiled rows (ran or failed) of 2"; bad = 1 }
        exit bad }'
