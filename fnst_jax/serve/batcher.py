"""The queue between requests and the network: dynamic batching, one worker per device.

    batcher = Batcher(max_batch=8, max_wait_s=0.01, queue_size=64, devices=1)
    batcher.start(warm_up)                  # worker threads; warm_up(device_index) first
    ticket = batcher.reserve()              # a queue slot, or ServiceError 503 "busy"
    future = batcher.submit(ticket, job)    # concurrent.futures.Future[Result]
    batcher.stop()                          # finish what is queued, join the workers

Where things happen:
  * `reserve`: admission. A request holds a slot from the moment its body is read (while
    it decodes) until a worker takes it, so the bound covers decoded images in memory.
  * `_next_batch`: a worker takes the oldest request's group (same model, same bucket
    shape, same preserve-colour option: what one `Stylizer.stylize_batch` call computes
    together) once the group holds `max_batch` requests or its oldest request has waited
    `max_wait_s`, whichever comes first (at once while draining). It takes a power of two
    (the engine pads batches up to one, so 4 + 2 costs less than 6 padded to 8); the rest
    wait for the next round. Requests whose future was cancelled (client gone, handler
    timed out) are dropped without computing; requests past their deadline fail with 504.
  * `_run_batch`: the worker's one network call; every request gets its own output (the
    engine keeps the order) and the batch size and network time it ran with.

Each worker thread is the only one that calls the network on its device (worker `i` uses
`model.stylizers[i]`), so the device never runs two programs at once; the event loop only
waits on futures.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

import numpy as np

from fnst_jax.serve import errors

if TYPE_CHECKING:
    from fnst_jax.serve.metrics import Metrics
    from fnst_jax.serve.models import ServedModel

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Result:
    """One request's stylized image and how it was computed."""

    image: np.ndarray  # uint8 (H, W, 3)
    batch_size: int  # requests in the network call it ran in
    network_s: float  # that call's time
    queued_s: float  # from submission until the call started


@dataclasses.dataclass
class Job:
    """One request waiting for the network."""

    model: ServedModel
    image: np.ndarray  # uint8 (H, W, 3), already resized
    preserve_color: bool
    deadline: float  # time.monotonic() after which it fails with 504 ...
    timeout_s: float  # ... the service's --timeout-s, for the message
    future: concurrent.futures.Future = dataclasses.field(default_factory=concurrent.futures.Future)
    submitted: float = 0.0
    style: tuple[float, ...] | None = None  # a mix of a multi-style model's styles (?mix=)

    @property
    def group(self) -> Hashable:
        """Requests with equal groups run in one network call."""
        height, width = self.image.shape[:2]
        bucket = self.model.stylizers[0].bucket_shape(height, width)
        return self.model.name, bucket, self.preserve_color, self.style


class Ticket:
    """A reserved queue slot; `release` (idempotent) gives it back unused."""

    def __init__(self, batcher: Batcher):
        self._batcher = batcher
        self.open = True

    def release(self) -> None:
        if self.open:
            self.open = False
            self._batcher._unreserve()


def _power_of_two_at_most(n: int) -> int:
    return 1 << (max(n, 1).bit_length() - 1)


