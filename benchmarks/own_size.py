"""Style models judged where people look: photos stylized at their own size, as `stylize.py`
writes them, scored as they are seen (a thumbnail and a screen).

    python benchmarks/own_size.py runs/a runs/b ... [--model best] \
        [--large ../shared/data/photos_large] [--photos ../shared/data/photos] \
        [--upscales 2,3] [--stroke-scales auto] [--upsamplers bicubic] [--detail-passes on] \
        [--keep-brightness on] [--json own_size.json] [--grid own_size.jpg] [--grid-height 384]

For each run (a training workdir or a model file) and each stroke setting, the cases are:

  large          every photo of --large at its own size
  large@256      the same photos resized to a longest side of 256 px first (`--size 256`)
  held-out       the photos of --photos that training held out (--validation-fraction), at
                 their own size
  held-out xN    those photos upsampled N times (bicubic; --upscales): a stand-in for large
                 photos, with the object scale of one and none of its fine detail

Each photo is stylized by the engine `stylize.py` runs (`Stylizer`), at the stroke scale's
working size, with its detail pass unless --detail-passes says off, upsampled, and given the
photo's brightness unless --keep-brightness says off (`fnst_jax.stroke`; labels "1-pass"
and "own" mark those off), and scored with `fnst_jax.quality` against the model's style
image, with output and photo viewed at a longest side of 256 and 512 px
(`evaluation.view_figures`; a photo smaller than a view is seen at its own size). Printed per
case, the means over its photos: style reduction and content change at each view, the
luminance ratio, and PASS/FAIL against the acceptance bounds (`BOUNDS`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import recipe  # benchmarks/recipe.py, beside this script
from PIL import Image

from fnst_jax import evaluate, image_io, model_file, stroke
from fnst_jax.evaluation import view_figures
from fnst_jax.stylize.engine import Stylizer

# Acceptance: per case, (least style reduction, most content change) at each view, and the
# luminance ratio's range. "large@256" is scored at its own (256 px) size.
BOUNDS = {
    "large": {"256": (2.7, 1.25), "512": (6.0, 2.2)},
    "large@256": {"256": (3.5, 1.25)},
}
LUMINANCE_RANGE = (0.85, 1.3)
GRID_HEIGHT = 384


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="training workdirs or model files")
    parser.add_argument("--model", choices=("model", "best"), default="best")
    parser.add_argument("--large", default="../shared/data/photos_large")
    parser.add_argument("--photos", default="../shared/data/photos")
    parser.add_argument("--validation-fraction", type=float, default=0.08)
    parser.add_argument("--upscales", default="2,3", help="held-out photos upsampled ('' none)")
    parser.add_argument("--stroke-scales", default="auto", help="comma-separated, e.g. auto,1")
    parser.add_argument("--upsamplers", default=stroke.DEFAULT_UPSAMPLER)
    parser.add_argument(
        "--detail-passes", default="on", help="comma-separated: on (the default), off"
    )
    parser.add_argument(
        "--keep-brightness", default="on", help="comma-separated: on (the default), off"
    )
    parser.add_argument("--json", help="write every figure here")
    parser.add_argument("--grid-height", type=int, default=GRID_HEIGHT, help="px a grid row")
    parser.add_argument(
        "--grid",
        help="a JPEG: a row for each large photo and for the first photo of each other case, "
        "the photo then each run's output at each setting",
    )
    return parser.parse_args()


def cases(args: argparse.Namespace) -> dict[str, list[tuple[str, np.ndarray]]]:
    """{case: [(name, uint8 photo)]} (module docstring)."""
    large = [
        (path.name, image_io.read_image(path).rgb)
        for path in sorted(Path(args.large).iterdir())
        if path.suffix.lower() in image_io.IMAGE_EXTENSIONS
    ]
    held_out = [
        (name, image_io.read_image(path).rgb)
        for name, path in recipe.held_out_files(args.photos, args.validation_fraction)
    ]
    found = {
        "large": large,
        "large@256": [(name, image_io.resize_longest_side(rgb, 256)) for name, rgb in large],
        "held-out": held_out,
    }
    for factor in (int(v) for v in args.upscales.split(",") if v.strip()):
        found[f"held-out x{factor}"] = [(name, _upscaled(rgb, factor)) for name, rgb in held_out]
    return found


def _upscaled(rgb: np.ndarray, factor: int) -> np.ndarray:
    height, width = rgb.shape[:2]
    return image_io.resize(
        rgb, (width * factor, height * factor), resample=Image.Resampling.BICUBIC
    )


def stylize(stylizer: Stylizer, setting: stroke.Stroke, photo: np.ndarray) -> np.ndarray:
    """What stylize.py writes for `photo` at this stroke setting."""
    height, width = photo.shape[:2]
    first = stylizer.stylize_batch([setting.prepare(photo)])
    (last,) = setting.refine(first, width, height, stylizer.stylize_batch)
    return setting.finish(last, photo)


def verdict(case: str, views: dict[str, dict[str, float]], luminance_ratio: float) -> str:
    """PASS/FAIL against `BOUNDS` and `LUMINANCE_RANGE` ("" for a case without bounds)."""
    if case not in BOUNDS:
        return ""
    passed = LUMINANCE_RANGE[0] <= luminance_ratio <= LUMINANCE_RANGE[1]
    for view, (least, most) in BOUNDS[case].items():
        passed &= views[view]["style_reduction"] >= least
        passed &= views[view]["content_change"] <= most
    return "PASS" if passed else "FAIL"


def measure_case(
    stylizer: Stylizer, setting: stroke.Stroke, targets: Any, photos: list
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Per photo and mean figures at each view for one case; the outputs."""
    per_photo, outputs = [], []
    for name, photo in photos:
        output = stylize(stylizer, setting, photo)
        views = view_figures(targets, photo, output)
        height, width = photo.shape[:2]
        per_photo.append(
            {
                "photo": name,
                "size": [width, height],
                "working": setting.working_size(width, height),
                "detail": setting.detail_size(width, height),
                "views": views,
            }
        )
        outputs.append(output)
    means = {
        view: {
            key: float(np.mean([p["views"][view][key] for p in per_photo]))
            for key in per_photo[0]["views"][view]
        }
        for view in per_photo[0]["views"]
    }
    return {"views": means, "photos": per_photo}, outputs


