"""Sample-level distances registered for the perceptual terms: each maps (x, y) -> (B,) distances.

Pixel distances live here; network distances (LPIPS, ResNet-50 logits) are registered by
:mod:`flowmo.nets` and need weight files.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor, nn

from ..registry import PERCEPTUAL_DISTANCES

__all__ = ["PerceptualDistance", "MSEDistance", "L1Distance", "build_distance"]


class PerceptualDistance(nn.Module, ABC):
    """The interface of every sample-level distance (the flow loss's perceptual term, the
    post-training objective's distance).

    Registered with :data:`flowmo.PERCEPTUAL_DISTANCES`; built by :func:`build_distance`
    (``PERCEPTUAL_DISTANCES.build(spec)``, no wiring), which freezes its parameters and puts
    it in eval mode. A subclass's constructor calls ``super().__init__()`` (no arguments;
    this is an ``nn.Module``) first. Check a new distance with
    :func:`flowmo.testing.check_distance`.
    """

    @abstractmethod
    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-sample distances.

        Args:
            x, y: images (B, 3, H, W), floating, values in [-1, 1], of one shape on one device.

        Returns:
            (B,) floating tensor (float32 for float32 inputs) of distances >= 0, 0 where
            x = y, differentiable in x and y; sample b depends only on x[b], y[b].
            A shape mismatch raises ValueError.
        """


class _PixelDistance(PerceptualDistance):
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


def build_distance(spec) -> PerceptualDistance:
    """The registered distance for ``spec`` (a PerceptualSpec), frozen and in eval mode.

    The network distances (``lpips_vgg``, ``lpips_alex``, ``resnet50_logits``, ``ssim``) are
    registered by :mod:`flowmo.nets`; an unregistered name imports it once and retries.
    """
    if spec.name not in PERCEPTUAL_DISTANCES:
        import flowmo.nets  # noqa: F401  registers the network distances
    module = PERCEPTUAL_DISTANCES.build(spec)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
