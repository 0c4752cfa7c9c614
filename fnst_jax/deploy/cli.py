"""`python -m fnst_jax.export` (and `python -m fnst_jax.deploy`): flags -> a verified file.

    python -m fnst_jax.export --model runs/mosaic --format onnx --output mosaic.onnx
    python -m fnst_jax.export --model runs/mosaic --format stablehlo --output mosaic.jaxexport
    python -m fnst_jax.export --model runs/mosaic --format web --output site/

`--format web` writes a static site folder instead (`deploy.web.write_site`, verified the
same way). Reads the model file (`export.load_model`: a bad, foreign or too new file is a
`model_file.ModelFileError`, exit 2), writes the ONNX graph (`onnx_graph`) or the serialized JAX
program (`stablehlo`) to a temporary file beside `--output`, loads that file back and checks
it against the JAX forward (`verify`), and only then renames it onto `--output`
(`files.write_atomic`): a file that disagrees is never left, and an existing output is only
replaced with `--overwrite`. Exit status: 0 written, 2 bad usage, unusable model or a file
that failed its check, 130 interrupted.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from absl import flags

from fnst_jax import cli as convention
from fnst_jax import deploy, export, model_file, stroke
from fnst_jax.deploy import DEFAULT_OPSET, MIN_OPSET, verify
from fnst_jax.errors import UsageError, UserError
from fnst_jax.files import write_atomic
from fnst_jax.stylize import styles
from fnst_jax.transformer_net import TransformerNet, single_style_model

FORMATS = ("onnx", "stablehlo", "web")
ONNX_DTYPES = ("float32", "float16")

USAGE = """\
Export a trained model to ONNX or to a serialized JAX program (StableHLO), verified.

usage: python -m fnst_jax.export --model MODEL --format onnx|stablehlo|web --output FILE [options]

  MODEL  a training workdir (uses WORKDIR/model.npz) or an exported model .npz file

examples:
  python -m fnst_jax.export --model runs/mosaic --format onnx --output mosaic.onnx
  python -m fnst_jax.export --model runs/mosaic --format onnx --dtype float16 --output m16.onnx
  python -m fnst_jax.export --model runs/mosaic --format stablehlo --output mosaic.jaxexport
  python -m fnst_jax.export --model runs/four --style candy --format onnx --output candy.onnx
  python -m fnst_jax.export --model runs/four --style-input --format onnx --output four.onnx
  python -m fnst_jax.export --model runs/mosaic --format web --output site/

Both take uint8 (batch, height, width, 3) RGB images of any size and return the stylized
uint8 images ('stylized') and the unrounded float32 ones ('stylized_float'); the model's
training pad is applied inside. Every file is checked against the JAX model on a few sizes
(an ONNX file tiled too) before it is written (at most 1/255 apart after rounding) and
refused otherwise. A multi-style model exports one style or mix (--style, --style-mix), or
all of them with --style-input: the file then takes a second input 'style', float32
(batch, number of styles), each image's weights over the styles in the order of the file's
'styles' property (one-hot for one style; normalised to sum to 1 inside).
ONNX needs the onnx extra: pip install -e '.[onnx]'.

