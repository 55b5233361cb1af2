"""Network and structural distances for the perceptual terms, registered in
:data:`flowmo.registry.PERCEPTUAL_DISTANCES` (importing :mod:`flowmo.nets` registers them).

Every distance maps images ``x, y`` of shape (B, 3, H, W) in [-1, 1] to per-sample
distances of shape (B,), is 0 on identical inputs and lets gradients flow to its inputs.
Inputs must be floating-point tensors of one shape on one (real, not meta) device, with
at least one pixel (TypeError / ValueError otherwise). Their values are not checked: a
non-finite input gives a non-finite distance (NaN), never a finite one, so that a
training loop sees a diverged model's loss as non-finite rather than an exception.

* ``lpips_vgg`` / ``lpips_alex``: LPIPS v0.1 (the release's Stage 1A term is ``lpips_vgg``).
  Needs the trunk file (``vgg16-397923af.pth`` / ``alexnet-owt-7be5be79.pth``) and the
  heads file (``vgg.pth`` / ``alex.pth``).
* ``resnet50_logits``: the release's Stage 1B distance, the mean squared difference of a
  frozen ImageNet ResNet-50's 1000 logits of ``x`` and ``y``. Inputs are mapped from
  [-1, 1] to [0, 1], resized to exactly 224x224 with ANTIALIASED bilinear resampling
  (``F.interpolate(mode="bilinear", align_corners=False, antialias=True)``, the
  resampling of the release's perceptual loss and of torchvision's tensor ``Resize``;
  skipped when ``resize=False`` or the images are already 224x224, where it is the
  identity) and normalised with torchvision's ImageNet mean (0.485, 0.456, 0.406) and
  std (0.229, 0.224, 0.225). See :meth:`ResNet50LogitsDistance.preprocess`.
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

from ..losses.perceptual import PerceptualDistance
from ..registry import PERCEPTUAL_DISTANCES
from ..spec import PerceptualSpec, SpecBool
from .lpips import lpips_alex, lpips_vgg
from .resnet import resnet50
from flowmo.nets.weight_specs import WEIGHT_SPECS
from flowmo.nets.weights import MissingWeightsError, resolve_weights

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
    resize: SpecBool = True
    """True (default, the release): resize inputs to exactly 224x224 before the network
    (how: ``antialias``); images already 224x224 are passed unchanged. False: the network
    sees the images at their own size (NOT what the release does)."""
    antialias: SpecBool = True
    """With ``resize``: True (default) resamples with antialiased bilinear interpolation
    (``F.interpolate(..., mode="bilinear", align_corners=False, antialias=True)``: PIL's
    triangle filter, widened by the factor when shrinking), as the release's perceptual
    loss and torchvision's tensor ``Resize`` do. False: plain bilinear without
    antialiasing, which aliases when shrinking 256 -> 224; that was this library's
    behaviour before the fix of issue 16 and does NOT match the release (on a 256 px
    photo the network inputs differ by up to ~0.4). Only for reproducing runs made with
    that old behaviour. Specs saved before this field existed load with True."""


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
    """Both real floating tensors (B, 3, H, W) of one shape, H, W >= 1, on one real device.

    Values are not checked: a non-finite input gives a non-finite (NaN) distance, never a
    finite one, so that a training loop sees a diverged model's loss as non-finite (the
    trainer counts and skips such steps; an exception here would bypass that).
    """
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError("x and y must be torch.Tensors")
    for name, t in (("x", x), ("y", y)):
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor with values in [-1, 1], got dtype {t.dtype}")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"x and y have no pixels: shape {tuple(x.shape)}")
    for name, t in (("x", x), ("y", y)):
        if t.device.type == "meta":
            raise ValueError(f"{name} is a meta tensor (it has no values)")
    if x.device != y.device:
        raise ValueError(f"x and y must be on one device, got {x.device} and {y.device}")


def _param_dtype(module: nn.Module) -> torch.dtype:
    for p in module.parameters():
        return p.dtype
    return torch.float32


# ----------------------------------------------------------------------------- LPIPS
@PERCEPTUAL_DISTANCES.register("lpips_vgg", spec=LPIPSVGGSpec)
@PERCEPTUAL_DISTANCES.register("lpips_alex", spec=LPIPSAlexSpec)
class LPIPSDistance(PerceptualDistance):
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


# ----------------------------------------------------------------------------- ResNet-50 logits
@PERCEPTUAL_DISTANCES.register("resnet50_logits", spec=ResNet50LogitsSpec)
class ResNet50LogitsDistance(PerceptualDistance):
    """The release's Stage 1B distance: ``forward(x, y)`` -> per-sample mean over the 1000
    logits of ``(resnet(preprocess(x)) - resnet(preprocess(y)))^2``, shape (B,), float32.

    ``x, y``: float tensors of shape (B, 3, H, W) in [-1, 1] (any H, W; FlowMo images are
    square). The release averages the squared logit difference over batch and logits
    (``mse_loss(reduction="mean")``); the mean of this (B,) result is that number.
    """

    size = 224

    def __init__(self, spec: ResNet50LogitsSpec):
        super().__init__()
        self.spec = spec
        _require_files(spec.name, [("resnet50", spec.weights_path)], "weights_path")
        self.net = resnet50(weights_path=spec.weights_path, pretrained=True)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, x: Tensor) -> Tensor:
        """Network inputs from images, as the release's ResNet-50 perceptual loss makes them.

        Args:
            x: float tensor (B, 3, H, W), H, W >= 1, on the network's device, values in
                [-1, 1] (not checked; no clamping). Anything else raises TypeError /
                ValueError naming ``x``.

        Returns:
            (B, 3, 224, 224) (or (B, 3, H, W) with ``spec.resize=False``) in the network's
            parameter dtype, on ``x``'s device: ``((x + 1) / 2 - mean) / std`` after the
            resize, with torchvision's ImageNet mean (0.485, 0.456, 0.406) and std
            (0.229, 0.224, 0.225).

        Steps:

        1. ``(x + 1) / 2`` -> [0, 1];
        2. if ``spec.resize`` and (H, W) != (224, 224): resize to EXACTLY 224x224 with
           ``F.interpolate(mode="bilinear", align_corners=False, antialias=spec.antialias)``.
           ``antialias=True`` (default) is the release's resampling (and torchvision's
           tensor ``Resize`` default): a separable triangle filter whose support is widened
           by the downscale factor, matching PIL's ``Image.resize(..., BILINEAR)`` to float
           rounding; when enlarging it equals plain bilinear. Non-square inputs are
           stretched to 224x224 (aspect ratio NOT kept, no crop); this is our choice: the
           release's resize of non-square images was not checked (its training images are
           square, where every variant agrees). A 224x224 input is passed unchanged (the
           release's resize is the identity there);
        3. ImageNet normalisation per channel.

        Steps 1-3 run in float32 (float64 for a float64 network), then the result is cast
        to the network's parameter dtype: torch has no CPU antialiased resize for
        float16/bfloat16. Differentiable in ``x``.
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"x must have shape (B, 3, H, W), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor with values in [-1, 1], got dtype {x.dtype}")
        if x.shape[2] == 0 or x.shape[3] == 0:
            raise ValueError(f"x must have at least 1x1 pixels, got shape {tuple(x.shape)}")
        if x.device.type == "meta":
            raise ValueError("x is a meta tensor (it has no values)")
        net_device = next(self.net.parameters(), self.mean).device
        if x.device != net_device:
            raise ValueError(f"x is on {x.device} but the network is on {net_device}; move one of them "
                             "(e.g. distance.to(x.device))")
        out_dtype = _param_dtype(self.net)
        work = torch.promote_types(out_dtype, torch.float32)
        x = (x.to(work) + 1) / 2
        if self.spec.resize and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=self.spec.antialias)
        x = (x - self.mean.to(work)) / self.std.to(work)
        return x.to(out_dtype)

    def logits(self, x: Tensor) -> Tensor:
        """The network's 1000 ImageNet logits of ``preprocess(x)``, shape (B, 1000), in the
        network's dtype; ``x`` as :meth:`preprocess`."""
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
    :func:`flowmo.metrics.ssim` (scipy 'reflect' borders, 5-pixel crop), without
    quantisation. Returns (B,)."""
    from ..data.filters import gaussian_filter_reflect, gaussian_kernel_1d

    if x.dtype in (torch.float16, torch.bfloat16):
        x, y = x.float(), y.float()
    b, c, h, w = x.shape
    kernel = gaussian_kernel_1d(_SSIM_SIGMA, _SSIM_TRUNCATE, device=x.device, dtype=x.dtype)
    win = kernel.numel()
    if h < win or w < win:
        raise ValueError(f"SSIM needs images of at least {win}x{win} pixels, got {h}x{w}")
    stats = torch.stack([x, y, x * x, y * y, x * y], dim=1)
    filtered = gaussian_filter_reflect(stats.reshape(-1, 1, h, w), kernel)
    ux, uy, uxx, uyy, uxy = filtered.reshape(b, 5, c, h, w).unbind(dim=1)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1, c2 = (_SSIM_K1 * data_range) ** 2, (_SSIM_K2 * data_range) ** 2
    smap = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    return smap[..., pad : h - pad, pad : w - pad].mean(dim=(-2, -1)).mean(dim=1)


@PERCEPTUAL_DISTANCES.register("ssim", spec=SSIMSpec)
class SSIMDistance(PerceptualDistance):
    """1 - SSIM per image on the [0, 1]-scaled images (data range 1); float32 result.

    SSIM <= 1 by definition, so a negative 1 - SSIM can only be float round-off (seen:
    -3.7e-5 on nearly flat, nearly identical float32 images): it is clamped to 0. The
    clamp zeroes the gradient only where the distance is at round-off level.

    Non-finite inputs give NaN for the images concerned (the clamp keeps NaN), never a
    finite value: a training loop must see a diverged model's loss as non-finite (see
    ``_check_pair``). The result is otherwise always >= 0.
    """

    def __init__(self, spec: Optional[SSIMSpec] = None):
        super().__init__()
        self.spec = spec if spec is not None else SSIMSpec()

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        _check_pair(x, y)
        return (1.0 - ssim_map_torch((x + 1) / 2, (y + 1) / 2, data_range=1.0)).float().clamp_min(0.0)
