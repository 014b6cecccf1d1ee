/* flash_attention.cuh: the device code of the attention kernels on tensor cores: the
 * FlashAttention-2 style forward (flash_fwd2_kernel) and the fused backward
 * (attn_bwd_dq_kernel, attn_bwd_dkv_kernel), forward and backward side by side. Host launch
 * code is in attention.cu; the forward's launch configurations (fwd2_choose) are here, for both
 * it and the emulator test. This file uses only bf16 types, math, threadIdx/blockIdx, strcmp and
 * the wrappers of mma.cuh, so tests/emu/test_attention_emu.cpp compiles it for the host against
 * an emulation of those wrappers and checks every kernel on the CPU, where no GPU is at hand.
 * Internal to kernels/. */
#ifndef IV2_FLASH_ATTENTION_CUH
#define IV2_FLASH_ATTENTION_CUH

#define BN 64                          /* keys (forward, dq) or queries (dkv) per tile */
#define LOG2E 1.4426950408889634f

/* dynamic shared memory of each kernel, for the launches here and in the emulator */
template <int DP, int WARPS, int RT> constexpr size_t fwd2_smem_bytes() {
    return (size_t)(WARPS * RT * 16 + 4 * BN) * (DP + 8) * 2;
}

/* ---- the forward's launch configurations (host side; attention.cu and the emulator test) ----
 * WARPS x RT: warps per block x 16-row query tiles per warp. The default is 4x2 (8x1 / 8x2 at
 * DP 96, fwd2_choose), and 4x1 for DP > 128 (registers) and Nq <= 16 (the pooling head). IV2_ATTN_FWD selects another one for
 * the calls with DP <= 128 and Nq > 16, for the sweep of tests/gpu/bench_kernels.c. TN > 0:
 * the Hopper kernels (wgmma) with WARPS / 4 warpgroups of 64 query rows (RT = 1: 16 rows per
 * warp) and K/V tiles of TN keys, flash_fwd3_kernel or, PIPE, flash_fwd3p_kernel; only in
 * builds for sm_90a, on compute capability 9.0 (attention.cu checks). */
struct fwd2_cfg { int warps, rt, tn, pipe; };   /* {0, 0, 0, 0}: the default; {-1, 0, 0, 0}: auto */
static const struct { const char *name; fwd2_cfg cfg; } fwd2_named[] = {
    {"4x2", {4, 2, 0, 0}},    {"4x1", {4, 1, 0, 0}},     {"8x1", {8, 1, 0, 0}},    {"8x2", {8, 2, 0, 0}},
    {"auto", {-1, 0, 0, 0}},  {"wg64", {8, 1, 64, 0}},   {"wg128", {8, 1, 128, 0}}, {"wg64p", {8, 1, 64, 1}},
    {"wg128p", {8, 1, 128, 1}}};
static const int fwd2_nmodes = sizeof fwd2_named / sizeof fwd2_named[0];

/* blocks per SM each instantiation is compiled for (__launch_bounds__' second argument caps the
 * registers at 64K / (blocks x threads)). 4 warps: 2 (255 registers). 8 warps x 1 tile at
 * DP <= 96: 2 (128 registers, no spills; 16 warps per SM). The other 8-warp kernels need more
 * (8x1 at DP 128: 167; 8x2: 168-255; ptxas spills at 128) and run one block per SM: 8 warps
 * per SM, as the default's two blocks of 4. */
template <int DP, int WARPS, int RT> constexpr int fwd2_min_blocks() {
    return WARPS == 4 || (RT == 1 && DP <= 96) ? 2 : 1;
}

static inline int fwd2_rows(fwd2_cfg c) { return c.warps * c.rt * 16; }   /* query rows per block */

/* mode from a value of IV2_ATTN_FWD; false for a name not in fwd2_named */
static inline bool fwd2_parse(const char *s, fwd2_cfg *mode) {
    for (int i = 0; i < fwd2_nmodes; i++)
        if (strcmp(s, fwd2_named[i].name) == 0) { *mode = fwd2_named[i].cfg; return true; }
    return false;
}

/* whether the kernel of configuration c is instantiated for DP: 4x1 everywhere, 4x2 and 8x1 up
 * to DP 128, 8x2 up to DP 96 (at DP 128 it needs 136 KiB of shared memory and 255 registers,
 * and of InternViT's 257 queries it would fill 2 blocks of 256 rows: left out); wgmma up to
 * DP 128 */
static inline bool fwd2_built(int DP, fwd2_cfg c) {
    if (c.tn > 0) return c.warps == 8 && c.rt == 1 && (c.tn == 64 || c.tn == 128) && DP <= 128;
    if (c.warps == 4 && c.rt == 1) return true;
    if (c.warps == 8 && c.rt == 2) return DP <= 96;
    return (c.warps == 4 && c.rt == 2) || (c.warps == 8 && c.rt == 1) ? DP <= 128 : false;
}

/* the configuration a call with Nq queries at padding DP runs under mode. auto: 4x2 or 4x1,
 * whichever leaves fewer padded query rows in the last block (a tie: 4x2, which loads each K/V
 * tile once for twice the rows); 257 queries: 4x1 (5 blocks of 64, 80 % of the rows used,
 * against 67 % in 3 blocks of 128); 417: 4x1 (93 % / 81 %); 2048: 4x2. The default: 4x2, but
 * at DP 96 (head dim 88: the student, VideoMAE) 8x1 up to 512 queries and 8x2 beyond, by
 * bench_kernels' sweep on an H100 (2026-11-27, two runs; the outputs bit for bit the same):
 * 32 x 417 queries 8x1 1.04-1.05x 4x2, 2048 queries 8x2 1.01-1.03x; at DP 64 and 128 none beat
 * 4x2 everywhere. */
static inline fwd2_cfg fwd2_choose(fwd2_cfg mode, int DP, int Nq) {
    if (DP > 128 || Nq <= 16) return {4, 1, 0, 0};
    if (mode.warps > 0) return mode;
    if (mode.warps < 0) {
        int pad64 = (Nq + 63) / 64 * 64 - Nq, pad128 = (Nq + 127) / 128 * 128 - Nq;
        return pad128 <= pad64 ? fwd2_cfg{4, 2, 0, 0} : fwd2_cfg{4, 1, 0, 0};
    }
    if (DP == 96) return Nq <= 512 ? fwd2_cfg{8, 1, 0, 0} : fwd2_cfg{8, 2, 0, 0};
    return {4, 2, 0, 0};
}

/* ---- the pipelined kernel (16-byte aligned rows, D % 8 == 0: every model's case) ----
 * WARPS warps x 16 query rows per block; K/V tiles of BN keys double-buffered in shared memory
 * with cp.async (the next tile loads while this one is used), operands fetched with ldmatrix
 * (.trans for V, so P @ V needs no transposed copy). Rows past N and dims past D are filled
 * with zeros by cp.async's src-size 0. */

/* row pitch of a staged tile, in elements: rows padded by 8 for ldmatrix (no bank conflicts),
 * or CM: wgmma's core-matrix layout, unpadded (cm_offset) */
template <int DP, bool CM> __host__ __device__ constexpr int tile_pitch() { return CM ? DP : DP + 8; }

/* element (r, c) of a [rows][DP] tile in wgmma's canonical no-swizzle K-major layout: 8 x 8
 * "core matrices" of 128 contiguous bytes (8 rows of 16 bytes), the DP / 8 of one 8-row group
 * side by side (LBO = 128 bytes between neighbours along c), groups DP * 16 bytes apart (SBO) */
template <int DP> __device__ __forceinline__ int cm_offset(int r, int c) {
    return (r >> 3) * (DP * 8) + (c >> 3) * 64 + (r & 7) * 8 + (c & 7);
}

/* rows [r0, r0+rows) of a head view into smem with cp.async, zero-filled: [rows][DP+8], or in
 * the core-matrix layout (CM; rows a multiple of 8), where 8 neighbouring threads fill one core
 * matrix (8 rows of 16 bytes: contiguous in shared memory, no bank conflicts) */
template <int DP, bool CM = false>
__device__ __forceinline__ void tile_async(bf16 *s, const bf16 *g, int r0, int rows, int n, int D, int stride) {
    const int SP = DP + 8, cpr = DP / 8;
    for (int i = threadIdx.x; i < rows * cpr; i += blockDim.x) {
        int r = CM ? i / (8 * cpr) * 8 + (i & 7) : i / cpr;
        int c = CM ? (i >> 3) % cpr * 8 : (i % cpr) * 8;
        int ok = r0 + r < n && c < D;
        const bf16 *src = ok ? g + (size_t)(r0 + r) * stride + c : g;
        cp_async16(s + (CM ? cm_offset<DP>(r, c) : r * SP + c), src, ok ? 16 : 0);
    }
}

