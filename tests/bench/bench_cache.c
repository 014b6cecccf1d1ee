/* bench_cache: LMDB cache write throughput beside a plain sequential write of the same bytes,
 * same run. Views shaped like the tiny-teacher recipe at 224 (6 InternViT blocks [2049][96],
 * pool, attention, 4 VideoMAE blocks [2048][96], bf16, plus the 8 student frames): values are
 * pre-encoded, so the LMDB figure is the store alone (transactions of 8 views, final sync);
 * the plain write is write(2) of the same buffers into one file, then fsync. Medians of 3. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cache.h"
#include "err.h"
#include "log.h"

#define NV 24
#define BATCH 8
#define NT 12
#define DIR "build/tmp/bench_cache"

static double median3(double *x) {
    double a = x[0], b = x[1], c = x[2];
    if (a > b) { double t = a; a = b; b = t; }
    if (b > c) { double t = b; b = c; c = t; }
    if (a > b) { double t = a; a = b; b = t; }
    return b;
}

int main(void) {
    iv2_set_quiet(1);
    char meta[8192];
    int n = snprintf(meta, sizeof meta, "{\"format\":1,\"targets\":[");
    iv2_cache_target t[NT];
    for (int i = 0; i < NT; i++) {
        memset(&t[i], 0, sizeof t[i]);
        if (i < 6) { snprintf(t[i].name, 32, "clip_b%d", i); t[i].tokens = 2049; t[i].dim = 96; t[i].dtype = IV2_BF16; }
        else if (i == 6) { snprintf(t[i].name, 32, "clip_pool"); t[i].tokens = 1; t[i].dim = 128; t[i].dtype = IV2_BF16; }
        else if (i == 7) { snprintf(t[i].name, 32, "clip_attn"); t[i].tokens = 8; t[i].dim = 256; t[i].dtype = IV2_F32; }
        else { snprintf(t[i].name, 32, "mae_b%d", i - 8); t[i].tokens = 2048; t[i].dim = 96; t[i].dtype = IV2_BF16; }
        n += snprintf(meta + n, sizeof meta - n, "%s{\"name\":\"%s\",\"teacher\":\"x\",\"kind\":\"block\",\"tokens\":%d,\"dim\":%d,\"dtype\":\"%s\"}",
                      i ? "," : "", t[i].name, t[i].tokens, t[i].dim, t[i].dtype == IV2_F32 ? "fp32" : "bf16");
    }
    snprintf(meta + n, sizeof meta - n, "]}");
    /* one encoded value per target (shared by all views) and one frame buffer */
    void *enc[NT];
    size_t view_bytes = 0;
    for (int i = 0; i < NT; i++) {
        size_t nb = IV2_CACHE_VALUE_HDR + iv2_cache_target_bytes(&t[i]);
        float *src = malloc(sizeof(float) * (size_t)t[i].tokens * t[i].dim);
        for (size_t j = 0; j < (size_t)t[i].tokens * t[i].dim; j++) src[j] = (float)((j * 2654435761u) % 1000) / 1000.0f;
        enc[i] = malloc(nb);
        iv2_cache_encode_value(&t[i], src, enc[i]);
        free(src);
        view_bytes += nb;
    }
    size_t fb = (size_t)8 * 224 * 224 * 3;
    uint8_t *frames = malloc(fb);
    for (size_t j = 0; j < fb; j++) frames[j] = (uint8_t)(j * 7);
    view_bytes += IV2_CACHE_VIEW_HDR + fb;

    double t_lmdb[3], t_plain[3];
    for (int rep = 0; rep < 3; rep++) {
        if (system("rm -rf " DIR " && mkdir -p " DIR)) return 1;
        iv2_cache *c;
        double t0 = iv2_now();
        if (iv2_cache_open(&c, DIR "/c", IV2_CACHE_RDWR) || iv2_cache_set_meta(c, meta)) iv2_die("bench_cache");
        for (int v0 = 0; v0 < NV; v0 += BATCH) {
            iv2_cache_entry e[BATCH];
            memset(e, 0, sizeof e);
            for (int k = 0; k < BATCH; k++) {
                e[k].view.row = v0 + k; e[k].view.n_student = 8; e[k].view.size = 224; e[k].view.num_frames = 16;
                e[k].frames = frames;
                e[k].encoded = (const void *const *)enc;
            }
            if (iv2_cache_put(c, e, BATCH, NULL, NULL, 0)) iv2_die("bench_cache");
        }
        iv2_cache_close(c);   /* includes the final sync */
        t_lmdb[rep] = iv2_now() - t0;

        t0 = iv2_now();
        int fd = open(DIR "/plain.bin", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) return 1;
        uint8_t hdr[IV2_CACHE_VIEW_HDR] = {0};
        for (int v = 0; v < NV; v++) {
            int ok = write(fd, hdr, sizeof hdr) == (ssize_t)sizeof hdr && write(fd, frames, fb) == (ssize_t)fb;
            for (int i = 0; i < NT && ok; i++) {
                size_t nb = IV2_CACHE_VALUE_HDR + iv2_cache_target_bytes(&t[i]);
                ok = write(fd, enc[i], nb) == (ssize_t)nb;
            }
            if (!ok) { perror("write"); return 1; }
        }
        fsync(fd);
        close(fd);
        t_plain[rep] = iv2_now() - t0;
    }
    double ml = median3(t_lmdb), mp = median3(t_plain), mb = (double)view_bytes * NV / 1e6;
    printf("cache write: %d views x %.2f MB (%d targets + frames), transactions of %d views\n", NV, view_bytes / 1e6, NT, BATCH);
    printf("  lmdb  median %.3f s  %.0f MB/s  %.1f views/s\n", ml, mb / ml, NV / ml);
    printf("  plain median %.3f s  %.0f MB/s  (write + fsync of the same bytes)\n", mp, mb / mp);
    printf("  ratio lmdb/plain throughput %.2f\n", mp / ml);
    for (int i = 0; i < NT; i++) free(enc[i]);
    free(frames);
    if (system("rm -rf " DIR)) {}
    return 0;
}
