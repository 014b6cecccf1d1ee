/* test_extract_targets: what iv2-extract stores equals a direct teacher forward on the same frames.
 *
 * Videos are made with the ffmpeg CLI (and ../shared/media is used when present). The pipeline
 * runs with tiny random teachers; the oracle re-samples each view with iv2_sample_clip (same
 * seed/row/view), checks the stored frames are the 8 even ones and the record matches, runs
 * the teachers directly (iv2_vit_forward on a fresh CPU backend) and builds every target with
 * naive loops: frame-mean CLS as token 0, frame patches in (t,y,x) order, per-token L2, pooled
 * frame mean + L2, raw pool attention, VideoMAE blocks + final LN on the last, L2.
 * fp32 storage must match the oracle within float rounding (the teacher set post-processes on
 * the backend with float sums, the oracle sums in double: 1e-6 relative + 1e-7 absolute on
 * unit rows; clip_attn, not post-processed, bit for bit) and the teacher set's own output
 * (iv2_teachers_run on the CPU) bit for bit; bf16/fp16 within their rounding; int8 within half
 * a quantisation step of each token's scale. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cache.h"
#include "compute.h"
#include "decode.h"
#include "err.h"
#include "manifest.h"
#include "pipeline.h"
#include "teachers.h"
#include "testutil.h"
#include "vit.h"

#define DIR "build/tmp/test_extract_targets"
static const char *IVIT = "preset:internvit-tiny:1:{\"img\":112}";
static const char *MAE = "preset:videomae-tiny:2:{\"img\":112}";

static iv2_vit *make_model(iv2_backend *be, const char *preset, uint64_t seed, const char *json) {
    iv2_vit_config cfg;
    if (iv2_vit_preset(preset, &cfg) || (json && iv2_vit_config_json(&cfg, json))) return NULL;
    iv2_vit *m = iv2_vit_create(be, &cfg);
    if (m && iv2_vit_init_random(m, seed)) { iv2_vit_free(m); return NULL; }
    return m;
}

static void l2(float *x, int n, int d) {
    for (int r = 0; r < n; r++) {
        double s = 0;
        for (int j = 0; j < d; j++) s += (double)x[r * d + j] * x[r * d + j];
        float inv = (float)(1.0 / sqrt(s));
        for (int j = 0; j < d; j++) x[r * d + j] *= inv;
    }
}

typedef struct oracle {
    iv2_backend *be;
    iv2_vit *ivit, *mae;
    int img;
} oracle;

/* expected values of target t (cache meta) for 16 frames; out [tokens][dim] */
static int expect(oracle *o, const uint8_t *clip, const iv2_cache_target *t, float *out) {
    iv2_backend *be = o->be;
    size_t fb = (size_t)o->img * o->img * 3;
    int G = o->img / 14, P = G * G;
    iv2_vit_io io;
    memset(&io, 0, sizeof io);
    if (!strcmp(t->teacher, "internvit")) {
        int C = o->ivit->cfg.width, T = 1 + P;
        uint8_t *d = be->alloc(be, 8 * fb);
        for (int f = 0; f < 8; f++) be->upload_raw(be, d + f * fb, clip + (size_t)(2 * f) * fb, fb);
        void *blk = be->alloc(be, sizeof(float) * 8 * T * C), *pool = be->alloc(be, sizeof(float) * 8 * 128);
        float *attn = be->alloc(be, sizeof(float) * 8 * P);
        io.frames = d; io.S = 8;
        if (!strcmp(t->kind, "block")) { io.n_out = 1; io.blocks[0] = t->block; io.out[0] = blk; }
        io.pooled = pool; io.pool_attn = attn;
        int rc = iv2_vit_forward(o->ivit, &io);
        float *h = malloc(sizeof(float) * 8 * T * C);
        if (!strcmp(t->kind, "block")) {
            be->download(be, h, blk, (size_t)8 * T * C);
            for (int j = 0; j < C; j++) {
                double s = 0;
                for (int f = 0; f < 8; f++) s += h[f * T * C + j];
                out[j] = (float)(s / 8);
            }
            for (int f = 0; f < 8; f++)
                for (int p = 0; p < P; p++)
                    for (int j = 0; j < C; j++) out[(1 + f * P + p) * C + j] = h[(f * T + 1 + p) * C + j];
            l2(out, 1 + 8 * P, C);
        } else if (!strcmp(t->kind, "pool")) {
            int D = o->ivit->cfg.pool_dim;
            be->download(be, h, pool, (size_t)8 * D);
            for (int j = 0; j < D; j++) {
                double s = 0;
                for (int f = 0; f < 8; f++) s += h[f * D + j];
                out[j] = (float)(s / 8);
            }
            l2(out, 1, D);
        } else {
            be->download_raw(be, out, attn, sizeof(float) * 8 * P);
        }
        free(h);
        be->free(be, d); be->free(be, blk); be->free(be, pool); be->free(be, attn);
        return rc;
    }
    int C = o->mae->cfg.width, N = 8 * P;
    uint8_t *d = be->alloc(be, 16 * fb);
    be->upload_raw(be, d, clip, 16 * fb);
    void *blk = be->alloc(be, sizeof(float) * N * C);
    io.frames = d; io.S = 1; io.n_out = 1; io.blocks[0] = t->block; io.out[0] = blk;
    io.final_norm_last = t->block == o->mae->cfg.depth - 1;
    int rc = iv2_vit_forward(o->mae, &io);
    be->download(be, out, blk, (size_t)N * C);
    l2(out, N, C);
    be->free(be, d); be->free(be, blk);
    return rc;
}

