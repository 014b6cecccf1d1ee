/* test_vit_recompute.c: per-block activation recomputation (iv2_vit.recompute).
 * The same training forward + backward with 0, all and a partial count of recomputed blocks,
 * drop path on (both branches drawn apart, some samples dropped), visible tokens, two read-out
 * blocks and the pool head: the outputs and every gradient must be bit-identical (memcmp) to
 * the path that saves every block (the CPU runs the same ops in the same order), the arena must
 * shrink, and iv2_vit_train_plan must match the arena to the byte. A student-like and a
 * VideoMAE-like (fused qkv, LayerNorm) model. Then the trainer: the "recompute" config key and
 * one whole step (student + heads + loss, drop path on) recomputing all blocks vs none. */
#include "test_vit_util.h"
#include "distill.h"

static iv2_backend *be;

static float frand(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) / (double)(1 << 24)) * 2 - 1;
}

typedef struct {
    float *out[2], *pooled, *grads;
    size_t arena;
} result;

static void result_free(result *r) {
    free(r->out[0]); free(r->out[1]); free(r->pooled); free(r->grads);
}

static void run(const char *what, const char *json) {
    iv2_vit_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "%s", what);
    if (iv2_vit_config_json(&c, json) || iv2_vit_config_check(&c)) { CHECK(0, "%s: %s", what, iv2_errmsg()); return; }
    iv2_vit *m = iv2_vit_create(be, &c);
    if (!m) { CHECK(0, "%s", iv2_errmsg()); return; }
    iv2_vit_init_random(m, 5);
    uint64_t s = 99;
    float *h = dl(be, m->params, m->n_elems);   /* O(1) weights so that every path matters */
    for (size_t i = 0; i < m->n_elems; i++) h[i] += 0.2f * frand(&s);
    be->upload(be, m->params, h, m->n_elems);
    free(h);

    int S = 3, N = 9, D = c.depth, cls = c.cls ? 1 : 0;
    size_t nfr = (size_t)S * c.frames * c.img * c.img * 3;
    uint8_t *fr = malloc(nfr);
    for (size_t i = 0; i < nfr; i++) fr[i] = (uint8_t)(frand(&s) * 127 + 128);
    void *frames = be->alloc(be, nfr);
    be->upload_raw(be, frames, fr, nfr);
    int32_t *vis = malloc(sizeof(int32_t) * S * N);
    for (int b = 0; b < S; b++)   /* CLS (when there is one) + every (b+1)-th token */
        for (int n = 0; n < N; n++) vis[b * N + n] = cls && n == 0 ? 0 : cls + (n - cls) * (b + 1);
    float *drop = malloc(sizeof(float) * D * S), *drop_mlp = malloc(sizeof(float) * D * S);
    for (int i = 0; i < D * S; i++) {
        drop[i] = i % 5 == 1 ? 0.0f : 1.25f;
        drop_mlp[i] = i % 4 == 2 ? 0.0f : 1.25f;
    }
    iv2_vit_io io;
    memset(&io, 0, sizeof io);
    io.frames = frames; io.S = S; io.vis = vis; io.n_vis = N; io.drop = drop; io.drop_mlp = drop_mlp;
    io.n_out = 2; io.blocks[0] = 1; io.blocks[1] = D - 1;
    size_t nout = (size_t)S * N * c.width, npool = (size_t)S * c.pool_dim;
    void *dR[2];
    float *hR = malloc(sizeof(float) * nout);
    for (int k = 0; k < 2; k++) {
        io.out[k] = be->alloc(be, nout * be->esize);
        dR[k] = be->alloc(be, nout * be->esize);
        for (size_t i = 0; i < nout; i++) hR[i] = frand(&s);
        be->upload(be, dR[k], hR, nout);
    }
    void *dRp = NULL;
    if (c.pool_heads) {
        io.pooled = be->alloc(be, npool * be->esize);
        dRp = be->alloc(be, npool * be->esize);
        for (size_t i = 0; i < npool; i++) hR[i] = frand(&s);
        be->upload(be, dRp, hR, npool);
    }
    free(hR);

    /* 0 (every block saved), all, a partial count, more than depth (= all), 0 again, and 0 with
     * every block keeping its normed inputs and GELU output (keep_normed) */
    int counts[] = {0, D, 2, D + 7, 0, 0}, keeps[] = {0, 0, 0, 0, 0, 1};
    int nc = sizeof counts / sizeof *counts;
    result r[6];
    memset(r, 0, sizeof r);
    for (int i = 0; i < nc; i++) {
        m->recompute = counts[i];
        m->keep_normed = keeps[i];
        int ok = iv2_vit_forward_train(m, &io) == 0;
        if (ok) {
            iv2_vit_zero_grads(m);
            ok = iv2_vit_backward(m, &io, dR, dRp) == 0;
        }
        CHECK(ok, "%s recompute %d: %s", what, counts[i], iv2_errmsg());
        if (!ok) break;
        for (int k = 0; k < 2; k++) r[i].out[k] = dl(be, io.out[k], nout);
        if (c.pool_heads) r[i].pooled = dl(be, io.pooled, npool);
        r[i].grads = dl(be, m->grads, m->n_elems);
        r[i].arena = iv2_vit_arena_bytes(m);
        iv2_vit_plan p = iv2_vit_train_plan(&c, be->esize, S, N, counts[i], keeps[i]);
        CHECK(p.activations == r[i].arena, "%s recompute %d keep %d: plan %zu bytes, arena %zu", what, counts[i],
              keeps[i], p.activations, r[i].arena);
        if (i == 0) continue;
        int same = 1;
        for (int k = 0; k < 2; k++) same &= !memcmp(r[i].out[k], r[0].out[k], sizeof(float) * nout);
        if (c.pool_heads) same &= !memcmp(r[i].pooled, r[0].pooled, sizeof(float) * npool);
        CHECK(same, "%s recompute %d: outputs bit-identical", what, counts[i]);
        size_t diff = 0, first = 0;
        for (size_t j = m->n_elems; j-- > 0;)
            if (memcmp(&r[i].grads[j], &r[0].grads[j], sizeof(float))) { diff++; first = j; }
        CHECK(diff == 0, "%s recompute %d: %zu gradient entries differ (first at %zu: %.9g vs %.9g)", what, counts[i],
              diff, first, diff ? r[i].grads[first] : 0.0, diff ? r[0].grads[first] : 0.0);
    }
    /* the gradients are not trivially equal: some are non-zero everywhere it matters */
    double ss = 0;
    for (size_t j = 0; r[0].grads && j < m->n_elems; j++) ss += (double)r[0].grads[j] * r[0].grads[j];
    CHECK(ss > 0, "%s: non-zero gradients", what);
    CHECK(r[1].arena < r[2].arena && r[2].arena < r[0].arena && r[3].arena == r[1].arena && r[4].arena == r[0].arena,
          "%s: arena all %zu < partial %zu < none %zu", what, r[1].arena, r[2].arena, r[0].arena);
    size_t Mt = (size_t)S * N, per = Mt * (2 * (size_t)c.width + (size_t)c.mlp) * be->esize;
    CHECK(r[5].arena == r[0].arena + (size_t)(D - 1) * per, "%s: keep_normed arena %zu = none %zu + %d blocks' h1, h2, g",
          what, r[5].arena, r[0].arena, D - 1);
    m->keep_normed = 0;
    for (int i = 0; i < nc; i++) result_free(&r[i]);
    for (int k = 0; k < 2; k++) { be->free(be, io.out[k]); be->free(be, dR[k]); }
    if (c.pool_heads) { be->free(be, io.pooled); be->free(be, dRp); }
    be->free(be, frames);
    free(fr); free(vis); free(drop); free(drop_mlp);
    iv2_vit_free(m);
}

