"""Pruning itself: the method contract and registry, scoring, criteria, plans and surgery.

The workspace runs them over one model; ``secateur.core.api`` is what plugins see of it.
"""
