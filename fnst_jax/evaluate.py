"""How good is a trained model? Its perceptual loss on unseen images, against Gatys' optimiser.

The paper's yardstick: on images it never saw, a feed-forward network reaches about the
loss that per-image L-BFGS optimisation (Gatys et al.) reaches after 50 to 100 iterations.
This module measures exactly that, with the objective training used: the loss spec, VGG
weights and preprocessing, style image and size, and border pad all come from the model's
metadata, and the numbers come from `losses.perceptual_loss`, the function the training
step calls. Only the images are new.

    python -m fnst_jax.evaluate --model workdir/model.npz --images photos/ \
        --baseline-iterations 50,100,300 --json eval.json

prints a table (per image and mean: weighted content, style and TV loss, their total,
stylization wall time, and the optimiser's loss at each iteration count), writes the JSON
report and an input | stylized grid PNG. Exit status: 0, 1 if some image failed (each is
named with its reason on stderr, the others are still evaluated), 2 if the model, VGG
weights, style image or outputs are unusable.
"""

from __future__ import annotations

import argparse
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
from flax import nnx

from fnst_jax import gatys, image_io
from fnst_jax.export import ModelFileError, load_model
from fnst_jax.losses import LossSpec, content_targets, perceptual_loss, style_grams
from fnst_jax.transformer_net import TransformerNet, stylize_padded
from fnst_jax.vgg import VGG19

DEFAULT_BASELINE_ITERATIONS = (50, 100, 300)
GRID_ROW_HEIGHT = 256
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
    ):
        vgg.check_layers(spec.vgg_layers)
        self.vgg, self.spec, self.pad = vgg, spec, pad
        self.target_grams = dict(target_grams)
        graphdef, self._state = nnx.split(model)

        @jax.jit
        def stylize(state, images):
            return stylize_padded(nnx.merge(graphdef, state), images, pad)

        @jax.jit
        def score(vgg, images, stylized, target_grams):
            # The training objective, verbatim: content targets of the inputs, then the loss.
            features = content_targets(vgg, images, spec)
            return perceptual_loss(vgg, stylized, features, target_grams, spec)[1]

        self._stylize, self._score = stylize, score
        self._compiled_shapes: set[tuple[int, ...]] = set()

    def stylize(self, images: jax.Array) -> tuple[jax.Array, float]:
        """(N, H, W, 3) in [0, 255] -> (unclamped stylized float32, steady-state seconds).

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
        """The weighted loss terms of each image on its own (as a batch of one)."""
        images = jnp.asarray(images, jnp.float32)
        results = []
        for i in range(images.shape[0]):
            terms = self._score(self.vgg, images[i : i + 1], stylized[i : i + 1], self.target_grams)
            results.append({key: float(terms[name]) for name, key in TERM_KEYS.items()})
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
    for key in ("style_layers", "style_layer_weights"):
        if loss.get(key) is not None:
            loss[key] = tuple(loss[key])
    return LossSpec(**loss)


def load_style_grams(
    vgg: VGG19, style_path: str | Path, style_size: int | None, layers: Sequence[str]
) -> dict[str, jax.Array]:
    """Target Grams of a style image, resized as training does (shorter side = style_size)."""
    style = gatys.load_style_image(style_path, style_size)
    return style_grams(vgg, jnp.asarray(style, jnp.float32), layers)


def prepare_image(image: np.ndarray, image_size: int | None) -> np.ndarray:
    """Training's validation view: shorter side to `image_size`, centre square crop.
    None keeps the image as it is (--full-size)."""
    if image_size is None:
        return image
    from PIL import Image

    from fnst_jax.data.preprocess import resize_and_crop

    return resize_and_crop(Image.fromarray(image), image_size)


def parse_iterations(text: str) -> tuple[int, ...]:
    """ "50,100,300" -> (50, 100, 300); "" / "none" / "0" -> () (no baseline)."""
    if text.strip().lower() in ("", "none", "0"):
        return ()
    try:
        values = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"iteration counts must be positive, got {text!r}")
    return tuple(values)


def matched_iterations(model_total: float, baseline: Mapping[int, float]) -> int | None:
    """The smallest listed iteration count at which the optimiser's loss is at or below the
    model's; None when the model beats the optimiser at every listed count."""
    for iterations in sorted(baseline):
        if baseline[iterations] <= model_total:
            return iterations
    return None


