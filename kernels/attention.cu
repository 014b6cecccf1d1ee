/* attention.cu: non-causal multi-head attention without N x N scores in global memory: the
 * host side (dispatch and launches) and the kernels without tensor cores. The tensor-core
 * kernels are in flash_attention.cuh.
 *
 * Forward: flash_fwd2_kernel, FlashAttention-2 style on bf16 tensor cores (mma.sync m16n8k16,
 * fp32 accumulate), for every model's case (D % 8 == 0, 16-byte aligned rows); the
 * unpipelined flash_fwd_kernel below takes the rest. Head dims are padded with zeros in shared
 * memory to the next instantiated width DP (zeros change no dot product). IV2_ATTN_FWD=WxR or
 * auto picks another launch configuration, for tuning (fwd2_choose in flash_attention.cuh).
 *
 * Backward: the fused kernels of flash_attention.cuh (D <= 128, aligned rows), or
 * strided-batched cuBLAS GEMMs over groups of heads with S and P materialised in scratch
 * (attention_backward_gemm: larger head dims, odd layouts, and IV2_ATTN_BWD=gemm);
 * IV2_ATTN_SIMPLE=1 selects plain fp32 kernels (one warp per query row for dq, one per key row
 * for dk and dv) and the unpipelined forward, for debugging. */
#include "cuda_common.cuh"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mma.cuh"
#include "flash_attention.cuh"

#define BM 64   /* the unpipelined forward: BM queries per block, FA_WARPS warps */
#define FA_WARPS 4


/* rows [r0, r0+64) of a [n, D] head view (row stride `stride`) into smem [64][DP+8], zero-padded */
template <int DP>
__device__ __forceinline__ void load_tile(bf16 *s, const bf16 *g, int r0, int n, int D, int stride, int vec) {
    const int SP = DP + 8;
    if (vec) { /* 16-byte chunks: D % 8 == 0 and 16-byte aligned rows */
        const int cpr = DP / 8;
        for (int i = threadIdx.x; i < BM * cpr; i += blockDim.x) {
            int r = i / cpr, c = (i % cpr) * 8;
            uint4 v = make_uint4(0, 0, 0, 0);
            if (r0 + r < n && c < D) v = *(const uint4 *)(g + (size_t)(r0 + r) * stride + c);
            *(uint4 *)(s + r * SP + c) = v;
        }
    } else {
        for (int i = threadIdx.x; i < BM * DP; i += blockDim.x) {
            int r = i / DP, c = i % DP;
            bf16 v = __float2bfloat16(0.f);
            if (r0 + r < n && c < D) v = g[(size_t)(r0 + r) * stride + c];
            s[r * SP + c] = v;
        }
    }
}

template <int DP>
__global__ void __launch_bounds__(FA_WARPS * 32) flash_fwd_kernel(bf16 *out, float *lse, const bf16 *q, const bf16 *k,
                                                                  const bf16 *v, int H, int Nq, int Nk, int D,
                                                                  int q_stride, int kv_stride, int o_stride, float scale,
                                                                  int vec) {
    const int SP = DP + 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *Qs = (bf16 *)smem_raw, *Ks = Qs + BM * SP, *Vs = Ks + BN * SP;
    int bh = blockIdx.y, b = bh / H, h = bh % H, q0 = blockIdx.x * BM;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const bf16 *qb = q + (size_t)b * Nq * q_stride + (size_t)h * D;
    const bf16 *kb = k + (size_t)b * Nk * kv_stride + (size_t)h * D;
    const bf16 *vb = v + (size_t)b * Nk * kv_stride + (size_t)h * D;
    load_tile<DP>(Qs, qb, q0, Nq, D, q_stride, vec);

    float o[DP / 8][4];
#pragma unroll
    for (int j = 0; j < DP / 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
    float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.f, 0.f};
    const float sl2 = scale * LOG2E;
    const bf16 *Qw = Qs + warp * 16 * SP;

    for (int k0 = 0; k0 < Nk; k0 += BN) {
        __syncthreads();
        load_tile<DP>(Ks, kb, k0, Nk, D, kv_stride, vec);
        load_tile<DP>(Vs, vb, k0, Nk, D, kv_stride, vec);
        __syncthreads();
        float s[BN / 8][4];
#pragma unroll
        for (int j = 0; j < BN / 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < DP / 16; kk++) {
            const bf16 *qa = Qw + kk * 16 + 2 * t;
            uint32_t a0 = *(const uint32_t *)(qa + g * SP), a1 = *(const uint32_t *)(qa + (g + 8) * SP);
            uint32_t a2 = *(const uint32_t *)(qa + g * SP + 8), a3 = *(const uint32_t *)(qa + (g + 8) * SP + 8);
#pragma unroll
            for (int j = 0; j < BN / 8; j++) {
                const bf16 *kp = Ks + (j * 8 + g) * SP + kk * 16 + 2 * t;
                mma16816(s[j], a0, a1, a2, a3, *(const uint32_t *)kp, *(const uint32_t *)(kp + 8));
            }
        }
        /* online softmax in log2 units; columns past Nk are masked */
        float mx[2] = {mrow[0], mrow[1]};
#pragma unroll
        for (int j = 0; j < BN / 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int col = k0 + j * 8 + 2 * t + (e & 1);
                s[j][e] = col < Nk ? s[j][e] * sl2 : -INFINITY;
                mx[e >> 1] = fmaxf(mx[e >> 1], s[j][e]);
            }
        float corr[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffff, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffff, mx[r], 2));
            corr[r] = exp2f(mrow[r] - mx[r]);
            mrow[r] = mx[r];
            lrow[r] *= corr[r];
        }
