/* teachers.c: load the teachers, pick the targets, turn batches of clip views into target tensors. */
#include "teachers.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "err.h"
#include "log.h"
#include "sha256.h"

#define STUDENT_FRAMES 8   /* InternViT sees frames 0, 2, ..., 14 */
#define CLIP_FRAMES 16

int iv2_teachers_load(iv2_teachers *ts, iv2_backend *be, const char *which, const char *spec) {
    int is_ivit = !strcmp(which, "internvit");
    if (!is_ivit && strcmp(which, "videomae")) return iv2_err("--teacher %s: unknown teacher (internvit or videomae)", which);
    iv2_vit **slot = is_ivit ? &ts->ivit : &ts->mae;
    if (*slot) return iv2_err("--teacher %s given twice", which);
    ts->be = be;
    iv2_vit_config cfg;
    uint64_t seed = 0;
    int preset = !strncmp(spec, "preset:", 7);
    if (preset) {
        /* preset:NAME[:seed][:{json overrides}] */
        char name[512];
        snprintf(name, sizeof name, "%s", spec + 7);
        char *json = strchr(name, '{');
        if (json) { if (json[-1] != ':') return iv2_err("--teacher %s=%s: want preset:NAME[:seed][:{json}]", which, spec); json[-1] = 0; }
        char *colon = strchr(name, ':');
        if (colon) {
            char *end;
            *colon = 0;
            seed = strtoull(colon + 1, &end, 10);
            if (end == colon + 1 || *end) return iv2_err("--teacher %s=%s: bad seed '%s'", which, spec, colon + 1);
        }
        if (iv2_vit_preset(name, &cfg)) return iv2_err_ctx("--teacher %s=%s", which, spec);
        if (json && (iv2_vit_config_json(&cfg, json) || iv2_vit_config_check(&cfg))) return iv2_err_ctx("--teacher %s=%s", which, spec);
    } else {
        if (iv2_vit_config_from_file(spec, is_ivit ? "internvit-6b" : "videomae-g", &cfg))
            return iv2_err_ctx("--teacher %s=%s", which, spec);
    }
    int want = is_ivit ? IV2_VIT_INTERNVIT : IV2_VIT_VIDEOMAE;
    if (cfg.arch != want) return iv2_err("--teacher %s=%s: that is not a%s model", which, spec, is_ivit ? "n InternViT" : " VideoMAE");
    if (is_ivit && cfg.frames != 1) return iv2_err("--teacher %s=%s: InternViT must take one frame per sample (frames %d)", which, spec, cfg.frames);
    if (!is_ivit && (cfg.frames != CLIP_FRAMES || cfg.tubelet != 2))
        return iv2_err("--teacher %s=%s: VideoMAE must take 16 frames in tubelets of 2 (frames %d, tubelet %d)", which, spec, cfg.frames, cfg.tubelet);
    iv2_vit *m = iv2_vit_create(be, &cfg);
    if (!m) return iv2_err_ctx("--teacher %s=%s", which, spec);
    int rc = preset ? iv2_vit_init_random(m, seed) : iv2_vit_load(m, spec);
    if (rc) { iv2_vit_free(m); return iv2_err_ctx("--teacher %s=%s", which, spec); }
    char *sha = is_ivit ? ts->ivit_sha : ts->mae_sha;
    sha[0] = 0;
    if (!preset && !ts->no_sha) {
        uint8_t d[32];
        if (iv2_sha256_file(spec, d)) { iv2_vit_free(m); return iv2_err_ctx("--teacher %s=%s", which, spec); }
        iv2_sha256_hex(d, sha);
    }
    snprintf(is_ivit ? ts->ivit_src : ts->mae_src, sizeof ts->ivit_src, "%s", spec);
    *slot = m;
    return 0;
}

/* ---------------------------------------------------------------- targets */

static int add_target(iv2_teachers *ts, const char *name, const char *teacher, const char *kind, int block,
                      int tokens, int dim, iv2_dtype dt, const char *post) {
    for (int i = 0; i < ts->n_targets; i++)
        if (!strcmp(ts->targets[i].name, name)) return iv2_err("target %s listed twice", name);
    if (ts->n_targets >= IV2_CACHE_MAX_TARGETS) return iv2_err("more than %d targets", IV2_CACHE_MAX_TARGETS);
    iv2_cache_target *t = &ts->targets[ts->n_targets++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->teacher, sizeof t->teacher, "%s", teacher);
    snprintf(t->kind, sizeof t->kind, "%s", kind);
    snprintf(t->post, sizeof t->post, "%s", post);
    t->block = block;
    t->tokens = tokens;
    t->dim = dim;
    t->dtype = dt;
    return 0;
}

