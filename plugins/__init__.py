"""Secateur's built-in method plugins, one module each.

They import ``secateur.core.api`` only (an import contract holds them to it),
are registered through the project's own ``secateur`` entry points and declare
``secateur_api_version``, exactly as a third-party plugin does.
"""
