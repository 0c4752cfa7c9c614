"""Gatys et al. (2016): per-image optimisation of the perceptual loss ("slow style transfer").

The baseline the feed-forward network is measured against: the pixels of one image are
optimised directly, with L-BFGS (optax's `lbfgs` and its zoom line search, the classic
choice) or Adam, to minimise exactly `losses.perceptual_loss` - the objective training
uses - against the content image's own features and the style image's Grams.

The pixel constraint, the same on both sides of evaluate's comparison: an image is scored
only inside the valid pixel range [0, 255] (`PIXEL_RANGE`, `to_pixel_range`), because that is
all a model can deliver (`stylize.py` writes its output clipped to [0, 255], then rounded) and
what the paper's baseline did (projected L-BFGS). Here the optimised variable is the image
itself, in pixel units, projected onto [0, 255] at the start and after every step, so every
image the optimiser reports, records a loss for, or returns lies in the range; `evaluate`
scores the model's output clipped the same way (`to_pixel_range`). Rounding to uint8 is applied
to neither side: both are scored as float images, and both lose the same <= 0.5 of a level
when written. L-BFGS's line search searches along the projected path (its objective is the
loss of the clipped image), so the value it accepts is the loss of the projected point it
moves to; that value and its gradient (zero for the pixels the step clipped) are reused, as
in the unconstrained method, with no extra evaluation per step. Adam takes the gradient at
the (in-range) image and projects after the step. (A squashing reparametrisation instead
would change the objective's conditioning and make "0 iterations" differ from the
initialisation by rounding.)

Iterations run inside one jitted `lax.fori_loop` per chunk; chunks end where a loss is
recorded or logged, so the host only sees the image a handful of times.

    python -m fnst_jax.gatys --style style.jpg --content photo.jpg --output out.png \
        --vgg-weights torchvision --iterations 300 --log-every 50

`optimize` is the library entry (evaluate calls it for its baseline); `main` is the command
line (absl flags, the project convention of `fnst_jax.cli`).
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags

from fnst_jax import cli, image_io, vgg_weights
from fnst_jax.errors import UsageError, UserError
from fnst_jax.losses import (
    LossSpec,
    content_targets,
    perceptual_loss,
    style_grams,
    to_pixel_range,
)
from fnst_jax.vgg import PREPROCESSING, RELU_LAYERS, VGG19, layer_depth

OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise")
DEFAULT_ADAM_LR = 5.0  # pixels per step; the image lives on [0, 255]
# The loss terms reported (weighted, as in training's `terms`), in report order.
REPORTED_TERMS = ("content", "style", "tv", "total")

Grams = Mapping[str, jax.Array]
Carry = tuple[jax.Array, optax.OptState]  # (image, optimiser state) through the loop


class OptimizerDivergedError(UserError, FloatingPointError):
    """The loss became non-finite (Adam with too large a step, usually)."""


class ImageTooSmallError(UserError, ValueError):
    """An image smaller than the loss network's pooling allows."""


def make_solver(optimizer: str, learning_rate: float | None = None) -> optax.GradientTransformation:
    """L-BFGS with optax's default zoom line search (step chosen by the line search), or Adam."""
    if optimizer == "lbfgs":
        # learning_rate=None: the line search alone sets the step, as in the classic method.
        return optax.lbfgs(learning_rate=learning_rate)
    if optimizer == "adam":
        return optax.adam(DEFAULT_ADAM_LR if learning_rate is None else learning_rate)
    raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")