/* the double-buffered pipeline of every kernel here: start loading tile it + 1 of two tensors
 * (TN rows of x and of y, row strides sx and sy) into its stage of `stages`
 * ([STAGES][x, y][TN][pitch], tile i in stage i % STAGES), then wait until tile it has landed
 * (the caller's __syncthreads makes it visible to every warp) */
template <int DP, bool CM = false, int TN = BN, int STAGES = 2>
__device__ __forceinline__ void next_tiles(bf16 *stages, const bf16 *x, int sx, const bf16 *y, int sy, int it,
                                           int ntiles, int n, int D) {
    const int SP = tile_pitch<DP, CM>();
    if (it + 1 < ntiles) {
        bf16 *nx = stages + ((it + 1) % STAGES) * 2 * TN * SP;
        tile_async<DP, CM>(nx, x, (it + 1) * TN, TN, n, D, sx);
        tile_async<DP, CM>(nx + TN * SP, y, (it + 1) * TN, TN, n, D, sy);
        cp_async_commit();
        cp_async_wait<1>();
    } else {
        cp_async_wait<0>();
    }
}

/* 2^x in the forward's softmax: the SFU instruction alone (ex2.approx.ftz) saves the range
 * fix-ups of exp2f, except at DP = 128, where the 32-row-per-warp kernel sits at 255 registers
 * and anything but the measured instruction mix makes ptxas spill */
template <int DP> __device__ __forceinline__ float softmax_exp2(float x) {
    if constexpr (DP >= 128) return exp2f(x);
    else return ex2(x);
}

/* one K/V tile for one warp's RT x 16 query rows: S = Q K^T, online softmax, O += P V. Each
 * K or V fragment loaded with ldmatrix feeds 2 * RT MMAs. TAIL: the last tile, with kn < BN
 * valid keys (key groups past kn are skipped, the rest masked); a separate instantiation so the
 * full tiles keep fully unrolled loops. */
template <int DP, int RT, bool TAIL>
__device__ __forceinline__ void fa_tile(float (&o)[RT][DP / 8][4], float (&mrow)[RT][2], float (&lrow)[RT][2],
                                        const bf16 *qa, const bf16 *Ks, const bf16 *Vs, int krow, int kcol, int vrow,
                                        int vcol, int kn, int t, float sl2) {
    const int SP = DP + 8;
    float s[RT][BN / 8][4];
#pragma unroll
    for (int r = 0; r < RT; r++)
#pragma unroll
        for (int j = 0; j < BN / 8; j++) s[r][j][0] = s[r][j][1] = s[r][j][2] = s[r][j][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < DP / 16; kk++) {
        uint32_t a[RT][4];
#pragma unroll
        for (int r = 0; r < RT; r++) ldsm_x4(a[r][0], a[r][1], a[r][2], a[r][3], qa + r * 16 * SP + kk * 16);
#pragma unroll
        for (int j = 0; j < BN / 8; j += 2) {
            if (TAIL && j * 8 >= kn) break;
            uint32_t b0, b1, b2, b3;
            ldsm_x4(b0, b1, b2, b3, Ks + (j * 8 + krow) * SP + kk * 16 + kcol);
#pragma unroll
            for (int r = 0; r < RT; r++) {
                mma16816(s[r][j], a[r][0], a[r][1], a[r][2], a[r][3], b0, b1);
                mma16816(s[r][j + 1], a[r][0], a[r][1], a[r][2], a[r][3], b2, b3);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < RT; r++) {
        float mx[2] = {mrow[r][0], mrow[r][1]};
#pragma unroll
        for (int j = 0; j < BN / 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                s[r][j][e] = (!TAIL || j * 8 + 2 * t + (e & 1) < kn) ? s[r][j][e] * sl2 : -INFINITY;
                mx[e >> 1] = fmaxf(mx[e >> 1], s[r][j][e]);
            }
        float corr[2];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffff, mx[h], 1));
            mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffff, mx[h], 2));
            corr[h] = softmax_exp2<DP>(mrow[r][h] - mx[h]);
            mrow[r][h] = mx[h];
            lrow[r][h] *= corr[h];
        }
#pragma unroll
        for (int j = 0; j < BN / 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                s[r][j][e] = softmax_exp2<DP>(s[r][j][e] - mrow[r][e >> 1]);
                lrow[r][e >> 1] += s[r][j][e];
            }
#pragma unroll
        for (int j = 0; j < DP / 8; j++) {
            o[r][j][0] *= corr[0]; o[r][j][1] *= corr[0];
            o[r][j][2] *= corr[1]; o[r][j][3] *= corr[1];
        }
    }
#pragma unroll
    for (int kc = 0; kc < BN / 16; kc++) {
        if (TAIL && kc * 16 >= kn) break;   /* their probabilities are 0 */
        uint32_t pa[RT][4];
#pragma unroll
        for (int r = 0; r < RT; r++) {
            pa[r][0] = pack_bf16(s[r][2 * kc][0], s[r][2 * kc][1]);
            pa[r][1] = pack_bf16(s[r][2 * kc][2], s[r][2 * kc][3]);
            pa[r][2] = pack_bf16(s[r][2 * kc + 1][0], s[r][2 * kc + 1][1]);
            pa[r][3] = pack_bf16(s[r][2 * kc + 1][2], s[r][2 * kc + 1][3]);
        }
#pragma unroll
        for (int j = 0; j < DP / 8; j += 2) {
            uint32_t b0, b1, b2, b3;
            ldsm_x4_t(b0, b1, b2, b3, Vs + (kc * 16 + vrow) * SP + j * 8 + vcol);
#pragma unroll
            for (int r = 0; r < RT; r++) {
                mma16816(o[r][j], pa[r][0], pa[r][1], pa[r][2], pa[r][3], b0, b1);
                mma16816(o[r][j + 1], pa[r][0], pa[r][1], pa[r][2], pa[r][3], b2, b3);
            }
        }
    }
}

/* the forward's epilogue, for one warp's 16 query rows (rows row0 + g and + 8 of this thread):
 * O / l into out in bf16 and the lse; o[4j + e] is column 8j + 2t + (e & 1) of row g + 8 (e >> 1),
 * the accumulator layout of mma.m16n8 and of wgmma alike */
template <int DP>
__device__ __forceinline__ void store_rows(bf16 *out, float *lse, const float *o, const float (&mrow)[2],
                                           const float (&lrow)[2], int b, int h, int H, int Nq, int D, int o_stride,
                                           int row0, int g, int t) {
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        float l = lrow[hh];
        l += __shfl_xor_sync(0xffffffff, l, 1);
        l += __shfl_xor_sync(0xffffffff, l, 2);
        int row = row0 + g + hh * 8;
        if (row >= Nq) continue;
        float inv = 1.f / l;
        bf16 *op = out + ((size_t)b * Nq + row) * o_stride + (size_t)h * D;
#pragma unroll
        for (int j = 0; j < DP / 8; j++) {
            int c = j * 8 + 2 * t;
            if (c < D)
                *(__nv_bfloat162 *)(op + c) = __floats2bfloat162_rn(o[4 * j + 2 * hh] * inv, o[4 * j + 2 * hh + 1] * inv);
        }
        if (lse && t == 0) lse[((size_t)b * H + h) * Nq + row] = (mrow[hh] + log2f(l)) / LOG2E;
    }
}

