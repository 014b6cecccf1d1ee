/* test_wgmma_probe: the building blocks of the Hopper attention forward (flash_fwd3_kernel) one
 * at a time on the GPU, so that a failure of the whole kernel in test_cuda_ops points at its
 * cause: the wrappers of kernels/mma.cuh and the layout helpers of flash_attention.cuh
 * (cm_offset, wg_desc) in one wgmma each, against the product computed here in double.
 *   1. S = Q K^T as the kernel issues it: wgmma_ss, A and B K-major, m64 n64 k16 (and n128);
 *   2. O = P V: wgmma_rs, A from registers in the mma.m16n8k16 layout, B = V MN-major from the
 *      same core-matrix tile, m64 n96 k16 (LBO = D * 16 bytes between 8-key groups, SBO = 128
 *      bytes between 8-dim groups, the PTX ISA's canonical layout). If that fails, the same
 *      product is tried with LBO and SBO swapped and the result says which reading the hardware
 *      has, for the fix in desc_mn (and the emulation of tests/emu).
 * Exit 77 without a compute capability 9.0 GPU or without a build for sm_90a. */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
typedef __nv_bfloat16 bf16;
#include "mma.cuh"
#include "flash_attention.cuh"

/* D[64 x N] = A[64 x 16] B[N x 16]^T, both tiles given row-major in global memory and placed in
 * the core-matrix layout (DP = 16 columns) */
template <int N> __global__ void probe_ss(float *d, const bf16 *a, const bf16 *b) {
    __shared__ __align__(128) bf16 As[64 * 16], Bs[N * 16];
    for (int i = threadIdx.x; i < 64 * 16; i += blockDim.x) As[cm_offset<16>(i / 16, i % 16)] = a[i];
    for (int i = threadIdx.x; i < N * 16; i += blockDim.x) Bs[cm_offset<16>(i / 16, i % 16)] = b[i];
    fence_proxy_async();
    __syncthreads();
    float acc[N / 2];
    for (int i = 0; i < N / 2; i++) acc[i] = 0.f;
    wgmma_fence();
    wgmma_ss<N, 0>(acc, wg_desc(As, 128, 16 * 16), wg_desc(Bs, 128, 16 * 16), 0);
    wgmma_commit();
    wgmma_wait<0>();
    wgmma_pin(acc);
    int warp = threadIdx.x >> 5, g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
    for (int i = 0; i < N / 2; i++)
        d[(warp * 16 + g + 8 * ((i >> 1) & 1)) * N + 8 * (i >> 2) + 2 * t + (i & 1)] = acc[i];
}

/* D[64 x DP] = P[64 x 16] V[16 x DP]: P row-major in global memory, loaded into registers in the
 * A layout; V [16 keys][DP] placed as the kernel places a V tile; lbo/sbo as given */
template <int DP> __global__ void probe_rs(float *d, const bf16 *p, const bf16 *v, uint32_t lbo, uint32_t sbo) {
    __shared__ __align__(128) bf16 Vs[16 * DP];
    for (int i = threadIdx.x; i < 16 * DP; i += blockDim.x) Vs[cm_offset<DP>(i / DP, i % DP)] = v[i];
    fence_proxy_async();
    __syncthreads();
    int warp = threadIdx.x >> 5, g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3, r = warp * 16 + g;
    const uint32_t *pp = (const uint32_t *)p;   /* bf16 pairs: element (row, col) at pair row * 8 + col / 2 */
    uint32_t a0 = pp[r * 8 + t], a1 = pp[(r + 8) * 8 + t], a2 = pp[r * 8 + 4 + t], a3 = pp[(r + 8) * 8 + 4 + t];
    float acc[DP / 2];
    for (int i = 0; i < DP / 2; i++) acc[i] = 0.f;
    wgmma_fence();
    wgmma_rs<DP, 1>(acc, a0, a1, a2, a3, wg_desc(Vs, lbo, sbo), 0);
    wgmma_commit();
    wgmma_wait<0>();
    wgmma_pin(acc);
    for (int i = 0; i < DP / 2; i++)
        d[(r + 8 * ((i >> 1) & 1)) * DP + 8 * (i >> 2) + 2 * t + (i & 1)] = acc[i];
}

static int n_fail;
static uint32_t rng = 2024;
static bf16 rnd(void) {
    rng = rng * 1664525u + 1013904223u;
    return __float2bfloat16((rng >> 8) / 16777216.f * 2.f - 1.f);
}
#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { printf("FAIL %s: %s\n", #x, cudaGetErrorString(e_)); exit(1); } } while (0)

