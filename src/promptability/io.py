"""Atomic file writes shared by every stage, and reads that name the file at fault.

A reader (or a resumed run) must never see half a file: everything is written to a
temporary file in the destination's own directory (so the final rename stays on one
file system) and moved into place with ``os.replace``, which is atomic on POSIX and
Windows. If writing fails, the old file is left untouched and the temporary removed.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "settings_folder",
    "BadFileError",
    "blame_file",
    "read_json_file",
    "safe_name",
    "atomic_dir",
    "atomic_path",
    "is_stale",
    "pid_suffix",
    "remove_stale",
    "ensure_writable_dir",
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
        with tempfile.TemporaryFile(dir=folder) as probe:  # gone when closed, even if this process is killed
            probe.write(b"ok")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as err:
        raise OSError(err.errno, f"cannot write to output folder ({err.strerror})", str(folder)) from None
    return folder


def _started(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), from /proc; None where that is unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        lines = Path("/proc/stat").read_text().splitlines()
        boot = next(float(line.split()[1]) for line in lines if line.startswith("btime"))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def is_stale(path: str | os.PathLike[str], pid: int) -> bool:
    """True when process ``pid``, which made the temporary ``path``, is gone.

    Gone: no process has that pid, or the one that has it started after ``path`` was last
    changed (the pid was reused). This process's own temporaries are never stale: another
    thread may be writing them.
    """
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by another user
        pass
    except (OverflowError, ValueError):  # not a pid at all: a name we did not make
        return False
    started = _started(pid)
    try:
        changed = os.lstat(path).st_mtime
    except FileNotFoundError:
        return False
    # /proc's boot time has one-second resolution: a margin keeps a live writer's files.
    return started is not None and changed < min(started, time.time()) - 2.0


_PID_SUFFIX = re.compile(r"\.tmp-(\d+)(?:-[^.]*)?$")


def pid_suffix(path: str | os.PathLike[str]) -> int | None:
    """The pid in a ``<name>.tmp-<pid>`` name (or ``<name>.tmp-<pid>-<random>``, from ``atomic_path``), else None."""
    found = _PID_SUFFIX.search(Path(path).name)
    return int(found.group(1)) if found else None


def remove_stale(candidates: Iterable[Path]) -> list[Path]:
    """Removes the temporaries (files or folders) among ``candidates`` whose maker is gone; returns them.

    For the start of a run: what a killed run of the same kind left behind. Names without
    a pid (``pid_suffix`` gives None) are not ours to judge and are kept.
    """
    removed = []
    for path in candidates:
        pid = pid_suffix(path)
        if pid is None or not is_stale(path, pid):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        removed.append(path)
    return removed


def _umask() -> int:
    # os.umask can only be read by setting it; restore it at once.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def settings_folder(folder: Path, settings: dict[str, Any], error: type[Exception], hint: str) -> None:
    """Make ``folder`` recording ``settings``, or reuse it only if it was made with the same settings.

    For unfinished results a rerun resumes from (``partial/``): results made with another model,
    lr or data must never be mixed in. A mismatch raises ``error`` naming the settings that differ.
    """
    wanted = json.loads(json.dumps(settings))  # as it reads back: tuples become lists
    record = folder / "settings.json"
    if not folder.is_dir():
        folder.mkdir(parents=True)
        write_json_atomic(record, wanted)
        return
    previous = None  # a missing or unreadable record matches no settings
    with contextlib.suppress(json.JSONDecodeError, UnicodeDecodeError):
        previous = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else None
    if previous != wanted:
        old = previous if isinstance(previous, dict) else {}
        changed = sorted(k for k in set(wanted) | set(old) if old.get(k) != wanted.get(k))
        raise error(
            f"{folder} holds unfinished results made with other settings ({', '.join(changed) or 'unknown'}); "
            f"rerun with the same settings to resume, or {hint}"
        )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``.

    For writers that want a file name rather than a handle (``matplotlib``'s
    ``savefig``, ``torch.save``...). Parent directories are created. The temporary
    name hides the real suffix, so pass the format explicitly to such writers.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # The pid in the name lets the next write of this file remove what a killed writer left.
    remove_stale(target.parent.glob(f".{glob.escape(target.name)}.tmp-*"))
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent)
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


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a new temporary folder beside ``path``; on success it replaces ``path`` (folder or file) whole.

    The old ``path`` is moved aside only once the new folder is complete, then removed. The folder and
    everything in it get the permissions plain ``open``/``mkdir`` would give. On failure the temporary folder
    is removed and ``path`` is left as it was. Parent directories are created.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # As atomic_path: the pid in the name lets the next write remove the unfinished folder a killed writer left.
    # The old folder it may have moved aside (.<name>.old-<pid>) is never removed here: killed between the two
    # renames, it is the one complete copy.
    remove_stale(target.parent.glob(f".{glob.escape(target.name)}.tmp-*"))
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    try:
        yield tmp
        # mkdtemp makes a 0700 folder and some library writers 0600 files, whatever the umask; the folder
        # renamed into place must still be readable as the user's umask says.
        mask = _umask()
        for made in [tmp, *tmp.rglob("*")]:
            os.chmod(made, (0o777 if made.is_dir() else 0o666) & ~mask)
        if not target.exists():
            os.replace(tmp, target)
            return
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(tmp, target)
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns the path."""
    data = text.encode("utf-8")  # before the file is touched: text that cannot be written keeps the old file
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(path)


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
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False))
            handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    return Path(path)
