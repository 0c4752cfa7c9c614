"""Where a run's state is saved: orbax checkpoints in WORKDIR/checkpoints and the workdir check.

Each checkpoint holds three items:
  state  the train state pytree (params, optimizer state, step, non-finite counters), array-wise;
  data   the input iterator's position (JSON), so the next batch is exactly the next one;
  run    JSON: the balanced loss weights and the exported model's metadata.
Saves are asynchronous; orbax writes into a temporary folder and renames it when complete,
so a process killed mid-save (SIGKILL included) leaves the previous checkpoint as the
latest complete one.

`prepare_workdir` creates the workdir and keeps it to one experiment (`check_workdir_config`):
WORKDIR/config.json records the config, and a rerun whose config differs in anything but
`RESUMABLE_KEYS` is refused.

`BestModel` keeps the run's best validated model, WORKDIR/best.npz (the record of which is
the file's own metadata).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from fnst_jax import model_file
from fnst_jax.files import write_text_atomic
from fnst_jax.train_step import TrainingError

CHECKPOINT_DIR = "checkpoints"
ITEMS = ("state", "data", "run")
CONFIG_FILE = "config.json"
# Config keys added after runs were recorded without them, with the value that reproduces
# what those runs did: such a run resumes when the key still has that value.
ADDED_KEYS = {
    "loss.stability_weight": 0.0,
    "style_images": [],
    "loss.style_multipliers": [],
    "init_from": "",
    "train.only_norm_params": False,
}
# Config keys that may change between a run and its resumption (they do not change what is
# trained), or be missing from a run recorded before they existed; any other difference
# means the workdir belongs to another experiment.
RESUMABLE_KEYS = (
    "train.steps",
    "validation_size",
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
    "sample_every",
    "eval_every",
    "data.worker_count",
    "parallel",
)
# Train-state entries that older fnst_jax versions saved but no longer has: restored from
# old checkpoints (orbax needs the full tree) and dropped. fnst_jax 0.1 kept a PRNG key that
# nothing read.
DROPPED_STATE_KEYS = ("rng",)


def prepare_workdir(workdir: str | os.PathLike, config: ml_collections.ConfigDict) -> Path:
    """Create `workdir` if needed and check it may hold this run (`check_workdir_config`)."""
    workdir = Path(workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrainingError(f"--workdir {workdir}: cannot create it ({e.strerror})") from e
    check_workdir_config(workdir, config)
    return workdir


def check_workdir_config(workdir: Path, config: ml_collections.ConfigDict) -> None:
    """Refuse a workdir made by a run with an incompatible config; record the config."""
    path = Path(workdir) / CONFIG_FILE
    current = _flatten(config.to_dict())
    if path.exists():
        # A run recorded before a key existed ran with that key's neutral value.
        previous = {**ADDED_KEYS, **_flatten(_read_config(path))}
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
        text = json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)
        try:
            write_text_atomic(path, text)
        except OSError as e:
            raise TrainingError(f"--workdir {workdir}: cannot write to it ({e})") from e


def _read_config(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TrainingError(
            f"{path}: unreadable run config ({e}); this workdir's run cannot be checked. "
            f"Train into a new --workdir."
        ) from e


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def _handlers() -> dict[str, ocp.CheckpointHandler]:
    # Named up front (not inferred from the first save/restore) so that the state's metadata
    # can be read before restoring it.
    return {
        "state": ocp.StandardCheckpointHandler(),
        "data": ocp.JsonCheckpointHandler(),
        "run": ocp.JsonCheckpointHandler(),
    }


def make_manager(workdir: str | os.PathLike, keep: int) -> ocp.CheckpointManager:
    """The run's checkpoint manager: asynchronous saves, the latest `keep` kept."""
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.LatestN(n=keep),
        enable_async_checkpointing=True,
        create=True,
    )
    return ocp.CheckpointManager(
        Path(workdir).absolute() / CHECKPOINT_DIR,
        item_names=ITEMS,
        item_handlers=_handlers(),
        options=options,
    )


def save(
    manager: ocp.CheckpointManager,
    step: int,
    state: dict[str, Any],
    data_state: dict,
    run_info: dict,
    force: bool = False,
) -> bool:
    """Start saving checkpoint `step` of `state` (the `TrainState.to_dict()` layout; asynchronous:
    `manager.wait_until_finished` waits)."""
    return manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state),
            run=ocp.args.JsonSave(run_info),
        ),
        force=force,
    )


def restore_latest(
    manager: ocp.CheckpointManager, abstract_state: dict[str, Any]
) -> tuple[int, dict[str, Any], dict, dict] | None:
    """(step, state, data_state, run_info) of the latest complete checkpoint, or None.

    `abstract_state` (jax.ShapeDtypeStruct leaves with shardings) says how to lay the
    restored arrays out on this run's devices. Entries of `DROPPED_STATE_KEYS` that an older
    checkpoint holds are restored and dropped; any other difference in the state's structure
    is a TrainingError naming the checkpoint.
    """
    step = manager.latest_step()
    if step is None:
        return None
    target = _restore_target(manager, step, abstract_state)
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target),
            data=ocp.args.JsonRestore(),
            run=ocp.args.JsonRestore(),
        ),
    )
    state = {k: v for k, v in restored["state"].items() if k not in DROPPED_STATE_KEYS}
    return step, state, restored["data"], restored["run"]


