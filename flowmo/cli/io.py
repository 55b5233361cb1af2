"""Input and output helpers shared by the subcommands: image files in and out, models from
folders or released checkpoints, batches (token files: :mod:`flowmo.data.tokens`).

Images are float32 tensors (3, H, W) in [-1, 1]. Input images are decoded fully by
:func:`flowmo.data.images.decode_image` (EXIF orientation applied, transparency composited onto
white, every Pillow mode converted to RGB by documented rules), their short
side resized to the model's image size (bicubic, antialiased when shrinking) and centre
cropped. Output images are written as 8-bit PNGs.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

import torch
from torch import Tensor

from flowmo.data.images import IMAGE_EXTENSIONS as _EXTENSIONS
from flowmo.data.listing import list_folder_images
from flowmo.data.folder_kinds import kind_note
from .errors import CLIError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFile",
    "list_images",
    "output_names",
    "load_image",
    "check_image_header",
    "save_image",
    "resolve_device",
    "load_model",
    "model_from_args",
    "input_images",
    "resize_note",
    "output_folder",
    "batches",
]

PathLike = Union[str, os.PathLike]

IMAGE_EXTENSIONS: tuple[str, ...] = tuple(f".{e}" for e in _EXTENSIONS)  # with the dot, as Path.suffix


# ----------------------------------------------------------------------------- listing
@dataclass(frozen=True)
class ImageFile:
    """An input image: its ``path`` and its ``name`` relative to the input it was found in
    (POSIX separators; a file given directly is named by its file name)."""

    path: Path
    name: str


def list_images(inputs: Union[PathLike, Sequence[PathLike]]) -> list[ImageFile]:
    """The images named by ``inputs`` (files, or folders listed by
    :func:`flowmo.data.listing.list_folder_images`: recursively, following folder links, hidden
    files and folders skipped, one name per file), in order: inputs in the order given, a
    folder's files sorted by relative name, exactly as ``flowmo eval`` and the trainer list a
    folder (so image i is the same file for ``--seed`` everywhere).

    Raises FileNotFoundError for a path that does not exist, ValueError for a folder
    without images, for no inputs, or when two images get the same relative name.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if not inputs:
        raise ValueError("no input images given")
    found: list[ImageFile] = []
    for raw in inputs:
        p = Path(raw).expanduser()
        if p.is_dir():
            # the data layer's one listing: the same files in the same order as flowmo eval reads
            files = [ImageFile(path, rel) for rel, path in list_folder_images(p)[0]]
            if not files:
                raise ValueError(f"no images ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)}) found in folder {str(p)!r}"
                                 f"{kind_note(p)}")
            found.extend(files)
        elif p.is_file():
            found.append(ImageFile(p, p.name))
        elif p.exists():
            raise ValueError(f"{str(p)!r} is neither a file nor a folder")
        else:
            raise FileNotFoundError(f"input {str(p)!r} does not exist")
    output_names([f.name for f in found])  # refuse collisions before any work is done
    return found


def output_names(names: Iterable[str], suffix: str = ".png") -> list[str]:
    """Relative output names: each name with its extension replaced by ``suffix``.

    Raises ValueError when two names map to the same output (e.g. ``a.jpg`` and ``a.png``,
    or equal names from two input folders)."""
    out: list[str] = []
    seen: dict[str, str] = {}
    for n in names:
        p = Path(n)
        if p.is_absolute() or ".." in p.parts:
            raise ValueError(f"image name {n!r} must be a relative path inside the output folder")
        o = p.with_suffix(suffix).as_posix()
        if o in seen:
            raise ValueError(f"images {seen[o]!r} and {n!r} would both be written as {o!r}; rename one of them")
        seen[o] = n
        out.append(o)
    return out


# ----------------------------------------------------------------------------- images
def check_image_header(path: PathLike, size: Optional[int] = None) -> tuple[int, int]:
    """Cheap check that ``path`` looks like an image flowmo can read (header only): a regular
    file (a named pipe, socket, device or folder is refused without reading it), which
    Pillow identifies, within Pillow's decompression-bomb limit, whose pixel mode has an RGB
    conversion under :mod:`flowmo.data.images` and, if ``size`` is given, whose short side can be
    resized to ``size`` within :func:`flowmo.data.image_sizes.pixel_limit` pixels (a float image's range,
    and the pixel data itself, are only checked by :func:`load_image`).

    Returns the stored (width, height) (before any EXIF rotation). Raises ValueError naming
    ``size`` for a bad ``size``, and ValueError naming the file otherwise (``'...' is not a
    readable image (<reason>)``)."""
    from PIL import Image

    from flowmo.data.image_modes import check_convertible
    from flowmo.data.image_sizes import check_size, resized_size
    from flowmo.data.images import open_image_file

    if size is not None:
        check_size(size)
    name = repr(str(path))
    try:
        with open_image_file(path) as fp, Image.open(fp) as im:
            w, h = im.size  # header parsed by open()
            check_convertible(im)
            if size is not None:
                resized_size(w, h, size, name=name)
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for damaged headers
        raise _unreadable(path, e) from None
    return int(w), int(h)


