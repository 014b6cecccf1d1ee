#!/usr/bin/env python3
"""gen_goldens.py: golden files for the ViT parity tests (tests/test_vit_parity.c).

Builds tiny random models with EVERY parameter randomised, runs them in fp32 PyTorch and saves
weights + inputs + expected outputs as small safetensors under tests/goldens/:

  internvit_w / internvit_io   transformers InternVLVisionModel configured as InternViT-6B
                               (rms_norm, use_qk_norm, no attention bias, eps 1e-6, exact gelu,
                               use_mean_pooling -> no final norm), width 80, 5 heads (odd, head
                               dim 16), mlp 144, 2 blocks, patch 4 on 8px (2x2 grid); plus the InternVL-C
                               attention-pooling head (clip_projector, 4 heads -> 48) restated
                               below from InternVL internvl_c.py / InternVideo2
                               internvl_clip_vision.py. Weights in transformers-native names
                               (q/k/v split) + clip_projector.* in the original names.
  internvit_rs_w / _io         the same kind of model built at 12px (3x3 position grid) and run
                               at 8px (width 40, mlp 72, pool -> 24); also saved as an official
                               InternVL-C .pth (internvit_rs_c.pth: {'module': state dict} in the
                               original names + text-tower keys) for the convert path.: transformers resizes the position table bicubically.
  videomae_w / videomae_io     transformers VideoMAEModel configured as VideoMAEv2-g (q/v bias,
                               eps 1e-6, no mean pooling -> final LayerNorm), width 84, 3 heads,
                               mlp 136, 2 blocks, 4 frames, tubelet 2, 8px.
  student_w / student_io       the InternVideo2 stage-1 student (internvideo2_pretrain.py; the
                               official module needs flash-attn, so it is restated below with the
                               same math: RMSNorm, q/k RMSNorm over the full width, LayerScale,
                               tanh GELU as flash-attn FusedMLP, CLS, learned pos_embed added
                               before masking, visible-token gather, drop path, attention pool),
                               width 80, 5 heads, mlp 144, 2 blocks, 4 frames, 8px, 9 visible
                               tokens of 17; with autograd gradients of a random linear loss.

Inputs are uint8 RGB frames [N,H,W,3]; the models see (v/255 - mean)/std with the ImageNet
mean/std, as the C patchify does. Each *_io file's metadata "config" is the C model config.

Rerun (needs the Python packages, the tests do not):
    pip install torch transformers safetensors numpy
    python3 tests/gen_goldens.py            # rewrites tests/goldens/*.safetensors
"""
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "goldens")
MEAN = torch.tensor([0.485, 0.456, 0.406])
STD = torch.tensor([0.229, 0.224, 0.225])
torch.manual_seed(1234)
# tiny images keep the files small: patch 4 on 8px frames is a 2x2 grid (patch-embed GEMM K = 48)
P, IMG = 4, 8
np.random.seed(1234)


def randomise(named_params):
    """every parameter random: matrices ~ N(0, 1/fan_in), norm/scale vectors ~ U(0.5, 1.5),
    other vectors (biases) ~ N(0, 0.2), cls/pos ~ N(0, 0.5)"""
    with torch.no_grad():
        for name, p in named_params:
            if "cls" in name or "pos" in name or "position" in name:
                p.normal_(0, 0.5)
            elif p.ndim >= 2:
                fan_in = p[0].numel()
                p.normal_(0, 1.0 / math.sqrt(fan_in))
            elif name.endswith("weight") or "lambda" in name or "gamma" in name:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0, 0.2)


def frames(n, img):
    return torch.randint(0, 256, (n, img, img, 3), dtype=torch.uint8)


def normalise(fr):
    """uint8 [N,H,W,3] -> float [N,3,H,W]"""
    x = fr.float() / 255.0
    x = (x - MEAN) / STD
    return x.permute(0, 3, 1, 2).contiguous()


