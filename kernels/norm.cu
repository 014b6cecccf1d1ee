/* norm.cu: RMSNorm, LayerNorm and L2 normalisation over the last dim, forward and backward.
 * One block per row in the forward; the backward walks ROWS rows per block so the weight
 * gradients are summed in registers and added to an fp32 scratch with few atomics. */
#include "cuda_common.cuh"

#define NORM_THREADS 256
#define ROWS 16          /* rows per block in the backward */
#define MAXPER 16        /* columns per thread in the backward: C <= 4096 */

__global__ void rmsnorm_kernel(bf16 *out, float *rstd, const bf16 *inp, const bf16 *w, int C, float eps) {
    const bf16 *x = inp + (size_t)blockIdx.x * C;
    bf16 *y = out + (size_t)blockIdx.x * C;
    float ss = 0.f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) { float v = ld(x + c); ss += v * v; }
    float r = rsqrtf(block_sum(ss) / C + eps);
    for (int c = threadIdx.x; c < C; c += blockDim.x) st(y + c, ld(x + c) * r * (w ? ld(w + c) : 1.f));
    if (rstd && threadIdx.x == 0) rstd[blockIdx.x] = r;
}

__global__ void layernorm_kernel(bf16 *out, float *mean, float *rstd, const bf16 *inp, const bf16 *w, const bf16 *b,
                                 int C, float eps) {
    const bf16 *x = inp + (size_t)blockIdx.x * C;
    bf16 *y = out + (size_t)blockIdx.x * C;
    float s = 0.f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) s += ld(x + c);
    float mu = block_sum(s) / C;
    float ss = 0.f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) { float d = ld(x + c) - mu; ss += d * d; }
    float r = rsqrtf(block_sum(ss) / C + eps);
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        st(y + c, (ld(x + c) - mu) * r * (w ? ld(w + c) : 1.f) + (b ? ld(b + c) : 0.f));
    if (threadIdx.x == 0) {
        if (mean) mean[blockIdx.x] = mu;
        if (rstd) rstd[blockIdx.x] = r;
    }
}

/* forward with the row in registers: 16-byte loads, one read of the input (C % 8 == 0,
 * C <= 8 * VPT * blockDim). mean == NULL && !ln selects RMSNorm. */
#define VPT 4
__global__ void norm8_kernel(bf16 *out, float *mean, float *rstd, const bf16 *inp, const bf16 *w, const bf16 *b, int C,
                             float eps, int ln) {
    const bf16 *x = inp + (size_t)blockIdx.x * C;
    bf16 *y = out + (size_t)blockIdx.x * C;
    int C8 = C / 8;
    float v[VPT][8];
    float s = 0.f;
#pragma unroll
    for (int u = 0; u < VPT; u++) {
        int c8 = threadIdx.x + u * blockDim.x;
        if (c8 < C8) {
            ld8(x + 8 * c8, v[u]);
#pragma unroll
            for (int k = 0; k < 8; k++) s += v[u][k];
        }
    }
    float mu = ln ? block_sum(s) / C : 0.f;
    float ss = 0.f;
#pragma unroll
    for (int u = 0; u < VPT; u++) {
        int c8 = threadIdx.x + u * blockDim.x;
        if (c8 < C8)
#pragma unroll
            for (int k = 0; k < 8; k++) { float d = v[u][k] - mu; ss += d * d; }
    }
    float r = rsqrtf(block_sum(ss) / C + eps);
#pragma unroll
    for (int u = 0; u < VPT; u++) {
        int c8 = threadIdx.x + u * blockDim.x;
        if (c8 < C8) {
            float wf[8], bf[8], o[8];
            if (w) ld8(w + 8 * c8, wf);
            if (b) ld8(b + 8 * c8, bf);
#pragma unroll
            for (int k = 0; k < 8; k++) o[k] = (v[u][k] - mu) * r * (w ? wf[k] : 1.f) + (b ? bf[k] : 0.f);
            st8(y + 8 * c8, o);
        }
    }
    if (threadIdx.x == 0) {
        if (mean) mean[blockIdx.x] = mu;
        if (rstd) rstd[blockIdx.x] = r;
    }
}
static int norm8_ok(const void *out, const void *inp, const void *w, const void *b, int C) {
    return C % 8 == 0 && C <= 8 * VPT * 128 && al16(out) && al16(inp) && al16(w) && al16(b);
}
static int norm8_threads(int C) { int c8 = C / 8; return c8 <= 128 ? 64 : 128; }

/* shared by both backwards: mean (NULL for RMSNorm) selects the LayerNorm formula.
 * dinp += rstd * (dn - [mean(dn)] - xhat * mean(dn * xhat)), dn = dout * w, xhat = (x - mu) * rstd
 * dw += dout * xhat, db += dout (accumulated in f32 scratch acc[0..C) and acc[C..2C)). */
