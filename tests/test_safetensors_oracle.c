/* test_safetensors_oracle: the reference safetensors library (python, Rust core) as oracle:
 * we read what it writes, it validates and reads what we write, and without metadata (whose
 * order the reference does not fix) both writers produce the same bytes.
 * Skipped when python3 lacks numpy or safetensors (pip install safetensors numpy). */
#include "err.h"
#include "safetensors.h"
#include "sha256.h"
#include "testutil.h"
#include <stdint.h>

static const float W[6] = {-1, -0.5f, 0, 0.5f, 1, 1.5f};
static const uint16_t B[3] = {0x3F80, 0xC000, 0x4049};
static uint16_t H[3];
static const uint8_t U[3] = {1, 2, 3};
static const int8_t I8[2] = {-128, 127};
static const int32_t I32[4] = {1, -2, 3, -4};
static const int64_t I64[1] = {-5};
static const double F64[1] = {3.25};

static void add_all(iv2_st_writer *w) {
    int64_t s23[2] = {2, 3}, s3[1] = {3}, s2[1] = {2}, s22[2] = {2, 2}, s1[1] = {1}, s03[2] = {0, 3};
    iv2_st_writer_add(w, "w.f32", IV2_F32, 2, s23, W);
    iv2_st_writer_add(w, "b.bf16", IV2_BF16, 1, s3, B);
    iv2_st_writer_add(w, "h.f16", IV2_F16, 1, s3, H);
    iv2_st_writer_add(w, "odd.u8", IV2_U8, 1, s3, U);
    iv2_st_writer_add(w, "i8", IV2_I8, 1, s2, I8);
    iv2_st_writer_add(w, "i32", IV2_I32, 2, s22, I32);
    iv2_st_writer_add(w, "i64", IV2_I64, 1, s1, I64);
    iv2_st_writer_add(w, "f64", IV2_F64, 1, s1, F64);
    iv2_st_writer_add(w, "empty", IV2_F32, 2, s03, NULL);
}

static int run(const char *cmd) { int rc = system(cmd); return rc == 0 ? 0 : -1; }

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long k = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)k + 1);
    *n = fread(b, 1, (size_t)k, f);
    fclose(f);
    return b;
}

