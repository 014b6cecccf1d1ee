/* cuda_backend.cu: the CUDA implementation of compute.h: creation, memory, transfers.
 * The ops live in matmul.cu, norm.cu, attention.cu and elementwise.cu. Storage is bf16,
 * every reduction accumulates in fp32. All work goes to one stream (the compute stream, at the
 * device's highest priority); only sync, download and the creation/destruction wait on it.
 * upload_async goes to a second stream (the copy stream) and adamw_chunks may go to a third (the
 * side stream, lowest priority), ordered against the first only by the events of compute.h. */
#include "cuda_common.cuh"
#include <stdlib.h>
#include <string.h>

float *cuda_scratch(iv2_backend *be, size_t bytes) {
    cuda_impl *im = impl_of(be);
    if (bytes > im->scratch_size) {
        /* growing happens on the first calls of a shape; stream order protects pending work */
        CUDA_CHECK(cudaStreamSynchronize(im->stream));
        if (im->scratch) CUDA_CHECK(cudaFree(im->scratch));
        size_t sz = bytes < ((size_t)1 << 20) ? ((size_t)1 << 20) : bytes + bytes / 4;
        CUDA_CHECK(cudaMalloc((void **)&im->scratch, sz));
        im->scratch_size = sz;
    }
    return im->scratch;
}

/* One accumulator for every column sum: each kernel leaves it zero (colsum_finish), and all run on
 * the one stream, in turn. Grown (zeroed) on the first calls of a width. */
colsum_out cuda_colsum_out(iv2_backend *be, void *dst0, void *dst1, int n, int halves) {
    cuda_impl *im = impl_of(be);
    size_t need = (size_t)n * halves;
    if (need > im->colacc_n) {
        CUDA_CHECK(cudaStreamSynchronize(im->stream));
        if (im->colacc) CUDA_CHECK(cudaFree(im->colacc));
        size_t cap = need < 16384 ? 16384 : need, bytes = cap * sizeof(float) + 256;   /* the count after the sums */
        CUDA_CHECK(cudaMalloc((void **)&im->colacc, bytes));
        CUDA_CHECK(cudaMemsetAsync(im->colacc, 0, bytes, im->stream));
        im->colacc_n = cap;
    }
    colsum_out cs;
    cs.acc = im->colacc;
    cs.count = (unsigned *)(im->colacc + im->colacc_n);
    cs.dst0 = (bf16 *)dst0;
    cs.dst1 = (bf16 *)dst1;
    cs.n = n;
    cs.halves = halves;
    return cs;
}

static void *stage(cuda_impl *im, size_t bytes) {
    if (bytes > im->stage_size) {
        if (im->stage) CUDA_CHECK(cudaFreeHost(im->stage));
        size_t sz = bytes < ((size_t)4 << 20) ? ((size_t)4 << 20) : bytes;
        CUDA_CHECK(cudaMallocHost(&im->stage, sz));
        im->stage_size = sz;
    }
    return im->stage;
}

