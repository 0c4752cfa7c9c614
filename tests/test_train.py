"""Training end to end on the smoke config.

Fast lane: a 2-step run writes every file and resumes at its end; user errors before training;
train.py's one-line error. Slow lane, sharing runs through module fixtures: a multi-style run
with the stability term (its files, evaluate on its validation images, a style added to it)
resumed exactly in-process; a run of non-finite steps stopped; in subprocesses, data
parallelism against one device (2 devices with pmap; 2 processes x 2 devices with jit, stopped
by SIGTERM to one process and rerun) and exact resume after SIGKILL during a save (pmap).
Subprocess runs share a compilation cache. The step itself is tested in test_train_step.py,
the loop's parts in their modules' test files.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import smoke
from fnst_jax import evaluate, export, model_file, train_lib, train_step, validation

REPO = Path(__file__).resolve().parents[1]
STEPS = 4


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def fast_compile_module():
    """`jax_disable_most_optimizations` for the module's in-process runs (their compilation
    dominates on 32 px images); restored afterwards."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


@pytest.fixture(scope="module")
def second_style(tmp_path_factory) -> Path:
    """A second style for multi-style runs: a colour checkerboard (other Grams than the
    stripes)."""
    path = tmp_path_factory.mktemp("style2") / "checks.png"
    y, x = np.mgrid[0:40, 0:40]
    checks = (((x // 5 + y // 5) % 2) * 200 + 30).astype(np.uint8)
    Image.fromarray(np.stack([checks, np.roll(checks, 3, 1), 255 - checks], -1)).save(path)
    return path


def smoke_config(style: Path, **overrides):
    """The smoke config training `style`, with dotted `overrides` ("train.steps": 2)."""
    config = smoke.get_config()
    config.style_image = str(style)
    for key, value in overrides.items():
        target = config
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return config


def read_records(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def steps_of(records: list[dict], split: str) -> list[int]:
    return [r["step"] for r in records if r["split"] == split]


def final_params(workdir: Path, steps: int = STEPS) -> dict[str, np.ndarray]:
    params, meta = model_file.read_model(workdir)
    assert meta["step"] == steps
    return params


# ----------------------------------------------------------------------------- fast lane


@pytest.mark.usefixtures("fast_compile")
def test_two_step_run_writes_everything_and_resumes_at_its_end(tmp_path, style_image):
    config = smoke_config(
        style_image,
        **{"train.steps": 2, "eval_every": 2, "sample_every": 2, "validation_size": 48},
    )
    metrics = train_lib.train_and_evaluate(config, str(tmp_path))
    assert np.isfinite(metrics["total"])

    model, meta = export.load_model(tmp_path)
    assert meta["step"] == 2 and meta["pad"] == config.train.pad
    assert meta["native_size"] == 32  # the 48 px square style at style_size 32
    assert tuple(meta["loss"]["style_layers"]) == config.loss.style_layers
    assert model(jnp.full((1, 20, 28, 3), 128.0)).shape == (1, 20, 28, 3)

    records = read_records(tmp_path)
    assert steps_of(records, "train") == [2]
    assert steps_of(records, "validation") == [0, 2]
    for record in records:
        assert {"total", "content", "style", "tv", "style/relu1_1"} <= record.keys()
    # validation_size: validation also logs the figures where users look (stroke scale auto)
    for record in records:
        if record["split"] == "validation":
            assert all(np.isfinite(record[f"at48/{key}"]) for key in validation.SIZED_KEYS)
    with Image.open(tmp_path / "loss.png") as chart:
        assert chart.format == "PNG"
    with Image.open(tmp_path / "samples/step_000002.png") as grid:
        # Two rows (inputs, stylized) of the validation images side by side.
        assert grid.size == (32 * config.num_validation_images, 64)
        inputs = np.asarray(grid)[:32]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "checkpoints" / "2").is_dir()

    # The model carries a thumbnail of its style image: a JPEG, its longest side at most
    # 128 px (the 48 px style image is not enlarged), looking like the style image.
    with Image.open(io.BytesIO(base64.b64decode(meta["style_thumbnail"]))) as thumbnail:
        assert thumbnail.format == "JPEG" and thumbnail.size == (48, 48)
        error = np.abs(np.asarray(thumbnail, float) - np.asarray(Image.open(style_image), float))
        assert error.mean() < 8  # JPEG at quality 85 of a smooth pattern

    # A synthetic source's images are not files: the validation images are written out for
    # evaluate; they are the validation batch (the top row of the sample grid).
    listed = (tmp_path / "validation_images.txt").read_text().splitlines()
    assert len(listed) == config.num_validation_images
    for index, path in enumerate(listed):
        assert Path(path).parent == tmp_path / "validation"
        with Image.open(path) as image:
            np.testing.assert_array_equal(
                np.asarray(image), inputs[:, 32 * index : 32 * index + 32]
            )

    # The checkpoint holds the exported model's parameters and metadata.
    (tmp_path / "model.npz").rename(tmp_path / "exported.npz")
    from_checkpoint, checkpoint_meta = export.load_model(tmp_path)
    np.testing.assert_equal(export.flat_params(from_checkpoint), export.flat_params(model))
    assert checkpoint_meta == {k: v for k, v in meta.items() if k not in ("format", "version")}
    (tmp_path / "exported.npz").rename(tmp_path / "model.npz")

    # Rerunning the finished command resumes at the end: nothing retrained, nothing repeated.
    train_lib.train_and_evaluate(config, str(tmp_path))
    assert steps_of(read_records(tmp_path), "train") == [2]

    # A different experiment in the same workdir is refused, naming the difference.
    changed = smoke_config(style_image, **{"train.steps": 2, "loss.style_weight": 3.0})
    with pytest.raises(train_lib.TrainingError, match="loss.style_weight"):
        train_lib.train_and_evaluate(changed, str(tmp_path))


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"style_image": "{tmp}/nope.jpg"}, "nope.jpg"),
        ({"train.only_norm_params": True}, "init_from"),
        ({"parallel": "vmap"}, "'jit' or 'pmap'"),
    ],
    ids=["missing-style", "norm-only-without-base", "parallel"],
)
def test_refused_before_training(tmp_path, style_image, overrides, message):
    fields = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in overrides.items()}
    config = smoke_config(style_image, **fields)
    with pytest.raises(train_lib.TrainingError, match=message):
        train_lib.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run" / "checkpoints").exists()


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
    """CPU devices, the module's compilation cache, and `jax_disable_most_optimizations`:
    compiling dominates these 32 px runs (measured: a 4-step run 72 s -> 41-53 s)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices))
    env.update(FNST_JAX_CACHE=str(cache), JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    return env


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


# ----------------------------------------------------------------------------- exact resume


# Data-parallel runs are compared under plain SGD with a small step: the gradients of a
# sharded and an unsharded batch agree to ~1e-6, but Adam's first steps move every weight by
# about +-lr whatever its gradient's size, so summation-order noise flips the steps of
# near-zero gradients (~0.05% of weights after one step), and the tiny net's instance norms
# then magnify the difference step by step; large SGD steps (lr 0.1) do the same. With SGD at
# lr 0.01 the updates of 1 and 2 devices agree to 1e-5 on random batches and to 7e-3 (both
# measured) in these smoke runs; a missing all-reduce or a wrong batch split is off by O(1).
def shared_run(style_image: Path, second_style: Path) -> dict:
    """The config of the runs this module shares, besides the smoke config's.

    Two styles (the second at twice the weight) and the stability term: what a resumed run
    must take back from its checkpoint besides the state and the data position (each style's
    and the stability term's balanced weight) and must redraw exactly (the style and the
    perturbations of each step), and what each device of a data-parallel run must take its
    own rows of. A batch of 4: a row per device of 4. SGD at a small step (above)."""
    return {
        "style_images": (str(style_image), str(second_style)),  # used instead of style_image
        "loss.style_multipliers": (1.0, 2.0),
        "loss.stability_weight": 1.0,
        "train.batch_size": 4,
        "train.optimizer": "sgd",
        "train.lr": 0.01,
    }


def as_flags(fields: dict) -> tuple[str, ...]:
    """Config fields as train.py's --config.KEY=VALUE flags."""
    return tuple(
        f"--config.{key}={value!r}" if isinstance(value, tuple) else f"--config.{key}={value}"
        for key, value in fields.items()
    )


