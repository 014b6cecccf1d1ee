/* test_distill_nccl_mock: distill/dist.c's NCCL path (ncclGetUniqueId over MPI, ncclCommInitRank,
 * the per-bucket ncclAllReduce(ncclAvg) on a side stream ordered by events against the backend's
 * stream, the main stream's wait before the optimiser), compiled with IV2_CUDA, IV2_NCCL and
 * IV2_MPI against tests/mock_nccl/ (NCCL and CUDA streams/events over MPI on host memory, the CPU
 * backend standing in for the GPU): build/tests/mock_nccl/iv2-distill. The parity of
 * tests/test_distill_mpi.h (2 ranks x 2 == 1 process x 4: losses, grad norms, weights and
 * moments; resume; clean errors) in both of the mock's modes:
 *   eager     each all-reduce runs at its launch (a bucket launched before its gradients are final
 *             loses their late part);
 *   deferred  the queued all-reduces run only when the main stream waits on the side stream (the
 *             optimiser reading gradients before that wait sees them unaveraged).
 * Plus the mock's counts: every gradient element reduced exactly once per step, each all-reduce
 * after a wait on a main-stream event, nothing left queued, >= 2 student buckets per step.
 * Not proven here: the real NCCL library, real streams, bf16 buffers (two GPUs needed: tests/gpu/
 * test_distill_nccl.c). Skips (77) without MPI, mpirun, or the mock build (CUDA=1 builds). ~8 s. */
#define TMP_BASE "build/tests"
#define DISTILL_BIN "build/tests/mock_nccl/iv2-distill"
#include "test_distill_mpi.h"

static const char *want_mode;

/* the mock's line for each rank: "nccl-mock: rank=R mode=M calls=... " */
static void check_mock_counts(const char *log) {
    FILE *f = fopen(log, "r");
    char line[1024];
    int seen[2] = {0, 0};
    while (f && fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "nccl-mock: rank=");
        if (!p) continue;
        int rank;
        char mode[16];
        long long calls, elems, steps, bad_steps, unordered, pending, bad_args, id_bad, modified;
        size_t per_step;
        if (sscanf(p, "nccl-mock: rank=%d mode=%15s calls=%lld elements=%lld steps=%lld per_step=%zu bad_steps=%lld "
                   "unordered=%lld pending=%lld bad_args=%lld id_bad=%lld modified=%lld", &rank, mode, &calls, &elems, &steps,
                   &per_step, &bad_steps, &unordered, &pending, &bad_args, &id_bad, &modified) != 12 || rank < 0 || rank > 1) {
            CHECK(0, "unreadable mock line: %s", p);
            continue;
        }
        seen[rank]++;
        CHECK(!strcmp(mode, want_mode), "rank %d: the mock ran %s, not %s", rank, mode, want_mode);
        CHECK(steps == STEPS && per_step > 0 && elems == STEPS * (long long)per_step,
              "rank %d: %lld elements reduced in %lld steps, want %d x %zu", rank, elems, steps, STEPS, per_step);
        CHECK(bad_steps == 0, "rank %d: %lld steps where a gradient element was not reduced exactly once", rank, bad_steps);
        CHECK(calls >= 3 * STEPS, "rank %d: %lld all-reduce calls in %d steps (heads + >= 2 student buckets each)", rank, calls, STEPS);
        CHECK(modified == 0, "rank %d: %lld reduced buckets written after their all-reduce ran (launched too early)", rank, modified);
        CHECK(unordered == 0, "rank %d: %lld all-reduces not ordered after a main-stream event", rank, unordered);
        CHECK(pending == 0, "rank %d: %lld all-reduces still queued at the end (the main stream never waited)", rank, pending);
        CHECK(bad_args == 0 && id_bad == 0, "rank %d: %lld bad all-reduce arguments, unique id differs: %lld", rank, bad_args, id_bad);
    }
    if (f) fclose(f);
    CHECK(seen[0] == 1 && seen[1] == 1, "one mock line per rank (%d, %d) in %s: the NCCL path ran", seen[0], seen[1], log);
}

int main(void) {
#ifndef IV2_MPI
    printf("skipped: built without MPI (install libopenmpi-dev and rebuild)\n");
    return 77;
#endif
    if (parity_unrunnable(" (MPI=1, CUDA=0 builds it)")) return 77;
    const parity_tol tol = {.loss_rtol = 2e-5, .w_rtol = 1e-3f, .w_atol = 2e-5f, .resume_rtol = 0};   /* test_distill_mpi's */
    parity_two_log_check = check_mock_counts;
    char root[4096];
    if (!getcwd(root, sizeof root)) return 1;
    static const char *modes[2] = {"eager", "deferred"};
    for (int m = 0; m < 2; m++) {
        int f0 = t_fails;
        want_mode = modes[m];
        setenv("IV2_NCCL_MOCK", want_mode, 1);   /* mpirun's local ranks inherit it; the mock line says which ran */
        mpi_parity("", &tol);
        if (chdir(root)) return 1;
        if (t_fails > f0) printf("FAILED in mode %s\n", want_mode);
    }
    return test_done();
}
