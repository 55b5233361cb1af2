"""Finding, safely reading and strictly applying pretrained weight files.

Every network in :mod:`flowmo.nets` gets its weights through :func:`load_weights`,
which

1. resolves the file with :func:`resolve_weights`, searching in order
   (a) the explicit ``weights_path`` given by the caller (a file, or a folder that
       holds the file under its standard name),
   (b) every folder in ``$FLOWMO_WEIGHTS_DIR`` (``os.pathsep``-separated),
   (c) the torch hub cache ``$TORCH_HOME/hub/checkpoints``
       (default ``~/.cache/torch/hub/checkpoints``; whatever ``torch.hub.get_dir()`` says),
   (d) for the LPIPS heads only: ``weights/v0.1/{vgg,alex}.pth`` inside the installed
       ``lpips`` package, if Python can find that package (it is located, not imported);
2. reads it with ``torch.load(path, map_location="cpu", weights_only=True)`` and nothing
   else, so a pickle that tries to run code is refused instead of executed;
3. checks keys and shapes strictly against the module and raises
   :class:`WeightsFormatError` listing every missing, unexpected and mismatched key.

A file that cannot be found raises :class:`MissingWeightsError` (a ``FileNotFoundError``)
naming the file, every place searched and where to put it. Nothing here downloads
anything and nothing ever falls back to random weights: random weights are only
obtained by asking for them explicitly (``pretrained=False`` in the constructors).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, TypeVar

import torch
from torch import nn

__all__ = [
    "ENV_VAR",
    "hub_checkpoints_dir",
    "MissingWeightsError",
    "WeightsFormatError",
    "WeightSpec",
    "WEIGHT_SPECS",
    "NET_WEIGHTS",
    "required_files",
    "search_locations",
    "resolve_weights",
    "read_state_dict",
    "apply_state_dict",
    "load_weights",
    "instantiate",
    "freeze",
    "Freezable",
]

ENV_VAR = "FLOWMO_WEIGHTS_DIR"

M = TypeVar("M", bound=nn.Module)


class MissingWeightsError(FileNotFoundError):
    """A required weight file is not in any of the searched places."""


class WeightsFormatError(ValueError):
    """A weight file exists but is not an acceptable state dict for the network."""


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


def hub_checkpoints_dir() -> Path:
    """The torch hub cache's ``checkpoints`` folder, where weight files are also looked for."""
    # torch.hub.get_dir() honours torch.hub.set_dir, $TORCH_HOME and $XDG_CACHE_HOME;
    # it only computes a path (no network, no directory creation).
    return Path(torch.hub.get_dir()).expanduser() / "checkpoints"


def _lpips_package_dir() -> Path | None:
    """Folder of the installed ``lpips`` package, located without importing it."""
    try:
        spec = importlib.util.find_spec("lpips")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            return Path(loc)
    if spec.origin:
        return Path(spec.origin).parent
    return None


def search_locations(key: str, weights_path: str | os.PathLike | None = None) -> list[tuple[str, list[Path]]]:
    """The places searched for weight ``key``, in order, as ``(label, candidate files)``.

    A place whose candidate list is empty is reported but holds nothing to try
    (e.g. ``$FLOWMO_WEIGHTS_DIR`` not set).
    """
    spec = _spec(key)
    places: list[tuple[str, list[Path]]] = []
    if weights_path is not None:
        p = Path(weights_path).expanduser()
        if p.is_dir():
            places.append((f"explicit weights_path folder {p}", [p / n for n in spec.names]))
        else:
            places.append((f"explicit weights_path {p}", [p]))
        return places  # an explicit path is authoritative: no silent fallback elsewhere
    env = os.environ.get(ENV_VAR, "")
    env_dirs = [Path(d).expanduser() for d in env.split(os.pathsep) if d.strip()]
    if env_dirs:
        for d in env_dirs:
            places.append((f"${ENV_VAR} folder {d}", [d / n for n in spec.names]))
    else:
        places.append((f"${ENV_VAR} (not set)", []))
    hub = hub_checkpoints_dir()
    places.append((f"torch hub cache {hub}", [hub / n for n in spec.names]))
    if spec.lpips_package_path is not None:
        pkg = _lpips_package_dir()
        if pkg is None:
            places.append(("installed lpips package (not installed)", []))
        else:
            f = pkg.joinpath(*spec.lpips_package_path)
            places.append((f"installed lpips package {pkg}", [f]))
    return places