/* WARPS warps x RT x 16 query rows per block */
template <int DP, int WARPS, int RT>
__global__ void __launch_bounds__(WARPS * 32, fwd2_min_blocks<DP, WARPS, RT>())
    flash_fwd2_kernel(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int H, int Nq, int Nk, int D,
                      int q_stride, int kv_stride, int o_stride, float scale) {
    const int SP = DP + 8, QM = WARPS * RT * 16;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *Qs = (bf16 *)smem_raw, *KV = Qs + QM * SP;   /* KV: [2 stages][K, V][BN][SP] */
    int bh = blockIdx.y, b = bh / H, h = bh % H, q0 = blockIdx.x * QM;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const bf16 *qb = q + (size_t)b * Nq * q_stride + (size_t)h * D;
    const bf16 *kb = k + (size_t)b * Nk * kv_stride + (size_t)h * D;
    const bf16 *vb = v + (size_t)b * Nk * kv_stride + (size_t)h * D;
    int ntiles = (Nk + BN - 1) / BN;
    tile_async<DP>(Qs, qb, q0, QM, Nq, D, q_stride);
    tile_async<DP>(KV, kb, 0, BN, Nk, D, kv_stride);
    tile_async<DP>(KV + BN * SP, vb, 0, BN, Nk, D, kv_stride);
    cp_async_commit();

    float o[RT][DP / 8][4];
    float mrow[RT][2], lrow[RT][2];
#pragma unroll
    for (int r = 0; r < RT; r++) {
#pragma unroll
        for (int j = 0; j < DP / 8; j++) o[r][j][0] = o[r][j][1] = o[r][j][2] = o[r][j][3] = 0.f;
        mrow[r][0] = mrow[r][1] = -INFINITY;
        lrow[r][0] = lrow[r][1] = 0.f;
    }
    const float sl2 = scale * LOG2E;
    const int row0 = q0 + warp * RT * 16;         /* this warp's first query row */
    const bool active = row0 < Nq;
    /* per-lane ldmatrix addresses: lane l supplies row (l & 7) of 8x8 matrix l >> 3 */
    const bf16 *qa = Qs + (warp * RT * 16 + (lane & 15)) * SP + (lane >> 4) * 8;
    const int krow = (lane & 7) + ((lane >> 4) << 3), kcol = ((lane >> 3) & 1) * 8;  /* K [key][dim] */
    const int vrow = (lane & 7) + (((lane >> 3) & 1) << 3), vcol = (lane >> 4) * 8;  /* V [key][dim], .trans */

    for (int it = 0; it < ntiles; it++) {
        next_tiles<DP>(KV, kb, kv_stride, vb, kv_stride, it, ntiles, Nk, D);
        __syncthreads();
        const bf16 *Ks = KV + (it & 1) * 2 * BN * SP, *Vs = Ks + BN * SP;
        int kn = min(BN, Nk - it * BN);   /* valid keys in this tile */
        if (active) {                     /* a warp past the last query row only loads */
            if (kn == BN) fa_tile<DP, RT, false>(o, mrow, lrow, qa, Ks, Vs, krow, kcol, vrow, vcol, kn, t, sl2);
            else fa_tile<DP, RT, true>(o, mrow, lrow, qa, Ks, Vs, krow, kcol, vrow, vcol, kn, t, sl2);
        }
        __syncthreads();   /* this stage is refilled on the next iteration */
    }
#pragma unroll
    for (int r = 0; r < RT; r++)
        store_rows<DP>(out, lse, o[r][0], mrow[r], lrow[r], b, h, H, Nq, D, o_stride, row0 + r * 16, g, t);
}

/* ---- forward on Hopper's warpgroup MMA (sm_90a): flash_fwd3_kernel ----
 * The algorithm of flash_fwd2_kernel, with the tensor-core work moved to wgmma: a warpgroup (4
 * warps) owns 64 query rows; NWG warpgroups share each K/V tile of TN keys, double-buffered with
 * cp.async as above but stored in the core-matrix layout wgmma reads (cm_offset). Per tile, a
 * warpgroup issues S = Q K^T as DP / 16 wgmmas with both operands in shared memory (K-major
 * descriptors of the Q and K tiles), runs the online softmax on S in registers, and issues
 * O += P V as TN / 16 wgmmas with P from registers (the S accumulator's layout per warp is
 * mma.m16n8k16's A layout, as in the mma.sync kernel) and V through an MN-major descriptor of
 * the same tile layout: element (key, d) of V is element (k = key, n = d), so V needs neither a
 * transposed copy nor ldmatrix. flash_fwd3_kernel waits for each product at once;
 * flash_fwd3p_kernel overlaps a tile's softmax with the previous tile's P V (FlashAttention-3's
 * intra-warpgroup pipelining). Accumulators: S TN / 2 and O DP / 2 fp32 per thread. Not yet
 * done: TMA loads, producer warps, ping-pong of the two warpgroups. */
template <int DP, int TN, int NWG> constexpr size_t fwd3_smem_bytes() {
    return (size_t)(NWG * 64 + 4 * TN) * DP * 2;
}

/* descriptor of a no-swizzle operand at p: lbo and sbo in bytes (PTX ISA, "Matrix Descriptor
 * Format": address, LBO and SBO in units of 16 bytes; swizzle mode 0 and base offset 0) */
__device__ __forceinline__ uint64_t wg_desc(const void *p, uint32_t lbo, uint32_t sbo) {
    return (uint64_t)((smem_addr(p) >> 4) & 0x3fff) | (uint64_t)((lbo >> 4) & 0x3fff) << 16 |
           (uint64_t)((sbo >> 4) & 0x3fff) << 32;
}

/* no-swizzle descriptors of a [rows][DP] core-matrix tile at p (cm_offset): read K-major (rows
 * = M or N, DP = k), or MN-major ([k = row][n = DP]: 8-row groups are k, DP * 16 bytes apart
 * (LBO); 8-column groups are n, 128 bytes apart (SBO)) */
template <int DP> __device__ __forceinline__ uint64_t desc_k(const bf16 *p) { return wg_desc(p, 128, DP * 16); }
template <int DP> __device__ __forceinline__ uint64_t desc_mn(const bf16 *p) { return wg_desc(p, DP * 16, 128); }

/* The two wgmma products every Hopper kernel here is made of. They only issue: the caller
 * fences, commits and waits. Per thread, an accumulator holds rows g and g + 8 of the warp's
 * 16 (index 4j + e: column 8j + 2t + (e & 1), row g + 8 (e >> 1)).
 *
 * issue d[64 x TN] = A B^T for A the 64 rows at a and B the TN rows at b, both [row][DP] tiles
 * read K-major (S = Q K^T, dP = dO V^T, S^T = K Q^T, ...): DP / 16 wgmmas, 16 dims (2 core
 * matrices) per step */
template <int DP, int TN>
__device__ __forceinline__ void wg_abt(float (&d)[TN / 2], const bf16 *a, const bf16 *b) {
#pragma unroll
    for (int kk = 0; kk < DP / 16; kk++) wgmma_ss<TN, 0>(d, desc_k<DP>(a + kk * 128), desc_k<DP>(b + kk * 128), kk);
}

/* issue acc[64 x DP] += P Z for P [64 x TN] in registers (A operands, 16 columns per step) and Z
 * the TN rows at z of a [row][DP] tile, read MN-major ([k = row][n = dim]: O += P V, dQ += dS K,
 * dV += P^T dO, dK += dS^T Q): TN / 16 wgmmas. Every step is issued, even past the last row of a
 * tail tile (P is 0 there, Z's rows zeros): a branch inside the chain of wgmmas makes ptxas
 * serialise all of them (warning C7520). */
template <int DP, int TN>
__device__ __forceinline__ void wg_pz(float (&acc)[DP / 2], const uint32_t (&pa)[TN / 16][4], const bf16 *z) {
#pragma unroll
    for (int kc = 0; kc < TN / 16; kc++)
        wgmma_rs<DP, 1>(acc, pa[kc][0], pa[kc][1], pa[kc][2], pa[kc][3], desc_mn<DP>(z + kc * 16 * DP), 1);
}

/* The forward's steps of a K/V tile for one warpgroup, shared by both forward kernels. */

/* online softmax of a finished S in place (S becomes P, unnormalised), the running max and sum
 * updated; returns in corr the factor by which O must be rescaled. TAIL: keys from kn on are
 * masked. */
template <int TN, bool TAIL>
__device__ __forceinline__ void fa3_softmax(float (&s)[TN / 2], float (&mrow)[2], float (&lrow)[2], float (&corr)[2],
                                            int kn, int t, float sl2) {
    float mx[2] = {mrow[0], mrow[1]};
#pragma unroll
    for (int i = 0; i < TN / 2; i++) {
        s[i] = (!TAIL || (i >> 2) * 8 + 2 * t + (i & 1) < kn) ? s[i] * sl2 : -INFINITY;
        mx[(i >> 1) & 1] = fmaxf(mx[(i >> 1) & 1], s[i]);
    }
#pragma unroll
    for (int h = 0; h < 2; h++) {
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffff, mx[h], 1));
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffff, mx[h], 2));
        corr[h] = ex2(mrow[h] - mx[h]);
        mrow[h] = mx[h];
        lrow[h] *= corr[h];
    }
#pragma unroll
    for (int i = 0; i < TN / 2; i++) {
        s[i] = ex2(s[i] - mrow[(i >> 1) & 1]);
        lrow[(i >> 1) & 1] += s[i];
    }
}
template <int TN>
__device__ __forceinline__ void fa3_softmax_any(float (&s)[TN / 2], float (&mrow)[2], float (&lrow)[2],
                                                float (&corr)[2], int kn, int t, float sl2) {
    if (kn == TN) fa3_softmax<TN, false>(s, mrow, lrow, corr, kn, t, sl2);
    else fa3_softmax<TN, true>(s, mrow, lrow, corr, kn, t, sl2);
}

template <int DP> __device__ __forceinline__ void fa3_rescale(float (&o)[DP / 2], const float (&corr)[2]) {
#pragma unroll
    for (int i = 0; i < DP / 2; i++) o[i] *= corr[(i >> 1) & 1];
}

