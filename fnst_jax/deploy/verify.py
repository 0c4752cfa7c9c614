"""The check every exported file passes before it is left on disk.

The file itself is loaded back (onnxruntime for ONNX, `jax.export.deserialize` for
StableHLO) and run on a batch of two images (a photo-like gradient with noise, and uniform
noise) at each of a few sizes (`DEFAULT_SIZES`: a square, an odd size that is no multiple of
4, a landscape one). Both outputs are compared with the JAX forward,
`transformer_net.stylize_padded(model, images, pad)`: rounded to uint8 (`image_io.to_uint8`),
no pixel may differ by more than `MAX_LEVEL_DIFFERENCE` (1 on the 0..255 scale; a float
difference of any size can move a value across a rounding boundary, so 0 is not a bound any
float reimplementation can promise). `require_agreement` turns a failed check into a
`VerificationError`; the exporter then removes the file it was writing.

An ONNX file is also checked tiled (`verify_tiling`): its tiling functions run through
`OnnxStylizer` and `stylize.tiling`, on a photo-like image cut into 2 x 2 tiles (each with its
context and box), once with exact statistics (`tile_forward`'s layer passes) and once
normalised with the image's own statistics as `norm_moments` measures them (what approximate
statistics measure on a shrunk copy); both must give the untiled JAX forward within the same
bound. A file with a style input (a multi-style model exported with `--style-input`) is
checked in every style (each size's two images in two of them) and in a mix (`verify`); it
has no tiling functions.

Measured (random test model with outputs spanning 0..255, and the 400-step quick-start model
trained on the real photos, sizes as above): float32 ONNX and StableHLO differ from the JAX
forward by at most 0.001 on the 0..255 scale, tiled float32 ONNX by 0.0005, float16 ONNX by
up to 0.37 (one level after rounding on about 5% of the values;
docs/experiments/export_accuracy.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from fnst_jax import image_io
from fnst_jax.deploy import FLOAT_OUTPUT_NAME, INPUT_NAME, OUTPUT_NAME, STYLE_INPUT_NAME
from fnst_jax.errors import UserError
from fnst_jax.transformer_net import TransformerNet, stylize_padded

# (height, width) of the check batches: square, odd (no multiple of 4), landscape.
DEFAULT_SIZES = ((64, 64), (53, 37), (171, 256))
# (height, width) of the tiled check's image (2 x 2 tiles; any training pad).
TILING_SIZE = (61, 46)
MAX_LEVEL_DIFFERENCE = 1

# A loaded exported file: uint8 (N, H, W, 3) [, style weights float32 (N, num_styles) for a
# file with a style input] -> (uint8 output, float32 output).
Runner = Callable[..., tuple[np.ndarray, np.ndarray]]


class VerificationError(UserError, RuntimeError):
    """An exported file that does not compute what the JAX model computes."""


@dataclasses.dataclass(frozen=True)
class Check:
    """One size's comparison of an exported file with the JAX forward."""

    height: int
    width: int
    batch: int
    max_float_difference: float  # on the 0..255 scale, unrounded outputs
    max_level_difference: int  # after rounding to uint8, either output
    differing_fraction: float  # of the uint8 values, not equal to the reference's
    what: str = ""  # which path of the file, when not its graph

    @property
    def passed(self) -> bool:
        return self.max_level_difference <= MAX_LEVEL_DIFFERENCE

    def describe(self) -> str:
        what = f"{self.what} " if self.what else ""
        return (
            f"{what}{self.width}x{self.height} (batch {self.batch}): max difference "
            f"{self.max_float_difference:.2g}, {self.max_level_difference}/255 after rounding "
            f"({100 * self.differing_fraction:.2g}% of values off by one or more)"
        )


