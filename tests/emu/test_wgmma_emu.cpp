/* test_wgmma_emu: the emulation of Hopper's wgmma in tests/emu/cuda_emu.h, checked on its own
 * (before any kernel uses it) from the PTX ISA's definitions, by kernels written here.
 *
 * Layouts: random bf16 matrices are placed in shared memory by this file's own code from the
 * ISA's canonical no-swizzle layouts (K-major ((8,m),(T,2k)):((1T,SBO),(1,LBO)), MN-major
 * ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO)), T = 8 bf16), with LBO != SBO and padding between the core
 * matrices, both orders (LBO < SBO and LBO > SBO). wgmma_ss and wgmma_rs, B K-major (TB 0) and
 * MN-major (TB 1), N in {8, 32, 96, 128, 256}, acc 0 and 1, chains of k-steps in one commit group
 * and across groups with partial waits, an accumulator rescaled between chains (with the fence),
 * and two warpgroups at once, are compared against a double-precision matmul: |err| <= 1e-5 of
 * sum |C| + sum |a b| per output (fp32 accumulation of exact bf16 products).
 *
 * Errors: each misuse the emulation reports (d read early gives old values; d or the operands
 * changed in flight; wait without commit; kernel ending in flight; no wgmma_fence; accumulator
 * changed without a fence; cp.async data read without fence.proxy.async; misaligned start;
 * operand outside shared memory; swizzle; base offset; mismatched operands across the
 * warpgroup; a shared-memory race) runs in a child process that must exit non-zero with the
 * message. */
#include "cuda_emu.h"
#include <string>
#include <sys/wait.h>
#include <unistd.h>

static int n_pass, n_fail;
static void report(bool ok, const char *what, const char *detail) {
    printf("%s %-62s %s\n", ok ? "ok  " : "FAIL", what, detail);
    ok ? n_pass++ : n_fail++;
}

static uint32_t rng = 2024;
static float frand() { rng = rng * 1664525u + 1013904223u; return (rng >> 8) / 16777216.f * 2.f - 1.f; }
static uint16_t rbf() { return __float2bfloat16(frand() * 2.f).u; }
static double fb(uint16_t u) { bf16 h = {u}; return __bfloat162float(h); }

/* ---- the shared-memory image, built here and copied in by the kernel with cp.async ---- */
struct image {
    std::vector<unsigned char> b;
    uint32_t alloc(uint32_t bytes) {   /* 16-byte aligned, with 16 bytes of padding after */
        uint32_t at = (uint32_t)b.size();
        b.resize(at + ((bytes + 15) / 16) * 16 + 16, 0xee);
        return at;
    }
    void put(uint32_t off, uint16_t v) { memcpy(&b[off], &v, 2); }
};
/* the two offsets of one operand: the step between core matrices along k (LBO) and along
 * M/N (SBO). tall: k-halves far apart (LBO > SBO); else M/N groups far apart (SBO > LBO) */
struct strides { uint32_t lbo, sbo, bytes; };
static strides pick(int rows, int tall) {   /* rows: the M/N extent (multiple of 8) */
    strides s;
    if (tall) { s.sbo = 128 + 16; s.lbo = (uint32_t)(rows / 8) * s.sbo + 48; s.bytes = s.lbo + (uint32_t)(rows / 8) * s.sbo; }
    else { s.lbo = 128 + 32; s.sbo = 2 * s.lbo + 16; s.bytes = (uint32_t)(rows / 8) * s.sbo; }
    return s;
}
/* m[mn][k] (k < 16) at start in the K-major or MN-major layout */
static void place(image &im, uint32_t start, strides s, int kmajor, const uint16_t *m, int rows) {
    for (int mn = 0; mn < rows; mn++)
        for (int k = 0; k < 16; k++) {
            uint32_t off = kmajor ? start + (mn % 8) * 16 + (mn / 8) * s.sbo + (k % 8) * 2 + (k / 8) * s.lbo
                                  : start + (mn % 8) * 2 + (mn / 8) * s.sbo + (k % 8) * 16 + (k / 8) * s.lbo;
            im.put(off, m[mn * 16 + k]);
        }
}
static uint64_t make_desc(uint32_t start, uint32_t lbo, uint32_t sbo) {
    return (uint64_t)((start >> 4) & 0x3fff) | (uint64_t)((lbo >> 4) & 0x3fff) << 16 |
           (uint64_t)((sbo >> 4) & 0x3fff) << 32;
}

