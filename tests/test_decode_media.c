/* test_decode_media.c: the decoder on the real files of ../shared/media: every video stream's
 * first, middle and last frames equal the ffmpeg CLI's, the reference frames match, stream 3 of
 * nasa_13013.mp4 has the listed timestamps, and sampled clips equal the CLI's frames cropped and
 * resized by the test's own resize. Skipped (exit 77) where ../shared/media is absent. */
#include <pthread.h>
#include "testutil.h"
#include "decode_oracle.h"

/* ---- ../shared/media ---- */
static int check_shared(void) {
    char dir[512], p[700];
    if (!t_shared("media/nasa_13013.mp4", dir, sizeof dir)) return 0;
    char *slash = strrchr(dir, '/');
    *slash = 0;
    /* first, middle, last frames of every video stream against the CLI */
    struct { const char *file; int stream; } vids[] = {{"nasa_13013.mp4", 0}, {"nasa_13013.mp4", 3}, {"av1_video.mkv", 0},
                                                       {"h265_video.mp4", 0}, {"h264_10bits.mp4", 0}, {"bt709_full_range.mp4", 0}};
    for (size_t i = 0; i < sizeof vids / sizeof vids[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, vids[i].file);
        iv2_sample_opts o;
        iv2_sample_opts_default(&o);
        o.stream = vids[i].stream;
        iv2_video *v = iv2_video_open(p, &o);
        CHECK(v, "%s", iv2_errmsg());
        if (!v) continue;
        iv2_video_info in;
        iv2_video_get_info(v, &in);
        int64_t idx[3] = {0, in.n_frames / 2, in.n_frames - 1};
        size_t len, fsz = (size_t)in.width * in.height * 3;
        uint8_t *cli = cli_frames(p, vids[i].stream, idx, 3, &len);
        CHECK(cli && len == 3 * fsz, "%s:%d CLI frames (%zu bytes)", vids[i].file, vids[i].stream, len);
        for (int k = 2; k >= 0 && cli && len == 3 * fsz; k--) { /* backwards: every one a seek */
            uint8_t *rgb;
            int w, h;
            int rc = iv2_video_decode_frame(v, idx[k], &rgb, &w, &h, NULL);
            CHECK(rc == 0 && w == in.width && h == in.height && !memcmp(rgb, cli + k * fsz, fsz),
                  "%s stream %d frame %lld differs from the ffmpeg CLI", vids[i].file, vids[i].stream, (long long)idx[k]);
            free(rgb);
        }
        free(cli);
        iv2_video_close(v);
    }
    /* the reference frames */
    snprintf(p, sizeof p, "%s/reference/index.json", dir);
    size_t len;
    char *js = (char *)slurp(p, &len);
    cJSON *idx = js ? cJSON_Parse(js) : NULL;
    CHECK(idx && cJSON_GetArraySize(idx) >= 5, "reference/index.json");
    cJSON *e;
    cJSON_ArrayForEach(e, idx) {
        const char *video = cJSON_GetObjectItem(e, "video")->valuestring, *file = cJSON_GetObjectItem(e, "file")->valuestring;
        int s = cJSON_GetObjectItem(e, "stream_index")->valueint, k = cJSON_GetObjectItem(e, "frame_index")->valueint;
        int W = cJSON_GetObjectItem(e, "width")->valueint, H = cJSON_GetObjectItem(e, "height")->valueint;
        char vp[800], rp[800];
        snprintf(vp, sizeof vp, "%s/%s", dir, video);
        snprintf(rp, sizeof rp, "%s/%s", dir, file);
        size_t rl;
        uint8_t *ref = slurp(rp, &rl), *rgb = NULL;
        int w = 0, h = 0;
        int rc = iv2_decode_frame(vp, s, k, NULL, &rgb, &w, &h, NULL);
        CHECK(rc == 0 && ref && w == W && h == H && rl == (size_t)W * H * 3 && !memcmp(rgb, ref, rl),
              "reference %s differs", file);
        free(ref), free(rgb);
    }
    cJSON_Delete(idx);
    free(js);
    /* timestamps of stream 3 */
    snprintf(p, sizeof p, "%s/nasa_13013.mp4.stream3.all_frames_info.json", dir);
    js = (char *)slurp(p, &len);
    cJSON *info = js ? cJSON_Parse(js) : NULL;
    snprintf(p, sizeof p, "%s/nasa_13013.mp4", dir);
    iv2_sample_opts o;
    iv2_sample_opts_default(&o);
    o.stream = 3;
    iv2_video *v = iv2_video_open(p, &o);
    CHECK(v && info, "nasa stream 3: %s", iv2_errmsg());
    if (v && info) {
        iv2_video_info in;
        iv2_video_get_info(v, &in);
        CHECK(in.n_frames == cJSON_GetArraySize(info), "nasa stream 3: %lld frames, json %d", (long long)in.n_frames,
              cJSON_GetArraySize(info));
        int i = 0, bad = 0;
        cJSON_ArrayForEach(e, info) {
            double want = atof(cJSON_GetObjectItem(e, "pts_time")->valuestring);
            if (!(fabs(iv2_video_frame_pts(v, i) - want) < 1e-6)) bad++;
            i++;
        }
        CHECK(bad == 0, "nasa stream 3: %d timestamps differ from the json", bad);
        /* a span: frames with pts in [2, 4) */
        iv2_clip_record r;
        uint8_t *rgb = malloc((size_t)224 * 224 * 3 * 16);
        o.deterministic = 1;
        CHECK(iv2_video_sample(v, 2.0, 4.0, "", 1, 0, 0, &o, rgb, &r) == 0, "%s", iv2_errmsg());
        int64_t first = -1, cnt = 0;
        i = 0;
        cJSON_ArrayForEach(e, info) {
            double t = atof(cJSON_GetObjectItem(e, "pts_time")->valuestring);
            if (t >= 2.0 && t < 4.0) { if (first < 0) first = i; cnt++; }
            i++;
        }
        CHECK(r.span_first == first && r.span_frames == cnt, "span [2,4): %lld+%lld, want %lld+%lld",
              (long long)r.span_first, (long long)r.span_frames, (long long)first, (long long)cnt);
        free(rgb);
    }
    iv2_video_close(v);
    cJSON_Delete(info);
    free(js);
    /* sampled clips on real files (crop + resize against the CLI) */
    snprintf(p, sizeof p, "%s/nasa_13013.mp4", dir);
    check_clip(p, 1.0, 9.0, 0, 11, 3, 1, "", 1);
    snprintf(p, sizeof p, "%s/h264_10bits.mp4", dir);
    check_clip(p, 0, -1, 0, 11, 4, 0, "", 1);
    snprintf(p, sizeof p, "%s/av1_video.mkv", dir);
    check_clip(p, 0, -1, 1, 11, 5, 0, "", 1);
    return 1;
}

int main(void) {
    setenv("IV2_QUIET", "1", 0);
    snprintf(tmp, sizeof tmp, "/tmp/iv2_test_decode_media_XXXXXX");
    if (!mkdtemp(tmp)) { perror("mkdtemp"); return 1; }
    if (!check_shared()) test_skip("../shared/media is absent");
    sh("rm -rf '%s'", tmp);
    return test_done();
}
