/* test_compute_cpu.c: every op of the CPU backend (common/compute_cpu*.c).
 * Forwards against naive double-precision loops written here; backwards against central
 * finite differences of those double loops (loss = sum(out * G) for a random G), checked to
 * accumulate (+=) onto random initial gradients; big shapes (several threads, several query
 * blocks) against the single-threaded backend and, for attention, a naive double backward.
 * IV2_SET: each backward writing its input gradient over NaN equals it adding onto zeros. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "compute.h"
#include "err.h"
#include "testutil.h"

/* ---------------------------------------------------------------------------------------------
 * helpers */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double urand(void) { /* [0, 1) */
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return (rng_state >> 11) * (1.0 / 9007199254740992.0);
}
static float *frand(size_t n, double lo, double hi) {
    float *p = malloc(n * sizeof(float) + 4);
    for (size_t i = 0; i < n; i++) p[i] = (float)(lo + (hi - lo) * urand());
    return p;
}
static float *fnan(size_t n) {
    float *p = malloc(n * sizeof(float) + 4);
    for (size_t i = 0; i < n; i++) p[i] = NAN;
    return p;
}
static float *fcopy(const float *x, size_t n) { float *p = malloc(n * sizeof(float) + 4); memcpy(p, x, n * sizeof(float)); return p; }
static double *dcopy(const float *x, size_t n) { double *p = malloc(n * sizeof(double) + 8); for (size_t i = 0; i < n; i++) p[i] = x[i]; return p; }
static float *ffromd(const double *x, size_t n) { float *p = malloc(n * sizeof(float) + 4); for (size_t i = 0; i < n; i++) p[i] = (float)x[i]; return p; }
static float *fdiff(const float *a, const float *b, size_t n) { float *p = malloc(n * sizeof(float) + 4); for (size_t i = 0; i < n; i++) p[i] = a[i] - b[i]; return p; }

/* central differences of loss(ctx) w.r.t. x[0..n) (x is one of the arrays the loss reads) */
typedef double (*loss_fn)(void *ctx);
static double *fd_grad(loss_fn f, void *ctx, double *x, size_t n, double h) {
    double *g = malloc(n * sizeof(double) + 8);
    for (size_t i = 0; i < n; i++) {
        double s = x[i];
        x[i] = s + h; double lp = f(ctx);
        x[i] = s - h; double lm = f(ctx);
        x[i] = s;
        g[i] = (lp - lm) / (2 * h);
    }
    return g;
}
/* got (fp32 backend, minus the initial value of the accumulator) against a double gradient */
static void check_grad(const char *what, const float *after, const float *before, const double *want, size_t n,
                       float rtol, float atol) {
    float *got = before ? fdiff(after, before, n) : fcopy(after, n), *w = ffromd(want, n);
    t_allclose(what, got, w, n, rtol, atol);
    free(got); free(w);
}
static double dot_d(const double *a, const double *b, size_t n) { double s = 0; for (size_t i = 0; i < n; i++) s += a[i] * b[i]; return s; }

static iv2_backend *be1, *be3; /* one thread; three threads (uneven splits) */

/* ---------------------------------------------------------------------------------------------
 * matmul */

typedef struct { int M, K, N; double *x, *w, *b, *G; } mm_ctx;
static void ref_matmul(double *out, const double *x, const double *w, const double *b, int M, int K, int N) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = b ? b[j] : 0;
            for (int k = 0; k < K; k++) s += x[(size_t)i * K + k] * w[(size_t)j * K + k];
            out[(size_t)i * N + j] = s;
        }
}
static double mm_loss(void *c_) {
    mm_ctx *c = c_;
    double *o = malloc((size_t)c->M * c->N * sizeof(double));
    ref_matmul(o, c->x, c->w, c->b, c->M, c->K, c->N);
    double l = dot_d(o, c->G, (size_t)c->M * c->N);
    free(o);
    return l;
}

static void test_matmul_fwd(iv2_backend *be, int M, int K, int N, int with_bias) {
    float *x = frand((size_t)M * K, -1, 1), *w = frand((size_t)N * K, -1, 1), *b = frand(N, -1, 1);
    float *out = frand((size_t)M * N, -5, 5); /* garbage: must be overwritten */
    double *xd = dcopy(x, (size_t)M * K), *wd = dcopy(w, (size_t)N * K), *bd = dcopy(b, N);
    double *od = malloc((size_t)M * N * sizeof(double));
    be->matmul(be, out, x, w, with_bias ? b : NULL, M, K, N);
    ref_matmul(od, xd, wd, with_bias ? bd : NULL, M, K, N);
    float *want = ffromd(od, (size_t)M * N);
    char what[96];
    snprintf(what, sizeof what, "matmul %dx%dx%d bias %d threads %d", M, K, N, with_bias, be->threads);
    t_allclose(what, out, want, (size_t)M * N, 1e-4f, 1e-4f);
    free(x); free(w); free(b); free(out); free(xd); free(wd); free(bd); free(od); free(want);
}

static void test_matmul_bwd(void) {
    int M = 7, K = 9, N = 5;
    float *x = frand((size_t)M * K, -1, 1), *w = frand((size_t)N * K, -1, 1), *b = frand(N, -1, 1);
    float *G = frand((size_t)M * N, -1, 1);
    float *dx0 = frand((size_t)M * K, -1, 1), *dw0 = frand((size_t)N * K, -1, 1), *db0 = frand(N, -1, 1);
    float *dx = fcopy(dx0, (size_t)M * K), *dw = fcopy(dw0, (size_t)N * K), *db = fcopy(db0, N);
    be1->matmul_backward(be1, dx, dw, db, G, x, w, M, K, N, IV2_ADD);
    mm_ctx c = {M, K, N, dcopy(x, (size_t)M * K), dcopy(w, (size_t)N * K), dcopy(b, N), dcopy(G, (size_t)M * N)};
    double *gx = fd_grad(mm_loss, &c, c.x, (size_t)M * K, 1e-5), *gw = fd_grad(mm_loss, &c, c.w, (size_t)N * K, 1e-5),
           *gb = fd_grad(mm_loss, &c, c.b, N, 1e-5);
    check_grad("matmul_backward dinp", dx, dx0, gx, (size_t)M * K, 1e-4f, 1e-5f);
    check_grad("matmul_backward dw", dw, dw0, gw, (size_t)N * K, 1e-4f, 1e-5f);
    check_grad("matmul_backward dbias", db, db0, gb, N, 1e-4f, 1e-5f);
    /* NULL outputs are skipped */
    float *dw2 = fcopy(dw0, (size_t)N * K);
    be1->matmul_backward(be1, NULL, dw2, NULL, G, x, w, M, K, N, IV2_ADD);
    check_grad("matmul_backward dw only", dw2, dw0, gw, (size_t)N * K, 1e-4f, 1e-5f);
    free(dw2);
    /* big, threaded (row panels and column panels) against one thread */
    int shapes[2][3] = {{301, 129, 67}, {5, 517, 1001}};
    for (int s = 0; s < 2; s++) {
        int m = shapes[s][0], k = shapes[s][1], n = shapes[s][2];
        float *X = frand((size_t)m * k, -1, 1), *W = frand((size_t)n * k, -1, 1), *Gb = frand((size_t)m * n, -1, 1);
        float *a1 = frand((size_t)m * k, -1, 1), *a2 = frand((size_t)n * k, -1, 1), *a3 = frand(n, -1, 1);
        float *b1 = fcopy(a1, (size_t)m * k), *b2 = fcopy(a2, (size_t)n * k), *b3 = fcopy(a3, n);
        be1->matmul_backward(be1, a1, a2, a3, Gb, X, W, m, k, n, IV2_ADD);
        be3->matmul_backward(be3, b1, b2, b3, Gb, X, W, m, k, n, IV2_ADD);
        t_allclose("matmul_backward big dinp (3 threads vs 1)", b1, a1, (size_t)m * k, 1e-4f, 1e-5f);
        t_allclose("matmul_backward big dw (3 threads vs 1)", b2, a2, (size_t)n * k, 1e-4f, 1e-5f);
        t_allclose("matmul_backward big dbias (3 threads vs 1)", b3, a3, n, 1e-5f, 1e-5f);
        /* and dinp of the big one against the naive product */
        double *dd = malloc((size_t)m * k * sizeof(double));
        for (int i = 0; i < m; i++)
            for (int j = 0; j < k; j++) {
                double acc = 0;
                for (int q = 0; q < n; q++) acc += (double)Gb[(size_t)i * n + q] * W[(size_t)q * k + j];
                dd[(size_t)i * k + j] = acc;
            }
        float *cmp = calloc((size_t)m * k, sizeof(float));
        be3->matmul_backward(be3, cmp, NULL, NULL, Gb, X, W, m, k, n, IV2_ADD);
        check_grad("matmul_backward big dinp vs naive", cmp, NULL, dd, (size_t)m * k, 1e-4f, 1e-4f);
        free(dd); free(cmp);
        free(X); free(W); free(Gb); free(a1); free(a2); free(a3); free(b1); free(b2); free(b3);
    }
    free(x); free(w); free(b); free(G); free(dx0); free(dw0); free(db0); free(dx); free(dw); free(db);
    free(c.x); free(c.w); free(c.b); free(c.G); free(gx); free(gw); free(gb);
}

