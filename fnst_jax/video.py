"""Video in and out: ffmpeg (the binary imageio-ffmpeg ships) for mp4/mov/webm/mkv, Pillow
for animated GIF.

Frames are streamed: `read_video` yields uint8 RGB frames one at a time and `write_video`
consumes any iterable of frames, so a long video never sits in memory (GIFs, which are
small, are read whole to learn their frame durations). The output keeps the input's frame
rate (GIF: each frame's duration and the loop count) and, where the input has an audio
track, carries it over unchanged (`-c:a copy` into the same container type).

H.264/VP9 in 4:2:0 need even frame sizes; odd-sized frames get their last row/column
repeated once rather than the whole frame resampled.

ffmpeg runs as a child process (`_start_ffmpeg`) that decodes to, or encodes from, raw RGB
frames on a pipe; its messages go to a temporary file (a pipe nobody reads could fill up
and stall it), where the reader also finds the stream header it parses (`_parse_header`:
size, frame rate, duration, audio) and either side finds the reason of a failure. It is
started in its own process group and without a `preexec_fn`, so no Python code runs
between fork and exec: JAX's at-fork warning ("will likely lead to a deadlock") never fires.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

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
    breaks off mid-way (a truncated file). Closing it early (or dropping it) stops ffmpeg.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"{path}: no such file")
    if is_gif(path):
        return _read_gif(path)
    log = tempfile.TemporaryFile()
    decoder = _start_ffmpeg(
        ["-nostdin", "-nostats", "-i", str(path), "-map", "0:v:0"]
        + ["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
        log,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    try:
        # ffmpeg prints the stream header before it writes the first frame: once stdout has
        # data (or is closed), the header is complete in the log.
        decoder.stdout.peek(1)
        header = _parse_header(_log_text(log))
        if header is None:
            decoder.wait()
            raise VideoReadError(
                f"{path}: cannot decode video ({_first_error_line(_log_text(log))})"
            )
    except BaseException:
        _stop(decoder, log)
        raise
    info = VideoInfo(
        size=header.size,
        fps=header.fps,
        num_frames=round(header.duration * header.fps) if header.duration and header.fps else None,
        has_audio=header.has_audio,
    )
    frames = _decoded_frames(path, decoder, log, header.size)
    next(frames)  # started, so that closing or dropping it runs its cleanup (stops ffmpeg)
    return info, frames


def _decoded_frames(
    path: Path, decoder: subprocess.Popen, log: IO[bytes], size: tuple[int, int]
) -> Iterator[np.ndarray]:
    """Frames from the decoder's stdout. Yields None once first (see read_video)."""
    width, height = size
    frame_bytes = width * height * 3
    try:
        yield None
        while len(data := decoder.stdout.read(frame_bytes)) == frame_bytes:
            yield np.frombuffer(data, np.uint8).reshape(height, width, 3)
        if decoder.wait() != 0 or data:
            reason = _first_error_line(_log_text(log)) if decoder.returncode else "partial frame"
            raise VideoReadError(f"{path}: video stream broke off ({reason})")
    finally:
        _stop(decoder, log)


@dataclasses.dataclass(frozen=True)
class _Header:
    """What read_video needs from ffmpeg's description of the input and the decoded stream."""

    size: tuple[int, int]  # of the decoded frames (after ffmpeg's automatic rotation)
    fps: float
    duration: float
    has_audio: bool


# "Stream #0:0[0x1](und): Video: h264 ..., 64x48 [SAR 1:1 DAR 4:3], ..., 12 fps, 12 tbr"
_STREAM = re.compile(r"^\s*Stream #\d+:\d+.*?: (Video|Audio): ", re.MULTILINE)
_SIZE = re.compile(r" (\d+)x(\d+)[ ,]")
_FPS = re.compile(r" (\d+(?:\.\d+)?) fps")
_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")


def _stream_lines(text: str, kind: str) -> list[str]:
    return [
        line
        for line in text.splitlines()
        if (match := _STREAM.match(line)) is not None and match.group(1) == kind
    ]


