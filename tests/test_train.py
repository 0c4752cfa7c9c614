"""Training end to end on the smoke config: files, resume after SIGKILL, jit == pmap == 1 device,
2 processes == 1 process, SIGTERM to one of 2 processes, the validation images of a TFDS source,
a run of non-finite steps stopped, user errors on one line. Subprocess runs share a
compilation cache. The step itself is tested in test_train_step.py."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import smoke
from fnst_jax import data, evaluate, export, train_lib, train_step
from fnst_jax.losses import LossSpec

REPO = Path(__file__).resolve().parents[1]
STEPS = 4


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def smoke_config(style_image: Path, **overrides):
    config = smoke.get_config()
    config.style_image = str(style_image)
    for key, value in overrides.items():
        target = config
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return config


def train_command(workdir: Path, style_image: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        str(REPO / "train.py"),
        "--config",
        str(REPO / "configs" / "smoke.py"),
        "--workdir",
        str(workdir),
        f"--config.style_image={style_image}",
        f"--config.train.steps={STEPS}",
        "--config.checkpoint_every=1",
        "--config.sample_every=100",
        "--config.eval_every=100",
        *overrides,
    ]


def train_env(cache: Path, devices: int = 1) -> dict[str, str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices))
    env["FNST_JAX_CACHE"] = str(cache)
    return env


def run_train(workdir, style_image, cache, *overrides, devices=1) -> None:
    result = subprocess.run(
        train_command(workdir, style_image, *overrides),
        env=train_env(cache, devices),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def final_params(workdir: Path, steps: int = STEPS) -> dict[str, np.ndarray]:
    params, meta = export.read_model(workdir)
    assert meta["step"] == steps
    return params


# Data-parallel runs are compared under plain SGD with a small step: the gradients of a
# sharded and an unsharded batch agree to ~1e-6, but Adam's first steps move every weight by
# about +-lr whatever its gradient's size, so summation-order noise flips the steps of
# near-zero gradients (~0.05% of weights after one step), and the tiny net's instance norms
# then magnify the difference step by step; large SGD steps (lr 0.1) do the same. With SGD at
# lr 0.01 the updates of 1 and 2 devices agree to 1e-5 on random batches and to 7e-3 (both
# measured) in these smoke runs; a missing all-reduce or a wrong batch split is off by O(1).
PARALLEL_CHECK = ("--config.train.optimizer=sgd", "--config.train.lr=0.01")


def assert_same_training(a, b) -> None:
    """The parameter updates (final - initial) of two runs agree to float rounding."""
    config = smoke.get_config()
    _, params = train_step.init_model(jax.random.PRNGKey(config.train.seed), jnp.float32)
    initial = export.flatten_params(params)
    assert a.keys() == b.keys() == initial.keys()
    update_a = np.concatenate([(a[k] - initial[k]).ravel() for k in sorted(a)])
    update_b = np.concatenate([(b[k] - initial[k]).ravel() for k in sorted(a)])
    assert np.linalg.norm(update_a) > 1e-3  # the runs really trained
    assert np.linalg.norm(update_a - update_b) < 2e-2 * np.linalg.norm(update_a)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, style_image, compile_cache) -> Path:
    """One uninterrupted run on one device: what an interrupted run must reproduce."""
    workdir = tmp_path_factory.mktemp("reference")
    run_train(workdir, style_image, compile_cache)
    return workdir


@pytest.fixture(scope="module")
def sgd_reference_run(tmp_path_factory, style_image, compile_cache) -> Path:
    workdir = tmp_path_factory.mktemp("sgd_reference")
    run_train(workdir, style_image, compile_cache, *PARALLEL_CHECK)
    return workdir


def test_smoke_run_writes_everything_and_resumes(tmp_path, style_image):
    config = smoke_config(style_image)
    metrics = train_lib.train_and_evaluate(config, str(tmp_path))
    assert np.isfinite(metrics["total"])

    model, meta = export.load_model(tmp_path)
    assert meta["step"] == config.train.steps == 6
    assert meta["pad"] == config.train.pad
    assert tuple(meta["loss"]["style_layers"]) == config.loss.style_layers
    out = model(jnp.full((1, 20, 28, 3), 128.0))
    assert out.shape == (1, 20, 28, 3)

    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == [2, 4, 6]
    assert [r["step"] for r in records if r["split"] == "validation"] == [0, 3, 6]
    for record in records:
        assert {"total", "content", "style", "tv", "style/relu1_1"} <= record.keys()
    for name in ("loss.png", "samples/step_000003.png", "samples/step_000006.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG"
    with Image.open(tmp_path / "samples/step_000006.png") as grid:
        # Two rows (inputs, stylized) of the validation images side by side.
        assert grid.size == (32 * config.num_validation_images, 64)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "checkpoints" / "6").is_dir()

    # The model carries a thumbnail of its style image: a JPEG, its longest side at most
    # 128 px (the 48 px style image is not enlarged), looking like the style image.
    with Image.open(io.BytesIO(base64.b64decode(meta["style_thumbnail"]))) as thumbnail:
        assert thumbnail.format == "JPEG" and thumbnail.size == (48, 48)
        error = np.abs(np.asarray(thumbnail, float) - np.asarray(Image.open(style_image), float))
        assert error.mean() < 8  # JPEG at quality 85 of a smooth pattern

    # A synthetic source's images are not files: the validation images are written out, and
    # README's evaluate command runs on them. They are the validation batch (the top row of
    # the sample grid), and evaluate's loss on them is the last validation loss.
    listed = (tmp_path / "validation_images.txt").read_text().splitlines()
    assert len(listed) == config.num_validation_images
    assert all(Path(p).is_absolute() and Path(p).parent == tmp_path / "validation" for p in listed)
    with Image.open(tmp_path / "samples/step_000006.png") as grid:
        inputs = np.asarray(grid)[:32]
    for index, path in enumerate(listed):
        with Image.open(path) as image:
            assert image.format == "PNG"
            np.testing.assert_array_equal(
                np.asarray(image), inputs[:, 32 * index : 32 * index + 32]
            )
    report = tmp_path / "evaluate.json"
    argv = ["evaluate", "--model", str(tmp_path), "--images", *listed, "--json", str(report)]
    assert evaluate.main([*argv, "--baseline-iterations", "none", "--no-grid"]) == 0
    summary = json.loads(report.read_text())["summary"]
    last_validation = [r for r in records if r["split"] == "validation"][-1]
    # Evaluate scores one image at a time and clips the output to 0..255; validation scores
    # the batch unclipped: float32 rounding apart (the smoke model's output stays in range).
    assert summary["num_images"] == len(listed)
    assert summary["total_loss"] == pytest.approx(last_validation["total"], rel=1e-4)

    # A workdir whose model was not exported yet loads from its latest checkpoint.
    (tmp_path / "model.npz").rename(tmp_path / "exported.npz")
    from_checkpoint, checkpoint_meta = export.load_model(tmp_path)
    np.testing.assert_equal(export.flat_params(from_checkpoint), export.flat_params(model))
    assert checkpoint_meta == {k: v for k, v in meta.items() if k not in ("format", "version")}
    (tmp_path / "exported.npz").rename(tmp_path / "model.npz")

    # Rerunning the finished command resumes at the end: nothing retrained, nothing repeated.
    train_lib.train_and_evaluate(config, str(tmp_path))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == [2, 4, 6]

    # A different experiment in the same workdir is refused, naming the difference.
    changed = smoke_config(style_image, **{"loss.style_weight": 3.0})
    with pytest.raises(train_lib.TrainingError, match="loss.style_weight"):
        train_lib.train_and_evaluate(changed, str(tmp_path))


def test_sigkill_during_save_resumes_exactly(tmp_path, reference_run, style_image, compile_cache):
    """kill -9 while a checkpoint is being written; the rerun equals an uninterrupted run."""
    process = subprocess.Popen(
        train_command(tmp_path, style_image),
        env=train_env(compile_cache),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoints = tmp_path / "checkpoints"
    deadline = time.monotonic() + 300
    killed_during_save = False
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if checkpoints.is_dir():
                names = [p.name for p in checkpoints.iterdir()]
                if any("tmp" in name for name in names) and "1" in names:
                    process.send_signal(signal.SIGKILL)
                    killed_during_save = True
                    break
            time.sleep(0.002)
    finally:
        process.kill()
        process.wait()
    assert killed_during_save, "the run ended before a save could be interrupted"
    complete = sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    assert complete and complete[-1] < STEPS

    run_train(tmp_path, style_image, compile_cache)
    np.testing.assert_equal(final_params(tmp_path), final_params(reference_run))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["split"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == STEPS


@pytest.mark.parametrize("parallel", ["jit", "pmap"])
def test_two_devices_match_one(tmp_path, sgd_reference_run, style_image, compile_cache, parallel):
    run_train(
        tmp_path,
        style_image,
        compile_cache,
        f"--config.parallel={parallel}",
        *PARALLEL_CHECK,
        devices=2,
    )
    assert_same_training(final_params(tmp_path), final_params(sgd_reference_run))


def train_and_resume(tmp_path: Path, style_image: Path, overrides: dict):
    """Train 4 steps in tmp_path/full; train 2 in tmp_path/resumed, then resume it to 4: the
    parameters must be identical. Returns the 4-step config."""
    overrides = {"checkpoint_every": 1, **overrides}
    full = smoke_config(style_image, **overrides, **{"train.steps": 4})
    train_lib.train_and_evaluate(full, str(tmp_path / "full"))
    half = smoke_config(style_image, **overrides, **{"train.steps": 2})
    train_lib.train_and_evaluate(half, str(tmp_path / "resumed"))
    train_lib.train_and_evaluate(full, str(tmp_path / "resumed"))
    np.testing.assert_equal(final_params(tmp_path / "resumed"), final_params(tmp_path / "full"))
    return full


STABILITY = ("--config.loss.stability_weight=1.0",)


@pytest.fixture(scope="module")
def stability_reference_run(tmp_path_factory, style_image, compile_cache) -> Path:
    workdir = tmp_path_factory.mktemp("stability_reference")
    run_train(workdir, style_image, compile_cache, *PARALLEL_CHECK, *STABILITY)
    return workdir


def test_stability_term_trains_and_resumes_exactly(tmp_path, style_image):
    """With the stability term on, a run stopped after 2 steps and resumed equals the
    uninterrupted run (its perturbations are a function of seed and step), and it logs the
    term and records its balanced weight."""
    train_and_resume(tmp_path, style_image, {"loss.stability_weight": 1.0})
    log = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in log]
    assert all(r["raw_stability"] > 0 and "stability" in r for r in records)
    _, meta = export.load_model(tmp_path / "full")
    weight = meta["loss"]["stability_weight"]
    assert weight > 0 and weight != 1.0  # balanced: the configured 1.0 times a measured ratio


def test_stability_term_on_two_devices_matches_one(
    tmp_path, stability_reference_run, style_image, compile_cache
):
    """pmap: each device takes its rows of the global batch's perturbations."""
    run_train(
        tmp_path,
        style_image,
        compile_cache,
        "--config.parallel=pmap",
        *PARALLEL_CHECK,
        *STABILITY,
        devices=2,
    )
    assert_same_training(final_params(tmp_path), final_params(stability_reference_run))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_two_processes(
    workdir: Path, style_image: Path, cache: Path, overrides, devices: int, logs: Path
) -> list[subprocess.Popen]:
    """One run as 2 processes (gloo), each with `devices` CPU devices; output in `logs`."""
    port = _free_port()
    logs.mkdir(parents=True, exist_ok=True)
    processes = []
    for index in range(2):
        with open(logs / f"process{index}.log", "w") as log:
            processes.append(
                subprocess.Popen(
                    train_command(workdir, style_image, *overrides)
                    + [
                        f"--coordinator_address=127.0.0.1:{port}",
                        "--num_processes=2",
                        f"--process_id={index}",
                    ],
                    env=train_env(cache, devices=devices),
                    cwd=REPO,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    return processes


def wait_for(processes: list[subprocess.Popen], logs: Path, timeout: float = 600) -> list[str]:
    """The processes' outputs once all have exited; kills them all past `timeout` seconds."""
    deadline = time.monotonic() + timeout
    try:
        for process in processes:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail(f"2-process run still running after {timeout} s; logs in {logs}")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return [(logs / f"process{index}.log").read_text() for index in range(len(processes))]


def run_two_processes(workdir, style_image, cache, overrides, devices, logs) -> None:
    processes = start_two_processes(workdir, style_image, cache, overrides, devices, logs)
    outputs = wait_for(processes, logs)
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]


def test_two_processes_match_one_process(tmp_path, style_image, compile_cache):
    """2 processes x 2 CPU devices (gloo) == 1 process x 4 devices, same global batch."""
    overrides = ("--config.train.batch_size=4", *PARALLEL_CHECK)
    single = tmp_path / "single"
    run_train(single, style_image, compile_cache, *overrides, devices=4)

    multi = tmp_path / "multi"
    run_two_processes(multi, style_image, compile_cache, overrides, 2, tmp_path / "logs")
    assert_same_training(final_params(multi), final_params(single))
    # Only process 0 writes logs and samples.
    records = (multi / "metrics.jsonl").read_text().splitlines()
    assert len([r for r in records if '"train"' in r]) == len(
        [r for r in (single / "metrics.jsonl").read_text().splitlines() if '"train"' in r]
    )


PREEMPTION_STEPS = 10


def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path, style_image, compile_cache):
    """A preempted host: SIGTERM reaches process 1 of 2 only. Both save the same step and
    exit as a signalled single process does (128 + SIGTERM); the rerun resumes exactly."""
    # One checkpoint only (the one the stop saves), then the one at the end.
    overrides = (f"--config.train.steps={PREEMPTION_STEPS}", "--config.checkpoint_every=100")
    reference = tmp_path / "reference"
    run_two_processes(reference, style_image, compile_cache, overrides, 1, tmp_path / "logs0")

    stopped = tmp_path / "stopped"
    logs = tmp_path / "logs1"
    processes = start_two_processes(stopped, style_image, compile_cache, overrides, 1, logs)
    # Process 0 logs the step-0 validation loss after a computation that process 1 runs too,
    # so by then both are past train_and_evaluate's first line, which installs the handlers;
    # the first training steps have not run yet.
    metrics = stopped / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and metrics.stat().st_size):
        if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
            wait_for(processes, logs, timeout=1)
            pytest.fail(f"no validation record from the 2-process run; logs in {logs}")
        time.sleep(0.02)
    processes[1].send_signal(signal.SIGTERM)
    outputs = wait_for(processes, logs, timeout=300)

    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
    stops = [re.findall(r"stopped at step (\d+)", output) for output in outputs]
    assert stops[0] == stops[1] and len(stops[0]) == 1, outputs[0][-3000:]
    step = int(stops[0][0])
    assert 1 <= step < PREEMPTION_STEPS
    complete = [int(p.name) for p in (stopped / "checkpoints").iterdir() if p.name.isdigit()]
    assert complete == [step]
    assert export.read_model(stopped)[1]["step"] == step

    run_two_processes(stopped, style_image, compile_cache, overrides, 1, tmp_path / "logs2")
    np.testing.assert_equal(
        final_params(stopped, PREEMPTION_STEPS), final_params(reference, PREEMPTION_STEPS)
    )


