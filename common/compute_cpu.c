/* compute_cpu.c: the CPU implementation of compute.h (fp32 storage, OpenBLAS GEMMs, OpenMP loops).
 *
 * This is the oracle the CUDA backend is tested against, so every op is written plainly.
 * Threads: all parallelism is OpenMP with be->threads threads. OpenBLAS is pinned to one thread
 * (openblas_set_num_threads(1), process-wide) and large GEMMs are split into row or column
 * panels across OpenMP threads instead, so two thread pools never fight for the same cores and
 * GEMMs can be called from inside parallel regions (attention). On a machine shared with other
 * busy processes, OMP_WAIT_POLICY=passive avoids threads spinning at barriers (measured here:
 * an 8x1408x1408 GEMM split over 2 threads took 25 ms spinning vs 3 ms passive, at load 10).
 *
 * Reductions over rows into parameter gradients (dw, db, dgamma, dpe) run as a second pass
 * parallel over column ranges, so results are deterministic and need no atomics.
 * Attention (compute_cpu_attn.c) works on query blocks of one head with per-thread scratch. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "compute.h"
#include "compute_cpu_impl.h"
#include "err.h"

/* ---------------------------------------------------------------------------------------------
 * memory */

static void *cpu_alloc(iv2_backend *be, size_t bytes) {
    void *p = NULL;
    size_t n = bytes ? (bytes + 63) / 64 * 64 : 64;
    if (posix_memalign(&p, 64, n) != 0 || !p) iv2_panic("cpu backend: out of memory allocating %zu bytes", bytes);
    memset(p, 0, n);
    return p;
}
static void cpu_memset0(iv2_backend *be, void *p, size_t bytes) { if (bytes) memset(p, 0, bytes); }
static void cpu_copy(iv2_backend *be, void *dst, const void *src, size_t bytes) { if (bytes && dst != src) memmove(dst, src, bytes); }
static void cpu_upload(iv2_backend *be, void *dst, const float *src, size_t n) { cpu_copy(be, dst, src, n * sizeof(float)); }
static void cpu_download(iv2_backend *be, float *dst, const void *src, size_t n) { cpu_copy(be, dst, src, n * sizeof(float)); }
static void cpu_upload_raw(iv2_backend *be, void *dst, const void *src, size_t bytes) { cpu_copy(be, dst, src, bytes); }
static void cpu_download_raw(iv2_backend *be, void *dst, const void *src, size_t bytes) { cpu_copy(be, dst, src, bytes); }
static void *cpu_alloc_host(iv2_backend *be, size_t bytes) { return iv2_malloc(bytes ? bytes : 1); }
static void cpu_mem_info(iv2_backend *be, size_t *free_bytes, size_t *total_bytes) {
    long page = sysconf(_SC_PAGESIZE), phys = sysconf(_SC_PHYS_PAGES), av = sysconf(_SC_AVPHYS_PAGES);
    size_t total = page > 0 && phys > 0 ? (size_t)page * phys : 0, avail = page > 0 && av > 0 ? (size_t)page * av : 0;
    /* MemAvailable counts reclaimable page cache, which _SC_AVPHYS_PAGES (MemFree) does not */
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[128];
        unsigned long long kb;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) { avail = (size_t)kb * 1024; break; }
        fclose(f);
    }
    if (free_bytes) *free_bytes = avail;
    if (total_bytes) *total_bytes = total;
}
/* The copy and side streams on the CPU (compute.h): their work (upload_async; adamw_chunks on
 * IV2_STREAM_SIDE) waits in a queue per stream and runs as late as the events allow, the latest
 * schedule a GPU could take: an event recorded on one of them marks how far its queue had got,
 * and a wait for it (on any stream) or a sync of it runs that queue up to there; sync and free run
 * both queues, free_host the copy stream's (as CUDA waits). The compute stream runs at once. */
typedef struct {
    void *param; float *master; const void *grad; float *m, *v; const void *chunks;
    int n_chunks; float lr, b1, b2, eps, wd; int t; float grad_scale;
} cpu_adamw_job;
typedef struct {
    int adamw;                                        /* 1: a.adamw, 0: a copy */
    cpu_adamw_job a;
    void *dst; const void *src; size_t bytes;
} cpu_job;
typedef struct {
    cpu_job *job;
    size_t n, cap, done;   /* queued, room, run */
    size_t base;           /* jobs queued before job[0]: positions count from the backend's start */
} cpu_queue;
typedef struct { cpu_queue q[3]; } cpu_streams;   /* be->impl, by IV2_STREAM_*; q[COMPUTE] unused */

