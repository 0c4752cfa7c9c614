"""Where a training run's state is saved, and what it resumes from.

`Checkpointer.save`: the train state (`TrainState.to_dict`: one orbax item entry per field),
the data iterator's position and the run info (the balanced loss weights, the model's
metadata) as a checkpoint (`fnst_jax.checkpoint`), and the parameters as WORKDIR/model.npz
(`export.export_model`). `Checkpointer.keep_if_best`: after a validation, WORKDIR/best.npz
when it beats the best so far (`checkpoint.BestModel`). `restore_latest`: the latest complete
checkpoint, as a `Restored`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging

from fnst_jax import checkpoint, export, model_file
from fnst_jax.loss_weights import weights_of
from fnst_jax.train_step import StepConfig, TrainState


@dataclasses.dataclass(frozen=True)
class Restored:
    """What a run resumes from: a checkpoint's step, train state, data position and loss
    weights (`loss_weights.weights_of`)."""

    step: int
    state: TrainState
    data_state: dict[str, Any]
    loss_weights: dict[str, Any]


def restore_latest(manager: ocp.CheckpointManager, like: TrainState) -> Restored | None:
    """The latest complete checkpoint of `manager`, its arrays laid out as `like`'s (shapes,
    dtypes, shardings); None when there is none."""
    restored = checkpoint.restore_latest(manager, checkpoint.abstract_like(like.to_dict()))
    if restored is None:
        return None
    step, state, data_state, run_info = restored
    return Restored(
        step=step,
        state=TrainState.from_dict(state),
        data_state=data_state,
        loss_weights=run_info["loss_weights"],
    )


class Checkpointer:
    """Saves the train state, the data position and the run info, exports the model
    (WORKDIR/model.npz), and keeps the best validated one (WORKDIR/best.npz)."""

    def __init__(
        self,
        manager: ocp.CheckpointManager,
        workdir: Path,
        *,
        config: ml_collections.ConfigDict,
        step_config: StepConfig,
        vgg_preprocessing: str,
        styles: list[dict[str, str]],
        resumed: bool,
        earlier_style_weights: tuple[float, ...] = (),
    ) -> None:
        """`styles`: every style's metadata entry, a base model's first; `resumed`: whether
        the run resumed from a checkpoint (`checkpoint.BestModel`); `earlier_style_weights`:
        a base model's styles' weights."""
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
        data_state: dict[str, Any],
        *,
        force: bool = False,
        validation: dict[str, float] | None = None,
    ) -> None:
        """Checkpoint `step` and export model.npz; `validation`: this step's validation
        figures, recorded in the model's metadata when given."""
        metadata = self._metadata(step, validation)
        run_info = {"loss_weights": weights_of(self.step_config.spec), "model_metadata": metadata}
        checkpoint.save(self.manager, step, state.to_dict(), data_state, run_info, force=force)
        export.export_model(self.workdir, self.step_config.graphdef, state.params, metadata)

    def keep_if_best(self, step: int, state: TrainState, validation: dict[str, float]) -> None:
        """Export the parameters as best.npz if their validation beats the best so far."""
        if not self.best.improves(step, validation):
            return
        metadata = self._metadata(step, validation)
        metadata["selected_by"] = checkpoint.BEST_SELECTION
        graphdef = self.step_config.graphdef
        export.export_model(
            self.workdir, graphdef, state.params, metadata, model_file.BEST_FILENAME
        )
        self.best.record(step, validation)
        logging.info(
            "best model so far (validation total %.4g): step %d, %s",
            validation["total"],
            step,
            self.best.path,
        )
