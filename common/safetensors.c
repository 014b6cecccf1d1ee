/* safetensors.c: reader (mmap + validation as in huggingface/safetensors tensor.rs) and
 * writer (space-padded 8-byte-aligned header, atomic temp+fsync+rename). */
#include "safetensors.h"
#include "err.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER 100000000ull  /* the reference MAX_HEADER_SIZE */

/* ---------------------------------------------------------------- reader */

/* canonical safetensors dtype names only (no lower-case aliases inside files) */
static int parse_file_dtype(const char *s, iv2_dtype *out) {
    for (int i = 0; i < IV2_DTYPE_COUNT; i++)
        if (!strcmp(s, iv2_dtype_name((iv2_dtype)i))) { *out = (iv2_dtype)i; return 0; }
    return -1;
}

/* a JSON number that is a non-negative integer below 2^53 (exact in a double) */
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || d != floor(d)) return -1;
    *out = (uint64_t)d;
    return 0;
}

static const char *json_kind(const cJSON *v) {
    if (!v) return "nothing";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    return "invalid";
}

typedef struct { uint64_t begin, end; } span;

static int parse_tensor(iv2_st_tensor *t, span *sp, const cJSON *e) {
    if (!cJSON_IsObject(e)) return iv2_err("entry is %s, not an object", json_kind(e));
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt)) return iv2_err("\"dtype\" is %s, expected a string", json_kind(dt));
    if (parse_file_dtype(dt->valuestring, &t->dtype))
        return iv2_err("unknown dtype \"%.40s\"", dt->valuestring);
    if (!cJSON_IsArray(sh)) return iv2_err("\"shape\" is %s, expected an array", json_kind(sh));
    int nd = cJSON_GetArraySize(sh);
    if (nd > IV2_ST_MAX_DIMS) return iv2_err("shape has %d dimensions, at most %d supported", nd, IV2_ST_MAX_DIMS);
    t->ndim = nd;
    uint64_t numel = 1;
    int i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, sh) {
        uint64_t d;
        if (json_uint(v, &d)) return iv2_err("shape[%d] is not a non-negative integer", i);
        t->shape[i++] = (int64_t)d;
        if (__builtin_mul_overflow(numel, d, &numel)) return iv2_err("shape overflows the element count");
    }
    uint64_t nbytes;
    if (__builtin_mul_overflow(numel, (uint64_t)iv2_dtype_size(t->dtype), &nbytes))
        return iv2_err("shape overflows the byte count");
    t->numel = (size_t)numel;
    t->nbytes = (size_t)nbytes;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2)
        return iv2_err("\"data_offsets\" must be an array [begin, end]");
    if (json_uint(off->child, &sp->begin) || json_uint(off->child->next, &sp->end))
        return iv2_err("\"data_offsets\" must hold non-negative integers");
    if (sp->end < sp->begin)
        return iv2_err("data_offsets [%llu, %llu] end before begin", (unsigned long long)sp->begin, (unsigned long long)sp->end);
    if (sp->end - sp->begin != nbytes)
        return iv2_err("data_offsets span %llu bytes but %s x %llu elements need %llu",
                       (unsigned long long)(sp->end - sp->begin), iv2_dtype_name(t->dtype),
                       (unsigned long long)numel, (unsigned long long)nbytes);
    return 0;
}

static int parse_metadata(iv2_st_file *f, const cJSON *m) {
    if (!cJSON_IsObject(m)) return iv2_err("__metadata__ is %s, expected an object of strings", json_kind(m));
    int n = cJSON_GetArraySize(m);
    f->meta_keys = iv2_calloc((size_t)n, sizeof(char *));
    f->meta_vals = iv2_calloc((size_t)n, sizeof(char *));
    const cJSON *v;
    cJSON_ArrayForEach(v, m) {
        if (!cJSON_IsString(v)) return iv2_err("__metadata__ \"%.80s\" is %s, expected a string", v->string, json_kind(v));
        f->meta_keys[f->n_meta] = iv2_strdup(v->string);
        f->meta_vals[f->n_meta++] = iv2_strdup(v->valuestring);
    }
    return 0;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const iv2_st_tensor *)a)->name, ((const iv2_st_tensor *)b)->name);
}

