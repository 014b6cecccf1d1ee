/* pth.c: torch.save zip checkpoints -> tensors -> safetensors. See pth.h.
 *
 * Three layers, top to bottom in this file:
 *   zip     : the central directory of a stored (uncompressed) ZIP / ZIP64, entries sorted by name
 *   pickle  : a stack machine for the opcode subset torch.save emits (pth_pickle.c)
 *   convert : state-dict lookup, name mapping, materialising views, safetensors output */
#include "pth.h"
#include "sha256.h"
#include "pth_pickle.h"
#include "err.h"
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------------ */
/* CRC-32 (ZIP polynomial), slice-by-8: storages are gigabytes, byte-wise would take minutes. */


/* ------------------------------------------------------------------------------------------ */
/* zip */

typedef struct zip_entry {
    char *name;
    const uint8_t *data;
    uint64_t size;
    uint32_t crc;
    int crc_ok; /* 0 unchecked, 1 checked */
} zip_entry;

typedef struct pth_priv {
    zip_entry *ent;     /* sorted by name */
    int n_ent;
    char *prefix;       /* "archive/" */
    pth_unpickler up;   /* owns every pickle value the tensors point into */
} pth_priv;

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static int ent_cmp(const void *a, const void *b) {
    return strcmp(((const zip_entry *)a)->name, ((const zip_entry *)b)->name);
}

static zip_entry *zip_find(pth_priv *pv, const char *name) {
    zip_entry key = {.name = (char *)name};
    return pv->n_ent ? bsearch(&key, pv->ent, pv->n_ent, sizeof *pv->ent, ent_cmp) : NULL;
}

/* finds the end-of-central-directory record and returns the directory's offset, size, count */
static int zip_find_dir(const uint8_t *b, uint64_t size, uint64_t *cd_off, uint64_t *cd_size, uint64_t *n_ent) {
    if (size < 22) return iv2_err("not a zip file (%llu bytes)", (unsigned long long)size);
    uint64_t lo = size > 22 + 65535 ? size - 22 - 65535 : 0;
    int64_t eocd = -1;
    for (uint64_t i = size - 22 + 1; i-- > lo;) {
        if (rd32(b + i) == 0x06054b50 && i + 22 + rd16(b + i + 20) <= size) { eocd = (int64_t)i; break; }
    }
    if (eocd < 0) return iv2_err("no zip end-of-central-directory record (truncated or not a zip file)");
    const uint8_t *e = b + eocd;
    if (rd16(e + 4) != 0 || rd16(e + 6) != 0) return iv2_err("multi-disk zip archives are not supported");
    *n_ent = rd16(e + 10);
    *cd_size = rd32(e + 12);
    *cd_off = rd32(e + 16);
    /* ZIP64: a locator sits right before the EOCD and points at the ZIP64 EOCD record */
    if (eocd >= 20 && rd32(b + eocd - 20) == 0x07064b50) {
        uint64_t z = rd64(b + eocd - 20 + 8);
        if (z > size || size - z < 56 || rd32(b + z) != 0x06064b50)
            return iv2_err("bad ZIP64 end-of-central-directory offset %llu", (unsigned long long)z);
        *n_ent = rd64(b + z + 32);
        *cd_size = rd64(b + z + 40);
        *cd_off = rd64(b + z + 48);
    } else if (*n_ent == 0xFFFF || *cd_size == 0xFFFFFFFFu || *cd_off == 0xFFFFFFFFu) {
        return iv2_err("ZIP64 sizes announced but no ZIP64 locator (truncated?)");
    }
    if (*cd_off > size || *cd_size > size - *cd_off)
        return iv2_err("central directory [%llu, +%llu) outside the file (%llu bytes): truncated?",
                       (unsigned long long)*cd_off, (unsigned long long)*cd_size, (unsigned long long)size);
    if (*n_ent > 10000000) return iv2_err("%llu zip entries (more than 10 million)", (unsigned long long)*n_ent);
    if (*n_ent > *cd_size / 46) return iv2_err("central directory claims %llu entries in %llu bytes",
                                                (unsigned long long)*n_ent, (unsigned long long)*cd_size);
    return 0;
}

