"""The run folder: config guard, config.yaml with the plan, metrics truncated on resume."""

import json

import pytest
import yaml

from byol import ConfigError
from byol.config import resolve
from byol.run_folder import RunFolder


def test_config_guard_allows_resumable_changes_only(tmp_path):
    folder = RunFolder(tmp_path / "run")
    config = resolve({"data": "digits", "out": str(tmp_path / "run")})
    folder.write_config(config, {"view_size": 8})
    written = yaml.safe_load(folder.config_file.read_text())
    assert written["plan"] == {"view_size": 8} and written["data"] == "digits"
    folder.check_config(resolve({"data": "digits", "out": "elsewhere", "max_steps": 3}))
    with pytest.raises(ConfigError, match=r"different config \(base_lr: 0.2 -> 0.5\)"):
        folder.check_config(resolve({"data": "digits", "base_lr": 0.5}))


def test_foreign_config_file_is_refused(tmp_path):
    (tmp_path / "config.yaml").write_text("- a list, not a byol config\n")
    with pytest.raises(ConfigError, match="is not a byol run config"):
        RunFolder(tmp_path).check_config(resolve({}))


def test_metrics_past_the_resumed_step_are_dropped(tmp_path):
    folder = RunFolder(tmp_path)
    lines = [json.dumps({"step": s, "loss": 1.0}) for s in (10, 20, 30)] + ['{"step": 4']
    folder.metrics_file.write_text("\n".join(lines) + "\n")
    writer = folder.open_metrics(tensorboard=False, resume_step=20)
    writer.write({"step": 30, "loss": 0.5})
    writer.close()
    steps = [json.loads(x)["step"] for x in folder.metrics_file.read_text().splitlines()]
    assert steps == [10, 20, 30]
