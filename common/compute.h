/* compute.h: the compute interface every model in iv2 is written against.
 *
 * Two implementations: the CPU one (common/compute_cpu.c: fp32, OpenBLAS GEMMs, OpenMP loops)
 * and the CUDA one (kernels/: bf16 storage, fp32 accumulation, cuBLASLt). The CPU one is the
 * oracle the CUDA one is tested against.
 *
 * Buffers. "Backend buffers" (type void *) hold parameters, activations and their gradients in
 * the backend's storage dtype (be->dtype: F32 on the CPU, BF16 on CUDA) in the backend's memory.
 * Use IV2_AT(be, p, n) to step n elements into one. Buffers typed float * marked "f32" are always
 * fp32 in backend memory (norm statistics, losses, optimiser moments, master weights).
 * Buffers marked "host" are ordinary host memory.
 *
 * Layout. Row-major. A linear layer's weight is [out, in] and its bias [out], as in
 * torch.nn.Linear. Token tensors are [B, N, C] (batch, token, channel).
 *
 * Gradients. Every *_backward ACCUMULATES (+=) into parameter gradients (dw, db, dgamma); callers
 * zero those once per step, as llm.c does. The input gradient (dinp; dy; dq, dk, dv) is added to
 * with IV2_ADD and written with IV2_SET: the last argument of the backwards that take one. ADD
 * makes residual branches and shared inputs free of extra adds; SET spares the memset and the
 * read of zeros where a buffer has one producer (on the GPU a memset and a read of 38 MB each, ten
 * times in a student block's backward).
 *
 * Streams. Calls are asynchronous on CUDA (one compute stream per backend); be->sync waits.
 * Reading a buffer on the host goes through be->download, which synchronises. A second stream,
 * the copy stream, carries upload_async, and a third, the side stream, the optimiser's
 * adamw_chunks beside the compute; events order them (see "the copy stream" below). */
#ifndef IV2_COMPUTE_H
#define IV2_COMPUTE_H
#include <stddef.h>
#include <stdint.h>
#include "dtype.h"

typedef struct iv2_backend iv2_backend;
typedef struct iv2_event iv2_event;   /* a point in a stream's work (a cudaEvent_t on CUDA) */

/* the streams: compute (every op), copy (upload_async) and side (adamw_chunks beside the next
 * step's forward: distill/optim.c, "overlap") */
enum { IV2_STREAM_COMPUTE = 0, IV2_STREAM_COPY = 1, IV2_STREAM_SIDE = 2 };

#define IV2_AT(be, p, n) ((void *)((char *)(p) + (size_t)(n) * (be)->esize))

enum { IV2_SET = 0, IV2_ADD = 1 };   /* how a backward stores its input gradient */

enum { IV2_GELU_ERF = 0, IV2_GELU_TANH = 1 };

struct iv2_backend {
    const char *name;     /* "cpu", "cuda" */
    iv2_dtype dtype;      /* storage dtype of backend buffers */
    size_t esize;         /* iv2_dtype_size(dtype) */
    int threads;          /* CPU threads (0 = all cores) */
    int device;           /* CUDA device ordinal */
    void *impl;           /* backend private state (handles, streams, scratch) */

    /* ---- memory ---- */
    void *(*alloc)(iv2_backend *be, size_t bytes);              /* zero-filled */
    void (*free)(iv2_backend *be, void *p);
    void (*memset0)(iv2_backend *be, void *p, size_t bytes);
    void (*copy)(iv2_backend *be, void *dst, const void *src, size_t bytes);   /* backend -> backend */
    /* host fp32 <-> backend buffer in be->dtype (n elements) */
    void (*upload)(iv2_backend *be, void *dst, const float *src, size_t n);
    void (*download)(iv2_backend *be, float *dst, const void *src, size_t n);
    /* raw bytes host <-> backend (uint8 frames, int32 indices, f32 buffers) */
    void (*upload_raw)(iv2_backend *be, void *dst, const void *src, size_t bytes);
    void (*download_raw)(iv2_backend *be, void *dst, const void *src, size_t bytes);
    /* host staging memory that transfers fastest (pinned on CUDA, malloc on the CPU); may be
     * NULL in a backend that has none (callers then use malloc) */
    void *(*alloc_host)(iv2_backend *be, size_t bytes);
    void (*free_host)(iv2_backend *be, void *p);
    /* bytes the backend can still allocate and its total: CUDA cudaMemGetInfo; CPU the available
     * and the physical RAM (MemAvailable of /proc/meminfo, else sysconf). For memory plans. */
    void (*mem_info)(iv2_backend *be, size_t *free_bytes, size_t *total_bytes);
    void (*sync)(iv2_backend *be);
    void (*destroy)(iv2_backend *be);
    /* read the backend's environment switches again (CUDA: docs/cuda.md, "Switches"); call it
     * between steps, with nothing queued that a switch changes. bench_vit --ab times variants
     * side by side in one process with it. NULL where a backend has none (the CPU). */
    void (*read_switches)(iv2_backend *be);

