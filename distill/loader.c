/* loader.c: cache shards -> training batches.
 *
 * Per step: the epoch's permutation (seeded by (seed, epoch)) gives B views; for each the
 * frames, the pool attention, a mask drawn with an RNG seeded by (seed, step, sample), and for
 * the visible tokens only the rows of each target (iv2_cache_read_rows copies out just those
 * rows from the read-only map). A prefetch thread builds step s+1 while step s trains: two
 * slots, the trainer owns one, the thread fills the other. With a backend (L->be) the slots are
 * pinned and hold the targets in the backend's dtype, made here on the loader's thread, and
 * the index rows the device reads, so the trainer's thread only queues raw copies. A target the
 * cache stores in that dtype (bf16 cache, bf16 device) is copied row by row as stored, with no
 * decode and no conversion; the samples of a batch are built on L->threads threads. */
#include "distill.h"
#include "cache.h"
#include "dist.h"
#include "err.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct iv2_loader_thread {
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    iv2_batch slot[2];
    int64_t want;        /* step the thread should build next (-1 none) */
    int64_t built;       /* step in slot[built % 2] that is ready (-1 none) */
    int failed;          /* the build of `want` failed; message in err */
    char err[512];
    int busy, quit;
};

static int find_target(iv2_cache *c, const char *name, const char *why) {
    int i = iv2_cache_find_target(c, name);
    if (i < 0) {
        iv2_err_clear();
        return iv2_err("cache %s has no target \"%s\" (%s)", iv2_cache_dir(c), name, why);
    }
    return i;
}

static int check_shape(const iv2_cache_target *t, int tokens, int dim, const char *what) {
    if (t->tokens != tokens || (dim > 0 && t->dim != dim))
        return iv2_err("target %s is [%d][%d], the student's %s needs [%d][%s] (token grid mismatch)", t->name,
                       t->tokens, t->dim, what, tokens, dim > 0 ? "same dim" : "any");
    return 0;
}

/* An epoch is one pass over the training videos, as the recipe's (one clip per video per epoch,
 * a new augmentation each time): a video whose cache rows hold K views gives view e mod K in
 * epoch e, so K cached views stand in for K epochs' augmentations instead of multiplying the
 * schedule by K. Views of one video are adjacent in the set (key order: row, then view). */
static int same_video(const iv2_cache_set *s, int64_t i, int64_t j) {
    return s->view_shard[i] == s->view_shard[j] && s->view_key[i].row == s->view_key[j].row;
}

static void group_videos(iv2_loader *L) {
    const iv2_cache_set *s = L->set;
    free(L->video_first); free(L->video_views);
    L->video_first = iv2_malloc(sizeof *L->video_first * (size_t)(L->n_train > 0 ? L->n_train : 1));
    L->video_views = iv2_malloc(sizeof *L->video_views * (size_t)(L->n_train > 0 ? L->n_train : 1));
    L->n_videos = 0;
    for (int64_t i = 0; i < L->n_train; i++) {
        if (i == 0 || !same_video(s, i - 1, i)) {
            L->video_first[L->n_videos] = i;
            L->video_views[L->n_videos++] = 0;
        }
        L->video_views[L->n_videos - 1]++;
    }
}

