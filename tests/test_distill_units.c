/* test_distill_units: config defaults and parsing, the LR schedule (hand formula of
 * utils.cosine_scheduler), mask counts and the attention mask's inclusion frequencies against
 * the exact law of sampling without replacement, AdamW + clipping against hand formulas, and
 * the PNG writer's checksums (standard check values) and layout. */
#include "testutil.h"
#include "distill.h"
#include "sha256.h"
#include "err.h"
#include <stdint.h>

static void test_config(void) {
    iv2_distill_config c;
    iv2_distill_config_default(&c);
    CHECK(!strcmp(c.student, "iv2-1b") && c.n_clip == 6 && c.clip_teacher[0] == 42 && c.clip_student[5] == 39 &&
          c.n_mae == 4 && c.mae_teacher[0] == 36 && c.mae_student[3] == 39, "default layers");
    CHECK(c.batch == 4096 && c.epochs == 301 && c.base_lr == 1.5e-4f && c.beta2 == 0.98f && c.eps == 1e-6f &&
          c.weight_decay == 0.05f && c.clip_grad == 3.0f && c.drop_path == -1 && c.mask_ratio == 0.8f, "defaults");
    iv2_plan p;
    CHECK(iv2_plan_make(&p, &c, 1100000) == 0, "plan");
    CHECK(p.steps_per_epoch == 268 && p.total_steps == 268 * 301 && p.warmup_steps == 268 * 40, "steps %lld",
          (long long)p.steps_per_epoch);
    CHECK(fabsf(p.peak_lr - 2.4e-3f) < 1e-9f && fabsf(p.min_lr - 1.6e-4f) < 1e-9f, "lrs %g %g", p.peak_lr, p.min_lr);
    CHECK(iv2_distill_config_parse(&c, "{\"batch\": 8, \"mask\": \"tube\", \"clip_layers\": [[5, 3]], \"steps\": 10,"
                                       " \"warmup_steps\": 3, \"lr\": 0.001, \"min_lr\": 0.0001}", "t") == 0, "%s", iv2_errmsg());
    CHECK(c.batch == 8 && c.mask == IV2_MASK_TUBE && c.n_clip == 1 && c.clip_teacher[0] == 5 && c.clip_student[0] == 3, "parsed");
    CHECK(iv2_distill_config_parse(&c, "{\"bacth\": 8}", "run.json") == -1 && strstr(iv2_errmsg(), "bacth"), "unknown key named: %s", iv2_errmsg());
    CHECK(iv2_distill_config_parse(&c, "{\"mask_ratio\": 1.5}", "run.json") == -1, "ratio range");
    /* drop_path is a run-config key (default -1: the preset's); an override in student_overrides is refused */
    iv2_distill_config_default(&c);
    CHECK(iv2_distill_config_parse(&c, "{\"student_overrides\": {\"drop_path\": 0.3}}", "run.json") == -1 &&
          strstr(iv2_errmsg(), "drop_path"), "drop_path in student_overrides refused: %s", iv2_errmsg());
    CHECK(iv2_distill_config_parse(&c, "{\"student_overrides\": {\"depth\": 2}}", "run.json") == 0, "%s", iv2_errmsg());
    CHECK(iv2_distill_config_parse(&c, "{\"batch\": ", "run.json") == -1, "bad json");
    CHECK(c.loader_threads == 0, "loader_threads: auto by default");
    iv2_distill_config_default(&c);
    CHECK(iv2_distill_config_parse(&c, "{\"loader_threads\": 65}", "run.json") == -1 && strstr(iv2_errmsg(), "loader_threads"),
          "loader_threads range: %s", iv2_errmsg());
    /* whole-number keys: no silent truncation or overflow; counts that mean nothing below 0 refused */
    static const char *const bad[][2] = {
        {"{\"batch\": 2.7}", "whole number"}, {"{\"batch\": 1e12}", "out of range"}, {"{\"seed\": -1}", "seed"},
        {"{\"seed\": 1e30}", "seed"}, {"{\"keep_ckpt\": 1.5}", "keep_ckpt"}, {"{\"ckpt_every\": -5}", "ckpt_every"},
        {"{\"eval_every\": -1}", "eval_every"}, {"{\"warmup_epochs\": -2}", "warmup_epochs"},
        {"{\"warmup_steps\": -2}", "warmup_steps"}, {"{\"steps\": -2}", "steps"}, {"{\"threads\": -4}", "threads"},
        {"{\"alpha_mae\": -1}", "alpha_mae"}, {"{\"batch\": 4, \"lr\": 1e-3, \"batch\": 8}", "\"batch\" given twice"},
        /* a float key past a float's range (inf), block pairs that are not whole numbers, the
         * internal eval_views -1, negative epochs, a teacher or unknown preset as the student */
        {"{\"alpha_clip\": 1e40}", "beyond a float's range"}, {"{\"lr\": -1e39}", "\"lr\""},
        {"{\"clip_layers\": [[5.7, 5]]}", "whole numbers"}, {"{\"mae_layers\": [[3, 5.5]]}", "whole numbers"},
        {"{\"eval_views\": -1}", "eval_views"}, {"{\"epochs\": -3, \"steps\": 5}", "epochs"},
        {"{\"student\": \"internvit-tiny\"}", "not a student preset"}, {"{\"student\": \"iv2-xx\"}", "\"student\""}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        iv2_distill_config_default(&c);
        CHECK(iv2_distill_config_parse(&c, bad[i][0], "run.json") == -1 && strstr(iv2_errmsg(), bad[i][1]), "%s refused: %s",
              bad[i][0], iv2_errmsg());
    }
    iv2_distill_config_default(&c);
    CHECK(iv2_distill_config_parse(&c, "{\"batch\": 64.0, \"seed\": 9007199254740992, \"warmup_steps\": -1}", "run.json") == 0 &&
          c.batch == 64 && c.seed == 9007199254740992ull, "64.0 is 64, seed 2^53: %s", iv2_errmsg());
    /* round trip */
    iv2_distill_config a, b;
    iv2_distill_config_default(&a);
    a.batch = 3; a.mask = IV2_MASK_RANDOM; a.n_mae = 1; a.loader_threads = 6;
    char *js = iv2_distill_config_to_json(&a);
    iv2_distill_config_default(&b);
    CHECK(iv2_distill_config_parse(&b, js, "rt") == 0 && b.batch == 3 && b.mask == IV2_MASK_RANDOM && b.n_mae == 1 &&
          b.n_clip == 6 && b.loader_threads == 6, "round trip %s", js);
    free(js);
    /* schedule: 10 steps, 3 warmup, peak 0.001*8/256, min 0.0001*8/256 */
    iv2_distill_config_parse(&c, "{\"batch\": 8, \"steps\": 10, \"warmup_steps\": 3, \"lr\": 0.001, \"min_lr\": 0.0001}", "t");
    CHECK(iv2_plan_make(&p, &c, 100) == 0, "plan");
    double pk = 0.001 * 8 / 256, mn = 0.0001 * 8 / 256;
    double want[10];
    for (int i = 0; i < 3; i++) want[i] = pk * i / 2.0;   /* np.linspace(0, pk, 3) */
    for (int j = 0; j < 7; j++) want[3 + j] = mn + 0.5 * (pk - mn) * (1 + cos(M_PI * j / 7.0));
    for (int i = 0; i < 10; i++) CHECK(fabs(iv2_lr_at(&p, i) - want[i]) < 1e-9, "lr[%d] %g want %g", i, iv2_lr_at(&p, i), want[i]);
}

