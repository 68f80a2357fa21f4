"""The pipeline as users run it: one prune pipeline for the CLI and the window, and the window's evented session."""
