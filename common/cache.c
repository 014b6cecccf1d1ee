/* cache.c: the LMDB teacher-target cache (format in cache.h and docs/cache.md). */
#include "cache.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <lmdb.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include "err.h"

#define VALUE_MAGIC 0x54325649u   /* "IV2T" little-endian */
#define VIEW_MAGIC 0x56325649u    /* "IV2V" */
#define MIN_MAP ((size_t)256 << 20)
#define DEFAULT_MAX_MAP ((size_t)1 << 40)

struct iv2_cache {
    char *dir;
    MDB_env *env;
    int rdwr;
    MDB_dbi dbi_meta, dbi_views, dbi_errors;
    MDB_dbi dbi_t[IV2_CACHE_MAX_TARGETS];
    iv2_cache_target targets[IV2_CACHE_MAX_TARGETS];
    int n_targets;
    char *meta;
    size_t max_map;
};

/* fields that may differ between runs writing the same cache */
static const char *const META_FREE[] = {"tool_version", "created", "manifest_path", "manifest_bytes", "device",
                                        "threads", "paths", NULL};

/* ---------------------------------------------------------------- keys */

void iv2_cache_key_pack(uint8_t out[IV2_CACHE_KEY_SIZE], iv2_cache_key k) {
    uint64_t r = (uint64_t)k.row;
    for (int i = 0; i < 8; i++) out[i] = (uint8_t)(r >> (56 - 8 * i));
    for (int i = 0; i < 4; i++) out[8 + i] = (uint8_t)(k.view >> (24 - 8 * i));
}

iv2_cache_key iv2_cache_key_unpack(const uint8_t in[IV2_CACHE_KEY_SIZE]) {
    uint64_t r = 0;
    uint32_t v = 0;
    for (int i = 0; i < 8; i++) r = (r << 8) | in[i];
    for (int i = 0; i < 4; i++) v = (v << 8) | in[8 + i];
    iv2_cache_key k = {(int64_t)r, v};
    return k;
}

static void row_pack(uint8_t out[8], int64_t row) {
    for (int i = 0; i < 8; i++) out[i] = (uint8_t)((uint64_t)row >> (56 - 8 * i));
}

static int64_t row_unpack(const uint8_t in[8]) {
    uint64_t r = 0;
    for (int i = 0; i < 8; i++) r = (r << 8) | in[i];
    return (int64_t)r;
}

static int mdb_fail(const iv2_cache *c, const char *what, int rc) {
    /* LMDB reports a short write as EIO: look at the free space to tell a full disk */
    struct statvfs vfs;
    if (rc == ENOSPC || (rc == EIO && statvfs(c->dir, &vfs) == 0 && (double)vfs.f_bavail * vfs.f_frsize < 64e6))
        return iv2_err("cache %s: %s: disk full (No space left on device); the cache keeps its last committed state", c->dir, what);
    return iv2_err("cache %s: %s: %s", c->dir, what, mdb_strerror(rc));
}

/* ---------------------------------------------------------------- sizes */

size_t iv2_cache_target_bytes(const iv2_cache_target *t) {
    size_t n = (size_t)t->tokens * (size_t)t->dim;
    if (t->dtype == IV2_I8) return n + (size_t)t->tokens * 4;
    return n * iv2_dtype_size(t->dtype);
}

size_t iv2_cache_frames_bytes(const iv2_cache_view *v) {
    return (size_t)v->n_student * (size_t)v->size * (size_t)v->size * 3;
}

const char *iv2_cache_dir(const iv2_cache *c) { return c->dir; }
const char *iv2_cache_meta(const iv2_cache *c) { return c->meta; }
int iv2_cache_n_targets(const iv2_cache *c) { return c->n_targets; }
const iv2_cache_target *iv2_cache_target_at(const iv2_cache *c, int i) {
    return (i >= 0 && i < c->n_targets) ? &c->targets[i] : NULL;
}

int iv2_cache_find_target(const iv2_cache *c, const char *name) {
    for (int i = 0; i < c->n_targets; i++)
        if (strcmp(c->targets[i].name, name) == 0) return i;
    return iv2_err("cache %s has no target '%s'", c->dir, name);
}

void iv2_cache_set_max_map(iv2_cache *c, size_t bytes) { c->max_map = bytes; }

/* ---------------------------------------------------------------- value encoding */

typedef struct value_hdr {
    uint32_t magic;
    uint8_t dtype, version, pad[2];
    uint32_t tokens, dim;
    uint64_t payload;
    uint64_t checksum;
} value_hdr;
_Static_assert(sizeof(value_hdr) == IV2_CACHE_VALUE_HDR, "value header is 32 bytes");

void iv2_cache_encode_value(const iv2_cache_target *t, const float *src, void *dst) {
    size_t nt = (size_t)t->tokens, d = (size_t)t->dim, n = nt * d;
    uint8_t *pay = (uint8_t *)dst + IV2_CACHE_VALUE_HDR;
    switch (t->dtype) {
    case IV2_F32: memcpy(pay, src, n * 4); break;
    case IV2_BF16:
        for (size_t i = 0; i < n; i++) { uint16_t h = iv2_f32_to_bf16(src[i]); memcpy(pay + 2 * i, &h, 2); }
        break;
    case IV2_F16:
        for (size_t i = 0; i < n; i++) { uint16_t h = iv2_f32_to_f16(src[i]); memcpy(pay + 2 * i, &h, 2); }
        break;
    case IV2_I8: {
        /* per-token symmetric scale: q = round(x / s), s = max|x| / 127 */
        int8_t *q = (int8_t *)(pay + nt * 4);
        for (size_t r = 0; r < nt; r++) {
            const float *x = src + r * d;
            float m = 0;
            for (size_t j = 0; j < d; j++) m = fmaxf(m, fabsf(x[j]));
            float s = m / 127.0f;
            memcpy(pay + 4 * r, &s, 4);
            for (size_t j = 0; j < d; j++) {
                float v = s > 0 ? rintf(x[j] / s) : 0;
                if (v > 127) v = 127;
                if (v < -127) v = -127;
                q[r * d + j] = (int8_t)v;
            }
        }
        break;
    }
    default: iv2_panic("cache: storage dtype %s", iv2_dtype_name(t->dtype));
    }
    iv2_cache_seal_value(t, dst);
}

void iv2_cache_seal_value(const iv2_cache_target *t, void *dst) {
    const uint8_t *pay = (const uint8_t *)dst + IV2_CACHE_VALUE_HDR;
    value_hdr h = {VALUE_MAGIC, (uint8_t)t->dtype, 1, {0, 0}, (uint32_t)t->tokens, (uint32_t)t->dim,
                   iv2_cache_target_bytes(t), 0};
    h.checksum = iv2_hash64(pay, h.payload);
    memcpy(dst, &h, sizeof h);
}

/* header only: shape, dtype, size */
static int check_value_hdr(const iv2_cache_target *t, const void *val, size_t size, value_hdr *h) {
    if (size < IV2_CACHE_VALUE_HDR) return iv2_err("value of %zu bytes is shorter than its header", size);
    memcpy(h, val, sizeof *h);
    if (h->magic != VALUE_MAGIC) return iv2_err("bad value magic 0x%08x", h->magic);
    if (h->dtype != (uint8_t)t->dtype || (int)h->tokens != t->tokens || (int)h->dim != t->dim)
        return iv2_err("stored [%u][%u] %s, meta says [%d][%d] %s", h->tokens, h->dim,
                       h->dtype < IV2_DTYPE_COUNT ? iv2_dtype_name((iv2_dtype)h->dtype) : "?", t->tokens, t->dim,
                       iv2_dtype_name(t->dtype));
    size_t want = iv2_cache_target_bytes(t);
    if (h->payload != want || size != IV2_CACHE_VALUE_HDR + want)
        return iv2_err("value is %zu bytes, expected %zu", size, IV2_CACHE_VALUE_HDR + want);
    return 0;
}

