/* extract_main.c: bin/iv2-extract (run the teachers once, cache frames and targets). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "decode.h"
#include "dtype.h"
#include "err.h"
#include "log.h"
#include "pipeline.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: iv2-extract --manifest M.jsonl --cache DIR --teacher internvit=W --teacher videomae=W [options]\n"
            "       iv2-extract decode ...   (sample one row's frames; see iv2-extract decode --help)\n"
            "\n"
            "For each manifest row and view: sample 16 frames, run VideoMAE on all 16 and InternViT on the\n"
            "8 even ones, store the student's 8 frames and one value per target in the LMDB cache DIR.\n"
            "A rerun resumes (stored views are skipped); a bad row goes to the cache's errors.\n"
            "Exit status: 0 when the rows are done or recorded as failed, 1 on an error that stops the\n"
            "run, 3 when every row failed, none stored (a missing mount, a wrong path prefix).\n"
            "\n"
            "  --teacher NAME=W     NAME internvit or videomae; W a safetensors file or preset:PRESET[:seed][:{json}]\n"
            "                       (random weights, e.g. preset:internvit-tiny:1, preset:videomae-tiny:2:{\"img\":112})\n"
            "  --targets LIST       clip_bK[-L], clip_pool, clip_attn, mae_bK[-L], comma-separated\n"
            "                       (default: the recipe = last 6 InternViT blocks, pool, attention, last 4 VideoMAE)\n"
            "  --views K            views per row (1)\n"
            "  --dtype T            storage dtype: bf16 (default), fp16, fp32, int8 (per-token scale)\n"
            "  --shard k/N          only rows r with r mod N = k (0/1)\n"
            "  --device D           cpu (default), cuda, cuda:N, or a comma list: one teacher set per device\n"
            "                       on its own thread, e.g. cuda:0,cuda:1 (or cpu,cpu); --devices is the same\n"
            "  --batch-views B      views per teacher call: InternViT on 8B frames, VideoMAE on B clips\n"
            "                       (default 1 on the CPU, 8 on CUDA)\n"
            "  --threads N          decode worker threads (2)\n"
            "  --compute-threads N  CPU backend threads per device (default: the cores left by the decode\n"
            "                       threads, shared among the devices, at least 1)\n"
            "  --seed S             sampling seed (0)\n"
            "  --deterministic      segment-middle frames, centre crop, no flip\n"
            "  --no-flip            no random flips\n"
            "  --batch N            views per write transaction (8)\n"
            "  --queue N            decoded views waiting for the teachers (2 x threads, at least\n"
            "                       batch-views x devices)\n"
            "  --retry-errors       try rows recorded in errors again (default: skip them)\n"
            "  --max-views N        stop after about N new views (whole rows)\n"
            "  --time-limit S       seconds per video to open and index it, and again per clip (60; 0 =\n"
            "                       none); a video over it is recorded in errors and skipped\n"
            "  --metrics F.jsonl    JSON-lines metrics, appended: start, one line per write and per failed\n"
            "                       row, summary and storage (or failed); manifest_grew when rows were appended\n"
            "Environment: IV2_CACHE_MAX_MAP caps the LMDB map (bytes); IV2_QUIET=1 silences progress;\n"
            "IV2_PROGRESS_INTERVAL=S a progress line every S seconds (0.25 on a terminal, else 10).\n");
}

static int parse_int(const char *flag, const char *s, long lo, long hi, long *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < lo || v > hi) return iv2_err("%s %s: want an integer in [%ld, %ld]", flag, s, lo, hi);
    *out = v;
    return 0;
}

int main(int argc, char **argv) {
    iv2_omp_wait_default(argv);   /* OMP_WAIT_POLICY=passive unless set (log.h) */
    if (argc > 1 && !strcmp(argv[1], "decode")) return iv2_decode_cli(argc - 1, argv + 1);
    iv2_extract_opts o;
    iv2_extract_opts_default(&o);
    long v;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        int has = i + 1 < argc;
        const char *val = has ? argv[i + 1] : NULL;
