"""Where a command's start-up time goes: the profiled process of `startup.py --profile`.

`record` runs a command in this process under timers: imports (outermost only), the
functions of `TIMED_FUNCTIONS`, and JAX's own compile and cache events (`JAX_EVENTS`), and
writes the intervals when the command exits. `breakdown` turns them into seconds per column,
each second counted once, in the most specific column that was busy then (`COLUMNS`).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


# Functions timed in the profiled process: (module, attribute, column). Patched when their
# module is imported, before any caller binds them.
TIMED_FUNCTIONS = (
    ("fnst_jax.export", "load_model", "model build"),
    ("fnst_jax.train_step", "init_model", "model build"),
    ("fnst_jax.vgg_weights", "load_vgg", "VGG load"),
    ("onnxruntime", "InferenceSession.__init__", "onnxruntime"),
    ("onnxruntime", "InferenceSession.run", "onnxruntime"),
)
# JAX's own duration events -> column. A compile event spans its cache read, if any.
JAX_EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "tracing",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lowering",
    "/jax/core/compile/backend_compile_duration": "compiling",
    "/jax/compilation_cache/cache_retrieval_time_sec": "cache reads",
}
# Each second goes to the first of these that was busy then (most specific first); what no
# column claims is "other": the computation itself, file I/O, the rest of Python.
COLUMNS = (
    "cache reads",
    "compiling",
    "lowering",
    "tracing",
    "onnxruntime",
    "VGG load",
    "model build",
    "imports",
)


def record(events_path: Path, argv: list[str]) -> None:
    """Run `argv` (a script and its arguments, or -m MODULE and its arguments) in this
    process as `python` would, and write its timed intervals to `events_path` as it exits:
    [column, start, end] (wall clock). Imports are timed outermost only."""
    import atexit
    import builtins
    import functools
    import runpy

    events: list[tuple[str, float, float]] = []
    patched: set[tuple[str, str]] = set()
    listening = []
    state = threading.local()
    original_import = builtins.__import__

    def timed(column: str, function: Callable) -> Callable:
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            start = time.time()
            try:
                return function(*args, **kwargs)
            finally:
                events.append((column, start, time.time()))

        return wrapper

    def patch_imported() -> None:
        for module, attribute, column in TIMED_FUNCTIONS:
            if (module, attribute) in patched or module not in sys.modules:
                continue
            *path, name = [module, *attribute.split(".")]
            owner = sys.modules[module]
            for part in path[1:]:
                owner = getattr(owner, part, None)
            if owner is not None and hasattr(owner, name):  # else: still importing
                setattr(owner, name, timed(column, getattr(owner, name)))
                patched.add((module, attribute))

    def on_jax_event(event: str, duration: float, **kwargs) -> None:
        if event in JAX_EVENTS:
            end = time.time()
            events.append((JAX_EVENTS[event], end - duration, end))

    def timed_import(*args, **kwargs):
        if getattr(state, "importing", False):
            module = original_import(*args, **kwargs)
            patch_imported()
            return module
        state.importing, start = True, time.time()
        try:
            return original_import(*args, **kwargs)
        finally:
            events.append(("imports", start, time.time()))
            state.importing = False
            patch_imported()
            if not listening and "jax.monitoring" in sys.modules:  # jax fully imported
                sys.modules["jax.monitoring"].register_event_duration_secs_listener(on_jax_event)
                listening.append(True)

    def write() -> None:
        events_path.write_text(json.dumps(events))

    atexit.register(write)
    # Stopped once ready: exit through atexit (serve and train install their own handlers).
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
    builtins.__import__ = timed_import
    sys.path[0] = str(REPO)  # as for `python SCRIPT` / `python -m MODULE` in the repository
    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(argv)
        runpy.run_path(argv[0], run_name="__main__")


def _merged(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _length(intervals: list[tuple[float, float]]) -> float:
    return sum(end - start for start, end in intervals)


def breakdown(events: list, launched: float, ready: float) -> dict[str, float | int]:
    """Seconds per column (each second once: see COLUMNS) from launch to ready, "other",
    and the programs compiled and read from the compilation cache meanwhile."""
    clipped: dict[str, list[tuple[float, float]]] = {column: [] for column in COLUMNS}
    for column, start, end in events:
        start, end = max(start, launched), min(end, ready)
        if end > start:
            clipped[column].append((start, end))
    result: dict[str, float | int] = {"seconds to ready": ready - launched}
    claimed: list[tuple[float, float]] = []
    for column in COLUMNS:
        own = _merged(clipped[column])
        before = _length(_merged(claimed))
        claimed = _merged(claimed + own)
        result[column] = _length(claimed) - before
    result["other"] = (ready - launched) - _length(claimed)
    hits = len(clipped["cache reads"])
    result["programs compiled"] = len(clipped["compiling"]) - hits
    result["programs from cache"] = hits
    return result
