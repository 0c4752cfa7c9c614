"""Per-layer convolution timings on CPU: XLA (plain conv) against torch, and the project's fixes.

Reproduces the table and findings 2-4 of BENCHMARKS.md ("Where XLA:CPU loses"): for the five
convolutions, jitted `jax.lax.conv_general_dilated` (SAME, NHWC/HWIO, float32) forward, input
gradient and weight gradient, and torch conv2d (NCHW) forward and forward+backward; then the
two CPU changes in `fnst_jax.cpu_conv` (zero channels padded onto 3-channel convs, the
128-channel weight gradient as shifted 2-D GEMMs) and a multi-axis dot against a 2-D one.
Times are process CPU seconds per call (so other load on the machine inflates them less than
wall time would), best of --repeats after one warm-up call. Pin one core:

    taskset -c 1 python benchmarks/conv_layers.py
    taskset -c 1 python benchmarks/conv_layers.py --layers residual output --repeats 1
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from types import ModuleType
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fnst_jax.cpu_conv import (
    conv_for_cpu,
    conv_gemm_wgrad,
    conv_same_cropped,
    gemm_over_positions,
)


class Layer(NamedTuple):
    label: str
    size: int  # spatial size of the (already padded) activation
    k: int
    cin: int
    cout: int
    input_grad: bool  # does training need it? (not for the image input, nor for frozen VGG)
    weight_grad: bool


LAYERS = {
    "input": Layer("9x9 3->32, 208 px", 208, 9, 3, 32, False, True),
    "residual": Layer("3x3 128->128, 52 px (residual)", 52, 3, 128, 128, True, True),
    "up2": Layer("3x3 64->32, 208 px (up2)", 208, 3, 64, 32, True, True),
    "output": Layer("9x9 32->3, 208 px (output)", 208, 9, 32, 3, True, True),
    "vgg": Layer("3x3 64->64, 128 px (VGG)", 128, 3, 64, 64, True, False),
}


def block(result: object) -> None:
    """Wait for JAX's asynchronous dispatch; torch (eager) results are already computed."""
    if isinstance(result, jax.Array):
        result.block_until_ready()


def cpu_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Best of `repeats` process-CPU-second timings of fn(), after one warm-up (compile) call."""
    block(fn())
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        block(fn())
        best = min(best, time.process_time() - start)
    return best


def conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def operands(batch: int, layer: Layer, pad: int = 0) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Random x (spatially padded by `pad`), kernel and output cotangent for `layer`."""
    kx, kk, kg = jax.random.split(jax.random.key(0), 3)
    side = layer.size + 2 * pad
    x = jax.random.normal(kx, (batch, side, side, layer.cin), jnp.float32)
    kernel = jax.random.normal(kk, (layer.k, layer.k, layer.cin, layer.cout), jnp.float32)
    g = jax.random.normal(kg, (batch, layer.size, layer.size, layer.cout), jnp.float32)
    return x, kernel, g


def jax_times(
    conv_fn: Callable, x: jax.Array, kernel: jax.Array, g: jax.Array, repeats: int
) -> dict[str, float]:
    """Forward, input-gradient and weight-gradient CPU seconds of conv_fn(x, kernel)."""
    forward = jax.jit(conv_fn)
    input_grad = jax.jit(lambda x, k, g: jax.vjp(lambda x: conv_fn(x, k), x)[1](g)[0])
    weight_grad = jax.jit(lambda x, k, g: jax.vjp(lambda k: conv_fn(x, k), k)[1](g)[0])
    return {
        "fwd": cpu_seconds(lambda: forward(x, kernel), repeats),
        "dx": cpu_seconds(lambda: input_grad(x, kernel, g), repeats),
        "dk": cpu_seconds(lambda: weight_grad(x, kernel, g), repeats),
    }