#pragma unroll
        for (int j = 0; j < BN / 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                s[j][e] = exp2f(s[j][e] - mrow[e >> 1]);
                lrow[e >> 1] += s[j][e];
            }
#pragma unroll
        for (int j = 0; j < DP / 8; j++) {
            o[j][0] *= corr[0]; o[j][1] *= corr[0];
            o[j][2] *= corr[1]; o[j][3] *= corr[1];
        }
        /* O += P V; P's accumulator layout is already the A-operand layout */
#pragma unroll
        for (int kc = 0; kc < BN / 16; kc++) {
            uint32_t a0 = pack_bf16(s[2 * kc][0], s[2 * kc][1]), a1 = pack_bf16(s[2 * kc][2], s[2 * kc][3]);
            uint32_t a2 = pack_bf16(s[2 * kc + 1][0], s[2 * kc + 1][1]);
            uint32_t a3 = pack_bf16(s[2 * kc + 1][2], s[2 * kc + 1][3]);
            const bf16 *vp = Vs + (kc * 16 + 2 * t) * SP + g;
#pragma unroll
            for (int j = 0; j < DP / 8; j++) {
                const bf16 *p = vp + j * 8;
                __nv_bfloat162 b0, b1;
                b0.x = p[0]; b0.y = p[SP];
                b1.x = p[8 * SP]; b1.y = p[9 * SP];
                mma16816(o[j], a0, a1, a2, a3, *(uint32_t *)&b0, *(uint32_t *)&b1);
            }
        }
    }
    /* finish: full row sums across the quad, normalise, store */
#pragma unroll
    for (int r = 0; r < 2; r++) {
        lrow[r] += __shfl_xor_sync(0xffffffff, lrow[r], 1);
        lrow[r] += __shfl_xor_sync(0xffffffff, lrow[r], 2);
    }
    int rows[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (rows[r] >= Nq) continue;
        float inv = 1.f / lrow[r];
        bf16 *op = out + ((size_t)b * Nq + rows[r]) * o_stride + (size_t)h * D;
#pragma unroll
        for (int j = 0; j < DP / 8; j++) {
            int c = j * 8 + 2 * t;
            if (c < D) op[c] = __float2bfloat16(o[j][2 * r] * inv);
            if (c + 1 < D) op[c + 1] = __float2bfloat16(o[j][2 * r + 1] * inv);
        }
        if (lse && t == 0) lse[((size_t)b * H + h) * Nq + rows[r]] = (mrow[r] + log2f(lrow[r])) / LOG2E;
    }
}

