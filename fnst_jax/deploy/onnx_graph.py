"""The ONNX model of a TransformerNet, written node by node from its parameters.

Why written by hand and not converted from the jitted function: the converted graph of the
slice-based reflect pad and the repeat-based upsampling needs shape constraints and does not
run in onnxruntime as it is.
This graph uses only ONNX's standard operators, the ones other runtimes and converters know:
Pad (mode reflect), Conv, InstanceNormalization, Relu, Resize (nearest), Add, Slice,
Transpose, Cast, Round, Clip, and a few integer ops (Shape, Slice, Sub, Min, Add, Neg, Mod,
Concat) that compute the pads from the input's size.

The model, for any height and width (symbolic `batch`, `height`, `width`):
  * input `image`: uint8 (batch, height, width, 3), RGB, NHWC: a decoded image as is.
  * output `stylized`: uint8 (batch, height, width, 3): rounded to the nearest level and
    clipped to 0..255 (`image_io.to_uint8`), ready to save.
  * output `stylized_float`: float32 (batch, height, width, 3), the network's output on the
    0..255 scale, unrounded and unclamped (for colour transfer or further processing).
  Both come from one network pass; the uint8 one adds a rounding.

Inside, exactly `transformer_net.stylize_padded(model, image, pad)` with the model's training
pad: the image is reflect-padded by min(pad, side - 1), then at the bottom/right up to a
multiple of 4 (`TransformerNet.__call__`), every layer reflect-pads as the JAX layers do,
every instance norm takes its statistics over that network input, and the output is cropped
back to the image. Channels-first inside (ONNX's Conv layout), transposed in and out.

Size limit: onnxruntime's reflect pad needs every pad smaller than the side it reflects
(JAX reflects again), so the network input must be at least 8 px high and wide (the 9x9
convolutions pad by 4): images need sides of at least `smallest_side(pad)` px (3 px with any
training pad, 5 px with none). Every larger size matches the JAX forward up to float
rounding.

Tiling (what `stylize.py` does with images above --max-pixels) needs the network in its box
form (`TransformerNet.forward_with_statistics` with a box and given statistics; see
`stylize.tiling`), which the graph above is not. The file carries it as two model-local
functions (domain `fnst_jax`, names in `fnst_jax.deploy`) that the graph does not call, so
runtimes that only stylize whole images never see them; their parameters are inputs named
after the graph's initializers (`conv1.kernel`, `res0a.norm.scale`, ...), so the weights are
stored once:
  * `tile_forward(tile, box, interior, given_mean_L, given_variance_L for L < 15, weights)`:
    tile uint8 (N, H, W, 3), H and W multiples of 4; box and interior int64 (top, bottom,
    left, right), multiples of 4, shared by the N tiles. Every layer reflects at the box
    edges (a Gather of reflected rows and columns), every norm layer L normalises with the
    given float32 (C,) moments, and its input is summarised over the interior: outputs
    `count_L` (float32 scalar), `mean_L` and `squares_L` (float32 (N, C): the mean and the
    sum of squared deviations from it), and `tile_stylized_float` (float32 (N, H, W, 3)).
  * `norm_moments(tile, box, weights)`: the same layers, every norm measuring its input
    inside the box and normalising with that: outputs `moment_mean_L`, `moment_variance_L`
    (float32 (N, C)), the statistics an untiled run of the network input in the box uses.
`stylize.onnx_functions` runs them (each exact-statistics pass only up to its layer); the
exporter checks a tiled run against the JAX forward (`verify.verify_tiling`).

float16 (`dtype="float16"`): weights and activations in float16, instance-norm statistics and
normalisation in float32 (cast around each norm, as the JAX bfloat16 path keeps them), the
outputs float32/uint8 as above. Whether it keeps the 1/255 bound is for `verify` to say.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper

from fnst_jax.deploy import (
    BOX_INPUT,
    DEFAULT_OPSET,
    FLOAT_OUTPUT_NAME,
    FUNCTION_DOMAIN,
    INPUT_NAME,
    INTERIOR_INPUT,
    MIN_OPSET,
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
from fnst_jax.deploy.onnx_layers import (
    TENSOR_TYPES,
    BoxLayers,
    Graph,
    Layers,
    PlainLayers,
    StyleLayers,
    forward,
)
from fnst_jax.errors import UsageError
from fnst_jax.transformer_net import SIZE_MULTIPLE, TransformerNet

DTYPES = ("float32", "float16")
# The 9x9 convolutions reflect-pad by 4, which onnxruntime allows on sides of 5 or more; the
# network input is a multiple of 4, so at least 8.
SMALLEST_NETWORK_INPUT = 8

IMAGE_SHAPE = ["batch", "height", "width", 3]


def smallest_side(pad: int) -> int:
    """The smallest image height or width the ONNX model of a model with this training pad
    runs: side + 2 * min(pad, side - 1), rounded up to a multiple of 4, must reach 8."""

    def network_side(side: int) -> int:
        padded = side + 2 * min(pad, side - 1)
        return -(-padded // SIZE_MULTIPLE) * SIZE_MULTIPLE

    side = 1
    while network_side(side) < SMALLEST_NETWORK_INPUT:
        side += 1
    return side


def _network_input(graph: Graph, image: str, pad: int) -> tuple[str, str, str]:
    """The uint8 NHWC image -> (its network input, NCHW in the compute dtype; the train pad
    [pad_h, pad_w]; the image size [height, width]), as `stylize_padded` lays it out."""
    x = graph.op("Transpose", [image], perm=[0, 3, 1, 2])
    size = graph.op(
        "Slice", [graph.op("Shape", [x]), graph.ints("start", 2), graph.ints("end", 4)], "size"
    )
    # stylize_padded's min(pad, side - 1): reflection needs a pad below the side.
    train_pad = graph.op(
        "Min", [graph.op("Sub", [size, graph.ints("one", 1, 1)]), graph.ints("pad", pad, pad)]
    )
    zeros = graph.ints("zeros", 0, 0)
    x = graph.op(
        "Pad", [x, graph.op("Concat", [zeros, train_pad, zeros, train_pad], axis=0)], mode="reflect"
    )
    padded = graph.op("Add", [size, graph.op("Add", [train_pad, train_pad])])
    # TransformerNet.__call__: bottom/right up to a multiple of 4 (Mod of a negative int64
    # with fmod=0 takes the divisor's sign, like Python's %).
    rounding = graph.op("Mod", [graph.op("Neg", [padded]), graph.ints("four", 4, 4)], fmod=0)
    x = graph.op(
        "Pad", [x, graph.op("Concat", [zeros, zeros, zeros, rounding], axis=0)], mode="reflect"
    )
    return graph.op("Cast", [x], to=TENSOR_TYPES[graph.dtype]), train_pad, size


# ----------------------------------------------------------------------------- the functions


def _tiling_function(
    model: TransformerNet, dtype: str, opset: int, measure: bool
) -> onnx.FunctionProto:
    """`tile_forward` (measure=False) or `norm_moments` (measure=True); see the module
    docstring."""
    graph = Graph(dtype, function=True)
    x = graph.op("Transpose", [TILE_INPUT], perm=[0, 3, 1, 2])
    x = graph.op("Cast", [x], to=TENSOR_TYPES[dtype])
    interior = None if measure else INTERIOR_INPUT
    layers = BoxLayers(graph, x, BOX_INPUT, interior, measure)
    if measure:
        forward(graph, model, x, layers, last=False)
        inputs = [TILE_INPUT, BOX_INPUT]
        outputs = [name for layer in range(NUM_NORM_LAYERS) for name in moment_names(layer)]
    else:
        y = graph.op("Transpose", [forward(graph, model, x, layers)], perm=[0, 2, 3, 1])
        graph.op("Cast", [y], output=TILE_OUTPUT, to=TensorProto.FLOAT)
        given = [name for layer in range(NUM_NORM_LAYERS) for name in given_names(layer)]
        inputs = [TILE_INPUT, BOX_INPUT, INTERIOR_INPUT, *given]
        outputs = [TILE_OUTPUT]
        outputs += [name for layer in range(NUM_NORM_LAYERS) for name in summary_names(layer)]
    if layers.layer != NUM_NORM_LAYERS:
        raise ValueError(f"{layers.layer} norm layers, expected {NUM_NORM_LAYERS}")
    return helper.make_function(
        FUNCTION_DOMAIN,
        MOMENTS_FUNCTION if measure else TILE_FUNCTION,
        [*inputs, *graph.weights],
        outputs,
        graph.nodes,
        [helper.make_opsetid("", opset)],
    )


# ----------------------------------------------------------------------------- the model


def build_model(
    model: TransformerNet,
    pad: int,
    metadata: Mapping[str, str],
    *,
    opset: int = DEFAULT_OPSET,
    dtype: str = "float32",
    style_input: bool = False,
) -> onnx.ModelProto:
    """The ONNX model of `model` with training pad `pad` (see the module docstring);
    `metadata`: the model's metadata properties (string keys and values). `style_input`
    (multi-style models): a second input `style`, float32 (batch, num_styles), each image's
    weights over the styles (normalised to sum to 1 inside); such a file carries no tiling
    functions."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, not {dtype!r}")
    if style_input != (model.num_styles > 1):
        raise ValueError("a style input is for multi-style models, and they need one")
    pad = max(0, int(pad))
    graph = Graph(dtype)
    x, train_pad, size = _network_input(graph, INPUT_NAME, pad)
    inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, IMAGE_SHAPE)]
    layers: Layers = PlainLayers(graph)
    if style_input:
        inputs.append(
            helper.make_tensor_value_info(
                STYLE_INPUT_NAME, TensorProto.FLOAT, ["batch", model.num_styles]
            )
        )
        total = graph.op("ReduceSum", [STYLE_INPUT_NAME, graph.ints("axis", 1)], keepdims=1)
        layers = StyleLayers(graph, graph.op("Div", [STYLE_INPUT_NAME, total], "style_weights"))
    y = forward(graph, model, x, layers)
    # Crop the train pad and the rounding off: rows pad_h .. pad_h + height.
    end = graph.op("Add", [train_pad, size])
    y = graph.op("Slice", [y, train_pad, end, graph.ints("axes", 2, 3)], "crop")
    y = graph.op("Transpose", [y], perm=[0, 2, 3, 1])
    if dtype != "float32":
        y = graph.op("Cast", [y], to=TensorProto.FLOAT)
    graph.op("Identity", [y], output=FLOAT_OUTPUT_NAME)
    levels = graph.op(
        "Clip",
        [
            graph.op("Round", [FLOAT_OUTPUT_NAME]),  # half to even, as numpy's rint
            graph.constant("low", np.array(0, np.float32)),
            graph.constant("high", np.array(255, np.float32)),
        ],
    )
    graph.op("Cast", [levels], output=OUTPUT_NAME, to=TensorProto.UINT8)

    onnx_graph = helper.make_graph(
        graph.nodes,
        "fnst_jax_transformer_net",
        inputs,
        [
            helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.UINT8, IMAGE_SHAPE),
            helper.make_tensor_value_info(FLOAT_OUTPUT_NAME, TensorProto.FLOAT, IMAGE_SHAPE),
        ],
        initializer=graph.initializers,
        doc_string=_describe(pad, model.num_styles if style_input else None),
    )
    onnx_model = helper.make_model_gen_version(
        onnx_graph,
        producer_name="fnst_jax",
        producer_version=metadata.get("fnst_jax_version", ""),
        opset_imports=[helper.make_opsetid("", opset)],
        functions=[]
        if style_input
        else [
            _tiling_function(model, dtype, opset, measure=False),
            _tiling_function(model, dtype, opset, measure=True),
        ],
    )
    helper.set_model_props(
        onnx_model,
        {**metadata, "pad": str(pad), "dtype": dtype, "min_side": str(smallest_side(pad))},
    )
    return onnx_model