__global__ void norm_backward_kernel(bf16 *dinp, float *acc, const bf16 *dout, const bf16 *inp, const bf16 *w,
                                     const float *mean, const float *rstd, int M, int C) {
    float dwp[MAXPER], dbp[MAXPER];
    for (int j = 0; j < MAXPER; j++) dwp[j] = dbp[j] = 0.f;
    int r0 = blockIdx.x * ROWS, r1 = min(M, r0 + ROWS);
    for (int row = r0; row < r1; row++) {
        const bf16 *x = inp + (size_t)row * C, *dy = dout + (size_t)row * C;
        float mu = mean ? mean[row] : 0.f, r = rstd[row];
        float s1 = 0.f, s2 = 0.f;
        for (int c = threadIdx.x, j = 0; c < C; c += blockDim.x, j++) {
            float xh = (ld(x + c) - mu) * r, g = ld(dy + c), dn = g * (w ? ld(w + c) : 1.f);
            s1 += dn;
            s2 += dn * xh;
            dwp[j] += g * xh;
            dbp[j] += g;
        }
        s1 = block_sum(s1) / C;
        s2 = block_sum(s2) / C;
        if (!mean) s1 = 0.f;
        if (dinp) {
            bf16 *dx = dinp + (size_t)row * C;
            for (int c = threadIdx.x; c < C; c += blockDim.x) {
                float xh = (ld(x + c) - mu) * r, dn = ld(dy + c) * (w ? ld(w + c) : 1.f);
                st(dx + c, ld(dx + c) + r * (dn - s1 - xh * s2));
            }
        }
    }
    for (int c = threadIdx.x, j = 0; c < C; c += blockDim.x, j++) {
        atomicAdd(acc + c, dwp[j]);
        atomicAdd(acc + C + c, dbp[j]);
    }
}

__global__ void add_acc_kernel(bf16 *dw, bf16 *db, const float *acc, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    if (dw) st(dw + c, ld(dw + c) + acc[c]);
    if (db) st(db + c, ld(db + c) + acc[C + c]);
}

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

static void norm_backward(iv2_backend *be, void *dinp, void *dw, void *db, const void *dout, const void *inp,
                          const void *w, const float *mean, const float *rstd, int M, int C) {
    if (M <= 0) return;
    cuda_impl *im = impl_of(be);
    if (C > NORM_THREADS * MAXPER) iv2_panic("cuda norm backward: width %d over the limit %d", C, NORM_THREADS * MAXPER);
    int nt = C > 64 * MAXPER ? NORM_THREADS : 64;
    float *acc = cuda_scratch(be, (size_t)2 * C * 4);
    CUDA_CHECK(cudaMemsetAsync(acc, 0, (size_t)2 * C * 4, im->stream));
    norm_backward_kernel<<<cdiv(M, ROWS), nt, 0, im->stream>>>((bf16 *)dinp, acc, (const bf16 *)dout,
                                                               (const bf16 *)inp, (const bf16 *)w, mean, rstd, M, C);
    LAUNCH_CHECK();
    if (dw || db) {
        add_acc_kernel<<<cdiv(C, 256), 256, 0, im->stream>>>((bf16 *)dw, (bf16 *)db, acc, C);
        LAUNCH_CHECK();
    }
}

static void c_rmsnorm_backward(iv2_backend *be, void *dinp, void *dw, const void *dout, const void *inp,
                               const void *w, const float *rstd, int M, int C) {
    norm_backward(be, dinp, dw, NULL, dout, inp, w, NULL, rstd, M, C);
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

static void c_layernorm_backward(iv2_backend *be, void *dinp, void *dw, void *db, const void *dout, const void *inp,
                                 const void *w, const float *mean, const float *rstd, int M, int C) {
    norm_backward(be, dinp, dw, db, dout, inp, w, mean, rstd, M, C);
}

/* out = x / ||x|| (no eps, as the official code) */
__global__ void l2norm_kernel(bf16 *out, float *norm, const bf16 *inp, int C) {
    const bf16 *x = inp + (size_t)blockIdx.x * C;
    float ss = 0.f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) { float v = ld(x + c); ss += v * v; }
    float n = sqrtf(block_sum(ss));
    for (int c = threadIdx.x; c < C; c += blockDim.x) st(out + (size_t)blockIdx.x * C + c, ld(x + c) / n);
    if (norm && threadIdx.x == 0) norm[blockIdx.x] = n;
}
/* dinp += (dout - out * <dout, out>) / norm */
__global__ void l2norm_backward_kernel(bf16 *dinp, const bf16 *dout, const bf16 *out, const float *norm, int C) {
    size_t o = (size_t)blockIdx.x * C;
    float s = 0.f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) s += ld(dout + o + c) * ld(out + o + c);
    s = block_sum(s);
    float inv = 1.f / norm[blockIdx.x];
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        st(dinp + o + c, ld(dinp + o + c) + (ld(dout + o + c) - ld(out + o + c) * s) * inv);
}

static void c_l2norm(iv2_backend *be, void *out, float *norm, const void *inp, int M, int C) {
    if (M <= 0) return;
    l2norm_kernel<<<M, threads_for(C), 0, impl_of(be)->stream>>>((bf16 *)out, norm, (const bf16 *)inp, C);
    LAUNCH_CHECK();
}
static void c_l2norm_backward(iv2_backend *be, void *dinp, const void *dout, const void *out, const float *norm, int M,
                              int C) {
    if (M <= 0) return;
    l2norm_backward_kernel<<<M, threads_for(C), 0, impl_of(be)->stream>>>((bf16 *)dinp, (const bf16 *)dout,
                                                                           (const bf16 *)out, norm, C);
    LAUNCH_CHECK();
}

void cuda_install_norm(iv2_backend *be) {
    be->rmsnorm = c_rmsnorm;
    be->rmsnorm_backward = c_rmsnorm_backward;
    be->layernorm = c_layernorm;
    be->layernorm_backward = c_layernorm_backward;
    be->l2norm = c_l2norm;
    be->l2norm_backward = c_l2norm_backward;
}