@pytest.fixture(scope="module")
def resumed_runs(tmp_path_factory, style_image, second_style, fast_compile_module):
    """(an uninterrupted 4-step run of `shared_run` on one device, the same run resumed from
    its step-2 checkpoint): the workdir copied with its later checkpoint and its models
    deleted."""
    root = tmp_path_factory.mktemp("resume")
    config = smoke_config(
        style_image,
        **shared_run(style_image, second_style),
        **{"train.steps": STEPS, "checkpoint_every": 2, "eval_every": 2, "sample_every": 2},
    )
    full, resumed = root / "full", root / "resumed"
    train_lib.train_and_evaluate(config, str(full))
    shutil.copytree(full, resumed)
    shutil.rmtree(resumed / "checkpoints" / str(STEPS))
    for name in ("model.npz", "best.npz"):
        (resumed / name).unlink()
    train_lib.train_and_evaluate(config, str(resumed))
    return full, resumed


@pytest.mark.slow
def test_resume_from_a_checkpoint_is_exact(resumed_runs):
    """In-process, jit; resuming a pmap run on 2 devices: the SIGKILL test below."""
    full, resumed = resumed_runs
    np.testing.assert_equal(final_params(resumed), final_params(full))
    assert model_file.read_metadata(resumed)["loss"] == model_file.read_metadata(full)["loss"]
    records = read_records(resumed)
    assert steps_of(records, "train") == steps_of(read_records(full), "train")
    assert steps_of(records, "validation") == [0, 2, 4]


