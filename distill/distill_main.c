/* iv2-distill: train a student video ViT against cached teacher targets (InternVideo2 stage 1).
 *   iv2-distill [train] --cache DIR[,DIR...] --config run.json --out RUN/ [--resume] [--max-steps N]
 *   iv2-distill eval    --cache DIR[,DIR...] (--out RUN/ | --ckpt FILE)
 *   iv2-distill export  (--out RUN/ | --ckpt FILE) --to student.safetensors
 *   iv2-distill plot    --out RUN/ [--png FILE] [--size WxH] [--log] */
#include "distill.h"
#include "dist.h"
#include "err.h"
#include "log.h"
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: iv2-distill [train] --cache DIR[,DIR...] --config run.json --out RUN/ [--resume] [--max-steps N]\n"
            "                           [--resume-any-cache]\n"
            "       iv2-distill eval    --cache DIR[,DIR...] (--out RUN/ | --ckpt FILE)\n"
            "       iv2-distill export  (--out RUN/ | --ckpt FILE) --to student.safetensors\n"
            "       iv2-distill plot    --out RUN/ [--png FILE] [--size WxH] [--log]\n"
            "\n"
            "train   trains the student against the targets of the cache shards. Defaults are the\n"
            "        InternVideo2-1B stage-1 recipe; run.json overrides them (docs/distill.md).\n"
            "        RUN/ receives metrics.jsonl (a JSON line per step), config.json and the\n"
            "        checkpoints ckpt_<step>.safetensors (atomic, the last keep_ckpt kept).\n"
            "        --resume continues from the newest checkpoint in RUN/ (bit-exact on the CPU); without\n"
            "        --config it takes the run config the checkpoint records, and the cache must hold the\n"
            "        training views the checkpoint was trained on (--resume-any-cache: resume on a cache that\n"
            "        grew or was re-extracted; the data order changes). Without --resume, RUN/ must\n"
            "        hold no checkpoint.\n"
            "        --max-steps N stops after N more steps (a checkpoint is written).\n"
            "        SIGTERM, SIGINT or SIGUSR1 (e.g. sbatch --signal=USR1@120) stops after the current\n"
            "        step with a checkpoint and exits 128 + the signal (143 for SIGTERM); --resume continues.\n"
            "eval    cosine of the student's heads to every teacher target, all tokens visible,\n"
            "        over every view of the given cache (a held-out cache), as one JSON line.\n"
            "export  the student without heads, official InternVideo2 names, as safetensors.\n"
            "plot    the loss curves of RUN/metrics.jsonl as a PNG (default RUN/loss.png, 800x500);\n"
            "        --log draws the y axis in log scale.\n"
            "\n"
            "options: --device cpu|cuda[:N] and --threads N override the config.\n"
            "\n"
            "data parallel: launched by mpirun or srun, train runs one rank per process (one per GPU;\n"
            "--device cuda takes the local rank's GPU); batch stays the global batch; rank 0 writes\n"
            "RUN/. e.g. mpirun -np 8 iv2-distill train ... --device cuda (docs/distill.md).\n"
            "\n"
            "environment: IV2_QUIET=1 silences progress; IV2_PROGRESS_INTERVAL=S a progress line every S\n"
            "seconds when log_every is 0; IV2_OPTIM_OVERLAP=1 runs AdamW beside the next forward (CUDA);\n"
            "IV2_DIST_BUCKET_MB sizes the gradient all-reduce buckets (docs/distill.md).\n");
}

static const char *arg_val(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) { iv2_err("%s needs a value", argv[*i]); iv2_die("iv2-distill"); }
    return argv[++*i];
}

/* an integer option value in [lo, hi]; anything else ("abc", "2x", "-1") is an error, not 0 */
static long long arg_int(int argc, char **argv, int *i, long long lo, long long hi) {
    const char *opt = argv[*i], *v = arg_val(argc, argv, i);
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end || errno || x < lo || x > hi) {
        iv2_err("%s: expected an integer in [%lld, %lld], got '%s'", opt, lo, hi, v);
        iv2_die("iv2-distill");
    }
    return x;
}