/* the teacher set iv2-extract uses, on the oracle's backend (fp32: the bytes an fp32 cache must hold) */
static int teacher_set(iv2_teachers *ts, iv2_backend *be, const char *ivit, const char *mae) {
    memset(ts, 0, sizeof *ts);
    if ((ivit && iv2_teachers_load(ts, be, "internvit", ivit)) || (mae && iv2_teachers_load(ts, be, "videomae", mae)) ||
        iv2_teachers_set_targets(ts, NULL, IV2_F32))
        return -1;
    return 0;
}

/* compare every stored view of cache dir with the oracle (and, when ts, with the teacher set bit for bit) */
static void compare_cache(oracle *o, const char *dir, iv2_manifest *m, uint64_t seed, int deterministic, iv2_teachers *ts) {
    iv2_cache *c;
    CHECK(iv2_cache_open(&c, dir, IV2_CACHE_RDONLY) == 0, "open %s: %s", dir, iv2_errmsg());
    if (!c) return;
    iv2_cache_key *keys;
    int64_t n;
    CHECK(iv2_cache_list_views(c, &keys, &n) == 0 && n > 0, "views in %s", dir);
    iv2_sample_opts so;
    iv2_sample_opts_default(&so);
    so.size = o->img;
    so.deterministic = deterministic;
    size_t fb = (size_t)o->img * o->img * 3;
    uint8_t *clip = malloc(16 * fb), *frames = malloc(8 * fb);
    float *got = malloc(sizeof(float) * 2049 * 128), *want = malloc(sizeof(float) * 2049 * 128);
    for (int64_t i = 0; i < n; i++) {
        const iv2_row *r = &m->rows[keys[i].row];
        iv2_clip_record rec;
        CHECK(iv2_sample_clip(r->video, r->start, r->end, r->source, seed, r->index, (int)keys[i].view, &so, clip, &rec) == 0,
              "resample: %s", iv2_errmsg());
        iv2_cache_view v;
        CHECK(iv2_cache_read_view(c, keys[i], &v, frames) == 0, "view: %s", iv2_errmsg());
        int same = v.num_frames == 16 && v.crop_x == rec.crop_x && v.crop_w == rec.crop_w && v.crop_h == rec.crop_h &&
                   v.flip == rec.flip && v.src_w == rec.src_w && v.stream == rec.stream && v.size == o->img;
        for (int f = 0; f < 16; f++) same &= v.frame[f] == rec.frame[f] && v.pts[f] == rec.pts[f];
        CHECK(same, "%s: row %lld view %u: sampling record differs", dir, (long long)keys[i].row, keys[i].view);
        for (int f = 0; f < 8; f++)
            CHECK(memcmp(frames + f * fb, clip + (size_t)(2 * f) * fb, fb) == 0, "%s row %lld: stored frame %d is not clip frame %d",
                  dir, (long long)keys[i].row, f, 2 * f);
        if (ts) CHECK(iv2_teachers_run(ts, clip) == 0, "teacher set: %s", iv2_errmsg());
        for (int t = 0; t < iv2_cache_n_targets(c); t++) {
            const iv2_cache_target *tg = iv2_cache_target_at(c, t);
            CHECK(iv2_cache_read_rows(c, keys[i], t, NULL, 0, got) == 0, "read %s", tg->name);
            CHECK(expect(o, clip, tg, want) == 0, "oracle %s: %s", tg->name, iv2_errmsg());
            size_t ne = (size_t)tg->tokens * tg->dim;
            char what[160];
            snprintf(what, sizeof what, "%s row %lld view %u %s (%s)", dir, (long long)keys[i].row, keys[i].view, tg->name,
                     iv2_dtype_name(tg->dtype));
            if (tg->dtype == IV2_F32) {
                int raw = !strcmp(tg->kind, "attn");
                t_allclose(what, got, want, ne, raw ? 0 : 1e-6f, raw ? 0 : 1e-7f);
                for (int k = 0; ts && k < ts->n_targets; k++)
                    if (!strcmp(ts->targets[k].name, tg->name))
                        CHECK(!memcmp(got, ts->values[k], ne * 4), "%s: not bit-exact with the teacher set", what);
            } else if (tg->dtype == IV2_BF16) {
                t_allclose(what, got, want, ne, 1.0f / 256, 1e-30f);
            } else if (tg->dtype == IV2_F16) {
                t_allclose(what, got, want, ne, 1.0f / 2048, 6e-8f);
            } else {
                for (int rr = 0; rr < tg->tokens; rr++) {
                    float mx = 0;
                    for (int j = 0; j < tg->dim; j++) mx = fmaxf(mx, fabsf(want[rr * tg->dim + j]));
                    float worst = 0;
                    for (int j = 0; j < tg->dim; j++) worst = fmaxf(worst, fabsf(got[rr * tg->dim + j] - want[rr * tg->dim + j]));
                    CHECK(worst <= 0.5f * mx / 127 * 1.001f + 1e-7f, "%s token %d: int8 error %g > half step %g", what, rr, worst, 0.5f * mx / 127);
                }
            }
        }
    }
    free(keys); free(clip); free(frames); free(got); free(want);
    iv2_cache_close(c);
}

