/* matmul.cu: linear layers on cuBLASLt (bf16 in/out, fp32 accumulate), bias fused as an
 * epilogue, and the MLP's tanh GELU fused into its GEMMs (matmul_gelu, matmul_backward_gelu). Row-major out[M,N] = inp[M,K] @ w[N,K]^T is, in cuBLAS's column-major terms,
 * out^T[N,M] = op(w)[N,K] @ inp^T[K,M], so every call below swaps the operands. Shapes
 * cuBLASLt has no algorithm for (odd leading dimensions, unaligned pointers) fall back to
 * cublasGemmEx. */
#include "cuda_common.cuh"
#include <string.h>

/* largest power of two (<= 256) dividing both the address and the row pitch in bytes */
static int align_of(const void *p, int ld) {
    uintptr_t a = (uintptr_t)p | (uintptr_t)((size_t)ld * 2);
    int al = 256;
    while (al > 2 && (a % al)) al >>= 1;
    return al;
}

/* column-major d[r, c] = bias[r]: the fallback path's bias (rare) */
__global__ void fill_bias_kernel(bf16 *d, const bf16 *bias, int m, int n, int ldd) {
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < (size_t)m * n) d[(i / m) * ldd + i % m] = bias[i % m];
}

/* the epilogues gemm_lt runs (cuBLASLt's GELU is the tanh form) */
enum { EPI_NONE, EPI_BIAS, EPI_GELU_AUX_BIAS, EPI_DGELU };

/* IV2_GEMM_TUNE: cuBLASLt's heuristic ranks its candidates by a model, not by a clock; with the
 * option on, the first call of each shape times up to GEMM_TUNE_ALGOS of them on the call's own
 * operands (a warm-up and three runs each, events on the stream) and the cache keeps the fastest.
 * They write a scratch D (and aux) of their own, so a D that is added to (beta 1) or read by
 * the epilogue is left as it was; without the memory for it the heuristic's first pick stays.
 * Only the first calls pay (a host wait each); the picks may differ between runs, so results may
 * differ in the last bits where the heuristic's would not. */
#define GEMM_TUNE_ALGOS 8
static void tune_algo(iv2_backend *be, gemm_cache_entry *ce, const cublasLtMatmulHeuristicResult_t *h, int found,
                      cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t la, cublasLtMatrixLayout_t lb,
                      cublasLtMatrixLayout_t ld, const bf16 *a, const bf16 *b, int n, int ldd, bf16 *call_aux,
                      float beta) {
    cuda_impl *im = impl_of(be);
    size_t bytes = (size_t)n * ldd * sizeof(bf16);
    bf16 *d = NULL, *aux = NULL;
    if (cudaMalloc((void **)&d, bytes) != cudaSuccess) { cudaGetLastError(); return; }
    if (call_aux && cudaMalloc((void **)&aux, bytes) != cudaSuccess) { cudaGetLastError(); cudaFree(d); return; }
    CUDA_CHECK(cudaMemsetAsync(d, 0, bytes, im->stream));   /* beta 1 and DGELU read it */
    if (aux) {
        CUDA_CHECK(cudaMemsetAsync(aux, 0, bytes, im->stream));
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux));
    }
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    float alpha = 1.f, best = 0.f, first = 0.f;
    int pick = -1;
    for (int i = 0; i < found; i++) {
        int ok = 1;
        for (int r = 0; r < 4 && ok; r++) {   /* r = 0: the warm-up */
            if (r == 1) CUDA_CHECK(cudaEventRecord(e0, im->stream));
            ok = cublasLtMatmul(im->lt, op, &alpha, a, la, b, lb, &beta, d, ld, d, ld, &h[i].algo, im->workspace,
                                im->workspace_size, im->stream) == CUBLAS_STATUS_SUCCESS;
        }
        if (!ok) continue;
        CUDA_CHECK(cudaEventRecord(e1, im->stream));
        CUDA_CHECK(cudaEventSynchronize(e1));
        float ms = 0.f;
        CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
        if (i == 0) first = ms;
        if (pick < 0 || ms < best) { best = ms; pick = i; }
    }
    if (pick >= 0) ce->algo = h[pick].algo;
    if (im->gemm_tune > 1 && pick >= 0)   /* asked for: on stderr even under IV2_QUIET (check.sh sets it) */
        fprintf(stderr, "gemm tune: m %d n %d k %d ta %d tb %d epi %d beta %d: candidate %d of %d, %.1f us (the "
                "heuristic's first %.1f us)\n", ce->m, ce->n, ce->k, ce->ta, ce->tb, ce->epi, ce->beta1, pick, found,
                best * 1e3f / 3, first * 1e3f / 3);
    CUDA_CHECK(cudaEventDestroy(e0));
    CUDA_CHECK(cudaEventDestroy(e1));
    CUDA_CHECK(cudaStreamSynchronize(im->stream));   /* the scratch is freed next */
    CUDA_CHECK(cudaFree(d));
    if (aux) {   /* the descriptor back on the call's own aux */
        CUDA_CHECK(cudaFree(aux));
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &call_aux,
                                                    sizeof call_aux));
    }
}

