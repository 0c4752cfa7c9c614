"""Training: the loop and its setup. `train_and_evaluate(config, workdir)` is the whole job.

Where things happen:
  data enters      `_open_training_data` (`data.make_train_iterator`); in the loop
                   `Placement.batch` turns each process's share into what the step takes
  the step         `fnst_jax.train_step` (`loss_and_grads` + `apply_gradients`), jitted on a
                   device mesh (`parallel="jit"`, the default) or pmapped; `Placement` is the
                   one place where the two differ
  state is saved   `_Checkpointer.save`: `fnst_jax.checkpoint` (orbax) and
                   `fnst_jax.export.export_model` (WORKDIR/model.npz); after a validation,
                   `_Checkpointer.keep_if_best` (WORKDIR/best.npz, `checkpoint.BestModel`)
  stopping         `_StopRequest`: SIGINT/SIGTERM, agreed by every process on one step
  validation       `prepare_validation`: the fixed batch, and WORKDIR/validation_images.txt;
                   `_validation_figures`: its loss terms and quality figures (`quality`)
What the user sees (progress, metrics, TensorBoard, chart, samples) is `train_monitor`.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jax.typing import DTypeLike

from fnst_jax import checkpoint, data, export, image_io, quality, stability
from fnst_jax.base_model import BaseModel
from fnst_jax.files import write_text_atomic
from fnst_jax.losses import LossSpec, style_grams, tv_loss
from fnst_jax.runtime import dtype_from_name
from fnst_jax.train_monitor import Monitor
from fnst_jax.train_step import (
    Params,
    StepConfig,
    StepFn,
    TrainingError,
    TrainState,
    init_state,
    make_eval_fn,
    make_jit_step,
    make_mesh,
    make_optimizer,
    make_pmap_step,
    validation_rng,
)
from fnst_jax.vgg import VGG19
from fnst_jax.vgg_weights import load_vgg

VALIDATION_FILE = "validation_images.txt"
VALIDATION_DIR = "validation"  # the validation images of sources whose records are not files
MAX_SLUG_LENGTH = 60  # characters of a record's name kept in its validation file's name


# ----------------------------------------------------------------------------- the loop


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Train (or resume) a style model in `workdir`; returns the last logged train metrics.

    SIGINT/SIGTERM (from the start, so that one during setup is not lost) stop the run after
    a step every process agrees on, with a checkpoint, then exit with status 128 + signal.
    """
    with _StopRequest() as stop:
        metrics = _train(config, workdir, stop)
    if stop.agreed:
        sys.exit(128 + stop.agreed)
    return metrics


