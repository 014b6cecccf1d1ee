/* cache.h: THE teacher-target cache (one LMDB environment per folder, one folder per shard).
 *
 * Written once by iv2-extract, read many times by iv2-distill. Layout (docs/cache.md):
 *   meta     one record, key "meta": JSON text (format/tool version, teachers + weight sha256,
 *            sampling settings and seed, target list, manifest path + sha256, shard, views).
 *   views    key = iv2_cache_key (12 bytes: row u64 BE, view u32 BE) -> view record:
 *            IV2_CACHE_VIEW_HDR bytes of header (iv2_cache_view, little-endian) followed by the
 *            student's frames uint8 [n_student][size][size][3] (8 x 224 x 224 x 3).
 *   t:<name> one database per target, same keys -> a 32-byte header (magic, dtype, version 1,
 *            tokens, dim, payload bytes, checksum = iv2_hash64 of the payload) then the payload:
 *            bf16/fp16/fp32: [tokens][dim]; int8: fp32 scale[tokens] then int8 [tokens][dim],
 *            value = q * scale (scale = max|x| / 127 per token).
 *   errors   key = row u64 BE -> reason text (no NUL).
 * Target names: clip_b{K} (InternViT block K, 2049 tokens, token 0 = frame-mean CLS, then
 * 8x256 patches (t,y,x), L2-normalised per token), clip_pool (1 token, pool_dim, frame mean,
 * L2), clip_attn ([8][256] fp32 head-averaged pool attention, not L2: stored as 8 tokens of
 * dim 256), mae_b{K} (VideoMAE block K, 2048 tokens, L2; the last block after the final LN).
 *
 * Reading is zero-copy through the read-only map: iv2_cache_read_rows copies out (and converts
 * to fp32) only the requested token rows. All read calls are thread-safe (MDB_NOTLS, one short
 * read transaction per call). Write calls are for one thread (the extract writer).
 * Errors follow common/err.h and name the cache folder, key and target. */
#ifndef IV2_CACHE_H
#define IV2_CACHE_H
#include <stddef.h>
#include <stdint.h>
#include "dtype.h"

#define IV2_CACHE_FORMAT 1
#define IV2_CACHE_MAX_TARGETS 48
#define IV2_CACHE_MAX_FRAMES 64
#define IV2_CACHE_KEY_SIZE 12
#define IV2_CACHE_VIEW_HDR 2048     /* bytes before the frames in a view record */
#define IV2_CACHE_VALUE_HDR 32      /* bytes before the payload in a target value */

typedef struct iv2_cache iv2_cache;

typedef struct iv2_cache_key {
    int64_t row;      /* manifest row index (iv2_row.index) */
    uint32_t view;    /* 0 .. views-1 */
} iv2_cache_key;

void iv2_cache_key_pack(uint8_t out[IV2_CACHE_KEY_SIZE], iv2_cache_key k);
iv2_cache_key iv2_cache_key_unpack(const uint8_t in[IV2_CACHE_KEY_SIZE]);

/* One target tensor per view, from meta "targets". */
typedef struct iv2_cache_target {
    char name[32];        /* "clip_b47", "clip_pool", "clip_attn", "mae_b39" */
    char teacher[16];     /* "internvit" | "videomae" */
    char kind[16];        /* "block" | "pool" | "attn" */
    int block;            /* 0-based block for kind "block", else -1 */
    int tokens, dim;      /* value shape [tokens][dim] */
    iv2_dtype dtype;      /* storage: IV2_BF16, IV2_F16, IV2_F32 or IV2_I8 (per-token scale) */
    char post[32];        /* "l2", "final_ln+l2", "none" */
} iv2_cache_target;

/* The view record header (the sampling record of iv2_clip_record, plus what is stored). */
typedef struct iv2_cache_view {
    int64_t row;
    uint32_t view;
    int32_t num_frames;                      /* frames the teachers saw (16) */
    int64_t frame[IV2_CACHE_MAX_FRAMES];     /* frame index in the stream, presentation order */
    double pts[IV2_CACHE_MAX_FRAMES];        /* seconds, stream time */
    int64_t span_first, span_frames;
    int32_t stream, src_w, src_h;
    int32_t crop_x, crop_y, crop_w, crop_h, flip;
    int32_t size;                            /* frame side (224) */
    int32_t n_student;                       /* frames stored: the even ones, 0,2,..,14 (8) */
    int32_t deterministic;
    uint64_t frames_checksum;                /* iv2_hash64 of the stored frames */
} iv2_cache_view;

/* ---- open / close ---- */
enum {
    IV2_CACHE_RDONLY = 0,   /* read only; works on a read-only folder (falls back to MDB_NOLOCK) */
    IV2_CACHE_RDWR = 1,     /* read-write; creates the folder and environment when absent */
};
/* Open dir. A read-only open fails when there is no cache; a read-write open of a new folder
 * makes an empty environment with no meta (write it with iv2_cache_set_meta). */
