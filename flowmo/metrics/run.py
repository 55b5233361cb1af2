"""Evaluating a model: reconstruct every image of a data set (FlowMo: encode, quantise, decode
from the per-image noise of :func:`flowmo.samplers.noise.image_noise`; or any reconstruction
function) and feed an :class:`~flowmo.metrics.evaluator.Evaluator`."""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any, Callable, Iterable, Mapping, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

from flowmo.samplers.noise import image_noise
from flowmo.devices import check_device
from flowmo.nets.frozen import evaluating
from flowmo.metrics.evaluator import Evaluator
from flowmo.metrics.inputs import _check_int
from flowmo.metrics.state import _to_id_array

__all__ = ["evaluate_model"]


def _batches(data: Any, batch_size: int) -> Iterable[tuple[Tensor, Optional[Any]]]:
    """(images, ids or None) from a tensor (N, 3, H, W), or an iterable of tensors, (images, ids) pairs
    or dicts (the images are checked where they enter the evaluator)."""
    if isinstance(data, Tensor):
        for s in range(0, data.shape[0], batch_size):
            yield data[s:s + batch_size], torch.arange(s, min(s + batch_size, data.shape[0]))
        return
    for item in data:
        if isinstance(item, Tensor):
            yield item, None
        elif isinstance(item, Mapping):
            yield item["images"], item.get("ids")
        elif isinstance(item, (tuple, list)) and len(item) >= 1:
            yield item[0], (item[1] if len(item) > 1 else None)
        else:
            raise TypeError(f"data must yield image tensors, (images, ids) pairs or dicts, got {type(item).__name__}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate_model(
    model: Union[nn.Module, Callable[[Tensor], Any]],
    data: Any,
    *,
    evaluator: Optional[Evaluator] = None,
    sampler: Any = None,
    seed: int = 0,
    device: Union[str, torch.device, None] = None,
    batch_size: int = 16,
    limit: Optional[int] = None,
    groups: bool = True,
    autocast_dtype: Optional[torch.dtype] = None,
    tokens_fn: Optional[Callable[[Tensor], Tensor]] = None,
    progress: bool = True,
    total: Optional[int] = None,
    protocol: Optional[str] = None,
    tiled: bool = False,
    overlap: Optional[int] = None,
    tile_batch: Optional[int] = None,
    num_tokens: Optional[int] = None,
    **evaluator_kwargs: Any,
) -> dict:
    """Reconstruct every image of ``data`` with ``model`` and return ``evaluator.compute()``.

    ``model`` is a :class:`~flowmo.FlowMo` (encoded, quantized and decoded with ``sampler``;
    image ``i`` is decoded from the noise :func:`image_noise` ``(seed, i)``, so results depend on
    batching or ranks only through float rounding; tokens, decoder calls and bits per pixel are
    recorded; a continuous bottleneck, ``kl`` or ``identity``, has neither tokens nor bits per
    pixel: ``bits_per_pixel`` and ``codebook`` stay None) or any
    callable ``images -> reconstructions`` (a tensor, or an object with ``.images`` and
    optionally ``.decoder_calls``, or a dict with ``"images"``), with ``tokens_fn`` giving tokens.
    A FlowMo's reconstructions are clamped to [-1, 1] (any sampler, ``clip=False`` included: the
    metrics clamp them anyway); a callable's go to :meth:`Evaluator.update` as returned, under the
    metrics' value range rule (clamped to [-1, 1]; [0, 255] output raises ``ValueError``).
    A model that is an ``nn.Module`` runs in eval mode without gradients and afterwards every
    submodule has its own ``training`` flag back (:func:`flowmo.nets.frozen.evaluating`).

    ``data`` is an (N, 3, H, W) tensor (ids 0..N-1, batches of ``batch_size``) or an iterable of
    tensors, ``(images, ids)`` pairs or dicts ``{"images", "ids"}``. ``limit`` stops after that
    many images (on this rank); ``total`` is the progress bar's image count. Reconstruction time
    (encoder + decoder, synchronised) is recorded per batch; ``autocast_dtype`` (e.g.
    ``torch.bfloat16``) runs the reconstruction under autocast.
    Without ``evaluator`` one is built from ``evaluator_kwargs``.

    ``device`` (default: the model's, else the evaluator's, else the CPU): a malformed or
    unavailable one raises ValueError naming ``device``.

    ``tiled`` (a FlowMo only): every batch's images, of any one size at least the model's, are
    reconstructed at their size in tiles (:meth:`~flowmo.FlowMo.decode_tiled`, the joint decode
    of :meth:`~flowmo.FlowMo.tile_grid`'s tiles with ``overlap``, ``tile_batch`` tiles per
    decoder call at most; image ``i`` from
    ``image_noise(seed, [i], (3, H, W))``), so a data source of mixed sizes yields one size per
    batch (e.g. one image per batch); neither the codebook usage nor ``bits_per_pixel`` is
    reported (the tokens per image depend on each image's size and the overlap).

    A FlowMo's bits per pixel are set on ``evaluator`` by every call (its rate; None tiled or
    continuous). ``num_tokens`` (a FlowMo, not tiled; an int in [1, T]): each image is decoded
    from its first k tokens, the rest absent (``FlowMo.decode(num_tokens=k)``: ordered tokens,
    ``spec.nested_dropout``); the codebook usage counts those k, and bits per pixel are k / T
    of the model's.

    ``protocol`` (``"standard"`` or ``"release"``, see :class:`Evaluator`) is passed to the
    evaluator that is built (default ``"standard"``); with an ``evaluator`` it must equal
    ``evaluator.protocol`` (or be None), else ``ValueError``.
    """
    from tqdm.auto import tqdm

    if evaluator is None:
        evaluator = Evaluator(**evaluator_kwargs, **({} if protocol is None else {"protocol": protocol}))
    elif evaluator_kwargs:
        raise ValueError(f"evaluator_kwargs {sorted(evaluator_kwargs)} given together with an evaluator")
    elif protocol is not None and protocol != evaluator.protocol:
        raise ValueError(f"protocol={protocol!r} but the evaluator given uses protocol {evaluator.protocol!r}")
    limit = _check_int(limit, "limit", allow_none=True)
    from flowmo.model import FlowMo

    is_flowmo = isinstance(model, FlowMo)
    if device is None:
        device = model.device if is_flowmo else (evaluator.device or torch.device("cpu"))
    device = check_device(device, "device")
    discrete = is_flowmo and model.quantizer.discrete  # a continuous bottleneck has no tokens, no bits per pixel
    if not isinstance(tiled, bool):
        raise TypeError(f"tiled must be a bool, got {type(tiled).__name__} {tiled!r}")
    if tiled and not is_flowmo:
        raise ValueError(f"tiled=True needs a FlowMo model, got {type(model).__name__}")
    if not tiled and (overlap is not None or tile_batch is not None):
        raise ValueError("overlap and tile_batch apply only with tiled=True")
    if num_tokens is not None:
        if not is_flowmo or tiled:
            raise ValueError("num_tokens needs a FlowMo model and tiled=False")
        t = model.spec.code_length
        if isinstance(num_tokens, bool) or not isinstance(num_tokens, int):
            raise TypeError(f"num_tokens must be an int in [1, {t}] or None, got {type(num_tokens).__name__} "
                            f"{num_tokens!r}")
        if not 1 <= num_tokens <= t:
            raise ValueError(f"num_tokens must be an int in [1, {t}] (the model's code_length), got {num_tokens}")
    if is_flowmo:  # the model's rate, set on every call (a reused evaluator keeps no earlier call's)
        kept = model.spec.code_length if num_tokens is None else num_tokens
        evaluator.bits_per_pixel = (float(model.spec.bits_per_pixel) * kept / model.spec.code_length
                                    if discrete and not tiled else None)
    group_fn = model.quantizer.codes_to_group_indices if discrete and model.quantizer.has_groups else None
    world, rank = evaluator._world()
    amp = (torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype is not None
           else nullcontext())
    seen, local_count = 0, 0
    if total is None:
        total = data.shape[0] if isinstance(data, Tensor) else None
        if limit is not None:
            total = limit if total is None else min(total, limit)
    bar = tqdm(total=total, unit="img", disable=not progress or rank != 0, desc="evaluating", dynamic_ncols=True)
    # a caller's module runs in eval mode without gradients and gets its training flags back
    running = evaluating(model) if isinstance(model, nn.Module) else nullcontext()
    try:
        with running:
            for images, ids in _batches(data, batch_size):
                if limit is not None and seen >= limit:
                    break
                if limit is not None and seen + images.shape[0] > limit:
                    images = images[: limit - seen]
                    ids = None if ids is None else ids[: limit - seen]
                b = images.shape[0]
                if b == 0:
                    continue
                if ids is None:
                    ids_arr = (np.arange(local_count, local_count + b, dtype=np.int64) * world + rank)
                else:
                    ids_arr = _to_id_array(ids, b)
                local_count += b
                x = images.to(device)
                tokens, codebook, calls = None, None, None
                _sync(device)
                t0 = time.perf_counter()
                with torch.no_grad(), amp:
                    if is_flowmo and tiled:
                        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != 3:
                            raise ValueError(f"images must be (B, 3, H, W) tensors for tiled=True, got "
                                             f"{tuple(getattr(x, 'shape', ())) or type(x).__name__}")
                        try:
                            grid = model.tile_grid(x.shape[2], x.shape[3], overlap=overlap)
                        except ValueError as e:
                            raise ValueError(f"images: {e}") from None
                        q = model.quantize(model.encode(grid.crop(x).flatten(0, 1)), losses=False)
                        noise = image_noise(seed, ids_arr.tolist(), x.shape[1:], device=device, dtype=q.values.dtype)
                        out = model.decode_tiled(q.values.unflatten(0, (b, grid.rows, grid.cols)), grid, noise=noise,
                                                 sampler=sampler, tile_batch=tile_batch)
                        recon, calls = out.images.clamp(-1.0, 1.0), out.decoder_calls
                    elif is_flowmo:
                        q = model.quantize(model.encode(x), losses=False)
                        noise = image_noise(seed, ids_arr.tolist(), x.shape[1:], device=device, dtype=q.values.dtype)
                        out = model.decode(q.values, noise=noise, sampler=sampler, num_tokens=num_tokens)
                        # the model's own [-1, 1] output: clamped here (as a clipping sampler does), so
                        # an unclipped sampler's overshoot never trips the metrics' value range check
                        recon, calls = out.images.clamp(-1.0, 1.0), out.decoder_calls
                    else:
                        out = model(x)
                        if isinstance(out, Mapping):
                            recon, calls = out["images"], out.get("decoder_calls")
                        elif isinstance(out, Tensor):
                            recon = out
                        else:
                            recon, calls = out.images, getattr(out, "decoder_calls", None)
                _sync(device)
                seconds = time.perf_counter() - t0
                if discrete and not tiled:
                    if groups and group_fn is not None:
                        tokens, codebook = group_fn(q.values.float()), int(model.quantizer.group_codebook_size)
                    else:
                        tokens, codebook = q.indices, int(model.quantizer.codebook_size)
                    tokens = tokens if num_tokens is None else tokens[:, :num_tokens]  # the tokens decoded

                elif tokens_fn is not None:
                    tokens = tokens_fn(x)
                evaluator.update(x.float(), recon.float(), ids=ids_arr, tokens=tokens, codebook=codebook,
                                 decoder_calls=calls, seconds=seconds)
                seen += b
                bar.update(b)
    finally:
        bar.close()
    return evaluator.compute()
