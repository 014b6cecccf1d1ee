/* cuda_device.cuh: the device helpers every kernel shares: bf16 loads and stores (scalar and
 * 16-byte vectors) and warp and block reductions. Device code only (bf16 types, shuffles,
 * threadIdx), so tests/emu compiles it for the host, with the kernel headers that use it, under
 * its emulation of CUDA. Internal to kernels/. */
#ifndef IV2_CUDA_DEVICE_CUH
#define IV2_CUDA_DEVICE_CUH

/* a __shared__ array inside a device function; the emulation, whose threads are fibers of one
 * OS thread, makes it a static */
#ifndef IV2_BLOCK_SHARED
#define IV2_BLOCK_SHARED __shared__
#endif

__device__ __forceinline__ float ld(const bf16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ void st(bf16 *p, float v) { *p = __float2bfloat16(v); }

/* 8 bf16 (16 bytes) <-> 8 floats; callers check 16-byte alignment. ldv and unpack8 split ld8 in
 * two, so a kernel can issue all the loads of a row before it converts any of them. */
__device__ __forceinline__ uint4 ldv(const bf16 *p) { return *(const uint4 *)p; }
__device__ __forceinline__ void unpack8(uint4 u, float *f) {
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
#pragma unroll
    for (int k = 0; k < 4; k++) { float2 v = __bfloat1622float2(h[k]); f[2 * k] = v.x; f[2 * k + 1] = v.y; }
}
__device__ __forceinline__ void ld8(const bf16 *p, float *f) { unpack8(ldv(p), f); }
__device__ __forceinline__ void st8(bf16 *p, const float *f) {
    uint4 u;
    __nv_bfloat162 *h = (__nv_bfloat162 *)&u;
#pragma unroll
    for (int k = 0; k < 4; k++) h[k] = __floats2bfloat162_rn(f[2 * k], f[2 * k + 1]);
    *(uint4 *)p = u;
}

/* bf16 rounding of a float, as a store and a load would do */
__device__ __forceinline__ float round_bf16(float v) { return __bfloat162float(__float2bfloat16(v)); }

/* The per-sample drop-path scales s[] of the residual kernels come from the host; they travel as
 * kernel arguments in chunks of SCHUNK samples so no copy (and no sync) is needed. */
#define SCHUNK 64
struct sarg { float s[SCHUNK]; };

/* ---- column sums (bias, LayerScale and norm weight gradients) ----
 * A block of CS_WARPS warps sums 256 columns (32 lanes x 8 columns, 16-byte vectors) over a
 * chunk of rows: warp w takes rows w, w + CS_WARPS, ..., RB of them per round trip to memory
 * (their loads issued before any is used); then block_colsum_add adds the warps' sums in shared
 * memory and one thread per column adds the block's sum to acc: one atomic per column per block.
 * (Blocks of two warps, 8 atomics per thread, ran at a fifth of the bandwidth on an H100,
 * 2026-11-27: latency-bound on the loads, then on draining the atomics.) */
#define RB 4
#define CS_WARPS 8
#define CS_THREADS (32 * CS_WARPS)

/* acc[8 * c8 + k] += the block's sum of s[k] over its warps, for the block's column vectors
 * c8 = blockIdx.x * 32 + lane < C8; every thread of the block must call it (barriers) */
__device__ __forceinline__ void block_colsum_add(float *acc, const float *s, int C8) {
    IV2_BLOCK_SHARED float red[CS_WARPS * 256];   /* [warp][k][lane]: conflict-free stores */
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, t = threadIdx.x;
#pragma unroll
    for (int k = 0; k < 8; k++) red[w * 256 + k * 32 + lane] = s[k];
    __syncthreads();
    int c8 = blockIdx.x * 32 + (t >> 3), k = t & 7;   /* thread t: column 8 c8 + k of the block */
    float v = 0.f;
#pragma unroll
    for (int wi = 0; wi < CS_WARPS; wi++) v += red[wi * 256 + k * 32 + (t >> 3)];
    if (c8 < C8) atomicAdd(acc + 8 * c8 + k, v);
    __syncthreads();   /* red is reused by a second call */
}

/* Where a column-sum kernel's sums go. Its blocks add them into acc (fp32, zero on entry) with
 * atomics; the last block of the grid to finish (count) adds acc[0..n) to the bf16 gradient dst0
 * and, with halves 2, acc[n..2n) to dst1 (either may be NULL: those sums are dropped), and leaves
 * acc and count zero for the next launch (cuda_colsum_out keeps one such buffer per backend). One
 * launch in place of a memset, the sums and an add: three launches, for each of the ten column
 * sums (biases, norm weights, LayerScales) in a student block's backward. */
struct colsum_out {
    float *acc;
    unsigned *count;
    bf16 *dst0, *dst1;
    int n, halves;
};
/* every thread of the block calls it, after its last atomic into cs.acc */
__device__ __forceinline__ void colsum_finish(const colsum_out &cs) {
    IV2_BLOCK_SHARED int last;
    __threadfence();   /* this block's atomics land before its count */
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(cs.count, 1u) == gridDim.x * gridDim.y * gridDim.z - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();   /* and every other block's, before the reads below */
    for (int i = threadIdx.x; i < cs.n; i += blockDim.x) {
        float v = atomicExch(cs.acc + i, 0.f);   /* read at L2 and zeroed for the next launch */
        if (cs.dst0) st(cs.dst0 + i, ld(cs.dst0 + i) + v);
        if (cs.halves == 2) {
            float v2 = atomicExch(cs.acc + cs.n + i, 0.f);
            if (cs.dst1) st(cs.dst1 + i, ld(cs.dst1 + i) + v2);
        }
    }
    if (threadIdx.x == 0) *cs.count = 0;
}

/* One round trip to memory of the warp-per-row kernels (a lane takes vectors lane, lane + 32, ...
 * of a row of C8 16-byte vectors, RB of them per round trip): vectors c0, c0 + 32, ...,
 * c0 + 32 (RB - 1) (those < C8) of up to three rows p0, p1, p2 (NULL: not loaded) into v[0..2],
 * every load issued before any is used. */
__device__ __forceinline__ void ldv_rb(uint4 (&v)[3][RB], const bf16 *p0, const bf16 *p1, const bf16 *p2, int c0,
                                       int C8) {
#pragma unroll
    for (int u = 0; u < RB; u++)
        if (c0 + 32 * u < C8) {
            int c = 8 * (c0 + 32 * u);
            if (p0) v[0][u] = ldv(p0 + c);
            if (p1) v[1][u] = ldv(p1 + c);
            if (p2) v[2][u] = ldv(p2 + c);
        }
}

/* The loop of the warp-per-row kernels: f(c8, a, b, c) for each of this lane's vectors c8 of up
 * to three rows p0, p1, p2 (NULL: not loaded, its vector zero), RB vectors per round trip (ldv_rb) */
template <typename F>
__device__ __forceinline__ void for_lane_vecs(const bf16 *p0, const bf16 *p1, const bf16 *p2, int C8, int lane, F f) {
    for (int c0 = lane; c0 < C8; c0 += 32 * RB) {
        uint4 v[3][RB] = {};
        ldv_rb(v, p0, p1, p2, c0, C8);
#pragma unroll
        for (int u = 0; u < RB; u++)
            if (c0 + 32 * u < C8) f(c0 + 32 * u, v[0][u], v[1][u], v[2][u]);
    }
}

/* this lane's part of the dot product of two rows of C8 16-byte vectors; warp_sum completes it */
__device__ __forceinline__ float lane_dot8(const bf16 *a, const bf16 *b, int C8, int lane) {
    float s = 0.f;
    for_lane_vecs(a, b, NULL, C8, lane, [&](int, uint4 va, uint4 vb, uint4) {
        float x[8], y[8];
        unpack8(va, x);
        unpack8(vb, y);
#pragma unroll
        for (int k = 0; k < 8; k++) s += x[k] * y[k];
    });
    return s;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}
/* sum over a block of up to 1024 threads (blockDim.x a multiple of 32); every thread gets it */
__device__ __forceinline__ float block_sum(float v) {
    IV2_BLOCK_SHARED float red[32];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.f;
    return warp_sum(v);
}

#endif
