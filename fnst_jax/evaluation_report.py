"""Where a model's loss falls against the optimiser's, and the tables `evaluate` prints.

`equivalent_iterations` places the model's total loss on the optimiser's loss curve
(interpolated in log-iterations; a `Match`), `summarize` takes the means over the images of
one evaluation and `matched_sentence` says the result in words. `format_header`,
`format_row`, `print_summary` and `print_styles_table` print the per-image table, its summary
and, for `--model-style all`, one line per style.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fnst_jax import quality
from fnst_jax.evaluation import TERM_KEYS

# The quality figures in the printed table (header: report key); the JSON has every one of
# quality.KEYS.
QUALITY_COLUMNS = {
    "style_red": "style_reduction",
    "content_chg": "content_change",
    "lum_ratio": "luminance_ratio",
    "contr_ratio": "contrast_ratio",
}
# The figures shown per viewing size (`evaluation.VIEW_SIZES`): header suffix -> report key.
VIEW_COLUMNS = {"style": "style_reduction", "content": "content_change"}
QUALITY_LEGEND = (
    "style_red: style reduction (higher = more stylized; 1 = the photo); content_chg: "
    "content change (0 = the photo); lum_ratio, contr_ratio: the output's mean and std of "
    "luma over the photo's (fnst_jax.quality); style@N, content@N: the same figures with "
    "output and photo viewed at a longest side of N px"
)


@dataclasses.dataclass(frozen=True)
class Match:
    """Where the model's total loss falls on the optimiser's loss curve.

    bound "interpolated": the optimiser reaches the model's loss after `equivalent` (float)
    iterations; `iterations` is that count rounded. "fewer_than": the optimiser is already
    below the model at the first count evaluated, `iterations`. "more_than": the model is
    below the optimiser at every count, up to the last one, `iterations`. (equivalent is None
    for both bounds.)
    """

    bound: str
    iterations: int
    equivalent: float | None = None


def equivalent_iterations(model_total: float, baseline: Mapping[int, float]) -> Match | None:
    """The number of optimiser iterations worth the model: where the optimiser's loss curve
    first comes down to the model's loss. None for an empty baseline.

    The curve runs through the recorded (count, loss) points, linear in log(count) between
    them. The first crossing counts: on a curve that is not monotone (Adam; a mean of
    curves), the first count at which the loss is at or below the model's ends the search,
    and the crossing is interpolated within the segment before it. A loss equal to the
    model's at a recorded count matches that count exactly.
    """
    counts = sorted(baseline)
    if not counts:
        return None
    if counts[0] <= 0:
        raise ValueError(f"iteration counts must be positive (log scale), got {counts}")
    reached = [c for c in counts if baseline[c] <= model_total]
    if not reached:
        return Match("more_than", counts[-1])
    first = reached[0]
    if first == counts[0]:
        if baseline[first] < model_total:
            return Match("fewer_than", first)
        return Match("interpolated", first, float(first))
    before = counts[counts.index(first) - 1]
    above, below = baseline[before], baseline[first]  # above > model_total >= below
    fraction = (above - model_total) / (above - below)
    equivalent = float(np.exp(np.log(before) + fraction * (np.log(first) - np.log(before))))
    return Match("interpolated", round(equivalent), equivalent)


def summarize(results: Sequence[Mapping[str, Any]], iterations: Sequence[int]) -> dict[str, Any]:
    """Means over images of every term, the optimiser's mean loss per count, and where the
    mean model loss falls on the mean optimiser curve (`equivalent_iterations`)."""
    summary: dict[str, Any] = {
        key: float(np.mean([r[key] for r in results])) for key in TERM_KEYS.values()
    }
    for key in quality.KEYS:  # the quality figures: the means of the per-image figures
        if all(key in r for r in results):
            summary[key] = float(np.mean([r[key] for r in results]))
    if all("views" in r for r in results):
        summary["views"] = {
            size: {
                key: float(np.mean([r["views"][size][key] for r in results]))
                for key in quality.KEYS
            }
            for size in results[0]["views"]
        }
    summary["seconds_per_image"] = float(np.mean([r["seconds"] for r in results]))
    baseline = {it: float(np.mean([r["baseline"][str(it)] for r in results])) for it in iterations}
    summary["baseline"] = {str(it): loss for it, loss in baseline.items()}
    summary["ratio"] = {
        str(it): summary["total_loss"] / loss if loss > 0 else None for it, loss in baseline.items()
    }
    match = equivalent_iterations(summary["total_loss"], baseline)
    summary["matched_iterations"] = match.iterations if match else None
    summary["matched_iterations_bound"] = match.bound if match else None
    summary["equivalent_iterations"] = match.equivalent if match else None
    summary["num_images"] = len(results)
    return summary


def format_row(name: str, r: Mapping[str, Any], iterations: Sequence[int]) -> str:
    cells = [f"{r[key]:11.4g}" for key in TERM_KEYS.values()]
    cells += [f"{r.get(key, float('nan')):11.4g}" for key in QUALITY_COLUMNS.values()]
    for figures in r.get("views", {}).values():
        cells += [f"{figures[key]:11.4g}" for key in VIEW_COLUMNS.values()]
    cells.append(f"{r['seconds']:9.4f}")
    cells += [f"{r['baseline'][str(it)]:11.4g}" for it in iterations]
    name = name if len(name) <= 28 else "..." + name[-25:]
    return f"{name:28s} " + " ".join(cells)


def format_header(iterations: Sequence[int], view_sizes: Sequence[int] = ()) -> str:
    """The table's header; `view_sizes`: the viewing sizes each row reports."""
    names = ["content", "style", "tv", "total", *QUALITY_COLUMNS]
    names += [f"{column}@{size}" for size in view_sizes for column in VIEW_COLUMNS]
    cells = [f"{n:>11s}" for n in names] + [f"{'seconds':>9s}"]
    cells += [f"{'opt@' + str(it):>11s}" for it in iterations]
    return f"{'image':28s} " + " ".join(cells)


