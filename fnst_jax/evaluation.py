"""The evaluator: a trained model and the exact objective it was trained with, jitted once.

`setup(flag, model_style)` builds one from a model file and evaluate's flags: the model (in
one of its styles for a multi-style model), its loss spec, VGG weights and preprocessing,
style image and size, and pad, all from the model's metadata unless a flag overrides them,
plus the report header that records them. `Evaluator.evaluate` stylizes a batch (clipped to
the pixel range, as `stylize.py` writes it) and scores each image with
`losses.perceptual_loss`, the function the training step calls, and with the quality figures
(`fnst_jax.quality`). `python -m fnst_jax.evaluate` scores images with it, its `--video` mode
(`evaluate_video`) sampled frames, and the benchmarks their runs.

`prepare_image` is the view of an image that is scored: training's validation view (shorter
side resized, centre square crop), the whole image at a given longest side, or as it is (the
default: the image at its own size, stylized as `stylize.py` writes it, at the stroke scale's
working size and upsampled, `Evaluator.stylize_at`). `view_figures` scores an output as
people look at it: the quality figures with output and photo shown at a longest side of
`VIEW_SIZES` (a thumbnail and a screen) as well as at full size.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

from fnst_jax import export, gatys, image_io, model_file, quality, stroke, vgg_weights
from fnst_jax.errors import UserError
from fnst_jax.losses import (
    LossSpec,
    content_targets,
    perceptual_loss,
    style_grams,
    to_pixel_range,
)
from fnst_jax.stylize import styles
from fnst_jax.transformer_net import TransformerNet, single_style_model, stylize_padded
from fnst_jax.vgg import VGG19

# The viewing sizes (longest side, px) the quality figures are also reported at: a thumbnail
# and a screen. An image smaller than one is viewed at its own size.
VIEW_SIZES = (256, 512)

# Report keys of the weighted loss terms of `perceptual_loss`.
TERM_KEYS = {
    "content": "content_loss",
    "style": "style_loss",
    "tv": "tv_loss",
    "total": "total_loss",
}


class Evaluator:
    """A model and the exact training objective, jitted once: stylize, then score per image."""

    def __init__(
        self,
        model: TransformerNet,
        vgg: VGG19,
        spec: LossSpec,
        target_grams: Mapping[str, jax.Array],
        pad: int,
        quality_targets: quality.StyleTargets | None = None,
        stroke_setting: stroke.Stroke | None = None,
    ) -> None:
        vgg.check_layers(spec.vgg_layers)
        self.vgg, self.spec, self.pad = vgg, spec, pad
        # When given, each image's result also holds its quality figures (`fnst_jax.quality`).
        self.quality_targets = quality_targets
        # How `stylize_at` sizes the network's input (`setup`: from the flags and model);
        # None: at the image's own size.
        self.stroke_setting = stroke_setting or stroke.Stroke()
        self.target_grams = dict(target_grams)
        graphdef, self._state = nnx.split(model)

        @jax.jit
        def stylize(state: nnx.State, images: jax.Array) -> jax.Array:
            # What the model can deliver: its output inside the pixel range (stylize.py clips
            # it too), the same constraint the optimiser's image is held to.
            return to_pixel_range(stylize_padded(nnx.merge(graphdef, state), images, pad))

        @jax.jit
        def score(
            vgg: VGG19, images: jax.Array, stylized: jax.Array, target_grams: gatys.Grams
        ) -> dict[str, jax.Array]:
            # The training objective, verbatim: content targets of the inputs, then the loss.
            features = content_targets(vgg, images, spec)
            return perceptual_loss(vgg, stylized, features, target_grams, spec)[1]

        self._stylize, self._score = stylize, score
        self._compiled_shapes: set[tuple[int, ...]] = set()

    def stylize(self, images: jax.Array) -> tuple[jax.Array, float]:
        """(N, H, W, 3) in [0, 255] -> (stylized float32 clipped to [0, 255], unrounded;
        steady-state seconds).

        The first call at a new shape compiles; it is run once untimed so that the time
        reported is what a user pays per image, not the compiler's.
        """
        images = jnp.asarray(images, jnp.float32)
        if images.shape not in self._compiled_shapes:
            self._stylize(self._state, images).block_until_ready()
            self._compiled_shapes.add(images.shape)
        start = time.perf_counter()
        stylized = self._stylize(self._state, images).block_until_ready()
        return stylized, time.perf_counter() - start

    def stylize_at(self, image: np.ndarray, scale: stroke.Stroke) -> tuple[np.ndarray, float]:
        """One uint8 (H, W, 3) image stylized as stylize.py writes it with `scale`: the
        network at the working size, its detail pass, upsampled to (H, W), the photo's
        brightness kept -> (float32 (H, W, 3) on the 0..255 scale, steady-state seconds of
        the network). At the output size without `keep_brightness` the result is the
        network's own, unrounded."""
        working = scale.prepare(image)
        stylized, seconds = self.stylize(jnp.asarray(working, jnp.float32)[None])
        if working.shape == image.shape and not scale.keep_brightness:
            return np.asarray(stylized[0]), seconds
        timings = [seconds]

        def network(images: list[np.ndarray]) -> list[np.ndarray]:  # the detail pass
            detailed, detail_seconds = self.stylize(jnp.asarray(np.stack(images), jnp.float32))
            timings.append(detail_seconds)
            return list(image_io.to_uint8(np.asarray(detailed)))

        height, width = image.shape[:2]
        first = [image_io.to_uint8(np.asarray(stylized[0]))]
        (last,) = scale.refine(first, width, height, network)
        return scale.finish(last, image).astype(np.float32), sum(timings)

    def score(self, images: jax.Array, stylized: jax.Array) -> list[dict[str, float]]:
        """The weighted loss terms of each image on its own (as a batch of one), and its
        quality figures when the evaluator has `quality_targets`."""
        images = jnp.asarray(images, jnp.float32)
        results = []
        for i in range(images.shape[0]):
            terms = self._score(self.vgg, images[i : i + 1], stylized[i : i + 1], self.target_grams)
            results.append({key: float(terms[name]) for name, key in TERM_KEYS.items()})
        if self.quality_targets is not None:
            for result, figures in zip(
                results, quality.measure(self.quality_targets, images, stylized), strict=True
            ):
                result.update(figures)
        return results

    def evaluate(self, images: jax.Array) -> tuple[jax.Array, list[dict[str, float]]]:
        """Stylize and score a batch; each image's dict also holds its share of the time."""
        stylized, seconds = self.stylize(images)
        results = self.score(images, stylized)
        for result in results:
            result["seconds"] = seconds / len(results)
        return stylized, results


