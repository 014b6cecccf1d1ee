/* compute_cpu_attn.c: multi-head softmax attention on the CPU, forward and backward.
 *
 * Work is cut into (sample, head, block of query rows), a head's blocks consecutive; a thread
 * holds the scores of one block only (rows x Nk floats, e.g. 64 x 2048 = 512 KiB), never all
 * heads' N x N. The softmax is exact per row (max, exp, sum) since the whole row of one block
 * fits the scratch; the 1/sum is applied to the output rows after the value product, not to the
 * scores (one pass fewer). lse is kept for the backward, which recomputes the probabilities block
 * by block (flash-attention style).
 *
 * The forward (without probs_mean) on AVX-512 targets runs its own register tiles on K and V
 * packed once per head (see "forward without probs_mean" below); elsewhere, with probs_mean, and
 * in the backward, scores and value products are single-threaded OpenBLAS GEMMs that read q, k,
 * v in place through their strides (leading dimension = stride), so a fused qkv buffer needs no
 * copies. */
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

/* The tiles use the GNU C vector extension (gcc and clang; no intrinsics): a v16 is one AVX-512
 * register where the target has them, else the compiler splits it into AVX2, SSE or NEON ones,
 * so the code is portable and only its speed depends on the machine. */
typedef float v16 __attribute__((vector_size(64)));
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi" /* all are static inline: no ABI crosses this file */
#endif
/* keeps a loaded vector in a register: gcc otherwise folds the load into every FMA using it (24
 * loads per 24 FMAs in the value tile, which then waits on the load ports); a no-op elsewhere */
#if defined(__AVX512F__) && defined(__GNUC__)
#define ATT_IN_REGISTER(x) __asm__("" : "+v"(x))
#else
#define ATT_IN_REGISTER(x) ((void)0)
#endif
static inline v16 v16_load(const float *p) { v16 v; memcpy(&v, p, sizeof v); return v; }
/* stores and max are macros: a function with a vector argument draws a gcc ABI note on targets
 * without AVX */
#define v16_store(p, v) do { v16 v_ = (v); memcpy((p), &v_, sizeof v_); } while (0)
typedef int32_t v16i __attribute__((vector_size(64)));
typedef float v8 __attribute__((vector_size(32)));
static inline v8 v8_load(const float *p) { v8 v; memcpy(&v, p, sizeof v); return v; }
#define v8_store(p, v) do { v8 v_ = (v); memcpy((p), &v_, sizeof v_); } while (0)
/* *m = max(*m, b) lane-wise (a comparison gives lanes of all ones or zeros) */
static inline void v16_max_into(v16 *m, const v16 *b) {
    v16i gt = *m > *b;
    *m = (v16)(((v16i)*m & gt) | ((v16i)*b & ~gt));
}

/* in place: s[j] = exp(s[j] - max), *inv = 1 / sum_j s[j]; returns the log-sum-exp. The forward
 * applies inv to the rows of P V instead (one pass over the scores fewer). */
static float softmax_exp_row(float *s, int n, float mx, float *inv);
static float softmax_row_unnormalised(float *s, int n, float *inv) {
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int j = 0; j < n; j++) mx = s[j] > mx ? s[j] : mx;
    return softmax_exp_row(s, n, mx, inv);
}

/* exp_fast of 16 lanes x <= 0 (a score less the row maximum, so the upper clamp is moot): the
 * same operations in the same order (gcc: not contracted, as exp_fast), so the same values. Written out
 * because gcc vectorised the scalar one's clamps into masked operations, 40 instructions per 16
 * lanes. A NaN lane stays NaN (the comparison is false), as in exp_fast. */
static inline void v16_exp_nonpositive(v16 *xp) { /* in place, as v16_store */
    const v16 zero = {0}, lo = zero - 87.0f;
    v16 x = *xp;
    v16i below = x < lo;
    x = (v16)(((v16i)lo & below) | ((v16i)x & ~below));
    v16 n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    v16 r = x - n * 0.693359375f + n * 2.12194440e-4f;
    v16 y = zero + 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.0f;
    v16i bits = (__builtin_convertvector(n, v16i) + 127) << 23;
    *xp = y * (v16)bits;
}

