"""Start-up time of every command: seconds from launch until the user has something.

Each command runs in a fresh process (cwd: the repository), `--repeats` times with a cold
compilation cache (JAX's persistent cache, `FNST_JAX_CACHE`, pointed at a new empty folder
for every run) and `--repeats` times with a warm one (a folder filled by one untimed run
first). Timed from launch until:

  stylize-npz   python stylize.py --model M.npz --output OUT PHOTO: it exits
  stylize-onnx  the same with the model exported to .onnx (onnxruntime, no JAX): it exits
  serve         python serve.py --models M.npz --port P: GET /readyz answers 200 (the
                default warm-up sizes compiled); then SIGTERM
  train         python train.py --config configs/photos_mosaic.py --config.log_every=1
                (data, style and VGG from --data): WORKDIR/metrics.jsonl holds the record
                of step 1 (written once that step's loss is back on the host); then SIGTERM
  evaluate      python -m fnst_jax.evaluate --model M.npz --images PHOTO
                --baseline-iterations none --no-grid: the photo's row is printed
  export        python -m fnst_jax.export --model M.npz --format onnx --output F: it exits
                (the file is written after its checks against the JAX model)

It prints a Markdown table (median and min wall seconds per command and cache state, and
the median CPU seconds the process used until ready: on a shared machine the wall time
follows the load, the CPU time much less), with the date, the machine, the load average
as the runs started, and the versions. `--profile` adds
one more warm run of each command under cProfile and a second table of where that run's
time went: imports, model load, JAX tracing, lowering, XLA compilation, compilation-cache
reads, waiting for results (the computation itself), image files, onnxruntime. Columns
overlap where calls nest (an import inside the model load counts in both), and cProfile
slows Python-heavy parts, so the profiled total is above the timed one.

    python benchmarks/startup.py --repeats 3
    python benchmarks/startup.py --model runs/mosaic/model.npz --commands stylize-npz,serve
    python benchmarks/startup.py --repeats 1 --profile

Without `--model`, a TransformerNet with random parameters is written with the metadata of
configs/photos_mosaic.py (its pad, style image, VGG weights and loss): start-up does not
depend on the weights. `--onnx` gives the .onnx model; without it one is exported from the
.npz model first (untimed). Photos, style and VGG weights come from `--data` (default
../shared/data beside the repository). Only the loopback address is ever contacted, and
every wait is bounded (`--timeout`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import host  # benchmarks/host.py and startup_profile.py, beside this script
import startup_profile

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
VGG_FILE = "vgg19_conv1_1-conv3_4_keras.npz"
STYLE_FILE = "styles/mosaic.jpg"
POLL_S = 0.05


@dataclasses.dataclass
class Setup:
    """What the commands run on."""

    model: Path
    onnx: Path | None
    photo: Path
    data: Path
    scratch: Path


@dataclasses.dataclass
class Run:
    """One command's arguments for one run, in its own scratch folder."""

    argv: list[str]
    scratch: Path
    port: int | None = None


@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    until: str  # what the time is measured to, for the table
    ready: str  # "exit", "readyz", "metrics" or "line"
    make: Callable[[Setup, Path], Run]
    target_s: float | None = None
    uses_jax: bool = True


def _stylize(setup: Setup, scratch: Path, model: Path) -> Run:
    output = scratch / f"styled{setup.photo.suffix}"
    return Run(
        ["stylize.py", "--model", str(model), "--output", str(output), str(setup.photo)], scratch
    )


def _serve(setup: Setup, scratch: Path) -> Run:
    port = host.free_port()
    argv = ["serve.py", "--models", str(setup.model), "--port", str(port)]
    return Run([*argv, "--log-level", "warning"], scratch, port)


def _train(setup: Setup, scratch: Path) -> Run:
    data = setup.data
    argv = [
        "train.py",
        "--config",
        "configs/photos_mosaic.py",
        "--workdir",
        str(scratch / "run"),
        "--config.log_every=1",
        f"--config.style_image={data / STYLE_FILE}",
        f"--config.data.source=folder:{data / 'photos'}",
        f"--config.vgg.weights={data / VGG_FILE}",
    ]
    return Run(argv, scratch)


