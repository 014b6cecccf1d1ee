/* bench_distill_cuda: iv2-distill on a GPU from an LMDB cache of the recipe's size, for what issue
 * 8 asks of the data path: the fraction of step time the GPU waited on the loader, beside the
 * step time and the batch copies on the copy stream. bench_vit times the step on a batch already
 * on the device; this runs the trainer as `iv2-distill train` does (iv2_trainer_open/run: the
 * loader's threads reading the cache, pinned batches, copies into two device slots, prefetch).
 *   bench_distill_cuda [out.json]   (IV2_BENCH_VIEWS: views in the cache, default 64 (32 videos x
 *                                    2 views, 2.6 GB); IV2_BENCH_STEPS: 12; IV2_BENCH_BATCH: 32;
 *                                    IV2_BENCH_DEVICE: cuda; IV2_BENCH_STUDENT: iv2-1b)
 * tests/test_bench_distill_smoke.sh runs it on the CPU with iv2-tiny and a 4-view cache, so its
 * code cannot rot between GPU runs.
 * The cache (under build/gpu/tmp, removed afterwards): frames of 8 x 224 x 224 px and the recipe's
 * targets at the teachers' widths, 6 CLIP blocks [2049][3200] and the pool (768), 4 VideoMAE
 * blocks [2048][1408] and the CLIP attention for the mask, stored as the recipe stores them
 * (bf16, fp16, fp32). The values are cheap stand-ins (every view's targets are one pattern
 * shifted by the view): the loader's and the copies' work does not depend on them, and a
 * learnable set (tests/test_distill_synth.h) would take minutes to make at this size. The run:
 * the 1B student with the recipe's heads, the default recomputation and loader threads, no
 * checkpoints; the first 2 steps (warm-up: cuBLAS's heuristics, first touches) are left out of
 * the medians. Exit 77 when the device cannot be opened. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "cache.h"
#include "compute.h"
#include "distill.h"
#include "err.h"
#include "log.h"
#include "vit.h"
#include "distill_cuda.h"   /* DC_DIR, dc_field; test_distill_synth.h */

#define CACHE DC_DIR "/bench_distill_cuda.cache"
#define RUN DC_DIR "/bench_distill_cuda.run"
#define MAXS 512