template <int DP>
static void launch_fwd(cuda_impl *im, bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int B, int H,
                       int Nq, int Nk, int D, int qs, int ks, int os, float scale, int vec) {
    size_t smem = (size_t)3 * BM * (DP + 8) * sizeof(bf16);
    static int configured = 0;  /* per instantiation; the attribute is per function, not per device */
    if (!configured) {
        CUDA_CHECK(cudaFuncSetAttribute(flash_fwd_kernel<DP>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        configured = 1;
    }
    dim3 grid(cdiv(Nq, BM), B * H);
    flash_fwd_kernel<DP><<<grid, FA_WARPS * 32, smem, im->stream>>>(out, lse, q, k, v, H, Nq, Nk, D, qs, ks, os, scale,
                                                                    vec);
    LAUNCH_CHECK();
}


template <int DP, int WARPS, int RT>
static void launch_fwd2(cuda_impl *im, bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int B,
                        int H, int Nq, int Nk, int D, int qs, int ks, int os, float scale) {
    size_t smem = fwd2_smem_bytes<DP, WARPS, RT>();
    static_assert(fwd2_smem_bytes<DP, WARPS, RT>() <= 227 * 1024, "over the shared memory of one block (sm_90)");
    static int configured = 0;
    if (!configured) {
        CUDA_CHECK(cudaFuncSetAttribute(flash_fwd2_kernel<DP, WARPS, RT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)smem));
        configured = 1;
    }
    dim3 grid(cdiv(Nq, fwd2_rows({WARPS, RT})), B * H);
    flash_fwd2_kernel<DP, WARPS, RT><<<grid, WARPS * 32, smem, im->stream>>>(out, lse, q, k, v, H, Nq, Nk, D, qs, ks,
                                                                             os, scale);
    LAUNCH_CHECK();
}

/* the Hopper forward (wgmma): NWG = 2 warpgroups of 64 query rows, K/V tiles of TN keys;
 * PIPE: flash_fwd3p_kernel (three stages, softmax overlapping the previous tile's P V) */
template <int DP, int TN, bool PIPE>
static void launch_fwd3(cuda_impl *im, bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int B,
                        int H, int Nq, int Nk, int D, int qs, int ks, int os, float scale) {
    const int NWG = 2;
    constexpr size_t smem = PIPE ? fwd3p_smem_bytes<DP, TN, NWG>() : fwd3_smem_bytes<DP, TN, NWG>();
    static_assert(smem <= 227 * 1024, "over the shared memory of one block (sm_90)");
    auto kernel = PIPE ? flash_fwd3p_kernel<DP, TN, NWG> : flash_fwd3_kernel<DP, TN, NWG>;
    static int configured = 0;
    if (!configured) {
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        configured = 1;
    }
    dim3 grid(cdiv(Nq, NWG * 64), B * H);
    kernel<<<grid, NWG * 128, smem, im->stream>>>(out, lse, q, k, v, H, Nq, Nk, D, qs, ks, os, scale);
    LAUNCH_CHECK();
}

/* IV2_ATTN_FWD (4x2, 4x1, 8x1, 8x2, auto, wg64, wg128, wg64p, wg128p; see fwd2_choose), read on each call:
 * bench_kernels switches it between calls */
static fwd2_cfg fwd_mode_from_env(void) {
    const char *s = getenv("IV2_ATTN_FWD");
    fwd2_cfg mode = {0, 0, 0, 0};
    if (s && *s && !fwd2_parse(s, &mode))
        iv2_panic("cuda attention: IV2_ATTN_FWD=%s: expected one of 4x2, 4x1, 8x1, 8x2, auto, wg64, wg128, wg64p, "
                  "wg128p (or unset)", s);
    return mode;
}

/* the configuration of fwd2_choose: by default 4 warps of 32 query rows (2 row tiles) per
 * block (8 warps at head dims 65-96); one row tile per warp for the widest heads (register
 * budget) and for single-query calls (the pooling head) */
template <int DP>
static void launch_fwd2_any(cuda_impl *im, bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int B,
                            int H, int Nq, int Nk, int D, int qs, int ks, int os, float scale, fwd2_cfg mode) {
    fwd2_cfg c = fwd2_choose(mode, DP, Nq);
    if (!fwd2_built(DP, c))
        iv2_panic("cuda attention: IV2_ATTN_FWD=%dx%d is not built for head dim %d (8x2 takes head dims up to 96)",
                  c.warps, c.rt, D);
    if (c.tn > 0 && !im->wgmma)
        iv2_panic("cuda attention: IV2_ATTN_FWD=wg%d%s needs a build with CUDA_ARCH 90a and a compute capability "
                  "9.0 GPU (H100, H200)", c.tn, c.pipe ? "p" : "");
    if constexpr (DP <= 128) {
        if (c.tn > 0) {
#define FWD3_ARGS im, out, lse, q, k, v, B, H, Nq, Nk, D, qs, ks, os, scale
            if (c.tn == 64 && !c.pipe) launch_fwd3<DP, 64, false>(FWD3_ARGS);
            if (c.tn == 128 && !c.pipe) launch_fwd3<DP, 128, false>(FWD3_ARGS);
            if (c.tn == 64 && c.pipe) launch_fwd3<DP, 64, true>(FWD3_ARGS);
            if (c.tn == 128 && c.pipe) launch_fwd3<DP, 128, true>(FWD3_ARGS);
#undef FWD3_ARGS
            return;
        }
        if (c.warps == 4 && c.rt == 2) {
            launch_fwd2<DP, 4, 2>(im, out, lse, q, k, v, B, H, Nq, Nk, D, qs, ks, os, scale);
            return;
        }
        if (c.warps == 8 && c.rt == 1) {
            launch_fwd2<DP, 8, 1>(im, out, lse, q, k, v, B, H, Nq, Nk, D, qs, ks, os, scale);
            return;
        }
    }
    if constexpr (DP <= 96) {
        if (c.warps == 8 && c.rt == 2) {
            launch_fwd2<DP, 8, 2>(im, out, lse, q, k, v, B, H, Nq, Nk, D, qs, ks, os, scale);
            return;
        }
    }
    launch_fwd2<DP, 4, 1>(im, out, lse, q, k, v, B, H, Nq, Nk, D, qs, ks, os, scale);
}

/* probs_mean[b, i, j] = mean_h exp(scale q_i . k_j - lse[b,h,i]) (the pooling head's map; Nq small) */
__global__ void probs_mean_kernel(float *pm, const float *lse, const bf16 *q, const bf16 *k, int H, int Nq, int Nk,
                                  int D, int qs, int ks, float scale) {
    int b = blockIdx.y, i = blockIdx.x;
    for (int j = threadIdx.x; j < Nk; j += blockDim.x) {
        float acc = 0.f;
        for (int h = 0; h < H; h++) {
            const bf16 *qp = q + ((size_t)b * Nq + i) * qs + (size_t)h * D;
            const bf16 *kp = k + ((size_t)b * Nk + j) * ks + (size_t)h * D;
            float d = 0.f;
            for (int c = 0; c < D; c++) d += ld(qp + c) * ld(kp + c);
            acc += expf(d * scale - lse[((size_t)b * H + h) * Nq + i]);
        }
        pm[((size_t)b * Nq + i) * Nk + j] = acc / H;
    }
}

static int aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

static void c_attention(iv2_backend *be, void *out, float *lse, float *probs_mean, const void *q, const void *k,
                        const void *v, int B, int H, int Nq, int Nk, int D, int q_stride, int kv_stride, int o_stride,
                        float scale) {
    if (B <= 0 || H <= 0 || Nq <= 0 || Nk <= 0) return;
    cuda_impl *im = impl_of(be);
    if (probs_mean && !lse) lse = cuda_scratch(be, (size_t)B * H * Nq * sizeof(float));
    int vec = D % 8 == 0 && q_stride % 8 == 0 && kv_stride % 8 == 0 && o_stride % 8 == 0 && aligned16(q) &&
              aligned16(k) && aligned16(v) && aligned16(out);
    const bf16 *Q = (const bf16 *)q, *K = (const bf16 *)k, *V = (const bf16 *)v;
    bf16 *O = (bf16 *)out;
    if (vec && getenv("IV2_ATTN_SIMPLE") == NULL) {
        fwd2_cfg m = fwd_mode_from_env();
        if (D <= 32) launch_fwd2_any<32>(im, O, lse, Q, K, V, B, H, Nq, Nk, D, q_stride, kv_stride, o_stride, scale, m);
        else if (D <= 64) launch_fwd2_any<64>(im, O, lse, Q, K, V, B, H, Nq, Nk, D, q_stride, kv_stride, o_stride, scale, m);
        else if (D <= 96) launch_fwd2_any<96>(im, O, lse, Q, K, V, B, H, Nq, Nk, D, q_stride, kv_stride, o_stride, scale, m);
        else if (D <= 128) launch_fwd2_any<128>(im, O, lse, Q, K, V, B, H, Nq, Nk, D, q_stride, kv_stride, o_stride, scale, m);
        /* D <= 256: the pooling head (Nq = 1). The pipelined kernel's 165 KiB of shared memory
         * exceed an A100's 163 KiB; there the unpipelined one (101 KiB) takes it. */
        else if (D <= 256 && fwd2_smem_bytes<256, 4, 1>() <= im->smem_optin)
            launch_fwd2_any<256>(im, O, lse, Q, K, V, B, H, Nq, Nk, D, q_stride, kv_stride, o_stride, scale, m);
        else if (D <= 256) launch_fwd<256>(im, O, lse, Q, K, V, B, H, Nq, Nk, D, q_stride, kv_stride, o_stride, scale, vec);
        else iv2_panic("cuda attention: head dim %d over the limit 256", D);
    } else if (D <= 32) launch_fwd<32>(im, O, lse, Q, K, V, B, H, Nq, Nk, D, q_stride, kv_stride, o_stride, scale, vec);
    else if (D <= 64) launch_fwd<64>(im, O, lse, Q, K, V, B, H, Nq, Nk, D, q_stride, kv_stride, o_stride, scale, vec);
    else if (D <= 96) launch_fwd<96>(im, O, lse, Q, K, V, B, H, Nq, Nk, D, q_stride, kv_stride, o_stride, scale, vec);
    else if (D <= 128) launch_fwd<128>(im, O, lse, Q, K, V, B, H, Nq, Nk, D, q_stride, kv_stride, o_stride, scale, vec);
    else if (D <= 256) launch_fwd<256>(im, O, lse, Q, K, V, B, H, Nq, Nk, D, q_stride, kv_stride, o_stride, scale, vec);
    else iv2_panic("cuda attention: head dim %d over the limit 256", D);
    if (probs_mean) {
        probs_mean_kernel<<<dim3(Nq, B), 256, 0, im->stream>>>(probs_mean, lse, Q, K, H, Nq, Nk, D, q_stride,
                                                              kv_stride, scale);
        LAUNCH_CHECK();
    }
}

/* ---- backward ---- */
#define MAXD 8 /* dims per lane: D <= 256 */

/* delta[b,h,i] = sum_d dout * out (the softmax backward's row term) */
__global__ void attn_delta_kernel(float *delta, const bf16 *dout, const bf16 *out, int B, int H, int Nq, int D,
                                  int os) {
    int row = blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= B * H * Nq) return;
    int i = row % Nq, h = (row / Nq) % H, b = row / (Nq * H);
    size_t off = ((size_t)b * Nq + i) * os + (size_t)h * D;
    float s = 0.f;
    for (int c = lane; c < D; c += 32) s += ld(dout + off + c) * ld(out + off + c);
    s = warp_sum(s);
    if (lane == 0) delta[row] = s;
}

