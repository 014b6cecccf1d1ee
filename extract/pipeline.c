/* pipeline.c: manifest -> decode workers -> bounded queue -> device threads (teachers on
 * batches of views) -> bounded queue -> writer (batched cache transactions).
 *
 * Decoding runs ahead on worker threads, each taking whole rows (one open per row for its K
 * views) and pushing decoded views (or the row's error) into a queue of at most o->queue
 * items. One thread per device (--devices cpu,cpu or cuda:0,cuda:1,...) creates its backend,
 * loads its own copy of the teachers, then pulls up to batch_views views at a time, runs them
 * through the teachers in one call, post-processes each view's targets, downloads them without
 * waiting (into one of two host blocks), and, while the device computes the next batch, encodes
 * the previous batch's targets to the storage dtype and hands each finished view to the writer
 * through a second bounded queue. The
 * writer (the calling thread, the only one that touches LMDB) commits a transaction every
 * o->batch views (or 256 MiB) while the devices work on the next batch. A view's targets do
 * not depend on the batch it ran in (teachers.h) and LMDB content is keyed, so neither the
 * order in which workers and devices finish nor the batching changes what is stored. */
#include "pipeline.h"
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cjson/cJSON.h>
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
    o->batch_views = 0;
    o->time_limit = 60;
}

/* ---------------------------------------------------------------- bounded queues */

/* A bounded FIFO of fixed-size items between threads. Producers block while it is full,
 * consumers while it is empty and producers are still running; stop wakes everyone and makes
 * both sides return at once. The mutex also guards what an owner keeps beside the ring. */
typedef struct ring {
    pthread_mutex_t mu;
    pthread_cond_t not_full, not_empty;
    char *buf;
    size_t isz;
    int cap, head, count;
    int producers;             /* producers still running */
    int stop;
} ring;

static void ring_init(ring *r) {
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->not_full, NULL);
    pthread_cond_init(&r->not_empty, NULL);
}

static void ring_alloc(ring *r, int cap, size_t isz) {
    r->cap = cap;
    r->isz = isz;
    r->buf = iv2_calloc((size_t)cap, isz);
}

static void ring_destroy(ring *r) {
    free(r->buf);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->not_full);
    pthread_cond_destroy(&r->not_empty);
}

/* 0 = queued, -1 = the run stops (the item stays the caller's) */
static int ring_push(ring *r, const void *x) {
    pthread_mutex_lock(&r->mu);
    while (r->count == r->cap && !r->stop) pthread_cond_wait(&r->not_full, &r->mu);
    if (r->stop) { pthread_mutex_unlock(&r->mu); return -1; }
    memcpy(r->buf + (size_t)((r->head + r->count) % r->cap) * r->isz, x, r->isz);
    r->count++;
    pthread_cond_signal(&r->not_empty);
    pthread_mutex_unlock(&r->mu);
    return 0;
}

/* take the oldest item without waiting (caller holds the lock, or every thread is gone) */
static int ring_take(ring *r, void *x) {
    if (r->count == 0) return 0;
    memcpy(x, r->buf + (size_t)r->head * r->isz, r->isz);
    r->head = (r->head + 1) % r->cap;
    r->count--;
    return 1;
}

/* 1 = got an item, 0 = every producer finished and the ring is empty, or the run stops */
static int ring_pop(ring *r, void *x) {
    pthread_mutex_lock(&r->mu);
    while (r->count == 0 && r->producers > 0 && !r->stop) pthread_cond_wait(&r->not_empty, &r->mu);
    int got = !r->stop && ring_take(r, x);
    if (got) pthread_cond_signal(&r->not_full);
    pthread_mutex_unlock(&r->mu);
    return got;
}

static void ring_add_producers(ring *r, int n) {
    pthread_mutex_lock(&r->mu);
    r->producers += n;
    if (r->producers <= 0) pthread_cond_broadcast(&r->not_empty);
    pthread_mutex_unlock(&r->mu);
}

static void ring_stop(ring *r) {
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_cond_broadcast(&r->not_full);
    pthread_cond_broadcast(&r->not_empty);
    pthread_mutex_unlock(&r->mu);
}

