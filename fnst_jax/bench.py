r"""Benchmark the train step and stylization, JAX against PyTorch (eager and torch.compile).

    python -m fnst_jax.bench --frameworks jax,torch,torch-compile --task train-step \
        --batch-size 4 --image-size 256 --dtype float32 --steps 10 --warmup 3 --json out.json

Each (framework, configuration) runs in its own process (this module with the hidden
`--worker` flag), one after another, so that peak memory is per configuration and no
framework's threads or allocator disturb another's. All frameworks get the same inputs (random
images from one seed, the same TransformerNet weights written once by the parent, the same
deterministic random VGG19) and the same computation: see BENCHMARKS.md.

What is timed: `--warmup` calls (the first one compiles; it is timed separately as
`first_call_s`), then `--steps` calls each timed on its own, blocked until the result is ready
(`block_until_ready` / `cuda.synchronize`). Inputs are on the device before timing starts.

The JAX train step is the project's own: `train_lib.init_state` + `train_lib.make_jit_step`
on a 1-device mesh (state donated), so the benchmark measures what training runs. The
persistent compilation cache is NOT used (compile times are cold); torch.compile gets a fresh
inductor/triton cache folder per process for the same reason.

FLOPs: `flops` is one analytic count (convolutions and Gram matmuls, 2 FLOPs per
multiply-add, forward + the backward actually needed) used for every framework, so FLOP/s
ratios equal speed ratios. Each record also holds the framework's own count: XLA's cost
analysis of the compiled step (`flops_xla`) or torch.utils.flop_counter (`flops_torch`).

Output: a table on stdout, the JSON list of records (--json) and a bar chart (--chart,
default: the JSON path with .png).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

FRAMEWORKS = ("jax", "torch", "torch-compile")
TASKS = ("train-step", "stylize")
DTYPES = ("float32", "bfloat16")
DEVICES = ("auto", "cpu", "gpu")
MODES = ("same", "best")
DEFAULT_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
DEFAULT_CONTENT_LAYER = "relu2_2"
DEFAULT_PAD = 40  # configs/default.py's train.pad
LEARNING_RATE = 1e-3
SEED = 0
# Dense peak TFLOP/s by (device name fragment, dtype), from the vendors' datasheets (SXM
# parts, no sparsity). float32 is the non-tensor-core rate; note that both frameworks run
# float32 convolutions in TF32 on these GPUs by default, so float32 MFU can exceed it.
PEAK_TFLOPS = {
    ("H200", "bfloat16"): 989.0,
    ("H200", "float32"): 67.0,
    ("H100", "bfloat16"): 989.0,
    ("H100", "float32"): 67.0,
    ("A100", "bfloat16"): 312.0,
    ("A100", "float32"): 19.5,
    ("L4", "bfloat16"): 121.0,
    ("L4", "float32"): 30.3,
}
REQUIRED_KEYS = (
    "framework",
    "task",
    "batch_size",
    "image_size",
    "dtype",
    "device",
    "median_s",
    "min_s",
    "max_s",
    "images_per_s",
    "compile_s",
    "peak_mem_bytes",
    "flops",
    "flops_per_s",
)


class BenchError(RuntimeError):
    """A benchmark that cannot run as asked; the message says why."""


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """One measured configuration: what the worker process is told to run."""

    framework: str
    task: str
    batch_size: int
    image_size: int
    dtype: str
    device: str
    steps: int
    warmup: int
    pad: int
    style_layers: tuple[str, ...]
    content_layer: str
    vgg_layers: int
    mode: str
    params_file: str
    cpus: tuple[int, ...] | None = None


# ----------------------------------------------------------------------------- FLOPs


def _conv_flops(n: int, k: int, cin: int, cout: int, h: int, w: int) -> int:
    """2 * multiply-adds of a k x k conv giving (n, h, w, cout), padding taps included."""
    return 2 * n * k * k * cin * cout * h * w


def transformer_conv_flops(n: int, h: int, w: int) -> list[int]:
    """Forward FLOPs of each TransformerNet conv (in order) for an (n, h, w, 3) input."""
    h, w = h + (-h % 4), w + (-w % 4)  # the network's own pad to a multiple of 4
    layers = [
        (9, 3, 32, h, w),
        (3, 32, 64, h // 2, w // 2),
        (3, 64, 128, h // 4, w // 4),
        *[(3, 128, 128, h // 4, w // 4)] * 10,
        (3, 128, 64, h // 2, w // 2),
        (3, 64, 32, h, w),
        (9, 32, 3, h, w),
    ]
    return [_conv_flops(n, *layer) for layer in layers]


def vgg_conv_shapes(h: int, w: int, depth: int) -> list[tuple[int, int, int, int]]:
    """(cin, cout, h, w) of the first `depth` VGG19 convs for an (h, w) input."""
    from fnst_jax.vgg import CONV_CHANNELS, CONV_LAYERS

    shapes = []
    for index, conv in enumerate(CONV_LAYERS[:depth]):
        if index and conv.endswith("_1"):
            h, w = h // 2, w // 2
        shapes.append((*CONV_CHANNELS[conv], h, w))
    return shapes


def analytic_flops(
    task: str,
    batch_size: int,
    image_size: int,
    *,
    pad: int = DEFAULT_PAD,
    style_layers: Sequence[str] = DEFAULT_STYLE_LAYERS,
    content_layer: str = DEFAULT_CONTENT_LAYER,
) -> int:
    """FLOPs of one step counted from the layer shapes: convolutions and Gram matmuls.

    Train step: TransformerNet forward on the padded batch, backward (weight gradients for
    every conv, input gradients for all but the first); VGG of the stylized images up to the
    deepest loss layer, forward + input gradients (its weights are constants); the content
    pass forward only; per style layer a Gram (2*N*H*W*C^2) and its backward (two matmuls).
    Elementwise work (norms, ReLUs, losses, Adam) is left out: < 1% at 256 px.
    """
    from fnst_jax.vgg import layer_depth

    n, size = batch_size, image_size
    if task == "stylize":
        return sum(transformer_conv_flops(n, size, size))
    if task != "train-step":
        raise BenchError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    p = min(pad, size - 1)
    transformer = transformer_conv_flops(n, size + 2 * p, size + 2 * p)
    total = 3 * sum(transformer) - transformer[0]
    deepest = max(layer_depth(layer) for layer in (*style_layers, content_layer)) + 1
    stylized = vgg_conv_shapes(size, size, deepest)
    total += 2 * sum(_conv_flops(n, 3, *shape) for shape in stylized)
    content = vgg_conv_shapes(size, size, layer_depth(content_layer) + 1)
    total += sum(_conv_flops(n, 3, *shape) for shape in content)
    for layer in style_layers:
        _, c, h, w = stylized[layer_depth(layer)]
        total += 3 * 2 * n * h * w * c * c
    return total


# ----------------------------------------------------------------------------- measurement


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


def host_peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def host_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _images(config: BenchConfig) -> tuple[np.ndarray, np.ndarray]:
    """The content batch and the style image, NHWC float32 in [0, 255], from one seed."""
    rng = np.random.default_rng(SEED)
    size = config.image_size
    batch = rng.uniform(0, 255, (config.batch_size, size, size, 3)).astype(np.float32)
    style = rng.uniform(0, 255, (1, size, size, 3)).astype(np.float32)
    return batch, style


def _load_vgg(depth: int):
    from fnst_jax.vgg import CONV_LAYERS, VGG19
    from fnst_jax.vgg_weights import load_vgg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "random weights": intended here
        vgg = load_vgg("random")
    if depth < len(CONV_LAYERS):
        vgg = VGG19({c: vgg.params[c] for c in CONV_LAYERS[:depth]}, vgg.preprocessing, "random")
    return vgg


def _loss_spec(config: BenchConfig):
    from fnst_jax.losses import LossSpec

    return LossSpec(style_layers=config.style_layers, content_layer=config.content_layer)


def _base_record(config: BenchConfig) -> dict[str, Any]:
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
    record.update(
        python=platform.python_version(),
        cpu=cpu_name(),
        cpu_count=os.cpu_count(),
        hostname=platform.node(),
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        load_avg_start=list(os.getloadavg()),
        xla_flags=os.environ.get("XLA_FLAGS", ""),
    )
    return record


def _finish_record(record: dict[str, Any], timing: dict[str, Any], config: BenchConfig) -> None:
    record.update(timing)
    record["images_per_s"] = config.batch_size / timing["median_s"]
    record["flops_per_s"] = record["flops"] / timing["median_s"]
    record["load_avg_end"] = list(os.getloadavg())


# ----------------------------------------------------------------------------- JAX worker


def run_jax(config: BenchConfig) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from fnst_jax import train_lib
    from fnst_jax.export import set_flat_params
    from fnst_jax.losses import style_grams

    # Cold compile times: no persistent compilation cache, whatever the environment says.
    jax.config.update("jax_enable_compilation_cache", False)
    record = _base_record(config)
    backend = jax.default_backend()
    if config.device == "gpu" and backend != "gpu":
        raise BenchError(f"device gpu requested but JAX's backend is {backend!r}")
    device = jax.devices()[0]
    record.update(
        jax_version=jax.__version__,
        device_name=device.device_kind if backend != "cpu" else cpu_name(),
        rss_baseline_bytes=host_rss_bytes(),
    )
    dtype = jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32
    flat = dict(np.load(config.params_file))
    batch_np, style_np = _images(config)
    batch = jax.device_put(batch_np, device)

    if config.task == "stylize":
        model = train_lib.TransformerNet(dtype=dtype, rngs=nnx.Rngs(SEED))
        set_flat_params(model, flat)
        graphdef, params = nnx.split(model, nnx.Param)
        params = jax.device_put(params, device)

        @jax.jit
        def stylize(params, images):
            return nnx.merge(graphdef, params)(images)

        lower_start = time.perf_counter()
        compiled = stylize.lower(params, batch).compile()
        record["lower_compile_s"] = time.perf_counter() - lower_start

        def call():
            return compiled(params, batch)
    else:
        vgg = _load_vgg(config.vgg_layers)
        spec = _loss_spec(config)
        vgg.check_layers(spec.vgg_layers)
        target_grams = jax.jit(style_grams, static_argnums=(2, 3))(
            vgg, jnp.asarray(style_np), spec.style_layers, dtype
        )
        graphdef, state, tx = train_lib.init_state(
            _train_config(config.dtype), jax.random.PRNGKey(SEED)
        )
        model = nnx.merge(graphdef, state["params"])
        set_flat_params(model, flat)  # the weights every framework starts from
        state["params"] = jax.tree.map(jnp.asarray, nnx.state(model, nnx.Param).to_pure_dict())
        state["opt_state"] = tx.init(state["params"])
        mesh = Mesh(np.array([device]), ("data",))
        state, vgg, target_grams = jax.device_put(
            (state, vgg, target_grams), NamedSharding(mesh, P())
        )
        batch = jax.device_put(batch_np, NamedSharding(mesh, P("data")))
        step = train_lib.make_jit_step(
            mesh, tx, graphdef=graphdef, spec=spec, pad=config.pad, dtype=dtype
        )
        lower_start = time.perf_counter()
        compiled = step.lower(state, batch, vgg, target_grams).compile()
        record["lower_compile_s"] = time.perf_counter() - lower_start
        holder = {"state": state}

        def call():
            holder["state"], metrics = compiled(holder["state"], batch, vgg, target_grams)
            return holder["state"], metrics

    record["flops_xla"] = _xla_flops(compiled)
    timing = measure(call, jax.block_until_ready, config.steps, config.warmup)
    # The AOT compile happened before the first call: add it back so first_call_s /
    # compile_s mean the same as for the other frameworks (trace + compile + first run).
    timing["first_call_s"] += record["lower_compile_s"]
    timing["compile_s"] += record["lower_compile_s"]
    _finish_record(record, timing, config)
    if backend == "cpu":
        record["peak_mem_bytes"] = host_peak_rss_bytes()
        record["peak_mem_kind"] = "host peak RSS"
    else:
        stats = device.memory_stats() or {}
        record["peak_mem_bytes"] = int(stats.get("peak_bytes_in_use", 0))
        record["peak_mem_kind"] = "device peak_bytes_in_use"
        record["host_peak_rss_bytes"] = host_peak_rss_bytes()
    record["device"] = "cpu" if backend == "cpu" else "gpu"
    return record


def _train_config(dtype: str):
    """The training config `train_lib.init_state` reads: configs/default.py when importable
    (running from the repository), with the benchmark's dtype and Adam at lr 1e-3."""
    import ml_collections

    try:
        from configs import default

        config = default.get_config()
    except ImportError:
        config = ml_collections.ConfigDict({"train": {}})
    config.dtype = dtype
    config.train.lr = LEARNING_RATE
    config.train.optimizer = "adam"
    return config


