"""ResNet-50 with torchvision's state-dict layout (v1.5: stride on the 3x3 conv).

Keys: ``conv1``, ``bn1``, ``layer1`` .. ``layer4`` (3, 4, 6, 3 Bottleneck blocks with
``conv1/bn1`` 1x1, ``conv2/bn2`` 3x3 (carries the stride), ``conv3/bn3`` 1x1 (x4
channels) and, in the first block of each stage, ``downsample.0`` (1x1 conv) /
``downsample.1`` (BN)), ``fc`` (2048 -> 1000). Inputs are ImageNet-normalised images;
:meth:`ResNet50.forward` returns the 1000 logits.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from flowmo.nets.frozen import Freezable
from flowmo.nets.weights import instantiate

__all__ = ["Bottleneck", "ResNet50", "resnet50"]


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=False)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + identity)


class ResNet50(Freezable):
    """ResNet-50; ``forward`` gives logits, :meth:`forward_features` the 2048-d pooled
    features before ``fc``."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=False)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        c = 64
        for i, (width, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)), start=1):
            layer = []
            for b in range(blocks):
                layer.append(Bottleneck(c, width, stride if b == 0 else 1))
                c = width * Bottleneck.expansion
            setattr(self, f"layer{i}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * Bottleneck.expansion, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # a zero-ish last BN per block keeps random deep nets numerically tame
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.constant_(m.bn3.weight, 0.2)
        bound = 1.0 / (self.fc.in_features**0.5)
        nn.init.uniform_(self.fc.weight, -bound, bound)
        nn.init.uniform_(self.fc.bias, -bound, bound)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


def resnet50(
    weights_path: str | os.PathLike | None = None,
    pretrained: bool = True,
    *,
    frozen: bool = True,
) -> ResNet50:
    """ResNet-50 with torchvision ImageNet weights.

    Looks for ``resnet50-0676ba61.pth`` and also accepts ``resnet50-11ad3fa6.pth`` and
    ``resnet50-19c8e357.pth`` (tried in that order in each folder). ``pretrained=False``
    gives an explicitly random network. ``frozen=True`` (default): eval mode (BatchNorm
    uses running statistics, and stays so under ``.train()``), no gradients.
    """
    return instantiate(ResNet50, "resnet50", weights_path, pretrained, frozen=frozen)