int main(void) {
    if (system("python3 -c 'import numpy, safetensors' >/dev/null 2>&1") != 0) {
        test_skip("python3 with numpy and safetensors not available (pip install safetensors numpy)");
        return test_done();
    }
    const char *root = getenv("IV2_ROOT") ? getenv("IV2_ROOT") : ".";
    char dir[] = "/tmp/iv2_test_sto_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    H[0] = iv2_f32_to_f16(1); H[1] = iv2_f32_to_f16(-2.5f); H[2] = iv2_f32_to_f16(65504);
    char cmd[1024], ref[128], ours[128], ref2[128], ours2[128], list[128];
    snprintf(ref, sizeof ref, "%s/ref.safetensors", dir);
    snprintf(ref2, sizeof ref2, "%s/ref_nometa.safetensors", dir);
    snprintf(ours, sizeof ours, "%s/ours.safetensors", dir);
    snprintf(ours2, sizeof ours2, "%s/ours_nometa.safetensors", dir);
    snprintf(list, sizeof list, "%s/list.txt", dir);

    /* 1. the reference writes, we read */
    snprintf(cmd, sizeof cmd, "python3 %s/tests/safetensors_oracle.py write %s", root, ref);
    CHECK(run(cmd) == 0, "oracle write failed");
    iv2_st_file f;
    CHECK(iv2_st_open(&f, ref) == 0, "read the reference's file: %s", iv2_errmsg());
    if (f.n_tensors == 9) {
        struct { const char *name; iv2_dtype dt; const void *p; size_t n; } want[] = {
            {"w.f32", IV2_F32, W, 24}, {"b.bf16", IV2_BF16, B, 6}, {"h.f16", IV2_F16, H, 6}, {"odd.u8", IV2_U8, U, 3},
            {"i8", IV2_I8, I8, 2}, {"i32", IV2_I32, I32, 16}, {"i64", IV2_I64, I64, 8}, {"f64", IV2_F64, F64, 8}, {"empty", IV2_F32, NULL, 0},
        };
        for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
            iv2_st_tensor *t = iv2_st_find(&f, want[i].name);
            CHECK(t && t->dtype == want[i].dt && t->nbytes == want[i].n, "%s: dtype/size", want[i].name);
            if (!t || t->nbytes != want[i].n) continue;
            unsigned char got[64];
            iv2_st_read(&f, t, got, t->dtype);
            CHECK(!want[i].n || !memcmp(got, want[i].p, want[i].n), "%s: data", want[i].name);
        }
        float g[3];
        iv2_st_read(&f, iv2_st_find(&f, "b.bf16"), g, IV2_F32);
        CHECK(g[0] == 1 && g[1] == -2 && g[2] == 3.140625f, "bf16 -> f32");
        CHECK(iv2_st_meta(&f, "format") && !strcmp(iv2_st_meta(&f, "format"), "pt") &&
              iv2_st_meta(&f, "who") && !strcmp(iv2_st_meta(&f, "who"), "oracle"), "metadata");
    } else CHECK(0, "n_tensors %d", f.n_tensors);
    iv2_st_close(&f);

    /* 2. without metadata the two writers agree byte for byte */
    snprintf(cmd, sizeof cmd, "python3 %s/tests/safetensors_oracle.py write %s --no-meta", root, ref2);
    CHECK(run(cmd) == 0, "oracle write --no-meta failed");
    iv2_st_writer w;
    iv2_st_writer_init(&w);
    add_all(&w);
    CHECK(iv2_st_writer_write(&w, ours2) == 0, "write: %s", iv2_errmsg());
    iv2_st_writer_free(&w);
    size_t na = 0, nb = 0;
    char *a = slurp(ref2, &na), *b = slurp(ours2, &nb);
    CHECK(a && b && na == nb && !memcmp(a, b, na), "our file (%zu bytes) differs from the reference's (%zu bytes)", nb, na);
    free(a);
    free(b);

    /* 3. we write (with metadata and a 0-d scalar), the reference validates and lists it */
    int64_t scalar = 42;
    iv2_st_writer_init(&w);
    add_all(&w);
    iv2_st_writer_add(&w, "scalar", IV2_I64, 0, NULL, &scalar);
    iv2_st_writer_meta(&w, "format", "pt");
    iv2_st_writer_meta(&w, "step", "1000");
    CHECK(iv2_st_writer_write(&w, ours) == 0, "write: %s", iv2_errmsg());
    snprintf(cmd, sizeof cmd, "python3 %s/tests/safetensors_oracle.py read %s > %s", root, ours, list);
    CHECK(run(cmd) == 0, "the reference rejects our file");
    FILE *l = fopen(list, "r");
    char line[512];
    int ntensors = 0, nmeta = 0;
    while (l && fgets(line, sizeof line, l)) {
        char name[128], dt[16], shape[64], hex[80];
        if (sscanf(line, "meta %127s %63s", name, shape) == 2) {
            nmeta++;
            CHECK((!strcmp(name, "format") && !strcmp(shape, "pt")) || (!strcmp(name, "step") && !strcmp(shape, "1000")), "meta %s", line);
            continue;
        }
        if (sscanf(line, "%127s %15s %63s %79s", name, dt, shape, hex) != 4) { CHECK(0, "bad oracle line %s", line); continue; }
        ntensors++;
        int k = -1;
        for (int i = 0; i < w.n; i++) if (!strcmp(w.t[i].name, name)) k = i;
        if (k < 0) { CHECK(0, "unknown tensor %s", name); continue; }
        char want_shape[64] = "[";
        for (int d = 0; d < w.t[k].ndim; d++)
            snprintf(want_shape + strlen(want_shape), 64 - strlen(want_shape), "%s%lld", d ? "," : "", (long long)w.t[k].shape[d]);
        strcat(want_shape, "]");
        uint8_t dg[32];
        char want_hex[65];
        iv2_sha256(w.t[k].data ? w.t[k].data : "", w.t[k].nbytes, dg);
        iv2_sha256_hex(dg, want_hex);
        CHECK(!strcmp(dt, iv2_dtype_name(w.t[k].dtype)), "%s: dtype %s", name, dt);
        CHECK(!strcmp(shape, want_shape), "%s: shape %s, want %s", name, shape, want_shape);
        CHECK(!strcmp(hex, want_hex), "%s: data differs", name);
    }
    if (l) fclose(l);
    CHECK(ntensors == 10 && nmeta == 2, "oracle listed %d tensors, %d metadata", ntensors, nmeta);
    iv2_st_writer_free(&w);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    return test_done();
}
