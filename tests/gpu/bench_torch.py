"""bench_torch.py: the PyTorch baseline for tests/gpu/bench_vit.c and bench_kernels.c, run on the
same GPU in the same check: plain PyTorch statements of the InternViT-6B and VideoMAEv2-g blocks
(bf16, F.scaled_dot_product_attention, eval, no_grad), timed at the same two reduced depths and
extrapolated to full depth the same way, plus the same GEMM and attention shapes alone.
The whole training step (student, the recipe's heads and loss, clipping, AdamW: bench_vit's
"step" row) under bf16 autocast and the student training step (fwd+bwd: the "train" row) are
each timed twice: eager, and with torch.compile (IV2_BENCH_COMPILE=blocks, the default: each
block compiled, one compiled graph serving every block and both depths, which keeps the compile
time to seconds; =model: the whole model, one compile per depth; =0: eager only). A compile that
fails is reported and the eager row stands. The compiled rows come last, or alone with
--compiled (the GPU check runs them as a step of their own, so an unpredictable compile time
cannot cut the other figures).
Benchmark baseline only; never needed to build or test iv2.
    python3 bench_torch.py out.json   (IV2_BENCH_FRAMES, IV2_BENCH_CLIPS, IV2_BENCH_VIEWS, IV2_PEAK_TFLOPS as bench_vit)
    python3 bench_torch.py --compiled out.json   the compiled step and train rows only
    python3 bench_torch.py --cpu-smoke   the student step eager and compiled at toy width on the CPU
                                         (checks the script where there is no GPU; no figures)
"""
import json, math, os, sys, time
import torch
import torch.nn as nn
import torch.nn.functional as F

dev = "cpu" if "--cpu-smoke" in sys.argv else "cuda"
dt = torch.bfloat16
COMPILE = os.environ.get("IV2_BENCH_COMPILE", "blocks")
PEAK = float(os.environ.get("IV2_PEAK_TFLOPS", "989")) * 1e12


