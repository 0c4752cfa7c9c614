"""Does the article's reflection padding remove the dark band along the borders?

Stylizes images with a trained model at several pads (the network sees the image
reflect-padded by `pad` px, the pad is cropped off afterwards) and prints, per pad, how much
darker the outer band of the result is than the band just inside it (luminance, 0..255;
the inputs' own value is printed for reference), averaged over the images.

    python benchmarks/border_artifacts.py --model runs/mosaic --pads 0,10,20,40 \
        $(cat runs/mosaic/validation_images.txt)
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from fnst_jax import export, image_io
from fnst_jax.transformer_net import stylize_padded

LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def border_darkening(image: np.ndarray, band: int) -> float:
    """Mean luminance of the `band`-px inner ring minus that of the outer `band`-px ring."""
    luma = image @ LUMA
    h, w = luma.shape
    outer = np.ones_like(luma, bool)
    outer[band:-band, band:-band] = False
    inner = np.zeros_like(luma, bool)
    inner[band : h - band, band : w - band] = True
    inner[2 * band : h - 2 * band, 2 * band : w - 2 * band] = False
    return float(luma[inner].mean() - luma[outer].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--pads", default="0,10,20,40")
    parser.add_argument("--band", type=int, default=4, help="ring width in px")
    parser.add_argument("--size", type=int, default=256, help="shorter side of the inputs")
    parser.add_argument("images", nargs="+")
    args = parser.parse_args()

    model, meta = export.load_model(args.model)
    run = jax.jit(stylize_padded, static_argnums=2)
    images = [image_io.read_rgb_resized(path, args.size) for path in args.images]
    print(f"model {args.model} (trained with pad {meta.get('pad')}), {len(images)} images")
    print(f"{'pad':>5}  {'border darkening (luma, 0..255)':>32}")
    inputs = np.mean([border_darkening(image.astype(np.float32), args.band) for image in images])
    print(f"{'input':>5}  {inputs:>32.2f}")
    for pad in (int(p) for p in args.pads.split(",")):
        values = []
        for image in images:
            out = run(model, jnp.asarray(image[None], jnp.float32), pad)
            out = np.clip(np.asarray(out[0]), 0, 255)
            values.append(border_darkening(out, args.band))
        print(f"{pad:>5}  {np.mean(values):>32.2f}")


if __name__ == "__main__":
    main()
