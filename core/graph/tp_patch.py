"""Replacing a Torch-Pruning function by a wrapped one, once, however often Secateur's modules are imported."""

from __future__ import annotations

from collections.abc import Callable


def patch_once(owner: object, name: str, wrap: Callable[[Callable], Callable]) -> None:
    """Replace ``owner.name`` by ``wrap(owner.name)``, once however often this module is imported or reloaded.

    The replacement keeps the original as ``secateur_original``: tests compare the two.
    """
    original = getattr(owner, name)
    if getattr(original, "secateur_patch", None) != wrap.__name__:
        patched = wrap(original)
        patched.secateur_patch = wrap.__name__  # type: ignore[attr-defined]
        patched.secateur_original = original  # type: ignore[attr-defined]
        setattr(owner, name, patched)