def _evaluate(setup: Setup, scratch: Path) -> Run:
    argv = ["-m", "fnst_jax.evaluate", "--model", str(setup.model), "--images", str(setup.photo)]
    return Run([*argv, "--baseline-iterations", "none", "--no-grid"], scratch)


def _export(setup: Setup, scratch: Path) -> Run:
    argv = ["-m", "fnst_jax.export", "--model", str(setup.model), "--format", "onnx"]
    return Run([*argv, "--output", str(scratch / "model.onnx")], scratch)


COMMANDS = {
    command.name: command
    for command in (
        Command(
            "stylize-npz",
            "exit: one photo written",
            "exit",
            lambda setup, scratch: _stylize(setup, scratch, setup.model),
            target_s=3.5,
        ),
        Command(
            "stylize-onnx",
            "exit: one photo written",
            "exit",
            lambda setup, scratch: _stylize(setup, scratch, setup.onnx),
            target_s=1.5,
            uses_jax=False,
        ),
        Command("serve", "/readyz is 200", "readyz", _serve),
        Command("train", "step 1 in metrics.jsonl", "metrics", _train),
        Command("evaluate", "the photo's row printed", "line", _evaluate),
        Command("export", "exit: .onnx written and checked", "exit", _export),
    )
}


class Output:
    """A process's merged stdout/stderr, read in a thread; `seen` is set once a line
    matches `pattern`."""

    def __init__(self, process: subprocess.Popen, pattern: str | None):
        self.lines: list[str] = []
        self.seen = threading.Event()
        self._pattern = re.compile(pattern) if pattern else None
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            self.lines.append(line)
            if self._pattern is not None and self._pattern.search(line):
                self.seen.set()

    def tail(self, count: int = 15) -> str:
        self._thread.join(timeout=5)
        return "".join(self.lines[-count:])


def _is_ready(command: Command, run: Run, setup: Setup, output: Output) -> bool:
    if command.ready == "line":
        return output.seen.is_set()
    if command.ready == "metrics":
        path = run.scratch / "run" / "metrics.jsonl"
        return path.exists() and '"split": "train"' in path.read_text()
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{run.port}/readyz", timeout=2) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclasses.dataclass(frozen=True)
class Timing:
    wall_s: float  # from launch until ready
    # The process's user + system seconds until then, all its threads: what it cost, which
    # the machine's load changes far less than the wall time (None where unknown).
    cpu_s: float | None