def main() -> None:
    args = parse_args()
    found = cases(args)
    settings = [
        stroke.Stroke(
            stroke.parse_scale(scale),
            upsampler=upsampler,
            detail=detail == "on",
            keep_brightness=keep == "on",
        )
        for scale in args.stroke_scales.split(",")
        for upsampler in args.upsamplers.split(",")
        for detail in args.detail_passes.split(",")
        for keep in args.keep_brightness.split(",")
    ]
    header = f"{'run':26s} {'stroke':>23s} {'case':14s} "
    header += f"{'style@256':>9s} {'cont@256':>8s} {'style@512':>9s} {'cont@512':>8s} {'luma':>5s}"
    print(header + "  pass")
    results = []
    rows = {
        (case, index): [photo]
        for case, photos in found.items()
        for index, (_, photo) in enumerate(photos)
        if case == "large" or index == 0
    }
    for run in args.runs:
        path = recipe.model_path(run, args.model)
        meta = model_file.read_metadata(path)
        targets = recipe.style_targets(meta)
        stylizer = Stylizer.from_model_file(path)
        for each in settings:
            setting = dataclasses.replace(each, native=stylizer.native_size)
            label = f"{'auto' if each.scale is None else f'{each.scale:g}'} {each.upsampler}"
            label += ("" if each.detail else " 1-pass") + ("" if each.keep_brightness else " own")
            for case, photos in found.items():
                summary, outputs = measure_case(stylizer, setting, targets, photos)
                views = summary["views"]
                luminance = views["256"]["luminance_ratio"]
                passed = verdict(case, views, luminance)
                cells = " ".join(
                    f"{views[view]['style_reduction']:8.2f}x {views[view]['content_change']:8.3f}"
                    for view in ("256", "512")
                )
                print(
                    f"{Path(run).name:26s} {label:>23s} {case:14s} {cells} {luminance:5.2f}  "
                    f"{passed}",
                    flush=True,
                )
                results.append(
                    {
                        "run": run,
                        "native_size": stylizer.native_size,
                        "stroke": label,
                        "case": case,
                        "pass": passed,
                        **summary,
                    }
                )
                for index, output in enumerate(outputs):
                    if (case, index) in rows:
                        rows[(case, index)].append(output)
    print(
        "style@N, cont@N: style reduction and content change with output and photo viewed at "
        "a longest side of N px; luma: output/photo luminance ratio (256 view)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"bounds": BOUNDS, "results": results}, indent=1))
    if args.grid:
        grid = evaluate.make_grid(list(rows.values()), args.grid_height)
        grid.convert("RGB").save(args.grid, quality=85)
        print(f"grid: {args.grid}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