int iv2_cache_check_value(const iv2_cache_target *t, const void *val, size_t size) {
    value_hdr h;
    if (check_value_hdr(t, val, size, &h)) return -1;
    uint64_t sum = iv2_hash64((const uint8_t *)val + IV2_CACHE_VALUE_HDR, h.payload);
    if (sum != h.checksum) return iv2_err("checksum mismatch (stored %016llx, computed %016llx)",
                                          (unsigned long long)h.checksum, (unsigned long long)sum);
    return 0;
}

/* token row r of a payload, to fp32 (the payload may be unaligned) */
static void decode_row(const iv2_cache_target *t, const uint8_t *pay, int r, float *out) {
    size_t d = (size_t)t->dim;
    switch (t->dtype) {
    case IV2_F32: memcpy(out, pay + (size_t)r * d * 4, d * 4); break;
    case IV2_BF16: {
        const uint8_t *p = pay + (size_t)r * d * 2;
        for (size_t j = 0; j < d; j++) { uint16_t h; memcpy(&h, p + 2 * j, 2); uint32_t u = (uint32_t)h << 16; memcpy(out + j, &u, 4); }
        break;
    }
    case IV2_F16: {
        const uint8_t *p = pay + (size_t)r * d * 2;
        for (size_t j = 0; j < d; j++) { uint16_t h; memcpy(&h, p + 2 * j, 2); out[j] = iv2_f16_to_f32(h); }
        break;
    }
    case IV2_I8: {
        float s;
        memcpy(&s, pay + 4 * (size_t)r, 4);
        const int8_t *q = (const int8_t *)(pay + (size_t)t->tokens * 4 + (size_t)r * d);
        for (size_t j = 0; j < d; j++) out[j] = (float)q[j] * s;
        break;
    }
    default: memset(out, 0, d * 4);
    }
}

int iv2_cache_decode_value(const iv2_cache_target *t, const void *val, size_t size, float *out) {
    value_hdr h;
    if (check_value_hdr(t, val, size, &h)) return -1;
    for (int r = 0; r < t->tokens; r++) decode_row(t, (const uint8_t *)val + IV2_CACHE_VALUE_HDR, r, out + (size_t)r * t->dim);
    return 0;
}

/* ---------------------------------------------------------------- view record */

typedef struct view_disk {
    uint32_t magic, version;
    iv2_cache_view v;
} view_disk;
_Static_assert(sizeof(view_disk) <= IV2_CACHE_VIEW_HDR, "view header fits");

static int check_view(const iv2_cache *c, const void *val, size_t size, iv2_cache_view *out) {
    view_disk d;
    if (size < IV2_CACHE_VIEW_HDR) return iv2_err("view record of %zu bytes is shorter than its header", size);
    memcpy(&d, val, sizeof d);
    if (d.magic != VIEW_MAGIC) return iv2_err("bad view magic 0x%08x", d.magic);
    if (d.v.n_student < 0 || d.v.n_student > IV2_CACHE_MAX_FRAMES || d.v.size <= 0 || d.v.size > 4096 ||
        d.v.num_frames < 0 || d.v.num_frames > IV2_CACHE_MAX_FRAMES)
        return iv2_err("view record has a bad shape (%d frames of %d)", d.v.n_student, d.v.size);
    if (size != IV2_CACHE_VIEW_HDR + iv2_cache_frames_bytes(&d.v))
        return iv2_err("view record is %zu bytes, expected %zu", size, IV2_CACHE_VIEW_HDR + iv2_cache_frames_bytes(&d.v));
    if (out) *out = d.v;
    (void)c;
    return 0;
}

/* ---------------------------------------------------------------- meta */

static int parse_targets(iv2_cache *c, const char *json) {
    cJSON *root = cJSON_Parse(json);
    if (!root) return iv2_err("cache %s: meta is not valid JSON", c->dir);
    int rc = 0, n = 0;
    cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "targets"), *it;
    if (!cJSON_IsArray(arr)) { rc = iv2_err("cache %s: meta has no \"targets\" array", c->dir); goto done; }
    cJSON_ArrayForEach(it, arr) {
        if (n >= IV2_CACHE_MAX_TARGETS) { rc = iv2_err("cache %s: more than %d targets", c->dir, IV2_CACHE_MAX_TARGETS); goto done; }
        iv2_cache_target *t = &c->targets[n];
        memset(t, 0, sizeof *t);
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "name"));
        const char *teacher = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "teacher"));
        const char *kind = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "kind"));
        const char *dt = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "dtype"));
        const char *post = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "post"));
        cJSON *blk = cJSON_GetObjectItemCaseSensitive(it, "block");
        cJSON *tok = cJSON_GetObjectItemCaseSensitive(it, "tokens");
        cJSON *dim = cJSON_GetObjectItemCaseSensitive(it, "dim");
        if (!name || !teacher || !kind || !dt || !cJSON_IsNumber(tok) || !cJSON_IsNumber(dim) ||
            strlen(name) >= sizeof t->name || strlen(teacher) >= sizeof t->teacher || strlen(kind) >= sizeof t->kind) {
            rc = iv2_err("cache %s: meta target %d is incomplete (needs name, teacher, kind, tokens, dim, dtype)", c->dir, n);
            goto done;
        }
        snprintf(t->name, sizeof t->name, "%s", name);
        snprintf(t->teacher, sizeof t->teacher, "%s", teacher);
        snprintf(t->kind, sizeof t->kind, "%s", kind);
        snprintf(t->post, sizeof t->post, "%s", post ? post : "none");
        t->block = cJSON_IsNumber(blk) ? (int)blk->valuedouble : -1;
        t->tokens = (int)tok->valuedouble;
        t->dim = (int)dim->valuedouble;
        if (iv2_dtype_parse(dt, &t->dtype) || !(t->dtype == IV2_F32 || t->dtype == IV2_BF16 || t->dtype == IV2_F16 || t->dtype == IV2_I8)) {
            rc = iv2_err("cache %s: target %s: storage dtype '%s' is not bf16, fp16, fp32 or int8", c->dir, name, dt);
            goto done;
        }
        if (t->tokens <= 0 || t->dim <= 0 || t->tokens > (1 << 20) || t->dim > (1 << 20)) {
            rc = iv2_err("cache %s: target %s: bad shape [%d][%d]", c->dir, name, t->tokens, t->dim);
            goto done;
        }
        for (int j = 0; j < n; j++)
            if (!strcmp(c->targets[j].name, t->name)) { rc = iv2_err("cache %s: target %s listed twice", c->dir, name); goto done; }
        n++;
    }
    c->n_targets = n;
done:
    cJSON_Delete(root);
    return rc;
}

/* open (or create) the target databases named in c->targets */
static int open_target_dbs(iv2_cache *c) {
    MDB_txn *txn;
    int rc = mdb_txn_begin(c->env, NULL, c->rdwr ? 0 : MDB_RDONLY, &txn);
    if (rc) return mdb_fail(c, "begin", rc);
    for (int i = 0; i < c->n_targets; i++) {
        char name[48];
        snprintf(name, sizeof name, "t:%s", c->targets[i].name);
        rc = mdb_dbi_open(txn, name, c->rdwr ? MDB_CREATE : 0, &c->dbi_t[i]);
        if (rc) {
            mdb_txn_abort(txn);
            if (rc == MDB_NOTFOUND) return iv2_err("cache %s: database of target %s is missing", c->dir, c->targets[i].name);
            return mdb_fail(c, c->targets[i].name, rc);
        }
    }
    rc = mdb_txn_commit(txn);
    if (rc) return mdb_fail(c, "open targets", rc);
    return 0;
}

