/* vit.c: create/free, the forward (inference in bounded batches, training with saved
 * activations) and the backward of the three ViTs, all through the iv2_backend ops.
 *
 * One block (pre-norm):  h1 = norm1(x);  q,k,v = h1 Wqkv^T (+ [q_bias, 0, v_bias]);
 *   qk_norm: q = RMSNorm(q), k = RMSNorm(k) over the full width;  a = attention(q, k, v);
 *   o = a Wproj^T + bproj;  x += s * ls1 * o;  h2 = norm2(x);  f1 = h2 W1^T + b1;  g = gelu(f1);
 *   f2 = g W2^T + b2;  x += s * ls2 * f2.
 * Embedding, of the visible tokens only: their patches (normalised pixels; a zero row for the CLS)
 * -> GEMM -> + their rows of the position table, whose CLS row holds pos[0] + cls - the patch bias
 * (the GEMM gave the CLS row the bias alone). The same values as embedding all tokens and then
 * gathering the visible ones (the official order), at n_vis / T of the work and memory.
 * Pool (InternVL-C clip_projector): q = LN_q(mean_n x) Wq^T + q_bias, k = LN_k(x) Wk^T + k_bias,
 * v = LN_v(x) Wv^T + v_bias; one query per sample; out = attention Wp^T + bp. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "err.h"
#include "vit_impl.h"

static const float IMNET_MEAN[3] = {0.485f, 0.456f, 0.406f};
static const float IMNET_STD[3] = {0.229f, 0.224f, 0.225f};

#define W(off) IV2_AT(be, m->params, (off))
#define G(off) IV2_AT(be, m->grads, (off))
#define WO(off) ((off) == NOOFF ? NULL : W(off))
#define GO(off) ((off) == NOOFF ? NULL : G(off))

/* ---- create / free ---- */

iv2_vit *iv2_vit_create(iv2_backend *be, const iv2_vit_config *cfg) {
    if (iv2_vit_config_check(cfg)) return NULL;
    iv2_vit *m = iv2_calloc(1, sizeof *m);
    m->be = be;
    m->cfg = *cfg;
    m->st = iv2_calloc(1, sizeof *m->st);
    vit_build_table(m);
    /* InternViT-6B-size models stream 8 frames at a time; small ones take bigger batches */
    m->batch = cfg->width >= 1024 ? 8 : 64;
    if (cfg->arch != IV2_VIT_INTERNVIT) m->batch = cfg->width >= 1024 ? 1 : 8;
    m->params = be->alloc(be, m->n_elems * be->esize);
    if (!m->params) {
        iv2_err("model %s: cannot allocate %zu parameters", cfg->name, m->n_elems);
        iv2_vit_free(m);
        return NULL;
    }
    if (cfg->pos == IV2_POS_SINCOS1D) {
        int P = iv2_vit_patches(cfg);
        float *t = iv2_malloc(sizeof(float) * (size_t)P * cfg->width);
        iv2_sincos_1d_table(t, P, cfg->width);
        m->st->sincos = be->alloc(be, (size_t)P * cfg->width * be->esize);
        if (m->st->sincos) be->upload(be, m->st->sincos, t, (size_t)P * cfg->width);
        free(t);
        if (!m->st->sincos) {
            iv2_err("model %s: cannot allocate the position table", cfg->name);
            iv2_vit_free(m);
            return NULL;
        }
    }
    return m;
}

void vit_arena_free(iv2_backend *be, vit_arena *a) {
    for (int i = 0; i < a->n_bufs; i++) be->free(be, a->bufs[i]);
    free(a->bufs);
    free(a->blk);
    free(a->bwd);
    memset(a, 0, sizeof *a);
}

void iv2_vit_free(iv2_vit *m) {
    if (!m) return;
    iv2_backend *be = m->be;
    if (m->st) {
        vit_arena_free(be, &m->st->inf);
        vit_arena_free(be, &m->st->tr);
        if (m->st->sincos) be->free(be, m->st->sincos);
        free(m->st->off.blk);
        free(m->st);
    }
    if (m->params) be->free(be, m->params);
    if (m->grads) be->free(be, m->grads);
    free(m->param);
    free(m);
}

/* ---- arena ---- */

size_t iv2_vit_arena_bytes(const iv2_vit *m) { return m->st->inf.bytes + m->st->tr.bytes; }

typedef struct { iv2_backend *be; vit_arena *a; int fail; } alloc_ctx;

static void *abytes(alloc_ctx *x, size_t bytes) {
    if (x->fail) return NULL;
    void *p = x->be->alloc(x->be, bytes ? bytes : 16);
    if (!p) { x->fail = 1; return NULL; }
    vit_arena *a = x->a;
    if (a->n_bufs == a->cap_bufs) {
        a->cap_bufs = a->cap_bufs ? 2 * a->cap_bufs : 64;
        a->bufs = iv2_realloc(a->bufs, sizeof(void *) * (size_t)a->cap_bufs);
    }
    a->bufs[a->n_bufs++] = p;
    a->bytes += bytes;
    return p;
}
static void *aelems(alloc_ctx *x, size_t n) { return abytes(x, n * x->be->esize); }
static float *af32(alloc_ctx *x, size_t n) { return abytes(x, n * sizeof(float)); }

