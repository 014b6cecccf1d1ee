/* cuda_emu.h: enough of CUDA to run the tensor-core kernels of kernels/flash_attention.cuh, and
 * the plain ones of kernels/norm.cuh and kernels/elementwise.cuh (grid-stride loops, shuffles,
 * block sums, float atomics), on the CPU, instruction for instruction, where there is no GPU.
 *
 * It stands in for cuda_bf16.h and kernels/mma.cuh: every CUDA thread is a fiber (ucontext)
 * with its own registers and stack, a block's threads run one at a time on one OS thread, and
 * the warp-collective instructions (ldmatrix, ldmatrix.trans, mma.sync.m16n8k16, shfl.xor)
 * are executed once all 32 lanes of a warp have reached them, with the operand layouts of the
 * PTX ISA manual ("Matrix fragments for mma.m16n8k16", "ldmatrix"). __syncthreads waits for
 * every thread of the block. cp.async reads its source at issue and lands at the latest moment
 * the PTX allows, the cp.async.wait_group that covers its commit group, so a missing or too weak
 * wait shows as NaN poison. Hopper's wgmma (fence, mma_async from shared-memory descriptors or
 * registers, commit_group, wait_group) and fence.proxy.async are emulated per warpgroup of 128
 * threads, each wgmma executing at the wait_group that retires it (see emu::wg_op).
 *
 * Shared-memory races between barriers are reported (see `chunk` below): what compute-sanitizer's
 * racecheck would find on the GPU, found here deterministically.
 *
 * Checks that compute-sanitizer or the hardware would make: ldmatrix rows and cp.async
 * destinations 16-byte aligned and inside the launch's dynamic shared memory; cp.async
 * sources inside a buffer the test registered (emu_register); a warp whose lanes disagree on
 * the collective they reach, or a block that cannot make progress, stops with a message.
 * Shared memory starts as 0xff bytes (bf16 NaN), so a read of a tile never written shows.
 *
 * The emulation is checked by the forward kernel, which passed on an H100: the same kernel
 * under the emulation must match the reference too. Test-only code; single translation unit. */
#ifndef IV2_CUDA_EMU_H
#define IV2_CUDA_EMU_H
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <ucontext.h>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__
#define __align__(n)
/* kernels/cuda_device.cuh's __shared__ arrays inside device functions (block_sum): one block
 * runs at a time, its threads on one OS thread, so a static is the block's shared array */
#define IV2_BLOCK_SHARED static
#pragma GCC diagnostic ignored "-Wunknown-pragmas"

using std::min;
using std::max;

/* ---- bf16 (round to nearest even, as __float2bfloat16) ---- */
struct __nv_bfloat16 { uint16_t u; };
struct __nv_bfloat162 { __nv_bfloat16 x, y; };
struct float2 { float x, y; };
struct float4 { float x, y, z, w; };
struct uint2 { unsigned x, y; };
static inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
static inline float2 make_float2(float x, float y) { return {x, y}; }
struct uint4 { unsigned x, y, z, w; };
typedef __nv_bfloat16 bf16;
static inline float __bfloat162float(bf16 h) {
    uint32_t u = (uint32_t)h.u << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline bf16 __float2bfloat16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    bf16 h;
    if ((u & 0x7fffffffu) > 0x7f800000u) h.u = 0x7fc0;   /* NaN */
    else h.u = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    return h;
}
static inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
    __nv_bfloat162 v;
    v.x = __float2bfloat16(a);
    v.y = __float2bfloat16(b);
    return v;
}
static inline float2 __bfloat1622float2(__nv_bfloat162 v) { return {__bfloat162float(v.x), __bfloat162float(v.y)}; }

