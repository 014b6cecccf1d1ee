/* test_cuda_goldens: the official-model PyTorch goldens of tests/goldens/ (made by
 * tests/gen_goldens.py, checked at fp32 1e-4 on the CPU by tests/test_vit_parity.c) run on the
 * CUDA backend in bf16. Metric: relative L2 error ||gpu - golden|| / ||golden|| per output;
 * limits 3e-2 for block outputs, pooled output and pool attention, 1e-1 for the student's
 * parameter gradients as a whole. Exit 77 when no CUDA device is visible. */
#include "test_vit_util.h"

static iv2_backend *be;

static double rel_l2(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1e-30));
}
static void check_rel(const char *what, const float *got, const float *want, size_t n, double tol) {
    int finite = 1;
    for (size_t i = 0; i < n; i++) finite &= isfinite(got[i]);
    double e = rel_l2(got, want, n);
    printf("  %-40s rel L2 %.3e (limit %.0e)\n", what, e, tol);
    CHECK(finite && e <= tol, "%s: relative L2 error %.3e over %.0e%s", what, e, tol, finite ? "" : " (non-finite)");
}
static void cmp_dev(const char *what, iv2_st_file *io, const char *name, const void *dev, size_t n, int f32,
                    double tol) {
    size_t nw = 0;
    float *want = st_f32(io, name, &nw);
    if (!want) return;
    CHECK(nw == n, "%s: golden has %zu elements, model gave %zu", what, nw, n);
    float *got = malloc(sizeof(float) * (n ? n : 1));
    if (f32) be->download_raw(be, got, dev, n * 4); else be->download(be, got, dev, n);
    if (nw == n) check_rel(what, got, want, n, tol);
    free(got); free(want);
}

static iv2_vit *golden_model(const char *tag, iv2_st_file *io) {
    char p[512], w[64];
    iv2_vit_config c;
    if (iv2_st_open(io, golden(tag, p, sizeof p))) { CHECK(0, "%s", iv2_errmsg()); return NULL; }
    if (golden_config(io, &c)) { CHECK(0, "%s", iv2_errmsg()); iv2_st_close(io); return NULL; }
    iv2_vit *m = iv2_vit_create(be, &c);
    CHECK(m != NULL, "%s", iv2_errmsg());
    snprintf(w, sizeof w, "%.*s_w", (int)(strlen(tag) - 3), tag);
    if (m && iv2_vit_load(m, golden(w, p, sizeof p))) {
        CHECK(0, "load %s: %s", w, iv2_errmsg());
        iv2_vit_free(m);
        m = NULL;
    }
    if (!m) iv2_st_close(io);
    return m;
}

/* teachers: every block, plus pooled/pool attention (InternViT) or the final norm (VideoMAE) */
static void teacher(const char *tag, int videomae) {
    iv2_st_file io;
    iv2_vit *m = golden_model(tag, &io);
    if (!m) return;
    const iv2_vit_config *c = &m->cfg;
    size_t nfr;
    void *frames = st_raw_upload(be, &io, "in.frames", &nfr);
    int S = (int)(nfr / ((size_t)c->frames * c->img * c->img * 3)), N = iv2_vit_tokens(c), C = c->width;
    size_t n = (size_t)S * N * C;
    iv2_vit_io x = {0};
    x.frames = frames; x.S = S; x.n_out = c->depth;
    x.final_norm_last = videomae;
    for (int k = 0; k < c->depth; k++) { x.blocks[k] = k; x.out[k] = be->alloc(be, n * be->esize); }
    if (!videomae) {
        x.pooled = be->alloc(be, (size_t)S * c->pool_dim * be->esize);
        x.pool_attn = be->alloc(be, sizeof(float) * S * (N - 1));
    }
    m->batch = 2;
    CHECK(iv2_vit_forward(m, &x) == 0, "%s", iv2_errmsg());
    char what[96], name[64];
    for (int k = 0; k < c->depth; k++) {
        snprintf(what, sizeof what, "%s block %d%s", tag, k, videomae && k == c->depth - 1 ? " + final norm" : "");
        snprintf(name, sizeof name, videomae && k == c->depth - 1 ? "out.final" : "out.block.%d", k);
        cmp_dev(what, &io, name, x.out[k], n, 0, 3e-2);
    }
    if (!videomae) {
        snprintf(what, sizeof what, "%s pooled", tag);
        cmp_dev(what, &io, "out.pooled", x.pooled, (size_t)S * c->pool_dim, 0, 3e-2);
        snprintf(what, sizeof what, "%s pool attention", tag);
        cmp_dev(what, &io, "out.pool_attn", x.pool_attn, (size_t)S * (N - 1), 1, 3e-2);
        be->free(be, x.pooled); be->free(be, x.pool_attn);
    }
    for (int k = 0; k < c->depth; k++) be->free(be, x.out[k]);
    be->free(be, frames);
    iv2_vit_free(m);
    iv2_st_close(&io);
}