/* an accumulator in bf16 as A operands, 16 columns per step: n8 blocks 2kc (k 0..7) and 2kc + 1
 * (k 8..15) of a wgmma accumulator are, per warp, mma.m16n8k16's A fragment */
template <int TN> __device__ __forceinline__ void wg_pack(uint32_t (&pa)[TN / 16][4], const float (&s)[TN / 2]) {
#pragma unroll
    for (int kc = 0; kc < TN / 16; kc++) {
        pa[kc][0] = pack_bf16(s[8 * kc + 0], s[8 * kc + 1]);
        pa[kc][1] = pack_bf16(s[8 * kc + 2], s[8 * kc + 3]);
        pa[kc][2] = pack_bf16(s[8 * kc + 4], s[8 * kc + 5]);
        pa[kc][3] = pack_bf16(s[8 * kc + 6], s[8 * kc + 7]);
    }
}

/* S = Q K^T of one tile, issued and waited for, then its softmax (the first tile of the
 * pipelined kernel, every tile of the plain one) */
template <int DP, int TN>
__device__ __forceinline__ void fa3_scores_softmax(float (&s)[TN / 2], float (&mrow)[2], float (&lrow)[2],
                                                   float (&corr)[2], const bf16 *Qw, const bf16 *Ks, int kn, int t,
                                                   float sl2) {
#pragma unroll
    for (int i = 0; i < TN / 2; i++) s[i] = 0.f;
    wgmma_fence();   /* s was last touched by ordinary instructions */
    wg_abt<DP, TN>(s, Qw, Ks);
    wgmma_commit();
    wgmma_wait<0>();
    wgmma_pin(s);
    fa3_softmax_any<TN>(s, mrow, lrow, corr, kn, t, sl2);
}

/* O += P V issued and waited for */
template <int DP, int TN>
__device__ __forceinline__ void fa3_pv_wait(float (&o)[DP / 2], const uint32_t (&pa)[TN / 16][4], const bf16 *Vs) {
    wgmma_fence();   /* o rescaled, pa written */
    wg_pz<DP, TN>(o, pa, Vs);
    wgmma_commit();
    wgmma_wait<0>();
    wgmma_pin(o);
}

/* the set-up both kernels share: head views, first loads (Q and K/V tile 0, one commit group) */
struct fa3_block {
    int b, h, q0, wg, warp, g, t;
    const bf16 *kb, *vb;
    const bf16 *Qw;   /* this warpgroup's 64 query rows in shared memory: 8 row groups */
    bool active;      /* false for a warpgroup past the last query: it only loads */
};
template <int DP, int TN, int NWG>
__device__ __forceinline__ fa3_block fa3_begin(bf16 *Qs, bf16 *KV, const bf16 *q, const bf16 *k, const bf16 *v, int H,
                                               int Nq, int Nk, int D, int q_stride, int kv_stride) {
    fa3_block B;
    int bh = blockIdx.y, lane = threadIdx.x & 31;
    B.b = bh / H; B.h = bh % H; B.q0 = blockIdx.x * NWG * 64;
    B.wg = threadIdx.x >> 7; B.warp = (threadIdx.x >> 5) & 3; B.g = lane >> 2; B.t = lane & 3;
    const bf16 *qb = q + (size_t)B.b * Nq * q_stride + (size_t)B.h * D;
    B.kb = k + (size_t)B.b * Nk * kv_stride + (size_t)B.h * D;
    B.vb = v + (size_t)B.b * Nk * kv_stride + (size_t)B.h * D;
    B.Qw = Qs + B.wg * 64 * DP;
    B.active = B.q0 + B.wg * 64 < Nq;
    tile_async<DP, true>(Qs, qb, B.q0, NWG * 64, Nq, D, q_stride);
    tile_async<DP, true>(KV, B.kb, 0, TN, Nk, D, kv_stride);
    tile_async<DP, true>(KV + TN * DP, B.vb, 0, TN, Nk, D, kv_stride);
    cp_async_commit();
    return B;
}

/* flash_fwd3_kernel: per tile, S, softmax, P V in sequence (two K/V stages). TN = 64 fits in
 * 128 registers (ptxas -v, sm_90a: 96-128), so two blocks share an SM; TN = 128 needs more and
 * runs one block (8 warps) per SM. */
template <int DP, int TN, int NWG>
__global__ void __launch_bounds__(NWG * 128, TN == 64 ? 2 : 1)
    flash_fwd3_kernel(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int H, int Nq, int Nk,
                      int D, int q_stride, int kv_stride, int o_stride, float scale) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *Qs = (bf16 *)smem_raw, *KV = Qs + NWG * 64 * DP;   /* KV: [2 stages][K, V][TN][DP], core matrices */
    fa3_block B = fa3_begin<DP, TN, NWG>(Qs, KV, q, k, v, H, Nq, Nk, D, q_stride, kv_stride);
    float o[DP / 2], mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.f, 0.f}, s[TN / 2], corr[2];
    uint32_t pa[TN / 16][4];
#pragma unroll
    for (int i = 0; i < DP / 2; i++) o[i] = 0.f;
    const float sl2 = scale * LOG2E;
    const bf16 *Qw = B.Qw;
    const bool active = B.active;
    const int ntiles = (Nk + TN - 1) / TN;
    for (int it = 0; it < ntiles; it++) {
        next_tiles<DP, true, TN>(KV, B.kb, kv_stride, B.vb, kv_stride, it, ntiles, Nk, D);
        fence_proxy_async();   /* this thread's cp.async writes, visible to wgmma (async proxy) */
        __syncthreads();
        const bf16 *Ks = KV + (it & 1) * 2 * TN * DP, *Vs = Ks + TN * DP;
        if (active) {
            fa3_scores_softmax<DP, TN>(s, mrow, lrow, corr, Qw, Ks, min(TN, Nk - it * TN), B.t, sl2);
            fa3_rescale<DP>(o, corr);
            wg_pack<TN>(pa, s);
            fa3_pv_wait<DP, TN>(o, pa, Vs);
        }
        __syncthreads();   /* this stage is refilled on the next iteration */
    }
    store_rows<DP>(out, lse, o, mrow, lrow, B.b, B.h, H, Nq, D, o_stride, B.q0 + B.wg * 64 + B.warp * 16, B.g, B.t);
}

/* flash_fwd3p_kernel: the same with FlashAttention-3's overlap inside a warpgroup: tile it's
 * S = Q K^T and tile it-1's O += P V are issued together (two commit groups); the softmax of S
 * runs while P V is still on the tensor cores (wait_group 1), then O is rescaled once P V has
 * landed (wait_group 0). A tile's V is read one iteration after its K, so K/V tiles take three
 * stages: tile it + 1 loads while it and it - 1 are in use. Registers: S, O and the previous P
 * (TN / 2 + DP / 2 fp32 + TN / 8 words); one block per SM. */
template <int DP, int TN, int NWG> constexpr size_t fwd3p_smem_bytes() {
    return (size_t)(NWG * 64 + 6 * TN) * DP * 2;
}
template <int DP, int TN, int NWG>
__global__ void __launch_bounds__(NWG * 128, 1)
    flash_fwd3p_kernel(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int H, int Nq, int Nk,
                       int D, int q_stride, int kv_stride, int o_stride, float scale) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *Qs = (bf16 *)smem_raw, *KV = Qs + NWG * 64 * DP;   /* KV: [3 stages][K, V][TN][DP] */
    fa3_block B = fa3_begin<DP, TN, NWG>(Qs, KV, q, k, v, H, Nq, Nk, D, q_stride, kv_stride);
    float o[DP / 2], mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.f, 0.f}, s[TN / 2], corr[2];
    uint32_t pa[TN / 16][4];
