"""The stability term: a small change of the input must not change the stylized output much.

A feed-forward style network amplifies the tiny differences between consecutive video frames
(sensor noise, compression, sub-pixel motion) into flicker. Following Gupta, Johnson et al.
(2017) and the noise-based methods after them, training can penalise that directly: each
image x of a batch also goes through the network perturbed, as T(x) + n, where T is a small
random sub-pixel shift and scale and n Gaussian pixel noise, and the output for it must match
the clean output moved the same way:

    raw_stability = mean over the batch, pixels and channels of (f(T(x) + n) - T(f(x)))^2

in squared pixel levels (0..255), over the interior that both warps keep inside the image.
It costs one more TransformerNet forward and backward per step (the perturbed copies run in
the same call as the clean images), and no VGG pass. Gradients flow through both outputs.

With `loss.auto_balance` the configured `loss.stability_weight` is a multiplier, like the
other weights: 1.0 makes the term, for an output that moves exactly as much as its input
(the identity network), `YARDSTICK_RATIO` times the content loss of the first batch
(`yardstick`). A network trained without the term moves its output far more than the
perturbation moves its input, so the term weighs most on an unstable network. The
ratio was set from two quick-start runs (docs/experiments/stable_video.md): 0.01 held style back too
much (1.34x the baseline's validation style loss at step 150); 0.004 is what 1.0 means now.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# The perturbation: per image, a shift of up to MAX_SHIFT px in each direction, a zoom by a
# factor in [1 - MAX_ZOOM, 1 + MAX_ZOOM] about the centre, and noise of NOISE_STD levels.
# These are what consecutive frames of ordinary footage differ by.
MAX_SHIFT = 1.0
MAX_ZOOM = 0.02
NOISE_STD = 2.0
# With auto-balance, weight 1.0 weighs an identity network's stability term at this fraction
# of the first batch's content loss.
YARDSTICK_RATIO = 0.004


def margin(height: int, width: int) -> int:
    """Rows/columns at each border left out of the comparison: where a warp may have sampled
    outside the image (shift plus zoom at the far edge), plus one for the bilinear kernel."""
    return math.ceil(MAX_SHIFT + MAX_ZOOM * max(height, width) / 2) + 1


def sample_transforms(rng: jax.Array, count: int) -> tuple[jax.Array, jax.Array]:
    """Per image: a zoom factor (count,) and a shift (count, 2) in pixels (rows, columns)."""
    zoom_key, shift_key = jax.random.split(rng)
    zoom = 1.0 + jax.random.uniform(zoom_key, (count,), minval=-MAX_ZOOM, maxval=MAX_ZOOM)
    shift = jax.random.uniform(shift_key, (count, 2), minval=-MAX_SHIFT, maxval=MAX_SHIFT)
    return zoom, shift


def warp(images: jax.Array, zoom: jax.Array, shift: jax.Array) -> jax.Array:
    """Move each (H, W, C) image of a batch by its zoom (about the centre) and shift, with
    bilinear resampling; the output keeps the input's size."""
    height, width = images.shape[1:3]
    centre = jnp.array([height, width], jnp.float32) / 2

    def one(image: jax.Array, z: jax.Array, s: jax.Array) -> jax.Array:
        scale = jnp.stack([z, z])
        translation = centre * (1.0 - scale) + s
        return jax.image.scale_and_translate(
            image, image.shape, (0, 1), scale, translation, "linear", antialias=False
        )

    return jax.vmap(one)(images.astype(jnp.float32), zoom, shift)


def perturb(
    rng: jax.Array, images: jax.Array, first: jax.Array | int = 0, total: int | None = None
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """(the perturbed images T(x) + n, the transform (zoom, shift) to apply to the outputs).

    The draws are made for a batch of `total` images (default: this one) of which `images`
    are rows first..first+len: a device holding part of a global batch draws exactly what
    one device holding all of it would."""
    count = images.shape[0]
    total = total or count
    transform_key, noise_key = jax.random.split(rng)
    zoom, shift = sample_transforms(transform_key, total)
    noise = NOISE_STD * jax.random.normal(noise_key, (total, *images.shape[1:]), jnp.float32)

    def rows(x: jax.Array) -> jax.Array:
        return jax.lax.dynamic_slice_in_dim(x, first, count)

    zoom, shift, noise = rows(zoom), rows(shift), rows(noise)
    return warp(images, zoom, shift) + noise, (zoom, shift)


def stability_loss(
    clean_output: jax.Array, perturbed_output: jax.Array, transform: tuple[jax.Array, jax.Array]
) -> jax.Array:
    """Mean squared difference of f(T(x) + n) and T(f(x)) over the interior, in float32."""
    moved = warp(clean_output, *transform)
    m = margin(*clean_output.shape[1:3])
    difference = perturbed_output.astype(jnp.float32)[:, m:-m, m:-m] - moved[:, m:-m, m:-m]
    return jnp.mean(jnp.square(difference))


def yardstick(rng: jax.Array, images: jax.Array) -> jax.Array:
    """The stability term of the identity network on `images`: how much the perturbation
    itself changes an image. Auto-balance divides by it (see the module docstring)."""
    perturbed, transform = perturb(rng, images)
    return stability_loss(images.astype(jnp.float32), perturbed, transform)
