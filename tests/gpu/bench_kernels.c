/* bench_kernels: the CUDA backend's GEMM (cuBLASLt) and attention kernels alone, at the shapes
 * of InternViT-6B (8 frames x 257 tokens), VideoMAEv2-g (one 2048-token clip) and the 1B
 * student (417 visible tokens), in TFLOP/s (median of repeated timed calls). The attention
 * forward is also swept over its launch configurations (IV2_ATTN_FWD, docs/cuda.md), each
 * output compared bit for bit with the default's. Then the norm backwards at the student's and the
 * heads' shapes in GB/s, the default beside IV2_NORM_PF=1 (a second backend), whose rows must
 * equal the default's bit for bit.
 *   bench_kernels [out.json]
 *   bench_kernels --ncu        one attention forward + backward per shape, for Nsight Compute
 * Exit 77 without a CUDA device, 1 when a configuration's output is wrong (not just rounded
 * differently) against the default's. */
#include <math.h>
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
                           IV2_AT(be, b[0], 2 * C), b[1], (const float *)b[2], B, H, N, N, D, 3 * C, 3 * C, C, 0.1f, IV2_ADD);
}

/* IV2_ATTN_FWD values (fwd2_named of kernels/flash_attention.cuh); 8x2 is built for head dims
 * up to 96 only (fwd2_built there); wg* (the Hopper kernels) need an sm_90a build on compute
 * capability 9.0 */
static const char *fwd_cfgs[] = {"4x2", "4x1", "8x1", "8x2", "auto", "wg64", "wg128", "wg64p", "wg128p"};
#define NCFG 9
/* per configuration: ms per call (< 0: not built), output elements and lse rows that differ
 * from the default's, and the largest absolute difference */
struct sweep { double ms[NCFG], maxd[NCFG]; long differ[NCFG]; };
#define SWEEP_MAXD 0.02   /* beyond bf16 rounding of outputs in [-0.5, 0.5]: a wrong row */

/* count of x[i] != y[i] (bitwise), and the largest |x - y| into *maxd (inf where one is NaN) */
static long compare(const float *x, const float *y, size_t n, double *maxd) {
    long nd = 0;
    for (size_t i = 0; i < n; i++) {
        if (memcmp(&x[i], &y[i], sizeof(float)) == 0) continue;
        double d = fabs((double)x[i] - y[i]);
        nd++;
        if (!(d <= *maxd)) *maxd = isnan(d) ? INFINITY : d;
    }
    return nd;
}

/* the forward in every configuration, timed, and its output and lse compared with the
 * default's (ref_out, ref_lse). A query row's arithmetic does not depend on the configuration,
 * so they are expected bit for bit equal; a difference beyond SWEEP_MAXD is a bug. */
static void sweep_forward(iv2_backend *be, void **b, const int *a, const float *ref_out, const float *ref_lse,
                          struct sweep *sw) {
    size_t no = (size_t)a[0] * a[2] * a[1] * a[3], nl = (size_t)a[0] * a[1] * a[2];
    float *o = malloc(no * sizeof(float)), *l = malloc(nl * sizeof(float));
    if (!o || !l) iv2_panic("bench_kernels: out of host memory");
    for (int c = 0; c < NCFG; c++) {
        sw->ms[c] = -1;
        sw->maxd[c] = 0;
        sw->differ[c] = 0;
        if (strcmp(fwd_cfgs[c], "8x2") == 0 && a[3] > 96) continue;
        if (strncmp(fwd_cfgs[c], "wg", 2) == 0 && !iv2_cuda_has_wgmma(be)) continue;
        setenv("IV2_ATTN_FWD", fwd_cfgs[c], 1);
        sw->ms[c] = time_it(be, attn_fn, b, a, 11, 10) * 1e3;
        unsetenv("IV2_ATTN_FWD");
        be->download(be, o, b[1], no);   /* bf16 -> fp32 exactly */
        be->download_raw(be, l, b[2], nl * sizeof(float));
        sw->differ[c] = compare(o, ref_out, no, &sw->maxd[c]) + compare(l, ref_lse, nl, &sw->maxd[c]);
    }
    free(o);
    free(l);
}

static void fill(iv2_backend *be, void *p, size_t n, unsigned seed) {
    float *h = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) { seed = seed * 1664525u + 1013904223u; h[i] = ((seed >> 8) / 16777216.f - .5f); }
    be->upload(be, p, h, n);
    free(h);
}

