/* bench_extract: the GPU half of iv2-extract at full size, stage by stage (issue 7). The teachers
 * (InternViT-6B and VideoMAEv2-g presets, random weights, the recipe targets stored as bf16,
 * batches of 8 views) run on synthetic uint8 clips (no FFmpeg on the GPU machine, so no decoding),
 * and each batch goes through the stages of extract/pipeline.c, timed one at a time:
 *   teachers  iv2_teachers_run_batch, then a backend sync
 *   download  iv2_teachers_fetch_async into one pinned host block, waited on by an event
 *             (device_launch / device_drain)
 *   encode    each view's targets copied as downloaded and sealed (bf16 held = bf16 stored), or
 *             converted and encoded where the backend holds another dtype (the CPU's fp32)
 *   write     iv2_cache_put into an LMDB cache under build/tmp, in transactions of 8 views or
 *             256 MiB as extract's writer makes them (the remainder flushed at each batch's end);
 *             the cache is removed at the end
 * Figures: the median of the timed batches after one warm-up, per stage and as views/s, and the
 * pipelined bound: extract overlaps the device (teachers, then downloads queued on the same
 * stream), the host's encoding (device thread) and the writer (its own thread), so the slowest
 * of the three bounds views/s per GPU. Also bytes per view, write MB/s and the memory plan.
 * The weights come from iv2_teachers_load("preset:..."), the path extract takes; no fast refill
 * after it (bench_vit's fill_params): init_random is OpenMP-parallel now, 9.4 ns per parameter on
 * 2 cores against fill_params' 1.8 on one, so a refill would only add to the set-up time.
 *   bench_extract [out.json]
 * Env: IV2_BENCH_DEVICE (default cuda; cpu for the smoke run: tiny presets, 2 batches of 2
 * views), IV2_BENCH_INTERNVIT / IV2_BENCH_VIDEOMAE (teacher specs), IV2_BENCH_VIEWS (views per
 * batch, 8), IV2_BENCH_BATCHES (timed batches, 4), IV2_BENCH_CACHE (cache folder, removed at the
 * end; default build/tmp/bench_extract.PID). Exit 77 when the device cannot be opened. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "cache.h"
#include "compute.h"
#include "err.h"
#include "log.h"
#include "teachers.h"

#define CLIP_FRAMES 16
#define STUDENT_FRAMES 8
#define TXN_VIEWS 8                    /* extract's --batch default */
#define TXN_BYTES ((size_t)256 << 20)  /* extract's BATCH_BYTES */
#define MAX_VIEWS 64

static int cmpd(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *t, int n) {
    qsort(t, (size_t)n, sizeof(double), cmpd);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

static int env_int(const char *name, int def) {
    const char *s = getenv(name);
    return s && *s ? atoi(s) : def;
}

static const char *env_str(const char *name, const char *def) {
    const char *s = getenv(name);
    return s && *s ? s : def;
}

/* the cache folder: LMDB's two files, then the folder (left, with a message, if anything else is in it) */
static void remove_cache(const char *dir) {
    static const char *files[] = {"data.mdb", "lock.mdb"};
    char p[4096];
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        if (unlink(p) && errno != ENOENT) fprintf(stderr, "bench_extract: cannot remove %s: %s\n", p, strerror(errno));
    }
    if (rmdir(dir) && errno != ENOENT) fprintf(stderr, "bench_extract: cannot remove %s: %s\n", dir, strerror(errno));
}

/* the meta a cache needs before puts: extract's fields that describe the targets, and the teachers */
static char *bench_meta(const iv2_teachers *ts, int img) {
    size_t cap = 65536;
    char *buf = malloc(cap), *teachers = iv2_teachers_meta_json(ts);
    int n = snprintf(buf, cap, "{\"format\":%d,\"tool_version\":\"bench_extract\",\"teachers\":%s,"
                     "\"sampling\":{\"num_frames\":%d,\"size\":%d},\"views\":1,",
                     IV2_CACHE_FORMAT, teachers, CLIP_FRAMES, img);
    free(teachers);
    n = (int)iv2_cache_targets_json(buf, cap, (size_t)n, ts->targets, ts->n_targets);
    snprintf(buf + n, cap - (size_t)n, "}");
    return buf;
}

