"""The benchmark's report (fnst_jax.bench.report): MFU peaks, ratios, the table, merging."""

from __future__ import annotations

import json

import pytest

from fnst_jax.bench import BenchError, report

BASE = dict(task="train-step", batch_size=4, image_size=64, dtype="float32", device="cpu",
            mode="same", min_s=0.1, max_s=0.3, images_per_s=1.0, compile_s=1.0,
            peak_mem_bytes=2**30, flops=1e9, flops_per_s=1e9)  # fmt: skip


def test_ratios_and_table_with_a_failed_run():
    records = [
        dict(BASE, framework="jax", median_s=0.1),
        dict(BASE, framework="torch", median_s=0.2),
        dict(BASE, framework="torch-compile", error="timed out after 10 s"),
    ]
    report.add_ratios(records)
    assert records[0]["speedup_vs_torch"] == pytest.approx(2.0)
    assert "speedup_vs_torch_compile" not in records[0]
    table = report.format_table(records)
    assert "FAILED: timed out after 10 s" in table and "2.00x" in table


def test_table_marks_records_measured_under_load():
    load = dict(load_before=0.3, load_after=1.1, worker_load=0.9, cores=2)
    records = [
        dict(BASE, **load, framework="jax", median_s=0.1, loaded=False),
        dict(BASE, **dict(load, load_before=3.5, load_after=5.7), framework="torch-compile",
             median_s=0.2, loaded=True),
    ]  # fmt: skip
    lines = report.format_table(records).splitlines()
    assert lines[2].startswith("jax ") and lines[3].startswith("torch-compile* ")
    assert lines[2].index(" train-step") == lines[3].index(" train-step")  # columns kept
    assert lines[-1].startswith("* measured under load: the machine's 1-minute load average ")
    assert "(3.50-5.70) was above its 2 usable cores" in lines[-1]
    assert "measured under load" not in report.format_table(records[:1])
    assert "measured under load" not in report.format_table([dict(BASE, framework="jax",
                                                                  median_s=0.1)])  # fmt: skip


def test_peak_lookup_and_override(monkeypatch):
    # A table of its own, so the test checks the lookup, not the datasheet figures.
    monkeypatch.setattr(report, "PEAK_TFLOPS", {("X9", "bfloat16"): 100.0, ("X9", "float32"): 5.0})
    gpu = {"device": "gpu", "device_name": "ACME X9 SXM", "dtype": "bfloat16"}
    assert report.peak_tflops(gpu, None) == 100.0  # the name contains the fragment
    assert report.peak_tflops(dict(gpu, dtype="float32"), None) == 5.0  # the record's dtype
    assert report.peak_tflops(dict(gpu, device_name="ACME Y1"), None) is None  # no entry
    assert report.peak_tflops(dict(gpu, device="cpu"), None) is None  # no peak on CPU
    assert report.peak_tflops(dict(gpu, device="cpu"), 2.5) == 2.5  # the override wins
    assert report.peak_tflops(gpu, 2.5) == 2.5
    record = dict(BASE, framework="jax", median_s=0.1, device="gpu", device_name="ACME X9")
    report.add_mfu(record, None)
    assert record["mfu"] == pytest.approx(1e9 / 5e12)
    failed = dict(gpu, error="out of memory")
    report.add_mfu(failed, None)
    assert "mfu" not in failed


def test_real_table_has_the_gpus_the_benchmark_runs_on():
    gpu = {"device": "gpu", "dtype": "bfloat16"}
    for name in ("NVIDIA H200", "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", "NVIDIA L4"):
        assert report.peak_tflops(dict(gpu, device_name=name), None), name


def test_merge_recomputes_ratios(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps([dict(BASE, framework="jax", median_s=0.1, speedup_vs_torch=9.0)]))
    b.write_text(json.dumps([dict(BASE, framework="torch", median_s=0.3),
                             dict(BASE, framework="torch-compile", error="failed")]))  # fmt: skip
    records = report.read_records([a, b])
    assert [r["framework"] for r in records] == ["jax", "torch", "torch-compile"]
    assert records[0]["speedup_vs_torch"] == pytest.approx(3.0)


def test_merge_refuses_what_is_not_a_benchmark_json(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"framework": "jax"}))
    with pytest.raises(BenchError, match=r"x\.json: not a benchmark JSON"):
        report.read_records([path])
    path.write_text(json.dumps([{"framework": "jax", "median_s": 1.0}]))
    with pytest.raises(BenchError, match=r"x\.json: record 0 lacks task"):
        report.read_records([path])
    path.write_text("[{")
    with pytest.raises(BenchError, match=r"x\.json: cannot read"):
        report.read_records([path])