static int ring_stopped(ring *r) {
    pthread_mutex_lock(&r->mu);
    int s = r->stop;
    pthread_mutex_unlock(&r->mu);
    return s;
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

/* decoded views on their way to the devices; the ring's mutex also guards next_work, t_decode */
typedef struct queue {
    ring r;                    /* of item; producers = decode workers */
    int next_work, n_work;
    double t_decode;
    int64_t stand_in_views;    /* views in which undecodable frames were stood in for */
} queue;

typedef struct worker_ctx {
    queue *q;
    work_row *work;
    const iv2_extract_opts *o;
    iv2_sample_opts so;
} worker_ctx;

/* A decode worker's place. The time limit reaches FFmpeg's reads through its interrupt callback,
 * but a read() that blocks in the kernel (a hung network mount) never returns to it; the
 * watchdog then gives up on the worker: it records the row's error, starts another worker in its
 * place, and leaves this one detached. A worker given up on touches nothing shared when its read
 * returns (the run may be over): it checks its own slot, frees what it holds and ends. Its slot
 * is then never freed (a few bytes). */
typedef struct worker_slot {
    pthread_t tid;
    worker_ctx *wc;
    pthread_mutex_t mu;   /* guards the three below */
    int w;                /* the row in hand */
    double io_since;      /* 0: not in an open or a read; else when it started (iv2_now) */
    int gone;             /* given up on by the watchdog */
    const char *test_stall;   /* IV2_TEST_STALL: a row whose video path has it blocks in its open (tests) */
} worker_slot;

/* the slot's open or read starts (0), ends (1 when the worker was given up on meanwhile) */
static void io_begin(worker_slot *s, int w) {
    pthread_mutex_lock(&s->mu);
    s->w = w;
    s->io_since = iv2_now();
    pthread_mutex_unlock(&s->mu);
}
static int io_end(worker_slot *s) {
    pthread_mutex_lock(&s->mu);
    s->io_since = 0;
    int gone = s->gone;
    pthread_mutex_unlock(&s->mu);
    return gone;
}

static void push_error(queue *q, int w, const char *msg) {
    item x = {w, -1, NULL, {0}, iv2_strdup(msg)};
    if (ring_push(&q->r, &x)) free(x.reason);
}

static void *worker_main(void *arg) {
    worker_slot *slot = arg;
    worker_ctx *wc = slot->wc;
    queue *q = wc->q;
    const iv2_extract_opts *o = wc->o;
    size_t clip_bytes = (size_t)CLIP_FRAMES * wc->so.size * wc->so.size * 3;
    for (;;) {
        pthread_mutex_lock(&q->r.mu);
        int w = q->r.stop ? q->n_work : q->next_work++;
        pthread_mutex_unlock(&q->r.mu);
        if (w >= q->n_work) break;
        work_row *wr = &wc->work[w];
        const iv2_row *r = wr->row;
        double t0 = iv2_now();
        iv2_err_clear();
        iv2_sample_opts so = wc->so;
        if (r->stream >= 0) so.stream = r->stream;   /* the row names its stream */
        /* what the worker needs after a read is copied first: a worker given up on reads nothing shared */
        double start = r->start, end = r->end;
        char source[64];
        snprintf(source, sizeof source, "%s", r->source);
        uint64_t seed = o->seed;
        int64_t index = r->index;
        io_begin(slot, w);
        if (slot->test_stall && strstr(r->video, slot->test_stall)) sleep(3600);
        iv2_video *v = iv2_video_open(r->video, &so);
        if (io_end(slot)) { iv2_video_close(v); return NULL; }
        if (!v) {
            pthread_mutex_lock(&q->r.mu); q->t_decode += iv2_now() - t0; pthread_mutex_unlock(&q->r.mu);
            push_error(q, w, iv2_errmsg());
            continue;
        }
        for (int i = 0; i < wr->n_need; i++) {
            item x = {w, (int)wr->need[i], iv2_malloc(clip_bytes), {0}, NULL};
            if (i) t0 = iv2_now();
            io_begin(slot, w);
            int rc = iv2_video_sample(v, start, end, source, seed, index, x.view, &so, x.rgb, &x.rec);
            if (io_end(slot)) { free(x.rgb); iv2_video_close(v); return NULL; }
            pthread_mutex_lock(&q->r.mu); q->t_decode += iv2_now() - t0; pthread_mutex_unlock(&q->r.mu);
            if (rc) {
                free(x.rgb);
                push_error(q, w, iv2_errmsg());
                break;
            }
            if (x.rec.stand_ins) {   /* a damaged file: stored, but said */
                iv2_warn("%s:%d: row %lld view %d: %d of %d frames could not be decoded (a damaged file?); the next "
                         "decodable frames stand in", o->manifest, r->line, (long long)index, x.view, x.rec.stand_ins,
                         x.rec.num_frames);
                pthread_mutex_lock(&q->r.mu); q->stand_in_views++; pthread_mutex_unlock(&q->r.mu);
            }
            if (ring_push(&q->r, &x)) { free(x.rgb); break; }
        }
        iv2_video_close(v);
    }
    ring_add_producers(&q->r, -1);
    return NULL;
}

/* The workers and their watchdog. A worker in one open or read for longer than the time limit
 * allows (stall_after seconds: the limit, which FFmpeg's own checks enforce, plus a margin for
 * them to act) is given up on, as worker_slot says. */
typedef struct workers {
    worker_ctx *wc;
    worker_slot **slot;   /* every slot started; the ones given up on stay (gone) */
    int n, cap;
    double stall_after;   /* seconds; 0: no watchdog (no time limit) */
    pthread_t watch;
    int watching;
    pthread_mutex_t mu;   /* guards stop */
    pthread_cond_t cv;
    int stop;
} workers;

static int worker_start(workers *ws) {
    worker_slot *s = iv2_calloc(1, sizeof *s);
    s->wc = ws->wc;
    pthread_mutex_init(&s->mu, NULL);
    s->test_stall = getenv("IV2_TEST_STALL");
    if (s->test_stall && !*s->test_stall) s->test_stall = NULL;
    if (pthread_create(&s->tid, NULL, worker_main, s)) { pthread_mutex_destroy(&s->mu); free(s); return -1; }
    if (ws->n == ws->cap) {
        ws->cap = ws->cap ? 2 * ws->cap : 8;
        ws->slot = iv2_realloc(ws->slot, (size_t)ws->cap * sizeof *ws->slot);
    }
    ws->slot[ws->n++] = s;
    return 0;
}

static void *watchdog_main(void *arg) {
    workers *ws = arg;
    queue *q = ws->wc->q;
    pthread_mutex_lock(&ws->mu);
    while (!ws->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 250 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
        pthread_cond_timedwait(&ws->cv, &ws->mu, &ts);
        if (ws->stop) break;
        double now = iv2_now();
        for (int i = 0; i < ws->n; i++) {
            worker_slot *s = ws->slot[i];
            pthread_mutex_lock(&s->mu);
            int stuck = !s->gone && s->io_since > 0 && now - s->io_since > ws->stall_after, w = s->w;
            if (stuck) s->gone = 1;
            pthread_mutex_unlock(&s->mu);
            if (!stuck) continue;
            pthread_detach(s->tid);
            char msg[4200];
            snprintf(msg, sizeof msg, "%s: no progress for %.3g s in one read (past the time limit: a hung mount or "
                     "device?); the worker reading it was left behind", ws->wc->work[w].row->video, ws->stall_after);
            push_error(q, w, msg);
            /* its place in the producers' count passes to the new worker */
            if (worker_start(ws)) ring_add_producers(&q->r, -1);
        }
    }
    pthread_mutex_unlock(&ws->mu);
    return NULL;
}

/* n workers; with a time limit, the watchdog */
static int workers_start(workers *ws, worker_ctx *wc, int n, double time_limit) {
    memset(ws, 0, sizeof *ws);
    ws->wc = wc;
    pthread_mutex_init(&ws->mu, NULL);
    pthread_cond_init(&ws->cv, NULL);
    ws->stall_after = time_limit > 0 ? time_limit * 1.5 + 1 : 0;
    for (int i = 0; i < n; i++)
        if (worker_start(ws)) return iv2_err("cannot start a decode thread");
    if (ws->stall_after > 0) {
        if (pthread_create(&ws->watch, NULL, watchdog_main, ws)) return iv2_err("cannot start the decode watchdog");
        ws->watching = 1;
    }
    return 0;
}

/* the watchdog first (no new worker after this), then every worker not given up on */
static void workers_join(workers *ws) {
    if (ws->watching) {
        pthread_mutex_lock(&ws->mu);
        ws->stop = 1;
        pthread_cond_signal(&ws->cv);
        pthread_mutex_unlock(&ws->mu);
        pthread_join(ws->watch, NULL);
    }
    for (int i = 0; i < ws->n; i++) {
        worker_slot *s = ws->slot[i];
        if (s->gone) continue;   /* detached; its slot outlives the run */
        pthread_join(s->tid, NULL);
        pthread_mutex_destroy(&s->mu);
        free(s);
    }
    free(ws->slot);
    pthread_mutex_destroy(&ws->mu);
    pthread_cond_destroy(&ws->cv);
    memset(ws, 0, sizeof *ws);
}

/* ---------------------------------------------------------------- meta */

static char *build_meta(const iv2_extract_opts *o, const iv2_teachers *ts, const iv2_manifest *m, const iv2_backend *be,
                        const iv2_sample_opts *so) {
    size_t cap = 65536;
    char *buf = iv2_malloc(cap), esc[8200], sha[65];   /* esc: a PATH_MAX path, quotes and backslashes doubled */
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
                     iv2_dtype_name(be->dtype), iv2_json_escape(esc, sizeof esc, o->device), o->threads);
    free(teachers);
    n = (int)iv2_cache_targets_json(buf, cap, (size_t)n, ts->targets, ts->n_targets);
    struct stat ms;
    long long mbytes = stat(m->path, &ms) == 0 ? (long long)ms.st_size : -1;
    n += snprintf(buf + n, cap - (size_t)n, ",\"manifest_path\":\"%s\",\"manifest_sha256\":\"%s\",\"manifest_rows\":%lld,"
                  "\"manifest_bytes\":%lld,", iv2_json_escape(esc, sizeof esc, m->path), sha, (long long)m->n_rows, mbytes);
    n += snprintf(buf + n, cap - (size_t)n, "\"paths\":{\"internvit\":\"%s\",", iv2_json_escape(esc, sizeof esc, o->internvit ? o->internvit : ""));
    n += snprintf(buf + n, cap - (size_t)n, "\"videomae\":\"%s\"},", iv2_json_escape(esc, sizeof esc, o->videomae ? o->videomae : ""));
    snprintf(buf + n, cap - (size_t)n, "\"shard\":{\"k\":%d,\"n\":%d}}", o->shard_k, o->shard_n);
    return buf;
}

