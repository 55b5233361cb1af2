"""Network and structural distances for the perceptual terms, registered in
:data:`flowmo.registry.PERCEPTUAL_DISTANCES` (importing :mod:`flowmo.nets` registers them).

Every distance maps images ``x, y`` of shape (B, 3, H, W) in [-1, 1] to per-sample
distances of shape (B,), is 0 on identical inputs and lets gradients flow to its inputs:

* ``lpips_vgg`` / ``lpips_alex``: LPIPS v0.1 (the release's Stage 1A term is ``lpips_vgg``).
  Needs the trunk file (``vgg16-397923af.pth`` / ``alexnet-owt-7be5be79.pth``) and the
  heads file (``vgg.pth`` / ``alex.pth``).
* ``resnet50_logits``: the release's Stage 1B distance, the mean squared difference of a
  frozen ImageNet ResNet-50's 1000 logits of ``x`` and ``y``. Inputs are mapped from
  [-1, 1] to [0, 1], resized to 224x224 (bilinear, ``align_corners=False``, no
  antialiasing; skipped when ``resize=False`` or the images are already 224x224) and
  normalised with the ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).
  Needs ``resnet50-0676ba61.pth``.
* ``ssim``: 1 - SSIM per image (11x11 Gaussian window, sigma 1.5, population covariances,
  K1 = 0.01, K2 = 0.03, data range 1, on the [0, 1]-scaled images without uint8
  quantisation, map cropped by 5 pixels per border as in scikit-image), differentiable and
  needing no weight files. Images must be at least 11x11.

The network distances are ALWAYS built with pretrained weights, never random ones. Missing
weight files raise :class:`~flowmo.nets.weights.MissingWeightsError` when the distance is
*built* (e.g. by ``build_distance`` or ``model.flow_loss``), naming every missing file and
where to put it, so a trainer can refuse a configuration before it starts training.
File locations: see :mod:`flowmo.nets.weights` (explicit ``weights_path`` in the spec,
``$FLOWMO_WEIGHTS_DIR``, the torch hub cache).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import PERCEPTUAL_DISTANCES
from ..spec import PerceptualSpec
from .lpips import lpips_alex, lpips_vgg
from .resnet import resnet50
from .weights import WEIGHT_SPECS, MissingWeightsError, resolve_weights

__all__ = [
    "LPIPSVGGSpec",
    "LPIPSAlexSpec",
    "ResNet50LogitsSpec",
    "SSIMSpec",
    "LPIPSDistance",
    "ResNet50LogitsDistance",
    "SSIMDistance",
    "ssim_map_torch",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------- specs
class _LPIPSSpecBase(PerceptualSpec):
    weights_path: Optional[str] = None
    """The LPIPS heads file (``vgg.pth`` / ``alex.pth``) or a folder holding it (and, unless
    ``trunk_weights_path`` is given, the trunk file too)."""
    trunk_weights_path: Optional[str] = None
    """The trunk file (``vgg16-397923af.pth`` / ``alexnet-owt-7be5be79.pth``) or its folder."""


class LPIPSVGGSpec(_LPIPSSpecBase):
    """LPIPS with the VGG16 trunk (the release's Stage 1A perceptual term)."""

    name: Literal["lpips_vgg"] = "lpips_vgg"


class LPIPSAlexSpec(_LPIPSSpecBase):
    """LPIPS with the AlexNet trunk."""

    name: Literal["lpips_alex"] = "lpips_alex"


class ResNet50LogitsSpec(PerceptualSpec):
    """MSE between a frozen ImageNet ResNet-50's logits (the release's Stage 1B distance)."""

    name: Literal["resnet50_logits"] = "resnet50_logits"
    weights_path: Optional[str] = None
    """``resnet50-0676ba61.pth`` (or an accepted alternative) or a folder holding it."""
    resize: bool = True
    """Resize inputs to 224x224 (bilinear) before the network, as the release does."""


class SSIMSpec(PerceptualSpec):
    """1 - SSIM (Gaussian window, data range 1); needs no weight files."""

    name: Literal["ssim"] = "ssim"


# ----------------------------------------------------------------------------- helpers
def _require_files(distance: str, wanted: Sequence[tuple[str, Optional[str]]], fields: str) -> None:
    """Resolve every ``(weight key, explicit path)``; raise one MissingWeightsError naming
    every missing file (with each file's search report) if any is absent. ``fields`` names
    the spec fields that take explicit paths."""
    missing: list[tuple[str, MissingWeightsError]] = []
    for key, path in wanted:
        try:
            resolve_weights(key, path)
        except MissingWeightsError as e:
            missing.append((key, e))
    if not missing:
        return
    names = ", ".join(WEIGHT_SPECS[k].filename for k, _ in missing)
    head = (
        f"perceptual distance {distance!r} cannot be built: missing weight "
        f"file{'s' if len(missing) > 1 else ''} {names}. Put {'them' if len(missing) > 1 else 'it'} in "
        f"$FLOWMO_WEIGHTS_DIR or the torch hub cache, or give {fields} in the perceptual spec."
    )
    raise MissingWeightsError("\n\n".join([head, *(str(e) for _, e in missing)]))


def _check_pair(x: Tensor, y: Tensor) -> None:
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError("x and y must be torch.Tensors")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")


def _param_dtype(module: nn.Module) -> torch.dtype:
    for p in module.parameters():
        return p.dtype
    return torch.float32


# ----------------------------------------------------------------------------- LPIPS
class LPIPSDistance(nn.Module):
    """LPIPS as a registered distance: ``forward(x, y)`` -> (B,), inputs in [-1, 1].

    Inputs are cast to the network's parameter dtype (under autocast the convolutions
    still run in the autocast dtype); the result is float32.
    """

    def __init__(self, spec: _LPIPSSpecBase):
        super().__init__()
        self.spec = spec
        net = "vgg" if spec.name == "lpips_vgg" else "alex"
        trunk_key, heads_key = ("vgg16", "lpips_vgg_heads") if net == "vgg" else ("alexnet", "lpips_alex_heads")
        trunk_path = spec.trunk_weights_path
        if trunk_path is None and spec.weights_path is not None and Path(spec.weights_path).expanduser().is_dir():
            trunk_path = spec.weights_path  # one folder holding both files (as lpips_vgg does)
        _require_files(spec.name, [(trunk_key, trunk_path), (heads_key, spec.weights_path)],
                       "weights_path (heads file or folder) / trunk_weights_path")
        factory = lpips_vgg if net == "vgg" else lpips_alex
        self.lpips = factory(weights_path=spec.weights_path, trunk_weights_path=spec.trunk_weights_path,
                             pretrained=True)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        _check_pair(x, y)
        dt = _param_dtype(self.lpips)
        return self.lpips(x.to(dt), y.to(dt)).float()


PERCEPTUAL_DISTANCES.add("lpips_vgg", LPIPSDistance, spec=LPIPSVGGSpec)
PERCEPTUAL_DISTANCES.add("lpips_alex", LPIPSDistance, spec=LPIPSAlexSpec)


# ----------------------------------------------------------------------------- ResNet-50 logits
@PERCEPTUAL_DISTANCES.register("resnet50_logits", spec=ResNet50LogitsSpec)
class ResNet50LogitsDistance(nn.Module):
    """Per-sample mean over the 1000 logits of (resnet(x) - resnet(y))^2 (see module docstring)."""

    size = 224

    def __init__(self, spec: ResNet50LogitsSpec):
        super().__init__()
        self.spec = spec
        _require_files(spec.name, [("resnet50", spec.weights_path)], "weights_path")
        self.net = resnet50(weights_path=spec.weights_path, pretrained=True)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, x: Tensor) -> Tensor:
        """[-1, 1] images -> resized (optionally), ImageNet-normalised network inputs."""
        x = (x.to(_param_dtype(self.net)) + 1) / 2
        if self.spec.resize and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=False)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def logits(self, x: Tensor) -> Tensor:
        return self.net(self.preprocess(x))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        _check_pair(x, y)
        b = x.shape[0]
        both = self.logits(torch.cat((x, y), dim=0)).float()  # one pass; BN is frozen (eval)
        return (both[:b] - both[b:]).pow(2).mean(dim=1)


