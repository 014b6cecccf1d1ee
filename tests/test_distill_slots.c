/* test_distill_slots: the data path of issue 8 on the CPU.
 * - The loader's batches for a backend: the same frames, masks and targets as a plain batch of
 *   the same step; the index rows (student rows s*(1+T*P)+vis, MAE rows vis-1) right; on a
 *   backend storing bf16 (the CPU backend relabelled, for its host memory) the targets are the
 *   f32 rows rounded to bf16 and no f32 copy is kept; the raw row copy (a target stored bf16)
 *   gives the bytes of the path through f32 and a conversion; the samples built on 3 threads
 *   give the bytes of one thread, and a run with loader_threads 3 equals one with 1.
 * - A run copying batch s+1 ahead into the other device slot while step s computes equals, loss
 *   for loss and bit for bit in the final weights and moments, a run that copies each batch at
 *   its own step into one slot (t.no_stage_ahead), so a slot mix-up fails; with eval between
 *   steps, and with the loader's prefetch thread off as well. The CPU backend runs the copy
 *   stream's copies as late as the events allow (compute.h), so a step that does not wait for
 *   its batch's copies reads the slot's previous batch and fails too (checked by mutation).
 * - copy_s (the batch's copy time on the copy stream) on every step line and in the summary,
 *   within [0, step_s]. */
#include "testutil.h"
#include "test_distill_synth.h"
#include "safetensors.h"

static const char *ROOT = "build/tmp/test_distill_slots";

typedef struct run_out {
    int n;                       /* step lines */
    double loss[64], clip[64], final[64], mae[64], gnorm[64];
    int copy_ok, n_eval;         /* every step line's copy_s in [0, step_s]; eval lines */
    double eval_cos[8];          /* per eval line: the cosines of clip_b0 + mae_b1 + clip_pool */
    int summaries;
    double sum_copy;
} run_out;

static double field(const char *line, const char *key) {   /* "key": number, or NAN */
    const char *p = strstr(line, key);
    return p ? atof(p + strlen(key)) : NAN;
}

static int read_run(const char *dir, run_out *r) {
    char p[512], line[8192];
    snprintf(p, sizeof p, "%s/metrics.jsonl", dir);
    memset(r, 0, sizeof *r);
    r->copy_ok = 1;
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) {
        if (strstr(line, "\"event\":\"step\"") && r->n < 64) {
            int i = r->n++;
            r->loss[i] = field(line, "\"loss\":"); r->clip[i] = field(line, "\"clip\":");
            r->final[i] = field(line, "\"final\":"); r->mae[i] = field(line, "\"mae\":");
            r->gnorm[i] = field(line, "\"grad_norm\":");
            double cs = field(line, "\"copy_s\":"), st = field(line, "\"step_s\":");
            if (!(cs >= 0 && cs <= st)) { r->copy_ok = 0; fprintf(stderr, "bad copy_s: %s", line); }
        } else if (strstr(line, "\"event\":\"eval\"") && r->n_eval < 8) {
            r->eval_cos[r->n_eval++] = field(line, "\"clip_b0\":") + field(line, "\"mae_b1\":") + field(line, "\"clip_pool\":");
        } else if (strstr(line, "\"event\":\"summary\"")) {
            r->summaries++;
            r->sum_copy = field(line, "\"copy_s\":");
        }
    }
    fclose(f);
    return 0;
}

static int train(const char *cache, const iv2_distill_config *c, const char *out, int no_stage_ahead) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
    (void)!system(cmd);
    iv2_trainer t;
    if (iv2_trainer_open(&t, cache, c, out, 0)) return -1;
    t.no_stage_ahead = no_stage_ahead;
    int rc = iv2_trainer_run(&t, 0);
    iv2_trainer_close(&t);
    return rc;
}

/* every byte a batch holds (es: bytes per target element: 4 plain / F32, 2 bf16) */
static int same_batch(const iv2_loader *L, const iv2_batch *a, const iv2_batch *b, int es) {
    size_t rv = (size_t)a->B * a->nv, rm = (size_t)a->B * (a->nv - 1);
    int same = a->step == b->step && !memcmp(a->views, b->views, sizeof(int64_t) * a->B) &&
               !memcmp(a->frames, b->frames, (size_t)a->B * L->frames * L->size * L->size * 3) &&
               !memcmp(a->vis, b->vis, rv * 4) && (!a->rows || (!memcmp(a->rows, b->rows, rv * 4) &&
                                                              !memcmp(a->mae_pos, b->mae_pos, rm * 4)));
    for (int k = 0; k < L->cfg.n_clip; k++)
        same &= !memcmp(a->tclip[k] ? a->tclip[k] : a->clip[k], b->tclip[k] ? b->tclip[k] : b->clip[k], rv * L->clip_dim * es);
    for (int k = 0; k < L->cfg.n_mae; k++)
        same &= !memcmp(a->tmae[k] ? a->tmae[k] : a->mae[k], b->tmae[k] ? b->tmae[k] : b->mae[k], rm * L->mae_dim * es);
    if (L->cfg.use_final)
        same &= !memcmp(a->tfinal ? a->tfinal : a->final, b->tfinal ? b->tfinal : b->final, (size_t)a->B * L->final_dim * es);
    return same;
}

