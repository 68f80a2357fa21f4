"""A plain wheel carries every package and the demo assets, importable without the source tree."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_and_runs_outside_the_source_tree(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)]
    build = subprocess.run(
        [*command, str(ROOT)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    wheel = next(tmp_path.glob("secateur-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for expected in (
        "secateur/app/cli.py",
        "secateur/core/api.py",
        "secateur/core/pruning/workspace.py",
        "secateur/core/model/checkpoint.py",
        "secateur/app/__init__.py",
        "secateur/plugins/__init__.py",
        "secateur/assets/demo_resnet.safetensors",
        "secateur/assets/demo_vgg.safetensors",
    ):
        assert expected in names
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import secateur.core.api as m;"
        "assert m.__file__.startswith(sys.argv[1]), m.__file__;"
        "loaded = m.load_model(m.parse_model_spec('demo'));"
        "print(sum(p.numel() for p in loaded.model.parameters()))"
    )
    run = subprocess.run(
        [sys.executable, "-I", "-c", probe, str(target)], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert run.returncode == 0, run.stderr
    assert int(run.stdout) > 1_000_000