/* ---------------------------------------------------------------- helpers */

/* The corpus grew: the cache's manifest (old_meta: its sha256, rows and bytes) is the start of
 * this one, byte for byte, so every stored row keeps its index and only appended rows are new.
 * 1 yes, 0 no (any other change, or a meta from before manifest_bytes was recorded). */
static int manifest_grew(const char *old_meta, const iv2_manifest *m) {
    cJSON *j = cJSON_Parse(old_meta);
    const cJSON *sha = cJSON_GetObjectItemCaseSensitive(j, "manifest_sha256"),
                *rows = cJSON_GetObjectItemCaseSensitive(j, "manifest_rows"),
                *bytes = cJSON_GetObjectItemCaseSensitive(j, "manifest_bytes");
    int grew = 0;
    struct stat st;
    FILE *f = NULL;
    if (!cJSON_IsString(sha) || !cJSON_IsNumber(rows) || !cJSON_IsNumber(bytes) || bytes->valuedouble <= 0 ||
        rows->valuedouble > (double)m->n_rows || stat(m->path, &st) || (double)st.st_size <= bytes->valuedouble ||
        !(f = fopen(m->path, "rb")))
        goto done;
    iv2_sha256_ctx c;
    iv2_sha256_init(&c);
    uint8_t buf[65536], d[32];
    int64_t left = (int64_t)bytes->valuedouble;
    while (left > 0) {
        size_t n = fread(buf, 1, left < (int64_t)sizeof buf ? (size_t)left : sizeof buf, f);
        if (!n) break;
        iv2_sha256_update(&c, buf, n);
        left -= (int64_t)n;
    }
    iv2_sha256_final(&c, d);
    char hex[65];
    iv2_sha256_hex(d, hex);
    grew = left == 0 && !strcmp(hex, sha->valuestring);
done:
    if (f) fclose(f);
    cJSON_Delete(j);
    return grew;
}

/* One iv2-extract per cache folder: a second one would list the same missing views and redo
 * every one of them. flock on DIR/extract.lock (holding our pid, for the message); the kernel
 * drops it when the process ends, kill -9 included. A file system without flock (ENOLCK, old
 * NFS) only warns. Returns the open fd (or -2 when unlocked), -1 with the reason. */
static int lock_cache_dir(const char *dir) {
    size_t len = strlen(dir) + 16;
    char *path = iv2_malloc(len), pid[32] = {0};
    snprintf(path, len, "%s/extract.lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) {
        iv2_err("cannot create %s: %s", path, strerror(errno));
        free(path);
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB)) {
        int e = errno;
        if (e != EWOULDBLOCK) {
            iv2_warn("cannot lock %s (%s): nothing stops a second iv2-extract on this cache", path, strerror(e));
            close(fd);
            free(path);
            return -2;
        }
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        close(fd);
        free(path);
        return iv2_err("cache %s is being written by another iv2-extract (pid %s); run one process per cache folder "
                       "(--shard k/N gives each its own)", dir, pid[0] ? pid : "unknown");
    }
    free(path);
    if (ftruncate(fd, 0) == 0) dprintf(fd, "%d\n", (int)getpid());
    return fd;
}

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

/* ---------------------------------------------------------------- finished views -> writer */

/* a finished view (frames and encoded values) or a row's error, on its way to the writer */
typedef struct done_item {
    int w, view;               /* view -1: the row failed (reason) */
    char *reason;
    iv2_cache_view rec;
    uint8_t *frames;           /* [8][size][size][3] */
    void *enc[IV2_CACHE_MAX_TARGETS];
} done_item;


static void done_free(done_item *d) {
    free(d->reason);
    free(d->frames);
    for (int t = 0; t < IV2_CACHE_MAX_TARGETS; t++) free(d->enc[t]);
    memset(d, 0, sizeof *d);
}

/* ---------------------------------------------------------------- devices */

#define MAX_DEVICES 64

struct run_state;

typedef struct device {
    struct run_state *rs;
    int index;
    char spec[32];             /* "cpu", "cuda:1", ... */
    int compute_threads;
    iv2_backend *be;
    iv2_teachers ts;
    pthread_t tid;
    int started, ready, failed;
    char err[8192];            /* as long as an error message (err.c) */
    double t_teachers, t_encode;
    int64_t views;
    qstat q[IV2_CACHE_MAX_TARGETS];
    float *qtmp;
    /* two host blocks for the targets' downloads (pinned on CUDA) and the events that say a
     * block has landed: batch i downloads into block i % 2 while batch i - 1's block is encoded */
    void *host[2];
    iv2_event *landed[2];
    size_t host_bytes;
} device;

typedef struct run_state {
    const iv2_extract_opts *o;
    iv2_cache *cache;
    work_row *work;
    iv2_extract_stats *st;
    iv2_metrics metrics;
    iv2_progress prog;
    int64_t views_given_up;    /* views of failed rows never to come (the progress line's count) */
    size_t view_bytes, frame_bytes;
    int batch_views;
    queue *q;
    ring oq;                   /* of done_item; producers = device threads */
    device dev[MAX_DEVICES];
    int n_dev;
    /* start-up handshake: devices report ready, then wait for go (1 run, -1 leave) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n_ready, go;
    int64_t views_taken;       /* views that left the teachers: every 8th is measured */
    int failed;                /* a device failed: its err says why */
    iv2_cache_target targets[IV2_CACHE_MAX_TARGETS];   /* device 0's, kept past the devices' teardown */
    int n_targets;
} run_state;

/* stop every stage: decoders, devices and writer return at their next queue operation */
static void stop_all(run_state *rs) {
    ring_stop(&rs->q->r);
    ring_stop(&rs->oq);
}

static void device_fail(device *d) {
    run_state *rs = d->rs;
    snprintf(d->err, sizeof d->err, "%s", iv2_errmsg());
    d->failed = 1;
    pthread_mutex_lock(&rs->mu);
    rs->failed = 1;
    pthread_mutex_unlock(&rs->mu);
    stop_all(rs);
}

