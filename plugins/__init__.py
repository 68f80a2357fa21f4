"""Secateur's built-in method plugins, one module each.

They import ``secateur.core`` only and are registered through the project's
own ``secateur`` entry points, exactly as a third-party plugin would be. They
ship with the host, so they do not declare ``secateur_api_version``; a
third-party plugin should.
"""
