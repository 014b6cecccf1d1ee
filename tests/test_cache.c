/* test_cache: the LMDB cache layer on its own, with synthetic values.
 * Round trips per storage dtype against the fp32 source (bit-exact for fp32, dtype error
 * otherwise, int8 against a naive per-token quantiser), selected rows, verify + digest, refusal
 * of changed meta naming the field, the map limit (full => clear error, cache still valid),
 * read-only opens of a read-only folder, merge of shards and the shard set; rows read as another
 * dtype (the stored bytes when it is the storage dtype, else the fp32 rows converted). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <lmdb.h>
#include "cache.h"
#include "dtype.h"
#include "err.h"
#include "testutil.h"

#define NSTU 2
#define SIZE 8

static const char *META_FMT =
    "{\"format\":1,\"tool_version\":\"%s\",\"seed\":%d,\"views\":2,\"shard\":{\"k\":%d,\"n\":%d},"
    "\"targets\":["
    "{\"name\":\"clip_b5\",\"teacher\":\"internvit\",\"kind\":\"block\",\"block\":5,\"tokens\":9,\"dim\":24,\"dtype\":\"%s\",\"post\":\"l2\"},"
    "{\"name\":\"clip_attn\",\"teacher\":\"internvit\",\"kind\":\"attn\",\"block\":-1,\"tokens\":2,\"dim\":4,\"dtype\":\"fp32\",\"post\":\"none\"},"
    "{\"name\":\"mae_b3\",\"teacher\":\"videomae\",\"kind\":\"block\",\"block\":3,\"tokens\":8,\"dim\":16,\"dtype\":\"%s\",\"post\":\"final_ln+l2\"}]}";

static void meta(char *buf, size_t cap, const char *dt, int seed, int k, int n, const char *ver) {
    snprintf(buf, cap, META_FMT, ver, seed, k, n, dt, dt);
}

static float val(int64_t row, int view, int t, int i) {
    uint32_t x = (uint32_t)row * 7919u + (uint32_t)view * 104729u + (uint32_t)t * 1299709u + (uint32_t)i * 15485863u;
    x ^= x >> 13; x *= 0x5bd1e995u; x ^= x >> 15;
    return ((float)(x % 20001) - 10000.0f) / 3777.0f;
}

static const int TOK[3] = {9, 2, 8}, DIM[3] = {24, 4, 16};

/* store views (rows r0..r1, both views) into c */
static int fill(iv2_cache *c, int64_t r0, int64_t r1, int step) {
    for (int64_t r = r0; r < r1; r += step) {
        iv2_cache_entry e[2];
        float *v[2][3];
        const float *vp[2][3];
        uint8_t fr[2][NSTU * SIZE * SIZE * 3];
        for (int w = 0; w < 2; w++) {
            memset(&e[w], 0, sizeof e[w]);
            e[w].view.row = r; e[w].view.view = (uint32_t)w; e[w].view.num_frames = 4;
            e[w].view.n_student = NSTU; e[w].view.size = SIZE;
            for (int f = 0; f < 4; f++) { e[w].view.frame[f] = r + f; e[w].view.pts[f] = 0.04 * f; }
            e[w].view.crop_w = e[w].view.crop_h = 30; e[w].view.flip = w;
            for (size_t i = 0; i < sizeof fr[w]; i++) fr[w][i] = (uint8_t)(r * 3 + w + i);
            e[w].frames = fr[w];
            for (int t = 0; t < 3; t++) {
                v[w][t] = malloc(sizeof(float) * TOK[t] * DIM[t]);
                for (int i = 0; i < TOK[t] * DIM[t]; i++) v[w][t][i] = val(r, w, t, i);
                vp[w][t] = v[w][t];
            }
            e[w].values = vp[w];
        }
        int rc = iv2_cache_put(c, e, 2, NULL, NULL, 0);
        for (int w = 0; w < 2; w++) for (int t = 0; t < 3; t++) free(v[w][t]);
        if (rc) return rc;
    }
    return 0;
}

/* iv2_cache_read_rows_as: in the storage dtype, the stored bytes of the rows (the raw copy); in
 * any other float dtype, the fp32 rows converted; int8 out is refused; rows are bounds-checked */
