"""Numpy helpers shared by the stylize engines (JAX and onnxruntime) and tiling: size
rounding, batch padding, the network input of an image.

`network_input` lays an image out host-side exactly as `transformer_net.stylize_padded` and
`TransformerNet.__call__` pad it on the device (numpy's and jax's "reflect" agree).

Imports no JAX (the onnxruntime path of `stylize.py` uses it).
"""

from __future__ import annotations

import numpy as np

# transformer_net.SIZE_MULTIPLE (tests keep them equal): the network input's sides are
# padded to multiples of it (the network downsamples twice by 2).
SIZE_MULTIPLE = 4


def round_up(value: int, multiple: int) -> int:
    """The smallest multiple of `multiple` that is >= `value`."""
    return -(-value // multiple) * multiple


def pad_batch(array: np.ndarray) -> np.ndarray:
    """A batch padded up to a power of two by repeating its last item, so that few batch
    sizes ever get compiled; callers drop the extra results."""
    n = len(array)
    extra = (1 << (n - 1).bit_length()) - n
    return np.concatenate([array, np.repeat(array[-1:], extra, axis=0)]) if extra else array


def reflect_pad_numpy(
    images: np.ndarray, top: int, bottom: int, left: int, right: int
) -> np.ndarray:
    """Reflection padding of (..., H, W, C) arrays; pads larger than the image reflect again
    (and a single row or column repeats), as `transformer_net.reflect_pad` does."""
    if top == bottom == left == right == 0:
        return images
    widths = [(0, 0)] * (images.ndim - 3) + [(top, bottom), (left, right), (0, 0)]
    return np.pad(images, widths, mode="reflect")


def network_input(image: np.ndarray, pad: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(H, W, C) image -> (what the network sees, (top, left) of the image in it).

    The reflection border of `pad` px (clipped to H - 1 and W - 1, as
    `transformer_net.stylize_padded` clips it), then reflection at the bottom/right up to a
    multiple of 4, as `TransformerNet.__call__` pads.
    """
    height, width = image.shape[:2]
    pad_h, pad_w = min(pad, height - 1), min(pad, width - 1)
    padded = reflect_pad_numpy(image, pad_h, pad_h, pad_w, pad_w)
    rows, cols = padded.shape[:2]
    padded = reflect_pad_numpy(padded, 0, -rows % SIZE_MULTIPLE, 0, -cols % SIZE_MULTIPLE)
    return padded, (pad_h, pad_w)
