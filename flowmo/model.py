"""FlowMo: an MM-DiT encoder, a quantizer and an MM-DiT flow-matching decoder, composed from a spec.

This module holds the architecture, the tokenize / decode API and the training losses (the
Stage 1A loss and the Stage 1B post-training loss, with :class:`LossOutput`); :meth:`FlowMo.save_pretrained`
and :meth:`FlowMo.from_pretrained` hand the model folder's files to :mod:`flowmo.folders.model_folder`."""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Union

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from .blocks.base import Backbone
from .blocks.embeddings import patchify, unpatchify
from .devices import ValueChecks
from .losses.flow import FlowLoss
from .losses.posttrain import PosttrainObjective
from .losses.time_samplers import TimeSampler
from .quantizers.base import Quantizer, QuantizerOutput
from .registry import BACKBONES, FLOW_LOSSES, POSTTRAIN_OBJECTIVES, QUANTIZERS, TIME_SAMPLERS
from .samplers.grids import describe
from .spec.sampling import resolve_preset
from .samplers.sampler import SampleOutput, sample, state_dtype
from .data.tiles import TiledTokens, TileGrid, tile_grid
from .samplers.tiles import TiledDecoder
from .spec import FlowMoSpec, SamplerSpec, no_tokens_error, replace_spec

__all__ = ["FlowMo", "LossOutput", "build"]


@dataclass
class LossOutput:
    """A training loss: ``total`` (what to backpropagate) and its named terms (weighted)."""

    total: Tensor
    terms: dict[str, Tensor]

    def detached(self) -> dict[str, float]:
        out = {"total": float(self.total.detach())}
        out.update({k: float(v.detach()) for k, v in self.terms.items()})
        return out


def _merge_terms(terms: dict, new: Any, source: str) -> None:
    """Add ``new`` (a mapping name -> tensor from ``source``, a component whose outputs the
    conformance kit checks) to ``terms``; ValueError naming a term whose name is already taken
    (it would silently replace another)."""
    if terms.keys() & new.keys():
        raise ValueError(f"{source} returns a term named {min(terms.keys() & new.keys())!r}, already used; rename it")
    terms.update(new)


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """``module`` in eval mode for the block (a stateful quantizer then updates nothing), its
    mode restored after."""
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


def _check_teacher_capability(objective: Any) -> None:
    """``needs_teacher`` must be a bool, and True only when ``__call__`` takes ``teacher=``
    (TypeError naming the class otherwise, before any training step)."""
    params = inspect.signature(objective.__call__).parameters
    takes = "teacher" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    if not isinstance(objective.needs_teacher, bool) or (objective.needs_teacher and not takes):
        raise TypeError(f"{type(objective).__name__}.needs_teacher must be a bool, True only if __call__ takes teacher="
                        f" (got {objective.needs_teacher!r}; __call__ {'takes' if takes else 'takes no'} teacher=)")


def build(spec: Union[FlowMoSpec, dict, str]) -> "FlowMo":
    """Build the model a spec describes (float32, on the CPU, in training mode).

    ``spec``: a :class:`FlowMoSpec`, a dict of its fields, a preset name (``"tiny"``,
    ``"flowmo_lo"``, ...: :data:`flowmo.PRESETS`), or a JSON string of a spec (as
    ``config.json`` holds). Raises TypeError for another type, ValueError for a str that is
    neither a preset name nor a JSON object (naming the presets), and pydantic's
    ValidationError (a ValueError) for an invalid spec.
    """
    from .presets import PRESETS, get_preset

    if isinstance(spec, str):
        if spec in PRESETS:
            spec = get_preset(spec)
        elif spec.lstrip().startswith("{"):
            spec = FlowMoSpec.model_validate_json(spec)
        else:
            raise ValueError(f"spec {spec!r} is neither a preset name ({', '.join(PRESETS)}) nor a JSON spec")
    elif isinstance(spec, dict):
        spec = FlowMoSpec.model_validate(spec)
    elif not isinstance(spec, FlowMoSpec):
        raise TypeError(f"spec must be a FlowMoSpec, a dict, a preset name or a JSON string, got {type(spec).__name__}")
    return FlowMo(spec)


