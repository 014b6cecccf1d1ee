/* test_distill_plot: iv2-distill plot's PNG. The image is read back (the writer's stored deflate
 * blocks, undone here) and checked for what a reader needs: the size asked for; each term's
 * colour on the curve and in the legend, and none for a term that is 0 throughout (switched
 * off); text pixels where the title, the y tick values and the step ticks go; a log-scale plot
 * of a series with zeros; and the clear errors (no metrics, no step lines, too small). */
#include "testutil.h"
#include "distill.h"
#include "err.h"

/* the RGB pixels of a PNG written by iv2_png_write (stored blocks only), or NULL */
static uint8_t *read_png(const char *path, int *w, int *h) {
    *w = *h = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n), *z = malloc((size_t)n), *rgb = NULL;
    size_t got = fread(buf, 1, (size_t)n, f), zn = 0, off = 8;
    fclose(f);
    while (got == (size_t)n && off + 12 <= got) {
        uint32_t len = (uint32_t)buf[off] << 24 | buf[off + 1] << 16 | buf[off + 2] << 8 | buf[off + 3];
        if (!memcmp(buf + off + 4, "IHDR", 4)) {
            *w = buf[off + 8] << 24 | buf[off + 9] << 16 | buf[off + 10] << 8 | buf[off + 11];
            *h = buf[off + 12] << 24 | buf[off + 13] << 16 | buf[off + 14] << 8 | buf[off + 15];
        }
        if (!memcmp(buf + off + 4, "IDAT", 4)) { memcpy(z + zn, buf + off + 8, len); zn += len; }
        off += 12 + len;
    }
    size_t row = (size_t)*w * 3 + 1, q = 2, rn = 0;
    uint8_t *raw = *w > 0 ? malloc(row * *h) : NULL;
    int final = 0;
    while (raw && !final && q + 5 <= zn) {
        final = z[q] & 1;
        size_t len = z[q + 1] | z[q + 2] << 8;
        if (rn + len > row * *h) break;
        memcpy(raw + rn, z + q + 5, len);
        rn += len;
        q += 5 + len;
    }
    if (raw && rn == row * *h) {
        rgb = malloc((size_t)*w * *h * 3);
        for (int y = 0; y < *h; y++) memcpy(rgb + (size_t)y * *w * 3, raw + y * row + 1, (size_t)*w * 3);
    }
    free(raw); free(z); free(buf);
    return rgb;
}

/* pixels of colour col inside [x0, x1) x [y0, y1) */
static int count(const uint8_t *px, int w, int x0, int y0, int x1, int y1, const uint8_t col[3]) {
    int k = 0;
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++) k += !memcmp(px + ((size_t)y * w + x) * 3, col, 3);
    return k;
}

static const uint8_t BLACK[3] = {0, 0, 0}, DARK[3] = {90, 90, 90}, BLUE[3] = {31, 119, 180}, RED[3] = {214, 39, 40},
                     GREEN[3] = {44, 160, 44};

