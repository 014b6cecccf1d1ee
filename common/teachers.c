/* teachers.c: load the teachers, pick the targets, turn batches of clip views into target tensors. */
#include "teachers.h"
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
    /* the targets' layouts: clip_b* token 0 is the frames' CLS mean, mae_b* has the patches only */
    if ((cfg.cls != 0) != is_ivit) return iv2_err("--teacher %s=%s: %s must %shave a CLS token", which, spec, is_ivit ? "InternViT" : "VideoMAE", is_ivit ? "" : "not ");
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

/* backend and host allocations, counted for the memory plan (iv2_teachers_buffer_bytes) */
static void *dev_alloc(iv2_teachers *ts, size_t bytes) {
    ts->backend_bytes += bytes;
    return ts->be->alloc(ts->be, bytes);
}
static void *stage_alloc(iv2_teachers *ts, size_t bytes) {
    ts->host_bytes += bytes;
    return host_alloc(ts->be, bytes);
}
static void *dev_free(iv2_backend *be, void *p) {
    if (p) be->free(be, p);
    return NULL;
}

static void free_buffers(iv2_teachers *ts) {
    iv2_backend *be = ts->be;
    if (!be) return;
    ts->d_frames = dev_free(be, ts->d_frames);
    ts->d_ivit_frames = dev_free(be, ts->d_ivit_frames);
    for (int k = 0; k < IV2_VIT_MAX_OUT; k++) {
        ts->d_ivit_out[k] = dev_free(be, ts->d_ivit_out[k]);
        ts->d_mae_out[k] = dev_free(be, ts->d_mae_out[k]);
    }
    ts->d_ivit_pool = dev_free(be, ts->d_ivit_pool);
    ts->d_ivit_attn = dev_free(be, ts->d_ivit_attn);
    ts->d_gather = dev_free(be, ts->d_gather);
    ts->d_cls = dev_free(be, ts->d_cls);
    ts->d_mean = dev_free(be, ts->d_mean);
    ts->d_tok_idx = dev_free(be, ts->d_tok_idx);
    ts->d_cls_idx = dev_free(be, ts->d_cls_idx);
    for (int i = 0; i < IV2_CACHE_MAX_TARGETS; i++) { host_free(be, ts->values[i]); ts->values[i] = NULL; }
    host_free(be, ts->stage);
    ts->stage = NULL;
    ts->backend_bytes = ts->host_bytes = 0;
    ts->n_views = 0;
}

/* The row indices of the InternViT post-processing, for V views of raw block outputs
 * [V][8][T][C]: tok [V][1 + 8P] = the rows of the target (row 0 takes frame 0's CLS row, which
 * the CLS mean then replaces; frame f's patch p at 1 + f*P + p), cls [V][8] = the CLS rows. */
static void upload_indices(iv2_teachers *ts, int V, int T, int P) {
    iv2_backend *be = ts->be;
    int R = 1 + STUDENT_FRAMES * P;
    int32_t *tok = iv2_malloc(sizeof(int32_t) * (size_t)V * R), *cls = iv2_malloc(sizeof(int32_t) * V * STUDENT_FRAMES);
    for (int v = 0; v < V; v++) {
        int32_t *r = tok + (size_t)v * R;
        r[0] = v * STUDENT_FRAMES * T;
        for (int f = 0; f < STUDENT_FRAMES; f++) {
            int32_t frame = (v * STUDENT_FRAMES + f) * T;
            cls[v * STUDENT_FRAMES + f] = frame;
            for (int p = 0; p < P; p++) r[1 + f * P + p] = frame + 1 + p;
        }
    }
    ts->d_tok_idx = dev_alloc(ts, sizeof(int32_t) * (size_t)V * R);
    ts->d_cls_idx = dev_alloc(ts, sizeof(int32_t) * V * STUDENT_FRAMES);
    be->upload_raw(be, ts->d_tok_idx, tok, sizeof(int32_t) * (size_t)V * R);
    be->upload_raw(be, ts->d_cls_idx, cls, sizeof(int32_t) * V * STUDENT_FRAMES);
    free(tok);
    free(cls);
}

