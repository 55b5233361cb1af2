"""Which pretrained weight files the networks of :mod:`flowmo.nets` need: one :class:`WeightSpec`
per file (standard name, accepted alternatives, download address, where the ``lpips`` package
ships it) in :data:`WEIGHT_SPECS`, and each network's files in :data:`NET_WEIGHTS`. Where the
files are looked for: :mod:`flowmo.nets.weights`."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["WeightSpec", "WEIGHT_SPECS", "NET_WEIGHTS", "required_files"]


@dataclass(frozen=True)
class WeightSpec:
    """One weight file a network needs.

    ``filename`` is the standard name; ``alternatives`` are other accepted names (tried
    after ``filename``, in order); ``lpips_package_path`` is the path of the file inside
    the ``lpips`` package, when that package ships it.
    """

    key: str
    filename: str
    url: str
    description: str
    alternatives: tuple[str, ...] = ()
    lpips_package_path: tuple[str, ...] | None = None
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", (self.filename, *self.alternatives))


_LPIPS_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/{}.pth"

WEIGHT_SPECS: dict[str, WeightSpec] = {
    s.key: s
    for s in (
        WeightSpec(
            "vgg16",
            "vgg16-397923af.pth",
            "https://download.pytorch.org/models/vgg16-397923af.pth",
            "torchvision VGG16 ImageNet weights (IMAGENET1K_V1)",
        ),
        WeightSpec(
            "alexnet",
            "alexnet-owt-7be5be79.pth",
            "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            "torchvision AlexNet ImageNet weights (IMAGENET1K_V1)",
        ),
        WeightSpec(
            "resnet50",
            "resnet50-0676ba61.pth",
            "https://download.pytorch.org/models/resnet50-0676ba61.pth",
            "torchvision ResNet-50 ImageNet weights (0676ba61 = IMAGENET1K_V1, "
            "11ad3fa6 = IMAGENET1K_V2, 19c8e357 = the pre-0.13 copy of V1)",
            alternatives=("resnet50-11ad3fa6.pth", "resnet50-19c8e357.pth"),
        ),
        WeightSpec(
            "inception_fid",
            "pt_inception-2015-12-05-6726825d.pth",
            "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
            "pt_inception-2015-12-05-6726825d.pth",
            "FID InceptionV3 weights (pytorch-fid port of the TF 2015-12-05 graph)",
        ),
        WeightSpec(
            "lpips_vgg_heads",
            "vgg.pth",
            _LPIPS_URL.format("vgg"),
            "LPIPS v0.1 linear heads for the VGG trunk",
            lpips_package_path=("weights", "v0.1", "vgg.pth"),
        ),
        WeightSpec(
            "lpips_alex_heads",
            "alex.pth",
            _LPIPS_URL.format("alex"),
            "LPIPS v0.1 linear heads for the AlexNet trunk",
            lpips_package_path=("weights", "v0.1", "alex.pth"),
        ),
    )
}

# network name -> the weight specs it needs (in the order the constructors load them)
NET_WEIGHTS: dict[str, tuple[str, ...]] = {
    "vgg16": ("vgg16",),
    "alexnet": ("alexnet",),
    "resnet50": ("resnet50",),
    "inception_fid": ("inception_fid",),
    "lpips_vgg": ("vgg16", "lpips_vgg_heads"),
    "lpips_alex": ("alexnet", "lpips_alex_heads"),
}


def _spec(key: str) -> WeightSpec:
    try:
        return WEIGHT_SPECS[key]
    except KeyError:
        raise KeyError(f"unknown weight file key {key!r}; known: {sorted(WEIGHT_SPECS)}") from None


def required_files(name: str) -> list[str]:
    """Standard file names a network (``vgg16``, ``alexnet``, ``resnet50``,
    ``inception_fid``, ``lpips_vgg``, ``lpips_alex``) or a single weight key needs."""
    if name in NET_WEIGHTS:
        return [WEIGHT_SPECS[k].filename for k in NET_WEIGHTS[name]]
    if name in WEIGHT_SPECS:
        return [WEIGHT_SPECS[name].filename]
    raise KeyError(f"unknown network {name!r}; known: {sorted(NET_WEIGHTS)}")