/* ---------------------------------------------------------------------------------------------
 * norms */

typedef struct { int M, C, kind; double eps; double *x, *w, *b, *G; } norm_ctx; /* kind 0 rms, 1 ln, 2 ln no bias */
static void ref_norm(const norm_ctx *c, double *out, double *mean, double *rstd) {
    for (int i = 0; i < c->M; i++) {
        const double *x = c->x + (size_t)i * c->C;
        double mu = 0, v = 0;
        if (c->kind) { for (int j = 0; j < c->C; j++) mu += x[j]; mu /= c->C; }
        for (int j = 0; j < c->C; j++) v += (x[j] - mu) * (x[j] - mu);
        double r = 1.0 / sqrt(v / c->C + c->eps);
        for (int j = 0; j < c->C; j++)
            out[(size_t)i * c->C + j] = (x[j] - mu) * r * c->w[j] + (c->kind == 1 ? c->b[j] : 0);
        if (mean) mean[i] = mu;
        if (rstd) rstd[i] = r;
    }
}
static double norm_loss(void *c_) {
    norm_ctx *c = c_;
    size_t n = (size_t)c->M * c->C;
    double *o = malloc(n * sizeof(double));
    ref_norm(c, o, NULL, NULL);
    double l = dot_d(o, c->G, n);
    free(o);
    return l;
}

static void run_norm(iv2_backend *be, int kind, int M, int C, float *x, float *w, float *b, float *out, float *mean,
                     float *rstd, float eps) {
    if (kind == 0) be->rmsnorm(be, out, rstd, x, w, M, C, eps);
    else be->layernorm(be, out, mean, rstd, x, w, kind == 1 ? b : NULL, M, C, eps);
}
static void run_norm_bwd(iv2_backend *be, int kind, int M, int C, float *dx, float *dw, float *db, float *G, float *x,
                         float *w, float *mean, float *rstd) {
    if (kind == 0) be->rmsnorm_backward(be, dx, dw, G, x, w, rstd, M, C, IV2_ADD);
    else be->layernorm_backward(be, dx, dw, kind == 1 ? db : NULL, G, x, w, mean, rstd, M, C, IV2_ADD);
}

static void test_norm(int kind) {
    static const char *names[] = {"rmsnorm", "layernorm", "layernorm(no bias)"};
    char what[128];
    /* forward at two sizes (the big one threaded), and rows of 1e-3 scale, whose mean square is
     * about eps: where eps goes (inside the square root) shows */
    int sizes[3][2] = {{6, 13}, {300, 131}, {6, 13}};
    for (int s = 0; s < 3; s++) {
        int M = sizes[s][0], C = sizes[s][1];
        size_t n = (size_t)M * C;
        float sc = s == 2 ? 1e-3f : 1.0f;
        float *x = frand(n, -2 * sc, 3 * sc), *w = frand(C, 0.5, 1.5), *b = frand(C, -1, 1);
        float *out = frand(n, 0, 1), *mean = frand(M, 0, 1), *rstd = frand(M, 0, 1);
        norm_ctx c = {M, C, kind, 1e-5, dcopy(x, n), dcopy(w, C), dcopy(b, C), NULL};
        double *od = malloc(n * sizeof(double)), *md = malloc(M * sizeof(double)), *rd = malloc(M * sizeof(double));
        ref_norm(&c, od, md, rd);
        run_norm(be3, kind, M, C, x, w, b, out, mean, rstd, 1e-5f);
        snprintf(what, sizeof what, "%s fwd %dx%d", names[kind], M, C);
        check_grad(what, out, NULL, od, n, 1e-4f, 1e-5f);
        check_grad("norm rstd", rstd, NULL, rd, M, 1e-5f, 1e-6f);
        if (kind) check_grad("layernorm mean", mean, NULL, md, M, 1e-5f, 1e-5f);
        /* backward, threaded vs one thread */
        float *G = frand(n, -1, 1);
        float *dx1 = frand(n, -1, 1), *dw1 = frand(C, -1, 1), *db1 = frand(C, -1, 1);
        float *dx3 = fcopy(dx1, n), *dw3 = fcopy(dw1, C), *db3 = fcopy(db1, C);
        run_norm_bwd(be1, kind, M, C, dx1, dw1, db1, G, x, w, mean, rstd);
        run_norm_bwd(be3, kind, M, C, dx3, dw3, db3, G, x, w, mean, rstd);
        snprintf(what, sizeof what, "%s bwd %dx%d 3 threads vs 1", names[kind], M, C);
        t_allclose(what, dx3, dx1, n, 1e-5f, 1e-6f);
        t_allclose(what, dw3, dw1, C, 1e-5f, 1e-5f);
        t_allclose(what, db3, db1, C, 1e-5f, 1e-5f);
        if (s == 0) { /* finite differences */
            c.G = dcopy(G, n);
            double *gx = fd_grad(norm_loss, &c, c.x, n, 1e-6), *gw = fd_grad(norm_loss, &c, c.w, C, 1e-6);
            float *dx0 = frand(n, -1, 1), *dw0 = frand(C, -1, 1), *db0 = frand(C, -1, 1);
            float *dx = fcopy(dx0, n), *dw = fcopy(dw0, C), *db = fcopy(db0, C);
            run_norm_bwd(be1, kind, M, C, dx, dw, db, G, x, w, mean, rstd);
            snprintf(what, sizeof what, "%s bwd dinp", names[kind]);
            check_grad(what, dx, dx0, gx, n, 2e-3f, 1e-4f);
            snprintf(what, sizeof what, "%s bwd dw", names[kind]);
            check_grad(what, dw, dw0, gw, C, 2e-3f, 1e-4f);
            if (kind == 1) {
                double *gb = fd_grad(norm_loss, &c, c.b, C, 1e-6);
                check_grad("layernorm bwd db", db, db0, gb, C, 2e-3f, 1e-4f);
                free(gb);
            } else {
                t_allclose("norm bwd db untouched", db, db0, C, 0, 0);
            }
            free(gx); free(gw); free(dx0); free(dw0); free(db0); free(dx); free(dw); free(db); free(c.G);
        }
        free(x); free(w); free(b); free(out); free(mean); free(rstd); free(c.x); free(c.w); free(c.b);
        free(od); free(md); free(rd); free(G); free(dx1); free(dw1); free(db1); free(dx3); free(dw3); free(db3);
    }
}

