/* sha256.h: a small SHA-256 (FIPS 180-4) for manifest and weight checksums.
 * One-shot iv2_sha256(), streaming init/update/final, a file helper and hex formatting. */
#ifndef IV2_SHA256_H
#define IV2_SHA256_H
#include <stddef.h>
#include <stdint.h>

typedef struct iv2_sha256_ctx {
    uint32_t h[8];
    uint64_t nbytes;       /* total bytes fed so far */
    uint8_t buf[64];       /* pending partial block */
    size_t nbuf;
} iv2_sha256_ctx;

void iv2_sha256_init(iv2_sha256_ctx *c);
void iv2_sha256_update(iv2_sha256_ctx *c, const void *data, size_t n);
void iv2_sha256_final(iv2_sha256_ctx *c, uint8_t out[32]);
void iv2_sha256(const void *data, size_t n, uint8_t out[32]);
/* digest of a file's bytes; -1 (with iv2_err) if it cannot be read. */
int iv2_sha256_file(const char *path, uint8_t out[32]);
/* 64 lower-case hex digits and a terminating NUL into hex[65]. */
void iv2_sha256_hex(const uint8_t d[32], char hex[65]);

#endif
