#!/usr/bin/env python3
"""bench_distill.py: the PyTorch side of bench_distill.c: the same training step (student on the
visible tokens + every stage-1 head + the loss, backward, clip_grad_norm_, AdamW), eager fp32 on
the CPU with the same thread count. Prints one line: "views_s <x> step_s <y>".
    python3 tests/bench/bench_distill.py WIDTH DEPTH HEADS MLP POOL_HEADS POOL_DIM CLIP_DIM MAE_DIM FINAL_DIM \
        N_CLIP N_MAE BATCH NV THREADS STEPS
"""
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import gen_goldens as gg      # the restated student
import ref_distill as rd      # the restated heads

(C, D, H, MLP, PH, PD, CD, MD, FD, NC, NM, B, NV, TH, STEPS) = [int(a) for a in sys.argv[1:16]]
torch.set_num_threads(TH)
gg.P = 14
T, IMG = 8, 224
n = T * (IMG // 14) ** 2


class Model(gg.Student):
    def __init__(self):
        super().__init__(C, H, MLP, D, T, IMG, PH, PD)
        self.clip_decoder = torch.nn.ModuleList([rd.LinearDecoder(C, CD) for _ in range(NC)])
        self.mae_decoder = torch.nn.ModuleList([rd.MLPDecoder(C, MD) for _ in range(NM)])
        self.final_clip_decoder = rd.LinearDecoder(PD, FD)
        self.clip_pos_embed = torch.nn.Parameter(torch.zeros(1, 1 + n, C))
        self.mae_pos_embed = torch.nn.Parameter(torch.zeros(1, n, C))

    def loss(self, video, vis, drop, tc, tm, tf):
        outs, pooled = gg.Student.forward(self, video, vis, drop, drop)
        cos = lambda u, v: (2 - 2 * (u * v).sum(-1)).mean()
        lc = sum(cos(d(outs[D - NC + k] + self.clip_pos_embed[0][vis]), tc[k]) for k, d in enumerate(self.clip_decoder)) / NC
        lm = sum(cos(d(outs[D - NM + k][:, 1:] + self.mae_pos_embed[0][vis[:, 1:] - 1]), tm[k])
                 for k, d in enumerate(self.mae_decoder)) / NM
        return lc + cos(self.final_clip_decoder(pooled), tf) + lm


def unit(*s):
    x = torch.randn(*s)
    return x / x.norm(dim=-1, keepdim=True)


m = Model()
opt = torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.05)
video = torch.randn(B, 3, T, IMG, IMG)
vis = torch.stack([torch.cat([torch.zeros(1, dtype=torch.long), torch.randperm(n)[:NV - 1].sort().values + 1]) for _ in range(B)])
drop = torch.ones(D, B)
tc = [unit(B, NV, CD) for _ in range(NC)]
tm = [unit(B, NV - 1, MD) for _ in range(NM)]
tf = unit(B, FD)
times = []
for s in range(STEPS + 1):
    t0 = time.perf_counter()
    opt.zero_grad()
    m.loss(video, vis, drop, tc, tm, tf).backward()
    torch.nn.utils.clip_grad_norm_(m.parameters(), 3.0)
    opt.step()
    if s:   # the first step warms up
        times.append(time.perf_counter() - t0)
times.sort()
med = times[len(times) // 2]
print("views_s %.6g step_s %.6g" % (B / med, med))
