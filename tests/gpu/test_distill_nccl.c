/* test_distill_nccl: data-parallel iv2-distill on CUDA over NCCL (distill/dist.c), the GPU twin
 * of tests/test_distill_mpi.c (same checks, tests/test_distill_mpi.h): `mpirun -np 2 ... --device
 * cuda` (one GPU per rank) with global batch 4 equals one GPU with batch 4 within bf16 tolerance
 * (the gradients are summed in bf16 by NCCL, in another order), resume under MPI, clean errors
 * for mismatched ranks. Needs two GPUs, mpirun and a build with MPI and NCCL; skips (77)
 * otherwise. The tolerances are first estimates from bf16 rounding (2^-8 relative per value),
 * not yet tuned on a two-GPU run. */
#define TMP_BASE "build/gpu"
#include "test_distill_mpi.h"

static int gpu_count(void) {
    FILE *p = popen("nvidia-smi -L 2>/dev/null | grep -c '^GPU'", "r");
    char buf[32];
    int n = p && fgets(buf, sizeof buf, p) ? atoi(buf) : 0;
    if (p) pclose(p);
    return n;
}

int main(void) {
#if !defined(IV2_MPI) || !defined(IV2_NCCL) || !defined(IV2_CUDA)
    printf("skipped: needs a CUDA=1 build with MPI and NCCL\n");
    return 77;
#endif
    if (parity_unrunnable("")) return 77;
    int n = gpu_count();
    if (n < 2) { printf("skipped: %d GPU(s), NCCL parity needs 2\n", n); return 77; }
    const parity_tol tol = {.loss_rtol = 2e-2, .w_rtol = 5e-2f, .w_atol = 2e-3f, .resume_rtol = 2e-2};
    mpi_parity(" --device cuda", &tol);
    return test_done();
}
