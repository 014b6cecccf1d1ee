/* test_decode.c: video clip sampling against independent oracles.
 *
 * Oracles: the ffmpeg/ffprobe command-line tools (frame pixels by index, frame timestamps), the
 * reference frames and timestamp list in ../shared/media, the recipe's crop table and a
 * double-precision antialiased bilinear resize written here from its definition.
 * Files made here with the ffmpeg CLI always run; ../shared/media parts are skipped (and the
 * test counted as skipped when nothing else failed) where that folder is absent. */
#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "decode.h"
#include "err.h"
#include "testutil.h"
#include "decode_oracle.h"

/* ---- the crop table, from the recipe ---- */
static void check_crop_table(int W, int H, int size) {
    const double sc[4] = {1, .875, .75, .66};
    int base = W < H ? W : H, cs[4];
    for (int i = 0; i < 4; i++) {
        cs[i] = (int)(base * sc[i]);
        if (abs(cs[i] - size) < 3) cs[i] = size;
    }
    /* allowed (w, h, x, y), and how often each was drawn */
    int allowed[10 * 13][4], count[130] = {0}, na = 0;
    for (int i = 0; i < 4; i++)     /* h index */
        for (int j = 0; j < 4; j++) /* w index */
            if (abs(i - j) <= 1) {
                int w = cs[j], h = cs[i];
                int ws = (int)floor((W - w) / 4.0), hs = (int)floor((H - h) / 4.0);
                int off[13][2] = {{0, 0}, {4, 0}, {0, 4}, {4, 4}, {2, 2}, {0, 2}, {4, 2},
                                  {2, 4}, {2, 0}, {1, 1}, {3, 1}, {1, 3}, {3, 3}};
                for (int k = 0; k < 13; k++)
                    allowed[na][0] = w, allowed[na][1] = h, allowed[na][2] = off[k][0] * ws,
                    allowed[na][3] = off[k][1] * hs, na++;
            }
    CHECK(na == 130, "10 pairs x 13 offsets");
    int flips = 0, draws = 6000, outside = 0;
    for (int d = 0; d < draws; d++) {
        int x, y, w, h, f;
        iv2_sample_crop(W, H, size, 0, 1, 7, d / 3, d % 3, &x, &y, &w, &h, &f);
        flips += f;
        int hit = -1;
        for (int a = 0; a < na && hit < 0; a++)
            if (allowed[a][0] == w && allowed[a][1] == h && allowed[a][2] == x && allowed[a][3] == y) hit = a;
        if (hit < 0) outside++;
        else count[hit]++;
    }
    CHECK(outside == 0, "%dx%d: %d crop boxes outside the recipe's table", W, H, outside);
    /* every (pair, offset) slot is drawn with probability 1/130: all appear in 6000 draws */
    int missing = 0;
    for (int a = 0; a < na; a++) {
        int dup = 0; /* coinciding boxes (e.g. a zero step) are counted at their first entry */
        for (int b = 0; b < a && !dup; b++) dup = !memcmp(allowed[a], allowed[b], sizeof allowed[a]);
        missing += count[a] == 0 && !dup;
    }
    CHECK(missing == 0, "%dx%d: %d crop boxes never drawn", W, H, missing);
    CHECK(flips > draws * 0.45 && flips < draws * 0.55, "%dx%d: %d flips in %d draws", W, H, flips, draws);
    int x, y, w, h, f;
    iv2_sample_crop(W, H, size, 1, 1, 7, 0, 0, &x, &y, &w, &h, &f);
    CHECK(w == cs[0] && h == cs[0] && x == 2 * (int)floor((W - w) / 4.0) && y == 2 * (int)floor((H - h) / 4.0) && !f,
          "%dx%d deterministic crop %d,%d %dx%d", W, H, x, y, w, h);
    iv2_sample_crop(W, H, size, 0, 0, 7, 0, 0, &x, &y, &w, &h, &f);
    int any = 0;
    for (int d = 0; d < 50; d++) iv2_sample_crop(W, H, size, 0, 0, 7, d, 0, &x, &y, &w, &h, &f), any |= f;
    CHECK(!any, "no flips when not allowed");
}