def rms(x, w, eps):
    return (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w


class Block(nn.Module):
    def __init__(s, C, H, mlp, internvit):
        super().__init__()
        s.C, s.H, s.iv = C, H, internvit
        s.qkv = nn.Linear(C, 3 * C, bias=False)
        s.proj = nn.Linear(C, C)
        s.fc1, s.fc2 = nn.Linear(C, mlp), nn.Linear(mlp, C)
        if internvit:
            s.n1, s.n2, s.qn, s.kn = (nn.Parameter(torch.ones(C)) for _ in range(4))
            s.ls1, s.ls2 = nn.Parameter(torch.full((C,), .1)), nn.Parameter(torch.full((C,), .1))
        else:
            s.n1, s.n2 = nn.LayerNorm(C, eps=1e-6), nn.LayerNorm(C, eps=1e-6)
            s.q_bias, s.v_bias = nn.Parameter(torch.zeros(C)), nn.Parameter(torch.zeros(C))

    def forward(s, x):
        B, N, C = x.shape
        h = rms(x, s.n1, 1e-6) if s.iv else s.n1(x)
        if s.iv:
            qkv = s.qkv(h)
        else:
            qkv = F.linear(h, s.qkv.weight, torch.cat([s.q_bias, torch.zeros_like(s.q_bias), s.v_bias]))
        q, k, v = qkv.split(C, -1)
        if s.iv:
            q, k = rms(q, s.qn, 1e-6), rms(k, s.kn, 1e-6)
        sh = lambda t: t.view(B, N, s.H, C // s.H).transpose(1, 2)
        a = F.scaled_dot_product_attention(sh(q), sh(k), sh(v)).transpose(1, 2).reshape(B, N, C)
        a = s.proj(a)
        x = x + (s.ls1 * a if s.iv else a)
        h = rms(x, s.n2, 1e-6) if s.iv else s.n2(x)
        m = s.fc2(F.gelu(s.fc1(h)))
        return x + (s.ls2 * m if s.iv else m)


class Model(nn.Module):
    def __init__(s, kind, depth):
        super().__init__()
        s.iv = kind == "internvit-6b"
        C, H, mlp = (3200, 25, 12800) if s.iv else (1408, 16, 6144)
        s.C, s.H = C, H
        if s.iv:
            s.pe = nn.Conv2d(3, C, 14, 14)
            s.cls = nn.Parameter(torch.zeros(1, 1, C))
            s.pos = nn.Parameter(torch.zeros(1, 257, C))
            s.pq, s.pk, s.pv = (nn.LayerNorm(C, eps=1e-5) for _ in range(3))
            s.wq, s.wk, s.wv = (nn.Linear(C, C) for _ in range(3))
            s.pproj = nn.Linear(C, 768)
        else:
            s.pe = nn.Conv3d(3, C, (2, 14, 14), (2, 14, 14))
            s.pos = nn.Parameter(torch.zeros(1, 2048, C))
            s.norm = nn.LayerNorm(C, eps=1e-6)
        s.blocks = nn.ModuleList(Block(C, H, mlp, s.iv) for _ in range(depth))

    def forward(s, x):  # x: uint8 frames [S, T, 224, 224, 3]
        mean = torch.tensor([0.485, 0.456, 0.406], device=dev).view(1, 3, 1, 1) * 255
        std = torch.tensor([0.229, 0.224, 0.225], device=dev).view(1, 3, 1, 1) * 255
        if s.iv:
            f = ((x.flatten(0, 1).permute(0, 3, 1, 2).float() - mean) / std).to(dt)
            t = s.pe(f).flatten(2).transpose(1, 2)
            t = torch.cat([s.cls.expand(t.shape[0], -1, -1), t], 1) + s.pos
        else:
            f = ((x.permute(0, 1, 4, 2, 3).float() - mean.unsqueeze(1)) / std.unsqueeze(1)).to(dt)
            t = s.pe(f.transpose(1, 2)).flatten(2).transpose(1, 2) + s.pos
        for b in s.blocks:
            t = b(t)
        if not s.iv:
            return s.norm(t)
        return t, attn_pool(s, t)


def attn_pool(s, t):
    """the attention-pool head of InternViT-6B and the student: one query (the mean token), 16 heads"""
    B, N, C = t.shape
    q = s.wq(s.pq(t.mean(1, keepdim=True))).view(B, 1, 16, C // 16).transpose(1, 2)
    k = s.wk(s.pk(t)).view(B, N, 16, C // 16).transpose(1, 2)
    v = s.wv(s.pv(t)).view(B, N, 16, C // 16).transpose(1, 2)
    a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, C)
    return s.pproj(a)


class Student(nn.Module):
    """InternVideo2-1B student (the InternViT block at 1408/16/6144, CLS, learned positions,
    attention pool 16 heads -> 768) on the visible tokens only, as iv2's training forward."""
    def __init__(s, depth, C=1408, H=16, mlp=6144):
        super().__init__()
        s.pe = nn.Conv2d(3, C, 14, 14)
        s.cls = nn.Parameter(torch.zeros(1, 1, C))
        s.pos = nn.Parameter(torch.zeros(1, 1 + 8 * 256, C))
        s.blocks = nn.ModuleList(Block(C, H, mlp, True) for _ in range(depth))
        s.pq, s.pk, s.pv = (nn.LayerNorm(C, eps=1e-5) for _ in range(3))
        s.wq, s.wk, s.wv = (nn.Linear(C, C) for _ in range(3))
        s.pproj = nn.Linear(C, 768)

    def forward(s, x, vis):  # x: uint8 [S, 8, 224, 224, 3], vis: int64 [S, n_vis] (0 = CLS)
        S = x.shape[0]
        mean = torch.tensor([0.485, 0.456, 0.406], device=dev).view(1, 3, 1, 1) * 255
        std = torch.tensor([0.229, 0.224, 0.225], device=dev).view(1, 3, 1, 1) * 255
        f = ((x.flatten(0, 1).permute(0, 3, 1, 2).float() - mean) / std).to(dt)
        t = s.pe(f).flatten(2).transpose(1, 2).reshape(S, 8 * 256, -1)
        t = torch.cat([s.cls.expand(S, -1, -1), t], 1) + s.pos
        t = torch.gather(t, 1, vis.unsqueeze(-1).expand(-1, -1, t.shape[-1]))
        for b in s.blocks:
            t = b(t)
        return t, attn_pool(s, t)


def sync():
    if dev == "cuda":
        torch.cuda.synchronize()


def compiled(m, blocks, mode):
    """m under torch.compile: "blocks" compiles each block in place (regional compilation: the
    blocks share one compiled graph, so the compile takes seconds), "model" returns the whole model
    compiled, "" returns m as it is"""
    if mode == "blocks":
        for b in blocks:
            b.compile()
    return torch.compile(m) if mode == "model" else m


def student_inputs(S):
    """S random uint8 clips of 8 frames and the recipe's 417 visible tokens (CLS + 52 per frame,
    evenly spread), the same for every sample"""
    x = torch.randint(0, 256, (S, 8, 224, 224, 3), dtype=torch.uint8, device=dev)
    per, keep = 256, 52
    idx = [0] + [1 + t * per + (i * per) // keep for t in range(8) for i in range(keep)]
    vis = torch.tensor(idx, device=dev).unsqueeze(0).expand(S, -1).contiguous()
    return x, vis, idx


def train_time(depth, S, compile_mode="", dims=(1408, 16, 6144)):
    """median seconds of one student training step, visible tokens, seconds of the first call
    (with compile_mode, the compilation)"""
    torch.manual_seed(0)
    with torch.device(dev):
        m = Student(depth, *dims).to(dt)
    m = compiled(m, m.blocks, compile_mode)
    x, vis, idx = student_inputs(S)
    g_out = torch.randn(S, len(idx), dims[0], device=dev, dtype=dt) * 1e-4
    g_pool = torch.randn(S, 768, device=dev, dtype=dt) * 1e-4

    def step():
        out, pooled = m(x, vis)
        torch.autograd.backward([out, pooled], [g_out, g_pool])
    t0 = time.perf_counter(); step(); sync(); first = time.perf_counter() - t0
    t = timed(step)
    del m
    if dev == "cuda":
        torch.cuda.empty_cache()
    return t, len(idx), first


def timed(fn, reps=5):
    fn(); sync()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); sync(); ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2]


def train_rows(views, out, modes, dims=(1408, 16, 6144), depths=(2, 6), full=40):
    """the student step at two depths, extrapolated to full depth, per mode ("" eager, "blocks" or
    "model" compiled); a failure is reported and recorded, and the next mode runs"""
    C, mlp = dims[0], dims[2]
    d1, d2 = depths
    for mode in modes:
        name = "iv2-1b-train" + ("-compiled" if mode else "")
        try:
            (t1, nv, c1), (t2, _, c2) = train_time(d1, views, mode, dims), train_time(d2, views, mode, dims)
        except Exception as e:  # torch.compile may be unavailable (no Triton, no compiler): eager stands
            msg = " ".join(f"{type(e).__name__}: {e}".split())[:400]
            print(f"iv2-1b train ({'torch.compile ' + mode if mode else 'eager'}): failed: {msg}", flush=True)
            out["models"].append({"model": name, "failed": msg})
            continue
        fl_block = 3.0 * views * nv * (8.0 * C * C + 4.0 * C * mlp + 4.0 * nv * C)
        fl_rest = 3.0 * views * 2.0 * (nv - 1) * 588 * C
        student_row(out, name, "iv2-1b train", "train step, fwd+bwd, no optimiser", views, nv, (t1, t2), depths, full,
                    fl_block, fl_rest, mode, (c1, c2))


def student_row(out, name, label, what, views, nv, ts, depths, full, fl_block, fl_rest, mode, firsts):
    """a training row: the times at two depths extrapolated to full depth (the blocks are
    identical), FLOPs = full x fl_block + fl_rest, recorded in out and printed"""
    (t1, t2), (d1, d2) = ts, depths
    t = t1 + (full - d1) * (t2 - t1) / (d2 - d1)
    fl = full * fl_block + fl_rest
    r = {"model": name, "batch": views, "n_vis": nv, "unit": "views", "ms": t * 1e3, "per_s": views / t,
         "tokens_per_s": views * nv / t, "tflops": fl / t / 1e12, "mfu": fl / t / PEAK,
         "ms_timed": [t1 * 1e3, t2 * 1e3], "depths_timed": [d1, d2]}
    if mode:
        r.update(compile=mode, first_call_s=list(firsts))
    out["models"].append(r)
    how = f"torch.compile {mode}, first calls {firsts[0]:.1f} + {firsts[1]:.1f} s" if mode else "eager"
    print(f"{label:14s} {views:6d} {t*1e3:10.2f} {views*nv/t:9.0f} tk {views/t:12.2f} {fl/t/1e12:10.1f} "
          f"{100*fl/t/PEAK:7.1f}%   ({what}, {how})", flush=True)


class Head(nn.Module):
    """a stage-1 decoder (tests/ref_distill.py): Linear (or Linear-GELU-Linear) -> LayerNorm -> x / |x|"""
    def __init__(s, i, o, mlp=False):
        super().__init__()
        s.head = nn.Sequential(nn.Linear(i, i), nn.GELU(), nn.Linear(i, o)) if mlp else nn.Linear(i, o)
        s.norm = nn.LayerNorm(o, eps=1e-5)

    def forward(s, x):
        x = s.norm(s.head(x))
        return x / x.norm(dim=-1, keepdim=True)


class Pretrain(nn.Module):
    """the student with the recipe's heads and loss, as iv2-distill's step: 6 CLIP decoders
    (C -> clip_dim) and 4 MAE decoders (C -> C -> mae_dim) on the last block's visible tokens plus
    their position tables, the final decoder on the pooled output; 2 - 2 cos, mean per term,
    alphas 1 (the config's defaults)"""
    def __init__(s, depth, dims=(1408, 16, 6144), heads=(3200, 1408, 768), n_clip=6, n_mae=4):
        super().__init__()
        C = dims[0]
        s.student = Student(depth, *dims)
        s.clip = nn.ModuleList(Head(C, heads[0]) for _ in range(n_clip))
        s.mae = nn.ModuleList(Head(C, heads[1], True) for _ in range(n_mae))
        s.final = Head(768, heads[2])
        s.clip_pos = nn.Parameter(torch.zeros(1, 1 + 8 * 256, C))
        s.mae_pos = nn.Parameter(torch.zeros(1, 8 * 256, C))

    def forward(s, x, vis, t_clip, t_mae, t_final):
        out, pooled = s.student(x, vis)
        cos = lambda u, v: (2 - 2 * (u * v).sum(-1)).mean()
        pc, pm = s.clip_pos[0][vis], s.mae_pos[0][vis[:, 1:] - 1]
        lc = sum(cos(h(out + pc), t) for h, t in zip(s.clip, t_clip)) / len(s.clip)
        lm = sum(cos(h(out[:, 1:] + pm), t) for h, t in zip(s.mae, t_mae)) / len(s.mae)
        return lc + cos(s.final(pooled), t_final) + lm


def step_time(depth, S, dims=(1408, 16, 6144), heads=(3200, 1408, 768), compile_mode=""):
    """median seconds of the whole training step as bench_vit's "step" row: forward, heads and loss
    under bf16 autocast (fp32 weights: the master copy), backward, clip_grad_norm_ (3.0), AdamW
    (fused on the GPU: one kernel for all tensors), as PyTorch mixed-precision training runs it;
    visible tokens; seconds of the first call (with compile_mode, the compilation)"""
    torch.manual_seed(0)
    with torch.device(dev):
        m = Pretrain(depth, dims, heads)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.05,
                            fused=dev == "cuda")
    fwd = compiled(m, m.student.blocks, compile_mode)   # m keeps the parameters the optimiser holds
    x, vis, idx = student_inputs(S)
    unit = lambda *sh: F.normalize(torch.randn(*sh, device=dev), dim=-1).to(dt)
    tc = [unit(S, len(idx), heads[0]) for _ in m.clip]
    tm = [unit(S, len(idx) - 1, heads[1]) for _ in m.mae]
    tf_ = unit(S, heads[2])

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev, dtype=dt):
            loss = fwd(x, vis, tc, tm, tf_)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 3.0)
        opt.step()
    t0 = time.perf_counter(); step(); sync(); first = time.perf_counter() - t0
    t = timed(step)
    del m, fwd, opt
    if dev == "cuda":
        torch.cuda.empty_cache()
    return t, len(idx), first