static int add_blocks(iv2_teachers *ts, int is_ivit, int b0, int b1, iv2_dtype dt) {
    iv2_vit *m = is_ivit ? ts->ivit : ts->mae;
    if (!m) return iv2_err("target %s_b%d needs --teacher %s", is_ivit ? "clip" : "mae", b0, is_ivit ? "internvit" : "videomae");
    for (int b = b0; b <= b1; b++) {
        if (b < 0 || b >= m->cfg.depth) return iv2_err("target %s_b%d: the teacher has blocks 0..%d", is_ivit ? "clip" : "mae", b, m->cfg.depth - 1);
        char name[32];
        snprintf(name, sizeof name, "%s_b%d", is_ivit ? "clip" : "mae", b);
        int G = iv2_vit_grid(&m->cfg);
        int rc;
        if (is_ivit) rc = add_target(ts, name, "internvit", "block", b, 1 + STUDENT_FRAMES * G * G, m->cfg.width, dt, "l2");
        else rc = add_target(ts, name, "videomae", "block", b, iv2_vit_patches(&m->cfg), m->cfg.width, dt,
                             (b == m->cfg.depth - 1 && m->cfg.final_norm) ? "final_ln+l2" : "l2");
        if (rc) return -1;
    }
    return 0;
}

static int add_named(iv2_teachers *ts, const char *tok, iv2_dtype dt) {
    if (!strcmp(tok, "clip_pool")) {
        if (!ts->ivit) return iv2_err("target clip_pool needs --teacher internvit");
        if (!ts->ivit->cfg.pool_heads) return iv2_err("target clip_pool: the InternViT has no attention-pool head");
        return add_target(ts, "clip_pool", "internvit", "pool", -1, 1, ts->ivit->cfg.pool_dim, dt, "frame_mean+l2");
    }
    if (!strcmp(tok, "clip_attn")) {
        if (!ts->ivit) return iv2_err("target clip_attn needs --teacher internvit");
        if (!ts->ivit->cfg.pool_heads) return iv2_err("target clip_attn: the InternViT has no attention-pool head");
        int G = iv2_vit_grid(&ts->ivit->cfg);
        return add_target(ts, "clip_attn", "internvit", "attn", -1, STUDENT_FRAMES, G * G, IV2_F32, "none");
    }
    int is_ivit = !strncmp(tok, "clip_b", 6), is_mae = !strncmp(tok, "mae_b", 5);
    if (!is_ivit && !is_mae) return iv2_err("unknown target '%s' (clip_bK[-L], clip_pool, clip_attn, mae_bK[-L])", tok);
    const char *p = tok + (is_ivit ? 6 : 5);
    char *end;
    long b0 = strtol(p, &end, 10), b1 = b0;
    if (end == p) return iv2_err("target '%s': no block number", tok);
    if (*end == '-') {
        const char *q = end + 1;
        b1 = strtol(q, &end, 10);
        if (end == q) return iv2_err("target '%s': bad block range", tok);
    }
    if (*end || b1 < b0) return iv2_err("target '%s': bad block range", tok);
    return add_blocks(ts, is_ivit, (int)b0, (int)b1, dt);
}

/* ---------------------------------------------------------------- buffers */

static void *host_alloc(iv2_backend *be, size_t bytes) {
    return be->alloc_host ? be->alloc_host(be, bytes) : iv2_malloc(bytes ? bytes : 1);
}
static void host_free(iv2_backend *be, void *p) {
    if (!p) return;
    if (be->free_host) be->free_host(be, p);
    else free(p);
}

