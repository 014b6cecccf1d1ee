/* cuda_emu.h: enough of CUDA to run the tensor-core kernels of kernels/flash_attention.cuh on
 * the CPU, instruction for instruction, where there is no GPU.
 *
 * It stands in for cuda_bf16.h and kernels/mma.cuh: every CUDA thread is a fiber (ucontext)
 * with its own registers and stack, a block's threads run one at a time on one OS thread, and
 * the warp-collective instructions (ldmatrix, ldmatrix.trans, mma.sync.m16n8k16, shfl.xor)
 * are executed once all 32 lanes of a warp have reached them, with the operand layouts of the
 * PTX ISA manual ("Matrix fragments for mma.m16n8k16", "ldmatrix"). __syncthreads waits for
 * every thread of the block. cp.async reads its source at issue and lands at the latest moment
 * the PTX allows, the cp.async.wait_group that covers its commit group, so a missing or too weak
 * wait shows as NaN poison.
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
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__
#define __align__(n)
#pragma GCC diagnostic ignored "-Wunknown-pragmas"

using std::min;
using std::max;

/* ---- bf16 (round to nearest even, as __float2bfloat16) ---- */
struct __nv_bfloat16 { uint16_t u; };
struct __nv_bfloat162 { __nv_bfloat16 x, y; };
struct float2 { float x, y; };
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
enum { OP_LDSM, OP_LDSM_T, OP_MMA, OP_SHFL };
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
struct chunk { int w_epoch, pending, r_epoch; uint32_t r_warps; };
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
            if (ncoll == 32) { run_collective(&lanes[w * 32]); progress = 1; }
        }
        if (progress) continue;
        unsigned nbar = 0, ndone = 0;
        for (unsigned t = 0; t < nthreads; t++) {
            nbar += lanes[t].state == BAR;
            ndone += lanes[t].state == DONE;
        }
        if (ndone == nthreads) return;
        if (nbar + ndone != nthreads) fail("deadlock: a warp's lanes diverge around a collective");
        for (unsigned t = 0; t < nthreads; t++)
            if (lanes[t].state == BAR) lanes[t].state = RUN;
        epoch++;
    }
}
}  /* namespace emu */

static dim3 blockIdx, blockDim;
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
            memcpy(c.dst, c.data, 16);
        }
        else keep.push_back(c);
    }
    L->copies.swap(keep);
}

/* ---- the test's side ---- */
static void emu_register(const void *p, size_t bytes) { emu::globals.push_back({(const char *)p, bytes}); }

/* kernel<<<grid, threads, smem_bytes>>>(args...) as emu_launch(grid, threads, smem_bytes, [&] { kernel(args...); }) */
static void emu_launch(dim3 grid, unsigned threads, size_t smem_bytes, std::function<void()> fn) {
    if (threads > (unsigned)emu::MAXT || threads % 32) emu::fail("block size");
    if (smem_bytes > emu::SMEM_MAX) emu::fail("dynamic shared memory over 256 KiB");
    emu::body = &fn;
    emu::nthreads = threads;
    emu::smem_bytes = smem_bytes;
    blockDim = {threads, 1, 1};
    for (unsigned by = 0; by < grid.y; by++)
        for (unsigned bx = 0; bx < grid.x; bx++) {
            blockIdx = {bx, by, 0};
            memset(emu::smem, 0xff, smem_bytes);
            memset(emu::chunks, 0, sizeof emu::chunks);
            emu::epoch = 1;
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
            }
            emu::run_block();
        }
}
#endif