static int is_free(const char *key, const char *const *extra) {
    for (int i = 0; META_FREE[i]; i++) if (!strcmp(key, META_FREE[i])) return 1;
    for (int i = 0; extra && extra[i]; i++) if (!strcmp(key, extra[i])) return 1;
    return 0;
}

static void json_short(const cJSON *j, char *buf, size_t cap) {
    if (cJSON_IsNumber(j)) {   /* exactly (cJSON prints 15 digits: two seeds near 2^53 would read the same) */
        double v = j->valuedouble;
        if (v == floor(v) && fabs(v) <= 9007199254740992.0) snprintf(buf, cap, "%.0f", v);
        else if ((double)(float)v == v) {   /* a float field written as a double: its shortest float form */
            for (int d = 6; d <= 9; d++) {
                snprintf(buf, cap, "%.*g", d, v);
                if ((float)strtod(buf, NULL) == (float)v) break;
            }
        } else {
            snprintf(buf, cap, "%.15g", v);
            if (strtod(buf, NULL) != v) snprintf(buf, cap, "%.17g", v);
        }
        return;
    }
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    snprintf(buf, cap, "%s", s ? s : "(absent)");
    if (strlen(buf) >= cap - 1 && cap > 4) strcpy(buf + cap - 4, "...");
    free(s);
}

/* first difference of a (here) and b (cache), its path in path */
static int json_diff(const cJSON *a, const cJSON *b, char *path, size_t cap, const char *const *ignore, int top) {
    if (cJSON_IsObject(a) && cJSON_IsObject(b)) {
        size_t len = strlen(path);
        const cJSON *it;
        for (int pass = 0; pass < 2; pass++) {
            const cJSON *x = pass ? b : a, *y = pass ? a : b;
            cJSON_ArrayForEach(it, x) {
                if (top && is_free(it->string, ignore)) continue;
                const cJSON *o = cJSON_GetObjectItemCaseSensitive(y, it->string);
                snprintf(path + len, cap - len, "%s%s", len ? "." : "", it->string);
                if (!o) return 1;
                if (!pass && json_diff(pass ? o : it, pass ? it : o, path, cap, NULL, 0)) return 1;
                path[len] = 0;
            }
        }
        return 0;
    }
    if (cJSON_IsArray(a) && cJSON_IsArray(b)) {
        int na = cJSON_GetArraySize(a), nb = cJSON_GetArraySize(b);
        size_t len = strlen(path);
        for (int i = 0; i < na && i < nb; i++) {
            snprintf(path + len, cap - len, "[%d]", i);
            if (json_diff(cJSON_GetArrayItem(a, i), cJSON_GetArrayItem(b, i), path, cap, NULL, 0)) return 1;
            path[len] = 0;
        }
        if (na != nb) { snprintf(path + len, cap - len, " (length)"); return 1; }
        return 0;
    }
    /* numbers exactly (cJSON_Compare allows a relative epsilon: two seeds near 2^53 one apart
     * would compare equal); both sides are parsed from the same printed forms */
    if (cJSON_IsNumber(a) && cJSON_IsNumber(b)) return a->valuedouble != b->valuedouble;
    return !cJSON_Compare(a, b, 1);
}

static const cJSON *json_at(const cJSON *root, const char *path) {
    /* walk "a.b[2].c" */
    char buf[512], *p = buf;
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *j = root;
    while (*p && j) {
        if (*p == '.') { p++; continue; }
        if (*p == '[') { int i = atoi(p + 1); j = cJSON_GetArrayItem(j, i); p = strchr(p, ']'); if (!p) break; p++; continue; }
        if (*p == ' ') break;
        char *e = p;
        while (*e && *e != '.' && *e != '[' && *e != ' ') e++;
        char save = *e;
        *e = 0;
        j = cJSON_GetObjectItemCaseSensitive(j, p);
        *e = save;
        p = e;
    }
    return j;
}

size_t iv2_cache_targets_json(char *buf, size_t cap, size_t at, const iv2_cache_target *t, int n) {
    at += (size_t)snprintf(buf + at, at < cap ? cap - at : 0, "\"targets\":[");
    for (int i = 0; i < n; i++) {
        const char *dt = t[i].dtype == IV2_BF16 ? "bf16" : t[i].dtype == IV2_F16 ? "fp16" : t[i].dtype == IV2_I8 ? "int8" : "fp32";
        at += (size_t)snprintf(buf + at, at < cap ? cap - at : 0,
                               "%s{\"name\":\"%s\",\"teacher\":\"%s\",\"kind\":\"%s\",\"block\":%d,\"tokens\":%d,"
                               "\"dim\":%d,\"dtype\":\"%s\",\"post\":\"%s\"}",
                               i ? "," : "", t[i].name, t[i].teacher, t[i].kind, t[i].block, t[i].tokens, t[i].dim, dt,
                               t[i].post);
    }
    at += (size_t)snprintf(buf + at, at < cap ? cap - at : 0, "]");
    return at;
}

int iv2_cache_meta_compare(const char *a, const char *b, const char *const *ignore) {
    return iv2_meta_compare_where(a, b, ignore, "in the cache");
}

int iv2_meta_compare_where(const char *a, const char *b, const char *const *ignore, const char *b_where) {
    cJSON *ja = cJSON_Parse(a), *jb = cJSON_Parse(b);
    int rc = 0;
    if (!ja || !jb) { rc = iv2_err("meta is not valid JSON"); goto done; }
    char path[512] = "";
    if (json_diff(ja, jb, path, sizeof path, ignore, 1)) {
        char va[160], vb[160];
        if (strstr(path, " (length)")) {
            *strstr(path, " (length)") = 0;
            rc = iv2_err("%s has %d entries here, %d %s", path, cJSON_GetArraySize(json_at(ja, path)),
                         cJSON_GetArraySize(json_at(jb, path)), b_where);
        } else {
            json_short(json_at(ja, path), va, sizeof va);
            json_short(json_at(jb, path), vb, sizeof vb);
            rc = iv2_err("%s is %s here, %s %s", path, va, vb, b_where);
        }
    }
done:
    cJSON_Delete(ja);
    cJSON_Delete(jb);
    return rc;
}

/* the meta and its targets' databases in one transaction: a crash or a full disk between two
 * would leave a meta whose target databases readers cannot find */
static int put_meta(iv2_cache *c, const char *json) {
    MDB_txn *txn;
    int rc = mdb_txn_begin(c->env, NULL, 0, &txn);
    if (rc) return mdb_fail(c, "begin", rc);
    for (int i = 0; i < c->n_targets; i++) {
        char name[48];
        snprintf(name, sizeof name, "t:%s", c->targets[i].name);
        rc = mdb_dbi_open(txn, name, MDB_CREATE, &c->dbi_t[i]);
        if (rc) { mdb_txn_abort(txn); return mdb_fail(c, c->targets[i].name, rc); }
    }
    MDB_val k = {4, "meta"}, v = {strlen(json), (void *)json};
    rc = mdb_put(txn, c->dbi_meta, &k, &v, 0);
    if (rc) { mdb_txn_abort(txn); return mdb_fail(c, "write meta", rc); }
    rc = mdb_txn_commit(txn);
    if (rc) return mdb_fail(c, "write meta", rc);
    return 0;
}

int iv2_cache_set_meta(iv2_cache *c, const char *json) {
    if (!c->rdwr) return iv2_err("cache %s is open read-only", c->dir);
    if (c->meta) {
        if (iv2_cache_meta_compare(json, c->meta, NULL))
            return iv2_err_ctx("cache %s was made with other settings", c->dir);
        return 0;
    }
    if (parse_targets(c, json)) return -1;
    if (put_meta(c, json)) return -1;
    c->meta = iv2_strdup(json);
    return 0;
}