static void cpu_adamw_chunks_now(iv2_backend *be, const cpu_adamw_job *j);
/* run the jobs of stream s's queue before position upto */
static void cpu_queue_run(iv2_backend *be, int s, size_t upto) {
    cpu_queue *q = &((cpu_streams *)be->impl)->q[s];
    for (; q->done < q->n && q->base + q->done < upto; q->done++) {
        const cpu_job *j = &q->job[q->done];
        if (j->adamw) cpu_adamw_chunks_now(be, &j->a);
        else if (j->bytes) memcpy(j->dst, j->src, j->bytes);
    }
    if (q->done == q->n) { q->base += q->n; q->n = q->done = 0; }
}
static void cpu_queue_push(iv2_backend *be, int s, const cpu_job *j) {
    cpu_queue *q = &((cpu_streams *)be->impl)->q[s];
    if (q->n == q->cap) {
        q->cap = q->cap ? 2 * q->cap : 64;
        q->job = iv2_realloc(q->job, sizeof *q->job * q->cap);
    }
    q->job[q->n++] = *j;
}
static void cpu_run_all(iv2_backend *be) {
    cpu_queue_run(be, IV2_STREAM_COPY, (size_t)-1);
    cpu_queue_run(be, IV2_STREAM_SIDE, (size_t)-1);
}
static void cpu_sync(iv2_backend *be) { cpu_run_all(be); }
static void cpu_free(iv2_backend *be, void *p) {
    cpu_run_all(be);   /* queued work may still read or write it */
    free(p);
}
static void cpu_free_host(iv2_backend *be, void *p) {
    cpu_queue_run(be, IV2_STREAM_COPY, (size_t)-1);   /* a queued copy may read it (the side stream's may not) */
    free(p);
}
static void cpu_upload_async(iv2_backend *be, void *dst, const void *src, size_t bytes) {
    cpu_job j = {.adamw = 0, .dst = dst, .src = src, .bytes = bytes};
    cpu_queue_push(be, IV2_STREAM_COPY, &j);
}
/* an event is the time it was recorded, and on the copy or side stream how far its queue had got */
struct iv2_event { double t; size_t pos; int stream; };
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static iv2_event *cpu_event_create(iv2_backend *be) { return iv2_calloc(1, sizeof(iv2_event)); }
static void cpu_event_destroy(iv2_backend *be, iv2_event *e) { free(e); }
static void cpu_event_record(iv2_backend *be, iv2_event *e, int stream) {
    cpu_queue *q = &((cpu_streams *)be->impl)->q[stream];
    e->t = cpu_now();
    e->stream = stream;
    e->pos = q->base + q->n;
}
static void cpu_event_wait(iv2_backend *be, iv2_event *e, int stream) {
    if (e->stream != IV2_STREAM_COMPUTE) cpu_queue_run(be, e->stream, e->pos);
}
static void cpu_event_sync(iv2_backend *be, iv2_event *e) {
    if (e->stream != IV2_STREAM_COMPUTE) cpu_queue_run(be, e->stream, e->pos);
}
static double cpu_event_seconds(iv2_backend *be, iv2_event *a, iv2_event *b) { return b->t - a->t; }
static void cpu_destroy(iv2_backend *be) {
    cpu_streams *st = be->impl;
    for (int s = 0; st && s < 3; s++) free(st->q[s].job);
    free(st);
    free(be);
}

int iv2_cpu_threads(const iv2_backend *be) { return be->threads > 0 ? be->threads : 1; }

/* threads worth using for `work` scalar operations (small ops stay on one thread). */
static int nthreads_for(const iv2_backend *be, double work) {
    int nt = iv2_cpu_threads(be);
    if (work < 32768.0) return 1;
    int lim = (int)(work / 16384.0);
    return nt < lim ? nt : (lim < 1 ? 1 : lim);
}

/* ---------------------------------------------------------------------------------------------
 * GEMM: C[M,N] = alpha * op(A) op(B) + beta * C, split into panels over OpenMP threads. Each
 * thread calls single-threaded OpenBLAS on a block of rows of C (or of columns, when M is small). */

void iv2_cpu_sgemm(const iv2_backend *be, int transA, int transB, int M, int N, int K, float alpha, const float *A,
                   int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { /* C = beta C */
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[(size_t)i * ldc + j];
        return;
    }
    enum CBLAS_TRANSPOSE ta = transA ? CblasTrans : CblasNoTrans, tb = transB ? CblasTrans : CblasNoTrans;
    double flops = 2.0 * M * N * K;
    int nt = iv2_cpu_threads(be);
    if (nt > 1 && omp_in_parallel()) nt = 1;
    if (flops < 4e6) nt = 1;
    if (nt == 1) {
        cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    if (M >= 32 * nt || M >= N) { /* panels of rows of C: rows of op(A) */
        int chunk = ((M + nt - 1) / nt + 7) / 8 * 8;
        int parts = (M + chunk - 1) / chunk;
#pragma omp parallel for num_threads(nt) schedule(static, 1)
        for (int p = 0; p < parts; p++) {
            int i0 = p * chunk, m = M - i0 < chunk ? M - i0 : chunk;
            const float *a = transA ? A + i0 : A + (size_t)i0 * lda;
            cblas_sgemm(CblasRowMajor, ta, tb, m, N, K, alpha, a, lda, B, ldb, beta, C + (size_t)i0 * ldc, ldc);
        }
    } else { /* panels of columns of C: columns of op(B) */
        int chunk = ((N + nt - 1) / nt + 15) / 16 * 16;
        int parts = (N + chunk - 1) / chunk;
#pragma omp parallel for num_threads(nt) schedule(static, 1)
        for (int p = 0; p < parts; p++) {
            int j0 = p * chunk, n = N - j0 < chunk ? N - j0 : chunk;
            const float *b = transB ? B + (size_t)j0 * ldb : B + j0;
            cblas_sgemm(CblasRowMajor, ta, tb, M, n, K, alpha, A, lda, b, ldb, beta, C + j0, ldc);
        }
    }
}

/* out[M,N] = inp[M,K] @ w[N,K]^T + bias */
static void cpu_matmul(iv2_backend *be, void *out_, const void *inp, const void *w, const void *bias_, int M, int K,
                       int N) {
    float *out = out_;
    const float *bias = bias_;
    float beta = 0.0f;
    if (bias) {
        int nt = nthreads_for(be, (double)M * N);
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int i = 0; i < M; i++) memcpy(out + (size_t)i * N, bias, (size_t)N * sizeof(float));
        beta = 1.0f;
    }
    iv2_cpu_sgemm(be, 0, 1, M, N, K, 1.0f, inp, K, w, K, beta, out, N);
}

