"""Tiled against untiled stylization: pixel difference, time and peak memory.

Stylizes one image (enlarged by --upscale) untiled, then in tiles with exact whole-image
statistics (stylize.py's default) and with approximate ones (statistics of a shrunk copy),
each in its own process so its peak memory (RSS) is its own, and prints for each mode the
wall time, the peak RSS and the absolute difference of the uint8 result from the untiled
one (mean, 99th percentile, max on 0..255).

    python benchmarks/tiling_error.py --model runs/mosaic --upscale 2 --tile 512 \
        ../shared/data/photos/bsd_101085.jpg
    # a size untiled cannot run in this memory: time and memory of the tiled modes only
    python benchmarks/tiling_error.py --model runs/mosaic --upscale 12.5 --modes exact \
        ../shared/data/photos/bsd_101085.jpg
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODES = ("untiled", "exact", "approximate")


def load_image(path: str, upscale: float) -> np.ndarray:
    from fnst_jax import image_io

    rgb = image_io.read_image(path).rgb
    return image_io.resize_shorter_side(rgb, round(min(rgb.shape[:2]) * upscale))


def run_mode(args: argparse.Namespace) -> None:
    """Worker: stylize in one mode, save the float result, print time and peak RSS."""
    from fnst_jax.stylize import Stylizer

    image = load_image(args.image, args.upscale)
    pixels = image.shape[0] * image.shape[1]
    options = (
        {"max_pixels": pixels}
        if args.worker == "untiled"
        else {
            "max_pixels": args.tile * args.tile,
            "tile": args.tile,
            "tile_statistics": args.worker,
        }
    )
    stylizer = Stylizer.from_model_file(args.model, **options)
    started = time.perf_counter()
    result = stylizer.stylize_float(image)
    seconds = time.perf_counter() - started
    np.save(args.result, result)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB
    print(json.dumps({"seconds": seconds, "peak_rss_bytes": peak, "shape": image.shape[:2]}))


def difference(a: np.ndarray, b: np.ndarray) -> str:
    from fnst_jax.image_io import to_uint8

    d = np.abs(to_uint8(a).astype(int) - to_uint8(b).astype(int))
    return f"mean {d.mean():6.3f}  p99 {np.percentile(d, 99):5.1f}  max {d.max():4d}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--upscale", type=float, default=2.0, help="enlarge the image first")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("image")
    args = parser.parse_args()
    if args.worker:
        run_mode(args)
        return
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for mode in args.modes.split(","):
            result_path = Path(scratch) / f"{mode}.npy"
            command = [sys.executable, __file__, "--worker", mode, "--result", str(result_path)]
            command += ["--model", args.model, "--upscale", str(args.upscale)]
            command += ["--tile", str(args.tile), args.image]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            report = json.loads(output.strip().splitlines()[-1])
            results[mode] = (report, np.load(result_path))
    height, width = next(iter(results.values()))[0]["shape"]
    print(f"{args.image} at {width}x{height}, tile {args.tile}:")
    untiled = results.get("untiled", (None, None))[1]
    for mode, (report, result) in results.items():
        line = (
            f"  {mode:<12} {report['seconds']:8.1f} s   peak RSS "
            f"{report['peak_rss_bytes'] / 2**30:5.2f} GiB"
        )
        if untiled is not None and mode != "untiled":
            line += f"   vs untiled: {difference(result, untiled)}"
        print(line)


if __name__ == "__main__":
    main()
