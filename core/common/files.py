"""Writing result files atomically: a temporary file in the same folder, then a rename."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from secateur.core.common.errors import InputError


@contextmanager
def atomic_target(path: str | Path, argument: str = "--out") -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on failure it is deleted.

    A failure therefore never leaves a half-written file in place of a good one.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{argument} {path}: the folder {path.parent} does not exist")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; a result file gets the user's usual mode
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | Path, content: object, argument: str = "--out") -> Path:
    """Write ``content`` as indented JSON to ``path``; a failure leaves any old file intact."""
    with atomic_target(path, argument) as temporary, open(temporary, "w", encoding="utf-8") as stream:
        json.dump(content, stream, indent=2)
        stream.write("\n")
    return Path(path)