static void test_masks(void) {
    iv2_rng r;
    iv2_rng_seed(&r, 5, 0, 0, 0);
    CHECK(iv2_mask_keep(256, 0.8f) == 52 && iv2_mask_n_visible(IV2_MASK_ATTENTION, 8, 256, 0.8f) == 417, "recipe counts");
    CHECK(iv2_mask_n_visible(IV2_MASK_RANDOM, 8, 256, 0.8f) == 1 + 2048 - 1638, "random count");
    float attn[8 * 256];
    for (int i = 0; i < 8 * 256; i++) attn[i] = (float)iv2_rng_uniform(&r);
    int32_t vis[2049];
    for (int t = 0; t < 3; t++) {
        int n = iv2_mask_draw((iv2_mask_type)t, attn, 8, 256, 0.8f, &r, vis);
        CHECK(n == iv2_mask_n_visible((iv2_mask_type)t, 8, 256, 0.8f), "type %d count %d", t, n);
        CHECK(vis[0] == 0, "CLS visible");
        int ok = 1;
        for (int i = 1; i < n; i++) ok &= vis[i] > vis[i - 1] && vis[i] >= 1 && vis[i] <= 2048;
        CHECK(ok, "type %d: sorted, unique, in range", t);
        if (t != IV2_MASK_RANDOM) {   /* exactly 52 per frame */
            int per[8] = {0};
            for (int i = 1; i < n; i++) per[(vis[i] - 1) / 256]++;
            for (int f = 0; f < 8; f++) CHECK(per[f] == 52, "type %d frame %d has %d", t, f, per[f]);
        }
        if (t == IV2_MASK_TUBE)
            for (int i = 1; i <= 52; i++) CHECK(vis[i + 52 * 7] == vis[i] + 7 * 256, "tube repeats");
    }
    /* inclusion frequencies: 5 weights, keep 2, against the exact law of two draws without replacement */
    const float w[5] = {0.5f, 0.25f, 0.125f, 0.1f, 0.025f};
    double W = 0, exact[5] = {0};
    for (int i = 0; i < 5; i++) W += w[i];
    for (int i = 0; i < 5; i++) {
        exact[i] = w[i] / W;
        for (int j = 0; j < 5; j++) if (j != i) exact[i] += w[j] / W * w[i] / (W - w[j]);
    }
    int N = getenv("IV2_VALGRIND") ? 20000 : 200000, cnt[5] = {0};
    int32_t v[3];
    for (int s = 0; s < N; s++) {
        iv2_rng_seed(&r, 11, (uint64_t)s, 0, 0);
        iv2_mask_draw(IV2_MASK_ATTENTION, w, 1, 5, 0.6f, &r, v);   /* keep 5 - int(3) = 2 */
        cnt[v[1] - 1]++; cnt[v[2] - 1]++;
    }
    for (int i = 0; i < 5; i++) {
        double f = (double)cnt[i] / N, se = sqrt(exact[i] * (1 - exact[i]) / N);
        CHECK(fabs(f - exact[i]) < 5 * se, "patch %d drawn %.4f, exact %.4f", i, f, exact[i]);
    }
    /* the tube and random masks: each of 5 patches kept with probability 2/5 (a Fisher-Yates off by
     * one would never keep the last one) */
    const iv2_mask_type uni[2] = {IV2_MASK_RANDOM, IV2_MASK_TUBE};
    for (int u = 0; u < 2; u++) {
        int t = uni[u], cu[5] = {0};
        for (int s = 0; s < N; s++) {
            iv2_rng_seed(&r, 13, (uint64_t)s, (uint64_t)t, 0);
            if (iv2_mask_draw((iv2_mask_type)t, NULL, 1, 5, 0.6f, &r, v) != 3) { CHECK(0, "type %d: keep 2 of 5", t); break; }
            cu[v[1] - 1]++; cu[v[2] - 1]++;
        }
        int ok = 1;
        double se = sqrt(0.4 * 0.6 / N);
        for (int i = 0; i < 5; i++) ok &= fabs((double)cu[i] / N - 0.4) < 5 * se;
        CHECK(ok, "type %d: every patch kept with probability 2/5 (%d %d %d %d %d of %d)", t, cu[0], cu[1], cu[2], cu[3],
              cu[4], N);
    }
    /* the random mask's count truncates, as the official int(): 2048 x 0.85 = 1740.8 masked -> 1740 */
    CHECK(iv2_mask_n_visible(IV2_MASK_RANDOM, 8, 256, 0.85f) == 1 + 2048 - 1740, "random count truncates");
    /* zero weights are only taken when nothing else is left */
    const float z[4] = {0, 1, 0, 1};
    iv2_mask_draw(IV2_MASK_ATTENTION, z, 1, 4, 0.5f, &r, v);
    CHECK(v[1] == 2 && v[2] == 4, "zero-weight patches skipped (%d %d)", v[1], v[2]);
}

