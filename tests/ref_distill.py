#!/usr/bin/env python3
"""ref_distill.py: goldens for tests/test_distill_golden.c (the trainer against PyTorch autograd).

A tiny stage-1 student (the restated InternVideo2 student of gen_goldens.py: RMSNorm, q/k norm,
LayerScale, tanh-GELU MLP, CLS, learned pos_embed, visible-token gather, per-sample drop path,
attention pool; drop path drawn per branch) with the stage-1 heads of internvideo2_pretrain.py restated here:
  clip_decoder.k       Linear(C -> clip_dim) -> LayerNorm(eps 1e-5) -> x / |x|
  mae_decoder.k        Linear(C -> C) -> GELU (exact) -> Linear(C -> mae_dim) -> LayerNorm -> x / |x|
  final_clip_decoder   Linear(pool_dim -> final_dim) -> LayerNorm -> x / |x|
  clip_pos_embed [1, 1+n, C], mae_pos_embed [1, n, C] added at the visible positions
and the loss of engine_for_pretraining.py: per term the mean over (layer, sample, token) of
2 - 2 <u, v>, total = a_clip L_clip + a_final L_final + a_mae L_mae (alphas 1, 0.5, 2 here so the
weighting is tested). Then 3 steps of torch.optim.AdamW (betas 0.9/0.98, eps 1e-6, wd 0.05 except
1-D tensors, biases, pos embeds and cls token) after clip_grad_norm_(max 0.5, so it clips), with
the per-step cosine LR of utils.cosine_scheduler (no warmup, 3 steps).

Files (tests/goldens/):
  distill_w.safetensors   initial weights, official names (student + heads)
  distill_io.safetensors  inputs, targets, step-0 loss terms / every gradient / grad norm,
                          the losses of steps 0..2 and the weights after 3 steps ("after.*");
                          metadata "config" = the C student overrides, "run" = the run config.
Rerun (the tests do not need Python):  python3 tests/ref_distill.py
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_goldens as gg  # the restated student (and its helpers), shared with the ViT goldens

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "goldens")
torch.manual_seed(4321)
C, H, MLP, DEPTH, T, PH, PD = 32, 4, 64, 3, 4, 4, 24
CLIP_DIM, MAE_DIM, FINAL_DIM = 20, 12, 10
B, NV = 2, 7
CLIP_LAYERS = [[0, 1], [1, 2]]   # [teacher target, student block]
MAE_LAYERS = [[0, 1], [1, 2]]
A_CLIP, A_FINAL, A_MAE = 1.0, 0.5, 2.0
LR, MIN_LR, CLIP_GRAD, WD, STEPS = 1.28, 0.128, 0.5, 0.05, 3   # base LRs, scaled by B/256


class LinearDecoder(torch.nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.head = torch.nn.Linear(i, o)
        self.norm = torch.nn.LayerNorm(o, eps=1e-5)

    def forward(self, x):
        x = self.norm(self.head(x))
        return x / x.norm(dim=-1, keepdim=True)


class MLPDecoder(torch.nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.head = torch.nn.Sequential(torch.nn.Linear(i, i), torch.nn.GELU(), torch.nn.Linear(i, o))
        self.norm = torch.nn.LayerNorm(o, eps=1e-5)

    def forward(self, x):
        x = self.norm(self.head(x))
        return x / x.norm(dim=-1, keepdim=True)


class Pretrain(gg.Student):
    def __init__(self):
        super().__init__(C, H, MLP, DEPTH, T, gg.IMG, PH, PD)
        n = T * (gg.IMG // gg.P) ** 2
        self.clip_decoder = torch.nn.ModuleList([LinearDecoder(C, CLIP_DIM) for _ in CLIP_LAYERS])
        self.mae_decoder = torch.nn.ModuleList([MLPDecoder(C, MAE_DIM) for _ in MAE_LAYERS])
        self.final_clip_decoder = LinearDecoder(PD, FINAL_DIM)
        self.clip_pos_embed = torch.nn.Parameter(torch.zeros(1, 1 + n, C))
        self.mae_pos_embed = torch.nn.Parameter(torch.zeros(1, n, C))

    def loss(self, video, vis, drop, drop_mlp, t_clip, t_mae, t_final):
        outs, pooled = gg.Student.forward(self, video, vis, drop, drop_mlp)
        cos = lambda u, v: (2 - 2 * (u * v).sum(-1)).mean()
        pos = lambda table, idx: table[0][idx]                      # [B, n, C]
        l_clip = sum(cos(dec(outs[sb] + pos(self.clip_pos_embed, vis)), t_clip[k])
                     for k, ((_, sb), dec) in enumerate(zip(CLIP_LAYERS, self.clip_decoder))) / len(CLIP_LAYERS)
        l_mae = sum(cos(dec(outs[sb][:, 1:] + pos(self.mae_pos_embed, vis[:, 1:] - 1)), t_mae[k])
                    for k, ((_, sb), dec) in enumerate(zip(MAE_LAYERS, self.mae_decoder))) / len(MAE_LAYERS)
        l_final = cos(self.final_clip_decoder(pooled), t_final)
        return A_CLIP * l_clip + A_FINAL * l_final + A_MAE * l_mae, (l_clip, l_final, l_mae)


def no_decay(name, p):
    return p.ndim <= 1 or name.endswith(".bias") or name in ("pos_embed", "cls_token", "clip_pos_embed", "mae_pos_embed")


def unit(*shape):
    x = torch.randn(*shape)
    return x / x.norm(dim=-1, keepdim=True)


def main():
    model = Pretrain().float()
    gg.randomise(model.named_parameters())
    w0 = {k: v.detach().clone() for k, v in model.state_dict().items()}
    n = T * (gg.IMG // gg.P) ** 2
    fr = gg.frames(B * T, gg.IMG)
    video = gg.normalise(fr).reshape(B, T, 3, gg.IMG, gg.IMG).permute(0, 2, 1, 3, 4)
    vis = torch.stack([torch.cat([torch.zeros(1, dtype=torch.long), torch.randperm(n)[:NV - 1].sort().values + 1])
                       for _ in range(B)])
    drop = torch.ones(DEPTH, B)
    drop[1, 1] = 0.0             # sample 1 dropped in block 1
    drop[2, 0] = 1.0 / 0.9       # kept with keep-prob 0.9
    drop_mlp = torch.ones(DEPTH, B)   # the MLP branch draws on its own (timm DropPath twice)
    drop_mlp[1, 0] = 0.0
    drop_mlp[2, 1] = 1.0 / 0.8
    t_clip = [unit(B, NV, CLIP_DIM) for _ in CLIP_LAYERS]
    t_mae = [unit(B, NV - 1, MAE_DIM) for _ in MAE_LAYERS]
    t_final = unit(B, FINAL_DIM)

    names = [k for k, _ in model.named_parameters()]
    params = dict(model.named_parameters())
    opt = torch.optim.AdamW([{"params": [params[k] for k in names if not no_decay(k, params[k])], "weight_decay": WD},
                             {"params": [params[k] for k in names if no_decay(k, params[k])], "weight_decay": 0.0}],
                            lr=0.0, betas=(0.9, 0.98), eps=1e-6)
    peak, mn = LR * B / 256, MIN_LR * B / 256
    io = {}
    losses = []
    for step in range(STEPS):
        lr = mn + 0.5 * (peak - mn) * (1 + math.cos(math.pi * step / STEPS))   # cosine_scheduler, no warmup
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        total, (lc, lf, lm) = model.loss(video, vis, drop, drop_mlp, t_clip, t_mae, t_final)
        total.backward()
        if step == 0:   # gradients before clipping
            io["loss0"] = torch.tensor([total.item(), lc.item(), lf.item(), lm.item()])
            for k in names:
                io["grad." + k] = params[k].grad.detach().clone()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_GRAD)
        if step == 0:
            io["grad_norm0"] = torch.tensor([gn.item()])
        losses.append(total.item())
        opt.step()
    io["losses"] = torch.tensor(losses)
    for k in names:
        io["after." + k] = params[k].detach().clone()
    io["in.frames"] = fr
    io["in.vis"] = vis.to(torch.int32)
    io["in.drop"] = drop
    io["in.drop_mlp"] = drop_mlp
    for k in range(len(CLIP_LAYERS)):
        io["t.clip.%d" % k] = t_clip[k]
    for k in range(len(MAE_LAYERS)):
        io["t.mae.%d" % k] = t_mae[k]
    io["t.final"] = t_final
    student = {"img": gg.IMG, "patch": gg.P, "frames": T, "width": C, "depth": DEPTH, "heads": H, "mlp": MLP,
               "gelu": "tanh", "pool_heads": PH, "pool_dim": PD}
    run = {"student": "iv2-tiny", "student_overrides": student, "clip_layers": CLIP_LAYERS, "mae_layers": MAE_LAYERS,
           "alpha_clip": A_CLIP, "alpha_final": A_FINAL, "alpha_mae": A_MAE, "batch": B, "steps": STEPS,
           "warmup_steps": 0, "lr": LR, "min_lr": MIN_LR, "clip_grad": CLIP_GRAD, "weight_decay": WD, "drop_path": 0,
           "threads": 1}
    meta = {"run": json.dumps(run), "dims": json.dumps([CLIP_DIM, MAE_DIM, FINAL_DIM, NV])}
    os.makedirs(OUT, exist_ok=True)
    save_file({k: v.contiguous() for k, v in w0.items()}, os.path.join(OUT, "distill_w.safetensors"))
    save_file({k: v.detach().contiguous() for k, v in io.items()}, os.path.join(OUT, "distill_io.safetensors"), metadata=meta)
    print("losses", losses, "grad norm", io["grad_norm0"].item())


if __name__ == "__main__":
    main()