def _train(config: ml_collections.ConfigDict, workdir: str, stop: _StopRequest) -> dict[str, float]:
    """The run itself: setup, then the loop; `stop` is polled after every step."""
    workdir = checkpoint.prepare_workdir(workdir, config)
    dtype = _check_config(config)
    placement = make_placement(config.parallel)
    stop.agree_over(placement.mesh)
    styles = style_paths(config)
    base = BaseModel.load(config, styles)  # None unless init_from
    earlier = base.num_styles if base else 0
    num_styles = earlier + len(styles)
    style_pixels = [_read_style(path) for path in styles]  # each file decoded once
    vgg, spec = _load_vgg_and_spec(config, len(styles), multi_style=num_styles > 1)
    targets = [image_io.resize_shorter_side(rgb, config.style_size)[None] for rgb in style_pixels]
    target_grams = _style_target_grams(vgg, targets, spec, dtype)
    vgg, target_grams = placement.replicate((vgg, target_grams))
    train_iter = _open_training_data(config)
    validation = prepare_validation(config, workdir)
    # None: validation logs no quality figures
    quality_grams = _quality_style_grams(style_pixels, config.train.image_size, vgg)

    tx = make_optimizer(config.train.optimizer, config.train.lr)
    rng = jax.random.PRNGKey(config.train.seed)
    output_bias = config.train.get("output_bias")  # configs saved before it: absent
    graphdef, state = init_state(rng, dtype, tx, num_styles, output_bias)
    state = placement.replicate(state)
    step_config = StepConfig(
        graphdef,
        spec,
        config.train.pad,
        dtype,
        seed=config.train.seed,
        num_styles=num_styles,
        first_style=earlier,
        only_norm_params=bool(config.train.get("only_norm_params", False)),
    )
    manager = checkpoint.make_manager(workdir, config.keep_checkpoints)
    start_step, state, step_config = _resume_or_balance(
        config, manager, state, step_config, train_iter, vgg, target_grams
    )
    if base is not None and start_step == 0:  # balanced on a fresh network, as any run is
        state = placement.replicate(dict(state, params=base.extended(state["params"])))
    logging.info("loss weights: %s", _weights_of(step_config.spec))

    validate = _Validation(
        make_eval_fn(step_config, clip_to_pixels=True),  # scored as evaluate scores
        validation,
        vgg,
        target_grams,
        quality_grams,
        style_names(styles),
    )
    step_fn = placement.make_step(tx, step_config)
    checkpointer = _Checkpointer(
        manager,
        workdir,
        config,
        step_config,
        vgg.preprocessing,
        (base.entries if base else []) + style_entries(styles, style_pixels),
        start_step > 0,
        base.style_weights if base else (),
    )
    monitor = Monitor(
        workdir,
        config,
        start_step,
        enabled=jax.process_index() == 0,
        best_step=checkpointer.best.step,
    )
    if start_step == 0:  # where validation starts from, for the chart and the before/after ratio
        monitor.log_validation(0, validate(state["params"])[0])

    device_state = placement.to_device(state)
    constants = placement.to_device((vgg, target_grams))
    metrics: dict[str, float] = {}
    step = start_step
    try:
        while step < config.train.steps:
            batch = placement.batch(next(train_iter))
            device_state, step_metrics = step_fn(device_state, batch, *constants)
            step += 1
            monitor.tick(config.train.batch_size)
            due = _Due.after(step, config, stopping=stop.poll())
            if due.log:
                metrics = _read_metrics(
                    placement, step_metrics, device_state, step, workdir, config
                )
                monitor.log_train(step, metrics, train_iter.bad_file_count)
            if not due.needs_state:
                continue
            state = placement.from_device(device_state)
            figures = None  # this step's validation figures, when it validates
            if due.validate or due.sample:
                validated, stylized = validate(state["params"])
                if due.validate:
                    figures = validated
                    checkpointer.keep_if_best(step, state, figures)
                    monitor.log_validation(step, figures, best_step=checkpointer.best.step)
                if due.sample:
                    monitor.save_samples(step, validation, np.asarray(stylized))
            if due.checkpoint:
                checkpointer.save(
                    step, state, train_iter.get_state(), force=due.stopping, validation=figures
                )
            if due.stopping:
                logging.warning(
                    "stopped at step %d (signal %d); rerun the same command to resume",
                    step,
                    stop.agreed,
                )
                break
        if not stop.agreed:
            stop.settle()
    finally:
        manager.wait_until_finished()
        manager.close()
        monitor.close()
        train_iter.close()
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
    def after(cls, step: int, config: ml_collections.ConfigDict, stopping: bool) -> _Due:
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
    placement: Placement,
    step_metrics: dict,
    device_state: TrainState,
    step: int,
    workdir: Path,
    config: ml_collections.ConfigDict,
) -> dict[str, float]:
    """This step's metrics as floats; stops the run after too many non-finite steps."""
    metrics = {k: float(v) for k, v in placement.read(step_metrics).items()}
    nonfinite_run = int(placement.read(device_state["nonfinite_run"]))
    if nonfinite_run >= config.train.max_nonfinite:
        raise TrainingError(
            f"{nonfinite_run} non-finite losses in a row at step {step}: stopping; the last "
            f"good checkpoint in {workdir} is intact. Lower train.lr or the loss weights."
        )
    return metrics


