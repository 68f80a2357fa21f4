"""`make run`'s check for Qt's xcb libraries: the right package names, and only where xcb is used."""

from __future__ import annotations

import os
import subprocess
import sys

from secateur.app import qt_deps


def test_a_missing_xcb_cursor_names_the_package_on_debian_and_fedora() -> None:
    gone = qt_deps.missing(lambda soname: soname != "libxcb-cursor.so.0")
    assert gone == ["libxcb-cursor.so.0"]
    text = qt_deps.advice(gone)
    assert "sudo apt-get install libxcb-cursor0\n" in text and "sudo dnf install xcb-util-cursor\n" in text


def test_packages_shared_by_several_libraries_are_named_once() -> None:
    text = qt_deps.advice(["libxcb-shm.so.0", "libxcb-sync.so.1", "libxkbcommon-x11.so.0"])
    assert "apt-get install libxcb-shm0 libxcb-sync1 libxkbcommon-x11-0\n" in text
    assert "dnf install libxcb libxkbcommon-x11\n" in text


def test_only_linux_with_the_xcb_platform_is_checked() -> None:
    assert qt_deps.needs_xcb("linux", {}) and qt_deps.needs_xcb("linux", {"QT_QPA_PLATFORM": "xcb"})
    assert not qt_deps.needs_xcb("linux", {"QT_QPA_PLATFORM": "offscreen"})
    assert not qt_deps.needs_xcb("darwin", {}) and not qt_deps.needs_xcb("win32", {})


def test_the_check_passes_here_and_reports_through_its_exit_code() -> None:
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    expected = 1 if qt_deps.missing() else 0
    result = subprocess.run([sys.executable, "-m", "secateur.app.qt_deps"], env=env, capture_output=True, text=True)
    assert result.returncode == expected and (("apt-get install" in result.stderr) == bool(expected))
