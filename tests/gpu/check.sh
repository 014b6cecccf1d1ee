#!/bin/sh
# tests/gpu/check.sh: the one script to run on the GPU machine (see docs/cuda.md).
#   sh tests/gpu/check.sh            logs and figures go to $OUT (default build/gpu-check)
#   CHECK_ONLY="build bench_vit" sh tests/gpu/check.sh   only the named steps
# Steps, each logged to $OUT/<step>.log, none stopping the others:
#   env       nvidia-smi, nvcc, compute-sanitizer, torch versions
#   build     make SKIP_DEPS=1 FFMPEG=0 CUDA=1 CUDA_ARCH=90a with LMDB/cJSON/OpenBLAS from .deps/*.deb
#   test_*    every GPU test program (build/gpu/test_*): each kernel vs the CPU backend
#             (test_cuda_ops), the tiny teachers and student through vit.h GPU vs CPU
#             (test_cuda_vit), the official-model goldens of tests/goldens/ on the GPU
#             (test_cuda_goldens); iv2-distill on CUDA against the CPU on a tiny synthetic cache:
#             the loss curve of 100 steps (test_distill_cuda_curve) and checkpoints moving GPU <-> CPU
#             (test_distill_cuda_resume), 90 s each; the Hopper forward's wgmma building blocks
#             (test_wgmma_probe) and the op/ViT/golden tests again with the wgmma forward
#             (IV2_ATTN_FWD=wg128 etc.) and the wgmma backward (IV2_ATTN_BWD=wg), and with the
#             scalar backward kernels, the GELU and residual norms unfused (IV2_VEC_BWD=0 IV2_GELU_FUSION=0 IV2_FUSE_NORM=0),
#             the norm backward's sums in registers (IV2_NORM_SMEM=0), dQ from a stored dS (IV2_ATTN_BWD=ds)
#             and delta made in the dQ kernel (IV2_ATTN_BWD=fd);
#             the curve and resume tests with AdamW beside the next forward (IV2_OPTIM_OVERLAP=1), the op
#             and ViT tests with the GEMM algorithms timed per shape (IV2_GEMM_TUNE=1) and with the
#             norm backward's next row in flight (IV2_NORM_PF=1)
#   memcheck  compute-sanitizer memcheck on one tiny InternViT forward, on the extract teachers test
#             (and on the op tests); racecheck on the tiny forward (default and wg128p)
#   bench_*   bench_kernels (GEMMs, attention with each backward path, the norm backwards beside
#             IV2_NORM_PF=1), bench_vit (iv2, incl. the whole training step of iv2-distill), bench_vit_ab
#             (the whole step under each variant of the switches, side by side in one process:
#             AdamW beside the next forward, the norm backward's next row in flight, delta in the dQ
#             kernel (fd), dQ from a stored dS (ds), the wgmma backward, the GEMMs timed per shape,
#             two combinations, and the paths the defaults replaced), bench_vit again with the GEMM
#             algorithms timed per shape (the forwards and the train step) and with the fastest wgmma
#             forward,
#             bench_distill_cuda (iv2-distill from a recipe-size cache: the
#             GPU's wait on the loader), bench_extract (iv2-extract's teachers, downloads,
#             encoding and LMDB writes at full size, views/s per stage) and bench_torch.py
#             (PyTorch, same GPU, same run: the whole step under bf16 autocast and the fwd+bwd
#             student step, eager; then both with torch.compile as bench_torch_compiled)
#   profile_step  one iv2-1b train step (depth 2, 32 views) under Nsight Compute, kernel durations
#             only; tests/gpu/profile_step.py makes the per-kernel table (skipped without ncu)
#   ncu_attention  Nsight Compute's sections (throughput, occupancy, stalls, instruction mix) for
#             the attention forward and fused backward kernels; the report is ncu_attention.log
#   ncu_vector_bwd  the same for the memory-bound backward kernels (norm, LayerScale, bias sums)
#   profile_whole_step  the whole iv2-distill step (heads, loss, clipping, AdamW) kernel by kernel
# Ends with a report (also $OUT/report.txt), the per-kernel tables (profile_step.txt,
# profile_whole_step.txt) and everything else (logs, bench_*.json) packed into $OUT/logs.tar.gz:
# the device tool brings back at most 8 files. The whole check took 260 s on an H100 on
# 2026-11-27 (build 30 s, tests 40 s, benchmarks 120 s), before profile_whole_step and
# ncu_vector_bwd (about 40 s more) and the twenty-odd steps added since; each step has its own
# time limit (build and build_extract_teachers 300 / 200 s, tests 90-150 s, benchmarks 120-200 s),
# so a hang costs at most that step's limit. Exit 0 only when no step failed.
cd "$(dirname "$0")/../.." || exit 1
ROOT=$(pwd)
OUT=${OUT:-$ROOT/build/gpu-check}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
T0=$(date +%s)
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
command -v nvcc >/dev/null 2>&1 || PATH="$PATH:/usr/local/cuda/bin"
export PATH

