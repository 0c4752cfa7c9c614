"""How far is a tiled stylization from an untiled one of the same image?

Stylizes one image whole, then in overlapping tiles (each tile normalised with the whole
image's instance-norm statistics, as stylize.py does, and, for comparison, with its own),
and prints the absolute difference of the uint8 results (mean, 99th percentile, max).

    python benchmarks/tiling_error.py --model runs/mosaic --upscale 2 \
        ../shared/data/photos/bsd_101085.jpg
"""

from __future__ import annotations

import argparse

import numpy as np

from fnst_jax import export, image_io
from fnst_jax.stylize import Stylizer


def difference(a: np.ndarray, b: np.ndarray) -> str:
    d = np.abs(image_io.to_uint8(a).astype(int) - image_io.to_uint8(b).astype(int))
    return f"mean {d.mean():6.2f}   p99 {np.percentile(d, 99):5.1f}   max {d.max():4d}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--upscale", type=float, default=2.0, help="enlarge the image first")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("image")
    args = parser.parse_args()

    model, meta = export.load_model(args.model)
    rgb = image_io.read_image(args.image).rgb
    size = round(min(rgb.shape[:2]) * args.upscale)
    image = image_io.read_rgb_resized(args.image, size)
    pad = int(meta.get("pad", 0))
    whole = Stylizer(model, pad=pad, max_pixels=image.shape[0] * image.shape[1] * 4)
    untiled = whole.stylize_float(image)
    tiled = Stylizer(
        model, pad=pad, max_pixels=args.tile * args.tile, tile=args.tile, overlap=args.overlap
    )
    print(
        f"{args.image} at {image.shape[1]}x{image.shape[0]}, pad {pad}, tile {args.tile}, "
        f"overlap {args.overlap}; |tiled - untiled| on 0..255:"
    )
    with_image_statistics = tiled.stylize_float(image)
    print(f"  whole-image statistics (stylize.py):  {difference(with_image_statistics, untiled)}")
    tiled.image_statistics = lambda image: None  # each tile normalised with its own statistics
    with_tile_statistics = tiled.stylize_float(image)
    print(f"  per-tile statistics:                  {difference(with_tile_statistics, untiled)}")


if __name__ == "__main__":
    main()
