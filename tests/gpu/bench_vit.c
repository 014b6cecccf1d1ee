/* bench_vit: InternViT-6B and VideoMAEv2-g inference forward at full width through common/vit.h
 * on the CUDA backend, random weights. To keep weight set-up short the models are built at two
 * reduced depths and the full-depth time is extrapolated linearly (blocks are identical, so
 * t(depth) = t(d1) + (depth - d1) * (t(d2) - t(d1)) / (d2 - d1) holds up to noise); the stem
 * and the pooling head are in both measurements. MFU = model FLOPs / time / peak, with the
 * H100 SXM dense bf16 peak 989 TFLOP/s (IV2_PEAK_TFLOPS overrides).
 *   bench_vit [out.json]      (IV2_BENCH_FRAMES: InternViT frames per call, default 32;
 *                              IV2_BENCH_CLIPS: VideoMAE clips per call, default 4;
 *                              IV2_BENCH_VIEWS: student views per step, default 32;
 *                              IV2_BENCH_STEP=0: no whole-step rows; IV2_BENCH_STEP_VIEWS: views of
 *                              the whole step with every block recomputed, default the largest
 *                              batch that fits (memory plan) up to 128, 0: none)
 * The student's training step twice: the ViT alone (forward + backward, no heads or optimiser, as
 * bench_torch's "train" row) and the whole step of iv2-distill (heads, loss, clipping, AdamW).
 *   bench_vit --step-smoke [out.json]  the whole-step code at toy size on the CPU (no GPU needed),
 *                              its row alone in the JSON's models
 *   bench_vit --ab out.json CONFIG...  the whole step under the default switches and under each CONFIG
 *                              ("IV2_NORM_PF=1 IV2_ATTN_BWD=fd"), side by side in one process, in
 *                              rounds (IV2_AB_ROUNDS, default 5; IV2_AB_STEPS timed steps a turn,
 *                              default 4): each variant's time over the default's (see ab_run)
 *   bench_vit --ab-smoke out.json CONFIG...  the same at toy size on the CPU
 *   bench_vit --profile-step  only the student's train step, for Nsight Compute (check.sh,
 *                              tests/gpu/profile_step.py): iv2-1b at depth 2 (IV2_PROFILE_DEPTH),
 *                              IV2_BENCH_VIEWS views, 3 identical steps, the last kernels it launches
 *   bench_vit --profile-whole-step  the same for the whole step of iv2-distill (heads, loss,
 *                              clipping, AdamW; the trainer at depth 2): 3 identical steps last
 * Exit 77 without a CUDA device. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "compute.h"
#include "err.h"
#include "log.h"
#include "vit.h"
#include "distill.h"
#include <math.h>

static int cmpd(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* fast random fill from the parameter table: Linear weights U(+-0.035) (std .02), norms 1,
 * LayerScale 0.1, the rest 0 (iv2_vit_init_random is exact but slow at 6B size) */
static void fill_params(iv2_vit *m) {
    iv2_backend *be = m->be;
    size_t maxn = 0;
    for (int i = 0; i < m->n_param; i++) if (m->param[i].numel > maxn) maxn = m->param[i].numel;
    float *h = malloc(maxn * sizeof(float));
    unsigned s = 12345;
    for (int i = 0; i < m->n_param; i++) {
        const iv2_vit_param *p = &m->param[i];
        size_t n = p->numel, len = strlen(p->name);
        int gamma = len > 6 && !strcmp(p->name + len - 6, ".gamma");
        int wt = len > 7 && !strcmp(p->name + len - 7, ".weight");
        for (size_t k = 0; k < n; k++) {
            if (gamma) h[k] = 0.1f;
            else if (p->ndim >= 2) { s = s * 1664525u + 1013904223u; h[k] = ((s >> 8) / 16777216.f - .5f) * 0.07f; }
            else h[k] = wt ? 1.f : 0.f;
        }
        be->upload(be, IV2_AT(be, m->params, p->offset), h, n);
    }
    free(h);
}

/* median seconds of one forward of S samples at the given depth */
static double time_model(iv2_backend *be, const char *preset, int depth, int S, int reps, double *flops) {
    iv2_vit_config cfg;
    if (iv2_vit_preset(preset, &cfg)) iv2_die("bench_vit");
    int full = cfg.depth;
    cfg.depth = depth;
    iv2_vit *m = iv2_vit_create(be, &cfg);
    if (!m) iv2_die("bench_vit");
    fill_params(m);
    m->batch = S;
    size_t fb = (size_t)S * cfg.frames * cfg.img * cfg.img * 3;
    uint8_t *fh = malloc(fb);
    for (size_t i = 0; i < fb; i++) fh[i] = (uint8_t)(i * 2654435761u >> 24);
    uint8_t *fr = be->alloc(be, fb);
    be->upload_raw(be, fr, fh, fb);
    int N = iv2_vit_tokens(&cfg), C = cfg.width;
    iv2_vit_io io;
    memset(&io, 0, sizeof io);
    io.frames = fr;
    io.S = S;
    io.n_out = 1;
    io.blocks[0] = depth - 1;
    io.out[0] = be->alloc(be, (size_t)S * N * C * be->esize);
    io.final_norm_last = cfg.final_norm;
    if (cfg.pool_heads) {
        io.pooled = be->alloc(be, (size_t)S * cfg.pool_dim * be->esize);
        io.pool_attn = be->alloc(be, (size_t)S * (N - cfg.cls) * 4);
    }
    double t[16];
    if (iv2_vit_forward(m, &io)) iv2_die("bench_vit");
    be->sync(be);
    for (int r = 0; r < reps; r++) {
        double t0 = iv2_now();
        if (iv2_vit_forward(m, &io)) iv2_die("bench_vit");
        be->sync(be);
        t[r] = iv2_now() - t0;
    }
    qsort(t, reps, sizeof(double), cmpd);
    /* FLOPs of the full-depth model per call: blocks (GEMMs + attention) + patch embedding */
    double per_block = (double)N * (8.0 * C * C + 4.0 * C * cfg.mlp) + 4.0 * (double)N * N * C;
    int K = 3 * cfg.tubelet * cfg.patch * cfg.patch;
    *flops = S * (full * per_block + 2.0 * iv2_vit_patches(&cfg) * K * C);
    be->free(be, io.out[0]);
    if (io.pooled) { be->free(be, io.pooled); be->free(be, io.pool_attn); }
    be->free(be, fr);
    free(fh);
    iv2_vit_free(m);
    return t[reps / 2];
}