# the whole check stays under DEADLINE seconds (the device tool's limit per call is 600 s), so the
# report is always written: a step starting later is skipped, and each step's limit is cut to
# the time left
DEADLINE=${CHECK_DEADLINE:-560}
# step NAME LIMIT_S CMD...: run, log, record PASS/FAIL/SKIP (exit 77) with seconds
step() {
  name=$1 lim=$2; shift 2
  # CHECK_ONLY="build racecheck_ops ...": run only the named steps (a short second run)
  if [ -n "$CHECK_ONLY" ]; then case " $CHECK_ONLY " in *" $name "*) ;; *) return 77 ;; esac; fi
  t=$(date +%s)
  left=$(( DEADLINE - (t - T0) ))
  if [ $left -lt 10 ]; then
    printf '%-34s %-20s\n' "$name" "SKIP (deadline)" | tee -a "$SUMMARY"
    return 77
  fi
  [ $lim -gt $left ] && lim=$left
  echo "== $name: $*" > "$OUT/$name.log"
  timeout "$lim" "$@" >> "$OUT/$name.log" 2>&1
  rc=$?
  dt=$(( $(date +%s) - t ))
  case $rc in
    0) st=PASS ;; 77) st=SKIP ;; 124) st="FAIL (timeout ${lim}s)" ;; *) st="FAIL (exit $rc)" ;;
  esac
  printf '%-34s %-20s %4ss\n' "$name" "$st" "$dt" | tee -a "$SUMMARY"
  case $st in FAIL*) tail -n 12 "$OUT/$name.log" | sed 's/^/    | /' ;; esac
  return $rc
}

