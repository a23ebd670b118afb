"""``byol eval`` with few labels and with none: ``--protocol finetune`` (the encoder fine-tuned on
class-balanced fractions of the labels, against the same architecture from scratch) and
``--protocol rankme`` (the label-free effective rank of the features)."""

from __future__ import annotations

import time
from typing import Any

from .baselines import random_init_encoder
from .errors import DataError
from .evaluation_files import augmented_crop, open_evaluation, record, say
from .handover import resolve_checkpoint
from .runtime import describe_precision, precision_warning, resolve_precision

__all__ = [
    "DEFAULT_HEAD_INIT",
    "FINETUNE_VAL_FRACTION",
    "LABEL_FRACTIONS",
    "finetune_evaluation",
    "rankme_evaluation",
]

#: The label fractions of ``--protocol finetune`` (the paper's 1% and 10%).
LABEL_FRACTIONS: tuple[float, ...] = (0.01, 0.1)
#: The held-out part of the training split on which fine-tuning chooses rate and epochs.
FINETUNE_VAL_FRACTION = 0.1
#: How the pre-trained encoder's head starts under ``--protocol finetune``: fitted on its frozen
#: features (LP-FT), which measured above a random head at 1% of Fashion-MNIST's labels
#: (docs/evaluation.md).
DEFAULT_HEAD_INIT = "linear-probe"


def finetune_evaluation(
    checkpoint, *, data, data_root, baselines, label_fractions, epochs, seed, device,
    write_run_file, quiet, head_init=DEFAULT_HEAD_INIT, precision="auto", learning_rates=None,
) -> dict[str, Any]:  # fmt: skip
    """``--protocol finetune``: the encoder (and ``scratch``, the same architecture from a
    random start) fine-tuned on each class-balanced fraction of the training labels.

    ``head_init`` is how the pre-trained encoder's head starts; ``scratch`` is trained the
    standard supervised way, its head (like the rest of it) from a random start. ``precision``
    is resolved as ``byol train --precision`` (``auto``: bf16 where the hardware computes it
    natively) and is the same for both. ``learning_rates`` is the grid both choose from
    (default :data:`~byol.evaluate.finetune.FINETUNE_LEARNING_RATES`)."""
    from .evaluate.finetune import FINETUNE_LEARNING_RATES as DEFAULT_GRID
    from .evaluate.finetune import check_learning_rates, class_balanced_subset, finetune

    grid = tuple(learning_rates or DEFAULT_GRID)
    check_learning_rates(grid)  # before the checkpoint and data are loaded
    started = time.perf_counter()
    run = open_evaluation(checkpoint, data=data, data_root=data_root, device=device)
    checkpoint, encoder, info, name = run.checkpoint, run.encoder, run.info, run.dataset
    train_set, test_set, run_device = run.train, run.test, run.device
    requested, precision = precision, resolve_precision(precision, run_device)
    say(f"fine-tuning in {describe_precision(requested, precision, run_device)}", quiet)
    if warning := precision_warning(precision, run_device):
        say(f"warning: {warning}", quiet)
    if train_set.images is None or test_set.images is None:
        raise DataError(f"--protocol finetune needs {name!r} in memory; it is streamed")
    # Held out first, then the labelled subsets from the rest: never the test split.
    val_index = class_balanced_subset(train_set.labels, FINETUNE_VAL_FRACTION, seed=seed + 1)
    encoders = [("byol", encoder, head_init)]
    if "scratch" in baselines:
        scratch = random_init_encoder(info.arch, small_images=info.small_images,
                                      in_channels=info.in_channels, seed=seed,
                                      image_size=info.view_size)  # fmt: skip
        encoders.append(("scratch", scratch.to(run_device), "random"))
    rows = []
    for fraction in label_fractions:
        subset = class_balanced_subset(train_set.labels, fraction, seed=seed, exclude=val_index)
        parts = {"train": subset, "val": val_index}
        images = {k: train_set.images[v] for k, v in parts.items()} | {"test": test_set.images}
        labels = {k: train_set.labels[v] for k, v in parts.items()} | {"test": test_set.labels}
        for row_name, model, head_start in encoders:
            result = finetune(model, info.feature_dim, images, labels, mean=info.mean,
                              std=info.std, size=info.image_size, crop=augmented_crop(info),
                              seed=seed, device=run_device, head_init=head_start,
                              precision=precision, learning_rates=grid,
                              **({"epochs": epochs} if epochs else {}))  # fmt: skip
            rows.append(_finetune_row(row_name, fraction, result, quiet))
    first = rows[0]
    result = {
        "checkpoint": str(checkpoint), "step": info.step, "arch": info.arch, "dataset": name,
        "protocol": "finetune", "augmented": True, "seed": seed, "precision": precision,
        "split_sizes": {"train": len(train_set), "val": len(val_index), "test": len(test_set)},
        "top1": first["top1"], "top5": first["top5"], "learning_rate": first["learning_rate"],
        "seconds": time.perf_counter() - started, "rows": rows,
    }  # fmt: skip
    return record(result, checkpoint, name, info.data, write_run_file)


def _finetune_row(name: str, fraction: float, result: dict[str, Any], quiet: bool) -> dict:
    """The ``eval.json`` row of one method at one fraction, reported as it lands."""
    say(f"{name}: fine-tuned on {result['n_train']} labels ({100 * fraction:g}%): "
        f"top-1 {100 * result['top1']:.2f}% (lr {result['learning_rate']:g}, "
        f"{result['epochs']} epochs, {result['seconds']:.0f}s)", quiet)  # fmt: skip
    if edge := result["grid_edge"]:
        say(f"warning: {name} chose the {edge} rate of the grid ({result['learning_rate']:g}); "
            "a grid reaching past it (--learning-rates) may do better", quiet)  # fmt: skip
    return {"name": name, "protocol": "finetune", "label_fraction": fraction,
            **{k: v for k, v in result.items() if k != "val_top1"},
            "val_top1_by_lr": result["val_top1"]}  # fmt: skip


def rankme_evaluation(checkpoint, *, data, data_root, seed, device, batch_size,
                       write_run_file) -> dict[str, Any]:  # fmt: skip
    """``--protocol rankme``: the label-free score of the checkpoint (no labels needed)."""
    from .selection import checkpoint_rankme

    started = time.perf_counter()
    checkpoint = resolve_checkpoint(checkpoint)
    score = checkpoint_rankme(checkpoint, data=data, data_root=data_root, seed=seed,
                              device=device, batch_size=batch_size)  # fmt: skip
    name = str(data if data is not None else score["data"])
    row = {"name": "byol", "protocol": "rankme", "top1": None, "top5": None,
           "learning_rate": None, "rankme": score["rankme"],
           "rankme_projection": score["rankme_projection"], "samples": score["samples"],
           "seconds": time.perf_counter() - started}  # fmt: skip
    result = {
        "checkpoint": str(checkpoint), "step": score["step"], "arch": score["arch"],
        "dataset": name, "protocol": "rankme", "augmented": False, "seed": seed,
        "split_sizes": {"train": score["samples"], "val": 0, "test": 0}, "top1": None,
        "top5": None, "learning_rate": None, "rankme": score["rankme"],
        "seconds": row["seconds"], "rows": [row],
    }  # fmt: skip
    return record(result, checkpoint, name, score["data"], write_run_file)
