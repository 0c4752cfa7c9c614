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
    python -m fnst_jax.evaluate --model M --images photos/ --longest-side 256 ...  (at 256 px)

By default each image is scored at its own size, stylized as `stylize.py` writes it with its
default flags (stroke scale "auto": the network at the model's native size, its detail pass,
the result upsampled and given the photo's brightness; `fnst_jax.stroke`), and the quality
figures are reported at the full size and as people look at it: output and photo shown at a
longest side of 256 and of 512 px (`evaluation.VIEW_SIZES`). `--longest-side N` scores the
whole image at N px, `--image-size N` training's validation view (centre crop); with either,
the network's own output at that size is scored (`--stroke-scale 1 --nokeep-brightness`)
unless those flags say otherwise.

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

This module is the command: its flags, the loop over images and styles, the outputs. The
model and its objective are `fnst_jax.evaluation` (`setup`, `Evaluator`), the comparison with
the optimiser and the printed tables `fnst_jax.evaluation_report`, the `--video` mode
`fnst_jax.evaluate_video`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from absl import flags
from PIL import Image

from fnst_jax import cli, evaluate_video, files, gatys, image_io, stroke
from fnst_jax.errors import UsageError
from fnst_jax.evaluation import (
    Evaluator,
    SetupError,
    model_styles,
    prepare_image,
    setup,
    view_figures,
)
from fnst_jax.evaluation_report import (
    format_header,
    format_row,
    print_styles_table,
    print_summary,
    summarize,
)
from fnst_jax.vgg import PREPROCESSING

# Small counts too: a model worse than 50 L-BFGS iterations still gets a figure.
DEFAULT_BASELINE_ITERATIONS = (1, 2, 5, 10, 20, 50, 100, 300)
GRID_ROW_HEIGHT = 256
# Reported per image (the image is skipped, the others evaluated; exit status 1).
PER_IMAGE_ERRORS = (image_io.ImageReadError, gatys.ImageTooSmallError, gatys.OptimizerDivergedError)


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
            cell = image_io.resize(image, (width, height), resample=Image.Resampling.BICUBIC)
            cells.append(Image.fromarray(cell))
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
    flags.DEFINE_boolean(
        "full-size", False, "evaluate images at their own size (the default)", **fv
    )
    flags.DEFINE_string(
        "stroke-scale",
        None,
        "as stylize.py's (fnst_jax.stroke); default 'auto' at the images' own size, 1 with "
        "--longest-side or --image-size",
        **fv,
    )
    flags.DEFINE_enum(
        "upsampler",
        stroke.DEFAULT_UPSAMPLER,
        list(stroke.UPSAMPLERS),
        "as stylize.py's: how a result stylized below the image's size is brought to it",
        **fv,
    )
    flags.DEFINE_boolean(
        "detail-pass", True, "as stylize.py's: a second pass below the image's size", **fv
    )
    flags.DEFINE_boolean(
        "keep-brightness",
        None,
        "as stylize.py's: the output as bright as the image; default on at the images' own "
        "size, off with --longest-side or --image-size (the network's own output)",
        **fv,
    )
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
    evaluate_video.define_flags(flag_values)  # the --video mode


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
    output, seconds = evaluator.stylize_at(image, evaluator.stroke_setting)
    (result,) = evaluator.score(batch, jnp.asarray(output)[None])
    result["seconds"] = seconds
    if evaluator.quality_targets is not None:
        result["views"] = view_figures(evaluator.quality_targets, image, output)
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
    return result, (image, image_io.to_uint8(output))


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
    views = report["view_sizes"] if evaluator.quality_targets is not None else ()
    print(format_header(iterations, views), flush=True)
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
        print(format_row(str(path), result, iterations), flush=True)
    return results, stylized


def _run(flag_values: flags.FlagValues, positional: Sequence[str]) -> int:
    if flag_values["video"].value:  # temporal consistency of a video
        return evaluate_video.run(flag_values, positional)
    cli.require(flag_values, "model", "images")
    flag = flag_values.flag_values_dict()
    views = [f"--{name}" for name in ("image-size", "longest-side", "full-size") if flag[name]]
    if len(views) > 1:
        raise UsageError(f"{' and '.join(views)} cannot be combined: give one (see --help)")
    iterations = parse_iterations(flag["baseline-iterations"])
    json_path, grid_path = _outputs(flag)
    setups = [setup(flag, model_style) for model_style in model_styles(flag)]  # all checked first
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
        print_summary(summary, iterations, report)
        documents.append({**report, "images": results, "summary": summary})
        outputs.append(stylized)
    if len(documents) > 1:
        print_styles_table(documents)
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
    from fnst_jax import runtime

    # The model, the VGG and the optimiser compile per image size: cache the programs
    # across runs ($FNST_JAX_CACHE/jax_cache), as stylize.py and train.py do.
    runtime.enable_compilation_cache()
    sys.exit(main())
