"""Validation during training: the fixed batch of held-out images (`prepare_validation`, which
also lists them in WORKDIR/validation_images.txt for `evaluate --images`), and what scoring
a model on it gives (`Validation`: loss terms, quality figures, the stylized images).

Scored as `evaluate` scores: the output clipped to pixels (`train_step.make_eval_fn`), the
stability term's perturbations fixed, the quality figures (`fnst_jax.quality`) against each
style image at the validation size. With `config.validation_size` the quality figures are
also taken where users look (`SizedView`): the same held-out images cropped at that size,
stylized as stylize.py would (stroke scale auto: the network at the model's native size,
its detail pass, upsampled, the photo's brightness kept; `fnst_jax.stroke`), logged as
`at{size}/style_reduction` and so on.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import jax
import ml_collections
import numpy as np

from fnst_jax import data, image_io, quality, stroke
from fnst_jax.files import write_text_atomic
from fnst_jax.train_step import EvalFn, Params, StylizeFn
from fnst_jax.vgg import VGG19

VALIDATION_FILE = "validation_images.txt"
VALIDATION_DIR = "validation"  # the validation images of sources whose records are not files
MAX_SLUG_LENGTH = 60  # characters of a record's name kept in its validation file's name


def prepare_validation(config: ml_collections.ConfigDict, workdir: str | Path) -> np.ndarray:
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


# The figures a `SizedView` logs, each as f"at{size}/{key}".
SIZED_KEYS = ("style_reduction", "content_change", "luminance_ratio", "contrast_ratio")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SizedView:
    """The validation images at the size users stylize at: `photos` (B, size, size, 3),
    the network's input `working` (at the stroke scale's working size, `setting`), and each
    style's quality Grams at that size."""

    size: int
    photos: np.ndarray
    working: np.ndarray
    setting: stroke.Stroke
    grams: list[dict[str, jax.Array]]

    @classmethod
    def prepare(
        cls, config: ml_collections.ConfigDict, native_size: int, grams: list[dict[str, jax.Array]]
    ) -> SizedView:
        size = int(config.validation_size)
        photos = data.load_validation_images(
            config.data, image_size=size, count=config.num_validation_images, seed=config.train.seed
        )
        setting = stroke.Stroke(None, native_size)
        working = np.stack([setting.prepare(photo) for photo in photos])
        return cls(size=size, photos=photos, working=working, setting=setting, grams=grams)

    def figures(
        self,
        stylize: Callable[[np.ndarray], jax.Array],
        vgg: VGG19,
        style: int,
    ) -> dict[str, float]:
        """The `SIZED_KEYS` figures of the network (`stylize`: (B, h, w, 3) -> its clipped
        outputs) run on `working`, its detail pass and the upsampling."""

        def network(images: list[np.ndarray]) -> list[np.ndarray]:
            return list(image_io.to_uint8(np.asarray(stylize(np.stack(images)))))

        height, width = self.photos.shape[1:3]
        last = self.setting.refine(network(list(self.working)), width, height, network)
        outputs = np.stack(
            [
                self.setting.finish(output, photo)
                for output, photo in zip(last, self.photos, strict=True)
            ]
        )
        means = quality.mean_figures(vgg, self.photos, outputs, self.grams[style])
        return {f"at{self.size}/{key}": means[key] for key in SIZED_KEYS}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Validation:
    """The fixed validation batch scored with given parameters -> (figures, stylized).

    One style: the loss terms and quality figures (`figures`) and the (B, H, W, 3) outputs.
    Several: every style in turn; the figures are the means over the styles (what the chart
    plots and best.npz is chosen by) plus each style's own, prefixed with its name
    (`candy/total`, ...); the outputs are (N, B, H, W, 3), a sample row per style.
    """

    evaluate: EvalFn  # `train_step.make_eval_fn(..., clip_to_pixels=True)`
    images: np.ndarray
    vgg: VGG19
    target_grams: dict[str, jax.Array]
    quality_grams: list[dict[str, jax.Array]] | None  # per trained style; None: no figures
    names: list[str]  # of the trained styles
    sized: SizedView | None = None  # the figures at the size users stylize at, if any
    stylize: StylizeFn | None = None  # `train_step.make_stylize_fn`: what `sized` runs on

    def __post_init__(self) -> None:
        if self.sized is not None and self.stylize is None:
            raise ValueError("Validation: a sized view needs the network alone (`stylize`)")

    def _one(self, params: Params, style: int) -> tuple[dict[str, float], jax.Array]:
        terms, stylized = self.evaluate(params, self.images, self.vgg, self.target_grams, style)
        grams = None if self.quality_grams is None else self.quality_grams[style]
        logged = figures(terms, self.images, stylized, self.vgg, grams)
        if self.sized is not None:

            def stylize(images: np.ndarray) -> jax.Array:
                return self.stylize(params, images, self.target_grams, style)

            logged.update(self.sized.figures(stylize, self.vgg, style))
        return logged, stylized

    def __call__(self, params: Params) -> tuple[dict[str, float], np.ndarray]:
        if len(self.names) == 1:
            one, stylized = self._one(params, 0)
            return one, np.asarray(stylized)
        scored = [self._one(params, index) for index in range(len(self.names))]
        per_style = [style_figures for style_figures, _ in scored]
        mean = {key: float(np.mean([f[key] for f in per_style])) for key in per_style[0]}
        for name, own in zip(self.names, per_style, strict=True):
            mean.update({f"{name}/{key}": value for key, value in own.items()})
        return mean, np.stack([np.asarray(stylized) for _, stylized in scored])


def figures(
    terms: dict,
    images: np.ndarray,
    stylized: jax.Array,
    vgg: VGG19,
    quality_grams: dict[str, jax.Array] | None,
) -> dict[str, float]:
    """What a validation logs: the loss terms of the batch and, with `quality_grams`, the
    quality figures (means over the validation images)."""
    logged = {key: float(value) for key, value in jax.device_get(terms).items()}
    if quality_grams is not None:
        logged.update(quality.mean_figures(vgg, images, stylized, quality_grams))
    return logged