/* the attention benches' buffers: qkv [B,N,3C] (random), out [B,N,C], lse [B,H,N] (f32),
 * dqkv [B,N,3C], dout [B,N,C] (random) */
static void attn_buffers(iv2_backend *be, void **b, int B, int H, int N, int D) {
    size_t C = (size_t)H * D;
    b[0] = be->alloc(be, (size_t)B * N * 3 * C * 2);
    b[1] = be->alloc(be, (size_t)B * N * C * 2);
    b[2] = be->alloc(be, (size_t)B * H * N * 4);
    b[3] = be->alloc(be, (size_t)B * N * 3 * C * 2);
    b[4] = be->alloc(be, (size_t)B * N * C * 2);
    fill(be, b[0], (size_t)B * N * 3 * C, 3);
    fill(be, b[4], (size_t)B * N * C, 4);
}

/* --ncu: one attention forward and one backward (and the wgmma ones on Hopper) at the
 * VideoMAE clip and student shapes, for Nsight Compute's detailed sections (check.sh:
 * ncu_attention); nothing timed */
static int ncu_attention(iv2_backend *be) {
    int shapes[2][4] = {{4, 16, 2048, 88}, {32, 16, 417, 88}};
    for (int i = 0; i < 2; i++) {
        int B = shapes[i][0], H = shapes[i][1], N = shapes[i][2], D = shapes[i][3];
        void *b[5];
        attn_buffers(be, b, B, H, N, D);
        attn_fn(be, b, shapes[i]);
        attn_bwd_fn(be, b, shapes[i]);
        if (iv2_cuda_has_wgmma(be)) {   /* and the Hopper kernels: forward (pipelined) and backward */
            setenv("IV2_ATTN_FWD", "wg128p", 1);
            attn_fn(be, b, shapes[i]);
            unsetenv("IV2_ATTN_FWD");
            setenv("IV2_ATTN_BWD", "wg", 1);
            attn_bwd_fn(be, b, shapes[i]);
            unsetenv("IV2_ATTN_BWD");
        }
        setenv("IV2_ATTN_BWD", "ds", 1);   /* and dQ from the stored dS */
        attn_bwd_fn(be, b, shapes[i]);
        unsetenv("IV2_ATTN_BWD");
        be->sync(be);
        for (int k = 0; k < 5; k++) be->free(be, b[k]);
    }
    printf("attention kernels run once at 4x16x2048 and 32x16x417, D 88\n");
    iv2_backend_destroy(be);
    return 0;
}

/* ---- the norm backwards: b[0] x, b[1] dout, b[2] dinp, b[3] w, b[4] dw, b[5] rstd (f32), b[6] y,
 * b[7] dy, b[8] gamma, b[9] dgamma, b[10] mean (f32); a = {B, N, C, kind, add}; kind 0 RMSNorm,
 * 1 RMSNorm + the residual backward (a block's norm2 with ls1), 2 LayerNorm ---- */
static const float ones64[64] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
static void norm_bwd_fn(iv2_backend *be, void **b, const int *a) {
    int M = a[0] * a[1], C = a[2];
    if (a[3] == 1)
        be->rmsnorm_residual_backward(be, b[2], b[4], b[1], b[0], b[3], (const float *)b[5], b[7], b[9], b[6], b[8],
                                      ones64, a[0], a[1], C);
    else if (a[3] == 2)
        be->layernorm_backward(be, b[2], b[4], b[9], b[1], b[0], b[3], (const float *)b[10], (const float *)b[5], M, C,
                               a[4]);
    else be->rmsnorm_backward(be, b[2], b[4], b[1], b[0], b[3], (const float *)b[5], M, C, a[4]);
}
/* elements of two backend buffers that differ bitwise */
static long differ_bits(iv2_backend *be, const void *x, const void *y, size_t n) {
    size_t es = be->esize;
    unsigned char *hx = malloc(n * es), *hy = malloc(n * es);
    if (!hx || !hy) iv2_panic("bench_kernels: out of host memory");
    be->download_raw(be, hx, x, n * es);
    be->download_raw(be, hy, y, n * es);
    long d = 0;
    for (size_t i = 0; i < n; i++) d += memcmp(hx + i * es, hy + i * es, es) != 0;
    free(hx);
    free(hy);
    return d;
}
/* each shape with the default kernels (be) and with IV2_NORM_PF=1 (pf), alternated; 1 when the
 * two disagree on a row */