/* ---------------------------------------------------------------------------------------------
 * attention */

typedef struct {
    int B, H, Nq, Nk, D, qs, kvs, os; double scale;
    double *q, *k, *v, *G; /* buffers laid out with the strides; G like out */
    size_t qn, kvn, on;
} att_ctx;

static void ref_attention(const att_ctx *c, double *out, double *lse, double *pm) {
    double *s = malloc((size_t)c->Nk * sizeof(double));
    if (pm) memset(pm, 0, (size_t)c->B * c->Nq * c->Nk * sizeof(double));
    for (int b = 0; b < c->B; b++)
        for (int h = 0; h < c->H; h++)
            for (int i = 0; i < c->Nq; i++) {
                const double *q = c->q + ((size_t)b * c->Nq + i) * c->qs + (size_t)h * c->D;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < c->Nk; j++) {
                    const double *k = c->k + ((size_t)b * c->Nk + j) * c->kvs + (size_t)h * c->D;
                    s[j] = 0;
                    for (int d = 0; d < c->D; d++) s[j] += q[d] * k[d];
                    s[j] *= c->scale;
                    if (s[j] > mx) mx = s[j];
                }
                for (int j = 0; j < c->Nk; j++) sum += exp(s[j] - mx);
                if (lse) lse[((size_t)b * c->H + h) * c->Nq + i] = mx + log(sum);
                double *o = out + ((size_t)b * c->Nq + i) * c->os + (size_t)h * c->D;
                for (int d = 0; d < c->D; d++) o[d] = 0;
                for (int j = 0; j < c->Nk; j++) {
                    double p = exp(s[j] - mx) / sum;
                    if (pm) pm[((size_t)b * c->Nq + i) * c->Nk + j] += p / c->H;
                    const double *v = c->v + ((size_t)b * c->Nk + j) * c->kvs + (size_t)h * c->D;
                    for (int d = 0; d < c->D; d++) o[d] += p * v[d];
                }
            }
    free(s);
}
/* loss over the written elements of out only (gaps between heads' slices stay 0) */
static double att_loss(void *c_) {
    att_ctx *c = c_;
    double *o = calloc(c->on, sizeof(double));
    ref_attention(c, o, NULL, NULL);
    double l = dot_d(o, c->G, c->on);
    free(o);
    return l;
}
/* naive double backward (same math as the backend, no blocking) for shapes too big for FD */
static void ref_attention_backward(const att_ctx *c, double *dq, double *dk, double *dv) {
    double *p = malloc((size_t)c->Nk * sizeof(double)), *dp = malloc((size_t)c->Nk * sizeof(double));
    double *out = calloc(c->on, sizeof(double));
    ref_attention(c, out, NULL, NULL);
    for (int b = 0; b < c->B; b++)
        for (int h = 0; h < c->H; h++)
            for (int i = 0; i < c->Nq; i++) {
                size_t qo = ((size_t)b * c->Nq + i) * c->qs + (size_t)h * c->D;
                size_t oo = ((size_t)b * c->Nq + i) * c->os + (size_t)h * c->D;
                double mx = -INFINITY, sum = 0, di = 0;
                for (int j = 0; j < c->Nk; j++) {
                    size_t ko = ((size_t)b * c->Nk + j) * c->kvs + (size_t)h * c->D;
                    double s = 0;
                    for (int d = 0; d < c->D; d++) s += c->q[qo + d] * c->k[ko + d];
                    p[j] = s * c->scale;
                    if (p[j] > mx) mx = p[j];
                    dp[j] = 0;
                    for (int d = 0; d < c->D; d++) dp[j] += c->G[oo + d] * c->v[ko + d];
                }
                for (int j = 0; j < c->Nk; j++) sum += (p[j] = exp(p[j] - mx));
                for (int j = 0; j < c->Nk; j++) p[j] /= sum;
                for (int d = 0; d < c->D; d++) di += c->G[oo + d] * out[oo + d];
                for (int j = 0; j < c->Nk; j++) {
                    size_t ko = ((size_t)b * c->Nk + j) * c->kvs + (size_t)h * c->D;
                    double ds = p[j] * (dp[j] - di) * c->scale;
                    for (int d = 0; d < c->D; d++) {
                        dv[ko + d] += p[j] * c->G[oo + d];
                        dq[qo + d] += ds * c->k[ko + d];
                        dk[ko + d] += ds * c->q[qo + d];
                    }
                }
            }
    free(p); free(dp); free(out);
}

