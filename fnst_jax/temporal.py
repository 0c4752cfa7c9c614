"""Temporal consistency of a video: optical flow, occlusions, warping, the warping error.

How stable is a stylized video? The standard answer (Lai et al. 2018, "Learning Blind Video
Temporal Consistency") is the warping error: follow every pixel of frame t back to frame
t-1 along the optical flow of the *input* video, and measure how much the stylized video
changed along that path, on the pixels that are visible in both frames:

    E(t) = mean over visible pixels p of || V_t(p) - V_{t-1}(p + w(p)) ||^2

with V in [0, 1], the norm over the three colour channels (summed, as Lai et al. do: divide
by 3 for a per-channel figure), w the backward flow from input frame t to t-1, and the
warped frame sampled bilinearly. A video's warping error is the mean of E(t) over its frame
pairs; `warping_mae` is the same with the L1 norm. The input video scored the same way is
the floor a stylized video can be compared with: it is what the flow, the occlusion mask and
the codec leave even for a video that changes only by its motion.

  * `FlowEstimator`: DIS optical flow (OpenCV, `cv2.DISOpticalFlow`) between two frames,
    on grayscale, in both directions, and the visible mask of the backward warp: the
    forward-backward consistency test of Sundaram et al. 2010 / Ruder et al. 2016,
    |w_b + w_f(p + w_b)|^2 < 0.01 (|w_b|^2 + |w_f(p + w_b)|^2) + 0.5, and p + w_b inside
    the previous frame.
  * `warp`: backward warping with `cv2.remap` (bilinear).
  * `pair_errors`: E(t) (squared and absolute) of one frame pair.
  * `WarpingErrors`: scores several videos against one input video, frame by frame, with
    one flow per input frame pair (the model's output, the input itself, other files);
    `score_videos` drives it over whole iterables.
  * `blend` / `TemporalBlender`: the stylize-time option (`stylize.py --temporal-blend`):
    each stylized frame mixed with the flow-warped previous output on visible pixels.

OpenCV is the `video` extra (`pip install 'fnst_jax[video]'`), imported on first use.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import ModuleType

import numpy as np

from fnst_jax import image_io
from fnst_jax.errors import UserError

# DIS presets (OpenCV's names). "medium": 4 px patches, a finer pyramid than "fast" and
# variational refinement at every level; at 320x240 it takes a few ms per flow, and it
# recovers sub-pixel pans and zooms of photos to ~0.05 px (tests/test_temporal.py).
DIS_PRESETS = ("ultrafast", "fast", "medium")
DEFAULT_PRESET = "medium"
# The forward-backward consistency test (Sundaram et al. 2010; Ruder et al. 2016).
CONSISTENCY_RELATIVE = 0.01
CONSISTENCY_ABSOLUTE = 0.5  # px^2


class MissingOpenCVError(UserError, ImportError):
    """Optical flow needs OpenCV, the `video` extra."""


class VideoMismatchError(UserError, ValueError):
    """A video that cannot be compared with the input frame by frame (size, frame count)."""


def opencv() -> ModuleType:
    """The cv2 module, or MissingOpenCVError saying how to install it."""
    try:
        import cv2
    except ImportError as e:
        raise MissingOpenCVError(
            "optical flow needs OpenCV: pip install 'fnst_jax[video]' "
            f"(opencv-python-headless) ({e})"
        ) from None
    return cv2


@dataclasses.dataclass(frozen=True)
class FramePairFlow:
    """From input frame t to frame t-1: for each pixel p of frame t, `backward[p]` (dx, dy)
    is where it was in frame t-1 (p + backward[p]); `visible[p]` whether that position
    passed the consistency test and lies inside frame t-1."""

    backward: np.ndarray  # (H, W, 2) float32
    visible: np.ndarray  # (H, W) bool

    @property
    def visible_fraction(self) -> float:
        return float(self.visible.mean())


def _sampling_map(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The absolute positions p + flow(p) (x and y maps for cv2.remap)."""
    height, width = flow.shape[:2]
    x, y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return x + flow[..., 0], y + flow[..., 1]


