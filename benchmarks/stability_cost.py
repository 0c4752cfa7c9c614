"""What the stability term costs a train step: FLOPs (XLA's count and the analytic one) and
time, with `loss.stability_weight` 0 and > 0, on this machine's default device.

    python benchmarks/stability_cost.py [--batch-size 4] [--image-size 128] [--pad 20] \
        [--steps 5] [--style-layers relu1_1,relu2_1,relu3_1]

The term adds a second TransformerNet forward (the perturbed copies) and its backward, and
no VGG pass. The script prints the extra FLOPs next to the analytic count of one
TransformerNet forward+backward on the batch, and the VGG forward of the batch for scale.
Random weights throughout (the cost does not depend on them).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from fnst_jax import train_step
from fnst_jax.bench.flops import transformer_conv_flops, vgg_conv_shapes
from fnst_jax.bench.measure import random_vgg
from fnst_jax.losses import LossSpec, style_grams
from fnst_jax.vgg import layer_depth

# Backward of a conv: the gradient w.r.t. its input and w.r.t. its weights, each as costly as
# the forward (the first layer's input gradient is not needed, a detail below 1%).
FORWARD_AND_BACKWARD = 3


def conv_count(spec: LossSpec) -> int:
    """How many VGG convs the loss runs (relu1_1 is the first conv's output)."""
    return 1 + max(layer_depth(layer) for layer in spec.vgg_layers)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--pad", type=int, default=20)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--style-layers", default="relu1_1,relu2_1,relu3_1")
    parser.add_argument("--content-layer", default="relu2_2")
    return parser.parse_args()


def measure(spec: LossSpec, args: argparse.Namespace) -> tuple[float, float]:
    """(XLA's FLOPs of the compiled step, median seconds per step)."""
    rng = np.random.default_rng(0)
    shape = (args.batch_size, args.image_size, args.image_size, 3)
    images = jnp.asarray(rng.uniform(0, 255, shape), jnp.float32)
    vgg = random_vgg(conv_count(spec))
    grams = style_grams(vgg, images[:1], spec.style_layers)
    tx = train_step.make_optimizer("adam", 1e-3)
    graphdef, state = train_step.init_state(jax.random.PRNGKey(0), jnp.float32, tx)
    config = train_step.StepConfig(graphdef, spec, args.pad, jnp.float32)
    step = train_step.make_jit_step(train_step.make_mesh(), tx, config)
    compiled = step.lower(state, images, vgg, grams).compile()
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):
        analysis = analysis[0]
    state, terms = compiled(state, images, vgg, grams)  # warm-up
    jax.block_until_ready(terms)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        state, terms = compiled(state, images, vgg, grams)
        jax.block_until_ready(terms)
        times.append(time.perf_counter() - start)
    return float(analysis["flops"]), statistics.median(times)


def main() -> None:
    args = parse_args()
    base = LossSpec(
        style_layers=tuple(args.style_layers.split(",")), content_layer=args.content_layer
    )
    n, size, pad = args.batch_size, args.image_size, args.pad
    transformer = FORWARD_AND_BACKWARD * sum(
        transformer_conv_flops(n, size + 2 * pad, size + 2 * pad)
    )
    depth = conv_count(base)
    vgg_forward = sum(
        2 * n * 9 * cin * cout * h * w for cin, cout, h, w in vgg_conv_shapes(size, size, depth)
    )
    print(f"device: {jax.devices()[0].device_kind}; batch {n}, {size} px, pad {pad}")
    results = {}
    for weight in (0.0, 1.0):
        spec = dataclasses.replace(base, stability_weight=weight)
        results[weight] = measure(spec, args)
        flops, seconds = results[weight]
        print(f"stability_weight={weight}: {flops / 1e9:8.2f} GFLOP (XLA), {seconds:.3f} s/step")
    extra = results[1.0][0] - results[0.0][0]
    print(f"extra FLOPs with the term: {extra / 1e9:.2f} GFLOP (XLA)")
    print(f"one TransformerNet forward+backward on the batch: {transformer / 1e9:.2f} GFLOP")
    print(f"one VGG forward (to {depth} convs) on the batch: {vgg_forward / 1e9:.2f} GFLOP")
    print(f"time ratio with/without: {results[1.0][1] / results[0.0][1]:.2f}x")


if __name__ == "__main__":
    main()
