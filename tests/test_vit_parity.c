/* test_vit_parity.c: the three ViTs against PyTorch goldens (tests/gen_goldens.py):
 * transformers InternVLVisionModel (as InternViT) + the InternVL-C pool head, the same with a
 * bicubic-resized position table, transformers VideoMAEModel (as VideoMAEv2-g), and the
 * InternVideo2 student (forward on visible tokens with drop path, and autograd gradients of
 * every parameter); plus the bicubic resize and the 3-D sin-cos table. fp32, 1e-4 relative. */
#include <unistd.h>
#include "pth.h"
#include "test_vit_util.h"

static iv2_backend *be;

/* model from an io golden's config, weights from the matching *_w golden (or from wpath) */
static iv2_vit *golden_model_w(const char *tag, iv2_st_file *io, const char *wpath) {
    char p[512], w[64];
    iv2_vit_config c;
    if (iv2_st_open(io, golden(tag, p, sizeof p))) { CHECK(0, "%s", iv2_errmsg()); return NULL; }
    if (golden_config(io, &c)) { CHECK(0, "%s", iv2_errmsg()); iv2_st_close(io); return NULL; }
    iv2_vit *m = iv2_vit_create(be, &c);
    CHECK(m != NULL, "%s", iv2_errmsg());
    snprintf(w, sizeof w, "%.*s_w", (int)(strlen(tag) - 3), tag);
    if (m && iv2_vit_load(m, wpath ? wpath : golden(w, p, sizeof p))) {
        CHECK(0, "load %s: %s", w, iv2_errmsg());
        iv2_vit_free(m);
        m = NULL;
    }
    if (!m) iv2_st_close(io);
    return m;
}

static iv2_vit *golden_model(const char *tag, iv2_st_file *io) { return golden_model_w(tag, io, NULL); }

static void compare_dev(const char *what, iv2_st_file *io, const char *name, const void *dev, size_t n) {
    size_t nw = 0;
    float *want = st_f32(io, name, &nw);
    if (!want) return;
    CHECK(nw == n, "%s: golden has %zu elements, model gave %zu", what, nw, n);
    float *got = dl(be, dev, n);
    if (nw == n) close_to(what, got, want, n);
    free(got); free(want);
}

static void test_internvit(const char *tag, const char *wpath) {
    iv2_st_file io;
    iv2_vit *m = golden_model_w(tag, &io, wpath);
    if (!m) return;
    const iv2_vit_config *c = &m->cfg;
    size_t nfr;
    void *frames = st_raw_upload(be, &io, "in.frames", &nfr);
    int T = (int)(nfr / ((size_t)c->img * c->img * 3)), N = iv2_vit_tokens(c), C = c->width;
    iv2_vit_io x = {0};
    x.frames = frames; x.S = T; x.n_out = c->depth;
    for (int k = 0; k < c->depth; k++) {
        x.blocks[k] = k;
        x.out[k] = be->alloc(be, (size_t)T * N * C * be->esize);
    }
    x.pooled = be->alloc(be, (size_t)T * c->pool_dim * be->esize);
    x.pool_attn = be->alloc(be, sizeof(float) * T * (N - 1));
    m->batch = 2;   /* 3 frames in batches of 2: the streaming path */
    CHECK(iv2_vit_forward(m, &x) == 0, "%s", iv2_errmsg());
    char what[64], name[64];
    for (int k = 0; k < c->depth; k++) {
        snprintf(what, sizeof what, "%s block %d", tag, k);
        snprintf(name, sizeof name, "out.block.%d", k);
        compare_dev(what, &io, name, x.out[k], (size_t)T * N * C);
    }
    snprintf(what, sizeof what, "%s pooled", tag);
    compare_dev(what, &io, "out.pooled", x.pooled, (size_t)T * c->pool_dim);
    size_t na;
    float *want = st_f32(&io, "out.pool_attn", &na);
    if (want) {
        float *got = malloc(sizeof(float) * na);
        be->download_raw(be, got, x.pool_attn, sizeof(float) * na);
        snprintf(what, sizeof what, "%s pool attention", tag);
        CHECK(na == (size_t)T * (N - 1), "pool attention size");
        close_to(what, got, want, na);
        free(got); free(want);
    }
    for (int k = 0; k < c->depth; k++) be->free(be, x.out[k]);
    be->free(be, x.pooled); be->free(be, x.pool_attn); be->free(be, frames);
    iv2_vit_free(m);
    iv2_st_close(&io);
}