#define NEED() do { if (!has) { iv2_err("%s needs a value", a); iv2_die("iv2-extract"); } i++; } while (0)
        if (!strcmp(a, "--manifest")) { NEED(); o.manifest = val; }
        else if (!strcmp(a, "--cache")) { NEED(); o.cache = val; }
        else if (!strcmp(a, "--teacher")) {
            NEED();
            const char *eq = strchr(val, '=');
            if (!eq) { iv2_err("--teacher %s: want NAME=WEIGHTS", val); iv2_die("iv2-extract"); }
            if (!strncmp(val, "internvit=", 10)) o.internvit = eq + 1;
            else if (!strncmp(val, "videomae=", 9)) o.videomae = eq + 1;
            else { iv2_err("--teacher %s: NAME must be internvit or videomae", val); iv2_die("iv2-extract"); }
        }
        else if (!strcmp(a, "--targets")) { NEED(); o.targets = val; }
        else if (!strcmp(a, "--views")) { NEED(); if (parse_int(a, val, 1, 64, &v)) iv2_die("iv2-extract"); o.views = (int)v; }
        else if (!strcmp(a, "--dtype")) {
            NEED();
            if (iv2_dtype_parse(val, &o.dtype) || !(o.dtype == IV2_BF16 || o.dtype == IV2_F16 || o.dtype == IV2_F32 || o.dtype == IV2_I8)) {
                iv2_err("--dtype %s: want bf16, fp16, fp32 or int8", val);
                iv2_die("iv2-extract");
            }
        }
        else if (!strcmp(a, "--shard")) {
            NEED();
            int k, n, used = 0;
            if (sscanf(val, "%d/%d%n", &k, &n, &used) != 2 || val[used] || n < 1 || k < 0 || k >= n) {
                iv2_err("--shard %s: want k/N with 0 <= k < N", val);
                iv2_die("iv2-extract");
            }
            o.shard_k = k;
            o.shard_n = n;
        }
        else if (!strcmp(a, "--device") || !strcmp(a, "--devices")) { NEED(); o.device = val; }
        else if (!strcmp(a, "--batch-views")) { NEED(); if (parse_int(a, val, 1, 256, &v)) iv2_die("iv2-extract"); o.batch_views = (int)v; }
        else if (!strcmp(a, "--threads")) { NEED(); if (parse_int(a, val, 1, 256, &v)) iv2_die("iv2-extract"); o.threads = (int)v; }
        else if (!strcmp(a, "--compute-threads")) { NEED(); if (parse_int(a, val, 0, 4096, &v)) iv2_die("iv2-extract"); o.compute_threads = (int)v; }
        else if (!strcmp(a, "--seed")) { NEED(); if (iv2_parse_seed(a, val, &o.seed)) iv2_die("iv2-extract"); }
        else if (!strcmp(a, "--deterministic")) o.deterministic = 1;
        else if (!strcmp(a, "--no-flip")) o.no_flip = 1;
        else if (!strcmp(a, "--retry-errors")) o.retry_errors = 1;
        else if (!strcmp(a, "--batch")) { NEED(); if (parse_int(a, val, 1, 64, &v)) iv2_die("iv2-extract"); o.batch = (int)v; }
        else if (!strcmp(a, "--queue")) { NEED(); if (parse_int(a, val, 1, 1024, &v)) iv2_die("iv2-extract"); o.queue = (int)v; }
        else if (!strcmp(a, "--time-limit")) {
            NEED();
            char *e;
            double x = strtod(val, &e);
            if (e == val || *e || !(x >= 0 && x <= 1e6)) { iv2_err("--time-limit %s: want seconds >= 0", val); iv2_die("iv2-extract"); }
            o.time_limit = x;
        }
        else if (!strcmp(a, "--max-views")) { NEED(); if (parse_int(a, val, 0, 1L << 40, &v)) iv2_die("iv2-extract"); o.max_views = v; }
        else if (!strcmp(a, "--metrics")) { NEED(); o.metrics = val; }
        else { iv2_err("unknown option '%s' (see --help)", a); iv2_die("iv2-extract"); }
#undef NEED
    }
    if (!o.manifest || !o.cache) { usage(stderr); iv2_err("--manifest and --cache are required"); iv2_die("iv2-extract"); }
    iv2_extract_stats st;
    if (iv2_extract_run(&o, &st)) iv2_die("iv2-extract");
    /* the summary, also when quiet: one line on stdout */
    printf("rows done %lld, failed %lld, skipped %lld; views %lld; %.0f bytes/view; %.3g views/s; "
           "decode %.2f s, teachers %.2f s, write %.2f s\n",
           (long long)st.rows_done, (long long)st.rows_failed, (long long)st.rows_skipped, (long long)st.views_done,
           st.bytes_per_view, st.seconds > 0 ? st.views_done / st.seconds : 0.0, st.t_decode, st.t_teachers, st.t_write);
    int64_t stored = st.rows_done + st.rows_skipped - st.rows_skipped_failed, failed = st.rows_failed + st.rows_skipped_failed;
    if (failed > 0 && stored == 0) {
        /* every row of this manifest (shard) failed, in this run or an earlier one: likely the
         * run's fault (a missing mount, a wrong path prefix), not the videos'; the job must not look
         * like a success, nor its plain rerun. The rows are recorded: fix the cause, then
         * --retry-errors */
        fprintf(stderr, "iv2-extract: error: every row failed (%lld, none stored; `iv2-cache info %s` lists the "
                "reasons; after a fix, --retry-errors tries them again)\n", (long long)failed, o.cache);
        return 3;
    }
    return 0;
}
