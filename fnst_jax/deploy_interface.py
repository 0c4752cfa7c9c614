"""The interface of a deployed file: the names an exported ONNX or StableHLO model is run by.

Both exports (`fnst_jax.deploy`) share one interface: input uint8 (batch, height, width, 3)
RGB (`INPUT_NAME`); outputs the stylized uint8 images (`OUTPUT_NAME`) and the unrounded
float32 ones on the 0..255 scale (`FLOAT_OUTPUT_NAME`), same shape; with `--style-input`, a
second input of style weights (`STYLE_INPUT_NAME`). An ONNX file also carries the model-local
functions tiling calls, named here with their inputs and outputs.

The exporter writes files to these names and the ONNX engine (`stylize.onnx_engine`) runs
them by the same names. Imports nothing, so the engine reads them without JAX.
"""

INPUT_NAME = "image"
OUTPUT_NAME = "stylized"
FLOAT_OUTPUT_NAME = "stylized_float"
# The second input of a multi-style model exported with `--style-input`: float32
# (batch, num_styles), each image's weights over the styles (one-hot for one style, a mix
# otherwise; the file normalises each row to sum to 1).
STYLE_INPUT_NAME = "style"

# The model-local functions of an ONNX file (deploy.onnx_graph's module docstring), which only
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
