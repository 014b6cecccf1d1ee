/* plot.c: loss curves to PNG with a small PNG writer of our own (8-bit RGB, filter 0 per row,
 * stored deflate blocks of at most 65535 bytes inside a zlib stream, crc32 per chunk, adler32
 * over the raw scanlines), so no zlib is needed. */
#include "distill.h"
#include "err.h"
#include "sha256.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    return fwrite(hdr, 1, 8, f) == 8 && (!n || fwrite(data, 1, n, f) == n) && fwrite(tail, 1, 4, f) == 4 ? 0 : -1;   /* IEND: no data */
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

/* A 5x7 pixel font, ASCII 32..126 where drawn (others blank): 7 rows of 5 bits, bit 4 = left.
 * g p q y hang 2 rows lower (their 7 rows start at the x-height, see DESCENDERS). */
#define DESCENDERS "gpqy"
static const uint8_t font5x7[95][7] = {
    ['0' - 32] = {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}, ['1' - 32] = {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E},
    ['2' - 32] = {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}, ['3' - 32] = {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E},
    ['4' - 32] = {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}, ['5' - 32] = {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E},
    ['6' - 32] = {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}, ['7' - 32] = {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08},
    ['8' - 32] = {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}, ['9' - 32] = {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C},
    ['A' - 32] = {0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}, ['B' - 32] = {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E},
    ['C' - 32] = {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E}, ['D' - 32] = {0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C},
    ['E' - 32] = {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F}, ['F' - 32] = {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10},
    ['G' - 32] = {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F}, ['H' - 32] = {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11},
    ['I' - 32] = {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}, ['J' - 32] = {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C},
    ['K' - 32] = {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}, ['L' - 32] = {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F},
    ['M' - 32] = {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11}, ['N' - 32] = {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11},
    ['O' - 32] = {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}, ['P' - 32] = {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10},
    ['Q' - 32] = {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D}, ['R' - 32] = {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11},
    ['S' - 32] = {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E}, ['T' - 32] = {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04},
    ['U' - 32] = {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}, ['V' - 32] = {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04},
    ['W' - 32] = {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A}, ['X' - 32] = {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11},
    ['Y' - 32] = {0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04}, ['Z' - 32] = {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F},
    ['a' - 32] = {0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F}, ['b' - 32] = {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E},
    ['c' - 32] = {0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E}, ['d' - 32] = {0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F},
    ['e' - 32] = {0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E}, ['f' - 32] = {0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08},
    ['g' - 32] = {0x0F, 0x11, 0x11, 0x11, 0x0F, 0x01, 0x0E}, ['h' - 32] = {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11},
    ['i' - 32] = {0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E}, ['j' - 32] = {0x02, 0x00, 0x06, 0x02, 0x02, 0x12, 0x0C},
    ['k' - 32] = {0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12}, ['l' - 32] = {0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E},
    ['m' - 32] = {0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11}, ['n' - 32] = {0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11},
    ['o' - 32] = {0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E}, ['p' - 32] = {0x1E, 0x11, 0x11, 0x11, 0x1E, 0x10, 0x10},
    ['q' - 32] = {0x0F, 0x11, 0x11, 0x11, 0x0F, 0x01, 0x01}, ['r' - 32] = {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10},
    ['s' - 32] = {0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E}, ['t' - 32] = {0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06},
    ['u' - 32] = {0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D}, ['v' - 32] = {0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04},
    ['w' - 32] = {0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0A}, ['x' - 32] = {0x00, 0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11},
    ['y' - 32] = {0x11, 0x11, 0x11, 0x13, 0x0D, 0x01, 0x0E}, ['z' - 32] = {0x00, 0x00, 0x1F, 0x02, 0x04, 0x08, 0x1F},
    ['.' - 32] = {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}, [',' - 32] = {0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08},
    ['-' - 32] = {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}, ['+' - 32] = {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00},
    [':' - 32] = {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00}, ['/' - 32] = {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00},
    ['(' - 32] = {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}, [')' - 32] = {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08},
    ['=' - 32] = {0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00}, ['%' - 32] = {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03},
    ['_' - 32] = {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F}, ['|' - 32] = {0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04},
    ['<' - 32] = {0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02}, ['>' - 32] = {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08},
};

/* text advance: 5 columns + 1 of space, times the scale */
static int text_width(const char *s, int scale) { int n = (int)strlen(s); return n ? (6 * n - 1) * scale : 0; }

/* text with its top left at (x, y), each font pixel a scale x scale block */
static void text(canvas *c, int x, int y, const char *s, int scale, const uint8_t col[3]) {
    for (; *s; s++, x += 6 * scale) {
        unsigned ch = (unsigned char)*s;
        if (ch < 32 || ch > 126) continue;
        const uint8_t *g = font5x7[ch - 32];
        int y0 = y + (strchr(DESCENDERS, (int)ch) ? 2 * scale : 0);
        for (int r = 0; r < 7; r++)
            for (int b = 0; b < 5; b++)
                if (g[r] >> (4 - b) & 1)
                    for (int k = 0; k < scale * scale; k++) dot(c, x + b * scale + k % scale, y0 + r * scale + k / scale, col);
    }
}