static void free_buffers(iv2_teachers *ts) {
    iv2_backend *be = ts->be;
    if (!be) return;
    if (ts->d_frames) be->free(be, ts->d_frames);
    if (ts->d_ivit_frames) be->free(be, ts->d_ivit_frames);
    for (int k = 0; k < IV2_VIT_MAX_OUT; k++) {
        if (ts->d_ivit_out[k]) be->free(be, ts->d_ivit_out[k]);
        if (ts->d_mae_out[k]) be->free(be, ts->d_mae_out[k]);
        ts->d_ivit_out[k] = ts->d_mae_out[k] = NULL;
    }
    if (ts->d_ivit_pool) be->free(be, ts->d_ivit_pool);
    if (ts->d_ivit_attn) be->free(be, ts->d_ivit_attn);
    for (int i = 0; i < IV2_CACHE_MAX_TARGETS; i++) { host_free(be, ts->values[i]); ts->values[i] = NULL; }
    host_free(be, ts->stage);
    free(ts->host);
    ts->d_frames = ts->d_ivit_frames = NULL;
    ts->d_ivit_pool = NULL;
    ts->d_ivit_attn = NULL;
    ts->stage = NULL;
    ts->host = NULL;
    ts->n_views = 0;
}

/* backend buffers and host staging for max_views views of the chosen targets */
static int alloc_buffers(iv2_teachers *ts) {
    iv2_backend *be = ts->be;
    free_buffers(ts);
    int V = ts->max_views > 0 ? ts->max_views : 1;
    int img = ts->ivit ? ts->ivit->cfg.img : ts->mae->cfg.img;
    if (ts->ivit && ts->mae && ts->ivit->cfg.img != ts->mae->cfg.img)
        return iv2_err("teachers take different image sizes (%d, %d)", ts->ivit->cfg.img, ts->mae->cfg.img);
    size_t fb = (size_t)img * img * 3, hmax = 0;
    /* A view's targets must not depend on the batch it ran in (a resumed or re-batched extract
     * stores the same bytes). The CPU runs the teachers one view at a time inside the batch
     * (OpenBLAS picks other kernels for other row counts: the pool head's GEMMs have one row
     * per frame). CUDA runs the whole batch in one pass for the GPU's sake, padded to a full
     * batch so that every call has the same shapes and cuBLASLt the same algorithms. */
    ts->pad = strcmp(be->name, "cpu") != 0;
    for (int i = 0; i < ts->n_targets; i++)
        ts->values[i] = host_alloc(be, sizeof(float) * (size_t)ts->targets[i].tokens * ts->targets[i].dim);
    ts->d_frames = be->alloc(be, (size_t)V * CLIP_FRAMES * fb);
    ts->stage = host_alloc(be, (size_t)V * CLIP_FRAMES * fb);
    memset(ts->stage, 0, (size_t)V * CLIP_FRAMES * fb);   /* padding views read it */
    if (ts->ivit) {
        const iv2_vit_config *c = &ts->ivit->cfg;
        size_t per = (size_t)STUDENT_FRAMES * iv2_vit_tokens(c) * c->width;
        ts->d_ivit_frames = be->alloc(be, (size_t)V * STUDENT_FRAMES * fb);
        for (int k = 0; k < ts->n_ivit_blocks; k++) ts->d_ivit_out[k] = be->alloc(be, (size_t)V * per * be->esize);
        if (c->pool_heads) {
            ts->d_ivit_pool = be->alloc(be, (size_t)V * STUDENT_FRAMES * c->pool_dim * be->esize);
            ts->d_ivit_attn = be->alloc(be, sizeof(float) * (size_t)V * STUDENT_FRAMES * iv2_vit_patches(c));
        }
        if (per > hmax) hmax = per;
        ts->ivit->batch = STUDENT_FRAMES * (ts->pad ? V : 1);
    }
    if (ts->mae) {
        const iv2_vit_config *c = &ts->mae->cfg;
        size_t per = (size_t)iv2_vit_tokens(c) * c->width;
        for (int k = 0; k < ts->n_mae_blocks; k++) ts->d_mae_out[k] = be->alloc(be, (size_t)V * per * be->esize);
        ts->mae->batch = ts->pad ? V : 1;
    }
    ts->host_cap = hmax + 4096;
    ts->host = iv2_malloc(sizeof(float) * ts->host_cap);
    return 0;
}

int iv2_teachers_set_batch(iv2_teachers *ts, int views) {
    if (views < 1 || views > 1024) return iv2_err("batch of %d views: want 1..1024", views);
    ts->max_views = views;
    return ts->n_targets ? alloc_buffers(ts) : 0;
}

