/* bench_distill: training views/s and tokens/s of iv2-distill on the CPU for an iv2-tiny and an
 * iv2-s student (8 x 224^2 frames, attention mask 0.8: 417 visible tokens, every stage-1 head),
 * beside the same step in PyTorch (eager fp32, same threads; tests/bench/bench_distill.py) when
 * torch is installed, with the ratio; and the loader alone (synthetic cache, batches/s) against
 * what the tiny trainer consumes. Per run: the median over a few steps after one warm-up step;
 * C and PyTorch runs alternate for BENCH_ROUNDS rounds and each side reports the median of its
 * runs, so load from other processes on a shared machine hits both alike.
 * BENCH_STEPS (default 3), BENCH_ROUNDS (default 3), BENCH_THREADS (default: all cores). */
#include "testutil.h"
#include "test_distill_synth.h"
#include "log.h"

static int cmp_d(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }

typedef struct { const char *name; int C, D, H, MLP, PH, PD, CD, MD, FD; } spec;

static double c_step(const spec *s, int B, int threads, int steps) {
    iv2_distill_config c;
    iv2_distill_config_default(&c);
    snprintf(c.student, sizeof c.student, "%s", s->name);
    c.n_clip = 6; c.n_mae = 4;
    for (int k = 0; k < 6; k++) { c.clip_teacher[k] = k; c.clip_student[k] = s->D - 6 + k; }
    for (int k = 0; k < 4; k++) { c.mae_teacher[k] = k; c.mae_student[k] = s->D - 4 + k; }
    c.batch = B; c.threads = threads; c.drop_path = 0.1f; c.steps = 100; c.warmup_steps = 1;
    int nv = iv2_mask_n_visible(IV2_MASK_ATTENTION, 8, 256, 0.8f);
    iv2_trainer t;
    memset(&t, 0, sizeof t);
    if (iv2_trainer_init(&t, &c, s->CD, s->MD, s->FD, nv) || iv2_plan_make(&t.plan, &c, 1000)) {
        fprintf(stderr, "%s: %s\n", s->name, iv2_errmsg());
        iv2_trainer_close(&t);
        return -1;
    }
    iv2_batch b;
    memset(&b, 0, sizeof b);
    b.B = B; b.nv = nv;
    b.frames = malloc((size_t)B * 8 * 224 * 224 * 3);
    iv2_rng r;
    iv2_rng_seed(&r, 1, 2, 3, 4);
    for (size_t i = 0; i < (size_t)B * 8 * 224 * 224 * 3; i++) b.frames[i] = (uint8_t)(iv2_rng_u64(&r) >> 56);
    b.vis = malloc(sizeof(int32_t) * B * nv);
    float *attn = malloc(sizeof(float) * 2048);
    for (int i = 0; i < 2048; i++) attn[i] = (float)iv2_rng_uniform(&r);
    for (int k = 0; k < B; k++) iv2_mask_draw(IV2_MASK_ATTENTION, attn, 8, 256, 0.8f, &r, b.vis + k * nv);
    for (int k = 0; k < 6; k++) { b.clip[k] = malloc(sizeof(float) * B * nv * s->CD); for (int i = 0; i < B * nv; i++) { for (int j = 0; j < s->CD; j++) b.clip[k][i * s->CD + j] = (float)iv2_rng_uniform(&r); synth_unit(b.clip[k] + i * s->CD, s->CD); } }
    for (int k = 0; k < 4; k++) { b.mae[k] = malloc(sizeof(float) * B * (nv - 1) * s->MD); for (int i = 0; i < B * (nv - 1); i++) { for (int j = 0; j < s->MD; j++) b.mae[k][i * s->MD + j] = (float)iv2_rng_uniform(&r); synth_unit(b.mae[k] + i * s->MD, s->MD); } }
    b.final = malloc(sizeof(float) * B * s->FD);
    for (int i = 0; i < B; i++) { for (int j = 0; j < s->FD; j++) b.final[i * s->FD + j] = (float)iv2_rng_uniform(&r); synth_unit(b.final + i * s->FD, s->FD); }
    double ts[32];
    int n = 0;
    for (int k = 0; k <= steps && k < 32; k++) {
        b.step = k;
        double t0 = iv2_now();
        if (iv2_trainer_step(&t, &b)) { fprintf(stderr, "%s\n", iv2_errmsg()); break; }
        if (k) ts[n++] = iv2_now() - t0;
    }
    qsort(ts, (size_t)n, sizeof *ts, cmp_d);
    double med = n ? ts[n / 2] : -1;
    free(attn);
    iv2_batch_free(&b);
    iv2_trainer_close(&t);
    return med;
}

