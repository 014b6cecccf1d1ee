/* distill_cuda.h: the set-up shared by the GPU trainer tests (test_distill_cuda_curve,
 * test_distill_cuda_resume): a tiny synthetic cache (tests/test_distill_synth.h, no FFmpeg, no
 * teachers), the iv2-tiny run config for it, training a run folder on a device in this process,
 * reading the losses back from metrics.jsonl, and comparing a trainer's state with a checkpoint.
 *
 * IV2_TEST_DEVICE=cpu runs a test with the CPU standing in for the GPU: a dry run of the test's
 * own logic on a machine without one (every check then holds with equality). Without it the
 * device is "cuda" and the test skips (77) when no CUDA device can be opened. */
#ifndef IV2_TEST_DISTILL_CUDA_H
#define IV2_TEST_DISTILL_CUDA_H
#include "testutil.h"
#include "test_distill_synth.h"
#include "dtype.h"
#include "log.h"
#include "safetensors.h"

#define DC_DIR "build/gpu/tmp"
#define DC_ROOT DC_DIR "/distill_cuda"   /* prefix of the caches and run folders */
#define DC_MAX_STEPS 256

typedef struct dc_curve {
    int n;                                   /* step lines read: steps [first, first + n) */
    long long first;
    double total[DC_MAX_STEPS], clip[DC_MAX_STEPS], final[DC_MAX_STEPS], mae[DC_MAX_STEPS];
} dc_curve;

/* the device under test: "cuda" (or IV2_TEST_DEVICE); NULL after test_skip when it cannot be opened */
static inline const char *dc_device(void) {
    const char *d = getenv("IV2_TEST_DEVICE");
    if (!d || !*d) d = "cuda";
    iv2_backend *be = iv2_backend_create(d, 1);
    if (!be) { test_skip(iv2_errmsg()); return NULL; }
    printf("device under test: %s (%s storage); reference: cpu (f32)\n", d, iv2_dtype_name(be->dtype));
    iv2_backend_destroy(be);
    return d;
}

/* 20 views of 8 frames at 56 x 56 (a 4 x 4 patch grid, 33 visible tokens with the attention
 * mask), two CLIP and two MAE targets and the pooled target; iv2-tiny with batch 4, no eval
 * views, `steps` steps with 10 of warmup, one thread on the CPU. */
static inline int dc_setup(const char *name, synth_spec *sp, iv2_distill_config *c, int steps, char *cache, size_t cap) {
    (void)!system("mkdir -p " DC_DIR);
    *sp = (synth_spec){.views = 20, .size = 56, .clip_dim = 32, .mae_dim = 24, .pool_dim = 16, .n_clip = 2, .n_mae = 2,
                       .nan_view = -1};
    snprintf(cache, cap, "%s.%s.cache", DC_ROOT, name);
    if (synth_cache(cache, sp)) return -1;
    synth_config(c, sp, 4);
    c->steps = steps;
    c->warmup_steps = 10;
    c->eval_views = 0;
    c->ckpt_every = 0;
    c->log_every = 25;
    return 0;
}

/* train `out` on `device` (resume: from its newest checkpoint) for max_steps (0 = to the end);
 * with keep, the trainer stays open for the caller (who closes it) */
static inline int dc_train(const char *cache, const iv2_distill_config *c0, const char *device, const char *out, int resume,
                    int64_t max_steps, iv2_trainer *keep) {
    iv2_distill_config c = *c0;
    snprintf(c.device, sizeof c.device, "%s", device);
    iv2_trainer t;
    if (iv2_trainer_open(&t, cache, &c, out, resume)) return -1;
    int rc = iv2_trainer_run(&t, max_steps);
    if (keep && !rc) { *keep = t; return 0; }
    iv2_trainer_close(&t);
    return rc;
}

static inline void dc_rmdir(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    (void)!system(cmd);
}

static inline double dc_field(const char *line, const char *key) {
    const char *p = strstr(line, key);
    return p ? atof(p + strlen(key)) : NAN;
}

