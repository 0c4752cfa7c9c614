"""`python serve.py`: flags -> models -> `Service` -> the FastAPI app on uvicorn.

`main(argv)` follows the project's command-line convention (`fnst_jax.cli`): absl flags on a
fresh `FlagValues`, hyphen and underscore spellings, a `UserError` (bad flag, unusable
model) printed as one `error:` line with exit status 2.

Signals: SIGTERM stops accepting connections, lets the requests in flight finish (the
queue stops waiting for batches to fill), then exits 0; `/readyz` answers 503 meanwhile,
so a load balancer stops sending. SIGINT (Ctrl-C) does the same and exits 130.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

import jax
import uvicorn
from absl import flags

from fnst_jax import cli as convention
from fnst_jax.errors import UsageError
from fnst_jax.runtime import DTYPES
from fnst_jax.serve import models as model_files
from fnst_jax.serve.app import create_app
from fnst_jax.serve.service import DEFAULT_MAX_PIXELS, Service, Settings
from fnst_jax.stylize import defaults

log = logging.getLogger(__name__)

API_KEY_ENV = "FNST_SERVE_API_KEY"

USAGE = f"""\
Serve trained fast-neural-style models over HTTP, with a web page.

usage: python serve.py --models PATH [PATH ...] [--host 127.0.0.1] [--port 8000] [options]

  PATH  an exported model file (.npz) or a folder: searched for model files (a training
        workdir's model.npz and best.npz, or exported .npz files under any name)

Open http://HOST:PORT/ for the web page; the API is POST /v1/stylize?model=NAME (see
http://HOST:PORT/docs). The service binds 127.0.0.1 unless --host says otherwise; set
--api-key (or ${API_KEY_ENV}) before exposing it. SIGTERM finishes the requests in
flight and exits 0.
"""


def define_flags(flag_values: flags.FlagValues) -> None:
    """The command line, on a given FlagValues so main() can be called repeatedly."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_multi_string(
        "models", [], "Model file or folder (repeatable; more may follow as arguments).", **fv
    )
    flags.DEFINE_string("host", "127.0.0.1", "Address to bind (0.0.0.0: every interface).", **fv)
    flags.DEFINE_integer("port", 8000, "Port to listen on.", **fv)
    flags.DEFINE_integer(
        "max-batch", 8, "Most requests per network call (rounded down to a power of two).", **fv
    )
    flags.DEFINE_float(
        "max-wait-ms",
        10.0,
        "How long a request may wait for others of its model and size to share its batch.",
        **fv,
    )
    flags.DEFINE_integer(
        "queue-size", 64, "Requests admitted and waiting; more get 503 + Retry-After.", **fv
    )
    flags.DEFINE_float("timeout-s", 60.0, "Requests not done after this get 504.", **fv)
    flags.DEFINE_float("max-upload-mb", 20.0, "Largest request body (413 above).", **fv)
    flags.DEFINE_integer(
        "max-pixels",
        DEFAULT_MAX_PIXELS,
        "Largest image in pixels, checked before decoding, and largest output (413 above).",
        **fv,
    )
    flags.DEFINE_list(
        "warm-sizes",
        ["256", "512"],
        "Image sizes compiled at startup, at every batch size: N (NxN) or WxH. Other sizes "
        "compile on first use.",
        **fv,
    )
    flags.DEFINE_integer(
        "bucket",
        defaults.DEFAULT_BUCKET,
        "Pad sides up to multiples of this so sizes share compiled programs and batches.",
        **fv,
    )
    flags.DEFINE_enum("dtype", "float32", list(DTYPES), "Compute dtype.", **fv)
    flags.DEFINE_integer(
        "devices", 0, "Local devices to use, one worker each (0: all of them).", **fv
    )
    flags.DEFINE_string(
        "api-key",
        None,
        f"Require this key on POST /v1/stylize (default: ${API_KEY_ENV}, if set).",
        **fv,
    )
    flags.DEFINE_multi_string(
        "cors-origin",
        [],
        "Allow browser pages from this origin (repeatable). Off by default.",
        **fv,
    )
    flags.DEFINE_integer("io-workers", 2, "Threads decoding and encoding images.", **fv)
    flags.DEFINE_enum(
        "log-level", "info", ["debug", "info", "warning", "error"], "Log level.", **fv
    )


