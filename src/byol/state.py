"""What a training checkpoint holds: one typed definition, written by training and read by
evaluation, embedding, export and report alike.

:class:`TrainState` is the checkpoint: the BYOL weights (online and target), the optimizer and
gradient-scaler state, the random streams, the position in the data (derived from ``step``),
the config and the resolved :class:`~byol.plan.RunPlan`. :func:`read_state` loads one through
:func:`byol.checkpoint.load_checkpoint` (verified, never unpickling code) and checks its
schema; checkpoints of byol 0.1 (format 1, which kept part of the plan under ``data``) are
read too, and anything else fails with a message naming the file and the format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .backbones import default_small_images
from .checkpoint import load_checkpoint
from .errors import CheckpointError
from .plan import RunPlan

__all__ = ["CHECKPOINT_FORMAT", "ENCODER_PREFIX", "TrainState", "read_state"]

#: The schema version written by this byol; 1 was byol 0.1's.
CHECKPOINT_FORMAT = 2
#: Keys of the online encoder's weights in ``TrainState.model``.
ENCODER_PREFIX = "online_encoder."


@dataclass
class TrainState:
    """A checkpoint: everything needed to resume a run exactly, or to hand its encoder over.

    ``rng`` holds ``augment`` (one augmentation-generator state per process) and ``torch``
    (the global CPU generator). ``train_seconds`` is the training time spent so far, resumed
    invocations included.
    """

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scaler: dict[str, Any]
    step: int
    total_steps: int
    train_seconds: float
    rng: dict[str, Any]
    config: dict[str, Any]
    plan: RunPlan
    byol_version: str = "unknown"
    format: int = CHECKPOINT_FORMAT

    @property
    def epoch(self) -> int | None:
        spe = self.plan.steps_per_epoch
        return None if not spe else self.step // spe

    def encoder_state(self, which: str = "online") -> dict[str, torch.Tensor]:
        """The ``online`` (default) or ``target`` encoder's weights, prefix removed."""
        if which not in ("online", "target"):
            raise ValueError(f"which must be 'online' or 'target', got {which!r}")
        prefix = ENCODER_PREFIX if which == "online" else "target_encoder."
        return {key[len(prefix) :]: value for key, value in self.model.items()
                if key.startswith(prefix)}  # fmt: skip

    def to_payload(self) -> dict[str, Any]:
        """The plain dict of tensors and containers that :func:`save_checkpoint` writes."""
        spe = self.plan.steps_per_epoch or 1
        return {
            "format": self.format, "model": self.model, "optimizer": self.optimizer,
            "scaler": self.scaler, "step": self.step, "epoch": self.step // spe,
            "batch_in_epoch": self.step % spe, "total_steps": self.total_steps,
            "train_seconds": self.train_seconds, "rng": self.rng, "config": self.config,
            "plan": self.plan.to_dict(), "byol_version": self.byol_version,
        }  # fmt: skip

    @classmethod
    def from_payload(cls, payload: dict[str, Any], source: str | Path = "checkpoint") -> TrainState:
        """Check and type a loaded payload; raise :class:`CheckpointError` naming ``source``."""
        version = payload.get("format")
        if version not in (1, CHECKPOINT_FORMAT):
            raise CheckpointError(
                f"checkpoint {source} has format {version!r}; this byol reads formats 1 and "
                f"{CHECKPOINT_FORMAT} (upgrade byol to read it)"
            )
        expected = {"model": dict, "step": int, "config": dict,
                    ("plan" if version == 2 else "data"): dict}  # fmt: skip
        for name, kind in expected.items():
            if not isinstance(payload.get(name), kind):
                raise CheckpointError(
                    f"checkpoint {source} (format {version}) has no {name!r} entry; it was not "
                    "written by byol train"
                )
        config = payload["config"]
        try:
            plan = (RunPlan.from_dict(payload["plan"]) if version == 2
                    else _plan_of_format_1(payload["data"], config))  # fmt: skip
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(
                f"checkpoint {source} (format {version}) has an incomplete run plan: {error!r}"
            ) from None
        return cls(
            model=payload["model"], optimizer=payload.get("optimizer") or {},
            scaler=payload.get("scaler") or {}, step=int(payload["step"]),
            total_steps=int(payload.get("total_steps") or 0),
            train_seconds=float(payload.get("train_seconds") or 0.0),
            rng=payload.get("rng") or {}, config=config, plan=plan,
            byol_version=str(payload.get("byol_version", "unknown")), format=int(version),
        )  # fmt: skip


def _plan_of_format_1(data: dict[str, Any], config: dict[str, Any]) -> RunPlan:
    """byol 0.1 kept the sizes, channels and normalisation under ``data`` and left the stem
    to be worked out again from the evaluation size."""
    image_size = int(data["image_size"])
    small_images = config.get("small_images")
    if small_images is None:
        small_images = default_small_images(image_size)
    return RunPlan(
        view_size=int(data.get("view_size") or image_size), image_size=image_size,
        small_images=bool(small_images), augment=str(data.get("augment", config.get("augment"))),
        channels=int(data["channels"]), mean=tuple(float(v) for v in data["mean"]),
        std=tuple(float(v) for v in data["std"]),
    )  # fmt: skip


def read_state(path: str | Path, map_location: str | torch.device = "cpu") -> TrainState:
    """Load and check the checkpoint at ``path`` (see :func:`byol.checkpoint.load_checkpoint`)."""
    return TrainState.from_payload(load_checkpoint(path, map_location), path)