/* The step beside the next forward (distill.h): pieces cut at tensor boundaries only; on the CPU
 * the side stream's pieces run when waited for (compute.h), so each wait is seen to release
 * exactly its pieces; and the result is the plain step's, bit for bit. */
static void test_optim_overlap(void) {
    iv2_backend *be = iv2_cpu_backend_create(1);
    enum { N = 206 };
    iv2_dparam tab[3] = {{.name = "a.weight", .ndim = 2, .shape = {10, 10}, .off = 0, .n = 100},
                         {.name = "b.weight", .ndim = 2, .shape = {5, 10}, .off = 112, .n = 50},
                         {.name = "c.bias", .ndim = 1, .shape = {30}, .off = 176, .n = 30, .no_wd = 1}};
    float *p[2], *g[2], p0[N];
    iv2_optim o[2];
    iv2_distill_config c;
    iv2_distill_config_default(&c);
    for (int i = 0; i < N; i++) p0[i] = (float)((i * 37) % 101) / 50 - 1;
    for (int k = 0; k < 2; k++) {   /* o[0] plain, o[1] beside */
        p[k] = be->alloc(be, N * 4);
        g[k] = be->alloc(be, N * 4);
        memcpy(p[k], p0, sizeof p0);
        for (int i = 0; i < N; i++) g[k][i] = (float)((i * 13) % 17) / 8 - 1;
        iv2_optim_init(&o[k], be);
        CHECK(iv2_optim_set_overlap(&o[k], k) == 0, "overlap %d", k);
        iv2_optim_add(&o[k], p[k], g[k], N, tab, 3);
    }
    CHECK(o[1].g[0].n_pieces == 1, "one piece by default");
    const size_t straddle[2] = {150, N}, back[3] = {176, 112, N}, short_[2] = {112, 200}, ok[3] = {112, 176, N};
    CHECK(iv2_optim_set_pieces(&o[1], 0, straddle, 2) == -1 && strstr(iv2_errmsg(), "straddles"), "a cut inside a tensor refused: %s", iv2_errmsg());
    CHECK(iv2_optim_set_pieces(&o[1], 0, back, 3) == -1 && strstr(iv2_errmsg(), "increasing"), "ends out of order refused: %s", iv2_errmsg());
    CHECK(iv2_optim_set_pieces(&o[1], 0, short_, 2) == -1 && strstr(iv2_errmsg(), "last piece"), "ends short of the buffer refused: %s", iv2_errmsg());
    CHECK(iv2_optim_set_pieces(&o[1], 0, ok, 3) == 0 && o[1].g[0].n_pieces == 3, "three pieces: %s", iv2_errmsg());
    CHECK(iv2_optim_set_pieces(&o[0], 0, ok, 3) == -1, "pieces need overlap on");
    for (int t = 1; t <= 2; t++) {
        float before[N];
        memcpy(before, p[1], sizeof before);
        for (int k = 0; k < 2; k++) iv2_optim_step(&o[k], 0.01f, &c, t, 0.7f);
        CHECK(o[1].pending && !memcmp(p[1], before, sizeof before), "step %d: queued, nothing run yet", t);
        iv2_optim_wait_params(&o[1], 0, 50);   /* piece 0 alone */
        CHECK(p[1][0] != before[0] && p[1][99] != before[99] && p[1][112] == before[112], "step %d: piece 0 run, piece 1 not", t);
        iv2_optim_wait_params(&o[1], 0, 113);   /* into piece 1 */
        CHECK(p[1][161] != before[161] && p[1][176] == before[176], "step %d: piece 1 run, piece 2 not", t);
        iv2_optim_join(&o[1]);
        CHECK(!o[1].pending && p[1][205] != before[205], "step %d: joined", t);
        CHECK(!memcmp(p[0], p[1], N * 4) && !memcmp(o[0].g[0].m, o[1].g[0].m, N * 4) &&
              !memcmp(o[0].g[0].v, o[1].g[0].v, N * 4), "step %d beside = the plain step, bit for bit", t);
    }
    iv2_optim_step(&o[1], 0.01f, &c, 3, 0.7f);   /* pending at free: free waits for it */
    for (int k = 0; k < 2; k++) {
        iv2_optim_free(&o[k]);
        be->free(be, p[k]); be->free(be, g[k]);
    }
    be->destroy(be);
}

