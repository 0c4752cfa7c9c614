"""How good is a trained model? Its perceptual loss on unseen images, against Gatys' optimiser.

The paper's yardstick: on images it never saw, a feed-forward network reaches about the
loss that per-image L-BFGS optimisation (Gatys et al.) reaches after 50 to 100 iterations.
This module measures exactly that, with the objective training used: the loss spec, VGG
weights and preprocessing, style image and size, and border pad all come from the model's
metadata, and the numbers come from `losses.perceptual_loss`, the function the training
step calls. Only the images are new, and the model's output is clipped to the pixel range
before it is scored (training scores it unclipped: the two agree while it stays in range).

    python -m fnst_jax.evaluate --model workdir/model.npz --images photos/ --json eval.json
    python -m fnst_jax.evaluate --model workdir/best.npz ...    (the best validated model)
    python -m fnst_jax.evaluate --model four/model.npz --model-style all ...  (each style)

prints a table (per image and mean: weighted content, style and TV loss, their total, the
quality figures that no loss weight enters (`fnst_jax.quality`: style reduction, content
change, luminance and contrast of output vs photo, with the VGG at fixed layers),
stylization wall time, and the optimiser's loss at each iteration count), then where the
model's loss falls on the optimiser's loss curve (`equivalent_iterations`: interpolated in
log-iterations, or "fewer than the first count" / "more than the last count"), writes the JSON
report and an input | stylized grid PNG. Both sides are scored inside the valid pixel range:
the model's output clipped to [0, 255] (what `stylize.py` writes, before rounding), the
optimiser's image projected onto it after every step (`losses.PIXEL_RANGE`).
Exit status: 0, 1 if some image failed (each is named with its reason on stderr, the others
are still evaluated), 2 if the model, VGG weights, style image or outputs are unusable. The
command line follows `fnst_jax.cli` (absl flags, hyphens or underscores); the optimiser is
`fnst_jax.gatys.optimize`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from flax import nnx
from PIL import Image

from fnst_jax import cli, export, files, gatys, image_io, quality, vgg_weights
from fnst_jax.errors import UsageError, UserError
from fnst_jax.losses import (
    LossSpec,
    content_targets,
    perceptual_loss,
    style_grams,
    to_pixel_range,
)
from fnst_jax.stylize import styles
from fnst_jax.transformer_net import TransformerNet, single_style_model, stylize_padded
from fnst_jax.vgg import PREPROCESSING, VGG19

# Small counts too: a model worse than 50 L-BFGS iterations still gets a figure.
DEFAULT_BASELINE_ITERATIONS = (1, 2, 5, 10, 20, 50, 100, 300)
GRID_ROW_HEIGHT = 256
# Report keys of the weighted loss terms of `perceptual_loss`.
TERM_KEYS = {
    "content": "content_loss",
    "style": "style_loss",
    "tv": "tv_loss",
    "total": "total_loss",
}
# The quality figures in the printed table (header: report key); the JSON has every one of
# quality.KEYS.
QUALITY_COLUMNS = {
    "style_red": "style_reduction",
    "content_chg": "content_change",
    "lum_ratio": "luminance_ratio",
    "contr_ratio": "contrast_ratio",
}
QUALITY_LEGEND = (
    "style_red: style reduction (higher = more stylized; 1 = the photo); content_chg: "
    "content change (0 = the photo); lum_ratio, contr_ratio: the output's mean and std of "
    "luma over the photo's (fnst_jax.quality)"
)
# Reported per image (the image is skipped, the others evaluated; exit status 1).
PER_IMAGE_ERRORS = (image_io.ImageReadError, gatys.ImageTooSmallError, gatys.OptimizerDivergedError)


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
    ) -> None:
        vgg.check_layers(spec.vgg_layers)
        self.vgg, self.spec, self.pad = vgg, spec, pad
        # When given, each image's result also holds its quality figures (`fnst_jax.quality`).
        self.quality_targets = quality_targets
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
        return quality.resize_longest_side(image, longest_side)
    if image_size is None:
        return image
    from fnst_jax.data.preprocess import resize_and_crop

    return resize_and_crop(Image.fromarray(image), image_size)


def parse_iterations(text: str) -> tuple[int, ...]:
    """ "50,100,300" -> (50, 100, 300); "" / "none" / "0" -> () (no baseline).
    UsageError for anything else."""
    if text.strip().lower() in ("", "none", "0"):
        return ()
    try:
        values = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UsageError(
            f"--baseline-iterations: expected comma-separated integers, got {text!r}"
        ) from None
    if any(v <= 0 for v in values):
        raise UsageError(f"--baseline-iterations: counts must be positive, got {text!r}")
    return tuple(values)


@dataclasses.dataclass(frozen=True)
class Match:
    """Where the model's total loss falls on the optimiser's loss curve.

    bound "interpolated": the optimiser reaches the model's loss after `equivalent` (float)
    iterations; `iterations` is that count rounded. "fewer_than": the optimiser is already
    below the model at the first count evaluated, `iterations`. "more_than": the model is
    below the optimiser at every count, up to the last one, `iterations`. (equivalent is None
    for both bounds.)
    """

    bound: str
    iterations: int
    equivalent: float | None = None


def equivalent_iterations(model_total: float, baseline: Mapping[int, float]) -> Match | None:
    """The number of optimiser iterations worth the model: where the optimiser's loss curve
    first comes down to the model's loss. None for an empty baseline.

    The curve runs through the recorded (count, loss) points, linear in log(count) between
    them. The first crossing counts: on a curve that is not monotone (Adam; a mean of
    curves), the first count at which the loss is at or below the model's ends the search,
    and the crossing is interpolated within the segment before it. A loss equal to the
    model's at a recorded count matches that count exactly.
    """
    counts = sorted(baseline)
    if not counts:
        return None
    if counts[0] <= 0:
        raise ValueError(f"iteration counts must be positive (log scale), got {counts}")
    reached = [c for c in counts if baseline[c] <= model_total]
    if not reached:
        return Match("more_than", counts[-1])
    first = reached[0]
    if first == counts[0]:
        if baseline[first] < model_total:
            return Match("fewer_than", first)
        return Match("interpolated", first, float(first))
    before = counts[counts.index(first) - 1]
    above, below = baseline[before], baseline[first]  # above > model_total >= below
    fraction = (above - model_total) / (above - below)
    equivalent = float(np.exp(np.log(before) + fraction * (np.log(first) - np.log(before))))
    return Match("interpolated", round(equivalent), equivalent)


def summarize(results: Sequence[Mapping[str, Any]], iterations: Sequence[int]) -> dict[str, Any]:
    """Means over images of every term, the optimiser's mean loss per count, and where the
    mean model loss falls on the mean optimiser curve (`equivalent_iterations`)."""
    summary: dict[str, Any] = {
        key: float(np.mean([r[key] for r in results])) for key in TERM_KEYS.values()
    }
    for key in quality.KEYS:  # the quality figures: the means of the per-image figures
        if all(key in r for r in results):
            summary[key] = float(np.mean([r[key] for r in results]))
    summary["seconds_per_image"] = float(np.mean([r["seconds"] for r in results]))
    baseline = {it: float(np.mean([r["baseline"][str(it)] for r in results])) for it in iterations}
    summary["baseline"] = {str(it): loss for it, loss in baseline.items()}
    summary["ratio"] = {
        str(it): summary["total_loss"] / loss if loss > 0 else None for it, loss in baseline.items()
    }
    match = equivalent_iterations(summary["total_loss"], baseline)
    summary["matched_iterations"] = match.iterations if match else None
    summary["matched_iterations_bound"] = match.bound if match else None
    summary["equivalent_iterations"] = match.equivalent if match else None
    summary["num_images"] = len(results)
    return summary


def image_paths(inputs: Iterable[str]) -> tuple[list[Path], list[str]]:
    """Files, and the images below folders (sorted, hidden names skipped), as stylize finds
    them. Returns (paths, one error line per unusable argument)."""
    paths, errors = [], []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in image_io.IMAGE_EXTENSIONS
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                errors.append(f"{path}: folder holds no supported images")
            paths.extend(found)
        elif not path.exists():
            errors.append(f"{path}: no such file or directory")
        else:
            paths.append(path)  # an unreadable file is reported when it is read
    return paths, errors


def make_grid(rows: Sequence[Sequence[np.ndarray]], height: int = GRID_ROW_HEIGHT) -> Image.Image:
    """input | stylized (| stylized in another style ...), one row per image, each scaled to
    `height` px; white background."""
    scaled = []
    for pair in rows:
        cells = []
        for image in pair:
            h, w = image.shape[:2]
            width = max(1, round(w * height / h))
            cells.append(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))
        scaled.append(cells)
    width = max(sum(c.width for c in cells) for cells in scaled)
    grid = Image.new("RGB", (width, height * len(scaled)), (255, 255, 255))
    for row, cells in enumerate(scaled):
        x = 0
        for cell in cells:
            grid.paste(cell, (x, row * height))
            x += cell.width
    return grid


# --- command line -------------------------------------------------------------------------

PROG = "python -m fnst_jax.evaluate"
USAGE = f"""{PROG} --model MODEL --images IMAGE_OR_FOLDER [MORE ...] [options]