def _reason(e: BaseException) -> str:
    msg = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _unreadable(path: PathLike, e: BaseException) -> ValueError:
    """``'<path>' is not a readable image (<reason>)``: every failure to read one image file,
    whatever the decoder raised (Pillow raises ``OSError``, ``ValueError``, ``SyntaxError``,
    ``TypeError``, ``struct.error``, ``DecompressionBombError``, ... for damaged or hostile
    files; ``MemoryError`` for an image too large for this machine)."""
    return ValueError(f"{str(path)!r} is not a readable image ({_reason(e)})")


def load_image(path: PathLike, size: Optional[int]) -> Tensor:
    """Decode ``path`` with :func:`flowmo.data.images.decode_image` (the library's one decoder:
    every Pillow mode by documented rules, EXIF orientation, transparency over white, 16-bit
    grey at full precision), resize its short side to ``size`` (bicubic, antialiased when
    shrinking), centre crop to ``size`` x ``size``: float32 (3, size, size) in [-1, 1].
    ``size`` None: the image as it is, float32 (3, H, W) (for tiles).

    Raises ValueError naming ``size`` unless it is a positive int with ``size x size`` within
    :func:`flowmo.data.image_sizes.pixel_limit` (9,459 at Pillow's default limit);
    FileNotFoundError if ``path`` does not exist; and ValueError naming the file for anything
    that is not a regular file (a named pipe, ...), cannot be decoded (corrupt, truncated, not
    an image, a decompression bomb), converted to RGB (e.g. float samples outside [0, 1];
    :class:`flowmo.data.images.UnsupportedImageError`) or resized to ``size`` within the pixel limit
    (a very long, thin image)."""
    from flowmo.data.image_sizes import center_crop, check_size, resize_short_side, resized_size
    from flowmo.data.images import decode_image, image_to_tensor

    size = None if size is None else check_size(size)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image {str(path)!r} does not exist")
    try:
        img = decode_image(path)
        if size is None:
            return image_to_tensor(img)
        resized_size(*img.size, size, name=repr(str(path)))  # refused before any pixel is resized
        return image_to_tensor(center_crop(resize_short_side(img, size), size))
    except Exception as e:  # noqa: BLE001 - any failure of this one file
        raise _unreadable(path, e) from None


def save_image(image: Tensor, path: PathLike) -> Path:
    """Write a (3, H, W) image in [-1, 1] (clamped) as an 8-bit PNG, creating parent folders."""
    from PIL import Image

    if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be a (3, H, W) tensor, got {getattr(image, 'shape', type(image))}")
    arr = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.permute(1, 2, 0).numpy()).save(path, format="PNG")
    return path


# ----------------------------------------------------------------------------- devices and models
def resolve_device(name: Any = "auto", *, argument: str = "device", ctx: Any = None) -> torch.device:
    """``auto`` / None, a torch device string, a ``torch.device`` or a CUDA index, by the one
    device rule of :func:`flowmo.devices.resolve_device` (``auto``: ``cuda:LOCAL_RANK``, else MPS
    in a single process, else the CPU); ValueError naming ``argument`` if the device is
    malformed, of another type, or not available here. ``ctx``: the process's
    :class:`flowmo.devices.DistContext` (default: from the launcher's environment variables;
    single-process commands pass ``DistContext()`` so those variables are not read)."""
    from flowmo.devices import resolve_device as _resolve

    return _resolve(name, argument, ctx)


