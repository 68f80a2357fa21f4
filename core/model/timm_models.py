"""timm architectures as model SPECs (``timm:NAME``), an optional extra: ``pip install 'secateur[timm]'``.

Models are built with ``pretrained=False`` (nothing is downloaded; ``--weights FILE`` loads a state
dict) at the input size of their pretrained configuration unless ``--input-size`` says otherwise:
a channel count other than 3 becomes timm's ``in_chans``, and models whose layers depend on the
image size (vision transformers) get ``img_size``. Checkpoints record the timm version that built
the base model, since an architecture's layout can change between timm releases.
"""

from __future__ import annotations

import difflib
from types import ModuleType

from torch import nn

from secateur.core.common.errors import InputError
from secateur.core.model.input_size import InputSize, requested_shape

INSTALL_HINT = "pip install 'secateur[timm]' (or pip install timm)"
FALLBACK_SHAPE = (3, 224, 224)


def import_timm(what: str) -> ModuleType:
    """The timm module, or an ``InputError`` naming the install command."""
    try:
        import timm
    except ImportError:
        raise InputError(f"{what} needs timm, which is not installed; install it with {INSTALL_HINT}") from None
    return timm


def timm_version() -> str | None:
    """The installed timm version, or None without timm."""
    try:
        import timm
    except ImportError:
        return None
    return str(timm.__version__)


def _default_shape(timm: ModuleType, name: str) -> tuple[int, int, int]:
    """The input size of the model's pretrained configuration (3×224×224 when it has none)."""
    config = timm.models.get_pretrained_cfg(name)
    shape = getattr(config, "input_size", None) or FALLBACK_SHAPE
    return (int(shape[0]), int(shape[1]), int(shape[2]))


def build_timm(
    name: str, num_classes: int | None, input_size: InputSize, what: str
) -> tuple[nn.Module, tuple[int, int, int]]:
    """Build timm's ``name`` (no pretrained weights) and the input shape it takes."""
    timm = import_timm(what)
    names = timm.list_models()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.0)
        hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models()"
        raise InputError(f"{what}: unknown timm architecture {name!r}; {hint}")
    options: dict[str, object] = {"pretrained": False}
    if num_classes is not None:
        options["num_classes"] = num_classes
    default = _default_shape(timm, name)
    shape = requested_shape(input_size, default)
    if shape[0] != default[0]:
        options["in_chans"] = shape[0]
    try:
        model = _create(timm, name, options, shape, default)
    except (TypeError, ValueError, AssertionError, RuntimeError) as error:
        raise InputError(f"{what}: timm cannot build it with these options ({error})") from None
    return model, shape


def _create(
    timm: ModuleType, name: str, options: dict[str, object], shape: tuple[int, int, int], default: tuple[int, int, int]
) -> nn.Module:
    """Create the model; an image size other than the default goes to models that take ``img_size``."""
    if shape[1:] == default[1:]:
        return timm.create_model(name, **options)
    try:
        return timm.create_model(name, img_size=shape[1:], **options)
    except TypeError as error:
        if "img_size" not in str(error):
            raise
        return timm.create_model(name, **options)  # a convolutional net: any size goes