/* backend buffers and host staging for max_views views of the chosen targets */
static int alloc_buffers(iv2_teachers *ts) {
    iv2_backend *be = ts->be;
    free_buffers(ts);
    int V = ts->max_views > 0 ? ts->max_views : 1;
    int img = ts->ivit ? ts->ivit->cfg.img : ts->mae->cfg.img;
    if (ts->ivit && ts->mae && ts->ivit->cfg.img != ts->mae->cfg.img)
        return iv2_err("teachers take different image sizes (%d, %d)", ts->ivit->cfg.img, ts->mae->cfg.img);
    size_t fb = (size_t)img * img * 3, es = be->esize;
    /* A view's targets must not depend on the batch it ran in (a resumed or re-batched extract
     * stores the same bytes). The CPU runs the teachers one view at a time inside the batch
     * (OpenBLAS picks other kernels for other row counts: the pool head's GEMMs have one row
     * per frame). CUDA runs the whole batch in one pass for the GPU's sake, padded to a full
     * batch so that every call has the same shapes and cuBLASLt the same algorithms. The
     * post-processing ops work row by row, so the batch does not change their results. */
    ts->pad = strcmp(be->name, "cpu") != 0;
    for (int i = 0; i < ts->n_targets; i++)
        ts->values[i] = stage_alloc(ts, sizeof(float) * (size_t)ts->targets[i].tokens * ts->targets[i].dim);
    ts->d_frames = dev_alloc(ts, (size_t)V * CLIP_FRAMES * fb);
    ts->stage = stage_alloc(ts, (size_t)V * CLIP_FRAMES * fb);
    memset(ts->stage, 0, (size_t)V * CLIP_FRAMES * fb);   /* padding views read it */
    if (ts->ivit) {
        const iv2_vit_config *c = &ts->ivit->cfg;
        int T = iv2_vit_tokens(c), P = iv2_vit_patches(c), C = c->width, R = 1 + STUDENT_FRAMES * P;
        size_t per = (size_t)STUDENT_FRAMES * T * C, mean_dim = 0;
        ts->d_ivit_frames = dev_alloc(ts, (size_t)V * STUDENT_FRAMES * fb);
        for (int k = 0; k < ts->n_ivit_blocks; k++) ts->d_ivit_out[k] = dev_alloc(ts, (size_t)V * per * es);
        if (ts->n_ivit_blocks) {
            ts->d_gather = dev_alloc(ts, (size_t)V * R * C * es);
            ts->d_cls = dev_alloc(ts, (size_t)V * STUDENT_FRAMES * C * es);
            upload_indices(ts, V, T, P);
            mean_dim = (size_t)C;
        }
        if (c->pool_heads) {
            ts->d_ivit_pool = dev_alloc(ts, (size_t)V * STUDENT_FRAMES * c->pool_dim * es);
            ts->d_ivit_attn = dev_alloc(ts, sizeof(float) * (size_t)V * STUDENT_FRAMES * P);
            if ((size_t)c->pool_dim > mean_dim) mean_dim = (size_t)c->pool_dim;
        }
        if (mean_dim) ts->d_mean = dev_alloc(ts, (size_t)V * mean_dim * es);
        ts->ivit->batch = STUDENT_FRAMES * (ts->pad ? V : 1);
    }
    if (ts->mae) {
        const iv2_vit_config *c = &ts->mae->cfg;
        size_t per = (size_t)iv2_vit_tokens(c) * c->width;
        for (int k = 0; k < ts->n_mae_blocks; k++) ts->d_mae_out[k] = dev_alloc(ts, (size_t)V * per * es);
        ts->mae->batch = ts->pad ? V : 1;
    }
    return 0;
}

int iv2_teachers_set_batch(iv2_teachers *ts, int views) {
    if (views < 1 || views > 1024) return iv2_err("batch of %d views: want 1..1024", views);
    ts->max_views = views;
    return ts->n_targets ? alloc_buffers(ts) : 0;
}

void iv2_teachers_buffer_bytes(const iv2_teachers *ts, size_t *backend, size_t *host) {
    if (backend) *backend = ts->backend_bytes;
    if (host) *host = ts->host_bytes;
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

/* The InternViT targets of np views, on the backend, left at the start of their output buffers:
 * clip_bK [np][1 + 8P][C] = (the 8 frames' CLS mean, the frames' patch rows), each row L2'd;
 * clip_pool [np][pool_dim] = the 8 frames' pooled mean, L2'd. */
static void post_internvit(iv2_teachers *ts, int np, int pooled) {
    iv2_backend *be = ts->be;
    const iv2_vit_config *c = &ts->ivit->cfg;
    int C = c->width, R = 1 + STUDENT_FRAMES * iv2_vit_patches(c);
    for (int k = 0; k < ts->n_ivit_blocks; k++) {
        void *out = ts->d_ivit_out[k];
        be->gather_rows(be, ts->d_cls, out, ts->d_cls_idx, np * STUDENT_FRAMES, C);
        be->mean_rows(be, ts->d_mean, ts->d_cls, np, STUDENT_FRAMES, C);
        be->gather_rows(be, ts->d_gather, out, ts->d_tok_idx, np * R, C);
        for (int v = 0; v < np; v++)   /* token 0 (gathered as frame 0's CLS) becomes the mean */
            be->copy(be, IV2_AT(be, ts->d_gather, (size_t)v * R * C), IV2_AT(be, ts->d_mean, (size_t)v * C), (size_t)C * be->esize);
        be->l2norm(be, out, NULL, ts->d_gather, np * R, C);
    }
    if (pooled) {
        be->mean_rows(be, ts->d_mean, ts->d_ivit_pool, np, STUDENT_FRAMES, c->pool_dim);
        be->l2norm(be, ts->d_ivit_pool, NULL, ts->d_mean, np, c->pool_dim);
    }
}

/* The VideoMAE targets: every token L2'd in place. */
static void post_videomae(iv2_teachers *ts, int np) {
    iv2_backend *be = ts->be;
    int rows = np * iv2_vit_tokens(&ts->mae->cfg);
    for (int k = 0; k < ts->n_mae_blocks; k++) be->l2norm(be, ts->d_mae_out[k], NULL, ts->d_mae_out[k], rows, ts->mae->cfg.width);
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
        post_internvit(ts, np, io.pooled != NULL);
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
        post_videomae(ts, np);
    }
    ts->n_views = n;
    return 0;
}

