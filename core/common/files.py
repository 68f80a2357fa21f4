"""Writing result files atomically: a temporary file in the same folder, fsynced, then a rename.

The temporary file is created with mode 0666 less the user's umask (as ``open`` would create the
final file), so a team sharing a folder can read what Secateur writes. Its name,
``.NAME.secateur-PID-RANDOM.tmp``, records the writing process: a process killed mid-save leaves
it behind, and the next save into that folder removes it once that process is gone (a folder of
that name too: a large ONNX export stages its file and weights in one).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from secateur.core.common.errors import InputError

_TEMPORARY = re.compile(r"^\..+\.secateur-(\d+)-[0-9a-f]{8}\.tmp$")
STALE_AFTER_SECONDS = 24 * 3600  # a temporary file this old is stale even if its pid was reused


def temporary_name(path: Path) -> Path:
    """A fresh temporary path beside ``path``, named after this process."""
    return path.with_name(f".{path.name}.secateur-{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's live process
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete temporary files (and staging folders) of Secateur's naming left by dead processes; returns what went."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            match = _TEMPORARY.match(entry.name)
            if match is None or entry.is_symlink():
                continue
            with contextlib.suppress(OSError):
                old = time.time() - entry.stat().st_mtime > STALE_AFTER_SECONDS
                if old or not _alive(int(match.group(1))):
                    if entry.is_dir():  # a large ONNX export's staging folder
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()
                    removed.append(entry)
    return removed


def fsync_file(path: str | Path) -> None:
    """Flush a closed file's contents to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened."""
    with contextlib.suppress(OSError, AttributeError):
        descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@contextmanager
def atomic_target(path: str | Path, argument: str = "--out") -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it is fsynced and replaces ``path``.

    On failure (an exception, Ctrl-C) the temporary file is deleted, so a failure never leaves a
    half-written file in place of a good one; a killed process's leftovers go at the next save.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{argument} {path}: the folder {path.parent} does not exist")
    remove_stale_temporaries(path.parent)
    temporary = temporary_name(path)
    os.close(os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # the umask applies
    mode = temporary.stat().st_mode & 0o777  # writers that replace the file (safetensors) make it 0600
    try:
        yield str(temporary)
        os.chmod(temporary, mode)
        fsync_file(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def write_json_atomic(path: str | Path, content: object, argument: str = "--out") -> Path:
    """Write ``content`` as indented JSON to ``path``; a failure leaves any old file intact."""
    with atomic_target(path, argument) as temporary, open(temporary, "w", encoding="utf-8") as stream:
        json.dump(content, stream, indent=2)
        stream.write("\n")
    return Path(path)
