r"""Benchmark the train step and stylization, JAX against PyTorch (eager and torch.compile).

    python -m fnst_jax.bench --frameworks jax,torch,torch-compile --task train-step \
        --batch-size 4 --image-size 256 --dtype float32 --steps 10 --warmup 3 --json out.json

Each (framework, configuration) runs in its own process (`python -m fnst_jax.bench` with the
internal `--worker` flag), one after another, so that peak memory is per configuration and
no framework's threads or allocator disturb another's. All frameworks get the same inputs
(random images from one seed, the same TransformerNet weights written once by the parent, the
same deterministic random VGG19) and the same computation: see BENCHMARKS.md.

Where things happen:
- `__main__`: the flags, the parsed options, the printed report.
- `harness`: the parent's loop over configurations, each in a worker process once the
  machine is idle (1-minute load at most the usable cores: waited for up to `--wait-idle`
  seconds, else refused unless `--allow-loaded`), the load before and after in each record.
- `jax_worker`: the project's own train step (`fnst_jax.train_step`: `make_jit_step` on a
  1-device mesh, state donated) or the stylize forward, timed. It imports the step module
  alone: no data pipeline, checkpointing or monitoring code.
- `torch_worker`: the PyTorch twin (`fnst_jax.torch_reference`: its model, loss and train
  step), eager or under torch.compile, timed.
- `measure`: what both workers share: the inputs, the timing loop, memory and machine load,
  the record every configuration yields.
- `flops`: the analytic FLOP count every framework's FLOP/s is computed from.
- `report`: MFU peaks, speed ratios, the table, the JSON and the chart; merging earlier runs.

What is timed: `--warmup` calls (the first one compiles; it is timed separately as
`first_call_s`), then `--steps` calls each timed on its own, blocked until the result is ready
(`block_until_ready` / `cuda.synchronize`). Inputs are on the device before timing starts.
The persistent compilation cache is NOT used (compile times are cold); torch.compile gets a
fresh inductor/triton cache folder per process for the same reason.

Output: a table on stdout, the JSON list of records (--json) and a bar chart (--chart,
default: the JSON path with .png). A record measured on a busy machine is `loaded` in the
JSON, marked `*` in the table (with a footnote) and hatched in the chart.
"""

from __future__ import annotations

import dataclasses

from fnst_jax.errors import UserError

FRAMEWORKS = ("jax", "torch", "torch-compile")
TASKS = ("train-step", "stylize")
SEED = 0  # the input images and the TransformerNet weights every framework starts from
LEARNING_RATE = 1e-3  # Adam's, as in training (configs/default.py)


class BenchError(UserError):
    """A benchmark that cannot run as asked; the message says why."""


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """One measured configuration: what a worker process is told to run (sent as JSON)."""

    framework: str  # one of FRAMEWORKS
    task: str  # one of TASKS
    batch_size: int
    image_size: int  # square side, px
    dtype: str  # a name of fnst_jax.runtime.DTYPES
    device: str  # "cpu" or "gpu"
    steps: int  # timed calls
    warmup: int  # untimed calls first (the first one compiles)
    pad: int  # train step: reflection pad (px); 0 for stylize
    style_layers: tuple[str, ...]
    content_layer: str
    vgg_layers: int  # conv layers in the random VGG19
    mode: str  # "same" computation everywhere, or each framework's "best" settings
    params_file: str  # the TransformerNet weights (.npz of `export.flat_params`)
    cpus: tuple[int, ...] | None = None  # cores the worker may use (None: all)

    @classmethod
    def from_json(cls, fields: dict) -> BenchConfig:
        """The config a worker reads back (JSON turned the tuples into lists)."""
        cpus = fields.get("cpus")
        return cls(
            **dict(
                fields,
                style_layers=tuple(fields["style_layers"]),
                cpus=tuple(cpus) if cpus else None,
            )
        )