Measure a trained model: its perceptual loss (the training objective) on images, against
per-image optimisation (Gatys et al.) of the same loss. `--images` takes one or more files
and/or folders (the arguments after it are images too, so `--images $(cat list.txt)` works).

{PROG} [--model MODEL] --video CLIP [--frames N] [--stylized OTHER ...] [options]

Temporal consistency of a video instead (`fnst_jax.evaluate_video`): the warping error of
the model's stylized clip, of the clip itself (the floor) and of other stylized versions.
"""


def define_flags(flag_values: flags.FlagValues) -> None:
    """The command line's flags, on `flag_values` (a fresh FlagValues per `main` call)."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("model", None, "exported model .npz or training workdir", **fv)
    flags.DEFINE_multi_string("images", None, "image files and/or folders", **fv)
    flags.DEFINE_string("style", None, "style image to score against (default: the model's)", **fv)
    flags.DEFINE_string(
        "model-style",
        None,
        "multi-style models: which of its styles to evaluate (name or index; 'all': each "
        "in turn, one report)",
        **fv,
    )
    flags.DEFINE_integer(
        "style-size", None, "style image shorter side (default: the model's)", lower_bound=1, **fv
    )
    cli.define_vgg_layers(
        "style-layers",
        None,
        "override the model's style layers (layer weights reset to 1)",
        flag_values,
    )
    flags.DEFINE_string("vgg-weights", None, "VGG19 weights (default: the model's)", **fv)
    flags.DEFINE_enum("vgg-preprocessing", None, PREPROCESSING, "override the convention", **fv)
    flags.DEFINE_integer(
        "image-size",
        None,
        "shorter side + centre crop (default: the model's training size)",
        lower_bound=1,
        **fv,
    )
    flags.DEFINE_integer(
        "longest-side",
        None,
        "resize each whole image so that its longest side is this many pixels (no crop)",
        lower_bound=1,
        **fv,
    )
    flags.DEFINE_boolean("full-size", False, "evaluate images at their size", **fv)
    flags.DEFINE_string(
        "baseline-iterations",
        ",".join(map(str, DEFAULT_BASELINE_ITERATIONS)),
        "Gatys optimiser iteration counts to compare with ('none' to skip)",
        **fv,
    )
    flags.DEFINE_enum("baseline-optimizer", "lbfgs", gatys.OPTIMIZERS, "Gatys optimiser", **fv)
    flags.DEFINE_enum("baseline-init", "content", gatys.INITS, "Gatys initialisation", **fv)
    flags.DEFINE_string("json", None, "write the report here", **fv)
    flags.DEFINE_string(
        "grid", None, "input | stylized PNG (default: next to --json, or ./evaluate_grid.png)", **fv
    )
    flags.DEFINE_boolean("no-grid", False, "do not write the grid", **fv)
    flags.DEFINE_boolean("overwrite", False, "replace existing outputs", **fv)
    from fnst_jax import evaluate_video  # the --video mode (it imports this module)

    evaluate_video.define_flags(flag_values)


