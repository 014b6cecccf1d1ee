#include "log.h"
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <errno.h>

double iv2_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
double iv2_wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int progress_quiet(void) {
    const char *e = getenv("IV2_QUIET");
    return e && *e && *e != '0';
}

void iv2_progress_start(iv2_progress *p, const char *what, int64_t total, int64_t already_done) {
    memset(p, 0, sizeof *p);
    snprintf(p->what, sizeof p->what, "%s", what);
    p->total = total;
    p->done = p->start_done = already_done;
    p->t0 = p->last = iv2_now();
    p->tty = isatty(2);
    const char *iv = getenv("IV2_PROGRESS_INTERVAL");
    p->interval = iv ? atof(iv) : (p->tty ? 0.25 : 10.0);
}

double iv2_progress_rate(const iv2_progress *p) {
    double dt = iv2_now() - p->t0;
    return dt > 0 ? (double)(p->done - p->start_done) / dt : 0.0;
}

static void fmt_eta(char *buf, size_t cap, double s) {
    if (s < 0 || s > 1e8) { snprintf(buf, cap, "?"); return; }
    int h = (int)(s / 3600), m = (int)(s / 60) % 60, sec = (int)s % 60;
    if (h) snprintf(buf, cap, "%dh%02dm", h, m);
    else snprintf(buf, cap, "%dm%02ds", m, sec);
}

static void progress_print(iv2_progress *p, const char *extra, int final) {
    if (progress_quiet()) return;
    double rate = iv2_progress_rate(p);
    char eta[32] = "";
    if (p->total > 0 && rate > 0 && !final) {
        char e[24];
        fmt_eta(e, sizeof e, (p->total - p->done) / rate);
        snprintf(eta, sizeof eta, " eta %s", e);
    }
    char count[64];
    if (p->total > 0)
        snprintf(count, sizeof count, "%lld/%lld (%.1f%%)", (long long)p->done, (long long)p->total,
                 100.0 * p->done / p->total);
    else snprintf(count, sizeof count, "%lld", (long long)p->done);
    fprintf(stderr, "%s%s %s %.2f/s%s%s%s%s", p->tty ? "\r\033[K" : "", p->what, count, rate, eta,
            extra ? "  " : "", extra ? extra : "", (p->tty && !final) ? "" : "\n");
    fflush(stderr);
    p->printed = 1;
}

void iv2_progress_update(iv2_progress *p, int64_t done, const char *extra) {
    p->done = done;
    double now = iv2_now();
    if (now - p->last < p->interval) return;
    p->last = now;
    progress_print(p, extra, 0);
}

void iv2_progress_end(iv2_progress *p, const char *extra) { progress_print(p, extra, 1); }

int iv2_metrics_open(iv2_metrics *m, const char *path) {
    m->f = NULL;
    if (!path || !*path) return 0;
    m->f = fopen(path, "a");
    if (!m->f) return iv2_err("%s: cannot open metrics file: %s", path, strerror(errno));
    return 0;
}

void iv2_metrics_write(iv2_metrics *m, const char *event, const char *fields_fmt, ...) {
    if (!m || !m->f) return;
    fprintf(m->f, "{\"t\":%.3f,\"event\":\"%s\"", iv2_wall(), event);
    if (fields_fmt && *fields_fmt) {
        fputc(',', m->f);
        va_list ap;
        va_start(ap, fields_fmt);
        vfprintf(m->f, fields_fmt, ap);
        va_end(ap);
    }
    fputs("}\n", m->f);
    fflush(m->f);
}

void iv2_metrics_close(iv2_metrics *m) {
    if (m && m->f) fclose(m->f);
    if (m) m->f = NULL;
}

char *iv2_json_escape(char *buf, size_t cap, const char *s) {
    size_t o = 0;
    for (; *s && o + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { buf[o++] = '\\'; buf[o++] = c; }
        else if (c == '\n') { buf[o++] = '\\'; buf[o++] = 'n'; }
        else if (c == '\t') { buf[o++] = '\\'; buf[o++] = 't'; }
        else if (c == '\r') { buf[o++] = '\\'; buf[o++] = 'r'; }
        else if (c < 0x20) o += snprintf(buf + o, cap - o, "\\u%04x", c);
        else buf[o++] = c;
    }
    buf[o] = 0;
    return buf;
}

void iv2_omp_wait_default(char **argv) {
    if (getenv("OMP_WAIT_POLICY")) return;
    const char *pre = getenv("LD_PRELOAD");
    if (pre && strstr(pre, "vgpreload")) return;   /* valgrind's preload: stay under it */
    if (setenv("OMP_WAIT_POLICY", "passive", 1)) return;
    execv("/proc/self/exe", argv);
    /* exec failed: go on with libgomp's default; the variable still reaches child processes */
}