/* three AdamW steps with clipping against a double reference: decoupled decay (none on the
 * no_wd tensor), bias-corrected moments; through adamw_chunks (one call), or with per_tensor,
 * adamw per tensor as for a backend without adamw_chunks */
static void optim_vs_reference(int per_tensor) {
    iv2_backend *be = iv2_cpu_backend_create(1);
    if (per_tensor) be->adamw_chunks = NULL;
    const char *path = per_tensor ? "per tensor" : "one call";
    float *p = be->alloc(be, 5 * sizeof(float)), *g = be->alloc(be, 5 * sizeof(float));
    iv2_dparam tab[2] = {{.name = "w", .ndim = 2, .shape = {2, 2}, .off = 0, .n = 4, .no_wd = 0},
                         {.name = "b", .ndim = 1, .shape = {1}, .off = 4, .n = 1, .no_wd = 1}};
    float p0[5] = {0.5f, -1, 2, 0.25f, 1}, g0[5] = {3, -4, 0, 12, 1};
    memcpy(p, p0, sizeof p0);
    iv2_optim o;
    iv2_optim_init(&o, be);
    iv2_optim_add(&o, p, g, 5, tab, 2);
    iv2_distill_config c;
    iv2_distill_config_default(&c);
    double m[5] = {0}, v[5] = {0}, q[5];
    for (int i = 0; i < 5; i++) q[i] = p0[i];
    for (int t = 1; t <= 3; t++) {
        for (int i = 0; i < 5; i++) g[i] = g0[i] * t;
        double norm = iv2_optim_grad_norm(&o), want = 0;
        for (int i = 0; i < 5; i++) want += (double)g0[i] * t * g0[i] * t;
        want = sqrt(want);
        CHECK(fabs(norm - want) < 1e-4 * want, "grad norm %g want %g", norm, want);
        float coef = iv2_clip_coef(norm, 3.0f);
        CHECK(fabs(coef - 3.0 / (want + 1e-6)) < 1e-6, "clip coef");
        float lr = 0.01f * t;
        iv2_optim_step(&o, lr, &c, t, coef);
        for (int i = 0; i < 5; i++) {   /* decoupled decay, bias-corrected moments */
            double gi = g0[i] * t * coef, wd = i < 4 ? 0.05 : 0.0;
            m[i] = 0.9 * m[i] + 0.1 * gi;
            v[i] = 0.98 * v[i] + 0.02 * gi * gi;
            double mh = m[i] / (1 - pow(0.9, t)), vh = v[i] / (1 - pow(0.98, t));
            q[i] = q[i] * (1 - lr * wd) - lr * mh / (sqrt(vh) + 1e-6);
        }
        for (int i = 0; i < 5; i++) CHECK(fabs(p[i] - q[i]) < 1e-5, "%s: step %d param %d: %g want %g", path, t, i, p[i], q[i]);
    }
    CHECK(iv2_clip_coef(1.0, 3.0f) == 1.0f && iv2_clip_coef(100, 0) == 1.0f, "no clipping below the limit / when off");
    iv2_optim_free(&o);
    be->free(be, p); be->free(be, g);
    be->destroy(be);
}

