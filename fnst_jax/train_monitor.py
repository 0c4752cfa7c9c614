"""What the user sees of a training run: progress, logs, metrics, TensorBoard, chart, samples.

Writes (process 0 only):
  WORKDIR/metrics.jsonl          one JSON record per logged step ({"step", "split", ...})
  WORKDIR/tensorboard/           TensorBoard event files (scalars and sample images)
  WORKDIR/loss.png               the weighted loss terms over steps (the article's chart) and,
                                 below, the validation quality figures (`fnst_jax.quality`);
                                 both mark the step of the best model (best.npz)
  WORKDIR/samples/step_XXXXXX.png  validation inputs (top row) and their stylizations
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import ml_collections
import numpy as np
from absl import logging
from PIL import Image

from fnst_jax.files import write_atomic, write_text_atomic
from fnst_jax.image_io import to_uint8

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METRICS_FILE = "metrics.jsonl"
CHART_FILE = "loss.png"
SAMPLES_DIR = "samples"
# The weighted loss terms charted, each when the metrics hold it with a positive value
# (`stability` only exists when the stability term is on).
CHART_TERMS = ("content", "style", "tv", "stability")
# The validation quality figures of the chart's second panel: label -> metrics key.
CHART_FIGURES = {
    "style reduction (higher: more stylized)": "style_reduction",
    "content change (lower: closer to the photo)": "content_change",
    "luminance, output / photo": "luminance_ratio",
    "contrast, output / photo": "contrast_ratio",
}


class Monitor:
    """Progress bar or log lines, metrics.jsonl, TensorBoard, the loss chart and sample grids.
    Every process keeps one (for the images/s figure); only an `enabled` one writes."""

    def __init__(
        self,
        workdir: Path,
        config: ml_collections.ConfigDict,
        *,
        start_step: int,
        enabled: bool = True,
        best_step: int | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.enabled = enabled
        self.best_step = best_step  # the step best.npz is from, marked on the chart
        self.total_steps = config.train.steps
        self.batch_size = config.train.batch_size
        self.learning_rate = config.train.lr
        self.start_step = start_step
        self.step = start_step
        self._images = 0
        self._window_start = time.perf_counter()
        self._window_images = 0
        self.images_per_s = 0.0
        self.history: list[dict] = []
        self._bar = None
        self._writer = None
        if not enabled:
            return
        self.history = self._read_history(start_step)
        SummaryWriter = _summary_writer_class()
        self._writer = SummaryWriter(str(self.workdir / "tensorboard"), purge_step=start_step)
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total_steps, initial=start_step, unit="step", dynamic_ncols=True
            )

    def _read_history(self, start_step: int) -> list[dict]:
        """Records of the run so far; those past the resumed step are dropped (they are
        recomputed), so a resumed run's metrics have no repeated steps."""
        path = self.workdir / METRICS_FILE
        if not path.exists():
            return []
        records = [r for r in read_metrics(self.workdir) if r.get("step", 0) <= start_step]
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))
        return records

    def tick(self, batch_size: int) -> None:
        self.step += 1
        self._window_images += batch_size
        if self._bar is not None:
            self._bar.update(1)

    def _append(self, record: dict) -> None:
        self.history.append(record)
        with open(self.workdir / METRICS_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")

    def log_train(self, step: int, metrics: dict[str, float], bad_files: int) -> None:
        now = time.perf_counter()
        if now > self._window_start:
            self.images_per_s = self._window_images / (now - self._window_start)
        self._window_start, self._window_images = now, 0
        if not self.enabled:
            return
        record = {"step": step, "split": "train", "images_per_s": self.images_per_s, **metrics}
        self._append(record)
        for key, value in metrics.items():
            self._writer.add_scalar(f"train/{key}", value, step)
        self._writer.add_scalar("train/images_per_s", self.images_per_s, step)
        self._writer.add_scalar("train/learning_rate", self.learning_rate, step)
        terms = ", ".join(f"{t} {metrics[t]:.3g}" for t in CHART_TERMS if t in metrics)
        summary = f"loss {metrics['total']:.4g} ({terms})"
        if self._bar is not None:
            self._bar.set_postfix_str(f"{summary}, {self.images_per_s:.1f} img/s", refresh=False)
        else:
            remaining = self.total_steps - step
            steps_per_s = self.images_per_s / self.batch_size
            eta = remaining / steps_per_s if steps_per_s > 0 else float("nan")
            logging.info(
                "step %d/%d  %s  %.1f img/s  ETA %s%s",
                step,
                self.total_steps,
                summary,
                self.images_per_s,
                _format_seconds(eta),
                f"  ({bad_files} bad files skipped)" if bad_files else "",
            )
        self.plot()

    def log_validation(self, step: int, terms: dict, best_step: int | None = None) -> None:
        """One validation's figures (loss terms, quality figures when present); `best_step`:
        the step of the best model so far, to mark on the chart."""
        if best_step is not None:
            self.best_step = best_step
        if not self.enabled:
            return
        metrics = {k: float(v) for k, v in terms.items()}
        self._append({"step": step, "split": "validation", **metrics})
        for key, value in metrics.items():
            self._writer.add_scalar(f"validation/{key}", value, step)
        self.plot()
        message = f"validation at step {step}: loss {metrics['total']:.4g}"
        if "style_reduction" in metrics:
            message += (
                f", style reduction {metrics['style_reduction']:.3g}x, content change "
                f"{metrics['content_change']:.3g}"
            )
        for key in metrics:
            if key.startswith("at") and key.endswith("/style_reduction"):
                at = key.removesuffix("/style_reduction")
                message += (
                    f"; at {at[2:]} px: style reduction {metrics[key]:.3g}x, content change "
                    f"{metrics[f'{at}/content_change']:.3g}"
                )
        if best_step == step:
            message += " (best so far: best.npz)"
        if self._bar is not None:
            self._bar.write(message)
        else:
            logging.info(message)

    def save_samples(self, step: int, inputs: np.ndarray, stylized: np.ndarray) -> None:
        if not self.enabled:
            return
        grid = sample_grid(inputs, stylized)
        path = self.workdir / SAMPLES_DIR / f"step_{step:06d}.png"
        write_atomic(path, lambda tmp: Image.fromarray(grid).save(tmp, format="PNG"))
        self._writer.add_image("samples", grid, step, dataformats="HWC")

    def plot(self) -> None:
        """Write WORKDIR/loss.png (`loss_chart`); nothing before the first train record."""
        fig = loss_chart(self.history, self.best_step)
        if fig is not None:
            write_atomic(self.workdir / CHART_FILE, lambda tmp: fig.savefig(tmp, format="png"))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()


def read_metrics(workdir: str | Path, split: str | None = None) -> list[dict]:
    """The records of WORKDIR/metrics.jsonl in file order ([] when there is none), those of
    one `split` ("train", "validation") when given. A line cut by a kill is skipped."""
    path = Path(workdir) / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        if split is None or record.get("split") == split:
            records.append(record)
    return records


def _summary_writer_class() -> type:
    """tensorboardX's SummaryWriter, imported without torch. tensorboardX.writer imports
    torch when it is installed (2-3 s of a training start on CPU) only to name torch.Tensor
    in its annotations; the monitor writes floats and numpy images."""
    if "torch" in sys.modules:  # already paid for
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # `import torch` raises ImportError meanwhile
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


def loss_chart(history: list[dict], best_step: int | None = None) -> Figure | None:
    """The article's chart from metrics records: each weighted loss term (`CHART_TERMS`) of
    the train records and the validation total over steps; below it, when validation
    records hold them, the quality figures (`CHART_FIGURES`). A vertical line marks
    `best_step` on both. None while there is no train record.

    A bare `Figure` (no pyplot): drawing selects no backend and registers no figure, so
    nothing global changes and nothing needs closing; `savefig` renders PNG with Agg."""
    from matplotlib.figure import Figure

    train = [r for r in history if r.get("split") == "train"]
    if not train:
        return None
    validation = [r for r in history if r.get("split") == "validation"]
    with_figures = [r for r in validation if "style_reduction" in r]
    panels = 2 if with_figures else 1
    fig = Figure(figsize=(8, 4.5 * panels), dpi=100)
    axes = fig.subplots(panels, 1, squeeze=False)
    losses, *rest = axes[:, 0]
    steps = [r["step"] for r in train]
    for term in CHART_TERMS:
        values = [r.get(term, np.nan) for r in train]
        if any(v > 0 for v in values):
            losses.plot(steps, values, label=f"{term} loss")
    if validation:
        styles = _style_names(validation)
        losses.plot(
            [r["step"] for r in validation],
            [r["total"] for r in validation],
            "k--",
            label="validation total" + (" (mean over styles)" if styles else ""),
        )
        for name in styles:
            losses.plot(
                [r["step"] for r in validation],
                [r.get(f"{name}/total", np.nan) for r in validation],
                ":",
                label=f"validation: {name}",
            )
    losses.set_yscale("log")
    losses.set_ylabel("weighted loss")
    if rest:
        (quality,) = rest
        quality_steps = [r["step"] for r in with_figures]
        for label, key in CHART_FIGURES.items():
            quality.plot(quality_steps, [r.get(key, np.nan) for r in with_figures], label=label)
        quality.axhline(1.0, color="0.6", linewidth=0.8)  # the unchanged photo's ratios
        quality.set_ylabel("validation quality figures")
    for ax in axes[:, 0]:
        if best_step is not None:
            ax.axvline(
                best_step, color="tab:purple", linestyle=":", label=f"best: step {best_step}"
            )
        ax.set_xlabel("step")
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _style_names(validation: list[dict]) -> list[str]:
    """The styles of a multi-style run's validation records (keys `<name>/total`)."""
    return [key[: -len("/total")] for key in validation[-1] if key.endswith("/total")]


def sample_grid(inputs: np.ndarray, stylized: np.ndarray) -> np.ndarray:
    """Inputs on the top row, their stylizations below, as one uint8 image. stylized:
    (B, H, W, 3), or (N, B, H, W, 3) for a multi-style model: a row per style."""
    rows = stylized if stylized.ndim == 5 else stylized[None]
    grid = [np.concatenate(list(inputs), axis=1)]
    grid += [np.concatenate(list(to_uint8(row)), axis=1) for row in rows]
    return np.concatenate(grid, axis=0)


def _format_seconds(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