/* backend and teachers, made on the device's own thread (a CUDA device is current per thread) */
static int device_setup(device *d) {
    const iv2_extract_opts *o = d->rs->o;
    d->be = iv2_backend_create(d->spec, d->compute_threads);
    if (!d->be) return iv2_err_ctx("--device %s", d->spec);
    d->ts.no_sha = d->index > 0;   /* device 0's checksum goes into the meta */
    if (o->internvit && iv2_teachers_load(&d->ts, d->be, "internvit", o->internvit)) return -1;
    if (o->videomae && iv2_teachers_load(&d->ts, d->be, "videomae", o->videomae)) return -1;
    if (iv2_teachers_set_targets(&d->ts, o->targets, o->dtype)) return -1;
    int B = o->batch_views > 0 ? o->batch_views : strcmp(d->be->name, "cpu") ? 8 : 1;
    if (iv2_teachers_set_batch(&d->ts, B)) return -1;
    d->host_bytes = iv2_teachers_batch_bytes(&d->ts);
    for (int k = 0; k < 2; k++) {
        d->host[k] = d->be->alloc_host(d->be, d->host_bytes);
        d->landed[k] = d->be->event_create(d->be);
        if (!d->host[k] || !d->landed[k])
            return iv2_err("--device %s: no host memory for the targets' downloads (%.0f MiB)", d->spec,
                           d->host_bytes / 1048576.0);
    }
    return 0;
}

static void device_teardown(device *d) {
    iv2_teachers_free(&d->ts);
    for (int k = 0; k < 2 && d->be; k++) {
        if (d->host[k]) d->be->free_host(d->be, d->host[k]);
        if (d->landed[k]) d->be->event_destroy(d->be, d->landed[k]);
        d->host[k] = NULL;
        d->landed[k] = NULL;
    }
    if (d->be) iv2_backend_destroy(d->be);
    d->be = NULL;
}

/* the device's times, under the lock: the writer reads them for its metrics lines */
static void add_times(device *d, double teachers, double encode) {
    pthread_mutex_lock(&d->rs->mu);
    d->t_teachers += teachers;
    d->t_encode += encode;
    pthread_mutex_unlock(&d->rs->mu);
}

/* Teachers on n decoded views, and their targets' downloads into host block k, queued: on CUDA
 * this returns while the GPU works (the only wait is the frames' upload, behind the previous
 * batch's downloads). */
static int device_launch(device *d, item *xs, int n, int k) {
    run_state *rs = d->rs;
    iv2_teachers *ts = &d->ts;
    const uint8_t *clips[1024];
    for (int i = 0; i < n; i++) clips[i] = xs[i].rgb;
    double t0 = iv2_now();
    if (iv2_teachers_run_batch(ts, clips, n) || iv2_teachers_fetch_async(ts, d->host[k])) {
        /* a teacher failure is not the rows' fault: stop */
        iv2_err_ctx("%s: row %lld view %d (batch of %d views)", d->spec, (long long)rs->work[xs[0].w].row->index, xs[0].view, n);
        return -1;
    }
    d->be->event_record(d->be, d->landed[k], IV2_STREAM_COMPUTE);
    add_times(d, iv2_now() - t0, 0);
    return 0;
}

/* Once host block k has landed: each of the n views' targets encoded (or, when the backend
 * holds them in the storage dtype, copied as they are and sealed) and handed to the writer,
 * with the student's frames. */
static int device_drain(device *d, item *xs, int n, int k) {
    run_state *rs = d->rs;
    iv2_teachers *ts = &d->ts;
    double t0 = iv2_now();
    d->be->event_sync(d->be, d->landed[k]);
    add_times(d, iv2_now() - t0, 0);   /* waiting for the device counts as teacher time */
    size_t fb = rs->frame_bytes;
    for (int i = 0; i < n; i++) {
        item *x = &xs[i];
        done_item dn;
        memset(&dn, 0, sizeof dn);
        dn.w = x->w;
        dn.view = x->view;
        record_to_view(x, rs->work[x->w].row->index, &dn.rec);
        dn.frames = iv2_malloc(STUDENT_FRAMES * fb);
        for (int f = 0; f < STUDENT_FRAMES; f++) memcpy(dn.frames + f * fb, x->rgb + (size_t)(2 * f) * fb, fb);
        free(x->rgb);
        x->rgb = NULL;
        pthread_mutex_lock(&rs->mu);
        int measure = rs->views_taken++ % 8 == 0;   /* storage error on every 8th view */
        pthread_mutex_unlock(&rs->mu);
        t0 = iv2_now();
        for (int t = 0; t < ts->n_targets; t++) {
            const iv2_cache_target *tg = &ts->targets[t];
            const void *src = iv2_teachers_host_target(ts, d->host[k], i, t);
            iv2_dtype have = iv2_teachers_target_dtype(ts, t);
            size_t nv = (size_t)tg->tokens * tg->dim;
            uint8_t *enc = dn.enc[t] = iv2_malloc(IV2_CACHE_VALUE_HDR + iv2_cache_target_bytes(tg));
            /* a target the backend holds in the storage dtype (bf16 on CUDA, fp32 on the CPU) is
             * stored as downloaded, the same bytes as through fp32; the views whose storage error
             * is measured need the fp32 (bf16 -> fp32 is exact) */
            if (tg->dtype == have && !(measure && tg->dtype != IV2_F32)) {
                memcpy(enc + IV2_CACHE_VALUE_HDR, src, nv * iv2_dtype_size(have));
                iv2_cache_seal_value(tg, enc);
                continue;
            }
            iv2_convert(ts->values[t], IV2_F32, src, have, nv);
            iv2_cache_encode_value(tg, ts->values[t], enc);
            if (measure && tg->dtype != IV2_F32) {
                d->qtmp = iv2_realloc(d->qtmp, sizeof(float) * nv);
                measure_storage(tg, enc, ts->values[t], d->qtmp, &d->q[t]);
            }
        }
        add_times(d, 0, iv2_now() - t0);
        d->views++;
        if (ring_push(&rs->oq, &dn)) { done_free(&dn); return 1; }   /* the run stops */
    }
    return 0;
}

static void free_items(item *xs, int n) {
    for (int i = 0; i < n; i++) { free(xs[i].rgb); xs[i].rgb = NULL; }
}

/* Pull views from the decode queue in batches of batch_views; pass rows' errors on. Two batches
 * are in flight: batch i is launched (teachers and downloads queued), then batch i - 1 is
 * drained (encoded and handed to the writer) while the device computes batch i. */
static void device_loop(device *d) {
    run_state *rs = d->rs;
    int B = d->ts.max_views;
    item *xs[2] = {iv2_calloc((size_t)B, sizeof(item)), iv2_calloc((size_t)B, sizeof(item))};
    int cur = 0, n_prev = 0;
    for (int end = 0; !end || n_prev;) {
        int n = 0;
        item x;
        while (!end && n < B) {
            if (!ring_pop(&rs->q->r, &x)) { end = 1; break; }
            if (x.view >= 0) { xs[cur][n++] = x; continue; }
            done_item dn;
            memset(&dn, 0, sizeof dn);
            dn.w = x.w;
            dn.view = -1;
            dn.reason = x.reason;
            if (ring_push(&rs->oq, &dn)) { free(dn.reason); end = 1; break; }
        }
        /* a full batch, or the last partial one; none when the run stops */
        int launched = 0;
        if (n && !ring_stopped(&rs->q->r)) {
            int rc = device_launch(d, xs[cur], n, cur);
            if (rc < 0) device_fail(d);
            if (rc) end = 1;
            else launched = 1;
        }
        if (n_prev) {
            int rc = device_drain(d, xs[!cur], n_prev, !cur);
            if (rc < 0) device_fail(d);
            if (rc) end = 1;
            free_items(xs[!cur], n_prev);
        }
        if (!launched) free_items(xs[cur], n);
        n_prev = launched ? n : 0;
        cur = !cur;
    }
    free(xs[0]);
    free(xs[1]);
}

