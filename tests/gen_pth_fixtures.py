#!/usr/bin/env python3
"""Builds the small committed fixtures of tests/test_pth.c in tests/fixtures/pth/.

The checkpoints are written by torch.save itself (the format the C reader must accept); the
expected outputs are written by safetensors.torch from what torch.load reads back, with the
name mapping of iv2_pth_convert restated here, so the C converter is compared with PyTorch's
own reading of the file. A few broken files are made by hand (same ZIP layout) for the error
tests. Rerun (only needed when the fixtures change; the outputs are committed):
    pip install torch safetensors numpy
    python3 tests/gen_pth_fixtures.py
Deterministic: fixed seeds; the zip writer below uses fixed timestamps.
"""
import argparse
import io
import os
import struct
import warnings
import zipfile
import zlib

import numpy as np
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "pth")


def rnd(*shape, dtype=torch.float32, g=None):
    return torch.randn(*shape, generator=g).to(dtype)


# ---------------------------------------------------------------------------------------------
# state dicts

def mixed_state_dict(g):
    """fp32/fp16/bf16/int64, a transposed view, shared storage with offsets, a Parameter,
    a 0-d and an empty tensor."""
    sd = {}
    sd["blocks.0.attn.qkv.weight"] = rnd(12, 5, g=g)
    sd["blocks.0.attn.proj.bias"] = rnd(5, dtype=torch.float16, g=g)
    sd["blocks.0.mlp.fc1.weight"] = rnd(7, 5, dtype=torch.bfloat16, g=g)
    sd["blocks.0.mlp.fc2.weight"] = rnd(5, 7, g=g).t()            # non-contiguous (7,5), strides (1,7)
    base = rnd(64, g=g)                                           # one storage, four views
    sd["shared.a"] = base[3:15].view(3, 4)                        # offset 3
    sd["shared.b"] = base[20:44].view(2, 3, 4).permute(2, 0, 1)   # offset 20, permuted 3-D
    sd["shared.c"] = base[50:64:2]                                # offset 50, stride 2
    sd["shared.full"] = base
    hb = rnd(6, 8, dtype=torch.bfloat16, g=g)
    sd["bf16.slice"] = hb[1:5, 2:7]                               # bf16 2-D slice
    sd["ls1.gamma"] = torch.nn.Parameter(rnd(5, g=g))
    sd["num_batches_tracked"] = torch.tensor(1234567890123, dtype=torch.int64)  # 0-d int64
    sd["empty"] = torch.zeros(0, 3)
    sd["int32.idx"] = torch.arange(10, dtype=torch.int32).view(2, 5)
    sd["f64.x"] = rnd(3, dtype=torch.float64, g=g)
    return sd


def videomae_state_dict(g):
    sd = {}
    sd["encoder.patch_embed.proj.weight"] = rnd(8, 3, 2, 4, 4, g=g)
    sd["encoder.patch_embed.proj.bias"] = rnd(8, g=g)
    sd["encoder.blocks.0.norm1.weight"] = rnd(8, g=g)
    sd["encoder.blocks.0.attn.qkv.weight"] = rnd(24, 8, g=g)
    sd["encoder.blocks.0.attn.q_bias"] = rnd(8, g=g)
    sd["encoder.blocks.0.attn.v_bias"] = rnd(8, g=g)
    sd["encoder.norm.weight"] = rnd(8, g=g)
    sd["encoder_to_decoder.weight"] = rnd(4, 8, g=g)
    sd["mask_token"] = rnd(1, 1, 4, g=g)
    sd["decoder.blocks.0.attn.qkv.weight"] = rnd(12, 4, g=g)
    sd["decoder.norm.weight"] = rnd(4, g=g)
    sd["decoder.head.weight"] = rnd(6, 4, g=g)
    return sd