def check_images(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(2, height, width, 3) uint8: a smooth colour gradient with noise, and uniform noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    gradient = np.stack(
        [128 + 90 * np.sin(x / 7), 128 + 90 * np.cos(y / 9), 128 + 60 * np.sin((x + y) / 11)],
        axis=-1,
    )
    photo_like = np.clip(gradient + rng.normal(0, 8, gradient.shape), 0, 255).astype(np.uint8)
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return np.stack([photo_like, noise])


def reference_function(model: TransformerNet, pad: int) -> Callable[..., np.ndarray]:
    """The JAX forward, jitted: uint8 (N, H, W, 3) [, style weights (N, num_styles), rows
    summing to 1] -> float32 `stylize_padded` output."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state: nnx.State, images: jax.Array, style: jax.Array | None) -> jax.Array:
        return stylize_padded(nnx.merge(graphdef, state), images, pad, style)

    return lambda images, style=None: np.asarray(forward(state, images, style))


def compare(
    images: np.ndarray, outputs: tuple[np.ndarray, np.ndarray], expected: np.ndarray
) -> Check:
    """A file's (uint8, float32) outputs for `images` against the reference float output."""
    levels, raw = (np.asarray(output) for output in outputs)
    if levels.shape != images.shape or raw.shape != images.shape:
        raise VerificationError(
            f"output shapes {levels.shape} and {raw.shape} for input shape {images.shape}"
        )
    wanted = image_io.to_uint8(expected).astype(np.int32)
    level_differences = np.maximum(
        np.abs(levels.astype(np.int32) - wanted),
        np.abs(image_io.to_uint8(raw).astype(np.int32) - wanted),
    )
    return Check(
        height=images.shape[1],
        width=images.shape[2],
        batch=images.shape[0],
        max_float_difference=float(np.max(np.abs(raw.astype(np.float32) - expected))),
        max_level_difference=int(level_differences.max()),
        differing_fraction=float(np.mean(level_differences > 0)),
    )


def verify(
    runner: Runner,
    model: TransformerNet,
    pad: int,
    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
) -> list[Check]:
    """Run the loaded file and the JAX forward on `check_images` of every (height, width).
    A multi-style `model` (a file with a style input): the two images of each size in two
    different styles (the next two of the model's, in turn), and the first size once more in
    an even mix of every style, given as unnormalised weights (the file normalises them)."""
    reference = reference_function(model, pad)
    checks = []
    count = model.num_styles
    for index, (height, width) in enumerate(sizes):
        images = check_images(height, width)
        if count == 1:
            checks.append(compare(images, runner(images), reference(images)))
            continue
        chosen = [(2 * index + i) % count for i in range(len(images))]
        style = np.eye(count, dtype=np.float32)[chosen]
        check = compare(images, runner(images, style), reference(images, style))
        described = f"styles {', '.join(map(str, chosen))}"
        checks.append(dataclasses.replace(check, what=described))
    if count > 1:
        images = check_images(*sizes[0])
        weights = np.ones((len(images), count), np.float32)
        check = compare(images, runner(images, weights), reference(images, weights / count))
        checks.append(dataclasses.replace(check, what="an even mix of every style"))
    return checks


def verify_tiling(path: str | Path, model: TransformerNet, pad: int) -> list[Check]:
    """The ONNX file's tiling functions (see the module docstring) against the untiled JAX
    forward, on `check_images`' photo-like image of `TILING_SIZE`."""
    from fnst_jax.stylize import tiling
    from fnst_jax.stylize.arrays import network_input
    from fnst_jax.stylize.onnx_engine import OnnxStylizer

    height, width = TILING_SIZE
    image = check_images(height, width)[:1]
    expected = reference_function(model, pad)(image)
    rows, cols = network_input(image[0], pad)[0].shape[:2]
    # Tiles of about half the network input: 2 x 2 tiles, every one with a box edge.
    tile = -(-max(rows, cols) // 8) * 4
    stylizer = OnnxStylizer(path, max_pixels=min(height * width - 1, tile * tile), tile=tile)
    if not stylizer.needs_tiling(height, width):
        raise AssertionError("the tiled check's image is not tiled")
    checks = []
    for what, statistics in (
        ("tiled, exact statistics", None),
        ("tiled, measured statistics", stylizer.norm_statistics(image[0], pad)),
    ):
        raw = tiling.stylize_tiled(stylizer, image[0], statistics)[None]
        checks.append(
            dataclasses.replace(compare(image, (image_io.to_uint8(raw), raw), expected), what=what)
        )
    return checks


def require_agreement(checks: Sequence[Check], what: str) -> None:
    """VerificationError naming every size where `what` (the file) breaks the bound."""
    failed = [check for check in checks if not check.passed]
    if failed:
        raise VerificationError(
            f"{what} disagrees with the JAX model (allowed: {MAX_LEVEL_DIFFERENCE}/255 after "
            f"rounding) at {'; '.join(check.describe() for check in failed)}"
        )


def onnx_runner(path: str | Path) -> Runner:
    """The ONNX file at `path` in an onnxruntime CPU session."""
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types, unexported
        raise VerificationError(
            f"onnxruntime {onnxruntime.__version__} cannot load the exported file ({e}); "
            "try an older --opset"
        ) from e

    def run(images: np.ndarray, style: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        feeds = {INPUT_NAME: images}
        if style is not None:
            feeds[STYLE_INPUT_NAME] = style
        levels, raw = session.run([OUTPUT_NAME, FLOAT_OUTPUT_NAME], feeds)
        return levels, raw

    return run


def stablehlo_runner(path: str | Path) -> Runner:
    """The serialized program at `path`, deserialized and called as a user would."""
    exported = jax.export.deserialize(bytearray(Path(path).read_bytes()))

    def run(images: np.ndarray, style: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        outputs = exported.call(images) if style is None else exported.call(images, style)
        return np.asarray(outputs[OUTPUT_NAME]), np.asarray(outputs[FLOAT_OUTPUT_NAME])

    return run
