"""``--input-size``: a square side (``224``) or a whole ``C×H×W`` shape (``1x28x28``)."""

from __future__ import annotations

import re

from secateur.core.common.errors import InputError

InputSize = int | tuple[int, int, int] | None
_ACCEPTED = "a side in pixels (224) or channels×height×width (1x28x28)"


def parse_input_size(value: object) -> InputSize:
    """The side or the (C, H, W) shape in ``value`` (an int, a 3-sequence, or text with ``x``, ``X`` or ``×``)."""
    if value is None:
        return None
    if isinstance(value, int):
        parts: list[object] = [value]
    elif isinstance(value, (tuple, list)):
        parts = list(value)
    else:
        parts = re.split(r"\s*[xX×]\s*", str(value).strip())
    try:
        numbers = [int(str(part)) for part in parts]
    except ValueError:
        raise InputError(f"--input-size {value}: expected {_ACCEPTED}") from None
    if len(numbers) not in (1, 3):
        raise InputError(f"--input-size {value}: expected {_ACCEPTED}")
    if any(not 8 <= side <= 4096 for side in numbers[-2:]):
        raise InputError(f"--input-size {value}: a side must be between 8 and 4096 pixels")
    if len(numbers) == 1:
        return numbers[0]
    if not 1 <= numbers[0] <= 64:
        raise InputError(f"--input-size {value}: channels must be between 1 and 64")
    return (numbers[0], numbers[1], numbers[2])


def requested_shape(size: InputSize, default: tuple[int, int, int]) -> tuple[int, int, int]:
    """The input shape a model gets: ``default``, with the side or the whole shape the user asked for."""
    if size is None:
        return default
    if isinstance(size, int):
        return (default[0], size, size)
    return (int(size[0]), int(size[1]), int(size[2]))
