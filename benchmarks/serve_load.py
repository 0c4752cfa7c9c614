"""Load test of `python serve.py`: requests/s and latency under N concurrent clients.

    python benchmarks/serve_load.py [--model runs/mosaic] [--requests 32] \
        [--sizes 256,512] [--concurrency 1,4,16] [--max-batch 8]

Starts the service twice on a free 127.0.0.1 port, once with `--max-batch` (batching on)
and once with `--max-batch 1`, and for every output size and concurrency sends a bounded
number of requests (`--requests`, after one unmeasured round of warm-up requests) from that
many concurrent clients: one photo (../shared/data/photos, or a generated one) resized by
the service to the size's longest side, JPEG out. Prints a Markdown table: requests/s,
p50/p95/p99 latency, the mean batch size the service reported, its peak memory; then the
engine's own per-image time (`Stylizer.stylize`, the network call `stylize.py` makes) for
the same image, measured in this process before the services start.

Without `--model`, a randomly initialised TransformerNet with the default config's 40 px
pad is used: the network's cost does not depend on its weights. Nothing but the loopback
address is ever contacted, and every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import host  # benchmarks/host.py, beside this script
import httpx
import numpy as np
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fnst_jax import export, image_io  # noqa: E402
from fnst_jax.stylize import Stylizer  # noqa: E402
from fnst_jax.stylize.inputs import Options, target_size  # noqa: E402

PHOTO = REPO.parent / "shared" / "data" / "photos" / "bsd_101085.jpg"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model file or workdir (default: random weights)")
    parser.add_argument("--requests", type=int, default=32, help="measured requests per cell")
    parser.add_argument("--sizes", default="256,512", help="output longest sides")
    parser.add_argument("--concurrency", default="1,4,16", help="concurrent clients")
    parser.add_argument("--max-batch", type=int, default=8, help="the batching configuration")
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--engine-repeats", type=int, default=5)
    return parser.parse_args()


def photo_bytes() -> bytes:
    if PHOTO.is_file():
        return PHOTO.read_bytes()
    rng = np.random.default_rng(0)
    image = (rng.random((480, 320, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def photo_array(data: bytes, size: int) -> np.ndarray:
    """The photo as the service sees it at `size` (EXIF applied, Lanczos resize)."""
    image = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    width, height = target_size(image.shape[1], image.shape[0], Options(size=size))
    return image_io.resize_rgb_alpha(image, None, (width, height))[0]


def random_model(folder: Path) -> Path:
    return export.save_untrained_model(folder / "random.npz", {"pad": 40})


def engine_seconds(model: str, image: np.ndarray, repeats: int) -> float:
    """Median time of `Stylizer.stylize` on one image (after a compiling call)."""
    stylizer = Stylizer.from_model_file(model)
    stylizer.stylize(image)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        stylizer.stylize(image)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


class Server:
    """`python serve.py` on a free loopback port, stopped with SIGTERM."""

    def __init__(self, model: str, max_batch: int, max_wait_ms: float, warm: list[str]):
        self.port = host.free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable,
            "serve.py",
            "--models",
            model,
            "--port",
            str(self.port),
            "--max-batch",
            str(max_batch),
            "--max-wait-ms",
            str(max_wait_ms),
            "--queue-size",
            "256",
            "--timeout-s",
            "600",
            "--warm-sizes",
            ",".join(warm),
            "--log-level",
            "warning",
        ]
        self.process = subprocess.Popen(command, cwd=REPO)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"serve.py exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(1)
        self.stop()
        raise SystemExit("serve.py did not get ready in 15 minutes")

    def peak_memory_bytes(self) -> float:
        text = httpx.get(f"{self.base}/metrics", timeout=10).text
        return float(re.search(r"^fnst_peak_memory_bytes (\S+)$", text, re.MULTILINE).group(1))

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def load(base: str, body: bytes, size: int, clients: int, requests: int) -> dict:
    """`requests` requests from `clients` concurrent clients: latencies, wall time, batches."""
    url = f"{base}/v1/stylize?size={size}&format=jpg"
    latencies: list[float] = []
    batches: list[int] = []
    remaining = requests

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            response = await http.post(url, content=body, headers={"Content-Type": "image/jpeg"})
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise SystemExit(f"request failed: {response.status_code} {response.text}")
            batches.append(int(response.headers["x-batch-size"]))

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - started
    return {
        "rps": requests / wall,
        "p50": float(np.percentile(latencies, 50)),
        "p95": float(np.percentile(latencies, 95)),
        "p99": float(np.percentile(latencies, 99)),
        "batch": statistics.mean(batches),
    }


def main() -> None:
    args = parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    concurrency = [int(c) for c in args.concurrency.split(",")]
    body = photo_bytes()
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or str(random_model(Path(scratch)))
        warm = []
        engine = {}
        for size in sizes:
            image = photo_array(body, size)
            warm.append(f"{image.shape[1]}x{image.shape[0]}")
            engine[size] = engine_seconds(model, image, args.engine_repeats)
            print(f"engine, {warm[-1]}: {engine[size] * 1000:.0f} ms per image", flush=True)
        rows, peaks = [], {}
        for max_batch in (args.max_batch, 1):
            server = Server(model, max_batch, args.max_wait_ms, warm)
            try:
                for size in sizes:
                    for clients in concurrency:
                        asyncio.run(load(server.base, body, size, clients, clients))  # warm-up
                        result = asyncio.run(load(server.base, body, size, clients, args.requests))
                        rows.append((max_batch, size, clients, result))
                        print(
                            f"max-batch {max_batch}, {size} px, {clients} clients: "
                            f"{result['rps']:.2f} req/s, p99 {result['p99']:.2f} s",
                            flush=True,
                        )
                peaks[max_batch] = server.peak_memory_bytes()
            finally:
                server.stop()
    print_table(rows, peaks, engine, args.requests)


def print_table(
    rows: list, peaks: dict[int, float], engine: dict[int, float], requests: int
) -> None:
    print(f"\n{requests} measured requests per row; latency in seconds.\n")
    print("| --max-batch | size (px) | clients | req/s | p50 | p95 | p99 | mean batch |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    results = {}
    for max_batch, size, clients, result in rows:
        results[max_batch, size, clients] = result
        print(
            f"| {max_batch} | {size} | {clients} | {result['rps']:.2f} | {result['p50']:.2f} | "
            f"{result['p95']:.2f} | {result['p99']:.2f} | {result['batch']:.1f} |"
        )
    print()
    for max_batch, peak in peaks.items():
        print(f"peak memory of the service with --max-batch {max_batch}: {peak / 2**30:.2f} GiB")
    batched = max(b for b, *_ in results)
    for size, seconds in engine.items():
        print(f"\nengine (stylize.py's network call) at {size} px: {seconds:.3f} s per image")
        if (1, size, 1) in results:
            ratio = results[batched, size, 1]["p99"] / seconds
            print(f"  p99 at 1 client (batching on) / engine time: {ratio:.2f}")
        top = max(c for _, s, c in results if s == size)
        if (1, size, top) in results and batched != 1:
            gain = results[batched, size, top]["rps"] / results[1, size, top]["rps"]
            print(f"  req/s at {top} clients, batching / --max-batch 1: {gain:.2f}x")


if __name__ == "__main__":
    main()
