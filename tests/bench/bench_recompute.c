/* bench_recompute.c: the cost of per-block activation recomputation (iv2_vit.recompute) on the
 * student's training forward + backward, CPU backend: batch B x 417 visible tokens (8 frames x
 * 52 patches + CLS, the recipe's mask), drop path on, read-outs at 4 blocks and the pool head.
 * Recompute none, none keeping each block's normed inputs and GELU output (iv2_vit.keep_normed),
 * and all are run alternately (so machine load hits them alike); medians, the ratios, and the
 * activation arena of each. Usage: bench_recompute [preset ...] (default
 * iv2-tiny iv2-s); env BENCH_B (batch, default 2), BENCH_REPS (default 5), BENCH_THREADS. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "compute.h"
#include "err.h"
#include "log.h"
#include "vit.h"

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int bench(iv2_backend *be, const char *preset, int B, int reps) {
    iv2_vit_config c;
    if (iv2_vit_preset(preset, &c)) return -1;
    enum { NV = 3 };   /* none, all, none keeping the normed inputs */
    iv2_vit *mm[NV] = {iv2_vit_create(be, &c), iv2_vit_create(be, &c), iv2_vit_create(be, &c)};   /* one arena each */
    for (int v = 0; v < NV; v++)
        if (!mm[v] || iv2_vit_init_random(mm[v], 1) || iv2_vit_alloc_grads(mm[v])) {
            for (int u = 0; u < NV; u++) iv2_vit_free(mm[u]);
            return -1;
        }
    mm[1]->recompute = c.depth;
    mm[2]->keep_normed = 1;
    int T = c.frames / c.tubelet, G = iv2_vit_grid(&c), P = G * G, keep = P - (int)(P * 0.8f), N = 1 + T * keep;
    size_t nfr = (size_t)B * c.frames * c.img * c.img * 3, nout = (size_t)B * N * c.width;
    uint8_t *fr = malloc(nfr);
    for (size_t i = 0; i < nfr; i++) fr[i] = (uint8_t)(i * 2654435761u >> 24);
    void *frames = be->alloc(be, nfr);
    be->upload_raw(be, frames, fr, nfr);
    int32_t *vis = malloc(sizeof(int32_t) * B * N);
    for (int s = 0; s < B; s++) {   /* CLS + every 4th patch of every frame, offset by the sample */
        vis[s * N] = 0;
        for (int t = 0; t < T; t++)
            for (int k = 0; k < keep; k++) vis[s * N + 1 + t * keep + k] = 1 + t * P + k * 4 + s % 4;
    }
    float *drop = malloc(sizeof(float) * c.depth * B);
    for (int i = 0; i < c.depth * B; i++) drop[i] = i % 7 == 3 ? 0.0f : 1.1f;
    iv2_vit_io io;
    memset(&io, 0, sizeof io);
    io.frames = frames; io.S = B; io.vis = vis; io.n_vis = N; io.drop = drop;
    io.n_out = 4;
    void *dout[4];
    for (int k = 0; k < 4; k++) {
        io.blocks[k] = c.depth - 4 + k;
        io.out[k] = be->alloc(be, nout * be->esize);
        dout[k] = be->alloc(be, nout * be->esize);
        float one = 1e-3f;
        for (size_t i = 0; i < nout; i += 97) be->upload(be, IV2_AT(be, dout[k], i), &one, 1);
    }
    double t[NV][64];
    size_t arena[NV] = {0, 0, 0};
    if (reps > 64) reps = 64;
    int rc = 0;
    for (int r = 0; r <= reps && !rc; r++)   /* r = 0 warms up */
        for (int v = 0; v < NV && !rc; v++) {
            iv2_vit *m = mm[v];
            double t0 = iv2_now();
            if (iv2_vit_forward_train(m, &io) || iv2_vit_backward(m, &io, dout, NULL)) rc = -1;
            be->sync(be);
            if (r) t[v][r - 1] = iv2_now() - t0;
            arena[v] = iv2_vit_arena_bytes(m);
        }
    if (!rc) {
        double m0 = median(t[0], reps), m1 = median(t[1], reps), m2 = median(t[2], reps);
        printf("%-8s batch %d x %d tokens: fwd+bwd %.3f s recomputing none, %.3f s recomputing all %d blocks: "
               "%.2fx the time; arena %.1f -> %.1f MiB\n", preset, B, N, m0, m1, c.depth, m1 / m0,
               arena[0] / 1048576.0, arena[1] / 1048576.0);
        printf("%-8s batch %d x %d tokens: fwd+bwd %.3f s keeping each block's normed inputs and GELU output: "
               "%.2fx the time of none; arena %.1f MiB\n", preset, B, N, m2, m2 / m0, arena[2] / 1048576.0);
    }
    for (int k = 0; k < 4; k++) { be->free(be, io.out[k]); be->free(be, dout[k]); }
    be->free(be, frames);
    free(fr); free(vis); free(drop);
    for (int v = 0; v < NV; v++) iv2_vit_free(mm[v]);
    return rc;
}

int main(int argc, char **argv) {
    int B = getenv("BENCH_B") ? atoi(getenv("BENCH_B")) : 2, reps = getenv("BENCH_REPS") ? atoi(getenv("BENCH_REPS")) : 5;
    int threads = getenv("BENCH_THREADS") ? atoi(getenv("BENCH_THREADS")) : 0;
    iv2_backend *be = iv2_backend_create("cpu", threads);
    if (!be) iv2_die("bench_recompute");
    printf("cpu backend, %d threads, medians of %d alternating runs\n", be->threads, reps);
    const char *def[] = {"iv2-tiny", "iv2-s"};
    int n = argc > 1 ? argc - 1 : 2;
    for (int i = 0; i < n; i++)
        if (bench(be, argc > 1 ? argv[i + 1] : def[i], B < 1 ? 1 : B, reps < 1 ? 1 : reps)) iv2_die("bench_recompute");
    iv2_backend_destroy(be);
    return 0;
}
