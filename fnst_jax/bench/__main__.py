r"""The benchmark's command line: `python -m fnst_jax.bench [flags]` (see BENCHMARKS.md).

    python -m fnst_jax.bench --frameworks jax,torch,torch-compile --task train-step \
        --batch-size 4 --image-size 256 --dtype float32 --steps 10 --warmup 3 --json out.json
    python -m fnst_jax.bench --merge a.json b.json --json all.json   # report earlier runs

Flags are absl's on a fresh FlagValues (`fnst_jax.cli`); hyphens and underscores both work.
The list flags take comma-separated values and every combination runs. `--worker` /
`--result` are internal: the parent starts each configuration's process with them.
A busy machine (1-minute load above its usable cores) is waited for up to `--wait-idle`
seconds, then refused unless `--allow-loaded` (see `harness`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from absl import flags

from fnst_jax import cli, runtime
from fnst_jax.bench import FRAMEWORKS, TASKS, harness, report
from fnst_jax.bench.flops import DEFAULT_CONTENT_LAYER, DEFAULT_STYLE_LAYERS, TRAIN_PAD
from fnst_jax.errors import UsageError
from fnst_jax.vgg import CONV_LAYERS

USAGE = """\
usage: python -m fnst_jax.bench [--frameworks jax,torch,torch-compile] [--task train-step,stylize]
           [--batch-size N,...] [--image-size PX,...] [--dtype float32,bfloat16] [--json OUT.json]
           [--wait-idle SECONDS] [--allow-loaded]
       python -m fnst_jax.bench --merge A.json [B.json ...] [--json OUT.json]

Time the fnst_jax train step / stylization against PyTorch (eager and torch.compile)."""


def define_flags(fv: flags.FlagValues) -> None:
    """The benchmark's flags on `fv` (underscores; `cli.accept_both_spellings` adds hyphens)."""
    f = {"flag_values": fv}  # every flag goes on fv
    # What to run: every combination of the list values is one configuration.
    flags.DEFINE_list("frameworks", list(FRAMEWORKS), ", ".join(FRAMEWORKS), **f)
    flags.DEFINE_list("task", ["train-step"], "train-step and/or stylize", **f)
    flags.DEFINE_list("batch_size", ["4"], "one or more batch sizes", **f)
    flags.DEFINE_list("image_size", ["256"], "square side in px, one or more", **f)
    flags.DEFINE_list("dtype", ["float32"], "float32 and/or bfloat16", **f)
    flags.DEFINE_enum("device", "auto", harness.DEVICES, "auto: gpu when one is visible", **f)
    flags.DEFINE_enum(
        "mode", "same", harness.MODES,
        "same: identical computation everywhere; best: each framework's fastest settings", **f,
    )  # fmt: skip
    # How: timing and the computation's details.
    flags.DEFINE_integer("steps", 10, "timed steps per configuration", lower_bound=1, **f)
    flags.DEFINE_integer(
        "warmup", 3, "untimed calls first (the first one compiles)", lower_bound=1, **f
    )
    flags.DEFINE_integer("pad", TRAIN_PAD, "train step: reflection pad (px)", lower_bound=0, **f)
    flags.DEFINE_list("style_layers", list(DEFAULT_STYLE_LAYERS), "style loss layers", **f)
    flags.DEFINE_string("content_layer", DEFAULT_CONTENT_LAYER, "content loss layer", **f)
    flags.DEFINE_integer(
        "vgg_layers", len(CONV_LAYERS),
        "VGG19 conv layers in the (random) weights (only as deep as the losses need is "
        "computed either way)",
        lower_bound=1, upper_bound=len(CONV_LAYERS), **f,
    )  # fmt: skip
    flags.DEFINE_list(
        "cpus", None, "CPU cores the workers may use (sched_setaffinity), e.g. 0 or 0,1; "
        "default: all", **f,
    )  # fmt: skip
    flags.DEFINE_float("worker_timeout", 1800.0, "seconds per configuration", lower_bound=0, **f)
    # The machine: a 1-minute load average above the usable cores is a busy machine.
    flags.DEFINE_float(
        "wait_idle", 60.0, "seconds to wait for a busy machine to quiet down before each "
        "configuration; still busy then: stop with an error (see --allow-loaded)",
        lower_bound=0, **f,
    )  # fmt: skip
    flags.DEFINE_bool(
        "allow_loaded", False, "measure on a busy machine anyway, without waiting; the records "
        "are marked loaded (JSON) and * (table)", **f,
    )  # fmt: skip
    # Output.
    flags.DEFINE_float(
        "peak_tflops", None, "peak TFLOP/s for MFU (default: a table of known GPUs; none on CPU)",
        **f,
    )  # fmt: skip
    flags.DEFINE_string("json", "bench.json", "output JSON path", **f)
    flags.DEFINE_string("chart", None, "bar chart PNG (default: the JSON path with .png)", **f)
    flags.DEFINE_bool("no_chart", False, "skip the chart", **f)
    flags.DEFINE_list(
        "merge", None, "combine earlier JSON outputs (ratios, table, chart) into --json; runs "
        "nothing (several files: comma-separated or one after another)", **f,
    )  # fmt: skip
    # Internal: the parent starts each configuration's worker process with these.
    flags.DEFINE_string("worker", None, "internal: run the configuration in this JSON", **f)
    flags.DEFINE_string("result", None, "internal: where --worker writes its record", **f)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _choices(fv: flags.FlagValues, name: str, choices: Sequence[str]) -> tuple[str, ...]:
    values = tuple(fv[name].value or ())
    if not values:
        raise UsageError(f"{_flag(name)}: expected a comma-separated list")
    for value in values:
        if value not in choices:
            raise UsageError(f"{_flag(name)}: {value!r} is not one of {', '.join(choices)}")
    return values