/* the student's training step without the optimiser: forward on n_vis visible tokens (CLS +
 * 52 patches per frame, as the recipe's mask), backward from random gradients of the last
 * block's output and the pooled output; median seconds per step */
static double time_train(iv2_backend *be, const char *preset, int depth, int S, int reps, double *flops, int *nvis_out) {
    iv2_vit_config cfg;
    if (iv2_vit_preset(preset, &cfg)) iv2_die("bench_vit");
    int full = cfg.depth;
    cfg.depth = depth;
    cfg.drop_path = 0;
    iv2_vit *m = iv2_vit_create(be, &cfg);
    if (!m || iv2_vit_alloc_grads(m)) iv2_die("bench_vit");
    fill_params(m);
    m->keep_normed = 1;   /* as the trainer does where the batch fits, and as autograd keeps all */
    int G = iv2_vit_grid(&cfg), per = G * G, T = cfg.frames / cfg.tubelet, keep = 52, nv = 1 + T * keep;
    int32_t *vis = malloc(sizeof(int32_t) * S * nv);
    for (int s = 0; s < S; s++) {
        vis[s * nv] = 0;
        for (int t = 0; t < T; t++)
            for (int i = 0; i < keep; i++) vis[s * nv + 1 + t * keep + i] = 1 + t * per + (i * per) / keep + (s % 3);
    }
    size_t fb = (size_t)S * cfg.frames * cfg.img * cfg.img * 3;
    uint8_t *fh = malloc(fb);
    for (size_t i = 0; i < fb; i++) fh[i] = (uint8_t)(i * 2654435761u >> 24);
    uint8_t *fr = be->alloc(be, fb);
    be->upload_raw(be, fr, fh, fb);
    int C = cfg.width;
    size_t no = (size_t)S * nv * C, np = (size_t)S * cfg.pool_dim;
    iv2_vit_io io;
    memset(&io, 0, sizeof io);
    io.frames = fr;
    io.S = S;
    io.vis = vis;
    io.n_vis = nv;
    io.n_out = 1;
    io.blocks[0] = depth - 1;
    io.out[0] = be->alloc(be, no * be->esize);
    io.pooled = be->alloc(be, np * be->esize);
    void *dout[1] = {be->alloc(be, no * be->esize)}, *dpool = be->alloc(be, np * be->esize);
    float *h = malloc((no > np ? no : np) * sizeof(float));
    for (size_t i = 0; i < no; i++) h[i] = ((i * 2654435761u) >> 20) * 1e-7f - 1e-4f;
    be->upload(be, dout[0], h, no);
    be->upload(be, dpool, h, np);
    double t[16];
    for (int r = -1; r < reps; r++) {
        be->sync(be);
        double t0 = iv2_now();
        if (iv2_vit_forward_train(m, &io) || iv2_vit_backward(m, &io, dout, dpool)) iv2_die("bench_vit");
        be->sync(be);
        if (r >= 0) t[r] = iv2_now() - t0;
    }
    qsort(t, reps, sizeof(double), cmpd);
    /* forward + backward = 3x forward FLOPs over the visible tokens */
    double per_block = (double)nv * (8.0 * C * C + 4.0 * C * cfg.mlp) + 4.0 * (double)nv * nv * C;
    *flops = 3.0 * S * (full * per_block + 2.0 * (nv - 1) * (3 * cfg.patch * cfg.patch) * C);
    *nvis_out = nv;
    be->free(be, io.out[0]); be->free(be, io.pooled); be->free(be, dout[0]); be->free(be, dpool); be->free(be, fr);
    free(h); free(fh); free(vis);
    iv2_vit_free(m);
    return t[reps / 2];
}

/* The whole training step of iv2-distill, the figure issue 8 asks for: the student's forward on
 * the visible tokens, the recipe's heads and loss (6 CLIP decoders C -> clip_dim, 4 MAE decoders
 * C -> C -> mae_dim, the final decoder pool_dim -> final_dim; 2 - 2 cos per row), the student's
 * backward, the gradient norm and clipping, and AdamW (fp32 master weights and moments), through
 * distill/'s trainer (iv2_trainer_step_loaded) on a batch already on the device: in a run the
 * next batch's copies overlap the step (docs/distill.md, "The data path"). The student is built at
 * depth `depth` with every head reading its last block, so the heads' time is the same at both
 * timed depths and the extrapolation to full depth keeps it once. c: the run config (batch,
 * recompute, heads); b: the batch. Median seconds per step. */