static void test_optim(void) {
    optim_vs_reference(0);
    optim_vs_reference(1);
    iv2_backend *be = iv2_cpu_backend_create(1);
    iv2_optim o;
    iv2_distill_config c;
    iv2_distill_config_default(&c);
    /* a tensor over one chunk of the one-call path (adamw_chunks): the optimiser's step equals
     * adamw per tensor, bit for bit */
    size_t nb = IV2_ADAMW_CHUNK + 77, n2 = nb + 3;
    float *p2 = be->alloc(be, n2 * 4), *g2 = be->alloc(be, n2 * 4), *q2 = malloc(n2 * 4), *mq = calloc(n2, 4),
          *vq = calloc(n2, 4);
    for (size_t i = 0; i < n2; i++) { p2[i] = q2[i] = (float)((i * 37) % 101) / 50 - 1; g2[i] = (float)((i * 13) % 17) / 8 - 1; }
    iv2_dparam tab2[2] = {{.name = "big.weight", .ndim = 2, .shape = {1, (int64_t)nb}, .off = 0, .n = nb, .no_wd = 0},
                          {.name = "b", .ndim = 1, .shape = {3}, .off = nb, .n = 3, .no_wd = 1}};
    iv2_optim_init(&o, be);
    iv2_optim_add(&o, p2, g2, n2, tab2, 2);
    CHECK(be->adamw_chunks == NULL || o.g[0].n_chunks == 3, "2 chunks for the big tensor, 1 for the small: %d", o.g[0].n_chunks);
    for (int t = 1; t <= 2; t++) {
        iv2_optim_step(&o, 0.01f, &c, t, 0.7f);
        be->adamw(be, q2, q2, g2, mq, vq, nb, 0.01f, c.beta1, c.beta2, c.eps, c.weight_decay, t, 0.7f);
        be->adamw(be, q2 + nb, q2 + nb, g2 + nb, mq + nb, vq + nb, 3, 0.01f, c.beta1, c.beta2, c.eps, 0.0f, t, 0.7f);
    }
    CHECK(!memcmp(p2, q2, n2 * 4) && !memcmp(o.g[0].m, mq, n2 * 4) && !memcmp(o.g[0].v, vq, n2 * 4),
          "optimiser step over chunks = adamw per tensor, bit for bit");
    iv2_optim_free(&o);
    be->free(be, p2); be->free(be, g2);
    free(q2); free(mq); free(vq);
    be->destroy(be);
    test_optim_overlap();
}

