"""`python stylize.py`: flags -> jobs -> runs, and the exit status.

`main(argv, stream)` follows the project's command-line convention (`fnst_jax.cli`): absl
flags on a fresh `FlagValues` (tests call it in-process, repeatedly), every multi-word flag
spelled with hyphens or underscores (`--batch-size`, `--batch_size`), and a `UserError`
(bad flags, an unusable model file) printed as one `error:` line. Exit status: 0 all done
(skips included), 1 some input failed, 2 bad usage or unusable model, 130 interrupted.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from absl import flags

from fnst_jax import cli as convention
from fnst_jax import image_io, stroke
from fnst_jax.errors import UsageError
from fnst_jax.stylize import defaults, inputs, loading, run, styles
from fnst_jax.stylize.reporter import Reporter

USAGE = """\
Stylize images, folders and videos with a trained fast-neural-style model.

usage: python stylize.py --model MODEL --output OUT [options] INPUT [INPUT ...]

  MODEL  a training workdir (uses WORKDIR/model.npz), an exported model .npz file, or an
         .onnx file from `python -m fnst_jax.export` (runs in onnxruntime, without JAX,
         tiling included; --pad and --dtype are fixed in the file)
  INPUT  image files, folders (searched recursively), quoted globs ('photos/**/*.jpg'),
         videos (mp4, mov, m4v, mkv, webm) and GIFs
  OUT    a folder (created if needed): each output keeps its input's name and subfolders
         relative to the folder or glob it was found under, plus _MODELNAME (or --suffix);
         or a file name (photo.png, clip.mp4) when there is exactly one input

examples:
  python stylize.py --model runs/candy --output out photo.jpg holiday/
  python stylize.py --model candy.npz --output small.png --size 512 photo.jpg
  python stylize.py --model candy.npz --output out --max-pixels 4000000 --tile 1024 huge.tif
  python stylize.py --model candy.npz --output out --preserve-color clip.mp4
  python stylize.py --model candy.npz --output out --temporal-blend 0.5 clip.mp4
  python stylize.py --model runs/four --output out --style all photo.jpg
  python stylize.py --model runs/four --output mix.jpg --style-mix candy:1,udnie:1 photo.jpg

A multi-style model (trained with --config.style_images) needs --style NAME (or INDEX, or
all: one output per style, named _MODELNAME_STYLE) or --style-mix NAME:W,NAME:W (one mix;
weights are normalised to sum to 1).