    /* ---- the copy stream: uploads that overlap compute ----
     * upload_async queues a raw host -> backend copy on the copy stream and returns at once. src
     * must be alloc_host memory (pinned on CUDA; pageable memory would make the copy synchronous)
     * and must not change until the copy is done. Nothing orders the two streams but events:
     *   event_record(be, e, IV2_STREAM_COPY)     e marks the copies queued so far;
     *   event_wait(be, e, IV2_STREAM_COMPUTE)    compute work queued after this call starts once
     *                                            e is reached: the fence before reading uploads;
     *   event_record(be, e, IV2_STREAM_COMPUTE), later event_wait(be, e, IV2_STREAM_COPY): the
     *                                            reverse fence: copies queued after the wait start
     *                                            once the compute work before the record is done
     *                                            (so they may overwrite what it read);
     *   event_sync(be, e)                        the host waits for e (before reusing src);
     *   event_seconds(be, a, b)                  seconds from a to b, both recorded on the same
     *                                            stream (waits for b).
     * A wait refers to the latest record before it; an event never recorded counts as reached.
     * Call these from one thread.
     *
     * The side stream carries adamw_chunks(..., IV2_STREAM_SIDE) and nothing else; the same events
     * order it (record on SIDE, wait on COMPUTE: compute work queued after the wait may read what
     * the side work wrote). On CUDA it runs at a lower priority than the compute stream, so its
     * blocks fill the SMs the compute kernels leave idle. sync and free wait for the copy and side
     * streams too, free_host for the copy stream; download does not (it is ordered on the compute
     * stream only).
     *
     * On the CPU the compute stream runs at once, and the copy and side streams' work runs as late
     * as the events allow: when an event recorded after it is waited for (on any stream) or
     * synced, and where CUDA waits for them (sync, free; free_host for the copies). That is the
     * latest schedule a GPU could take, so a missing wait for a copy or an optimiser step reads
     * stale values in the CPU tests, every time, where on a GPU it would race now and then. An
     * event records the time too, so event_seconds between records is host time. */
    void (*upload_async)(iv2_backend *be, void *dst, const void *src, size_t bytes);
    /* download_async queues a raw backend -> host copy on the compute stream, after the work
     * queued there so far, and returns at once: the device keeps computing what is queued next
     * while the host works on an earlier result. dst must be alloc_host memory; read it only
     * after event_sync of an event recorded on IV2_STREAM_COMPUTE after this call. CPU: memcpy. */
    void (*download_async)(iv2_backend *be, void *dst, const void *src, size_t bytes);
    iv2_event *(*event_create)(iv2_backend *be);
    void (*event_destroy)(iv2_backend *be, iv2_event *e);
    void (*event_record)(iv2_backend *be, iv2_event *e, int stream);
    void (*event_wait)(iv2_backend *be, iv2_event *e, int stream);
    void (*event_sync)(iv2_backend *be, iv2_event *e);
    double (*event_seconds)(iv2_backend *be, iv2_event *a, iv2_event *b);

    /* ---- forward ops, each with its backward right after ---- */

    /* out[M,N] = inp[M,K] @ w[N,K]^T + bias[N] (bias may be NULL) */
    void (*matmul)(iv2_backend *be, void *out, const void *inp, const void *w, const void *bias, int M, int K, int N);
    /* dinp[M,K] (+)= dout @ w; dw[N,K] += dout^T @ inp; dbias[N] += colsum(dout). Any of dinp, dw, dbias
     * may be NULL. */
    void (*matmul_backward)(iv2_backend *be, void *dinp, void *dw, void *dbias, const void *dout, const void *inp,
                            const void *w, int M, int K, int N, int acc);