/* ---- one case: per warpgroup, D = [C +] sum over k-steps of A_s B_s ---- */
struct wg_data {
    std::vector<uint16_t> A, B;   /* per step s: A[s][64][16], B[s][n][16] (B^T: [col][k]) */
    std::vector<float> C;         /* [64][n] */
    std::vector<uint64_t> ad, bd; /* descriptors per step */
};
struct spec { int steps, per_group, acc_first, wgs, tall, rescale; };

/* the accumulator of thread (warp w of its warpgroup, lane l): d[i] = D[row][col] */
static int drow(int w, int l, int i) { return 16 * w + l / 4 + 8 * ((i >> 1) & 1); }
static int dcol(int l, int i) { return 8 * (i >> 2) + 2 * (l % 4) + (i & 1); }
static uint32_t areg(const uint16_t *A, int w, int l, int j) {   /* rs: mma.m16n8k16's A fragment */
    int r = 16 * w + l / 4 + 8 * (j & 1), c = 2 * (l % 4) + 8 * (j >> 1);
    return (uint32_t)A[r * 16 + c] | (uint32_t)A[r * 16 + c + 1] << 16;
}

template <int N, int TB, int RS>
static void kernel_chain(const spec &sp, const image &im, const std::vector<wg_data> &wd, float *out) {
    unsigned char *smem = smem_raw;
    const unsigned tid = threadIdx.x;
    for (size_t c = tid; c < im.b.size() / 16; c += blockDim.x) cp_async16(smem + 16 * c, &im.b[16 * c], 16);
    cp_async_commit();
    cp_async_wait<0>();
    fence_proxy_async();
    __syncthreads();
    const int wg = (int)tid / 128, w = (int)(tid / 32) % 4, l = (int)tid % 32;
    const wg_data &D = wd[wg];
    float d[N / 2];
    for (int i = 0; i < N / 2; i++) d[i] = sp.acc_first ? D.C[drow(w, l, i) * N + dcol(l, i)] : 1e30f;
    wgmma_fence();
    /* warpgroup 1 groups its steps differently from warpgroup 0: they run independently */
    const int per = wg ? 1 : sp.per_group;
    int committed = 0;
    for (int s = 0; s < sp.steps; s++) {
        int acc = s > 0 || sp.acc_first;
        if (sp.rescale && s == sp.steps / 2) {   /* finish, scale by 2 (exact), fence, go on */
            wgmma_commit();
            wgmma_wait<0>();
            for (int i = 0; i < N / 2; i++) d[i] *= 2.f;
            wgmma_fence();
        }
        if (RS) {
            const uint16_t *A = &D.A[(size_t)s * 64 * 16];
            wgmma_rs<N, TB>(d, areg(A, w, l, 0), areg(A, w, l, 1), areg(A, w, l, 2), areg(A, w, l, 3), D.bd[s], acc);
        } else {
            wgmma_ss<N, TB>(d, D.ad[s], D.bd[s], acc);
        }
        if ((s + 1) % per == 0 || s == sp.steps - 1) {
            wgmma_commit();
            if (++committed >= 2) wgmma_wait<1>();
        }
    }
    wgmma_wait<0>();
    for (int i = 0; i < N / 2; i++) out[(size_t)wg * 64 * N + drow(w, l, i) * N + dcol(l, i)] = d[i];
}

/* random operands placed in the image; returns the data per warpgroup */
static std::vector<wg_data> make_case(int n, int tb, const spec &sp, image &im) {
    std::vector<wg_data> wd(sp.wgs);
    strides sa = pick(64, sp.tall), sb = pick(n, !sp.tall);
    for (auto &D : wd) {
        D.A.resize((size_t)sp.steps * 64 * 16);
        D.B.resize((size_t)sp.steps * n * 16);
        D.C.resize((size_t)64 * n);
        for (auto &x : D.A) x = rbf();
        for (auto &x : D.B) x = rbf();
        for (auto &x : D.C) x = frand() * 4.f;
        for (int s = 0; s < sp.steps; s++) {
            uint32_t a = im.alloc(sa.bytes), b = im.alloc(sb.bytes);
            place(im, a, sa, 1, &D.A[(size_t)s * 64 * 16], 64);
            place(im, b, sb, !tb, &D.B[(size_t)s * n * 16], n);
            D.ad.push_back(make_desc(a, sa.lbo, sa.sbo));
            D.bd.push_back(make_desc(b, sb.lbo, sb.sbo));
        }
    }
    return wd;
}

