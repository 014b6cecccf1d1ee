/* libFuzzer target: the manifest line parser, and the whole-file scanner (BOM, CRLF, blank
 * and '#' lines, duplicate ids, empty file) through an in-memory file. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "manifest.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = (const char *)data, *end = p + size;
    while (p < end) {                       /* each line on its own */
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        iv2_row r;
        if (iv2_manifest_parse_line(p, len, "base", &r) == 0) iv2_row_free(&r);
        p += len + 1;
    }
    static int fd = -1;                     /* the same bytes as a file */
    if (fd < 0) fd = memfd_create("fuzz_manifest", 0);
    if (fd < 0 || ftruncate(fd, 0) || pwrite(fd, data, size, 0) != (ssize_t)size) return 0;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    iv2_manifest m;
    if (iv2_manifest_load(&m, path) == 0) iv2_manifest_free(&m);
    FILE *devnull = fopen("/dev/null", "w");
    iv2_manifest_check(path, devnull);
    fclose(devnull);
    return 0;
}