static void *c_alloc(iv2_backend *be, size_t bytes) {
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 16);
    if (e != cudaSuccess) {
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        iv2_panic("cuda:%d: cannot allocate %zu bytes (%.1f of %.1f GiB free): %s", be->device, bytes,
                  fr / 1073741824.0, tot / 1073741824.0, cudaGetErrorString(e));
    }
    CUDA_CHECK(cudaMemsetAsync(p, 0, bytes ? bytes : 16, impl_of(be)->stream));
    return p;
}
static void c_free(iv2_backend *be, void *p) {
    if (!p) return;
    CUDA_CHECK(cudaStreamSynchronize(impl_of(be)->stream));  /* pending kernels may still read it */
    CUDA_CHECK(cudaStreamSynchronize(impl_of(be)->side_stream));
    CUDA_CHECK(cudaStreamSynchronize(impl_of(be)->copy_stream));   /* or pending copies write it */
    CUDA_CHECK(cudaFree(p));
}
static void c_memset0(iv2_backend *be, void *p, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, impl_of(be)->stream));
}
static void c_copy(iv2_backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, impl_of(be)->stream));
}
/* host fp32 -> bf16 in pinned staging (in chunks so staging stays bounded) -> device */
static void c_upload(iv2_backend *be, void *dst, const float *src, size_t n) {
    cuda_impl *im = impl_of(be);
    const size_t chunk = (size_t)16 << 20;
    for (size_t i = 0; i < n; i += chunk) {
        size_t m = n - i < chunk ? n - i : chunk;
        CUDA_CHECK(cudaStreamSynchronize(im->stream));  /* staging free again */
        uint16_t *h = (uint16_t *)stage(im, m * 2);
        iv2_f32_to_bf16_n(h, src + i, m);
        CUDA_CHECK(cudaMemcpyAsync((uint16_t *)dst + i, h, m * 2, cudaMemcpyHostToDevice, im->stream));
    }
    CUDA_CHECK(cudaStreamSynchronize(im->stream));
}
static void c_download(iv2_backend *be, float *dst, const void *src, size_t n) {
    cuda_impl *im = impl_of(be);
    const size_t chunk = (size_t)16 << 20;
    for (size_t i = 0; i < n; i += chunk) {
        size_t m = n - i < chunk ? n - i : chunk;
        uint16_t *h = (uint16_t *)stage(im, m * 2);
        CUDA_CHECK(cudaMemcpyAsync(h, (const uint16_t *)src + i, m * 2, cudaMemcpyDeviceToHost, im->stream));
        CUDA_CHECK(cudaStreamSynchronize(im->stream));
        iv2_bf16_to_f32_n(dst + i, h, m);
    }
}
static void c_upload_raw(iv2_backend *be, void *dst, const void *src, size_t bytes) {
    cuda_impl *im = impl_of(be);
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, im->stream));
    CUDA_CHECK(cudaStreamSynchronize(im->stream));  /* the caller may reuse src at once */
}
static void c_download_raw(iv2_backend *be, void *dst, const void *src, size_t bytes) {
    cuda_impl *im = impl_of(be);
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, im->stream));
    CUDA_CHECK(cudaStreamSynchronize(im->stream));
}
static void c_mem_info(iv2_backend *be, size_t *free_bytes, size_t *total_bytes) {
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) fr = tot = 0;
    if (free_bytes) *free_bytes = fr;
    if (total_bytes) *total_bytes = tot;
}
/* pinned host memory: uploads and downloads from it are plain DMA, no bounce buffer */
static void *c_alloc_host(iv2_backend *be, size_t bytes) {
    void *p = NULL;
    cudaError_t e = cudaMallocHost(&p, bytes ? bytes : 16);
    if (e != cudaSuccess) iv2_panic("cuda:%d: cannot allocate %zu bytes of pinned host memory: %s", be->device, bytes, cudaGetErrorString(e));
    return p;
}
static void c_free_host(iv2_backend *be, void *p) {
    if (!p) return;
    CUDA_CHECK(cudaStreamSynchronize(impl_of(be)->copy_stream));   /* a pending copy may read it */
    CUDA_CHECK(cudaFreeHost(p));
}
static void c_sync(iv2_backend *be) {   /* all three streams, as compute.h says (and the CPU backend does) */
    CUDA_CHECK(cudaStreamSynchronize(impl_of(be)->stream));
    CUDA_CHECK(cudaStreamSynchronize(impl_of(be)->side_stream));
    CUDA_CHECK(cudaStreamSynchronize(impl_of(be)->copy_stream));
}

