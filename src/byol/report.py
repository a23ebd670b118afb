"""``byol report``: a Markdown report with PNG plots of a ``byol train`` run folder.

:func:`make_report` reads ``config.yaml``, ``metrics.jsonl``, ``summary.json``,
``checkpoints/last.pt`` and, when present, ``eval.json``, and writes to ``RUN/report/``:

* ``training_curves.png`` - loss, learning rate and τ over optimizer steps;
* ``monitors.png`` - k-NN top-1 over epochs and the collapse metric over steps;
* ``tsne.png`` - t-SNE map of (at most 2000) test embeddings, coloured by label;
* ``retrieval.png`` - 8 test queries, each with its 8 nearest training images (cosine
  similarity of the encoder's features);
* ``report.md`` - the run summary, the figures and the evaluation table.

Parts that cannot be made (no checkpoint, dataset not available) are replaced by a note; the
report is still written. Figures are drawn on ``matplotlib.figure.Figure`` objects with the
Agg renderer, so the caller's pyplot state and backend are left alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from .errors import ByolError, ConfigError, DataError
from .model import COLLAPSE_WARNING

__all__ = ["ReportResult", "make_report", "read_metrics"]

_DPI = 110


@dataclass
class ReportResult:
    """What :func:`make_report` wrote."""

    report: Path
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------ inputs


def read_metrics(path: str | Path) -> tuple[list[dict], list[dict], int]:
    """Parse ``metrics.jsonl``: ``(step_records, knn_records, unreadable_lines)``.

    Step records carry ``loss``; k-NN records ``knn_top1``. Steps logged twice (a run resumed
    from an older checkpoint re-logs them) keep their last record. Both lists are sorted by step.
    """
    steps: dict[int, dict] = {}
    knn: dict[int, dict] = {}
    bad = 0
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return [], [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # e.g. the last line of a crashed run
            bad += 1
            continue
        if not isinstance(record, dict) or "step" not in record:
            bad += 1
            continue
        if "loss" in record:
            steps[int(record["step"])] = record
        if "knn_top1" in record:
            knn[int(record["step"])] = record
    return [steps[s] for s in sorted(steps)], [knn[s] for s in sorted(knn)], bad


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


# ------------------------------------------------------------------------------------ figures


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def _column(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(r["step"], r[key]) for r in records if isinstance(r.get(key), int | float)]
    if not pairs:
        return np.zeros(0), np.zeros(0)
    x, y = zip(*pairs)
    return np.asarray(x, dtype=float), np.asarray(y, dtype=float)


def _plot_series(axis, x: np.ndarray, y: np.ndarray, **style: Any) -> None:
    # A single point would be an invisible line: mark points when there are few.
    marker = "o" if len(x) <= 30 else None
    axis.plot(x, y, marker=marker, markersize=3, linewidth=1.2, **style)
    axis.grid(True, alpha=0.3)


def plot_training_curves(steps: list[dict], path: Path) -> Path:
    """Loss, learning rate and τ over optimizer steps, three panels sharing the step axis."""
    figure = _figure(7.0, 6.5)
    axes = figure.subplots(3, 1, sharex=True)
    for axis, key, label, colour in (
        (axes[0], "loss", "BYOL loss", "tab:blue"),
        (axes[1], "lr", "learning rate", "tab:orange"),
        (axes[2], "tau", "τ (target decay)", "tab:green"),
    ):
        x, y = _column(steps, key)
        _plot_series(axis, x, y, color=colour)
        axis.set_ylabel(label)
    axes[0].set_title("Training curves (loss: mean of each logging window; lr, τ: at its end)")
    axes[2].set_xlabel("optimizer step")
    axes[2].ticklabel_format(axis="y", useOffset=False)
    figure.savefig(path)
    return path


def plot_monitors(steps: list[dict], knn: list[dict], path: Path) -> Path:
    """k-NN top-1 over epochs (left) and the collapse metric over steps (right)."""
    figure = _figure(10.0, 3.8)
    left, right = figure.subplots(1, 2)
    if knn:
        epochs = np.asarray([r.get("epoch", r["step"]) for r in knn], dtype=float)
        top1 = 100 * np.asarray([r["knn_top1"] for r in knn], dtype=float)
        _plot_series(left, epochs, top1, color="tab:purple")
        for e, t in zip(epochs, top1):
            left.annotate(f"{t:.1f}", (e, t), textcoords="offset points", xytext=(0, 5),
                          ha="center", fontsize=8)  # fmt: skip
        # A few tenths of a point would otherwise fill the whole axis and look dramatic.
        low, high = float(top1.min()), float(top1.max())
        pad = max(2.5, (high - low) * 0.1)
        left.set_ylim(max(0.0, low - pad), min(100.0, high + pad))
        bank = knn[-1].get("knn_bank")
        left.set_title("k-NN monitor" + (f" (bank {bank}, queries {knn[-1].get('knn_queries')})"
                                         if bank else ""))  # fmt: skip
    else:
        left.text(0.5, 0.5, "no k-NN records\n(knn_every = 0, or no epoch finished)",
                  ha="center", va="center", transform=left.transAxes)  # fmt: skip
        left.set_title("k-NN monitor")
    left.set_xlabel("epoch")
    left.set_ylabel("k-NN top-1 (%)")
    x, y = _column(steps, "collapse_std")
    _plot_series(right, x, y, color="tab:red")
    right.axhline(1.0, color="grey", linestyle="--", linewidth=0.8, label="healthy (~1)")
    right.axhline(COLLAPSE_WARNING, color="black", linestyle=":", linewidth=0.8,
                  label=f"collapse warning ({COLLAPSE_WARNING})")  # fmt: skip
    right.set_ylim(0, max(1.2, float(y.max()) * 1.1 if len(y) else 1.2))
    right.set_title("Collapse metric: std of normalised projections × √d")
    right.set_xlabel("optimizer step")
    right.legend(loc="lower right", fontsize=8)
    figure.savefig(path)
    return path


def _label_names(classes: list[str] | None, labels: np.ndarray) -> dict[int, str]:
    names = {}
    for label in sorted(set(labels.tolist())):
        if label < 0:
            names[label] = "unlabelled"
        elif classes is not None and label < len(classes):
            names[label] = classes[label]
        else:
            names[label] = str(label)
    return names


def plot_tsne(
    features: torch.Tensor,
    labels: np.ndarray | None,
    classes: list[str] | None,
    path: Path,
    *,
    seed: int = 0,
    title: str = "t-SNE of test embeddings",
) -> Path:
    """2-D t-SNE (scikit-learn) of L2-normalised ``features``, coloured by label."""
    from sklearn.manifold import TSNE

    points = torch.nn.functional.normalize(features.float(), dim=1).numpy()
    n = points.shape[0]
    if n < 5:
        raise DataError(f"t-SNE needs at least 5 embeddings, got {n}")
    perplexity = float(min(30, max(2, (n - 1) // 3)))
    embedded = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                    random_state=seed).fit_transform(points)  # fmt: skip
    figure = _figure(7.5, 6.5)
    axis = figure.subplots()
    if labels is None:
        axis.scatter(embedded[:, 0], embedded[:, 1], s=5, alpha=0.7, color="tab:blue")
    else:
        from matplotlib import colormaps

        names = _label_names(classes, labels)
        palette = colormaps["tab10" if len(names) <= 10 else "tab20"]
        for index, (label, name) in enumerate(names.items()):
            chosen = labels == label
            axis.scatter(embedded[chosen, 0], embedded[chosen, 1], s=5, alpha=0.75,
                         color=palette(index % palette.N), label=name)  # fmt: skip
        if len(names) <= 20:
            axis.legend(markerscale=3, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    axis.set_title(f"{title} ({n} points, perplexity {perplexity:g})")
    axis.set_xticks([])
    axis.set_yticks([])
    figure.savefig(path)
    return path


def _as_picture(image: torch.Tensor) -> tuple[np.ndarray, str | None]:
    """uint8 (C, H, W) → an array imshow draws, and the colour map for grayscale."""
    array = image.numpy()
    if array.shape[0] == 1:
        return array[0], "gray"
    return np.transpose(array, (1, 2, 0)), None


def nearest_neighbours(
    query_features: torch.Tensor, bank_features: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(similarity, index)`` of the ``k`` most cosine-similar bank rows of each query."""
    queries = torch.nn.functional.normalize(query_features.float(), dim=1)
    bank = torch.nn.functional.normalize(bank_features.float(), dim=1)
    return (queries @ bank.T).topk(min(k, bank.shape[0]), dim=1)