@pytest.mark.slow
def test_multi_style_run_with_the_stability_term(tmp_path, resumed_runs):
    """Two styles in one model: each balanced on its own Grams, validated and sampled per
    style, listed in the exported model, and scored by evaluate as validation scored it; the
    stability term logged, its weight balanced."""
    full, _ = resumed_runs
    model, meta = export.load_model(full)
    assert model.num_styles == 2
    assert model_file.style_names(meta) == ["style", "checks"]
    assert meta["style_thumbnail"] == meta["styles"][0]["thumbnail"]
    weights = meta["loss"]["style_weights"]
    assert len(weights) == 2 and weights[0] != weights[1]  # balanced per style
    stability_weight = meta["loss"]["stability_weight"]
    assert stability_weight > 0 and stability_weight != 1.0  # 1.0 times a measured ratio
    records = read_records(full)
    assert all(r["raw_stability"] > 0 for r in records if r["split"] == "train")
    last = [r for r in records if r["split"] == "validation"][-1]
    for key in ("total", "raw_style", "raw_content"):
        mean = (last[f"style/{key}"] + last[f"checks/{key}"]) / 2
        assert last[key] == pytest.approx(mean, rel=1e-6)
    assert last["style/raw_style"] != last["checks/raw_style"]
    with Image.open(full / "samples" / f"step_{STEPS:06d}.png") as grid:
        assert grid.size == (32 * 2, 3 * 32)  # inputs + a row per style
    # Both styles were trained: the norm rows moved away from their common initialisation
    # (1.0). A style never trained keeps its rows exactly, as they get no gradient; these
    # small SGD steps move a trained style's by ~3e-5 (measured).
    scale = model_file.read_model(full)[0]["conv1/norm/scale"]
    assert scale.shape == (2, 32) and np.abs(scale - 1.0).max(axis=1).min() > 1e-6

    # evaluate scores one style of the model: its last validation figures for that style,
    # less the stability term, which evaluate does not score. One image at a time and
    # clipped (evaluate) vs the batch (validation, also clipped): float32 rounding apart.
    def validated_total(name: str) -> float:
        return last[f"{name}/total"] - last[f"{name}/stability"]

    listed = (full / "validation_images.txt").read_text().splitlines()
    report = tmp_path / "checks.json"
    argv = ["evaluate", "--model", str(full), "--images", *listed]
    argv += ["--baseline-iterations", "none", "--no-grid", "--json", str(report)]
    argv += ["--nokeep-brightness"]  # the network's own output, as validation scores it
    assert evaluate.main([*argv, "--model-style", "checks"]) == 0
    summary = json.loads(report.read_text())["summary"]
    assert summary["total_loss"] == pytest.approx(validated_total("checks"), rel=1e-4)
    assert evaluate.main([*argv, "--overwrite"]) == 2  # which style? (the error lists them)
    # --model-style all: one report holding each style's; the grid has a column per style.
    grid = tmp_path / "all.png"
    argv[argv.index("--no-grid")] = f"--grid={grid}"
    assert evaluate.main([*argv, "--overwrite", "--model-style", "all"]) == 0
    documents = json.loads(report.read_text())["styles"]
    assert [d["model_style"] for d in documents] == ["style", "checks"]
    for document in documents:
        expected = validated_total(document["model_style"])
        assert document["summary"]["total_loss"] == pytest.approx(expected, rel=1e-4)
    with Image.open(grid) as image:
        assert image.size == (3 * evaluate.GRID_ROW_HEIGHT, len(listed) * evaluate.GRID_ROW_HEIGHT)


