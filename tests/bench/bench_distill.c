/* bench_distill: training views/s and tokens/s of iv2-distill on the CPU for an iv2-tiny and an
 * iv2-s student (8 x 224^2 frames, attention mask 0.8: 417 visible tokens, every stage-1 head),
 * beside the same step in PyTorch (eager fp32, same threads; tests/bench/bench_distill.py) when
 * torch is installed, with the ratio; and the loader alone (synthetic cache, batches/s) against
 * what the tiny trainer consumes. Per run: the median over a few steps after one warm-up step;
 * C and PyTorch runs alternate for BENCH_ROUNDS rounds and each side reports the median of its
 * runs, so load from other processes on a shared machine hits both alike.
 * BENCH_STEPS (default 3), BENCH_ROUNDS (default 3), BENCH_THREADS (default: all cores);
 * BENCH_LOADER_ONLY=1: the loader at recipe size alone; BENCH_LOADER_DISK=1 (root): also its
 * first batch with the page cache dropped. */
#include "testutil.h"
#include "test_distill_synth.h"
#include "log.h"
#include <sys/statvfs.h>

static int cmp_d(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }

typedef struct { const char *name; int C, D, H, MLP, PH, PD, CD, MD, FD; } spec;

static double c_step(const spec *s, int B, int threads, int steps) {
    iv2_distill_config c;
    iv2_distill_config_default(&c);
    snprintf(c.student, sizeof c.student, "%s", s->name);
    c.n_clip = 6; c.n_mae = 4;
    for (int k = 0; k < 6; k++) { c.clip_teacher[k] = k; c.clip_student[k] = s->D - 6 + k; }
    for (int k = 0; k < 4; k++) { c.mae_teacher[k] = k; c.mae_student[k] = s->D - 4 + k; }
    c.batch = B; c.threads = threads; c.drop_path = 0.1f; c.steps = 100; c.warmup_steps = 1;
    int nv = iv2_mask_n_visible(IV2_MASK_ATTENTION, 8, 256, 0.8f);
    iv2_trainer t;
    memset(&t, 0, sizeof t);
    if (iv2_trainer_init(&t, &c, s->CD, s->MD, s->FD, nv) || iv2_plan_make(&t.plan, &c, 1000)) {
        fprintf(stderr, "%s: %s\n", s->name, iv2_errmsg());
        iv2_trainer_close(&t);
        return -1;
    }
    iv2_batch b;
    memset(&b, 0, sizeof b);
    b.B = B; b.nv = nv;
    b.frames = malloc((size_t)B * 8 * 224 * 224 * 3);
    iv2_rng r;
    iv2_rng_seed(&r, 1, 2, 3, 4);
    for (size_t i = 0; i < (size_t)B * 8 * 224 * 224 * 3; i++) b.frames[i] = (uint8_t)(iv2_rng_u64(&r) >> 56);
    b.vis = malloc(sizeof(int32_t) * B * nv);
    float *attn = malloc(sizeof(float) * 2048);
    for (int i = 0; i < 2048; i++) attn[i] = (float)iv2_rng_uniform(&r);
    for (int k = 0; k < B; k++) iv2_mask_draw(IV2_MASK_ATTENTION, attn, 8, 256, 0.8f, &r, b.vis + k * nv);
    for (int k = 0; k < 6; k++) { b.clip[k] = malloc(sizeof(float) * B * nv * s->CD); for (int i = 0; i < B * nv; i++) { for (int j = 0; j < s->CD; j++) b.clip[k][i * s->CD + j] = (float)iv2_rng_uniform(&r); synth_unit(b.clip[k] + i * s->CD, s->CD); } }
    for (int k = 0; k < 4; k++) { b.mae[k] = malloc(sizeof(float) * B * (nv - 1) * s->MD); for (int i = 0; i < B * (nv - 1); i++) { for (int j = 0; j < s->MD; j++) b.mae[k][i * s->MD + j] = (float)iv2_rng_uniform(&r); synth_unit(b.mae[k] + i * s->MD, s->MD); } }
    b.final = malloc(sizeof(float) * B * s->FD);
    for (int i = 0; i < B; i++) { for (int j = 0; j < s->FD; j++) b.final[i * s->FD + j] = (float)iv2_rng_uniform(&r); synth_unit(b.final + i * s->FD, s->FD); }
    double ts[32];
    int n = 0;
    for (int k = 0; k <= steps && k < 32; k++) {
        b.step = k;
        double t0 = iv2_now();
        if (iv2_trainer_step(&t, &b)) { fprintf(stderr, "%s\n", iv2_errmsg()); break; }
        if (k) ts[n++] = iv2_now() - t0;
    }
    qsort(ts, (size_t)n, sizeof *ts, cmp_d);
    double med = n ? ts[n / 2] : -1;
    free(attn);
    iv2_batch_free(&b);
    iv2_trainer_close(&t);
    return med;
}