def print_summary(
    summary: Mapping[str, Any], iterations: Sequence[int], report: Mapping[str, Any]
) -> None:
    print(
        format_row(
            f"mean ({summary['num_images']} images)",
            summary | {"seconds": summary["seconds_per_image"], "baseline": summary["baseline"]},
            iterations,
        )
    )
    if "luminance" in summary:
        print(QUALITY_LEGEND)
        luma = f"mean luma: outputs {summary['luminance']:.1f}, photos "
        luma += f"{summary['photo_luminance']:.1f}"
        if "style_luminance" in report.get("quality", {}):
            luma += f", style image {report['quality']['style_luminance']:.1f}"
        print(luma + " (0..255)")
    if not iterations:
        return
    ratio = {it: summary["ratio"][str(it)] for it in iterations}
    ratios = "  ".join(
        f"@{it}: {r:.3g}" if r is not None else f"@{it}: -" for it, r in ratio.items()
    )
    print(f"model / optimiser total loss: {ratios}")
    optimiser = f"{report['baseline_optimizer']} from the {report['baseline_init']} image"
    print(matched_sentence(summary["total_loss"], summary["baseline"], optimiser))


def matched_sentence(model_total: float, baseline: Mapping[str, float], optimiser: str) -> str:
    """The report's conclusion in words (`equivalent_iterations`, explained)."""
    counts = sorted(int(k) for k in baseline)
    match = equivalent_iterations(model_total, {it: baseline[str(it)] for it in counts})
    if match is None:
        return "no optimiser baseline"
    if match.bound == "more_than":
        return (
            f"the model is worth more than {match.iterations} iterations of {optimiser}: its "
            f"loss is below the optimiser's at every count evaluated (up to {match.iterations})"
        )
    if match.bound == "fewer_than":
        return (
            f"the model is worth fewer than {match.iterations} iteration(s) of {optimiser}: "
            f"the optimiser is below the model's loss already at {match.iterations}, the first "
            "count evaluated"
        )
    if match.equivalent in counts:
        return f"the model is worth {match.iterations} iterations of {optimiser} (an exact match)"
    above = max(c for c in counts if c < match.equivalent)
    below = min(c for c in counts if c > match.equivalent)
    return (
        f"the model is worth ~{match.equivalent:.3g} iterations of {optimiser} (its loss lies "
        f"between the optimiser's at {above} and {below}; interpolated in log-iterations)"
    )


def print_styles_table(documents: Sequence[Mapping[str, Any]]) -> None:
    """`--model-style all`: one line per style, the means over its images."""
    keys = {"total": "total_loss", **QUALITY_COLUMNS}
    print("\nper style (means):")
    print(f"{'style':20s} " + " ".join(f"{name:>11s}" for name in keys) + "  iterations")
    for document in documents:
        summary = document["summary"]
        cells = " ".join(f"{summary.get(key, float('nan')):11.4g}" for key in keys.values())
        matched = summary.get("equivalent_iterations") or summary.get("matched_iterations")
        bound = {"fewer_than": "<", "more_than": ">"}.get(
            summary.get("matched_iterations_bound"), ""
        )
        iterations = f"{bound}{matched:.3g}" if matched is not None else "-"
        print(f"{document['model_style']:20s} {cells}  {iterations}")
