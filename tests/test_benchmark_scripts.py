"""benchmarks/*.py: each script run once at a tiny size, its printed table (or written file)
checked.

Scripts are called in this process (`main()` with `sys.argv` set) where they are plain
functions, so JAX is imported once; those that start workers or a server of their own
(onnx_vs_jax, tiling_error, serve_load, data_throughput) run as subprocesses. The figures are
not checked (timings, random weights): the rows are, and that each holds numbers.
benchmarks/startup.py and gpu.sh's merge step have their own tests (test_bench_startup.py,
test_bench.py); gpu.sh itself needs an NVIDIA GPU.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPOSITORY = Path(__file__).resolve().parents[1]
BENCHMARKS = REPOSITORY / "benchmarks"
NUMBER = r"-?\d+(\.\d+)?"


def script(name: str, monkeypatch: pytest.MonkeyPatch, *argv: str):
    """benchmarks/NAME.py imported (its neighbours importable, as when run), `sys.argv` set."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *map(str, argv)])
    return importlib.import_module(name)


def run_script(name: str, *argv: str, timeout: float = 120) -> str:
    """benchmarks/NAME.py run as a subprocess: its stdout (fails the test on an error)."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{name}.py"), *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPOSITORY,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def write_photos(folder: Path, count: int, size: tuple[int, int] = (48, 40)) -> Path:
    """`count` random JPEGs (width x height `size`) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"photo_{index:02d}.jpg", quality=90)
    return folder


