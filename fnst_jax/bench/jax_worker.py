"""The JAX side of the benchmark: the project's own train step, or the stylize forward, timed.

The train step is `fnst_jax.train_step` as training runs it: `init_model` + `new_state`,
`make_jit_step` on a 1-device mesh (state donated), Adam at the training learning rate. This
module imports that step module alone: no data pipeline, checkpointing or monitoring code
(`tests/test_bench.py` checks it). Both programs are compiled ahead of time (`lower_compile_s`)
and added back to the first call, so `first_call_s` / `compile_s` mean the same for every
framework. `flops_xla` is XLA's cost analysis of the compiled program.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fnst_jax import runtime, train_step
from fnst_jax.bench import LEARNING_RATE, SEED, BenchConfig, BenchError
from fnst_jax.bench import measure as m
from fnst_jax.export import set_flat_params
from fnst_jax.losses import LossSpec, style_grams
from fnst_jax.transformer_net import TransformerNet

# A compiled program and the call that runs it once on the benchmark's inputs.
Program = tuple[Any, Callable[[], Any]]


def run(config: BenchConfig) -> m.Record:
    """Measure one configuration; the record `report` prints."""
    # Cold compile times: no persistent compilation cache, whatever the environment says.
    jax.config.update("jax_enable_compilation_cache", False)
    record = m.base_record(config)
    backend = jax.default_backend()
    if config.device == "gpu" and backend != "gpu":
        raise BenchError(f"device gpu requested but JAX's backend is {backend!r}")
    device = jax.devices()[0]
    record.update(
        jax_version=jax.__version__,
        device_name=device.device_kind if backend != "cpu" else m.cpu_name(),
        rss_baseline_bytes=m.host_rss_bytes(),
    )
    flat = dict(np.load(config.params_file))
    if config.task == "stylize":
        compiled, call = _stylize_program(config, flat, device, record)
    else:
        compiled, call = _train_program(config, flat, device, record)
    record["flops_xla"] = _xla_flops(compiled)
    timing = m.measure(call, jax.block_until_ready, config.steps, config.warmup)
    # The AOT compile happened before the first call: add it back so first_call_s /
    # compile_s mean the same as for the other frameworks (trace + compile + first run).
    timing["first_call_s"] += record["lower_compile_s"]
    timing["compile_s"] += record["lower_compile_s"]
    m.finish_record(record, timing, config)
    if backend == "cpu":
        record.update(m.host_peak_memory())
    else:
        stats = device.memory_stats() or {}
        record["peak_mem_bytes"] = int(stats.get("peak_bytes_in_use", 0))
        record["peak_mem_kind"] = "device peak_bytes_in_use"
        record["host_peak_rss_bytes"] = m.host_peak_rss_bytes()
    record["device"] = "cpu" if backend == "cpu" else "gpu"
    return record


def _compile(jitted: Any, args: tuple, record: m.Record) -> Any:
    """Lower and compile ahead of time; the seconds it took go to `lower_compile_s`."""
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    record["lower_compile_s"] = time.perf_counter() - start
    return compiled


def _stylize_program(
    config: BenchConfig, flat: dict, device: jax.Device, record: m.Record
) -> Program:
    """The TransformerNet forward (inference) of the batch, compiled."""
    model = TransformerNet(dtype=runtime.dtype_from_name(config.dtype), rngs=nnx.Rngs(SEED))
    set_flat_params(model, flat)
    graphdef, params = nnx.split(model, nnx.Param)
    params = jax.device_put(params, device)
    batch = jax.device_put(m.images(config)[0], device)

    @jax.jit
    def stylize(params: nnx.State, images: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, params)(images)

    compiled = _compile(stylize, (params, batch), record)
    return compiled, lambda: compiled(params, batch)


def _train_program(
    config: BenchConfig, flat: dict, device: jax.Device, record: m.Record
) -> Program:
    """The project's train step on a 1-device mesh, compiled; each call advances the state."""
    dtype = runtime.dtype_from_name(config.dtype)
    batch_np, style_np = m.images(config)
    vgg = m.random_vgg(config.vgg_layers)
    spec = LossSpec(style_layers=config.style_layers, content_layer=config.content_layer)
    vgg.check_layers(spec.vgg_layers)
    target_grams = jax.jit(style_grams, static_argnums=(2, 3))(
        vgg, jnp.asarray(style_np), spec.style_layers, dtype
    )
    tx = train_step.make_optimizer("adam", LEARNING_RATE)
    graphdef, params = train_step.init_model(jax.random.PRNGKey(SEED), dtype)
    model = nnx.merge(graphdef, params)
    set_flat_params(model, flat)  # the weights every framework starts from
    params = jax.tree.map(jnp.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    mesh = Mesh(np.array([device]), ("data",))
    state, vgg, target_grams = jax.device_put(
        (train_step.new_state(params, tx), vgg, target_grams), NamedSharding(mesh, P())
    )
    batch = jax.device_put(batch_np, NamedSharding(mesh, P("data")))
    step_config = train_step.StepConfig(graphdef, spec, config.pad, dtype)
    step = train_step.make_jit_step(mesh, tx, step_config)
    compiled = _compile(step, (state, batch, vgg, target_grams), record)
    holder = {"state": state}  # donated: each call consumes the state and returns the next

    def call() -> tuple[train_step.TrainState, train_step.Terms]:
        holder["state"], terms = compiled(holder["state"], batch, vgg, target_grams)
        return holder["state"], terms

    return compiled, call


def _xla_flops(compiled: Any) -> float | None:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):  # older jax: one dict per computation
        analysis = analysis[0] if analysis else {}
    return float(analysis["flops"]) if analysis and "flops" in analysis else None