static int cmpd(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* the recipe-size cache: the recipe's n_clip CLIP and n_mae VideoMAE blocks at the teachers'
 * widths, the pool and the attention (test_distill_synth.h's layout at 224 px) */
static int make_cache(int views, int n_clip, int n_mae) {
    const synth_spec sp = {.views = views, .size = 224, .clip_dim = 3200, .mae_dim = 1408, .pool_dim = 768,
                           .n_clip = n_clip, .n_mae = n_mae, .nan_view = -1};
    const int S = sp.size, T = 8, P = (S / 14) * (S / 14), n = T * P;
    (void)!system("mkdir -p " DC_DIR);
    iv2_cache *c = synth_open(CACHE, &sp);
    if (!c) return -1;
    int nt = n_clip + n_mae + 2;
    size_t maxlen = (size_t)(1 + n) * sp.clip_dim;
    /* one pattern (|v| = 1 / sqrt(dim) on average), read by every target at an offset that moves
     * with the view and the target */
    size_t plen = maxlen + 4096;
    float *pat = iv2_malloc(sizeof(float) * plen);
    uint32_t s = 12345;
    for (size_t i = 0; i < plen; i++) { s = s * 1664525u + 1013904223u; pat[i] = ((s >> 8) / 16777216.f - .5f) * 0.06f; }
    const float *vals[2 * IV2_DISTILL_MAX_LAYERS + 2];
    float *attn = iv2_malloc(sizeof(float) * n);
    for (int p = 0; p < n; p++) attn[p] = (float)((p * 7919) % P + 1) / ((float)P * P);
    uint8_t *frames = iv2_malloc((size_t)T * S * S * 3);
    int rc = 0;
    for (int v = 0; v < views && !rc; v++) {
        for (size_t i = 0; i < (size_t)T * S * S * 3; i++) frames[i] = (uint8_t)((i * 2654435761u + v * 97u) >> 24);
        for (int i = 0; i < nt - 1; i++) vals[i] = pat + (size_t)(v * 31 + i * 17) % 4096;
        vals[nt - 1] = attn;
        rc = synth_put(c, v, S, frames, vals);
    }
    free(pat);
    free(attn);
    free(frames);
    iv2_cache_close(c);
    return rc;
}

/* the "step" lines of RUN/metrics.jsonl: step_s, wait_frac, copy_s */
static int read_steps(double *step_s, double *wait_frac, double *copy_s, int cap) {
    FILE *f = fopen(RUN "/metrics.jsonl", "r");
    if (!f) return 0;
    char line[16384];
    int n = 0;
    while (n < cap && fgets(line, sizeof line, f)) {
        if (!strstr(line, "\"event\":\"step\"")) continue;
        step_s[n] = dc_field(line, "\"step_s\":");
        wait_frac[n] = dc_field(line, "\"wait_frac\":");
        copy_s[n] = dc_field(line, "\"copy_s\":");
        if (!isnan(step_s[n]) && !isnan(wait_frac[n]) && !isnan(copy_s[n])) n++;
    }
    fclose(f);
    return n;
}

static double median(double *x, int n) {
    qsort(x, n, sizeof *x, cmpd);
    return n ? x[n / 2] : NAN;
}

int main(int argc, char **argv) {
    const char *dev = getenv("IV2_BENCH_DEVICE") ? getenv("IV2_BENCH_DEVICE") : "cuda";
    const char *student = getenv("IV2_BENCH_STUDENT") ? getenv("IV2_BENCH_STUDENT") : "iv2-1b";
    iv2_backend *probe = iv2_backend_create(dev, 1);
    if (!probe) { printf("skipped: %s\n", iv2_errmsg()); return 77; }
    iv2_backend_destroy(probe);
    int views = getenv("IV2_BENCH_VIEWS") ? atoi(getenv("IV2_BENCH_VIEWS")) : 64;
    int steps = getenv("IV2_BENCH_STEPS") ? atoi(getenv("IV2_BENCH_STEPS")) : 12;
    int batch = getenv("IV2_BENCH_BATCH") ? atoi(getenv("IV2_BENCH_BATCH")) : 32;
    if (views < 2 * batch || steps < 4 || steps > MAXS || batch < 1) {
        fprintf(stderr, "bench_distill_cuda: need IV2_BENCH_VIEWS >= 2 x IV2_BENCH_BATCH and 4 <= IV2_BENCH_STEPS <= %d\n",
                MAXS);
        return 2;
    }
    iv2_distill_config c;
    iv2_distill_config_default(&c);   /* the recipe: iv2-1b, 6 CLIP + 4 MAE heads, final head */
    double t0 = iv2_now();
    if (make_cache(views, c.n_clip, c.n_mae)) iv2_die("bench_distill_cuda");
    double t_cache = iv2_now() - t0;
    iv2_vit_config vc;
    if (iv2_vit_preset(student, &vc)) iv2_die("bench_distill_cuda");
    /* the cache's blocks are 0..; the student's the recipe's last ones (iv2-1b: CLIP 34..39, MAE 36..39) */
    for (int i = 0; i < c.n_clip; i++) { c.clip_teacher[i] = i; c.clip_student[i] = vc.depth - c.n_clip + i; }
    for (int i = 0; i < c.n_mae; i++) { c.mae_teacher[i] = i; c.mae_student[i] = vc.depth - c.n_mae + i; }
    snprintf(c.student, sizeof c.student, "%s", student);
    snprintf(c.student_json, sizeof c.student_json, "{\"img\": 224}");
    snprintf(c.device, sizeof c.device, "%s", dev);
    c.batch = batch;
    c.steps = steps;
    c.warmup_steps = 2;
    c.ckpt_every = 0;
    c.eval_views = 0;
    c.log_every = 0;
    (void)!system("rm -rf '" RUN "'");
    iv2_trainer t;
    t0 = iv2_now();
    if (iv2_trainer_open(&t, CACHE, &c, RUN, 0)) iv2_die("bench_distill_cuda");
    double t_open = iv2_now() - t0;
    int nv = t.L.nv;
    int rc = iv2_trainer_run(&t, 0);
    iv2_trainer_close(&t);
    if (rc) iv2_die("bench_distill_cuda");
    double st[MAXS], wf[MAXS], cp[MAXS];
    int n = read_steps(st, wf, cp, MAXS);
    if (n < 4) { fprintf(stderr, "bench_distill_cuda: %d step lines in " RUN "/metrics.jsonl\n", n); return 1; }
    /* the steps after the first two */
    double mean_wait = 0;
    for (int i = 2; i < n; i++) mean_wait += wf[i] / (n - 2);
    double ms = median(st + 2, n - 2), mw = median(wf + 2, n - 2), mc = median(cp + 2, n - 2);
    printf("iv2-distill on %s from a %d-view cache of the recipe's size (made in %.1f s), %s, batch %d, %d visible "
           "tokens, %d steps (set-up %.1f s):\n", dev, views, t_cache, student, batch, nv, n, t_open);
    printf("  step %.1f ms (median of steps 2..%d), %.2f views/s; waiting for data: median %.2f%%, mean %.2f%% of the step; "
           "batch copies %.1f ms on the copy stream\n", ms * 1e3, n - 1, batch / ms, 100 * mw, 100 * mean_wait, mc * 1e3);
    if (argc > 1) {
        FILE *js = fopen(argv[1], "w");
        if (js) {
            fprintf(js, "{\"device\": \"%s\", \"student\": \"%s\", \"views\": %d, \"batch\": %d, \"n_vis\": %d, \"steps\": %d, \"step_ms\": %.3f, \"views_per_s\": %.3f, "
                    "\"wait_frac_median\": %.5f, \"wait_frac_mean\": %.5f, \"copy_ms\": %.3f, \"cache_s\": %.2f, "
                    "\"setup_s\": %.2f}\n", dev, student, views, batch, nv, n, ms * 1e3, batch / ms, mw, mean_wait, mc * 1e3, t_cache,
                    t_open);
            fclose(js);
        }
    }
    (void)!system("rm -rf '" CACHE "' '" RUN "'");
    return 0;
}
