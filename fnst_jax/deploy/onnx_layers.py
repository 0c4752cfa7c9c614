"""The TransformerNet's layers written as ONNX nodes, for `onnx_graph` to assemble.

`Graph` collects the nodes, constants and parameters of the model's graph or of one of its
functions. `forward(graph, model, x, layers)` writes `TransformerNet.forward` on a network
input, layer by layer; `layers` says how they pad and normalise:
  * `PlainLayers`: Pad (reflect) and InstanceNormalization over the whole array (the graph);
  * `StyleLayers`: the same, each norm's scale and shift mixed per image by a style input
    (a multi-style model exported with `--style-input`);
  * `BoxLayers`: the box form of the tiling functions (`TransformerNet.forward_with_statistics`
    with a box): reflection at the box edges, norms normalising with given moments and
    summarising their input, or measuring it (see `onnx_graph`'s module docstring).
Convolutions run in the compute dtype; instance norms in float32 (cast around each norm).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fnst_jax.deploy import given_names, moment_names, summary_names
from fnst_jax.transformer_net import (
    INSTANCE_NORM_EPSILON,
    ConvNormRelu,
    InstanceNorm,
    ReflectConv,
    TransformerNet,
    UpsampleConvNormRelu,
)

TENSOR_TYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}
NUMPY_TYPES = {"float32": np.float32, "float16": np.float16}


class Graph:
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
                array = np.asarray(value, dtype or NUMPY_TYPES[self.dtype])
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


class PlainLayers:
    """How the graph's layers pad and normalise: Pad (reflect) and InstanceNormalization,
    over the whole array (the network input)."""

    def __init__(self, graph: Graph):
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


class StyleLayers(PlainLayers):
    """The graph's layers of a multi-style model with a style input: each norm normalises
    without an affine, then applies the scale and shift mixed per image from its rows by
    the style weights (`InstanceNorm.affine`): (batch, N) @ (N, C)."""

    def __init__(self, graph: Graph, weights: str):
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


class BoxLayers:
    """How the functions' layers pad and normalise: `TransformerNet.forward` with a box.

    Every layer reflects at the box edges (scaled to its resolution): a Gather of rows, then
    of columns, whose indices fold each position into the box as `transformer_net.
    reflect_indices` does. Norm layers either normalise with given moments and summarise
    their input over the interior (`measure=False`: tile_forward), or measure their input in
    the box and normalise with that (`measure=True`: norm_moments)."""

    def __init__(self, graph: Graph, x: str, box: str, interior: str | None, measure: bool):
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


Layers = PlainLayers | StyleLayers | BoxLayers


def _reflect_conv(
    graph: Graph, layers: Layers, conv: ReflectConv, x: str, hint: str, scale: int
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
    graph: Graph, layers: Layers, block: ConvNormRelu, x: str, hint: str, scale: int
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
        y = graph.op("Cast", [y], to=TENSOR_TYPES[graph.dtype])
    return graph.op("Relu", [y]) if block.relu else y


def forward(
    graph: Graph, model: TransformerNet, x: str, layers: Layers, *, last: bool = True
) -> str:
    """`TransformerNet.forward` on a network input (sides multiples of 4), NCHW, written
    into `graph`; without the output convolution when not `last`. Returns the output's name."""
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
