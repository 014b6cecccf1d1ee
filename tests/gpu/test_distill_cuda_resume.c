/* test_distill_cuda_resume: checkpoints move between the GPU and the CPU (tests/gpu/distill_cuda.h
 * set-up, iv2-tiny, 20 steps, a checkpoint every 10).
 *
 *   A: 20 steps on CUDA, uninterrupted          B: 20 steps on the CPU, uninterrupted
 *   C: A's step-10 checkpoint resumed on the CPU for 10 steps
 *   D: B's step-10 checkpoint resumed on CUDA for 10 steps
 *   E: A's step-10 checkpoint resumed on CUDA for 10 steps
 *
 * Checks:
 * - A's final checkpoint is its state: the stored F32 weights are the fp32 master copy (bit for
 *   bit), the GPU's bf16 weights are exactly their round-to-nearest-even, the moments are equal.
 * - Every resumed run starts at the saved step (trainer step 10, first metrics line step 10,
 *   10 step lines) with the saved state loaded bit for bit: on the CPU the weights and moments
 *   equal the file's F32 values; on CUDA the master copy and the moments equal them and the bf16
 *   weights are their rounding ("equal" below means exactly this).
 * - The losses after the switch continue the other device's uninterrupted curve: C's steps
 *   10..19 against A's, D's against B's, within 3% relative per step (bf16 against f32 over a few
 *   steps; see test_distill_cuda_curve); E (GPU to GPU) against A within 1% (the same kernels:
 *   only the order of bf16 atomic adds in the position-embedding gradients may differ).
 * Skips (77) without a CUDA device; IV2_TEST_DEVICE=cpu is a dry run CPU against CPU. */
#include "distill_cuda.h"

#define N 10   /* steps before the checkpoint */
#define M 10   /* steps after it */

static const char *ckpt10(const char *dir, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/ckpt_%08d.safetensors", dir, N);
    return buf;
}

/* resume dir (holding one step-N checkpoint) on device: starts at N with the file's state,
 * then M steps whose losses follow ref's steps N..N+M-1 within rtol */
static void resume_check(const char *name, const char *cache, const iv2_distill_config *c, const char *device,
                         const char *dir, const dc_curve *ref, const char *ref_name, double rtol) {
    char path[600];
    iv2_distill_config cd = *c;
    snprintf(cd.device, sizeof cd.device, "%s", device);
    iv2_trainer t;
    if (iv2_trainer_open(&t, cache, &cd, dir, 1)) { CHECK(0, "%s: resume on %s: %s", name, device, iv2_errmsg()); return; }
    long diff = dc_state_diff(&t, ckpt10(dir, path, sizeof path));
    printf("%s: resumed on %s at step %lld, %ld state elements differ from the checkpoint\n", name, device,
           (long long)t.step, diff);
    CHECK(t.step == N, "%s: resumed at step %lld, saved at %d", name, (long long)t.step, N);
    CHECK(diff == 0, "%s: the loaded state equals the checkpoint (%ld elements differ)", name, diff);
    CHECK(iv2_trainer_run(&t, M) == 0, "%s: %d steps on %s: %s", name, M, device, iv2_errmsg());
    iv2_trainer_close(&t);
    static dc_curve cv;
    CHECK(dc_read_curve(dir, &cv) == 0 && cv.n == M && cv.first == N, "%s: %d step lines from step %d (%d from %lld)", name,
          M, N, cv.n, cv.first);
    if (cv.n != M || ref->n != N + M) return;
    int at;
    double w = dc_worst_rel(cv.total, ref->total + N, M, &at);
    printf("%s: steps %d..%d vs %s, worst rel diff %.3e at step %d (%.6f vs %.6f)\n", name, N, N + M - 1, ref_name, w,
           N + at, cv.total[at], ref->total[N + at]);
    CHECK(w <= rtol, "%s: step %d loss %.6f vs %s's %.6f, rel %.3e > %.0e", name, N + at, cv.total[at], ref_name,
          ref->total[N + at], w, rtol);
}

int main(void) {
    iv2_set_quiet(1);
    const char *dev = dc_device();
    if (!dev) return test_done();
    synth_spec sp;
    iv2_distill_config c;
    char cache[256], path[600];
    CHECK(dc_setup("resume", &sp, &c, N + M, cache, sizeof cache) == 0, "synthetic cache: %s", iv2_errmsg());
    c.ckpt_every = N;
    c.keep_ckpt = 2;
    const char *A = DC_ROOT ".resume.A", *B = DC_ROOT ".resume.B", *C = DC_ROOT ".resume.C", *D = DC_ROOT ".resume.D",
               *E = DC_ROOT ".resume.E";
    dc_rmdir(A);
    dc_rmdir(B);

    /* A: uninterrupted on the GPU; its final checkpoint is its state */
    iv2_trainer t;
    CHECK(dc_train(cache, &c, dev, A, 0, 0, &t) == 0, "A: %d steps on %s: %s", N + M, dev, iv2_errmsg());
    if (t.be) {
        snprintf(path, sizeof path, "%s/ckpt_%08d.safetensors", A, N + M);
        long diff = dc_state_diff(&t, path);
        printf("A: %ld state elements differ from its final checkpoint\n", diff);
        CHECK(diff == 0, "A: the checkpoint holds the master weights and moments, the %s weights are their rounding "
              "(%ld elements differ)", dev, diff);
        iv2_trainer_close(&t);
    }
    CHECK(dc_train(cache, &c, "cpu", B, 0, 0, NULL) == 0, "B: %d steps on the cpu: %s", N + M, iv2_errmsg());
    static dc_curve ca, cb;
    CHECK(dc_read_curve(A, &ca) == 0 && ca.n == N + M && dc_read_curve(B, &cb) == 0 && cb.n == N + M,
          "A and B log %d steps (%d, %d)", N + M, ca.n, cb.n);

    dc_copy(ckpt10(A, path, sizeof path), C);
    resume_check("C (gpu -> cpu)", cache, &c, "cpu", C, &ca, "A", 3e-2);
    dc_copy(ckpt10(B, path, sizeof path), D);
    resume_check("D (cpu -> gpu)", cache, &c, dev, D, &cb, "B", 3e-2);
    dc_copy(ckpt10(A, path, sizeof path), E);
    resume_check("E (gpu -> gpu)", cache, &c, dev, E, &ca, "A", 1e-2);
    return test_done();
}