class _Checkpointer:
    """Saves the train state, the data position and the run info, exports the model
    (WORKDIR/model.npz), and keeps the best validated one (WORKDIR/best.npz,
    `checkpoint.BestModel`; `resumed`: whether the run resumed from a checkpoint)."""

    def __init__(
        self,
        manager: ocp.CheckpointManager,
        workdir: Path,
        config: ml_collections.ConfigDict,
        step_config: StepConfig,
        vgg_preprocessing: str,
        styles: list[dict[str, str]],
        resumed: bool = False,
        earlier_style_weights: tuple[float, ...] = (),
    ) -> None:
        self.manager = manager
        self.workdir = workdir
        self.config = config
        self.step_config = step_config
        self.vgg_preprocessing = vgg_preprocessing
        self.styles = styles
        # The exported spec lists every style's weight: a base model's styles' first.
        spec = step_config.spec
        if earlier_style_weights:
            every = (*earlier_style_weights, *(spec.style_weights or (spec.style_weight,)))
            spec = dataclasses.replace(spec, style_weights=every)
        self.model_spec = spec
        self.best = checkpoint.BestModel(workdir, resumed, enabled=jax.process_index() == 0)

    def _metadata(self, step: int, validation: dict[str, float] | None) -> dict[str, Any]:
        return export.model_metadata(
            self.config,
            self.model_spec,
            self.vgg_preprocessing,
            step,
            self.styles,
            validation,
        )

    def save(
        self,
        step: int,
        state: TrainState,
        data_state: dict,
        force: bool = False,
        validation: dict[str, float] | None = None,
    ) -> None:
        """Checkpoint `step` and export model.npz; `validation`: this step's validation
        figures, recorded in the model's metadata when given."""
        metadata = self._metadata(step, validation)
        run_info = {"loss_weights": _weights_of(self.step_config.spec), "model_metadata": metadata}
        checkpoint.save(self.manager, step, state, data_state, run_info, force=force)
        export.export_model(self.workdir, self.step_config.graphdef, state["params"], metadata)

    def keep_if_best(self, step: int, state: TrainState, validation: dict[str, float]) -> None:
        """Export the parameters as best.npz if their validation beats the best so far."""
        if not self.best.improves(step, validation):
            return
        metadata = self._metadata(step, validation)
        metadata["selected_by"] = checkpoint.BEST_SELECTION
        graphdef = self.step_config.graphdef
        export.export_model(self.workdir, graphdef, state["params"], metadata, export.BEST_FILENAME)
        self.best.record(step, validation)
        logging.info(
            "best model so far (validation total %.4g): step %d, %s",
            validation["total"],
            step,
            self.best.path,
        )