# ---- dependencies carried as .debs ----
for f in .deps/*.deb; do dpkg -x "$f" .deps/root; done
R="$ROOT/.deps/root"
LIBD="$R/usr/lib/x86_64-linux-gnu"
DEP_CFLAGS="-I$R/usr/include -I$R/usr/include/cjson -I$R/usr/include/x86_64-linux-gnu/openblas-pthread"
DEP_LIBS="-L$LIBD -L$LIBD/openblas-pthread -Wl,-rpath-link,$LIBD -llmdb -lcjson -lopenblas -lm"
export LD_LIBRARY_PATH="$LIBD:$LIBD/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export IV2_QUIET=1 IV2_ROOT="$ROOT" OPENBLAS_NUM_THREADS=1

env_info() {
  date -u; uname -a; nproc
  nvidia-smi || true
  nvidia-smi --query-gpu=name,compute_cap,memory.total,clocks.max.sm,power.limit --format=csv || true
  nvcc --version | tail -n 2
  compute-sanitizer --version 2>/dev/null | head -n 2
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" 2>&1
  echo "git: $(git rev-parse --short HEAD 2>/dev/null) $(git status --short 2>/dev/null | wc -l) changed files"
}
env_info > "$OUT/env.log" 2>&1
printf '%-34s %-20s\n' env "see env.log" >> "$SUMMARY"

# ---- build (make -k: one broken target must not hide the others) ----
MK="make -k -j$(nproc) SKIP_DEPS=1 FFMPEG=0 CUDA=1 CUDA_ARCH=90a CUDA_PTX="
step build 300 $MK BASE_CFLAGS="$DEP_CFLAGS" BASE_LIBS="$DEP_LIBS" gpu-tests build/gpu/bench_kernels \
  build/gpu/bench_vit build/gpu/bench_extract build/gpu/bench_distill_cuda

# ---- GPU parity tests ----
for t in build/gpu/test_*; do
  [ -x "$t" ] || continue
  case $(basename "$t") in test_distill_cuda_*) lim=90 ;; *) lim=150 ;; esac
  step "$(basename "$t")" $lim "$t"
done
# the teacher set of iv2-extract on CUDA vs the CPU (no FFmpeg needed), batched views included
step build_extract_teachers 200 $MK BASE_CFLAGS="$DEP_CFLAGS" BASE_LIBS="$DEP_LIBS" build/tests/test_extract_teachers
[ -x build/tests/test_extract_teachers ] && step test_extract_teachers_cuda 150 build/tests/test_extract_teachers
# the debugging path of attention (unpipelined forward, scalar backward) against the CPU too
[ -x build/gpu/test_cuda_ops ] && step test_cuda_ops_simple_attention 150 env IV2_ATTN_SIMPLE=1 build/gpu/test_cuda_ops
# the scalar norm / GELU / residual / bias-gradient backward kernels (the default takes 16-byte
# vectors) and the MLP's GELU unfused (the default fuses it into the GEMMs' epilogues)
[ -x build/gpu/test_cuda_ops ] && step test_cuda_ops_unfused 150 env IV2_VEC_BWD=0 IV2_GELU_FUSION=0 IV2_FUSE_NORM=0 \
  build/gpu/test_cuda_ops
[ -x build/gpu/test_cuda_vit ] && step test_cuda_vit_unfused 150 env IV2_VEC_BWD=0 IV2_GELU_FUSION=0 IV2_FUSE_NORM=0 \
  build/gpu/test_cuda_vit
# the norm backward's column sums in registers (IV2_NORM_SMEM=0; the default sums them in shared memory)
[ -x build/gpu/test_cuda_ops ] && step test_cuda_ops_norm_regs 150 env IV2_NORM_SMEM=0 build/gpu/test_cuda_ops
[ -x build/gpu/test_cuda_vit ] && step test_cuda_vit_norm_regs 150 env IV2_NORM_SMEM=0 build/gpu/test_cuda_vit
# the norm backward with the next row's loads in flight (IV2_NORM_PF=1; off until timed: bench_kernels'
# norm rows and bench_vit_norm_pf)
[ -x build/gpu/test_cuda_ops ] && step test_cuda_ops_norm_pf 150 env IV2_NORM_PF=1 build/gpu/test_cuda_ops
[ -x build/gpu/test_cuda_vit ] && step test_cuda_vit_norm_pf 150 env IV2_NORM_PF=1 build/gpu/test_cuda_vit
# the cuBLAS attention backward (the default is the fused kernels of flash_attention.cuh) too
[ -x build/gpu/test_cuda_ops ] && step test_cuda_ops_gemm_backward 150 env IV2_ATTN_BWD=gemm build/gpu/test_cuda_ops
[ -x build/gpu/test_cuda_vit ] && step test_cuda_vit_gemm_backward 150 env IV2_ATTN_BWD=gemm build/gpu/test_cuda_vit
# the Hopper forwards on wgmma (IV2_ATTN_FWD=wg128, wg64, and pipelined wg128p, wg64p; not the
# default until they pass here)
for m in wg128 wg64 wg128p wg64p; do
  [ -x build/gpu/test_cuda_ops ] && step test_cuda_ops_fwd_$m 150 env IV2_ATTN_FWD=$m build/gpu/test_cuda_ops
done
[ -x build/gpu/test_cuda_vit ] && step test_cuda_vit_fwd_wg128 150 env IV2_ATTN_FWD=wg128 build/gpu/test_cuda_vit
# the Hopper fused backward on wgmma (IV2_ATTN_BWD=wg; not the default until it passes here)
[ -x build/gpu/test_cuda_ops ] && step test_cuda_ops_bwd_wg 150 env IV2_ATTN_BWD=wg build/gpu/test_cuda_ops
[ -x build/gpu/test_cuda_vit ] && step test_cuda_vit_bwd_wg 150 env IV2_ATTN_BWD=wg build/gpu/test_cuda_vit
[ -x build/gpu/test_cuda_goldens ] && step test_cuda_goldens_bwd_wg 150 env IV2_ATTN_BWD=wg build/gpu/test_cuda_goldens
# the backward that stores dS in the dK/dV kernel and takes dQ from it (IV2_ATTN_BWD=ds; not the default
# until it is timed)
[ -x build/gpu/test_cuda_ops ] && step test_cuda_ops_bwd_ds 150 env IV2_ATTN_BWD=ds build/gpu/test_cuda_ops
[ -x build/gpu/test_cuda_vit ] && step test_cuda_vit_bwd_ds 150 env IV2_ATTN_BWD=ds build/gpu/test_cuda_vit
[ -x build/gpu/test_cuda_goldens ] && step test_cuda_goldens_bwd_ds 150 env IV2_ATTN_BWD=ds build/gpu/test_cuda_goldens
# the backward whose dQ kernel makes delta (IV2_ATTN_BWD=fd; no attn_delta_kernel; not the default until timed)
[ -x build/gpu/test_cuda_ops ] && step test_cuda_ops_bwd_fd 150 env IV2_ATTN_BWD=fd build/gpu/test_cuda_ops
[ -x build/gpu/test_cuda_vit ] && step test_cuda_vit_bwd_fd 150 env IV2_ATTN_BWD=fd build/gpu/test_cuda_vit
# each GEMM shape's algorithm timed among cuBLASLt's candidates (IV2_GEMM_TUNE=1; not the default
# until it is timed): the other algorithms within the tests' tolerances
[ -x build/gpu/test_cuda_ops ] && step test_cuda_ops_gemm_tune 150 env IV2_GEMM_TUNE=1 build/gpu/test_cuda_ops
[ -x build/gpu/test_cuda_vit ] && step test_cuda_vit_gemm_tune 150 env IV2_GEMM_TUNE=1 build/gpu/test_cuda_vit
# AdamW beside the next step's forward (IV2_OPTIM_OVERLAP=1; not the default until it is timed):
# the 100-step curve against the CPU and the checkpoints GPU <-> CPU with it
for t in test_distill_cuda_curve test_distill_cuda_resume; do
  [ -x build/gpu/$t ] && step ${t}_overlap 90 env IV2_OPTIM_OVERLAP=1 build/gpu/$t
done
[ -x build/gpu/test_cuda_goldens ] && step test_cuda_goldens_fwd_wg128 150 env IV2_ATTN_FWD=wg128 \
  build/gpu/test_cuda_goldens
[ -e build/gpu/test_cuda_ops ] || printf '%-34s %-20s\n' test_cuda_ops "FAIL (not built)" | tee -a "$SUMMARY"

# ---- compute-sanitizer ----
if command -v compute-sanitizer >/dev/null 2>&1 && [ -x build/gpu/test_cuda_vit ]; then
  step memcheck_tiny_forward 120 compute-sanitizer --tool memcheck --leak-check full --error-exitcode 3 \
    build/gpu/test_cuda_vit --tiny-forward
  # the teachers' forward and target post-processing of iv2-extract (its GPU half; this machine has
  # no FFmpeg for the decoding half)
  [ -x build/tests/test_extract_teachers ] && step memcheck_extract_teachers 150 compute-sanitizer --tool memcheck \
    --leak-check full --error-exitcode 3 build/tests/test_extract_teachers
  # every op test under memcheck (3 s on an H100, 2026-11-27)
  [ -x build/gpu/test_cuda_ops ] && step memcheck_ops 60 compute-sanitizer --tool memcheck --error-exitcode 3 \
    build/gpu/test_cuda_ops
else
  printf '%-34s %-20s\n' memcheck_tiny_forward "SKIP (no compute-sanitizer or test)" | tee -a "$SUMMARY"
fi

# ---- benchmarks ----
for b in bench_kernels bench_vit; do
  [ -x build/gpu/$b ] || printf '%-34s %-20s\n' $b "FAIL (not built)" | tee -a "$SUMMARY"
done
[ -x build/gpu/bench_kernels ] && step bench_kernels 120 build/gpu/bench_kernels "$OUT/bench_kernels.json"
[ -x build/gpu/bench_vit ] && step bench_vit 200 build/gpu/bench_vit "$OUT/bench_vit.json"
# the baseline beside it, then the variants, then extract: the most needed figures first
step bench_torch 150 env IV2_BENCH_COMPILE=0 python3 tests/gpu/bench_torch.py "$OUT/bench_torch.json"
# iv2-distill from a cache of the recipe's size: the GPU's wait on the loader (issue 8's data path)
[ -x build/gpu/bench_distill_cuda ] && step bench_distill_cuda 150 build/gpu/bench_distill_cuda "$OUT/bench_distill_cuda.json"
# the switches' variants of the whole student step side by side in one process (bench_vit --ab: each
# configuration a turn in every round, its time over the default's in the same round): the variants
# written without a GPU (AdamW beside the next forward, the norm backward's next row in flight,
# delta in the dQ kernel, dQ from a stored dS, the GEMMs timed per shape), the wgmma backward, two
# combinations, and the paths the defaults replaced (the scalar kernels unfused, the norm sums in
# registers, the cuBLAS attention backward) for their side-by-side figures
[ -x build/gpu/bench_vit ] && step bench_vit_ab 200 build/gpu/bench_vit --ab "$OUT/bench_vit_ab.json" \
  "IV2_OPTIM_OVERLAP=1" "IV2_NORM_PF=1" "IV2_ATTN_BWD=fd" "IV2_ATTN_BWD=ds" "IV2_ATTN_BWD=wg" "IV2_GEMM_TUNE=1" \
  "IV2_OPTIM_OVERLAP=1 IV2_NORM_PF=1 IV2_ATTN_BWD=fd IV2_GEMM_TUNE=1" \
  "IV2_OPTIM_OVERLAP=1 IV2_NORM_PF=1 IV2_ATTN_BWD=wg IV2_GEMM_TUNE=1" \
  "IV2_VEC_BWD=0 IV2_GELU_FUSION=0 IV2_FUSE_NORM=0" "IV2_NORM_SMEM=0" "IV2_ATTN_BWD=gemm"
# the forwards and the train step with the GEMMs' algorithms timed per shape (IV2_GEMM_TUNE=2 logs each pick
# against the heuristic's first), beside the default's
[ -x build/gpu/bench_vit ] && step bench_vit_gemm_tune 150 env IV2_GEMM_TUNE=2 IV2_BENCH_STEP=0 build/gpu/bench_vit \
  "$OUT/bench_vit_gemm_tune.json"
# the forward models with the fastest Hopper attention forward (wgmma) of bench_kernels' sweep
# (tests/gpu/best_fwd.py; none when a wg configuration was wrong), beside bench_vit's default
WG=$( [ -f "$OUT/bench_kernels.json" ] && python3 tests/gpu/best_fwd.py "$OUT/bench_kernels.json" 2>/dev/null )
if [ -n "$WG" ] && [ -x build/gpu/bench_vit ]; then
  step bench_vit_fwd_wg 150 env IV2_BENCH_STEP=0 IV2_ATTN_FWD="$WG" build/gpu/bench_vit "$OUT/bench_vit_fwd_wg.json"
  echo "IV2_ATTN_FWD=$WG" >> "$OUT/bench_vit_fwd_wg.log"
fi
# extract's GPU half at full size (teachers, downloads, encoding, LMDB writes under build/tmp), per stage
if [ -x build/gpu/bench_extract ]; then step bench_extract 180 build/gpu/bench_extract "$OUT/bench_extract.json"
else printf '%-34s %-20s\n' bench_extract "SKIP (not built)" | tee -a "$SUMMARY"; fi
# PyTorch under torch.compile (the whole step, then the fwd+bwd step), a step of its own: its
# compile time is the least predictable part of the check, so it comes after our figures
step bench_torch_compiled 180 python3 tests/gpu/bench_torch.py --compiled "$OUT/bench_torch_compiled.json"

# ---- shared-memory hazards of the real hardware (tests/emu checks the same on the CPU), after
# the figures: the default kernels and the pipelined Hopper forward ----
if command -v compute-sanitizer >/dev/null 2>&1 && [ -x build/gpu/test_cuda_vit ]; then
  step racecheck_tiny_forward 120 sh tests/gpu/racecheck.sh build/gpu/test_cuda_vit --tiny-forward
  step racecheck_tiny_forward_wg128p 120 env IV2_ATTN_FWD=wg128p sh tests/gpu/racecheck.sh \
    build/gpu/test_cuda_vit --tiny-forward
fi

# ---- where the student step's time goes: one step, kernel by kernel (Nsight Compute) ----
# one metric (one pass, no replay); clocks and caches left as the benchmarks run them; ncu runs the
# kernels one at a time, so each duration is the kernel alone. The table: profile_step.txt
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /usr/local/cuda/nsight-compute*/ncu \
  /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | tail -n 1)
