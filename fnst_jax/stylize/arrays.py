"""Numpy helpers shared by the stylize engine, tiling and runs: size rounding, reflection
padding of uint8 images, Lanczos resizing.

`reflect_pad_numpy` pads host-side numpy images before they reach the network (bucketing,
tiling); the network's own padding is `transformer_net.reflect_pad` on jax arrays.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def round_up(value: int, multiple: int) -> int:
    """The smallest multiple of `multiple` that is >= `value`."""
    return -(-value // multiple) * multiple


def reflect_pad_numpy(
    images: np.ndarray, top: int, bottom: int, left: int, right: int
) -> np.ndarray:
    """Reflection padding of (..., H, W, C) arrays; pads larger than the image reflect again."""
    if top == bottom == left == right == 0:
        return images
    widths = [(0, 0)] * (images.ndim - 3) + [(top, bottom), (left, right), (0, 0)]
    # numpy cannot reflect an axis of length 1; repeating the single row is the limit case.
    mode = "reflect" if min(images.shape[-3], images.shape[-2]) > 1 else "edge"
    return np.pad(images, widths, mode=mode)


def resize(
    rgb: np.ndarray, alpha: np.ndarray | None, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Lanczos resize of uint8 RGB (and alpha) to (width, height); a no-op at the same size."""
    if (rgb.shape[1], rgb.shape[0]) == size:
        return rgb, alpha
    rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS, reducing_gap=3))
    if alpha is not None:
        alpha = np.asarray(Image.fromarray(alpha).resize(size, Image.Resampling.LANCZOS))
    return rgb, alpha
