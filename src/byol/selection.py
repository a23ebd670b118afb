"""Label-free model selection: rank checkpoints (of one run, or of a sweep) by RankMe.

:func:`checkpoint_rankme` computes RankMe (:func:`byol.evaluate.rankme`) of a checkpoint's
online representations y and projections z on a fixed, seeded subset of its training images
(no labels used); :func:`select_checkpoints` does it for every checkpoint of the runs it is
given and ranks them, highest first. The paper behind RankMe (Garrido et al., ICML 2023)
found that a higher rank predicts a better linear probe across one method's hyper-parameters;
``benchmarks/RESULTS.md`` says how well that holds for BYOL here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .checkpoint import CheckpointManager
from .errors import CheckpointError, ConfigError
from .evaluate.rankme import RANKME_SAMPLES, rankme
from .handover import encode_dataset, load_data_for, resolve_checkpoint
from .handover.load import encoder_from_state
from .model import MLPHead
from .runtime import resolve_device
from .state import TrainState, read_state

__all__ = ["checkpoint_rankme", "checkpoints_of", "select_checkpoints"]


def checkpoints_of(run: str | Path) -> list[Path]:
    """A checkpoint file itself, or every checkpoint of a run folder (``last.pt`` and the
    numbered ones kept with ``--keep-checkpoints``), oldest first, one per step."""
    path = Path(run).expanduser()
    if path.is_file():
        return [path]
    manager = CheckpointManager(path / "checkpoints")
    if not manager.exists():
        raise CheckpointError(f"{path} holds no checkpoints (expected {manager.folder})")
    files = [*manager.numbered(), *([manager.last] if manager.last.exists() else [])]
    by_step: dict[int, Path] = {}
    for file in files:
        by_step.setdefault(read_state(file).step, file)  # last.pt repeats the newest step
    return [by_step[step] for step in sorted(by_step)]


@torch.no_grad()
def checkpoint_rankme(
    checkpoint: str | Path,
    *,
    data: str | None = None,
    data_root: str | Path | None = None,
    samples: int = RANKME_SAMPLES,
    seed: int = 0,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """RankMe of the checkpoint's representations and projections on ``samples`` training
    images (drawn with ``seed``, the same images for every checkpoint of a dataset)."""
    if samples < 2:
        raise ConfigError(f"--samples must be >= 2, got {samples}")
    run_device = resolve_device(device)
    path = resolve_checkpoint(checkpoint)
    state = read_state(path)  # read once: the encoder and the projector both come from it
    encoder, info = encoder_from_state(state, path, device=run_device)
    dataset = load_data_for(info, data, data_root=data_root, split="train")
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(dataset), generator=generator)[:samples].sort().values
    features = encode_dataset(encoder, dataset, info, indices=pick, batch_size=batch_size,
                              device=run_device)  # fmt: skip
    projections = _projections(state, features, info.feature_dim)
    return {
        "checkpoint": str(info.source), "step": info.step, "arch": info.arch, "data": info.data,
        "samples": len(pick),
        "rankme": rankme(features),
        "rankme_projection": rankme(projections) if projections is not None else None,
    }  # fmt: skip


def _projections(
    state: TrainState, features: torch.Tensor, feature_dim: int
) -> torch.Tensor | None:
    """The checkpoint's online projector applied to ``features`` (eval mode)."""
    prefix = "online_projector."
    weights = {k[len(prefix) :]: v for k, v in state.model.items() if k.startswith(prefix)}
    if not weights:
        return None
    config = state.config
    projector = MLPHead(feature_dim, int(config.get("hidden_dim", 4096)),
                        int(config.get("projection_dim", 256)))  # fmt: skip
    projector.load_state_dict(weights)
    return projector.eval()(features.float())


def select_checkpoints(
    runs: Sequence[str | Path], *, metric: str = "rankme", **options: Any
) -> dict[str, Any]:
    """RankMe of every checkpoint of ``runs``, ranked highest first; ``best`` is the first.

    ``metric`` is ``rankme`` (the representations, which are evaluated and handed over) or
    ``rankme_projection``. ``options`` go to :func:`checkpoint_rankme`.
    """
    if metric not in ("rankme", "rankme_projection"):
        raise ConfigError(f"--metric must be rankme or rankme_projection, got {metric!r}")
    if not runs:
        raise ConfigError("byol select needs at least one run folder or checkpoint")
    scores = [checkpoint_rankme(path, **options) for run in runs for path in checkpoints_of(run)]
    ranked = sorted(scores, key=lambda row: -(row[metric] if row[metric] is not None else -1))
    return {"metric": metric, "ranked": ranked, "best": ranked[0]}