class Batcher:
    """The bounded queue and the worker threads (see the module docstring)."""

    def __init__(
        self,
        *,
        max_batch: int,
        max_wait_s: float,
        queue_size: int,
        devices: int = 1,
        metrics: Metrics | None = None,
    ):
        self.max_batch = _power_of_two_at_most(max_batch)
        self.max_wait_s = max(0.0, max_wait_s)
        self.queue_size = max(1, queue_size)
        self.devices = max(1, devices)
        self.metrics = metrics
        self.ready = threading.Event()  # every worker has warmed up
        self.failure: BaseException | None = None  # a warm-up that failed
        self._condition = threading.Condition()
        self._pending: list[Job] = []
        self._reserved = 0
        self._draining = False
        self._stopping = False
        self._workers: list[threading.Thread] = []
        self._warm = 0

    # -- the API

    @property
    def depth(self) -> int:
        """Requests admitted and not yet taken by a worker."""
        with self._condition:
            return self._reserved + len(self._pending)

    @property
    def draining(self) -> bool:
        return self._draining

    def start(self, warm_up: Callable[[int], None] | None = None) -> None:
        """Start one worker per device; each runs `warm_up(device_index)` first."""
        for index in range(self.devices):
            worker = threading.Thread(
                target=self._work, args=(index, warm_up), name=f"fnst-serve-worker-{index}"
            )
            worker.daemon = True
            worker.start()
            self._workers.append(worker)

    def reserve(self, *, admitted: bool = False) -> Ticket:
        """A queue slot, or ServiceError 503 (queue full, or draining). admitted: the next
        network pass of a request already admitted (a detail pass), never refused, so that
        no request is turned away halfway."""
        with self._condition:
            if self._draining and not admitted:
                raise errors.unavailable(
                    "shutting_down", "the service is shutting down; retry on another replica", 1
                )
            if self._reserved + len(self._pending) >= self.queue_size and not admitted:
                raise errors.unavailable(
                    "busy",
                    f"the service is busy ({self.queue_size} requests waiting); retry shortly",
                    self._retry_after_s(),
                )
            self._reserved += 1
            return Ticket(self)

    def submit(self, ticket: Ticket, job: Job) -> concurrent.futures.Future:
        """Queue `job` in the slot `ticket` reserved; its future gets a Result, or a
        ServiceError (504 past its deadline, 500 if the network failed)."""
        if not ticket.open:
            raise RuntimeError("a ticket is used once")
        with self._condition:
            ticket.open = False
            self._reserved -= 1
            job.submitted = time.monotonic()
            self._pending.append(job)
            self._condition.notify_all()
        return job.future

    def drain(self) -> None:
        """Refuse new requests and stop waiting for batches to fill."""
        with self._condition:
            self._draining = True
            self._condition.notify_all()

    def stop(self, timeout_s: float | None = None) -> None:
        """Drain, let the workers finish everything queued, and join them."""
        with self._condition:
            self._draining = self._stopping = True
            self._condition.notify_all()
        for worker in self._workers:
            worker.join(timeout_s)

    # -- inside

    def _unreserve(self) -> None:
        with self._condition:
            self._reserved -= 1

    def _retry_after_s(self) -> int:
        """A guess at when a slot frees up: the queue's worth of recent batch times."""
        seconds = self.metrics.recent_network_s() if self.metrics else 1.0
        return round(seconds * self.queue_size / (self.max_batch * self.devices)) + 1

    def _work(self, index: int, warm_up: Callable[[int], None] | None) -> None:
        try:
            if warm_up is not None:
                warm_up(index)
        except BaseException as e:  # reported by /readyz; the service stays up to say so
            log.exception("warm-up failed on worker %d", index)
            self.failure = e
            return
        with self._condition:
            self._warm += 1
            if self._warm == self.devices:
                self.ready.set()
        while (jobs := self._next_batch()) is not None:
            self._run_batch(index, jobs)

    def _drop_finished(self, now: float) -> None:
        """Remove cancelled requests, and fail those past their deadline (504)."""
        kept = []
        for job in self._pending:
            if job.future.cancelled():
                continue
            if now > job.deadline:
                if job.future.set_running_or_notify_cancel():
                    job.future.set_exception(errors.timed_out(job.timeout_s))
                continue
            kept.append(job)
        self._pending = kept

    def _next_batch(self) -> list[Job] | None:
        """Block until a batch is due (see the module docstring); None once stopped."""
        with self._condition:
            while True:
                now = time.monotonic()
                self._drop_finished(now)
                if not self._pending:
                    if self._stopping:
                        return None
                    self._condition.wait()
                    continue
                group = self._pending[0].group
                same = [job for job in self._pending if job.group == group]
                closes = self._pending[0].submitted + self.max_wait_s
                if len(same) >= self.max_batch or now >= closes or self._draining:
                    taken = same[: _power_of_two_at_most(min(len(same), self.max_batch))]
                    taken_ids = {id(job) for job in taken}
                    self._pending = [job for job in self._pending if id(job) not in taken_ids]
                    return [job for job in taken if job.future.set_running_or_notify_cancel()]
                self._condition.wait(closes - now)

    def _run_batch(self, index: int, jobs: list[Job]) -> None:
        if not jobs:
            return
        stylizer = jobs[0].model.stylizers[index]
        if jobs[0].style is not None:  # the same compiled program, other norm weights
            stylizer = stylizer.with_style(jobs[0].style)
        started = time.monotonic()
        try:
            outputs = stylizer.stylize_batch(
                [job.image for job in jobs], preserve_color=jobs[0].preserve_color
            )
        except Exception as e:  # e.g. out of device memory: fail these requests, keep serving
            log.exception("network call failed for %d request(s)", len(jobs))
            for job in jobs:
                job.future.set_exception(
                    errors.ServiceError(500, "stylization_failed", f"stylization failed ({e})")
                )
            return
        network_s = time.monotonic() - started
        if self.metrics is not None:
            self.metrics.observe_batch(jobs[0].model.name, len(jobs), network_s)
        for job, output in zip(jobs, outputs, strict=True):
            job.future.set_result(Result(output, len(jobs), network_s, started - job.submitted))