def plot_retrieval(
    query_images: torch.Tensor,
    query_labels: np.ndarray | None,
    neighbour_images: torch.Tensor,
    neighbour_labels: np.ndarray | None,
    similarity: torch.Tensor,
    classes: list[str] | None,
    path: Path,
) -> Path:
    """Grid: each row a query (left) and its neighbours by decreasing cosine similarity; a
    neighbour's frame is green when its label matches the query's, red otherwise."""
    rows, k = similarity.shape
    figure = _figure(1.2 * (k + 1) + 0.6, 1.35 * rows + 0.5)
    axes = np.atleast_2d(figure.subplots(rows, k + 1))

    def name(labels: np.ndarray | None, index: tuple[int, ...]) -> str:
        if labels is None:
            return ""
        label = int(labels[index])
        if classes is not None and 0 <= label < len(classes):
            return classes[label]
        return str(label)

    for row in range(rows):
        picture, cmap = _as_picture(query_images[row])
        axes[row, 0].imshow(picture, cmap=cmap, vmin=0, vmax=255)
        axes[row, 0].set_title("query: " + name(query_labels, (row,)), fontsize=7)
        for col in range(k):
            axis = axes[row, col + 1]
            picture, cmap = _as_picture(neighbour_images[row, col])
            axis.imshow(picture, cmap=cmap, vmin=0, vmax=255)
            axis.set_title(f"{name(neighbour_labels, (row, col))} {similarity[row, col]:.2f}",
                           fontsize=6)  # fmt: skip
            if query_labels is not None and neighbour_labels is not None:
                same = int(query_labels[row]) == int(neighbour_labels[row, col])
                for spine in axis.spines.values():
                    spine.set_edgecolor("tab:green" if same else "tab:red")
                    spine.set_linewidth(2)
        for axis in axes[row]:
            axis.set_xticks([])
            axis.set_yticks([])
    figure.suptitle("Nearest training images by cosine similarity of the encoder's features",
                    fontsize=9)  # fmt: skip
    figure.savefig(path)
    return path


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