--format web writes a folder for any static file host: the web page, the browser runtime
(onnxruntime-web, from `npm ci` in web/), the ONNX file (float16 unless --dtype says
otherwise; every style of a multi-style model unless --style/--style-mix) and the style
thumbnails; visitors stylize on their own device (docs/browser.md). A non-empty --output
folder is only replaced with --overwrite.
"""


def define_flags(flag_values: flags.FlagValues) -> None:
    fv = {"flag_values": flag_values}
    flags.DEFINE_string("model", None, "Training workdir or exported model .npz file.", **fv)
    flags.DEFINE_enum("format", None, list(FORMATS), "What to write.", **fv)
    flags.DEFINE_string("output", None, "The file to write.", **fv)
    flags.DEFINE_integer(
        "opset", DEFAULT_OPSET, f"ONNX opset ({MIN_OPSET} or newer; ONNX only).", **fv
    )
    flags.DEFINE_enum(
        "dtype",
        "float32",
        list(ONNX_DTYPES),
        "Weights and activations of the ONNX model (instance norms stay float32); the "
        "StableHLO program is float32; --format web: float16 unless given.",
        **fv,
    )
    flags.DEFINE_integer(
        "pad",
        None,
        "Reflection padding applied inside the exported model (default: the model's "
        "training pad from its metadata, else 0).",
        **fv,
    )
    flags.DEFINE_list(
        "verify-sizes",
        ["64x64", "37x53", "256x171"],
        "Image sizes WIDTHxHEIGHT the written file is checked at against the JAX model.",
        **fv,
    )
    flags.DEFINE_boolean("overwrite", False, "Replace an existing output file.", **fv)
    flags.DEFINE_string(
        "style",
        None,
        "Multi-style models: the style the file computes, by name or index (one file per style).",
        **fv,
    )
    flags.DEFINE_string(
        "style-mix",
        None,
        "Multi-style models: a mix the file computes, NAME:WEIGHT,NAME:WEIGHT.",
        **fv,
    )
    flags.DEFINE_boolean(
        "style-input",
        False,
        "Multi-style models: one file for every style and mix, with a second input 'style', "
        "float32 (batch, number of styles): each image's weights over the styles (normalised "
        "to sum to 1 inside). ONNX files with it carry no tiling functions.",
        **fv,
    )


def parse_sizes(values: Sequence[str]) -> list[tuple[int, int]]:
    """["256x171", ...] (WIDTHxHEIGHT) -> [(171, 256), ...] as (height, width)."""
    sizes = []
    for value in values:
        try:
            width, height = (int(part) for part in value.lower().split("x"))
        except ValueError:
            raise UsageError(f"--verify-sizes: {value!r} is not WIDTHxHEIGHT") from None
        if width < 8 or height < 8:
            raise UsageError(f"--verify-sizes: {value} is too small to check (8x8 or more)")
        sizes.append((height, width))
    if not sizes:
        raise UsageError("--verify-sizes: give at least one size (the check cannot be skipped)")
    return sizes


def fnst_jax_version() -> str:
    try:
        return importlib.metadata.version("fnst_jax")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def model_properties(model_path: Path, metadata: dict[str, Any], pad: int) -> dict[str, str]:
    """What an exported file records about its source (ONNX metadata properties)."""
    style_image = metadata.get("style_image")
    if style_image:
        style = Path(style_image).stem
    else:  # the workdir's name, or the model file's stem
        style = (
            model_path.parent.name
            if model_path.name == model_file.MODEL_FILENAME
            else model_path.stem
        )
    properties = {
        "style": style,
        "pad": str(pad),
        "source_model": model_path.name,
        "source_model_sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(),
        "fnst_jax_version": fnst_jax_version(),
    }
    if "step" in metadata:
        properties["training_step"] = str(metadata["step"])
    native = stroke.native_size(metadata)
    if native is not None:  # the stroke scale's "auto" (fnst_jax.stroke)
        properties[stroke.NATIVE_SIZE_KEY] = str(native)
    return properties


def _one_style(
    fv: flags.FlagValues, model: TransformerNet, metadata: dict[str, Any]
) -> tuple[TransformerNet, str]:
    """The model in the style or mix --style/--style-mix chose (an exported file computes
    one), and that style's label ("" for a one-style model); with --style-input, the model
    as it is and its styles' names."""
    names = model_file.style_names(metadata, model.num_styles)
    if fv["style-input"].value:
        if fv["style"].value is not None or fv["style-mix"].value is not None:
            raise UsageError(
                "--style-input computes every style: give it without --style/--style-mix"
            )
        if model.num_styles == 1:
            raise UsageError(
                f"--style-input: the model has one style ({names[0]}); export it without the flag"
            )
        return model, ",".join(names)
    choices = styles.choose_styles(names, fv["style"].value, fv["style-mix"].value)
    if len(choices) > 1:
        raise UsageError("--style all: an exported file computes one style; export each in turn")
    (choice,) = choices
    return single_style_model(model, choice.weights), choice.label


def _check_flags(fv: flags.FlagValues, positional: list[str]) -> None:
    convention.require(fv, "model", "format", "output")
    if positional:
        raise UsageError(f"unexpected arguments: {' '.join(positional)} (see --help)")
    if fv["format"].value == "stablehlo" and fv["dtype"].value != "float32":
        raise UsageError("--dtype float16 is for --format onnx (the StableHLO program is float32)")
    if fv["pad"].value is not None and fv["pad"].value < 0:
        raise UsageError("--pad must be >= 0")
    output = Path(fv["output"].value)
    if output.is_dir():
        raise UsageError(f"--output {output} is a folder; give a file name")
    if output.exists() and not fv["overwrite"].value:
        raise UsageError(f"{output} exists; pass --overwrite to replace it")


def _onnx_file(
    model: TransformerNet,
    pad: int,
    properties: dict[str, str],
    opset: int,
    dtype: str,
    style_input: bool,
) -> bytes:
    try:
        from fnst_jax.deploy import onnx_graph
    except ImportError as e:
        raise UserError(
            f"--format onnx needs the onnx and onnxruntime packages ({e}): pip install -e '.[onnx]'"
        ) from None
    return onnx_graph.serialize(
        model, pad, properties, opset=opset, dtype=dtype, style_input=style_input
    )


def _styles_described(properties: dict[str, str]) -> str:
    if "styles" in properties:
        return f"styles {properties['styles']} by the '{properties['style_input']}' input"
    return f"style {properties['style']}"


