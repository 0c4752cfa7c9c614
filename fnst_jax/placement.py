"""Where the train step's inputs live, jit or pmap (`config.parallel`): the one place where
the two data-parallel forms of the training loop differ.

Both start from global arrays replicated over a one-axis (`data`) mesh of every device:
what checkpoints, validation and export use. `jit` (the default) steps on them directly, the
batch sharded over the mesh; `pmap` steps on one copy per local device (a leading device
axis) and the batch split along it.
"""

from __future__ import annotations

import abc
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fnst_jax.train_step import (
    StepConfig,
    StepFn,
    TrainingError,
    make_jit_step,
    make_mesh,
    make_pmap_step,
)


class Placement(abc.ABC):
    """How the loop hands its state, constants and batches to the step, and reads them back."""

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
