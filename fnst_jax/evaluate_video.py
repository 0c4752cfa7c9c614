"""`python -m fnst_jax.evaluate --video CLIP`: how stable is a model's video output?

    python -m fnst_jax.evaluate --model runs/mosaic --video clip.mp4 --frames 64 \
        --stylized other_implementation.mp4 --temporal-blend 0.5 --json clip.json

reads the clip's frames (the first --frames), stylizes them with the model exactly as
`stylize.py` does (`fnst_jax.stylize.loading.load_stylizer`: the same engine and uint8
frames, at the clip's size), and reports the warping error (`fnst_jax.temporal`, Lai et al.
2018) of every video it is given, all measured with one optical flow per pair of
consecutive *input* frames:

  * `input`: the clip itself, the floor: what the flow, the occlusion mask and the codec
    leave even for a video that changes only by its motion;
  * `model`: the model's stylized frames (uint8, as stylize.py writes them, before any
    video codec);
  * `blended`: with --temporal-blend ALPHA, those frames blended with the flow-warped
    previous output, as `stylize.py --temporal-blend ALPHA` does;
  * each --stylized file: a stylized version of the clip made elsewhere (another
    implementation, or stylize.py's own output file, codec included); same frame count and
    size as the clip (with --frames N, its first N frames).

It prints a table (mean warping error, squared and absolute, the ratio to the input's, and
the style loss), writes the JSON report (per frame pair: each video's errors and the
visible fraction; the sampled frames' loss terms) and a PNG of the per-frame warping error
over time. With a model (not an .onnx file), every stylized video's loss terms are the
training objective's (`evaluation.Evaluator`: the model's style image, VGG and weights) on
every --style-loss-every-th frame (default 4: frames 0, 4, 8, ...; each costs VGG passes;
0 skips them). Without --model only the --stylized files (and the input) are scored.

Exit status (as evaluate's): 0; 1 if a --stylized file failed (unreadable, another size or
frame count: named on stderr, the others still scored); 2 if the clip, the model, the
flags or the outputs are unusable.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from absl import flags

from fnst_jax import files, temporal, video
from fnst_jax.errors import UsageError, UserError

INPUT, MODEL, BLENDED = "input", "model", "blended"
DEFAULT_PLOT = "evaluate_warping.png"


def define_flags(flag_values: flags.FlagValues) -> None:
    """The --video mode's flags, on evaluate's FlagValues."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_string(
        "video", None, "temporal consistency of a video clip (instead of --images)", **fv
    )
    flags.DEFINE_integer("frames", None, "--video: only the first N frames", lower_bound=2, **fv)
    flags.DEFINE_multi_string(
        "stylized", None, "--video: stylized versions of the clip to score as well", **fv
    )
    flags.DEFINE_float(
        "temporal-blend",
        None,
        "--video: also score the model's frames blended as `stylize.py --temporal-blend` does",
        **fv,
    )
    flags.DEFINE_enum(
        "flow-preset", temporal.DEFAULT_PRESET, temporal.DIS_PRESETS, "--video: DIS preset", **fv
    )
    flags.DEFINE_string(
        "plot", None, f"--video: per-frame PNG (default: next to --json, or ./{DEFAULT_PLOT})", **fv
    )
    flags.DEFINE_boolean("no-plot", False, "--video: do not write the plot", **fv)
    flags.DEFINE_integer(
        "style-loss-every",
        4,
        "--video: score the style loss of every K-th frame (VGG passes; 0 = none)",
        lower_bound=0,
        **fv,
    )


@dataclasses.dataclass
class _Source:
    """One video being scored besides the input: where its frames come from."""

    label: str
    kind: str  # "model", "blended" or "file"
    path: str | None
    frames: Iterator[np.ndarray] | None = None  # files only
    style_terms: list[dict[str, float]] = dataclasses.field(default_factory=list)  # sampled


