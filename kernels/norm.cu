/* norm.cu: RMSNorm, LayerNorm and L2 normalisation over the last dim, forward and backward: the
 * launches (the kernels are in norm.cuh). One block per row in the forward; the backward takes
 * one warp per row on 16-byte vectors where the width allows (norm_backward8_kernel up to
 * C = 1536, or 3328 with its sums in shared memory; beyond, norm_dx_wide_kernel and the column
 * sums of norm_dwdb8_kernel), else the scalar
 * kernel with ROWS rows per block; all sum the weight gradients per block, add them to an fp32
 * accumulator with few atomics, and the last block adds those to the gradients (colsum_out). */
#include "cuda_common.cuh"
#include "norm.cuh"

static int norm8_ok(const void *out, const void *inp, const void *w, const void *b, int C) {
    return C % 8 == 0 && C <= 8 * VPT * 128 && al16(out) && al16(inp) && al16(w) && al16(b);
}
static int norm8_threads(int C) { int c8 = C / 8; return c8 <= 128 ? 64 : 128; }

static int threads_for(int C) { return C >= 1024 ? 256 : C >= 256 ? 128 : 64; }

static void c_rmsnorm(iv2_backend *be, void *out, float *rstd, const void *inp, const void *w, int M, int C,
                      float eps) {
    if (M <= 0) return;
    if (norm8_ok(out, inp, w, NULL, C) && C / 8 <= VPT * norm8_threads(C)) {
        norm8_kernel<<<M, norm8_threads(C), 0, impl_of(be)->stream>>>((bf16 *)out, NULL, rstd, (const bf16 *)inp,
                                                                      (const bf16 *)w, NULL, C, eps, 0);
        LAUNCH_CHECK();
        return;
    }
    rmsnorm_kernel<<<M, threads_for(C), 0, impl_of(be)->stream>>>((bf16 *)out, rstd, (const bf16 *)inp,
                                                                   (const bf16 *)w, C, eps);
    LAUNCH_CHECK();
}

/* rows per block for one wave of the warp-per-row backward kernels: each SM holds as many blocks
 * as registers and shared memory allow (3 at C = 1408), and more rows per block means fewer
 * atomics on acc. The occupancy query is cached per kernel slot and shared-memory size. */
static int norm_rows_per_block(cuda_impl *im, int slot, const void *kernel, size_t smem, int M) {
    if (im->norm_bwd_smem[slot] != smem || !im->norm_bwd_blocks[slot]) {
        if (smem > 48 * 1024)   /* past the default: opted in (the SMS sums at C > 1536 / 4 ...) */
            CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&im->norm_bwd_blocks[slot], kernel, 128, smem));
        im->norm_bwd_smem[slot] = smem;
    }
    int blocks = im->sms * (im->norm_bwd_blocks[slot] > 0 ? im->norm_bwd_blocks[slot] : 1);
    int rows = (int)cdiv(M, blocks);
    return rows < 4 ? 4 : rows;
}

typedef void (*norm_bwd8_fn)(bf16 *, colsum_out, const bf16 *, const bf16 *, const bf16 *, const float *,
                             const float *, int, int, int, int, res_bwd);
/* the warp-per-row kernel for vpl vectors a lane (1, 2, 4, 6 or 13), with the residual backward
 * after it or not, its column sums in shared memory (SMS: im->norm_smem, at 4, 6 and 13) or
 * registers, the next row's loads issued before the row's work (PF: im->norm_pf, with SMS at 4
 * and 6); its slot in the occupancy cache; *smem: the dynamic shared memory it takes for
 * width C */
