"""A run's quality over its steps: is the last model the best one?

    python train.py --config configs/photos_mosaic.py --workdir runs/mosaic2000 \
        --config.train.steps=2000 --config.keep_checkpoints=20
    python benchmarks/over_steps.py runs/mosaic2000 [--photos ../shared/data/photos] \
        [--validation-fraction 0.08] [--longest-side 256] [--json steps.json] [--grid steps.jpg]

Prints two tables:

1. **Training validation** (the workdir's `metrics.jsonl`): at every validation, the total loss
   (the criterion of `best.npz`), style reduction, content change and the luminance and contrast
   ratios, on the validation images at the training size; the best step is marked.
2. **At the size users stylize at**: every checkpoint the run kept (`keep_checkpoints`: keep
   them all for this), then `best.npz`, measured as `benchmarks/recipe.py` measures a model
   (each held-out photo of `--photos` resized whole to `--longest-side`; the same columns).

`--grid`: per photo (up to 3), the photo and the outputs of the first kept checkpoint (early),
`best.npz` and the last checkpoint (late).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import recipe  # benchmarks/recipe.py, beside this script
from absl import logging

from fnst_jax import checkpoint, export, model_file, train_monitor
from fnst_jax.stylize.engine import Stylizer


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", help="a training workdir")
    parser.add_argument("--photos", default="../shared/data/photos", help="the training folder")
    parser.add_argument("--validation-fraction", type=float, default=0.08)
    parser.add_argument("--longest-side", type=int, default=256)
    parser.add_argument("--json", help="write every figure here")
    parser.add_argument("--grid", help="write a JPEG: per photo, it and early/best/late outputs")
    return parser.parse_args()


def validation_history(workdir: Path) -> list[dict[str, Any]]:
    """The validation records of metrics.jsonl, one per step (a resumed run logs some steps
    twice: the later record wins), ascending."""
    path = workdir / train_monitor.METRICS_FILE
    if not path.is_file():
        raise SystemExit(f"{path}: not found: is {workdir} a training workdir?")
    records = {int(r["step"]): r for r in train_monitor.read_metrics(workdir, "validation")}
    return [records[step] for step in sorted(records)]


def print_validation(history: list[dict[str, Any]], best_step: int | None) -> None:
    print("training validation (metrics.jsonl; validation images at the training size):")
    print(f"{'step':>6s} {'total':>10s} {recipe.FIGURES_HEADER}")
    for record in history:
        # Runs without quality figures (VGG weights short of relu3_1) log the losses only.
        shown = recipe.figures(record) if "style_reduction" in record else ""
        mark = "  <- best.npz" if record["step"] == best_step else ""
        print(f"{record['step']:6d} {record['total']:10.4g} {shown}{mark}")


def checkpoint_stylizer(workdir: Path, step: int) -> tuple[Stylizer, dict[str, Any]]:
    """A Stylizer of the checkpoint of `step`, and its exported-model metadata."""
    params, meta = checkpoint.restore_params(workdir, step)
    model = export.model_from_arrays(export.flatten_params(params), f"{workdir} step {step}")
    return Stylizer(model, pad=int(meta.get("pad") or 0)), meta


def main() -> None:
    args = parse_args()
    logging.set_verbosity(logging.ERROR)  # orbax's notes on reading checkpoints read-only
    workdir = Path(args.workdir)
    history = validation_history(workdir)
    best_path = workdir / model_file.BEST_FILENAME
    best_step = int(model_file.read_metadata(best_path)["step"]) if best_path.is_file() else None
    print_validation(history, best_step)

    steps = checkpoint.checkpoint_steps(workdir)
    if not steps:
        raise SystemExit(f"{workdir}: no checkpoints kept")
    photos = recipe.held_out_images(args.photos, args.validation_fraction, args.longest_side)
    print(f"\n{len(photos)} held-out photos of {args.photos}, longest side {args.longest_side} px:")
    print(f"{'model':>16s} {recipe.HEADER}")
    targets = None
    rows: list[dict[str, Any]] = []
    outputs: dict[str, list] = {}
    models = [(f"step {step}", step) for step in steps]
    if best_step is not None:
        models.append((f"best.npz ({best_step})", None))
    for label, step in models:
        if step is None:
            stylizer = Stylizer.from_model_file(best_path)
            meta = model_file.read_metadata(best_path)
        else:
            stylizer, meta = checkpoint_stylizer(workdir, step)
        targets = targets or recipe.style_targets(meta)
        summary, images = recipe.measure(label, stylizer, targets, photos)
        summary["step"] = best_step if step is None else step
        print(f"{label:>16s} {recipe.figures_line(summary, len(photos))}", flush=True)
        rows.append(summary)
        outputs[label] = images[: recipe.GRID_PHOTOS]
    print(recipe.LEGEND)
    if args.json:
        document = {"validation": history, "best_step": best_step, "models": rows}
        Path(args.json).write_text(
            json.dumps({"longest_side": args.longest_side, **document}, indent=1)
        )
    if args.grid:
        columns = [f"step {steps[0]}", f"best.npz ({best_step})", f"step {steps[-1]}"]
        columns = [c for c in columns if c in outputs]
        recipe.save_grid(args.grid, photos, [outputs[c] for c in columns])
        print(f"grid: {args.grid} (columns: the photo, {', '.join(columns)})")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