static void check_rows_as(iv2_cache *c, iv2_cache_key k, const char *dt) {
    for (int t = 0; t < 3; t++) {
        const iv2_cache_target *tg = iv2_cache_target_at(c, t);
        int D = tg->dim;
        int32_t rows[3] = {TOK[t] - 1, 0, 1};
        float f[3 * 24], f32[3 * 24];
        uint16_t b[3 * 24], h[3 * 24], wb[3 * 24], wh[3 * 24];
        CHECK(iv2_cache_read_rows(c, k, t, rows, 3, f) == 0, "rows f32");
        CHECK(iv2_cache_read_rows_as(c, k, t, rows, 3, IV2_F32, f32) == 0 && !memcmp(f, f32, sizeof(float) * 3 * D),
              "%s %s: rows as F32 == iv2_cache_read_rows", dt, tg->name);
        CHECK(iv2_cache_read_rows_as(c, k, t, rows, 3, IV2_BF16, b) == 0 && iv2_cache_read_rows_as(c, k, t, rows, 3, IV2_F16, h) == 0,
              "rows as bf16 / fp16: %s", iv2_errmsg());
        iv2_f32_to_bf16_n(wb, f, (size_t)3 * D);
        iv2_convert(wh, IV2_F16, f, IV2_F32, (size_t)3 * D);
        CHECK(!memcmp(b, wb, 2 * 3 * D) && !memcmp(h, wh, 2 * 3 * D), "%s %s: rows as bf16 / fp16 == the fp32 rows converted",
              dt, tg->name);
        if (tg->dtype != IV2_I8) {   /* the raw copy: the stored payload bytes of those rows */
            uint8_t key[IV2_CACHE_KEY_SIZE], out[3 * 24 * 4];
            iv2_cache_key_pack(key, k);
            char db[40];
            snprintf(db, sizeof db, "t:%s", tg->name);
            void *raw;
            size_t n, rb = (size_t)D * iv2_dtype_size(tg->dtype);
            CHECK(iv2_cache_read_raw(c, db, key, sizeof key, &raw, &n) == 0, "raw value");
            CHECK(iv2_cache_read_rows_as(c, k, t, rows, 3, tg->dtype, out) == 0, "rows as stored");
            int same = 1;
            for (int i = 0; i < 3; i++) same &= !memcmp(out + i * rb, (uint8_t *)raw + IV2_CACHE_VALUE_HDR + rows[i] * rb, rb);
            CHECK(same, "%s %s: rows in the storage dtype are the stored bytes", dt, tg->name);
            free(raw);
        }
        int32_t bad = TOK[t];
        CHECK(iv2_cache_read_rows_as(c, k, t, &bad, 1, IV2_BF16, b) == -1 && strstr(iv2_errmsg(), "out of range"),
              "bounds as bf16: %s", iv2_errmsg());
        CHECK(iv2_cache_read_rows_as(c, k, t, rows, 1, IV2_I8, b) == -1 && strstr(iv2_errmsg(), "cannot be read as I8"),
              "int8 out refused: %s", iv2_errmsg());
    }
}

/* the one value where the raw copy and f32 + conversion differ: a signalling NaN stored bf16
 * (the writer never stores one; the conversion quiets it) */
static void check_snan(void) {
    const char *dir = "build/tmp/test_cache_snan";
    if (system("rm -rf build/tmp/test_cache_snan")) {}
    iv2_cache *c;
    CHECK(iv2_cache_open(&c, dir, IV2_CACHE_RDWR) == 0, "open: %s", iv2_errmsg());
    CHECK(iv2_cache_set_meta(c, "{\"format\":1,\"targets\":[{\"name\":\"clip_b0\",\"teacher\":\"internvit\",\"kind\":"
                             "\"block\",\"block\":0,\"tokens\":2,\"dim\":4,\"dtype\":\"bf16\",\"post\":\"l2\"}]}") == 0,
          "meta: %s", iv2_errmsg());
    const iv2_cache_target *tg = iv2_cache_target_at(c, 0);
    uint8_t val[IV2_CACHE_VALUE_HDR + 16], fr[NSTU * SIZE * SIZE * 3] = {0};
    uint16_t pay[8] = {0x3f80, 0x7f81 /* sNaN */, 0xbf80, 0x0001, 0x4000, 0x7fc0, 0xff81, 0x8000};
    memcpy(val + IV2_CACHE_VALUE_HDR, pay, sizeof pay);
    iv2_cache_seal_value(tg, val);
    const void *enc[1] = {val};
    iv2_cache_entry e;
    memset(&e, 0, sizeof e);
    e.view.num_frames = 4; e.view.n_student = NSTU; e.view.size = SIZE;
    e.frames = fr;
    e.encoded = enc;
    CHECK(iv2_cache_put(c, &e, 1, NULL, NULL, 0) == 0, "put: %s", iv2_errmsg());
    iv2_cache_key k = {0, 0};
    uint16_t raw[8], conv[8];
    float f[8];
    CHECK(iv2_cache_read_rows_as(c, k, 0, NULL, 0, IV2_BF16, raw) == 0 && iv2_cache_read_rows(c, k, 0, NULL, 0, f) == 0, "read");
    iv2_f32_to_bf16_n(conv, f, 8);
    CHECK(!memcmp(raw, pay, sizeof pay), "raw bf16 rows keep every stored bit, the sNaN too");
    int diff = 0;
    for (int i = 0; i < 8; i++) diff += raw[i] != conv[i];
    CHECK(diff == 2 && conv[1] == 0x7fc1 && conv[6] == 0xffc1, "f32 + conversion differs only in the quieted sNaNs (%d)", diff);
    iv2_cache_close(c);
}

