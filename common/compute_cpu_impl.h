/* compute_cpu_impl.h: private to the CPU backend (common/compute_cpu*.c); not a public surface. */
#ifndef IV2_COMPUTE_CPU_IMPL_H
#define IV2_COMPUTE_CPU_IMPL_H
#include "compute.h"

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
                                int Nk, int D, int q_stride, int kv_stride, int o_stride, float scale);
#endif
