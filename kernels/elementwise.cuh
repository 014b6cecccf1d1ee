/* elementwise.cuh: the device code of elementwise.cu (GELU, residual + LayerScale, position
 * rows, axpy, gathers, mean over tokens, patchify, the cosine loss, sum of squares, AdamW),
 * forward and backward side by side: grid-stride loops, fp32 arithmetic, 16-byte vectors where
 * the launch checked the alignment. Device code only (see cuda_device.cuh), so
 * tests/emu/test_kernels_emu.cpp runs them on the CPU too. Internal to kernels/. */
#ifndef IV2_ELEMENTWISE_CUH
#define IV2_ELEMENTWISE_CUH

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
/* dinp += dout * gelu'(inp), 8 elements per thread (16-byte access, as gelu8_kernel) */
__global__ void gelu_backward8_kernel(bf16 *dinp, const bf16 *dout, const bf16 *inp, size_t n8, int kind) {
    FOR_N(i, n8) {
        float d[8], g[8], x[8];
        ld8(dinp + 8 * i, d);
        ld8(dout + 8 * i, g);
        ld8(inp + 8 * i, x);
#pragma unroll
        for (int k = 0; k < 8; k++) d[k] += g[k] * gelu_grad(x[k], kind);
        st8(dinp + 8 * i, d);
    }
}
/* x *= gelu_tanh'(pre): the unfused end of matmul_backward_gelu (matmul.cu), scalar and 8 wide */
__global__ void gelu_grad_scale_kernel(bf16 *x, const bf16 *pre, size_t n) {
    FOR_N(i, n) st(x + i, ld(x + i) * gelu_grad(ld(pre + i), IV2_GELU_TANH));
}
__global__ void gelu_grad_scale8_kernel(bf16 *x, const bf16 *pre, size_t n8) {
    FOR_N(i, n8) {
        float v[8], p[8];
        ld8(x + 8 * i, v);
        ld8(pre + 8 * i, p);
#pragma unroll
        for (int k = 0; k < 8; k++) v[k] *= gelu_grad(p[k], IV2_GELU_TANH);
        st8(x + 8 * i, v);
    }
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
/* the same, 8 channels per thread (C % 8 == 0): a warp reads 512 contiguous bytes of a row */
__global__ void residual_backward8_kernel(bf16 *dy, float *acc, const bf16 *dx, const bf16 *y, const bf16 *gamma,
                                          sarg s, int has_s, int N, int C8, int nb, int rows_per) {
    int c8 = blockIdx.x * blockDim.x + threadIdx.x;
    if (c8 >= C8) return;
    int total = nb * N, r0 = blockIdx.y * rows_per, r1 = min(total, r0 + rows_per);
    float g[8], a[8];
#pragma unroll
    for (int k = 0; k < 8; k++) { g[k] = 1.f; a[k] = 0.f; }
    if (gamma) ld8(gamma + 8 * c8, g);
    for (int r = r0; r < r1; r++) {
        float sc = has_s ? s.s[r / N] : 1.f;
        size_t i = (size_t)r * C8 * 8 + 8 * c8;
        float d[8], v[8];
        ld8(dx + i, d);
        if (dy) {
            ld8(dy + i, v);
#pragma unroll
            for (int k = 0; k < 8; k++) v[k] += sc * g[k] * d[k];
            st8(dy + i, v);
        }
        if (acc && y) {
            ld8(y + i, v);
#pragma unroll
            for (int k = 0; k < 8; k++) a[k] += sc * d[k] * v[k];
        }
    }
    if (acc)
#pragma unroll
        for (int k = 0; k < 8; k++) atomicAdd(acc + 8 * c8 + k, a[k]);
}
/* dst += src (an fp32 scratch of sums into a bf16 gradient) */
__global__ void add_f32_kernel(bf16 *dst, const float *src, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) st(dst + i, ld(dst + i) + src[i]);
}
/* ---- column sums (the bias gradients): dbias[j] += sum_i dout[i, j] ----
 * Columns per thread, rows split over blockIdx.y, fp32 atomics into scratch, then add_f32_kernel
 * adds the sums into the bf16 gradient. */
__global__ void colsum_kernel(float *acc, const bf16 *dout, int M, int N, int rows_per) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= N) return;
    int r0 = blockIdx.y * rows_per, r1 = min(M, r0 + rows_per);
    float s = 0.f;
    for (int i = r0; i < r1; i++) s += ld(dout + (size_t)i * N + j);
    atomicAdd(acc + j, s);
}
/* 8 columns per thread (N % 8 == 0, 16-byte rows) */
__global__ void colsum8_kernel(float *acc, const bf16 *dout, int M, int N8, int rows_per) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= N8) return;
    int r0 = blockIdx.y * rows_per, r1 = min(M, r0 + rows_per);
    float s[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (int i = r0; i < r1; i++) {
        float v[8];
        ld8(dout + ((size_t)i * N8 + j) * 8, v);
#pragma unroll
        for (int k = 0; k < 8; k++) s[k] += v[k];
    }
#pragma unroll
    for (int k = 0; k < 8; k++) atomicAdd(acc + 8 * j + k, s[k]);
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
/* ---- sum of squares: block partial sums, one atomic per block ---- */
__global__ void sumsq_kernel(float *acc, const bf16 *x, size_t n) {
    float s = 0.f;
    FOR_N(i, n) { float v = ld(x + i); s += v * v; }
    s = block_sum(s);
    if (threadIdx.x == 0) atomicAdd(acc, s);
}
/* ---- AdamW (PyTorch semantics), fp32 master and moments, bf16 parameters ---- */
/* one element of AdamW: the arithmetic adamw_kernel and adamw_chunks_kernel share */
__device__ __forceinline__ void adamw_elem(bf16 *param, float *master, const bf16 *grad, float *m, float *v, size_t i,
                                           float lr, float b1, float b2, float eps, float wd, float bc1, float bc2,
                                           float gs) {
    float g = ld(grad + i) * gs;
    float mi = b1 * m[i] + (1.f - b1) * g, vi = b2 * v[i] + (1.f - b2) * g * g;
    m[i] = mi;
    v[i] = vi;
    float w = master ? master[i] : ld(param + i);
    w -= lr * ((mi / bc1) / (sqrtf(vi / bc2) + eps) + wd * w);
    if (master) master[i] = w;
    st(param + i, w);
}
__global__ void adamw_kernel(bf16 *param, float *master, const bf16 *grad, float *m, float *v, size_t n, float lr,
                             float b1, float b2, float eps, float wd, float bc1, float bc2, float gs) {
    FOR_N(i, n) adamw_elem(param, master, grad, m, v, i, lr, b1, b2, eps, wd, bc1, bc2, gs);
}
/* every tensor of a buffer in one launch: block b takes piece b of the chunk table */
__global__ void adamw_chunks_kernel(bf16 *param, float *master, const bf16 *grad, float *m, float *v,
                                    const iv2_adamw_chunk *chunks, float lr, float b1, float b2, float eps, float wd,
                                    float bc1, float bc2, float gs) {
    iv2_adamw_chunk c = chunks[blockIdx.x];
    float w = c.no_wd ? 0.f : wd;
    for (uint32_t i = threadIdx.x; i < c.n; i += blockDim.x)
        adamw_elem(param, master, grad, m, v, (size_t)c.off + i, lr, b1, b2, eps, w, bc1, bc2, gs);
}

#endif
