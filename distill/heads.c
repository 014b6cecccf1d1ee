/* heads.c: the per-layer projection heads of the stage-1 student (internvideo2_pretrain.py
 * Linear_Decoder / MLP_Decoder), forward and backward side by side.
 *
 *   CLIP head k:  x = block_out + clip_pos_embed[vis]      [B*nv, C]
 *                 y = LN(x W^T + b) (eps 1e-5);  out = y / |y|
 *   MAE head k:   x = block_out[:, 1:] + mae_pos_embed[vis[1:] - 1]
 *                 y = LN(GELU(x W1^T + b1) W2^T + b2);  out = y / |y|
 *   final head:   y = LN(pooled W^T + b);  out = y / |y|
 * Each head is independent of the others, so one call runs its forward, the loss rows
 * (2 - 2 <out, target>) and its backward at once, reusing one scratch set: memory is that of one
 * head, whatever the number of layers. Parameter names follow the official checkpoint. */
#include "distill.h"
#include "vit.h"
#include "err.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEAD_LN_EPS 1e-5f

static size_t add_param(iv2_heads *h, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2) {
    h->table = iv2_realloc(h->table, sizeof *h->table * (size_t)(h->n_table + 1));
    iv2_dparam *p = &h->table[h->n_table++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    int64_t s[3] = {d0, d1, d2};
    p->n = 1;
    for (int i = 0; i < ndim; i++) { p->shape[i] = s[i]; p->n *= (size_t)s[i]; }
    p->off = h->n_params;
    p->no_wd = iv2_no_weight_decay(name, ndim);
    h->n_params += p->n;
    return p->off;
}

static void layout(iv2_heads *h) {
    const iv2_heads_dims *d = &h->d;
    char nm[96];
    for (int k = 0; k < d->n_clip; k++) {
        snprintf(nm, sizeof nm, "clip_decoder.%d.head.weight", k); h->clip_w[k] = add_param(h, nm, 2, d->clip_dim, d->C, 0);
        snprintf(nm, sizeof nm, "clip_decoder.%d.head.bias", k);   h->clip_b[k] = add_param(h, nm, 1, d->clip_dim, 0, 0);
        snprintf(nm, sizeof nm, "clip_decoder.%d.norm.weight", k); h->clip_lnw[k] = add_param(h, nm, 1, d->clip_dim, 0, 0);
        snprintf(nm, sizeof nm, "clip_decoder.%d.norm.bias", k);   h->clip_lnb[k] = add_param(h, nm, 1, d->clip_dim, 0, 0);
    }
    for (int k = 0; k < d->n_mae; k++) {
        snprintf(nm, sizeof nm, "mae_decoder.%d.head.0.weight", k); h->mae_w1[k] = add_param(h, nm, 2, d->C, d->C, 0);
        snprintf(nm, sizeof nm, "mae_decoder.%d.head.0.bias", k);   h->mae_b1[k] = add_param(h, nm, 1, d->C, 0, 0);
        snprintf(nm, sizeof nm, "mae_decoder.%d.head.2.weight", k); h->mae_w2[k] = add_param(h, nm, 2, d->mae_dim, d->C, 0);
        snprintf(nm, sizeof nm, "mae_decoder.%d.head.2.bias", k);   h->mae_b2[k] = add_param(h, nm, 1, d->mae_dim, 0, 0);
        snprintf(nm, sizeof nm, "mae_decoder.%d.norm.weight", k);   h->mae_lnw[k] = add_param(h, nm, 1, d->mae_dim, 0, 0);
        snprintf(nm, sizeof nm, "mae_decoder.%d.norm.bias", k);     h->mae_lnb[k] = add_param(h, nm, 1, d->mae_dim, 0, 0);
    }
    if (d->use_final) {
        h->fin_w = add_param(h, "final_clip_decoder.head.weight", 2, d->final_dim, d->pool_dim, 0);
        h->fin_b = add_param(h, "final_clip_decoder.head.bias", 1, d->final_dim, 0, 0);
        h->fin_lnw = add_param(h, "final_clip_decoder.norm.weight", 1, d->final_dim, 0, 0);
        h->fin_lnb = add_param(h, "final_clip_decoder.norm.bias", 1, d->final_dim, 0, 0);
    }
    int n = d->T * d->G * d->G;
    if (d->n_clip) h->clip_pos = add_param(h, "clip_pos_embed", 3, 1, 1 + n, d->C);
    if (d->n_mae) h->mae_pos = add_param(h, "mae_pos_embed", 3, 1, n, d->C);
}

size_t iv2_heads_count_params(const iv2_heads_dims *d) {
    iv2_heads h;
    memset(&h, 0, sizeof h);
    h.d = *d;
    layout(&h);
    free(h.table);
    return h.n_params;
}

static int imax(int a, int b) { return a > b ? a : b; }

/* the heads that write loss rows: each its own max_rows of loss_rows (deferred readback) */
static int loss_slots(const iv2_heads_dims *d) { return d->n_clip + d->n_mae + (d->use_final ? 1 : 0); }

iv2_heads *iv2_heads_create(iv2_backend *be, const iv2_heads_dims *d) {
    if (d->C < 1 || d->n_clip < 0 || d->n_mae < 0 || d->n_clip > IV2_DISTILL_MAX_LAYERS ||
        d->n_mae > IV2_DISTILL_MAX_LAYERS || d->max_rows < 1 || d->T < 1 || d->G < 1 ||
        (d->n_clip && d->clip_dim < 1) || (d->n_mae && d->mae_dim < 1) ||
        (d->use_final && (d->final_dim < 1 || d->pool_dim < 1))) {
        iv2_err("heads: bad dimensions (C %d, clip %d x %d, mae %d x %d, final %d -> %d, rows %d)", d->C, d->n_clip,
                d->clip_dim, d->n_mae, d->mae_dim, d->pool_dim, d->final_dim, d->max_rows);
        return NULL;
    }
    iv2_heads *h = iv2_calloc(1, sizeof *h);
    h->d = *d;
    h->be = be;
    layout(h);
    h->params = be->alloc(be, h->n_params * be->esize);
    h->grads = be->alloc(be, h->n_params * be->esize);
    int W = imax(imax(d->C, d->clip_dim), imax(d->mae_dim, imax(d->final_dim, d->pool_dim)));
    size_t big = (size_t)d->max_rows * W * be->esize;
    void **bufs[] = {&h->x, &h->h1, &h->g1, &h->y, &h->yn, &h->tgt, &h->dx, &h->dh1, &h->dg1, &h->dy, &h->dyn};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) *bufs[i] = be->alloc(be, big);
    size_t fr = (size_t)d->max_rows * sizeof(float);
    h->ln_mean = be->alloc(be, fr); h->ln_rstd = be->alloc(be, fr);
    h->loss_rows = be->alloc(be, fr * (size_t)loss_slots(d));
    h->idx_pos = be->alloc(be, (size_t)d->max_rows * sizeof(int32_t));
    h->idx_rows = be->alloc(be, (size_t)d->max_rows * sizeof(int32_t));
    if (!h->params || !h->grads || !h->dyn || !h->idx_rows) {
        iv2_heads_free(h);
        iv2_err("heads: cannot allocate %zu parameters and scratch for %d rows", h->n_params, d->max_rows);
        return NULL;
    }
    return h;
}