typedef struct { span s; int i; } order;
static int cmp_order(const void *a, const void *b) {
    const order *x = a, *y = b;
    if (x->s.begin != y->s.begin) return x->s.begin < y->s.begin ? -1 : 1;
    if (x->s.end != y->s.end) return x->s.end < y->s.end ? -1 : 1;
    return x->i - y->i;
}

/* Validate the header and the tensor layout; fills f (f->path set by the caller). */
static int parse_buffer(iv2_st_file *f, const uint8_t *buf, size_t size) {
    if (size == 0) return iv2_err("empty file");
    if (size < 8) return iv2_err("file is %zu bytes, shorter than the 8-byte header length", size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | buf[i]; /* little-endian u64 */
    if (n > ST_MAX_HEADER)
        return iv2_err("not a safetensors file? its header length %llu exceeds the limit of %llu bytes",
                       (unsigned long long)n, ST_MAX_HEADER);
    if (n > size - 8) return iv2_err("header length %llu goes beyond the file (%zu bytes)", (unsigned long long)n, size);
    const char *h = (const char *)buf + 8;
    if (n < 2 || h[0] != '{') return iv2_err("header does not start with '{'");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(h, (size_t)n, &end, 0);
    if (!root) {
        size_t at = end && end >= h && end <= h + n ? (size_t)(end - h) : 0;
        return iv2_err("header is not valid JSON (at byte %zu of %llu)", at, (unsigned long long)n);
    }
    int rc = 0;
    for (const char *p = end; p < h + n; p++)   /* only space padding may follow the object */
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            rc = iv2_err("header has trailing bytes after the JSON object (at byte %zu)", (size_t)(p - h));
            goto out;
        }
    if (!cJSON_IsObject(root)) { rc = iv2_err("header is not a JSON object"); goto out; }

    int cap = cJSON_GetArraySize(root), nmeta = 0;
    f->tensors = iv2_calloc((size_t)cap, sizeof(iv2_st_tensor));
    span *sp = iv2_calloc((size_t)cap, sizeof(span));
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (!strcmp(e->string, "__metadata__")) {
            if (nmeta++) { rc = iv2_err("duplicate __metadata__"); break; }
            if ((rc = parse_metadata(f, e))) break;
            continue;
        }
        iv2_st_tensor *t = &f->tensors[f->n_tensors];
        t->name = iv2_strdup(e->string);
        f->n_tensors++;
        if ((rc = parse_tensor(t, &sp[f->n_tensors - 1], e))) {
            iv2_err_ctx("tensor '%.200s'", t->name);
            break;
        }
    }
    if (rc) { free(sp); goto out; }

    /* tensors sorted by offset must tile [0, size - 8 - n) exactly */
    order *o = iv2_calloc((size_t)f->n_tensors, sizeof(order));
    for (int i = 0; i < f->n_tensors; i++) { o[i].s = sp[i]; o[i].i = i; }
    if (f->n_tensors) qsort(o, (size_t)f->n_tensors, sizeof(order), cmp_order);
    uint64_t at = 0, data_size = size - 8 - n;
    for (int k = 0; k < f->n_tensors && !rc; k++) {
        const iv2_st_tensor *t = &f->tensors[o[k].i];
        if (o[k].s.begin > at)
            rc = iv2_err("tensor '%.200s': gap in the data: it begins at byte %llu but the previous tensor%s%.200s%s ends at %llu",
                         t->name, (unsigned long long)o[k].s.begin, k ? " '" : "", k ? f->tensors[o[k - 1].i].name : "",
                         k ? "'" : "", (unsigned long long)at);
        else if (o[k].s.begin < at)
            rc = iv2_err("tensor '%.200s': overlaps tensor '%.200s': it begins at byte %llu before that one ends at %llu",
                         t->name, f->tensors[o[k - 1].i].name, (unsigned long long)o[k].s.begin, (unsigned long long)at);
        else if (o[k].s.end > data_size)
            rc = iv2_err("tensor '%.200s': data_offsets end %llu beyond the data (%llu bytes; file truncated?)",
                         t->name, (unsigned long long)o[k].s.end, (unsigned long long)data_size);
        at = o[k].s.end;
    }
    if (!rc && at != data_size)
        rc = iv2_err("tensors cover %llu bytes but the data after the header is %llu bytes", (unsigned long long)at,
                     (unsigned long long)data_size);
    free(o);
    for (int i = 0; i < f->n_tensors && !rc; i++)
        f->tensors[i].data = buf + 8 + n + sp[i].begin;
    free(sp);
    if (rc) goto out;

    /* sort by name: duplicates become neighbours, and iv2_st_find can bisect */
    if (f->n_tensors) qsort(f->tensors, (size_t)f->n_tensors, sizeof(iv2_st_tensor), cmp_name);
    for (int i = 1; i < f->n_tensors; i++)
        if (!strcmp(f->tensors[i].name, f->tensors[i - 1].name)) {
            rc = iv2_err("duplicate tensor name '%.200s'", f->tensors[i].name);
            break;
        }
