"""What the benchmark scripts say about the machine they ran on, and a free loopback port."""

from __future__ import annotations

import os
import platform
import socket
from importlib import metadata as package_metadata
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (a server started on it listens on loopback only)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def versions(packages: tuple[str, ...] = ("jax", "jaxlib", "flax", "onnxruntime")) -> str:
    """ "Python 3.x, jax 0.y, ...": the interpreter and each package's installed version."""
    found = []
    for package in packages:
        try:
            found.append(f"{package} {package_metadata.version(package)}")
        except package_metadata.PackageNotFoundError:
            found.append(f"{package} (not installed)")
    return f"Python {platform.python_version()}, " + ", ".join(found)


def cpu_description() -> str:
    """ "N CPU cores (model name)"."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPU cores ({name})"


def load_average() -> str:
    """The 1, 5 and 15-minute load averages, as text."""
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "n/a"