/* the "step" lines of out/metrics.jsonl, in order (one invocation's steps follow the last's) */
static inline int dc_read_curve(const char *out, dc_curve *cv) {
    char p[600], line[8192];
    snprintf(p, sizeof p, "%s/metrics.jsonl", out);
    memset(cv, 0, sizeof *cv);
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) {
        if (!strstr(line, "\"event\":\"step\"") || cv->n >= DC_MAX_STEPS) continue;
        if (cv->n == 0) cv->first = (long long)dc_field(line, "\"step\":");
        cv->total[cv->n] = dc_field(line, "\"loss\":");
        cv->clip[cv->n] = dc_field(line, "\"clip\":");
        cv->final[cv->n] = dc_field(line, "\"final\":");
        cv->mae[cv->n++] = dc_field(line, "\"mae\":");
    }
    fclose(f);
    return 0;
}

/* the largest relative difference of got[i] from want[i] over n values, and where */
static inline double dc_worst_rel(const double *got, const double *want, int n, int *at) {
    double w = 0;
    *at = 0;
    for (int i = 0; i < n; i++) {
        double r = fabs(got[i] - want[i]) / fabs(want[i]);
        if (!(r <= w)) { w = r; *at = i; }   /* NaN counts as the worst */
    }
    return w;
}

static inline double dc_mean(const double *x, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += x[i];
    return s / n;
}

/* what a value becomes when stored in the backend's dtype (bf16: round to nearest even) */
static inline float dc_stored(const iv2_backend *be, float x) {
    return be->dtype == IV2_BF16 ? iv2_bf16_to_f32(iv2_f32_to_bf16(x)) : x;
}

/* Count the elements of the trainer's state that differ from the checkpoint at path, bit for
 * bit: params (student and heads) against the file's F32 weights rounded to the backend's dtype,
 * the fp32 master copies (where there are any) and the AdamW moments against the file exactly.
 * Returns the count of differing elements (0 = equal), -1 when the file cannot be read. */
static inline long dc_state_diff(iv2_trainer *t, const char *path) {
    iv2_st_file f;
    if (iv2_st_open(&f, path)) return -1;
    iv2_backend *be = t->be;
    long bad = 0;
    for (int g = 0; g < t->opt.n_groups && bad >= 0; g++) {
        const iv2_optim_group *G = &t->opt.g[g];
        size_t n = G->n ? G->n : 1;
        float *par = malloc(sizeof(float) * n), *mas = malloc(sizeof(float) * n), *m = malloc(sizeof(float) * n),
              *v = malloc(sizeof(float) * n), *want = malloc(sizeof(float) * n);
        be->download(be, par, G->params, G->n);
        if (G->master) be->download_raw(be, mas, G->master, sizeof(float) * G->n);
        be->download_raw(be, m, G->m, sizeof(float) * G->n);
        be->download_raw(be, v, G->v, sizeof(float) * G->n);
        for (int i = 0; i < G->n_table && bad >= 0; i++) {
            const iv2_dparam *p = &G->table[i];
            const float *have[3] = {par + p->off, m + p->off, v + p->off};
            char nm[3][128];
            snprintf(nm[0], sizeof nm[0], "%s", p->name);
            snprintf(nm[1], sizeof nm[1], "optim.m.%s", p->name);
            snprintf(nm[2], sizeof nm[2], "optim.v.%s", p->name);
            for (int k = 0; k < 3 && bad >= 0; k++) {
                iv2_st_tensor *x = iv2_st_find(&f, nm[k]);
                if (!x || x->numel != p->n || iv2_st_read(&f, x, want, IV2_F32)) {
                    fprintf(stderr, "%s: tensor %s missing or of another size\n", path, nm[k]);
                    bad = -1;
                    break;
                }
                for (size_t j = 0; j < p->n; j++) {
                    float w = k == 0 ? dc_stored(be, want[j]) : want[j];
                    bad += memcmp(&have[k][j], &w, sizeof w) != 0;
                    if (k == 0 && G->master) bad += memcmp(&mas[p->off + j], &want[j], sizeof(float)) != 0;
                }
            }
        }
        free(par); free(mas); free(m); free(v); free(want);
    }
    iv2_st_close(&f);
    return bad;
}

static inline void dc_copy(const char *from, const char *to_dir) {
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s' && cp '%s' '%s/'", to_dir, to_dir, from, to_dir);
    (void)!system(cmd);
}
#endif
