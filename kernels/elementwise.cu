/* elementwise.cu: GELU, residual + LayerScale, column sums (bias gradients), position rows,
 * axpy, gathers, mean over tokens, patchify, the cosine loss, sum of squares and AdamW: the
 * launches (the kernels are in elementwise.cuh). The backward kernels take 16-byte vectors
 * where widths and pointers allow (cuda_impl.vec_bwd; IV2_VEC_BWD=0 keeps the scalar ones). */
#include "cuda_common.cuh"
#include "elementwise.cuh"
#include <math.h>

#define NT 256
#define GRID(n) (cdiv((n), NT) > 65535u * 4 ? 65535u * 4 : cdiv((n), NT))
/* ---- GELU ---- */
static void c_gelu(iv2_backend *be, void *out, const void *inp, size_t n, int kind) {
    if (!n) return;
    if (n % 8 == 0 && al16(out) && al16(inp)) {
        gelu8_kernel<<<GRID(n / 8), NT, 0, impl_of(be)->stream>>>((bf16 *)out, (const bf16 *)inp, n / 8, kind);
        LAUNCH_CHECK();
        return;
    }
    gelu_kernel<<<GRID(n), NT, 0, impl_of(be)->stream>>>((bf16 *)out, (const bf16 *)inp, n, kind);
    LAUNCH_CHECK();
}
static void c_gelu_backward(iv2_backend *be, void *dinp, const void *dout, const void *inp, size_t n, int kind,
                            int add) {
    if (!n) return;
    if (impl_of(be)->vec_bwd && n % 8 == 0 && al16(dinp) && al16(dout) && al16(inp)) {
        gelu_backward8_kernel<<<GRID(n / 8), NT, 0, impl_of(be)->stream>>>((bf16 *)dinp, (const bf16 *)dout,
                                                                           (const bf16 *)inp, n / 8, kind, add);
        LAUNCH_CHECK();
        return;
    }
    gelu_backward_kernel<<<GRID(n), NT, 0, impl_of(be)->stream>>>((bf16 *)dinp, (const bf16 *)dout,
                                                                  (const bf16 *)inp, n, kind, add);
    LAUNCH_CHECK();
}
void cuda_gelu_grad_scale(iv2_backend *be, void *x, const void *pre, size_t n) {
    if (!n) return;
    if (n % 8 == 0 && al16(x) && al16(pre))
        gelu_grad_scale8_kernel<<<GRID(n / 8), NT, 0, impl_of(be)->stream>>>((bf16 *)x, (const bf16 *)pre, n / 8);
    else
        gelu_grad_scale_kernel<<<GRID(n), NT, 0, impl_of(be)->stream>>>((bf16 *)x, (const bf16 *)pre, n);
    LAUNCH_CHECK();
}
void cuda_pad_cols(iv2_backend *be, void *dst, const void *src, int rows, int cols, int ld) {
    if (rows <= 0 || ld <= 0) return;
    pad_cols_kernel<<<GRID((size_t)rows * ld), NT, 0, impl_of(be)->stream>>>((bf16 *)dst, (const bf16 *)src, rows,
                                                                             cols, ld);
    LAUNCH_CHECK();
}
void cuda_add_cols(iv2_backend *be, void *dst, const void *src, int rows, int cols, int ld) {
    if (rows <= 0 || cols <= 0) return;
    add_cols_kernel<<<GRID((size_t)rows * cols), NT, 0, impl_of(be)->stream>>>((bf16 *)dst, (const bf16 *)src, rows,
                                                                               cols, ld);
    LAUNCH_CHECK();
}
/* ---- residual with LayerScale and drop-path scale ---- */
static void c_residual(iv2_backend *be, void *x, const void *y, const void *gamma, const float *s, int B, int N,
                       int C) {
    size_t NC = (size_t)N * C;
    if (!NC || B <= 0) return;
    int vec = C % 8 == 0 && al16(x) && al16(y) && al16(gamma);
    for (int b0 = 0; b0 < B; b0 += SCHUNK) {
        int nb = B - b0 < SCHUNK ? B - b0 : SCHUNK;
        sarg a;
        for (int b = 0; b < nb; b++) a.s[b] = s ? s[b0 + b] : 1.f;
        if (vec)
            residual8_kernel<<<GRID(NC / 8 * nb), NT, 0, impl_of(be)->stream>>>(
                (bf16 *)x + b0 * NC, (const bf16 *)y + b0 * NC, (const bf16 *)gamma, a, s != NULL, NC / 8, C / 8, nb);
        else
            residual_kernel<<<GRID(NC * nb), NT, 0, impl_of(be)->stream>>>(
                (bf16 *)x + b0 * NC, (const bf16 *)y + b0 * NC, (const bf16 *)gamma, a, s != NULL, NC, C, nb);
        LAUNCH_CHECK();
    }
}
static void c_residual_backward(iv2_backend *be, void *dy, void *dgamma, const void *dx, const void *y,
                                const void *gamma, const float *s, int B, int N, int C, int add) {
    cuda_impl *im = impl_of(be);
    if (B <= 0 || N <= 0) return;
    colsum_out cs = {};   /* no dgamma: no sums */
    if (dgamma) cs = cuda_colsum_out(be, dgamma, NULL, C, 1);   /* each launch adds its samples' sums */
    int vec = im->vec_bwd && C % 8 == 0 && al16(dy) && al16(dx) && al16(y) && al16(gamma);
    for (int b0 = 0; b0 < B; b0 += SCHUNK) {
        int nb = B - b0 < SCHUNK ? B - b0 : SCHUNK, rows_per = vec ? 128 : 64;
        sarg a;
        for (int b = 0; b < nb; b++) a.s[b] = s ? s[b0 + b] : 1.f;
        size_t off = (size_t)b0 * N * C;
        bf16 *dyo = dy ? (bf16 *)dy + off : NULL;
        const bf16 *yo = y ? (const bf16 *)y + off : NULL;
        if (vec) {   /* 32 vectors a block: C = 1408 is 176 vectors, 6 blocks with 16 idle lanes */
            dim3 grid(cdiv(C / 8, 32), cdiv((size_t)nb * N, rows_per));
            residual_backward8_kernel<<<grid, CS_THREADS, 0, im->stream>>>(dyo, cs, (const bf16 *)dx + off, yo,
                                                                   (const bf16 *)gamma, a, s != NULL, N, C / 8, nb,
                                                                   rows_per, add);
        } else {
            dim3 grid(cdiv(C, 128), cdiv((size_t)nb * N, rows_per));
            residual_backward_kernel<<<grid, 128, 0, im->stream>>>(dyo, cs, (const bf16 *)dx + off, yo,
                                                                   (const bf16 *)gamma, a, s != NULL, N, C, nb,
                                                                   rows_per, add);
        }
        LAUNCH_CHECK();
    }
}
/* ---- column sums (the bias gradients) ---- */
void cuda_bias_grad(iv2_backend *be, void *dbias, const void *dout, int M, int N) {
    cuda_impl *im = impl_of(be);
    if (M <= 0 || N <= 0) return;
    colsum_out cs = cuda_colsum_out(be, dbias, NULL, N, 1);
    int vec = im->vec_bwd && N % 8 == 0 && al16(dout), rows_per = vec ? 128 : 64;
    if (vec) {
        dim3 grid(cdiv(N / 8, 32), cdiv(M, rows_per));
        colsum8_kernel<<<grid, CS_THREADS, 0, im->stream>>>(cs, (const bf16 *)dout, M, N / 8, rows_per);
    } else {
        dim3 grid(cdiv(N, 128), cdiv(M, rows_per));
        colsum_kernel<<<grid, 128, 0, im->stream>>>(cs, (const bf16 *)dout, M, N, rows_per);
    }
    LAUNCH_CHECK();
}
/* ---- a table's rows added at indices ---- */
static void c_add_table_rows(iv2_backend *be, void *x, const void *table, const int32_t *rows, int n, int n_table,
                             int C) {
    if (n <= 0 || C <= 0) return;
    if (C % 8 == 0 && al16(x) && al16(table))
        add_table_rows8_kernel<<<GRID((size_t)n * C / 8), NT, 0, impl_of(be)->stream>>>(
            (bf16 *)x, (const bf16 *)table, rows, n, n_table, C / 8);
    else
        add_table_rows_kernel<<<GRID((size_t)n * C), NT, 0, impl_of(be)->stream>>>((bf16 *)x, (const bf16 *)table,
                                                                                   rows, n, n_table, C);
    LAUNCH_CHECK();
}
static void c_add_table_rows_backward(iv2_backend *be, void *dtable, const void *dx, const int32_t *rows, int n,
                                      int n_table, int C) {
    if (n <= 0 || C <= 0) return;
    cuda_impl *im = impl_of(be);
    size_t nt = (size_t)n_table * C;
    float *acc = cuda_scratch(be, nt * sizeof(float));
    CUDA_CHECK(cudaMemsetAsync(acc, 0, nt * sizeof(float), im->stream));
    if (im->vec_bwd && C % 8 == 0 && al16(dx))
        add_table_rows_backward8_kernel<<<GRID((size_t)n * C / 8), NT, 0, im->stream>>>(acc, (const bf16 *)dx, rows,
                                                                                        n, n_table, C / 8);
    else
        add_table_rows_backward_kernel<<<GRID((size_t)n * C), NT, 0, im->stream>>>(acc, (const bf16 *)dx, rows, n,
                                                                                   n_table, C);
    LAUNCH_CHECK();
    add_f32_kernel<<<GRID(nt), NT, 0, im->stream>>>((bf16 *)dtable, acc, nt);
    LAUNCH_CHECK();
}
/* ---- axpy ---- */
static void c_axpy(iv2_backend *be, void *y, const void *x, float a, size_t n) {
    if (!n) return;
    if (n % 8 == 0 && al16(y) && al16(x)) {
        axpy8_kernel<<<GRID(n / 8), NT, 0, impl_of(be)->stream>>>((bf16 *)y, (const bf16 *)x, a, n / 8);
        LAUNCH_CHECK();
        return;
    }
    axpy_kernel<<<GRID(n), NT, 0, impl_of(be)->stream>>>((bf16 *)y, (const bf16 *)x, a, n);
    LAUNCH_CHECK();
}
/* ---- gather / scatter of rows ---- */
static void c_gather_rows(iv2_backend *be, void *out, const void *inp, const int32_t *idx, int n, int C) {
    if (n <= 0) return;
    if (impl_of(be)->vec_bwd && C % 8 == 0 && al16(out) && al16(inp))
        gather8_kernel<<<GRID((size_t)n * C / 8), NT, 0, impl_of(be)->stream>>>((bf16 *)out, (const bf16 *)inp, idx,
                                                                                n, C / 8);
    else
        gather_kernel<<<GRID((size_t)n * C), NT, 0, impl_of(be)->stream>>>((bf16 *)out, (const bf16 *)inp, idx, n, C);
    LAUNCH_CHECK();
}
static void c_scatter_add_rows(iv2_backend *be, void *dinp, const void *dout, const int32_t *idx, int n, int C) {
    if (n <= 0) return;
    if (impl_of(be)->vec_bwd && C % 8 == 0 && al16(dinp) && al16(dout))
        scatter_add8_kernel<<<GRID((size_t)n * C / 8), NT, 0, impl_of(be)->stream>>>((bf16 *)dinp, (const bf16 *)dout,
                                                                                     idx, n, C / 8);
    else
        scatter_add_kernel<<<GRID((size_t)n * C), NT, 0, impl_of(be)->stream>>>((bf16 *)dinp, (const bf16 *)dout, idx,
                                                                                n, C);
    LAUNCH_CHECK();
}
/* ---- mean over tokens ---- */
static void c_mean_rows(iv2_backend *be, void *out, const void *inp, int B, int N, int C) {
    if (B <= 0 || C <= 0) return;
    if (impl_of(be)->vec_bwd && C % 8 == 0 && al16(out) && al16(inp) && B <= 65535)
        mean_rows8_kernel<<<dim3(cdiv(C / 8, 32), B), 256, MEAN8_SMEM, impl_of(be)->stream>>>((bf16 *)out,
                                                                                             (const bf16 *)inp, B, N,
                                                                                             C / 8);
    else
        mean_rows_kernel<<<GRID((size_t)B * C), NT, 0, impl_of(be)->stream>>>((bf16 *)out, (const bf16 *)inp, B, N, C);
    LAUNCH_CHECK();
}
static void c_mean_rows_backward(iv2_backend *be, void *dinp, const void *dout, int B, int N, int C) {
    if (B <= 0 || N <= 0 || C <= 0) return;
    if (impl_of(be)->vec_bwd && C % 8 == 0 && al16(dinp) && al16(dout))
        mean_rows_backward8_kernel<<<GRID((size_t)B * N * C / 8), NT, 0, impl_of(be)->stream>>>(
            (bf16 *)dinp, (const bf16 *)dout, B, N, C / 8);
    else
        mean_rows_backward_kernel<<<GRID((size_t)B * N * C), NT, 0, impl_of(be)->stream>>>(
            (bf16 *)dinp, (const bf16 *)dout, B, N, C);
    LAUNCH_CHECK();
}
/* ---- patchify: uint8 [T,H,W,3] -> rows [(T/tt)(H/p)(W/p), 3*tt*p*p], columns (c, kt, ky, kx) ---- */
static void c_patchify(iv2_backend *be, void *out, const uint8_t *frames, int T, int H, int W, int p, int tubelet,
                       const float mean[3], const float std[3], const int32_t *rows, int n, int ntok, int cls) {
    norm3 nm;
    for (int c = 0; c < 3; c++) { nm.mean[c] = mean[c]; nm.inv[c] = 1.f / std[c]; }
    size_t cols = (size_t)3 * tubelet * p * p;
    size_t total = rows ? (size_t)n * cols : (size_t)(T / tubelet) * (H / p) * (W / p) * cols;
    if (!total) return;
    patchify_kernel<<<GRID(total), NT, 0, impl_of(be)->stream>>>((bf16 *)out, frames, T, H, W, p, tubelet, nm, rows,
                                                                  n, ntok, cls);
    LAUNCH_CHECK();
}
/* ---- the heads' loss from rows not yet unit: l2norm, the cosine loss and l2norm_backward in one pass ---- */
static void c_l2_cos_loss(iv2_backend *be, float *loss_rows, void *dinp, const void *inp, const void *target, int M,
                          int C, float scale) {
    if (M <= 0) return;
    if (impl_of(be)->vec_bwd && C % 8 == 0 && al16(dinp) && al16(inp) && al16(target))
        l2_cos_loss8_kernel<<<cdiv(M, 4), 128, 0, impl_of(be)->stream>>>(loss_rows, (bf16 *)dinp, (const bf16 *)inp,
                                                                         (const bf16 *)target, M, C / 8, scale);
    else
        l2_cos_loss_kernel<<<M, 128, 0, impl_of(be)->stream>>>(loss_rows, (bf16 *)dinp, (const bf16 *)inp,
                                                               (const bf16 *)target, C, scale);
    LAUNCH_CHECK();
}
/* ---- sum of squares: block partial sums, one atomic per block ---- */
static void c_sumsq(iv2_backend *be, float *acc, const void *x, size_t n) {
    if (!n) return;
    int vec = impl_of(be)->vec_bwd && al16(x);
    unsigned g = cdiv(vec ? n / 8 + 1 : n, NT);
    if (g > 1024) g = 1024;
    if (vec) sumsq8_kernel<<<g, NT, 0, impl_of(be)->stream>>>(acc, (const bf16 *)x, n);
    else sumsq_kernel<<<g, NT, 0, impl_of(be)->stream>>>(acc, (const bf16 *)x, n);
    LAUNCH_CHECK();
}
/* ---- AdamW (PyTorch semantics), fp32 master and moments, bf16 parameters ---- */
static void c_adamw(iv2_backend *be, void *param, float *master, const void *grad, float *m, float *v, size_t n,
                    float lr, float b1, float b2, float eps, float wd, int t, float grad_scale) {
    if (!n) return;
    float bc1 = 1.f - powf(b1, (float)t), bc2 = 1.f - powf(b2, (float)t);
    adamw_kernel<<<GRID(n), NT, 0, impl_of(be)->stream>>>((bf16 *)param, master, (const bf16 *)grad, m, v, n, lr, b1,
                                                          b2, eps, wd, bc1, bc2, grad_scale);
    LAUNCH_CHECK();
}
static void c_adamw_chunks(iv2_backend *be, void *param, float *master, const void *grad, float *m, float *v,
                           const void *chunks, int n_chunks, float lr, float b1, float b2, float eps, float wd, int t,
                           float grad_scale, int stream) {
    if (n_chunks <= 0) return;
    float bc1 = 1.f - powf(b1, (float)t), bc2 = 1.f - powf(b2, (float)t);
    int vec = impl_of(be)->vec_bwd && al16(param) && al16(master) && al16(grad) && al16(m) && al16(v);
    adamw_chunks_kernel<<<n_chunks, NT, 0, stream_of(be, stream)>>>((bf16 *)param, master, (const bf16 *)grad, m, v,
                                                                  (const iv2_adamw_chunk *)chunks, lr, b1, b2, eps, wd,
                                                                  bc1, bc2, grad_scale, vec);
    LAUNCH_CHECK();
}

void cuda_install_elementwise(iv2_backend *be) {
    be->gelu = c_gelu;
    be->gelu_backward = c_gelu_backward;
    be->residual = c_residual;
    be->residual_backward = c_residual_backward;
    be->axpy = c_axpy;
    be->gather_rows = c_gather_rows;
    be->scatter_add_rows = c_scatter_add_rows;
    be->mean_rows = c_mean_rows;
    be->mean_rows_backward = c_mean_rows_backward;
    be->patchify = c_patchify;
    be->add_table_rows = c_add_table_rows;
    be->add_table_rows_backward = c_add_table_rows_backward;
    be->l2_cos_loss = c_l2_cos_loss;
    be->sumsq = c_sumsq;
    be->adamw = c_adamw;
    be->adamw_chunks = c_adamw_chunks;
}
