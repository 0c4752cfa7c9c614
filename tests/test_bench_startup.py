"""benchmarks/startup.py: the breakdown arithmetic, and one run end to end at a tiny size.

Timings are not asserted (benchmarks print numbers; tests check the machinery): the
end-to-end run checks that each cell is filled, that the columns of the breakdown add up to
the measured time, and that a warm-cache `stylize.py` reads its network from the persistent
compilation cache instead of compiling it.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from stylize_helpers import natural_image, save_test_model

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "startup.py"


@pytest.fixture(scope="module")
def startup():
    spec = importlib.util.spec_from_file_location("startup_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    sys.path.insert(0, str(SCRIPT.parent))  # its neighbours (host, startup_profile), as when run
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(SCRIPT.parent))
        del sys.modules[spec.name]


def test_breakdown_counts_each_second_once_in_the_most_specific_column(startup):
    events = [
        ("imports", 10.0, 11.0),
        ("tracing", 10.5, 10.7),  # inside an import: tracing's
        ("compiling", 12.0, 13.0),
        ("cache reads", 12.0, 12.5),  # a cache hit inside a compile event: a cache read
        ("compiling", 13.5, 14.5),  # a real compile, cut at the ready time
        ("imports", 20.0, 21.0),  # after ready: ignored
    ]
    seconds = startup.startup_profile.breakdown(events, launched=10.0, ready=14.0)
    assert seconds["seconds to ready"] == 4.0
    assert seconds["imports"] == pytest.approx(0.8)
    assert seconds["tracing"] == pytest.approx(0.2)
    assert seconds["cache reads"] == pytest.approx(0.5)
    assert seconds["compiling"] == pytest.approx(1.0)
    assert seconds["other"] == pytest.approx(1.5)
    parts = [seconds[column] for column in (*startup.startup_profile.COLUMNS, "other")]
    assert sum(parts) == pytest.approx(4.0)
    assert (seconds["programs compiled"], seconds["programs from cache"]) == (1, 1)


def test_commands_and_modes_are_checked(startup):
    assert startup.parse_args(["--commands", "serve,train", "--modes", "warm"]).commands == [
        "serve",
        "train",
    ]
    for bad in (["--commands", "nope"], ["--modes", "hot"], ["--repeats", "0"]):
        with pytest.raises(SystemExit):
            startup.parse_args(bad)


@pytest.mark.slow
def test_stylize_npz_cold_and_warm_with_its_breakdown(startup, tmp_path):
    model = save_test_model(tmp_path / "tiny.npz")
    photo = tmp_path / "photo.png"
    Image.fromarray(natural_image(40, 56)).save(photo)
    report = tmp_path / "times.json"
    command = [sys.executable, str(SCRIPT), "--model", str(model), "--photo", str(photo)]
    command += ["--commands", "stylize-npz", "--repeats", "1", "--profile", "--json", str(report)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    rows = [line for line in done.stdout.splitlines() if line.startswith("| stylize-npz |")]
    assert len(rows) == 2  # the times and the breakdown
    results = json.loads(report.read_text())
    times = results["times"]["stylize-npz"]
    assert len(times["cold"]) == len(times["warm"]) == 1
    assert all(seconds > 0 for seconds in times["cold"] + times["warm"])
    assert all(seconds > 0 for seconds in times["cold_cpu"] + times["warm_cpu"])
    seconds = results["profiles"]["stylize-npz"]
    parts = [seconds[column] for column in (*startup.startup_profile.COLUMNS, "other")]
    assert min(parts) >= 0 and sum(parts) == pytest.approx(seconds["seconds to ready"])
    assert seconds["imports"] > 0 and seconds["model build"] > 0
    # A warm cache holds the network: read back, not compiled again.
    assert seconds["programs from cache"] >= 1 and seconds["cache reads"] > 0