/* ---- threads as fibers ---- */
struct dim3 { unsigned x, y, z; };
/* the kernels' `extern __shared__ unsigned char smem_raw[]`: one block runs at a time */
#define smem_raw emu_smem_raw
alignas(16) unsigned char emu_smem_raw[256 * 1024];
namespace emu {
enum { RUN, COLL, BAR, DONE };
enum { OP_LDSM, OP_LDSM_T, OP_MMA, OP_SHFL, OP_WG_FENCE, OP_WG_COMMIT, OP_WG_WAIT, OP_WG_MMA };
static bool is_wg_op(int op) { return op >= OP_WG_FENCE; }
struct lane {
    ucontext_t ctx;
    int state;
    dim3 tid;
    int op;                   /* the collective this lane waits in, and its operands */
    const void *addr;
    uint32_t a[4], b[2];
    float c[4], v;
    int m;
    uint32_t r[4];            /* results */
    float d[4];
    struct copy { void *dst; unsigned char data[16]; int group; };
    std::vector<copy> copies; /* cp.async issued and not yet landed; group -1: not committed */
    int groups;               /* cp.async groups committed so far */
    /* wgmma: the operands of the one this lane waits in (a[] holds rs's A registers) */
    int wg_n, wg_tb, wg_rs, wg_acc;
    uint64_t wg_adesc, wg_bdesc;
    float *wg_d;
    int wg_fenced;            /* a wgmma_fence passed */
    struct dmark { float *d; std::vector<float> v; };
    std::vector<dmark> marks; /* per accumulator: its values at the last wgmma write or wgmma_fence */
    std::vector<int> proxy_fences;   /* barrier epoch of each fence.proxy.async */
    uint32_t unaligned;       /* last smem_addr result not a multiple of 16 (~0u: none) */
};
static const int MAXT = 256, STACK = 1 << 16;
static lane lanes[MAXT];
static std::vector<char> stacks((size_t)MAXT * STACK);
static lane *cur;
static ucontext_t sched;
static std::function<void()> *body;
static unsigned nthreads;
static unsigned char *const smem = emu_smem_raw;
static const size_t SMEM_MAX = sizeof emu_smem_raw;
static size_t smem_bytes;
struct range { const char *p; size_t n; };
static std::vector<range> globals;
static long long n_collectives;

[[noreturn]] static void fail(const char *what) {
    fprintf(stderr, "cuda_emu: %s (thread %u)\n", what, cur ? cur->tid.x : 0);
    exit(1);
}
static void yield_to_scheduler() { swapcontext(&cur->ctx, &sched); }
static void wait_collective(int op) {
    cur->op = op;
    cur->state = COLL;
    yield_to_scheduler();
}
/* Shared-memory races between barriers, on 16-byte chunks (what ldmatrix rows and cp.async
 * move; the kernels' few plain shared loads and stores are not tracked). The epoch is the number
 * of __syncthreads passed. A read (ldmatrix) of a chunk written in the same epoch, or while a
 * cp.async to it is in flight, is a race (the writes are visible to other threads only after a
 * barrier); a write (cp.async issue or landing) to a chunk another warp read in the same epoch
 * is a race (that warp may not have read it yet on the GPU). */
/* gen_writer: 1 + the thread whose cp.async landed here last (a generic-proxy write), gen_fence:
 * how many fence.proxy.async that thread had passed then (wgmma reads need one more) */
struct chunk { int w_epoch, pending, r_epoch; uint32_t r_warps; int gen_writer, gen_fence; };
static chunk chunks[256 * 1024 / 16];
static int epoch = 1;
[[noreturn]] static void race(const char *what, size_t c, int warp) {
    fprintf(stderr, "cuda_emu: shared-memory race: %s (bytes %zu..%zu, warp %d, barrier epoch %d)\n", what, c * 16,
            c * 16 + 15, warp, epoch);
    exit(1);
}
static size_t chunk_of(const void *p) { return (size_t)((const unsigned char *)p - emu_smem_raw) / 16; }
static void smem_read(const void *p, int warp) {
    chunk &c = chunks[chunk_of(p)];
    if (c.pending || c.w_epoch == epoch) race("a warp reads a tile written since the last barrier", chunk_of(p), warp);
    if (c.r_epoch != epoch) { c.r_epoch = epoch; c.r_warps = 0; }
    c.r_warps |= 1u << warp;
}
static void smem_write_check(const void *p, int warp) {
    const chunk &c = chunks[chunk_of(p)];
    if (c.r_epoch == epoch && (c.r_warps & ~(1u << warp)))
        race("a cp.async overwrites a tile another warp read since the last barrier", chunk_of(p), warp);
}
static void in_smem(const void *p, size_t n, const char *what) {
    const unsigned char *c = (const unsigned char *)p;
    if (((uintptr_t)p & 15) != 0) fail(what);
    if (c < smem || c + n > smem + smem_bytes) fail(what);
}
static uint16_t h16(const void *p, int i) { return ((const uint16_t *)p)[i]; }
static float bf(uint32_t r, int hi) { bf16 h; h.u = (uint16_t)(hi ? r >> 16 : r & 0xffff); return __bfloat162float(h); }

/* the collective of one warp, all 32 lanes waiting in the same instruction */
static void run_collective(lane *W) {
    int op = W[0].op;
    for (int l = 1; l < 32; l++)
        if (W[l].op != op || (op == OP_SHFL && W[l].m != W[0].m)) fail("lanes of a warp reach different collectives");
    n_collectives++;
    if (op == OP_LDSM || op == OP_LDSM_T) {
        for (int l = 0; l < 32; l++) {
            in_smem(W[l].addr, 16, "ldmatrix row not 16-byte aligned or outside shared memory");
            smem_read(W[l].addr, (int)(W[0].tid.x / 32));
        }
        for (int l = 0; l < 32; l++)
            for (int j = 0; j < 4; j++) {
                uint32_t lo, hi;
                if (op == OP_LDSM) {   /* lane l: row l/4, columns 2(l%4), +1 of matrix j */
                    const void *row = W[8 * j + l / 4].addr;
                    lo = h16(row, 2 * (l % 4));
                    hi = h16(row, 2 * (l % 4) + 1);
                } else {               /* .trans: rows 2(l%4), +1 at column l/4 */
                    lo = h16(W[8 * j + 2 * (l % 4)].addr, l / 4);
                    hi = h16(W[8 * j + 2 * (l % 4) + 1].addr, l / 4);
                }
                W[l].r[j] = lo | hi << 16;
            }
    } else if (op == OP_MMA) {   /* D[16x8] = A[16x16] B[16x8] + C, fragments per the PTX ISA */
        float A[16][16], B[16][8], C[16][8];
        for (int l = 0; l < 32; l++) {
            int g = l / 4, t = l % 4;
            for (int h = 0; h < 2; h++) {
                A[g][2 * t + h] = bf(W[l].a[0], h);
                A[g + 8][2 * t + h] = bf(W[l].a[1], h);
                A[g][2 * t + 8 + h] = bf(W[l].a[2], h);
                A[g + 8][2 * t + 8 + h] = bf(W[l].a[3], h);
                B[2 * t + h][g] = bf(W[l].b[0], h);
                B[2 * t + 8 + h][g] = bf(W[l].b[1], h);
                C[g][2 * t + h] = W[l].c[h];
                C[g + 8][2 * t + h] = W[l].c[2 + h];
            }
        }
        for (int l = 0; l < 32; l++) {
            int g = l / 4, t = l % 4;
            for (int e = 0; e < 4; e++) {
                int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
                float acc = C[row][col];
                for (int k = 0; k < 16; k++) acc += A[row][k] * B[k][col];
                W[l].d[e] = acc;
            }
        }
    } else {   /* shfl.xor */
        for (int l = 0; l < 32; l++) W[l].d[0] = W[l ^ W[0].m].v;
    }
    for (int l = 0; l < 32; l++) W[l].state = RUN;
}

/* ---- Hopper warpgroup MMA (wgmma), per the PTX ISA "Asynchronous Warpgroup Level Matrix
 * Multiply-Accumulate" pages. The 128 threads of a warpgroup reach wgmma.fence, .mma_async,
 * .commit_group and .wait_group together (executed once all have arrived, like the warp
 * collectives). mma_async is issued there and executes at the latest moment the ISA allows,
 * the wait_group that retires its commit group: it then reads shared memory, the accumulator
 * and writes it, so a read of d before the covering wait sees the old values. Reported:
 * operands that changed in shared memory, or d changed by the thread, between issue and
 * execution; a wait with uncommitted wgmmas pending, or a kernel ending with wgmmas in flight;
 * a wgmma without a wgmma_fence since the thread last changed its accumulator (tracked for the
 * accumulators only: A's registers are passed by value); operands that cp.async wrote and no
 * fence.proxy.async of the writer (then a barrier) made visible to the async proxy; swizzled
 * or base-offset descriptors (not emulated), reserved descriptor bits, operands outside the
 * launch's dynamic shared memory. Arithmetic: per output, fp32 accumulation of the 16 exact
 * bf16 products in k order onto d (as mma16816 above). */
struct wg_op {
    int n, tb, rs, acc, group;   /* group -1: not committed yet */
    uint64_t adesc, bdesc;
    uint32_t a[128][4];          /* rs: A registers at issue */
    float *d[128];
    std::vector<float> snap;     /* d as the op will read it: at issue, or an earlier op's output */
    std::vector<uint16_t> A, B;  /* the shared-memory operands at issue, [64][16] and [n][16] */
};
struct wg_state { std::vector<wg_op> ops; int groups; };
static wg_state wgs[MAXT / 128];
[[noreturn]] static void wg_fail(int wg, const char *what) {
    fprintf(stderr, "cuda_emu: wgmma: %s (warpgroup %d)\n", what, wg);
    exit(1);
}
struct wg_desc { uint32_t start, lbo, sbo; };
/* matrix descriptor: bits 0-13 start >> 4, 16-29 LBO >> 4, 32-45 SBO >> 4, 49-51 base offset,
 * 62-63 swizzle; the other bits are reserved (zero) */
static wg_desc wg_decode(uint64_t desc, int wg) {
    if (desc >> 62) wg_fail(wg, "swizzled matrix descriptor (only the no-swizzle mode is emulated)");
    if ((desc >> 49) & 7) wg_fail(wg, "matrix descriptor with a non-zero base offset (not emulated)");
    if (desc & 0x3ff1c000c000c000ull) wg_fail(wg, "matrix descriptor with reserved bits set (address or offset not (x & 0x3FFFF) >> 4)");
    return {(uint32_t)(desc & 0x3fff) << 4, (uint32_t)((desc >> 16) & 0x3fff) << 4, (uint32_t)((desc >> 32) & 0x3fff) << 4};
}
/* byte offset of element (mn, k) of a 16-deep operand in the canonical no-swizzle layouts, T = 8
 * bf16: K-major ((8,m),(T,2k)):((1T,SBO),(1,LBO)), MN-major ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO)) */
static uint32_t wg_elem(const wg_desc &d, int kmajor, int mn, int k) {
    if (kmajor) return d.start + (mn % 8) * 16 + (mn / 8) * d.sbo + (k % 8) * 2 + (k / 8) * d.lbo;
    return d.start + (mn % 8) * 2 + (mn / 8) * d.sbo + (k % 8) * 16 + (k / 8) * d.lbo;
}
/* a 16-byte row of a core matrix read by the async proxy for warpgroup wg: inside the launch's
 * shared memory, a read by each of its 4 warps for the race detector, and (at issue) made
 * visible to the async proxy if cp.async wrote it */
static void wg_read_row(uint32_t off, int wg, int at_issue) {
    if ((size_t)off + 16 > smem_bytes) wg_fail(wg, "operand outside the launch's dynamic shared memory");
    const unsigned char *p = smem + off;
    for (int w = 0; w < 4; w++) smem_read(p, 4 * wg + w);
    const chunk &c = chunks[chunk_of(p)];
    if (at_issue && c.gen_writer) {
        const lane &L = lanes[c.gen_writer - 1];
        if ((int)L.proxy_fences.size() <= c.gen_fence || L.proxy_fences[c.gen_fence] >= epoch) {
            fprintf(stderr, "cuda_emu: wgmma: reads bytes %u..%u written by cp.async of thread %d with no "
                    "fence.proxy.async by that thread before the last barrier (warpgroup %d)\n", off, off + 15,
                    c.gen_writer - 1, wg);
            exit(1);
        }
    }
}
/* out[mn][16] = the operand of `rows` rows (M or N) at descriptor d */
static void wg_gather(uint64_t desc, int kmajor, int rows, uint16_t *out, int wg, int at_issue) {
    wg_desc d = wg_decode(desc, wg);
    for (int mn = 0; mn < rows; mn++)
        for (int k = 0; k < 16; k++) {
            uint32_t off = wg_elem(d, kmajor, mn, k);
            if (kmajor ? k % 8 == 0 : mn % 8 == 0) wg_read_row(off, wg, at_issue);
            out[mn * 16 + k] = h16(smem + off, 0);
        }
}
static lane::dmark &wg_mark(lane &L, float *d) {
    for (auto &m : L.marks)
        if (m.d == d) return m;
    L.marks.push_back({d, {}});
    return L.marks.back();
}
static void wg_issue(lane *W, int wg) {
    wg_state &S = wgs[wg];
    S.ops.emplace_back();
    wg_op &o = S.ops.back();
    const lane &L0 = W[0];
    o.n = L0.wg_n; o.tb = L0.wg_tb; o.rs = L0.wg_rs; o.acc = L0.wg_acc; o.group = -1;
    o.adesc = L0.wg_adesc; o.bdesc = L0.wg_bdesc;
    int nd = o.n / 2;
    o.snap.resize((size_t)128 * nd);
    for (int i = 0; i < 128; i++) {
        lane &L = W[i];
        if (!L.wg_fenced) wg_fail(wg, "wgmma issued with no wgmma_fence before it");
        for (auto &m : L.marks)
            if (m.d == L.wg_d && memcmp(m.v.data(), L.wg_d, sizeof(float) * std::min((size_t)nd, m.v.size())))
                wg_fail(wg, "accumulator changed since the last wgmma wrote it, and no wgmma_fence between");
        memcpy(o.a[i], L.a, sizeof o.a[i]);
        o.d[i] = L.wg_d;
        memcpy(&o.snap[(size_t)i * nd], L.wg_d, sizeof(float) * nd);
    }
    if (!o.rs) { o.A.resize(64 * 16); wg_gather(o.adesc, 1, 64, o.A.data(), wg, 1); }
    o.B.resize((size_t)o.n * 16);
    wg_gather(o.bdesc, !o.tb, o.n, o.B.data(), wg, 1);
}
static void wg_execute(wg_state &S, size_t j, int wg) {
    wg_op &o = S.ops[j];
    const int n = o.n, nd = n / 2;
    std::vector<uint16_t> now((size_t)std::max(n, 64) * 16);
    float A[64][16];
    if (!o.rs) {
        wg_gather(o.adesc, 1, 64, now.data(), wg, 0);
        if (memcmp(now.data(), o.A.data(), 64 * 16 * 2))
            wg_fail(wg, "shared memory of operand A changed between the wgmma and the wait that completes it");
        for (int r = 0; r < 64; r++)
            for (int k = 0; k < 16; k++) { bf16 h = {o.A[r * 16 + k]}; A[r][k] = __bfloat162float(h); }
    } else {   /* per warp w rows 16w.., mma.m16n8k16's A fragment */
        for (int i = 0; i < 128; i++) {
            int w = i / 32, g = (i % 32) / 4, t = i % 4;
            for (int h = 0; h < 2; h++) {
                A[16 * w + g][2 * t + h] = bf(o.a[i][0], h);
                A[16 * w + g + 8][2 * t + h] = bf(o.a[i][1], h);
                A[16 * w + g][2 * t + 8 + h] = bf(o.a[i][2], h);
                A[16 * w + g + 8][2 * t + 8 + h] = bf(o.a[i][3], h);
            }
        }
    }
    wg_gather(o.bdesc, !o.tb, n, now.data(), wg, 0);
    if (memcmp(now.data(), o.B.data(), (size_t)n * 16 * 2))
        wg_fail(wg, "shared memory of operand B changed between the wgmma and the wait that completes it");
    std::vector<float> B((size_t)16 * n);   /* B[k][col] */
    for (int c = 0; c < n; c++)
        for (int k = 0; k < 16; k++) { bf16 h = {o.B[c * 16 + k]}; B[(size_t)k * n + c] = __bfloat162float(h); }
    std::vector<float> out(nd);
    for (int i = 0; i < 128; i++) {
        float *d = o.d[i];
        if (memcmp(d, &o.snap[(size_t)i * nd], sizeof(float) * nd))
            wg_fail(wg, "accumulator changed by its thread between the wgmma and the wait that completes it");
        int w = i / 32, g = (i % 32) / 4, t = i % 4;
        for (int e = 0; e < nd; e++) {
            int row = 16 * w + g + 8 * ((e >> 1) & 1), col = 8 * (e >> 2) + 2 * t + (e & 1);
            float acc = o.acc ? d[e] : 0.f;
            for (int k = 0; k < 16; k++) acc += A[row][k] * B[(size_t)k * n + col];
            out[e] = acc;
        }
        memcpy(d, out.data(), sizeof(float) * nd);
        wg_mark(lanes[128 * wg + i], d).v = out;
        for (size_t l = j + 1; l < S.ops.size(); l++)   /* later wgmmas on the same d read this result */
            if (S.ops[l].d[i] == d)
                memcpy(&S.ops[l].snap[(size_t)i * (S.ops[l].n / 2)], d, sizeof(float) * std::min(nd, S.ops[l].n / 2));
    }
}
/* the collective of one warpgroup, all 128 threads waiting in the same wgmma instruction */
static void run_wg_collective(lane *W, int wg) {
    const lane &L0 = W[0];
    for (int i = 1; i < 128; i++) {
        const lane &L = W[i];
        if (L.op != L0.op || (L0.op == OP_WG_WAIT && L.m != L0.m) ||
            (L0.op == OP_WG_MMA && (L.wg_n != L0.wg_n || L.wg_tb != L0.wg_tb || L.wg_rs != L0.wg_rs ||
                                    L.wg_acc != L0.wg_acc || L.wg_bdesc != L0.wg_bdesc ||
                                    (!L0.wg_rs && L.wg_adesc != L0.wg_adesc))))
            wg_fail(wg, "threads of a warpgroup reach different wgmma instructions or operands");
    }
    n_collectives++;
    wg_state &S = wgs[wg];
    if (L0.op == OP_WG_FENCE) {
        for (int i = 0; i < 128; i++) {
            W[i].wg_fenced = 1;
            for (auto &m : W[i].marks) memcpy(m.v.data(), m.d, sizeof(float) * m.v.size());
        }
    } else if (L0.op == OP_WG_COMMIT) {
        for (auto &o : S.ops)
            if (o.group < 0) o.group = S.groups;
        S.groups++;
    } else if (L0.op == OP_WG_WAIT) {   /* all but the m most recent committed groups complete */
        for (auto &o : S.ops)
            if (o.group < 0) wg_fail(wg, "wgmma_wait with wgmmas issued but not committed (wgmma_commit missing)");
        size_t j = 0;
        while (j < S.ops.size() && S.ops[j].group < S.groups - L0.m) wg_execute(S, j++, wg);
        S.ops.erase(S.ops.begin(), S.ops.begin() + j);
    } else {
        wg_issue(W, wg);
    }
    for (int i = 0; i < 128; i++) W[i].state = RUN;
}

static void lane_main() {
    (*body)();
    cur->state = DONE;   /* uc_link returns to the scheduler */
}

/* run one block to completion */
static void run_block() {
    for (;;) {
        for (unsigned t = 0; t < nthreads; t++)
            if (lanes[t].state == RUN) {
                cur = &lanes[t];
                swapcontext(&sched, &lanes[t].ctx);
            }
        cur = NULL;
        int progress = 0;
        for (unsigned w = 0; w < nthreads / 32; w++) {
            int ncoll = 0;
            for (int l = 0; l < 32; l++) ncoll += lanes[w * 32 + l].state == COLL;
            if (ncoll != 32) continue;
            if (!is_wg_op(lanes[w * 32].op)) { run_collective(&lanes[w * 32]); progress = 1; continue; }
            if (nthreads % 128) fail("wgmma in a block whose size is not a multiple of 128 threads");
            for (int l = 1; l < 32; l++)
                if (lanes[w * 32 + l].op != lanes[w * 32].op) fail("lanes of a warp reach different collectives");
        }
        for (unsigned g = 0; g < nthreads / 128; g++) {   /* warpgroup collectives: all 128 arrived */
            int nwg = 0;
            for (int i = 0; i < 128; i++) nwg += lanes[g * 128 + i].state == COLL && is_wg_op(lanes[g * 128 + i].op);
            if (nwg == 128) { run_wg_collective(&lanes[g * 128], (int)g); progress = 1; }
        }
        if (progress) continue;
        unsigned nbar = 0, ndone = 0;
        for (unsigned t = 0; t < nthreads; t++) {
            nbar += lanes[t].state == BAR;
            ndone += lanes[t].state == DONE;
        }
        if (ndone == nthreads) {
            for (unsigned g = 0; g < nthreads / 128; g++)
                if (!wgs[g].ops.empty()) wg_fail((int)g, "kernel ends with wgmmas in flight (no wgmma_wait covers them)");
            return;
        }
        if (nbar + ndone != nthreads) fail("deadlock: a warp's lanes diverge around a collective");
        for (unsigned t = 0; t < nthreads; t++)
            if (lanes[t].state == BAR) lanes[t].state = RUN;
        epoch++;
    }
}
}  /* namespace emu */