def internvl_c_state_dict(g):
    bf = torch.bfloat16
    sd = {}
    sd["cls_token"] = rnd(1, 1, 10, dtype=bf, g=g)
    sd["pos_embed"] = rnd(1, 5, 10, dtype=bf, g=g)
    sd["patch_embed.proj.weight"] = rnd(10, 3, 2, 2, dtype=bf, g=g)
    sd["blocks.0.attn.qkv.weight"] = rnd(30, 10, dtype=bf, g=g)
    sd["blocks.0.ls1.gamma"] = rnd(10, dtype=bf, g=g)
    sd["clip_projector.cross_attn.q.weight"] = rnd(10, 10, dtype=bf, g=g)
    sd["clip_projector.cross_attn.q_bias"] = rnd(10, dtype=bf, g=g)
    sd["clip_projector.norm1_q.weight"] = rnd(10, dtype=bf, g=g)
    sd["transformer.layers.0.self_attn.q_proj.weight"] = rnd(6, 6, dtype=bf, g=g)
    sd["transformer.embed_tokens.weight"] = rnd(9, 6, dtype=bf, g=g)
    sd["text_projection"] = rnd(6, 4, dtype=bf, g=g)
    sd["logit_scale"] = torch.tensor(4.6052, dtype=bf)
    return sd


# ---------------------------------------------------------------------------------------------
# the name mapping of iv2_pth_convert, restated

INTERNVIT_DROP = ("transformer.", "text_projection", "logit_scale", "language_model.", "qllama.",
                  "query_tokens", "text_encoder.", "text_decoder.", "itm_head.", "mlp1.")


def map_name(model, name):
    if model == "videomae":
        if name.startswith(("decoder.", "encoder_to_decoder.")) or name == "mask_token":
            return None
        return name[len("encoder."):] if name.startswith("encoder.") else name
    if model == "internvit":
        return None if name.startswith(INTERNVIT_DROP) else name
    return name


def expected(sd, model, out_dtype, path, n_skipped, strip_module=False):
    out, dropped = {}, 0
    for k, v in sd.items():
        if strip_module:
            k = k[len("module."):]
        m = map_name(model, k)
        if m is None:
            dropped += 1
            continue
        t = v.detach().contiguous().clone()
        if out_dtype is not None and t.is_floating_point():
            t = t.to(out_dtype)
        out[m] = t
    meta = {"model": model, "n_written": str(len(out)), "n_dropped": str(dropped), "n_skipped": str(n_skipped)}
    save_file(out, path, metadata=meta)


def load_sd(path, *keys):
    obj = torch.load(path, weights_only=False)
    for k in keys:
        obj = obj[k]
    return obj


# ---------------------------------------------------------------------------------------------
# a ZIP writer (stored entries) for repacked and broken files: ZIP64 everywhere when asked

def write_zip(path, entries, zip64=False, compress=()):
    """entries: list of (name, bytes). Data aligned to 64 bytes like torch's writer."""
    buf = io.BytesIO()
    cd = []
    for name, data in entries:
        nb = name.encode()
        method = 8 if name in compress else 0
        payload = data
        if method == 8:
            co = zlib.compressobj(9, zlib.DEFLATED, -15)
            payload = co.compress(data) + co.flush()
        crc = zlib.crc32(data) & 0xFFFFFFFF
        off = buf.tell()
        extra = b""
        if zip64:
            extra = struct.pack("<HHQQ", 1, 16, len(data), len(payload))
        pad = (-(off + 30 + len(nb) + len(extra) + 4)) % 64
        extra += struct.pack("<HH", 0xCAFE, pad) + b"Z" * pad
        size32 = 0xFFFFFFFF if zip64 else len(data)
        csize32 = 0xFFFFFFFF if zip64 else len(payload)
        buf.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 45 if zip64 else 20, 0, method, 0, 0x21,
                              crc, csize32, size32, len(nb), len(extra)))
        buf.write(nb + extra + payload)
        cd.append((nb, crc, len(data), len(payload), off, method))
    cd_off = buf.tell()
    for nb, crc, usize, csize, off, method in cd:
        if zip64:
            extra = struct.pack("<HHQQQ", 1, 24, usize, csize, off)
            rec = (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
        else:
            extra, rec = b"", (csize, usize, off)
        buf.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45 if zip64 else 20, 0, method, 0, 0x21,
                              crc, rec[0], rec[1], len(nb), len(extra), 0, 0, 0, 0, rec[2]))
        buf.write(nb + extra)
    cd_size = buf.tell() - cd_off
    n = len(cd)
    if zip64:
        z64 = buf.tell()
        buf.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, cd_size, cd_off))
        buf.write(struct.pack("<IIQI", 0x07064B50, 0, z64, 1))
        buf.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0))
    else:
        buf.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, cd_size, cd_off, 0))
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def zip_entries(path, new_top=None):
    z = zipfile.ZipFile(path)
    out = []
    for i in z.infolist():
        name = i.filename
        if new_top:
            name = new_top + name[name.index("/"):]
        out.append((name, z.read(i)))
    return out


