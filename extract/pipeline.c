/* pipeline.c: manifest -> decode workers -> bounded queue -> teachers -> batched cache writes.
 *
 * Decoding runs ahead on worker threads, each taking whole rows (one open per row for its K
 * views) and pushing decoded views (or the row's error) into a queue of at most o->queue
 * items; the main thread runs the teachers on one view at a time (so a view's targets never
 * depend on what else is in flight), encodes the values to the storage dtype at once, and
 * commits a transaction every o->batch views (or 256 MiB). LMDB content is keyed, so the order
 * in which workers finish does not change what is stored. */
#include "pipeline.h"
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "cache.h"
#include "decode.h"
#include "err.h"
#include "log.h"
#include "manifest.h"
#include "sha256.h"
#include "teachers.h"

#define CLIP_FRAMES 16
#define STUDENT_FRAMES 8
#define BATCH_BYTES ((size_t)256 << 20)

void iv2_extract_opts_default(iv2_extract_opts *o) {
    memset(o, 0, sizeof *o);
    o->dtype = IV2_BF16;
    o->views = 1;
    o->shard_k = 0;
    o->shard_n = 1;
    o->device = "cpu";
    o->threads = 2;
    o->batch = 8;
}

/* ---------------------------------------------------------------- work and queue */

typedef struct work_row {
    const iv2_row *row;
    uint32_t need[64];   /* views still to do */
    int n_need;
    int left;            /* views not yet stored */
    int failed;
} work_row;

typedef struct item {
    int w;               /* index into work */
    int view;            /* -1: the row failed (reason) */
    uint8_t *rgb;        /* [16][size][size][3] */
    iv2_clip_record rec;
    char *reason;
} item;

typedef struct queue {
    pthread_mutex_t mu;
    pthread_cond_t not_full, not_empty;
    item *it;
    int cap, head, count;
    int next_work, n_work;
    int workers_left;
    int stop;
    double t_decode;
} queue;

typedef struct worker_ctx {
    queue *q;
    work_row *work;
    const iv2_extract_opts *o;
    iv2_sample_opts so;
} worker_ctx;

static int push(queue *q, item *x) {
    pthread_mutex_lock(&q->mu);
    while (q->count == q->cap && !q->stop) pthread_cond_wait(&q->not_full, &q->mu);
    if (q->stop) { pthread_mutex_unlock(&q->mu); return -1; }
    q->it[(q->head + q->count) % q->cap] = *x;
    q->count++;
    pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->mu);
    return 0;
}

/* 1 = got an item, 0 = all workers finished and the queue is empty */
static int pop(queue *q, item *x) {
    pthread_mutex_lock(&q->mu);
    while (q->count == 0 && q->workers_left > 0) pthread_cond_wait(&q->not_empty, &q->mu);
    if (q->count == 0) { pthread_mutex_unlock(&q->mu); return 0; }
    *x = q->it[q->head];
    q->head = (q->head + 1) % q->cap;
    q->count--;
    pthread_cond_signal(&q->not_full);
    pthread_mutex_unlock(&q->mu);
    return 1;
}

static void push_error(queue *q, int w, const char *msg) {
    item x = {w, -1, NULL, {0}, iv2_strdup(msg)};
    if (push(q, &x)) free(x.reason);
}

