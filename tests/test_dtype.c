/* test_dtype: fp32 -> bf16/fp16 round to nearest even, checked against an independent
 * reference that picks the nearest representable value by exact arithmetic in double;
 * exhaustive fp16 -> fp32 -> fp16 round trip; unaligned and saturating iv2_convert. */
#include "dtype.h"
#include "testutil.h"
#include <stdint.h>

static float bits_f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t f_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* value of a finite fp16 bit pattern from its fields; 0x7c00 stands for 2^16, the next step
 * after 65504, so rounding to it means overflow to Inf */
static double f16_value(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return (h & 0x8000) ? -v : v;
}

/* nearest fp16 by bisection over the ordered non-negative patterns 0..0x7c00, ties to even */
static uint16_t ref_f16(float f) {
    if (isnan(f)) return 0x7e00;
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    double a = fabs((double)f);
    if (a >= 65520.0) return sign | 0x7c00;  /* at or beyond the midpoint to 2^16 */
    int lo = 0, hi = 0x7c00;                 /* f16_value(lo) <= a < f16_value(hi) */
    while (hi - lo > 1) { int mid = (lo + hi) / 2; if (f16_value((uint16_t)mid) <= a) lo = mid; else hi = mid; }
    double dl = a - f16_value((uint16_t)lo), dh = f16_value((uint16_t)hi) - a;
    int pick = dl < dh ? lo : dh < dl ? hi : (lo & 1 ? hi : lo);
    return sign | (uint16_t)pick;
}

/* nearest bf16: the two neighbours are the truncation and the next pattern, compared exactly */
static double bf16_value(uint16_t h) {
    if ((h & 0x7fff) == 0x7f80) return (h & 0x8000) ? -ldexp(1, 128) : ldexp(1, 128);
    return (double)bits_f((uint32_t)h << 16);
}
static uint16_t ref_bf16(float f) {
    if (isnan(f)) return 0;  /* only NaN-ness is checked */
    uint32_t u = f_bits(f);
    if ((u & 0x7fffffff) == 0x7f800000) return (uint16_t)(u >> 16);
    uint16_t lo = (uint16_t)(u >> 16), hi = (uint16_t)(lo + 1);
    double a = fabs((double)f), dl = a - fabs(bf16_value(lo)), dh = fabs(bf16_value(hi)) - a;
    return dl < dh ? lo : dh < dl ? hi : (lo & 1 ? hi : lo);
}

static uint32_t rng = 12345;
static uint32_t next(void) { rng ^= rng << 13; rng ^= rng >> 17; rng ^= rng << 5; return rng; }

static void check_one(float f, int *bad16, int *badbf) {
    uint16_t h = iv2_f32_to_f16(f), w = ref_f16(f);
    if (isnan(f) ? !isnan(iv2_f16_to_f32(h)) : h != w) {
        if ((*bad16)++ < 5) fprintf(stderr, "f32->f16 %a (0x%08x): got 0x%04x want 0x%04x\n", f, f_bits(f), h, w);
    }
    uint16_t b = iv2_f32_to_bf16(f), rb = ref_bf16(f);
    if (isnan(f) ? !isnan(iv2_bf16_to_f32(b)) : b != rb) {
        if ((*badbf)++ < 5) fprintf(stderr, "f32->bf16 %a (0x%08x): got 0x%04x want 0x%04x\n", f, f_bits(f), b, rb);
    }
}

