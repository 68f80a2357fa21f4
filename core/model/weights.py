"""Reading weight files safely and fitting them to a model.

``.safetensors`` files hold tensors only. ``.pt``/``.pth`` files are pickles, so
they are read with ``torch.load(weights_only=True)``: a file that would need
arbitrary code to unpickle (a whole pickled model, custom classes) is refused
with an explanation and nothing in it is executed.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from secateur.core.common.errors import InputError, first_line

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "weights")


def read_state_dict(path: str | Path, argument: str = "--weights") -> dict[str, torch.Tensor]:
    """The tensors of a weight file, keyed by parameter name, on the CPU.

    Common wrappers (``{"state_dict": ...}``, ``{"model": ...}``) and the
    ``module.`` prefix of DataParallel are unwrapped, since users save both.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{argument} {path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        state = _read_safetensors(path, argument)
    elif suffix in (".pt", ".pth"):
        state = _read_pickled_weights(path, argument)
    else:
        raise InputError(
            f"{argument} {path}: unknown weight file type {suffix or '(none)'!r}; "
            f"expected one of {', '.join(WEIGHT_SUFFIXES)}"
        )
    return _strip_prefix(state, "module.")


def _read_safetensors(path: Path, argument: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise InputError(f"{argument} {path}: not a readable .safetensors file ({error})") from None


def _read_pickled_weights(path: Path, argument: str) -> dict[str, torch.Tensor]:
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = first_line(error) or type(error).__name__
        raise InputError(
            f"{argument} {path}: refused, the file needs arbitrary code to unpickle "
            f"(it stores Python objects, not only tensors; nothing in it was executed). "
            f"Save a state dict instead: torch.save(model.state_dict(), path), or use .safetensors. "
            f"[{reason}]"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise InputError(f"{argument} {path}: not a readable PyTorch weight file ({error})") from None
    return _as_state_dict(loaded, path, argument)


def _as_state_dict(loaded: object, path: Path, argument: str) -> dict[str, torch.Tensor]:
    if isinstance(loaded, Mapping):
        for key in _WRAPPER_KEYS:
            inner = loaded.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                loaded = inner
                break
        tensors = {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise InputError(
        f"{argument} {path}: holds no state dict (found {type(loaded).__name__}); "
        "expected a mapping of parameter names to tensors, as saved by torch.save(model.state_dict(), path)"
    )


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if state and all(key.startswith(prefix) for key in state):
        return {key[len(prefix) :]: value for key, value in state.items()}
    return state


def load_weights_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model``, refusing any missing, extra or misshapen tensor.

    The message names the first mismatching key with both shapes, which is
    what a user needs to see a wrong ``--num-classes`` or a wrong architecture.
    """
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            continue
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise InputError(
                f"{source}: weights do not fit the model: {key!r} has shape {tuple(state[key].shape)} "
                f"in the file but {tuple(tensor.shape)} in the model "
                "(check the architecture name and --num-classes)"
            )
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensor(s) missing from the file, first {missing[0]!r}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s) in the file, first {unexpected[0]!r}")
        raise InputError(f"{source}: weights do not fit the model: {'; '.join(parts)}")
    # Modules such as torchvision's MNASNet read their layout version from the state dict's metadata,
    # which a safetensors file does not carry: the file keeps its own, or gets the freshly built model's.
    ordered = OrderedDict(state)
    ordered._metadata = getattr(state, "_metadata", None) or getattr(expected, "_metadata", None)  # type: ignore[attr-defined]
    model.load_state_dict(ordered, strict=True)