def _xla_flops(compiled) -> float | None:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):  # older jax: one dict per computation
        analysis = analysis[0] if analysis else {}
    return float(analysis["flops"]) if analysis and "flops" in analysis else None


# ----------------------------------------------------------------------------- torch worker


def run_torch(config: BenchConfig) -> dict[str, Any]:
    import torch

    from fnst_jax import bench_torch

    record = _base_record(config)
    device = bench_torch.torch_device(config.device)
    record.update(
        torch_version=torch.__version__,
        torch_threads=torch.get_num_threads(),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        rss_baseline_bytes=host_rss_bytes(),
    )
    compile_mode = None
    if config.framework == "torch-compile":
        compile_mode = "max-autotune" if config.mode == "best" and device.type == "cuda" else None
        compile_mode = compile_mode or "default"
    channels_last = config.mode == "best"
    record["torch_compile_mode"] = compile_mode
    record["channels_last"] = channels_last
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    flat = dict(np.load(config.params_file))
    batch_np, style_np = _images(config)
    model = bench_torch.load_transformer(flat).to(device, memory_format=memory_format)
    batch = bench_torch.ref.to_nchw(batch_np).to(device).contiguous(memory_format=memory_format)

    if config.task == "stylize":
        stylize = bench_torch.make_stylize(
            model, device=device, dtype=config.dtype, compile_mode=compile_mode
        )

        def call():
            return stylize(batch)

        def count():
            return bench_torch.make_stylize(
                model, device=device, dtype=config.dtype, compile_mode=None
            )(batch)
    else:
        spec = _loss_spec(config)
        jax_vgg = _load_vgg(config.vgg_layers)
        jax_vgg.check_layers(spec.vgg_layers)
        vgg = bench_torch.torch_vgg(jax_vgg, device).to(memory_format=memory_format)
        style = bench_torch.ref.to_nchw(style_np).to(device)
        with bench_torch.autocast(device, config.dtype):
            grams = bench_torch.ref.style_grams(vgg, style, spec.style_layers)
        grams = {k: v.float() for k, v in grams.items()}
        options = dict(pad=config.pad, lr=LEARNING_RATE, device=device, dtype=config.dtype)
        step = bench_torch.make_train_step(
            model, vgg, grams, spec, compile_mode=compile_mode, **options
        )

        def call():
            return step(batch)

        def count():
            return bench_torch.make_train_step(
                model, vgg, grams, spec, compile_mode=None, **options
            )(batch)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def sync(_):
        bench_torch.synchronize(device)

    timing = measure(call, sync, config.steps, config.warmup)
    _finish_record(record, timing, config)
    if device.type == "cuda":
        record["peak_mem_bytes"] = int(torch.cuda.max_memory_allocated(device))
        record["peak_mem_kind"] = "device max_memory_allocated"
        record["host_peak_rss_bytes"] = host_peak_rss_bytes()
    else:
        record["peak_mem_bytes"] = host_peak_rss_bytes()
        record["peak_mem_kind"] = "host peak RSS"
    # After the timed region (it runs one more eager step).
    record["flops_torch"] = bench_torch.count_flops(count)
    record["device"] = "cpu" if device.type == "cpu" else "gpu"
    return record


