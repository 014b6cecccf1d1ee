/* dtype.h: element types and the one place where fp32 <-> bf16 <-> fp16 conversion lives
 * (round to nearest even; NaN stays NaN; fp16 overflow goes to Inf, subnormals kept). */
#ifndef IV2_DTYPE_H
#define IV2_DTYPE_H
#include <stddef.h>
#include <stdint.h>

typedef enum {
    IV2_F32 = 0, IV2_F16, IV2_BF16, IV2_F64,
    IV2_I8, IV2_U8, IV2_I16, IV2_U16, IV2_I32, IV2_U32, IV2_I64, IV2_U64, IV2_BOOL,
    IV2_DTYPE_COUNT
} iv2_dtype;

size_t iv2_dtype_size(iv2_dtype t);
const char *iv2_dtype_name(iv2_dtype t);         /* safetensors spelling: "F32", "BF16", ... */
int iv2_dtype_parse(const char *name, iv2_dtype *out); /* accepts safetensors names and
                                                          lower-case aliases "fp32","bf16","fp16","int8"; -1 if unknown */
int iv2_dtype_is_float(iv2_dtype t);

uint16_t iv2_f32_to_bf16(float f);
float iv2_bf16_to_f32(uint16_t h);
uint16_t iv2_f32_to_f16(float f);
float iv2_f16_to_f32(uint16_t h);

/* Convert n elements; src and dst may be unaligned (memcpy per element); any dtype to any
 * dtype through double (integers saturate on narrowing). */
void iv2_convert(void *dst, iv2_dtype dt, const void *src, iv2_dtype st, size_t n);
/* fast paths for the common cases */
void iv2_f32_to_bf16_n(uint16_t *dst, const float *src, size_t n);
void iv2_bf16_to_f32_n(float *dst, const uint16_t *src, size_t n);
void iv2_f32_to_f16_n(uint16_t *dst, const float *src, size_t n);
void iv2_f16_to_f32_n(float *dst, const uint16_t *src, size_t n);

#endif
