/* bench_kernels: the CUDA backend's GEMM (cuBLASLt) and attention kernels alone, at the shapes
 * of InternViT-6B (8 frames x 257 tokens), VideoMAEv2-g (one 2048-token clip) and the 1B
 * student (417 visible tokens), in TFLOP/s (median of repeated timed calls).
 *   bench_kernels [out.json]
 * Exit 77 without a CUDA device. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "compute.h"
#include "err.h"
#include "log.h"

static int cmpd(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
/* median seconds per call of fn over reps timed groups of `inner` calls, after a warm-up */
typedef void (*bench_fn)(iv2_backend *be, void **buf, const int *a);
static double time_it(iv2_backend *be, bench_fn fn, void **buf, const int *a, int reps, int inner) {
    double t[64];
    fn(be, buf, a);
    be->sync(be);
    for (int r = 0; r < reps; r++) {
        double t0 = iv2_now();
        for (int i = 0; i < inner; i++) fn(be, buf, a);
        be->sync(be);
        t[r] = (iv2_now() - t0) / inner;
    }
    qsort(t, reps, sizeof(double), cmpd);
    return t[reps / 2];
}

static void gemm_fn(iv2_backend *be, void **b, const int *a) { be->matmul(be, b[2], b[0], b[1], b[3], a[0], a[1], a[2]); }
static void attn_fn(iv2_backend *be, void **b, const int *a) {
    int B = a[0], H = a[1], N = a[2], D = a[3], C = H * D;
    be->attention(be, b[1], (float *)b[2], NULL, b[0], IV2_AT(be, b[0], C), IV2_AT(be, b[0], 2 * C), B, H, N, N, D,
                  3 * C, 3 * C, C, 0.1f);
}
static void attn_bwd_fn(iv2_backend *be, void **b, const int *a) {
    int B = a[0], H = a[1], N = a[2], D = a[3], C = H * D;
    be->attention_backward(be, b[3], IV2_AT(be, b[3], C), IV2_AT(be, b[3], 2 * C), b[4], b[0], IV2_AT(be, b[0], C),
                           IV2_AT(be, b[0], 2 * C), b[1], (const float *)b[2], B, H, N, N, D, 3 * C, 3 * C, C, 0.1f);
}

static void fill(iv2_backend *be, void *p, size_t n, unsigned seed) {
    float *h = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) { seed = seed * 1664525u + 1013904223u; h[i] = ((seed >> 8) / 16777216.f - .5f); }
    be->upload(be, p, h, n);
    free(h);
}

int main(int argc, char **argv) {
    iv2_backend *be = iv2_cuda_backend_create(0);
    if (!be) { printf("skipped: %s\n", iv2_errmsg()); return 77; }
    FILE *js = argc > 1 ? fopen(argv[1], "w") : NULL;
    if (js) fprintf(js, "{\"gemm\": [");
    struct { const char *what; int M, K, N; } g[] = {
        {"internvit-6b qkv", 2056, 3200, 9600}, {"internvit-6b proj", 2056, 3200, 3200},
        {"internvit-6b fc1", 2056, 3200, 12800}, {"internvit-6b fc2", 2056, 12800, 3200},
        {"videomae-g qkv", 2048, 1408, 4224}, {"videomae-g fc1", 2048, 1408, 6144},
        {"videomae-g fc2", 2048, 6144, 1408}, {"student fc1 (B=32x417)", 13344, 1408, 6144},
        {"square 8192", 8192, 8192, 8192},
    };
    printf("%-28s %8s %8s %8s %10s %9s\n", "GEMM (bias epilogue)", "M", "K", "N", "ms", "TFLOP/s");
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) {
        void *b[4];
        b[0] = be->alloc(be, (size_t)g[i].M * g[i].K * 2);
        b[1] = be->alloc(be, (size_t)g[i].N * g[i].K * 2);
        b[2] = be->alloc(be, (size_t)g[i].M * g[i].N * 2);
        b[3] = be->alloc(be, (size_t)g[i].N * 2);
        fill(be, b[0], (size_t)g[i].M * g[i].K, 1);
        fill(be, b[1], (size_t)g[i].N * g[i].K, 2);
        int a[3] = {g[i].M, g[i].K, g[i].N};
        double t = time_it(be, gemm_fn, b, a, 9, 5);
        double tf = 2.0 * g[i].M * g[i].K * g[i].N / t / 1e12;
        printf("%-28s %8d %8d %8d %10.3f %9.1f\n", g[i].what, g[i].M, g[i].K, g[i].N, t * 1e3, tf);
        if (js) fprintf(js, "%s{\"what\": \"%s\", \"M\": %d, \"K\": %d, \"N\": %d, \"ms\": %.4f, \"tflops\": %.2f}",
                        i ? ", " : "", g[i].what, g[i].M, g[i].K, g[i].N, t * 1e3, tf);
        for (int k = 0; k < 4; k++) be->free(be, b[k]);
    }
    if (js) fprintf(js, "], \"attention\": [");
    struct { const char *what; int B, H, N, D; } at[] = {
        {"internvit-6b (8 frames)", 8, 25, 257, 128}, {"internvit-6b (32 frames)", 32, 25, 257, 128},
        {"videomae-g (1 clip)", 1, 16, 2048, 88}, {"videomae-g (4 clips)", 4, 16, 2048, 88},
        {"student (32 x 417)", 32, 16, 417, 88}, {"hd64 reference", 4, 16, 2048, 64},
    };
    printf("\n%-28s %4s %4s %6s %4s %10s %9s %12s %9s\n", "attention (non-causal)", "B", "H", "N", "D", "fwd ms",
           "TFLOP/s", "bwd ms", "TFLOP/s");
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        int B = at[i].B, H = at[i].H, N = at[i].N, D = at[i].D, C = H * D;
        void *b[5];
        b[0] = be->alloc(be, (size_t)B * N * 3 * C * 2);
        b[1] = be->alloc(be, (size_t)B * N * C * 2);
        b[2] = be->alloc(be, (size_t)B * H * N * 4);
        b[3] = be->alloc(be, (size_t)B * N * 3 * C * 2);
        b[4] = be->alloc(be, (size_t)B * N * C * 2);
        fill(be, b[0], (size_t)B * N * 3 * C, 3);
        fill(be, b[4], (size_t)B * N * C, 4);
        int a[4] = {B, H, N, D};
        double t = time_it(be, attn_fn, b, a, 9, 5);
        double fl = 4.0 * B * H * (double)N * N * D, tf = fl / t / 1e12;
        /* the backward is the simple kernel for now: time it once per shape, fewer reps */
        double tb = time_it(be, attn_bwd_fn, b, a, 3, 1), tfb = 2.5 * fl / tb / 1e12;
        printf("%-28s %4d %4d %6d %4d %10.3f %9.1f %12.3f %9.1f\n", at[i].what, B, H, N, D, t * 1e3, tf, tb * 1e3, tfb);
        if (js) fprintf(js, "%s{\"what\": \"%s\", \"B\": %d, \"H\": %d, \"N\": %d, \"D\": %d, \"fwd_ms\": %.4f, "
                        "\"fwd_tflops\": %.2f, \"bwd_ms\": %.4f, \"bwd_tflops\": %.2f}", i ? ", " : "", at[i].what, B, H, N,
                        D, t * 1e3, tf, tb * 1e3, tfb);
        for (int k = 0; k < 5; k++) be->free(be, b[k]);
    }
    if (js) { fprintf(js, "]}\n"); fclose(js); }
    iv2_backend_destroy(be);
    return 0;
}
