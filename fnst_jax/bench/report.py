"""What the benchmark reports: MFU against known peaks, speed ratios, the table, the JSON and
the chart; and the merge of earlier runs' JSON files into one report.

Every configuration yields one record (a flat dict, see `measure.base_record`); a failed one
holds its settings and `error`. The JSON file is the list of records, rewritten atomically
after each configuration so that a run cut short keeps what it measured. A record measured on
a busy machine (`loaded`, see `harness.load_fields`) is marked `*` in the table, with a
footnote, and hatched in the chart.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fnst_jax.bench import BenchError
from fnst_jax.files import write_atomic, write_text_atomic

Record = dict[str, Any]

# Dense peak TFLOP/s by (device name fragment, dtype), from the vendors' datasheets (SXM
# parts, no sparsity). float32 is the non-tensor-core rate; note that both frameworks run
# float32 convolutions in TF32 on these GPUs by default, so float32 MFU can exceed it.
PEAK_TFLOPS = {
    ("H200", "bfloat16"): 989.0,
    ("H200", "float32"): 67.0,
    ("H100", "bfloat16"): 989.0,
    ("H100", "float32"): 67.0,
    ("A100", "bfloat16"): 312.0,
    ("A100", "float32"): 19.5,
    ("L4", "bfloat16"): 121.0,
    ("L4", "float32"): 30.3,
}
# What every successful record holds (a record with `error` holds its settings only).
REQUIRED_KEYS = (
    "framework",
    "task",
    "batch_size",
    "image_size",
    "dtype",
    "device",
    "median_s",
    "min_s",
    "max_s",
    "images_per_s",
    "compile_s",
    "peak_mem_bytes",
    "flops",
    "flops_per_s",
)
_RATIO_KEYS = ("speedup_vs_torch", "speedup_vs_torch_compile")


def peak_tflops(record: Record, override: float | None) -> float | None:
    """The peak to compute MFU against: `override`, else the table's entry for a GPU whose
    name contains a known fragment (in the record's dtype), else None (CPU, unknown GPU)."""
    if override is not None:
        return override
    if record.get("device") != "gpu":
        return None
    name = str(record.get("device_name", ""))
    for (fragment, dtype), value in PEAK_TFLOPS.items():
        if fragment in name and dtype == record["dtype"]:
            return value
    return None


def add_mfu(record: Record, override: float | None) -> None:
    """`peak_tflops` and `mfu` (achieved / peak FLOP/s) where a peak is known."""
    peak = peak_tflops(record, override)
    if peak and "error" not in record:
        record["peak_tflops"] = peak
        record["mfu"] = record["flops_per_s"] / (peak * 1e12)


def add_ratios(records: list[Record]) -> None:
    """Per configuration: each framework's speed relative to torch eager and torch.compile."""
    key = ("task", "batch_size", "image_size", "dtype", "device", "mode")
    by_config: dict[tuple, dict[str, Record]] = {}
    for record in records:
        if "error" not in record:
            by_config.setdefault(tuple(record[k] for k in key), {})[record["framework"]] = record
    for group in by_config.values():
        for record in group.values():
            for other in ("torch", "torch-compile"):
                if other in group and record is not group[other]:
                    name = "speedup_vs_" + other.replace("-", "_")
                    record[name] = group[other]["median_s"] / record["median_s"]


LOADED_MARK = "*"


def loaded_footnote(records: list[Record]) -> str | None:
    """The table's footnote for the records measured under load (None when there are none)."""
    loaded = [r for r in records if r.get("loaded")]
    if not loaded:
        return None
    loads = [r[k] for r in loaded for k in ("load_before", "load_after")]
    cores = "/".join(str(n) for n in sorted({r["cores"] for r in loaded}))
    return (
        f"{LOADED_MARK} measured under load: the machine's 1-minute load average "
        f"({min(loads):.2f}-{max(loads):.2f}) was above its {cores} usable cores before or "
        "after the run (load_before, load_after, worker_load in the JSON); not an idle "
        "machine's time"
    )


def format_table(records: list[Record]) -> str:
    """One line per record: times, throughput, compile time, memory, FLOP/s, MFU, ratios; a
    record measured under load is marked, with a footnote."""
    header = (
        f"{'framework':14} {'task':10} {'batch':>5} {'size':>5} {'dtype':8} {'dev':3} "
        f"{'median ms':>10} {'min-max ms':>17} {'img/s':>8} {'compile s':>9} {'peak MB':>8} "
        f"{'GFLOP':>8} {'TFLOP/s':>8} {'MFU':>6} {'vs torch':>8} {'vs t.comp':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in records:
        framework = r["framework"] + (LOADED_MARK if r.get("loaded") else "")
        head = (
            f"{framework:14} {r['task']:10} {r['batch_size']:>5} {r['image_size']:>5} "
            f"{r['dtype']:8} {r['device']:3} "
        )
        if "error" in r:
            lines.append(head + f"FAILED: {r['error']}")
            continue
        mfu = f"{100 * r['mfu']:5.1f}%" if r.get("mfu") is not None else "     -"
        ratio = r.get("speedup_vs_torch")
        ratio_c = r.get("speedup_vs_torch_compile")
        lines.append(
            head
            + f"{1e3 * r['median_s']:10.1f} "
            + f"{1e3 * r['min_s']:8.1f}-{1e3 * r['max_s']:<8.1f} "
            + f"{r['images_per_s']:8.2f} {r['compile_s']:9.1f} {r['peak_mem_bytes'] / 2**20:8.0f} "
            + f"{r['flops'] / 1e9:8.1f} {r['flops_per_s'] / 1e12:8.3f} {mfu} "
            + (f"{ratio:7.2f}x " if ratio else f"{'-':>8} ")
            + (f"{ratio_c:8.2f}x" if ratio_c else f"{'-':>9}")
        )
    footnote = loaded_footnote(records)
    return "\n".join(lines + ([footnote] if footnote else []))


def write_json(records: list[Record], path: Path) -> None:
    """The records as a JSON list (replaced atomically)."""
    write_text_atomic(path, json.dumps(records, indent=2))


def read_records(paths: Sequence[Path]) -> list[Record]:
    """The records of earlier runs as one list, their ratios recomputed across all of them."""
    records: list[Record] = []
    for path in paths:
        try:
            loaded = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise BenchError(f"{path}: cannot read benchmark JSON ({e})") from e
        if not isinstance(loaded, list) or not all(isinstance(r, dict) for r in loaded):
            raise BenchError(f"{path}: not a benchmark JSON (expected a list of records)")
        for index, record in enumerate(loaded):
            missing = [k for k in REQUIRED_KEYS if k not in record]
            if "error" not in record and missing:
                raise BenchError(f"{path}: record {index} lacks {', '.join(missing)}")
        records += loaded
    for record in records:
        for name in _RATIO_KEYS:
            record.pop(name, None)
    add_ratios(records)
    return records


def _label(record: Record) -> str:
    return f"{record['task']}\n{record['dtype']} b{record['batch_size']} {record['image_size']}px"


def write_chart(records: list[Record], path: Path, mode: str) -> None:
    """Grouped bars: images/s per configuration, one bar per framework (nothing when no
    configuration succeeded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in records if "error" not in r]
    if not ok:
        return
    labels = list(dict.fromkeys(_label(r) for r in ok))
    frameworks = list(dict.fromkeys(r["framework"] for r in ok))
    images_per_s: dict[tuple[str, str], float] = {}
    loaded: set[tuple[str, str]] = set()
    for r in ok:  # the first record of a (framework, configuration) wins
        if (r["framework"], _label(r)) not in images_per_s and r.get("loaded"):
            loaded.add((r["framework"], _label(r)))
        images_per_s.setdefault((r["framework"], _label(r)), r["images_per_s"])
    width = 0.8 / len(frameworks)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(labels) * len(frameworks) / 2), 4.5))
    for i, framework in enumerate(frameworks):
        values = [images_per_s.get((framework, label), 0.0) for label in labels]
        xs = [x + (i - (len(frameworks) - 1) / 2) * width for x in range(len(labels))]
        bars = ax.bar(xs, values, width, label=framework)
        for bar, label in zip(bars, labels, strict=True):
            if (framework, label) in loaded:
                bar.set_hatch("//")
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("images / s (higher is better)")
    device = ok[0].get("device_name", ok[0]["device"])
    title = f"fnst_jax benchmark ({mode} computation) on {device}"
    if loaded:
        title += "\nhatched: measured under load (1-minute load above the cores)"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120))
    plt.close(fig)
