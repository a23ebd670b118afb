"""Markdown tables of evaluation results."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["format_results_table"]


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100.0 * value:.2f}"


def format_results_table(rows: Sequence[dict]) -> str:
    """Markdown table of evaluation results.

    Each row is a dict with ``name`` and ``protocol`` (free text, e.g. "linear", "k-NN (k=200)"),
    and optionally ``top1`` / ``top5`` (fractions in [0, 1], shown as percentages) and
    ``learning_rate`` (or ``lr``). Missing values show as "—".
    """
    lines = [
        "| name | protocol | top-1 (%) | top-5 (%) | lr |",
        "|---|---|---:|---:|---:|",
    ]
    for row in rows:
        lr = row.get("learning_rate", row.get("lr"))
        cells = [
            str(row.get("name", "")).replace("|", "\\|"),
            str(row.get("protocol", "")).replace("|", "\\|"),
            _percent(row.get("top1")),
            _percent(row.get("top5")),
            "—" if lr is None else f"{lr:g}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
