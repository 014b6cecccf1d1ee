/* test_distill_mpi.h: the data-parallel parity check shared by tests/test_distill_mpi.c (MPI on
 * the CPU) and tests/gpu/test_distill_nccl.c (NCCL, two GPUs). On a small synthetic cache,
 * `mpirun -np 2` with global batch 4 against one process with batch 4: every step's loss terms
 * and grad norm, the final weights and AdamW moments; one metrics file with one line per step,
 * one set of checkpoints, gradients in several buckets; a run stopped and resumed under MPI
 * against the uninterrupted one; ranks that disagree on the config, or a batch not divisible by
 * the ranks, stop every rank with a clean error. The includer defines TMP_BASE (an existing
 * folder, relative to the repository root, for the run's own temp folder). */
#define ROOT "t"

#ifndef IV2_TEST_DISTILL_MPI_H
#define IV2_TEST_DISTILL_MPI_H
#include "testutil.h"
#include "test_distill_synth.h"
#include "safetensors.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <signal.h>
#include <sys/wait.h>
#include "distill.h"

#define STEPS 4

typedef struct parity_tol {
    double loss_rtol;     /* per step: loss terms and grad norm, 2 ranks vs 1 process */
    float w_rtol, w_atol; /* final weights and moments */
    double resume_rtol;   /* resumed vs uninterrupted (0: bit for bit) */
} parity_tol;

static char mpirun[256];
static char bin[4096], work[4096];   /* absolute bin/iv2-distill; the run's own temp folder (cwd) */
static const char *dev_arg = "";   /* " --device cuda" on the GPU */
#ifndef DISTILL_BIN
#define DISTILL_BIN "bin/iv2-distill"   /* the includer may name another build of the tool */
#endif
/* the includer's extra checks on the 2-rank log (run before the temp folder is removed) */
static void (*parity_two_log_check)(const char *log);

/* 77, with the reason printed, where this machine cannot run two ranks of DISTILL_BIN; else 0 */
static int parity_unrunnable(const char *how_to_build) {
    if (system("command -v mpirun >/dev/null 2>&1") != 0) { printf("skipped: mpirun not on PATH\n"); return 77; }
    if (access(DISTILL_BIN, X_OK) != 0) { printf("skipped: " DISTILL_BIN " not built%s\n", how_to_build); return 77; }
    return 0;
}

/* the loss, clip, mae, final and grad_norm of each "step" line of a metrics file; returns lines */
static int read_steps(const char *dir, double (*v)[5], int cap, int *n_start) {
    char path[512], line[65536];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int n = 0;
    *n_start = 0;
    static const char *keys[5] = {"\"loss\":", "\"clip\":", "\"mae\":", "\"final\":", "\"grad_norm\":"};
    while (fgets(line, sizeof line, f)) {
        if (strstr(line, "\"event\":\"start\"")) (*n_start)++;
        if (!strstr(line, "\"event\":\"step\"") || n >= cap) continue;
        for (int k = 0; k < 5; k++) {
            const char *p = strstr(line, keys[k]);
            v[n][k] = p ? atof(p + strlen(keys[k])) : NAN;
        }
        n++;
    }
    fclose(f);
    return n;
}

static int count_files(const char *dir, const char *prefix) {
    char cmd[512], buf[64];
    snprintf(cmd, sizeof cmd, "ls %s | grep -c '^%s'", dir, prefix);
    FILE *p = popen(cmd, "r");
    int n = p && fgets(buf, sizeof buf, p) ? atoi(buf) : -1;
    if (p) pclose(p);
    return n;
}