out:
    cJSON_Delete(root);
    return rc;
}

int iv2_st_open_mem(iv2_st_file *f, const void *buf, size_t size, const char *name) {
    memset(f, 0, sizeof *f);
    f->path = iv2_strdup(name ? name : "<memory>");
    if (parse_buffer(f, buf, size)) {
        iv2_err_ctx("%s", f->path);
        iv2_st_close(f);
        return -1;
    }
    return 0;
}

int iv2_st_open(iv2_st_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);   /* a pipe with no writer: refused below, not waited on */
    if (fd < 0) return iv2_err("%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0) { int e = errno; close(fd); return iv2_err("%s: cannot stat: %s", path, strerror(e)); }
    if (!S_ISREG(st.st_mode)) { close(fd); return iv2_err("%s: not a regular file", path); }
    size_t size = (size_t)st.st_size;
    void *map = NULL;
    if (size > 0) {
        map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
        if (map == MAP_FAILED) { int e = errno; close(fd); return iv2_err("%s: cannot map: %s", path, strerror(e)); }
    }
    close(fd);
    f->path = iv2_strdup(path);
    f->map = map;
    f->map_size = size;
    if (parse_buffer(f, map, size)) {
        iv2_err_ctx("%s", path);
        iv2_st_close(f);
        return -1;
    }
    return 0;
}

void iv2_st_close(iv2_st_file *f) {
    if (f->map) munmap(f->map, f->map_size);
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    for (int i = 0; i < f->n_meta; i++) { free(f->meta_keys[i]); free(f->meta_vals[i]); }
    free(f->meta_keys);
    free(f->meta_vals);
    free(f->path);
    memset(f, 0, sizeof *f);
}

iv2_st_tensor *iv2_st_find(iv2_st_file *f, const char *name) {
    int lo = 0, hi = f->n_tensors - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(name, f->tensors[mid].name);
        if (!c) return &f->tensors[mid];
        if (c < 0) hi = mid - 1; else lo = mid + 1;
    }
    return NULL;
}

const char *iv2_st_meta(const iv2_st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta_keys[i], key)) return f->meta_vals[i];
    return NULL;
}

int iv2_st_read(const iv2_st_file *f, const iv2_st_tensor *t, void *dst, iv2_dtype dt) {
    if ((unsigned)dt >= IV2_DTYPE_COUNT)
        return iv2_err("%s: tensor '%s': bad destination dtype %d", f->path, t->name, (int)dt);
    if (t->numel) iv2_convert(dst, dt, t->data, t->dtype, t->numel); /* per-element memcpy when unaligned */
    return 0;
}

/* ---------------------------------------------------------------- writer */

void iv2_st_writer_init(iv2_st_writer *w) { memset(w, 0, sizeof *w); }