# ------------------------------------------------------------------------------------ report


def _format_number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _summary_lines(
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
    if knn:
        lines.append(f"| k-NN top-1 | {100 * knn[-1]['knn_top1']:.2f}% (epoch "
                     f"{knn[-1].get('epoch', 0):.2f}) |")  # fmt: skip
    return lines


def make_report(
    run_dir: str | Path,
    *,
    out: str | Path | None = None,
    data_root: str | Path | None = None,
    device: torch.device | str | None = None,
    tsne_points: int = 2000,
    bank_size: int = 10000,
    queries: int = 8,
    neighbours: int = 8,
    seed: int = 0,
) -> ReportResult:
    """Write ``report.md`` and its PNG figures for run folder ``run_dir`` into ``out``
    (default ``run_dir/report``). Returns the paths written and notes on skipped parts.

    Raises :class:`DataError` when ``run_dir`` is not a byol run folder (no ``config.yaml``
    nor ``metrics.jsonl``).
    """
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise DataError(f"run folder {run_dir} does not exist")
    if not (run_dir / "config.yaml").is_file() and not (run_dir / "metrics.jsonl").is_file():
        raise DataError(f"{run_dir} is not a byol run folder (no config.yaml or metrics.jsonl)")
    for flag, value in (("--tsne-points", tsne_points), ("--bank-size", bank_size),
                        ("queries", queries), ("neighbours", neighbours)):  # fmt: skip
        if value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    out_dir = Path(out).expanduser() if out is not None else run_dir / "report"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"cannot create report folder {out_dir}: {error.strerror}") from None
    result = ReportResult(report=out_dir / "report.md")

    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        config = {}
        result.notes.append("config.yaml missing or unreadable")
    summary = _read_json(run_dir / "summary.json")
    steps, knn, bad_lines = read_metrics(run_dir / "metrics.jsonl")
    if bad_lines:
        result.notes.append(f"{bad_lines} unreadable line(s) in metrics.jsonl were skipped")

    sections: list[str] = [f"# BYOL run report: {run_dir.name}", ""]
    sections += [*_summary_lines(run_dir.absolute(), config, summary, steps, knn), ""]

    sections += ["## Training", ""]
    if steps:
        result.figures.append(plot_training_curves(steps, out_dir / "training_curves.png"))
        result.figures.append(plot_monitors(steps, knn, out_dir / "monitors.png"))
        sections += [
            "Loss (mean over each logging window), learning rate and τ (at the logged step) "
            "over optimizer steps:", "", "![training curves](training_curves.png)", "",
            "k-NN top-1 of the online encoder's features (weighted cosine vote, "
            f"k={config.get('knn_k', 200)}, T={config.get('knn_temperature', 0.1)}) and the "
            "collapse metric (std of the L2-normalised projections × √d: ~1 is healthy, near 0 "
            "means collapsed):", "", "![monitors](monitors.png)", "",
        ]  # fmt: skip
    else:
        note = "metrics.jsonl has no step records yet"
        result.notes.append(note)
        sections += [f"_{note}._", ""]

    sections += _embedding_sections(run_dir, out_dir, result, data_root=data_root, device=device,
                                    tsne_points=tsne_points, bank_size=bank_size,
                                    queries=queries, neighbours=neighbours, seed=seed)  # fmt: skip

    sections += ["## Evaluation", ""]
    evaluation = _read_json(run_dir / "eval.json")
    if evaluation and evaluation.get("rows"):
        from .evaluation_run import results_table

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
    else:
        sections += ["_No eval.json in the run folder: run `byol eval --checkpoint "
                     f"{run_dir}/checkpoints/last.pt --baseline random-init --baseline pixels` "
                     "to add the evaluation table._", ""]  # fmt: skip
    if result.notes:
        sections += ["## Notes", ""] + [f"- {note}" for note in result.notes] + [""]
    try:
        result.report.write_text("\n".join(sections))
    except OSError as error:
        raise DataError(f"cannot write {result.report}: {error.strerror}") from None
    return result