class SetupError(UserError):
    """Anything that stops the whole evaluation (exit status 2)."""


def _outputs(flag: Mapping[str, Any]) -> tuple[Path | None, Path | None]:
    json_path = Path(flag["json"]) if flag["json"] else None
    grid_path = None
    if not flag["no-grid"]:
        if flag["grid"]:
            grid_path = Path(flag["grid"])
        elif json_path is not None:
            grid_path = json_path.with_name(json_path.stem + "_grid.png")
        else:
            grid_path = Path("evaluate_grid.png")
    for path in (json_path, grid_path):
        if path is not None and path.exists() and not flag["overwrite"]:
            raise SetupError(f"{path}: already exists (pass --overwrite to replace it)")
    if grid_path is not None and grid_path.suffix.lower() != ".png":
        raise SetupError(f"{grid_path}: the grid is written as PNG; give a .png path")
    return json_path, grid_path


def _model_styles(flag: Mapping[str, Any]) -> list[str | None]:
    """The styles to evaluate, each in turn: `--model-style` as given (None for a one-style
    model), or every style of the model for `all`."""
    given = flag["model-style"]
    if given is None or given.lower() != styles.ALL:
        return [given]
    model, meta = export.load_model(flag["model"])
    return export.style_names(meta, model.num_styles) if model.num_styles > 1 else [None]