static norm_bwd8_fn norm_bwd8_kernel_for(const cuda_impl *im, int vpl, int res, int C, int *slot, size_t *smem) {
    static const norm_bwd8_fn k[2][4] = {
        {norm_backward8_kernel<1, false>, norm_backward8_kernel<2, false>, norm_backward8_kernel<4, false>,
         norm_backward8_kernel<6, false>},
        {norm_backward8_kernel<1, true>, norm_backward8_kernel<2, true>, norm_backward8_kernel<4, true>,
         norm_backward8_kernel<6, true>}};
    static const norm_bwd8_fn ks[2][3] = {
        {norm_backward8_kernel<4, false, true>, norm_backward8_kernel<6, false, true>,
         norm_backward8_kernel<13, false, true>},
        {norm_backward8_kernel<4, true, true>, norm_backward8_kernel<6, true, true>,
         norm_backward8_kernel<13, true, true>}};
    static const norm_bwd8_fn kp[2][2] = {
        {norm_backward8_kernel<4, false, true, true>, norm_backward8_kernel<6, false, true, true>},
        {norm_backward8_kernel<4, true, true, true>, norm_backward8_kernel<6, true, true, true>}};
    int i = vpl <= 1 ? 0 : vpl <= 2 ? 1 : vpl <= 4 ? 2 : vpl <= 6 ? 3 : 4;
    if (im->norm_smem && im->norm_pf && (i == 2 || i == 3)) {   /* the next row's loads in flight too */
        *slot = 15 + (i - 2) + 2 * res;
        *smem = (size_t)4 * 2 * C * 4;
        return kp[res][i - 2];
    }
    if (im->norm_smem && i >= 2) {
        *slot = 9 + (i - 2) + 3 * res;
        *smem = (size_t)4 * 2 * C * 4;   /* [4 warps][2][C] floats */
        return ks[res][i - 2];
    }
    *slot = 1 + i + 4 * res;
    *smem = (size_t)2 * C * 4;   /* the block's [2][C] sums */
    return k[res][i];
}

/* the vector kernel takes the row: C % 8 == 0, 16-byte aligned rows, C <= 1536 (C <= 3328 with
 * the sums in shared memory, where the device lets a block have their 8 C floats: 100 KB at
 * 3200, more than the 99 KB of compute capability 8.6 and 8.9) */
static int norm_bwd8_fits(const cuda_impl *im, const void *dinp, const void *dout, const void *inp, const void *w,
                          int C) {
    int vpl = (int)cdiv(C / 8, 32);
    int wide = im->norm_smem && vpl <= 13 && (size_t)4 * 2 * C * 4 <= im->smem_optin;
    return im->vec_bwd && C % 8 == 0 && (vpl <= 6 || wide) && al16(dinp) && al16(dout) && al16(inp) && al16(w);
}

static void norm_backward(iv2_backend *be, void *dinp, void *dw, void *db, const void *dout, const void *inp,
                          const void *w, const float *mean, const float *rstd, int M, int C, int add) {
    if (M <= 0) return;
    cuda_impl *im = impl_of(be);
    colsum_out cs = cuda_colsum_out(be, dw, db, C, 2);   /* the kernels sum both halves, used or not */
    int vec = im->vec_bwd && C % 8 == 0 && al16(dinp) && al16(dout) && al16(inp) && al16(w);
    if (norm_bwd8_fits(im, dinp, dout, inp, w, C)) {   /* the row in registers */
        int slot;
        size_t smem;
        norm_bwd8_fn k = norm_bwd8_kernel_for(im, cdiv(C / 8, 32), 0, C, &slot, &smem);
        int rows = norm_rows_per_block(im, slot, (const void *)k, smem, M);
        res_bwd none = {};
        k<<<cdiv(M, rows), 128, smem, im->stream>>>((bf16 *)dinp, cs, (const bf16 *)dout, (const bf16 *)inp,
                                                    (const bf16 *)w, mean, rstd, M, C, rows, add, none);
    } else if (vec) {   /* wider rows: dinp, then the weight and bias gradients as column sums */
        if (dinp)
            norm_dx_wide_kernel<<<cdiv(M, 4), 128, 0, im->stream>>>((bf16 *)dinp, (const bf16 *)dout,
                                                                    (const bf16 *)inp, (const bf16 *)w, mean, rstd,
                                                                    M, C, add);
        const int rows_per = 128;
        dim3 grid(cdiv(C / 8, 32), cdiv(M, rows_per));
        if (dw || db)
            norm_dwdb8_kernel<<<grid, CS_THREADS, 0, im->stream>>>(cs, (const bf16 *)dout, (const bf16 *)inp, mean,
                                                                   rstd, M, C / 8, rows_per);
    } else {
        if (C > NORM_THREADS * MAXPER)
            iv2_panic("cuda norm backward: width %d over the limit %d", C, NORM_THREADS * MAXPER);
        int nt = C > 64 * MAXPER ? NORM_THREADS : 64;
        norm_backward_kernel<<<cdiv(M, ROWS), nt, 0, im->stream>>>((bf16 *)dinp, cs, (const bf16 *)dout,
                                                                   (const bf16 *)inp, (const bf16 *)w, mean, rstd, M,
                                                                   C, add);
    }
    LAUNCH_CHECK();
}