if [ -n "$NCU" ] && [ -x build/gpu/bench_vit ]; then
  step profile_step 120 "$NCU" --metrics gpu__time_duration.sum --clock-control none --cache-control none \
    --csv --log-file "$OUT/profile_step_ncu.log" build/gpu/bench_vit --profile-step
  step profile_step_table 30 python3 tests/gpu/profile_step.py "$OUT/profile_step_ncu.log" \
    --bench-json "$OUT/bench_vit.json" --txt "$OUT/profile_step.txt"
  # the whole step of iv2-distill (heads, loss, clipping, AdamW) the same way: profile_whole_step.txt
  step profile_whole_step 150 "$NCU" --metrics gpu__time_duration.sum --clock-control none --cache-control none \
    --csv --log-file "$OUT/profile_whole_step_ncu.log" build/gpu/bench_vit --profile-whole-step
  step profile_whole_step_table 30 python3 tests/gpu/profile_step.py "$OUT/profile_whole_step_ncu.log" \
    --txt "$OUT/profile_whole_step.txt"
else
  printf '%-34s %-20s\n' profile_step "SKIP (no ncu or bench_vit)" | tee -a "$SUMMARY"
fi
# why our attention kernels run at the speed they do: throughput, occupancy, stall reasons and
# instruction mix of the forward and fused backward kernels at the VideoMAE and student shapes
if [ -n "$NCU" ] && [ -x build/gpu/bench_kernels ] && [ $(( $(date +%s) - T0 )) -lt 300 ]; then
  step ncu_attention 120 "$NCU" --section SpeedOfLight --section ComputeWorkloadAnalysis \
    --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats --section SchedulerStats \
    --section WarpStateStats --section InstructionStats -k "regex:flash_fwd|attn_bwd" \
    build/gpu/bench_kernels --ncu
