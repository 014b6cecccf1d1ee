/* test_attention_emu: the tensor-core attention kernels of kernels/flash_attention.cuh, run on
 * the CPU under tests/emu/cuda_emu.h (an emulation of ldmatrix, mma.sync, cp.async and shfl),
 * against attention computed in double precision here.
 *
 * The forward kernel passed the GPU parity tests on an H100, so its agreement here checks the
 * emulation; the fused backward kernels (attn_bwd_dq_kernel, attn_bwd_dkv_kernel, and the Hopper
 * ones on wgmma, attn_bwd3_dq_kernel, attn_bwd3_dkv_kernel) are then checked on every shape
 * class the models use: head dims 32/64/88/128 (padded to 32/64/96/128), Nq != Nk, tails
 * shorter than a tile, one query (the pooling head), a fused qkv buffer with row stride 3C, and
 * gradients accumulated onto existing values (add) or written over NaN (add = 0: a kernel that
 * reads what it should only write shows). The forward also runs in every configuration
 * IV2_ATTN_FWD selects (4x2, 4x1, 8x1, 8x2, auto), each checked against the reference and bit
 * for bit against the default, and as the Hopper kernels (wg64, wg128, and pipelined wg64p,
 * wg128p: wgmma under the emulation of cuda_emu.h), against the reference. The launch
 * geometry, shared-memory sizes and the choice of configuration are the ones attention.cu uses
 * (helpers of flash_attention.cuh).
 *
 * Limits: bf16 inputs, P and dS rounded to bf16 inside the kernels as on the GPU, so per tensor
 * relative L2 error <= 1e-2 (forward) and <= 2e-2 (gradients), and lse within 1e-3 absolute. */
#include "cuda_emu.h"
#include "flash_attention.cuh"

static int n_pass, n_fail;
static void check(bool ok, const char *fmt, const char *what, double err, double lim) {
    printf("%s %-58s ", ok ? "ok  " : "FAIL", what);
    printf(fmt, err, lim);
    printf("\n");
    ok ? n_pass++ : n_fail++;
}

static uint32_t rng = 12345;
static float frand() { rng = rng * 1664525u + 1013904223u; return (rng >> 8) / 16777216.f * 2.f - 1.f; }
static std::vector<bf16> rand_bf16(size_t n, float amp) {
    std::vector<bf16> v(n);
    for (auto &x : v) x = __float2bfloat16(frand() * amp);
    return v;
}
static float f(bf16 h) { return __bfloat162float(h); }

