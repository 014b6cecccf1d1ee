/* test_distill_synth.h: a small synthetic teacher cache for the distill tests and bench, made
 * with the cache writer directly (no decoder, no teachers): 8 frames of S x S random pixels per
 * view and targets that are a fixed function of the pixels and the position, so a student can
 * learn them. Student geometry: iv2-tiny with {"img": S}. */
#ifndef IV2_TEST_DISTILL_SYNTH_H
#define IV2_TEST_DISTILL_SYNTH_H
#include "cache.h"
#include "distill.h"
#include "err.h"
#include "safetensors.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct synth_spec {
    int views, size, clip_dim, mae_dim, pool_dim, n_clip, n_mae;
    int nan_view;    /* a view whose targets hold a NaN (-1 none) */
} synth_spec;

static inline void synth_unit(float *x, int d) {
    double n = 0;
    for (int i = 0; i < d; i++) n += (double)x[i] * x[i];
    float inv = (float)(1.0 / sqrt(n > 0 ? n : 1));
    for (int i = 0; i < d; i++) x[i] *= inv;
}

/* patch means of the frames: m[p][3] in [-0.5, 0.5] */
static inline void synth_means(double *m, const uint8_t *frames, int S) {
    int G = S / 14, n = 8 * G * G;
    for (int p = 0; p < n; p++) {
        int t = p / (G * G), y = (p / G) % G, x = p % G;
        double a[3] = {0, 0, 0};
        for (int yy = 0; yy < 14; yy++)
            for (int xx = 0; xx < 14; xx++)
                for (int c = 0; c < 3; c++) a[c] += frames[(((size_t)t * S + y * 14 + yy) * S + x * 14 + xx) * 3 + c];
        for (int c = 0; c < 3; c++) m[p * 3 + c] = a[c] / (196.0 * 255.0) - 0.5;
    }
}

/* feature of token p: a fixed random map W [d x 4] of (patch mean R, G, B, 1) plus a position term, L2 */
static inline void synth_feature(float *out, int d, const double *means, int p, int layer, uint64_t salt) {
    for (int i = 0; i < d; i++) {
        iv2_rng r;
        iv2_rng_seed(&r, salt, (uint64_t)layer, (uint64_t)i, 0);
        double v = 0;
        for (int c = 0; c < 3; c++) v += (iv2_rng_uniform(&r) * 2 - 1) * means[p * 3 + c] * 4;
        v += (iv2_rng_uniform(&r) * 2 - 1) * 0.5 + 0.3 * sin(0.7 * i + p * 0.37 + layer);
        out[i] = (float)v;
    }
    synth_unit(out, d);
}

/* a new cache at dir (removed first) whose meta lists the targets of sp at S x S px, 8 frames:
 * n_clip CLIP blocks 0.. (bf16), n_mae VideoMAE blocks 0.. (fp16), the CLIP pool (fp32) and
 * attention (fp32), as the recipe stores them; NULL on failure */
static inline iv2_cache *synth_open(const char *dir, const synth_spec *sp) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) return NULL;
    iv2_cache *c;
    if (iv2_cache_open(&c, dir, IV2_CACHE_RDWR)) return NULL;
    int S = sp->size, G = S / 14, T = 8, P = G * G, n = T * P;
    char meta[8192];
    int k = snprintf(meta, sizeof meta, "{\"format\":1,\"synthetic\":true,\"targets\":[");
    for (int i = 0; i < sp->n_clip; i++)
        k += snprintf(meta + k, sizeof meta - k, "{\"name\":\"clip_b%d\",\"teacher\":\"internvit\",\"kind\":\"block\",\"block\":%d,\"tokens\":%d,\"dim\":%d,\"dtype\":\"bf16\",\"post\":\"l2\"},", i, i, 1 + n, sp->clip_dim);
    for (int i = 0; i < sp->n_mae; i++)
        k += snprintf(meta + k, sizeof meta - k, "{\"name\":\"mae_b%d\",\"teacher\":\"videomae\",\"kind\":\"block\",\"block\":%d,\"tokens\":%d,\"dim\":%d,\"dtype\":\"fp16\",\"post\":\"l2\"},", i, i, n, sp->mae_dim);
    k += snprintf(meta + k, sizeof meta - k, "{\"name\":\"clip_pool\",\"teacher\":\"internvit\",\"kind\":\"pool\",\"tokens\":1,\"dim\":%d,\"dtype\":\"fp32\",\"post\":\"l2\"},", sp->pool_dim);
    k += snprintf(meta + k, sizeof meta - k, "{\"name\":\"clip_attn\",\"teacher\":\"internvit\",\"kind\":\"attn\",\"tokens\":%d,\"dim\":%d,\"dtype\":\"fp32\",\"post\":\"none\"}]}", T, P);
    if (iv2_cache_set_meta(c, meta)) { iv2_cache_close(c); return NULL; }
    return c;
}

/* view v (video v / 2, its view v % 2) of 8 frames of S x S px and its targets (synth_open's order) */
static inline int synth_put(iv2_cache *c, int v, int S, const uint8_t *frames, const float *const *vals) {
    iv2_cache_entry e;
    memset(&e, 0, sizeof e);
    e.view.row = v / 2; e.view.view = (uint32_t)(v % 2);
    e.view.num_frames = 16; e.view.size = S; e.view.n_student = 8;
    e.view.src_w = S; e.view.src_h = S; e.view.crop_w = S; e.view.crop_h = S;
    e.frames = frames;
    e.values = vals;
    return iv2_cache_put(c, &e, 1, NULL, NULL, 0);
}

