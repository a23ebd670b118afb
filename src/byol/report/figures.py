"""The report's figures, drawn on ``matplotlib.figure.Figure`` objects with the Agg renderer
(the caller's pyplot state and backend are left alone)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ..model import COLLAPSE_WARNING

__all__ = [
    "nearest_neighbours",
    "plot_monitors",
    "plot_retrieval",
    "plot_training_curves",
    "plot_tsne",
]

_DPI = 110


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


def plot_monitors(steps: list[dict], monitors: list[dict], path: Path) -> Path:
    """k-NN top-1 over epochs (left), the collapse metric over steps (middle) and RankMe of
    the representations and projections over epochs (right, when logged)."""
    knn = [r for r in monitors if "knn_top1" in r]
    ranks = [r for r in monitors if "rankme" in r]
    figure = _figure(15.0 if ranks else 10.0, 3.8)
    left, right, *rest = figure.subplots(1, 3 if ranks else 2)
    if rest:
        _plot_rankme(rest[0], ranks)
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


def _plot_rankme(axis, records: list[dict]) -> None:
    epochs = np.asarray([r.get("epoch", r["step"]) for r in records], dtype=float)
    for key, label, colour in (("rankme", "representations", "tab:green"),
                               ("rankme_projection", "projections", "tab:olive")):  # fmt: skip
        values = [r.get(key) for r in records]
        if all(isinstance(v, int | float) for v in values):
            _plot_series(axis, epochs, np.asarray(values, dtype=float), color=colour, label=label)
    axis.set_title("RankMe (effective rank, label-free)")
    axis.set_xlabel("epoch")
    axis.set_ylabel("RankMe")
    axis.legend(loc="lower right", fontsize=8)


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