static void student(void) {
    iv2_st_file io;
    iv2_vit *m = golden_model("student_io", &io);
    if (!m) return;
    const iv2_vit_config *c = &m->cfg;
    size_t nfr, ndrop;
    void *frames = st_raw_upload(be, &io, "in.frames", &nfr);
    int S = (int)(nfr / ((size_t)c->frames * c->img * c->img * 3)), C = c->width;
    iv2_st_tensor *tv = iv2_st_find(&io, "in.vis");
    CHECK(tv && tv->dtype == IV2_I32, "in.vis");
    if (!tv) return;
    int32_t *vis = malloc(tv->nbytes);
    memcpy(vis, tv->data, tv->nbytes);
    float *drop = st_f32(&io, "in.drop", &ndrop);
    float *drop_mlp = iv2_st_find(&io, "in.drop_mlp") ? st_f32(&io, "in.drop_mlp", NULL) : NULL;
    int NV = (int)(tv->numel / S);
    size_t n = (size_t)S * NV * C;
    iv2_vit_io x = {0};
    x.frames = frames; x.S = S; x.vis = vis; x.n_vis = NV; x.drop = drop; x.drop_mlp = drop_mlp; x.n_out = c->depth;
    void *dout[IV2_VIT_MAX_OUT];
    char what[160], name[128];
    for (int k = 0; k < c->depth; k++) {
        x.blocks[k] = k;
        x.out[k] = be->alloc(be, n * be->esize);
        snprintf(name, sizeof name, "dout.block.%d", k);
        float *h = st_f32(&io, name, NULL);
        dout[k] = be->alloc(be, n * be->esize);
        if (h) be->upload(be, dout[k], h, n);
        free(h);
    }
    x.pooled = be->alloc(be, (size_t)S * c->pool_dim * be->esize);
    void *dpooled = be->alloc(be, (size_t)S * c->pool_dim * be->esize);
    float *h = st_f32(&io, "dout.pooled", NULL);
    if (h) be->upload(be, dpooled, h, (size_t)S * c->pool_dim);
    free(h);
    CHECK(iv2_vit_forward_train(m, &x) == 0, "%s", iv2_errmsg());
    for (int k = 0; k < c->depth; k++) {
        snprintf(what, sizeof what, "student block %d", k);
        snprintf(name, sizeof name, "out.block.%d", k);
        cmp_dev(what, &io, name, x.out[k], n, 0, 3e-2);
    }
    cmp_dev("student pooled", &io, "out.pooled", x.pooled, (size_t)S * c->pool_dim, 0, 3e-2);
    CHECK(iv2_vit_alloc_grads(m) == 0, "%s", iv2_errmsg());
    CHECK(iv2_vit_backward(m, &x, dout, dpooled) == 0, "%s", iv2_errmsg());
    /* all gradients as one vector (tiny per-tensor gradients are bf16 noise), and the
     * largest tensors one by one so a broken op is named */
    float *all = calloc(m->n_elems, sizeof(float)), *got = dl(be, m->grads, m->n_elems);
    int have = 1;
    for (int i = 0; i < m->n_param; i++) {
        const iv2_vit_param *p = &m->param[i];
        size_t ng = 0;
        snprintf(name, sizeof name, "grad.%s", p->name);
        float *want = st_f32(&io, name, &ng);
        if (!want || ng != p->numel) { have = 0; free(want); continue; }
        memcpy(all + p->offset, want, ng * sizeof(float));
        if (ng >= 4096) {
            snprintf(what, sizeof what, "student d%s", p->name);
            check_rel(what, got + p->offset, want, ng, 1.5e-1);
        }
        free(want);
    }
    if (have) check_rel("student all parameter gradients", got, all, m->n_elems, 1e-1);
    free(all); free(got);
    for (int k = 0; k < c->depth; k++) { be->free(be, x.out[k]); be->free(be, dout[k]); }
    be->free(be, x.pooled); be->free(be, dpooled); be->free(be, frames);
    free(vis); free(drop); free(drop_mlp);
    iv2_vit_free(m);
    iv2_st_close(&io);
}

int main(void) {
    be = iv2_backend_create("cuda", 0);
    if (!be) { test_skip(iv2_errmsg()); return test_done(); }
    teacher("internvit_io", 0);
    teacher("internvit_rs_io", 0);
    teacher("videomae_io", 1);
    student();
    iv2_backend_destroy(be);
    return test_done();
}
