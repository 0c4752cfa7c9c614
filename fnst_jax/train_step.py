"""The train step: state, loss and gradients, the update, and its jit/pmap forms. No I/O.

`TrainState` is everything a step updates and what checkpoints hold (`TrainState.to_dict`).
`stylize_and_score` runs the TransformerNet (with the train pad,
`transformer_net.stylize_padded`) and the VGG perceptual loss (`losses`) on one batch, plus
the stability term (`stability`) when its weight is set, whose random perturbations are
drawn from (seed, step) so a resumed run repeats them; `loss_and_grads` differentiates
it; `apply_gradients` applies the optimizer update unless anything is non-finite.
`make_jit_step` (the default: a device mesh, batch sharded on `data`) and `make_pmap_step`
wrap them for data parallelism; `make_eval_fn` is the validation forward.

Many styles in one model (`StepConfig.num_styles` > 1, conditional instance norm): the
target Grams hold one row per style, (N, C, C) per layer, and each step trains one style on
the whole batch (`step_style`: every style once per N steps, in an order drawn from (seed,
step)). One style per step keeps each step's objective the single-style one, with that
style's Grams and balanced weight (`LossSpec.style_weights`), the same on every device.
Adding styles to a trained model trains the styles from `first_style` on (Grams and weights
for those only); with `only_norm_params` every other parameter (the convolutions and the
earlier styles' norm rows) gets no update at all (`trainable_mask`), so the earlier styles'
outputs stay bit-identical.

This module imports no data pipeline, checkpointing or monitoring code: the benchmark
(`fnst_jax.bench`) runs the exact training step through it alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fnst_jax import stability
from fnst_jax.errors import UserError
from fnst_jax.losses import LossSpec, content_targets, perceptual_loss, to_pixel_range
from fnst_jax.transformer_net import TransformerNet, stylize_padded
from fnst_jax.vgg import VGG19

Params = dict[str, Any]
Terms = dict[str, jax.Array]

OPTIMIZERS = {"adam": optax.adam, "sgd": optax.sgd}


class TrainingError(UserError, RuntimeError):
    """A run that cannot start or go on; the message says why and what to do."""


@struct.dataclass
class TrainState:
    """Everything a step updates, and what a checkpoint holds (a pytree: jit and pmap take
    it whole, and the step donates it)."""

    params: Params  # the TransformerNet's, as `nnx.to_pure_dict` nests them
    opt_state: optax.OptState
    step: jax.Array  # int32: steps taken, skipped non-finite ones included
    nonfinite_run: jax.Array  # int32: non-finite steps in a row, up to this one
    nonfinite_total: jax.Array  # int32: non-finite steps in the whole run

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's layout: one entry per field, under the field's name."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, tree: dict[str, Any]) -> TrainState:
        """The state a checkpoint's `to_dict` layout holds."""
        return cls(**tree)


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """What the step is compiled for (static: a change means a new compilation)."""

    graphdef: nnx.GraphDef  # the TransformerNet's structure; parameters travel separately
    spec: LossSpec  # loss layers and (balanced) weights
    pad: int  # reflection pad around each image, cropped off after the network
    dtype: Any  # compute dtype: jnp.float32 or jnp.bfloat16
    seed: int = 0  # the stability term's perturbations derive from (seed, step)
    num_styles: int = 1  # > 1: a multi-style model; target Grams (N, C, C) per layer
    first_style: int = 0  # the first style trained (> 0: styles added to a trained model)
    only_norm_params: bool = False  # update the trained styles' norm rows only

    @property
    def trained_styles(self) -> int:
        """How many styles the run trains (the rows of the target Grams)."""
        return self.num_styles - self.first_style


def step_rng(seed: int, step: jax.Array) -> jax.Array:
    """The key of one step's random perturbations: a function of the seed and the step alone,
    so a resumed run draws exactly what the uninterrupted run drew."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), step)


def validation_rng(seed: int) -> jax.Array:
    """One fixed key for validation: every validation scores the same perturbations."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), 2**31 - 1)


