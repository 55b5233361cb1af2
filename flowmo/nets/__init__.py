"""Vision networks used by the trainer and the evaluator, with torchvision-compatible
state-dict keys: VGG16, AlexNet, ResNet-50, the FID InceptionV3 and LPIPS.

Pretrained weights are never downloaded: see :mod:`flowmo.nets.weights` for where the
files are looked for. ``pretrained=False`` in any constructor gives random weights
explicitly (for tests).

Importing this package registers the perceptual distances ``lpips_vgg``, ``lpips_alex``,
``resnet50_logits`` and ``ssim`` (see :mod:`flowmo.nets.distances`).
"""

from .alexnet import AlexNet, alexnet
from .inception import FIDInceptionV3, inception_fid
from .lpips import LPIPS, lpips_alex, lpips_vgg
from .resnet import ResNet50, resnet50
from .vgg import VGG16, vgg16
from . import distances  # noqa: F401  registers lpips_vgg, lpips_alex, resnet50_logits, ssim
from flowmo.nets.weights import ENV_VAR, MissingWeightsError, load_weights, resolve_weights
from flowmo.nets.weight_io import WeightsFormatError
from flowmo.nets.frozen import freeze
from flowmo.nets.weight_specs import required_files

__all__ = [
    "AlexNet",
    "alexnet",
    "FIDInceptionV3",
    "inception_fid",
    "LPIPS",
    "lpips_alex",
    "lpips_vgg",
    "ResNet50",
    "resnet50",
    "VGG16",
    "vgg16",
    "ENV_VAR",
    "MissingWeightsError",
    "WeightsFormatError",
    "freeze",
    "load_weights",
    "required_files",
    "resolve_weights",
]
