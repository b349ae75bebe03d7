"""Reading a checkpoint of the paper's code without running it: tensors only, and the ``.tgz`` the Hub serves.

The four released models are PyTorch Lightning checkpoints: ``torch.save`` pickles, and a pickle can run code when
it is loaded. They are read with torch's ``weights_only`` unpickler only: it builds tensors and plain containers and
refuses every other global before calling anything, so a crafted file fails with an error and executes nothing.
There is no fallback to a full unpickler. Two kinds of Lightning objects outside ``state_dict`` are admitted, as our
own inert stand-ins, never as the classes the file names: ``AttributeDict`` hyperparameters (read as a plain dict)
and callback classes that Lightning < 1.5 used as dictionary keys (read as a marker). The authors' Lightning 1.5.5
writes neither (its callback keys are strings; their model never saves hyperparameters), so on their files this is
plain ``weights_only``; any other global is refused by name. Everything but ``state_dict`` is then dropped.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tarfile
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import torch

from promptability.io import BadFileError

_CHUNK = 1 << 20


class ReferenceCheckpointError(BadFileError):
    """A file that is not a usable checkpoint of the paper's code; the message names the file and the key at fault."""


class _AsDict:
    """Stand-in for Lightning's AttributeDict (a dict subclass): unpickles as a plain dict."""

    def __new__(cls, *args: Any, **kwargs: Any) -> dict:  # type: ignore[misc]  # a dict on purpose
        return {}


class LightningClass:
    """Stand-in for a Lightning class the file uses as a value or key (callbacks in Lightning < 1.5): a marker."""


STAND_INS: list[tuple[type, str]] = [
    (_AsDict, "pytorch_lightning.utilities.parsing.AttributeDict"),
    (_AsDict, "lightning.pytorch.utilities.parsing.AttributeDict"),
    (_AsDict, "lightning.fabric.utilities.data.AttributeDict"),
    (LightningClass, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
    (LightningClass, "pytorch_lightning.callbacks.early_stopping.EarlyStopping"),
    (LightningClass, "pytorch_lightning.callbacks.lr_monitor.LearningRateMonitor"),
    (LightningClass, "pytorch_lightning.callbacks.progress.ProgressBar"),
]


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``state_dict`` tensors of a Lightning checkpoint, read without running anything from the file."""
    path = Path(path)
    # mmap keeps an 11 GB file out of memory; only the zip format (torch >= 1.6, as the authors') supports it.
    mmap = zipfile.is_zipfile(path)
    try:
        with _stand_ins():
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:
        raise ReferenceCheckpointError(f"{path}: {_refusal(err)}") from None
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("state_dict"), Mapping):
        found = sorted(map(str, checkpoint)) if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise ReferenceCheckpointError(f"{path}: not a Lightning checkpoint (no 'state_dict' entry; found {found})")
    state = dict(checkpoint["state_dict"])
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ReferenceCheckpointError(
                f"{path}: state_dict entry {key!r} is a {type(value).__name__}, not a tensor"
            )
    return state


def _stand_ins() -> contextlib.AbstractContextManager:
    """Admits STAND_INS while loading; torch < 2.6 cannot map a name to a stand-in and reads plain weights_only."""
    if tuple(int(part) for part in torch.__version__.split(".")[:2]) < (2, 6):
        return contextlib.nullcontext()
    return torch.serialization.safe_globals(STAND_INS)  # type: ignore[arg-type]  # (class, name) pairs are accepted


def _refusal(err: Exception) -> str:
    """Why torch's safe loader refused the file, without its advice to load it unsafely."""
    text = str(err)
    named = re.search(r"GLOBAL ([\w.]+)", text)
    if named:
        return (
            f"refused: the file holds the object {named.group(1)}, which is not a tensor or a plain container; "
            "a checkpoint is a pickle, which can run code, so only tensors are read (nothing from it was run)"
        )
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)
    return f"not a readable PyTorch checkpoint ({first})"


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class _HashingReader:
    """A read-only file object that hashes everything read through it (one pass over a multi-GB archive)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.digest.update(data)
        return data

    def finish(self) -> str:
        while self.read(_CHUNK):
            pass
        return self.digest.hexdigest()


def is_archive(path: str | os.PathLike) -> bool:
    """A gzip or plain tar file (the Hub's ``mtl/*.tgz``), as opposed to the checkpoint itself (a zip)."""
    with open(path, "rb") as f:
        head = f.read(512)
    return head[:2] == b"\x1f\x8b" or head[257:262] == b"ustar"


def extract_checkpoint(archive: str | os.PathLike, folder: str | os.PathLike) -> tuple[Path, dict[str, str]]:
    """Copies the one ``*.ckpt`` of ``archive`` to ``folder`` in one streaming pass; returns it and its provenance.

    Only that member's bytes are read: nothing is extracted by the archive's own paths (no path can escape
    ``folder``), links and other members are skipped, and the archive's sha256 is computed on the way.
    """
    archive = Path(archive)
    target = Path(folder) / "reference.ckpt"
    found: list[str] = []
    with open(archive, "rb") as raw:
        reader = _HashingReader(raw)
        try:
            with tarfile.open(fileobj=reader, mode="r|*") as tar:  # type: ignore[call-overload]  # read() suffices
                for member in tar:
                    if not (member.isfile() and member.name.endswith(".ckpt")):
                        continue
                    found.append(member.name)
                    if len(found) > 1:
                        continue  # reported below, once the archive has been listed
                    source = tar.extractfile(member)
                    assert source is not None  # a regular file has contents
                    copied = _HashingReader(source)
                    with open(target, "wb") as out:
                        shutil.copyfileobj(copied, out, _CHUNK)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
            if isinstance(err, OSError) and err.errno is not None:  # the disk, not the archive (a full disk...)
                raise OSError(err.errno, err.strerror, err.filename or str(target)) from None
            raise ReferenceCheckpointError(
                f"{archive}: not a readable .tgz archive ({err}); extract it yourself and pass the .ckpt file"
            ) from None
        archive_sha = reader.finish()
    if len(found) != 1:
        what = "no .ckpt file" if not found else f"{len(found)} .ckpt files ({', '.join(found)})"
        raise ReferenceCheckpointError(f"{archive}: the archive holds {what}; extract it and pass the one to import")
    provenance = {"file": str(archive.resolve()), "sha256": archive_sha, "member": found[0],
                  "member_sha256": copied.digest.hexdigest()}  # fmt: skip
    return target, provenance
