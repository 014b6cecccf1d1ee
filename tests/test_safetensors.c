/* test_safetensors: writer round trip, alignment, atomic replace, unaligned reads, and every
 * kind of bad file the reader must reject with a message naming the file and the problem. */
#include "err.h"
#include "safetensors.h"
#include "testutil.h"
#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>
#include <stdint.h>
#include <sys/syscall.h>

/* The writer's fsync and rename, interposed (this program's definitions win over libc's for
 * the library linked into it) to check that the data is synced before the rename. */
static int n_fsync, n_rename, fsync_before_rename, fail_rename;
int fsync(int fd) {
    n_fsync++;
    return (int)syscall(SYS_fsync, fd);
}
int rename(const char *from, const char *to) {
    n_rename++;
    fsync_before_rename = n_fsync > 0;
    if (fail_rename) { fail_rename = 0; errno = EIO; return -1; }   /* one failure, on request */
    return (int)syscall(SYS_rename, from, to);
}

static char dir[64];

static char *path_in(const char *name) {
    static char buf[8][256];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 256, "%s/%s", dir, name);
    return p;
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); exit(1); }
    fwrite(p, 1, n, f);
    fclose(f);
}

/* a file from a header text (stored with its exact length) and data bytes */
static const char *mk(const char *name, const char *hdr, const void *data, size_t ndata) {
    size_t h = strlen(hdr);
    unsigned char *buf = malloc(8 + h + ndata + 1);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(buf + 8, hdr, h);
    if (ndata) memcpy(buf + 8 + h, data, ndata);
    const char *p = path_in(name);
    write_bytes(p, buf, 8 + h + ndata);
    free(buf);
    return p;
}

static void expect_fail(const char *path, const char *want) {
    iv2_st_file f;
    iv2_err_clear();
    int rc = iv2_st_open(&f, path);
    CHECK(rc == -1, "%s: opened, expected failure with '%s'", path, want);
    if (rc == 0) { iv2_st_close(&f); return; }
    const char *msg = iv2_errmsg();
    CHECK(strstr(msg, want) != NULL, "%s: message '%s' lacks '%s'", path, msg, want);
    CHECK(strstr(msg, path) != NULL, "message '%s' does not name the file %s", msg, path);
}

static int count_files(void) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

