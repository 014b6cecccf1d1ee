/* test_kernels_emu: the memory-bound backward kernels of kernels/norm.cuh and
 * kernels/elementwise.cuh, run on the CPU under tests/emu/cuda_emu.h, against their formulas
 * computed here in double precision:
 *   LayerNorm / RMSNorm backward  dinp += rstd (dn - mean(dn) - xhat mean(dn xhat)), dn = dout w,
 *                                 dw = sum dout xhat, db = sum dout (fp32 sums in acc);
 *   GELU backward                 dinp += dout gelu'(inp), erf and tanh forms; x *= gelu_tanh'(pre);
 *   residual backward             dy += s gamma dx, dgamma = sum s dx y;
 *   column sums (bias gradients)  acc[j] = sum_i dout[i, j];
 *   gather / scatter-add of rows  out[i] = inp[idx[i]]; dst[idx[i]] += src[i] (indices repeating);
 *   L2 normalisation and its backward; the heads' loss in one pass (l2_cos_loss8_kernel,
 *   l2_cos_loss_kernel): 2 - 2 <x/|x|, t> and its gradient;
 *   the sum of squares on 16-byte vectors (sumsq8_kernel) = the sum in double;
 *   AdamW over a buffer's tensors in one launch (adamw_chunks_kernel) = adamw_kernel per tensor;
 *   the visible tokens' patch rows (patchify_kernel with rows: = the full call's rows, CLS zero),
 *   a table's rows added at indices and the backward's fp32 sums (add_table_rows*_kernel, scalar and
 *   on 16-byte vectors);
 *   residual + norm in one pass (residual_norm8_kernel) = residual8_kernel then norm8_kernel, bit
 *   for bit, and against the formulas.
 * Each runs as the 16-byte-vector kernel (norm_backward8_kernel at every VPL the launch picks
 * and norm_dx_wide_kernel + norm_dwdb8_kernel beside it, alone above C = 1536; gelu_backward8_kernel, residual_backward8_kernel, colsum8_kernel) and as the scalar kernel it
 * stands beside, with the launch geometry of norm.cu / elementwise.cu, on the student's width
 * 1408 and on widths that leave lanes or vectors idle. Gradients land on nonzero values, as they
 * accumulate in the models (IV2_ADD), or on NaN where the kernel is to write them (IV2_SET: a
 * kernel that reads what it should only write shows as a NaN).
 * Column sums end as colsum_out says (cuda_device.cuh): the last block adds them to the bf16
 * gradients and leaves the accumulator and its count zero, which is checked too.
 * Limits: bf16 outputs relative L2 <= 1e-2 (one bf16 rounding is 2^-9); fp32 sums <= 1e-4. */
#include "cuda_emu.h"
extern "C" {
#include "compute.h"
}
#include "cuda_device.cuh"
#include "norm.cuh"
#include "elementwise.cuh"

static int n_pass, n_fail;
static uint32_t rng = 2024;
static float frand() { rng = rng * 1664525u + 1013904223u; return (rng >> 8) / 16777216.f * 2.f - 1.f; }
static std::vector<bf16> rand_bf16(size_t n, float amp) {
    std::vector<bf16> v(n);
    for (auto &x : v) x = __float2bfloat16(frand() * amp);
    return v;
}
static double f(bf16 h) { return __bfloat162float(h); }
/* what an input gradient starts as: values to add to, or NaN (bf16 0xffff) where the kernel writes */
static std::vector<bf16> start_grad(size_t n, int add) {
    if (add) return rand_bf16(n, 1.f);
    std::vector<bf16> v(n);
    for (auto &x : v) x.u = 0xffff;
    return v;
}

static void check(const char *what, const std::vector<double> &want, const float *got, size_t n, double lim) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = got[i] - want[i];
        num += d * d;
        den += want[i] * want[i];
    }
    double err = sqrt(num / (den > 0 ? den : 1));
    bool ok = err <= lim && std::isfinite(err);
    printf("%s %-62s rel L2 %.2e (limit %.0e)\n", ok ? "ok  " : "FAIL", what, err, lim);
    ok ? n_pass++ : n_fail++;
}
static void check_bf16(const char *what, const std::vector<double> &want, const std::vector<bf16> &got, double lim) {
    std::vector<float> g(got.size());
    for (size_t i = 0; i < got.size(); i++) g[i] = __bfloat162float(got[i]);
    check(what, want, g.data(), g.size(), lim);
}

/* a column sum's destination (colsum_out): a zero accumulator and count, and random bf16
 * gradients (one per half) the sums are added to */
struct sums_into {
    int n, halves;
    std::vector<float> acc;
    unsigned count = 0;
    std::vector<bf16> d[2], start[2];
    sums_into(int n_, int halves_) : n(n_), halves(halves_), acc((size_t)n_ * halves_, 0.f) {
        for (int h = 0; h < 2; h++) start[h] = d[h] = rand_bf16(n_, 1.f);
    }
    colsum_out out() { return {acc.data(), &count, d[0].data(), halves == 2 ? d[1].data() : NULL, n, halves}; }
};
/* each half's gradient = its start + the sums want[h * n ..]; the accumulator and count back at zero */
static void check_sums(const char *what, const std::vector<double> &want, const sums_into &s) {
    for (int h = 0; h < s.halves; h++) {
        std::vector<double> w(s.n);
        for (int i = 0; i < s.n; i++) w[i] = f(s.start[h][i]) + want[(size_t)h * s.n + i];
        char hn[224];
        snprintf(hn, sizeof hn, "%s%s", what, s.halves == 1 ? "" : h ? " (db)" : " (dw)");
        check_bf16(hn, w, s.d[h], 1e-2);
    }
    bool zero = s.count == 0;
    for (float v : s.acc) zero = zero && v == 0.f;
    char name[224];
    snprintf(name, sizeof name, "%s: accumulator, count left 0", what);
    printf("%s %s\n", zero ? "ok  " : "FAIL", name);
    zero ? n_pass++ : n_fail++;
}

