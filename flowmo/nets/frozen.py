"""Fixed feature extractors: :func:`freeze` and :class:`Freezable` (a frozen module stays in eval
mode and without gradients), and :class:`TappedTrunk`, the base of the LPIPS trunks (VGG16,
AlexNet) that returns the activations LPIPS compares."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Freezable", "freeze", "TappedTrunk"]


class Freezable(nn.Module):
    """Module that, once frozen by :func:`freeze`, stays in eval mode.

    ``.train()`` on a frozen module (or on any parent of it) keeps it in eval mode, so
    BatchNorm statistics and dropout of a fixed feature extractor never change.
    """

    _flowmo_frozen: bool = False

    def train(self, mode: bool = True):  # type: ignore[override]
        return super().train(False if self._flowmo_frozen else mode)


def freeze(module: nn.Module) -> nn.Module:
    """Put ``module`` in eval mode, set ``requires_grad=False`` on all its parameters and
    (for :class:`Freezable` modules) keep it in eval mode from now on. Returns it."""
    for p in module.parameters():
        p.requires_grad_(False)
    for m in module.modules():
        if isinstance(m, Freezable):
            m._flowmo_frozen = True
    module.eval()
    return module


class TappedTrunk(Freezable):
    """Base of the LPIPS trunks (VGG16, AlexNet): torchvision's init, ``forward`` through the
    classifier, and ``lpips_features`` returning the activations after the layers in ``TAPS``."""

    TAPS: tuple[int, ...] = ()
    include_classifier: bool

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.include_classifier:
            raise RuntimeError(f"this {type(self).__name__} was built without its classifier; use lpips_features()")
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))

    def lpips_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The activations after each layer index in ``TAPS`` (in order)."""
        taps = set(self.TAPS)
        out: list[torch.Tensor] = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in taps:
                out.append(x)
                if len(out) == len(self.TAPS):
                    break
        return out
