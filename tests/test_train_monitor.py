"""The loss chart: every weighted term present, the quality panel, the best step marked; and
what Monitor writes of a validation."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from configs import smoke
from fnst_jax import train_monitor
from fnst_jax.train_monitor import CHART_FIGURES, Monitor, loss_chart

FIGURES = {
    "style_reduction": 2.0,
    "content_change": 0.8,
    "luminance_ratio": 1.1,
    "contrast_ratio": 0.9,
}


def history(stability: bool = False, figures: bool = True) -> list[dict]:
    records = []
    for step in (10, 20, 30):
        terms = {"content": 3.0 / step, "style": 5.0 / step, "tv": 0.1, "total": 1.0}
        if stability:
            terms["stability"] = 0.5 / step
        records.append({"step": step, "split": "train", **terms})
    for step in (0, 15, 30):
        quality = {k: v + step / 100 for k, v in FIGURES.items()} if figures else {}
        records.append({"step": step, "split": "validation", "total": 2.0 - step / 30, **quality})
    return records


def labelled_lines(ax) -> dict[str, np.ndarray]:
    return {line.get_label(): np.asarray(line.get_xydata()) for line in ax.get_lines()}


@pytest.mark.parametrize("stability", [False, True])
def test_chart_plots_every_weighted_term_present(stability):
    (losses, _) = loss_chart(history(stability=stability)).axes
    lines = labelled_lines(losses)
    expected = {"content loss", "style loss", "tv loss", "validation total"}
    assert set(lines) == expected | ({"stability loss"} if stability else set())
    np.testing.assert_allclose(lines["style loss"], [[10, 0.5], [20, 0.25], [30, 5 / 30]])


def test_chart_has_a_quality_panel_and_marks_the_best_step():
    losses, quality = loss_chart(history(), best_step=15).axes
    lines = labelled_lines(quality)
    for label, key in CHART_FIGURES.items():
        # The validation records, step 0 (the untrained network) included.
        np.testing.assert_allclose(lines[label][:, 0], [0, 15, 30])
        np.testing.assert_allclose(
            lines[label][:, 1], [FIGURES[key] + s / 100 for s in (0, 15, 30)]
        )
    for ax in (losses, quality):
        (best,) = [line for line in ax.get_lines() if line.get_label() == "best: step 15"]
        assert set(best.get_xdata()) == {15}  # a vertical line at the best step
        assert "best: step 15" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_chart_draws_each_style_of_a_multi_style_run():
    records = history()
    for record in records:
        if record["split"] == "validation":
            record.update({"candy/total": 3.0, "udnie/total": 1.0})
    lines = labelled_lines(loss_chart(records).axes[0])
    assert "validation total (mean over styles)" in lines
    np.testing.assert_allclose(lines["validation: candy"], [[0, 3], [15, 3], [30, 3]])
    np.testing.assert_allclose(lines["validation: udnie"][:, 1], [1, 1, 1])


def test_chart_without_quality_figures_or_best_is_the_loss_panel_alone():
    (losses,) = loss_chart(history(figures=False)).axes
    assert not [line for line in losses.get_lines() if "best" in line.get_label()]
    assert loss_chart([r for r in history() if r["split"] == "validation"]) is None


def test_monitor_logs_validation_figures_and_the_best_step(tmp_path):
    config = smoke.get_config()
    monitor = Monitor(tmp_path, config, start_step=0, best_step=None)
    try:
        monitor.log_train(2, {"content": 1.0, "style": 2.0, "tv": 0.1, "total": 3.1}, 0)
        monitor.log_validation(3, {"total": np.float32(2.5), **FIGURES}, best_step=3)
        monitor.log_validation(6, {"total": 2.6, **FIGURES}, best_step=3)
    finally:
        monitor.close()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[1] == {"step": 3, "split": "validation", "total": 2.5, **FIGURES}
    with Image.open(tmp_path / train_monitor.CHART_FILE) as chart:
        assert chart.size == (800, 900)  # two panels of 8 x 4.5 in at 100 dpi
    # A run resumed at step 2 keeps the records up to step 2 only (the later ones are redone).
    resumed = Monitor(tmp_path, config, start_step=2, best_step=3)
    try:
        assert [(r["step"], r["split"]) for r in resumed.history] == [(2, "train")]
    finally:
        resumed.close()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


def test_drawing_the_chart_leaves_matplotlib_global_state_alone(tmp_path):
    """Importing the monitor and writing a chart selects no backend and loads no pyplot (a
    fresh interpreter: this one's tests may have loaded pyplot themselves)."""
    script = (
        "import sys\n"
        "from fnst_jax import train_monitor\n"
        "assert 'matplotlib' not in sys.modules\n"
        f"fig = train_monitor.loss_chart({history()!r}, best_step=15)\n"
        f"fig.savefig({str(tmp_path / 'chart.png')!r}, format='png')\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    with Image.open(tmp_path / "chart.png") as chart:
        assert chart.size == (800, 900)