class _StopRequest:
    """SIGINT/SIGTERM ask for a stop; every process stops after the same step (`poll`), the
    loop saves a checkpoint there, and `agreed` is the signal they stopped for. A second
    signal to a process stops it at once (KeyboardInterrupt).

    Why an agreement: a signal reaches one process (a preempted host) or reaches processes
    steps apart. Stopping on its own flag, one process would enter the checkpoint's barrier
    while another waits in the next step's all-reduce, and the run would hang without its
    checkpoint. So every step, every process puts its flag (the signal number, 0 for none)
    into a max over the training mesh: a tiny collective (gloo on CPU, NCCL/ICI elsewhere)
    next to the step's gradient all-reduce. Its result is read one step later: reading it
    waits for the previous step only, while this step runs, so the host never stalls the
    device and the check costs next to nothing; every process reads the same value after the
    same step, and so stops after the same step (one step after the signal is seen).
    JAX's preemption sync point (which orbax uses) was not taken: it hears SIGTERM only (not
    Ctrl-C), exists only after jax.distributed.initialize, and any Python SIGTERM handler
    replaces its C++ one. A synchronous `process_allgather` every step would stall the device
    each step. A single process agrees with itself: it stops after the step the signal came in.
    """

    def __init__(self) -> None:
        self.signal: int | None = None  # received by this process
        self.agreed = 0  # the signal every process stops for; 0 while none is agreed
        self._previous: dict[int, Any] = {}
        self._flag_sharding: NamedSharding | None = None
        self._max: Callable[[jax.Array], jax.Array] | None = None
        self._pending: jax.Array | None = None  # the last max, not read yet

    def __enter__(self) -> _StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self.signal = signum
        logging.warning(
            "signal %d received: saving a checkpoint after a step all processes agree on, then "
            "stopping (a second signal stops at once)",
            signum,
        )

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            # None: a handler installed outside Python (JAX's preemption notifier), which
            # cannot be put back from Python; the default is what it would have done.
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)

    def agree_over(self, mesh: Mesh) -> None:
        """Agree over `mesh` (every device of every process) from now on."""
        if jax.process_count() > 1:
            self._flag_sharding = NamedSharding(mesh, P("data"))
            self._max = jax.jit(jnp.max, out_shardings=NamedSharding(mesh, P()))

    def _exchange(self) -> jax.Array:
        """Start the max over every process's flag (asynchronous)."""
        local = np.full(len(self._flag_sharding.addressable_devices), self.signal or 0, np.int32)
        return self._max(jax.make_array_from_process_local_data(self._flag_sharding, local))

    def poll(self) -> bool:
        """Whether every process stops after this step; called by each after every step."""
        if self._max is None:
            self.agreed = self.signal or 0
        else:
            previous, self._pending = self._pending, self._exchange()
            if previous is not None:
                self.agreed = _read_replicated(previous)
        return self.agreed != 0

    def settle(self) -> None:
        """After the last step, in every process: agree on a signal received since the last
        `poll`, so that every process exits with the same status."""
        if self._max is None:
            self.agreed = self.signal or 0
        else:
            self._pending = None
            self.agreed = _read_replicated(self._exchange())


def _read_replicated(x: jax.Array) -> int:
    """A replicated scalar of a (possibly multi-process) global array, on the host."""
    return int(np.asarray(x.addressable_data(0)))


# ----------------------------------------------------------------------------- jit or pmap


class Placement(abc.ABC):
    """Where the step's inputs live: the one place where the jit and pmap loops differ."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.replicated = NamedSharding(mesh, P())

    def replicate(self, tree: Any) -> Any:
        """Global arrays replicated over the mesh: what checkpoints, evaluation and export
        use, and what `to_device` starts from."""
        return jax.device_put(tree, self.replicated)

    @abc.abstractmethod
    def make_step(self, tx: optax.GradientTransformation, step_config: StepConfig) -> StepFn:
        """The compiled train step (state donated)."""

    @abc.abstractmethod
    def to_device(self, tree: Any) -> Any:
        """Replicated global arrays -> the form the step takes them in."""

    @abc.abstractmethod
    def from_device(self, tree: Any) -> Any:
        """The step's output state -> replicated global arrays."""

    @abc.abstractmethod
    def batch(self, local_batch: np.ndarray) -> Any:
        """This process's share of a global batch -> the step's batch argument."""

    @abc.abstractmethod
    def read(self, tree: Any) -> Any:
        """A step output (metrics, a state entry) -> numpy on the host."""


class JitPlacement(Placement):
    """The default: global arrays, the batch sharded over the mesh's `data` axis; XLA inserts
    the gradient all-reduce."""

    def __init__(self, mesh: Mesh) -> None:
        super().__init__(mesh)
        self._batch_sharding = NamedSharding(mesh, P("data"))

    def make_step(self, tx: optax.GradientTransformation, step_config: StepConfig) -> StepFn:
        return make_jit_step(self.mesh, tx, step_config)

    def to_device(self, tree: Any) -> Any:
        return tree

    def from_device(self, tree: Any) -> Any:
        return tree

    def batch(self, local_batch: np.ndarray) -> jax.Array:
        """This process's rows become its shards of one global, data-sharded array."""
        return jax.make_array_from_process_local_data(self._batch_sharding, local_batch)

    def read(self, tree: Any) -> Any:
        return jax.device_get(tree)


