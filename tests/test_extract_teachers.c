/* test_extract_teachers: the teacher set of iv2-extract (common/teachers.h) without video.
 * CPU: target list and shapes (recipe, explicit lists, refusals), run-to-run determinism (a
 * resumed extract must store the same bytes), and the token layout of clip_b* against a direct
 * forward. GPU (when the CUDA backend is compiled in and a device answers): every recipe target
 * of both tiny teachers at 224 px on CUDA against the CPU (token cosine mean > 0.999, worst >
 * 0.99; pool attention within 2e-3 absolute), and the time per view on each.
 * Batches: on the CPU, 3 views in one run_batch give each view the same bytes as alone; on
 * CUDA, a view in a (padded) batch of 3 gives the same bytes as alone and as its neighbours.
 * Raw fetch (both backends): a target downloaded in the backend's own dtype and sealed as a
 * cache value is byte for byte the value encoded from its fp32 fetch. */
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

/* every target of view v fetched in the backend's dtype and sealed = encoded from the fp32 fetch */
static int raw_equals_f32(iv2_teachers *ts, int v) {
    int ok = iv2_teachers_fetch(ts, v) == 0;
    for (int t = 0; ok && t < ts->n_targets; t++) {
        iv2_cache_target tg = ts->targets[t];
        tg.dtype = iv2_teachers_target_dtype(ts, t);
        size_t bytes = IV2_CACHE_VALUE_HDR + iv2_cache_target_bytes(&tg);
        uint8_t *a = calloc(1, bytes), *b = calloc(1, bytes);
        if (iv2_teachers_fetch_target(ts, v, t, a + IV2_CACHE_VALUE_HDR, tg.dtype)) ok = 0;
        iv2_cache_seal_value(&tg, a);
        iv2_cache_encode_value(&tg, ts->values[t], b);
        if (memcmp(a, b, bytes)) { printf("%s view %d: raw fetch differs from the fp32 one\n", tg.name, v); ok = 0; }
        free(a);
        free(b);
    }
    return ok;
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
    CHECK(raw_equals_f32(&a, 0), "cpu raw fetch: %s", iv2_errmsg());
    CHECK(iv2_teachers_fetch_target(&a, 0, 0, keep[0], IV2_BF16) == -1 && strstr(iv2_errmsg(), "held as F32"), "%s", iv2_errmsg());
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

    /* batches: 3 views in one run_batch (InternViT on 24 frames, VideoMAE on 3 clips) give
     * each view the same bytes as running it alone (CPU backend, fp32) */
    {
        const int img = 112, cb = 16 * img * img * 3;
        iv2_teachers s1, s3;
        memset(&s1, 0, sizeof s1);
        memset(&s3, 0, sizeof s3);
        const char *iv = "preset:internvit-tiny:1:{\"img\":112}", *mv = "preset:videomae-tiny:2:{\"img\":112}";
        CHECK(iv2_teachers_load(&s1, cpu, "internvit", iv) == 0 && iv2_teachers_load(&s1, cpu, "videomae", mv) == 0 &&
              iv2_teachers_set_targets(&s1, NULL, IV2_F32) == 0, "load 112: %s", iv2_errmsg());
        CHECK(iv2_teachers_load(&s3, cpu, "internvit", iv) == 0 && iv2_teachers_load(&s3, cpu, "videomae", mv) == 0 &&
              iv2_teachers_set_batch(&s3, 4) == 0 && iv2_teachers_set_targets(&s3, NULL, IV2_F32) == 0, "load 112 batched: %s", iv2_errmsg());
        const uint8_t *clips[3] = {clip, clip + cb, clip + 2 * cb};   /* 3 different 112 px clips out of the buffer */
        CHECK(iv2_teachers_run_batch(&s3, clips, 3) == 0, "run_batch: %s", iv2_errmsg());
        CHECK(iv2_teachers_run_batch(&s3, clips, 5) == -1 && strstr(iv2_errmsg(), "hold 1..4"), "batch too big: %s", iv2_errmsg());
        CHECK(iv2_teachers_run_batch(&s3, clips, 3) == 0, "run_batch again: %s", iv2_errmsg());
        CHECK(iv2_teachers_fetch(&s3, 3) == -1, "fetch past the batch");
        int same = 1;
        for (int v = 0; v < 3; v++) {
            CHECK(iv2_teachers_run(&s1, clips[v]) == 0 && iv2_teachers_fetch(&s3, v) == 0, "view %d", v);
            for (int t = 0; t < s1.n_targets; t++)
                if (memcmp(s1.values[t], s3.values[t], sizeof(float) * (size_t)s1.targets[t].tokens * s1.targets[t].dim)) {
                    double mx = 0; size_t n = (size_t)s1.targets[t].tokens * s1.targets[t].dim;
                    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs((double)s1.values[t][i] - s3.values[t][i]) / (fabs((double)s1.values[t][i]) + 1e-30));
                    printf("view %d target %s differs between batch 1 and 3 max rel %g\n", v, s1.targets[t].name, mx);
                    same = 0;
                }
        }
        CHECK(same, "batched teachers are not bit-exact with single views on the CPU");
        iv2_teachers_free(&s1);
        iv2_teachers_free(&s3);
    }

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
        /* batches on CUDA: padded to the set's batch, so a view's bf16 targets do not depend on
         * how many views ran with it or where it sat (resumed caches store the same bytes) */
        {
            CHECK(iv2_teachers_set_batch(&b, 4) == 0, "cuda batch 4: %s", iv2_errmsg());
            CHECK(iv2_teachers_run(&b, clip) == 0, "cuda run in a padded batch");
            size_t n0 = 0;
            for (int t = 0; t < b.n_targets; t++) n0 += (size_t)b.targets[t].tokens * b.targets[t].dim;
            float *one = malloc(n0 * sizeof(float)), *o = one;
            for (int t = 0; t < b.n_targets; t++) {
                size_t n = (size_t)b.targets[t].tokens * b.targets[t].dim;
                memcpy(o, b.values[t], n * sizeof(float));
                o += n;
            }
            const uint8_t *three[3] = {clip, clip, clip};
            CHECK(iv2_teachers_run_batch(&b, three, 3) == 0, "cuda run_batch: %s", iv2_errmsg());
            int same = 1;
            for (int v = 0; v < 3; v++) {
                CHECK(iv2_teachers_fetch(&b, v) == 0, "cuda fetch %d", v);
                o = one;
                for (int t = 0; t < b.n_targets; t++) {
                    size_t n = (size_t)b.targets[t].tokens * b.targets[t].dim;
                    if (memcmp(o, b.values[t], n * sizeof(float))) { printf("cuda: view %d of 3, %s differs from the view alone\n", v, b.targets[t].name); same = 0; }
                    o += n;
                }
            }
            CHECK(same, "cuda: a view's targets depend on its batch");
            CHECK(raw_equals_f32(&b, 2), "cuda raw fetch: %s", iv2_errmsg());
            free(one);
            double t4 = iv2_now();
            const uint8_t *four[4] = {clip, clip, clip, clip};
            for (int i = 0; i < 5; i++) {
                iv2_teachers_run_batch(&b, four, 4);
                for (int v = 0; v < 4; v++) iv2_teachers_fetch(&b, v);
            }
            printf("time per view on cuda in batches of 4: %.2f ms\n", (iv2_now() - t4) / 20 * 1e3);
            CHECK(iv2_teachers_set_batch(&b, 1) == 0, "cuda batch 1");
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
