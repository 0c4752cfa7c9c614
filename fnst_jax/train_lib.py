"""Training: `train_and_evaluate(config, workdir)` is the whole job; `_set_up`, then `_loop`.

Where things happen:
  data enters      `_open_training_data` (`data.make_train_iterator`); in the loop
                   `Placement.batch` turns each process's share into what the step takes
  the step         `fnst_jax.train_step` (`loss_and_grads` + `apply_gradients` on a typed
                   `TrainState`), jitted on a device mesh (`parallel="jit"`, the default) or
                   pmapped; `fnst_jax.placement` is the one place where the two differ
  state is saved   `fnst_jax.train_checkpoint.Checkpointer.save`: the orbax checkpoint
                   (`fnst_jax.checkpoint`) and WORKDIR/model.npz; after a validation,
                   `keep_if_best` (WORKDIR/best.npz); a rerun resumes from the latest
                   checkpoint (`train_checkpoint.restore_latest`)
  stopping         `fnst_jax.preemption.StopRequest`: SIGINT/SIGTERM, agreed by every
                   process on one step
  validation       `fnst_jax.validation`: the fixed batch, WORKDIR/validation_images.txt,
                   its loss terms and quality figures
The styles and their target Grams are `fnst_jax.style_targets`; the loss weights, balanced on
the first batch, `fnst_jax.loss_weights`. What the user sees (progress, metrics, TensorBoard,
chart, samples) is `fnst_jax.train_monitor`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from jax.typing import DTypeLike

from fnst_jax import checkpoint, data, quality
from fnst_jax.base_model import BaseModel
from fnst_jax.loss_weights import auto_balance, loss_spec_from_config, weights_of
from fnst_jax.losses import LossSpec
from fnst_jax.placement import Placement, make_placement
from fnst_jax.preemption import StopRequest
from fnst_jax.runtime import dtype_from_name
from fnst_jax.style_targets import Styles
from fnst_jax.train_checkpoint import Checkpointer, restore_latest
from fnst_jax.train_monitor import Monitor
from fnst_jax.train_step import (
    StepConfig,
    StepFn,
    Terms,
    TrainingError,
    TrainState,
    init_state,
    make_eval_fn,
    make_optimizer,
    make_stylize_fn,
)
from fnst_jax.validation import SizedView, Validation, prepare_validation
from fnst_jax.vgg import VGG19
from fnst_jax.vgg_weights import load_vgg


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Train (or resume) a style model in `workdir`; returns the last logged train metrics.

    SIGINT/SIGTERM (from the start, so that one during setup is not lost) stop the run after
    a step every process agrees on, with a checkpoint, then exit with status 128 + signal.
    """
    with StopRequest() as stop, contextlib.ExitStack() as resources:
        run = _set_up(config, workdir, stop=stop, resources=resources)
        metrics = _loop(run, stop=stop)
    if stop.agreed:
        sys.exit(128 + stop.agreed)
    return metrics


# ----------------------------------------------------------------------------- setup


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Run:
    """What the loop works with; the state and constants are replicated global arrays."""

    config: ml_collections.ConfigDict
    workdir: Path
    placement: Placement
    train_iter: data.TrainIterator
    step_fn: StepFn
    state: TrainState  # at `start_step`
    vgg: VGG19
    target_grams: dict[str, jax.Array]
    start_step: int
    validate: Validation
    checkpointer: Checkpointer
    monitor: Monitor


