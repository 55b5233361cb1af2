"""InceptionV3 as used for FID: the pytorch-fid port of the TF 2015-12-05 graph.

Weights: ``pt_inception-2015-12-05-6726825d.pth``. Its keys follow torchvision's
InceptionV3 names (``Conv2d_1a_3x3`` ... ``Mixed_7c``, ``fc`` with 1008 classes, no
``AuxLogits``). Every ``BasicConv2d`` is a conv without bias + BatchNorm(eps=0.001) +
ReLU. The blocks are the FID variants of the TF graph:

* ``Mixed_5b/5c/5d`` (A) and ``Mixed_6b..6e`` (C): the 3x3 average pool of the pool
  branch excludes padding (``count_include_pad=False``);
* ``Mixed_7b`` (E_1): same, average pool with ``count_include_pad=False``;
* ``Mixed_7c`` (E_2): the pool branch uses a 3x3 *max* pool (stride 1, pad 1).

Preprocessing (as the standard FID feature extractor, pytorch-fid ``InceptionV3`` with
``resize_input=True`` and ``normalize_input=True``, whose forward resizes [0, 1] images
to 299x299 and then maps them to [-1, 1] by ``2 * x - 1``):

* input: float RGB images, shape (B, 3, H, W), values in **[-1, 1]**
  (i.e. ``2 * img01 - 1``; pass ``input_range="01"`` to give [0, 1] images instead,
  mapped by ``2 * x - 1`` here);
* resize to exactly 299x299 with ``F.interpolate(mode="bilinear", align_corners=False,
  antialias=False)`` (plain bilinear, NO antialiasing: pytorch-fid's resize; source
  coordinate ``(i + 0.5) * H / 299 - 0.5`` clamped at 0, the two nearest pixels, edge
  replicated), whatever H, W are, aspect ratio not kept; a 299x299 input is unchanged.
  The order (pytorch-fid resizes, then rescales) does not matter: bilinear weights sum
  to 1, so resizing commutes with ``2 * x - 1`` up to float rounding;
* no ImageNet mean/std normalisation, no crop;
* output: the 2048-d pool3 features (adaptive average pool to 1x1 after ``Mixed_7c``),
  shape (B, 2048). ``fc`` is kept only so the weight file loads strictly.

This is NOT clean-fid's resize (antialiased PIL bicubic); numbers from the two differ.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from flowmo.nets.frozen import Freezable
from flowmo.nets.weights import instantiate

__all__ = [
    "BasicConv2d",
    "FIDInceptionA",
    "InceptionB",
    "FIDInceptionC",
    "InceptionD",
    "FIDInceptionE1",
    "FIDInceptionE2",
    "FIDInceptionV3",
    "inception_fid",
]


class BasicConv2d(nn.Module):
    def __init__(self, c_in: int, c_out: int, **conv_kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, bias=False, **conv_kwargs)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_3x3(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """Output channels: 64 + 64 + 96 + pool_features."""

    def __init__(self, c_in: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(c_in, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(c_in, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17. Output channels: 384 + 96 + c_in."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(c_in, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)


class FIDInceptionC(nn.Module):
    """Factorised 7x7 block. Output channels: 4 * 192 = 768."""

    def __init__(self, c_in: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(c_in, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(c_in, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(c_in, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(c_in, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        bd = self.branch7x7dbl_3(self.branch7x7dbl_2(bd))
        bd = self.branch7x7dbl_5(self.branch7x7dbl_4(bd))
        bp = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8. Output channels: 320 + 192 + c_in."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(c_in, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(c_in, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(b7)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class _InceptionE(nn.Module):
    """Expanded filter bank block. Output channels: 320 + 768 + 768 + 192 = 2048."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(c_in, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(c_in, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(c_in, 192, kernel_size=1)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        bp = self.branch_pool(self._pool(x))
        return torch.cat([b1, b3, bd, bp], 1)


class FIDInceptionE1(_InceptionE):
    """``Mixed_7b``: average pool (padding excluded) in the pool branch."""

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return _avg_pool_3x3(x)


class FIDInceptionE2(_InceptionE):
    """``Mixed_7c``: max pool in the pool branch (as in the TF FID graph)."""

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class FIDInceptionV3(Freezable):
    """FID InceptionV3 returning 2048-d pool3 features; see the module docstring for the
    exact preprocessing. ``input_range`` is ``"-11"`` (default, inputs in [-1, 1]) or
    ``"01"`` (inputs in [0, 1], mapped to [-1, 1] by ``2x - 1``)."""

    INPUT_SIZE = 299

    def __init__(self, num_classes: int = 1008, input_range: str = "-11") -> None:
        super().__init__()
        if input_range not in ("-11", "01"):
            raise ValueError(f"input_range must be '-11' or '01', got {input_range!r}")
        self.input_range = input_range
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE1(1280)
        self.Mixed_7c = FIDInceptionE2(2048)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(2048, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Network input from images: float (B, 3, H, W) in [-1, 1] (or [0, 1] with
        ``input_range="01"``, mapped by ``2 * x - 1``) -> (B, 3, 299, 299) in [-1, 1], same
        dtype, resized by plain bilinear interpolation (``align_corners=False``, no
        antialiasing) as pytorch-fid's ``InceptionV3`` (see the module docstring)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"x must have shape (B, 3, H, W), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
        if self.input_range == "01":
            x = 2 * x - 1
        s = self.INPUT_SIZE
        return F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(x)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.maxpool1(x)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = self.maxpool2(x)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c",
                     "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)
        return torch.flatten(self.avgpool(x), 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The 1008-way logits of the TF graph (rarely needed; FID uses :meth:`forward`)."""
        return self.fc(self.forward(x))


def inception_fid(
    weights_path: str | os.PathLike | None = None,
    pretrained: bool = True,
    *,
    input_range: str = "-11",
    frozen: bool = True,
) -> FIDInceptionV3:
    """FID InceptionV3 (``pt_inception-2015-12-05-6726825d.pth``); outputs (B, 2048).

    ``pretrained=True`` finds the file or raises
    :class:`~flowmo.nets.weights.MissingWeightsError`; ``pretrained=False`` gives an
    explicitly random network. ``frozen=True`` (default): eval mode, no gradients.
    """
    return instantiate(
        lambda: FIDInceptionV3(input_range=input_range), "inception_fid", weights_path, pretrained, frozen=frozen
    )