/* relative L2 of got against want, over the D columns of each head in an [rows][stride] view */
static double rel_l2(const std::vector<double> &want, const std::vector<float> &got) {
    double num = 0, den = 0;
    for (size_t i = 0; i < want.size(); i++) {
        num += (got[i] - want[i]) * (got[i] - want[i]);
        den += want[i] * want[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

struct shape { int B, H, Nq, Nk, D, fused_qkv; };

/* the forward in configuration c, launched as attention.cu's launch_fwd2 launches it */
template <int DP>
static void launch_fwd2(fwd2_cfg c, bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int B, int H,
                        int Nq, int Nk, int D, int qs, int ks, int os, float scale) {
    dim3 grid = {(unsigned)((Nq + fwd2_rows(c) - 1) / fwd2_rows(c)), (unsigned)(B * H), 1};
    if constexpr (DP <= 128) {   /* the Hopper kernels: 2 warpgroups, as attention.cu's launch_fwd3 */
        if (c.tn > 0) {              /* fwd2_rows: 128 query rows per block */
#define FWD3(TN, KERNEL, BYTES)                                                                         \
    emu_launch(grid, 256, BYTES<DP, TN, 2>(),                                                                 \
               [&] { KERNEL<DP, TN, 2>(out, lse, q, k, v, H, Nq, Nk, D, qs, ks, os, scale); })
            if (c.tn == 64 && !c.pipe) FWD3(64, flash_fwd3_kernel, fwd3_smem_bytes);
            else if (c.tn == 128 && !c.pipe) FWD3(128, flash_fwd3_kernel, fwd3_smem_bytes);
            else if (c.tn == 64) FWD3(64, flash_fwd3p_kernel, fwd3p_smem_bytes);
            else FWD3(128, flash_fwd3p_kernel, fwd3p_smem_bytes);
#undef FWD3
            return;
        }
    }
#define FWD2(W, R)                                                                                                 \
    emu_launch(grid, W * 32, fwd2_smem_bytes<DP, W, R>(),                                                          \
               [&] { flash_fwd2_kernel<DP, W, R>(out, lse, q, k, v, H, Nq, Nk, D, qs, ks, os, scale); })
    if constexpr (DP <= 128) {
        if (c.warps == 4 && c.rt == 2) { FWD2(4, 2); return; }
        if (c.warps == 8 && c.rt == 1) { FWD2(8, 1); return; }
    }
    if constexpr (DP <= 96) {
        if (c.warps == 8 && c.rt == 2) { FWD2(8, 2); return; }
    }
    if (c.warps == 4 && c.rt == 1) { FWD2(4, 1); return; }
#undef FWD2
    emu::fail("forward configuration not instantiated");
}

template <int DP> static void run_shape(const shape &s) {
    const int B = s.B, H = s.H, Nq = s.Nq, Nk = s.Nk, D = s.D, C = H * D;
    const float scale = 1.f / sqrtf((float)D);
    /* layout as the student: one [B][N][3C] buffer (q, k, v at 0, C, 2C), or q apart */
    const int ks = 3 * C, qs = s.fused_qkv ? 3 * C : C, os = C;
    std::vector<bf16> qkv = rand_bf16((size_t)B * Nk * ks, 1.5f), qsep = rand_bf16((size_t)B * Nq * C, 1.5f);
    std::vector<bf16> out((size_t)B * Nq * os), dout = rand_bf16((size_t)B * Nq * os, 1.f);
    std::vector<float> lse((size_t)B * H * Nq), delta((size_t)B * H * Nq);
    const bf16 *q = s.fused_qkv ? qkv.data() : qsep.data(), *k = qkv.data() + C, *v = qkv.data() + 2 * C;
    emu::globals.clear();
    emu_register(qkv.data(), qkv.size() * 2);
    emu_register(qsep.data(), qsep.size() * 2);
    emu_register(dout.data(), dout.size() * 2);

    /* ---- forward, in the configuration attention.cu picks by default ---- */
    const fwd2_cfg c0 = fwd2_choose({0, 0}, DP, Nq);
    launch_fwd2<DP>(c0, out.data(), lse.data(), q, k, v, B, H, Nq, Nk, D, qs, ks, os, scale);

    /* ---- reference in double: out, lse, and the gradients' increments ---- */
    size_t nq = (size_t)B * Nq * C, nk = (size_t)B * Nk * C;
    std::vector<double> o_ref(nq), lse_ref((size_t)B * H * Nq), dq_ref(nq, 0), dk_ref(nk, 0), dv_ref(nk, 0);
    std::vector<double> P(Nk), dP(Nk);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < Nq; i++) {
                const bf16 *qi = q + ((size_t)b * Nq + i) * qs + h * D;
                double mx = -1e300;
                for (int j = 0; j < Nk; j++) {
                    const bf16 *kj = k + ((size_t)b * Nk + j) * ks + h * D;
                    double d = 0;
                    for (int c = 0; c < D; c++) d += (double)f(qi[c]) * f(kj[c]);
                    P[j] = d * scale;
                    mx = std::max(mx, P[j]);
                }
                double sum = 0;
                for (int j = 0; j < Nk; j++) sum += (P[j] = exp(P[j] - mx));
                lse_ref[((size_t)b * H + h) * Nq + i] = mx + log(sum);
                for (int j = 0; j < Nk; j++) P[j] /= sum;
                double *oi = &o_ref[((size_t)b * Nq + i) * C + h * D];
                const bf16 *gi = dout.data() + ((size_t)b * Nq + i) * os + h * D;
                for (int j = 0; j < Nk; j++) {
                    const bf16 *vj = v + ((size_t)b * Nk + j) * ks + h * D;
                    double d = 0;
                    for (int c = 0; c < D; c++) { oi[c] += P[j] * f(vj[c]); d += (double)f(gi[c]) * f(vj[c]); }
                    dP[j] = d;
                }
                double dl = 0;
                for (int c = 0; c < D; c++) dl += (double)f(gi[c]) * oi[c];
                for (int j = 0; j < Nk; j++) {
                    double ds = P[j] * (dP[j] - dl) * scale;
                    const bf16 *kj = k + ((size_t)b * Nk + j) * ks + h * D;
                    for (int c = 0; c < D; c++) {
                        dq_ref[((size_t)b * Nq + i) * C + h * D + c] += ds * f(kj[c]);
                        dk_ref[((size_t)b * Nk + j) * C + h * D + c] += ds * f(qi[c]);
                        dv_ref[((size_t)b * Nk + j) * C + h * D + c] += P[j] * f(gi[c]);
                    }
                }
            }
    char what[160];
    std::vector<float> got(nq);
    for (size_t r = 0; r < (size_t)B * Nq; r++)
        for (int c = 0; c < C; c++) got[r * C + c] = f(out[r * os + c]);
    snprintf(what, sizeof what, "forward out  B%d H%d Nq%d Nk%d D%d (DP %d, %dx%d)", B, H, Nq, Nk, D, DP, c0.warps, c0.rt);
    double e = rel_l2(o_ref, got);
    check(e <= 1e-2, "rel L2 %.2e (limit %.0e)", what, e, 1e-2);
    double lerr = 0;
    for (size_t i = 0; i < lse.size(); i++) lerr = std::max(lerr, fabs(lse[i] - lse_ref[i]));
    snprintf(what, sizeof what, "forward lse  B%d H%d Nq%d Nk%d D%d", B, H, Nq, Nk, D);
    check(lerr <= 1e-3, "max abs %.2e (limit %.0e)", what, lerr, 1e-3);

    /* ---- every IV2_ATTN_FWD configuration (where it applies: DP <= 128, Nq > 16): right, and
     * bit for bit the default's (a query row's arithmetic does not depend on which warp or row
     * tile holds it); outputs start as NaN so that a row no block writes fails ---- */
    std::vector<bf16> wg_out[2];   /* wg64's and wg128's outputs */
    for (int mi = 0; mi < fwd2_nmodes; mi++) {
        if (DP > 128 || Nq <= 16) break;
        const char *name = fwd2_named[mi].name;
        fwd2_cfg mode = {0, 0, 0, 0}, c;
        fwd2_parse(name, &mode);
        c = fwd2_choose(mode, DP, Nq);
        if (!fwd2_built(DP, c)) {
            printf("skip IV2_ATTN_FWD=%-6s at DP %d: not built\n", name, DP);
            continue;
        }
        std::vector<bf16> out2(out.size(), bf16{0x7fc0});
        std::vector<float> lse2(lse.size(), NAN);
        launch_fwd2<DP>(c, out2.data(), lse2.data(), q, k, v, B, H, Nq, Nk, D, qs, ks, os, scale);
        std::vector<float> got2(nq);
        for (size_t r = 0; r < (size_t)B * Nq; r++)
            for (int cc = 0; cc < C; cc++) got2[r * C + cc] = f(out2[r * os + cc]);
        double e2 = rel_l2(o_ref, got2), l2 = 0;
        for (size_t i = 0; i < lse2.size(); i++) l2 = std::max(l2, (double)fabs(lse2[i] - lse_ref[i]));
        size_t diff = 0;
        for (size_t r = 0; r < (size_t)B * Nq; r++)
            for (int cc = 0; cc < C; cc++) diff += out2[r * os + cc].u != out[r * os + cc].u;
        diff += memcmp(lse2.data(), lse.data(), lse.size() * sizeof(float)) != 0;
        snprintf(what, sizeof what, "forward IV2_ATTN_FWD=%-6s (%dx%d) Nq%d Nk%d D%d: out, lse", name, c.warps, c.rt,
                 Nq, Nk, D);
        check(e2 <= 1e-2 && l2 <= 1e-3, "rel L2 %.2e, lse %.1e", what, e2, l2);
        if (c.tn > 0) {   /* wgmma: another summation order and exp, so not bit for bit the default; the
                           * pipelined kernels do the same arithmetic as the plain ones, in another order */
            std::vector<bf16> &plain = wg_out[c.tn == 128];
            if (!c.pipe) { plain = out2; continue; }
            size_t d2 = 0;
            for (size_t i = 0; i < out2.size(); i++) d2 += out2[i].u != plain[i].u;
            snprintf(what, sizeof what, "forward IV2_ATTN_FWD=%-6s Nq%d Nk%d D%d: = wg%d", name, Nq, Nk, D, c.tn);
            check(!plain.empty() && d2 == 0, "%.0f differ (limit %.0f)", what, (double)d2, 0);
            continue;
        }
        snprintf(what, sizeof what, "forward IV2_ATTN_FWD=%-6s (%dx%d) Nq%d Nk%d D%d: = default", name, c.warps, c.rt,
                 Nq, Nk, D);
        check(diff == 0, "%.0f differ (limit %.0f)", what, (double)diff, 0);
    }
    if (D > 128) return;   /* the fused backward takes D <= 128; the GEMM path the rest */
    if constexpr (DP <= 128) {   /* not even instantiated past the backward kernels' head dims */

        /* ---- fused backward, as launch_bwd_fused, onto existing gradients ---- */
        for (int b = 0; b < B; b++)   /* delta from the bf16 forward output, as attn_delta_kernel */
            for (int h = 0; h < H; h++)
                for (int i = 0; i < Nq; i++) {
                    float d = 0;
                    for (int c = 0; c < D; c++) {
                        size_t o = ((size_t)b * Nq + i) * os + h * D + c;
                        d += f(dout[o]) * f(out[o]);
                    }
                    delta[((size_t)b * H + h) * Nq + i] = d;
                }
        for (int add = 1; add >= 0; add--) {
        std::vector<bf16> dkv0 = rand_bf16((size_t)B * Nk * ks, 0.05f);
        std::vector<bf16> dqsep0 = rand_bf16((size_t)B * Nq * C, 0.05f);
        if (!add) {   /* NaN in every slot the kernels write (all of a fused buffer; k and v of dkv) */
            for (size_t r = 0; r < (size_t)B * Nk; r++)
                for (int c = s.fused_qkv ? 0 : C; c < 3 * C; c++) dkv0[r * ks + c].u = 0xffff;
            for (auto &x : dqsep0) x.u = 0xffff;
        }
        const bf16 *dq0 = s.fused_qkv ? dkv0.data() : dqsep0.data(), *dk0 = dkv0.data() + C, *dv0 = dkv0.data() + 2 * C;
        /* the backward of one kernel pair (mma.sync as launch_bwd_fused, wgmma as launch_bwd3, and
         * 2: the mma.sync dK/dV kernel storing dS, then dQ from it, as launch_bwd_fused<DP, true>) onto copies of
         * the same existing gradients, checked against the reference increments */
        for (int hopper = 0; hopper < 4; hopper++) {
            const char *vname = hopper == 1 ? " wg" : hopper == 2 ? " ds" : hopper == 3 ? " fd" : "";
            std::vector<bf16> dkv = dkv0, dqsep = dqsep0;
            bf16 *dq = s.fused_qkv ? dkv.data() : dqsep.data(), *dk = dkv.data() + C, *dv = dkv.data() + 2 * C;
            const bf16 *G = dout.data();
            const float *L = lse.data(), *dl = delta.data();
            auto blocks = [&](int n, int m) { return dim3{(unsigned)((n + m - 1) / m), (unsigned)(B * H), 1}; };
            if (!hopper) {
                const int M = BWARPS * 16;
                emu_launch(blocks(Nk, M), BWARPS * 32, bwd_dkv_smem_bytes<DP>(), [&] {
                    attn_bwd_dkv_kernel<DP>(dk, dv, G, q, k, v, L, dl, H, Nq, Nk, D, qs, ks, os, scale, add,
                                            ds_out{NULL, 0});
                });
                emu_launch(blocks(Nq, M), BWARPS * 32, bwd_dq_smem_bytes<DP>(), [&] {
                    attn_bwd_dq_kernel<DP>(dq, G, q, k, v, L, dl, H, Nq, Nk, D, qs, ks, os, scale, add,
                                           fd_out{NULL, NULL});
                });
            } else if (hopper == 3) {
                /* delta made by the dQ kernel (IV2_ATTN_BWD=fd) into a NaN-poisoned buffer, which the
                 * dK/dV kernel after it reads: a row it missed would poison dK/dV; delta checked too */
                const int M = BWARPS * 16;
                std::vector<float> dfd((size_t)B * H * Nq, NAN);
                emu_launch(blocks(Nq, M), BWARPS * 32, bwd_dq_smem_bytes<DP>(), [&] {
                    attn_bwd_dq_kernel<DP, true>(dq, G, q, k, v, L, NULL, H, Nq, Nk, D, qs, ks, os, scale, add,
                                                 fd_out{out.data(), dfd.data()});
                });
                emu_launch(blocks(Nk, M), BWARPS * 32, bwd_dkv_smem_bytes<DP>(), [&] {
                    attn_bwd_dkv_kernel<DP>(dk, dv, G, q, k, v, L, dfd.data(), H, Nq, Nk, D, qs, ks, os, scale, add,
                                            ds_out{NULL, 0});
                });
                double worst = 0;
                for (size_t i = 0; i < dfd.size(); i++)
                    worst = std::max(worst, std::isfinite(dfd[i]) ? std::fabs((double)dfd[i] - delta[i]) /
                                                                        (1e-3 + std::fabs((double)delta[i])) : 1e30);
                snprintf(what, sizeof what, "backward fd: delta of every row  B%d H%d Nq%d Nk%d D%d%s", B, H, Nq, Nk, D,
                         add ? "" : " SET");
                check(worst <= 1e-4, "rel %.2e (limit %.0e)", what, worst, 1e-4);
            } else if (hopper == 2) {
                const int M = BWARPS * 16, ld = (Nk + 7) / 8 * 8;
                /* NaN where dS goes: the dK/dV kernel must write every element the dQ kernel reads,
                 * the zero columns Nk..ld-1 included */
                std::vector<bf16> dsb((size_t)B * H * Nq * ld);
                for (auto &x : dsb) x.u = 0xffff;
                emu_register(dsb.data(), dsb.size() * 2);
                emu_launch(blocks(Nk, M), BWARPS * 32, bwd_dkv_smem_bytes<DP>(), [&] {
                    attn_bwd_dkv_kernel<DP, true>(dk, dv, G, q, k, v, L, dl, H, Nq, Nk, D, qs, ks, os, scale, add,
                                                  ds_out{dsb.data(), ld});
                });
                emu_launch(blocks(Nq, M), BWARPS * 32, bwd_dq_ds_smem_bytes<DP>(), [&] {
                    attn_bwd_dq_ds_kernel<DP>(dq, dsb.data(), ld, k, H, Nq, Nk, D, qs, ks, scale, add);
                });
                emu::globals.pop_back();
            } else {
                const int M = BWG * 64;
                emu_launch(blocks(Nk, M), BWG * 128, bwd3_dkv_smem_bytes<DP>(), [&] {
                    attn_bwd3_dkv_kernel<DP>(dk, dv, G, q, k, v, L, dl, H, Nq, Nk, D, qs, ks, os, scale, add);
                });
                emu_launch(blocks(Nq, M), BWG * 128, bwd3_dq_smem_bytes<DP>(), [&] {
                    attn_bwd3_dq_kernel<DP>(dq, G, q, k, v, L, dl, H, Nq, Nk, D, qs, ks, os, scale, add);
                });
            }
            struct { const char *name; const bf16 *g, *g0; int rows, stride; std::vector<double> *ref; } gr[3] = {
                {"dq", dq, dq0, Nq, qs, &dq_ref}, {"dk", dk, dk0, Nk, ks, &dk_ref}, {"dv", dv, dv0, Nk, ks, &dv_ref}};
            for (auto &t : gr) {
                size_t n = (size_t)B * t.rows * C;
                std::vector<double> want(n);
                std::vector<float> have(n);
                for (size_t r = 0; r < (size_t)B * t.rows; r++)
                    for (int c = 0; c < C; c++) {
                        want[r * C + c] = (add ? (double)f(t.g0[r * t.stride + c]) : 0.0) + (*t.ref)[r * C + c];
                        have[r * C + c] = f(t.g[r * t.stride + c]);
                    }
                snprintf(what, sizeof what, "backward%s %s  B%d H%d Nq%d Nk%d D%d%s%s", vname, t.name, B,
                         H, Nq, Nk, D, s.fused_qkv ? " (fused qkv)" : "", add ? "" : " SET");
                double err = rel_l2(want, have);
                check(err <= 2e-2, "rel L2 %.2e (limit %.0e)", what, err, 2e-2);
            }
            /* columns of other heads' or other tensors' slots were not touched: in the fused buffer
             * nothing outside [q|k|v] exists; with q apart, the q slot of dkv must be unchanged */
            if (!s.fused_qkv) {
                size_t changed = 0;
                for (size_t r = 0; r < (size_t)B * Nk; r++)
                    for (int c = 0; c < C; c++) changed += dkv[r * ks + c].u != dkv0[r * ks + c].u;
                snprintf(what, sizeof what, "backward%s leaves other columns alone  B%d H%d Nq%d Nk%d D%d%s",
                         vname, B, H, Nq, Nk, D, add ? "" : " SET");
                check(changed == 0, "%.0f changed (limit %.0f)", what, (double)changed, 0);
            }
        }
        }
    }
}

static void run(const shape &s) {
    if (s.D <= 32) run_shape<32>(s);
    else if (s.D <= 64) run_shape<64>(s);
    else if (s.D <= 96) run_shape<96>(s);
    else if (s.D <= 128) run_shape<128>(s);
    else run_shape<256>(s);
}

/* the choice of configuration itself: the default (8x1 / 8x2 at DP 96), auto by padded rows, names */
static void check_choice(void) {
    struct { fwd2_cfg mode; int DP, Nq, warps, rt; } t[] = {
        {{0, 0}, 128, 257, 4, 2}, {{0, 0}, 96, 17, 8, 1}, {{0, 0}, 96, 417, 8, 1}, {{0, 0}, 96, 512, 8, 1},
        {{0, 0}, 96, 513, 8, 2}, {{0, 0}, 96, 2048, 8, 2}, {{0, 0}, 64, 417, 4, 2}, {{0, 0}, 64, 2048, 4, 2},
        {{0, 0}, 96, 16, 4, 1}, {{0, 0}, 256, 65, 4, 1},
        {{-1, 0}, 128, 257, 4, 1}, {{-1, 0}, 96, 417, 4, 1}, {{-1, 0}, 96, 2048, 4, 2}, {{-1, 0}, 64, 100, 4, 2},
        {{-1, 0}, 128, 1, 4, 1}, {{8, 2}, 64, 417, 8, 2}, {{8, 1}, 256, 65, 4, 1}, {{8, 1}, 96, 16, 4, 1},
    };
    int bad = 0;
    for (auto &x : t) {
        fwd2_cfg c = fwd2_choose(x.mode, x.DP, x.Nq);
        if (c.warps != x.warps || c.rt != x.rt) {
            printf("     mode %dx%d DP %d Nq %d: %dx%d, want %dx%d\n", x.mode.warps, x.mode.rt, x.DP, x.Nq, c.warps,
                   c.rt, x.warps, x.rt);
            bad++;
        }
    }
    fwd2_cfg m = {0, 0};
    const char *badnames[] = {"", "4x3", "2x2", "4x2 ", "AUTO", "8x2x"};
    for (const char *n : badnames) bad += fwd2_parse(n, &m);
    bad += !fwd2_parse("8x1", &m) || m.warps != 8 || m.rt != 1;
    bad += fwd2_built(128, {8, 2}) || !fwd2_built(96, {8, 2}) || fwd2_built(256, {4, 2}) || !fwd2_built(256, {4, 1});
    /* the Hopper kernel: named, built up to DP 128, chosen only where the mma.sync kernels would be */
    bad += !fwd2_parse("wg128", &m) || m.warps != 8 || m.rt != 1 || m.tn != 128 || m.pipe;
    bad += !fwd2_parse("wg128p", &m) || m.tn != 128 || !m.pipe || !fwd2_parse("wg64p", &m) || m.tn != 64 || !m.pipe;
    bad += !fwd2_parse("wg64", &m) || m.tn != 64 || fwd2_parse("wg32", &m) || fwd2_parse("wg", &m);
    bad += !fwd2_built(128, {8, 1, 128}) || !fwd2_built(32, {8, 1, 64}) || fwd2_built(256, {8, 1, 128}) ||
           fwd2_built(96, {8, 1, 32}) || fwd2_built(96, {4, 2, 128});
    bad += fwd2_choose({8, 1, 128}, 96, 2048).tn != 128 || fwd2_choose({8, 1, 128}, 96, 1).tn != 0 ||
           fwd2_choose({8, 1, 64}, 256, 65).tn != 0 || fwd2_choose({0, 0, 0}, 96, 2048).tn != 0;
    check(bad == 0, "%.0f wrong (limit %.0f)", "forward configuration choice (default, auto, names, built)", bad, 0);
}

int main(void) {
    const shape shapes[] = {
        {1, 2, 150, 150, 64, 1},   /* self-attention, fused qkv, a tail of 22 */
        {2, 1, 40, 130, 88, 0},    /* the student's head dim, Nq != Nk */
        {1, 1, 70, 70, 128, 1},    /* InternViT's head dim */
        {1, 2, 1, 77, 32, 0},      /* one query: the pooling head */
        {1, 1, 65, 65, 200, 1},    /* the 6B pooling head's dim: forward only */
        {1, 1, 257, 257, 128, 1},  /* InternViT's tokens: auto takes 4x1; 1 row in the last block */
        {1, 2, 130, 130, 32, 1},   /* the smallest padding, past one 128-row block (wg: a lone warpgroup) */
    };
    check_choice();
    for (const shape &s : shapes) run(s);
    printf("%lld warp collectives emulated\n", emu::n_collectives);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