static void c_rmsnorm_backward(iv2_backend *be, void *dinp, void *dw, const void *dout, const void *inp,
                               const void *w, const float *rstd, int M, int C, int add) {
    norm_backward(be, dinp, dw, NULL, dout, inp, w, NULL, rstd, M, C, add);
}

/* rmsnorm_backward (adding to dinp) and the residual backward after it on the new dinp, in one
 * pass (norm_backward8_kernel with RES: the row's dinp is in registers) where the vector kernel
 * takes the row and the samples' scales fit one kernel's arguments; else the two ops */
static void c_rmsnorm_residual_backward(iv2_backend *be, void *dinp, void *dw, const void *dout, const void *inp,
                                        const void *w, const float *rstd, void *dy, void *dgamma, const void *y,
                                        const void *gamma, const float *s, int B, int N, int C) {
    cuda_impl *im = impl_of(be);
    int M = B * N;
    if (M <= 0) return;
    if (!im->fuse_norm || B > SCHUNK || !dinp || !dy || !y || !norm_bwd8_fits(im, dinp, dout, inp, w, C) ||
        !al16(dy) || !al16(y) || !al16(gamma)) {
        norm_backward(be, dinp, dw, NULL, dout, inp, w, NULL, rstd, M, C, IV2_ADD);
        be->residual_backward(be, dy, dgamma, dinp, y, gamma, s, B, N, C, IV2_SET);
        return;
    }
    colsum_out cs = cuda_colsum_out(be, dw, dgamma, C, 2);   /* dw, then dgamma in the second sums */
    int slot;
    size_t smem;
    norm_bwd8_fn k = norm_bwd8_kernel_for(im, cdiv(C / 8, 32), 1, C, &slot, &smem);
    int rows = norm_rows_per_block(im, slot, (const void *)k, smem, M);
    res_bwd rb = {};
    rb.dy = (bf16 *)dy; rb.y = (const bf16 *)y; rb.gamma = (const bf16 *)gamma;
    for (int b = 0; b < B; b++) rb.s.s[b] = s ? s[b] : 1.f;
    rb.has_s = s != NULL; rb.N = N;
    k<<<cdiv(M, rows), 128, smem, im->stream>>>((bf16 *)dinp, cs, (const bf16 *)dout, (const bf16 *)inp,
                                                (const bf16 *)w, NULL, rstd, M, C, rows, IV2_ADD, rb);
    LAUNCH_CHECK();
}

static void c_layernorm(iv2_backend *be, void *out, float *mean, float *rstd, const void *inp, const void *w,
                        const void *b, int M, int C, float eps) {
    if (M <= 0) return;
    if (norm8_ok(out, inp, w, b, C) && C / 8 <= VPT * norm8_threads(C)) {
        norm8_kernel<<<M, norm8_threads(C), 0, impl_of(be)->stream>>>((bf16 *)out, mean, rstd, (const bf16 *)inp,
                                                                      (const bf16 *)w, (const bf16 *)b, C, eps, 1);
        LAUNCH_CHECK();
        return;
    }
    layernorm_kernel<<<M, threads_for(C), 0, impl_of(be)->stream>>>((bf16 *)out, mean, rstd, (const bf16 *)inp,
                                                                     (const bf16 *)w, (const bf16 *)b, C, eps);
    LAUNCH_CHECK();
}

/* x_out = x_in + s gamma y, then out = norm(x_out): one pass (residual_norm8_kernel) where the
 * row fits norm8_kernel's registers and 16-byte access, else the three ops it fuses */
