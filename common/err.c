#include "err.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ERRMAX 8192 /* a path (PATH_MAX 4096) with room for its context and the reason */
static _Thread_local char errbuf[ERRMAX];
static int quiet = -1;

/* On a terminal a progress line (log.h) may hold the cursor: a message starts a clean line
 * instead of running on after its "eta" (clearing an empty line costs nothing) */
static void line_start(void) {
    static int tty = -1;
    if (tty < 0) tty = isatty(2);
    if (tty) fputs("\r\033[K", stderr);
}

int iv2_err(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, ERRMAX, fmt, ap);
    va_end(ap);
    return -1;
}

int iv2_err_ctx(const char *fmt, ...) {
    char ctx[ERRMAX], old[ERRMAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, ERRMAX, fmt, ap);
    va_end(ap);
    memcpy(old, errbuf, ERRMAX);
    size_t n = strlen(ctx);
    if (n > ERRMAX - 3) n = ERRMAX - 3;
    memcpy(errbuf, ctx, n);
    if (old[0]) {
        memcpy(errbuf + n, ": ", 2);
        size_t m = strlen(old);
        if (n + 2 + m > ERRMAX - 1) m = ERRMAX - 1 - n - 2;
        memcpy(errbuf + n + 2, old, m);
        errbuf[n + 2 + m] = 0;
    } else errbuf[n] = 0;
    return -1;
}

const char *iv2_errmsg(void) { return errbuf; }
void iv2_err_clear(void) { errbuf[0] = 0; }

void iv2_die(const char *tool) {
    line_start();
    fprintf(stderr, "%s: error: %s\n", tool, errbuf[0] ? errbuf : "unknown error");
    exit(1);
}

void iv2_panic(const char *fmt, ...) {
    va_list ap;
    line_start();
    fprintf(stderr, "iv2: fatal: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    abort();
}

void *iv2_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) iv2_panic("out of memory allocating %zu bytes", n);
    return p;
}
void *iv2_calloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) iv2_panic("out of memory allocating %zu x %zu bytes", n, size);
    return p;
}
void *iv2_realloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) iv2_panic("out of memory reallocating %zu bytes", n);
    return q;
}
char *iv2_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = iv2_malloc(n);
    memcpy(d, s, n);
    return d;
}

int iv2_same_file(const char *a, const char *b) {
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

void iv2_set_quiet(int q) { quiet = q; }
static int is_quiet(void) {
    if (quiet < 0) {
        const char *e = getenv("IV2_QUIET");
        quiet = e && *e && *e != '0';
    }
    return quiet;
}
void iv2_info(const char *fmt, ...) {
    if (is_quiet()) return;
    va_list ap;
    line_start();
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}
void iv2_warn(const char *fmt, ...) {
    va_list ap;
    line_start();
    fprintf(stderr, "warning: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

uint64_t iv2_hash64(const void *data, size_t n) {
    const unsigned char *p = data;
    uint64_t h = 1469598103934665603ULL, w;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) { memcpy(&w, p + i, 8); h ^= w; h *= 1099511628211ULL; h ^= h >> 29; }
    for (; i < n; i++) { h ^= p[i]; h *= 1099511628211ULL; }
    return h;
}