static void trainer_step(void) {
    iv2_distill_config c;
    iv2_distill_config_default(&c);
    CHECK(c.recompute == IV2_RECOMPUTE_AUTO, "recompute defaults to auto");
    CHECK(iv2_distill_config_parse(&c, "{\"recompute\": -1}", "cfg") == -1 && strstr(iv2_errmsg(), "recompute"),
          "negative recompute rejected: %s", iv2_errmsg());
    CHECK(iv2_distill_config_parse(&c, "{\"recompute\": \"some\"}", "cfg") == -1, "bad recompute string rejected");
    CHECK(iv2_distill_config_parse(&c, "{\"recompute\": 2}", "cfg") == 0 && c.recompute == 2, "recompute 2");
    CHECK(iv2_distill_config_parse(&c, "{\"recompute\": \"all\"}", "cfg") == 0 && c.recompute == IV2_RECOMPUTE_ALL,
          "recompute all");
    char *js = iv2_distill_config_to_json(&c);
    CHECK(js && strstr(js, "\"recompute\":\"all\""), "config JSON has recompute: %s", js ? js : "");
    free(js);
    snprintf(c.student, sizeof c.student, "iv2-tiny");
    snprintf(c.student_json, sizeof c.student_json,
             "{\"img\": 8, \"patch\": 4, \"frames\": 2, \"width\": 16, \"heads\": 2, \"mlp\": 24, \"depth\": 4,"
             " \"pool_heads\": 2, \"pool_dim\": 8}");
    c.n_clip = 1; c.clip_teacher[0] = 0; c.clip_student[0] = 1;
    c.n_mae = 1; c.mae_teacher[0] = 0; c.mae_student[0] = 3;
    c.batch = 3; c.drop_path = 0.4f; c.threads = 2;
    const int B = 3, T = 2, P = 4, nv = 1 + T * 2, CD = 6, MD = 5, FD = 4;
    /* "auto" on a GPU: the fewest blocks with which the batch fits in the free memory less its
     * headroom (a tenth and 1 GiB); every block when the free memory is unknown */
    {
        c.recompute = IV2_RECOMPUTE_AUTO;
        const size_t G = (size_t)1 << 30, es = 2;
        CHECK(iv2_distill_auto_recompute(&c, CD, MD, FD, nv, es, 0) == 4, "auto, free memory unknown: all blocks");
        CHECK(iv2_distill_auto_recompute(&c, CD, MD, FD, nv, es, G / 2) == 4, "auto, less than the headroom: all");
        CHECK(iv2_distill_auto_recompute(&c, CD, MD, FD, nv, es, 64 * G) == 0, "auto, plenty: none");
        /* free memory that fits the batch only with some blocks recomputed: the fewest of them */
        iv2_distill_config c2 = c;
        c2.batch = 4000;
        size_t lo = 0, hi = (size_t)1 << 40;   /* the least free memory with which 0 blocks fit */
        while (hi - lo > 4096) {
            size_t mid = lo + (hi - lo) / 2;
            if (iv2_distill_auto_recompute(&c2, CD, MD, FD, nv, es, mid) == 0) hi = mid; else lo = mid;
        }
        size_t use = (size_t)((double)lo * 0.995), room = use - use / 10 - G;
        int R = iv2_distill_auto_recompute(&c2, CD, MD, FD, nv, es, use);
        CHECK(R > 0 && R <= 4, "auto, a little short of none: %d blocks", R);
        CHECK(R >= 1 && iv2_distill_largest_batch(&c2, CD, MD, FD, nv, R, es, room) >= 4000 &&
              iv2_distill_largest_batch(&c2, CD, MD, FD, nv, R - 1, es, room) < 4000,
              "auto: %d blocks fit batch 4000 and %d do not", R, R - 1);
        c.recompute = IV2_RECOMPUTE_ALL;
    }
    iv2_trainer t;
    memset(&t, 0, sizeof t);
    if (iv2_trainer_init(&t, &c, CD, MD, FD, nv)) { CHECK(0, "init: %s", iv2_errmsg()); iv2_trainer_close(&t); return; }
    CHECK(t.student->recompute == 4, "recompute all -> %d blocks", t.student->recompute);
    iv2_rng r;
    iv2_rng_seed(&r, 1, 2, 3, 4);
    float *sp = t.student->params;
    for (size_t i = 0; i < t.student->n_elems; i++) sp[i] += (float)(iv2_rng_uniform(&r) - 0.5) * 0.5f;
    iv2_batch b;
    memset(&b, 0, sizeof b);
    b.B = B; b.nv = nv; b.step = 5;
    b.frames = malloc((size_t)B * T * 8 * 8 * 3);
    for (int i = 0; i < B * T * 8 * 8 * 3; i++) b.frames[i] = (uint8_t)(iv2_rng_u64(&r) >> 56);
    b.vis = malloc(sizeof(int32_t) * B * nv);
    for (int s = 0; s < B; s++) iv2_mask_draw(IV2_MASK_RANDOM, NULL, T, P, 0.5f, &r, b.vis + s * nv);
    b.clip[0] = malloc(sizeof(float) * B * nv * CD);
    b.mae[0] = malloc(sizeof(float) * B * (nv - 1) * MD);
    b.final = malloc(sizeof(float) * B * FD);
    float *tg[3] = {b.clip[0], b.mae[0], b.final};
    int rows[3] = {B * nv, B * (nv - 1), B}, dd[3] = {CD, MD, FD};
    for (int q = 0; q < 3; q++)
        for (int i = 0; i < rows[q]; i++) {
            double n = 0;
            for (int j = 0; j < dd[q]; j++) { float v = (float)(iv2_rng_uniform(&r) - 0.5); tg[q][i * dd[q] + j] = v; n += v * v; }
            for (int j = 0; j < dd[q]; j++) tg[q][i * dd[q] + j] /= (float)sqrt(n);
        }
    float *g[3];
    double loss[3];
    for (int i = 0; i < 3; i++) {   /* recompute all; none; none with keep_normed */
        t.student->recompute = i ? 0 : 4;
        t.student->keep_normed = i == 2;
        CHECK(iv2_trainer_forward_backward(&t, &b, 1) == 0, "step: %s", iv2_errmsg());
        g[i] = dl(be, t.student->grads, t.student->n_elems);
        loss[i] = t.loss.total;
    }
    for (int i = 1; i < 3; i++)
        CHECK(loss[0] == loss[i] && !memcmp(g[0], g[i], sizeof(float) * t.student->n_elems),
              "trainer step: recompute all and none%s give the same loss (%.9g, %.9g) and gradients",
              i == 2 ? " keeping the normed inputs" : "", loss[0], loss[i]);
    free(g[0]); free(g[1]); free(g[2]);
    /* the trainer's choice: on the CPU never (no gain there); whether they fit: with plenty of
     * memory yes, unknown or too little no, and exactly at the plan's bytes plus the headroom */
    {
        iv2_trainer t2;
        memset(&t2, 0, sizeof t2);
        iv2_distill_config c0 = c;
        c0.recompute = 0;
        if (iv2_trainer_init(&t2, &c0, CD, MD, FD, nv) == 0)
            CHECK(t2.student->keep_normed == 0, "the CPU trainer does not keep the normed inputs");
        else CHECK(0, "init recompute 0: %s", iv2_errmsg());
        iv2_trainer_close(&t2);
        const size_t G = (size_t)1 << 30;
        CHECK(iv2_distill_keep_normed_fits(&c0, CD, MD, FD, nv, 2, 0) == 0, "free memory unknown: not kept");
        CHECK(iv2_distill_keep_normed_fits(&c0, CD, MD, FD, nv, 2, G) == 0, "less than the headroom: not kept");
        CHECK(iv2_distill_keep_normed_fits(&c0, CD, MD, FD, nv, 2, 64 * G) == 1, "plenty: kept");
        c0.batch = 20000;   /* a batch that needs more than the headroom: the boundary */
        size_t lo = 0, hi = (size_t)1 << 42;
        while (hi - lo > 1) {
            size_t mid = lo + (hi - lo) / 2;
            if (iv2_distill_keep_normed_fits(&c0, CD, MD, FD, nv, 2, mid) == 1) hi = mid; else lo = mid;
        }
        /* at the boundary the room less the headroom holds the plan with keep, and not one byte less:
           so keeping costs more than not (the same room fits batch 20000 without keep) */
        CHECK(iv2_distill_largest_batch(&c0, CD, MD, FD, nv, 0, 2, hi - hi / 10 - G) >= 20000,
              "where keeping just fits (%zu bytes), not keeping fits too", hi);
        CHECK(iv2_distill_keep_normed_fits(&c0, CD, MD, FD, nv, 2, hi - 4096) == 0, "a little less: not kept");
    }
    free(b.frames); free(b.vis); free(b.clip[0]); free(b.mae[0]); free(b.final);
    iv2_trainer_close(&t);
}

