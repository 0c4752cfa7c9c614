"""The parent process: configurations in, one worker process each, records out.

`run_benchmarks` writes the TransformerNet weights every framework starts from (one seed,
once), expands the options into `BenchConfig`s (every combination of task, batch size, image
size, dtype and framework) and runs each in a fresh `python -m fnst_jax.bench --worker`
process, one after another, with a per-framework environment (`worker_env`). A worker that
fails or times out yields an error record; the others still run. `run_worker` is the worker
process's side: pin the cores, run `jax_worker` or `torch_worker`, write the record.

Machine load: before each configuration the parent reads the 1-minute load average
(`load_average`). Above the usable cores (`usable_cores`) it waits up to `--wait-idle` seconds
for the machine to quiet down, then refuses (BenchError) unless `--allow-loaded`. Every record
gets `load_before`, `load_after` (read when its worker has exited), `cores`, `worker_load` (the
worker's own estimated share of `load_after`) and `loaded`: the load of everything else was
above the cores before or after, so the time is not an idle machine's (`load_fields`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fnst_jax.bench import SEED, BenchConfig, BenchError, report
from fnst_jax.bench.measure import Record, error_record
from fnst_jax.errors import UsageError
from fnst_jax.vgg import layer_depth

DEVICES = ("auto", "cpu", "gpu")
MODES = ("same", "best")
IDLE_POLL_S = 5.0  # how often a busy machine's load is read again (the kernel's own interval)
LOAD_WINDOW_S = 60.0  # the time constant of the 1-minute load average


@dataclasses.dataclass(frozen=True)
class BenchOptions:
    """What to measure: every combination of the list fields is one configuration."""

    frameworks: tuple[str, ...]
    tasks: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    image_sizes: tuple[int, ...]
    dtypes: tuple[str, ...]
    device: str  # one of DEVICES
    steps: int
    warmup: int
    pad: int
    style_layers: tuple[str, ...]
    content_layer: str
    vgg_layers: int
    mode: str  # one of MODES
    cpus: tuple[int, ...] | None
    worker_timeout: float  # seconds per configuration
    wait_idle: float = 60.0  # seconds to wait for a busy machine before each configuration
    allow_loaded: bool = False  # measure on a busy machine anyway (the records are marked)


def check_layers(options: BenchOptions) -> None:
    """UsageError for an unknown loss layer or one deeper than --vgg-layers convs."""
    for layer in (*options.style_layers, options.content_layer):
        try:
            depth = layer_depth(layer)
        except ValueError as e:
            raise UsageError(str(e)) from e
        if depth >= options.vgg_layers:
            raise UsageError(
                f"loss layer {layer} needs more than --vgg-layers={options.vgg_layers} convs"
            )


def resolve_device(device: str) -> str:
    """auto -> gpu when an NVIDIA device node exists, else cpu (without starting a framework)."""
    if device != "auto":
        return device
    return "gpu" if Path("/dev/nvidia0").exists() or Path("/dev/nvidiactl").exists() else "cpu"


def make_configs(options: BenchOptions, params_file: str) -> list[BenchConfig]:
    """One config per (task, batch size, image size, dtype, framework), in that order."""
    device = resolve_device(options.device)
    return [
        BenchConfig(
            framework=framework,
            task=task,
            batch_size=batch,
            image_size=size,
            dtype=dtype,
            device=device,
            steps=options.steps,
            warmup=options.warmup,
            pad=options.pad if task == "train-step" else 0,
            style_layers=options.style_layers,
            content_layer=options.content_layer,
            vgg_layers=options.vgg_layers,
            mode=options.mode,
            params_file=params_file,
            cpus=options.cpus,
        )
        for task, batch, size, dtype, framework in itertools.product(
            options.tasks,
            options.batch_sizes,
            options.image_sizes,
            options.dtypes,
            options.frameworks,
        )  # fmt: skip
    ]


def write_transformer_params(path: Path) -> None:
    """The TransformerNet weights every framework starts from (one seed, written once)."""
    import jax

    # The parent never needs the accelerator, and must not hold it: JAX would preallocate
    # most of its memory while the workers run.
    jax.config.update("jax_platforms", "cpu")
    from flax import nnx

    from fnst_jax.export import flat_params
    from fnst_jax.transformer_net import TransformerNet

    np.savez(path, **flat_params(TransformerNet(rngs=nnx.Rngs(SEED))))


def worker_env(config: BenchConfig, scratch: Path) -> dict[str, str]:
    """The worker's environment: this one, with the platform and cache settings it needs."""
    env = dict(os.environ)
    env.pop("JAX_PLATFORMS", None)
    if config.framework == "jax":
        if config.device == "cpu":
            env["JAX_PLATFORMS"] = "cpu"
    else:
        # The torch worker imports jax (shared definitions, random VGG weights) but must not
        # let it start on, or preallocate, the accelerator.
        env["JAX_PLATFORMS"] = "cpu"
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        # Cold torch.compile: fresh inductor and triton caches for this process.
        env["TORCHINDUCTOR_CACHE_DIR"] = str(scratch / "inductor")
        env["TRITON_CACHE_DIR"] = str(scratch / "triton")
    return env


