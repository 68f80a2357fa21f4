"""Atomic writes: the user's umask, fsync before the rename, stale temporaries of dead processes removed."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from secateur.core.common.files import atomic_target, remove_stale_temporaries, temporary_name
from secateur.core.model.checkpoint import CheckpointInfo, save_checkpoint
from secateur.core.model.specs import ModelSpec


def _save(path: Path) -> Path:
    model = torch.nn.Linear(3, 2)
    return save_checkpoint(path, model, CheckpointInfo(ModelSpec("file", "f", "f.py"), (3,), []))


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_a_checkpoint_follows_the_umask(tmp_path: Path, mask: int, mode: int) -> None:
    previous = os.umask(mask)
    try:
        path = _save(tmp_path / "m.safetensors")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_the_file_is_fsynced_before_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    _save(tmp_path / "m.safetensors")
    assert events[:2] == ["fsync", "replace"]


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_next_save_removes_what_a_killed_save_left(tmp_path: Path) -> None:
    target = tmp_path / "m.safetensors"
    dead = tmp_path / f".m.safetensors.secateur-{_dead_pid()}-0123abcd.tmp"
    dead.write_bytes(b"x" * 1000)  # a killed process's half-written checkpoint
    mine = temporary_name(target)  # a save in progress in this (live) process
    mine.write_bytes(b"y")
    other = tmp_path / ".notes.txt.tmp"  # not of Secateur's naming: never touched
    other.write_bytes(b"z")
    _save(target)
    assert not dead.exists()
    assert mine.exists() and other.exists() and target.is_file()
    assert remove_stale_temporaries(tmp_path) == []


def test_the_next_save_removes_a_killed_exports_staging_folder(tmp_path: Path) -> None:
    """A large ONNX export stages its file and weights in a folder named as a temporary file."""
    dead = tmp_path / f".m.onnx.secateur-{_dead_pid()}-0123abcd.tmp"
    dead.mkdir()
    (dead / "m.onnx.data").write_bytes(b"x" * 1000)
    mine = temporary_name(tmp_path / "m.onnx")  # this (live) process's export in progress
    mine.mkdir()
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert not dead.exists() and mine.is_dir()


def test_an_interrupted_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), atomic_target(tmp_path / "out.json") as temporary:
        Path(temporary).write_text("half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
