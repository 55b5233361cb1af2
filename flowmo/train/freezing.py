"""Which parameters the trainer trains: the dry-run that freezes parameters no loss can change,
and Stage 1A's encoder freeze at ``train.freeze_encoder_at``."""

from __future__ import annotations

import torch

from .sampler import derive_seed

__all__ = ["FreezingMixin"]


class FreezingMixin:
    """:class:`~flowmo.train.Trainer`'s freezing methods (they use its model, config, step,
    optimizer and DDP wrapper)."""

    def _freeze_unused(self) -> None:
        """Parameters no loss can change are found with one dry-run backward on random images and
        frozen: those without a gradient or with an exactly zero one (the encoder's time and
        modulation layers, heads whose output is unused, the encoder's latent input weight, whose
        input is all zeros, ...). DDP then needs no unused-parameter search."""
        s = self.config.model.image_size
        g = torch.Generator(self.device).manual_seed(derive_seed(self.tc.seed, "dry-run"))
        x = torch.rand(2, 3, s, s, generator=g, device=self.device) * 2 - 1
        self.model.train()
        out = self.model(x, objective=self.objective, generator=g, cfg_dropout=False)
        out.total.backward()
        self.unused = [n for n, p in self.model.named_parameters()
                       if p.requires_grad and (p.grad is None or not bool(p.grad.any()))]
        for n, p in self.model.named_parameters():
            p.grad = None
            if n in self.unused:
                p.requires_grad_(False)

    def _freeze_encoder(self) -> None:
        for p in self.model.encoder.parameters():
            p.requires_grad_(False)

    @property
    def encoder_frozen(self) -> bool:
        """True when no encoder parameter is trained any more."""
        return not any(p.requires_grad for p in self.model.encoder.parameters())

    def _apply_encoder_freeze(self, *, wrap: bool = True) -> None:
        """Stage 1A's ``train.freeze_encoder_at = N``: once the step counter reads N (N steps
        done; at construction for N = 0 or a resumed run already past N), freeze the encoder and
        rebuild the optimizer (and the DDP wrapper, with ``wrap``) for the parameters left.
        Idempotent: nothing happens when the encoder is frozen already."""
        f = self.tc.freeze_encoder_at
        if self.tc.stage != "1a" or f is None or self.step < f or self.encoder_frozen:
            return
        self._freeze_encoder()
        self.optimizer = self._make_optimizer()
        if wrap:
            self.ddp = self._wrap()
        if self.ctx.main:
            what = "the encoder is never trained" if f == 0 else f"the encoder was trained for {f} steps"
            self._log(f"step {self.step}: encoder frozen (train.freeze_encoder_at={f}: {what}); "
                      "optimizer rebuilt for the decoder")