static void *device_main(void *arg) {
    device *d = arg;
    run_state *rs = d->rs;
    int rc = device_setup(d);
    if (rc) snprintf(d->err, sizeof d->err, "%s", iv2_errmsg());
    pthread_mutex_lock(&rs->mu);
    d->failed = rc != 0;
    d->ready = 1;
    rs->n_ready++;
    pthread_cond_broadcast(&rs->cv);
    while (!rs->go) pthread_cond_wait(&rs->cv, &rs->mu);
    int go = rs->go;
    pthread_mutex_unlock(&rs->mu);
    if (go > 0 && !rc) device_loop(d);
    device_teardown(d);   /* here too: the backend belongs to this thread */
    ring_add_producers(&rs->oq, -1);
    return NULL;
}

/* --device list: "cpu", "cuda", "cuda:N", comma-separated; one kind only */
static int parse_devices(const iv2_extract_opts *o, run_state *rs, int ct) {
    char list[1024];
    snprintf(list, sizeof list, "%s", o->device && *o->device ? o->device : "cpu");
    int n_cpu = 0;
    char *save = NULL;
    for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') tok++;
        if (!*tok) continue;
        if (rs->n_dev == MAX_DEVICES) return iv2_err("--device %s: more than %d devices", o->device, MAX_DEVICES);
        if (strlen(tok) >= sizeof rs->dev[0].spec) return iv2_err("--device %s: '%s' is too long", o->device, tok);
        device *d = &rs->dev[rs->n_dev];
        d->rs = rs;
        d->index = rs->n_dev++;
        snprintf(d->spec, sizeof d->spec, "%s", tok);
        n_cpu += !strcmp(tok, "cpu");
    }
    if (!rs->n_dev) return iv2_err("--device '%s': no device named", o->device);
    if (n_cpu && n_cpu != rs->n_dev)
        return iv2_err("--device %s: mixes the CPU and CUDA (their targets differ in compute dtype)", o->device);
    for (int i = 0; i < rs->n_dev; i++) {
        for (int j = 0; j < i; j++)
            if (strcmp(rs->dev[i].spec, "cpu") && !strcmp(rs->dev[i].spec, rs->dev[j].spec))
                return iv2_err("--device %s: %s named twice", o->device, rs->dev[i].spec);
        /* CPU devices share the cores the decoders leave */
        rs->dev[i].compute_threads = o->compute_threads > 0 ? o->compute_threads : (ct / rs->n_dev > 0 ? ct / rs->n_dev : 1);
    }
    return 0;
}

/* The memory plan of each device (teachers at the batch it runs), printed once at start. */
static void print_memory_plan(const run_state *rs) {
    char line[256], b1[32], b2[32], b3[32];
    for (int i = 0; i < rs->n_dev; i++) {
        const device *d = &rs->dev[i];
        const iv2_teachers *ts = &d->ts;
        const iv2_backend *be = d->be;
        for (int k = 0; k < 2; k++) {
            const iv2_vit *m = k == 0 ? ts->ivit : ts->mae;
            if (!m) continue;
            iv2_vit_plan p = iv2_vit_memory_plan(&m->cfg, be->esize, m->batch, iv2_vit_tokens(&m->cfg), 0, 0);
            iv2_vit_plan_str(&p, line, sizeof line);
            iv2_info("memory plan, %s on %s (device %d, batch %d views): %s", k == 0 ? "InternViT" : "VideoMAE", d->spec, i,
                     ts->max_views, line);
        }
        size_t db, hb;
        iv2_teachers_buffer_bytes(ts, &db, &hb);
        snprintf(b1, sizeof b1, "%.1f MiB", db / 1048576.0);
        snprintf(b2, sizeof b2, "%.1f MiB", hb / 1048576.0);
        snprintf(b3, sizeof b3, "%.1f MiB", 2 * d->host_bytes / 1048576.0);
        iv2_info("memory plan, %s (device %d): frames, outputs and post-processing for %d views %s, host staging and "
                 "targets %s, downloads of two batches %s%s", d->spec, i, ts->max_views, b1, b2, b3,
                 be->alloc_host && strcmp(be->name, "cpu") ? " (pinned)" : "");
    }
}

/* ---------------------------------------------------------------- writer */

/* views and errors waiting for the next transaction */
typedef struct pending {
    done_item v[64];
    int n;
    size_t bytes;
    done_item err[256];
    int n_err;
} pending;

static void pending_clear(pending *p) {
    for (int i = 0; i < p->n; i++) done_free(&p->v[i]);
    for (int i = 0; i < p->n_err; i++) done_free(&p->err[i]);
    p->n = p->n_err = 0;
    p->bytes = 0;
}

/* a row's reason as stored: its video as the manifest wrote it, not as resolved from the
 * manifest's folder, so what a cache holds does not depend on where the run started */
static char *reason_to_store(const iv2_row *r, const char *reason) {
    size_t n = strlen(r->video);
    if (r->video_rel == r->video || strncmp(reason, r->video, n)) return iv2_strdup(reason);
    size_t a = strlen(r->video_rel), b = strlen(reason + n);
    char *s = iv2_malloc(a + b + 1);
    memcpy(s, r->video_rel, a);
    memcpy(s + a, reason + n, b + 1);
    return s;
}