static int bench_norms(iv2_backend *be, iv2_backend *pf, FILE *js) {
    struct { const char *what; int B, N, C, kind, add; } sh[] = {
        {"student q/k RMSNorm (SET)", 32, 417, 1408, 0, IV2_SET},
        {"student norm + residual", 32, 417, 1408, 1, IV2_ADD},
        {"MAE head LayerNorm (SET)", 32, 416, 1408, 2, IV2_SET},
        {"CLIP head LayerNorm (SET)", 32, 417, 3200, 2, IV2_SET},
        {"ViT-B width RMSNorm (ADD)", 32, 417, 768, 0, IV2_ADD},
    };
    int wrong = 0;
    printf("\n%-28s %6s %6s %6s %10s %8s %10s %8s %8s %s\n", "norm backward", "M", "C", "MB", "ms", "GB/s", "PF ms",
           "GB/s", "PF/def", "rows differ");
    if (js) fprintf(js, ", \"norm_backward\": [");
    for (size_t i = 0; i < sizeof sh / sizeof sh[0]; i++) {
        int M = sh[i].B * sh[i].N, C = sh[i].C;
        size_t n = (size_t)M * C;
        void *b[11];
        for (int k = 0; k < 11; k++) {
            size_t e = k == 3 || k == 4 || k == 8 || k == 9 ? (size_t)C : k == 5 || k == 10 ? (size_t)M : n;
            b[k] = be->alloc(be, e * (k == 5 || k == 10 ? 4 : be->esize));
            if (k != 5 && k != 10) fill(be, b[k], e, 10 + k);
        }
        float *h = malloc((size_t)M * sizeof(float));
        for (int r = 0; r < M; r++) h[r] = 0.5f + (r % 7) * 0.1f;
        be->upload_raw(be, b[5], h, (size_t)M * 4);
        for (int r = 0; r < M; r++) h[r] = (r % 5) * 0.01f;
        be->upload_raw(be, b[10], h, (size_t)M * 4);
        free(h);
        int a[5] = {sh[i].B, sh[i].N, C, sh[i].kind, sh[i].add};
        /* bytes moved: x, dout read, dinp written (and read when added), y read and dy written */
        double mb = (double)n * be->esize * (3 + (sh[i].add == IV2_ADD) + (sh[i].kind == 1 ? 2 : 0)) / 1e6;
        double td[3], tp[3];
        for (int r = 0; r < 3; r++) { td[r] = time_it(be, norm_bwd_fn, b, a, 7, 4); tp[r] = time_it(pf, norm_bwd_fn, b, a, 7, 4); }
        qsort(td, 3, sizeof(double), cmpd);
        qsort(tp, 3, sizeof(double), cmpd);
        /* the rows: one call each from the same dinp (a SET writes it; an ADD adds to the same start) */
        void *d0 = be->alloc(be, n * be->esize), *y0 = be->alloc(be, n * be->esize);
        fill(be, b[2], n, 12);
        norm_bwd_fn(be, b, a);
        be->sync(be);
        be->copy(be, d0, b[2], n * be->esize);
        be->copy(be, y0, b[7], n * be->esize);
        be->sync(be);
        fill(be, b[2], n, 12);
        norm_bwd_fn(pf, b, a);
        pf->sync(pf);
        long diff = differ_bits(be, d0, b[2], n) + (sh[i].kind == 1 ? differ_bits(be, y0, b[7], n) : 0);
        wrong += diff != 0;
        printf("%-28s %6d %6d %6.0f %10.4f %8.0f %10.4f %8.0f %8.3f %ld%s\n", sh[i].what, M, C, mb, td[1] * 1e3,
               mb / 1e3 / td[1], tp[1] * 1e3, mb / 1e3 / tp[1], tp[1] / td[1], diff, diff ? " FAIL" : "");
        if (js)
            fprintf(js, "%s{\"what\": \"%s\", \"M\": %d, \"C\": %d, \"mb\": %.1f, \"ms\": %.4f, \"pf_ms\": %.4f, "
                    "\"differ\": %ld}", i ? ", " : "", sh[i].what, M, C, mb, td[1] * 1e3, tp[1] * 1e3, diff);
        be->free(be, d0);
        be->free(be, y0);
        for (int k = 0; k < 11; k++) be->free(be, b[k]);
    }
    if (js) fprintf(js, "]");
    return wrong;
}

