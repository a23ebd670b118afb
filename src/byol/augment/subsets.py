"""The per-sample parts of the photometric steps: ops applied to the selected samples only,
and the colour jitter in each sample's own order (used by :class:`byol.augment.BYOLAugment`)."""

from __future__ import annotations

import torch

from ..color import adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation
from .views import ViewConfig

__all__ = ["JITTER_OPS", "apply_subset", "colour_jitter"]

#: Op index used in ``params["jitter_order"]`` and the columns of ``params["jitter_factors"]``.
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")


def apply_subset(x: torch.Tensor, mask: torch.Tensor, op) -> torch.Tensor:
    """Apply ``op(x[idx], idx)`` to the samples flagged in ``mask`` (on the generator's device).

    The whole batch goes through ``op`` when every sample is selected, no gather then.
    """
    idx = mask.nonzero().squeeze(1)
    n = idx.numel()
    if n == 0:
        return x
    if n == x.shape[0]:
        return op(x, idx).contiguous()
    idx_dev = idx.to(x.device)
    x.index_copy_(0, idx_dev, op(x.index_select(0, idx_dev), idx))
    return x


def colour_jitter(
    x: torch.Tensor, params: dict[str, torch.Tensor], config: ViewConfig, channels: int
) -> torch.Tensor:
    """Brightness, contrast, saturation and hue in each sample's own order, on jittered samples.

    At each of the 4 positions the jittered rows are regrouped (one gather) so that the samples
    having the same op there are contiguous, each op runs once on its slice, and the slices are
    concatenated. After the last position one scatter puts the rows back in batch order. This
    costs 2 passes over the data per position, against ~4 for a gather and a scatter per op.
    """
    strengths = (config.brightness, config.contrast, config.saturation, config.hue)
    ops = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
    active = [s > 0 and (channels == 3 or op_index < 2) for op_index, s in enumerate(strengths)]
    rows = params["jitter"].nonzero().squeeze(1)  # batch index of each working row
    if not any(active) or rows.numel() == 0:
        return x
    order = params["jitter_order"]
    factors = params["jitter_factors"]
    work = x
    for position in range(4):
        op_at_row = order[rows, position]
        regroup = op_at_row.argsort(stable=True)
        counts = torch.bincount(op_at_row, minlength=4).tolist()
        # The first gather reads straight from the batch, the later ones from the working rows.
        source_rows = rows[regroup] if position == 0 else regroup
        work = work.index_select(0, source_rows.to(x.device))
        rows = rows[regroup]
        pieces = []
        start = 0
        for op_index, count in enumerate(counts):
            piece = work[start : start + count]
            if count and active[op_index]:
                piece = ops[op_index](piece, factors[rows[start : start + count], op_index])
            pieces.append(piece)
            start += count
        work = torch.cat(pieces)
    if rows.numel() == x.shape[0]:
        return work.index_select(0, rows.argsort().to(x.device))
    x.index_copy_(0, rows.to(x.device), work)
    return x
