"""The report's Markdown sections: summary table, training curves, what the features learned
(t-SNE map and retrieval grid) and the evaluation table."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ByolError, DataError
from .figures import (
    nearest_neighbours,
    plot_monitors,
    plot_retrieval,
    plot_training_curves,
    plot_tsne,
)

__all__ = [
    "ReportResult",
    "embedding_sections",
    "evaluation_section",
    "summary_lines",
    "training_section",
]


@dataclass
class ReportResult:
    """What :func:`byol.report.make_report` wrote."""

    report: Path
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _format_number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def summary_lines(
    run_dir: Path, config: dict, summary: dict | None, steps: list[dict], knn: list[dict]
) -> list[str]:
    lines = ["| | |", "|---|---|", f"| run folder | `{run_dir}` |"]
    for key in ("data", "arch", "batch_size", "base_lr", "epochs", "target_decay", "augment",
                "hidden_dim", "projection_dim", "seed"):  # fmt: skip
        if key in config:
            lines.append(f"| {key} | {_format_number(config[key])} |")
    if summary:
        lines.append(f"| steps | {summary.get('step')} of {summary.get('total_steps')}"
                     + (f" (stopped: {summary['stopped_early']})"
                        if summary.get("stopped_early") else "") + " |")  # fmt: skip
        if summary.get("seconds") is not None:
            lines.append(f"| wall time | {summary['seconds'] / 60:.1f} min |")
    if steps:
        lines.append(f"| final loss | {steps[-1]['loss']:.4f} (step {steps[-1]['step']}) |")
        speeds = [r["images_per_s"] for r in steps
                  if isinstance(r.get("images_per_s"), int | float)]  # fmt: skip
        if speeds:
            lines.append(f"| throughput | {float(np.median(speeds)):.0f} images/s (median) |")
        if "collapse_std" in steps[-1]:
            lines.append(f"| collapse metric | {steps[-1]['collapse_std']:.3f} (healthy ~1) |")
    scored = [r for r in knn if "knn_top1" in r]  # monitor records may hold RankMe alone
    if scored:
        lines.append(f"| k-NN top-1 | {100 * scored[-1]['knn_top1']:.2f}% (epoch "
                     f"{scored[-1].get('epoch', 0):.2f}) |")  # fmt: skip
    if knn and "rankme" in knn[-1]:
        lines.append(f"| RankMe | {knn[-1]['rankme']:.1f} (representations, epoch "
                     f"{knn[-1].get('epoch', 0):.2f}) |")  # fmt: skip
    return lines


def training_section(
    steps: list[dict], knn: list[dict], config: dict, out_dir: Path, result: ReportResult
) -> list[str]:
    """Training curves and monitors, or a note when no step was logged yet."""
    sections = ["## Training", ""]
    if not steps:
        note = "metrics.jsonl has no step records yet"
        result.notes.append(note)
        return [*sections, f"_{note}._", ""]
    result.figures.append(plot_training_curves(steps, out_dir / "training_curves.png"))
    result.figures.append(plot_monitors(steps, knn, out_dir / "monitors.png"))
    return [
        *sections,
        "Loss (mean over each logging window), learning rate and τ (at the logged step) "
        "over optimizer steps:", "", "![training curves](training_curves.png)", "",
        "k-NN top-1 of the online encoder's features (weighted cosine vote, "
        f"k={config.get('knn_k', 200)}, T={config.get('knn_temperature', 0.1)}) and the "
        "collapse metric (std of the L2-normalised projections × √d: ~1 is healthy, near 0 "
        "means collapsed):", "", "![monitors](monitors.png)", "",
    ]  # fmt: skip


def evaluation_section(run_dir: Path, evaluation: dict | None, summary: dict | None) -> list[str]:
    """The table of ``RUN/eval.json``, or how to make it."""
    sections = ["## Evaluation", ""]
    if not evaluation or not evaluation.get("rows"):
        return [*sections, f"_No eval.json in the run folder: run `byol eval {run_dir} "
                "--baseline random-init --baseline pixels` to add the evaluation table._",
                ""]  # fmt: skip
    from ..evaluation_run import results_table

    sizes = evaluation.get("split_sizes", {})
    held_out = (f", {sizes['val']} of them held out to choose the linear-probe learning rate"
                if sizes.get("val") else "")  # fmt: skip
    sections += [
        f"`byol eval` on {evaluation.get('dataset')} (checkpoint step {evaluation.get('step')}"
        f"; {sizes.get('train')} train images{held_out}; {sizes.get('test')} test images; "
        "frozen encoder, k-NN bank = the training split, queries = the test split):", "",
        results_table(evaluation).rstrip("\n"), "",
    ]  # fmt: skip
    if evaluation.get("step") is not None and summary and summary.get("step") not in (
        None, evaluation.get("step")
    ):  # fmt: skip
        sections += [f"_Note: evaluated at step {evaluation['step']}, the run is now at "
                     f"step {summary['step']}; rerun `byol eval`._", ""]  # fmt: skip
    return sections


@dataclass
class _Pools:
    """Where the report's images come from: the bank (training images) and the queries (the
    test split, or training images held out of the bank when there is none)."""

    train: Any
    pool: Any
    pool_labels: torch.Tensor | None
    bank_candidates: torch.Tensor
    source: str

    @property
    def labelled(self) -> bool:
        return self.pool_labels is not None and bool((self.pool_labels >= 0).any())


def embedding_sections(
    checkpoint: Path, out_dir: Path, result: ReportResult, *, data_root, device, tsne_points: int,
    bank_size: int, queries: int, neighbours: int, seed: int,
) -> list[str]:  # fmt: skip
    """t-SNE map and retrieval grid; a note instead when the checkpoint or data is missing."""
    from ..handover import load_data_for, load_encoder
    from ..runtime import resolve_device

    sections = ["## What the features learned", ""]
    run_device = resolve_device(device)
    try:
        encoder, info = load_encoder(checkpoint, device=run_device)
        train_set = load_data_for(info, data_root=data_root, split="train")
    except ByolError as error:
        note = f"t-SNE map and retrieval grid skipped: {error}"
        result.notes.append(note)
        return [*sections, f"_{note}._", ""]
    generator = torch.Generator().manual_seed(seed)
    pools = _pools(train_set, info, data_root, generator, queries=queries,
                   tsne_points=tsne_points)  # fmt: skip

    def encode(dataset, indices: torch.Tensor) -> torch.Tensor:
        from ..handover import encode_dataset

        return encode_dataset(encoder, dataset, info, indices=indices, device=run_device)

    sections += _tsne_section(pools, encode, out_dir, result, generator, tsne_points, seed)
    sections += _retrieval_section(pools, encode, out_dir, result, generator, bank_size=bank_size,
                                   queries=queries, neighbours=neighbours, seed=seed)  # fmt: skip
    return sections


def _pools(train_set, info, data_root, generator, *, queries: int, tsne_points: int) -> _Pools:
    from ..handover import load_data_for

    try:
        test_set = load_data_for(info, data_root=data_root, split="test")
    except ByolError:
        test_set = None
    if test_set is not None:
        return _Pools(train_set, test_set, test_set.labels, torch.arange(len(train_set)), "test")
    # No test split: the queries are training images, kept out of the bank.
    order = torch.randperm(len(train_set), generator=generator)
    # At most half of a small set, so that the bank keeps images too.
    wanted = max(queries, min(tsne_points, len(train_set) // 5))
    held = order[: max(1, min(wanted, len(train_set) // 2))]
    pool = train_set.subset(held)
    return _Pools(train_set, pool, pool.labels, order[len(held) :], "held-out training")


def _tsne_section(pools: _Pools, encode, out_dir, result, generator, tsne_points, seed):
    n_map = min(tsne_points, len(pools.pool))
    map_index = torch.randperm(len(pools.pool), generator=generator)[:n_map].sort().values
    map_features = encode(pools.pool, map_index)
    map_labels = pools.pool_labels[map_index].numpy() if pools.labelled else None
    try:
        result.figures.append(plot_tsne(map_features, map_labels, pools.pool.classes,
                                        out_dir / "tsne.png", seed=seed,
                                        title=f"t-SNE of {pools.source} embeddings"))  # fmt: skip
    except DataError as error:
        result.notes.append(f"t-SNE map skipped: {error}")
        return []
    return [f"t-SNE map of {n_map} {pools.source} embeddings (L2-normalised), coloured by "
            "label:", "", "![t-SNE map](tsne.png)", ""]  # fmt: skip


def _retrieval_section(
    pools: _Pools, encode, out_dir, result, generator, *, bank_size, queries, neighbours, seed
) -> list[str]:
    train_set, pool, candidates = pools.train, pools.pool, pools.bank_candidates
    if len(candidates) > bank_size:
        pick = torch.randperm(len(candidates), generator=generator)[:bank_size]
        bank_index = candidates[pick].sort().values
    else:
        bank_index = candidates
    bank_features = encode(train_set, bank_index)
    labels = pools.pool_labels if pools.labelled else None
    query_index = _pick_queries(labels, len(pool), queries, seed)
    similarity, nearest = nearest_neighbours(encode(pool, query_index), bank_features, neighbours)
    neighbour_rows = bank_index[nearest]  # (Q, k) indices into train_set
    flat_images = train_set.get(neighbour_rows.flatten())
    neighbour_images = flat_images.view(*neighbour_rows.shape, *flat_images.shape[1:])
    train_labels = train_set.labels
    result.figures.append(plot_retrieval(
        pool.get(query_index), labels[query_index].numpy() if labels is not None else None,
        neighbour_images,
        train_labels[neighbour_rows].numpy() if train_labels is not None else None,
        similarity, pool.classes, out_dir / "retrieval.png",
    ))  # fmt: skip
    precision = ""
    if labels is not None and train_labels is not None:
        hits = train_labels[neighbour_rows] == labels[query_index].view(-1, 1)
        precision = (f" {int(hits.sum())} of {hits.numel()} neighbours "
                     f"({100 * hits.float().mean():.0f}%) share their query's label.")  # fmt: skip
    return [
        f"Retrieval: {len(query_index)} {pools.source} queries (left column), each with its "
        f"{similarity.shape[1]} nearest among {len(bank_index)} training images by cosine "
        "similarity of the encoder's features (similarity above each image; green frame: same "
        f"label as the query, red: different).{precision}", "",
        "![retrieval grid](retrieval.png)", "",
    ]  # fmt: skip


def _pick_queries(labels: torch.Tensor | None, n_items: int, count: int, seed: int) -> torch.Tensor:
    """``count`` query indices: with labels, one per class first (in a seeded order) so the grid
    shows different classes; the rest drawn at random."""
    order = torch.randperm(n_items, generator=torch.Generator().manual_seed(seed))
    if labels is None:
        return order[:count]
    picked: list[int] = []
    seen: set[int] = set()
    for index in order.tolist():
        label = int(labels[index])
        if label not in seen:
            seen.add(label)
            picked.append(index)
        if len(picked) == count:
            break
    rest = [i for i in order.tolist() if i not in set(picked)]
    picked += rest[: count - len(picked)]
    return torch.as_tensor(picked[:count])
