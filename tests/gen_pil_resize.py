#!/usr/bin/env python3
"""gen_pil_resize.py: golden for the PIL-exact bilinear resize (tests/test_decode.c).

The recipe (InternVideo2 datasets/transforms.py GroupMultiScaleCrop) crops with PIL's
Image.crop and resizes with Image.resize(size, Image.BILINEAR). This script applies exactly
that to a 97x61 RGB image defined by a formula the C test recomputes, for a few crop boxes
(inside, partly outside, up- and downscaling, anisotropic), and writes the outputs one after
another to tests/goldens/pil_resize.bin (uint8 HWC). Needs Pillow only, of the recipe's era:
    python3 -m venv /tmp/v && /tmp/v/bin/pip install pillow==10.4.0 && /tmp/v/bin/python tests/gen_pil_resize.py
(Pillow 13.0 runs the vertical pass first for some shapes, e.g. 20x55 -> 40x40, which moves a
few pixels by 1; Pillow 10.4, as used when InternVideo2 was trained, always goes horizontal first.)
Boxes (x, y, w, h, out) are listed in the test too; keep the two in step."""
import os
from PIL import Image

W, H = 97, 61
BOXES = [(0, 0, 97, 61, 24), (5, 3, 40, 40, 24), (10, 0, 61, 30, 17), (-8, -4, 60, 60, 24),
         (50, 20, 60, 50, 31), (3, 7, 20, 55, 40), (0, 0, 24, 24, 24)]


def pixel(x, y, c):
    return (x * 7 + y * 13 + c * 50 + (x * y) % 17 + ((x ^ y) & 8) * 9) & 255


def main():
    img = Image.new("RGB", (W, H))
    img.putdata([tuple(pixel(x, y, c) for c in range(3)) for y in range(H) for x in range(W)])
    out = bytearray()
    for x, y, w, h, s in BOXES:
        crop = img.crop((x, y, x + w, y + h))
        out += crop.resize((s, s), Image.BILINEAR).tobytes()
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "goldens", "pil_resize.bin")
    with open(path, "wb") as f:
        f.write(out)
    print(f"{path}: {len(out)} bytes, Pillow {Image.__version__}")


if __name__ == "__main__":
    main()