int iv2_cache_update_meta(iv2_cache *c, const char *json, const char *const *may_change) {
    if (!c->meta) return iv2_cache_set_meta(c, json);
    if (!c->rdwr) return iv2_err("cache %s is open read-only", c->dir);
    if (iv2_cache_meta_compare(json, c->meta, may_change)) return iv2_err_ctx("cache %s was made with other settings", c->dir);
    if (put_meta(c, json)) return -1;
    free(c->meta);
    c->meta = iv2_strdup(json);
    return 0;
}

/* ---------------------------------------------------------------- open / close */

static int mkdir_p(const char *dir) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0777) && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(buf, 0777) && errno != EEXIST) return -1;
    return 0;
}

static int load_meta(iv2_cache *c) {
    MDB_txn *txn;
    int rc = mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn);
    if (rc) return mdb_fail(c, "begin", rc);
    MDB_val k = {4, "meta"}, v;
    rc = mdb_get(txn, c->dbi_meta, &k, &v);
    if (rc == 0) {
        c->meta = iv2_malloc(v.mv_size + 1);
        memcpy(c->meta, v.mv_data, v.mv_size);
        c->meta[v.mv_size] = 0;
    }
    mdb_txn_abort(txn);
    if (rc && rc != MDB_NOTFOUND) return mdb_fail(c, "read meta", rc);
    if (!c->meta) return 0;
    if (parse_targets(c, c->meta)) return -1;
    return open_target_dbs(c);
}

/* A write transaction mallocs one LMDB "overflow page" run per value (0.4-13 MB each) and frees
 * them all at commit. glibc serves allocations that large with fresh mmaps, so every value's
 * pages fault in zero-filled, once for each write: that alone took half the write time
 * (bench_cache: 0.41 -> 0.80 of a plain write with the heap reused). So a writer keeps such
 * blocks in the heap (the largest threshold glibc accepts, 32 MiB) and the heap's top up to
 * 1 GiB (about one transaction of full-recipe views) instead of returning it to the kernel.
 * Process-wide, once, in writers only. */
static void keep_large_blocks_in_heap(void) {
#ifdef __GLIBC__
    static int done;
    if (done) return;
    done = 1;
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

int iv2_cache_open(iv2_cache **out, const char *dir, int mode) {
    *out = NULL;
    iv2_cache *c = iv2_calloc(1, sizeof *c);
    c->dir = iv2_strdup(dir);
    c->rdwr = mode == IV2_CACHE_RDWR;
    c->max_map = DEFAULT_MAX_MAP;
    const char *mm = getenv("IV2_CACHE_MAX_MAP");
    if (mm && *mm) c->max_map = (size_t)strtoull(mm, NULL, 10);
    char path[4200];
    struct stat st;
    /* a file where the folder should be: say so (LMDB would say "Not a directory", or nothing) */
    if (stat(dir, &st) == 0 && !S_ISDIR(st.st_mode)) { iv2_err("cache %s is a file, not a folder", dir); goto fail; }
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    int exists = stat(path, &st) == 0;
    if (!c->rdwr && !exists) { iv2_err("no cache in %s (no data.mdb)", dir); goto fail; }
    if (!c->rdwr && st.st_size == 0) {   /* LMDB would say "Bad file descriptor" */
        iv2_err("no cache in %s (data.mdb is empty: a cache whose creation was cut off, or not a cache)", dir);
        goto fail;
    }
    if (c->rdwr && mkdir_p(dir)) { iv2_err("cannot create cache folder %s: %s", dir, strerror(errno)); goto fail; }
    if (c->rdwr && access(dir, W_OK)) { iv2_err("cache folder %s is not writable: %s", dir, strerror(errno)); goto fail; }

    if (c->rdwr) keep_large_blocks_in_heap();
    /* Readers keep the kernel's readahead: a batch reads the visible rows of each value, spread
     * over most of its pages, so from a cold disk whole runs of pages are wanted, and readahead
     * fetched a batch 3x faster (docs/cache.md). NORDAHEAD (LMDB's advice for records read at
     * random) stays for the writer, which reads only B-tree pages. */
    unsigned flags = MDB_NOTLS;
    flags |= c->rdwr ? (MDB_NOSYNC | MDB_NOMETASYNC | MDB_NORDAHEAD) : MDB_RDONLY;
    int rc;
    for (int attempt = 0; attempt < 2; attempt++) {
        rc = mdb_env_create(&c->env);
        if (rc) { mdb_fail(c, "create env", rc); goto fail; }
        mdb_env_set_maxdbs(c->env, IV2_CACHE_MAX_TARGETS + 8);
        mdb_env_set_maxreaders(c->env, 512);
        size_t map = 0;
        if (c->rdwr) {
            map = MIN_MAP;
            if (exists && (size_t)st.st_size > map) map = (size_t)st.st_size;
            if (map > c->max_map) map = c->max_map;
            if (exists && (size_t)st.st_size > map) map = (size_t)st.st_size;
        }
        mdb_env_set_mapsize(c->env, map);
        rc = mdb_env_open(c->env, dir, flags, 0664);
        if (rc == 0) break;
        mdb_env_close(c->env);
        c->env = NULL;
        /* a read-only folder or file system: no lock file possible; read without locking */
        if (!c->rdwr && (rc == EACCES || rc == EROFS) && !(flags & MDB_NOLOCK)) { flags |= MDB_NOLOCK; continue; }
        break;
    }
    if (rc) {
        if (rc == EACCES || rc == EROFS) iv2_err("cannot open cache %s %s: %s", dir, c->rdwr ? "for writing" : "", mdb_strerror(rc));
        else mdb_fail(c, "open", rc);
        goto fail;
    }
    MDB_txn *txn;
    rc = mdb_txn_begin(c->env, NULL, c->rdwr ? 0 : MDB_RDONLY, &txn);
    if (rc) { mdb_fail(c, "begin", rc); goto fail; }
    unsigned dflags = c->rdwr ? MDB_CREATE : 0;
    if ((rc = mdb_dbi_open(txn, "meta", dflags, &c->dbi_meta)) || (rc = mdb_dbi_open(txn, "views", dflags, &c->dbi_views)) ||
        (rc = mdb_dbi_open(txn, "errors", dflags, &c->dbi_errors))) {
        mdb_txn_abort(txn);
        if (rc == MDB_NOTFOUND) iv2_err("%s is not an iv2 cache (no meta/views/errors databases)", dir);
        else mdb_fail(c, "open databases", rc);
        goto fail;
    }
    rc = mdb_txn_commit(txn);
    if (rc) { mdb_fail(c, "open databases", rc); goto fail; }
    if (load_meta(c)) goto fail;
    if (!c->rdwr && !c->meta) { iv2_err("cache %s has no meta record", dir); goto fail; }
    *out = c;
    return 0;
fail:
    iv2_cache_close(c);
    return -1;
}

void iv2_cache_close(iv2_cache *c) {
    if (!c) return;
    if (c->env) {
        if (c->rdwr) mdb_env_sync(c->env, 1);
        mdb_env_close(c->env);
    }
    free(c->meta);
    free(c->dir);
    free(c);
}

/* ---------------------------------------------------------------- read */

static int read_begin(iv2_cache *c, MDB_txn **txn) {
    int rc = mdb_txn_begin(c->env, NULL, MDB_RDONLY, txn);
    if (rc == MDB_MAP_RESIZED) {  /* a writer grew the map: adopt its size */
        mdb_env_set_mapsize(c->env, 0);
        rc = mdb_txn_begin(c->env, NULL, MDB_RDONLY, txn);
    }
    if (rc) return mdb_fail(c, "begin read", rc);
    return 0;
}

static int64_t count_entries(iv2_cache *c, MDB_dbi dbi, const char *what) {
    MDB_txn *txn;
    MDB_stat st;
    if (read_begin(c, &txn)) return -1;
    int rc = mdb_stat(txn, dbi, &st);
    mdb_txn_abort(txn);
    if (rc) return mdb_fail(c, what, rc);
    return (int64_t)st.ms_entries;
}

int64_t iv2_cache_count_views(iv2_cache *c) { return count_entries(c, c->dbi_views, "stat views"); }
int64_t iv2_cache_count_errors(iv2_cache *c) { return count_entries(c, c->dbi_errors, "stat errors"); }

int iv2_cache_list_views(iv2_cache *c, iv2_cache_key **keys, int64_t *n) {
    *keys = NULL;
    *n = 0;
    MDB_txn *txn;
    MDB_cursor *cur;
    if (read_begin(c, &txn)) return -1;
    int rc = mdb_cursor_open(txn, c->dbi_views, &cur);
    if (rc) { mdb_txn_abort(txn); return mdb_fail(c, "cursor", rc); }
    int64_t cap = 0;
    MDB_val k, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != IV2_CACHE_KEY_SIZE) continue;
        if (*n == cap) { cap = cap ? 2 * cap : 1024; *keys = iv2_realloc(*keys, (size_t)cap * sizeof **keys); }
        (*keys)[(*n)++] = iv2_cache_key_unpack(k.mv_data);
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (rc != MDB_NOTFOUND) { free(*keys); *keys = NULL; *n = 0; return mdb_fail(c, "list views", rc); }
    return 0;
}

