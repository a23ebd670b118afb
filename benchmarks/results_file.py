"""Shared helper of the benchmark scripts: replace one marked section of RESULTS.md."""

from __future__ import annotations

import datetime
import platform
import re
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    """CPU model and core count (and the GPU when there is one), for the results tables."""
    import torch

    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    text = f"{model}, {os.cpu_count()} cores, torch {torch.__version__}"
    # Whether bf16 is native here decides what `--precision auto` trains in.
    from byol.runtime import NATIVE_CPU_FLAGS, cpu_flags

    native = sorted(set(NATIVE_CPU_FLAGS["bf16"]) & cpu_flags())
    text += f", native bf16: {' '.join(native)}" if native else ", no native bf16"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name()}"
    return text


def write_section(name: str, body: str, path: Path = RESULTS) -> None:
    """Put ``body`` between ``<!-- name:begin -->`` and ``<!-- name:end -->``, keeping the rest."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    text = (
        pattern.sub(lambda _: block, text)
        if pattern.search(text)
        else f"{text.rstrip()}\n\n{block}\n"
    )
    path.write_text(text)


def command_line(script: str, write: bool) -> str:
    """How a table of ``benchmarks/<script>`` was made, for the table itself."""
    return f".venv/bin/python benchmarks/{script}" + (" --write" if write else "")


def publish(name: str, report: str, write: bool) -> None:
    """Print ``report`` and, with ``write``, put it in section ``name`` of RESULTS.md."""
    print(report)
    if write:
        write_section(name, report)


def report_header(title: str, conditions: str, command: str) -> list[str]:
    """A section's first lines: its title, when and where it was measured, and the command."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [f"## {title}", "", f"Measured {now} on {machine()}, {conditions}.", "",
            "```", command, "```", ""]  # fmt: skip