def _set_up(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    stop: StopRequest,
    resources: contextlib.ExitStack,
) -> _Run:
    """Everything before the first step: checks, styles, VGG, data, the state (fresh or
    restored), the compiled step, validation, checkpointing and the monitor. What needs
    closing is registered with `resources`."""
    workdir = checkpoint.prepare_workdir(workdir, config)
    dtype = _check_config(config)
    placement = make_placement(config.parallel)
    stop.agree_over(placement.mesh)
    styles = Styles.load(config)
    base = BaseModel.load(config, styles.paths)  # None unless init_from
    earlier = base.num_styles if base else 0
    num_styles = earlier + len(styles.paths)
    vgg, spec = _load_vgg_and_spec(config, trained_styles=len(styles.paths), num_styles=num_styles)
    target_grams = styles.target_grams(vgg, style_size=config.style_size, spec=spec, dtype=dtype)
    vgg, target_grams = placement.replicate((vgg, target_grams))
    train_iter = _open_training_data(config)
    resources.callback(train_iter.close)

    tx = make_optimizer(config.train.optimizer, config.train.lr)
    graphdef, state = init_state(
        jax.random.PRNGKey(config.train.seed),
        dtype,
        tx,
        num_styles=num_styles,
        output_bias=config.train.get("output_bias"),  # configs saved before it: absent
    )
    step_config = StepConfig(
        graphdef=graphdef,
        spec=spec,
        pad=config.train.pad,
        dtype=dtype,
        seed=config.train.seed,
        num_styles=num_styles,
        first_style=earlier,
        only_norm_params=bool(config.train.get("only_norm_params", False)),
    )
    manager = checkpoint.make_manager(workdir, config.keep_checkpoints)
    resources.callback(_close, manager)
    start_step, state, step_config = _resume_or_start(
        config,
        manager=manager,
        state=placement.replicate(state),
        step_config=step_config,
        train_iter=train_iter,
        vgg=vgg,
        target_grams=target_grams,
    )
    if base is not None and start_step == 0:  # balanced on a fresh network, as any run is
        state = placement.replicate(state.replace(params=base.extended(state.params)))
    logging.info("loss weights: %s", weights_of(step_config.spec))

    checkpointer = Checkpointer(
        manager,
        workdir,
        config=config,
        step_config=step_config,
        vgg_preprocessing=vgg.preprocessing,
        styles=(base.entries if base else []) + styles.entries(),
        resumed=start_step > 0,
        earlier_style_weights=base.style_weights if base else (),
    )
    monitor = Monitor(
        workdir,
        config,
        start_step=start_step,
        enabled=jax.process_index() == 0,
        best_step=checkpointer.best.step,
    )
    resources.callback(monitor.close)
    return _Run(
        config=config,
        workdir=workdir,
        placement=placement,
        train_iter=train_iter,
        step_fn=placement.make_step(tx, step_config),
        state=state,
        vgg=vgg,
        target_grams=target_grams,
        start_step=start_step,
        validate=Validation(
            evaluate=make_eval_fn(step_config, clip_to_pixels=True),  # as evaluate scores
            images=prepare_validation(config, workdir),
            vgg=vgg,
            target_grams=target_grams,
            quality_grams=styles.quality_grams(vgg, image_size=config.train.image_size),
            names=styles.names,
            sized=_sized_view(config, vgg, styles),
            stylize=make_stylize_fn(step_config),
        ),
        checkpointer=checkpointer,
        monitor=monitor,
    )


def _sized_view(config: ml_collections.ConfigDict, vgg: VGG19, styles: Styles) -> SizedView | None:
    """Validation at `config.validation_size` (None: off, or without quality figures)."""
    if not config.validation_size or not quality.has_layers(vgg):
        return None
    grams = styles.quality_grams(vgg, image_size=config.validation_size)
    return SizedView.prepare(config, styles.native_size(config.style_size), grams)


def _check_config(config: ml_collections.ConfigDict) -> DTypeLike:
    """The compute dtype; refuses what cannot run before anything is loaded."""
    dtype = dtype_from_name(config.dtype)
    if config.train.batch_size % jax.device_count():
        raise TrainingError(
            f"train.batch_size={config.train.batch_size} must be divisible by the "
            f"{jax.device_count()} devices"
        )
    return dtype


def _load_vgg_and_spec(
    config: ml_collections.ConfigDict, *, trained_styles: int, num_styles: int
) -> tuple[VGG19, LossSpec]:
    vgg = load_vgg(config.vgg.weights, config.vgg.preprocessing)
    spec = loss_spec_from_config(config.loss, trained_styles, multi_style=num_styles > 1)
    vgg.check_layers(spec.vgg_layers)
    return vgg, spec


def _open_training_data(config: ml_collections.ConfigDict) -> data.TrainIterator:
    return data.make_train_iterator(
        config.data,
        image_size=config.train.image_size,
        global_batch_size=config.train.batch_size,
        seed=config.train.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )


def _close(manager: ocp.CheckpointManager) -> None:
    """Let the last asynchronous save finish, then close."""
    manager.wait_until_finished()
    manager.close()