/* every tensor of two checkpoints allclose; the largest difference into *worst */
static int same_ckpt(const char *a, const char *b, float rtol, float atol, double *worst) {
    iv2_st_file fa, fb;
    if (iv2_st_open(&fa, a)) return 0;
    if (iv2_st_open(&fb, b)) { iv2_st_close(&fa); return 0; }
    int ok = fa.n_tensors == fb.n_tensors && fa.n_tensors > 0;
    *worst = 0;
    for (int i = 0; ok && i < fa.n_tensors; i++) {
        iv2_st_tensor *ta = &fa.tensors[i], *tb = iv2_st_find(&fb, ta->name);
        if (!tb || tb->numel != ta->numel) { ok = 0; break; }
        float *x = malloc(sizeof(float) * ta->numel), *y = malloc(sizeof(float) * ta->numel);
        ok = !iv2_st_read(&fa, ta, x, IV2_F32) && !iv2_st_read(&fb, tb, y, IV2_F32);
        for (size_t j = 0; ok && j < ta->numel; j++) {
            double d = fabs((double)x[j] - y[j]);
            if (d > *worst) *worst = d;
            if (d > atol + rtol * fabs((double)y[j])) {
                printf("  %s[%zu]: %.9g vs %.9g\n", ta->name, j, x[j], y[j]);
                ok = 0;
            }
        }
        free(x); free(y);
    }
    iv2_st_close(&fa); iv2_st_close(&fb);
    return ok;
}

/* train into out with `ranks` processes (0: plain process, no mpirun) */
static int train(int ranks, const char *cfg, const char *out, const char *extra, const char *log) {
    char cmd[16384];
    if (ranks == 0)
        snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=1 IV2_QUIET=1 %s train --cache %s.cache --config %s --out %s%s %s >%s 2>&1",
                 bin, ROOT, cfg, out, dev_arg, extra, log);
    else
        snprintf(cmd, sizeof cmd, "IV2_DIST_BUCKET_MB=0.05 IV2_DIST_DEBUG=1 %s -np %d -x OMP_NUM_THREADS=1 -x IV2_QUIET=1 -x IV2_DIST_BUCKET_MB -x IV2_DIST_DEBUG %s train --cache %s.cache --config %s --out %s%s %s >%s 2>&1",
                 mpirun, ranks, bin, ROOT, cfg, out, dev_arg, extra, log);
    return system(cmd);
}

static int log_has(const char *log, const char *what) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "grep -Eq '%s' %s", what, log);
    return system(cmd) == 0;
}


/* steps of the signal run: enough (at ~15 ms a step) that the SIGTERM, sent once 3 steps are
 * logged, lands before the end on a loaded machine too (24 did not always, with make -j2 beside) */
#define SIG_STEPS 96
static void stop_one_rank(const iv2_distill_config *c, const parity_tol *tol) {
    iv2_distill_config o = *c;
    o.steps = SIG_STEPS; o.epochs = 0;
    write_config(ROOT ".sig.json", &o);
    CHECK(train(2, ROOT ".sig.json", ROOT ".siga", "", ROOT ".siga.log") == 0, "2 ranks, %d steps uninterrupted", SIG_STEPS);
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "exec %s -np 2 -x OMP_NUM_THREADS=1 -x IV2_QUIET=1 %s train --cache %s.cache --config %s.sig.json "
             "--out %s.sigb%s >%s.sigb.log 2>&1", mpirun, bin, ROOT, ROOT, ROOT, dev_arg, ROOT);
    pid_t pid = fork();
    if (pid == 0) { execl("/bin/sh", "sh", "-c", cmd, (char *)NULL); _exit(127); }
    for (int i = 0; i < 6000 && t_count_lines(ROOT ".sigb/metrics.jsonl", "\"event\":\"step\"") < 3; i++) usleep(10000);
    char q[64], buf[64];
    snprintf(q, sizeof q, "pgrep -P %d | head -n 1", (int)pid);   /* one rank: mpirun's first child */
    FILE *p = popen(q, "r");
    int rank_pid = p && fgets(buf, sizeof buf, p) ? atoi(buf) : 0;
    if (p) pclose(p);
    CHECK(rank_pid > 0 && kill(rank_pid, SIGTERM) == 0, "SIGTERM to one rank (pid %d)", rank_pid);
    int st = 0;
    waitpid(pid, &st, 0);
    int64_t at = -1;
    char latest[512];
    CHECK(iv2_ckpt_latest(ROOT ".sigb", latest, sizeof latest, &at) == 0 && at > 0 && at < SIG_STEPS,
          "both ranks stopped at step %lld with its checkpoint (mpirun status %d, " ROOT ".sigb.log)", (long long)at, st);
    CHECK(t_count_lines(ROOT ".sigb/metrics.jsonl", "\"event\":\"stopped\"") == 1 &&
          t_count_lines(ROOT ".sigb/metrics.jsonl", "\"signal\":15") == 1, "one stopped line, naming SIGTERM");
    CHECK(train(2, ROOT ".sig.json", ROOT ".sigb", "--resume", ROOT ".sigb2.log") == 0, "2 ranks, resumed after the signal");
    double worst = 0;
    char ca[256], cb[256];
    snprintf(ca, sizeof ca, ROOT ".siga/ckpt_%08d.safetensors", SIG_STEPS);
    snprintf(cb, sizeof cb, ROOT ".sigb/ckpt_%08d.safetensors", SIG_STEPS);
    CHECK(same_ckpt(ca, cb, (float)tol->resume_rtol,
                    (float)tol->resume_rtol * 1e-2f, &worst), "stopped and resumed == uninterrupted (worst %.3g)", worst);
}

