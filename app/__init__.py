"""Secateur's Qt front end (PySide6, pyqtgraph): a thin view over ``secateur.core``.

Nothing imports this package; it imports core only. The window is built on
top of the core objects (layer tree, evaluation, method plugins).
"""
