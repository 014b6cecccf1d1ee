/* norm.cuh: the device code of RMSNorm, LayerNorm and L2 normalisation over the last dim,
 * forward and backward side by side; host launches in norm.cu. Device code only (see
 * cuda_device.cuh), so tests/emu/test_kernels_emu.cpp runs these kernels on the CPU too.
 * Internal to kernels/. */
#ifndef IV2_NORM_CUH
#define IV2_NORM_CUH

#define NORM_THREADS 256
#define ROWS 16          /* rows per block in the backward */
#define MAXPER 16        /* columns per thread in the backward: C <= 4096 */

__global__ void rmsnorm_kernel(bf16 *out, float *rstd, const bf16 *inp, const bf16 *w, int C, float eps) {
    const bf16 *x = inp + (size_t)blockIdx.x * C;
    bf16 *y = out + (size_t)blockIdx.x * C;
    float ss = 0.f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) { float v = ld(x + c); ss += v * v; }
    float r = rsqrtf(block_sum(ss) / C + eps);
    for (int c = threadIdx.x; c < C; c += blockDim.x) st(y + c, ld(x + c) * r * (w ? ld(w + c) : 1.f));
    if (rstd && threadIdx.x == 0) rstd[blockIdx.x] = r;
}

__global__ void layernorm_kernel(bf16 *out, float *mean, float *rstd, const bf16 *inp, const bf16 *w, const bf16 *b,
                                 int C, float eps) {
    const bf16 *x = inp + (size_t)blockIdx.x * C;
    bf16 *y = out + (size_t)blockIdx.x * C;
    float s = 0.f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) s += ld(x + c);
    float mu = block_sum(s) / C;
    float ss = 0.f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) { float d = ld(x + c) - mu; ss += d * d; }
    float r = rsqrtf(block_sum(ss) / C + eps);
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        st(y + c, (ld(x + c) - mu) * r * (w ? ld(w + c) : 1.f) + (b ? ld(b + c) : 0.f));
    if (threadIdx.x == 0) {
        if (mean) mean[blockIdx.x] = mu;
        if (rstd) rstd[blockIdx.x] = r;
    }
}

/* forward with the row in registers: 16-byte loads, one read of the input (C % 8 == 0,
 * C <= 8 * VPT * blockDim). !ln selects RMSNorm. norm8_row normalises row blockIdx.x from its
 * vectors v (thread t holds vectors t, t + blockDim, ...) into out, mean and rstd. */
#define VPT 4
__device__ __forceinline__ void norm8_row(float (&v)[VPT][8], bf16 *out, float *mean, float *rstd, const bf16 *w,
                                          const bf16 *b, int C, float eps, int ln) {
    bf16 *y = out + (size_t)blockIdx.x * C;
    int C8 = C / 8;
    float s = 0.f;
#pragma unroll
    for (int u = 0; u < VPT; u++) {
        int c8 = threadIdx.x + u * blockDim.x;
        if (c8 < C8)
#pragma unroll
            for (int k = 0; k < 8; k++) s += v[u][k];
    }
    float mu = ln ? block_sum(s) / C : 0.f;
    float ss = 0.f;
#pragma unroll
    for (int u = 0; u < VPT; u++) {
        int c8 = threadIdx.x + u * blockDim.x;
        if (c8 < C8)
#pragma unroll
            for (int k = 0; k < 8; k++) { float d = v[u][k] - mu; ss += d * d; }
    }
    float r = rsqrtf(block_sum(ss) / C + eps);
#pragma unroll
    for (int u = 0; u < VPT; u++) {
        int c8 = threadIdx.x + u * blockDim.x;
        if (c8 < C8) {
            float wf[8], bf[8], o[8];
            if (w) ld8(w + 8 * c8, wf);
            if (b) ld8(b + 8 * c8, bf);
#pragma unroll
            for (int k = 0; k < 8; k++) o[k] = (v[u][k] - mu) * r * (w ? wf[k] : 1.f) + (b ? bf[k] : 0.f);
            st8(y + 8 * c8, o);
        }
    }
    if (threadIdx.x == 0) {
        if (mean) mean[blockIdx.x] = mu;
        if (rstd) rstd[blockIdx.x] = r;
    }
}
__global__ void norm8_kernel(bf16 *out, float *mean, float *rstd, const bf16 *inp, const bf16 *w, const bf16 *b, int C,
                             float eps, int ln) {
    const bf16 *x = inp + (size_t)blockIdx.x * C;
    float v[VPT][8];
#pragma unroll
    for (int u = 0; u < VPT; u++) {
        int c8 = threadIdx.x + u * blockDim.x;
        if (c8 < C / 8) ld8(x + 8 * c8, v[u]);
    }
    norm8_row(v, out, mean, rstd, w, b, C, eps, ln);
}
/* A block's residual add and the norm after it, in one pass over the row:
 * x_out = x_in + s gamma y (sample row / N's scale; gamma may be NULL), stored, and the norm of
 * the stored (bf16) values: bit for bit residual8_kernel and then norm8_kernel, with one read of
 * x_in and y and one write of x_out and out, against their two reads and writes of x and the
 * copy in front. x_out may equal x_in. */