/* activations the teachers' forwards will allocate at the set's batch (inference arenas) */
static size_t activation_bytes(const iv2_teachers *ts) {
    size_t n = 0;
    for (int k = 0; k < 2; k++) {
        const iv2_vit *m = k == 0 ? ts->ivit : ts->mae;
        if (!m) continue;
        n += iv2_vit_memory_plan(&m->cfg, ts->be->esize, m->batch, iv2_vit_tokens(&m->cfg), 0, 0).activations;
    }
    return n;
}

/* Views per batch: `want`, or fewer while the activations do not fit the free memory left after
 * the weights and the set's buffers (1 GiB kept for cuBLAS workspaces and the allocator). */
static int fit_batch(iv2_teachers *ts, int want) {
    iv2_backend *be = ts->be;
    int B = want;
    for (;;) {
        if (iv2_teachers_set_batch(ts, B)) return -1;
        size_t fr = 0, tot = 0, act = activation_bytes(ts), margin = (size_t)1 << 30;
        if (!be->mem_info) return B;
        be->mem_info(be, &fr, &tot);
        if (act + margin <= fr || B == 1) {
            if (act + margin > fr) printf("memory: even 1 view may not fit (activations %.2f GB, %.2f GB free)\n", act / 1e9, fr / 1e9);
            return B;
        }
        printf("memory: a batch of %d views does not fit (activations %.2f GB + 1 GiB margin, %.2f of %.2f GB free "
               "after weights and buffers): trying %d\n", B, act / 1e9, fr / 1e9, tot / 1e9, B / 2);
        B /= 2;
    }
}

static void print_plan(const iv2_teachers *ts, int B) {
    char line[256];
    for (int k = 0; k < 2; k++) {
        const iv2_vit *m = k == 0 ? ts->ivit : ts->mae;
        if (!m) continue;
        iv2_vit_plan p = iv2_vit_memory_plan(&m->cfg, ts->be->esize, m->batch, iv2_vit_tokens(&m->cfg), 0, 0);
        iv2_vit_plan_str(&p, line, sizeof line);
        printf("memory plan, %s (batch %d views): %s\n", k == 0 ? "InternViT" : "VideoMAE", B, line);
    }
    printf("memory plan, teacher set: frames, outputs and post-processing %.1f MiB on the backend, host staging and "
           "targets %.1f MiB, one batch's downloads %.1f MiB (extract holds two)\n",
           ts->backend_bytes / 1048576.0, ts->host_bytes / 1048576.0, iv2_teachers_batch_bytes(ts) / 1048576.0);
}

/* synthetic clip of view (b, i): [16][img][img][3], different per view */
static void fill_clip(uint8_t *c, size_t n, unsigned seed) {
    unsigned s = seed * 2654435761u + 1;
    for (size_t k = 0; k < n; k++) { s = s * 1664525u + 1013904223u; c[k] = (uint8_t)(s >> 24); }
}

static void view_record(iv2_cache_view *v, int64_t row, int img) {
    memset(v, 0, sizeof *v);
    v->row = row;
    v->num_frames = CLIP_FRAMES;
    for (int f = 0; f < CLIP_FRAMES; f++) { v->frame[f] = f; v->pts[f] = f / 30.0; }
    v->span_frames = CLIP_FRAMES;
    v->src_w = v->src_h = v->crop_w = v->crop_h = v->size = img;
    v->n_student = STUDENT_FRAMES;
    v->deterministic = 1;
}

