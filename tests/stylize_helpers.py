"""Shared by the stylize, image_io and video tests: a test model whose outputs span 0..255,
photo-like test images and a tiny test video.

The model has random weights with the last layer scaled so outputs span 0..255 (an
untrained net outputs ~0 everywhere, which would make every comparison trivially pass).
Images stay <= 48 px so that, with the model's pad of 8 and 64-px buckets, nearly every
test runs the same compiled (1, 64, 64, 3) program.
"""

from __future__ import annotations

import io
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from flax import nnx
from PIL import Image

from fnst_jax import export
from fnst_jax.stylize import cli
from fnst_jax.transformer_net import InstanceNorm, TransformerNet

TEST_PAD = 8


def make_test_model(seed: int = 0) -> TransformerNet:
    model = TransformerNet(rngs=nnx.Rngs(seed))
    conv = model.out.conv
    conv.kernel[...] = conv.kernel[...] * 40.0  # output std ~40 ...
    conv.bias[...] = conv.bias[...] * 0 + 127.5  # ... around mid-grey
    return model


def save_test_model(path: Path) -> Path:
    """The test model as an exported model file named `path` (style name: its stem)."""
    export.save_model(path, make_test_model(), {"pad": TEST_PAD, "image_size": 64})
    return path


def save_multi_style_test_model(path: Path, names=("dots", "waves")) -> Path:
    """A multi-style test model (one style per name, norm rows that differ) as a model file
    whose metadata lists its styles."""
    model = TransformerNet(num_styles=len(names), rngs=nnx.Rngs(0))
    conv = model.out.conv
    conv.kernel[...] = conv.kernel[...] * 40.0
    conv.bias[...] = conv.bias[...] * 0 + 127.5
    rng = np.random.default_rng(0)
    for _, module in nnx.iter_modules(model):
        if isinstance(module, InstanceNorm):
            module.scale[...] = rng.uniform(0.3, 1.7, module.scale.shape).astype(np.float32)
            module.bias[...] = rng.normal(0, 0.5, module.bias.shape).astype(np.float32)
    styles = [{"name": name, "image": f"/styles/{name}.jpg", "thumbnail": ""} for name in names]
    export.save_model(path, model, {"pad": TEST_PAD, "image_size": 64, "styles": styles})
    return path


def natural_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients plus mild noise: more photo-like than pure noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack(
        [
            128 + 90 * np.sin(x / 7 + seed),
            128 + 90 * np.cos(y / 9),
            128 + 60 * np.sin((x + y) / 11),
        ],
        axis=-1,
    )
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def save(path: Path, image: np.ndarray | Image.Image, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = image if isinstance(image, Image.Image) else Image.fromarray(image)
    image.save(path, **kwargs)
    return path


def run(model_path: Path, output: Path, *inputs, extra=()) -> int:
    """`python stylize.py --model=MODEL --output=OUTPUT *extra *inputs`, in-process."""
    argv = ["stylize.py", f"--model={model_path}", f"--output={output}", *extra]
    return cli.main(argv + [str(i) for i in inputs])


def write_test_video(path: Path, frames: int = 6, size=(64, 48), fps: int = 12) -> None:
    writer = imageio_ffmpeg.write_frames(
        str(path), size, fps=fps, macro_block_size=1, ffmpeg_log_level="error"
    )
    writer.send(None)
    for index in range(frames):
        writer.send(natural_image(size[1], size[0], seed=index))
    writer.close()


def write_test_gif(path: Path, durations=(50, 120, 200), size=(30, 40)) -> Path:
    """An animated GIF, one frame per duration (ms), looping forever."""
    frames = [
        Image.fromarray(natural_image(size[1], size[0], seed=i)) for i in range(len(durations))
    ]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=list(durations), loop=0)
    return path


def gif_durations(animation: Image.Image) -> list[int]:
    """Each frame's display time (ms) of an open GIF."""
    durations = []
    for index in range(animation.n_frames):
        animation.seek(index)
        durations.append(animation.info["duration"])
    return durations


STYLE_JPEG = Path(__file__).resolve().parents[2] / "shared" / "data" / "styles" / "mosaic.jpg"


def style_thumbnail_jpeg() -> bytes:
    """A <= 128 px JPEG of the mosaic style (or of a generated image without the data)."""
    if STYLE_JPEG.is_file():
        image = Image.open(STYLE_JPEG).convert("RGB")
    else:
        image = Image.fromarray(natural_image(96, 96, seed=3))
    image.thumbnail((128, 128))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()
