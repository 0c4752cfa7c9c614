"""Inputs to jobs (`fnst_jax.stylize.inputs`): folder and glob expansion, output naming,
refused and skipped outputs, the single-file `--output` checks. No network here."""

from __future__ import annotations

from pathlib import Path

from stylize_helpers import natural_image, save

from fnst_jax.stylize import inputs
from fnst_jax.stylize.reporter import Reporter


def make_tree(root: Path) -> None:
    save(root / "a.jpg", natural_image(8, 8))
    save(root / "deep" / "sub" / "b.png", natural_image(8, 8))
    save(root / "deep" / "c.webp", natural_image(8, 8))
    save(root / ".hidden" / "d.png", natural_image(8, 8))
    (root / "notes.txt").write_text("ignored when searching folders")
    (root / "clip.mp4").write_bytes(b"only the name matters here")


def relative(found):
    return [(source.name, rel.as_posix()) for source, rel in found]


def test_folders_and_globs_keep_subfolders_and_skip_hidden(tmp_path):
    make_tree(tmp_path / "photos")
    reporter = Reporter(quiet=True)
    found = inputs.expand_inputs([str(tmp_path / "photos")], reporter)
    assert relative(found) == [
        ("a.jpg", "a.jpg"),
        ("clip.mp4", "clip.mp4"),
        ("c.webp", "deep/c.webp"),
        ("b.png", "deep/sub/b.png"),
    ]
    pattern = str(tmp_path / "photos" / "deep" / "**" / "*.png")
    assert relative(inputs.expand_inputs([pattern], reporter)) == [("b.png", "sub/b.png")]
    assert reporter.failed == 0


def test_bad_arguments_are_reported(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    reporter = Reporter(quiet=True)
    arguments = ["empty", "notes.txt", "nothing*.png", "missing.jpg"]
    found = inputs.expand_inputs([str(tmp_path / a) for a in arguments], reporter)
    assert found == [] and reporter.failed == 4


def test_the_output_folder_is_not_searched(tmp_path):
    make_tree(tmp_path)
    reporter = Reporter(quiet=True)
    found = inputs.expand_inputs([str(tmp_path)], reporter, exclude=(tmp_path / "deep").resolve())
    assert relative(found) == [("a.jpg", "a.jpg"), ("clip.mp4", "clip.mp4")]


def test_output_names_formats_and_skips(tmp_path):
    make_tree(tmp_path / "in")
    reporter = Reporter(quiet=True)
    found = inputs.expand_inputs([str(tmp_path / "in")], reporter)
    out = tmp_path / "out"
    save(out / "deep" / "c_x.webp", natural_image(8, 8))  # exists: skipped
    options = inputs.Options(suffix="_x")
    jobs = inputs.plan_jobs(found, out, False, options, reporter)
    assert [(j.destination.relative_to(out).as_posix(), j.kind) for j in jobs] == [
        ("a_x.jpg", "image"),
        ("clip_x.mp4", "video"),
        ("deep/sub/b_x.png", "image"),
    ]
    assert (reporter.skipped, reporter.failed) == (1, 0)
    # --format applies to images only; --overwrite keeps the existing output in the plan.
    options = inputs.Options(suffix="", format="png", overwrite=True)
    jobs = inputs.plan_jobs(found, out, False, options, reporter)
    assert [j.destination.name for j in jobs] == ["a.png", "clip.mp4", "c.png", "b.png"]


def test_inputs_and_collisions_are_refused(tmp_path):
    first = save(tmp_path / "a" / "x.png", natural_image(8, 8))
    second = save(tmp_path / "b" / "x.jpg", natural_image(8, 8))
    reporter = Reporter(quiet=True)
    found = [(first, Path("x.png")), (second, Path("x.jpg"))]
    options = inputs.Options(suffix="", format="png", overwrite=True)
    jobs = inputs.plan_jobs(found, tmp_path / "a", False, options, reporter)
    # x.png would overwrite its own input; x.jpg -> x.png is then that input too.
    assert jobs == [] and reporter.failed == 2
    reporter = Reporter(quiet=True)
    jobs = inputs.plan_jobs(found, tmp_path / "out", False, options, reporter)
    assert [j.source for j in jobs] == [first] and reporter.failed == 1  # both -> out/x.png


def test_single_file_output_checks(tmp_path):
    image, clip = tmp_path / "x.png", tmp_path / "clip.mp4"
    assert inputs.is_single_file_output(tmp_path / "one.jpg")
    assert not inputs.is_single_file_output(tmp_path / "folder")
    one = [(image, Path("x.png"))]
    assert inputs.single_file_problem(tmp_path / "o.jpg", one, ["x.png"], None) is None
    assert "2 input argument(s)" in inputs.single_file_problem(
        tmp_path / "o.jpg", one, ["x.png", "y.png"], None
    )
    assert "cannot write x.png to a .mp4" in inputs.single_file_problem(
        tmp_path / "o.mp4", one, ["x.png"], None
    )
    assert "cannot write .bmp images" in inputs.single_file_problem(
        tmp_path / "o.bmp", one, ["x.png"], None
    )
    assert "disagrees" in inputs.single_file_problem(tmp_path / "o.jpg", one, ["x.png"], "png")
    video = [(clip, Path("clip.mp4"))]
    assert inputs.single_file_problem(tmp_path / "o.webm", video, ["clip.mp4"], None) is None


def test_names_and_sizes(tmp_path):
    (tmp_path / "runs" / "mosaic").mkdir(parents=True)
    assert inputs.model_name(str(tmp_path / "runs" / "mosaic")) == "mosaic"
    assert inputs.model_name(str(tmp_path / "runs" / "mosaic" / "model.npz")) == "mosaic"
    assert inputs.model_name(str(tmp_path / "runs" / "mosaic" / "best.npz")) == "mosaic-best"
    assert inputs.model_name("candy.npz") == "candy"
    assert inputs.target_size(40, 30, inputs.Options(size=20)) == (20, 15)
    assert inputs.target_size(40, 30, inputs.Options(scale=0.5)) == (20, 15)
    assert inputs.target_size(40, 30, inputs.Options()) == (40, 30)
