"""Training checkpoints: an orbax CheckpointManager in WORKDIR/checkpoints.

Each checkpoint holds three items:
  state  the train state pytree (params, optimizer state, step, RNG, counters), array-wise;
  data   the input iterator's position (JSON), so the next batch is exactly the next one;
  run    JSON: the balanced loss weights and the config fingerprint of the run.
Saves are asynchronous; orbax writes into a temporary folder and renames it when complete,
so a process killed mid-save (SIGKILL included) leaves the previous checkpoint as the
latest complete one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"


def make_manager(workdir: str | os.PathLike, keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.LatestN(n=keep),
        enable_async_checkpointing=True,
        create=True,
    )
    return ocp.CheckpointManager(
        Path(workdir).absolute() / CHECKPOINT_DIR,
        item_names=("state", "data", "run"),
        options=options,
    )


def save(
    manager: ocp.CheckpointManager,
    step: int,
    state: Any,
    data_state: dict,
    run_info: dict,
    force: bool = False,
) -> bool:
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
    manager: ocp.CheckpointManager, abstract_state: Any
) -> tuple[int, Any, dict, dict] | None:
    """(step, state, data_state, run_info) of the latest complete checkpoint, or None.

    `abstract_state` (jax.ShapeDtypeStruct leaves with shardings) says how to lay the
    restored arrays out on this run's devices.
    """
    step = manager.latest_step()
    if step is None:
        return None
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore(),
            run=ocp.args.JsonRestore(),
        ),
    )
    return step, restored["state"], restored["data"], restored["run"]


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) describing a pytree of arrays."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        tree,
    )


def restore_latest_params(workdir: str | os.PathLike) -> tuple[dict, dict] | None:
    """(TransformerNet params as numpy, exported-model metadata) of the latest complete
    checkpoint in `workdir`, or None when it has none. For stylizing from a run that has
    not exported its model yet; reads only, on the host."""
    root = Path(workdir).absolute() / CHECKPOINT_DIR
    if not root.is_dir():
        return None
    manager = ocp.CheckpointManager(
        root,
        item_names=("state", "data", "run"),
        options=ocp.CheckpointManagerOptions(read_only=True),
    )
    try:
        step = manager.latest_step()
        if step is None:
            return None
        restored = manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(), run=ocp.args.JsonRestore()),
        )
    finally:
        manager.close()
    params = jax.tree.map(np.asarray, restored["state"]["params"])
    return params, restored["run"]["model_metadata"]
