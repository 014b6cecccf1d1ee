/* test_cuda_ops: every op of the CUDA backend against the CPU backend (the oracle) on the same
 * random inputs. Inputs are rounded to bf16 first, so both backends see identical values and
 * the differences come from bf16 storage of results and the order of fp32 sums.
 * Tolerances (|got - want| <= atol + rtol |want|), per op family:
 *   elementwise, norms, gathers, patchify, losses: rtol 1e-2 (two bf16 roundings), atol 1e-2
 *   norm statistics (f32 mean, rstd, L2 norm): rtol 1e-4; the f32 AdamW state: rtol 1e-4
 *   GEMMs: rtol 2e-2, atol 2e-2 * sqrt(K)/16 (sum of K bf16 products, fp32 accumulate)
 *   attention: rtol 2e-2, atol 2e-2 (P rounded to bf16 before P @ V, as flash kernels do)
 *   accumulated gradients (+= into random bf16 values): rtol 2e-2, atol 3e-2
 * Input gradients written (IV2_SET) start as NaN on the GPU and are compared with the CPU adding
 * onto zeros: a kernel that reads what it should only write fails with NaN.
 * Exit 77 when no CUDA device is visible. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "compute.h"
#include "dtype.h"
#include "err.h"
#include "testutil.h"

static iv2_backend *G, *C;  /* gpu, cpu */
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float urand(void) { /* [-1, 1) */
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / 8388608.0)) - 1.f;
}

/* one tensor on both backends plus its host values */
typedef struct { void *g, *c; float *h; size_t n; } pair;

static pair mk(size_t n, float scale) {
    pair p = {G->alloc(G, n * G->esize), C->alloc(C, n * C->esize), malloc(n * sizeof(float) + 4), n};
    for (size_t i = 0; i < n; i++) p.h[i] = iv2_bf16_to_f32(iv2_f32_to_bf16(urand() * scale));
    G->upload(G, p.g, p.h, n);
    C->upload(C, p.c, p.h, n);
    return p;
}
/* f32 buffers (rstd, lse, losses): raw bytes on both */
static pair mkf(size_t n) {
    pair p = {G->alloc(G, n * 4), C->alloc(C, n * 4), calloc(n + 1, sizeof(float)), n};
    return p;
}
/* fresh identical values on both backends: ops are compared one at a time, never chained
 * (a chain compounds the GPU's bf16 roundings against the CPU's fp32 intermediates) */
static void reset(pair *p, float scale) {
    for (size_t i = 0; i < p->n; i++) p->h[i] = iv2_bf16_to_f32(iv2_f32_to_bf16(urand() * scale));
    G->upload(G, p->g, p->h, p->n);
    C->upload(C, p->c, p->h, p->n);
}
/* before an IV2_SET: NaN on the GPU, zeros on the CPU (which then adds, IV2_ADD) */
static void poison(pair *p) {
    for (size_t i = 0; i < p->n; i++) p->h[i] = NAN;
    G->upload(G, p->g, p->h, p->n);
    C->memset0(C, p->c, p->n * C->esize);
}
static void drop(pair *p) { G->free(G, p->g); C->free(C, p->c); free(p->h); memset(p, 0, sizeof *p); }

static int cmp(const char *what, pair p, float rtol, float atol) {
    float *a = malloc(p.n * sizeof(float) + 4), *b = malloc(p.n * sizeof(float) + 4);
    G->download(G, a, p.g, p.n);
    C->download(C, b, p.c, p.n);
    int ok = t_allclose(what, a, b, p.n, rtol, atol);
    free(a); free(b);
    return ok;
}
static int cmpf(const char *what, pair p, float rtol, float atol) {
    float *a = malloc(p.n * sizeof(float) + 4), *b = malloc(p.n * sizeof(float) + 4);
    G->download_raw(G, a, p.g, p.n * 4);
    C->download_raw(C, b, p.c, p.n * 4);
    int ok = t_allclose(what, a, b, p.n, rtol, atol);
    free(a); free(b);
    return ok;
}

static void test_matmul(int M, int K, int N, int bias) {
    char w[96];
    pair x = mk((size_t)M * K, 1), wt = mk((size_t)N * K, 0.2f), b = mk(N, 1), o = mk((size_t)M * N, 1);
    G->matmul(G, o.g, x.g, wt.g, bias ? b.g : NULL, M, K, N);
    C->matmul(C, o.c, x.c, wt.c, bias ? b.c : NULL, M, K, N);
    float at = 2e-2f * sqrtf((float)K) / 16.f * 2.f;
    snprintf(w, sizeof w, "matmul %dx%dx%d bias %d", M, K, N, bias);
    cmp(w, o, 2e-2f, at);
    /* backward accumulates into random gradients */
    pair dout = mk((size_t)M * N, 1), dx = mk((size_t)M * K, 1), dw = mk((size_t)N * K, 1), db = mk(N, 1);
    G->matmul_backward(G, dx.g, dw.g, db.g, dout.g, x.g, wt.g, M, K, N, IV2_ADD);
    C->matmul_backward(C, dx.c, dw.c, db.c, dout.c, x.c, wt.c, M, K, N, IV2_ADD);
    snprintf(w, sizeof w, "matmul_backward dinp %dx%dx%d", M, K, N);
    cmp(w, dx, 2e-2f, at + 3e-2f);
    snprintf(w, sizeof w, "matmul_backward dw %dx%dx%d", M, K, N);
    cmp(w, dw, 2e-2f, 2e-2f * sqrtf((float)M) / 8.f + 3e-2f);
    snprintf(w, sizeof w, "matmul_backward dbias %dx%dx%d", M, K, N);
    cmp(w, db, 2e-2f, 2e-2f * sqrtf((float)M) / 8.f + 3e-2f);
    poison(&dx);
    G->matmul_backward(G, dx.g, NULL, NULL, dout.g, x.g, wt.g, M, K, N, IV2_SET);
    C->matmul_backward(C, dx.c, NULL, NULL, dout.c, x.c, wt.c, M, K, N, IV2_ADD);
    snprintf(w, sizeof w, "matmul_backward dinp SET %dx%dx%d", M, K, N);
    cmp(w, dx, 2e-2f, at);
    drop(&x); drop(&wt); drop(&b); drop(&o); drop(&dout); drop(&dx); drop(&dw); drop(&db);
}