/* fused: q, k, v are slices of one [B, N, 3C] buffer (Nq = Nk); else three buffers with padded strides */
static void test_attention(int B, int H, int Nq, int Nk, int D, int fused, int with_pm, int use_fd) {
    int C = H * D;
    att_ctx c = {B, H, Nq, Nk, D, 0, 0, 0, 1.0 / sqrt(D) * 1.3, NULL, NULL, NULL, NULL, 0, 0, 0};
    float *qkv = NULL, *qf, *kf, *vf;
    size_t qn, kvn;
    if (fused) {
        c.qs = c.kvs = 3 * C; c.os = C;
        qn = kvn = (size_t)B * Nq * 3 * C;
        qkv = frand(qn, -1.5, 1.5);
        qf = qkv; kf = qkv + C; vf = qkv + 2 * C;
    } else {
        c.qs = C + 3; c.kvs = C + 1; c.os = C + 2;
        qn = (size_t)B * Nq * c.qs; kvn = (size_t)B * Nk * c.kvs;
        qf = frand(qn, -1.5, 1.5); kf = frand(kvn, -1.5, 1.5); vf = frand(kvn, -1.5, 1.5);
    }
    c.on = (size_t)B * Nq * c.os;
    /* the double copies hold the same layout; for fused, q/k/v point into one double buffer */
    double *base = NULL;
    if (fused) { base = dcopy(qkv, qn); c.q = base; c.k = base + C; c.v = base + 2 * C; c.qn = c.kvn = qn; }
    else { c.q = dcopy(qf, qn); c.k = dcopy(kf, kvn); c.v = dcopy(vf, kvn); c.qn = qn; c.kvn = kvn; }
    float *out = calloc(c.on + 1, sizeof(float)), *lse = frand((size_t)B * H * Nq, 0, 1);
    float *pm = with_pm ? frand((size_t)B * Nq * Nk, 0, 1) : NULL;
    double *od = calloc(c.on, sizeof(double)), *ld = malloc((size_t)B * H * Nq * sizeof(double));
    double *pmd = with_pm ? malloc((size_t)B * Nq * Nk * sizeof(double)) : NULL;
    be3->attention(be3, out, lse, pm, qf, kf, vf, B, H, Nq, Nk, D, c.qs, c.kvs, c.os, (float)c.scale);
    ref_attention(&c, od, ld, pmd);
    char what[160];
    snprintf(what, sizeof what, "attention B%d H%d Nq%d Nk%d D%d fused %d", B, H, Nq, Nk, D, fused);
    check_grad(what, out, NULL, od, c.on, 1e-4f, 2e-5f);
    check_grad("attention lse", lse, NULL, ld, (size_t)B * H * Nq, 1e-5f, 1e-5f);
    if (with_pm) check_grad("attention probs_mean", pm, NULL, pmd, (size_t)B * Nq * Nk, 1e-4f, 1e-6f);
    /* the one-thread backend agrees (on the same path: with probs_mean the forward takes another) */
    float *out1 = calloc(c.on + 1, sizeof(float));
    float *pm1 = with_pm ? malloc((size_t)B * Nq * Nk * sizeof(float)) : NULL;
    be1->attention(be1, out1, NULL, pm1, qf, kf, vf, B, H, Nq, Nk, D, c.qs, c.kvs, c.os, (float)c.scale);
    t_allclose("attention 1 thread vs 3", out1, out, c.on, 1e-6f, 1e-7f);
    free(out1);
    free(pm1);

    /* backward: G nonzero only where out is written */
    float *G = calloc(c.on + 1, sizeof(float));
    for (int r = 0; r < B * Nq; r++)
        for (int j = 0; j < C; j++) G[(size_t)r * c.os + j] = (float)(urand() * 2 - 1);
    c.G = dcopy(G, c.on);
    float *dqkv0 = NULL, *dqkv = NULL, *dq0, *dk0, *dv0, *dq, *dk, *dv;
    if (fused) {
        dqkv0 = frand(qn, -1, 1); dqkv = fcopy(dqkv0, qn);
        dq0 = dqkv0; dk0 = dqkv0 + C; dv0 = dqkv0 + 2 * C; dq = dqkv; dk = dqkv + C; dv = dqkv + 2 * C;
    } else {
        dq0 = frand(qn, -1, 1); dk0 = frand(kvn, -1, 1); dv0 = frand(kvn, -1, 1);
        dq = fcopy(dq0, qn); dk = fcopy(dk0, kvn); dv = fcopy(dv0, kvn);
    }
    be3->attention_backward(be3, dq, dk, dv, G, qf, kf, vf, out, lse, B, H, Nq, Nk, D, c.qs, c.kvs, c.os,
                            (float)c.scale, IV2_ADD);
    double *gq, *gk, *gv, *gall = NULL;
    if (use_fd) {
        if (fused) gall = fd_grad(att_loss, &c, base, qn, 1e-6);
        else { gq = fd_grad(att_loss, &c, c.q, qn, 1e-6); gk = fd_grad(att_loss, &c, c.k, kvn, 1e-6); gv = fd_grad(att_loss, &c, c.v, kvn, 1e-6); }
    } else {
        if (fused) { gall = calloc(qn, sizeof(double)); ref_attention_backward(&c, gall, gall + C, gall + 2 * C); }
        else {
            gq = calloc(qn, sizeof(double)); gk = calloc(kvn, sizeof(double)); gv = calloc(kvn, sizeof(double));
            ref_attention_backward(&c, gq, gk, gv);
        }
    }
    snprintf(what, sizeof what, "attention_backward B%d H%d Nq%d Nk%d D%d fused %d %s", B, H, Nq, Nk, D, fused,
             use_fd ? "vs finite differences" : "vs naive");
    if (fused) check_grad(what, dqkv, dqkv0, gall, qn, 1e-3f, 1e-4f);
    else {
        check_grad(what, dq, dq0, gq, qn, 1e-3f, 1e-4f);
        check_grad(what, dk, dk0, gk, kvn, 1e-3f, 1e-4f);
        check_grad(what, dv, dv0, gv, kvn, 1e-3f, 1e-4f);
        free(gq); free(gk); free(gv);
        free(dq0); free(dk0); free(dv0); free(dq); free(dk); free(dv);
    }
    /* without lse the backward recomputes the softmax: same result */
    if (!fused) {
        float *dq1 = calloc(qn, sizeof(float)), *dq2 = calloc(qn, sizeof(float));
        be1->attention_backward(be1, dq1, NULL, NULL, G, qf, kf, vf, out, lse, B, H, Nq, Nk, D, c.qs, c.kvs, c.os, (float)c.scale, IV2_ADD);
        be1->attention_backward(be1, dq2, NULL, NULL, G, qf, kf, vf, out, NULL, B, H, Nq, Nk, D, c.qs, c.kvs, c.os, (float)c.scale, IV2_ADD);
        t_allclose("attention_backward without lse", dq2, dq1, qn, 1e-4f, 1e-6f);
        free(dq1); free(dq2);
    }
    free(gall); free(dqkv0); free(dqkv);
    free(G); free(c.G); free(out); free(lse); free(pm); free(od); free(ld); free(pmd);
    if (fused) { free(qkv); free(base); }
    else { free(qf); free(kf); free(vf); free(c.q); free(c.k); free(c.v); }
}

/* ---------------------------------------------------------------------------------------------
 * elementwise: GELU, residual, position rows (add_table_rows over every token), axpy */

typedef struct { size_t n; int kind; double *x, *G; } gelu_ctx;
static double ref_gelu1(double x, int kind) {
    if (kind == IV2_GELU_TANH) return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
    return 0.5 * x * (1 + erf(x / sqrt(2.0)));
}
static double gelu_loss(void *c_) {
    gelu_ctx *c = c_;
    double l = 0;
    for (size_t i = 0; i < c->n; i++) l += ref_gelu1(c->x[i], c->kind) * c->G[i];
    return l;
}
static void test_gelu(int kind) {
    size_t n = 100003;
    float *x = frand(n, -6, 6), *out = malloc(n * sizeof(float)), *want = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) want[i] = (float)ref_gelu1(x[i], kind);
    be3->gelu(be3, out, x, n, kind);
    t_allclose(kind ? "gelu tanh" : "gelu erf", out, want, n, 1e-5f, 1e-6f);
    float *inpl = fcopy(x, n);
    be3->gelu(be3, inpl, inpl, n, kind);
    t_allclose("gelu in place", inpl, want, n, 1e-5f, 1e-6f);
    size_t m = 301;
    float *G = frand(m, -1, 1), *d0 = frand(m, -1, 1), *d = fcopy(d0, m);
    be1->gelu_backward(be1, d, G, x, m, kind, IV2_ADD);
    gelu_ctx c = {m, kind, dcopy(x, m), dcopy(G, m)};
    double *g = fd_grad(gelu_loss, &c, c.x, m, 1e-6);
    check_grad(kind ? "gelu tanh backward" : "gelu erf backward", d, d0, g, m, 1e-4f, 1e-5f);
    float *Gb = frand(n, -1, 1), *a = frand(n, -1, 1), *b = fcopy(a, n);
    be1->gelu_backward(be1, a, Gb, x, n, kind, IV2_ADD);
    be3->gelu_backward(be3, b, Gb, x, n, kind, IV2_ADD);
    t_allclose("gelu backward 3 threads vs 1", b, a, n, 0, 0);
    free(x); free(out); free(want); free(inpl); free(G); free(d0); free(d); free(c.x); free(c.G); free(g);
    free(Gb); free(a); free(b);
}