static void trainer_at_depth(iv2_trainer *tr, iv2_distill_config c, int depth, const iv2_batch *b, const int dims[3]) {
    snprintf(c.student_json, sizeof c.student_json, "{\"depth\": %d}", depth);
    for (int k = 0; k < c.n_clip; k++) c.clip_student[k] = depth - 1;
    for (int k = 0; k < c.n_mae; k++) c.mae_student[k] = depth - 1;
    memset(tr, 0, sizeof *tr);
    iv2_set_quiet(1);   /* the trainer's memory plan */
    if (iv2_trainer_init(tr, &c, dims[0], dims[1], dims[2], b->nv)) iv2_die("bench_vit: trainer");
    iv2_set_quiet(0);
    /* the first step loads the batch (synchronous uploads, not timed) */
    if (iv2_trainer_step(tr, b)) iv2_die("bench_vit: step");
}

static double time_full_step(iv2_distill_config c, int depth, const iv2_batch *b, int reps, const int dims[3]) {
    iv2_trainer tr;
    trainer_at_depth(&tr, c, depth, b, dims);
    /* then steps on the batch back to back, as a run takes them: a step returns once the host has
     * read its gradient norm (the backward done) with its AdamW queued, which runs before the
     * next forward or beside it (IV2_OPTIM_OVERLAP=1); a step's time is from one return to the
     * next, so it holds one AdamW either way. The first interval (after the sync, no AdamW before
     * it) is not counted. */
    double t[17];
    if (reps > 16) reps = 16;
    tr.be->sync(tr.be);
    double prev = iv2_now();
    for (int r = 0; r <= reps; r++) {
        if (iv2_trainer_step_loaded(&tr, r + 1)) iv2_die("bench_vit: step");
        double now = iv2_now();
        if (r) t[r - 1] = now - prev;
        prev = now;
    }
    tr.be->sync(tr.be);
    qsort(t, reps, sizeof(double), cmpd);
    iv2_trainer_close(&tr);
    return t[reps / 2];
}

static long json_models_at = -1;   /* the JSON file's offset just after "models": [ */

/* a batch of the whole step by hand: frames, the visible tokens as the recipe's mask keeps them
 * (52 per frame and the CLS), targets of a cheap pattern; c: the run config (batch, recompute,
 * heads) at `depth` 0 (set per timed depth by time_full_step) */
typedef struct step_batch {
    iv2_distill_config c;
    iv2_vit_config vc;
    iv2_batch b;
    float *tg[2 * IV2_DISTILL_MAX_LAYERS + 1];
    int nt, nv;
} step_batch;

static void step_batch_make(step_batch *sb, const char *device, const char *preset, int S, int recompute, const int dims[3]) {
    memset(sb, 0, sizeof *sb);
    iv2_distill_config *c = &sb->c;
    iv2_distill_config_default(c);
    snprintf(c->device, sizeof c->device, "%s", device);
    snprintf(c->student, sizeof c->student, "%s", preset);
    c->layers_auto = 0;
    c->batch = S;
    c->steps = 1000000;
    c->drop_path = 0;
    c->recompute = recompute;
    c->prefetch = 0;
    iv2_vit_config *vc = &sb->vc;
    if (iv2_vit_preset(preset, vc)) iv2_die("bench_vit");
    int G = iv2_vit_grid(vc), T = vc->frames / vc->tubelet, P = G * G;
    int nv = sb->nv = iv2_mask_n_visible(c->mask, T, P, c->mask_ratio), keep = (nv - 1) / T;
    iv2_batch *b = &sb->b;
    b->B = S; b->nv = nv; b->step = 0;
    size_t fb = (size_t)S * vc->frames * vc->img * vc->img * 3, rv = (size_t)S * nv, rm = (size_t)S * (nv - 1);
    b->frames = malloc(fb);
    for (size_t i = 0; i < fb; i++) b->frames[i] = (uint8_t)(i * 2654435761u >> 24);
    b->vis = malloc(sizeof(int32_t) * rv);
    for (int s = 0; s < S; s++) {
        b->vis[(size_t)s * nv] = 0;
        for (int t = 0; t < T; t++)
            for (int i = 0; i < keep; i++) b->vis[(size_t)s * nv + 1 + t * keep + i] = 1 + t * P + (i * P) / keep + (s % 3);
    }
    size_t tn[2 * IV2_DISTILL_MAX_LAYERS + 1];
    int nt = 0;
    for (int k = 0; k < c->n_clip; k++) { tn[nt] = rv * dims[0]; sb->tg[nt++] = b->clip[k] = malloc(sizeof(float) * rv * dims[0]); }
    for (int k = 0; k < c->n_mae; k++) { tn[nt] = rm * dims[1]; sb->tg[nt++] = b->mae[k] = malloc(sizeof(float) * rm * dims[1]); }
    tn[nt] = (size_t)S * dims[2];
    sb->tg[nt++] = b->final = malloc(sizeof(float) * S * dims[2]);
    sb->nt = nt;
    for (int i = 0; i < nt; i++) {   /* 41 MB a view: filled on every core */
        float *p = sb->tg[i];
#pragma omp parallel for schedule(static)
        for (size_t j = 0; j < tn[i]; j++) p[j] = (float)((j * 2654435761u >> 22) & 1023) * (1.f / 16384) - 1.f / 32;
    }
}