/* q, k and v in one launch (matmul_batch_w, its weight gradients): three products of one input */
static void test_matmul_batch_w(int M, int K, int N) {
    char w[96];
    pair x = mk((size_t)M * K, 1), wt = mk((size_t)3 * N * K, 0.2f), o = mk((size_t)3 * M * N, 1);
    G->matmul_batch_w(G, o.g, x.g, wt.g, M, K, N, 3, (size_t)N * K, (size_t)M * N);
    C->matmul_batch_w(C, o.c, x.c, wt.c, M, K, N, 3, (size_t)N * K, (size_t)M * N);
    float at = 2e-2f * sqrtf((float)K) / 16.f * 2.f;
    snprintf(w, sizeof w, "matmul_batch_w 3 x %dx%dx%d", M, K, N); cmp(w, o, 2e-2f, at);
    /* a fresh dout, the same on both sides: o differs by the forward's bf16 roundings (o ~ 7.5,
     * an ulp 0.03), and summed over M rows that alone put dw past a tolerance meant for dout ~ 1 */
    pair dout = mk((size_t)3 * M * N, 1), dw = mk((size_t)3 * N * K, 1);   /* dw: added to */
    G->matmul_batch_w_backward(G, dw.g, dout.g, x.g, M, K, N, 3, (size_t)N * K, (size_t)M * N);
    C->matmul_batch_w_backward(C, dw.c, dout.c, x.c, M, K, N, 3, (size_t)N * K, (size_t)M * N);
    snprintf(w, sizeof w, "matmul_batch_w_backward 3 x %dx%dx%d", M, K, N);
    cmp(w, dw, 2e-2f, 2e-2f * sqrtf((float)M) / 8.f + 3e-2f);
    drop(&x); drop(&wt); drop(&o); drop(&dout); drop(&dw);
}

/* the MLP's fused tanh GELU (matmul_gelu, matmul_backward_gelu; CUDA only) against the CPU's
 * matmul + gelu and matmul_backward + gelu_backward: fc1 [M,K] -> [M,H], gelu, fc2 -> [M,N] */
static void test_matmul_gelu(int M, int K, int H, int N) {
    if (!G->matmul_gelu || !G->matmul_backward_gelu) { printf("matmul_gelu: not installed (IV2_GELU_FUSION=0)\n"); return; }
    char w[96];
    pair x = mk((size_t)M * K, 1), w1 = mk((size_t)H * K, 0.2f), b1 = mk(H, 1), pre = mk((size_t)M * H, 1);
    pair g = mk((size_t)M * H, 1);
    G->matmul_gelu(G, g.g, pre.g, x.g, w1.g, b1.g, M, K, H);
    C->matmul(C, pre.c, x.c, w1.c, b1.c, M, K, H);
    C->gelu(C, g.c, pre.c, (size_t)M * H, IV2_GELU_TANH);
    float at = 2e-2f * sqrtf((float)K) / 16.f * 2.f;
    snprintf(w, sizeof w, "matmul_gelu pre %dx%dx%d", M, K, H); cmp(w, pre, 2e-2f, at);
    snprintf(w, sizeof w, "matmul_gelu out %dx%dx%d", M, K, H); cmp(w, g, 2e-2f, at);
    /* in place, as the inference arena calls it (g = f1): out == pre */
    pair ip = mk((size_t)M * H, 1);
    G->matmul_gelu(G, ip.g, ip.g, x.g, w1.g, b1.g, M, K, H);
    C->copy(C, ip.c, g.c, (size_t)M * H * C->esize);
    snprintf(w, sizeof w, "matmul_gelu out == pre %dx%dx%d", M, K, H); cmp(w, ip, 2e-2f, at);
    drop(&ip);
    /* backward of fc2 (w2 [N,H]) into the GELU: the GPU writes dpre, the CPU accumulates into zeros */
    pair w2 = mk((size_t)N * H, 0.2f), dout = mk((size_t)M * N, 1), dpre = mk((size_t)M * H, 1);
    pair dw = mk((size_t)N * H, 1), db = mk(N, 1), dg = mk((size_t)M * H, 1);
    G->matmul_backward_gelu(G, dpre.g, dw.g, db.g, dout.g, g.g, w2.g, pre.g, M, H, N);
    C->memset0(C, dg.c, (size_t)M * H * C->esize);
    C->matmul_backward(C, dg.c, dw.c, db.c, dout.c, g.c, w2.c, M, H, N, IV2_ADD);
    C->memset0(C, dpre.c, (size_t)M * H * C->esize);
    C->gelu_backward(C, dpre.c, dg.c, pre.c, (size_t)M * H, IV2_GELU_TANH, IV2_ADD);
    float ah = 2e-2f * sqrtf((float)H) / 16.f * 2.f;
    snprintf(w, sizeof w, "matmul_backward_gelu dpre %dx%dx%d", M, H, N); cmp(w, dpre, 2e-2f, ah + 3e-2f);
    snprintf(w, sizeof w, "matmul_backward_gelu dw %dx%dx%d", M, H, N); cmp(w, dw, 2e-2f, 2e-2f * sqrtf((float)M) / 8.f + 3e-2f);
    snprintf(w, sizeof w, "matmul_backward_gelu dbias %dx%dx%d", M, H, N); cmp(w, db, 2e-2f, 2e-2f * sqrtf((float)M) / 8.f + 3e-2f);
    drop(&x); drop(&w1); drop(&b1); drop(&pre); drop(&g); drop(&w2); drop(&dout); drop(&dpre); drop(&dw); drop(&db);
    drop(&dg);
}