__global__ void residual_norm8_kernel(bf16 *x_out, bf16 *out, float *mean, float *rstd, const bf16 *x_in,
                                      const bf16 *y, const bf16 *gamma, sarg s, int has_s, int N, const bf16 *w,
                                      const bf16 *b, int C, float eps, int ln) {
    size_t o = (size_t)blockIdx.x * C;
    float sc = has_s ? s.s[blockIdx.x / N] : 1.f;
    float v[VPT][8];
#pragma unroll
    for (int u = 0; u < VPT; u++) {
        int c8 = threadIdx.x + u * blockDim.x;
        if (c8 < C / 8) {
            float yv[8], g[8];
            ld8(x_in + o + 8 * c8, v[u]);
            ld8(y + o + 8 * c8, yv);
            if (gamma) ld8(gamma + 8 * c8, g);
#pragma unroll
            for (int k = 0; k < 8; k++) v[u][k] = round_bf16(v[u][k] + sc * (gamma ? g[k] : 1.f) * yv[k]);
            st8(x_out + o + 8 * c8, v[u]);
        }
    }
    norm8_row(v, out, mean, rstd, w, b, C, eps, ln);
}
/* shared by both backwards: mean (NULL for RMSNorm) selects the LayerNorm formula.
 * dinp (+)= rstd * (dn - [mean(dn)] - xhat * mean(dn * xhat)), dn = dout * w, xhat = (x - mu) * rstd
 * (add: added to dinp, else written)
 * dw += dout * xhat, db += dout (summed in cs.acc[0..C) and [C..2C), colsum_out of cuda_device.cuh). */
__global__ void norm_backward_kernel(bf16 *dinp, colsum_out cs, const bf16 *dout, const bf16 *inp, const bf16 *w,
                                     const float *mean, const float *rstd, int M, int C, int add) {
    float dwp[MAXPER], dbp[MAXPER];
    for (int j = 0; j < MAXPER; j++) dwp[j] = dbp[j] = 0.f;
    int r0 = blockIdx.x * ROWS, r1 = min(M, r0 + ROWS);
    for (int row = r0; row < r1; row++) {
        const bf16 *x = inp + (size_t)row * C, *dy = dout + (size_t)row * C;
        float mu = mean ? mean[row] : 0.f, r = rstd[row];
        float s1 = 0.f, s2 = 0.f;
        for (int c = threadIdx.x, j = 0; c < C; c += blockDim.x, j++) {
            float xh = (ld(x + c) - mu) * r, g = ld(dy + c), dn = g * (w ? ld(w + c) : 1.f);
            s1 += dn;
            s2 += dn * xh;
            dwp[j] += g * xh;
            dbp[j] += g;
        }
        s1 = block_sum(s1) / C;
        s2 = block_sum(s2) / C;
        if (!mean) s1 = 0.f;
        if (dinp) {
            bf16 *dx = dinp + (size_t)row * C;
            for (int c = threadIdx.x; c < C; c += blockDim.x) {
                float xh = (ld(x + c) - mu) * r, dn = ld(dy + c) * (w ? ld(w + c) : 1.f);
                st(dx + c, (add ? ld(dx + c) : 0.f) + r * (dn - s1 - xh * s2));
            }
        }
    }
    for (int c = threadIdx.x, j = 0; c < C; c += blockDim.x, j++) {
        atomicAdd(cs.acc + c, dwp[j]);
        atomicAdd(cs.acc + C + c, dbp[j]);
    }
    colsum_finish(cs);
}

