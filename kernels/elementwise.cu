/* elementwise.cu: GELU, residual + LayerScale, position rows, axpy, gathers, mean over tokens,
 * patchify, the cosine loss, sum of squares and AdamW. Grid-stride loops, fp32 arithmetic. */
#include "cuda_common.cuh"
#include <math.h>

#define NT 256
#define GRID(n) (cdiv((n), NT) > 65535u * 4 ? 65535u * 4 : cdiv((n), NT))
#define FOR_N(i, n) for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); \
                         i += (size_t)gridDim.x * blockDim.x)

/* ---- GELU ---- */
__device__ __forceinline__ float gelu_f(float x, int kind) {
    if (kind == IV2_GELU_TANH) {
        const float k = 0.7978845608028654f;
        return 0.5f * x * (1.f + tanhf(k * (x + 0.044715f * x * x * x)));
    }
    return 0.5f * x * (1.f + erff(x * 0.7071067811865476f));
}
__device__ __forceinline__ float gelu_grad(float x, int kind) {
    if (kind == IV2_GELU_TANH) {
        const float k = 0.7978845608028654f;
        float u = k * (x + 0.044715f * x * x * x), t = tanhf(u);
        return 0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * k * (1.f + 3.f * 0.044715f * x * x);
    }
    return 0.5f * (1.f + erff(x * 0.7071067811865476f)) + x * 0.3989422804014327f * expf(-0.5f * x * x);
}
__global__ void gelu_kernel(bf16 *out, const bf16 *inp, size_t n, int kind) {
    FOR_N(i, n) st(out + i, gelu_f(ld(inp + i), kind));
}
__global__ void gelu_backward_kernel(bf16 *dinp, const bf16 *dout, const bf16 *inp, size_t n, int kind) {
    FOR_N(i, n) st(dinp + i, ld(dinp + i) + ld(dout + i) * gelu_grad(ld(inp + i), kind));
}
/* 8 elements per thread where the buffers allow 16-byte access (every model's case) */
__global__ void gelu8_kernel(bf16 *out, const bf16 *inp, size_t n8, int kind) {
    FOR_N(i, n8) {
        float f[8];
        ld8(inp + 8 * i, f);
#pragma unroll
        for (int k = 0; k < 8; k++) f[k] = gelu_f(f[k], kind);
        st8(out + 8 * i, f);
    }
}
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
static void c_gelu_backward(iv2_backend *be, void *dinp, const void *dout, const void *inp, size_t n, int kind) {
    if (!n) return;
    gelu_backward_kernel<<<GRID(n), NT, 0, impl_of(be)->stream>>>((bf16 *)dinp, (const bf16 *)dout,
                                                                  (const bf16 *)inp, n, kind);
    LAUNCH_CHECK();
}

/* ---- residual with LayerScale and drop-path scale ---- */
/* The per-sample scales s[] come from the host; they travel as kernel arguments in chunks of
 * SCHUNK samples so no copy (and no sync) is needed. */
#define SCHUNK 64
struct sarg { float s[SCHUNK]; };