/* one warp per query row: dq_i += scale * sum_j p_ij (dout_i . v_j - delta_i) k_j */
__global__ void attn_dq_kernel(bf16 *dq, const bf16 *dout, const bf16 *q, const bf16 *k, const bf16 *v,
                               const float *lse, const float *delta, int B, int H, int Nq, int Nk, int D, int qs,
                               int ks, int os, float scale, int add) {
    int row = blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= B * H * Nq) return;
    int i = row % Nq, h = (row / Nq) % H, b = row / (Nq * H);
    float qr[MAXD], gr[MAXD], acc[MAXD];
    const bf16 *qp = q + ((size_t)b * Nq + i) * qs + (size_t)h * D, *gp = dout + ((size_t)b * Nq + i) * os + (size_t)h * D;
#pragma unroll
    for (int u = 0; u < MAXD; u++) {
        int c = lane + 32 * u;
        qr[u] = c < D ? ld(qp + c) : 0.f;
        gr[u] = c < D ? ld(gp + c) : 0.f;
        acc[u] = 0.f;
    }
    float L = lse[row], dl = delta[row];
    for (int j = 0; j < Nk; j++) {
        const bf16 *kp = k + ((size_t)b * Nk + j) * ks + (size_t)h * D, *vp = v + ((size_t)b * Nk + j) * ks + (size_t)h * D;
        float kr[MAXD], s = 0.f, dp = 0.f;
#pragma unroll
        for (int u = 0; u < MAXD; u++) {
            int c = lane + 32 * u;
            kr[u] = c < D ? ld(kp + c) : 0.f;
            s += qr[u] * kr[u];
            dp += c < D ? gr[u] * ld(vp + c) : 0.f;
        }
        s = warp_sum(s);
        dp = warp_sum(dp);
        float p = expf(s * scale - L), ds = p * (dp - dl) * scale;
#pragma unroll
        for (int u = 0; u < MAXD; u++) acc[u] += ds * kr[u];
    }
    bf16 *dqp = dq + ((size_t)b * Nq + i) * qs + (size_t)h * D;