def _parse_header(log: str) -> _Header | None:
    """The input's frame rate, duration and audio, and the size of the frames ffmpeg sends,
    from its stderr; None when it has no output video stream (it failed)."""
    input_part, _, output_part = log.partition("\nOutput #0")
    input_video = _stream_lines(input_part, "Video")
    output_video = _stream_lines(output_part, "Video")
    size = _SIZE.search(output_video[0]) if output_video else None
    if not input_video or size is None:
        return None
    fps = _FPS.search(input_video[0])
    duration = _DURATION.search(input_part)
    seconds = 0.0
    if duration is not None:
        hours, minutes, rest = duration.groups()
        seconds = 3600 * int(hours) + 60 * int(minutes) + float(rest)
    return _Header(
        size=(int(size.group(1)), int(size.group(2))),
        fps=float(fps.group(1)) if fps else 0.0,
        duration=seconds,
        has_audio=bool(_stream_lines(input_part, "Audio")),
    )


def _start_ffmpeg(arguments: list[str], log: IO[bytes], **pipes: Any) -> subprocess.Popen:
    """Launch the ffmpeg binary imageio-ffmpeg ships (or IMAGEIO_FFMPEG_EXE), its stderr into
    `log` (a file: it cannot fill up and block ffmpeg).

    `process_group=0` puts it in its own process group, so a Ctrl-C in the terminal reaches
    Python only, which then stops ffmpeg in order. Unlike a `preexec_fn` (what imageio-ffmpeg
    uses), it runs no Python code in the child: CPython then starts the process without
    running the at-fork handlers, which is where JAX warns that forking a multithreaded
    process "will likely lead to a deadlock".
    """
    import imageio_ffmpeg

    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", *arguments]
    try:
        return subprocess.Popen(command, stderr=log, process_group=0, **pipes)
    except OSError as e:
        raise OSError(f"cannot start ffmpeg ({command[0]}): {e}") from e


def _log_text(log: IO[bytes]) -> str:
    log.seek(0)
    return log.read().decode("utf-8", "replace")


def _stop(process: subprocess.Popen, log: IO[bytes]) -> None:
    """End ffmpeg if it still runs (a reader closed early, an error, Ctrl-C), then release
    its pipes and log."""
    if process.poll() is None:
        process.terminate()
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:  # unflushed input for an ffmpeg that is gone
                pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()


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
    codec = _VIDEO_CODECS[suffix]
    # CRF: 0 lossless .. 51 (x264) / 63 (vp9) worst; quality 95 -> about 18 (x264).
    crf = round((100 - max(1, min(100, quality))) * (51 if codec == "libx264" else 63) / 100 + 15)
    encoding = ["-c:v", codec, "-pix_fmt", "yuv420p"]
    encoding += ["-crf", str(min(crf, 51 if codec == "libx264" else 63))]
    if codec == "libvpx-vp9":
        encoding += ["-b:v", "0", "-row-mt", "1", "-deadline", "good", "-cpu-used", "4"]
    if codec == "libx264":
        encoding += ["-preset", "medium", "-movflags", "+faststart"]
    fps = Fraction(info.fps).limit_denominator(1001) if info.fps > 0 else Fraction(25)
    audio = ["-an"]
    if audio_from is not None:
        audio = ["-i", str(audio_from), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "copy"]

    def write_ffmpeg(tmp: Path) -> None:
        nonlocal count
        count = _encode(tmp, frames, fps, audio + encoding)

    write_atomic(path, write_ffmpeg)
    return count


def _encode(path: Path, frames: Iterable[np.ndarray], fps: Fraction, output: list[str]) -> int:
    """Pipe frames as raw RGB into ffmpeg, which encodes them to `path` with the `output`
    arguments; ffmpeg starts at the first frame (its size is the video's). Returns the count.
    Raises OSError with ffmpeg's own error line when it fails."""
    log = tempfile.TemporaryFile()
    encoder: subprocess.Popen | None = None
    count, stopped = 0, False
    try:
        for frame in frames:
            frame = _even(np.ascontiguousarray(frame, np.uint8))
            if encoder is None:
                height, width = frame.shape[:2]
                raw = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}"]
                encoder = _start_ffmpeg(
                    ["-nostats", "-loglevel", "error", "-y", *raw, "-r", str(fps), "-i", "pipe:0"]
                    + [*output, str(path)],
                    log,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                )
            try:
                encoder.stdin.write(frame.data)
            except BrokenPipeError:  # ffmpeg stopped: its log says why
                stopped = True
                break
            count += 1
        if encoder is None:
            raise ValueError("no frames to write")
        if not stopped:
            encoder.stdin.close()
        if encoder.wait() != 0 or stopped:
            reason = _first_error_line(_log_text(log))
            raise OSError(f"ffmpeg: {reason}")
    finally:
        if encoder is not None:
            _stop(encoder, log)  # after an error: ffmpeg is stopped before the file is removed
        log.close()
    return count