def run(flag_values: flags.FlagValues, positional: Sequence[str]) -> int:
    """The --video mode of `python -m fnst_jax.evaluate` (see the module docstring)."""
    flag = flag_values.flag_values_dict()
    _check_flags(flag, positional)
    json_path, plot_path = _outputs(flag)
    temporal.opencv()  # missing: the install hint now, not after the model has loaded
    info, input_frames = video.read_video(flag["video"])  # VideoReadError: exit 2
    failures: list[str] = []
    sources = _file_sources(flag["stylized"] or [], info.size, failures)
    stylizer, evaluator, style_report = _model(flag)
    if stylizer is not None:
        sources.insert(0, _Source(MODEL, "model", str(flag["model"])))
        if flag["temporal-blend"]:
            sources.insert(1, _Source(BLENDED, "blended", None))

    scorer = temporal.WarpingErrors([INPUT] + [s.label for s in sources], flag["flow-preset"])
    frames = itertools.islice(input_frames, flag["frames"])
    batch = stylizer.batch_size if stylizer is not None else 1
    blender = temporal.TemporalBlender(flag["temporal-blend"]) if flag["temporal-blend"] else None
    every = flag["style-loss-every"]
    while chunk := list(itertools.islice(frames, batch)):
        stylized = stylizer.stylize_batch(chunk) if stylizer is not None else [None] * len(chunk)
        for frame, styled in zip(chunk, stylized, strict=True):
            pair = scorer.next_input(frame)
            score_style = evaluator is not None and (scorer.frames - 1) % every == 0
            scorer.add(INPUT, frame)
            outputs = {MODEL: styled}
            if blender is not None:
                outputs[BLENDED] = blender(frame, styled, pair)
            for source in list(sources):
                styled_frame = _next_frame(source, outputs, scorer, failures)
                if styled_frame is None:
                    sources.remove(source)
                elif score_style:
                    pixels = np.asarray(styled_frame, np.float32)[None]
                    source.style_terms.extend(evaluator.score(frame[None], pixels))
    if scorer.frames < 2:
        raise UserError(f"{flag['video']}: has {scorer.frames} frame(s); at least 2 are needed")
    if flag["frames"] is None:
        _check_longer_files(sources, scorer, failures)

    report = _report(flag, info, scorer, sources, style_report, failures)
    _print_table(report)
    if json_path is not None:
        files.write_text_atomic(json_path, json.dumps(report, indent=2) + "\n")
        print(f"wrote {json_path}")
    if plot_path is not None:
        write_plot(plot_path, report)
        print(f"wrote {plot_path}")
    if failures:
        print(f"{len(failures)} stylized video(s) failed", file=sys.stderr)
        return 1
    return 0


def _check_flags(flag: Mapping[str, Any], positional: Sequence[str]) -> None:
    if flag["images"] or positional:
        raise UsageError("--video and --images (or image arguments) cannot be combined")
    if flag["image-size"] is not None or flag["longest-side"] is not None or flag["full-size"]:
        raise UsageError(
            "--image-size/--longest-side/--full-size apply to --images; video frames keep "
            "their size"
        )
    if not flag["model"] and not flag["stylized"]:
        raise UsageError("--video needs --model and/or --stylized (see --help)")
    alpha = flag["temporal-blend"]
    if alpha is not None and alpha != 0:
        if not 0 < alpha < 1:
            raise UsageError(f"--temporal-blend must be between 0 and 1 (exclusive), got {alpha}")
        if not flag["model"]:
            raise UsageError("--temporal-blend blends the model's frames: it needs --model")


def _outputs(flag: Mapping[str, Any]) -> tuple[Path | None, Path | None]:
    """The JSON and plot paths; SetupError-like UserError if one exists (no --overwrite)."""
    json_path = Path(flag["json"]) if flag["json"] else None
    plot_path = None
    if not flag["no-plot"]:
        if flag["plot"]:
            plot_path = Path(flag["plot"])
        elif json_path is not None:
            plot_path = json_path.with_name(json_path.stem + "_warping.png")
        else:
            plot_path = Path(DEFAULT_PLOT)
        if plot_path.suffix.lower() != ".png":
            raise UserError(f"{plot_path}: the plot is written as PNG; give a .png path")
    for path in (json_path, plot_path):
        if path is not None and path.exists() and not flag["overwrite"]:
            raise UserError(f"{path}: already exists (pass --overwrite to replace it)")
    return json_path, plot_path