@functools.lru_cache(maxsize=32)
def _make_runner(
    spec: LossSpec, optimizer: str, learning_rate: float | None
) -> tuple[Callable, Callable, Callable]:
    """Jitted (init, run, terms) for one objective and solver; cached so that every image of
    an evaluation reuses the compiled step (jit re-specialises only on new shapes)."""
    solver = make_solver(optimizer, learning_rate)

    def objective(
        image: jax.Array, vgg: VGG19, content_features: jax.Array, target_grams: Grams
    ) -> jax.Array:
        return perceptual_loss(vgg, image, content_features, target_grams, spec)[0]

    def projected_objective(
        image: jax.Array, vgg: VGG19, content_features: jax.Array, target_grams: Grams
    ) -> jax.Array:
        return objective(to_pixel_range(image), vgg, content_features, target_grams)

    @jax.jit
    def run(
        image: jax.Array,
        opt_state: optax.OptState,
        num_steps: jax.Array,
        vgg: VGG19,
        content_features: jax.Array,
        target_grams: Grams,
    ) -> tuple[jax.Array, optax.OptState]:
        targets = {"vgg": vgg, "content_features": content_features, "target_grams": target_grams}
        if optimizer == "lbfgs":
            # The line search runs along the projected path x -> clip(x + t * d), so the value
            # it accepts is the loss of the projected point the step moves to. It already
            # evaluated value and gradient there; reuse them instead of recomputing (optax's
            # documented L-BFGS loop). The stored gradient is zero for the pixels that were
            # clipped; they sit on the bound, where the next evaluation sees them again.
            value_fn = functools.partial(projected_objective, **targets)
            value_and_grad = optax.value_and_grad_from_state(value_fn)

            def step(_: jax.Array, carry: Carry) -> Carry:
                x, state = carry
                value, grad = value_and_grad(x, state=state)
                updates, state = solver.update(
                    grad, state, x, value=value, grad=grad, value_fn=value_fn
                )
                return to_pixel_range(optax.apply_updates(x, updates)), state
        else:
            value_fn = functools.partial(objective, **targets)

            def step(_: jax.Array, carry: Carry) -> Carry:
                x, state = carry
                grad = jax.grad(value_fn)(x)  # at an in-range image: no clip in the way
                updates, state = solver.update(grad, state, x)
                return to_pixel_range(optax.apply_updates(x, updates)), state

        # A traced trip count: one compilation serves chunks of any length.
        return jax.lax.fori_loop(0, num_steps, step, (image, opt_state))

    @jax.jit
    def terms(
        image: jax.Array, vgg: VGG19, content_features: jax.Array, target_grams: Grams
    ) -> dict[str, jax.Array]:
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
    """The reported loss terms as Python floats."""
    return {name: float(terms[name]) for name in REPORTED_TERMS}


def optimize(
    vgg: VGG19,
    content_image: jax.Array | np.ndarray,
    target_grams: Grams,
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
    0 iterations returns it exactly; projected onto [0, 255] if it strays outside), "noise"
    from uniform noise on [0, 255] (`seed`). Every step is projected onto `PIXEL_RANGE`
    (see the module docstring).

    Returns the optimised image (1, H, W, 3) float32, inside [0, 255] (round when saving), and
    {iteration: {"content", "style", "tv", "total", "seconds"}} for every iteration in
    `record_at` and for `iterations` itself; "seconds" is wall time since the start,
    compilation included. Every `log_every` iterations, `log(iteration, terms)` is called.
    Raises OptimizerDivergedError when the loss turns non-finite.
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
        image = to_pixel_range(content)
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
            raise OptimizerDivergedError(
                f"{optimizer} diverged: loss is {terms['total']} after {done} iterations"
                + (" (try a smaller --lr)" if optimizer == "adam" else "")
            )
        if done in record_at:
            records[done] = terms
        if log is not None and log_every > 0 and done % log_every == 0:
            log(done, terms)
    return image, records


# --- image size --------------------------------------------------------------------------


def min_image_side(spec: LossSpec) -> int:
    """Smallest side the VGG can score: each max-pool before the deepest tap halves it."""
    deepest = RELU_LAYERS[max(layer_depth(layer) for layer in spec.vgg_layers)]
    pools = int(deepest[len("relu")]) - 1  # relu3_x sits after two pools
    return 2**pools


def check_image_size(path: str | Path, image: np.ndarray, spec: LossSpec) -> None:
    """Raise ImageTooSmallError naming `path` when the image is too small for the layers."""
    needed = min_image_side(spec)
    if min(image.shape[:2]) < needed:
        raise ImageTooSmallError(
            f"{path}: image is {image.shape[1]}x{image.shape[0]} px, too small for the loss "
            f"layers (needs at least {needed} px a side)"
        )


# --- command line -------------------------------------------------------------------------

PROG = "python -m fnst_jax.gatys"
USAGE = f"""{PROG} --style STYLE --content CONTENT --output OUTPUT [options]

Slow style transfer: optimise one image's pixels to minimise the perceptual loss
(Gatys et al. 2016), with the same loss as training.
"""