static void test_round_trip(void) {
    float a[6] = {1.5f, -2.25f, 3.0f, 1e-3f, 65504.f, -0.0f};
    uint16_t b[5] = {0x3f80, 0xc000, 0x7f80, 0x0001, 0x8000};
    uint8_t u[3] = {1, 2, 255};
    int64_t s = -1234567890123LL;
    uint16_t h[2] = {0x3c00, 0xfbff};
    int8_t c[4] = {-128, -1, 0, 127};
    int64_t sh_a[2] = {2, 3}, sh_b[1] = {5}, sh_u[1] = {3}, sh_h[2] = {1, 2}, sh_c[1] = {4}, sh_z[2] = {0, 4};
    iv2_st_writer w;
    iv2_st_writer_init(&w);
    iv2_st_writer_add(&w, "a", IV2_F32, 2, sh_a, a);
    iv2_st_writer_add(&w, "b.bf16", IV2_BF16, 1, sh_b, b);
    iv2_st_writer_add(&w, "u", IV2_U8, 1, sh_u, u);
    iv2_st_writer_add(&w, "scalar", IV2_I64, 0, NULL, &s);
    iv2_st_writer_add(&w, "h", IV2_F16, 2, sh_h, h);
    iv2_st_writer_add(&w, "c", IV2_I8, 1, sh_c, c);
    iv2_st_writer_add(&w, "zero", IV2_I32, 2, sh_z, NULL);
    iv2_st_writer_meta(&w, "format", "pt");
    iv2_st_writer_meta(&w, "note", "quote \" and \\ and \xc3\xa9");
    const char *p = path_in("rt.safetensors");
    CHECK(iv2_st_writer_write(&w, p) == 0, "write: %s", iv2_errmsg());
    iv2_st_writer_free(&w);

    /* header: 8-byte length, then '{', padded with spaces so the data starts 8-aligned */
    FILE *fp = fopen(p, "rb");
    unsigned char raw[4096];
    size_t n = fread(raw, 1, sizeof raw, fp);
    fclose(fp);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | raw[i];
    CHECK(hl % 8 == 0, "header length %llu not a multiple of 8", (unsigned long long)hl);
    CHECK(raw[8] == '{', "header starts with 0x%02x", raw[8]);
    CHECK(8 + hl + 24 + 10 + 3 + 8 + 4 + 4 == n, "file size %zu", n);
    int last = 8 + (int)hl - 1;
    while (raw[last] == ' ') last--;
    CHECK(raw[last] == '}', "header text ends with '%c' before its padding", raw[last]);

    iv2_st_file f;
    CHECK(iv2_st_open(&f, p) == 0, "open: %s", iv2_errmsg());
    if (f.n_tensors != 7) { CHECK(0, "n_tensors %d", f.n_tensors); iv2_st_close(&f); return; }
    CHECK(!strcmp(iv2_st_meta(&f, "format"), "pt"), "format");
    CHECK(!strcmp(iv2_st_meta(&f, "note"), "quote \" and \\ and \xc3\xa9"), "note '%s'", iv2_st_meta(&f, "note"));
    CHECK(iv2_st_meta(&f, "missing") == NULL, "missing meta");
    CHECK(iv2_st_find(&f, "nope") == NULL, "find nope");
    const iv2_st_tensor *t = iv2_st_find(&f, "a");
    CHECK(t && t->dtype == IV2_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && t->numel == 6, "a");
    float ga[6];
    iv2_st_read(&f, t, ga, IV2_F32);
    CHECK(!memcmp(ga, a, sizeof a), "a data");
    /* the reference writer's order: 8-byte dtypes, then 4-byte, ... each group by name */
    const uint8_t *base = (const uint8_t *)iv2_st_find(&f, "scalar")->data;
    CHECK((const uint8_t *)t->data == base + 8, "a after scalar");
    CHECK(((uintptr_t)base & 7) == 0, "data start 8-aligned in the map");
    t = iv2_st_find(&f, "scalar");
    int64_t gs;
    CHECK(t->ndim == 0 && t->numel == 1, "scalar numel %zu", t->numel);
    iv2_st_read(&f, t, &gs, IV2_I64);
    CHECK(gs == s, "scalar %lld", (long long)gs);
    t = iv2_st_find(&f, "b.bf16");
    uint16_t gb[5];
    iv2_st_read(&f, t, gb, IV2_BF16);
    CHECK(!memcmp(gb, b, sizeof b), "bf16 data");
    float gbf[5];
    iv2_st_read(&f, t, gbf, IV2_F32);
    CHECK(gbf[0] == 1.0f && gbf[1] == -2.0f && isinf(gbf[2]), "bf16->f32 %g %g %g", gbf[0], gbf[1], gbf[2]);
    t = iv2_st_find(&f, "u");
    uint8_t gu[3];
    iv2_st_read(&f, t, gu, IV2_U8);
    CHECK(!memcmp(gu, u, 3), "u8 data");
    t = iv2_st_find(&f, "c");
    float gc[4];
    iv2_st_read(&f, t, gc, IV2_F32);
    CHECK(gc[0] == -128 && gc[3] == 127, "i8->f32");
    t = iv2_st_find(&f, "h");
    float gh[2];
    iv2_st_read(&f, t, gh, IV2_F32);
    CHECK(gh[0] == 1.0f && gh[1] == -65504.f, "f16->f32 %g %g", gh[0], gh[1]);
    t = iv2_st_find(&f, "zero");
    CHECK(t && t->numel == 0 && t->nbytes == 0 && t->ndim == 2, "zero-size tensor");
    iv2_st_close(&f);
}

