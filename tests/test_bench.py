"""The benchmark harness: end to end at a tiny size for each framework, its JSON, the FLOP counts.

Timings are not asserted (benchmarks print numbers; tests check the machinery). The end-to-end
runs use `--cpus 0` (one core: the shared 2-core test machine makes two OpenMP threads crawl)
and JAX_DISABLE_MOST_OPTIMIZATIONS in the workers so compilation stays short.
"""

from __future__ import annotations

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from fnst_jax import bench, train_lib
from fnst_jax.losses import LossSpec

TINY = [
    "--batch-size", "1", "--image-size", "32", "--steps", "2", "--warmup", "1",
    "--pad", "4", "--style-layers", "relu1_1,relu2_1", "--vgg-layers", "4", "--cpus", "0",
]  # fmt: skip
STYLE = ("relu1_1", "relu2_1")


def _check_records(records: list[dict], frameworks: list[str], tasks: list[str]) -> None:
    assert [(r["framework"], r["task"]) for r in records] == [
        (f, t) for t in tasks for f in frameworks
    ]
    for record in records:
        assert "error" not in record, record.get("error")
        for key in bench.REQUIRED_KEYS:
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
        task: bench.analytic_flops(task, 1, 32, pad=4 if task == "train-step" else 0,
                                   style_layers=STYLE)
        for task in tasks
    }  # fmt: skip


@pytest.fixture
def fast_workers(monkeypatch):
    monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")


def test_jax_end_to_end(tmp_path, fast_workers, capsys):
    out = tmp_path / "out.json"
    argv = ["--frameworks", "jax", "--task", "train-step,stylize", *TINY, "--json", str(out)]
    assert bench.main(argv) == 0
    records = json.loads(out.read_text())
    _check_records(records, ["jax"], ["train-step", "stylize"])
    train = records[0]
    # XLA's own count of the compiled step agrees with the analytic one (loosely at 32 px,
    # where padding taps XLA skips and the SAME-then-crop border XLA adds are large).
    assert train["flops_xla"] == pytest.approx(train["flops"], rel=0.25)
    assert (tmp_path / "out.png").stat().st_size > 1000
    table = capsys.readouterr().out
    assert "train-step" in table and "stylize" in table and "img/s" in table


def test_torch_end_to_end_and_flops_agree(tmp_path, fast_workers):
    pytest.importorskip("torch")
    out = tmp_path / "out.json"
    chart = tmp_path / "chart.png"
    argv = ["--frameworks", "jax,torch", "--task", "train-step", *TINY, "--json", str(out)]
    assert bench.main([*argv, "--chart", str(chart), "--peak-tflops", "1"]) == 0
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
    assert bench.main([*argv, "--no-chart"]) == 0
    records = json.loads(out.read_text())
    _check_records(records, ["torch-compile"], ["stylize"])
    assert records[0]["torch_compile_mode"] == "default"
    assert records[0]["flops_torch"] == pytest.approx(records[0]["flops"], rel=0.05)
    assert not (tmp_path / "out.png").exists()


# ----------------------------------------------------------------------------- FLOP counts


@pytest.mark.parametrize("size,batch,pad", [(128, 2, 40), (256, 4, 40)])
def test_xla_cost_analysis_agrees_with_analytic_flops(size, batch, pad, random_vgg):
    """The project's jitted train step (lowered, not compiled) against the analytic count."""
    spec = LossSpec()
    graphdef, state, tx = train_lib.init_state(
        bench._train_config("float32"), jax.random.PRNGKey(0)
    )
    channels = {"relu1_1": 64, "relu2_1": 128, "relu3_1": 256, "relu4_1": 512, "relu5_1": 512}
    grams = {layer: jnp.zeros((1, c, c)) for layer, c in channels.items()}
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    step = train_lib.make_jit_step(
        mesh, tx, graphdef=graphdef, spec=spec, pad=pad, dtype=jnp.float32
    )
    batch_images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
    analysis = step.lower(state, batch_images, random_vgg, grams).cost_analysis()
    expected = bench.analytic_flops("train-step", batch, size, pad=pad)
    assert analysis["flops"] == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize("task", ["train-step", "stylize"])
