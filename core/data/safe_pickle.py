"""Reading CIFAR's pickled batches without executing arbitrary code.

CIFAR-10/100's "python version" files are pickles of dicts holding NumPy
arrays and lists. Python's ``pickle`` would run whatever callable a file names,
so this unpickler resolves only the few NumPy globals that rebuild arrays and
refuses everything else before it is called.
"""

from __future__ import annotations

import importlib
import io
import pickle

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class RefusedPickle(pickle.UnpicklingError):
    """The pickle names a callable outside the allow-list; nothing was executed."""


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise RefusedPickle(f"refused to load {module}.{name}: only NumPy arrays, lists and dicts are allowed")
        if module.startswith("numpy") and module.endswith("multiarray"):
            try:
                module = "numpy._core.multiarray"
                return getattr(importlib.import_module(module), name)
            except ImportError:  # NumPy 1.x
                module = "numpy.core.multiarray"
        return getattr(importlib.import_module(module), name)


def load_arrays_pickle(data: bytes) -> object:
    """Unpickle ``data`` allowing only NumPy arrays and plain containers."""
    return _ArraysOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