/* backward scratch lives in the training arena after the per-block activations */
typedef struct vit_bwd {
    void *dx, *dh, *dq, *dk, *dv, *dqn, *dkn, *da, *dout, *df1, *dg, *df2, *dposx;
    void *dxm, *dpqn, *dpkn, *dpvn, *dpq, *dpk, *dpv, *dpo;
} vit_bwd;

/* blocks 0..R-1 of a training forward are recomputed in the backward (m->recompute clamped) */
static int vit_recompute_blocks(const iv2_vit *m) {
    int R = m->recompute;
    return R < 0 ? 0 : R > m->cfg.depth ? m->cfg.depth : R;
}
/* each block keeps its own h1, h2, g: training with no block recomputed and m->keep_normed */
static int vit_keep_normed(const iv2_vit *m, int train) {
    return train && m->keep_normed && vit_recompute_blocks(m) == 0;
}

/* one block's own activations (not x_in, x_out, nor the shared h1, h2, g) */
static void block_alloc(alloc_ctx *x, vit_act_block *b, const iv2_vit_config *c, size_t M, int train) {
    size_t C = c->width, Hm = c->mlp;
    if (c->qk_norm) {   /* q, k, v in one buffer: one batched GEMM writes them (matmul_batch_w) */
        b->q = aelems(x, M * 3 * C); b->k = IV2_AT(x->be, b->q, M * C); b->v = IV2_AT(x->be, b->q, 2 * M * C);
        b->qn = aelems(x, M * C); b->kn = aelems(x, M * C);
        b->rq = af32(x, M); b->rk = af32(x, M);
    } else {
        b->qkv = aelems(x, M * 3 * C);
    }
    b->a = aelems(x, M * C);
    b->o = aelems(x, M * C);
    b->f1 = aelems(x, M * Hm);
    b->f2 = aelems(x, M * C);
    b->m1 = af32(x, M); b->r1 = af32(x, M); b->m2 = af32(x, M); b->r2 = af32(x, M);
    b->lse = af32(x, M * c->heads);
    if (train) b->x_mid = aelems(x, M * C);
}

/* sized for S samples of n_tok tokens; train: one activation set per block + backward scratch */
static int arena_make(iv2_vit *m, vit_arena *a, int S, int n_tok, int train, vit_bwd *bw) {
    iv2_backend *be = m->be;
    const iv2_vit_config *c = &m->cfg;
    vit_arena_free(be, a);
    alloc_ctx x = {be, a, 0};
    size_t C = c->width, Hm = c->mlp, T = iv2_vit_tokens(c);
    size_t K = 3 * (size_t)c->tubelet * c->patch * c->patch, M = (size_t)S * n_tok;
    a->S = S; a->n_tok = n_tok; a->train = train;
    a->patches = aelems(&x, M * K);
    a->posx = aelems(&x, T * C);
    a->gidx = abytes(&x, sizeof(int32_t) * M);
    int nblk = train ? c->depth : 1, R = train ? vit_recompute_blocks(m) : 0, keep = vit_keep_normed(m, train);
    a->recompute = R;
    a->keep = keep;
    a->blk = iv2_calloc((size_t)nblk, sizeof(vit_act_block));
    void *xprev = aelems(&x, M * C);
    /* the normed inputs h1, h2 and the GELU output g are cheap to recompute from x_in, x_mid
     * and f1, so all blocks share one copy and the backward recomputes them (saves 2C + mlp
     * per token and block), unless keep: then each block has its own */
    void *h1 = NULL, *h2 = NULL, *g = NULL;
    if (!keep) { h1 = aelems(&x, M * C); h2 = aelems(&x, M * C); g = train ? aelems(&x, M * Hm) : NULL; }
    /* blocks l < R (recomputed) keep only x_in / x_out and share one set of the rest, which the
     * backward refills by running the block's forward again just before its backward */
    vit_act_block work = {0};
    if (R > 0) block_alloc(&x, &work, c, M, 1);
    for (int l = 0; l < nblk; l++) {
        vit_act_block *b = &a->blk[l];
        if (l < R) *b = work;
        else block_alloc(&x, b, c, M, train);
        b->x_in = xprev;
        b->h1 = keep ? aelems(&x, M * C) : h1;
        b->h2 = keep ? aelems(&x, M * C) : h2;
        b->g = !train ? b->f1 : keep ? aelems(&x, M * Hm) : g;
        if (train) b->x_out = aelems(&x, M * C);
        else b->x_mid = b->x_out = b->x_in;
        xprev = b->x_out;
    }
    a->xfin = xprev;
    if (c->pool_heads) {
        a->xm = aelems(&x, (size_t)S * C); a->pqn = aelems(&x, (size_t)S * C); a->pq = aelems(&x, (size_t)S * C);
        a->po = aelems(&x, (size_t)S * C);
        a->pkn = aelems(&x, M * C); a->pvn = aelems(&x, M * C); a->pk = aelems(&x, M * C); a->pv = aelems(&x, M * C);
        a->pm_q = af32(&x, S); a->pr_q = af32(&x, S);
        a->pm_k = af32(&x, M); a->pr_k = af32(&x, M); a->pm_v = af32(&x, M); a->pr_v = af32(&x, M);
        a->plse = af32(&x, (size_t)S * c->pool_heads);
        a->pprobs = af32(&x, M);
    }
    if (bw) {
        memset(bw, 0, sizeof *bw);
        bw->dx = aelems(&x, M * C); bw->dh = aelems(&x, M * C);
        bw->dq = aelems(&x, M * 3 * C);   /* [M,3C] for the fused qkv; dq | dk | dv [3][M][C] with q/k norms */
        bw->dk = IV2_AT(be, bw->dq, M * C); bw->dv = IV2_AT(be, bw->dq, 2 * M * C);
        bw->dqn = aelems(&x, M * C); bw->dkn = aelems(&x, M * C);
        bw->da = aelems(&x, M * C); bw->dout = aelems(&x, M * C);
        bw->df1 = aelems(&x, M * Hm); bw->dg = aelems(&x, M * Hm); bw->df2 = aelems(&x, M * C);
        bw->dposx = aelems(&x, T * C);
        if (c->pool_heads) {
            bw->dxm = aelems(&x, (size_t)S * C); bw->dpqn = aelems(&x, (size_t)S * C);
            bw->dpq = aelems(&x, (size_t)S * C); bw->dpo = aelems(&x, (size_t)S * C);
            bw->dpkn = aelems(&x, M * C); bw->dpvn = aelems(&x, M * C);
            bw->dpk = aelems(&x, M * C); bw->dpv = aelems(&x, M * C);
        }
    }
    if (x.fail) {
        size_t bytes = a->bytes;
        vit_arena_free(be, a);
        return iv2_err("model %s: cannot allocate activations (%d samples x %d tokens, %.1f MiB so far)", c->name, S,
                       n_tok, bytes / 1048576.0);
    }
    return 0;
}