static void fill(canvas *c, int x0, int y0, int x1, int y1, const uint8_t col[3]) {
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) dot(c, x, y, col);
}

/* 1, 2 or 5 times a power of ten, near range / target */
static double nice_step(double range, int target) {
    double raw = range / (target > 0 ? target : 1), p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * p;
}

/* a tick value with no more decimals than the step needs */
static void tick_label(char *buf, size_t cap, double v, double step) {
    if (fabs(v) < step * 1e-6) v = 0;
    int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    if (fabs(v) >= 1e6 || (v != 0 && fabs(v) < 1e-4) || dec > 6) snprintf(buf, cap, "%.3g", v);
    else snprintf(buf, cap, "%.*f", dec, v);
}

#define N_SERIES 4
static const char *series_key[N_SERIES] = {"loss", "clip", "final", "mae"};
static const char *series_name[N_SERIES] = {"total", "clip", "final", "mae"};
static const uint8_t series_col[N_SERIES][3] = {{0, 0, 0}, {31, 119, 180}, {214, 39, 40}, {44, 160, 44}};

/* the y axis: linear from 0, or log10; maps a value to [0, 1] (NAN when not drawable) */
typedef struct { int log; double lo, hi; } yaxis;
static double y_frac(const yaxis *a, double v) {
    if (!isfinite(v) || (a->log && v <= 0)) return NAN;
    return a->log ? (log10(v) - a->lo) / (a->hi - a->lo) : (v - a->lo) / (a->hi - a->lo);
}

