"""Deployment exports: a trained model as an ONNX model or a serialized JAX program.

    python -m fnst_jax.export --model runs/mosaic --format onnx --output mosaic.onnx
    python -m fnst_jax.export --model runs/mosaic --format stablehlo --output mosaic.jaxexport

Where things happen:
  * `onnx_graph.py`: the ONNX graph, written node by node from the TransformerNet's
    parameters with standard operators (Pad reflect, Conv, InstanceNormalization, ...).
  * `stablehlo.py`: the `jax.export` program (symbolic batch, height and width), serialized.
  * `verify.py`: the check every written file passes: loaded back, run at a few sizes and
    compared with `transformer_net.stylize_padded` (at most 1/255 apart after rounding).
  * `cli.py`: the flags and `main(argv)`; the file is renamed into place only once verified.
  * `onnx_runtime.py`: `OnnxStylizer`, the engine `stylize.py --model x.onnx` runs
    (onnxruntime; imports no JAX), tiling included; `onnx_functions.py`: the tiling functions
    an ONNX file carries, as onnxruntime sessions.

Both exports share one interface (the names below): input uint8 (batch, height, width, 3)
RGB; outputs the stylized uint8 images and the unrounded float32 ones (0..255 scale), same
shape; the model's training pad applied inside. A multi-style model computes one style or
mix chosen at export (`--style`, `--style-mix`), or, with `--style-input`, every style: a
second input `style` carries each image's weights over the styles. This module imports
nothing heavy, so the ONNX runtime path stays free of JAX.
"""

INPUT_NAME = "image"
OUTPUT_NAME = "stylized"
FLOAT_OUTPUT_NAME = "stylized_float"
# The second input of a multi-style model exported with `--style-input`: float32
# (batch, num_styles), each image's weights over the styles (one-hot for one style, a mix
# otherwise; the file normalises each row to sum to 1).
STYLE_INPUT_NAME = "style"

# The model-local functions of an ONNX file (onnx_graph's module docstring), which only
# tiling calls: their domain and names, and the names of their inputs and outputs.
FUNCTION_DOMAIN = "fnst_jax"
TILE_FUNCTION = "tile_forward"
MOMENTS_FUNCTION = "norm_moments"
TILE_INPUT = "tile"
BOX_INPUT = "box"
INTERIOR_INPUT = "interior"
TILE_OUTPUT = "tile_stylized_float"
# Instance-norm layers of a TransformerNet, in call order: 3 + 2 x 5 residual + 2.
NUM_NORM_LAYERS = 15


def given_names(layer: int) -> tuple[str, str]:
    """tile_forward's inputs: the (mean, variance) norm layer `layer` normalises with."""
    return f"given_mean_{layer}", f"given_variance_{layer}"


def summary_names(layer: int) -> tuple[str, str, str]:
    """tile_forward's outputs: (count, mean, squared deviations) of norm layer `layer`'s
    input over the interior."""
    return f"count_{layer}", f"mean_{layer}", f"squares_{layer}"


def moment_names(layer: int) -> tuple[str, str]:
    """norm_moments' outputs: the (mean, variance) norm layer `layer` measured in the box."""
    return f"moment_mean_{layer}", f"moment_variance_{layer}"


DEFAULT_OPSET = 18
# The graph's Resize (empty roi) and Pad/Clip/Slice with tensor inputs need opset 13.
MIN_OPSET = 13
