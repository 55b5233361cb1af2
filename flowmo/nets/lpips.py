"""LPIPS perceptual distance (v0.1) with VGG16 or AlexNet trunks.

For float images ``x, y`` of shape (B, 3, H, W) in [-1, 1] (the lpips package's input
convention; ``normalize=True`` takes [0, 1] images and maps them by ``2 * x - 1``, as
the package's ``LPIPS.forward(..., normalize=True)`` does):

1. fixed scaling layer: ``(x - shift) / scale`` with shift ``[-.030, -.088, -.188]``
   and scale ``[.458, .448, .450]`` per RGB channel (the lpips package's
   ``ScalingLayer`` constants, i.e. the ImageNet mean/std re-expressed for [-1, 1]
   inputs); no resize and no crop: the trunk runs at the images' own size, as in the
   package;
2. trunk activations at 5 taps (VGG16: relu1_2 .. relu5_3; AlexNet: relu1 .. relu5);
3. channel-unit normalisation ``f / (sqrt(sum_c f^2) + 1e-10)``;
4. squared difference, weighted sum over channels by a 1x1 conv without bias
   (``lin{k}.model.1.weight``, shape (1, C_k, 1, 1), as in the lpips package's
   ``weights/v0.1/{vgg,alex}.pth``);
5. spatial mean, sum over the 5 layers -> one distance per image, shape (B,).

The trunk and heads are frozen (eval mode, ``requires_grad=False``); gradients still
flow to the inputs, so the module can be used as a loss.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .alexnet import ALEXNET_LPIPS_CHANNELS, AlexNet
from .vgg import VGG16, VGG16_LPIPS_CHANNELS
from flowmo.nets.weight_specs import WEIGHT_SPECS
from flowmo.nets.frozen import Freezable, freeze
from flowmo.nets.weight_io import apply_state_dict, read_state_dict
from flowmo.nets.weights import resolve_weights

__all__ = ["LPIPS", "LinHead", "lpips_vgg", "lpips_alex", "LPIPS_SHIFT", "LPIPS_SCALE"]

LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10

_TRUNKS = {
    "vgg": (VGG16, VGG16_LPIPS_CHANNELS, "vgg16", "lpips_vgg_heads"),
    "alex": (AlexNet, ALEXNET_LPIPS_CHANNELS, "alexnet", "lpips_alex_heads"),
}


class LinHead(nn.Module):
    """``model.1`` is a 1x1 conv C -> 1 without bias (``model.0`` is the lpips dropout
    slot; it has no parameters and is an identity here because the heads are fixed)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _unit_normalise(f: torch.Tensor) -> torch.Tensor:
    return f / (torch.sqrt(torch.sum(f * f, dim=1, keepdim=True)) + _EPS)