static void *worker_main(void *arg) {
    worker_ctx *wc = arg;
    queue *q = wc->q;
    const iv2_extract_opts *o = wc->o;
    size_t clip_bytes = (size_t)CLIP_FRAMES * wc->so.size * wc->so.size * 3;
    for (;;) {
        pthread_mutex_lock(&q->mu);
        int w = q->stop ? q->n_work : q->next_work++;
        pthread_mutex_unlock(&q->mu);
        if (w >= q->n_work) break;
        work_row *wr = &wc->work[w];
        const iv2_row *r = wr->row;
        double t0 = iv2_now();
        iv2_err_clear();
        iv2_video *v = iv2_video_open(r->video, &wc->so);
        if (!v) {
            pthread_mutex_lock(&q->mu); q->t_decode += iv2_now() - t0; pthread_mutex_unlock(&q->mu);
            push_error(q, w, iv2_errmsg());
            continue;
        }
        for (int i = 0; i < wr->n_need; i++) {
            item x = {w, (int)wr->need[i], iv2_malloc(clip_bytes), {0}, NULL};
            if (i) t0 = iv2_now();
            int rc = iv2_video_sample(v, r->start, r->end, r->source, o->seed, r->index, x.view, &wc->so, x.rgb, &x.rec);
            pthread_mutex_lock(&q->mu); q->t_decode += iv2_now() - t0; pthread_mutex_unlock(&q->mu);
            if (rc) {
                free(x.rgb);
                push_error(q, w, iv2_errmsg());
                break;
            }
            if (push(q, &x)) { free(x.rgb); break; }
        }
        iv2_video_close(v);
    }
    pthread_mutex_lock(&q->mu);
    q->workers_left--;
    pthread_cond_broadcast(&q->not_empty);
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* ---------------------------------------------------------------- meta */

/* The memory plan of each teacher on this backend, printed once at start. */
static void print_memory_plan(const iv2_teachers *ts, const iv2_backend *be) {
    char line[256];
    if (ts->ivit) {
        const iv2_vit *m = ts->ivit;
        int batch = m->batch > 0 ? m->batch : 8;
        iv2_vit_plan p = iv2_vit_memory_plan(&m->cfg, be->esize, batch, iv2_vit_tokens(&m->cfg), ts->n_ivit_blocks, 0);
        iv2_vit_plan_str(&p, line, sizeof line);
        iv2_info("memory plan, InternViT on %s: %s", be->name, line);
    }
    if (ts->mae) {
        const iv2_vit *m = ts->mae;
        iv2_vit_plan p = iv2_vit_memory_plan(&m->cfg, be->esize, 1, iv2_vit_tokens(&m->cfg), ts->n_mae_blocks, 0);
        iv2_vit_plan_str(&p, line, sizeof line);
        iv2_info("memory plan, VideoMAE on %s: %s", be->name, line);
    }
}

static char *build_meta(const iv2_extract_opts *o, const iv2_teachers *ts, const iv2_manifest *m, const iv2_backend *be,
                        const iv2_sample_opts *so) {
    size_t cap = 65536;
    char *buf = iv2_malloc(cap), esc[4200], sha[65];
    iv2_sha256_hex(m->sha256, sha);
    char *teachers = iv2_teachers_meta_json(ts);
    int n = snprintf(buf, cap,
                     "{\"format\":%d,\"tool_version\":\"%s\",\"created\":%.0f,\"teachers\":%s,"
                     "\"sampling\":{\"num_frames\":%d,\"size\":%d,\"student_frames\":[0,2,4,6,8,10,12,14],"
                     "\"frames\":\"%s\",\"crop\":\"%s\",\"flip\":%d,\"resize\":\"bilinear\",\"stream\":%d,"
                     "\"mean\":[0.485,0.456,0.406],\"std\":[0.229,0.224,0.225]},"
                     "\"seed\":%llu,\"views\":%d,\"compute\":{\"dtype\":\"%s\"},\"device\":\"%s\",\"threads\":%d,",
                     IV2_CACHE_FORMAT, IV2_EXTRACT_VERSION, iv2_wall(), teachers, so->num_frames, so->size,
                     so->deterministic ? "segment middle" : "random in segment",
                     so->deterministic ? "centre square of the short side" : "multiscale 1,.875,.75,.66, 13 offsets",
                     so->deterministic ? 0 : so->flip, so->stream, (unsigned long long)o->seed, o->views,
                     iv2_dtype_name(be->dtype), o->device, o->threads);
    free(teachers);
    n += snprintf(buf + n, cap - (size_t)n, "\"targets\":[");
    for (int i = 0; i < ts->n_targets; i++) {
        const iv2_cache_target *t = &ts->targets[i];
        const char *dt = t->dtype == IV2_BF16 ? "bf16" : t->dtype == IV2_F16 ? "fp16" : t->dtype == IV2_I8 ? "int8" : "fp32";
        n += snprintf(buf + n, cap - (size_t)n,
                      "%s{\"name\":\"%s\",\"teacher\":\"%s\",\"kind\":\"%s\",\"block\":%d,\"tokens\":%d,\"dim\":%d,"
                      "\"dtype\":\"%s\",\"post\":\"%s\"}",
                      i ? "," : "", t->name, t->teacher, t->kind, t->block, t->tokens, t->dim, dt, t->post);
    }
    n += snprintf(buf + n, cap - (size_t)n, "],\"manifest_path\":\"%s\",\"manifest_sha256\":\"%s\",\"manifest_rows\":%lld,",
                  iv2_json_escape(esc, sizeof esc, m->path), sha, (long long)m->n_rows);
    n += snprintf(buf + n, cap - (size_t)n, "\"paths\":{\"internvit\":\"%s\",", iv2_json_escape(esc, sizeof esc, o->internvit ? o->internvit : ""));
    n += snprintf(buf + n, cap - (size_t)n, "\"videomae\":\"%s\"},", iv2_json_escape(esc, sizeof esc, o->videomae ? o->videomae : ""));
    snprintf(buf + n, cap - (size_t)n, "\"shard\":{\"k\":%d,\"n\":%d}}", o->shard_k, o->shard_n);
    return buf;
}

/* ---------------------------------------------------------------- the run */

static int cmp_key(const void *a, const void *b) {
    const iv2_cache_key *x = a, *y = b;
    if (x->row != y->row) return x->row < y->row ? -1 : 1;
    return x->view < y->view ? -1 : x->view > y->view;
}

typedef struct err_rows { int64_t *rows; int64_t n, cap; } err_rows;
static int collect_err(void *ctx, int64_t row, const char *reason) {
    err_rows *e = ctx;
    (void)reason;
    if (e->n == e->cap) { e->cap = e->cap ? 2 * e->cap : 64; e->rows = iv2_realloc(e->rows, (size_t)e->cap * sizeof *e->rows); }
    e->rows[e->n++] = row;
    return 0;
}
static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* one pending write: a view's frames and encoded values, or an error */
typedef struct pending {
    iv2_cache_entry e[64];
    void *enc[64][IV2_CACHE_MAX_TARGETS];
    uint8_t *frames[64];
    int n;
    size_t bytes;
    int64_t err_row[256];
    char *err_reason[256];
    int n_err;
    int work_of_view[64], work_of_err[256];
} pending;

static void pending_clear(pending *p, int n_targets) {
    for (int i = 0; i < p->n; i++) {
        free(p->frames[i]);
        for (int t = 0; t < n_targets; t++) free(p->enc[i][t]);
    }
    for (int i = 0; i < p->n_err; i++) free(p->err_reason[i]);
    p->n = p->n_err = 0;
    p->bytes = 0;
}

/* storage error of a target, measured on a sample of views: cosine of stored vs fp32 tokens */
typedef struct qstat {
    double sum, worst;
    int64_t n;
} qstat;

static void measure_storage(const iv2_cache_target *t, const void *enc, const float *ref, float *tmp, qstat *q) {
    if (iv2_cache_decode_value(t, enc, IV2_CACHE_VALUE_HDR + iv2_cache_target_bytes(t), tmp)) return;
    for (int r = 0; r < t->tokens; r++) {
        const float *a = tmp + (size_t)r * t->dim, *b = ref + (size_t)r * t->dim;
        double ab = 0, aa = 0, bb = 0;
        for (int j = 0; j < t->dim; j++) { ab += (double)a[j] * b[j]; aa += (double)a[j] * a[j]; bb += (double)b[j] * b[j]; }
        double c = (aa == 0 && bb == 0) ? 1 : (aa == 0 || bb == 0) ? 0 : ab / sqrt(aa * bb);
        if (!q->n || c < q->worst) q->worst = c;
        q->sum += c;
        q->n++;
    }
}

typedef struct run_state {
    const iv2_extract_opts *o;
    iv2_cache *cache;
    iv2_teachers ts;
    work_row *work;
    iv2_extract_stats *st;
    iv2_metrics metrics;
    iv2_progress prog;
    size_t view_bytes;
    qstat q[IV2_CACHE_MAX_TARGETS];
    float *qtmp;
} run_state;

static int flush(run_state *rs, pending *p) {
    if (!p->n && !p->n_err) return 0;
    double t0 = iv2_now();
    const char *reasons[256];
    for (int i = 0; i < p->n_err; i++) reasons[i] = p->err_reason[i];
    int rc = iv2_cache_put(rs->cache, p->e, p->n, p->err_row, reasons, p->n_err);
    rs->st->t_write += iv2_now() - t0;
    if (rc) { pending_clear(p, rs->ts.n_targets); return -1; }
    for (int i = 0; i < p->n; i++) {
        work_row *w = &rs->work[p->work_of_view[i]];
        rs->st->views_done++;
        if (--w->left == 0 && !w->failed) rs->st->rows_done++;
    }
    for (int i = 0; i < p->n_err; i++) {
        work_row *w = &rs->work[p->work_of_err[i]];
        iv2_warn("%s: row %lld (%s): %s", rs->o->manifest, (long long)w->row->index, w->row->video, p->err_reason[i]);
        rs->st->rows_failed++;
    }
    double el = iv2_now() - rs->prog.t0;
    iv2_metrics_write(&rs->metrics, "write",
                      "\"views\":%lld,\"rows_done\":%lld,\"rows_failed\":%lld,\"batch_views\":%d,\"batch_errors\":%d,"
                      "\"views_per_s\":%.4g,\"t_decode\":%.4g,\"t_teachers\":%.4g,\"t_write\":%.4g",
                      (long long)rs->st->views_done, (long long)rs->st->rows_done, (long long)rs->st->rows_failed, p->n,
                      p->n_err, el > 0 ? rs->st->views_done / el : 0.0, rs->st->t_decode, rs->st->t_teachers, rs->st->t_write);
    iv2_progress_update(&rs->prog, rs->st->views_done, NULL);
    pending_clear(p, rs->ts.n_targets);
    return 0;
}

static void record_to_view(const item *x, int64_t row, iv2_cache_view *v) {
    memset(v, 0, sizeof *v);
    v->row = row;
    v->view = (uint32_t)x->view;
    v->num_frames = x->rec.num_frames;
    for (int i = 0; i < x->rec.num_frames && i < IV2_CACHE_MAX_FRAMES; i++) { v->frame[i] = x->rec.frame[i]; v->pts[i] = x->rec.pts[i]; }
    v->span_first = x->rec.span_first;
    v->span_frames = x->rec.span_frames;
    v->stream = x->rec.stream;
    v->src_w = x->rec.src_w;
    v->src_h = x->rec.src_h;
    v->crop_x = x->rec.crop_x; v->crop_y = x->rec.crop_y; v->crop_w = x->rec.crop_w; v->crop_h = x->rec.crop_h;
    v->flip = x->rec.flip;
    v->size = x->rec.size;
    v->n_student = STUDENT_FRAMES;
    v->deterministic = x->rec.deterministic;
}

static int check_opts(const iv2_extract_opts *o) {
    if (!o->manifest) return iv2_err("--manifest is required");
    if (!o->cache) return iv2_err("--cache is required");
    if (!o->internvit && !o->videomae) return iv2_err("give at least one --teacher (internvit=... or videomae=...)");
    if (o->views < 1 || o->views > 64) return iv2_err("--views %d: want 1..64", o->views);
    if (o->shard_n < 1 || o->shard_k < 0 || o->shard_k >= o->shard_n) return iv2_err("--shard %d/%d: want k/N with 0 <= k < N", o->shard_k, o->shard_n);
    if (o->threads < 1 || o->threads > 256) return iv2_err("--threads %d: want 1..256", o->threads);
    if (o->batch < 1 || o->batch > 64) return iv2_err("--batch %d: want 1..64", o->batch);
    return 0;
}

int iv2_extract_run(const iv2_extract_opts *o, iv2_extract_stats *st) {
    memset(st, 0, sizeof *st);
    if (check_opts(o)) return -1;
    double t_start = iv2_now();
    int ret = -1;
    run_state rs;
    memset(&rs, 0, sizeof rs);
    rs.o = o;
    rs.st = st;
    iv2_manifest m;
    memset(&m, 0, sizeof m);
    iv2_backend *be = NULL;
    char *meta = NULL;
    iv2_cache_key *done = NULL;
    int64_t n_done = 0;
    err_rows er = {0};
    pending *p = NULL;
    queue q;
    memset(&q, 0, sizeof q);
    pthread_t *tid = NULL;
    worker_ctx wc;
    int started = 0;

    if (iv2_manifest_load(&m, o->manifest)) goto out;
    static const uint8_t zero[32];
    if (!memcmp(m.sha256, zero, 32) && iv2_sha256_file(o->manifest, m.sha256)) goto out;
    /* CPU compute threads: by default the cores the decode workers leave free (OpenMP threads
     * that spin beside busy decoders slow the teachers down many times over) */
    int ct = o->compute_threads;
    if (ct <= 0) {
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        ct = nc > o->threads + 1 ? (int)nc - o->threads : 1;
    }
    be = iv2_backend_create(o->device, ct);
    if (!be) { iv2_err_ctx("--device %s", o->device); goto out; }
    if (o->internvit && iv2_teachers_load(&rs.ts, be, "internvit", o->internvit)) goto out;
    if (o->videomae && iv2_teachers_load(&rs.ts, be, "videomae", o->videomae)) goto out;
    if (iv2_teachers_set_targets(&rs.ts, o->targets, o->dtype)) goto out;
    print_memory_plan(&rs.ts, be);

    iv2_sample_opts so;
    iv2_sample_opts_default(&so);
    so.num_frames = CLIP_FRAMES;
    so.size = rs.ts.ivit ? rs.ts.ivit->cfg.img : rs.ts.mae->cfg.img;
    so.deterministic = o->deterministic;
    so.flip = !o->no_flip;
    so.threads = 1;
    meta = build_meta(o, &rs.ts, &m, be, &so);
    if (iv2_cache_open(&rs.cache, o->cache, IV2_CACHE_RDWR)) goto out;
    if (iv2_cache_set_meta(rs.cache, meta)) goto out;

    /* what is left to do */
    if (iv2_cache_list_views(rs.cache, &done, &n_done)) goto out;
    qsort(done, (size_t)n_done, sizeof *done, cmp_key);
    if (iv2_cache_each_error(rs.cache, collect_err, &er)) goto out;
    qsort(er.rows, (size_t)er.n, sizeof *er.rows, cmp_i64);
    rs.work = iv2_calloc((size_t)m.n_rows + 1, sizeof *rs.work);
    int n_work = 0;
    int64_t total_views = 0;
    for (int64_t i = 0; i < m.n_rows; i++) {
        const iv2_row *r = &m.rows[i];
        if (r->index % o->shard_n != o->shard_k) continue;
        if (!o->retry_errors && bsearch(&r->index, er.rows, (size_t)er.n, sizeof *er.rows, cmp_i64)) { st->rows_skipped++; continue; }
        work_row *w = &rs.work[n_work];
        w->row = r;
        for (int v = 0; v < o->views; v++) {
            iv2_cache_key k = {r->index, (uint32_t)v};
            if (!bsearch(&k, done, (size_t)n_done, sizeof *done, cmp_key)) w->need[w->n_need++] = (uint32_t)v;
        }
        if (!w->n_need) { st->rows_skipped++; continue; }
        if (o->max_views > 0 && total_views >= o->max_views) break;
        w->left = w->n_need;
        total_views += w->n_need;
        n_work++;
    }
    if (iv2_metrics_open(&rs.metrics, o->metrics)) goto out;
    iv2_progress_start(&rs.prog, "views", total_views, 0);
    for (int i = 0; i < rs.ts.n_targets; i++) rs.view_bytes += IV2_CACHE_VALUE_HDR + iv2_cache_target_bytes(&rs.ts.targets[i]);
    rs.view_bytes += IV2_CACHE_VIEW_HDR + (size_t)STUDENT_FRAMES * so.size * so.size * 3;
    iv2_info("%s: %d rows to do (%lld views), %lld skipped; %d targets, %.2f MB per view", o->cache, n_work,
             (long long)total_views, (long long)st->rows_skipped, rs.ts.n_targets, rs.view_bytes / 1e6);

    /* decode workers */
    pthread_mutex_init(&q.mu, NULL);
    pthread_cond_init(&q.not_full, NULL);
    pthread_cond_init(&q.not_empty, NULL);
    q.cap = o->queue > 0 ? o->queue : 2 * o->threads;
    q.it = iv2_calloc((size_t)q.cap, sizeof *q.it);
    q.n_work = n_work;
    q.workers_left = o->threads;
    wc.q = &q; wc.work = rs.work; wc.o = o; wc.so = so;
    tid = iv2_calloc((size_t)o->threads, sizeof *tid);
    for (int i = 0; i < o->threads; i++) {
        if (pthread_create(&tid[i], NULL, worker_main, &wc)) iv2_panic("cannot start decode thread");
        started++;
    }

    p = iv2_calloc(1, sizeof *p);
    size_t fb = (size_t)so.size * so.size * 3;
    int fatal = 0;
    item x;
    int64_t views_taken = 0;
    while (!fatal && pop(&q, &x)) {
        work_row *w = &rs.work[x.w];
        if (x.view < 0) {
            if (!w->failed) {
                w->failed = 1;
                p->err_row[p->n_err] = w->row->index;
                p->err_reason[p->n_err] = x.reason;
                p->work_of_err[p->n_err++] = x.w;
            } else free(x.reason);
        } else {
            double t0 = iv2_now();
            int rc = iv2_teachers_run(&rs.ts, x.rgb);
            st->t_teachers += iv2_now() - t0;
            if (rc) {
                /* a teacher failure is not the row's fault: stop */
                iv2_err_ctx("row %lld view %d", (long long)w->row->index, x.view);
                free(x.rgb);
                fatal = 1;
                break;
            }
            int i = p->n;
            iv2_cache_entry *e = &p->e[i];
            memset(e, 0, sizeof *e);
            record_to_view(&x, w->row->index, &e->view);
            p->frames[i] = iv2_malloc(STUDENT_FRAMES * fb);
            for (int f = 0; f < STUDENT_FRAMES; f++) memcpy(p->frames[i] + f * fb, x.rgb + (size_t)(2 * f) * fb, fb);
            free(x.rgb);
            e->frames = p->frames[i];
            for (int t = 0; t < rs.ts.n_targets; t++) {
                size_t nb = IV2_CACHE_VALUE_HDR + iv2_cache_target_bytes(&rs.ts.targets[t]);
                p->enc[i][t] = iv2_malloc(nb);
                iv2_cache_encode_value(&rs.ts.targets[t], rs.ts.values[t], p->enc[i][t]);
                /* storage error on every 8th view (the summary and metrics report it) */
                if (views_taken % 8 == 0 && rs.ts.targets[t].dtype != IV2_F32) {
                    const iv2_cache_target *tg = &rs.ts.targets[t];
                    rs.qtmp = iv2_realloc(rs.qtmp, sizeof(float) * (size_t)tg->tokens * tg->dim);
                    measure_storage(tg, p->enc[i][t], rs.ts.values[t], rs.qtmp, &rs.q[t]);
                }
            }
            e->encoded = (const void *const *)p->enc[i];
            p->work_of_view[i] = x.w;
            p->n++;
            p->bytes += rs.view_bytes;
            views_taken++;
        }
        if (p->n >= o->batch || p->bytes >= BATCH_BYTES || p->n_err >= 256 || p->n >= 64) {
            if (flush(&rs, p)) { fatal = 1; break; }
        }
    }
    if (!fatal && flush(&rs, p)) fatal = 1;
    ret = fatal ? -1 : 0;

out:
    if (started) {
        char keep[1024];
        snprintf(keep, sizeof keep, "%s", iv2_errmsg());
        pthread_mutex_lock(&q.mu);
        q.stop = 1;
        pthread_cond_broadcast(&q.not_full);
        pthread_mutex_unlock(&q.mu);
        for (int i = 0; i < started; i++) pthread_join(tid[i], NULL);
        /* drain what the workers left */
        while (q.count) {
            item y = q.it[q.head];
            q.head = (q.head + 1) % q.cap;
            q.count--;
            free(y.rgb);
            free(y.reason);
        }
        pthread_mutex_destroy(&q.mu);
        pthread_cond_destroy(&q.not_full);
        pthread_cond_destroy(&q.not_empty);
        if (ret) iv2_err("%s", keep);
    }
    st->t_decode = q.t_decode;
    st->seconds = iv2_now() - t_start;
    st->bytes_per_view = (double)rs.view_bytes;
    if (ret == 0) {
        char extra[256];
        snprintf(extra, sizeof extra, "rows done %lld, failed %lld, skipped %lld", (long long)st->rows_done,
                 (long long)st->rows_failed, (long long)st->rows_skipped);
        iv2_progress_end(&rs.prog, extra);
        double vps = st->seconds > 0 ? st->views_done / st->seconds : 0;
        iv2_info("%s: rows done %lld, failed %lld, skipped %lld; views %lld; %.3f MB/view; %.3g views/s "
                 "(decode %.2f s on %d threads, teachers %.2f s, write %.2f s)",
                 o->cache, (long long)st->rows_done, (long long)st->rows_failed, (long long)st->rows_skipped,
                 (long long)st->views_done, st->bytes_per_view / 1e6, vps, st->t_decode, o->threads, st->t_teachers,
                 st->t_write);
        iv2_metrics_write(&rs.metrics, "summary",
                          "\"rows_done\":%lld,\"rows_failed\":%lld,\"rows_skipped\":%lld,\"views\":%lld,"
                          "\"bytes_per_view\":%.0f,\"views_per_s\":%.4g,\"seconds\":%.4g,\"t_decode\":%.4g,"
                          "\"t_teachers\":%.4g,\"t_write\":%.4g",
                          (long long)st->rows_done, (long long)st->rows_failed, (long long)st->rows_skipped,
                          (long long)st->views_done, st->bytes_per_view, vps, st->seconds, st->t_decode,
                          st->t_teachers, st->t_write);
    }
    if (ret == 0)
        for (int t = 0; t < rs.ts.n_targets; t++) {
            if (!rs.q[t].n) continue;
            const iv2_cache_target *tg = &rs.ts.targets[t];
            iv2_info("storage error %s (%s): mean cosine %.7f, worst %.7f over %lld tokens", tg->name,
                     iv2_dtype_name(tg->dtype), rs.q[t].sum / rs.q[t].n, rs.q[t].worst, (long long)rs.q[t].n);
            iv2_metrics_write(&rs.metrics, "storage", "\"target\":\"%s\",\"dtype\":\"%s\",\"mean_cos\":%.9f,\"worst_cos\":%.9f,\"tokens\":%lld",
                              tg->name, iv2_dtype_name(tg->dtype), rs.q[t].sum / rs.q[t].n, rs.q[t].worst, (long long)rs.q[t].n);
        }
    free(rs.qtmp);
    if (p) { pending_clear(p, rs.ts.n_targets); free(p); }
    free(q.it);
    free(tid);
    free(done);
    free(er.rows);
    free(rs.work);
    free(meta);
    {
        char keep[1024];
        snprintf(keep, sizeof keep, "%s", iv2_errmsg());
        iv2_cache_close(rs.cache);
        iv2_metrics_close(&rs.metrics);
        iv2_teachers_free(&rs.ts);
        if (be) iv2_backend_destroy(be);
        iv2_manifest_free(&m);
        if (ret) iv2_err("%s", keep);
    }
    return ret;
}
