"""Stride-1 convolutions arranged around XLA:CPU's slow paths; the same numbers as a plain one.

`transformer_net.ReflectConv` calls `conv_for_cpu` on CPU and `conv_same_cropped` elsewhere
(through `jax.lax.platform_dependent`); `benchmarks/conv_layers.py` measures both. Each
convolution here is a VALID convolution of an already reflect-padded input, written as a SAME
convolution with the k // 2 border cropped (XLA:CPU runs SAME several times faster).
BENCHMARKS.md has the measurements behind each choice.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

CONV_DIMENSIONS = ("NHWC", "HWIO", "NHWC")
# XLA:CPU (jaxlib 0.10) runs convolutions with fewer than 4 input channels ~5x slower than
# with 4 (the 9x9 3->32 input conv, and the input gradient of the 9x9 32->3 output conv):
# zero channels are padded on (exact: they add zero products). See BENCHMARKS.md.
CPU_MIN_CHANNELS = 4
# Its weight-gradient convolutions run ~4x below its forward ones; for the 128-channel
# residual convs nine shifted 2-D GEMMs are ~2x faster (smaller layers do not gain).
CPU_GEMM_WGRAD_MIN_CHANNELS = 128


def conv_same_cropped(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride-1 SAME convolution with the k // 2 border cropped: a VALID convolution of x."""
    p = kernel.shape[0] // 2
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=CONV_DIMENSIONS)
    return y[:, p:-p, p:-p, :] if p else y


def gemm_over_positions(a: jax.Array, b: jax.Array) -> jax.Array:
    """sum over all leading axes of a[..., i] * b[..., j] -> (i, j), as one 2-D GEMM (XLA:CPU
    runs a dot contracting over several axes far slower than the same dot reshaped to 2-D)."""
    return jnp.dot(a.reshape(-1, a.shape[-1]).T, b.reshape(-1, b.shape[-1]))


@jax.custom_vjp
def conv_gemm_wgrad(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """`conv_same_cropped` whose kernel gradient is k*k shifted GEMMs (CPU only)."""
    return conv_same_cropped(x, kernel)


def _gemm_wgrad_fwd(x: jax.Array, kernel: jax.Array) -> tuple[jax.Array, tuple]:
    return conv_same_cropped(x, kernel), (x, kernel)


def _gemm_wgrad_bwd(residuals: tuple, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    x, kernel = residuals
    k, h, w = kernel.shape[0], g.shape[1], g.shape[2]
    (dx,) = jax.vjp(lambda x: conv_same_cropped(x, kernel), x)[1](g)
    # d kernel[i, j] = sum over (n, y, x) of x[n, y + i, x + j, :] outer g[n, y, x, :]
    dk = jnp.stack(
        [gemm_over_positions(x[:, i : i + h, j : j + w, :], g) for i in range(k) for j in range(k)]
    )
    return dx, dk.reshape(kernel.shape).astype(kernel.dtype)


conv_gemm_wgrad.defvjp(_gemm_wgrad_fwd, _gemm_wgrad_bwd)


def conv_for_cpu(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """`conv_same_cropped` arranged around XLA:CPU's slow paths; same numbers."""
    _, _, cin, cout = kernel.shape
    if cin < CPU_MIN_CHANNELS:
        x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, CPU_MIN_CHANNELS - cin)))
        kernel = jnp.pad(kernel, ((0, 0), (0, 0), (0, CPU_MIN_CHANNELS - cin), (0, 0)))
    if cout < CPU_MIN_CHANNELS:
        kernel = jnp.pad(kernel, ((0, 0), (0, 0), (0, 0), (0, CPU_MIN_CHANNELS - cout)))
        return conv_same_cropped(x, kernel)[..., :cout]
    if min(cin, cout) >= CPU_GEMM_WGRAD_MIN_CHANNELS:
        return conv_gemm_wgrad(x, kernel)
    return conv_same_cropped(x, kernel)
