"""Semi-supervised fine-tuning (byol.evaluate.finetune): the subsets, and that the test split
takes no part in a choice."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from byol import ConfigError
from byol.evaluate import finetune as finetune_module
from byol.evaluate.finetune import best_rate_and_epochs, class_balanced_subset, finetune


def test_class_balanced_subsets_are_balanced_deterministic_and_disjoint():
    labels = torch.arange(10).repeat_interleave(100)[torch.randperm(1000)]
    held_out = class_balanced_subset(labels, 0.1, seed=1)
    subset = class_balanced_subset(labels, 0.05, seed=0, exclude=held_out)
    assert torch.bincount(labels[held_out]).tolist() == [10] * 10
    assert torch.bincount(labels[subset]).tolist() == [5] * 10
    assert not set(subset.tolist()) & set(held_out.tolist())
    assert torch.equal(subset, class_balanced_subset(labels, 0.05, seed=0, exclude=held_out))
    other = class_balanced_subset(labels, 0.05, seed=1, exclude=held_out)
    assert not torch.equal(subset, other)
    # A tiny fraction still keeps one image of every class.
    assert torch.bincount(labels[class_balanced_subset(labels, 1e-4, seed=0)]).tolist() == [1] * 10
    with pytest.raises(ConfigError, match="--label-fraction"):
        class_balanced_subset(labels, 0.0, seed=0)


def _colour_data(n: int, seed: int):
    """Images whose class is their dominant colour channel: learnable in a few steps."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=generator)
    images = torch.randint(0, 80, (n, 3, 8, 8), generator=generator, dtype=torch.uint8)
    images[torch.arange(n), labels] += 150
    return images, labels


def _encoder():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(1))  # fmt: skip


def test_finetune_learns_and_chooses_on_held_out_images_only(monkeypatch):
    parts = {name: _colour_data(n, seed) for name, n, seed in
             (("train", 60, 0), ("val", 60, 1), ("test", 90, 2))}  # fmt: skip
    images = {k: v[0] for k, v in parts.items()}
    labels = {k: v[1] for k, v in parts.items()}
    scored = []
    original = finetune_module.FineTuneRun.scores

    def spy(self, model, part):
        scored.append(part)
        return original(self, model, part)

    monkeypatch.setattr(finetune_module.FineTuneRun, "scores", spy)
    encoder = _encoder()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    result = finetune(encoder, 8, images, labels, mean=(0.3,) * 3, std=(0.3,) * 3, size=8,
                      learning_rates=(0.1, 0.01), epochs=4, batch_size=16)  # fmt: skip
    # Every choice is made on held-out images; the test images are scored once, at the end.
    assert scored == ["val"] * 8 + ["test"]
    assert result["learning_rate"] in (0.1, 0.01) and 1 <= result["epochs"] <= 4
    assert set(result["val_top1"]) == {"0.1", "0.01"} and len(result["val_top1"]["0.1"]) == 4
    assert result["top1"] > 0.6  # chance is 1/3
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    # Whatever the test labels say, the choice is the same.
    shuffled = {**labels, "test": labels["test"].flip(0)}
    again = finetune(encoder, 8, images, shuffled, mean=(0.3,) * 3, std=(0.3,) * 3, size=8,
                     learning_rates=(0.1, 0.01), epochs=4, batch_size=16)  # fmt: skip
    assert (again["learning_rate"], again["epochs"]) == (result["learning_rate"], result["epochs"])


def test_a_whole_selection_run_is_kept_and_equals_its_retraining(monkeypatch):
    # With one epoch the choice is always a whole selection run: it is scored on the test
    # images as it is, and it has the very weights a retraining from the start gives.
    parts = {name: _colour_data(n, seed) for name, n, seed in
             (("train", 60, 0), ("val", 60, 1), ("test", 90, 2))}  # fmt: skip
    images = {k: v[0] for k, v in parts.items()}
    labels = {k: v[1] for k, v in parts.items()}
    trained, tested = [], []
    train, scores = finetune_module.FineTuneRun.train, finetune_module.FineTuneRun.scores

    def train_spy(self, lr, epochs, score_each_epoch=None):
        trained.append((lr, epochs, score_each_epoch))
        return train(self, lr, epochs, score_each_epoch)

    def scores_spy(self, model, part):
        if part == "test":
            tested.append(copy.deepcopy(model.state_dict()))
        return scores(self, model, part)

    monkeypatch.setattr(finetune_module.FineTuneRun, "train", train_spy)
    monkeypatch.setattr(finetune_module.FineTuneRun, "scores", scores_spy)
    options = dict(mean=(0.3,) * 3, std=(0.3,) * 3, size=8, batch_size=16)
    encoder = _encoder()
    result = finetune(encoder, 8, images, labels, learning_rates=(0.1, 0.01), epochs=1,
                      **options)  # fmt: skip
    assert trained == [(0.1, 1, "val"), (0.01, 1, "val")]  # no third training
    job = finetune_module.FineTuneRun(encoder, 8, images, labels, weight_decay=0.0, crop="pad",
                                      seed=0, device=torch.device("cpu"), **options)  # fmt: skip
    retrained, _ = train(job, result["learning_rate"], 1)
    (kept,) = tested
    assert kept.keys() == retrained.state_dict().keys()
    assert all(torch.equal(kept[k], v) for k, v in retrained.state_dict().items())