static void colsum_add(const iv2_backend *be, float *dst, const float *src, int M, int N) {
    /* dst[j] += sum_i src[i,j], parallel over column ranges */
    int nt = nthreads_for(be, (double)M * N);
    int chunk = ((N + nt - 1) / nt + 15) / 16 * 16;
#pragma omp parallel for num_threads(nt) schedule(static, 1)
    for (int j0 = 0; j0 < N; j0 += chunk) {
        int j1 = j0 + chunk < N ? j0 + chunk : N;
        for (int i = 0; i < M; i++) {
            const float *s = src + (size_t)i * N;
            for (int j = j0; j < j1; j++) dst[j] += s[j];
        }
    }
}

static void cpu_matmul_backward(iv2_backend *be, void *dinp, void *dw, void *dbias, const void *dout, const void *inp,
                                const void *w, int M, int K, int N, int acc) {
    /* dout[M,N] @ w[N,K] */
    if (dinp) iv2_cpu_sgemm(be, 0, 0, M, K, N, 1.0f, dout, N, w, K, acc ? 1.0f : 0.0f, dinp, K);
    if (dw) iv2_cpu_sgemm(be, 1, 0, N, K, M, 1.0f, dout, N, inp, K, 1.0f, dw, K);     /* dout^T[N,M] @ inp[M,K] */
    if (dbias) colsum_add(be, dbias, dout, M, N);
}

/* one product after the other: on the CPU nothing to gain from one call */
static void cpu_matmul_batch_w(iv2_backend *be, void *out, const void *inp, const void *w, int M, int K, int N,
                               int batch, size_t w_stride, size_t out_stride) {
    for (int i = 0; i < batch; i++)
        be->matmul(be, (float *)out + i * out_stride, inp, (const float *)w + i * w_stride, NULL, M, K, N);
}
static void cpu_matmul_batch_w_backward(iv2_backend *be, void *dw, const void *dout, const void *inp, int M, int K,
                                        int N, int batch, size_t w_stride, size_t out_stride) {
    for (int i = 0; i < batch; i++)
        cpu_matmul_backward(be, NULL, (float *)dw + i * w_stride, NULL, (const float *)dout + i * out_stride, inp, NULL,
                            M, K, N, IV2_ADD);
}

/* ---------------------------------------------------------------------------------------------
 * norms (statistics in fp32, sums with SIMD partial accumulators) */

static void cpu_rmsnorm(iv2_backend *be, void *out_, float *rstd, const void *inp_, const void *w_, int M, int C,
                        float eps) {
    float *out = out_;
    const float *inp = inp_, *w = w_;
    int nt = nthreads_for(be, (double)M * C);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int i = 0; i < M; i++) {
        const float *x = inp + (size_t)i * C;
        float *o = out + (size_t)i * C;
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int c = 0; c < C; c++) ss += x[c] * x[c];
        float r = 1.0f / sqrtf(ss / C + eps);
        for (int c = 0; c < C; c++) o[c] = x[c] * r * w[c];
        if (rstd) rstd[i] = r;
    }
}

/* out = x r w, r = (mean x^2 + eps)^-1/2:
 * dx = r (dout w) - x r^3 / C * sum_c(dout w x);  dw += sum_rows dout x r */
static void cpu_rmsnorm_backward(iv2_backend *be, void *dinp_, void *dw_, const void *dout_, const void *inp_,
                                 const void *w_, const float *rstd, int M, int C, int acc) {
    float *dinp = dinp_, *dw = dw_;
    const float *dout = dout_, *inp = inp_, *w = w_;
    int nt = nthreads_for(be, (double)M * C);
    if (dinp) {
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int i = 0; i < M; i++) {
            const float *x = inp + (size_t)i * C, *g = dout + (size_t)i * C;
            float *d = dinp + (size_t)i * C, r = rstd[i];
            float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
            for (int c = 0; c < C; c++) dot += g[c] * w[c] * x[c];
            float k = r * r * r * dot / C;
            if (acc)
                for (int c = 0; c < C; c++) d[c] += r * g[c] * w[c] - k * x[c];
            else
                for (int c = 0; c < C; c++) d[c] = r * g[c] * w[c] - k * x[c];
        }
    }
    if (dw) {
        int chunk = ((C + nt - 1) / nt + 15) / 16 * 16;
#pragma omp parallel for num_threads(nt) schedule(static, 1)
        for (int c0 = 0; c0 < C; c0 += chunk) {
            int c1 = c0 + chunk < C ? c0 + chunk : C;
            for (int i = 0; i < M; i++) {
                const float *x = inp + (size_t)i * C, *g = dout + (size_t)i * C;
                float r = rstd[i];
                for (int c = c0; c < c1; c++) dw[c] += g[c] * x[c] * r;
            }
        }
    }
}