def _setup(flag: Mapping[str, Any], model_style: str | None) -> tuple[Evaluator, dict[str, Any]]:
    """The evaluator and report header of the model in `model_style` (None: a one-style
    model as it is)."""
    model, meta = export.load_model(flag["model"])  # export.ModelFileError: a UserError
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
    image_size = (
        None
        if flag["full-size"] or longest_side
        else (flag["image-size"] or int(meta["image_size"]))
    )
    report = {
        "model": str(flag["model"]),
        "model_style": meta.get("model_style"),
        "style_image": str(style),
        "style_size": style_size,
        "image_size": image_size,
        "longest_side": longest_side,
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
    evaluator = Evaluator(model, vgg, spec, target_grams, int(meta["pad"]), quality_targets)
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
    names = export.style_names(meta, model.num_styles)
    index = styles.choose_one(names, model_style, "--model-style", with_all=True)
    entries = meta.get("styles") or []
    if index >= len(entries) or spec.style_weights is None:
        raise SetupError(
            f"{flag['model']}: a {len(names)}-style model without its styles' metadata"
        )
    meta = dict(meta, style_image=entries[index]["image"], model_style=names[index])
    spec = dataclasses.replace(spec, style_weight=spec.style_weights[index], style_weights=None)
    return single_style_model(model, index), meta, spec


def _row(name: str, r: Mapping[str, Any], iterations: Sequence[int]) -> str:
    cells = [f"{r[key]:11.4g}" for key in TERM_KEYS.values()]
    cells += [f"{r.get(key, float('nan')):11.4g}" for key in QUALITY_COLUMNS.values()]
    cells.append(f"{r['seconds']:9.4f}")
    cells += [f"{r['baseline'][str(it)]:11.4g}" for it in iterations]
    name = name if len(name) <= 28 else "..." + name[-25:]
    return f"{name:28s} " + " ".join(cells)


def _header(iterations: Sequence[int]) -> str:
    names = ["content", "style", "tv", "total", *QUALITY_COLUMNS]
    cells = [f"{n:>11s}" for n in names] + [f"{'seconds':>9s}"]
    cells += [f"{'opt@' + str(it):>11s}" for it in iterations]
    return f"{'image':28s} " + " ".join(cells)


def _print_summary(
    summary: Mapping[str, Any], iterations: Sequence[int], report: Mapping[str, Any]
) -> None:
    print(
        _row(
            f"mean ({summary['num_images']} images)",
            summary | {"seconds": summary["seconds_per_image"], "baseline": summary["baseline"]},
            iterations,
        )
    )
    if "luminance" in summary:
        print(QUALITY_LEGEND)
        luma = f"mean luma: outputs {summary['luminance']:.1f}, photos "
        luma += f"{summary['photo_luminance']:.1f}"
        if "style_luminance" in report.get("quality", {}):
            luma += f", style image {report['quality']['style_luminance']:.1f}"
        print(luma + " (0..255)")
    if not iterations:
        return
    ratio = {it: summary["ratio"][str(it)] for it in iterations}
    ratios = "  ".join(
        f"@{it}: {r:.3g}" if r is not None else f"@{it}: -" for it, r in ratio.items()
    )
    print(f"model / optimiser total loss: {ratios}")
    optimiser = f"{report['baseline_optimizer']} from the {report['baseline_init']} image"
    print(matched_sentence(summary["total_loss"], summary["baseline"], optimiser))


def matched_sentence(model_total: float, baseline: Mapping[str, float], optimiser: str) -> str:
    """The report's conclusion in words (`equivalent_iterations`, explained)."""
    counts = sorted(int(k) for k in baseline)
    match = equivalent_iterations(model_total, {it: baseline[str(it)] for it in counts})
    if match is None:
        return "no optimiser baseline"
    if match.bound == "more_than":
        return (
            f"the model is worth more than {match.iterations} iterations of {optimiser}: its "
            f"loss is below the optimiser's at every count evaluated (up to {match.iterations})"
        )
    if match.bound == "fewer_than":
        return (
            f"the model is worth fewer than {match.iterations} iteration(s) of {optimiser}: "
            f"the optimiser is below the model's loss already at {match.iterations}, the first "
            "count evaluated"
        )
    if match.equivalent in counts:
        return f"the model is worth {match.iterations} iterations of {optimiser} (an exact match)"
    above = max(c for c in counts if c < match.equivalent)
    below = min(c for c in counts if c > match.equivalent)
    return (
        f"the model is worth ~{match.equivalent:.3g} iterations of {optimiser} (its loss lies "
        f"between the optimiser's at {above} and {below}; interpolated in log-iterations)"
    )


def _evaluate_image(
    path: Path,
    evaluator: Evaluator,
    report: Mapping[str, Any],
    iterations: Sequence[int],
    flag: Mapping[str, Any],
) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray]]:
    """One image's report entry and grid row; raises the per-image errors (unreadable, too
    small, optimiser diverged), which main reports and skips."""
    rgb = image_io.read_image(path).rgb
    image = prepare_image(rgb, report["image_size"], report["longest_side"])
    gatys.check_image_size(path, image, evaluator.spec)
    batch = jnp.asarray(image, jnp.float32)[None]
    stylized, (result,) = evaluator.evaluate(batch)
    baseline: dict[str, float] = {}
    if iterations:
        _, records = gatys.optimize(
            evaluator.vgg,
            batch,
            evaluator.target_grams,
            evaluator.spec,
            iterations[-1],
            flag["baseline-optimizer"],
            flag["baseline-init"],
            record_at=iterations,
        )
        baseline = {str(it): records[it]["total"] for it in iterations}
        result["baseline_seconds"] = records[iterations[-1]]["seconds"]
    result = {"path": str(path), "size": list(image.shape[:2]), **result, "baseline": baseline}
    return result, (image, image_io.to_uint8(stylized[0]))