/* parses one central-directory record at p (avail bytes); fills e; returns its length or -1 */
static int64_t zip_parse_cd(const uint8_t *b, uint64_t size, const uint8_t *p, uint64_t avail, zip_entry *e, uint64_t idx) {
    if (avail < 46 || rd32(p) != 0x02014b50) return iv2_err("central directory record %llu: bad signature", (unsigned long long)idx);
    uint16_t flags = rd16(p + 8), method = rd16(p + 10);
    uint64_t csize = rd32(p + 20), usize = rd32(p + 24), lho = rd32(p + 42);
    uint32_t nlen = rd16(p + 28), xlen = rd16(p + 30), clen = rd16(p + 32);
    uint64_t len = 46ull + nlen + xlen + clen;
    if (len > avail) return iv2_err("central directory record %llu runs past the directory", (unsigned long long)idx);
    if (nlen == 0 || memchr(p + 46, 0, nlen)) return iv2_err("central directory record %llu: bad name", (unsigned long long)idx);
    char name[1024]; /* entry names are short ("archive/data/123"); longer ones are refused */
    if (nlen >= sizeof name) return iv2_err("central directory record %llu: name of %u bytes", (unsigned long long)idx, nlen);
    memcpy(name, p + 46, nlen);
    name[nlen] = 0;
    /* ZIP64 extended information replaces the fields that read 0xFFFFFFFF, in this order */
    const uint8_t *x = p + 46 + nlen, *xe = x + xlen;
    while (xe - x >= 4) {
        uint16_t id = rd16(x), sz = rd16(x + 2);
        if (sz > xe - x - 4) return iv2_err("zip entry '%s': extra field runs past its record", name);
        if (id == 0x0001) {
            const uint8_t *q = x + 4, *qe = q + sz;
            if (usize == 0xFFFFFFFFu) { if (qe - q < 8) goto bad64; usize = rd64(q); q += 8; }
            if (csize == 0xFFFFFFFFu) { if (qe - q < 8) goto bad64; csize = rd64(q); q += 8; }
            if (lho == 0xFFFFFFFFu) { if (qe - q < 8) goto bad64; lho = rd64(q); q += 8; }
        }
        x += 4 + sz;
    }
    if (flags & 1) return iv2_err("zip entry '%s' is encrypted", name);
    if (method != 0) return iv2_err("zip entry '%s' is compressed (method %u); torch.save writes stored entries only", name, method);
    if (csize != usize) return iv2_err("zip entry '%s': stored size %llu != size %llu", name, (unsigned long long)csize, (unsigned long long)usize);
    if (lho > size || size - lho < 30 || rd32(b + lho) != 0x04034b50)
        return iv2_err("zip entry '%s': bad local header offset %llu (truncated?)", name, (unsigned long long)lho);
    uint64_t data = lho + 30 + rd16(b + lho + 26) + rd16(b + lho + 28);
    if (data > size || usize > size - data)
        return iv2_err("zip entry '%s': data [%llu, +%llu) outside the file (%llu bytes): truncated?", name,
                       (unsigned long long)data, (unsigned long long)usize, (unsigned long long)size);
    e->name = iv2_strdup(name);
    e->data = b + data;
    e->size = usize;
    e->crc = rd32(p + 16);
    e->crc_ok = 0;
    return (int64_t)len;
bad64:
    return iv2_err("zip entry '%s': ZIP64 extra field too short", name);
}

static int zip_read(pth_priv *pv, const uint8_t *b, uint64_t size) {
    uint64_t cd_off = 0, cd_size = 0, n = 0;
    if (zip_find_dir(b, size, &cd_off, &cd_size, &n)) return -1;
    pv->ent = iv2_calloc(n ? n : 1, sizeof *pv->ent);
    const uint8_t *p = b + cd_off;
    uint64_t left = cd_size;
    for (uint64_t i = 0; i < n; i++) {
        int64_t len = zip_parse_cd(b, size, p, left, &pv->ent[pv->n_ent], i);
        if (len < 0) return -1;
        pv->n_ent++;
        p += len; left -= (uint64_t)len;
    }
    if (pv->n_ent) qsort(pv->ent, pv->n_ent, sizeof *pv->ent, ent_cmp);
    for (int i = 1; i < pv->n_ent; i++)
        if (!strcmp(pv->ent[i].name, pv->ent[i - 1].name)) return iv2_err("duplicate zip entry '%s'", pv->ent[i].name);
    return 0;
}

