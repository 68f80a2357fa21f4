"""Enabling a control with the reason it is disabled: a greyed-out button always says why."""

from __future__ import annotations

from typing import Any


def enable(widget: Any, reason: str) -> None:
    """Enable a control when ``reason`` is empty; otherwise disable it and say why in its tooltip."""
    default = widget.property("default_tip")
    if default is None:
        default = widget.toolTip()
        widget.setProperty("default_tip", default)
    widget.setEnabled(not reason)
    widget.setToolTip(reason or default)