void iv2_heads_free(iv2_heads *h) {
    if (!h) return;
    iv2_backend *be = h->be;
    void *bufs[] = {h->params, h->grads, h->x, h->h1, h->g1, h->y, h->yn, h->tgt, h->dx, h->dh1, h->dg1, h->dy,
                    h->dyn, h->ln_mean, h->ln_rstd, h->loss_rows, h->idx_pos, h->idx_rows};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        if (bufs[i]) be->free(be, bufs[i]);
    free(h->table);
    free(h);
}

/* normal(0, std) clipped to [-2, 2] absolute, as timm trunc_normal_(std=.02) (whose a, b are absolute) */
static float trunc_normal(iv2_rng *r, float std) {
    for (;;) {
        double u1 = iv2_rng_uniform(r), u2 = iv2_rng_uniform(r);
        double z = sqrt(-2.0 * log(u1)) * cos(2 * M_PI * u2) * std;
        if (z >= -2.0 && z <= 2.0) return (float)z;
    }
}

void iv2_heads_init(iv2_heads *h, uint64_t seed) {
    float *host = iv2_calloc(h->n_params, sizeof(float));
    iv2_rng r;
    for (int i = 0; i < h->n_table; i++) {
        const iv2_dparam *p = &h->table[i];
        float *dst = host + p->off;
        iv2_rng_seed(&r, seed, 0x68656164 /* "head" */, (uint64_t)i, 0);
        if (strstr(p->name, "pos_embed")) {
            int cls = !strcmp(p->name, "clip_pos_embed");
            if (cls) iv2_sincos_3d_table(dst, h->d.C, h->d.G, h->d.T, 1);
            else {   /* the same table without its CLS row */
                float *t = iv2_calloc(p->n + (size_t)h->d.C, sizeof(float));   /* zero where the table leaves gaps (odd sub-widths) */
                iv2_sincos_3d_table(t, h->d.C, h->d.G, h->d.T, 1);
                memcpy(dst, t + h->d.C, sizeof(float) * p->n);
                free(t);
            }
        } else if (p->ndim == 2) {
            for (size_t j = 0; j < p->n; j++) dst[j] = trunc_normal(&r, 0.02f);
        } else if (strstr(p->name, "norm.weight")) {
            for (size_t j = 0; j < p->n; j++) dst[j] = 1.0f;
        }   /* biases stay 0 */
    }
    h->be->upload(h->be, h->params, host, h->n_params);
    free(host);
}

