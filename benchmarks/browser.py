"""Stylizing in the browser against Python: milliseconds per image in headless Chromium
(onnxruntime-web on WebAssembly: one thread, and several where the page is cross-origin
isolated), onnxruntime in Python (the same ONNX file, same thread counts) and the JAX engine
(`stylize.py`'s), on the same square images; and the first load of the page and the model.

    python benchmarks/browser.py --model runs/mosaic --sizes 256,512 --repeats 5
    # without --model: a random TransformerNet with a 40 px training pad (the cost of a
    # trained one: weights do not change the work)
    python benchmarks/browser.py
    # and one large photo, tiled in the page, with Chromium's peak memory
    python benchmarks/browser.py --large 1600x1200

What it does: writes the static site (`deploy.web.write_site`, float16 unless --dtype)
to a temporary folder and serves it twice on 127.0.0.1 with a stdlib http.server, once
plain and once with COOP/COEP headers (cross-origin isolated: SharedArrayBuffer, so
WebAssembly threads; the page then uses up to 4). Each Chromium run starts with an empty
cache: the page's load (navigation to its style list), then the first photo (the model's
download, the runtime's start, its first run), then --repeats photos per size, timed by the
page itself (`#timing`'s data-network-ms: the model's run; "in all" adds decoding and PNG
encoding), with the peak resident memory of Chromium's processes; --large adds one photo
of that size, tiled by the page's defaults (1 MP whole at most, 512 px tiles). Python's
figures time the same images through onnxruntime's session and the JAX engine (after a
warm-up call: JAX compiles there). Medians. The machine's load average is printed: the
figures are only comparable on a quiet machine.

WebGPU is not measured: headless Chromium here finds no GPU adapter
(navigator.gpu.requestAdapter() returns null). The page tries WebGPU first wherever a
browser offers one, and falls back to WebAssembly as here.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import http.server
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
TIMEOUT_MS = 600_000
LARGE_TIMEOUT_MS = 4 * 3600_000  # a 12 MP photo on one WebAssembly thread: tens of minutes


def test_image(height: int, width: int) -> np.ndarray:
    """A photo-like uint8 image (colour gradients and noise; content does not change the
    cost), as benchmarks/onnx_vs_jax.py makes it."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack(
        [128 + 90 * np.sin(x / 7), 128 + 90 * np.cos(y / 9), 128 + 60 * np.sin((x + y) / 11)],
        axis=-1,
    )
    return np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)


def model_file(args: argparse.Namespace, folder: Path) -> Path:
    """--model, or a random TransformerNet saved as a model file."""
    from fnst_jax import model_file as files

    if args.model:
        return files.resolve_model_path(args.model)
    from fnst_jax import export

    return export.save_untrained_model(folder / "random.npz", {"pad": args.pad, "image_size": 256})


def write_site(path: Path, folder: Path, dtype: str) -> Path:
    """The static site, as `--format web` writes it (one verification size: speed)."""
    from fnst_jax import export, model_file
    from fnst_jax.deploy import cli, web

    model, metadata = export.load_model(path)
    pad = int(metadata.get("pad") or 0)
    site = web.write_site(
        folder / "site",
        name=model_file.model_name(path),
        model=model,
        pad=pad,
        properties=cli.model_properties(path, metadata, pad),
        metadata=metadata,
        dtype=dtype,
        verify_sizes=((64, 64),),
    )
    return site.path


class _Handler(http.server.SimpleHTTPRequestHandler):
    isolated = False

    def end_headers(self) -> None:
        if self.isolated:
            from fnst_jax.deploy.web import ISOLATION_HEADERS

            for key, value in ISOLATION_HEADERS.items():
                self.send_header(key, value)
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(folder: Path, isolated: bool) -> http.server.ThreadingHTTPServer:
    handler = type("Handler", (_Handler,), {"isolated": isolated})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(folder))
    )
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


class PeakMemory:
    """The peak of the summed resident memory of this process's Chromium descendants
    (browser, renderer, GPU and utility processes; workers live in the renderer), sampled
    every 0.2 s while in the `with` block (Linux /proc)."""

    def __enter__(self) -> PeakMemory:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, chromium_rss())