static double torch_step(const spec *s, int B, int threads, int steps) {
    char cmd[1024];
    int nv = iv2_mask_n_visible(IV2_MASK_ATTENTION, 8, 256, 0.8f);
    snprintf(cmd, sizeof cmd, "python3 tests/bench/bench_distill.py %d %d %d %d %d %d %d %d %d 6 4 %d %d %d %d 2>/dev/null",
             s->C, s->D, s->H, s->MLP, s->PH, s->PD, s->CD, s->MD, s->FD, B, nv, threads, steps);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    double v = -1, st = -1;
    if (fscanf(p, "views_s %lf step_s %lf", &v, &st) != 2) st = -1;
    pclose(p);
    return st;
}

/* ---- the loader at recipe size ----
 * A cache with the 1B recipe's targets (clip_b42..47 [2049][3200], mae_b36..39 [2048][1408],
 * clip_pool [768], all bf16; clip_attn [8][256] fp32; 8 frames of 224^2), batch = its views,
 * batches for a bf16 device (the CPU backend relabelled, as test_distill_slots does): the path
 * before (every target through f32 rows and a conversion, one thread) against the raw row copy
 * on 1..n threads, alternating, on the same steps; the batches' bytes compared. */

static int recipe_cache(const char *dir, int views) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) return iv2_err("cannot clear %s", dir);
    iv2_cache *c;
    if (iv2_cache_open(&c, dir, IV2_CACHE_RDWR)) return -1;
    char meta[8192];
    int k = snprintf(meta, sizeof meta, "{\"format\":1,\"synthetic\":true,\"targets\":[");
    for (int i = 0; i < 6; i++)
        k += snprintf(meta + k, sizeof meta - k, "{\"name\":\"clip_b%d\",\"teacher\":\"internvit\",\"kind\":\"block\",\"block\":%d,\"tokens\":2049,\"dim\":3200,\"dtype\":\"bf16\",\"post\":\"l2\"},", 42 + i, 42 + i);
    for (int i = 0; i < 4; i++)
        k += snprintf(meta + k, sizeof meta - k, "{\"name\":\"mae_b%d\",\"teacher\":\"videomae\",\"kind\":\"block\",\"block\":%d,\"tokens\":2048,\"dim\":1408,\"dtype\":\"bf16\",\"post\":\"l2\"},", 36 + i, 36 + i);
    snprintf(meta + k, sizeof meta - k, "{\"name\":\"clip_pool\",\"teacher\":\"internvit\",\"kind\":\"pool\",\"tokens\":1,\"dim\":768,\"dtype\":\"bf16\",\"post\":\"l2\"},"
             "{\"name\":\"clip_attn\",\"teacher\":\"internvit\",\"kind\":\"attn\",\"tokens\":8,\"dim\":256,\"dtype\":\"fp32\",\"post\":\"none\"}]}");
    if (iv2_cache_set_meta(c, meta)) { iv2_cache_close(c); return -1; }
    int nt = iv2_cache_n_targets(c);
    void **enc = calloc((size_t)nt, sizeof *enc);
    float *x = malloc(sizeof(float) * 2049 * 3200);
    iv2_rng r;
    iv2_rng_seed(&r, 5, 6, 7, 8);
    for (int t = 0; t < nt; t++) {   /* one value per target, stored under every view */
        const iv2_cache_target *tg = iv2_cache_target_at(c, t);
        size_t n = (size_t)tg->tokens * tg->dim;
        for (size_t i = 0; i < n; i++) x[i] = (float)(iv2_rng_uniform(&r) - 0.5) * 0.05f;
        enc[t] = malloc(IV2_CACHE_VALUE_HDR + iv2_cache_target_bytes(tg));
        iv2_cache_encode_value(tg, x, enc[t]);
    }
    uint8_t *frames = malloc(8 * 224 * 224 * 3);
    for (size_t i = 0; i < 8 * 224 * 224 * 3; i++) frames[i] = (uint8_t)(iv2_rng_u64(&r) >> 56);
    int rc = 0;
    for (int v = 0; v < views && !rc; v++) {
        iv2_cache_entry e;
        memset(&e, 0, sizeof e);
        e.view.row = v; e.view.num_frames = 16; e.view.size = 224; e.view.n_student = 8;
        e.view.src_w = e.view.src_h = e.view.crop_w = e.view.crop_h = 224;
        e.frames = frames;
        e.encoded = (const void *const *)enc;
        rc = iv2_cache_put(c, &e, 1, NULL, NULL, 0);
    }
    for (int t = 0; t < nt; t++) free(enc[t]);
    free(enc); free(x); free(frames);
    iv2_cache_close(c);
    return rc;
}