static void test_videomae(void) {
    iv2_st_file io;
    iv2_vit *m = golden_model("videomae_io", &io);
    if (!m) return;
    const iv2_vit_config *c = &m->cfg;
    size_t nfr;
    void *frames = st_raw_upload(be, &io, "in.frames", &nfr);
    int S = (int)(nfr / ((size_t)c->frames * c->img * c->img * 3)), N = iv2_vit_tokens(c), C = c->width;
    size_t n = (size_t)S * N * C;
    iv2_vit_io x = {0};
    x.frames = frames; x.S = S; x.n_out = c->depth;
    for (int k = 0; k < c->depth; k++) { x.blocks[k] = k; x.out[k] = be->alloc(be, n * be->esize); }
    m->batch = 1;
    CHECK(iv2_vit_forward(m, &x) == 0, "%s", iv2_errmsg());
    char what[64], name[64];
    for (int k = 0; k < c->depth; k++) {
        snprintf(what, sizeof what, "videomae block %d", k);
        snprintf(name, sizeof name, "out.block.%d", k);
        compare_dev(what, &io, name, x.out[k], n);
    }
    /* the final LayerNorm applied to the last block's output */
    x.final_norm_last = 1;
    m->batch = 4;
    CHECK(iv2_vit_forward(m, &x) == 0, "%s", iv2_errmsg());
    compare_dev("videomae final norm", &io, "out.final", x.out[c->depth - 1], n);
    compare_dev("videomae block 0 (batch 2)", &io, "out.block.0", x.out[0], n);
    for (int k = 0; k < c->depth; k++) be->free(be, x.out[k]);
    be->free(be, frames);
    iv2_vit_free(m);
    iv2_st_close(&io);
}

static void test_student(void) {
    iv2_st_file io;
    iv2_vit *m = golden_model("student_io", &io);
    if (!m) return;
    const iv2_vit_config *c = &m->cfg;
    size_t nfr, nvis, ndrop;
    void *frames = st_raw_upload(be, &io, "in.frames", &nfr);
    int S = (int)(nfr / ((size_t)c->frames * c->img * c->img * 3)), C = c->width;
    iv2_st_tensor *tv = iv2_st_find(&io, "in.vis");
    CHECK(tv && tv->dtype == IV2_I32, "in.vis");
    if (!tv) return;
    nvis = tv->numel;
    int32_t *vis = malloc(tv->nbytes);
    memcpy(vis, tv->data, tv->nbytes);
    float *drop = st_f32(&io, "in.drop", &ndrop), *drop_mlp = st_f32(&io, "in.drop_mlp", NULL);
    int NV = (int)(nvis / S);
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
        compare_dev(what, &io, name, x.out[k], n);
    }
    compare_dev("student pooled", &io, "out.pooled", x.pooled, (size_t)S * c->pool_dim);
    CHECK(iv2_vit_alloc_grads(m) == 0, "%s", iv2_errmsg());
    CHECK(iv2_vit_backward(m, &x, dout, dpooled) == 0, "%s", iv2_errmsg());
    /* gradients that are zero in exact arithmetic (the pool's k bias and LN_k bias: softmax
     * ignores a shift shared by all keys) are rounding noise in both; they get an absolute
     * tolerance of 1e-5 of the RMS over all gradients */
    double ss = 0, cnt = 0;
    for (int i = 0; i < m->n_param; i++) {
        size_t ng = 0;
        snprintf(name, sizeof name, "grad.%s", m->param[i].name);
        float *g = st_f32(&io, name, &ng);
        for (size_t j = 0; g && j < ng; j++) ss += (double)g[j] * g[j];
        cnt += ng;
        free(g);
    }
    float grms = (float)sqrt(ss / (cnt > 0 ? cnt : 1));
    int ngrad = 0;
    for (int i = 0; i < m->n_param; i++) {
        const iv2_vit_param *p = &m->param[i];
        size_t ng = 0;
        snprintf(name, sizeof name, "grad.%s", p->name);
        snprintf(what, sizeof what, "student d%s", p->name);
        float *want = st_f32(&io, name, &ng);
        if (!want) continue;
        CHECK(ng == p->numel, "%s: %zu elements, want %zu", what, ng, p->numel);
        float *got = dl(be, IV2_AT(be, m->grads, p->offset), p->numel);
        if (ng == p->numel) t_allclose(what, got, want, ng, 1e-4f, 1e-5f * grms);
        free(got); free(want);
        ngrad++;
    }
    CHECK(ngrad == 2 + 2 + c->depth * 13 + 14, "parameter count %d", ngrad);

    /* inference forward without drop path: same visible tokens, no saved activations; with
     * the drop scales off the outputs differ from the golden only where drop acted, so compare
     * with a second training forward without drop */
    iv2_vit_io y = x;
    y.drop = y.drop_mlp = NULL;
    void *inf_out = be->alloc(be, n * be->esize);
    CHECK(iv2_vit_forward_train(m, &y) == 0, "%s", iv2_errmsg());
    float *ref = dl(be, y.out[c->depth - 1], n);
    y.out[c->depth - 1] = inf_out;
    for (int k = 0; k < c->depth - 1; k++) y.out[k] = NULL;
    y.pooled = NULL;
    m->batch = 1;
    CHECK(iv2_vit_forward(m, &y) == 0, "%s", iv2_errmsg());
    float *got = dl(be, inf_out, n);
    close_to("student inference vs training forward", got, ref, n);
    free(ref); free(got);
    be->free(be, inf_out);

    for (int k = 0; k < c->depth; k++) { be->free(be, x.out[k]); be->free(be, dout[k]); }
    be->free(be, x.pooled); be->free(be, dpooled); be->free(be, frames);
    free(vis); free(drop); free(drop_mlp);
    iv2_vit_free(m);
    iv2_st_close(&io);
}

