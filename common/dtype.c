#include "dtype.h"
#include <math.h>
#include <string.h>
#include <strings.h>

static const struct { const char *name; size_t size; } DT[IV2_DTYPE_COUNT] = {
    [IV2_F32] = {"F32", 4}, [IV2_F16] = {"F16", 2}, [IV2_BF16] = {"BF16", 2}, [IV2_F64] = {"F64", 8},
    [IV2_I8] = {"I8", 1},   [IV2_U8] = {"U8", 1},   [IV2_I16] = {"I16", 2},   [IV2_U16] = {"U16", 2},
    [IV2_I32] = {"I32", 4}, [IV2_U32] = {"U32", 4}, [IV2_I64] = {"I64", 8},   [IV2_U64] = {"U64", 8},
    [IV2_BOOL] = {"BOOL", 1},
};

size_t iv2_dtype_size(iv2_dtype t) { return (unsigned)t < IV2_DTYPE_COUNT ? DT[t].size : 0; }
const char *iv2_dtype_name(iv2_dtype t) { return (unsigned)t < IV2_DTYPE_COUNT ? DT[t].name : "?"; }
int iv2_dtype_is_float(iv2_dtype t) { return t == IV2_F32 || t == IV2_F16 || t == IV2_BF16 || t == IV2_F64; }

int iv2_dtype_parse(const char *name, iv2_dtype *out) {
    for (int i = 0; i < IV2_DTYPE_COUNT; i++)
        if (!strcmp(name, DT[i].name)) { *out = (iv2_dtype)i; return 0; }
    static const struct { const char *alias; iv2_dtype t; } AL[] = {
        {"fp32", IV2_F32}, {"float32", IV2_F32}, {"f32", IV2_F32}, {"fp16", IV2_F16}, {"float16", IV2_F16},
        {"f16", IV2_F16}, {"half", IV2_F16}, {"bf16", IV2_BF16}, {"bfloat16", IV2_BF16}, {"int8", IV2_I8},
        {"i8", IV2_I8}, {"uint8", IV2_U8}, {"u8", IV2_U8}, {"int32", IV2_I32}, {"int64", IV2_I64},
    };
    for (size_t i = 0; i < sizeof AL / sizeof AL[0]; i++)
        if (!strcasecmp(name, AL[i].alias)) { *out = AL[i].t; return 0; }
    return -1;
}

uint16_t iv2_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1); /* round to nearest even */
    return (uint16_t)(u >> 16);
}

float iv2_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t iv2_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);        /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);       /* rounds to >= 65520: Inf */
    if (a < 0x38800000u) {                                         /* fp16 subnormal or zero */
        if (a < 0x33000000u) return (uint16_t)sign;                /* < 2^-25: rounds to 0 */
        uint32_t mant = (a & 0x7fffffu) | 0x800000u;
        int shift = 126 - (int)(a >> 23);                          /* bits to drop: value = mant * 2^(e-150), unit 2^-24 */
        uint32_t r = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ((a >> 13) - (112u << 10));                       /* rebias exponent 127 -> 15 */
    uint32_t rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1))) r++;
    return (uint16_t)(sign | r);
}

float iv2_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ffu, u;
    if (e == 0) {
        if (m == 0) u = sign;
        else { /* subnormal: value = m * 2^-24 */
            float f = (float)m * 5.9604644775390625e-08f;
            memcpy(&u, &f, 4);
            u |= sign;
        }
    } else if (e == 31) u = sign | 0x7f800000u | (m << 13);
    else u = sign | ((e + 112) << 23) | (m << 13);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void iv2_f32_to_bf16_n(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = iv2_f32_to_bf16(src[i]);
}
void iv2_bf16_to_f32_n(float *dst, const uint16_t *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = iv2_bf16_to_f32(src[i]);
}
void iv2_f32_to_f16_n(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = iv2_f32_to_f16(src[i]);
}
void iv2_f16_to_f32_n(float *dst, const uint16_t *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = iv2_f16_to_f32(src[i]);
}