#pragma unroll
    for (int i = 0; i < DP / 2; i++) o[i] = 0.f;
    const float sl2 = scale * LOG2E;
    const bf16 *Qw = B.Qw;
    const bool active = B.active;
    const int ntiles = (Nk + TN - 1) / TN;
    const size_t stage = (size_t)2 * TN * DP;
    /* tile 0: its S and softmax alone */
    next_tiles<DP, true, TN, 3>(KV, B.kb, kv_stride, B.vb, kv_stride, 0, ntiles, Nk, D);
    fence_proxy_async();
    __syncthreads();
    if (active) {
        fa3_scores_softmax<DP, TN>(s, mrow, lrow, corr, Qw, KV, min(TN, Nk), B.t, sl2);
        wg_pack<TN>(pa, s);   /* o is still 0: nothing to rescale */
    }
    __syncthreads();
    for (int it = 1; it < ntiles; it++) {
        next_tiles<DP, true, TN, 3>(KV, B.kb, kv_stride, B.vb, kv_stride, it, ntiles, Nk, D);
        fence_proxy_async();
        __syncthreads();
        const bf16 *Ks = KV + (it % 3) * stage, *Vp = KV + ((it - 1) % 3) * stage + TN * DP;
        if (active) {
#pragma unroll
            for (int i = 0; i < TN / 2; i++) s[i] = 0.f;
            wgmma_fence();   /* s read, pa and o written by ordinary instructions */
            wg_abt<DP, TN>(s, Qw, Ks);
            wgmma_commit();
            wg_pz<DP, TN>(o, pa, Vp);
            wgmma_commit();
            wgmma_wait<1>();   /* S has landed; P V may still run */
            wgmma_pin(s);
            fa3_softmax_any<TN>(s, mrow, lrow, corr, min(TN, Nk - it * TN), B.t, sl2);
            wgmma_wait<0>();
            wgmma_pin(o);
            fa3_rescale<DP>(o, corr);
            wg_pack<TN>(pa, s);
        }
        __syncthreads();   /* tile it - 1's stage is refilled on the next iteration */
    }
    if (active) fa3_pv_wait<DP, TN>(o, pa, KV + ((ntiles - 1) % 3) * stage + TN * DP);
    store_rows<DP>(out, lse, o, mrow, lrow, B.b, B.h, H, Nq, D, o_stride, B.q0 + B.wg * 64 + B.warp * 16, B.g, B.t);
}

/* ---- fused backward (FlashAttention-2 style): no N x N tile leaves registers ----
 * Two kernels recompute P = exp(S scale - lse) tile by tile from the forward's lse on tensor
 * cores, with the forward's tiles, ldmatrix patterns and cp.async double buffering:
 *   attn_bwd_dq_kernel   16 query rows per warp, walks the key tiles:    dQ += scale dS K
 *   attn_bwd_dkv_kernel  16 key rows per warp, walks the query tiles:    dV += P^T dO,
 *                                                                        dK += scale dS^T Q
 * where dS = P (dO V^T - delta). S and dO V^T are computed in both (7 tile GEMMs against 5
 * for one kernel with atomic dQ), which buys deterministic results without atomics or a dQ
 * accumulator in fp32. P and dS enter the MMAs in bf16, as in the GEMM path. Head dims up to
 * 128 (the register budget: a warp holds two 16 x DP fp32 accumulators and two 16 x 64 tiles). */
#define BWARPS 4   /* warps per block: 64 rows of the side a block owns */

/* per-lane ldmatrix offsets of the forward, in one place */
struct ldsm_lane {
    int arow, acol;   /* A operand from a row-major [row][k] tile: rows 0..15 of the warp */
    int krow, kcol;   /* B operand from an [n][k] tile (K or V or Q or dO as stored) */
    int vrow, vcol;   /* B operand from a [k][n] tile with .trans */
};
__device__ __forceinline__ ldsm_lane ldsm_lane_of(int lane) {
    ldsm_lane l;
    l.arow = lane & 15; l.acol = (lane >> 4) * 8;
    l.krow = (lane & 7) + ((lane >> 4) << 3); l.kcol = ((lane >> 3) & 1) * 8;
    l.vrow = (lane & 7) + (((lane >> 3) & 1) << 3); l.vcol = (lane >> 4) * 8;
    return l;
}

/* s[16 x BN] = A[16 x DP] (rows at a) times the BN rows of X ([n][DP] tile)^T, and
 * d[16 x BN] likewise from a2 and Y: the two products of a backward tile share the loop */
template <int DP, bool TAIL>
__device__ __forceinline__ void two_products(float (&s)[BN / 8][4], float (&d)[BN / 8][4], const bf16 *a,
                                             const bf16 *a2, const bf16 *X, const bf16 *Y, ldsm_lane l, int n) {
    const int SP = DP + 8;
#pragma unroll
    for (int j = 0; j < BN / 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) s[j][e] = d[j][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < DP / 16; kk++) {
        uint32_t x0, x1, x2, x3, y0, y1, y2, y3;
        ldsm_x4(x0, x1, x2, x3, a + kk * 16);
        ldsm_x4(y0, y1, y2, y3, a2 + kk * 16);
#pragma unroll
        for (int j = 0; j < BN / 8; j += 2) {
            if (TAIL && j * 8 >= n) break;
            uint32_t b0, b1, b2, b3;
            ldsm_x4(b0, b1, b2, b3, X + (j * 8 + l.krow) * SP + kk * 16 + l.kcol);
            mma16816(s[j], x0, x1, x2, x3, b0, b1);
            mma16816(s[j + 1], x0, x1, x2, x3, b2, b3);
            ldsm_x4(b0, b1, b2, b3, Y + (j * 8 + l.krow) * SP + kk * 16 + l.kcol);
            mma16816(d[j], y0, y1, y2, y3, b0, b1);
            mma16816(d[j + 1], y0, y1, y2, y3, b2, b3);
        }
    }
}

/* acc[16 x DP] += A[16 x 16] (fragments a0..a3) times rows kc*16.. of Z ([k][DP], read transposed
 * as the B operand) */
template <int DP>
__device__ __forceinline__ void acc_k16(float (&acc)[DP / 8][4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                        const bf16 *Z, ldsm_lane l, int kc) {
    const int SP = DP + 8;
#pragma unroll
    for (int j = 0; j < DP / 8; j += 2) {
        uint32_t b0, b1, b2, b3;
        ldsm_x4_t(b0, b1, b2, b3, Z + (kc * 16 + l.vrow) * SP + j * 8 + l.vcol);
        mma16816(acc[j], a0, a1, a2, a3, b0, b1);
        mma16816(acc[j + 1], a0, a1, a2, a3, b2, b3);
    }
}

/* acc[16 x DP] += p[16 x BN] (an accumulator, used as the A operand in bf16) times Z ([BN][DP]) */
template <int DP, bool TAIL>
__device__ __forceinline__ void acc_product(float (&acc)[DP / 8][4], const float (&p)[BN / 8][4], const bf16 *Z,
                                            ldsm_lane l, int n) {
#pragma unroll
    for (int kc = 0; kc < BN / 16; kc++) {
        if (TAIL && kc * 16 >= n) break;   /* all zero past n */
        uint32_t a0 = pack_bf16(p[2 * kc][0], p[2 * kc][1]), a1 = pack_bf16(p[2 * kc][2], p[2 * kc][3]);
        uint32_t a2 = pack_bf16(p[2 * kc + 1][0], p[2 * kc + 1][1]), a3 = pack_bf16(p[2 * kc + 1][2], p[2 * kc + 1][3]);
        acc_k16<DP>(acc, a0, a1, a2, a3, Z, l, kc);
    }
}

/* dst[16 rows of this warp][D] (+)= mul * acc (add: bf16 read-modify-write, else written) */
template <int DP>
__device__ __forceinline__ void add_rows(bf16 *dst, size_t stride, int row0, int nrows, int D, float mul,
                                         const float *acc, int g, int t, int add) {   /* acc[j][e] at 4j + e */
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        int row = row0 + g + hh * 8;
        if (row >= nrows) continue;
        bf16 *p = dst + (size_t)row * stride;
#pragma unroll
        for (int j = 0; j < DP / 8; j++) {
            int c = j * 8 + 2 * t;
            if (c >= D) continue;
            float2 old = add ? __bfloat1622float2(*(const __nv_bfloat162 *)(p + c)) : make_float2(0.f, 0.f);
            *(__nv_bfloat162 *)(p + c) =
                __floats2bfloat162_rn(old.x + mul * acc[4 * j + 2 * hh], old.y + mul * acc[4 * j + 2 * hh + 1]);
        }
    }
}

/* lse (in log2 units) and delta of this thread's query rows r and r + 8 of one head (0 past Nq) */
__device__ __forceinline__ void row_stats(float (&lse2)[2], float (&dl)[2], const float *lse, const float *delta, int r,
                                          int Nq) {
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        int row = r + hh * 8;
        lse2[hh] = row < Nq ? lse[row] * LOG2E : 0.f;
        dl[hh] = row < Nq ? delta[row] : 0.f;
    }
}

/* one key tile for one warp's 16 query rows: dQ += dS K with dS = P (dO V^T - delta) */
template <int DP, bool TAIL>
__device__ __forceinline__ void bwd_dq_tile(float (&acc)[DP / 8][4], const bf16 *qa, const bf16 *ga, const bf16 *Ks,
                                            const bf16 *Vs, ldsm_lane l, int kn, int t, const float (&lse2)[2],
                                            const float (&dl)[2], float sl2) {
    float s[BN / 8][4], dp[BN / 8][4];
    two_products<DP, TAIL>(s, dp, qa, ga, Ks, Vs, l, kn);
#pragma unroll
    for (int j = 0; j < BN / 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            /* keys past Nk are zero rows of K and V, so they add nothing to dQ even unmasked;
             * the mask keeps P itself right */
            float p = (!TAIL || j * 8 + 2 * t + (e & 1) < kn) ? ex2(fmaf(s[j][e], sl2, -lse2[e >> 1])) : 0.f;
            s[j][e] = p * (dp[j][e] - dl[e >> 1]);
        }
    acc_product<DP, TAIL>(acc, s, Ks, l, kn);
}

