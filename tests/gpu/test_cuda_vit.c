/* test_cuda_vit: the tiny teachers and the tiny student through common/vit.h on the CUDA backend
 * against the CPU backend, same random weights (iv2_vit_init_random is backend-independent) and
 * same frames. Whole-model comparisons use the relative L2 error ||gpu - cpu|| / ||cpu|| of each
 * output; bf16 storage through 4-6 blocks gives about 1e-2, the limits are:
 *   block outputs, pooled output: 3e-2;  pool attention: 3e-2;  parameter gradients: 8e-2.
 * `test_cuda_vit --tiny-forward` runs one tiny InternViT forward on the GPU only (for
 * compute-sanitizer in tests/gpu/check.sh). Exit 77 when no CUDA device is visible. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "compute.h"
#include "err.h"
#include "testutil.h"
#include "vit.h"

static iv2_backend *G, *C;

static double rel_l2(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1e-30));
}
/* compare n elements of a (GPU, bf16) and b (CPU, f32) backend buffers; f32 = 1 for f32 buffers */
static void cmp(const char *what, const void *g, const void *c, size_t n, int f32, double tol) {
    float *a = malloc(n * 4 + 4), *b = malloc(n * 4 + 4);
    if (f32) G->download_raw(G, a, g, n * 4); else G->download(G, a, g, n);
    C->download_raw(C, b, c, n * 4);
    int finite = 1;
    for (size_t i = 0; i < n; i++) finite &= isfinite(a[i]);
    double e = rel_l2(a, b, n);
    printf("  %-44s rel L2 %.3e (limit %.0e)\n", what, e, tol);
    CHECK(finite && e <= tol, "%s: relative L2 error %.3e over %.0e%s", what, e, tol, finite ? "" : " (non-finite)");
    free(a); free(b);
}

static uint8_t *frames_host(size_t n, unsigned seed) {
    uint8_t *f = malloc(n);
    for (size_t i = 0; i < n; i++) { seed = seed * 1664525u + 1013904223u; f[i] = (uint8_t)(seed >> 24); }
    return f;
}

typedef struct { iv2_vit *m; uint8_t *fr; iv2_vit_io io; } run;

/* build the model on be, same init, same frames; allocate outputs */
static int setup(run *r, iv2_backend *be, const char *preset, int S, const uint8_t *fh, size_t fbytes, int nblk,
                 const int *blocks, int final_last, int n_vis, const int32_t *vis) {
    iv2_vit_config cfg;
    if (iv2_vit_preset(preset, &cfg)) return -1;
    memset(r, 0, sizeof *r);
    r->m = iv2_vit_create(be, &cfg);
    if (!r->m || iv2_vit_init_random(r->m, 1234)) return -1;
    r->fr = be->alloc(be, fbytes);
    be->upload_raw(be, r->fr, fh, fbytes);
    iv2_vit_io *io = &r->io;
    io->frames = r->fr;
    io->S = S;
    io->vis = vis;
    io->n_vis = n_vis;
    int n_tok = vis ? n_vis : iv2_vit_tokens(&cfg);
    io->n_out = nblk;
    for (int i = 0; i < nblk; i++) {
        io->blocks[i] = blocks[i];
        io->out[i] = be->alloc(be, (size_t)S * n_tok * cfg.width * be->esize);
    }
    io->final_norm_last = final_last;
    if (cfg.pool_heads) {
        io->pooled = be->alloc(be, (size_t)S * cfg.pool_dim * be->esize);
        io->pool_attn = be->alloc(be, (size_t)S * (n_tok - cfg.cls) * 4);
    }
    return 0;
}
static void teardown(run *r, iv2_backend *be) {
    for (int i = 0; i < r->io.n_out; i++) be->free(be, r->io.out[i]);
    if (r->io.pooled) be->free(be, r->io.pooled);
    if (r->io.pool_attn) be->free(be, r->io.pool_attn);
    be->free(be, r->fr);
    iv2_vit_free(r->m);
}

