/* test_pth: the .pth -> safetensors converter against outputs written by PyTorch itself
 * (tests/gen_pth_fixtures.py: torch.save checkpoints, and torch.load + safetensors.torch for the
 * expected files), exactly, byte for byte; then broken inputs: every truncation of a real
 * checkpoint, hand-made bad files, flipped bytes (CRC), and a pickle fuzz on the bare machine. */
#include "testutil.h"
#include "err.h"
#include "pth.h"
#include "pth_pickle.h"
#include "safetensors.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static char fixdir[512];

static const char *fx(const char *name) {
    static char buf[8][768];
    static int k;
    char *b = buf[k++ & 7];
    snprintf(b, 768, "%s/%s", fixdir, name);
    return b;
}

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(sz > 0 ? (size_t)sz : 1);
    *n = fread(b, 1, (size_t)sz, f);
    fclose(f);
    return b;
}

/* every tensor of want is in got with the same dtype, shape and bytes, and nothing else */
static void compare_files(const char *what, const char *got_path, const char *want_path) {
    iv2_st_file g, w;
    if (iv2_st_open(&w, want_path)) { CHECK(0, "%s: open expected: %s", what, iv2_errmsg()); return; }
    if (iv2_st_open(&g, got_path)) { CHECK(0, "%s: open output: %s", what, iv2_errmsg()); iv2_st_close(&w); return; }
    CHECK(g.n_tensors == w.n_tensors, "%s: %d tensors, want %d", what, g.n_tensors, w.n_tensors);
    for (int i = 0; i < w.n_tensors; i++) {
        iv2_st_tensor *wt = &w.tensors[i], *gt = iv2_st_find(&g, wt->name);
        CHECK(gt != NULL, "%s: tensor '%s' missing", what, wt->name);
        if (!gt) continue;
        CHECK(gt->dtype == wt->dtype, "%s: '%s' dtype %s, want %s", what, wt->name, iv2_dtype_name(gt->dtype), iv2_dtype_name(wt->dtype));
        int same_shape = gt->ndim == wt->ndim;
        for (int d = 0; same_shape && d < wt->ndim; d++) same_shape = gt->shape[d] == wt->shape[d];
        CHECK(same_shape, "%s: '%s' shape differs", what, wt->name);
        CHECK(gt->nbytes == wt->nbytes && (wt->nbytes == 0 || !memcmp(gt->data, wt->data, wt->nbytes)),
              "%s: '%s' data differs", what, wt->name);
    }
    const char *m = iv2_st_meta(&g, "format");
    CHECK(m && !strcmp(m, "pt"), "%s: __metadata__ format", what);
    iv2_st_close(&g);
    iv2_st_close(&w);
}

static int meta_int(const char *path, const char *key) {
    iv2_st_file w;
    if (iv2_st_open(&w, path)) return -1;
    const char *v = iv2_st_meta(&w, key);
    int r = v ? atoi(v) : -1;
    iv2_st_close(&w);
    return r;
}

static void convert_case(const char *in, const char *model, int dt, const char *want) {
    char out[256], what[256];
    snprintf(out, sizeof out, "/tmp/iv2_test_pth_%d.safetensors", (int)getpid());
    snprintf(what, sizeof what, "%s [%s, %s]", in, model, dt == IV2_PTH_KEEP ? "keep" : iv2_dtype_name((iv2_dtype)dt));
    iv2_pth_summary s;
    int rc = iv2_pth_convert(fx(in), out, model, dt, &s);
    CHECK(rc == 0, "%s: %s", what, iv2_errmsg());
    if (rc == 0) {
        compare_files(what, out, fx(want));
        CHECK(s.n_written == meta_int(fx(want), "n_written"), "%s: %d written, want %d", what, s.n_written, meta_int(fx(want), "n_written"));
        CHECK(s.n_dropped == meta_int(fx(want), "n_dropped"), "%s: %d dropped, want %d", what, s.n_dropped, meta_int(fx(want), "n_dropped"));
        CHECK(s.n_skipped == meta_int(fx(want), "n_skipped"), "%s: %d skipped, want %d", what, s.n_skipped, meta_int(fx(want), "n_skipped"));
    }
    unlink(out);
}