    /* batch products of one input (q, k and v from a block's normed input) in one launch: for
     * i < batch, out + i*out_stride [M,N] = inp[M,K] @ (w + i*w_stride)[N,K]^T (no bias); and the
     * backward's weight half, dw + i*w_stride += (dout + i*out_stride)^T @ inp. Strides in
     * elements. */
    void (*matmul_batch_w)(iv2_backend *be, void *out, const void *inp, const void *w, int M, int K, int N, int batch,
                           size_t w_stride, size_t out_stride);
    void (*matmul_batch_w_backward)(iv2_backend *be, void *dw, const void *dout, const void *inp, int M, int K, int N,
                                    int batch, size_t w_stride, size_t out_stride);

    /* Optional (NULL where a backend has none; vit.c then runs matmul + gelu and matmul_backward +
     * gelu_backward): the MLP's first layer with the tanh GELU fused into the GEMMs.
     *   matmul_gelu: pre[M,N] = inp[M,K] @ w[N,K]^T + bias[N]; out = gelu_tanh(pre) (pre is kept
     *     for the backward; out == pre is allowed, then only out is kept).
     *   matmul_backward_gelu, for y = out @ w^T + b with out = gelu_tanh(pre) (inp = out [M,K]):
     *     dpre[M,K] = (dout @ w) * gelu_tanh'(pre), written, not added; dw[N,K] += dout^T @ inp;
     *     dbias[N] += colsum(dout) (dw, dbias may be NULL). */
    void (*matmul_gelu)(iv2_backend *be, void *out, void *pre, const void *inp, const void *w, const void *bias, int M,
                        int K, int N);
    void (*matmul_backward_gelu)(iv2_backend *be, void *dpre, void *dw, void *dbias, const void *dout, const void *inp,
                                 const void *w, const void *pre, int M, int K, int N);

    /* RMSNorm over the last dim: out = inp * rsqrt(mean(inp^2) + eps) * w. rstd (f32 [M]) saved when not NULL. */
    void (*rmsnorm)(iv2_backend *be, void *out, float *rstd, const void *inp, const void *w, int M, int C, float eps);
    void (*rmsnorm_backward)(iv2_backend *be, void *dinp, void *dw, const void *dout, const void *inp, const void *w,
                             const float *rstd, int M, int C, int acc);

    /* A block's RMSNorm backward and the residual backward before it in the forward's order (x = x_in
     * + s gamma y; h = rmsnorm(x)), in one pass: dinp += rmsnorm_backward(dout) as rmsnorm_backward
     * with IV2_ADD (dw += ...), then on that dinp as residual_backward with IV2_SET: dy = s[b] *
     * gamma * dinp ([B,N,C], written), dgamma += sum s[b] * dinp * y. M = B * N. */
    void (*rmsnorm_residual_backward)(iv2_backend *be, void *dinp, void *dw, const void *dout, const void *inp,
                                      const void *w, const float *rstd, void *dy, void *dgamma, const void *y,
                                      const void *gamma, const float *s, int B, int N, int C);

    /* LayerNorm: out = (inp - mean) * rstd * w + b (b may be NULL). mean, rstd (f32 [M]) saved when not NULL. */
    void (*layernorm)(iv2_backend *be, void *out, float *mean, float *rstd, const void *inp, const void *w,
                      const void *b, int M, int C, float eps);
    void (*layernorm_backward)(iv2_backend *be, void *dinp, void *dw, void *db, const void *dout, const void *inp,
                               const void *w, const float *mean, const float *rstd, int M, int C, int acc);

    /* A residual add and the norm after it (a block's x + s ls y and the next LayerNorm or RMSNorm)
     * in one pass: x_out = x_in + s[b] * gamma[c] * y ([B,N,C]; gamma, s as residual; x_out may be
     * x_in), then out = norm(x_out) as layernorm (ln = 1; b may be NULL) or rmsnorm (ln = 0; mean
     * and b unused). Values as residual, then the norm. */
    void (*residual_norm)(iv2_backend *be, void *x_out, void *out, float *mean, float *rstd, const void *x_in,
                          const void *y, const void *gamma, const float *s, const void *w, const void *b, int B,
                          int N, int C, float eps, int ln);