# ----------------------------------------------------------------------------- SSIM
_SSIM_SIGMA = 1.5
_SSIM_TRUNCATE = 3.5  # radius int(3.5 * 1.5 + 0.5) = 5: an 11x11 window
_SSIM_K1, _SSIM_K2 = 0.01, 0.03


def ssim_map_torch(x: Tensor, y: Tensor, *, data_range: float = 1.0) -> Tensor:
    """Per-image SSIM of float images (B, C, H, W) in a range of width ``data_range``,
    differentiable, in the images' dtype (float32 at least). Gaussian window as
    :func:`flowmo.eval.metrics.ssim` (scipy 'reflect' borders, 5-pixel crop), without
    quantisation. Returns (B,)."""
    from ..eval.metrics import _gaussian_filter_reflect, _gaussian_kernel_1d

    if x.dtype in (torch.float16, torch.bfloat16):
        x, y = x.float(), y.float()
    b, c, h, w = x.shape
    kernel = _gaussian_kernel_1d(_SSIM_SIGMA, _SSIM_TRUNCATE, device=x.device, dtype=x.dtype)
    win = kernel.numel()
    if h < win or w < win:
        raise ValueError(f"SSIM needs images of at least {win}x{win} pixels, got {h}x{w}")
    stats = torch.stack([x, y, x * x, y * y, x * y], dim=1)
    filtered = _gaussian_filter_reflect(stats.reshape(-1, 1, h, w), kernel)
    ux, uy, uxx, uyy, uxy = filtered.reshape(b, 5, c, h, w).unbind(dim=1)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1, c2 = (_SSIM_K1 * data_range) ** 2, (_SSIM_K2 * data_range) ** 2
    smap = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    return smap[..., pad : h - pad, pad : w - pad].mean(dim=(-2, -1)).mean(dim=1)


@PERCEPTUAL_DISTANCES.register("ssim", spec=SSIMSpec)
class SSIMDistance(nn.Module):
    """1 - SSIM per image on the [0, 1]-scaled images (data range 1); float32 result."""

    def __init__(self, spec: Optional[SSIMSpec] = None):
        super().__init__()
        self.spec = spec if spec is not None else SSIMSpec()

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        _check_pair(x, y)
        return (1.0 - ssim_map_torch((x + 1) / 2, (y + 1) / 2, data_range=1.0)).float()
