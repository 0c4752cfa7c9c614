"""One running service: its settings, models, queue, metrics, and a request's whole path.

`Service.stylize` is where a request goes once its body is read (`app.py` reads it):

    check the service is ready -> reserve a queue slot (503 when full)
      -> decode, resize to the output size, then to the stroke scale's working size, in
         the I/O thread pool (off the event loop; 400/413/415/422)
      -> the batcher's queue -> a worker's network call (batched with its group)
      -> upsample to the output size (`stroke.Stroke.finish`) and encode in the I/O thread
         pool -> bytes + timing headers

The stroke scale (`?stroke_scale=`, `fnst_jax.stroke`) is applied as `stylize.py` applies
it (`stylize.run`): at a working size other than the output size the network runs without
preserving colours, and the upsampled result takes the full-size photo's colours.

Images live in memory only; nothing is written to disk. A request older than
`timeout_s` gets 504 and is dropped from the queue; a client that disconnects while its
request waits has it dropped too (a network call already running finishes).

`Service.start()` starts the workers, which compile the configured sizes first
(`warm_up`, progress in the log); `ready` turns true when every worker is done.
`drain()` (SIGTERM) refuses new requests and stops waiting for batches to fill; `stop()`
finishes what is queued.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from fnst_jax import image_io, stroke
from fnst_jax.errors import UsageError
from fnst_jax.serve import errors, images
from fnst_jax.serve.batcher import Batcher, Job, Result
from fnst_jax.serve.metrics import Metrics
from fnst_jax.serve.models import ServedModel
from fnst_jax.stylize import styles

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 4096 * 4096


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the command line sets besides models, host and port."""

    max_batch: int = 8
    max_wait_ms: float = 10.0
    queue_size: int = 64
    timeout_s: float = 60.0
    max_upload_mb: float = 20.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    warm_sizes: tuple[tuple[int, int], ...] = ((256, 256), (512, 512))  # (width, height)
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    io_workers: int = 2

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


@dataclasses.dataclass(frozen=True)
class StylizeOptions:
    """The query parameters of `POST /v1/stylize`."""

    model: str | None = None
    size: int | None = None  # longest side in px, as stylize.py --size
    preserve_color: bool = False
    format: str | None = None  # jpg, png, webp; None: the input's own, else png
    quality: int = 95
    mix: str | None = None  # multi-style models: NAME:W,NAME:W (stylize --style-mix)
    stroke_scale: float | None = None  # parsed ?stroke_scale= (None: auto), stroke.parse_scale
    upsampler: str = stroke.DEFAULT_UPSAMPLER
    detail_pass: bool = True  # ?detail_pass=: the detail pass below the output size
    keep_brightness: bool = True  # ?keep_brightness=: the photo's mean brightness


@dataclasses.dataclass
class Reply:
    body: bytes
    content_type: str
    headers: dict[str, str]


@dataclasses.dataclass
class _Prepared:
    """A decoded request image: `photo` at the output size, `working` at the size the
    network runs at (the stroke scale's; `photo` itself at S = 1)."""

    decoded: image_io.DecodedImage
    photo: np.ndarray
    working: np.ndarray
    alpha: np.ndarray | None