/* FD (IV2_ATTN_BWD=fd; written 2026-11-27 without a GPU, to be timed): the dQ kernel runs first
 * and makes delta itself, for its rows, from dO and the forward output O (4 lanes a row, bf16
 * pairs, 2 shuffles), stores it for the dK/dV kernel after it, and needs no attn_delta_kernel:
 * one launch and one read of dO fewer (at the student's shape attn_delta_kernel took 37 us a
 * block on an H100). fd_out: O (stride os, as dO) and the delta to write. */
struct fd_out {
    const bf16 *o;
    float *delta;
};

/* delta of this thread's rows r and r + 8 (0 past Nq) from dO and O rows of one head (4 lanes
 * t = 0..3 a row: columns 2t, 2t + 1, 2t + 8, ...; every lane of the warp takes part) */
__device__ __forceinline__ void rows_delta(float (&dl)[2], const bf16 *gb, const bf16 *ob, int os, int r, int Nq, int D,
                                           int t) {
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        int row = r + hh * 8;
        float d = 0.f;
        if (row < Nq)
            for (int c = 2 * t; c < D; c += 8) {
                float2 a = __bfloat1622float2(*(const __nv_bfloat162 *)(gb + (size_t)row * os + c));
                float2 o = __bfloat1622float2(*(const __nv_bfloat162 *)(ob + (size_t)row * os + c));
                d = fmaf(a.x, o.x, fmaf(a.y, o.y, d));
            }
        d += __shfl_xor_sync(0xffffffffu, d, 1);
        d += __shfl_xor_sync(0xffffffffu, d, 2);
        dl[hh] = d;
    }
}

template <int DP, bool FD = false>
__global__ void __launch_bounds__(BWARPS * 32, 2) attn_bwd_dq_kernel(bf16 *dq, const bf16 *dout, const bf16 *q,
                                                                     const bf16 *k, const bf16 *v, const float *lse,
                                                                     const float *delta, int H, int Nq, int Nk, int D,
                                                                     int qs, int ks, int os, float scale, int add,
                                                                     fd_out fd) {
    const int SP = DP + 8, QM = BWARPS * 16;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *Qs = (bf16 *)smem_raw, *Gs = Qs + QM * SP, *KV = Gs + QM * SP;   /* KV: [2 stages][K, V][BN][SP] */
    int bh = blockIdx.y, b = bh / H, h = bh % H, q0 = blockIdx.x * QM;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const bf16 *qb = q + (size_t)b * Nq * qs + (size_t)h * D, *gb = dout + (size_t)b * Nq * os + (size_t)h * D;
    const bf16 *kb = k + (size_t)b * Nk * ks + (size_t)h * D, *vb = v + (size_t)b * Nk * ks + (size_t)h * D;
    int ntiles = (Nk + BN - 1) / BN;
    tile_async<DP>(Qs, qb, q0, QM, Nq, D, qs);
    tile_async<DP>(Gs, gb, q0, QM, Nq, D, os);
    tile_async<DP>(KV, kb, 0, BN, Nk, D, ks);
    tile_async<DP>(KV + BN * SP, vb, 0, BN, Nk, D, ks);
    cp_async_commit();

    const int row0 = q0 + warp * 16;
    const bool active = row0 < Nq;
    float lse2[2], dl[2];
    if constexpr (FD) {   /* delta here, from global dO and O, while the tiles load */
        const float *lb = lse + ((size_t)b * H + h) * Nq;
        rows_delta(dl, gb, fd.o + (size_t)b * Nq * os + (size_t)h * D, os, row0 + g, Nq, D, t);
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            int row = row0 + g + hh * 8;
            lse2[hh] = row < Nq ? lb[row] * LOG2E : 0.f;
            if (t == 0 && row < Nq) fd.delta[((size_t)b * H + h) * Nq + row] = dl[hh];
        }
    } else
        row_stats(lse2, dl, lse + ((size_t)b * H + h) * Nq, delta + ((size_t)b * H + h) * Nq, row0 + g, Nq);
    float acc[DP / 8][4];
#pragma unroll
    for (int j = 0; j < DP / 8; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
    ldsm_lane l = ldsm_lane_of(lane);
    const bf16 *qa = Qs + (warp * 16 + l.arow) * SP + l.acol, *ga = Gs + (warp * 16 + l.arow) * SP + l.acol;
    const float sl2 = scale * LOG2E;
    for (int it = 0; it < ntiles; it++) {
        next_tiles<DP>(KV, kb, ks, vb, ks, it, ntiles, Nk, D);
        __syncthreads();
        const bf16 *Ks = KV + (it & 1) * 2 * BN * SP, *Vs = Ks + BN * SP;
        int kn = min(BN, Nk - it * BN);
        if (active) {
            if (kn == BN) bwd_dq_tile<DP, false>(acc, qa, ga, Ks, Vs, l, kn, t, lse2, dl, sl2);
            else bwd_dq_tile<DP, true>(acc, qa, ga, Ks, Vs, l, kn, t, lse2, dl, sl2);
        }
        __syncthreads();
    }
    if (active) add_rows<DP>(dq + (size_t)b * Nq * qs + (size_t)h * D, qs, row0, Nq, D, scale, acc[0], g, t, add);
}

/* where the dK/dV kernel also stores dS (IV2_ATTN_BWD=ds): row q, column key of head bh at
 * p[q * ld + key], ld = Nk rounded up to 8 (16-byte rows for the dQ kernel's cp.async), the
 * columns Nk..ld-1 written as zeros */
struct ds_out {
    bf16 *p;
    int ld;
};

/* one query tile for one warp's 16 key rows: P^T and dS^T, then dV += P^T dO, dK += dS^T Q.
 * Query columns past Nq carry lse = +inf (so P = 0) and delta = 0. With DS, dS (unscaled, as
 * bf16, the values the dK product takes) goes to ds rows q0.. (queries), columns k0 + g, + 8. */
template <int DP, bool TAIL, bool DS>
__device__ __forceinline__ void bwd_dkv_tile(float (&dk)[DP / 8][4], float (&dv)[DP / 8][4], const bf16 *ka,
                                             const bf16 *va, const bf16 *Qs, const bf16 *Gs, const float *lse2s,
                                             const float *dls, ldsm_lane l, int qn, int t, float sl2, ds_out ds,
                                             int q0, int k0, int Nk, int g) {
    float s[BN / 8][4], dp[BN / 8][4];
    two_products<DP, TAIL>(s, dp, ka, va, Qs, Gs, l, qn);   /* S^T = K Q^T, dP^T = V dO^T */
#pragma unroll
    for (int j = 0; j < BN / 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            int col = j * 8 + 2 * t + (e & 1);
            float p = ex2(fmaf(s[j][e], sl2, -lse2s[col]));
            s[j][e] = p;
            dp[j][e] = p * (dp[j][e] - dls[col]);
        }
    if constexpr (DS)
#pragma unroll
        for (int j = 0; j < BN / 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int col = j * 8 + 2 * t + (e & 1), key = k0 + g + 8 * (e >> 1);
                if (col < qn && key < ds.ld)
                    ds.p[(size_t)(q0 + col) * ds.ld + key] = __float2bfloat16(key < Nk ? dp[j][e] : 0.f);
            }
    acc_product<DP, TAIL>(dv, s, Gs, l, qn);
    acc_product<DP, TAIL>(dk, dp, Qs, l, qn);
}

/* lse (in log2 units) and delta of queries [q0, q0+BN) into smem; +inf / 0 past Nq */
__device__ __forceinline__ void stats_tile(float *dst, const float *lse, const float *delta, int q0, int Nq) {
    for (int i = threadIdx.x; i < BN; i += blockDim.x) {
        int qi = q0 + i;
        dst[i] = qi < Nq ? lse[qi] * LOG2E : INFINITY;
        dst[BN + i] = qi < Nq ? delta[qi] : 0.f;
    }
}