def warp(image: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """`image` (frame t-1) warped onto frame t: out[p] = image[p + backward[p]], bilinear,
    float32. Positions outside the image take the nearest edge pixel (they are not visible
    anyway)."""
    cv2 = opencv()
    map_x, map_y = _sampling_map(backward)
    return cv2.remap(
        np.asarray(image, np.float32),
        map_x,
        map_y,
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def visible_mask(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """Pixels of frame t whose backward flow is confirmed by the forward flow of frame t-1
    at the position it points to, and which point inside frame t-1 (see module docstring)."""
    height, width = backward.shape[:2]
    map_x, map_y = _sampling_map(backward)
    forward_there = warp(forward, backward)
    round_trip = np.sum((backward + forward_there) ** 2, axis=-1)
    lengths = np.sum(backward**2, axis=-1) + np.sum(forward_there**2, axis=-1)
    consistent = round_trip < CONSISTENCY_RELATIVE * lengths + CONSISTENCY_ABSOLUTE
    inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
    return consistent & inside


class FlowEstimator:
    """DIS optical flow between consecutive input frames, with the visible mask."""

    def __init__(self, preset: str = DEFAULT_PRESET):
        if preset not in DIS_PRESETS:
            raise ValueError(f"DIS preset must be one of {DIS_PRESETS}, not {preset!r}")
        cv2 = opencv()
        self.preset = preset
        self._cv2 = cv2
        self._dis = cv2.DISOpticalFlow_create(
            getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{preset.upper()}")
        )

    def flow(self, source: np.ndarray, target: np.ndarray) -> np.ndarray:
        """(H, W, 2) float32: pixel p of `source` is at p + flow[p] in `target` (uint8 RGB)."""
        for frame in (source, target):
            image_io.check_rgb_image(frame)
        gray = [self._cv2.cvtColor(f, self._cv2.COLOR_RGB2GRAY) for f in (source, target)]
        return self._dis.calc(gray[0], gray[1], None)

    def __call__(self, previous: np.ndarray, current: np.ndarray) -> FramePairFlow:
        """The flow from `current` (frame t) back to `previous` (frame t-1) and its mask."""
        if previous.shape != current.shape:
            raise VideoMismatchError(
                f"frames of different sizes: {previous.shape[:2]} and {current.shape[:2]}"
            )
        backward = self.flow(current, previous)
        forward = self.flow(previous, current)
        return FramePairFlow(backward, visible_mask(backward, forward))


def pair_errors(
    previous: np.ndarray, current: np.ndarray, pair: FramePairFlow
) -> tuple[float, float]:
    """E(t) of one frame pair, (squared, absolute): frames on the 0..255 scale (uint8 or
    float), measured in [0, 1], norms over RGB, mean over visible pixels. (nan, nan) when
    no pixel is visible (a scene cut): the pair says nothing about stability."""
    if not pair.visible.any():
        return math.nan, math.nan
    difference = (np.asarray(current, np.float32) - warp(previous, pair.backward)) / 255.0
    difference = difference[pair.visible]
    squared = float(np.mean(np.sum(difference**2, axis=-1)))
    absolute = float(np.mean(np.sum(np.abs(difference), axis=-1)))
    return squared, absolute


def blend(
    previous_output: np.ndarray, current: np.ndarray, pair: FramePairFlow, alpha: float
) -> np.ndarray:
    """(1 - alpha) * current + alpha * warp(previous_output) on the visible pixels, current
    elsewhere (float32, 0..255 scale). alpha = 0 returns `current` unchanged."""
    current = np.asarray(current, np.float32)
    if alpha == 0:
        return current
    warped = warp(previous_output, pair.backward)
    mixed = (1 - alpha) * current + alpha * warped
    return np.where(pair.visible[..., None], mixed, current)


class TemporalBlender:
    """`stylize.py --temporal-blend ALPHA`: call it with each input frame and its stylized
    frame, in order; it returns the output frame (uint8), the stylized frame blended with
    the previous output warped along the input's flow. The first frame passes unchanged.
    alpha near 1 freezes the picture (and drags ghosts along), hence 0 < alpha < 1."""

    def __init__(self, alpha: float, preset: str = DEFAULT_PRESET):
        if not 0 < alpha < 1:
            raise ValueError(f"temporal blend alpha must be in (0, 1), got {alpha}")
        self.alpha = alpha
        self.flows = FlowEstimator(preset)
        self._previous: tuple[np.ndarray, np.ndarray] | None = None  # (input, output)

    def __call__(
        self, input_frame: np.ndarray, stylized: np.ndarray, pair: FramePairFlow | None = None
    ) -> np.ndarray:
        """pair: the flow from this input frame to the previous one, if already computed."""
        output = stylized
        if self._previous is not None:
            previous_input, previous_output = self._previous
            if pair is None:
                pair = self.flows(previous_input, input_frame)
            mixed = blend(previous_output, stylized, pair, self.alpha)
            output = image_io.to_uint8(mixed)
        self._previous = (input_frame, output)
        return output


@dataclasses.dataclass
class VideoScore:
    """One video's warping errors, per frame pair (frame t against t-1, t = 1, 2, ...)."""

    label: str
    squared: list[float] = dataclasses.field(default_factory=list)
    absolute: list[float] = dataclasses.field(default_factory=list)

    @property
    def warping_error(self) -> float:
        """Mean E(t), squared (Lai et al.'s figure); nan without any scorable pair."""
        return _mean(self.squared)

    @property
    def warping_mae(self) -> float:
        return _mean(self.absolute)


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


class WarpingErrors:
    """Several videos scored against one input video, one frame index at a time, with one
    flow per input frame pair:

        scores = WarpingErrors(["input", "stylized"])
        for frame, styled in zip(input_frames, stylized_frames):
            scores.next_input(frame)        # the flow to the previous input frame
            scores.add("input", frame)      # the floor
            scores.add("stylized", styled)
        scores.scores["stylized"].warping_error

    Every video must have the input's frame size (VideoMismatchError naming the label).
    """

    def __init__(self, labels: Iterable[str], preset: str = DEFAULT_PRESET):
        self.flows = FlowEstimator(preset)
        self.scores = {label: VideoScore(label) for label in labels}
        self.visible_fractions: list[float] = []  # per frame pair
        self.pair: FramePairFlow | None = None  # the current frame's flow (None at frame 0)
        self._input: np.ndarray | None = None
        self._previous: dict[str, np.ndarray] = {}
        self.frames = 0

    def next_input(self, frame: np.ndarray) -> FramePairFlow | None:
        """Move to the next frame index: the flow from `frame` back to the previous input
        frame (None for the first)."""
        image_io.check_rgb_image(frame)
        if self._input is not None and frame.shape != self._input.shape:
            raise VideoMismatchError(
                f"input frame {self.frames} is {frame.shape[1]}x{frame.shape[0]}, the earlier "
                f"ones {self._input.shape[1]}x{self._input.shape[0]}"
            )
        self.pair = None if self._input is None else self.flows(self._input, frame)
        if self.pair is not None:
            self.visible_fractions.append(self.pair.visible_fraction)
        self._input = frame
        self.frames += 1
        return self.pair

    def add(self, label: str, frame: np.ndarray) -> None:
        """Video `label`'s frame at the current index (after `next_input`)."""
        if self._input is None:
            raise RuntimeError("WarpingErrors.add before the first next_input")
        frame = np.asarray(frame)
        if frame.shape != self._input.shape:
            raise VideoMismatchError(
                f"{label}: frame {self.frames - 1} has shape {frame.shape}, the input's frames "
                f"{self._input.shape} ({self._input.shape[1]}x{self._input.shape[0]} RGB)"
            )
        if self.pair is not None:
            squared, absolute = pair_errors(self._previous[label], frame, self.pair)
            self.scores[label].squared.append(squared)
            self.scores[label].absolute.append(absolute)
        self._previous[label] = frame

    def drop(self, label: str) -> VideoScore:
        """Stop scoring video `label` (it failed); returns what it had."""
        self._previous.pop(label, None)
        return self.scores.pop(label)


def score_videos(
    input_frames: Iterable[np.ndarray],
    videos: Mapping[str, Iterable[np.ndarray]],
    preset: str = DEFAULT_PRESET,
) -> tuple[dict[str, VideoScore], list[float]]:
    """Warping errors of `videos` (label -> frames) against the flow of `input_frames`,
    streamed frame by frame; returns (score per label, visible fraction per frame pair).
    Every video must have as many frames as the input and its frame size
    (VideoMismatchError naming the label)."""
    scorer = WarpingErrors(videos, preset)
    iterators: dict[str, Iterator[np.ndarray]] = {label: iter(v) for label, v in videos.items()}
    for input_frame in input_frames:
        scorer.next_input(input_frame)
        for label, frames in iterators.items():
            frame = next(frames, None)
            if frame is None:
                raise VideoMismatchError(
                    f"{label}: has {scorer.frames - 1} frames, the input has more"
                )
            scorer.add(label, frame)
    for label, frames in iterators.items():
        if next(frames, None) is not None:
            raise VideoMismatchError(f"{label}: has more frames than the input ({scorer.frames})")
    return scorer.scores, scorer.visible_fractions
