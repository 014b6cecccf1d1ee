/* test_sha256: FIPS 180-4 test vectors, streaming in uneven pieces, and the sha256sum CLI
 * as an independent oracle on a random file. */
#include "err.h"
#include "sha256.h"
#include "testutil.h"

static void hex_of(const void *p, size_t n, char hex[65]) {
    uint8_t d[32];
    iv2_sha256(p, n, d);
    iv2_sha256_hex(d, hex);
}

int main(void) {
    char hex[65];
    hex_of("", 0, hex);
    CHECK(!strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"), "empty: %s", hex);
    hex_of("abc", 3, hex);
    CHECK(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"), "abc: %s", hex);
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"; /* 56 bytes: padding spills a block */
    hex_of(two, strlen(two), hex);
    CHECK(!strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"), "448-bit: %s", hex);

    /* one million 'a', fed in uneven pieces */
    char *a = malloc(1000000);
    memset(a, 'a', 1000000);
    iv2_sha256_ctx c;
    iv2_sha256_init(&c);
    size_t at = 0, step = 1;
    while (at < 1000000) {
        size_t k = step < 1000000 - at ? step : 1000000 - at;
        iv2_sha256_update(&c, a + at, k);
        at += k;
        step = step * 7 % 1000 + 1;
    }
    uint8_t d[32];
    iv2_sha256_final(&c, d);
    iv2_sha256_hex(d, hex);
    CHECK(!strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"), "million a: %s", hex);
    free(a);

    /* every length 0..200 in one piece equals byte-at-a-time */
    unsigned char buf[200];
    for (int i = 0; i < 200; i++) buf[i] = (unsigned char)(i * 37 + 11);
    int bad = 0;
    for (size_t n = 0; n <= 200; n++) {
        uint8_t d1[32], d2[32];
        iv2_sha256(buf, n, d1);
        iv2_sha256_init(&c);
        for (size_t i = 0; i < n; i++) iv2_sha256_update(&c, buf + i, 1);
        iv2_sha256_final(&c, d2);
        bad += memcmp(d1, d2, 32) != 0;
    }
    CHECK(bad == 0, "%d lengths differ between one piece and bytewise", bad);

    /* the file helper against sha256sum */
    char path[] = "/tmp/iv2_test_sha_XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "wb");
    uint32_t x = 99;
    for (int i = 0; i < 300001; i++) { x = x * 1664525u + 1013904223u; fputc((int)(x >> 24), f); }
    fclose(f);
    CHECK(iv2_sha256_file(path, d) == 0, "file: %s", iv2_errmsg());
    iv2_sha256_hex(d, hex);
    char cmd[128], want[128] = "";
    snprintf(cmd, sizeof cmd, "sha256sum %s 2>/dev/null", path);
    FILE *p = popen(cmd, "r");
    if (p && fgets(want, sizeof want, p) && strlen(want) >= 64) {
        want[64] = 0;
        CHECK(!strcmp(hex, want), "file: %s, sha256sum: %s", hex, want);
    } else printf("sha256sum not available; oracle check left out\n");
    if (p) pclose(p);
    /* lengths around the padding boundaries (55/56 and 119/120 bytes) against sha256sum */
    static const int lens[] = {1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        f = fopen(path, "wb");
        fwrite(buf, 1, (size_t)lens[i], f);
        fclose(f);
        iv2_sha256(buf, (size_t)lens[i], d);
        iv2_sha256_hex(d, hex);
        p = popen(cmd, "r");
        if (p && fgets(want, sizeof want, p) && strlen(want) >= 64) {
            want[64] = 0;
            CHECK(!strcmp(hex, want), "%d bytes: %s, sha256sum: %s", lens[i], hex, want);
        }
        if (p) pclose(p);
    }
    unlink(path);
    CHECK(iv2_sha256_file("/nonexistent/file", d) == -1 && strstr(iv2_errmsg(), "/nonexistent/file"), "missing file");
    return test_done();
}