static inline int synth_cache(const char *dir, const synth_spec *sp) {
    iv2_cache *c = synth_open(dir, sp);
    if (!c) return -1;
    int S = sp->size, G = S / 14, T = 8, P = G * G, n = T * P;
    int nt = sp->n_clip + sp->n_mae + 2;
    float **vals = calloc((size_t)nt, sizeof *vals);
    for (int i = 0; i < sp->n_clip; i++) vals[i] = malloc(sizeof(float) * (size_t)(1 + n) * sp->clip_dim);
    for (int i = 0; i < sp->n_mae; i++) vals[sp->n_clip + i] = malloc(sizeof(float) * (size_t)n * sp->mae_dim);
    float *pool = vals[nt - 2] = malloc(sizeof(float) * sp->pool_dim), *attn = vals[nt - 1] = malloc(sizeof(float) * n);
    uint8_t *frames = malloc((size_t)T * S * S * 3);
    double *means = malloc(sizeof(double) * 3 * n);
    int rc = 0;
    for (int v = 0; v < sp->views && !rc; v++) {
        iv2_rng r;
        iv2_rng_seed(&r, 99, (uint64_t)v, 0, 0);
        for (size_t i = 0; i < (size_t)T * S * S * 3; i++) frames[i] = (uint8_t)(iv2_rng_u64(&r) >> 56);
        synth_means(means, frames, S);
        for (int i = 0; i < sp->n_clip; i++) {
            float *o = vals[i];
            memset(o, 0, sizeof(float) * sp->clip_dim);
            for (int p = 0; p < n; p++) {
                synth_feature(o + (size_t)(1 + p) * sp->clip_dim, sp->clip_dim, means, p, i, 1);
                for (int d = 0; d < sp->clip_dim; d++) o[d] += o[(size_t)(1 + p) * sp->clip_dim + d];
            }
            synth_unit(o, sp->clip_dim);   /* CLS: the normalised mean */
        }
        for (int i = 0; i < sp->n_mae; i++)
            for (int p = 0; p < n; p++) synth_feature(vals[sp->n_clip + i] + (size_t)p * sp->mae_dim, sp->mae_dim, means, p, i, 2);
        for (int d = 0; d < sp->pool_dim; d++) pool[d] = vals[0][d % sp->clip_dim] + 0.1f * (d % 3);
        synth_unit(pool, sp->pool_dim);
        for (int p = 0; p < n; p++) attn[p] = (float)iv2_rng_uniform(&r) / P;
        if (v == sp->nan_view) vals[0][5] = NAN;
        rc = synth_put(c, v, S, frames, (const float *const *)vals);
    }
    for (int i = 0; i < nt; i++) free(vals[i]);
    free(vals);
    free(frames);
    free(means);
    iv2_cache_close(c);
    return rc;
}

/* the run config matching a synth cache (tiny student at img S) */
static inline void synth_config(iv2_distill_config *c, const synth_spec *sp, int batch) {
    iv2_distill_config_default(c);
    snprintf(c->student, sizeof c->student, "iv2-tiny");
    snprintf(c->student_json, sizeof c->student_json, "{\"img\": %d}", sp->size);
    c->n_clip = sp->n_clip;
    for (int i = 0; i < sp->n_clip; i++) { c->clip_teacher[i] = i; c->clip_student[i] = 6 - sp->n_clip + i; }
    c->n_mae = sp->n_mae;
    for (int i = 0; i < sp->n_mae; i++) { c->mae_teacher[i] = i; c->mae_student[i] = 6 - sp->n_mae + i; }
    c->batch = batch;
    c->steps = 0;
    c->epochs = 1;
    c->warmup_steps = 2;
    c->base_lr = 0.256f / batch;   /* peak 1e-3 */
    c->base_min_lr = 0.0256f / batch;
    c->ckpt_every = 0;
    c->keep_ckpt = 2;
    c->threads = 1;
}
/* the run config as run.json for the CLI */
static inline void write_config(const char *path, const iv2_distill_config *c) {
    char *js = iv2_distill_config_to_json(c);
    FILE *f = fopen(path, "w");
    if (f) { fputs(js, f); fclose(f); }
    free(js);
}

/* every tensor of two checkpoints equal byte for byte (weights, heads, AdamW moments) */
static inline int same_tensors(const char *a, const char *b) {
    iv2_st_file fa, fb;
    if (iv2_st_open(&fa, a)) return 0;
    if (iv2_st_open(&fb, b)) { iv2_st_close(&fa); return 0; }
    int same = fa.n_tensors == fb.n_tensors && fa.n_tensors > 0;
    for (int i = 0; same && i < fa.n_tensors; i++) {
        iv2_st_tensor *x = &fa.tensors[i], *y = iv2_st_find(&fb, x->name);
        same = y && x->nbytes == y->nbytes && !memcmp(x->data, y->data, x->nbytes);
        if (!same) fprintf(stderr, "tensor %s differs\n", x->name);
    }
    iv2_st_close(&fa);
    iv2_st_close(&fb);
    return same;
}
#endif