int iv2_cache_has_view(iv2_cache *c, iv2_cache_key key) {
    MDB_txn *txn;
    uint8_t kb[IV2_CACHE_KEY_SIZE];
    iv2_cache_key_pack(kb, key);
    if (read_begin(c, &txn)) return -1;
    MDB_val k = {sizeof kb, kb}, v;
    int rc = mdb_get(txn, c->dbi_views, &k, &v);
    mdb_txn_abort(txn);
    if (rc == MDB_NOTFOUND) return 0;
    if (rc) return mdb_fail(c, "read view", rc);
    return 1;
}

int iv2_cache_read_view(iv2_cache *c, iv2_cache_key key, iv2_cache_view *out, uint8_t *frames) {
    MDB_txn *txn;
    uint8_t kb[IV2_CACHE_KEY_SIZE];
    iv2_cache_key_pack(kb, key);
    if (read_begin(c, &txn)) return -1;
    MDB_val k = {sizeof kb, kb}, v;
    int rc = mdb_get(txn, c->dbi_views, &k, &v);
    if (rc) {
        mdb_txn_abort(txn);
        if (rc == MDB_NOTFOUND) return iv2_err("cache %s: no view (row %lld, view %u)", c->dir, (long long)key.row, key.view);
        return mdb_fail(c, "read view", rc);
    }
    iv2_cache_view vh;
    if (check_view(c, v.mv_data, v.mv_size, &vh)) {
        mdb_txn_abort(txn);
        return iv2_err_ctx("cache %s: view (row %lld, view %u)", c->dir, (long long)key.row, key.view);
    }
    if (out) *out = vh;
    if (frames) memcpy(frames, (const uint8_t *)v.mv_data + IV2_CACHE_VIEW_HDR, iv2_cache_frames_bytes(&vh));
    mdb_txn_abort(txn);
    return 0;
}

/* token row r of a payload in dtype dt: the stored bytes when dt is the storage dtype (no
 * decode, no rounding), else decoded to fp32 and, for another dt, converted from there (what a
 * caller converting fp32 rows gets, bit for bit); tmp: t->dim floats */
static void copy_row(const iv2_cache_target *t, const uint8_t *pay, int r, iv2_dtype dt, void *out, float *tmp) {
    size_t d = (size_t)t->dim;
    if (dt == t->dtype && dt != IV2_I8) {
        size_t rb = d * iv2_dtype_size(dt);
        memcpy(out, pay + (size_t)r * rb, rb);
    } else if (dt == IV2_F32) decode_row(t, pay, r, out);
    else {
        decode_row(t, pay, r, tmp);
        if (dt == IV2_BF16) iv2_f32_to_bf16_n(out, tmp, d);
        else iv2_convert(out, dt, tmp, IV2_F32, d);
    }
}

int iv2_cache_read_rows_as(iv2_cache *c, iv2_cache_key key, int target, const int32_t *rows, int n, iv2_dtype dt, void *out) {
    if (target < 0 || target >= c->n_targets) return iv2_err("cache %s: target index %d out of range (%d targets)", c->dir, target, c->n_targets);
    const iv2_cache_target *t = &c->targets[target];
    if (dt != IV2_F32 && dt != IV2_BF16 && dt != IV2_F16)
        return iv2_err("cache %s: target %s: rows cannot be read as %s", c->dir, t->name, iv2_dtype_name(dt));
    MDB_txn *txn;
    uint8_t kb[IV2_CACHE_KEY_SIZE];
    iv2_cache_key_pack(kb, key);
    if (read_begin(c, &txn)) return -1;
    MDB_val k = {sizeof kb, kb}, v;
    int rc = mdb_get(txn, c->dbi_t[target], &k, &v);
    if (rc) {
        mdb_txn_abort(txn);
        if (rc == MDB_NOTFOUND) return iv2_err("cache %s: target %s: no value for row %lld view %u", c->dir, t->name, (long long)key.row, key.view);
        return mdb_fail(c, t->name, rc);
    }
    value_hdr h;
    if (check_value_hdr(t, v.mv_data, v.mv_size, &h)) {
        mdb_txn_abort(txn);
        return iv2_err_ctx("cache %s: target %s row %lld view %u", c->dir, t->name, (long long)key.row, key.view);
    }
    const uint8_t *pay = (const uint8_t *)v.mv_data + IV2_CACHE_VALUE_HDR;
    int count = rows ? n : t->tokens;
    size_t ob = (size_t)t->dim * iv2_dtype_size(dt);   /* bytes of one output row */
    float *tmp = dt != IV2_F32 && dt != t->dtype ? iv2_malloc(sizeof(float) * (size_t)t->dim) : NULL;
    for (int i = 0; i < count; i++) {
        int r = rows ? rows[i] : i;
        if (r < 0 || r >= t->tokens) {
            mdb_txn_abort(txn);
            free(tmp);
            return iv2_err("cache %s: target %s: token row %d out of range [0, %d)", c->dir, t->name, r, t->tokens);
        }
        copy_row(t, pay, r, dt, (uint8_t *)out + (size_t)i * ob, tmp);
    }
    mdb_txn_abort(txn);
    free(tmp);
    return 0;
}

int iv2_cache_read_rows(iv2_cache *c, iv2_cache_key key, int target, const int32_t *rows, int n, float *out) {
    return iv2_cache_read_rows_as(c, key, target, rows, n, IV2_F32, out);
}

int iv2_cache_read_raw(iv2_cache *c, const char *dbname, const uint8_t *key, size_t key_size, void **val, size_t *size) {
    *val = NULL;
    *size = 0;
    MDB_dbi dbi;
    if (!strcmp(dbname, "views")) dbi = c->dbi_views;
    else if (!strcmp(dbname, "errors")) dbi = c->dbi_errors;
    else if (!strcmp(dbname, "meta")) dbi = c->dbi_meta;
    else {
        int t = iv2_cache_find_target(c, !strncmp(dbname, "t:", 2) ? dbname + 2 : dbname);
        if (t < 0) return -1;
        dbi = c->dbi_t[t];
    }
    MDB_txn *txn;
    if (read_begin(c, &txn)) return -1;
    MDB_val k = {key_size, (void *)key}, v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc) { mdb_txn_abort(txn); return rc == MDB_NOTFOUND ? iv2_err("cache %s: %s: key not found", c->dir, dbname) : mdb_fail(c, dbname, rc); }
    *val = iv2_malloc(v.mv_size ? v.mv_size : 1);
    memcpy(*val, v.mv_data, v.mv_size);
    *size = v.mv_size;
    mdb_txn_abort(txn);
    return 0;
}

