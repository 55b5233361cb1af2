"""Sample-level distances registered for the perceptual terms: each maps (x, y) -> (B,) distances.

Pixel distances live here; network distances (LPIPS, ResNet-50 logits) are registered by
:mod:`flowmo.nets` and need weight files.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..registry import PERCEPTUAL_DISTANCES

__all__ = ["MSEDistance", "L1Distance", "build_distance"]


class _PixelDistance(nn.Module):
    def __init__(self, spec=None):
        super().__init__()
        self.spec = spec

    def _check(self, x: Tensor, y: Tensor) -> None:
        if x.shape != y.shape:
            raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")


@PERCEPTUAL_DISTANCES.register("mse")
class MSEDistance(_PixelDistance):
    """Per-sample mean squared error."""

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        self._check(x, y)
        return (x.float() - y.float()).pow(2).flatten(1).mean(1)


@PERCEPTUAL_DISTANCES.register("l1")
class L1Distance(_PixelDistance):
    """Per-sample mean absolute error."""

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        self._check(x, y)
        return (x.float() - y.float()).abs().flatten(1).mean(1)


def build_distance(spec) -> nn.Module:
    """The registered distance for ``spec`` (a PerceptualSpec), frozen and in eval mode.

    The network distances (``lpips_vgg``, ``lpips_alex``, ``resnet50_logits``, ``ssim``) are
    registered by :mod:`flowmo.nets`; an unregistered name imports it once and retries.
    """
    if spec.name not in PERCEPTUAL_DISTANCES:
        import flowmo.nets  # noqa: F401  registers the network distances
    module = PERCEPTUAL_DISTANCES.create(spec.name, spec)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
