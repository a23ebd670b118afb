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
report is still written. :mod:`byol.report.figures` draws, :mod:`byol.report.sections` writes
the Markdown, :mod:`byol.report.inputs` reads the run folder.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from ..errors import ConfigError, DataError
from ..handover.load import run_folder_of
from .inputs import read_json, read_metrics
from .sections import (
    ReportResult,
    embedding_sections,
    evaluation_section,
    summary_lines,
    training_section,
)

__all__ = ["ReportResult", "make_report", "read_metrics"]


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

    ``run_dir`` may also be a checkpoint file of a run folder: the report is the folder's, and
    the embedding figures use that checkpoint's encoder (default: ``checkpoints/last.pt``).

    Raises :class:`DataError` when ``run_dir`` is not a byol run folder (no ``config.yaml``
    nor ``metrics.jsonl``).
    """
    run_dir, checkpoint = _run_and_checkpoint(Path(run_dir).expanduser())
    out_dir = _check_arguments(run_dir, out, tsne_points=tsne_points, bank_size=bank_size,
                               queries=queries, neighbours=neighbours)  # fmt: skip
    result = ReportResult(report=out_dir / "report.md")
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        config = {}
        result.notes.append("config.yaml missing or unreadable")
    summary = read_json(run_dir / "summary.json")
    steps, knn, bad_lines = read_metrics(run_dir / "metrics.jsonl")
    if bad_lines:
        result.notes.append(f"{bad_lines} unreadable line(s) in metrics.jsonl were skipped")

    sections: list[str] = [f"# BYOL run report: {run_dir.name}", ""]
    sections += [*summary_lines(run_dir.absolute(), config, summary, steps, knn), ""]
    sections += training_section(steps, knn, config, out_dir, result)
    sections += embedding_sections(checkpoint, out_dir, result, data_root=data_root, device=device,
                                   tsne_points=tsne_points, bank_size=bank_size, queries=queries,
                                   neighbours=neighbours, seed=seed)  # fmt: skip
    sections += evaluation_section(run_dir, read_json(run_dir / "eval.json"), summary)
    if result.notes:
        sections += ["## Notes", ""] + [f"- {note}" for note in result.notes] + [""]
    try:
        result.report.write_text("\n".join(sections))
    except OSError as error:
        raise DataError(f"cannot write {result.report}: {error.strerror}") from None
    return result


def _run_and_checkpoint(path: Path) -> tuple[Path, Path]:
    """(run folder, checkpoint) of a run folder or of one of its checkpoint files."""
    if path.is_file():
        folder = run_folder_of(path)
        if folder is None:
            raise DataError(f"{path} is not a checkpoint inside a byol run folder")
        return folder, path
    return path, path / "checkpoints" / "last.pt"


def _check_arguments(run_dir: Path, out, **counts: int) -> Path:
    """Refuse a folder that is not a run, or counts below 1; create and return the output."""
    if not run_dir.is_dir():
        raise DataError(f"run folder {run_dir} does not exist")
    if not (run_dir / "config.yaml").is_file() and not (run_dir / "metrics.jsonl").is_file():
        raise DataError(f"{run_dir} is not a byol run folder (no config.yaml or metrics.jsonl)")
    flags = {"tsne_points": "--tsne-points", "bank_size": "--bank-size"}
    for name, value in counts.items():
        if value < 1:
            raise ConfigError(f"{flags.get(name, name)} must be >= 1, got {value}")
    out_dir = Path(out).expanduser() if out is not None else run_dir / "report"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"cannot create report folder {out_dir}: {error.strerror}") from None
    return out_dir
