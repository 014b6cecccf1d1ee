/* bench_compute.c: CPU backend speed at ViT shapes.
 * GEMM GFLOP/s (be->matmul: OpenMP panels over single-threaded OpenBLAS) beside one multi-threaded
 * cblas_sgemm call and a naive triple loop; attention (2048 tokens, 16 heads, D 88, fused qkv;
 * batches at the student's 417 tokens and InternViT-6B's 257 tokens, D 128) forward and backward
 * beside a naive per-query loop; the same ops in PyTorch on this CPU when
 * `python3 -c 'import torch'` works. Medians of several runs; ratios against each baseline.
 *   IV2_BENCH_REPS=n  runs per figure (default 3)   IV2_THREADS=n  threads (default all cores)
 *   IV2_BENCH_ONLY=attention  the attention rows only */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "compute.h"
#include "err.h"
#include "log.h"

static int reps = 3;

static int cmp_d(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }
static double median(double *t, int n) { qsort(t, n, sizeof(double), cmp_d); return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]); }

static float *frand(size_t n) {
    float *p = malloc(n * sizeof(float));
    uint64_t s = 0x12345678abcdefull ^ n;
    for (size_t i = 0; i < n; i++) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; p[i] = (float)((s >> 11) * (1.0 / 9007199254740992.0) - 0.5); }
    return p;
}

/* naive out[M,N] = x[M,K] w[N,K]^T */
static void naive_matmul(float *out, const float *x, const float *w, int M, int K, int N) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float s = 0;
            for (int k = 0; k < K; k++) s += x[(size_t)i * K + k] * w[(size_t)j * K + k];
            out[(size_t)i * N + j] = s;
        }
}

/* naive attention over queries [0, nq) of every head: scores row, softmax, weighted sum */
static void naive_attention(float *out, const float *qkv, int N, int H, int D, int nq, float scale) {
    int C = H * D;
    float *s = malloc((size_t)N * sizeof(float));
    for (int h = 0; h < H; h++)
        for (int i = 0; i < nq; i++) {
            const float *q = qkv + (size_t)i * 3 * C + h * D;
            float mx = -INFINITY, sum = 0;
            for (int j = 0; j < N; j++) {
                const float *k = qkv + (size_t)j * 3 * C + C + h * D;
                float d = 0;
                for (int c = 0; c < D; c++) d += q[c] * k[c];
                s[j] = d * scale;
                mx = s[j] > mx ? s[j] : mx;
            }
            for (int j = 0; j < N; j++) sum += (s[j] = expf(s[j] - mx));
            float *o = out + (size_t)i * C + h * D;
            for (int c = 0; c < D; c++) o[c] = 0;
            for (int j = 0; j < N; j++) {
                const float *v = qkv + (size_t)j * 3 * C + 2 * C + h * D;
                float p = s[j] / sum;
                for (int c = 0; c < D; c++) o[c] += p * v[c];
            }
        }
    free(s);
}

/* torch timings (ms) for the same ops, or NULL when torch is not importable */
static int torch_ok = -1, torch_threads = 1;
static int torch_time(const char *stmt_setup, double *ms) {
    if (torch_ok < 0) torch_ok = system("python3 -c 'import torch' >/dev/null 2>&1") == 0;
    if (!torch_ok) return -1;
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "python3 - <<'EOF'\nimport torch, time, statistics\ntorch.set_num_threads(%d)\n%s\n"
             "f()\nts=[]\nfor _ in range(%d):\n    t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)\n"
             "print(statistics.median(ts)*1e3)\nEOF",
             torch_threads, stmt_setup, reps);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    int ok = fscanf(p, "%lf", ms) == 1;
    pclose(p);
    return ok ? 0 : -1;
}

static void bench_gemm(iv2_backend *be, const char *name, int M, int K, int N) {
    float *x = frand((size_t)M * K), *w = frand((size_t)N * K), *b = frand(N), *out = malloc((size_t)M * N * sizeof(float));
    double flop = 2.0 * M * N * K, t[16];
    be->matmul(be, out, x, w, b, M, K, N); /* warm */
    for (int r = 0; r < reps; r++) { double t0 = iv2_now(); be->matmul(be, out, x, w, b, M, K, N); t[r] = iv2_now() - t0; }
    double ours = median(t, reps);
    /* one multi-threaded OpenBLAS call (its own thread pool) */
    openblas_set_num_threads(be->threads);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, x, K, w, K, 0, out, N);
    for (int r = 0; r < reps; r++) {
        double t0 = iv2_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, x, K, w, K, 0, out, N);
        t[r] = iv2_now() - t0;
    }
    openblas_set_num_threads(1);
    double blas = median(t, reps);
    /* naive on a slice of rows (its rate does not depend on M) */
    int mn = M < 8 ? M : 8;
    double t0 = iv2_now();
    naive_matmul(out, x, w, mn, K, N);
    double naive = (iv2_now() - t0) * M / mn;
    printf("gemm %-9s %4dx%4dx%4d  ours %6.1f GFLOP/s | openblas-threaded %6.1f, ours x%.2f | naive %5.2f, ours x%.0f",
           name, M, K, N, flop / ours * 1e-9, flop / blas * 1e-9, blas / ours, flop / naive * 1e-9, naive / ours);
    char setup[512];
    double tms;
    snprintf(setup, sizeof setup,
             "x=torch.randn(%d,%d); w=torch.randn(%d,%d); b=torch.randn(%d)\n"
             "def f(): torch.nn.functional.linear(x,w,b)", M, K, N, K, N);
    if (torch_time(setup, &tms) == 0) printf(" | torch %6.1f, ours x%.2f", flop / (tms * 1e-3) * 1e-9, tms * 1e-3 / ours);
    else printf(" | torch: not importable");
    printf("\n");
    fflush(stdout);
    free(x); free(w); free(b); free(out);
}