/* conversion fails and the message contains `needle` */
static void expect_error(const char *in, const char *model, const char *needle) {
    int file_error = strcmp(needle, "unknown model") != 0;
    char out[256];
    snprintf(out, sizeof out, "/tmp/iv2_test_pth_err_%d.safetensors", (int)getpid());
    iv2_err_clear();
    int rc = iv2_pth_convert(fx(in), out, model, IV2_PTH_KEEP, NULL);
    CHECK(rc == -1, "%s: conversion should fail", in);
    CHECK(strstr(iv2_errmsg(), needle) != NULL, "%s: message '%s' lacks '%s'", in, iv2_errmsg(), needle);
    CHECK(!file_error || strstr(iv2_errmsg(), in) != NULL, "%s: message '%s' does not name the file", in, iv2_errmsg());
    CHECK(access(out, F_OK) != 0, "%s: output written despite the error", in);
    unlink(out);
}

static void test_conversions(void) {
    convert_case("mixed.pth", "raw", IV2_PTH_KEEP, "mixed.keep.safetensors");
    convert_case("mixed.pth", "raw", IV2_BF16, "mixed.bf16.safetensors");
    convert_case("mixed.pth", "raw", IV2_F32, "mixed.f32.safetensors");
    convert_case("mixed.pth", "raw", IV2_F16, "mixed.f16.safetensors");
    setenv("IV2_PTH_STAGE_RAM_MAX", "0", 1); /* stage in the unlinked scratch file instead */
    convert_case("mixed.pth", "raw", IV2_BF16, "mixed.bf16.safetensors");
    unsetenv("IV2_PTH_STAGE_RAM_MAX");
    convert_case("zip64.pth", "raw", IV2_PTH_KEEP, "mixed.keep.safetensors");
    convert_case("videomae.pth", "videomae", IV2_PTH_KEEP, "videomae.keep.safetensors");
    convert_case("internvl_c.bin", "internvit", IV2_PTH_KEEP, "internvl_c.keep.safetensors");
    convert_case("internvl_c.bin", "internvit", IV2_F32, "internvl_c.f32.safetensors");
    convert_case("ddp.pth", "student", IV2_PTH_KEEP, "ddp.keep.safetensors");
}

/* two HF shards into one file; a name present in two shards is refused */
static void test_shards(void) {
    char out[256];
    snprintf(out, sizeof out, "/tmp/iv2_test_pth_sh_%d.safetensors", (int)getpid());
    const char *in[2] = {fx("pytorch_model-00001-of-00002.bin"), fx("pytorch_model-00002-of-00002.bin")};
    iv2_pth_summary s;
    int rc = iv2_pth_convert_shards(in, 2, out, "internvit", IV2_PTH_KEEP, &s);
    CHECK(rc == 0, "shards: %s", iv2_errmsg());
    if (rc == 0) {
        compare_files("shards", out, fx("shards.keep.safetensors"));
        CHECK(s.n_written == meta_int(fx("shards.keep.safetensors"), "n_written") &&
              s.n_dropped == meta_int(fx("shards.keep.safetensors"), "n_dropped"), "shards: %d written, %d dropped", s.n_written, s.n_dropped);
    }
    unlink(out);
    const char *dup[2] = {fx("mixed.pth"), fx("zip64.pth")};
    CHECK(iv2_pth_convert_shards(dup, 2, out, "raw", IV2_PTH_KEEP, NULL) == -1 &&
          strstr(iv2_errmsg(), "two tensors map to the name"), "duplicate across shards: %s", iv2_errmsg());
    CHECK(access(out, F_OK) != 0, "output written despite duplicate names");
    unlink(out);
}

