/* test_distill_mpi: data-parallel iv2-distill over MPI on the CPU (distill/dist.c), see
 * tests/test_distill_mpi.h: `mpirun -np 2` with global batch 4 equals one process with batch 4
 * (fp32: only the summation order differs), resume under MPI is bit-exact, mismatched ranks fail
 * cleanly. The 1-process oracle is the ordinary trainer (checked against PyTorch and finite
 * differences by the other distill tests). Skips (77) without mpirun or MPI in this build. ~3 s. */
#define TMP_BASE "build/tests"
#include "test_distill_mpi.h"

int main(void) {
#ifndef IV2_MPI
    printf("skipped: built without MPI (install libopenmpi-dev and rebuild)\n");
    return 77;
#endif
    if (parity_unrunnable("")) return 77;
    const parity_tol tol = {.loss_rtol = 2e-5, .w_rtol = 1e-3f, .w_atol = 2e-5f, .resume_rtol = 0};
    mpi_parity("", &tol);
    return test_done();
}