@pytest.mark.slow
def test_adding_a_style_trains_its_norm_rows_only(tmp_path, resumed_runs, second_style):
    """init_from + only_norm_params: the new model lists the base styles then the new one;
    its convolutions and the base styles' norm rows are bit-identical to the base model's
    (so are those styles' outputs); only the new rows moved; the weights carry over."""
    base_dir, _ = resumed_runs
    third = tmp_path / "rings.png"
    y, x = np.mgrid[0:40, 0:40]
    rings = (np.sin(np.hypot(x - 20, y - 20) / 2) * 100 + 128).astype(np.uint8)
    Image.fromarray(np.stack([rings, rings // 2, 255 - rings], -1)).save(third)
    added = smoke_config(
        third,
        init_from=str(base_dir / "model.npz"),
        style_images=(str(third),),
        **{"train.only_norm_params": True, "train.steps": 3},
    )
    train_lib.train_and_evaluate(added, str(tmp_path / "added"))

    base, base_meta = model_file.read_model(base_dir)
    new, meta = model_file.read_model(tmp_path / "added")
    assert model_file.style_names(meta) == ["style", "checks", "rings"]
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
    records = read_records(tmp_path / "added")
    assert all("rings/total" not in r for r in records)  # one trained style: plain keys

    clash = smoke_config(third, init_from=str(base_dir), style_images=(str(second_style),))
    with pytest.raises(train_lib.TrainingError, match="already has the style"):
        train_lib.train_and_evaluate(clash, str(tmp_path / "clash"))


@pytest.mark.slow
@pytest.mark.usefixtures("fast_compile")
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


# ----------------------------------------------------------------------------- subprocesses


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


@pytest.fixture(scope="module")
def initial_params() -> dict[str, np.ndarray]:
    """The parameters every 2-style smoke run starts from."""
    seed = smoke.get_config().train.seed
    _, params = train_step.init_model(jax.random.PRNGKey(seed), jnp.float32, num_styles=2)
    return export.flatten_params(params)


def assert_same_training(a, b, initial) -> None:
    """The parameter updates (final - initial) of two runs agree to float rounding."""
    assert a.keys() == b.keys() == initial.keys()
    update_a = np.concatenate([(a[k] - initial[k]).ravel() for k in sorted(a)])
    update_b = np.concatenate([(b[k] - initial[k]).ravel() for k in sorted(a)])
    assert np.linalg.norm(update_a) > 1e-3  # the runs really trained
    assert np.linalg.norm(update_a - update_b) < 2e-2 * np.linalg.norm(update_a)


@pytest.fixture(scope="module")
def reference_run(resumed_runs) -> Path:
    """The uninterrupted in-process run on one device: what the data-parallel runs must
    reproduce to float rounding."""
    return resumed_runs[0]


PMAP = "--config.parallel=pmap"


@pytest.fixture(scope="module")
def pmap_run(tmp_path_factory, style_image, second_style, compile_cache) -> Path:
    """The same run as 2 devices with pmap: what an interrupted such run must reproduce."""
    workdir = tmp_path_factory.mktemp("pmap")
    overrides = as_flags(shared_run(style_image, second_style))
    run_train(workdir, style_image, compile_cache, *overrides, PMAP, devices=2)
    return workdir


@pytest.mark.slow
def test_two_devices_match_one(pmap_run, reference_run, initial_params):
    """pmap over 2 devices: the gradient all-reduce, each device's rows of the batch and of
    the stability term's perturbations, the same style on every device."""
    assert_same_training(final_params(pmap_run), final_params(reference_run), initial_params)


@pytest.mark.slow
def test_sigkill_during_save_resumes_exactly(
    tmp_path, pmap_run, style_image, second_style, compile_cache
):
    """kill -9 while a checkpoint is being written; the rerun equals an uninterrupted run
    (pmap on 2 devices: the state comes back to every device's copy)."""
    overrides = (*as_flags(shared_run(style_image, second_style)), PMAP)
    process = subprocess.Popen(
        train_command(tmp_path, style_image, *overrides),
        env=train_env(compile_cache, devices=2),
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

    run_train(tmp_path, style_image, compile_cache, *overrides, devices=2)
    np.testing.assert_equal(final_params(tmp_path), final_params(pmap_run))
    steps = steps_of(read_records(tmp_path), "train")
    assert steps == sorted(set(steps)) and steps[-1] == STEPS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_two_processes(
    workdir: Path, style_image: Path, cache: Path, overrides, logs: Path
) -> list[subprocess.Popen]:
    """One run as 2 processes (gloo) of 2 CPU devices each; output in `logs`."""
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
                    env=train_env(cache, devices=2),
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


@pytest.mark.slow
def test_two_processes_stop_together_on_sigterm_and_match_one_process(
    tmp_path, reference_run, initial_params, style_image, second_style, compile_cache
):
    """2 processes x 2 CPU devices (gloo, jit). A preempted host: SIGTERM reaches process 1
    only; both save the same step and exit as a signalled single process does (128 +
    SIGTERM). The rerun finishes the run, which then matches 1 process x 1 device (same
    global batch); only process 0 writes logs."""
    # One checkpoint only (the one the stop saves), then the one at the end.
    overrides = (*as_flags(shared_run(style_image, second_style)), "--config.checkpoint_every=100")
    workdir = tmp_path / "run"
    logs = tmp_path / "logs1"
    processes = start_two_processes(workdir, style_image, compile_cache, overrides, logs)
    # Process 0 logs the step-0 validation loss after a computation that process 1 runs too,
    # so by then both are past train_and_evaluate's first line, which installs the handlers;
    # the first step, compiled first (no earlier test compiles it), has not finished yet:
    # the stop comes one step later (the agreement's lag), before the last step.
    metrics = workdir / "metrics.jsonl"
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
    assert 1 <= step < STEPS
    complete = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
    assert complete == [step]
    assert model_file.read_model(workdir)[1]["step"] == step

    logs = tmp_path / "logs2"
    processes = start_two_processes(workdir, style_image, compile_cache, overrides, logs)
    for process, output in zip(processes, wait_for(processes, logs), strict=True):
        assert process.returncode == 0, output[-3000:]
    assert_same_training(final_params(workdir), final_params(reference_run), initial_params)
    steps = steps_of(read_records(workdir), "train")  # each once: process 1 writes none
    assert steps == sorted(set(steps)) and steps[-1] == STEPS