# ----------------------------------------------------------------------------- parent


def _csv(kind: Callable[[str], Any], choices: Sequence[Any] | None = None):
    def parse(text: str) -> list[Any]:
        values = [kind(v.strip()) for v in text.split(",") if v.strip()]
        if not values:
            raise argparse.ArgumentTypeError("expected a comma-separated list")
        for v in values:
            if choices is not None and v not in choices:
                raise argparse.ArgumentTypeError(
                    f"{v!r} is not one of {', '.join(map(str, choices))}"
                )
        return values

    return parse


def _positive_ints(text: str) -> list[int]:
    values = _csv(int)(text)
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: sizes must be positive")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fnst_jax.bench",
        description="Time the fnst_jax train step / stylization against PyTorch.",
    )
    add = parser.add_argument
    add(
        "--frameworks",
        type=_csv(str, FRAMEWORKS),
        default=["jax", "torch", "torch-compile"],
        help="comma-separated: jax, torch, torch-compile",
    )
    add(
        "--task",
        type=_csv(str, TASKS),
        default=["train-step"],
        help="train-step and/or stylize (comma-separated)",
    )
    add("--batch-size", type=_positive_ints, default=[4], help="one or more, comma-separated")
    add("--image-size", type=_positive_ints, default=[256], help="square side in px, one or more")
    add("--dtype", type=_csv(str, DTYPES), default=["float32"], help="float32 and/or bfloat16")
    add("--device", choices=DEVICES, default="auto", help="auto: gpu when one is visible")
    add("--steps", type=int, default=10, help="timed steps per configuration")
    add("--warmup", type=int, default=3, help="untimed calls first (the first one compiles)")
    add("--pad", type=int, default=DEFAULT_PAD, help="train step: reflection pad (px)")
    add("--style-layers", type=_csv(str), default=list(DEFAULT_STYLE_LAYERS))
    add("--content-layer", default=DEFAULT_CONTENT_LAYER)
    add(
        "--vgg-layers",
        type=int,
        default=16,
        help="VGG19 conv layers in the (random) weights, 1..16 (only as deep as the losses need "
        "is computed either way)",
    )
    add(
        "--mode",
        choices=MODES,
        default="same",
        help="same: identical computation everywhere; best: each framework's fastest settings",
    )
    add(
        "--peak-tflops",
        type=float,
        default=None,
        help="peak TFLOP/s for MFU (default: a table of known GPUs; none on CPU)",
    )
    add("--json", type=Path, default=Path("bench.json"), help="output JSON path")
    add("--chart", type=Path, default=None, help="bar chart PNG (default: JSON path with .png)")
    add("--no-chart", action="store_true", help="skip the chart")
    add(
        "--cpus",
        type=_csv(int),
        default=None,
        help="CPU cores the workers may use (sched_setaffinity), e.g. 0 or 0,1; default: all",
    )
    add("--worker-timeout", type=float, default=1800.0, help="seconds per configuration")
    add(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        metavar="JSON",
        help="combine earlier JSON outputs (ratios, table, chart) into --json; runs nothing",
    )
    add("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    add("--result", type=Path, default=None, help=argparse.SUPPRESS)
    return parser


def resolve_device(device: str) -> str:
    """auto -> gpu when an NVIDIA device node exists, else cpu (without starting a framework)."""
    if device != "auto":
        return device
    return "gpu" if Path("/dev/nvidia0").exists() or Path("/dev/nvidiactl").exists() else "cpu"


def check_args(args: argparse.Namespace) -> None:
    from fnst_jax.vgg import CONV_LAYERS, layer_depth

    if args.steps < 1:
        raise BenchError(f"--steps must be >= 1, not {args.steps}")
    if args.warmup < 1:
        raise BenchError(f"--warmup must be >= 1 (the first call compiles), not {args.warmup}")
    if args.pad < 0:
        raise BenchError(f"--pad must be >= 0, not {args.pad}")
    if not 1 <= args.vgg_layers <= len(CONV_LAYERS):
        raise BenchError(f"--vgg-layers must be in 1..{len(CONV_LAYERS)}, not {args.vgg_layers}")
    try:
        for layer in (*args.style_layers, args.content_layer):
            if layer_depth(layer) >= args.vgg_layers:
                raise BenchError(
                    f"loss layer {layer} needs more than --vgg-layers={args.vgg_layers} convs"
                )
    except ValueError as e:
        raise BenchError(str(e)) from e
    for size in args.image_size:
        if size < 2:
            raise BenchError(f"--image-size must be at least 2 px, not {size}")


def make_configs(args: argparse.Namespace, params_file: str) -> list[BenchConfig]:
    device = resolve_device(args.device)
    return [
        BenchConfig(
            framework=framework,
            task=task,
            batch_size=batch,
            image_size=size,
            dtype=dtype,
            device=device,
            steps=args.steps,
            warmup=args.warmup,
            pad=args.pad if task == "train-step" else 0,
            style_layers=tuple(args.style_layers),
            content_layer=args.content_layer,
            vgg_layers=args.vgg_layers,
            mode=args.mode,
            params_file=params_file,
            cpus=tuple(args.cpus) if args.cpus else None,
        )
        for task, batch, size, dtype, framework in itertools.product(
            args.task, args.batch_size, args.image_size, args.dtype, args.frameworks
        )
    ]


# The environment the workers start from: the parent pins its own JAX to the CPU.
_WORKER_BASE_ENV = dict(os.environ)


def write_transformer_params(path: Path) -> None:
    """The TransformerNet weights every framework starts from (one seed, written once)."""
    # The parent never needs, and must not hold, the accelerator (JAX would preallocate it).
    os.environ["JAX_PLATFORMS"] = "cpu"
    from flax import nnx

    from fnst_jax.export import flat_params
    from fnst_jax.transformer_net import TransformerNet

    np.savez(path, **flat_params(TransformerNet(rngs=nnx.Rngs(SEED))))


def worker_env(config: BenchConfig, scratch: Path) -> dict[str, str]:
    env = dict(_WORKER_BASE_ENV)
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


def run_worker_process(config: BenchConfig, scratch: Path, timeout: float) -> dict[str, Any]:
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
        return _error_record(config, f"timed out after {timeout:.0f} s")
    if done.returncode or not result_path.exists():
        lines = (done.stderr or done.stdout or "").strip().splitlines()
        return _error_record(config, lines[-1] if lines else f"exit status {done.returncode}")
    return json.loads(result_path.read_text())


def _error_record(config: BenchConfig, message: str) -> dict[str, Any]:
    record = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("params_file",)}
    record["style_layers"] = list(config.style_layers)
    record["error"] = message
    return record


