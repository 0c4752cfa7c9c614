"""TransformerNet: the image transformation network of Johnson et al. (2016), in Flax NNX.

Layout follows the PyTorch fast_neural_style example exactly (1,679,235 parameters):
9x9 conv 3->32, 3x3 stride-2 convs 32->64->128, five residual blocks of 128 channels,
two (nearest x2 upsample + 3x3 conv) stages 128->64->32, and a final 9x9 conv 32->3.
Every conv is reflection-padded; every conv but the last is followed by an affine
instance norm and (outside the residual sums) a ReLU.

Images are NHWC floats in [0, 255]; the output is on the same scale (unclamped).
No I/O here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from fnst_jax import cpu_conv

INSTANCE_NORM_EPSILON = 1e-5  # torch.nn.InstanceNorm2d's default
# The network downsamples twice by 2, so inputs are reflect-padded to a multiple of this.
SIZE_MULTIPLE = 4


def reflect_pad(x: jax.Array, top: int, bottom: int, left: int, right: int) -> jax.Array:
    """Reflection padding of the two spatial axes of an NHWC batch (torch ReflectionPad2d)."""
    if top == bottom == left == right == 0:
        return x
    return jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), mode="reflect")


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

    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.kernel_size // 2
        x = reflect_pad(x, p, p, p, p)
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
    """Affine instance norm; statistics and normalisation in float32 whatever the dtype."""

    def __init__(self, features: int, *, dtype: jnp.dtype = jnp.float32):
        self.scale = nnx.Param(jnp.ones((features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((features,), jnp.float32))
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=(1, 2), keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=(1, 2), keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + INSTANCE_NORM_EPSILON)
        return (y * self.scale[...] + self.bias[...]).astype(self.dtype)


class ConvNormRelu(nnx.Module):
    def __init__(
        self,
        cin: int,
        cout: int,
        k: int,
        stride: int = 1,
        *,
        relu: bool = True,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.conv = ReflectConv(cin, cout, k, stride, dtype=dtype, rngs=rngs)
        self.norm = InstanceNorm(cout, dtype=dtype)
        self.relu = relu

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.norm(self.conv(x))
        return jax.nn.relu(y) if self.relu else y


class ResidualBlock(nnx.Module):
    def __init__(self, channels: int, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.block1 = ConvNormRelu(channels, channels, 3, dtype=dtype, rngs=rngs)
        self.block2 = ConvNormRelu(channels, channels, 3, relu=False, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.block2(self.block1(x))


def upsample_nearest(x: jax.Array, factor: int = 2) -> jax.Array:
    """Nearest-neighbour upsampling (torch.nn.functional.interpolate(mode='nearest'))."""
    n, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, factor, w, factor, c))
    return x.reshape(n, h * factor, w * factor, c)


class UpsampleConvNormRelu(ConvNormRelu):
    """Nearest x2 upsampling, then conv + instance norm + ReLU (a transposed conv would leave
    checkerboard artifacts)."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return super().__call__(upsample_nearest(x))


class TransformerNet(nnx.Module):
    """The feed-forward style network. Any H, W: output has the input's spatial size."""

    def __init__(self, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.dtype = dtype
        self.conv1 = ConvNormRelu(3, 32, 9, dtype=dtype, rngs=rngs)
        self.conv2 = ConvNormRelu(32, 64, 3, 2, dtype=dtype, rngs=rngs)
        self.conv3 = ConvNormRelu(64, 128, 3, 2, dtype=dtype, rngs=rngs)
        self.res = nnx.List([ResidualBlock(128, dtype=dtype, rngs=rngs) for _ in range(5)])
        self.up1 = UpsampleConvNormRelu(128, 64, 3, dtype=dtype, rngs=rngs)
        self.up2 = UpsampleConvNormRelu(64, 32, 3, dtype=dtype, rngs=rngs)
        self.out = ReflectConv(32, 3, 9, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (N, H, W, 3) in [0, 255] -> (N, H, W, 3) float32, same scale, unclamped."""
        h, w = x.shape[1], x.shape[2]
        # Stride-2 layers need H, W divisible by 4 to come back at the same size: reflect-pad
        # the bottom/right up to the next multiple and crop the output back.
        ph, pw = -h % SIZE_MULTIPLE, -w % SIZE_MULTIPLE
        y = reflect_pad(x.astype(self.dtype), 0, ph, 0, pw)
        y = self.conv3(self.conv2(self.conv1(y)))
        for block in self.res:
            y = block(y)
        y = self.out(self.up2(self.up1(y)))
        return y[:, :h, :w, :].astype(jnp.float32)


def stylize_padded(model: TransformerNet, images: jax.Array, pad: int) -> jax.Array:
    """The article's border trick: reflect-pad `pad` px, run the network, crop the pad off.

    images: (N, H, W, 3) in [0, 255] (any dtype) -> float32 (N, H, W, 3), unclamped.
    Reflection needs pad < H and pad < W; larger pads are clipped to what fits.
    """
    h, w = images.shape[1], images.shape[2]
    pad_h, pad_w = min(pad, h - 1), min(pad, w - 1)
    x = reflect_pad(images.astype(jnp.float32), pad_h, pad_h, pad_w, pad_w)
    y = model(x)
    return y[:, pad_h : pad_h + h, pad_w : pad_w + w, :]


def count_params(model: nnx.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