typedef struct { int B, N, C; double *x, *y, *gamma, *s, *G; } res_ctx;
static double res_loss(void *c_) {
    res_ctx *c = c_;
    double l = 0;
    for (int b = 0; b < c->B; b++)
        for (int n = 0; n < c->N; n++)
            for (int j = 0; j < c->C; j++) {
                size_t i = ((size_t)b * c->N + n) * c->C + j;
                l += (c->x[i] + (c->s ? c->s[b] : 1) * (c->gamma ? c->gamma[j] : 1) * c->y[i]) * c->G[i];
            }
    return l;
}
static void test_residual(int with_gamma, int with_s) {
    int B = 3, N = 5, C = 7;
    size_t n = (size_t)B * N * C;
    float *x = frand(n, -1, 1), *y = frand(n, -1, 1), *gamma = frand(C, -1, 1), s[3] = {1.25f, 0.0f, 0.5f};
    res_ctx c = {B, N, C, dcopy(x, n), dcopy(y, n), with_gamma ? dcopy(gamma, C) : NULL, NULL, NULL};
    double sd[3] = {1.25, 0, 0.5};
    if (with_s) c.s = sd;
    float *want = malloc(n * sizeof(float));
    for (int b = 0; b < B; b++)
        for (int i = 0; i < N * C; i++) {
            size_t k = (size_t)b * N * C + i;
            want[k] = (float)((double)x[k] + (with_s ? sd[b] : 1) * (with_gamma ? (double)gamma[i % C] : 1) * y[k]);
        }
    be3->residual(be3, x, y, with_gamma ? gamma : NULL, with_s ? s : NULL, B, N, C);
    t_allclose("residual", x, want, n, 1e-6f, 1e-7f);
    float *G = frand(n, -1, 1), *dy0 = frand(n, -1, 1), *dg0 = frand(C, -1, 1);
    float *dy = fcopy(dy0, n), *dg = fcopy(dg0, C);
    be3->residual_backward(be3, dy, with_gamma ? dg : NULL, G, y, with_gamma ? gamma : NULL, with_s ? s : NULL, B, N, C, IV2_ADD);
    c.G = dcopy(G, n);
    double *gy = fd_grad(res_loss, &c, c.y, n, 1e-6);
    check_grad("residual_backward dy", dy, dy0, gy, n, 1e-4f, 1e-5f);
    if (with_gamma) {
        double *gg = fd_grad(res_loss, &c, c.gamma, C, 1e-6);
        check_grad("residual_backward dgamma", dg, dg0, gg, C, 1e-4f, 1e-5f);
        free(gg);
    }
    /* big threaded vs one thread */
    int Bb = 2, Nb = 300, Cb = 129;
    size_t nb = (size_t)Bb * Nb * Cb;
    float *Y = frand(nb, -1, 1), *Gb = frand(nb, -1, 1), *gm = frand(Cb, -1, 1), sb[2] = {1.5f, 0.75f};
    float *a1 = frand(nb, -1, 1), *a2 = frand(Cb, -1, 1), *b1 = fcopy(a1, nb), *b2 = fcopy(a2, Cb);
    be1->residual_backward(be1, a1, a2, Gb, Y, gm, sb, Bb, Nb, Cb, IV2_ADD);
    be3->residual_backward(be3, b1, b2, Gb, Y, gm, sb, Bb, Nb, Cb, IV2_ADD);
    t_allclose("residual_backward big dy 3 threads vs 1", b1, a1, nb, 1e-6f, 1e-6f);
    t_allclose("residual_backward big dgamma 3 threads vs 1", b2, a2, Cb, 1e-5f, 1e-5f);
    free(Y); free(Gb); free(gm); free(a1); free(a2); free(b1); free(b2);
    free(x); free(y); free(gamma); free(c.x); free(c.y); free(c.gamma); free(c.G); free(want); free(G);
    free(dy0); free(dg0); free(dy); free(dg); free(gy);
}

static void test_add_rows_axpy(void) {
    int B = 3, N = 301, C = 67;
    size_t n = (size_t)B * N * C;
    float *x = frand(n, -1, 1), *pe = frand((size_t)N * C, -1, 1), *want = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) want[i] = x[i] + pe[i % ((size_t)N * C)];
    int32_t *rows = malloc(sizeof(int32_t) * B * N);   /* every token of B samples: row b N + n */
    for (int i = 0; i < B * N; i++) rows[i] = i;
    be3->add_table_rows(be3, x, pe, rows, B * N, N, C);
    t_allclose("add_table_rows, every token", x, want, n, 0, 0);
    float *dpe0 = frand((size_t)N * C, -1, 1), *dpe = fcopy(dpe0, (size_t)N * C);
    double *g = calloc((size_t)N * C, sizeof(double)); /* d/dpe of sum((x+pe) G) = sum_b G */
    be3->add_table_rows_backward(be3, dpe, x, rows, B * N, N, C);   /* x serves as the gradient */
    free(rows);
    for (size_t i = 0; i < n; i++) g[i % ((size_t)N * C)] += x[i];
    check_grad("add_table_rows_backward, every token", dpe, dpe0, g, (size_t)N * C, 1e-5f, 1e-6f);
    float *y = frand(n, -1, 1), *yw = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) yw[i] = (float)((double)y[i] + -0.75 * x[i]);
    be3->axpy(be3, y, x, -0.75f, n);
    t_allclose("axpy", y, yw, n, 1e-6f, 1e-7f);
    free(x); free(pe); free(want); free(dpe0); free(dpe); free(g); free(y); free(yw);
}

/* ---------------------------------------------------------------------------------------------
 * gather / scatter, mean_rows, l2norm */

static void test_gather_scatter_mean(void) {
    int rows = 41, C = 1031, n = 57;
    int32_t idx[57];
    for (int i = 0; i < n; i++) idx[i] = (int32_t)(urand() * rows); /* repeats on purpose */
    idx[0] = 0; idx[1] = rows - 1; idx[2] = idx[3];
    float *inp = frand((size_t)rows * C, -1, 1), *out = malloc((size_t)n * C * sizeof(float));
    be3->gather_rows(be3, out, inp, idx, n, C);
    int bad = 0;
    for (int i = 0; i < n; i++) bad += memcmp(out + (size_t)i * C, inp + (size_t)idx[i] * C, C * sizeof(float)) != 0;
    CHECK(bad == 0, "gather_rows: %d rows differ", bad);
    float *d0 = frand((size_t)rows * C, -1, 1), *d = fcopy(d0, (size_t)rows * C);
    double *want = dcopy(d0, (size_t)rows * C);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < C; j++) want[(size_t)idx[i] * C + j] += out[(size_t)i * C + j];
    be3->scatter_add_rows(be3, d, out, idx, n, C);
    check_grad("scatter_add_rows (repeated indices)", d, NULL, want, (size_t)rows * C, 1e-6f, 1e-6f);
    free(inp); free(out); free(d0); free(d); free(want);

    int B = 3, N = 257, Cm = 45;
    size_t nn = (size_t)B * N * Cm;
    float *x = frand(nn, -1, 1), *m = frand((size_t)B * Cm, -1, 1);
    double *md = calloc((size_t)B * Cm, sizeof(double));
    for (int b = 0; b < B; b++)
        for (int i = 0; i < N; i++)
            for (int j = 0; j < Cm; j++) md[(size_t)b * Cm + j] += x[((size_t)b * N + i) * Cm + j] / (double)N;
    be3->mean_rows(be3, m, x, B, N, Cm);
    check_grad("mean_rows", m, NULL, md, (size_t)B * Cm, 1e-5f, 1e-6f);
    float *dx0 = frand(nn, -1, 1), *dx = fcopy(dx0, nn);
    double *gx = malloc(nn * sizeof(double));
    for (size_t i = 0; i < nn; i++) gx[i] = m[(i / ((size_t)N * Cm)) * Cm + i % Cm] / (double)N;
    be3->mean_rows_backward(be3, dx, m, B, N, Cm); /* m serves as the gradient */
    check_grad("mean_rows_backward", dx, dx0, gx, nn, 1e-5f, 1e-6f);
    free(x); free(m); free(md); free(dx0); free(dx); free(gx);
}