void iv2_st_writer_add(iv2_st_writer *w, const char *name, iv2_dtype dt, int ndim, const int64_t *shape, const void *data) {
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 16;
        w->t = iv2_realloc(w->t, (size_t)w->cap * sizeof *w->t);
    }
    memset(&w->t[w->n], 0, sizeof w->t[w->n]);
    w->t[w->n].name = iv2_strdup(name);
    w->t[w->n].dtype = dt;
    w->t[w->n].ndim = ndim;
    size_t numel = 1;
    for (int i = 0; i < ndim && i < IV2_ST_MAX_DIMS; i++) {
        w->t[w->n].shape[i] = shape[i];
        numel *= shape[i] > 0 ? (size_t)shape[i] : 0;
    }
    w->t[w->n].data = data;
    w->t[w->n].nbytes = numel * iv2_dtype_size(dt);
    w->n++;
}

void iv2_st_writer_meta(iv2_st_writer *w, const char *key, const char *val) {
    w->meta_keys = iv2_realloc(w->meta_keys, (size_t)(w->n_meta + 1) * sizeof(char *));
    w->meta_vals = iv2_realloc(w->meta_vals, (size_t)(w->n_meta + 1) * sizeof(char *));
    w->meta_keys[w->n_meta] = iv2_strdup(key);
    w->meta_vals[w->n_meta++] = iv2_strdup(val);
}

void iv2_st_writer_free(iv2_st_writer *w) {
    for (int i = 0; i < w->n; i++) free(w->t[i].name);
    free(w->t);
    for (int i = 0; i < w->n_meta; i++) { free(w->meta_keys[i]); free(w->meta_vals[i]); }
    free(w->meta_keys);
    free(w->meta_vals);
    memset(w, 0, sizeof *w);
}

/* the reference writer's order (tensor.rs prepare()): dtypes from the widest down, in the
 * reference's Dtype enum order, then names; wide tensors stay aligned and files match byte for byte */
static int dtype_rank(iv2_dtype t) {
    static const int R[IV2_DTYPE_COUNT] = {
        [IV2_BOOL] = 0, [IV2_U8] = 1, [IV2_I8] = 2, [IV2_I16] = 3, [IV2_U16] = 4, [IV2_F16] = 5, [IV2_BF16] = 6,
        [IV2_I32] = 7, [IV2_U32] = 8, [IV2_F32] = 9, [IV2_F64] = 10, [IV2_I64] = 11, [IV2_U64] = 12,
    };
    return (unsigned)t < IV2_DTYPE_COUNT ? R[t] : -1;
}
static int cmp_write(const void *a, const void *b, void *arg) {
    const iv2_st_writer *w = arg;
    int i = *(const int *)a, j = *(const int *)b;
    int ri = dtype_rank(w->t[i].dtype), rj = dtype_rank(w->t[j].dtype);
    if (ri != rj) return ri > rj ? -1 : 1;
    return strcmp(w->t[i].name, w->t[j].name);
}

static int write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t k = write(fd, c, n > (1u << 30) ? (1u << 30) : n);
        if (k < 0) { if (errno == EINTR) continue; return -1; }
        c += k; n -= (size_t)k;
    }
    return 0;
}

/* the header text (without the 8-byte length), padded with spaces so 8 + len is a multiple of 8 */
static char *build_header(const iv2_st_writer *w, const int *ord, size_t *len) {
    cJSON *root = cJSON_CreateObject();
    if (w->n_meta) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; i < w->n_meta; i++) cJSON_AddStringToObject(m, w->meta_keys[i], w->meta_vals[i]);
    }
    uint64_t at = 0;
    for (int k = 0; k < w->n; k++) {
        int i = ord[k];
        cJSON *e = cJSON_AddObjectToObject(root, w->t[i].name);
        cJSON_AddStringToObject(e, "dtype", iv2_dtype_name(w->t[i].dtype));
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < w->t[i].ndim; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)w->t[i].shape[d]));
        cJSON *off = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(off, cJSON_CreateNumber((double)at));
        at += w->t[i].nbytes;
        cJSON_AddItemToArray(off, cJSON_CreateNumber((double)at));
    }
    char *js = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!js) iv2_panic("cJSON_PrintUnformatted failed (out of memory)");
    size_t n = strlen(js), padded = (n + 7) & ~(size_t)7;
    char *h = iv2_malloc(padded);
    memcpy(h, js, n);
    memset(h + n, ' ', padded - n);
    cJSON_free(js);
    *len = padded;
    return h;
}