#define P(off) IV2_AT(be, h->params, off)
#define G(off) IV2_AT(be, h->grads, off)

/* the means of n loss rows (host) */
static void loss_means(const float *rows, int n, double *mean_loss, double *mean_cos) {
    double s = 0;
    for (int i = 0; i < n; i++) s += rows[i];
    if (mean_loss) *mean_loss = s / n;
    if (mean_cos) *mean_cos = 1.0 - s / n / 2.0;
}

/* A head's end: y [M,D] -> LayerNorm -> yn -> L2 -> loss rows against the target (backend
 * memory), and with backward the gradient back through both into dy (written) and the LN's
 * weight gradients: layernorm, l2_cos_loss (L2, loss and L2 backward in one pass) and
 * layernorm_backward. Then the means: read back now (a host wait), or, while deferring, queued for
 * iv2_heads_collect. */
static void head_end(iv2_heads *h, int M, int D, size_t lnw, size_t lnb, const void *target, float scale, int backward,
                     double *mean_loss, double *mean_cos) {
    iv2_backend *be = h->be;
    int off = h->deferring ? h->pending_rows : 0;
    float *rows_dst = h->loss_rows + off;
    be->layernorm(be, h->yn, h->ln_mean, h->ln_rstd, h->y, P(lnw), P(lnb), M, D, HEAD_LN_EPS);
    be->l2_cos_loss(be, rows_dst, backward ? h->dyn : NULL, h->yn, target, M, D, scale);
    if (backward)
        be->layernorm_backward(be, h->dy, G(lnw), G(lnb), h->dyn, h->y, P(lnw), h->ln_mean, h->ln_rstd, M, D, IV2_SET);
    if (h->deferring) {
        h->pending[h->n_pending].off = off;
        h->pending[h->n_pending].M = M;
        h->pending[h->n_pending].mean_loss = mean_loss;
        h->pending[h->n_pending].mean_cos = mean_cos;
        h->n_pending++;
        h->pending_rows += M;
        return;
    }
    float *rows = iv2_malloc(sizeof(float) * (size_t)M);
    be->download_raw(be, rows, h->loss_rows, sizeof(float) * (size_t)M);
    loss_means(rows, M, mean_loss, mean_cos);
    free(rows);
}

void iv2_heads_defer(iv2_heads *h) {
    h->deferring = 1;
    h->n_pending = h->pending_rows = 0;
}

int iv2_heads_collect(iv2_heads *h) {
    h->deferring = 0;
    if (!h->n_pending) return 0;
    float *rows = iv2_malloc(sizeof(float) * (size_t)h->pending_rows);
    h->be->download_raw(h->be, rows, h->loss_rows, sizeof(float) * (size_t)h->pending_rows);
    for (int i = 0; i < h->n_pending; i++)
        loss_means(rows + h->pending[i].off, h->pending[i].M, h->pending[i].mean_loss, h->pending[i].mean_cos);
    free(rows);
    h->n_pending = h->pending_rows = 0;
    return 0;
}

/* a deferred call needs room for its rows and a queue entry: one call per head between defer and collect */
static int check_pending(iv2_heads *h, int M, const char *what) {
    int slots = loss_slots(&h->d);
    if (h->deferring && (h->n_pending >= slots || h->pending_rows + M > slots * h->d.max_rows))
        return iv2_err("%s head: more deferred loss rows than the heads hold (one call per head between defer and collect)", what);
    return 0;
}