/* the two ops in turn */
static void cpu_rmsnorm_residual_backward(iv2_backend *be, void *dinp, void *dw, const void *dout, const void *inp,
                                          const void *w, const float *rstd, void *dy, void *dgamma, const void *y,
                                          const void *gamma, const float *s, int B, int N, int C) {
    cpu_rmsnorm_backward(be, dinp, dw, dout, inp, w, rstd, B * N, C, IV2_ADD);
    be->residual_backward(be, dy, dgamma, dinp, y, gamma, s, B, N, C, IV2_SET);
}

static void cpu_layernorm(iv2_backend *be, void *out_, float *mean, float *rstd, const void *inp_, const void *w_,
                          const void *b_, int M, int C, float eps) {
    float *out = out_;
    const float *inp = inp_, *w = w_, *b = b_;
    int nt = nthreads_for(be, (double)M * C);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int i = 0; i < M; i++) {
        const float *x = inp + (size_t)i * C;
        float *o = out + (size_t)i * C;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int c = 0; c < C; c++) s += x[c];
        float mu = s / C, v = 0.0f;
#pragma omp simd reduction(+ : v)
        for (int c = 0; c < C; c++) v += (x[c] - mu) * (x[c] - mu);
        float r = 1.0f / sqrtf(v / C + eps);
        if (b)
            for (int c = 0; c < C; c++) o[c] = (x[c] - mu) * r * w[c] + b[c];
        else
            for (int c = 0; c < C; c++) o[c] = (x[c] - mu) * r * w[c];
        if (mean) mean[i] = mu;
        if (rstd) rstd[i] = r;
    }
}

