/* sha256.h: the checksums iv2 computes itself: a small SHA-256 (FIPS 180-4) for manifest and
 * weight checksums (one-shot iv2_sha256(), streaming init/update/final, a file helper and hex
 * formatting), and CRC-32 (the zip/PNG polynomial) for checkpoint zips and PNG chunks. */
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

/* CRC-32 (IEEE 802.3, reflected 0xEDB88320) of n bytes, continuing from crc (0 to start). */
uint32_t iv2_crc32(const void *data, size_t n, uint32_t crc);

#endif