/* DS: also store dS (IV2_ATTN_BWD=ds; ds unused otherwise, the default's code unchanged) */
template <int DP, bool DS = false>
__global__ void __launch_bounds__(BWARPS * 32, 2) attn_bwd_dkv_kernel(bf16 *dk, bf16 *dv, const bf16 *dout,
                                                                      const bf16 *q, const bf16 *k, const bf16 *v,
                                                                      const float *lse, const float *delta, int H,
                                                                      int Nq, int Nk, int D, int qs, int ks, int os,
                                                                      float scale, int add, ds_out ds) {
    const int SP = DP + 8, KM = BWARPS * 16;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *Ks = (bf16 *)smem_raw, *Vs = Ks + KM * SP, *QG = Vs + KM * SP;   /* QG: [2 stages][Q, dO][BN][SP] */
    float *ST = (float *)(QG + 4 * BN * SP);                                 /* ST: [2 stages][lse2, delta][BN] */
    int bh = blockIdx.y, b = bh / H, h = bh % H, k0 = blockIdx.x * KM;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const bf16 *qb = q + (size_t)b * Nq * qs + (size_t)h * D, *gb = dout + (size_t)b * Nq * os + (size_t)h * D;
    const bf16 *kb = k + (size_t)b * Nk * ks + (size_t)h * D, *vb = v + (size_t)b * Nk * ks + (size_t)h * D;
    const float *lseb = lse + ((size_t)b * H + h) * Nq, *dlb = delta + ((size_t)b * H + h) * Nq;
    if (DS) ds.p += (size_t)bh * Nq * ds.ld;   /* this head's [Nq][ld] */
    int ntiles = (Nq + BN - 1) / BN;
    tile_async<DP>(Ks, kb, k0, KM, Nk, D, ks);
    tile_async<DP>(Vs, vb, k0, KM, Nk, D, ks);
    tile_async<DP>(QG, qb, 0, BN, Nq, D, qs);
    tile_async<DP>(QG + BN * SP, gb, 0, BN, Nq, D, os);
    cp_async_commit();
    stats_tile(ST, lseb, dlb, 0, Nq);

    const int row0 = k0 + warp * 16;
    const bool active = row0 < Nk;
    float dka[DP / 8][4], dva[DP / 8][4];
#pragma unroll
    for (int j = 0; j < DP / 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) dka[j][e] = dva[j][e] = 0.f;
    ldsm_lane l = ldsm_lane_of(lane);
    const bf16 *ka = Ks + (warp * 16 + l.arow) * SP + l.acol, *va = Vs + (warp * 16 + l.arow) * SP + l.acol;
    const float sl2 = scale * LOG2E;
    for (int it = 0; it < ntiles; it++) {
        if (it + 1 < ntiles) stats_tile(ST + ((it + 1) & 1) * 2 * BN, lseb, dlb, (it + 1) * BN, Nq);
        next_tiles<DP>(QG, qb, qs, gb, os, it, ntiles, Nq, D);
        __syncthreads();
        const bf16 *Qt = QG + (it & 1) * 2 * BN * SP, *Gt = Qt + BN * SP;
        const float *st = ST + (it & 1) * 2 * BN;
        int qn = min(BN, Nq - it * BN);
        if (active) {
            if (qn == BN) bwd_dkv_tile<DP, false, DS>(dka, dva, ka, va, Qt, Gt, st, st + BN, l, qn, t, sl2, ds, it * BN, row0, Nk, g);
            else bwd_dkv_tile<DP, true, DS>(dka, dva, ka, va, Qt, Gt, st, st + BN, l, qn, t, sl2, ds, it * BN, row0, Nk, g);
        }
        __syncthreads();
    }
    if (!active) return;
    size_t off = (size_t)b * Nk * ks + (size_t)h * D;
    if (dv) add_rows<DP>(dv + off, ks, row0, Nk, D, 1.f, dva[0], g, t, add);
    if (dk) add_rows<DP>(dk + off, ks, row0, Nk, D, scale, dka[0], g, t, add);
}


/* dQ from the dS the dK/dV kernel stored (IV2_ATTN_BWD=ds): dQ += scale dS K, one product a key
 * tile where attn_bwd_dq_kernel recomputes S and dP first (three). A block takes BWARPS x 16
 * query rows of one head; K tiles and dS tiles ([queries][BN keys], zero past Nk) double-buffered
 * with cp.async; the dS rows as the A operand (ldmatrix), K as B (ldmatrix.trans). */