/* the target bytes of two bf16 batches equal, and their frames and masks */
static int same_batch(const iv2_loader *L, const iv2_batch *a, const iv2_batch *b) {
    size_t rv = (size_t)a->B * a->nv, rm = (size_t)a->B * (a->nv - 1);
    int same = !memcmp(a->frames, b->frames, (size_t)a->B * 8 * 224 * 224 * 3) && !memcmp(a->vis, b->vis, rv * 4) &&
               !memcmp(a->rows, b->rows, rv * 4) && !memcmp(a->tfinal, b->tfinal, (size_t)a->B * L->final_dim * 2);
    for (int k = 0; k < L->cfg.n_clip; k++) same &= !memcmp(a->tclip[k], b->tclip[k], rv * L->clip_dim * 2);
    for (int k = 0; k < L->cfg.n_mae; k++) same &= !memcmp(a->tmae[k], b->tmae[k], rm * L->mae_dim * 2);
    return same;
}

static void bench_loader_recipe(void) {
    int views = getenv("BENCH_LOADER_VIEWS") ? atoi(getenv("BENCH_LOADER_VIEWS")) : 64;
    if (views < 1) return;   /* BENCH_LOADER_VIEWS=0: skip */
    int maxth = getenv("BENCH_LOADER_THREADS") ? atoi(getenv("BENCH_LOADER_THREADS")) : 4;
    if (maxth < 1 || maxth > 64) maxth = 4;
    const char *dir = "build/tmp/bench_loader_recipe.cache";
    double per_view = 6.0 * 2049 * 3200 * 2 + 4.0 * 2048 * 1408 * 2 + 768 * 2 + 2048 * 4 + 8 * 224 * 224 * 3;
    struct statvfs fs;
    if (statvfs("build", &fs) == 0 && (double)fs.f_bavail * fs.f_frsize < 20e9 + views * per_view) {
        printf("loader at recipe size: skipped, %.1f GB free, want 20 GB + the %.1f GB cache (BENCH_LOADER_VIEWS=%d)\n",
               (double)fs.f_bavail * fs.f_frsize / 1e9, views * per_view / 1e9, views);
        return;
    }
    double t0 = iv2_now();
    if (recipe_cache(dir, views)) { printf("loader at recipe size: cannot make the cache: %s\n", iv2_errmsg()); return; }
    double t_write = iv2_now() - t0;
    iv2_distill_config c;
    iv2_distill_config_default(&c);   /* the recipe's pairs: clip_b42..47, mae_b36..39, use_final, attention mask */
    c.batch = views;
    iv2_loader L;
    if (iv2_loader_open(&L, dir, &c, 8, 224, 8, 256)) { printf("loader at recipe size: %s\n", iv2_errmsg()); return; }
    iv2_backend *bf = iv2_cpu_backend_create(1);
    bf->dtype = IV2_BF16;   /* only its host memory is used: batches in the form a bf16 device reads */
    bf->esize = 2;
    int B = views, nv = L.nv;
    double vals = (double)B * ((double)nv * 3200 * 6 + (double)(nv - 1) * 1408 * 4 + 768);
    /* configurations: 0 = before (f32 rows + conversion, 1 thread); then the raw copy on 1, 2, 4.. threads */
    int nconf = 1, th[8] = {1};
    for (int t = 1; t <= maxth && nconf < 8; t *= 2) th[nconf++] = t;
    iv2_batch bs[8];
    for (int i = 0; i < nconf; i++) iv2_batch_alloc_for(&bs[i], &L, B, nv, bf);
    for (int s = 0; s < 3; s++) {   /* warm-up: map the cache's pages */
        L.via_f32 = 0; L.threads = maxth;
        if (iv2_loader_build(&L, s, &bs[1])) { printf("loader at recipe size: %s\n", iv2_errmsg()); goto done; }
    }
    int rounds = getenv("BENCH_ROUNDS") ? atoi(getenv("BENCH_ROUNDS")) : 3;
    if (rounds < 1 || rounds > 15) rounds = 3;
    double ts[8][16];
    int same = 1;
    for (int r = 0; r < rounds; r++) {
        for (int j = 0; j < nconf; j++) {
            int i = (j + r) % nconf;   /* rotate the order: a page fault left over hits each alike */
            L.via_f32 = i == 0; L.threads = th[i];
            double a = iv2_now();
            if (iv2_loader_build(&L, 100 + r, &bs[i])) { printf("loader at recipe size: %s\n", iv2_errmsg()); goto done; }
            ts[i][r] = iv2_now() - a;
        }
        for (int i = 1; i < nconf; i++) same &= same_batch(&L, &bs[0], &bs[i]);
    }
    /* a cold map: the first batch after opening the cache (its pages in the page cache, not yet in
     * this process's page tables), as at the start of a run */
    double cold[8];
    for (int i = 0; i < nconf; i++) {
        iv2_loader_close(&L);
        if (iv2_loader_open(&L, dir, &c, 8, 224, 8, 256)) { printf("loader at recipe size: %s\n", iv2_errmsg()); goto done; }
        L.via_f32 = i == 0; L.threads = th[i];
        double a = iv2_now();
        if (iv2_loader_build(&L, 200, &bs[i])) { printf("loader at recipe size: %s\n", iv2_errmsg()); goto done; }
        cold[i] = iv2_now() - a;
    }
    /* BENCH_LOADER_DISK=1 (root: it empties the whole machine's page cache): the first batch with
     * the cache on disk only, as in a run over a corpus larger than memory */
    double disk = -1;
    FILE *dc = getenv("BENCH_LOADER_DISK") ? fopen("/proc/sys/vm/drop_caches", "w") : NULL;
    if (dc) {
        iv2_loader_close(&L);
        sync();
        fputs("1", dc);
        fclose(dc);
        if (iv2_loader_open(&L, dir, &c, 8, 224, 8, 256)) { printf("loader at recipe size: %s\n", iv2_errmsg()); goto done; }
        L.threads = th[nconf - 1];
        double a = iv2_now();
        if (iv2_loader_build(&L, 300, &bs[nconf - 1])) { printf("loader at recipe size: %s\n", iv2_errmsg()); goto done; }
        disk = iv2_now() - a;
    }
    /* what verifying every value's checksum on read would cost: the whole payloads of one view */
    double hash_view = 0;
    iv2_cache *c0 = L.set->shards[0];
    for (int t = 0; t < iv2_cache_n_targets(c0); t++) {
        uint8_t key[IV2_CACHE_KEY_SIZE];
        iv2_cache_key_pack(key, L.set->view_key[0]);
        char db[64];
        snprintf(db, sizeof db, "t:%s", iv2_cache_target_at(c0, t)->name);
        void *val;
        size_t n;
        if (iv2_cache_read_raw(c0, db, key, sizeof key, &val, &n)) continue;
        double a = iv2_now();   /* the hashing only, not the copy out */
        (void)iv2_hash64((uint8_t *)val + IV2_CACHE_VALUE_HDR, n - IV2_CACHE_VALUE_HDR);
        hash_view += iv2_now() - a;
        free(val);
    }
    printf("loader at recipe size: %d views x (6 clip [417][3200] + 4 mae [416][1408] + pool 768, bf16 in the cache) per batch,"
           " %d visible tokens, batches for a bf16 device; cache %.1f GB written in %.1f s; median of %d rounds\n",
           B, nv, views * per_view / 1e9, t_write, rounds);
    printf("%-28s %9s %10s %12s %9s %8s %12s\n", "path", "s/batch", "batches/s", "Mvalues/s", "GB/s out", "speedup", "cold s/batch");
    double base = 0;
    for (int i = 0; i < nconf; i++) {
        qsort(ts[i], (size_t)rounds, sizeof ts[i][0], cmp_d);
        double m = ts[i][rounds / 2];
        if (!i) base = m;
        char name[64];
        if (!i) snprintf(name, sizeof name, "before: f32 + convert, 1 th");
        else snprintf(name, sizeof name, "raw bf16 rows, %d thread%s", th[i], th[i] > 1 ? "s" : "");
        printf("%-28s %9.3f %10.2f %12.0f %9.2f %7.2fx %12.3f\n", name, m, 1 / m, vals / m / 1e6, vals * 2 / m / 1e9, base / m, cold[i]);
    }
    printf("(cold: the first batch after opening the cache, its pages faulted into the map)\n");
    if (disk >= 0) printf("from disk (page cache dropped), raw bf16 rows, %d threads: %.3f s/batch\n", th[nconf - 1], disk);
    printf("same batch bytes on every path: %s; a checksum of every value read (whole payloads, %.0f MB/view) would add"
           " %.3f s/batch on one thread\n", same ? "yes" : "NO", (per_view - 8 * 224 * 224 * 3) / 1e6, hash_view * B);
done:
    for (int i = 0; i < nconf; i++) iv2_batch_free(&bs[i]);
    iv2_backend_destroy(bf);
    iv2_loader_close(&L);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    (void)!system(cmd);
}

