/* cuda_common.cuh: what every file of kernels/ shares: the backend's private state, the
 * error checks, bf16 load/store helpers and the reductions. Internal to kernels/. */
#ifndef IV2_CUDA_COMMON_CUH
#define IV2_CUDA_COMMON_CUH
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cublasLt.h>
#include <cublas_v2.h>
#include <stdint.h>
extern "C" {
#include "compute.h"
#include "err.h"
}

typedef __nv_bfloat16 bf16;

/* A CUDA failure inside an op is a bug or a lost device: there is no way to return an error
 * through the void ops of compute.h, so we stop with the call site and CUDA's reason. */
#define CUDA_CHECK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) \
    iv2_panic("%s:%d: %s: %s", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); } while (0)
#define CUBLAS_CHECK(x) do { cublasStatus_t s_ = (x); if (s_ != CUBLAS_STATUS_SUCCESS) \
    iv2_panic("%s:%d: %s: cublas status %d", __FILE__, __LINE__, #x, (int)s_); } while (0)
/* after each launch: catches bad launch configurations without synchronising */
#define LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

#define GEMM_CACHE 64
typedef struct {
    int valid, m, n, k, ta, tb, epi, beta1, align[4];
    cublasLtMatmulAlgo_t algo;
    int ok;                       /* 0: cuBLASLt found no algorithm, use cublasGemmEx */
} gemm_cache_entry;

typedef struct {
    cudaStream_t stream;
    cudaStream_t copy_stream;     /* upload_async (compute.h "the copy stream") */
    cublasLtHandle_t lt;
    cublasHandle_t blas;
    void *workspace;              /* cuBLASLt workspace */
    size_t workspace_size;
    float *scratch;               /* f32 scratch for reductions, grown on demand */
    size_t scratch_size;          /* bytes */
    void *stage;                  /* pinned host staging for upload/download */
    size_t stage_size;
    float *hostf;                 /* pinned host copy of per-sample scales (residual) */
    int nhostf;
    gemm_cache_entry gemm[GEMM_CACHE];
    int gemm_next;
    size_t smem_optin;            /* largest dynamic shared memory a block may opt in to */
    int wgmma;                    /* the sm_90a kernels run here: built with IV2_WGMMA, compute capability 9.0 */
} cuda_impl;

static inline cuda_impl *impl_of(iv2_backend *be) { return (cuda_impl *)be->impl; }
float *cuda_scratch(iv2_backend *be, size_t bytes);   /* cuda_backend.cu */

static inline unsigned cdiv(size_t a, size_t b) { return (unsigned)((a + b - 1) / b); }

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
static inline int al16(const void *p) { return p == NULL || ((uintptr_t)p & 15) == 0; }

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
    __shared__ float red[32];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.f;
    return warp_sum(v);
}

/* op families, one .cu file each; they fill their slots of the backend table */
void cuda_install_matmul(iv2_backend *be);
void cuda_install_norm(iv2_backend *be);
void cuda_install_attention(iv2_backend *be);
void cuda_install_elementwise(iv2_backend *be);
void cuda_matmul_release(cuda_impl *im);

#endif
