"""Video in and out (`fnst_jax.video`): frame rate, size and frame count survive a round
trip, GIFs keep per-frame durations and loop count, broken files are user errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image
from stylize_helpers import gif_durations, natural_image, write_test_gif, write_test_video

from fnst_jax import video
from fnst_jax.errors import UserError


def test_mp4_round_trip_keeps_rate_size_and_frames(tmp_path):
    clip = tmp_path / "clip.mp4"
    write_test_video(clip, frames=6, size=(64, 48), fps=12)
    info, frames = video.read_video(clip)
    assert info.fps == pytest.approx(12) and info.size == (64, 48)
    frames = list(frames)
    assert len(frames) == 6 and frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8
    copy = tmp_path / "copy.mp4"
    assert video.write_video(copy, frames, info) == 6
    copy_info, copy_frames = video.read_video(copy)
    assert copy_info.fps == pytest.approx(12) and copy_info.size == (64, 48)
    assert len(list(copy_frames)) == 6


def test_odd_sizes_are_padded_to_even(tmp_path):
    frames = [natural_image(31, 17, seed=i) for i in range(2)]
    info = video.VideoInfo(size=(17, 31), fps=10.0, num_frames=2)
    path = tmp_path / "odd.mp4"
    assert video.write_video(path, frames, info) == 2
    assert video.read_video(path)[0].size == (18, 32)


def test_gif_keeps_durations_and_loop(tmp_path):
    gif = write_test_gif(tmp_path / "anim.gif")  # 3 frames of 30x40, 50/120/200 ms, loop 0
    info, decoded = video.read_video(gif)
    assert (info.durations_ms, info.loop, info.size) == ([50, 120, 200], 0, (30, 40))
    out = tmp_path / "out.gif"
    assert video.write_video(out, decoded, info) == 3
    with Image.open(out) as animation:
        assert gif_durations(animation) == [50, 120, 200] and animation.info.get("loop") == 0


def test_broken_videos_raise_a_user_error(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    for path in (broken, tmp_path / "missing.mp4"):
        with pytest.raises(video.VideoReadError, match=path.name) as caught:
            video.read_video(path)
        assert isinstance(caught.value, UserError) and isinstance(caught.value, ValueError)