def spec_from_metadata(meta: Mapping[str, Any]) -> LossSpec:
    """The effective (auto-balanced) loss the model was trained with: meta["loss"]."""
    loss = dict(meta["loss"])
    for key in ("style_layers", "style_layer_weights", "style_weights"):
        if loss.get(key) is not None:
            loss[key] = tuple(loss[key])
    return LossSpec(**loss)


def load_style_grams(
    vgg: VGG19, style_path: str | Path, style_size: int | None, layers: Sequence[str]
) -> dict[str, jax.Array]:
    """Target Grams of a style image, resized as training does (shorter side = style_size)."""
    style = image_io.read_rgb_resized(style_path, style_size)
    return style_grams(vgg, jnp.asarray(style, jnp.float32)[None], layers)


def prepare_image(
    image: np.ndarray, image_size: int | None, longest_side: int | None = None
) -> np.ndarray:
    """Training's validation view: shorter side to `image_size`, centre square crop; or, with
    `longest_side`, the whole image resized (Lanczos) so that its longest side is that many
    pixels (--longest-side: the size users stylize at). Both None keep the image as it is
    (--full-size)."""
    if longest_side is not None:
        return image_io.resize_longest_side(image, longest_side)
    if image_size is None:
        return image
    from fnst_jax.data.preprocess import resize_and_crop

    return resize_and_crop(Image.fromarray(image), image_size)


def view_figures(
    targets: quality.StyleTargets, image: np.ndarray, output: np.ndarray
) -> dict[str, dict[str, float]]:
    """The quality figures of one output as people look at it: photo and output resized
    (Lanczos) to a longest side of each of `VIEW_SIZES` (at most the image's own) ->
    {str(view size): figures}."""
    longest = max(image.shape[:2])
    views = {}
    for size in VIEW_SIZES:
        shown = min(size, longest)
        photo = image_io.resize_longest_side(np.asarray(image, np.uint8), shown)
        stylized = image_io.resize_longest_side(image_io.to_uint8(output), shown)
        views[str(size)] = quality.measure(targets, photo[None], stylized[None])[0]
    return views


class SetupError(UserError):
    """Anything that stops the whole evaluation (exit status 2)."""


def model_styles(flag: Mapping[str, Any]) -> list[str | None]:
    """The styles to evaluate, each in turn: `--model-style` as given (None for a one-style
    model), or every style of the model for `all`."""
    given = flag["model-style"]
    if given is None or given.lower() != styles.ALL:
        return [given]
    model, meta = export.load_model(flag["model"])
    return model_file.style_names(meta, model.num_styles) if model.num_styles > 1 else [None]


