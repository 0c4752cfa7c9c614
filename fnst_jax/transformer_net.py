"""TransformerNet: the image transformation network of Johnson et al. (2016), in Flax NNX.

Layout follows the PyTorch fast_neural_style example exactly (1,679,235 parameters):
9x9 conv 3->32, 3x3 stride-2 convs 32->64->128, five residual blocks of 128 channels,
two (nearest x2 upsample + 3x3 conv) stages 128->64->32, and a final 9x9 conv 32->3.
Every conv is reflection-padded; every conv but the last is followed by an affine
instance norm and (outside the residual sums) a ReLU.

Images are NHWC floats in [0, 255]; the output is on the same scale (unclamped).
No I/O here.

What "stylize an image" means, once for every path (training, validation, evaluate, Gatys
initialisation, the stylize engine, tiles, the service, export): `stylize_padded` reflect-
pads the image by the train pad, `TransformerNet.__call__` reflect-pads that at the bottom/
right up to a multiple of 4 (the two stride-2 layers need it), runs the layers and crops.
Every instance norm takes its statistics over exactly that network input: the image, its
train pad and the <= 3 reflected rows/columns of the rounding. Why that and not the image
plus train pad alone: it is what training optimised (at the default 256 px + 2 x 40 px pad
nothing is rounded at all), it keeps the reference a plain instance norm (the fast path in
training, and torch's InstanceNorm2d, which the PyTorch twin checks), and the rounding rows
are reflections of real content, so they move the statistics least of any choice.

Callers that must lay an image out differently (a batch of mixed sizes padded up to one
bucket shape; a tile of a large image) call `TransformerNet.forward` with a `box`: the
region of each array that holds that network input. Every layer then reflects at the box
edges exactly as the reference reflects at the array edges (`reflect_pad(..., box=)`), and
every instance norm takes its statistics inside the box (or uses statistics it is given,
`NormControl`), so the result inside the box is the reference result.
`TransformerNet.forward_with_statistics` also returns what each norm did (`NormRecord`: the
moments it normalised with, and its input summarised over a region when asked): tiling
computes a large image's exact statistics from these, one layer at a time.

Many styles in one network (Dumoulin, Shlens & Kudlur 2017, conditional instance norm):
`TransformerNet(num_styles=N)` gives every instance norm an (N, C) scale and shift; the
convolutions are shared. The style input is a weight vector over the N styles per image,
(B, N): one-hot for one style, convex weights for a mix; each norm's scale and shift are the
same combination of its rows. With N = 1 the parameters are (C,) as before (old model files
load unchanged) and the style input is ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fnst_jax import cpu_conv
from fnst_jax.model_file import StyleError, style_weights

INSTANCE_NORM_EPSILON = 1e-5  # torch.nn.InstanceNorm2d's default
# The network downsamples twice by 2, so inputs are reflect-padded to a multiple of this.
SIZE_MULTIPLE = 4


# Norm moments: float32 (mean, variance), each (N, 1, 1, C).
Moments = tuple[jax.Array, jax.Array]
# A norm layer's input over a region: float32 (count, mean, sum of squared deviations from
# that mean), each (N, 1, 1, C); partial sums in this form combine without the cancellation
# of a plain sum of squares.
Summary = tuple[jax.Array, jax.Array, jax.Array]


def reflect_indices(count: int, before: int, low: jax.Array, high: jax.Array) -> jax.Array:
    """Source positions of a reflect-padded axis: output position i holds input position
    i - before, reflected into [low, high) as often as needed (numpy's "reflect" mode, edge
    not repeated; a region of one position repeats it). low/high: (N,) int32."""
    position = jnp.arange(count, dtype=jnp.int32)[None, :] - before - low[:, None]
    size = (high - low)[:, None]
    period = jnp.maximum(2 * (size - 1), 1)
    folded = position % period
    folded = jnp.where(folded >= size, period - folded, folded)
    return low[:, None] + jnp.where(size > 1, folded, 0)


def reflect_pad(
    x: jax.Array, top: int, bottom: int, left: int, right: int, box: jax.Array | None = None
) -> jax.Array:
    """Reflection padding of the two spatial axes of an NHWC batch (torch ReflectionPad2d).

    box: None, or (N, 4) int32 (top, bottom, left, right) per image: the array is padded as
    given, and every position outside the box is filled by reflection at the box edges, as
    if the box were the whole array (see the module docstring).
    """
    if box is None:
        if top == bottom == left == right == 0:
            return x
        return jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), mode="reflect")
    rows = reflect_indices(x.shape[1] + top + bottom, top, box[:, 0], box[:, 1])
    cols = reflect_indices(x.shape[2] + left + right, left, box[:, 2], box[:, 3])
    x = jnp.take_along_axis(x, rows[:, :, None, None], axis=1)
    return jnp.take_along_axis(x, cols[:, None, :, None], axis=2)


def box_mask(box: jax.Array, height: int, width: int) -> jax.Array:
    """(N, H, W, 1) float32: 1 inside each image's box, 0 outside."""
    rows = jnp.arange(height)[None, :]
    cols = jnp.arange(width)[None, :]
    inside_rows = (rows >= box[:, 0:1]) & (rows < box[:, 1:2])
    inside_cols = (cols >= box[:, 2:3]) & (cols < box[:, 3:4])
    return (inside_rows[:, :, None] & inside_cols[:, None, :]).astype(jnp.float32)[..., None]