def summarize(results: Sequence[Mapping[str, Any]], iterations: Sequence[int]) -> dict[str, Any]:
    """Means over images of every term, the optimiser's mean loss per count, and the match."""
    summary: dict[str, Any] = {
        key: float(np.mean([r[key] for r in results])) for key in TERM_KEYS.values()
    }
    summary["seconds_per_image"] = float(np.mean([r["seconds"] for r in results]))
    baseline = {it: float(np.mean([r["baseline"][str(it)] for r in results])) for it in iterations}
    summary["baseline"] = {str(it): loss for it, loss in baseline.items()}
    summary["ratio"] = {
        str(it): summary["total_loss"] / loss if loss > 0 else None for it, loss in baseline.items()
    }
    summary["matched_iterations"] = matched_iterations(summary["total_loss"], baseline)
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


def make_grid(rows: Sequence[tuple[np.ndarray, np.ndarray]], height: int = GRID_ROW_HEIGHT):
    """input | stylized, one row per image, each scaled to `height` px; white background."""
    from PIL import Image

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fnst_jax.evaluate",
        description="Measure a trained model: its perceptual loss (the training objective) on "
        "images, against per-image optimisation (Gatys et al.) of the same loss.",
    )
    parser.add_argument("--model", required=True, help="exported model .npz or training workdir")
    parser.add_argument("--images", required=True, nargs="+", help="image files and/or folders")
    parser.add_argument("--style", help="style image to score against (default: the model's)")
    parser.add_argument(
        "--style-size",
        type=gatys.positive_int,
        default=None,
        help="style image shorter side (default: the model's)",
    )
    parser.add_argument(
        "--style-layers",
        type=gatys.parse_layers,
        default=None,
        help="override the model's style layers (layer weights reset to 1)",
    )
    parser.add_argument("--vgg-weights", help="VGG19 weights (default: the model's)")
    parser.add_argument("--vgg-preprocessing", choices=("torch", "caffe"), default=None)
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--image-size",
        type=gatys.positive_int,
        default=None,
        help="shorter side + centre crop (default: the model's training size)",
    )
    size.add_argument("--full-size", action="store_true", help="evaluate images at their size")
    parser.add_argument(
        "--baseline-iterations",
        type=parse_iterations,
        default=DEFAULT_BASELINE_ITERATIONS,
        help="Gatys optimiser iteration counts to compare with (default 50,100,300; "
        "'none' to skip)",
    )
    parser.add_argument("--baseline-optimizer", choices=gatys.OPTIMIZERS, default="lbfgs")
    parser.add_argument("--baseline-init", choices=gatys.INITS, default="content")
    parser.add_argument("--json", help="write the report here")
    parser.add_argument(
        "--grid", help="input | stylized PNG (default: next to --json, or ./evaluate_grid.png)"
    )
    parser.add_argument("--no-grid", action="store_true", help="do not write the grid")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return parser


class SetupError(Exception):
    """Anything that stops the whole evaluation (exit status 2)."""


def _outputs(args) -> tuple[Path | None, Path | None]:
    json_path = Path(args.json) if args.json else None
    grid_path = None
    if not args.no_grid:
        if args.grid:
            grid_path = Path(args.grid)
        elif json_path is not None:
            grid_path = json_path.with_name(json_path.stem + "_grid.png")
        else:
            grid_path = Path("evaluate_grid.png")
    for path in (json_path, grid_path):
        if path is not None and path.exists() and not args.overwrite:
            raise SetupError(f"{path}: already exists (pass --overwrite to replace it)")
    if grid_path is not None and grid_path.suffix.lower() != ".png":
        raise SetupError(f"{grid_path}: the grid is written as PNG; give a .png path")
    return json_path, grid_path


def _setup(args) -> tuple[Evaluator, dict[str, Any]]:
    try:
        model, meta = load_model(args.model)
    except ModelFileError as e:
        raise SetupError(str(e)) from None
    missing = [k for k in ("loss", "vgg", "pad", "image_size", "style_image") if k not in meta]
    if missing:
        raise SetupError(
            f"{args.model}: model metadata lacks {', '.join(missing)}; "
            "was it exported by the trainer?"
        )
    try:
        spec = spec_from_metadata(meta)
    except (TypeError, ValueError) as e:
        raise SetupError(f"{args.model}: unusable loss metadata ({e})") from None
    if args.style_layers:
        spec = dataclasses.replace(spec, style_layers=args.style_layers, style_layer_weights=None)
    weights = args.vgg_weights or meta["vgg"]["weights"]
    preprocessing = args.vgg_preprocessing or (
        None if args.vgg_weights else meta["vgg"].get("preprocessing")
    )
    try:
        vgg = gatys.load_vgg(weights, preprocessing)
        vgg.check_layers(spec.vgg_layers)
    except (ValueError, OSError) as e:
        raise SetupError(f"VGG weights {weights}: {e}") from None
    style = args.style or meta["style_image"]
    style_size = args.style_size or meta.get("style_size")
    try:
        target_grams = load_style_grams(vgg, style, style_size, spec.style_layers)
    except ValueError as e:
        hint = "" if args.style else " (the model's style image; pass --style to use another)"
        raise SetupError(f"{e}{hint}") from None
    image_size = None if args.full_size else (args.image_size or int(meta["image_size"]))
    report = {
        "model": str(args.model),
        "style_image": str(style),
        "style_size": style_size,
        "image_size": image_size,
        "loss": dataclasses.asdict(spec),
        "vgg": {"weights": weights, "preprocessing": vgg.preprocessing},
        "pad": int(meta["pad"]),
        "baseline_optimizer": args.baseline_optimizer,
        "baseline_init": args.baseline_init,
    }
    return Evaluator(model, vgg, spec, target_grams, int(meta["pad"])), report