static void test_norms(int M, int Cc) {
    char w[96];
    pair x = mk((size_t)M * Cc, 2), wt = mk(Cc, 1), b = mk(Cc, 1), o = mk((size_t)M * Cc, 1);
    pair mean = mkf(M), rstd = mkf(M);
    G->rmsnorm(G, o.g, rstd.g, x.g, wt.g, M, Cc, 1e-6f);
    C->rmsnorm(C, o.c, rstd.c, x.c, wt.c, M, Cc, 1e-6f);
    snprintf(w, sizeof w, "rmsnorm %dx%d", M, Cc); cmp(w, o, 1e-2f, 1e-2f);
    snprintf(w, sizeof w, "rmsnorm rstd %dx%d", M, Cc); cmpf(w, rstd, 1e-4f, 1e-5f);
    pair dout = mk((size_t)M * Cc, 1), dx = mk((size_t)M * Cc, 1), dw = mk(Cc, 1), db = mk(Cc, 1);
    G->rmsnorm_backward(G, dx.g, dw.g, dout.g, x.g, wt.g, rstd.g, M, Cc, IV2_ADD);
    C->rmsnorm_backward(C, dx.c, dw.c, dout.c, x.c, wt.c, rstd.c, M, Cc, IV2_ADD);
    snprintf(w, sizeof w, "rmsnorm_backward dinp %dx%d", M, Cc); cmp(w, dx, 2e-2f, 3e-2f);
    snprintf(w, sizeof w, "rmsnorm_backward dw %dx%d", M, Cc); cmp(w, dw, 2e-2f, 3e-2f * sqrtf((float)M) / 4);
    poison(&dx);
    G->rmsnorm_backward(G, dx.g, NULL, dout.g, x.g, wt.g, rstd.g, M, Cc, IV2_SET);
    C->rmsnorm_backward(C, dx.c, NULL, dout.c, x.c, wt.c, rstd.c, M, Cc, IV2_ADD);
    snprintf(w, sizeof w, "rmsnorm_backward dinp SET %dx%d", M, Cc); cmp(w, dx, 2e-2f, 2e-2f);

    G->layernorm(G, o.g, mean.g, rstd.g, x.g, wt.g, b.g, M, Cc, 1e-6f);
    C->layernorm(C, o.c, mean.c, rstd.c, x.c, wt.c, b.c, M, Cc, 1e-6f);
    snprintf(w, sizeof w, "layernorm %dx%d", M, Cc); cmp(w, o, 1e-2f, 1e-2f);
    snprintf(w, sizeof w, "layernorm mean %dx%d", M, Cc); cmpf(w, mean, 1e-3f, 1e-4f);
    snprintf(w, sizeof w, "layernorm rstd %dx%d", M, Cc); cmpf(w, rstd, 1e-4f, 1e-5f);
    reset(&dx, 1); reset(&dw, 1); reset(&db, 1);
    G->layernorm_backward(G, dx.g, dw.g, db.g, dout.g, x.g, wt.g, mean.g, rstd.g, M, Cc, IV2_ADD);
    C->layernorm_backward(C, dx.c, dw.c, db.c, dout.c, x.c, wt.c, mean.c, rstd.c, M, Cc, IV2_ADD);
    snprintf(w, sizeof w, "layernorm_backward dinp %dx%d", M, Cc); cmp(w, dx, 2e-2f, 3e-2f);
    snprintf(w, sizeof w, "layernorm_backward dw %dx%d", M, Cc); cmp(w, dw, 2e-2f, 3e-2f * sqrtf((float)M) / 4);
    snprintf(w, sizeof w, "layernorm_backward db %dx%d", M, Cc); cmp(w, db, 2e-2f, 3e-2f * sqrtf((float)M) / 4);
    poison(&dx);
    G->layernorm_backward(G, dx.g, dw.g, db.g, dout.g, x.g, wt.g, mean.g, rstd.g, M, Cc, IV2_SET);
    C->layernorm_backward(C, dx.c, dw.c, db.c, dout.c, x.c, wt.c, mean.c, rstd.c, M, Cc, IV2_ADD);
    snprintf(w, sizeof w, "layernorm_backward dinp SET %dx%d", M, Cc); cmp(w, dx, 2e-2f, 2e-2f);
    /* LayerNorm without bias and weight-free RMSNorm paths of the pooling head are the same kernels */

    G->l2norm(G, o.g, rstd.g, x.g, M, Cc);
    C->l2norm(C, o.c, rstd.c, x.c, M, Cc);
    snprintf(w, sizeof w, "l2norm %dx%d", M, Cc); cmp(w, o, 1e-2f, 1e-3f);
    snprintf(w, sizeof w, "l2norm norm %dx%d", M, Cc); cmpf(w, rstd, 1e-4f, 1e-5f);
    reset(&dx, 1);
    G->l2norm_backward(G, dx.g, dout.g, o.g, rstd.g, M, Cc);
    C->l2norm_backward(C, dx.c, dout.c, o.c, rstd.c, M, Cc);
    snprintf(w, sizeof w, "l2norm_backward %dx%d", M, Cc); cmp(w, dx, 2e-2f, 3e-2f);

    /* the heads' loss (l2norm, cosine loss, its gradient in one): unit targets (l2norm of dout),
     * from x; the gradient written over NaN */
    pair tg = mk((size_t)M * Cc, 1), loss = mkf(M);
    G->l2norm(G, tg.g, NULL, dout.g, M, Cc);
    C->l2norm(C, tg.c, NULL, dout.c, M, Cc);
    poison(&dx);
    G->l2_cos_loss(G, loss.g, dx.g, x.g, tg.g, M, Cc, 0.5f);
    C->l2_cos_loss(C, loss.c, dx.c, x.c, tg.c, M, Cc, 0.5f);
    snprintf(w, sizeof w, "l2_cos_loss %dx%d", M, Cc); cmpf(w, loss, 1e-2f, 2e-2f);
    snprintf(w, sizeof w, "l2_cos_loss dinp %dx%d", M, Cc); cmp(w, dx, 2e-2f, 2e-5f);   /* |dinp| ~ 1e-3 here */
    drop(&x); drop(&wt); drop(&b); drop(&o); drop(&mean); drop(&rstd); drop(&dout); drop(&dx); drop(&dw); drop(&db);
    drop(&tg); drop(&loss);
}

