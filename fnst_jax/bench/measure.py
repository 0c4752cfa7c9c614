"""What both benchmark workers share: the inputs, the timing loop, memory, machine load, and
the record each configuration yields.

`measure` times a call: the first call (it compiles) on its own as `first_call_s`, the rest
of `--warmup` untimed, then `--steps` calls each timed on its own and synchronised by the
framework's `sync`. `base_record` / `finish_record` build the JSON record around it: the
configuration, the analytic FLOPs, the machine and its load average before and after.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import resource
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fnst_jax.bench import SEED, BenchConfig
from fnst_jax.bench.flops import analytic_flops
from fnst_jax.vgg import CONV_LAYERS, VGG19
from fnst_jax.vgg_weights import load_vgg

Record = dict[str, Any]


def measure(
    call: Callable[[], Any], sync: Callable[[Any], Any], steps: int, warmup: int
) -> dict[str, Any]:
    """Time `call`: the first call (compiles), warmup - 1 more untimed, then `steps` timed."""
    start = time.perf_counter()
    sync(call())
    first_call_s = time.perf_counter() - start
    for _ in range(max(warmup, 1) - 1):
        sync(call())
    times = []
    cpu_start = time.process_time()
    for _ in range(steps):
        start = time.perf_counter()
        sync(call())
        times.append(time.perf_counter() - start)
    cpu_s = time.process_time() - cpu_start
    median = statistics.median(times)
    return {
        "median_s": median,
        "min_s": min(times),
        "max_s": max(times),
        "mean_s": statistics.fmean(times),
        "stdev_s": statistics.stdev(times) if len(times) > 1 else 0.0,
        "times_s": times,
        # CPU seconds (all threads of this process) per timed step: on a shared machine a
        # steadier measure of work than wall time, though spinning threads inflate it.
        "cpu_s_per_step": cpu_s / steps,
        "first_call_s": first_call_s,
        # The part of the first call that is not the step itself: tracing + compilation.
        "compile_s": max(first_call_s - median, 0.0),
    }


# ----------------------------------------------------------------------------- memory


def host_peak_rss_bytes() -> int:
    """This process's peak resident set size so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def host_rss_bytes() -> int:
    """This process's resident set size now (0 where /proc is unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def host_peak_memory() -> Record:
    """The peak-memory fields of a CPU run: the host's peak RSS (libraries included)."""
    return {"peak_mem_bytes": host_peak_rss_bytes(), "peak_mem_kind": "host peak RSS"}


# ----------------------------------------------------------------------------- machine


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> Record:
    """Who measured, where and when, and how loaded the machine was at the start."""
    return {
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "hostname": platform.node(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "load_avg_start": list(os.getloadavg()),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


# ----------------------------------------------------------------------------- inputs


def images(config: BenchConfig) -> tuple[np.ndarray, np.ndarray]:
    """The content batch and the style image, NHWC float32 in [0, 255], from one seed."""
    rng = np.random.default_rng(SEED)
    size = config.image_size
    batch = rng.uniform(0, 255, (config.batch_size, size, size, 3)).astype(np.float32)
    style = rng.uniform(0, 255, (1, size, size, 3)).astype(np.float32)
    return batch, style


def random_vgg(depth: int) -> VGG19:
    """The deterministic random VGG19 (weights do not change the cost), first `depth` convs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "random weights": intended here
        vgg = load_vgg("random")
    if depth < len(CONV_LAYERS):
        vgg = VGG19({c: vgg.params[c] for c in CONV_LAYERS[:depth]}, vgg.preprocessing, "random")
    return vgg


# ----------------------------------------------------------------------------- records


def base_record(config: BenchConfig) -> Record:
    """The configuration, its analytic FLOPs and the machine, before anything is timed."""
    record = {
        k: v
        for k, v in dataclasses.asdict(config).items()
        if k not in ("params_file", "style_layers")
    }
    record["style_layers"] = list(config.style_layers)
    record["flops"] = analytic_flops(
        config.task,
        config.batch_size,
        config.image_size,
        pad=config.pad,
        style_layers=config.style_layers,
        content_layer=config.content_layer,
    )
    record.update(machine())
    return record


def finish_record(record: Record, timing: dict[str, Any], config: BenchConfig) -> None:
    """Add the timing, the throughputs derived from its median and the load at the end."""
    record.update(timing)
    record["images_per_s"] = config.batch_size / timing["median_s"]
    record["flops_per_s"] = record["flops"] / timing["median_s"]
    record["load_avg_end"] = list(os.getloadavg())


def error_record(config: BenchConfig, message: str) -> Record:
    """The record of a configuration that failed: its settings and the error message."""
    record = {k: v for k, v in dataclasses.asdict(config).items() if k != "params_file"}
    record["style_layers"] = list(config.style_layers)
    record["error"] = message
    return record
