"""The best model of a run (WORKDIR/best.npz) and the validation's quality figures, end to end
on the smoke config, in-process: which step is kept, its metadata, the chart's mark, resume,
and evaluate/stylize taking best.npz. One run, resumed once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from configs import smoke
from fnst_jax import (
    checkpoint,
    evaluate,
    export,
    model_file,
    quality,
    train_lib,
    train_monitor,
    validation,
)
from fnst_jax.stylize import cli as stylize_cli


def smoke_config(style_image: Path, steps: int):
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


MEASURED_FIGURES = validation.figures


def scripted_totals(monkeypatch, totals: list[float]) -> list[float]:
    """Validation totals, in call order, in place of the measured ones (which a short smoke
    run does not order reliably); everything else is measured."""
    queue = list(totals)

    def figures(*args, **kwargs):
        return dict(MEASURED_FIGURES(*args, **kwargs), total=queue.pop(0))

    monkeypatch.setattr(validation, "figures", figures)
    return queue  # empty once every scripted validation ran


@pytest.mark.slow
@pytest.mark.usefixtures("fast_compile")
def test_best_model_is_the_lowest_validation_loss_and_survives_a_resume(
    tmp_path, style_image, chart_marks, monkeypatch
):
    # Steps 0 (the untrained network: not a candidate) and 3, measured.
    train_lib.train_and_evaluate(smoke_config(style_image, steps=3), str(tmp_path))
    validations = validation_records(tmp_path)
    assert sorted(validations) == [0, 3]
    for figures in validations.values():  # the quality figures, logged beside the losses
        assert set(quality.KEYS) <= figures.keys()
        assert all(np.isfinite(figures[key]) for key in quality.KEYS)
    # The untrained network's output is nearly flat: most of the photo's content is gone.
    assert validations[0]["content_change"] > 0.5

    best_path = tmp_path / model_file.BEST_FILENAME
    best_meta = model_file.read_metadata(best_path)
    assert best_meta["step"] == 3
    assert best_meta["validation"] == validations[3]  # the logged figures, exactly
    assert best_meta["selected_by"] == checkpoint.BEST_SELECTION
    last_meta = model_file.read_metadata(tmp_path)  # model.npz: the last step
    assert last_meta["step"] == 3 and last_meta["validation"] == validations[3]
    assert "selected_by" not in last_meta
    assert chart_marks[-1] == 3

    # evaluate takes best.npz and finds the validation's figures on the validation images.
    listed = (tmp_path / validation.VALIDATION_FILE).read_text().splitlines()
    report = tmp_path / "best.json"
    argv = [
        "evaluate",
        "--model",
        str(best_path),
        "--images",
        *listed,
        "--json",
        str(report),
        "--baseline-iterations",
        "none",
        "--no-grid",
        "--nokeep-brightness",
    ]  # fmt: skip  (the network's own output, as validated)
    assert evaluate.main(argv) == 0
    summary = json.loads(report.read_text())["summary"]
    # One image at a time and clipped (evaluate) vs the batch (validation, also clipped):
    # float32 rounding apart.
    assert summary["total_loss"] == pytest.approx(validations[3]["total"], rel=1e-4)
    for key in quality.KEYS:
        assert summary[key] == pytest.approx(validations[3][key], rel=1e-4), key
    # stylize.py takes it too.
    out = tmp_path / "stylized.png"
    assert stylize_cli.main(["stylize", "--model", str(best_path), "--output",
                             str(out), "--quiet", listed[0]]) == 0  # fmt: skip
    with Image.open(out) as image:
        assert image.size == (32, 32)

    # Resumed to step 9, validated at 6 (worse: best.npz stays step 3's, the chart keeps
    # marking step 3, read back from best.npz) and at 9 (better: best.npz is now step 9's
    # model, model.npz's too).
    unused = scripted_totals(monkeypatch, [validations[3]["total"] + 1.0, 0.5])
    chart_marks.clear()
    train_lib.train_and_evaluate(smoke_config(style_image, steps=9), str(tmp_path))
    assert not unused
    assert chart_marks[-1] == 9 and set(chart_marks[:-1]) == {3}
    best, meta = export.load_model(best_path)
    assert meta["step"] == 9 and meta["validation"]["total"] == 0.5
    np.testing.assert_equal(export.flat_params(best), model_file.read_model(tmp_path)[0])
