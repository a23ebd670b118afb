"""Checkpoints that survive crashes and cannot run code when loaded.

File layout: an 8-byte magic ``BYOLCKPT``, a little-endian uint64 payload length, the
payload's SHA-256 (32 bytes), then the payload, which is ``torch.save`` output. A truncated or
corrupted file fails the length or digest check and is reported with its path. The payload is
read with ``torch.load(weights_only=True)``, which refuses pickles that would execute code.

Writes are atomic: the bytes go to a temporary file in the same folder, are flushed and
fsynced, and the file is renamed into place; the folder is fsynced after the rename. A
failure (disk full, unwritable folder) removes the temporary file and leaves every existing
checkpoint untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import struct
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

__all__ = ["CheckpointManager", "load_checkpoint", "save_checkpoint"]

MAGIC = b"BYOLCKPT"
_HEADER = struct.Struct("<8sQ32s")


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be fsynced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write ``payload`` atomically to ``path``; raise CheckpointError naming it on failure."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getbuffer()
    header = _HEADER.pack(MAGIC, len(data), hashlib.sha256(data).digest())
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as file:
            file.write(header)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        _fsync_dir(path.parent)
    except OSError as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        reason = error.strerror or str(error)
        raise CheckpointError(
            f"could not write checkpoint {path}: {reason}; existing checkpoints are untouched"
        ) from error
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by byol, verifying its size and digest, without running code.

    Returns a dict with at least ``model`` (the BYOL state_dict), ``optimizer``, ``step`` and
    ``config``. Raises :class:`CheckpointError` naming the file when it is missing, truncated,
    corrupted or holds anything but tensors and plain containers.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except OSError as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error.strerror}") from None
    if len(raw) < _HEADER.size or raw[:8] != MAGIC:
        raise CheckpointError(
            f"{path} is not a byol checkpoint (no BYOLCKPT header); refusing to unpickle it"
        )
    _, length, digest = _HEADER.unpack_from(raw)
    data = memoryview(raw)[_HEADER.size :]
    if len(data) != length:
        raise CheckpointError(
            f"checkpoint {path} is truncated or padded: "
            f"{len(data)} payload bytes, expected {length}"
        )
    if hashlib.sha256(data).digest() != digest:
        raise CheckpointError(f"checkpoint {path} is corrupted: its SHA-256 does not match")
    try:
        payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as error:  # weights_only refuses code-carrying pickles with various types
        raise CheckpointError(
            f"checkpoint {path} holds objects that are not plain weights; refused to load it "
            f"({type(error).__name__})"
        ) from None
    if not isinstance(payload, dict) or "model" not in payload:
        raise CheckpointError(f"checkpoint {path} has no 'model' entry")
    return payload


class CheckpointManager:
    """The run folder's ``checkpoints/``: numbered files, ``last.pt``, fallback on corruption.

    ``save`` writes ``step-XXXXXXXX.pt`` atomically, then points ``last.pt`` at it (a hard
    link renamed into place, or a second atomic write where links are not supported), and
    keeps the newest ``keep`` numbered files. ``load_latest`` tries ``last.pt`` and then the
    numbered files from newest to oldest, reporting each unreadable one.
    """

    _NUMBERED = re.compile(r"step-(\d+)\.pt$")
    # Temporary files of save_checkpoint and of the last.pt link, with the writer's pid.
    _TEMPORARY = re.compile(r"\.(?:step-\d+|last)\.pt\.(\d+)\.(?:tmp|lnk)$")

    def __init__(self, folder: str | Path, keep: int = 2) -> None:
        self.folder = Path(folder)
        self.keep = keep
        self.last = self.folder / "last.pt"
        self._swept = False

    def remove_stale_temporaries(self) -> int:
        """Delete temporary files that killed writers left behind; return how many.

        A process killed mid-write (SIGKILL, power loss) leaves its ``.step-*.pt.PID.tmp``;
        only one process writes a run's checkpoints, so another pid's file is abandoned.
        """
        removed = 0
        if not self.folder.is_dir():
            return removed
        for path in self.folder.iterdir():
            match = self._TEMPORARY.match(path.name)
            if match and int(match.group(1)) != os.getpid():
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed += 1
        return removed

    def numbered(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        found = [p for p in self.folder.iterdir() if self._NUMBERED.match(p.name)]
        return sorted(found, key=lambda p: int(self._NUMBERED.match(p.name).group(1)))

    def save(self, payload: dict[str, Any], step: int) -> Path:
        if not self._swept:
            self.remove_stale_temporaries()
            self._swept = True
        target = save_checkpoint(payload, self.folder / f"step-{step:08d}.pt")
        link = self.folder / f".last.pt.{os.getpid()}.lnk"
        try:
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            os.link(target, link)
            os.replace(link, self.last)
            _fsync_dir(self.folder)
        except OSError:
            with contextlib.suppress(OSError):
                link.unlink()
            save_checkpoint(payload, self.last)
        for old in self.numbered()[: -self.keep]:
            with contextlib.suppress(OSError):
                old.unlink()
        return self.last

    def exists(self) -> bool:
        return self.last.exists() or bool(self.numbered())

    def load_latest(
        self, map_location: str | torch.device = "cpu"
    ) -> tuple[dict[str, Any], Path, list[str]]:
        """The newest valid checkpoint, its path, and the problems met on the way."""
        candidates = [self.last, *reversed(self.numbered())]
        problems: list[str] = []
        for candidate in candidates:
            if not candidate.exists():
                continue
            try:
                return load_checkpoint(candidate, map_location), candidate, problems
            except CheckpointError as error:
                problems.append(str(error))
        if problems:
            raise CheckpointError(
                "no valid checkpoint in " + str(self.folder) + ": " + "; ".join(problems)
            )
        raise CheckpointError(f"no checkpoint in {self.folder}")