static int entry_verify(zip_entry *e) {
    if (e->crc_ok) return 0;
    uint32_t c = iv2_crc32(e->data, e->size, 0);
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
    c = e->crc; /* let fuzzers reach the pickle and the tensor reader behind the checksum */
#endif
    if (c != e->crc) return iv2_err("zip entry '%s': CRC-32 %08x, expected %08x (corrupted file)", e->name, c, e->crc);
    e->crc_ok = 1;
    return 0;
}

/* the storage resolver the unpickler calls for each persistent id */
static const void *resolve_storage(void *ctx, const char *key, uint64_t nbytes, int *entry) {
    pth_priv *pv = ctx;
    char name[600];
    if (strlen(key) > 256) { iv2_err("storage key too long"); return NULL; }
    snprintf(name, sizeof name, "%sdata/%s", pv->prefix, key);
    zip_entry *e = zip_find(pv, name);
    if (!e) { iv2_err("storage '%s': no zip entry '%s'", key, name); return NULL; }
    if (e->size < nbytes) {
        iv2_err("storage '%s': entry has %llu bytes, pickle needs %llu", key, (unsigned long long)e->size, (unsigned long long)nbytes);
        return NULL;
    }
    *entry = (int)(e - pv->ent);
    return e->data ? e->data : (const void *)"";
}

/* ------------------------------------------------------------------------------------------ */
/* state dict */

static pv_t *dict_get(pv_t *d, const char *key) {
    for (size_t i = 0; i + 1 < d->n; i += 2)
        if (d->items[i]->type == PV_STR && !strcmp(d->items[i]->s, key)) return d->items[i + 1];
    return NULL;
}

static int dict_has_tensor(pv_t *d) {
    for (size_t i = 0; i + 1 < d->n; i += 2)
        if (d->items[i + 1]->type == PV_TENSOR) return 1;
    return 0;
}

/* the dict of tensors: the top object, or under module/model/state_dict (two levels at most) */
static pv_t *find_state_dict(pv_t *top, char **wrapper) {
    static const char *keys[] = {"module", "model", "state_dict"};
    pv_t *d = top;
    char path[64] = "";
    for (int depth = 0; depth < 2 && d->type == PV_DICT && !dict_has_tensor(d); depth++) {
        pv_t *inner = NULL;
        int k;
        for (k = 0; k < 3 && !inner; k++) {
            pv_t *v = dict_get(d, keys[k]);
            if (v && v->type == PV_DICT) inner = v;
        }
        if (!inner) break;
        size_t l = strlen(path);
        snprintf(path + l, sizeof path - l, "%s%s", l ? "." : "", keys[k - 1]);
        d = inner;
    }
    if (d->type != PV_DICT) return NULL;
    *wrapper = path[0] ? iv2_strdup(path) : NULL;
    return d;
}

static size_t elem_size(iv2_dtype dt) { return iv2_dtype_size(dt); }

static int is_contiguous(const iv2_pth_tensor *t) {
    int64_t want = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] != 1 && t->stride[d] != want) return 0;
        want *= t->shape[d];
    }
    return 1;
}

static int collect_tensors(iv2_pth_file *f, pv_t *sd) {
    f->tensors = iv2_calloc(sd->n / 2 + 1, sizeof *f->tensors);
    for (size_t i = 0; i + 1 < sd->n; i += 2) {
        pv_t *k = sd->items[i], *v = sd->items[i + 1];
        if (v->type == PV_OBJ && !strncmp(v->mod, "torch", 5) && k->type == PV_STR)
            return iv2_err("state dict entry '%s' is built by %s.%s, which is not supported (not a plain tensor)",
                           k->s, v->mod, v->s);
        if (v->type != PV_TENSOR) { f->n_skipped++; continue; }
        if (k->type != PV_STR) return iv2_err("state dict key %zu is not a string", i / 2);
        if (strlen(k->s) != k->slen) return iv2_err("state dict key %zu has a NUL byte", i / 2);
        iv2_pth_tensor *t = &f->tensors[f->n_tensors];
        pv_tensor *pt = v->tensor;
        t->name = k->s;
        t->dtype = pt->storage->st_dtype;
        t->ndim = pt->ndim;
        memcpy(t->shape, pt->shape, sizeof t->shape);
        memcpy(t->stride, pt->stride, sizeof t->stride);
        t->offset = pt->offset;
        t->numel = pt->numel;
        t->storage = pt->storage->st_data;
        t->storage_numel = pt->storage->st_numel;
        t->storage_key = pt->storage->s;
        t->entry = pt->storage->st_entry;
        t->contiguous = is_contiguous(t);
        f->n_tensors++;
    }
    return 0;
}