int iv2_loader_open(iv2_loader *L, const char *dirs, const iv2_distill_config *c, int frames, int size, int T, int P) {
    memset(L, 0, sizeof *L);
    L->cfg = *c;
    L->frames = frames; L->size = size; L->T = T; L->P = P;
    L->perm_epoch = -1;
    L->set = iv2_calloc(1, sizeof *L->set);
    if (iv2_cache_set_open(L->set, dirs)) { free(L->set); L->set = NULL; return -1; }
    iv2_cache *c0 = L->set->shards[0];
    char nm[32];
    for (int k = 0; k < c->n_clip; k++) {
        snprintf(nm, sizeof nm, "clip_b%d", c->clip_teacher[k]);
        if ((L->t_clip[k] = find_target(c0, nm, "named by clip_layers")) < 0) goto fail;
        const iv2_cache_target *t = iv2_cache_target_at(c0, L->t_clip[k]);
        if (check_shape(t, 1 + T * P, k ? L->clip_dim : 0, "CLS + patch grid")) goto fail;
        L->clip_dim = t->dim;
    }
    for (int k = 0; k < c->n_mae; k++) {
        snprintf(nm, sizeof nm, "mae_b%d", c->mae_teacher[k]);
        if ((L->t_mae[k] = find_target(c0, nm, "named by mae_layers")) < 0) goto fail;
        const iv2_cache_target *t = iv2_cache_target_at(c0, L->t_mae[k]);
        if (check_shape(t, T * P, k ? L->mae_dim : 0, "patch grid")) goto fail;
        L->mae_dim = t->dim;
    }
    L->t_pool = L->t_attn = -1;
    if (c->use_final) {
        if ((L->t_pool = find_target(c0, "clip_pool", "use_final is on")) < 0) goto fail;
        const iv2_cache_target *t = iv2_cache_target_at(c0, L->t_pool);
        if (check_shape(t, 1, 0, "pooled output")) goto fail;
        L->final_dim = t->dim;
    }
    if (c->mask == IV2_MASK_ATTENTION) {
        if ((L->t_attn = find_target(c0, "clip_attn", "the attention mask needs it")) < 0) goto fail;
        if (check_shape(iv2_cache_target_at(c0, L->t_attn), T, P, "attention mask")) goto fail;
        if (iv2_cache_target_at(c0, L->t_attn)->dim != P) { iv2_err("target clip_attn has dim %d, the grid has %d patches per frame", iv2_cache_target_at(c0, L->t_attn)->dim, P); goto fail; }
    }
    if (L->set->n_views < 1) { iv2_err("the cache holds no views (iv2-cache info lists the rows that failed)"); goto fail; }
    iv2_cache_view v;
    if (iv2_cache_set_read_view(L->set, 0, &v, NULL)) goto fail;
    if (v.n_student != frames || v.size != size) {
        iv2_err("cache %s stores %d frames of %dx%d, the student takes %d of %dx%d", dirs, v.n_student, v.size, v.size,
                frames, size, size);
        goto fail;
    }
    if (c->eval_views > L->set->n_views) {
        iv2_err("%lld views, fewer than the %d eval_views to hold out", (long long)L->set->n_views, c->eval_views);
        goto fail;
    }
    L->n_eval = c->eval_views < 0 ? L->set->n_views : c->eval_views;   /* -1: every view is for eval */
    L->n_train = L->set->n_views - L->n_eval;
    while (c->eval_views > 0 && L->n_train > 0 && same_video(L->set, L->n_train - 1, L->n_train)) {
        L->n_train--;   /* hold out whole videos: no video with views on both sides of the split */
        L->n_eval++;
    }
    group_videos(L);
    if (c->eval_views >= 0 && L->n_videos < c->batch) {
        iv2_err("%lld training videos (%lld views, %d held out for eval) are fewer than one batch of %d",
                (long long)L->n_videos, (long long)L->set->n_views, c->eval_views, c->batch);
        goto fail;
    }
    L->steps_per_epoch = L->n_videos / c->batch > 0 ? L->n_videos / c->batch : 1;
    L->nv = iv2_mask_n_visible(c->mask, T, P, c->mask_ratio);
    L->perm = iv2_malloc(sizeof *L->perm * (size_t)(L->n_videos > 0 ? L->n_videos : 1));
    L->threads = c->loader_threads;
    if (L->threads <= 0) {   /* auto: a GPU waits for batches that dwarf its step's host work; CPU cores train */
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        L->threads = strncmp(c->device, "cuda", 4) ? 1 : cores < 4 ? (cores > 0 ? (int)cores : 1) : 4;
    }
    return 0;
fail:
    iv2_err_ctx("%s", dirs);
    iv2_loader_close(L);
    return -1;
}

static void *prefetch_main(void *arg);

static void thread_stop(iv2_loader *L) {
    struct iv2_loader_thread *th = L->th;
    if (!th) return;
    pthread_mutex_lock(&th->mu);
    th->quit = 1;
    pthread_cond_broadcast(&th->cv);
    pthread_mutex_unlock(&th->mu);
    pthread_join(th->tid, NULL);
    iv2_batch_free(&th->slot[0]);
    iv2_batch_free(&th->slot[1]);
    pthread_mutex_destroy(&th->mu);
    pthread_cond_destroy(&th->cv);
    free(th);
    L->th = NULL;
}

