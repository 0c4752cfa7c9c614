"""Process-level setup shared by the command-line tools: cache folder, compile cache,
multi-host, and the one map of compute dtype names (`DTYPES`)."""

from __future__ import annotations

import logging as std_logging
import os
from pathlib import Path

import jax
import jax.numpy as jnp
from absl import logging

from fnst_jax.errors import UsageError

# Compute dtypes by the name every config, flag and model file uses. Parameters, instance-norm
# statistics, Grams and losses stay float32 whichever is chosen.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def dtype_from_name(name: str) -> jnp.dtype:
    """`DTYPES[name]`, or a UsageError listing the choices."""
    if name not in DTYPES:
        raise UsageError(f"dtype must be one of {sorted(DTYPES)}, not {name!r}")
    return DTYPES[name]


def cache_dir() -> Path:
    """$FNST_JAX_CACHE, else $XDG_CACHE_HOME/fnst_jax, else ~/.cache/fnst_jax."""
    if os.environ.get("FNST_JAX_CACHE"):
        return Path(os.environ["FNST_JAX_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "fnst_jax"


def enable_compilation_cache() -> None:
    """JAX's persistent compilation cache, so a second run does not recompile."""
    path = cache_dir() / "jax_cache"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a read-only home must not stop the run
        logging.warning("compilation cache disabled: cannot create %s (%s)", path, e)
        return
    jax.config.update("jax_compilation_cache_dir", str(path))
    # Every program, however quick to compile: training's start runs ~70 programs, most
    # under a second each (the random initialisers, one per parameter shape), which add up
    # to seconds; read back from the cache they take milliseconds (benchmarks/startup.py).
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Join a multi-process run when asked to, explicitly or by the usual environment.

    Explicit flags win; otherwise JAX_COORDINATOR_ADDRESS (with JAX_NUM_PROCESSES and
    JAX_PROCESS_ID), or a cluster JAX detects itself (SLURM, TPU pods, ...), when
    FNST_DISTRIBUTED=1. A single process needs nothing.
    """
    if coordinator_address is None:
        coordinator_address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and os.environ.get("JAX_NUM_PROCESSES"):
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id is None and os.environ.get("JAX_PROCESS_ID"):
        process_id = int(os.environ["JAX_PROCESS_ID"])
    if coordinator_address is None and os.environ.get("FNST_DISTRIBUTED") != "1":
        return
    # CPU collectives across processes need gloo (harmless on accelerators). Asking for the
    # backend here would initialise it too early, so the option is set unconditionally.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )
    logging.info(
        "process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


class _DropLibraryChatter(std_logging.Filter):
    """Keep our INFO lines; from orbax, grain and JAX's backend setup keep warnings only."""

    NOISY = ("/orbax/", "/grain/", "/jax/_src/xla_bridge.py", "/jax/_src/distributed.py")

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or not any(
            part in record.pathname for part in self.NOISY
        )


def quiet_library_logs() -> None:
    """Drop INFO chatter of orbax, grain and JAX's backend setup from the absl log."""
    logging.get_absl_handler().addFilter(_DropLibraryChatter())