static double torch_step(const spec *s, int B, int threads, int steps) {
    char cmd[1024];
    int nv = iv2_mask_n_visible(IV2_MASK_ATTENTION, 8, 256, 0.8f);
    snprintf(cmd, sizeof cmd, "python3 tests/bench/bench_distill.py %d %d %d %d %d %d %d %d %d 6 4 %d %d %d %d 2>/dev/null",
             s->C, s->D, s->H, s->MLP, s->PH, s->PD, s->CD, s->MD, s->FD, B, nv, threads, steps);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    double v = -1, st = -1;
    if (fscanf(p, "views_s %lf step_s %lf", &v, &st) != 2) st = -1;
    pclose(p);
    return st;
}

int main(void) {
    iv2_set_quiet(1);
    int steps = getenv("BENCH_STEPS") ? atoi(getenv("BENCH_STEPS")) : 3;
    int threads = getenv("BENCH_THREADS") ? atoi(getenv("BENCH_THREADS")) : (int)sysconf(_SC_NPROCESSORS_ONLN);
    int B = 2, nv = iv2_mask_n_visible(IV2_MASK_ATTENTION, 8, 256, 0.8f);
    int have_torch = system("python3 -c 'import torch' >/dev/null 2>&1") == 0;
    printf("training step (fwd + bwd + clip + AdamW), batch %d x 8 frames 224^2, %d visible tokens, 6 clip + 4 mae heads"
           " + final, %d threads; median step of each run, median over alternating C / PyTorch runs\n", B, nv, threads);
    printf("%-9s %-16s %9s %8s %9s %9s %8s %9s %8s\n", "student", "clip/mae/final", "C s/step", "views/s", "tokens/s",
           "torch s", "torch/C", "C best", "t best");
    const spec specs[2] = {{"iv2-tiny", 96, 6, 3, 384, 4, 128, 96, 96, 128},          /* tiny teachers */
                           {"iv2-s", 384, 12, 6, 1536, 16, 768, 3200, 1408, 768}};    /* the real teachers' dims */
    double tiny_step = -1;
    int rounds = getenv("BENCH_ROUNDS") ? atoi(getenv("BENCH_ROUNDS")) : 3;
    if (rounds < 1 || rounds > 15) rounds = 3;
    for (int i = 0; i < 2; i++) {
        const spec *s = &specs[i];
        double cs[16], ts[16];
        int nt = 0;
        for (int r = 0; r < rounds; r++) {
            cs[r] = c_step(s, B, threads, i ? (steps + 1) / 2 : steps);
            if (have_torch && (ts[nt] = torch_step(s, B, threads, i ? (steps + 1) / 2 : steps)) > 0) nt++;
        }
        qsort(cs, (size_t)rounds, sizeof *cs, cmp_d);
        qsort(ts, (size_t)nt, sizeof *ts, cmp_d);
        double c = cs[rounds / 2], tt = nt ? ts[nt / 2] : -1;
        if (i == 0) tiny_step = c;
        char tg[32];
        snprintf(tg, sizeof tg, "%d/%d/%d", s->CD, s->MD, s->FD);
        if (tt > 0) printf("%-9s %-16s %9.3f %8.2f %9.0f %9.3f %7.2fx %9.3f %8.3f\n", s->name, tg, c, B / c, B * nv / c, tt,
                           tt / c, cs[0], ts[0]);
        else printf("%-9s %-16s %9.3f %8.2f %9.0f %9s %8s %9.3f %8s\n", s->name, tg, c, B / c, B * nv / c, "n/a", "n/a", cs[0], "n/a");
    }
    if (!have_torch) printf("(torch not installed: no PyTorch baseline)\n");
    printf("(torch/C > 1: the C step is faster; \"best\" = the fastest run of each side, less sensitive to other load)\n");
    /* the loader alone: synthetic cache at 224 (tiny teacher dims), attention masks, batch 2 */
    const char *dir = "build/tmp/bench_distill.cache";
    (void)!system("mkdir -p build/tmp");
    synth_spec sp = {.views = 16, .size = 224, .clip_dim = 96, .mae_dim = 96, .pool_dim = 128, .n_clip = 6, .n_mae = 4, .nan_view = -1};
    if (synth_cache(dir, &sp)) { printf("loader: cannot make the cache: %s\n", iv2_errmsg()); return 0; }
    iv2_distill_config c;
    synth_config(&c, &sp, B);
    iv2_loader L;
    if (iv2_loader_open(&L, dir, &c, 8, 224, 8, 256)) { printf("loader: %s\n", iv2_errmsg()); return 0; }
    iv2_batch b;
    iv2_batch_alloc(&b, &L, B, L.nv);
    int nb = 0;
    double t0 = iv2_now();
    while (iv2_now() - t0 < 2.0) { iv2_loader_build(&L, nb, &b); nb++; }
    double rate = nb / (iv2_now() - t0);
    printf("loader alone (one thread, %d-view batches, 6+4 targets of 96, pool 128): %.1f batches/s; the tiny trainer takes %.2f/s: %.0fx headroom\n",
           B, rate, tiny_step > 0 ? 1 / tiny_step : 0, tiny_step > 0 ? rate * tiny_step : 0);
    iv2_batch_free(&b);
    iv2_loader_close(&L);
    return 0;
}
