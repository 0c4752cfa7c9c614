"""Training recipes compared by the quality figures: style reduction, content change
and luminance of each run's model on the photos held out from training, at the size users
stylize at.

    python benchmarks/recipe.py runs/a runs/b ... [--photos ../shared/data/photos] \
        [--validation-fraction 0.08] [--longest-side 256] [--model best] \
        [--bounds 2.7,1.25] [--json recipes.json] [--grid recipes.jpg]

Arguments are training workdirs (their `model.npz`, or `best.npz` with `--model best`) or model
files. Each held-out photo (`validation_fraction` of `--photos`, the split training used) is
resized whole so that its longest side is `--longest-side` px, stylized as `stylize.py` does
(the model's pad, uint8 output) and measured with `fnst_jax.quality` against the model's style
image (`evaluate --longest-side` computes the same figures per image). Printed per run, the
means over the photos:

- style reduction (higher: closer to the style's Grams) and content change (lower: more of the
  photo kept), with PASS/FAIL against `--bounds` (reduction at least, change at most);
- the luminance ratio (output / photo) and contrast ratio, and how many outputs have a mean
  luminance inside the range spanned by their photo's and the style image's, widened by 15%
  each way (`LUMINANCE_SLACK`): below it an output went dark, above it washed out.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from fnst_jax import evaluate, image_io, model_file, quality, vgg_weights
from fnst_jax.data.sources import FolderSource, held_out_indices
from fnst_jax.stylize.engine import Stylizer

LUMINANCE_SLACK = 0.15  # within the photo/style luminance range, give or take 15%
GRID_PHOTOS = 3
FIGURES_HEADER = f"{'reduction':>9s} {'change':>7s}  {'luma':>5s} {'contr':>5s}"
HEADER = f"{FIGURES_HEADER} {'luma in range':>13s}"
LEGEND = (
    "luma, contr: mean output/photo ratios of luminance and contrast; luma in range: outputs "
    f"whose luminance lies between the photo's and the style's (+-{LUMINANCE_SLACK:.0%})"
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="training workdirs or model files")
    parser.add_argument("--photos", default="../shared/data/photos", help="the training folder")
    parser.add_argument("--validation-fraction", type=float, default=0.08)
    parser.add_argument("--longest-side", type=int, default=256)
    parser.add_argument(
        "--model",
        choices=("model", "best"),
        default="model",
        help="which file of a workdir: the last model or the best validated",
    )
    parser.add_argument(
        "--bounds",
        default="2.7,1.25",
        help="least style reduction, most content change (PASS/FAIL)",
    )
    parser.add_argument("--json", help="write every figure here")
    parser.add_argument("--grid", help="write a JPEG: per photo (up to 3), it and each output")
    return parser.parse_args()


def model_path(run: str, which: str) -> str:
    """A workdir's model.npz or best.npz; a file as given."""
    if which == "best" and Path(run).is_dir():
        return str(Path(run) / model_file.BEST_FILENAME)
    return str(model_file.resolve_model_path(run))


def held_out_files(folder: str, fraction: float) -> list[tuple[str, str]]:
    """(name, path) of each photo of `folder` that training with `validation_fraction` =
    `fraction` holds out (`fnst_jax.data.sources.held_out_indices`)."""
    source = FolderSource(folder)
    return [
        (source.key(int(i)), source.describe(int(i))) for i in held_out_indices(source, fraction)
    ]


def held_out_images(
    folder: str, fraction: float, longest_side: int
) -> list[tuple[str, np.ndarray]]:
    """(name, uint8 image resized whole to `longest_side`) of each held-out photo."""
    return [
        (name, image_io.resize_longest_side(image_io.read_image(path).rgb, longest_side))
        for name, path in held_out_files(folder, fraction)
    ]


def luminance_inside(figures: dict[str, float], style_luminance: float) -> bool:
    """Whether the output's mean luminance lies in [min, max] of the photo's and the style's,
    widened by `LUMINANCE_SLACK` each way."""
    low = min(figures["photo_luminance"], style_luminance) * (1 - LUMINANCE_SLACK)
    high = max(figures["photo_luminance"], style_luminance) * (1 + LUMINANCE_SLACK)
    return low <= figures["luminance"] <= high