/* xhat = (x - mean) r, g = dout w: dx = r (g - mean(g) - xhat mean(g xhat)); dw += dout xhat; db += dout */
static void cpu_layernorm_backward(iv2_backend *be, void *dinp_, void *dw_, void *db_, const void *dout_,
                                   const void *inp_, const void *w_, const float *mean, const float *rstd, int M,
                                   int C, int acc) {
    float *dinp = dinp_, *dw = dw_, *db = db_;
    const float *dout = dout_, *inp = inp_, *w = w_;
    int nt = nthreads_for(be, (double)M * C);
    if (dinp) {
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int i = 0; i < M; i++) {
            const float *x = inp + (size_t)i * C, *g = dout + (size_t)i * C;
            float *d = dinp + (size_t)i * C, mu = mean[i], r = rstd[i];
            float sg = 0.0f, sgx = 0.0f;
#pragma omp simd reduction(+ : sg, sgx)
            for (int c = 0; c < C; c++) {
                float gw = g[c] * w[c];
                sg += gw;
                sgx += gw * (x[c] - mu) * r;
            }
            sg /= C;
            sgx /= C;
            for (int c = 0; c < C; c++) d[c] = (acc ? d[c] : 0.0f) + r * (g[c] * w[c] - sg - (x[c] - mu) * r * sgx);
        }
    }
    if (dw || db) {
        int chunk = ((C + nt - 1) / nt + 15) / 16 * 16;
#pragma omp parallel for num_threads(nt) schedule(static, 1)
        for (int c0 = 0; c0 < C; c0 += chunk) {
            int c1 = c0 + chunk < C ? c0 + chunk : C;
            for (int i = 0; i < M; i++) {
                const float *x = inp + (size_t)i * C, *g = dout + (size_t)i * C;
                float mu = mean[i], r = rstd[i];
                if (dw)
                    for (int c = c0; c < c1; c++) dw[c] += g[c] * (x[c] - mu) * r;
                if (db)
                    for (int c = c0; c < c1; c++) db[c] += g[c];
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * GELU (the tanh form as x sigmoid(2u) through exp_fast, which vectorises; libm tanhf did not) */

#define GELU_K0 0.7978845608028654f  /* sqrt(2/pi) */
#define GELU_K1 0.044715f
#define INV_SQRT2 0.7071067811865476f
#define INV_SQRT2PI 0.3989422804014327f

static void cpu_gelu(iv2_backend *be, void *out_, const void *inp_, size_t n, int kind) {
    float *out = out_;
    const float *inp = inp_;
    int nt = nthreads_for(be, (double)n * 8);
    if (kind == IV2_GELU_TANH) {
#pragma omp parallel for simd num_threads(nt) schedule(static)
        for (size_t i = 0; i < n; i++) {
            float x = inp[i], u = GELU_K0 * (x + GELU_K1 * x * x * x);
            out[i] = x / (1.0f + exp_fast(-2.0f * u)); /* 0.5 x (1 + tanh u) = x sigmoid(2u) */
        }
    } else {
#pragma omp parallel for num_threads(nt) schedule(static)
        for (size_t i = 0; i < n; i++) {
            float x = inp[i];
            out[i] = 0.5f * x * (1.0f + erff(x * INV_SQRT2));
        }
    }
}

static void cpu_gelu_backward(iv2_backend *be, void *dinp_, const void *dout_, const void *inp_, size_t n, int kind,
                              int acc) {
    float *dinp = dinp_;
    const float *dout = dout_, *inp = inp_;
    int nt = nthreads_for(be, (double)n * 8);
    if (kind == IV2_GELU_TANH) {
#pragma omp parallel for simd num_threads(nt) schedule(static)
        for (size_t i = 0; i < n; i++) {
            /* with s = sigmoid(2u): 1 + tanh u = 2s, 1 - tanh^2 u = 4 s (1 - s) */
            float x = inp[i], u = GELU_K0 * (x + GELU_K1 * x * x * x), s = 1.0f / (1.0f + exp_fast(-2.0f * u));
            float du = GELU_K0 * (1.0f + 3.0f * GELU_K1 * x * x);
            dinp[i] = (acc ? dinp[i] : 0.0f) + dout[i] * (s + 2.0f * x * s * (1.0f - s) * du);
        }
    } else {
#pragma omp parallel for num_threads(nt) schedule(static)
        for (size_t i = 0; i < n; i++) {
            float x = inp[i];
            float cdf = 0.5f * (1.0f + erff(x * INV_SQRT2)), pdf = INV_SQRT2PI * expf(-0.5f * x * x);
            dinp[i] = (acc ? dinp[i] : 0.0f) + dout[i] * (cdf + x * pdf);
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * residual with LayerScale and drop path, position rows, axpy */

static void cpu_residual(iv2_backend *be, void *x_, const void *y_, const void *gamma_, const float *s, int B, int N,
                         int C) {
    float *x = x_;
    const float *y = y_, *gamma = gamma_;
    int nt = nthreads_for(be, (double)B * N * C);
    for (int b = 0; b < B; b++) {
        float sb = s ? s[b] : 1.0f;
        if (sb == 0.0f) continue; /* dropped sample: identity */
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int n = 0; n < N; n++) {
            float *xr = x + ((size_t)b * N + n) * C;
            const float *yr = y + ((size_t)b * N + n) * C;
            if (gamma)
                for (int c = 0; c < C; c++) xr[c] += sb * gamma[c] * yr[c];
            else
                for (int c = 0; c < C; c++) xr[c] += sb * yr[c];
        }
    }
}

static void cpu_residual_backward(iv2_backend *be, void *dy_, void *dgamma_, const void *dx_, const void *y_,
                                  const void *gamma_, const float *s, int B, int N, int C, int acc) {
    float *dy = dy_, *dgamma = dgamma_;
    const float *dx = dx_, *y = y_, *gamma = gamma_;
    int nt = nthreads_for(be, (double)B * N * C);
    if (dy && !acc) memset(dy, 0, (size_t)B * N * C * sizeof(float));
    if (dy) cpu_residual(be, dy, dx, gamma, s, B, N, C);   /* dy += s * gamma * dx: the forward's own op */
    if (dgamma) {
        int chunk = ((C + nt - 1) / nt + 15) / 16 * 16;
#pragma omp parallel for num_threads(nt) schedule(static, 1)
        for (int c0 = 0; c0 < C; c0 += chunk) {
            int c1 = c0 + chunk < C ? c0 + chunk : C;
            for (int b = 0; b < B; b++) {
                float sb = s ? s[b] : 1.0f;
                if (sb == 0.0f) continue;
                for (int n = 0; n < N; n++) {
                    const float *g = dx + ((size_t)b * N + n) * C, *yr = y + ((size_t)b * N + n) * C;
                    for (int c = c0; c < c1; c++) dgamma[c] += sb * g[c] * yr[c];
                }
            }
        }
    }
}

/* the three ops in turn (on the CPU the GEMMs dominate: not worth a second code path) */
static void cpu_residual_norm(iv2_backend *be, void *x_out, void *out, float *mean, float *rstd, const void *x_in,
                              const void *y, const void *gamma, const float *s, const void *w, const void *b, int B,
                              int N, int C, float eps, int ln) {
    if (x_out != x_in) memcpy(x_out, x_in, (size_t)B * N * C * sizeof(float));
    cpu_residual(be, x_out, y, gamma, s, B, N, C);
    if (ln) cpu_layernorm(be, out, mean, rstd, x_out, w, b, B * N, C, eps);
    else cpu_rmsnorm(be, out, rstd, x_out, w, B * N, C, eps);
}

static void cpu_add_table_rows(iv2_backend *be, void *x_, const void *table_, const int32_t *rows, int n, int n_table,
                               int C) {
    float *x = x_;
    const float *table = table_;
    int nt = nthreads_for(be, (double)n * C);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int i = 0; i < n; i++) {
        float *xr = x + (size_t)i * C;
        const float *tr = table + (size_t)(rows[i] % n_table) * C;
        for (int c = 0; c < C; c++) xr[c] += tr[c];
    }
}
/* dtable[rows[i] % n_table] += dx[i]: cpu_scatter_add_rows' loop with the index taken modulo */
static void scatter_add_cols(iv2_backend *be, float *dst, const float *src, const int32_t *idx, int n, int C, int mod);
static void cpu_add_table_rows_backward(iv2_backend *be, void *dtable, const void *dx, const int32_t *rows, int n,
                                        int n_table, int C) {
    scatter_add_cols(be, dtable, dx, rows, n, C, n_table);
}

static void cpu_axpy(iv2_backend *be, void *y_, const void *x_, float a, size_t n) {
    float *y = y_;
    const float *x = x_;
    int nt = nthreads_for(be, (double)n);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t i = 0; i < n; i++) y[i] += a * x[i];
}

/* ---------------------------------------------------------------------------------------------
 * gather / scatter, mean over tokens, L2 normalisation */

static void cpu_gather_rows(iv2_backend *be, void *out_, const void *inp_, const int32_t *idx, int n, int C) {
    float *out = out_;
    const float *inp = inp_;
    int nt = nthreads_for(be, (double)n * C);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int i = 0; i < n; i++) memcpy(out + (size_t)i * C, inp + (size_t)idx[i] * C, (size_t)C * sizeof(float));
}

/* dst[idx[i] % mod] += src[i] (mod 0: idx[i]); indices may repeat, so threads split the columns,
 * not the rows */
static void scatter_add_cols(iv2_backend *be, float *dst, const float *src, const int32_t *idx, int n, int C, int mod) {
    int nt = nthreads_for(be, (double)n * C);
    int chunk = ((C + nt - 1) / nt + 15) / 16 * 16;
#pragma omp parallel for num_threads(nt) schedule(static, 1)
    for (int c0 = 0; c0 < C; c0 += chunk) {
        int c1 = c0 + chunk < C ? c0 + chunk : C;
        for (int i = 0; i < n; i++) {
            float *d = dst + (size_t)(mod ? idx[i] % mod : idx[i]) * C;
            const float *g = src + (size_t)i * C;
            for (int c = c0; c < c1; c++) d[c] += g[c];
        }
    }
}
static void cpu_scatter_add_rows(iv2_backend *be, void *dinp, const void *dout, const int32_t *idx, int n, int C) {
    scatter_add_cols(be, dinp, dout, idx, n, C, 0);
}

static void cpu_mean_rows(iv2_backend *be, void *out_, const void *inp_, int B, int N, int C) {
    float *out = out_;
    const float *inp = inp_;
    int nt = nthreads_for(be, (double)B * N * C);
    int chunk = ((C + nt - 1) / nt + 15) / 16 * 16;
    float *acc = calloc((size_t)B * C, sizeof(float));
    if (!acc) iv2_panic("cpu mean_rows: out of memory");
#pragma omp parallel for num_threads(nt) schedule(static, 1) collapse(2)
    for (int b = 0; b < B; b++)
        for (int c0 = 0; c0 < C; c0 += chunk) {
            int c1 = c0 + chunk < C ? c0 + chunk : C;
            float *a = acc + (size_t)b * C;
            for (int n = 0; n < N; n++) {
                const float *x = inp + ((size_t)b * N + n) * C;
                for (int c = c0; c < c1; c++) a[c] += x[c];
            }
        }
    for (size_t i = 0; i < (size_t)B * C; i++) out[i] = acc[i] / N; /* out may alias nothing; acc keeps it safe */
    free(acc);
}

static void cpu_mean_rows_backward(iv2_backend *be, void *dinp_, const void *dout_, int B, int N, int C) {
    float *dinp = dinp_;
    const float *dout = dout_;
    float inv = 1.0f / N;
    int nt = nthreads_for(be, (double)B * N * C);
#pragma omp parallel for num_threads(nt) schedule(static) collapse(2)
    for (int b = 0; b < B; b++)
        for (int n = 0; n < N; n++) {
            float *d = dinp + ((size_t)b * N + n) * C;
            const float *g = dout + (size_t)b * C;
            for (int c = 0; c < C; c++) d[c] += g[c] * inv;
        }
}

static void cpu_l2norm(iv2_backend *be, void *out_, float *norm, const void *inp_, int M, int C) {
    float *out = out_;
    const float *inp = inp_;
    int nt = nthreads_for(be, (double)M * C);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int i = 0; i < M; i++) {
        const float *x = inp + (size_t)i * C;
        float *o = out + (size_t)i * C, ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int c = 0; c < C; c++) ss += x[c] * x[c];
        float nrm = sqrtf(ss), inv = 1.0f / nrm;
        for (int c = 0; c < C; c++) o[c] = x[c] * inv;
        if (norm) norm[i] = nrm;
    }
}