def chromium_rss() -> int:
    """Bytes resident in this process's Chromium descendants now."""
    parents, names = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parents[int(entry.name)] = int(fields[1])
            names[int(entry.name)] = (entry / "comm").read_text().strip()
        except (OSError, IndexError, ValueError):
            continue
    mine, total = {os.getpid()}, 0
    changed = True  # add children of the set until none is new
    while changed:
        changed = False
        for pid, parent in parents.items():
            if parent in mine and pid not in mine:
                mine.add(pid)
                changed = True
    for pid in mine:
        if "chrom" not in names.get(pid, ""):
            continue
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def chromium_run(
    executable: str,
    url: str,
    photos: dict[int, Path],
    repeats: int,
    large: Path | None = None,
) -> dict[str, object]:
    """One fresh Chromium: page load, first photo, then per size the medians and the peak
    memory; then the `large` photo once (tiled), timed, with its peak memory."""
    from playwright.sync_api import sync_playwright

    def stylize(page: Any, photo: Path, timeout_ms: int = TIMEOUT_MS) -> tuple[float, float]:
        page.set_input_files("#file", str(photo))
        started = time.perf_counter()
        page.click("#stylize")
        page.wait_for_selector(
            "#result[data-loaded=true], #message:not([hidden])", timeout=timeout_ms
        )
        if page.is_visible("#message"):
            raise RuntimeError(page.inner_text("#message"))
        total = (time.perf_counter() - started) * 1000
        return float(page.get_attribute("#timing", "data-network-ms")), total

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            started = time.perf_counter()
            page.goto(url)
            page.wait_for_selector(".style-card", timeout=TIMEOUT_MS)
            page_load = (time.perf_counter() - started) * 1000
            page.select_option("#size", "")  # the photos are already at their size
            first_network, first_total = stylize(page, photos[min(photos)])
            record: dict[str, object] = {
                "page_load_ms": page_load,
                "first_photo_ms": first_total,
                "first_network_ms": first_network,
                "backend": page.inner_text("#timing").split("on this device (")[-1].rstrip(")"),
            }
            for size, photo in photos.items():
                with PeakMemory() as memory:
                    runs = [stylize(page, photo) for _ in range(repeats)]
                record[f"network_{size}"] = statistics.median(r[0] for r in runs)
                record[f"total_{size}"] = statistics.median(r[1] for r in runs)
                record[f"peak_{size}"] = memory.peak
            if large is not None:
                with PeakMemory() as memory:
                    record["large_ms"] = stylize(page, large, LARGE_TIMEOUT_MS)[1]
                record["large_peak"] = memory.peak
            return record
        finally:
            browser.close()


def python_onnx(
    onnx_path: Path, images: dict[int, np.ndarray], threads: int, repeats: int
) -> dict[int, float]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(
        str(onnx_path), options, providers=["CPUExecutionProvider"]
    )
    medians = {}
    for size, image in images.items():
        batch = image[None]
        session.run(["stylized_float"], {"image": batch})  # warm-up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            session.run(["stylized_float"], {"image": batch})
            times.append((time.perf_counter() - started) * 1000)
        medians[size] = statistics.median(times)
    return medians


