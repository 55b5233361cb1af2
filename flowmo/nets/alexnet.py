"""AlexNet with torchvision's state-dict layout, plus the LPIPS feature taps.

Layout (``features`` indices)::

    0 conv 3-64 k11 s4 p2   1 ReLU (tap 1)  2 max pool 3/2
    3 conv 64-192 k5 p2     4 ReLU (tap 2)  5 max pool 3/2
    6 conv 192-384 k3 p1    7 ReLU (tap 3)
    8 conv 384-256 k3 p1    9 ReLU (tap 4)
    10 conv 256-256 k3 p1   11 ReLU (tap 5) 12 max pool 3/2

then ``avgpool`` (adaptive 6x6) and ``classifier``: 0 Dropout, 1 Linear(9216, 4096),
2 ReLU, 3 Dropout, 4 Linear(4096, 4096), 5 ReLU, 6 Linear(4096, 1000). A torchvision
``alexnet-owt-7be5be79.pth`` loads with strict key/shape checks.
"""

from __future__ import annotations

import os

from torch import nn

from flowmo.nets.frozen import TappedTrunk
from flowmo.nets.weights import instantiate

__all__ = ["AlexNet", "ALEXNET_LPIPS_TAPS", "ALEXNET_LPIPS_CHANNELS", "alexnet"]

ALEXNET_LPIPS_TAPS = (1, 4, 7, 9, 11)
ALEXNET_LPIPS_CHANNELS = (64, 192, 384, 256, 256)


class AlexNet(TappedTrunk):
    """AlexNet (torchvision "one weird trick" variant). ``include_classifier=False``
    builds only ``features`` (enough for LPIPS)."""

    TAPS = ALEXNET_LPIPS_TAPS

    def __init__(self, num_classes: int = 1000, include_classifier: bool = True) -> None:
        super().__init__()
        self.include_classifier = include_classifier
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=False),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=False),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=False),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=False),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=False),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        if include_classifier:
            self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
            self.classifier = nn.Sequential(
                nn.Dropout(p=0.5),
                nn.Linear(256 * 6 * 6, 4096),
                nn.ReLU(inplace=False),
                nn.Dropout(p=0.5),
                nn.Linear(4096, 4096),
                nn.ReLU(inplace=False),
                nn.Linear(4096, num_classes),
            )
        self.reset_parameters()



def alexnet(
    weights_path: str | os.PathLike | None = None,
    pretrained: bool = True,
    *,
    include_classifier: bool = True,
    frozen: bool = True,
) -> AlexNet:
    """AlexNet with torchvision ImageNet weights (``alexnet-owt-7be5be79.pth``).

    ``pretrained=True`` finds the file or raises
    :class:`~flowmo.nets.weights.MissingWeightsError`; ``pretrained=False`` gives an
    explicitly random network. ``frozen=True`` (default): eval mode, no gradients.
    """
    return instantiate(
        lambda: AlexNet(include_classifier=include_classifier),
        "alexnet",
        weights_path,
        pretrained,
        frozen=frozen,
        ignore_prefixes=() if include_classifier else ("classifier.",),
    )