def step_row(views, out, dims=(1408, 16, 6144), heads=(3200, 1408, 768), depths=(2, 6), full=40, mode=""):
    """the whole step at two depths, extrapolated as the other rows, eager (mode "") or compiled
    ("blocks", "model"); a failure (memory, no compiler) is reported and recorded"""
    C, mlp = dims[0], dims[2]
    d1, d2 = depths
    name = "iv2-1b-step" + ("-compiled" if mode else "")
    try:
        (t1, nv, c1), (t2, _, c2) = step_time(d1, views, dims, heads, mode), step_time(d2, views, dims, heads, mode)
    except Exception as e:
        msg = " ".join(f"{type(e).__name__}: {e}".split())[:400]
        print(f"iv2-1b step ({'torch.compile ' + mode if mode else 'eager'}): failed: {msg}", flush=True)
        out["models"].append({"model": name, "failed": msg})
        return
    hf = 6 * 2.0 * nv * C * heads[0] + 4 * 2.0 * (nv - 1) * (C * C + C * heads[1]) + 2.0 * 768 * heads[2]
    fl_block = 3.0 * views * nv * (8.0 * C * C + 4.0 * C * mlp + 4.0 * nv * C)
    fl_rest = 3.0 * views * (2.0 * (nv - 1) * 588 * C + hf)
    student_row(out, name, "iv2-1b step", "whole step: + heads, loss, clip, AdamW; autocast bf16", views, nv, (t1, t2),
                depths, full, fl_block, fl_rest, mode, (c1, c2))