/* ---- the copy and side streams and their events (compute.h) ---- */
static void c_upload_async(iv2_backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, impl_of(be)->copy_stream));
}
static void c_download_async(iv2_backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, impl_of(be)->stream));
}
static iv2_event *c_event_create(iv2_backend *be) {
    cudaEvent_t e;
    CUDA_CHECK(cudaEventCreate(&e));   /* with timing: event_seconds */
    return (iv2_event *)e;
}
static void c_event_destroy(iv2_backend *be, iv2_event *e) {
    if (e) CUDA_CHECK(cudaEventDestroy((cudaEvent_t)e));
}
static void c_event_record(iv2_backend *be, iv2_event *e, int stream) {
    CUDA_CHECK(cudaEventRecord((cudaEvent_t)e, stream_of(be, stream)));
}
static void c_event_wait(iv2_backend *be, iv2_event *e, int stream) {
    CUDA_CHECK(cudaStreamWaitEvent(stream_of(be, stream), (cudaEvent_t)e, 0));
}
static void c_event_sync(iv2_backend *be, iv2_event *e) { CUDA_CHECK(cudaEventSynchronize((cudaEvent_t)e)); }
static double c_event_seconds(iv2_backend *be, iv2_event *a, iv2_event *b) {
    float ms = 0;
    CUDA_CHECK(cudaEventSynchronize((cudaEvent_t)b));
    CUDA_CHECK(cudaEventElapsedTime(&ms, (cudaEvent_t)a, (cudaEvent_t)b));
    return ms * 1e-3;
}

/* the switches of docs/cuda.md read from the environment (at creation, and again on
 * be->read_switches, between steps: bench_vit --ab). The attention's IV2_ATTN_FWD, IV2_ATTN_BWD and
 * IV2_ATTN_SIMPLE are read on each call (attention.cu). A change of IV2_GEMM_TUNE empties the
 * GEMM cache, so each shape is picked (or timed) again the new way. */
static int env_is(const char *name, const char *val) {
    const char *v = getenv(name);
    return v && !strcmp(v, val);
}

static void c_read_switches(iv2_backend *be) {
    cuda_impl *im = impl_of(be);
    im->vec_bwd = !env_is("IV2_VEC_BWD", "0");       /* 0: the scalar backward kernels */
    im->fuse_norm = !env_is("IV2_FUSE_NORM", "0");   /* 0: residual_norm as its three ops */
    im->norm_smem = !env_is("IV2_NORM_SMEM", "0");   /* 0: the norm backward's column sums in registers */
    im->norm_pf = env_is("IV2_NORM_PF", "1");        /* 1: the norm backward's next row in flight */
    cuda_matmul_set_gelu_fusion(be, !env_is("IV2_GELU_FUSION", "0"));   /* 0: matmul and GELU apart */
    const char *gt = getenv("IV2_GEMM_TUNE");        /* 1: time cuBLASLt's candidates per shape */
    int tune = gt ? atoi(gt) : 0;
    if (tune != im->gemm_tune) cuda_matmul_release(im);
    im->gemm_tune = tune;
}

static void c_destroy(iv2_backend *be) {
    if (!be) return;
    cuda_impl *im = impl_of(be);
    if (im) {
        if (im->stream) cudaStreamSynchronize(im->stream);
        if (im->side_stream) cudaStreamSynchronize(im->side_stream);
        if (im->copy_stream) cudaStreamSynchronize(im->copy_stream);
        cuda_matmul_release(im);
        if (im->workspace) cudaFree(im->workspace);
        if (im->scratch) cudaFree(im->scratch);
        if (im->colacc) cudaFree(im->colacc);
        if (im->stage) cudaFreeHost(im->stage);
        if (im->hostf) cudaFreeHost(im->hostf);
        if (im->lt) cublasLtDestroy(im->lt);
        if (im->blas) cublasDestroy(im->blas);
        if (im->stream) cudaStreamDestroy(im->stream);
        if (im->copy_stream) cudaStreamDestroy(im->copy_stream);
        if (im->side_stream) cudaStreamDestroy(im->side_stream);
        free(im);
    }
    free(be);
}

/* the backend's stream, for work queued beside it (distill/dist.c: NCCL waits on it) */
extern "C" void *iv2_cuda_stream(iv2_backend *be) { return (void *)impl_of(be)->stream; }
extern "C" int iv2_cuda_has_wgmma(iv2_backend *be) { return impl_of(be)->wgmma; }