int main(void) {
    int bad16 = 0, badbf = 0;
    /* every float whose low 13 bits are one of the interesting cases (below / at / above the
     * half-way point of both formats), across all exponents and signs, plus random patterns */
    static const uint32_t low[] = {0x0000, 0x0001, 0x0fff, 0x1000, 0x1001, 0x1fff, 0x2000, 0x3000};
    for (uint32_t top = 0; top < (1u << 19); top++)
        for (size_t k = 0; k < sizeof low / sizeof low[0]; k++) {
            uint32_t u = top << 13 | low[k];
            check_one(bits_f(u), &bad16, &badbf);
            check_one(bits_f(u ^ 0x8000), &bad16, &badbf);  /* bit 15 flips the bf16 tie cases */
            check_one(bits_f(u | 0x7fff), &bad16, &badbf);
        }
    for (int i = 0; i < 2000000; i++) check_one(bits_f(next()), &bad16, &badbf);
    CHECK(bad16 == 0, "%d fp32->fp16 mismatches", bad16);
    CHECK(badbf == 0, "%d fp32->bf16 mismatches", badbf);

    /* hand-checked cases */
    CHECK(iv2_f32_to_f16(65504.f) == 0x7bff && iv2_f32_to_f16(65519.99f) == 0x7bff, "f16 max");
    CHECK(iv2_f32_to_f16(65520.f) == 0x7c00 && iv2_f32_to_f16(-1e9f) == 0xfc00, "f16 overflow to Inf");
    CHECK(iv2_f32_to_f16(ldexpf(1, -25)) == 0x0000 && iv2_f32_to_f16(ldexpf(1.0000001f, -25)) == 0x0001, "f16 tie to zero");
    CHECK(iv2_f32_to_f16(ldexpf(3, -25)) == 0x0002, "f16 subnormal tie to even");
    CHECK(iv2_f32_to_f16(1.0f + ldexpf(1, -11)) == 0x3c00 && iv2_f32_to_f16(1.0f + 3 * ldexpf(1, -11)) == 0x3c02, "f16 ties");
    CHECK(iv2_f32_to_bf16(1.0f + ldexpf(1, -8)) == 0x3f80 && iv2_f32_to_bf16(1.0f + 3 * ldexpf(1, -8)) == 0x3f82, "bf16 ties");
    CHECK(iv2_f32_to_bf16(bits_f(0x7f7fffff)) == 0x7f80, "bf16 overflow to Inf");
    CHECK(isnan(iv2_bf16_to_f32(iv2_f32_to_bf16(bits_f(0x7f800001)))), "bf16 keeps a signalling NaN a NaN");
    CHECK(iv2_f32_to_bf16(-0.0f) == 0x8000 && iv2_f32_to_f16(-0.0f) == 0x8000, "negative zero");

    /* exhaustive fp16 -> fp32 (against the field formula) -> fp16 round trip */
    int badrt = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = iv2_f16_to_f32((uint16_t)h);
        int e = (h >> 10) & 31;
        if (e == 31) {
            if ((h & 1023) ? !isnan(f) : !(isinf(f) && (signbit(f) != 0) == ((h & 0x8000) != 0))) badrt++;
            continue;
        }
        if ((double)f != f16_value((uint16_t)h) || iv2_f32_to_f16(f) != h) {
            if (badrt++ < 5) fprintf(stderr, "fp16 0x%04x -> %a -> 0x%04x\n", h, f, iv2_f32_to_f16(f));
        }
    }
    CHECK(badrt == 0, "%d fp16 round-trip failures", badrt);
    int badb = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = iv2_bf16_to_f32((uint16_t)h);
        if (f_bits(f) != h << 16) badb++;
        else if (!isnan(f) && iv2_f32_to_bf16(f) != h) badb++;
    }
    CHECK(badb == 0, "%d bf16 round-trip failures", badb);

    /* iv2_convert: misaligned source and destination, and the bulk paths agree with the scalar ones */
    unsigned char src[64 + 1], dst[4 * 16 + 3];
    float vals[16];
    for (int i = 0; i < 16; i++) vals[i] = (float)(i - 8) * 0.37f;
    uint16_t hv[16];
    for (int i = 0; i < 16; i++) hv[i] = iv2_f32_to_f16(vals[i]);
    memcpy(src + 1, hv, sizeof hv);
    iv2_convert(dst + 3, IV2_F32, src + 1, IV2_F16, 16);
    float got[16];
    memcpy(got, dst + 3, sizeof got);
    int badc = 0;
    for (int i = 0; i < 16; i++) badc += got[i] != iv2_f16_to_f32(hv[i]);
    CHECK(badc == 0, "unaligned f16->f32 convert");
    memcpy(src + 1, vals, sizeof vals);
    iv2_convert(dst + 1, IV2_BF16, src + 1, IV2_F32, 16);
    badc = 0;
    for (int i = 0; i < 16; i++) { uint16_t b; memcpy(&b, dst + 1 + 2 * i, 2); badc += b != iv2_f32_to_bf16(vals[i]); }
    CHECK(badc == 0, "unaligned f32->bf16 convert");
    float sat[5] = {300.f, -5.f, 1e10f, -1e10f, 2.5f};
    uint8_t u8[5];
    int32_t i32[5];
    iv2_convert(u8, IV2_U8, sat, IV2_F32, 5);
    iv2_convert(i32, IV2_I32, sat, IV2_F32, 5);
    CHECK(u8[0] == 255 && u8[1] == 0 && u8[2] == 255 && u8[3] == 0 && u8[4] == 2, "u8 saturation %d %d %d %d %d", u8[0], u8[1], u8[2], u8[3], u8[4]);
    CHECK(i32[2] == INT32_MAX && i32[3] == INT32_MIN, "i32 saturation");

    size_t sz;
    iv2_dtype t;
    CHECK(iv2_dtype_parse("BF16", &t) == 0 && t == IV2_BF16 && iv2_dtype_parse("bf16", &t) == 0 && t == IV2_BF16, "parse bf16");
    CHECK(iv2_dtype_parse("F8_E4M3", &t) == -1, "unknown dtype");
    sz = iv2_dtype_size(IV2_I64);
    CHECK(sz == 8 && iv2_dtype_size(IV2_BF16) == 2 && iv2_dtype_size(IV2_U8) == 1, "sizes");
    return test_done();
}