def _load(fv: flags.FlagValues) -> tuple[Path, Any, dict, int, dict[str, str]]:
    """(path, model, metadata, pad, ONNX properties) of --model, the pad --pad or the model's."""
    model_path = model_file.resolve_model_path(fv["model"].value)
    model, metadata = export.load_model(model_path)
    pad = fv["pad"].value if fv["pad"].value is not None else int(metadata.get("pad") or 0)
    return model_path, model, metadata, pad, model_properties(model_path, metadata, pad)


def _export_web(fv: flags.FlagValues, positional: list[str], stream: TextIO) -> int:
    """--format web: a static site in the folder --output (`deploy.web.write_site`)."""
    from fnst_jax.deploy import web

    convention.require(fv, "model", "format", "output")
    if positional:
        raise UsageError(f"unexpected arguments: {' '.join(positional)} (see --help)")
    if fv["pad"].value is not None and fv["pad"].value < 0:
        raise UsageError("--pad must be >= 0")
    output = Path(fv["output"].value)
    web.check_site_output(output, fv["overwrite"].value)
    web.require_runtime()  # before minutes of verification, not after
    sizes = parse_sizes(fv["verify-sizes"].value)
    model_path, model, metadata, pad, properties = _load(fv)
    name, style = model_file.model_name(model_path), ""
    if fv["style"].value is not None or fv["style-mix"].value is not None:
        model, style = _one_style(fv, model, metadata)  # else every style, mixed on the page
        if style:
            properties["style"] = style
            name = f"{name}-{style}"
    site = web.write_site(
        output,
        name=name,
        model=model,
        pad=pad,
        properties=properties,
        metadata=metadata,
        style=style,
        dtype=fv["dtype"].value if fv["dtype"].present else web.DEFAULT_DTYPE,
        opset=fv["opset"].value,
        verify_sizes=sizes,
        overwrite=fv["overwrite"].value,
    )
    listed = ", ".join(entry["name"] for entry in site.entries)
    print(
        f"wrote {output}/ ({site.total_bytes / 1e6:.1f} MB: the page, {web.RUNTIME_PACKAGE} "
        f"{web.runtime_version()}, the {site.onnx.dtype} ONNX file of "
        f"{len(site.onnx.data) / 1e6:.1f} MB; models {listed}); the file was checked against "
        "the JAX model:",
        file=stream,
    )
    for check in site.onnx.checks:
        print(f"  {check.describe()}", file=stream)
    print(
        f"serve it from any static file host, e.g. python -m http.server -d {output} "
        "(docs/browser.md)",
        file=stream,
    )
    return convention.EXIT_OK


def _export(fv: flags.FlagValues, positional: list[str], stream: TextIO) -> int:
    if fv["format"].value == "web":
        return _export_web(fv, positional, stream)
    _check_flags(fv, positional)
    sizes = parse_sizes(fv["verify-sizes"].value)
    output = Path(fv["output"].value)
    model_path, model, metadata, pad, properties = _load(fv)
    model, style = _one_style(fv, model, metadata)
    if fv["style-input"].value:  # the styles, in the order of the style input's columns
        properties["styles"] = style
        properties["style_input"] = deploy.STYLE_INPUT_NAME
    elif style:
        properties["style"] = style
    if fv["format"].value == "onnx":
        data = _onnx_file(
            model, pad, properties, fv["opset"].value, fv["dtype"].value, fv["style-input"].value
        )
        runner = verify.onnx_runner
        described = f"ONNX opset {fv['opset'].value}, {fv['dtype'].value}"
    else:
        from fnst_jax.deploy import stablehlo

        data = stablehlo.serialize(model, pad, fv["style-input"].value)
        runner = verify.stablehlo_runner
        described = f"jax.export, platforms {', '.join(stablehlo.PLATFORMS)}"

    checks: list[verify.Check] = []

    def write_and_verify(temporary: Path) -> None:
        with open(temporary, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        checks.extend(verify.verify(runner(temporary), model, pad, sizes))
        if fv["format"].value == "onnx" and model.num_styles == 1:  # (no functions otherwise)
            checks.extend(verify.verify_tiling(temporary, model, pad))
        verify.require_agreement(checks, f"{output}: not written: the exported file")

    write_atomic(output, write_and_verify)
    print(
        f"wrote {output} ({len(data) / 1e6:.1f} MB; {described}; "
        f"{_styles_described(properties)}, pad {pad}); checked against the JAX model:",
        file=stream,
    )
    for check in checks:
        print(f"  {check.describe()}", file=stream)
    return convention.EXIT_OK


def main(argv: Sequence[str], stream: TextIO | None = None) -> int:
    """Run the command line (argv[0] is the program name); returns the exit status."""
    stream = stream if stream is not None else sys.stderr
    return convention.run_command(
        define_flags, lambda fv, positional: _export(fv, positional, stream), argv, USAGE, stream
    )
