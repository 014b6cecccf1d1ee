/* decode_sample.c: the pure parts of clip sampling: seeded choices of frames, crop and flip,
 * and the PIL-exact bilinear resize. No FFmpeg here. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "decode.h"
#include "err.h"

/* ---- reproducible randomness: splitmix64 streams keyed by (seed, row, view, purpose) ---- */

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

enum { SALT_FRAMES = 1, SALT_CROP = 2 };

static uint64_t view_state(uint64_t seed, int64_t row, int view, uint64_t salt) {
    uint64_t s = seed ^ (salt * 0xD1B54A32D192ED03ull);
    s = splitmix64(&s) ^ (uint64_t)row;
    s = splitmix64(&s) ^ (uint64_t)(int64_t)view;
    return splitmix64(&s);
}

/* uniform in [0, n), n > 0 (modulo bias below 2^-40 for any n we use) */
static int64_t rand_below(uint64_t *s, int64_t n) { return (int64_t)(splitmix64(s) % (uint64_t)n); }

void iv2_sample_indices(int64_t n, int num_frames, int deterministic, uint64_t seed, int64_t row, int view,
                        int64_t *out) {
    int64_t avg = n / num_frames;
    uint64_t s = view_state(seed, row, view, SALT_FRAMES);
    for (int i = 0; i < num_frames; i++) {
        if (deterministic || avg == 0)
            /* the middle of equal real-valued segments: int(tick/2 + tick*i), tick = n/num_frames
             * (also repeats frames evenly when n < num_frames) */
            out[i] = ((2 * (int64_t)i + 1) * n) / (2 * (int64_t)num_frames);
        else
            /* the recipe's TSN training draw: segments of avg = n // num_frames frames, one random
             * frame in each (0-based, i.e. without decord's -1; docs/decoding.md) */
            out[i] = i * avg + rand_below(&s, avg);
    }
}

