"""Video in and out (`fnst_jax.video`): frame rate, size and frame count survive a round
trip, GIFs keep per-frame durations and loop count, audio is carried over, broken files
are user errors, ffmpeg stops when reading stops, and no fork warning once JAX runs."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import imageio_ffmpeg
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


def _clip_with_audio(path, seconds=1.0, size=(64, 48), fps=12):
    """A test pattern with a sine tone (AAC), made by ffmpeg itself."""
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc=size={size[0]}x{size[1]}:rate={fps}:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=duration={seconds}",
         "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)],
        check=True,
    )  # fmt: skip
    return path


def test_audio_is_detected_and_copied(tmp_path):
    clip = _clip_with_audio(tmp_path / "talk.mp4")
    info, frames = video.read_video(clip)
    assert info.has_audio and info.size == (64, 48) and info.fps == pytest.approx(12)
    frames = list(frames)
    assert len(frames) == 12
    with_audio, without = tmp_path / "with.mp4", tmp_path / "without.mp4"
    assert video.write_video(with_audio, frames, info, audio_from=clip) == 12
    assert video.write_video(without, frames, info) == 12
    assert video.read_video(with_audio)[0].has_audio
    assert not video.read_video(without)[0].has_audio


def test_the_decoded_size_is_the_output_streams(tmp_path):
    """ffmpeg rotates phone videos upright: the frames have the output stream's size."""
    log = (
        "Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'phone.mp4':\n"
        "  Duration: 00:00:02.50, start: 0.000000, bitrate: 900 kb/s\n"
        "  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(tv, "
        "bt709, progressive), 1920x1080, 800 kb/s, 29.97 fps, 29.97 tbr, 90k tbn (default)\n"
        "      Side data:\n        displaymatrix: rotation of -90.00 degrees\n"
        "  Stream #0:1[0x2](und): Audio: aac (LC) (mp4a / 0x6134706D), 48000 Hz, stereo\n"
        "Output #0, rawvideo, to 'pipe:1':\n"
        "  Stream #0:0(und): Video: rawvideo (RGB[24] / 0x18424752), rgb24(pc, gbr/bt709/"
        "bt709, progressive), 1080x1920, q=2-31, 1491 kb/s, 29.97 fps, 29.97 tbn (default)\n"
    )
    header = video._parse_header(log)
    assert header == video._Header(size=(1080, 1920), fps=29.97, duration=2.5, has_audio=True)
    assert video._parse_header(log.split("Output #0")[0]) is None  # ffmpeg failed: no output


def test_closing_the_frames_early_stops_ffmpeg(tmp_path, monkeypatch):
    clip = tmp_path / "clip.mp4"
    write_test_video(clip, frames=30)
    started = []
    start = video._start_ffmpeg
    monkeypatch.setattr(
        video, "_start_ffmpeg", lambda *a, **k: started.append(start(*a, **k)) or started[-1]
    )
    _, frames = video.read_video(clip)
    next(frames)
    frames.close()
    _, dropped = video.read_video(clip)  # never iterated, then dropped
    del dropped
    gc.collect()
    assert len(started) == 2 and all(process.poll() is not None for process in started)


def test_an_encoder_failure_names_ffmpegs_reason_and_leaves_nothing(tmp_path):
    silent = tmp_path / "silent.mp4"
    write_test_video(silent, frames=2)
    frames = [natural_image(48, 64, seed=i) for i in range(2)]
    info = video.VideoInfo(size=(64, 48), fps=10.0, num_frames=2)
    out = tmp_path / "out" / "clip.mp4"
    with pytest.raises(OSError, match="ffmpeg: .*(matches no streams|Invalid argument)"):
        video.write_video(out, frames, info, audio_from=silent)  # it has no audio track
    assert list(out.parent.iterdir()) == []


FORK_CHECK = """
import sys
import jax.numpy as jnp
from fnst_jax import video

print(float(jnp.arange(8.0).sum()))  # JAX has started its threads
info, frames = video.read_video(sys.argv[1])
assert video.write_video(sys.argv[2], frames, info) == 3
"""


def test_no_fork_warning_after_jax_started(tmp_path):
    """ffmpeg starts without running the interpreter's at-fork handlers, where JAX warns
    that os.fork() "will likely lead to a deadlock"."""
    clip = tmp_path / "clip.mp4"
    write_test_video(clip, frames=3)
    result = subprocess.run(
        [sys.executable, "-c", FORK_CHECK, str(clip), str(tmp_path / "copy.mp4")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "28.0"
    assert "fork" not in result.stderr, result.stderr
    assert video.read_video(tmp_path / "copy.mp4")[0].size == (64, 48)
