"""temporal: the flow is recovered and the warping error is ~0 for a video of exact shifts,
it grows with injected flicker, the occlusion mask catches a disoccluded region, the blend
is the identity at alpha 0 and steadies a flickering video, bad inputs are clear errors.

Frames are small (<= 160 px) textured images: DIS needs texture to find its flow.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from stylize_helpers import natural_image

from fnst_jax import temporal
from fnst_jax.errors import UserError

pytest.importorskip("cv2")

HEIGHT, WIDTH = 72, 96
STEP = (2, 1)  # (dx, dy) pixels per frame: the camera moves right and down


def textured(height: int, width: int, seed: int = 0) -> np.ndarray:
    """natural_image plus a coarse random texture: enough structure for DIS everywhere."""
    rng = np.random.default_rng(seed + 100)
    blocks = rng.integers(-50, 50, (height // 4 + 1, width // 4 + 1, 3))
    blocks = np.repeat(np.repeat(blocks, 4, axis=0), 4, axis=1)[:height, :width]
    return np.clip(natural_image(height, width, seed).astype(int) + blocks, 0, 255).astype(np.uint8)


def shifted_frames(count: int = 5) -> list[np.ndarray]:
    """Crops of one image, the window moving by STEP each frame: exact integer shifts."""
    scene = textured(HEIGHT + STEP[1] * count, WIDTH + STEP[0] * count)
    return [
        scene[i * STEP[1] : i * STEP[1] + HEIGHT, i * STEP[0] : i * STEP[0] + WIDTH].copy()
        for i in range(count)
    ]


def flickered(frames, amplitude: float, kind: str = "brightness") -> list[np.ndarray]:
    """Frames with per-frame brightness steps (+a, -a, +a, ...) or fresh noise of std a."""
    rng = np.random.default_rng(1)
    result = []
    for index, frame in enumerate(frames):
        if kind == "brightness":
            change = amplitude * (1 if index % 2 else -1)
        else:
            change = rng.normal(0, amplitude, frame.shape)
        result.append(np.clip(frame.astype(np.float64) + change, 0, 255).astype(np.uint8))
    return result


def test_warp_moves_pixels_along_the_backward_flow():
    """out[p] = image[p + flow[p]]: with a constant integer flow, an exact shift."""
    image = textured(HEIGHT, WIDTH).astype(np.float32)
    flow = np.zeros((HEIGHT, WIDTH, 2), np.float32)
    flow[..., 0], flow[..., 1] = 3, -2
    warped = temporal.warp(image, flow)
    np.testing.assert_array_equal(warped[2:, : WIDTH - 3], image[: HEIGHT - 2, 3:])


def test_exact_shifts_are_recovered_and_score_about_zero():
    frames = shifted_frames()
    pair = temporal.FlowEstimator()(frames[0], frames[1])
    # Pixel p of frame 1 shows the scene point that frame 0 shows at p + STEP.
    visible_flow = pair.backward[pair.visible]
    assert np.median(visible_flow, axis=0) == pytest.approx(STEP, abs=0.05)
    assert np.mean(np.abs(visible_flow - STEP).max(axis=1) < 0.25) > 0.95
    # Hidden: the strip that entered at the right and bottom edges (it maps outside frame 0)
    # and, within a pixel of it, positions a hair outside; nothing else.
    entering = np.zeros((HEIGHT, WIDTH), bool)
    entering[:, WIDTH - STEP[0] :] = entering[HEIGHT - STEP[1] :, :] = True
    assert not pair.visible[entering].any()
    near = np.zeros((HEIGHT, WIDTH), bool)
    near[:, WIDTH - STEP[0] - 1 :] = near[HEIGHT - STEP[1] - 1 :, :] = True
    assert np.mean(~pair.visible[~near]) < 0.005

    scores, visible = temporal.score_videos(frames, {"video": frames})
    assert len(scores["video"].squared) == len(frames) - 1 == len(visible)
    # ~0: a one-grey-level brightness step would already score 3 * (2/255)^2 = 1.8e-4.
    assert scores["video"].warping_error < 3e-5
    assert scores["video"].warping_mae < 1e-2


@pytest.mark.parametrize("kind", ["brightness", "noise"])
def test_warping_error_grows_with_flicker(kind):
    frames = shifted_frames()
    amplitudes = (0, 1, 2, 4, 8)
    videos = {str(a): flickered(frames, a, kind) if a else frames for a in amplitudes}
    scores, _ = temporal.score_videos(frames, videos)
    errors = [scores[str(a)].warping_error for a in amplitudes]
    assert errors == sorted(errors) and len(set(errors)) == len(errors), errors
    maes = [scores[str(a)].warping_mae for a in amplitudes]
    assert maes == sorted(maes), maes
    if kind == "brightness":
        # A step of 2a grey levels in all three channels: 3 (2a / 255)^2 (few pixels clip).
        assert errors[-1] == pytest.approx(3 * (16 / 255) ** 2, rel=0.1)


def test_occlusion_mask_catches_a_disoccluded_region():
    """A textured square moves 16 px right over a static background: the background it
    uncovers has no match in the previous frame and must be masked out."""
    height, width, side, shift, top, left = 128, 160, 48, 16, 40, 30
    background = textured(height, width, seed=1)
    square = textured(side, side, seed=5)[..., ::-1]

    def frame(x: int) -> np.ndarray:
        image = background.copy()
        image[top : top + side, x : x + side] = square
        return image

    previous, current = frame(left), frame(left + shift)
    pair = temporal.FlowEstimator()(previous, current)
    uncovered = np.zeros((height, width), bool)
    uncovered[top : top + side, left : left + shift] = True
    assert np.mean(~pair.visible[uncovered]) > 0.8
    assert np.mean(pair.visible[:, :20]) > 0.85 and np.mean(pair.visible[:, -20:]) > 0.85
    assert (
        np.mean(pair.visible[top + 4 : top + side - 4, left + shift + 4 : left + shift + side - 4])
        > 0.95
    )
    # Scored on the visible pixels only, the uncovered region no longer counts.
    masked, _ = temporal.pair_errors(previous, current, pair)
    everywhere = temporal.FramePairFlow(pair.backward, np.ones_like(pair.visible))
    unmasked, _ = temporal.pair_errors(previous, current, everywhere)
    assert masked < unmasked / 3


def test_a_pair_without_visible_pixels_is_left_out_of_the_mean():
    frames = shifted_frames(2)
    hidden = temporal.FramePairFlow(np.zeros((HEIGHT, WIDTH, 2), np.float32),
                                    np.zeros((HEIGHT, WIDTH), bool))  # fmt: skip
    assert all(math.isnan(v) for v in temporal.pair_errors(frames[0], frames[1], hidden))
    score = temporal.VideoScore("cut", squared=[1e-3, math.nan, 3e-3], absolute=[1, math.nan, 3])
    assert score.warping_error == pytest.approx(2e-3) and score.warping_mae == pytest.approx(2)


def test_blend_is_the_identity_at_zero_and_steadies_flicker():
    frames = shifted_frames(6)
    pair = temporal.FlowEstimator()(frames[0], frames[1])
    np.testing.assert_array_equal(temporal.blend(frames[0], frames[1], pair, 0.0), frames[1])
    mixed = temporal.blend(frames[0], frames[1], pair, 0.5)
    np.testing.assert_array_equal(mixed[~pair.visible], frames[1][~pair.visible])

    flickering = flickered(frames, 8)
    blender = temporal.TemporalBlender(0.5)
    blended = [blender(frame, styled) for frame, styled in zip(frames, flickering, strict=True)]
    np.testing.assert_array_equal(blended[0], flickering[0])  # nothing to blend with yet
    scores, _ = temporal.score_videos(frames, {"flicker": flickering, "blended": blended})
    assert scores["blended"].warping_error < scores["flicker"].warping_error / 2

    for alpha in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="alpha"):
            temporal.TemporalBlender(alpha)


def test_videos_that_do_not_match_the_input_are_named():
    frames = shifted_frames(4)
    with pytest.raises(temporal.VideoMismatchError, match="short.mp4: has 3 frames"):
        temporal.score_videos(frames, {"short.mp4": frames[:3]})
    with pytest.raises(temporal.VideoMismatchError, match="long.mp4: has more frames"):
        temporal.score_videos(frames, {"long.mp4": frames + frames[:1]})
    small = [frame[:-2] for frame in frames]
    with pytest.raises(temporal.VideoMismatchError, match="small.mp4: frame 0 has shape"):
        temporal.score_videos(frames, {"small.mp4": small})
    with pytest.raises(temporal.VideoMismatchError, match="input frame 1 is"):
        temporal.score_videos([frames[0], frames[1][:-2]], {})
    with pytest.raises(ValueError, match=r"uint8 \(H, W, 3\) RGB"):
        temporal.FlowEstimator()(frames[0].astype(np.float32), frames[1].astype(np.float32))
    with pytest.raises(ValueError, match="preset"):
        temporal.FlowEstimator("slowest")
    assert issubclass(temporal.VideoMismatchError, UserError)


def test_missing_opencv_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 -> ImportError
    with pytest.raises(temporal.MissingOpenCVError, match=r"pip install 'fnst_jax\[video\]'"):
        temporal.FlowEstimator()
    assert issubclass(temporal.MissingOpenCVError, UserError)