/* y = x / |x|: dx = (dy - y <dy, y>) / |x| */
static void cpu_l2norm_backward(iv2_backend *be, void *dinp_, const void *dout_, const void *out_, const float *norm,
                                int M, int C) {
    float *dinp = dinp_;
    const float *dout = dout_, *out = out_;
    int nt = nthreads_for(be, (double)M * C);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int i = 0; i < M; i++) {
        const float *g = dout + (size_t)i * C, *y = out + (size_t)i * C;
        float *d = dinp + (size_t)i * C, dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int c = 0; c < C; c++) dot += g[c] * y[c];
        float inv = 1.0f / norm[i];
        for (int c = 0; c < C; c++) d[c] += (g[c] - y[c] * dot) * inv;
    }
}

/* ---------------------------------------------------------------------------------------------
 * patchify: uint8 [T,H,W,3] -> rows [(T/tub)(H/p)(W/p), 3 tub p p], columns (c, kt, ky, kx) */

static void cpu_patchify(iv2_backend *be, void *out_, const uint8_t *frames, int T, int H, int W, int p, int tubelet,
                         const float mean[3], const float std[3], const int32_t *rows, int n, int ntok, int cls) {
    float *out = out_;
    int gt = T / tubelet, gy = H / p, gx = W / p, cols = 3 * tubelet * p * p;
    float lut[3][256]; /* (v/255 - mean) / std for every byte value */
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) lut[c][v] = ((float)v / 255.0f - mean[c]) / std[c];
    int nrows = rows ? n : gt * gy * gx;
    int nt = nthreads_for(be, (double)nrows * cols);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int r = 0; r < nrows; r++) {
        float *o = out + (size_t)r * cols;
        int g = r;   /* the patch, in raster order over all frames */
        if (rows) {
            int s = rows[r] / ntok, tok = rows[r] % ntok;
            if (tok < cls) { memset(o, 0, sizeof(float) * cols); continue; }   /* a class token: no patch */
            g = s * (ntok - cls) + tok - cls;
        }
        int t = g / (gy * gx), y = (g / gx) % gy, x = g % gx;
        for (int c = 0; c < 3; c++)
            for (int kt = 0; kt < tubelet; kt++)
                for (int ky = 0; ky < p; ky++) {
                    const uint8_t *src = frames + (((size_t)(t * tubelet + kt) * H + (size_t)y * p + ky) * W + (size_t)x * p) * 3 + c;
                    float *dst = o + ((size_t)(c * tubelet + kt) * p + ky) * p;
                    for (int kx = 0; kx < p; kx++) dst[kx] = lut[c][src[kx * 3]];
                }
    }
}