/* max |got - want| / max |want| over M x N, want[i][j] = sum_k x[i][k] y(k, j) */
static double compare(const float *got, const bf16 *x, const bf16 *y, int M, int N, int K, int y_is_nk) {
    double err = 0, mx = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double w = 0;
            for (int k = 0; k < K; k++)
                w += (double)__bfloat162float(x[i * K + k]) *
                     __bfloat162float(y_is_nk ? y[j * K + k] : y[k * N + j]);
            err = fmax(err, fabs(got[i * N + j] - w));
            mx = fmax(mx, fabs(w));
        }
    return err / (mx > 0 ? mx : 1);
}
static void report(int ok, const char *what, double e) {
    printf("%s %-62s max rel err %.2e (limit 1e-5)\n", ok ? "ok  " : "FAIL", what, e);
    n_fail += !ok;
}

template <int N> static void test_ss(void) {
    bf16 ha[64 * 16], hb[N * 16];
    for (auto &x : ha) x = rnd();
    for (auto &x : hb) x = rnd();
    bf16 *da, *db;
    float *dd, hd[64 * N];
    CK(cudaMalloc(&da, sizeof ha)); CK(cudaMalloc(&db, sizeof hb)); CK(cudaMalloc(&dd, sizeof hd));
    CK(cudaMemcpy(da, ha, sizeof ha, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(db, hb, sizeof hb, cudaMemcpyHostToDevice));
    probe_ss<N><<<1, 128>>>(dd, da, db);
    CK(cudaGetLastError());
    CK(cudaMemcpy(hd, dd, sizeof hd, cudaMemcpyDeviceToHost));
    double e = compare(hd, ha, hb, 64, N, 16, 1);
    char what[96];
    snprintf(what, sizeof what, "S = Q K^T: wgmma_ss m64n%dk16, K-major descriptors", N);
    report(e <= 1e-5, what, e);
    cudaFree(da); cudaFree(db); cudaFree(dd);
}

/* the P V product with the given descriptor offsets; returns the relative error */
template <int DP> static double run_rs(const bf16 *hp, const bf16 *hv, uint32_t lbo, uint32_t sbo) {
    bf16 *dp, *dv;
    float *dd, *hd = (float *)malloc(64 * DP * sizeof(float));
    CK(cudaMalloc(&dp, 64 * 16 * sizeof(bf16))); CK(cudaMalloc(&dv, 16 * DP * sizeof(bf16)));
    CK(cudaMalloc(&dd, 64 * DP * sizeof(float)));
    CK(cudaMemcpy(dp, hp, 64 * 16 * sizeof(bf16), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dv, hv, 16 * DP * sizeof(bf16), cudaMemcpyHostToDevice));
    probe_rs<DP><<<1, 128>>>(dd, dp, dv, lbo, sbo);
    CK(cudaGetLastError());
    CK(cudaMemcpy(hd, dd, 64 * DP * sizeof(float), cudaMemcpyDeviceToHost));
    double e = compare(hd, hp, hv, 64, DP, 16, 0);
    cudaFree(dp); cudaFree(dv); cudaFree(dd); free(hd);
    return e;
}

template <int DP> static void test_rs(void) {
    bf16 hp[64 * 16], hv[16 * DP];
    for (auto &x : hp) x = rnd();
    for (auto &x : hv) x = rnd();
    double e = run_rs<DP>(hp, hv, DP * 16, 128);   /* as desc_mn builds it for wg_pz */
    char what[96];
    snprintf(what, sizeof what, "O = P V: wgmma_rs m64n%dk16, V MN-major (LBO %d, SBO 128)", DP, DP * 16);
    report(e <= 1e-5, what, e);
    if (e > 1e-5) {
        double e2 = run_rs<DP>(hp, hv, 128, DP * 16);
        printf("note the same product with LBO and SBO swapped: max rel err %.2e: %s\n", e2,
               e2 <= 1e-5 ? "the hardware reads MN-major LBO/SBO the other way round: swap them in desc_mn and in tests/emu"
                          : "not the descriptor offsets either");
    }
}

int main(void) {
    int dev = 0, major = 0, minor = 0, n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) { printf("skipped: no CUDA device\n"); return 77; }
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    if (major != 9 || minor != 0) { printf("skipped: compute capability %d.%d, wgmma needs 9.0\n", major, minor); return 77; }
#ifndef IV2_WGMMA
    printf("skipped: not built for sm_90a (CUDA_ARCH without 90a)\n");
    return 77;
#endif
    test_ss<64>();
    test_ss<128>();
    test_rs<96>();
    test_rs<128>();
    test_rs<32>();
    printf("test_wgmma_probe: %d failed\n", n_fail);
    return n_fail ? 1 : 0;
}