__global__ void residual_kernel(bf16 *x, const bf16 *y, const bf16 *gamma, sarg s, int has_s, size_t NC, int C,
                                int nb) {
    size_t n = NC * nb;
    FOR_N(i, n) {
        float sc = has_s ? s.s[i / NC] : 1.f;
        float g = gamma ? ld(gamma + i % C) : 1.f;
        st(x + i, ld(x + i) + sc * g * ld(y + i));
    }
}
/* x += s[b] * gamma * y, 8 channels per thread (C % 8 == 0) */
__global__ void residual8_kernel(bf16 *x, const bf16 *y, const bf16 *gamma, sarg s, int has_s, size_t NC8, int C8,
                                 int nb) {
    size_t n = NC8 * nb;
    FOR_N(i, n) {
        float a[8], b[8], g[8];
        float sc = has_s ? s.s[i / NC8] : 1.f;
        ld8(x + 8 * i, a);
        ld8(y + 8 * i, b);
        if (gamma) ld8(gamma + 8 * (i % C8), g);
#pragma unroll
        for (int k = 0; k < 8; k++) a[k] += sc * (gamma ? g[k] : 1.f) * b[k];
        st8(x + 8 * i, a);
    }
}
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
/* dy += s*gamma*dx; dgamma[c] += sum s*dx*y: columns per thread, rows split over blockIdx.y */
__global__ void residual_backward_kernel(bf16 *dy, float *acc, const bf16 *dx, const bf16 *y, const bf16 *gamma,
                                         sarg s, int has_s, int N, int C, int nb, int rows_per) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    int total = nb * N, r0 = blockIdx.y * rows_per, r1 = min(total, r0 + rows_per);
    float g = gamma ? ld(gamma + c) : 1.f, a = 0.f;
    for (int r = r0; r < r1; r++) {
        float sc = has_s ? s.s[r / N] : 1.f;
        size_t i = (size_t)r * C + c;
        float d = ld(dx + i);
        if (dy) st(dy + i, ld(dy + i) + sc * g * d);
        a += sc * d * (y ? ld(y + i) : 0.f);
    }
    if (acc) atomicAdd(acc + c, a);
}
__global__ void add_f32_kernel(bf16 *dst, const float *src, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) st(dst + i, ld(dst + i) + src[i]);
}
static void c_residual_backward(iv2_backend *be, void *dy, void *dgamma, const void *dx, const void *y,
                                const void *gamma, const float *s, int B, int N, int C) {
    cuda_impl *im = impl_of(be);
    if (B <= 0 || N <= 0) return;
    float *acc = NULL;
    if (dgamma) {
        acc = cuda_scratch(be, (size_t)C * 4);
        CUDA_CHECK(cudaMemsetAsync(acc, 0, (size_t)C * 4, im->stream));
    }
    for (int b0 = 0; b0 < B; b0 += SCHUNK) {
        int nb = B - b0 < SCHUNK ? B - b0 : SCHUNK, rows_per = 64;
        sarg a;
        for (int b = 0; b < nb; b++) a.s[b] = s ? s[b0 + b] : 1.f;
        size_t off = (size_t)b0 * N * C;
        dim3 grid(cdiv(C, 128), cdiv((size_t)nb * N, rows_per));
        residual_backward_kernel<<<grid, 128, 0, im->stream>>>(dy ? (bf16 *)dy + off : NULL, acc,
                                                               (const bf16 *)dx + off, (const bf16 *)y + off,
                                                               (const bf16 *)gamma, a, s != NULL, N, C, nb, rows_per);
        LAUNCH_CHECK();
    }
    if (dgamma) {
        add_f32_kernel<<<cdiv(C, 256), 256, 0, im->stream>>>((bf16 *)dgamma, acc, C);
        LAUNCH_CHECK();
    }
}

/* ---- position rows ---- */
__global__ void add_rows_kernel(bf16 *x, const bf16 *pe, size_t NC, size_t n) {
    FOR_N(i, n) st(x + i, ld(x + i) + ld(pe + i % NC));
}
__global__ void add_rows_backward_kernel(bf16 *dpe, const bf16 *dx, int B, size_t NC) {
    FOR_N(i, NC) {
        float a = 0.f;
        for (int b = 0; b < B; b++) a += ld(dx + b * NC + i);
        st(dpe + i, ld(dpe + i) + a);
    }
}
static void c_add_rows(iv2_backend *be, void *x, const void *pe, int B, int N, int C) {
    size_t NC = (size_t)N * C, n = NC * B;
    if (!n) return;
    add_rows_kernel<<<GRID(n), NT, 0, impl_of(be)->stream>>>((bf16 *)x, (const bf16 *)pe, NC, n);
    LAUNCH_CHECK();
}
static void c_add_rows_backward(iv2_backend *be, void *dpe, const void *dx, int B, int N, int C) {
    size_t NC = (size_t)N * C;
    if (!NC || B <= 0) return;
    add_rows_backward_kernel<<<GRID(NC), NT, 0, impl_of(be)->stream>>>((bf16 *)dpe, (const bf16 *)dx, B, NC);
    LAUNCH_CHECK();
}

/* ---- axpy ---- */
__global__ void axpy_kernel(bf16 *y, const bf16 *x, float a, size_t n) {
    FOR_N(i, n) st(y + i, ld(y + i) + a * ld(x + i));
}
__global__ void axpy8_kernel(bf16 *y, const bf16 *x, float a, size_t n8) {
    FOR_N(i, n8) {
        float u[8], v[8];
        ld8(y + 8 * i, u);
        ld8(x + 8 * i, v);
#pragma unroll
        for (int k = 0; k < 8; k++) u[k] += a * v[k];
        st8(y + 8 * i, u);
    }
}
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
__global__ void gather_kernel(bf16 *out, const bf16 *inp, const int32_t *idx, int n, int C) {
    size_t total = (size_t)n * C;
    FOR_N(i, total) out[i] = inp[(size_t)idx[i / C] * C + i % C];
}
/* one thread per element, bf16 atomics: exact for distinct indices (the patch embedding's
 * scatter into zeros), and summed in some order where an index repeats */