static void compare_outputs(const char *name, run *g, run *c, int n_tok) {
    const iv2_vit_config *cfg = &g->m->cfg;
    char w[96];
    for (int i = 0; i < g->io.n_out; i++) {
        snprintf(w, sizeof w, "%s block %d", name, g->io.blocks[i]);
        cmp(w, g->io.out[i], c->io.out[i], (size_t)g->io.S * n_tok * cfg->width, 0, 3e-2);
    }
    if (g->io.pooled) {
        snprintf(w, sizeof w, "%s pooled", name);
        cmp(w, g->io.pooled, c->io.pooled, (size_t)g->io.S * cfg->pool_dim, 0, 3e-2);
        snprintf(w, sizeof w, "%s pool attention", name);
        cmp(w, g->io.pool_attn, c->io.pool_attn, (size_t)g->io.S * (n_tok - cfg->cls), 1, 3e-2);
    }
}

static void teacher(const char *preset, int S, int nblk, const int *blocks, int final_last) {
    iv2_vit_config cfg;
    if (iv2_vit_preset(preset, &cfg)) { CHECK(0, "%s", iv2_errmsg()); return; }
    size_t fb = (size_t)S * cfg.frames * cfg.img * cfg.img * 3;
    uint8_t *fh = frames_host(fb, 7);
    run g, c;
    if (setup(&g, G, preset, S, fh, fb, nblk, blocks, final_last, 0, NULL) ||
        setup(&c, C, preset, S, fh, fb, nblk, blocks, final_last, 0, NULL)) {
        CHECK(0, "%s setup: %s", preset, iv2_errmsg());
        free(fh);
        return;
    }
    int rg = iv2_vit_forward(g.m, &g.io), rc = iv2_vit_forward(c.m, &c.io);
    CHECK(rg == 0 && rc == 0, "%s forward: %s", preset, iv2_errmsg());
    if (!rg && !rc) compare_outputs(preset, &g, &c, iv2_vit_tokens(&cfg));
    teardown(&g, G);
    teardown(&c, C);
    free(fh);
}