static int check_writer(const iv2_st_writer *w) {
    for (int i = 0; i < w->n; i++) {
        if ((unsigned)w->t[i].dtype >= IV2_DTYPE_COUNT) return iv2_err("tensor '%s': bad dtype %d", w->t[i].name, (int)w->t[i].dtype);
        if (w->t[i].ndim < 0 || w->t[i].ndim > IV2_ST_MAX_DIMS)
            return iv2_err("tensor '%s': %d dimensions, at most %d supported", w->t[i].name, w->t[i].ndim, IV2_ST_MAX_DIMS);
        for (int d = 0; d < w->t[i].ndim; d++)
            if (w->t[i].shape[d] < 0) return iv2_err("tensor '%s': negative dimension %lld", w->t[i].name, (long long)w->t[i].shape[d]);
        if (!strcmp(w->t[i].name, "__metadata__")) return iv2_err("tensor name '__metadata__' is reserved");
        if (w->t[i].nbytes && !w->t[i].data) return iv2_err("tensor '%s': no data", w->t[i].name);
        for (int j = 0; j < i; j++)
            if (!strcmp(w->t[i].name, w->t[j].name)) return iv2_err("duplicate tensor name '%s'", w->t[i].name);
    }
    for (int i = 0; i < w->n_meta; i++)
        for (int j = 0; j < i; j++)
            if (!strcmp(w->meta_keys[i], w->meta_keys[j])) return iv2_err("duplicate __metadata__ key '%s'", w->meta_keys[i]);
    return 0;
}

/* fsync the folder holding path so the rename itself is durable */
static void sync_dir(const char *path) {
    char *d = iv2_strdup(path);
    int fd = open(dirname(d), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) { fsync(fd); close(fd); }
    free(d);
}

int iv2_st_writer_write(iv2_st_writer *w, const char *path) {
    if (check_writer(w)) return iv2_err_ctx("%s", path);
    struct stat st;   /* a device or pipe there (/dev/null): the rename would replace it with a file */
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) return iv2_err("%s exists and is not a regular file: not replaced", path);
    int *ord = iv2_malloc((size_t)(w->n ? w->n : 1) * sizeof(int));
    for (int i = 0; i < w->n; i++) ord[i] = i;
    qsort_r(ord, (size_t)w->n, sizeof(int), cmp_write, w);
    size_t hlen;
    char *h = build_header(w, ord, &hlen);

    size_t plen = strlen(path);
    char *tmp = iv2_malloc(plen + 16);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp.XXXXXX", 12);
    int rc = 0, fd = mkstemp(tmp);
    if (fd < 0) {
        rc = iv2_err("%s: cannot create temporary file: %s", path, strerror(errno));
        goto out;
    }
    fchmod(fd, 0644);
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    int bad = write_all(fd, len8, 8) || write_all(fd, h, hlen);
    for (int k = 0; k < w->n && !bad; k++)
        bad = write_all(fd, w->t[ord[k]].data, w->t[ord[k]].nbytes);
    if (bad) rc = iv2_err("%s: write failed: %s", tmp, strerror(errno));
    else if (fsync(fd) < 0) rc = iv2_err("%s: fsync failed: %s", tmp, strerror(errno));
    if (close(fd) < 0 && !rc) rc = iv2_err("%s: close failed: %s", tmp, strerror(errno));
    if (!rc && rename(tmp, path) < 0) rc = iv2_err("%s: cannot rename temporary file into place: %s", path, strerror(errno));
    if (rc) unlink(tmp);
    else sync_dir(path);
out:
    free(tmp);
    free(h);
    free(ord);
    return rc;
}