def _resume_or_start(
    config: ml_collections.ConfigDict,
    *,
    manager: ocp.CheckpointManager,
    state: TrainState,
    step_config: StepConfig,
    train_iter: data.TrainIterator,
    vgg: VGG19,
    target_grams: dict[str, jax.Array],
) -> tuple[int, TrainState, StepConfig]:
    """(start step, state, step config): the latest checkpoint's, with the data position and
    loss weights it recorded; else step 0, with auto-balanced weights if configured."""
    restored = restore_latest(manager, like=state)
    spec = step_config.spec
    if restored is not None:
        train_iter.set_state(restored.data_state)
        spec = spec.with_weights(**restored.loss_weights)
        logging.info("resumed from step %d in %s", restored.step, manager.directory.parent)
        start_step, state = restored.step, restored.state
    else:
        start_step = 0
        if config.loss.auto_balance:
            spec = auto_balance(
                step_config,
                params=state.params,
                first_batch=_peek(train_iter),
                vgg=vgg,
                target_grams=target_grams,
            )
    return start_step, state, dataclasses.replace(step_config, spec=spec)


def _peek(train_iter: data.TrainIterator) -> jax.Array:
    """The next batch, which the loop still trains on first."""
    saved = train_iter.get_state()
    batch = jnp.asarray(next(train_iter))
    train_iter.set_state(saved)
    return batch


# ----------------------------------------------------------------------------- the loop


def _loop(run: _Run, *, stop: StopRequest) -> dict[str, float]:
    """Steps from `run.start_step` to `train.steps` (or an agreed stop); returns the last
    logged train metrics. `stop` is polled after every step."""
    config, placement = run.config, run.placement
    if run.start_step == 0:  # where validation starts from, for the chart and the ratio
        run.monitor.log_validation(0, run.validate(run.state.params)[0])
    device_state = placement.to_device(run.state)
    constants = placement.to_device((run.vgg, run.target_grams))
    metrics: dict[str, float] = {}
    step = run.start_step
    while step < config.train.steps:
        batch = placement.batch(next(run.train_iter))
        device_state, step_metrics = run.step_fn(device_state, batch, *constants)
        step += 1
        run.monitor.tick(config.train.batch_size)
        due = _Due.after(step, config, stopping=stop.poll())
        if due.log:
            metrics = _read_metrics(run, step_metrics, device_state, step)
            run.monitor.log_train(step, metrics, run.train_iter.bad_file_count)
        if due.needs_state:
            _validate_and_save(run, step, placement.from_device(device_state), due)
        if due.stopping:
            logging.warning(
                "stopped at step %d (signal %d); rerun the same command to resume",
                step,
                stop.agreed,
            )
            break
    if not stop.agreed:
        stop.settle()
    return metrics


@dataclasses.dataclass(frozen=True)
class _Due:
    """What follows a step: each job every N steps and at the last step; a stop request
    logs and saves a checkpoint."""

    log: bool
    validate: bool
    sample: bool
    checkpoint: bool
    stopping: bool

    @classmethod
    def after(cls, step: int, config: ml_collections.ConfigDict, *, stopping: bool) -> _Due:
        last = step == config.train.steps

        def every(interval: int) -> bool:
            return step % interval == 0 or last

        return cls(
            log=every(config.log_every) or stopping,
            validate=every(config.eval_every),
            sample=every(config.sample_every),
            checkpoint=every(config.checkpoint_every) or stopping,
            stopping=stopping,
        )

    @property
    def needs_state(self) -> bool:
        """Whether the host needs the train state as global arrays after this step."""
        return self.validate or self.sample or self.checkpoint


def _read_metrics(
    run: _Run, step_metrics: Terms, device_state: TrainState, step: int
) -> dict[str, float]:
    """This step's metrics as floats; stops the run after too many non-finite steps."""
    metrics = {k: float(v) for k, v in run.placement.read(step_metrics).items()}
    nonfinite_run = int(run.placement.read(device_state.nonfinite_run))
    if nonfinite_run >= run.config.train.max_nonfinite:
        raise TrainingError(
            f"{nonfinite_run} non-finite losses in a row at step {step}: stopping; the last "
            f"good checkpoint in {run.workdir} is intact. Lower train.lr or the loss weights."
        )
    return metrics


def _validate_and_save(run: _Run, step: int, state: TrainState, due: _Due) -> None:
    """Validation (best.npz, the logged figures), samples and the checkpoint, as `due` says;
    `state`: replicated global arrays."""
    figures = None  # this step's validation figures, when it validates
    if due.validate or due.sample:
        validated, stylized = run.validate(state.params)
        if due.validate:
            figures = validated
            run.checkpointer.keep_if_best(step, state, figures)
            run.monitor.log_validation(step, figures, best_step=run.checkpointer.best.step)
        if due.sample:
            run.monitor.save_samples(step, run.validate.images, stylized)
    if due.checkpoint:
        run.checkpointer.save(
            step,
            state,
            run.train_iter.get_state(),
            force=due.stopping,
            validation=figures,
        )
