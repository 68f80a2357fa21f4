"""The ``secateur`` command: the window with no arguments or ``gui``, the command line (app/cli.py) otherwise."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _gui_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="secateur gui", description="Open Secateur's window.")
    parser.add_argument("--model", default="demo", metavar="SPEC", help="the model to open (demo)")
    parser.add_argument("--weights", metavar="FILE", help="a state dict to load: .safetensors, .pt or .pth")
    parser.add_argument("--num-classes", type=int, metavar="N", help="classes of a torchvision or file model's head")
    parser.add_argument("--input-size", type=int, metavar="PIXELS", help="input height and width in pixels")
    parser.add_argument("--data", default="demo", metavar="SPEC", help="the data to open (demo)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--method", metavar="ID", help="run this method once the model is open")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a method parameter")
    parser.add_argument("--apply", action="store_true", help="apply the method's plan (for screenshots)")
    parser.add_argument("--select", metavar="LAYER", help="select this layer in the tree (for screenshots)")
    parser.add_argument("--screenshot", metavar="FILE", help="render the window to a PNG and exit")
    parser.add_argument(
        "--size", default="1280x800", help="window size WIDTHxHEIGHT (1280x800), at most the screen unless --screenshot"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``secateur`` with no arguments, or ``secateur gui ...``, opens the window; anything else is the CLI."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] != "gui":
        from secateur.app import cli

        return cli.main(arguments)
    options = _gui_parser().parse_args(arguments[1:])
    # The splash first (Qt only, well under a second); torch and the window load behind it.
    splash = None
    if not options.screenshot:
        from secateur.app.splash import show_splash

        splash = show_splash()
    from secateur.app.gui import run_gui

    return run_gui(options, splash)


if __name__ == "__main__":
    sys.exit(main())
