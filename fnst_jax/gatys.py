"""Gatys et al. (2016): per-image optimisation of the perceptual loss ("slow style transfer").

The baseline the feed-forward network is measured against: the pixels of one image are
optimised directly, with L-BFGS (optax's `lbfgs` and its zoom line search, the classic
choice) or Adam, to minimise exactly `losses.perceptual_loss` - the objective training
uses - against the content image's own features and the style image's Grams.

The optimised variable is the image itself, in [0, 255] pixel units, unconstrained: like
the network's output during training, it is scored unclamped, and only clipped to
[0, 255] when saved. (A squashing reparametrisation would change the objective's
conditioning and make "0 iterations" differ from the initialisation by rounding.)

Iterations run inside one jitted `lax.fori_loop` per chunk; chunks end where a loss is
recorded or logged, so the host only sees the image a handful of times.

    python -m fnst_jax.gatys --style style.jpg --content photo.jpg --output out.png \
        --vgg-weights torchvision --iterations 300 --log-every 50
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fnst_jax import image_io
from fnst_jax.losses import LossSpec, content_targets, perceptual_loss, style_grams
from fnst_jax.vgg import RELU_LAYERS, VGG19, layer_depth

OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise")
DEFAULT_ADAM_LR = 5.0  # pixels per step; the image lives on [0, 255]
# The loss terms reported (weighted, as in training's `terms`), in report order.
REPORTED_TERMS = ("content", "style", "tv", "total")


def make_solver(optimizer: str, learning_rate: float | None = None) -> optax.GradientTransformation:
    """L-BFGS with optax's default zoom line search (step chosen by the line search), or Adam."""
    if optimizer == "lbfgs":
        # learning_rate=None: the line search alone sets the step, as in the classic method.
        return optax.lbfgs(learning_rate=learning_rate)
    if optimizer == "adam":
        return optax.adam(DEFAULT_ADAM_LR if learning_rate is None else learning_rate)
    raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")


@functools.lru_cache(maxsize=32)
def _make_runner(spec: LossSpec, optimizer: str, learning_rate: float | None):
    """Jitted (init, run, terms) for one objective and solver; cached so that every image of
    an evaluation reuses the compiled step (jit re-specialises only on new shapes)."""
    solver = make_solver(optimizer, learning_rate)

    def objective(image, vgg, content_features, target_grams):
        return perceptual_loss(vgg, image, content_features, target_grams, spec)[0]

    @jax.jit
    def run(image, opt_state, num_steps, vgg, content_features, target_grams):
        value_fn = functools.partial(
            objective, vgg=vgg, content_features=content_features, target_grams=target_grams
        )
        if optimizer == "lbfgs":
            # The line search already evaluated value and gradient at the accepted point;
            # reuse them instead of recomputing (optax's documented L-BFGS loop).
            value_and_grad = optax.value_and_grad_from_state(value_fn)

            def step(_, carry):
                x, state = carry
                value, grad = value_and_grad(x, state=state)
                updates, state = solver.update(
                    grad, state, x, value=value, grad=grad, value_fn=value_fn
                )
                return optax.apply_updates(x, updates), state
        else:

            def step(_, carry):
                x, state = carry
                grad = jax.grad(value_fn)(x)
                updates, state = solver.update(grad, state, x)
                return optax.apply_updates(x, updates), state

        # A traced trip count: one compilation serves chunks of any length.
        return jax.lax.fori_loop(0, num_steps, step, (image, opt_state))

    @jax.jit
    def terms(image, vgg, content_features, target_grams):
        return perceptual_loss(vgg, image, content_features, target_grams, spec)[1]

    return jax.jit(solver.init), run, terms


def _as_batch(image: jax.Array | np.ndarray) -> jax.Array:
    image = jnp.asarray(image, jnp.float32)
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[0] != 1 or image.shape[-1] != 3:
        raise ValueError(f"expected one RGB image (H, W, 3) or (1, H, W, 3), got {image.shape}")
    return image


def terms_to_floats(terms: Mapping[str, jax.Array]) -> dict[str, float]:
    return {name: float(terms[name]) for name in REPORTED_TERMS}