/* The two per-vector steps of the warp-per-row backwards below, on the 8 columns of vector c8
 * of a row, from its loaded vectors (x, dout; dinp): norm_bwd_vec gives g = dout and
 * xh = (x - mu) r and adds the row's sums of dn = g w and dn xh into *s1, *s2; norm_bwd_dx_vec
 * stores [dinp +] r (dn - s1 - xh s2) once the row's means s1, s2 are known (add: dv holds dinp). */
__device__ __forceinline__ void norm_bwd_vec(const uint4 &xv, const uint4 &gv, const bf16 *w, int c8, float mu, float r,
                                             float g[8], float xh[8], float *s1, float *s2) {
    float xf[8], wf[8];
    unpack8(xv, xf);
    unpack8(gv, g);
    if (w) ld8(w + 8 * c8, wf);
#pragma unroll
    for (int k = 0; k < 8; k++) {
        float dn = g[k] * (w ? wf[k] : 1.f);
        xh[k] = (xf[k] - mu) * r;
        *s1 += dn;
        *s2 += dn * xh[k];
    }
}
__device__ __forceinline__ void norm_bwd_dx_vec(bf16 *dx, const uint4 &xv, const uint4 &gv, const uint4 &dv,
                                                const bf16 *w, int c8, float mu, float r, float s1, float s2,
                                                bool add, float (&o)[8]) {
    float xf[8], g[8], wf[8];
#pragma unroll
    for (int k = 0; k < 8; k++) o[k] = 0.f;
    unpack8(xv, xf);
    unpack8(gv, g);
    if (add) unpack8(dv, o);
    if (w) ld8(w + 8 * c8, wf);
#pragma unroll
    for (int k = 0; k < 8; k++) {
        float xh = (xf[k] - mu) * r, dn = g[k] * (w ? wf[k] : 1.f);
        o[k] += r * (dn - s1 - xh * s2);
    }
    st8(dx + 8 * c8, o);
}

/* p[0..8) += v (shared memory, 16-byte aligned, this lane's own columns) */
__device__ __forceinline__ void add8_smem(float *p, const float (&v)[8]) {
    float4 *q = (float4 *)p;
    float4 a = q[0], b = q[1];
    q[0] = make_float4(a.x + v[0], a.y + v[1], a.z + v[2], a.w + v[3]);
    q[1] = make_float4(b.x + v[4], b.y + v[5], b.z + v[6], b.w + v[7]);
}

/* The residual backward that follows a block's norm backward (norm_backward8_kernel with RES): with
 * the row's new dinp, dy = s gamma dinp (written) and dgamma += sum s dinp y, summed in the
 * kernel's second column sums (RMSNorm has no bias). s: sample row / N's drop-path scale. */
struct res_bwd {
    bf16 *dy;
    const bf16 *y, *gamma;
    sarg s;
    int has_s, N;
};