typedef struct { int M, C; double *x, *G; } l2_ctx;
static double l2_loss(void *c_) {
    l2_ctx *c = c_;
    double l = 0;
    for (int i = 0; i < c->M; i++) {
        const double *x = c->x + (size_t)i * c->C;
        double nrm = sqrt(dot_d(x, x, c->C));
        l += dot_d(x, c->G + (size_t)i * c->C, c->C) / nrm;
    }
    return l;
}
static void test_l2norm(void) {
    int M = 9, C = 37;
    size_t n = (size_t)M * C;
    float *x = frand(n, -2, 2), *out = malloc(n * sizeof(float)), *nrm = malloc(M * sizeof(float));
    double *od = malloc(n * sizeof(double)), *nd = malloc(M * sizeof(double));
    for (int i = 0; i < M; i++) {
        double s = 0;
        for (int j = 0; j < C; j++) s += (double)x[(size_t)i * C + j] * x[(size_t)i * C + j];
        nd[i] = sqrt(s);
        for (int j = 0; j < C; j++) od[(size_t)i * C + j] = x[(size_t)i * C + j] / nd[i];
    }
    be3->l2norm(be3, out, nrm, x, M, C);
    check_grad("l2norm", out, NULL, od, n, 1e-5f, 1e-7f);
    check_grad("l2norm norm", nrm, NULL, nd, M, 1e-6f, 1e-7f);
    float *G = frand(n, -1, 1), *d0 = frand(n, -1, 1), *d = fcopy(d0, n);
    be3->l2norm_backward(be3, d, G, out, nrm, M, C);
    l2_ctx c = {M, C, dcopy(x, n), dcopy(G, n)};
    double *g = fd_grad(l2_loss, &c, c.x, n, 1e-6);
    check_grad("l2norm_backward", d, d0, g, n, 1e-4f, 1e-5f);
    free(x); free(out); free(nrm); free(od); free(nd); free(G); free(d0); free(d); free(c.x); free(c.G); free(g);
}

/* ---------------------------------------------------------------------------------------------
 * patchify, the heads' loss, sumsq, adamw */

static void test_patchify(int T, int H, int W, int p, int tub) {
    size_t nf = (size_t)T * H * W * 3;
    uint8_t *fr = malloc(nf);
    for (size_t i = 0; i < nf; i++) fr[i] = (uint8_t)(urand() * 256);
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    int gt = T / tub, gy = H / p, gx = W / p, cols = 3 * tub * p * p;
    size_t n = (size_t)gt * gy * gx * cols;
    float *out = frand(n, 0, 1), *want = malloc(n * sizeof(float));
    /* walk the pixels and put each where the Conv3d weight order says */
    for (int t = 0; t < gt * tub; t++)
        for (int y = 0; y < gy * p; y++)
            for (int x = 0; x < gx * p; x++)
                for (int c = 0; c < 3; c++) {
                    size_t row = ((size_t)(t / tub) * gy + y / p) * gx + x / p;
                    size_t col = (((size_t)c * tub + t % tub) * p + y % p) * p + x % p;
                    uint8_t v = fr[(((size_t)t * H + y) * W + x) * 3 + c];
                    want[row * cols + col] = (float)(((double)v / 255.0 - mean[c]) / std[c]);
                }
    be3->patchify(be3, out, fr, T, H, W, p, tub, mean, std, NULL, 0, 0, 0);
    char what[96];
    snprintf(what, sizeof what, "patchify T%d %dx%d p%d tubelet %d", T, H, W, p, tub);
    t_allclose(what, out, want, n, 1e-6f, 1e-6f);
    /* rows: tokens of two "samples" of half the frames each (T even), a CLS first in each; rows
     * picked out of order, the CLS ones zero, the rest the patch rows of the full call */
    if (gt % 2 == 0) {
        int P = gt * gy * gx / 2, ntok = P + 1, nr = 5;
        int32_t rows[5] = {ntok + 1 + P - 1, 0, 3 % ntok, ntok, 1};
        float *o2 = frand((size_t)nr * cols, 0, 1), *w2 = calloc((size_t)nr * cols, sizeof(float));
        for (int i = 0; i < nr; i++) {
            int s = rows[i] / ntok, tok = rows[i] % ntok;
            if (tok) memcpy(w2 + (size_t)i * cols, out + ((size_t)s * P + tok - 1) * cols, sizeof(float) * cols);
        }
        be3->patchify(be3, o2, fr, T, H, W, p, tub, mean, std, rows, nr, ntok, 1);
        snprintf(what, sizeof what, "patchify rows (CLS zero) T%d %dx%d p%d tubelet %d", T, H, W, p, tub);
        t_allclose(what, o2, w2, (size_t)nr * cols, 0, 0);
        free(o2); free(w2);
    }
    free(fr); free(out); free(want);
}

/* l2_cos_loss: loss rows against the formula in double, the gradient against central finite
 * differences of scale * sum(2 - 2 <x/|x|, t>), written over NaN */
typedef struct { int M, C; double scale; double *x, *t; } l2c_ctx;
static double l2c_loss(void *c_) {
    l2c_ctx *c = c_;
    double L = 0;
    for (int i = 0; i < c->M; i++) {
        double xx = 0, xt = 0;
        for (int j = 0; j < c->C; j++) {
            double x = c->x[(size_t)i * c->C + j];
            xx += x * x;
            xt += x * c->t[(size_t)i * c->C + j];
        }
        L += 2 - 2 * xt / sqrt(xx);
    }
    return c->scale * L;
}
static void test_l2_cos_loss(void) {
    int M = 13, C = 37;
    size_t n = (size_t)M * C;
    float scale = 0.37f;
    float *x = frand(n, -1, 1), *t = frand(n, -1, 1), *l = malloc(M * 4), *d = fnan(n);
    be3->l2norm(be3, t, NULL, t, M, C);   /* unit targets, as the teachers' */
    l2c_ctx c = {M, C, scale, dcopy(x, n), dcopy(t, n)};
    double *lw = malloc(M * sizeof(double));
    for (int i = 0; i < M; i++) {
        l2c_ctx r = {1, C, 1.0, c.x + (size_t)i * C, c.t + (size_t)i * C};
        lw[i] = l2c_loss(&r);
    }
    double *gw = fd_grad(l2c_loss, &c, c.x, n, 1e-5);
    be3->l2_cos_loss(be3, l, d, x, t, M, C, scale);
    check_grad("l2_cos_loss rows", l, NULL, lw, M, 1e-5f, 1e-6f);
    check_grad("l2_cos_loss dinp (finite differences; written over NaN)", d, NULL, gw, n, 1e-4f, 1e-6f);
    float *l2 = malloc(M * 4);
    be3->l2_cos_loss(be3, l2, NULL, x, t, M, C, scale);   /* no gradient wanted */
    t_allclose("l2_cos_loss without dinp", l2, l, M, 0, 0);
    free(x); free(t); free(l); free(d); free(c.x); free(c.t); free(lw); free(gw); free(l2);
}

/* x[i] += table[rows[i] % n_table] and its backward (rows repeating across the "samples") */
static void test_add_table_rows(void) {
    int n = 23, nt = 7, C = 37;
    int32_t rows[23];
    for (int i = 0; i < n; i++) rows[i] = (i * 5 + 3) % (3 * nt);   /* three samples of nt tokens */
    float *x = frand((size_t)n * C, -1, 1), *tb = frand((size_t)nt * C, -1, 1), *want = fcopy(x, (size_t)n * C);
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++) want[(size_t)i * C + c] += tb[(size_t)(rows[i] % nt) * C + c];
    be3->add_table_rows(be3, x, tb, rows, n, nt, C);
    t_allclose("add_table_rows", x, want, (size_t)n * C, 1e-6f, 1e-6f);
    float *g = frand((size_t)n * C, -1, 1), *d0 = frand((size_t)nt * C, -1, 1), *d = fcopy(d0, (size_t)nt * C);
    float *dw = fcopy(d0, (size_t)nt * C);
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++) dw[(size_t)(rows[i] % nt) * C + c] += g[(size_t)i * C + c];
    be3->add_table_rows_backward(be3, d, g, rows, n, nt, C);
    t_allclose("add_table_rows_backward (adds)", d, dw, (size_t)nt * C, 1e-5f, 1e-6f);
    free(x); free(tb); free(want); free(g); free(d0); free(d); free(dw);
}