__global__ void scatter_add_kernel(bf16 *dinp, const bf16 *dout, const int32_t *idx, int n, int C) {
    size_t total = (size_t)n * C;
    FOR_N(i, total) atomicAdd(dinp + (size_t)idx[i / C] * C + i % C, dout[i]);
}
static void c_gather_rows(iv2_backend *be, void *out, const void *inp, const int32_t *idx, int n, int C) {
    if (n <= 0) return;
    gather_kernel<<<GRID((size_t)n * C), NT, 0, impl_of(be)->stream>>>((bf16 *)out, (const bf16 *)inp, idx, n, C);
    LAUNCH_CHECK();
}
static void c_scatter_add_rows(iv2_backend *be, void *dinp, const void *dout, const int32_t *idx, int n, int C) {
    if (n <= 0) return;
    scatter_add_kernel<<<GRID((size_t)n * C), NT, 0, impl_of(be)->stream>>>((bf16 *)dinp, (const bf16 *)dout, idx, n,
                                                                            C);
    LAUNCH_CHECK();
}

/* ---- mean over tokens ---- */
__global__ void mean_rows_kernel(bf16 *out, const bf16 *inp, int B, int N, int C) {
    size_t total = (size_t)B * C;
    FOR_N(i, total) {
        size_t b = i / C, c = i % C;
        float a = 0.f;
        for (int n = 0; n < N; n++) a += ld(inp + (b * N + n) * C + c);
        st(out + i, a / N);
    }
}
__global__ void mean_rows_backward_kernel(bf16 *dinp, const bf16 *dout, int B, int N, int C) {
    size_t total = (size_t)B * N * C;
    FOR_N(i, total) {
        size_t c = i % C, b = i / ((size_t)N * C);
        st(dinp + i, ld(dinp + i) + ld(dout + b * C + c) / N);
    }
}
static void c_mean_rows(iv2_backend *be, void *out, const void *inp, int B, int N, int C) {
    if (B <= 0 || C <= 0) return;
    mean_rows_kernel<<<GRID((size_t)B * C), NT, 0, impl_of(be)->stream>>>((bf16 *)out, (const bf16 *)inp, B, N, C);
    LAUNCH_CHECK();
}
static void c_mean_rows_backward(iv2_backend *be, void *dinp, const void *dout, int B, int N, int C) {
    if (B <= 0 || N <= 0 || C <= 0) return;
    mean_rows_backward_kernel<<<GRID((size_t)B * N * C), NT, 0, impl_of(be)->stream>>>(
        (bf16 *)dinp, (const bf16 *)dout, B, N, C);
    LAUNCH_CHECK();
}

/* ---- patchify: uint8 [T,H,W,3] -> rows [(T/tt)(H/p)(W/p), 3*tt*p*p], columns (c, kt, ky, kx) ---- */
struct norm3 { float mean[3], inv[3]; };
__global__ void patchify_kernel(bf16 *out, const uint8_t *fr, int T, int H, int W, int p, int tt, norm3 nm) {
    int gy = H / p, gx = W / p, cols = 3 * tt * p * p;
    size_t total = (size_t)(T / tt) * gy * gx * cols;
    FOR_N(i, total) {
        size_t row = i / cols;
        int col = (int)(i % cols);
        int kx = col % p, ky = (col / p) % p, kt = (col / (p * p)) % tt, c = col / (p * p * tt);
        int px = (int)(row % gx), py = (int)((row / gx) % gy), t = (int)(row / ((size_t)gx * gy));
        int f = t * tt + kt, y = py * p + ky, x = px * p + kx;
        float v = fr[(((size_t)f * H + y) * W + x) * 3 + c] * (1.f / 255.f);
        st(out + i, (v - nm.mean[c]) * nm.inv[c]);
    }
}
static void c_patchify(iv2_backend *be, void *out, const uint8_t *frames, int T, int H, int W, int p, int tubelet,
                       const float mean[3], const float std[3]) {
    norm3 nm;
    for (int c = 0; c < 3; c++) { nm.mean[c] = mean[c]; nm.inv[c] = 1.f / std[c]; }
    size_t total = (size_t)(T / tubelet) * (H / p) * (W / p) * 3 * tubelet * p * p;
    if (!total) return;
    patchify_kernel<<<GRID(total), NT, 0, impl_of(be)->stream>>>((bf16 *)out, frames, T, H, W, p, tubelet, nm);
    LAUNCH_CHECK();
}