def test_a_linear_probe_head_classifies_before_any_fine_tuning():
    # LP-FT: the head is fitted on the frozen features first, so even a rate too small to train
    # anything gives a working classifier; a random head at that rate stays near chance.
    parts = {name: _colour_data(n, seed) for name, n, seed in
             (("train", 60, 0), ("val", 60, 1), ("test", 90, 2))}  # fmt: skip
    images = {k: v[0] for k, v in parts.items()}
    labels = {k: v[1] for k, v in parts.items()}
    options = dict(mean=(0.3,) * 3, std=(0.3,) * 3, size=8, learning_rates=(1e-7,), epochs=1,
                   batch_size=16)  # fmt: skip
    probed = finetune(_encoder(), 8, images, labels, head_init="linear-probe", **options)
    random_head = finetune(_encoder(), 8, images, labels, **options)
    assert probed["head_init"] == "linear-probe" and probed["top1"] > 0.6  # chance is 1/3
    assert random_head["top1"] < probed["top1"] - 0.2
    with pytest.raises(ConfigError, match="head_init"):
        finetune(_encoder(), 8, images, labels, head_init="zeros", **options)


def test_eval_finetune_end_to_end_against_scratch(tmp_path, capsys):
    import json

    from byol.cli import main

    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--arch", "convnet", "--hidden-dim", "32",
                 "--batch-size", "64", "--max-steps", "2", "--knn-every", "0",
                 "--no-tensorboard", "--out", str(run)]) == 0  # fmt: skip
    argv = ["eval", str(run), "--protocol", "finetune", "--label-fraction", "0.05", "0.1",
            "--epochs", "2", "--baseline", "scratch"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "fine-tuned, 5% labels (72 images" in out and "scratch" in out
    written = json.loads((run / "eval.json").read_text())
    rows = {(r["name"], r["label_fraction"]) for r in written["rows"]}
    assert rows == {("byol", 0.05), ("scratch", 0.05), ("byol", 0.1), ("scratch", 0.1)}
    # The pre-trained encoder's head starts from a linear probe by default; scratch is trained
    # the standard way, its head from a random start.
    heads = {r["name"]: r["head_init"] for r in written["rows"]}
    assert heads == {"byol": "linear-probe", "scratch": "random"}
    from byol.data import load_dataset

    counts = torch.bincount(load_dataset("digits", split="train").labels)
    # 10% of every class, held out of training to choose rate and epochs.
    assert written["split_sizes"]["val"] == sum(max(1, round(0.1 * int(c))) for c in counts)
    assert main(["eval", str(run), "--protocol", "finetune", "--baseline", "pixels"]) == 2
    assert "compares with --baseline scratch only" in capsys.readouterr().err
    assert main([*argv[:6], "--epochs", "1", "--head-init", "random", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["head_init"] for r in rows] == ["random"]


def test_finetune_runs_in_the_precision_asked_for(monkeypatch):
    parts = {name: _colour_data(n, seed) for name, n, seed in
             (("train", 60, 0), ("val", 60, 1), ("test", 90, 2))}  # fmt: skip
    images = {k: v[0] for k, v in parts.items()}
    labels = {k: v[1] for k, v in parts.items()}
    options = dict(mean=(0.3,) * 3, std=(0.3,) * 3, size=8, learning_rates=(0.1,), epochs=3,
                   batch_size=16)  # fmt: skip
    # Every forward of the bf16 run is under bf16 autocast, and none of the fp32 run is.
    seen = []
    encoder = _encoder()
    encoder[0].register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    bf16 = finetune(encoder, 8, images, labels, precision="bf16", **options)
    assert bf16["precision"] == "bf16" and set(seen) == {torch.bfloat16}
    assert bf16["top1"] > 0.6  # chance is 1/3
    seen.clear()
    fp32 = finetune(encoder, 8, images, labels, **options)
    assert fp32["precision"] == "fp32" and set(seen) == {torch.float32}
    with pytest.raises(ConfigError, match="precision"):
        finetune(encoder, 8, images, labels, precision="int8", **options)
    # One rate is no grid with an edge; a rate that is not positive is refused up front.
    assert fp32["learning_rates"] == [0.1] and fp32["grid_edge"] is None
    with pytest.raises(ConfigError, match="--learning-rates must all be positive"):
        finetune(encoder, 8, images, labels, **{**options, "learning_rates": (0.1, -0.1)})


def test_eval_finetune_resolves_auto_precision_from_the_hardware(tmp_path, capsys, monkeypatch):
    import json

    import byol.evaluation_label_scarce as label_scarce
    from byol.cli import main

    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--arch", "convnet", "--hidden-dim", "32",
                 "--batch-size", "64", "--max-steps", "1", "--knn-every", "0",
                 "--no-tensorboard", "--out", str(run)]) == 0  # fmt: skip
    argv = ["eval", str(run), "--protocol", "finetune", "--label-fraction", "0.05",
            "--epochs", "1", "--json"]  # fmt: skip
    capsys.readouterr()
    # A CPU with native bf16, then one without: auto follows what the hardware says.
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(
            label_scarce,
            "resolve_precision",
            lambda name, device, native=native: "bf16" if native else "fp32",
        )
        assert main(argv) == 0
        captured = capsys.readouterr()
        result = json.loads(captured.out)
        assert result["precision"] == expected
        assert [r["precision"] for r in result["rows"]] == [expected]
    with pytest.raises(SystemExit) as stopped:
        main([*argv, "--precision", "fp64"])
    assert stopped.value.code == 2
    assert "--precision" in capsys.readouterr().err


