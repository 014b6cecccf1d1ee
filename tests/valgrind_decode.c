/* valgrind_decode.c: a short run of the decoder's success and failure paths, built and run under
 * valgrind by tests/test_decode_valgrind.sh (not a test by itself). argv[1] = a scratch folder
 * with the files that script made. Exit 0 when every call behaved. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "decode.h"
#include "err.h"

static int fails;

static void expect(int ok, const char *what) {
    if (!ok) fprintf(stderr, "FAIL %s: %s\n", what, iv2_errmsg()), fails++;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    char p[512];
    const char *bad[] = {"missing.mp4", "notes.mp4", "trunc.mp4", "audio.wav", "noise.avi"};
    iv2_sample_opts o;
    iv2_sample_opts_default(&o);
    o.size = 32;
    uint8_t *rgb = malloc((size_t)32 * 32 * 3 * 16);
    iv2_clip_record r;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", argv[1], bad[i]);
        expect(iv2_sample_clip(p, 0, -1, "", 1, 0, 0, &o, rgb, &r) < 0 && strstr(iv2_errmsg(), bad[i]), bad[i]);
    }
    snprintf(p, sizeof p, "%s/good.mp4", argv[1]);
    expect(iv2_sample_clip(p, 0, -1, "", 1, 0, 0, &o, rgb, &r) == 0, "sample");
    expect(iv2_sample_clip(p, 50, 60, "", 1, 0, 0, &o, rgb, &r) < 0, "span outside");
    o.threads = 2;
    iv2_video *v = iv2_video_open(p, &o);
    expect(v != NULL, "open");
    if (v) {
        expect(iv2_video_sample(v, 0.2, 1.5, "ssv2", 1, 3, 1, &o, rgb, &r) == 0, "sample threads 2");
        uint8_t *f = NULL;
        int w, h;
        expect(iv2_video_decode_frame(v, 30, &f, &w, &h, NULL) == 0, "frame 30");
        free(f);
        expect(iv2_video_decode_frame(v, 2, &f, &w, &h, NULL) == 0, "frame 2 (backwards)");
        free(f);
        expect(iv2_video_decode_frame(v, 999, &f, &w, &h, NULL) < 0, "frame 999");
        iv2_video_close(v);
    }
    snprintf(p, sizeof p, "%s/trunc_fast.mp4", argv[1]);
    o.threads = 1;
    int rc = iv2_sample_clip(p, 0, -1, "", 1, 0, 0, &o, rgb, &r);
    expect(rc == 0 || strstr(iv2_errmsg(), "trunc_fast.mp4"), "truncated faststart");
    snprintf(p, sizeof p, "%s/good.mp4", argv[1]);
    char out[600];
    snprintf(out, sizeof out, "%s/cli", argv[1]);
    char *cli[] = {"decode", p, "--size", "16", "--frames", "4", "--out", out, NULL};
    expect(iv2_decode_cli(8, cli) == 0, "cli sample");
    char *cli2[] = {"decode", p, "--frame", "7", "--format", "raw", "--out", out, NULL};
    expect(iv2_decode_cli(8, cli2) == 0, "cli frame");
    char *cli3[] = {"decode", p, "--bogus", "1", NULL};
    expect(iv2_decode_cli(4, cli3) == 1, "cli bad option");
    free(rgb);
    return fails ? 1 : 0;
}
