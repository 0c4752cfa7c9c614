"""The benchmark harness (fnst_jax.bench): end to end at a tiny size for each framework, its
JSON, its command line, the timing loop, and the JAX worker's imports.

Timings are not asserted (benchmarks print numbers; tests check the machinery). The end-to-end
runs use `--cpus 0` (one core: the shared 2-core test machine makes two OpenMP threads crawl)
and JAX_DISABLE_MOST_OPTIMIZATIONS in the workers so compilation stays short. The machine's
load is faked in every test (`machine_load`: idle unless a test says otherwise), so no test
depends on how busy the machine running it is.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import jax
import numpy as np
import pytest

from fnst_jax.bench import __main__ as bench_main
from fnst_jax.bench import harness, measure, report
from fnst_jax.bench.flops import analytic_flops

TINY = [
    "--batch-size", "1", "--image-size", "32", "--steps", "2", "--warmup", "1",
    "--pad", "4", "--style-layers", "relu1_1,relu2_1", "--vgg-layers", "4", "--cpus", "0",
]  # fmt: skip
STYLE = ("relu1_1", "relu2_1")


def bench(*args: str) -> int:
    return bench_main.main(["fnst_jax.bench", *args])


IDLE_LOAD = 0.25
CORES = 2
REAL_LOAD_AVERAGE, REAL_USABLE_CORES = harness.load_average, harness.usable_cores


@pytest.fixture(autouse=True)
def machine_load(monkeypatch):
    """The fake load source of every test: a list of 1-minute loads read in turn (the last one
    repeats), on 2 cores; idle unless the test changes the list."""
    loads = [IDLE_LOAD]

    def load_average():
        return loads.pop(0) if len(loads) > 1 else loads[0]

    monkeypatch.setattr(harness, "load_average", load_average)
    monkeypatch.setattr(harness, "usable_cores", lambda: CORES)
    return loads


def _check_records(records: list[dict], frameworks: list[str], tasks: list[str]) -> None:
    assert [(r["framework"], r["task"]) for r in records] == [
        (f, t) for t in tasks for f in frameworks
    ]
    for record in records:
        assert "error" not in record, record.get("error")
        for key in report.REQUIRED_KEYS:
            assert record[key] is not None, key
        assert record["device"] == "cpu" and record["dtype"] == "float32"
        assert record["batch_size"] == 1 and record["image_size"] == 32
        assert len(record["times_s"]) == 2
        assert 0 < record["min_s"] <= record["median_s"] <= record["max_s"]
        assert record["images_per_s"] == pytest.approx(1 / record["median_s"])
        assert record["flops_per_s"] == pytest.approx(record["flops"] / record["median_s"])
        assert record["first_call_s"] >= record["compile_s"] >= 0
        assert record["peak_mem_bytes"] > 10 * 2**20  # host RSS: at least the libraries
        assert record["date"] and record["cpu"]
        assert "mfu" not in record  # no known peak on CPU without --peak-tflops
        if record["framework"] == "jax":
            assert record["jax_version"] == jax.__version__
        else:
            assert record["torch_version"]
    flops = {r["task"]: r["flops"] for r in records}
    assert flops == {
        task: analytic_flops(task, 1, 32, pad=4 if task == "train-step" else 0, style_layers=STYLE)
        for task in tasks
    }


@pytest.fixture
def fast_workers(monkeypatch):
    monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")


@pytest.mark.slow
def test_jax_end_to_end(tmp_path, fast_workers, capsys):
    out = tmp_path / "out.json"
    assert (
        bench("--frameworks", "jax", "--task", "train-step,stylize", *TINY, "--json", str(out)) == 0
    )
    records = json.loads(out.read_text())
    _check_records(records, ["jax"], ["train-step", "stylize"])
    for record in records:  # the parent's reading of the (fake, idle) load around each worker
        assert record["load_before"] == record["load_after"] == IDLE_LOAD
        assert record["cores"] == CORES and record["worker_load"] >= 0
        assert record["loaded"] is False
    train = records[0]
    # XLA's own count of the compiled step agrees with the analytic one (loosely at 32 px,
    # where padding taps XLA skips and the SAME-then-crop border XLA adds are large).
    assert train["flops_xla"] == pytest.approx(train["flops"], rel=0.25)
    assert (tmp_path / "out.png").stat().st_size > 1000
    table = capsys.readouterr().out
    assert "train-step" in table and "stylize" in table and "img/s" in table
    assert "measured under load" not in table and "jax*" not in table


@pytest.mark.slow
def test_torch_end_to_end_and_flops_agree(tmp_path, fast_workers):
    pytest.importorskip("torch")
    out = tmp_path / "out.json"
    chart = tmp_path / "chart.png"
    argv = ["--frameworks", "jax,torch", "--task", "train-step", *TINY, "--json", str(out)]
    assert bench(*argv, "--chart", str(chart), "--peak-tflops", "1") == 0
    records = json.loads(out.read_text())
    _check_records([{k: v for k, v in r.items() if k != "mfu"} for r in records],
                   ["jax", "torch"], ["train-step"])  # fmt: skip
    jax_record, torch_record = records
    # Same computation, same count: torch's FLOP counter agrees with the analytic count.
    assert torch_record["flops_torch"] == pytest.approx(torch_record["flops"], rel=0.05)
    assert jax_record["speedup_vs_torch"] == pytest.approx(
        torch_record["median_s"] / jax_record["median_s"]
    )
    assert jax_record["mfu"] == pytest.approx(jax_record["flops_per_s"] / 1e12)
    assert chart.stat().st_size > 1000


@pytest.mark.slow
def test_torch_compile_stylize_end_to_end(tmp_path):
    """torch.compile of the train step takes minutes on 2 shared cores; stylize ~half a minute."""
    pytest.importorskip("torch")
    out = tmp_path / "out.json"
    argv = ["--frameworks", "torch-compile", "--task", "stylize", *TINY, "--json", str(out)]
    assert bench(*argv, "--no-chart") == 0
    records = json.loads(out.read_text())
    _check_records(records, ["torch-compile"], ["stylize"])
    assert records[0]["torch_compile_mode"] == "default"
    assert records[0]["flops_torch"] == pytest.approx(records[0]["flops"], rel=0.05)
    assert not (tmp_path / "out.png").exists()


def test_jax_worker_imports_the_step_module_alone():
    """The JAX worker process runs the train step without the training loop's dependencies."""
    code = (
        "import sys, fnst_jax.bench.__main__, fnst_jax.bench.jax_worker\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('grain', 'orbax', 'tensorboardX', 'tensorboard', 'configs', 'torch') "
        "or m == 'fnst_jax.train_lib'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- command line


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    out = str(tmp_path / "x.json")
    argv = ["--frameworks", "jax", "--style-layers", "relu1_1,relu2_1", "--vgg-layers", "3"]
    assert bench(*argv, "--json", out) == 2
    assert "relu2_2" in capsys.readouterr().err  # the content layer needs 4 convs
    assert bench("--frameworks", "jax", "--style-layers", "relu9_9", "--json", out) == 2
    assert "relu9_9" in capsys.readouterr().err
    assert bench("--frameworks", "jax,mxnet", "--json", out) == 2
    assert "mxnet" in capsys.readouterr().err
    assert bench("--frameworks", "jax", "--steps", "0", "--json", out) == 2
    assert "--steps" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_flags_in_both_spellings_and_lists(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(harness, "run_benchmarks", lambda options, *_: seen.update(o=options) or [])
    argv = ["--batch_size", "2,8", "--image-size", "64", "--dtype", "float32,bfloat16",
            "--task", "stylize", "--cpus", "0,1", "--no-chart",
            "--json", str(tmp_path / "x.json")]  # fmt: skip
    assert bench(*argv) == 0
    options = seen["o"]
    assert options.batch_sizes == (2, 8) and options.image_sizes == (64,)
    assert options.dtypes == ("float32", "bfloat16") and options.cpus == (0, 1)
    configs = harness.make_configs(options, "params.npz")
    assert len(configs) == 2 * 2 * 3  # batch sizes x dtypes x frameworks
    assert {c.pad for c in configs} == {0}  # stylize runs unpadded


def test_merge_of_earlier_runs(tmp_path, capsys):
    base = dict(task="stylize", batch_size=1, image_size=32, dtype="float32", device="cpu",
                mode="same", min_s=0.1, max_s=0.3, images_per_s=1.0, compile_s=1.0,
                peak_mem_bytes=2**30, flops=1e9, flops_per_s=1e9)  # fmt: skip
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps([dict(base, framework="jax", median_s=0.1)]))
    b.write_text(json.dumps([dict(base, framework="torch", median_s=0.2)]))
    out = tmp_path / "all.json"
    # The form benchmarks/gpu.sh uses: the files one after another.
    assert bench("--merge", str(a), str(b), "--json", str(out), "--no-chart") == 0
    merged = json.loads(out.read_text())
    assert merged[0]["speedup_vs_torch"] == pytest.approx(2.0)
    assert "2.00x" in capsys.readouterr().out
    assert bench("--merge", f"{a},{b}", "--json", str(out), "--no-chart") == 0


# ----------------------------------------------------------------------------- machine load


def _fake_worker(config, scratch, timeout):
    """A worker process's record without the process (the load logic around it is tested)."""
    return dict(framework=config.framework, task=config.task, batch_size=config.batch_size,
                image_size=config.image_size, dtype=config.dtype, device=config.device,
                mode=config.mode, median_s=0.1, min_s=0.1, max_s=0.1, images_per_s=10.0,
                compile_s=1.0, peak_mem_bytes=2**30, flops=1e9, flops_per_s=1e10)  # fmt: skip


@pytest.fixture
def fake_workers(monkeypatch):
    monkeypatch.setattr(harness, "write_transformer_params", lambda path: None)
    monkeypatch.setattr(harness, "run_worker_process", _fake_worker)
    monkeypatch.setattr(harness, "IDLE_POLL_S", 0.01)


def test_idle_machine_runs_unmarked(tmp_path, fake_workers, capsys):
    out = tmp_path / "out.json"
    assert bench("--frameworks", "jax,torch", "--json", str(out), "--no-chart") == 0
    records = json.loads(out.read_text())
    assert [r["framework"] for r in records] == ["jax", "torch"]
    assert all(r["loaded"] is False and r["cores"] == CORES for r in records)
    captured = capsys.readouterr()
    assert "*" not in captured.out and "busy" not in captured.err


def test_busy_machine_is_waited_for(tmp_path, fake_workers, machine_load, capsys):
    machine_load[:] = [5.0, 4.0, 1.5]  # quiet after two polls
    out = tmp_path / "out.json"
    assert bench("--frameworks", "jax", "--json", str(out), "--no-chart", "--wait-idle", "1") == 0
    (record,) = json.loads(out.read_text())
    assert record["load_before"] == 1.5 and record["loaded"] is False
    assert "machine busy (load 5.00 > 2 cores): waiting up to 1 s" in capsys.readouterr().err


def test_loaded_machine_is_refused(tmp_path, fake_workers, machine_load, capsys):
    machine_load[:] = [9.0]
    out = tmp_path / "out.json"
    assert bench("--frameworks", "jax", "--json", str(out), "--wait-idle", "0.05") == 2
    err = capsys.readouterr().err
    assert "waiting up to 0.05 s for it to quiet down (--wait-idle)" in err
    (error,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert error.startswith("error: the machine is busy: its 1-minute load average is 9.00, ")
    assert "above its 2 usable cores, after waiting 0.05 s (--wait-idle)" in error
    assert "or pass --allow-loaded to measure anyway" in error and "Traceback" not in err
    assert not out.exists()


def test_machine_loaded_midway_keeps_what_was_measured(
    tmp_path, fake_workers, machine_load, capsys
):
    machine_load[:] = [IDLE_LOAD, IDLE_LOAD, 9.0]  # jax: before, after; torch: before ...
    out = tmp_path / "out.json"
    assert bench("--frameworks", "jax,torch", "--json", str(out), "--wait-idle", "0") == 2
    err = capsys.readouterr().err
    assert "load average is 9.00, above its 2 usable cores, after waiting 0 s" in err
    assert f"the records measured before are in {out}" in err
    assert [r["framework"] for r in json.loads(out.read_text())] == ["jax"]


def test_allow_loaded_measures_and_marks(tmp_path, fake_workers, machine_load, capsys):
    machine_load[:] = [IDLE_LOAD, IDLE_LOAD, 3.5, 5.75]  # jax idle; torch loaded before & after
    out, chart = tmp_path / "out.json", tmp_path / "out.png"
    assert bench("--frameworks", "jax,torch", "--json", str(out), "--allow-loaded") == 0
    jax_record, torch_record = json.loads(out.read_text())
    assert jax_record["loaded"] is False
    assert torch_record["loaded"] is True
    assert (torch_record["load_before"], torch_record["load_after"]) == (3.5, 5.75)
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert any(line.startswith("torch* ") for line in lines)
    assert any(line.startswith("jax ") for line in lines)
    assert "* measured under load: the machine's 1-minute load average (3.50-5.75) was above " \
        "its 2 usable cores" in captured.out  # fmt: skip
    assert "measuring anyway (--allow-loaded)" in captured.err
    assert chart.stat().st_size > 1000


def test_load_fields_leave_out_the_workers_own_share():
    # 2 cores busy for 60 s: the worker alone adds 2 * (1 - 1/e) = 1.26 to the 1-minute load.
    fields = harness.load_fields(0.5, 2.3, 2, worker_cpu_s=120.0, wall_s=60.0)
    assert fields["worker_load"] == pytest.approx(1.26, abs=0.01)
    assert fields["loaded"] is False  # the others' ~1.04 is below the 2 cores
    assert harness.load_fields(0.5, 3.5, 2, worker_cpu_s=120.0, wall_s=60.0)["loaded"]
    assert harness.load_fields(2.5, 0.5, 2, worker_cpu_s=0.0, wall_s=1.0)["loaded"]  # before
    assert not harness.load_fields(2.0, 2.0, 2, worker_cpu_s=0.0, wall_s=0.0)["loaded"]


def test_real_load_source_and_cores():
    assert REAL_LOAD_AVERAGE() >= 0  # whatever the machine's load, a number
    assert REAL_USABLE_CORES() >= 1


# ----------------------------------------------------------------------------- pieces


def test_measure_times_steps_after_warmup():
    calls = []
    timing = measure.measure(lambda: calls.append(1), lambda _: None, steps=4, warmup=3)
    assert len(calls) == 7 and len(timing["times_s"]) == 4
    assert timing["min_s"] <= timing["median_s"] <= timing["max_s"]


def test_random_vgg_fixture_is_what_the_bench_loads(random_vgg):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = measure.random_vgg(16)
    np.testing.assert_array_equal(
        np.asarray(loaded.params["conv3_1"]["kernel"]),
        np.asarray(random_vgg.params["conv3_1"]["kernel"]),
    )
