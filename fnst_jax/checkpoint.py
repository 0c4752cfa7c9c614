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

import json
import os
from pathlib import Path
from typing import Any

import jax
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


def read_run_info(workdir: str | os.PathLike) -> dict | None:
    """The `run` item of the latest checkpoint, read without restoring arrays (for stylize)."""
    root = Path(workdir) / CHECKPOINT_DIR
    if not root.is_dir():
        return None
    steps = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit())
    for step in reversed(steps):
        path = root / str(step) / "run" / "metadata"
        if path.is_file():
            return json.loads(path.read_text())
    return None