def resolve_weights(key: str, weights_path: str | os.PathLike | None = None) -> Path:
    """Path of the weight file ``key`` (see module docstring for the search order).

    Raises :class:`MissingWeightsError` naming the file, every place searched and where
    to put it.
    """
    spec = _spec(key)
    places = search_locations(key, weights_path)
    for _label, candidates in places:
        for c in candidates:
            if c.is_file():
                return c
    hub = hub_checkpoints_dir()
    lines = [
        f"Missing weights file {spec.filename!r} ({spec.description}).",
    ]
    if spec.alternatives:
        lines.append(f"Also accepted under the names: {', '.join(spec.alternatives)}.")
    lines.append("Searched:")
    for label, candidates in places:
        if candidates:
            for c in candidates:
                lines.append(f"  - {c}  [{label}]")
        else:
            lines.append(f"  - {label}")
    lines.append(
        f"Fix: download {spec.filename} from {spec.url} and put it in {hub} or in "
        f"${ENV_VAR} (a folder), or pass its path as weights_path=..."
    )
    lines.append("No download is attempted and random weights are never used silently.")
    raise MissingWeightsError("\n".join(lines))


def _reason(e: Exception) -> str:
    """The informative part of a torch.load error (not torch's advice to bypass safety)."""
    for ln in str(e).splitlines():
        if "Unsupported" in ln:
            ln = ln[ln.index("Unsupported"):]
            return ln.split(". Please")[0].strip()
    inner = e.__cause__ or e.__context__
    if inner is not None and str(inner):
        return f"{type(inner).__name__}: {str(inner).splitlines()[0]}"
    first = str(e).splitlines()[0] if str(e) else ""
    if "Weights only load failed" in first:
        first = "weights_only load failed"
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict with ``torch.load(..., map_location="cpu", weights_only=True)``.

    Anything that is not a plain mapping of string keys to tensors is refused with
    :class:`WeightsFormatError`; pickles that reference arbitrary Python objects are
    rejected by the restricted unpickler before anything is executed.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as e:  # any failure of the restricted load means: not acceptable
        raise WeightsFormatError(
            f"Refused to load weight file {path}: it is not a plain tensor state dict that "
            f"torch.load(weights_only=True) accepts ({_reason(e)}). Nothing in it was executed; "
            "get a genuine copy of the file instead of loading it unrestricted."
        ) from e
    if not isinstance(obj, Mapping):
        raise WeightsFormatError(
            f"Refused weight file {path}: expected a state dict (a mapping of names to tensors), "
            f"got {type(obj).__name__}."
        )
    bad = [repr(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        shown = ", ".join(bad[:10]) + (" ..." if len(bad) > 10 else "")
        raise WeightsFormatError(
            f"Refused weight file {path}: every entry must be a string key with a tensor value; "
            f"offending keys: {shown}."
        )
    return dict(obj)


_OPTIONAL_SUFFIX = ".num_batches_tracked"  # absent from old BatchNorm checkpoints


def apply_state_dict(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str = "state dict",
    ignore_prefixes: Iterable[str] = (),
    what: str | None = None,
) -> None:
    """Strictly copy ``state_dict`` into ``module``.

    Every key of ``module.state_dict()`` must be present with the same shape, and no
    other key may be present except those starting with one of ``ignore_prefixes``
    (e.g. a VGG classifier when only the features are used). BatchNorm
    ``num_batches_tracked`` counters may be missing (old checkpoints); they are then
    set to 0. Raises :class:`WeightsFormatError` listing all problems.
    """
    ignore_prefixes = tuple(ignore_prefixes)
    expected = module.state_dict()
    given = {k: v for k, v in state_dict.items() if not (ignore_prefixes and k.startswith(ignore_prefixes))}
    missing = [k for k in expected if k not in given and not k.endswith(_OPTIONAL_SUFFIX)]
    unexpected = [k for k in given if k not in expected]
    mismatched = [
        f"{k}: file {tuple(given[k].shape)} vs network {tuple(expected[k].shape)}"
        for k in expected
        if k in given and tuple(given[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        target = type(module).__name__ + (f" ({what})" if what else "")
        parts = [f"Refused weights from {source}: they do not fit {target}:"]
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
            if items:
                shown = items[:20]
                parts.append(f"  {title} ({len(items)}): " + ", ".join(shown) + (" ..." if len(items) > 20 else ""))
        raise WeightsFormatError("\n".join(parts))
    full = dict(given)
    for k, v in expected.items():
        if k not in full:  # only optional counters can get here
            full[k] = torch.zeros_like(v, device="cpu")
    module.load_state_dict(full, strict=True)


def load_weights(
    module: nn.Module,
    key: str,
    weights_path: str | os.PathLike | None = None,
    *,
    ignore_prefixes: Iterable[str] = (),
) -> Path:
    """Resolve, safely read and strictly apply weight file ``key`` to ``module``.

    Returns the path that was loaded.
    """
    path = resolve_weights(key, weights_path)
    state_dict = read_state_dict(path)
    apply_state_dict(
        module, state_dict, source=str(path), ignore_prefixes=ignore_prefixes, what=_spec(key).description
    )
    return path


def instantiate(
    factory: Callable[[], M],
    key: str,
    weights_path: str | os.PathLike | None = None,
    pretrained: bool = True,
    *,
    frozen: bool = True,
    ignore_prefixes: Iterable[str] = (),
) -> M:
    """Build ``factory()`` with weight file ``key`` (``pretrained=True``) or with its own
    random initialisation (``pretrained=False``, explicit), then :func:`freeze` it if
    ``frozen``.

    With ``pretrained=True`` the file is found and read *before* the network is built,
    so a missing or bad file fails fast, and the network is built on the meta device
    (no wasted random init): the strict check guarantees the file covers every
    parameter and buffer, and ``factory`` must not create non-persistent buffers.
    """
    if pretrained:
        path = resolve_weights(key, weights_path)
        state_dict = read_state_dict(path)
        with torch.device("meta"):
            net = factory()
        net = net.to_empty(device="cpu")
        apply_state_dict(
            net, state_dict, source=str(path), ignore_prefixes=ignore_prefixes, what=_spec(key).description
        )
    else:
        if weights_path is not None:
            raise ValueError("weights_path was given with pretrained=False; drop one of them")
        net = factory()
    if frozen:
        freeze(net)
    return net


class Freezable(nn.Module):
    """Module that, once frozen by :func:`freeze`, stays in eval mode.

    ``.train()`` on a frozen module (or on any parent of it) keeps it in eval mode, so
    BatchNorm statistics and dropout of a fixed feature extractor never change.
    """

    _flowmo_frozen: bool = False

    def train(self, mode: bool = True):  # type: ignore[override]
        return super().train(False if self._flowmo_frozen else mode)


def freeze(module: nn.Module) -> nn.Module:
    """Put ``module`` in eval mode, set ``requires_grad=False`` on all its parameters and
    (for :class:`Freezable` modules) keep it in eval mode from now on. Returns it."""
    for p in module.parameters():
        p.requires_grad_(False)
    for m in module.modules():
        if isinstance(m, Freezable):
            m._flowmo_frozen = True
    module.eval()
    return module


class TappedTrunk(Freezable):
    """Base of the LPIPS trunks (VGG16, AlexNet): torchvision's init, ``forward`` through the
    classifier, and ``lpips_features`` returning the activations after the layers in ``TAPS``."""

    TAPS: tuple[int, ...] = ()
    include_classifier: bool

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.include_classifier:
            raise RuntimeError(f"this {type(self).__name__} was built without its classifier; use lpips_features()")
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))

    def lpips_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The activations after each layer index in ``TAPS`` (in order)."""
        taps = set(self.TAPS)
        out: list[torch.Tensor] = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in taps:
                out.append(x)
                if len(out) == len(self.TAPS):
                    break
        return out
