/* log.h: progress lines and JSON-lines metrics.
 *
 * Progress: on a TTY one line rewritten in place with count, rate and ETA; otherwise a plain
 * line every `interval` seconds (default 10, IV2_PROGRESS_INTERVAL overrides), so batch logs
 * stay readable. Metrics: one JSON object per line, flushed per line, each with "t" (unix
 * seconds) first. */
#ifndef IV2_LOG_H
#define IV2_LOG_H
#include <stdint.h>
#include <stdio.h>
#include "err.h"

double iv2_now(void); /* monotonic seconds */
double iv2_wall(void); /* unix time, seconds */

typedef struct iv2_progress {
    char what[64];      /* "views", "steps" */
    int64_t total;      /* 0 = unknown */
    int64_t done, start_done;
    double t0, last;
    double interval;
    int tty, printed;
} iv2_progress;

void iv2_progress_start(iv2_progress *p, const char *what, int64_t total, int64_t already_done);
/* prints when due; extra (may be NULL) is appended, e.g. "loss 0.812". */
void iv2_progress_update(iv2_progress *p, int64_t done, const char *extra);
void iv2_progress_end(iv2_progress *p, const char *extra);
double iv2_progress_rate(const iv2_progress *p); /* per second since start */

typedef struct iv2_metrics {
    FILE *f;
} iv2_metrics;
/* path NULL or "" gives a writer that drops everything. Appends when the file exists. */
int iv2_metrics_open(iv2_metrics *m, const char *path);
/* writes {"t":<now>,"event":"<event>",<fields>}; fields is a printf format for the rest of the
 * object without braces, e.g. iv2_metrics_write(m, "step", "\"step\":%d,\"loss\":%.6g", s, l). */
void iv2_metrics_write(iv2_metrics *m, const char *event, const char *fields_fmt, ...) IV2_PRINTF(3, 4);
void iv2_metrics_close(iv2_metrics *m);

/* OpenMP threads wait passively (sleep at barriers) unless the user set OMP_WAIT_POLICY: on a
 * busy machine spinning threads made steps 2-10x slower (docs/architecture.md, Conventions).
 * libgomp reads its environment when it is loaded, before main, so a setenv would be too late:
 * this re-executes the tool once (/proc/self/exe) with OMP_WAIT_POLICY=passive. It does nothing
 * when the variable is set, under valgrind (the new image would run outside it), or when the
 * exec fails. Call it first thing in a tool's main, before any thread exists. */
void iv2_omp_wait_default(char **argv);

/* JSON string escaping into buf (always NUL-terminated); returns buf. */
char *iv2_json_escape(char *buf, size_t cap, const char *s);

#endif