def _restore_target(
    manager: ocp.CheckpointManager, step: int, abstract_state: dict[str, Any]
) -> dict[str, Any]:
    """`abstract_state`, plus the dropped entries the checkpoint still holds (orbax restores
    a whole tree only); a checkpoint of another state layout is refused."""
    saved = manager.item_metadata(step)["state"].tree
    extra = set(saved) - set(abstract_state)
    missing = set(abstract_state) - set(saved)
    if missing or extra - set(DROPPED_STATE_KEYS):
        raise TrainingError(
            f"{manager.directory / str(step)}: the saved train state has entries "
            f"{sorted(saved)}, this fnst_jax expects {sorted(abstract_state)}; it was written "
            f"by another fnst_jax version. Train into a new --workdir."
        )
    replicated = abstract_state["step"].sharding  # any replicated scalar's layout
    dropped = {
        key: jax.ShapeDtypeStruct(saved[key].shape, saved[key].dtype, sharding=replicated)
        for key in extra
    }
    return {**abstract_state, **dropped}


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) describing a pytree of arrays."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        tree,
    )


def _read_only_manager(workdir: str | os.PathLike) -> ocp.CheckpointManager | None:
    """A read-only manager of WORKDIR/checkpoints, or None when there is no such folder."""
    root = Path(workdir).absolute() / CHECKPOINT_DIR
    if not root.is_dir():
        return None
    return ocp.CheckpointManager(
        root,
        item_names=ITEMS,
        item_handlers=_handlers(),
        # Stated, not left to orbax (which warns when it has to override them).
        options=ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0, create=False),
    )


def checkpoint_steps(workdir: str | os.PathLike) -> list[int]:
    """The steps of the complete checkpoints kept in `workdir`, ascending ([] when none)."""
    manager = _read_only_manager(workdir)
    if manager is None:
        return []
    try:
        return sorted(manager.all_steps())
    finally:
        manager.close()


def restore_params(workdir: str | os.PathLike, step: int | None = None) -> tuple[dict, dict] | None:
    """(TransformerNet params as numpy, exported-model metadata) of checkpoint `step` in
    `workdir` (None: the latest complete one), or None when it has none. For stylizing from
    a run that has not exported its model yet, or from an earlier step than its model.npz;
    reads only, on the host. A `step` that is not kept is a TrainingError listing those that
    are."""
    manager = _read_only_manager(workdir)
    if manager is None:
        return None
    try:
        steps = sorted(manager.all_steps())
        if step is None:
            if not steps:
                return None
            step = steps[-1]
        elif step not in steps:
            raise TrainingError(
                f"{manager.directory}: no checkpoint of step {step} (kept: "
                f"{', '.join(map(str, steps)) or 'none'})"
            )
        restored = manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(), run=ocp.args.JsonRestore()),
        )
    finally:
        manager.close()
    params = jax.tree.map(np.asarray, restored["state"]["params"])
    return params, restored["run"]["model_metadata"]


# How best.npz is chosen (recorded in its metadata as `selected_by`).
BEST_SELECTION = "lowest validation total loss"


class BestModel:
    """The run's best model so far, exported as WORKDIR/best.npz (`model_file.BEST_FILENAME`).

    Best = the lowest validation total loss (`BEST_SELECTION`) at a validation after step 0:
    the objective the run trains for, with the weights the user chose, on held-out images
    the network never trained on, scored on the output clipped as stylize.py writes it. The
    quality figures (`fnst_jax.quality`) are not the criterion: they are a pair (more style
    against more content change), and any one combination of them would impose a trade-off
    of its own in place of the one the loss weights express. They are recorded beside it
    (best.npz's `validation` metadata, metrics.jsonl), for a reader who weighs them otherwise.

    The record is the file itself: its metadata holds the step and the validation figures,
    and it is replaced atomically (`model_file.write_model`), so the best so far survives a kill
    at any moment; a resumed run reads it back. Even one exported after the checkpoint the
    run resumes from is kept: resumption replays the same steps exactly, so it is a model of
    this very run. A run that starts afresh (no checkpoint) ignores an existing best.npz and
    replaces it at its first improving validation. `enabled` is False on every process but
    process 0, which alone writes files.
    """

    def __init__(self, workdir: str | os.PathLike, resumed: bool, enabled: bool = True) -> None:
        self.path = Path(workdir) / model_file.BEST_FILENAME
        self.enabled = enabled
        self.step: int | None = None
        self.total = math.inf
        if not (enabled and self.path.exists()):
            return
        if not resumed:
            logging.warning(
                "%s: from an earlier run in this workdir; replaced at this run's first validation",
                self.path,
            )
            return
        try:
            metadata = model_file.read_metadata(self.path)
            self.step, self.total = int(metadata["step"]), float(metadata["validation"]["total"])
        except (model_file.ModelFileError, KeyError, TypeError, ValueError) as e:
            logging.warning(
                "%s: not a best model this run can compare with (%s); replaced", self.path, e
            )
            self.step, self.total = None, math.inf

    def improves(self, step: int, validation: Mapping[str, float]) -> bool:
        """Whether parameters validated at `step` with these figures beat the best so far
        (never at step 0, the untrained network; never with a non-finite loss)."""
        total = float(validation["total"])
        return self.enabled and step > 0 and math.isfinite(total) and total < self.total

    def record(self, step: int, validation: Mapping[str, float]) -> None:
        """Note that the parameters of `step` were exported as the best."""
        self.step, self.total = step, float(validation["total"])
