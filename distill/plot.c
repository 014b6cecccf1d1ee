/* plot.c: loss curves to PNG with a small PNG writer of our own (8-bit RGB, filter 0 per row,
 * stored deflate blocks of at most 65535 bytes inside a zlib stream, crc32 per chunk, adler32
 * over the raw scanlines), so no zlib is needed. */
#include "distill.h"
#include "err.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint32_t iv2_crc32(const uint8_t *p, size_t n, uint32_t crc) {
    static uint32_t table[256];
    static int ready;
    if (!ready) {   /* benign race: every thread computes the same table */
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        ready = 1;
    }
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

uint32_t iv2_adler32(const uint8_t *p, size_t n) {
    uint32_t a = 1, b = 0;
    for (size_t i = 0; i < n; i++) { a = (a + p[i]) % 65521u; b = (b + a) % 65521u; }
    return (b << 16) | a;
}

static void put32(uint8_t *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }

static int write_chunk(FILE *f, const char *type, const uint8_t *data, size_t n) {
    uint8_t hdr[8];
    put32(hdr, (uint32_t)n);
    memcpy(hdr + 4, type, 4);
    uint32_t crc = iv2_crc32(hdr + 4, 4, 0);
    crc = iv2_crc32(data, n, crc);
    uint8_t tail[4];
    put32(tail, crc);
    return fwrite(hdr, 1, 8, f) == 8 && fwrite(data, 1, n, f) == n && fwrite(tail, 1, 4, f) == 4 ? 0 : -1;
}

int iv2_png_write(const char *path, const uint8_t *rgb, int w, int h) {
    if (w < 1 || h < 1) return iv2_err("%s: bad image size %dx%d", path, w, h);
    size_t row = (size_t)w * 3 + 1, raw_n = row * (size_t)h;
    uint8_t *raw = iv2_malloc(raw_n);
    for (int y = 0; y < h; y++) {
        raw[y * row] = 0;   /* filter: none */
        memcpy(raw + y * row + 1, rgb + (size_t)y * w * 3, (size_t)w * 3);
    }
    size_t nblocks = (raw_n + 65534) / 65535;
    size_t z_n = 2 + raw_n + nblocks * 5 + 4;
    uint8_t *z = iv2_malloc(z_n), *q = z;
    *q++ = 0x78; *q++ = 0x01;   /* zlib header: deflate, 32K window, no dict, check bits ok */
    for (size_t off = 0; off < raw_n; off += 65535) {
        size_t len = raw_n - off < 65535 ? raw_n - off : 65535;
        *q++ = off + len == raw_n;   /* BFINAL, BTYPE = 00 (stored) */
        q[0] = len & 0xff; q[1] = len >> 8; q[2] = ~len & 0xff; q[3] = (~len >> 8) & 0xff;
        q += 4;
        memcpy(q, raw + off, len);
        q += len;
    }
    put32(q, iv2_adler32(raw, raw_n));
    q += 4;
    uint8_t ihdr[13];
    put32(ihdr, (uint32_t)w);
    put32(ihdr + 4, (uint32_t)h);
    ihdr[8] = 8; ihdr[9] = 2; ihdr[10] = 0; ihdr[11] = 0; ihdr[12] = 0;   /* 8-bit RGB */
    FILE *f = fopen(path, "wb");
    int rc = -1;
    if (f) {
        static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
        rc = fwrite(sig, 1, 8, f) == 8 && !write_chunk(f, "IHDR", ihdr, 13) &&
             !write_chunk(f, "IDAT", z, (size_t)(q - z)) && !write_chunk(f, "IEND", NULL, 0) ? 0 : -1;
        if (fclose(f)) rc = -1;
    }
    free(raw);
    free(z);
    return rc ? iv2_err("%s: cannot write PNG", path) : 0;
}

/* ---- the plot ---- */

typedef struct { uint8_t *px; int w, h; } canvas;

static void dot(canvas *c, int x, int y, const uint8_t col[3]) {
    if (x < 0 || y < 0 || x >= c->w || y >= c->h) return;
    memcpy(c->px + ((size_t)y * c->w + x) * 3, col, 3);
}

static void line(canvas *c, int x0, int y0, int x1, int y1, const uint8_t col[3]) {
    int dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1, e = dx + dy;
    for (;;) {   /* Bresenham, 2 px thick */
        dot(c, x0, y0, col);
        dot(c, x0, y0 + 1, col);
        if (x0 == x1 && y0 == y1) break;
        int e2 = 2 * e;
        if (e2 >= dy) { e += dy; x0 += sx; }
        if (e2 <= dx) { e += dx; y0 += sy; }
    }
}

/* a 3x5 pixel font for the labels: each glyph 5 rows of 3 bits (MSB left) */
static const struct { char ch; uint8_t row[5]; } glyphs[] = {
    {'0', {7, 5, 5, 5, 7}}, {'1', {2, 6, 2, 2, 7}}, {'2', {7, 1, 7, 4, 7}}, {'3', {7, 1, 7, 1, 7}},
    {'4', {5, 5, 7, 1, 1}}, {'5', {7, 4, 7, 1, 7}}, {'6', {7, 4, 7, 5, 7}}, {'7', {7, 1, 1, 1, 1}},
    {'8', {7, 5, 7, 5, 7}}, {'9', {7, 5, 7, 1, 7}}, {'.', {0, 0, 0, 0, 2}}, {'-', {0, 0, 7, 0, 0}},
    {'+', {0, 2, 7, 2, 0}}, {'e', {7, 5, 7, 4, 7}}, {'l', {4, 4, 4, 4, 7}}, {'o', {0, 7, 5, 5, 7}},
    {'s', {7, 4, 7, 1, 7}}, {'c', {0, 7, 4, 4, 7}}, {'i', {2, 0, 2, 2, 2}}, {'p', {7, 5, 7, 4, 4}},
    {'f', {3, 4, 7, 4, 4}}, {'n', {0, 6, 5, 5, 5}}, {'a', {0, 7, 1, 7, 7}}, {'m', {0, 7, 7, 5, 5}},
    {'t', {4, 7, 4, 4, 3}}, {' ', {0, 0, 0, 0, 0}},
};