/* The same backward, one warp per row on 16-byte vectors (C % 8 == 0, C <= 256 * VPL): a lane
 * owns the columns of vectors lane, lane + 32, ... (VPL of them), for every row, so it sums the
 * weight and bias gradients of those columns in registers over all the rows its warp takes, and
 * the row's two means need only warp shuffles, no block barrier. Every load of a row (x, dout
 * and the dinp it adds to) is issued first and kept in registers as bf16: one round trip to
 * memory per row. (Loading dinp only after the means, and re-reading x and dout then, took two:
 * 120 us for the student's 13344 x 1408 on an H100, 2026-11-27, a third of the bandwidth.)
 * The block's warps then add their sums in shared memory ([2][C] floats, dynamic) and the block
 * adds those to cs.acc, one atomic per column. With the sums in registers VPL <= 6 (C <= 1536):
 * at VPL 8 the row and the sums no longer fit them.
 * SMS (the launch's pick at VPL 4 and 6 unless IV2_NORM_SMEM=0): the sums go to the warp's own
 * [2][C] floats of shared memory ([4][2][C] a block) instead of 2 x 8 x VPL registers a lane, so
 * three blocks fit an SM where two did (226 registers a thread at VPL 6, 126-140 with SMS). On an
 * H100 (2026-11-27, Nsight Compute, the student's 13344 x 1408): the q/k norm backward 77 -> 70-73
 * us, norm2 with the ls1 residual 131-137 -> 115-118 us; still 39-51 % of the DRAM bandwidth at
 * 25 % occupancy, so latency-bound: the next step is more rows in flight per warp.
 * SMS at VPL 13 (C <= 3328: the CLIP heads' and the 6B's 3200; 2026-11-27, without a GPU): one
 * pass where norm_dx_wide_kernel and norm_dwdb8_kernel read the rows twice (126 + 80 us a CLIP
 * head on an H100); two blocks an SM ([4][2][3200] floats, 102 KB each), 232 registers (246
 * with RES), no spills; a warp's row of x and dout in flight is 12.8 KB. */
/* PF (IV2_NORM_PF=1, with SMS at VPL 4 and 6; written 2026-11-27 without a GPU, to be timed):
 * each warp issues the loads of its next row (x, dout, dinp and, with RES, y) before it works on
 * the current one, so a warp has two rows in flight and its round trip to memory overlaps the
 * row's arithmetic and stores; y comes with the first loads, not after the means. Twice the
 * row registers: two blocks an SM. */