def python_jax(path: Path, images: dict[int, np.ndarray], repeats: int) -> dict[int, float]:
    from fnst_jax.stylize import loading

    stylizer = loading.load_stylizer(path)
    medians = {}
    for size, image in images.items():
        stylizer.stylize_float(image)  # compiles
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            stylizer.stylize_float(image)
            times.append((time.perf_counter() - started) * 1000)
        medians[size] = statistics.median(times)
    return medians


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def chromium_version(executable: str) -> str:
    result = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=60)
    return result.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model file or training workdir (default: random)")
    parser.add_argument("--pad", type=int, default=40, help="the random model's training pad")
    parser.add_argument("--sizes", default="256,512", help="square image sides, px")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument(
        "--large",
        help="WIDTHxHEIGHT: also stylize one photo this large, tiled (one thread), e.g. 4000x3000",
    )
    args = parser.parse_args()

    from fnst_jax.deploy import web

    problem = web.runtime_problem()
    if problem:
        sys.exit(f"error: {problem}")
    sizes = [int(size) for size in args.sizes.split(",")]
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="fnst-browser-bench-") as tmp:
        folder = Path(tmp)
        path = model_file(args, folder)
        site = write_site(path, folder, args.dtype)
        onnx_path = next((site / "models").glob("*.onnx"))
        images = {size: test_image(size, size) for size in sizes}
        photos = {}
        for size, image in images.items():
            photos[size] = folder / f"photo_{size}.png"
            Image.fromarray(image).save(photos[size])
        large = None
        if args.large:
            width, height = (int(side) for side in args.large.lower().split("x"))
            large = folder / "large.png"
            Image.fromarray(test_image(height, width)).save(large)
        rows = []
        for isolated in (False, True):
            server = serve(site, isolated)
            try:
                url = f"http://127.0.0.1:{server.server_address[1]}/"
                rows.append(
                    chromium_run(
                        args.chromium, url, photos, args.repeats, None if isolated else large
                    )
                )
            finally:
                server.shutdown()
                server.server_close()
        threads = sorted({1, min(4, cores)})
        onnx_rows = {n: python_onnx(onnx_path, images, n, args.repeats) for n in threads}
        jax_row = python_jax(path, images, args.repeats)
        model_bytes = onnx_path.stat().st_size

    load_after = os.getloadavg()
    size_columns = " | ".join(f"{size} px" for size in sizes)
    print(f"# Stylizing in the browser ({datetime.date.today().isoformat()})\n")
    print(f"    python benchmarks/browser.py {' '.join(sys.argv[1:])}".rstrip() + "\n")
    print(
        f"Model: {args.model or f'random TransformerNet, pad {args.pad}'}, {args.dtype} ONNX "
        f"file of {model_bytes / 1e6:.1f} MB. Machine: {platform.machine()}, {cores} cores, load "
        f"average {load_before[0]:.1f} before and {load_after[0]:.1f} after. "
        f"{chromium_version(args.chromium)} headless, onnxruntime-web {web.runtime_version()}, "
        f"onnxruntime {version('onnxruntime')}, jax {version('jax')}. Square images, median "
        f"of {args.repeats} (ms per image, the model's run):\n"
    )
    print(f"| engine | {size_columns} |")
    print(f"|---|{'---:|' * len(sizes)}")
    for record, isolated in zip(rows, (False, True), strict=True):
        where = "cross-origin isolated" if isolated else "not isolated"
        cells = " | ".join(f"{record[f'network_{size}']:.0f}" for size in sizes)
        print(f"| Chromium, {record['backend']} ({where}) | {cells} |")
    for n, medians in onnx_rows.items():
        cells = " | ".join(f"{medians[size]:.0f}" for size in sizes)
        print(f"| onnxruntime {version('onnxruntime')} (Python), {n} thread(s) | {cells} |")
    cells = " | ".join(f"{jax_row[size]:.0f}" for size in sizes)
    print(f"| JAX engine (stylize.py, float32, CPU) | {cells} |")
    dashes = " | ".join("–" for _ in sizes)
    print(f"| Chromium, WebGPU (not measurable here: no GPU adapter) | {dashes} |\n")
    print("In the page (ms): load to the style list; the first photo (model download, runtime")
    print("start, first run; empty cache); later photos in all (decode, run, PNG encode):\n")
    memory_columns = " | ".join(f"peak MB, {size} px" for size in sizes)
    print(
        f"| Chromium | page load | first photo ({min(sizes)} px) | {size_columns} | "
        f"{memory_columns} |"
    )
    print(f"|---|---:|---:|{'---:|' * 2 * len(sizes)}")
    for record, isolated in zip(rows, (False, True), strict=True):
        where = "cross-origin isolated" if isolated else "not isolated"
        cells = " | ".join(f"{record[f'total_{size}']:.0f}" for size in sizes)
        peaks = " | ".join(f"{record[f'peak_{size}'] / 1e6:.0f}" for size in sizes)
        print(
            f"| {record['backend']} ({where}) | {record['page_load_ms']:.0f} | "
            f"{record['first_photo_ms']:.0f} | {cells} | {peaks} |"
        )
    if args.large:
        record = rows[0]
        width, height = (int(side) for side in args.large.lower().split("x"))
        print(
            f"\nA {args.large} photo ({width * height / 1e6:.1f} MP), tiled (1024x1024 px whole at "
            f"most, 512 px tiles, exact statistics), {record['backend']}: "
            f"{record['large_ms'] / 1000:.0f} s in all, Chromium's peak resident memory "
            f"{record['large_peak'] / 1e6:.0f} MB (all its processes)."
        )


if __name__ == "__main__":
    main()