void iv2_loader_stop_prefetch(iv2_loader *L) { thread_stop(L); }

void iv2_loader_close(iv2_loader *L) {
    thread_stop(L);
    if (L->set) { iv2_cache_set_close(L->set); free(L->set); }
    free(L->perm);
    free(L->video_first);
    free(L->video_views);
    memset(L, 0, sizeof *L);
}

int iv2_batch_alloc(iv2_batch *b, const iv2_loader *L, int B, int nv) { return iv2_batch_alloc_for(b, L, B, nv, NULL); }

/* batch memory: the backend's host memory when there is one, else malloc */
static void *batch_mem(iv2_backend *be, size_t bytes) { return be ? be->alloc_host(be, bytes ? bytes : 1) : iv2_malloc(bytes); }
static void batch_mem_free(iv2_backend *be, void *p) {
    if (p && be) be->free_host(be, p);
    else free(p);
}

/* a target of n elements: f32 (also set as the backend's form when that is F32), or in be->dtype only */
static void target_alloc(iv2_batch *b, size_t n, float **f32, void **dev) {
    iv2_backend *be = b->be;
    if (!be || be->dtype == IV2_F32) {
        *f32 = batch_mem(be, sizeof(float) * n);
        if (be) *dev = *f32;
    } else *dev = batch_mem(be, be->esize * n);
}

int iv2_batch_alloc_for(iv2_batch *b, const iv2_loader *L, int B, int nv, iv2_backend *be) {
    memset(b, 0, sizeof *b);
    if (be && !be->alloc_host) be = NULL;   /* a backend without host memory of its own: plain */
    b->step = -1;
    b->B = B; b->nv = nv;
    b->be = be;
    b->views = iv2_calloc((size_t)B, sizeof *b->views);
    b->frames = batch_mem(be, (size_t)B * L->frames * L->size * L->size * 3);
    b->vis = batch_mem(be, sizeof(int32_t) * (size_t)B * nv);
    memset(b->vis, 0, sizeof(int32_t) * (size_t)B * nv);
    for (int k = 0; k < L->cfg.n_clip; k++) target_alloc(b, (size_t)B * nv * L->clip_dim, &b->clip[k], &b->tclip[k]);
    for (int k = 0; k < L->cfg.n_mae; k++) target_alloc(b, (size_t)B * (nv - 1) * L->mae_dim, &b->mae[k], &b->tmae[k]);
    if (L->cfg.use_final) target_alloc(b, (size_t)B * L->final_dim, &b->final, &b->tfinal);
    if (be) {
        b->rows = batch_mem(be, sizeof(int32_t) * (size_t)B * nv);
        b->mae_pos = batch_mem(be, sizeof(int32_t) * (size_t)B * (nv > 1 ? nv - 1 : 1));
    }
    return 0;
}

void iv2_batch_free(iv2_batch *b) {
    iv2_backend *be = b->be;
    int own_dev = be && be->dtype != IV2_F32;   /* tclip... are buffers of their own, not aliases */
    free(b->views);
    batch_mem_free(be, b->frames); batch_mem_free(be, b->vis); batch_mem_free(be, b->final);
    batch_mem_free(be, b->rows); batch_mem_free(be, b->mae_pos);
    if (own_dev) batch_mem_free(be, b->tfinal);
    for (int k = 0; k < IV2_DISTILL_MAX_LAYERS; k++) {
        batch_mem_free(be, b->clip[k]); batch_mem_free(be, b->mae[k]);
        if (own_dev) { batch_mem_free(be, b->tclip[k]); batch_mem_free(be, b->tmae[k]); }
    }
    memset(b, 0, sizeof *b);
}

void iv2_batch_index_rows(const int32_t *vis, int B, int nv, int ntok, int32_t *rows, int32_t *mae_pos) {
    for (int s = 0; s < B; s++)
        for (int i = 0; i < nv; i++) {
            int32_t v = vis[(size_t)s * nv + i];
            rows[(size_t)s * nv + i] = s * ntok + v;
            if (i > 0) mae_pos[(size_t)s * (nv - 1) + i - 1] = v - 1;   /* the MAE targets have no CLS */
        }
}