/* ---- cosine loss on unit rows: one block per row ---- */
__global__ void cos_loss_kernel(float *loss, bf16 *dpred, const bf16 *pred, const bf16 *target, int C, float scale) {
    size_t o = (size_t)blockIdx.x * C;
    float s = 0.f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) s += ld(pred + o + c) * ld(target + o + c);
    s = block_sum(s);
    if (loss && threadIdx.x == 0) loss[blockIdx.x] = 2.f - 2.f * s;
    if (dpred)
        for (int c = threadIdx.x; c < C; c += blockDim.x)
            st(dpred + o + c, ld(dpred + o + c) - 2.f * scale * ld(target + o + c));
}
static void c_cos_loss(iv2_backend *be, float *loss_rows, void *dpred, const void *pred, const void *target, int M,
                       int C, float scale) {
    if (M <= 0) return;
    cos_loss_kernel<<<M, 128, 0, impl_of(be)->stream>>>(loss_rows, (bf16 *)dpred, (const bf16 *)pred,
                                                        (const bf16 *)target, C, scale);
    LAUNCH_CHECK();
}

/* ---- sum of squares: block partial sums, one atomic per block ---- */
__global__ void sumsq_kernel(float *acc, const bf16 *x, size_t n) {
    float s = 0.f;
    FOR_N(i, n) { float v = ld(x + i); s += v * v; }
    s = block_sum(s);
    if (threadIdx.x == 0) atomicAdd(acc, s);
}
static void c_sumsq(iv2_backend *be, float *acc, const void *x, size_t n) {
    if (!n) return;
    unsigned g = cdiv(n, NT);
    if (g > 1024) g = 1024;
    sumsq_kernel<<<g, NT, 0, impl_of(be)->stream>>>(acc, (const bf16 *)x, n);
    LAUNCH_CHECK();
}

/* ---- AdamW (PyTorch semantics), fp32 master and moments, bf16 parameters ---- */
__global__ void adamw_kernel(bf16 *param, float *master, const bf16 *grad, float *m, float *v, size_t n, float lr,
                             float b1, float b2, float eps, float wd, float bc1, float bc2, float gs) {
    FOR_N(i, n) {
        float g = ld(grad + i) * gs;
        float mi = b1 * m[i] + (1.f - b1) * g, vi = b2 * v[i] + (1.f - b2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float w = master ? master[i] : ld(param + i);
        w -= lr * ((mi / bc1) / (sqrtf(vi / bc2) + eps) + wd * w);
        if (master) master[i] = w;
        st(param + i, w);
    }
}
static void c_adamw(iv2_backend *be, void *param, float *master, const void *grad, float *m, float *v, size_t n,
                    float lr, float b1, float b2, float eps, float wd, int t, float grad_scale) {
    if (!n) return;
    float bc1 = 1.f - powf(b1, (float)t), bc2 = 1.f - powf(b2, (float)t);
    adamw_kernel<<<GRID(n), NT, 0, impl_of(be)->stream>>>((bf16 *)param, master, (const bf16 *)grad, m, v, n, lr, b1,
                                                          b2, eps, wd, bc1, bc2, grad_scale);
    LAUNCH_CHECK();
}

void cuda_install_elementwise(iv2_backend *be) {
    be->gelu = c_gelu;
    be->gelu_backward = c_gelu_backward;
    be->residual = c_residual;
    be->residual_backward = c_residual_backward;
    be->add_rows = c_add_rows;
    be->add_rows_backward = c_add_rows_backward;
    be->axpy = c_axpy;
    be->gather_rows = c_gather_rows;
    be->scatter_add_rows = c_scatter_add_rows;
    be->mean_rows = c_mean_rows;
    be->mean_rows_backward = c_mean_rows_backward;
    be->patchify = c_patchify;
    be->cos_loss = c_cos_loss;
    be->sumsq = c_sumsq;
    be->adamw = c_adamw;
}