/* residual_norm: x_out = x_in + s gamma y, out = norm(x_out), into a separate x_out and in place */
static void test_residual_norm(int B, int N, int Cc) {
    char w[128];
    size_t n = (size_t)B * N * Cc;
    float s[3] = {1.25f, 0.f, 0.8f};
    pair x = mk(n, 2), y = mk(n, 1), gam = mk(Cc, 0.5f), wt = mk(Cc, 1), b = mk(Cc, 1), xo = mk(n, 1), o = mk(n, 1);
    pair mean = mkf((size_t)B * N), rstd = mkf((size_t)B * N);
    for (int ln = 0; ln < 2; ln++)
        for (int in_place = 0; in_place < 2; in_place++) {
            reset(&x, 2);
            void *xg = in_place ? x.g : xo.g, *xc = in_place ? x.c : xo.c;
            G->residual_norm(G, xg, o.g, mean.g, rstd.g, x.g, y.g, gam.g, s, wt.g, b.g, B, N, Cc, 1e-6f, ln);
            C->residual_norm(C, xc, o.c, mean.c, rstd.c, x.c, y.c, gam.c, s, wt.c, b.c, B, N, Cc, 1e-6f, ln);
            const char *what = ln ? "LN" : "RMS", *ip = in_place ? " in place" : "";
            snprintf(w, sizeof w, "residual_norm %s %dx%dx%d%s x_out", what, B, N, Cc, ip);
            cmp(w, in_place ? x : xo, 1e-2f, 1e-2f);
            snprintf(w, sizeof w, "residual_norm %s %dx%dx%d%s out", what, B, N, Cc, ip);
            cmp(w, o, 2e-2f, 2e-2f);
            snprintf(w, sizeof w, "residual_norm %s %dx%dx%d%s rstd", what, B, N, Cc, ip);
            cmpf(w, rstd, 1e-2f, 1e-4f);   /* of the bf16 x_out on the GPU, the f32 one on the CPU */
            if (ln) {
                snprintf(w, sizeof w, "residual_norm %s %dx%dx%d%s mean", what, B, N, Cc, ip);
                cmpf(w, mean, 1e-2f, 1e-2f);
            }
        }
    drop(&x); drop(&y); drop(&gam); drop(&wt); drop(&b); drop(&xo); drop(&o); drop(&mean); drop(&rstd);
}

/* rmsnorm_residual_backward: dx += rms_bwd(dout) (adds), dy = s gamma dx written over NaN, dw and
 * dgamma added: one kernel on the GPU (RMSNorm up to 1536 wide), the two ops on the CPU */
static void test_rms_residual_backward(int B, int N, int Cc) {
    char w[128];
    size_t n = (size_t)B * N * Cc;
    int M = B * N;
    float s[3] = {1.25f, 0.f, 0.8f};
    pair x = mk(n, 2), wt = mk(Cc, 1), o = mk(n, 1), rstd = mkf(M), dout = mk(n, 1), dx = mk(n, 1), dw = mk(Cc, 1);
    pair y = mk(n, 1), gam = mk(Cc, 0.5f), dy = mk(n, 1), dgam = mk(Cc, 1);
    G->rmsnorm(G, o.g, rstd.g, x.g, wt.g, M, Cc, 1e-6f);
    C->rmsnorm(C, o.c, rstd.c, x.c, wt.c, M, Cc, 1e-6f);
    poison(&dy);
    G->rmsnorm_residual_backward(G, dx.g, dw.g, dout.g, x.g, wt.g, rstd.g, dy.g, dgam.g, y.g, gam.g, s, B, N, Cc);
    C->rmsnorm_residual_backward(C, dx.c, dw.c, dout.c, x.c, wt.c, rstd.c, dy.c, dgam.c, y.c, gam.c, s, B, N, Cc);
    snprintf(w, sizeof w, "rmsnorm_residual_backward %dx%dx%d dinp", B, N, Cc); cmp(w, dx, 2e-2f, 3e-2f);
    snprintf(w, sizeof w, "rmsnorm_residual_backward %dx%dx%d dy (SET)", B, N, Cc); cmp(w, dy, 2e-2f, 3e-2f);
    snprintf(w, sizeof w, "rmsnorm_residual_backward %dx%dx%d dw", B, N, Cc); cmp(w, dw, 2e-2f, 3e-2f * sqrtf((float)M) / 4);
    snprintf(w, sizeof w, "rmsnorm_residual_backward %dx%dx%d dgamma", B, N, Cc); cmp(w, dgam, 2e-2f, 0.3f);
    drop(&x); drop(&wt); drop(&o); drop(&rstd); drop(&dout); drop(&dx); drop(&dw); drop(&y); drop(&gam); drop(&dy);
    drop(&dgam);
}