static void check_roundtrip(const char *dt, float rtol, float atol) {
    char dir[256], m[2048];
    snprintf(dir, sizeof dir, "build/tmp/test_cache_%s", dt);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {}
    iv2_cache *c;
    CHECK(iv2_cache_open(&c, dir, IV2_CACHE_RDWR) == 0, "open rw %s: %s", dt, iv2_errmsg());
    meta(m, sizeof m, dt, 1, 0, 1, "a");
    CHECK(iv2_cache_set_meta(c, m) == 0, "meta: %s", iv2_errmsg());
    CHECK(fill(c, 0, 5, 1) == 0, "fill: %s", iv2_errmsg());
    iv2_cache_close(c);

    CHECK(iv2_cache_open(&c, dir, IV2_CACHE_RDONLY) == 0, "open ro: %s", iv2_errmsg());
    CHECK(iv2_cache_count_views(c) == 10, "views %lld", (long long)iv2_cache_count_views(c));
    CHECK(iv2_cache_n_targets(c) == 3, "targets");
    int tb = iv2_cache_find_target(c, "clip_b5");
    CHECK(tb == 0 && iv2_cache_target_at(c, 0)->tokens == 9, "target lookup");
    float got[9 * 24], want[9 * 24];
    iv2_cache_key k = {3, 1};
    for (int t = 0; t < 3; t++) {
        CHECK(iv2_cache_read_rows(c, k, t, NULL, 0, got) == 0, "read: %s", iv2_errmsg());
        for (int i = 0; i < TOK[t] * DIM[t]; i++) want[i] = val(3, 1, t, i);
        const iv2_cache_target *tg = iv2_cache_target_at(c, t);
        if (tg->dtype == IV2_F32) {
            CHECK(memcmp(got, want, sizeof(float) * TOK[t] * DIM[t]) == 0, "%s fp32 not bit-exact", tg->name);
        } else if (tg->dtype == IV2_I8) {
            /* naive quantiser as the oracle, then error bound of half a step */
            for (int r = 0; r < TOK[t]; r++) {
                float mx = 0;
                for (int j = 0; j < DIM[t]; j++) mx = fmaxf(mx, fabsf(want[r * DIM[t] + j]));
                for (int j = 0; j < DIM[t]; j++) {
                    float q = mx > 0 ? roundf(want[r * DIM[t] + j] / (mx / 127)) * (mx / 127) : 0;
                    CHECK(fabsf(got[r * DIM[t] + j] - q) <= 1e-6f * mx, "int8 %s [%d][%d] %g vs %g", tg->name, r, j, got[r * DIM[t] + j], q);
                    CHECK(fabsf(got[r * DIM[t] + j] - want[r * DIM[t] + j]) <= 0.5f * mx / 127 * 1.0001f, "int8 err");
                }
            }
        } else {
            t_allclose(tg->name, got, want, (size_t)TOK[t] * DIM[t], rtol, atol);
        }
    }
    /* selected rows equal the same rows of the full read */
    int32_t rows[3] = {7, 0, 4};
    float sel[3 * 24];
    CHECK(iv2_cache_read_rows(c, k, 0, NULL, 0, got) == 0, "read");
    CHECK(iv2_cache_read_rows(c, k, 0, rows, 3, sel) == 0, "read rows");
    for (int i = 0; i < 3; i++) CHECK(memcmp(sel + i * 24, got + rows[i] * 24, 24 * 4) == 0, "row %d", rows[i]);
    int32_t bad = 9;
    CHECK(iv2_cache_read_rows(c, k, 0, &bad, 1, sel) == -1 && strstr(iv2_errmsg(), "out of range"), "bounds: %s", iv2_errmsg());
    iv2_cache_key nok = {99, 0};
    CHECK(iv2_cache_read_rows(c, nok, 0, NULL, 0, got) == -1 && strstr(iv2_errmsg(), "row 99"), "missing: %s", iv2_errmsg());
    check_rows_as(c, k, dt);
    /* view record */
    iv2_cache_view v;
    uint8_t fr[NSTU * SIZE * SIZE * 3];
    CHECK(iv2_cache_read_view(c, k, &v, fr) == 0, "view: %s", iv2_errmsg());
    CHECK(v.row == 3 && v.view == 1 && v.flip == 1 && v.frame[2] == 5 && v.n_student == NSTU, "view header");
    CHECK(fr[10] == (uint8_t)(3 * 3 + 1 + 10), "frames");
    iv2_cache_verify_report rep;
    CHECK(iv2_cache_verify(c, &rep, stderr) == 0 && rep.views == 10 && rep.bad == 0, "verify");
    iv2_cache_close(c);
}

/* one view (row, view) whose frames are all `byte`, values as fill() makes them */
static int put_view(iv2_cache *c, int64_t row, int view, uint8_t byte) {
    iv2_cache_entry e;
    memset(&e, 0, sizeof e);
    uint8_t fr[NSTU * SIZE * SIZE * 3];
    memset(fr, byte, sizeof fr);
    float *v[3];
    const float *vp[3];
    e.view.row = row; e.view.view = (uint32_t)view; e.view.num_frames = 4; e.view.n_student = NSTU; e.view.size = SIZE;
    for (int t = 0; t < 3; t++) {
        v[t] = malloc(sizeof(float) * TOK[t] * DIM[t]);
        for (int i = 0; i < TOK[t] * DIM[t]; i++) v[t][i] = val(row, view, t, i);
        vp[t] = v[t];
    }
    e.frames = fr;
    e.values = vp;
    int rc = iv2_cache_put(c, &e, 1, NULL, NULL, 0);
    for (int t = 0; t < 3; t++) free(v[t]);
    return rc;
}

static uint64_t digest_of(iv2_cache *c) {
    iv2_cache_verify_report r;
    iv2_cache_verify(c, &r, NULL);
    free(r.bad_keys);
    return r.digest;
}

/* the on-disk key encoding, what a stored view and a stored error do to each other, the digest's
 * coverage of the errors, and the meta checks that the round trips above do not reach */