template <int N, int TB, int RS> static void run_case(const spec &sp) {
    image im;
    std::vector<wg_data> wd = make_case(N, TB, sp, im);
    std::vector<float> out((size_t)sp.wgs * 64 * N, NAN);
    emu::globals.clear();
    emu_register(im.b.data(), im.b.size());
    emu_launch({1, 1, 1}, 128 * sp.wgs, im.b.size(), [&] { kernel_chain<N, TB, RS>(sp, im, wd, out.data()); });
    double worst = 0;
    for (int g = 0; g < sp.wgs; g++)
        for (int r = 0; r < 64; r++)
            for (int c = 0; c < N; c++) {
                const wg_data &D = wd[g];
                double want = sp.acc_first ? D.C[r * N + c] : 0, mag = fabs(want);
                for (int s = 0; s < sp.steps; s++) {
                    if (sp.rescale && s == sp.steps / 2) { want *= 2; mag *= 2; }
                    for (int k = 0; k < 16; k++) {
                        double p = fb(D.A[((size_t)s * 64 + r) * 16 + k]) * fb(D.B[((size_t)s * N + c) * 16 + k]);
                        want += p;
                        mag += fabs(p);
                    }
                }
                double e = fabs(out[(size_t)g * 64 * N + r * N + c] - want) / (mag > 0 ? mag : 1);
                worst = e != e ? INFINITY : std::max(worst, e);
            }
    char what[128], detail[64];
    snprintf(what, sizeof what, "wgmma_%s N%-3d TB%d steps %d/group %d acc %d wgs %d%s%s", RS ? "rs" : "ss", N, TB,
             sp.steps, sp.per_group, sp.acc_first, sp.wgs, sp.tall ? " lbo>sbo" : " sbo>lbo",
             sp.rescale ? " rescaled" : "");
    snprintf(detail, sizeof detail, "rel err %.2e (limit 1e-05)", worst);
    report(worst <= 1e-5, what, detail);
}

/* ---- misuse: each kernel below must stop the emulation with its message ---- */
enum {
    M_EARLY_READ, M_SMEM_CHANGED, M_D_CHANGED, M_NO_COMMIT, M_IN_FLIGHT, M_NO_FENCE, M_D_NO_FENCE,
    M_NO_PROXY_FENCE, M_PROXY_FENCE_LATE, M_UNALIGNED, M_OUTSIDE, M_SWIZZLE, M_BASE_OFFSET, M_MISMATCH,
    M_RACE, M_RACE_W, M_PARTIAL_WAIT, M_OK
};
/* one warpgroup, N = 32, one K-major ss wgmma; mode picks the mistake */
static void kernel_misuse(int mode, const image &im, uint64_t ad, uint64_t bd, float *out) {
    unsigned char *smem = smem_raw;
    const unsigned tid = threadIdx.x;
    const int wg = (int)tid / 128, l = (int)tid % 32, w = (int)(tid / 32) % 4;
    for (size_t c = tid; c < im.b.size() / 16; c += blockDim.x) cp_async16(smem + 16 * c, &im.b[16 * c], 16);
    cp_async_commit();
    cp_async_wait<0>();
    if (mode != M_NO_PROXY_FENCE && mode != M_PROXY_FENCE_LATE) fence_proxy_async();
    __syncthreads();
    if (mode == M_PROXY_FENCE_LATE) fence_proxy_async();   /* after the barrier: too late for the others */
    if (mode == M_UNALIGNED) ad = make_desc(smem_addr(smem + (ad & 0x3fff) * 16 + 8), 160, 336);
    if (mode == M_OUTSIDE) ad = make_desc((uint32_t)im.b.size() - 64, 160, 336);
    if (mode == M_SWIZZLE) ad |= 1ull << 62;
    if (mode == M_BASE_OFFSET) ad |= 1ull << 49;
    if (mode == M_MISMATCH && tid == 77) bd += 1;
    if (wg == 1) {   /* M_RACE(_W): the other warpgroup overwrites A's tile before any barrier */
        if (mode == M_RACE_W) {   /* two warpgroup collectives: after warpgroup 0's wgmma is issued */
            wgmma_fence();
            wgmma_fence();
        }
        cp_async16(smem + (ad & 0x3fff) * 16, &im.b[0], 16);
        cp_async_commit();
        cp_async_wait<0>();
        return;
    }
    float d[16];
    for (int i = 0; i < 16; i++) d[i] = 1.f;
    if (mode != M_NO_FENCE) wgmma_fence();
    wgmma_ss<32, 0>(d, ad, bd, 0);
    if (mode == M_IN_FLIGHT) { wgmma_commit(); return; }
    if (mode == M_PARTIAL_WAIT) {   /* a second group on another accumulator; wait<1> leaves it pending */
        float e[16];
        for (int i = 0; i < 16; i++) e[i] = 1.f;
        wgmma_commit();
        wgmma_ss<32, 0>(e, ad, bd, 0);
        wgmma_commit();
        wgmma_wait<1>();
        out[2 * tid] = d[0];
        out[2 * tid + 1] = e[0];   /* read early on purpose: still 1 */
        wgmma_wait<0>();
        return;
    }
    if (mode != M_NO_COMMIT) wgmma_commit();
    if (mode == M_EARLY_READ) out[2 * tid] = d[0];   /* before the wait: still 1 */
    if (mode == M_SMEM_CHANGED && tid == 0) smem[(ad & 0x3fff) * 16] ^= 1;
    if (mode == M_D_CHANGED && tid == 5) d[3] = 0.f;
    wgmma_wait<0>();
    if (mode == M_D_NO_FENCE) {
        d[0] *= 0.5f;   /* an ordinary instruction touches the accumulator, then no wgmma_fence */
        wgmma_ss<32, 0>(d, ad, bd, 1);
        wgmma_commit();
        wgmma_wait<0>();
    }
    if (mode != M_EARLY_READ) out[2 * tid] = d[0];
    (void)l; (void)w;
}

