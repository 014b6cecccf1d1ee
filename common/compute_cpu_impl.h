/* compute_cpu_impl.h: private to the CPU backend (common/compute_cpu*.c); not a public surface. */
#ifndef IV2_COMPUTE_CPU_IMPL_H
#define IV2_COMPUTE_CPU_IMPL_H
#include <stdint.h>
#include <string.h>
#include "compute.h"

/* exp(x) in plain float arithmetic so the loops vectorise (libm expf and floorf are calls):
 * Cephes expf polynomial on x - n ln2, n = round(x / ln2) by the 1.5 * 2^23 trick (exact under
 * round-to-nearest; do not build this file with -ffast-math, which would fold it away), then
 * 2^n from the exponent bits. Within 2 ulp of expf on [-87, 88]; below -87 it gives ~1e-38. */
static inline float exp_fast(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale); /* folded to a register move */
    return y * scale;
}

/* threads the backend uses (be->threads, at least 1) */
int iv2_cpu_threads(const iv2_backend *be);
/* row-major C[M,N] = alpha op(A) op(B) + beta C (op = transpose when trans*), fp32, split into
 * panels over OpenMP threads; single-threaded when called inside a parallel region. */
void iv2_cpu_sgemm(const iv2_backend *be, int transA, int transB, int M, int N, int K, float alpha, const float *A,
                   int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* compute_cpu_attn.c: be->attention and be->attention_backward */
void iv2_cpu_attention(iv2_backend *be, void *out, float *lse, float *probs_mean, const void *q, const void *k,
                       const void *v, int B, int H, int Nq, int Nk, int D, int q_stride, int kv_stride, int o_stride,
                       float scale);
void iv2_cpu_attention_backward(iv2_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *q,
                                const void *k, const void *v, const void *out, const float *lse, int B, int H, int Nq,
                                int Nk, int D, int q_stride, int kv_stride, int o_stride, float scale, int acc);
#endif
