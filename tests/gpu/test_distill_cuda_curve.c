/* test_distill_cuda_curve: 100 training steps of iv2-tiny on a tiny synthetic cache
 * (tests/gpu/distill_cuda.h), once on the CPU (f32) and once on CUDA (bf16 weights and
 * activations, fp32 master weights, moments and reductions), same seed, so the same batches,
 * masks and drop-path draws: the GPU's loss curve must follow the CPU's.
 *
 * Tolerances (bf16 against f32, so not bit for bit): step 0, from the same weights, within 1%
 * relative; every step's total loss within 3%; the mean of the last 10 steps within 2% for the
 * total and 3% for each term (clip, final, mae). An emulation on the CPU (weights rounded to
 * bf16 for the forward and backward, 1-5% relative noise on every gradient) moved the curve by
 * at most 0.2% per step, so these leave room for bf16 activations while a wrong gradient,
 * which bends the curve, does not fit. Both curves must also fall (last 10 steps below 0.6x the
 * first 3), or agreeing would mean little. The worst differences are printed for the record.
 * Skips (77) without a CUDA device; IV2_TEST_DEVICE=cpu is a dry run CPU against CPU. */
#include "distill_cuda.h"

#define STEPS 100

static void compare(const char *what, const double *gpu, const double *cpu, int n, double rtol) {
    int at;
    double w = dc_worst_rel(gpu, cpu, n, &at);
    printf("%-6s worst step rel diff %.3e at step %d (gpu %.6f cpu %.6f)\n", what, w, at, gpu[at], cpu[at]);
    CHECK(w <= rtol, "%s: step %d: gpu %.6f vs cpu %.6f, rel %.3e > %.0e", what, at, gpu[at], cpu[at], w, rtol);
}

static void compare_last(const char *what, const double *gpu, const double *cpu, int n, double rtol) {
    double g = dc_mean(gpu + n - 10, 10), c = dc_mean(cpu + n - 10, 10), r = fabs(g - c) / c;
    printf("%-6s last-10 mean gpu %.6f cpu %.6f rel diff %.3e\n", what, g, c, r);
    CHECK(r <= rtol, "%s: mean of the last 10 steps gpu %.6f vs cpu %.6f, rel %.3e > %.0e", what, g, c, r, rtol);
}

int main(void) {
    iv2_set_quiet(1);
    const char *dev = dc_device();
    if (!dev) return test_done();
    synth_spec sp;
    iv2_distill_config c;
    char cache[256];
    CHECK(dc_setup("curve", &sp, &c, STEPS, cache, sizeof cache) == 0, "synthetic cache: %s", iv2_errmsg());
    const char *out_cpu = DC_ROOT ".curve.cpu", *out_dev = DC_ROOT ".curve.dev";
    dc_rmdir(out_cpu);
    dc_rmdir(out_dev);
    double t0 = iv2_now();
    CHECK(dc_train(cache, &c, "cpu", out_cpu, 0, 0, NULL) == 0, "cpu run: %s", iv2_errmsg());
    double t1 = iv2_now();
    CHECK(dc_train(cache, &c, dev, out_dev, 0, 0, NULL) == 0, "%s run: %s", dev, iv2_errmsg());
    double t2 = iv2_now();
    printf("%d steps: cpu %.2f s, %s %.2f s\n", STEPS, t1 - t0, dev, t2 - t1);
    static dc_curve a, b;
    CHECK(dc_read_curve(out_cpu, &a) == 0 && dc_read_curve(out_dev, &b) == 0 && a.n == STEPS && b.n == STEPS &&
          a.first == 0 && b.first == 0, "both runs log %d steps (cpu %d, %s %d)", STEPS, a.n, dev, b.n);
    if (a.n != STEPS || b.n != STEPS) return test_done();
    double r0 = fabs(b.total[0] - a.total[0]) / a.total[0];
    printf("step 0 loss gpu %.6f cpu %.6f rel diff %.3e\n", b.total[0], a.total[0], r0);
    CHECK(r0 <= 1e-2, "step 0 (same weights): gpu %.6f vs cpu %.6f, rel %.3e", b.total[0], a.total[0], r0);
    compare("total", b.total, a.total, STEPS, 3e-2);
    compare_last("total", b.total, a.total, STEPS, 2e-2);
    compare_last("clip", b.clip, a.clip, STEPS, 3e-2);
    compare_last("final", b.final, a.final, STEPS, 3e-2);
    compare_last("mae", b.mae, a.mae, STEPS, 3e-2);
    const dc_curve *cv[2] = {&a, &b};
    for (int i = 0; i < 2; i++) {
        double first = dc_mean(cv[i]->total, 3), last = dc_mean(cv[i]->total + STEPS - 10, 10);
        CHECK(last < 0.6 * first, "%s: the loss falls (first 3 steps %.4f, last 10 %.4f)", i ? dev : "cpu", first, last);
    }
    return test_done();
}
