"""VGG16 with torchvision's state-dict layout, plus the LPIPS feature taps.

Layout (``features`` indices; ``R`` = ReLU, ``M`` = 2x2 max pool)::

    0 conv 3-64    1 R   2 conv 64-64    3 R (relu1_2)  4 M
    5 conv 64-128  6 R   7 conv 128-128  8 R (relu2_2)  9 M
    10 conv 128-256 11 R 12 conv 256-256 13 R 14 conv 256-256 15 R (relu3_3) 16 M
    17 conv 256-512 18 R 19 conv 512-512 20 R 21 conv 512-512 22 R (relu4_3) 23 M
    24 conv 512-512 25 R 26 conv 512-512 27 R 28 conv 512-512 29 R (relu5_3) 30 M

then ``avgpool`` (adaptive 7x7) and ``classifier``: 0 Linear(25088, 4096), 1 ReLU,
2 Dropout, 3 Linear(4096, 4096), 4 ReLU, 5 Dropout, 6 Linear(4096, 1000). A full
torchvision ``vgg16-397923af.pth`` loads with strict key/shape checks.

Inputs of :meth:`VGG16.forward` are ImageNet-normalised images (torchvision
convention); :meth:`VGG16.lpips_features` takes whatever the caller feeds (LPIPS feeds
its own scaled inputs).
"""

from __future__ import annotations

import os

from torch import nn

from flowmo.nets.frozen import TappedTrunk
from flowmo.nets.weights import instantiate

__all__ = ["VGG16", "VGG16_CFG", "VGG16_LPIPS_TAPS", "VGG16_LPIPS_CHANNELS", "vgg16"]

# conv output channels, "M" = max pool (torchvision configuration "D")
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
# indices in ``features`` of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
VGG16_LPIPS_TAPS = (3, 8, 15, 22, 29)
VGG16_LPIPS_CHANNELS = (64, 128, 256, 512, 512)


def _make_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    c_in = 3
    for v in VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers.append(nn.Conv2d(c_in, int(v), kernel_size=3, padding=1))
            # not in-place: the LPIPS taps hand these activations out
            layers.append(nn.ReLU(inplace=False))
            c_in = int(v)
    return nn.Sequential(*layers)


class VGG16(TappedTrunk):
    """VGG16 (no batch norm). ``include_classifier=False`` builds only ``features``
    (enough for LPIPS; the classifier keys of a full file are then ignored on load)."""

    TAPS = VGG16_LPIPS_TAPS

    def __init__(self, num_classes: int = 1000, include_classifier: bool = True) -> None:
        super().__init__()
        self.include_classifier = include_classifier
        self.features = _make_features()
        if include_classifier:
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(512 * 7 * 7, 4096),
                nn.ReLU(inplace=False),
                nn.Dropout(p=0.5),
                nn.Linear(4096, 4096),
                nn.ReLU(inplace=False),
                nn.Dropout(p=0.5),
                nn.Linear(4096, num_classes),
            )
        self.reset_parameters()



def vgg16(
    weights_path: str | os.PathLike | None = None,
    pretrained: bool = True,
    *,
    include_classifier: bool = True,
    frozen: bool = True,
) -> VGG16:
    """VGG16 with torchvision ImageNet weights (``vgg16-397923af.pth``).

    ``pretrained=True`` finds the file (see :mod:`flowmo.nets.weights`) or raises
    :class:`~flowmo.nets.weights.MissingWeightsError`; ``pretrained=False`` gives an
    explicitly random network. ``frozen=True`` (default) returns it in eval mode with
    ``requires_grad=False``.
    """
    return instantiate(
        lambda: VGG16(include_classifier=include_classifier),
        "vgg16",
        weights_path,
        pretrained,
        frozen=frozen,
        ignore_prefixes=() if include_classifier else ("classifier.",),
    )
