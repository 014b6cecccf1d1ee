"""Oracle for tests/test_safetensors_oracle.c: the reference `safetensors` library (Rust core)
writes a file our reader must read, and validates and lists a file our writer wrote.

  python3 tests/safetensors_oracle.py write PATH [--no-meta]  # the tensors below (+ metadata
                                                   # format=pt who=oracle unless --no-meta)
  python3 tests/safetensors_oracle.py read PATH    # one line per tensor: name dtype shape sha256(data)
                                                   # and one line per metadata entry: meta key value
Needs `pip install safetensors numpy`; the C test skips when they are absent.
"""
import hashlib
import sys

import numpy as np
import safetensors


def tensors():
    return {
        "w.f32": ("float32", np.arange(6, dtype=np.float32).reshape(2, 3) * 0.5 - 1),
        "b.bf16": ("bfloat16", np.array([0x3F80, 0xC000, 0x4049], dtype=np.uint16)),  # 1, -2, 3.140625
        "h.f16": ("float16", np.array([1, -2.5, 65504], dtype=np.float16)),
        "odd.u8": ("uint8", np.array([1, 2, 3], dtype=np.uint8)),
        "i8": ("int8", np.array([-128, 127], dtype=np.int8)),
        "i32": ("int32", np.array([[1, -2], [3, -4]], dtype=np.int32)),
        "i64": ("int64", np.array([-5], dtype=np.int64)),
        "f64": ("float64", np.array([3.25], dtype=np.float64)),
        "empty": ("float32", np.zeros((0, 3), dtype=np.float32)),
    }


def write(path, *opts):
    t = tensors()
    specs = {}
    for name, (dt, a) in t.items():
        a = np.ascontiguousarray(a)
        specs[name] = safetensors.TensorSpec(dtype=dt, shape=list(a.shape), data_ptr=a.ctypes.data, data_len=a.nbytes)
    meta = None if "--no-meta" in opts else {"format": "pt", "who": "oracle"}
    safetensors.serialize_file(specs, path, metadata=meta)


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    for name, info in safetensors.deserialize(data):
        shape = ",".join(str(d) for d in info["shape"])
        print(name, info["dtype"], "[" + shape + "]", hashlib.sha256(bytes(info["data"])).hexdigest())
    with safetensors.safe_open(path, framework="numpy") as f:
        for k, v in (f.metadata() or {}).items():
            print("meta", k, v)


if __name__ == "__main__":
    {"write": write, "read": read}[sys.argv[1]](*sys.argv[2:])