/* matmul_batch_w = one matmul per weight slice, its backward = matmul_backward's dw per slice */
static void test_matmul_batch_w(void) {
    int M = 19, K = 23, N = 17;
    size_t ws = (size_t)N * K, os = (size_t)M * N;
    float *x = frand((size_t)M * K, -1, 1), *w = frand(3 * ws, -1, 1), *o = malloc(3 * os * 4), *o2 = malloc(3 * os * 4);
    be3->matmul_batch_w(be3, o, x, w, M, K, N, 3, ws, os);
    for (int i = 0; i < 3; i++) be3->matmul(be3, o2 + i * os, x, w + i * ws, NULL, M, K, N);
    t_allclose("matmul_batch_w = matmul per slice", o, o2, 3 * os, 0, 0);
    float *d0 = frand(3 * ws, -1, 1), *d = fcopy(d0, 3 * ws), *d2 = fcopy(d0, 3 * ws);
    be3->matmul_batch_w_backward(be3, d, o, x, M, K, N, 3, ws, os);
    for (int i = 0; i < 3; i++)
        be3->matmul_backward(be3, NULL, d2 + i * ws, NULL, o + i * os, x, w + i * ws, M, K, N, IV2_ADD);
    t_allclose("matmul_batch_w_backward = matmul_backward's dw per slice (adds)", d, d2, 3 * ws, 0, 0);
    free(x); free(w); free(o); free(o2); free(d0); free(d); free(d2);
}

static void test_sumsq(void) {
    size_t n = 200003;
    float *x = frand(n, -1, 1);
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    float acc = 1.5f;
    be3->sumsq(be3, &acc, x, n);
    CHECK(fabs(acc - (s + 1.5)) <= 1e-5 * (s + 1.5), "sumsq: got %.8g want %.8g", acc, s + 1.5);
    free(x);
}

static void test_adamw(void) {
    size_t n = 50001;
    float *p = frand(n, -1, 1), *master = fcopy(p, n), *m = calloc(n, sizeof(float)), *v = calloc(n, sizeof(float));
    double *pd = dcopy(p, n), *md = calloc(n, sizeof(double)), *vd = calloc(n, sizeof(double));
    float *param = calloc(n, sizeof(float)); /* separate param: receives the master copy */
    const double lr = 1e-3, b1 = 0.9, b2 = 0.98, eps = 1e-6, wd = 0.05, gs = 0.5;
    for (int t = 1; t <= 3; t++) {
        float *g = frand(n, -2, 2);
        if (t == 2) g[0] = 0, g[1] = 1e-4f;
        be3->adamw(be3, param, master, g, m, v, n, (float)lr, (float)b1, (float)b2, (float)eps, (float)wd, t, (float)gs);
        /* torch.optim.AdamW, written out: decoupled decay, then the bias-corrected Adam step */
        for (size_t i = 0; i < n; i++) {
            double gi = g[i] * gs;
            pd[i] *= 1 - lr * wd;
            md[i] = b1 * md[i] + (1 - b1) * gi;
            vd[i] = b2 * vd[i] + (1 - b2) * gi * gi;
            double mh = md[i] / (1 - pow(b1, t)), vh = vd[i] / (1 - pow(b2, t));
            pd[i] -= lr * mh / (sqrt(vh) + eps);
        }
        free(g);
    }
    check_grad("adamw master", master, NULL, pd, n, 1e-6f, 1e-7f);
    t_allclose("adamw param = master", param, master, n, 0, 0);
    check_grad("adamw m", m, NULL, md, n, 1e-5f, 1e-7f);
    check_grad("adamw v", v, NULL, vd, n, 1e-5f, 1e-9f);
    /* master may equal param on the CPU */
    float *q = fcopy(p, n), *m2 = calloc(n, sizeof(float)), *v2 = calloc(n, sizeof(float)), *g = frand(n, -1, 1);
    float *q2 = fcopy(p, n), *ms = fcopy(p, n), *m3 = calloc(n, sizeof(float)), *v3 = calloc(n, sizeof(float));
    be1->adamw(be1, q, q, g, m2, v2, n, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, 1, 1.0f);
    be1->adamw(be1, q2, ms, g, m3, v3, n, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, 1, 1.0f);
    t_allclose("adamw with master == param", q, q2, n, 0, 0);
    free(q); free(m2); free(v2); free(g); free(q2); free(ms); free(m3); free(v3);
    free(p); free(master); free(m); free(v); free(pd); free(md); free(vd); free(param);
}

/* ---------------------------------------------------------------------------------------------
 * backend selection and memory */

/* ---------------------------------------------------------------------------------------------
 * IV2_SET: the input gradient written, not added. Over NaN it must equal IV2_ADD onto zeros, bit
 * for bit (0 + x is x), on one thread and on three; a read of the old value shows as NaN. */

