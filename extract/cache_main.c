/* cache_main.c: bin/iv2-cache: info, verify [--stats], merge, export-view. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/file.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include "cache.h"
#include "compute.h"
#include "err.h"
#include "log.h"
#include "safetensors.h"
#include "teachers.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: iv2-cache info DIR [--meta]        meta summary (--meta: the whole record), counts, bytes per target, errors\n"
            "       iv2-cache verify DIR [--drop-bad] [--stats [--sample N] [--teacher internvit=W] [--device cpu|cuda]]\n"
            "                                           every value's size and checksum, every view has every\n"
            "                                           target; prints a content digest (views, targets, errors).\n"
            "                                           --stats: mean and worst cosine of the stored InternViT\n"
            "                                           targets against an fp32 recomputation from the stored\n"
            "                                           frames on N views (8), on --device (cpu); weights from\n"
            "                                           the meta unless given. --drop-bad removes the bad views\n"
            "                                           (and their values); the next iv2-extract run redoes them\n"
            "       iv2-cache merge OUT IN [IN...]      join shards into OUT (created with IN's meta, shard 0/1)\n"
            "       iv2-cache export-view DIR ROW [VIEW] --out PREFIX\n"
            "                                           PREFIX_fK.ppm (frames) and PREFIX.safetensors (targets, fp32)\n");
}

static int print_error(void *ctx, int64_t row, const char *reason) {
    int *n = ctx;
    if ((*n)++ < 50) printf("  row %lld: %s\n", (long long)row, reason);
    return 0;
}

/* One line per top-level meta field; objects and arrays compact, cut at 100 characters
 * (--meta prints the whole record). */
static void print_meta_summary(const char *meta) {
    cJSON *j = cJSON_Parse(meta);
    if (!j) { printf("meta %s\n", meta); return; }
    const cJSON *f;
    cJSON_ArrayForEach(f, j) {
        if (!strcmp(f->string, "targets")) continue;   /* the table below lists them */
        char *v = cJSON_PrintUnformatted(f);
        if (v && strlen(v) > 100) strcpy(v + 96, " ...");
        printf("  %-18s %s\n", f->string, v ? v : "?");
        free(v);
    }
    cJSON_Delete(j);
}

static int cmd_info(const char *dir, int full_meta) {
    iv2_cache *c;
    if (iv2_cache_open(&c, dir, IV2_CACHE_RDONLY)) return -1;
    printf("cache %s\n", dir);
    if (full_meta) {
        cJSON *j = cJSON_Parse(iv2_cache_meta(c));
        char *pretty = j ? cJSON_Print(j) : NULL;
        printf("meta %s\n", pretty ? pretty : iv2_cache_meta(c));
        free(pretty);
        cJSON_Delete(j);
    } else print_meta_summary(iv2_cache_meta(c));
    int64_t nv = iv2_cache_count_views(c), ne = iv2_cache_count_errors(c);
    printf("views %lld\nerrors %lld\n", (long long)nv, (long long)ne);
    size_t total = 0;
    printf("%-12s %-10s %8s %6s %-5s %14s\n", "target", "teacher", "tokens", "dim", "dtype", "bytes/view");
    for (int i = 0; i < iv2_cache_n_targets(c); i++) {
        const iv2_cache_target *t = iv2_cache_target_at(c, i);
        size_t b = IV2_CACHE_VALUE_HDR + iv2_cache_target_bytes(t);
        total += b;
        printf("%-12s %-10s %8d %6d %-5s %14zu\n", t->name, t->teacher, t->tokens, t->dim, iv2_dtype_name(t->dtype), b);
    }
    iv2_cache_key *keys;
    int64_t n;
    if (iv2_cache_list_views(c, &keys, &n)) { iv2_cache_close(c); return -1; }
    if (n > 0) {
        iv2_cache_view v;
        if (iv2_cache_read_view(c, keys[0], &v, NULL) == 0) {
            size_t fb = IV2_CACHE_VIEW_HDR + iv2_cache_frames_bytes(&v);
            printf("%-12s %-10s %8d %6d %-5s %14zu\n", "(view)", "", v.n_student, v.size, "U8", fb);
            total += fb;
        }
    }
    free(keys);
    if (n > 0) printf("bytes per view %zu (%.2f MB), all views %.2f MB\n", total, total / 1e6, total * (double)nv / 1e6);
    else printf("bytes per view: no view stored yet (the targets alone: %zu)\n", total);
    if (ne > 0) {
        int k = 0;
        printf("errors:\n");
        iv2_cache_each_error(c, print_error, &k);
        if (k > 50) printf("  ... %d more\n", k - 50);
    }
    iv2_cache_close(c);
    return 0;
}