/* text at (x, y) (top left), each font pixel drawn as a 2x2 block */
static void text(canvas *c, int x, int y, const char *s, const uint8_t col[3]) {
    for (; *s; s++, x += 8) {
        for (size_t g = 0; g < sizeof glyphs / sizeof *glyphs; g++) {
            if (glyphs[g].ch != *s) continue;
            for (int r = 0; r < 5; r++)
                for (int b = 0; b < 3; b++)
                    if (glyphs[g].row[r] >> (2 - b) & 1)
                        for (int k = 0; k < 4; k++) dot(c, x + 2 * b + k % 2, y + 2 * r + k / 2, col);
            break;
        }
    }
}

#define N_SERIES 4
static const char *series_key[N_SERIES] = {"loss", "clip", "final", "mae"};
static const uint8_t series_col[N_SERIES][3] = {{0, 0, 0}, {31, 119, 180}, {214, 39, 40}, {44, 160, 44}};

int iv2_plot_metrics(const char *metrics_path, const char *png_path, int w, int h) {
    FILE *f = fopen(metrics_path, "r");
    if (!f) return iv2_err("%s: cannot open metrics", metrics_path);
    size_t cap = 1024, n = 0;
    double *xs = iv2_malloc(cap * sizeof *xs), *ys = iv2_malloc(cap * N_SERIES * sizeof *ys);
    char *buf = NULL;
    size_t bcap = 0;
    while (getline(&buf, &bcap, f) > 0) {
        cJSON *o = cJSON_Parse(buf);
        const cJSON *ev = o ? cJSON_GetObjectItem(o, "event") : NULL, *st = o ? cJSON_GetObjectItem(o, "step") : NULL;
        if (cJSON_IsString(ev) && !strcmp(ev->valuestring, "step") && cJSON_IsNumber(st)) {
            if (n == cap) {
                cap *= 2;
                xs = iv2_realloc(xs, cap * sizeof *xs);
                ys = iv2_realloc(ys, cap * N_SERIES * sizeof *ys);
            }
            xs[n] = st->valuedouble;
            for (int s = 0; s < N_SERIES; s++) {
                const cJSON *v = cJSON_GetObjectItem(o, series_key[s]);
                ys[n * N_SERIES + s] = cJSON_IsNumber(v) ? v->valuedouble : NAN;
            }
            n++;
        }
        cJSON_Delete(o);
    }
    free(buf);
    fclose(f);
    if (n == 0) { free(xs); free(ys); return iv2_err("%s: no \"step\" lines to plot", metrics_path); }
    double x0 = xs[0], x1 = xs[0], ymax = 0;
    for (size_t i = 0; i < n; i++) {
        if (xs[i] < x0) x0 = xs[i];
        if (xs[i] > x1) x1 = xs[i];
        for (int s = 0; s < N_SERIES; s++)
            if (isfinite(ys[i * N_SERIES + s]) && ys[i * N_SERIES + s] > ymax) ymax = ys[i * N_SERIES + s];
    }
    if (x1 <= x0) x1 = x0 + 1;
    if (ymax <= 0) ymax = 1;
    canvas c = {iv2_malloc((size_t)w * h * 3), w, h};
    memset(c.px, 255, (size_t)w * h * 3);
    int L = 60, R = w - 10, T = 10, B = h - 40;   /* plot box */
    static const uint8_t grey[3] = {200, 200, 200}, black[3] = {0, 0, 0};
    for (int g = 0; g <= 4; g++) line(&c, L, T + (B - T) * g / 4, R, T + (B - T) * g / 4, grey);   /* y = 0, ymax/4, ... */
    line(&c, L, T, L, B, black);
    line(&c, L, B, R, B, black);
    for (int s = 0; s < N_SERIES; s++) {
        int px = -1, py = -1;
        for (size_t i = 0; i < n; i++) {
            double y = ys[i * N_SERIES + s];
            if (!isfinite(y)) { px = -1; continue; }
            int qx = L + (int)lround((xs[i] - x0) / (x1 - x0) * (R - L));
            int qy = B - (int)lround(y / ymax * (B - T));
            if (px >= 0) line(&c, px, py, qx, qy, series_col[s]);
            else dot(&c, qx, qy, series_col[s]);
            px = qx; py = qy;
        }
        int lx = L + 10 + s * 110;   /* legend: swatch and name */
        for (int k = 0; k < 3; k++) line(&c, lx, h - 11 + k, lx + 24, h - 11 + k, series_col[s]);
        text(&c, lx + 30, h - 15, series_key[s], series_col[s]);
    }
    char lab[32];
    for (int g = 0; g <= 4; g++) {   /* y labels at the grid lines */
        snprintf(lab, sizeof lab, "%.3g", ymax * (4 - g) / 4);
        text(&c, 4, T + (B - T) * g / 4 - 5, lab, black);
    }
    snprintf(lab, sizeof lab, "%.0f", x0);
    text(&c, L, B + 6, lab, black);
    snprintf(lab, sizeof lab, "step %.0f", x1);
    text(&c, R - 8 * (int)strlen(lab), B + 6, lab, black);
    int rc = iv2_png_write(png_path, c.px, w, h);
    free(c.px);
    free(xs);
    free(ys);
    return rc;
}