def _evaluate_style(
    paths: Sequence[Path],
    evaluator: Evaluator,
    report: Mapping[str, Any],
    iterations: Sequence[int],
    flag: Mapping[str, Any],
    failures: list[str],
) -> tuple[list[dict[str, Any]], dict[Path, tuple[np.ndarray, np.ndarray]]]:
    """Every image in one style: the per-image results and {path: (input, stylized)}; the
    images that fail are added to `failures` (once, whichever style met them first)."""
    results, stylized = [], {}
    print(_header(iterations), flush=True)
    for path in paths:
        try:
            result, grid_row = _evaluate_image(path, evaluator, report, iterations, flag)
        except PER_IMAGE_ERRORS as e:
            message = f"{path}: {str(e).removeprefix(f'{path}: ')}"
            if message not in failures:
                failures.append(message)
                print(f"error: {message}", file=sys.stderr)
            continue
        results.append(result)
        stylized[path] = grid_row
        print(_row(str(path), result, iterations), flush=True)
    return results, stylized


def _print_styles_table(documents: Sequence[Mapping[str, Any]]) -> None:
    """`--model-style all`: one line per style, the means over its images."""
    keys = {"total": "total_loss", **QUALITY_COLUMNS}
    print("\nper style (means):")
    print(f"{'style':20s} " + " ".join(f"{name:>11s}" for name in keys) + "  iterations")
    for document in documents:
        summary = document["summary"]
        cells = " ".join(f"{summary.get(key, float('nan')):11.4g}" for key in keys.values())
        matched = summary.get("equivalent_iterations") or summary.get("matched_iterations")
        bound = {"fewer_than": "<", "more_than": ">"}.get(
            summary.get("matched_iterations_bound"), ""
        )
        iterations = f"{bound}{matched:.3g}" if matched is not None else "-"
        print(f"{document['model_style']:20s} {cells}  {iterations}")