/* the heads' parameter count (what the memory plan charges for them) by the formula of the
 * official decoders, and against what iv2_heads_create allocates; the largest batch that fits:
 * none in nothing, never fewer with more memory or with blocks recomputed, more with recompute */
static void test_memory_plan(void) {
    iv2_heads_dims d = {.C = 1408, .pool_dim = 768, .n_clip = 6, .clip_dim = 3200, .n_mae = 4, .mae_dim = 1408,
                        .use_final = 1, .final_dim = 768, .T = 8, .G = 16, .max_rows = 1};
    size_t C = 1408, n = 8 * 256;
    size_t want = 6 * (3200 * C + 3 * 3200) + 4 * (C * C + C + 1408 * C + 3 * 1408) + (768 * 768 + 3 * 768) +
                  (1 + n) * C + n * C;
    CHECK(iv2_heads_count_params(&d) == want, "recipe heads: %zu params, want %zu", iv2_heads_count_params(&d), want);
    iv2_heads_dims t = {.C = 32, .pool_dim = 16, .n_clip = 2, .clip_dim = 20, .n_mae = 1, .mae_dim = 12,
                        .use_final = 1, .final_dim = 10, .T = 4, .G = 2, .max_rows = 8};
    iv2_backend *be = iv2_cpu_backend_create(1);
    iv2_heads *h = iv2_heads_create(be, &t);
    CHECK(h && h->n_params == iv2_heads_count_params(&t), "count = what iv2_heads_create allocates");
    iv2_heads_free(h);
    be->destroy(be);
    iv2_distill_config c;
    iv2_distill_config_default(&c);   /* the recipe: iv2-1b, 6 clip + 4 mae heads + final */
    int nv = 417, last = -1, mono = 1;
    for (double gib = 20; gib <= 80; gib += 10) {
        int b = iv2_distill_largest_batch(&c, 3200, 1408, 768, nv, 40, 2, (size_t)(gib * 1073741824.0));
        mono &= b >= last;
        last = b;
    }
    size_t g80 = (size_t)80 << 30;
    int none = iv2_distill_largest_batch(&c, 3200, 1408, 768, nv, 0, 2, g80);
    int all = iv2_distill_largest_batch(&c, 3200, 1408, 768, nv, 40, 2, g80);
    CHECK(iv2_distill_largest_batch(&c, 3200, 1408, 768, nv, 40, 2, 0) == 0, "nothing fits in 0 bytes");
    CHECK(mono && none > 0 && all > none, "largest batch in 80 GiB: %d recomputing none, %d all (monotone in memory: %d)",
          none, all, mono);
}

