/* compute_cpu_attn.c: multi-head softmax attention on the CPU, forward and backward.
 *
 * Work is cut into (sample, head, block of query rows); a thread holds the scores of one block
 * only (rows x Nk floats, e.g. 128 x 2048 = 1 MiB), never all heads' N x N. Scores and the
 * value product are single-threaded OpenBLAS GEMMs that read q, k, v in place through their
 * strides (leading dimension = stride), so a fused qkv buffer needs no copies. The softmax is
 * exact per row (max, exp, sum) since the whole row of one block fits the scratch; the 1/sum is
 * applied to the output rows after the value product, not to the scores (one pass fewer). lse is
 * kept for the backward, which recomputes the probabilities block by block (flash-attention style). */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include "compute_cpu_impl.h"
#include "err.h"

#ifndef ATT_QBLOCK
#define ATT_QBLOCK 128     /* query rows per forward task */
#endif
#ifndef ATT_QBLOCK_BWD
#define ATT_QBLOCK_BWD 128 /* query rows per backward step */
#endif

/* in place: s[j] = exp(s[j] - max), *inv = 1 / sum_j s[j]; returns the log-sum-exp. The forward
 * applies inv to the rows of P V instead (one pass over the scores fewer). */
static float softmax_row_unnormalised(float *s, int n, float *inv) {
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int j = 0; j < n; j++) mx = s[j] > mx ? s[j] : mx;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < n; j++) {
        float e = exp_fast(s[j] - mx);
        s[j] = e;
        sum += e;
    }
    *inv = 1.0f / sum;
    return mx + logf(sum);
}

/* in-place softmax of one row of n scores; returns the log-sum-exp */
static float softmax_row(float *s, int n) {
    float inv, lse = softmax_row_unnormalised(s, n, &inv);
#pragma omp simd
    for (int j = 0; j < n; j++) s[j] *= inv;
    return lse;
}

typedef struct {
    const float *q, *k, *v;
    int Nq, Nk, D, q_stride, kv_stride, o_stride;
    float scale;
} att_args;

/* one head h of sample b, query rows [q0, q0+nq): unnormalised probabilities left in S [nq, Nk],
 * row i of the probabilities being S[i,:] * inv[i] (the output rows are scaled by inv instead) */
static void att_fwd_block(const att_args *a, float *out, float *lse, int H, int b, int h, int q0, int nq, float *S,
                          float *inv) {
    const float *Q = a->q + ((size_t)b * a->Nq + q0) * a->q_stride + (size_t)h * a->D;
    const float *K = a->k + (size_t)b * a->Nk * a->kv_stride + (size_t)h * a->D;
    const float *V = a->v + (size_t)b * a->Nk * a->kv_stride + (size_t)h * a->D;
    float *O = out + ((size_t)b * a->Nq + q0) * a->o_stride + (size_t)h * a->D;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, a->Nk, a->D, a->scale, Q, a->q_stride, K, a->kv_stride,
                0.0f, S, a->Nk);
    for (int i = 0; i < nq; i++) {
        float l = softmax_row_unnormalised(S + (size_t)i * a->Nk, a->Nk, &inv[i]);
        if (lse) lse[((size_t)b * H + h) * a->Nq + q0 + i] = l;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, a->D, a->Nk, 1.0f, S, a->Nk, V, a->kv_stride, 0.0f, O,
                a->o_stride);
    for (int i = 0; i < nq; i++)
        for (int d = 0; d < a->D; d++) O[(size_t)i * a->o_stride + d] *= inv[i];
}

void iv2_cpu_attention(iv2_backend *be, void *out, float *lse, float *probs_mean, const void *q, const void *k,
                       const void *v, int B, int H, int Nq, int Nk, int D, int q_stride, int kv_stride, int o_stride,
                       float scale) {
    if (B <= 0 || H <= 0 || Nq <= 0 || Nk <= 0 || D <= 0) return;
    att_args a = {q, k, v, Nq, Nk, D, q_stride, kv_stride, o_stride, scale};
    int qb = Nq < ATT_QBLOCK ? Nq : ATT_QBLOCK;
    int nqb = (Nq + qb - 1) / qb;
    int nt = iv2_cpu_threads(be);
    /* with probs_mean, one task owns all heads of its query rows so the head average needs no locks */
    long ntask = probs_mean ? (long)B * nqb : (long)B * nqb * H;
    if (ntask < nt) nt = (int)ntask;
    if ((double)B * H * Nq * Nk * D < 1e6) nt = 1;
#pragma omp parallel num_threads(nt)
    {
        float *S = malloc((size_t)qb * Nk * sizeof(float)), inv[ATT_QBLOCK];
        if (!S) iv2_panic("cpu attention: out of memory for %d x %d scores", qb, Nk);
#pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < ntask; t++) {
            if (probs_mean) {
                int b = (int)(t / nqb), q0 = (int)(t % nqb) * qb, nq = Nq - q0 < qb ? Nq - q0 : qb;
                float *P = probs_mean + ((size_t)b * Nq + q0) * Nk;
                memset(P, 0, (size_t)nq * Nk * sizeof(float));
                for (int h = 0; h < H; h++) {
                    att_fwd_block(&a, out, lse, H, b, h, q0, nq, S, inv);
                    for (int i = 0; i < nq; i++) {
                        float w = inv[i] / H;
                        for (int j = 0; j < Nk; j++) P[(size_t)i * Nk + j] += w * S[(size_t)i * Nk + j];
                    }
                }
            } else {
                int h = (int)(t % H), rest = (int)(t / H);
                int b = rest / nqb, q0 = (rest % nqb) * qb, nq = Nq - q0 < qb ? Nq - q0 : qb;
                att_fwd_block(&a, out, lse, H, b, h, q0, nq, S, inv);
            }
        }
        free(S);
    }
}