def _describe(pad: int, num_styles: int | None) -> str:
    """The graph's doc string; `num_styles` for a file with a style input."""
    text = (
        "Fast neural style transfer (fnst_jax TransformerNet). Input 'image': uint8 "
        "(batch, height, width, 3) RGB. Outputs 'stylized': uint8, same shape; "
        "'stylized_float': float32 0..255, unrounded. Any height and width of at least "
        f"{smallest_side(pad)} px; the training pad ({pad} px) is applied inside. "
    )
    if num_styles is not None:
        return text + (
            f"Input '{STYLE_INPUT_NAME}': float32 (batch, {num_styles}), each image's weights "
            "over the model's styles (the 'styles' property, in order): one-hot for one "
            "style, a mix otherwise; each row is normalised to sum to 1."
        )
    return text + (
        f"The local functions {TILE_FUNCTION} and {MOMENTS_FUNCTION} (domain "
        f"{FUNCTION_DOMAIN}) are for tiling large images; the graph does not call them."
    )


def serialize(
    model: TransformerNet,
    pad: int,
    metadata: Mapping[str, str],
    *,
    opset: int = DEFAULT_OPSET,
    dtype: str = "float32",
    style_input: bool = False,
) -> bytes:
    """`build_model`, checked by onnx's checker (full shape inference), as file bytes."""
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise UsageError(
            f"--opset must be between {MIN_OPSET} and {newest} (onnx {onnx.__version__})"
        )
    onnx_model = build_model(
        model, pad, metadata, opset=opset, dtype=dtype, style_input=style_input
    )
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model.SerializeToString()