static int run(const char *manifest, const char *cache, iv2_dtype dt, const char *ivit, const char *mae, int views, uint64_t seed,
               int deterministic) {
    iv2_extract_opts o;
    iv2_extract_opts_default(&o);
    o.manifest = manifest; o.cache = cache; o.internvit = ivit; o.videomae = mae;
    o.dtype = dt; o.views = views; o.seed = seed; o.compute_threads = 1; o.deterministic = deterministic;
    iv2_extract_stats st;
    int rc = iv2_extract_run(&o, &st);
    CHECK(rc == 0, "extract %s: %s", cache, iv2_errmsg());
    CHECK(st.rows_failed == 0, "%s: %lld rows failed", cache, (long long)st.rows_failed);
    return rc;
}

int main(void) {
    iv2_set_quiet(1);
    if (system("command -v ffmpeg >/dev/null 2>&1")) { test_skip("no ffmpeg CLI"); return test_done(); }
    if (system("rm -rf " DIR " && mkdir -p " DIR)) return 1;
    if (system("ffmpeg -v error -y -f lavfi -i testsrc=size=96x64:rate=25:duration=2 -pix_fmt yuv420p " DIR "/a.mp4") ||
        system("ffmpeg -v error -y -f lavfi -i testsrc2=size=200x150:rate=30:duration=1.5 -pix_fmt yuv420p " DIR "/b.mp4"))
        return 1;
    char media[512], media2[512], buf[1024];
    const char *h265 = t_shared("media/h265_video.mp4", media, sizeof media);
    const char *nasa = t_shared("media/nasa_13013.mp4", media2, sizeof media2);
    FILE *f = fopen(DIR "/m.jsonl", "w");
    fprintf(f, "{\"video\":\"a.mp4\"}\n{\"video\":\"b.mp4\",\"start\":0.3,\"end\":1.2}\n");
    if (h265) { realpath(h265, buf); fprintf(f, "{\"video\":\"%s\"}\n", buf); }
    if (nasa) { realpath(nasa, buf); fprintf(f, "{\"video\":\"%s\",\"start\":3,\"end\":4.5}\n", buf); }
    fclose(f);
    if (!h265 || !nasa) printf("note: ../shared/media absent, generated videos only\n");
    iv2_manifest m;
    CHECK(iv2_manifest_load(&m, DIR "/m.jsonl") == 0, "manifest: %s", iv2_errmsg());

    oracle o = {iv2_backend_create("cpu", 1), NULL, NULL, 112};
    o.ivit = make_model(o.be, "internvit-tiny", 1, "{\"img\":112}");
    o.mae = make_model(o.be, "videomae-tiny", 2, "{\"img\":112}");
    CHECK(o.ivit && o.mae, "oracle models: %s", iv2_errmsg());

    /* fp32: all rows, bit-exact with the teacher set; random views (crop, flip) */
    iv2_teachers ts;
    CHECK(teacher_set(&ts, o.be, IVIT, MAE) == 0, "teacher set: %s", iv2_errmsg());
    if (run(DIR "/m.jsonl", DIR "/f32", IV2_F32, IVIT, MAE, 1, 11, 0) == 0) compare_cache(&o, DIR "/f32", &m, 11, 0, &ts);
    iv2_teachers_free(&ts);
    /* the other storage dtypes on the first row, deterministic views */
    f = fopen(DIR "/one.jsonl", "w");
    fprintf(f, "{\"video\":\"a.mp4\"}\n");
    fclose(f);
    iv2_manifest one;
    CHECK(iv2_manifest_load(&one, DIR "/one.jsonl") == 0, "manifest");
    if (run(DIR "/one.jsonl", DIR "/bf16", IV2_BF16, IVIT, MAE, 1, 3, 1) == 0) compare_cache(&o, DIR "/bf16", &one, 3, 1, NULL);
    if (run(DIR "/one.jsonl", DIR "/f16", IV2_F16, IVIT, MAE, 1, 3, 1) == 0) compare_cache(&o, DIR "/f16", &one, 3, 1, NULL);
    if (run(DIR "/one.jsonl", DIR "/i8", IV2_I8, IVIT, MAE, 1, 3, 1) == 0) compare_cache(&o, DIR "/i8", &one, 3, 1, NULL);
    iv2_vit_free(o.ivit);
    iv2_vit_free(o.mae);

    /* full size (224) InternViT only, one view, fp32 */
    o.img = 224;
    o.ivit = make_model(o.be, "internvit-tiny", 4, NULL);
    o.mae = NULL;
    CHECK(teacher_set(&ts, o.be, "preset:internvit-tiny:4", NULL) == 0, "teacher set 224: %s", iv2_errmsg());
    if (run(DIR "/one.jsonl", DIR "/f32_224", IV2_F32, "preset:internvit-tiny:4", NULL, 1, 5, 0) == 0)
        compare_cache(&o, DIR "/f32_224", &one, 5, 0, &ts);
    iv2_teachers_free(&ts);
    iv2_vit_free(o.ivit);
    iv2_backend_destroy(o.be);
    iv2_manifest_free(&m);
    iv2_manifest_free(&one);
    int rc = test_done();
    if (rc == 0 && system("rm -rf " DIR)) {}
    return rc;
}