def _embedding_sections(
    run_dir: Path, out_dir: Path, result: ReportResult, *, data_root, device, tsne_points: int,
    bank_size: int, queries: int, neighbours: int, seed: int,
) -> list[str]:  # fmt: skip
    """t-SNE map and retrieval grid; a note instead when the checkpoint or data is missing."""
    from .handover import encode_dataset, load_data_for, load_encoder
    from .runtime import resolve_device

    sections = ["## What the features learned", ""]
    run_device = resolve_device(device)
    try:
        encoder, info = load_encoder(run_dir / "checkpoints" / "last.pt", device=run_device)
        train_set = load_data_for(info, data_root=data_root, split="train")
    except ByolError as error:
        note = f"t-SNE map and retrieval grid skipped: {error}"
        result.notes.append(note)
        return [*sections, f"_{note}._", ""]
    try:
        test_set = load_data_for(info, data_root=data_root, split="test")
        query_source = "test"
    except ByolError:
        test_set, query_source = None, "held-out training"

    generator = torch.Generator().manual_seed(seed)
    if test_set is not None:
        pool, pool_labels = test_set, test_set.labels
        bank_candidates = torch.arange(len(train_set))
    else:
        # No test split: the queries are training images, kept out of the bank.
        order = torch.randperm(len(train_set), generator=generator)
        held = order[: max(queries, min(tsne_points, len(train_set) // 5))]
        pool = train_set.subset(held)
        pool_labels = pool.labels
        bank_candidates = order[len(held) :]
    labelled = pool_labels is not None and bool((pool_labels >= 0).any())

    # t-SNE
    n_map = min(tsne_points, len(pool))
    map_index = torch.randperm(len(pool), generator=generator)[:n_map].sort().values
    map_features = encode_dataset(encoder, pool, info, indices=map_index, device=run_device)
    map_labels = pool_labels[map_index].numpy() if labelled else None
    try:
        result.figures.append(plot_tsne(map_features, map_labels, pool.classes,
                                        out_dir / "tsne.png", seed=seed,
                                        title=f"t-SNE of {query_source} embeddings"))  # fmt: skip
        sections += [f"t-SNE map of {n_map} {query_source} embeddings (L2-normalised), coloured "
                     "by label:", "", "![t-SNE map](tsne.png)", ""]  # fmt: skip
    except DataError as error:
        result.notes.append(f"t-SNE map skipped: {error}")

    # Retrieval
    if len(bank_candidates) > bank_size:
        pick = torch.randperm(len(bank_candidates), generator=generator)[:bank_size]
        bank_index = bank_candidates[pick].sort().values
    else:
        bank_index = bank_candidates
    bank_features = encode_dataset(encoder, train_set, info, indices=bank_index,
                                   device=run_device)  # fmt: skip
    query_index = _pick_queries(pool_labels if labelled else None, len(pool), queries, seed)
    query_features = encode_dataset(encoder, pool, info, indices=query_index, device=run_device)
    similarity, nearest = nearest_neighbours(query_features, bank_features, neighbours)
    neighbour_rows = bank_index[nearest]  # (Q, k) indices into train_set
    flat_images = train_set.get(neighbour_rows.flatten())
    neighbour_images = flat_images.view(*neighbour_rows.shape, *flat_images.shape[1:])
    train_labels = train_set.labels
    result.figures.append(plot_retrieval(
        pool.get(query_index),
        pool_labels[query_index].numpy() if labelled else None,
        neighbour_images,
        train_labels[neighbour_rows].numpy() if train_labels is not None else None,
        similarity, pool.classes, out_dir / "retrieval.png",
    ))  # fmt: skip
    precision = ""
    if labelled and train_labels is not None:
        hits = train_labels[neighbour_rows] == pool_labels[query_index].view(-1, 1)
        precision = (f" {int(hits.sum())} of {hits.numel()} neighbours "
                     f"({100 * hits.float().mean():.0f}%) share their query's label.")  # fmt: skip
    sections += [
        f"Retrieval: {len(query_index)} {query_source} queries (left column), each with its "
        f"{similarity.shape[1]} nearest among {len(bank_index)} training images by cosine "
        "similarity of the encoder's features (similarity above each image; green frame: same "
        f"label as the query, red: different).{precision}", "",
        "![retrieval grid](retrieval.png)", "",
    ]  # fmt: skip
    return sections