static dim3 blockIdx, blockDim, gridDim;
#define threadIdx (emu::cur->tid)

static inline void __syncthreads() {
    emu::cur->state = emu::BAR;
    emu::yield_to_scheduler();
}
static inline float __shfl_xor_sync(unsigned mask, float v, int m) {
    (void)mask;
    emu::cur->v = v;
    emu::cur->m = m;
    emu::wait_collective(emu::OP_SHFL);
    return emu::cur->d[0];
}

/* cache-streaming loads and stores: hints to the cache, plain accesses here */
template <typename T> static inline T __ldcs(const T *p) { return *p; }
template <typename T> static inline void __stcs(T *p, T v) { *p = v; }

/* atomics: threads switch only at collectives, so a plain read-modify-write is atomic here */
static inline float atomicAdd(float *p, float v) { float o = *p; *p = o + v; return o; }
static inline bf16 atomicAdd(bf16 *p, bf16 v) {
    bf16 o = *p;
    *p = __float2bfloat16(__bfloat162float(o) + __bfloat162float(v));
    return o;
}
static inline __nv_bfloat162 atomicAdd(__nv_bfloat162 *p, __nv_bfloat162 v) {
    __nv_bfloat162 o = *p;
    atomicAdd(&p->x, v.x);
    atomicAdd(&p->y, v.y);
    return o;
}
static inline unsigned atomicAdd(unsigned *p, unsigned v) { unsigned o = *p; *p = o + v; return o; }
static inline float atomicExch(float *p, float v) { float o = *p; *p = v; return o; }
/* one thread runs at a time: every write is visible to every later read */
static inline void __threadfence() {}
static inline float rsqrtf(float x) { return 1.f / sqrtf(x); }

