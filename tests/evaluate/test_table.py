"""Markdown results tables (byol.evaluate.table)."""

from __future__ import annotations

from byol.evaluate import (
    format_results_table,
)


def test_format_results_table():
    table = format_results_table(
        [
            {
                "name": "byol",
                "protocol": "linear",
                "top1": 0.92581,
                "top5": 0.998,
                "learning_rate": 0.2,
            },
            {"name": "pixels", "protocol": "k-NN (k=200)", "top1": 0.35, "top5": None},
        ]
    )
    lines = table.strip().splitlines()
    assert lines[0] == "| name | protocol | top-1 (%) | top-5 (%) | lr |"
    assert lines[2] == "| byol | linear | 92.58 | 99.80 | 0.2 |"
    assert lines[3] == "| pixels | k-NN (k=200) | 35.00 | — | — |"
    assert len(lines) == 4