/* Backward of one (sample, head), query blocks in turn (dk, dv of the head are owned by the task):
 * P = exp(scale QK^T - lse); dP = dO V^T; dS = P (dP - rowsum(dO O)); dV += P^T dO;
 * dQ += scale dS K; dK += scale dS^T Q. */
void iv2_cpu_attention_backward(iv2_backend *be, void *dq_, void *dk_, void *dv_, const void *dout_, const void *q_,
                                const void *k_, const void *v_, const void *out_, const float *lse, int B, int H,
                                int Nq, int Nk, int D, int q_stride, int kv_stride, int o_stride, float scale) {
    if (B <= 0 || H <= 0 || Nq <= 0 || Nk <= 0 || D <= 0) return;
    float *dq = dq_, *dk = dk_, *dv = dv_;
    const float *dout = dout_, *q = q_, *k = k_, *v = v_, *out = out_;
    int qb = Nq < ATT_QBLOCK_BWD ? Nq : ATT_QBLOCK_BWD;
    int ntask = B * H, nt = iv2_cpu_threads(be);
    if (ntask < nt) nt = ntask;
    if ((double)B * H * Nq * Nk * D < 1e6) nt = 1;
#pragma omp parallel num_threads(nt)
    {
        float *P = malloc((size_t)qb * Nk * sizeof(float)), *dS = malloc((size_t)qb * Nk * sizeof(float));
        float *Di = malloc((size_t)qb * sizeof(float));
        if (!P || !dS || !Di) iv2_panic("cpu attention backward: out of memory for %d x %d scores", qb, Nk);
#pragma omp for schedule(dynamic, 1)
        for (int t = 0; t < ntask; t++) {
            int b = t / H, h = t % H;
            size_t kvoff = (size_t)b * Nk * kv_stride + (size_t)h * D;
            for (int q0 = 0; q0 < Nq; q0 += qb) {
                int nq = Nq - q0 < qb ? Nq - q0 : qb;
                size_t qoff = ((size_t)b * Nq + q0) * q_stride + (size_t)h * D;
                size_t ooff = ((size_t)b * Nq + q0) * o_stride + (size_t)h * D;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, Nk, D, scale, q + qoff, q_stride, k + kvoff,
                            kv_stride, 0.0f, P, Nk);
                for (int i = 0; i < nq; i++) {
                    float *p = P + (size_t)i * Nk;
                    if (lse) {
                        float l = lse[((size_t)b * H + h) * Nq + q0 + i];
#pragma omp simd
                        for (int j = 0; j < Nk; j++) p[j] = exp_fast(p[j] - l);
                    } else {
                        softmax_row(p, Nk);
                    }
                    const float *go = dout + ooff + (size_t)i * o_stride, *o = out + ooff + (size_t)i * o_stride;
                    float s = 0.0f;
                    for (int d = 0; d < D; d++) s += go[d] * o[d];
                    Di[i] = s;
                }
                if (dv)
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Nk, D, nq, 1.0f, P, Nk, dout + ooff, o_stride,
                                1.0f, dv + kvoff, kv_stride);
                if (!dq && !dk) continue;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, Nk, D, 1.0f, dout + ooff, o_stride, v + kvoff,
                            kv_stride, 0.0f, dS, Nk);
                for (int i = 0; i < nq; i++) {
                    float *ds = dS + (size_t)i * Nk;
                    const float *p = P + (size_t)i * Nk;
                    float di = Di[i];
#pragma omp simd
                    for (int j = 0; j < Nk; j++) ds[j] = p[j] * (ds[j] - di);
                }
                if (dq)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, D, Nk, scale, dS, Nk, k + kvoff,
                                kv_stride, 1.0f, dq + qoff, q_stride);
                if (dk)
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Nk, D, nq, scale, dS, Nk, q + qoff, q_stride,
                                1.0f, dk + kvoff, kv_stride);
            }
        }
        free(P);
        free(dS);
        free(Di);
    }
}
