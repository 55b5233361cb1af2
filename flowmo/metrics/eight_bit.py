"""The metric protocols' 8-bit conversions: :func:`to_uint8`, :func:`release_originals` and
:func:`quantise_pair` (what ``"standard"`` and ``"release"`` mean by "8 bits"; see the module
docstring of :mod:`flowmo.metrics`)."""

from __future__ import annotations

from typing import Tuple

import torch

from flowmo.metrics.inputs import _check_images, _check_pair, _check_protocol, _compute_device

__all__ = ["to_uint8", "release_originals", "quantise_pair"]


def to_uint8(images: torch.Tensor, protocol: str = "standard") -> torch.Tensor:
    """Convert [-1, 1] float images to 8 bits, as the given protocol does.

    Args:
        images: floating-point tensor of any shape (values outside [-1, 1] are clamped).
        protocol: ``"standard"`` or ``"release"``.

    * ``"standard"``: ``round((x + 1) / 2 * 255)`` clamped to 0..255, in float64
      (round half to even, ``torch.round``).  Float32 inputs made as
      ``u / 127.5 - 1`` from uint8 ``u`` (in float32 or float64) map back to
      exactly ``u``.
    * ``"release"``: the released FlowMo evaluation's conversion
      (``flowmo/evaluate.py``: ``x.clamp(-1, 1)``, ``(x + 1) / 2``, ``* 255.0``,
      ``.to(torch.uint8)``): in float32 (other dtypes are cast to float32 first,
      the release's tensors being float32), each operation rounded to float32,
      then TRUNCATED (the float -> uint8 cast).  E.g. ``(x + 1) / 2 = 0.999``
      gives 254 (standard: 255); float32 ``u / 127.5 - 1`` gives ``u - 1`` for
      some levels ``u``.  This function applies the chain to the given values
      as they are; for originals the release's loader values come first, see
      :func:`release_originals`.

    Returns a ``torch.uint8`` tensor of the input's shape, on the input's device.
    Raises ``ValueError`` for a non-tensor, a non-floating dtype, non-finite values
    or an unknown protocol.
    """
    protocol = _check_protocol(protocol)
    return _to_uint8(_check_images(images, "images", four_d=False), protocol)


def _to_uint8(images: torch.Tensor, protocol: str) -> torch.Tensor:
    """:func:`to_uint8` of finite float ``images`` under a valid ``protocol`` (no checks)."""
    if protocol == "release":
        x = images.to(torch.float32).clamp(-1.0, 1.0)
        v = ((x + 1.0) / 2.0) * 255.0  # three float32 roundings, as the release's tensors
        # the cast truncates toward zero; v is in [0, 255] so that is floor
        return torch.floor(v).clamp_(0.0, 255.0).to(torch.uint8)
    device = _compute_device(images.device)
    x = images.to(device=device, dtype=torch.float64)
    q = torch.round((x + 1.0) * 0.5 * 255.0).clamp_(0.0, 255.0)
    return q.to(torch.uint8).to(images.device)


def release_originals(originals: torch.Tensor) -> torch.Tensor:
    """The float32 values the release's data loader gives for the 8-bit images ``originals`` show.

    ``originals`` (float, any shape, [-1, 1]) are taken to be 8-bit images:
    ``u = round((x + 1) * 127.5)`` clamped to 0..255 (exact for any float made
    from uint8 pixels, whichever way it was computed), then re-expressed as the
    release's loader does (``flowmo/data.py``: ``(image / 127.5 - 1.0).astype(
    np.float32)``, float64 arithmetic, one rounding to float32).  Our own loaders
    compute ``u / 127.5 - 1`` in float32, which differs in the last bit for
    levels 64..191; the release's truncating 8-bit conversion
    (:func:`to_uint8` with ``protocol="release"``) turns 95 of the 256 loader
    values into ``u - 1`` (63 of ours), so the originals must be exactly the
    release's to reproduce its numbers (0.01-0.03 dB of PSNR on a blurred photo).
    Reconstructions are not re-expressed (they are a model's float output), so
    under ``"release"`` a reconstruction equal to the originals is exact only if
    it holds the release loader's values (``release_originals(x)``), as in the
    release itself.

    Returns a float32 tensor of the input's shape on the input's device.
    Raises ``ValueError`` for a non-tensor, a non-floating dtype or non-finite values.
    """
    return _release_originals(_check_images(originals, "originals", four_d=False))


def _release_originals(originals: torch.Tensor) -> torch.Tensor:
    """:func:`release_originals` of finite float ``originals`` (no checks)."""
    u = _to_uint8(originals, "standard")
    device = _compute_device(originals.device)
    x = u.to(device=device, dtype=torch.float64) / 127.5 - 1.0
    return x.to(torch.float32).to(originals.device)


def _uint8_pair(originals: torch.Tensor, reconstructions: torch.Tensor,
                protocol: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`quantise_pair` of a pair :func:`~flowmo.metrics.inputs._check_pair` accepted (no checks)."""
    if protocol == "release":
        return _to_uint8(_release_originals(originals), "release"), _to_uint8(reconstructions, "release")
    return _to_uint8(originals, "standard"), _to_uint8(reconstructions, "standard")


def _quantised_pair(originals: torch.Tensor, reconstructions: torch.Tensor,
                    protocol: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Both images in 8 bits under ``protocol``, as float64 values 0..255 on the compute device
    (a checked pair, no checks)."""
    a, b = _uint8_pair(originals, reconstructions, protocol)
    device = _compute_device(originals.device)
    return a.to(device=device, dtype=torch.float64), b.to(device=device, dtype=torch.float64)


def quantise_pair(originals: torch.Tensor, reconstructions: torch.Tensor,
                  protocol: str = "standard") -> Tuple[torch.Tensor, torch.Tensor]:
    """``(originals, reconstructions)`` as the uint8 images the protocol measures.

    ``"standard"``: :func:`to_uint8` of each.  ``"release"``: ``to_uint8(
    release_originals(originals), "release")`` and ``to_uint8(reconstructions,
    "release")``.  Inputs as for :func:`psnr` (the same value range rule and
    ``ValueError``s); returns two ``torch.uint8`` tensors of the inputs' shape on
    their device.
    """
    protocol = _check_protocol(protocol)
    return _uint8_pair(*_check_pair(originals, reconstructions), protocol)