static double cosine(const float *a, const float *b, int d) {
    double ab = 0, aa = 0, bb = 0;
    for (int j = 0; j < d; j++) { ab += (double)a[j] * b[j]; aa += (double)a[j] * a[j]; bb += (double)b[j] * b[j]; }
    if (aa == 0 && bb == 0) return 1;
    if (aa == 0 || bb == 0) return 0;
    return ab / sqrt(aa * bb);
}

/* recompute the InternViT targets from the stored frames and compare (the VideoMAE targets need
 * the odd frames, which are not stored: reported as skipped) */
static int verify_stats(iv2_cache *c, int sample, const char *ivit_spec, const char *device) {
    cJSON *meta = cJSON_Parse(iv2_cache_meta(c));
    const char *spec = ivit_spec;
    char buf[600];
    if (!spec && meta) {
        cJSON *t = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(meta, "teachers"), "internvit");
        const char *w = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(t, "weights"));
        const char *p = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(meta, "paths"), "internvit"));
        if (w && !strncmp(w, "preset:", 7)) { snprintf(buf, sizeof buf, "%s", w); spec = buf; }
        else if (p && *p) { snprintf(buf, sizeof buf, "%s", p); spec = buf; }
    }
    cJSON_Delete(meta);
    int ni = 0;
    for (int i = 0; i < iv2_cache_n_targets(c); i++) ni += !strcmp(iv2_cache_target_at(c, i)->teacher, "internvit");
    for (int i = 0; i < iv2_cache_n_targets(c); i++)
        if (!strcmp(iv2_cache_target_at(c, i)->teacher, "videomae"))
            printf("stats %-12s skipped (VideoMAE needs the 16-frame clip; the cache keeps the 8 even frames)\n",
                   iv2_cache_target_at(c, i)->name);
    if (!ni) return 0;
    if (!spec) return iv2_err("--stats: InternViT weights unknown (give --teacher internvit=W)");
    iv2_backend *be = iv2_backend_create(device, 0);
    if (!be) return iv2_err_ctx("--device %s", device);
    iv2_teachers ts;
    memset(&ts, 0, sizeof ts);
    int rc = -1;
    iv2_cache_key *keys = NULL;
    int64_t n = 0;
    uint8_t *frames = NULL, *clip = NULL;
    float *got = NULL;
    double sum[IV2_CACHE_MAX_TARGETS] = {0}, worst[IV2_CACHE_MAX_TARGETS];
    int64_t cnt[IV2_CACHE_MAX_TARGETS] = {0};
    if (iv2_teachers_load(&ts, be, "internvit", spec)) goto out;
    /* the same targets as the cache, in fp32 */
    char list[2048] = "";
    for (int i = 0; i < iv2_cache_n_targets(c); i++) {
        const iv2_cache_target *t = iv2_cache_target_at(c, i);
        if (strcmp(t->teacher, "internvit")) continue;
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", *list ? "," : "", t->name);
    }
    if (iv2_teachers_set_targets(&ts, list, IV2_F32)) goto out;
    if (iv2_cache_list_views(c, &keys, &n)) goto out;
    for (int i = 0; i < IV2_CACHE_MAX_TARGETS; i++) worst[i] = 1;
    int64_t step = n > sample ? n / sample : 1;
    for (int64_t s = 0, done = 0; s < n && done < sample; s += step, done++) {
        iv2_cache_view v;
        if (iv2_cache_read_view(c, keys[s], &v, NULL)) goto out;
        size_t fb = (size_t)v.size * v.size * 3;
        frames = iv2_realloc(frames, iv2_cache_frames_bytes(&v));
        clip = iv2_realloc(clip, 2 * iv2_cache_frames_bytes(&v));
        if (iv2_cache_read_view(c, keys[s], &v, frames)) goto out;
        memset(clip, 0, 2 * iv2_cache_frames_bytes(&v));
        for (int f = 0; f < v.n_student; f++) memcpy(clip + (size_t)(2 * f) * fb, frames + (size_t)f * fb, fb);
        if (iv2_teachers_run(&ts, clip)) goto out;
        for (int k = 0; k < ts.n_targets; k++) {
            int ci = iv2_cache_find_target(c, ts.targets[k].name);
            const iv2_cache_target *t = iv2_cache_target_at(c, ci);
            got = iv2_realloc(got, sizeof(float) * (size_t)t->tokens * t->dim);
            if (iv2_cache_read_rows(c, keys[s], ci, NULL, 0, got)) goto out;
            for (int r = 0; r < t->tokens; r++) {
                double cs = cosine(got + (size_t)r * t->dim, ts.values[k] + (size_t)r * t->dim, t->dim);
                sum[k] += cs;
                cnt[k]++;
                if (cs < worst[k]) worst[k] = cs;
            }
        }
    }
    for (int k = 0; k < ts.n_targets; k++)
        printf("stats %-12s %-5s mean cosine %.7f worst %.7f over %lld tokens\n", ts.targets[k].name,
               iv2_dtype_name(iv2_cache_target_at(c, iv2_cache_find_target(c, ts.targets[k].name))->dtype),
               cnt[k] ? sum[k] / cnt[k] : 0.0, worst[k], (long long)cnt[k]);
    rc = 0;