template <int VPL, bool SMS, bool PF = false> constexpr int norm_bwd8_min_blocks() {
    return PF ? 2 : SMS && VPL <= 6 ? 3 : SMS ? 2 : 1;
}
/* one row's vectors of this lane: x, dout, dinp (dx, when it is added to) and, with Y, y */
template <int VPL, bool Y, int YV>
__device__ __forceinline__ void norm_bwd_load_row(uint4 (&xv)[VPL], uint4 (&gv)[VPL], uint4 (&dv)[VPL],
                                                  uint4 (&yv)[YV], const bf16 *x, const bf16 *dy, const bf16 *dx,
                                                  const bf16 *y, int lane, int C8) {
#pragma unroll
    for (int u = 0; u < VPL; u++) {
        int c8 = lane + 32 * u;
        if (c8 < C8) {
            xv[u] = ldv(x + 8 * c8);
            gv[u] = ldv(dy + 8 * c8);
            if (dx) dv[u] = ldv(dx + 8 * c8);
            if (Y) yv[u < YV ? u : 0] = ldv(y + 8 * c8);
        }
    }
}
template <int VPL, bool RES, bool SMS = false, bool PF = false>
__global__ void __launch_bounds__(128, norm_bwd8_min_blocks<VPL, SMS, PF>())
    norm_backward8_kernel(bf16 *dinp, colsum_out cs, const bf16 *dout, const bf16 *inp, const bf16 *w,
                          const float *mean, const float *rstd, int M, int C, int rows_per_block, int add,
                          res_bwd rb) {
    static_assert(!PF || SMS, "PF runs with its sums in shared memory");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    float *part = (float *)smem_raw;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5, C8 = C / 8;
    constexpr int RV = SMS ? 1 : VPL;   /* register sums: none used with SMS */
    constexpr int YV = PF && RES ? VPL : 1;   /* y in registers: with PF and RES */
    float dwp[RV][8], dbp[RV][8];
#pragma unroll
    for (int u = 0; u < RV; u++)
#pragma unroll
        for (int k = 0; k < 8; k++) dwp[u][k] = dbp[u][k] = 0.f;
    float *mine = part + (SMS ? (size_t)warp * 2 * C : 0);   /* SMS: this warp's [2][C] */
    for (int i = threadIdx.x; i < (SMS ? nw : 1) * 2 * C; i += blockDim.x) part[i] = 0.f;
    if (SMS) __syncthreads();
    int r0 = blockIdx.x * rows_per_block, r1 = min(M, r0 + rows_per_block);
    /* PF: the row in hand, loaded in the previous round (zeroed: g++, building the emulation,
     * cannot tell that the vectors not loaded go unread) */
    uint4 xp[PF ? VPL : 1] = {}, gp[PF ? VPL : 1] = {}, dp[PF ? VPL : 1] = {}, yp[YV] = {};
    const bf16 *ry = RES ? rb.y : NULL;
    if constexpr (PF) {
        int row = r0 + warp;
        if (row < r1)
            norm_bwd_load_row<VPL, PF && RES, YV>(xp, gp, dp, yp, inp + (size_t)row * C, dout + (size_t)row * C,
                                       dinp && add ? dinp + (size_t)row * C : NULL,
                                       ry ? ry + (size_t)row * C : NULL, lane, C8);
    }
    for (int row = r0 + warp; row < r1; row += nw) {
        const bf16 *x = inp + (size_t)row * C, *dy = dout + (size_t)row * C;
        bf16 *dx = dinp ? dinp + (size_t)row * C : NULL;
        float mu = mean ? mean[row] : 0.f, r = rstd[row];
        /* zeroed: g++, building the emulation, cannot tell that the vectors not loaded go unread */
        uint4 xv[VPL] = {}, gv[VPL] = {}, dv[VPL] = {}, yv[YV] = {};
        if constexpr (PF) {
#pragma unroll
            for (int u = 0; u < VPL; u++) { xv[u] = xp[u]; gv[u] = gp[u]; dv[u] = dp[u]; }
#pragma unroll
            for (int u = 0; u < YV; u++) yv[u] = yp[u];
            int next = row + nw;   /* the next row's loads go out before this row's work */
            if (next < r1)
                norm_bwd_load_row<VPL, PF && RES, YV>(xp, gp, dp, yp, inp + (size_t)next * C, dout + (size_t)next * C,
                                           dinp && add ? dinp + (size_t)next * C : NULL,
                                           ry ? ry + (size_t)next * C : NULL, lane, C8);
        } else {   /* norm_bwd_load_row's loop, spelled out: through the helper ptxas gives the measured
                    * default kernel 154 registers instead of 140 (SMS, RES, VPL 6) */
#pragma unroll
            for (int u = 0; u < VPL; u++) {
                int c8 = lane + 32 * u;
                if (c8 < C8) {
                    xv[u] = ldv(x + 8 * c8);
                    gv[u] = ldv(dy + 8 * c8);
                    if (dx && add) dv[u] = ldv(dx + 8 * c8);
                }
            }
        }
        float s1 = 0.f, s2 = 0.f;
#pragma unroll
        for (int u = 0; u < VPL; u++) {
            int c8 = lane + 32 * u;
            if (c8 < C8) {
                float g[8], xh[8];
                norm_bwd_vec(xv[u], gv[u], w, c8, mu, r, g, xh, &s1, &s2);
                if constexpr (SMS) {   /* with RES, the second sums take dgamma below */
#pragma unroll
                    for (int k = 0; k < 8; k++) xh[k] *= g[k];
                    add8_smem(mine + 8 * c8, xh);
                    if (!RES) add8_smem(mine + C + 8 * c8, g);
                } else {
#pragma unroll
                    for (int k = 0; k < 8; k++) {
                        dwp[u][k] += g[k] * xh[k];
                        if (!RES) dbp[u][k] += g[k];   /* with RES, dbp sums dgamma below */
                    }
                }
            }
        }
        s1 = mean ? warp_sum(s1) / C : 0.f;
        s2 = warp_sum(s2) / C;
        if (!dx) continue;
        float sc = RES && rb.has_s ? rb.s.s[row / rb.N] : 1.f;
#pragma unroll
        for (int u = 0; u < VPL; u++) {
            int c8 = lane + 32 * u;
            if (c8 >= C8) continue;
            float o[8];
            norm_bwd_dx_vec(dx, xv[u], gv[u], dv[u], w, c8, mu, r, s1, s2, add, o);
            if (RES) {   /* dy = s gamma dinp; dgamma sums (in dbp: RMSNorm has no db) */
                float yf[8], gf[8];
                if constexpr (PF) unpack8(yv[u < YV ? u : 0], yf);
                else ld8(rb.y + (size_t)row * C + 8 * c8, yf);
                if (rb.gamma) ld8(rb.gamma + 8 * c8, gf);
                float dg[8];
#pragma unroll
                for (int k = 0; k < 8; k++) {
                    dg[k] = sc * o[k] * yf[k];
                    yf[k] = sc * (rb.gamma ? gf[k] : 1.f) * o[k];
                }
                if constexpr (SMS) add8_smem(mine + C + 8 * c8, dg);
                else
#pragma unroll
                    for (int k = 0; k < 8; k++) dbp[u][k] += dg[k];
                st8(rb.dy + (size_t)row * C + 8 * c8, yf);
            }
        }
    }
    __syncthreads();
    if constexpr (SMS) {   /* the warps' sums, column by column */
        for (int i = threadIdx.x; i < 2 * C; i += blockDim.x) {
            float t = 0.f;
            for (int wi = 0; wi < nw; wi++) t += part[(size_t)wi * 2 * C + i];
            atomicAdd(cs.acc + i, t);
        }
    } else {
        /* the warps add their sums into part one after the other: plain adds, no contended float
         * atomics on shared memory */
        for (int wi = 0; wi < nw; wi++) {
            if (warp == wi)
#pragma unroll
                for (int u = 0; u < VPL; u++) {
                    int c8 = lane + 32 * u;
                    if (c8 < C8)
#pragma unroll
                        for (int k = 0; k < 8; k++) {
                            part[8 * c8 + k] += dwp[u][k];
                            part[C + 8 * c8 + k] += dbp[u][k];
                        }
                }
            __syncthreads();
        }
        for (int i = threadIdx.x; i < 2 * C; i += blockDim.x) atomicAdd(cs.acc + i, part[i]);
    }
    colsum_finish(cs);
}