/* a F32 tensor at an odd address in the map is copied, not cast */
static void test_unaligned(void) {
    const char *hdr = "{\"u\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                      "\"f\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[1,13]},"
                      "\"h\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[13,17]}}";
    unsigned char data[17];
    float vals[3] = {3.5f, -1e-20f, 123456.789f};
    uint16_t hv[2] = {0x3555, 0x0001}; /* 0.33325195..., smallest subnormal */
    data[0] = 7;
    memcpy(data + 1, vals, 12);
    memcpy(data + 13, hv, 4);
    const char *p = mk("unaligned.safetensors", hdr, data, sizeof data);
    iv2_st_file f;
    CHECK(iv2_st_open(&f, p) == 0, "open: %s", iv2_errmsg());
    if (f.n_tensors != 3) { iv2_st_close(&f); return; }
    const iv2_st_tensor *t = iv2_st_find(&f, "f");
    CHECK(((uintptr_t)t->data & 3) != 0, "the test needs a misaligned tensor");
    float got[3];
    iv2_st_read(&f, t, got, IV2_F32);
    CHECK(!memcmp(got, vals, 12), "unaligned f32 copy");
    double gd[3];
    iv2_st_read(&f, t, gd, IV2_F64);
    CHECK(gd[2] == (double)vals[2], "unaligned f32->f64");
    t = iv2_st_find(&f, "h");
    float gh[2];
    iv2_st_read(&f, t, gh, IV2_F32);
    CHECK(gh[0] == (float)(0x155 + 1024) / 1024.0f / 4.0f && gh[1] == ldexpf(1, -24), "unaligned f16 %g %g", gh[0], gh[1]);
    iv2_st_close(&f);
}

static void test_atomic_write(void) {
    float v1[2] = {1, 2}, v2[3] = {7, 8, 9};
    int64_t s1 = 2, s2 = 3;
    const char *p = path_in("atomic.safetensors");
    iv2_st_writer w;
    iv2_st_writer_init(&w);
    iv2_st_writer_add(&w, "x", IV2_F32, 1, &s1, v1);
    n_fsync = n_rename = 0;
    CHECK(iv2_st_writer_write(&w, p) == 0, "write v1: %s", iv2_errmsg());
    iv2_st_writer_free(&w);
    CHECK(n_rename == 1 && fsync_before_rename, "write: %d renames, fsync before rename: %d", n_rename, fsync_before_rename);
    iv2_st_file old;
    CHECK(iv2_st_open(&old, p) == 0, "open v1");
    int before = count_files();

    iv2_st_writer_init(&w);
    iv2_st_writer_add(&w, "x", IV2_F32, 1, &s2, v2);
    CHECK(iv2_st_writer_write(&w, p) == 0, "write v2: %s", iv2_errmsg());
    iv2_st_writer_free(&w);
    /* replaced by rename: the old mapping still sees the old bytes (an in-place rewrite would not) */
    float g[3];
    iv2_st_read(&old, iv2_st_find(&old, "x"), g, IV2_F32);
    CHECK(g[0] == 1 && g[1] == 2, "old mapping changed: %g %g", g[0], g[1]);
    iv2_st_close(&old);
    iv2_st_file f;
    CHECK(iv2_st_open(&f, p) == 0, "open v2");
    CHECK(f.n_tensors == 1 && f.tensors[0].numel == 3, "v2 shape");
    iv2_st_read(&f, &f.tensors[0], g, IV2_F32);
    CHECK(g[0] == 7 && g[2] == 9, "v2 data");
    iv2_st_close(&f);
    CHECK(count_files() == before, "temporary files left behind: %d files, want %d", count_files(), before);

    /* a failing write leaves the old file and no temporary */
    iv2_st_writer_init(&w);
    iv2_st_writer_add(&w, "x", IV2_F32, 1, &s1, v1);
    iv2_st_writer_add(&w, "x", IV2_F32, 1, &s1, v1);
    CHECK(iv2_st_writer_write(&w, p) == -1, "duplicate names written");
    CHECK(strstr(iv2_errmsg(), "duplicate tensor name 'x'") && strstr(iv2_errmsg(), p), "msg: %s", iv2_errmsg());
    iv2_st_writer_free(&w);
    CHECK(iv2_st_open(&f, p) == 0 && f.tensors[0].numel == 3, "old file damaged by a failed write");
    iv2_st_close(&f);
    CHECK(count_files() == before, "failed write left files");

    /* a write that fails after its temporary file exists (the rename, here) removes that file */
    iv2_st_writer_init(&w);
    iv2_st_writer_add(&w, "x", IV2_F32, 1, &s1, v1);
    fail_rename = 1;
    CHECK(iv2_st_writer_write(&w, p) == -1 && strstr(iv2_errmsg(), "cannot rename"), "failed rename: %s", iv2_errmsg());
    iv2_st_writer_free(&w);
    CHECK(count_files() == before, "a failed rename left its temporary file: %d files, want %d", count_files(), before);
    /* the writer refuses what it could not write as a valid file: a tensor named __metadata__,
     * a metadata key given twice */
    iv2_st_writer_init(&w);
    iv2_st_writer_add(&w, "__metadata__", IV2_F32, 1, &s1, v1);
    CHECK(iv2_st_writer_write(&w, path_in("reserved.safetensors")) == -1 && strstr(iv2_errmsg(), "reserved"),
          "tensor named __metadata__: %s", iv2_errmsg());
    iv2_st_writer_free(&w);
    iv2_st_writer_init(&w);
    iv2_st_writer_meta(&w, "k", "1");
    iv2_st_writer_meta(&w, "k", "2");
    CHECK(iv2_st_writer_write(&w, path_in("dupmeta.safetensors")) == -1 && strstr(iv2_errmsg(), "duplicate __metadata__ key 'k'"),
          "metadata key twice: %s", iv2_errmsg());
    iv2_st_writer_free(&w);
    CHECK(count_files() == before, "refused writes left files");

    iv2_st_writer_init(&w);
    iv2_st_writer_add(&w, "x", IV2_F32, 1, &s1, v1);
    const char *nodir = path_in("no/such/dir/x.safetensors");
    CHECK(iv2_st_writer_write(&w, nodir) == -1, "write into a missing folder");
    CHECK(strstr(iv2_errmsg(), nodir) != NULL, "msg: %s", iv2_errmsg());
    iv2_st_writer_free(&w);
}

