/* test_distill_train: the trainer end to end on a small synthetic cache: the loss falls; the
 * data-wait figures (wait_frac per step and per run); a run stopped and resumed reproduces the
 * uninterrupted run bit for bit; checkpoints store and restore fp32 master weights; eval; and
 * the bad inputs (missing target, token grid mismatch, corrupt checkpoint, non-finite loss) fail
 * clearly. */
#include "testutil.h"
#include "test_distill_synth.h"
#include "safetensors.h"
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <signal.h>

static const char *ROOT = "build/tmp/test_distill_train";

static int run(const char *cache, const iv2_distill_config *c, const char *out, int resume, int64_t max_steps, iv2_trainer *keep) {
    iv2_trainer t;
    if (iv2_trainer_open(&t, cache, c, out, resume)) return -1;
    int rc = iv2_trainer_run(&t, max_steps);
    if (keep && !rc) { *keep = t; return 0; }
    iv2_trainer_close(&t);
    return rc;
}

/* losses of the "step" lines of a metrics file, by step */
static int read_losses(const char *out, double *loss, int cap) {
    char p[512];
    snprintf(p, sizeof p, "%s/metrics.jsonl", out);
    FILE *f = fopen(p, "r");
    if (!f) return 0;
    char line[8192];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        long long s;
        char *a = strstr(line, "\"event\":\"step\""), *b = strstr(line, "\"step\":"), *l = strstr(line, "\"loss\":");
        if (!a || !b || !l || sscanf(b + 7, "%lld", &s) != 1 || s < 0 || s >= cap) continue;
        loss[s] = atof(l + 7);
        if (s + 1 > n) n = (int)s + 1;
    }
    fclose(f);
    return n;
}

static int file_has(const char *path, const char *what) { return t_count_lines(path, what) > 0; }

/* SIGTERM mid-run (Slurm before its time limit): the CLI finishes the step, writes its checkpoint
 * and a "stopped" line, exits 143; --resume then ends bit-identical to an uninterrupted run */
/* Drop path (timm's DropPath, dpr = linspace(0, rate, depth)): every scale is 0 or 1 / keep_l,
 * block 0 never drops, each block's dropped fraction over many steps is its dpr (within 5
 * standard errors), and the scales average to 1 (what the 1 / keep is for) */
static void check_drop_path(const char *cache, const iv2_distill_config *c) {
    iv2_distill_config o = *c;
    o.drop_path = 0.3f;
    iv2_trainer t;
    char dir[300];
    snprintf(dir, sizeof dir, "%s.drop", ROOT);
    if (iv2_trainer_open(&t, cache, &o, dir, 0)) { CHECK(0, "trainer: %s", iv2_errmsg()); return; }
    int depth = t.student->cfg.depth, B = o.batch, steps = 2000, vals_ok = 1;
    double *dropped = calloc((size_t)2 * depth, sizeof(double)), sum = 0, n = 0;
    for (int64_t st = 0; st < steps; st++) {
        const float *d = iv2_trainer_drop_scales(&t, st, B);
        for (int br = 0; br < 2; br++)
            for (int l = 0; l < depth; l++) {
                double p = 0.3 * l / (depth - 1);
                float one = (float)(1.0 / (1.0 - p));
                for (int s = 0; s < B; s++) {
                    float v = d[((size_t)br * depth + l) * B + s];
                    vals_ok &= v == 0.f || v == one;
                    dropped[br * depth + l] += v == 0.f;
                    sum += v;
                    n++;
                }
            }
    }
    CHECK(vals_ok, "drop-path scales are 0 or 1 / (1 - dpr[l])");
    int freq_ok = dropped[0] == 0 && dropped[depth] == 0;
    for (int br = 0; br < 2; br++)
        for (int l = 1; l < depth; l++) {
            double p = 0.3 * l / (depth - 1), m = (double)steps * B, f = dropped[br * depth + l] / m;
            freq_ok &= fabs(f - p) <= 5 * sqrt(p * (1 - p) / m);
        }
    CHECK(freq_ok, "block 0 never drops, block l drops with dpr[l] = 0.3 l / (depth - 1)");
    CHECK(fabs(sum / n - 1) < 0.01, "the scales average to 1 (%.4f)", sum / n);
    free(dropped);
    iv2_trainer_close(&t);
}

