#!/bin/sh
# test_bench_torch_smoke: the PyTorch baseline of the GPU check (tests/gpu/bench_torch.py) runs
# only on the GPU machine, rarely; here its training rows run at toy width on the CPU so the
# script cannot rot between GPU runs: the fwd+bwd step and the whole step (heads, loss, clipping,
# AdamW), eager and under torch.compile (a compile the machine cannot do is reported by the
# script as "failed" and accepted here; an eager row must run). Skipped where torch is absent.
cd "$(dirname "$0")/.." || exit 1
python3 -c 'import torch' 2>/dev/null || { echo "skipped: no torch"; exit 77; }
out=$(OMP_NUM_THREADS=2 python3 tests/gpu/bench_torch.py --cpu-smoke 2>&1); rc=$?
echo "$out"
[ $rc -eq 0 ] || { echo "FAIL: bench_torch.py --cpu-smoke exited $rc"; exit 1; }
echo "$out" | awk '
  /^iv2-1b (train|step) .*eager\)$/ { eager++; if ($5 <= 0) { print "FAIL: non-positive tokens/s: " $0; bad = 1 } }
  /^iv2-1b (train|step) .*torch\.compile/ { compiled++ }
  END { if (eager != 2) { print "FAIL: " eager + 0 " eager rows of 2"; bad = 1 }
        if (compiled != 2) { print "FAIL: " compiled + 0 " compiled rows (ran or failed) of 2"; bad = 1 }
        exit bad }'