static void check_indices(void) {
    int64_t a[16], b[16];
    /* training: one frame in each of 16 segments of n // 16 frames */
    for (int64_t n = 16; n < 400; n += 37) {
        for (int view = 0; view < 5; view++) {
            iv2_sample_indices(n, 16, 0, 3, 10, view, a);
            int64_t avg = n / 16;
            for (int i = 0; i < 16; i++)
                CHECK(a[i] >= i * avg && a[i] < (i + 1) * avg, "n %lld seg %d: %lld", (long long)n, i, (long long)a[i]);
            iv2_sample_indices(n, 16, 0, 3, 10, view, b);
            CHECK(!memcmp(a, b, sizeof a), "reproducible");
        }
        iv2_sample_indices(n, 16, 1, 3, 10, 0, a);
        for (int i = 0; i < 16; i++)
            CHECK(a[i] == (int64_t)floor((i + 0.5) * n / 16.0), "det n %lld seg %d: %lld", (long long)n, i,
                  (long long)a[i]);
    }
    /* segments of one frame (n = 24, avg 1): the training draw is frame i of segment i, not the
     * deterministic middle (which would give 0, 2, 3, 5, ...) */
    iv2_sample_indices(24, 16, 0, 3, 10, 0, a);
    for (int i = 0; i < 16; i++) CHECK(a[i] == i, "n 24 seg %d: %lld", i, (long long)a[i]);
    /* fewer frames than segments: repeats, in range, ascending, all frames used */
    iv2_sample_indices(5, 16, 0, 1, 2, 3, a);
    int seen[5] = {0};
    for (int i = 0; i < 16; i++) {
        CHECK(a[i] >= 0 && a[i] < 5 && (i == 0 || a[i] >= a[i - 1]), "short span %lld", (long long)a[i]);
        if (a[i] >= 0 && a[i] < 5) seen[a[i]] = 1;
    }
    CHECK(seen[0] && seen[1] && seen[2] && seen[3] && seen[4], "short span uses every frame");
    /* different views differ */
    iv2_sample_indices(320, 16, 0, 3, 10, 0, a);
    iv2_sample_indices(320, 16, 0, 3, 10, 1, b);
    CHECK(memcmp(a, b, sizeof a), "views differ");
    /* one draw per segment, not one offset for all: the 16 offsets in segments of 20 are not all equal */
    int varied = 0;
    for (int i = 1; i < 16; i++) varied |= a[i] - 20 * i != a[0];
    CHECK(varied, "the same offset %lld in every segment", (long long)a[0]);
    /* the seed is mixed in: another seed draws other frames and other crops for the same (row, view) */
    iv2_sample_indices(320, 16, 0, 4, 10, 0, b);
    CHECK(memcmp(a, b, sizeof a), "seeds 3 and 4 draw the same frames");
    int same = 0;
    for (int view = 0; view < 8; view++) {
        int c1[5], c2[5];
        iv2_sample_crop(640, 360, 224, 0, 1, 3, 10, view, &c1[0], &c1[1], &c1[2], &c1[3], &c1[4]);
        iv2_sample_crop(640, 360, 224, 0, 1, 4, 10, view, &c2[0], &c2[1], &c2[2], &c2[3], &c2[4]);
        same += !memcmp(c1, c2, sizeof c1);
    }
    CHECK(same < 8, "seeds 3 and 4 draw the same crops");
}

static void check_resize(void) {
    int sw = 97, sh = 61;
    uint8_t *src = malloc(sw * sh * 3), *got = malloc(50 * 50 * 3), *want = malloc(50 * 50 * 3);
    uint32_t s = 12345;
    for (int i = 0; i < sw * sh * 3; i++) s = s * 1664525u + 1013904223u, src[i] = (uint8_t)((i % 7) * 30 + (s >> 28));
    /* downscale, upscale, anisotropic, identity, a box partly outside (black), flips */
    int boxes[][5] = {{0, 0, 97, 61, 0}, {5, 3, 40, 40, 1}, {10, 0, 61, 30, 0}, {0, 0, 50, 50, 0},
                      {-8, -4, 60, 60, 0}, {50, 20, 60, 50, 1}, {3, 7, 20, 55, 1}};
    for (size_t b = 0; b < sizeof boxes / sizeof boxes[0]; b++) {
        int *B = boxes[b];
        for (int dsz = 17; dsz <= 50; dsz += 33) {
            iv2_resize_bilinear(src, sw, sh, B[0], B[1], B[2], B[3], got, dsz, dsz, B[4]);
            ref_resize(src, sw, sh, B[0], B[1], B[2], B[3], want, dsz, B[4]);
            int d = max_diff(got, want, (size_t)dsz * dsz * 3);
            CHECK(d <= 1, "resize box %zu to %d: max diff %d", b, dsz, d);
        }
    }
    /* identity box copies exactly */
    iv2_resize_bilinear(src, sw, sh, 4, 5, 50, 50, got, 50, 50, 0);
    int same = 1;
    for (int y = 0; y < 50; y++) same &= !memcmp(got + y * 150, src + ((y + 5) * sw + 4) * 3, 150);
    CHECK(same, "a box already at the output size is copied");
    free(src), free(got), free(want);
}