/* run kernel_misuse(mode) in a child; returns its exit status, its stderr in msg, thread 0's two
 * outputs in out0[2] */
static int run_child(int mode, std::string &msg, float *out0) {
    int fd[2];
    if (pipe(fd)) { perror("pipe"); exit(2); }
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        dup2(fd[1], 2);
        image im;
        strides sa = pick(64, 0), sb = pick(32, 0);   /* lbo 160, sbo 336 */
        uint32_t a = im.alloc(sa.bytes), b = im.alloc(sb.bytes);
        std::vector<uint16_t> A(64 * 16), B(32 * 16);
        for (auto &x : A) x = rbf();
        for (auto &x : B) x = rbf();
        place(im, a, sa, 1, A.data(), 64);
        place(im, b, sb, 1, B.data(), 32);
        float out[512];
        emu_register(im.b.data(), im.b.size());
        int threads = mode == M_RACE || mode == M_RACE_W ? 256 : 128;
        emu_launch({1, 1, 1}, threads, im.b.size(), [&] {
            kernel_misuse(mode, im, make_desc(a, sa.lbo, sa.sbo), make_desc(b, sb.lbo, sb.sbo), out);
        });
        double want = 0;   /* thread 0's d[0] = D[0][0] */
        for (int k = 0; k < 16; k++) want += fb(A[k]) * fb(B[k]);
        /* thread 0's d[0] as raw bytes first, then the reference as text */
        if (write(fd[1], out, 2 * sizeof(float)) != 2 * sizeof(float)) _exit(3);
        fprintf(stderr, "\nwant %.9g\n", want);
        _exit(0);
    }
    close(fd[1]);
    char buf[4096];
    msg.clear();
    ssize_t k;
    while ((k = read(fd[0], buf, sizeof buf)) > 0) msg.append(buf, (size_t)k);
    close(fd[0]);
    int st;
    waitpid(pid, &st, 0);
    out0[0] = out0[1] = NAN;
    if (msg.size() >= 8 && WIFEXITED(st) && WEXITSTATUS(st) == 0) memcpy(out0, msg.data(), 8);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void expect_error(int mode, const char *what, const char *needle) {
    std::string msg;
    float v[2];
    int rc = run_child(mode, msg, v);
    bool ok = rc != 0 && msg.find(needle) != std::string::npos;
    std::string first = msg.substr(0, msg.find('\n'));
    report(ok, what, ok ? ("stops: " + first.substr(0, 110)).c_str() : ("rc " + std::to_string(rc) + ": " + msg).c_str());
}