static void step_batch_free(step_batch *sb) {
    for (int i = 0; i < sb->nt; i++) free(sb->tg[i]);
    free(sb->b.frames);
    free(sb->b.vis);
}

/* model FLOPs of one whole step at full depth (not of the recomputation) */
static double step_flops(const step_batch *sb, const int dims[3]) {
    const iv2_vit_config *vc = &sb->vc;
    const iv2_distill_config *c = &sb->c;
    double C = vc->width, nv = sb->nv, S = c->batch;
    double per_block = nv * (8.0 * C * C + 4.0 * C * vc->mlp) + 4.0 * nv * nv * C;
    double heads = c->n_clip * 2.0 * nv * C * dims[0] + c->n_mae * 2.0 * (nv - 1) * (C * C + C * dims[1]) +
                   2.0 * vc->pool_dim * dims[2];
    return 3.0 * S * (vc->depth * per_block + 2.0 * (nv - 1) * (3 * vc->patch * vc->patch) * C + heads);
}

/* the whole step at depths 2 and 6, extrapolated to full depth (views/s, tokens/s, MFU) */
static void full_step_row(const char *device, const char *preset, int S, int recompute, const char *tag,
                          const int dims[3], double peak, FILE *js, int profile_depth) {
    step_batch sb;
    step_batch_make(&sb, device, preset, S, recompute, dims);
    int nv = sb.nv;
    if (profile_depth > 0) {   /* --profile-whole-step: the steps at one depth and nothing after them */
        double tp = time_full_step(sb.c, profile_depth, &sb.b, 3, dims);
        printf("profile-whole-step: %s depth %d, %d views x %d visible tokens, 1 + 3 whole steps (heads, loss, clip, "
               "AdamW), %.2f ms/step (median; inflated under a profiler)\n", preset, profile_depth, S, nv, tp * 1e3);
        step_batch_free(&sb);
        return;
    }
    double t1 = time_full_step(sb.c, 2, &sb.b, 11, dims), t2 = time_full_step(sb.c, 6, &sb.b, 11, dims);
    double t = t1 + (sb.vc.depth - 2) * (t2 - t1) / 4;
    double fl = step_flops(&sb, dims), tf = fl / t;
    char name[40];
    snprintf(name, sizeof name, "%s step", preset);
    printf("%-14s %6d %10.2f %9.0f %-2s %12.2f %10.1f %7.1f%%   (whole step: + heads, loss, clip, AdamW; recompute %s)\n",
           name, S, t * 1e3, S * nv / t, "tk", S / t, tf / 1e12, 100 * tf / peak, recompute ? "all" : "none");
    if (js) fprintf(js, "%s{\"model\": \"%s-step%s%s\", \"batch\": %d, \"n_vis\": %d, \"unit\": \"views\", "
                    "\"ms\": %.3f, \"per_s\": %.2f, \"tokens_per_s\": %.1f, \"tflops\": %.2f, \"mfu\": %.4f, "
                    "\"recompute\": %d, \"ms_timed\": [%.3f, %.3f]}", ftell(js) > json_models_at ? ", " : "", preset,
                    recompute ? "-recompute" : "", tag, S, nv,
                    t * 1e3, S / t, S * nv / t, tf / 1e12, tf / peak, recompute ? 1 : 0, t1 * 1e3, t2 * 1e3);
    fflush(stdout);
    step_batch_free(&sb);
}

/* ---- A/B: variants of the switches timed side by side in one process ----
 * bench_vit --ab out.json CONFIG...: the whole step of iv2-1b (IV2_BENCH_VIEWS views) under the
 * built-in defaults and under each CONFIG ("IV2_NORM_PF=1", "IV2_ATTN_BWD=fd IV2_GEMM_TUNE=1", ...),
 * in rounds: a round gives every configuration a turn (the order rotated a place each round), a
 * warm-up step and IV2_AB_STEPS timed steps back to back, at depths 2 and 6; each round's two
 * medians are extrapolated to full depth. A variant's figure is the median over rounds of its
 * time over the default's in the same round, so a drift of the machine (clocks, heat, a
 * neighbour) between the two hardly enters it, where separate processes minutes apart differ by
 * 2 % on the same code. The backend's switches change through be->read_switches, the attention's
 * are read on each call; IV2_OPTIM_OVERLAP=1 runs on a second trainer, built with it. Every other
 * switch is left out of the default: the default is none set. */
#define AB_MAX 16     /* configurations, the default included */
#define AB_VARS 8     /* assignments in one */
#define AB_ROUNDS 16
#define AB_STEPS 16

static const char *ab_switches[] = {"IV2_ATTN_FWD", "IV2_ATTN_BWD",  "IV2_VEC_BWD",   "IV2_GELU_FUSION",  "IV2_FUSE_NORM",
                                    "IV2_NORM_SMEM", "IV2_NORM_PF", "IV2_GEMM_TUNE", "IV2_OPTIM_OVERLAP"};
#define AB_NSW (int)(sizeof ab_switches / sizeof *ab_switches)
#define AB_OVERLAP (AB_NSW - 1)   /* IV2_OPTIM_OVERLAP: the last */
#define AB_VALUE_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"

typedef struct ab_config {
    const char *text;                  /* as given; "default" */
    int n, var[AB_VARS];               /* its assignments: ab_switches[var[i]] = val[i] */
    char val[AB_VARS][24];
    int overlap;                       /* IV2_OPTIM_OVERLAP=1: the second trainer */
    double t[2][AB_ROUNDS];            /* each round's median s/step at depths 2 and 6 */
    int ran_overlap;                   /* the optimiser's overlap on the trainer its turns ran on */
    int ran_set;                       /* switches set in the environment during its turns */
} ab_config;