/* bit-exact against Pillow (tests/gen_pil_resize.py wrote the golden with Image.crop + resize(BILINEAR)) */
static void check_pil_golden(void) {
    char path[512];
    const char *root = getenv("IV2_ROOT");
    snprintf(path, sizeof path, "%s/tests/goldens/pil_resize.bin", root ? root : ".");
    size_t len;
    uint8_t *gold = slurp(path, &len);
    CHECK(gold, "%s missing", path);
    if (!gold) return;
    const int W = 97, H = 61;
    const int boxes[][5] = {{0, 0, 97, 61, 24}, {5, 3, 40, 40, 24}, {10, 0, 61, 30, 17}, {-8, -4, 60, 60, 24},
                            {50, 20, 60, 50, 31}, {3, 7, 20, 55, 40}, {0, 0, 24, 24, 24}};
    uint8_t *src = malloc(W * H * 3), *got = malloc(40 * 40 * 3);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int c = 0; c < 3; c++) src[(y * W + x) * 3 + c] = (uint8_t)((x * 7 + y * 13 + c * 50 + (x * y) % 17 + ((x ^ y) & 8) * 9) & 255);
    size_t off = 0;
    for (size_t b = 0; b < sizeof boxes / sizeof boxes[0]; b++) {
        const int *B = boxes[b];
        size_t n = (size_t)B[4] * B[4] * 3;
        if (off + n > len) { CHECK(0, "golden too short"); break; }
        iv2_resize_bilinear(src, W, H, B[0], B[1], B[2], B[3], got, B[4], B[4], 0);
        CHECK(!memcmp(got, gold + off, n), "box %zu (%d,%d %dx%d -> %d) differs from Pillow by up to %d", b, B[0], B[1],
              B[2], B[3], B[4], max_diff(got, gold + off, n));
        off += n;
    }
    CHECK(off == len, "golden size %zu, used %zu", len, off);
    free(src), free(got), free(gold);
}

typedef struct par_job { const char *video; int view; uint8_t *out; int rc; } par_job;
static void *par_worker(void *p) {
    par_job *j = p;
    iv2_sample_opts o;
    iv2_sample_opts_default(&o);
    o.size = 64;
    j->rc = iv2_sample_clip(j->video, 0, -1, "", 5, 9, j->view, &o, j->out, NULL);
    return NULL;
}

static void check_threads(const char *video) {
    iv2_sample_opts o;
    iv2_sample_opts_default(&o);
    o.size = 64;
    size_t bytes = (size_t)64 * 64 * 3 * 16;
    uint8_t *serial = malloc(bytes * 4), *par = malloc(bytes * 4), *t2 = malloc(bytes);
    for (int v = 0; v < 4; v++) CHECK(iv2_sample_clip(video, 0, -1, "", 5, 9, v, &o, serial + v * bytes, NULL) == 0, "%s", iv2_errmsg());
    pthread_t th[4];
    par_job jobs[4];
    for (int v = 0; v < 4; v++) {
        jobs[v] = (par_job){video, v, par + v * bytes, -1};
        pthread_create(&th[v], NULL, par_worker, &jobs[v]);
    }
    for (int v = 0; v < 4; v++) {
        pthread_join(th[v], NULL);
        CHECK(jobs[v].rc == 0, "parallel view %d", v);
    }
    CHECK(!memcmp(serial, par, bytes * 4), "4 parallel decodes equal the serial ones");
    /* several views through one handle (seeks back and forth, skipped frames) equal fresh opens */
    iv2_video *v = iv2_video_open(video, &o);
    CHECK(v != NULL, "%s", iv2_errmsg());
    for (int k = 0; v && k < 8; k++) {
        int view = (k * 3) % 4; /* 0 3 2 1 0 3 2 1 */
        CHECK(iv2_video_sample(v, 0, -1, "", 5, 9, view, &o, t2, NULL) == 0, "%s", iv2_errmsg());
        CHECK(!memcmp(t2, serial + view * bytes, bytes), "view %d through a reused handle differs", view);
    }
    iv2_video_close(v);
    o.threads = 2;
    CHECK(iv2_sample_clip(video, 0, -1, "", 5, 9, 0, &o, t2, NULL) == 0, "%s", iv2_errmsg());
    CHECK(!memcmp(serial, t2, bytes), "2 decoder threads give the same pixels");
    free(serial), free(par), free(t2);
}