    /* Multi-head softmax attention, non-causal, never materialising all heads' N x N scores.
     * Head h of token n of batch b reads q at q + (b*Nq + n)*q_stride + h*D (elements), k/v likewise
     * with kv_stride, and writes out at out + (b*Nq + n)*o_stride + h*D. With a fused qkv buffer
     * [B,N,3C]: q = qkv, k = qkv + C, v = qkv + 2C, strides 3C.
     * lse (f32 [B,H,Nq], may be NULL) saves the log-sum-exp of the scaled scores for the backward.
     * probs_mean (f32 [B,Nq,Nk], may be NULL) receives the softmax probabilities averaged over heads
     * (used for the pooling head's attention map, where Nq = 1). */
    void (*attention)(iv2_backend *be, void *out, float *lse, float *probs_mean, const void *q, const void *k,
                      const void *v, int B, int H, int Nq, int Nk, int D, int q_stride, int kv_stride, int o_stride,
                      float scale);
    /* dq, dk, dv laid out like q, k, v (same strides), added to or written (acc) where not NULL; a
     * SET leaves the columns of other heads' rows (a fused qkv's other thirds) as they were. out
     * and lse from the forward. */
    void (*attention_backward)(iv2_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *q,
                               const void *k, const void *v, const void *out, const float *lse, int B, int H, int Nq,
                               int Nk, int D, int q_stride, int kv_stride, int o_stride, float scale, int acc);

    /* GELU, exact (erf) or tanh approximation; out may equal inp. */
    void (*gelu)(iv2_backend *be, void *out, const void *inp, size_t n, int kind);
    void (*gelu_backward)(iv2_backend *be, void *dinp, const void *dout, const void *inp, size_t n, int kind, int acc);

    /* Residual with LayerScale and drop path: x[b,n,c] += s[b] * gamma[c] * y[b,n,c].
     * gamma may be NULL (= 1); s (host float [B]) may be NULL (= 1), else per-sample drop-path scale
     * (0 for a dropped sample, 1/keep_prob otherwise). x is [B, N, C]. */
    void (*residual)(iv2_backend *be, void *x, const void *y, const void *gamma, const float *s, int B, int N, int C);
    /* dy (+)= s[b]*gamma*dx; dgamma[c] += sum_{b,n} s[b]*dx*y. (dx itself flows on unchanged.) */
    void (*residual_backward)(iv2_backend *be, void *dy, void *dgamma, const void *dx, const void *y,
                              const void *gamma, const float *s, int B, int N, int C, int acc);

    /* x[i,:] += table[rows[i] % n_table, :] for i < n (rows: backend int32; with rows s * T + token,
     * the position rows of visible tokens). Backward: dtable[rows[i] % n_table, :] += dx[i, :]. */
    void (*add_table_rows)(iv2_backend *be, void *x, const void *table, const int32_t *rows, int n, int n_table,
                           int C);
    void (*add_table_rows_backward)(iv2_backend *be, void *dtable, const void *dx, const int32_t *rows, int n,
                                    int n_table, int C);

    /* y[i] += a * x[i] for n elements (elementwise add when a = 1). */
    void (*axpy)(iv2_backend *be, void *y, const void *x, float a, size_t n);

    /* out[i,:] = inp[idx[i],:] for i < n (idx: int32 in backend memory). Backward: dinp[idx[i],:] += dout[i,:]. */
    void (*gather_rows)(iv2_backend *be, void *out, const void *inp, const int32_t *idx, int n, int C);
    void (*scatter_add_rows)(iv2_backend *be, void *dinp, const void *dout, const int32_t *idx, int n, int C);

    /* out[b,:] = mean over n of inp[b,n,:] ([B,N,C] -> [B,C]). Backward: dinp[b,n,:] += dout[b,:]/N. */
    void (*mean_rows)(iv2_backend *be, void *out, const void *inp, int B, int N, int C);
    void (*mean_rows_backward)(iv2_backend *be, void *dinp, const void *dout, int B, int N, int C);

