"""Plumbing every layer shares: user-facing errors, atomic files, progress and cancellation, devices, run settings."""