static double load_one(const unsigned char *p, iv2_dtype t) {
    union { float f; double d; uint16_t u16; int16_t i16; int32_t i32; uint32_t u32; int64_t i64; uint64_t u64; int8_t i8; uint8_t u8; } v;
    memcpy(&v, p, iv2_dtype_size(t));
    switch (t) {
    case IV2_F32: return v.f;
    case IV2_F64: return v.d;
    case IV2_F16: return iv2_f16_to_f32(v.u16);
    case IV2_BF16: return iv2_bf16_to_f32(v.u16);
    case IV2_I8: return v.i8;
    case IV2_U8: case IV2_BOOL: return v.u8;
    case IV2_I16: return v.i16;
    case IV2_U16: return v.u16;
    case IV2_I32: return v.i32;
    case IV2_U32: return v.u32;
    case IV2_I64: return (double)v.i64;
    case IV2_U64: return (double)v.u64;
    default: return 0;
    }
}

static double clampd(double x, double lo, double hi) { return isnan(x) ? 0 : x < lo ? lo : x > hi ? hi : x; }

static void store_one(unsigned char *p, iv2_dtype t, double x) {
    union { float f; double d; uint16_t u16; int16_t i16; int32_t i32; uint32_t u32; int64_t i64; uint64_t u64; int8_t i8; uint8_t u8; } v;
    switch (t) {
    case IV2_F32: v.f = (float)x; break;
    case IV2_F64: v.d = x; break;
    case IV2_F16: v.u16 = iv2_f32_to_f16((float)x); break;
    case IV2_BF16: v.u16 = iv2_f32_to_bf16((float)x); break;
    case IV2_I8: v.i8 = (int8_t)lrint(clampd(x, -128, 127)); break;
    case IV2_U8: v.u8 = (uint8_t)lrint(clampd(x, 0, 255)); break;
    case IV2_BOOL: v.u8 = x != 0; break;
    case IV2_I16: v.i16 = (int16_t)lrint(clampd(x, -32768, 32767)); break;
    case IV2_U16: v.u16 = (uint16_t)lrint(clampd(x, 0, 65535)); break;
    case IV2_I32: v.i32 = (int32_t)llrint(clampd(x, -2147483648.0, 2147483647.0)); break;
    case IV2_U32: v.u32 = (uint32_t)llrint(clampd(x, 0, 4294967295.0)); break;
    case IV2_I64: v.i64 = (int64_t)llrint(clampd(x, -9.2e18, 9.2e18)); break;
    case IV2_U64: v.u64 = (uint64_t)clampd(x, 0, 1.8e19); break;
    default: return;
    }
    memcpy(p, &v, iv2_dtype_size(t));
}

void iv2_convert(void *dst, iv2_dtype dt, const void *src, iv2_dtype st, size_t n) {
    size_t ds = iv2_dtype_size(dt), ss = iv2_dtype_size(st);
    unsigned char *d = dst;
    const unsigned char *s = src;
    if (dt == st) { memmove(dst, src, n * ds); return; }
    if (st == IV2_F32 && dt == IV2_BF16 && ((uintptr_t)src & 3) == 0 && ((uintptr_t)dst & 1) == 0) {
        iv2_f32_to_bf16_n(dst, src, n); return;
    }
    if (st == IV2_BF16 && dt == IV2_F32 && ((uintptr_t)src & 1) == 0 && ((uintptr_t)dst & 3) == 0) {
        iv2_bf16_to_f32_n(dst, src, n); return;
    }
    if (st == IV2_F16 && dt == IV2_F32 && ((uintptr_t)src & 1) == 0 && ((uintptr_t)dst & 3) == 0) {
        iv2_f16_to_f32_n(dst, src, n); return;
    }
    if (st == IV2_F32 && dt == IV2_F16 && ((uintptr_t)src & 3) == 0 && ((uintptr_t)dst & 1) == 0) {
        iv2_f32_to_f16_n(dst, src, n); return;
    }
    for (size_t i = 0; i < n; i++) store_one(d + i * ds, dt, load_one(s + i * ss, st));
}