def test_torch_flop_counter_agrees_with_analytic_flops(task, random_vgg):
    torch = pytest.importorskip("torch")
    from fnst_jax import bench_torch
    from fnst_jax.export import flat_params
    from fnst_jax.transformer_net import TransformerNet

    size, batch, pad = 48, 2, 6
    spec = LossSpec(style_layers=("relu1_1", "relu2_1", "relu3_1"))
    device = torch.device("cpu")
    model = bench_torch.load_transformer(flat_params(TransformerNet()))
    images = torch.rand(batch, 3, size, size) * 255
    if task == "stylize":
        fn = bench_torch.make_stylize(model, device=device, dtype="float32", compile_mode=None)
    else:
        vgg = bench_torch.torch_vgg(random_vgg, device)
        grams = bench_torch.ref.style_grams(vgg, images[:1], spec.style_layers)
        fn = bench_torch.make_train_step(
            model, vgg, grams, spec, pad=pad, lr=1e-3, device=device, dtype="float32",
            compile_mode=None,
        )  # fmt: skip
    counted = bench_torch.count_flops(lambda: fn(images))
    expected = bench.analytic_flops(
        task, batch, size, pad=pad if task == "train-step" else 0, style_layers=spec.style_layers
    )
    assert counted == pytest.approx(expected, rel=0.01)


def test_analytic_flops_by_hand():
    """Stylize at 4x4 px, batch 1: every layer's 2*k*k*cin*cout*h*w written out."""
    expected = 2 * (
        81 * 3 * 32 * 16
        + 9 * 32 * 64 * 4
        + 9 * 64 * 128 * 1
        + 10 * 9 * 128 * 128 * 1
        + 9 * 128 * 64 * 4
        + 9 * 64 * 32 * 16
        + 81 * 32 * 3 * 16
    )
    assert bench.analytic_flops("stylize", 1, 4) == expected
    # 5 px is padded to 8 by the network itself.
    assert bench.analytic_flops("stylize", 1, 5) == bench.analytic_flops("stylize", 1, 8)
    train = bench.analytic_flops("train-step", 1, 8, pad=0, style_layers=("relu1_1",),
                                 content_layer="relu1_1")  # fmt: skip
    transformer = bench.analytic_flops("stylize", 1, 8)
    vgg1 = 2 * 9 * 3 * 64 * 64
    gram = 2 * 64 * 64 * 64
    first_conv = 2 * 81 * 3 * 32 * 64
    assert train == 3 * transformer - first_conv + 3 * vgg1 + 3 * gram


# ----------------------------------------------------------------------------- pieces


def test_measure_times_steps_after_warmup():
    calls = []
    timing = bench.measure(lambda: calls.append(1), lambda _: None, steps=4, warmup=3)
    assert len(calls) == 7 and len(timing["times_s"]) == 4
    assert timing["min_s"] <= timing["median_s"] <= timing["max_s"]


def test_ratios_and_table_with_a_failed_run():
    base = dict(task="train-step", batch_size=4, image_size=64, dtype="float32", device="cpu",
                mode="same", min_s=0.1, max_s=0.3, images_per_s=1.0, compile_s=1.0,
                peak_mem_bytes=2**30, flops=1e9, flops_per_s=1e9)  # fmt: skip
    records = [
        dict(base, framework="jax", median_s=0.1),
        dict(base, framework="torch", median_s=0.2),
        dict(base, framework="torch-compile", error="timed out after 10 s"),
    ]
    bench.add_ratios(records)
    assert records[0]["speedup_vs_torch"] == pytest.approx(2.0)
    assert "speedup_vs_torch_compile" not in records[0]
    table = bench.format_table(records)
    assert "FAILED: timed out after 10 s" in table and "2.00x" in table


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    out = str(tmp_path / "x.json")
    argv = ["--frameworks", "jax", "--style-layers", "relu1_1,relu2_1", "--vgg-layers", "3"]
    assert bench.main([*argv, "--json", out]) == 2
    assert "relu2_2" in capsys.readouterr().err  # the content layer needs 4 convs
    assert bench.main(["--frameworks", "jax", "--style-layers", "relu9_9", "--json", out]) == 2
    assert "relu9_9" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--frameworks", "jax,mxnet"])
    assert not (tmp_path / "x.json").exists()


def test_peak_table_and_override():
    record = {"device": "gpu", "device_name": "NVIDIA H200", "dtype": "bfloat16"}
    assert bench.peak_tflops(record, None) == 989.0
    assert bench.peak_tflops(dict(record, dtype="float32"), None) == 67.0
    assert bench.peak_tflops(dict(record, device="cpu"), None) is None
    assert bench.peak_tflops(dict(record, device="cpu"), 2.5) == 2.5


def test_random_vgg_fixture_is_what_the_bench_loads(random_vgg):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = bench._load_vgg(16)
    np.testing.assert_array_equal(
        np.asarray(loaded.params["conv3_1"]["kernel"]),
        np.asarray(random_vgg.params["conv3_1"]["kernel"]),
    )