def _file_sources(
    paths: Sequence[str], size: tuple[int, int], failures: list[str]
) -> list[_Source]:
    """The --stylized files that open and have the clip's frame size; the others are
    reported (one error line each) and left out."""
    sources = []
    for path in paths:
        try:
            info, frames = video.read_video(path)
        except video.VideoReadError as e:
            _fail(failures, str(e))
            continue
        if info.size != size:
            _fail(failures, f"{path}: frames are {_size(info.size)}, the clip's {_size(size)}")
            continue
        sources.append(_Source(str(path), "file", str(path), frames))
    return sources


def _model(flag: Mapping[str, Any]) -> tuple[Any, Any, dict[str, Any] | None]:
    """(the stylize engine, the style-loss evaluator or None, its report) for --model; all
    None without one. The evaluator is the image mode's (`evaluation.setup`): the model's
    own objective, style image and VGG."""
    if not flag["model"]:
        return None, None, None
    from fnst_jax.stylize import loading
    from fnst_jax.stylize.onnx_engine import is_onnx_file

    stylizer = loading.load_stylizer(flag["model"])  # a bad model file: a UserError
    if stylizer.num_styles > 1:  # --model-style picks the style, as for images
        from fnst_jax.stylize import styles

        chosen = styles.choose_one(stylizer.style_names, flag["model-style"], "--model-style")
        stylizer = stylizer.with_style(chosen)
    if not flag["style-loss-every"] or is_onnx_file(flag["model"]):
        return stylizer, None, None  # an .onnx file has no training metadata to score with
    from fnst_jax import evaluation  # JAX: only to score with a model

    evaluator, report = evaluation.setup(flag, flag["model-style"])
    keep = ("style_image", "style_size", "loss", "vgg", "pad")
    return stylizer, evaluator, {key: report[key] for key in keep if key in report}


def _next_frame(
    source: _Source,
    outputs: Mapping[str, np.ndarray],
    scorer: temporal.WarpingErrors,
    failures: list[str],
) -> np.ndarray | None:
    """The source's frame at the scorer's index, scored; None when the source failed
    (reported, dropped from the scorer)."""
    try:
        frame = outputs[source.label] if source.frames is None else next(source.frames, None)
        if frame is None:
            raise temporal.VideoMismatchError(
                f"{source.label}: has {scorer.frames - 1} frames, fewer than the clip"
            )
        scorer.add(source.label, frame)
    except (video.VideoReadError, temporal.VideoMismatchError) as e:
        _fail(failures, str(e))
        scorer.drop(source.label)
        return None
    return frame


def _check_longer_files(
    sources: list[_Source], scorer: temporal.WarpingErrors, failures: list[str]
) -> None:
    """Without --frames, a file must end where the clip ends."""
    for source in list(sources):
        if source.frames is not None and next(source.frames, None) is not None:
            _fail(failures, f"{source.label}: has more frames than the clip ({scorer.frames})")
            scorer.drop(source.label)
            sources.remove(source)


def _fail(failures: list[str], message: str) -> None:
    failures.append(message)
    print(f"error: {message}", file=sys.stderr)


def _size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _number(value: float) -> float | None:
    """JSON has no NaN: a pair without visible pixels is null."""
    return None if math.isnan(value) else value