static void check_set(const char *what, const float *set, const float *add, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += memcmp(&set[i], &add[i], sizeof(float)) != 0;
    CHECK(bad == 0, "%s: IV2_SET over NaN = IV2_ADD onto zeros (%zu of %zu differ)", what, bad, n);
}
static void test_set_semantics(iv2_backend *be) {
    int M = 37, K = 45, N = 29, B = 3, Nt = 7, C = 24, H = 3, D = 8, Nq = 150, Nk = 131;
    float *x = frand((size_t)M * K, -1, 1), *w = frand((size_t)N * K, -1, 1), *G = frand((size_t)M * N, -1, 1);
    float *dw = calloc((size_t)N * K, sizeof(float)), *a = calloc((size_t)M * K, sizeof(float)), *s = fnan((size_t)M * K);
    be->matmul_backward(be, a, dw, NULL, G, x, w, M, K, N, IV2_ADD);
    be->matmul_backward(be, s, dw, NULL, G, x, w, M, K, N, IV2_SET);
    check_set("matmul_backward dinp", s, a, (size_t)M * K);
    free(a); free(s);
    /* the norms, GELU, residual on [B*Nt, C] */
    int R = B * Nt;
    size_t n = (size_t)R * C;
    float *xr = frand(n, -2, 2), *g = frand(n, -1, 1), *wc = frand(C, 0.5, 1.5), *mean = malloc(R * 4), *rstd = malloc(R * 4);
    float *out = malloc(n * 4), *dwc = calloc(C, 4), *dbc = calloc(C, 4);
    be->layernorm(be, out, mean, rstd, xr, wc, NULL, R, C, 1e-5f);
    a = calloc(n, 4); s = fnan(n);
    be->layernorm_backward(be, a, dwc, dbc, g, xr, wc, mean, rstd, R, C, IV2_ADD);
    be->layernorm_backward(be, s, dwc, dbc, g, xr, wc, mean, rstd, R, C, IV2_SET);
    check_set("layernorm_backward dinp", s, a, n);
    free(a); free(s);
    be->rmsnorm(be, out, rstd, xr, wc, R, C, 1e-5f);
    a = calloc(n, 4); s = fnan(n);
    be->rmsnorm_backward(be, a, dwc, g, xr, wc, rstd, R, C, IV2_ADD);
    be->rmsnorm_backward(be, s, dwc, g, xr, wc, rstd, R, C, IV2_SET);
    check_set("rmsnorm_backward dinp", s, a, n);
    free(a); free(s);
    for (int kind = 0; kind < 2; kind++) {
        a = calloc(n, 4); s = fnan(n);
        be->gelu_backward(be, a, g, xr, n, kind, IV2_ADD);
        be->gelu_backward(be, s, g, xr, n, kind, IV2_SET);
        check_set(kind == IV2_GELU_TANH ? "gelu_backward (tanh) dinp" : "gelu_backward (erf) dinp", s, a, n);
        free(a); free(s);
    }
    float sc[3] = {1.25f, 0.0f, 0.8f};   /* a dropped sample: its rows are written as 0 */
    a = calloc(n, 4); s = fnan(n);
    be->residual_backward(be, a, dwc, g, xr, wc, sc, B, Nt, C, IV2_ADD);
    be->residual_backward(be, s, dwc, g, xr, wc, sc, B, Nt, C, IV2_SET);
    check_set("residual_backward dy (drop path)", s, a, n);
    free(a); free(s);
    /* attention on a fused qkv buffer [B, N, 3C'] (several query blocks): SET writes every slot */
    int Ca = H * D;
    size_t nq = (size_t)B * Nq * 3 * Ca;
    float *qkv = frand(nq, -1, 1), *o = malloc((size_t)B * Nq * Ca * 4), *lse = malloc((size_t)B * H * Nq * 4);
    float *go = frand((size_t)B * Nq * Ca, -1, 1);
    be->attention(be, o, lse, NULL, qkv, qkv + Ca, qkv + 2 * Ca, B, H, Nq, Nq, D, 3 * Ca, 3 * Ca, Ca, 0.3f);
    a = calloc(nq, 4); s = fnan(nq);
    be->attention_backward(be, a, a + Ca, a + 2 * Ca, go, qkv, qkv + Ca, qkv + 2 * Ca, o, lse, B, H, Nq, Nq, D, 3 * Ca,
                           3 * Ca, Ca, 0.3f, IV2_ADD);
    be->attention_backward(be, s, s + Ca, s + 2 * Ca, go, qkv, qkv + Ca, qkv + 2 * Ca, o, lse, B, H, Nq, Nq, D, 3 * Ca,
                           3 * Ca, Ca, 0.3f, IV2_SET);
    check_set("attention_backward dq, dk, dv (fused qkv)", s, a, nq);
    free(a); free(s);
    /* Nq != Nk, separate buffers; dk alone (dq, dv NULL) */
    float *q = frand((size_t)B * Nq * Ca, -1, 1), *k = frand((size_t)B * Nk * Ca, -1, 1), *v = frand((size_t)B * Nk * Ca, -1, 1);
    be->attention(be, o, lse, NULL, q, k, v, B, H, Nq, Nk, D, Ca, Ca, Ca, 0.3f);
    a = calloc((size_t)B * Nk * Ca, 4); s = fnan((size_t)B * Nk * Ca);
    be->attention_backward(be, NULL, a, NULL, go, q, k, v, o, lse, B, H, Nq, Nk, D, Ca, Ca, Ca, 0.3f, IV2_ADD);
    be->attention_backward(be, NULL, s, NULL, go, q, k, v, o, lse, B, H, Nq, Nk, D, Ca, Ca, Ca, 0.3f, IV2_SET);
    check_set("attention_backward dk alone, Nq != Nk", s, a, (size_t)B * Nk * Ca);
    free(a); free(s);
    free(q); free(k); free(v); free(qkv); free(o); free(lse); free(go);
    free(x); free(w); free(G); free(dw); free(xr); free(g); free(wc); free(mean); free(rstd); free(out); free(dwc);
    free(dbc);
}

static void test_backend_create(void) {
    iv2_backend *be = iv2_backend_create("cpu", 2);
    CHECK(be && strcmp(be->name, "cpu") == 0 && be->dtype == IV2_F32 && be->esize == 4 && be->threads == 2,
          "cpu backend fields");
    if (be) {
        float *buf = be->alloc(be, 1000 * sizeof(float));
        int nz = 0;
        for (int i = 0; i < 1000; i++) nz += buf[i] != 0.0f;
        CHECK(nz == 0 && ((uintptr_t)buf & 63) == 0, "alloc zero-filled and 64-byte aligned");
        float h[5] = {1, 2, 3, 4, 5}, back[5] = {0};
        be->upload(be, IV2_AT(be, buf, 10), h, 5);
        be->download(be, back, IV2_AT(be, buf, 10), 5);
        CHECK(memcmp(h, back, sizeof h) == 0, "upload/download round trip");
        be->memset0(be, buf, 1000 * sizeof(float));
        be->download(be, back, IV2_AT(be, buf, 10), 5);
        CHECK(back[0] == 0 && back[4] == 0, "memset0");
        be->sync(be);
        be->free(be, buf);
    }
    iv2_backend_destroy(be);
    iv2_backend *bad = iv2_backend_create("tpu", 1);
    CHECK(!bad && strstr(iv2_errmsg(), "tpu"), "unknown backend names itself: '%s'", iv2_errmsg());
    bad = iv2_backend_create("cuda:x", 1);
    CHECK(!bad && strstr(iv2_errmsg(), "cuda:x"), "bad ordinal rejected: '%s'", iv2_errmsg());
#ifndef IV2_CUDA
    bad = iv2_backend_create("cuda", 1);
    CHECK(!bad && strstr(iv2_errmsg(), "not compiled"), "cuda without CUDA=1: '%s'", iv2_errmsg());
#endif
    iv2_backend_destroy(NULL);
}

int main(void) {
    test_backend_create();
    be1 = iv2_cpu_backend_create(1);
    be3 = iv2_cpu_backend_create(3);

    test_matmul_fwd(be1, 7, 9, 5, 1);
    test_matmul_fwd(be3, 37, 53, 29, 0);
    test_matmul_fwd(be3, 301, 129, 67, 1);   /* row panels */
    test_matmul_fwd(be3, 5, 517, 1001, 1);   /* column panels */
    test_matmul_fwd(be3, 1, 100, 3, 1);
    test_matmul_bwd();

    test_norm(0);
    test_norm(1);
    test_norm(2);

    /* attention: Nq != Nk with padded strides; fused qkv; pooling (Nq = 1) with probs_mean;
     * odd D; big shapes spanning several query blocks against the naive backward */
    test_attention(2, 3, 5, 9, 11, 0, 1, 1);
    test_attention(2, 3, 13, 13, 7, 1, 0, 1);
    test_attention(2, 4, 1, 17, 6, 0, 1, 1);
    test_attention(1, 2, 150, 131, 20, 0, 1, 0);
    test_attention(2, 3, 200, 200, 13, 1, 1, 0);
    test_attention(1, 5, 257, 257, 10, 1, 0, 0);
    /* the AVX-512 tiled forward (compute_cpu_attn.c; without probs_mean): keys a whole number
     * of 48-key panels (96) or not (150: 3 panels + 16-key ones, the last partial); D 88 (5.5
     * vectors), 100 (two column passes, the last with a half vector), 32 (whole vectors);
     * query rows not a multiple of the 8- and 4-row tiles; one query row */
    test_attention(1, 2, 70, 96, 100, 0, 0, 0);
    test_attention(2, 2, 37, 150, 88, 0, 0, 0);
    test_attention(1, 3, 130, 130, 32, 1, 0, 0);
    test_attention(2, 2, 1, 50, 24, 0, 0, 0);

    test_gelu(IV2_GELU_ERF);
    test_gelu(IV2_GELU_TANH);
    test_residual(1, 1);
    test_residual(0, 1);
    test_residual(1, 0);
    test_add_rows_axpy();
    test_gather_scatter_mean();
    test_l2norm();
    test_patchify(4, 12, 8, 4, 2);
    test_patchify(3, 9, 6, 3, 1);
    test_patchify(2, 30, 28, 14, 1); /* grid cut off at the edges (H, W not multiples of p) */
    test_l2_cos_loss();
    test_add_table_rows();
    test_matmul_batch_w();
    test_sumsq();
    test_adamw();
    test_set_semantics(be1);
    test_set_semantics(be3);

    iv2_backend_destroy(be1);
    iv2_backend_destroy(be3);
    return test_done();
}
