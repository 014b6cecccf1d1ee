/* decode_cli.c: `iv2-extract decode`: look at what the sampler produces. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "decode.h"
#include "err.h"
#include "log.h"

static const char *usage =
    "usage: iv2-extract decode VIDEO [options]\n"
    "Writes one row's sampled view (num_frames x size x size RGB) or one native frame, and prints\n"
    "the sampling record as JSON on stdout.\n"
    "  --frame K          write frame K (0-based, presentation order) at native resolution, no crop\n"
    "  --stream S         video stream index (default: FFmpeg's best video stream)\n"
    "  --start S          span start, seconds from the first frame (default 0)\n"
    "  --end E            span end, seconds (default: the end of the video)\n"
    "  --source NAME      the row's source; \"ssv2\" turns flips off\n"
    "  --seed N           run seed (default 0)\n"
    "  --row R            manifest row (default 0)\n"
    "  --view V           view number (default 0)\n"
    "  --deterministic    segment-middle frames, centre crop, no flip\n"
    "  --no-flip          never flip\n"
    "  --frames N         frames per clip (default 16)\n"
    "  --size N           output side (default 224)\n"
    "  --threads N        decoder threads (default 1; 0 = FFmpeg auto)\n"
    "  --time-limit S     seconds per file, 0 = none (default 60)\n"
    "  --out PREFIX       output prefix (default \"frame\"): PREFIX_NN.ppm, PREFIX.rgb or PREFIX.ppm;\n"
    "                     \"-\" writes raw RGB to stdout (then the record goes to stderr)\n"
    "  --format ppm|raw   ppm (default): one file per frame; raw: all frames in one file\n"
    "  --info             print the stream index (frame count, keyframes, duration) and exit\n"
    "  --pts              with --info: also every frame's pts in seconds\n";

static int write_image(const char *path, const uint8_t *rgb, int w, int h, int n, int ppm) {
    FILE *f = strcmp(path, "-") == 0 ? stdout : fopen(path, "wb");
    if (!f) return iv2_err("%s: cannot write: %s", path, strerror(errno));
    if (ppm) fprintf(f, "P6\n%d %d\n255\n", w, h);
    size_t bytes = (size_t)w * h * 3 * n;
    int bad = fwrite(rgb, 1, bytes, f) != bytes;
    if (f == stdout) bad |= fflush(f) != 0;
    else bad |= fclose(f) != 0;
    if (bad) return iv2_err("%s: write failed", path);
    return 0;
}

static int parse_num(const char *opt, const char *s, double lo, double hi, double *out) {
    char *end;
    if (!s) return iv2_err("%s needs a value", opt);
    errno = 0;
    double x = strtod(s, &end);
    if (errno || end == s || *end || !(x >= lo && x <= hi))
        return iv2_err("%s: '%s' is not a number in [%g, %g]", opt, s, lo, hi);
    *out = x;
    return 0;
}

static int decode_cli(int argc, char **argv);

int iv2_decode_cli(int argc, char **argv) {
    if (decode_cli(argc, argv) == 0) return 0;
    fprintf(stderr, "iv2-extract decode: error: %s\n", iv2_errmsg());
    return 1;
}

static int decode_cli(int argc, char **argv) {
    iv2_sample_opts o;
    iv2_sample_opts_default(&o);
    const char *video = NULL, *out = "frame", *source = "";
    double start = 0, end = -1, frame = -1, x = 0;
    uint64_t seed = 0;
    int64_t row = 0;
    int view = 0, ppm = 1, info = 0, pts = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(usage, stdout); return 0; }
        else if (!strcmp(a, "--deterministic")) o.deterministic = 1;
        else if (!strcmp(a, "--no-flip")) o.flip = 0;
        else if (!strcmp(a, "--info")) info = 1;
        else if (!strcmp(a, "--pts")) pts = 1;
        else if (a[0] == '-' && a[1] == '-') {
            i++;
            if (!strcmp(a, "--out") || !strcmp(a, "--source") || !strcmp(a, "--format")) {
                if (!val) return iv2_err("%s needs a value", a);
                if (!strcmp(a, "--out")) out = val;
                else if (!strcmp(a, "--source")) source = val;
                else if (!strcmp(val, "ppm") || !strcmp(val, "raw")) ppm = !strcmp(val, "ppm");
                else return iv2_err("--format: '%s' is not ppm or raw", val);
                continue;
            }
            /* the name first: "--bogus" is an unknown option, not one missing its value; every
             * numeric option but the span's times is a count or an index (no "2.5", no "-3") */
            static const char *const ints[] = {"--frame", "--stream", "--seed", "--row", "--view", "--frames",
                                               "--size", "--threads"};
            int is_int = 0;
            for (size_t k = 0; k < sizeof ints / sizeof *ints; k++) is_int |= !strcmp(a, ints[k]);
            if (!is_int && strcmp(a, "--start") && strcmp(a, "--end") && strcmp(a, "--time-limit"))
                return iv2_err("unknown option %s (see --help)", a);
            if (!strcmp(a, "--seed")) {   /* exact, as iv2-extract's (a double would round it) */
                if (iv2_parse_seed(a, val, &seed)) return -1;
                continue;
            }
            if (parse_num(a, val, is_int ? 0 : -1e18, 1e18, &x) < 0) return -1;
            if (is_int && x != (double)(int64_t)x) return iv2_err("%s: '%s' is not an integer", a, val);
            if (!strcmp(a, "--frame")) frame = x;
            else if (!strcmp(a, "--stream")) o.stream = (int)x;
            else if (!strcmp(a, "--start")) start = x;
            else if (!strcmp(a, "--end")) end = x;
            else if (!strcmp(a, "--row")) row = (int64_t)x;
            else if (!strcmp(a, "--view")) view = (int)x;
            else if (!strcmp(a, "--frames")) o.num_frames = (int)x;
            else if (!strcmp(a, "--size")) o.size = (int)x;
            else if (!strcmp(a, "--threads")) o.threads = (int)x;
            else o.time_limit = x;   /* --time-limit */
        } else if (!video) video = a;
        else return iv2_err("unexpected argument '%s' (see --help)", a);
    }
    if (!video) return iv2_err("no video given (see --help)");
    FILE *meta = strcmp(out, "-") == 0 ? stderr : stdout;
    char vj[8200];   /* a PATH_MAX path, each quote or backslash doubled */
    iv2_json_escape(vj, sizeof vj, video);

    iv2_video *v = iv2_video_open(video, &o);
    if (!v) return -1;
    int ret = -1;
    uint8_t *rgb = NULL;
    if (info) {
        iv2_video_info in;
        iv2_video_get_info(v, &in);
        fprintf(meta, "{\"video\":\"%s\",\"stream\":%d,\"codec\":\"%s\",\"width\":%d,\"height\":%d,\"frames\":%" PRId64
                      ",\"keyframes\":%" PRId64 ",\"first_pts\":%.6f,\"duration\":%.6f",
                vj, in.stream, in.codec, in.width, in.height, in.n_frames, in.n_keyframes, in.first_pts, in.duration);
        if (pts) {
            fputs(",\"pts\":[", meta);
            for (int64_t i = 0; i < in.n_frames; i++) fprintf(meta, "%s%.6f", i ? "," : "", iv2_video_frame_pts(v, i));
            fputc(']', meta);
        }
        fputs("}\n", meta);
        ret = 0;
    } else if (frame >= 0) {
        int w, h;
        double t;
        if (iv2_video_decode_frame(v, (int64_t)frame, &rgb, &w, &h, &t) == 0) {
            char path[4096];
            if (strcmp(out, "-") == 0) snprintf(path, sizeof path, "-");
            else snprintf(path, sizeof path, "%s.%s", out, ppm ? "ppm" : "rgb");
            ret = write_image(path, rgb, w, h, 1, ppm && strcmp(out, "-") != 0); /* "-": raw */
            if (!ret)
                fprintf(meta, "{\"video\":\"%s\",\"frame\":%lld,\"pts\":%.6f,\"width\":%d,\"height\":%d,\"file\":\"%s\"}\n",
                        vj, (long long)frame, t, w, h, path);
        }
    } else {
        size_t plane = (size_t)o.size * o.size * 3;
        rgb = iv2_malloc(plane * o.num_frames);
        iv2_clip_record r;
        if (iv2_video_sample(v, start, end, source, seed, row, view, &o, rgb, &r) == 0) {
            char path[4096];
            ret = 0;
            if (strcmp(out, "-") == 0 || !ppm) {
                if (strcmp(out, "-") == 0) snprintf(path, sizeof path, "-");
                else snprintf(path, sizeof path, "%s.rgb", out);
                ret = write_image(path, rgb, o.size, o.size, o.num_frames, 0);
            } else
                for (int i = 0; i < o.num_frames && ret == 0; i++) {
                    snprintf(path, sizeof path, "%s_%02d.ppm", out, i);
                    ret = write_image(path, rgb + i * plane, o.size, o.size, 1, 1);
                }
            if (!ret) {
                fprintf(meta, "{\"video\":\"%s\",\"stream\":%d,\"span_first\":%lld,\"span_frames\":%lld,\"frames\":[",
                        vj, r.stream, (long long)r.span_first, (long long)r.span_frames);
                for (int i = 0; i < r.num_frames; i++) fprintf(meta, "%s%lld", i ? "," : "", (long long)r.frame[i]);
                fputs("],\"pts\":[", meta);
                for (int i = 0; i < r.num_frames; i++) fprintf(meta, "%s%.6f", i ? "," : "", r.pts[i]);
                fprintf(meta, "],\"src_w\":%d,\"src_h\":%d,\"crop\":[%d,%d,%d,%d],\"flip\":%d,\"size\":%d,\"stand_ins\":%d}\n",
                        r.src_w, r.src_h, r.crop_x, r.crop_y, r.crop_w, r.crop_h, r.flip, r.size, r.stand_ins);
            }
        }
    }
    free(rgb);
    iv2_video_close(v);
    return ret;
}
