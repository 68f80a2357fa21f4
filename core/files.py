"""Writing result files atomically: a temporary file in the same folder, then a rename."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from secateur.core.errors import InputError


def write_json_atomic(path: str | Path, content: object, argument: str = "--out") -> Path:
    """Write ``content`` as indented JSON to ``path``; a failure leaves any old file intact."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{argument} {path}: the folder {path.parent} does not exist")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(content, stream, indent=2)
            stream.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