/* device_drain's encoding of view v's targets (host block `host`) into enc[t] */
static void encode_view(iv2_teachers *ts, const void *host, int v, uint8_t **enc) {
    for (int t = 0; t < ts->n_targets; t++) {
        const iv2_cache_target *tg = &ts->targets[t];
        const void *src = iv2_teachers_host_target(ts, host, v, t);
        iv2_dtype have = iv2_teachers_target_dtype(ts, t);
        size_t nv = (size_t)tg->tokens * tg->dim;
        if (tg->dtype == have) {
            memcpy(enc[t] + IV2_CACHE_VALUE_HDR, src, nv * iv2_dtype_size(have));
            iv2_cache_seal_value(tg, enc[t]);
        } else {
            iv2_convert(ts->values[t], IV2_F32, src, have, nv);
            iv2_cache_encode_value(tg, ts->values[t], enc[t]);
        }
    }
}

typedef struct bench {
    iv2_backend *be;
    iv2_teachers ts;
    iv2_cache *cache;
    int B, img;
    size_t clip_bytes, frame_bytes, view_bytes;
    uint8_t *clips[MAX_VIEWS], *frames[MAX_VIEWS], *enc[MAX_VIEWS][IV2_CACHE_MAX_TARGETS];
    void *host;
    iv2_event *landed;
    int txns;
} bench;

/* one batch through the four stages; t[0..3] = seconds of teachers, download, encode, write */
static int run_one(bench *b, int batch, double *t) {
    iv2_backend *be = b->be;
    iv2_teachers *ts = &b->ts;
    for (int i = 0; i < b->B; i++) fill_clip(b->clips[i], b->clip_bytes, (unsigned)(batch * MAX_VIEWS + i));
    double t0 = iv2_now();
    if (iv2_teachers_run_batch(ts, (const uint8_t *const *)b->clips, b->B)) return -1;
    be->sync(be);
    double t1 = iv2_now();
    if (iv2_teachers_fetch_async(ts, b->host)) return -1;
    be->event_record(be, b->landed, IV2_STREAM_COMPUTE);
    be->event_sync(be, b->landed);
    double t2 = iv2_now();
    for (int i = 0; i < b->B; i++) encode_view(ts, b->host, i, b->enc[i]);
    double t3 = iv2_now();
    /* the writer: student frames (the even ones) taken as device_drain does, not timed */
    iv2_cache_entry e[MAX_VIEWS];
    for (int i = 0; i < b->B; i++) {
        for (int f = 0; f < STUDENT_FRAMES; f++)
            memcpy(b->frames[i] + f * b->frame_bytes, b->clips[i] + (size_t)(2 * f) * b->frame_bytes, b->frame_bytes);
        memset(&e[i], 0, sizeof e[i]);
        view_record(&e[i].view, (int64_t)batch * MAX_VIEWS + i, b->img);
        e[i].frames = b->frames[i];
        e[i].encoded = (const void *const *)b->enc[i];
    }
    double tw = 0;
    for (int i = 0, n = 0; i < b->B; i = n) {
        size_t bytes = 0;
        for (n = i; n < b->B && n - i < TXN_VIEWS && bytes < TXN_BYTES; n++) bytes += b->view_bytes;
        double w0 = iv2_now();
        if (iv2_cache_put(b->cache, e + i, n - i, NULL, NULL, 0)) return -1;
        tw += iv2_now() - w0;
        b->txns++;
    }
    t[0] = t1 - t0;
    t[1] = t2 - t1;
    t[2] = t3 - t2;
    t[3] = tw;
    return 0;
}

