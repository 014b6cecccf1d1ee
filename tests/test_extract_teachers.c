/* test_extract_teachers: the teacher set of iv2-extract (common/teachers.h) without video.
 * CPU: target list and shapes (recipe, explicit lists, refusals), run-to-run determinism (a
 * resumed extract must store the same bytes), and the token layout of clip_b* against a direct
 * forward. GPU (when the CUDA backend is compiled in and a device answers): every recipe target
 * of both tiny teachers at 224 px on CUDA against the CPU (token cosine mean > 0.999, worst >
 * 0.99; pool attention within 2e-3 absolute), and the time per view on each. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "compute.h"
#include "err.h"
#include "log.h"
#include "teachers.h"
#include "testutil.h"
#include "vit.h"

#define FB (224 * 224 * 3)

static int load(iv2_teachers *ts, iv2_backend *be) {
    memset(ts, 0, sizeof *ts);
    if (iv2_teachers_load(ts, be, "internvit", "preset:internvit-tiny:1") ||
        iv2_teachers_load(ts, be, "videomae", "preset:videomae-tiny:2") || iv2_teachers_set_targets(ts, NULL, IV2_F32))
        return -1;
    return 0;
}

int main(void) {
    iv2_set_quiet(1);
    uint8_t *clip = malloc(16 * FB);
    uint32_t x = 12345;
    for (size_t i = 0; i < 16 * (size_t)FB; i++) {
        x = x * 1664525u + 1013904223u;
        clip[i] = (uint8_t)((x >> 24) / 2 + (i / 3 % 224));   /* noise on a ramp */
    }
    iv2_backend *cpu = iv2_backend_create("cpu", 1);
    iv2_teachers a, b;
    CHECK(load(&a, cpu) == 0, "load: %s", iv2_errmsg());
    /* the recipe of the tiny teachers: clip_b0-5, clip_pool, clip_attn, mae_b0-3 */
    CHECK(a.n_targets == 12, "recipe has %d targets", a.n_targets);
    const char *names[12] = {"clip_b0", "clip_b1", "clip_b2", "clip_b3", "clip_b4", "clip_b5", "clip_pool", "clip_attn",
                             "mae_b0", "mae_b1", "mae_b2", "mae_b3"};
    for (int i = 0; i < 12 && i < a.n_targets; i++) CHECK(!strcmp(a.targets[i].name, names[i]), "target %d is %s", i, a.targets[i].name);
    CHECK(a.targets[0].tokens == 2049 && a.targets[0].dim == 96, "clip_b0 shape");
    CHECK(a.targets[6].tokens == 1 && a.targets[6].dim == 128, "clip_pool shape");
    CHECK(a.targets[7].tokens == 8 && a.targets[7].dim == 256 && a.targets[7].dtype == IV2_F32, "clip_attn shape");
    CHECK(a.targets[11].tokens == 2048 && !strcmp(a.targets[11].post, "final_ln+l2") && !strcmp(a.targets[10].post, "l2"), "mae post");
    /* two runs, same bytes */
    CHECK(iv2_teachers_run(&a, clip) == 0, "run: %s", iv2_errmsg());
    float *keep[12];
    for (int t = 0; t < a.n_targets; t++) {
        size_t n = (size_t)a.targets[t].tokens * a.targets[t].dim;
        keep[t] = malloc(n * 4);
        memcpy(keep[t], a.values[t], n * 4);
    }
    CHECK(iv2_teachers_run(&a, clip) == 0, "run 2");
    for (int t = 0; t < a.n_targets; t++)
        CHECK(!memcmp(keep[t], a.values[t], (size_t)a.targets[t].tokens * a.targets[t].dim * 4), "%s differs between runs", a.targets[t].name);
    /* layout: patch tokens of frame f of clip_b2 = the L2-normalised block output of clip frame 2f */
    {
        iv2_vit *m = a.ivit;
        uint8_t *d = cpu->alloc(cpu, FB);
        float *out = cpu->alloc(cpu, sizeof(float) * 257 * 96);
        int ok = 1;
        for (int f = 0; f < 8; f += 7) {
            cpu->upload_raw(cpu, d, clip + (size_t)(2 * f) * FB, FB);
            iv2_vit_io io;
            memset(&io, 0, sizeof io);
            io.frames = d; io.S = 1; io.n_out = 1; io.blocks[0] = 2; io.out[0] = out;
            CHECK(iv2_vit_forward(m, &io) == 0, "forward");
            for (int p = 0; p < 256; p += 51) {
                double s = 0;
                for (int j = 0; j < 96; j++) s += (double)out[(1 + p) * 96 + j] * out[(1 + p) * 96 + j];
                for (int j = 0; j < 96; j++) {
                    float want = out[(1 + p) * 96 + j] / (float)sqrt(s);
                    if (fabsf(keep[2][(size_t)(1 + f * 256 + p) * 96 + j] - want) > 1e-6f) ok = 0;
                }
            }
        }
        CHECK(ok, "clip_b2 patch tokens are not the frame's normalised block output at 1 + 256 f + p");
        cpu->free(cpu, d);
        cpu->free(cpu, out);
    }
    /* explicit lists and refusals */
    iv2_teachers c;
    memset(&c, 0, sizeof c);
    CHECK(iv2_teachers_load(&c, cpu, "internvit", "preset:internvit-tiny:1:{\"img\":112}") == 0, "json override");
    CHECK(iv2_teachers_set_targets(&c, "mae_b1", IV2_BF16) == -1 && strstr(iv2_errmsg(), "needs --teacher videomae"), "%s", iv2_errmsg());
    CHECK(iv2_teachers_set_targets(&c, "clip_b4-7", IV2_BF16) == -1 && strstr(iv2_errmsg(), "blocks 0..5"), "%s", iv2_errmsg());
    CHECK(iv2_teachers_set_targets(&c, "clip_b3,clip_b3", IV2_BF16) == -1 && strstr(iv2_errmsg(), "twice"), "%s", iv2_errmsg());
    CHECK(iv2_teachers_set_targets(&c, "clip_x", IV2_BF16) == -1 && strstr(iv2_errmsg(), "unknown target"), "%s", iv2_errmsg());
    CHECK(iv2_teachers_set_targets(&c, "clip_b1-2,clip_attn", IV2_BF16) == 0 && c.n_targets == 3 && c.targets[0].tokens == 1 + 8 * 64 &&
          c.targets[2].dim == 64, "112 px list");
    CHECK(iv2_teachers_load(&c, cpu, "videomae", "preset:internvit-tiny") == -1 && strstr(iv2_errmsg(), "not a VideoMAE"), "%s", iv2_errmsg());
    iv2_teachers_free(&c);

    /* CUDA against the CPU */
    iv2_backend *gpu = iv2_backend_create("cuda", 0);
    if (!gpu) {
        printf("note: no CUDA backend (%s): GPU part skipped\n", iv2_errmsg());
    } else {
        CHECK(load(&b, gpu) == 0, "load on cuda: %s", iv2_errmsg());
        CHECK(iv2_teachers_run(&b, clip) == 0, "cuda run: %s", iv2_errmsg());
        for (int t = 0; t < a.n_targets; t++) {
            const iv2_cache_target *tg = &a.targets[t];
            double sum = 0, worst = 1, maxabs = 0;
            for (int r = 0; r < tg->tokens; r++) {
                const float *u = keep[t] + (size_t)r * tg->dim, *v = b.values[t] + (size_t)r * tg->dim;
                double uv = 0, uu = 0, vv = 0;
                for (int j = 0; j < tg->dim; j++) {
                    uv += (double)u[j] * v[j]; uu += (double)u[j] * u[j]; vv += (double)v[j] * v[j];
                    maxabs = fmax(maxabs, fabs((double)u[j] - v[j]));
                }
                double cs = uv / sqrt(uu * vv + 1e-30);
                sum += cs;
                if (cs < worst) worst = cs;
            }
            printf("cuda vs cpu %-10s mean cos %.6f worst %.6f max abs %.3g\n", tg->name, sum / tg->tokens, worst, maxabs);
            CHECK(sum / tg->tokens > 0.999 && worst > 0.99, "%s: cuda far from cpu", tg->name);
            if (!strcmp(tg->kind, "attn")) CHECK(maxabs < 2e-3, "clip_attn max abs %g", maxabs);
        }
        double t0 = iv2_now();
        for (int i = 0; i < 5; i++) iv2_teachers_run(&b, clip);
        double tg = (iv2_now() - t0) / 5;
        t0 = iv2_now();
        iv2_teachers_run(&a, clip);
        double tc = iv2_now() - t0;
        printf("time per view, tiny teachers at 224, recipe targets: cuda %.2f ms, cpu (1 thread) %.2f ms, ratio %.1f\n",
               tg * 1e3, tc * 1e3, tc / tg);
        iv2_teachers_free(&b);
        iv2_backend_destroy(gpu);
    }
    for (int t = 0; t < a.n_targets; t++) free(keep[t]);
    iv2_teachers_free(&a);
    iv2_backend_destroy(cpu);
    free(clip);
    return test_done();
}