/* Rows wider than norm_backward8_kernel's registers hold (C > 1536: the 6B student, the CLIP
 * heads at 3200) take two kernels. norm_dx_wide_kernel: dinp only, one warp per row on 16-byte
 * vectors, a runtime loop over the row's vectors, RB per lane per round trip (the second pass
 * re-reads x and dout, mostly from L1).
 * norm_dwdb8_kernel: the weight and bias gradients as column sums (block_colsum_add's layout,
 * cuda_device.cuh), rows split over blockIdx.y. (Summing them per element into shared memory, as
 * before, took 2 shared atomics per element.) */
__global__ void __launch_bounds__(128) norm_dx_wide_kernel(bf16 *dinp, const bf16 *dout, const bf16 *inp,
                                                          const bf16 *w, const float *mean, const float *rstd, int M,
                                                          int C, int add) {
    int lane = threadIdx.x & 31, C8 = C / 8;
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= M) return;
    const bf16 *x = inp + (size_t)row * C, *dy = dout + (size_t)row * C;
    bf16 *dx = dinp + (size_t)row * C;
    float mu = mean ? mean[row] : 0.f, r = rstd[row];
    float s1 = 0.f, s2 = 0.f;
    /* RB vectors per lane per round trip to memory, in both passes */
    for_lane_vecs(x, dy, NULL, C8, lane, [&](int c8, uint4 xv, uint4 gv, uint4) {
        float g[8], xh[8];
        norm_bwd_vec(xv, gv, w, c8, mu, r, g, xh, &s1, &s2);
    });
    s1 = mean ? warp_sum(s1) / C : 0.f;
    s2 = warp_sum(s2) / C;
    for_lane_vecs(x, dy, add ? dx : NULL, C8, lane, [&](int c8, uint4 xv, uint4 gv, uint4 dv) {
        float o[8];
        norm_bwd_dx_vec(dx, xv, gv, dv, w, c8, mu, r, s1, s2, add, o);
    });
}
__global__ void __launch_bounds__(CS_THREADS) norm_dwdb8_kernel(colsum_out cs, const bf16 *dout, const bf16 *inp,
                                                               const float *mean, const float *rstd, int M, int C8,
                                                               int rows_per) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, j = blockIdx.x * 32 + lane;
    int r0 = blockIdx.y * rows_per, r1 = min(M, r0 + rows_per);
    float dw[8], db[8];