/* SIGTERM (Slurm, ahead of its time limit; kill), SIGINT (^C), SIGUSR1 (sbatch --signal=USR1@T):
 * finish the step, write its checkpoint, exit 128 + the signal. The handler is one-shot
 * (SA_RESETHAND): a second signal of the kind ends the process at once, and an unfinished
 * checkpoint write leaves only its temporary file, removed by the next write. */
static void stop_handler(int sig) { iv2_trainer_request_stop(sig); }

static void on_stop_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = stop_handler;
    sa.sa_flags = SA_RESETHAND | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
}

/* eval runs no training step: the run's global batch (4096 in the recipe) only sizes the trainer's
 * buffers there, so eval sizes them for this many views instead (a few views per forward) */
#define EVAL_BATCH 16

/* the newest checkpoint of a run folder, or the given file */
static int pick_ckpt(const char *out, const char *ckpt, char *path, size_t cap) {
    if (ckpt) { snprintf(path, cap, "%s", ckpt); return 0; }
    if (!out) return iv2_err("give --out RUN/ or --ckpt FILE");
    int64_t step;
    int r = iv2_ckpt_latest(out, path, cap, &step);
    if (r == 1) return iv2_err("%s: no checkpoint", out);
    return r;
}

static int ckpt_config(const char *path, iv2_distill_config *c) {
    iv2_st_file f;
    if (iv2_st_open(&f, path)) return iv2_err_ctx("checkpoint");
    const char *js = iv2_st_meta(&f, "iv2.distill");
    iv2_distill_config_default(c);
    int rc = js ? iv2_distill_config_parse(c, js, path) : iv2_err("%s: not an iv2-distill checkpoint (no iv2.distill metadata: an exported student or "
                                                                "another file?)", path);
    iv2_st_close(&f);
    return rc;
}