/* attention on a fused qkv buffer [B, N, 3*H*D] (or separate q for Nq != Nk) */
static void test_attention(int B, int H, int Nq, int Nk, int D, int fused, int probs) {
    char w[128];
    int Cc = H * D;
    float scale = 1.f / sqrtf((float)D);
    pair qkv = mk((size_t)B * Nk * 3 * Cc, 2), qs = mk((size_t)B * Nq * Cc, 2);
    pair o = mk((size_t)B * Nq * Cc, 1), lse = mkf((size_t)B * H * Nq), pm = mkf((size_t)B * Nq * Nk);
    const void *qg = fused ? qkv.g : qs.g, *qc = fused ? qkv.c : qs.c;
    int qstr = fused ? 3 * Cc : Cc;
    void *kg = IV2_AT(G, qkv.g, Cc), *vg = IV2_AT(G, qkv.g, 2 * Cc);
    void *kc = IV2_AT(C, qkv.c, Cc), *vc = IV2_AT(C, qkv.c, 2 * Cc);
    G->attention(G, o.g, lse.g, probs ? (float *)pm.g : NULL, qg, kg, vg, B, H, Nq, Nk, D, qstr, 3 * Cc, Cc, scale);
    C->attention(C, o.c, lse.c, probs ? (float *)pm.c : NULL, qc, kc, vc, B, H, Nq, Nk, D, qstr, 3 * Cc, Cc, scale);
    snprintf(w, sizeof w, "attention B%d H%d Nq%d Nk%d D%d", B, H, Nq, Nk, D);
    cmp(w, o, 2e-2f, 2e-2f);
    snprintf(w, sizeof w, "attention lse B%d H%d Nq%d Nk%d D%d", B, H, Nq, Nk, D);
    cmpf(w, lse, 1e-3f, 2e-3f);
    if (probs) {
        snprintf(w, sizeof w, "attention probs_mean B%d H%d Nq%d Nk%d D%d", B, H, Nq, Nk, D);
        cmpf(w, pm, 2e-2f, 1e-4f);
    }
    if (D <= 256) {
        pair dout = mk((size_t)B * Nq * Cc, 1), dqkv = mk((size_t)B * Nk * 3 * Cc, 1), dq = mk((size_t)B * Nq * Cc, 1);
        void *dqg = fused ? dqkv.g : dq.g, *dqc = fused ? dqkv.c : dq.c;
        /* added onto the random gradients, then written (IV2_SET) over NaN: every slot of the fused
         * buffer; k and v of dqkv and q apart when not fused (dqkv's q slot is nobody's: the same
         * values on both) */
        for (int set = 0; set < 2; set++) {
            if (set) {
                poison(&dqkv);
                poison(&dq);
                if (!fused) {
                    reset(&dqkv, 1);
                    for (size_t r = 0; r < (size_t)B * Nk; r++)
                        for (int c = Cc; c < 3 * Cc; c++) dqkv.h[r * 3 * Cc + c] = NAN;
                    G->upload(G, dqkv.g, dqkv.h, dqkv.n);
                    for (size_t r = 0; r < (size_t)B * Nk; r++)
                        for (int c = Cc; c < 3 * Cc; c++) dqkv.h[r * 3 * Cc + c] = 0.f;
                    C->upload(C, dqkv.c, dqkv.h, dqkv.n);
                }
            }
            G->attention_backward(G, dqg, IV2_AT(G, dqkv.g, Cc), IV2_AT(G, dqkv.g, 2 * Cc), dout.g, qg, kg, vg, o.g,
                                  lse.g, B, H, Nq, Nk, D, qstr, 3 * Cc, Cc, scale, set ? IV2_SET : IV2_ADD);
            C->attention_backward(C, dqc, IV2_AT(C, dqkv.c, Cc), IV2_AT(C, dqkv.c, 2 * Cc), dout.c, qc, kc, vc, o.c,
                                  lse.c, B, H, Nq, Nk, D, qstr, 3 * Cc, Cc, scale, IV2_ADD);
            const char *m = set ? " SET" : "";
            snprintf(w, sizeof w, "attention_backward dqkv%s B%d H%d Nq%d Nk%d D%d", m, B, H, Nq, Nk, D);
            cmp(w, dqkv, 3e-2f, 5e-2f);
            if (!fused) {
                snprintf(w, sizeof w, "attention_backward dq%s B%d H%d Nq%d Nk%d D%d", m, B, H, Nq, Nk, D);
                cmp(w, dq, 3e-2f, 5e-2f);
            }
        }
        drop(&dout); drop(&dqkv); drop(&dq);
    }
    drop(&qkv); drop(&qs); drop(&o); drop(&lse); drop(&pm);
}