/* device: "" (CPU) or " --device cuda"; runs the CHECKs, returns 0 (test_done() tells) */
static int mpi_parity(const char *device, const parity_tol *tol) {
    dev_arg = device;
    snprintf(mpirun, sizeof mpirun, "mpirun %s--oversubscribe --mca btl self,vader --mca btl_vader_single_copy_mechanism none",
             getuid() == 0 ? "--allow-run-as-root " : "");
    /* a folder of our own (several suites may run at once), entered: paths below are relative */
    if (!realpath(DISTILL_BIN, bin)) { CHECK(0, DISTILL_BIN ": no such file"); return 0; }
    if (!getcwd(work, sizeof work) || strlen(work) > sizeof work - 64) { CHECK(0, "cwd"); return 0; }
    strcat(work, "/" TMP_BASE "/tmp_distill_mpi_XXXXXX");
    if (!mkdtemp(work) || chdir(work)) { CHECK(0, "cannot make and enter %s", work); return 0; }
    synth_spec sp = {.views = 16, .size = 56, .clip_dim = 32, .mae_dim = 24, .pool_dim = 16, .n_clip = 2, .n_mae = 2, .nan_view = -1};
    CHECK(synth_cache(ROOT ".cache", &sp) == 0, "synthetic cache: %s", iv2_errmsg());
    iv2_distill_config c;
    synth_config(&c, &sp, 4);   /* global batch 4: 4 steps per epoch; drop path 0.25 (default), attention masks */
    c.epochs = 2;
    write_config(ROOT ".json", &c);

    /* 1. one process, batch 4 (the oracle) vs two ranks x 2 */
    CHECK(train(0, ROOT ".json", ROOT ".one", "--max-steps " "4", ROOT ".one.log") == 0, "1 process trains (" ROOT ".one.log)");
    CHECK(train(2, ROOT ".json", ROOT ".two", "--max-steps " "4", ROOT ".two.log") == 0, "2 ranks train (" ROOT ".two.log)");
    double a[8][5], b[8][5];
    int sa, sb;
    int na = read_steps(ROOT ".one", a, 8, &sa), nb = read_steps(ROOT ".two", b, 8, &sb);
    CHECK(na == STEPS && nb == STEPS && sa == 1 && sb == 1, "one metrics file, written once: %d and %d step lines, %d and %d starts", na, nb, sa, sb);
    double worst_loss = 0;
    for (int s = 0; s < na && s < nb; s++)
        for (int k = 0; k < 5; k++) {
            double d = fabs(a[s][k] - b[s][k]) / (fabs(a[s][k]) + 1e-6);
            if (d > worst_loss) worst_loss = d;
            CHECK(d < tol->loss_rtol, "step %d term %d: 1 process %.7g, 2 ranks %.7g", s, k, a[s][k], b[s][k]);
        }
    CHECK(na > 1 && a[na - 1][0] != a[0][0], "the loss moves (%g -> %g)", na > 0 ? a[0][0] : 0, na > 0 ? a[na - 1][0] : 0);
    CHECK(log_has(ROOT ".two.log", "rank 1: ([89]|[1-9][0-9]+) student gradient buckets"), "the gradients went in >= 2 buckets per step (" ROOT ".two.log)");
    if (parity_two_log_check) parity_two_log_check(ROOT ".two.log");
    CHECK(count_files(ROOT ".two", "ckpt_") == 1 && count_files(ROOT ".one", "ckpt_") == 1, "one checkpoint each");
    CHECK(count_files(ROOT ".two", "metrics") == 1 && count_files(ROOT ".two", "config.json") == 1, "one metrics file, one config");
    double worst = 0;
    CHECK(same_ckpt(ROOT ".one/ckpt_00000004.safetensors", ROOT ".two/ckpt_00000004.safetensors", tol->w_rtol, tol->w_atol, &worst),
          "final weights and moments: 2 ranks == 1 process (worst |diff| %.3g)", worst);

    /* 2. resume under MPI: 2 steps, stop, resume for 2 more == the 4-step run */
    CHECK(train(2, ROOT ".json", ROOT ".res", "--max-steps 2", ROOT ".res1.log") == 0, "2 ranks, first half");
    CHECK(train(2, ROOT ".json", ROOT ".res", "--resume --max-steps 2", ROOT ".res2.log") == 0, "2 ranks, resumed");
    double r[8][5];
    int sr, nr = read_steps(ROOT ".res", r, 8, &sr);
    CHECK(nr == STEPS, "resumed run logged %d steps", nr);
    for (int s = 0; s < nr && s < nb; s++)
        CHECK(fabs(r[s][0] - b[s][0]) <= tol->resume_rtol * fabs(b[s][0]), "resumed step %d loss %.9g == %.9g", s, r[s][0], b[s][0]);
    CHECK(same_ckpt(ROOT ".res/ckpt_00000004.safetensors", ROOT ".two/ckpt_00000004.safetensors", (float)tol->resume_rtol,
                    (float)tol->resume_rtol * 1e-2f, &worst), "resumed weights == uninterrupted (worst %.3g)", worst);

    /* 3. SIGTERM to one rank only (a signal need not reach every rank): both stop at the same
     * step with one checkpoint, and the resumed run equals the uninterrupted one */
    stop_one_rank(&c, tol);

    /* 4. ranks that disagree: another seed on rank 1; a batch the ranks cannot split */
    iv2_distill_config c2 = c;
    c2.seed = c.seed + 1;
    write_config(ROOT ".seed.json", &c2);
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "%s -x OMP_NUM_THREADS=1 -x IV2_QUIET=1 -np 1 %s train --cache %s.cache --config %s.json --out %s.bad --max-steps 1 : "
             "-np 1 %s train --cache %s.cache --config %s.seed.json --out %s.bad --max-steps 1 >%s.bad.log 2>&1",
             mpirun, bin, ROOT, ROOT, ROOT, bin, ROOT, ROOT, ROOT, ROOT);
    CHECK(system(cmd) != 0 && log_has(ROOT ".bad.log", "rank 1: the run config differs from rank 0"), "config mismatch is a clean error (" ROOT ".bad.log)");
    CHECK(count_files(ROOT ".bad", "ckpt_") == 0, "and nothing was trained");
    c2 = c;
    c2.batch = 3;
    c2.base_lr = c.base_lr;
    write_config(ROOT ".b3.json", &c2);
    CHECK(train(2, ROOT ".b3.json", ROOT ".b3", "--max-steps 1", ROOT ".b3.log") != 0 &&
          log_has(ROOT ".b3.log", "batch 3 .the global batch. is not a multiple of the 2 ranks"), "batch 3 over 2 ranks: clean error");
    char rm[4200];
    snprintf(rm, sizeof rm, "rm -rf '%s'", work);
    if (!t_fails && !getenv("IV2_KEEP")) { int rc = system(rm); (void)rc; }
    else printf("files kept in %s\n", work);
    return 0;
}
#endif
