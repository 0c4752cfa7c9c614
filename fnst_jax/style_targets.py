"""The styles a run learns (`Styles`): their files, names and pixels, the target Grams the step
trains towards, the Grams validation's quality figures compare with, and the entries the
exported model lists.

One style: `config.style_image`. Several (`config.style_images`: one model, conditional
instance norm): the target Grams hold one row per style, in order, and every style is named
after its file's stem (`model_file.style_name`), so two files of one name are refused.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.typing import DTypeLike

from fnst_jax import image_io, model_file, quality, stroke
from fnst_jax.losses import LossSpec, style_grams
from fnst_jax.train_step import TrainingError
from fnst_jax.vgg import VGG19


def style_paths(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The style images a run learns: `style_images` when set (several: one multi-style
    model), else `style_image`; refuses two styles of one name and a `loss.style_multipliers`
    of another length."""
    many = tuple(config.get("style_images") or ())
    paths = many or ((config.style_image,) if config.style_image else ())
    if not paths:
        raise TrainingError(
            "no style image: pass --config.style_image=path/to/style.jpg, or for one model of "
            "several styles --config.style_images=\"('a.jpg', 'b.jpg')\""
        )
    names = [model_file.style_name(path) for path in paths]
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


def read_style(path: str) -> np.ndarray:
    """A style image file as uint8 RGB, at its own size."""
    try:
        return image_io.read_image(path).rgb
    except image_io.ImageReadError as e:
        raise TrainingError(f"style image: {e}") from e


@dataclasses.dataclass(frozen=True)
class Styles:
    """The style images of a run, each file decoded once."""

    paths: tuple[str, ...]
    pixels: tuple[np.ndarray, ...]  # uint8 RGB, each at its own size

    @classmethod
    def load(cls, config: ml_collections.ConfigDict) -> Styles:
        """The configured styles (`style_paths`), read."""
        paths = style_paths(config)
        return cls(paths=paths, pixels=tuple(read_style(path) for path in paths))

    @property
    def names(self) -> list[str]:
        """Each style's name (`model_file.style_name`: the file's stem)."""
        return [model_file.style_name(path) for path in self.paths]

    def entries(self) -> list[dict[str, str]]:
        """Each style's name, absolute path and thumbnail (`model_file.make_style_thumbnail`),
        for the model's metadata."""
        return [
            {
                "name": name,
                "image": str(Path(path).absolute()),
                "thumbnail": model_file.make_style_thumbnail(rgb),
            }
            for name, path, rgb in zip(self.names, self.paths, self.pixels, strict=True)
        ]

    def native_size(self, style_size: int | None) -> int:
        """The native size of a model trained on these styles at `style_size` (the stroke
        scale's "auto", `stroke.style_native_size`)."""
        sizes = [(rgb.shape[1], rgb.shape[0]) for rgb in self.pixels]
        return stroke.style_native_size(sizes, style_size)

    def target_grams(
        self, vgg: VGG19, *, style_size: int, spec: LossSpec, dtype: DTypeLike
    ) -> dict[str, jax.Array]:
        """The Grams the step trains towards, each style's shorter side at `style_size`:
        (N, C, C) per style layer for N styles (one row each, in order; the images may
        differ in shape)."""
        grams = jax.jit(style_grams, static_argnums=(2, 3))
        images = [image_io.resize_shorter_side(rgb, style_size)[None] for rgb in self.pixels]
        each = [grams(vgg, image, spec.style_layers, dtype) for image in images]
        return {layer: jnp.concatenate([g[layer] for g in each]) for layer in spec.style_layers}

    def quality_grams(self, vgg: VGG19, *, image_size: int) -> list[dict[str, jax.Array]] | None:
        """Each style's Grams for validation's quality figures (`quality.StyleTargets` at the
        validation size); None, with a warning, when the VGG weights stop before the layers
        the figures need."""
        if not quality.has_layers(vgg):
            logging.warning(
                "validation logs no quality figures: they need VGG layers %s, and %s hold only %s",
                ", ".join(quality.LAYERS),
                vgg.source or "the VGG weights",
                ", ".join(vgg.available_layers),
            )
            return None
        return [quality.StyleTargets(vgg, rgb).at(image_size) for rgb in self.pixels]