static int check_rows(iv2_heads *h, int M, const char *what) {
    if (M < 1 || M > h->d.max_rows) return iv2_err("%s head: %d rows, scratch holds %d", what, M, h->d.max_rows);
    return check_pending(h, M, what);
}

int iv2_heads_clip(iv2_heads *h, int k, const void *inp, void *dinp, const int32_t *vis, int B, int nv,
                   const float *target, float scale, double *mean_loss, double *mean_cos) {
    iv2_backend *be = h->be;
    int M = B * nv, ntok = 1 + h->d.T * h->d.G * h->d.G;
    if (k < 0 || k >= h->d.n_clip) return iv2_err("clip head %d of %d", k, h->d.n_clip);
    if (check_rows(h, M, "clip")) return -1;
    for (int i = 0; i < M; i++)
        if (vis[i] < 0 || vis[i] >= ntok) return iv2_err("clip head: visible token %d outside 0..%d", vis[i], ntok - 1);
    be->upload_raw(be, h->idx_pos, vis, sizeof(int32_t) * (size_t)M);
    be->upload(be, h->tgt, target, (size_t)M * h->d.clip_dim);
    return iv2_heads_clip_dev(h, k, inp, dinp, h->idx_pos, M, h->tgt, scale, mean_loss, mean_cos);
}

int iv2_heads_clip_dev(iv2_heads *h, int k, const void *inp, void *dinp, const int32_t *vis, int M,
                       const void *target, float scale, double *mean_loss, double *mean_cos) {
    iv2_backend *be = h->be;
    int C = h->d.C, D = h->d.clip_dim;
    if (k < 0 || k >= h->d.n_clip) return iv2_err("clip head %d of %d", k, h->d.n_clip);
    if (check_rows(h, M, "clip")) return -1;
    int ntok = 1 + h->d.T * h->d.G * h->d.G;
    /* forward: x = inp + clip_pos[vis] */
    be->copy(be, h->x, inp, (size_t)M * C * be->esize);
    be->add_table_rows(be, h->x, P(h->clip_pos), vis, M, ntok, C);
    be->matmul(be, h->y, h->x, P(h->clip_w[k]), P(h->clip_b[k]), M, C, D);
    head_end(h, M, D, h->clip_lnw[k], h->clip_lnb[k], target, scale, dinp != NULL, mean_loss, mean_cos);
    if (!dinp) return 0;
    /* backward, from dy */
    be->matmul_backward(be, h->dx, G(h->clip_w[k]), G(h->clip_b[k]), h->dy, h->x, P(h->clip_w[k]), M, C, D, IV2_SET);
    be->axpy(be, dinp, h->dx, 1.0f, (size_t)M * C);
    be->add_table_rows_backward(be, G(h->clip_pos), h->dx, vis, M, ntok, C);   /* fp32 sums over the batch */
    return 0;
}

int iv2_heads_mae(iv2_heads *h, int k, const void *inp, void *dinp, const int32_t *vis, int B, int nv,
                  const float *target, float scale, double *mean_loss, double *mean_cos) {
    iv2_backend *be = h->be;
    int np = nv - 1, M = B * np, n = h->d.T * h->d.G * h->d.G;
    if (k < 0 || k >= h->d.n_mae) return iv2_err("mae head %d of %d", k, h->d.n_mae);
    if (check_rows(h, M, "mae")) return -1;
    int32_t *idx = iv2_malloc(sizeof(int32_t) * (size_t)M * 2), *rows = idx + M;
    for (int b = 0; b < B; b++)
        for (int j = 0; j < np; j++) {
            int32_t t = vis[(size_t)b * nv + 1 + j];   /* skip the CLS: the MAE targets have none */
            if (t < 1 || t > n) { free(idx); return iv2_err("mae head: visible token %d outside 1..%d", t, n); }
            idx[b * np + j] = t - 1;
            rows[b * np + j] = b * nv + 1 + j;
        }
    be->upload_raw(be, h->idx_pos, idx, sizeof(int32_t) * (size_t)M);
    be->upload_raw(be, h->idx_rows, rows, sizeof(int32_t) * (size_t)M);
    free(idx);
    be->upload(be, h->tgt, target, (size_t)M * h->d.mae_dim);
    return iv2_heads_mae_dev(h, k, inp, dinp, h->idx_pos, h->idx_rows, M, h->tgt, scale, mean_loss, mean_cos);
}