int iv2_cache_open(iv2_cache **out, const char *dir, int mode);
/* Flushes (mdb_env_sync) when opened read-write. NULL is fine. */
void iv2_cache_close(iv2_cache *c);
const char *iv2_cache_dir(const iv2_cache *c);

/* Map size limit for read-write opens (the map doubles on MDB_MAP_FULL up to this; default
 * 1 TiB; env IV2_CACHE_MAX_MAP (bytes) overrides). Initial map: max(file size, 256 MiB). */
void iv2_cache_set_max_map(iv2_cache *c, size_t bytes);

/* ---- meta ---- */
/* The meta JSON text, NULL when none was written yet. */
const char *iv2_cache_meta(const iv2_cache *c);
/* Write meta (read-write). If the cache already has meta, compare instead: every field must be
 * equal except the free ones ("tool_version", "created", "manifest_path", "manifest_bytes", "device",
 * "threads", "paths"); a difference fails with "cache DIR was made with other settings:
 * FIELD is A here, B in the cache". Then parses the target list and opens their databases. */
int iv2_cache_set_meta(iv2_cache *c, const char *json);
/* Replace the stored meta by json where it differs only in the keys may_change (NULL-terminated)
 * and the free ones: iv2-extract on a manifest that grew (rows appended). No meta yet: set_meta. */
int iv2_cache_update_meta(iv2_cache *c, const char *json, const char *const *may_change);
/* Compare two meta texts with the same rules (ignore: extra keys to ignore, NULL-terminated, on
 * top of the free ones). 0 = same, -1 with the first differing field named in iv2_err. */
int iv2_cache_meta_compare(const char *a, const char *b, const char *const *ignore);
/* The same, the message naming where b comes from: "FIELD is A here, B <b_where>"
 * (iv2_cache_meta_compare: "in the cache"; a resumed run: "in the checkpoint"). */
int iv2_meta_compare_where(const char *a, const char *b, const char *const *ignore, const char *b_where);
/* Append meta's target list, "targets":[{name, teacher, kind, block, tokens, dim, dtype, post},
 * ...], for n targets at buf[at] (snprintf rules: returns the new length). */
size_t iv2_cache_targets_json(char *buf, size_t cap, size_t at, const iv2_cache_target *t, int n);

int iv2_cache_n_targets(const iv2_cache *c);
const iv2_cache_target *iv2_cache_target_at(const iv2_cache *c, int i);
int iv2_cache_find_target(const iv2_cache *c, const char *name);   /* index or -1 (with iv2_err) */
/* payload bytes of one value of target t: tokens*dim*esize (+ tokens*4 for int8) */
size_t iv2_cache_target_bytes(const iv2_cache_target *t);
size_t iv2_cache_frames_bytes(const iv2_cache_view *v);           /* n_student*size*size*3 */

/* ---- read ---- */
int64_t iv2_cache_count_views(iv2_cache *c);                        /* -1 on error */
/* All view keys in key order into a malloc'd array (caller frees). */
int iv2_cache_list_views(iv2_cache *c, iv2_cache_key **keys, int64_t *n);
int iv2_cache_has_view(iv2_cache *c, iv2_cache_key k);             /* 1, 0, or -1 on error */
/* Header into v (may be NULL) and frames (may be NULL; else iv2_cache_frames_bytes(v) bytes). */
int iv2_cache_read_view(iv2_cache *c, iv2_cache_key k, iv2_cache_view *v, uint8_t *frames);
/* out[i][:] = fp32 value of token rows[i] of target `target` (index) for view k; rows NULL =
 * all tokens in order (n ignored). Rows are bounds-checked. Only those rows are touched. */
int iv2_cache_read_rows(iv2_cache *c, iv2_cache_key k, int target, const int32_t *rows, int n, float *out);
/* The same rows in dtype dt (F32, BF16 or F16; out holds n rows of dim elements of dt): when dt
 * is the storage dtype the stored bytes are copied as they are (no decode, no conversion);
 * otherwise each row is decoded to fp32 and converted (iv2_f32_to_bf16_n / iv2_convert), the
 * bytes a caller converting the fp32 rows would get. The two agree on every value except a
 * signalling NaN, which the conversion quiets (the writer never stores one). Like
 * iv2_cache_read_rows it checks the value's header and the row bounds, not the payload checksum
 * (iv2_cache_verify / iv2_cache_check_value do). */
int iv2_cache_read_rows_as(iv2_cache *c, iv2_cache_key k, int target, const int32_t *rows, int n, iv2_dtype dt, void *out);
/* The raw stored value (header + payload) into a malloc'd buffer (verify, merge, export). */
int iv2_cache_read_raw(iv2_cache *c, const char *dbname, const uint8_t *key, size_t key_size, void **val,
                       size_t *size);