out:
    free(keys);
    free(frames);
    free(clip);
    free(got);
    iv2_teachers_free(&ts);
    iv2_backend_destroy(be);
    return rc;
}

/* --drop-bad: remove the bad views (and their values) so that the next iv2-extract run extracts
 * them again; refused while an iv2-extract holds the folder (extract/pipeline.c's lock) */
static int drop_bad(iv2_cache *c, const char *dir, const iv2_cache_verify_report *r) {
    char lock[4200];
    snprintf(lock, sizeof lock, "%s/extract.lock", dir);
    int fd = open(lock, O_RDWR | O_CREAT, 0644);
    if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) && errno == EWOULDBLOCK) {
        close(fd);
        return iv2_err("verify --drop-bad: an iv2-extract is writing %s; run it when that has ended", dir);
    }
    int rc = iv2_cache_drop_views(c, r->bad_keys, r->n_bad_keys);
    for (int64_t i = 0; i < r->n_bad_keys && !rc; i++)
        printf("dropped row %lld view %u\n", (long long)r->bad_keys[i].row, r->bad_keys[i].view);
    if (!rc) printf("dropped %lld bad views: the next iv2-extract run (same manifest and settings) extracts them again\n",
                    (long long)r->n_bad_keys);
    if (fd >= 0) close(fd);   /* and the lock with it */
    return rc;
}