class PmapPlacement(Placement):
    """jax.pmap: one copy of the state and constants per local device (a leading device
    axis), the batch split along that axis; the step averages gradients with lax.pmean."""

    def make_step(self, tx: optax.GradientTransformation, step_config: StepConfig) -> StepFn:
        return make_pmap_step(tx, step_config)

    def to_device(self, tree: Any) -> Any:
        count = jax.local_device_count()
        return jax.tree.map(
            lambda x: np.broadcast_to(_local_copy(x), (count, *np.shape(x))),
            tree,
        )

    def from_device(self, tree: Any) -> Any:
        return jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(self.replicated, _first_replica(x)),
            tree,
        )

    def batch(self, local_batch: np.ndarray) -> np.ndarray:
        return local_batch.reshape(jax.local_device_count(), -1, *local_batch.shape[1:])

    def read(self, tree: Any) -> Any:
        return jax.tree.map(_first_replica, tree)


def make_placement(parallel: str) -> Placement:
    """`config.parallel` ("jit" or "pmap") -> its Placement over all devices."""
    placements = {"jit": JitPlacement, "pmap": PmapPlacement}
    if parallel not in placements:
        raise TrainingError(f"parallel must be 'jit' or 'pmap', not {parallel!r}")
    return placements[parallel](make_mesh())


def _local_copy(x: Any) -> np.ndarray:
    """This process's copy of a replicated value, on the host."""
    return np.asarray(jax.device_get(x.addressable_data(0) if isinstance(x, jax.Array) else x))


def _first_replica(x: jax.Array) -> np.ndarray:
    """This process's first copy of a pmap-replicated value (without the device axis)."""
    return np.asarray(x.addressable_data(0)).reshape(x.shape[1:])


# ----------------------------------------------------------------------------- setup


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
    config: ml_collections.ConfigDict, trained_styles: int, multi_style: bool
) -> tuple[VGG19, LossSpec]:
    vgg = load_vgg(config.vgg.weights, config.vgg.preprocessing)
    spec = loss_spec_from_config(config.loss, trained_styles, multi_style)
    vgg.check_layers(spec.vgg_layers)
    return vgg, spec


def style_paths(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The style images a run learns: `style_images` when set (several: one multi-style
    model, conditional instance norm), else `style_image`."""
    many = tuple(config.get("style_images") or ())
    paths = many or ((config.style_image,) if config.style_image else ())
    if not paths:
        raise TrainingError(
            "no style image: pass --config.style_image=path/to/style.jpg, or for one model of "
            "several styles --config.style_images=\"('a.jpg', 'b.jpg')\""
        )
    names = style_names(paths)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise TrainingError(
            f"style_images: styles are named after their files, and {repeated} would name "
            "two styles; rename the files"
        )
    multipliers = tuple(config.loss.get("style_multipliers") or ())
    if multipliers and len(multipliers) != len(paths):
        raise TrainingError(
            f"loss.style_multipliers has {len(multipliers)} entries for {len(paths)} styles"
        )
    return paths


def style_names(paths: tuple[str, ...]) -> list[str]:
    """The styles' names (`export.style_name`: the file's stem)."""
    return [export.style_name(path) for path in paths]


def style_entries(paths: tuple[str, ...], pixels: list[np.ndarray]) -> list[dict[str, str]]:
    """Each style's name, absolute path and thumbnail (`export.make_style_thumbnail` of its
    uint8 RGB `pixels`), for the model's metadata."""
    return [
        {
            "name": name,
            "image": str(Path(path).absolute()),
            "thumbnail": export.make_style_thumbnail(rgb),
        }
        for name, path, rgb in zip(style_names(paths), paths, pixels, strict=True)
    ]