def _ints(fv: flags.FlagValues, name: str, minimum: int) -> tuple[int, ...]:
    values = fv[name].value or ()
    try:
        numbers = tuple(int(value) for value in values)
    except ValueError:
        raise UsageError(f"{_flag(name)}: expected integers, not {','.join(values)!r}") from None
    if not numbers:
        raise UsageError(f"{_flag(name)}: expected a comma-separated list")
    if any(n < minimum for n in numbers):
        raise UsageError(f"{_flag(name)}: each value must be at least {minimum}, not {numbers}")
    return numbers


def options_from_flags(fv: flags.FlagValues) -> harness.BenchOptions:
    """The parsed flags as `BenchOptions`; UsageError for a value outside its choices."""
    if not fv.style_layers:
        raise UsageError("--style-layers: expected a comma-separated list")
    return harness.BenchOptions(
        frameworks=_choices(fv, "frameworks", FRAMEWORKS),
        tasks=_choices(fv, "task", TASKS),
        batch_sizes=_ints(fv, "batch_size", 1),
        image_sizes=_ints(fv, "image_size", 2),  # reflection needs 2 px
        dtypes=_choices(fv, "dtype", tuple(runtime.DTYPES)),
        device=fv.device,
        steps=fv.steps,
        warmup=fv.warmup,
        pad=fv.pad,
        style_layers=tuple(fv.style_layers),
        content_layer=fv.content_layer,
        vgg_layers=fv.vgg_layers,
        mode=fv.mode,
        cpus=_ints(fv, "cpus", 0) if fv.cpus else None,
        worker_timeout=fv.worker_timeout,
        wait_idle=fv.wait_idle,
        allow_loaded=fv.allow_loaded,
    )


def _print_report(records: list[report.Record], fv: flags.FlagValues, json_path: Path) -> None:
    print(report.format_table(records))
    modes = {r.get("mode", fv.mode) for r in records} or {fv.mode}
    if "best" in modes:
        print(
            "(mode best: each framework ran its fastest settings: torch channels_last, "
            "torch.compile max-autotune on GPU; see each record's settings)"
        )
    print(f"JSON: {json_path}")
    if not fv.no_chart:
        chart = Path(fv.chart) if fv.chart else json_path.with_suffix(".png")
        report.write_chart(records, chart, "/".join(sorted(modes)))
        print(f"chart: {chart}")


def _run(fv: flags.FlagValues, argv: Sequence[str]) -> int:
    positional = cli.parse(fv, argv, USAGE)
    if positional is None:  # --help
        return cli.EXIT_OK
    if fv.worker:
        cli.require(fv, "result")
        harness.run_worker(Path(fv.worker), Path(fv.result))
        return cli.EXIT_OK
    json_path = Path(fv.json)
    if fv.merge:
        # `--merge a.json b.json` (the argparse form) leaves b.json positional.
        records = report.read_records([Path(p) for p in (*fv.merge, *positional)])
        report.write_json(records, json_path)
    elif positional:
        raise UsageError(f"unexpected arguments: {' '.join(positional)} (see --help)")
    else:
        records = harness.run_benchmarks(options_from_flags(fv), json_path, fv.peak_tflops)
    _print_report(records, fv, json_path)
    return cli.EXIT_FAILED if any("error" in r for r in records) else cli.EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark command line (argv[0] is the program name); the exit status."""
    argv = sys.argv if argv is None else argv
    fv = flags.FlagValues()
    define_flags(fv)
    cli.accept_both_spellings(fv)
    return cli.run(lambda: _run(fv, argv))


if __name__ == "__main__":
    sys.exit(main())