template <int DP>
__global__ void __launch_bounds__(BWARPS * 32, 2) attn_bwd_dq_ds_kernel(bf16 *dq, const bf16 *ds, int ldds,
                                                                        const bf16 *k, int H, int Nq, int Nk, int D,
                                                                        int qs, int ks, float scale, int add) {
    const int SP = DP + 8, SD = BN + 8, QM = BWARPS * 16;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *Kst = (bf16 *)smem_raw, *Dst = Kst + 2 * BN * SP;   /* [2][BN][SP] K tiles, [2][QM][SD] dS tiles */
    int bh = blockIdx.y, b = bh / H, h = bh % H, q0 = blockIdx.x * QM;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const bf16 *kb = k + (size_t)b * Nk * ks + (size_t)h * D, *db = ds + (size_t)bh * Nq * ldds;
    int ntiles = (Nk + BN - 1) / BN;
    /* key tile it: BN rows of K, and columns it*BN.. of the block's dS rows (ldds - it*BN of them valid) */
    auto load = [&](int it) {
        tile_async<DP>(Kst + (it & 1) * BN * SP, kb, it * BN, BN, Nk, D, ks);
        tile_async<BN>(Dst + (it & 1) * QM * SD, db + it * BN, q0, QM, Nq, min(BN, ldds - it * BN), ldds);
        cp_async_commit();
    };
    load(0);
    const int row0 = q0 + warp * 16;
    const bool active = row0 < Nq;
    float acc[DP / 8][4];
#pragma unroll
    for (int j = 0; j < DP / 8; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
    ldsm_lane l = ldsm_lane_of(lane);
    for (int it = 0; it < ntiles; it++) {
        if (it + 1 < ntiles) {
            load(it + 1);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const bf16 *Ks = Kst + (it & 1) * BN * SP, *Ds = Dst + (it & 1) * QM * SD + (warp * 16 + l.arow) * SD + l.acol;
        if (active)
#pragma unroll
            for (int kc = 0; kc < BN / 16; kc++) {   /* dS columns past Nk are zero, as are K's rows there */
                uint32_t a0, a1, a2, a3;
                ldsm_x4(a0, a1, a2, a3, Ds + kc * 16);
                acc_k16<DP>(acc, a0, a1, a2, a3, Ks, l, kc);
            }
        __syncthreads();
    }
    if (active) add_rows<DP>(dq + (size_t)b * Nq * qs + (size_t)h * D, qs, row0, Nq, D, scale, acc[0], g, t, add);
}

template <int DP> constexpr size_t bwd_dq_ds_smem_bytes() {
    return (size_t)2 * BN * (DP + 8) * 2 + (size_t)2 * BWARPS * 16 * (BN + 8) * 2;
}
template <int DP> constexpr size_t bwd_dq_smem_bytes() { return (size_t)(2 * BWARPS * 16 + 4 * BN) * (DP + 8) * 2; }
template <int DP> constexpr size_t bwd_dkv_smem_bytes() { return bwd_dq_smem_bytes<DP>() + 4 * BN * sizeof(float); }

/* ---- fused backward on Hopper's wgmma (sm_90a; IV2_ATTN_BWD=wg) ----
 * The two kernels above with their products on wgmma: a warpgroup owns 64 rows (queries for
 * dq, keys for dkv; BWG warpgroups per block) and walks the other side's tiles of BN rows,
 * double-buffered with cp.async. Every tile is stored in the core-matrix layout, so the same
 * tile is a K-major operand of the score products (S = Q K^T and dP = dO V^T in dq; S^T = K Q^T
 * and dP^T = V dO^T in dkv, one commit group) and an MN-major B operand of the
 * accumulating ones (dQ += dS K; dV += P^T dO, dK += dS^T Q), like V in the forward; P and dS
 * enter as register A operands in bf16, as in the mma.sync kernels. In dkv, the dS^T arithmetic
 * runs while dV's wgmmas are on the tensor cores. Results are added to dq/dk/dv in bf16 as
 * above. */
#define BWG 2   /* warpgroups per block */
template <int DP> constexpr size_t bwd3_dq_smem_bytes() { return (size_t)(2 * BWG * 64 + 4 * BN) * DP * 2; }
template <int DP> constexpr size_t bwd3_dkv_smem_bytes() { return bwd3_dq_smem_bytes<DP>() + 4 * BN * sizeof(float); }

/* dS = P (dP - delta) in place of S, P = 2^(S scale log2e - lse log2e) (rows g, g + 8: lse2[h],
 * dl[h]); TAIL: keys from kn on get P = 0 */
template <bool TAIL>
__device__ __forceinline__ void wg_ds_rows(float (&s)[BN / 2], const float (&dp)[BN / 2], const float (&lse2)[2],
                                           const float (&dl)[2], int kn, int t, float sl2) {
#pragma unroll
    for (int i = 0; i < BN / 2; i++) {
        int h = (i >> 1) & 1;
        float p = (!TAIL || (i >> 2) * 8 + 2 * t + (i & 1) < kn) ? ex2(fmaf(s[i], sl2, -lse2[h])) : 0.f;
        s[i] = p * (dp[i] - dl[h]);
    }
}

template <int DP>
__global__ void __launch_bounds__(BWG * 128, 1) attn_bwd3_dq_kernel(bf16 *dq, const bf16 *dout, const bf16 *q,
                                                                    const bf16 *k, const bf16 *v, const float *lse,
                                                                    const float *delta, int H, int Nq, int Nk, int D,
                                                                    int qs, int ks, int os, float scale, int add) {
    const int QM = BWG * 64;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *Qs = (bf16 *)smem_raw, *Gs = Qs + QM * DP, *KV = Gs + QM * DP;   /* KV: [2 stages][K, V][BN][DP] */
    int bh = blockIdx.y, b = bh / H, h = bh % H, q0 = blockIdx.x * QM;
    int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const bf16 *qb = q + (size_t)b * Nq * qs + (size_t)h * D, *gb = dout + (size_t)b * Nq * os + (size_t)h * D;
    const bf16 *kb = k + (size_t)b * Nk * ks + (size_t)h * D, *vb = v + (size_t)b * Nk * ks + (size_t)h * D;
    int ntiles = (Nk + BN - 1) / BN;
    tile_async<DP, true>(Qs, qb, q0, QM, Nq, D, qs);
    tile_async<DP, true>(Gs, gb, q0, QM, Nq, D, os);
    tile_async<DP, true>(KV, kb, 0, BN, Nk, D, ks);
    tile_async<DP, true>(KV + BN * DP, vb, 0, BN, Nk, D, ks);
    cp_async_commit();

    const int row0 = q0 + wg * 64 + warp * 16;
    const bool active = q0 + wg * 64 < Nq;   /* warpgroup-uniform */
    float lse2[2], dl[2];
    row_stats(lse2, dl, lse + ((size_t)b * H + h) * Nq, delta + ((size_t)b * H + h) * Nq, row0 + g, Nq);
    float acc[DP / 2], s[BN / 2], dp[BN / 2];
    uint32_t pa[BN / 16][4];
#pragma unroll
    for (int i = 0; i < DP / 2; i++) acc[i] = 0.f;
    const bf16 *Qw = Qs + wg * 64 * DP, *Gw = Gs + wg * 64 * DP;
    const float sl2 = scale * LOG2E;
    for (int it = 0; it < ntiles; it++) {
        next_tiles<DP, true, BN>(KV, kb, ks, vb, ks, it, ntiles, Nk, D);
        fence_proxy_async();
        __syncthreads();
        const bf16 *Ks = KV + (it & 1) * 2 * BN * DP, *Vs = Ks + BN * DP;
        int kn = min(BN, Nk - it * BN);
        if (active) {
#pragma unroll
            for (int i = 0; i < BN / 2; i++) s[i] = dp[i] = 0.f;
            wgmma_fence();
            wg_abt<DP, BN>(s, Qw, Ks);    /* S = Q K^T */
            wg_abt<DP, BN>(dp, Gw, Vs);   /* dP = dO V^T */
            wgmma_commit();
            wgmma_wait<0>();
            wgmma_pin(s);
            wgmma_pin(dp);
            if (kn == BN) wg_ds_rows<false>(s, dp, lse2, dl, kn, t, sl2);
            else wg_ds_rows<true>(s, dp, lse2, dl, kn, t, sl2);
            wg_pack<BN>(pa, s);
            wgmma_fence();
            wg_pz<DP, BN>(acc, pa, Ks);   /* dQ += dS K */
            wgmma_commit();
            wgmma_wait<0>();
            wgmma_pin(acc);
        }
        __syncthreads();   /* this stage is refilled on the next iteration */
    }
    if (active) add_rows<DP>(dq + (size_t)b * Nq * qs + (size_t)h * D, qs, row0, Nq, D, scale, acc, g, t, add);
}

template <int DP>
__global__ void __launch_bounds__(BWG * 128, 1) attn_bwd3_dkv_kernel(bf16 *dk, bf16 *dv, const bf16 *dout,
                                                                     const bf16 *q, const bf16 *k, const bf16 *v,
                                                                     const float *lse, const float *delta, int H,
                                                                     int Nq, int Nk, int D, int qs, int ks, int os,
                                                                     float scale, int add) {
    const int KM = BWG * 64;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16 *Ks = (bf16 *)smem_raw, *Vs = Ks + KM * DP, *QG = Vs + KM * DP;   /* QG: [2 stages][Q, dO][BN][DP] */
    float *ST = (float *)(QG + 4 * BN * DP);                                 /* ST: [2 stages][lse2, delta][BN] */
    int bh = blockIdx.y, b = bh / H, h = bh % H, k0 = blockIdx.x * KM;
    int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const bf16 *qb = q + (size_t)b * Nq * qs + (size_t)h * D, *gb = dout + (size_t)b * Nq * os + (size_t)h * D;
    const bf16 *kb = k + (size_t)b * Nk * ks + (size_t)h * D, *vb = v + (size_t)b * Nk * ks + (size_t)h * D;
    const float *lseb = lse + ((size_t)b * H + h) * Nq, *dlb = delta + ((size_t)b * H + h) * Nq;
    int ntiles = (Nq + BN - 1) / BN;
    tile_async<DP, true>(Ks, kb, k0, KM, Nk, D, ks);
    tile_async<DP, true>(Vs, vb, k0, KM, Nk, D, ks);
    tile_async<DP, true>(QG, qb, 0, BN, Nq, D, qs);
    tile_async<DP, true>(QG + BN * DP, gb, 0, BN, Nq, D, os);
    cp_async_commit();
    stats_tile(ST, lseb, dlb, 0, Nq);

    const int row0 = k0 + wg * 64 + warp * 16;
    const bool active = k0 + wg * 64 < Nk;
    float dka[DP / 2], dva[DP / 2], s[BN / 2], dp[BN / 2];
    uint32_t pp[BN / 16][4], pd[BN / 16][4];
#pragma unroll
    for (int i = 0; i < DP / 2; i++) dka[i] = dva[i] = 0.f;
    const bf16 *Kw = Ks + wg * 64 * DP, *Vw = Vs + wg * 64 * DP;
    const float sl2 = scale * LOG2E;
    for (int it = 0; it < ntiles; it++) {
        if (it + 1 < ntiles) stats_tile(ST + ((it + 1) & 1) * 2 * BN, lseb, dlb, (it + 1) * BN, Nq);
        next_tiles<DP, true, BN>(QG, qb, qs, gb, os, it, ntiles, Nq, D);
        fence_proxy_async();
        __syncthreads();
        const bf16 *Qt = QG + (it & 1) * 2 * BN * DP, *Gt = Qt + BN * DP;
        const float *st = ST + (it & 1) * 2 * BN;   /* lse2 and delta of the tile's queries (+inf, 0 past Nq) */
        if (active) {
#pragma unroll
            for (int i = 0; i < BN / 2; i++) s[i] = dp[i] = 0.f;
            wgmma_fence();
            wg_abt<DP, BN>(s, Kw, Qt);    /* S^T = K Q^T */
            wg_abt<DP, BN>(dp, Vw, Gt);   /* dP^T = V dO^T */
            wgmma_commit();
            wgmma_wait<0>();
            wgmma_pin(s);
            wgmma_pin(dp);
#pragma unroll
            for (int i = 0; i < BN / 2; i++) s[i] = ex2(fmaf(s[i], sl2, -st[(i >> 2) * 8 + 2 * t + (i & 1)]));
            wg_pack<BN>(pp, s);
            wgmma_fence();
            wg_pz<DP, BN>(dva, pp, Gt);   /* dV += P^T dO, while dS^T is computed */
            wgmma_commit();
#pragma unroll
            for (int i = 0; i < BN / 2; i++) dp[i] = s[i] * (dp[i] - st[BN + (i >> 2) * 8 + 2 * t + (i & 1)]);
            wg_pack<BN>(pd, dp);
            wgmma_fence();
            wg_pz<DP, BN>(dka, pd, Qt);   /* dK += dS^T Q */
            wgmma_commit();
            wgmma_wait<0>();
            wgmma_pin(dva);
            wgmma_pin(dka);
        }
        __syncthreads();
    }
    if (!active) return;
    size_t off = (size_t)b * Nk * ks + (size_t)h * D;
    if (dv) add_rows<DP>(dv + off, ks, row0, Nk, D, 1.f, dva, g, t, add);
    if (dk) add_rows<DP>(dk + off, ks, row0, Nk, D, scale, dka, g, t, add);
}


#endif