def _read_style(path: str) -> np.ndarray:
    """A style image file as uint8 RGB, at its own size."""
    try:
        return image_io.read_image(path).rgb
    except image_io.ImageReadError as e:
        raise TrainingError(f"style image: {e}") from e


def _style_target_grams(
    vgg: VGG19, style_images: list[np.ndarray], spec: LossSpec, dtype: DTypeLike
) -> dict[str, jax.Array]:
    """The target Grams: (1, C, C) per layer for one style, (N, C, C) for N styles (in
    order; the images may differ in size)."""
    grams = jax.jit(style_grams, static_argnums=(2, 3))
    each = [grams(vgg, image, spec.style_layers, dtype) for image in style_images]
    return {layer: jnp.concatenate([g[layer] for g in each]) for layer in spec.style_layers}


def _quality_style_grams(
    style_pixels: list[np.ndarray], image_size: int, vgg: VGG19
) -> list[dict[str, jax.Array]] | None:
    """Each style image's Grams for the validation's quality figures (`fnst_jax.quality`: the
    style image's longest side at the validation size); None, with a warning, when the VGG
    weights stop before the layers the figures need."""
    if not quality.has_layers(vgg):
        logging.warning(
            "validation logs no quality figures: they need VGG layers %s, and %s hold only %s",
            ", ".join(quality.LAYERS),
            vgg.source or "the VGG weights",
            ", ".join(vgg.available_layers),
        )
        return None
    return [quality.StyleTargets(vgg, rgb).at(image_size) for rgb in style_pixels]


@dataclasses.dataclass(frozen=True)
class _Validation:
    """The fixed validation batch scored with given parameters -> (figures, stylized).

    One style: the loss terms and quality figures (`_validation_figures`) and the (B, H, W,
    3) outputs. Several: every style in turn; the figures are the means over the styles
    (what the chart plots and best.npz is chosen by) plus each style's own, prefixed with its
    name (`candy/total`, ...); the outputs are (N, B, H, W, 3), a sample row per style.
    """

    evaluate: Callable[..., tuple[dict, jax.Array]]  # `train_step.make_eval_fn`
    images: np.ndarray
    vgg: VGG19
    target_grams: dict[str, jax.Array]
    quality_grams: list[dict[str, jax.Array]] | None  # per trained style
    names: list[str]  # of the trained styles

    def _one(self, params: Params, style: int) -> tuple[dict[str, float], jax.Array]:
        terms, stylized = self.evaluate(params, self.images, self.vgg, self.target_grams, style)
        grams = None if self.quality_grams is None else self.quality_grams[style]
        return _validation_figures(terms, self.images, stylized, self.vgg, grams), stylized

    def __call__(self, params: Params) -> tuple[dict[str, float], np.ndarray]:
        if len(self.names) == 1:
            figures, stylized = self._one(params, 0)
            return figures, np.asarray(stylized)
        scored = [self._one(params, index) for index in range(len(self.names))]
        per_style = [figures for figures, _ in scored]
        figures = {key: float(np.mean([f[key] for f in per_style])) for key in per_style[0]}
        for name, own in zip(self.names, per_style, strict=True):
            figures.update({f"{name}/{key}": value for key, value in own.items()})
        return figures, np.stack([np.asarray(stylized) for _, stylized in scored])


def _validation_figures(
    terms: dict,
    images: np.ndarray,
    stylized: jax.Array,
    vgg: VGG19,
    quality_grams: dict[str, jax.Array] | None,
) -> dict[str, float]:
    """What a validation logs: the loss terms of the batch and, with `quality_grams`, the
    quality figures (means over the validation images)."""
    figures = {key: float(value) for key, value in jax.device_get(terms).items()}
    if quality_grams is not None:
        figures.update(quality.mean_figures(vgg, images, stylized, quality_grams))
    return figures


def _open_training_data(config: ml_collections.ConfigDict) -> data.TrainIterator:
    return data.make_train_iterator(
        config.data,
        image_size=config.train.image_size,
        global_batch_size=config.train.batch_size,
        seed=config.train.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )


