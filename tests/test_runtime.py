"""One device resolver for every command."""

import pytest
import torch

from byol import ConfigError
from byol.runtime import precision_warning, resolve_device, resolve_precision


def test_auto_and_named_devices():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == resolve_device(None).type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cpu", local_rank=3) == torch.device("cpu")
    with pytest.raises(ConfigError, match="--device 'tpu0' is not a device"):
        resolve_device("tpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_cuda_without_cuda_names_the_flag():
    with pytest.raises(ConfigError, match="--device 'cuda:1' requested but CUDA is not available"):
        resolve_device("cuda:1")


def test_precision():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    assert "emulation" in precision_warning("bf16", cpu)
    assert precision_warning("fp32", cpu) is None
