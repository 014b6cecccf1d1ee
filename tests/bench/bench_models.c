/* bench_models.c: forward throughput (tokens/s) of the three ViTs on the CPU backend, at the
 * tiny presets and at ViT-B width (768, 12 heads, MLP 3072; 2 blocks to keep the run short),
 * with the real 224px token grids; beside the same forwards in PyTorch (transformers
 * InternVLVisionModel / VideoMAEModel, a restated student; sdpa attention, fp32, same thread
 * count), each right after ours in the same run, when `python3 -c 'import torch, transformers'`
 * works.
 * Medians of IV2_BENCH_REPS runs (default 3) after one warm-up; IV2_THREADS threads (default
 * all cores; IV2_BENCH_TORCH=0 skips PyTorch). Arguments: substrings of the model names to run.
 * Ratio > 1 means ours is faster. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "compute.h"
#include "err.h"
#include "log.h"
#include "vit.h"

static int reps = 3;

static int cmp_d(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }
static double median(double *t, int n) { qsort(t, n, sizeof(double), cmp_d); return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]); }

typedef struct {
    const char *name, *preset, *json;
    int S;                 /* samples per forward (frames for InternViT, clips otherwise) */
    const char *torch;     /* python expression returning the median ms of the same forward */
    double ms, tok_s, torch_ms;
} bench_t;

static bench_t benches[] = {
    {"internvit-tiny x8 frames", "internvit-tiny", NULL, 8, "ivit(96,3,384,6,8)", 0, 0, 0},
    {"videomae-tiny x1 clip", "videomae-tiny", NULL, 1, "vmae(96,3,384,4,1)", 0, 0, 0},
    {"iv2-tiny x1 clip", "iv2-tiny", NULL, 1, "stud(96,3,384,6,1)", 0, 0, 0},
    {"internvit B-width d2 x8", "internvit-tiny",
     "{\"width\":768,\"heads\":12,\"mlp\":3072,\"depth\":2,\"pool_heads\":12,\"pool_dim\":768}", 8,
     "ivit(768,12,3072,2,8)", 0, 0, 0},
    {"videomae B-width d2 x1", "videomae-tiny", "{\"width\":768,\"heads\":12,\"mlp\":3072,\"depth\":2}", 1,
     "vmae(768,12,3072,2,1)", 0, 0, 0},
    {"iv2-b d2 x1", "iv2-b", "{\"depth\":2}", 1, "stud(768,12,3072,2,1)", 0, 0, 0},
};
#define NB ((int)(sizeof benches / sizeof benches[0]))

static int run_ours(iv2_backend *be, bench_t *b) {
    iv2_vit_config c;
    if (iv2_vit_preset(b->preset, &c) || (b->json && iv2_vit_config_json(&c, b->json)) || iv2_vit_config_check(&c))
        return -1;
    iv2_vit *m = iv2_vit_create(be, &c);
    if (!m) return -1;
    iv2_vit_init_random(m, 1);
    m->batch = b->S;
    size_t nfr = (size_t)b->S * c.frames * c.img * c.img * 3;
    uint8_t *fr = malloc(nfr);
    for (size_t i = 0; i < nfr; i++) fr[i] = (uint8_t)(i * 2654435761u >> 24);
    void *frames = be->alloc(be, nfr);
    be->upload_raw(be, frames, fr, nfr);
    int N = iv2_vit_tokens(&c);
    iv2_vit_io io = {0};
    io.frames = frames; io.S = b->S; io.n_out = 1; io.blocks[0] = c.depth - 1;
    io.out[0] = be->alloc(be, (size_t)b->S * N * c.width * be->esize);
    if (c.pool_heads) io.pooled = be->alloc(be, (size_t)b->S * c.pool_dim * be->esize);
    double t[32];
    int rc = 0;
    for (int r = -1; r < reps && !rc; r++) {
        double t0 = iv2_now();
        rc = iv2_vit_forward(m, &io);
        be->sync(be);
        if (r >= 0) t[r] = iv2_now() - t0;
    }
    if (!rc) {
        b->ms = median(t, reps) * 1e3;
        b->tok_s = (double)b->S * N / (b->ms * 1e-3);
    }
    be->free(be, io.out[0]);
    if (io.pooled) be->free(be, io.pooled);
    be->free(be, frames);
    free(fr);
    iv2_vit_free(m);
    return rc;
}