/* the reader's view of strided / shared tensors */
static void test_reader(void) {
    iv2_pth_file f;
    if (iv2_pth_open(&f, fx("mixed.pth"))) { CHECK(0, "open mixed.pth: %s", iv2_errmsg()); return; }
    CHECK(f.wrapper && !strcmp(f.wrapper, "module"), "wrapper %s", f.wrapper ? f.wrapper : "(none)");
    iv2_pth_tensor *t = iv2_pth_find(&f, "blocks.0.mlp.fc2.weight");
    CHECK(t && !t->contiguous && t->ndim == 2 && t->shape[0] == 7 && t->stride[0] == 1 && t->stride[1] == 7, "transposed view");
    iv2_pth_tensor *a = iv2_pth_find(&f, "shared.a"), *b = iv2_pth_find(&f, "shared.b"), *full = iv2_pth_find(&f, "shared.full");
    CHECK(a && b && full && !strcmp(a->storage_key, b->storage_key) && !strcmp(a->storage_key, full->storage_key), "shared storage");
    if (a && full) {
        CHECK(a->offset == 3 && a->contiguous, "shared.a offset %lld", (long long)a->offset);
        /* the view reads back as the matching slice of the full storage */
        float fa[12], ff[64];
        CHECK(!iv2_pth_read(&f, a, fa, IV2_F32) && !iv2_pth_read(&f, full, ff, IV2_F32), "read: %s", iv2_errmsg());
        CHECK(!memcmp(fa, ff + 3, sizeof fa), "shared.a != full[3:15]");
    }
    t = iv2_pth_find(&f, "num_batches_tracked");
    if (t) {
        int64_t v = 0;
        CHECK(t->ndim == 0 && t->dtype == IV2_I64 && !iv2_pth_read(&f, t, &v, IV2_I64) && v == 1234567890123LL, "0-d int64 %lld", (long long)v);
    } else CHECK(0, "num_batches_tracked missing");
    iv2_pth_close(&f);
}

static void test_bad_files(void) {
    expect_error("legacy.pth", "raw", "re-save with torch>=1.6");
    expect_error("not_a_zip.pth", "raw", "not a zip");
    expect_error("bad_opcode.pth", "raw", "opcode 0x49 'I'");
    expect_error("bad_trunc_pickle.pth", "videomae", "truncated");
    expect_error("bad_extent.pth", "raw", "reaches element 302 of storage '0'");
    expect_error("bad_missing_storage.pth", "raw", "no zip entry 'bad/data/0'");
    expect_error("bad_compressed.pth", "internvit", "compressed");
    expect_error("bad_big_endian.pth", "internvit", "only little-endian");
    expect_error("bad_no_tensors.pth", "raw", "no tensors in the saved dict (keys: 'ema', 'epoch')");
    expect_error("bad_qtensor.pth", "raw", "unsupported storage type torch.QInt8Storage");
    expect_error("mixed.pth", "nonsense", "unknown model");
    expect_error("videomae.pth", "internvit_typo", "unknown model");
    expect_error("does_not_exist.pth", "raw", "No such file");
}

/* every truncation of a real checkpoint fails cleanly; flipped bytes are caught by the CRC */
static void test_truncations_and_flips(void) {
    size_t n;
    unsigned char *buf = slurp(fx("videomae.pth"), &n);
    CHECK(buf != NULL, "read videomae.pth");
    if (!buf) return;
    int opened = 0;
    for (size_t len = 0; len < n; len++) {
        iv2_pth_file f;
        if (iv2_pth_open_mem(&f, buf, len, "trunc") == 0) { opened++; iv2_pth_close(&f); }
        else if (!iv2_errmsg()[0]) { CHECK(0, "truncated at %zu: empty error", len); break; }
    }
    CHECK(opened == 0, "%d truncated copies opened", opened);
    iv2_pth_file f;
    CHECK(iv2_pth_open_mem(&f, buf, n, "whole") == 0, "whole file from memory: %s", iv2_errmsg());
    iv2_pth_close(&f);
    /* one flipped bit anywhere: either open fails or reading every tensor fails on the CRC,
     * except in bytes torch's reader ignores too (timestamps, padding, version entries) */
    unsigned char *cp = malloc(n);
    int undetected_in_data = 0;
    for (size_t i = 0; i < n; i += 7) {
        memcpy(cp, buf, n);
        cp[i] ^= 0x10;
        if (iv2_pth_open_mem(&f, cp, n, "flip")) continue;
        for (int k = 0; k < f.n_tensors; k++) {
            iv2_pth_tensor *t = &f.tensors[k];
            size_t off = (size_t)((const unsigned char *)t->storage - cp);
            size_t sz = t->storage_numel * iv2_dtype_size(t->dtype);
            int in_storage = i >= off && i < off + sz;
            int bad = iv2_pth_verify(&f, t) != 0;
            if (in_storage && !bad) undetected_in_data++;
            if (bad) CHECK(strstr(iv2_errmsg(), "CRC-32") != NULL, "flip at %zu: %s", i, iv2_errmsg());
        }
        iv2_pth_close(&f);
    }
    CHECK(undetected_in_data == 0, "%d flipped storage bytes went unnoticed", undetected_in_data);
    free(cp);
    free(buf);
}

