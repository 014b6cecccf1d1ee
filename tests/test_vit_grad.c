/* test_vit_grad.c: the whole-model backward against finite differences.
 * Loss L = sum_k <out_k, R_k> + <pooled, Rp> over requested block outputs (visible tokens) and
 * the pooled output, with drop path on one sample of one block. Each checked parameter entry
 * is perturbed by +-h and L recomputed with a fresh training forward; the central difference
 * must agree with the accumulated gradient. Two models: a student-like one (RMSNorm, q/k norm,
 * LayerScale, CLS, learned pos, tanh GELU, pool head) and a VideoMAE-like one (LayerNorm, fused
 * qkv with q/v bias, sincos positions, no CLS). Gradients are checked to accumulate (+=). */
#include "test_vit_util.h"

static iv2_backend *be;

typedef struct {
    iv2_vit *m;
    iv2_vit_io io;
    float *R[IV2_VIT_MAX_OUT], *Rp;   /* host */
    void *dR[IV2_VIT_MAX_OUT], *dRp;  /* backend */
    size_t nout, npool;
} fx;

static double loss(fx *f) {
    iv2_vit *m = f->m;
    if (iv2_vit_forward_train(m, &f->io)) { CHECK(0, "%s", iv2_errmsg()); return NAN; }
    double L = 0;
    for (int k = 0; k < f->io.n_out; k++) {
        float *o = dl(be, f->io.out[k], f->nout);
        for (size_t i = 0; i < f->nout; i++) L += (double)o[i] * f->R[k][i];
        free(o);
    }
    if (f->io.pooled) {
        float *o = dl(be, f->io.pooled, f->npool);
        for (size_t i = 0; i < f->npool; i++) L += (double)o[i] * f->Rp[i];
        free(o);
    }
    return L;
}

static float frand(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) / (double)(1 << 24)) * 2 - 1;
}

