"""``byol eval`` (JSON output, RUN/eval.json) and ``byol report`` on a tiny real run."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import pytest
from matplotlib.image import imread

from byol.cli import main
from byol.evaluate import PAPER_LEARNING_RATES
from byol.evaluation_run import eval_file_name
from byol.report import make_report, read_metrics

# 0.25 epoch of digits at batch 64 is 6 steps; the run finishes, so it ends with a k-NN record.
TINY_RUN = [
    "--data", "digits", "--arch", "convnet", "--hidden-dim", "64", "--batch-size", "64",
    "--epochs", "0.25", "--warmup-epochs", "0", "--log-every", "1", "--no-tensorboard",
]  # fmt: skip
FIGURES = ("training_curves.png", "monitors.png", "tsne.png", "retrieval.png")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    assert main(["train", *TINY_RUN, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def eval_output(run_dir):
    """stdout of ``byol eval --json`` with both baselines (run once for the module)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main([
            "eval", "--checkpoint", str(run_dir / "checkpoints" / "last.pt"), "--json",
            "--epochs", "10", "--baseline", "random-init", "--baseline", "pixels",
        ])  # fmt: skip
    assert code == 0, stderr.getvalue()
    return stdout.getvalue()


def test_eval_json_has_the_fields_and_the_baselines(run_dir, eval_output):
    assert eval_output.count("\n") == 1  # one machine-readable object, nothing else
    result = json.loads(eval_output)
    assert (result["protocol"], result["dataset"], result["step"]) == ("all", "digits", 6)
    sizes = result["split_sizes"]
    assert (sizes["train"], sizes["test"]) == (1437, 360)
    assert 100 <= sizes["val"] <= 200  # ~10 % of the training split, never the test split
    assert result["learning_rate"] in PAPER_LEARNING_RATES
    assert result["seconds"] > 0
    rows = {(row["name"], row["protocol"], row.get("k")): row for row in result["rows"]}
    expected = {(name, protocol, k) for name in ("byol", "random-init", "pixels")
                for protocol, k in (("linear", None), ("knn", 200), ("knn", 20))}  # fmt: skip
    assert set(rows) == expected
    for row in rows.values():
        assert 0.0 <= row["top1"] <= row["top5"] <= 1.0
    assert result["top1"] == rows["byol", "linear", None]["top1"]
    # Digits are easy: every representation is far above the 10 % of chance.
    assert rows["pixels", "linear", None]["top1"] > 0.85
    assert rows["byol", "knn", 20]["top1"] > 0.5
    assert rows["byol", "knn", 200]["temperature"] == 0.1
    saved = json.loads((run_dir / "eval.json").read_text())
    assert saved["rows"] == result["rows"]


def test_report_writes_markdown_and_figures(run_dir, eval_output, capsys):
    assert main(["report", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    report_dir = run_dir / "report"
    text = (report_dir / "report.md").read_text()
    for name in FIGURES:
        path = report_dir / name
        assert f"({name})" in text and str(path) in printed
        image = imread(path)
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 500
        assert image[..., :3].std() > 0.05  # not a blank canvas
    steps, knn, bad = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6] and bad == 0
    assert len(knn) == 1
    assert f"| k-NN top-1 | {100 * knn[0]['knn_top1']:.2f}%" in text
    assert "| final loss |" in text and "| steps | 6 of 6 |" in text
    result = json.loads(eval_output)
    linear = next(r for r in result["rows"] if (r["name"], r["protocol"]) == ("pixels", "linear"))
    assert f"| pixels | linear | {100 * linear['top1']:.2f} |" in text
    assert "k-NN (k=20, T=0.1)" in text
    assert "8 test queries" in text and "nearest among 1437 training images" in text


def test_report_without_checkpoint_or_eval_still_writes_with_notes(run_dir, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("config.yaml", "metrics.jsonl"):
        shutil.copy(run_dir / name, partial / name)
    with open(partial / "metrics.jsonl", "a") as file:
        file.write('{"step": 7, "loss": 0.5, "lr"')  # a line cut short by a crash
    result = make_report(partial, out=tmp_path / "out")
    text = result.report.read_text()
    assert [p.name for p in result.figures] == ["training_curves.png", "monitors.png"]
    assert any("1 unreadable line" in note for note in result.notes)
    assert any("checkpoint" in note and "does not exist" in note for note in result.notes)
    assert "No eval.json" in text and "## Notes" in text


def test_report_of_a_run_monitored_by_rankme_alone(run_dir, tmp_path):
    # A labelled folder without a test split logs monitor records with RankMe and no k-NN.
    partial = tmp_path / "rankme-only"
    partial.mkdir()
    shutil.copy(run_dir / "config.yaml", partial / "config.yaml")
    lines = [line for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if "knn_top1" not in line]  # fmt: skip
    lines.append('{"step": 4, "epoch": 2.0, "rankme": 3.1, "rankme_projection": 1.9, '
                 '"knn_bank": 8}')  # fmt: skip
    (partial / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    text = make_report(partial, out=tmp_path / "out").report.read_text()
    assert "| RankMe | 3.1 (representations, epoch 2.00) |" in text
    assert "| k-NN top-1 |" not in text


def test_read_metrics_keeps_the_last_record_of_a_relogged_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        '{"step": 10, "loss": 3.0, "lr": 0.1}\n'
        '{"step": 20, "loss": 2.0, "lr": 0.2}\n'
        '{"step": 20, "epoch": 1.0, "knn_top1": 0.4}\n'
        '{"step": 20, "loss": 1.5, "lr": 0.2}\n'  # resumed from step 10: step 20 logged again
        "\n"
    )
    steps, knn, bad = read_metrics(path)
    assert [(r["step"], r["loss"]) for r in steps] == [(10, 3.0), (20, 1.5)]
    assert [(r["step"], r["knn_top1"]) for r in knn] == [(20, 0.4)]
    assert bad == 0


def test_report_of_a_folder_that_is_not_a_run_exits_2(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err


def test_evaluations_on_other_datasets_do_not_replace_the_runs_eval_json():
    assert eval_file_name("digits", "digits") == "eval.json"
    assert eval_file_name("fashion-mnist", "digits") == "eval-fashion-mnist.json"
    assert eval_file_name("/data/my photos/", "cifar10") == "eval-my_photos.json"