int main(int argc, char **argv) {
    iv2_omp_wait_default(argv);   /* OMP_WAIT_POLICY=passive unless set (log.h) */
    const char *cmd = "train", *cache = NULL, *config = NULL, *out = NULL, *ckpt = NULL, *to = NULL, *png = NULL;
    const char *device = NULL;
    int resume = 0, threads = -1, W = 800, H = 500, log_y = 0;
    long long max_steps = 0;
    int i = 1;
    if (argc > 1 && argv[1][0] != '-') cmd = argv[i++];
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--cache")) cache = arg_val(argc, argv, &i);
        else if (!strcmp(a, "--config")) config = arg_val(argc, argv, &i);
        else if (!strcmp(a, "--out")) out = arg_val(argc, argv, &i);
        else if (!strcmp(a, "--ckpt")) ckpt = arg_val(argc, argv, &i);
        else if (!strcmp(a, "--to")) to = arg_val(argc, argv, &i);
        else if (!strcmp(a, "--png")) png = arg_val(argc, argv, &i);
        else if (!strcmp(a, "--device")) device = arg_val(argc, argv, &i);
        else if (!strcmp(a, "--threads")) threads = (int)arg_int(argc, argv, &i, 0, 65536);
        else if (!strcmp(a, "--max-steps")) max_steps = arg_int(argc, argv, &i, 1, LLONG_MAX);
        else if (!strcmp(a, "--size")) {
            if (sscanf(arg_val(argc, argv, &i), "%dx%d", &W, &H) != 2 || W < 64 || H < 64 || W > 8000 || H > 8000) {
                iv2_err("--size: expected WxH, 64..8000");
                iv2_die("iv2-distill");
            }
        } else if (!strcmp(a, "--resume")) resume = resume ? resume : 1;
        else if (!strcmp(a, "--resume-any-cache")) resume = 2;
        else if (!strcmp(a, "--log")) log_y = 1;
        else { iv2_err("unknown argument '%s' (see --help)", a); iv2_die("iv2-distill"); }
    }
    iv2_distill_config c;
    iv2_distill_config_default(&c);
    char path[4096];
    if (!strcmp(cmd, "train")) {
        if (!cache || !out) { usage(stderr); iv2_err("train needs --cache and --out"); iv2_die("iv2-distill"); }
        c.layers_auto = IV2_PAIR_CLIP | IV2_PAIR_MAE;   /* pairings run.json leaves out come from the cache */
        if (config && iv2_distill_config_load(&c, config)) iv2_die("iv2-distill");
        int64_t last;
        if (!config && resume && iv2_ckpt_latest(out, path, sizeof path, &last) == 0) {
            /* --resume alone continues the run as its checkpoint records it (not the recipe's defaults) */
            if (ckpt_config(path, &c)) iv2_die("iv2-distill");
            /* the device it records is the one rank 0 ran on ("cuda:0"); each rank picks its own again */
            if (!strncmp(c.device, "cuda:", 5)) c.device[4] = 0;
            iv2_info("resume: the run config of %s (no --config given)", path);
        } else if (!config && resume) {   /* killed before its first checkpoint: the config it wrote */
            snprintf(path, sizeof path, "%s/config.json", out);
            if (access(path, F_OK) == 0) {
                if (iv2_distill_config_load(&c, path)) iv2_die("iv2-distill");
                if (!strncmp(c.device, "cuda:", 5)) c.device[4] = 0;
                iv2_info("resume: no checkpoint yet; the run config %s (no --config given)", path);
            }
        }
        if (device) snprintf(c.device, sizeof c.device, "%s", device);
        if (threads >= 0) c.threads = threads;
        if (c.eval_every > 0 && c.eval_views == 0)
            iv2_warn("eval_every %lld with eval_views 0: no views are held out, so no eval runs", (long long)c.eval_every);
        /* data parallel when launched by mpirun / srun: one rank per process (docs/distill.md) */
        if (iv2_dist_init(&argc, &argv)) iv2_die("iv2-distill");
        iv2_dist_pick_device(c.device, sizeof c.device);
        c.threads = iv2_dist_pick_threads(c.threads);
        if (!resume && iv2_ckpt_latest(out, path, sizeof path, &last) == 0) {
            /* a fresh run here would overwrite that run's checkpoints and its own would be pruned
             * as older than them */
            iv2_err("%s already holds checkpoints of a run (the newest %s); --resume continues it, or "
                    "give another --out", out, path);
            iv2_die("iv2-distill");
        }
        iv2_trainer t;
        int orc = iv2_trainer_open(&t, cache, &c, out, resume);
        if (iv2_dist_agree(orc, "opening the run") || iv2_dist_setup(&t)) iv2_dist_die("iv2-distill");
        snprintf(path, sizeof path, "%s/config.json", out);
        FILE *f = iv2_dist_rank() == 0 ? fopen(path, "w") : NULL;
        if (f) { fprintf(f, "%s\n", t.cfg_json); fclose(f); }
        if (iv2_dist_world() > 1)
            iv2_info("data parallel: %d ranks, %d views each of the global batch %d", iv2_dist_world(),
                     iv2_dist_local_batch(c.batch), c.batch);
        iv2_info("student %s: %zu parameters, heads %zu; %lld train views of %lld videos, %lld steps (%lld per epoch: "
                 "one view per video), warmup %lld, peak lr %.3g",
                 c.student, t.student->n_elems, t.heads->n_params, (long long)t.L.n_train, (long long)t.L.n_videos,
                 (long long)t.plan.total_steps,
                 (long long)t.plan.steps_per_epoch, (long long)t.plan.warmup_steps, t.plan.peak_lr);
        on_stop_signals();
        int rc = iv2_trainer_run(&t, max_steps);
        if (rc) iv2_dist_die("iv2-distill");
        int stopped = t.stopped_by;
        iv2_dist_teardown();
        iv2_trainer_close(&t);
        iv2_dist_finalize();
        if (stopped) return 128 + stopped;   /* as a shell reports a signal: a job script requeues on it */
        return 0;
    }
    if (!strcmp(cmd, "eval")) {
        if (!cache) { usage(stderr); iv2_err("eval needs --cache"); iv2_die("iv2-distill"); }
        if (pick_ckpt(out, ckpt, path, sizeof path) || ckpt_config(path, &c)) iv2_die("iv2-distill");
        c.eval_views = -1;
        if (c.batch > EVAL_BATCH) c.batch = EVAL_BATCH;
#ifndef IV2_CUDA
        if (!device && !strncmp(c.device, "cuda", 4)) {   /* a GPU run's checkpoint, evaluated on a CPU build */
            iv2_warn("%s was trained on %s; this build has no CUDA: eval runs on the CPU (--device to choose)",
                     path, c.device);
            snprintf(c.device, sizeof c.device, "cpu");
        }
#endif
        if (device) snprintf(c.device, sizeof c.device, "%s", device);
        if (threads >= 0) c.threads = threads;
        if (c.eval_every > 0 && c.eval_views == 0)
            iv2_warn("eval_every %lld with eval_views 0: no views are held out, so no eval runs", (long long)c.eval_every);
        char tmp[] = "/tmp/iv2-distill-eval-XXXXXX";   /* the trainer wants a run folder; eval writes nothing */
        if (!mkdtemp(tmp)) { iv2_err("cannot make a temporary folder"); iv2_die("iv2-distill"); }
        iv2_trainer t;
        int64_t step;
        char *js = NULL;
        int rc = iv2_trainer_open(&t, cache, &c, tmp, 0);
        if (!rc) rc = iv2_ckpt_load(path, t.student, t.heads, NULL, &step, NULL);
        if (!rc) rc = iv2_trainer_eval(&t, &js);
        if (!rc) printf("{\"checkpoint\":\"%s\",\"step\":%lld,\"cos\":%s}\n", path, (long long)step, js);
        free(js);
        if (t.be) iv2_trainer_close(&t);
        rmdir(tmp);
        if (rc) iv2_die("iv2-distill");
        return 0;
    }
    if (!strcmp(cmd, "export")) {
        if (!to) { usage(stderr); iv2_err("export needs --to"); iv2_die("iv2-distill"); }
        if (pick_ckpt(out, ckpt, path, sizeof path)) iv2_die("iv2-distill");
        iv2_vit_config vc;
        if (iv2_vit_config_from_file(path, NULL, &vc)) iv2_die("iv2-distill");
        iv2_backend *be = iv2_backend_create("cpu", threads > 0 ? threads : 0);
        iv2_vit *m = be ? iv2_vit_create(be, &vc) : NULL;
        int64_t step;
        int rc = m ? iv2_ckpt_load(path, m, NULL, NULL, &step, NULL) : -1;
        if (!rc) rc = iv2_vit_save(m, to);
        if (!rc) iv2_info("exported the student of %s (step %lld) to %s", path, (long long)step, to);
        iv2_vit_free(m);
        if (be) iv2_backend_destroy(be);
        if (rc) iv2_die("iv2-distill");
        return 0;
    }
    if (!strcmp(cmd, "plot")) {
        if (!out) { usage(stderr); iv2_err("plot needs --out RUN/"); iv2_die("iv2-distill"); }
        char mp[4096], pp[4096];
        snprintf(mp, sizeof mp, "%s/metrics.jsonl", out);
        snprintf(pp, sizeof pp, "%s/loss.png", out);
        if (iv2_plot_metrics(mp, png ? png : pp, W, H, log_y)) iv2_die("iv2-distill");
        return 0;
    }
    usage(stderr);
    iv2_err("unknown command '%s'", cmd);
    iv2_die("iv2-distill");
}