static void check_format(void) {
    /* keys: row u64 then view u32, both big-endian (docs/cache.md), so LMDB lists views by row */
    uint8_t kb[IV2_CACHE_KEY_SIZE];
    iv2_cache_key_pack(kb, (iv2_cache_key){0x0102030405060708LL, 0x090a0b0cu});
    const uint8_t be[IV2_CACHE_KEY_SIZE] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    CHECK(!memcmp(kb, be, sizeof be), "view key bytes are big-endian row, then view");

    if (system("rm -rf build/tmp/test_cache_fmt build/tmp/test_cache_fmt2")) {}
    char m[2048];
    iv2_cache *c, *c2;
    meta(m, sizeof m, "fp32", 1, 0, 1, "a");
    CHECK(iv2_cache_open(&c, "build/tmp/test_cache_fmt", IV2_CACHE_RDWR) == 0 && iv2_cache_set_meta(c, m) == 0, "fmt: %s", iv2_errmsg());
    CHECK(iv2_cache_open(&c2, "build/tmp/test_cache_fmt2", IV2_CACHE_RDWR) == 0 && iv2_cache_set_meta(c2, m) == 0, "fmt2: %s", iv2_errmsg());
    /* errors are keyed by the row, u64 big-endian */
    int64_t er = 4;
    const char *why = "boom";
    CHECK(iv2_cache_put(c, NULL, 0, &er, &why, 1) == 0, "put error");
    uint8_t rb[8] = {0, 0, 0, 0, 0, 0, 0, 4};
    void *raw = NULL;
    size_t n = 0;
    CHECK(iv2_cache_read_raw(c, "errors", rb, 8, &raw, &n) == 0 && n == 4 && !memcmp(raw, "boom", 4),
          "error of row 4 under its big-endian key: %s", iv2_errmsg());
    free(raw);
    /* the digest covers the errors, keys included: the same reason on another row differs */
    er = 5;
    CHECK(iv2_cache_put(c2, NULL, 0, &er, &why, 1) == 0, "put error 2");
    CHECK(digest_of(c) != digest_of(c2), "digest tells an error on row 4 from one on row 5");
    uint64_t d0 = digest_of(c2);
    er = 7;
    CHECK(iv2_cache_put(c2, NULL, 0, &er, &why, 1) == 0 && digest_of(c2) != d0, "digest changes with a new error");
    /* a row that now has a view loses its error */
    CHECK(fill(c, 4, 5, 1) == 0 && iv2_cache_count_errors(c) == 0, "stored row 4 keeps its error (%lld errors)",
          (long long)iv2_cache_count_errors(c));
    /* a stored view is kept: putting it again with other frames changes nothing */
    CHECK(put_view(c, 4, 0, 0xAB) == 0, "re-put: %s", iv2_errmsg());
    uint8_t fr[NSTU * SIZE * SIZE * 3] = {0};
    CHECK(iv2_cache_read_view(c, (iv2_cache_key){4, 0}, NULL, fr) == 0 && fr[0] == (uint8_t)(4 * 3) && fr[10] == (uint8_t)(4 * 3 + 10),
          "a stored view was overwritten (frame byte %d)", fr[0]);

    /* the meta comparison sees a field only the cache has, and a target list of another length */
    char m2[2600];
    snprintf(m2, sizeof m2, "{\"extra\":1,%s", m + 1);
    iv2_cache_close(c2);
    if (system("rm -rf build/tmp/test_cache_fmt2")) {}
    CHECK(iv2_cache_open(&c2, "build/tmp/test_cache_fmt2", IV2_CACHE_RDWR) == 0 && iv2_cache_set_meta(c2, m2) == 0, "meta with extra");
    CHECK(iv2_cache_set_meta(c2, m) == -1 && strstr(iv2_errmsg(), "extra is (absent) here, 1 in the cache"),
          "a field only the cache has: %s", iv2_errmsg());
    char *cut = strstr(m, ",{\"name\":\"mae_b3\"");
    if (cut) {
        snprintf(m2, sizeof m2, "%.*s]}", (int)(cut - m), m);
        CHECK(iv2_cache_set_meta(c, m2) == -1 && strstr(iv2_errmsg(), "targets has 2 entries here, 3 in the cache"),
              "a shorter target list: %s", iv2_errmsg());
    }
    /* the free fields (docs/cache.md) may all differ */
    char fa[3000], fb[3000];
    const char *free_fmt = "{\"tool_version\":\"%s\",\"created\":%d,\"manifest_path\":\"%s\",\"manifest_bytes\":%d,"
                           "\"device\":\"%s\",\"threads\":%d,\"paths\":{\"internvit\":\"%s\"},%s";
    snprintf(fa, sizeof fa, free_fmt, "a", 1, "m.jsonl", 10, "cpu", 2, "w1", m + 1);
    snprintf(fb, sizeof fb, free_fmt, "b", 2, "n.jsonl", 20, "cuda", 8, "w2", m + 1);
    CHECK(iv2_cache_meta_compare(fb, fa, NULL) == 0, "free fields may differ: %s", iv2_errmsg());
    /* merges and shard sets refuse another seed */
    iv2_cache_close(c2);
    if (system("rm -rf build/tmp/test_cache_fmt2")) {}
    meta(m2, sizeof m2, "fp32", 2, 0, 1, "a");
    CHECK(iv2_cache_open(&c2, "build/tmp/test_cache_fmt2", IV2_CACHE_RDWR) == 0 && iv2_cache_set_meta(c2, m2) == 0, "seed 2");
    CHECK(iv2_cache_merge_from(c, c2, NULL) == -1 && strstr(iv2_errmsg(), "seed"), "merge of another seed: %s", iv2_errmsg());
    iv2_cache_close(c2);
    /* a target list with a name twice, or an empty shape, is refused */
    if (system("rm -rf build/tmp/test_cache_fmt2")) {}
    CHECK(iv2_cache_open(&c2, "build/tmp/test_cache_fmt2", IV2_CACHE_RDWR) == 0, "fmt2");
    const char *tgt = "{\"name\":\"clip_b0\",\"teacher\":\"internvit\",\"kind\":\"block\",\"tokens\":%d,\"dim\":4,\"dtype\":\"fp32\"}";
    char t1[256], t0[256];
    snprintf(t1, sizeof t1, tgt, 2);
    snprintf(t0, sizeof t0, tgt, 0);
    snprintf(m2, sizeof m2, "{\"format\":1,\"targets\":[%s,%s]}", t1, t1);
    CHECK(iv2_cache_set_meta(c2, m2) == -1 && strstr(iv2_errmsg(), "listed twice"), "a target twice: %s", iv2_errmsg());
    snprintf(m2, sizeof m2, "{\"format\":1,\"targets\":[%s]}", t0);
    CHECK(iv2_cache_set_meta(c2, m2) == -1 && strstr(iv2_errmsg(), "bad shape"), "0 tokens: %s", iv2_errmsg());
    iv2_cache_close(c2);

    /* verify, on damage made behind the cache's back with LMDB itself: a record stored under
     * another view's key, a view record with a byte too many, values left without their view */
    CHECK(fill(c, 0, 3, 1) == 0, "fill fmt");
    iv2_cache_close(c);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi views;
    int ok = mdb_env_create(&env) == 0 && mdb_env_set_maxdbs(env, 16) == 0 &&
             mdb_env_open(env, "build/tmp/test_cache_fmt", 0, 0664) == 0 && mdb_txn_begin(env, NULL, 0, &txn) == 0 &&
             mdb_dbi_open(txn, "views", 0, &views) == 0;
    CHECK(ok, "raw LMDB open");
    if (ok) {
        uint8_t k10[IV2_CACHE_KEY_SIZE], k11[IV2_CACHE_KEY_SIZE], k20[IV2_CACHE_KEY_SIZE], k40[IV2_CACHE_KEY_SIZE];
        iv2_cache_key_pack(k10, (iv2_cache_key){1, 0});
        iv2_cache_key_pack(k11, (iv2_cache_key){1, 1});
        iv2_cache_key_pack(k20, (iv2_cache_key){2, 0});
        iv2_cache_key_pack(k40, (iv2_cache_key){4, 0});
        MDB_val a = {sizeof k11, k11}, b = {sizeof k10, k10}, v, w;
        ok = mdb_get(txn, views, &a, &v) == 0;
        uint8_t *rec = malloc(v.mv_size + 1);
        if (ok) memcpy(rec, v.mv_data, v.mv_size);
        w.mv_size = v.mv_size, w.mv_data = rec;
        ok = ok && mdb_put(txn, views, &b, &w, 0) == 0;   /* (1, 1)'s record under the key (1, 0) */
        a.mv_data = k20;
        ok = ok && mdb_get(txn, views, &a, &v) == 0;
        uint8_t *longer = calloc(1, v.mv_size + 1);
        if (ok) memcpy(longer, v.mv_data, v.mv_size);
        w.mv_size = v.mv_size + 1, w.mv_data = longer;
        ok = ok && mdb_put(txn, views, &a, &w, 0) == 0;    /* (2, 0)'s record one byte longer */
        a.mv_data = k40;
        ok = ok && mdb_del(txn, views, &a, NULL) == 0;     /* (4, 0)'s values without their view */
        ok = ok && mdb_txn_commit(txn) == 0;
        CHECK(ok, "raw LMDB damage");
        free(rec);
        free(longer);
    }
    mdb_env_close(env);
    CHECK(iv2_cache_open(&c, "build/tmp/test_cache_fmt", IV2_CACHE_RDONLY) == 0, "reopen fmt: %s", iv2_errmsg());
    FILE *log = tmpfile();
    iv2_cache_verify_report rep;
    CHECK(iv2_cache_verify(c, &rep, log) == 1, "verify finds the damage");
    char text[4096] = "";
    rewind(log);
    text[fread(text, 1, sizeof text - 1, log)] = 0;
    fclose(log);
    CHECK(strstr(text, "row 1 view 0: record says row 1 view 1") != NULL, "record under another view's key:\n%s", text);
    CHECK(strstr(text, "row 2 view 0: view record is") != NULL, "a view record a byte too long:\n%s", text);
    CHECK(strstr(text, "target clip_b5 holds") != NULL, "values without their view:\n%s", text);
    free(rep.bad_keys);
    iv2_cache_close(c);
}