static int cmd_verify(int argc, char **argv) {
    const char *dir = NULL, *ivit = NULL, *device = "cpu";
    int stats = 0, sample = 8, drop = 0, sample_given = 0, device_given = 0;
    for (int i = 0; i < argc; i++) {
        int has_val = i + 1 < argc;
        if (!strcmp(argv[i], "--stats")) stats = 1;
        else if (!strcmp(argv[i], "--drop-bad")) drop = 1;
        else if (!has_val && (!strcmp(argv[i], "--sample") || !strcmp(argv[i], "--device") || !strcmp(argv[i], "--teacher")))
            return iv2_err("verify: %s needs a value", argv[i]);
        else if (!strcmp(argv[i], "--sample")) {
            char *e;
            long n = strtol(argv[++i], &e, 10);
            if (e == argv[i] || *e || n < 1 || n > 1 << 20) return iv2_err("verify: --sample '%s': want a view count >= 1", argv[i]);
            sample = (int)n;
            sample_given = 1;
        } else if (!strcmp(argv[i], "--device")) device = argv[++i], device_given = 1;
        else if (!strcmp(argv[i], "--teacher")) {
            const char *v = argv[++i];
            if (strncmp(v, "internvit=", 10)) return iv2_err("--teacher %s: only internvit=W is used by --stats", v);
            ivit = v + 10;
        } else if (argv[i][0] == '-') return iv2_err("verify: unknown option '%s'", argv[i]);
        else if (!dir) dir = argv[i];
        else return iv2_err("verify: one cache folder at a time ('%s')", argv[i]);
    }
    if (!dir) return iv2_err("verify: which cache folder?");
    if (!stats && (sample_given || ivit || device_given))
        return iv2_err("verify: --sample, --teacher and --device go with --stats (the storage-error check)");
    iv2_cache *c;
    if (iv2_cache_open(&c, dir, drop ? IV2_CACHE_RDWR : IV2_CACHE_RDONLY)) return -1;
    iv2_cache_verify_report r;
    int rc = iv2_cache_verify(c, &r, stderr);
    if (rc < 0) { free(r.bad_keys); iv2_cache_close(c); return -1; }
    printf("views %lld, errors %lld, bad %lld, bytes %llu, digest %016llx\n", (long long)r.views, (long long)r.errors,
           (long long)r.bad, (unsigned long long)r.bytes, (unsigned long long)r.digest);
    if (drop && r.n_bad_keys > 0) {   /* repaired: what is left to report is what the drop could not fix */
        if (drop_bad(c, dir, &r)) { free(r.bad_keys); iv2_cache_close(c); return -1; }
        free(r.bad_keys);
        if ((rc = iv2_cache_verify(c, &r, stderr)) < 0) { free(r.bad_keys); iv2_cache_close(c); return -1; }
        printf("after the drop: views %lld, errors %lld, bad %lld\n", (long long)r.views, (long long)r.errors, (long long)r.bad);
    }
    free(r.bad_keys);
    if (stats && verify_stats(c, sample, ivit, device)) { iv2_cache_close(c); return -1; }
    iv2_cache_close(c);
    if (rc) return iv2_err("cache %s: %lld problem%s (listed above; --drop-bad removes those views for re-extraction)",
                           dir, (long long)r.bad, r.bad == 1 ? "" : "s");
    return 0;
}

/* the merged cache takes the first input's meta with shard 0/1 */
static char *merged_meta(const char *meta) {
    cJSON *j = cJSON_Parse(meta);
    if (!j) return NULL;
    cJSON *s = cJSON_CreateObject();
    cJSON_AddNumberToObject(s, "k", 0);
    cJSON_AddNumberToObject(s, "n", 1);
    if (cJSON_GetObjectItemCaseSensitive(j, "shard")) cJSON_ReplaceItemInObjectCaseSensitive(j, "shard", s);
    else cJSON_AddItemToObject(j, "shard", s);
    char *out = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return out;
}

/* a folder's canonical path, also for one that does not exist yet (OUT): its parent's + its name */
static int canonical(const char *path, char *out, size_t cap) {
    char buf[4096];
    if (realpath(path, buf)) return snprintf(out, cap, "%s", buf) < (int)cap ? 0 : -1;
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", path);
    size_t n = strlen(parent);
    while (n > 1 && parent[n - 1] == '/') parent[--n] = 0;   /* "out/" is "out" */
    char *slash = strrchr(parent, '/');
    const char *name = slash ? slash + 1 : parent;
    if (slash) *slash = 0;
    if (!realpath(!slash ? "." : slash == parent ? "/" : parent, buf)) return -1;
    return snprintf(out, cap, "%s/%s", strcmp(buf, "/") ? buf : "", name) < (int)cap ? 0 : -1;
}

/* every input's meta agrees with the first's (and with OUT's, when OUT holds one), checked
 * before anything is written: a refused merge leaves OUT as it was */
static int merge_check_metas(int argc, char **argv) {
    char *first = NULL;
    int rc = 0;
    struct stat st;
    int has_out = stat(argv[0], &st) == 0;
    for (int i = has_out ? 0 : 1; i < argc && !rc; i++) {
        iv2_cache *c;
        if (iv2_cache_open(&c, argv[i], IV2_CACHE_RDONLY)) {
            if (i == 0) { iv2_err_clear(); continue; }   /* OUT is a folder but not a cache yet */
            return -1;
        }
        const char *m = iv2_cache_meta(c);
        if (!m) rc = i == 0 ? 0 : iv2_err("%s: the cache has no meta", argv[i]);
        else if (!first) first = iv2_strdup(m);
        else if (iv2_cache_meta_compare(m, first, (const char *const[]){"shard", NULL}))
            rc = iv2_err_ctx("merge: %s does not match %s (nothing was written)", argv[i], has_out ? argv[0] : argv[1]);
        iv2_cache_close(c);
    }
    free(first);
    return rc;
}