int main() {
    /* layouts x shapes: ss and rs, both B majors, each N, acc 0/1, k-step chains */
    run_case<8, 0, 0>({1, 1, 0, 1, 0, 0});
    run_case<8, 1, 1>({3, 3, 1, 1, 1, 0});
    run_case<32, 0, 0>({4, 4, 1, 1, 0, 0});
    run_case<32, 1, 0>({4, 1, 0, 1, 1, 0});
    run_case<32, 0, 1>({2, 1, 1, 1, 1, 0});
    run_case<32, 1, 1>({4, 2, 0, 1, 0, 0});
    run_case<96, 0, 0>({3, 1, 1, 1, 1, 0});
    run_case<96, 1, 0>({2, 2, 0, 1, 0, 0});
    run_case<96, 0, 1>({4, 4, 0, 1, 0, 0});
    run_case<96, 1, 1>({3, 1, 1, 1, 1, 0});
    run_case<128, 0, 0>({4, 2, 1, 2, 0, 0});
    run_case<128, 1, 0>({4, 4, 0, 2, 1, 1});
    run_case<128, 0, 1>({4, 1, 1, 2, 1, 1});
    run_case<128, 1, 1>({4, 2, 0, 2, 0, 0});
    run_case<256, 0, 0>({2, 2, 0, 1, 1, 0});
    run_case<256, 1, 0>({2, 1, 1, 2, 0, 0});
    run_case<256, 0, 1>({3, 3, 1, 1, 0, 1});
    run_case<256, 1, 1>({2, 1, 0, 2, 1, 0});

    /* a correct kernel trips nothing, and the early read sees the old accumulator */
    std::string msg;
    float v[2];
    int rc = run_child(M_OK, msg, v);
    size_t at = msg.find("want ");
    double want = at == std::string::npos ? NAN : atof(msg.c_str() + at + 5);
    report(rc == 0 && fabs(v[0] - want) <= 1e-5 * (1 + fabs(want)), "misuse kernel done right: no error, D[0][0] right",
           ("rc " + std::to_string(rc)).c_str());
    rc = run_child(M_EARLY_READ, msg, v);
    report(rc == 0 && v[0] == 1.f, "d read before wgmma_wait: the old value (1), not A B", ("rc " + std::to_string(rc)).c_str());
    rc = run_child(M_PARTIAL_WAIT, msg, v);
    report(rc == 0 && fabs(v[0] - want) <= 1e-5 * (1 + fabs(want)) && v[1] == 1.f,
           "wgmma_wait<1>: first group done, the newest still pending", ("rc " + std::to_string(rc)).c_str());
    expect_error(M_SMEM_CHANGED, "operand smem overwritten before the wait", "changed between the wgmma and the wait");
    expect_error(M_D_CHANGED, "d written by its thread before the wait", "accumulator changed by its thread");
    expect_error(M_NO_COMMIT, "wait with the wgmma not committed", "not committed");
    expect_error(M_IN_FLIGHT, "kernel ends with the wgmma in flight", "kernel ends with wgmmas in flight");
    expect_error(M_NO_FENCE, "no wgmma_fence before the first wgmma", "no wgmma_fence before it");
    expect_error(M_D_NO_FENCE, "accumulator touched, then wgmma without a fence", "no wgmma_fence between");
    expect_error(M_NO_PROXY_FENCE, "cp.async data read with no fence.proxy.async", "fence.proxy.async");
    expect_error(M_PROXY_FENCE_LATE, "fence.proxy.async after the barrier", "fence.proxy.async");
    expect_error(M_UNALIGNED, "descriptor start from an unaligned address", "not 16-byte aligned");
    expect_error(M_OUTSIDE, "operand past the dynamic shared memory", "outside the launch's dynamic shared memory");
    expect_error(M_SWIZZLE, "swizzled descriptor", "swizzled");
    expect_error(M_BASE_OFFSET, "descriptor base offset", "base offset");
    expect_error(M_MISMATCH, "one thread with another descriptor", "different wgmma instructions or operands");
    expect_error(M_RACE, "other warpgroup writes an operand, wgmma reads (no barrier)", "shared-memory race");
    expect_error(M_RACE_W, "wgmma reads, other warpgroup overwrites (no barrier)", "another warp read");
    printf("%lld collectives emulated\n%d passed, %d failed\n", emu::n_collectives, n_pass, n_fail);
    return n_fail ? 1 : 0;
}