class FlowMo(nn.Module):
    """The FlowMo tokenizer.

    Images are float tensors (B, 3, H, W) in [-1, 1] with H = W = ``spec.image_size``.
    ``encode`` gives the encoder's output (B, T, E) (E = C but for ``kl``: 2C); ``quantize``
    the code (B, T, C) the decoder receives; ``tokenize`` integer tokens (B, T);
    ``detokenize`` / ``decode`` sample images with the spec's sampler (override per call with
    ``sampler=``); ``reconstruct`` does both. ``loss`` is the Stage 1A training loss,
    ``posttrain_loss`` the Stage 1B one.

    A continuous bottleneck (``spec.quantizer`` ``kl`` or ``identity``:
    ``quantizer.discrete`` False, the paper's continuous FlowMo) has no tokens: ``tokenize``,
    ``detokenize`` and ``tokens_to_code`` raise ValueError saying so
    (:func:`flowmo.spec.no_tokens_error`); ``encode``, ``quantize``, ``decode``,
    ``reconstruct``, the losses and the model folders work as for a discrete one.

    State-dict keys are the release's (``encoder.*``, ``decoder.*``).
    """

    def __init__(self, spec: FlowMoSpec):
        super().__init__()
        self.spec = spec
        p, c = spec.patch_size, spec.code_channels
        patch_dim = 3 * p * p
        e = spec.quantizer.encoder_channels(c)  # what the quantizer takes: C, or 2C for kl (mean, log-variance)
        # the encoder's latent stream gets zeros of C channels (only its input bias matters) and outputs E
        self.encoder: Backbone = BACKBONES.build(spec.encoder, patch_dim=patch_dim, txt_in_dim=c, txt_out_dim=e)
        # the decoder's latent stream gets the code plus one channel of ones (the "mask")
        self.decoder: Backbone = BACKBONES.build(spec.decoder, patch_dim=patch_dim, txt_in_dim=c + 1,
                                                 txt_out_dim=c + 1)
        self.quantizer: Quantizer = QUANTIZERS.build(spec.quantizer, channels=c)
        if self.quantizer.input_channels != e:
            raise ValueError(f"quantizer {spec.quantizer.name!r}: its input_channels ({self.quantizer.input_channels}) "
                             f"differ from its class's encoder_channels(spec, {c}) ({e}); declare the same width in both")
        self.time_sampler: TimeSampler = TIME_SAMPLERS.build(spec.time_sampler)
        # loss objects may need weight files (network distances): built on first use only
        self._flow_loss: Optional[FlowLoss] = None
        self._posttrain: Optional[PosttrainObjective] = None
        self._teacher: Optional[Backbone] = None  # a distillation objective's frozen decoder (set_teacher)

    def _apply(self, fn, recurse: bool = True):  # .to() / .float() / ... move and cast the teacher too
        out = super()._apply(fn, recurse)
        if self._teacher is not None:
            self._teacher._apply(fn, recurse)
        return out

    # ------------------------------------------------------------------ properties
    @property
    def grid(self) -> tuple[int, int]:
        g = self.spec.grid_size
        return (g, g)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ input checks (at the public methods only)
    def _check_layout(self, x: Tensor, name: str, shape: tuple, what: Optional[str] = None) -> None:
        """``x`` must have ``shape`` (a None entry: any size >= 1, the batch; ``what`` words it
        in the message) and be on the model's device; ValueError naming ``name``."""
        if x.ndim != len(shape) or any(g < 1 if d is None else g != d for g, d in zip(x.shape, shape)):
            dims = ", ".join("batch" if d is None else str(d) for d in shape)
            raise ValueError(f"{name} must have {what or f'shape ({dims}), batch not empty'}, got {tuple(x.shape)}")
        if x.device != self.device:
            raise ValueError(f"{name} is on {x.device} but the model is on {self.device}")

    def _check_float(self, x: Any, name: str, shape: tuple, what: Optional[str] = None, *, values: bool = True,
                     checks: Optional[ValueChecks] = None) -> Tensor:
        """``x`` must be a finite floating-point tensor of ``shape`` on the model's device
        (:meth:`_check_layout`); TypeError / ValueError naming ``name``. The finite check (with
        ``values``) is read now, one host sync, or added to ``checks`` (read by the caller)."""
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point torch.Tensor, got {describe(x)}")
        self._check_layout(x, name, shape, what)
        if values:
            now = ValueChecks() if checks is None else checks
            now.add(torch.isfinite(x), lambda: ValueError(f"{name} contains NaN or Inf values"))
            if checks is None:
                now.read()
        return x

    def _check_images(self, images: Any, *, values: bool = True, checks: Optional[ValueChecks] = None,
                      any_size: bool = False) -> Tensor:
        """Images (B, 3, S, S), B >= 1, floating, on the model's device, finite and in [-1, 1]
        (1.05 tolerated), returned in the model's dtype. ``any_size``: any H x W (the caller
        checked the layout: :meth:`_check_any_size`).

        ``values=False`` checks the type, layout, dtype and device only and reads no value (no
        host sync); with ``values`` (the default) the finite and range checks are read together,
        one host sync, or added to ``checks`` for the caller to read."""
        if not isinstance(images, Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if not any_size:
            self._check_float(images, "images", (None, 3, self.spec.image_size, self.spec.image_size), values=False)
        if values:
            now = ValueChecks() if checks is None else checks
            now.add(torch.isfinite(images), lambda: ValueError("images contains NaN or Inf values"))
            lo, hi = torch.aminmax(images.to(state_dtype(images.dtype)))  # exact: the bounds compare in >= float32

            def out_of_range() -> ValueError:
                lo_, hi_ = torch.stack((lo, hi)).tolist()
                return ValueError(f"images must lie in [-1, 1] (uint8 x: x / 127.5 - 1), got values in "
                                  f"[{lo_:.3g}, {hi_:.3g}]")

            now.add((lo >= -1.05) & (hi <= 1.05), out_of_range)
            if checks is None:
                now.read()
        return images.to(self.dtype)

    def _cast(self, x: Tensor, name: str, dtype: torch.dtype, *, checks: Optional[ValueChecks] = None) -> Tensor:
        """Finite ``x`` in ``dtype``; ValueError naming ``name`` where a value overflows it
        (e.g. 1e300 in float64 to bfloat16): read now, or added to ``checks``."""
        y = x.to(dtype)
        if y.dtype != x.dtype:
            now = ValueChecks() if checks is None else checks
            now.add(torch.isfinite(y),
                    lambda: ValueError(f"{name} has values beyond the range of {dtype}; scale it down"))
            if checks is None:
                now.read()
        return y

    def _require_tokens(self, what: str) -> None:
        """ValueError (:func:`flowmo.spec.no_tokens_error`) when the bottleneck is continuous: ``what`` (a
        token path: ``tokenize``, ...) needs a discrete quantizer. Called first by each."""
        if not self.quantizer.discrete:
            raise no_tokens_error(self.spec.quantizer.name, what)

    def _check_tokens(self, tokens: Any, shape: Optional[tuple] = None) -> Tensor:
        """Integer tokens (B, T) (or ``shape``), B >= 1, on the model's device (their range,
        [0, codebook_size), is the quantizer's to check: :meth:`_tokens_to_code`)."""
        if (not isinstance(tokens, Tensor) or tokens.is_floating_point() or tokens.is_complex()
                or tokens.dtype == torch.bool):
            raise TypeError(f"tokens must be an int64 torch.Tensor (any integer dtype), got {describe(tokens)}")
        self._check_layout(tokens, "tokens", shape or (None, self.spec.code_length))
        return tokens

    def _check_cfg_dropout(self, cfg_dropout: Any, b: int) -> None:
        """``cfg_dropout``: a bool, or the (B,) bool keep mask of :meth:`loss_draws` on the
        model's device (TypeError / ValueError; reads no value)."""
        if isinstance(cfg_dropout, bool):
            return
        if not isinstance(cfg_dropout, Tensor) or cfg_dropout.dtype != torch.bool or tuple(cfg_dropout.shape) != (b,):
            raise TypeError(f"cfg_dropout must be a bool or a ({b},) bool tensor (the keep mask of loss_draws), "
                            f"got {describe(cfg_dropout)}")
        if cfg_dropout.device != self.device:
            raise ValueError(f"cfg_dropout is on {cfg_dropout.device} but the model is on {self.device}")

    @staticmethod
    def _check_generator(generator: Any) -> None:
        """``generator`` must be a ``torch.Generator`` or None (TypeError, before any draw)."""
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")

    def _check_times(self, t: Any, b: int, name: str, *, checks: Optional[ValueChecks] = None,
                     values: bool = True) -> Tensor:
        """Flow times: a number or a real tensor, scalar or (B,), finite, in [0, 1] -> float32 (B,).
        The range check is read now (one host sync), added to ``checks``, or (``values=False``)
        not made."""
        if isinstance(t, bool) or not isinstance(t, (int, float, Tensor)) or (
                isinstance(t, Tensor) and (t.is_complex() or t.dtype == torch.bool)):
            raise TypeError(f"{name} must be a number or a real torch.Tensor, got {describe(t)}")
        if isinstance(t, Tensor) and t.device != self.device and (t.ndim or t.device.type == "meta"):  # scalars move
            raise ValueError(f"{name} is on {t.device} but the model is on {self.device}")
        if isinstance(t, Tensor):
            t = t.to(device=self.device, dtype=torch.float32)
            t = t.expand(b) if t.ndim == 0 else t
        else:  # filled on the device (a copy of a host scalar would wait for the device); beyond float32: inf
            value = (math.inf if t > 0 else -math.inf) if abs(t) > torch.finfo(torch.float32).max else float(t)
            t = torch.full((b,), value, dtype=torch.float32, device=self.device)
        if t.shape != (b,):
            raise ValueError(f"{name} must be a scalar or have shape ({b},), got {tuple(t.shape)}")
        if not values:
            return t
        lo, hi = torch.aminmax(t)

        def error() -> ValueError:
            lo_, hi_ = torch.stack((lo, hi)).tolist()
            return ValueError(f"{name} must lie in [0, 1] (finite), got values in [{lo_:.3g}, {hi_:.3g}]")

        now = ValueChecks() if checks is None else checks
        now.add((lo >= 0) & (hi <= 1), error)
        if checks is None:
            now.read()
        return t

    # ------------------------------------------------------------------ encoder and quantizer
    def encode(self, images: Tensor) -> Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> the encoder's continuous output (B, T, E), the
        quantizer's input: E = C (``spec.code_channels``) for every built-in quantizer but
        ``kl``, whose E = 2C holds the posterior's mean and log-variance
        (``spec.quantizer.encoder_channels(C)``). ``quantize`` turns it into the code (B, T, C)."""
        return self._encode(self._check_images(images))

    def _encode(self, images: Tensor) -> Tensor:
        """:meth:`encode` of images already checked (and cast) by :meth:`_check_images`:
        (B, T, E)."""
        txt = images.new_zeros(images.shape[0], self.spec.code_length, self.spec.code_channels)
        _, code = self.encoder(patchify(images, self.spec.patch_size), txt, None, self.grid, outputs=("txt",))
        return code

    def quantize(self, code: Tensor, *, losses: bool = True, noise: Optional[Tensor] = None,
                 generator: Optional[torch.Generator] = None) -> QuantizerOutput:
        """The encoder's output (B, T, E) -> :class:`QuantizerOutput` (``values``: the code
        (B, T, C)), with the quantizer's loss terms (in either mode); ``losses=False`` leaves them
        out where the quantizer can (``Quantizer.quantize``: for inference, as ``tokenize`` and
        ``reconstruct`` do; deterministic: ``kl`` gives its mean in either mode).

        A stochastic quantizer (``kl``) in training mode (with ``losses``) samples: with
        ``noise`` (its ``draw_noise``'s draws, float32 (B, T, C)) or else draws from
        ``generator`` (None: torch's global generator). A deterministic quantizer takes no
        noise (ValueError when it is given, and with ``losses=False``). ``code`` must be (B, T, E)
        with T = ``spec.code_length`` and E the quantizer's input width, on the model's device
        (ValueError naming it); its values are the quantizer's to check."""
        self._check_generator(generator)
        if not isinstance(losses, bool):
            raise TypeError(f"losses must be a bool, got {describe(losses)}")
        if isinstance(code, Tensor):
            self._check_layout(code, "code", (None, self.spec.code_length, self.quantizer.input_channels),
                               f"shape (B, {self.spec.code_length}, {self.quantizer.input_channels}) (the encoder's "
                               "output), batch not empty")
        if not losses:
            if noise is not None:
                raise ValueError("noise is used only with losses=True (a training-mode sample); losses=False gives "
                                 "the deterministic inference code: leave noise None")
            return self.quantizer.quantize(code)
        sized = isinstance(code, Tensor) and code.ndim == 3  # else the quantizer refuses the code
        if noise is not None and sized:
            noise = self._check_quantizer_noise(noise, code.shape[0], "noise")
        elif noise is None and sized and self.quantizer.stochastic and self.quantizer.training:
            noise = self._draw_quantizer_noise(code.shape[0], generator, code.device)
        return self._quantize(code, noise)

    def _quantize(self, code: Tensor, noise: Optional[Tensor]) -> QuantizerOutput:
        """The quantizer's forward, given ``noise`` only when there is one (a deterministic
        quantizer's forward may not take the argument: ``Quantizer.draw_noise``)."""
        return self.quantizer(code) if noise is None else self.quantizer(code, noise=noise)

    def _draw_quantizer_noise(self, b: int, generator: Optional[torch.Generator], device: torch.device
                              ) -> Optional[Tensor]:
        """The quantizer's draws for a batch of ``b`` (None for a deterministic quantizer)."""
        return self.quantizer.draw_noise(b, self.spec.code_length, generator=generator, device=device)

    def _check_quantizer_noise(self, noise: Any, b: int, name: str, *, values: bool = True) -> Tensor:
        """A given quantizer noise (argument ``name``): a stochastic quantizer's draws, a finite
        floating (b, T, C) tensor on the model's device (its finite check, with ``values``, read
        now: one host sync); TypeError / ValueError naming ``name``, and ValueError for a
        deterministic quantizer, which draws none."""
        if not self.quantizer.stochastic:
            raise ValueError(f"{name} is for a stochastic quantizer (kl); {self.spec.quantizer.name!r} draws none: "
                             "leave it None")
        shape = (b, self.spec.code_length, self.spec.code_channels)
        noise = self._check_float(noise, name, shape, values=values)
        return self._cast(noise, name, torch.float32) if values else noise

    @torch.no_grad()
    def tokenize(self, images: Tensor, *, groups: bool = False) -> Tensor:
        """Images -> int64 tokens (B, T); with ``groups=True`` (LFQ only) indices per entropy
        group (B, T, C/G) in the release's layout. One host sync (the images' value checks,
        read after the encoder ran). ValueError for a continuous bottleneck (no tokens)."""
        self._require_tokens("tokenize")
        if groups and not self.quantizer.has_groups:
            raise ValueError(f"groups=True needs a quantizer with entropy groups; {self.spec.quantizer.name} has none")
        checks = ValueChecks()
        q = self.quantize(self._encode(self._check_images(images, checks=checks)), losses=False)
        out = self.quantizer.codes_to_group_indices_deferred(q.values, checks) if groups else q.indices
        checks.read()
        return out

    def tokens_to_code(self, tokens: Tensor) -> Tensor:
        """Tokens (B, T) -> quantized code (B, T, C) in the model's dtype; a model trained with
        nested dropout also takes a prefix (B, k), k < T -> (B, k, C). One host sync (the
        tokens' range) for the built-in quantizers. ValueError for a continuous bottleneck (no
        tokens)."""
        self._require_tokens("tokens_to_code")
        checks = ValueChecks()
        k = self._prefix_length(tokens, "tokens", ()) if self.spec.nested_dropout is not None else None
        code = self._tokens_to_code(tokens, checks, None if k is None else (None, k))
        checks.read()
        return code

    def _tokens_to_code(self, tokens: Tensor, checks: ValueChecks, shape: Optional[tuple] = None) -> Tensor:
        """:meth:`tokens_to_code` with the range check added to ``checks`` where the quantizer
        can defer it (:meth:`Quantizer.indices_to_codes_deferred`)."""
        self._check_tokens(tokens, shape)
        return self.quantizer.indices_to_codes_deferred(tokens, checks, "tokens (indices)").to(self.dtype)

    # ------------------------------------------------------------------ decoder
    def conditioning(self, code: Optional[Tensor], batch: Optional[int] = None,
                     num_tokens: Union[int, Tensor, None] = None) -> Tensor:
        """The decoder's latent input: code (B, T, C) plus a channel of ones; None gives the
        all-zero (unconditional) input, mask included, of ``batch`` (required then) samples.
        ``num_tokens`` (an int or a (B,) integer tensor in [1, T]; with a code only): image
        b's tokens from index k_b on are absent, their code and mask channel exactly 0 (as the
        unconditional input has them; nested dropout).

        Raises:
            ValueError / TypeError: ``code`` not a finite floating (B, T, C) tensor on the
                model's device, ``batch`` missing for None, ``num_tokens`` not as above (the
                values read now: one host sync).
        """
        if code is None:
            if num_tokens is not None:
                raise ValueError("num_tokens applies to a code: the unconditional (code=None) input has no tokens")
            if isinstance(batch, bool) or not isinstance(batch, int) or batch < 0:
                raise ValueError(f"batch must be the number of samples (an int >= 0) for the unconditional (code=None) "
                                 f"input, got {batch!r}")
        else:
            checks = ValueChecks()
            code = self._check_float(code, "code", (None, self.spec.code_length, self.spec.code_channels), checks=checks)
            if num_tokens is not None:
                num_tokens = self._check_num_tokens(num_tokens, code.shape[0], "num_tokens", checks=checks)
            checks.read()
        return self._conditioning(code, batch, num_tokens)

    def _conditioning(self, code: Optional[Tensor], batch: Optional[int] = None,
                      num_tokens: Optional[Tensor] = None) -> Tensor:
        """:meth:`conditioning` of arguments already checked (``num_tokens`` an int64 (B,) tensor)."""
        if code is None:
            if batch is None:
                raise ValueError("batch is needed for the unconditional (code=None) input")
            return torch.zeros(batch, self.spec.code_length, self.spec.code_channels + 1,
                               device=self.device, dtype=self.dtype)
        cond = torch.cat((code, torch.ones_like(code[..., :1])), dim=-1)
        if num_tokens is None:
            return cond
        present = torch.arange(cond.shape[1], device=cond.device) < num_tokens[:, None]
        return torch.where(present[..., None], cond, torch.zeros((), dtype=cond.dtype, device=cond.device))

    def decoder_velocity(self, x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """The raw decoder: noisy image (B, 3, H, W) with H = W = ``spec.image_size``, t (B,),
        conditioning (B, T, C + 1) -> velocity (B, 3, H, W). No value checks (see :meth:`velocity`).

        Raises ValueError naming ``x_t`` when its shape is not (B, 3, image_size, image_size):
        the decoder is run on the patch grid of the model's image size, and an image of another
        shape with as many patches (e.g. 16 x 64 for 32 x 32) would get the wrong positions.
        """
        return self._decoder_velocity(self.decoder, x_t, t, cond)

    def _decoder_velocity(self, decoder: Backbone, x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        s = self.spec.image_size
        if not isinstance(x_t, Tensor) or tuple(x_t.shape[1:]) != (3, s, s):
            raise ValueError(f"x_t must have shape (B, 3, {s}, {s}) (the model's image size; its patch grid is "
                             f"{self.grid}), got {tuple(getattr(x_t, 'shape', ()))}")
        img, _ = decoder(patchify(x_t, self.spec.patch_size), cond, t, self.grid, outputs=("img",))
        return unpatchify(img, self.spec.patch_size, self.grid)

    def velocity(self, x_t: Tensor, t: Union[Tensor, float], code: Optional[Tensor] = None, *,
                 guidance_scale: float = 1.0) -> Tensor:
        """Decoder velocity at (x_t, t) given a quantized code (B, T, C) (None: unconditional).

        With ``guidance_scale`` != 1: v_u + scale (v_c - v_u), computed in
        ``state_dtype(self.dtype)`` (float32 for a bfloat16 / float16 model) and rounded once to
        the model's dtype. Returns (B, 3, H, W) in the model's dtype. ValueError when the
        velocity is not finite (inputs too large for the model's dtype, or non-finite weights).
        One host sync: the inputs' value checks and the velocity's are read together, after the
        decoder ran.
        """
        checks = ValueChecks()  # every value check below, read once at the end
        s = self.spec.image_size
        x_t = self._cast(self._check_float(x_t, "x_t", (None, 3, s, s), checks=checks), "x_t", self.dtype,
                         checks=checks)
        b = x_t.shape[0]
        t = self._check_times(t, b, "t", checks=checks)
        if isinstance(guidance_scale, bool) or not (isinstance(guidance_scale, (int, float))
                                                     and math.isfinite(guidance_scale)):
            raise TypeError(f"guidance_scale must be a finite real number, got {guidance_scale!r}")
        if code is not None:
            code = self._check_float(code, "code", (b, self.spec.code_length, self.spec.code_channels), checks=checks)
            code = self._cast(code, "code", self.dtype, checks=checks)
        cond = self._conditioning(code, b)
        v = self.decoder_velocity(x_t, t, cond)
        if guidance_scale != 1.0 and code is not None:
            v_u = self.decoder_velocity(x_t, t, torch.zeros_like(cond))
            work = state_dtype(v.dtype)
            v = (v_u.to(work) + guidance_scale * (v.to(work) - v_u.to(work))).to(v.dtype)
        checks.add(torch.isfinite(v), lambda: ValueError(
            f"the velocity is not finite: x_t, code or guidance_scale ({guidance_scale}) is too large for "
            f"{self.dtype}, or the weights are not finite"))
        checks.read()  # the call's one host sync
        return v

    def _sampler_spec(self, sampler: Union[SamplerSpec, dict, str, None]) -> SamplerSpec:
        """``sampler`` of :meth:`decode` as a SamplerSpec: None is the spec's sampler, a dict
        edits it (the semantics of :meth:`FlowMoSpec.replace`: nested dicts merge), a str is
        a preset of the model (``spec.sampler_presets``) or else a global sampler preset, a
        SamplerSpec is used as given."""
        if sampler is None:
            return self.spec.sampler
        if isinstance(sampler, dict):
            return replace_spec(self.spec.sampler, sampler)
        if isinstance(sampler, str):
            return resolve_preset(sampler, self.spec.sampler_presets)
        if isinstance(sampler, SamplerSpec):
            return sampler
        raise TypeError(f"sampler must be a SamplerSpec, a dict of its fields, a sampler preset name or None, "
                        f"got {type(sampler).__name__}")

    def decode(self, code: Tensor, *, noise: Optional[Tensor] = None, generator: Optional[torch.Generator] = None,
               sampler: Union[SamplerSpec, dict, str, None] = None, return_intermediates: bool = False,
               enable_grad: bool = False, num_tokens: Union[int, Tensor, None] = None) -> SampleOutput:
        """Sample images from a quantized code (B, T, C) with the spec's sampler (or ``sampler``).

        Prefixes (ordered tokens, a model trained with ``spec.nested_dropout``): ``num_tokens``
        k (an int, or a (B,) integer tensor, each in [1, T]) conditions the decoder on each
        image's first k tokens only, the others absent (:meth:`conditioning`; their values do
        not matter); for such a model a code of fewer than T tokens, (B, k, C), is such a prefix
        (``num_tokens`` then at most k; any (B, k, C) with k < T is read so, another tokenizer's
        shorter code too). A model trained without nested dropout takes ``num_tokens`` too (an
        experiment: its tokens have no order, so a prefix of them is not a coarse version of the
        image), but refuses a shorter code, saying so.

        Args:
            code: the quantized code (B, T, C), a floating-point tensor on the model's device
                (e.g. ``quantize(encode(x)).values`` or ``tokens_to_code(tokens)``), finite.
            noise: the starting point at t = 1, (B, 3, H, W), finite, any floating dtype, on the
                model's device. Default: N(0, I) drawn in the state dtype (below) from
                ``generator``.
            generator: the ``torch.Generator`` for the default noise (ignored when ``noise`` is
                given); None: torch's global generator.
            sampler: the sampler (grid, steps, solver, guidance, clip): a
                :class:`~flowmo.spec.SamplerSpec`, a dict of changes to the spec's sampler
                (merged as :meth:`FlowMoSpec.replace` merges: ``{"steps": 4}`` keeps the
                grid, solver and guidance; ``{"guidance": {"scale": 2.0}}`` keeps the
                interval), a preset name of :data:`flowmo.samplers.SAMPLER_PRESETS`
                (``"fast"``, ``"release"``) or of the model's own ``spec.sampler_presets``
                (which win; a few-step decoder records its sampler there, e.g.
                ``"distillation-4"``), or None for ``spec.sampler``.
            return_intermediates: also return the state after every step
                (``SampleOutput.intermediates``).
            enable_grad: run with autograd (default: without).

        Returns:
            a :class:`~flowmo.samplers.SampleOutput` (not a tensor, unlike :meth:`reconstruct`
            and :meth:`detokenize`, which return its ``images``): ``images`` (B, 3, H, W),
            ``decoder_calls`` (decoder evaluations per image, a guided step counting 2),
            ``times`` (the time grid used) and ``intermediates`` (on request).

        Precision: the decoder runs in the model's dtype; the ODE state, the solver's step
        arithmetic and the guidance combination run in ``state_dtype(self.dtype)`` (float32 for
        a float32, bfloat16 or float16 model; float64 for a float64 one). The returned
        ``images`` (B, 3, H, W) and intermediates are in that dtype, so a bfloat16 model's
        output is *float32* and carries only the model's own rounding, not a per-step rounding
        of the state. ``noise`` defaults to N(0, I) drawn in that dtype (the same draws for a
        float32 and a bfloat16 model given the same generator). A given ``noise`` is validated
        and converted to that state dtype: lower-precision noise (bfloat16, float16) exactly,
        float64 noise for a float32 / bfloat16 / float16 model rounded to float32 (it is never
        rounded to the model's own dtype). Finite noise beyond the state dtype's range (e.g.
        1e300 in float64 for a float32 state) raises ``ValueError`` saying so.

        Host syncs: one per call, whatever the sampler. The value checks of ``code`` and
        ``noise`` are read together with the sampler's own and the result's, after the last
        step (so a bad value is reported after the sampling ran on it); the time grid is
        Python numbers (:func:`flowmo.samplers.sample`).
        """
        return self._decode(code, ValueChecks(), noise=noise, generator=generator, sampler=sampler,
                            return_intermediates=return_intermediates, enable_grad=enable_grad, num_tokens=num_tokens)

    def _prefix_length(self, x: Any, name: str, tail: tuple[int, ...]) -> Optional[int]:
        """k when ``x`` is a prefix (B, k, *tail), 1 <= k < T, for a model trained with nested
        dropout (the checks then use k); None otherwise (the usual shape checks name what is
        wrong). A model without nested dropout refuses such a tensor, saying why."""
        t = self.spec.code_length
        if (not isinstance(x, Tensor) or x.ndim != 2 + len(tail) or tuple(x.shape[2:]) != tail
                or not 1 <= x.shape[1] < t):
            return None
        k = x.shape[1]
        if self.spec.nested_dropout is None:
            want = ", ".join(["batch", str(t), *map(str, tail)])
            raise ValueError(f"{name} must have shape ({want}), got {tuple(x.shape)}: only a model trained with nested "
                             f"dropout (spec.nested_dropout) takes a prefix of fewer tokens; to try one on this model "
                             f"anyway, pad it to {t} tokens and pass num_tokens={k} (its tokens have no order)")
        return k

    def _decode(self, code: Tensor, checks: ValueChecks, *, noise: Optional[Tensor] = None,
                generator: Optional[torch.Generator] = None, sampler: Union[SamplerSpec, dict, str, None] = None,
                return_intermediates: bool = False, enable_grad: bool = False,
                num_tokens: Union[int, Tensor, None] = None) -> SampleOutput:
        """:meth:`decode`, its value checks added to ``checks`` (a caller's pending ones, read
        first) and read once by the sampler."""
        t, c = self.spec.code_length, self.spec.code_channels
        k = self._prefix_length(code, "code", (c,))
        code = self._check_float(code, "code", (None, k or t, c), checks=checks)
        self._check_generator(generator)
        code = self._cast(code, "code", self.dtype, checks=checks)
        b, s = code.shape[0], self.spec.image_size
        work = state_dtype(self.dtype)
        if noise is None:
            noise = torch.randn(b, 3, s, s, generator=generator, device=code.device, dtype=work)
        else:
            noise = self._cast(self._check_float(noise, "noise", (b, 3, s, s), checks=checks), "noise", work,
                               checks=checks)
        kept = None
        if k is not None:  # a prefix: padded (the padding absent), num_tokens at most k
            code = torch.cat((code, code.new_zeros(b, t - k, c)), dim=1)
            if num_tokens is None:
                num_tokens = k
            elif isinstance(num_tokens, int) and not isinstance(num_tokens, bool) and num_tokens > k:
                raise ValueError(f"num_tokens must be at most {k}: the input is a prefix of {k} tokens, got {num_tokens}")
        if num_tokens is not None:
            prefix = {} if k is None else {"top": k, "why": f"the input is a prefix of {k} tokens"}
            kept = self._check_num_tokens(num_tokens, b, "num_tokens", checks=checks, **prefix)
        cond = self._conditioning(code, num_tokens=kept)
        return sample(self.decoder_velocity, noise, cond, self._sampler_spec(sampler),
                      null_cond=torch.zeros_like(cond), return_intermediates=return_intermediates,
                      enable_grad=enable_grad, decoder_dtype=self.dtype, checks=checks)

    def detokenize(self, tokens: Tensor, **kw: Any) -> Tensor:
        """Tokens (B, T) -> images (B, 3, H, W). Keyword arguments as for :meth:`decode`; a
        prefix (B, k), k < T, decodes from those k tokens only (``num_tokens``, as there). One
        host sync (the tokens' range is read with the decode's checks) for the built-in quantizers.
        ValueError for a continuous bottleneck (no tokens)."""
        self._require_tokens("detokenize")
        checks = ValueChecks()
        k = self._prefix_length(tokens, "tokens", ())
        return self._decode(self._tokens_to_code(tokens, checks, None if k is None else (None, k)), checks, **kw).images

    def reconstruct(self, images: Tensor, **kw: Any) -> Tensor:
        """Encode, quantize and decode. Keyword arguments as for :meth:`decode`. One host sync
        (the images' checks are read with the decode's). The code is the quantizer's inference
        code (``Quantizer.quantize``: deterministic in either mode; ``kl`` decodes its mean)."""
        checks = ValueChecks()
        with torch.no_grad():
            code = self.quantize(self._encode(self._check_images(images, checks=checks)), losses=False).values
        return self._decode(code, checks, **kw).images

    # ------------------------------------------------------------------ tiles: images of any size
    def tile_grid(self, height: int, width: int, *, overlap: Optional[int] = None) -> TileGrid:
        """The grid of ``spec.image_size`` tiles covering a ``height`` x ``width`` image
        (:func:`flowmo.data.tiles.tile_grid`; ``overlap`` pixels at least between neighbours,
        default ``image_size // 4``). ValueError for an image smaller than the model's size."""
        s = self.spec.image_size
        return tile_grid(height, width, s, s // 4 if overlap is None else overlap)

    def _check_grid(self, grid: Any) -> TileGrid:
        if not isinstance(grid, TileGrid) or grid.tile != self.spec.image_size:
            raise TypeError(f"grid must be a TileGrid of tiles of the model's image size ({self.spec.image_size}; "
                            f"FlowMo.tile_grid makes one), got {describe(grid) if not isinstance(grid, TileGrid) else f'tiles of {grid.tile}'}")
        return grid

    def _check_any_size(self, images: Any, overlap: Optional[int], checks: ValueChecks) -> tuple[Tensor, TileGrid]:
        """Images (B, 3, H, W) of any H, W >= the model's size (checked as :meth:`_check_images`
        checks, values into ``checks``) and their tile grid."""
        s = self.spec.image_size
        if not isinstance(images, Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        self._check_float(images, "images", (None, 3, None, None), f"shape (B, 3, H, W) with H, W >= {s}, batch not "
                          "empty", values=False)
        self.tile_grid(s, s, overlap=overlap)  # the overlap's own errors name it
        try:
            grid = self.tile_grid(images.shape[2], images.shape[3], overlap=overlap)
        except ValueError as e:
            raise ValueError(f"images: {e}") from None
        return self._check_images(images, checks=checks, any_size=True), grid

    @torch.no_grad()
    def tokenize_tiled(self, images: Tensor, *, overlap: Optional[int] = None) -> TiledTokens:
        """Images (B, 3, H, W) in [-1, 1] of any size with H, W >= ``spec.image_size`` -> their
        :class:`~flowmo.data.tiles.TiledTokens`: int64 tokens (B, rows, cols, T), one token
        sequence per tile of :meth:`tile_grid` (``overlap`` as there), and the grid. An image of
        exactly the model's size is one tile with :meth:`tokenize`'s tokens. One host sync.
        ValueError for a smaller image (naming its size) and a continuous bottleneck."""
        self._require_tokens("tokenize_tiled")
        checks = ValueChecks()
        images, grid = self._check_any_size(images, overlap, checks)
        tiles = grid.crop(images).flatten(0, 1)
        tokens = self.quantize(self._encode(tiles), losses=False).indices
        checks.read()
        return TiledTokens(tokens.unflatten(0, (images.shape[0], grid.rows, grid.cols)), grid)

    def detokenize_tiled(self, tokens: Any, grid: Optional[TileGrid] = None, **kw: Any) -> Tensor:
        """Tiled tokens -> images (B, 3, H, W): ``tokens`` a :class:`TiledTokens`, or int64
        (B, rows, cols, T) with their ``grid``. Keyword arguments as for :meth:`decode_tiled`.
        One host sync. ValueError for a continuous bottleneck."""
        self._require_tokens("detokenize_tiled")
        if isinstance(tokens, TiledTokens):
            if grid is not None and grid != tokens.grid:
                raise ValueError("grid differs from the TiledTokens' own grid: give one of them")
            tokens, grid = tokens.tokens, tokens.grid
        grid = self._check_grid(grid)
        checks = ValueChecks()
        self._check_tokens(tokens, (None, grid.rows, grid.cols, self.spec.code_length))
        code = self.quantizer.indices_to_codes_deferred(tokens.flatten(0, 2), checks, "tokens (indices)")
        code = code.to(self.dtype).unflatten(0, tokens.shape[:3])
        return self._decode_tiled(code, grid, checks, **kw).images

    def reconstruct_tiled(self, images: Tensor, *, overlap: Optional[int] = None, **kw: Any) -> Tensor:
        """Images (B, 3, H, W) of any size with H, W >= ``spec.image_size`` -> reconstructions of
        their size: each tile of :meth:`tile_grid` encoded and quantized (the inference code, as
        :meth:`reconstruct`), then :meth:`decode_tiled` (keyword arguments as there). An image of
        exactly the model's size equals :meth:`reconstruct`'s. One host sync; works for continuous
        bottlenecks too."""
        checks = ValueChecks()
        images, grid = self._check_any_size(images, overlap, checks)
        with torch.no_grad():
            code = self.quantize(self._encode(grid.crop(images).flatten(0, 1)), losses=False).values
        return self._decode_tiled(code.unflatten(0, (images.shape[0], grid.rows, grid.cols)), grid, checks, **kw).images

    def decode_tiled(self, code: Tensor, grid: TileGrid, *, joint: bool = True, noise: Optional[Tensor] = None,
                     generator: Optional[torch.Generator] = None, sampler: Union[SamplerSpec, dict, str, None] = None,
                     return_intermediates: bool = False, enable_grad: bool = False,
                     tile_batch: Optional[int] = None) -> SampleOutput:
        """Sample an image of ``grid``'s size from one code per tile: ``code`` (B, rows, cols, T,
        C), finite, on the model's device.

        ``joint`` (default): the whole image is one ODE state (``noise`` (B, 3, H, W), default
        N(0, I) from ``generator``); at every solver step every tile's crop of it is decoded,
        conditioned on its own code, in one batch of B * rows * cols tiles, and the tiles'
        velocities are blended with the grid's partition-of-unity weights
        (:class:`~flowmo.samplers.tiles.TiledDecoder`), so overlapping tiles move together and
        no seam is left. ``joint=False``: each tile decoded on its own from its crop of the same
        noise, the results blended with the same weights (the baseline the joint decode
        improves on). Other arguments, precision and the one host sync as for :meth:`decode`;
        ``decoder_calls`` counts per tile (each joint call runs every tile); intermediates are
        whole images. An image of exactly the model's size (one tile) equals :meth:`decode`'s.
        ``tile_batch`` (joint): at most this many tiles per decoder call (None: all B * rows * cols
        at once), to bound a large image's memory; the images are the same.
        """
        return self._decode_tiled(code, grid, ValueChecks(), joint=joint, noise=noise, generator=generator,
                                  sampler=sampler, return_intermediates=return_intermediates, enable_grad=enable_grad,
                                  tile_batch=tile_batch)

    def _decode_tiled(self, code: Tensor, grid: Any, checks: ValueChecks, *, joint: bool = True,
                      noise: Optional[Tensor] = None, generator: Optional[torch.Generator] = None,
                      sampler: Union[SamplerSpec, dict, str, None] = None, return_intermediates: bool = False,
                      enable_grad: bool = False, tile_batch: Optional[int] = None) -> SampleOutput:
        grid = self._check_grid(grid)
        if not isinstance(joint, bool):
            raise TypeError(f"joint must be a bool, got {describe(joint)}")
        if tile_batch is not None and (isinstance(tile_batch, bool) or not isinstance(tile_batch, int) or tile_batch < 1):
            raise ValueError(f"tile_batch must be a positive int or None, got {describe(tile_batch)}")
        t, c = self.spec.code_length, self.spec.code_channels
        code = self._check_float(code, "code", (None, grid.rows, grid.cols, t, c), checks=checks)
        self._check_generator(generator)
        code = self._cast(code, "code", self.dtype, checks=checks)
        b, work = code.shape[0], state_dtype(self.dtype)
        shape = (b, 3, grid.height, grid.width)
        if noise is None:
            noise = torch.randn(shape, generator=generator, device=code.device, dtype=work)
        else:
            noise = self._cast(self._check_float(noise, "noise", shape, checks=checks), "noise", work, checks=checks)
        cond = self._conditioning(code.flatten(0, 2)).unflatten(0, (b, grid.count))
        spec = self._sampler_spec(sampler)
        kw = dict(return_intermediates=return_intermediates, enable_grad=enable_grad, decoder_dtype=self.dtype,
                  checks=checks)
        weights = (grid.window(device=noise.device, dtype=work), grid.coverage(device=noise.device, dtype=work))
        if joint:
            velocity = TiledDecoder(self.decoder_velocity, grid, weights, tile_batch)
            return sample(velocity, noise, cond, spec, null_cond=torch.zeros_like(cond), **kw)
        tiles = cond.flatten(0, 1)
        out = sample(self.decoder_velocity, grid.crop(noise).flatten(0, 1), tiles, spec,
                     null_cond=torch.zeros_like(tiles), **kw)
        whole = lambda z: grid.blend(z.unflatten(0, (b, grid.count)), weights)
        return SampleOutput(whole(out.images), out.decoder_calls, out.times, [whole(z) for z in out.intermediates])

    # ------------------------------------------------------------------ model folders
    def save_pretrained(self, directory: Union[str, os.PathLike], *, card: Optional[dict] = None) -> Path:
        """Write ``config.json`` (the spec), ``model.safetensors`` and the model card ``README.md``
        (:func:`flowmo.folders.card.model_card`: the Hub's metadata header and the model in words;
        ``card`` passes its keyword arguments, e.g. ``{"license": "mit", "training": {...},
        "evaluation": {...}, "name": "user/repo"}``), each atomically, into ``directory``.

        When the spec names components registered outside flowmo, ``config.json`` also lists
        the modules that registered them (key ``"imports"``; see :mod:`flowmo.folders.imports`), so that
        loading it elsewhere can say what to import. A component defined in ``__main__`` (a
        script or notebook) cannot be imported elsewhere: a warning says so.

        Raises ValueError when ``directory`` holds another kind of folder's ``config.json`` (a
        generator folder, a training run, a file flowmo does not know;
        :func:`flowmo.data.folder_kinds.check_folder_kind`); a tokenizer folder is overwritten.
        """
        from flowmo.folders.model_folder import save_model_folder

        return save_model_folder(self, directory, card=card)

    @classmethod
    def from_pretrained(cls, directory: Union[str, os.PathLike], *, device: Union[str, torch.device, None] = None,
                        dtype: Optional[torch.dtype] = None, revision: Optional[str] = None,
                        subfolder: Optional[str] = None, token: Union[str, bool, None] = None,
                        cache_dir: Union[str, os.PathLike, None] = None) -> "FlowMo":
        """Load a folder written by :meth:`save_pretrained` (or ``flowmo convert``), a released
        model by name, or a model folder in a Hugging Face Hub repository.

        ``directory``: the model folder (str or os.PathLike) holding ``config.json`` and
        ``model.safetensors``; or, when no such local path exists, a released name
        (``"flowmo_lo"``, ``"flowmo_hi"``: downloaded through ``huggingface_hub`` and converted
        once into flowmo's cache, :mod:`flowmo.folders.hub`) or a Hub repository id ``"user/repo"``
        holding a model folder (at ``revision``, in ``subfolder``; ``token`` and ``cache_dir`` go
        to the Hub client; its offline mode ``HF_HUB_OFFLINE=1`` is honoured). These need the
        optional ``huggingface_hub`` (``pip install 'flowmo[hub]'``: ImportError saying so).
        ``device``: where to put the model (a device name such as
        ``"cpu"``, ``"cuda:0"``, a ``torch.device``; None: the CPU); ``dtype``: a floating
        ``torch.dtype`` (None: float32). Returns the model in eval mode.

        Raises TypeError for a ``directory`` of another type, ValueError naming the argument
        for a ``directory`` that is one of the folder's files (it says to pass the folder),
        for another kind of folder or file (a generator folder, a training run or checkpoint, a
        token set, ...: the message names the kind found, :func:`flowmo.data.folder_kinds.wrong_kind`)
        and for a malformed or unavailable ``device``, FileNotFoundError for a missing folder
        or file, ValueError for a damaged config or weights file, and ValueError when
        ``config.json`` names a component that is not registered (a quantizer, time grid, ...
        registered in your own module): the message names the component and the module(s) the
        file's ``"imports"`` lists, to import first (``import my_pkg.vq``; on the command line
        ``--import my_pkg.vq``). Loading never imports a module by itself. Also ValueError naming
        the module when the components are not registered by the modules ``"imports"`` records
        (:func:`flowmo.folders.imports.check_recorded_modules`): a recorded module that is not imported
        (it may have replaced a built-in name, which would otherwise load silently as the
        built-in), or a component registered now by a module the file does not record.
        """
        from flowmo.folders.hub import model_source
        from flowmo.folders.model_folder import load_arguments, load_model_folder

        device = load_arguments(directory, device, dtype)
        folder = model_source(directory, revision=revision, subfolder=subfolder, token=token, cache_dir=cache_dir,
                              model_class=cls)
        return load_model_folder(cls, directory, folder, device=device, dtype=dtype)

    def compile(self, **kwargs: Any) -> "FlowMo":
        """Compile every transformer block with ``torch.compile`` (in place; off unless called).

        Only each backbone's :meth:`~flowmo.blocks.Backbone.compile_units` are compiled (the
        MM-DiT's blocks): the backbone's loop, its cached RoPE tables and the samplers stay in
        Python, so one compiled block serves every block, step and batch size. ``kwargs`` go to
        ``torch.compile`` (e.g. ``mode="max-autotune"``).
        """
        for backbone in (self.encoder, self.decoder):
            for unit in backbone.compile_units():
                unit.compile(**kwargs)
        return self

    # ------------------------------------------------------------------ training losses
    @property
    def flow_loss(self) -> FlowLoss:
        """The spec's flow loss (:class:`flowmo.losses.FlowLoss`), built on first use."""
        if self._flow_loss is None:
            self._flow_loss = FLOW_LOSSES.build(self.spec.flow_loss)
        return self._flow_loss

    @property
    def posttrain_objective(self) -> PosttrainObjective:
        """The spec's post-training objective (:class:`flowmo.losses.PosttrainObjective`), built on
        first use; TypeError unless its ``needs_teacher`` is a bool, True only when its
        ``__call__`` takes ``teacher=``."""
        if self._posttrain is None:
            objective = POSTTRAIN_OBJECTIVES.build(self.spec.posttrain)
            _check_teacher_capability(objective)
            self._posttrain = objective
        return self._posttrain

    # ------------------------------------------------------------------ the teacher
    def set_teacher(self, state: Optional[Mapping[str, Tensor]] = None) -> None:
        """Freeze a copy of the decoder as the teacher of a distillation objective
        (``posttrain.needs_teacher``): the decoder's current weights, or ``state``: the decoder's
        weights as :meth:`teacher_state` returns them (keys without the ``decoder.`` prefix) or a
        whole model's state dict (its ``decoder.*`` entries are taken). Call it after loading the
        weights the teacher should have (the trainer calls it after ``train.init_from``).

        The teacher is not a submodule: it is not in :meth:`state_dict`, not saved by
        :meth:`save_pretrained` and never trained; ``.to()`` / ``.double()`` move and cast it with
        the model. Raises TypeError when ``state`` is not a mapping of dense tensors, and
        StateDictMismatchError (a ValueError) naming the keys when its keys or shapes do not fit
        the decoder or it holds NaN / Inf values."""
        from .state_dicts import check_finite, check_state_dict

        teacher = copy.deepcopy(self.decoder)
        if state is not None:
            if not isinstance(state, Mapping):
                raise TypeError(f"state must be a mapping name -> tensor (the decoder's), got {describe(state)}")
            bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)
                   or v.layout != torch.strided or v.device.type == "meta"]
            if bad:
                raise TypeError(f"state's keys must be parameter names (str), its values dense tensors: {bad[:5]}")
            if any(k.startswith("decoder.") for k in state):
                state = {k[len("decoder."):]: v for k, v in state.items() if k.startswith("decoder.")}
            check_state_dict({k: tuple(v.shape) for k, v in teacher.state_dict().items()}, dict(state),
                             "the teacher's state (the decoder's weights, keys without 'decoder.')")
            check_finite(state, "the teacher's state")
            teacher.load_state_dict(state)
        else:
            check_finite(teacher.state_dict(), "the decoder (the teacher would copy it)")
        teacher.requires_grad_(False)
        teacher.eval()
        self.__dict__["_teacher"] = teacher  # bypasses nn.Module registration on purpose

    def teacher_state(self) -> dict[str, Tensor]:
        """A copy of the teacher decoder's weights (keys without the ``decoder.`` prefix; editing
        it leaves the teacher as it is); ValueError when :meth:`set_teacher` was not called."""
        if self._teacher is None:
            raise ValueError("this model has no teacher (call set_teacher() first)")
        return {k: v.detach().clone() for k, v in self._teacher.state_dict().items()}

    def teacher_velocity(self, x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """:meth:`decoder_velocity` of the frozen teacher (same arguments and shapes)."""
        if self._teacher is None:
            raise ValueError("this model has no teacher (call set_teacher() first)")
        return self._decoder_velocity(self._teacher, x_t, t, cond)

    def loss(self, images: Tensor, *, t: Union[Tensor, float, None] = None, noise: Optional[Tensor] = None,
             cfg_dropout: Union[bool, Tensor] = True, quantizer_noise: Optional[Tensor] = None,
             generator: Optional[torch.Generator] = None, check_values: bool = True,
             num_tokens: Union[bool, Tensor] = True) -> LossOutput:
        """Stage 1A: rectified flow on the decoder plus the quantizer's (and perceptual) terms.

        ``t`` (a number or (B,), in [0, 1]) and ``noise`` (finite, like images) default to draws
        from the spec's time sampler and N(0, I); ``cfg_dropout`` is True (drawn from
        ``generator``), False, or the (B,) keep mask of :meth:`loss_draws`;
        ``quantizer_noise`` (a stochastic quantizer's draws, ``kl``'s eps: finite float (B, T,
        C); refused for a deterministic quantizer) defaults to the quantizer's ``draw_noise``
        from ``generator`` (used in training mode). The draws are made in this order:
        ``quantizer_noise``, ``t``, ``noise``, then the flow loss's dropout, then (with
        ``spec.nested_dropout``) the tokens kept (:meth:`loss_draws` makes the same).
        ``num_tokens`` (a model with ``spec.nested_dropout`` only): True draws each image's k
        (:meth:`draw_num_tokens`), False keeps all T, or the (B,) int64 k in [1, T] of
        :meth:`loss_draws`; the decoder is conditioned on each image's first k tokens only. A non-finite total raises ValueError in eval mode and is returned in
        training mode (the trainer skips and counts such steps, and all ranks must agree on that).

        ``check_values=False`` skips every check that reads values (images finite and in
        [-1, 1], ``t`` in [0, 1], ``noise`` and ``quantizer_noise`` finite; they are skipped
        under ``torch.compile`` too) so that the call makes no host sync: for a caller whose
        inputs are right by construction (the trainer: its data readers check images on the
        host, ``t``, ``noise`` and ``quantizer_noise`` come from :meth:`loss_draws`). The
        checks of types, shapes and devices read no value and are always made.

        Raises:
            TypeError / ValueError: an argument of the wrong type, shape, dtype or device
                (``cfg_dropout``: a bool or a (B,) bool tensor), or, with ``check_values``, a
                value out of its range; each names the argument.
        """
        checks = check_values and not torch.compiler.is_compiling()
        images = self._check_images(images, values=checks)
        self._check_generator(generator)
        b = images.shape[0]
        self._check_cfg_dropout(cfg_dropout, b)
        if quantizer_noise is None:
            quantizer_noise = self._draw_quantizer_noise(b, generator, images.device)
        else:
            quantizer_noise = self._check_quantizer_noise(quantizer_noise, b, "quantizer_noise", values=checks)
        q = self._quantize(self._encode(images), quantizer_noise)
        if t is None:
            t = self.time_sampler.sample(b, generator=generator, device=images.device)
        else:
            t = self._check_times(t, b, "t", values=checks)
        if noise is None:
            noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
        else:
            noise = self._check_float(noise, "noise", tuple(images.shape), f"the shape of images {tuple(images.shape)}",
                                      values=checks)
            noise = self._cast(noise, "noise", images.dtype) if checks else noise.to(images.dtype)
        terms: dict[str, Tensor] = {}
        kept = self._num_tokens(num_tokens, b, images.device, checks)
        if kept is True:  # the draws in loss_draws' order: the flow loss's dropout, then k
            drawn = self.flow_loss.draw_dropout(b, generator, images.device) if cfg_dropout is True else None
            cfg_dropout = cfg_dropout if drawn is None else drawn
            kept = self.draw_num_tokens(b, generator=generator, device=images.device)
        cond = self._conditioning(q.values, num_tokens=kept)
        _merge_terms(terms, dict(self.flow_loss(self.decoder_velocity, images, cond, t,
                                                noise, dropout=cfg_dropout, generator=generator)), "the flow loss")
        _merge_terms(terms, {f"quantizer/{k}": v for k, v in q.losses.items()}, "the quantizer")
        return self._loss_output(terms)

    def draw_num_tokens(self, batch: int, *, generator: Optional[torch.Generator] = None,
                        device: Any = None) -> Tensor:
        """k for each of ``batch`` images, int64 (batch,): T with probability
        ``full_probability``, else uniform over ``spec.nested_dropout.choices(T)``
        (:class:`~flowmo.spec.NestedDropoutSpec`), from ``generator`` on ``device`` (the choice
        drawn first, then, when ``full_probability`` > 0, one uniform per image). ValueError for
        a model without ``nested_dropout``."""
        nd = self.spec.nested_dropout
        if nd is None:
            raise ValueError("draw_num_tokens is for a model trained with nested dropout (spec.nested_dropout); "
                             "this one keeps all its tokens")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 0:
            raise ValueError(f"batch must be the number of images (an int >= 0), got {batch!r}")
        self._check_generator(generator)
        choices = nd.choices(self.spec.code_length)
        pick = torch.randint(len(choices), (batch,), generator=generator, device=device)
        k = pick + choices[0]  # uniform: min_tokens .. T; pow2: mapped below (made on the device: no host copy)
        if nd.distribution == "pow2":
            for j, c in enumerate(choices):
                k = torch.where(pick == j, c, k)
        if nd.full_probability > 0:
            full = torch.rand(batch, generator=generator, device=device) < nd.full_probability
            k = torch.where(full, self.spec.code_length, k)
        return k

    def _num_tokens(self, num_tokens: Any, b: int, device: torch.device, checks: bool) -> Union[bool, Tensor, None]:
        """The loss's ``num_tokens``: True (draw; only with nested dropout), None (all tokens) or
        a checked (b,) int64 tensor."""
        if isinstance(num_tokens, bool):
            return True if num_tokens and self.spec.nested_dropout is not None else None
        if self.spec.nested_dropout is None:
            raise ValueError("num_tokens is for a model with spec.nested_dropout; this one keeps all its tokens: "
                             "leave it True")
        if num_tokens is None:
            raise TypeError(f"num_tokens must be True (draw k), False (all tokens) or a ({b},) integer tensor of "
                            "tokens kept, got None")
        return self._check_num_tokens(num_tokens, b, "num_tokens", values=checks)

    def _check_num_tokens(self, k: Any, b: int, name: str, *, values: bool = True,
                          checks: Optional[ValueChecks] = None, top: Optional[int] = None,
                          why: str = "the model's code_length") -> Tensor:
        """An int or an integer (b,) tensor of tokens kept, each in [1, T], on the model's device
        -> int64 (b,). With ``values`` a tensor's range, [1, ``top``] (default T; ``why`` says
        whence the bound), is read now (one host sync) or added to ``checks``."""
        t = self.spec.code_length
        if isinstance(k, int) and not isinstance(k, bool):
            if not 1 <= k <= t:
                raise ValueError(f"{name} must be in [1, {t}] (the model's code_length), got {k}")
            return torch.full((b,), k, dtype=torch.int64, device=self.device)
        if not isinstance(k, Tensor) or k.is_floating_point() or k.is_complex() or k.dtype == torch.bool:
            raise TypeError(f"{name} must be an int or a ({b},) integer tensor of tokens kept, got {describe(k)}")
        self._check_layout(k, name, (b,), f"shape ({b},)")
        if values:
            top = t if top is None else top
            bad = lambda: ValueError(f"{name} must lie in [1, {top}] ({why}), got values in [{int(k.min())}, "
                                     f"{int(k.max())}]")
            if checks is not None:
                checks.add((k >= 1) & (k <= top), bad)
            elif k.numel() and not bool(((k >= 1) & (k <= top)).all()):
                raise bad()
        return k.long()

    def loss_draws(self, images: Tensor, generator: Optional[torch.Generator] = None) -> Optional[dict[str, Any]]:
        """Every random draw of ``loss(images, generator=generator)``, made beforehand, in the
        order :meth:`loss` makes them: ``{"quantizer_noise": a stochastic quantizer's draws
        (``kl``: float32 (B, T, C)) or None, "t": (B,) float32, "noise": (B, 3, H, W) in the model's dtype,
        "cfg_dropout": (B,) bool keep mask or False}`` (and, with ``spec.nested_dropout``,
        ``"num_tokens"``: (B,) int64), so that ``loss(images, **draws)`` gives
        what ``loss(images, generator=generator)`` gives, with no generator inside
        (``torch.compile`` cannot trace one). None when the flow loss cannot draw its dropout
        beforehand (:meth:`flowmo.losses.FlowLoss.draw_dropout`). ``images`` are only read for
        their shape, dtype and device (checked here without reading values: TypeError /
        ValueError as in :meth:`loss`); ``noise`` has the model's dtype."""
        images = self._check_images(images, values=False)
        self._check_generator(generator)
        b = images.shape[0]
        quantizer_noise = self._draw_quantizer_noise(b, generator, images.device)
        t = self.time_sampler.sample(b, generator=generator, device=images.device)
        noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=self.dtype)
        keep = self.flow_loss.draw_dropout(b, generator, images.device)
        if keep is None:
            return None
        draws = {"quantizer_noise": quantizer_noise, "t": t, "noise": noise, "cfg_dropout": keep}
        if self.spec.nested_dropout is not None:
            draws["num_tokens"] = self.draw_num_tokens(b, generator=generator, device=images.device)
        return draws

    def posttrain_loss(self, images: Tensor, *, generator: Optional[torch.Generator] = None,
                       noise: Optional[Tensor] = None, u: Optional[Tensor] = None,
                       cfg_dropout: Union[bool, Tensor] = True, quantizer_noise: Optional[Tensor] = None,
                       check_values: bool = True) -> LossOutput:
        """Stage 1B (the release's recipe): the flow loss (weighted by ``posttrain.flow_weight``),
        the quantizer's terms and the post-training objective's terms, with the encoder and
        quantizer frozen. The quantizer's terms are computed without gradients (nothing they
        depend on trains in Stage 1B), with the quantizer in eval mode (a stateful quantizer's
        state, e.g. VQ's EMA codebook, is not updated; its outputs and terms are those of
        training mode); they are reported, as the release's Stage 1B loss holds them. ``spec.loss_terms("1b")`` lists the terms.

        ``noise`` (the chain's starting noise) must be a finite floating tensor of the images'
        shape on the model's device; ``u`` (the objective's draws) goes to the objective, which
        documents and checks it (``mode_seeking``: (B, K + 1), finite, non-negative, each row's
        entries 1..K with a positive sum); both default to draws from ``generator``.
        ``quantizer_noise``: as in :meth:`loss` (a stochastic quantizer, ``kl``, samples its code
        in training mode here too, as the decoder saw it in Stage 1A; drawn first). Bad values
        raise TypeError / ValueError naming the argument. A post-training objective whose term
        names collide with the flow loss's or the quantizer's raises ValueError (a term would
        silently replace another). As in :meth:`loss`, a non-finite total raises ValueError in
        eval mode and is returned in training mode. ``check_values=False``: as in :meth:`loss`
        (the images' and ``noise``'s values are not read).
        """
        checks = check_values and not torch.compiler.is_compiling()
        images = self._check_images(images, values=checks)
        self._check_generator(generator)
        b = images.shape[0]
        self._check_cfg_dropout(cfg_dropout, b)
        if noise is not None:
            self._check_float(noise, "noise", tuple(images.shape), f"the shape of images {tuple(images.shape)}",
                              values=checks)
        objective, spec = self.posttrain_objective, self.spec.posttrain
        if objective.needs_teacher and self._teacher is None:
            raise ValueError(f"the posttrain objective {spec.name!r} needs a teacher: call model.set_teacher() first")
        if quantizer_noise is None:
            quantizer_noise = self._draw_quantizer_noise(b, generator, images.device)
        else:
            quantizer_noise = self._check_quantizer_noise(quantizer_noise, b, "quantizer_noise", values=checks)
        # a quantizer with state (VQ's EMA codebook) runs in eval mode: the frozen tokenizer's state
        # does not move; a stochastic one (kl) samples in training mode, as in Stage 1A
        frozen = _frozen(self.quantizer) if self.quantizer.updated_state else contextlib.nullcontext()
        with torch.no_grad(), frozen:
            q = self._quantize(self._encode(images), quantizer_noise)
        cond = self._conditioning(q.values)
        terms: dict[str, Tensor] = {}
        if spec.flow_weight > 0:
            t = self.time_sampler.sample(b, generator=generator, device=images.device)
            eps = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
            velocity = self.decoder_velocity
            if objective.checkpoints_decoder and torch.is_grad_enabled():
                # recompute this decoder call in backward too: the chain's calls are checkpointed,
                # and holding this one's activations would set the step's memory peak
                def velocity(x_t: Tensor, t_: Tensor, c: Tensor) -> Tensor:
                    return torch.utils.checkpoint.checkpoint(self.decoder_velocity, x_t, t_, c, use_reentrant=False)
            flow = self.flow_loss(velocity, images, cond, t, eps, dropout=cfg_dropout,
                                  generator=generator)
            _merge_terms(terms, {k: spec.flow_weight * v for k, v in flow.items()}, "the flow loss")
        _merge_terms(terms, {f"quantizer/{k}": v for k, v in q.losses.items()}, "the quantizer")
        kw: dict[str, Any] = {"teacher": self.teacher_velocity} if objective.needs_teacher else {}
        extra = objective(self.decoder_velocity, images, cond, noise=noise, u=u, generator=generator, **kw)
        _merge_terms(terms, extra, f"the post-training objective {spec.name!r}")
        return self._loss_output(terms)

    def _loss_output(self, terms: dict[str, Tensor]) -> LossOutput:
        """``terms`` and their float32 sum; in eval mode a non-finite sum raises ValueError (in
        training mode it is returned: a training loop must see it, not an exception)."""
        total = torch.stack([v.float() for v in terms.values()]).sum()
        if not self.training and not bool(torch.isfinite(total)):
            raise ValueError(f"the loss is not finite: noise/images too large for {self.dtype}, or weights not finite")
        return LossOutput(total, terms)

    def forward(self, images: Tensor, *, objective: str = "flow", **kw: Any) -> LossOutput:
        """The training loss (so that DistributedDataParallel sees the computation):
        ``objective="flow"`` is :meth:`loss`, ``"posttrain"`` is :meth:`posttrain_loss`."""
        if objective == "flow":
            return self.loss(images, **kw)
        if objective == "posttrain":
            return self.posttrain_loss(images, **kw)
        raise ValueError(f"objective must be 'flow' or 'posttrain', got {objective!r}")