/* the bare pickle machine on every prefix and on byte-flipped copies of a real data.pkl */
static uint8_t fake_storage[1 << 16];
static const void *fake_resolve(void *ctx, const char *key, uint64_t nbytes, int *entry) {
    (void)ctx; (void)key;
    if (nbytes > sizeof fake_storage) { iv2_err("storage too big"); return NULL; }
    *entry = 0;
    return fake_storage;
}

static void test_pickle_fuzz(void) {
    size_t n;
    unsigned char *z = slurp(fx("mixed.pth"), &n);
    if (!z) { CHECK(0, "read mixed.pth"); return; }
    /* data.pkl is the first entry (torch writes it first); its size is in the central
     * directory record (the local header may defer it to a data descriptor) */
    size_t nl = z[26] | z[27] << 8, xl = z[28] | z[29] << 8, plen = 0;
    for (size_t i = n - 46; i > 0 && !plen; i--)
        if (!memcmp(z + i, "PK\1\2", 4) && !memcmp(z + i + 46 + (z[i + 28] | z[i + 29] << 8) - 8, "data.pkl", 8))
            plen = (size_t)z[i + 20] | (size_t)z[i + 21] << 8 | (size_t)z[i + 22] << 16 | (size_t)z[i + 23] << 24;
    const uint8_t *pk = z + 30 + nl + xl;
    CHECK(30 + nl + xl + plen <= n && plen > 100, "locate data.pkl (%zu bytes)", plen);
    if (30 + nl + xl + plen > n || plen <= 100) { free(z); return; }
    pth_unpickler u;
    pth_unpickler_init(&u, fake_resolve, NULL);
    pv_t *top = pth_unpickle(&u, pk, plen);
    CHECK(top && top->type == PV_DICT, "whole pickle: %s", iv2_errmsg());
    pth_unpickler_free(&u);
    int ok_prefix = 0;
    for (size_t len = 0; len < plen; len++) {
        pth_unpickler_init(&u, fake_resolve, NULL);
        if (pth_unpickle(&u, pk, len)) ok_prefix++;
        pth_unpickler_free(&u);
    }
    CHECK(ok_prefix == 0, "%d strict prefixes parsed", ok_prefix);
    uint8_t *cp = malloc(plen);
    uint32_t seed = 12345;
    for (int it = 0; it < 4000; it++) {
        memcpy(cp, pk, plen);
        for (int k = 0; k < 1 + it % 4; k++) {
            seed = seed * 1664525u + 1013904223u;
            size_t at = (seed >> 8) % plen;
            seed = seed * 1664525u + 1013904223u;
            cp[at] = (uint8_t)(it & 1 ? seed >> 24 : cp[at] ^ (1u << (seed >> 29)));
        }
        pth_unpickler_init(&u, fake_resolve, NULL);
        pv_t *r = pth_unpickle(&u, cp, plen);
        if (!r) CHECK(iv2_errmsg()[0] != 0, "fuzz %d: failure without a message", it);
        pth_unpickler_free(&u);
    }
    /* hostile shapes: deep nesting, a huge memo index, a huge length */
    static const uint8_t deep_hdr[] = {0x80, 0x02};
    size_t dn = 2 + 200000 + 1;
    uint8_t *deep = malloc(dn);
    memcpy(deep, deep_hdr, 2);
    memset(deep + 2, '(', 200000);
    deep[dn - 1] = '.';
    pth_unpickler_init(&u, fake_resolve, NULL);
    CHECK(pth_unpickle(&u, deep, dn) == NULL, "200000 MARKs then STOP must fail");
    pth_unpickler_free(&u);
    free(deep);
    const uint8_t bigmemo[] = {0x80, 0x02, 'N', 'r', 0xff, 0xff, 0xff, 0x7f, '.'};
    pth_unpickler_init(&u, fake_resolve, NULL);
    CHECK(pth_unpickle(&u, bigmemo, sizeof bigmemo) == NULL && strstr(iv2_errmsg(), "memo index"), "huge memo index: %s", iv2_errmsg());
    pth_unpickler_free(&u);
    const uint8_t biglen[] = {0x80, 0x02, 'X', 0xff, 0xff, 0xff, 0xff, 'a', '.'};
    pth_unpickler_init(&u, fake_resolve, NULL);
    CHECK(pth_unpickle(&u, biglen, sizeof biglen) == NULL && strstr(iv2_errmsg(), "truncated"), "huge string length: %s", iv2_errmsg());
    pth_unpickler_free(&u);
    /* a list that contains itself (through the memo) is harmless: nothing walks it */
    const uint8_t cyc[] = {0x80, 0x02, ']', 'q', 0x00, 'h', 0x00, 'a', '.'};
    pth_unpickler_init(&u, fake_resolve, NULL);
    pv_t *c = pth_unpickle(&u, cyc, sizeof cyc);
    CHECK(c && c->type == PV_LIST && c->n == 1 && c->items[0] == c, "self-containing list");
    pth_unpickler_free(&u);
    free(cp);
    free(z);
}