static void run(const char *what, const char *json, int with_vis) {
    iv2_vit_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "%s", what);
    if (iv2_vit_config_json(&c, json) || iv2_vit_config_check(&c)) { CHECK(0, "%s: %s", what, iv2_errmsg()); return; }
    fx f = {0};
    f.m = iv2_vit_create(be, &c);
    if (!f.m) { CHECK(0, "%s", iv2_errmsg()); return; }
    iv2_vit *m = f.m;
    iv2_vit_init_random(m, 11);
    /* make every parameter O(1)-ish random, so no gradient vanishes by construction */
    uint64_t s = 77;
    float *h = dl(be, m->params, m->n_elems);
    for (int i = 0; i < m->n_param; i++) {
        const iv2_vit_param *p = &m->param[i];
        int vec = p->ndim == 1 || (p->ndim == 3 && p->shape[0] == 1 && p->shape[1] == 1);
        int scalevec = vec && (strstr(p->name, "weight") || strstr(p->name, "gamma"));
        float sc = p->ndim >= 2 && !vec ? 1.0f / sqrtf((float)(p->numel / p->shape[0])) : 0.3f;
        for (size_t j = 0; j < p->numel; j++) h[p->offset + j] = (scalevec ? 1.0f : 0.0f) + sc * frand(&s);
    }
    be->upload(be, m->params, h, m->n_elems);
    free(h);

    int S = 2, T = iv2_vit_tokens(&c), N = with_vis ? 5 : T;
    size_t nfr = (size_t)S * c.frames * c.img * c.img * 3;
    uint8_t *fr = malloc(nfr);
    for (size_t i = 0; i < nfr; i++) fr[i] = (uint8_t)(frand(&s) * 127 + 128);
    void *frames = be->alloc(be, nfr);
    be->upload_raw(be, frames, fr, nfr);
    int32_t vis[2][5] = {{0, 2, 3, 7, 8}, {0, 1, 4, 5, 6}};
    float drop[64];
    for (int i = 0; i < 64; i++) drop[i] = 1.25f;
    drop[1 * S + 1] = 0.0f;   /* block 1, sample 1 dropped */
    f.io.frames = frames; f.io.S = S;
    if (with_vis) { f.io.vis = &vis[0][0]; f.io.n_vis = N; }
    f.io.drop = drop;
    f.io.n_out = 2; f.io.blocks[0] = 0; f.io.blocks[1] = c.depth - 1;
    f.nout = (size_t)S * N * c.width;
    for (int k = 0; k < 2; k++) {
        f.io.out[k] = be->alloc(be, f.nout * be->esize);
        f.R[k] = malloc(sizeof(float) * f.nout);
        for (size_t i = 0; i < f.nout; i++) f.R[k][i] = frand(&s);
        f.dR[k] = be->alloc(be, f.nout * be->esize);
        be->upload(be, f.dR[k], f.R[k], f.nout);
    }
    if (c.pool_heads) {
        f.npool = (size_t)S * c.pool_dim;
        f.io.pooled = be->alloc(be, f.npool * be->esize);
        f.Rp = malloc(sizeof(float) * f.npool);
        for (size_t i = 0; i < f.npool; i++) f.Rp[i] = frand(&s);
        f.dRp = be->alloc(be, f.npool * be->esize);
        be->upload(be, f.dRp, f.Rp, f.npool);
    }
    loss(&f);
    CHECK(iv2_vit_alloc_grads(m) == 0, "%s", iv2_errmsg());
    CHECK(iv2_vit_backward(m, &f.io, f.dR, f.dRp) == 0, "%s", iv2_errmsg());
    float *g = dl(be, m->grads, m->n_elems);
    /* accumulation: a second backward doubles every gradient */
    CHECK(iv2_vit_backward(m, &f.io, f.dR, f.dRp) == 0, "%s", iv2_errmsg());
    float *g2 = dl(be, m->grads, m->n_elems);
    int acc_ok = 1;
    for (size_t i = 0; i < m->n_elems; i++)
        if (fabsf(g2[i] - 2 * g[i]) > 1e-5f * (1 + fabsf(g[i]))) { acc_ok = 0; break; }
    CHECK(acc_ok, "%s: gradients accumulate", what);
    free(g2);

    /* per tensor: the entry with the largest gradient and one pseudo-random entry */
    int checked = 0, bad = 0;
    for (int i = 0; i < m->n_param; i++) {
        const iv2_vit_param *p = &m->param[i];
        size_t idx[2] = {0, (size_t)((frand(&s) * 0.5f + 0.5f) * (p->numel - 1))};
        for (size_t j = 1; j < p->numel; j++)
            if (fabsf(g[p->offset + j]) > fabsf(g[p->offset + idx[0]])) idx[0] = j;
        for (int t = 0; t < 2; t++) {
            size_t at = p->offset + idx[t];
            float w0;
            be->download(be, &w0, IV2_AT(be, m->params, at), 1);
            float hstep = 1e-2f * fmaxf(1.0f, fabsf(w0));
            float wp = w0 + hstep, wm = w0 - hstep;
            be->upload(be, IV2_AT(be, m->params, at), &wp, 1);
            double lp = loss(&f);
            be->upload(be, IV2_AT(be, m->params, at), &wm, 1);
            double lm = loss(&f);
            be->upload(be, IV2_AT(be, m->params, at), &w0, 1);
            double fd = (lp - lm) / (2.0 * hstep), an = g[at];
            /* fp32 forward: allow 2% of the larger magnitude plus an absolute floor */
            double tol = 2e-2 * fmax(fabs(fd), fabs(an)) + 2e-3;
            checked++;
            if (!(fabs(fd - an) <= tol)) {
                bad++;
                fprintf(stderr, "%s: d%s[%zu]: backward %.6g, finite difference %.6g\n", what, p->name, idx[t], an, fd);
            }
        }
    }
    CHECK(bad == 0, "%s: %d of %d gradient entries off", what, bad, checked);
    free(g);
    for (int k = 0; k < 2; k++) { be->free(be, f.io.out[k]); be->free(be, f.dR[k]); free(f.R[k]); }
    if (c.pool_heads) { be->free(be, f.io.pooled); be->free(be, f.dRp); free(f.Rp); }
    be->free(be, frames);
    free(fr);
    iv2_vit_free(m);
}

int main(void) {
    be = iv2_backend_create("cpu", 2);
    if (!be) { fprintf(stderr, "%s\n", iv2_errmsg()); return 1; }
    run("student-like",
        "{\"arch\":\"student\",\"img\":8,\"patch\":4,\"frames\":2,\"tubelet\":1,\"width\":24,\"depth\":3,\"heads\":3,"
        "\"mlp\":40,\"norm\":\"rms\",\"eps\":1e-6,\"qk_norm\":1,\"layerscale\":1,\"ls_init\":1,\"cls\":1,"
        "\"pos\":\"learned\",\"gelu\":\"tanh\",\"pool_heads\":2,\"pool_dim\":12,\"pool_eps\":1e-5}",
        1);
    run("videomae-like",
        "{\"arch\":\"videomae\",\"img\":8,\"patch\":4,\"frames\":4,\"tubelet\":2,\"width\":24,\"depth\":2,\"heads\":2,"
        "\"mlp\":40,\"norm\":\"ln\",\"eps\":1e-6,\"qkv_bias\":1,\"cls\":0,\"pos\":\"sincos1d\",\"final_norm\":1,"
        "\"gelu\":\"erf\",\"pool_heads\":0,\"pool_eps\":1e-5}",
        0);
    iv2_backend_destroy(be);
    return test_done();
}