static int flush(run_state *rs, pending *p) {
    if (!p->n && !p->n_err) return 0;
    iv2_cache_entry e[64];
    int64_t err_row[256];
    char *reasons[256];
    for (int i = 0; i < p->n; i++) {
        memset(&e[i], 0, sizeof e[i]);
        e[i].view = p->v[i].rec;
        e[i].frames = p->v[i].frames;
        e[i].encoded = (const void *const *)p->v[i].enc;
    }
    for (int i = 0; i < p->n_err; i++) {
        const iv2_row *r = rs->work[p->err[i].w].row;
        err_row[i] = r->index;
        reasons[i] = reason_to_store(r, p->err[i].reason);
    }
    double t0 = iv2_now();
    int rc = iv2_cache_put(rs->cache, e, p->n, err_row, (const char *const *)reasons, p->n_err);
    rs->st->t_write += iv2_now() - t0;
    for (int i = 0; i < p->n_err; i++) free(reasons[i]);
    if (rc) { pending_clear(p); return -1; }
    for (int i = 0; i < p->n; i++) {
        work_row *w = &rs->work[p->v[i].w];
        rs->st->views_done++;
        if (--w->left == 0 && !w->failed) rs->st->rows_done++;
    }
    for (int i = 0; i < p->n_err; i++) {
        work_row *w = &rs->work[p->err[i].w];
        iv2_warn("%s:%d: row %lld: %s", rs->o->manifest, w->row->line, (long long)w->row->index, p->err[i].reason);
        {   /* and in the metrics, a line a failed row */
            char ev[8200], er[8200];
            iv2_metrics_write(&rs->metrics, "row_failed", "\"row\":%lld,\"line\":%d,\"video\":\"%s\",\"reason\":\"%s\"",
                              (long long)w->row->index, w->row->line, iv2_json_escape(ev, sizeof ev, w->row->video_rel),
                              iv2_json_escape(er, sizeof er, p->err[i].reason));
        }
        rs->st->rows_failed++;
        rs->views_given_up += w->left;   /* for the progress line: they are not coming */
    }
    double el = iv2_now() - rs->prog.t0, tt = 0;
    pthread_mutex_lock(&rs->mu);
    for (int i = 0; i < rs->n_dev; i++) tt += rs->dev[i].t_teachers;
    pthread_mutex_unlock(&rs->mu);
    pthread_mutex_lock(&rs->q->r.mu);
    double td = rs->q->t_decode;
    pthread_mutex_unlock(&rs->q->r.mu);
    iv2_metrics_write(&rs->metrics, "write",
                      "\"views\":%lld,\"rows_done\":%lld,\"rows_failed\":%lld,\"txn_views\":%d,\"txn_errors\":%d,"
                      "\"views_per_s\":%.4g,\"t_decode\":%.4g,\"t_teachers\":%.4g,\"t_write\":%.4g",
                      (long long)rs->st->views_done, (long long)rs->st->rows_done, (long long)rs->st->rows_failed, p->n,
                      p->n_err, el > 0 ? rs->st->views_done / el : 0.0, td, tt, rs->st->t_write);
    int64_t seen = rs->st->views_done + rs->views_given_up;   /* (a view of a row that failed later counts twice) */
    iv2_progress_update(&rs->prog, rs->prog.total && seen > rs->prog.total ? rs->prog.total : seen, NULL);
    pending_clear(p);
    return 0;
}

/* The writer: finished views and errors into transactions of o->batch views. -1 on a cache
 * error (disk full, map limit). */
static int write_loop(run_state *rs, pending *p) {
    const iv2_extract_opts *o = rs->o;
    done_item x;
    while (ring_pop(&rs->oq, &x)) {
        work_row *w = &rs->work[x.w];
        if (x.view < 0) {
            if (!w->failed) {
                w->failed = 1;
                p->err[p->n_err++] = x;
            } else done_free(&x);
        } else {
            p->v[p->n++] = x;
            p->bytes += rs->view_bytes;
        }
        if (p->n >= o->batch || p->bytes >= BATCH_BYTES || p->n_err >= 256 || p->n >= 64)
            if (flush(rs, p)) return -1;
    }
    pthread_mutex_lock(&rs->mu);
    int failed = rs->failed;
    pthread_mutex_unlock(&rs->mu);
    if (failed) return -1;   /* a device failed: what it had not finished is redone on resume */
    return flush(rs, p);
}

/* ---------------------------------------------------------------- the run */

static int check_opts(const iv2_extract_opts *o) {
    if (!o->manifest) return iv2_err("--manifest is required");
    if (!o->cache) return iv2_err("--cache is required");
    if (!o->internvit && !o->videomae) return iv2_err("give at least one --teacher (internvit=... or videomae=...)");
    if (o->views < 1 || o->views > 64) return iv2_err("--views %d: want 1..64", o->views);
    if (o->deterministic && o->views > 1)
        return iv2_err("--views %d with --deterministic: its views of a row are all the same (segment-middle frames, "
                       "centre crop, no flip); use --views 1", o->views);
    if (o->shard_n < 1 || o->shard_k < 0 || o->shard_k >= o->shard_n) return iv2_err("--shard %d/%d: want k/N with 0 <= k < N", o->shard_k, o->shard_n);
    if (o->threads < 1 || o->threads > 256) return iv2_err("--threads %d: want 1..256", o->threads);
    if (o->batch < 1 || o->batch > 64) return iv2_err("--batch %d: want 1..64", o->batch);
    if (o->batch_views < 0 || o->batch_views > 256) return iv2_err("--batch-views %d: want 1..256", o->batch_views);
    return 0;
}

/* start one thread per device and wait until each has its teachers (or failed) */
static int start_devices(run_state *rs) {
    for (int i = 0; i < rs->n_dev; i++) {
        if (pthread_create(&rs->dev[i].tid, NULL, device_main, &rs->dev[i])) iv2_panic("cannot start a device thread");
        rs->dev[i].started = 1;
        ring_add_producers(&rs->oq, 1);
    }
    pthread_mutex_lock(&rs->mu);
    while (rs->n_ready < rs->n_dev) pthread_cond_wait(&rs->cv, &rs->mu);
    pthread_mutex_unlock(&rs->mu);
    for (int i = 0; i < rs->n_dev; i++)
        if (rs->dev[i].failed) return iv2_err("%s", rs->dev[i].err);
    /* every device made the same teacher set; device 0's speaks for all (meta, sizes) */
    return 0;
}

static void release_devices(run_state *rs, int go) {
    pthread_mutex_lock(&rs->mu);
    if (!rs->go) rs->go = go;
    pthread_cond_broadcast(&rs->cv);
    pthread_mutex_unlock(&rs->mu);
}

