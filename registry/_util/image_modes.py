"""PIL images of any bit depth as 8-bit RGB, scaled to the same [0, 1] intensities, never clipped: Pillow's own
convert("RGB") clips 16-bit greyscale (I;16, I;16B, I) at 255, so 99.6% of a typical 16-bit image turns white."""
from __future__ import annotations

import numpy as np
from PIL import Image

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def to_rgb(img: Image.Image) -> Image.Image:
    """`img` as an RGB image of 8-bit channels holding round(v * 255 / max) for a v in 0..max, max = 65535 for
    16-bit greyscale (and 32-bit integer images, whose values must lie in 0..65535: a 16-bit PNG opens as mode I
    in some Pillow versions). 16-bit colour PNGs are decoded by Pillow to their high byte (v >> 8, within one 8-bit
    step of the exact value). ValueError for a floating-point image (mode F), whose range is not defined."""
    if img.mode == "RGB":
        return img
    if img.mode in SIXTEEN_BIT_MODES or img.mode == "I":
        values = np.asarray(img)
        if img.mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(f"a 32-bit integer image (mode I) with values in {values.min()}..{values.max()}: only "
                             "0..65535 (16-bit) is understood; save it as an 8 or 16-bit image")
        # round(v * 255 / 65535) = round(v / 257) in integers: (2v + 257) // 514 (v / 257 is never a half), in
        # one uint32 copy rather than float64 ones
        wide = values.astype(np.uint32)
        wide *= 2
        wide += 257
        wide //= 514
        eight = wide.astype(np.uint8)
        del wide
        return Image.fromarray(eight).convert("RGB")
    if img.mode == "F":
        raise ValueError("a floating-point image (mode F) has no defined intensity range: save it as an 8 or 16-bit "
                         "image")
    return img.convert("RGB")