/* ---- kernels/mma.cuh, emulated ---- */
static inline uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return (uint32_t)v.x.u | (uint32_t)v.y.u << 16;
}
static inline void mma16816(float *c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
    emu::lane *L = emu::cur;
    L->a[0] = a0; L->a[1] = a1; L->a[2] = a2; L->a[3] = a3;
    L->b[0] = b0; L->b[1] = b1;
    for (int e = 0; e < 4; e++) L->c[e] = c[e];
    emu::wait_collective(emu::OP_MMA);
    for (int e = 0; e < 4; e++) c[e] = emu::cur->d[e];
}
static inline void ldsm_x4(uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3, const void *p) {
    emu::cur->addr = p;
    emu::wait_collective(emu::OP_LDSM);
    r0 = emu::cur->r[0]; r1 = emu::cur->r[1]; r2 = emu::cur->r[2]; r3 = emu::cur->r[3];
}
static inline void ldsm_x4_t(uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3, const void *p) {
    emu::cur->addr = p;
    emu::wait_collective(emu::OP_LDSM_T);
    r0 = emu::cur->r[0]; r1 = emu::cur->r[1]; r2 = emu::cur->r[2]; r3 = emu::cur->r[3];
}
static inline float ex2(float x) {   /* ex2.approx.ftz.f32: 2^x, denormal results to zero */
    float y = exp2f(x);
    return std::fpclassify(y) == FP_SUBNORMAL ? 0.f : y;
}
/* ---- Hopper wgmma (kernels/mma.cuh's sm_90a wrappers), emulated: see emu::wg_op above ---- */
/* a shared-memory address: here the byte offset in emu_smem_raw */
static inline uint32_t smem_addr(const void *p) {
    const unsigned char *c = (const unsigned char *)p;
    if (c < emu::smem || c >= emu::smem + emu::SMEM_MAX) emu::fail("smem_addr of a pointer outside shared memory");
    uint32_t a = (uint32_t)(c - emu::smem);
    if (a & 15) emu::cur->unaligned = a;
    return a;
}
static inline void wgmma_fence() { emu::wait_collective(emu::OP_WG_FENCE); }
static inline void wgmma_commit() { emu::wait_collective(emu::OP_WG_COMMIT); }
template <int n> static inline void wgmma_wait() {
    emu::cur->m = n;
    emu::wait_collective(emu::OP_WG_WAIT);
}
/* fence.proxy.async.shared::cta: this thread's earlier generic-proxy writes to shared memory
 * become visible to the async proxy (wgmma) of whoever passes a later barrier */