/* GroupMultiScaleCrop.fill_fix_offset with more_fix_crop: 13 positions, Python floor division. */
static int64_t floordiv(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

static void fix_offset(int k, int image_w, int image_h, int crop_w, int crop_h, int *x, int *y) {
    static const int8_t pos[13][2] = {{0, 0}, {4, 0}, {0, 4}, {4, 4}, {2, 2}, {0, 2}, {4, 2},
                                      {2, 4}, {2, 0}, {1, 1}, {3, 1}, {1, 3}, {3, 3}};
    int64_t ws = floordiv(image_w - crop_w, 4), hs = floordiv(image_h - crop_h, 4);
    *x = (int)(pos[k][0] * ws);
    *y = (int)(pos[k][1] * hs);
}

void iv2_sample_crop(int src_w, int src_h, int size, int deterministic, int flip_allowed, uint64_t seed, int64_t row,
                     int view, int *x, int *y, int *w, int *h, int *flip) {
    static const double scales[4] = {1, .875, .75, .66};
    int base = src_w < src_h ? src_w : src_h, crop[4];
    for (int i = 0; i < 4; i++) {
        crop[i] = (int)(base * scales[i]);
        if (abs(crop[i] - size) < 3) crop[i] = size; /* the recipe snaps sizes within 3 px */
    }
    if (deterministic) {
        *w = *h = crop[0];
        fix_offset(4, src_w, src_h, *w, *h, x, y); /* centre */
        *flip = 0;
        return;
    }
    /* (w, h) pairs in the recipe's order: h index i outer, w index j inner, |i - j| <= 1 */
    int pw[16], ph[16], np = 0;
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            if (abs(i - j) <= 1) pw[np] = crop[j], ph[np] = crop[i], np++;
    uint64_t s = view_state(seed, row, view, SALT_CROP);
    int p = (int)rand_below(&s, np);
    int k = (int)rand_below(&s, 13);
    int f = (int)rand_below(&s, 2);
    *w = pw[p];
    *h = ph[p];
    fix_offset(k, src_w, src_h, *w, *h, x, y);
    *flip = flip_allowed ? f : 0;
}

/* ---- PIL's Image.resize(BILINEAR) (Resample.c): a triangle filter widened by the downscale
 * factor, coefficients in 22-bit fixed point, horizontal pass first into a uint8 image, then the
 * vertical pass; a pass whose size does not change is skipped. ---- */

#define PIL_BITS 22

typedef struct pil_coeffs {
    int ksize;
    int *bounds; /* [out][2]: first input, count */
    int32_t *k;  /* [out][ksize] */
} pil_coeffs;

static void pil_precompute(pil_coeffs *c, int in_size, int out_size) {
    double scale = (double)in_size / out_size, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * filterscale;
    c->ksize = (int)ceil(support) * 2 + 1;
    c->bounds = iv2_malloc(sizeof(int) * 2 * (size_t)out_size);
    c->k = iv2_calloc((size_t)out_size * c->ksize, sizeof(int32_t));
    double *kd = iv2_malloc(sizeof(double) * c->ksize);
    for (int xx = 0; xx < out_size; xx++) {
        double center = (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            double t = fabs((x + xmin - center + 0.5) * ss);
            kd[x] = t < 1.0 ? 1.0 - t : 0.0;
            ww += kd[x];
        }
        for (int x = 0; x < xmax; x++) {
            double v = ww != 0.0 ? kd[x] / ww : kd[x];
            c->k[(size_t)xx * c->ksize + x] = (int32_t)(v < 0 ? -0.5 + v * (1 << PIL_BITS) : 0.5 + v * (1 << PIL_BITS));
        }
        c->bounds[2 * xx] = xmin;
        c->bounds[2 * xx + 1] = xmax;
    }
    free(kd);
}

static void pil_free(pil_coeffs *c) { free(c->bounds); free(c->k); }

static inline uint8_t clip8(int32_t v) {
    if (v >= (1 << PIL_BITS << 8)) return 255;
    if (v <= 0) return 0;
    return (uint8_t)(v >> PIL_BITS);
}

/* rows [y0, y0 + rows) of src (sw wide) -> out (dw wide, rows rows) */
static void pil_horizontal(const uint8_t *src, int sstride, int y0, int rows, const pil_coeffs *c, uint8_t *out,
                           int dw) {
    for (int y = 0; y < rows; y++) {
        const uint8_t *in = src + (size_t)(y0 + y) * sstride;
        uint8_t *o = out + (size_t)y * dw * 3;
        for (int xx = 0; xx < dw; xx++) {
            int xmin = c->bounds[2 * xx], xmax = c->bounds[2 * xx + 1];
            const int32_t *k = c->k + (size_t)xx * c->ksize;
            int32_t s0 = 1 << (PIL_BITS - 1), s1 = s0, s2 = s0;
            for (int x = 0; x < xmax; x++) {
                const uint8_t *p = in + (size_t)(x + xmin) * 3;
                s0 += p[0] * k[x], s1 += p[1] * k[x], s2 += p[2] * k[x];
            }
            o[3 * xx] = clip8(s0), o[3 * xx + 1] = clip8(s1), o[3 * xx + 2] = clip8(s2);
        }
    }
}

static void pil_vertical(const uint8_t *src, int sstride, int w, const pil_coeffs *c, int y_shift, uint8_t *out,
                         int dh) {
    int32_t *acc = iv2_malloc(sizeof(int32_t) * 3 * (size_t)w);
    for (int yy = 0; yy < dh; yy++) {
        int ymin = c->bounds[2 * yy] - y_shift, ymax = c->bounds[2 * yy + 1];
        const int32_t *k = c->k + (size_t)yy * c->ksize;
        for (int i = 0; i < 3 * w; i++) acc[i] = 1 << (PIL_BITS - 1);
        for (int y = 0; y < ymax; y++) {
            const uint8_t *in = src + (size_t)(y + ymin) * sstride;
            int32_t ky = k[y];
            for (int i = 0; i < 3 * w; i++) acc[i] += in[i] * ky;
        }
        uint8_t *o = out + (size_t)yy * w * 3;
        for (int i = 0; i < 3 * w; i++) o[i] = clip8(acc[i]);
    }
    free(acc);
}

/* PIL resize of a packed RGB24 w x h image (stride sstride) to dw x dh. */
static void pil_resize(const uint8_t *src, int sstride, int w, int h, uint8_t *dst, int dw, int dh) {
    int need_h = dw != w, need_v = dh != h;
    pil_coeffs ch = {0}, cv = {0};
    pil_precompute(&cv, h, dh);
    const uint8_t *img = src;
    int istride = sstride;
    uint8_t *tmp = NULL;
    int y_first = 0;
    if (need_h) {
        pil_precompute(&ch, w, dw);
        int y_last = h;
        if (need_v) {
            y_first = cv.bounds[0];
            y_last = cv.bounds[2 * dh - 2] + cv.bounds[2 * dh - 1];
        }
        tmp = iv2_malloc((size_t)dw * 3 * (y_last - y_first));
        pil_horizontal(src, sstride, y_first, y_last - y_first, &ch, need_v ? tmp : dst, dw);
        img = tmp, istride = dw * 3;
    }
    if (need_v) pil_vertical(img, istride, dw, &cv, y_first, dst, dh);
    else if (!need_h)
        for (int y = 0; y < h; y++) memcpy(dst + (size_t)y * dw * 3, src + (size_t)y * sstride, (size_t)dw * 3);
    free(tmp);
    pil_free(&ch);
    pil_free(&cv);
}

void iv2_resize_bilinear(const uint8_t *src, int sw, int sh, int x, int y, int w, int h, uint8_t *dst, int dw, int dh,
                         int flip) {
    iv2_resize_bilinear_stride(src, sw * 3, sw, sh, x, y, w, h, dst, dw, dh, flip);
}

void iv2_resize_bilinear_stride(const uint8_t *src, int sstride, int sw, int sh, int x, int y, int w, int h,
                                uint8_t *dst, int dw, int dh, int flip) {
    /* PIL's crop: a w x h image, black where the box leaves the source */
    const uint8_t *box;
    uint8_t *crop = NULL;
    int stride = sstride;
    if (x >= 0 && y >= 0 && x + w <= sw && y + h <= sh) {
        box = src + (size_t)y * stride + (size_t)x * 3;
    } else {
        crop = iv2_calloc((size_t)w * h, 3);
        for (int r = 0; r < h; r++) {
            int sy = y + r;
            if (sy < 0 || sy >= sh) continue;
            int x0 = x < 0 ? -x : 0, x1 = x + w > sw ? sw - x : w;
            if (x1 > x0) memcpy(crop + ((size_t)r * w + x0) * 3, src + (size_t)sy * stride + (size_t)(x + x0) * 3,
                                (size_t)(x1 - x0) * 3);
        }
        box = crop, stride = w * 3;
    }
    pil_resize(box, stride, w, h, dst, dw, dh);
    free(crop);
    if (flip) /* GroupRandomHorizontalFlip after the resize */
        for (int r = 0; r < dh; r++) {
            uint8_t *row = dst + (size_t)r * dw * 3;
            for (int a = 0, b = dw - 1; a < b; a++, b--)
                for (int c = 0; c < 3; c++) {
                    uint8_t t = row[3 * a + c];
                    row[3 * a + c] = row[3 * b + c], row[3 * b + c] = t;
                }
        }
}