def prepare_validation(config: ml_collections.ConfigDict, workdir: Path) -> np.ndarray:
    """The fixed validation batch; process 0 also writes WORKDIR/validation_images.txt, the
    images to run `evaluate --images` on (images training never saw), one path a line.

    A folder source's records are files: every held-out file is listed. Other sources'
    records (TFDS, synthetic) are not files evaluate can read, so the validation images
    themselves (`num_validation_images` of them, as validation crops them) are written once
    as PNGs to WORKDIR/validation/ and listed; only those records are read.
    """
    images = data.load_validation_images(
        config.data,
        image_size=config.train.image_size,
        count=config.num_validation_images,
        seed=config.train.seed,
    )
    if jax.process_index() == 0:
        paths = _validation_paths(config, Path(workdir).absolute(), images)
        write_text_atomic(Path(workdir) / VALIDATION_FILE, "".join(f"{p}\n" for p in paths))
    return images


def _validation_paths(
    config: ml_collections.ConfigDict, workdir: Path, images: np.ndarray
) -> list[str]:
    image_size = config.train.image_size
    if config.data.source.startswith("folder:"):  # the one source whose records are files
        return data.validation_descriptions(config.data, image_size=image_size)
    names = data.validation_descriptions(
        config.data,
        image_size=image_size,
        count=config.num_validation_images,
        seed=config.train.seed,
    )
    paths = []
    for index, (name, image) in enumerate(zip(names, images, strict=True)):
        # The position keeps validation's order and the names unique; the record's name says
        # which image it is, e.g. 03_..._image_filename_COCO_val2014_000000000042_jpg.png.
        slug = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")[-MAX_SLUG_LENGTH:].lstrip("_")
        path = workdir / VALIDATION_DIR / f"{index:02d}_{slug}.png"
        if not path.exists():  # written once; the same run always picks the same images
            image_io.write_image(path, image)
        paths.append(str(path))
    return paths


def _resume_or_balance(
    config: ml_collections.ConfigDict,
    manager: ocp.CheckpointManager,
    state: TrainState,
    step_config: StepConfig,
    train_iter: data.TrainIterator,
    vgg: VGG19,
    target_grams: dict,
) -> tuple[int, TrainState, StepConfig]:
    """(start step, state, step config): the latest checkpoint's, with the data position and
    loss weights it recorded; else step 0, with auto-balanced weights if configured."""
    restored = checkpoint.restore_latest(manager, checkpoint.abstract_like(state))
    spec = step_config.spec
    if restored is not None:
        start_step, state, data_state, run_info = restored
        train_iter.set_state(data_state)
        spec = spec.with_weights(**run_info["loss_weights"])
        logging.info("resumed from step %d in %s", start_step, manager.directory.parent)
    else:
        start_step = 0
        if config.loss.auto_balance:
            spec = _auto_balance(step_config, state["params"], train_iter, vgg, target_grams)
    return start_step, state, dataclasses.replace(step_config, spec=spec)


def _auto_balance(
    step_config: StepConfig,
    params: Params,
    train_iter: data.TrainIterator,
    vgg: VGG19,
    target_grams: dict,
) -> LossSpec:
    """Measure the raw loss terms of the untrained network on the first batch."""
    saved = train_iter.get_state()
    first = jnp.asarray(next(train_iter))
    train_iter.set_state(saved)  # the first batch is still trained on
    probe = make_eval_fn(step_config)
    terms, _ = probe(params, first, vgg, target_grams)
    raw = {k: float(v) for k, v in jax.device_get(terms).items() if k.startswith("raw_")}
    for style in range(1, step_config.trained_styles):  # per style: its own Gram magnitude
        terms, _ = probe(params, first, vgg, target_grams, style)
        raw[f"raw_style/{style}"] = float(jax.device_get(terms)["raw_style"])
    # The untrained network's output is nearly flat, so its TV says nothing about the TV
    # of a stylized image; that of the natural content images is the useful yardstick.
    raw["raw_tv"] = float(tv_loss(first))
    if step_config.spec.stability_weight:
        # Likewise the untrained network's output hardly moves at all; what the perturbation
        # does to the images themselves is the yardstick (`fnst_jax.stability`).
        raw["stability_yardstick"] = float(
            stability.yardstick(validation_rng(step_config.seed), first)
        )
    if jax.process_count() > 1:  # every process must use the same weights
        from jax.experimental import multihost_utils

        gathered = multihost_utils.process_allgather(np.array(list(raw.values())))
        raw = dict(zip(raw, map(float, np.mean(gathered, 0)), strict=True))
    logging.info(
        "auto-balance on the first batch: %s", ", ".join(f"{k} {v:.4g}" for k, v in raw.items())
    )
    return balance_weights(step_config.spec, raw)


