"""From command-line inputs to jobs: which files, which outputs, what is refused or skipped.

  * `expand_inputs`: files, folders (searched recursively, hidden names skipped) and globs
    -> (file, path relative to the folder or glob base it was found under).
  * `plan_jobs`: each input's output path (name + `Options.suffix` + extension, under the
    same subfolders), refusing outputs that are inputs or collide, skipping existing ones.
  * `is_single_file_output` / `single_file_problem`: `--output photo.png` for one input.
  * `Options`: everything but the network that decides how inputs become outputs.

Problems are reported through the run's `reporter.Reporter` (one `error:`/`skipped:` line
each), so one bad input never stops the others.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fnst_jax import image_io, model_file, video
from fnst_jax.stroke import Stroke

if TYPE_CHECKING:
    from fnst_jax.stylize.reporter import Reporter


@dataclasses.dataclass
class Options:
    """Everything but the network that decides how inputs become outputs."""

    size: int | None = None
    scale: float | None = None
    preserve_color: bool = False
    format: str | None = None  # None: the input's own format if jpg/png/webp, else png
    quality: int = 95
    overwrite: bool = False
    quiet: bool = False
    suffix: str = ""
    workers: int = 2
    temporal_blend: float = 0.0  # videos: weight of the flow-warped previous output (0 = off)
    # The resolution the network runs at (`fnst_jax.stroke`); the default runs at the output
    # size. stylize.py's default is "auto", with the model's native size.
    stroke: Stroke = dataclasses.field(default_factory=Stroke)


@dataclasses.dataclass
class Job:
    source: Path
    destination: Path
    kind: str  # "image" or "video"


def target_size(width: int, height: int, options: Options) -> tuple[int, int]:
    """(width, height) after --size (longest side) or --scale."""
    if options.size:
        factor = options.size / max(width, height)
    elif options.scale:
        factor = options.scale
    else:
        return width, height
    return max(1, round(width * factor)), max(1, round(height * factor))


def model_name(model_path: str) -> str:
    """A name for output files: the workdir's name (plus `-best` for its best.npz, as the
    service names it), or the model file's stem (`model_file.model_name`)."""
    return model_file.model_name(model_path) or "stylized"


def is_video(path: Path) -> bool:
    return path.suffix.lower() in video.VIDEO_EXTENSIONS


def _supported(path: Path) -> bool:
    return path.suffix.lower() in image_io.IMAGE_EXTENSIONS or is_video(path)


def _has_glob(text: str) -> bool:
    return any(char in text for char in "*?[")


def _glob_base(pattern: str) -> Path:
    """The leading part of a glob pattern without wildcards: outputs are relative to it."""
    parts = Path(pattern).parts
    base: list[str] = []
    for part in parts[:-1]:
        if _has_glob(part):
            break
        base.append(part)
    return Path(*base) if base else Path(".")


def _walk(folder: Path, exclude: Path | None) -> Iterator[Path]:
    """Supported files under `folder`, sorted, skipping hidden names and the output folder."""
    for root, dirs, files in os.walk(folder):
        root_path = Path(root)
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".") and (exclude is None or (root_path / d).resolve() != exclude)
        )
        for name in sorted(files):
            path = root_path / name
            if not name.startswith(".") and _supported(path):
                yield path


def _expand_glob(pattern: str, exclude: Path | None) -> list[tuple[Path, Path]]:
    base = _glob_base(pattern)
    matches: list[tuple[Path, Path]] = []
    for match in sorted(glob.glob(pattern, recursive=True)):
        match_path = Path(match)
        if match_path.is_dir():
            matches.extend((f, f.relative_to(base)) for f in _walk(match_path, exclude))
        elif _supported(match_path) and not match_path.name.startswith("."):
            matches.append((match_path, match_path.relative_to(base)))
    return matches


def _unsupported_reason(path: Path) -> str:
    return (
        f"unsupported format {path.suffix or '(no extension)'!r} (images: "
        f"{', '.join(sorted(image_io.IMAGE_EXTENSIONS))}; videos: "
        f"{', '.join(sorted(video.VIDEO_EXTENSIONS))})"
    )