def save(name, tensors, meta=None):
    os.makedirs(OUT, exist_ok=True)
    t = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    save_file(t, os.path.join(OUT, name + ".safetensors"), metadata=meta)


class RMSNorm(torch.nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


class PoolHead(torch.nn.Module):
    """InternVL-C clip_projector (AttentionPoolingBlock): the query is LN_q(mean of all tokens),
    keys LN_k(x), values LN_v(x); q/k/v Linear without bias plus separate q/k/v biases; one
    softmax query per sample; heads concatenated; proj to out_dim. Returns also the attention
    probabilities averaged over heads."""

    def __init__(self, dim, heads, out_dim):
        super().__init__()
        self.heads = heads
        self.norm1_q = torch.nn.LayerNorm(dim, eps=1e-5)
        self.norm1_k = torch.nn.LayerNorm(dim, eps=1e-5)
        self.norm1_v = torch.nn.LayerNorm(dim, eps=1e-5)
        self.cross_attn = torch.nn.Module()
        ca = self.cross_attn
        ca.q = torch.nn.Linear(dim, dim, bias=False)
        ca.k = torch.nn.Linear(dim, dim, bias=False)
        ca.v = torch.nn.Linear(dim, dim, bias=False)
        ca.q_bias = torch.nn.Parameter(torch.zeros(dim))
        ca.k_bias = torch.nn.Parameter(torch.zeros(dim))
        ca.v_bias = torch.nn.Parameter(torch.zeros(dim))
        ca.proj = torch.nn.Linear(dim, out_dim)

    def forward(self, x):
        B, N, C = x.shape
        H, ca = self.heads, self.cross_attn
        xq = self.norm1_q(x.mean(1, keepdim=True))
        xk, xv = self.norm1_k(x), self.norm1_v(x)
        q = F.linear(xq, ca.q.weight, ca.q_bias).reshape(B, 1, H, -1).transpose(1, 2)
        k = F.linear(xk, ca.k.weight, ca.k_bias).reshape(B, N, H, -1).transpose(1, 2)
        v = F.linear(xv, ca.v.weight, ca.v_bias).reshape(B, N, H, -1).transpose(1, 2)
        attn = ((q * (C // H) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)   # [B,H,1,N]
        o = (attn @ v).transpose(1, 2).reshape(B, 1, C)
        return ca.proj(o).squeeze(1), attn.mean(1)[:, 0]


def capture_blocks(layers):
    outs = []
    hooks = [l.register_forward_hook(lambda mod, inp, out: outs.append(out[0] if isinstance(out, tuple) else out))
             for l in layers]
    return outs, hooks


# ---------------------------------------------------------------- InternViT (transformers)
def internvit(tag, build_img, run_img, depth, n_frames, C=80, H=5, MLP=144, PH=4, PD=48, pth=None):
    from transformers import InternVLVisionConfig, InternVLVisionModel
    cfg = InternVLVisionConfig(hidden_size=C, num_hidden_layers=depth, num_attention_heads=H,
                               intermediate_size=MLP, image_size=build_img, patch_size=P, norm_type="rms_norm",
                               use_qk_norm=True, attention_bias=False, layer_norm_eps=1e-6, hidden_act="gelu",
                               use_mean_pooling=True, use_absolute_position_embeddings=True, use_mask_token=False,
                               hidden_dropout_prob=0.0, attention_dropout=0.0, projection_dropout=0.0,
                               layer_scale_init_value=0.1)
    cfg._attn_implementation = "eager"
    model = InternVLVisionModel(cfg).float().eval()
    pool = PoolHead(C, PH, PD).float().eval()
    randomise(model.named_parameters())
    randomise(pool.named_parameters())
    fr = frames(n_frames, run_img)
    outs, hooks = capture_blocks(model.encoder.layer)
    with torch.no_grad():
        last = model(pixel_values=normalise(fr)).last_hidden_state
        pooled, attn = pool(last)
    for h in hooks:
        h.remove()
    w = {k: v for k, v in model.state_dict().items()}
    w.update({"clip_projector." + k: v for k, v in pool.state_dict().items()})
    save(tag + "_w", w)
    if pth:
        # the same weights as an official InternVL-C checkpoint: torch.save({'module': ...}) with
        # the original InternVL names (fused qkv, 2-D patch kernel) and a text tower to drop
        orig = {}
        for k, v in w.items():
            k2 = (k.replace("embeddings.cls_token", "cls_token")
                   .replace("embeddings.position_embeddings", "pos_embed")
                   .replace("embeddings.patch_embeddings.projection.", "patch_embed.proj.")
                   .replace("encoder.layer.", "blocks.")
                   .replace("attention.projection_layer.", "attn.proj.")
                   .replace("attention.q_norm.", "attn.q_norm.").replace("attention.k_norm.", "attn.k_norm.")
                   .replace("layernorm_before.", "norm1.").replace("layernorm_after.", "norm2.")
                   .replace("lambda_1", "ls1.gamma").replace("lambda_2", "ls2.gamma"))
            if ".attention.q_proj.weight" in k:
                pre = k2.split(".attention.")[0]
                kk = k.replace("q_proj", "k_proj")
                vv = k.replace("q_proj", "v_proj")
                orig[pre + ".attn.qkv.weight"] = torch.cat([v, w[kk], w[vv]], 0)
            elif ".attention.k_proj." in k or ".attention.v_proj." in k:
                continue
            else:
                orig[k2] = v.clone()
        orig["text_projection"] = torch.randn(4, 4)
        orig["logit_scale"] = torch.tensor(4.6)
        torch.save({"module": orig}, os.path.join(OUT, pth))
    io = {"in.frames": fr, "out.pooled": pooled, "out.pool_attn": attn[:, 1:]}
    for i, o in enumerate(outs):
        io["out.block.%d" % i] = o
    ccfg = {"arch": "internvit", "img": run_img, "patch": P, "frames": 1, "tubelet": 1, "width": C, "depth": depth,
            "heads": H, "mlp": MLP, "norm": "rms", "eps": 1e-6, "qk_norm": 1, "qkv_bias": 0, "layerscale": 1,
            "cls": 1, "pos": "learned", "final_norm": 0, "gelu": "erf", "pool_heads": PH, "pool_dim": PD}
    save(tag + "_io", io, {"config": json.dumps(ccfg)})


# ---------------------------------------------------------------- VideoMAE (transformers)
def videomae():
    from transformers import VideoMAEConfig, VideoMAEModel
    C, H, MLP, D, T, S = 84, 3, 136, 2, 4, 2
    cfg = VideoMAEConfig(image_size=IMG, patch_size=P, num_channels=3, num_frames=T, tubelet_size=2, hidden_size=C,
                         num_hidden_layers=D, num_attention_heads=H, intermediate_size=MLP, hidden_act="gelu",
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, qkv_bias=True,
                         layer_norm_eps=1e-6, use_mean_pooling=False)
    cfg._attn_implementation = "eager"
    model = VideoMAEModel(cfg).float().eval()
    randomise(model.named_parameters())
    fr = frames(S * T, IMG)
    px = normalise(fr).reshape(S, T, 3, IMG, IMG)   # (B, T, C, H, W)
    outs, hooks = capture_blocks(model.encoder.layer)
    with torch.no_grad():
        last = model(pixel_values=px).last_hidden_state
    for h in hooks:
        h.remove()
    save("videomae_w", model.state_dict())
    io = {"in.frames": fr, "out.final": last}
    for i, o in enumerate(outs):
        io["out.block.%d" % i] = o
    ccfg = {"arch": "videomae", "img": IMG, "patch": P, "frames": T, "tubelet": 2, "width": C, "depth": D, "heads": H,
            "mlp": MLP, "norm": "ln", "eps": 1e-6, "qk_norm": 0, "qkv_bias": 1, "layerscale": 0, "cls": 0,
            "pos": "sincos1d", "final_norm": 1, "gelu": "erf", "pool_heads": 0}
    save("videomae_io", io, {"config": json.dumps(ccfg)})


# ---------------------------------------------------------------- student (restated)
class Attn(torch.nn.Module):
    def __init__(self, C, H):
        super().__init__()
        self.H = H
        self.qkv = torch.nn.Linear(C, 3 * C, bias=False)
        self.q_norm, self.k_norm = RMSNorm(C), RMSNorm(C)
        self.proj = torch.nn.Linear(C, C)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).chunk(3, -1)
        q, k = self.q_norm(q), self.k_norm(k)   # over the full width, before the head split
        sp = lambda t: t.reshape(B, N, self.H, -1).transpose(1, 2)
        q, k, v = sp(q), sp(k), sp(v)
        a = ((q * (C // self.H) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        return self.proj((a @ v).transpose(1, 2).reshape(B, N, C))


class LS(torch.nn.Module):
    def __init__(self, C):
        super().__init__()
        self.gamma = torch.nn.Parameter(torch.ones(C))


class Mlp(torch.nn.Module):
    def __init__(self, C, Hd):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(C, Hd), torch.nn.Linear(Hd, C)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))   # flash-attn FusedMLP default


class Block(torch.nn.Module):
    def __init__(self, C, H, Hd):
        super().__init__()
        self.norm1, self.attn, self.ls1 = RMSNorm(C), Attn(C, H), LS(C)
        self.norm2, self.mlp, self.ls2 = RMSNorm(C), Mlp(C, Hd), LS(C)

    def forward(self, x, s1, s2):   # per-sample drop-path scales [B] of the two branches
        x = x + s1[:, None, None] * (self.ls1.gamma * self.attn(self.norm1(x)))
        return x + s2[:, None, None] * (self.ls2.gamma * self.mlp(self.norm2(x)))


class PatchEmbed(torch.nn.Module):
    def __init__(self, C):
        super().__init__()
        self.proj = torch.nn.Conv3d(3, C, kernel_size=(1, P, P), stride=(1, P, P))


class Student(torch.nn.Module):
    def __init__(self, C, H, Hd, depth, T, img, PH, PD):
        super().__init__()
        g = img // P
        self.patch_embed = PatchEmbed(C)
        self.cls_token = torch.nn.Parameter(torch.zeros(1, 1, C))
        self.pos_embed = torch.nn.Parameter(torch.zeros(1, 1 + T * g * g, C))
        self.blocks = torch.nn.ModuleList([Block(C, H, Hd) for _ in range(depth)])
        self.clip_projector = PoolHead(C, PH, PD)

    def forward(self, video, vis, drop, drop_mlp):
        """video [B,3,T,H,W]; vis [B,n_vis] token indices; drop, drop_mlp [depth,B]"""
        x = self.patch_embed.proj(video)                   # B,C,T,g,g
        B, C = x.shape[:2]
        x = x.flatten(2).transpose(1, 2)                   # (t,y,x) raster order
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], 1) + self.pos_embed
        x = torch.gather(x, 1, vis[:, :, None].expand(-1, -1, C))
        outs = []
        for i, blk in enumerate(self.blocks):
            x = blk(x, drop[i], drop_mlp[i])
            outs.append(x)
        pooled, _ = self.clip_projector(x)
        return outs, pooled


def student():
    C, H, MLP, D, T, PH, PD, S, NV = 80, 5, 144, 2, 4, 4, 48, 2, 9
    model = Student(C, H, MLP, D, T, IMG, PH, PD).float()
    randomise(model.named_parameters())
    fr = frames(S * T, IMG)
    video = normalise(fr).reshape(S, T, 3, IMG, IMG).permute(0, 2, 1, 3, 4)
    ntok = 1 + T * (IMG // P) ** 2
    vis = torch.stack([torch.cat([torch.zeros(1, dtype=torch.long),
                                  torch.randperm(ntok - 1)[:NV - 1].sort().values + 1]) for _ in range(S)])
    drop = torch.full((D, S), 1.0 / 0.8)
    drop[1, 0] = 0.0   # attention branch of sample 0 dropped in block 1
    drop_mlp = torch.full((D, S), 1.0 / 0.8)
    drop_mlp[0, 1] = 0.0   # MLP branch of sample 1 dropped in block 0
    outs, pooled = model(video, vis, drop, drop_mlp)
    R = [torch.randn_like(o) for o in outs]
    Rp = torch.randn_like(pooled)
    loss = sum((o * r).sum() for o, r in zip(outs, R)) + (pooled * Rp).sum()
    loss.backward()
    save("student_w", {k: v for k, v in model.state_dict().items()})
    io = {"in.frames": fr, "in.vis": vis.to(torch.int32), "in.drop": drop, "in.drop_mlp": drop_mlp, "out.pooled": pooled,
          "dout.pooled": Rp}
    for i, (o, r) in enumerate(zip(outs, R)):
        io["out.block.%d" % i] = o
        io["dout.block.%d" % i] = r
    for k, p in model.named_parameters():
        io["grad." + k] = p.grad
    ccfg = {"arch": "student", "img": IMG, "patch": P, "frames": T, "tubelet": 1, "width": C, "depth": D, "heads": H,
            "mlp": MLP, "norm": "rms", "eps": 1e-6, "qk_norm": 1, "qkv_bias": 0, "layerscale": 1, "cls": 1,
            "pos": "learned", "final_norm": 0, "gelu": "tanh", "pool_heads": PH, "pool_dim": PD}
    save("student_io", io, {"config": json.dumps(ccfg)})


# ---------------------------------------------------------------- position tables
def tables():
    """bicubic resize 3x3 -> 2x2 and 5x5 -> 7x7 (F.interpolate), and the 3-D sin-cos table of
    internvideo2 pos_embed.py for width 80, grid 2, 4 frames (restated in numpy)"""
    io = {}
    for gi, go in ((3, 2), (5, 7)):
        src = torch.randn(gi * gi, 6)
        dst = F.interpolate(src.reshape(1, gi, gi, 6).permute(0, 3, 1, 2), size=(go, go), mode="bicubic",
                            align_corners=False).permute(0, 2, 3, 1).reshape(go * go, 6)
        io["bicubic.%d.%d.src" % (gi, go)] = src
        io["bicubic.%d.%d.dst" % (gi, go)] = dst

    def sincos1d(d, pos):
        om = np.arange(d // 2, dtype=np.float32)
        om /= d / 2.0
        om = 1.0 / 10000 ** om
        out = np.einsum("m,d->md", pos.reshape(-1), om)
        return np.concatenate([np.sin(out), np.cos(out)], 1)

    d, g, t = 80, 2, 4
    gw, gh = np.meshgrid(np.arange(g, dtype=np.float32), np.arange(g, dtype=np.float32))
    ds = d // 4 * 3
    sp = np.concatenate([sincos1d(ds // 2, gw), sincos1d(ds // 2, gh)], 1)           # [g*g, ds]
    tp = sincos1d(d // 4, np.arange(t, dtype=np.float32))                              # [t, d/4]
    pe = np.concatenate([np.repeat(tp[:, None], g * g, 1), np.repeat(sp[None], t, 0)], -1).reshape(-1, d)
    pe = np.concatenate([np.zeros((1, d)), pe], 0)
    io["sincos3d.80.2.4"] = torch.from_numpy(pe).float()
    save("tables", io)


if __name__ == "__main__":
    internvit("internvit", IMG, IMG, 2, 3)
    internvit("internvit_rs", IMG + P, IMG, 1, 2, C=40, MLP=72, PD=24, pth="internvit_rs_c.pth")
    videomae()
    student()
    tables()
    mine = ("internvit_", "videomae_", "student_", "tables.")
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT) if f.startswith(mine))
    print("goldens written to %s (%.1f KiB)" % (OUT, total / 1024))