int iv2_heads_mae_dev(iv2_heads *h, int k, const void *inp, void *dinp, const int32_t *pos, const int32_t *rows,
                      int M, const void *target, float scale, double *mean_loss, double *mean_cos) {
    iv2_backend *be = h->be;
    int C = h->d.C, D = h->d.mae_dim;
    if (k < 0 || k >= h->d.n_mae) return iv2_err("mae head %d of %d", k, h->d.n_mae);
    if (check_rows(h, M, "mae")) return -1;
    int n = h->d.T * h->d.G * h->d.G;
    /* forward: x = inp[rows] + mae_pos[pos] */
    be->gather_rows(be, h->x, inp, rows, M, C);
    be->add_table_rows(be, h->x, P(h->mae_pos), pos, M, n, C);
    be->matmul(be, h->h1, h->x, P(h->mae_w1[k]), P(h->mae_b1[k]), M, C, C);
    be->gelu(be, h->g1, h->h1, (size_t)M * C, IV2_GELU_ERF);   /* nn.GELU(): exact */
    be->matmul(be, h->y, h->g1, P(h->mae_w2[k]), P(h->mae_b2[k]), M, C, D);
    head_end(h, M, D, h->mae_lnw[k], h->mae_lnb[k], target, scale, dinp != NULL, mean_loss, mean_cos);
    if (!dinp) return 0;
    /* backward, from dy */
    be->matmul_backward(be, h->dg1, G(h->mae_w2[k]), G(h->mae_b2[k]), h->dy, h->g1, P(h->mae_w2[k]), M, C, D,
                        IV2_SET);
    be->gelu_backward(be, h->dh1, h->dg1, h->h1, (size_t)M * C, IV2_GELU_ERF, IV2_SET);
    be->matmul_backward(be, h->dx, G(h->mae_w1[k]), G(h->mae_b1[k]), h->dh1, h->x, P(h->mae_w1[k]), M, C, C,
                        IV2_SET);
    be->add_table_rows_backward(be, G(h->mae_pos), h->dx, pos, M, n, C);   /* fp32 sums over the batch */
    be->scatter_add_rows(be, dinp, h->dx, rows, M, C);
    return 0;
}

int iv2_heads_final(iv2_heads *h, const void *inp, void *dinp, int B, const float *target, float scale,
                    double *mean_loss, double *mean_cos) {
    if (!h->d.use_final) return iv2_err("final head: not configured");
    if (check_rows(h, B, "final")) return -1;
    h->be->upload(h->be, h->tgt, target, (size_t)B * h->d.final_dim);
    return iv2_heads_final_dev(h, inp, dinp, B, h->tgt, scale, mean_loss, mean_cos);
}

int iv2_heads_final_dev(iv2_heads *h, const void *inp, void *dinp, int B, const void *target, float scale,
                        double *mean_loss, double *mean_cos) {
    iv2_backend *be = h->be;
    int Cp = h->d.pool_dim, D = h->d.final_dim;
    if (!h->d.use_final) return iv2_err("final head: not configured");
    if (check_rows(h, B, "final")) return -1;
    be->matmul(be, h->y, inp, P(h->fin_w), P(h->fin_b), B, Cp, D);
    head_end(h, B, D, h->fin_lnw, h->fin_lnb, target, scale, dinp != NULL, mean_loss, mean_cos);
    if (!dinp) return 0;
    be->matmul_backward(be, dinp, G(h->fin_w), G(h->fin_b), h->dy, inp, P(h->fin_w), B, Cp, D, IV2_ADD);
    return 0;
}

int iv2_heads_load_st(iv2_heads *h, iv2_st_file *f) {
    float *host = iv2_calloc(h->n_params + 1, sizeof(float));
    for (int i = 0; i < h->n_table; i++) {
        const iv2_dparam *p = &h->table[i];
        iv2_st_tensor *t = iv2_st_find(f, p->name);
        int ok = t && t->ndim == p->ndim;
        for (int j = 0; ok && j < p->ndim; j++) ok = t->shape[j] == p->shape[j];
        if (!ok) {
            free(host);
            return iv2_err("%s: head tensor '%s' %s", f->path, p->name, t ? "has another shape" : "is missing");
        }
        if (iv2_st_read(f, t, host + p->off, IV2_F32)) { free(host); return -1; }
        t->used = 1;
    }
    h->be->upload(h->be, h->params, host, h->n_params);
    free(host);
    return 0;
}