COCO_VALIDATION_IMAGES = 6


def identity_colour(index: int) -> tuple[int, int, int]:
    return ((index * 37 + 20) % 256, (index * 91 + 60) % 256, (index * 53 + 100) % 256)


def test_tfds_validation_images_are_written_for_evaluate(tmp_path, monkeypatch):
    """A TFDS source's records are not files evaluate can read: the validation images are
    written once as PNGs and listed. Tiny COCO zips through the TF-free builder (as in
    test_data.py); validation image i is flat identity_colour(i), named ..._{i:012d}.jpg."""
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    for split, count in (("train2014", 2), ("val2014", COCO_VALIDATION_IMAGES)):
        with zipfile.ZipFile(manual_dir / f"{split}.zip", "w") as archive:
            for index in range(count):
                buffer = io.BytesIO()
                Image.new("RGB", (64, 80), identity_colour(index)).save(buffer, "PNG")
                archive.writestr(f"{split}/COCO_{split}_{index:012d}.jpg", buffer.getvalue())
    config = smoke.get_config()
    config.data.update(
        source="tfds:fnst_coco_images/2014",
        tfds_data_dir=str(tmp_path / "tfds"),
        manual_dir=str(manual_dir),
        download=True,
    )
    config.num_validation_images = 3
    workdir = tmp_path / "run"

    validation = train_lib.prepare_validation(config, workdir)
    listed = (workdir / train_lib.VALIDATION_FILE).read_text().splitlines()
    assert len(listed) == len(validation) == 3
    for path, image in zip(listed, validation, strict=True):
        assert Path(path).parent == workdir.absolute() / train_lib.VALIDATION_DIR
        # The file holds the record its name says (the colour of COCO image number N).
        number = int(re.search(r"COCO_val2014_(\d{12})_jpg\.png$", path).group(1))
        with Image.open(path) as written:
            pixels = np.asarray(written)
        np.testing.assert_array_equal(pixels, image)
        assert np.abs(pixels.reshape(-1, 3).mean(0) - identity_colour(number)).max() < 1

    # Written once: a resumed run reads the same records and leaves the files alone.
    before = {path: Path(path).stat().st_mtime_ns for path in listed}
    monkeypatch.setattr(train_lib.image_io, "write_image", None)  # any write would fail
    train_lib.prepare_validation(config, workdir)
    assert (workdir / train_lib.VALIDATION_FILE).read_text().splitlines() == listed
    assert {path: Path(path).stat().st_mtime_ns for path in listed} == before