static void check_stop_signal(const char *cache, const iv2_distill_config *c) {
    iv2_distill_config o = *c;
    o.steps = 40; o.ckpt_every = 0; o.eval_every = 0;
    char cfg[300], a[300], b[300], cmd[4096], path[700], p2[700];
    snprintf(cfg, sizeof cfg, "%s.sig.json", ROOT);
    snprintf(a, sizeof a, "%s.sig_a", ROOT);
    snprintf(b, sizeof b, "%s.sig_b", ROOT);
    write_config(cfg, &o);
    snprintf(cmd, sizeof cmd, "rm -rf %s %s && IV2_QUIET=1 bin/iv2-distill train --cache %s --config %s --out %s", a, b, cache, cfg, a);
    CHECK(system(cmd) == 0, "uninterrupted run of 40 steps");
    pid_t pid = fork();
    if (pid == 0) {
        (void)!freopen("/dev/null", "w", stderr);
        execl("bin/iv2-distill", "iv2-distill", "train", "--cache", cache, "--config", cfg, "--out", b, (char *)NULL);
        _exit(127);
    }
    snprintf(path, sizeof path, "%s/metrics.jsonl", b);
    for (int i = 0; i < 6000 && t_count_lines(path, "\"event\":\"step\"") < 3; i++) usleep(10000);
    kill(pid, SIGTERM);
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 128 + SIGTERM, "SIGTERM: exit 143 (status %d)", st);
    int64_t at = -1;
    char latest[700];
    CHECK(iv2_ckpt_latest(b, latest, sizeof latest, &at) == 0 && at > 0 && at < 40, "a checkpoint at the step it stopped (%lld)",
          (long long)at);
    CHECK(t_count_lines(path, "\"event\":\"stopped\"") == 1, "one stopped line");
    snprintf(cmd, sizeof cmd, "IV2_QUIET=1 bin/iv2-distill train --cache %s --config %s --out %s --resume", cache, cfg, b);
    CHECK(system(cmd) == 0, "--resume after SIGTERM");
    snprintf(path, sizeof path, "%s/ckpt_00000040.safetensors", a);
    snprintf(p2, sizeof p2, "%s/ckpt_00000040.safetensors", b);
    CHECK(same_tensors(path, p2), "stopped at step %lld and resumed == uninterrupted, bit for bit", (long long)at);
    {   /* the finished run resumed again: nothing to do, nothing appended to its metrics */
        char mp[700];
        snprintf(mp, sizeof mp, "%s/metrics.jsonl", b);
        int lines = t_count_lines(mp, "\"event\"");
        snprintf(cmd, sizeof cmd, "IV2_QUIET=1 bin/iv2-distill train --cache %s --config %s --out %s --resume", cache, cfg, b);
        CHECK(system(cmd) == 0 && t_count_lines(mp, "\"event\"") == lines, "a finished run resumed: no new metrics lines");
    }
    /* the checkpoint records its training set: a resume on a cache that grew (a second shard) is
     * refused, naming what changed, unless the caller accepts it (--resume-any-cache) */
    char grown[700];
    snprintf(grown, sizeof grown, "%s,%s.nan", cache, ROOT);
    iv2_trainer t;
    CHECK(iv2_trainer_open(&t, grown, &o, b, 1) == -1 && strstr(iv2_errmsg(), "training set differs") &&
          strstr(iv2_errmsg(), "train_views"), "resume on a grown cache refused: %s", iv2_errmsg());
    int ok = iv2_trainer_open(&t, grown, &o, b, 2) == 0;
    CHECK(ok && t.step == 40, "--resume-any-cache resumes (step %lld): %s", ok ? (long long)t.step : -1LL, ok ? "" : iv2_errmsg());
    if (ok) iv2_trainer_close(&t);
    ok = iv2_trainer_open(&t, cache, &o, b, 1) == 0;
    CHECK(ok, "and the same cache resumes: %s", ok ? "" : iv2_errmsg());
    if (ok) iv2_trainer_close(&t);
    /* killed before its first checkpoint: --resume without --config takes the config.json the run
     * wrote (not the recipe's 1B student at batch 4096), and writes it back unchanged */
    snprintf(cmd, sizeof cmd, "rm -rf %s.c && mkdir -p %s.c && cp %s/config.json %s.c/ && IV2_QUIET=1 bin/iv2-distill train "
             "--cache %s --out %s.c --resume --max-steps 1 2>/dev/null && cmp -s %s/config.json %s.c/config.json", b, b, a, b,
             cache, b, a, b);
    CHECK(system(cmd) == 0, "--resume with no checkpoint yet and no --config: the run's config.json");
    {
        /* extended (steps 40 -> 60): the schedule is recomputed, and the resume says so */
        iv2_distill_config ext = o;
        ext.steps = 60;
        char cfg2[320], err2[320];
        snprintf(cfg2, sizeof cfg2, "%s.sig60.json", ROOT);
        snprintf(err2, sizeof err2, "%s.sig60.err", ROOT);
        write_config(cfg2, &ext);
        snprintf(cmd, sizeof cmd, "IV2_QUIET=1 bin/iv2-distill train --cache %s --config %s --out %s --resume --max-steps 1 "
                 "2>%s", cache, cfg2, b, err2);
        CHECK(system(cmd) == 0 && file_has(err2, "the run's length changed (60 steps"), "an extended run's resume warns");
    }
}

static double field(const char *line, const char *key) {   /* "key": number, or NAN */
    const char *p = strstr(line, key);
    return p ? atof(p + strlen(key)) : NAN;
}

/* The data-wait figures of a metrics file: every step line's wait_frac is in [0, 1] and equals
 * wait_s / step_s; so does each summary line's (one per invocation), whose step counts go into
 * steps[]. Returns the number of summary lines, -1 at the first bad figure; *n_steps = step lines. */
static int wait_figures(const char *out, int *n_steps, long long *steps, int cap) {
    char p[512], line[8192];
    snprintf(p, sizeof p, "%s/metrics.jsonl", out);
    FILE *f = fopen(p, "r");
    int ns = 0, n = 0, bad = 0;
    while (f && !bad && fgets(line, sizeof line, f)) {
        int is_step = strstr(line, "\"event\":\"step\"") != NULL, is_sum = strstr(line, "\"event\":\"summary\"") != NULL;
        if (!is_step && !is_sum) continue;
        double w = field(line, "\"wait_s\":"), st = field(line, "\"step_s\":"), fr = field(line, "\"wait_frac\":");
        bad = !(fr >= 0 && fr <= 1 && w >= 0 && st > 0 && fabs(fr - w / st) <= 1e-3);
        if (bad) fprintf(stderr, "bad wait figures: %s", line);
        if (is_step) ns++;
        else if (n < cap) steps[n++] = (long long)field(line, "\"steps\":");
    }
    if (f) fclose(f);
    *n_steps = ns;
    return bad ? -1 : n;
}