/* the exp pass of softmax_row_unnormalised, mx being the row's maximum */
static float softmax_exp_row(float *s, int n, float mx, float *inv) {
    v16 acc = {0};
    int j = 0;
    for (; j + 16 <= n; j += 16) {
        v16 e = v16_load(s + j) - mx;
        v16_exp_nonpositive(&e);
        v16_store(s + j, e);
        acc += e;
    }
    float sum = 0.0f;
    for (int l = 0; l < 16; l++) sum += acc[l];
    for (; j < n; j++) {
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

/* ---------------------------------------------------------------------------------------------
 * forward without probs_mean: own register-tiled kernels on per-head packed K and V.
 *
 * OpenBLAS packs its operands again on every call: per block of 128 query rows that was K and V
 * of the head (read kv_stride apart from a fused qkv buffer, missing the caches and TLB) and the
 * scores, a quarter of the forward's time at 2048 tokens. Here each thread packs the K and V of a
 * head once (K transposed into panels of ATT_KP keys, V with rows padded to 16 floats) and the
 * tiles below read them in place. Per block of query rows: S = scale Q K^T into scratch, the same
 * exact row softmax as above (max, exp_fast, sum; lse), O = P V, O *= 1/sum.
 *
 * Built where the target has AVX-512 (IV2_ATT_TILED=1/0 forces it): the tiles' register blocking
 * (up to 24 accumulators + 6 operands of 16 floats) assumes its 32 vector registers. Elsewhere,
 * e.g. AVX2 with 16 registers of 8 floats, it would spill, so the forward stays on OpenBLAS. */
#ifndef IV2_ATT_TILED
#if defined(__AVX512F__)
#define IV2_ATT_TILED 1
#else
#define IV2_ATT_TILED 0
#endif
#endif
#if IV2_ATT_TILED

/* acc += p * v must be one fused multiply-add: gcc contracts none under -std=c11 (clang does by
 * default), which doubles the tiles' instruction count. Only the tiles; the softmax keeps
 * exp_fast's rounding. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")
#endif

#ifndef ATT_KP
#define ATT_KP 48 /* keys per packed K panel: 3 vectors wide (the last keys: panels of 16) */
#endif
#define ATT_QR 8   /* query rows per score tile (the last rows: one at a time) */
#define ATT_PR 4   /* query rows per value tile (the last rows: one at a time) */
#define ATT_KC 128 /* keys per value-product pass: V[KC, Dp] (48 KiB at D 88) stays in L2 */

/* per-thread scratch for the tiled forward */
typedef struct {
    float *Kp, *Vp, *Qp, *S, *Ob, *inv, *M;
    int b, h; /* head packed in Kp, Vp (-1: none) */
} att_tiles;

/* width of the K panel starting at key j0: ATT_KP while that many keys are left, then 16 */
static inline int att_panel(int Nk, int j0) { return Nk - j0 >= ATT_KP ? ATT_KP : 16; }
/* keys rounded up to whole panels */
static int att_keys_padded(int Nk) { return Nk / ATT_KP * ATT_KP + (Nk % ATT_KP + 15) / 16 * 16; }

#define ATT_PREFETCH 8 /* rows */
/* rows kv_stride (q_stride) apart are each on their own page, which the hardware prefetcher does
 * not cross: the packing loops ask for the row ATT_PREFETCH ahead (a hint only; gcc and clang) */
static inline void att_prefetch(const float *row, int n) {
#if defined(__GNUC__)
    for (int d = 0; d < n; d += 16) __builtin_prefetch(row + d);
#endif
}

/* Kp: the panel of keys [j0, j0+w) at Kp + j0 D holds K[j0 + j][d] at [d][j] (zero past Nk);
 * Vp[j][d] = V[j][d] (zero for d >= D) */
static void att_pack_kv(const att_args *a, att_tiles *t, int b, int h, int Nkp, int Dp) {
    const float *K = a->k + (size_t)b * a->Nk * a->kv_stride + (size_t)h * a->D;
    const float *V = a->v + (size_t)b * a->Nk * a->kv_stride + (size_t)h * a->D;
    for (int j = 0; j < ATT_PREFETCH && j < a->Nk; j++) {
        att_prefetch(K + (size_t)j * a->kv_stride, a->D);
        att_prefetch(V + (size_t)j * a->kv_stride, a->D);
    }
    for (int j0 = 0, w; j0 < Nkp; j0 += w) {
        w = att_panel(a->Nk, j0);
        float *kp = t->Kp + (size_t)j0 * a->D;
        for (int j = 0; j < w; j++) {
            if (j0 + j >= a->Nk) {
                for (int d = 0; d < a->D; d++) kp[(size_t)d * w + j] = 0.0f;
                continue;
            }
            if (j0 + j + ATT_PREFETCH < a->Nk) {
                att_prefetch(K + (size_t)(j0 + j + ATT_PREFETCH) * a->kv_stride, a->D);
                att_prefetch(V + (size_t)(j0 + j + ATT_PREFETCH) * a->kv_stride, a->D);
            }
            const float *kr = K + (size_t)(j0 + j) * a->kv_stride;
            for (int d = 0; d < a->D; d++) kp[(size_t)d * w + j] = kr[d];
            float *vp = t->Vp + (size_t)(j0 + j) * Dp;
            memcpy(vp, V + (size_t)(j0 + j) * a->kv_stride, (size_t)a->D * sizeof(float));
            for (int d = a->D; d < Dp; d++) vp[d] = 0.0f;
        }
    }
    t->b = b, t->h = h;
}

/* S[r][0..16 NV) = scale * Q[r] . Kpanel[:, 0..16 NV) for R rows of Q (D apart), the panel 16 NV
 * keys wide; with M, the row maxima so far (16 lanes a row) take these scores in, sparing the
 * softmax a pass over them */
static inline __attribute__((always_inline)) void att_score_tile(const float *Q, const float *Kpanel, int D,
                                                                 float scale, float *S, int lds, float *M,
                                                                 const int R, const int NV) {
    v16 acc[ATT_QR][ATT_KP / 16];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < NV; c++) acc[r][c] = (v16){0};
    for (int d = 0; d < D; d++) {
        v16 k[ATT_KP / 16];
        for (int c = 0; c < NV; c++) {
            k[c] = v16_load(Kpanel + (size_t)d * 16 * NV + 16 * c);
            ATT_IN_REGISTER(k[c]);
        }
        for (int r = 0; r < R; r++) {
            float q = Q[(size_t)r * D + d];
            for (int c = 0; c < NV; c++) acc[r][c] += q * k[c];
        }
    }
    for (int r = 0; r < R; r++) {
        v16 m = M ? v16_load(M + 16 * r) : (v16){0};
        for (int c = 0; c < NV; c++) {
            v16 sc = acc[r][c] * scale;
            v16_store(S + (size_t)r * lds + 16 * c, sc);
            v16_max_into(&m, &sc);
        }
        if (M) v16_store(M + 16 * r, m);
    }
}

/* rows [0, nq) of the scores against the panel of w keys */
static void att_score_panel(const float *Q, int nq, const float *Kpanel, int w, int D, float scale, float *S,
                            int lds, float *M) {
    int i = 0;
    for (; i + ATT_QR <= nq; i += ATT_QR) {
        const float *Qi = Q + (size_t)i * D;
        float *Si = S + (size_t)i * lds, *Mi = M ? M + (size_t)i * 16 : NULL;
        if (w == ATT_KP) att_score_tile(Qi, Kpanel, D, scale, Si, lds, Mi, ATT_QR, ATT_KP / 16);
        else att_score_tile(Qi, Kpanel, D, scale, Si, lds, Mi, ATT_QR, 1);
    }
    for (; i < nq; i++) {
        const float *Qi = Q + (size_t)i * D;
        float *Si = S + (size_t)i * lds, *Mi = M ? M + (size_t)i * 16 : NULL;
        if (w == ATT_KP) att_score_tile(Qi, Kpanel, D, scale, Si, lds, Mi, 1, ATT_KP / 16);
        else att_score_tile(Qi, Kpanel, D, scale, Si, lds, Mi, 1, 1);
    }
}

/* O[r][0..16 NV) (+)= sum_{j < nk} P[r][j] V[j][0..16 NV) for R <= ATT_PR rows; NV <= 6 vectors
 * (24 accumulators of the 32 AVX-512 registers), the last one 8 floats wide when HALF (D 88:
 * 5.5 vectors; half-width operations cost half on cores that split 512-bit ones) */
static inline __attribute__((always_inline)) void att_value_tile(const float *P, int ldp, const float *V, int ldv,
                                                                 int nk, float *O, int ldo, int accumulate,
                                                                 const int R, const int NV, const int HALF) {
    enum { NF_MAX = 6 };
    const int NF = NV - HALF; /* full vectors */
    v16 acc[ATT_PR][NF_MAX];
    v8 acch[ATT_PR];
    for (int r = 0; r < R; r++) {
        for (int c = 0; c < NF; c++) acc[r][c] = accumulate ? v16_load(O + (size_t)r * ldo + 16 * c) : (v16){0};
        if (HALF) acch[r] = accumulate ? v8_load(O + (size_t)r * ldo + 16 * NF) : (v8){0};
    }
    for (int j = 0; j < nk; j++) {
        v16 vv[NF_MAX];
        v8 vh = {0};
        for (int c = 0; c < NF; c++) {
            vv[c] = v16_load(V + (size_t)j * ldv + 16 * c);
            ATT_IN_REGISTER(vv[c]);
        }
        if (HALF) {
            vh = v8_load(V + (size_t)j * ldv + 16 * NF);
            ATT_IN_REGISTER(vh);
        }
        for (int r = 0; r < R; r++) {
            float p = P[(size_t)r * ldp + j];
            for (int c = 0; c < NF; c++) acc[r][c] += p * vv[c];
            if (HALF) acch[r] += p * vh;
        }
    }
    for (int r = 0; r < R; r++) {
        for (int c = 0; c < NF; c++) v16_store(O + (size_t)r * ldo + 16 * c, acc[r][c]);
        if (HALF) v8_store(O + (size_t)r * ldo + 16 * NF, acch[r]);
    }
}

#define ATT_VALUE_TILE(R, nv, half, ...)                                                                           \
    switch ((nv) * 2 + (half)) {                                                                                   \
    case 12: att_value_tile(__VA_ARGS__, R, 6, 0); break;                                                          \
    case 13: att_value_tile(__VA_ARGS__, R, 6, 1); break;                                                          \
    case 10: att_value_tile(__VA_ARGS__, R, 5, 0); break;                                                          \
    case 11: att_value_tile(__VA_ARGS__, R, 5, 1); break;                                                          \
    case 8: att_value_tile(__VA_ARGS__, R, 4, 0); break;                                                           \
    case 9: att_value_tile(__VA_ARGS__, R, 4, 1); break;                                                           \
    case 6: att_value_tile(__VA_ARGS__, R, 3, 0); break;                                                           \
    case 7: att_value_tile(__VA_ARGS__, R, 3, 1); break;                                                           \
    case 4: att_value_tile(__VA_ARGS__, R, 2, 0); break;                                                           \
    case 5: att_value_tile(__VA_ARGS__, R, 2, 1); break;                                                           \
    case 3: att_value_tile(__VA_ARGS__, R, 1, 1); break;                                                           \
    default: att_value_tile(__VA_ARGS__, R, 1, 0); break;                                                          \
    }

/* rows [0, nq) of O[:, 0..16 nv) (+)= P[:, 0..nk) V[0..nk, 0..16 nv) (the last vector 8 wide when half) */
static void att_value_rows(const float *P, int nq, int ldp, const float *V, int ldv, int nk, float *O, int ldo,
                           int accumulate, int nv, int half) {
    int i = 0;
    for (; i + ATT_PR <= nq; i += ATT_PR)
        ATT_VALUE_TILE(ATT_PR, nv, half, P + (size_t)i * ldp, ldp, V, ldv, nk, O + (size_t)i * ldo, ldo, accumulate)
    for (; i < nq; i++)
        ATT_VALUE_TILE(1, nv, half, P + (size_t)i * ldp, ldp, V, ldv, nk, O + (size_t)i * ldo, ldo, accumulate)
}

/* query rows [q0, q0+nq) of head h of sample b; Kp, Vp hold that head */
static void att_fwd_tiled(const att_args *a, att_tiles *t, float *out, float *lse, int H, int b, int h, int q0,
                          int nq, int Nkp, int Dp) {
    /* score rows 16 floats longer than the keys: rows a power of two apart share cache sets */
    int D = a->D, lds = Nkp + 16;
    const float *Q = a->q + ((size_t)b * a->Nq + q0) * a->q_stride + (size_t)h * D;
    for (int i = 0; i < nq; i++) {
        if (i + ATT_PREFETCH < nq) att_prefetch(Q + (size_t)(i + ATT_PREFETCH) * a->q_stride, D);
        memcpy(t->Qp + (size_t)i * D, Q + (size_t)i * a->q_stride, (size_t)D * sizeof(float));
    }
    /* scores: a K panel (D x 48 floats) stays in L1 across the query rows; panels wholly inside
     * the keys also keep the row maxima, the keys of a partial last one are taken in below */
    int jm = a->Nk; /* first key of a partial panel */
    for (int i = 0; i < nq * 16; i++) t->M[i] = -INFINITY;
    for (int j0 = 0, w; j0 < Nkp; j0 += w) {
        w = att_panel(a->Nk, j0);
        if (j0 + w > a->Nk) jm = j0;
        att_score_panel(t->Qp, nq, t->Kp + (size_t)j0 * D, w, D, a->scale, t->S + j0, lds,
                        j0 + w <= a->Nk ? t->M : NULL);
    }
    for (int i = 0; i < nq; i++) {
        float *srow = t->S + (size_t)i * lds, mx = -INFINITY;
        for (int l = 0; l < 16; l++) mx = t->M[(size_t)i * 16 + l] > mx ? t->M[(size_t)i * 16 + l] : mx;
        for (int j = jm; j < a->Nk; j++) mx = srow[j] > mx ? srow[j] : mx;
        float l = softmax_exp_row(srow, a->Nk, mx, &t->inv[i]);
        if (lse) lse[((size_t)b * H + h) * a->Nq + q0 + i] = l;
    }
    /* value product over key chunks, the columns in passes of at most 6 vectors of even width
     * (D 88: one pass of 5 and a half vectors; D 128: two of 4) */
    int nvec = Dp / 16, npass = (nvec + 5) / 6, half = D % 16 && D % 16 <= 8;
    for (int c = 0, v0 = 0; c < npass; c++) {
        int nv = (nvec - v0) / (npass - c);
        for (int j0 = 0; j0 < a->Nk; j0 += ATT_KC) {
            int nk = a->Nk - j0 < ATT_KC ? a->Nk - j0 : ATT_KC;
            att_value_rows(t->S + j0, nq, lds, t->Vp + (size_t)j0 * Dp + 16 * v0, Dp, nk, t->Ob + 16 * v0, Dp,
                           j0 > 0, nv, half && c == npass - 1);
        }
        v0 += nv;
    }
    float *O = out + ((size_t)b * a->Nq + q0) * a->o_stride + (size_t)h * D;
    for (int i = 0; i < nq; i++)
        for (int d = 0; d < D; d++) O[(size_t)i * a->o_stride + d] = t->Ob[(size_t)i * Dp + d] * t->inv[i];
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

static void *att_alloc(size_t floats) {
    void *p = NULL;
    if (posix_memalign(&p, 64, (floats ? floats : 1) * sizeof(float)) != 0) return NULL;
    return p;
}

/* forward without probs_mean: tasks (sample, head, query block), a head's blocks consecutive;
 * when there are enough heads a thread takes all blocks of one (packs each head once) */
static void att_forward_tiled(const att_args *a, int nt, float *out, float *lse, int B, int H) {
    int Nkp = att_keys_padded(a->Nk), Dp = (a->D + 15) / 16 * 16;
    /* query rows per block: scores of a block within 512 KiB (L2), 8 to 64 rows, blocks of
     * about equal size (a multiple of ATT_QR) */
    int qb = (131072 / Nkp) / ATT_QR * ATT_QR;
    qb = qb < ATT_QR ? ATT_QR : qb > 64 ? 64 : qb;
    int nqb = (a->Nq + qb - 1) / qb;
    qb = ((a->Nq + nqb - 1) / nqb + ATT_QR - 1) / ATT_QR * ATT_QR;
    nqb = (a->Nq + qb - 1) / qb;
    long ntask = (long)B * H * nqb;
    int chunk = (long)B * H >= 4L * nt ? nqb : 1;
#pragma omp parallel num_threads(nt)
    {
        att_tiles t = {att_alloc((size_t)Nkp * a->D), att_alloc((size_t)a->Nk * Dp), att_alloc((size_t)qb * a->D),
                       att_alloc((size_t)qb * (Nkp + 16)), att_alloc((size_t)qb * Dp), att_alloc(qb),
                       att_alloc((size_t)qb * 16), -1, -1};
        if (!t.Kp || !t.Vp || !t.Qp || !t.S || !t.Ob || !t.inv || !t.M)
            iv2_panic("cpu attention: out of memory for %d keys x %d dims", a->Nk, a->D);
#pragma omp for schedule(dynamic, chunk)
        for (long k = 0; k < ntask; k++) {
            int bh = (int)(k / nqb), b = bh / H, h = bh % H, q0 = (int)(k % nqb) * qb;
            if (t.b != b || t.h != h) att_pack_kv(a, &t, b, h, Nkp, Dp);
            att_fwd_tiled(a, &t, out, lse, H, b, h, q0, a->Nq - q0 < qb ? a->Nq - q0 : qb, Nkp, Dp);
        }
        free(t.Kp), free(t.Vp), free(t.Qp), free(t.S), free(t.Ob), free(t.inv), free(t.M);
    }
}
#endif /* IV2_ATT_TILED */

/* one head h of sample b, query rows [q0, q0+nq), with OpenBLAS: unnormalised probabilities left
 * in S [nq, Nk], row i of the probabilities being S[i,:] * inv[i] (the output rows are scaled by
 * inv instead). Used with probs_mean (pooling: one query row, so packing would not pay) and
 * where the tiles are not built. */
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
#if IV2_ATT_TILED
    if (!probs_mean) {
        att_forward_tiled(&a, nt, out, lse, B, H);
        return;
    }
#endif
#pragma omp parallel num_threads(nt)
    {
        float *S = malloc((size_t)qb * Nk * sizeof(float)), inv[ATT_QBLOCK];
        if (!S) iv2_panic("cpu attention: out of memory for %d x %d scores", qb, Nk);
        /* without probs_mean, a head's blocks are consecutive tasks, so the threads share its K, V
         * while they are cached (head-minor order made OpenBLAS pack them from memory each time) */
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
                int bh = (int)(t / nqb), b = bh / H, h = bh % H, q0 = (int)(t % nqb) * qb;
                att_fwd_block(&a, out, lse, H, b, h, q0, Nq - q0 < qb ? Nq - q0 : qb, S, inv);
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
                                int Nq, int Nk, int D, int q_stride, int kv_stride, int o_stride, float scale,
                                int acc) {
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
                /* dq is written once per query block; dk and dv add up over the blocks */
                float bq = acc ? 1.0f : 0.0f, bkv = acc || q0 ? 1.0f : 0.0f;
                if (dv)
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Nk, D, nq, 1.0f, P, Nk, dout + ooff, o_stride,
                                bkv, dv + kvoff, kv_stride);
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
                                kv_stride, bq, dq + qoff, q_stride);
                if (dk)
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Nk, D, nq, scale, dS, Nk, q + qoff, q_stride,
                                bkv, dk + kvoff, kv_stride);
            }
        }
        free(P);
        free(dS);
        free(Di);
    }
}