int main(void) {
    iv2_set_quiet(1);
    be = iv2_backend_create("cpu", 2);
    if (!be) { fprintf(stderr, "%s\n", iv2_errmsg()); return 1; }
    run("student-like",
        "{\"arch\":\"student\",\"img\":16,\"patch\":4,\"frames\":2,\"tubelet\":1,\"width\":48,\"depth\":5,\"heads\":3,"
        "\"mlp\":80,\"norm\":\"rms\",\"eps\":1e-6,\"qk_norm\":1,\"layerscale\":1,\"ls_init\":0.5,\"cls\":1,"
        "\"pos\":\"learned\",\"gelu\":\"tanh\",\"pool_heads\":2,\"pool_dim\":12,\"pool_eps\":1e-5}");
    run("videomae-like",
        "{\"arch\":\"videomae\",\"img\":16,\"patch\":4,\"frames\":4,\"tubelet\":2,\"width\":32,\"depth\":4,\"heads\":2,"
        "\"mlp\":48,\"norm\":\"ln\",\"eps\":1e-6,\"qkv_bias\":1,\"cls\":0,\"pos\":\"sincos1d\",\"final_norm\":1,"
        "\"gelu\":\"erf\",\"pool_heads\":0,\"pool_eps\":1e-5}");
    trainer_step();
    iv2_backend_destroy(be);
    return test_done();
}