int iv2_cache_each_error(iv2_cache *c, int (*fn)(void *ctx, int64_t row, const char *reason), void *ctx) {
    MDB_txn *txn;
    MDB_cursor *cur;
    if (read_begin(c, &txn)) return -1;
    int rc = mdb_cursor_open(txn, c->dbi_errors, &cur);
    if (rc) { mdb_txn_abort(txn); return mdb_fail(c, "cursor", rc); }
    MDB_val k, v;
    char buf[4096];
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 8) continue;
        size_t n = v.mv_size < sizeof buf - 1 ? v.mv_size : sizeof buf - 1;
        memcpy(buf, v.mv_data, n);
        buf[n] = 0;
        if (fn(ctx, row_unpack(k.mv_data), buf)) { rc = MDB_NOTFOUND; break; }
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (rc != MDB_NOTFOUND) return mdb_fail(c, "errors", rc);
    return 0;
}

/* ---------------------------------------------------------------- write */

static int grow_map(iv2_cache *c) {
    MDB_envinfo info;
    mdb_env_info(c->env, &info);
    size_t cur = info.me_mapsize;
    if (cur >= c->max_map)
        return iv2_err("cache %s is full: map size %zu bytes reached the limit (IV2_CACHE_MAX_MAP=%zu)", c->dir, cur, c->max_map);
    size_t next = cur * 2 > c->max_map ? c->max_map : cur * 2;
    int rc = mdb_env_set_mapsize(c->env, next);
    if (rc) return mdb_fail(c, "grow map", rc);
    return 0;
}

/* test hook: IV2_CACHE_CRASH_AT=N kills the process (SIGKILL) inside the write transaction
 * after the N-th value put of this process, to test that a killed extract leaves a valid cache */
static void crash_point(void) {
    static long count = 0, at = -1;
    if (at < 0) { const char *s = getenv("IV2_CACHE_CRASH_AT"); at = s && *s ? atol(s) : 0; }
    if (at > 0 && ++count == at) raise(SIGKILL);
}

/* put all of e / errors in txn; MDB_MAP_FULL is returned as is for the retry */
/* a row's recorded error removed (none is fine): a row holds views or an error, never both */
static int drop_row_error(iv2_cache *c, MDB_txn *txn, int64_t row) {
    uint8_t rb[8];
    row_pack(rb, row);
    MDB_val ek = {8, rb};
    int rc = mdb_del(txn, c->dbi_errors, &ek, NULL);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int put_batch(iv2_cache *c, MDB_txn *txn, const iv2_cache_entry *e, int n, const int64_t *err_rows,
                     const char *const *err_reasons, int n_err) {
    int rc;
    for (int i = 0; i < n; i++) {
        uint8_t kb[IV2_CACHE_KEY_SIZE];
        iv2_cache_key k = {e[i].view.row, e[i].view.view};
        iv2_cache_key_pack(kb, k);
        MDB_val key = {sizeof kb, kb}, val;
        if (mdb_get(txn, c->dbi_views, &key, &val) == 0) continue;   /* already stored: keep it */
        for (int t = 0; t < c->n_targets; t++) {
            const iv2_cache_target *tg = &c->targets[t];
            val.mv_size = IV2_CACHE_VALUE_HDR + iv2_cache_target_bytes(tg);
            val.mv_data = NULL;
            if ((rc = mdb_put(txn, c->dbi_t[t], &key, &val, MDB_RESERVE))) return rc;
            if (e[i].encoded) memcpy(val.mv_data, e[i].encoded[t], val.mv_size);
            else iv2_cache_encode_value(tg, e[i].values[t], val.mv_data);
            crash_point();
        }
        view_disk d;
        memset(&d, 0, sizeof d);
        d.magic = VIEW_MAGIC;
        d.version = IV2_CACHE_FORMAT;
        d.v = e[i].view;
        size_t fb = iv2_cache_frames_bytes(&d.v);
        d.v.frames_checksum = iv2_hash64(e[i].frames, fb);
        val.mv_size = IV2_CACHE_VIEW_HDR + fb;
        val.mv_data = NULL;
        /* the view record goes last: a view key present means the whole view is there */
        if ((rc = mdb_put(txn, c->dbi_views, &key, &val, MDB_RESERVE))) return rc;
        memset(val.mv_data, 0, IV2_CACHE_VIEW_HDR);
        memcpy(val.mv_data, &d, sizeof d);
        memcpy((uint8_t *)val.mv_data + IV2_CACHE_VIEW_HDR, e[i].frames, fb);
        if ((rc = drop_row_error(c, txn, k.row))) return rc;   /* a row that now succeeds loses its old error */
    }
    for (int i = 0; i < n_err; i++) {
        uint8_t rb[8];
        row_pack(rb, err_rows[i]);
        MDB_val key = {8, rb}, val = {strlen(err_reasons[i]), (void *)err_reasons[i]};
        if ((rc = mdb_put(txn, c->dbi_errors, &key, &val, 0))) return rc;
    }
    return 0;
}

/* grow the map ahead of a transaction of about `need` bytes (a MDB_MAP_FULL retry redoes the
 * whole transaction, so growing early saves that work) */
static int ensure_room(iv2_cache *c, size_t need) {
    MDB_envinfo info;
    MDB_stat st;
    mdb_env_info(c->env, &info);
    mdb_env_stat(c->env, &st);
    size_t used = ((size_t)info.me_last_pgno + 1) * st.ms_psize, map = info.me_mapsize;
    size_t want = used + need + need / 2;
    if (want <= map || map >= c->max_map) return 0;
    size_t next = map;
    while (next < want) next *= 2;
    if (next > c->max_map) next = c->max_map;
    int rc = mdb_env_set_mapsize(c->env, next);
    return rc ? mdb_fail(c, "grow map", rc) : 0;
}

int iv2_cache_put(iv2_cache *c, const iv2_cache_entry *e, int n, const int64_t *err_rows,
                  const char *const *err_reasons, int n_err) {
    if (!c->rdwr) return iv2_err("cache %s is open read-only", c->dir);
    if (!c->meta && n > 0) return iv2_err("cache %s: write meta before views", c->dir);
    size_t need = 0;
    for (int i = 0; i < n; i++) {
        need += IV2_CACHE_VIEW_HDR + iv2_cache_frames_bytes(&e[i].view);
        for (int t = 0; t < c->n_targets; t++) need += IV2_CACHE_VALUE_HDR + iv2_cache_target_bytes(&c->targets[t]);
    }
    if (ensure_room(c, need)) return -1;
    for (;;) {
        MDB_txn *txn;
        int rc = mdb_txn_begin(c->env, NULL, 0, &txn);
        if (rc) return mdb_fail(c, "begin write", rc);
        rc = put_batch(c, txn, e, n, err_rows, err_reasons, n_err);
        if (rc == 0) {
            rc = mdb_txn_commit(txn);
            if (rc == 0) return 0;
        } else {
            mdb_txn_abort(txn);
        }
        if (rc != MDB_MAP_FULL) return mdb_fail(c, "write views", rc);
        if (grow_map(c)) return -1;
    }
}

int iv2_cache_del_error(iv2_cache *c, int64_t row) {
    MDB_txn *txn;
    int rc = mdb_txn_begin(c->env, NULL, 0, &txn);
    if (rc) return mdb_fail(c, "begin write", rc);
    uint8_t rb[8];
    row_pack(rb, row);
    MDB_val k = {8, rb};
    rc = mdb_del(txn, c->dbi_errors, &k, NULL);
    if (rc && rc != MDB_NOTFOUND) { mdb_txn_abort(txn); return mdb_fail(c, "delete error", rc); }
    rc = mdb_txn_commit(txn);
    return rc ? mdb_fail(c, "delete error", rc) : 0;
}

/* ---------------------------------------------------------------- verify */

static uint64_t mix(uint64_t h, uint64_t x) {
    h ^= x + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    return h * 1099511628211ULL;
}

/* digest one whole database in key order; counts entries */
static int digest_db(iv2_cache *c, MDB_txn *txn, MDB_dbi dbi, uint64_t *h, uint64_t *bytes) {
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc) return mdb_fail(c, "cursor", rc);
    MDB_val k, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        *h = mix(*h, iv2_hash64(k.mv_data, k.mv_size));
        *h = mix(*h, iv2_hash64(v.mv_data, v.mv_size));
        if (bytes) *bytes += v.mv_size;
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND) return mdb_fail(c, "digest", rc);
    return 0;
}