Images keep their size (or --size / --scale), EXIF orientation and ICC profile; alpha is
kept in png/webp outputs and dropped in jpg. Existing outputs are skipped unless
--overwrite; inputs are never overwritten. Exit status: 0 done, 1 some inputs failed,
2 bad usage or model, 130 interrupted.
"""


def define_flags(flag_values: flags.FlagValues) -> None:
    """The command line, on a given FlagValues so main() can be called repeatedly."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_string(
        "model", None, "Training workdir, exported model .npz file, or exported .onnx file.", **fv
    )
    flags.DEFINE_string("output", None, "Output folder, or a file when there is one input.", **fv)
    flags.DEFINE_integer("size", None, "Resize so the longest side is this many pixels.", **fv)
    flags.DEFINE_float("scale", None, "Resize by this factor (instead of --size).", **fv)
    flags.DEFINE_integer(
        "max-pixels",
        defaults.DEFAULT_MAX_PIXELS,
        "Images with more pixels than this are stylized in tiles; also caps the pixels in "
        "one batch. Lower it if you run out of memory.",
        **fv,
    )
    flags.DEFINE_integer(
        "tile",
        defaults.DEFAULT_TILE,
        "Side in pixels of the part of a large image each tile computes (each tile also "
        "sees 64 px of context around it).",
        **fv,
    )
    flags.DEFINE_enum(
        "tile-stats",
        "exact",
        list(defaults.TILE_STATISTICS),
        "Instance-norm statistics of a tiled image: exact (the whole image's, computed over "
        "the tiles: the untiled result, ~7x the compute) or approximate (measured on a "
        "shrunk copy: one extra network call, slightly different tone).",
        **fv,
    )
    flags.DEFINE_integer(
        "batch-size",
        defaults.DEFAULT_BATCH_SIZE,
        "Same-size images or frames per network call (rounded down to a power of two, "
        "and fewer when their pixels would exceed --max-pixels).",
        **fv,
    )
    flags.DEFINE_integer(
        "bucket",
        defaults.DEFAULT_BUCKET,
        "Pad image sides up to a multiple of this (by reflection, cropped back) so mixed "
        "sizes share compiled programs. 4 = exact sizes (one compilation per size).",
        **fv,
    )
    flags.DEFINE_enum("dtype", "float32", list(defaults.DTYPE_NAMES), "Compute dtype.", **fv)
    flags.DEFINE_integer(
        "pad",
        None,
        "Reflection padding in pixels around each image (default: the model's training pad "
        "from its metadata, else 0).",
        **fv,
    )
    flags.DEFINE_boolean(
        "preserve-color",
        False,
        "Keep the input's colours: stylized luminance, input chroma (YCbCr).",
        **fv,
    )
    flags.DEFINE_enum(
        "format",
        None,
        list(image_io.OUTPUT_FORMATS),
        "Image output format (default: the input's if jpg/png/webp, else png).",
        **fv,
    )
    flags.DEFINE_integer("quality", 95, "JPEG/WebP quality 1-100 (also video quality).", **fv)
    flags.DEFINE_string(
        "suffix", None, "Appended to output names (default: _MODELNAME; '' for none).", **fv
    )
    flags.DEFINE_boolean("overwrite", False, "Replace existing outputs.", **fv)
    flags.DEFINE_boolean("quiet", False, "Only errors: no progress, no per-file lines.", **fv)
    flags.DEFINE_integer("workers", 2, "Threads for decoding and encoding.", **fv)
    flags.DEFINE_string(
        "style",
        None,
        "Multi-style models: the style to use, by name or index, or 'all' for one output "
        "per style.",
        **fv,
    )
    flags.DEFINE_string(
        "style-mix",
        None,
        "Multi-style models: a mix of styles, NAME:WEIGHT,NAME:WEIGHT (weights >= 0, "
        "normalised to sum to 1).",
        **fv,
    )
    flags.DEFINE_string(
        "stroke-scale",
        stroke.AUTO,
        "Stroke size: the network runs at the output size divided by S, so its strokes are S "
        "times their trained size in output pixels (1 = at the output size). 'auto': S = "
        "the longest side / the model's native size, strokes proportional to the image "
        "(docs/stylize.md#stroke-size).",
        **fv,
    )
    flags.DEFINE_enum(
        "upsampler",
        stroke.DEFAULT_UPSAMPLER,
        list(stroke.UPSAMPLERS),
        "How a result stylized below the output size is brought to it: bicubic, or guided "
        "(a guided filter on the full-size photo: sharper photo edges).",
        **fv,
    )
    flags.DEFINE_boolean(
        "detail-pass",
        True,
        "Below the output size, paint once more over the upsampled result at twice the "
        "working size (at most the output size): the model's texture at screen scale "
        "(docs/stylize.md#stroke-size). --nodetail-pass: one pass.",
        **fv,
    )
    flags.DEFINE_boolean(
        "keep-brightness",
        True,
        "Give the output the photo's mean brightness with a tone curve (the network cannot "
        "see it: a night photo stays dark; docs/stylize.md#brightness). --nokeep-brightness: "
        "the network's own brightness.",
        **fv,
    )
    flags.DEFINE_float(
        "temporal-blend",
        0.0,
        "Videos: blend each stylized frame with the previous output frame, warped along the "
        "input's optical flow, with this weight (0 < ALPHA < 1; 0 = off). Less flicker, "
        "a softer texture; needs OpenCV (the video extra).",
        **fv,
    )


def _check_numbers(fv: flags.FlagValues) -> None:
    if fv["max-pixels"].value < 64 * 64:
        raise UsageError("--max-pixels must be at least 4096")
    if fv["tile"].value < 32:
        raise UsageError("--tile must be at least 32")
    if fv["tile"].value ** 2 > fv["max-pixels"].value * 4:
        raise UsageError("--tile is far larger than --max-pixels allows; lower --tile")
    if fv["batch-size"].value < 1:
        raise UsageError("--batch-size must be at least 1")
    if fv["bucket"].value < 1:
        raise UsageError("--bucket must be at least 1")
    if fv["pad"].value is not None and fv["pad"].value < 0:
        raise UsageError("--pad must be >= 0")