/* column-major D[m,n] = alpha op(A)[m,k] op(B)[k,n] + beta D, then the epilogue: EPI_BIAS
 * D += bias[m]; EPI_GELU_AUX_BIAS aux = D + bias[m], D = gelu_tanh(aux); EPI_DGELU (beta 0)
 * D = D * gelu_tanh'(aux). aux is [m,n] with leading dimension ldd. All bf16; lda/ldb/ldd are the
 * column-major leading dimensions. Returns 0 when cuBLASLt has no algorithm for it (nothing
 * done), else 1. */
static int gemm_lt(iv2_backend *be, bf16 *d, const bf16 *a, const bf16 *b, const bf16 *bias, bf16 *aux, int epi,
                   int m, int n, int k, int ta, int tb, int lda, int ldb, int ldd, float beta) {
    cuda_impl *im = impl_of(be);
    float alpha = 1.f;
    int al[5] = {align_of(a, lda), align_of(b, ldb), align_of(d, ldd), bias ? align_of(bias, 0) : 256,
                 aux ? align_of(aux, ldd) : 256};
    int beta1 = beta != 0.f;
    gemm_cache_entry *ce = NULL;
    for (int i = 0; i < GEMM_CACHE; i++) {
        gemm_cache_entry *c = &im->gemm[i];
        if (c->valid && c->m == m && c->n == n && c->k == k && c->ta == ta && c->tb == tb && c->epi == epi &&
            c->beta1 == beta1 && !memcmp(c->align, al, sizeof al)) { ce = c; break; }
    }
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, ld;
    cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
    cublasLtEpilogue_t ep = epi == EPI_BIAS ? CUBLASLT_EPILOGUE_BIAS : epi == EPI_GELU_AUX_BIAS ?
                            CUBLASLT_EPILOGUE_GELU_AUX_BIAS : epi == EPI_DGELU ? CUBLASLT_EPILOGUE_DGELU :
                            CUBLASLT_EPILOGUE_DEFAULT;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep));
    if (aux) {
        int64_t ld64 = ldd;
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux));
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld64, sizeof ld64));
    }
    if (bias) {
        cudaDataType_t bt = CUDA_R_16BF;
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    }
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, ta ? k : m, ta ? m : k, lda));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, tb ? n : k, tb ? k : n, ldb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&ld, CUDA_R_16BF, m, n, ldd));
    if (!ce) {
        ce = &im->gemm[im->gemm_next];
        im->gemm_next = (im->gemm_next + 1) % GEMM_CACHE;
        memset(ce, 0, sizeof *ce);
        ce->m = m; ce->n = n; ce->k = k; ce->ta = ta; ce->tb = tb; ce->epi = epi; ce->beta1 = beta1;
        memcpy(ce->align, al, sizeof al);
        cublasLtMatmulPreference_t pref;
        CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
        CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                          &im->workspace_size, sizeof im->workspace_size));
        uint32_t a32[4] = {(uint32_t)al[0], (uint32_t)al[1], (uint32_t)al[2], (uint32_t)al[3]};
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &a32[0], 4);
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &a32[1], 4);
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &a32[2], 4);
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &a32[2], 4);
        if (im->gemm_tune) {   /* candidates that split K reduce in fp32 only: no atomics (in place), no bf16 partials */
            uint32_t rs = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
            cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &rs, sizeof rs);
        }
        cublasLtMatmulHeuristicResult_t h[GEMM_TUNE_ALGOS];
        int found = 0;
        if (cublasLtMatmulAlgoGetHeuristic(im->lt, op, la, lb, ld, ld, pref, im->gemm_tune ? GEMM_TUNE_ALGOS : 1, h,
                                           &found) == CUBLAS_STATUS_SUCCESS && found > 0) {
            ce->algo = h[0].algo;
            ce->ok = 1;
            if (im->gemm_tune && found > 1 && im->gemm_tuned < 2 * GEMM_CACHE) {
                tune_algo(be, ce, h, found, op, la, lb, ld, a, b, n, ldd, aux, beta);
                if (++im->gemm_tuned == 2 * GEMM_CACHE)
                    iv2_warn("IV2_GEMM_TUNE: %d shapes timed, more than the GEMM cache holds; no more tuning",
                             im->gemm_tuned);
            }
        }
        cublasLtMatmulPreferenceDestroy(pref);
        ce->valid = 1;
    }
    int done = 0;
    if (ce->ok) {
        done = cublasLtMatmul(im->lt, op, &alpha, a, la, b, lb, &beta, d, ld, d, ld, &ce->algo, im->workspace,
                              im->workspace_size, im->stream) == CUBLAS_STATUS_SUCCESS;
        if (!done) ce->ok = 0;
    }
    cublasLtMatmulDescDestroy(op);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(ld);
    return done;
}