static void report(void *stream, const char *fmt, ...) IV2_PRINTF(2, 3);
static void report(void *stream, const char *fmt, ...) {
    if (!stream) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf((FILE *)stream, fmt, ap);
    va_end(ap);
    fputc('\n', (FILE *)stream);
}

int iv2_cache_verify(iv2_cache *c, iv2_cache_verify_report *r, void *err_stream) {
    memset(r, 0, sizeof *r);
    MDB_txn *txn;
    if (read_begin(c, &txn)) return -1;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, c->dbi_views, &cur), ret = 0;
    if (rc) { mdb_txn_abort(txn); return mdb_fail(c, "cursor", rc); }
    MDB_val k, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        r->views++;
        if (k.mv_size != IV2_CACHE_KEY_SIZE) { r->bad++; report(err_stream, "views: key of %zu bytes", k.mv_size); continue; }
        iv2_cache_key key = iv2_cache_key_unpack(k.mv_data);
        int64_t bad0 = r->bad;
        iv2_cache_view vh;
        if (check_view(c, v.mv_data, v.mv_size, &vh)) {
            r->bad++;
            report(err_stream, "row %lld view %u: %s", (long long)key.row, key.view, iv2_errmsg());
        } else {
            if (vh.row != key.row || vh.view != key.view) {
                r->bad++;
                report(err_stream, "row %lld view %u: record says row %lld view %u", (long long)key.row, key.view, (long long)vh.row, vh.view);
            }
            if (iv2_hash64((const uint8_t *)v.mv_data + IV2_CACHE_VIEW_HDR, iv2_cache_frames_bytes(&vh)) != vh.frames_checksum) {
                r->bad++;
                report(err_stream, "row %lld view %u: frames checksum mismatch", (long long)key.row, key.view);
            }
            for (int t = 0; t < c->n_targets; t++) {
                MDB_val tv;
                int g = mdb_get(txn, c->dbi_t[t], &k, &tv);
                if (g) {
                    r->bad++;
                    report(err_stream, "row %lld view %u: target %s: %s", (long long)key.row, key.view, c->targets[t].name,
                           g == MDB_NOTFOUND ? "missing" : mdb_strerror(g));
                    continue;
                }
                if (iv2_cache_check_value(&c->targets[t], tv.mv_data, tv.mv_size)) {
                    r->bad++;
                    report(err_stream, "row %lld view %u: target %s: %s", (long long)key.row, key.view, c->targets[t].name, iv2_errmsg());
                }
            }
        }
        if (r->bad > bad0) {   /* the view to drop for a repair (iv2_cache_drop_views) */
            r->bad_keys = iv2_realloc(r->bad_keys, (size_t)(r->n_bad_keys + 1) * sizeof *r->bad_keys);
            r->bad_keys[r->n_bad_keys++] = key;
        }
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND) { mdb_txn_abort(txn); return mdb_fail(c, "verify", rc); }
    /* values without a view record (left by nothing we write, but count them) */
    for (int t = 0; t < c->n_targets; t++) {
        MDB_stat st;
        if (mdb_stat(txn, c->dbi_t[t], &st) == 0 && (int64_t)st.ms_entries != r->views) {
            r->bad++;
            report(err_stream, "target %s holds %zu values for %lld views", c->targets[t].name, st.ms_entries, (long long)r->views);
        }
    }
    uint64_t h = 1469598103934665603ULL;
    if (digest_db(c, txn, c->dbi_views, &h, &r->bytes)) ret = -1;
    for (int t = 0; t < c->n_targets && !ret; t++) {
        h = mix(h, iv2_hash64(c->targets[t].name, strlen(c->targets[t].name)));
        if (digest_db(c, txn, c->dbi_t[t], &h, &r->bytes)) ret = -1;
    }
    if (!ret && digest_db(c, txn, c->dbi_errors, &h, NULL)) ret = -1;
    MDB_stat st;
    if (mdb_stat(txn, c->dbi_errors, &st) == 0) r->errors = (int64_t)st.ms_entries;
    mdb_txn_abort(txn);
    r->digest = h;
    if (ret) return -1;
    return r->bad ? 1 : 0;
}

int iv2_cache_drop_views(iv2_cache *c, const iv2_cache_key *keys, int64_t n) {
    if (!c->rdwr) return iv2_err("cache %s is open read-only", c->dir);
    MDB_txn *txn;
    int rc = mdb_txn_begin(c->env, NULL, 0, &txn);
    if (rc) return mdb_fail(c, "begin", rc);
    for (int64_t i = 0; i < n && !rc; i++) {
        uint8_t kb[IV2_CACHE_KEY_SIZE];
        iv2_cache_key_pack(kb, keys[i]);
        MDB_val k = {sizeof kb, kb};
        rc = mdb_del(txn, c->dbi_views, &k, NULL);
        for (int t = 0; t < c->n_targets && (rc == 0 || rc == MDB_NOTFOUND); t++) rc = mdb_del(txn, c->dbi_t[t], &k, NULL);
        if (rc == MDB_NOTFOUND) rc = 0;
    }
    if (rc) { mdb_txn_abort(txn); return mdb_fail(c, "drop views", rc); }
    rc = mdb_txn_commit(txn);
    if (rc) return mdb_fail(c, "commit", rc);
    return mdb_env_sync(c->env, 1) ? mdb_fail(c, "sync", rc) : 0;
}

/* ---------------------------------------------------------------- merge */

static const char *const MERGE_IGNORE[] = {"shard", NULL};

/* whether c holds a view of the row (8 bytes, big-endian) in txn */
static int has_row_view(iv2_cache *c, MDB_txn *txn, const uint8_t rb[8]) {
    MDB_cursor *cur;
    if (mdb_cursor_open(txn, c->dbi_views, &cur)) return 0;
    uint8_t kb[IV2_CACHE_KEY_SIZE];
    iv2_cache_key_pack(kb, (iv2_cache_key){row_unpack(rb), 0});
    MDB_val k = {sizeof kb, kb}, v;
    int has = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE) == 0 && k.mv_size == sizeof kb && !memcmp(k.mv_data, rb, 8);
    mdb_cursor_close(cur);
    return has;
}

/* every view, target value and error of src into dst, in transactions of a batch of keys; each
 * value's and each view's frames checksum checked before it is copied */
