"""Stopping a run on SIGINT/SIGTERM after a step every process agrees on (`StopRequest`).

A signal reaches one process (a preempted host) or reaches processes steps apart. Stopping on
its own flag, one process would enter the checkpoint's barrier while another waits in the next
step's all-reduce, and the run would hang without its checkpoint. So every step, every process
puts its flag (the signal number, 0 for none) into a max over the training mesh: a tiny
collective (gloo on CPU, NCCL/ICI elsewhere) next to the step's gradient all-reduce. Its
result is read one step later: reading it waits for the previous step only, while this step
runs, so the host never stalls the device and the check costs next to nothing; every process
reads the same value after the same step, and so stops after the same step (one step after
the signal is seen). A single process agrees with itself: it stops after the step the signal
came in.

JAX's preemption sync point (which orbax uses) is not used: it hears SIGTERM only (not
Ctrl-C), exists only after jax.distributed.initialize, and any Python SIGTERM handler replaces
its C++ one. A synchronous `process_allgather` every step would stall the device each step.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


class StopRequest:
    """SIGINT/SIGTERM ask for a stop (a context manager installs the handlers); every process
    stops after the same step (`poll`), and `agreed` is the signal they stopped for. A second
    signal to a process stops it at once (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.signal: int | None = None  # received by this process
        self.agreed = 0  # the signal every process stops for; 0 while none is agreed
        self._previous: dict[int, Any] = {}
        self._flag_sharding: NamedSharding | None = None
        self._max: Callable[[jax.Array], jax.Array] | None = None
        self._pending: jax.Array | None = None  # the last max, not read yet

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self.signal = signum
        logging.warning(
            "signal %d received: saving a checkpoint after a step all processes agree on, then "
            "stopping (a second signal stops at once)",
            signum,
        )

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            # None: a handler installed outside Python (JAX's preemption notifier), which
            # cannot be put back from Python; the default is what it would have done.
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)

    def agree_over(self, mesh: Mesh) -> None:
        """Agree over `mesh` (every device of every process) from now on."""
        if jax.process_count() > 1:
            self._flag_sharding = NamedSharding(mesh, P("data"))
            self._max = jax.jit(jnp.max, out_shardings=NamedSharding(mesh, P()))

    def _exchange(self) -> jax.Array:
        """Start the max over every process's flag (asynchronous)."""
        local = np.full(len(self._flag_sharding.addressable_devices), self.signal or 0, np.int32)
        return self._max(jax.make_array_from_process_local_data(self._flag_sharding, local))

    def poll(self) -> bool:
        """Whether every process stops after this step; called by each after every step."""
        if self._max is None:
            self.agreed = self.signal or 0
        else:
            previous, self._pending = self._pending, self._exchange()
            if previous is not None:
                self.agreed = _read_replicated(previous)
        return self.agreed != 0

    def settle(self) -> None:
        """After the last step, in every process: agree on a signal received since the last
        `poll`, so that every process exits with the same status."""
        if self._max is None:
            self.agreed = self.signal or 0
        else:
            self._pending = None
            self.agreed = _read_replicated(self._exchange())


def _read_replicated(x: jax.Array) -> int:
    """A replicated scalar of a (possibly multi-process) global array, on the host."""
    return int(np.asarray(x.addressable_data(0)))