def replace_entry(entries, suffix, data):
    return [(n, data if n.endswith(suffix) else d) for n, d in entries]


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    P = lambda n: os.path.join(args.out, n)
    g = torch.Generator().manual_seed(20240607)

    # 1. mixed dtypes/views, nested under 'module' (as internvl checkpoints are)
    mixed = mixed_state_dict(g)
    torch.save({"module": mixed}, P("mixed.pth"))
    sd = load_sd(P("mixed.pth"), "module")
    expected(sd, "raw", None, P("mixed.keep.safetensors"), 0)
    expected(sd, "raw", torch.bfloat16, P("mixed.bf16.safetensors"), 0)
    expected(sd, "raw", torch.float32, P("mixed.f32.safetensors"), 0)
    expected(sd, "raw", torch.float16, P("mixed.f16.safetensors"), 0)

    # 2. VideoMAE pre-training checkpoint: {'model': sd} beside non-tensor entries and an
    #    argparse.Namespace (an object the reader must skip, not execute)
    vm = videomae_state_dict(g)
    vm_sd = dict(vm)
    vm_sd["_step"] = 17  # a non-tensor entry inside the state dict
    # (numpy scalars/arrays, bytes and sets are pickled through REDUCE/BUILD of other globals)
    torch.save({"model": vm_sd, "epoch": 1199, "args": argparse.Namespace(lr=1.5e-4, model="vit_g"),
                "best": np.float64(0.75), "hist": np.arange(3.0), "note": b"bytes", "flags": {1, 2}},
               P("videomae.pth"))
    sd = load_sd(P("videomae.pth"), "model")
    expected({k: v for k, v in sd.items() if torch.is_tensor(v)}, "videomae", None,
             P("videomae.keep.safetensors"), 1)

    # 3. InternVL-C style, bf16, a raw dict (no wrapper), saved under an odd file name
    ivc = internvl_c_state_dict(g)
    torch.save(ivc, P("internvl_c.bin"))
    sd = load_sd(P("internvl_c.bin"))
    expected(sd, "internvit", None, P("internvl_c.keep.safetensors"), 0)
    expected(sd, "internvit", torch.float32, P("internvl_c.f32.safetensors"), 0)

    # 4. DDP-style "module." prefixes under 'state_dict'
    ddp = {"module." + k: v for k, v in videomae_state_dict(g).items() if not k.startswith("decoder")}
    torch.save({"state_dict": ddp, "optimizer": {"lr": 0.1}}, P("ddp.pth"))
    sd = load_sd(P("ddp.pth"), "state_dict")
    expected(sd, "student", None, P("ddp.keep.safetensors"), 0, strip_module=True)

    # 5. HF-style shards (InternViT HF remote-code naming under vision_model., bf16 raw dicts)
    bf = torch.bfloat16
    hf = {"vision_model.embeddings.class_embedding": rnd(1, 1, 6, dtype=bf, g=g),
          "vision_model.embeddings.position_embedding": rnd(1, 5, 6, dtype=bf, g=g),
          "vision_model.encoder.layers.0.attn.qkv.weight": rnd(18, 6, dtype=bf, g=g),
          "vision_model.encoder.layers.0.ls1": rnd(6, dtype=bf, g=g),
          "vision_model.encoder.layers.1.attn.qkv.weight": rnd(18, 6, dtype=bf, g=g),
          "clip_projector.cross_attn.k.weight": rnd(6, 6, dtype=bf, g=g),
          "qllama.model.embed_tokens.weight": rnd(7, 4, dtype=bf, g=g),
          "query_tokens": rnd(1, 3, 4, dtype=bf, g=g)}
    keys = list(hf)
    torch.save({k: hf[k] for k in keys[:4]}, P("pytorch_model-00001-of-00002.bin"))
    torch.save({k: hf[k] for k in keys[4:]}, P("pytorch_model-00002-of-00002.bin"))
    merged = {**load_sd(P("pytorch_model-00001-of-00002.bin")), **load_sd(P("pytorch_model-00002-of-00002.bin"))}
    expected(merged, "internvit", None, P("shards.keep.safetensors"), 0)

    # 6. the mixed checkpoint repacked with ZIP64 records everywhere and another top folder;
    #    torch.load must still read it (checked here), and so must the C reader
    write_zip(P("zip64.pth"), zip_entries(P("mixed.pth"), "some_other_name"), zip64=True)
    a, b = load_sd(P("zip64.pth"), "module"), load_sd(P("mixed.pth"), "module")
    assert all(torch.equal(a[k], b[k]) for k in b), "zip64 repack changed a tensor"

    # broken files (error tests); each still has valid CRCs so the intended check is reached
    ents = zip_entries(P("videomae.pth"), "bad")
    pkl = [d for n, d in ents if n.endswith("data.pkl")][0]
    write_zip(P("bad_trunc_pickle.pth"), replace_entry(ents, "data.pkl", pkl[: len(pkl) // 2]))
    write_zip(P("bad_opcode.pth"), replace_entry(ents, "data.pkl", b"\x80\x02}q\x00(X\x01\x00\x00\x00aI7\nu."))
    # a tensor whose extent (size (4,3), stride (100,1)) runs past its 12-element storage
    fake = (b"\x80\x02}X\x01\x00\x00\x00w"
            b"ctorch._utils\n_rebuild_tensor_v2\n("
            b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x0ctQ"
            b"K\x00K\x04K\x03\x86KdK\x01\x86\x89ccollections\nOrderedDict\n)RtRs.")
    write_zip(P("bad_extent.pth"), [("bad/data.pkl", fake), ("bad/data/0", bytes(48))])
    write_zip(P("bad_missing_storage.pth"), [("bad/data.pkl", fake), ("bad/data/1", bytes(48))])
    write_zip(P("bad_big_endian.pth"), replace_entry(zip_entries(P("internvl_c.bin")), "/byteorder", b"big"))
    write_zip(P("bad_compressed.pth"), zip_entries(P("internvl_c.bin")), compress=("internvl_c/data.pkl",))
    torch.save({"ema": {"decay": 0.999}, "epoch": 3}, P("bad_no_tensors.pth"))
    with warnings.catch_warnings():  # quantized tensors are deprecated; any unsupported kind will do
        warnings.simplefilter("ignore")
        q = torch.quantize_per_tensor(torch.ones(4), 0.1, 0, torch.qint8)
    torch.save({"w": torch.ones(2), "q": q}, P("bad_qtensor.pth"))
    torch.save({"x": torch.ones(3)}, P("legacy.pth"), _use_new_zipfile_serialization=False)
    with open(P("not_a_zip.pth"), "wb") as f:
        f.write(b"hello, this is not a checkpoint\n" * 4)

    total = sum(os.path.getsize(P(n)) for n in os.listdir(args.out))
    print(f"wrote {len(os.listdir(args.out))} files, {total} bytes, to {args.out}")


if __name__ == "__main__":
    main()
