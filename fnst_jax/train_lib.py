"""Training: state, the jit/pmap train step, the mesh, the loop, and what the user sees.

`train_and_evaluate(config, workdir)` is the whole job. Where things happen:
  data enters      `data.make_train_iterator`; in the loop each process's share becomes one
                   global, data-sharded array (`jax.make_array_from_process_local_data`)
  the step         `loss_and_grads` + `apply_gradients`, jitted by `make_jit_step` (default)
                   or `make_pmap_step`
  state is saved   `fnst_jax.checkpoint` (orbax); the model is exported by `export_model`
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fnst_jax import checkpoint, data, export, image_io
from fnst_jax.losses import LossSpec, content_targets, perceptual_loss, style_grams, tv_loss
from fnst_jax.train_monitor import Monitor
from fnst_jax.transformer_net import TransformerNet, stylize_padded
from fnst_jax.vgg import VGG19
from fnst_jax.vgg_weights import load_vgg

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Config keys that may change between a run and its resumption; any other difference means
# the workdir belongs to another experiment.
RESUMABLE_KEYS = (
    "train.steps",
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
    "sample_every",
    "eval_every",
    "data.worker_count",
    "parallel",
)
CONFIG_FILE = "config.json"
VALIDATION_FILE = "validation_images.txt"


class TrainingError(RuntimeError):
    """A run that cannot start or go on; the message says why and what to do."""


# ----------------------------------------------------------------------------- the step


def loss_and_grads(params, batch, vgg: VGG19, target_grams, *, graphdef, spec, pad, dtype):
    """Loss terms and gradient w.r.t. the TransformerNet parameters for one (local) batch."""

    def loss_fn(params):
        model = nnx.merge(graphdef, params)
        stylized = stylize_padded(model, batch, pad)
        # The content pass stops at the content layer.
        content = content_targets(vgg, batch, spec, dtype)
        return perceptual_loss(vgg, stylized, content, target_grams, spec, dtype)

    (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return terms, grads


def apply_gradients(state: dict, terms: dict, grads, tx: optax.GradientTransformation):
    """Adam update, skipped (params and optimizer state unchanged) when anything is non-finite."""
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(terms["total"]) & jnp.isfinite(grad_norm)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)

    def keep_if_finite(new, old):
        return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)

    new_state = {
        "params": keep_if_finite(params, state["params"]),
        "opt_state": keep_if_finite(opt_state, state["opt_state"]),
        "step": state["step"] + 1,
        "nonfinite_run": jnp.where(finite, 0, state["nonfinite_run"] + 1),
        "nonfinite_total": state["nonfinite_total"] + (~finite).astype(jnp.int32),
        "rng": state["rng"],
    }
    metrics = dict(terms, grad_norm=grad_norm)
    return new_state, metrics


def make_mesh() -> Mesh:
    return Mesh(np.array(jax.devices()), ("data",))


def make_jit_step(mesh: Mesh, tx, **static) -> Callable:
    """The default data-parallel step: batch sharded over the mesh's `data` axis, state
    replicated; XLA inserts the gradient all-reduce. The state is donated."""
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))

    def step(state, batch, vgg, target_grams):
        terms, grads = loss_and_grads(state["params"], batch, vgg, target_grams, **static)
        return apply_gradients(state, terms, grads, tx)

    return jax.jit(
        step,
        in_shardings=(replicated, batch_sharding, replicated, replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )


def make_pmap_step(tx, **static) -> Callable:
    """The same step under jax.pmap: per-device loss, gradients averaged with lax.pmean."""

    def step(state, batch, vgg, target_grams):
        terms, grads = loss_and_grads(state["params"], batch, vgg, target_grams, **static)
        grads = jax.lax.pmean(grads, "data")
        terms = jax.lax.pmean(terms, "data")
        return apply_gradients(state, terms, grads, tx)

    return jax.pmap(step, axis_name="data", donate_argnums=0)


def make_eval_fn(**static) -> Callable:
    """Loss terms and stylized images of a fixed validation batch (jitted)."""

    @jax.jit
    def evaluate(params, images, vgg, target_grams):
        model = nnx.merge(static["graphdef"], params)
        stylized = stylize_padded(model, images, static["pad"])
        content = content_targets(vgg, images, static["spec"], static["dtype"])
        _, terms = perceptual_loss(
            vgg, stylized, content, target_grams, static["spec"], static["dtype"]
        )
        return terms, stylized

    return evaluate


# ----------------------------------------------------------------------------- setup


def loss_spec_from_config(loss_config: ml_collections.ConfigDict) -> LossSpec:
    return LossSpec(
        style_layers=tuple(loss_config.style_layers),
        content_layer=loss_config.content_layer,
        style_weight=float(loss_config.style_weight),
        content_weight=float(loss_config.content_weight),
        tv_weight=float(loss_config.tv_weight),
        style_layer_weights=(
            tuple(float(w) for w in loss_config.style_layer_weights)
            if loss_config.style_layer_weights
            else None
        ),
    )


def balance_weights(spec: LossSpec, raw_terms: dict[str, float]) -> LossSpec:
    """The article's human-sized weights: the configured weights become multipliers of the
    content/style and content/TV ratios measured on the first batch (style 1.0: the style
    loss starts equal to the content loss)."""
    content = spec.content_weight * raw_terms["raw_content"]

    def ratio(raw: float) -> float:
        return content / raw if raw > 0 and math.isfinite(raw) else 1.0

    return spec.with_weights(
        style_weight=spec.style_weight * ratio(raw_terms["raw_style"]),
        tv_weight=spec.tv_weight * ratio(raw_terms["raw_tv"]),
    )


OPTIMIZERS = {"adam": optax.adam, "sgd": optax.sgd}


def make_optimizer(train_config) -> optax.GradientTransformation:
    """Adam (the paper's); plain SGD is there for numerics checks, where Adam's
    sign-like first steps would magnify float rounding of near-zero gradients."""
    if train_config.optimizer not in OPTIMIZERS:
        raise TrainingError(
            f"train.optimizer must be one of {sorted(OPTIMIZERS)}, not {train_config.optimizer!r}"
        )
    return OPTIMIZERS[train_config.optimizer](train_config.lr)


def init_state(config, rng: jax.Array) -> tuple[nnx.GraphDef, dict, optax.GradientTransformation]:
    model_rng, state_rng = jax.random.split(rng)
    seed = int(jax.random.randint(model_rng, (), 0, 2**31 - 1))
    model = TransformerNet(dtype=DTYPES[config.dtype], rngs=nnx.Rngs(seed))
    graphdef, params = nnx.split(model, nnx.Param)
    params = jax.tree.map(jnp.asarray, nnx.to_pure_dict(params))
    tx = make_optimizer(config.train)
    return graphdef, new_state(params, tx, state_rng), tx


def new_state(params, tx: optax.GradientTransformation, rng: jax.Array) -> dict:
    """The train state pytree at step 0 (what checkpoints hold)."""
    return {
        "params": params,
        "opt_state": tx.init(params),
        "step": jnp.zeros((), jnp.int32),
        "nonfinite_run": jnp.zeros((), jnp.int32),  # non-finite steps in a row
        "nonfinite_total": jnp.zeros((), jnp.int32),
        "rng": rng,
    }


def merge_params(graphdef, params) -> TransformerNet:
    return nnx.merge(graphdef, params)


def check_workdir_config(workdir: Path, config: ml_collections.ConfigDict) -> None:
    """Refuse a workdir made by a run with an incompatible config; record the config."""
    path = workdir / CONFIG_FILE
    current = _flatten(config.to_dict())
    if path.exists():
        previous = _flatten(json.loads(path.read_text()))
        differing = sorted(
            key
            for key in set(previous) | set(current)
            if key not in RESUMABLE_KEYS and previous.get(key) != current.get(key)
        )
        if differing:
            details = "; ".join(
                f"{k}: {previous.get(k, '<unset>')!r} -> {current.get(k, '<unset>')!r}"
                for k in differing[:6]
            )
            raise TrainingError(
                f"{workdir} holds a run with a different config ({details}). Resume it with "
                f"its own config, or train into a new --workdir."
            )
    if jax.process_index() == 0:
        _write_atomic(path, json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str))


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_style_target(config) -> np.ndarray:
    if not config.style_image:
        raise TrainingError("no style image: pass --config.style_image=path/to/style.jpg")
    try:
        return image_io.read_rgb_resized(config.style_image, config.style_size)[None]
    except image_io.ImageReadError as e:
        raise TrainingError(f"style image: {e}") from e


# ----------------------------------------------------------------------------- the loop


class _StopRequest:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint and exits cleanly."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self.signal = signum
        logging.warning("signal %d received: saving a checkpoint, then stopping", signum)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Train (or resume) a style model in `workdir`; returns the last metrics."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    check_workdir_config(workdir, config)
    if config.dtype not in DTYPES:
        raise TrainingError(f"dtype must be one of {sorted(DTYPES)}, not {config.dtype!r}")
    if config.parallel not in ("jit", "pmap"):
        raise TrainingError(f"parallel must be 'jit' or 'pmap', not {config.parallel!r}")
    dtype = DTYPES[config.dtype]
    batch_size = config.train.batch_size
    if batch_size % jax.device_count():
        raise TrainingError(
            f"train.batch_size={batch_size} must be divisible by the {jax.device_count()} devices"
        )

    vgg = load_vgg(config.vgg.weights, config.vgg.preprocessing)
    spec = loss_spec_from_config(config.loss)
    vgg.check_layers(spec.vgg_layers)
    style_image = load_style_target(config)
    target_grams = jax.jit(style_grams, static_argnums=(2, 3))(
        vgg, style_image, spec.style_layers, dtype
    )

    train_iter = data.make_train_iterator(
        config.data,
        image_size=config.train.image_size,
        global_batch_size=batch_size,
        seed=config.train.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    validation = data.load_validation_images(
        config.data,
        image_size=config.train.image_size,
        count=config.num_validation_images,
        seed=config.train.seed,
    )

    if jax.process_index() == 0:  # what evaluate should be run on: images training never saw
        held_out = data.validation_descriptions(config.data, image_size=config.train.image_size)
        _write_atomic(workdir / VALIDATION_FILE, "".join(f"{name}\n" for name in held_out))

    mesh = make_mesh()
    replicated = NamedSharding(mesh, P())
    graphdef, state, tx = init_state(config, jax.random.PRNGKey(config.train.seed))
    state = jax.device_put(state, replicated)
    vgg, target_grams = jax.device_put((vgg, target_grams), replicated)

    manager = checkpoint.make_manager(workdir, config.keep_checkpoints)
    restored = checkpoint.restore_latest(manager, checkpoint.abstract_like(state))
    if restored is not None:
        start_step, state, data_state, run_info = restored
        train_iter.set_state(data_state)
        spec = spec.with_weights(**run_info["loss_weights"])
        logging.info("resumed from step %d in %s", start_step, workdir)
    else:
        start_step = 0
        if config.loss.auto_balance:
            spec = _auto_balance(spec, state, train_iter, vgg, target_grams, graphdef, config)
    logging.info("loss weights: %s", _weights_of(spec))

    static = dict(graphdef=graphdef, spec=spec, pad=config.train.pad, dtype=dtype)
    evaluate = make_eval_fn(**static)
    monitor = Monitor(workdir, config, start_step, enabled=jax.process_index() == 0)

    def save_checkpoint(step: int, force: bool = False) -> None:
        run_info = {
            "loss_weights": _weights_of(spec),
            "model_metadata": model_metadata(config, spec, vgg.preprocessing, step),
        }
        checkpoint.save(manager, step, state, train_iter.get_state(), run_info, force=force)
        export_model(workdir, graphdef, state["params"], config, spec, vgg.preprocessing, step)

    if config.parallel == "pmap":
        step_fn = make_pmap_step(tx, **static)
        local_devices = jax.local_device_count()
        device_state = _replicate_for_pmap(state)
        pmap_constants = _replicate_for_pmap((vgg, target_grams))
    else:
        step_fn = make_jit_step(mesh, tx, **static)
        batch_sharding = NamedSharding(mesh, P("data"))
        device_state = state

    metrics: dict[str, float] = {}
    step = start_step
    if step == 0:  # where validation starts from, for the chart and the before/after ratio
        terms, _ = evaluate(state["params"], validation, vgg, target_grams)
        monitor.log_validation(0, jax.device_get(terms))
    with _StopRequest() as stop:
        try:
            while step < config.train.steps:
                local_batch = next(train_iter)
                if config.parallel == "pmap":
                    per_device = local_batch.reshape(local_devices, -1, *local_batch.shape[1:])
                    device_state, step_metrics = step_fn(device_state, per_device, *pmap_constants)
                else:
                    batch = jax.make_array_from_process_local_data(batch_sharding, local_batch)
                    device_state, step_metrics = step_fn(device_state, batch, vgg, target_grams)
                step += 1
                monitor.tick(batch_size)
                last = step == config.train.steps
                if step % config.log_every == 0 or last or stop.signal:
                    metrics, nonfinite_run = _read_metrics(step_metrics, device_state, config)
                    monitor.log_train(step, metrics, train_iter.bad_file_count)
                    if nonfinite_run >= config.train.max_nonfinite:
                        raise TrainingError(
                            f"{nonfinite_run} non-finite losses in a row at step {step}: "
                            f"stopping; the last good checkpoint in {workdir} is intact. "
                            f"Lower train.lr or the loss weights."
                        )
                if config.parallel == "pmap" and (
                    step % config.checkpoint_every == 0
                    or step % config.eval_every == 0
                    or step % config.sample_every == 0
                    or last
                    or stop.signal
                ):
                    state = _unreplicate_from_pmap(device_state, replicated)
                elif config.parallel == "jit":
                    state = device_state
                if step % config.eval_every == 0 or step % config.sample_every == 0 or last:
                    terms, stylized = evaluate(state["params"], validation, vgg, target_grams)
                    if step % config.eval_every == 0 or last:
                        monitor.log_validation(step, jax.device_get(terms))
                    if step % config.sample_every == 0 or last:
                        monitor.save_samples(step, validation, np.asarray(stylized))
                if step % config.checkpoint_every == 0 or last or stop.signal:
                    save_checkpoint(step, force=bool(stop.signal))
                if stop.signal:
                    logging.warning("stopped at step %d; rerun the same command to resume", step)
                    break
        finally:
            manager.wait_until_finished()
            manager.close()
            monitor.close()
            train_iter.close()
    if stop.signal:
        sys.exit(128 + stop.signal)
    return metrics


def _auto_balance(spec, state, train_iter, vgg, target_grams, graphdef, config) -> LossSpec:
    """Measure the raw loss terms of the untrained network on the first batch."""
    saved = train_iter.get_state()
    first = next(train_iter)
    train_iter.set_state(saved)  # the first batch is still trained on
    probe = make_eval_fn(
        graphdef=graphdef, spec=spec, pad=config.train.pad, dtype=DTYPES[config.dtype]
    )
    terms, _ = probe(state["params"], jnp.asarray(first), vgg, target_grams)
    raw = {k: float(v) for k, v in jax.device_get(terms).items() if k.startswith("raw_")}
    # The untrained network's output is nearly flat, so its TV says nothing about the TV
    # of a stylized image; that of the natural content images is the useful yardstick.
    raw["raw_tv"] = float(tv_loss(jnp.asarray(first)))
    if jax.process_count() > 1:  # every process must use the same weights
        from jax.experimental import multihost_utils

        raw = {
            k: float(v)
            for k, v in zip(
                raw,
                np.mean(multihost_utils.process_allgather(np.array(list(raw.values()))), 0),
                strict=True,
            )
        }
    balanced = balance_weights(spec, raw)
    logging.info(
        "auto-balance on the first batch: raw content %.4g, style %.4g, tv %.4g",
        raw["raw_content"],
        raw["raw_style"],
        raw["raw_tv"],
    )
    return balanced


def _weights_of(spec: LossSpec) -> dict[str, float]:
    return {
        "style_weight": spec.style_weight,
        "content_weight": spec.content_weight,
        "tv_weight": spec.tv_weight,
    }


def _read_metrics(step_metrics, device_state, config) -> tuple[dict[str, float], int]:
    if config.parallel == "pmap":
        step_metrics = jax.tree.map(_first_replica, step_metrics)
        nonfinite = _first_replica(device_state["nonfinite_run"])
    else:
        nonfinite = device_state["nonfinite_run"]
    metrics = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
    return metrics, int(jax.device_get(nonfinite))


def _replicate_for_pmap(tree):
    """A leading axis of local-device size, one copy per device (what pmap expects)."""
    n = jax.local_device_count()
    return jax.tree.map(
        lambda x: np.broadcast_to(np.asarray(jax.device_get(_local(x))), (n, *np.shape(x))), tree
    )


def _first_replica(x: jax.Array) -> np.ndarray:
    """This process's first copy of a pmap-replicated value (without the device axis)."""
    return np.asarray(x.addressable_data(0)).reshape(x.shape[1:])


def _unreplicate_from_pmap(tree, replicated: NamedSharding):
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(replicated, _first_replica(x)), tree
    )


def _local(x):
    return x.addressable_data(0) if isinstance(x, jax.Array) else x


def export_model(
    workdir: Path, graphdef, params, config, spec: LossSpec, vgg_preprocessing: str, step: int
) -> None:
    """Write WORKDIR/model.npz (process 0): what stylize.py and evaluate load."""
    if jax.process_index() != 0:
        return
    model = merge_params(graphdef, jax.tree.map(lambda x: np.asarray(_local(x)), params))
    metadata = model_metadata(config, spec, vgg_preprocessing, step)
    export.save_model(workdir / export.MODEL_FILENAME, model, metadata)


def model_metadata(config, spec: LossSpec, vgg_preprocessing: str, step: int) -> dict:
    """What an exported model records about its training (JSON-serialisable)."""
    return {
        "pad": int(config.train.pad),
        "image_size": int(config.train.image_size),
        "style_image": str(Path(config.style_image).absolute()),
        "style_size": config.style_size,
        "loss": dataclasses.asdict(spec),
        "vgg": {"weights": config.vgg.weights, "preprocessing": vgg_preprocessing},
        "step": int(step),
        "config": json.loads(json.dumps(config.to_dict(), default=str)),
    }
