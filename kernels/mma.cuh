/* mma.cuh: the PTX the attention kernels are built on: bf16 tensor-core MMA (m16n8k16, fp32
 * accumulate), ldmatrix (plain and .trans), cp.async with zero fill, and Hopper's warpgroup MMA
 * (wgmma, with its fences and shared-memory descriptors' address). One wrapper per
 * instruction, nothing else, so that tests/emu/ can replace exactly this file with a host
 * emulation of the same instructions (tests/emu/cuda_emu.h) and run the kernels of
 * flash_attention.cuh on the CPU. Internal to kernels/. */
#ifndef IV2_MMA_CUH
#define IV2_MMA_CUH

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}
__device__ __forceinline__ void mma16816(float *c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* 2^x on the SFU with denormal results flushed to zero (probabilities that small add nothing);
 * exp2f without -use_fast_math wraps the same instruction in range fix-ups */
__device__ __forceinline__ float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, int bytes) {
    uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int n> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(n)); }
__device__ __forceinline__ void ldsm_x4(uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3, const void *p) {
    uint32_t s = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(s));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3, const void *p) {
    uint32_t s = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(s));
}

/* ---- Hopper warpgroup MMA (sm_90a only; elsewhere these trap, and attention.cu never launches
 * the kernel that uses them) ----
 * wgmma_ss / wgmma_rs: the 128 threads of a warpgroup compute D[64 x N] (+)= A[64 x 16] B[16 x N]
 * (bf16 in, fp32 accumulate; acc = 0 overwrites D). A comes from shared memory through a matrix
 * descriptor (ss) or from registers in mma.m16n8k16's A layout, per warp 16 rows (rs); B from a
 * descriptor, K-major (TB = 0) or MN-major (TB = 1). The instruction is asynchronous: D, A's
 * registers and the operands in shared memory stay untouched until the wgmma_wait that retires
 * its commit group, and wgmma_fence must come between other instructions' use of D or A and
 * the next wgmma. Shared memory written by ordinary stores or cp.async reaches wgmma only after
 * the writer's fence_proxy_async and a barrier. */
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define IV2_SM90A_DEVICE 1
#endif
__device__ __forceinline__ uint32_t smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }
#ifdef IV2_SM90A_DEVICE
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int n> __device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(n) : "memory");
}
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
#else
__device__ __forceinline__ void wgmma_fence() { __trap(); }
__device__ __forceinline__ void wgmma_commit() { __trap(); }
template <int n> __device__ __forceinline__ void wgmma_wait() { __trap(); }
__device__ __forceinline__ void fence_proxy_async() { __trap(); }
#endif

/* the compiler must not move reads of an accumulator above the wait that completes it: the
 * asm after the wait "rewrites" each register (CUTLASS's warpgroup_fence_operand) */
template <int n> __device__ __forceinline__ void wgmma_pin(float (&d)[n]) {
#pragma unroll
    for (int i = 0; i < n; i++) asm volatile("" : "+f"(d[i])::"memory");
}

/* the operand lists of the instructions, per N (generated once; N / 2 accumulator registers
 * first, then ss: a-desc, b-desc, acc, TB; rs: a0..a3, b-desc, acc, TB) */
#define WG_D8(d, i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
                    "+f"(d[i + 6]), "+f"(d[i + 7])
#define WG_REGS32 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}"
#define WG_OPS32(d) WG_D8(d, 0), WG_D8(d, 8)
#define WG_SS32 "%16, %17, p, 1, 1, 0, %19"
#define WG_RS32 "{%16, %17, %18, %19}, %20, p, 1, 1, %22"
#define WG_P32 "%18"
#define WG_PR32 "%21"
#define WG_REGS64 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define WG_OPS64(d) WG_D8(d, 0), WG_D8(d, 8), WG_D8(d, 16), WG_D8(d, 24)
#define WG_SS64 "%32, %33, p, 1, 1, 0, %35"
#define WG_RS64 "{%32, %33, %34, %35}, %36, p, 1, 1, %38"
#define WG_P64 "%34"
#define WG_PR64 "%37"
#define WG_REGS96 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47}"
#define WG_OPS96(d) WG_D8(d, 0), WG_D8(d, 8), WG_D8(d, 16), WG_D8(d, 24), WG_D8(d, 32), WG_D8(d, 40)
#define WG_SS96 "%48, %49, p, 1, 1, 0, %51"
#define WG_RS96 "{%48, %49, %50, %51}, %52, p, 1, 1, %54"
#define WG_P96 "%50"
#define WG_PR96 "%53"
#define WG_REGS128 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define WG_OPS128(d) WG_D8(d, 0), WG_D8(d, 8), WG_D8(d, 16), WG_D8(d, 24), WG_D8(d, 32), WG_D8(d, 40), WG_D8(d, 48), WG_D8(d, 56)
#define WG_SS128 "%64, %65, p, 1, 1, 0, %67"
#define WG_RS128 "{%64, %65, %66, %67}, %68, p, 1, 1, %70"
#define WG_P128 "%66"
#define WG_PR128 "%69"

#define WGMMA_SS_ASM(n)                                                                                             \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " WG_P##n ", 0;\nwgmma.mma_async.sync.aligned.m64n" #n           \
                 "k16.f32.bf16.bf16 " WG_REGS##n ", " WG_SS##n ";\n}\n"                                               \
                 : WG_OPS##n(d)                                                                                     \
                 : "l"(adesc), "l"(bdesc), "r"(acc), "n"(TB))
#define WGMMA_RS_ASM(n)                                                                                             \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " WG_PR##n ", 0;\nwgmma.mma_async.sync.aligned.m64n" #n          \
                 "k16.f32.bf16.bf16 " WG_REGS##n ", " WG_RS##n ";\n}\n"                                               \
                 : WG_OPS##n(d)                                                                                     \
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(bdesc), "r"(acc), "n"(TB))

template <int N, int TB>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 2], uint64_t adesc, uint64_t bdesc, int acc) {
    static_assert(N == 32 || N == 64 || N == 96 || N == 128, "wgmma_ss: N not generated");
#ifdef IV2_SM90A_DEVICE
    if constexpr (N == 32) WGMMA_SS_ASM(32);
    else if constexpr (N == 64) WGMMA_SS_ASM(64);
    else if constexpr (N == 96) WGMMA_SS_ASM(96);
    else WGMMA_SS_ASM(128);
#else
    __trap();
#endif
}
template <int N, int TB>
__device__ __forceinline__ void wgmma_rs(float (&d)[N / 2], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint64_t bdesc, int acc) {
    static_assert(N == 32 || N == 64 || N == 96 || N == 128, "wgmma_rs: N not generated");
#ifdef IV2_SM90A_DEVICE
    if constexpr (N == 32) WGMMA_RS_ASM(32);
    else if constexpr (N == 64) WGMMA_RS_ASM(64);
    else if constexpr (N == 96) WGMMA_RS_ASM(96);
    else WGMMA_RS_ASM(128);
#else
    __trap();
#endif
}

#endif