/* ---- LayerNorm / RMSNorm backward ---- */
static void test_norm_backward(int M, int C, bool ln, bool with_w, bool with_dinp, int add = IV2_ADD) {
    std::vector<bf16> x = rand_bf16((size_t)M * C, 2.f), dy = rand_bf16((size_t)M * C, 1.f);
    std::vector<bf16> w = rand_bf16(C, 1.f), dx0 = start_grad((size_t)M * C, add);
    std::vector<float> mean(M), rstd(M);
    for (int r = 0; r < M; r++) {
        double mu = 0, ss = 0;
        for (int c = 0; c < C; c++) mu += f(x[(size_t)r * C + c]);
        mu = ln ? mu / C : 0;
        for (int c = 0; c < C; c++) { double d = f(x[(size_t)r * C + c]) - mu; ss += d * d; }
        mean[r] = (float)mu;
        rstd[r] = (float)(1 / sqrt(ss / C + 1e-6));
    }
    std::vector<double> dx_want((size_t)M * C), acc_want(2 * (size_t)C, 0.0);
    for (int r = 0; r < M; r++) {
        double mu = mean[r], rs = rstd[r], s1 = 0, s2 = 0;
        for (int c = 0; c < C; c++) {
            size_t i = (size_t)r * C + c;
            double xh = (f(x[i]) - mu) * rs, dn = f(dy[i]) * (with_w ? f(w[c]) : 1);
            s1 += dn;
            s2 += dn * xh;
            acc_want[c] += f(dy[i]) * xh;
            acc_want[C + c] += f(dy[i]);
        }
        s1 = ln ? s1 / C : 0;
        s2 /= C;
        for (int c = 0; c < C; c++) {
            size_t i = (size_t)r * C + c;
            double xh = (f(x[i]) - mu) * rs, dn = f(dy[i]) * (with_w ? f(w[c]) : 1);
            dx_want[i] = (add ? f(dx0[i]) : 0.0) + rs * (dn - s1 - xh * s2);
        }
    }
    const bf16 *wp = with_w ? w.data() : NULL;
    const float *mp = ln ? mean.data() : NULL;
    /* scalar, registers (C <= 1536), two kernels (any C % 8 == 0), and 3: the row in registers, the
     * column sums in shared memory (SMS, at VPL 4, 6 and 13: C <= 3328) */
    for (int vec = 0; vec < 5; vec++) {
        int vpl = (C / 8 + 31) / 32;
        if (vec == 1 && vpl > 6) continue;
        if (vec == 3 && vpl > 13) continue;
        if (vec == 3 && vpl <= 2) continue;
        if (vec == 4 && (vpl <= 2 || vpl > 6)) continue;
        std::vector<bf16> dx = dx0;
        sums_into acc(C, 2);
        bf16 *dxp = with_dinp ? dx.data() : NULL;
        if (vec == 2) {   /* as norm.cu's wide path: dinp by warps of 4-warp blocks, then the column sums */
            if (dxp) {
                dim3 grid = {(unsigned)((M + 3) / 4), 1, 1};
                emu_launch(grid, 128, 0, [&] {
                    norm_dx_wide_kernel(dxp, dy.data(), x.data(), wp, mp, rstd.data(), M, C, add);
                });
            }
            int rows_per = 7;   /* norm.cu takes 128; 7 leaves a warp idle and a tail block */
            dim3 grid = {(unsigned)((C / 8 + 31) / 32), (unsigned)((M + rows_per - 1) / rows_per), 1};
            emu_launch(grid, CS_THREADS, 0, [&] {
                norm_dwdb8_kernel(acc.out(), dy.data(), x.data(), mp, rstd.data(), M, C / 8, rows_per);
            });
        } else if (vec == 4) {   /* PF: SMS with the next row's loads in flight (IV2_NORM_PF=1) */
            vpl = vpl <= 4 ? 4 : 6;
            int rows = 9;   /* two or three rows a warp, one warp with one: the prefetch's edges */
            dim3 grid = {(unsigned)((M + rows - 1) / rows), 1, 1};
            emu_launch(grid, 128, (size_t)4 * 2 * C * 4, [&] {
                if (vpl == 4) norm_backward8_kernel<4, false, true, true>(dxp, acc.out(), dy.data(), x.data(), wp, mp, rstd.data(), M, C, rows, add, {});
                else norm_backward8_kernel<6, false, true, true>(dxp, acc.out(), dy.data(), x.data(), wp, mp, rstd.data(), M, C, rows, add, {});
            });
        } else if (vec == 3) {   /* SMS: [4 warps][2][C] floats of shared memory */
            vpl = vpl <= 4 ? 4 : vpl <= 6 ? 6 : 13;
            int rows = 5;
            dim3 grid = {(unsigned)((M + rows - 1) / rows), 1, 1};
            emu_launch(grid, 128, (size_t)4 * 2 * C * 4, [&] {
                if (vpl == 4) norm_backward8_kernel<4, false, true>(dxp, acc.out(), dy.data(), x.data(), wp, mp, rstd.data(), M, C, rows, add, {});
                else if (vpl == 6) norm_backward8_kernel<6, false, true>(dxp, acc.out(), dy.data(), x.data(), wp, mp, rstd.data(), M, C, rows, add, {});
                else norm_backward8_kernel<13, false, true>(dxp, acc.out(), dy.data(), x.data(), wp, mp, rstd.data(), M, C, rows, add, {});
            });
        } else if (vec) {   /* as norm.cu: VPL rounded up to an instantiation, 128 threads, rows per block */
            vpl = vpl <= 1 ? 1 : vpl <= 2 ? 2 : vpl <= 4 ? 4 : 6;
            int rows = 5;   /* the launch takes M / (a wave of blocks); 5 leaves warps idle and a tail block */
            dim3 grid = {(unsigned)((M + rows - 1) / rows), 1, 1};
            size_t smem = (size_t)2 * C * 4;
            emu_launch(grid, 128, smem, [&] {
                switch (vpl) {
#define NB8(V) norm_backward8_kernel<V, false>(dxp, acc.out(), dy.data(), x.data(), wp, mp, rstd.data(), M, C, rows, add, {})
                case 1: NB8(1); break;
                case 2: NB8(2); break;
                case 4: NB8(4); break;
                default: NB8(6); break;
#undef NB8
                }
            });
        } else {
            int nt = C > 64 * MAXPER ? NORM_THREADS : 64;
            dim3 grid = {(unsigned)((M + ROWS - 1) / ROWS), 1, 1};
            emu_launch(grid, nt, 0, [&] {
                norm_backward_kernel(dxp, acc.out(), dy.data(), x.data(), wp, mp, rstd.data(), M, C, add);
            });
        }
        char what[160];
        const char *name = vec == 4 ? "norm_backward8 SMS PF" : vec == 3 ? "norm_backward8 SMS" : vec == 2 ? "norm_dx_wide + norm_dwdb8" : vec ? "norm_backward8" :
                           "norm_backward (scalar)";
        char vp[16] = "";
        if (vec == 1 || vec >= 3) snprintf(vp, sizeof vp, " VPL %d", vpl);
        snprintf(what, sizeof what, "%s %s %dx%d%s%s%s", name, ln ? "LN" : "RMS", M, C, vp, with_w ? "" : " no weight",
                 add ? "" : " SET");
        if (with_dinp) {
            char w2[192];
            snprintf(w2, sizeof w2, "%s dinp", what);
            check_bf16(w2, dx_want, dx, 1e-2);
        }
        char w3[192];
        snprintf(w3, sizeof w3, "%s dw, db", what);
        check_sums(w3, acc_want, acc);
    }
}

/* ---- RMSNorm backward with the residual backward after it (norm_backward8_kernel<VPL, true>):
 * dx += rms_bwd(dout); dy = s gamma dx (written over NaN); dw, dgamma sums ---- */