/* ---- checks ---- */

static int check_io(iv2_vit *m, const iv2_vit_io *io) {
    const iv2_vit_config *c = &m->cfg;
    int T = iv2_vit_tokens(c);
    if (!io->frames) return iv2_err("model %s: no input frames", c->name);
    if (io->S <= 0) return iv2_err("model %s: %d samples", c->name, io->S);
    if (io->n_out < 0 || io->n_out > IV2_VIT_MAX_OUT)
        return iv2_err("model %s: %d block outputs requested (at most %d)", c->name, io->n_out, IV2_VIT_MAX_OUT);
    for (int k = 0; k < io->n_out; k++) {
        if (io->blocks[k] < 0 || io->blocks[k] >= c->depth)
            return iv2_err("model %s: block %d requested, the model has %d", c->name, io->blocks[k], c->depth);
        if (k && io->blocks[k] <= io->blocks[k - 1])
            return iv2_err("model %s: requested blocks must ascend (%d after %d)", c->name, io->blocks[k],
                           io->blocks[k - 1]);
    }
    if (io->final_norm_last && !c->final_norm) return iv2_err("model %s: no final norm to apply", c->name);
    if ((io->pooled || io->pool_attn) && !c->pool_heads) return iv2_err("model %s: no pool head", c->name);
    if (io->vis) {
        if (io->n_vis <= 0 || io->n_vis > T)
            return iv2_err("model %s: n_vis %d not in [1,%d]", c->name, io->n_vis, T);
        for (int s = 0; s < io->S; s++) {
            const int32_t *v = io->vis + (size_t)s * io->n_vis;
            for (int i = 0; i < io->n_vis; i++) {
                if (v[i] < 0 || v[i] >= T)
                    return iv2_err("model %s: sample %d: visible index %d out of [0,%d)", c->name, s, v[i], T);
                if (i && v[i] <= v[i - 1])
                    return iv2_err("model %s: sample %d: visible indices not strictly ascending at %d", c->name, s, i);
            }
        }
    }
    return 0;
}

/* ---- pieces of the forward ---- */

static void norm_fwd(iv2_vit *m, void *out, float *mean, float *rstd, const void *inp, size_t w, size_t b, int M) {
    iv2_backend *be = m->be;
    if (m->cfg.norm == IV2_NORM_RMS) be->rmsnorm(be, out, rstd, inp, W(w), M, m->cfg.width, m->cfg.eps);
    else be->layernorm(be, out, mean, rstd, inp, W(w), WO(b), M, m->cfg.width, m->cfg.eps);
}

/* elements from a to b, two slices of one arena buffer */
static size_t elems_between(const iv2_backend *be, const void *a, const void *b) {
    return (size_t)((const char *)b - (const char *)a) / be->esize;
}

/* x_out = x_in + s gamma y, then out = the model's norm of x_out (weights w, b) */
static void residual_norm_fwd(iv2_vit *m, void *x_out, void *out, float *mean, float *rstd, const void *x_in,
                              const void *y, size_t gamma, const float *s, size_t w, size_t b, int S, int N) {
    iv2_backend *be = m->be;
    int ln = m->cfg.norm != IV2_NORM_RMS;
    be->residual_norm(be, x_out, out, mean, rstd, x_in, y, WO(gamma), s, W(w), ln ? WO(b) : NULL, S, N, m->cfg.width,
                      m->cfg.eps, ln);
}