def setup(flag: Mapping[str, Any], model_style: str | None) -> tuple[Evaluator, dict[str, Any]]:
    """The evaluator and report header of the model in `model_style` (None: a one-style
    model as it is). flag: evaluate's flags by name (`flag_values_dict()`); raises
    SetupError, or the UserErrors of the files it reads."""
    model, meta = export.load_model(flag["model"])  # model_file.ModelFileError: a UserError
    missing = [k for k in ("loss", "vgg", "pad", "image_size", "style_image") if k not in meta]
    if missing:
        raise SetupError(
            f"{flag['model']}: model metadata lacks {', '.join(missing)}; "
            "was it exported by the trainer?"
        )
    try:
        spec = spec_from_metadata(meta)
    except (TypeError, ValueError) as e:
        raise SetupError(f"{flag['model']}: unusable loss metadata ({e})") from None
    model, meta, spec = _one_style(flag, model, meta, spec, model_style)
    if flag["style-layers"]:
        layers = tuple(flag["style-layers"])
        spec = dataclasses.replace(spec, style_layers=layers, style_layer_weights=None)
    # The flags' VGG weights, else the model's with its preprocessing.
    weights = flag["vgg-weights"] or meta["vgg"]["weights"]
    preprocessing = flag["vgg-preprocessing"] or (
        None if flag["vgg-weights"] else meta["vgg"].get("preprocessing")
    )
    vgg = vgg_weights.load_vgg(weights, preprocessing)  # its errors name the file
    vgg.check_layers(spec.vgg_layers)  # too shallow for the loss: VGGLayerError, a UserError
    if not quality.has_layers(vgg):
        raise SetupError(
            f"{weights}: the quality figures need VGG layers {', '.join(quality.LAYERS)}; "
            f"these weights stop at {vgg.available_layers[-1]} (pass deeper --vgg-weights)"
        )
    style = flag["style"] or meta["style_image"]
    style_size = flag["style-size"] or meta.get("style_size")
    try:
        target_grams = load_style_grams(vgg, style, style_size, spec.style_layers)
        quality_targets = quality.StyleTargets(vgg, image_io.read_image(style).rgb)
    except image_io.ImageReadError as e:
        hint = "" if flag["style"] else " (the model's style image; pass --style to use another)"
        raise SetupError(f"{e}{hint}") from None
    longest_side = flag["longest-side"]
    image_size = flag["image-size"]
    # At the images' own size, as stylize.py writes them (stroke scale auto); at a given
    # size, the network runs at that size unless --stroke-scale says otherwise.
    own_size = not (image_size or longest_side)
    given = flag["stroke-scale"]
    try:
        scale = stroke.parse_scale(given if given is not None else stroke.AUTO if own_size else 1)
    except stroke.StrokeScaleError as e:
        raise SetupError(f"--stroke-scale: {e}") from None
    keep = flag["keep-brightness"]
    stroke_setting = stroke.Stroke(
        scale,
        stroke.native_size(meta),
        flag["upsampler"],
        detail=flag["detail-pass"],
        keep_brightness=own_size if keep is None else keep,
    )
    report = {
        "model": str(flag["model"]),
        "model_style": meta.get("model_style"),
        "style_image": str(style),
        "style_size": style_size,
        "image_size": image_size,
        "longest_side": longest_side,
        "stroke_scale": "auto" if scale is None else scale,
        "native_size": stroke_setting.native,
        "upsampler": stroke_setting.upsampler,
        "detail_pass": stroke_setting.detail,
        "keep_brightness": stroke_setting.keep_brightness,
        "view_sizes": list(VIEW_SIZES),
        "loss": dataclasses.asdict(spec),
        "vgg": {"weights": weights, "preprocessing": vgg.preprocessing},
        "pad": int(meta["pad"]),
        "baseline_optimizer": flag["baseline-optimizer"],
        "baseline_init": flag["baseline-init"],
        "quality": {
            "style_layers": list(quality.STYLE_LAYERS),
            "content_layer": quality.CONTENT_LAYER,
            "style_resize": "longest side = the evaluated image's longest side",
            "luma": quality.LUMINANCE_STANDARD,
            **{f"style_{k}": v for k, v in quality_targets.luminance().items()},
        },
    }
    pad = int(meta["pad"])
    evaluator = Evaluator(model, vgg, spec, target_grams, pad, quality_targets, stroke_setting)
    return evaluator, report


def _one_style(
    flag: Mapping[str, Any],
    model: TransformerNet,
    meta: dict[str, Any],
    spec: LossSpec,
    model_style: str | None,
) -> tuple[TransformerNet, dict[str, Any], LossSpec]:
    """A multi-style model is evaluated in one of its styles (--model-style): that style's
    parameters, style image and balanced weight. A one-style model as it is."""
    if model.num_styles == 1:
        return model, meta, spec
    names = model_file.style_names(meta, model.num_styles)
    index = styles.choose_one(names, model_style, "--model-style", with_all=True)
    entries = meta.get("styles") or []
    if index >= len(entries) or spec.style_weights is None:
        raise SetupError(
            f"{flag['model']}: a {len(names)}-style model without its styles' metadata"
        )
    meta = dict(meta, style_image=entries[index]["image"], model_style=names[index])
    spec = dataclasses.replace(spec, style_weight=spec.style_weights[index], style_weights=None)
    return single_style_model(model, index), meta, spec