static void test_rms_residual_backward(int B, int N, int C, bool with_gamma) {
    int M = B * N;
    std::vector<bf16> x = rand_bf16((size_t)M * C, 2.f), g = rand_bf16((size_t)M * C, 1.f), w = rand_bf16(C, 1.f);
    std::vector<bf16> dx0 = rand_bf16((size_t)M * C, 1.f), y = rand_bf16((size_t)M * C, 1.f);
    std::vector<bf16> gam = rand_bf16(C, 0.5f), dy = start_grad((size_t)M * C, IV2_SET);
    std::vector<float> rstd(M);
    res_bwd rb = {};
    for (int i = 0; i < SCHUNK; i++) rb.s.s[i] = i % 3 == 1 ? 0.f : 1.25f;   /* a dropped sample */
    std::vector<double> dx_want((size_t)M * C), dy_want((size_t)M * C), sums(2 * (size_t)C, 0.0);
    for (int r = 0; r < M; r++) {
        double ss = 0, s2 = 0, sc = rb.s.s[r / N];
        for (int c = 0; c < C; c++) ss += f(x[(size_t)r * C + c]) * f(x[(size_t)r * C + c]);
        rstd[r] = (float)(1 / sqrt(ss / C + 1e-6));
        for (int c = 0; c < C; c++) {
            size_t i = (size_t)r * C + c;
            double xh = f(x[i]) * rstd[r];
            s2 += f(g[i]) * f(w[c]) * xh;
            sums[c] += f(g[i]) * xh;
        }
        s2 /= C;
        for (int c = 0; c < C; c++) {
            size_t i = (size_t)r * C + c;
            double xh = f(x[i]) * rstd[r];
            dx_want[i] = f(dx0[i]) + rstd[r] * (f(g[i]) * f(w[c]) - xh * s2);
            dy_want[i] = sc * (with_gamma ? f(gam[c]) : 1) * dx_want[i];
            sums[C + c] += sc * dx_want[i] * f(y[i]);
        }
    }
    int vpl = (C / 8 + 31) / 32, rows = 5;
    vpl = vpl <= 1 ? 1 : vpl <= 2 ? 2 : vpl <= 4 ? 4 : vpl <= 6 ? 6 : 13;
    /* the column sums in registers (VPL <= 6), or shared memory (VPL >= 4), or that with the next
     * row's loads in flight (sms 2: PF, VPL 4 and 6) */
    for (int sms = vpl > 6 ? 1 : 0; sms < (vpl >= 4 ? (vpl <= 6 ? 3 : 2) : 1); sms++) {
        std::vector<bf16> dx = dx0;
        dy = start_grad((size_t)M * C, IV2_SET);
        sums_into acc(C, 2);
        rb.dy = dy.data(); rb.y = y.data(); rb.gamma = with_gamma ? gam.data() : NULL; rb.has_s = 1; rb.N = N;
        int rws = sms == 2 ? 9 : rows;
        emu_launch(dim3{(unsigned)((M + rws - 1) / rws), 1, 1}, 128, (size_t)(sms ? 4 : 1) * 2 * C * 4, [&] {
#define NB8(V) norm_backward8_kernel<V, true>(dx.data(), acc.out(), g.data(), x.data(), w.data(), NULL, rstd.data(), M, C, rows, IV2_ADD, rb)
#define NB8S(V) norm_backward8_kernel<V, true, true>(dx.data(), acc.out(), g.data(), x.data(), w.data(), NULL, rstd.data(), M, C, rows, IV2_ADD, rb)
#define NB8P(V) norm_backward8_kernel<V, true, true, true>(dx.data(), acc.out(), g.data(), x.data(), w.data(), NULL, rstd.data(), M, C, rws, IV2_ADD, rb)
            if (sms == 2) {
                if (vpl == 4) NB8P(4);
                else NB8P(6);
            } else if (sms) {
                if (vpl == 4) NB8S(4);
                else if (vpl == 6) NB8S(6);
                else NB8S(13);
            } else
                switch (vpl) {
                case 1: NB8(1); break;
                case 2: NB8(2); break;
                case 4: NB8(4); break;
                default: NB8(6); break;
                }
#undef NB8
#undef NB8S
#undef NB8P
        });
        const char *k = sms == 2 ? "norm_backward8 SMS PF" : sms ? "norm_backward8 SMS" : "norm_backward8";
        char what[128];
        snprintf(what, sizeof what, "%s + residual RMS %dx%dx%d%s dinp", k, B, N, C, with_gamma ? " gamma" : "");
        check_bf16(what, dx_want, dx, 1e-2);
        snprintf(what, sizeof what, "%s + residual RMS %dx%dx%d%s dy (over NaN)", k, B, N, C, with_gamma ? " gamma" : "");
        check_bf16(what, dy_want, dy, 1e-2);
        snprintf(what, sizeof what, "%s + residual RMS %dx%dx%d dw, dgamma", k, B, N, C);
        check_sums(what, sums, acc);
    }
}

/* ---- GELU backward ---- */
static double gelu_grad_ref(double x, int kind) {
    if (kind == IV2_GELU_TANH) {
        const double k = sqrt(2.0 / M_PI), u = k * (x + 0.044715 * x * x * x), t = tanh(u);
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x);
    }
    return 0.5 * (1 + erf(x / sqrt(2.0))) + x * exp(-0.5 * x * x) / sqrt(2 * M_PI);
}
static void test_gelu_backward(size_t n, int kind, int add = IV2_ADD) {
    std::vector<bf16> x = rand_bf16(n, 4.f), g = rand_bf16(n, 1.f), d0 = start_grad(n, add);
    std::vector<double> want(n);
    for (size_t i = 0; i < n; i++) want[i] = (add ? f(d0[i]) : 0.0) + f(g[i]) * gelu_grad_ref(f(x[i]), kind);
    for (int vec = 0; vec < 2; vec++) {
        std::vector<bf16> d = d0;
        dim3 grid = {3, 1, 1};   /* fewer threads than elements: the grid-stride loop */
        if (vec) emu_launch(grid, 64, 0, [&] { gelu_backward8_kernel(d.data(), g.data(), x.data(), n / 8, kind, add); });
        else emu_launch(grid, 64, 0, [&] { gelu_backward_kernel(d.data(), g.data(), x.data(), n, kind, add); });
        char what[128];
        snprintf(what, sizeof what, "%s %s n %zu%s", vec ? "gelu_backward8" : "gelu_backward (scalar)",
                 kind == IV2_GELU_TANH ? "tanh" : "erf", n, add ? "" : " SET");
        check_bf16(what, want, d, 1e-2);
    }
}