static void c_residual_norm(iv2_backend *be, void *x_out, void *out, float *mean, float *rstd, const void *x_in,
                            const void *y, const void *gamma, const float *s, const void *w, const void *b, int B,
                            int N, int C, float eps, int ln) {
    if (B <= 0 || N <= 0) return;
    cuda_impl *im = impl_of(be);
    int fuse = im->fuse_norm && norm8_ok(out, x_in, w, ln ? b : NULL, C) && al16(x_out) && al16(y) && al16(gamma) &&
               C / 8 <= VPT * norm8_threads(C);
    if (!fuse) {
        if (x_out != x_in) be->copy(be, x_out, x_in, (size_t)B * N * C * be->esize);
        be->residual(be, x_out, y, gamma, s, B, N, C);
        if (ln) be->layernorm(be, out, mean, rstd, x_out, w, b, B * N, C, eps);
        else be->rmsnorm(be, out, rstd, x_out, w, B * N, C, eps);
        return;
    }
    size_t NC = (size_t)N * C;
    for (int b0 = 0; b0 < B; b0 += SCHUNK) {
        int nb = B - b0 < SCHUNK ? B - b0 : SCHUNK;
        sarg a;
        for (int i = 0; i < nb; i++) a.s[i] = s ? s[b0 + i] : 1.f;
        size_t r0 = (size_t)b0 * N;
        residual_norm8_kernel<<<nb * N, norm8_threads(C), 0, im->stream>>>(
            (bf16 *)x_out + b0 * NC, (bf16 *)out + b0 * NC, ln && mean ? mean + r0 : NULL, rstd ? rstd + r0 : NULL,
            (const bf16 *)x_in + b0 * NC, (const bf16 *)y + b0 * NC, (const bf16 *)gamma, a, s != NULL, N,
            (const bf16 *)w, ln ? (const bf16 *)b : NULL, C, eps, ln);
        LAUNCH_CHECK();
    }
}

static void c_layernorm_backward(iv2_backend *be, void *dinp, void *dw, void *db, const void *dout, const void *inp,
                                 const void *w, const float *mean, const float *rstd, int M, int C, int add) {
    norm_backward(be, dinp, dw, db, dout, inp, w, mean, rstd, M, C, add);
}

static void c_l2norm(iv2_backend *be, void *out, float *norm, const void *inp, int M, int C) {
    if (M <= 0) return;
    if (impl_of(be)->vec_bwd && C % 8 == 0 && al16(out) && al16(inp))
        l2norm8_kernel<<<cdiv(M, 4), 128, 0, impl_of(be)->stream>>>((bf16 *)out, norm, (const bf16 *)inp, M, C / 8);
    else
        l2norm_kernel<<<M, threads_for(C), 0, impl_of(be)->stream>>>((bf16 *)out, norm, (const bf16 *)inp, C);
    LAUNCH_CHECK();
}
static void c_l2norm_backward(iv2_backend *be, void *dinp, const void *dout, const void *out, const float *norm, int M,
                              int C) {
    if (M <= 0) return;
    if (impl_of(be)->vec_bwd && C % 8 == 0 && al16(dinp) && al16(dout) && al16(out))
        l2norm_backward8_kernel<<<cdiv(M, 4), 128, 0, impl_of(be)->stream>>>((bf16 *)dinp, (const bf16 *)dout,
                                                                             (const bf16 *)out, norm, M, C / 8);
    else
        l2norm_backward_kernel<<<M, threads_for(C), 0, impl_of(be)->stream>>>((bf16 *)dinp, (const bf16 *)dout,
                                                                               (const bf16 *)out, norm, C);
    LAUNCH_CHECK();
}

void cuda_install_norm(iv2_backend *be) {
    be->rmsnorm = c_rmsnorm;
    be->rmsnorm_backward = c_rmsnorm_backward;
    be->rmsnorm_residual_backward = c_rmsnorm_residual_backward;
    be->layernorm = c_layernorm;
    be->layernorm_backward = c_layernorm_backward;
    be->residual_norm = c_residual_norm;
    be->l2norm = c_l2norm;
    be->l2norm_backward = c_l2norm_backward;
}
