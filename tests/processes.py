"""Killing a training process mid-run, for the exact-resume tests."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path


def sigkill_when(argv: list[str], env: dict[str, str], marker: Path, timeout: float) -> None:
    """Start ``argv`` and SIGKILL it as soon as ``marker`` (a checkpoint file) exists."""
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, f"{marker} did not appear within {timeout:.0f} s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