    /* out = inp / ||inp||_2 per row; norm (f32 [M]) saved when not NULL (no eps, as the official code). */
    void (*l2norm)(iv2_backend *be, void *out, float *norm, const void *inp, int M, int C);
    void (*l2norm_backward)(iv2_backend *be, void *dinp, const void *dout, const void *out, const float *norm, int M, int C);

    /* Patch embedding input: frames are uint8 RGB [T, H, W, 3] in backend memory. Produces rows
     * [(T/tubelet) * (H/p) * (W/p), 3*tubelet*p*p] in (t, y, x) raster order, columns in the
     * Conv3d weight order (c, kt, ky, kx), each pixel normalised (v/255 - mean[c]) / std[c].
     * With rows (backend int32 [n], else NULL): only n rows, row i that of token rows[i] % ntok of
     * sample rows[i] / ntok, whose tokens are cls (0 or 1) class tokens (a zero row) and then its
     * patches in raster order (a sample: ntok - cls patches, the frames of T / (that) samples). */
    void (*patchify)(iv2_backend *be, void *out, const uint8_t *frames, int T, int H, int W, int p, int tubelet,
                     const float mean[3], const float std[3], const int32_t *rows, int n, int ntok, int cls);

    /* The heads' cosine-distance loss from rows not yet unit: out = inp / ||inp|| (not stored; no
     * eps, as l2norm), loss_rows (f32 [M]) = 2 - 2 <out_m, target_m>, and where dinp is not NULL the
     * gradient of scale * sum_m loss_rows w.r.t. inp, written: dinp = -2 scale (target - out <out,
     * target>) / ||inp||. target is in be->dtype. (l2norm, the loss and l2norm_backward in one pass.) */
    void (*l2_cos_loss)(iv2_backend *be, float *loss_rows, void *dinp, const void *inp, const void *target, int M,
                        int C, float scale);

    /* sum of squares of n elements of x, added into *acc (f32 in backend memory; one float). */
    void (*sumsq)(iv2_backend *be, float *acc, const void *x, size_t n);
    /* AdamW step on n elements (PyTorch semantics, bias-corrected, decoupled weight decay):
     * g = grad * grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
     * master -= lr * (mhat / (sqrt(vhat) + eps) + wd * master); param = master (rounded to be->dtype).
     * master, m, v are f32. On the CPU master may equal param. t is the 1-based step. */
    void (*adamw)(iv2_backend *be, void *param, float *master, const void *grad, float *m, float *v, size_t n,
                  float lr, float b1, float b2, float eps, float wd, int t, float grad_scale);
    /* Optional (NULL: call adamw per tensor): the same step over many tensors of one buffer in one
     * launch. chunks is backend memory (upload_raw of n_chunks iv2_adamw_chunk, made once) naming
     * pieces of the buffer by element offset, at most IV2_ADAMW_CHUNK elements each; wd applies to
     * the pieces whose no_wd is 0. Element for element the arithmetic of adamw. stream:
     * IV2_STREAM_COMPUTE, or IV2_STREAM_SIDE (see "the side stream" above). */
    void (*adamw_chunks)(iv2_backend *be, void *param, float *master, const void *grad, float *m, float *v,
                         const void *chunks, int n_chunks, float lr, float b1, float b2, float eps, float wd, int t,
                         float grad_scale, int stream);
};

#define IV2_ADAMW_CHUNK 65536
typedef struct { uint64_t off; uint32_t n, no_wd; } iv2_adamw_chunk;   /* a piece of a parameter buffer */

/* Backends. iv2_backend_create("cpu" | "cuda" | "cuda:N", threads) returns NULL with iv2_err set
 * when the backend is not compiled in or not available. */
iv2_backend *iv2_backend_create(const char *spec, int threads);
void iv2_backend_destroy(iv2_backend *be);
iv2_backend *iv2_cpu_backend_create(int threads);
#ifdef IV2_CUDA
iv2_backend *iv2_cuda_backend_create(int device);   /* kernels/ */
int iv2_cuda_has_wgmma(iv2_backend *be);   /* the Hopper kernels (IV2_ATTN_FWD=wg64|wg128) run on be */
#endif

#endif