static void norm_bwd(iv2_vit *m, void *dinp, const void *dout, const void *inp, size_t w, size_t b, const float *mean,
                     const float *rstd, int M, int acc) {
    iv2_backend *be = m->be;
    if (m->cfg.norm == IV2_NORM_RMS) be->rmsnorm_backward(be, dinp, G(w), dout, inp, W(w), rstd, M, m->cfg.width, acc);
    else be->layernorm_backward(be, dinp, G(w), GO(b), dout, inp, W(w), mean, rstd, M, m->cfg.width, acc);
}

/* frames of S samples -> x, the visible tokens' rows [S*n_tok, C] */
static void embed(iv2_vit *m, vit_arena *a, const uint8_t *frames, int S, const int32_t *vis, const int32_t *vis_rows,
                  int n_tok) {
    iv2_backend *be = m->be;
    const iv2_vit_config *c = &m->cfg;
    const vit_off *o = &m->st->off;
    int C = c->width, T = iv2_vit_tokens(c), M = S * n_tok;
    int K = 3 * c->tubelet * c->patch * c->patch;
    /* visible rows (all tokens when vis is NULL); the caller's when in backend memory already
     * (a device-to-device copy queued like the ops: no host wait) */
    if (vis_rows) be->copy(be, a->gidx, vis_rows, sizeof(int32_t) * (size_t)S * n_tok);
    else {
        int32_t *gi = iv2_malloc(sizeof(int32_t) * (size_t)S * n_tok);
        for (size_t s = 0; s < (size_t)S; s++)
            for (size_t i = 0; i < (size_t)n_tok; i++)
                gi[s * n_tok + i] = (int32_t)(s * T + (vis ? vis[s * n_tok + i] : (int32_t)i));
        be->upload_raw(be, a->gidx, gi, sizeof(int32_t) * (size_t)S * n_tok);
        free(gi);
    }
    void *x = a->blk[0].x_in;
    be->patchify(be, a->patches, frames, S * c->frames, c->img, c->img, c->patch, c->tubelet, IMNET_MEAN, IMNET_STD,
                 a->gidx, M, T, c->cls ? 1 : 0);
    be->matmul(be, x, a->patches, W(o->pe_w), W(o->pe_b), M, K, C);
    be->copy(be, a->posx, c->pos == IV2_POS_LEARNED ? W(o->pos) : m->st->sincos, (size_t)T * C * be->esize);
    if (c->cls) {   /* the CLS row: its patch row was zero, so the GEMM gave it the bias alone */
        be->axpy(be, a->posx, W(o->cls), 1.0f, C);
        be->axpy(be, a->posx, W(o->pe_b), -1.0f, C);
    }
    be->add_table_rows(be, x, a->posx, a->gidx, M, T, C);
}

/* One block. Each residual add runs with the norm after it (residual_norm): x_mid with this
 * block's norm2, and x_out with the next block's norm1 when wn, bn name that block (its h1, m1,
 * r1 are then ready when it runs: h1_ready). out = 0 (a recompute in the backward, where x_out is
 * stored already): no x_out. */
static void block_fwd(iv2_vit *m, const vit_block_off *w, vit_act_block *b, int S, int N, const float *s,
                      const float *s2, int h1_ready, const vit_block_off *wn, vit_act_block *bn, int out) {
    iv2_backend *be = m->be;
    const iv2_vit_config *c = &m->cfg;
    int C = c->width, M = S * N, nh = c->heads, D = C / nh;
    float scale = 1.0f / sqrtf((float)D);
    size_t CC = (size_t)C * C;
    if (!h1_ready) norm_fwd(m, b->h1, b->m1, b->r1, b->x_in, w->norm1_w, w->norm1_b, M);
    if (c->qk_norm) {
        if (w->qkv_b == NOOFF)   /* InternViT and the student: one launch for q, k and v (the arena's
                                  * slices, sized for its batch: a last, smaller batch leaves a gap) */
            be->matmul_batch_w(be, b->q, b->h1, W(w->qkv_w), M, C, C, 3, CC, elems_between(be, b->q, b->k));
        else {
            be->matmul(be, b->q, b->h1, W(w->qkv_w), W(w->qkv_b), M, C, C);
            be->matmul(be, b->k, b->h1, W(w->qkv_w + CC), W(w->qkv_b + C), M, C, C);
            be->matmul(be, b->v, b->h1, W(w->qkv_w + 2 * CC), W(w->qkv_b + 2 * C), M, C, C);
        }
        be->rmsnorm(be, b->qn, b->rq, b->q, W(w->q_norm), M, C, 1e-6f);
        be->rmsnorm(be, b->kn, b->rk, b->k, W(w->k_norm), M, C, 1e-6f);
        be->attention(be, b->a, b->lse, NULL, b->qn, b->kn, b->v, S, nh, N, N, D, C, C, C, scale);
    } else {
        be->matmul(be, b->qkv, b->h1, W(w->qkv_w), WO(w->qkv_b), M, C, 3 * C);
        be->attention(be, b->a, b->lse, NULL, b->qkv, IV2_AT(be, b->qkv, C), IV2_AT(be, b->qkv, 2 * C), S, nh, N, N,
                      D, 3 * C, 3 * C, C, scale);
    }
    be->matmul(be, b->o, b->a, W(w->proj_w), W(w->proj_b), M, C, C);
    residual_norm_fwd(m, b->x_mid, b->h2, b->m2, b->r2, b->x_in, b->o, w->ls1, s, w->norm2_w, w->norm2_b, S, N);
    if (be->matmul_gelu && c->gelu == IV2_GELU_TANH)   /* the student's MLP on CUDA: GELU in the GEMM's epilogue */
        be->matmul_gelu(be, b->g, b->f1, b->h2, W(w->fc1_w), W(w->fc1_b), M, C, c->mlp);
    else {
        be->matmul(be, b->f1, b->h2, W(w->fc1_w), W(w->fc1_b), M, C, c->mlp);
        be->gelu(be, b->g, b->f1, (size_t)M * c->mlp, c->gelu);
    }
    be->matmul(be, b->f2, b->g, W(w->fc2_w), W(w->fc2_b), M, c->mlp, C);
    if (wn)
        residual_norm_fwd(m, b->x_out, bn->h1, bn->m1, bn->r1, b->x_mid, b->f2, w->ls2, s2, wn->norm1_w,
                          wn->norm1_b, S, N);
    else if (out) {
        if (b->x_out != b->x_mid) be->copy(be, b->x_out, b->x_mid, (size_t)M * C * be->esize);
        be->residual(be, b->x_out, b->f2, WO(w->ls2), s2, S, N, C);
    }
}