def load_model(
    path: PathLike,
    *,
    device: Union[str, torch.device, None] = None,
    code_length: int = 256,
    image_size: int = 256,
    weights: str = "ema",
) -> Any:
    """A FlowMo model (eval mode) from a ``from_pretrained`` folder (or its
    ``model.safetensors`` or ``config.json``: the folder is loaded), a released name
    (``flowmo_lo``, ``flowmo_hi``) or Hub repository id (``user/repo``) as
    :meth:`flowmo.FlowMo.from_pretrained` takes them, or from a released ``.pth``/``.pt`` checkpoint (``weights``:
    ``ema`` or ``raw``; ``code_length`` and ``image_size`` are not stored in those files
    and default to the release's 256).

    Imports :mod:`flowmo.nets` first, so specs naming network distances validate. ``device``
    as for :func:`resolve_device` (without ``auto``); a malformed or unavailable one raises
    ValueError naming it before anything is read. Raises as
    :meth:`flowmo.FlowMo.from_pretrained` for a folder (ValueError naming the module to import
    for a component that is not registered), ValueError naming the kind found for another kind
    of folder or file (a generator folder, a run, a token file, ...), FileNotFoundError for a
    missing path.
    """
    import flowmo.nets  # noqa: F401  registers the network perceptual distances
    from flowmo.devices import check_device
    from flowmo.folders.model_folder import CONFIG_NAME, WEIGHTS_NAME
    from flowmo.model import FlowMo

    if device is not None:
        device = check_device(device, "device")
    from flowmo.data.folder_kinds import folder_kind, path_kind, wrong_kind

    expected = f"a tokenizer model folder ({CONFIG_NAME} + {WEIGHTS_NAME}) or a released .pth checkpoint"
    p = Path(path).expanduser()
    if p.is_file() and p.name in (WEIGHTS_NAME, CONFIG_NAME) and folder_kind(p.parent) == "tokenizer":
        p = p.parent
    if p.is_dir():
        if path_kind(p) not in ("tokenizer", "unknown", "folder", "empty"):  # another kind: say which
            raise wrong_kind(p, "model", expected, "tokenizer")
        model = FlowMo.from_pretrained(p)
    elif p.is_file() and p.suffix.lower() in (".pth", ".pt", ".ckpt", ".bin"):
        from flowmo.folders.convert import load_release_checkpoint

        model = load_release_checkpoint(p, weights=weights, code_length=code_length, image_size=image_size)
    elif p.exists():
        raise wrong_kind(p, "model", expected, "tokenizer")
    else:
        from flowmo.folders.hub import RELEASED, is_repo_id

        if str(path) in RELEASED or is_repo_id(str(path)):
            if weights != "ema":
                raise ValueError(f"weights={weights!r} applies to a released .pth checkpoint file; the name "
                                 f"{str(path)!r} loads a model folder (a released name: its EMA weights)")
            model = FlowMo.from_pretrained(str(path))  # a released name or a Hub repository id
        else:
            raise FileNotFoundError(f"model {str(p)!r} does not exist (give a model folder, a released .pth "
                                    f"checkpoint, a released name ({', '.join(RELEASED)}) or a Hugging Face Hub "
                                    "repository id 'user/repo')")
    if device is not None:
        model.to(device)
    return model.eval()


# ----------------------------------------------------------------------------- the subcommands' shared steps
def model_from_args(args: argparse.Namespace) -> tuple[Any, torch.device]:
    """(model, device) of a command with :func:`flowmo.cli.options.add_model_arguments` and
    ``--device`` (one process: the launcher's variables are not read)."""
    from flowmo.devices import DistContext

    device = resolve_device(args.device, argument="--device", ctx=DistContext())
    model = load_model(args.model, device=device, code_length=args.code_length, image_size=args.image_size)
    return model, device


def require_tokens(model: Any, command: str, argument: str = "--model") -> None:
    """CLIError when ``model`` (given as ``argument``) has a continuous bottleneck (``kl``,
    ``identity``): ``command`` (e.g. ``"flowmo tokenize"``) works on tokens, which it has none
    of. Called right after the model is loaded, before any work."""
    from flowmo.spec import no_tokens_error

    if not model.quantizer.discrete:
        raise CLIError(str(no_tokens_error(model.spec.quantizer.name, command, owner=f"{argument}'s",
                                           fix="use flowmo reconstruct or flowmo eval")))


def input_images(inputs: Sequence[PathLike]) -> tuple[list[ImageFile], list[tuple[int, int]]]:
    """The images of ``inputs`` (:func:`list_images`) and their stored (width, height), each
    header checked (:func:`check_image_header`) before any model work."""
    files = list_images(inputs)
    return files, [check_image_header(f.path) for f in files]


def resize_note(ctx: Any, sizes: Sequence[tuple[int, int]], size: int) -> None:
    """Note once per run (``ctx``: a :class:`flowmo.cli.command.Context`; after the images were
    read, so that a failed run prints only its error) that the inputs of ``sizes`` other than
    ``size`` x ``size`` were resized and centre-cropped."""
    other = sum(1 for wh in sizes if tuple(wh) != (size, size))
    if other:
        ctx.note(f"{other} of {len(sizes)} input image{'s' if len(sizes) != 1 else ''} "
                 f"{'were' if other != 1 else 'was'} not {size}x{size}, the model's image size: each was resized "
                 f"(short side to {size} px, bicubic) and centre-cropped to {size}x{size}")


def output_folder(path: PathLike) -> Path:
    """The folder ``path``, created if missing; CLIError when it exists and is not a folder."""
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise CLIError(f"output {str(out)!r} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def batches(n: int, size: int) -> Iterator[tuple[int, int]]:
    """``(a, b)`` bounds of the batches of ``size`` items of ``range(n)``."""
    for i in range(0, n, size):
        yield i, min(i + size, n)
