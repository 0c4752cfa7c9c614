"""`python stylize.py` end to end (`fnst_jax.stylize.cli.main`): flags, both spellings,
naming, single-file outputs, overwrite rules, exit statuses, the real entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from stylize_helpers import (
    natural_image,
    run,
    save,
    save_multi_style_test_model,
    save_test_model,
)

from fnst_jax import brightness
from fnst_jax.stylize import cli
from fnst_jax.stylize.engine import Stylizer

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return save_test_model(tmp_path_factory.mktemp("model") / "candy.npz")


def test_sizes_odd_shapes_and_folder_recursion(model_path, tmp_path, capsys):
    photos = tmp_path / "photos"
    save(photos / "a.jpg", natural_image(31, 17))  # odd, portrait
    save(photos / "deep" / "sub" / "b.png", natural_image(20, 45, seed=1))
    save(photos / "deep" / "c.webp", natural_image(48, 48, seed=2))
    (photos / "notes.txt").write_text("not an image, ignored when searching folders")
    out = tmp_path / "out"
    assert run(model_path, out, photos) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "a_candy.jpg",
        "deep/c_candy.webp",
        "deep/sub/b_candy.png",
    ]
    assert Image.open(out / "a_candy.jpg").size == (17, 31)
    assert Image.open(out / "deep/sub/b_candy.png").size == (45, 20)
    assert Image.open(out / "deep/c_candy.webp").size == (48, 48)
    assert "stylized 3 of 3 inputs" in capsys.readouterr().err


def test_size_scale_format_and_single_file_output(model_path, tmp_path):
    source = save(tmp_path / "in.png", natural_image(40, 30))
    out = tmp_path / "out"
    assert run(model_path, out, source, extra=["--size=20", "--format=jpg", "--suffix=_s"]) == 0
    assert Image.open(out / "in_s.jpg").size == (15, 20)
    single = tmp_path / "one.png"
    assert run(model_path, single, source, extra=["--scale=0.5"]) == 0
    assert Image.open(single).size == (15, 20)
    # A file name as --output with two inputs is a usage error.
    assert run(model_path, tmp_path / "two.png", source, source) == 2


def test_both_spellings_of_multi_word_flags(model_path, tmp_path):
    source = save(tmp_path / "in.png", natural_image(24, 24))
    for index, spelling in enumerate(["--batch-size", "--batch_size"]):
        extra = [f"{spelling}=2", "--max_pixels=300000", "--preserve_color", f"--suffix=_{index}"]
        assert run(model_path, tmp_path / "out", source, extra=extra) == 0
    first, second = (np.asarray(Image.open(tmp_path / "out" / f"in_{i}.png")) for i in (0, 1))
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--size=10", "--scale=0.5"], "--size or --scale"),
        (["--tile-stats=shrunk"], "tile-stats"),
        (["--tile=16"], "--tile"),
        (["--quality=0"], "--quality"),
        (["--batch-size=0"], "--batch-size"),
        (["--no-such-flag"], "no-such-flag"),
        (["--dtype=float16"], "dtype"),
    ],
)
def test_usage_errors_exit_2(model_path, tmp_path, capsys, extra, message):
    source = save(tmp_path / "in.png", natural_image(8, 8))
    assert run(model_path, tmp_path / "out", source, extra=extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_missing_model_output_or_inputs_exit_2(model_path, tmp_path, capsys):
    assert cli.main(["stylize.py", f"--output={tmp_path}", "x.png"]) == 2
    assert "--model is required" in capsys.readouterr().err
    assert cli.main(["stylize.py", f"--model={model_path}", "x.png"]) == 2
    assert "--output is required" in capsys.readouterr().err
    assert cli.main(["stylize.py", f"--model={model_path}", f"--output={tmp_path}"]) == 2
    assert "no inputs given" in capsys.readouterr().err


def test_help_lists_the_documented_flags(capsys):
    assert cli.main(["stylize.py", "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("Stylize images, folders and videos")
    for name in ("--max-pixels", "--batch-size", "--preserve-color", "--tile", "--bucket"):
        assert name in text
    assert "Alias for" not in text


def test_existing_outputs_and_inputs_are_never_overwritten(model_path, tmp_path, capsys):
    source = save(tmp_path / "in" / "x.png", natural_image(24, 24))
    out = tmp_path / "out"
    assert run(model_path, out, source) == 0
    target = out / "x_candy.png"
    target.write_bytes(b"sentinel")
    capsys.readouterr()
    assert run(model_path, out, source) == 0  # skipping is not a failure
    captured = capsys.readouterr().err
    assert "skipped:" in captured and "1 skipped: exists" in captured
    assert target.read_bytes() == b"sentinel"
    assert run(model_path, out, source, extra=["--overwrite"]) == 0
    assert Image.open(target).size == (24, 24)
    # Output path == input path: refused even with --overwrite.
    before = source.read_bytes()
    code = run(model_path, source.parent, source, extra=["--suffix=", "--overwrite"])
    assert code == 1
    assert "it is an input file" in capsys.readouterr().err
    assert source.read_bytes() == before


@pytest.mark.parametrize(
    "content, reason",
    [(None, "not found"), (b"garbage", "not an fnst_jax model"), ("foreign", "no __fnst_meta__")],
)
def test_bad_model_exits_2(tmp_path, capsys, content, reason):
    model = tmp_path / "model.npz"
    if content == "foreign":
        np.savez(model, weights=np.zeros(3))
    elif content is not None:
        model.write_bytes(content)
    source = save(tmp_path / "x.png", natural_image(8, 8))
    assert run(model, tmp_path / "out", source) == 2
    err = capsys.readouterr().err
    assert reason in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_real_entry_point_exit_codes(model_path, tmp_path):
    source = save(tmp_path / "x.png", natural_image(24, 24))
    env = dict(os.environ, FNST_JAX_CACHE=str(tmp_path / "cache"))
    env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
    command = [sys.executable, str(REPO / "stylize.py"), f"--model={model_path}"]
    result = subprocess.run(
        [*command, f"--output={tmp_path / 'out'}", str(source), str(tmp_path / "nope.png")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    assert "error: " in result.stderr and "nope.png" in result.stderr
    assert "stylized 1 of 2 inputs (1 failed)" in result.stderr
    assert (tmp_path / "out" / "x_candy.png").is_file()
    assert (tmp_path / "cache" / "jax_cache").is_dir()


def test_multi_style_model_styles_mixes_and_all(tmp_path, capsys):
    """--style NAME, --style all (one output per style, named after it) and --style-mix on a
    2-style model; each output is the engine's in that style (the photo's brightness kept);
    no choice lists the styles."""
    model = save_multi_style_test_model(tmp_path / "duo.npz")
    image = natural_image(24, 20, seed=3)
    source = save(tmp_path / "in" / "photo.png", image)
    assert run(model, tmp_path / "all", source, extra=["--style=all"]) == 0
    outputs = sorted(p.name for p in (tmp_path / "all").iterdir())
    assert outputs == ["photo_duo_dots.png", "photo_duo_waves.png"]
    assert run(model, tmp_path / "mix.png", source, extra=["--style-mix=dots:1,waves:3"]) == 0

    stylizer = Stylizer.from_model_file(model)
    assert stylizer.style_names == ["dots", "waves"]
    for name, style in [("dots", 0), ("waves", 1)]:
        with Image.open(tmp_path / "all" / f"photo_duo_{name}.png") as written:
            expected = brightness.keep(stylizer.with_style(style).stylize(image), image)
            np.testing.assert_array_equal(np.asarray(written), expected)
    with Image.open(tmp_path / "mix.png") as written:
        mixed = np.asarray(written)
    expected = brightness.keep(stylizer.with_style([0.25, 0.75]).stylize(image), image)
    np.testing.assert_array_equal(mixed, expected)
    dots = np.asarray(Image.open(tmp_path / "all" / "photo_duo_dots.png"), float)
    assert np.abs(dots - mixed).mean() > 1  # the styles differ

    assert run(model, tmp_path / "none", source) == 2
    err = capsys.readouterr().err
    assert "the model has 2 styles" in err and "dots, waves" in err
    assert run(model, tmp_path / "one.png", source, extra=["--style=all"]) == 2
    assert "give a folder" in capsys.readouterr().err
    assert not (tmp_path / "none").exists() and not (tmp_path / "one.png").exists()