void iv2_teachers_buffer_bytes(const iv2_teachers *ts, size_t *backend, size_t *host) {
    int V = ts->max_views > 0 ? ts->max_views : 1;
    int img = ts->ivit ? ts->ivit->cfg.img : ts->mae->cfg.img;
    size_t fb = (size_t)img * img * 3, d = (size_t)V * CLIP_FRAMES * fb, h = d, es = ts->be->esize;
    if (ts->ivit) {
        const iv2_vit_config *c = &ts->ivit->cfg;
        d += (size_t)V * STUDENT_FRAMES * fb + (size_t)ts->n_ivit_blocks * V * STUDENT_FRAMES * iv2_vit_tokens(c) * c->width * es;
        if (c->pool_heads) d += (size_t)V * STUDENT_FRAMES * (c->pool_dim * es + sizeof(float) * iv2_vit_patches(c));
    }
    if (ts->mae) d += (size_t)ts->n_mae_blocks * V * iv2_vit_tokens(&ts->mae->cfg) * ts->mae->cfg.width * es;
    for (int i = 0; i < ts->n_targets; i++) h += sizeof(float) * (size_t)ts->targets[i].tokens * ts->targets[i].dim;
    h += sizeof(float) * ts->host_cap;
    if (backend) *backend = d;
    if (host) *host = h;
}

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

int iv2_teachers_set_targets(iv2_teachers *ts, const char *list, iv2_dtype dt) {
    if (!ts->ivit && !ts->mae) return iv2_err("no teacher given (--teacher internvit=... and/or --teacher videomae=...)");
    if (!(dt == IV2_BF16 || dt == IV2_F16 || dt == IV2_F32 || dt == IV2_I8))
        return iv2_err("storage dtype %s: use bf16, fp16, fp32 or int8", iv2_dtype_name(dt));
    ts->n_targets = 0;
    if (!list || !*list || !strcmp(list, "recipe")) {
        /* the recipe: the last 6 InternViT blocks, pool, attention; the last 4 VideoMAE blocks */
        if (ts->ivit) {
            int d = ts->ivit->cfg.depth;
            if (add_blocks(ts, 1, d >= 6 ? d - 6 : 0, d - 1, dt)) return -1;
            if (ts->ivit->cfg.pool_heads && (add_named(ts, "clip_pool", dt) || add_named(ts, "clip_attn", dt))) return -1;
        }
        if (ts->mae) {
            int d = ts->mae->cfg.depth;
            if (add_blocks(ts, 0, d >= 4 ? d - 4 : 0, d - 1, dt)) return -1;
        }
    } else {
        char *s = iv2_strdup(list), *save = NULL;
        for (char *tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            while (*tok == ' ') tok++;
            if (*tok && add_named(ts, tok, dt)) { free(s); return iv2_err_ctx("--targets"); }
        }
        free(s);
    }
    if (!ts->n_targets) return iv2_err("--targets: no target chosen");
    /* blocks each teacher must return, ascending */
    ts->n_ivit_blocks = ts->n_mae_blocks = 0;
    for (int i = 0; i < ts->n_targets; i++) {
        const iv2_cache_target *t = &ts->targets[i];
        if (strcmp(t->kind, "block")) continue;
        if (!strcmp(t->teacher, "internvit")) ts->ivit_blocks[ts->n_ivit_blocks++] = t->block;
        else ts->mae_blocks[ts->n_mae_blocks++] = t->block;
        if (ts->n_ivit_blocks > IV2_VIT_MAX_OUT || ts->n_mae_blocks > IV2_VIT_MAX_OUT) return iv2_err("too many blocks");
    }
    qsort(ts->ivit_blocks, (size_t)ts->n_ivit_blocks, sizeof(int), cmp_int);
    qsort(ts->mae_blocks, (size_t)ts->n_mae_blocks, sizeof(int), cmp_int);

    return alloc_buffers(ts);
}

/* ---------------------------------------------------------------- run */

static void l2norm_rows(float *x, int n, int d) {
    for (int r = 0; r < n; r++) {
        float *v = x + (size_t)r * d;
        double s = 0;
        for (int j = 0; j < d; j++) s += (double)v[j] * v[j];
        if (s <= 0) continue;   /* a zero row stays zero (the official code has no eps) */
        float inv = (float)(1.0 / sqrt(s));
        for (int j = 0; j < d; j++) v[j] *= inv;
    }
}