static void pth_free_priv(pth_priv *pv) {
    if (!pv) return;
    for (int i = 0; i < pv->n_ent; i++) free(pv->ent[i].name);
    free(pv->ent);
    free(pv->prefix);
    pth_unpickler_free(&pv->up);
    free(pv);
}

void iv2_pth_close(iv2_pth_file *f) {
    if (!f) return;
    pth_free_priv(f->priv);
    if (f->owns_map && f->map) munmap(f->map, f->map_size);
    free(f->tensors);
    free(f->wrapper);
    free(f->path);
    memset(f, 0, sizeof *f);
}

/* finds "<top>/data.pkl": the one entry named like that with a single folder level */
static zip_entry *find_pickle(pth_priv *pv) {
    zip_entry *found = NULL;
    for (int i = 0; i < pv->n_ent; i++) {
        const char *n = pv->ent[i].name, *slash = strchr(n, '/');
        if (!slash || strcmp(slash + 1, "data.pkl")) continue;
        if (found) { iv2_err("two pickles: '%s' and '%s'", found->name, n); return NULL; }
        found = &pv->ent[i];
    }
    if (!found) iv2_err("no '<archive>/data.pkl' entry: not a torch.save checkpoint");
    return found;
}

static int pth_parse(iv2_pth_file *f) {
    const uint8_t *b = f->map;
    uint64_t size = f->map_size;
    /* the legacy format (torch < 1.6) is a bare pickle stream starting with PROTO, or a tar */
    if (size >= 2 && b[0] == 0x80 && b[1] <= 5)
        return iv2_err("legacy (non-zip) torch.save format is unsupported: re-save with torch>=1.6 "
                       "(torch.save(torch.load(f), g))");
    if (size >= 262 && !memcmp(b + 257, "ustar", 5))
        return iv2_err("legacy tar torch.save format is unsupported: re-save with torch>=1.6");
    if (size < 4 || rd32(b) != 0x04034b50)
        return iv2_err(size >= 9 && b[8] == '{' ? "a safetensors file, not a PyTorch checkpoint (iv2 reads it as it is)"
                                                : "not a zip file (no local header signature at offset 0)");
    pth_priv *pv = iv2_calloc(1, sizeof *pv);
    f->priv = pv;
    if (zip_read(pv, b, size)) return -1;
    zip_entry *pk = find_pickle(pv);
    if (!pk) return -1;
    size_t plen = (size_t)(strchr(pk->name, '/') - pk->name) + 1;
    pv->prefix = iv2_malloc(plen + 1);
    memcpy(pv->prefix, pk->name, plen);
    pv->prefix[plen] = 0;
    char bo[600];
    snprintf(bo, sizeof bo, "%sbyteorder", pv->prefix);
    zip_entry *be = zip_find(pv, bo);
    if (be && !(be->size == 6 && !memcmp(be->data, "little", 6)))
        return iv2_err("'%s': only little-endian checkpoints are supported", bo);
    if (entry_verify(pk)) return -1;
    pth_unpickler_init(&pv->up, resolve_storage, pv);
    pv_t *top = pth_unpickle(&pv->up, pk->data, pk->size);
    if (!top) return iv2_err_ctx("%s", pk->name);
    pv_t *sd = find_state_dict(top, &f->wrapper);
    if (!sd) return iv2_err("%s: the saved object is not a dict (a state dict was expected)", pk->name);
    if (collect_tensors(f, sd)) return -1;
    if (f->n_tensors == 0) { /* name what is there, so the user sees where the weights hide */
        char keys[256] = "";
        size_t l = 0;
        for (size_t i = 0; i + 1 < sd->n && l < 200; i += 2)
            if (sd->items[i]->type == PV_STR)
                l += (size_t)snprintf(keys + l, sizeof keys - l, "%s'%.40s'", l ? ", " : "", sd->items[i]->s);
        return iv2_err("%s: no tensors in the saved dict%s%s (keys: %s)", pk->name, f->wrapper ? " under " : "",
                       f->wrapper ? f->wrapper : "", keys[0] ? keys : "none");
    }
    return 0;
}

int iv2_pth_open_mem(iv2_pth_file *f, const void *buf, size_t size, const char *name) {
    memset(f, 0, sizeof *f);
    f->path = iv2_strdup(name ? name : "<memory>");
    f->map = (void *)buf;
    f->map_size = size;
    if (pth_parse(f)) {
        iv2_err_ctx("%s", f->path);
        iv2_pth_close(f);
        return -1;
    }
    return 0;
}