def loss_spec_from_config(
    loss_config: ml_collections.ConfigDict, num_styles: int = 1, multi_style: bool = False
) -> LossSpec:
    """The `loss` block as a LossSpec (weights as configured, not balanced). num_styles: the
    styles the run trains; multi_style (or several styles): a weight per trained style."""
    return LossSpec(
        style_layers=tuple(loss_config.style_layers),
        content_layer=loss_config.content_layer,
        style_weight=float(loss_config.style_weight),
        content_weight=float(loss_config.content_weight),
        tv_weight=float(loss_config.tv_weight),
        stability_weight=float(loss_config.get("stability_weight", 0.0)),
        style_weights=(
            tuple(loss_config.style_weight * m for m in _multipliers(loss_config, num_styles))
            if num_styles > 1 or multi_style
            else None
        ),
        style_layer_weights=(
            tuple(float(w) for w in loss_config.style_layer_weights)
            if loss_config.style_layer_weights
            else None
        ),
    )


def _multipliers(loss_config: ml_collections.ConfigDict, num_styles: int) -> tuple[float, ...]:
    """loss.style_multipliers: one per style (checked by `style_paths`); () = all 1."""
    given = tuple(loss_config.get("style_multipliers") or ())
    return tuple(float(m) for m in given) if given else (1.0,) * num_styles


def balance_weights(spec: LossSpec, raw_terms: dict[str, float]) -> LossSpec:
    """The article's human-sized weights: the configured weights become multipliers of the
    content/style and content/TV ratios measured on the first batch (style 1.0: the style
    loss starts equal to the content loss). Several styles: each style's weight is balanced
    on its own raw style loss (`raw_style` for style 0, `raw_style/<i>` for style i), times
    the configured weight and its multiplier (`spec.style_weights` holds those products)."""
    content = spec.content_weight * raw_terms["raw_content"]

    def ratio(raw: float) -> float:
        return content / raw if raw > 0 and math.isfinite(raw) else 1.0

    weights: dict[str, Any] = {
        "style_weight": spec.style_weight * ratio(raw_terms["raw_style"]),
        "tv_weight": spec.tv_weight * ratio(raw_terms["raw_tv"]),
    }
    if spec.style_weights is not None:
        raws = [raw_terms["raw_style"]]
        raws += [raw_terms[f"raw_style/{index}"] for index in range(1, len(spec.style_weights))]
        configured = spec.style_weights
        weights["style_weights"] = [w * ratio(raw) for w, raw in zip(configured, raws, strict=True)]
    if spec.stability_weight:
        yardstick = raw_terms["stability_yardstick"]
        weights["stability_weight"] = (
            spec.stability_weight * stability.YARDSTICK_RATIO * ratio(yardstick)
        )
    return spec.with_weights(**weights)


def _weights_of(spec: LossSpec) -> dict[str, Any]:
    return {
        "style_weight": spec.style_weight,
        "content_weight": spec.content_weight,
        "tv_weight": spec.tv_weight,
        "stability_weight": spec.stability_weight,
        "style_weights": None if spec.style_weights is None else list(spec.style_weights),
    }
