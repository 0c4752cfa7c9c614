"""Deployment exports: a trained model as an ONNX model or a serialized JAX program.

    python -m fnst_jax.export --model runs/mosaic --format onnx --output mosaic.onnx
    python -m fnst_jax.export --model runs/mosaic --format stablehlo --output mosaic.jaxexport

Where things happen:
  * `onnx_graph.py`: the ONNX graph, written node by node from the TransformerNet's
    parameters with standard operators (Pad reflect, Conv, InstanceNormalization, ...);
    `onnx_layers.py`: its layers as nodes.
  * `stablehlo.py`: the `jax.export` program (symbolic batch, height and width), serialized.
  * `verify.py`: the check every written file passes: loaded back, run at a few sizes and
    compared with `transformer_net.stylize_padded` (at most 1/255 apart after rounding).
  * `cli.py`: the flags and `main(argv)`; the file is renamed into place only once verified.
An ONNX file is run by `stylize.onnx_engine.OnnxStylizer` (onnxruntime, no JAX, tiling
included through `stylize.onnx_functions`), which `verify` checks it with.

Both exports share one interface (`fnst_jax.deploy_interface`, its names handed on here):
input uint8 (batch, height, width, 3) RGB; outputs the stylized uint8 images and the
unrounded float32 ones (0..255 scale), same shape; the model's training pad applied inside.
A multi-style model computes one style or mix chosen at export (`--style`, `--style-mix`),
or, with `--style-input`, every style: a second input `style` carries each image's weights
over the styles. This module imports nothing heavy.
"""

from fnst_jax.deploy_interface import (
    BOX_INPUT,
    FLOAT_OUTPUT_NAME,
    FUNCTION_DOMAIN,
    INPUT_NAME,
    INTERIOR_INPUT,
    MOMENTS_FUNCTION,
    NUM_NORM_LAYERS,
    OUTPUT_NAME,
    STYLE_INPUT_NAME,
    TILE_FUNCTION,
    TILE_INPUT,
    TILE_OUTPUT,
    given_names,
    moment_names,
    summary_names,
)

__all__ = [
    "BOX_INPUT",
    "DEFAULT_OPSET",
    "FLOAT_OUTPUT_NAME",
    "FUNCTION_DOMAIN",
    "INPUT_NAME",
    "INTERIOR_INPUT",
    "MIN_OPSET",
    "MOMENTS_FUNCTION",
    "NUM_NORM_LAYERS",
    "OUTPUT_NAME",
    "STYLE_INPUT_NAME",
    "TILE_FUNCTION",
    "TILE_INPUT",
    "TILE_OUTPUT",
    "given_names",
    "moment_names",
    "summary_names",
]

DEFAULT_OPSET = 18
# The graph's Resize (empty roi) and Pad/Clip/Slice with tensor inputs need opset 13.
MIN_OPSET = 13