@pytest.fixture(scope="module")
def random_model_file(tmp_path_factory) -> Path:
    """A TransformerNet of random weights as a model file (pad 4): enough for the scripts that
    only stylize."""
    from fnst_jax import export

    return export.save_untrained_model(tmp_path_factory.mktemp("model") / "random.npz", {"pad": 4})


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory) -> Path:
    """A 2-step smoke training run (configs/smoke.py, random VGG, 32 px): model.npz, best.npz,
    metrics.jsonl with two validations, both checkpoints kept: what the quality scripts read."""
    import jax

    sys.path.insert(0, str(REPOSITORY))
    from configs import smoke
    from fnst_jax import train_lib

    folder = tmp_path_factory.mktemp("trained")
    style = folder / "style.jpg"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(style)
    config = smoke.get_config()
    config.style_image = str(style)
    config.train.steps = 2
    config.checkpoint_every = 1
    config.eval_every = 1
    config.sample_every = 2
    config.keep_checkpoints = 2
    workdir = folder / "run"
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        train_lib.train_and_evaluate(config, str(workdir))
    finally:
        jax.config.update("jax_disable_most_optimizations", previous)
    return workdir


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A training folder of 8 photos; 0.25 of it is held out (at least one photo)."""
    return write_photos(tmp_path_factory.mktemp("photos") / "photos", 8)


# --- scripts that only stylize a model file ----------------------------------------------------


@pytest.mark.slow
def test_border_artifacts_prints_a_row_per_pad(
    random_model_file, tmp_path, monkeypatch, capsys, fast_compile
):
    images = write_photos(tmp_path / "images", 2)
    module = script(
        "border_artifacts",
        monkeypatch,
        *("--model", random_model_file, "--pads", "0,4", "--size", "32", "--band", "2"),
        *sorted(images.iterdir()),
    )
    module.main()
    out = capsys.readouterr().out
    assert "2 images" in out
    for label in ("input", "0", "4"):
        assert re.search(rf"^\s*{label}\s+{NUMBER}$", out, re.MULTILINE), out


@pytest.mark.slow
def test_tiling_error_compares_tiled_with_untiled(random_model_file, tmp_path):
    (image,) = write_photos(tmp_path / "images", 1, size=(64, 32)).iterdir()
    out = run_script(
        "tiling_error",
        *("--model", random_model_file, "--upscale", "1", "--tile", "32"),
        *("--modes", "untiled,approximate", image),  # exact: 2.5x the CPU time
    )
    assert "at 64x32, tile 32:" in out
    assert re.search(r"^\s+untiled\s+\d", out, re.MULTILINE), out
    assert re.search(rf"^\s+approximate .* vs untiled: mean\s+{NUMBER}", out, re.M), out


@pytest.mark.slow
def test_onnx_vs_jax_prints_a_row_per_engine(random_model_file):
    pytest.importorskip("onnxruntime")
    out = run_script(
        "onnx_vs_jax",
        *("--model", random_model_file, "--sizes", "32", "--repeats", "1"),
        *("--engines", "jax,onnx"),
        timeout=240,
    )
    assert "| size | engine | median s |" in out
    assert re.search(r"^\| 32 \| jax \| \d", out, re.MULTILINE), out
    # The ONNX row holds its difference from JAX's output, in grey levels too.
    assert re.search(r"^\| 32 \| onnx \| \d.* \| \d+/255 \|$", out, re.MULTILINE), out


@pytest.mark.slow
def test_serve_load_prints_the_latency_table(random_model_file):
    pytest.importorskip("httpx")
    out = run_script(
        "serve_load",
        *("--model", random_model_file, "--requests", "2", "--sizes", "32"),
        *("--concurrency", "1", "--max-batch", "2", "--engine-repeats", "1"),
        timeout=300,
    )
    assert "| --max-batch | size (px) | clients | req/s |" in out
    for max_batch in (2, 1):  # the batching configuration, then batching off
        assert re.search(rf"^\| {max_batch} \| 32 \| 1 \| {NUMBER} \|", out, re.MULTILINE), out


# --- the quality scripts: a training workdir and held-out photos ------------------------------


@pytest.mark.slow
def test_recipe_measures_each_run_on_held_out_photos(
    trained_workdir, photos, tmp_path, monkeypatch, capsys
):
    report = tmp_path / "recipes.json"
    grid = tmp_path / "recipes.jpg"
    module = script(
        "recipe",
        monkeypatch,
        *(trained_workdir, "--model", "best", "--photos", photos, "--validation-fraction"),
        *("0.25", "--longest-side", "32", "--json", report, "--grid", grid),
    )
    module.main()
    out = capsys.readouterr().out
    held_out = module.held_out_files(str(photos), 0.25)
    assert f"{len(held_out)} held-out photos" in out
    assert re.search(rf"^{re.escape(str(trained_workdir))}\s+{NUMBER}x .*(PASS|FAIL)$", out, re.M)
    (run,) = json.loads(report.read_text())["runs"]
    assert run["model"].endswith("best.npz")
    assert [p["photo"] for p in run["photos"]] == [name for name, _ in held_out]
    assert Image.open(grid).size[1] > 0


@pytest.mark.slow
def test_own_size_scores_every_case_at_both_views(
    trained_workdir, photos, tmp_path, monkeypatch, capsys
):
    large = write_photos(tmp_path / "large", 2, size=(72, 54))
    report = tmp_path / "own.json"
    module = script(
        "own_size",
        monkeypatch,
        *(trained_workdir, "--large", large, "--photos", photos, "--validation-fraction", "0.25"),
        *("--upscales", "2", "--stroke-scales", "auto,1", "--json", report),
        *("--grid", tmp_path / "own.jpg"),
    )
    module.main()
    out = capsys.readouterr().out
    cases = ("large", "large@256", "held-out", "held-out x2")
    for stroke in ("auto bicubic", "1 bicubic"):
        for case in cases:
            row = (
                rf"^run\s+{re.escape(stroke)} {re.escape(case)}\s+{NUMBER}x\s+{NUMBER}\s+{NUMBER}x"
            )
            assert re.search(row, out, re.M), (stroke, case)
    results = json.loads(report.read_text())["results"]
    assert len(results) == 2 * len(cases)
    auto_large = results[0]
    assert auto_large["native_size"] == 32 and auto_large["case"] == "large"
    # auto: the 72x54 photos run at the native size (32 px longest side)
    assert [p["working"] for p in auto_large["photos"]] == [[32, 24], [32, 24]]
    assert {r["pass"] for r in results if r["case"] in ("large", "large@256")} <= {"PASS", "FAIL"}
    # rows: the 2 large photos and the first photo of each other case
    assert Image.open(tmp_path / "own.jpg").size[1] == 5 * module.GRID_HEIGHT


@pytest.mark.slow
def test_over_steps_reads_metrics_and_every_checkpoint(
    trained_workdir, photos, tmp_path, monkeypatch, capsys
):
    report = tmp_path / "steps.json"
    module = script(
        "over_steps",
        monkeypatch,
        *(trained_workdir, "--photos", photos, "--validation-fraction", "0.25"),
        *("--longest-side", "32", "--json", report),
    )
    module.main()
    out = capsys.readouterr().out
    from fnst_jax import checkpoint

    document = json.loads(report.read_text())
    logged = [r["step"] for r in document["validation"]]
    assert logged == [0, 1, 2]  # validation before the first step, then every step
    assert "<- best.npz" in out
    for step in logged:  # a row per validation
        assert re.search(rf"^\s+{step} +{NUMBER}", out, re.MULTILINE), out
    kept = checkpoint.checkpoint_steps(trained_workdir)
    assert kept and [row["step"] for row in document["models"]][: len(kept)] == kept
    for step in kept:  # a row per kept checkpoint, measured on the held-out photos
        assert re.search(rf"^\s+step {step}\s+{NUMBER}x", out, re.MULTILINE), out
    assert re.search(rf"best\.npz \({document['best_step']}\)\s+{NUMBER}x", out), out


@pytest.mark.slow
def test_multistyle_compares_a_model_with_itself(
    trained_workdir, photos, tmp_path, monkeypatch, capsys
):
    report = tmp_path / "multistyle.json"
    module = script(
        "multistyle",
        monkeypatch,
        *("--multi", trained_workdir, "--singles", trained_workdir, "--photos", photos),
        *("--validation-fraction", "0.25", "--json", report),
    )
    module.main()
    out = capsys.readouterr().out
    written = json.loads(report.read_text())
    assert written["photos"] == [
        name for name, _ in module.recipe.held_out_files(str(photos), 0.25)
    ]
    # The same model as "multi" and as the single-style one: the same outputs, ratios of 1.
    (row,) = written["per_style"].values()
    assert row["style_ratio"] == pytest.approx(1) and row["content_ratio"] == pytest.approx(1)
    assert re.search(r"^\| style \| [\d,]+ \| [\d,]+ \| 1\.00x \|", out, re.MULTILINE), out
    assert "| model | styles | parameters | file bytes |" in out
    assert re.search(r"^\| .*model\.npz \| 1 \| [\d,]+ \| [\d,]+ \|$", out, re.MULTILINE), out
    assert module.logged_validation(str(trained_workdir))[-1]["step"] == 2


# --- self-contained scripts --------------------------------------------------------------------


@pytest.mark.slow
def test_stability_cost_prints_both_variants(monkeypatch, capsys, fast_compile):
    module = script(
        "stability_cost",
        monkeypatch,
        *("--batch-size", "1", "--image-size", "16", "--pad", "2", "--steps", "1"),
        *("--style-layers", "relu1_1", "--content-layer", "relu1_2"),
    )
    module.main()
    out = capsys.readouterr().out
    for weight in ("0.0", "1.0"):
        assert re.search(rf"stability_weight={weight}:\s+{NUMBER} GFLOP \(XLA\)", out), out
    assert re.search(rf"time ratio with/without: {NUMBER}x", out), out


@pytest.mark.slow
def test_conv_layers_prints_the_layer_table(monkeypatch, capsys):
    module = script(
        "conv_layers", monkeypatch, "--layers", "residual", "--batch", "1", "--repeats", "1"
    )
    monkeypatch.setattr(sys, "argv", [*sys.argv, "--no-torch"])
    module.main()
    out = capsys.readouterr().out
    assert "batch 1, best of 1" in out
    assert module.LAYERS["residual"].label in out


def test_make_clips_writes_each_clip(tmp_path, monkeypatch, capsys):
    pytest.importorskip("imageio_ffmpeg")  # the ffmpeg binary fnst_jax.video runs
    (photo,) = write_photos(tmp_path / "photo", 1, size=(96, 64)).iterdir()
    module = script(
        "make_clips",
        monkeypatch,
        *("--output-dir", tmp_path / "clips", "--photo", photo, "--frames", "3"),
        *("--size", "32x24", "--pan-speed", "1"),
    )
    assert module.main() == 0
    out = capsys.readouterr().out
    from fnst_jax import video

    for name in module.CLIPS:
        path = tmp_path / "clips" / f"{name}.mp4"
        assert f"{path}: 3 frames, 32x24" in out
        _, frames = video.read_video(path)
        assert [frame.shape for frame in frames] == [(24, 32, 3)] * 3


@pytest.mark.slow
def test_data_throughput_measures_both_sources(tmp_path):
    pytest.importorskip("array_record")
    photos_dir = write_photos(tmp_path / "photos", 4, size=(72, 64))  # data.min_size: 64
    out = run_script(
        "data_throughput",
        *(f"--photos={photos_dir}", "--image_size=32", "--batch_size=2", "--batches=2"),
        *("--records=8", "--read_threads=1", "--worker_counts=0"),
        timeout=240,
    )
    assert "image_size=32 batch_size=2" in out
    for source in ("folder (photos", "ArrayRecord (fnst_coco_images, 8 x"):
        assert re.search(rf"{re.escape(source)}.* {NUMBER} images/s", out), out


def test_benchmarks_without_a_test_here_are_tested_elsewhere():
    """Every script in benchmarks/ has a smoke test: here, or in the file named."""
    elsewhere = {
        "startup.py": "test_bench_startup.py",
        # modules the scripts import, tested through them
        "startup_profile.py": "test_bench_startup.py",
        "host.py": "test_bench_startup.py",
    }
    here = Path(__file__).read_text()
    for path in sorted(BENCHMARKS.glob("*.py")):
        if path.name == "browser.py":  # drives a real browser (Playwright): not a smoke test
            continue
        if path.name in elsewhere:
            assert path.stem in (REPOSITORY / "tests" / elsewhere[path.name]).read_text()
        else:
            assert f'"{path.stem}"' in here, f"{path.name}: no smoke test"
