"""Test clips for the temporal-consistency measurements, made from a real photo.

The offline data has no video, so the clips are camera moves over one photo, with what a
camera and a codec add to every frame:

  * `pan.mp4`: a window of the output's aspect ratio (75% of the largest that fits) glides
    diagonally across the photo, --pan-speed output pixels per frame on average (2), with
    a smooth start and stop (cosine ease): sub-pixel steps of varying speed, ~3 px per
    frame at the fastest.
  * `zoom.mp4`: a window centred on the photo shrinks from the largest that fits to 60% of
    that size at a constant rate per frame (geometric): a zoom-in, motion growing from 0 at
    the centre to ~2 px per frame at the corners.

Each frame is resampled bilinearly from the photo (PIL's affine transform: sub-pixel
positions), gets Gaussian pixel noise (--noise, standard deviation in grey levels) and one
JPEG round trip at a quality drawn per frame from --jpeg-quality (75-85 by default: the
blocking and ringing change from frame to frame as in compressed footage), and the clip is
written by the project's video writer (`fnst_jax.video.write_video`, H.264). The noise and
the JPEG qualities come from --seed: the same flags give the same frames.

    python benchmarks/make_clips.py --output-dir /tmp/clips
    python benchmarks/make_clips.py --output-dir /tmp/clips --frames 64 --size 320x240 \
        --photo ../shared/data/photos/bsd_108005.jpg --seed 0 --overwrite

Existing clips are kept unless --overwrite. The output lists each clip with its frame count,
size and mean motion per frame (from the camera path, in output pixels).
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))  # run as a script from anywhere

from fnst_jax import image_io, video  # noqa: E402
from fnst_jax.errors import UserError  # noqa: E402

PHOTOS = REPOSITORY.parent / "shared" / "data" / "photos"
DEFAULT_PHOTO = PHOTOS / "bsd_108005.jpg"  # a tiger in a forest: fine texture, flat shade
CLIPS = ("pan", "zoom")
WINDOW_FRACTION = 0.75  # the pan's window, as a fraction of the largest that fits
ZOOM_END = 0.6  # the zoom's last window, as a fraction of its first


# A camera: frame index -> (left, top, width, height) of the window in photo pixels.
Camera = Callable[[int], tuple[float, float, float, float]]


def largest_window(photo_size: tuple[int, int], aspect: float) -> tuple[float, float]:
    """(width, height) of the largest window of `aspect` (width / height) inside the photo."""
    width, height = photo_size
    return (width, width / aspect) if width / height <= aspect else (height * aspect, height)


def pan_camera(
    photo_size: tuple[int, int], aspect: float, frames: int, output_width: int, speed: float
) -> Camera:
    """A straight pan along the diagonal of the free space around the window, centred in
    the photo, covering `speed` output pixels per frame on average (less if the photo is
    too small for that), eased in and out."""
    width, height = largest_window(photo_size, aspect)
    width, height = width * WINDOW_FRACTION, height * WINDOW_FRACTION
    free_x, free_y = photo_size[0] - width, photo_size[1] - height
    free = math.hypot(free_x, free_y)
    travel = min(free, speed * (frames - 1) * width / output_width)  # photo pixels
    step_x, step_y = free_x / free * travel, free_y / free * travel
    start_x, start_y = (free_x - step_x) / 2, (free_y - step_y) / 2

    def window(index: int) -> tuple[float, float, float, float]:
        progress = 0.5 - 0.5 * math.cos(math.pi * index / max(frames - 1, 1))  # eased 0..1
        return start_x + step_x * progress, start_y + step_y * progress, width, height

    return window


def zoom_camera(photo_size: tuple[int, int], aspect: float, frames: int) -> Camera:
    first_width, first_height = largest_window(photo_size, aspect)
    # Stay a hair inside the photo: bilinear sampling at the very edge would need a pixel
    # beyond it.
    first_width, first_height = first_width - 1, first_height - 1
    centre_x, centre_y = photo_size[0] / 2, photo_size[1] / 2

    def window(index: int) -> tuple[float, float, float, float]:
        scale = ZOOM_END ** (index / max(frames - 1, 1))
        width, height = first_width * scale, first_height * scale
        return centre_x - width / 2, centre_y - height / 2, width, height

    return window


def render(
    photo: Image.Image, window: tuple[float, float, float, float], size: tuple[int, int]
) -> np.ndarray:
    """The window resampled to `size` (width, height), bilinear, at sub-pixel positions."""
    left, top, width, height = window
    scale_x, scale_y = width / size[0], height / size[1]
    # PIL maps each output pixel centre (x + 0.5, y + 0.5) through (a, b, c, d, e, f) to the
    # input position (a x + b y + c, d x + e y + f), in pixel-edge coordinates.
    coefficients = (scale_x, 0.0, left, 0.0, scale_y, top)
    frame = photo.transform(size, Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR)
    return np.asarray(frame)


def degrade(
    frame: np.ndarray, rng: np.random.Generator, noise: float, qualities: tuple[int, int]
) -> np.ndarray:
    """Gaussian pixel noise, then one JPEG round trip at a quality drawn from `qualities`."""
    noisy = frame.astype(np.float32) + rng.normal(0.0, noise, frame.shape).astype(np.float32)
    buffer = io.BytesIO()
    quality = int(rng.integers(qualities[0], qualities[1] + 1))
    Image.fromarray(image_io.to_uint8(noisy)).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


def clip_frames(
    photo: Image.Image, camera: Camera, args: argparse.Namespace, seed: int
) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    for index in range(args.frames):
        yield degrade(render(photo, camera(index), args.size), rng, args.noise, args.jpeg_quality)


def mean_motion(camera: Camera, frames: int, size: tuple[int, int]) -> float:
    """Mean displacement per frame of the output's corner pixels (output pixels): a pan
    moves every pixel alike, a zoom the corners the most."""
    corners = [(0, 0), (size[0], 0), (0, size[1]), (size[0], size[1])]
    steps = []
    for index in range(1, frames):
        before, after = camera(index - 1), camera(index)
        for x, y in corners:
            # Photo position of the output point (x, y) in the earlier frame ...
            photo_x = before[0] + x * before[2] / size[0]
            photo_y = before[1] + y * before[3] / size[1]
            # ... and where that photo point lands in the later frame.
            later_x = (photo_x - after[0]) * size[0] / after[2]
            later_y = (photo_y - after[1]) * size[1] / after[3]
            steps.append(math.hypot(later_x - x, later_y - y))
    return float(np.mean(steps)) if steps else 0.0


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if width < 16 or height < 16:
        raise argparse.ArgumentTypeError(f"frames must be at least 16x16, got {text!r}")
    return width, height


def parse_qualities(text: str) -> tuple[int, int]:
    try:
        low, high = (int(part) for part in text.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH (e.g. 75-85), got {text!r}") from None
    if not 1 <= low <= high <= 100:
        raise argparse.ArgumentTypeError(
            f"JPEG qualities must satisfy 1 <= LOW <= HIGH <= 100: {text!r}"
        )
    return low, high


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", required=True, type=Path, help="folder for the clips")
    parser.add_argument("--photo", type=Path, default=DEFAULT_PHOTO, help="the photo to film")
    parser.add_argument("--frames", type=int, default=64, help="frames per clip (default 64)")
    parser.add_argument("--size", type=parse_size, default=(320, 240), help="WIDTHxHEIGHT")
    parser.add_argument("--fps", type=float, default=24.0, help="frame rate (default 24)")
    parser.add_argument("--pan-speed", type=float, default=2.0, help="output px per frame")
    parser.add_argument("--noise", type=float, default=2.0, help="pixel noise std, grey levels")
    parser.add_argument(
        "--jpeg-quality",
        type=parse_qualities,
        default=(75, 85),
        help="per-frame JPEG quality range",
    )
    parser.add_argument("--seed", type=int, default=0, help="noise and JPEG quality draws")
    parser.add_argument("--clips", nargs="+", choices=CLIPS, default=list(CLIPS))
    parser.add_argument("--overwrite", action="store_true", help="replace existing clips")
    args = parser.parse_args()
    if args.frames < 2:
        parser.error("--frames must be at least 2")
    if args.pan_speed <= 0:
        parser.error("--pan-speed must be positive")
    if args.noise < 0:
        parser.error("--noise must be >= 0")

    try:
        photo = Image.fromarray(image_io.read_image(args.photo).rgb)
        outputs = {name: args.output_dir / f"{name}.mp4" for name in args.clips}
        existing = [str(path) for path in outputs.values() if path.exists()]
        if existing and not args.overwrite:
            raise UserError(f"{', '.join(existing)}: already exists (pass --overwrite to replace)")
        aspect = args.size[0] / args.size[1]
        cameras = {
            "pan": lambda: pan_camera(
                photo.size, aspect, args.frames, args.size[0], args.pan_speed
            ),
            "zoom": lambda: zoom_camera(photo.size, aspect, args.frames),
        }
        info = video.VideoInfo(size=args.size, fps=args.fps, num_frames=args.frames)
        for offset, (name, path) in enumerate(outputs.items()):
            camera = cameras[name]()
            frames = clip_frames(photo, camera, args, seed=args.seed * len(CLIPS) + offset)
            count = video.write_video(path, frames, info, quality=95)
            motion = mean_motion(camera, args.frames, args.size)
            print(
                f"{path}: {count} frames, {args.size[0]}x{args.size[1]} at {args.fps:g} fps, "
                f"from {args.photo.name}; mean motion {motion:.2f} px/frame"
            )
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