def _row(name: str, r: Mapping[str, Any], iterations: Sequence[int]) -> str:
    cells = [f"{r[key]:11.4g}" for key in TERM_KEYS.values()]
    cells.append(f"{r['seconds']:9.4f}")
    cells += [f"{r['baseline'][str(it)]:11.4g}" for it in iterations]
    name = name if len(name) <= 28 else "..." + name[-25:]
    return f"{name:28s} " + " ".join(cells)


def _header(iterations: Sequence[int]) -> str:
    names = ["content", "style", "tv", "total"]
    cells = [f"{n:>11s}" for n in names] + [f"{'seconds':>9s}"]
    cells += [f"{'opt@' + str(it):>11s}" for it in iterations]
    return f"{'image':28s} " + " ".join(cells)


def _print_summary(summary: Mapping[str, Any], iterations: Sequence[int], report) -> None:
    print(
        _row(
            f"mean ({summary['num_images']} images)",
            summary | {"seconds": summary["seconds_per_image"], "baseline": summary["baseline"]},
            iterations,
        )
    )
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
    """The report's conclusion in words (the contract's `matched_iterations`, explained)."""
    counts = sorted(int(k) for k in baseline)
    matched = matched_iterations(model_total, {it: baseline[str(it)] for it in counts})
    if matched is None:
        return (
            f"the model's loss is below the optimiser's at every listed count "
            f"(up to {counts[-1]} iterations of {optimiser})"
        )
    if matched == counts[0] and baseline[str(matched)] < model_total:
        return (
            f"the optimiser is already below the model's loss after {matched} iterations "
            f"(the first listed count; {optimiser})"
        )
    if matched == counts[0]:
        return f"the model matches the optimiser at {matched} iterations ({optimiser})"
    previous = counts[counts.index(matched) - 1]
    return (
        f"the model matches the optimiser at ~{matched} iterations "
        f"(between {previous} and {matched}; {optimiser})"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        json_path, grid_path = _outputs(args)
        evaluator, report = _setup(args)
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    paths, failures = image_paths(args.images)
    for message in failures:
        print(f"error: {message}", file=sys.stderr)

    iterations = args.baseline_iterations
    results, grid_rows = [], []
    print(_header(iterations), flush=True)
    for path in paths:
        try:
            image = prepare_image(image_io.read_image(path).rgb, report["image_size"])
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
                    args.baseline_optimizer,
                    args.baseline_init,
                    record_at=iterations,
                )
                baseline = {str(it): records[it]["total"] for it in iterations}
                result["baseline_seconds"] = records[iterations[-1]]["seconds"]
        except (image_io.ImageReadError, gatys.ImageTooSmallError, FloatingPointError) as e:
            reason = str(e).removeprefix(f"{path}: ")
            failures.append(f"{path}: {reason}")
            print(f"error: {failures[-1]}", file=sys.stderr)
            continue
        result = {"path": str(path), "size": list(image.shape[:2]), **result, "baseline": baseline}
        results.append(result)
        grid_rows.append((image, gatys.to_uint8(stylized)))
        print(_row(str(path), result, iterations), flush=True)

    if not results:
        print("error: no image could be evaluated", file=sys.stderr)
        return 1
    summary = summarize(results, iterations)
    _print_summary(summary, iterations, report)
    if json_path is not None:
        document = {**report, "images": results, "summary": summary, "failed": failures}
        text = json.dumps(document, indent=2) + "\n"
        files.write_text_atomic(json_path, text)
        print(f"wrote {json_path}")
    if grid_path is not None:
        image_io.write_image(grid_path, np.asarray(make_grid(grid_rows)))
        print(f"wrote {grid_path}")
    if failures:
        print(f"{len(failures)} input(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