/* errors: count, and iterate (callback returns non-zero to stop) */
int64_t iv2_cache_count_errors(iv2_cache *c);
int iv2_cache_each_error(iv2_cache *c, int (*fn)(void *ctx, int64_t row, const char *reason), void *ctx);

/* ---- write (extract) ---- */
/* One view to store: its record, the student frames, and fp32 values [tokens][dim] for every
 * target of the meta, in meta order (converted to the storage dtype here). */
typedef struct iv2_cache_entry {
    iv2_cache_view view;          /* row and view are the key; frames_checksum is filled in */
    const uint8_t *frames;        /* [n_student][size][size][3] */
    const float *const *values;   /* [n_targets] */
    const void *const *encoded;   /* or, when not NULL, values already encoded with
                                     iv2_cache_encode_value (header + payload) */
} iv2_cache_entry;
/* Store n views and n_err errors (rows with reasons) in one transaction; an existing view is
 * kept (MDB_NOOVERWRITE). On MDB_MAP_FULL the map grows and the transaction is retried; past
 * the limit, or on a full disk, nothing of the batch is stored and the cache stays valid. */
int iv2_cache_put(iv2_cache *c, const iv2_cache_entry *e, int n, const int64_t *err_rows,
                  const char *const *err_reasons, int n_err);
/* Remove an error record (a row that now succeeded). */
int iv2_cache_del_error(iv2_cache *c, int64_t row);

/* ---- checks (iv2-cache verify) ---- */
typedef struct iv2_cache_verify_report {
    int64_t views, errors, bad;    /* bad: values missing, wrong size or checksum */
    uint64_t digest;               /* content digest of views + targets + errors (not meta) */
    uint64_t bytes;                /* stored bytes of views + targets */
    iv2_cache_key *bad_keys;       /* the views with a problem (malloc'd: the caller frees) */
    int64_t n_bad_keys;
} iv2_cache_verify_report;
/* Check every view and value; each problem is printed (one line) to the FILE* err (may be NULL).
 * Returns 0 when clean, -1 on an LMDB error, 1 when problems were found. */
int iv2_cache_verify(iv2_cache *c, iv2_cache_verify_report *r, void *err_stream);
/* Remove views and their target values in one transaction (read-write; absent ones are fine):
 * the repair of bad views, which the next iv2-extract run then extracts again. */
int iv2_cache_drop_views(iv2_cache *c, const iv2_cache_key *keys, int64_t n);

/* Copy every view, value and error of src into dst (metas must match except "shard");
 * views dst already holds are skipped. As iv2_cache_put does, a row never holds both: a view
 * copied removes dst's error of its row, and an error of src is copied only for a row dst has
 * neither views nor an error for. Each value's and each view's frames checksum is checked on
 * the way: a damaged one fails the merge, naming it. */
int iv2_cache_merge_from(iv2_cache *dst, iv2_cache *src, int64_t *copied);

/* ---- a list of shards opened together (distill) ---- */
typedef struct iv2_cache_set {
    iv2_cache **shards;
    int n_shards;
    int64_t n_views;
    int *view_shard;              /* [n_views] shard of view i */
    iv2_cache_key *view_key;      /* [n_views] key of view i */
} iv2_cache_set;
/* dirs: comma-separated folders. All metas must agree except shard / free fields, so target
 * indices are the same in every shard (use shards[0] for the target list). */
int iv2_cache_set_open(iv2_cache_set *s, const char *dirs);
void iv2_cache_set_close(iv2_cache_set *s);
int iv2_cache_set_read_rows(iv2_cache_set *s, int64_t i, int target, const int32_t *rows, int n, float *out);
int iv2_cache_set_read_rows_as(iv2_cache_set *s, int64_t i, int target, const int32_t *rows, int n, iv2_dtype dt, void *out);
int iv2_cache_set_read_view(iv2_cache_set *s, int64_t i, iv2_cache_view *v, uint8_t *frames);

/* ---- value encoding (exposed for tests) ---- */
/* Encode fp32 [tokens][dim] as a target value (header + payload) into dst of
 * IV2_CACHE_VALUE_HDR + iv2_cache_target_bytes(t) bytes. */
void iv2_cache_encode_value(const iv2_cache_target *t, const float *src, void *dst);
/* Write the header (and payload checksum) of a value whose payload, dst + IV2_CACHE_VALUE_HDR,
 * already holds [tokens][dim] in t->dtype (fp32, bf16, fp16; not int8, whose payload carries
 * scales): the same bytes iv2_cache_encode_value makes from the fp32 of those values. */
void iv2_cache_seal_value(const iv2_cache_target *t, void *dst);
/* Decode a whole value (header + payload, checked against t but not its checksum) to fp32
 * [tokens][dim]; -1 with the reason. */
int iv2_cache_decode_value(const iv2_cache_target *t, const void *val, size_t size, float *out);
/* Check a stored value's header and checksum against t; -1 with the reason. */
int iv2_cache_check_value(const iv2_cache_target *t, const void *val, size_t size);

#endif
