/* test_vit_util.h: helpers shared by the tests/test_vit_*.c programs (goldens, models). */
#ifndef IV2_TEST_VIT_UTIL_H
#define IV2_TEST_VIT_UTIL_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "compute.h"
#include "err.h"
#include "safetensors.h"
#include "testutil.h"
#include "vit.h"

static inline const char *golden(const char *name, char *buf, size_t cap) {
    const char *root = getenv("IV2_ROOT");
    snprintf(buf, cap, "%s/tests/goldens/%s.safetensors", root ? root : ".", name);
    return buf;
}

/* a tensor of an open file as host fp32 (NULL and a failed CHECK when absent) */
static inline float *st_f32(iv2_st_file *f, const char *name, size_t *n) {
    iv2_st_tensor *t = iv2_st_find(f, name);
    CHECK(t != NULL, "%s: no tensor %s", f->path, name);
    if (!t) return NULL;
    float *h = malloc(sizeof(float) * (t->numel ? t->numel : 1));
    if (iv2_st_read(f, t, h, IV2_F32)) { CHECK(0, "%s", iv2_errmsg()); free(h); return NULL; }
    if (n) *n = t->numel;
    return h;
}

/* backend copy of a uint8 / int32 tensor's raw bytes */
static inline void *st_raw_upload(iv2_backend *be, iv2_st_file *f, const char *name, size_t *n) {
    iv2_st_tensor *t = iv2_st_find(f, name);
    CHECK(t != NULL, "%s: no tensor %s", f->path, name);
    if (!t) return NULL;
    void *h = malloc(t->nbytes + 1);
    memcpy(h, t->data, t->nbytes);
    void *d = be->alloc(be, t->nbytes + 1);
    be->upload_raw(be, d, h, t->nbytes);
    free(h);
    if (n) *n = t->numel;
    return d;
}

static inline float *dl(iv2_backend *be, const void *p, size_t n) {
    float *h = malloc(sizeof(float) * (n ? n : 1));
    be->download(be, h, p, n);
    return h;
}

/* close to a golden: rtol 1e-4 plus an atol of 1e-4 of the golden's RMS (elements near zero) */
static inline int close_to(const char *what, const float *got, const float *want, size_t n) {
    double ss = 0;
    for (size_t i = 0; i < n; i++) ss += (double)want[i] * want[i];
    float rms = (float)sqrt(ss / (n ? n : 1));
    return t_allclose(what, got, want, n, 1e-4f, 1e-4f * rms);
}

/* config from an *_io golden's "config" metadata */
static inline int golden_config(iv2_st_file *f, iv2_vit_config *c) {
    const char *js = iv2_st_meta(f, "config");
    if (!js) return iv2_err("%s: no config metadata", f->path);
    memset(c, 0, sizeof *c);
    c->pool_eps = 1e-5f;
    snprintf(c->name, sizeof c->name, "golden");
    if (iv2_vit_config_json(c, js)) return -1;
    return iv2_vit_config_check(c);
}
#endif