class NormRecord(NamedTuple):
    """What one instance norm did in a forward pass: `moments`, the (mean, variance) it
    normalised with; `summary`, its input over `NormControl.sum_box` (None without one)."""

    moments: Moments
    summary: Summary | None


@dataclasses.dataclass(frozen=True)
class NormControl:
    """Where the instance norms of one `TransformerNet.forward_with_statistics` take their
    statistics. Read only: what each norm did comes back from the call (`NormRecord`).

    given: per norm layer (in call order) the moments to normalise with, or None to measure
    them inside the box; None altogether measures every layer. Tiles of a large image are
    normalised with the whole image's moments this way.
    sum_box: (N, 4) full-resolution box: each norm layer's input is also summarised over it
    (scaled to that layer's resolution), for the exact statistics of a tiled image.
    """

    given: Sequence[Moments | None] | None = None
    sum_box: jax.Array | None = None

    def normalize(
        self,
        norm: InstanceNorm,
        layer: int,
        x: jax.Array,
        box: jax.Array | None,
        scale: int,
        style: jax.Array | None = None,
    ) -> tuple[jax.Array, NormRecord]:
        """Apply `norm`, norm layer number `layer` in call order, to x at 1/scale
        resolution -> (its output, what it did)."""
        given = self.given[layer] if self.given is not None else None
        moments = given if given is not None else norm.moments(x, box)
        summary = None
        if self.sum_box is not None:
            mask = box_mask(self.sum_box // scale, x.shape[1], x.shape[2])
            x32 = x.astype(jnp.float32)
            count = jnp.sum(mask, axis=(1, 2), keepdims=True)
            mean = jnp.sum(x32 * mask, axis=(1, 2), keepdims=True) / jnp.maximum(count, 1.0)
            squares = jnp.sum(jnp.square(x32 - mean) * mask, axis=(1, 2), keepdims=True)
            summary = (count, mean, squares)
        return norm.normalize(x, *moments, style), NormRecord(moments, summary)


# Every norm measures its own input inside the box: the reference forward.
MEASURE = NormControl()


class ReflectConv(nnx.Module):
    """Reflection-padded convolution (torch: ReflectionPad2d(k // 2) then Conv2d(padding=0)).

    Stride-1 layers pad by k // 2, convolve SAME and crop the k // 2 border. This gives the
    same numbers as a VALID convolution of the padded input, but XLA:CPU runs a VALID
    convolution over a reflect-padded operand several times slower than a SAME one. On CPU
    they also avoid two more XLA:CPU slow paths (`cpu_conv.conv_for_cpu`); other platforms run
    the plain convolution.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int,
        stride: int = 1,
        *,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.kernel_size = kernel_size
        self.stride = stride
        # torch's Conv2d default init: kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), ..)
        fan_in = in_features * kernel_size * kernel_size
        bound = 1.0 / fan_in**0.5
        init = nnx.initializers.uniform(scale=2 * bound)
        self.conv = nnx.Conv(
            in_features,
            out_features,
            kernel_size=(kernel_size, kernel_size),
            strides=(stride, stride),
            padding="SAME" if stride == 1 else "VALID",
            kernel_init=lambda *a: init(*a) - bound,
            bias_init=lambda *a: init(*a) - bound,
            dtype=dtype,
            param_dtype=jnp.float32,
            rngs=rngs,
        )

    def __call__(self, x: jax.Array, box: jax.Array | None = None) -> jax.Array:
        """box: where the input holds the network input (see `reflect_pad`); None: all of it.
        A stride-2 layer's output box is box // 2."""
        p = self.kernel_size // 2
        x = reflect_pad(x, p, p, p, p, box)
        if self.stride != 1:
            return self.conv(x)
        # What nnx.Conv does (dtype promotion, conv, bias), with the conv chosen per platform.
        x, kernel, bias = self.conv.promote_dtype(
            (x, self.conv.kernel[...], self.conv.bias[...]), dtype=self.conv.dtype
        )
        y = jax.lax.platform_dependent(
            x, kernel, cpu=cpu_conv.conv_for_cpu, default=cpu_conv.conv_same_cropped
        )
        return y + bias


class InstanceNorm(nnx.Module):
    """Affine instance norm; statistics and normalisation in float32 whatever the dtype.
    num_styles > 1: conditional instance norm, one scale/shift row per style."""

    def __init__(self, features: int, *, num_styles: int = 1, dtype: jnp.dtype = jnp.float32):
        shape = (features,) if num_styles == 1 else (num_styles, features)
        self.scale = nnx.Param(jnp.ones(shape, jnp.float32))
        self.bias = nnx.Param(jnp.zeros(shape, jnp.float32))
        self.dtype = dtype

    def __call__(self, x: jax.Array, style: jax.Array | None = None) -> jax.Array:
        return self.normalize(x, *self.moments(x), style)

    def moments(self, x: jax.Array, box: jax.Array | None = None) -> Moments:
        """Per image and channel mean and (biased) variance, over the box when given."""
        x32 = x.astype(jnp.float32)
        if box is None:
            mean = jnp.mean(x32, axis=(1, 2), keepdims=True)
            return mean, jnp.mean(jnp.square(x32 - mean), axis=(1, 2), keepdims=True)
        mask = box_mask(box, x.shape[1], x.shape[2])
        count = jnp.sum(mask, axis=(1, 2), keepdims=True)
        mean = jnp.sum(x32 * mask, axis=(1, 2), keepdims=True) / count
        return mean, jnp.sum(jnp.square(x32 - mean) * mask, axis=(1, 2), keepdims=True) / count

    def affine(self, style: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        """The scale and shift to apply: (C,), or (B, 1, 1, C) mixed by the style weights
        (B, num_styles) for a multi-style norm."""
        scale, bias = self.scale[...], self.bias[...]
        if scale.ndim == 1:
            return scale, bias
        if style is None:
            raise StyleError(f"a {scale.shape[0]}-style model needs a style input")
        weights = jnp.asarray(style, jnp.float32)
        mix = jax.lax.Precision.HIGHEST
        scale = jnp.matmul(weights, scale, precision=mix)
        bias = jnp.matmul(weights, bias, precision=mix)
        return scale[:, None, None, :], bias[:, None, None, :]

    def normalize(
        self, x: jax.Array, mean: jax.Array, var: jax.Array, style: jax.Array | None = None
    ) -> jax.Array:
        scale, bias = self.affine(style)
        y = (x.astype(jnp.float32) - mean) * jax.lax.rsqrt(var + INSTANCE_NORM_EPSILON)
        return (y * scale + bias).astype(self.dtype)


class ConvNormRelu(nnx.Module):
    def __init__(
        self,
        cin: int,
        cout: int,
        k: int,
        stride: int = 1,
        *,
        relu: bool = True,
        num_styles: int = 1,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.conv = ReflectConv(cin, cout, k, stride, dtype=dtype, rngs=rngs)
        self.norm = InstanceNorm(cout, num_styles=num_styles, dtype=dtype)
        self.relu = relu

    def __call__(
        self,
        x: jax.Array,
        box: jax.Array | None = None,
        norms: NormControl = MEASURE,
        layer: int = 0,
        scale: int = 1,
        style: jax.Array | None = None,
    ) -> tuple[jax.Array, NormRecord]:
        """-> (output, what its norm did). box: the input's box (`ReflectConv`); norms,
        layer, scale: how the norm takes its statistics, its number in call order, and the
        resolution of its input (1/scale of the input image); style: (B, num_styles)
        weights (multi-style models)."""
        y = self.conv(x, box)
        if self.conv.stride != 1 and box is not None:
            box = box // self.conv.stride
        y, record = norms.normalize(self.norm, layer, y, box, scale, style)
        return (jax.nn.relu(y) if self.relu else y), record


class ResidualBlock(nnx.Module):
    def __init__(
        self,
        channels: int,
        *,
        num_styles: int = 1,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = {"num_styles": num_styles, "dtype": dtype, "rngs": rngs}
        self.block1 = ConvNormRelu(channels, channels, 3, **kw)
        self.block2 = ConvNormRelu(channels, channels, 3, relu=False, **kw)

    def __call__(
        self,
        x: jax.Array,
        box: jax.Array | None = None,
        norms: NormControl = MEASURE,
        layer: int = 0,
        scale: int = 1,
        style: jax.Array | None = None,
    ) -> tuple[jax.Array, list[NormRecord]]:
        """As `ConvNormRelu`; its two norms are layers `layer` and `layer + 1`."""
        inner, first = self.block1(x, box, norms, layer, scale, style)
        outer, second = self.block2(inner, box, norms, layer + 1, scale, style)
        return x + outer, [first, second]


def upsample_nearest(x: jax.Array, factor: int = 2) -> jax.Array:
    """Nearest-neighbour upsampling (torch.nn.functional.interpolate(mode='nearest'))."""
    n, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, factor, w, factor, c))
    return x.reshape(n, h * factor, w * factor, c)


class UpsampleConvNormRelu(ConvNormRelu):
    """Nearest x2 upsampling, then conv + instance norm + ReLU (a transposed conv would leave
    checkerboard artifacts)."""

    def __call__(
        self,
        x: jax.Array,
        box: jax.Array | None = None,
        norms: NormControl = MEASURE,
        layer: int = 0,
        scale: int = 1,
        style: jax.Array | None = None,
    ) -> tuple[jax.Array, NormRecord]:
        """box, scale: of the upsampled input (twice the resolution of x)."""
        return super().__call__(upsample_nearest(x), box, norms, layer, scale, style)


class TransformerNet(nnx.Module):
    """The feed-forward style network. Any H, W: output has the input's spatial size.
    num_styles > 1: conditional instance norms (see the module docstring)."""

    def __init__(self, *, num_styles: int = 1, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        if num_styles < 1:
            raise StyleError(f"num_styles must be at least 1, not {num_styles}")
        self.dtype = dtype
        self.num_styles = num_styles
        kw = {"num_styles": num_styles, "dtype": dtype, "rngs": rngs}
        self.conv1 = ConvNormRelu(3, 32, 9, **kw)
        self.conv2 = ConvNormRelu(32, 64, 3, 2, **kw)
        self.conv3 = ConvNormRelu(64, 128, 3, 2, **kw)
        self.res = nnx.List([ResidualBlock(128, **kw) for _ in range(5)])
        self.up1 = UpsampleConvNormRelu(128, 64, 3, **kw)
        self.up2 = UpsampleConvNormRelu(64, 32, 3, **kw)
        self.out = ReflectConv(32, 3, 9, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, style: jax.Array | None = None) -> jax.Array:
        """x: (N, H, W, 3) in [0, 255] -> (N, H, W, 3) float32, same scale, unclamped.
        style: (N, num_styles) weights; ignored by a one-style model."""
        h, w = x.shape[1], x.shape[2]
        # Stride-2 layers need H, W divisible by 4 to come back at the same size: reflect-pad
        # the bottom/right up to the next multiple and crop the output back.
        ph, pw = -h % SIZE_MULTIPLE, -w % SIZE_MULTIPLE
        y = reflect_pad(x.astype(self.dtype), 0, ph, 0, pw)
        return self.forward(y, style=style)[:, :h, :w, :]

    def forward(
        self, x: jax.Array, box: jax.Array | None = None, style: jax.Array | None = None
    ) -> jax.Array:
        """The layers on an input whose H, W are multiples of 4 -> float32, same shape.

        box: None (the whole input is the network input), or (N, 4) int32 (top, bottom,
        left, right) per image, all multiples of 4: the region holding the network input
        (see the module docstring); the output is exact inside it and arbitrary outside.
        style: (N, num_styles) weights per image (multi-style models; see `style_weights`).
        """
        return self.forward_with_statistics(x, box, style=style)[0]

    def forward_with_statistics(
        self,
        x: jax.Array,
        box: jax.Array | None = None,
        norms: NormControl = MEASURE,
        style: jax.Array | None = None,
    ) -> tuple[jax.Array, list[NormRecord]]:
        """`forward`, with the instance norms taking their statistics as `norms` says
        (default: each measures its input in the box) -> (output, per norm layer in call
        order what it did)."""
        y = x.astype(self.dtype)
        quarter = None if box is None else box // SIZE_MULTIPLE
        half = None if box is None else box // 2
        y, conv1 = self.conv1(y, box, norms, 0, 1, style)
        y, conv2 = self.conv2(y, box, norms, 1, 2, style)
        y, conv3 = self.conv3(y, half, norms, 2, 4, style)
        records = [conv1, conv2, conv3]
        for residual in self.res:
            y, pair = residual(y, quarter, norms, len(records), 4, style)
            records.extend(pair)
        y, up1 = self.up1(y, half, norms, len(records), 2, style)
        y, up2 = self.up2(y, box, norms, len(records) + 1, 1, style)
        return self.out(y, box).astype(jnp.float32), [*records, up1, up2]


def num_styles_of(params: Mapping[str, Any]) -> int:
    """How many styles a parameter tree (nested dict, or flat "conv1/norm/scale" names)
    holds: the rows of its norm scales, 1 for a one-style model."""
    pending = [params]
    while pending:
        for name, value in pending.pop().items():
            if isinstance(value, Mapping):
                pending.append(value)
            elif str(name).split("/")[-1] == "scale":
                return 1 if np.ndim(value) == 1 else int(np.shape(value)[0])
    raise StyleError("no instance-norm scale in these parameters")


def single_style_model(model: TransformerNet, style: int | Sequence[float]) -> TransformerNet:
    """A one-style TransformerNet that computes `model` in one style or mix (an index or
    one weight per style, `style_weights`): every norm's scale and shift are that
    combination of its rows, the convolutions are the same arrays. For exports and anything
    else that takes one style; a one-style model is returned as it is."""
    if model.num_styles == 1:
        return model
    weights = jnp.asarray(style_weights(model.num_styles, style)[0])
    single = TransformerNet(dtype=model.dtype, rngs=nnx.Rngs(0))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    rows = jax.tree.map(
        lambda p: (
            jnp.matmul(weights, p, precision=jax.lax.Precision.HIGHEST)
            if p.ndim == 2  # norm rows; conv kernels are 4-D, conv biases 1-D
            else p
        ),
        params,
    )
    state = nnx.state(single, nnx.Param)
    nnx.replace_by_pure_dict(state, rows)
    nnx.update(single, state)
    return single


def stylize_padded(
    model: TransformerNet, images: jax.Array, pad: int, style: jax.Array | None = None
) -> jax.Array:
    """The article's border trick: reflect-pad `pad` px, run the network, crop the pad off.

    images: (N, H, W, 3) in [0, 255] (any dtype) -> float32 (N, H, W, 3), unclamped.
    style: (N, num_styles) weights (multi-style models).
    Reflection needs pad < H and pad < W; larger pads are clipped to what fits.
    """
    h, w = images.shape[1], images.shape[2]
    pad_h, pad_w = min(pad, h - 1), min(pad, w - 1)
    x = reflect_pad(images.astype(jnp.float32), pad_h, pad_h, pad_w, pad_w)
    y = model(x, style)
    return y[:, pad_h : pad_h + h, pad_w : pad_w + w, :]


def count_params(model: nnx.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
