"""The best model of a run (WORKDIR/best.npz) and the validation's quality figures, end to end
on the smoke config, in-process: which step is kept, its metadata, the chart's mark, resume,
and evaluate/stylize taking best.npz."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from configs import smoke
from fnst_jax import checkpoint, evaluate, export, quality, train_lib, train_monitor
from fnst_jax.stylize import cli as stylize_cli


def smoke_config(style_image: Path, steps: int = 6):
    config = smoke.get_config()
    config.style_image = str(style_image)
    config.train.steps = steps
    return config


def validation_records(workdir: Path) -> dict[int, dict]:
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {
        r["step"]: {k: v for k, v in r.items() if k not in ("step", "split")}
        for r in records
        if r["split"] == "validation"
    }


@pytest.fixture
def chart_marks(monkeypatch) -> list:
    """The best step of every chart drawn."""
    marks = []
    real = train_monitor.loss_chart

    def recording(history, best_step=None):
        marks.append(best_step)
        return real(history, best_step)

    monkeypatch.setattr(train_monitor, "loss_chart", recording)
    return marks


def test_best_model_is_the_lowest_validation_loss_and_evaluates(
    tmp_path, style_image, chart_marks, fast_compile
):
    train_lib.train_and_evaluate(smoke_config(style_image), str(tmp_path))
    validations = validation_records(tmp_path)
    assert sorted(validations) == [0, 3, 6]
    for figures in validations.values():  # the quality figures, logged beside the losses
        assert set(quality.KEYS) <= figures.keys()
        assert all(np.isfinite(figures[key]) for key in quality.KEYS)
    # The untrained network's output is nearly flat: most of the photo's content is gone.
    assert validations[0]["content_change"] > 0.5

    best_step = min((s for s in validations if s > 0), key=lambda s: validations[s]["total"])
    best_meta = export.read_metadata(tmp_path / export.BEST_FILENAME)
    assert best_meta["step"] == best_step
    assert best_meta["validation"] == validations[best_step]  # the logged figures, exactly
    assert best_meta["selected_by"] == checkpoint.BEST_SELECTION
    last_meta = export.read_metadata(tmp_path)  # model.npz: the last step, as before
    assert last_meta["step"] == 6 and last_meta["validation"] == validations[6]
    assert "selected_by" not in last_meta
    assert chart_marks[-1] == best_step

    # evaluate takes best.npz and finds the validation's figures on the validation images.
    listed = (tmp_path / train_lib.VALIDATION_FILE).read_text().splitlines()
    report = tmp_path / "best.json"
    argv = ["evaluate", "--model", str(tmp_path / "best.npz"), "--images", *listed,
            "--json", str(report), "--baseline-iterations", "none", "--no-grid"]  # fmt: skip
    assert evaluate.main(argv) == 0
    summary = json.loads(report.read_text())["summary"]
    # One image at a time and clipped (evaluate) vs the batch (validation, also clipped):
    # float32 rounding apart.
    assert summary["total_loss"] == pytest.approx(validations[best_step]["total"], rel=1e-4)
    for key in quality.KEYS:
        assert summary[key] == pytest.approx(validations[best_step][key], rel=1e-4), key

    # stylize.py takes it too.
    out = tmp_path / "stylized.png"
    assert stylize_cli.main(["stylize", "--model", str(tmp_path / "best.npz"), "--output",
                             str(out), "--quiet", listed[0]]) == 0  # fmt: skip
    with Image.open(out) as image:
        assert image.size == (32, 32)


MEASURED_FIGURES = train_lib._validation_figures


def scripted_totals(monkeypatch, totals: list[float]) -> list[float]:
    """Validation totals, in call order, in place of the measured ones (which a 6-step smoke
    run does not order reliably); everything else is measured."""
    queue = list(totals)

    def figures(*args, **kwargs):
        return dict(MEASURED_FIGURES(*args, **kwargs), total=queue.pop(0))

    monkeypatch.setattr(train_lib, "_validation_figures", figures)
    return queue  # empty once every scripted validation ran


def test_best_model_survives_resume_and_is_replaced_only_by_a_better_one(
    tmp_path, style_image, chart_marks, monkeypatch, fast_compile
):
    best_path = tmp_path / export.BEST_FILENAME
    # Steps 0 (not a candidate) and 3.
    unused = scripted_totals(monkeypatch, [10.0, 4.0])
    train_lib.train_and_evaluate(smoke_config(style_image, steps=3), str(tmp_path))
    assert not unused
    best, meta = export.load_model(best_path)
    assert meta["step"] == 3 and meta["validation"]["total"] == 4.0
    at_step_3 = export.flat_params(best)
    np.testing.assert_equal(export.read_model(tmp_path)[0], at_step_3)  # model.npz, step 3
    saved = best_path.read_bytes()

    # Resumed to step 6, whose validation is worse: best.npz is left as it is, and the chart
    # marks step 3 from the start (read back from best.npz).
    unused = scripted_totals(monkeypatch, [5.0])
    chart_marks.clear()
    train_lib.train_and_evaluate(smoke_config(style_image, steps=6), str(tmp_path))
    assert not unused
    assert best_path.read_bytes() == saved
    assert set(chart_marks) == {3}
    params, last = export.read_model(tmp_path)
    assert last["step"] == 6 and last["validation"]["total"] == 5.0
    assert any(not np.array_equal(params[k], at_step_3[k]) for k in params)

    # Resumed to step 9, better: best.npz is now step 9's model (model.npz's too).
    unused = scripted_totals(monkeypatch, [1.0])
    train_lib.train_and_evaluate(smoke_config(style_image, steps=9), str(tmp_path))
    assert not unused
    best, meta = export.load_model(best_path)
    assert meta["step"] == 9 and meta["validation"]["total"] == 1.0
    np.testing.assert_equal(export.flat_params(best), export.read_model(tmp_path)[0])
    assert chart_marks[-1] == 9