def optimize(
    vgg: VGG19,
    content_image: jax.Array | np.ndarray,
    target_grams: Mapping[str, jax.Array],
    spec: LossSpec,
    iterations: int,
    optimizer: str = "lbfgs",
    init: str = "content",
    *,
    learning_rate: float | None = None,
    record_at: Iterable[int] = (),
    log_every: int = 0,
    log: Callable[[int, dict[str, float]], None] | None = None,
    seed: int = 0,
) -> tuple[jax.Array, dict[int, dict[str, float]]]:
    """Optimise one image's pixels to minimise `perceptual_loss`; the slow baseline.

    content_image: (H, W, 3) or (1, H, W, 3) in [0, 255]; its own VGG features are the
    content target. target_grams: the style Grams (`losses.style_grams`), the same ones the
    model was trained against. init: "content" starts from the content image itself (so
    0 iterations returns it exactly), "noise" from uniform noise on [0, 255] (`seed`).

    Returns the optimised image (1, H, W, 3) float32, unclamped (clip when saving), and
    {iteration: {"content", "style", "tv", "total", "seconds"}} for every iteration in
    `record_at` and for `iterations` itself; "seconds" is wall time since the start,
    compilation included. Every `log_every` iterations, `log(iteration, terms)` is called.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(
            f"unknown optimizer {optimizer!r}; expected one of {', '.join(OPTIMIZERS)}"
        )
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; expected one of {', '.join(INITS)}")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    record_at = sorted({int(i) for i in record_at} | {iterations})
    if record_at[0] < 0 or record_at[-1] > iterations:
        raise ValueError(f"record_at {record_at} must lie within 0..{iterations} iterations")
    vgg.check_layers(spec.vgg_layers)

    start = time.perf_counter()
    content = _as_batch(content_image)
    if init == "content":
        image = content
    else:
        image = jax.random.uniform(jax.random.key(seed), content.shape, jnp.float32, 0.0, 255.0)
    init_state, run, compute_terms = _make_runner(spec, optimizer, learning_rate)
    content_features = content_targets(vgg, content, spec)
    target_grams = dict(target_grams)
    opt_state = init_state(image)

    stops = set(record_at)
    if log_every > 0:
        stops |= set(range(0, iterations + 1, log_every))
    records: dict[int, dict[str, float]] = {}
    done = 0
    for stop in sorted(stops):
        if stop > done:
            image, opt_state = run(
                image, opt_state, stop - done, vgg, content_features, target_grams
            )
            done = stop
        terms = terms_to_floats(compute_terms(image, vgg, content_features, target_grams))
        terms["seconds"] = time.perf_counter() - start
        if not np.isfinite(terms["total"]):
            raise FloatingPointError(
                f"{optimizer} diverged: loss is {terms['total']} after {done} iterations"
                + (" (try a smaller --lr)" if optimizer == "adam" else "")
            )
        if done in record_at:
            records[done] = terms
        if log is not None and log_every > 0 and done % log_every == 0:
            log(done, terms)
    return image, records


# --- small image helpers -------------------------------------------------------------------


def resize_shorter_side(image: np.ndarray, size: int) -> np.ndarray:
    """Scale (keeping the aspect ratio, Lanczos as for the training style image) so that the
    shorter side is `size` px."""
    from PIL import Image

    h, w = image.shape[:2]
    scale = size / min(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    if (new_h, new_w) == (h, w):
        return image
    resized = Image.fromarray(image).resize((new_w, new_h), Image.Resampling.LANCZOS)
    return np.asarray(resized, np.uint8)


def to_uint8(image: jax.Array | np.ndarray) -> np.ndarray:
    """(1, H, W, 3) or (H, W, 3) floats on [0, 255] -> uint8 (H, W, 3), clipped and rounded."""
    array = np.asarray(image, np.float32)
    if array.ndim == 4:
        array = array[0]
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def load_style_image(path: str | Path, style_size: int | None) -> np.ndarray:
    """The style image exactly as training loads it: (1, H, W, 3) uint8, shorter side
    `style_size` (None: as is). Raises ValueError naming the file when unreadable."""
    return image_io.read_rgb_resized(path, style_size)[None]


def min_image_side(spec: LossSpec) -> int:
    """Smallest side the VGG can score: each max-pool before the deepest tap halves it."""
    deepest = RELU_LAYERS[max(layer_depth(layer) for layer in spec.vgg_layers)]
    pools = int(deepest[len("relu")]) - 1  # relu3_x sits after two pools
    return 2**pools


class ImageTooSmallError(ValueError):
    """An image smaller than the loss network's pooling allows."""


def check_image_size(path: str | Path, image: np.ndarray, spec: LossSpec) -> None:
    """Raise ImageTooSmallError naming `path` when the image is too small for the layers."""
    needed = min_image_side(spec)
    if min(image.shape[:2]) < needed:
        raise ImageTooSmallError(
            f"{path}: image is {image.shape[1]}x{image.shape[0]} px, too small for the loss "
            f"layers (needs at least {needed} px a side)"
        )


def load_vgg(weights: str, preprocessing: str | None = None) -> VGG19:
    """`fnst_jax.vgg_weights.load_vgg`, imported lazily (it pulls in h5py/torch readers)."""
    from fnst_jax.vgg_weights import load_vgg as _load

    return _load(weights, preprocessing)


# --- command line -------------------------------------------------------------------------


