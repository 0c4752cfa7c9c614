"""Stylize images, folders and videos with an exported TransformerNet.

Where things happen:
  * `engine.py`: `Stylizer`, the one forward pass: uint8 images in, uint8 images out
    (`stylize`, `stylize_batch`), with masked instance norm, bucketing and batching. The
    command line, an HTTP service and export checks all call it.
  * `tiling.py`: images above `max_pixels`, in overlapping tiles normalised with the whole
    image's statistics and blended smoothly.
  * `inputs.py`: files, folders and globs -> jobs (source, destination); output naming,
    what is refused or skipped, the single-file `--output` checks.
  * `run.py`: the image and video runs (decode/encode in threads around the network,
    progress, the summary).
  * `cli.py`: the flags of `python stylize.py` and `main(argv) -> exit status`.
  * `arrays.py`: numpy helpers they share (size rounding, reflection padding, resizing).
"""

from fnst_jax.stylize.engine import Stylizer

__all__ = ["Stylizer"]