def test_the_choice_is_the_best_held_out_score_and_ties_go_to_fewer_epochs_then_the_larger_rate():
    assert best_rate_and_epochs({0.1: [0.5, 0.7, 0.6], 0.3: [0.4, 0.6, 0.65]}) == (0.1, 2)
    # 0.7 is reached at epoch 2 by 0.1 and at epoch 1 by 0.03: fewer epochs win.
    assert best_rate_and_epochs({0.1: [0.5, 0.7], 0.03: [0.7, 0.6]}) == (0.03, 1)
    # The same score at the same epoch: the larger rate.
    assert best_rate_and_epochs({0.1: [0.7, 0.6], 0.03: [0.7, 0.6]}) == (0.1, 1)


def test_eval_finetune_chooses_from_the_grid_given_and_warns_at_its_edge(tmp_path, capsys):
    import json

    from byol.cli import main

    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--arch", "convnet", "--hidden-dim", "32",
                 "--batch-size", "64", "--max-steps", "1", "--knn-every", "0",
                 "--no-tensorboard", "--out", str(run)]) == 0  # fmt: skip
    argv = ["eval", str(run), "--protocol", "finetune", "--label-fraction", "0.05",
            "--epochs", "1", "--baseline", "scratch", "--json"]  # fmt: skip
    capsys.readouterr()
    # One rate: it is every method's choice, and no edge to warn about.
    assert main([*argv, "--learning-rates", "0.3"]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)["rows"]
    assert [r["learning_rates"] for r in rows] == [[0.3], [0.3]]
    assert [list(r["val_top1_by_lr"]) for r in rows] == [["0.3"], ["0.3"]]
    assert {r["learning_rate"] for r in rows} == {0.3}
    assert [r["grid_edge"] for r in rows] == [None, None]
    # Two rates: whichever is chosen is an end of the grid; the row says which, and so does a
    # warning.
    assert main([*argv[:-1], "--learning-rates", "0.05", "0.02"]) == 0
    captured = capsys.readouterr()
    rows = json.loads((run / "eval.json").read_text())["rows"]
    assert all(r["learning_rates"] == [0.05, 0.02] for r in rows)
    for row in rows:
        edge = "largest" if row["learning_rate"] == 0.05 else "smallest"
        assert row["grid_edge"] == edge
        assert f"{row['name']} chose the {edge} rate of the grid" in captured.err
    assert main([*argv, "--learning-rates", "0.1", "0"]) == 2
    assert "--learning-rates must all be positive" in capsys.readouterr().err


def test_the_default_grid_is_the_one_the_cli_documents(capsys):
    from byol.cli import main
    from byol.evaluate.finetune import FINETUNE_LEARNING_RATES

    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    documented = " ".join(f"{lr:g}" for lr in FINETUNE_LEARNING_RATES)
    assert f"(default: {documented})" in " ".join(capsys.readouterr().out.split())
