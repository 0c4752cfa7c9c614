"""Prometheus metrics of one service (`GET /metrics`), on its own registry.

  fnst_http_requests_total{route, status}   every response, by route template and status
  fnst_stylize_latency_seconds              POST /v1/stylize, arrival to response (histogram)
  fnst_queue_depth                          requests admitted and not yet on the network
  fnst_batch_size                           requests per network call (histogram)
  fnst_network_seconds                      time of each network call (histogram)
  fnst_images_total{model}                  images stylized
  fnst_images_per_second                    images stylized over the last minute, per second
  fnst_ready                                1 once the models are loaded and compiled
  fnst_peak_memory_bytes                    the process's peak resident memory
  process_*                                 the standard process metrics (memory, CPU, fds)

A registry per service (not the global one) keeps several services in one process (tests)
apart.
"""

from __future__ import annotations

import collections
import resource
import sys
import threading
import time
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
RATE_WINDOW_S = 60.0
CONTENT_TYPE = CONTENT_TYPE_LATEST  # of the /metrics body


def peak_memory_bytes() -> int:
    """This process's peak resident set size (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class Metrics:
    """The service's metrics; `render()` is the /metrics body."""

    def __init__(self, queue_depth: Callable[[], float], ready: Callable[[], bool]):
        self.registry = CollectorRegistry()
        registry = {"registry": self.registry}
        ProcessCollector(**registry)
        self.requests = Counter(
            "fnst_http_requests",
            "HTTP responses by route and status.",
            ["route", "status"],
            **registry,
        )
        self.latency = Histogram(
            "fnst_stylize_latency_seconds",
            "POST /v1/stylize: from the request's arrival to its response.",
            buckets=LATENCY_BUCKETS,
            **registry,
        )
        self.batch_size = Histogram(
            "fnst_batch_size", "Requests per network call.", buckets=BATCH_BUCKETS, **registry
        )
        self.network = Histogram(
            "fnst_network_seconds",
            "Time of each network call.",
            buckets=LATENCY_BUCKETS,
            **registry,
        )
        self.images = Counter("fnst_images", "Images stylized.", ["model"], **registry)
        Gauge(
            "fnst_queue_depth", "Requests admitted and not yet on the network.", **registry
        ).set_function(queue_depth)
        Gauge(
            "fnst_images_per_second",
            "Images stylized over the last minute, per second.",
            **registry,
        ).set_function(self.images_per_second)
        Gauge("fnst_ready", "1 once models are loaded and compiled.", **registry).set_function(
            lambda: float(ready())
        )
        Gauge(
            "fnst_peak_memory_bytes", "Peak resident memory of the process.", **registry
        ).set_function(peak_memory_bytes)
        self._lock = threading.Lock()
        self._recent: collections.deque[tuple[float, int, float]] = collections.deque()

    def observe_batch(self, model: str, size: int, network_s: float) -> None:
        """One network call of `size` requests that took `network_s`."""
        self.batch_size.observe(size)
        self.network.observe(network_s)
        self.images.labels(model=model).inc(size)
        with self._lock:
            now = time.monotonic()
            self._recent.append((now, size, network_s))
            while self._recent and self._recent[0][0] < now - RATE_WINDOW_S:
                self._recent.popleft()

    def images_per_second(self) -> float:
        with self._lock:
            now = time.monotonic()
            return sum(n for t, n, _ in self._recent if t >= now - RATE_WINDOW_S) / RATE_WINDOW_S

    def recent_network_s(self) -> float:
        """The mean time of the last few network calls (1 s before any)."""
        with self._lock:
            last = list(self._recent)[-8:]
        return sum(s for _, _, s in last) / len(last) if last else 1.0

    def observe_response(self, route: str, status: int) -> None:
        self.requests.labels(route=route, status=str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