/* fresh = 1: b's h1, h2 and g hold this block's values (just recomputed by block_fwd, or kept:
 * iv2_vit.keep_normed). df2_ready: the next block's backward wrote this block's df2 (and its ls2
 * gradient) already. wp, bp, sp2: the previous block, whose ls2 residual backward runs with this
 * block's norm1 backward (RMSNorm; see iv2_vit_backward), or NULL. */
static void block_bwd(iv2_vit *m, const vit_block_off *w, vit_act_block *b, vit_bwd *d, int S, int N,
                      const float *s, const float *s2, int fresh, int df2_ready, const vit_block_off *wp,
                      const vit_act_block *bp, const float *sp2) {
    iv2_backend *be = m->be;
    const iv2_vit_config *c = &m->cfg;
    int C = c->width, M = S * N, nh = c->heads, D = C / nh, Hm = c->mlp;
    float scale = 1.0f / sqrtf((float)D);
    size_t CC = (size_t)C * C;
    /* MLP branch: x_out = x_mid + s ls2 f2. Each buffer below has one producer and is written
     * (IV2_SET), but dh after the q, k and v GEMMs and dx, the residual stream, which add. */
    if (!df2_ready) be->residual_backward(be, d->df2, GO(w->ls2), d->dx, b->f2, WO(w->ls2), s2, S, N, C, IV2_SET);
    if (!fresh) be->gelu(be, b->g, b->f1, (size_t)M * Hm, c->gelu);   /* recompute g */
    if (be->matmul_backward_gelu && c->gelu == IV2_GELU_TANH)   /* df1 straight from the fc2 dgrad's epilogue */
        be->matmul_backward_gelu(be, d->df1, G(w->fc2_w), G(w->fc2_b), d->df2, b->g, W(w->fc2_w), b->f1, M, Hm, C);
    else {
        be->matmul_backward(be, d->dg, G(w->fc2_w), G(w->fc2_b), d->df2, b->g, W(w->fc2_w), M, Hm, C, IV2_SET);
        be->gelu_backward(be, d->df1, d->dg, b->f1, (size_t)M * Hm, c->gelu, IV2_SET);
    }
    if (!fresh) norm_fwd(m, b->h2, b->m2, b->r2, b->x_mid, w->norm2_w, w->norm2_b, M);   /* recompute h2 */
    be->matmul_backward(be, d->dh, G(w->fc1_w), G(w->fc1_b), d->df1, b->h2, W(w->fc1_w), M, C, Hm, IV2_SET);
    /* norm2, then the attention branch: x_mid = x_in + s ls1 o (RMSNorm: one pass for both) */
    if (c->norm == IV2_NORM_RMS)
        be->rmsnorm_residual_backward(be, d->dx, G(w->norm2_w), d->dh, b->x_mid, W(w->norm2_w), b->r2, d->dout,
                                      GO(w->ls1), b->o, WO(w->ls1), s, S, N, C);
    else {
        norm_bwd(m, d->dx, d->dh, b->x_mid, w->norm2_w, w->norm2_b, b->m2, b->r2, M, IV2_ADD);
        be->residual_backward(be, d->dout, GO(w->ls1), d->dx, b->o, WO(w->ls1), s, S, N, C, IV2_SET);
    }
    be->matmul_backward(be, d->da, G(w->proj_w), G(w->proj_b), d->dout, b->a, W(w->proj_w), M, C, C, IV2_SET);
    if (!fresh) norm_fwd(m, b->h1, b->m1, b->r1, b->x_in, w->norm1_w, w->norm1_b, M);   /* recompute h1 */
    if (c->qk_norm) {
        be->attention_backward(be, d->dqn, d->dkn, d->dv, d->da, b->qn, b->kn, b->v, b->a, b->lse, S, nh, N, N, D, C,
                               C, C, scale, IV2_SET);
        be->rmsnorm_backward(be, d->dq, G(w->q_norm), d->dqn, b->q, W(w->q_norm), b->rq, M, C, IV2_SET);
        be->rmsnorm_backward(be, d->dk, G(w->k_norm), d->dkn, b->k, W(w->k_norm), b->rk, M, C, IV2_SET);
        /* dh = dq Wq + dk Wk + dv Wv; the weight gradients of all three in one launch without biases */
        int hb = w->qkv_b != NOOFF;
        be->matmul_backward(be, d->dh, hb ? G(w->qkv_w) : NULL, hb ? G(w->qkv_b) : NULL, d->dq, b->h1, W(w->qkv_w), M,
                            C, C, IV2_SET);
        be->matmul_backward(be, d->dh, hb ? G(w->qkv_w + CC) : NULL, hb ? G(w->qkv_b + C) : NULL, d->dk, b->h1,
                            W(w->qkv_w + CC), M, C, C, IV2_ADD);
        be->matmul_backward(be, d->dh, hb ? G(w->qkv_w + 2 * CC) : NULL, hb ? G(w->qkv_b + 2 * C) : NULL, d->dv, b->h1,
                            W(w->qkv_w + 2 * CC), M, C, C, IV2_ADD);
        if (!hb)
            be->matmul_batch_w_backward(be, G(w->qkv_w), d->dq, b->h1, M, C, C, 3, CC, elems_between(be, d->dq, d->dk));
    } else {
        void *dqkv = d->dq;
        be->attention_backward(be, dqkv, IV2_AT(be, dqkv, C), IV2_AT(be, dqkv, 2 * C), d->da, b->qkv,
                               IV2_AT(be, b->qkv, C), IV2_AT(be, b->qkv, 2 * C), b->a, b->lse, S, nh, N, N, D, 3 * C,
                               3 * C, C, scale, IV2_SET);
        be->matmul_backward(be, d->dh, G(w->qkv_w), GO(w->qkv_b), dqkv, b->h1, W(w->qkv_w), M, C, 3 * C, IV2_SET);
    }
    if (w->qkv_b != NOOFF) be->memset0(be, G(w->qkv_b + C), (size_t)C * be->esize);   /* the k bias stays 0 */
    if (wp)   /* and the previous block's x_out = x_mid + s ls2 f2, into df2 for its backward */
        be->rmsnorm_residual_backward(be, d->dx, G(w->norm1_w), d->dh, b->x_in, W(w->norm1_w), b->r1, d->df2,
                                      GO(wp->ls2), bp->f2, WO(wp->ls2), sp2, S, N, C);
    else norm_bwd(m, d->dx, d->dh, b->x_in, w->norm1_w, w->norm1_b, b->m1, b->r1, M, IV2_ADD);
}

