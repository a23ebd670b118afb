"""The run folder of ``byol train``: its config guard, config file, metrics and summary.

A run folder holds ``config.yaml`` (the resolved config and, under ``plan``, the run plan),
``metrics.jsonl`` (one JSON record per line), TensorBoard events in ``tb/``, ``checkpoints/``
and ``summary.json``. :class:`RunFolder` refuses a different config into a folder that already
holds a run (the keys marked ``resumable`` in :mod:`byol.config` may change) and writes every
file atomically or line by line, so a kill at any moment leaves a folder that resumes.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import yaml

from .config import DERIVED_SECTION, RESUMABLE_CHANGES, TrainConfig
from .errors import ConfigError

__all__ = ["MetricsWriter", "RunFolder", "config_changes", "truncate_metrics"]


class RunFolder:
    """``out`` as a run folder: :meth:`check_config`, :meth:`write_config`,
    :meth:`open_metrics` and :meth:`write_summary`."""

    def __init__(self, out: str | Path) -> None:
        self.path = Path(out)
        self.config_file = self.path / "config.yaml"
        self.metrics_file = self.path / "metrics.jsonl"
        self.checkpoints = self.path / "checkpoints"

    def check_config(self, config: TrainConfig) -> None:
        """Refuse to mix a different config into an existing run folder."""
        if not self.config_file.exists():
            return
        try:
            previous = yaml.safe_load(self.config_file.read_text()) or {}
        except (OSError, yaml.YAMLError):
            previous = None
        if not isinstance(previous, dict):
            # Not a config byol wrote (its writes are atomic): the folder belongs to something
            # else, whose files must not be overwritten.
            raise ConfigError(
                f"{self.config_file} exists but is not a byol run config; choose another --out"
            )
        detail = config_changes(previous, config)
        if detail:
            raise ConfigError(
                f"run folder {self.path} already holds a run with a different config ({detail}); "
                "choose another --out, or rerun with the same settings to resume it"
            )

    def write_config(self, config: TrainConfig, plan: dict[str, Any]) -> None:
        """``config.yaml``: the config, and the derived plan under ``plan`` (atomic, so a kill
        mid-write cannot leave a config that refuses the resume)."""
        values = {**config.to_dict(), DERIVED_SECTION: plan}
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            temporary = self.path / ".config.yaml.tmp"
            temporary.write_text(yaml.safe_dump(values, sort_keys=True))
            temporary.replace(self.config_file)
        except OSError as error:
            raise ConfigError(
                f"cannot write to the run folder {self.path}: {error.strerror or error}; "
                "choose another --out"
            ) from None

    def open_metrics(self, tensorboard: bool, resume_step: int = 0) -> MetricsWriter:
        """The metrics writer, past records beyond ``resume_step`` dropped."""
        try:
            return MetricsWriter(self.path, tensorboard, resume_step=resume_step)
        except OSError as error:
            raise ConfigError(
                f"cannot write to the run folder {self.path}: {error.strerror or error}; "
                "choose another --out"
            ) from None

    def write_summary(self, summary: dict[str, Any]) -> None:
        (self.path / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def config_changes(previous: dict[str, Any], config: TrainConfig) -> str:
    """The keys that differ between ``previous`` (a saved config) and ``config`` and would
    change the run's result, as ``key: old -> new, ...`` ('' when none)."""
    previous = {k: v for k, v in previous.items() if k != DERIVED_SECTION}
    current = config.to_dict()
    changed = sorted(
        key for key in set(previous) | set(current)
        if key not in RESUMABLE_CHANGES and previous.get(key) != current.get(key)
    )  # fmt: skip
    return ", ".join(f"{k}: {previous.get(k)!r} -> {current.get(k)!r}" for k in changed)


def truncate_metrics(path: Path, resume_step: int) -> None:
    """Drop records past the checkpoint being resumed: the resumed run writes them again."""
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        if isinstance(record, dict) and record.get("step", 0) <= resume_step:
            kept.append(line)
    temporary = path.with_name(".metrics.jsonl.tmp")
    temporary.write_text("".join(line + "\n" for line in kept))
    temporary.replace(path)


class MetricsWriter:
    """metrics.jsonl (one JSON object per line, flushed) and TensorBoard scalars."""

    def __init__(self, out: Path, tensorboard: bool, resume_step: int = 0) -> None:
        out.mkdir(parents=True, exist_ok=True)
        path = out / "metrics.jsonl"
        if path.exists():
            truncate_metrics(path, resume_step)
        self.file = open(path, "a", buffering=1)  # noqa: SIM115
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tb"))
            except ImportError:
                warnings.warn(
                    "tensorboard is not installed; writing metrics.jsonl only", stacklevel=2
                )

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float):
                    self.tb.add_scalar(f"train/{key}", value, record["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()