/* Fisher-Yates over the training videos with the epoch's own RNG, then each video's view of the
 * epoch (with one view per video: a permutation of the views, as before videos were grouped) */
static void make_perm(iv2_loader *L, int64_t epoch) {
    if (L->perm_epoch == epoch) return;
    iv2_rng r;
    iv2_rng_seed(&r, L->cfg.seed, 0x7065726d /* "perm" */, (uint64_t)epoch, 0);
    int64_t n = L->n_videos;
    for (int64_t i = 0; i < n; i++) L->perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(iv2_rng_u64(&r) % (uint64_t)(i + 1));
        int64_t t = L->perm[i]; L->perm[i] = L->perm[j]; L->perm[j] = t;
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t v = L->perm[i];
        L->perm[i] = L->video_first[v] + epoch % L->video_views[v];
    }
    L->perm_epoch = epoch;
}

/* n rows of a target (from `rows`, NULL = the first n) of a view into sample s's place in the
 * batch: f32 straight in, or in the backend's dtype, as stored bytes when the cache stores that
 * dtype (iv2_cache_read_rows_as: no decode, no conversion) and converted row by row otherwise.
 * L->via_f32 (tests, bench): through one sample's f32 rows in conv and a conversion, the path
 * before the raw copy. */
static int read_target(iv2_loader *L, iv2_batch *b, float *conv, int64_t view, int target, const int32_t *rows, int n,
                       int dim, int s, float *f32, void *dev) {
    size_t at = (size_t)s * n * dim;
    if (f32) return iv2_cache_set_read_rows(L->set, view, target, rows, n, f32 + at);
    iv2_backend *be = b->be;
    void *dst = (char *)dev + at * be->esize;
    if (!L->via_f32) return iv2_cache_set_read_rows_as(L->set, view, target, rows, n, be->dtype, dst);
    if (iv2_cache_set_read_rows(L->set, view, target, rows, n, conv)) return -1;
    if (be->dtype == IV2_BF16) iv2_f32_to_bf16_n(dst, conv, (size_t)n * dim);
    else iv2_convert(dst, be->dtype, conv, IV2_F32, (size_t)n * dim);
    return 0;
}

/* frames + targets of view `view` for sample s of b, whose vis row is filled */
static int read_sample(iv2_loader *L, iv2_batch *b, float *conv, int s, int64_t view, int all_tokens) {
    iv2_cache_set *set = L->set;
    int nv = b->nv;
    const int32_t *vis = b->vis + (size_t)s * nv;
    iv2_cache_view v;
    if (iv2_cache_set_read_view(set, view, &v, b->frames + (size_t)s * L->frames * L->size * L->size * 3)) return -1;
    for (int k = 0; k < L->cfg.n_clip; k++)
        if (read_target(L, b, conv, view, L->t_clip[k], all_tokens ? NULL : vis, nv, L->clip_dim, s, b->clip[k], b->tclip[k]))
            return -1;
    if (L->cfg.n_mae) {
        int32_t *rows = iv2_malloc(sizeof(int32_t) * (size_t)nv);
        for (int j = 1; j < nv; j++) rows[j - 1] = vis[j] - 1;   /* MAE tokens have no CLS */
        for (int k = 0; k < L->cfg.n_mae; k++)
            if (read_target(L, b, conv, view, L->t_mae[k], all_tokens ? NULL : rows, nv - 1, L->mae_dim, s, b->mae[k], b->tmae[k])) {
                free(rows);
                return -1;
            }
        free(rows);
    }
    if (L->cfg.use_final && read_target(L, b, conv, view, L->t_pool, NULL, 1, L->final_dim, s, b->final, b->tfinal)) return -1;
    return 0;
}

/* One worker's share of a batch: samples [s0, s1). Every sample is a pure function of (step,
 * global sample index) written to its own place in the batch, so how the samples are split over
 * threads cannot change a byte of the batch. */