static void pool_fwd(iv2_vit *m, vit_arena *a, const void *x, int S, int N, void *pooled, float *pool_attn) {
    iv2_backend *be = m->be;
    const iv2_vit_config *c = &m->cfg;
    const vit_off *o = &m->st->off;
    int C = c->width, M = S * N, ph = c->pool_heads, D = C / ph;
    float eps = c->pool_eps;
    be->mean_rows(be, a->xm, x, S, N, C);
    be->layernorm(be, a->pqn, a->pm_q, a->pr_q, a->xm, W(o->pq_lw), W(o->pq_lb), S, C, eps);
    be->layernorm(be, a->pkn, a->pm_k, a->pr_k, x, W(o->pk_lw), W(o->pk_lb), M, C, eps);
    be->layernorm(be, a->pvn, a->pm_v, a->pr_v, x, W(o->pv_lw), W(o->pv_lb), M, C, eps);
    be->matmul(be, a->pq, a->pqn, W(o->pq_w), W(o->pq_b), S, C, C);
    be->matmul(be, a->pk, a->pkn, W(o->pk_w), W(o->pk_b), M, C, C);
    be->matmul(be, a->pv, a->pvn, W(o->pv_w), W(o->pv_b), M, C, C);
    /* the map over the tokens only when asked for (iv2-extract's; 0.34 ms of a training step on an H100) */
    be->attention(be, a->po, a->plse, pool_attn ? a->pprobs : NULL, a->pq, a->pk, a->pv, S, ph, 1, N, D, C, C, C,
                  1.0f / sqrtf((float)D));
    if (pooled) be->matmul(be, pooled, a->po, W(o->pp_w), W(o->pp_b), S, C, c->pool_dim);
    if (pool_attn) {
        int cls = c->cls ? 1 : 0;
        for (int s = 0; s < S; s++)
            be->copy(be, pool_attn + (size_t)s * (N - cls), a->pprobs + (size_t)s * N + cls,
                     sizeof(float) * (size_t)(N - cls));
    }
}

