/* bench_decode.c: clips per second for 16-frame sparse sampling + crop + resize with 2 threads,
 * beside the ffmpeg CLI extracting the same frames (select + crop + scale) in the same run.
 *
 * Ours: 2 worker threads, each sampling whole clips (open + index + seek/decode + crop + resize)
 * with a 1-thread decoder, as iv2-extract's workers do. CLI: the same clips, 2 processes at a
 * time (xargs -P 2), each `ffmpeg -threads 1` with select=eq(n,..)+..., crop and a bilinear scale.
 * Videos: every video stream in ../shared/media (when present) and a generated 10 s 1080p H.264
 * file with 250-frame GOPs (kept in build/bench/ between runs).
 *   BENCH_CLIPS=n  clips per measurement (default 8); BENCH_REPS=n  repetitions (default 3). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "decode.h"
#include "err.h"
#include "log.h"
#include "testutil.h"

typedef struct job {
    const char *path;
    int stream, n_clips;
    atomic_int next;
    int failed;
} job;

static void *worker(void *arg) {
    job *j = arg;
    iv2_sample_opts o;
    iv2_sample_opts_default(&o);
    o.stream = j->stream;
    o.threads = 1;
    uint8_t *rgb = iv2_malloc((size_t)16 * 224 * 224 * 3);
    for (int c; (c = atomic_fetch_add(&j->next, 1)) < j->n_clips;)
        if (iv2_sample_clip(j->path, 0, -1, "", 1234, c, 0, &o, rgb, NULL) < 0) {
            fprintf(stderr, "%s\n", iv2_errmsg());
            j->failed = 1;
        }
    free(rgb);
    return NULL;
}

static double time_ours(const char *path, int stream, int n_clips) {
    job j = {path, stream, n_clips, 0, 0};
    pthread_t t[2];
    double t0 = iv2_now();
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, worker, &j);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    return j.failed ? -1 : iv2_now() - t0;
}

/* one ffmpeg command line per clip into cmdfile, from the same records our sampler draws */
static int write_cli_commands(const char *path, int stream, int n_clips, const char *cmdfile) {
    iv2_sample_opts o;
    iv2_sample_opts_default(&o);
    o.stream = stream;
    iv2_video *v = iv2_video_open(path, &o);
    if (!v) return -1;
    FILE *f = fopen(cmdfile, "w");
    uint8_t *rgb = iv2_malloc((size_t)16 * 224 * 224 * 3);
    for (int c = 0; c < n_clips; c++) {
        iv2_clip_record r;
        if (iv2_video_sample(v, 0, -1, "", 1234, c, 0, &o, rgb, &r) < 0) { fclose(f); free(rgb); iv2_video_close(v); return -1; }
        fprintf(f, "ffmpeg -nostdin -v error -threads 1 -i '%s' -map 0:%d -vf \"select='", path, r.stream);
        for (int i = 0; i < r.num_frames; i++) fprintf(f, "%seq(n,%lld)", i ? "+" : "", (long long)r.frame[i]);
        fprintf(f, "',crop=%d:%d:%d:%d,scale=224:224:flags=bilinear%s\" -vsync 0 -pix_fmt rgb24 -f rawvideo -y /dev/null\n",
                r.crop_w, r.crop_h, r.crop_x, r.crop_y, r.flip ? ",hflip" : "");
    }
    fclose(f);
    free(rgb);
    iv2_video_close(v);
    return 0;
}

static double time_cli(const char *cmdfile) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "tr '\\n' '\\0' < '%s' | xargs -0 -P 2 -n 1 sh -c", cmdfile);
    double t0 = iv2_now();
    if (system(cmd) != 0) return -1;
    return iv2_now() - t0;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *x, int n) {
    qsort(x, n, sizeof *x, cmp_d);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

static void bench_video(const char *label, const char *path, int stream, int n_clips, int reps) {
    char cmdfile[] = "/tmp/iv2_bench_decode_XXXXXX";
    int fd = mkstemp(cmdfile);
    if (fd < 0) return;
    close(fd);
    if (write_cli_commands(path, stream, n_clips, cmdfile) < 0) {
        printf("%-28s error: %s\n", label, iv2_errmsg());
        unlink(cmdfile);
        return;
    }
    double ours[16], cli[16];
    for (int r = 0; r < reps; r++) { /* interleaved, so that load from others hits both alike */
        ours[r] = time_ours(path, stream, n_clips);
        cli[r] = time_cli(cmdfile);
    }
    unlink(cmdfile);
    double mo = median(ours, reps), mc = median(cli, reps);
    if (mo <= 0 || mc <= 0) { printf("%-28s failed\n", label); return; }
    printf("%-28s %8.2f %8.2f %8.2fx\n", label, n_clips / mo, n_clips / mc, mc / mo);
}

int main(void) {
    setenv("IV2_QUIET", "1", 0);
    setvbuf(stdout, NULL, _IOLBF, 0);
    int n_clips = getenv("BENCH_CLIPS") ? atoi(getenv("BENCH_CLIPS")) : 8;
    int reps = getenv("BENCH_REPS") ? atoi(getenv("BENCH_REPS")) : 3;
    if (n_clips < 1) n_clips = 1;
    if (reps < 1 || reps > 16) reps = 3;
    const char *big = "build/bench/h264_1080p_longgop.mp4";
    if (access(big, R_OK) != 0) {
        fprintf(stderr, "making %s (10 s 1080p H.264, GOP 250) ...\n", big);
        if (system("ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=1920x1080:rate=25 -t 10 -c:v libx264 "
                   "-preset veryfast -bf 2 -g 250 -pix_fmt yuv420p -y build/bench/h264_1080p_longgop.mp4") != 0) {
            fprintf(stderr, "cannot make the 1080p file\n");
            return 1;
        }
    }
    printf("16-frame sparse clips (training views) + crop + resize to 224, 2 threads; %d clips, median of %d\n",
           n_clips, reps);
    printf("%-28s %8s %8s %9s\n", "video", "iv2 c/s", "CLI c/s", "iv2/CLI");
    bench_video("1080p h264 GOP 250 (10 s)", big, -1, n_clips, reps);
    char dir[512], p[700];
    if (t_shared("media/nasa_13013.mp4", dir, sizeof dir)) {
        *strrchr(dir, '/') = 0;
        struct { const char *file; int stream; } vids[] = {{"nasa_13013.mp4", 0}, {"nasa_13013.mp4", 3}, {"av1_video.mkv", 0},
                                                           {"h265_video.mp4", 0}, {"h264_10bits.mp4", 0}, {"bt709_full_range.mp4", 0}};
        for (size_t i = 0; i < sizeof vids / sizeof vids[0]; i++) {
            char label[64];
            snprintf(p, sizeof p, "%s/%s", dir, vids[i].file);
            snprintf(label, sizeof label, "%s:%d", vids[i].file, vids[i].stream);
            bench_video(label, p, vids[i].stream, n_clips, reps);
        }
    } else
        printf("(../shared/media absent: only the generated file)\n");
    return 0;
}