/* Cc % 8 == 0: the 16-byte-vector kernels (IV2_VEC_BWD=0 forces the scalar ones); else the scalar ones */
static void test_elementwise(int B, int N, int Cc) {
    size_t n = (size_t)B * N * Cc;
    pair x = mk(n, 3), y = mk(n, 1), o = mk(n, 1), dx = mk(n, 1), dout = mk(n, 1);
    for (int kind = 0; kind < 2; kind++) {
        G->gelu(G, o.g, x.g, n, kind);
        C->gelu(C, o.c, x.c, n, kind);
        cmp(kind ? "gelu tanh" : "gelu erf", o, 1e-2f, 1e-2f);
        reset(&dx, 1);
        G->gelu_backward(G, dx.g, dout.g, x.g, n, kind, IV2_ADD);
        C->gelu_backward(C, dx.c, dout.c, x.c, n, kind, IV2_ADD);
        cmp(kind ? "gelu_backward tanh" : "gelu_backward erf", dx, 2e-2f, 2e-2f);
        poison(&dx);
        G->gelu_backward(G, dx.g, dout.g, x.g, n, kind, IV2_SET);
        C->gelu_backward(C, dx.c, dout.c, x.c, n, kind, IV2_ADD);
        cmp(kind ? "gelu_backward tanh SET" : "gelu_backward erf SET", dx, 2e-2f, 2e-2f);
    }
    /* residual with gamma and drop-path scales, then without either */
    float s[3] = {0.f, 1.25f, 1.25f};
    pair gam = mk(Cc, 0.5f), dgam = mk(Cc, 1);
    reset(&o, 1);
    G->residual(G, o.g, y.g, gam.g, s, B, N, Cc);
    C->residual(C, o.c, y.c, gam.c, s, B, N, Cc);
    cmp("residual gamma+s", o, 1e-2f, 1e-2f);
    reset(&o, 1);
    G->residual(G, o.g, y.g, NULL, NULL, B, N, Cc);
    C->residual(C, o.c, y.c, NULL, NULL, B, N, Cc);
    cmp("residual plain", o, 1e-2f, 1e-2f);
    reset(&dx, 1);
    G->residual_backward(G, dx.g, dgam.g, dout.g, y.g, gam.g, s, B, N, Cc, IV2_ADD);
    C->residual_backward(C, dx.c, dgam.c, dout.c, y.c, gam.c, s, B, N, Cc, IV2_ADD);
    cmp("residual_backward dy", dx, 2e-2f, 2e-2f);
    cmp("residual_backward dgamma", dgam, 2e-2f, 0.3f);
    poison(&dx);
    G->residual_backward(G, dx.g, NULL, dout.g, y.g, gam.g, s, B, N, Cc, IV2_SET);
    C->residual_backward(C, dx.c, NULL, dout.c, y.c, gam.c, s, B, N, Cc, IV2_ADD);
    cmp("residual_backward dy SET (a dropped sample: 0)", dx, 2e-2f, 2e-2f);
    /* position rows of every token (row b N + n takes pe[n]) */
    pair pe = mk((size_t)N * Cc, 1), dpe = mk((size_t)N * Cc, 1);
    int32_t *ri = malloc(sizeof(int32_t) * B * N), *rg = G->alloc(G, sizeof(int32_t) * B * N);
    int32_t *rc = C->alloc(C, sizeof(int32_t) * B * N);
    for (int i = 0; i < B * N; i++) ri[i] = i;
    G->upload_raw(G, rg, ri, sizeof(int32_t) * B * N);
    C->upload_raw(C, rc, ri, sizeof(int32_t) * B * N);
    reset(&o, 1);
    G->add_table_rows(G, o.g, pe.g, rg, B * N, N, Cc);
    C->add_table_rows(C, o.c, pe.c, rc, B * N, N, Cc);
    cmp("add_table_rows, every token", o, 1e-2f, 1e-2f);
    G->add_table_rows_backward(G, dpe.g, dout.g, rg, B * N, N, Cc);
    C->add_table_rows_backward(C, dpe.c, dout.c, rc, B * N, N, Cc);
    cmp("add_table_rows_backward, every token", dpe, 2e-2f, 2e-2f);
    G->free(G, rg); C->free(C, rc); free(ri);
    reset(&o, 1);
    G->axpy(G, o.g, x.g, -0.75f, n);
    C->axpy(C, o.c, x.c, -0.75f, n);
    cmp("axpy", o, 1e-2f, 1e-2f);
    /* gather / scatter with a repeated index */
    int32_t idx[7] = {0, 5, 6, 66, 100, 5, 200}, *ig = G->alloc(G, sizeof idx), *ic = C->alloc(C, sizeof idx);
    for (int k = 0; k < 7; k++) idx[k] %= B * N;   /* rows of x; 5 stays repeated */
    G->upload_raw(G, ig, idx, sizeof idx);
    C->upload_raw(C, ic, idx, sizeof idx);
    pair go = mk(7 * (size_t)Cc, 1);
    G->gather_rows(G, go.g, x.g, ig, 7, Cc);
    C->gather_rows(C, go.c, x.c, ic, 7, Cc);
    cmp("gather_rows", go, 0, 0);
    reset(&dx, 1);
    G->scatter_add_rows(G, dx.g, go.g, ig, 7, Cc);
    C->scatter_add_rows(C, dx.c, go.c, ic, 7, Cc);
    cmp("scatter_add_rows", dx, 2e-2f, 2e-2f);
    G->free(G, ig);
    C->free(C, ic);
    /* mean over tokens */
    pair mr = mk((size_t)B * Cc, 1);
    G->mean_rows(G, mr.g, x.g, B, N, Cc);
    C->mean_rows(C, mr.c, x.c, B, N, Cc);
    cmp("mean_rows", mr, 1e-2f, 1e-2f);
    reset(&dx, 1);
    G->mean_rows_backward(G, dx.g, mr.g, B, N, Cc);
    C->mean_rows_backward(C, dx.c, mr.c, B, N, Cc);
    cmp("mean_rows_backward", dx, 2e-2f, 2e-2f);
    /* sum of squares (f32 accumulator, added into) */
    pair acc = mkf(1);
    float one = 1.f, ga, ca;
    G->upload_raw(G, acc.g, &one, 4);
    C->upload_raw(C, acc.c, &one, 4);
    G->sumsq(G, acc.g, x.g, n);
    C->sumsq(C, acc.c, x.c, n);
    G->download_raw(G, &ga, acc.g, 4);
    C->download_raw(C, &ca, acc.c, 4);
    CHECK(fabsf(ga - ca) <= 1e-4f * fabsf(ca), "sumsq got %g want %g", ga, ca);
    drop(&x); drop(&y); drop(&o); drop(&dx); drop(&dout); drop(&gam); drop(&dgam); drop(&pe); drop(&dpe); drop(&go);
    drop(&mr); drop(&acc);
}

