"""Model SPECs: turning what a user types into a ready ``nn.Module``.

Accepted forms:

- ``demo`` and ``demo-vgg``: the embedded demo models with their shipped weights;
- ``torchvision:NAME``: a torchvision classification architecture, built with
  ``weights=None`` (nothing is downloaded); ``--weights FILE`` loads a state dict;
- ``timm:NAME``: a timm architecture (the optional extra ``secateur[timm]``), built with
  ``pretrained=False`` at the model's default input size;
- ``path/to/file.py:factory``: a user's own architecture, built by calling
  ``factory()`` (with ``num_classes=N`` when ``--num-classes`` is given).

``--input-size`` is a square side (``224``) or a full ``C×H×W`` shape (``1x28x28``).
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import sys
import traceback
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path

import torch
from torch import nn

from secateur.core.common.errors import InputError
from secateur.core.model.demo_architectures import NUM_CLASSES as DEMO_CLASSES
from secateur.core.model.demo_architectures import DemoResNet, DemoVGG
from secateur.core.model.input_size import InputSize, parse_input_size, requested_shape
from secateur.core.model.timm_models import build_timm
from secateur.core.model.weights import load_weights_into, read_state_dict

DEMO_MODELS = {
    "demo": (DemoResNet, "demo_resnet.safetensors"),
    "demo-vgg": (DemoVGG, "demo_vgg.safetensors"),
}
DEMO_INPUT_SHAPE = (3, 32, 32)
DEFAULT_INPUT_SIZE = 224
SPEC_FORMS = "demo, demo-vgg, torchvision:NAME, timm:NAME, path/to/file.py:factory, or a checkpoint .safetensors file"


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model SPEC with its options; plain data, stored in checkpoints."""

    kind: str  # "demo", "torchvision", "timm", "file" or "checkpoint"
    name: str  # demo id, torchvision or timm architecture, or factory name
    path: str | None = None  # the .py file of a "file" spec
    num_classes: int | None = None
    weights: str | None = None
    input_size: InputSize = None  # a square side, or (channels, height, width)

    def __post_init__(self) -> None:
        if isinstance(self.input_size, list):  # read back from a checkpoint's JSON
            object.__setattr__(self, "input_size", tuple(self.input_size))

    def text(self) -> str:
        """The SPEC as a user would type it."""
        if self.kind == "demo":
            return self.name
        if self.kind in ("torchvision", "timm"):
            return f"{self.kind}:{self.name}"
        if self.kind == "checkpoint":
            return str(self.path)
        return f"{self.path}:{self.name}"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class LoadedModel:
    """A model ready for work, with what the rest of Secateur needs to know of it."""

    model: nn.Module
    spec: ModelSpec  # the base architecture (for a checkpoint: the model it was pruned from)
    input_shape: tuple[int, int, int]
    edits: list[dict] = field(default_factory=list)  # structural edits on top of the base, in order
    source: str = ""  # what the user typed

    @property
    def label(self) -> str:
        """How reports, trees and the window name the model: what the user typed, else its SPEC."""
        return self.source or self.spec.text()


def parse_model_spec(
    text: str,
    num_classes: int | None = None,
    weights: str | None = None,
    input_size: object = None,
) -> ModelSpec:
    """Parse a model SPEC; a malformed one is refused naming the accepted forms."""
    text = text.strip()
    if num_classes is not None and num_classes < 1:
        raise InputError(f"--num-classes {num_classes}: must be a positive whole number")
    input_size = parse_input_size(input_size)
    if text in DEMO_MODELS:
        return ModelSpec("demo", text, None, num_classes, weights, input_size)
    if text.startswith("torchvision:"):
        name = text.split(":", 1)[1].strip()
        if not name:
            raise InputError("model SPEC 'torchvision:' names no architecture; e.g. torchvision:resnet18")
        return ModelSpec("torchvision", name, None, num_classes, weights, input_size)
    if text.startswith("timm:"):
        name = text.split(":", 1)[1].strip()
        if not name:
            raise InputError("model SPEC 'timm:' names no architecture; e.g. timm:resnet18")
        return ModelSpec("timm", name, None, num_classes, weights, input_size)
    if text.endswith(".safetensors"):
        if weights is not None:
            raise InputError(f"model SPEC {text}: a checkpoint carries its own weights; drop --weights")
        return ModelSpec("checkpoint", Path(text).name, text, num_classes, None, input_size)
    path, separator, factory = text.rpartition(":")
    if separator and path.endswith(".py") and factory.isidentifier():
        return ModelSpec("file", factory, path, num_classes, weights, input_size)
    if text.endswith(".py"):
        raise InputError(f"model SPEC {text!r}: name the factory to call, as {text}:factory")
    raise InputError(f"model SPEC {text!r} is not recognised; expected {SPEC_FORMS}")


def build_model(spec: ModelSpec, with_weights: bool = True) -> LoadedModel:
    """Build the architecture a SPEC describes, load its weights, and put it in eval mode.

    ``with_weights=False`` builds the bare architecture (a checkpoint brings its
    own tensors). A checkpoint SPEC needs its edits replayed, which is
    ``secateur.core.pruning.loading.load_model``'s job.
    """
    if spec.kind == "checkpoint":
        raise ValueError(f"{spec.text()} is a checkpoint: load it with secateur.core.pruning.loading.load_model")
    if spec.kind == "demo":
        model, input_shape = _build_demo(spec, with_weights)
    elif spec.kind == "torchvision":
        model, input_shape = _build_torchvision(spec)
    elif spec.kind == "timm":
        model, input_shape = build_timm(spec.name, spec.num_classes, spec.input_size, f"model SPEC {spec.text()}")
    else:
        model, input_shape = _build_from_file(spec)
    if spec.weights is not None:
        load_weights_into(model, read_state_dict(spec.weights), f"--weights {spec.weights}")
    return LoadedModel(model.eval(), spec, input_shape, source=spec.text())