def test_folder_validation_lists_every_held_out_file(tmp_path):
    """A folder's records are files: every held-out one is listed (not only the validation
    batch's), none is trained on, and nothing is written beside them."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(12):
        Image.new("RGB", (80, 72), identity_colour(index)).save(folder / f"{index:02d}.png")
    config = smoke.get_config()
    config.data.source = f"folder:{folder}"
    config.num_validation_images = 1
    workdir = tmp_path / "run"
    train_lib.prepare_validation(config, workdir)

    listed = (workdir / train_lib.VALIDATION_FILE).read_text().splitlines()
    source, training = data.training_records(config.data, image_size=32, seed=0)
    trained = {source.describe(int(i)) for i in training}
    everything = {str(path) for path in folder.iterdir()}
    assert len(listed) > config.num_validation_images  # 0.25 of 12 files are held out
    assert set(listed) | trained == everything and not set(listed) & trained
    assert not (workdir / train_lib.VALIDATION_DIR).exists()


def test_nonfinite_run_stops_with_clear_error(tmp_path, style_image, monkeypatch):
    real_loss = train_step.perceptual_loss

    def exploding_loss(*args, **kwargs):
        total, terms = real_loss(*args, **kwargs)
        terms = dict(terms, total=total * jnp.nan)
        return terms["total"], terms

    config = smoke_config(
        style_image, **{"train.max_nonfinite": 2, "log_every": 1, "loss.auto_balance": False}
    )
    monkeypatch.setattr(train_step, "perceptual_loss", exploding_loss)
    with pytest.raises(train_lib.TrainingError, match="non-finite"):
        train_lib.train_and_evaluate(config, str(tmp_path))
    assert not (tmp_path / "model.npz").exists()


def test_missing_style_image_is_a_clear_error(tmp_path):
    config = smoke_config(tmp_path / "nope.jpg")
    with pytest.raises(train_lib.TrainingError, match="nope.jpg"):
        train_lib.train_and_evaluate(config, str(tmp_path / "run"))


def test_entry_point_reports_a_user_error_on_one_line(tmp_path, style_image, compile_cache):
    """train.py catches UserError only: one `error:` line naming the file, exit status 2."""
    result = subprocess.run(
        train_command(tmp_path / "run", style_image, f"--config.style_image={tmp_path}/nope.jpg"),
        env=train_env(compile_cache),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "nope.jpg" in errors[0] and "no such file" in errors[0]
    assert "Traceback" not in result.stderr


def test_balance_weights_equalises_the_first_batch_terms():
    spec = LossSpec(style_weight=2.0, content_weight=3.0, tv_weight=0.5)
    raw = {"raw_content": 4.0, "raw_style": 0.01, "raw_tv": 100.0}
    balanced = train_lib.balance_weights(spec, raw)
    content = 3.0 * 4.0
    # Style weight 2.0: the style term starts at twice the content term; TV 0.5: half.
    assert balanced.content_weight == 3.0
    assert balanced.style_weight * raw["raw_style"] == pytest.approx(2.0 * content)
    assert balanced.tv_weight * raw["raw_tv"] == pytest.approx(0.5 * content)
    # A zero or non-finite raw term leaves its weight as configured.
    unchanged = train_lib.balance_weights(spec, dict(raw, raw_style=0.0, raw_tv=float("nan")))
    assert (unchanged.style_weight, unchanged.tv_weight) == (2.0, 0.5)


@pytest.fixture(scope="module")
def second_style(tmp_path_factory) -> Path:
    """A second style for multi-style runs: a colour checkerboard (other Grams than the
    stripes)."""
    path = tmp_path_factory.mktemp("style2") / "checks.png"
    y, x = np.mgrid[0:40, 0:40]
    checks = (((x // 5 + y // 5) % 2) * 200 + 30).astype(np.uint8)
    Image.fromarray(np.stack([checks, np.roll(checks, 3, 1), 255 - checks], -1)).save(path)
    return path


def test_multi_style_run_trains_every_style_and_resumes_exactly(
    tmp_path, style_image, second_style
):
    """Two styles in one model: each balanced on its own Grams, validated and sampled per
    style, listed in the exported model; a run stopped after 2 steps and resumed equals the
    uninterrupted one (the style of each step is a function of seed and step)."""
    overrides = {
        "style_images": (str(style_image), str(second_style)),  # used instead of style_image
        "loss.style_multipliers": (1.0, 2.0),
    }
    full = train_and_resume(tmp_path, style_image, overrides)

    model, meta = export.load_model(tmp_path / "full")
    assert model.num_styles == 2
    assert export.style_names(meta) == ["style", "checks"]
    assert meta["style_thumbnail"] == meta["styles"][0]["thumbnail"]
    weights = meta["loss"]["style_weights"]
    assert len(weights) == 2 and weights[0] != weights[1]  # balanced per style
    records = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").open()]
    last = [r for r in records if r["split"] == "validation"][-1]
    for key in ("total", "raw_style", "raw_content"):
        mean = (last[f"style/{key}"] + last[f"checks/{key}"]) / 2
        assert last[key] == pytest.approx(mean, rel=1e-6)
    assert last["style/raw_style"] != last["checks/raw_style"]
    with Image.open(tmp_path / "full" / "samples" / "step_000004.png") as grid:
        assert grid.size == (32 * full.num_validation_images, 3 * 32)  # inputs + a row per style
    # Both styles were trained: the norm rows moved away from their common initialisation.
    scale = export.read_model(tmp_path / "full")[0]["conv1/norm/scale"]
    assert scale.shape == (2, 32) and np.abs(scale - 1.0).max(axis=1).min() > 1e-4

    # evaluate scores one style of the model: its last validation figures for that style.
    listed = (tmp_path / "full" / "validation_images.txt").read_text().splitlines()
    report = tmp_path / "checks.json"
    argv = ["evaluate", "--model", str(tmp_path / "full"), "--images", *listed]
    argv += ["--baseline-iterations", "none", "--no-grid", "--json", str(report)]
    assert evaluate.main([*argv, "--model-style", "checks"]) == 0
    summary = json.loads(report.read_text())["summary"]
    assert summary["total_loss"] == pytest.approx(last["checks/total"], rel=1e-4)
    assert evaluate.main([*argv, "--overwrite"]) == 2  # which style? (the error lists them)
    # --model-style all: one report holding each style's, equal to its validation figures;
    # the grid has a column per style.
    grid = tmp_path / "all.png"
    argv[argv.index("--no-grid")] = f"--grid={grid}"
    assert evaluate.main([*argv, "--overwrite", "--model-style", "all"]) == 0
    documents = json.loads(report.read_text())["styles"]
    assert [d["model_style"] for d in documents] == ["style", "checks"]
    for document in documents:
        name = document["model_style"]
        assert document["summary"]["total_loss"] == pytest.approx(last[f"{name}/total"], rel=1e-4)
    with Image.open(grid) as image:
        assert image.size == (3 * evaluate.GRID_ROW_HEIGHT, len(listed) * evaluate.GRID_ROW_HEIGHT)


def test_multi_style_on_two_devices_matches_one(tmp_path, style_image, second_style, compile_cache):
    styles = f"--config.style_images=('{style_image}', '{second_style}')"
    run_train(tmp_path / "one", style_image, compile_cache, styles, *PARALLEL_CHECK)
    run_train(
        tmp_path / "two",
        style_image,
        compile_cache,
        styles,
        "--config.parallel=pmap",
        *PARALLEL_CHECK,
        devices=2,
    )
    assert_same_training(final_params(tmp_path / "two"), final_params(tmp_path / "one"))


def test_style_images_errors(tmp_path, style_image):
    same_name = smoke_config(style_image, style_images=(str(style_image), str(style_image)))
    with pytest.raises(train_lib.TrainingError, match="would name two styles"):
        train_lib.train_and_evaluate(same_name, str(tmp_path / "a"))
    wrong_count = smoke_config(
        style_image,
        style_images=(str(style_image), str(tmp_path / "b.png")),
        **{"loss.style_multipliers": (1.0,)},
    )
    with pytest.raises(train_lib.TrainingError, match="1 entries for 2 styles"):
        train_lib.train_and_evaluate(wrong_count, str(tmp_path / "b"))
    missing = smoke_config(style_image, style_images=(str(style_image), str(tmp_path / "c.png")))
    with pytest.raises(train_lib.TrainingError, match="c.png"):
        train_lib.train_and_evaluate(missing, str(tmp_path / "c"))


def test_balance_weights_per_style():
    spec = LossSpec(style_weight=2.0, style_weights=(2.0, 6.0))
    raw = {"raw_content": 4.0, "raw_style": 0.01, "raw_style/1": 0.1, "raw_tv": 1.0}
    balanced = train_lib.balance_weights(spec, raw)
    assert balanced.style_weights[0] * 0.01 == pytest.approx(2.0 * 4.0)
    assert balanced.style_weights[1] * 0.1 == pytest.approx(6.0 * 4.0)  # multiplier 3


def test_adding_a_style_trains_its_norm_rows_only(tmp_path, style_image, second_style):
    """init_from + only_norm_params: the new model lists the base styles then the new one;
    its convolutions and the base styles' norm rows are bit-identical to the base model's
    (so are those styles' outputs); only the new rows moved; the weights carry over."""
    base_config = smoke_config(
        style_image, style_images=(str(style_image), str(second_style)), **{"train.steps": 2}
    )
    train_lib.train_and_evaluate(base_config, str(tmp_path / "base"))
    third = tmp_path / "rings.png"
    y, x = np.mgrid[0:40, 0:40]
    rings = (np.sin(np.hypot(x - 20, y - 20) / 2) * 100 + 128).astype(np.uint8)
    Image.fromarray(np.stack([rings, rings // 2, 255 - rings], -1)).save(third)
    added = smoke_config(
        style_image,
        init_from=str(tmp_path / "base" / "model.npz"),
        style_images=(str(third),),
        **{"train.only_norm_params": True, "train.steps": 3},
    )
    train_lib.train_and_evaluate(added, str(tmp_path / "added"))

    base, base_meta = export.read_model(tmp_path / "base")
    new, meta = export.read_model(tmp_path / "added")
    assert export.style_names(meta) == ["style", "checks", "rings"]
    assert meta["loss"]["style_weights"][:2] == base_meta["loss"]["style_weights"]
    moved = 0.0
    for name, value in new.items():
        if value.ndim == 2:  # norm rows
            np.testing.assert_array_equal(value[:2], base[name], err_msg=name)
            start = base[name].mean(axis=0)
            moved = max(moved, float(np.abs(value[2] - start).max()))
        else:
            np.testing.assert_array_equal(value, base[name], err_msg=name)
    assert moved > 1e-4  # the new style trained

    records = [json.loads(line) for line in (tmp_path / "added" / "metrics.jsonl").open()]
    assert all("rings/total" not in r for r in records)  # one trained style: plain keys

    no_base = smoke_config(style_image, **{"train.only_norm_params": True})
    with pytest.raises(train_lib.TrainingError, match="init_from"):
        train_lib.train_and_evaluate(no_base, str(tmp_path / "x"))
    clash = smoke_config(
        style_image, init_from=str(tmp_path / "base"), style_images=(str(second_style),)
    )
    with pytest.raises(train_lib.TrainingError, match="already has the style"):
        train_lib.train_and_evaluate(clash, str(tmp_path / "y"))