static int cmd_merge(int argc, char **argv) {
    if (argc < 2) return iv2_err("merge: want OUT IN [IN...]");
    /* LMDB: never open one environment twice in a process (OUT may not exist yet) */
    for (int i = 0; i < argc; i++)
        for (int j = i + 1; j < argc; j++) {
            char a[4096], b[4096];
            if (!canonical(argv[i], a, sizeof a) && !canonical(argv[j], b, sizeof b) && !strcmp(a, b))
                return iv2_err("merge: %s and %s are the same folder", argv[i], argv[j]);
        }
    if (merge_check_metas(argc, argv)) return -1;
    iv2_cache *dst = NULL;
    int rc = 0;
    for (int i = 1; i < argc && !rc; i++) {
        iv2_cache *src;
        if (iv2_cache_open(&src, argv[i], IV2_CACHE_RDONLY)) { rc = -1; break; }
        if (!dst) {
            char *m = merged_meta(iv2_cache_meta(src));
            if (!m) rc = iv2_err("%s: meta is not valid JSON", argv[i]);
            else if (iv2_cache_open(&dst, argv[0], IV2_CACHE_RDWR) || iv2_cache_set_meta(dst, m)) rc = -1;
            free(m);
        }
        int64_t copied = 0;
        if (!rc && iv2_cache_merge_from(dst, src, &copied)) rc = -1;
        if (!rc) iv2_info("merged %s: %lld views", argv[i], (long long)copied);
        iv2_cache_close(src);
    }
    if (!rc) printf("%s: %lld views, %lld errors\n", argv[0], (long long)iv2_cache_count_views(dst), (long long)iv2_cache_count_errors(dst));
    iv2_cache_close(dst);
    return rc;
}

/* the recorded reason of one row (iv2_cache_each_error) */
typedef struct row_reason { int64_t row; char *reason; } row_reason;
static int find_reason(void *ctx, int64_t row, const char *reason) {
    row_reason *r = ctx;
    if (row == r->row && !r->reason) r->reason = iv2_strdup(reason);
    return 0;
}