class Service:
    """See the module docstring."""

    def __init__(self, models: dict[str, ServedModel], settings: Settings):
        if not models:
            raise ValueError("a service needs at least one model")
        self.models = models
        self.settings = settings
        self.metrics = Metrics(queue_depth=lambda: self.batcher.depth, ready=lambda: self.ready)
        devices = len(next(iter(models.values())).stylizers)
        self.batcher = Batcher(
            max_batch=settings.max_batch,
            max_wait_s=settings.max_wait_ms / 1000,
            queue_size=settings.queue_size,
            devices=devices,
            metrics=self.metrics,
        )
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max(1, settings.io_workers), thread_name_prefix="fnst-serve-io"
        )
        self._started = False

    # -- life cycle

    def start(self) -> None:
        """Start the workers (idempotent); they warm up, then serve."""
        if not self._started:
            self._started = True
            self.batcher.start(self.warm_up)

    def drain(self) -> None:
        log.info("draining: refusing new requests, finishing %d queued", self.batcher.depth)
        self.batcher.drain()

    def stop(self) -> None:
        self.batcher.stop(timeout_s=self.settings.timeout_s + 5)
        self.pool.shutdown(wait=True)

    @property
    def ready(self) -> bool:
        return self.batcher.ready.is_set() and not self.batcher.draining

    @property
    def state(self) -> str:
        """starting, ready, draining or failed (a warm-up that raised)."""
        if self.batcher.failure is not None:
            return "failed"
        if self.batcher.draining:
            return "draining"
        return "ready" if self.batcher.ready.is_set() else "starting"

    def warm_up(self, device_index: int) -> None:
        """Compile every batch size up to max_batch at every configured size, once per
        distinct program: models of one architecture and dtype share compiled programs, so
        only their bucket shapes count. Compiled, not run: on CPU running them all would
        take as long again (with a warm compilation cache, far longer than loading them)."""
        plan, seen = [], set()
        for model in self.models.values():
            stylizer = model.stylizers[device_index]
            for width, height in self.settings.warm_sizes:
                if stylizer.needs_tiling(height, width):
                    log.info("not compiling %dx%d ahead: it is stylized in tiles", width, height)
                    continue
                bucket = stylizer.bucket_shape(height, width)
                limit = min(self.batcher.max_batch, stylizer.batch_limit(bucket[0] * bucket[1]))
                for batch in (1 << i for i in range(limit.bit_length())):
                    key = (stylizer.graphdef, bucket, batch)
                    if key not in seen:
                        seen.add(key)
                        plan.append((stylizer, width, height, bucket, batch))
        for step, (stylizer, width, height, bucket, batch) in enumerate(plan, 1):
            log.info(
                "compiling %d/%d (device %d): %dx%d images (bucket %dx%d), batch %d",
                step,
                len(plan),
                device_index,
                width,
                height,
                bucket[1],
                bucket[0],
                batch,
            )
            stylizer.compile(batch, bucket)
        log.info("device %d ready (%d programs compiled)", device_index, len(plan))

    # -- requests

    def check_ready(self) -> None:
        """503 unless the service takes requests."""
        state = self.state
        if state == "starting":
            raise errors.unavailable("not_ready", "the service is still compiling its models", 5)
        if state == "draining":
            raise errors.unavailable("shutting_down", "the service is shutting down", 1)
        if state == "failed":
            raise errors.ServiceError(
                500, "failed", f"the service could not start ({self.batcher.failure})"
            )

    def model(self, name: str | None) -> ServedModel:
        """The loaded model called `name` (404 otherwise); optional with one model."""
        if name is None:
            if len(self.models) == 1:
                return next(iter(self.models.values()))
            raise errors.ServiceError(
                400, "model_required", f"give ?model=NAME, one of: {', '.join(self.models)}"
            )
        if name not in self.models:
            raise errors.ServiceError(
                404, "unknown_model", f"unknown model {name!r}; loaded: {', '.join(self.models)}"
            )
        return self.models[name]

    @staticmethod
    def style_mix(model: ServedModel, mix: str | None) -> tuple[float, ...] | None:
        """The style weights of `?mix=NAME:W,...` for a model's entry (None: the entry's own
        style); 400 for a one-style model or a mix that names no style of it."""
        if mix is None:
            return None
        names = model.stylizers[0].style_names
        if len(names) == 1:
            raise errors.ServiceError(
                400, "bad_mix", f"model {model.name!r} has one style: nothing to mix"
            )
        try:
            return styles.parse_mix(names, mix, "mix").weights
        except UsageError as e:
            raise errors.ServiceError(400, "bad_mix", str(e)) from None

    def info(self) -> dict[str, Any]:
        """`GET /v1/info`: the limits a client (the web page) should know."""
        return {
            "ready": self.ready,
            "api_key_required": bool(self.settings.api_key),
            "max_upload_bytes": self.settings.max_upload_bytes,
            "max_pixels": self.settings.max_pixels,
            "max_batch": self.batcher.max_batch,
            "timeout_s": self.settings.timeout_s,
            "formats": list(images.CONTENT_TYPES),
        }

    def _prepare(
        self, body: bytes, content_type: str | None, size: int | None, strokes: stroke.Stroke
    ) -> _Prepared:
        """Decode, resize to the output size, then to the working size (runs in the I/O
        pool). A working size below the smallest the network paints is a 422, above
        `max_pixels` a 413."""
        max_pixels = self.settings.max_pixels
        decoded = images.decode(images.image_bytes(body, content_type), max_pixels)
        photo, alpha = images.prepare(decoded, size, max_pixels)
        height, width = photo.shape[:2]
        try:
            working_size = strokes.working_size(width, height)
        except stroke.StrokeScaleError as e:
            raise errors.ServiceError(422, "invalid_parameter", f"stroke_scale: {e}") from None
        if working_size[0] * working_size[1] > max_pixels:
            raise images.too_many_pixels(
                *working_size,
                max_pixels,
                f"stroke_scale={strokes.scale_for(width, height):g} would run the network on",
            )
        return _Prepared(decoded, photo, strokes.prepare(photo), alpha)

    def _finish(
        self,
        stylized: np.ndarray,
        prepared: _Prepared,
        strokes: stroke.Stroke,
        options: StylizeOptions,
        output_format: str,
    ) -> bytes:
        """Upsample to the output size (colours kept on request) and encode (runs in the
        I/O pool)."""
        image = strokes.finish(stylized, prepared.photo, preserve_color=options.preserve_color)
        return images.encode(
            image,
            prepared.alpha,
            format=output_format,
            quality=options.quality,
            icc_profile=prepared.decoded.icc_profile,
        )

    async def stylize(
        self,
        body: bytes,
        content_type: str | None,
        options: StylizeOptions,
        arrived: float,
        client_gone: Callable[[], Awaitable[Any]],
    ) -> Reply | None:
        """A request's image -> the stylized image's bytes and headers; None when the
        client went away first. `arrived`: time.monotonic() when the request came in.
        Raises ServiceError."""
        self.check_ready()
        model = self.model(options.model)
        loop = asyncio.get_running_loop()
        deadline = arrived + self.settings.timeout_s
        strokes = stroke.Stroke(
            options.stroke_scale,
            model.native_size,
            options.upsampler,
            detail=options.detail_pass,
            keep_brightness=options.keep_brightness,
        )
        style = self.style_mix(model, options.mix)
        ticket = self.batcher.reserve()
        try:
            decode_started = time.monotonic()
            prepared = await loop.run_in_executor(
                self.pool, self._prepare, body, content_type, options.size, strokes
            )
            decode_s = time.monotonic() - decode_started
            # The network keeps the colours at the output size only; a rescaled image takes
            # them from the full-size photo in `_finish`.
            preserve = options.preserve_color and prepared.working.shape == prepared.photo.shape
            future = self.batcher.submit(
                ticket, self._job(model, prepared.working, preserve, deadline, style)
            )
        finally:
            ticket.release()  # no-op once submitted
        result = await self._wait(future, deadline, client_gone)
        if result is None:
            return None
        height, width = prepared.photo.shape[:2]
        detail_size = strokes.detail_size(width, height)
        if detail_size is not None:  # the detail pass: the request's second network job
            detail_input = await loop.run_in_executor(
                self.pool, strokes.detail_input, result.image, detail_size
            )
            ticket = self.batcher.reserve(admitted=True)  # admitted already: never a 503
            future = self.batcher.submit(
                ticket, self._job(model, detail_input, False, deadline, style)
            )
            detailed = await self._wait(future, deadline, client_gone)
            if detailed is None:
                return None
            result = dataclasses.replace(
                detailed,
                network_s=result.network_s + detailed.network_s,
                queued_s=result.queued_s + detailed.queued_s,
            )
        output_format = images.output_format(options.format, prepared.decoded.source_format)
        encode_started = time.monotonic()
        data = await loop.run_in_executor(
            self.pool, self._finish, result.image, prepared, strokes, options, output_format
        )
        encode_s = time.monotonic() - encode_started
        headers = _timing_headers(model.name, result, decode_s, encode_s, output_format)
        working_height, working_width = prepared.working.shape[:2]
        headers["X-Working-Size"] = f"{working_width}x{working_height}"  # the network's input
        if detail_size is not None:
            headers["X-Detail-Size"] = f"{detail_size[0]}x{detail_size[1]}"  # its detail pass
        return Reply(data, images.CONTENT_TYPES[output_format], headers)

    def _job(
        self,
        model: ServedModel,
        image: np.ndarray,
        preserve_color: bool,
        deadline: float,
        style: tuple[float, ...] | None,
    ) -> Job:
        """A network pass over `image` for the batcher (jobs of one batch share
        `preserve_color` and `style`: the batcher groups by them)."""
        return Job(
            model,
            image,
            preserve_color,
            deadline=deadline,
            timeout_s=self.settings.timeout_s,
            style=style,
        )

    async def _wait(
        self,
        future: concurrent.futures.Future,
        deadline: float,
        client_gone: Callable[[], Awaitable[Any]],
    ) -> Result | None:
        """The worker's result; None if the client left first; 504 past the deadline.
        Either way a request still queued is cancelled, so no network time is spent on it."""
        result = asyncio.wrap_future(future)
        gone = asyncio.ensure_future(client_gone())
        try:
            done, _ = await asyncio.wait(
                {result, gone},
                timeout=max(0.0, deadline - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            gone.cancel()
        if result in done:
            return result.result()  # raises the worker's ServiceError (504, 500)
        future.cancel()  # dropped from the queue unless already on the network
        result.cancel()
        if gone in done and not gone.cancelled() and gone.exception() is None:
            log.info("client disconnected; its request was dropped")
            return None
        raise errors.timed_out(self.settings.timeout_s)


def _timing_headers(
    model: str, result: Result, decode_s: float, encode_s: float, output_format: str
) -> dict[str, str]:
    """What the response says about how it was computed."""
    milliseconds = {
        "decode": decode_s * 1000,
        "queue": result.queued_s * 1000,
        "network": result.network_s * 1000,
        "encode": encode_s * 1000,
    }
    return {
        "X-Model": model,
        "X-Batch-Size": str(result.batch_size),
        "X-Network-Time-Ms": f"{milliseconds['network']:.1f}",
        "X-Queue-Time-Ms": f"{milliseconds['queue']:.1f}",
        "Server-Timing": ", ".join(f"{k};dur={v:.1f}" for k, v in milliseconds.items()),
        "Content-Disposition": f'inline; filename="stylized_{model}.{output_format}"',
    }