#pragma unroll
    for (int u = 0; u < MAXD; u++) {
        int c = lane + 32 * u;
        if (c < D) st(dqp + c, (add ? ld(dqp + c) : 0.f) + acc[u]);
    }
}

/* one warp per key row: dv_j += sum_i p_ij dout_i; dk_j += scale * sum_i p_ij (dout_i . v_j - delta_i) q_i */
__global__ void attn_dkv_kernel(bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *q, const bf16 *k, const bf16 *v,
                                const float *lse, const float *delta, int B, int H, int Nq, int Nk, int D, int qs,
                                int ks, int os, float scale, int add) {
    int row = blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= B * H * Nk) return;
    int j = row % Nk, h = (row / Nk) % H, b = row / (Nk * H);
    float kr[MAXD], vr[MAXD], ak[MAXD], av[MAXD];
    const bf16 *kp = k + ((size_t)b * Nk + j) * ks + (size_t)h * D, *vp = v + ((size_t)b * Nk + j) * ks + (size_t)h * D;
#pragma unroll
    for (int u = 0; u < MAXD; u++) {
        int c = lane + 32 * u;
        kr[u] = c < D ? ld(kp + c) : 0.f;
        vr[u] = c < D ? ld(vp + c) : 0.f;
        ak[u] = av[u] = 0.f;
    }
    for (int i = 0; i < Nq; i++) {
        const bf16 *qp = q + ((size_t)b * Nq + i) * qs + (size_t)h * D, *gp = dout + ((size_t)b * Nq + i) * os + (size_t)h * D;
        float qr[MAXD], gr[MAXD], s = 0.f, dp = 0.f;
#pragma unroll
        for (int u = 0; u < MAXD; u++) {
            int c = lane + 32 * u;
            qr[u] = c < D ? ld(qp + c) : 0.f;
            gr[u] = c < D ? ld(gp + c) : 0.f;
            s += qr[u] * kr[u];
            dp += gr[u] * vr[u];
        }
        s = warp_sum(s);
        dp = warp_sum(dp);
        size_t r = ((size_t)b * H + h) * Nq + i;
        float p = expf(s * scale - lse[r]), ds = p * (dp - delta[r]) * scale;
#pragma unroll
        for (int u = 0; u < MAXD; u++) {
            av[u] += p * gr[u];
            ak[u] += ds * qr[u];
        }
    }
    bf16 *dkp = dk + ((size_t)b * Nk + j) * ks + (size_t)h * D, *dvp = dv + ((size_t)b * Nk + j) * ks + (size_t)h * D;
#pragma unroll
    for (int u = 0; u < MAXD; u++) {
        int c = lane + 32 * u;
        if (c < D) {
            if (dk) st(dkp + c, (add ? ld(dkp + c) : 0.f) + ak[u]);
            if (dv) st(dvp + c, (add ? ld(dvp + c) : 0.f) + av[u]);
        }
    }
}

/* ---- backward on cuBLAS: per group of (batch, head) pairs, S = Q K^T and P = softmax are
 * materialised in scratch (fp32 S, bf16 P; one batch or one head at a time, so scratch is
 * G x Nq x Nk), then dV += P^T dO, dP = dO V^T, dS = P (dP - delta) scale, dQ += dS K,
 * dK += dS^T Q as strided-batched tensor-core GEMMs. Scratch grows with Nq x Nk; the fused
 * kernels of flash_attention.cuh need none. */
__global__ void attn_p_kernel(bf16 *P, const float *S, const float *lse, int Nq, int Nk, size_t n, float scale,
                              size_t lse_group_stride, size_t lse_row0) {
    /* S, P: [G][Nq][Nk]; lse of group g, row i at lse[lse_row0 + g * lse_group_stride + i] */
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
        size_t gi = e / Nk, g = gi / Nq, i = gi % Nq;
        P[e] = __float2bfloat16(expf(S[e] * scale - lse[lse_row0 + g * lse_group_stride + i]));
    }
}
__global__ void attn_ds_kernel(bf16 *P, const float *dP, const float *delta, int Nq, int Nk, size_t n, float scale,
                               size_t d_group_stride, size_t d_row0) {
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
        size_t gi = e / Nk, g = gi / Nq, i = gi % Nq;
        float p = __bfloat162float(P[e]);
        P[e] = __float2bfloat16(p * (dP[e] - delta[d_row0 + g * d_group_stride + i]) * scale);
    }
}