def _build_demo(spec: ModelSpec, with_weights: bool) -> tuple[nn.Module, tuple[int, int, int]]:
    factory, weight_file = DEMO_MODELS[spec.name]
    if spec.num_classes not in (None, DEMO_CLASSES):
        raise InputError(f"--num-classes {spec.num_classes}: the {spec.name} model has {DEMO_CLASSES} classes")
    if requested_shape(spec.input_size, DEMO_INPUT_SHAPE) != DEMO_INPUT_SHAPE:
        raise InputError(f"--input-size {spec.input_size}: the {spec.name} model takes 3×32×32 images")
    model = factory()
    if spec.weights is None and with_weights:
        shipped = files("secateur.assets").joinpath(weight_file)
        load_weights_into(model, read_state_dict(Path(str(shipped)), "demo weights"), f"demo weights {weight_file}")
    return model, DEMO_INPUT_SHAPE


def torchvision_architectures() -> list[str]:
    """Names of torchvision's classification architectures."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _build_torchvision(spec: ModelSpec) -> tuple[nn.Module, tuple[int, int, int]]:
    import torchvision

    names = torchvision_architectures()
    if spec.name not in names:
        close = difflib.get_close_matches(spec.name, names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "run `secateur inspect --list-architectures`"
        raise InputError(f"model SPEC torchvision:{spec.name}: unknown architecture; {hint}")
    shape = requested_shape(spec.input_size, (3, DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE))
    if shape[0] != 3:
        raise InputError(
            f"--input-size {spec.input_size}: torchvision:{spec.name} takes 3 channels; "
            "for other channel counts use timm:NAME or your own file.py:factory"
        )
    options: dict[str, object] = {"weights": None}
    if spec.num_classes is not None:
        options["num_classes"] = spec.num_classes
    if spec.name.startswith("vit_") and spec.input_size is not None:
        if shape[1] != shape[2]:
            raise InputError(f"--input-size {spec.input_size}: torchvision:{spec.name} takes square images")
        options["image_size"] = shape[1]
    try:
        model = torchvision.models.get_model(spec.name, **options)
    except (TypeError, ValueError) as error:
        raise InputError(f"model SPEC torchvision:{spec.name}: cannot build it with these options ({error})") from None
    return model, shape


def _build_from_file(spec: ModelSpec) -> tuple[nn.Module, tuple[int, int, int]]:
    assert spec.path is not None
    path = Path(spec.path)
    if not path.is_file():
        raise InputError(f"model SPEC {spec.text()}: no such file {path}")
    module = _import_user_file(path, spec)
    factory = getattr(module, spec.name, None)
    if not callable(factory):
        available = _factories_in(module)
        listing = ", ".join(available) if available else "none"
        raise InputError(
            f"model SPEC {spec.text()}: {path} has no callable {spec.name!r}; callables it defines: {listing}"
        )
    try:
        model = factory(num_classes=spec.num_classes) if spec.num_classes is not None else factory()
    except Exception as error:  # the user's code: report it, never crash
        detail = "".join(traceback.format_exception_only(type(error), error)).strip()
        raise InputError(f"model SPEC {spec.text()}: calling {spec.name}() failed: {detail}") from None
    if not isinstance(model, nn.Module):
        raise InputError(
            f"model SPEC {spec.text()}: {spec.name}() returned {type(model).__name__}, not a torch nn.Module"
        )
    return model, _user_input_shape(spec, module, model)


def _import_user_file(path: Path, spec: ModelSpec) -> object:
    module_name = f"secateur_user_model_{abs(hash(str(path.resolve())))}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise InputError(f"model SPEC {spec.text()}: {path} cannot be imported as a Python file")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as error:  # the user's code: report it, never crash
        sys.modules.pop(module_name, None)
        detail = "".join(traceback.format_exception_only(type(error), error)).strip()
        raise InputError(f"model SPEC {spec.text()}: importing {path} failed: {detail}") from None
    return module


def _factories_in(module: object) -> list[str]:
    own = getattr(module, "__name__", None)
    names = []
    for name, value in vars(module).items():
        if name.startswith("_") or not callable(value):
            continue
        if (inspect.isfunction(value) or inspect.isclass(value)) and getattr(value, "__module__", None) == own:
            names.append(name)
    return sorted(names)


def _user_input_shape(spec: ModelSpec, module: object, model: nn.Module) -> tuple[int, int, int]:
    """Input shape of a user's model: --input-size, else INPUT_SHAPE in the file, else 3×224×224."""
    declared = getattr(model, "input_shape", None) or getattr(module, "INPUT_SHAPE", None)
    if declared is not None:
        shape = tuple(int(v) for v in declared)
        if len(shape) != 3:
            raise InputError(f"model SPEC {spec.text()}: INPUT_SHAPE must be (channels, height, width), got {declared}")
        return requested_shape(spec.input_size, shape)  # type: ignore[arg-type]
    return requested_shape(spec.input_size, (3, DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE))


def example_input(loaded: LoadedModel, batch_size: int = 1, device: torch.device | str = "cpu") -> torch.Tensor:
    """A seeded random batch of the model's input shape, for tracing and counting."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn((batch_size, *loaded.input_shape), generator=generator).to(device)