static int find_target(const iv2_teachers *ts, const char *teacher, const char *kind, int block) {
    for (int i = 0; i < ts->n_targets; i++) {
        const iv2_cache_target *t = &ts->targets[i];
        if (!strcmp(t->teacher, teacher) && !strcmp(t->kind, kind) && t->block == block) return i;
    }
    return -1;
}

static int wants_ivit(const iv2_teachers *ts) {
    for (int i = 0; i < ts->n_targets; i++)
        if (!strcmp(ts->targets[i].teacher, "internvit")) return 1;
    return 0;
}

int iv2_teachers_run_batch(iv2_teachers *ts, const uint8_t *const *clips, int n) {
    iv2_backend *be = ts->be;
    int V = ts->max_views > 0 ? ts->max_views : 1;
    if (!ts->n_targets || !ts->stage) return iv2_err("teachers: no targets chosen");
    if (n < 1 || n > V) return iv2_err("teachers: batch of %d views, the buffers hold 1..%d", n, V);
    int img = ts->ivit ? ts->ivit->cfg.img : ts->mae->cfg.img;
    size_t fb = (size_t)img * img * 3, cb = CLIP_FRAMES * fb;
    /* all views' 16 frames staged contiguous (pinned on CUDA) and uploaded in one copy */
    for (int i = 0; i < n; i++)
        if (clips[i] != ts->stage + i * cb) memcpy(ts->stage + i * cb, clips[i], cb);
    int np = ts->pad ? V : n;   /* views sent through the teachers; past n: padding (old frames) */
    be->upload_raw(be, ts->d_frames, ts->stage, np * cb);
    ts->n_views = 0;
    if (ts->ivit && wants_ivit(ts)) {
        /* InternViT's input: the 8 even frames of every view, gathered on the backend */
        for (int i = 0; i < np; i++)
            for (int f = 0; f < STUDENT_FRAMES; f++)
                be->copy(be, ts->d_ivit_frames + (size_t)(i * STUDENT_FRAMES + f) * fb, ts->d_frames + i * cb + (size_t)(2 * f) * fb, fb);
        iv2_vit_io io;
        memset(&io, 0, sizeof io);
        io.frames = ts->d_ivit_frames;
        io.S = STUDENT_FRAMES * np;
        io.n_out = ts->n_ivit_blocks;
        for (int k = 0; k < io.n_out; k++) { io.blocks[k] = ts->ivit_blocks[k]; io.out[k] = ts->d_ivit_out[k]; }
        io.pooled = find_target(ts, "internvit", "pool", -1) >= 0 ? ts->d_ivit_pool : NULL;
        io.pool_attn = find_target(ts, "internvit", "attn", -1) >= 0 ? ts->d_ivit_attn : NULL;
        if (iv2_vit_forward(ts->ivit, &io)) return iv2_err_ctx("InternViT forward");
    }
    if (ts->mae && ts->n_mae_blocks) {
        const iv2_vit_config *c = &ts->mae->cfg;
        iv2_vit_io io;
        memset(&io, 0, sizeof io);
        io.frames = ts->d_frames;
        io.S = np;
        io.n_out = ts->n_mae_blocks;
        for (int k = 0; k < io.n_out; k++) { io.blocks[k] = ts->mae_blocks[k]; io.out[k] = ts->d_mae_out[k]; }
        io.final_norm_last = c->final_norm && io.n_out && io.blocks[io.n_out - 1] == c->depth - 1;
        if (iv2_vit_forward(ts->mae, &io)) return iv2_err_ctx("VideoMAE forward");
    }
    ts->n_views = n;
    return 0;
}