static int bench_run(bench *b, const char *json_path) {
    iv2_backend *be = b->be;
    iv2_teachers *ts = &b->ts;
    int cpu = !strcmp(be->name, "cpu");
    const char *ivit = env_str("IV2_BENCH_INTERNVIT", cpu ? "preset:internvit-tiny" : "preset:internvit-6b");
    const char *mae = env_str("IV2_BENCH_VIDEOMAE", cpu ? "preset:videomae-tiny" : "preset:videomae-g");
    int want = env_int("IV2_BENCH_VIEWS", cpu ? 2 : 8), reps = env_int("IV2_BENCH_BATCHES", cpu ? 2 : 4);
    if (want < 1 || want > MAX_VIEWS || reps < 1 || reps > 64)
        return iv2_err("IV2_BENCH_VIEWS %d (1..%d), IV2_BENCH_BATCHES %d (1..64)", want, MAX_VIEWS, reps);
    double t0 = iv2_now();
    if (iv2_teachers_load(ts, be, "internvit", ivit) || iv2_teachers_load(ts, be, "videomae", mae)) return -1;
    if (iv2_teachers_set_targets(ts, NULL, IV2_BF16)) return -1;
    double t_load = iv2_now() - t0;
    int B = b->B = fit_batch(ts, want);
    if (B < 0) return -1;
    b->img = ts->ivit->cfg.img;
    printf("bench_extract on %s (%s): InternViT %s (%.1fM params), VideoMAE %s (%.1fM params), %d recipe targets "
           "in bf16, %d px, %d frames, batches of %d views; weights set up in %.1f s\n",
           be->name, iv2_dtype_name(be->dtype), ivit, ts->ivit->n_elems / 1e6, mae, ts->mae->n_elems / 1e6,
           ts->n_targets, b->img, CLIP_FRAMES, B, t_load);
    print_plan(ts, B);

    b->frame_bytes = (size_t)b->img * b->img * 3;
    b->clip_bytes = CLIP_FRAMES * b->frame_bytes;
    size_t target_bytes = 0;
    for (int t = 0; t < ts->n_targets; t++) target_bytes += IV2_CACHE_VALUE_HDR + iv2_cache_target_bytes(&ts->targets[t]);
    b->view_bytes = target_bytes + IV2_CACHE_VIEW_HDR + STUDENT_FRAMES * b->frame_bytes;   /* as extract counts it */
    for (int i = 0; i < B; i++) {
        b->clips[i] = malloc(b->clip_bytes);
        b->frames[i] = malloc(STUDENT_FRAMES * b->frame_bytes);
        for (int t = 0; t < ts->n_targets; t++) b->enc[i][t] = malloc(IV2_CACHE_VALUE_HDR + iv2_cache_target_bytes(&ts->targets[t]));
    }
    b->host = be->alloc_host(be, iv2_teachers_batch_bytes(ts));
    b->landed = be->event_create(be);
    if (!b->host || !b->landed) return iv2_err("no host memory for a batch's downloads (%.0f MiB)", iv2_teachers_batch_bytes(ts) / 1048576.0);

    char *meta = bench_meta(ts, b->img);
    int rc = iv2_cache_set_meta(b->cache, meta);
    free(meta);
    if (rc) return -1;

    double st[4][64], t[4];
    if (run_one(b, 0, t)) return -1;   /* warm-up: cuBLASLt plans, arenas, the first map growth */
    printf("warm-up batch: teachers %.3f s, download %.3f s, encode %.3f s, write %.3f s\n", t[0], t[1], t[2], t[3]);
    for (int r = 0; r < reps; r++) {
        if (run_one(b, r + 1, t)) return -1;
        for (int k = 0; k < 4; k++) st[k][r] = t[k];
    }
    double m[4];
    for (int k = 0; k < 4; k++) m[k] = median(st[k], reps);
    /* the pipeline's three concurrent parts: device (teachers + downloads, one stream), encode, write */
    double part[3] = {m[0] + m[1], m[2], m[3]};
    int slow = 0;
    for (int k = 1; k < 3; k++) if (part[k] > part[slow]) slow = k;
    static const char *stage[4] = {"teachers", "download", "encode", "write"}, *parts[3] = {"device", "encode", "write"};
    double batch_bytes = (double)B * b->view_bytes;
    printf("%-28s %10s %12s\n", "stage (median of batches)", "s/batch", "views/s");
    for (int k = 0; k < 4; k++) printf("%-28s %10.4f %12.2f\n", stage[k], m[k], B / m[k]);
    printf("pipelined bound: %.2f views/s per device, set by %s%s (extract overlaps the device, encoding and "
           "writing)\n", B / part[slow], parts[slow], slow ? "" : " (teachers + download, one stream)");
    printf("bytes per view %.2f MB (targets %.2f MB + view record and %d student frames), download %.0f MB/s, "
           "write %.0f MB/s (%.1f transactions per batch, of <= %d views or 256 MiB)\n", b->view_bytes / 1e6,
           target_bytes / 1e6, STUDENT_FRAMES, iv2_teachers_batch_bytes(ts) / 1e6 / m[1], batch_bytes / 1e6 / m[3],
           (double)b->txns / (reps + 1), TXN_VIEWS);

    FILE *js = json_path ? fopen(json_path, "w") : NULL;
    if (json_path && !js) return iv2_err("%s: cannot write", json_path);
    if (js) {
        fprintf(js, "{\"device\": \"%s\", \"internvit\": \"%s\", \"videomae\": \"%s\", \"batch_views\": %d, "
                "\"batches_timed\": %d, \"targets\": %d, \"storage\": \"bf16\", \"img\": %d, \"frames\": %d, \"stages\": [",
                be->name, ivit, mae, B, reps, ts->n_targets, b->img, CLIP_FRAMES);
        for (int k = 0; k < 4; k++)
            fprintf(js, "%s{\"stage\": \"%s\", \"s_per_batch\": %.5f, \"views_per_s\": %.3f}", k ? ", " : "", stage[k], m[k], B / m[k]);
        fprintf(js, "], \"pipelined_views_per_s\": %.3f, \"bound_by\": \"%s\", \"bytes_per_view\": %zu, "
                "\"target_bytes_per_view\": %zu, \"download_mb_per_s\": %.1f, \"write_mb_per_s\": %.1f, "
                "\"backend_bytes\": %zu, \"host_bytes\": %zu, \"download_block_bytes\": %zu, \"activation_bytes\": %zu, "
                "\"weights_setup_s\": %.2f}\n",
                B / part[slow], parts[slow], b->view_bytes, target_bytes, iv2_teachers_batch_bytes(ts) / 1e6 / m[1],
                batch_bytes / 1e6 / m[3], ts->backend_bytes, ts->host_bytes, iv2_teachers_batch_bytes(ts),
                activation_bytes(ts), t_load);
        fclose(js);
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *spec = env_str("IV2_BENCH_DEVICE", "cuda");
    bench b;
    memset(&b, 0, sizeof b);
    b.be = iv2_backend_create(spec, 0);
    if (!b.be) { printf("skipped: %s\n", iv2_errmsg()); return 77; }
    char dir[512];
    snprintf(dir, sizeof dir, "%s", env_str("IV2_BENCH_CACHE", ""));
    if (!dir[0]) {
        mkdir("build", 0755);
        mkdir("build/tmp", 0755);
        snprintf(dir, sizeof dir, "build/tmp/bench_extract.%d", (int)getpid());
    }
    remove_cache(dir);   /* a stale one from a killed run would keep its views (no overwrite) */
    int rc = iv2_cache_open(&b.cache, dir, IV2_CACHE_RDWR) ? -1 : bench_run(&b, argc > 1 ? argv[1] : NULL);
    if (rc) fprintf(stderr, "bench_extract: %s\n", iv2_errmsg());
    iv2_cache_close(b.cache);
    remove_cache(dir);
    struct stat sb;
    if (stat(dir, &sb) == 0) { fprintf(stderr, "bench_extract: cache %s left behind\n", dir); rc = -1; }
    else printf("cache %s removed\n", dir);
    for (int i = 0; i < MAX_VIEWS; i++) {
        free(b.clips[i]);
        free(b.frames[i]);
        for (int t = 0; t < IV2_CACHE_MAX_TARGETS; t++) free(b.enc[i][t]);
    }
    if (b.host) b.be->free_host(b.be, b.host);
    if (b.landed) b.be->event_destroy(b.be, b.landed);
    iv2_teachers_free(&b.ts);
    iv2_backend_destroy(b.be);
    return rc ? 1 : 0;
}
