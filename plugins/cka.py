"""Linear centred kernel alignment (CKA) between two representations of the same inputs.

``CKA(A, B) = ‖B̃ᵀÃ‖_F² / (‖ÃᵀÃ‖_F ‖B̃ᵀB̃‖_F)`` on column-centred features
(Kornblith et al. 2019, the biased estimator the CKA layer-pruning paper uses).
It is 1 for identical representations and invariant to orthogonal transforms
and isotropic scaling of either side. The accumulator sums the raw cross
products batch by batch, in float64, and centres them at the end, so a
calibration set of any size is scored in memory that grows with the feature
width only.
"""

from __future__ import annotations

import torch


class LinearCKA:
    """Streaming linear CKA: ``update`` with matching batches of both representations, then ``value``."""

    def __init__(self) -> None:
        self.count = 0
        self.sum_a: torch.Tensor | None = None
        self.sum_b: torch.Tensor | None = None
        self.aa: torch.Tensor | None = None
        self.bb: torch.Tensor | None = None
        self.ba: torch.Tensor | None = None

    def update(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Add a batch: ``a`` (n × p) and ``b`` (n × q), row i of both from the same input."""
        a = a.detach().flatten(1).double().cpu()
        b = b.detach().flatten(1).double().cpu()
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"CKA needs the same inputs on both sides: {a.shape[0]} rows against {b.shape[0]}")
        if self.sum_a is None:
            self.sum_a, self.sum_b = a.sum(0), b.sum(0)
            self.aa, self.bb, self.ba = a.T @ a, b.T @ b, b.T @ a
        else:
            self.sum_a += a.sum(0)
            self.sum_b += b.sum(0)
            self.aa += a.T @ a
            self.bb += b.T @ b
            self.ba += b.T @ a
        self.count += a.shape[0]

    def value(self) -> float:
        """CKA of everything added so far, in [0, 1]."""
        if self.sum_a is None or self.count < 2:
            raise ValueError("CKA needs at least two inputs")
        mean_a, mean_b = self.sum_a / self.count, self.sum_b / self.count
        aa = self.aa - self.count * torch.outer(mean_a, mean_a)
        bb = self.bb - self.count * torch.outer(mean_b, mean_b)
        ba = self.ba - self.count * torch.outer(mean_b, mean_a)
        denominator = torch.linalg.matrix_norm(aa) * torch.linalg.matrix_norm(bb)
        if denominator <= 0:  # a constant representation carries no information to compare
            return 0.0
        return float((torch.linalg.matrix_norm(ba) ** 2 / denominator).clamp(0.0, 1.0))


def linear_cka(a: torch.Tensor, b: torch.Tensor) -> float:
    """Linear CKA of two whole representations (rows are inputs)."""
    accumulator = LinearCKA()
    accumulator.update(a, b)
    return accumulator.value()