static void test_patchify(int T, int p, int tt) {
    int H = 224, W = 224;
    size_t nb = (size_t)T * H * W * 3;
    uint8_t *fr = malloc(nb);
    for (size_t i = 0; i < nb; i++) fr[i] = (uint8_t)(urand() * 128 + 128);
    uint8_t *fg = G->alloc(G, nb), *fc = C->alloc(C, nb);
    G->upload_raw(G, fg, fr, nb);
    C->upload_raw(C, fc, fr, nb);
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    size_t rows = (size_t)(T / tt) * (H / p) * (W / p), cols = (size_t)3 * tt * p * p;
    pair o = mk(rows * cols, 1);
    G->patchify(G, o.g, fg, T, H, W, p, tt, mean, std, NULL, 0, 0, 0);
    C->patchify(C, o.c, fc, T, H, W, p, tt, mean, std, NULL, 0, 0, 0);
    char w[64];
    snprintf(w, sizeof w, "patchify T%d p%d tubelet %d", T, p, tt);
    cmp(w, o, 1e-2f, 1e-2f);
    /* the visible tokens' rows: one sample per frame group, a CLS first, some rows of each */
    int S = T / tt, ntok = (int)(rows / S) + 1, nr = 0;   /* a sample per frame group */
    int32_t ri[64];
    for (int s = 0; s < S && nr < 60; s++)
        for (int t = 0; t < ntok && nr < 60; t += 1 + (t * 7) % 23) ri[nr++] = s * ntok + t;
    int32_t *rg = G->alloc(G, sizeof ri), *rc = C->alloc(C, sizeof ri);
    G->upload_raw(G, rg, ri, sizeof ri);
    C->upload_raw(C, rc, ri, sizeof ri);
    pair o2 = mk((size_t)nr * cols, 1);
    G->patchify(G, o2.g, fg, T, H, W, p, tt, mean, std, rg, nr, ntok, 1);
    C->patchify(C, o2.c, fc, T, H, W, p, tt, mean, std, rc, nr, ntok, 1);
    snprintf(w, sizeof w, "patchify rows T%d p%d tubelet %d", T, p, tt);
    cmp(w, o2, 1e-2f, 1e-2f);
    /* the position table's rows at them (T/tt samples of ntok tokens), and the backward */
    pair x = mk((size_t)nr * 1408, 1), tb = mk((size_t)ntok * 1408, 1), dt = mk((size_t)ntok * 1408, 1);
    G->add_table_rows(G, x.g, tb.g, rg, nr, ntok, 1408);
    C->add_table_rows(C, x.c, tb.c, rc, nr, ntok, 1408);
    cmp("add_table_rows", x, 1e-2f, 1e-2f);
    G->add_table_rows_backward(G, dt.g, x.g, rg, nr, ntok, 1408);
    C->add_table_rows_backward(C, dt.c, x.c, rc, nr, ntok, 1408);
    cmp("add_table_rows_backward", dt, 2e-2f, 3e-2f);
    G->free(G, rg); C->free(C, rc); drop(&o2); drop(&x); drop(&tb); drop(&dt);
    G->free(G, fg); C->free(C, fc); free(fr); drop(&o);
}

/* the asynchronous transfers and their ordering (compute.h, "the copy stream"): an upload on
 * the copy stream reaches compute work queued after an event wait; a download_async takes the
 * buffer as the compute stream has it at that point, not as later work leaves it. 64 MiB, so an
 * ordering mistake shows as a race. */
static void test_async_transfers(void) {
    const size_t n = 16u << 20, bytes = n * sizeof(uint32_t);
    uint32_t *h1 = G->alloc_host(G, bytes), *h2 = G->alloc_host(G, bytes), *got = G->alloc_host(G, bytes);
    void *a = G->alloc(G, bytes), *b = G->alloc(G, bytes);
    iv2_event *e = G->event_create(G);
    for (size_t i = 0; i < n; i++) { h1[i] = (uint32_t)(i * 2654435761u); h2[i] = ~h1[i]; }
    /* upload h1 into a on the copy stream; compute copies a to b after the wait */
    G->upload_async(G, a, h1, bytes);
    G->event_record(G, e, IV2_STREAM_COPY);
    G->event_wait(G, e, IV2_STREAM_COMPUTE);
    G->copy(G, b, a, bytes);
    G->download_raw(G, got, b, bytes);
    CHECK(!memcmp(got, h1, bytes), "upload_async then copy after event_wait: b != the uploaded bytes");
    /* a = h1 (b); download a; then overwrite a with h2: the download must hold h1 */
    G->upload_raw(G, b, h2, bytes);   /* b = h2 now */
    G->upload_raw(G, a, h1, bytes);
    memset(got, 0, bytes);
    G->download_async(G, got, a, bytes);
    G->copy(G, a, b, bytes);          /* queued after the download */
    G->event_record(G, e, IV2_STREAM_COMPUTE);
    G->event_sync(G, e);
    CHECK(!memcmp(got, h1, bytes), "download_async: got the buffer as later work left it");
    G->download_raw(G, got, a, bytes);
    CHECK(!memcmp(got, h2, bytes), "the copy queued after download_async did not run");
    G->event_destroy(G, e);
    G->free(G, a);
    G->free(G, b);
    G->free_host(G, h1);
    G->free_host(G, h2);
    G->free_host(G, got);
}

/* after AdamW steps: the GPU's fp32 master and bf16 params and its m, v against the CPU's
 * (whose params are their own master) */
static void cmp_adamw(const char *what, pair p, pair master, pair m, pair v, size_t n) {
    char w[64];
    float *a = malloc(n * 4), *b = malloc(n * 4);
    G->download_raw(G, a, master.g, n * 4);
    C->download(C, b, p.c, n);
    snprintf(w, sizeof w, "%s master", what); t_allclose(w, a, b, n, 1e-4f, 1e-5f);
    G->download(G, a, p.g, n);
    snprintf(w, sizeof w, "%s bf16 param", what); t_allclose(w, a, b, n, 8e-3f, 1e-6f);
    snprintf(w, sizeof w, "%s m", what); cmpf(w, m, 1e-4f, 1e-6f);
    snprintf(w, sizeof w, "%s v", what); cmpf(w, v, 1e-4f, 1e-7f);
    free(a); free(b);
}

static void test_adamw(void) {
    size_t n = 5000;
    pair p = mk(n, 1), gr = mk(n, 1), m = mkf(n), v = mkf(n), master = mkf(n);
    /* GPU: bf16 param + f32 master; CPU: master == param */
    G->upload_raw(G, master.g, p.h, n * 4);
    for (int t = 1; t <= 3; t++) {
        G->adamw(G, p.g, master.g, gr.g, m.g, v.g, n, 1e-2f, 0.9f, 0.98f, 1e-6f, 0.05f, t, 0.5f);
        C->adamw(C, p.c, p.c, gr.c, m.c, v.c, n, 1e-2f, 0.9f, 0.98f, 1e-6f, 0.05f, t, 0.5f);
    }
    cmp_adamw("adamw", p, master, m, v, n);
    drop(&p); drop(&gr); drop(&m); drop(&v); drop(&master);
}

/* AdamW over a buffer of three tensors in one launch (adamw_chunks, as the optimiser calls it)
 * against the CPU's adamw per tensor: a tensor over one chunk (IV2_ADAMW_CHUNK), and one
 * without weight decay between two with it; the second of three steps on the side stream,
 * fenced by events both ways as distill/optim.c fences it */