def define_flags(flag_values: flags.FlagValues) -> None:
    """The command line's flags, on `flag_values` (a fresh FlagValues per `main` call)."""
    defaults = LossSpec()
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("style", None, "style image", **fv)
    flags.DEFINE_string("content", None, "content image", **fv)
    flags.DEFINE_string("output", None, "output image (PNG/JPEG/WebP)", **fv)
    flags.DEFINE_boolean("overwrite", False, "replace an existing --output", **fv)
    flags.DEFINE_integer("iterations", 300, "optimiser steps", lower_bound=0, **fv)
    flags.DEFINE_enum("optimizer", "lbfgs", OPTIMIZERS, "optimiser", **fv)
    flags.DEFINE_enum("init", "content", INITS, "start from the content image or noise", **fv)
    flags.DEFINE_float(
        "lr",
        None,
        f"Adam step size in pixels ({DEFAULT_ADAM_LR}); L-BFGS picks its step by line search "
        "unless given",
        **fv,
    )
    flags.DEFINE_float("style-weight", defaults.style_weight, "style loss weight", **fv)
    flags.DEFINE_float("content-weight", defaults.content_weight, "content loss weight", **fv)
    flags.DEFINE_float("tv-weight", defaults.tv_weight, "total variation loss weight", **fv)
    cli.define_vgg_layers(
        "style-layers",
        list(defaults.style_layers),
        "comma-separated VGG taps",
        flag_values,
    )
    flags.DEFINE_string(
        "content-layer", defaults.content_layer, "VGG tap of the content loss", **fv
    )
    flags.DEFINE_string(
        "vgg-weights",
        "torchvision",
        "VGG19 weights: a .pth/.safetensors/.h5/.npz file, or 'torchvision'",
        **fv,
    )
    flags.DEFINE_enum(
        "vgg-preprocessing", None, PREPROCESSING, "override the weights' convention", **fv
    )
    flags.DEFINE_integer(
        "size",
        None,
        "resize the content image so its shorter side is SIZE px (default: as is)",
        lower_bound=1,
        **fv,
    )
    flags.DEFINE_integer(
        "style-size",
        None,
        "resize the style image so its shorter side is SIZE px (default: as is)",
        lower_bound=1,
        **fv,
    )
    flags.DEFINE_integer("log-every", 50, "print the loss every k steps (0: only at the end)", **fv)
    flags.DEFINE_integer("seed", 0, "noise init seed", **fv)
    flags.register_validator(
        "content-layer",
        lambda layer: layer in RELU_LAYERS,
        message=f"unknown VGG19 layer; expected one of {', '.join(RELU_LAYERS)}",
        flag_values=flag_values,
    )


def _print_terms(iteration: int, terms: Mapping[str, float]) -> None:
    print(
        f"iter {iteration:6d}  total {terms['total']:.5g}  content {terms['content']:.5g}  "
        f"style {terms['style']:.5g}  tv {terms['tv']:.5g}  ({terms['seconds']:.1f} s)",
        flush=True,
    )


def _check_output(output: Path, overwrite: bool) -> None:
    if output.exists() and not overwrite:
        raise UsageError(f"{output}: already exists (pass --overwrite to replace it)")
    if output.suffix.lower() not in image_io.EXTENSION_TO_FORMAT:
        raise UsageError(
            f"{output}: cannot write {output.suffix or 'extension-less'} images "
            f"(use {', '.join(sorted(image_io.EXTENSION_TO_FORMAT))})"
        )


def _run(flag_values: flags.FlagValues, positional: Sequence[str]) -> int:
    if positional:
        raise UsageError(f"unexpected arguments: {' '.join(positional)} (see --help)")
    cli.require(flag_values, "style", "content", "output")
    flag = flag_values.flag_values_dict()
    output = Path(flag["output"])
    _check_output(output, flag["overwrite"])
    spec = LossSpec(
        style_layers=tuple(flag["style-layers"]),
        content_layer=flag["content-layer"],
        style_weight=flag["style-weight"],
        content_weight=flag["content-weight"],
        tv_weight=flag["tv-weight"],
    )
    content = image_io.read_rgb_resized(flag["content"], flag["size"])
    style = image_io.read_rgb_resized(flag["style"], flag["style-size"])
    for path, image in ((flag["content"], content), (flag["style"], style)):
        check_image_size(path, image, spec)
    vgg = vgg_weights.load_vgg(flag["vgg-weights"], flag["vgg-preprocessing"])
    vgg.check_layers(spec.vgg_layers)  # weights too shallow for the loss layers: a UserError

    target_grams = style_grams(vgg, jnp.asarray(style, jnp.float32)[None], spec.style_layers)
    iterations, log_every = flag["iterations"], max(flag["log-every"], 0)
    print(
        f"{flag['optimizer']} from {flag['init']}, {iterations} iterations, "
        f"{content.shape[1]}x{content.shape[0]} px",
        flush=True,
    )
    try:
        image, records = optimize(
            vgg,
            content,
            target_grams,
            spec,
            iterations,
            flag["optimizer"],
            flag["init"],
            learning_rate=flag["lr"],
            log_every=log_every,
            log=_print_terms,
            seed=flag["seed"],
        )
    except OptimizerDivergedError as e:
        print(f"error: {e}", file=sys.stderr)
        return cli.EXIT_FAILED
    if log_every == 0 or iterations % log_every:
        _print_terms(iterations, records[iterations])
    image_io.write_image(output, image_io.to_uint8(image[0]))
    print(f"wrote {output}")
    return cli.EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; `argv` is sys.argv-style, program name first (default: sys.argv).
    Exit status 0, 1 when the optimiser diverged, 2 for a usage or input error."""
    return cli.run_command(define_flags, _run, sys.argv if argv is None else argv, USAGE)


if __name__ == "__main__":
    from fnst_jax import runtime

    # The VGG and the optimiser's step compile per image size: cache them across runs.
    runtime.enable_compilation_cache()
    sys.exit(main())
