"""onnxruntime (CPU) against the JAX engine: stylize time, memory and agreement per size.

Each (engine, size) runs in its own process, so its peak memory (RSS) is its own: it loads
the engine `stylize.py` would use (`Stylizer.from_model_file` for the .npz, `OnnxStylizer`
for the .onnx exports), stylizes one square image once untimed (JAX compiles there), then
`--repeats` more times, timed one by one. It prints, per engine and size: median seconds per
image, images/s, the first call (JAX: compile), peak RSS and RSS growth over the process's
baseline, and for the ONNX engines the largest difference from the JAX output (float, and
uint8 levels after rounding). The machine's load average is printed before and after (the
figures are only comparable on a quiet machine).

    python benchmarks/onnx_vs_jax.py --model runs/mosaic --sizes 256,512,1024 --repeats 5,3,2
    # without --model: a random TransformerNet with the default 40 px training pad
    python benchmarks/onnx_vs_jax.py --sizes 256,512,1024 --repeats 5,3,2
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import host  # benchmarks/host.py, beside this script
import numpy as np

ENGINES = ("jax", "onnx", "onnx-float16")


def rss_bytes() -> int:
    """Current resident set size (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def test_image(size: int) -> np.ndarray:
    """A square photo-like uint8 image (colour gradients and noise; content does not change
    the cost). Made here, not imported, so the ONNX workers never import JAX."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    image = np.stack(
        [128 + 90 * np.sin(x / 7), 128 + 90 * np.cos(y / 9), 128 + 60 * np.sin((x + y) / 11)],
        axis=-1,
    )
    return np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)


def worker(args: argparse.Namespace) -> None:
    """Time one engine at one size; save its float output; print a JSON record."""
    image = test_image(args.size)
    baseline = rss_bytes()
    if args.worker == "jax":
        from fnst_jax.stylize import Stylizer

        stylizer = Stylizer.from_model_file(args.model)
    else:
        from fnst_jax.stylize.onnx_engine import OnnxStylizer

        stylizer = OnnxStylizer(args.onnx)
    started = time.perf_counter()
    output = stylizer.stylize_float(image)
    first = time.perf_counter() - started
    times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        stylizer.stylize_float(image)
        times.append(time.perf_counter() - started)
    np.save(args.result, output)
    assert args.worker == "jax" or "jax" not in sys.modules, "an ONNX worker imported JAX"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB
    median = statistics.median(times)
    record = {
        "engine": args.worker,
        "size": args.size,
        "median_s": median,
        "min_s": min(times),
        "max_s": max(times),
        "images_per_s": 1 / median,
        "first_call_s": first,
        "peak_rss_bytes": peak,
        "rss_growth_bytes": peak - baseline,
    }
    print(json.dumps(record))


def prepare_models(args: argparse.Namespace, folder: Path) -> tuple[str, dict[str, Path]]:
    """The .npz model (given, or a random one with a 40 px pad) and its ONNX exports."""
    from fnst_jax import export, model_file
    from fnst_jax.deploy import onnx_graph

    if args.model:
        model_path = str(model_file.resolve_model_path(args.model))
    else:
        model_path = str(export.save_untrained_model(folder / "random.npz", {"pad": 40}))
    model, metadata = export.load_model(model_path)
    pad = int(metadata.get("pad") or 0)
    properties = {"pad": str(pad), "fnst_jax_version": "benchmark"}
    onnx_files = {}
    for engine, dtype in (("onnx", "float32"), ("onnx-float16", "float16")):
        onnx_files[engine] = folder / f"{engine}.onnx"
        data = onnx_graph.serialize(model, pad, properties, dtype=dtype)
        onnx_files[engine].write_bytes(data)
    return model_path, onnx_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="training workdir or .npz (default: a random model)")
    parser.add_argument("--sizes", default="256,512,1024")
    parser.add_argument("--repeats", default="5,3,2", help="timed calls per size")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--onnx", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.repeats = int(args.repeats)
        worker(args)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    repeats = [int(r) for r in args.repeats.split(",")]
    repeats += [repeats[-1]] * (len(sizes) - len(repeats))
    engines = args.engines.split(",")
    print(f"load average before: {host.load_average()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model_path, onnx_files = prepare_models(args, folder)
        columns = "size|engine|median s|min-max s|images/s|first call s|peak RSS|RSS growth"
        print(f"| {columns.replace('|', ' | ')} | max diff vs JAX | levels |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
        for size, count in zip(sizes, repeats, strict=True):
            outputs = {}
            for engine in engines:
                result = folder / f"{engine}_{size}.npy"
                command = [
                    *(sys.executable, __file__, "--worker", engine, "--size", str(size)),
                    *("--repeats", str(count), "--model", model_path, "--result", str(result)),
                    *("--onnx", str(onnx_files.get(engine, ""))),
                ]
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    print(f"| {size} | {engine} | failed: {done.stderr.strip()[-300:]} |")
                    continue
                record = json.loads(done.stdout.strip().splitlines()[-1])
                outputs[engine] = np.load(result)
                difference, levels = "", ""
                if engine != "jax" and "jax" in outputs:
                    delta = np.abs(outputs[engine] - outputs["jax"])
                    difference = f"{delta.max():.2g}"
                    rounded = [
                        np.clip(np.rint(o), 0, 255) for o in (outputs[engine], outputs["jax"])
                    ]
                    levels = f"{int(np.abs(rounded[0] - rounded[1]).max())}/255"
                print(
                    f"| {size} | {engine} | {record['median_s']:.3f} | {record['min_s']:.3f}-"
                    f"{record['max_s']:.3f} | {record['images_per_s']:.2f} | "
                    f"{record['first_call_s']:.1f} | {record['peak_rss_bytes'] / 1e9:.2f} GB | "
                    f"{record['rss_growth_bytes'] / 1e9:.2f} GB | {difference} | {levels} |",
                    flush=True,
                )
    print(f"load average after: {host.load_average()}")


if __name__ == "__main__":
    main()