static void expect_error(const char *what, int rc, const char *must1, const char *must2) {
    const char *m = iv2_errmsg();
    CHECK(rc < 0, "%s: no error", what);
    CHECK(strstr(m, must1) && (!must2 || strstr(m, must2)), "%s: message '%s' lacks '%s' / '%s'", what, m, must1,
          must2 ? must2 : "");
}

static void check_bad_inputs(const char *good) {
    char p[300], q[300];
    iv2_sample_opts o;
    iv2_sample_opts_default(&o);
    uint8_t *rgb = malloc((size_t)224 * 224 * 3 * 16);
    iv2_clip_record r;
    expect_error("missing", iv2_sample_clip("/nonexistent/clip.mp4", 0, -1, "", 1, 0, 0, &o, rgb, &r),
                 "/nonexistent/clip.mp4", "no such file");
    {   /* a long path (legal up to PATH_MAX) still leaves room for the reason */
        char longp[4096] = "/nonexistent";
        for (int i = 0; i < 20; i++) snprintf(longp + strlen(longp), sizeof longp - strlen(longp), "/%0200d", i);
        strcat(longp, "/clip.mp4");
        expect_error("missing, long path", iv2_sample_clip(longp, 0, -1, "", 1, 0, 0, &o, rgb, &r), "/clip.mp4: no such file", NULL);
    }
    snprintf(p, sizeof p, "%s/notes.mp4", tmp);
    FILE *f = fopen(p, "w");
    fputs("this is not a video\n", f);
    fclose(f);
    expect_error("not a video", iv2_sample_clip(p, 0, -1, "", 1, 0, 0, &o, rgb, &r), p, "not a video");
    /* a pipe (or a directory) is refused before FFmpeg opens it: the open of a pipe with no writer
     * blocks where no time limit reaches (the alarm turns a hang into a failure) */
    snprintf(p, sizeof p, "%s/fifo.mp4", tmp);
    CHECK(mkfifo(p, 0600) == 0, "mkfifo %s", p);
    alarm(30);
    expect_error("a pipe", iv2_sample_clip(p, 0, -1, "", 1, 0, 0, &o, rgb, &r), p, "not a regular file (a pipe)");
    expect_error("a directory", iv2_sample_clip(tmp, 0, -1, "", 1, 0, 0, &o, rgb, &r), tmp, "(a directory)");
    alarm(0);
    snprintf(p, sizeof p, "%s/empty.mkv", tmp);
    fclose(fopen(p, "w"));
    expect_error("empty file", iv2_sample_clip(p, 0, -1, "", 1, 0, 0, &o, rgb, &r), p, "empty file (0 bytes)");
    /* moov at the end, cut: the container is unreadable */
    snprintf(p, sizeof p, "%s/trunc.mp4", tmp);
    struct stat st;
    stat(good, &st);
    sh("head -c %lld '%s' > '%s'", (long long)st.st_size * 6 / 10, good, p);
    expect_error("truncated", iv2_sample_clip(p, 0, -1, "", 1, 0, 0, &o, rgb, &r), p, "truncated");
    /* moov first, cut: the frames that are there decode, a span past them is an error */
    snprintf(q, sizeof q, "%s/fast.mp4", tmp);
    snprintf(p, sizeof p, "%s/truncfast.mp4", tmp);
    sh("ffmpeg -nostdin -v error -i '%s' -c copy -movflags +faststart -y '%s' && head -c %lld '%s' > '%s'", good, q,
       (long long)st.st_size / 2, q, p);
    iv2_video *v = iv2_video_open(p, &o);
    CHECK(v, "truncated faststart file opens: %s", iv2_errmsg());
    if (v) {
        iv2_video_info in;
        iv2_video_get_info(v, &in);
        CHECK(in.n_frames > 0 && in.n_frames < 80, "truncated file indexes %lld frames", (long long)in.n_frames);
        CHECK(iv2_video_sample(v, 0, -1, "", 1, 0, 0, &o, rgb, &r) == 0, "sample the truncated file: %s", iv2_errmsg());
        expect_error("span after the truncation", iv2_video_sample(v, 3.0, -1, "", 1, 0, 0, &o, rgb, &r), p, "after the end");
        iv2_video_close(v);
    }
    snprintf(p, sizeof p, "%s/audio.wav", tmp);
    sh("ffmpeg -nostdin -v error -f lavfi -i sine=d=0.3 -y '%s'", p);
    expect_error("no video stream", iv2_sample_clip(p, 0, -1, "", 1, 0, 0, &o, rgb, &r), p, "no video stream");
    /* every packet's bytes replaced: the container is fine, nothing decodes */
    snprintf(p, sizeof p, "%s/noise.avi", tmp);
    sh("ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=64x48:rate=25 -t 0.4 -c:v mjpeg -bsf:v noise=amount=1 -y '%s'", p);
    expect_error("zero decodable frames", iv2_sample_clip(p, 0, -1, "", 1, 0, 0, &o, rgb, &r), p, "no decodable frames");
    /* some packets' bytes damaged (one in 200, intra-only MJPEG): the frames that do not decode are
     * stood in for by the next decodable ones, and the record counts them; the intact file has none */
    snprintf(p, sizeof p, "%s/some_noise.avi", tmp);
    snprintf(q, sizeof q, "%s/no_noise.avi", tmp);
    sh("ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=64x48:rate=25 -t 2 -c:v mjpeg -bsf:v noise=amount=200 -y '%s'", p);
    sh("ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=64x48:rate=25 -t 2 -c:v mjpeg -y '%s'", q);
    CHECK(iv2_sample_clip(p, 0, -1, "", 1, 0, 0, &o, rgb, &r) == 0 && r.stand_ins > 0 && r.stand_ins < 16,
          "damaged MJPEG: a clip with stand-ins (%d): %s", r.stand_ins, iv2_errmsg());
    CHECK(iv2_sample_clip(q, 0, -1, "", 1, 0, 0, &o, rgb, &r) == 0 && r.stand_ins == 0, "intact MJPEG: no stand-ins (%d)",
          r.stand_ins);
    /* damaged bytes in some packets, and Matroska cut anywhere: a clip or a clear error, never a crash */
    snprintf(p, sizeof p, "%s/damaged.mkv", tmp);
    snprintf(q, sizeof q, "%s/cut.mkv", tmp);
    if (sh("ffmpeg -nostdin -v error -i '%s' -c copy -bsf:v noise=amount=3000 -y '%s'", good, p) == 0) {
        int rc = iv2_sample_clip(p, 0, -1, "", 1, 0, 0, &o, rgb, &r);
        CHECK(rc == 0 || strstr(iv2_errmsg(), p), "damaged: '%s'", iv2_errmsg());
        stat(p, &st);
        for (int cut = 1; cut < 10; cut++) {
            sh("head -c %lld '%s' > '%s'", (long long)st.st_size * cut / 10, p, q);
            rc = iv2_sample_clip(q, 0, -1, "", 1, cut, 0, &o, rgb, &r);
            CHECK(rc == 0 || strstr(iv2_errmsg(), q), "cut at %d0%%: '%s'", cut, iv2_errmsg());
        }
    }
    expect_error("span outside", iv2_sample_clip(good, 100, 101, "", 1, 0, 0, &o, rgb, &r), good, "after the end");
    expect_error("empty span", iv2_sample_clip(good, 2, 1, "", 1, 0, 0, &o, rgb, &r), good, "empty span");
    expect_error("negative start", iv2_sample_clip(good, -1, 1, "", 1, 0, 0, &o, rgb, &r), good, "negative");
    o.stream = 7;
    expect_error("no such stream", iv2_sample_clip(good, 0, -1, "", 1, 0, 0, &o, rgb, &r), good, "no stream 7");
    o.stream = -1;
    uint8_t *fr = NULL;
    int w, h;
    expect_error("frame out of range", iv2_decode_frame(good, -1, 100000, &o, &fr, &w, &h, NULL), good, "outside");
    CHECK(fr == NULL, "no buffer on error");
    o.time_limit = 1e-9;
    expect_error("time limit", iv2_sample_clip(good, 0, -1, "", 1, 0, 0, &o, rgb, &r), good, "time limit");
    iv2_sample_opts_default(&o);
    o.num_frames = 0;
    expect_error("bad options", iv2_sample_clip(good, 0, -1, "", 1, 0, 0, &o, rgb, &r), "num_frames", NULL);
    free(rgb);
}

