"""Fixed feature extractors: :func:`freeze` and :class:`Freezable` (a frozen module stays in eval
mode and without gradients), :func:`evaluating` (run a caller's module as a fixed function and
leave it as it was), and :class:`TappedTrunk`, the base of the LPIPS trunks (VGG16, AlexNet)
that returns the activations LPIPS compares."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

__all__ = ["Freezable", "freeze", "evaluating", "TappedTrunk"]


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


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """Run ``module`` (a network the caller passed in) as a fixed function for the ``with``
    block: every submodule in eval mode (BatchNorm uses its running statistics and leaves them
    unchanged, dropout is off, so outputs do not depend on the batch) and ``torch.no_grad()``.
    Afterwards each submodule's ``training`` flag is what it was before, one by one (a mixed
    train/eval module stays mixed), also when the block raises. Yields ``module``.

    Every place in flowmo that runs a module it was given (the generation and reconstruction
    metrics' networks, the evaluated model, the tokenizer that decodes generated tokens, the
    classifier's features) runs it inside this."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        for m, flag in flags:
            m.training = flag  # the flag itself: a train() override (Freezable) must not re-derive it


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
