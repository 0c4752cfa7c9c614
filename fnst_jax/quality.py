"""Quality figures of a stylized image that do not depend on any loss weight.

Loss values compare only under one set of weights; these figures compare any two models
(any weights, any budget, any implementation's outputs), measured with a VGG19 at fixed
layers, whatever layers the model was trained with:

  style_reduction  sum_l ||G_l(photo) - G_l(style)||^2 / sum_l ||G_l(output) - G_l(style)||^2
                   over the style layers `STYLE_LAYERS` (Gram matrices normalised by C*H*W,
                   `losses.gram_matrix`; squared Frobenius norms). How many times closer to
                   the style's statistics the output is than the photo was: higher is more
                   stylized; 1.0 = as far as the unchanged photo.
  content_change   ||phi(output) - phi(photo)||^2 / ||phi(photo)||^2 at `CONTENT_LAYER`: how
                   much of the photo's content features changed; 0.0 = unchanged, lower
                   keeps more of the photo.
  luminance        mean luma Y' (ITU-R BT.601: 0.299 R' + 0.587 G' + 0.114 B' of the 0..255
                   values) of the output; `photo_luminance` the photo's; `luminance_ratio`
                   output / photo (1.0 = as bright as the photo; dark outputs show below 1).
  contrast         the standard deviation of that luma over the image; `photo_contrast`,
                   `contrast_ratio` likewise (washed-out outputs show below 1).

The style image is resized (Lanczos) so that its longest side equals the evaluated image's
longest side (`StyleTargets`): the figure then compares textures at the scale the output
shows them, whatever size the model was trained at.

`figures` is the pure, jitted computation (per image); `StyleTargets` holds the style
image's Grams per evaluation size; `measure` and `mean_figures` are what `evaluate` and the
training validation call.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fnst_jax import image_io
from fnst_jax.losses import gram_matrix
from fnst_jax.vgg import VGG19

STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1")
CONTENT_LAYER = "relu2_2"
# The VGG layers the figures need (relu3_1: the first 5 convolutions).
LAYERS = (*STYLE_LAYERS, CONTENT_LAYER)
LUMA_WEIGHTS = image_io.LUMA_WEIGHTS  # ITU-R BT.601 (the JPEG Y' of image_io)
LUMINANCE_STANDARD = "ITU-R BT.601 luma 0.299 R' + 0.587 G' + 0.114 B' of the 0..255 values"
# Per-image figures, in report order.
KEYS = (
    "style_reduction",
    "content_change",
    "luminance",
    "photo_luminance",
    "luminance_ratio",
    "contrast",
    "photo_contrast",
    "contrast_ratio",
)


def has_layers(vgg: VGG19) -> bool:
    """Whether `vgg`'s weights reach the layers the figures need (`LAYERS`)."""
    return all(layer in vgg.available_layers for layer in LAYERS)


def luma(images: jax.Array) -> jax.Array:
    """(N, H, W, 3) RGB on the 0..255 scale -> (N, H, W) BT.601 luma, float32."""
    return jnp.asarray(images, jnp.float32) @ jnp.asarray(LUMA_WEIGHTS, jnp.float32)


def _ratio(numerator: jax.Array, denominator: jax.Array, both_zero: float) -> jax.Array:
    """numerator / denominator; `both_zero` for 0 / 0 (an unchanged image), inf for x / 0."""
    safe = jnp.where(denominator > 0, denominator, 1.0)
    return jnp.where(
        denominator > 0,
        numerator / safe,
        jnp.where(numerator > 0, jnp.inf, both_zero),
    )


def gram_distance(
    grams: Mapping[str, jax.Array], other: Mapping[str, jax.Array], layers: Sequence[str]
) -> jax.Array:
    """Per image: sum over `layers` of the squared Frobenius norm of G_l - G_l(other); either
    side (N, C, C) or (1, C, C) (broadcast)."""
    total = 0.0
    for layer in layers:
        total = total + jnp.sum(jnp.square(grams[layer] - other[layer]), axis=(1, 2))
    return total


def _gram_distance(
    features: Mapping[str, jax.Array], style_grams: Mapping[str, jax.Array], layers: Sequence[str]
) -> jax.Array:
    """Per image: the Gram distance of VGG features to the style's Grams."""
    grams = {layer: gram_matrix(features[layer]) for layer in layers}
    return gram_distance(grams, style_grams, layers)