/* the --model mappings of docs/weights.md: InternVL's language side dropped (the table's list),
 * the DDP "module." prefix kept by raw alone, the input's file name as "source" */
static void test_naming(void) {
    const char *lang[] = {"transformer.layers.0.w", "text_projection", "logit_scale", "language_model.model.w", "qllama.w",
                          "query_tokens", "text_encoder.w", "text_decoder.w", "itm_head.weight", "mlp1.0.weight"};
    char out[256];
    for (int i = 0; i < 10; i++)
        CHECK(iv2_pth_map_name("internvit", lang[i], out, sizeof out) == 0, "internvit keeps '%s'", lang[i]);
    CHECK(iv2_pth_map_name("internvit", "blocks.0.attn.qkv.weight", out, sizeof out) == 1 &&
          !strcmp(out, "blocks.0.attn.qkv.weight"), "internvit vision tensor");
    snprintf(out, sizeof out, "/tmp/iv2_test_pth_raw_%d.safetensors", (int)getpid());
    CHECK(iv2_pth_convert(fx("ddp.pth"), out, "raw", IV2_PTH_KEEP, NULL) == 0, "ddp.pth raw: %s", iv2_errmsg());
    iv2_st_file g, w;
    if (iv2_st_open(&g, out) == 0 && iv2_st_open(&w, fx("ddp.keep.safetensors")) == 0) {
        int same = g.n_tensors == w.n_tensors;
        char nm[300];
        for (int i = 0; same && i < w.n_tensors; i++) {
            snprintf(nm, sizeof nm, "module.%s", w.tensors[i].name);
            iv2_st_tensor *t = iv2_st_find(&g, nm);
            same = t && t->nbytes == w.tensors[i].nbytes && !memcmp(t->data, w.tensors[i].data, t->nbytes);
        }
        CHECK(same, "raw keeps the DDP prefix: every tensor as module.<name>");
        const char *src = iv2_st_meta(&g, "source");
        CHECK(src && !strcmp(src, "ddp.pth"), "source is the input's file name: %s", src ? src : "(none)");
        iv2_st_close(&g);
        iv2_st_close(&w);
    } else CHECK(0, "open: %s", iv2_errmsg());
    unlink(out);
    /* a pipe with no writer is refused, not waited on */
    snprintf(out, sizeof out, "/tmp/iv2_test_pth_fifo_%d", (int)getpid());
    iv2_pth_file f;
    if (mkfifo(out, 0600) == 0) {
        alarm(20);
        CHECK(iv2_pth_open(&f, out) == -1 && strstr(iv2_errmsg(), "not a regular file"), "a pipe: %s", iv2_errmsg());
        alarm(0);
        unlink(out);
    } else CHECK(0, "mkfifo %s", out);
}

int main(void) {
    const char *root = getenv("IV2_ROOT");
    snprintf(fixdir, sizeof fixdir, "%s/tests/fixtures/pth", root ? root : ".");
    if (access(fx("mixed.pth"), R_OK)) {
        test_skip("tests/fixtures/pth absent (run from the repository root)");
        return test_done();
    }
    iv2_set_quiet(1);
    test_conversions();
    test_shards();
    test_naming();
    test_reader();
    test_bad_files();
    test_truncations_and_flips();
    test_pickle_fuzz();
    return test_done();
}