def run_worker_process(config: BenchConfig, scratch: Path, timeout: float) -> Record:
    """Run one configuration in a fresh process; an error record when it fails."""
    scratch.mkdir(parents=True, exist_ok=True)
    config_path, result_path = scratch / "config.json", scratch / "result.json"
    config_path.write_text(json.dumps(dataclasses.asdict(config)))
    command = [sys.executable, "-m", "fnst_jax.bench", "--worker", str(config_path)]
    command += ["--result", str(result_path)]
    try:
        done = subprocess.run(
            command,
            env=worker_env(config, scratch),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return error_record(config, f"timed out after {timeout:.0f} s")
    if done.returncode or not result_path.exists():
        lines = (done.stderr or done.stdout or "").strip().splitlines()
        return error_record(config, lines[-1] if lines else f"exit status {done.returncode}")
    return json.loads(result_path.read_text())


# ----------------------------------------------------------------------------- machine load


def load_average() -> float:
    """The machine's 1-minute load average (tasks running or waiting to run, and in disk I/O)."""
    return os.getloadavg()[0]


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity on this OS
        return os.cpu_count() or 1


def wait_until_idle(cores: int, wait_s: float, allow_loaded: bool) -> float:
    """The 1-minute load once it is at most `cores`, polled for up to `wait_s` seconds.

    Still above after that: BenchError, unless `allow_loaded` (then the load right away)."""
    load = load_average()
    if load <= cores:
        return load
    if allow_loaded:
        print(
            f"    warning: load {load:.2f} > {cores} cores; measuring anyway (--allow-loaded), "
            "the record is marked as loaded",
            file=sys.stderr,
        )
        return load
    if wait_s > 0:
        print(
            f"    machine busy (load {load:.2f} > {cores} cores): waiting up to {wait_s:g} s "
            "for it to quiet down (--wait-idle)",
            file=sys.stderr,
            flush=True,
        )
    waited = 0.0
    while load > cores and waited < wait_s:
        pause = min(IDLE_POLL_S, wait_s - waited)
        time.sleep(pause)
        waited += pause
        load = load_average()
    if load > cores:
        raise BenchError(
            f"the machine is busy: its 1-minute load average is {load:.2f}, above its {cores} "
            f"usable cores, after waiting {wait_s:g} s (--wait-idle); timings now would "
            "measure the other jobs too. Run it on a quiet machine, wait longer (--wait-idle "
            "SECONDS), or pass --allow-loaded to measure anyway (the records are marked as loaded)"
        )
    return load


def load_fields(
    load_before: float, load_after: float, cores: int, worker_cpu_s: float, wall_s: float
) -> Record:
    """A record's load fields; `loaded` when the load of everything but the worker exceeded
    `cores` before or after it ran.

    The worker's own threads raise `load_after`: a run that keeps every core busy for minutes
    brings it close to `cores` on an idle machine. Its share is estimated from its mean CPU use
    (CPU seconds / wall seconds), weighted as the 1-minute average weighs a run of that length,
    and left out of the comparison. A starved worker uses less CPU than it asks for, so under
    contention the estimate is low and the mark errs towards `loaded`."""
    own = worker_cpu_s / wall_s * (1 - math.exp(-wall_s / LOAD_WINDOW_S)) if wall_s > 0 else 0.0
    return {
        "load_before": round(load_before, 2),
        "load_after": round(load_after, 2),
        "worker_load": round(own, 2),
        "cores": cores,
        "loaded": load_before > cores or load_after - own > cores,
    }


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_measured(config: BenchConfig, scratch: Path, options: BenchOptions) -> Record:
    """Run one configuration's worker once the machine is idle (or --allow-loaded), and add
    the machine's load before and after to its record."""
    cores = usable_cores()
    load_before = wait_until_idle(cores, options.wait_idle, options.allow_loaded)
    cpu_start, wall_start = _children_cpu_s(), time.monotonic()
    record = run_worker_process(config, scratch, options.worker_timeout)
    worker_cpu_s, wall_s = _children_cpu_s() - cpu_start, time.monotonic() - wall_start
    record.update(load_fields(load_before, load_average(), cores, worker_cpu_s, wall_s))
    if record["loaded"]:
        print(
            f"    measured under load: 1-minute load {record['load_before']:.2f} before, "
            f"{record['load_after']:.2f} after (this worker's share ~{record['worker_load']:.2f}),"
            f" {cores} cores",
            file=sys.stderr,
        )
    return record


# ----------------------------------------------------------------------------- the runs


def run_benchmarks(
    options: BenchOptions, json_path: Path, peak_tflops: float | None
) -> list[Record]:
    """Measure every configuration, one worker process each; the JSON at `json_path` is
    rewritten after each one, so a run cut short keeps what it measured."""
    check_layers(options)
    if any(f != "jax" for f in options.frameworks) and importlib.util.find_spec("torch") is None:
        raise BenchError(
            "torch is not installed: install the 'torch' extra or pass --frameworks jax"
        )
    records: list[Record] = []
    with tempfile.TemporaryDirectory(prefix="fnst_bench_") as tmp:
        params_file = Path(tmp) / "transformer_params.npz"
        write_transformer_params(params_file)
        configs = make_configs(options, str(params_file))
        if options.mode == "best":
            print(
                "mode best: each framework's fastest settings (torch: channels_last; "
                "torch.compile: max-autotune on GPU); the computations may differ",
                file=sys.stderr,
            )
        for index, config in enumerate(configs):
            print(
                f"[{index + 1}/{len(configs)}] {config.framework} {config.task} "
                f"batch {config.batch_size} {config.image_size}px {config.dtype} "
                f"on {config.device} ...",
                file=sys.stderr,
                flush=True,
            )
            try:
                record = run_measured(config, Path(tmp) / f"run{index}", options)
            except BenchError as e:
                if not records:
                    raise
                raise BenchError(f"{e}; the records measured before are in {json_path}") from e
            if "error" in record:
                print(f"    failed: {record['error']}", file=sys.stderr)
            report.add_mfu(record, peak_tflops)
            records.append(record)
            report.add_ratios(records)
            report.write_json(records, json_path)
    return records


def run_worker(config_path: Path, result_path: Path) -> None:
    """The worker process: measure the configuration in `config_path`, write its record."""
    config = BenchConfig.from_json(json.loads(config_path.read_text()))
    if config.cpus:
        # Before jax/torch start: both size their thread pools from the affinity mask.
        os.sched_setaffinity(0, config.cpus)
    if config.framework == "jax":
        from fnst_jax.bench import jax_worker as worker
    else:
        from fnst_jax.bench import torch_worker as worker
    record = worker.run(config)
    result_path.write_text(json.dumps(record))