def style_targets(meta: dict[str, Any]) -> quality.StyleTargets:
    """The quality figures' style targets of a model (its VGG weights and style image)."""
    vgg = vgg_weights.load_vgg(meta["vgg"]["weights"], meta["vgg"].get("preprocessing"))
    return quality.StyleTargets(vgg, image_io.read_image(meta["style_image"]).rgb)


def measure(
    label: str,
    stylizer: Stylizer,
    targets: quality.StyleTargets,
    photos: list[tuple[str, np.ndarray]],
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """One model's figures per photo and their means (`luminance_inside`: how many), and its
    outputs."""
    style_luminance = targets.luminance()["luminance"]
    per_photo, outputs = [], []
    for name, photo in photos:
        output = stylizer.stylize(photo)
        batch = [jnp.asarray(image, jnp.float32)[None] for image in (photo, output)]
        (figures,) = quality.measure(targets, *batch)
        figures["luminance_inside"] = luminance_inside(figures, style_luminance)
        per_photo.append({"photo": name, **figures})
        outputs.append(output)
    means = {key: float(np.mean([p[key] for p in per_photo])) for key in quality.KEYS}
    summary = {
        "model": label,
        "style_luminance": style_luminance,
        **means,
        "luminance_inside": sum(p["luminance_inside"] for p in per_photo),
        "photos": per_photo,
    }
    return summary, outputs


def measure_run(path: str, photos: list[tuple[str, np.ndarray]]) -> tuple[dict[str, Any], list]:
    """`measure` of a model file (or workdir), with what it was trained with."""
    meta = model_file.read_metadata(path)
    summary, outputs = measure(path, Stylizer.from_model_file(path), style_targets(meta), photos)
    summary["style_image"] = meta["style_image"]
    summary["trained"] = {k: meta.get(k) for k in ("image_size", "pad", "style_size", "step")}
    return summary, outputs


def figures(values: dict[str, Any]) -> str:
    """Style reduction, content change, luminance and contrast ratios under `FIGURES_HEADER`
    (of a `measure` summary, or of a validation record of metrics.jsonl: the same keys)."""
    return (
        f"{values['style_reduction']:8.2f}x {values['content_change']:7.3f}  "
        f"{values['luminance_ratio']:5.2f} {values['contrast_ratio']:5.2f}"
    )


def figures_line(summary: dict[str, Any], count: int) -> str:
    """The printed figures of a `measure` summary under `HEADER` (after the run's name)."""
    return f"{figures(summary)} {summary['luminance_inside']:>6d} of {count}"


def save_grid(
    path: str, photos: list[tuple[str, np.ndarray]], columns: list[list[np.ndarray]]
) -> None:
    """A JPEG: one row per photo (up to `GRID_PHOTOS`), the photo then each column's output."""
    rows = [
        [photo, *(column[i] for column in columns)]
        for i, (_, photo) in enumerate(photos[:GRID_PHOTOS])
    ]
    evaluate.make_grid(rows).convert("RGB").save(path, quality=90)


def main() -> None:
    args = parse_args()
    least_reduction, most_change = (float(v) for v in args.bounds.split(","))
    photos = held_out_images(args.photos, args.validation_fraction, args.longest_side)
    print(
        f"{len(photos)} held-out photos of {args.photos}, longest side {args.longest_side} px; "
        f"bounds: style reduction >= {least_reduction}x, content change <= {most_change}"
    )
    print(f"{'run':34s} {HEADER}  pass")
    summaries, grid_columns = [], []
    for run in args.runs:
        summary, outputs = measure_run(model_path(run, args.model), photos)
        passed = (
            summary["style_reduction"] >= least_reduction
            and summary["content_change"] <= most_change
        )
        summary["pass"] = passed
        verdict = "PASS" if passed else "FAIL"
        print(f"{run:34s} {figures_line(summary, len(photos))}  {verdict}", flush=True)
        summaries.append(summary)
        grid_columns.append(outputs[:GRID_PHOTOS])
    print(LEGEND)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"longest_side": args.longest_side, "runs": summaries}, indent=1)
        )
    if args.grid:
        save_grid(args.grid, photos, grid_columns)
        print(f"grid: {args.grid} (columns: the photo, then {', '.join(args.runs)})")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