def step_style(seed: int, step: jax.Array, num_styles: int) -> jax.Array:
    """The style a multi-style run trains at `step`: each block of `num_styles` steps visits
    every style once, in an order drawn from (seed, block): balanced, and a function of the
    step alone, so a resumed run trains the same styles."""
    if num_styles == 1:
        return jnp.zeros((), jnp.int32)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 2**31 - 2)
    order = jax.random.permutation(jax.random.fold_in(key, step // num_styles), num_styles)
    return order[step % num_styles].astype(jnp.int32)


def select_style(
    target_grams: dict[str, jax.Array], config: StepConfig, style: jax.Array | None, batch: int
) -> tuple[dict[str, jax.Array], jax.Array | None, jax.Array | None]:
    """(target Grams, style weight, model style input) for one style index of a multi-style
    model; a one-style model's targets as they are and no override."""
    if config.num_styles == 1:
        return target_grams, None, None
    if style is None:
        raise TrainingError("a multi-style step needs the index of the style it trains")
    grams = {layer: gram[style][None] for layer, gram in target_grams.items()}
    weight = jnp.asarray(config.spec.style_weights, jnp.float32)[style]
    one_hot = jax.nn.one_hot(config.first_style + style, config.num_styles)
    return grams, weight, jnp.broadcast_to(one_hot, (batch, config.num_styles))


def trainable_mask(params: Params, config: StepConfig) -> Params | None:
    """1 where `only_norm_params` lets a parameter move, 0 elsewhere (None: everything
    trains): the norm rows of the trained styles; not the convolutions, not earlier rows."""
    if not config.only_norm_params:
        return None

    def mask(path: tuple, value: jax.Array) -> jax.Array:
        in_norm = any(getattr(key, "key", None) == "norm" for key in path)
        if not in_norm:
            return jnp.zeros_like(value)
        if value.ndim == 1:  # a one-style model: its only row
            return jnp.ones_like(value)
        rows = jnp.arange(value.shape[0])[:, None] >= config.first_style
        return jnp.broadcast_to(rows, value.shape).astype(value.dtype)

    return jax.tree_util.tree_map_with_path(mask, params)


def make_optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
    """Adam (the paper's); plain SGD is there for numerics checks, where Adam's sign-like
    first steps would magnify float rounding of near-zero gradients."""
    if name not in OPTIMIZERS:
        raise TrainingError(f"train.optimizer must be one of {sorted(OPTIMIZERS)}, not {name!r}")
    return OPTIMIZERS[name](learning_rate)


def init_model(
    rng: jax.Array, dtype: Any, *, num_styles: int = 1, output_bias: float | None = None
) -> tuple[nnx.GraphDef, Params]:
    """A freshly initialised TransformerNet, split into its graphdef and plain parameters.
    The same `rng` gives the same parameters whatever the dtype; the convolutions do not
    depend on `num_styles` either. output_bias: the last convolution's bias starts at this
    pixel value (`config.train.output_bias`); None keeps torch's default init, with which
    the network starts out near black."""
    # The first of two keys: a seed keeps giving the parameters its recorded runs started from.
    model_rng, _ = jax.random.split(rng)
    seed = int(jax.random.randint(model_rng, (), 0, 2**31 - 1))
    model = TransformerNet(num_styles=num_styles, dtype=dtype, rngs=nnx.Rngs(seed))
    graphdef, params = nnx.split(model, nnx.Param)
    params = jax.tree.map(jnp.asarray, nnx.to_pure_dict(params))
    if output_bias is not None:
        bias = params["out"]["conv"]["bias"]
        params["out"]["conv"]["bias"] = jnp.full_like(bias, output_bias)
    return graphdef, params


def new_state(params: Params, tx: optax.GradientTransformation) -> TrainState:
    """The train state at step 0 (each counter its own buffer: the step donates them all)."""
    return TrainState(
        params=params,
        opt_state=tx.init(params),
        step=jnp.zeros((), jnp.int32),
        nonfinite_run=jnp.zeros((), jnp.int32),
        nonfinite_total=jnp.zeros((), jnp.int32),
    )


def init_state(
    rng: jax.Array,
    dtype: Any,
    tx: optax.GradientTransformation,
    *,
    num_styles: int = 1,
    output_bias: float | None = None,
) -> tuple[nnx.GraphDef, TrainState]:
    """The graphdef and the step-0 train state of a new run seeded by `rng` (`init_model`)."""
    graphdef, params = init_model(rng, dtype, num_styles=num_styles, output_bias=output_bias)
    return graphdef, new_state(params, tx)


def stylize_and_score(
    params: Params,
    images: jax.Array,
    vgg: VGG19,
    target_grams: dict[str, jax.Array],
    config: StepConfig,
    rng: jax.Array,
    *,
    clip_to_pixels: bool = False,
    shard: tuple[jax.Array | int, int] | None = None,
    style: jax.Array | None = None,
) -> tuple[jax.Array, Terms, jax.Array]:
    """(total loss, terms, stylized images) of one batch: the perceptual loss of the output
    and, when `spec.stability_weight` is set, the stability term (`fnst_jax.stability`), whose
    perturbed copies run through the network in the same call as the images. `shard`
    (first row, global batch size): `images` are those rows of a larger batch (pmap).
    `style`: the style index a multi-style model is scored on (`select_style`)."""
    model = nnx.merge(config.graphdef, params)
    grams, style_weight, style_input = select_style(target_grams, config, style, images.shape[0])
    weight = config.spec.stability_weight
    if weight:
        perturbed, transform = stability.perturb(rng, images, *(shard or (0, None)))
        both_style = None if style_input is None else jnp.concatenate([style_input] * 2)
        both = stylize_padded(model, jnp.concatenate([images, perturbed]), config.pad, both_style)
        stylized, stylized_perturbed = jnp.split(both, 2)
    else:
        stylized = stylize_padded(model, images, config.pad, style_input)
    if clip_to_pixels:
        stylized = to_pixel_range(stylized)
    # The content pass stops at the content layer.
    content = content_targets(vgg, images, config.spec, config.dtype)
    total, terms = perceptual_loss(
        vgg, stylized, content, grams, config.spec, config.dtype, style_weight=style_weight
    )
    if weight:
        if clip_to_pixels:
            stylized_perturbed = to_pixel_range(stylized_perturbed)
        raw = stability.stability_loss(stylized, stylized_perturbed, transform)
        terms = dict(terms, raw_stability=raw, stability=weight * raw)
        total = terms["total"] = total + terms["stability"]
    return total, terms, stylized


def loss_and_grads(
    params: Params,
    batch: jax.Array,
    vgg: VGG19,
    target_grams: dict[str, jax.Array],
    config: StepConfig,
    *,
    rng: jax.Array | None = None,
    shard: tuple[jax.Array | int, int] | None = None,
    style: jax.Array | None = None,
) -> tuple[Terms, Params]:
    """Loss terms and gradient w.r.t. the TransformerNet parameters for one (local) batch.
    `rng` draws the stability term's perturbations (needed only when it is on); `shard` and
    `style` as in `stylize_and_score`."""

    def loss_fn(params: Params) -> tuple[jax.Array, Terms]:
        total, terms, _ = stylize_and_score(
            params, batch, vgg, target_grams, config, rng, shard=shard, style=style
        )
        return total, terms

    (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return terms, grads


def apply_gradients(
    state: TrainState,
    terms: Terms,
    grads: Params,
    tx: optax.GradientTransformation,
    *,
    mask: Params | None = None,
) -> tuple[TrainState, Terms]:
    """The optimizer update, skipped (parameters and optimizer state unchanged) when the loss
    or the gradient is non-finite; counts such steps. `mask` (`trainable_mask`): gradients
    and updates are multiplied by it, so masked parameters do not move at all."""
    if mask is not None:
        grads = jax.tree.map(jnp.multiply, grads, mask)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(terms["total"]) & jnp.isfinite(grad_norm)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    if mask is not None:
        updates = jax.tree.map(jnp.multiply, updates, mask)
    params = optax.apply_updates(state.params, updates)

    def keep_if_finite(new: Any, old: Any) -> Any:
        return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)

    new_state = TrainState(
        params=keep_if_finite(params, state.params),
        opt_state=keep_if_finite(opt_state, state.opt_state),
        step=state.step + 1,
        nonfinite_run=jnp.where(finite, 0, state.nonfinite_run + 1),
        nonfinite_total=state.nonfinite_total + (~finite).astype(jnp.int32),
    )
    return new_state, dict(terms, grad_norm=grad_norm)


def make_mesh() -> Mesh:
    """A one-axis (`data`) mesh over every device of every process."""
    return Mesh(np.array(jax.devices()), ("data",))


StepFn = Callable[[TrainState, jax.Array, VGG19, dict], tuple[TrainState, Terms]]


def make_jit_step(mesh: Mesh, tx: optax.GradientTransformation, config: StepConfig) -> StepFn:
    """The default data-parallel step: batch sharded over the mesh's `data` axis, state
    replicated; XLA inserts the gradient all-reduce. The state is donated."""
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))

    def step(
        state: TrainState, batch: jax.Array, vgg: VGG19, target_grams: dict
    ) -> tuple[TrainState, Terms]:
        rng = step_rng(config.seed, state.step)
        style = step_style(config.seed, state.step, config.trained_styles)
        terms, grads = loss_and_grads(
            state.params, batch, vgg, target_grams, config, rng=rng, style=style
        )
        mask = trainable_mask(state.params, config)
        return apply_gradients(state, terms, grads, tx, mask=mask)

    return jax.jit(
        step,
        in_shardings=(replicated, batch_sharding, replicated, replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )


def make_pmap_step(tx: optax.GradientTransformation, config: StepConfig) -> StepFn:
    """The same step under jax.pmap: per-device loss, gradients averaged with lax.pmean."""

    def step(
        state: TrainState, batch: jax.Array, vgg: VGG19, target_grams: dict
    ) -> tuple[TrainState, Terms]:
        # Each device takes its rows of the perturbations drawn for the global batch.
        rng = step_rng(config.seed, state.step)
        count = batch.shape[0]
        shard = (jax.lax.axis_index("data") * count, count * jax.lax.axis_size("data"))
        style = step_style(config.seed, state.step, config.trained_styles)
        terms, grads = loss_and_grads(
            state.params, batch, vgg, target_grams, config, rng=rng, shard=shard, style=style
        )
        grads = jax.lax.pmean(grads, "data")
        terms = jax.lax.pmean(terms, "data")
        mask = trainable_mask(state.params, config)
        return apply_gradients(state, terms, grads, tx, mask=mask)

    return jax.pmap(step, axis_name="data", donate_argnums=0)


EvalFn = Callable[..., tuple[Terms, jax.Array]]


def make_eval_fn(config: StepConfig, *, clip_to_pixels: bool = False) -> EvalFn:
    """Loss terms and stylized images of a batch with the given parameters (jitted).

    clip_to_pixels=False: the training objective itself (auto-balance measures it).
    True: the output clipped to `losses.PIXEL_RANGE` first, as stylize.py writes it and
    evaluate scores it: what validation reports.
    A multi-style model is scored on one style per call: `style`, an index (traced: one
    compilation serves every style).
    """

    @jax.jit
    def evaluate(
        params: Params,
        images: jax.Array,
        vgg: VGG19,
        target_grams: dict,
        style: jax.Array | int = 0,
    ) -> tuple[Terms, jax.Array]:
        rng = validation_rng(config.seed)
        _, terms, stylized = stylize_and_score(
            params,
            images,
            vgg,
            target_grams,
            config,
            rng,
            clip_to_pixels=clip_to_pixels,
            style=jnp.asarray(style, jnp.int32),
        )
        return terms, stylized

    return evaluate


StylizeFn = Callable[..., jax.Array]


def make_stylize_fn(config: StepConfig) -> StylizeFn:
    """The network's outputs alone, clipped to `losses.PIXEL_RANGE` (jitted): (params, images,
    target_grams, style) -> stylized, for views that need no loss (validation at the users'
    size). `style` as `make_eval_fn`'s; `target_grams` only says how many styles there are."""

    @jax.jit
    def stylize(
        params: Params, images: jax.Array, target_grams: dict, style: jax.Array | int = 0
    ) -> jax.Array:
        model = nnx.merge(config.graphdef, params)
        style_index = jnp.asarray(style, jnp.int32)
        _, _, style_input = select_style(target_grams, config, style_index, images.shape[0])
        return to_pixel_range(stylize_padded(model, images, config.pad, style_input))

    return stylize
