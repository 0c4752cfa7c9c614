"""Video in and out: ffmpeg (the binary imageio-ffmpeg ships) for mp4/mov/webm/mkv, Pillow
for animated GIF.

Frames are streamed: `read_video` yields uint8 RGB frames one at a time and `write_video`
consumes any iterable of frames, so a long video never sits in memory (GIFs, which are
small, are read whole to learn their frame durations). The output keeps the input's frame
rate (GIF: each frame's duration and the loop count) and, where the input has an audio
track, carries it over unchanged (`-c:a copy` into the same container type).

H.264/VP9 in 4:2:0 need even frame sizes; odd-sized frames get their last row/column
repeated once rather than the whole frame resampled.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

from fnst_jax.errors import UserError
from fnst_jax.files import write_atomic
from fnst_jax.image_io import pil_to_rgb_alpha

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".webm", ".gif"})
# Container extension -> video codec. libx264 with yuv420p plays everywhere.
_VIDEO_CODECS = {
    ".mp4": "libx264",
    ".m4v": "libx264",
    ".mov": "libx264",
    ".mkv": "libx264",
    ".webm": "libvpx-vp9",
}


class VideoReadError(UserError, ValueError):
    """An input video that ffmpeg (or Pillow, for GIF) cannot decode."""


@dataclasses.dataclass
class VideoInfo:
    """What the writer needs to reproduce the input's timing."""

    size: tuple[int, int]  # (width, height)
    fps: float  # 0 when unknown
    num_frames: int | None  # an estimate for ffmpeg inputs (duration * fps)
    has_audio: bool = False
    durations_ms: list[int] | None = None  # GIF: per-frame display time
    loop: int | None = None  # GIF: 0 = forever, None = play once


def is_gif(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() == ".gif"


def _first_error_line(error: Exception | str) -> str:
    """The most telling line of ffmpeg's (often long) error output, at most 200 chars."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    interesting = [
        line
        for line in lines
        if any(
            word in line.lower()
            for word in ("invalid", "error", "not found", "no such", "moov", "could not")
        )
        and "===" not in line
    ]
    return (interesting or lines or ["unknown error"])[-1][:200]


def _read_gif(path: Path) -> tuple[VideoInfo, Iterator[np.ndarray]]:
    try:
        with Image.open(path) as image:
            frames, durations = [], []
            for frame in ImageSequence.Iterator(image):
                durations.append(int(frame.info.get("duration", image.info.get("duration", 100))))
                rgb, _ = pil_to_rgb_alpha(frame.convert("RGBA"))
                frames.append(rgb)
            loop = image.info.get("loop")
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise VideoReadError(f"{path}: cannot decode GIF ({e})") from e
    if not frames:
        raise VideoReadError(f"{path}: GIF has no frames")
    height, width = frames[0].shape[:2]
    mean_ms = sum(durations) / len(durations)
    info = VideoInfo(
        size=(width, height),
        fps=1000.0 / mean_ms if mean_ms > 0 else 0.0,
        num_frames=len(frames),
        durations_ms=durations,
        loop=loop,
    )
    return info, iter(frames)


def read_video(path: str | os.PathLike) -> tuple[VideoInfo, Iterator[np.ndarray]]:
    """Open a video: its info now (raises VideoReadError), then a lazy frame iterator.

    The iterator yields (H, W, 3) uint8 frames and raises VideoReadError if the stream
    breaks off mid-way (a truncated file).
    """
    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"{path}: no such file")
    if is_gif(path):
        return _read_gif(path)
    import imageio_ffmpeg

    generator = imageio_ffmpeg.read_frames(str(path))
    try:
        meta = next(generator)
    except (OSError, RuntimeError, StopIteration, ValueError, IndexError) as e:
        generator.close()
        raise VideoReadError(f"{path}: cannot decode video ({_first_error_line(e)})") from e
    width, height = meta["size"]
    fps = float(meta.get("fps") or 0.0)
    duration = float(meta.get("duration") or 0.0)
    info = VideoInfo(
        size=(width, height),
        fps=fps,
        num_frames=round(duration * fps) if duration and fps else None,
        has_audio="audio_codec" in meta,
    )

    def frames() -> Iterator[np.ndarray]:
        try:
            for raw in generator:
                yield np.frombuffer(raw, np.uint8).reshape(height, width, 3)
        except (OSError, RuntimeError) as e:
            raise VideoReadError(f"{path}: video stream broke off ({_first_error_line(e)})") from e
        finally:
            generator.close()

    return info, frames()


def _even(frame: np.ndarray) -> np.ndarray:
    """Repeat the last row/column once if needed: 4:2:0 codecs need even sizes."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    info: VideoInfo,
    *,
    audio_from: str | os.PathLike | None = None,
    quality: int = 95,
) -> int:
    """Atomically encode uint8 RGB frames to `path`; returns the number of frames written.

    quality (1-100) maps to x264's CRF / VP9's CRF; `audio_from` is a file whose first
    audio track is copied over (pass it only when the source has one).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    count = 0

    if suffix == ".gif":

        def write_gif(tmp: Path) -> None:
            nonlocal count
            images = [Image.fromarray(np.ascontiguousarray(f), "RGB") for f in frames]
            if not images:
                raise ValueError("no frames to write")
            count = len(images)
            durations = info.durations_ms or [round(1000 / (info.fps or 10))] * count
            options = {"duration": durations[:count] + [durations[-1]] * (count - len(durations))}
            if info.loop is not None:
                options["loop"] = info.loop
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], **options)

        write_atomic(path, write_gif)
        return count

    if suffix not in _VIDEO_CODECS:
        raise ValueError(f"{path}: unsupported video container {suffix!r}")
    import imageio_ffmpeg

    codec = _VIDEO_CODECS[suffix]
    # CRF: 0 lossless .. 51 (x264) / 63 (vp9) worst; quality 95 -> about 18 (x264).
    crf = round((100 - max(1, min(100, quality))) * (51 if codec == "libx264" else 63) / 100 + 15)
    output_params = ["-crf", str(min(crf, 51 if codec == "libx264" else 63))]
    if codec == "libvpx-vp9":
        output_params += ["-b:v", "0", "-row-mt", "1", "-deadline", "good", "-cpu-used", "4"]
    if codec == "libx264":
        output_params += ["-preset", "medium", "-movflags", "+faststart"]
    fps = Fraction(info.fps).limit_denominator(1001) if info.fps > 0 else Fraction(25)

    def write_ffmpeg(tmp: Path) -> None:
        nonlocal count
        writer = None
        try:
            for frame in frames:
                frame = _even(np.ascontiguousarray(frame, np.uint8))
                if writer is None:
                    writer = imageio_ffmpeg.write_frames(
                        str(tmp),
                        (frame.shape[1], frame.shape[0]),
                        fps=fps,
                        codec=codec,
                        quality=None,
                        macro_block_size=1,
                        ffmpeg_log_level="error",
                        output_params=list(output_params),
                        audio_path=str(audio_from) if audio_from is not None else None,
                        audio_codec="copy" if audio_from is not None else None,
                    )
                    writer.send(None)  # start the generator (launches ffmpeg)
                writer.send(frame)
                count += 1
            if writer is None:
                raise ValueError("no frames to write")
        finally:
            if writer is not None:
                writer.close()  # flushes and waits for ffmpeg

    write_atomic(path, write_ffmpeg)
    return count