static void pool_bwd(iv2_vit *m, vit_arena *a, vit_bwd *d, const void *x, int S, int N, const void *dpooled) {
    iv2_backend *be = m->be;
    const iv2_vit_config *c = &m->cfg;
    const vit_off *o = &m->st->off;
    int C = c->width, M = S * N, ph = c->pool_heads, D = C / ph;
    be->matmul_backward(be, d->dpo, G(o->pp_w), G(o->pp_b), dpooled, a->po, W(o->pp_w), S, C, c->pool_dim, IV2_SET);
    be->attention_backward(be, d->dpq, d->dpk, d->dpv, d->dpo, a->pq, a->pk, a->pv, a->po, a->plse, S, ph, 1, N, D, C,
                           C, C, 1.0f / sqrtf((float)D), IV2_SET);
    be->matmul_backward(be, d->dpqn, G(o->pq_w), G(o->pq_b), d->dpq, a->pqn, W(o->pq_w), S, C, C, IV2_SET);
    be->matmul_backward(be, d->dpkn, G(o->pk_w), G(o->pk_b), d->dpk, a->pkn, W(o->pk_w), M, C, C, IV2_SET);
    be->matmul_backward(be, d->dpvn, G(o->pv_w), G(o->pv_b), d->dpv, a->pvn, W(o->pv_w), M, C, C, IV2_SET);
    be->layernorm_backward(be, d->dxm, G(o->pq_lw), G(o->pq_lb), d->dpqn, a->xm, W(o->pq_lw), a->pm_q, a->pr_q, S, C,
                           IV2_SET);
    be->layernorm_backward(be, d->dx, G(o->pk_lw), G(o->pk_lb), d->dpkn, x, W(o->pk_lw), a->pm_k, a->pr_k, M, C,
                           IV2_ADD);
    be->layernorm_backward(be, d->dx, G(o->pv_lw), G(o->pv_lb), d->dpvn, x, W(o->pv_lw), a->pm_v, a->pr_v, M, C,
                           IV2_ADD);
    be->mean_rows_backward(be, d->dx, d->dxm, S, N, C);
}

/* copy (or final-normalise) block l's output of samples [s0, s0+S) into the caller's buffers */
static void emit(iv2_vit *m, const iv2_vit_io *io, int k, const void *x, int s0, int S, int N) {
    iv2_backend *be = m->be;
    const iv2_vit_config *c = &m->cfg;
    if (!io->out[k]) return;
    void *dst = IV2_AT(be, io->out[k], (size_t)s0 * N * c->width);
    if (io->final_norm_last && io->blocks[k] == c->depth - 1)
        norm_fwd(m, dst, NULL, NULL, x, m->st->off.norm_w, m->st->off.norm_b, S * N);
    else
        be->copy(be, dst, x, (size_t)S * N * c->width * be->esize);
}

static const float *drop_at(const float *d, int l, int S) { return d ? d + (size_t)l * S : NULL; }

static int last_block(const iv2_vit *m, const iv2_vit_io *io) {
    if (io->pooled || io->pool_attn) return m->cfg.depth - 1;
    return io->n_out ? io->blocks[io->n_out - 1] : -1;
}

/* ---- public forwards ---- */

int iv2_vit_forward(iv2_vit *m, iv2_vit_io *io) {
    if (check_io(m, io)) return -1;
    const iv2_vit_config *c = &m->cfg;
    iv2_backend *be = m->be;
    int N = io->vis ? io->n_vis : iv2_vit_tokens(c), last = last_block(m, io);
    int B = m->batch > 0 ? m->batch : 1;
    if (B > io->S) B = io->S;
    vit_arena *a = &m->st->inf;
    if (a->n_bufs && (a->n_tok != N || a->S < B)) vit_arena_free(be, a);
    if (!a->n_bufs && arena_make(m, a, B, N, 0, NULL)) return -1;
    B = a->S;
    size_t frame_bytes = (size_t)c->frames * c->img * c->img * 3;
    for (int s0 = 0; s0 < io->S; s0 += B) {
        int S = io->S - s0 < B ? io->S - s0 : B;
        embed(m, a, io->frames + (size_t)s0 * frame_bytes, S, io->vis ? io->vis + (size_t)s0 * N : NULL, NULL, N);
        vit_act_block *b = &a->blk[0];
        int k = 0;
        for (int l = 0; l <= last; l++) {
            const vit_block_off *wn = l < last ? &m->st->off.blk[l + 1] : NULL;   /* the next block's norm1 */
            block_fwd(m, &m->st->off.blk[l], b, S, N, NULL, NULL, l > 0, wn, b, 1);
            while (k < io->n_out && io->blocks[k] == l) emit(m, io, k++, b->x_out, s0, S, N);
        }
        if (io->pooled || io->pool_attn)
            pool_fwd(m, a, b->x_out, S, N, io->pooled ? IV2_AT(be, io->pooled, (size_t)s0 * c->pool_dim) : NULL,
                     io->pool_attn ? io->pool_attn + (size_t)s0 * (N - (c->cls ? 1 : 0)) : NULL);
    }
    return 0;
}

size_t iv2_vit_params_before(const iv2_vit *m, int l) {
    return l < m->cfg.depth ? m->st->off.blk[l].norm1_w : m->n_elems;
}

