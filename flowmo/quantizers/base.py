"""The one result type and the interface every quantizer implements."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

__all__ = ["QuantizerOutput", "Quantizer"]


@dataclass
class QuantizerOutput:
    """What every quantizer returns.

    values:  quantized code (B, T, C), same dtype as the input, straight-through gradients.
    indices: one int64 index per token (B, T).
    losses:  named, already-weighted loss terms (empty outside training mode); they sum to ``loss``.
    stats:   named diagnostics (unweighted terms etc.), detached.
    """

    values: Tensor
    indices: Tensor
    losses: dict[str, Tensor] = field(default_factory=dict)
    stats: dict[str, Tensor] = field(default_factory=dict)

    @property
    def loss(self) -> Tensor:
        if not self.losses:
            return self.values.new_zeros((), dtype=torch.float32)
        return torch.stack([v.float() for v in self.losses.values()]).sum()


class Quantizer(nn.Module):
    """Base class: maps a continuous code (B, T, C) to a discrete one.

    Subclasses implement ``forward`` (-> :class:`QuantizerOutput`), ``codes_to_indices`` and
    ``indices_to_codes``, and set ``channels`` and ``codebook_size`` (the per-token vocabulary).
    """

    channels: int
    codebook_size: int

    def forward(self, z: Tensor) -> QuantizerOutput:  # pragma: no cover - interface
        raise NotImplementedError

    def codes_to_indices(self, codes: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def indices_to_codes(self, indices: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    # -- input checks shared by every quantizer
    def _check_code(self, z: Tensor, name: str = "z") -> None:
        if not isinstance(z, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(z).__name__}")
        if not z.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {z.dtype}")
        if z.ndim < 1 or z.shape[-1] != self.channels:
            raise ValueError(f"{name} must have shape (..., {self.channels}), got {tuple(z.shape)}")

    def _check_indices(self, indices: Tensor, name: str = "indices") -> None:
        if not isinstance(indices, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(indices).__name__}")
        if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor, got {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(
                f"{name} must lie in [0, {self.codebook_size}), got values in "
                f"[{int(indices.min())}, {int(indices.max())}]"
            )