/* x *= gelu_tanh'(pre): the unfused end of matmul_backward_gelu */
static void test_gelu_grad_scale(size_t n) {
    std::vector<bf16> pre = rand_bf16(n, 4.f), x0 = rand_bf16(n, 1.f);
    std::vector<double> want(n);
    for (size_t i = 0; i < n; i++) want[i] = f(x0[i]) * gelu_grad_ref(f(pre[i]), IV2_GELU_TANH);
    for (int vec = 0; vec < 2; vec++) {
        std::vector<bf16> x = x0;
        dim3 grid = {2, 1, 1};
        if (vec) emu_launch(grid, 64, 0, [&] { gelu_grad_scale8_kernel(x.data(), pre.data(), n / 8); });
        else emu_launch(grid, 64, 0, [&] { gelu_grad_scale_kernel(x.data(), pre.data(), n); });
        char what[96];
        snprintf(what, sizeof what, "%s n %zu", vec ? "gelu_grad_scale8" : "gelu_grad_scale (scalar)", n);
        check_bf16(what, want, x, 1e-2);
    }
}

/* ---- residual backward: dy += s[b] gamma dx, dgamma = sum s[b] dx y ---- */
static void test_residual_backward(int B, int N, int C, bool with_gamma, bool with_s, int add = IV2_ADD) {
    size_t n = (size_t)B * N * C;
    std::vector<bf16> dx = rand_bf16(n, 1.f), y = rand_bf16(n, 1.f), dy0 = start_grad(n, add), gam = rand_bf16(C, 0.5f);
    float sv[3] = {0.f, 1.25f, 0.8f};
    sarg s;
    for (int b = 0; b < SCHUNK; b++) s.s[b] = with_s ? sv[b % 3] : 1.f;
    std::vector<double> dy_want(n), acc_want(C, 0.0);
    for (size_t i = 0; i < n; i++) {
        int c = (int)(i % C), b = (int)(i / ((size_t)N * C));
        double sc = s.s[b], g = with_gamma ? f(gam[c]) : 1;
        dy_want[i] = (add ? f(dy0[i]) : 0.0) + sc * g * f(dx[i]);
        acc_want[c] += sc * f(dx[i]) * f(y[i]);
    }
    const bf16 *gp = with_gamma ? gam.data() : NULL;
    for (int vec = 0; vec < 2; vec++) {
        std::vector<bf16> dy = dy0;
        sums_into acc(C, 1);
        /* elementwise.cu takes 128 rows a block (8 warps x RB rows x 4); 13 leaves warps with one
           row or none and a second block of 2 rows; the scalar kernel: 6 */
        int rows_per = vec ? 13 : 6;
        if (vec) {
            dim3 grid = {(unsigned)((C / 8 + 31) / 32), (unsigned)((B * N + rows_per - 1) / rows_per), 1};
            emu_launch(grid, CS_THREADS, 0, [&] {
                residual_backward8_kernel(dy.data(), acc.out(), dx.data(), y.data(), gp, s, with_s, N, C / 8, B, rows_per,
                                          add);
            });
        } else {
            dim3 grid = {(unsigned)((C + 127) / 128), (unsigned)((B * N + rows_per - 1) / rows_per), 1};
            emu_launch(grid, 128, 0, [&] {
                residual_backward_kernel(dy.data(), acc.out(), dx.data(), y.data(), gp, s, with_s, N, C, B, rows_per, add);
            });
        }
        char what[160];
        snprintf(what, sizeof what, "%s %dx%dx%d%s%s%s", vec ? "residual_backward8" : "residual_backward (scalar)", B,
                 N, C, with_gamma ? " gamma" : "", with_s ? " s" : "", add ? "" : " SET");
        char w1[192], w2[192];
        snprintf(w1, sizeof w1, "%s dy", what);
        snprintf(w2, sizeof w2, "%s dgamma", what);
        check_bf16(w1, dy_want, dy, 1e-2);
        check_sums(w2, acc_want, acc);
    }
}

/* ---- gather and scatter-add of rows: out[i] = inp[idx[i]]; dst[idx[i]] += src[i], indices
 * repeating (the heads' position-embedding gradients) ---- */
static void test_gather_scatter(int n, int R, int C) {
    std::vector<bf16> inp = rand_bf16((size_t)R * C, 1.f), src = rand_bf16((size_t)n * C, 1.f);
    std::vector<bf16> dst0 = rand_bf16((size_t)R * C, 1.f);
    std::vector<int32_t> idx(n);
    for (int i = 0; i < n; i++) idx[i] = (int32_t)((i * 7 + (i % 3)) % R);
    std::vector<double> g_want((size_t)n * C), s_want((size_t)R * C);
    for (size_t i = 0; i < (size_t)R * C; i++) s_want[i] = f(dst0[i]);
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++) {
            g_want[(size_t)i * C + c] = f(inp[(size_t)idx[i] * C + c]);
            s_want[(size_t)idx[i] * C + c] += f(src[(size_t)i * C + c]);
        }
    for (int vec = 0; vec < 2; vec++) {
        std::vector<bf16> out((size_t)n * C), dst = dst0;
        dim3 grid = {3, 1, 1};   /* a grid-stride loop: fewer threads than elements */
        if (vec) {
            emu_launch(grid, 64, 0, [&] { gather8_kernel(out.data(), inp.data(), idx.data(), n, C / 8); });
            emu_launch(grid, 64, 0, [&] { scatter_add8_kernel(dst.data(), src.data(), idx.data(), n, C / 8); });
        } else {
            emu_launch(grid, 64, 0, [&] { gather_kernel(out.data(), inp.data(), idx.data(), n, C); });
            emu_launch(grid, 64, 0, [&] { scatter_add_kernel(dst.data(), src.data(), idx.data(), n, C); });
        }
        char w1[128], w2[128];
        snprintf(w1, sizeof w1, "%s %d of %d rows x %d", vec ? "gather8" : "gather (scalar)", n, R, C);
        snprintf(w2, sizeof w2, "%s %d into %d rows x %d", vec ? "scatter_add8" : "scatter_add (scalar)", n, R, C);
        check_bf16(w1, g_want, out, 1e-6);
        check_bf16(w2, s_want, dst, 1e-2);
    }
}

/* ---- rows to a padded pitch and back (matmul.cu's weight gradient of unaligned rows, K = 588):
 * pad_cols copies each row and zeroes the pitch's tail (written over NaN: a pad left unwritten
 * fails); add_cols adds the first cols of each padded row into the packed rows and nothing of
 * the tail (the tail holds NaN: a column past cols read fails) ---- */