int iv2_cache_merge_from(iv2_cache *dst, iv2_cache *src, int64_t *copied) {
    if (copied) *copied = 0;
    if (!dst->rdwr) return iv2_err("cache %s is open read-only", dst->dir);
    if (!dst->meta) return iv2_err("cache %s: write meta before merging", dst->dir);
    if (iv2_cache_meta_compare(src->meta, dst->meta, MERGE_IGNORE))
        return iv2_err_ctx("cannot merge %s into %s", src->dir, dst->dir);
    if (src->n_targets != dst->n_targets) return iv2_err("cannot merge %s: other target list", src->dir);
    iv2_cache_key *keys;
    int64_t n;
    if (iv2_cache_list_views(src, &keys, &n)) return -1;
    int rc = 0;
    const int64_t batch = 16;
    for (int64_t i0 = 0; i0 < n && !rc; i0 += batch) {
        int64_t i1 = i0 + batch < n ? i0 + batch : n;
        for (;;) {
            MDB_txn *rt, *wt;
            if (read_begin(src, &rt)) { rc = -1; break; }
            int m = mdb_txn_begin(dst->env, NULL, 0, &wt);
            if (m) { mdb_txn_abort(rt); rc = mdb_fail(dst, "begin write", m); break; }
            int64_t got = 0;
            for (int64_t i = i0; i < i1 && !m && !rc; i++) {
                uint8_t kb[IV2_CACHE_KEY_SIZE];
                iv2_cache_key_pack(kb, keys[i]);
                MDB_val k = {sizeof kb, kb}, v, w;
                if (mdb_get(wt, dst->dbi_views, &k, &w) == 0) continue;
                for (int t = 0; t < src->n_targets && !m && !rc; t++) {
                    int di = iv2_cache_find_target(dst, src->targets[t].name);
                    if (di < 0) { rc = -1; break; }
                    if ((m = mdb_get(rt, src->dbi_t[t], &k, &v))) break;
                    if (iv2_cache_check_value(&dst->targets[di], v.mv_data, v.mv_size)) {
                        rc = iv2_err_ctx("%s: row %lld view %u target %s", src->dir, (long long)keys[i].row, keys[i].view, src->targets[t].name);
                        break;
                    }
                    m = mdb_put(wt, dst->dbi_t[di], &k, &v, 0);
                }
                if (m || rc) break;
                if ((m = mdb_get(rt, src->dbi_views, &k, &v))) break;
                iv2_cache_view vh;
                if (check_view(src, v.mv_data, v.mv_size, &vh)) { rc = iv2_err_ctx("%s: row %lld view %u", src->dir, (long long)keys[i].row, keys[i].view); break; }
                if (iv2_hash64((const uint8_t *)v.mv_data + IV2_CACHE_VIEW_HDR, iv2_cache_frames_bytes(&vh)) != vh.frames_checksum) {
                    rc = iv2_err("%s: row %lld view %u: frames checksum mismatch (iv2-cache verify --drop-bad %s, then "
                                 "re-extract)", src->dir, (long long)keys[i].row, keys[i].view, src->dir);
                    break;
                }
                if ((m = mdb_put(wt, dst->dbi_views, &k, &v, 0))) break;
                if ((m = drop_row_error(dst, wt, keys[i].row))) break;   /* as iv2_cache_put */
                got++;
            }
            mdb_txn_abort(rt);
            if (rc) { mdb_txn_abort(wt); break; }
            if (!m) m = mdb_txn_commit(wt);
            else mdb_txn_abort(wt);
            if (m == 0) { if (copied) *copied += got; break; }
            if (m != MDB_MAP_FULL) { rc = mdb_fail(dst, "merge", m); break; }
            if (grow_map(dst)) { rc = -1; break; }
        }
    }
    free(keys);
    if (rc) return -1;
    /* errors: rows of src that dst has neither as views nor as errors */
    for (;;) {
        MDB_txn *rt, *wt;
        if (read_begin(src, &rt)) return -1;
        int m = mdb_txn_begin(dst->env, NULL, 0, &wt);
        if (m) { mdb_txn_abort(rt); return mdb_fail(dst, "begin write", m); }
        MDB_cursor *cur;
        MDB_val k, v;
        if (!(m = mdb_cursor_open(rt, src->dbi_errors, &cur))) {
            for (m = mdb_cursor_get(cur, &k, &v, MDB_FIRST); m == 0; m = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
                if (k.mv_size != 8 || has_row_view(dst, wt, (const uint8_t *)k.mv_data)) continue;
                if ((m = mdb_put(wt, dst->dbi_errors, &k, &v, MDB_NOOVERWRITE)) == MDB_KEYEXIST) m = 0;
                if (m) break;
            }
            mdb_cursor_close(cur);
            if (m == MDB_NOTFOUND) m = 0;
        }
        mdb_txn_abort(rt);
        if (!m) m = mdb_txn_commit(wt);
        else mdb_txn_abort(wt);
        if (m == 0) return 0;
        if (m != MDB_MAP_FULL) return mdb_fail(dst, "merge errors", m);
        if (grow_map(dst)) return -1;
    }
}

/* ---------------------------------------------------------------- shard sets */

int iv2_cache_set_open(iv2_cache_set *s, const char *dirs) {
    memset(s, 0, sizeof *s);
    char *list = iv2_strdup(dirs), *save = NULL;
    for (char *d = strtok_r(list, ",", &save); d; d = strtok_r(NULL, ",", &save)) {
        if (!*d) continue;
        for (int i = 0; i < s->n_shards; i++)   /* the same folder twice (or through a link): its views would count twice */
            if (iv2_same_file(d, s->shards[i]->dir)) {
                iv2_err("cache %s is listed twice (as %s and %s)", d, s->shards[i]->dir, d);
                goto fail;
            }
        iv2_cache *c;
        if (iv2_cache_open(&c, d, IV2_CACHE_RDONLY)) goto fail;
        s->shards = iv2_realloc(s->shards, (size_t)(s->n_shards + 1) * sizeof *s->shards);
        s->shards[s->n_shards++] = c;
        if (s->n_shards > 1 && iv2_cache_meta_compare(c->meta, s->shards[0]->meta, MERGE_IGNORE)) {
            iv2_err_ctx("cache %s does not match %s", d, s->shards[0]->dir);
            goto fail;
        }
        iv2_cache_key *keys;
        int64_t n;
        if (iv2_cache_list_views(c, &keys, &n)) goto fail;
        s->view_key = iv2_realloc(s->view_key, (size_t)(s->n_views + n + 1) * sizeof *s->view_key);
        s->view_shard = iv2_realloc(s->view_shard, (size_t)(s->n_views + n + 1) * sizeof *s->view_shard);
        for (int64_t i = 0; i < n; i++) {
            s->view_key[s->n_views + i] = keys[i];
            s->view_shard[s->n_views + i] = s->n_shards - 1;
        }
        s->n_views += n;
        free(keys);
    }
    free(list);
    if (!s->n_shards) return iv2_err("no cache folder in '%s'", dirs);
    return 0;
fail:
    free(list);
    iv2_cache_set_close(s);
    return -1;
}

void iv2_cache_set_close(iv2_cache_set *s) {
    for (int i = 0; i < s->n_shards; i++) iv2_cache_close(s->shards[i]);
    free(s->shards);
    free(s->view_key);
    free(s->view_shard);
    memset(s, 0, sizeof *s);
}

int iv2_cache_set_read_rows(iv2_cache_set *s, int64_t i, int target, const int32_t *rows, int n, float *out) {
    if (i < 0 || i >= s->n_views) return iv2_err("view %lld out of range (%lld views)", (long long)i, (long long)s->n_views);
    return iv2_cache_read_rows(s->shards[s->view_shard[i]], s->view_key[i], target, rows, n, out);
}

int iv2_cache_set_read_rows_as(iv2_cache_set *s, int64_t i, int target, const int32_t *rows, int n, iv2_dtype dt, void *out) {
    if (i < 0 || i >= s->n_views) return iv2_err("view %lld out of range (%lld views)", (long long)i, (long long)s->n_views);
    return iv2_cache_read_rows_as(s->shards[s->view_shard[i]], s->view_key[i], target, rows, n, dt, out);
}

int iv2_cache_set_read_view(iv2_cache_set *s, int64_t i, iv2_cache_view *v, uint8_t *frames) {
    if (i < 0 || i >= s->n_views) return iv2_err("view %lld out of range (%lld views)", (long long)i, (long long)s->n_views);
    return iv2_cache_read_view(s->shards[s->view_shard[i]], s->view_key[i], v, frames);
}
