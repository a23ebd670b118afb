"""Warm starts: initialise the online encoder from existing weights before training.

``--init-weights FILE`` reads a ``.safetensors`` file, a torch state dict (read with
``weights_only=True``, so no code in the file runs), a byol checkpoint (its online encoder) or a
byol export, and loads it into the encoder before the target is copied from it: continued
pre-training on a new domain starts from those weights in both networks. Keys may carry a
``module.``, ``online_encoder.``, ``encoder.`` or ``backbone.`` prefix (DDP, byol, and other SSL
libraries' checkpoints); the one that matches the encoder best is removed. Missing and
unexpected keys and shape mismatches are listed in a :class:`~byol.errors.ConfigError`, or,
with ``strict=False``, in a warning, and the weights that fit are loaded.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from .errors import ConfigError

__all__ = ["load_init_weights", "read_weights"]

_PREFIXES = ("", "module.", "online_encoder.", "encoder.", "backbone.", "module.encoder.")
_LISTED = 8


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, by name, without executing anything from it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"--init-weights {path} does not exist")
    with open(path, "rb") as file:
        magic = file.read(8)
    if magic == b"BYOLCKPT":
        from .state import read_state

        return read_state(path).encoder_state()
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as error:  # safetensors has its own error types
            raise ConfigError(
                f"--init-weights {path} is not a readable safetensors file: {error}"
            ) from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # weights_only refuses code-carrying pickles with various types
        raise ConfigError(
            f"--init-weights {path} is not a plain torch state dict ({type(error).__name__}); "
            "save it with torch.save(model.state_dict(), ...) or as .safetensors"
        ) from None
    for wrapper in ("state_dict", "model"):  # {"state_dict": {...}}, as many trainers save
        if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
            loaded = loaded[wrapper]
    tensors = isinstance(loaded, dict) and all(isinstance(v, torch.Tensor) for v in loaded.values())
    if not tensors:
        raise ConfigError(f"--init-weights {path} does not hold a mapping of names to tensors")
    return loaded


def load_init_weights(encoder: nn.Module, path: str | Path, *, strict: bool = True) -> list[str]:
    """Load the weights in ``path`` into ``encoder``; returns the problems (empty when every
    key fits). With ``strict``, any problem raises :class:`ConfigError` listing them."""
    weights = read_weights(path)
    expected = encoder.state_dict()
    prefix = max(_PREFIXES, key=lambda p: sum(k[len(p) :] in expected for k in weights
                                                if k.startswith(p)))  # fmt: skip
    named = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
    missing = sorted(set(expected) - set(named))
    unexpected = sorted(set(named) - set(expected))
    mismatched = sorted(k for k in set(named) & set(expected)
                        if named[k].shape != expected[k].shape)  # fmt: skip
    problems = []
    if missing:
        problems.append(f"missing {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected {_listed(unexpected)}")
    if mismatched:
        shapes = [f"{k} {tuple(named[k].shape)} vs {tuple(expected[k].shape)}" for k in mismatched]
        problems.append(f"shape mismatch {_listed(shapes)}")
    fitting = {k: v for k, v in named.items() if k in expected and k not in mismatched}
    if problems and strict:
        raise ConfigError(
            f"--init-weights {path} does not fit the encoder: {'; '.join(problems)}. Pass "
            "--init-strict false to load the weights that fit"
        )
    if problems:
        warnings.warn(
            f"--init-weights {path}: {'; '.join(problems)}; loaded the {len(fitting)} "
            "tensors that fit",
            stacklevel=2,
        )
    encoder.load_state_dict(fitting, strict=False)
    return problems


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return ", ".join(names[:_LISTED]) + more