def peak_tflops(record: dict[str, Any], override: float | None) -> float | None:
    if override is not None:
        return override
    if record.get("device") != "gpu":
        return None
    name = str(record.get("device_name", ""))
    for (fragment, dtype), value in PEAK_TFLOPS.items():
        if fragment in name and dtype == record["dtype"]:
            return value
    return None


def add_ratios(records: list[dict[str, Any]]) -> None:
    """Per configuration: each framework's speed relative to torch eager and torch.compile."""
    key = ("task", "batch_size", "image_size", "dtype", "device", "mode")
    by_config: dict[tuple, dict[str, dict]] = {}
    for record in records:
        if "error" not in record:
            by_config.setdefault(tuple(record[k] for k in key), {})[record["framework"]] = record
    for group in by_config.values():
        for record in group.values():
            for other in ("torch", "torch-compile"):
                if other in group and record is not group[other]:
                    name = "speedup_vs_" + other.replace("-", "_")
                    record[name] = group[other]["median_s"] / record["median_s"]


def format_table(records: list[dict[str, Any]]) -> str:
    header = (
        f"{'framework':14} {'task':10} {'batch':>5} {'size':>5} {'dtype':8} {'dev':3} "
        f"{'median ms':>10} {'min-max ms':>17} {'img/s':>8} {'compile s':>9} {'peak MB':>8} "
        f"{'GFLOP':>8} {'TFLOP/s':>8} {'MFU':>6} {'vs torch':>8} {'vs t.comp':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in records:
        head = (
            f"{r['framework']:14} {r['task']:10} {r['batch_size']:>5} {r['image_size']:>5} "
            f"{r['dtype']:8} {r['device']:3} "
        )
        if "error" in r:
            lines.append(head + f"FAILED: {r['error']}")
            continue
        mfu = f"{100 * r['mfu']:5.1f}%" if r.get("mfu") is not None else "     -"
        ratio = r.get("speedup_vs_torch")
        ratio_c = r.get("speedup_vs_torch_compile")
        lines.append(
            head
            + f"{1e3 * r['median_s']:10.1f} "
            + f"{1e3 * r['min_s']:8.1f}-{1e3 * r['max_s']:<8.1f} "
            + f"{r['images_per_s']:8.2f} {r['compile_s']:9.1f} {r['peak_mem_bytes'] / 2**20:8.0f} "
            + f"{r['flops'] / 1e9:8.1f} {r['flops_per_s'] / 1e12:8.3f} {mfu} "
            + (f"{ratio:7.2f}x " if ratio else f"{'-':>8} ")
            + (f"{ratio_c:8.2f}x" if ratio_c else f"{'-':>9}")
        )
    return "\n".join(lines)


def write_chart(records: list[dict[str, Any]], path: Path, mode: str) -> None:
    """Grouped bars: images/s per configuration, one bar per framework."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in records if "error" not in r]
    if not ok:
        return
    labels = list(
        dict.fromkeys(
            f"{r['task']}\n{r['dtype']} b{r['batch_size']} {r['image_size']}px" for r in ok
        )
    )
    frameworks = list(dict.fromkeys(r["framework"] for r in ok))
    width = 0.8 / len(frameworks)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(labels) * len(frameworks) / 2), 4.5))
    for i, framework in enumerate(frameworks):
        values = []
        for label in labels:
            match = [
                r["images_per_s"]
                for r in ok
                if r["framework"] == framework
                and f"{r['task']}\n{r['dtype']} b{r['batch_size']} {r['image_size']}px" == label
            ]
            values.append(match[0] if match else 0.0)
        xs = [x + (i - (len(frameworks) - 1) / 2) * width for x in range(len(labels))]
        bars = ax.bar(xs, values, width, label=framework)
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("images / s (higher is better)")
    device = ok[0].get("device_name", ok[0]["device"])
    ax.set_title(f"fnst_jax benchmark ({mode} computation) on {device}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_benchmarks(args: argparse.Namespace) -> list[dict[str, Any]]:
    check_args(args)
    if any(f != "jax" for f in args.frameworks):
        try:
            import importlib.util

            if importlib.util.find_spec("torch") is None:
                raise ImportError
        except ImportError:
            raise BenchError(
                "torch is not installed: install the 'torch' extra or pass --frameworks jax"
            ) from None
    records: list[dict[str, Any]] = []
    json_path = args.json
    json_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fnst_bench_") as tmp:
        params_file = Path(tmp) / "transformer_params.npz"
        write_transformer_params(params_file)
        configs = make_configs(args, str(params_file))
        if args.mode == "best":
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
            record = run_worker_process(config, Path(tmp) / f"run{index}", args.worker_timeout)
            if "error" in record:
                print(f"    failed: {record['error']}", file=sys.stderr)
            else:
                peak = peak_tflops(record, args.peak_tflops)
                if peak:
                    record["peak_tflops"] = peak
                    record["mfu"] = record["flops_per_s"] / (peak * 1e12)
            records.append(record)
            add_ratios(records)
            # Written after every configuration: a run cut short keeps what it measured.
            json_path.write_text(json.dumps(records, indent=2))
    return records


def merge_results(paths: Sequence[Path], json_path: Path) -> list[dict[str, Any]]:
    """Records of several runs as one list (ratios recomputed across them)."""
    records: list[dict[str, Any]] = []
    for path in paths:
        try:
            loaded = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise BenchError(f"{path}: cannot read benchmark JSON ({e})") from e
        if not isinstance(loaded, list) or not all(isinstance(r, dict) for r in loaded):
            raise BenchError(f"{path}: not a benchmark JSON (expected a list of records)")
        records += loaded
    for record in records:
        for name in ("speedup_vs_torch", "speedup_vs_torch_compile"):
            record.pop(name, None)
    add_ratios(records)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(records, indent=2))
    return records


def worker_main(config_path: Path, result_path: Path) -> None:
    config = BenchConfig(**json.loads(config_path.read_text()))
    config = dataclasses.replace(
        config,
        style_layers=tuple(config.style_layers),
        cpus=tuple(config.cpus) if config.cpus else None,
    )
    if config.cpus:
        # Before jax/torch start: both size their thread pools from the affinity mask.
        os.sched_setaffinity(0, config.cpus)
    record = run_jax(config) if config.framework == "jax" else run_torch(config)
    result_path.write_text(json.dumps(record))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker is not None:
        worker_main(args.worker, args.result)
        return 0
    try:
        records = merge_results(args.merge, args.json) if args.merge else run_benchmarks(args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(records))
    modes = {r.get("mode", args.mode) for r in records} or {args.mode}
    if "best" in modes:
        print(
            "(mode best: each framework ran its fastest settings: torch channels_last, "
            "torch.compile max-autotune on GPU; see each record's settings)"
        )
    print(f"JSON: {args.json}")
    if not args.no_chart:
        chart = args.chart or args.json.with_suffix(".png")
        write_chart(records, chart, "/".join(sorted(modes)))
        print(f"chart: {chart}")
    return 1 if any("error" in r for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