/* ---------------------------------------------------------------------------------------------
 * loss, norms, optimiser */

static void cpu_l2_cos_loss(iv2_backend *be, float *loss_rows, void *dinp_, const void *inp_, const void *target_,
                            int M, int C, float scale) {
    float *dinp = dinp_;
    const float *inp = inp_, *target = target_;
    int nt = nthreads_for(be, (double)M * C);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int i = 0; i < M; i++) {
        const float *x = inp + (size_t)i * C, *t = target + (size_t)i * C;
        float xx = 0.0f, xt = 0.0f;
#pragma omp simd reduction(+ : xx, xt)
        for (int c = 0; c < C; c++) {
            xx += x[c] * x[c];
            xt += x[c] * t[c];
        }
        float n = sqrtf(xx), cs = xt / n;   /* <out, target> */
        if (loss_rows) loss_rows[i] = 2.0f - 2.0f * cs;
        if (dinp) {
            float *d = dinp + (size_t)i * C, k = -2.0f * scale / n, kx = k * cs / n;
#pragma omp simd
            for (int c = 0; c < C; c++) d[c] = k * t[c] - kx * x[c];
        }
    }
}

static void cpu_sumsq(iv2_backend *be, float *acc, const void *x_, size_t n) {
    const float *x = x_;
    double s = 0.0;
    int nt = nthreads_for(be, (double)n);
#pragma omp parallel for num_threads(nt) schedule(static) reduction(+ : s)
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    *acc += (float)s;
}

/* torch.optim.AdamW (foreach=False, amsgrad=False, maximize=False), step by step in its order:
 * p *= 1 - lr wd; m.lerp_(g, 1-b1); v = v b2 + (1-b2) g g;
 * p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps). One element; cpu_adamw and cpu_adamw_chunks share it. */
static inline void adamw_one(float *param, float *master, const float *grad, float *m, float *v, size_t i, float b1,
                             float b2, float eps, float step, float bc2s, float decay, float grad_scale) {
    float g = grad[i] * grad_scale;
    float p = master[i] * decay;
    float mi = m[i] + (1.0f - b1) * (g - m[i]);
    float vi = v[i] * b2 + (1.0f - b2) * g * g;
    p -= step * mi / (sqrtf(vi) / bc2s + eps);
    m[i] = mi;
    v[i] = vi;
    master[i] = p;
    param[i] = p;
}

static void cpu_adamw(iv2_backend *be, void *param_, float *master, const void *grad_, float *m, float *v, size_t n,
                      float lr, float b1, float b2, float eps, float wd, int t, float grad_scale) {
    float *param = param_;
    const float *grad = grad_;
    float bc1 = 1.0f - powf(b1, (float)t), bc2 = 1.0f - powf(b2, (float)t);
    float step = lr / bc1, bc2s = sqrtf(bc2), decay = 1.0f - lr * wd;
    int nt = nthreads_for(be, (double)n * 4);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t i = 0; i < n; i++) adamw_one(param, master, grad, m, v, i, b1, b2, eps, step, bc2s, decay, grad_scale);
}

