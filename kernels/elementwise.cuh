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
__global__ void gelu_backward_kernel(bf16 *dinp, const bf16 *dout, const bf16 *inp, size_t n, int kind, int add) {
    FOR_N(i, n) st(dinp + i, (add ? ld(dinp + i) : 0.f) + ld(dout + i) * gelu_grad(ld(inp + i), kind));
}
/* dinp (+)= dout * gelu'(inp), 8 elements per thread (16-byte access, as gelu8_kernel) */
__global__ void gelu_backward8_kernel(bf16 *dinp, const bf16 *dout, const bf16 *inp, size_t n8, int kind, int add) {
    FOR_N(i, n8) {
        float d[8] = {}, g[8], x[8];
        if (add) ld8(dinp + 8 * i, d);
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
/* the per-sample scales: sarg (cuda_device.cuh) */
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
/* dy (+)= s*gamma*dx; dgamma[c] += sum s*dx*y (into cs, when cs.acc): columns per thread, rows
 * split over blockIdx.y */
__global__ void residual_backward_kernel(bf16 *dy, colsum_out cs, const bf16 *dx, const bf16 *y, const bf16 *gamma,
                                         sarg s, int has_s, int N, int C, int nb, int rows_per, int add) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c < C) {
        int total = nb * N, r0 = blockIdx.y * rows_per, r1 = min(total, r0 + rows_per);
        float g = gamma ? ld(gamma + c) : 1.f, a = 0.f;
        for (int r = r0; r < r1; r++) {
            float sc = has_s ? s.s[r / N] : 1.f;
            size_t i = (size_t)r * C + c;
            float d = ld(dx + i);
            if (dy) st(dy + i, (add ? ld(dy + i) : 0.f) + sc * g * d);
            a += sc * d * (y ? ld(y + i) : 0.f);
        }
        if (cs.acc) atomicAdd(cs.acc + c, a);
    }
    if (cs.acc) colsum_finish(cs);
}
/* the same, 8 channels per lane (C % 8 == 0): a warp reads 512 contiguous bytes of a row, the
 * CS_WARPS warps of a block take its rows in turn, RB rows' loads issued before any store (the dy
 * stores keep the compiler from hoisting the next row's loads: dy may alias dx or y), and
 * block_colsum_add sums dgamma (cuda_device.cuh). Two warps per block, a row per round trip to
 * memory: 122 us for the student's 13344 x 1408 on an H100 (2026-11-27), a third of the
 * bandwidth; RB rows per round trip alone: 88 us. */
/* one row's 8 channels from its loaded vectors dxv, dyv, yv: dy (at dyp, NULL: none) (+)=
 * s gamma dx (add: dyv holds dy); a += s dx y when acc_y */
__device__ __forceinline__ void residual_backward8_row(bf16 *dyp, float *a, const float *g, float sc, uint4 dxv,
                                                       uint4 dyv, uint4 yv, bool acc_y, bool add) {
    float d[8], v[8] = {};
    unpack8(dxv, d);
    if (dyp) {
        if (add) unpack8(dyv, v);
#pragma unroll
        for (int k = 0; k < 8; k++) v[k] += sc * g[k] * d[k];
        st8(dyp, v);
    }
    if (acc_y) {
        unpack8(yv, v);
#pragma unroll
        for (int k = 0; k < 8; k++) a[k] += sc * d[k] * v[k];
    }
}
__global__ void __launch_bounds__(CS_THREADS) residual_backward8_kernel(bf16 *dy, colsum_out cs, const bf16 *dx,
                                                                      const bf16 *y, const bf16 *gamma, sarg s,
                                                                      int has_s, int N, int C8, int nb, int rows_per,
                                                                      int add) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, c8 = blockIdx.x * 32 + lane;
    int total = nb * N, r0 = blockIdx.y * rows_per, r1 = min(total, r0 + rows_per);
    bool acc_y = cs.acc && y;
    float g[8], a[8];