static inline void fence_proxy_async() { emu::cur->proxy_fences.push_back(emu::epoch); }
template <int n> static inline void wgmma_pin(float (&d)[n]) { (void)d; }
/* descriptor start addresses drop the low 4 bits: a start equal to a misaligned smem_addr result
 * rounded down is taken as built from it */
static inline void wgmma_check_start(uint64_t desc) {
    uint32_t u = emu::cur->unaligned;
    if (u != ~0u && (uint32_t)(desc & 0x3fff) == (u & 0x3ffff) >> 4)
        emu::fail("wgmma descriptor start address built from a shared-memory address not 16-byte aligned");
}
template <int N, int TB> static inline void wgmma_ss(float (&d)[N / 2], uint64_t adesc, uint64_t bdesc, int acc) {
    static_assert(N % 8 == 0 && N >= 8 && N <= 256 && (TB == 0 || TB == 1), "wgmma_ss: N or TB");
    emu::lane *L = emu::cur;
    wgmma_check_start(adesc);
    wgmma_check_start(bdesc);
    L->wg_n = N; L->wg_tb = TB; L->wg_rs = 0; L->wg_acc = acc != 0;
    L->wg_adesc = adesc; L->wg_bdesc = bdesc; L->wg_d = d;
    emu::wait_collective(emu::OP_WG_MMA);
}
template <int N, int TB>
static inline void wgmma_rs(float (&d)[N / 2], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint64_t bdesc, int acc) {
    static_assert(N % 8 == 0 && N >= 8 && N <= 256 && (TB == 0 || TB == 1), "wgmma_rs: N or TB");
    emu::lane *L = emu::cur;
    wgmma_check_start(bdesc);
    L->a[0] = a0; L->a[1] = a1; L->a[2] = a2; L->a[3] = a3;
    L->wg_n = N; L->wg_tb = TB; L->wg_rs = 1; L->wg_acc = acc != 0;
    L->wg_adesc = 0; L->wg_bdesc = bdesc; L->wg_d = d;
    emu::wait_collective(emu::OP_WG_MMA);
}