def torch_times(torch: ModuleType, batch: int, layer: Layer, repeats: int) -> tuple[float, float]:
    """torch conv2d forward and forward+backward (only the gradients training needs)."""
    x = torch.randn(batch, layer.cin, layer.size, layer.size).contiguous()
    w = torch.randn(layer.cout, layer.cin, layer.k, layer.k)
    x.requires_grad_(layer.input_grad)
    w.requires_grad_(layer.weight_grad)
    g = torch.randn(batch, layer.cout, layer.size, layer.size)

    def forward():
        with torch.no_grad():
            return torch.nn.functional.conv2d(x, w, padding=layer.k // 2)

    def forward_backward():
        x.grad = w.grad = None  # as after zero_grad(): no accumulation
        torch.nn.functional.conv2d(x, w, padding=layer.k // 2).backward(g)

    return cpu_seconds(forward, repeats), cpu_seconds(forward_backward, repeats)


def layer_table(args: argparse.Namespace, torch: ModuleType | None) -> None:
    print(
        "| conv (NHWC) | XLA fwd | XLA input grad | XLA weight grad | torch fwd | torch fwd+bwd |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name in args.layers:
        layer = LAYERS[name]
        t = jax_times(conv, *operands(args.batch, layer), args.repeats)
        dx = f"{t['dx']:.3f}" if layer.input_grad else "(not needed)"
        dk = f"{t['dk']:.3f}" if layer.weight_grad else "(not needed)"
        tf, tb = torch_times(torch, args.batch, layer, args.repeats) if torch else (None, None)
        tcols = f"{tf:.3f} | {tb:.3f}" if torch else "- | -"
        print(f"| {layer.label} | {t['fwd']:.3f} | {dx} | {dk} | {tcols} |", flush=True)


def fixes(args: argparse.Namespace) -> None:
    """Plain (`conv_same_cropped`) against the CPU path (`conv_for_cpu`) on reflect-padded input."""
    print("\nCPU fixes (VALID conv of the k//2-padded input, as ReflectConv runs it):")
    cases = [
        ("input", "fwd", "9x9 3->32 forward, 3 -> 4 input channels"),
        ("output", "dx", "9x9 32->3 input grad, 3 -> 4 output channels"),
        ("residual", "dk", "3x3 128->128 weight grad, shifted 2-D GEMMs"),
    ]
    for name, which, what in cases:
        if name not in args.layers:
            continue
        layer = LAYERS[name]
        x, kernel, g = operands(args.batch, layer, pad=layer.k // 2)
        plain = jax_times(conv_same_cropped, x, kernel, g, args.repeats)[which]
        fixed_fn = conv_gemm_wgrad if which == "dk" else conv_for_cpu
        fixed = jax_times(fixed_fn, x, kernel, g, args.repeats)[which]
        print(f"  {what}: {plain:.3f} -> {fixed:.3f} s", flush=True)


def dots(args: argparse.Namespace, torch: ModuleType | None) -> None:
    """One term dK[i, j] of the residual weight gradient as a multi-axis einsum and as a 2-D
    dot (`gemm_over_positions`), on a whole array and on a shifted window of the padded x."""
    layer = LAYERS["residual"]
    x, _, g = operands(args.batch, layer, pad=1)
    n = layer.size
    flops = 2 * g.size * layer.cin
    windows = {
        "contiguous x": lambda x: x[:, :n, :n],  # dK[0, 0]'s operand
        "shifted window of x": lambda x: x[:, 1 : n + 1, 2 : n + 2],  # dK[1, 2]'s operand
    }
    a = jax.random.normal(jax.random.key(1), (1024, 1024), jnp.float32)
    print(f"\nDots ({g.shape} x {g.shape[:3] + (layer.cout,)} -> (128, 128)), GFLOP/s:")
    for where, window in windows.items():
        for what, dot in [
            ('einsum("nhwc,nhwo->co")', lambda x, g: jnp.einsum("nhwc,nhwo->co", x, g)),
            ("x.reshape(-1, c).T @ g.reshape(-1, o)", gemm_over_positions),
        ]:
            fn = jax.jit(lambda x, g, dot=dot, window=window: dot(window(x), g))
            seconds = cpu_seconds(lambda fn=fn: fn(x, g), args.repeats)
            print(f"  {where}, {what}: {flops / seconds / 1e9:.0f}", flush=True)
    matmul = jax.jit(jnp.matmul)
    seconds = cpu_seconds(lambda: matmul(a, a), args.repeats)
    print(f"  1024^3 matmul: {2 * 1024**3 / seconds / 1e9:.0f}")
    if torch:
        ta = torch.randn(1024, 1024)
        seconds = cpu_seconds(lambda: ta @ ta, args.repeats)
        print(f"  1024^3 matmul (torch): {2 * 1024**3 / seconds / 1e9:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", nargs="+", choices=list(LAYERS), default=list(LAYERS))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-torch", action="store_true", help="skip the torch columns")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    try:
        import torch  # optional: the torch columns are left empty without it

        torch.set_num_threads(cores)
    except ImportError:
        torch = None
    if args.no_torch:
        torch = None
    print(f"jax {jax.__version__}, {cores} core(s), batch {args.batch}, best of {args.repeats}")
    print("process CPU seconds per call\n")
    layer_table(args, torch)
    fixes(args)
    dots(args, torch)


if __name__ == "__main__":
    main()