def _options_from_flags(fv: flags.FlagValues) -> inputs.Options:
    if fv["size"].value is not None and fv["scale"].value is not None:
        raise UsageError("give --size or --scale, not both")
    if fv["size"].value is not None and fv["size"].value < 1:
        raise UsageError("--size must be a positive number of pixels")
    if fv["scale"].value is not None and not fv["scale"].value > 0:
        raise UsageError("--scale must be positive")
    if not 1 <= fv["quality"].value <= 100:
        raise UsageError("--quality must be between 1 and 100")
    temporal_blend = fv["temporal-blend"].value
    if temporal_blend and not 0 < temporal_blend < 1:
        raise UsageError(
            f"--temporal-blend must be 0 (off) or between 0 and 1, not {temporal_blend}"
        )
    if temporal_blend:
        from fnst_jax import temporal

        temporal.opencv()  # not installed: say so now (MissingOpenCVError, exit 2)
    suffix = fv["suffix"].value
    if suffix is None:
        suffix = f"_{inputs.model_name(fv['model'].value)}"
    return inputs.Options(
        size=fv["size"].value,
        scale=fv["scale"].value,
        preserve_color=fv["preserve-color"].value,
        format=fv["format"].value,
        quality=fv["quality"].value,
        overwrite=fv["overwrite"].value,
        quiet=fv["quiet"].value,
        suffix=suffix,
        workers=max(1, fv["workers"].value),
        temporal_blend=temporal_blend,
    )


def main(argv: Sequence[str], stream: TextIO | None = None) -> int:
    """Run the command line (argv[0] is the program name); returns the exit status.
    Messages and progress go to `stream` (default stderr), --help to stdout."""
    stream = stream if stream is not None else sys.stderr
    return convention.run_command(
        define_flags, lambda fv, positional: _stylize(fv, positional, stream), argv, USAGE, stream
    )


def _stylize(fv: flags.FlagValues, positional: list[str], stream: TextIO) -> int:
    started = time.perf_counter()
    convention.require(fv, "model", "output")
    if not positional:
        raise UsageError("no inputs given")
    _check_numbers(fv)
    options = _options_from_flags(fv)
    output = Path(fv["output"].value)
    single_file = inputs.is_single_file_output(output)
    reporter = Reporter(quiet=options.quiet, stream=stream)
    try:
        stroke_scale = stroke.parse_scale(fv["stroke-scale"].value)
    except stroke.StrokeScaleError as e:
        raise UsageError(f"--stroke-scale: {e}") from None
    stylizer = loading.load_stylizer(  # a bad model file: UserError, exit 2
        fv["model"].value,
        dtype=fv["dtype"].value,
        pad=fv["pad"].value,
        bucket=fv["bucket"].value,
        batch_size=fv["batch-size"].value,
        max_pixels=fv["max-pixels"].value,
        tile=fv["tile"].value,
        tile_statistics=fv["tile-stats"].value,
    )
    options = dataclasses.replace(
        options,
        stroke=stroke.Stroke(
            stroke_scale,
            stylizer.native_size,
            fv["upsampler"].value,
            detail=fv["detail-pass"].value,
            keep_brightness=fv["keep-brightness"].value,
        ),
    )
    if stroke_scale is None and stylizer.native_size is None and not options.quiet:
        reporter.info(
            "the model records no native size: --stroke-scale auto runs it at the output "
            "size (--stroke-scale 1)"
        )

    choices = styles.choose_styles(stylizer.style_names, fv["style"].value, fv["style-mix"].value)
    if single_file and len(choices) > 1:
        raise UsageError(f"--style all writes {len(choices)} outputs: give a folder as --output")

    found = inputs.expand_inputs(
        positional, reporter, exclude=None if single_file else output.resolve()
    )
    total = len(found) * len(choices) + reporter.failed
    if single_file:
        problem = inputs.single_file_problem(output, found, positional, options.format)
        if problem:
            raise UsageError(problem)
    try:
        for choice in choices:
            styled = stylizer if stylizer.num_styles == 1 else stylizer.with_style(choice.weights)
            label = f"_{choice.label}" if choice.label else ""
            chosen = dataclasses.replace(options, suffix=options.suffix + label)
            jobs = inputs.plan_jobs(found, output, single_file, chosen, reporter)
            run.run_jobs(jobs, styled, chosen, reporter)
    except KeyboardInterrupt:
        summary = reporter.summary(total, time.perf_counter() - started)
        print(f"interrupted: {summary}", file=stream)
        return convention.EXIT_INTERRUPTED
    if not options.quiet or reporter.failed:
        print(reporter.summary(total, time.perf_counter() - started), file=stream)
    return convention.EXIT_FAILED if reporter.failed else convention.EXIT_OK