int iv2_plot_metrics(const char *metrics_path, const char *png_path, int w, int h, int log_y) {
    if (w < 64 || h < 64) return iv2_err("%s: plot size %dx%d is below 64x64", png_path, w, h);
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
            /* a resumed run repeats the steps after its checkpoint: the later lines supersede the
             * earlier ones (else the curve would jump back and draw a chord over itself) */
            while (n > 0 && xs[n - 1] >= st->valuedouble) n--;
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

    /* ranges; a term that is 0 everywhere (switched off) is left out */
    double x0 = xs[0], x1 = xs[0], ymax = 0, ypos = INFINITY;
    int present[N_SERIES] = {0};
    for (size_t i = 0; i < n; i++) {
        if (xs[i] < x0) x0 = xs[i];
        if (xs[i] > x1) x1 = xs[i];
        for (int s = 0; s < N_SERIES; s++) {
            double y = ys[i * N_SERIES + s];
            if (!isfinite(y)) continue;
            if (y != 0) present[s] = 1;
            if (y > ymax) ymax = y;
            if (y > 0 && y < ypos) ypos = y;
        }
    }
    if (x1 <= x0) x1 = x0 + 1;
    yaxis ya = {log_y, 0, 1};
    double ystep;
    if (log_y) {
        if (!isfinite(ypos)) ypos = ymax = 1;
        ya.lo = floor(log10(ypos));
        ya.hi = ceil(log10(ymax));
        if (ya.hi <= ya.lo) ya.hi = ya.lo + 1;
        ystep = 1;
    } else {
        if (ymax <= 0) ymax = 1;
        ystep = nice_step(ymax, 5);
        ya.hi = ceil(ymax / ystep - 1e-9) * ystep;
    }

    /* layout: title on top, y labels left, x labels and "step" below */
    int sc = h >= 700 && w >= 1000 ? 2 : 1, th = 7 * sc;   /* label scale and text height */
    char lab[64], title[300];
    int ylab_w = 0;
    for (double e = ya.lo; e <= ya.hi + 1e-9; e += ystep) {
        if (log_y) snprintf(lab, sizeof lab, "%g", pow(10, e));
        else tick_label(lab, sizeof lab, e, ystep);
        if (text_width(lab, sc) > ylab_w) ylab_w = text_width(lab, sc);
    }
    int L = 10 + ylab_w + 8, R = w - 16, T = 12 + 7 * (sc + 1) + 16, B = h - (8 + th + 8 + th + 10);
    if (R - L < 20 || B - T < 20) { free(xs); free(ys); return iv2_err("%s: %dx%d is too small for the plot", png_path, w, h); }
    canvas c = {iv2_malloc((size_t)w * h * 3), w, h};
    memset(c.px, 255, (size_t)w * h * 3);
    static const uint8_t grid[3] = {228, 228, 228}, minor[3] = {242, 242, 242}, black[3] = {0, 0, 0},
                         dark[3] = {90, 90, 90}, white[3] = {255, 255, 255}, frame[3] = {170, 170, 170};

    /* y grid and labels */
    for (double e = ya.lo; e <= ya.hi + 1e-9; e += ystep) {
        if (log_y && e + 1 <= ya.hi + 1e-9 && ya.hi - ya.lo <= 3)   /* 2..9 between decades */
            for (int k = 2; k <= 9; k++) {
                int y = B - (int)lround((e + log10(k) - ya.lo) / (ya.hi - ya.lo) * (B - T));
                fill(&c, L + 1, y, R, y, minor);
            }
        int y = B - (int)lround((e - ya.lo) / (ya.hi - ya.lo) * (B - T));
        fill(&c, L + 1, y, R, y, grid);
        fill(&c, L - 5, y, L - 1, y, black);
        if (log_y) snprintf(lab, sizeof lab, "%g", pow(10, e));
        else tick_label(lab, sizeof lab, e, ystep);
        text(&c, L - 8 - text_width(lab, sc), y - th / 2, lab, sc, dark);
    }
    /* x grid and labels */
    double xstep = nice_step(x1 - x0, (R - L) / (70 * sc) > 2 ? (R - L) / (70 * sc) : 2);
    if (xstep < 1) xstep = 1;   /* steps are integers */
    for (double v = ceil(x0 / xstep) * xstep; v <= x1 + 1e-9; v += xstep) {
        int x = L + (int)lround((v - x0) / (x1 - x0) * (R - L));
        fill(&c, x, T, x, B - 1, grid);
        fill(&c, x, B + 1, x, B + 5, black);
        tick_label(lab, sizeof lab, v, xstep);
        int tw = text_width(lab, sc), tx = x - tw / 2;
        if (tx + tw > w - 2) tx = w - 2 - tw;
        text(&c, tx, B + 8, lab, sc, dark);
    }
    text(&c, L + (R - L - text_width("step", sc)) / 2, B + 8 + th + 8, "step", sc, black);
    fill(&c, L, T, L, B, black);   /* axes */
    fill(&c, L, B, R, B, black);

    /* curves: the terms first, the total on top */
    for (int k = 0; k < N_SERIES; k++) {
        int s = (k + 1) % N_SERIES;
        if (!present[s]) continue;
        int px = -1, py = -1;
        for (size_t i = 0; i < n; i++) {
            double fy = y_frac(&ya, ys[i * N_SERIES + s]);
            if (!isfinite(fy)) { px = -1; continue; }
            int qx = L + (int)lround((xs[i] - x0) / (x1 - x0) * (R - L));
            int qy = B - (int)lround(fy * (B - T));
            if (qy < T) qy = T;
            if (qy > B) qy = B;
            if (px >= 0) line(&c, px, py, qx, qy, series_col[s]);
            else dot(&c, qx, qy, series_col[s]);
            px = qx; py = qy;
        }
    }

    /* legend: top right inside the box, a swatch and the term's name per line */
    int nl = 0, lw = 0;
    for (int s = 0; s < N_SERIES; s++)
        if (present[s]) { nl++; if (text_width(series_name[s], sc) > lw) lw = text_width(series_name[s], sc); }
    if (nl) {
        int pad = 6 * sc, row = th + 5 * sc, sw = 18 * sc;
        int bx1 = R - 8, bx0 = bx1 - (pad + sw + 6 * sc + lw + pad), by0 = T + 8, by1 = by0 + pad + nl * row - 5 * sc + pad;
        fill(&c, bx0, by0, bx1, by1, white);
        fill(&c, bx0, by0, bx1, by0, frame); fill(&c, bx0, by1, bx1, by1, frame);
        fill(&c, bx0, by0, bx0, by1, frame); fill(&c, bx1, by0, bx1, by1, frame);
        int y = by0 + pad;
        for (int s = 0; s < N_SERIES; s++) {
            if (!present[s]) continue;
            fill(&c, bx0 + pad, y + th / 2 - sc, bx0 + pad + sw, y + th / 2 + sc, series_col[s]);
            text(&c, bx0 + pad + sw + 6 * sc, y, series_name[s], sc, black);
            y += row;
        }
    }

    /* title: the run folder */
    char run[256];
    snprintf(run, sizeof run, "%s", metrics_path);
    char *slash = strrchr(run, '/');
    if (slash) *slash = 0; else snprintf(run, sizeof run, ".");
    snprintf(title, sizeof title, "iv2-distill loss: %s%s", run, log_y ? " (log scale)" : "");
    int tw = text_width(title, sc + 1);
    while (tw > w - 20 && strlen(title) > 4) { title[strlen(title) - 4] = 0; strcat(title, "..."); tw = text_width(title, sc + 1); }
    text(&c, (w - tw) / 2 > 4 ? (w - tw) / 2 : 4, 12, title, sc + 1, black);

    int rc = iv2_png_write(png_path, c.px, w, h);
    free(c.px);
    free(xs);
    free(ys);
    return rc;
}