class LPIPS(Freezable):
    """LPIPS distance; ``forward(x, y)`` returns shape (B,).

    ``net`` is ``"vgg"`` or ``"alex"``. Random heads (``pretrained=False`` in the
    constructors) are initialised non-negative, like trained v0.1 heads, so the
    distance stays >= 0.
    """

    def __init__(self, net: str = "vgg") -> None:
        super().__init__()
        if net not in _TRUNKS:
            raise ValueError(f"net must be one of {sorted(_TRUNKS)}, got {net!r}")
        trunk_cls, channels, _, _ = _TRUNKS[net]
        self.net_name = net
        self.channels = tuple(channels)
        self.net = trunk_cls(include_classifier=False)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        for k, c in enumerate(self.channels):
            self.add_module(f"lin{k}", LinHead(c))
        self.reset_heads()

    def heads(self) -> nn.ModuleDict:
        """The 5 heads as a ModuleDict whose state dict has the lpips file's keys
        (``lin0.model.1.weight`` ... ``lin4.model.1.weight``); shares parameters."""
        return nn.ModuleDict({f"lin{k}": getattr(self, f"lin{k}") for k in range(len(self.channels))})

    def reset_heads(self) -> None:
        with torch.no_grad():
            for k, c in enumerate(self.channels):
                w = getattr(self, f"lin{k}").model[1].weight
                w.uniform_(0.5, 1.5).div_(c)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift.to(x.dtype)) / self.scale.to(x.dtype)
        return self.net.lpips_features(x)

    def forward(self, x: torch.Tensor, y: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Distance per image, shape (B,), in the inputs' dtype. ``x, y``: float
        (B, 3, H, W) in [-1, 1]; ``normalize=True`` takes [0, 1] (mapped by ``2 * x - 1``)."""
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise TypeError(f"x and y must be torch.Tensors, got {type(x).__name__} and {type(y).__name__}")
        if x.shape != y.shape:
            raise ValueError(f"inputs must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        if normalize:
            x, y = 2 * x - 1, 2 * y - 1
        out_dtype = x.dtype
        fx, fy = self.features(x), self.features(y)
        total = None
        for k, (a, b) in enumerate(zip(fx, fy)):
            # low-precision features can overflow in sum(f^2); do the distance in fp32
            if a.dtype in (torch.float16, torch.bfloat16):
                a, b = a.float(), b.float()
            d = (_unit_normalise(a) - _unit_normalise(b)) ** 2
            head = getattr(self, f"lin{k}").model[1]
            d = nn.functional.conv2d(d, head.weight.to(d.dtype))
            d = d.mean(dim=(2, 3)).flatten()
            total = d if total is None else total + d
        assert total is not None
        return total.to(out_dtype)


def _build(
    net: str,
    weights_path: str | os.PathLike | None,
    trunk_weights_path: str | os.PathLike | None,
    pretrained: bool,
    frozen: bool,
) -> LPIPS:
    _, _, trunk_key, heads_key = _TRUNKS[net]
    if not pretrained:
        if weights_path is not None or trunk_weights_path is not None:
            raise ValueError("weights paths were given with pretrained=False; drop one of them")
        model = LPIPS(net)
    else:
        if trunk_weights_path is None and weights_path is not None and Path(weights_path).is_dir():
            trunk_weights_path = weights_path  # one folder holding both files
        # find and read both files before building anything: missing/bad files fail fast
        trunk_path = resolve_weights(trunk_key, trunk_weights_path)
        heads_path = resolve_weights(heads_key, weights_path)
        trunk_sd = read_state_dict(trunk_path)
        heads_sd = read_state_dict(heads_path)
        model = LPIPS(net)
        apply_state_dict(
            model.net, trunk_sd, source=str(trunk_path), ignore_prefixes=("classifier.",),
            what=WEIGHT_SPECS[trunk_key].description,
        )
        apply_state_dict(model.heads(), heads_sd, source=str(heads_path), what=WEIGHT_SPECS[heads_key].description)
    if frozen:
        freeze(model)
    return model


def lpips_vgg(
    weights_path: str | os.PathLike | None = None,
    trunk_weights_path: str | os.PathLike | None = None,
    pretrained: bool = True,
    *,
    frozen: bool = True,
) -> LPIPS:
    """LPIPS-VGG. Needs ``vgg.pth`` (heads; ``weights_path``) and ``vgg16-397923af.pth``
    (trunk, only ``features.*`` is used; ``trunk_weights_path``). A folder given as
    ``weights_path`` is also searched for the trunk. ``pretrained=False``: random trunk
    and heads, explicitly."""
    return _build("vgg", weights_path, trunk_weights_path, pretrained, frozen)


def lpips_alex(
    weights_path: str | os.PathLike | None = None,
    trunk_weights_path: str | os.PathLike | None = None,
    pretrained: bool = True,
    *,
    frozen: bool = True,
) -> LPIPS:
    """LPIPS-AlexNet. Needs ``alex.pth`` (heads) and ``alexnet-owt-7be5be79.pth`` (trunk,
    only ``features.*`` is used). Arguments as :func:`lpips_vgg`."""
    return _build("alex", weights_path, trunk_weights_path, pretrained, frozen)
