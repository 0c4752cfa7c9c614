"""The loss weights of a run: as configured (`loss_spec_from_config`), balanced on the first
batch (`auto_balance`, `balance_weights`), and as checkpoints record them (`weights_of`).

Balancing follows the article's human-sized weights: the configured weights become multipliers
of ratios measured on the untrained network's first batch, so style weight 1.0 means "the
style loss starts equal to the content loss" whatever the VGG weights, layers or image size.
A resumed run takes the recorded weights back instead of measuring again.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from fnst_jax import stability
from fnst_jax.losses import LossSpec, tv_loss
from fnst_jax.train_step import Params, StepConfig, make_eval_fn, validation_rng
from fnst_jax.vgg import VGG19


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
    """loss.style_multipliers: one per style (checked by `style_targets.style_paths`); () = 1s."""
    given = tuple(loss_config.get("style_multipliers") or ())
    return tuple(float(m) for m in given) if given else (1.0,) * num_styles


def auto_balance(
    step_config: StepConfig,
    *,
    params: Params,
    first_batch: jax.Array,
    vgg: VGG19,
    target_grams: dict[str, jax.Array],
) -> LossSpec:
    """`step_config.spec` balanced on the raw loss terms of the untrained network (`params`)
    on the run's first batch (`balance_weights`); every process gets the same weights."""
    probe = make_eval_fn(step_config)
    terms, _ = probe(params, first_batch, vgg, target_grams)
    raw = {k: float(v) for k, v in jax.device_get(terms).items() if k.startswith("raw_")}
    for style in range(1, step_config.trained_styles):  # per style: its own Gram magnitude
        terms, _ = probe(params, first_batch, vgg, target_grams, style)
        raw[f"raw_style/{style}"] = float(jax.device_get(terms)["raw_style"])
    # The untrained network's output is nearly flat, so its TV says nothing about the TV
    # of a stylized image; that of the natural content images is the useful yardstick.
    raw["raw_tv"] = float(tv_loss(first_batch))
    if step_config.spec.stability_weight:
        # Likewise the untrained network's output hardly moves at all; what the perturbation
        # does to the images themselves is the yardstick (`fnst_jax.stability`).
        raw["stability_yardstick"] = float(
            stability.yardstick(validation_rng(step_config.seed), first_batch)
        )
    if jax.process_count() > 1:  # every process must use the same weights
        from jax.experimental import multihost_utils

        gathered = multihost_utils.process_allgather(np.array(list(raw.values())))
        raw = dict(zip(raw, map(float, np.mean(gathered, 0)), strict=True))
    logging.info(
        "auto-balance on the first batch: %s", ", ".join(f"{k} {v:.4g}" for k, v in raw.items())
    )
    return balance_weights(step_config.spec, raw)


def balance_weights(spec: LossSpec, raw_terms: dict[str, float]) -> LossSpec:
    """The configured weights as multipliers of the content/style and content/TV ratios of
    `raw_terms` (style 1.0: the style loss starts equal to the content loss). Several styles:
    each style's weight is balanced on its own raw style loss (`raw_style` for style 0,
    `raw_style/<i>` for style i), times the configured weight and its multiplier
    (`spec.style_weights` holds those products). A zero or non-finite raw term leaves its
    weight as configured."""
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


def weights_of(spec: LossSpec) -> dict[str, Any]:
    """The weights as a checkpoint records them (JSON; `LossSpec.with_weights` takes them)."""
    return {
        "style_weight": spec.style_weight,
        "content_weight": spec.content_weight,
        "tv_weight": spec.tv_weight,
        "stability_weight": spec.stability_weight,
        "style_weights": None if spec.style_weights is None else list(spec.style_weights),
    }
