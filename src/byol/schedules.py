"""Schedules as pure functions of the optimizer step k (k = 0..K, clamped to K)."""

from __future__ import annotations

import math

__all__ = ["target_decay", "view_size", "warmup_cosine_lr"]


def target_decay(step: int, total_steps: int, base: float = 0.996) -> float:
    """τ_k = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2: rises from ``base`` at k = 0 to 1 at k = K."""
    if not 0.0 <= base <= 1.0:
        raise ValueError(f"base target decay must lie in [0, 1], got {base}")
    if total_steps <= 0:
        return 1.0
    k = min(max(step, 0), total_steps)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * k / total_steps) + 1.0) / 2.0


def warmup_cosine_lr(step: int, total_steps: int, base_lr: float, warmup_steps: int = 0) -> float:
    """Linear warm-up from 0 to ``base_lr`` over ``warmup_steps``, then cosine decay to 0 at K."""
    if total_steps <= 0:
        return 0.0
    k = min(max(step, 0), total_steps)
    if k < warmup_steps:
        return base_lr * k / warmup_steps
    decay_steps = total_steps - warmup_steps
    if decay_steps <= 0:
        return 0.0
    progress = (k - warmup_steps) / decay_steps
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def view_size(
    step: int, total_steps: int, size: int, final_size: int | None = None, final_from: float = 0.8
) -> int:
    """The training views' side at step k: ``size`` while k < ``final_from``·K, then
    ``final_size`` (progressive resizing; ``size`` throughout when ``final_size`` is None).

    Why: on a throughput-bound machine small views buy epochs, while a random-resized crop
    shows objects larger than the whole image does at evaluation ("FixRes", Touvron et al.
    2019); a last stretch at a larger side lets the encoder adjust to the scale it will be
    evaluated at (on Fashion-MNIST at 30 minutes it did not pay: docs/presets.md, round 19).
    Example: ``view_size(900, 1000, 16, 24)`` is 24, ``view_size(700, 1000, 16, 24)`` is 16.
    """
    if final_size is None or total_steps <= 0:
        return size
    return final_size if step >= final_from * total_steps else size