static void test_bad_files(void) {
    const char *T = "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    unsigned char d[64] = {0};
    expect_fail(mk("empty.st", "", NULL, 0), "header does not start with '{'"); /* 8 zero bytes + nothing */
    write_bytes(path_in("zero.st"), "", 0);
    expect_fail(path_in("zero.st"), "empty file");
    write_bytes(path_in("short.st"), "\x02\0\0", 3);
    expect_fail(path_in("short.st"), "shorter than the 8-byte header length");
    /* header length beyond the file */
    unsigned char big[16] = {0xff, 0x00, 0x00, 0x00, 0, 0, 0, 0, '{', '}'};
    write_bytes(path_in("hlen.st"), big, 10);
    expect_fail(path_in("hlen.st"), "beyond the file");
    unsigned char over1[16] = {3, 0, 0, 0, 0, 0, 0, 0, '{', '}'};   /* one byte more than the file holds */
    write_bytes(path_in("hlen1.st"), over1, 10);
    expect_fail(path_in("hlen1.st"), "header length 3 goes beyond the file");
    unsigned char huge[16] = {0, 0, 0, 0, 0, 0, 1, 0, '{', '}'};
    write_bytes(path_in("hmax.st"), huge, 10);
    expect_fail(path_in("hmax.st"), "exceeds the limit");
    /* truncated: the data ends before the last tensor */
    expect_fail(mk("trunc.st", T, d, 5), "beyond the data");
    expect_fail(mk("extra.st", T, d, 12), "tensors cover 8 bytes but the data after the header is 12");
    expect_fail(mk("nojson.st", "{\"t\": {\"dtype\": \"F32\", ", NULL, 0), "not valid JSON");
    expect_fail(mk("garbage.st", "{garbage}", NULL, 0), "not valid JSON");
    expect_fail(mk("notbrace.st", "[{\"t\":1}]", NULL, 0), "does not start with '{'");
    expect_fail(mk("space.st", " {}", NULL, 0), "does not start with '{'");
    expect_fail(mk("trail.st", "{} x", NULL, 0), "trailing bytes");
    expect_fail(mk("overlap.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                                 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", d, 12),
                "tensor 'b': overlaps tensor 'a'");
    expect_fail(mk("gap.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                             "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", d, 12),
                "tensor 'b': gap in the data");
    expect_fail(mk("gap0.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", d, 2), "tensor 'a': gap");
    expect_fail(mk("size.st", "{\"w\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,8]}}", d, 8),
                "tensor 'w': data_offsets span 8 bytes but F16 x 6 elements need 12");
    expect_fail(mk("dtype.st", "{\"w\":{\"dtype\":\"F8_E9\",\"shape\":[1],\"data_offsets\":[0,1]}}", d, 1),
                "tensor 'w': unknown dtype \"F8_E9\"");
    expect_fail(mk("alias.st", "{\"w\":{\"dtype\":\"fp32\",\"shape\":[1],\"data_offsets\":[0,4]}}", d, 4), "unknown dtype");
    expect_fail(mk("dup.st", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                             "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", d, 2),
                "duplicate tensor name 'w'");
    expect_fail(mk("meta.st", "{\"__metadata__\":{\"k\":1}}", NULL, 0), "__metadata__ \"k\" is a number");
    expect_fail(mk("meta2.st", "{\"__metadata__\":[]}", NULL, 0), "__metadata__ is an array");
    expect_fail(mk("neg.st", "{\"w\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,0]}}", NULL, 0), "tensor 'w': shape[0]");
    expect_fail(mk("frac.st", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1.5],\"data_offsets\":[0,0]}}", NULL, 0), "shape[0]");
    expect_fail(mk("offs.st", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", d, 1), "\"data_offsets\" must be");
    expect_fail(mk("rev.st", "{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[1,0]}}", d, 1), "end before begin");
    expect_fail(mk("nodt.st", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,1]}}", d, 1), "\"dtype\" is nothing");
    expect_fail(mk("notobj.st", "{\"w\":3}", NULL, 0), "tensor 'w': entry is a number");
    expect_fail(mk("ovf.st", "{\"w\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", d, 8),
                "overflows");
    expect_fail(mk("dims.st", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", d, 1),
                "9 dimensions");
    expect_fail(mk("big.st", "{\"w\":{\"dtype\":\"U8\",\"shape\":[100000000000000000],\"data_offsets\":[0,1]}}", d, 1),
                "tensor 'w': shape[0] is not a non-negative integer");   /* 1e17, above 2^53: not exact in a double */
    /* only regular files: a folder, and a pipe with no writer (an open without O_NONBLOCK waits forever) */
    expect_fail(dir, "not a regular file");
    CHECK(mkfifo(path_in("fifo.st"), 0600) == 0, "mkfifo");
    alarm(20);
    expect_fail(path_in("fifo.st"), "not a regular file");
    alarm(0);
    expect_fail(path_in("does-not-exist.st"), "cannot open");

    /* the same validation from memory */
    iv2_st_file f;
    CHECK(iv2_st_open_mem(&f, "", 0, "mem") == -1 && strstr(iv2_errmsg(), "mem: empty file"), "mem: %s", iv2_errmsg());
    /* accepted edge cases: an empty header object, padding with spaces, 0-size tensor anywhere */
    const char *ok = mk("ok.st", "{\"z\":{\"dtype\":\"I32\",\"shape\":[0],\"data_offsets\":[4,4]},"
                                 "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}   ", d, 4);
    CHECK(iv2_st_open(&f, ok) == 0, "ok.st: %s", iv2_errmsg());
    iv2_st_close(&f);
    CHECK(iv2_st_open(&f, mk("emptyobj.st", "{}", NULL, 0)) == 0, "{}: %s", iv2_errmsg());
    CHECK(f.n_tensors == 0, "{} tensors");
    iv2_st_close(&f);
    /* 8 dimensions, the most there are (the reference reader takes them too) */
    CHECK(iv2_st_open(&f, mk("dims8.st", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,2],\"data_offsets\":[0,2]}}", d, 2)) == 0 &&
          f.tensors[0].ndim == 8 && f.tensors[0].numel == 2, "8 dimensions: %s", iv2_errmsg());
    iv2_st_close(&f);
    /* a 0-size tensor at the offset where a non-empty one begins, listed after it (valid for the
     * reference reader, which orders by [begin, end]) */
    CHECK(iv2_st_open(&f, mk("zero_same.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                                           "\"z\":{\"dtype\":\"I32\",\"shape\":[0],\"data_offsets\":[0,0]}}", d, 1)) == 0,
          "0-size tensor sharing a begin: %s", iv2_errmsg());
    iv2_st_close(&f);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/iv2_test_st_XXXXXX");
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    test_round_trip();
    test_unaligned();
    test_atomic_write();
    test_bad_files();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    return test_done();
}
