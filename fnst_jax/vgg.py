"""VGG19 feature extractor: the frozen loss network. Pure jnp, no I/O.

The 16 convolution layers of VGG19 (3x3, zero padding 1, ReLU) with its four 2x2 max-pools
that separate the blocks (the fifth pool is never needed for features). Feature taps are
named after the ReLU that produces them: relu1_1 .. relu5_4. Only the layers up to the
deepest one requested are computed.

Weights come from `fnst_jax.vgg_weights` as a `VGG19`, a pytree that can be passed into
jitted functions; its preprocessing convention travels with it as static data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from fnst_jax.errors import UserError

# (block, number of convs) of VGG19.
_BLOCKS = ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))
CONV_LAYERS: tuple[str, ...] = tuple(f"conv{b}_{i}" for b, n in _BLOCKS for i in range(1, n + 1))
RELU_LAYERS: tuple[str, ...] = tuple(name.replace("conv", "relu") for name in CONV_LAYERS)
CONV_CHANNELS: dict[str, tuple[int, int]] = {}
_cin = 3
for _name in CONV_LAYERS:
    _cout = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}[int(_name[4])]
    CONV_CHANNELS[_name] = (_cin, _cout)
    _cin = _cout

# Preprocessing conventions of the published weights.
TORCH_MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # RGB, on [0, 1]
TORCH_STD = np.array([0.229, 0.224, 0.225], np.float32)
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)  # BGR, on [0, 255]
PREPROCESSING = ("torch", "caffe")


class VGGLayerError(UserError, ValueError):
    """An unknown VGG19 tap or preprocessing name, or a tap deeper than the weights hold."""


def preprocess(images: jax.Array, preprocessing: str) -> jax.Array:
    """RGB images in [0, 255] (NHWC) -> the input the VGG weights were trained on."""
    x = images.astype(jnp.float32)
    if preprocessing == "torch":
        return (x / 255.0 - TORCH_MEAN) / TORCH_STD
    if preprocessing == "caffe":
        return x[..., ::-1] - CAFFE_MEAN_BGR
    raise VGGLayerError(
        f"unknown VGG preprocessing {preprocessing!r}; expected one of {PREPROCESSING}"
    )


def layer_depth(layer: str) -> int:
    """Index of a tap (relu1_1 -> 0 ... relu5_4 -> 15)."""
    if layer not in RELU_LAYERS:
        raise VGGLayerError(
            f"unknown VGG19 layer {layer!r}; expected one of {', '.join(RELU_LAYERS)}"
        )
    return RELU_LAYERS.index(layer)


def _max_pool(x: jax.Array) -> jax.Array:
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class VGG19:
    """Frozen VGG19 convolution weights (HWIO kernels) and their preprocessing convention.

    `params` maps conv names (conv1_1, ...) to {"kernel": (3, 3, in, out), "bias": (out,)};
    it may hold only the first k layers (a truncated weights file), in which case only taps
    up to relu of the k-th conv can be requested.
    """

    params: Mapping[str, Mapping[str, jax.Array]]
    preprocessing: str = dataclasses.field(metadata=dict(static=True), default="torch")
    source: str = dataclasses.field(metadata=dict(static=True), default="")

    @property
    def num_layers(self) -> int:
        return len(self.params)

    @property
    def available_layers(self) -> tuple[str, ...]:
        return RELU_LAYERS[: self.num_layers]

    def check_layers(self, layers: Iterable[str]) -> None:
        for layer in layers:
            if layer_depth(layer) >= self.num_layers:
                raise VGGLayerError(
                    f"VGG layer {layer!r} is deeper than the weights provide "
                    f"({self.source or 'these weights'} hold {self.num_layers} conv layers, "
                    f"up to {self.available_layers[-1]}); choose layers among "
                    f"{', '.join(self.available_layers)} or supply full VGG19 weights"
                )

    def __call__(
        self, images: jax.Array, layers: Iterable[str], dtype: DTypeLike = jnp.float32
    ) -> dict[str, jax.Array]:
        """Features at `layers` of RGB [0, 255] NHWC images; computes only as deep as needed.

        Convolutions run in `dtype`; features are returned in `dtype`. The weights are
        constants of the loss: no gradient flows into them.
        """
        layers = tuple(layers)
        self.check_layers(layers)
        deepest = max(layer_depth(layer) for layer in layers)
        x = preprocess(images, self.preprocessing).astype(dtype)
        features = {}
        for index, conv in enumerate(CONV_LAYERS[: deepest + 1]):
            if index and conv.endswith("_1"):
                x = _max_pool(x)
            weights = jax.lax.stop_gradient(self.params[conv])
            x = jax.lax.conv_general_dilated(
                x,
                weights["kernel"].astype(dtype),
                window_strides=(1, 1),
                padding="SAME",
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
            x = jax.nn.relu(x + weights["bias"].astype(dtype))
            relu = RELU_LAYERS[index]
            if relu in layers:
                features[relu] = x
        return features