/* column-major strided-batched GEMM, bf16 inputs, C in ctype (CUDA_R_32F or CUDA_R_16BF) */
static void bgemm(cuda_impl *im, int ta, int tb, int m, int n, int k, const void *A, int lda, long long sa,
                  const void *B, int ldb, long long sb, float beta, void *C, cudaDataType_t ctype, int ldc,
                  long long sc, int count) {
    float alpha = 1.f;
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(im->blas, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                            m, n, k, &alpha, A, CUDA_R_16BF, lda, sa, B, CUDA_R_16BF, ldb, sb, &beta,
                                            C, ctype, ldc, sc, count, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

static size_t bwd_delta_bytes(int B, int H, int Nq) { return ((size_t)B * H * Nq * 4 + 255) / 256 * 256; }
static size_t bwd_scratch_bytes(int B, int H, int Nq, int Nk) {
    size_t G = H >= B ? H : B;
    return bwd_delta_bytes(B, H, Nq) + G * Nq * Nk * 6;
}

static void attention_backward_gemm(iv2_backend *be, bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *q,
                                    const bf16 *k, const bf16 *v, const float *lse, const float *delta, int B, int H,
                                    int Nq, int Nk, int D, int qs, int ks, int os, float scale, int add) {
    cuda_impl *im = impl_of(be);
    float beta = add ? 1.f : 0.f;   /* every dq, dk, dv row is stored once, all keys and queries in one GEMM */
    /* group over heads (loop over batch) or over batch (loop over heads), whichever is larger */
    int by_head = H >= B, G = by_head ? H : B, L = by_head ? B : H;
    size_t NN = (size_t)Nq * Nk, n = (size_t)G * NN;
    /* scratch (sized by the caller): delta at the front, then S / dP in fp32, P / dS in bf16 */
    char *scr = (char *)delta;
    float *S = (float *)(scr + bwd_delta_bytes(B, H, Nq));
    bf16 *P = (bf16 *)(scr + bwd_delta_bytes(B, H, Nq) + n * 4);
    const float *dl = delta;
    for (int l = 0; l < L; l++) {
        int b0 = by_head ? l : 0, h0 = by_head ? 0 : l;
        /* element offsets of this loop step and strides between the G group members */
        size_t oq = (size_t)b0 * Nq * qs + (size_t)h0 * D, ok = (size_t)b0 * Nk * ks + (size_t)h0 * D;
        size_t oo = (size_t)b0 * Nq * os + (size_t)h0 * D;
        long long gq = by_head ? D : (long long)Nq * qs, gk = by_head ? D : (long long)Nk * ks;
        long long go = by_head ? D : (long long)Nq * os;
        /* lse / delta [B][H][Nq]: row of (b, h) at (b * H + h) * Nq */
        size_t row0 = ((size_t)b0 * H + h0) * Nq, gstride = by_head ? (size_t)Nq : (size_t)H * Nq;
        /* S^T (col-major Nk x Nq) = K^T-op... : S[i][j] = q_i . k_j */
        bgemm(im, 1, 0, Nk, Nq, D, k + ok, ks, gk, q + oq, qs, gq, 0.f, S, CUDA_R_32F, Nk, (long long)NN, G);
        unsigned grid = cdiv(n, 256) > 8192 ? 8192 : cdiv(n, 256);
        attn_p_kernel<<<grid, 256, 0, im->stream>>>(P, S, lse, Nq, Nk, n, scale, gstride, row0);
        LAUNCH_CHECK();
        /* dV[j][d] += sum_i P[i][j] dO[i][d] */
        if (dv)
            bgemm(im, 0, 1, D, Nk, Nq, dout + oo, os, go, P, Nk, (long long)NN, beta, dv + ok, CUDA_R_16BF, ks, gk, G);
        /* dP[i][j] = dO_i . v_j */
        bgemm(im, 1, 0, Nk, Nq, D, v + ok, ks, gk, dout + oo, os, go, 0.f, S, CUDA_R_32F, Nk, (long long)NN, G);
        attn_ds_kernel<<<grid, 256, 0, im->stream>>>(P, S, dl, Nq, Nk, n, scale, gstride, row0);
        LAUNCH_CHECK();
        /* dQ[i][d] += sum_j dS[i][j] K[j][d] */
        if (dq) bgemm(im, 0, 0, D, Nq, Nk, k + ok, ks, gk, P, Nk, (long long)NN, beta, dq + oq, CUDA_R_16BF, qs, gq, G);
        /* dK[j][d] += sum_i dS[i][j] Q[i][d] */
        if (dk) bgemm(im, 0, 1, D, Nk, Nq, q + oq, qs, gq, P, Nk, (long long)NN, beta, dk + ok, CUDA_R_16BF, ks, gk, G);
    }
}

/* IV2_ATTN_BWD=ds (DS): the dK/dV kernel also stores dS (bf16, [B*H][Nq][ld], ld = Nk rounded up
 * to 8; scratch after delta), and dQ = scale dS K takes one product a tile (attn_bwd_dq_ds_kernel)
 * instead of the dQ kernel's three. Scratch: 2 B x H x Nq x ld bytes (181 MB at the student's
 * 32 x 16 x 417). Needs dq and dk or dv (backward_path); not yet timed on a GPU. */
static size_t ds_ld(int Nk) { return ((size_t)Nk + 7) / 8 * 8; }
/* FD (IV2_ATTN_BWD=fd, path 4): the dQ kernel first, making delta from dO and o (the forward's
 * output) into the scratch delta the dK/dV kernel then reads; no attn_delta_kernel before */
template <int DP, bool DS = false, bool FD = false>
static void launch_bwd_fused(cuda_impl *im, bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *q,
                             const bf16 *k, const bf16 *v, const float *lse, const float *delta, int B, int H, int Nq,
                             int Nk, int D, int qs, int ks, int os, float scale, int add, const bf16 *o = NULL) {
    static_assert(!(DS && FD), "dS stored or delta fused, not both");
    const int M = BWARPS * 16;
    size_t smem_dq = DS ? bwd_dq_ds_smem_bytes<DP>() : bwd_dq_smem_bytes<DP>(), smem_dkv = bwd_dkv_smem_bytes<DP>();
    static int configured = 0;   /* per instantiation */
    if (!configured) {
        if (DS)
            CUDA_CHECK(cudaFuncSetAttribute(attn_bwd_dq_ds_kernel<DP>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            (int)smem_dq));
        else
            CUDA_CHECK(cudaFuncSetAttribute(attn_bwd_dq_kernel<DP, FD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            (int)smem_dq));
        CUDA_CHECK(cudaFuncSetAttribute(attn_bwd_dkv_kernel<DP, DS>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)smem_dkv));
        configured = 1;
    }
    ds_out ds = {NULL, 0};
    if (DS) ds = ds_out{(bf16 *)((char *)delta + bwd_delta_bytes(B, H, Nq)), (int)ds_ld(Nk)};
    if (FD) {   /* dQ and delta first; the dK/dV kernel below reads that delta */
        attn_bwd_dq_kernel<DP, true><<<dim3(cdiv(Nq, M), B * H), BWARPS * 32, smem_dq, im->stream>>>(
            dq, dout, q, k, v, lse, NULL, H, Nq, Nk, D, qs, ks, os, scale, add, fd_out{o, (float *)delta});
        LAUNCH_CHECK();
    }
    if (dk || dv) {
        attn_bwd_dkv_kernel<DP, DS><<<dim3(cdiv(Nk, M), B * H), BWARPS * 32, smem_dkv, im->stream>>>(
            dk, dv, dout, q, k, v, lse, delta, H, Nq, Nk, D, qs, ks, os, scale, add, ds);
        LAUNCH_CHECK();
    }
    if (dq && DS) {
        attn_bwd_dq_ds_kernel<DP><<<dim3(cdiv(Nq, M), B * H), BWARPS * 32, smem_dq, im->stream>>>(
            dq, ds.p, ds.ld, k, H, Nq, Nk, D, qs, ks, scale, add);
        LAUNCH_CHECK();
    } else if (dq && !FD) {
        attn_bwd_dq_kernel<DP><<<dim3(cdiv(Nq, M), B * H), BWARPS * 32, smem_dq, im->stream>>>(
            dq, dout, q, k, v, lse, delta, H, Nq, Nk, D, qs, ks, os, scale, add, fd_out{NULL, NULL});
        LAUNCH_CHECK();
    }
}

/* the Hopper fused backward (wgmma): BWG warpgroups of 64 rows per block, in both kernels */
template <int DP>
static void launch_bwd3(cuda_impl *im, bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *q, const bf16 *k,
                        const bf16 *v, const float *lse, const float *delta, int B, int H, int Nq, int Nk, int D,
                        int qs, int ks, int os, float scale, int add) {
    const int M = BWG * 64;
    constexpr size_t smem_dq = bwd3_dq_smem_bytes<DP>(), smem_dkv = bwd3_dkv_smem_bytes<DP>();
    static_assert(smem_dkv <= 227 * 1024, "over the shared memory of one block (sm_90)");
    static int configured = 0;   /* per instantiation */
    if (!configured) {
        CUDA_CHECK(cudaFuncSetAttribute(attn_bwd3_dq_kernel<DP>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)smem_dq));
        CUDA_CHECK(cudaFuncSetAttribute(attn_bwd3_dkv_kernel<DP>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)smem_dkv));
        configured = 1;
    }
    if (dk || dv) {
        attn_bwd3_dkv_kernel<DP><<<dim3(cdiv(Nk, M), B * H), BWG * 128, smem_dkv, im->stream>>>(
            dk, dv, dout, q, k, v, lse, delta, H, Nq, Nk, D, qs, ks, os, scale, add);
        LAUNCH_CHECK();
    }
    if (dq) {
        attn_bwd3_dq_kernel<DP><<<dim3(cdiv(Nq, M), B * H), BWG * 128, smem_dq, im->stream>>>(
            dq, dout, q, k, v, lse, delta, H, Nq, Nk, D, qs, ks, os, scale, add);
        LAUNCH_CHECK();
    }
}