int main(void) {
    iv2_set_quiet(1);
    if (system("mkdir -p build/tmp")) {}
    check_roundtrip("fp32", 0, 0);
    check_roundtrip("bf16", 1.0f / 256, 1e-30f);
    check_roundtrip("fp16", 1.0f / 2048, 1e-4f);
    check_roundtrip("int8", 0, 0);
    check_snan();
    check_format();

    /* verify finds a byte flipped inside a stored value (on disk, behind LMDB's back) */
    {
        FILE *fp = fopen("build/tmp/test_cache_fp32/data.mdb", "r+b");
        CHECK(fp != NULL, "data.mdb");
        if (fp) {
            fseek(fp, 0, SEEK_END);
            long sz = ftell(fp);
            unsigned char *d = malloc((size_t)sz);
            fseek(fp, 0, SEEK_SET);
            CHECK(fread(d, 1, (size_t)sz, fp) == (size_t)sz, "read data.mdb");
            float pat[4];
            for (int i = 0; i < 4; i++) pat[i] = val(2, 1, 0, 100 + i);   /* row 2 view 1, clip_b5 */
            unsigned char *hit = memmem(d, (size_t)sz, pat, sizeof pat);
            CHECK(hit != NULL, "value bytes found in data.mdb");
            if (hit) {
                fseek(fp, (long)(hit - d) + 5, SEEK_SET);
                fputc(hit[5] ^ 0x40, fp);
            }
            fclose(fp);
            free(d);
            iv2_cache *cc;
            iv2_cache_verify_report rr;
            CHECK(iv2_cache_open(&cc, "build/tmp/test_cache_fp32", IV2_CACHE_RDONLY) == 0, "reopen");
            FILE *devnull = fopen("/dev/null", "w");
            CHECK(iv2_cache_verify(cc, &rr, devnull) == 1 && rr.bad == 1, "verify found %lld bad", (long long)rr.bad);
            CHECK(rr.n_bad_keys == 1 && rr.bad_keys[0].row == 2 && rr.bad_keys[0].view == 1, "the bad view named (%lld keys)",
                  (long long)rr.n_bad_keys);
            iv2_cache_close(cc);
            /* the repair: drop it (view and values), then the cache verifies and lacks just that view */
            int64_t before = rr.views;
            CHECK(iv2_cache_open(&cc, "build/tmp/test_cache_fp32", IV2_CACHE_RDWR) == 0, "reopen read-write");
            CHECK(iv2_cache_drop_views(cc, rr.bad_keys, rr.n_bad_keys) == 0, "drop: %s", iv2_errmsg());
            free(rr.bad_keys);
            CHECK(iv2_cache_verify(cc, &rr, devnull) == 0 && rr.bad == 0 && rr.views == before - 1 && rr.n_bad_keys == 0,
                  "after the drop: %lld views, %lld bad", (long long)rr.views, (long long)rr.bad);
            CHECK(iv2_cache_has_view(cc, (iv2_cache_key){2, 1}) == 0 && iv2_cache_has_view(cc, (iv2_cache_key){2, 0}) == 1,
                  "row 2 view 1 gone, view 0 kept");
            free(rr.bad_keys);
            fclose(devnull);
            iv2_cache_close(cc);
        }
    }

    /* value checksum catches a flipped byte */
    iv2_cache_target t = {"x", "internvit", "block", 0, 3, 5, IV2_BF16, "l2"};
    float src[15];
    for (int i = 0; i < 15; i++) src[i] = (float)i / 7;
    uint8_t buf[IV2_CACHE_VALUE_HDR + 30];
    iv2_cache_encode_value(&t, src, buf);
    CHECK(iv2_cache_check_value(&t, buf, sizeof buf) == 0, "clean value");
    buf[IV2_CACHE_VALUE_HDR + 7] ^= 1;
    CHECK(iv2_cache_check_value(&t, buf, sizeof buf) == -1 && strstr(iv2_errmsg(), "checksum"), "flip: %s", iv2_errmsg());
    CHECK(iv2_cache_check_value(&t, buf, sizeof buf - 1) == -1, "short value");
    /* a value of the right size is still refused under another shape, dtype or magic */
    {
        iv2_cache_encode_value(&t, src, buf);
        iv2_cache_target t53 = t, tf16 = t;
        t53.tokens = 5, t53.dim = 3;
        tf16.dtype = IV2_F16;
        CHECK(iv2_cache_check_value(&t53, buf, sizeof buf) == -1 && strstr(iv2_errmsg(), "stored [3][5]"), "[3][5] as [5][3]: %s", iv2_errmsg());
        CHECK(iv2_cache_check_value(&tf16, buf, sizeof buf) == -1 && strstr(iv2_errmsg(), "stored [3][5] BF16"), "bf16 as fp16: %s", iv2_errmsg());
        buf[0] ^= 1;
        CHECK(iv2_cache_check_value(&t, buf, sizeof buf) == -1 && strstr(iv2_errmsg(), "magic"), "bad magic: %s", iv2_errmsg());
    }

    /* refusal on changed settings names the field; free fields may differ */
    char m[2048];
    iv2_cache *c;
    CHECK(iv2_cache_open(&c, "build/tmp/test_cache_bf16", IV2_CACHE_RDWR) == 0, "reopen");
    meta(m, sizeof m, "bf16", 2, 0, 1, "a");
    CHECK(iv2_cache_set_meta(c, m) == -1 && strstr(iv2_errmsg(), "seed is 2 here, 1 in the cache"), "seed: %s", iv2_errmsg());
    meta(m, sizeof m, "fp16", 1, 0, 1, "a");
    CHECK(iv2_cache_set_meta(c, m) == -1 && strstr(iv2_errmsg(), "targets[0].dtype is \"fp16\" here"), "dtype: %s", iv2_errmsg());
    meta(m, sizeof m, "bf16", 1, 1, 2, "a");
    CHECK(iv2_cache_set_meta(c, m) == -1 && strstr(iv2_errmsg(), "shard.k"), "shard: %s", iv2_errmsg());
    meta(m, sizeof m, "bf16", 1, 0, 1, "b");
    CHECK(iv2_cache_set_meta(c, m) == 0, "tool_version is free: %s", iv2_errmsg());
    /* a rerun skips what is stored (content unchanged) */
    iv2_cache_verify_report r0, r1;
    iv2_cache_verify(c, &r0, NULL);
    CHECK(fill(c, 0, 5, 1) == 0, "refill");
    iv2_cache_verify(c, &r1, NULL);
    CHECK(r0.digest == r1.digest && r1.views == 10, "rerun changed content");
    iv2_cache_close(c);

    /* a file given as the cache folder: a clear error for both modes, the file untouched */
    {
        FILE *fp = fopen("build/tmp/test_cache_file", "w");
        if (fp) { fputs("x", fp); fclose(fp); }
        CHECK(iv2_cache_open(&c, "build/tmp/test_cache_file", IV2_CACHE_RDWR) == -1 && strstr(iv2_errmsg(), "not a folder"),
              "file as cache (rw): %s", iv2_errmsg());
        CHECK(iv2_cache_open(&c, "build/tmp/test_cache_file", IV2_CACHE_RDONLY) == -1 && strstr(iv2_errmsg(), "not a folder"),
              "file as cache (ro): %s", iv2_errmsg());
        remove("build/tmp/test_cache_file");
        /* an empty data.mdb (a creation cut off): named as such for readers, not LMDB's EBADF */
        (void)!system("rm -rf build/tmp/test_cache_empty && mkdir -p build/tmp/test_cache_empty && "
                      ": > build/tmp/test_cache_empty/data.mdb");
        CHECK(iv2_cache_open(&c, "build/tmp/test_cache_empty", IV2_CACHE_RDONLY) == -1 &&
              strstr(iv2_errmsg(), "data.mdb is empty"), "empty data.mdb (ro): %s", iv2_errmsg());
    }

    /* map limit: a map that may not grow fails clearly and keeps the cache valid */
    if (system("rm -rf build/tmp/test_cache_full")) {}
    setenv("IV2_CACHE_MAX_MAP", "1048576", 1);
    CHECK(iv2_cache_open(&c, "build/tmp/test_cache_full", IV2_CACHE_RDWR) == 0, "open full");
    meta(m, sizeof m, "fp32", 1, 0, 1, "a");
    CHECK(iv2_cache_set_meta(c, m) == 0, "meta");
    int rc = 0;
    int64_t r;
    for (r = 0; r < 2000 && rc == 0; r++) rc = fill(c, r, r + 1, 1);
    CHECK(rc == -1 && strstr(iv2_errmsg(), "is full"), "map full: rc %d %s", rc, iv2_errmsg());
    iv2_cache_close(c);
    unsetenv("IV2_CACHE_MAX_MAP");
    CHECK(iv2_cache_open(&c, "build/tmp/test_cache_full", IV2_CACHE_RDONLY) == 0, "reopen full");
    iv2_cache_verify_report rf;
    CHECK(iv2_cache_verify(c, &rf, stderr) == 0 && rf.views == 2 * (r - 1) && rf.views > 0, "full cache verify views %lld r %lld", (long long)rf.views, (long long)r);
    iv2_cache_close(c);
    /* without the limit it grows past 1 MiB */
    CHECK(iv2_cache_open(&c, "build/tmp/test_cache_full", IV2_CACHE_RDWR) == 0, "reopen rw");
    CHECK(fill(c, r, r + 40, 1) == 0, "grow: %s", iv2_errmsg());
    iv2_cache_close(c);

    /* shards + merge equal one run */
    if (system("rm -rf build/tmp/test_cache_s0 build/tmp/test_cache_s1 build/tmp/test_cache_all build/tmp/test_cache_m")) {}
    iv2_cache *s0, *s1, *all, *mg;
    meta(m, sizeof m, "bf16", 1, 0, 1, "a");
    CHECK(iv2_cache_open(&all, "build/tmp/test_cache_all", IV2_CACHE_RDWR) == 0 && iv2_cache_set_meta(all, m) == 0, "all");
    CHECK(iv2_cache_open(&mg, "build/tmp/test_cache_m", IV2_CACHE_RDWR) == 0 && iv2_cache_set_meta(mg, m) == 0, "m");
    meta(m, sizeof m, "bf16", 1, 0, 2, "a");
    CHECK(iv2_cache_open(&s0, "build/tmp/test_cache_s0", IV2_CACHE_RDWR) == 0 && iv2_cache_set_meta(s0, m) == 0, "s0");
    meta(m, sizeof m, "bf16", 1, 1, 2, "a");
    CHECK(iv2_cache_open(&s1, "build/tmp/test_cache_s1", IV2_CACHE_RDWR) == 0 && iv2_cache_set_meta(s1, m) == 0, "s1");
    fill(all, 0, 7, 1);
    fill(s0, 0, 7, 2);
    fill(s1, 1, 7, 2);
    int64_t er[1] = {9};
    const char *reason[1] = {"no video stream"};
    iv2_cache_put(all, NULL, 0, er, reason, 1);
    iv2_cache_put(s1, NULL, 0, er, reason, 1);
    iv2_cache_close(s0);
    iv2_cache_close(s1);
    iv2_cache_set set;
    CHECK(iv2_cache_set_open(&set, "build/tmp/test_cache_s0,build/tmp/test_cache_s1") == 0, "set: %s", iv2_errmsg());
    CHECK(set.n_views == 14 && set.n_shards == 2, "set views %lld", (long long)set.n_views);
    float a[9 * 24], b[9 * 24];
    iv2_cache_key k5 = {5, 0};
    for (int64_t i = 0; i < set.n_views; i++)
        if (set.view_key[i].row == 5 && set.view_key[i].view == 0) {
            CHECK(iv2_cache_set_read_rows(&set, i, 0, NULL, 0, a) == 0, "set read");
            CHECK(iv2_cache_read_rows(all, k5, 0, NULL, 0, b) == 0 && memcmp(a, b, sizeof a) == 0, "set value");
        }
    int64_t copied = 0, cp2 = 0;
    CHECK(iv2_cache_merge_from(mg, set.shards[0], &copied) == 0, "merge 0: %s", iv2_errmsg());
    CHECK(iv2_cache_merge_from(mg, set.shards[1], &cp2) == 0, "merge 1: %s", iv2_errmsg());
    CHECK(copied + cp2 == 14, "copied %lld", (long long)(copied + cp2));
    iv2_cache_set_close(&set);
    iv2_cache_verify_report ra, rm;
    CHECK(iv2_cache_verify(all, &ra, stderr) == 0 && iv2_cache_verify(mg, &rm, stderr) == 0, "verify");
    CHECK(ra.digest == rm.digest && ra.errors == 1 && rm.errors == 1, "merge digest %llx vs %llx",
          (unsigned long long)ra.digest, (unsigned long long)rm.digest);
    /* a row never holds both a view and an error, merged or put: a shard's error of a row merged
     * in with views is not copied, and a view merged in removes the error of its row */
    {
        iv2_cache *ea, *eb;
        if (system("rm -rf build/tmp/test_cache_ea build/tmp/test_cache_eb")) {}
        meta(m, sizeof m, "bf16", 1, 0, 1, "a");
        CHECK(iv2_cache_open(&ea, "build/tmp/test_cache_ea", IV2_CACHE_RDWR) == 0 && iv2_cache_set_meta(ea, m) == 0, "ea");
        CHECK(iv2_cache_open(&eb, "build/tmp/test_cache_eb", IV2_CACHE_RDWR) == 0 && iv2_cache_set_meta(eb, m) == 0, "eb");
        int64_t er2[1] = {2};
        const char *late[1] = {"decode failed"};
        CHECK(iv2_cache_put(ea, NULL, 0, er2, late, 1) == 0 && fill(eb, 9, 10, 1) == 0, "ea, eb: %s", iv2_errmsg());
        CHECK(iv2_cache_merge_from(mg, ea, NULL) == 0 && iv2_cache_count_errors(mg) == 1, "row 2 has views: its "
              "error not merged (%lld errors)", (long long)iv2_cache_count_errors(mg));
        CHECK(iv2_cache_merge_from(mg, eb, &copied) == 0 && copied == 2 && iv2_cache_count_errors(mg) == 0,
              "row 9's view merged: its error gone (%lld errors)", (long long)iv2_cache_count_errors(mg));
        iv2_cache_close(ea);
        iv2_cache_close(eb);
    }
    /* a shard whose frames were damaged (a disk error) is refused by the merge, naming the view
     * (the frames checksum, as verify checks it), and nothing of it is copied */
    {
        if (system("rm -rf build/tmp/test_cache_d build/tmp/test_cache_dm && cp -r build/tmp/test_cache_s0 build/tmp/test_cache_d")) {}
        FILE *fp = fopen("build/tmp/test_cache_d/data.mdb", "r+b");
        int hit_ok = 0;
        if (fp) {
            fseek(fp, 0, SEEK_END);
            long sz = ftell(fp);
            unsigned char *d = malloc((size_t)sz), ramp[64];
            fseek(fp, 0, SEEK_SET);
            if (fread(d, 1, (size_t)sz, fp) == (size_t)sz) {
                for (int i = 0; i < 64; i++) ramp[i] = (unsigned char)(200 + i);   /* a run of some view's frames */
                /* every copy: LMDB's copy-on-write leaves stale pages in the file too */
                for (unsigned char *hit = d; (hit = memmem(hit, (size_t)(d + sz - hit), ramp, sizeof ramp)); hit += 64) {
                    fseek(fp, (long)(hit - d) + 7, SEEK_SET);
                    fputc(hit[7] ^ 0x10, fp);
                    hit_ok = 1;
                }
            }
            fclose(fp);
            free(d);
        }
        CHECK(hit_ok, "frame bytes found in a shard's data.mdb");
        iv2_cache *dsrc, *ddst;
        meta(m, sizeof m, "bf16", 1, 0, 1, "a");
        CHECK(iv2_cache_open(&dsrc, "build/tmp/test_cache_d", IV2_CACHE_RDONLY) == 0 &&
              iv2_cache_open(&ddst, "build/tmp/test_cache_dm", IV2_CACHE_RDWR) == 0 && iv2_cache_set_meta(ddst, m) == 0,
              "damaged shard, merge target: %s", iv2_errmsg());
        int64_t dcp = 0;
        CHECK(iv2_cache_merge_from(ddst, dsrc, &dcp) == -1 && strstr(iv2_errmsg(), "frames checksum"),
              "merge of damaged frames refused: %s", iv2_errmsg());
        iv2_cache_close(dsrc);
        iv2_cache_close(ddst);
    }
    /* a shard set refuses one folder listed twice (its views would count twice) */
    CHECK(iv2_cache_set_open(&set, "build/tmp/test_cache_s0,build/tmp/test_cache_s0") == -1 && strstr(iv2_errmsg(), "listed twice"),
          "a folder twice: %s", iv2_errmsg());
    /* a shard set refuses caches with other settings */
    CHECK(iv2_cache_set_open(&set, "build/tmp/test_cache_all,build/tmp/test_cache_fp16") == -1 && strstr(iv2_errmsg(), "dtype"), "set mismatch: %s", iv2_errmsg());
    iv2_cache_close(all);
    iv2_cache_close(mg);

    /* read-only folder: reading works, writing is refused clearly */
    if (geteuid() != 0) {
        if (system("chmod -R a-w build/tmp/test_cache_m")) {}
        CHECK(iv2_cache_open(&c, "build/tmp/test_cache_m", IV2_CACHE_RDONLY) == 0, "ro folder: %s", iv2_errmsg());
        if (c) { CHECK(iv2_cache_count_views(c) == 14, "ro count"); iv2_cache_close(c); }
        CHECK(iv2_cache_open(&c, "build/tmp/test_cache_m", IV2_CACHE_RDWR) == -1 && strstr(iv2_errmsg(), "not writable"), "rw on ro: %s", iv2_errmsg());
        if (system("chmod -R u+w build/tmp/test_cache_m")) {}
    }
    /* a cache folder whose meta was never written is no cache for a reader */
    if (system("rm -rf build/tmp/test_cache_nometa")) {}
    CHECK(iv2_cache_open(&c, "build/tmp/test_cache_nometa", IV2_CACHE_RDWR) == 0, "open nometa");
    iv2_cache_close(c);
    CHECK(iv2_cache_open(&c, "build/tmp/test_cache_nometa", IV2_CACHE_RDONLY) == -1 && strstr(iv2_errmsg(), "no meta"),
          "no meta: %s", iv2_errmsg());
    CHECK(iv2_cache_open(&c, "build/tmp/nonexistent_cache", IV2_CACHE_RDONLY) == -1 && strstr(iv2_errmsg(), "no cache"), "absent");
    return test_done();
}