#pragma unroll
    for (int k = 0; k < 8; k++) { g[k] = 1.f; a[k] = 0.f; }
    if (c8 < C8) {
        if (gamma) ld8(gamma + 8 * c8, g);
        for (int r = r0 + w; r < r1; r += RB * CS_WARPS) {
            uint4 dxv[RB], dyv[RB], yv[RB];   /* dx, dy (to add to) and y of RB rows */
#pragma unroll
            for (int u = 0; u < RB; u++) {
                int ru = r + u * CS_WARPS;
                if (ru < r1) {
                    size_t i = (size_t)ru * C8 * 8 + 8 * c8;
                    dxv[u] = ldv(dx + i);
                    if (dy && add) dyv[u] = ldv(dy + i);
                    if (acc_y) yv[u] = ldv(y + i);
                }
            }
#pragma unroll
            for (int u = 0; u < RB; u++) {
                int ru = r + u * CS_WARPS;
                if (ru < r1) {
                    size_t i = (size_t)ru * C8 * 8 + 8 * c8;
                    residual_backward8_row(dy ? dy + i : NULL, a, g, has_s ? s.s[ru / N] : 1.f, dxv[u], dyv[u],
                                           yv[u], acc_y, add);
                }
            }
        }
    }
    if (cs.acc) {
        block_colsum_add(cs.acc, a, C8);
        colsum_finish(cs);
    }
}
/* ---- column sums (the bias gradients): dbias[j] += sum_i dout[i, j] ----
 * Columns per thread, rows split over blockIdx.y, fp32 atomics into cs.acc, whose last block adds
 * the sums into the bf16 gradient (colsum_out, cuda_device.cuh). */
__global__ void colsum_kernel(colsum_out cs, const bf16 *dout, int M, int N, int rows_per) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j < N) {
        int r0 = blockIdx.y * rows_per, r1 = min(M, r0 + rows_per);
        float s = 0.f;
        for (int i = r0; i < r1; i++) s += ld(dout + (size_t)i * N + j);
        atomicAdd(cs.acc + j, s);
    }
    colsum_finish(cs);
}
/* 8 columns per lane (N % 8 == 0, 16-byte rows), the block's warps over the rows, RB rows'
 * loads in flight per warp, one atomic per column per block (block_colsum_add) */
__global__ void __launch_bounds__(CS_THREADS) colsum8_kernel(colsum_out cs, const bf16 *dout, int M, int N8,
                                                           int rows_per) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, j = blockIdx.x * 32 + lane;
    int r0 = blockIdx.y * rows_per, r1 = min(M, r0 + rows_per);
    float s[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    if (j < N8)
        for (int i = r0 + w; i < r1; i += RB * CS_WARPS) {
            uint4 v[RB];
#pragma unroll
            for (int u = 0; u < RB; u++)
                if (i + u * CS_WARPS < r1) v[u] = ldv(dout + ((size_t)(i + u * CS_WARPS) * N8 + j) * 8);
#pragma unroll
            for (int u = 0; u < RB; u++)
                if (i + u * CS_WARPS < r1) {
                    float f[8];
                    unpack8(v[u], f);
#pragma unroll
                    for (int k = 0; k < 8; k++) s[k] += f[k];
                }
        }
    block_colsum_add(cs.acc, s, N8);
    colsum_finish(cs);
}
/* ---- rows of a table added at indices (the position rows of the visible tokens) ---- */
__global__ void add_table_rows8_kernel(bf16 *x, const bf16 *table, const int32_t *rows, int n, int n_table, int C8) {
    size_t total = (size_t)n * C8;
    FOR_N(e, total) {
        size_t i = e / C8;
        int c8 = (int)(e % C8);
        float a[8], t[8];
        ld8(x + 8 * e, a);
        ld8(table + ((size_t)(rows[i] % n_table) * C8 + c8) * 8, t);
#pragma unroll
        for (int k = 0; k < 8; k++) a[k] += t[k];
        st8(x + 8 * e, a);
    }
}
__global__ void add_table_rows_kernel(bf16 *x, const bf16 *table, const int32_t *rows, int n, int n_table, int C) {
    size_t total = (size_t)n * C;
    FOR_N(e, total) {
        size_t i = e / C;
        st(x + e, ld(x + e) + ld(table + (size_t)(rows[i] % n_table) * C + e % C));
    }
}
/* the backward's sums in fp32 (acc [n_table][C], zero first): a table row takes one row of each
 * sample, so bf16 atomics would round as often as there are samples */
