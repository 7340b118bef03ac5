"""What the benchmark scripts share: the machine they ran on, and shapes several of them measure."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

BELUGA_FAST = {"width": 256, "rank": 256, "dilations": [1, 2, 4, 8, 16, 32, 64, 128]}
"""The ``fast`` multiplexer at Beluga shape: receptive field 1 + 8 · 256 = 2049 >= L."""


def cpu_model() -> str:
    """The CPU's model name (from ``/proc/cpuinfo``; the platform's processor elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_version(name: str) -> str | None:
    """An installed distribution's version (``None`` when it is not installed)."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine(**versions: Any) -> dict[str, Any]:
    """The machine a benchmark ran on: CPU, cores, platform, Python, this package's version, and
    ``versions`` (e.g. ``torch=...``)."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        **versions,
        "package": package_version("multiplexer"),
    }


def write_result(result: dict[str, Any], path: Path | None) -> None:
    """Print a benchmark's result as JSON, and write it to ``path`` when given."""
    import json

    text = json.dumps(result, indent=1)
    if path is not None:
        path.write_text(text + "\n")
    print(text)