def _run(flag_values: flags.FlagValues, positional: Sequence[str]) -> int:
    if flag_values["video"].value:  # temporal consistency of a video: fnst_jax.evaluate_video
        from fnst_jax import evaluate_video

        return evaluate_video.run(flag_values, positional)
    cli.require(flag_values, "model", "images")
    flag = flag_values.flag_values_dict()
    views = [f"--{name}" for name in ("image-size", "longest-side", "full-size") if flag[name]]
    if len(views) > 1:
        raise UsageError(f"{' and '.join(views)} cannot be combined: give one (see --help)")
    iterations = parse_iterations(flag["baseline-iterations"])
    json_path, grid_path = _outputs(flag)
    model_styles = _model_styles(flag)
    setups = [_setup(flag, model_style) for model_style in model_styles]  # all checked first
    paths, failures = image_paths([*flag["images"], *positional])
    for message in failures:
        print(f"error: {message}", file=sys.stderr)

    documents, outputs = [], []
    for evaluator, report in setups:
        if len(setups) > 1:
            print(f"\nstyle {report['model_style']}:")
        results, stylized = _evaluate_style(paths, evaluator, report, iterations, flag, failures)
        if not results:
            print("error: no image could be evaluated", file=sys.stderr)
            return cli.EXIT_FAILED
        summary = summarize(results, iterations)
        _print_summary(summary, iterations, report)
        documents.append({**report, "images": results, "summary": summary})
        outputs.append(stylized)
    if len(documents) > 1:
        _print_styles_table(documents)
    if json_path is not None:
        if len(documents) == 1:
            document = {**documents[0], "failed": failures}
        else:  # one report per style, in the model's order
            document = {"model": str(flag["model"]), "styles": documents, "failed": failures}
        files.write_text_atomic(json_path, json.dumps(document, indent=2) + "\n")
        print(f"wrote {json_path}")
    if grid_path is not None:
        # input | stylized in each style, for the images every style evaluated
        rows = [
            (outputs[0][path][0], *(stylized[path][1] for stylized in outputs))
            for path in paths
            if all(path in stylized for stylized in outputs)
        ]
        image_io.write_image(grid_path, np.asarray(make_grid(rows)))
        print(f"wrote {grid_path}")
    if failures:
        print(f"{len(failures)} input(s) failed", file=sys.stderr)
        return cli.EXIT_FAILED
    return cli.EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; `argv` is sys.argv-style, program name first (default: sys.argv).
    Exit status 0, 1 when some image failed (the others are evaluated), 2 when the model,
    VGG weights, style image, outputs or flags are unusable."""
    return cli.run_command(define_flags, _run, sys.argv if argv is None else argv, USAGE)


if __name__ == "__main__":
    sys.exit(main())