__global__ void add_table_rows_backward_kernel(float *acc, const bf16 *dx, const int32_t *rows, int n, int n_table,
                                               int C) {
    size_t total = (size_t)n * C;
    FOR_N(e, total) {
        size_t i = e / C;
        atomicAdd(acc + (size_t)(rows[i] % n_table) * C + e % C, ld(dx + e));
    }
}
/* the same on 16-byte vectors of dx (C % 8 == 0): two 4-wide fp32 atomics a vector on sm_90, where
 * the scalar kernel's one atomic and one 64-bit division an element took 76 us for 13344 x 1408
 * (H100, 2026-11-27; this one 59 us) */
__device__ __forceinline__ void add4_f32(float *p, float a, float b, float c, float d) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    atomicAdd((float4 *)p, make_float4(a, b, c, d));
#else
    atomicAdd(p, a); atomicAdd(p + 1, b); atomicAdd(p + 2, c); atomicAdd(p + 3, d);
#endif
}
__global__ void add_table_rows_backward8_kernel(float *acc, const bf16 *dx, const int32_t *rows, int n, int n_table,
                                                int C8) {
    FOR_N(e, (size_t)n * C8) {
        int i = (int)(e / C8), c8 = (int)(e - (size_t)i * C8);
        float v[8];
        unpack8(ldv(dx + 8 * e), v);
        float *p = acc + ((size_t)(rows[i] % n_table) * C8 + c8) * 8;
        add4_f32(p, v[0], v[1], v[2], v[3]);
        add4_f32(p + 4, v[4], v[5], v[6], v[7]);
    }
}
__global__ void add_f32_kernel(bf16 *dst, const float *src, size_t n) {
    FOR_N(i, n) st(dst + i, ld(dst + i) + src[i]);
}
/* ---- rows to and from a padded pitch (matmul.cu's weight gradient of unaligned rows) ---- */
/* dst[r][c] = src[r][c] for c < cols, 0 for cols <= c < pitch: rows of cols elements at pitch */
__global__ void pad_cols_kernel(bf16 *dst, const bf16 *src, int rows, int cols, int pitch) {
    FOR_N(i, (size_t)rows * pitch) {
        size_t r = i / pitch;
        int c = (int)(i - r * pitch);
        dst[i] = c < cols ? src[r * cols + c] : __float2bfloat16(0.f);
    }
}
/* dst[r][c] += src[r][c] for c < cols, src at pitch: the padded columns left out */
__global__ void add_cols_kernel(bf16 *dst, const bf16 *src, int rows, int cols, int pitch) {
    FOR_N(i, (size_t)rows * cols) {
        size_t r = i / cols;
        int c = (int)(i - r * cols);
        st(dst + i, ld(dst + i) + ld(src + r * pitch + c));
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
/* the same two on 16-byte vectors (C % 8 == 0, rows 16-byte aligned): one index division per 8
 * elements, and bf16x2 atomics (the scalar scatter: 616 us for the student's 32 x 2048 patch rows
 * of 1408 on an H100, 2026-11-27) */
__global__ void gather8_kernel(bf16 *out, const bf16 *inp, const int32_t *idx, int n, int C8) {
    size_t total = (size_t)n * C8;
    FOR_N(i, total) {
        size_t r = i / C8, c = i - r * C8;
        *(uint4 *)(out + 8 * i) = ldv(inp + ((size_t)idx[r] * C8 + c) * 8);
    }
}
__global__ void scatter_add8_kernel(bf16 *dinp, const bf16 *dout, const int32_t *idx, int n, int C8) {
    size_t total = (size_t)n * C8;
    FOR_N(i, total) {
        size_t r = i / C8, c = i - r * C8;
        uint4 v = ldv(dout + 8 * i);
        const __nv_bfloat162 *h = (const __nv_bfloat162 *)&v;
        __nv_bfloat162 *d = (__nv_bfloat162 *)(dinp + ((size_t)idx[r] * C8 + c) * 8);
#pragma unroll
        for (int k = 0; k < 4; k++) atomicAdd(d + k, h[k]);
    }
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
/* the same two on 16-byte vectors (C % 8 == 0, aligned). The mean: a block of 256 threads per
 * sample and 32 vectors of its columns, 8 rows of 32 lanes each summing every 8th token, the
 * 8 partial sums then added through shared memory (MEAN8_SMEM bytes); the scalar kernel, a
 * thread per column walking all N tokens, ran 45 K threads for the student's pooling head:
 * 166 us on an H100 (2026-11-27), its backward 82 us. */
#define MEAN8_SMEM (8 * 32 * 8 * sizeof(float))
__global__ void mean_rows8_kernel(bf16 *out, const bf16 *inp, int B, int N, int C8) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    float *part = (float *)smem_raw;   /* [8 rows of lanes][32 lanes][8] */
    int x = threadIdx.x & 31, y = threadIdx.x >> 5, b = blockIdx.y, c8 = blockIdx.x * 32 + x;
    float a[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    if (c8 < C8)
        for (int n = y; n < N; n += 8) {
            float v[8];
            ld8(inp + (((size_t)b * N + n) * C8 + c8) * 8, v);
#pragma unroll
            for (int k = 0; k < 8; k++) a[k] += v[k];
        }
#pragma unroll
    for (int k = 0; k < 8; k++) part[(y * 32 + x) * 8 + k] = a[k];
    __syncthreads();
    if (y == 0 && c8 < C8) {
        for (int r = 1; r < 8; r++)
#pragma unroll
            for (int k = 0; k < 8; k++) a[k] += part[(r * 32 + x) * 8 + k];
#pragma unroll
        for (int k = 0; k < 8; k++) a[k] /= N;
        st8(out + ((size_t)b * C8 + c8) * 8, a);
    }
}
__global__ void mean_rows_backward8_kernel(bf16 *dinp, const bf16 *dout, int B, int N, int C8) {
    FOR_N(i, (size_t)B * N * C8) {
        size_t c8 = i % C8, b = i / ((size_t)N * C8);
        float u[8], g[8];
        ld8(dinp + 8 * i, u);
        ld8(dout + (b * C8 + c8) * 8, g);
#pragma unroll
        for (int k = 0; k < 8; k++) u[k] += g[k] / N;
        st8(dinp + 8 * i, u);
    }
}
/* ---- patchify: uint8 [T,H,W,3] -> rows [(T/tt)(H/p)(W/p), 3*tt*p*p], columns (c, kt, ky, kx) ---- */
struct norm3 { float mean[3], inv[3]; };
/* rows (NULL: every patch): output row i is token rows[i] % ntok of sample rows[i] / ntok, whose
 * first cls tokens are class tokens (a zero row) and the rest its patches (compute.h) */
__global__ void patchify_kernel(bf16 *out, const uint8_t *fr, int T, int H, int W, int p, int tt, norm3 nm,
                                const int32_t *rows, int n, int ntok, int cls) {
    int gy = H / p, gx = W / p, cols = 3 * tt * p * p;
    size_t total = rows ? (size_t)n * cols : (size_t)(T / tt) * gy * gx * cols;
    FOR_N(i, total) {
        size_t row = i / cols;
        int col = (int)(i % cols);
        if (rows) {
            int s = rows[row] / ntok, tok = rows[row] % ntok;
            if (tok < cls) { st(out + i, 0.f); continue; }
            row = (size_t)s * (ntok - cls) + tok - cls;
        }
        int kx = col % p, ky = (col / p) % p, kt = (col / (p * p)) % tt, c = col / (p * p * tt);
        int px = (int)(row % gx), py = (int)((row / gx) % gy), t = (int)(row / ((size_t)gx * gy));
        int f = t * tt + kt, y = py * p + ky, x = px * p + kx;
        float v = fr[(((size_t)f * H + y) * W + x) * 3 + c] * (1.f / 255.f);
        st(out + i, (v - nm.mean[c]) * nm.inv[c]);
    }
}
/* ---- the heads' loss from rows not yet unit (l2_cos_loss): per row, the sums xx = <x, x> and
 * xt = <x, t>, then n = sqrt(xx), c = xt / n, loss = 2 - 2c, dinp = -2 scale / n (t - c x / n).
 * l2_cos_grad8 writes 8 columns of dinp. ---- */
__device__ __forceinline__ void l2_cos_grad8(bf16 *d, const float *x, const float *t, float n, float c, float scale) {
    float o[8], k = -2.f * scale / n;
#pragma unroll
    for (int j = 0; j < 8; j++) o[j] = k * (t[j] - c * x[j] / n);
    st8(d, o);
}
/* one block per row (any C) */
__global__ void l2_cos_loss_kernel(float *loss, bf16 *dinp, const bf16 *inp, const bf16 *target, int C, float scale) {
    size_t o = (size_t)blockIdx.x * C;
    float xx = 0.f, xt = 0.f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float x = ld(inp + o + c);
        xx += x * x;
        xt += x * ld(target + o + c);
    }
    xx = block_sum(xx);
    xt = block_sum(xt);
    float n = sqrtf(xx), cs = xt / n;
    if (loss && threadIdx.x == 0) loss[blockIdx.x] = 2.f - 2.f * cs;
    if (dinp)
        for (int c = threadIdx.x; c < C; c += blockDim.x)
            st(dinp + o + c, -2.f * scale / n * (ld(target + o + c) - cs * ld(inp + o + c) / n));
}
/* a warp per row on 16-byte vectors (C % 8 == 0, 16-byte aligned rows), RB vectors a lane per
 * round trip; the second pass re-reads the row (from L1 mostly), as l2norm_backward8_kernel */
__global__ void l2_cos_loss8_kernel(float *loss, bf16 *dinp, const bf16 *inp, const bf16 *target, int M, int C8,
                                    float scale) {
    int lane = threadIdx.x & 31, row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= M) return;
    size_t o = (size_t)row * C8 * 8;
    float xx = 0.f, xt = 0.f;
    for_lane_vecs(inp + o, target + o, NULL, C8, lane, [&](int, uint4 xv, uint4 tv, uint4) {
        float x[8], t[8];
        unpack8(xv, x);
        unpack8(tv, t);
#pragma unroll
        for (int k = 0; k < 8; k++) {
            xx += x[k] * x[k];
            xt += x[k] * t[k];
        }
    });
    xx = warp_sum(xx);
    xt = warp_sum(xt);
    float n = sqrtf(xx), cs = xt / n;
    if (loss && lane == 0) loss[row] = 2.f - 2.f * cs;
    if (!dinp) return;
    for_lane_vecs(inp + o, target + o, NULL, C8, lane, [&](int c8, uint4 xv, uint4 tv, uint4) {
        float x[8], t[8];
        unpack8(xv, x);
        unpack8(tv, t);
        l2_cos_grad8(dinp + o + 8 * c8, x, t, n, cs, scale);
    });
}
/* ---- sum of squares: block partial sums, one atomic per block ---- */
__global__ void sumsq_kernel(float *acc, const bf16 *x, size_t n) {
    float s = 0.f;
    FOR_N(i, n) { float v = ld(x + i); s += v * v; }
    s = block_sum(s);
    if (threadIdx.x == 0) atomicAdd(acc, s);
}
/* the same on 16-byte vectors (x 16-byte aligned; the n % 8 tail by block 0): the gradient norm
 * reads every gradient once a step, 2 GB for the 1B student. H100, 2026-11-27, the depth-2 whole
 * step's two calls: 88 + 88 us with the scalar kernel's 2-byte loads, 43 + 35 us here. */
__global__ void sumsq8_kernel(float *acc, const bf16 *x, size_t n) {
    size_t n8 = n / 8;
    float s = 0.f;
    FOR_N(i, n8) {
        float v[8];
        ld8(x + 8 * i, v);
#pragma unroll
        for (int k = 0; k < 8; k++) s += v[k] * v[k];
    }
    if (blockIdx.x == 0)
        for (size_t i = 8 * n8 + threadIdx.x; i < n; i += blockDim.x) { float v = ld(x + i); s += v * v; }
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
/* adamw_elem on the 4 elements i..i+3 (i % 4 == 0, every array aligned for it): 16-byte loads
 * and stores of master, m and v, 8-byte ones of the bf16 gradient and parameters; element for
 * element the same arithmetic. Gradient, master and moments are read and written once a step:
 * streaming accesses (evict first), so that beside the next forward (the side stream) they
 * leave the L2 to its GEMMs; the bf16 parameters, which that forward reads next, are stored
 * plainly. */
__device__ __forceinline__ void adamw_elem4(bf16 *param, float *master, const bf16 *grad, float *m, float *v, size_t i,
                                            float lr, float b1, float b2, float eps, float wd, float bc1, float bc2,
                                            float gs) {
    float4 mv = __ldcs((const float4 *)(m + i)), vv = __ldcs((const float4 *)(v + i)), wv;
    uint2 gr = __ldcs((const uint2 *)(grad + i)), pr;
    if (master) wv = __ldcs((const float4 *)(master + i));
    else {
        pr = *(const uint2 *)(param + i);
        float2 a = __bfloat1622float2(*(__nv_bfloat162 *)&pr.x), b = __bfloat1622float2(*(__nv_bfloat162 *)&pr.y);
        wv = make_float4(a.x, a.y, b.x, b.y);
    }
    float2 g01 = __bfloat1622float2(*(__nv_bfloat162 *)&gr.x), g23 = __bfloat1622float2(*(__nv_bfloat162 *)&gr.y);
    float g[4] = {g01.x, g01.y, g23.x, g23.y}, mi[4] = {mv.x, mv.y, mv.z, mv.w}, vi[4] = {vv.x, vv.y, vv.z, vv.w};
    float w[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
    for (int k = 0; k < 4; k++) {
        float gk = g[k] * gs;
        mi[k] = b1 * mi[k] + (1.f - b1) * gk;
        vi[k] = b2 * vi[k] + (1.f - b2) * gk * gk;
        w[k] -= lr * ((mi[k] / bc1) / (sqrtf(vi[k] / bc2) + eps) + wd * w[k]);
    }
    __stcs((float4 *)(m + i), make_float4(mi[0], mi[1], mi[2], mi[3]));
    __stcs((float4 *)(v + i), make_float4(vi[0], vi[1], vi[2], vi[3]));
    if (master) __stcs((float4 *)(master + i), make_float4(w[0], w[1], w[2], w[3]));
    __nv_bfloat162 lo = __floats2bfloat162_rn(w[0], w[1]), hi = __floats2bfloat162_rn(w[2], w[3]);
    pr.x = *(uint32_t *)&lo;
    pr.y = *(uint32_t *)&hi;
    *(uint2 *)(param + i) = pr;
}
/* every tensor of a buffer in one launch: block b takes piece b of the chunk table; VEC (the
 * launch checked the base pointers' alignment): 4 elements a thread per step where the piece
 * starts on a multiple of 4, the rest one by one. One element a step ran at two thirds of the
 * bandwidth (H100, 2026-11-27). */
__global__ void adamw_chunks_kernel(bf16 *param, float *master, const bf16 *grad, float *m, float *v,
                                    const iv2_adamw_chunk *chunks, float lr, float b1, float b2, float eps, float wd,
                                    float bc1, float bc2, float gs, int vec) {
    iv2_adamw_chunk c = chunks[blockIdx.x];
    float w = c.no_wd ? 0.f : wd;
    uint32_t i0 = 0;
    if (vec && c.off % 4 == 0) {
        i0 = c.n / 4 * 4;
        for (uint32_t i = 4 * threadIdx.x; i < i0; i += 4 * blockDim.x)
            adamw_elem4(param, master, grad, m, v, (size_t)c.off + i, lr, b1, b2, eps, w, bc1, bc2, gs);
    }
    for (uint32_t i = i0 + threadIdx.x; i < c.n; i += blockDim.x)
        adamw_elem(param, master, grad, m, v, (size_t)c.off + i, lr, b1, b2, eps, w, bc1, bc2, gs);
}

#endif