def _warm_sizes(entries: Sequence[str]) -> tuple[tuple[int, int], ...]:
    sizes = []
    for entry in entries:
        width, _, height = entry.lower().partition("x")
        try:
            size = (int(width), int(height or width))
        except ValueError:
            raise UsageError(f"--warm-sizes: {entry!r} is not N or WxH") from None
        if min(size) < 1:
            raise UsageError(f"--warm-sizes: {entry!r} must be positive")
        sizes.append(size)
    return tuple(sizes)


def settings_from_flags(fv: flags.FlagValues) -> Settings:
    """The service's settings; UsageError for values that cannot work."""
    for name in ("max-batch", "queue-size", "max-pixels", "bucket", "io-workers"):
        if fv[name].value < 1:
            raise UsageError(f"--{name} must be at least 1")
    for name in ("timeout-s", "max-upload-mb"):
        if not fv[name].value > 0:
            raise UsageError(f"--{name} must be positive")
    if fv["max-wait-ms"].value < 0:
        raise UsageError("--max-wait-ms must be >= 0")
    if not 0 < fv["port"].value < 65536:
        raise UsageError("--port must be between 1 and 65535")
    return Settings(
        max_batch=fv["max-batch"].value,
        max_wait_ms=fv["max-wait-ms"].value,
        queue_size=fv["queue-size"].value,
        timeout_s=fv["timeout-s"].value,
        max_upload_mb=fv["max-upload-mb"].value,
        max_pixels=fv["max-pixels"].value,
        warm_sizes=_warm_sizes(fv["warm-sizes"].value),
        api_key=fv["api-key"].value or os.environ.get(API_KEY_ENV) or None,
        cors_origins=tuple(fv["cors-origin"].value),
        io_workers=fv["io-workers"].value,
    )


def _devices(count: int) -> list[jax.Device]:
    local = jax.local_devices()
    if count > len(local):
        raise UsageError(f"--devices {count}: only {len(local)} local device(s)")
    return local[: count or len(local)]


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def main(argv: Sequence[str]) -> int:
    """Run the command line (argv[0] is the program name); returns the exit status."""
    return convention.run_command(define_flags, _serve, argv, USAGE)


def _serve(fv: flags.FlagValues, positional: list[str]) -> int:
    paths = [*fv["models"].value, *positional]
    if not paths:
        raise UsageError("--models is required (see --help)")
    settings = settings_from_flags(fv)
    logging.basicConfig(
        level=fv["log-level"].value.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("jax").setLevel(logging.WARNING)  # backend probing chatter
    devices = _devices(fv["devices"].value)
    models = model_files.load_models(  # an unusable model: UserError, exit 2
        paths,
        dtype=fv["dtype"].value,
        bucket=fv["bucket"].value,
        max_batch=settings.max_batch,
        devices=devices if len(devices) > 1 else None,
    )
    host = fv["host"].value
    if not _is_loopback(host) and not settings.api_key:
        log.warning("listening on %s without --api-key: anyone reaching it may use it", host)
    log.info("%d model(s): %s; %d device(s)", len(models), ", ".join(models), len(devices))
    return run_server(Service(models, settings), host, fv["port"].value, fv["log-level"].value)


def run_server(service: Service, host: str, port: int, log_level: str = "info") -> int:
    """Serve until SIGTERM (exit 0) or SIGINT (KeyboardInterrupt); 1 if it never started
    (e.g. the port is taken)."""
    config = uvicorn.Config(
        create_app(service),
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=int(service.settings.timeout_s) + 5,
    )
    server = _DrainingServer(config, service)
    server.run()
    return convention.EXIT_OK if server.started else convention.EXIT_FAILED


class _DrainingServer(uvicorn.Server):
    """uvicorn's Server, telling the service to drain as soon as a signal arrives. SIGTERM
    is not re-raised after the graceful shutdown (uvicorn re-raises it by default, which
    would end the process with the signal), so a drained service exits 0."""

    def __init__(self, config: uvicorn.Config, service: Service):
        super().__init__(config)
        self.service = service

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.service.drain()
        if sig == signal.SIGTERM:
            self.should_exit = True
        else:
            super().handle_exit(sig, frame)