static void test_adamw_chunks(void) {
    if (!G->adamw_chunks) { printf("adamw_chunks: not installed\n"); return; }
    size_t sz[3] = {IV2_ADAMW_CHUNK + 1000, 300, 4000}, n = sz[0] + sz[1] + sz[2];
    int no_wd[3] = {0, 1, 0};
    pair p = mk(n, 1), gr = mk(n, 1), m = mkf(n), v = mkf(n), master = mkf(n);
    G->upload_raw(G, master.g, p.h, n * 4);
    iv2_adamw_chunk ch[8];
    int nc = 0;
    for (int j = 0, off = 0; j < 3; off += (int)sz[j], j++)
        for (size_t at = 0; at < sz[j]; at += IV2_ADAMW_CHUNK)
            ch[nc++] = (iv2_adamw_chunk){.off = off + at, .n = (uint32_t)(sz[j] - at < IV2_ADAMW_CHUNK ? sz[j] - at
                                                                                              : IV2_ADAMW_CHUNK),
                                         .no_wd = (uint32_t)no_wd[j]};
    void *chg = G->alloc(G, sizeof ch);
    G->upload_raw(G, chg, ch, sizeof *ch * nc);
    iv2_event *before = G->event_create(G), *after = G->event_create(G);
    for (int t = 1; t <= 3; t++) {
        int side = t == 2;
        if (side) { G->event_record(G, before, IV2_STREAM_COMPUTE); G->event_wait(G, before, IV2_STREAM_SIDE); }
        G->adamw_chunks(G, p.g, master.g, gr.g, m.g, v.g, chg, nc, 1e-2f, 0.9f, 0.98f, 1e-6f, 0.05f, t, 0.5f,
                        side ? IV2_STREAM_SIDE : IV2_STREAM_COMPUTE);
        if (side) { G->event_record(G, after, IV2_STREAM_SIDE); G->event_wait(G, after, IV2_STREAM_COMPUTE); }
        for (int j = 0, off = 0; j < 3; off += (int)sz[j], j++)
            C->adamw(C, IV2_AT(C, p.c, off), (float *)IV2_AT(C, p.c, off), IV2_AT(C, gr.c, off), (float *)m.c + off,
                     (float *)v.c + off, sz[j], 1e-2f, 0.9f, 0.98f, 1e-6f, no_wd[j] ? 0.f : 0.05f, t, 0.5f);
    }
    cmp_adamw("adamw_chunks", p, master, m, v, n);
    G->event_destroy(G, before);
    G->event_destroy(G, after);
    G->free(G, chg);
    drop(&p); drop(&gr); drop(&m); drop(&v); drop(&master);
}

int main(void) {
    G = iv2_cuda_backend_create(0);
    if (!G) { test_skip(iv2_errmsg()); return test_done(); }
    C = iv2_cpu_backend_create(0);
    if (!C) { fprintf(stderr, "cpu backend: %s\n", iv2_errmsg()); return 1; }
    test_matmul(77, 96, 200, 1);
    test_matmul(130, 588, 96, 1);     /* patch embedding: K = 3*14*14, unaligned rows (the padded weight gradient) */
    test_matmul(1000, 588, 1408, 1);  /* the student's patch embedding, fewer rows */
    test_matmul(64, 1408, 1408, 0);
    test_matmul_batch_w(130, 1408, 1408);   /* the student's q, k, v */
    test_matmul_batch_w(33, 96, 100);       /* odd widths */
    test_matmul(1, 128, 768, 1);      /* pooled projection, one row */
    test_matmul(45, 64, 100, 1);      /* N % 8 != 0: the scalar bias-gradient sum */
    test_matmul_gelu(130, 96, 384, 96);     /* the student's MLP shape at toy width */
    test_matmul_gelu(37, 64, 100, 64);      /* H % 8 != 0: the unfused path */
    test_norms(70, 96);
    test_norms(33, 1408);
    test_norms(9, 3200);
    test_norms(7, 100);               /* C % 8 != 0: the scalar kernels */
    test_residual_norm(3, 11, 1408);  /* the student's width, a dropped sample */
    test_rms_residual_backward(3, 11, 1408);   /* the student's norm2 + ls1: one kernel */
    test_rms_residual_backward(3, 5, 3200);    /* the 6B's width: one kernel at VPL 13 (the two ops with IV2_NORM_SMEM=0) */
    test_residual_norm(3, 5, 3200);
    test_residual_norm(3, 4, 100);    /* C % 8 != 0: the three ops apart */
    test_elementwise(3, 67, 200);
    test_elementwise(3, 67, 1408);    /* the student's width: 176 vectors, the last block of 64 partly idle */
    test_elementwise(2, 13, 100);     /* C % 8 != 0: the scalar kernels */
    test_patchify(2, 14, 1);
    test_patchify(4, 16, 2);
    test_attention(2, 3, 257, 257, 32, 1, 0);   /* tiny InternViT frame */
    test_attention(1, 2, 130, 130, 88, 1, 0);   /* student / VideoMAE head dim */
    test_attention(1, 2, 200, 200, 128, 1, 0);  /* InternViT-6B head dim */
    test_attention(2, 4, 1, 257, 24, 0, 1);     /* tiny pooling head: one query, probs */
    test_attention(2, 16, 1, 257, 200, 0, 1);   /* 6B pooling head */
    test_attention(1, 3, 70, 150, 64, 0, 0);    /* Nq != Nk */
    test_attention(2, 2, 100, 100, 20, 1, 0);   /* D % 8 != 0: the unpipelined kernel */
    test_attention(1, 4, 1100, 1100, 88, 1, 0); /* long sequence: 8 warps per block */
    test_adamw();
    test_adamw_chunks();
    test_async_transfers();
    G->sync(G);
    iv2_backend_destroy(G);
    iv2_backend_destroy(C);
    return test_done();
}