/* 1. backend batches against plain ones */
static void check_batches(const char *cache, const iv2_distill_config *c) {
    iv2_loader L;
    if (iv2_loader_open(&L, cache, c, 8, 56, 8, 16)) { CHECK(0, "loader: %s", iv2_errmsg()); return; }
    iv2_backend *cpu = iv2_cpu_backend_create(1), *bf = iv2_cpu_backend_create(1);
    bf->dtype = IV2_BF16;   /* only its host memory is used: batches in the form a bf16 device reads */
    bf->esize = 2;
    int B = c->batch, nv = L.nv, ntok = 1 + 8 * 16;
    iv2_batch p, f, h;
    iv2_batch_alloc(&p, &L, B, nv);
    iv2_batch_alloc_for(&f, &L, B, nv, cpu);
    iv2_batch_alloc_for(&h, &L, B, nv, bf);
    CHECK(iv2_loader_build(&L, 3, &p) == 0 && iv2_loader_build(&L, 3, &f) == 0 && iv2_loader_build(&L, 3, &h) == 0,
          "build step 3: %s", iv2_errmsg());
    size_t fb = (size_t)B * 8 * 56 * 56 * 3, rv = (size_t)B * nv, rm = (size_t)B * (nv - 1);
    CHECK(!p.rows && !p.be && f.be == cpu && h.be == bf, "plain batches have no backend form");
    CHECK(!memcmp(p.frames, f.frames, fb) && !memcmp(p.frames, h.frames, fb), "frames equal");
    CHECK(!memcmp(p.vis, f.vis, rv * 4) && !memcmp(p.vis, h.vis, rv * 4), "masks equal");
    int rows_ok = 1;
    for (int s = 0; s < B; s++)
        for (int i = 0; i < nv; i++) {
            int32_t v = p.vis[s * nv + i];
            rows_ok &= f.rows[s * nv + i] == s * ntok + v && h.rows[s * nv + i] == s * ntok + v;
            if (i) rows_ok &= f.mae_pos[s * (nv - 1) + i - 1] == v - 1 && h.mae_pos[s * (nv - 1) + i - 1] == v - 1;
        }
    CHECK(rows_ok, "index rows: s * (1 + T*P) + vis and vis[1:] - 1");
    int f32_ok = 1, bf_ok = 1;
    for (int k = 0; k < c->n_clip; k++) {
        f32_ok &= f.tclip[k] == (void *)f.clip[k] && !memcmp(p.clip[k], f.clip[k], rv * 32 * 4);
        const uint16_t *x = h.tclip[k];
        bf_ok &= h.clip[k] == NULL;
        for (size_t i = 0; i < rv * 32; i++) bf_ok &= x[i] == iv2_f32_to_bf16(p.clip[k][i]);
    }
    for (int k = 0; k < c->n_mae; k++) {
        f32_ok &= f.tmae[k] == (void *)f.mae[k] && !memcmp(p.mae[k], f.mae[k], rm * 24 * 4);
        const uint16_t *x = h.tmae[k];
        bf_ok &= h.mae[k] == NULL;
        for (size_t i = 0; i < rm * 24; i++) bf_ok &= x[i] == iv2_f32_to_bf16(p.mae[k][i]);
    }
    f32_ok &= f.tfinal == (void *)f.final && !memcmp(p.final, f.final, (size_t)B * 16 * 4);
    const uint16_t *x = h.tfinal;
    bf_ok &= h.final == NULL;
    for (int i = 0; i < B * 16; i++) bf_ok &= x[i] == iv2_f32_to_bf16(p.final[i]);
    CHECK(f32_ok, "F32 backend: the targets are the plain batch's, in one buffer");
    CHECK(bf_ok, "bf16 backend: the targets are the f32 rows rounded to bf16, no f32 copy kept");
    /* the raw path (clip_b* stored bf16: the stored bytes copied) against the path through f32
     * rows and a conversion (L.via_f32), and the samples built on 3 threads against one, for the
     * plain, F32 and bf16 batches: the same bytes everywhere */
    iv2_batch hc, p3, f3, h3;
    iv2_batch_alloc_for(&hc, &L, B, nv, bf);
    iv2_batch_alloc(&p3, &L, B, nv);
    iv2_batch_alloc_for(&f3, &L, B, nv, cpu);
    iv2_batch_alloc_for(&h3, &L, B, nv, bf);
    L.via_f32 = 1;
    CHECK(iv2_loader_build(&L, 3, &hc) == 0, "build through f32: %s", iv2_errmsg());
    L.via_f32 = 0;
    L.threads = 3;
    CHECK(iv2_loader_build(&L, 3, &p3) == 0 && iv2_loader_build(&L, 3, &f3) == 0 && iv2_loader_build(&L, 3, &h3) == 0,
          "build on 3 threads: %s", iv2_errmsg());
    L.threads = 1;
    CHECK(same_batch(&L, &h, &hc, 2), "bf16 batch: raw rows == f32 rows converted, byte for byte");
    CHECK(same_batch(&L, &p, &p3, 4) && same_batch(&L, &f, &f3, 4) && same_batch(&L, &h, &h3, 2),
          "3 loader threads == 1: plain, F32 and bf16 batches byte for byte");
    /* what a batch holds, against the cache read directly: each sample's frames are its view's,
     * its CLIP rows are the view's rows at vis, its MAE rows those at vis[1:] - 1 (no CLS there),
     * its final target the view's pool; and an eval batch holds the held-out views n_train.. */
    {
        int ntk = 1 + 8 * 16, fbv = 8 * 56 * 56 * 3, ok_f = 1, ok_c = 1, ok_m = 1, ok_p = 1;
        uint8_t *fr = malloc((size_t)fbv);
        float *full = malloc(sizeof(float) * (size_t)ntk * 32), *pool = malloc(sizeof(float) * 16);
        for (int sm = 0; sm < B; sm++) {
            int64_t view = p.views[sm];
            iv2_cache_view cv;
            ok_f &= iv2_cache_set_read_view(L.set, view, &cv, fr) == 0 && !memcmp(fr, p.frames + (size_t)sm * fbv, fbv);
            const int32_t *vs = p.vis + (size_t)sm * nv;
            for (int k = 0; k < c->n_clip; k++) {
                ok_c &= iv2_cache_set_read_rows(L.set, view, L.t_clip[k], NULL, ntk, full) == 0;
                for (int i = 0; i < nv; i++)
                    ok_c &= !memcmp(p.clip[k] + ((size_t)sm * nv + i) * 32, full + (size_t)vs[i] * 32, 32 * 4);
            }
            for (int k = 0; k < c->n_mae; k++) {
                ok_m &= iv2_cache_set_read_rows(L.set, view, L.t_mae[k], NULL, ntk - 1, full) == 0;
                for (int i = 1; i < nv; i++)
                    ok_m &= !memcmp(p.mae[k] + ((size_t)sm * (nv - 1) + i - 1) * 24, full + (size_t)(vs[i] - 1) * 24, 24 * 4);
            }
            ok_p &= iv2_cache_set_read_rows(L.set, view, L.t_pool, NULL, 1, pool) == 0 &&
                    !memcmp(p.final + (size_t)sm * 16, pool, 16 * 4);
        }
        CHECK(ok_f, "a sample's frames are its view's");
        CHECK(ok_c, "CLIP target rows: the view's rows at vis (CLS first)");
        CHECK(ok_m, "MAE target rows: the view's rows at vis[1:] - 1");
        CHECK(ok_p, "final target: the view's pool");
        iv2_batch ev;
        int ne = (int)(L.n_eval < B ? L.n_eval : B), ok_e = ne > 0;
        iv2_batch_alloc(&ev, &L, ne, ntk);
        ok_e &= iv2_loader_build_eval(&L, 0, &ev) == ne;   /* returns the views it built */
        for (int sm = 0; ok_e && sm < ne; sm++) {
            iv2_cache_view cv;
            ok_e &= ev.views[sm] == L.n_train + sm && iv2_cache_set_read_view(L.set, L.n_train + sm, &cv, fr) == 0 &&
                    !memcmp(fr, ev.frames + (size_t)sm * fbv, fbv);
        }
        CHECK(ok_e, "an eval batch: the held-out views from n_train on, their frames (%d views)", ne);
        iv2_batch_free(&ev);
        free(fr); free(full); free(pool);
    }
    iv2_batch_free(&hc); iv2_batch_free(&p3); iv2_batch_free(&f3); iv2_batch_free(&h3);
    iv2_batch_free(&p); iv2_batch_free(&f); iv2_batch_free(&h);
    iv2_backend_destroy(cpu); iv2_backend_destroy(bf);
    iv2_loader_close(&L);
}