/* The fp32 master weights a low-precision backend keeps (CUDA, bf16 params) are what a checkpoint
 * stores and what loading restores. The CPU has no separate copy, so one is attached here (the
 * CPU AdamW takes any master pointer) holding values that differ from the params. */
static void attach_masters(iv2_trainer *t, float delta) {
    iv2_backend *be = t->be;
    for (int g = 0; g < t->opt.n_groups; g++) {
        iv2_optim_group *G = &t->opt.g[g];
        float *h = malloc(sizeof(float) * G->n);
        be->download(be, h, G->params, G->n);
        for (size_t i = 0; i < G->n; i++) h[i] += delta * (float)(i % 7 + 1);
        G->master = be->alloc(be, sizeof(float) * G->n);   /* freed by iv2_optim_free */
        be->upload_raw(be, G->master, h, sizeof(float) * G->n);
        free(h);
    }
}

/* group g's master (which = 0) or params (which = 1) equal, bit for bit, the file's F32 tensors */
static int group_matches_file(iv2_trainer *t, int g, int which, iv2_st_file *f) {
    const iv2_optim_group *G = &t->opt.g[g];
    float *h = malloc(sizeof(float) * G->n);
    if (which == 0) t->be->download_raw(t->be, h, G->master, sizeof(float) * G->n);
    else t->be->download(t->be, h, G->params, G->n);
    int same = 1;
    for (int i = 0; same && i < G->n_table; i++) {
        const iv2_dparam *p = &G->table[i];
        iv2_st_tensor *x = iv2_st_find(f, p->name);
        same = x && x->dtype == IV2_F32 && x->nbytes == p->n * sizeof(float) && !memcmp(x->data, h + p->off, x->nbytes);
    }
    free(h);
    return same;
}

static void check_master_ckpt(const synth_spec *sp, const iv2_distill_config *c) {
    char dir[256], path[512];
    snprintf(dir, sizeof dir, "%s.master", ROOT);
    snprintf(path, sizeof path, "rm -rf %s", dir);
    (void)!system(path);
    int nv = iv2_mask_n_visible(c->mask, 8, (sp->size / 14) * (sp->size / 14), c->mask_ratio);
    iv2_trainer a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    CHECK(iv2_trainer_init(&a, c, sp->clip_dim, sp->mae_dim, sp->pool_dim, nv) == 0 &&
          iv2_trainer_init(&b, c, sp->clip_dim, sp->mae_dim, sp->pool_dim, nv) == 0, "trainers: %s", iv2_errmsg());
    if (!a.be || !b.be) return;
    attach_masters(&a, 1e-3f);
    attach_masters(&b, -2e-3f);   /* something else, to be overwritten by the load */
    char stale[900];   /* the temporary file of a write killed before its rename */
    snprintf(stale, sizeof stale, "mkdir -p %s && echo x > %s/ckpt_00000003.safetensors.tmp.AbC123 && "
             "echo x > %s/student.safetensors.tmp.XyZ987", dir, dir, dir);
    (void)!system(stale);
    snprintf(stale, sizeof stale, "%s/ckpt_00000003.safetensors.tmp.AbC123", dir);
    CHECK(iv2_ckpt_save(dir, 7, a.student, a.heads, &a.opt, a.cfg_json, a.data_json, 2) == 0, "save: %s", iv2_errmsg());
    CHECK(access(stale, F_OK) != 0, "the save removed the stale temporary file of an unfinished write");
    /* but not another writer's temporary file (an export into the run folder) */
    snprintf(stale, sizeof stale, "%s/student.safetensors.tmp.XyZ987", dir);
    CHECK(access(stale, F_OK) == 0, "the save left a temporary file that is not a checkpoint's alone");
    snprintf(path, sizeof path, "%s/ckpt_00000007.safetensors", dir);
    iv2_st_file f;
    if (iv2_st_open(&f, path) == 0) {
        CHECK(group_matches_file(&a, 0, 0, &f) && group_matches_file(&a, 1, 0, &f), "the checkpoint holds the master weights");
        CHECK(!group_matches_file(&a, 0, 1, &f), "(not the params, which differ here)");
        int64_t step = -1;
        CHECK(iv2_ckpt_load(path, b.student, b.heads, &b.opt, &step, NULL) == 0 && step == 7, "load: %s", iv2_errmsg());
        CHECK(group_matches_file(&b, 0, 0, &f) && group_matches_file(&b, 1, 0, &f), "loading restores the master weights");
        CHECK(group_matches_file(&b, 0, 1, &f) && group_matches_file(&b, 1, 1, &f), "and the params from them");
        iv2_st_close(&f);
        /* a checkpoint does not load into another model: a deeper student (tensors missing) and
         * wider heads (tensors of another shape) are errors, not a silent partial load */
        iv2_vit_config deeper = a.student->cfg;
        deeper.depth++;
        iv2_vit *m = iv2_vit_create(a.be, &deeper);
        CHECK(m && iv2_ckpt_load(path, m, NULL, NULL, &step, NULL) == -1 && strstr(iv2_errmsg(), "missing"),
              "a checkpoint into a deeper student: %s", iv2_errmsg());
        iv2_vit_free(m);
        iv2_trainer w;
        memset(&w, 0, sizeof w);
        if (iv2_trainer_init(&w, c, sp->clip_dim + 8, sp->mae_dim, sp->pool_dim, nv) == 0) {
            CHECK(iv2_ckpt_load(path, w.student, w.heads, &w.opt, &step, NULL) == -1 && strstr(iv2_errmsg(), "another shape"),
                  "a checkpoint into wider heads: %s", iv2_errmsg());
            iv2_trainer_close(&w);
        } else CHECK(0, "trainer: %s", iv2_errmsg());
    } else CHECK(0, "open %s: %s", path, iv2_errmsg());
    /* a failed write (a folder where the file goes) is an error, and prunes nothing: the step-7
     * checkpoint stays although keep is 1 */
    snprintf(path, sizeof path, "%s/ckpt_00000009.safetensors", dir);
    CHECK(mkdir(path, 0755) == 0, "mkdir %s", path);
    CHECK(iv2_ckpt_save(dir, 9, a.student, a.heads, &a.opt, a.cfg_json, a.data_json, 1) == -1, "a failed checkpoint write reported");
    snprintf(path, sizeof path, "%s/ckpt_00000007.safetensors", dir);
    CHECK(access(path, R_OK) == 0, "a failed write pruned the checkpoint before it");
    iv2_trainer_close(&a);
    iv2_trainer_close(&b);
}