/* gemm_lt with no epilogue or the bias one, and cublasGemmEx where cuBLASLt has no algorithm */
static void gemm(iv2_backend *be, bf16 *d, const bf16 *a, const bf16 *b, const bf16 *bias, int m, int n, int k,
                 int ta, int tb, int lda, int ldb, int ldd, float beta) {
    if (gemm_lt(be, d, a, b, bias, NULL, bias ? EPI_BIAS : EPI_NONE, m, n, k, ta, tb, lda, ldb, ldd, beta)) return;
    cuda_impl *im = impl_of(be);
    float alpha = 1.f;
    cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    /* fallback: plain cuBLAS, bias written by a kernel first (beta = 1 then keeps it) */
    if (bias) {
        fill_bias_kernel<<<cdiv((size_t)m * n, 256), 256, 0, im->stream>>>(d, bias, m, n, ldd);
        LAUNCH_CHECK();
        beta = 1.f;
    }
    CUBLAS_CHECK(cublasGemmEx(im->blas, opa, opb, m, n, k, &alpha, a, CUDA_R_16BF, lda, b, CUDA_R_16BF, ldb,
                              &beta, d, CUDA_R_16BF, ldd, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}


/* out = inp w^T + bias where rows of K elements are not 16-byte aligned (the patch embedding, K =
 * 588): cuBLASLt's only algorithms for it were 2-byte-aligned CUTLASS kernels (163 us at 135
 * TFLOP/s for the student's, and a 47 us bias fill before them, H100 2026-11-27). inp and w go to
 * scratch at a pitch of Kp (K rounded up to 8, zeros after K) and the GEMM runs aligned, bias in
 * its epilogue. */
static void matmul_padded(iv2_backend *be, bf16 *out, const bf16 *inp, const bf16 *w, const bf16 *bias, int M,
                          int K, int N) {
    int Kp = (K + 7) & ~7;
    bf16 *ip = (bf16 *)cuda_scratch(be, ((size_t)M + N) * Kp * sizeof(bf16)), *wp = ip + (size_t)M * Kp;
    cuda_pad_cols(be, ip, inp, M, K, Kp);
    cuda_pad_cols(be, wp, w, N, K, Kp);
    gemm(be, out, wp, ip, bias, N, M, Kp, 1, 0, Kp, Kp, N, 0.f);
}

static void c_matmul(iv2_backend *be, void *out, const void *inp, const void *w, const void *bias, int M, int K,
                     int N) {
    if (M <= 0 || N <= 0) return;
    cuda_impl *im = impl_of(be);
    if ((align_of(w, K) < 16 || align_of(inp, K) < 16) && align_of(out, N) >= 16 &&
        (!bias || align_of(bias, 0) >= 16)) {
        matmul_padded(be, (bf16 *)out, (const bf16 *)inp, (const bf16 *)w, (const bf16 *)bias, M, K, N);
        return;
    }
    /* col-major: out^T[N,M] = (w stored K x N)^T @ (inp stored K x M) */
    if (bias && (align_of(bias, 0) < 16 || align_of(out, N) < 16 || align_of(w, K) < 16 || align_of(inp, K) < 16)) {
        fill_bias_kernel<<<cdiv((size_t)M * N, 256), 256, 0, im->stream>>>((bf16 *)out, (const bf16 *)bias, N, M, N);
        LAUNCH_CHECK();
        gemm(be, (bf16 *)out, (const bf16 *)w, (const bf16 *)inp, NULL, N, M, K, 1, 0, K, K, N, 1.f);
        return;
    }
    gemm(be, (bf16 *)out, (const bf16 *)w, (const bf16 *)inp, (const bf16 *)bias, N, M, K, 1, 0, K, K, N, 0.f);
}

/* dw[N,K] += dout^T inp where rows of K elements are not 16-byte aligned (the patch embedding,
 * K = 3 x 14 x 14 = 588): cuBLASLt has no algorithm for that weight gradient, and cublasGemmEx's
 * fallback ran at 24 TFLOP/s (0.9 ms of the student's step on an H100, 2026-11-27). inp goes to
 * scratch at a pitch of Kp (K rounded up to 8, zeros after K), the GEMM writes tmp[N,Kp] there
 * with every operand aligned, and tmp's first K columns are added into dw. */
static void wgrad_padded(iv2_backend *be, bf16 *dw, const bf16 *dout, const bf16 *inp, int M, int K, int N) {
    int Kp = (K + 7) & ~7;
    bf16 *ip = (bf16 *)cuda_scratch(be, ((size_t)M + N) * Kp * sizeof(bf16)), *tmp = ip + (size_t)M * Kp;
    cuda_pad_cols(be, ip, inp, M, K, Kp);
    /* tmp^T[Kp,N] = (ip stored Kp x M) @ (dout stored N x M)^T */
    gemm(be, tmp, ip, dout, NULL, Kp, N, M, 0, 1, Kp, N, Kp, 0.f);
    cuda_add_cols(be, dw, tmp, N, K, Kp);
}

static void c_matmul_backward(iv2_backend *be, void *dinp, void *dw, void *dbias, const void *dout, const void *inp,
                              const void *w, int M, int K, int N, int add) {
    if (M <= 0) return;
    /* dinp^T[K,M] (+)= (w stored K x N) @ (dout stored N x M) */
    if (dinp)
        gemm(be, (bf16 *)dinp, (const bf16 *)w, (const bf16 *)dout, NULL, K, M, N, 0, 0, K, N, K, add ? 1.f : 0.f);
    /* dw^T[K,N] += (inp stored K x M) @ (dout stored N x M)^T */
    if (dw && (align_of(inp, K) < 16 || align_of(dw, K) < 16) && align_of(dout, N) >= 16)
        wgrad_padded(be, (bf16 *)dw, (const bf16 *)dout, (const bf16 *)inp, M, K, N);
    else if (dw) gemm(be, (bf16 *)dw, (const bf16 *)inp, (const bf16 *)dout, NULL, K, N, M, 0, 1, K, N, K, 1.f);
    if (dbias) cuda_bias_grad(be, dbias, dout, M, N);   /* elementwise.cu */
}

/* q, k and v in one launch: a strided batch over the weights (and outputs) with the input
 * shared (stride 0), on cublasGemmStridedBatchedEx; the weight gradients likewise, over dout */
static void c_matmul_batch_w(iv2_backend *be, void *out, const void *inp, const void *w, int M, int K, int N, int batch,
                             size_t w_stride, size_t out_stride) {
    if (M <= 0 || N <= 0 || batch <= 0) return;
    cuda_impl *im = impl_of(be);
    float alpha = 1.f, beta = 0.f;
    /* col-major: out_i^T[N,M] = (w_i stored K x N)^T @ (inp stored K x M) */
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(im->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &alpha, w, CUDA_R_16BF, K,
                                            (long long)w_stride, inp, CUDA_R_16BF, K, 0, &beta, out, CUDA_R_16BF, N,
                                            (long long)out_stride, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}
static void c_matmul_batch_w_backward(iv2_backend *be, void *dw, const void *dout, const void *inp, int M, int K, int N,
                                      int batch, size_t w_stride, size_t out_stride) {
    if (M <= 0 || batch <= 0) return;
    cuda_impl *im = impl_of(be);
    float alpha = 1.f, beta = 1.f;
    /* dw_i^T[K,N] += (inp stored K x M) @ (dout_i stored N x M)^T */
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(im->blas, CUBLAS_OP_N, CUBLAS_OP_T, K, N, M, &alpha, inp, CUDA_R_16BF, K, 0,
                                            dout, CUDA_R_16BF, N, (long long)out_stride, &beta, dw, CUDA_R_16BF, K,
                                            (long long)w_stride, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

/* pre[M,N] = inp @ w^T + bias, out = gelu_tanh(pre) in the GEMM's epilogue (the MLP's first
 * layer with the student's tanh GELU: no separate pass over pre); unfused where cuBLASLt has no
 * algorithm for the epilogue or the rows are not 16-byte aligned, and where out == pre (inference,
 * vit.c's g = f1): the epilogue would write D and the aux buffer to the same address */
static void c_matmul_gelu(iv2_backend *be, void *out, void *pre, const void *inp, const void *w, const void *bias,
                          int M, int K, int N) {
    if (M <= 0 || N <= 0) return;
    if (!bias || out == pre || align_of(out, N) < 16 || align_of(pre, N) < 16 || align_of(bias, 0) < 16 ||
        !gemm_lt(be, (bf16 *)out, (const bf16 *)w, (const bf16 *)inp, (const bf16 *)bias, (bf16 *)pre,
                 EPI_GELU_AUX_BIAS, N, M, K, 1, 0, K, K, N, 0.f)) {
        c_matmul(be, pre, inp, w, bias, M, K, N);
        be->gelu(be, out, pre, (size_t)M * N, IV2_GELU_TANH);
    }
}

/* The backward of out = gelu_tanh(pre) followed by a linear layer y = out @ w^T + b:
 * dpre[M,K] = (dout @ w) * gelu_tanh'(pre) written (not added) in the dgrad GEMM's epilogue,
 * so dout @ w never goes through memory; dw += dout^T @ out (inp = out), dbias += colsum(dout).
 * Unfused (the GEMM, then a pass scaling by gelu') where cuBLASLt has no algorithm for it. */
static void c_matmul_backward_gelu(iv2_backend *be, void *dpre, void *dw, void *dbias, const void *dout,
                                   const void *inp, const void *w, const void *pre, int M, int K, int N) {
    if (M <= 0) return;
    if (align_of(dpre, K) < 16 || align_of(pre, K) < 16 ||
        !gemm_lt(be, (bf16 *)dpre, (const bf16 *)w, (const bf16 *)dout, NULL, (bf16 *)pre, EPI_DGELU, K, M, N, 0, 0,
                 K, N, K, 0.f)) {
        gemm(be, (bf16 *)dpre, (const bf16 *)w, (const bf16 *)dout, NULL, K, M, N, 0, 0, K, N, K, 0.f);
        cuda_gelu_grad_scale(be, dpre, pre, (size_t)M * K);   /* elementwise.cu */
    }
    c_matmul_backward(be, NULL, dw, dbias, dout, inp, w, M, K, N, IV2_ADD);
}

void cuda_matmul_release(cuda_impl *im) {   /* an empty GEMM cache: each shape picked (or timed) anew */
    memset(im->gemm, 0, sizeof im->gemm);
    im->gemm_next = 0;
    im->gemm_tuned = 0;
}

void cuda_install_matmul(iv2_backend *be) {
    be->matmul = c_matmul;
    be->matmul_backward = c_matmul_backward;
    be->matmul_batch_w = c_matmul_batch_w;
    be->matmul_batch_w_backward = c_matmul_batch_w_backward;
}

/* the MLP's tanh GELU in the GEMMs' epilogues (IV2_GELU_FUSION; vit.c takes it where installed) */
void cuda_matmul_set_gelu_fusion(iv2_backend *be, int on) {
    impl_of(be)->gelu_fusion = on;
    be->matmul_gelu = on ? c_matmul_gelu : NULL;
    be->matmul_backward_gelu = on ? c_matmul_backward_gelu : NULL;
}