def parse_layers(text: str) -> tuple[str, ...]:
    """argparse type: "relu1_1,relu2_1" -> a tuple of checked VGG tap names."""
    layers = tuple(s.strip() for s in text.split(",") if s.strip())
    for layer in layers:
        try:
            layer_depth(layer)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return layers


def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    defaults = LossSpec()
    parser = argparse.ArgumentParser(
        prog="python -m fnst_jax.gatys",
        description="Slow style transfer: optimise one image's pixels to minimise the "
        "perceptual loss (Gatys et al. 2016), with the same loss as training.",
    )
    parser.add_argument("--style", required=True, help="style image")
    parser.add_argument("--content", required=True, help="content image")
    parser.add_argument("--output", required=True, help="output image (PNG/JPEG)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument("--iterations", type=int, default=300, help="optimiser steps (300)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="lbfgs")
    parser.add_argument("--init", choices=INITS, default="content")
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        help=f"Adam step size in pixels ({DEFAULT_ADAM_LR}); "
        "L-BFGS picks its step by line search unless given",
    )
    parser.add_argument("--style-weight", type=float, default=defaults.style_weight)
    parser.add_argument("--content-weight", type=float, default=defaults.content_weight)
    parser.add_argument("--tv-weight", type=float, default=defaults.tv_weight)
    parser.add_argument(
        "--style-layers",
        type=parse_layers,
        default=defaults.style_layers,
        help="comma-separated VGG taps (default " + ",".join(defaults.style_layers) + ")",
    )
    parser.add_argument("--content-layer", default=defaults.content_layer)
    parser.add_argument(
        "--vgg-weights",
        default="torchvision",
        help="VGG19 weights: a .pth/.safetensors/.h5/.npz file, or 'torchvision' (default)",
    )
    parser.add_argument("--vgg-preprocessing", choices=("torch", "caffe"), default=None)
    parser.add_argument(
        "--size",
        type=positive_int,
        default=None,
        help="resize the content image so its shorter side is SIZE px (default: as is)",
    )
    parser.add_argument(
        "--style-size",
        type=positive_int,
        default=None,
        help="resize the style image so its shorter side is SIZE px (default: as is)",
    )
    parser.add_argument("--log-every", type=int, default=50, help="print the loss every k steps")
    parser.add_argument("--seed", type=int, default=0, help="noise init seed")
    return parser


def _print_terms(iteration: int, terms: Mapping[str, float]) -> None:
    print(
        f"iter {iteration:6d}  total {terms['total']:.5g}  content {terms['content']:.5g}  "
        f"style {terms['style']:.5g}  tv {terms['tv']:.5g}  ({terms['seconds']:.1f} s)",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output = Path(args.output)
    try:
        if args.iterations < 0:
            raise ValueError(f"--iterations must be >= 0, got {args.iterations}")
        if output.exists() and not args.overwrite:
            raise ValueError(f"{output}: already exists (pass --overwrite to replace it)")
        if output.suffix.lower() not in image_io.EXTENSION_TO_FORMAT:
            raise ValueError(
                f"{output}: cannot write {output.suffix or 'extension-less'} images "
                f"(use {', '.join(sorted(image_io.EXTENSION_TO_FORMAT))})"
            )
        spec = LossSpec(
            style_layers=args.style_layers,
            content_layer=args.content_layer,
            style_weight=args.style_weight,
            content_weight=args.content_weight,
            tv_weight=args.tv_weight,
        )
        content = image_io.read_image(args.content).rgb
        if args.size:
            content = resize_shorter_side(content, args.size)
        style = load_style_image(args.style, args.style_size)[0]
        for path, image in ((args.content, content), (args.style, style)):
            check_image_size(path, image, spec)
        vgg = load_vgg(args.vgg_weights, args.vgg_preprocessing)
        vgg.check_layers(spec.vgg_layers)
    except (ValueError, OSError) as e:  # unreadable images or weights, bad layers
        print(f"error: {e}", file=sys.stderr)
        return 2

    target_grams = style_grams(vgg, jnp.asarray(style, jnp.float32)[None], spec.style_layers)
    print(
        f"{args.optimizer} from {args.init}, {args.iterations} iterations, "
        f"{content.shape[1]}x{content.shape[0]} px",
        flush=True,
    )
    try:
        image, records = optimize(
            vgg,
            content,
            target_grams,
            spec,
            args.iterations,
            args.optimizer,
            args.init,
            learning_rate=args.lr,
            log_every=max(args.log_every, 0),
            log=_print_terms,
            seed=args.seed,
        )
    except FloatingPointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.log_every <= 0 or args.iterations % args.log_every:
        _print_terms(args.iterations, records[args.iterations])
    image_io.write_image(output, to_uint8(image))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