fi

# and the student step's norm backward kernels at full size (the first launch, the pool head's, skipped;
# then the final norm's, a block's norm2 + ls1, its q norm's): how close to the memory bandwidth they
# run, their occupancy and stalls (ncu_vector_bwd.log)
if [ -n "$NCU" ] && [ -x build/gpu/bench_vit ] && [ $(( $(date +%s) - T0 )) -lt 330 ]; then
  step ncu_vector_bwd 90 "$NCU" --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
    --section LaunchStats --section WarpStateStats -k "regex:norm_backward8" --launch-skip 1 -c 4 \
    build/gpu/bench_vit --profile-step
fi

# and every op (the fused attention backward included) under racecheck, if time is still left
if command -v compute-sanitizer >/dev/null 2>&1 && [ -x build/gpu/test_cuda_ops ] && \
   [ $(( $(date +%s) - T0 )) -lt 360 ]; then
  step racecheck_ops 90 sh tests/gpu/racecheck.sh build/gpu/test_cuda_ops
fi

# ---- summary ----
{
  echo
  echo "== figures (device: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1))"
  for b in bench_vit bench_vit_ab bench_distill_cuda bench_extract bench_vit_gemm_tune bench_vit_fwd_wg bench_torch \
           bench_torch_compiled bench_kernels; do
    [ -f "$OUT/$b.log" ] && { echo "-- $b"; grep -v '^==' "$OUT/$b.log" | grep -v 'gemm tune: m'; }
  done
  # IV2_GEMM_TUNE=2's picks: how many shapes, how many not the heuristic's first (a line per shape and
  # backend: each bench row makes its own, so the same shape is counted once, by its m n k ... key)
  [ -f "$OUT/bench_vit_gemm_tune.log" ] && grep 'gemm tune: m' "$OUT/bench_vit_gemm_tune.log" | awk -F: '
    !seen[$2]++ { n++; split($3, w, " "); if (w[2] + 0 != 0) moved++ }
    END { if (n) printf "-- gemm tune: %d shapes timed, %d not the heuristic'"'"'s first pick\n", n, moved }'
  [ -f "$OUT/profile_step.txt" ] && { echo "-- profile_step: iv2-1b train step at depth 2, 32 views, per kernel" \
    "(ncu; the step's timeline in profile_step.txt)"; sed '/^-- timeline/,$d' "$OUT/profile_step.txt"; }
  [ -f "$OUT/profile_whole_step.txt" ] && { echo "-- profile_whole_step: the whole iv2-distill step (heads, loss," \
    "clipping, AdamW) at depth 2, 32 views, per kernel"; sed '/^-- timeline/,$d' "$OUT/profile_whole_step.txt"; }
  echo "-- parity (relative L2 error GPU vs CPU backend / PyTorch golden; limits in the test headers)"
  for t in test_cuda_vit test_cuda_goldens; do
    [ -f "$OUT/$t.log" ] && grep -E "rel L2|checks" "$OUT/$t.log" | grep -v "grad blocks\|dblocks" | sed "s/^/$t: /"
  done
  [ -f "$OUT/test_cuda_ops.log" ] && grep -E "off;|checks" "$OUT/test_cuda_ops.log" | sed "s/^/test_cuda_ops: /"
  for t in test_distill_cuda_curve test_distill_cuda_resume test_distill_cuda_curve_overlap test_distill_cuda_resume_overlap; do
    [ -f "$OUT/$t.log" ] && grep -E "rel diff|differ|steps:|checks" "$OUT/$t.log" | sed "s/^/$t: /"
  done
  python3 - "$OUT" <<'PY' 2>/dev/null
import json, os, sys
o = sys.argv[1]
def load(n):
    try: return json.load(open(os.path.join(o, n)))
    except Exception: return None
iv, tv, ik = load("bench_vit.json"), load("bench_torch.json"), load("bench_kernels.json")
tc = load("bench_torch_compiled.json")
if iv and tv:
    print("-- iv2 vs PyTorch at full depth (extrapolated from depths 2 and 6); iv2-1b-step: the whole training step")
    tm = {m["model"]: m for m in tv["models"] + (tc["models"] if tc else [])}
    for m in iv["models"]:
        t = tm.get(m["model"])
        if t and "per_s" in t: print(f"{m['model']:14s} iv2 {m['per_s']:8.1f} {m['unit']}/s MFU {100*m['mfu']:5.1f}%   "
                    f"torch {t['per_s']:8.1f}/s MFU {100*t['mfu']:5.1f}%   speed-up x{m['per_s']/t['per_s']:.2f}")
        else: print(f"{m['model']:14s} iv2 {m['per_s']:8.1f} {m['unit']}/s MFU {100*m['mfu']:5.1f}%   (batch {m['batch']}; "
                    f"no PyTorch row)")
    for row in ("iv2-1b-step", "iv2-1b-train"):
        i, c = next((m for m in iv["models"] if m["model"] == row), None), tm.get(row + "-compiled")
        if i and c and "per_s" in c:
            print(f"{row:14s} iv2 {i['per_s']:8.1f} views/s   torch.compile ({c['compile']}) {c['per_s']:8.1f}/s "
                  f"MFU {100*c['mfu']:5.1f}%   speed-up x{i['per_s']/c['per_s']:.2f}")
        elif c:
            print(f"{row:14s} torch.compile failed: {c.get('failed', '?')[:200]}")
if iv:
    # each variant run of bench_vit against the default run, row by row: the decisions of
    # docs/cuda.md ("The next GPU session") read from here (time ratio < 1: the variant is faster)
    base = {m["model"]: m for m in iv["models"] if "ms" in m}
    for v, what in [("bench_vit_gemm_tune", "GEMM algorithms timed per shape (IV2_GEMM_TUNE)"),
                    ("bench_vit_fwd_wg", "wgmma attention forward (IV2_ATTN_FWD=best_fwd.py's pick)")]:
        vj = load(v + ".json")
        if not vj: continue
        print(f"-- {v}: {what}; ms variant / ms default")
        for m in vj["models"]:
            b = base.get(m["model"])
            if b and "ms" in m: print(f"   {m['model']:22s} {m['ms']:9.2f} / {b['ms']:9.2f} = {m['ms']/b['ms']:.3f}")
if ik and tv:
    print("-- kernels, iv2 / torch TFLOP/s")
    for a, b in zip(ik["gemm"], tv["gemm"]):
        print(f"GEMM {a['what']:26s} {a['tflops']:7.1f} / {b['tflops']:7.1f}  x{a['tflops']/b['tflops']:.2f}")
    for a, b in zip(ik["attention"], tv["attention"]):
        print(f"attn {a['what']:26s} {a['fwd_tflops']:7.1f} / {b['fwd_tflops']:7.1f}  x{a['fwd_tflops']/b['fwd_tflops']:.2f}")
PY
  echo
  echo "== steps ($(( $(date +%s) - T0 ))s in all; logs in $OUT)"
  cat "$SUMMARY"
} > "$OUT/report.txt"
cat "$OUT/report.txt"
# at most 8 files come back from the device: keep report.txt and profile_step.txt, pack the rest
(cd "$OUT" && tar czf logs.tar.gz $(ls *.log *.json summary.txt 2>/dev/null) && rm -f *.log *.json summary.txt)
grep -q FAIL "$OUT/report.txt" && exit 1
exit 0