static void fetch_internvit(iv2_teachers *ts, int v) {
    iv2_backend *be = ts->be;
    const iv2_vit_config *c = &ts->ivit->cfg;
    int T = iv2_vit_tokens(c), P = iv2_vit_patches(c), C = c->width;
    size_t per = (size_t)STUDENT_FRAMES * T * C;   /* one view's frames of one block output */
    for (int k = 0; k < ts->n_ivit_blocks; k++) {
        int ti = find_target(ts, "internvit", "block", ts->ivit_blocks[k]);
        float *h = ts->host, *dst = ts->values[ti];
        be->download(be, h, IV2_AT(be, ts->d_ivit_out[k], (size_t)v * per), per);
        /* token 0: CLS averaged over the frames; then the patches of frame f at 1 + f*P */
        for (int j = 0; j < C; j++) {
            double s = 0;
            for (int f = 0; f < STUDENT_FRAMES; f++) s += h[(size_t)f * T * C + j];
            dst[j] = (float)(s / STUDENT_FRAMES);
        }
        for (int f = 0; f < STUDENT_FRAMES; f++)
            memcpy(dst + (size_t)(1 + f * P) * C, h + ((size_t)f * T + 1) * C, sizeof(float) * (size_t)P * C);
        l2norm_rows(dst, 1 + STUDENT_FRAMES * P, C);
    }
    int ip = find_target(ts, "internvit", "pool", -1), ia = find_target(ts, "internvit", "attn", -1);
    if (ip >= 0) {
        int D = c->pool_dim;
        float *h = ts->host, *dst = ts->values[ip];
        be->download(be, h, IV2_AT(be, ts->d_ivit_pool, (size_t)v * STUDENT_FRAMES * D), (size_t)STUDENT_FRAMES * D);
        for (int j = 0; j < D; j++) {
            double s = 0;
            for (int f = 0; f < STUDENT_FRAMES; f++) s += h[(size_t)f * D + j];
            dst[j] = (float)(s / STUDENT_FRAMES);
        }
        l2norm_rows(dst, 1, D);
    }
    if (ia >= 0)
        be->download_raw(be, ts->values[ia], ts->d_ivit_attn + (size_t)v * STUDENT_FRAMES * P, sizeof(float) * STUDENT_FRAMES * P);
}

static void fetch_videomae(iv2_teachers *ts, int v) {
    iv2_backend *be = ts->be;
    const iv2_vit_config *c = &ts->mae->cfg;
    int N = iv2_vit_tokens(c), C = c->width;
    for (int k = 0; k < ts->n_mae_blocks; k++) {
        int ti = find_target(ts, "videomae", "block", ts->mae_blocks[k]);
        be->download(be, ts->values[ti], IV2_AT(be, ts->d_mae_out[k], (size_t)v * N * C), (size_t)N * C);
        l2norm_rows(ts->values[ti], N, C);
    }
}

int iv2_teachers_fetch(iv2_teachers *ts, int v) {
    if (v < 0 || v >= ts->n_views) return iv2_err("teachers: fetch of view %d, the last batch had %d", v, ts->n_views);
    if (ts->ivit && wants_ivit(ts)) fetch_internvit(ts, v);
    if (ts->mae && ts->n_mae_blocks) fetch_videomae(ts, v);
    return 0;
}

int iv2_teachers_run(iv2_teachers *ts, const uint8_t *frames) {
    if (iv2_teachers_run_batch(ts, &frames, 1)) return -1;
    return iv2_teachers_fetch(ts, 0);
}

char *iv2_teachers_meta_json(const iv2_teachers *ts) {
    size_t cap = 8192;
    char *buf = iv2_malloc(cap), cfg[2048], esc[1100];
    int n = snprintf(buf, cap, "{");
    for (int k = 0; k < 2; k++) {
        iv2_vit *m = k == 0 ? ts->ivit : ts->mae;
        if (!m) continue;
        iv2_vit_config_to_json(&m->cfg, cfg, sizeof cfg);
        const char *src = k == 0 ? ts->ivit_src : ts->mae_src, *sha = k == 0 ? ts->ivit_sha : ts->mae_sha;
        int preset = !strncmp(src, "preset:", 7);
        /* a preset is reproduced by its name and seed; a file by its checksum (its path may move) */
        n += snprintf(buf + n, cap - (size_t)n, "%s\"%s\":{\"weights\":\"%s\",\"sha256\":%s%s%s,\"config\":%s}",
                      n > 1 ? "," : "", k == 0 ? "internvit" : "videomae",
                      preset ? iv2_json_escape(esc, sizeof esc, src) : "file", preset ? "" : "\"", preset ? "null" : sha,
                      preset ? "" : "\"", cfg);
    }
    snprintf(buf + n, cap - (size_t)n, "}");
    return buf;
}

void iv2_teachers_free(iv2_teachers *ts) {
    free_buffers(ts);
    iv2_vit_free(ts->ivit);
    iv2_vit_free(ts->mae);
    memset(ts, 0, sizeof *ts);
}
