"""The serialized JAX program of a TransformerNet (`jax.export`, StableHLO inside).

The file is `jax.export.export(...).serialize()`: load it with `jax.export.deserialize` and
call it, with nothing of fnst_jax installed (only jax and numpy):

    exported = jax.export.deserialize(open("mosaic.jaxexport", "rb").read())
    outputs = exported.call(images)   # uint8 (N, H, W, 3), any N, H, W >= 1
    outputs["stylized"]               # uint8 (N, H, W, 3): rounded and clipped
    outputs["stylized_float"]         # float32 (N, H, W, 3), 0..255, unrounded
    outputs = exported.call(images, style)   # a multi-style model exported with
                                             # --style-input: float32 (N, num_styles)

The same contract as the ONNX model (`onnx_graph`), with batch, height and width symbolic
and no constraint on them: any size works, 1x1 included. The parameters are constants of
the program. Lowered for CPU, CUDA and TPU (`PLATFORMS`; `exported.platforms` lists them;
only the CPU program has been run: no accelerator was available); the CPU program keeps the
CPU convolution choices of `transformer_net.ReflectConv`.

What it computes is `transformer_net.stylize_padded(model, images, pad)`, through the box
form of `TransformerNet.forward` (the stylize engine's path): `stylize_padded` itself cannot
be exported with a symbolic size, because `jnp.pad` needs to know its pad widths, and the
rounding to a multiple of 4 depends on the size. So the image's network input (reflection by
min(pad, side - 1), then up to a multiple of 4, both as numpy/jnp reflect: `_layout`) is
gathered into an array whose symbolic size is that multiple of 4, and `forward` runs with a
box covering all of it: its gather-based reflections and box statistics need no static
size. Equal to `stylize_padded` up to float rounding; `verify` checks every file.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import export

from fnst_jax.deploy import FLOAT_OUTPUT_NAME, OUTPUT_NAME
from fnst_jax.transformer_net import SIZE_MULTIPLE, TransformerNet

PLATFORMS = ("cpu", "cuda", "tpu")


def _fold(position: jax.Array, size: jax.Array) -> jax.Array:
    """Positions reflected into [0, size) as often as needed (numpy's "reflect"; a side of
    one repeats it)."""
    period = jnp.maximum(2 * (size - 1), 1)
    folded = position % period
    folded = jnp.where(folded >= size, period - folded, folded)
    return jnp.where(size > 1, folded, 0)


def _layout(side: int, pad: int) -> tuple[jax.Array, int, int]:
    """Along one axis of `side` px (symbolic): (the source row of every row of the network
    input, its length, the train pad). The network input is the image reflect-padded by
    min(pad, side - 1), then that reflect-padded at the end up to a multiple of 4."""
    train_pad = jax.core.min_dim(pad, side - 1)
    padded = side + 2 * train_pad
    length = (padded + SIZE_MULTIPLE - 1) // SIZE_MULTIPLE * SIZE_MULTIPLE

    def value(dim: int) -> jax.Array:
        return jnp.asarray(dim, jnp.int32)

    in_padded = _fold(jnp.arange(length, dtype=jnp.int32), value(padded))
    return _fold(in_padded - value(train_pad), value(side)), length, train_pad


def stylize_function(model: TransformerNet, pad: int) -> Callable[..., dict[str, jax.Array]]:
    """uint8 (N, H, W, 3) [, style weights float32 (N, num_styles)] -> {"stylized": uint8,
    "stylized_float": float32}, both (N, H, W, 3): `stylize_padded(model, images, pad,
    style)` in a form `jax.export` takes with symbolic N, H, W (see the module docstring).
    The style weights (a multi-style model's second input) are normalised per image to sum
    to 1."""

    def stylize(images: jax.Array, style: jax.Array | None = None) -> dict[str, jax.Array]:
        n, height, width = images.shape[:3]
        rows, rows_length, pad_h = _layout(height, pad)
        cols, cols_length, pad_w = _layout(width, pad)
        x = jnp.take(jnp.take(images, rows, axis=1), cols, axis=2).astype(jnp.float32)
        box = jnp.broadcast_to(jnp.array([0, rows_length, 0, cols_length], jnp.int32), (n, 4))
        if style is not None:
            style = style / jnp.sum(style, axis=1, keepdims=True)
        y = model.forward(x, box, style=style)[:, pad_h : pad_h + height, pad_w : pad_w + width]
        levels = jnp.clip(jnp.rint(y), 0, 255).astype(jnp.uint8)  # image_io.to_uint8
        return {OUTPUT_NAME: levels, FLOAT_OUTPUT_NAME: y}

    return jax.jit(stylize)


def export_model(model: TransformerNet, pad: int, style_input: bool = False) -> export.Exported:
    """The exported program, batch, height and width symbolic; `style_input`: it also takes
    the (batch, num_styles) style weights (a multi-style model computes each style)."""
    batch, height, width = export.symbolic_shape("batch, height, width")
    specs = [jax.ShapeDtypeStruct((batch, height, width, 3), jnp.uint8)]
    if style_input:
        specs.append(jax.ShapeDtypeStruct((batch, model.num_styles), jnp.float32))
    function = stylize_function(model, max(0, int(pad)))
    return export.export(function, platforms=PLATFORMS)(*specs)


def serialize(model: TransformerNet, pad: int, style_input: bool = False) -> bytes:
    """What `python -m fnst_jax.export --format stablehlo` writes."""
    return bytes(export_model(model, pad, style_input).serialize())