int iv2_vit_forward_train(iv2_vit *m, iv2_vit_io *io) {
    if (check_io(m, io)) return -1;
    const iv2_vit_config *c = &m->cfg;
    int N = io->vis ? io->n_vis : iv2_vit_tokens(c), S = io->S;
    if (io->final_norm_last) return iv2_err("model %s: training with the final norm on an output is not supported", c->name);
    vit_arena *a = &m->st->tr;
    if (!a->n_bufs || a->S != S || a->n_tok != N || a->recompute != vit_recompute_blocks(m) ||
        a->keep != vit_keep_normed(m, 1)) {
        vit_bwd *bw = iv2_calloc(1, sizeof *bw);
        if (arena_make(m, a, S, N, 1, bw)) { free(bw); return -1; }
        a->bwd = bw;
    }
    if (m->params_needed) m->params_needed(m->params_needed_ctx, iv2_vit_params_before(m, 0));
    embed(m, a, io->frames, S, io->vis, io->vis ? io->vis_rows : NULL, N);
    int k = 0;
    /* all blocks run: the backward expects every block's activations */
    for (int l = 0; l < c->depth; l++) {
        vit_act_block *b = &a->blk[l];
        int nx = l + 1 < c->depth;   /* the next block's norm1 runs here, with this block's last residual */
        /* block l, the next one's norm1; after the last block the final norm and the pooling head */
        if (m->params_needed) m->params_needed(m->params_needed_ctx, iv2_vit_params_before(m, l + 2));
        block_fwd(m, &m->st->off.blk[l], b, S, N, drop_at(io->drop, l, S),
                  drop_at(io->drop_mlp ? io->drop_mlp : io->drop, l, S), l > 0, nx ? &m->st->off.blk[l + 1] : NULL,
                  nx ? &a->blk[l + 1] : NULL, 1);
        while (k < io->n_out && io->blocks[k] == l) emit(m, io, k++, b->x_out, 0, S, N);
    }
    if (c->pool_heads)   /* always, so that a pooled gradient can flow back */
        pool_fwd(m, a, a->xfin, S, N, io->pooled, io->pool_attn);
    m->st->last_S = S;
    m->st->last_nvis = N;
    return 0;
}

int iv2_vit_backward(iv2_vit *m, const iv2_vit_io *io, void *const *dout, const void *dpooled) {
    const iv2_vit_config *c = &m->cfg;
    iv2_backend *be = m->be;
    vit_arena *a = &m->st->tr;
    int S = m->st->last_S, N = m->st->last_nvis;
    if (!a->n_bufs || S != io->S || N != (io->vis ? io->n_vis : iv2_vit_tokens(c)))
        return iv2_err("model %s: backward without a matching training forward", c->name);
    if (!m->grads && iv2_vit_alloc_grads(m)) return -1;
    vit_bwd *d = (vit_bwd *)a->bwd;
    int C = c->width, M = S * N, T = iv2_vit_tokens(c);
    int K = 3 * c->tubelet * c->patch * c->patch;
    const vit_off *o = &m->st->off;
    be->memset0(be, d->dx, (size_t)M * C * be->esize);
    if (dpooled && c->pool_heads) pool_bwd(m, a, d, a->xfin, S, N, dpooled);
    int k = io->n_out - 1, df2_ready = 0;
    for (int l = c->depth - 1; l >= 0; l--) {
        for (; k >= 0 && io->blocks[k] == l; k--)
            if (dout && dout[k]) be->axpy(be, d->dx, dout[k], 1.0f, (size_t)M * C);
        const float *s1 = drop_at(io->drop, l, S), *s2 = drop_at(io->drop_mlp ? io->drop_mlp : io->drop, l, S);
        int fresh = l < a->recompute;
        if (fresh) block_fwd(m, &o->blk[l], &a->blk[l], S, N, s1, s2, 0, NULL, NULL, 0);   /* same ops: same values */
        /* With RMSNorm, block l's norm1 backward runs with block l-1's ls2 residual backward, when
         * l-1 keeps its activations (a recomputed one's f2 is not there yet) and no read-out
         * gradient is added to dx between the two */
        int p = l - 1, fuse = c->norm == IV2_NORM_RMS && p >= a->recompute;
        for (int j = 0; fuse && j < io->n_out; j++) fuse = !(io->blocks[j] == p && dout && dout[j]);
        block_bwd(m, &o->blk[l], &a->blk[l], d, S, N, s1, s2, fresh || a->keep, df2_ready, fuse ? &o->blk[p] : NULL,
                  fuse ? &a->blk[p] : NULL, fuse ? drop_at(io->drop_mlp ? io->drop_mlp : io->drop, p, S) : NULL);
        df2_ready = fuse;
        if (m->grads_ready) m->grads_ready(m->grads_ready_ctx, o->blk[l].norm1_w);   /* blocks >= l done */
    }
    /* embedding: the position table's rows (its CLS row: the CLS, less the bias the GEMM gave
     * that row), then the patch-embed GEMM (CLS rows have zero patches: nothing into its weight) */
    be->memset0(be, d->dposx, (size_t)T * C * be->esize);
    be->add_table_rows_backward(be, d->dposx, d->dx, a->gidx, M, T, C);
    if (c->pos == IV2_POS_LEARNED) be->axpy(be, G(o->pos), d->dposx, 1.0f, (size_t)T * C);
    if (c->cls) {
        be->axpy(be, G(o->cls), d->dposx, 1.0f, C);
        be->axpy(be, G(o->pe_b), d->dposx, -1.0f, C);
    }
    be->matmul_backward(be, NULL, G(o->pe_w), G(o->pe_b), d->dx, a->patches, W(o->pe_w), M, K, C, IV2_ADD);
    if (m->grads_ready) m->grads_ready(m->grads_ready_ctx, 0);
    return 0;
}