static void test_pad_cols(int rows, int cols, int pitch) {
    std::vector<bf16> src = rand_bf16((size_t)rows * cols, 1.f), pad((size_t)rows * pitch, __float2bfloat16(NAN));
    emu_launch(dim3{3, 1, 1}, 64, 0, [&] { pad_cols_kernel(pad.data(), src.data(), rows, cols, pitch); });
    std::vector<double> want((size_t)rows * pitch);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < pitch; c++) want[(size_t)r * pitch + c] = c < cols ? f(src[(size_t)r * cols + c]) : 0.0;
    char w[128];
    snprintf(w, sizeof w, "pad_cols %d rows of %d to %d", rows, cols, pitch);
    check_bf16(w, want, pad, 0);
    std::vector<bf16> acc = rand_bf16((size_t)rows * cols, 1.f), tmp = rand_bf16((size_t)rows * pitch, 1.f);
    for (int r = 0; r < rows; r++)
        for (int c = cols; c < pitch; c++) tmp[(size_t)r * pitch + c] = __float2bfloat16(NAN);
    std::vector<double> sum((size_t)rows * cols);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            sum[(size_t)r * cols + c] = f(acc[(size_t)r * cols + c]) + f(tmp[(size_t)r * pitch + c]);
    emu_launch(dim3{3, 1, 1}, 64, 0, [&] { add_cols_kernel(acc.data(), tmp.data(), rows, cols, pitch); });
    snprintf(w, sizeof w, "add_cols %d rows of %d from %d", rows, cols, pitch);
    check_bf16(w, sum, acc, 1e-2);
}

/* ---- the mean over tokens (the pooling head's query) and its backward, scalar and 16-byte
 * kernels: mean[b] = sum_n x[b, n] / N; dinp[b, n] += dout[b] / N (added to what is there) ---- */
static void test_mean_rows(int B, int N, int C) {
    std::vector<bf16> x = rand_bf16((size_t)B * N * C, 1.f), g = rand_bf16((size_t)B * C, 1.f);
    std::vector<bf16> d0 = rand_bf16((size_t)B * N * C, 1.f);
    std::vector<double> mw((size_t)B * C, 0.0), dw((size_t)B * N * C);
    for (int b = 0; b < B; b++)
        for (int n = 0; n < N; n++)
            for (int c = 0; c < C; c++) {
                size_t i = ((size_t)b * N + n) * C + c;
                mw[(size_t)b * C + c] += f(x[i]) / N;
                dw[i] = f(d0[i]) + f(g[(size_t)b * C + c]) / N;
            }
    for (int vec = 0; vec < 2; vec++) {
        std::vector<bf16> m((size_t)B * C), d = d0;
        if (vec) {
            emu_launch(dim3{(unsigned)((C / 8 + 31) / 32), (unsigned)B, 1}, 256, MEAN8_SMEM,
                       [&] { mean_rows8_kernel(m.data(), x.data(), B, N, C / 8); });
            emu_launch(dim3{3, 1, 1}, 64, 0, [&] { mean_rows_backward8_kernel(d.data(), g.data(), B, N, C / 8); });
        } else {
            emu_launch(dim3{3, 1, 1}, 64, 0, [&] { mean_rows_kernel(m.data(), x.data(), B, N, C); });
            emu_launch(dim3{3, 1, 1}, 64, 0, [&] { mean_rows_backward_kernel(d.data(), g.data(), B, N, C); });
        }
        char w1[128], w2[128];
        snprintf(w1, sizeof w1, "%s %d x %d tokens x %d", vec ? "mean_rows8" : "mean_rows (scalar)", B, N, C);
        snprintf(w2, sizeof w2, "%s %d x %d tokens x %d", vec ? "mean_rows_backward8" : "mean_rows_backward (scalar)",
                 B, N, C);
        check_bf16(w1, mw, m, 1e-2);
        check_bf16(w2, dw, d, 1e-2);
    }
}

/* ---- the heads' L2 normalisation and cosine loss, forward and backward:
 * out = x / |x|; dinp += (dout - out <dout, out>) / |x|; loss = 2 - 2 <pred, target>,
 * dpred += -2 scale target ---- */
static void test_l2_cos(int M, int C) {
    std::vector<bf16> x = rand_bf16((size_t)M * C, 1.f), g = rand_bf16((size_t)M * C, 1.f);
    std::vector<bf16> d0 = rand_bf16((size_t)M * C, 1.f);
    std::vector<double> out_want((size_t)M * C), norm_want(M), dx_want((size_t)M * C);
    std::vector<bf16> outb((size_t)M * C);
    for (int r = 0; r < M; r++) {
        double ss = 0, dot = 0;
        for (int c = 0; c < C; c++) ss += f(x[(size_t)r * C + c]) * f(x[(size_t)r * C + c]);
        norm_want[r] = sqrt(ss);
        for (int c = 0; c < C; c++) {
            size_t i = (size_t)r * C + c;
            out_want[i] = f(x[i]) / norm_want[r];
            outb[i] = __float2bfloat16((float)out_want[i]);   /* the backward reads the bf16 forward */
        }
        for (int c = 0; c < C; c++) dot += f(g[(size_t)r * C + c]) * f(outb[(size_t)r * C + c]);
        for (int c = 0; c < C; c++) {
            size_t i = (size_t)r * C + c;
            dx_want[i] = f(d0[i]) + (f(g[i]) - f(outb[i]) * dot) / norm_want[r];
        }
    }
    std::vector<float> normf(M);
    for (int r = 0; r < M; r++) normf[r] = (float)norm_want[r];
    for (int vec = 0; vec < 2; vec++) {
        std::vector<bf16> out((size_t)M * C), dx = d0;
        std::vector<float> norm(M);
        if (vec) {   /* as norm.cu / elementwise.cu: 4 warps a block, a warp per row */
            dim3 grid = {(unsigned)((M + 3) / 4), 1, 1};
            emu_launch(grid, 128, 0, [&] { l2norm8_kernel(out.data(), norm.data(), x.data(), M, C / 8); });
            emu_launch(grid, 128, 0, [&] {
                l2norm_backward8_kernel(dx.data(), g.data(), outb.data(), normf.data(), M, C / 8);
            });
        } else {
            dim3 grid = {(unsigned)M, 1, 1};
            emu_launch(grid, 128, 0, [&] { l2norm_kernel(out.data(), norm.data(), x.data(), C); });
            emu_launch(grid, 128, 0, [&] { l2norm_backward_kernel(dx.data(), g.data(), outb.data(), normf.data(), C); });
        }
        const char *k = vec ? "8" : " (scalar)";
        char w[3][128];
        snprintf(w[0], 128, "l2norm%s %dx%d out", k, M, C);
        snprintf(w[1], 128, "l2norm%s %dx%d norms", k, M, C);
        snprintf(w[2], 128, "l2norm_backward%s %dx%d dinp", k, M, C);
        check_bf16(w[0], out_want, out, 1e-2);
        check(w[1], norm_want, norm.data(), M, 1e-5);
        check_bf16(w[2], dx_want, dx, 1e-2);
    }
}

