"""A plugin that fails while it is imported."""

raise ImportError("fake_plugins.broken_plugin needs a package that is not installed")