typedef struct build_part {
    iv2_loader *L;
    iv2_batch *b;
    int64_t step;          /* training step; -1: an eval batch */
    int64_t first;         /* training: global index of the rank's sample 0; eval: first held-out view */
    int s0, s1;
    int rc;
    char err[2048];        /* the failure, from this thread's iv2_errmsg */
} build_part;

/* training sample s: its view from the epoch's permutation (made by the caller), its mask, its data */
static int build_train_sample(build_part *p, int s, float *attn, float *conv) {
    iv2_loader *L = p->L;
    iv2_batch *b = p->b;
    int64_t view = L->perm[(p->step % L->steps_per_epoch) * L->cfg.batch + p->first + s];
    b->views[s] = view;
    if (attn && iv2_cache_set_read_rows(L->set, view, L->t_attn, NULL, L->T, attn)) return -1;
    iv2_rng r;
    iv2_rng_seed(&r, L->cfg.seed, 0x6d61736b /* "mask" */, (uint64_t)p->step, (uint64_t)(p->first + s));
    if (iv2_mask_draw(L->cfg.mask, attn, L->T, L->P, L->cfg.mask_ratio, &r, b->vis + (size_t)s * L->nv) != L->nv)
        return iv2_err("mask draw failed");
    return read_sample(L, b, conv, s, view, 0);
}

static int build_eval_sample(build_part *p, int s, float *conv) {
    iv2_batch *b = p->b;
    int ntok = b->nv;
    for (int j = 0; j < ntok; j++) b->vis[(size_t)s * ntok + j] = j;
    b->views[s] = p->L->n_train + p->first + s;
    if (read_sample(p->L, b, conv, s, b->views[s], 1)) return iv2_err_ctx("eval view %lld", (long long)b->views[s]);
    return 0;
}

static void *build_part_main(void *arg) {
    build_part *p = arg;
    iv2_loader *L = p->L;
    iv2_batch *b = p->b;
    float *attn = p->step >= 0 && L->t_attn >= 0 ? iv2_malloc(sizeof(float) * (size_t)L->T * L->P) : NULL;
    float *conv = NULL;
    if (L->via_f32 && b->be && b->be->dtype != IV2_F32) {
        int D = L->clip_dim > L->mae_dim ? L->clip_dim : L->mae_dim;
        conv = iv2_malloc(sizeof(float) * ((size_t)b->nv * D + L->final_dim + 1));
    }
    p->rc = 0;
    for (int s = p->s0; s < p->s1 && !p->rc; s++)
        p->rc = p->step >= 0 ? build_train_sample(p, s, attn, conv) : build_eval_sample(p, s, conv);
    if (p->rc) snprintf(p->err, sizeof p->err, "%s", iv2_errmsg());
    free(attn);
    free(conv);
    return NULL;
}

/* samples [0, B) of b on L->threads threads (contiguous shares; this thread takes the first).
 * On failure the error is that of the lowest failing sample, as one thread would report it. */
static int build_samples(iv2_loader *L, iv2_batch *b, int64_t step, int64_t first, int B) {
    int n = L->threads < 1 ? 1 : L->threads > B ? B : L->threads;
    build_part *parts = iv2_calloc((size_t)n, sizeof *parts);
    pthread_t *tid = iv2_calloc((size_t)n, sizeof *tid);
    int *started = iv2_calloc((size_t)n, sizeof *started);
    for (int j = 0; j < n; j++) {
        parts[j] = (build_part){.L = L, .b = b, .step = step, .first = first, .s0 = (int)((int64_t)B * j / n),
                                .s1 = (int)((int64_t)B * (j + 1) / n)};
        if (j > 0) started[j] = pthread_create(&tid[j], NULL, build_part_main, &parts[j]) == 0;
    }
    build_part_main(&parts[0]);
    for (int j = 1; j < n; j++) {
        if (started[j]) pthread_join(tid[j], NULL);
        else build_part_main(&parts[j]);   /* no thread to be had: do its share here */
    }
    int rc = 0;
    for (int j = 0; j < n && !rc; j++)
        if (parts[j].rc) rc = iv2_err("%s", parts[j].err);
    free(parts); free(tid); free(started);
    return rc;
}