static void bench_attention(iv2_backend *be, int B, int N, int H, int D) {
    int C = H * D;
    size_t BN = (size_t)B * N;
    float *qkv = frand(BN * 3 * C), *out = malloc(BN * C * sizeof(float));
    float *lse = malloc((size_t)B * H * N * sizeof(float)), *dout = frand(BN * C);
    float *dqkv = calloc(BN * 3 * C, sizeof(float));
    float scale = 1.0f / sqrtf((float)D);
    double tf[16], tb[16];
    for (int r = 0; r < reps; r++) {
        double t0 = iv2_now();
        be->attention(be, out, lse, NULL, qkv, qkv + C, qkv + 2 * C, B, H, N, N, D, 3 * C, 3 * C, C, scale);
        tf[r] = iv2_now() - t0;
        t0 = iv2_now();
        be->attention_backward(be, dqkv, dqkv + C, dqkv + 2 * C, dout, qkv, qkv + C, qkv + 2 * C, out, lse, B, H, N,
                               N, D, 3 * C, 3 * C, C, scale, IV2_ADD);
        tb[r] = iv2_now() - t0;
    }
    double fwd = median(tf, reps), bwd = median(tb, reps);
    int nq = 32;
    double t0 = iv2_now();
    naive_attention(out, qkv, N, H, D, nq, scale);
    double naive = (iv2_now() - t0) * BN / nq;
    double flop = 4.0 * B * H * (double)N * N * D;
    if (B > 1) printf("attention %d x ", B);
    else printf("attention ");
    printf("%d tokens x %d heads, D %d: forward %.1f ms (%.1f GFLOP/s, %.0f tokens/s) | naive %.0f ms, ours x%.1f"
           " | backward %.1f ms (%.1f GFLOP/s, %.2fx the forward's time)",
           N, H, D, fwd * 1e3, flop / fwd * 1e-9, BN / fwd, naive * 1e3, naive / fwd, bwd * 1e3, 2 * flop / bwd * 1e-9,
           bwd / fwd);
    char setup[640];
    double tms;
    snprintf(setup, sizeof setup,
             "import torch.nn.functional as F\nq=torch.randn(%d,%d,%d,%d); k=torch.randn(%d,%d,%d,%d); v=torch.randn(%d,%d,%d,%d)\n"
             "def f(): F.scaled_dot_product_attention(q,k,v)", B, H, N, D, B, H, N, D, B, H, N, D);
    if (torch_time(setup, &tms) == 0) printf(" | torch sdpa forward %.1f ms, ours x%.2f", tms, tms * 1e-3 / fwd);
    else printf(" | torch: not importable");
    printf("\n");
    fflush(stdout);
    free(qkv); free(out); free(lse); free(dout); free(dqkv);
}

int main(int argc, char **argv) {
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: bench_compute   (env IV2_BENCH_REPS=n runs per figure, IV2_THREADS=n threads,\n"
               "                        IV2_BENCH_ONLY=attention for the attention rows only)\n");
        return 0;
    }
    if (getenv("IV2_BENCH_REPS")) reps = atoi(getenv("IV2_BENCH_REPS"));
    if (reps < 1) reps = 1;
    if (reps > 16) reps = 16;
    int threads = getenv("IV2_THREADS") ? atoi(getenv("IV2_THREADS")) : 0;
    iv2_backend *be = iv2_backend_create("cpu", threads);
    if (!be) iv2_die("bench_compute");
    torch_threads = be->threads;
    double load = 0;
    FILE *lf = fopen("/proc/loadavg", "r");
    if (lf) { if (fscanf(lf, "%lf", &load) != 1) load = 0; fclose(lf); }
    printf("cpu backend, %d threads, OpenBLAS %s; load average %.2f (figures are wall-clock medians of %d runs;\n"
           "'ours xR' = the other's time / ours, so R > 1 means ours is faster)\n",
           be->threads, openblas_get_config(), load, reps);
    /* ViT-B (768/3072) and the 1B student / VideoMAE-g width (1408/6144), 2048 tokens */
    /* IV2_BENCH_ONLY=attention: the attention rows alone */
    const char *only = getenv("IV2_BENCH_ONLY");
    int gemms = !only || strcmp(only, "attention") != 0;
    if (gemms) bench_gemm(be, "vitb.qkv", 2048, 768, 2304);
    if (gemms) bench_gemm(be, "vitb.fc2", 2048, 3072, 768);
    if (gemms) bench_gemm(be, "1b.qkv", 2048, 1408, 4224);
    if (gemms) bench_gemm(be, "1b.fc1", 2048, 1408, 6144);
    if (gemms) bench_gemm(be, "1b.fc2", 2048, 6144, 1408);
    if (gemms) bench_gemm(be, "pool.q", 8, 1408, 1408);
    bench_attention(be, 1, 2048, 16, 88);
    /* the student's training shape (iv2-1b, 417 visible tokens) and InternViT-6B frames (257 tokens, D 128) */
    bench_attention(be, 4, 417, 16, 88);
    bench_attention(be, 4, 257, 25, 128);
    iv2_backend_destroy(be);
    return 0;
}
