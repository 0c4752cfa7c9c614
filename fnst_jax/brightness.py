"""Keep the photo's brightness: a tone curve that gives a stylized image the photo's mean luma.

The network cannot see how bright a photo is: its first layer is instance-normalised, which
removes any brightness offset and contrast scale of the input, so a night photo and a day
photo of the same scene come out equally bright, as bright as the style makes them. What
stylize.py writes by default (`keep_brightness` in `fnst_jax.stroke.Stroke`) puts the photo's
brightness back: every channel of the output goes through one gamma curve

    v -> 255 * (v / 255) ** g

with g chosen so that the output's mean luma (ITU-R BT.601, as `fnst_jax.quality` measures
it) equals the photo's. A curve keeps black and white where they are and the order of every
tone, so the strokes and colours stay; a night photo stays a night scene. The curve is found
on the output's per-channel histograms (exact for uint8 pixels, whatever the image's size)
by bisection on log2 g in [-`MAX_LOG2_GAMMA`, `MAX_LOG2_GAMMA`]; the browser page does the
same (static/pixels.js).
"""

from __future__ import annotations

import numpy as np

from fnst_jax.image_io import LUMA_WEIGHTS as BT601

LUMA_WEIGHTS = np.array(BT601)  # float64, as fnst_jax.quality measures the luminance
MAX_LOG2_GAMMA = 4.0  # g between 1/16 and 16
BISECTIONS = 40
LEVELS = np.arange(256) / 255.0


def mean_luma(rgb: np.ndarray) -> float:
    """The mean BT.601 luma of uint8 (H, W, 3) pixels, in float64 from the channel sums."""
    sums = rgb.reshape(-1, 3).sum(axis=0, dtype=np.int64)
    return float(LUMA_WEIGHTS @ (sums / max(1, rgb.shape[0] * rgb.shape[1])))


def gamma_for(rgb: np.ndarray, target: float) -> float:
    """The g of the curve that gives uint8 (H, W, 3) `rgb` a mean luma of `target` (0..255),
    before rounding; the nearest bound when no g in range reaches it."""
    counts = np.stack([np.bincount(rgb[..., c].ravel(), minlength=256) for c in range(3)])
    weights = LUMA_WEIGHTS[:, None] * counts / max(1, rgb.shape[0] * rgb.shape[1])

    def luma_at(log2_gamma: float) -> float:
        return 255.0 * float(np.sum(weights * LEVELS ** (2.0**log2_gamma)))

    low, high = -MAX_LOG2_GAMMA, MAX_LOG2_GAMMA  # mean luma falls as g grows
    for _ in range(BISECTIONS):
        middle = (low + high) / 2
        if luma_at(middle) > target:
            low = middle
        else:
            high = middle
    return 2.0 ** ((low + high) / 2)


def curve(gamma: float) -> np.ndarray:
    """The uint8 lookup table of v -> 255 * (v / 255) ** gamma, rounded half to even."""
    return np.clip(np.rint(255.0 * LEVELS**gamma), 0, 255).astype(np.uint8)


def keep(output: np.ndarray, photo: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) `output` with the mean luma of uint8 `photo` (any size): the output
    through the gamma curve that matches them."""
    return curve(gamma_for(output, mean_luma(photo)))[output]
