"""The PyTorch side of the benchmark: the same train step and stylize pass as the JAX side.

Imports torch at the top: only the benchmark's torch worker processes import this module.
The model, VGG19, loss and train step are `fnst_jax.torch_reference`'s (the twin the parity
tests check against fnst_jax), with the same initial weights (the parent's .npz) and inputs.

What "the same computation" means here (see BENCHMARKS.md): TransformerNet forward on the
reflect-padded batch, VGG19 taps of the stylized images up to the deepest loss layer, a
content pass that stops at the content layer (no gradient), Gram / content / TV losses in
float32, backward, Adam update. bfloat16 is `torch.autocast` for the networks while the
losses stay in float32, as `fnst_jax.losses` does. "torch-compile" compiles the loss
(`default` mode; `max-autotune` with `--mode best` on GPU); `--mode best` also runs
channels_last.

This process imports jax too (shared definitions, the random VGG weights); the parent starts
it with JAX_PLATFORMS=cpu so that jax never touches the accelerator here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fnst_jax import torch_reference as ref
from fnst_jax.bench import LEARNING_RATE, BenchConfig, BenchError
from fnst_jax.bench import measure as m
from fnst_jax.losses import LossSpec

# One call of the measured function, and the same call run eagerly (for the FLOP counter).
Calls = tuple[Callable[[], Any], Callable[[], Any]]


def run(config: BenchConfig) -> m.Record:
    """Measure one configuration; the record `report` prints."""
    record = m.base_record(config)
    device = torch_device(config.device)
    record.update(
        torch_version=torch.__version__,
        torch_threads=torch.get_num_threads(),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else m.cpu_name(),
        rss_baseline_bytes=m.host_rss_bytes(),
    )
    compile_mode = None
    if config.framework == "torch-compile":
        best = config.mode == "best" and device.type == "cuda"
        compile_mode = "max-autotune" if best else "default"
    channels_last = config.mode == "best"
    record["torch_compile_mode"] = compile_mode
    record["channels_last"] = channels_last
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    model = ref.TorchTransformerNet()
    ref.load_flat_params(model, dict(np.load(config.params_file)))
    model = model.to(device, memory_format=memory_format)
    batch_np, style_np = m.images(config)
    batch = ref.to_nchw(batch_np).to(device).contiguous(memory_format=memory_format)
    if config.task == "stylize":
        call, count = _stylize_calls(config, model, batch, compile_mode)
    else:
        style = ref.to_nchw(style_np).to(device)
        call, count = _train_calls(config, model, batch, style, compile_mode, memory_format)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timing = m.measure(call, lambda _: synchronize(device), config.steps, config.warmup)
    m.finish_record(record, timing, config)
    if device.type == "cuda":
        record["peak_mem_bytes"] = int(torch.cuda.max_memory_allocated(device))
        record["peak_mem_kind"] = "device max_memory_allocated"
        record["host_peak_rss_bytes"] = m.host_peak_rss_bytes()
    else:
        record.update(m.host_peak_memory())
    # After the timed region (it runs one more eager step).
    record["flops_torch"] = count_flops(count)
    record["device"] = "cpu" if device.type == "cpu" else "gpu"
    return record


def _stylize_calls(
    config: BenchConfig,
    model: ref.TorchTransformerNet,
    batch: torch.Tensor,
    compile_mode: str | None,
) -> Calls:
    stylize = make_stylize(model, dtype=config.dtype, compile_mode=compile_mode)
    eager = make_stylize(model, dtype=config.dtype, compile_mode=None)
    return (lambda: stylize(batch)), (lambda: eager(batch))


def _train_calls(
    config: BenchConfig,
    model: ref.TorchTransformerNet,
    batch: torch.Tensor,
    style: torch.Tensor,
    compile_mode: str | None,
    memory_format: torch.memory_format,
) -> Calls:
    spec = LossSpec(style_layers=config.style_layers, content_layer=config.content_layer)
    jax_vgg = m.random_vgg(config.vgg_layers)
    jax_vgg.check_layers(spec.vgg_layers)
    vgg = ref.torch_vgg_from(jax_vgg).to(batch.device, memory_format=memory_format)
    with ref.autocast(batch.device.type, config.dtype):
        grams = ref.style_grams(vgg, style, spec.style_layers)
    grams = {layer: gram.float() for layer, gram in grams.items()}

    def train_step(compile_mode: str | None) -> Callable[[torch.Tensor], torch.Tensor]:
        return ref.make_torch_train_step(
            model,
            vgg,
            grams,
            spec,
            LEARNING_RATE,
            config.pad,
            compute_dtype=config.dtype,
            compile_mode=compile_mode,
        )

    step = train_step(compile_mode)
    return (lambda: step(batch)), (lambda: train_step(None)(batch))


def torch_device(device: str) -> torch.device:
    """The torch.device for "cpu" or "gpu"; a clear error when CUDA is asked for but absent."""
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise BenchError(f"device {device!r} requested but torch sees no CUDA device")
    return torch.device("cuda")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU, where torch runs eagerly)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_stylize(
    model: ref.TorchTransformerNet, *, dtype: str, compile_mode: str | None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Inference: TransformerNet forward at the images' size in `dtype`, float32 output."""
    model = model.eval()
    forward = model if compile_mode is None else torch.compile(model, mode=compile_mode)

    def stylize(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), ref.autocast(images.device.type, dtype):
            return forward(images).float()

    return stylize


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs that torch.utils.flop_counter counts for one call (convs, matmuls; fwd + bwd)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())
