"""The run folder's files as the report reads them: metrics, summary, eval results."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["read_json", "read_metrics"]


def read_metrics(path: str | Path) -> tuple[list[dict], list[dict], int]:
    """Parse ``metrics.jsonl``: ``(step_records, knn_records, unreadable_lines)``.

    Step records carry ``loss``; monitor records ``knn_top1`` and / or ``rankme``. Steps
    logged twice (a run resumed from an older checkpoint re-logs them) keep their last record.
    Both lists are sorted by step.
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
        if "knn_top1" in record or "rankme" in record:
            knn[int(record["step"])] = record
    return [steps[s] for s in sorted(steps)], [knn[s] for s in sorted(knn)], bad


def read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None