/* every tensor of a buffer in one call: the chunks spread over the threads */
static void cpu_adamw_chunks_now(iv2_backend *be, const cpu_adamw_job *j) {
    const iv2_adamw_chunk *ch = j->chunks;
    float bc1 = 1.0f - powf(j->b1, (float)j->t), bc2 = 1.0f - powf(j->b2, (float)j->t);
    float step = j->lr / bc1, bc2s = sqrtf(bc2), decay = 1.0f - j->lr * j->wd;
    size_t work = 0;
    for (int c = 0; c < j->n_chunks; c++) work += ch[c].n;
    int nt = nthreads_for(be, (double)work * 4);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int c = 0; c < j->n_chunks; c++) {
        float d = ch[c].no_wd ? 1.0f : decay;
        for (size_t i = ch[c].off; i < ch[c].off + ch[c].n; i++)
            adamw_one(j->param, j->master, j->grad, j->m, j->v, i, j->b1, j->b2, j->eps, step, bc2s, d, j->grad_scale);
    }
}
static void cpu_adamw_chunks(iv2_backend *be, void *param, float *master, const void *grad, float *m, float *v,
                             const void *chunks, int n_chunks, float lr, float b1, float b2, float eps, float wd,
                             int t, float grad_scale, int stream) {
    cpu_job j = {.adamw = 1, .a = {param, master, grad, m, v, chunks, n_chunks, lr, b1, b2, eps, wd, t, grad_scale}};
    if (stream == IV2_STREAM_SIDE) cpu_queue_push(be, IV2_STREAM_SIDE, &j);
    else cpu_adamw_chunks_now(be, &j.a);
}

/* ---------------------------------------------------------------------------------------------
 * construction */

iv2_backend *iv2_cpu_backend_create(int threads) {
    iv2_backend *be = calloc(1, sizeof *be);
    if (!be) { iv2_err("cpu backend: out of memory"); return NULL; }
    be->name = "cpu";
    be->dtype = IV2_F32;
    be->esize = sizeof(float);
    be->threads = threads > 0 ? threads : omp_get_max_threads();
    if (be->threads < 1) be->threads = 1;
    be->device = -1;
    be->impl = calloc(1, sizeof(cpu_streams));
    if (!be->impl) { free(be); iv2_err("cpu backend: out of memory"); return NULL; }
    /* all parallelism is ours (OpenMP); OpenBLAS runs single-threaded inside each panel */
    openblas_set_num_threads(1);

    be->alloc = cpu_alloc;
    be->free = cpu_free;
    be->memset0 = cpu_memset0;
    be->copy = cpu_copy;
    be->upload = cpu_upload;
    be->download = cpu_download;
    be->upload_raw = cpu_upload_raw;
    be->download_raw = cpu_download_raw;
    be->alloc_host = cpu_alloc_host;
    be->free_host = cpu_free_host;
    be->mem_info = cpu_mem_info;
    be->sync = cpu_sync;
    be->destroy = cpu_destroy;
    be->upload_async = cpu_upload_async;
    be->download_async = cpu_download_raw;
    be->event_create = cpu_event_create;
    be->event_destroy = cpu_event_destroy;
    be->event_record = cpu_event_record;
    be->event_wait = cpu_event_wait;
    be->event_sync = cpu_event_sync;
    be->event_seconds = cpu_event_seconds;

    be->matmul = cpu_matmul;
    be->matmul_backward = cpu_matmul_backward;
    be->matmul_batch_w = cpu_matmul_batch_w;
    be->matmul_batch_w_backward = cpu_matmul_batch_w_backward;
    be->rmsnorm = cpu_rmsnorm;
    be->rmsnorm_backward = cpu_rmsnorm_backward;
    be->rmsnorm_residual_backward = cpu_rmsnorm_residual_backward;
    be->layernorm = cpu_layernorm;
    be->layernorm_backward = cpu_layernorm_backward;
    be->attention = iv2_cpu_attention;
    be->attention_backward = iv2_cpu_attention_backward;
    be->gelu = cpu_gelu;
    be->gelu_backward = cpu_gelu_backward;
    be->residual = cpu_residual;
    be->residual_backward = cpu_residual_backward;
    be->residual_norm = cpu_residual_norm;
    be->add_table_rows = cpu_add_table_rows;
    be->add_table_rows_backward = cpu_add_table_rows_backward;
    be->axpy = cpu_axpy;
    be->gather_rows = cpu_gather_rows;
    be->scatter_add_rows = cpu_scatter_add_rows;
    be->mean_rows = cpu_mean_rows;
    be->mean_rows_backward = cpu_mean_rows_backward;
    be->l2norm = cpu_l2norm;
    be->l2norm_backward = cpu_l2norm_backward;
    be->patchify = cpu_patchify;
    be->l2_cos_loss = cpu_l2_cos_loss;
    be->sumsq = cpu_sumsq;
    be->adamw = cpu_adamw;
    be->adamw_chunks = cpu_adamw_chunks;
    return be;
}
