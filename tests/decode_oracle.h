/* decode_oracle.h: helpers shared by the decode tests: the ffmpeg/ffprobe CLI as an oracle,
 * a double-precision reference resize, and whole-file / whole-clip checks. Include after testutil.h. */
#ifndef IV2_DECODE_ORACLE_H
#define IV2_DECODE_ORACLE_H
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/stat.h>
#include "decode.h"
#include "err.h"

static char tmp[256]; /* the test's scratch folder */

static inline int sh(const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    if (rc != 0) fprintf(stderr, "command failed (%d): %s\n", rc, cmd);
    return rc;
}

static inline uint8_t *slurp(const char *path, size_t *len) {
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *d = malloc(n + 1);
    if (fread(d, 1, n, f) != (size_t)n) n = 0;
    fclose(f);
    d[n] = 0;
    *len = (size_t)n;
    return d;
}

/* ffmpeg CLI: frames idx[0..k) (ascending) of stream s as rgb24, or every frame when k = 0 */
static inline uint8_t *cli_frames(const char *video, int s, const int64_t *idx, int k, size_t *len) {
    char sel[2048] = "", out[300];
    *len = 0;
    for (int i = 0; i < k; i++)
        snprintf(sel + strlen(sel), sizeof sel - strlen(sel), "%seq(n\\,%lld)", i ? "+" : "", (long long)idx[i]);
    snprintf(out, sizeof out, "%s/cli.rgb", tmp);
    if (sh("ffmpeg -nostdin -v error -i '%s' -map 0:%d %s%s%s -vsync 0 -pix_fmt rgb24 -f rawvideo -y '%s'", video, s,
           k ? "-vf 'select=" : "", sel, k ? "'" : "", out))
        return NULL;
    return slurp(out, len);
}

/* ffprobe: pts (seconds) of every frame of stream s; returns the count, -1 on failure */
static inline int64_t probe_pts(const char *video, int s, double **pts) {
    char out[300];
    *pts = NULL;
    snprintf(out, sizeof out, "%s/probe.txt", tmp);
    if (sh("ffprobe -v error -select_streams %d -show_entries frame=pts_time -of csv=p=0 '%s' > '%s'", s, video, out))
        return -1;
    FILE *f = fopen(out, "r");
    char line[256];
    int64_t n = 0, cap = 1024;
    *pts = malloc(cap * sizeof(double));
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '\n' || line[0] == ',') continue; /* side-data sections print blank lines */
        if (n == cap) *pts = realloc(*pts, (cap *= 2) * sizeof(double));
        (*pts)[n++] = strncmp(line, "N/A", 3) == 0 ? NAN : atof(line);
    }
    fclose(f);
    return n;
}

/* ---- the independent resize: PIL's bilinear by definition, in doubles, no rounding between passes ---- */
static inline void ref_resize(const uint8_t *src, int sw, int sh, int bx, int by, int bw, int bh, uint8_t *dst, int size,
                       int flip) {
    double *tmpd = calloc((size_t)bh * size * 3, sizeof(double));
    double sx = (double)bw / size, sy = (double)bh / size;
    double fx = sx > 1 ? sx : 1, fy = sy > 1 ? sy : 1;
    for (int y = 0; y < bh; y++)
        for (int ox = 0; ox < size; ox++) {
            double c = (ox + 0.5) * sx, acc[3] = {0}, wsum = 0;
            for (int x = 0; x < bw; x++) {
                double t = fabs((x + 0.5 - c) / fx), w = t < 1 ? 1 - t : 0;
                if (w == 0) continue;
                int X = bx + x, Y = by + y;
                for (int ch = 0; ch < 3; ch++)
                    acc[ch] += w * (X >= 0 && X < sw && Y >= 0 && Y < sh ? src[((size_t)Y * sw + X) * 3 + ch] : 0);
                wsum += w;
            }
            for (int ch = 0; ch < 3; ch++) tmpd[((size_t)y * size + ox) * 3 + ch] = acc[ch] / wsum;
        }
    for (int oy = 0; oy < size; oy++) {
        double c = (oy + 0.5) * sy;
        for (int ox = 0; ox < size; ox++)
            for (int ch = 0; ch < 3; ch++) {
                double acc = 0, wsum = 0;
                for (int y = 0; y < bh; y++) {
                    double t = fabs((y + 0.5 - c) / fy), w = t < 1 ? 1 - t : 0;
                    acc += w * tmpd[((size_t)y * size + ox) * 3 + ch], wsum += w;
                }
                double v = acc / wsum;
                int X = flip ? size - 1 - ox : ox;
                dst[((size_t)oy * size + X) * 3 + ch] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v + 0.5);
            }
    }
    free(tmpd);
}

static inline int max_diff(const uint8_t *a, const uint8_t *b, size_t n) {
    int m = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        if (d > m) m = d;
    }
    return m;
}