int main(void) {
    iv2_set_quiet(1);
    (void)!system("mkdir -p build/tmp/test_distill_plot");
    const char *mp = "build/tmp/test_distill_plot/metrics.jsonl", *png = "build/tmp/test_distill_plot/loss.png";
    FILE *f = fopen(mp, "w");
    fprintf(f, "{\"t\":1,\"event\":\"start\",\"config\":{}}\n");
    for (int s = 0; s < 200; s++)   /* final switched off (0), mae reaching 0 at the end */
        fprintf(f, "{\"t\":1,\"event\":\"step\",\"step\":%d,\"loss\":%g,\"clip\":%g,\"final\":0,\"mae\":%g}\n", s,
                3.0 * exp(-s / 50.0) + 0.5, 2.0 * exp(-s / 40.0) + 0.2, s == 199 ? 0.0 : 1.0 * exp(-s / 30.0) + 0.3);
    fclose(f);
    int w, h;
    for (int log_y = 0; log_y < 2; log_y++) {
        CHECK(iv2_plot_metrics(mp, png, 640, 400, log_y) == 0, "plot (log %d): %s", log_y, iv2_errmsg());
        uint8_t *px = read_png(png, &w, &h);
        CHECK(px && w == 640 && h == 400, "read back %dx%d", w, h);
        if (!px) continue;
        CHECK(count(px, w, 0, 0, w, h, RED) == 0, "no 'final' colour: it is 0 throughout (log %d)", log_y);
        CHECK(count(px, w, 60, 40, w - 20, h - 40, BLACK) > 400, "the total curve");
        CHECK(count(px, w, 60, 40, w - 20, h - 40, BLUE) > 300 && count(px, w, 60, 40, w - 20, h - 40, GREEN) > 300, "clip and mae curves");
        CHECK(count(px, w, w - 140, 30, w, 120, BLUE) >= 20 && count(px, w, w - 140, 30, w, 120, GREEN) >= 20, "legend swatches");
        CHECK(count(px, w, w / 4, 0, 3 * w / 4, 30, BLACK) > 100, "a title");
        CHECK(count(px, w, 0, 40, 50, h - 40, DARK) > 40, "y tick values left of the axis");
        CHECK(count(px, w, 40, h - 40, w, h - 20, DARK) > 60, "step tick values under the axis");
        CHECK(count(px, w, w / 2 - 40, h - 22, w / 2 + 40, h, BLACK) > 15, "the axis title 'step'");
        free(px);
    }
    {   /* a run killed after step 119 and resumed from its step-80 checkpoint logs steps 80..119 twice (and
         * a GPU run resumes within bf16, not bit for bit): the later lines win, no chord back to step 80 */
        const char *rp = "build/tmp/test_distill_plot/resumed.jsonl", *rpng = "build/tmp/test_distill_plot/resumed.png";
        f = fopen(rp, "w");
        fprintf(f, "{\"t\":1,\"event\":\"start\",\"config\":{}}\n");
        for (int s = 0; s < 120; s++)
            fprintf(f, "{\"t\":1,\"event\":\"step\",\"step\":%d,\"loss\":%g,\"clip\":%g,\"final\":0,\"mae\":%g}\n", s,
                    (s < 80 ? 1.0 : 1.5) * (3.0 * exp(-s / 50.0) + 0.5), 2.0 * exp(-s / 40.0) + 0.2, 1.0 * exp(-s / 30.0) + 0.3);
        fprintf(f, "{\"t\":1,\"event\":\"resume\",\"step\":80,\"steps\":200}\n");
        for (int s = 80; s < 200; s++)
            fprintf(f, "{\"t\":1,\"event\":\"step\",\"step\":%d,\"loss\":%g,\"clip\":%g,\"final\":0,\"mae\":%g}\n", s,
                    3.0 * exp(-s / 50.0) + 0.5, 2.0 * exp(-s / 40.0) + 0.2, s == 199 ? 0.0 : 1.0 * exp(-s / 30.0) + 0.3);
        fclose(f);
        CHECK(iv2_plot_metrics(mp, png, 640, 400, 0) == 0 && iv2_plot_metrics(rp, rpng, 640, 400, 0) == 0, "plots: %s", iv2_errmsg());
        int w2, h2;
        uint8_t *a = read_png(png, &w, &h), *b = read_png(rpng, &w2, &h2);
        CHECK(a && b && w == w2 && h == h2 && !memcmp(a, b, (size_t)w * h * 3),
              "a resumed run's metrics plot as the uninterrupted run's (the repeated steps superseded)");
        free(a); free(b);
    }
    CHECK(iv2_plot_metrics(mp, png, 63, 400, 0) == -1 && strstr(iv2_errmsg(), "64x64"), "too small: %s", iv2_errmsg());
    iv2_err_clear();
    CHECK(iv2_plot_metrics("build/tmp/test_distill_plot/none.jsonl", png, 640, 400, 0) == -1 &&
          strstr(iv2_errmsg(), "none.jsonl"), "no file: %s", iv2_errmsg());
    iv2_err_clear();
    f = fopen(mp, "w");
    fprintf(f, "{\"t\":1,\"event\":\"start\"}\nnot json\n");
    fclose(f);
    CHECK(iv2_plot_metrics(mp, png, 640, 400, 0) == -1 && strstr(iv2_errmsg(), "no \"step\" lines"), "no steps: %s", iv2_errmsg());
    iv2_err_clear();
    (void)!system("rm -rf build/tmp/test_distill_plot");
    return test_done();
}