/* student: training forward on visible tokens, backward from fixed random output gradients */
static void student(void) {
    const char *preset = "iv2-tiny";
    iv2_vit_config cfg;
    if (iv2_vit_preset(preset, &cfg)) { CHECK(0, "%s", iv2_errmsg()); return; }
    int S = 2, P = iv2_vit_patches(&cfg), n_vis = 1 + P / 5;
    int32_t *vis = malloc(sizeof(int32_t) * S * n_vis);
    for (int s = 0; s < S; s++) {
        vis[s * n_vis] = 0;
        for (int i = 1; i < n_vis; i++) vis[s * n_vis + i] = 1 + (i - 1) * 5 + s;  /* sorted, distinct */
    }
    int blocks[2] = {cfg.depth - 2, cfg.depth - 1};
    size_t fb = (size_t)S * cfg.frames * cfg.img * cfg.img * 3;
    uint8_t *fh = frames_host(fb, 11);
    run g, c;
    if (setup(&g, G, preset, S, fh, fb, 2, blocks, 0, n_vis, vis) ||
        setup(&c, C, preset, S, fh, fb, 2, blocks, 0, n_vis, vis)) {
        CHECK(0, "student setup: %s", iv2_errmsg());
        free(fh); free(vis);
        return;
    }
    int rg = iv2_vit_forward_train(g.m, &g.io), rc = iv2_vit_forward_train(c.m, &c.io);
    CHECK(rg == 0 && rc == 0, "student forward_train: %s", iv2_errmsg());
    if (!rg && !rc) {
        compare_outputs("iv2-tiny train", &g, &c, n_vis);
        /* the same output gradients on both */
        size_t no = (size_t)S * n_vis * cfg.width, np = (size_t)S * cfg.pool_dim;
        float *h = malloc((no > np ? no : np) * 4);
        void *dg[2], *dc[2], *dpg = G->alloc(G, np * G->esize), *dpc = C->alloc(C, np * 4);
        unsigned seed = 5;
        for (int k = 0; k < 2; k++) {
            for (size_t i = 0; i < no; i++) { seed = seed * 1664525u + 1013904223u; h[i] = ((seed >> 8) / 16777216.f - .5f) * 1e-2f; }
            for (size_t i = 0; i < no; i++) h[i] = iv2_bf16_to_f32(iv2_f32_to_bf16(h[i]));
            dg[k] = G->alloc(G, no * G->esize); G->upload(G, dg[k], h, no);
            dc[k] = C->alloc(C, no * 4); C->upload(C, dc[k], h, no);
        }
        for (size_t i = 0; i < np; i++) { seed = seed * 1664525u + 1013904223u; h[i] = iv2_bf16_to_f32(iv2_f32_to_bf16(((seed >> 8) / 16777216.f - .5f) * 1e-2f)); }
        G->upload(G, dpg, h, np);
        C->upload(C, dpc, h, np);
        rg = iv2_vit_backward(g.m, &g.io, dg, dpg);
        rc = iv2_vit_backward(c.m, &c.io, dc, dpc);
        CHECK(rg == 0 && rc == 0, "student backward: %s", iv2_errmsg());
        if (!rg && !rc) {
            cmp("iv2-tiny all parameter gradients", g.m->grads, c.m->grads, g.m->n_elems, 0, 8e-2);
            /* per tensor, so a broken op is named (large tensors only: tiny ones are noisy) */
            for (int i = 0; i < g.m->n_param; i++) {
                const iv2_vit_param *p = &g.m->param[i];
                if (p->numel < 1024) continue;
                char w[128];
                snprintf(w, sizeof w, "grad %s", p->name);
                cmp(w, IV2_AT(G, g.m->grads, p->offset), IV2_AT(C, c.m->grads, p->offset), p->numel, 0, 1.5e-1);
            }
        }
        for (int k = 0; k < 2; k++) { G->free(G, dg[k]); C->free(C, dc[k]); }
        G->free(G, dpg); C->free(C, dpc);
        free(h);
    }
    teardown(&g, G);
    teardown(&c, C);
    free(fh);
    free(vis);
}

int main(int argc, char **argv) {
    G = iv2_cuda_backend_create(0);
    if (!G) { test_skip(iv2_errmsg()); return test_done(); }
    if (argc > 1 && strcmp(argv[1], "--tiny-forward") == 0) {  /* GPU only, for compute-sanitizer */
        iv2_vit_config cfg;
        iv2_vit_preset("internvit-tiny", &cfg);
        size_t fb = (size_t)2 * cfg.img * cfg.img * 3;
        uint8_t *fh = frames_host(fb, 3);
        int blocks[2] = {0, cfg.depth - 1};
        run g;
        if (setup(&g, G, "internvit-tiny", 2, fh, fb, 2, blocks, 0, 0, NULL) || iv2_vit_forward(g.m, &g.io)) {
            fprintf(stderr, "tiny forward: %s\n", iv2_errmsg());
            return 1;
        }
        G->sync(G);
        teardown(&g, G);
        free(fh);
        iv2_backend_destroy(G);
        printf("tiny forward done\n");
        return 0;
    }
    C = iv2_cpu_backend_create(0);
    if (!C) { fprintf(stderr, "cpu backend: %s\n", iv2_errmsg()); return 1; }
    int ib[6] = {0, 1, 2, 3, 4, 5}, vb[4] = {0, 1, 2, 3};
    teacher("internvit-tiny", 3, 6, ib, 0);
    teacher("videomae-tiny", 1, 4, vb, 1);
    student();
    iv2_backend_destroy(G);
    iv2_backend_destroy(C);
    return test_done();
}