int iv2_pth_open(iv2_pth_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_NONBLOCK);   /* a pipe with no writer: refused below, not waited on */
    if (fd < 0) return iv2_err("%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) { close(fd); return iv2_err("%s: not a regular file", path); }
    if (st.st_size == 0) { close(fd); return iv2_err("%s: empty file", path); }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return iv2_err("%s: mmap: %s", path, strerror(errno));
    f->path = iv2_strdup(path);
    f->map = m;
    f->map_size = (size_t)st.st_size;
    f->owns_map = 1;
    if (pth_parse(f)) {
        iv2_err_ctx("%s", path);
        iv2_pth_close(f);
        return -1;
    }
    return 0;
}

iv2_pth_tensor *iv2_pth_find(iv2_pth_file *f, const char *name) {
    for (int i = 0; i < f->n_tensors; i++)
        if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

int iv2_pth_verify(iv2_pth_file *f, const iv2_pth_tensor *t) {
    pth_priv *pv = f->priv;
    if (t->entry < 0 || t->entry >= pv->n_ent) return iv2_err("tensor '%s': bad storage entry", t->name);
    if (entry_verify(&pv->ent[t->entry])) return iv2_err_ctx("tensor '%s'", t->name);
    return 0;
}

/* copies the strided view into dst (same dtype), last dimension innermost */
static void gather(const iv2_pth_tensor *t, uint8_t *dst) {
    size_t es = elem_size(t->dtype);
    const uint8_t *src = (const uint8_t *)t->storage;
    if (t->numel == 0) return;
    if (t->ndim == 0) { memcpy(dst, src + (size_t)t->offset * es, es); return; }
    int64_t idx[IV2_PTH_MAX_DIMS] = {0};
    int last = t->ndim - 1;
    int64_t n_last = t->shape[last], s_last = t->stride[last];
    size_t rows = t->numel / (size_t)n_last;
    for (size_t r = 0; r < rows; r++) {
        int64_t off = t->offset;
        for (int d = 0; d < last; d++) off += idx[d] * t->stride[d];
        const uint8_t *s = src + (size_t)off * es;
        for (int64_t j = 0; j < n_last; j++, dst += es) memcpy(dst, s + (size_t)(j * s_last) * es, es);
        for (int d = last - 1; d >= 0; d--) {
            if (++idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
    }
}

int iv2_pth_read(iv2_pth_file *f, const iv2_pth_tensor *t, void *dst, iv2_dtype dt) {
    if (iv2_pth_verify(f, t)) return -1;
    size_t es = elem_size(t->dtype);
    if (t->contiguous) {
        const uint8_t *src = (const uint8_t *)t->storage + (size_t)t->offset * es;
        if (dt == t->dtype) memcpy(dst, src, t->numel * es);
        else iv2_convert(dst, dt, src, t->dtype, t->numel);
        return 0;
    }
    if (dt == t->dtype) { gather(t, dst); return 0; }
    uint8_t *tmp = iv2_malloc(t->numel * es + 1);
    gather(t, tmp);
    iv2_convert(dst, dt, tmp, t->dtype, t->numel);
    free(tmp);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* name mapping */

static int starts(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }

/* keys of the InternVL-C text tower and of other language-side parts (InternVL-G, chat models) */
static const char *internvit_drop[] = {
    "transformer.", "text_projection", "logit_scale", "language_model.", "qllama.", "query_tokens",
    "text_encoder.", "text_decoder.", "itm_head.", "mlp1.", NULL};

int iv2_pth_map_name(const char *model, const char *name, char *out, size_t cap) {
    const char *o = name;
    if (!strcmp(model, "raw") || !strcmp(model, "student")) {
    } else if (!strcmp(model, "videomae")) {
        if (starts(name, "decoder.") || starts(name, "encoder_to_decoder.") || !strcmp(name, "mask_token")) return 0;
        if (starts(name, "encoder.")) o = name + 8;
    } else if (!strcmp(model, "internvit")) {
        for (int i = 0; internvit_drop[i]; i++)
            if (starts(name, internvit_drop[i])) return 0;
    } else {
        return iv2_err("unknown model '%s' (internvit | videomae | student | raw)", model);
    }
    if (!*o) return 0;
    if (strlen(o) >= cap) return iv2_err("tensor name too long: '%.60s...'", o);
    strcpy(out, o);
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* convert */

static const char *base_name(const char *p) { const char *s = strrchr(p, '/'); return s ? s + 1 : p; }

typedef struct conv_item {
    iv2_pth_file *f;    /* the shard it comes from */
    iv2_pth_tensor *t;
    char *name;
    iv2_dtype out;
    size_t out_bytes;
    size_t buf_off;     /* offset into the staging buffer, or SIZE_MAX when read in place */
} conv_item;

static int name_cmp(const void *a, const void *b) {
    return strcmp(((const conv_item *)a)->name, ((const conv_item *)b)->name);
}

/* staging memory for converted / materialised tensors: RAM when small, else an unlinked file
 * beside the output mapped shared, so the kernel can page it out instead of exhausting RAM */
typedef struct staging { uint8_t *p; size_t size; int mapped; } staging;

static int staging_alloc(staging *s, size_t size, const char *out_path) {
    memset(s, 0, sizeof *s);
    s->size = size;
    size_t ram_max = (size_t)1 << 30;
    const char *env = getenv("IV2_PTH_STAGE_RAM_MAX"); /* bytes; the tests set 0 to use the file */
    if (env && *env) ram_max = strtoull(env, NULL, 10);
    if (size <= ram_max || size == 0) { s->p = iv2_malloc(size ? size : 1); return 0; }
    size_t l = strlen(out_path);
    char *tmpl = iv2_malloc(l + 16);
    snprintf(tmpl, l + 16, "%s.stageXXXXXX", out_path);
    int fd = mkstemp(tmpl);
    if (fd < 0) { iv2_err("%s: %s", tmpl, strerror(errno)); free(tmpl); return -1; }
    unlink(tmpl);
    if (ftruncate(fd, (off_t)size)) { close(fd); iv2_err("%s: ftruncate %zu bytes: %s", tmpl, size, strerror(errno)); free(tmpl); return -1; }
    void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) { iv2_err("%s: mmap %zu bytes: %s", tmpl, size, strerror(errno)); free(tmpl); return -1; }
    free(tmpl);
    s->p = m;
    s->mapped = 1;
    return 0;
}

static void staging_free(staging *s) {
    if (s->mapped) munmap(s->p, s->size);
    else free(s->p);
    memset(s, 0, sizeof *s);
}

/* maps the names of one shard into items (appended at *n); counts drops in S */
static int plan_shard(iv2_pth_file *f, const char *model, int out_dtype, conv_item *it, int *n,
                      size_t *stage_bytes, iv2_pth_summary *S) {
    /* DDP-saved dicts prefix every key with "module."; strip it unless raw */
    int strip_module = strcmp(model, "raw") != 0 && f->n_tensors > 0;
    for (int i = 0; i < f->n_tensors && strip_module; i++)
        if (!starts(f->tensors[i].name, "module.")) strip_module = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        iv2_pth_tensor *t = &f->tensors[i];
        char name[1024];
        int k = iv2_pth_map_name(model, t->name + (strip_module ? 7 : 0), name, sizeof name);
        if (k < 0) return iv2_err_ctx("%s", f->path);
        if (k == 0) { S->n_dropped++; continue; }
        conv_item *c = &it[(*n)++];
        c->f = f;
        c->t = t;
        c->name = iv2_strdup(name);
        c->out = (out_dtype != IV2_PTH_KEEP && iv2_dtype_is_float(t->dtype)) ? (iv2_dtype)out_dtype : t->dtype;
        c->out_bytes = t->numel * elem_size(c->out);
        c->buf_off = SIZE_MAX;
        if (!(t->contiguous && c->out == t->dtype)) {
            c->buf_off = *stage_bytes;
            *stage_bytes += (c->out_bytes + 63) & ~(size_t)63;
        }
    }
    S->n_skipped += f->n_skipped;
    return 0;
}

int iv2_pth_convert_shards(const char *const *in_paths, int n_in, const char *out_path, const char *model,
                           int out_dtype, iv2_pth_summary *sum) {
    iv2_pth_summary S = {0};
    char tmp[8];
    if (n_in < 1) return iv2_err("no input checkpoint");
    if (iv2_pth_map_name(model, "x", tmp, sizeof tmp) < 0) return -1;
    if (out_dtype != IV2_PTH_KEEP && out_dtype != IV2_F32 && out_dtype != IV2_BF16 && out_dtype != IV2_F16)
        return iv2_err("output dtype must be keep, f32, bf16 or f16");
    int rc = -1, n = 0, n_open = 0, n_items = 0;
    iv2_pth_file *fs = iv2_calloc((size_t)n_in, sizeof *fs);
    conv_item *it = NULL;
    staging stg = {0};
    iv2_st_writer w;
    iv2_st_writer_init(&w);
    for (; n_open < n_in; n_open++) {
        if (iv2_pth_open(&fs[n_open], in_paths[n_open])) goto done;
        n_items += fs[n_open].n_tensors;
    }
    it = iv2_calloc((size_t)n_items + 1, sizeof *it);
    size_t stage_bytes = 0;
    for (int i = 0; i < n_in; i++)
        if (plan_shard(&fs[i], model, out_dtype, it, &n, &stage_bytes, &S)) goto done;
    const char *what = n_in == 1 ? in_paths[0] : "shards";
    if (n == 0) { iv2_err("%s: no tensor left after the '%s' mapping (%d dropped, %d non-tensor entries)",
                          what, model, S.n_dropped, S.n_skipped); goto done; }
    qsort(it, n, sizeof *it, name_cmp);
    for (int i = 1; i < n; i++)
        if (!strcmp(it[i].name, it[i - 1].name)) {
            iv2_err("two tensors map to the name '%s' ('%s' in %s and '%s' in %s)", it[i].name,
                    it[i - 1].t->name, it[i - 1].f->path, it[i].t->name, it[i].f->path);
            goto done;
        }
    if (staging_alloc(&stg, stage_bytes, out_path)) goto done;
    for (int i = 0; i < n; i++) {
        conv_item *c = &it[i];
        iv2_pth_tensor *t = c->t;
        const void *data;
        if (c->buf_off == SIZE_MAX) {
            if (iv2_pth_verify(c->f, t)) { iv2_err_ctx("%s", c->f->path); goto done; }
            data = (const uint8_t *)t->storage + (size_t)t->offset * elem_size(t->dtype);
        } else {
            if (iv2_pth_read(c->f, t, stg.p + c->buf_off, c->out)) { iv2_err_ctx("%s", c->f->path); goto done; }
            data = stg.p + c->buf_off;
        }
        iv2_st_writer_add(&w, c->name, c->out, t->ndim, t->shape, c->out_bytes ? data : NULL);
        S.n_written++;
        S.bytes_in += t->numel * elem_size(t->dtype);
        S.bytes_out += c->out_bytes;
    }
    /* source: the input's file name, or "first (+N shards)" */
    char src[300];
    snprintf(src, sizeof src, n_in == 1 ? "%s" : "%s (+%d more shards)", base_name(in_paths[0]), n_in - 1);
    iv2_st_writer_meta(&w, "format", "pt");
    iv2_st_writer_meta(&w, "source", src);
    iv2_st_writer_meta(&w, "model", model);
    if (iv2_st_writer_write(&w, out_path)) goto done;   /* its messages name the file */
    char amount[32];
    if (S.bytes_out < 10000000) snprintf(amount, sizeof amount, "%llu bytes", (unsigned long long)S.bytes_out);
    else snprintf(amount, sizeof amount, "%.1f MB", S.bytes_out / 1e6);
    iv2_info("%s -> %s: %d tensors written (%s%s), %d dropped by the '%s' mapping, %d non-tensor entries skipped%s%s",
             src, out_path, S.n_written, amount,
             out_dtype == IV2_PTH_KEEP ? "" : (out_dtype == IV2_F32 ? " as f32" : out_dtype == IV2_BF16 ? " as bf16" : " as f16"),
             S.n_dropped, model, S.n_skipped, fs[0].wrapper ? ", state dict under " : "", fs[0].wrapper ? fs[0].wrapper : "");
    if (sum) *sum = S;
    rc = 0;
done:
    iv2_st_writer_free(&w);
    staging_free(&stg);
    for (int i = 0; i < n; i++) free(it[i].name);
    free(it);
    for (int i = 0; i < n_open; i++) iv2_pth_close(&fs[i]);
    free(fs);
    return rc;
}

int iv2_pth_convert(const char *in_path, const char *out_path, const char *model,
                    int out_dtype, iv2_pth_summary *sum) {
    return iv2_pth_convert_shards(&in_path, 1, out_path, model, out_dtype, sum);
}