def time_once(
    command: Command, setup: Setup, cache: Path, timeout_s: float, events: Path | None = None
) -> Timing:
    """Time from launch until `command` is ready (see the module docstring); the process
    is stopped (SIGTERM, then SIGKILL) once it is. SystemExit if it fails."""
    scratch = Path(tempfile.mkdtemp(prefix=f"{command.name}-", dir=setup.scratch))
    run = command.make(setup, scratch)
    recorder = [str(Path(__file__).resolve()), "--record", str(events), "--"] if events else []
    env = dict(os.environ, FNST_JAX_CACHE=str(cache), PYTHONUNBUFFERED="1")
    pattern = re.escape(setup.photo.name) if command.ready == "line" else None
    children_before = _children_cpu_seconds()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, *recorder, *run.argv],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = Output(process, pattern)
    try:
        while not (command.ready != "exit" and _is_ready(command, run, setup, output)):
            try:  # returns at once when the process exits: "exit" is timed exactly
                process.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                pass
            if process.returncode == 0 and command.ready == "exit":
                break
            if process.returncode is not None:
                raise SystemExit(
                    f"{command.name}: exited with status {process.returncode} before it was "
                    f"ready:\n{output.tail()}"
                )
            if time.perf_counter() - started > timeout_s:
                raise SystemExit(f"{command.name}: not ready after {timeout_s:.0f} s")
        wall_s = time.perf_counter() - started
        if process.returncode is None:
            return Timing(wall_s, _process_cpu_seconds(process.pid))
        return Timing(wall_s, _children_cpu_seconds() - children_before)  # reaped: exact
    finally:
        _stop(process)
        shutil.rmtree(scratch, ignore_errors=True)


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _process_cpu_seconds(pid: int) -> float | None:
    """User + system seconds of a running process so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM (serve drains, train saves a checkpoint; a profiled run writes its profile
    then), SIGKILL if that takes over two minutes."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure(command: Command, setup: Setup, args: argparse.Namespace) -> dict[str, list]:
    """{"cold", "warm": wall seconds per run; "cold_cpu", "warm_cpu": CPU seconds per run;
    "load": the 1-minute load average as each run started}, as `--modes` asks. A command
    without JAX has no compilation cache to be cold or warm: its runs count as warm."""
    times: dict[str, list] = {"load": []}

    def timed(mode: str, cache: Path) -> None:
        times["load"].append(os.getloadavg()[0])
        timing = time_once(command, setup, cache, args.timeout)
        times.setdefault(mode, []).append(timing.wall_s)
        times.setdefault(f"{mode}_cpu", []).append(timing.cpu_s)

    if "cold" in args.modes and command.uses_jax:
        for _ in range(args.repeats):
            cache = Path(tempfile.mkdtemp(prefix="cache-cold-", dir=setup.scratch))
            timed("cold", cache)
            shutil.rmtree(cache, ignore_errors=True)
    if "warm" in args.modes or not command.uses_jax:
        cache = warm_cache(command, setup, args) if command.uses_jax else setup.scratch
        for _ in range(args.repeats):
            timed("warm", cache)
    return times


def warm_cache(command: Command, setup: Setup, args: argparse.Namespace) -> Path:
    """A compilation-cache folder that one untimed run of `command` has filled."""
    cache = setup.scratch / f"cache-warm-{command.name}"
    if not cache.exists():
        cache.mkdir()
        time_once(command, setup, cache, args.timeout)
    return cache


# -- where the time goes (--profile)


def profile(command: Command, setup: Setup, args: argparse.Namespace) -> dict:
    """One warm-cache run, recorded (`record`): where its time went (`breakdown`)."""
    cache = warm_cache(command, setup, args)
    path = setup.scratch / f"{command.name}-events.json"
    launched = time.time()
    timing = time_once(command, setup, cache, args.timeout, events=path)
    if not path.exists():
        raise SystemExit(f"{command.name}: the profiled run wrote no {path.name}")
    return startup_profile.breakdown(
        json.loads(path.read_text()), launched, launched + timing.wall_s
    )


# -- setup and report


def make_model(folder: Path, data: Path) -> Path:
    """A random TransformerNet with configs/photos_mosaic.py's metadata (what evaluate and
    the training pad need), as an exported model file."""
    sys.path.insert(0, str(REPO))
    from configs import photos_mosaic
    from fnst_jax import export
    from fnst_jax.loss_weights import loss_spec_from_config

    config = photos_mosaic.get_config()
    config.style_image = str(data / STYLE_FILE)
    config.vgg.weights = str(data / VGG_FILE)
    config.data.source = f"folder:{data / 'photos'}"
    metadata = export.model_metadata(config, loss_spec_from_config(config.loss), "caffe", step=0)
    return export.save_untrained_model(folder / "model.npz", metadata)


def export_onnx(model: Path, folder: Path, timeout_s: float) -> Path:
    path = folder / "model.onnx"
    command = [sys.executable, "-m", "fnst_jax.export", "--model", str(model)]
    command += ["--format", "onnx", "--output", str(path)]
    done = subprocess.run(command, cwd=REPO, timeout=timeout_s, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"exporting {model} to ONNX failed:\n{done.stdout}{done.stderr}")
    return path


def first_photo(folder: Path) -> Path:
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not photos:
        raise SystemExit(f"no photo in {folder}")
    return photos[0]


def cell(times: list[float] | None) -> str:
    if not times:
        return "–"
    return f"{statistics.median(times):.2f} ({min(times):.2f})"


def cpu_cell(times: list[float | None] | None) -> str:
    known = [t for t in times or () if t is not None]
    return f"{statistics.median(known):.1f}" if known else "–"


def print_table(results: dict[str, dict[str, list]]) -> None:
    cache = "cache: median (min) s"
    print(
        f"| command | timed until | cold {cache} | CPU s | warm {cache} | CPU s | target | load |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, times in results.items():
        command = COMMANDS[name]
        cold = cell(times.get("cold")) if command.uses_jax else "(no JAX)"
        cells = [cold, cpu_cell(times.get("cold_cpu"))]
        cells += [cell(times.get("warm")), cpu_cell(times.get("warm_cpu"))]
        cells.append(f"<= {command.target_s:g} s" if command.target_s else "")
        cells.append(f"{min(times['load']):.1f}-{max(times['load']):.1f}")
        print(f"| {name} | {command.until} | " + " | ".join(cells) + " |")


def print_profiles(profiles: dict[str, dict]) -> None:
    shown = ("imports", "model build", "VGG load", "onnxruntime")
    columns = ["seconds to ready", *shown, "tracing", "lowering", "compiling", "cache reads"]
    columns.append("other")
    print("\nWhere the time goes: one more warm-cache run of each, seconds from launch to ready.")
    print("Each second counts once, in the most specific column busy then (cache reads, then")
    print("compiling, lowering, tracing, the rest left to right); 'other': the computation,")
    print("file I/O and the rest of Python. Programs: compiled / read from the cache.\n")
    print("| command | " + " | ".join(columns) + " | programs |")
    print("|---|" + "---|" * (len(columns) + 1))
    for name, seconds in profiles.items():
        values = [f"{seconds[column]:.2f}" if seconds[column] else "–" for column in columns]
        programs = f"{seconds['programs compiled']} / {seconds['programs from cache']}"
        print(f"| {name} | " + " | ".join(values) + f" | {programs} |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="exported .npz model (default: a random one)")
    parser.add_argument("--onnx", type=Path, help=".onnx model (default: exported from --model)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="photos/, styles/, VGG")
    parser.add_argument("--photo", type=Path, help="the photo (default: DATA/photos' first)")
    parser.add_argument("--commands", default=",".join(COMMANDS), help="comma-separated")
    parser.add_argument("--modes", default="cold,warm", help="cold, warm or both")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run at most")
    parser.add_argument("--profile", action="store_true", help="also: where the time goes")
    parser.add_argument("--json", type=Path, help="also write every time here")
    args = parser.parse_args(argv)
    args.commands = [name.strip() for name in args.commands.split(",") if name.strip()]
    unknown = sorted(set(args.commands) - set(COMMANDS))
    if unknown:
        parser.error(f"unknown commands {unknown}; choose from {list(COMMANDS)}")
    args.modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    if not args.modes or set(args.modes) - {"cold", "warm"}:
        parser.error("--modes: cold, warm or cold,warm")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data = args.data.resolve()
    with tempfile.TemporaryDirectory(prefix="fnst-startup-") as folder:
        scratch = Path(folder)
        model = args.model.resolve() if args.model else make_model(scratch, data)
        onnx = args.onnx.resolve() if args.onnx else None
        if onnx is None and "stylize-onnx" in args.commands:
            onnx = export_onnx(model, scratch, args.timeout)
        photo = (args.photo or first_photo(data / "photos")).resolve()
        setup = Setup(model, onnx, photo, data, scratch)
        started = datetime.datetime.now().astimezone()
        load_before = host.load_average()
        results = {name: measure(COMMANDS[name], setup, args) for name in args.commands}
        profiles = {}
        if args.profile:
            profiles = {name: profile(COMMANDS[name], setup, args) for name in args.commands}
        load_after = host.load_average()

    from PIL import Image

    with Image.open(photo) as image:
        size = f"{image.width}x{image.height}"
    print(f"Start-up, {started:%Y-%m-%d %H:%M %Z}: {host.cpu_description()}; {host.versions()}")
    print(f"load average (1, 5, 15 min) before {load_before}, after {load_after}")
    print(f"photo {photo.name} ({size}); model {args.model or 'random, photos_mosaic metadata'}")
    print(f"{args.repeats} run(s) per cell, each a fresh process. CPU s: the median user +")
    print("system seconds the process used until ready (all its threads; less sensitive to")
    print("the machine's load than wall time). load: the 1-minute load average as the runs")
    print("started (min-max).\n")
    print_table(results)
    if profiles:
        print_profiles(profiles)
    if args.json:
        args.json.write_text(json.dumps({"times": results, "profiles": profiles}, indent=1))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--record"]:  # the profiled process: startup.py --record F -- ARGV
        startup_profile.record(Path(sys.argv[2]), sys.argv[4:])
    else:
        main()