/* iv2_trainer_step_loaded (bench_vit's whole-step timing) is a step: after a first step, stepping
 * again on the loaded batch leaves the state a second iv2_trainer_step on that batch leaves */
static void check_step_loaded(const char *cache, const synth_spec *sp, const iv2_distill_config *c) {
    int nv = iv2_mask_n_visible(c->mask, 8, (sp->size / 14) * (sp->size / 14), c->mask_ratio);
    iv2_loader L;
    iv2_batch bt;
    iv2_trainer a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    if (iv2_loader_open(&L, cache, c, 8, sp->size, 8, (sp->size / 14) * (sp->size / 14))) {
        CHECK(0, "loader: %s", iv2_errmsg());
        return;
    }
    iv2_batch_alloc(&bt, &L, c->batch, nv);
    CHECK(iv2_loader_build(&L, 0, &bt) == 0, "batch: %s", iv2_errmsg());
    CHECK(iv2_trainer_init(&a, c, sp->clip_dim, sp->mae_dim, sp->pool_dim, nv) == 0 &&
          iv2_trainer_init(&b, c, sp->clip_dim, sp->mae_dim, sp->pool_dim, nv) == 0, "trainers: %s", iv2_errmsg());
    if (a.be && b.be) {
        CHECK(iv2_trainer_step(&a, &bt) == 0 && iv2_trainer_step(&b, &bt) == 0, "first steps: %s", iv2_errmsg());
        bt.step = 1;
        CHECK(iv2_trainer_step(&a, &bt) == 0 && iv2_trainer_step_loaded(&b, 1) == 0, "second steps: %s", iv2_errmsg());
        size_t bytes = a.student->n_elems * a.be->esize;
        CHECK(a.loss.total == b.loss.total && a.grad_norm == b.grad_norm && a.step == 2 && b.step == 2 &&
              memcmp(a.student->params, b.student->params, bytes) == 0,
              "step_loaded = step on the same batch (loss %.6f / %.6f, grad norm %.6f / %.6f)", a.loss.total,
              b.loss.total, a.grad_norm, b.grad_norm);
    }
    iv2_trainer_close(&a);
    iv2_trainer_close(&b);
    iv2_batch_free(&bt);
    iv2_loader_close(&L);
}

static void check_overlap(const char *cache, const iv2_distill_config *c, const double *la, int N, const char *a) {
    char ov[300], path[700], p2[700];
    double lo[64] = {0};
    snprintf(ov, sizeof ov, "%s.overlap", ROOT);
    snprintf(path, sizeof path, "rm -rf %s %s.nohook", ov, ROOT);
    (void)!system(path);
    setenv("IV2_OPTIM_OVERLAP", "1", 1);
    iv2_trainer t;
    CHECK(run(cache, c, ov, 0, 0, &t) == 0, "overlapped run: %s", iv2_errmsg());
    if (t.be) {
        CHECK(t.opt.overlap && t.opt.g[0].n_pieces == t.student->cfg.depth && t.opt.g[1].n_pieces == 1,
              "overlap on, the student's step in %d pieces (depth %d)", t.opt.g[0].n_pieces, t.student->cfg.depth);
        iv2_trainer_close(&t);
    }
    int same = read_losses(ov, lo, 64) == N;
    for (int i = 0; i < N; i++) same &= la[i] == lo[i];
    CHECK(same, "losses with AdamW beside the forward equal run 1's, bit for bit");
    snprintf(path, sizeof path, "%s/ckpt_%08d.safetensors", a, N);
    snprintf(p2, sizeof p2, "%s/ckpt_%08d.safetensors", ov, N);
    CHECK(same_tensors(path, p2), "final weights and moments with AdamW beside the forward bit-identical");
    snprintf(ov, sizeof ov, "%s.nohook", ROOT);
    iv2_trainer u;
    if (iv2_trainer_open(&u, cache, c, ov, 0) == 0) {
        u.student->params_needed = NULL;
        CHECK(iv2_trainer_run(&u, 3) == 0, "run without the forward's waits: %s", iv2_errmsg());
        iv2_trainer_close(&u);
        int differ = read_losses(ov, lo, 64) == 3 && lo[0] == la[0] && (lo[1] != la[1] || lo[2] != la[2]);
        CHECK(differ, "without the forward's waits step 1 reads stale weights: losses %.9g %.9g vs %.9g %.9g", lo[1],
              lo[2], la[1], la[2]);
    } else CHECK(0, "open: %s", iv2_errmsg());
    unsetenv("IV2_OPTIM_OVERLAP");
}

