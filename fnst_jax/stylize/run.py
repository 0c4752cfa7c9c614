"""The runs: images and videos from jobs to written outputs, with progress and a summary.

  * `run_jobs`: every image job (`run_images`), then every video job (`run_video`).
  * `run_images`: decode -> stylize -> encode. Decoding and resizing (`_prepare`: to the
    output size, then to the stroke scale's working size) and upsampling and encoding
    (`_encode`) run in a thread pool while the network computes in the calling thread
    (`_ImageRun`); decoded images wait in groups of one bucket shape and size until a group
    fills a batch (or too many wait), so same-size images share network calls.
  * `run_video`: frames streamed from `video.read_video` through the network in batches to
    `video.write_video`; the output keeps the timing and audio.
Progress, errors and the summary go through the run's `reporter.Reporter`.

A bad input (unreadable, failed stylization, unwritable output) is reported on one line and
the run goes on with the others.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fnst_jax import image_io, stroke, video
from fnst_jax.stylize.inputs import Job, Options, target_size
from fnst_jax.stylize.reporter import Reporter

if TYPE_CHECKING:  # runs take either engine (loading.load_stylizer) and import neither
    from fnst_jax.stylize.engine import Stylizer


def run_jobs(jobs: Sequence[Job], stylizer: Stylizer, options: Options, reporter: Reporter) -> None:
    """All image jobs (batched across files), then the videos one by one."""
    run_images([job for job in jobs if job.kind == "image"], stylizer, options, reporter)
    for job in jobs:
        if job.kind == "video":
            run_video(job, stylizer, options, reporter)


# ----------------------------------------------------------------------------- images


@dataclasses.dataclass
class _Prepared:
    """A decoded, resized image waiting for the network: `rgb` at the working size (what
    the network runs on), `photo` at the output size."""

    job: Job
    rgb: np.ndarray
    photo: np.ndarray
    alpha: np.ndarray | None
    icc_profile: bytes | None
    format: str
    started: float


def _prepare(job: Job, options: Options) -> _Prepared:
    """Decode and resize (runs in a worker thread)."""
    started = time.perf_counter()
    decoded = image_io.read_image(job.source)
    size = target_size(decoded.rgb.shape[1], decoded.rgb.shape[0], options)
    photo, alpha = image_io.resize_rgb_alpha(decoded.rgb, decoded.alpha, size)
    format = image_io.EXTENSION_TO_FORMAT[job.destination.suffix.lower()]
    working = options.stroke.prepare(photo)
    return _Prepared(job, working, photo, alpha, decoded.icc_profile, format, started)


def _preserve_in_network(working: np.ndarray, photo: np.ndarray, options: Options) -> bool:
    """--preserve-color is the engine's at the output size; a rescaled image keeps the
    colours of the full-size photo after upsampling (`stroke.Stroke.finish`)."""
    return options.preserve_color and working.shape == photo.shape


def _encode(item: _Prepared, stylized: np.ndarray, options: Options) -> Path:
    """Upsample to the output size and write one stylized uint8 image (runs in a worker
    thread)."""
    stylized = options.stroke.finish(stylized, item.photo, preserve_color=options.preserve_color)
    return image_io.write_image(
        item.job.destination,
        stylized,
        item.alpha,
        format=item.format,
        quality=options.quality,
        icc_profile=item.icc_profile,
    )


# Images that share one bucket shape, one working size and one output size: (bucket height,
# width, height, width, output height, output width).
_GroupKey = tuple[int, int, int, int, int, int]


class _ImageRun:
    """One `run_images` call: the decode queue, the groups waiting for the network, the
    encode queue. Decoding and encoding run in `pool`; the network in the caller's thread.
    At most `prefetch` images are being decoded, waiting in groups, or being encoded."""

    def __init__(
        self,
        stylizer: Stylizer,
        options: Options,
        reporter: Reporter,
        pool: concurrent.futures.Executor,
        bar: Any,
    ):
        self.stylizer = stylizer
        self.options = options
        self.reporter = reporter
        self.pool = pool
        self.bar = bar
        self.prefetch = max(2, 2 * stylizer.batch_size)
        self.decoding: deque[tuple[Job, concurrent.futures.Future[_Prepared]]] = deque()
        self.encoding: deque[tuple[_Prepared, concurrent.futures.Future[Path]]] = deque()
        self.waiting: dict[_GroupKey, list[_Prepared]] = {}

    def run(self, jobs: Sequence[Job]) -> None:
        queued = iter(jobs)
        self.start_decodes(queued)
        while self.decoding:
            job, future = self.decoding.popleft()
            self.start_decodes(queued)
            item = self.decoded(job, future)
            if item is not None:
                self.schedule(item)
        for key in list(self.waiting):
            self.stylize_group(key)
        self.finish_encodes(keep=0)

    def start_decodes(self, queued: Iterator[Job]) -> None:
        """Keep `prefetch` images decoding ahead of the network."""
        while len(self.decoding) < self.prefetch:
            job = next(queued, None)
            if job is None:
                return
            self.decoding.append((job, self.pool.submit(_prepare, job, self.options)))

    def failed(self, source: Path, reason: str) -> None:
        self.reporter.error(source, reason)
        self.bar.update(1)

    def decoded(self, job: Job, future: concurrent.futures.Future[_Prepared]) -> _Prepared | None:
        """The decoded image, or None when it could not be read (reported)."""
        try:
            return future.result()
        except (image_io.ImageReadError, stroke.StrokeScaleError) as e:
            self.failed(job.source, str(e))
        except Exception as e:  # any decoder failure is this input's, not the run's
            self.failed(job.source, f"cannot read image ({type(e).__name__}: {e})")
        return None

    def schedule(self, item: _Prepared) -> None:
        """Tiled images run at once; others join their group, which runs when it fills a
        batch, or the largest group runs when too many images wait."""
        height, width = item.rgb.shape[:2]
        if self.stylizer.needs_tiling(height, width):
            self.stylize_items([item])
            return
        # Same bucket and same size: the images of one group are padded and cropped alike.
        output_h, output_w = item.photo.shape[:2]
        key = (*self.stylizer.bucket_shape(height, width), height, width, output_h, output_w)
        self.waiting.setdefault(key, []).append(item)
        if len(self.waiting[key]) >= self.stylizer.batch_limit(key[0] * key[1]):
            self.stylize_group(key)
        elif sum(len(group) for group in self.waiting.values()) > self.prefetch:
            self.stylize_group(max(self.waiting, key=lambda k: len(self.waiting[k])))

    def stylize_group(self, key: _GroupKey) -> None:
        self.stylize_items(self.waiting.pop(key))

    def stylize_items(self, items: Sequence[_Prepared]) -> None:
        """Run the network on `items` and queue their encodes."""
        output_h, output_w = items[0].photo.shape[:2]
        try:
            results = self.stylizer.stylize_batch(
                [item.rgb for item in items],
                preserve_color=_preserve_in_network(items[0].rgb, items[0].photo, self.options),
            )
            results = self.options.stroke.refine(
                results, output_w, output_h, self.stylizer.stylize_batch
            )
        except Exception as e:  # e.g. out of memory: report, keep going
            for item in items:
                self.failed(item.job.source, f"stylization failed ({e})")
            return
        for item, result in zip(items, results, strict=True):
            future = self.pool.submit(_encode, item, result, self.options)
            self.encoding.append((item, future))
        self.finish_encodes(keep=self.prefetch)

    def finish_encodes(self, keep: int) -> None:
        """Wait for the oldest encodes until at most `keep` are in flight; report each."""
        while len(self.encoding) > keep:
            item, future = self.encoding.popleft()
            try:
                future.result()
            except Exception as e:  # an encoder error must not stop the other inputs
                self.failed(item.job.source, f"cannot write {item.job.destination} ({e})")
                continue
            seconds = time.perf_counter() - item.started
            self.reporter.success(item.job.source, item.job.destination, seconds)
            self.bar.update(1)


def run_images(
    jobs: Sequence[Job], stylizer: Stylizer, options: Options, reporter: Reporter
) -> None:
    """Decode (prefetched), stylize (bucketed and batched), encode (in the background)."""
    if not jobs:
        return
    bar = reporter.bar(len(jobs), "img", "images")
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=options.workers) as pool:
            _ImageRun(stylizer, options, reporter, pool, bar).run(jobs)
    finally:
        reporter.close_bar(bar)


# ----------------------------------------------------------------------------- video


def _batched(frames: Iterable[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _stylized_frames(
    frames: Iterable[np.ndarray],
    stylizer: Stylizer,
    size: tuple[int, int],
    batch: int,
    options: Options,
    bar: Any,
) -> Iterator[np.ndarray]:
    """Resize frames to `size` (width, height) and stylize them `batch` at a time at the
    stroke scale's working size, and its detail pass; with `options.temporal_blend`, blend
    each with the previous output along the input's optical flow
    (`temporal.TemporalBlender`), then upsample."""
    blender = None
    if options.temporal_blend:
        from fnst_jax.temporal import TemporalBlender  # OpenCV: only for --temporal-blend

        blender = TemporalBlender(options.temporal_blend)
    for group in _batched(frames, batch):
        group = [image_io.resize_rgb_alpha(frame, None, size)[0] for frame in group]
        working = [options.stroke.prepare(frame) for frame in group]
        preserve = _preserve_in_network(working[0], group[0], options)
        stylized = stylizer.stylize_batch(working, preserve_color=preserve)
        stylized = options.stroke.refine(stylized, *size, stylizer.stylize_batch)
        if blender is not None:
            # The flow is that of the frames at the size of the network's last pass.
            stylized = [
                blender(image_io.resize(frame, styled.shape[1::-1]), styled)
                for frame, styled in zip(group, stylized, strict=True)
            ]
        for frame, styled in zip(group, stylized, strict=True):
            yield options.stroke.finish(styled, frame, preserve_color=options.preserve_color)
        bar.update(len(group))


def run_video(job: Job, stylizer: Stylizer, options: Options, reporter: Reporter) -> None:
    """Stream one video through the network; the output keeps its timing and audio."""
    started = time.perf_counter()
    try:
        info, frames = video.read_video(job.source)
    except video.VideoReadError as e:
        reporter.error(job.source, str(e))
        return
    width, height = target_size(*info.size, options)
    try:
        working_w, working_h = options.stroke.working_size(width, height)
    except stroke.StrokeScaleError as e:
        reporter.error(job.source, str(e))
        return
    bucket_h, bucket_w = stylizer.bucket_shape(working_h, working_w)
    tiled = stylizer.needs_tiling(working_h, working_w)
    batch = 1 if tiled else stylizer.batch_limit(bucket_h * bucket_w)
    bar = reporter.bar(info.num_frames, "frame", job.source.name)
    stylized = _stylized_frames(frames, stylizer, (width, height), batch, options, bar)
    try:
        count = video.write_video(
            job.destination,
            stylized,
            info,
            audio_from=job.source if info.has_audio else None,
            quality=options.quality,
        )
    except video.VideoReadError as e:
        reporter.error(job.source, str(e))
    except (OSError, RuntimeError, ValueError) as e:
        reporter.error(job.source, f"cannot write video {job.destination} ({e})")
    else:
        seconds = time.perf_counter() - started
        reporter.success(job.source, job.destination, seconds)
        reporter.info(f"  {count} frames, {count / max(seconds, 1e-9):.2f} frames/s")
    finally:
        reporter.close_bar(bar)