static const char *torch_prelude =
    "import torch, time, statistics\n"
    "import torch.nn as nn, torch.nn.functional as F\n"
    "torch.set_num_threads(%d)\n"
    "REPS = %d\n"
    "def bench(f):\n"
    "    with torch.inference_mode():\n"
    "        f()\n"
    "        ts = []\n"
    "        for _ in range(REPS):\n"
    "            t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)\n"
    "    return statistics.median(ts) * 1e3\n"
    "def ivit(C, H, M, D, S):\n"
    "    from transformers import InternVLVisionConfig, InternVLVisionModel\n"
    "    cfg = InternVLVisionConfig(hidden_size=C, num_hidden_layers=D, num_attention_heads=H, intermediate_size=M,\n"
    "        image_size=224, patch_size=14, norm_type='rms_norm', use_qk_norm=True, attention_bias=False,\n"
    "        layer_norm_eps=1e-6, hidden_act='gelu', use_mean_pooling=True)\n"
    "    cfg._attn_implementation = 'sdpa'\n"
    "    m = InternVLVisionModel(cfg).eval(); x = torch.randn(S, 3, 224, 224)\n"
    "    return bench(lambda: m(pixel_values=x))\n"
    "def vmae(C, H, M, D, S):\n"
    "    from transformers import VideoMAEConfig, VideoMAEModel\n"
    "    cfg = VideoMAEConfig(image_size=224, patch_size=14, num_frames=16, tubelet_size=2, hidden_size=C,\n"
    "        num_hidden_layers=D, num_attention_heads=H, intermediate_size=M, qkv_bias=True, layer_norm_eps=1e-6,\n"
    "        use_mean_pooling=False)\n"
    "    cfg._attn_implementation = 'sdpa'\n"
    "    m = VideoMAEModel(cfg).eval(); x = torch.randn(S, 16, 3, 224, 224)\n"
    "    return bench(lambda: m(pixel_values=x))\n"
    "class SB(nn.Module):\n"
    "    def __init__(s, C, H, M):\n"
    "        super().__init__(); s.H = H\n"
    "        s.n1, s.qn, s.kn, s.n2 = (nn.RMSNorm(C, eps=1e-6) for _ in range(4))\n"
    "        s.qkv = nn.Linear(C, 3 * C, bias=False); s.proj = nn.Linear(C, C)\n"
    "        s.fc1 = nn.Linear(C, M); s.fc2 = nn.Linear(M, C)\n"
    "        s.g1 = nn.Parameter(torch.ones(C)); s.g2 = nn.Parameter(torch.ones(C))\n"
    "    def forward(s, x):\n"
    "        B, N, C = x.shape; q, k, v = s.qkv(s.n1(x)).chunk(3, -1); q, k = s.qn(q), s.kn(k)\n"
    "        sp = lambda t: t.reshape(B, N, s.H, -1).transpose(1, 2)\n"
    "        a = F.scaled_dot_product_attention(sp(q), sp(k), sp(v)).transpose(1, 2).reshape(B, N, C)\n"
    "        x = x + s.g1 * s.proj(a)\n"
    "        return x + s.g2 * s.fc2(F.gelu(s.fc1(s.n2(x)), approximate='tanh'))\n"
    "def stud(C, H, M, D, S):\n"
    "    pe = nn.Conv3d(3, C, (1, 14, 14), (1, 14, 14)); cls = torch.zeros(1, 1, C); pos = torch.zeros(1, 2049, C)\n"
    "    blocks = nn.ModuleList([SB(C, H, M) for _ in range(D)]); x = torch.randn(S, 3, 8, 224, 224)\n"
    "    def f():\n"
    "        t = pe(x).flatten(2).transpose(1, 2); t = torch.cat([cls.expand(S, -1, -1), t], 1) + pos\n"
    "        for b in blocks: t = b(t)\n"
    "        return t\n"
    "    return bench(f)\n";

static int torch_ok = -1;

/* the same forward of bench b in PyTorch, in its own python process right after ours, so that
 * both see the same machine load (the machine is shared) */
static void run_torch(int threads, bench_t *b) {
    if (torch_ok < 0) {
        torch_ok = system("python3 -c 'import torch, transformers' >/dev/null 2>&1") == 0;
        if (!torch_ok) printf("torch/transformers not importable: no PyTorch baseline\n");
    }
    if (!torch_ok) return;
    char path[] = "/tmp/iv2_bench_models_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return;
    FILE *f = fdopen(fd, "w");
    fprintf(f, torch_prelude, threads, reps);
    fprintf(f, "print(%s, flush=True)\n", b->torch);
    fclose(f);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "python3 %s 2>/dev/null", path);
    FILE *p = popen(cmd, "r");
    if (p) {
        double ms;
        if (fscanf(p, "%lf", &ms) == 1) b->torch_ms = ms;
        pclose(p);
    }
    unlink(path);
}

int main(int argc, char **argv) {
    const char *r = getenv("IV2_BENCH_REPS");
    if (r && atoi(r) > 0) reps = atoi(r) > 32 ? 32 : atoi(r);
    const char *th = getenv("IV2_THREADS");
    iv2_backend *be = iv2_backend_create("cpu", th ? atoi(th) : 0);
    if (!be) iv2_die("bench_models");
    double la[1] = {0};
    getloadavg(la, 1);
    printf("CPU backend, %d threads, median of %d forwards (fp32, 224px grids); load average %.1f at start "
           "(a busy shared machine skews both columns: compare the ratio, rerun when it is high)\n",
           be->threads, reps, la[0]);
    /* optional arguments: substrings of the model names to run (default all) */
    for (int i = 0; i < NB; i++) {
        int want = argc < 2;
        for (int a = 1; a < argc; a++) want |= strstr(benches[i].name, argv[a]) != NULL;
        if (!want) { benches[i].ms = -1; continue; }
        if (run_ours(be, &benches[i])) iv2_die("bench_models");
        const char *nt = getenv("IV2_BENCH_TORCH");
        if (!nt || strcmp(nt, "0")) run_torch(be->threads, &benches[i]);
    }
    printf("%-26s %8s %10s %12s %10s %12s %8s\n", "model", "tokens", "ours ms", "ours tok/s", "torch ms",
           "torch tok/s", "ratio");
    for (int i = 0; i < NB; i++) {
        bench_t *b = &benches[i];
        if (b->ms < 0) continue;
        double tok = b->tok_s * b->ms * 1e-3;
        if (b->torch_ms > 0)
            printf("%-26s %8.0f %10.1f %12.0f %10.1f %12.0f %7.2fx\n", b->name, tok, b->ms, b->tok_s, b->torch_ms,
                   tok / (b->torch_ms * 1e-3), b->torch_ms / b->ms);
        else
            printf("%-26s %8.0f %10.1f %12.0f %10s %12s %8s\n", b->name, tok, b->ms, b->tok_s, "-", "-", "-");
    }
    getloadavg(la, 1);
    printf("load average %.1f at the end\n", la[0]);
    iv2_backend_destroy(be);
    return 0;
}
