"""`python serve.py` as a user runs it: a subprocess on a free 127.0.0.1 port with two
(virtual CPU) devices, ready, stylizing; a client that disconnects while its request waits
costs no network time; then SIGTERM while a request is in flight: the request completes and
the process exits 0."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from stylize_helpers import natural_image, save_test_model

REPO = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 300  # cold start: imports, model load, compiling 2 programs on a busy CPU


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_ready(process: subprocess.Popen, base: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"serve.py exited with {process.returncode} before it was ready")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(f"serve.py was not ready after {READY_TIMEOUT_S} s")


def metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    return float(re.search(rf"^{name} (\S+)$", text, re.MULTILINE).group(1))


def wait_for(condition, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.05)


def disconnect_while_queued(base: str, port: int, body: bytes) -> None:
    """Send a whole request on a raw socket and close it while the request waits."""
    head = (
        "POST /v1/stylize?model=mosaic HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: image/png\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(head.encode() + body)
        wait_for(lambda: metric(base, "fnst_queue_depth") >= 1, "the request to be queued")


@pytest.mark.slow
def test_serve_py_stylizes_and_drains_on_sigterm(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    save_test_model(models / "mosaic.npz")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        # Compile time dominates on tiny images (as the fast_compile fixture does in process).
        "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
        "FNST_JAX_CACHE": str(tmp_path / "cache"),
        "JAX_NUM_CPU_DEVICES": "2",  # one worker per device
    }
    env.pop("FNST_SERVE_API_KEY", None)
    command = [
        sys.executable,
        "serve.py",
        "--models",
        str(models),
        "--port",
        str(port),
        "--warm-sizes",
        "32",
        "--max-batch",
        "2",
        "--devices",
        "2",
        # A lone request waits this long for a partner: long enough to signal meanwhile.
        "--max-wait-ms",
        "3000",
    ]
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log)
    try:
        wait_until_ready(process, base)
        image = natural_image(30, 32, seed=1)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "PNG")
        first = httpx.post(f"{base}/v1/stylize?model=mosaic", content=buffer.getvalue(), timeout=60)
        assert first.status_code == 200, first.text
        assert Image.open(io.BytesIO(first.content)).size == (32, 30)

        network_calls = metric(base, "fnst_network_seconds_count")
        disconnect_while_queued(base, port, buffer.getvalue())
        # Dropped when its batch's wait ends, without a network call.
        wait_for(lambda: metric(base, "fnst_queue_depth") == 0, "the request to be dropped")
        assert metric(base, "fnst_network_seconds_count") == network_calls

        in_flight: dict[str, httpx.Response] = {}

        def send() -> None:
            in_flight["response"] = httpx.post(
                f"{base}/v1/stylize?model=mosaic",
                content=buffer.getvalue(),
                headers={"Content-Type": "image/png"},
                timeout=60,
            )

        sender = threading.Thread(target=send)
        sender.start()
        # The request is in the queue, waiting for a partner.
        wait_for(lambda: metric(base, "fnst_queue_depth") >= 1, "the request to be queued")
        process.send_signal(signal.SIGTERM)
        sender.join(60)
        response = in_flight["response"]
        assert response.status_code == 200, response.text
        assert np.asarray(Image.open(io.BytesIO(response.content))).shape == (30, 32, 3)
        assert response.content == first.content  # the same image, the same bytes
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log = log_path.read_text()
    assert "compiling 2/2 (device 0)" in log and "compiling 2/2 (device 1)" in log, log
    assert "2 device(s)" in log and "client disconnected" in log, log
    assert "draining" in log, log
    # Images stay in memory: nothing was written beside the models.
    assert sorted(p.name for p in models.iterdir()) == ["mosaic.npz"]