@functools.partial(jax.jit, static_argnames=("style_layers", "content_layer"))
def figures(
    vgg: VGG19,
    photos: jax.Array,
    outputs: jax.Array,
    style_grams: Mapping[str, jax.Array],
    style_layers: tuple[str, ...] = STYLE_LAYERS,
    content_layer: str = CONTENT_LAYER,
) -> dict[str, jax.Array]:
    """The figures of each image: photos and their outputs, (N, H, W, 3) on the 0..255 scale;
    `style_grams` the (1, C, C) Grams of the style image at each of `style_layers` (at this
    evaluation size: `StyleTargets.at`). Returns {key: (N,) float32} for every key of `KEYS`.
    Computed in float32 at the default matmul precision, whatever the model ran in."""
    layers = tuple(dict.fromkeys((*style_layers, content_layer)))
    photo_features = vgg(jnp.asarray(photos, jnp.float32), layers)
    output_features = vgg(jnp.asarray(outputs, jnp.float32), layers)
    style_reduction = _ratio(
        _gram_distance(photo_features, style_grams, style_layers),
        _gram_distance(output_features, style_grams, style_layers),
        both_zero=1.0,
    )
    photo_content = photo_features[content_layer]
    change = jnp.sum(jnp.square(output_features[content_layer] - photo_content), axis=(1, 2, 3))
    content_change = _ratio(change, jnp.sum(jnp.square(photo_content), axis=(1, 2, 3)), 0.0)
    output_luma, photo_luma = luma(outputs), luma(photos)
    luminance, photo_luminance = output_luma.mean(axis=(1, 2)), photo_luma.mean(axis=(1, 2))
    contrast, photo_contrast = output_luma.std(axis=(1, 2)), photo_luma.std(axis=(1, 2))
    return {
        "style_reduction": style_reduction,
        "content_change": content_change,
        "luminance": luminance,
        "photo_luminance": photo_luminance,
        "luminance_ratio": _ratio(luminance, photo_luminance, 1.0),
        "contrast": contrast,
        "photo_contrast": photo_contrast,
        "contrast_ratio": _ratio(contrast, photo_contrast, 1.0),
    }


@functools.partial(jax.jit, static_argnames="layers")
def image_grams(
    vgg: VGG19, images: jax.Array, layers: tuple[str, ...] = STYLE_LAYERS
) -> dict[str, jax.Array]:
    """(N, H, W, 3) on the 0..255 scale -> {layer: (N, C, C) Gram}, in float32."""
    features = vgg(jnp.asarray(images, jnp.float32), layers)
    return {layer: gram_matrix(features[layer]) for layer in layers}


class StyleTargets:
    """The style image's Grams at `STYLE_LAYERS`, per evaluation size (the style image
    resized so that its longest side equals the evaluated image's; computed once a size)."""

    def __init__(self, vgg: VGG19, style_rgb: np.ndarray) -> None:
        vgg.check_layers(LAYERS)  # weights too shallow: VGGLayerError, a UserError
        self.vgg = vgg
        self.style_rgb = np.asarray(style_rgb, np.uint8)
        self._grams: dict[int, dict[str, jax.Array]] = {}

    def at(self, size: int) -> dict[str, jax.Array]:
        """The Grams for images whose longest side is `size` px."""
        if size not in self._grams:
            style = image_io.resize_longest_side(self.style_rgb, size)
            self._grams[size] = image_grams(self.vgg, style[None])
        return self._grams[size]

    def luminance(self) -> dict[str, float]:
        """The style image's own mean luma and contrast (at its own size): the reference a
        stylized output's luminance is expected to move toward."""
        style_luma = np.asarray(luma(self.style_rgb[None]))
        return {"luminance": float(style_luma.mean()), "contrast": float(style_luma.std())}


def measure(targets: StyleTargets, photos: jax.Array, outputs: jax.Array) -> list[dict[str, float]]:
    """The figures of each image of a batch (all of one size), as floats."""
    size = max(photos.shape[1:3])
    values = jax.device_get(figures(targets.vgg, photos, outputs, targets.at(size)))
    return [{key: float(values[key][i]) for key in KEYS} for i in range(photos.shape[0])]


def mean_figures(
    vgg: VGG19, photos: jax.Array, outputs: jax.Array, style_grams: Mapping[str, jax.Array]
) -> dict[str, float]:
    """The mean of each figure over a batch (what training validation logs)."""
    values = jax.device_get(figures(vgg, photos, outputs, style_grams))
    return {key: float(np.mean(values[key])) for key in KEYS}