static int cmd_export(int argc, char **argv) {
    const char *dir = NULL, *out = NULL;
    long row = -1, view = 0;
    int npos = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--out")) return iv2_err("export-view: --out needs a value");
        else if (argv[i][0] == '-') return iv2_err("export-view: unknown option '%s'", argv[i]);
        else if (npos == 0) { dir = argv[i]; npos++; }
        else if (npos == 1) { char *e; row = strtol(argv[i], &e, 10); if (*e || row < 0) return iv2_err("export-view: bad row '%s'", argv[i]); npos++; }
        else if (npos == 2) { char *e; view = strtol(argv[i], &e, 10); if (*e || view < 0) return iv2_err("export-view: bad view '%s'", argv[i]); npos++; }
        else return iv2_err("export-view: too many arguments");
    }
    if (!dir || row < 0 || !out) return iv2_err("export-view: want DIR ROW [VIEW] --out PREFIX");
    iv2_cache *c;
    if (iv2_cache_open(&c, dir, IV2_CACHE_RDONLY)) return -1;
    iv2_cache_key k = {row, (uint32_t)view};
    iv2_cache_view v;
    int rc = -1;
    uint8_t *frames = NULL;
    float *vals[IV2_CACHE_MAX_TARGETS] = {0};
    iv2_st_writer w;
    iv2_st_writer_init(&w);
    if (iv2_cache_read_view(c, k, &v, NULL)) {   /* a row that failed: say why */
        row_reason rr = {row, NULL};
        char keep[1024];
        snprintf(keep, sizeof keep, "%s", iv2_errmsg());
        if (iv2_cache_each_error(c, find_reason, &rr) == 0 && rr.reason)
            iv2_err("%s (the row failed at extraction: %s)", keep, rr.reason);
        free(rr.reason);
        goto out;
    }
    frames = iv2_malloc(iv2_cache_frames_bytes(&v));
    if (iv2_cache_read_view(c, k, &v, frames)) goto out;
    size_t fb = (size_t)v.size * v.size * 3;
    for (int f = 0; f < v.n_student; f++) {
        char path[4200];
        snprintf(path, sizeof path, "%s_f%d.ppm", out, f);
        FILE *fp = fopen(path, "wb");
        if (!fp) { iv2_err("cannot write %s", path); goto out; }
        fprintf(fp, "P6\n%d %d\n255\n", v.size, v.size);
        size_t wr = fwrite(frames + f * fb, 1, fb, fp);
        if (fclose(fp) || wr != fb) { iv2_err("cannot write %s", path); goto out; }
    }
    for (int t = 0; t < iv2_cache_n_targets(c); t++) {
        const iv2_cache_target *tg = iv2_cache_target_at(c, t);
        vals[t] = iv2_malloc(sizeof(float) * (size_t)tg->tokens * tg->dim);
        if (iv2_cache_read_rows(c, k, t, NULL, 0, vals[t])) goto out;
        int64_t shape[2] = {tg->tokens, tg->dim};
        iv2_st_writer_add(&w, tg->name, IV2_F32, 2, shape, vals[t]);
    }
    int64_t fshape[4] = {v.n_student, v.size, v.size, 3};
    iv2_st_writer_add(&w, "frames", IV2_U8, 4, fshape, frames);
    char rec[4096];
    int n = snprintf(rec, sizeof rec, "{\"row\":%lld,\"view\":%u,\"frames\":[", (long long)v.row, v.view);
    for (int i = 0; i < v.num_frames; i++) n += snprintf(rec + n, sizeof rec - n, "%s%lld", i ? "," : "", (long long)v.frame[i]);
    n += snprintf(rec + n, sizeof rec - n, "],\"pts\":[");
    for (int i = 0; i < v.num_frames; i++) n += snprintf(rec + n, sizeof rec - n, "%s%.6f", i ? "," : "", v.pts[i]);
    snprintf(rec + n, sizeof rec - n, "],\"src\":[%d,%d],\"crop\":[%d,%d,%d,%d],\"flip\":%d,\"stream\":%d}", v.src_w, v.src_h,
             v.crop_x, v.crop_y, v.crop_w, v.crop_h, v.flip, v.stream);
    iv2_st_writer_meta(&w, "iv2.view", rec);
    char path[4200];
    snprintf(path, sizeof path, "%s.safetensors", out);
    if (iv2_st_writer_write(&w, path)) goto out;
    printf("%s: %d frames, %d targets\n", path, v.n_student, iv2_cache_n_targets(c));
    rc = 0;
out:
    iv2_st_writer_free(&w);
    for (int t = 0; t < IV2_CACHE_MAX_TARGETS; t++) free(vals[t]);
    free(frames);
    iv2_cache_close(c);
    return rc;
}

int main(int argc, char **argv) {
    iv2_omp_wait_default(argv);   /* OMP_WAIT_POLICY=passive unless set (log.h) */
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) { usage(argc < 2 ? stderr : stdout); return argc < 2; }
    for (int i = 2; i < argc; i++)   /* "iv2-cache verify --help" is a question, not a folder */
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage(stdout); return 0; }
    const char *cmd = argv[1];
    int rc;
    if (!strcmp(cmd, "info")) {
        int full = argc == 4 && !strcmp(argv[3], "--meta");
        rc = argc == 3 || full ? cmd_info(argv[2], full) : iv2_err("info: want one cache folder [--meta]");
    }
    else if (!strcmp(cmd, "verify")) rc = cmd_verify(argc - 2, argv + 2);
    else if (!strcmp(cmd, "merge")) rc = cmd_merge(argc - 2, argv + 2);
    else if (!strcmp(cmd, "export-view")) rc = cmd_export(argc - 2, argv + 2);
    else rc = iv2_err("unknown command '%s' (info, verify, merge, export-view; --help)", cmd);
    if (rc) iv2_die("iv2-cache");
    return 0;
}