static void test_png(void) {
    CHECK(iv2_crc32((const uint8_t *)"123456789", 9, 0) == 0xCBF43926u, "crc32 check value");
    CHECK(iv2_adler32((const uint8_t *)"Wikipedia", 9) == 0x11E60398u, "adler32 check value");
    int w = 300, h = 250;   /* > 65535 bytes of scanlines: several stored blocks */
    uint8_t *rgb = malloc((size_t)w * h * 3);
    for (int i = 0; i < w * h * 3; i++) rgb[i] = (uint8_t)(i * 7);
    const char *path = "build/tmp/test_distill_units.png";
    (void)!system("mkdir -p build/tmp");
    CHECK(iv2_png_write(path, rgb, w, h) == 0, "%s", iv2_errmsg());
    FILE *f = fopen(path, "rb");
    uint8_t *buf = malloc(1 << 20);
    size_t n = f ? fread(buf, 1, 1 << 20, f) : 0;
    if (f) fclose(f);
    CHECK(n > 8 && !memcmp(buf, "\x89PNG\r\n\x1a\n", 8), "signature");
    /* walk the chunks: lengths, CRCs, and decode the stored blocks back to the pixels */
    size_t off = 8, zn = 0;
    uint8_t *z = malloc(1 << 20);
    int chunks = 0, crc_ok = 1;
    while (off + 12 <= n) {
        uint32_t len = (uint32_t)buf[off] << 24 | buf[off + 1] << 16 | buf[off + 2] << 8 | buf[off + 3];
        uint32_t crc = (uint32_t)buf[off + 8 + len] << 24 | buf[off + 9 + len] << 16 | buf[off + 10 + len] << 8 | buf[off + 11 + len];
        crc_ok &= iv2_crc32(buf + off + 4, len + 4, 0) == crc;
        if (!memcmp(buf + off + 4, "IDAT", 4)) { memcpy(z + zn, buf + off + 8, len); zn += len; }
        off += 12 + len;
        chunks++;
    }
    CHECK(chunks == 3 && off == n && crc_ok, "3 chunks with good CRCs");
    size_t raw_n = (size_t)(w * 3 + 1) * h, q = 2, rn = 0;
    uint8_t *raw = malloc(raw_n + 70000);
    int final = 0;
    CHECK(z[0] == 0x78 && (z[0] * 256 + z[1]) % 31 == 0, "zlib header");
    while (!final && q + 5 <= zn) {
        final = z[q] & 1;
        CHECK((z[q] & 6) == 0, "stored block");
        size_t len = z[q + 1] | z[q + 2] << 8, nlen = z[q + 3] | z[q + 4] << 8;
        CHECK((len ^ nlen) == 0xffff, "LEN/NLEN");
        memcpy(raw + rn, z + q + 5, len);
        rn += len; q += 5 + len;
    }
    CHECK(rn == raw_n, "inflated %zu bytes want %zu", rn, raw_n);
    uint32_t ad = (uint32_t)z[q] << 24 | z[q + 1] << 16 | z[q + 2] << 8 | z[q + 3];
    CHECK(ad == iv2_adler32(raw, raw_n), "adler32 trailer");
    int same = 1;
    for (int y = 0; y < h; y++) same &= raw[y * (w * 3 + 1)] == 0 && !memcmp(raw + y * (w * 3 + 1) + 1, rgb + y * w * 3, (size_t)w * 3);
    CHECK(same, "pixels round trip");
    free(raw); free(z); free(buf); free(rgb);
}

/* which file is a run's newest checkpoint and which one comes before it (the damaged-checkpoint
 * fallback), from a folder listing: only ckpt_<step>.safetensors counts, never a set-aside
 * *.damaged nor a write's temporary file; names built here by hand, files empty */
static void test_ckpt_listing(void) {
    char dir[] = "/tmp/iv2_test_ckpt_XXXXXX", p[256];
    if (!mkdtemp(dir)) { CHECK(0, "mkdtemp"); return; }
    int64_t step = -1, prev = -1;
    CHECK(iv2_ckpt_latest("/nonexistent/iv2-run", p, sizeof p, &step) == 1, "no folder yet: no checkpoint, no error");
    const char *names[] = {"ckpt_00000004.safetensors", "ckpt_00000012.safetensors", "ckpt_00000008.safetensors",
                           "ckpt_00000016.safetensors.damaged", "ckpt_00000020.safetensors.tmp.AbC123", "config.json"};
    for (int i = 0; i < 6; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        FILE *f = fopen(p, "w");
        if (f) fclose(f);
    }
    CHECK(iv2_ckpt_latest(dir, p, sizeof p, &step) == 0 && step == 12 && strstr(p, "/ckpt_00000012.safetensors"),
          "newest: step %lld (%s), not the .damaged or .tmp files", (long long)step, p);
    /* the fallback goes back one checkpoint, not to the oldest */
    CHECK(iv2_ckpt_before(dir, 12, p, sizeof p, &prev) == 0 && prev == 8 && strstr(p, "/ckpt_00000008.safetensors"),
          "before 12: %lld (%s)", (long long)prev, p);
    CHECK(iv2_ckpt_before(dir, 8, p, sizeof p, &prev) == 0 && prev == 4, "before 8: %lld", (long long)prev);
    CHECK(iv2_ckpt_before(dir, 4, p, sizeof p, &prev) == 1, "nothing before the oldest");
    snprintf(p, sizeof p, "rm -rf %s", dir);
    if (system(p)) {}
}

int main(void) {
    iv2_set_quiet(1);
    test_config();
    test_masks();
    test_optim();
    test_memory_plan();
    test_png();
    test_ckpt_listing();
    return test_done();
}