extern "C" iv2_backend *iv2_cuda_backend_create(int device) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) { iv2_err("cuda:%d: no usable CUDA device: %s", device, cudaGetErrorString(e)); return NULL; }
    if (n == 0) { iv2_err("cuda:%d: no CUDA device visible", device); return NULL; }
    if (device < 0 || device >= n) { iv2_err("cuda:%d: no such device (%d visible)", device, n); return NULL; }
    if ((e = cudaSetDevice(device)) != cudaSuccess) {
        iv2_err("cuda:%d: cannot select device: %s", device, cudaGetErrorString(e)); return NULL;
    }
    cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, device);
    if (prop.major < 8) {
        iv2_err("cuda:%d: %s has compute capability %d.%d; iv2 needs 8.0 or newer (bf16 tensor cores)", device,
                prop.name, prop.major, prop.minor);
        return NULL;
    }
    iv2_backend *be = (iv2_backend *)calloc(1, sizeof *be);
    cuda_impl *im = (cuda_impl *)calloc(1, sizeof *im);
    if (!be || !im) iv2_panic("out of memory creating the CUDA backend");
    be->impl = im;
    be->name = "cuda";
    be->dtype = IV2_BF16;
    be->esize = 2;
    be->device = device;
    im->smem_optin = prop.sharedMemPerBlockOptin;
    im->sms = prop.multiProcessorCount;
#ifdef IV2_WGMMA   /* the Makefile defines it when CUDA_ARCH has 90a: sm_90a code runs on 9.0 only */
    im->wgmma = prop.major == 9 && prop.minor == 0;
#endif
    /* the compute stream first in the block scheduler's order, the side stream (AdamW beside the
     * next forward) last: its blocks take only what the compute kernels leave */
    int prio_least = 0, prio_greatest = 0;
    cudaDeviceGetStreamPriorityRange(&prio_least, &prio_greatest);
    if ((e = cudaStreamCreateWithPriority(&im->stream, cudaStreamNonBlocking, prio_greatest)) != cudaSuccess ||
        (e = cudaStreamCreateWithPriority(&im->side_stream, cudaStreamNonBlocking, prio_least)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&im->copy_stream, cudaStreamNonBlocking)) != cudaSuccess) {
        iv2_err("cuda:%d: cannot create a stream: %s", device, cudaGetErrorString(e));
        c_destroy(be);
        return NULL;
    }
    if (cublasLtCreate(&im->lt) != CUBLAS_STATUS_SUCCESS || cublasCreate(&im->blas) != CUBLAS_STATUS_SUCCESS) {
        iv2_err("cuda:%d: cannot initialise cuBLAS", device);
        c_destroy(be);
        return NULL;
    }
    cublasSetStream(im->blas, im->stream);
    im->workspace_size = (size_t)32 << 20;  /* Hopper wants 32 MiB (llm.c) */
    if (cudaMalloc(&im->workspace, im->workspace_size) != cudaSuccess) {
        iv2_err("cuda:%d: cannot allocate the cuBLASLt workspace", device);
        c_destroy(be);
        return NULL;
    }
    cublasSetWorkspace(im->blas, im->workspace, im->workspace_size);
    be->alloc = c_alloc;
    be->free = c_free;
    be->memset0 = c_memset0;
    be->copy = c_copy;
    be->upload = c_upload;
    be->download = c_download;
    be->upload_raw = c_upload_raw;
    be->download_raw = c_download_raw;
    be->alloc_host = c_alloc_host;
    be->free_host = c_free_host;
    be->mem_info = c_mem_info;
    be->sync = c_sync;
    be->destroy = c_destroy;
    be->read_switches = c_read_switches;
    be->upload_async = c_upload_async;
    be->download_async = c_download_async;
    be->event_create = c_event_create;
    be->event_destroy = c_event_destroy;
    be->event_record = c_event_record;
    be->event_wait = c_event_wait;
    be->event_sync = c_event_sync;
    be->event_seconds = c_event_seconds;
    cuda_install_matmul(be);
    c_read_switches(be);   /* after the ops: it installs the fused GELU ones or not */
    cuda_install_norm(be);
    cuda_install_attention(be);
    cuda_install_elementwise(be);
    return be;
}