/* ---- column sums ---- */
/* ---- l2_cos_loss: loss = 2 - 2 <x / |x|, t>, dinp = -2 scale (t - out <out, t>) / |x| ---- */
static void test_l2_cos_loss(int M, int C) {
    std::vector<bf16> x = rand_bf16((size_t)M * C, 1.f), t = rand_bf16((size_t)M * C, 0.05f);
    std::vector<double> loss_want(M), d_want((size_t)M * C);
    const float scale = 0.75f;
    for (int r = 0; r < M; r++) {
        double xx = 0, xt = 0;
        for (int c = 0; c < C; c++) {
            size_t i = (size_t)r * C + c;
            xx += f(x[i]) * f(x[i]);
            xt += f(x[i]) * f(t[i]);
        }
        double n = sqrt(xx), cs = xt / n;
        loss_want[r] = 2 - 2 * cs;
        for (int c = 0; c < C; c++) {
            size_t i = (size_t)r * C + c;
            d_want[i] = -2.0 * scale / n * (f(t[i]) - cs * f(x[i]) / n);
        }
    }
    for (int vec = 0; vec < 2; vec++)
        for (int with_d = 0; with_d < 2; with_d++) {
            std::vector<bf16> d = start_grad((size_t)M * C, IV2_SET);   /* written: NaN before */
            std::vector<float> loss(M);
            bf16 *dp = with_d ? d.data() : NULL;
            if (vec)
                emu_launch(dim3{(unsigned)((M + 3) / 4), 1, 1}, 128, 0, [&] {
                    l2_cos_loss8_kernel(loss.data(), dp, x.data(), t.data(), M, C / 8, scale);
                });
            else
                emu_launch(dim3{(unsigned)M, 1, 1}, 128, 0, [&] {
                    l2_cos_loss_kernel(loss.data(), dp, x.data(), t.data(), C, scale);
                });
            char w[128];
            snprintf(w, sizeof w, "l2_cos_loss%s %dx%d loss rows%s", vec ? "8" : " (scalar)", M, C,
                     with_d ? "" : " (no dinp)");
            check(w, loss_want, loss.data(), M, 1e-5);
            if (!with_d) continue;
            snprintf(w, sizeof w, "l2_cos_loss%s %dx%d dinp", vec ? "8" : " (scalar)", M, C);
            check_bf16(w, d_want, d, 1e-2);
        }
}

/* ---- the stem of the visible tokens: patchify with rows, add_table_rows and its backward ---- */
static void test_stem_rows(void) {
    const int T = 4, H = 28, W = 28, p = 14, tt = 2, S = 2, P = (T / tt / S) * (H / p) * (W / p), ntok = P + 1;
    const int cols = 3 * tt * p * p;
    std::vector<uint8_t> fr((size_t)T * H * W * 3);
    for (auto &v : fr) v = (uint8_t)((frand() + 1.f) * 127.f);
    norm3 nm = {{0.485f, 0.456f, 0.406f}, {1 / 0.229f, 1 / 0.224f, 1 / 0.225f}};
    std::vector<bf16> all((size_t)S * P * cols);
    emu_launch(dim3{3, 1, 1}, 64, 0, [&] { patchify_kernel(all.data(), fr.data(), T, H, W, p, tt, nm, NULL, 0, 0, 0); });
    std::vector<int32_t> rows = {ntok + 2, 0, 3, ntok, ntok + P, 1};   /* out of order, both CLS rows */
    int n = (int)rows.size();
    std::vector<bf16> sel = rand_bf16((size_t)n * cols, 1.f);
    emu_launch(dim3{2, 1, 1}, 64, 0, [&] {
        patchify_kernel(sel.data(), fr.data(), T, H, W, p, tt, nm, rows.data(), n, ntok, 1);
    });
    size_t bad = 0;
    for (int i = 0; i < n; i++) {
        int s = rows[i] / ntok, tok = rows[i] % ntok;
        for (int c = 0; c < cols; c++) {
            uint16_t want = tok ? all[((size_t)s * P + tok - 1) * cols + c].u : 0;
            bad += sel[(size_t)i * cols + c].u != want;
        }
    }
    printf("%s patchify rows = the full call's rows, CLS rows zero (%zu of %zu differ)\n", bad ? "FAIL" : "ok  ", bad,
           (size_t)n * cols);
    bad ? n_fail++ : n_pass++;
    /* a table's rows at indices (rows repeat across samples), 8 wide and scalar, and the backward */
    for (int C : {1408, 100}) {
        std::vector<bf16> x0 = rand_bf16((size_t)n * C, 1.f), tb = rand_bf16((size_t)ntok * C, 1.f);
        std::vector<double> xw((size_t)n * C), dw((size_t)ntok * C, 0.0);
        for (int i = 0; i < n; i++)
            for (int c = 0; c < C; c++) {
                xw[(size_t)i * C + c] = f(x0[(size_t)i * C + c]) + f(tb[(size_t)(rows[i] % ntok) * C + c]);
                dw[(size_t)(rows[i] % ntok) * C + c] += f(x0[(size_t)i * C + c]);
            }
        std::vector<bf16> x = x0;
        if (C % 8 == 0)
            emu_launch(dim3{3, 1, 1}, 64, 0, [&] { add_table_rows8_kernel(x.data(), tb.data(), rows.data(), n, ntok, C / 8); });
        else
            emu_launch(dim3{3, 1, 1}, 64, 0, [&] { add_table_rows_kernel(x.data(), tb.data(), rows.data(), n, ntok, C); });
        char w[96];
        snprintf(w, sizeof w, "add_table_rows%s n%d C%d", C % 8 ? " (scalar)" : "8", n, C);
        check_bf16(w, xw, x, 1e-2);
        std::vector<float> acc((size_t)ntok * C, 0.f);
        emu_launch(dim3{3, 1, 1}, 64, 0, [&] {
            add_table_rows_backward_kernel(acc.data(), x0.data(), rows.data(), n, ntok, C);
        });
        snprintf(w, sizeof w, "add_table_rows_backward n%d C%d (fp32 sums)", n, C);
        check(w, dw, acc.data(), acc.size(), 1e-6);
        if (C % 8 == 0) {
            std::fill(acc.begin(), acc.end(), 0.f);
            emu_launch(dim3{3, 1, 1}, 64, 0, [&] {
                add_table_rows_backward8_kernel(acc.data(), x0.data(), rows.data(), n, ntok, C / 8);
            });
            snprintf(w, sizeof w, "add_table_rows_backward8 n%d C%d (fp32 sums)", n, C);
            check(w, dw, acc.data(), acc.size(), 1e-6);
        }
    }
}

