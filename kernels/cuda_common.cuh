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
#include "cuda_device.cuh"

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
    int valid, m, n, k, ta, tb, epi, beta1, align[5];   /* epi: matmul.cu's EPI_*; align: a, b, d, bias, aux */
    cublasLtMatmulAlgo_t algo;
    int ok;                       /* 0: cuBLASLt found no algorithm, use cublasGemmEx */
} gemm_cache_entry;

typedef struct {
    cudaStream_t stream;
    cudaStream_t copy_stream;     /* upload_async (compute.h "the copy stream") */
    cudaStream_t side_stream;     /* adamw_chunks beside the compute (compute.h "the side stream"): the lowest
                                     priority, the compute stream the highest */
    cublasLtHandle_t lt;
    cublasHandle_t blas;
    void *workspace;              /* cuBLASLt workspace */
    size_t workspace_size;
    float *scratch;               /* f32 scratch for reductions, grown on demand */
    float *colacc;                /* the column sums' accumulator and count (colsum_out): zero between launches */
    size_t colacc_n;              /* floats before the count */
    size_t scratch_size;          /* bytes */
    void *stage;                  /* pinned host staging for upload/download */
    size_t stage_size;
    float *hostf;                 /* pinned host copy of per-sample scales (residual) */
    int nhostf;
    gemm_cache_entry gemm[GEMM_CACHE];
    int gemm_next;
    int gemm_tuned;               /* shapes timed so far (IV2_GEMM_TUNE): past 2 x GEMM_CACHE the cache is
                                     evicting tuned shapes, and tuning stops */
    size_t smem_optin;            /* largest dynamic shared memory a block may opt in to */
    int sms;                      /* streaming multiprocessors */
    int norm_bwd_blocks[19];      /* resident blocks per SM of norm_backward8_kernel<VPL, RES, SMS, PF> (0: not
                                     asked yet; norm.cu's norm_bwd8_kernel_for numbers the eighteen) */
    size_t norm_bwd_smem[19];     /* the dynamic shared memory each was asked for */
    int norm_smem;                /* norm_backward8_kernel's column sums in shared memory at VPL 4, 6 and 13 (SMS);
                                     IV2_NORM_SMEM=0: in registers */
    int norm_pf;                  /* IV2_NORM_PF=1: with SMS at VPL 4 and 6, the next row's loads issued before the
                                     row's work (PF, norm.cuh) */
    int gelu_fusion;              /* the tanh GELU fused into the MLP's GEMMs (matmul_gelu); IV2_GELU_FUSION=0: off */
    int gemm_tune;                /* IV2_GEMM_TUNE=1: each GEMM shape's algorithm timed among cuBLASLt's first
                                     candidates at its first call (matmul.cu tune_algo); 2 also logs each pick */
    int fuse_norm;                /* residual_norm in one kernel; IV2_FUSE_NORM=0: copy, residual and norm apart */
    int vec_bwd;                  /* the 16-byte-vector kernels (norm and GELU backward, residual, bias sums, gather and
                                     scatter of rows, L2 norm, cosine loss); IV2_VEC_BWD=0: the scalar ones */
    int wgmma;                    /* the sm_90a kernels run here: built with IV2_WGMMA, compute capability 9.0 */
} cuda_impl;

static inline cuda_impl *impl_of(iv2_backend *be) { return (cuda_impl *)be->impl; }
/* compute.h's IV2_STREAM_* as a CUDA stream */
static inline cudaStream_t stream_of(iv2_backend *be, int stream) {
    cuda_impl *im = impl_of(be);
    return stream == IV2_STREAM_COPY ? im->copy_stream : stream == IV2_STREAM_SIDE ? im->side_stream : im->stream;
}
float *cuda_scratch(iv2_backend *be, size_t bytes);   /* cuda_backend.cu */
/* where a column-sum kernel's n (x halves) sums go and which bf16 gradients they end in */
colsum_out cuda_colsum_out(iv2_backend *be, void *dst0, void *dst1, int n, int halves);   /* cuda_backend.cu */

static inline unsigned cdiv(size_t a, size_t b) { return (unsigned)((a + b - 1) / b); }

static inline int al16(const void *p) { return p == NULL || ((uintptr_t)p & 15) == 0; }

/* op families, one .cu file each; they fill their slots of the backend table */
void cuda_install_matmul(iv2_backend *be);
void cuda_install_norm(iv2_backend *be);
void cuda_install_attention(iv2_backend *be);
void cuda_install_elementwise(iv2_backend *be);
void cuda_matmul_release(cuda_impl *im);
void cuda_matmul_set_gelu_fusion(iv2_backend *be, int on);
void cuda_bias_grad(iv2_backend *be, void *dbias, const void *dout, int M, int N);   /* dbias += column sums of dout[M][N] */
void cuda_gelu_grad_scale(iv2_backend *be, void *x, const void *pre, size_t n);   /* x *= gelu_tanh'(pre) */
/* rows of cols elements to pitch ld, zeros after cols; and back, added (elementwise.cu) */
void cuda_pad_cols(iv2_backend *be, void *dst, const void *src, int rows, int cols, int ld);
void cuda_add_cols(iv2_backend *be, void *dst, const void *src, int rows, int cols, int ld);

#endif