static int ab_parse(ab_config *a, const char *text) {
    memset(a, 0, sizeof *a);
    a->text = text;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", text);
    for (char *tok = strtok(buf, " ,"); tok; tok = strtok(NULL, " ,")) {
        char *eq = strchr(tok, '=');
        if (!eq || eq == tok || !eq[1]) {
            fprintf(stderr, "bench_vit --ab: \"%s\": \"%s\" is not VARIABLE=VALUE\n", text, tok);
            return -1;
        }
        *eq = 0;
        int v = -1;
        for (int i = 0; i < AB_NSW; i++)
            if (!strcmp(tok, ab_switches[i])) v = i;
        if (v < 0) {
            fprintf(stderr, "bench_vit --ab: \"%s\": %s is not a switch that can change between steps; these can:", text,
                    tok);
            for (int i = 0; i < AB_NSW; i++) fprintf(stderr, " %s", ab_switches[i]);
            fprintf(stderr, "\n");
            return -1;
        }
        for (int i = 0; i < a->n; i++)
            if (a->var[i] == v) { fprintf(stderr, "bench_vit --ab: \"%s\": %s twice\n", text, tok); return -1; }
        if (a->n == AB_VARS || strlen(eq + 1) >= sizeof a->val[0] || strspn(eq + 1, AB_VALUE_CHARS) != strlen(eq + 1)) {
            fprintf(stderr, "bench_vit --ab: \"%s\": too many assignments, or a value too long or not of [%s]\n", text,
                    AB_VALUE_CHARS);
            return -1;
        }
        a->var[a->n] = v;
        snprintf(a->val[a->n++], sizeof a->val[0], "%s", eq + 1);
        if (v == AB_OVERLAP) a->overlap = !strcmp(eq + 1, "1");
    }
    if (!a->n) { fprintf(stderr, "bench_vit --ab: \"%s\": no VARIABLE=VALUE in it\n", text); return -1; }
    return 0;
}

/* the environment of a configuration: every switch unset (the built-in defaults), then its own */
static void ab_apply(const ab_config *a) {
    for (int i = 0; i < AB_NSW; i++) unsetenv(ab_switches[i]);
    for (int i = 0; i < a->n; i++) setenv(ab_switches[a->var[i]], a->val[i], 1);
}

static int ab_set_count(void) {
    int n = 0;
    for (int i = 0; i < AB_NSW; i++) n += getenv(ab_switches[i]) != NULL;
    return n;
}

/* one turn: the switches read again, a warm-up step (after a change it picks, or times, the GEMMs'
 * algorithms anew), then `steps` steps timed back to back as time_full_step times them; median s */
static double ab_turn(iv2_trainer *tr, int64_t *step, int steps) {
    iv2_backend *be = tr->be;
    if (be->read_switches) be->read_switches(be);
    if (iv2_trainer_step_loaded(tr, ++*step)) iv2_die("bench_vit --ab: step");
    double t[AB_STEPS], prev = iv2_now();
    for (int s = 0; s < steps; s++) {
        if (iv2_trainer_step_loaded(tr, ++*step)) iv2_die("bench_vit --ab: step");
        double now = iv2_now();
        t[s] = now - prev;
        prev = now;
    }
    be->sync(be);   /* nothing of this turn left queued when the next one changes a switch */
    qsort(t, steps, sizeof(double), cmpd);
    return t[steps / 2];
}