int main(void) {
    iv2_set_quiet(1);
    char cache[256], cnan[256], a[256], b[256], d[256], path[512], p2[512];
    (void)!system("mkdir -p build/tmp");
    snprintf(cache, sizeof cache, "%s.cache", ROOT);
    snprintf(cnan, sizeof cnan, "%s.nan", ROOT);
    synth_spec sp = {.views = getenv("IV2_VALGRIND") ? 12 : 20, .size = 56, .clip_dim = 32, .mae_dim = 24, .pool_dim = 16, .n_clip = 2, .n_mae = 2, .nan_view = -1};
    CHECK(synth_cache(cache, &sp) == 0, "synthetic cache: %s", iv2_errmsg());
    iv2_distill_config c;
    synth_config(&c, &sp, 4);
    c.eval_views = 4;
    int light = getenv("IV2_VALGRIND") != NULL;   /* under valgrind: fewer steps, no CLI */
    c.epochs = light ? 4 : 6;   /* (views - 4 held out) / 2 views per video / batch 4 steps per epoch */
    int N = (sp.views - 4) / 2 / 4 * c.epochs, half = N / 2;
    c.ckpt_every = 4;

    /* 1. the loss falls, eval runs */
    snprintf(a, sizeof a, "%s.a", ROOT);
    snprintf(path, sizeof path, "rm -rf %s.a %s.b %s.d %s.big", ROOT, ROOT, ROOT, ROOT);
    (void)!system(path);
    iv2_trainer t;
    CHECK(run(cache, &c, a, 0, 0, &t) == 0, "train: %s", iv2_errmsg());
    /* run() hands back a copy of its trainer: no thread may still hold the original's address
     * (the prefetch thread once went on writing into run()'s dead stack frame; ThreadSanitizer) */
    CHECK(t.L.th == NULL, "the loader's prefetch thread stopped when iv2_trainer_run returned");
    double la[64] = {0}, lb[64] = {0};
    int n = read_losses(a, la, 64);
    CHECK(n == N, "%d step lines", n);
    double first = (la[0] + la[1] + la[2]) / 3, last = (la[n - 1] + la[n - 2] + la[n - 3]) / 3;
    if (!light) CHECK(last < 0.8 * first, "loss fell from %.4f to %.4f", first, last);
    int n_steps = 0;
    long long sum_steps[4] = {0};
    int n_sum = wait_figures(a, &n_steps, sum_steps, 4);
    CHECK(n_sum == 1 && n_steps == N && sum_steps[0] == N, "wait_frac in [0,1] per step (%d lines) and in one summary "
          "of %d steps (%d summaries, %lld steps)", n_steps, N, n_sum, sum_steps[0]);
    if (t.be) {
        char *js = NULL;
        CHECK(iv2_trainer_eval(&t, &js) == 0 && js && strstr(js, "\"clip_b1\"") && strstr(js, "\"mae_b0\"") &&
              strstr(js, "\"clip_pool\"") && strstr(js, "\"views\":4"), "eval: %s %s", js ? js : "", iv2_errmsg());
        free(js);
        iv2_trainer_close(&t);
    }
    snprintf(path, sizeof path, "%s/ckpt_%08d.safetensors", a, N);
    CHECK(access(path, R_OK) == 0, "final checkpoint");
    snprintf(path, sizeof path, "%s/ckpt_00000004.safetensors", a);
    if (!light) CHECK(access(path, R_OK) != 0, "old checkpoints pruned to keep_ckpt = 2");

    /* 2. stop at step 6, resume: identical losses and final weights */
    snprintf(b, sizeof b, "%s.b", ROOT);
    CHECK(run(cache, &c, b, 0, half, NULL) == 0, "first half: %s", iv2_errmsg());
    CHECK(run(cache, &c, b, 1, 0, NULL) == 0, "resumed half: %s", iv2_errmsg());
    CHECK(read_losses(b, lb, 64) == N, "resumed run has %d steps", N);
    n_sum = wait_figures(b, &n_steps, sum_steps, 4);
    CHECK(n_sum == 2 && sum_steps[0] == half && sum_steps[1] == N - half, "a summary per invocation: %d (%lld + %lld steps)",
          n_sum, sum_steps[0], sum_steps[1]);
    int same = 1;
    for (int i = 0; i < N; i++) same &= la[i] == lb[i];
    CHECK(same, "losses after resume equal the uninterrupted run");
    snprintf(path, sizeof path, "%s/ckpt_%08d.safetensors", a, N);
    snprintf(p2, sizeof p2, "%s/ckpt_%08d.safetensors", b, N);
    CHECK(same_tensors(path, p2), "final weights and moments bit-identical");
    {   /* resuming with another lr is refused, naming this run's value "here" and the checkpoint's */
        iv2_distill_config e = c;
        e.base_lr = 2 * c.base_lr;
        double here = 0, there = 0;
        const char *m = run(cache, &e, b, 1, 0, NULL) == -1 ? strstr(iv2_errmsg(), " lr is ") : NULL;
        CHECK(m && sscanf(m, " lr is %lf here, %lf in the checkpoint", &here, &there) == 2 && (float)here == e.base_lr &&
              (float)there == c.base_lr, "changed lr refused: %s", iv2_errmsg());
    }

    /* 2b. AdamW beside the next forward (IV2_OPTIM_OVERLAP=1): the CPU runs the side stream's
     * pieces as late as the events allow (compute.h), so a missing wait reads stale weights or
     * zeroed grads here; with the waits in place the run is run 1 bit for bit. Without the
     * forward's waits (its hook removed) it is not: the emulation bites. */
    check_overlap(cache, &c, la, N, a);

    /* 3. the fp32 master weights (CUDA) through a checkpoint; a step on the loaded batch */
    check_master_ckpt(&sp, &c);
    check_step_loaded(cache, &sp, &c);

    /* 4. bad inputs */
    snprintf(d, sizeof d, "%s.d", ROOT);
    iv2_distill_config e = c;
    e.clip_teacher[1] = 7;
    CHECK(run(cache, &e, d, 0, 1, NULL) == -1 && strstr(iv2_errmsg(), "clip_b7"), "missing target: %s", iv2_errmsg());
    /* the tool prefixes "iv2-distill: error: " itself; the library message must not repeat it */
    CHECK(strncmp(iv2_errmsg(), "iv2-distill", 11) != 0, "no tool name in the library message: %s", iv2_errmsg());
    e = c;
    snprintf(e.student_json, sizeof e.student_json, "{\"img\": 84}");
    CHECK(run(cache, &e, d, 0, 1, NULL) == -1 && strstr(iv2_errmsg(), "mismatch"), "grid mismatch: %s", iv2_errmsg());
    /* a damaged newest checkpoint of run b (one byte of tensor data near the end): the resume goes
     * back to the checkpoint before it, and the next checkpoint write sets the damaged one aside
     * (else keep_ckpt's pruning would keep it, the newest by step, over the new ones) */
    char one[300], p3[700];
    snprintf(one, sizeof one, "%s.one", ROOT);
    snprintf(p3, sizeof p3, "%s/ckpt_%08d.safetensors", one, N);
    char cp1[2200];
    snprintf(cp1, sizeof cp1, "rm -rf %s && mkdir -p %s && cp %s %s", one, one, p2, one);
    CHECK(system(cp1) == 0, "a run folder with one checkpoint");
    const char *const damage[2] = {p2, p3};
    FILE *f;
    for (int k = 0; k < 2; k++) {
        f = fopen(damage[k], "r+b");
        if (f) { fseek(f, -100, SEEK_END); int ch = fgetc(f); fseek(f, -100, SEEK_END); fputc(ch ^ 0x55, f); fclose(f); }
    }
    int64_t ps = -1;
    char prev[700], aside[720];
    CHECK(iv2_ckpt_before(b, N, prev, sizeof prev, &ps) == 0 && ps < N, "run b keeps a checkpoint before its newest");
    e = c; e.epochs = c.epochs + 1;
    int okr = run(cache, &e, b, 1, 0, NULL) == 0;
    CHECK(okr, "a damaged newest checkpoint: the resume goes back to the one before: %s", okr ? "" : iv2_errmsg());
    snprintf(aside, sizeof aside, "%s.damaged", p2);
    CHECK(access(aside, F_OK) == 0, "and the damaged one is set aside as %s", aside);
    int64_t newest = -1;
    CHECK(iv2_ckpt_latest(b, path, sizeof path, &newest) == 0 && newest > N, "the newest checkpoint now the run's own (%lld)",
          (long long)newest);
    /* nothing before it: an error that names the file once, not "ckpt: ckpt: corrupt ..." */
    CHECK(run(cache, &e, one, 1, 0, NULL) == -1 && strstr(iv2_errmsg(), "corrupt") &&
          strstr(iv2_errmsg(), "no checkpoint before it"), "a damaged only checkpoint: %s", iv2_errmsg());
    {
        const char *m = iv2_errmsg(), *at = strstr(m, p3);
        CHECK(at && !strstr(at + strlen(p3), p3), "corrupt checkpoint names the file once: %s", m);
    }
    /* non-finite loss: a NaN in a target; the run stops, the checkpoint before stays */
    e = c; e.ckpt_every = 1; e.eval_views = 0;
    {   /* a view of step 1's batch that step 0 does not use, so step 0 succeeds and checkpoints */
        iv2_loader L;
        iv2_batch b0, b1;
        CHECK(iv2_loader_open(&L, cache, &e, 8, 56, 8, 16) == 0, "loader: %s", iv2_errmsg());
        iv2_batch_alloc(&b0, &L, e.batch, L.nv);
        iv2_batch_alloc(&b1, &L, e.batch, L.nv);
        CHECK(iv2_loader_build(&L, 0, &b0) == 0 && iv2_loader_build(&L, 1, &b1) == 0, "build");
        sp.nan_view = (int)b1.views[0];
        for (int i = 0; i < e.batch; i++) CHECK(b0.views[i] != sp.nan_view, "distinct batches");
        iv2_batch_free(&b0); iv2_batch_free(&b1);
        iv2_loader_close(&L);
    }
    CHECK(synth_cache(cnan, &sp) == 0, "nan cache");
    {   /* two shards open as one set: twice the views */
        char two[600];
        iv2_loader L;
        snprintf(two, sizeof two, "%s,%s", cache, cnan);
        CHECK(iv2_loader_open(&L, two, &e, 8, 56, 8, 16) == 0 && L.n_train == 2 * sp.views, "two shards: %lld train views (%s)",
              (long long)L.n_train, iv2_errmsg());
        iv2_loader_close(&L);
        snprintf(two, sizeof two, "%s,./%s/", cache, cache);   /* one shard twice: its views would count twice */
        CHECK(iv2_loader_open(&L, two, &e, 8, 56, 8, 16) == -1 && strstr(iv2_errmsg(), "listed twice"), "a shard twice: %s",
              iv2_errmsg());
    }
    {   /* an epoch is a pass over the videos (2 views each here): every training video once, with
         * its view e mod 2 in epoch e (the recipe's one clip per video per epoch) */
        iv2_loader L;
        iv2_batch bt;
        CHECK(iv2_loader_open(&L, cache, &c, 8, 56, 8, 16) == 0, "loader: %s", iv2_errmsg());
        int videos = (sp.views - c.eval_views) / 2, spe = videos / c.batch;
        CHECK(L.n_train == sp.views - c.eval_views && L.n_videos == videos && L.steps_per_epoch == spe,
              "%lld train views, %lld videos (want %d), %lld steps per epoch (want %d)", (long long)L.n_train,
              (long long)L.n_videos, videos, (long long)L.steps_per_epoch, spe);
        iv2_batch_alloc(&bt, &L, c.batch, L.nv);
        for (int ep = 0; ep < 3; ep++) {
            int seen[64] = {0}, wrong_view = 0;
            for (int st = ep * spe; st < (ep + 1) * spe; st++) {
                CHECK(iv2_loader_build(&L, st, &bt) == 0, "build step %d: %s", st, iv2_errmsg());
                for (int i = 0; i < c.batch; i++) {
                    iv2_cache_key k = L.set->view_key[bt.views[i]];
                    if (k.row < 64) seen[k.row]++;
                    wrong_view += (int)k.view != ep % 2;
                }
            }
            int once = 1;
            for (int r = 0; r < videos; r++) once &= seen[r] == 1;
            CHECK(once && wrong_view == 0, "epoch %d: every video once (%d), each with view %d (%d others)", ep, once,
                  ep % 2, wrong_view);
        }
        iv2_batch_free(&bt);
        iv2_loader_close(&L);
        iv2_distill_config o = c;   /* 3 held out of videos of 2 views: rounded up to 2 whole videos */
        o.eval_views = 3;
        CHECK(iv2_loader_open(&L, cache, &o, 8, 56, 8, 16) == 0 && L.n_eval == 4 && L.n_train == sp.views - 4 &&
              L.n_videos == (sp.views - 4) / 2, "eval_views 3: %lld held out, %lld train views, %lld videos",
              (long long)L.n_eval, (long long)L.n_train, (long long)L.n_videos);
        iv2_loader_close(&L);
    }
    int rc = run(cnan, &e, d, 0, 0, NULL);
    CHECK(rc == -1 && strstr(iv2_errmsg(), "not finite"), "NaN loss stops: %s", iv2_errmsg());
    {   /* and its metrics end with the reason */
        char mp[600];
        snprintf(mp, sizeof mp, "%s/metrics.jsonl", d);
        CHECK(t_count_lines(mp, "\"event\":\"failed\",\"step\":1,\"error\":\"step 1") == 1, "a failed line in the metrics");
    }
    char latest[512];
    int64_t st = -1;
    CHECK(iv2_ckpt_latest(d, latest, sizeof latest, &st) == 0 && st == 1, "the checkpoint of step 1 remains (%lld)", (long long)st);
    iv2_trainer t2;
    CHECK(iv2_trainer_open(&t2, cnan, &e, d, 1) == 0 && t2.step == 1, "and it loads: %s", iv2_errmsg());
    if (t2.be) iv2_trainer_close(&t2);
    {   /* drop_path -1 (the default) is the student preset's rate (iv2-s: 0.1), recorded as such; a
         * value in the run config wins */
        iv2_distill_config o = c;
        snprintf(o.student, sizeof o.student, "iv2-s");
        snprintf(o.student_json, sizeof o.student_json,
                 "{\"img\": 56, \"width\": 96, \"heads\": 3, \"mlp\": 384, \"depth\": 6, \"pool_heads\": 4, \"pool_dim\": 128}");
        char dp[512];
        for (int k = 0; k < 2; k++) {
            o.drop_path = k ? 0.05f : -1;
            snprintf(dp, sizeof dp, "%s.dp%d", ROOT, k);
            iv2_trainer t3;
            int ok = iv2_trainer_open(&t3, cache, &o, dp, 0) == 0;
            float want = k ? 0.05f : 0.1f;
            CHECK(ok && t3.cfg.drop_path == want && strstr(t3.cfg_json, k ? "\"drop_path\":0.05" : "\"drop_path\":0.1"),
                  "drop_path %g resolves to %g (got %g): %s", o.drop_path, want, ok ? t3.cfg.drop_path : -9, ok ? "" : iv2_errmsg());
            if (t3.be) iv2_trainer_close(&t3);
        }
    }

    /* 5. the command line: train, plot, export, eval, a bad config */
    if (light) return test_done();
    if (access("bin/iv2-distill", X_OK) != 0) { printf("bin/iv2-distill not built: CLI part skipped\n"); return test_done(); }
    char cfgp[256], cmd[2048], out[256], buf[4096];
    snprintf(cfgp, sizeof cfgp, "%s.json", ROOT);
    snprintf(out, sizeof out, "%s.cli", ROOT);
    write_config(cfgp, &c);
    snprintf(cmd, sizeof cmd, "rm -rf %s && IV2_QUIET=1 bin/iv2-distill train --cache %s --config %s --out %s --max-steps 2 2>%s.err", out, cache, cfgp, out, ROOT);
    CHECK(system(cmd) == 0, "cli train");
    snprintf(cmd, sizeof cmd, "bin/iv2-distill plot --out %s", out);
    CHECK(system(cmd) == 0, "cli plot");
    snprintf(path, sizeof path, "%s/loss.png", out);
    f = fopen(path, "rb");
    size_t got = f ? fread(buf, 1, 8, f) : 0;
    if (f) fclose(f);
    CHECK(got == 8 && !memcmp(buf, "\x89PNG\r\n\x1a\n", 8), "loss.png written");
    snprintf(cmd, sizeof cmd, "IV2_QUIET=1 bin/iv2-distill export --out %s --to %s/student.safetensors", out, out);
    CHECK(system(cmd) == 0, "cli export");
    snprintf(path, sizeof path, "%s/student.safetensors", out);
    iv2_st_file sf;
    if (iv2_st_open(&sf, path) == 0) {
        int heads = 0;
        for (int i = 0; i < sf.n_tensors; i++)
            heads += !strncmp(sf.tensors[i].name, "clip_decoder", 12) || !strncmp(sf.tensors[i].name, "optim.", 6) ||
                     strstr(sf.tensors[i].name, "_pos_embed") != NULL || !strncmp(sf.tensors[i].name, "final_clip", 10);
        CHECK(heads == 0 && iv2_st_find(&sf, "blocks.0.attn.qkv.weight") && iv2_st_find(&sf, "clip_projector.cross_attn.q.weight") &&
              iv2_st_find(&sf, "pos_embed"), "export holds the student only, official names");
        iv2_st_close(&sf);
        iv2_vit_config vc;
        iv2_backend *be = iv2_cpu_backend_create(1);
        iv2_vit *m = iv2_vit_config_from_file(path, NULL, &vc) == 0 ? iv2_vit_create(be, &vc) : NULL;
        CHECK(m && iv2_vit_load(m, path) == 0, "export loads back: %s", iv2_errmsg());
        iv2_vit_free(m);
        be->destroy(be);
    } else CHECK(0, "export: %s", iv2_errmsg());
    snprintf(cmd, sizeof cmd, "IV2_QUIET=1 bin/iv2-distill eval --cache %s --out %s > %s/eval.json", cache, out, out);
    CHECK(system(cmd) == 0, "cli eval");
    snprintf(path, sizeof path, "%s/eval.json", out);
    f = fopen(path, "r");
    got = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[got] = 0;
    CHECK(strstr(buf, "\"clip_b1\"") && strstr(buf, "\"views\":20"), "eval output: %s", buf);
    char errp[300];
    snprintf(errp, sizeof errp, "%s.err", ROOT);
    /* a fresh run into a folder holding another run's checkpoints is refused (it would overwrite them,
     * and its own would be pruned as older) */
    snprintf(cmd, sizeof cmd, "bin/iv2-distill train --cache %s --config %s --out %s --max-steps 1 2>%s.err", cache, cfgp, out, ROOT);
    CHECK(system(cmd) != 0 && file_has(errp, "already holds checkpoints"), "train over a run without --resume refused");
    snprintf(path, sizeof path, "%s/ckpt_00000001.safetensors", out);
    CHECK(access(path, F_OK) != 0, "and nothing written");
    snprintf(cmd, sizeof cmd, "bin/iv2-distill train --cache %s --config %s --out %s --resume --max-steps abc 2>%s.err", cache, cfgp, out, ROOT);
    CHECK(system(cmd) != 0 && file_has(errp, "--max-steps"), "--max-steps abc refused (not 0 = no limit)");
    /* --resume alone continues the run as its checkpoint records it (not the 1B recipe's defaults) */
    snprintf(cmd, sizeof cmd, "IV2_QUIET=1 bin/iv2-distill train --cache %s --out %s --resume --max-steps 1 2>%s.err", cache, out, ROOT);
    CHECK(system(cmd) == 0, "--resume without --config");
    snprintf(path, sizeof path, "%s/ckpt_00000003.safetensors", out);
    CHECK(access(path, R_OK) == 0, "it trained step 3");
    snprintf(path, sizeof path, "%s/metrics.jsonl", out);
    CHECK(file_has(path, "\"event\":\"resume\",\"step\":2,"), "a resume line in the metrics");
    {   /* eval of a run whose global batch is large sizes its buffers for a few views, not the batch */
        iv2_trainer t3;
        iv2_distill_config big = c;
        big.batch = 4096;
#ifndef IV2_CUDA
        snprintf(big.device, sizeof big.device, "cuda");   /* a GPU run's checkpoint: eval falls back to the CPU */
#endif
        char *bj = iv2_distill_config_to_json(&big), bdir[300];
        snprintf(bdir, sizeof bdir, "%s.big", ROOT);
        if (iv2_trainer_open(&t3, cache, &c, bdir, 0) == 0) {
            CHECK(iv2_ckpt_save(bdir, 1, t3.student, t3.heads, &t3.opt, bj, NULL, 1) == 0, "save: %s", iv2_errmsg());
            iv2_trainer_close(&t3);
        } else CHECK(0, "trainer: %s", iv2_errmsg());
        free(bj);
        snprintf(cmd, sizeof cmd, "IV2_QUIET=0 bin/iv2-distill eval --cache %s --out %s >/dev/null 2>%s.err", cache, bdir, ROOT);
        CHECK(system(cmd) == 0 && file_has(errp, "at batch 16 x"), "eval of a batch-4096 run: batch 16 buffers");
#ifndef IV2_CUDA
        CHECK(file_has(errp, "this build has no CUDA: eval runs on the CPU"), "a GPU run's checkpoint evaluated on the CPU");
#endif
    }
    check_drop_path(cache, &c);
    check_stop_signal(cache, &c);
    FILE *cf = fopen(cfgp, "w");
    if (cf) { fputs("{\"batch\": 4, \"mask_typ\": \"tube\"}", cf); fclose(cf); }
    snprintf(cmd, sizeof cmd, "bin/iv2-distill train --cache %s --config %s --out %s.bad 2>%s.err", cache, cfgp, ROOT, ROOT);
    CHECK(system(cmd) != 0, "bad config fails");
    snprintf(path, sizeof path, "%s.err", ROOT);
    f = fopen(path, "r");
    got = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[got] = 0;
    CHECK(strstr(buf, "mask_typ") && strstr(buf, "iv2-distill: error"), "the message names the key: %s", buf);
    CHECK(system("bin/iv2-distill --help >/dev/null") == 0, "--help");
    return test_done();
}