int iv2_extract_run(const iv2_extract_opts *o, iv2_extract_stats *st) {
    memset(st, 0, sizeof *st);
    if (check_opts(o)) return -1;
    double t_start = iv2_now();
    int ret = -1;
    run_state *rs = iv2_calloc(1, sizeof *rs);
    rs->o = o;
    rs->st = st;
    iv2_manifest m;
    memset(&m, 0, sizeof m);
    char *meta = NULL;
    iv2_cache_key *done = NULL;
    int64_t n_done = 0;
    err_rows er = {0};
    pending *p = NULL;
    queue q;
    memset(&q, 0, sizeof q);
    rs->q = &q;
    workers ws;
    memset(&ws, 0, sizeof ws);
    worker_ctx wc;
    int started = 0, lock_fd = -2, locked = 0;
    long long grew_from = -1;   /* the cache's manifest rows when this manifest extends it */
    ring_init(&q.r);
    ring_init(&rs->oq);
    pthread_mutex_init(&rs->mu, NULL);
    pthread_cond_init(&rs->cv, NULL);

    struct stat mst;   /* a pipe (<(...), /dev/stdin) has no folder for relative paths and no second reading */
    if (stat(o->manifest, &mst) == 0 && !S_ISREG(mst.st_mode)) {
        iv2_err("manifest %s is not a regular file: write it to a file first (its folder resolves relative video "
                "paths, and a rerun must read the same bytes to resume)", o->manifest);
        goto out;
    }
    if (iv2_manifest_load(&m, o->manifest)) goto out;
    static const uint8_t zero[32];
    if (!memcmp(m.sha256, zero, 32) && iv2_sha256_file(o->manifest, m.sha256)) goto out;
    /* CPU compute threads: by default the cores the decode workers leave free (OpenMP threads
     * that spin beside busy decoders slow the teachers down many times over) */
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    int ct = nc > o->threads + 1 ? (int)nc - o->threads : 1;
    /* what can be refused in a moment is refused before the teachers load (minutes for the 6B):
     * a cache folder another extract holds or that cannot be written, a metrics file that cannot
     * be opened */
    struct stat cst;
    if (stat(o->cache, &cst) == 0) {
        if (!S_ISDIR(cst.st_mode)) { iv2_err("cache %s is not a folder", o->cache); goto out; }
        if (access(o->cache, W_OK)) { iv2_err("cache folder %s is not writable: %s", o->cache, strerror(errno)); goto out; }
        if ((lock_fd = lock_cache_dir(o->cache)) == -1) goto out;
        locked = 1;
    }
    if (iv2_metrics_open(&rs->metrics, o->metrics)) goto out;
    if (parse_devices(o, rs, ct)) goto out;
    if (start_devices(rs)) goto out;
    iv2_teachers *ts = &rs->dev[0].ts;
    iv2_backend *be = rs->dev[0].be;
    rs->batch_views = ts->max_views;
    rs->n_targets = ts->n_targets;
    memcpy(rs->targets, ts->targets, sizeof rs->targets);
    st->devices = rs->n_dev;
    st->batch_views = rs->batch_views;
    print_memory_plan(rs);

    iv2_sample_opts so;
    iv2_sample_opts_default(&so);
    so.num_frames = CLIP_FRAMES;
    so.size = ts->ivit ? ts->ivit->cfg.img : ts->mae->cfg.img;
    so.deterministic = o->deterministic;
    so.flip = !o->no_flip;
    so.threads = 1;
    so.time_limit = o->time_limit;
    meta = build_meta(o, ts, &m, be, &so);
    if (iv2_cache_open(&rs->cache, o->cache, IV2_CACHE_RDWR)) goto out;
    if (!locked && (lock_fd = lock_cache_dir(o->cache)) == -1) goto out;   /* a folder made just now */
    const char *old_meta = iv2_cache_meta(rs->cache);
    if (old_meta && manifest_grew(old_meta, &m)) {   /* rows appended: the stored ones keep their keys */
        static const char *const grown[] = {"manifest_sha256", "manifest_rows", NULL};
        cJSON *oj = cJSON_Parse(old_meta);
        long long old_rows = (long long)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(oj, "manifest_rows"));
        cJSON_Delete(oj);
        if (iv2_cache_update_meta(rs->cache, meta, grown)) goto out;
        iv2_info("%s: the manifest grew from %lld to %lld rows (the old one is its start): the new rows are extracted",
                 o->cache, old_rows, (long long)m.n_rows);
        grew_from = old_rows;
    } else if (iv2_cache_set_meta(rs->cache, meta)) {
        if (old_meta && strstr(iv2_errmsg(), "manifest_sha256")) {   /* say what that means, and what to do */
            cJSON *oj = cJSON_Parse(old_meta);
            double old_rows = cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(oj, "manifest_rows"));
            cJSON_Delete(oj);
            char keep[4096];
            snprintf(keep, sizeof keep, "%s", iv2_errmsg());
            iv2_err("%s: the manifest is not the one the cache was made from (%lld rows here, %.0f there), nor that one "
                    "with rows appended; a cache follows one manifest (rows are its keys): give this one its own --cache",
                    keep, (long long)m.n_rows, old_rows);
        }
        goto out;
    }

    /* what is left to do */
    if (iv2_cache_list_views(rs->cache, &done, &n_done)) goto out;
    if (n_done) qsort(done, (size_t)n_done, sizeof *done, cmp_key);   /* qsort takes no NULL, even of 0 */
    if (iv2_cache_each_error(rs->cache, collect_err, &er)) goto out;
    if (er.n) qsort(er.rows, (size_t)er.n, sizeof *er.rows, cmp_i64);
    rs->work = iv2_calloc((size_t)m.n_rows + 1, sizeof *rs->work);
    int n_work = 0;
    int64_t total_views = 0;
    for (int64_t i = 0; i < m.n_rows; i++) {
        const iv2_row *r = &m.rows[i];
        if (r->index % o->shard_n != o->shard_k) continue;
        if (!o->retry_errors && er.n && bsearch(&r->index, er.rows, (size_t)er.n, sizeof *er.rows, cmp_i64)) {
            st->rows_skipped++;
            st->rows_skipped_failed++;
            continue;
        }
        work_row *w = &rs->work[n_work];
        w->row = r;
        for (int v = 0; v < o->views; v++) {
            iv2_cache_key k = {r->index, (uint32_t)v};
            if (!n_done || !bsearch(&k, done, (size_t)n_done, sizeof *done, cmp_key)) w->need[w->n_need++] = (uint32_t)v;
        }
        if (!w->n_need) { st->rows_skipped++; continue; }
        if (o->max_views > 0 && total_views >= o->max_views) break;
        w->left = w->n_need;
        total_views += w->n_need;
        n_work++;
    }
    if (grew_from >= 0)
        iv2_metrics_write(&rs->metrics, "manifest_grew", "\"rows_before\":%lld,\"rows\":%lld", grew_from, (long long)m.n_rows);
    iv2_progress_start(&rs->prog, "views", total_views, 0);
    for (int i = 0; i < ts->n_targets; i++) rs->view_bytes += IV2_CACHE_VALUE_HDR + iv2_cache_target_bytes(&ts->targets[i]);
    rs->frame_bytes = (size_t)so.size * so.size * 3;
    rs->view_bytes += IV2_CACHE_VIEW_HDR + STUDENT_FRAMES * rs->frame_bytes;
    iv2_info("%s: %d rows to do (%lld views), %lld skipped; %d targets, %.2f MB per view; %d device%s, %d views per teacher call",
             o->cache, n_work, (long long)total_views, (long long)st->rows_skipped, ts->n_targets, rs->view_bytes / 1e6,
             rs->n_dev, rs->n_dev > 1 ? "s" : "", rs->batch_views);
    {   /* a run's start (after manifest_grew, when the manifest grew): runs appended to one file stay apart */
        char em[8200], ec[8200];
        iv2_metrics_write(&rs->metrics, "start",
                          "\"manifest\":\"%s\",\"cache\":\"%s\",\"rows_to_do\":%d,\"views_to_do\":%lld,"
                          "\"rows_skipped\":%lld,\"views_per_row\":%d,\"targets\":%d,\"devices\":%d,\"batch_views\":%d,"
                          "\"threads\":%d,\"shard\":\"%d/%d\"", iv2_json_escape(em, sizeof em, o->manifest),
                          iv2_json_escape(ec, sizeof ec, o->cache), n_work, (long long)total_views,
                          (long long)st->rows_skipped, o->views, ts->n_targets, rs->n_dev, rs->batch_views, o->threads,
                          o->shard_k, o->shard_n);
    }

    /* decode workers: enough queue to fill every device's next batch while it runs this one */
    int qcap = 2 * o->threads;
    if (qcap < rs->batch_views * rs->n_dev) qcap = rs->batch_views * rs->n_dev;
    ring_alloc(&q.r, o->queue > 0 ? o->queue : qcap, sizeof(item));
    q.n_work = n_work;
    q.r.producers = o->threads;
    wc.q = &q; wc.work = rs->work; wc.o = o; wc.so = so;
    started = 1;
    if (workers_start(&ws, &wc, o->threads, so.time_limit)) iv2_panic("%s", iv2_errmsg());
    /* finished views wait for the writer: one transaction plus every device's next batch */
    ring_alloc(&rs->oq, o->batch + rs->batch_views * rs->n_dev, sizeof(done_item));
    release_devices(rs, 1);

    p = iv2_calloc(1, sizeof *p);
    ret = write_loop(rs, p);

