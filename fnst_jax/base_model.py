"""Training from a trained model (`config.init_from`): adding styles to it.

    python train.py --config configs/photos_mosaic.py --workdir runs/four \
        --config.init_from=runs/three/model.npz \
        --config.style_images="('../shared/data/styles/udnie.jpg',)" \
        --config.train.only_norm_params=True --config.train.lr=1e-2 --config.train.steps=100

The new model holds the base model's styles first, in their order, then the run's
`style_images`. Its convolutions and the base styles' norm rows start as the base model's;
each new style's norm rows start as the mean of the base styles' rows (a style in between,
closer to where training ends than the identity rows of a fresh norm). With
`train.only_norm_params` the step updates the new rows only (`train_step.trainable_mask`):
the base styles' outputs stay bit-identical and one style costs 3,200 parameters (the scale
and shift of 15 norms, 1,600 channels in all; 12.8 kB in float32). Without it every
parameter trains, and the base styles drift. Give norm-only training a larger learning rate
than a full run (docs/experiments/multistyle.md: starry-night added to a 3-style model
reached 1.40x its single-style model's validation style loss in 50 steps at lr 1e-2, and was
still at 2.48x at the quick start's 2e-3).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fnst_jax import export, model_file
from fnst_jax.train_step import Params, TrainingError


@dataclasses.dataclass(frozen=True)
class BaseModel:
    """A trained model a run starts from: its flat parameters and its styles."""

    path: str
    params: dict[str, np.ndarray]  # flat, as `export.flat_params` names them
    num_styles: int
    entries: list[dict[str, Any]]  # each style's {"name", "image", "thumbnail"}
    style_weights: tuple[float, ...]  # each style's balanced weight, from its metadata

    @classmethod
    def load(
        cls, config: ml_collections.ConfigDict, new_styles: tuple[str, ...]
    ) -> BaseModel | None:
        """The `init_from` model (None when unset); refuses a new style named like a base
        style, and `only_norm_params` without a base model."""
        path = config.get("init_from") or ""
        if not path:
            if config.train.get("only_norm_params", False):
                raise TrainingError(
                    "train.only_norm_params trains new styles' norm rows of a trained model: "
                    "give it with --config.init_from=MODEL"
                )
            return None
        try:
            model, metadata = export.load_model(path)
        except model_file.ModelFileError as e:
            raise TrainingError(f"init_from: {e}") from None
        names = model_file.style_names(metadata, model.num_styles)
        entries = [dict(entry) for entry in metadata.get("styles") or ()] or [
            {
                "name": names[0],
                "image": metadata.get("style_image"),
                "thumbnail": metadata.get(model_file.STYLE_THUMBNAIL_KEY),
            }
        ]
        clashes = sorted(set(names) & {model_file.style_name(p) for p in new_styles})
        if clashes:
            raise TrainingError(
                f"init_from {path} already has the style(s) {clashes}; rename the new file(s)"
            )
        loss = metadata.get("loss") or {}
        weights = loss.get("style_weights") or [loss.get("style_weight", 0.0)] * model.num_styles
        return cls(
            str(path),
            export.flat_params(model),
            model.num_styles,
            entries,
            tuple(float(w) for w in weights),
        )

    def extended(self, fresh: Params) -> Params:
        """`fresh` (a new model's parameters, with this model's styles plus new ones) with
        this model's values: convolutions and the base styles' norm rows copied, each new
        style's norm rows the mean of the base rows."""

        def value(path: tuple, leaf: jax.Array) -> jax.Array:
            name = model_file.param_name(path)
            base = self.params[name]
            if leaf.ndim != 2:  # a convolution's kernel or bias: the same shape
                return jnp.asarray(base, leaf.dtype)
            rows = base if base.ndim == 2 else base[None]
            added = np.repeat(rows.mean(axis=0, keepdims=True), leaf.shape[0] - len(rows), 0)
            return jnp.asarray(np.concatenate([rows, added]), leaf.dtype)

        return jax.tree_util.tree_map_with_path(value, fresh)