/* Which backward runs: 0 the GEMM path, 1 the fused mma.sync kernels, 2 the fused wgmma ones.
 * The fused backward takes every model's case (D <= 128, D % 8 == 0, 16-byte aligned rows);
 * the GEMM path takes the rest, and everything when IV2_ATTN_BWD=gemm (tests/gpu/check.sh
 * runs the parity tests both ways). IV2_ATTN_BWD=wg selects the Hopper kernels for the fused
 * cases (they pass on an H100, but are no faster than the mma.sync ones); IV2_ATTN_BWD=ds the
 * mma.sync dK/dV kernel storing dS and dQ from it (3, launch_bwd_fused<DP, true>); IV2_ATTN_BWD=fd
 * the mma.sync kernels with delta made in the dQ kernel, which runs first (4,
 * launch_bwd_fused<DP, false, true>). */
static int backward_path(const cuda_impl *im, const void *dq, const void *dk, const void *dv, const void *dout,
                         const void *q, const void *k, const void *v, int D, int qs, int ks, int os) {
    const char *m = getenv("IV2_ATTN_BWD");
    if (m && strcmp(m, "gemm") == 0) return 0;
    int wg = m && strcmp(m, "wg") == 0, dsm = m && strcmp(m, "ds") == 0, fdm = m && strcmp(m, "fd") == 0;
    if (m && *m && !wg && !dsm && !fdm)
        iv2_panic("cuda attention: IV2_ATTN_BWD=%s: expected gemm, wg, ds or fd (or unset)", m);
    if (wg && !im->wgmma)
        iv2_panic("cuda attention: IV2_ATTN_BWD=wg needs a build with CUDA_ARCH 90a and a compute capability 9.0 GPU");
    int ok = D <= 128 && D % 8 == 0 && qs % 8 == 0 && ks % 8 == 0 && os % 8 == 0;
    const void *p[7] = {dq, dk, dv, dout, q, k, v};
    for (int i = 0; i < 7; i++) ok = ok && (p[i] == NULL || aligned16(p[i]));
    if (!ok) return 0;
    /* ds: dQ from dS only when the dK/dV kernel runs; fd: delta in the dQ kernel, so only with dQ */
    return wg ? 2 : dsm && dq && (dk || dv) ? 3 : fdm && dq ? 4 : 1;
}