/* ---- native frames of a file against the CLI, every frame, decoded in a scrambled order ---- */
static inline void check_native_all(const char *video, int stream, int threads, int check_pts) {
    double *pts = NULL;
    int64_t n = probe_pts(video, stream, &pts);
    iv2_sample_opts o;
    iv2_sample_opts_default(&o);
    o.stream = stream, o.threads = threads;
    iv2_video *v = iv2_video_open(video, &o);
    CHECK(v, "%s: %s", video, iv2_errmsg());
    if (!v) { free(pts); return; }
    iv2_video_info info;
    iv2_video_get_info(v, &info);
    CHECK(info.n_frames == n, "%s: %lld frames, ffprobe %lld", video, (long long)info.n_frames, (long long)n);
    if (check_pts)
        for (int64_t i = 0; i < n && i < info.n_frames; i++)
            CHECK(fabs(iv2_video_frame_pts(v, i) - pts[i]) < 1e-5, "%s frame %lld pts %.6f ffprobe %.6f", video,
                  (long long)i, iv2_video_frame_pts(v, i), pts[i]);
    size_t len;
    uint8_t *all = cli_frames(video, stream, NULL, 0, &len);
    size_t fsz = (size_t)info.width * info.height * 3;
    CHECK(all && len == fsz * n, "%s: CLI gave %zu bytes, want %zu", video, len, fsz * n);
    if (all && len == fsz * n) {
        /* a fixed permutation: forward runs, backward jumps, repeats, the last frame */
        int bad = 0;
        for (int64_t j = 0; j < n + 3; j++) {
            int64_t i = j < n ? (j * 37 + 11) % n : (j == n ? n - 1 : j == n + 1 ? 0 : n / 2);
            uint8_t *rgb;
            int w, h;
            if (iv2_video_decode_frame(v, i, &rgb, &w, &h, NULL) < 0) {
                CHECK(0, "%s frame %lld: %s", video, (long long)i, iv2_errmsg());
                continue;
            }
            if (w != info.width || h != info.height || memcmp(rgb, all + i * fsz, fsz)) bad++;
            if (bad == 1 && (w != info.width || h != info.height || memcmp(rgb, all + i * fsz, fsz)))
                fprintf(stderr, "%s frame %lld differs from the CLI (max diff %d)\n", video, (long long)i,
                        w == info.width && h == info.height ? max_diff(rgb, all + i * fsz, fsz) : -1);
            free(rgb);
        }
        CHECK(bad == 0, "%s: %d of %lld decodes differ from the ffmpeg CLI (threads %d)", video, bad, (long long)n + 3,
              threads);
    }
    free(all);
    free(pts);
    iv2_video_close(v);
}

/* ---- a sampled clip against the CLI's frames resized here ---- */
static inline void check_clip(const char *video, double start, double end, int det, uint64_t seed, int64_t row, int view,
                       const char *source, int threads) {
    iv2_sample_opts o;
    iv2_sample_opts_default(&o);
    o.deterministic = det, o.threads = threads, o.size = 64; /* a small side keeps the reference fast */
    size_t plane = (size_t)o.size * o.size * 3;
    uint8_t *rgb = malloc(plane * o.num_frames), *want = malloc(plane);
    iv2_clip_record r;
    int rc = iv2_sample_clip(video, start, end, source, seed, row, view, &o, rgb, &r);
    CHECK(rc == 0, "%s: %s", video, iv2_errmsg());
    if (rc == 0) {
        int64_t uniq[IV2_MAX_CLIP_FRAMES];
        int k = 0;
        for (int i = 0; i < r.num_frames; i++) {
            CHECK(i == 0 || r.frame[i] >= r.frame[i - 1], "frames ascend");
            if (k == 0 || uniq[k - 1] != r.frame[i]) uniq[k++] = r.frame[i];
        }
        size_t len, fsz = (size_t)r.src_w * r.src_h * 3;
        uint8_t *cli = cli_frames(video, r.stream, uniq, k, &len);
        CHECK(cli && len == fsz * k, "%s: CLI frames", video);
        for (int i = 0, u = 0; cli && len == fsz * k && i < r.num_frames; i++) {
            while (uniq[u] != r.frame[i]) u++;
            ref_resize(cli + u * fsz, r.src_w, r.src_h, r.crop_x, r.crop_y, r.crop_w, r.crop_h, want, o.size, r.flip);
            int d = max_diff(rgb + i * plane, want, plane);
            CHECK(d <= 1, "%s clip frame %d (index %lld, crop %d,%d %dx%d flip %d): max diff %d from the reference resize",
                  video, i, (long long)r.frame[i], r.crop_x, r.crop_y, r.crop_w, r.crop_h, r.flip, d);
        }
        free(cli);
    }
    free(rgb);
    free(want);
}

#endif