#pragma unroll
    for (int k = 0; k < 8; k++) dw[k] = db[k] = 0.f;
    if (j < C8)
        for (int i = r0 + w; i < r1; i += RB * CS_WARPS) {
            uint4 xv[RB], gv[RB];
#pragma unroll
            for (int u = 0; u < RB; u++) {
                int r = i + u * CS_WARPS;
                if (r < r1) {
                    size_t o = ((size_t)r * C8 + j) * 8;
                    xv[u] = ldv(inp + o);
                    gv[u] = ldv(dout + o);
                }
            }
#pragma unroll
            for (int u = 0; u < RB; u++) {
                int r = i + u * CS_WARPS;
                if (r < r1) {
                    float xf[8], g[8], mu = mean ? mean[r] : 0.f, rs = rstd[r];
                    unpack8(xv[u], xf);
                    unpack8(gv[u], g);
#pragma unroll
                    for (int k = 0; k < 8; k++) {
                        dw[k] += g[k] * (xf[k] - mu) * rs;
                        db[k] += g[k];
                    }
                }
            }
        }
    block_colsum_add(cs.acc, dw, C8);
    block_colsum_add(cs.acc + 8 * C8, db, C8);
    colsum_finish(cs);
}

/* out = x / ||x|| (no eps, as the official code) */
__global__ void l2norm_kernel(bf16 *out, float *norm, const bf16 *inp, int C) {
    const bf16 *x = inp + (size_t)blockIdx.x * C;
    float ss = 0.f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) { float v = ld(x + c); ss += v * v; }
    float n = sqrtf(block_sum(ss));
    for (int c = threadIdx.x; c < C; c += blockDim.x) st(out + (size_t)blockIdx.x * C + c, ld(x + c) / n);
    if (norm && threadIdx.x == 0) norm[blockIdx.x] = n;
}
/* dinp += (dout - out * <dout, out>) / norm */
__global__ void l2norm_backward_kernel(bf16 *dinp, const bf16 *dout, const bf16 *out, const float *norm, int C) {
    size_t o = (size_t)blockIdx.x * C;
    float s = 0.f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) s += ld(dout + o + c) * ld(out + o + c);
    s = block_sum(s);
    float inv = 1.f / norm[blockIdx.x];
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        st(dinp + o + c, ld(dinp + o + c) + (ld(dout + o + c) - ld(out + o + c) * s) * inv);
}
/* the two above, a warp per row on 16-byte vectors (C % 8 == 0, 16-byte aligned rows), RB
 * vectors per lane per round trip (the block-per-row kernels: 86 us and 155 us a call over the
 * heads' rows on an H100, 2026-11-27) */
__global__ void l2norm8_kernel(bf16 *out, float *norm, const bf16 *inp, int M, int C8) {
    int lane = threadIdx.x & 31, row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= M) return;
    size_t o = (size_t)row * C8 * 8;
    float n = sqrtf(warp_sum(lane_dot8(inp + o, inp + o, C8, lane)));
    if (norm && lane == 0) norm[row] = n;
    for_lane_vecs(inp + o, NULL, NULL, C8, lane, [&](int c8, uint4 xv, uint4, uint4) {
        float x[8];
        unpack8(xv, x);
#pragma unroll
        for (int k = 0; k < 8; k++) x[k] /= n;
        st8(out + o + 8 * c8, x);
    });
}
__global__ void l2norm_backward8_kernel(bf16 *dinp, const bf16 *dout, const bf16 *out, const float *norm, int M,
                                        int C8) {
    int lane = threadIdx.x & 31, row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= M) return;
    size_t o = (size_t)row * C8 * 8;
    float s = warp_sum(lane_dot8(dout + o, out + o, C8, lane)), inv = 1.f / norm[row];
    for_lane_vecs(dinp + o, dout + o, out + o, C8, lane, [&](int c8, uint4 dv, uint4 gv, uint4 yv) {
        float d[8], g[8], y[8];
        unpack8(dv, d);
        unpack8(gv, g);
        unpack8(yv, y);
#pragma unroll
        for (int k = 0; k < 8; k++) d[k] += (g[k] - y[k] * s) * inv;
        st8(dinp + o + 8 * c8, d);
    });
}

#endif