/* cp.async lands as late as the PTX allows: at the cp.async.wait_group that covers its group
 * (the source is read at issue), so a missing or too weak wait leaves NaN poison in the tile */
static inline void cp_async16(void *smem, const void *gmem, int bytes) {
    emu::in_smem(smem, 16, "cp.async destination not 16-byte aligned or outside shared memory");
    if (bytes < 0 || bytes > 16) emu::fail("cp.async src-size out of range");
    int warp = (int)(emu::cur->tid.x / 32);
    emu::smem_write_check(smem, warp);
    emu::chunks[emu::chunk_of(smem)].pending++;
    emu::lane::copy c = {smem, {0}, -1};
    if (bytes) {
        const char *g = (const char *)gmem;
        int ok = ((uintptr_t)g & 15) == 0 && bytes == 16;
        int inside = 0;
        for (const emu::range &r : emu::globals) inside |= g >= r.p && g + bytes <= r.p + r.n;
        if (!ok || !inside) emu::fail("cp.async source misaligned or outside every registered buffer");
        memcpy(c.data, gmem, bytes);
    }
    emu::cur->copies.push_back(c);
}
static inline void cp_async_commit() {
    emu::lane *L = emu::cur;
    for (auto &c : L->copies)
        if (c.group < 0) c.group = L->groups;
    L->groups++;
}
/* wait until at most n of the committed groups are pending */
template <int n> static inline void cp_async_wait() {
    emu::lane *L = emu::cur;
    std::vector<emu::lane::copy> keep;
    for (auto &c : L->copies) {
        if (c.group >= 0 && c.group < L->groups - n) {
            emu::chunk &k = emu::chunks[emu::chunk_of(c.dst)];
            emu::smem_write_check(c.dst, (int)(L->tid.x / 32));
            k.pending--;
            k.w_epoch = emu::epoch;
            k.gen_writer = (int)L->tid.x + 1;   /* a generic-proxy write: wgmma needs fence.proxy.async */
            k.gen_fence = (int)L->proxy_fences.size();
            memcpy(c.dst, c.data, 16);
        }
        else keep.push_back(c);
    }
    L->copies.swap(keep);
}