iv2_dtype iv2_teachers_target_dtype(const iv2_teachers *ts, int t) {
    return strcmp(ts->targets[t].kind, "attn") ? ts->be->dtype : IV2_F32;
}

/* where target t of view v lies on the backend after run_batch */
static const void *target_at(const iv2_teachers *ts, int t, int v) {
    iv2_backend *be = ts->be;
    const iv2_cache_target *tg = &ts->targets[t];
    size_t off = (size_t)v * tg->tokens * tg->dim;
    if (!strcmp(tg->kind, "attn")) return ts->d_ivit_attn + off;
    if (!strcmp(tg->kind, "pool")) return IV2_AT(be, ts->d_ivit_pool, off);
    int ivit = !strcmp(tg->teacher, "internvit"), n = ivit ? ts->n_ivit_blocks : ts->n_mae_blocks;
    for (int k = 0; k < n; k++)
        if ((ivit ? ts->ivit_blocks : ts->mae_blocks)[k] == tg->block) return IV2_AT(be, (ivit ? ts->d_ivit_out : ts->d_mae_out)[k], off);
    return NULL;
}

int iv2_teachers_fetch_target(iv2_teachers *ts, int v, int t, void *dst, iv2_dtype dt) {
    if (v < 0 || v >= ts->n_views) return iv2_err("teachers: fetch of view %d, the last batch had %d", v, ts->n_views);
    if (t < 0 || t >= ts->n_targets) return iv2_err("teachers: no target %d (%d targets)", t, ts->n_targets);
    iv2_backend *be = ts->be;
    const iv2_cache_target *tg = &ts->targets[t];
    const void *src = target_at(ts, t, v);
    size_t n = (size_t)tg->tokens * tg->dim;
    iv2_dtype have = iv2_teachers_target_dtype(ts, t);
    if (!src) return iv2_err("teachers: target %s has no output buffer", tg->name);
    if (dt == have) be->download_raw(be, dst, src, n * iv2_dtype_size(dt));
    else if (dt == IV2_F32) be->download(be, dst, src, n);
    else return iv2_err("teachers: target %s is held as %s, not %s", tg->name, iv2_dtype_name(have), iv2_dtype_name(dt));
    return 0;
}

/* the host block of fetch_async: per target, max_views views' values in the backend dtype */
static size_t host_target_bytes(const iv2_teachers *ts, int t) {
    const iv2_cache_target *tg = &ts->targets[t];
    return (size_t)tg->tokens * tg->dim * iv2_dtype_size(iv2_teachers_target_dtype(ts, t));
}
size_t iv2_teachers_batch_bytes(const iv2_teachers *ts) {
    size_t n = 0;
    for (int t = 0; t < ts->n_targets; t++) n += (size_t)ts->max_views * host_target_bytes(ts, t);
    return n;
}
const void *iv2_teachers_host_target(const iv2_teachers *ts, const void *host, int v, int t) {
    size_t off = 0;
    for (int i = 0; i < t; i++) off += (size_t)ts->max_views * host_target_bytes(ts, i);
    return (const uint8_t *)host + off + (size_t)v * host_target_bytes(ts, t);
}
int iv2_teachers_fetch_async(iv2_teachers *ts, void *host) {
    iv2_backend *be = ts->be;
    for (int t = 0; t < ts->n_targets; t++) {
        const void *src = target_at(ts, t, 0);   /* the views of a target are contiguous from view 0 */
        if (!src) return iv2_err("teachers: target %s has no output buffer", ts->targets[t].name);
        be->download_async(be, (void *)iv2_teachers_host_target(ts, host, 0, t), src,
                           (size_t)ts->n_views * host_target_bytes(ts, t));
    }
    return 0;
}

int iv2_teachers_fetch(iv2_teachers *ts, int v) {
    for (int t = 0; t < ts->n_targets; t++)
        if (iv2_teachers_fetch_target(ts, v, t, ts->values[t], IV2_F32)) return -1;
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