int main(int argc, char **argv) {
    iv2_backend *be = iv2_cuda_backend_create(0);
    if (!be) { printf("skipped: %s\n", iv2_errmsg()); return 77; }
    if (argc > 1 && strcmp(argv[1], "--ncu") == 0) return ncu_attention(be);
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
    enum { NAT = sizeof at / sizeof at[0] };
    struct sweep sw[NAT];
    double fwd_ms[NAT];
    printf("\n%-28s %4s %4s %6s %4s %10s %9s %12s %9s %12s %9s %12s %9s %12s %9s %12s %9s\n", "attention (non-causal)", "B",
           "H", "N", "D", "fwd ms", "TFLOP/s", "bwd ms", "TFLOP/s", "bwd gemm ms", "TFLOP/s", "bwd wg ms", "TFLOP/s",
           "bwd ds ms", "TFLOP/s", "bwd fd ms", "TFLOP/s");
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        int B = at[i].B, H = at[i].H, N = at[i].N, D = at[i].D, C = H * D;
        void *b[5];
        attn_buffers(be, b, B, H, N, D);
        int a[4] = {B, H, N, D};
        double t = time_it(be, attn_fn, b, a, 9, 5);
        double fl = 4.0 * B * H * (double)N * N * D, tf = fl / t / 1e12;
        float *ref_out = malloc((size_t)B * N * C * sizeof(float)), *ref_lse = malloc((size_t)B * H * N * sizeof(float));
        if (!ref_out || !ref_lse) iv2_panic("bench_kernels: out of host memory");
        be->download(be, ref_out, b[1], (size_t)B * N * C);
        be->download_raw(be, ref_lse, b[2], (size_t)B * H * N * sizeof(float));
        sweep_forward(be, b, a, ref_out, ref_lse, &sw[i]);
        fwd_ms[i] = t * 1e3;
        free(ref_out);
        free(ref_lse);
        /* backward: the default (fused kernels where D <= 128) and the cuBLAS path; TFLOP/s count
         * the 2.5x forward FLOPs of one backward, whatever a path recomputes */
        double tb = time_it(be, attn_bwd_fn, b, a, 5, 2), tfb = 2.5 * fl / tb / 1e12;
        setenv("IV2_ATTN_BWD", "gemm", 1);
        double tg = time_it(be, attn_bwd_fn, b, a, 3, 1), tfg = 2.5 * fl / tg / 1e12;
        unsetenv("IV2_ATTN_BWD");
        double tw = -1, tfw = 0;   /* the Hopper fused backward (IV2_ATTN_BWD=wg), where it runs */
        if (iv2_cuda_has_wgmma(be)) {
            setenv("IV2_ATTN_BWD", "wg", 1);
            tw = time_it(be, attn_bwd_fn, b, a, 5, 2);
            tfw = 2.5 * fl / tw / 1e12;
            unsetenv("IV2_ATTN_BWD");
        }
        /* dQ from the stored dS (IV2_ATTN_BWD=ds; the fused cases, D <= 128) */
        setenv("IV2_ATTN_BWD", "ds", 1);
        double td = time_it(be, attn_bwd_fn, b, a, 5, 2), tfd = 2.5 * fl / td / 1e12;
        /* delta made in the dQ kernel (IV2_ATTN_BWD=fd), no attn_delta_kernel */
        setenv("IV2_ATTN_BWD", "fd", 1);
        double tz = time_it(be, attn_bwd_fn, b, a, 5, 2), tfz = 2.5 * fl / tz / 1e12;
        unsetenv("IV2_ATTN_BWD");
        printf("%-28s %4d %4d %6d %4d %10.3f %9.1f %12.3f %9.1f %12.3f %9.1f %12.3f %9.1f %12.3f %9.1f %12.3f %9.1f\n",
               at[i].what, B, H, N, D, t * 1e3, tf, tb * 1e3, tfb, tg * 1e3, tfg, tw * 1e3, tfw, td * 1e3, tfd, tz * 1e3, tfz);
        if (js) {
            fprintf(js, "%s{\"what\": \"%s\", \"B\": %d, \"H\": %d, \"N\": %d, \"D\": %d, \"fwd_ms\": %.4f, "
                    "\"fwd_tflops\": %.2f, \"bwd_ms\": %.4f, \"bwd_tflops\": %.2f, \"bwd_gemm_ms\": %.4f, "
                    "\"bwd_gemm_tflops\": %.2f, \"bwd_wg_ms\": %.4f, \"bwd_wg_tflops\": %.2f, \"bwd_ds_ms\": %.4f, "
                    "\"bwd_ds_tflops\": %.2f, \"bwd_fd_ms\": %.4f, \"bwd_fd_tflops\": %.2f, \"fwd_sweep\": {",
                    i ? ", " : "", at[i].what, B, H, N, D, t * 1e3, tf, tb * 1e3, tfb, tg * 1e3, tfg,
                    tw < 0 ? -1.0 : tw * 1e3, tfw, td * 1e3, tfd, tz * 1e3, tfz);   /* wg -1: not run (no wgmma) */
            for (int c = 0; c < NCFG; c++) {
                fprintf(js, "%s\"%s\": ", c ? ", " : "", fwd_cfgs[c]);
                if (sw[i].ms[c] < 0) fprintf(js, "null");
                else fprintf(js, "{\"ms\": %.4f, \"tflops\": %.2f, \"differ\": %ld, \"max_abs_diff\": %.3g}",
                             sw[i].ms[c], fl / (sw[i].ms[c] * 1e-3) / 1e12, sw[i].differ[c],
                             isinf(sw[i].maxd[c]) ? 1e30 : sw[i].maxd[c]);
            }
            fprintf(js, "}}");
        }
        for (int k = 0; k < 5; k++) be->free(be, b[k]);
    }
    /* the sweep: the default's configuration (4x2; at head dims 65-96 8x1 up to 512 queries, 8x2
     * beyond) is timed again (11 x 10 calls against 9 x 5), so its column against "default"
     * shows the noise */
    printf("\nattention forward sweep, TFLOP/s (IV2_ATTN_FWD=WxR: W warps x R 16-row query tiles per warp;\n"
           "auto: 4x2 or 4x1 by padded query rows; wgT[p]: Hopper wgmma, 2 warpgroups, T keys per tile,\n"
           "p: softmax overlapping the previous tile's P V;\n"
           "-: not built or not this GPU; *: output differs from the default's)\n");
    printf("%-28s %8s", "shape", "default");
    for (int c = 0; c < NCFG; c++) printf(" %8s", fwd_cfgs[c]);
    printf("  %s\n", "best vs 4x2");
    for (int i = 0; i < NAT; i++) {
        double fl = 4.0 * at[i].B * at[i].H * (double)at[i].N * at[i].N * at[i].D;
        int best = 0;
        printf("%-28s %8.1f", at[i].what, fl / (fwd_ms[i] * 1e-3) / 1e12);
        for (int c = 0; c < NCFG; c++) {
            if (sw[i].ms[c] < 0) { printf(" %8s", "-"); continue; }
            printf(" %7.1f%c", fl / (sw[i].ms[c] * 1e-3) / 1e12, sw[i].differ[c] ? '*' : ' ');
            if (sw[i].ms[c] < sw[i].ms[best]) best = c;
        }
        printf("  %s x%.2f\n", fwd_cfgs[best], sw[i].ms[0] / sw[i].ms[best]);
    }
    int wrong = 0;
    for (int i = 0; i < NAT; i++)
        for (int c = 0; c < NCFG; c++) {
            if (sw[i].differ[c] == 0) continue;
            int bad = !(sw[i].maxd[c] <= SWEEP_MAXD);
            printf("%s IV2_ATTN_FWD=%s on %s: %ld values differ from the default's, max |diff| %.3g (limit %g)\n",
                   bad ? "FAIL" : "note", fwd_cfgs[c], at[i].what, sw[i].differ[c], sw[i].maxd[c], SWEEP_MAXD);
            wrong += bad;
        }
    if (js) fprintf(js, "]");
    /* the norm backwards beside IV2_NORM_PF=1: a second backend, made with the switch set */
    const char *pf_was = getenv("IV2_NORM_PF");
    char *pf_keep = pf_was ? strdup(pf_was) : NULL;
    setenv("IV2_NORM_PF", "1", 1);
    iv2_backend *pf = iv2_cuda_backend_create(0);
    if (pf_keep) { setenv("IV2_NORM_PF", pf_keep, 1); free(pf_keep); } else unsetenv("IV2_NORM_PF");
    if (!pf) iv2_panic("bench_kernels: a second backend: %s", iv2_errmsg());
    wrong += bench_norms(be, pf, js);
    iv2_backend_destroy(pf);
    if (js) { fprintf(js, "}\n"); fclose(js); }
    iv2_backend_destroy(be);
    return wrong ? 1 : 0;
}
