"""Atomic file writes shared by every stage, and reads that name the file at fault.

A reader (or a resumed run) must never see half a file: everything is written to a
temporary file in the destination's own directory (so the final rename stays on one
file system) and moved into place with ``os.replace``, which is atomic on POSIX and
Windows. If writing fails, the old file is left untouched and the temporary removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "BadFileError",
    "blame_file",
    "read_json_file",
    "safe_name",
    "atomic_path",
    "ensure_writable_dir",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_jsonl_atomic",
    "write_text_atomic",
]


class BadFileError(ValueError):
    """A file is there but is not what it should be (garbage JSON, truncated tensors); the message names it."""


def read_json_file(path: str | os.PathLike[str], what: str, fields: Iterable[str] = ()) -> dict[str, Any]:
    """The JSON object in ``path`` with ``fields`` present, else ``BadFileError`` naming the file and ``what`` it is."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadFileError(f"{path}: not a valid {what} file ({err})") from None
    if not isinstance(data, dict):
        raise BadFileError(f"{path}: a {what} file holds a JSON object, got {type(data).__name__}")
    missing = [name for name in fields if name not in data]
    if missing:
        raise BadFileError(f"{path}: {what} file lacks field(s) {', '.join(map(repr, missing))}")
    return data


@contextlib.contextmanager
def blame_file(path: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Inside, a library's error about a truncated or corrupted file becomes ``BadFileError`` naming ``path``.

    For readers that fail with errors that do not say which file (safetensors, ``json``).
    """
    from safetensors import SafetensorError

    try:
        yield
    except (SafetensorError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadFileError(f"{path}: cannot read {what}, the file is corrupted or truncated ({err})") from None


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(name: str) -> str:
    """One path component for a name that comes from data (a template, a task).

    Names are data: ``../x`` or ``/home/me`` must never become a path outside the output
    folder. Ordinary names (letters, digits, ``._-``, not starting with a dot) are kept as
    they are; any other is cleaned and given a short hash of the original, so two names
    never share a folder. Callers keep the real name inside the files they write.
    """
    clean = _UNSAFE.sub("_", name).lstrip(".")[:96]
    if clean == name and clean:
        return clean
    return f"{clean or 'name'}-{hashlib.sha1(name.encode('utf-8')).hexdigest()[:10]}"


def ensure_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and parents) and prove a file can be written there; returns it.

    Called before any long work, so that a read-only or full output folder fails in a
    second rather than after hours of compute. The error names the folder.
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check.", suffix=".tmp", dir=folder)
        try:
            os.write(fd, b"ok")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as err:
        raise OSError(err.errno, f"cannot write to output folder ({err.strerror})", str(folder)) from None
    return folder


def _umask() -> int:
    # os.umask can only be read by setting it; restore it at once.
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``.

    For writers that want a file name rather than a handle (``matplotlib``'s
    ``savefig``, ``torch.save``...). Parent directories are created. The temporary
    name hides the real suffix, so pass the format explicitly to such writers.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns the path."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (UTF-8, trailing newline) to ``path`` atomically.

    The object is serialised before the file is touched, so an unserialisable
    value raises ``TypeError`` and leaves any existing file as it was.
    """
    text = json.dumps(obj, indent=indent, ensure_ascii=False) + "\n"
    return write_text_atomic(path, text)


def write_jsonl_atomic(path: str | os.PathLike[str], rows: Iterable[Any]) -> Path:
    """Write one JSON value per line to ``path`` atomically; ``rows`` may be a generator.

    Rows are streamed to the temporary file, so large outputs need no extra memory;
    an error mid-way (a bad row, an exception in the generator) keeps the old file.
    """
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False))
                handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
    return Path(path)
