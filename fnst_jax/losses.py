"""Perceptual losses (Johnson et al. 2016): Gram style loss, feature content loss, TV loss.

Pure jnp. Every loss is computed in float32, whatever dtype the networks ran in.
`perceptual_loss` is the one objective shared by training, evaluation and the Gatys
baseline, so the numbers they report are the same numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from fnst_jax.errors import UserError
from fnst_jax.vgg import VGG19, layer_depth

# The valid pixel range: what stylize.py can write, the constraint on the Gatys baseline's
# image, and the range evaluate and validation score the model's output in.
PIXEL_RANGE = (0.0, 255.0)


def to_pixel_range(images: jax.Array) -> jax.Array:
    """Clip images to `PIXEL_RANGE` (the one pixel constraint; see `PIXEL_RANGE`)."""
    return jnp.clip(images, *PIXEL_RANGE)


class LossSpecError(UserError, ValueError):
    """A loss configuration that cannot be computed (no style layer, wrong weight count);
    unknown layer names raise `vgg.VGGLayerError`."""


def gram_matrix(features: jax.Array) -> jax.Array:
    """(N, H, W, C) features -> (N, C, C) Gram matrices, normalised by C*H*W as in the
    PyTorch example."""
    n, h, w, c = features.shape
    f = features.astype(jnp.float32).reshape(n, h * w, c)
    return jnp.einsum("npc,npd->ncd", f, f, precision=jax.lax.Precision.HIGHEST) / (c * h * w)


def mse(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)))


def content_loss(features: jax.Array, target_features: jax.Array) -> jax.Array:
    """Mean squared error between feature maps."""
    return mse(features, target_features)


def style_layer_losses(
    features: Mapping[str, jax.Array], target_grams: Mapping[str, jax.Array]
) -> dict[str, jax.Array]:
    """Per layer: MSE between the Grams of `features` and the (broadcast) target Grams."""
    losses = {}
    for layer, target in target_grams.items():
        gram = gram_matrix(features[layer])
        losses[layer] = mse(gram, jnp.broadcast_to(target, gram.shape))
    return losses


def style_loss(
    features: Mapping[str, jax.Array],
    target_grams: Mapping[str, jax.Array],
    layer_weights: Mapping[str, float] | None = None,
) -> jax.Array:
    """Weighted sum over layers of the Gram MSE (weights default to 1)."""
    per_layer = style_layer_losses(features, target_grams)
    weights = layer_weights or {}
    return sum(weights.get(layer, 1.0) * loss for layer, loss in per_layer.items())


def tv_loss(images: jax.Array) -> jax.Array:
    """Anisotropic total variation: mean |vertical| + mean |horizontal| neighbour difference."""
    x = images.astype(jnp.float32)
    return jnp.mean(jnp.abs(x[:, 1:, :, :] - x[:, :-1, :, :])) + jnp.mean(
        jnp.abs(x[:, :, 1:, :] - x[:, :, :-1, :])
    )


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """What the objective measures and how its terms are weighted (hashable: jit-static)."""

    style_layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    content_layer: str = "relu2_2"
    style_weight: float = 1e5
    content_weight: float = 1.0
    tv_weight: float = 0.0
    style_layer_weights: tuple[float, ...] | None = None  # one per style layer; None = all 1
    stability_weight: float = 0.0  # the stability term (`fnst_jax.stability`); 0 = off
    # Multi-style models: the (balanced) style weight of each style, used instead of
    # style_weight; None for a one-style model.
    style_weights: tuple[float, ...] | None = None

    def __post_init__(self):
        for layer in (*self.style_layers, self.content_layer):
            layer_depth(layer)  # raises a clear error for unknown names
        if not self.style_layers:
            raise LossSpecError("loss.style_layers must name at least one VGG layer")
        if self.style_layer_weights is not None and len(self.style_layer_weights) != len(
            self.style_layers
        ):
            raise LossSpecError(
                f"loss.style_layer_weights has {len(self.style_layer_weights)} entries "
                f"but loss.style_layers has {len(self.style_layers)}"
            )

    @property
    def layer_weights(self) -> dict[str, float]:
        weights = self.style_layer_weights or (1.0,) * len(self.style_layers)
        return dict(zip(self.style_layers, weights, strict=True))

    @property
    def vgg_layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.style_layers, self.content_layer)))

    def with_weights(self, **weights: float | Sequence[float] | None) -> LossSpec:
        """A copy with these weights; `style_weights` takes a sequence (or None)."""

        def number(key: str, value: Any) -> Any:
            if key == "style_weights":
                return None if value is None else tuple(float(w) for w in value)
            return float(value)

        return dataclasses.replace(self, **{k: number(k, v) for k, v in weights.items()})


def style_grams(
    vgg: VGG19, style_images: jax.Array, layers: Sequence[str], dtype: DTypeLike = jnp.float32
) -> dict[str, jax.Array]:
    """Target Grams of style image(s) (1, H, W, 3) in [0, 255]: computed once, outside the step."""
    features = vgg(style_images, layers, dtype=dtype)
    return {layer: gram_matrix(features[layer]) for layer in layers}


def content_targets(
    vgg: VGG19, content_images: jax.Array, spec: LossSpec, dtype: DTypeLike = jnp.float32
) -> jax.Array:
    """The content pass: VGG features of the input images, stopping at the content layer."""
    return vgg(content_images, (spec.content_layer,), dtype=dtype)[spec.content_layer]


def perceptual_loss(
    vgg: VGG19,
    stylized: jax.Array,
    content_features: jax.Array,
    target_grams: Mapping[str, jax.Array],
    spec: LossSpec,
    dtype: DTypeLike = jnp.float32,
    style_weight: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The training objective for stylized images (N, H, W, 3) in [0, 255].
    style_weight: replaces `spec.style_weight` (the weight of one style of a multi-style
    model, `LossSpec.style_weights`).

    content_features: `content_targets` of the images that were stylized.
    Returns (total, terms): terms holds the weighted `content`, `style`, `tv` and `total`,
    the unweighted `raw_content`, `raw_style` (layer weights applied), `raw_tv`, and the
    unweighted per-layer `style/<layer>`. All float32.
    """
    features = vgg(stylized, spec.vgg_layers, dtype=dtype)
    raw_content = content_loss(features[spec.content_layer], content_features)
    per_layer = style_layer_losses(features, target_grams)
    layer_weights = spec.layer_weights
    raw_style = sum(layer_weights[layer] * per_layer[layer] for layer in spec.style_layers)
    raw_tv = tv_loss(stylized)
    terms = {
        "content": spec.content_weight * raw_content,
        "style": (spec.style_weight if style_weight is None else style_weight) * raw_style,
        "tv": spec.tv_weight * raw_tv,
        "raw_content": raw_content,
        "raw_style": raw_style,
        "raw_tv": raw_tv,
    }
    terms["total"] = terms["content"] + terms["style"] + terms["tv"]
    terms.update({f"style/{layer}": loss for layer, loss in per_layer.items()})
    return terms["total"], terms
