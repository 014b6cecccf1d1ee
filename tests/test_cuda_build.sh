#!/bin/sh
# test_cuda_build: when nvcc is on PATH, compile the CUDA backend (kernels/) and the GPU tests and
# benchmarks (tests/gpu/) for one architecture (sm_90a: the Hopper kernels too), so a CUDA build
# break fails the suite on machines without a GPU. Skipped (77) without nvcc. Builds in a copy of the sources under build/cuda/, so
# the CPU build in build/ stays as it is (build/flags would have make rebuild either build from
# scratch each time the other ran).
# Also runs the GPU test programs, which must skip (77) or pass here.
command -v nvcc >/dev/null 2>&1 || { echo "skipped: nvcc not on PATH"; exit 77; }
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
W="$ROOT/build/cuda"
mkdir -p "$W"
# refresh the copy, keeping its build outputs (cp -p keeps times, so make rebuilds what changed)
for d in Makefile common extract distill kernels manifests tests; do
  rm -rf "${W:?}/$d"
  [ -e "$d" ] && cp -Rp "$d" "$W/"
done
cd "$W" || exit 1
log="$W/build.log"
if ! nice make -s -j2 SKIP_DEPS=1 FFMPEG=0 CUDA=1 CUDA_ARCH="${CUDA_ARCH:-90a}" CUDA_PTX= gpu-tests \
      $(for f in tests/gpu/bench_*.c; do [ -e "$f" ] && echo "build/gpu/$(basename "$f" .c)"; done) >"$log" 2>&1; then
  echo "CUDA build failed (log: $log):"
  grep -E "error|Error" "$log" | head -n 30
  exit 1
fi
# no new warnings from the CUDA side
if grep -E "^(kernels|tests/gpu)/.*warning" "$log"; then echo "warnings in kernels/ or tests/gpu/"; exit 1; fi
fail=0
for t in build/gpu/test_*; do
  [ -x "$t" ] || continue
  mkdir -p "$W/logs"
  "$t" >"$W/logs/$(basename "$t").log" 2>&1
  rc=$?
  case $rc in 0|77) ;; *) echo "$t: exit $rc"; tail -n 5 "$W/logs/$(basename "$t").log"; fail=1 ;; esac
done
[ $fail -eq 0 ] || exit 1
echo "CUDA backend and GPU tests build (sm_${CUDA_ARCH:-90a}); GPU tests skip or pass here"