def _report(
    flag: Mapping[str, Any],
    info: video.VideoInfo,
    scorer: temporal.WarpingErrors,
    sources: Sequence[_Source],
    style_report: Mapping[str, Any] | None,
    failures: Sequence[str],
) -> dict[str, Any]:
    kinds = {INPUT: ("input", str(flag["video"]))} | {s.label: (s.kind, s.path) for s in sources}
    floor = scorer.scores[INPUT].warping_error
    videos = {}
    for label, score in scorer.scores.items():
        kind, path = kinds[label]
        entry: dict[str, Any] = {
            "kind": kind,
            "path": path,
            "warping_error": _number(score.warping_error),
            "warping_mae": _number(score.warping_mae),
            "relative_to_input": _number(score.warping_error / floor) if floor > 0 else None,
            "per_frame": {
                "warping_error": [_number(v) for v in score.squared],
                "warping_mae": [_number(v) for v in score.absolute],
            },
        }
        terms = next((s.style_terms for s in sources if s.label == label), [])
        if terms:  # the training objective's terms (and whatever else Evaluator.score gives)
            keys = [key for key in terms[0] if all(key in t for t in terms)]
            entry.update({key: float(np.mean([t[key] for t in terms])) for key in keys})
            entry["sampled_frames"] = {
                "frame": list(range(0, scorer.frames, flag["style-loss-every"]))[: len(terms)],
                **{key: [t[key] for t in terms] for key in keys},
            }
        videos[label] = entry
    return {
        "video": str(flag["video"]),
        "size": list(info.size),
        "fps": info.fps,
        "frames": scorer.frames,
        "model": str(flag["model"]) if flag["model"] else None,
        "temporal_blend": flag["temporal-blend"] or None,
        "flow": {
            "method": "DIS optical flow (OpenCV) on grayscale input frames",
            "preset": flag["flow-preset"],
            "occlusion": "forward-backward consistency "
            f"(|w_b + w_f|^2 < {temporal.CONSISTENCY_RELATIVE} (|w_b|^2 + |w_f|^2) + "
            f"{temporal.CONSISTENCY_ABSOLUTE}) and inside the frame",
        },
        "metric": "per frame pair t: mean over visible pixels of the squared (absolute) "
        "difference between frame t and frame t-1 warped onto it, RGB in [0, 1] summed "
        "over channels (Lai et al. 2018); per_frame[i] is frame i+1 against frame i",
        "style": style_report,
        "visible_fraction": scorer.visible_fractions,
        "videos": videos,
        "failed": list(failures),
    }


def _print_table(report: Mapping[str, Any]) -> None:
    print(
        f"{report['video']}: {report['frames']} frames, {report['size'][0]}x{report['size'][1]}, "
        f"mean visible fraction {np.mean(report['visible_fraction']):.3f}"
    )
    print(f"{'video':36s} {'warp MSE':>11s} {'warp MAE':>11s} {'x input':>8s} {'style loss':>11s}")
    for label, entry in report["videos"].items():
        name = f"{label} (floor)" if label == INPUT else label
        if label == BLENDED:
            name = f"{label} (alpha {report['temporal_blend']:g})"
        name = name if len(name) <= 36 else "..." + name[-33:]
        ratio = entry["relative_to_input"]
        cells = [
            _cell(entry["warping_error"], "11.4g"),
            _cell(entry["warping_mae"], "11.4g"),
            _cell(ratio, "8.2f"),
            _cell(entry.get("style_loss"), "11.4g"),
        ]
        print(f"{name:36s} " + " ".join(cells))


def _cell(value: float | None, spec: str) -> str:
    width = int(spec.split(".")[0])
    return format(value, spec) if value is not None else f"{'-':>{width}s}"


def write_plot(path: Path, report: Mapping[str, Any]) -> None:
    """Per-frame warping error (squared) of each video over time, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, entry in report["videos"].items():
        values = [np.nan if v is None else v for v in entry["per_frame"]["warping_error"]]
        mean = entry["warping_error"]
        legend = f"{Path(label).name if entry['kind'] == 'file' else label}"
        legend += f" (mean {mean:.3g})" if mean is not None else ""
        style = {"color": "black", "linestyle": "--"} if label == INPUT else {}
        ax.plot(range(1, len(values) + 1), values, label=legend, linewidth=1.2, **style)
    ax.set_yscale("log")
    ax.set_xlabel("frame (against the previous one)")
    ax.set_ylabel("warping error (mean squared, RGB in [0, 1])")
    ax.set_title(f"{Path(report['video']).name}: temporal consistency (lower is steadier)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    files.write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