static void c_attention_backward(iv2_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *q,
                                 const void *k, const void *v, const void *out, const float *lse, int B, int H, int Nq,
                                 int Nk, int D, int q_stride, int kv_stride, int o_stride, float scale, int add) {
    if (B <= 0 || H <= 0 || Nq <= 0 || Nk <= 0) return;
    if (D > 32 * MAXD) iv2_panic("cuda attention backward: head dim %d over the limit %d", D, 32 * MAXD);
    if (!lse) iv2_panic("cuda attention backward: the forward's lse is required");
    cuda_impl *im = impl_of(be);
    int simple = getenv("IV2_ATTN_SIMPLE") != NULL;
    int path = simple ? 0 : backward_path(im, dq, dk, dv, dout, q, k, v, D, q_stride, kv_stride, o_stride);
    int fused = path > 0;
    size_t scratch = path == 3 ? bwd_delta_bytes(B, H, Nq) + (size_t)B * H * Nq * ds_ld(Nk) * 2 :
                     simple || fused ? (size_t)B * H * Nq * sizeof(float) : bwd_scratch_bytes(B, H, Nq, Nk);
    float *delta = cuda_scratch(be, scratch);
    const int wpb = 4;
    int rq = B * H * Nq, rk = B * H * Nk;
    if (path != 4) {   /* fd: the dQ kernel makes delta */
        attn_delta_kernel<<<cdiv(rq, wpb), wpb * 32, 0, im->stream>>>(delta, (const bf16 *)dout, (const bf16 *)out, B,
                                                                      H, Nq, D, o_stride);
        LAUNCH_CHECK();
    }
    if (fused) {
        const bf16 *G = (const bf16 *)dout, *Q = (const bf16 *)q, *K = (const bf16 *)k, *V = (const bf16 *)v;
        bf16 *dQ = (bf16 *)dq, *dK = (bf16 *)dk, *dV = (bf16 *)dv;
#define BWD_ARGS im, dQ, dK, dV, G, Q, K, V, lse, delta, B, H, Nq, Nk, D, q_stride, kv_stride, o_stride, scale, add
        if (path == 2) {
            if (D <= 32) launch_bwd3<32>(BWD_ARGS);
            else if (D <= 64) launch_bwd3<64>(BWD_ARGS);
            else if (D <= 96) launch_bwd3<96>(BWD_ARGS);
            else launch_bwd3<128>(BWD_ARGS);
            return;
        }
        if (path == 4) {
            const bf16 *O = (const bf16 *)out;
            if (D <= 32) launch_bwd_fused<32, false, true>(BWD_ARGS, O);
            else if (D <= 64) launch_bwd_fused<64, false, true>(BWD_ARGS, O);
            else if (D <= 96) launch_bwd_fused<96, false, true>(BWD_ARGS, O);
            else launch_bwd_fused<128, false, true>(BWD_ARGS, O);
            return;
        }
        if (path == 3) {
            if (D <= 32) launch_bwd_fused<32, true>(BWD_ARGS);
            else if (D <= 64) launch_bwd_fused<64, true>(BWD_ARGS);
            else if (D <= 96) launch_bwd_fused<96, true>(BWD_ARGS);
            else launch_bwd_fused<128, true>(BWD_ARGS);
            return;
        }
        if (D <= 32) launch_bwd_fused<32>(BWD_ARGS);
        else if (D <= 64) launch_bwd_fused<64>(BWD_ARGS);
        else if (D <= 96) launch_bwd_fused<96>(BWD_ARGS);
        else launch_bwd_fused<128>(BWD_ARGS);
#undef BWD_ARGS
        return;
    }
    if (!simple) {   /* delta stays at the front of the scratch */
        attention_backward_gemm(be, (bf16 *)dq, (bf16 *)dk, (bf16 *)dv, (const bf16 *)dout, (const bf16 *)q,
                                (const bf16 *)k, (const bf16 *)v, lse, delta, B, H, Nq, Nk, D, q_stride, kv_stride,
                                o_stride, scale, add);
        return;
    }
    if (dq) {
        attn_dq_kernel<<<cdiv(rq, wpb), wpb * 32, 0, im->stream>>>((bf16 *)dq, (const bf16 *)dout, (const bf16 *)q,
                                                                   (const bf16 *)k, (const bf16 *)v, lse, delta, B, H,
                                                                   Nq, Nk, D, q_stride, kv_stride, o_stride, scale,
                                                                   add);
        LAUNCH_CHECK();
    }
    if (dk || dv) {
        attn_dkv_kernel<<<cdiv(rk, wpb), wpb * 32, 0, im->stream>>>((bf16 *)dk, (bf16 *)dv, (const bf16 *)dout,
                                                                    (const bf16 *)q, (const bf16 *)k, (const bf16 *)v,
                                                                    lse, delta, B, H, Nq, Nk, D, q_stride, kv_stride,
                                                                    o_stride, scale, add);
        LAUNCH_CHECK();
    }
}

void cuda_install_attention(iv2_backend *be) {
    be->attention = c_attention;
    be->attention_backward = c_attention_backward;
}