def model_time(kind, depth, S):
    torch.manual_seed(0)
    with torch.device(dev):  # initialise on the GPU: CPU init of 6B-size layers takes minutes
        m = Model(kind, depth).to(dt).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() >= 2:
                p.uniform_(-0.035, 0.035)
    T = 1 if kind == "internvit-6b" else 16
    x = torch.randint(0, 256, (S, T, 224, 224, 3), dtype=torch.uint8, device=dev)
    with torch.no_grad():
        t = timed(lambda: m(x))
    del m
    torch.cuda.empty_cache()
    return t


def cpu_smoke():
    """the training rows at toy width on the CPU: the eager and compiled paths run; no figures"""
    out = {"device": "cpu", "torch": torch.__version__, "models": []}
    train_rows(2, out, ["", "blocks"], dims=(64, 4, 256), depths=(1, 2), full=4)
    for mode in ("", "blocks"):
        step_row(2, out, dims=(64, 4, 256), heads=(24, 16, 8), depths=(1, 2), full=4, mode=mode)
    failed = [m for m in out["models"] if "failed" in m]
    print(f"cpu smoke: {len(out['models']) - len(failed)} of {len(out['models'])} training rows ran")
    sys.exit(1 if not out["models"] or out["models"][0].get("failed") else 0)