int main(void) {
    setenv("IV2_QUIET", "1", 0);
    snprintf(tmp, sizeof tmp, "/tmp/iv2_test_decode_XXXXXX");
    if (!mkdtemp(tmp)) { perror("mkdtemp"); return 1; }
    check_indices();
    check_crop_table(320, 180, 224);
    check_crop_table(640, 360, 224);
    check_crop_table(1920, 1080, 224);
    check_crop_table(226, 300, 224); /* the short side snaps to 224 */
    check_crop_table(200, 150, 224); /* smaller than the output */
    check_crop_table(222, 300, 224); /* snaps up past the width: a negative step, floored */
    check_crop_table(260, 400, 224); /* .875 gives 227, 3 px off: not snapped */
    check_resize();
    check_pil_golden();

    /* generated files: several codecs and containers, B-frames, open GOP, VFR, full range */
    const char *src = "-f lavfi -i testsrc2=size=176x144:rate=25 -t 3.2";
    struct { const char *name, *args; int check_pts; } gen[] = {
        {"x264.mp4", "-c:v libx264 -bf 3 -g 20 -pix_fmt yuv420p", 1},
        {"opengop.mkv", "-c:v libx264 -bf 2 -x264-params open-gop=1:keyint=24:min-keyint=24 -pix_fmt yuv420p", 1},
        {"mpeg4.avi", "-c:v mpeg4 -bf 2 -g 12 -q:v 5", 0}, /* AVI: no pts, B-frames */
        {"vp9.webm", "-c:v libvpx-vp9 -deadline realtime -cpu-used 8 -g 15", 1},
        {"mpeg2.ts", "-c:v mpeg2video -bf 2 -g 12", 1},
        {"mjpeg.mkv", "-c:v mjpeg -pix_fmt yuvj422p", 1}, /* full range */
        {"x264_10bit.mkv", "-c:v libx264 -bf 2 -g 16 -pix_fmt yuv420p10le -color_primaries bt709 -color_trc bt709 -colorspace bt709", 1},
        {"odd444.mp4", "-vf scale=175:143 -c:v libx264 -g 30 -pix_fmt yuv444p", 1}, /* odd size, 4:4:4 */
        {"gbrp10.mkv", "-t 1 -c:v ffv1 -pix_fmt gbrp10le", 1}, /* 10-bit planar RGB */
        {"hevc10.mkv", "-t 1 -c:v libx265 -pix_fmt yuv420p10le -x265-params log-level=none:keyint=10", 1},
    };
    char path[400];
    for (size_t i = 0; i < sizeof gen / sizeof gen[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", tmp, gen[i].name);
        if (sh("ffmpeg -nostdin -v error %s %s -y '%s'", src, gen[i].args, path)) { CHECK(0, "making %s", gen[i].name); continue; }
        check_native_all(path, 0, 1, gen[i].check_pts);
    }
    snprintf(path, sizeof path, "%s/x264.mp4", tmp);
    /* a clip cut with `-ss T -c copy`: an MP4 edit list starts mid-GOP, and the packets before it
     * (the keyframe included) are flagged discard; they must still reach the decoder */
    {
        char cut[400];
        snprintf(cut, sizeof cut, "%s/cut.mp4", tmp);
        if (sh("ffmpeg -nostdin -v error -ss 0.5 -i '%s' -c copy -y '%s'", path, cut) == 0) {
            check_native_all(cut, 0, 1, 1);
            check_clip(cut, 0, -1, 0, 1, 2, 3, "", 1);
        } else
            CHECK(0, "making cut.mp4");
    }
    check_native_all(path, 0, 2, 1);
    check_clip(path, 0, -1, 0, 1, 2, 3, "", 1);
    check_clip(path, 0.5, 2.5, 1, 1, 2, 3, "", 1);
    check_clip(path, 0.4, 0.7, 0, 1, 2, 3, "", 1); /* fewer frames than segments */
    /* ssv2 rows never flip */
    {
        iv2_sample_opts o;
        iv2_sample_opts_default(&o);
        o.size = 32;
        uint8_t *rgb = malloc(32 * 32 * 3 * 16);
        iv2_clip_record r;
        int flips = 0, flips_ssv2 = 0;
        for (int view = 0; view < 8; view++) {
            if (iv2_sample_clip(path, 0, 1, "ssv2", 4, 1, view, &o, rgb, &r) == 0) flips_ssv2 += r.flip;
            if (iv2_sample_clip(path, 0, 1, "k400", 4, 1, view, &o, rgb, &r) == 0) flips += r.flip;
        }
        CHECK(flips_ssv2 == 0 && flips > 0, "flips: ssv2 %d, others %d of 8", flips_ssv2, flips);
        free(rgb);
    }
    check_threads(path);
    /* seeks: one per group of pictures touched, none inside a group */
    {
        iv2_sample_opts o;
        iv2_sample_opts_default(&o);
        o.size = 16, o.deterministic = 1;
        uint8_t *rgb = malloc(16 * 16 * 3 * 16);
        iv2_clip_record r;
        iv2_video *v = iv2_video_open(path, &o);
        CHECK(v && iv2_video_sample(v, 0, -1, "", 1, 0, 0, &o, rgb, &r) == 0, "%s", iv2_errmsg());
        if (v) {
            iv2_video_info in;
            iv2_video_get_info(v, &in);
            /* x264.mp4: 80 frames, a keyframe every 20 (ffprobe's flags checked by the index count) */
            int gops = 0;
            for (int i = 0; i < 16; i++) gops += i == 0 || r.frame[i] / 20 != r.frame[i - 1] / 20;
            CHECK(in.n_keyframes == 4, "x264.mp4 keyframes %lld", (long long)in.n_keyframes);
            CHECK(in.n_seeks == gops, "%lld seeks for %d groups of pictures", (long long)in.n_seeks, gops);
            CHECK(in.n_decoded <= 80 + 8, "%lld frames decoded for one pass", (long long)in.n_decoded);
            iv2_video_close(v);
        }
        free(rgb);
    }
    snprintf(path, sizeof path, "%s/opengop.mkv", tmp);
    check_clip(path, 0, -1, 0, 9, 1, 0, "", 2);
    snprintf(path, sizeof path, "%s/mpeg4.avi", tmp);
    check_clip(path, 0, -1, 0, 9, 1, 0, "", 1);

    /* variable frame rate: frame times grow quadratically */
    snprintf(path, sizeof path, "%s/vfr.mp4", tmp);
    if (sh("ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=176x144:rate=50 -t 2 -vf \"setpts='(N*N)/(800*TB)'\" "
           "-vsync vfr -c:v libx264 -bf 2 -g 10 -pix_fmt yuv420p -y '%s'", path) == 0) {
        check_native_all(path, 0, 1, 1);
        double *pts = NULL;
        int64_t n = probe_pts(path, 0, &pts);
        CHECK(n > 0 && pts, "ffprobe on vfr.mp4");
        iv2_sample_opts o;
        iv2_sample_opts_default(&o);
        o.deterministic = 1, o.size = 32;
        uint8_t *rgb = malloc(32 * 32 * 3 * 16);
        iv2_clip_record r;
        CHECK(iv2_sample_clip(path, 0.5, 1.5, "", 1, 0, 0, &o, rgb, &r) == 0, "%s", iv2_errmsg());
        int64_t first = -1, cnt = 0;
        for (int64_t i = 0; i < n; i++)
            if (pts[i] >= 0.5 && pts[i] < 1.5) { if (first < 0) first = i; cnt++; }
        CHECK(r.span_first == first && r.span_frames == cnt, "vfr span: %lld+%lld, want %lld+%lld",
              (long long)r.span_first, (long long)r.span_frames, (long long)first, (long long)cnt);
        for (int i = 0; i < 16 && pts; i++)
            CHECK(r.frame[i] == first + ((2 * i + 1) * cnt) / 32 && fabs(r.pts[i] - pts[r.frame[i]]) < 1e-5,
                  "vfr frame %d: %lld at %.4f", i, (long long)r.frame[i], r.pts[i]);
        check_clip(path, 0.5, 1.5, 1, 1, 0, 0, "", 1);
        free(rgb);
        free(pts);
    } else
        CHECK(0, "making vfr.mp4");

    snprintf(path, sizeof path, "%s/x264.mp4", tmp);
    check_bad_inputs(path);

    sh("rm -rf '%s'", tmp);
    return test_done();
}
