"""The ONNX model of a TransformerNet, written node by node from its parameters.

Why written by hand and not converted from the jitted function: jax2onnx 0.17.1 needed shape
constraints for the reflect pad and its graph then failed in onnxruntime 1.32 (Concat/Expand
shape errors from the slice-based reflect pad and the repeat-based upsampling; issue 15).
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
form (`TransformerNet.forward` with a box, normalised with given statistics; see
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
`onnx_functions` runs them (each exact-statistics pass only up to its layer); the exporter
checks a tiled run against the JAX forward (`verify.verify_tiling`).

float16 (`dtype="float16"`): weights and activations in float16, instance-norm statistics and
normalisation in float32 (cast around each norm, as the JAX bfloat16 path keeps them), the
outputs float32/uint8 as above. Whether it keeps the 1/255 bound is for `verify` to say.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

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
from fnst_jax.errors import UsageError
from fnst_jax.transformer_net import (
    INSTANCE_NORM_EPSILON,
    SIZE_MULTIPLE,
    ConvNormRelu,
    InstanceNorm,
    ReflectConv,
    TransformerNet,
    UpsampleConvNormRelu,
)

DTYPES = ("float32", "float16")
# The 9x9 convolutions reflect-pad by 4, which onnxruntime allows on sides of 5 or more; the
# network input is a multiple of 4, so at least 8.
SMALLEST_NETWORK_INPUT = 8

IMAGE_SHAPE = ["batch", "height", "width", 3]
_TENSOR_TYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}
_NUMPY_TYPES = {"float32": np.float32, "float16": np.float16}


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


class _Graph:
    """Nodes, constants and parameters of the graph or of one function, with generated value
    names. In a function (`function=True`) constants are Constant nodes and parameters are
    inputs (`weights`, by name); in the graph both are initializers."""

    def __init__(self, dtype: str, *, function: bool = False):
        self.dtype = dtype
        self.function = function
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.weights: list[str] = []
        self._constants: dict[tuple[str, tuple[int, ...], bytes], str] = {}
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def constant(self, hint: str, value: np.ndarray) -> str:
        """A constant; equal constants share one name."""
        value = np.asarray(value)
        key = (value.dtype.str, value.shape, value.tobytes())
        if key in self._constants:
            return self._constants[key]
        name = self._constants[key] = self.name(hint)
        tensor = numpy_helper.from_array(value, name)
        if self.function:
            self.nodes.append(helper.make_node("Constant", [], [name], value=tensor))
        else:
            self.initializers.append(tensor)
        return name

    def weight(self, name: str, value: np.ndarray, dtype: type | None = None) -> str:
        """A parameter under its stable name (`conv1.kernel`), in `dtype` (default: the
        compute dtype)."""
        if name not in self.weights:
            self.weights.append(name)
            if not self.function:
                array = np.asarray(value, dtype or _NUMPY_TYPES[self.dtype])
                self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def ints(self, hint: str, *values: int) -> str:
        return self.constant(hint, np.array(values, np.int64))

    def scalar(self, hint: str, value: int) -> str:
        """A 0-d int64 constant."""
        return self.constant(hint, np.array(value, np.int64))

    def op(
        self,
        op_type: str,
        inputs: list[str],
        hint: str = "",
        *,
        output: str | None = None,
        **attributes: object,
    ) -> str:
        """One node with one output (named `output`, else generated); returns its name."""
        output = output or self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [output], **attributes))
        return output

    def dim(self, x: str, axis: int) -> str:
        """The 0-d int64 size of `x` along `axis`."""
        return self.op("Gather", [self.op("Shape", [x]), self.scalar("axis", axis)], "dim")


# ----------------------------------------------------------------------------- the layers


class _PlainLayers:
    """How the graph's layers pad and normalise: Pad (reflect) and InstanceNormalization,
    over the whole array (the network input)."""

    def __init__(self, graph: _Graph):
        self.graph = graph

    def reflect(self, x: str, p: int, scale: int) -> str:
        del scale  # the whole array reflects at its edges at every resolution
        pads = self.graph.ints("pads", 0, 0, p, p, 0, 0, p, p)
        return self.graph.op("Pad", [x, pads], mode="reflect")

    def normalize(self, y: str, norm: InstanceNorm, hint: str, scale: int) -> str:
        del scale
        g = self.graph
        return g.op(
            "InstanceNormalization",
            [
                y,
                g.weight(f"{hint}.norm.scale", norm.scale[...], np.float32),
                g.weight(f"{hint}.norm.shift", norm.bias[...], np.float32),
            ],
            f"{hint}_norm",
            epsilon=INSTANCE_NORM_EPSILON,
        )


class _StyleLayers(_PlainLayers):
    """The graph's layers of a multi-style model with a style input: each norm normalises
    without an affine, then applies the scale and shift mixed per image from its rows by
    the style weights (`InstanceNorm.affine`): (batch, N) @ (N, C)."""

    def __init__(self, graph: _Graph, weights: str):
        super().__init__(graph)
        self.weights = weights  # (batch, N) float32, rows summing to 1

    def normalize(self, y: str, norm: InstanceNorm, hint: str, scale: int) -> str:
        del scale
        g = self.graph
        channels = norm.scale.shape[-1]
        y = g.op(
            "InstanceNormalization",
            [
                y,
                g.constant("ones", np.ones(channels, np.float32)),
                g.constant("zeros", np.zeros(channels, np.float32)),
            ],
            epsilon=INSTANCE_NORM_EPSILON,
        )
        axes = g.ints("axes", 2, 3)

        def mixed(name: str, rows: np.ndarray) -> str:  # (batch, C, 1, 1)
            matrix = g.weight(name, rows, np.float32)
            return g.op("Unsqueeze", [g.op("MatMul", [self.weights, matrix]), axes])

        y = g.op("Mul", [y, mixed(f"{hint}.norm.scale", norm.scale[...])])
        return g.op("Add", [y, mixed(f"{hint}.norm.shift", norm.bias[...])], f"{hint}_norm")


class _BoxLayers:
    """How the functions' layers pad and normalise: `TransformerNet.forward` with a box.

    Every layer reflects at the box edges (scaled to its resolution): a Gather of rows, then
    of columns, whose indices fold each position into the box as `transformer_net.
    reflect_indices` does. Norm layers either normalise with given moments and summarise
    their input over the interior (`measure=False`: tile_forward), or measure their input in
    the box and normalise with that (`measure=True`: norm_moments)."""

    def __init__(self, graph: _Graph, x: str, box: str, interior: str | None, measure: bool):
        self.graph = graph
        self.box = box
        self.interior = interior
        self.measure = measure
        self.layer = 0
        self.sides = (graph.dim(x, 2), graph.dim(x, 3))
        self._indices: dict[tuple[int, int, int], tuple[str, str, str, str]] = {}
        self._boxes: dict[tuple[str, int], str] = {}

    def _scaled(self, box: str, scale: int) -> str:
        """A (4,) box at 1/scale resolution (boxes are multiples of 4: exact)."""
        if scale == 1:
            return box
        if (box, scale) not in self._boxes:
            self._boxes[box, scale] = self.graph.op("Div", [box, self.graph.ints("s", scale)])
        return self._boxes[box, scale]

    def _reflected(self, axis: int, p: int, scale: int) -> tuple[str, str, str, str]:
        """Rows (axis 0) or columns (1) of an array reflect-padded by p at 1/scale
        resolution, where position i holds i - p folded into [low, high) of the box, in three
        parts: (the source positions before the box, [low], [high], those after it)."""
        key = (axis, p, scale)
        if key in self._indices:
            return self._indices[key]
        g = self.graph
        side = g.op("Div", [self.sides[axis], g.scalar("s", scale)])
        box = self._scaled(self.box, scale)
        low = g.op("Gather", [box, g.scalar("low", 2 * axis)])
        high = g.op("Gather", [box, g.scalar("high", 2 * axis + 1)])
        count = g.op("Add", [side, g.scalar("p2", 2 * p)])
        positions = g.op("Range", [g.scalar("zero", 0), count, g.scalar("one", 1)])
        position = g.op("Sub", [positions, g.op("Add", [low, g.scalar("p", p)])])
        size = g.op("Sub", [high, low])
        period = g.op(
            "Max",
            [
                g.op("Mul", [g.op("Sub", [size, g.scalar("one", 1)]), g.scalar("two", 2)]),
                g.scalar("one", 1),
            ],
        )
        folded = g.op("Mod", [position, period], fmod=0)  # the divisor's sign: >= 0
        folded = g.op(
            "Where",
            [g.op("GreaterOrEqual", [folded, size]), g.op("Sub", [period, folded]), folded],
        )
        folded = g.op(
            "Where", [g.op("Greater", [size, g.scalar("one", 1)]), folded, g.scalar("zero", 0)]
        )
        indices = g.op("Add", [low, folded], f"reflect{axis}_{p}_{scale}")
        first = g.ints("zero", 0)
        last = g.ints("end", np.iinfo(np.int64).max)
        zero = g.ints("axis", 0)
        starts = g.op("Unsqueeze", [low, zero])
        ends = g.op("Unsqueeze", [high, zero])
        before = g.op("Add", [starts, g.ints("p", p)])
        after = g.op("Add", [ends, g.ints("p", p)])
        parts = (
            g.op("Slice", [indices, first, before], "before"),
            starts,
            ends,
            g.op("Slice", [indices, after, last], "after"),
        )
        self._indices[key] = parts
        return parts

    def reflect(self, x: str, p: int, scale: int) -> str:
        """x reflect-padded by p at the box edges: the box rows (columns) as they are, the
        positions around them gathered (a full Gather of the last axis is slow in
        onnxruntime; a slice and two small gathers are not)."""
        g = self.graph
        for axis in (2, 3):
            before, low, high, after = self._reflected(axis - 2, p, scale)
            inside = g.op("Slice", [x, low, high, g.ints("axis", axis)], "inside")
            x = g.op(
                "Concat",
                [
                    g.op("Gather", [x, before], axis=axis),
                    inside,
                    g.op("Gather", [x, after], axis=axis),
                ],
                axis=axis,
            )
        return x

    def _summary(self, y: str, region_box: str, scale: int) -> tuple[str, str, str, str]:
        """(count (scalar), mean (N, C, 1, 1), squared deviations (N, C), mean (N, C)) of y
        over `region_box` at 1/scale resolution, float32."""
        g = self.graph
        box = self._scaled(region_box, scale)
        starts = g.op("Gather", [box, g.ints("starts", 0, 2)])
        ends = g.op("Gather", [box, g.ints("ends", 1, 3)])
        region = g.op("Slice", [y, starts, ends, g.ints("axes", 2, 3)], "region")
        sides = g.op("Sub", [ends, starts])
        count = g.op(
            "Cast",
            [
                g.op(
                    "Mul",
                    [
                        g.op("Gather", [sides, g.scalar("rows", 0)]),
                        g.op("Gather", [sides, g.scalar("cols", 1)]),
                    ],
                )
            ],
            "count",
            to=TensorProto.FLOAT,
        )
        axes = g.ints("axes", 2, 3)
        mean = g.op("Div", [g.op("ReduceSum", [region, axes], keepdims=1), count], "mean")
        centered = g.op("Sub", [region, mean])
        squares = g.op("ReduceSum", [g.op("Mul", [centered, centered]), axes], keepdims=0)
        return count, mean, squares, g.op("Flatten", [mean], axis=1)

    def normalize(self, y: str, norm: InstanceNorm, hint: str, scale: int) -> str:
        g = self.graph
        layer = self.layer
        self.layer += 1
        if self.measure:
            count, mean, squares, _ = self._summary(y, self.box, scale)
            variance = g.op("Div", [squares, count])
            mean_name, variance_name = moment_names(layer)
            g.op("Flatten", [mean], output=mean_name, axis=1)
            g.op("Identity", [variance], output=variance_name)
            variance = g.op("Unsqueeze", [variance, g.ints("axes", 2, 3)])
        else:
            count, _, squares, flat_mean = self._summary(y, self.interior, scale)
            count_name, mean_name, squares_name = summary_names(layer)
            g.op("Identity", [count], output=count_name)
            g.op("Identity", [flat_mean], output=mean_name)
            g.op("Identity", [squares], output=squares_name)
            shape = g.ints("shape", 1, -1, 1, 1)
            mean, variance = (g.op("Reshape", [name, shape]) for name in given_names(layer))
        # InstanceNorm.normalize: (y - mean) * rsqrt(variance + eps) * scale + shift.
        inverse = g.op(
            "Reciprocal",
            [g.op("Sqrt", [g.op("Add", [variance, g.constant("eps", _epsilon())])])],
        )
        y = g.op("Mul", [g.op("Sub", [y, mean]), inverse])
        shape = g.ints("shape", 1, -1, 1, 1)
        scale_weight = g.weight(f"{hint}.norm.scale", norm.scale[...], np.float32)
        shift_weight = g.weight(f"{hint}.norm.shift", norm.bias[...], np.float32)
        y = g.op("Mul", [y, g.op("Reshape", [scale_weight, shape])])
        return g.op("Add", [y, g.op("Reshape", [shift_weight, shape])], f"{hint}_norm")


def _epsilon() -> np.ndarray:
    return np.array(INSTANCE_NORM_EPSILON, np.float32)


Layers = _PlainLayers | _StyleLayers | _BoxLayers


def _reflect_conv(
    graph: _Graph, layers: Layers, conv: ReflectConv, x: str, hint: str, scale: int
) -> str:
    """ReflectConv at 1/scale resolution: reflection by k // 2, then the convolution (VALID,
    stride)."""
    p = conv.kernel_size // 2
    # flax keeps kernels as (kh, kw, in, out); ONNX wants (out, in, kh, kw).
    kernel = np.transpose(np.asarray(conv.conv.kernel[...]), (3, 2, 0, 1))
    return graph.op(
        "Conv",
        [
            layers.reflect(x, p, scale),
            graph.weight(f"{hint}.kernel", kernel),
            graph.weight(f"{hint}.bias", conv.conv.bias[...]),
        ],
        hint,
        kernel_shape=[conv.kernel_size] * 2,
        strides=[conv.stride] * 2,
    )


def _conv_norm_relu(
    graph: _Graph, layers: Layers, block: ConvNormRelu, x: str, hint: str, scale: int
) -> str:
    """A block whose input x is at 1/scale resolution."""
    if isinstance(block, UpsampleConvNormRelu):
        # Nearest x2 (`transformer_net.upsample_nearest`): output pixel i takes input i // 2.
        x = graph.op(
            "Resize",
            [x, "", graph.constant("scales", np.array([1, 1, 2, 2], np.float32))],
            "upsample",
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )
        scale //= 2
    y = _reflect_conv(graph, layers, block.conv, x, hint, scale)
    if graph.dtype != "float32":
        y = graph.op("Cast", [y], to=TensorProto.FLOAT)
    y = layers.normalize(y, block.norm, hint, scale * block.conv.stride)
    if graph.dtype != "float32":
        y = graph.op("Cast", [y], to=_TENSOR_TYPES[graph.dtype])
    return graph.op("Relu", [y]) if block.relu else y


def _layers(
    graph: _Graph, model: TransformerNet, x: str, layers: Layers, *, last: bool = True
) -> str:
    """`TransformerNet.forward` on a network input (sides multiples of 4), NCHW; without
    the output convolution when not `last`."""
    x = _conv_norm_relu(graph, layers, model.conv1, x, "conv1", 1)
    x = _conv_norm_relu(graph, layers, model.conv2, x, "conv2", 1)
    x = _conv_norm_relu(graph, layers, model.conv3, x, "conv3", 2)
    for index, block in enumerate(model.res):
        inner = _conv_norm_relu(graph, layers, block.block1, x, f"res{index}a", 4)
        outer = _conv_norm_relu(graph, layers, block.block2, inner, f"res{index}b", 4)
        x = graph.op("Add", [x, outer])
    x = _conv_norm_relu(graph, layers, model.up1, x, "up1", 4)
    x = _conv_norm_relu(graph, layers, model.up2, x, "up2", 2)
    return _reflect_conv(graph, layers, model.out, x, "out", 1) if last else x


def _network_input(graph: _Graph, image: str, pad: int) -> tuple[str, str, str]:
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
    return graph.op("Cast", [x], to=_TENSOR_TYPES[graph.dtype]), train_pad, size


# ----------------------------------------------------------------------------- the functions


def _tiling_function(
    model: TransformerNet, dtype: str, opset: int, measure: bool
) -> onnx.FunctionProto:
    """`tile_forward` (measure=False) or `norm_moments` (measure=True); see the module
    docstring."""
    graph = _Graph(dtype, function=True)
    x = graph.op("Transpose", [TILE_INPUT], perm=[0, 3, 1, 2])
    x = graph.op("Cast", [x], to=_TENSOR_TYPES[dtype])
    interior = None if measure else INTERIOR_INPUT
    layers = _BoxLayers(graph, x, BOX_INPUT, interior, measure)
    if measure:
        _layers(graph, model, x, layers, last=False)
        inputs = [TILE_INPUT, BOX_INPUT]
        outputs = [name for layer in range(NUM_NORM_LAYERS) for name in moment_names(layer)]
    else:
        y = graph.op("Transpose", [_layers(graph, model, x, layers)], perm=[0, 2, 3, 1])
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
    graph = _Graph(dtype)
    x, train_pad, size = _network_input(graph, INPUT_NAME, pad)
    inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, IMAGE_SHAPE)]
    layers: Layers = _PlainLayers(graph)
    if style_input:
        inputs.append(
            helper.make_tensor_value_info(
                STYLE_INPUT_NAME, TensorProto.FLOAT, ["batch", model.num_styles]
            )
        )
        total = graph.op("ReduceSum", [STYLE_INPUT_NAME, graph.ints("axis", 1)], keepdims=1)
        layers = _StyleLayers(graph, graph.op("Div", [STYLE_INPUT_NAME, total], "style_weights"))
    y = _layers(graph, model, x, layers)
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