out:
    {
        char keep[8192];
        snprintf(keep, sizeof keep, "%s", iv2_errmsg());
        if (ret) stop_all(rs);
        release_devices(rs, -1);   /* devices still waiting for go leave */
        if (started) workers_join(&ws);
        for (int i = 0; i < rs->n_dev; i++)
            if (rs->dev[i].started) pthread_join(rs->dev[i].tid, NULL);
        /* drain what the workers and devices left */
        item y;
        while (ring_take(&q.r, &y)) { free(y.rgb); free(y.reason); }
        done_item z;
        while (ring_take(&rs->oq, &z)) done_free(&z);
        /* a device's own error comes first: the writer only saw the queues stop */
        for (int i = 0; i < rs->n_dev; i++)
            if (rs->dev[i].failed && rs->dev[i].err[0] && ret) { snprintf(keep, sizeof keep, "%s", rs->dev[i].err); break; }
        if (ret) {   /* the metrics say so too (when they are open): a run's lines end with "failed", or with
                      * "summary" and its "storage" lines */
            char ek[8200];
            iv2_metrics_write(&rs->metrics, "failed", "\"error\":\"%s\",\"views\":%lld,\"rows_done\":%lld",
                              iv2_json_escape(ek, sizeof ek, keep), (long long)st->views_done, (long long)st->rows_done);
            iv2_err("%s", keep);
        }
    }
    st->t_decode = q.t_decode;
    for (int i = 0; i < rs->n_dev; i++) { st->t_teachers += rs->dev[i].t_teachers; st->t_encode += rs->dev[i].t_encode; }
    st->seconds = iv2_now() - t_start;
    st->bytes_per_view = (double)rs->view_bytes;
    /* storage error over all devices */
    qstat qs[IV2_CACHE_MAX_TARGETS];
    memset(qs, 0, sizeof qs);
    for (int i = 0; i < rs->n_dev; i++)
        for (int t = 0; t < IV2_CACHE_MAX_TARGETS; t++) {
            const qstat *d = &rs->dev[i].q[t];
            if (!d->n) continue;
            if (!qs[t].n || d->worst < qs[t].worst) qs[t].worst = d->worst;
            qs[t].sum += d->sum;
            qs[t].n += d->n;
        }
    if (ret == 0) {
        char extra[256];
        snprintf(extra, sizeof extra, "rows done %lld, failed %lld, skipped %lld", (long long)st->rows_done,
                 (long long)st->rows_failed, (long long)st->rows_skipped);
        iv2_progress_end(&rs->prog, extra);
        double vps = st->seconds > 0 ? st->views_done / st->seconds : 0;
        iv2_info("%s: rows done %lld, failed %lld, skipped %lld; views %lld; %.3f MB/view; %.3g views/s "
                 "(decode %.2f s on %d threads, teachers %.2f s on %d device%s x %d views, encode %.2f s, write %.2f s)",
                 o->cache, (long long)st->rows_done, (long long)st->rows_failed, (long long)st->rows_skipped,
                 (long long)st->views_done, st->bytes_per_view / 1e6, vps, st->t_decode, o->threads, st->t_teachers,
                 rs->n_dev, rs->n_dev > 1 ? "s" : "", rs->batch_views, st->t_encode, st->t_write);
        for (int i = 0; rs->n_dev > 1 && i < rs->n_dev; i++)
            iv2_info("  device %d (%s): %lld views, teachers %.2f s, encode %.2f s", i, rs->dev[i].spec,
                     (long long)rs->dev[i].views, rs->dev[i].t_teachers, rs->dev[i].t_encode);
        iv2_metrics_write(&rs->metrics, "summary",
                          "\"rows_done\":%lld,\"rows_failed\":%lld,\"rows_skipped\":%lld,\"views\":%lld,"
                          "\"bytes_per_view\":%.0f,\"views_per_s\":%.4g,\"seconds\":%.4g,\"t_decode\":%.4g,"
                          "\"t_teachers\":%.4g,\"t_encode\":%.4g,\"t_write\":%.4g,\"devices\":%d,\"batch_views\":%d,"
                          "\"views_with_stand_ins\":%lld",
                          (long long)st->rows_done, (long long)st->rows_failed, (long long)st->rows_skipped,
                          (long long)st->views_done, st->bytes_per_view, vps, st->seconds, st->t_decode,
                          st->t_teachers, st->t_encode, st->t_write, rs->n_dev, rs->batch_views,
                          (long long)q.stand_in_views);
    }
    if (ret == 0)
        for (int t = 0; t < IV2_CACHE_MAX_TARGETS; t++) {
            if (!qs[t].n) continue;
            const iv2_cache_target *tg = &rs->targets[t];
            iv2_info("storage error %s (%s): mean cosine %.7f, worst %.7f over %lld tokens", tg->name,
                     iv2_dtype_name(tg->dtype), qs[t].sum / qs[t].n, qs[t].worst, (long long)qs[t].n);
            iv2_metrics_write(&rs->metrics, "storage", "\"target\":\"%s\",\"dtype\":\"%s\",\"mean_cos\":%.9f,\"worst_cos\":%.9f,\"tokens\":%lld",
                              tg->name, iv2_dtype_name(tg->dtype), qs[t].sum / qs[t].n, qs[t].worst, (long long)qs[t].n);
        }
    for (int i = 0; i < rs->n_dev; i++) free(rs->dev[i].qtmp);
    if (p) { pending_clear(p); free(p); }
    free(done);
    free(er.rows);
    free(rs->work);
    free(meta);
    {
        char keep[8192];
        snprintf(keep, sizeof keep, "%s", iv2_errmsg());
        iv2_cache_close(rs->cache);
        if (lock_fd >= 0) close(lock_fd);   /* after the close: the environment is synced */
        iv2_metrics_close(&rs->metrics);
        iv2_manifest_free(&m);
        ring_destroy(&q.r);
        ring_destroy(&rs->oq);
        pthread_mutex_destroy(&rs->mu);
        pthread_cond_destroy(&rs->cv);
        free(rs);
        if (ret) iv2_err("%s", keep);
    }
    return ret;
}
