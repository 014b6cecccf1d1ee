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

/* 8 bf16 (16 bytes) <-> 8 floats; callers check 16-byte alignment */
__device__ __forceinline__ void ld8(const bf16 *p, float *f) {
    uint4 u = *(const uint4 *)p;
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
#pragma unroll
    for (int k = 0; k < 4; k++) { float2 v = __bfloat1622float2(h[k]); f[2 * k] = v.x; f[2 * k + 1] = v.y; }
}
__device__ __forceinline__ void st8(bf16 *p, const float *f) {
    uint4 u;
    __nv_bfloat162 *h = (__nv_bfloat162 *)&u;
#pragma unroll
    for (int k = 0; k < 4; k++) h[k] = __floats2bfloat162_rn(f[2 * k], f[2 * k + 1]);
    *(uint4 *)p = u;
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
