"""``byol select`` and ``byol eval --protocol rankme``: label-free ranking of checkpoints."""

from __future__ import annotations

import json

from byol.checkpoint import load_checkpoint, save_checkpoint
from byol.cli import main
from byol.selection import checkpoints_of, select_checkpoints

RUN = ["train", "--data", "digits", "--arch", "convnet", "--hidden-dim", "32",
       "--projection-dim", "16", "--batch-size", "64", "--max-steps", "2", "--knn-every", "0",
       "--no-tensorboard", "--num-workers", "0", "--checkpoint-every", "1",
       "--keep-checkpoints", "3"]  # fmt: skip


def _with_feature_rank(payload: dict, keep: int) -> dict:
    """The checkpoint with all but ``keep`` channels of the encoder's last BatchNorm zeroed:
    after the ReLU and pooling, its features span at most ``keep`` dimensions."""
    model = dict(payload["model"])
    names = sorted({k.rsplit(".", 1)[0] for k in model
                    if k.startswith("online_encoder.") and k.endswith("running_var")},
                   key=lambda n: int(n.split(".")[1]))  # fmt: skip
    last = names[-1]
    gamma = model[f"{last}.weight"].clone()
    beta = model[f"{last}.bias"].clone()
    gamma[keep:], beta[keep:] = 0.0, 0.0
    model[f"{last}.weight"], model[f"{last}.bias"] = gamma, beta
    return {**payload, "model": model}


def test_select_ranks_checkpoints_as_their_ranks_say(tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*RUN, "--out", str(run)]) == 0
    payload = load_checkpoint(run / "checkpoints" / "last.pt")
    paths = {}
    for keep in (2, 40, 8):
        paths[keep] = tmp_path / f"rank{keep}.pt"
        save_checkpoint(_with_feature_rank(payload, keep), paths[keep])
    result = select_checkpoints(list(paths.values()), samples=500)
    order = [row["checkpoint"] for row in result["ranked"]]
    assert order == [str(paths[40]), str(paths[8]), str(paths[2])]
    ranks = [row["rankme"] for row in result["ranked"]]
    assert ranks[0] <= 40 and ranks[1] <= 8 + 1e-3 and ranks[2] <= 2 + 1e-3
    assert result["best"]["checkpoint"] == str(paths[40])
    capsys.readouterr()
    assert main(["select", *map(str, paths.values()), "--samples", "500", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["best"]["checkpoint"] == str(paths[40])


def test_a_run_folder_contributes_each_kept_checkpoint_once(tmp_path):
    run = tmp_path / "run"
    assert main([*RUN, "--out", str(run)]) == 0
    found = checkpoints_of(run)
    assert [load_checkpoint(p)["step"] for p in found] == [1, 2]


def test_eval_rankme_protocol_needs_no_labels_and_is_recorded(tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*RUN, "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--protocol", "rankme"]) == 0
    out = capsys.readouterr().out
    assert "RankMe" in out and "label-free" in out
    written = json.loads((run / "eval.json").read_text())
    assert written["protocol"] == "rankme" and written["rows"][0]["rankme"] > 1.0
