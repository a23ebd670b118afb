"""One device resolver for every command."""

import pytest
import torch

from byol import ConfigError
from byol.runtime import native_precision, precision_warning, resolve_device, resolve_precision


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
    native = native_precision("bf16", cpu)
    assert resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert resolve_precision("bf16", cpu) == "bf16"
    # Emulated bf16 warns; native bf16 (AMX-BF16 / AVX512-BF16) does not.
    assert (precision_warning("bf16", cpu) is None) == native
    assert precision_warning("fp32", cpu) is None


CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("flags", "auto", "bf16_warns", "fp16_warns"),
    [
        ({"avx2", "fma"}, "fp32", True, True),  # AMD EPYC of this project's machines
        ({"avx512f", "avx512_bf16"}, "bf16", False, True),
        ({"avx512f", "amx_tile", "amx_bf16"}, "bf16", False, True),  # Xeon with AMX
        ({"amx_bf16", "amx_fp16"}, "bf16", False, False),
    ],
)
def test_auto_precision_follows_the_cpu_flags(flags, auto, bf16_warns, fp16_warns):
    flags = frozenset(flags)
    assert resolve_precision("auto", CPU, flags=flags) == auto
    assert resolve_precision("fp16", CPU, flags=flags) == "fp16"  # asked for: kept
    assert (precision_warning("bf16", CPU, flags=flags) is not None) == bf16_warns
    assert (precision_warning("fp16", CPU, flags=flags) is not None) == fp16_warns
    assert precision_warning("fp32", CPU, flags=flags) is None


def test_auto_precision_on_cuda_follows_bf16_support(monkeypatch):
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", cuda) == "bf16" and precision_warning("bf16", cuda) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", cuda) == "fp32"
    assert precision_warning("fp16", cuda) is None and precision_warning("bf16", cuda)


def test_this_machines_flags_decide(monkeypatch):
    from byol import runtime

    native = runtime.native_precision("bf16", CPU)
    assert resolve_precision("auto", CPU) == ("bf16" if native else "fp32")
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    assert resolve_precision("auto", CPU) == "bf16"