def main():
    if dev == "cpu":
        cpu_smoke()
    if not torch.cuda.is_available():
        print("skipped: torch sees no CUDA device")
        sys.exit(77)
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "peak_tflops": PEAK / 1e12,
           "models": [], "gemm": [], "attention": []}
    views = int(os.environ.get("IV2_BENCH_VIEWS", "32"))
    if "--compiled" in sys.argv:
        compiled_rows(views, out, [a for a in sys.argv[1:] if a != "--compiled"])
        return
    frames = int(os.environ.get("IV2_BENCH_FRAMES", "32")); clips = int(os.environ.get("IV2_BENCH_CLIPS", "4"))
    print(f"{'model (torch)':14s} {'batch':>6s} {'ms/call':>10s} {'units/s':>12s} {'views/s':>12s} {'TFLOP/s':>10s} {'MFU':>8s}")
    for kind, S, d1, d2, full, per_view, C, mlp, N, K in [
            ("internvit-6b", frames, 2, 6, 48, 8, 3200, 12800, 257, 588),
            ("videomae-g", clips, 2, 6, 40, 1, 1408, 6144, 2048, 1176)]:
        t1, t2 = model_time(kind, d1, S), model_time(kind, d2, S)
        t = t1 + (full - d1) * (t2 - t1) / (d2 - d1)
        P = 256 if kind == "internvit-6b" else 2048
        fl = S * (full * (N * (8.0 * C * C + 4.0 * C * mlp) + 4.0 * N * N * C) + 2.0 * P * K * C)
        r = {"model": kind, "batch": S, "ms": t * 1e3, "per_s": S / t, "views_per_s": S / t / per_view,
             "tflops": fl / t / 1e12, "mfu": fl / t / PEAK, "depths_timed": [d1, d2], "ms_timed": [t1 * 1e3, t2 * 1e3]}
        out["models"].append(r)
        print(f"{kind:14s} {S:6d} {t*1e3:10.2f} {S/t:9.1f} {'fr' if per_view == 8 else 'cl'} {S/t/per_view:12.2f} "
              f"{fl/t/1e12:10.1f} {100*fl/t/PEAK:7.1f}%", flush=True)
    train_rows(views, out, [""])   # failures are reported there
    step_row(views, out)
    print(f"\n{'GEMM (F.linear, bias)':28s} {'M':>8s} {'K':>8s} {'N':>8s} {'ms':>10s} {'TFLOP/s':>9s}")
    for what, M, K, N in [("internvit-6b qkv", 2056, 3200, 9600), ("internvit-6b proj", 2056, 3200, 3200),
                          ("internvit-6b fc1", 2056, 3200, 12800), ("internvit-6b fc2", 2056, 12800, 3200),
                          ("videomae-g qkv", 2048, 1408, 4224), ("videomae-g fc1", 2048, 1408, 6144),
                          ("videomae-g fc2", 2048, 6144, 1408), ("student fc1 (B=32x417)", 13344, 1408, 6144),
                          ("square 8192", 8192, 8192, 8192)]:
        x = torch.randn(M, K, device=dev, dtype=dt); w = torch.randn(N, K, device=dev, dtype=dt)
        b = torch.randn(N, device=dev, dtype=dt)
        with torch.no_grad():
            t = timed(lambda: [F.linear(x, w, b) for _ in range(5)], 9) / 5
        out["gemm"].append({"what": what, "M": M, "K": K, "N": N, "ms": t * 1e3, "tflops": 2.0 * M * K * N / t / 1e12})
        print(f"{what:28s} {M:8d} {K:8d} {N:8d} {t*1e3:10.3f} {2.0*M*K*N/t/1e12:9.1f}", flush=True)
    print(f"\n{'attention (SDPA)':28s} {'B':>4s} {'H':>4s} {'N':>6s} {'D':>4s} {'fwd ms':>10s} {'TFLOP/s':>9s} {'fwd+bwd ms':>12s} {'TFLOP/s':>9s}")
    for what, B, H, N, D in [("internvit-6b (8 frames)", 8, 25, 257, 128), ("internvit-6b (32 frames)", 32, 25, 257, 128),
                             ("videomae-g (1 clip)", 1, 16, 2048, 88), ("videomae-g (4 clips)", 4, 16, 2048, 88),
                             ("student (32 x 417)", 32, 16, 417, 88), ("hd64 reference", 4, 16, 2048, 64)]:
        q, k, v = (torch.randn(B, H, N, D, device=dev, dtype=dt, requires_grad=True) for _ in range(3))
        with torch.no_grad():
            tf_ = timed(lambda: [F.scaled_dot_product_attention(q, k, v) for _ in range(5)], 9) / 5
        g = torch.randn(B, H, N, D, device=dev, dtype=dt)
        tb = timed(lambda: F.scaled_dot_product_attention(q, k, v).backward(g), 5)
        fl = 4.0 * B * H * N * N * D
        out["attention"].append({"what": what, "B": B, "H": H, "N": N, "D": D, "fwd_ms": tf_ * 1e3,
                                 "fwd_tflops": fl / tf_ / 1e12, "fwdbwd_ms": tb * 1e3, "fwdbwd_tflops": 3.5 * fl / tb / 1e12})
        print(f"{what:28s} {B:4d} {H:4d} {N:6d} {D:4d} {tf_*1e3:10.3f} {fl/tf_/1e12:9.1f} {tb*1e3:12.3f} {3.5*fl/tb/1e12:9.1f}", flush=True)
    if len(sys.argv) > 1:  # written before the compile too, so a compile past the time limit keeps the rest
        json.dump(out, open(sys.argv[1], "w"), indent=1)
    compiled_rows(views, out, sys.argv[1:])   # last: its compile time is the least predictable part


def compiled_rows(views, out, json_path):
    """the whole step (issue 8's figure) then the fwd+bwd student step under torch.compile
    (IV2_BENCH_COMPILE), the JSON rewritten after each so a time limit keeps what ran"""
    if COMPILE not in ("blocks", "model"):
        return
    print(f"\n{'model (torch)':14s} {'batch':>6s} {'ms/call':>10s} {'units/s':>12s} {'views/s':>12s} {'TFLOP/s':>10s} {'MFU':>8s}")
    for row in (lambda: step_row(views, out, mode=COMPILE), lambda: train_rows(views, out, [COMPILE])):
        row()
        if json_path:
            json.dump(out, open(json_path[0], "w"), indent=1)


if __name__ == "__main__":
    main()
