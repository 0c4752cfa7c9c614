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
    DEFAULT_OPSET,
    FLOAT_OUTPUT_NAME,
    INPUT_NAME,
    MIN_OPSET,
    OUTPUT_NAME,
)
from fnst_jax.errors import UsageError
from fnst_jax.transformer_net import (
    INSTANCE_NORM_EPSILON,
    SIZE_MULTIPLE,
    ConvNormRelu,
    ReflectConv,
    TransformerNet,
    UpsampleConvNormRelu,
)

DTYPES = ("float32", "float16")
# The 9x9 convolutions reflect-pad by 4, which onnxruntime allows on sides of 5 or more; the
# network input is a multiple of 4, so at least 8.
SMALLEST_NETWORK_INPUT = 8

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
    """Nodes and initializers of one graph, with generated value names."""

    def __init__(self, dtype: str):
        self.dtype = dtype
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def constant(self, hint: str, value: np.ndarray) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, hint: str, value: np.ndarray) -> str:
        """A parameter in the compute dtype."""
        return self.constant(hint, np.asarray(value, _NUMPY_TYPES[self.dtype]))

    def ints(self, hint: str, *values: int) -> str:
        return self.constant(hint, np.array(values, np.int64))

    def op(self, op_type: str, inputs: list[str], hint: str = "", **attributes: object) -> str:
        """One node with one output; returns the output's name."""
        output = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [output], **attributes))
        return output


def _reflect_conv(graph: _Graph, layer: ReflectConv, x: str, hint: str) -> str:
    """ReflectConv: reflection padding by k // 2, then the convolution (VALID, stride)."""
    p = layer.kernel_size // 2
    # flax keeps kernels as (kh, kw, in, out); ONNX wants (out, in, kh, kw).
    kernel = np.transpose(np.asarray(layer.conv.kernel[...]), (3, 2, 0, 1))
    padded = graph.op("Pad", [x, graph.ints("pads", 0, 0, p, p, 0, 0, p, p)], mode="reflect")
    return graph.op(
        "Conv",
        [
            padded,
            graph.weight(f"{hint}_kernel", kernel),
            graph.weight(f"{hint}_bias", layer.conv.bias[...]),
        ],
        hint,
        kernel_shape=[layer.kernel_size] * 2,
        strides=[layer.stride] * 2,
    )


def _conv_norm_relu(graph: _Graph, block: ConvNormRelu, x: str, hint: str) -> str:
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
    y = _reflect_conv(graph, block.conv, x, hint)
    if graph.dtype != "float32":
        y = graph.op("Cast", [y], to=TensorProto.FLOAT)
    y = graph.op(
        "InstanceNormalization",
        [
            y,
            graph.constant(f"{hint}_scale", np.asarray(block.norm.scale[...], np.float32)),
            graph.constant(f"{hint}_shift", np.asarray(block.norm.bias[...], np.float32)),
        ],
        f"{hint}_norm",
        epsilon=INSTANCE_NORM_EPSILON,
    )
    if graph.dtype != "float32":
        y = graph.op("Cast", [y], to=_TENSOR_TYPES[graph.dtype])
    return graph.op("Relu", [y]) if block.relu else y


def _layers(graph: _Graph, model: TransformerNet, x: str) -> str:
    """`TransformerNet.forward` on a network input (sides multiples of 4), NCHW."""
    for name in ("conv1", "conv2", "conv3"):
        x = _conv_norm_relu(graph, getattr(model, name), x, name)
    for index, block in enumerate(model.res):
        inner = _conv_norm_relu(graph, block.block1, x, f"res{index}a")
        x = graph.op("Add", [x, _conv_norm_relu(graph, block.block2, inner, f"res{index}b")])
    for name in ("up1", "up2"):
        x = _conv_norm_relu(graph, getattr(model, name), x, name)
    return _reflect_conv(graph, model.out, x, "out")


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


def build_model(
    model: TransformerNet,
    pad: int,
    metadata: Mapping[str, str],
    *,
    opset: int = DEFAULT_OPSET,
    dtype: str = "float32",
) -> onnx.ModelProto:
    """The ONNX model of `model` with training pad `pad` (see the module docstring);
    `metadata`: the model's metadata properties (string keys and values)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, not {dtype!r}")
    pad = max(0, int(pad))
    graph = _Graph(dtype)
    x, train_pad, size = _network_input(graph, INPUT_NAME, pad)
    y = _layers(graph, model, x)
    # Crop the train pad and the rounding off: rows pad_h .. pad_h + height.
    end = graph.op("Add", [train_pad, size])
    y = graph.op("Slice", [y, train_pad, end, graph.ints("axes", 2, 3)], "crop")
    y = graph.op("Transpose", [y], perm=[0, 2, 3, 1])
    if dtype != "float32":
        y = graph.op("Cast", [y], to=TensorProto.FLOAT)
    graph.nodes.append(helper.make_node("Identity", [y], [FLOAT_OUTPUT_NAME]))
    levels = graph.op(
        "Clip",
        [
            graph.op("Round", [FLOAT_OUTPUT_NAME]),  # half to even, as numpy's rint
            graph.constant("low", np.array(0, np.float32)),
            graph.constant("high", np.array(255, np.float32)),
        ],
    )
    graph.nodes.append(helper.make_node("Cast", [levels], [OUTPUT_NAME], to=TensorProto.UINT8))

    shape = ["batch", "height", "width", 3]
    onnx_graph = helper.make_graph(
        graph.nodes,
        "fnst_jax_transformer_net",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, shape)],
        [
            helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.UINT8, shape),
            helper.make_tensor_value_info(FLOAT_OUTPUT_NAME, TensorProto.FLOAT, shape),
        ],
        initializer=graph.initializers,
        doc_string=(
            "Fast neural style transfer (fnst_jax TransformerNet). Input 'image': uint8 "
            "(batch, height, width, 3) RGB. Outputs 'stylized': uint8, same shape; "
            "'stylized_float': float32 0..255, unrounded. Any height and width of at least "
            f"{smallest_side(pad)} px; the training pad ({pad} px) is applied inside."
        ),
    )
    onnx_model = helper.make_model_gen_version(
        onnx_graph,
        producer_name="fnst_jax",
        producer_version=metadata.get("fnst_jax_version", ""),
        opset_imports=[helper.make_opsetid("", opset)],
    )
    helper.set_model_props(
        onnx_model, {**metadata, "dtype": dtype, "min_side": str(smallest_side(pad))}
    )
    return onnx_model


def serialize(
    model: TransformerNet,
    pad: int,
    metadata: Mapping[str, str],
    *,
    opset: int = DEFAULT_OPSET,
    dtype: str = "float32",
) -> bytes:
    """`build_model`, checked by onnx's checker (full shape inference), as file bytes."""
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise UsageError(
            f"--opset must be between {MIN_OPSET} and {newest} (onnx {onnx.__version__})"
        )
    onnx_model = build_model(model, pad, metadata, opset=opset, dtype=dtype)
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model.SerializeToString()