/* ---- residual_norm8_kernel: x_out = x_in + s gamma y, out = norm(x_out) ---- */
static void test_residual_norm(int B, int N, int C, bool ln, bool with_gamma, bool in_place) {
    size_t n = (size_t)B * N * C;
    int M = B * N, nt = C / 8 <= 128 ? 64 : 128;   /* norm.cu's norm8_threads */
    std::vector<bf16> x0 = rand_bf16(n, 2.f), y = rand_bf16(n, 1.f), gam = rand_bf16(C, 0.5f);
    std::vector<bf16> w = rand_bf16(C, 1.f), b = rand_bf16(C, 1.f);
    sarg s;
    for (int i = 0; i < SCHUNK; i++) s.s[i] = i % 3 == 1 ? 0.f : 1.25f;   /* a dropped sample among them */
    const bf16 *gp = with_gamma ? gam.data() : NULL, *bp = ln ? b.data() : NULL;
    /* the unfused pair, as c_residual and c_layernorm / c_rmsnorm launch them */
    std::vector<bf16> xa = x0, outa(n);
    std::vector<float> mean_a(M), rstd_a(M);
    emu_launch(dim3{4, 1, 1}, 64, 0, [&] { residual8_kernel(xa.data(), y.data(), gp, s, 1, (size_t)N * C / 8, C / 8, B); });
    emu_launch(dim3{(unsigned)M, 1, 1}, nt, 0, [&] {
        norm8_kernel(outa.data(), ln ? mean_a.data() : NULL, rstd_a.data(), xa.data(), w.data(), bp, C, 1e-6f, ln);
    });
    /* fused: into a separate x_out or in place */
    std::vector<bf16> xin = x0, xo(n), outb(n);
    std::vector<float> mean_b(M), rstd_b(M);
    bf16 *xop = in_place ? xin.data() : xo.data();
    emu_launch(dim3{(unsigned)M, 1, 1}, nt, 0, [&] {
        residual_norm8_kernel(xop, outb.data(), ln ? mean_b.data() : NULL, rstd_b.data(), xin.data(), y.data(), gp, s, 1,
                              N, w.data(), bp, C, 1e-6f, ln);
    });
    bool same = !memcmp(xop, xa.data(), n * 2) && !memcmp(outb.data(), outa.data(), n * 2) &&
                !memcmp(rstd_b.data(), rstd_a.data(), M * 4) && (!ln || !memcmp(mean_b.data(), mean_a.data(), M * 4));
    printf("%s residual_norm8 %s %dx%dx%d%s%s = residual8 + norm8, bit for bit (x_out, out, stats)\n",
           same ? "ok  " : "FAIL", ln ? "LN" : "RMS", B, N, C, with_gamma ? " gamma" : "", in_place ? " in place" : "");
    same ? n_pass++ : n_fail++;
    /* and the formulas, in double from the bf16 inputs */
    std::vector<double> xw(n), ow(n);
    for (int r = 0; r < M; r++) {
        double sc = s.s[r / N], mu = 0, ss = 0;
        std::vector<double> v(C);
        for (int c = 0; c < C; c++) {
            size_t i = (size_t)r * C + c;
            v[c] = f(__float2bfloat16((float)(f(x0[i]) + sc * (with_gamma ? f(gam[c]) : 1) * f(y[i]))));
            xw[i] = f(x0[i]) + sc * (with_gamma ? f(gam[c]) : 1) * f(y[i]);
            mu += v[c];
        }
        mu = ln ? mu / C : 0;
        for (int c = 0; c < C; c++) ss += (v[c] - mu) * (v[c] - mu);
        double rs = 1 / sqrt(ss / C + 1e-6);
        for (int c = 0; c < C; c++) ow[(size_t)r * C + c] = (v[c] - mu) * rs * f(w[c]) + (ln ? f(b[c]) : 0);
    }
    std::vector<bf16> xv(xop, xop + n);
    char what[128];
    snprintf(what, sizeof what, "residual_norm8 %s %dx%dx%d x_out", ln ? "LN" : "RMS", B, N, C);
    check_bf16(what, xw, xv, 1e-2);
    snprintf(what, sizeof what, "residual_norm8 %s %dx%dx%d out", ln ? "LN" : "RMS", B, N, C);
    check_bf16(what, ow, outb, 1e-2);
}

static void test_colsum(int M, int N) {
    std::vector<bf16> d = rand_bf16((size_t)M * N, 1.f);
    std::vector<double> want(N, 0.0);
    for (size_t i = 0; i < (size_t)M * N; i++) want[i % N] += f(d[i]);
    for (int vec = 0; vec < 2; vec++) {
        sums_into acc(N, 1);
        int rows_per = vec ? 45 : 32;   /* elementwise.cu: 128; 45 leaves a partial group of RB rows per warp */
        if (vec) {
            dim3 grid = {(unsigned)((N / 8 + 31) / 32), (unsigned)((M + rows_per - 1) / rows_per), 1};
            emu_launch(grid, CS_THREADS, 0, [&] { colsum8_kernel(acc.out(), d.data(), M, N / 8, rows_per); });
        } else {
            dim3 grid = {(unsigned)((N + 127) / 128), (unsigned)((M + rows_per - 1) / rows_per), 1};
            emu_launch(grid, 128, 0, [&] { colsum_kernel(acc.out(), d.data(), M, N, rows_per); });
        }
        char what[128];
        snprintf(what, sizeof what, "%s %dx%d", vec ? "colsum8" : "colsum (scalar)", M, N);
        check_sums(what, want, acc);
    }
}

/* the sum of squares on 16-byte vectors (sumsq8_kernel, its n % 8 tail in block 0) against the
 * sum in double and the scalar kernel */
static void test_sumsq(size_t n) {
    std::vector<bf16> x = rand_bf16(n, 1.f);
    double want = 0;
    for (size_t i = 0; i < n; i++) want += (double)f(x[i]) * f(x[i]);
    float got8 = 0.f, got = 0.f;
    emu_launch(dim3{3, 1, 1}, 64, 0, [&] { sumsq8_kernel(&got8, x.data(), n); });
    emu_launch(dim3{3, 1, 1}, 64, 0, [&] { sumsq_kernel(&got, x.data(), n); });
    char w[96];
    snprintf(w, sizeof w, "sumsq8 n%zu (scalar kernel %.6g)", n, got);
    std::vector<double> wv(1, want);
    check(w, wv, &got8, 1, 1e-6);
}

/* AdamW over three tensors of one buffer in one launch (adamw_chunks_kernel) against
 * adamw_kernel per tensor: bit for bit (the same per-element arithmetic), over a tensor longer
 * than one chunk and a tensor without weight decay; and the first step against its formula */