int main(void) {
    iv2_set_quiet(1);
    char cache[256], a[256], b[256], d[256], pa[512], pb[512];
    (void)!system("mkdir -p build/tmp");
    int light = getenv("IV2_VALGRIND") != NULL;
    snprintf(cache, sizeof cache, "%s.cache", ROOT);
    synth_spec sp = {.views = light ? 12 : 20, .size = 56, .clip_dim = 32, .mae_dim = 24, .pool_dim = 16, .n_clip = 2,
                     .n_mae = 2, .nan_view = -1};
    CHECK(synth_cache(cache, &sp) == 0, "synthetic cache: %s", iv2_errmsg());
    iv2_distill_config c;
    synth_config(&c, &sp, 4);
    c.eval_views = 4;
    c.eval_every = 3;   /* eval between steps, while the next batch sits in the other slot */
    c.epochs = light ? 2 : 6;   /* an epoch: (views - 4 held out) / 2 views per video / batch 4 steps */
    int N = (sp.views - 4) / 2 / 4 * c.epochs;

    check_batches(cache, &c);

    /* 2. two slots, batch s+1 copied during step s == one slot, each batch at its own step */
    snprintf(a, sizeof a, "%s.ahead", ROOT);
    snprintf(b, sizeof b, "%s.inline", ROOT);
    snprintf(d, sizeof d, "%s.noprefetch", ROOT);
    CHECK(train(cache, &c, a, 0) == 0, "run copying ahead: %s", iv2_errmsg());
    CHECK(train(cache, &c, b, 1) == 0, "run copying at each step: %s", iv2_errmsg());
    iv2_distill_config e = c;
    e.prefetch = 0;   /* and with the loader's thread off: the next batch is built mid-step */
    CHECK(train(cache, &e, d, 0) == 0, "run without prefetch: %s", iv2_errmsg());
    run_out ra, rb, rd;
    CHECK(read_run(a, &ra) == 0 && read_run(b, &rb) == 0 && read_run(d, &rd) == 0, "metrics files");
    CHECK(ra.n == N && rb.n == N && rd.n == N, "%d steps each (%d, %d, %d)", N, ra.n, rb.n, rd.n);
    int same = ra.n == rb.n && ra.n == rd.n, at = -1;
    for (int i = 0; same && i < ra.n; i++) {
        same = ra.loss[i] == rb.loss[i] && ra.clip[i] == rb.clip[i] && ra.final[i] == rb.final[i] &&
               ra.mae[i] == rb.mae[i] && ra.gnorm[i] == rb.gnorm[i] && ra.loss[i] == rd.loss[i] &&
               ra.gnorm[i] == rd.gnorm[i] && ra.mae[i] == rd.mae[i];
        if (!same) at = i;
    }
    CHECK(same, "every step's loss terms and grad norm equal (first difference at step %d)", at);
    CHECK(ra.loss[0] != ra.loss[1] && ra.loss[1] != ra.loss[2], "(the batches differ from step to step)");
    CHECK(ra.n_eval == N / 3 && rb.n_eval == ra.n_eval && rd.n_eval == ra.n_eval, "eval every 3 steps (%d lines)", ra.n_eval);
    same = 1;
    for (int i = 0; i < ra.n_eval; i++)
        same &= isfinite(ra.eval_cos[i]) && ra.eval_cos[i] == rb.eval_cos[i] && ra.eval_cos[i] == rd.eval_cos[i];
    CHECK(same, "eval figures equal");
    snprintf(pa, sizeof pa, "%s/ckpt_%08d.safetensors", a, N);
    snprintf(pb, sizeof pb, "%s/ckpt_%08d.safetensors", b, N);
    CHECK(same_tensors(pa, pb), "final weights and moments bit-identical (slots vs one slot)");
    snprintf(pb, sizeof pb, "%s/ckpt_%08d.safetensors", d, N);
    CHECK(same_tensors(pa, pb), "final weights and moments bit-identical (prefetch off)");
    char g[256];
    snprintf(g, sizeof g, "%s.threads", ROOT);
    e = c;
    e.loader_threads = 3;   /* training and eval batches built on 3 threads */
    run_out rg;
    CHECK(train(cache, &e, g, 0) == 0 && read_run(g, &rg) == 0, "run with 3 loader threads: %s", iv2_errmsg());
    same = rg.n == ra.n && rg.n_eval == ra.n_eval;
    for (int i = 0; same && i < ra.n; i++) same = ra.loss[i] == rg.loss[i] && ra.gnorm[i] == rg.gnorm[i];
    for (int i = 0; same && i < ra.n_eval; i++) same = ra.eval_cos[i] == rg.eval_cos[i];
    snprintf(pb, sizeof pb, "%s/ckpt_%08d.safetensors", g, N);
    CHECK(same && same_tensors(pa, pb), "3 loader threads: every loss, eval figure and final tensor bit-identical");

    /* 3. the copy figures */
    CHECK(ra.copy_ok && rb.copy_ok && rd.copy_ok, "copy_s in [0, step_s] on every step line");
    CHECK(ra.summaries == 1 && ra.sum_copy >= 0, "copy_s in the summary (%d summaries, %g s)", ra.summaries, ra.sum_copy);
    return test_done();
}