static void test_tables(void) {
    char p[512];
    iv2_st_file f;
    if (iv2_st_open(&f, golden("tables", p, sizeof p))) { CHECK(0, "%s", iv2_errmsg()); return; }
    int pairs[2][2] = {{3, 2}, {5, 7}};
    for (int i = 0; i < 2; i++) {
        char a[64], b[64];
        int gi = pairs[i][0], go = pairs[i][1];
        snprintf(a, sizeof a, "bicubic.%d.%d.src", gi, go);
        snprintf(b, sizeof b, "bicubic.%d.%d.dst", gi, go);
        float *src = st_f32(&f, a, NULL), *want = st_f32(&f, b, NULL);
        if (src && want) {
            float *got = malloc(sizeof(float) * go * go * 6);
            iv2_bicubic_resize_rows(got, src, gi, go, 6);
            t_allclose(b, got, want, (size_t)go * go * 6, 1e-5f, 1e-6f);
            free(got);
        }
        free(src); free(want);
    }
    float *want = st_f32(&f, "sincos3d.80.2.4", NULL);
    if (want) {
        float *got = malloc(sizeof(float) * 17 * 80);
        iv2_sincos_3d_table(got, 80, 2, 4, 1);
        t_allclose("sincos 3d", got, want, 17 * 80, 1e-5f, 1e-6f);
        free(got);
    }
    free(want);
    iv2_st_close(&f);
}

int main(void) {
    be = iv2_backend_create("cpu", 2);
    if (!be) { fprintf(stderr, "%s\n", iv2_errmsg()); return 1; }
    test_tables();
    test_internvit("internvit_io", NULL);
    test_internvit("internvit_rs_io", NULL);
    /* the same weights as an official InternVL-C .pth ({'module': ...}, original names, text
     * tower), through the converter (common/pth.h) and the loader */
    char pth[512], conv[512];
    const char *td = getenv("TMPDIR");
    snprintf(conv, sizeof conv, "%s/iv2_vit_parity_%d.safetensors", td ? td : "/tmp", (int)getpid());
    snprintf(pth, sizeof pth, "%s/tests/goldens/internvit_rs_c.pth", getenv("IV2_ROOT") ? getenv("IV2_ROOT") : ".");
    iv2_pth_summary sum;
    CHECK(iv2_pth_convert(pth, conv, "internvit", IV2_PTH_KEEP, &sum) == 0, "convert: %s", iv2_errmsg());
    CHECK(sum.n_dropped == 2, "text tower dropped (%d)", sum.n_dropped);
    test_internvit("internvit_rs_io", conv);
    unlink(conv);
    test_videomae();
    test_student();
    iv2_backend_destroy(be);
    return test_done();
}