static void test_adamw_chunks(int vec, bool with_master) {
    /* a piece longer than a chunk, one starting off a multiple of 4 (the 4-wide path takes only
       pieces on one) and pieces whose length leaves 1..3 elements to the one-by-one loop */
    size_t sz[3] = {IV2_ADAMW_CHUNK + 701, 299, 2002}, n = sz[0] + sz[1] + sz[2];
    int no_wd[3] = {0, 1, 0};
    std::vector<bf16> p0 = rand_bf16(n, 1.f), grad = rand_bf16(n, 1.f);
    std::vector<float> master0(n);
    for (size_t i = 0; i < n; i++) master0[i] = (float)f(p0[i]);
    std::vector<iv2_adamw_chunk> ch;
    for (size_t j = 0, off = 0; j < 3; off += sz[j], j++)
        for (size_t at = 0; at < sz[j]; at += IV2_ADAMW_CHUNK)
            ch.push_back({off + at, (uint32_t)std::min((size_t)IV2_ADAMW_CHUNK, sz[j] - at), (uint32_t)no_wd[j]});
    const float lr = 1e-2f, b1 = 0.9f, b2 = 0.98f, eps = 1e-6f, wd = 0.05f, gs = 0.5f;
    std::vector<bf16> pa = p0, pb = p0;
    std::vector<float> ma(n, 0.f), va(n, 0.f), wa = master0, mb(n, 0.f), vb(n, 0.f), wb = master0;
    float *wap = with_master ? wa.data() : NULL, *wbp = with_master ? wb.data() : NULL;
    for (int t = 1; t <= 2; t++) {
        float bc1 = 1.f - powf(b1, (float)t), bc2 = 1.f - powf(b2, (float)t);
        emu_launch({(unsigned)ch.size(), 1, 1}, 256, 0, [&] {
            adamw_chunks_kernel(pa.data(), wap, grad.data(), ma.data(), va.data(), ch.data(), lr, b1, b2, eps, wd,
                                bc1, bc2, gs, vec);
        });
        for (size_t j = 0, off = 0; j < 3; off += sz[j], j++)
            emu_launch({4, 1, 1}, 64, 0, [&] {
                adamw_kernel(pb.data() + off, wbp ? wbp + off : NULL, grad.data() + off, mb.data() + off,
                             vb.data() + off, sz[j], lr, b1, b2, eps, no_wd[j] ? 0.f : wd, bc1, bc2, gs);
            });
        if (t == 1 && with_master) {   /* step 1: mhat = g, vhat = g^2, so w -= lr (g / (|g| + eps) + wd w) */
            std::vector<double> want(n);
            for (size_t i = 0, j = 0, end = sz[0]; i < n; i++) {
                if (i == end) end += sz[++j];
                double g = f(grad[i]) * gs, w = master0[i];
                want[i] = w - lr * (g / (fabs(g) + eps) + (no_wd[j] ? 0 : wd) * w);
            }
            char what[96];
            snprintf(what, sizeof what, "adamw_chunks%s step 1 against its formula", vec ? " (4 wide)" : "");
            check(what, want, wa.data(), n, 1e-5);
        }
    }
    bool same = !memcmp(wa.data(), wb.data(), n * 4) && !memcmp(ma.data(), mb.data(), n * 4) &&
                !memcmp(va.data(), vb.data(), n * 4) && !memcmp(pa.data(), pb.data(), n * 2);
    printf("%s adamw_chunks%s = adamw per tensor, bit for bit (%s, m, v, bf16 params; 2 steps, %zu chunks)\n",
           same ? "ok  " : "FAIL", vec ? " (4 wide)" : "", with_master ? "master" : "no master", ch.size());
    same ? n_pass++ : n_fail++;
}

int main() {
    test_norm_backward(37, 1408, true, true, true);    /* the student's LayerNorm: VPL 6, lanes 16..31 idle in the last vector */
    test_norm_backward(21, 1408, false, true, true);   /* RMSNorm (q/k norms of the teachers' layout) */
    test_norm_backward(19, 96, true, true, true);      /* VPL 1, 12 of 32 lanes busy */
    test_norm_backward(23, 520, true, false, true);    /* 65 vectors: VPL 3 runs as 4; no weight */
    test_norm_backward(9, 2048, true, true, false);    /* VPL 8: the two wide kernels; weight gradients only (no dinp) */
    test_norm_backward(13, 768, false, true, true);    /* VPL 3 -> 4 */
    test_norm_backward(11, 3200, true, true, true);    /* the 6B student's and the CLIP heads' width: wide only */
    test_norm_backward(7, 3200, false, true, false);   /* RMSNorm, weight gradient only */
    test_norm_backward(21, 1408, false, true, true, IV2_SET);   /* written, not added: the q/k norms of a block */
    test_norm_backward(19, 96, true, true, true, IV2_SET);
    test_norm_backward(11, 3200, true, true, true, IV2_SET);
    test_norm_backward(13, 768, true, true, false);    /* no dinp at VPL 4: PF's rows go on without one */
    test_sumsq(3 * 1408 + 5);   /* a tail of 5 */
    test_sumsq(1000);
    test_rms_residual_backward(3, 7, 1408, true);   /* the student's norm2 + ls1: VPL 6 */
    test_rms_residual_backward(2, 9, 96, false);    /* VPL 1, no LayerScale */
    test_rms_residual_backward(2, 11, 768, true);   /* VPL 3 -> 4 (SMS, PF) */
    test_rms_residual_backward(2, 3, 3200, true);   /* the 6B student's width: VPL 13, sums in shared memory */
    test_gelu_backward(8 * 300, IV2_GELU_ERF);
    test_gelu_backward(8 * 300, IV2_GELU_TANH);
    test_gelu_backward(8 * 300, IV2_GELU_ERF, IV2_SET);
    test_gelu_grad_scale(8 * 250);
    test_residual_backward(3, 5, 1408, true, true);
    test_residual_backward(2, 7, 200, false, false);
    test_residual_backward(3, 5, 1408, true, true, IV2_SET);   /* a block's df2 and dout */
    test_residual_backward(2, 7, 200, false, false, IV2_SET);
    test_residual_norm(3, 5, 1408, false, true, false);   /* the student: RMSNorm, LayerScale, drop path */
    test_residual_norm(3, 4, 1408, true, false, true);    /* VideoMAE: LayerNorm, no LayerScale, in place */
    test_residual_norm(2, 3, 3200, false, true, true);    /* the 6B's width: 400 vectors, VPT 4 of 128 threads */
    test_residual_norm(4, 2, 96, true, true, false);      /* 12 vectors of 64 threads */
    test_stem_rows();
    test_l2_cos(9, 3200);   /* the CLIP heads' width: 400 vectors, 12.5 a lane */
    test_l2_cos(6, 1408);
    test_l2_cos(5, 200);    /* 25 vectors: lanes idle */
    test_l2_cos_loss(9, 3200);
    test_l2_cos_loss(6, 1408);
    test_l2_cos_loss(5, 200);
    test_gather_scatter(29, 11, 1408);
    test_gather_scatter(9, 4, 200);
    test_mean_rows(3, 41, 1408);   /* the student's width: 176 vectors, 6 blocks of 32 (the last partly idle) */
    test_mean_rows(2, 5, 64);      /* fewer tokens than rows of lanes */
    test_pad_cols(37, 588, 592);   /* the patch embedding's rows */
    test_pad_cols(5, 3, 8);
    test_colsum(130, 1408);
    test_colsum(70, 200);
    for (int vec = 0; vec < 2; vec++) {
        test_adamw_chunks(vec, true);
        test_adamw_chunks(vec, false);
    }
    printf("%d checks, %d failed\n", n_pass + n_fail, n_fail);
    return n_fail ? 1 : 0;
}
