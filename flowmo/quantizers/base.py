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

    def _check_values(self, x: Tensor, name: str) -> None:
        """The values of a code tensor can be read (not a meta tensor) and are finite."""
        if x.device.type == "meta":
            raise ValueError(f"{name} is a meta tensor (it has no values)")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains NaN or Inf values")

    def _check_indices(self, indices: Tensor, name: str = "indices", size: int | None = None) -> None:
        size = self.codebook_size if size is None else size
        if not isinstance(indices, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(indices).__name__}")
        if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor, got {indices.dtype}")
        if indices.dtype == torch.uint64:
            raise TypeError(f"{name} must be a signed integer tensor (int64), got {indices.dtype}")
        if indices.device.type == "meta":
            raise ValueError(f"{name} is a meta tensor (it has no values)")
        wide = indices if indices.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64) \
            else indices.to(torch.int64)  # uint16 / uint32: no min/max kernels
        if wide.numel() and (int(wide.min()) < 0 or int(wide.max()) >= size):
            raise ValueError(
                f"{name} must lie in [0, {size}), got values in [{int(wide.min())}, {int(wide.max())}]"
            )