static double median_of(double *v, int n) {
    qsort(v, n, sizeof(double), cmpd);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int ab_run(const char *device, const char *preset, int S, const int dims[3], double peak, const char *json,
                  int rounds, int steps, int n_given, char **given) {
    static ab_config a[AB_MAX];
    if (n_given < 1 || n_given >= AB_MAX) {
        fprintf(stderr, "bench_vit --ab: give 1 to %d configurations, e.g. \"IV2_NORM_PF=1\"\n", AB_MAX - 1);
        return 2;
    }
    if (rounds < 1 || rounds > AB_ROUNDS || steps < 1 || steps > AB_STEPS) {
        fprintf(stderr, "bench_vit --ab: IV2_AB_ROUNDS 1..%d and IV2_AB_STEPS 1..%d\n", AB_ROUNDS, AB_STEPS);
        return 2;
    }
    memset(&a[0], 0, sizeof a[0]);
    a[0].text = "default";
    int n = 1, any_overlap = 0;
    for (int i = 0; i < n_given; i++, n++) {
        if (ab_parse(&a[n], given[i])) return 2;
        any_overlap |= a[n].overlap;
    }
    for (int i = 0; i < AB_NSW; i++)
        if (getenv(ab_switches[i]))
            printf("note: %s=%s in the environment is not part of the default here (none set)\n", ab_switches[i],
                   getenv(ab_switches[i]));
    step_batch sb;
    step_batch_make(&sb, device, preset, S, 0, dims);
    const ab_config overlap_on = {.n = 1, .var = {AB_OVERLAP}, .val = {"1"}};
    for (int di = 0; di < 2; di++) {
        int depth = di ? 6 : 2;
        iv2_trainer tr[2];
        int64_t stepno[2] = {0, 0};
        for (int k = 0; k < 1 + any_overlap; k++) {   /* trainer 1: AdamW beside the next forward */
            ab_apply(k ? &overlap_on : &a[0]);
            trainer_at_depth(&tr[k], sb.c, depth, &sb.b, dims);
        }
        for (int r = 0; r < rounds; r++)
            for (int j = 0; j < n; j++) {
                ab_config *c = &a[(j + r) % n];
                ab_apply(c);
                iv2_trainer *t = &tr[c->overlap];
                c->ran_overlap = t->opt.overlap;
                c->ran_set = ab_set_count();
                c->t[di][r] = ab_turn(t, &stepno[c->overlap], steps);
            }
        for (int k = 0; k < 1 + any_overlap; k++) iv2_trainer_close(&tr[k]);
    }
    ab_apply(&a[0]);
    double fl = step_flops(&sb, dims);
    int full = sb.vc.depth;
    FILE *js = json ? fopen(json, "w") : NULL;
    if (json && !js) { fprintf(stderr, "bench_vit --ab: cannot write %s\n", json); return 1; }
    printf("A/B: %s whole step (heads, loss, clip, AdamW), %d views x %d visible tokens, on %s; %d rounds, each a turn "
           "of every configuration (rotated), a turn a warm-up and %d timed steps at depths 2 and 6, extrapolated to "
           "depth %d\n", preset, S, sb.nv, device, rounds, steps, full);
    int w = 13;   /* the configuration column as wide as the longest */
    for (int i = 0; i < n; i++) w = (int)strlen(a[i].text) > w ? (int)strlen(a[i].text) : w;
    printf("%-*s %9s %9s %7s %8s %17s %7s\n", w, "configuration", "ms/step", "views/s", "MFU", "x default",
           "(rounds min-max)", "faster");
    if (js) fprintf(js, "{\"preset\": \"%s\", \"views\": %d, \"n_vis\": %d, \"rounds\": %d, \"steps\": %d, "
                    "\"peak_tflops\": %.1f, \"configs\": [", preset, S, sb.nv, rounds, steps, peak / 1e12);
    for (int i = 0; i < n; i++) {
        double ms[AB_ROUNDS], ratio[AB_ROUNDS], d2[AB_ROUNDS], d6[AB_ROUNDS];
        int faster = 0;
        for (int r = 0; r < rounds; r++) {
            double ti = a[i].t[0][r] + (full - 2) * (a[i].t[1][r] - a[i].t[0][r]) / 4;
            double t0 = a[0].t[0][r] + (full - 2) * (a[0].t[1][r] - a[0].t[0][r]) / 4;
            ms[r] = ti * 1e3;
            ratio[r] = ti / t0;
            faster += ti < t0;
            d2[r] = a[i].t[0][r] * 1e3;
            d6[r] = a[i].t[1][r] * 1e3;
        }
        char rounds_ms[AB_ROUNDS * 16] = "";
        for (int r = 0, o = 0; r < rounds; r++) o += snprintf(rounds_ms + o, sizeof rounds_ms - o, "%s%.3f", r ? ", " : "", ms[r]);
        double m = median_of(ms, rounds), q = median_of(ratio, rounds), tf = fl / (m * 1e-3);
        double lo = ratio[0], hi = ratio[rounds - 1];   /* sorted by median_of */
        char span[40];
        snprintf(span, sizeof span, "(%.3f-%.3f)", lo, hi);
        printf("%-*s %9.2f %9.2f %6.1f%% %8.3f %17s %3d/%-3d\n", w, a[i].text, m, S / (m * 1e-3), 100 * tf / peak, q,
               i ? span : "", i ? faster : 0, rounds);
        if (js) fprintf(js, "%s{\"config\": \"%s\", \"ms\": %.3f, \"per_s\": %.2f, \"mfu\": %.4f, \"ratio\": %.4f, "
                        "\"ratio_min\": %.4f, \"ratio_max\": %.4f, \"faster_rounds\": %d, \"overlap\": %d, "
                        "\"switches_set\": %d, \"ms_rounds\": [%s], \"ms_timed\": [%.3f, %.3f]}", i ? ", " : "",
                        a[i].text, m, S / (m * 1e-3), tf / peak, q, lo, hi, i ? faster : 0, a[i].ran_overlap,
                        a[i].ran_set, rounds_ms, median_of(d2, rounds), median_of(d6, rounds));
    }
    printf("(x default: the median over rounds of the configuration's time over the default's in the same round, "
           "< 1 faster; faster: in how many rounds)\n");
    if (js) { fprintf(js, "]}\n"); fclose(js); }
    step_batch_free(&sb);
    return 0;
}

/* 1 warm-up + 2 timed steps (time_train, reps 2) and nothing after them but frees: the profile's
 * aggregator takes the step as the repeated tail of the kernel sequence, so no profiler API (CUDA
 * headers) is needed here; 3 steps, not 2, so the last two still match should the first one launch
 * extra kernels */
static int profile_step(iv2_backend *be) {
    int views = getenv("IV2_BENCH_VIEWS") ? atoi(getenv("IV2_BENCH_VIEWS")) : 32;
    int depth = getenv("IV2_PROFILE_DEPTH") ? atoi(getenv("IV2_PROFILE_DEPTH")) : 2, nv = 0;
    if (views < 1 || depth < 1) {
        fprintf(stderr, "bench_vit: IV2_BENCH_VIEWS and IV2_PROFILE_DEPTH must be >= 1\n");
        return 2;
    }
    double fl, t = time_train(be, "iv2-1b", depth, views, 2, &fl, &nv);
    printf("profile-step: iv2-1b depth %d, %d views x %d visible tokens, 3 train steps (fwd+bwd, no optimiser), "
           "%.2f ms/step (slower of the last two; inflated under a profiler)\n", depth, views, nv, t * 1e3);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--step-smoke")) {   /* the whole-step path on the CPU, tiny (no GPU needed) */
        const int dims[3] = {24, 16, 8};
        FILE *js = argc > 2 ? fopen(argv[2], "w") : NULL;
        if (js) { fprintf(js, "{\"peak_tflops\": 1000.0, \"models\": ["); json_models_at = ftell(js); }
        full_step_row("cpu", "iv2-tiny", 2, 0, "", dims, 1e12, js, 0);
        if (js) { fprintf(js, "]}\n"); fclose(js); }
        return 0;
    }
    if (argc > 1 && (!strcmp(argv[1], "--ab") || !strcmp(argv[1], "--ab-smoke"))) {
        if (argc < 4) {
            fprintf(stderr, "usage: bench_vit --ab OUT.json \"VAR=VALUE [VAR=VALUE...]\"...\n");
            return 2;
        }
        int rounds = getenv("IV2_AB_ROUNDS") ? atoi(getenv("IV2_AB_ROUNDS")) : 5;
        int steps = getenv("IV2_AB_STEPS") ? atoi(getenv("IV2_AB_STEPS")) : 4;
        if (!strcmp(argv[1], "--ab-smoke")) {   /* the A/B code at toy size on the CPU (no GPU needed) */
            const int dims[3] = {24, 16, 8};
            return ab_run("cpu", "iv2-tiny", 2, dims, 1e12, argv[2], rounds, steps, argc - 3, argv + 3);
        }
        iv2_backend *probe = iv2_backend_create("cuda:0", 0);
        if (!probe) { printf("skipped: %s\n", iv2_errmsg()); return 77; }
        iv2_backend_destroy(probe);
        const int dims[3] = {3200, 1408, 768};
        int views = getenv("IV2_BENCH_VIEWS") ? atoi(getenv("IV2_BENCH_VIEWS")) : 32;
        const char *pk = getenv("IV2_PEAK_TFLOPS");
        return ab_run("cuda", "iv2-1b", views, dims, (pk ? atof(pk) : 989.0) * 1e12, argv[2], rounds, steps, argc - 3,
                      argv + 3);
    }
    if (argc > 1 && !strcmp(argv[1], "--profile-whole-step")) {   /* the trainer makes its own backend */
        iv2_backend *probe = iv2_backend_create("cuda:0", 0);
        if (!probe) { printf("skipped: %s\n", iv2_errmsg()); return 77; }
        iv2_backend_destroy(probe);
        const int dims[3] = {3200, 1408, 768};
        int views = getenv("IV2_BENCH_VIEWS") ? atoi(getenv("IV2_BENCH_VIEWS")) : 32;
        int depth = getenv("IV2_PROFILE_DEPTH") ? atoi(getenv("IV2_PROFILE_DEPTH")) : 2;
        if (views < 1 || depth < 1) {
            fprintf(stderr, "bench_vit: IV2_BENCH_VIEWS and IV2_PROFILE_DEPTH must be >= 1\n");
            return 2;
        }
        full_step_row("cuda", "iv2-1b", views, 0, "", dims, 989e12, NULL, depth);
        return 0;
    }
    iv2_backend *be = iv2_backend_create("cuda:0", 0);
    if (!be) { printf("skipped: %s\n", iv2_errmsg()); return 77; }
    if (argc > 1 && !strcmp(argv[1], "--profile-step")) {
        int rc = profile_step(be);
        iv2_backend_destroy(be);
        return rc;
    }
    const char *pk = getenv("IV2_PEAK_TFLOPS");
    double peak = (pk ? atof(pk) : 989.0) * 1e12;
    int frames = getenv("IV2_BENCH_FRAMES") ? atoi(getenv("IV2_BENCH_FRAMES")) : 32;
    int clips = getenv("IV2_BENCH_CLIPS") ? atoi(getenv("IV2_BENCH_CLIPS")) : 4;
    struct { const char *preset, *unit; int d1, d2, S, per_view; } b[] = {
        {"internvit-6b", "frames", 2, 6, frames, 8},   /* a view needs 8 InternViT frames */
        {"videomae-g", "clips", 2, 6, clips, 1},
    };
    FILE *js = argc > 1 ? fopen(argv[1], "w") : NULL;
    if (js) fprintf(js, "{\"peak_tflops\": %.1f, \"models\": [", peak / 1e12);
    if (js) json_models_at = ftell(js);   /* a row written there is the first: no comma before it */
    printf("%-14s %6s %10s %12s %12s %10s %8s\n", "model (iv2)", "batch", "ms/call", "units/s", "views/s", "TFLOP/s",
           "MFU");
    for (int i = 0; i < 2; i++) {
        iv2_vit_config cfg;
        iv2_vit_preset(b[i].preset, &cfg);
        double fl, t1 = time_model(be, b[i].preset, b[i].d1, b[i].S, 5, &fl);
        double t2 = time_model(be, b[i].preset, b[i].d2, b[i].S, 5, &fl);
        double t = t1 + (cfg.depth - b[i].d1) * (t2 - t1) / (b[i].d2 - b[i].d1);
        double ups = b[i].S / t, tf = fl / t;
        printf("%-14s %6d %10.2f %9.1f %-2s %12.2f %10.1f %7.1f%%\n", b[i].preset, b[i].S, t * 1e3, ups,
               b[i].unit[0] == 'f' ? "fr" : "cl", ups / b[i].per_view, tf / 1e12, 100 * tf / peak);
        if (js) fprintf(js, "%s{\"model\": \"%s\", \"batch\": %d, \"unit\": \"%s\", \"ms\": %.3f, \"per_s\": %.2f, "
                        "\"views_per_s\": %.3f, \"tflops\": %.2f, \"mfu\": %.4f, \"depths_timed\": [%d, %d], "
                        "\"ms_timed\": [%.3f, %.3f]}", i ? ", " : "", b[i].preset, b[i].S, b[i].unit, t * 1e3, ups,
                        ups / b[i].per_view, tf / 1e12, tf / peak, b[i].d1, b[i].d2, t1 * 1e3, t2 * 1e3);
        fflush(stdout);
    }
    /* the 1B student's training step (issue 8), same extrapolation */
    int views = getenv("IV2_BENCH_VIEWS") ? atoi(getenv("IV2_BENCH_VIEWS")) : 32, nv = 0;
    iv2_vit_config sc;
    iv2_vit_preset("iv2-1b", &sc);
    double fl, t1 = time_train(be, "iv2-1b", 2, views, 11, &fl, &nv), t2 = time_train(be, "iv2-1b", 6, views, 11, &fl, &nv);
    double t = t1 + (sc.depth - 2) * (t2 - t1) / 4, tf = fl / t;
    printf("%-14s %6d %10.2f %9.0f %-2s %12.2f %10.1f %7.1f%%   (train step, fwd+bwd, no optimiser)\n", "iv2-1b train",
           views, t * 1e3, views * nv / t, "tk", views / t, tf / 1e12, 100 * tf / peak);
    if (js) fprintf(js, ", {\"model\": \"iv2-1b-train\", \"batch\": %d, \"n_vis\": %d, \"unit\": \"views\", "
                    "\"ms\": %.3f, \"per_s\": %.2f, \"tokens_per_s\": %.1f, \"tflops\": %.2f, \"mfu\": %.4f, "
                    "\"ms_timed\": [%.3f, %.3f]}", views, nv, t * 1e3, views / t, views * nv / t, tf / 1e12, tf / peak,
                    t1 * 1e3, t2 * 1e3);
    /* the whole step of iv2-distill (IV2_BENCH_STEP=0 skips it: check.sh's separate variant runs):
     * the recipe's heads at the teachers' widths (InternViT-6B 3200, VideoMAEv2-g 1408, the 6B
     * pool 768), at the same batch without recomputation, and at IV2_BENCH_STEP_VIEWS views
     * (default: the largest batch that fits, up to 128; 0 skips) with every block recomputed, as the official recipe checkpoints and
     * as iv2-distill does on a GPU by default (its memory plan prints the largest batch that fits) */
    const char *st = getenv("IV2_BENCH_STEP");
    if (!st || strcmp(st, "0")) {
        const int dims[3] = {3200, 1408, 768};
        full_step_row("cuda", "iv2-1b", views, 0, "", dims, peak, js, 0);
        /* the largest batch that fits at full depth with every block recomputed (the trainer's
         * memory plan, in what is free now less 2 GiB for the trainer's own CUDA context), timed
         * at up to 128 views: the host batch of f32 targets is 41 MB a view, and the GEMMs are
         * as large at 128 views as at 300 */
        iv2_distill_config rc;
        iv2_distill_config_default(&rc);
        size_t fr = 0, tot = 0;
        if (be->mem_info) be->mem_info(be, &fr, &tot);
        int nvr = iv2_mask_n_visible(rc.mask, 8, 256, rc.mask_ratio);
        int fit = fr > ((size_t)2 << 30) ? iv2_distill_largest_batch(&rc, dims[0], dims[1], dims[2], nvr,
                                                                       IV2_RECOMPUTE_ALL, be->esize, fr - ((size_t)2 << 30)) : 0;
        int sv = getenv("IV2_BENCH_STEP_VIEWS") ? atoi(getenv("IV2_BENCH_STEP_VIEWS")) : fit < 128 ? fit : 128;
        printf("iv2-1b step: the largest batch that fits with every block recomputed: %d views (memory plan, %.1f GiB "
               "free); timed at %d\n", fit, fr / 1073741824.0, sv);
        if (sv > 0) full_step_row("cuda", "iv2-1b", sv, IV2_RECOMPUTE_ALL, "", dims, peak, js, 0);
        /* and the largest batch that fits recomputing none (issue 8's "batch as large as fits"; the
         * optimiser's fixed cost spread over more views), IV2_BENCH_STEP_VIEWS_NONE views if set */
        int fitn = fr > ((size_t)2 << 30) ? iv2_distill_largest_batch(&rc, dims[0], dims[1], dims[2], nvr, 0, be->esize,
                                                                        fr - ((size_t)2 << 30)) : 0;
        int svn = getenv("IV2_BENCH_STEP_VIEWS_NONE") ? atoi(getenv("IV2_BENCH_STEP_VIEWS_NONE")) : fitn;
        printf("iv2-1b step: the largest batch that fits recomputing none: %d views; timed at %d\n", fitn, svn);
        if (svn > views) full_step_row("cuda", "iv2-1b", svn, 0, "-largest", dims, peak, js, 0);
    }
    if (js) { fprintf(js, "]}\n"); fclose(js); }
    iv2_backend_destroy(be);
    return 0;
}