int main(void) {
    iv2_set_quiet(1);
    if (getenv("BENCH_LOADER_ONLY")) { bench_loader_recipe(); return 0; }
    int steps = getenv("BENCH_STEPS") ? atoi(getenv("BENCH_STEPS")) : 3;
    int threads = getenv("BENCH_THREADS") ? atoi(getenv("BENCH_THREADS")) : (int)sysconf(_SC_NPROCESSORS_ONLN);
    int B = 2, nv = iv2_mask_n_visible(IV2_MASK_ATTENTION, 8, 256, 0.8f);
    int have_torch = system("python3 -c 'import torch' >/dev/null 2>&1") == 0;
    printf("training step (fwd + bwd + clip + AdamW), batch %d x 8 frames 224^2, %d visible tokens, 6 clip + 4 mae heads"
           " + final, %d threads; median step of each run, median over alternating C / PyTorch runs\n", B, nv, threads);
    printf("%-9s %-16s %9s %8s %9s %9s %8s %9s %8s\n", "student", "clip/mae/final", "C s/step", "views/s", "tokens/s",
           "torch s", "torch/C", "C best", "t best");
    const spec specs[2] = {{"iv2-tiny", 96, 6, 3, 384, 4, 128, 96, 96, 128},          /* tiny teachers */
                           {"iv2-s", 384, 12, 6, 1536, 16, 768, 3200, 1408, 768}};    /* the real teachers' dims */
    double tiny_step = -1;
    int rounds = getenv("BENCH_ROUNDS") ? atoi(getenv("BENCH_ROUNDS")) : 3;
    if (rounds < 1 || rounds > 15) rounds = 3;
    for (int i = 0; i < 2; i++) {
        const spec *s = &specs[i];
        double cs[16], ts[16];
        int nt = 0;
        for (int r = 0; r < rounds; r++) {
            cs[r] = c_step(s, B, threads, i ? (steps + 1) / 2 : steps);
            if (have_torch && (ts[nt] = torch_step(s, B, threads, i ? (steps + 1) / 2 : steps)) > 0) nt++;
        }
        qsort(cs, (size_t)rounds, sizeof *cs, cmp_d);
        qsort(ts, (size_t)nt, sizeof *ts, cmp_d);
        double c = cs[rounds / 2], tt = nt ? ts[nt / 2] : -1;
        if (i == 0) tiny_step = c;
        char tg[32];
        snprintf(tg, sizeof tg, "%d/%d/%d", s->CD, s->MD, s->FD);
        if (tt > 0) printf("%-9s %-16s %9.3f %8.2f %9.0f %9.3f %7.2fx %9.3f %8.3f\n", s->name, tg, c, B / c, B * nv / c, tt,
                           tt / c, cs[0], ts[0]);
        else printf("%-9s %-16s %9.3f %8.2f %9.0f %9s %8s %9.3f %8s\n", s->name, tg, c, B / c, B * nv / c, "n/a", "n/a", cs[0], "n/a");
    }
    if (!have_torch) printf("(torch not installed: no PyTorch baseline)\n");
    printf("(torch/C > 1: the C step is faster; \"best\" = the fastest run of each side, less sensitive to other load)\n");
    /* the loader alone: synthetic cache at 224 (tiny teacher dims), attention masks, batch 2 */
    const char *dir = "build/tmp/bench_distill.cache";
    (void)!system("mkdir -p build/tmp");
    synth_spec sp = {.views = 16, .size = 224, .clip_dim = 96, .mae_dim = 96, .pool_dim = 128, .n_clip = 6, .n_mae = 4, .nan_view = -1};
    if (synth_cache(dir, &sp)) { printf("loader: cannot make the cache: %s\n", iv2_errmsg()); return 0; }
    iv2_distill_config c;
    synth_config(&c, &sp, B);
    iv2_loader L;
    if (iv2_loader_open(&L, dir, &c, 8, 224, 8, 256)) { printf("loader: %s\n", iv2_errmsg()); return 0; }
    iv2_batch b;
    iv2_batch_alloc(&b, &L, B, L.nv);
    int nb = 0;
    double t0 = iv2_now();
    while (iv2_now() - t0 < 2.0) { iv2_loader_build(&L, nb, &b); nb++; }
    double rate = nb / (iv2_now() - t0);
    printf("loader alone (one thread, %d-view batches, 6+4 targets of 96, pool 128): %.1f batches/s; the tiny trainer takes %.2f/s: %.0fx headroom\n",
           B, rate, tiny_step > 0 ? 1 / tiny_step : 0, tiny_step > 0 ? rate * tiny_step : 0);
    iv2_batch_free(&b);
    iv2_loader_close(&L);
    bench_loader_recipe();
    return 0;
}
