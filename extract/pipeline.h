/* pipeline.h: iv2-extract's loop: manifest rows -> decode (worker threads, bounded queue) ->
 * teachers on batches of views (one thread per device) -> writer thread -> cache (batched
 * write transactions). Resumable and shardable (docs/cache.md). */
#ifndef IV2_PIPELINE_H
#define IV2_PIPELINE_H
#include <stdint.h>
#include "dtype.h"

#define IV2_EXTRACT_VERSION "iv2-extract 0.1"

typedef struct iv2_extract_opts {
    const char *manifest;
    const char *cache;
    const char *internvit;      /* weights path or preset:NAME[:seed]; NULL = not used */
    const char *videomae;
    const char *targets;        /* NULL = the recipe */
    iv2_dtype dtype;            /* storage dtype (bf16) */
    int views;                  /* views per row (1) */
    int shard_k, shard_n;       /* rows r with r % n == k (0/1) */
    const char *device;         /* "cpu" (default), "cuda", "cuda:N", or a comma list of them
                                   (one teacher set per device, e.g. "cuda:0,cuda:1", "cpu,cpu") */
    int batch_views;            /* views per teacher call (0: 1 on the CPU, 8 on CUDA) */
    int threads;                /* decode worker threads (2) */
    int compute_threads;        /* CPU backend threads per device, 0 = cores left by the decoders,
                                   shared among the devices (>= 1) */
    uint64_t seed;              /* sampling seed (0) */
    int deterministic;          /* segment-middle frames, centre crop, no flip */
    int no_flip;
    int batch;                  /* views per write transaction (8) */
    int queue;                  /* decoded views waiting for the teachers (0: 2 * threads, at least every
                                   device's next batch) */
    int retry_errors;           /* rows already in `errors` are tried again (0: skipped) */
    int64_t max_views;          /* stop after about this many new views, whole rows (0 = all) */
    double time_limit;          /* seconds per file for open + index and per clip (60; 0 = none): a
                                   hung network mount or a pathological file is recorded and skipped */
    const char *metrics;        /* JSON-lines file, NULL = none */
} iv2_extract_opts;

typedef struct iv2_extract_stats {
    int64_t rows_done, rows_failed, rows_skipped;   /* skipped: already stored (or already failed) */
    int64_t rows_skipped_failed;                     /* of those skipped, the ones already failed */
    int64_t views_done;
    double seconds, t_decode, t_teachers, t_write;  /* t_decode summed over workers, t_teachers
                                                       over devices; t_write: the writer's commits */
    double t_encode;            /* storage-dtype encoding on the device threads (summed) */
    int devices, batch_views;
    double bytes_per_view;
} iv2_extract_stats;

void iv2_extract_opts_default(iv2_extract_opts *o);
/* Run; prints the summary line unless quiet. -1 on a fatal error (bad options, cache refused,
 * disk full); bad rows are not fatal. */
int iv2_extract_run(const iv2_extract_opts *o, iv2_extract_stats *st);

#endif
