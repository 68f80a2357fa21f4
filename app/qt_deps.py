"""Before the window starts on Linux/X11: check the system libraries Qt's xcb plugin needs, and name the
package that provides each missing one, instead of Qt's "could not load the Qt platform plugin" error.

Run as ``python -m secateur.app.qt_deps`` (``make run`` does); it exits 1, printing the install command,
when something is missing. No Qt is imported, so it cannot itself fail the way Qt would.
"""

from __future__ import annotations

import ctypes
import os
import sys

# What PySide6's libqxcb.so / libQt6XcbQpa.so.6 link against beyond libc, X11 and glib (from ldd).
# soname: (Debian/Ubuntu package, Fedora package)
XCB_LIBRARIES: dict[str, tuple[str, str]] = {
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
}


def _loadable(soname: str) -> bool:
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def missing(loadable=_loadable) -> list[str]:
    """The sonames in XCB_LIBRARIES that the dynamic loader cannot find."""
    return [soname for soname in XCB_LIBRARIES if not loadable(soname)]


def advice(sonames: list[str]) -> str:
    """What to tell the user: the missing libraries and the command that installs them on each family."""
    debian = sorted({XCB_LIBRARIES[s][0] for s in sonames})
    fedora = sorted({XCB_LIBRARIES[s][1] for s in sonames})
    return (
        f"Secateur's window needs system libraries that are missing: {', '.join(sonames)}\n"
        f"  Debian/Ubuntu: sudo apt-get install {' '.join(debian)}\n"
        f"  Fedora:        sudo dnf install {' '.join(fedora)}\n"
        "(the command line works without them; QT_QPA_PLATFORM=offscreen skips this check)"
    )


def needs_xcb(platform: str = sys.platform, environ: os._Environ | dict[str, str] = os.environ) -> bool:
    """Only Linux with the default (xcb) Qt platform needs these."""
    chosen = environ.get("QT_QPA_PLATFORM", "xcb").split(":")[0]
    return platform.startswith("linux") and chosen in ("", "xcb")


def main() -> int:
    if not needs_xcb():
        return 0
    gone = missing()
    if gone:
        print(advice(gone), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
