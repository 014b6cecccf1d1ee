/* testutil.h: the tiny harness every C test uses.
 * CHECK(cond, fmt, ...) records a failure and goes on; a test's main returns test_done(),
 * which prints the summary and returns 0, 1, or 77 (skip) if test_skip() was called. */
#ifndef IV2_TESTUTIL_H
#define IV2_TESTUTIL_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int t_checks, t_fails, t_skipped;

#define CHECK(cond, ...) do { t_checks++; if (!(cond)) { t_fails++; \
    fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

/* relative-or-absolute closeness of two float arrays; prints the worst element. */
static inline int t_allclose(const char *what, const float *got, const float *want, size_t n, float rtol, float atol) {
    size_t worst = 0; double worst_ex = -1; int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]), lim = atol + rtol * fabs(want[i]);
        if (!(d <= lim)) bad++;
        double ex = d - lim;
        if (ex > worst_ex || isnan(got[i])) { worst_ex = ex; worst = i; }
    }
    t_checks++;
    if (bad) {
        t_fails++;
        fprintf(stderr, "%s: %d of %zu elements off; worst [%zu] got %.8g want %.8g (rtol %g atol %g)\n",
                what, bad, n, worst, got[worst], want[worst], rtol, atol);
    }
    return bad == 0;
}

/* path under ../shared (IV2_SHARED), or NULL when that folder is absent. */
static inline const char *t_shared(const char *rel, char *buf, size_t cap) {
    const char *base = getenv("IV2_SHARED");
    if (!base) base = "../shared";
    snprintf(buf, cap, "%s/%s", base, rel);
    return access(buf, R_OK) == 0 ? buf : NULL;
}

/* lines of a text file (each under 64 KiB) holding `what`; 0 when it cannot be read */
static inline int t_count_lines(const char *path, const char *what) {
    FILE *f = fopen(path, "r");
    static char line[65536];
    int n = 0;
    while (f && fgets(line, sizeof line, f)) n += strstr(line, what) != NULL;
    if (f) fclose(f);
    return n;
}

static inline void test_skip(const char *why) { t_skipped = 1; printf("skipped: %s\n", why); }

static inline int test_done(void) {
    if (t_skipped && t_fails == 0) return 77;
    printf("%d checks, %d failed\n", t_checks, t_fails);
    return t_fails ? 1 : 0;
}
#endif