int iv2_loader_build(iv2_loader *L, int64_t step, iv2_batch *b) {
    /* data parallel: rank r takes samples [r*B, (r+1)*B) of the global batch Bg (the same
     * permutation on every rank; masks drawn from the global sample index) */
    int Bg = L->cfg.batch, B = iv2_dist_local_batch(Bg), first = iv2_dist_rank() * B;
    if (b->B != B || b->nv != L->nv) return iv2_err("loader: batch buffers are for %d x %d, need %d x %d", b->B, b->nv, B, L->nv);
    make_perm(L, step / L->steps_per_epoch);
    if (build_samples(L, b, step, first, B)) return iv2_err_ctx("step %lld", (long long)step);
    if (b->rows) iv2_batch_index_rows(b->vis, B, L->nv, 1 + L->T * L->P, b->rows, b->mae_pos);
    b->step = step;
    return 0;
}

int iv2_loader_build_eval(iv2_loader *L, int64_t first, iv2_batch *b) {
    int ntok = 1 + L->T * L->P;
    if (b->nv != ntok) return iv2_err("eval batch must hold every token (%d), has %d", ntok, b->nv);
    int B = b->B;
    if (first + B > L->n_eval) B = (int)(L->n_eval - first);
    if (B < 1) return iv2_err("eval: no held-out views from %lld", (long long)first);
    if (build_samples(L, b, -1, first, B)) return -1;
    return B;
}

/* ---- prefetch ---- */

static void *prefetch_main(void *arg) {
    iv2_loader *L = arg;
    struct iv2_loader_thread *th = L->th;
    pthread_mutex_lock(&th->mu);
    for (;;) {
        while (!th->quit && th->want < 0) pthread_cond_wait(&th->cv, &th->mu);
        if (th->quit) break;
        int64_t step = th->want;
        th->busy = 1;
        pthread_mutex_unlock(&th->mu);
        int rc = iv2_loader_build(L, step, &th->slot[step % 2]);
        pthread_mutex_lock(&th->mu);
        th->busy = 0;
        th->want = -1;
        if (rc) { th->failed = 1; snprintf(th->err, sizeof th->err, "%s", iv2_errmsg()); }
        else th->built = step;
        pthread_cond_broadcast(&th->cv);
    }
    pthread_mutex_unlock(&th->mu);
    return NULL;
}

static int thread_start(iv2_loader *L) {
    struct iv2_loader_thread *th = iv2_calloc(1, sizeof *th);
    iv2_batch_alloc_for(&th->slot[0], L, iv2_dist_local_batch(L->cfg.batch), L->nv, L->be);
    iv2_batch_alloc_for(&th->slot[1], L, iv2_dist_local_batch(L->cfg.batch), L->nv, L->be);
    th->want = th->built = -1;
    pthread_mutex_init(&th->mu, NULL);
    pthread_cond_init(&th->cv, NULL);
    L->th = th;
    if (pthread_create(&th->tid, NULL, prefetch_main, L)) {
        iv2_batch_free(&th->slot[0]); iv2_batch_free(&th->slot[1]);
        free(th);
        L->th = NULL;
        return iv2_err("loader: cannot start the prefetch thread");
    }
    return 0;
}

int iv2_loader_next(iv2_loader *L, int64_t step, iv2_batch **out) {
    if (!L->th && thread_start(L)) return -1;
    struct iv2_loader_thread *th = L->th;
    pthread_mutex_lock(&th->mu);
    while (th->busy || th->want >= 0) pthread_cond_wait(&th->cv, &th->mu);   /* finish what was asked */
    if (th->failed) {
        th->failed = 0;
        pthread_mutex_unlock(&th->mu);
        return iv2_err("%s", th->err);
    }
    if (th->built != step) {   /* first call, or a jump (resume): build it here */
        pthread_mutex_unlock(&th->mu);
        if (iv2_loader_build(L, step, &th->slot[step % 2])) return -1;
        pthread_mutex_lock(&th->mu);
        th->built = step;
    }
    *out = &th->slot[step % 2];
    if (L->cfg.prefetch && (L->prefetch_end <= 0 || step + 1 < L->prefetch_end)) {
        th->want = step + 1;   /* the other slot */
        pthread_cond_broadcast(&th->cv);
    }
    pthread_mutex_unlock(&th->mu);
    return 0;
}