def expand_inputs(
    inputs: Sequence[str], reporter: Reporter, exclude: Path | None = None
) -> list[tuple[Path, Path]]:
    """Command-line inputs -> (file, path relative to its root) pairs; errors reported.
    exclude: a folder never searched (the output folder)."""
    found: list[tuple[Path, Path]] = []
    for argument in inputs:
        path = Path(argument)
        if path.is_dir():
            files = [(f, f.relative_to(path)) for f in _walk(path, exclude)]
            if not files:
                reporter.error(path, "folder holds no supported images or videos")
            found.extend(files)
        elif path.is_file():
            if _supported(path):
                found.append((path, Path(path.name)))
            else:
                reporter.error(path, _unsupported_reason(path))
        elif _has_glob(argument):
            matches = _expand_glob(argument, exclude)
            if not matches:
                reporter.error(argument, "no supported images or videos match this pattern")
            found.extend(matches)
        else:
            reporter.error(path, "no such file or directory")
    return found


def output_extension(source: Path, options: Options) -> str:
    """Videos keep their container; images get --format, else their own jpg/png/webp, else png."""
    if is_video(source):
        return source.suffix.lower()
    if options.format:
        return image_io.OUTPUT_FORMATS[options.format][1]
    own = image_io.EXTENSION_TO_FORMAT.get(source.suffix.lower())
    return image_io.OUTPUT_FORMATS[own or "png"][1]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def plan_jobs(
    found: Sequence[tuple[Path, Path]],
    output: Path,
    single_file: bool,
    options: Options,
    reporter: Reporter,
) -> list[Job]:
    """Decide each input's output; refuse collisions and inputs, skip existing outputs."""
    input_paths = {f.resolve() for f, _ in found}
    jobs: list[Job] = []
    claimed: dict[Path, Path] = {}
    for source, relative in found:
        if single_file:
            destination = output
        else:
            name = f"{relative.stem}{options.suffix}{output_extension(source, options)}"
            destination = output / relative.parent / name
        resolved = destination.resolve()
        if resolved in input_paths or _same_file(source, destination):
            reporter.error(source, f"refusing to write {destination}: it is an input file")
            continue
        if resolved in claimed:
            reporter.error(
                source,
                f"its output {destination} would also be written for {claimed[resolved]}; "
                "stylize these inputs in separate runs or with different --output",
            )
            continue
        claimed[resolved] = source
        if destination.exists() and not options.overwrite:
            reporter.skip(source, "exists", f" ({destination}; use --overwrite to replace it)")
            continue
        jobs.append(Job(source, destination, "video" if is_video(source) else "image"))
    return jobs


def is_single_file_output(output: Path) -> bool:
    """`--output` names one file (an image or video extension, not an existing folder)."""
    suffix = output.suffix.lower()
    return not output.is_dir() and (
        suffix in image_io.IMAGE_EXTENSIONS or suffix in video.VIDEO_EXTENSIONS
    )


def single_file_problem(
    output: Path,
    found: Sequence[tuple[Path, Path]],
    positional: Sequence[str],
    format_flag: str | None,
) -> str | None:
    """Why `--output FILE` cannot be used for these inputs, or None."""
    if len(found) != 1 or len(positional) != 1:
        return (
            f"--output {output} names a file but {len(positional)} input argument(s) "
            f"give {len(found)} files; give a folder"
        )
    source = found[0][0]
    out_suffix = output.suffix.lower()
    if is_video(source) != is_video(output):
        return f"--output {output}: cannot write {source.name} to a {out_suffix} file"
    if is_video(output):
        return None
    fmt = image_io.EXTENSION_TO_FORMAT.get(out_suffix)
    if fmt is None:
        return (
            f"--output {output}: cannot write {out_suffix} images "
            f"(use {', '.join(sorted(image_io.EXTENSION_TO_FORMAT))})"
        )
    if format_flag and format_flag != fmt:
        return f"--format {format_flag} disagrees with --output {output}"
    return None
