"""What machine a benchmark ran on, for its JSON and its printed line."""

import platform
import subprocess


def cpu_name() -> str:
    """`lscpu`'s model name (what docs/speed.md names a CPU by)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Model name"))  # fmt: skip
    except (OSError, StopIteration):
        return platform.processor() or "unknown"