/* ---- the test's side ---- */
[[maybe_unused]] static void emu_register(const void *p, size_t bytes) { emu::globals.push_back({(const char *)p, bytes}); }

/* kernel<<<grid, threads, smem_bytes>>>(args...) as emu_launch(grid, threads, smem_bytes, [&] { kernel(args...); }) */
static void emu_launch(dim3 grid, unsigned threads, size_t smem_bytes, std::function<void()> fn) {
    if (threads > (unsigned)emu::MAXT || threads % 32) emu::fail("block size");
    if (smem_bytes > emu::SMEM_MAX) emu::fail("dynamic shared memory over 256 KiB");
    emu::body = &fn;
    emu::nthreads = threads;
    emu::smem_bytes = smem_bytes;
    blockDim = {threads, 1, 1};
    gridDim = grid;
    for (unsigned by = 0; by < grid.y; by++)
        for (unsigned bx = 0; bx < grid.x; bx++) {
            blockIdx = {bx, by, 0};
            memset(emu::smem, 0xff, smem_bytes);
            memset(emu::chunks, 0, sizeof emu::chunks);
            emu::epoch = 1;
            for (auto &g : emu::wgs) { g.ops.clear(); g.groups = 0; }
            for (unsigned t = 0; t < threads; t++) {
                emu::lane *L = &emu::lanes[t];
                getcontext(&L->ctx);
                L->ctx.uc_stack.ss_sp = &emu::stacks[(size_t)t * emu::STACK];
                L->ctx.uc_stack.ss_size = emu::STACK;
                L->ctx.uc_link = &emu::sched;
                makecontext(&L->ctx, emu::lane_main, 0);
                L->state = emu::RUN;
                L->tid = {t, 0, 0};
                L->copies.clear();
                L->groups = 0;
                L->wg_fenced = 0;
                L->marks.clear();
                L->proxy_fences.clear();
                L->unaligned = ~0u;
            }
            emu::run_block();
        }
}
#endif
