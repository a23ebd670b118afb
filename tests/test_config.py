"""The config keys describe themselves: flags, checks and the resume rule come from the fields."""

import argparse
import dataclasses

import pytest
import yaml

from byol import ConfigError
from byol.bench import TRAIN_KEYS, BenchConfig
from byol.cli import add_config_arguments, build_parser
from byol.config import CHOICES, RANGES, RESUMABLE_CHANGES, TrainConfig, load_config, resolve
from byol.config_keys import check_values, key, key_info


def test_every_key_has_help_a_group_and_a_flag(capsys):
    info = key_info(TrainConfig)
    assert set(info) == {f.name for f in dataclasses.fields(TrainConfig)}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    help_text = capsys.readouterr().out
    for name, meta in info.items():
        assert meta["help"] and meta["group"] in ("data", "model", "optim", "runtime", "outputs")
        assert "--" + name.replace("_", "-") in help_text, name
    assert "optim options:" in help_text and "runtime options:" in help_text


def test_derived_tables_follow_the_fields():
    assert CHOICES["precision"] == ("auto", "fp32", "bf16", "fp16")
    assert RANGES["batch_size"] == (2, None) and RANGES["target_decay"] == (0.0, 1.0)
    # The resume rule: what may change without changing the result.
    assert {"max_steps", "time_limit", "out", "num_workers", "device"} <= RESUMABLE_CHANGES
    assert not {"base_lr", "seed", "batch_size", "arch", "epochs"} & RESUMABLE_CHANGES


def test_a_new_key_gets_its_flag_and_check_from_its_definition():
    @dataclasses.dataclass
    class Demo:
        width: int = key(8, "the width", "model", low=1, high=64)
        mode: str = key("a", "the mode", "runtime", choices=("a", "b"))
        fast: bool = key(False, "go fast", "runtime", flag="--quick")

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Demo)
    args = parser.parse_args(["--width", "9", "--quick"])
    assert (args.width, args.fast, args.mode) == ("9", True, None)
    with pytest.raises(ConfigError, match=r"--width must lie in \[1, 64\], got 65"):
        check_values(Demo(width=65), flags=True)
    with pytest.raises(ConfigError, match="mode must be one of a, b; got 'c'"):
        check_values(Demo(mode="c"))


def test_bench_shares_the_training_keys_with_its_own_defaults():
    train, bench = key_info(TrainConfig), key_info(BenchConfig)
    for name in TRAIN_KEYS:
        assert bench[name]["help"] == train[name]["help"], name
        assert bench[name]["type"] == train[name]["type"], name
    assert bench["image_size"]["default"] == 32 and BenchConfig().batch_size == 256
    config = BenchConfig.from_options({"batch_size": "8", "windows": "2", "ema": None})
    assert (config.batch_size, config.windows, config.ema) == (8, 2, "foreach")
    with pytest.raises(ConfigError, match="--profile"):
        BenchConfig.from_options({"profile_steps": "-1"})


def test_a_run_folders_config_yaml_is_a_valid_config_file(tmp_path):
    config = resolve({"data": "digits", "arch": "convnet"})
    values = {**config.to_dict(), "plan": {"view_size": 8}}  # as RunFolder writes it
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(values))
    again = load_config(path)
    assert dataclasses.replace(again, config=None) == config


def test_configs_of_byol_0_1_still_load(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("data: digits\nparallel_views: true\narch: convnet\n")
    assert load_config(path).parallel_views is True  # accepted; it no longer does anything
