"""The interface every backbone (FlowMo's encoder and decoder transformer) implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional

from torch import Tensor, nn

__all__ = ["Backbone"]


class Backbone(nn.Module, ABC):
    """The interface of every backbone: a transformer over [latent tokens, image patches].

    Registered with :data:`flowmo.BACKBONES`; the model builds its encoder and decoder as
    ``BACKBONES.build(spec.encoder, patch_dim=3 p p, txt_in_dim=C, txt_out_dim=C)`` (decoder:
    ``C + 1`` for the channel of ones). The wiring arguments, which every backbone's
    constructor takes, are:

    - ``patch_dim``: channels of one image token, 3 * patch_size**2: a patch flattened in
      (row, column, channel) order, channels last (``b c (gh ph) (gw pw) -> b (gh gw) (ph pw c)``,
      the release's layout; see :func:`flowmo.blocks.patchify`);
    - ``txt_in_dim`` / ``txt_out_dim``: channels of one latent token in and out.

    A subclass's constructor calls ``super().__init__()`` (no arguments; this is an
    ``nn.Module``) first.

    Optional capabilities, with defaults right for a backbone like FlowMo's:

    - :meth:`compile_units` (default: the whole backbone), the modules
      :meth:`flowmo.FlowMo.compile` compiles;
    - ``outputs`` (default ``("img", "txt")``): the heads it can compute, a non-empty subset
      of ("img", "txt"); ``forward``'s ``outputs`` is a subset of it;
    - ``time_conditioning`` (default True): whether ``forward`` takes flow times; False: it
      takes only ``t=None``.

    :func:`flowmo.testing.check_backbone` checks a new backbone within what it declares.
    """

    outputs: tuple[str, ...] = ("img", "txt")
    time_conditioning: bool = True

    @abstractmethod
    def forward(
        self,
        img: Tensor,
        txt: Tensor,
        t: Optional[Tensor],
        grid: tuple[int, int],
        outputs: tuple[str, ...] = ("img", "txt"),
    ) -> tuple[Optional[Tensor], Optional[Tensor]]:
        """Run the backbone.

        Args:
            img: image tokens (B, N, patch_dim), N = rows * cols patches in row-major order,
                each patch channels last (:func:`flowmo.blocks.patchify`).
            txt: latent tokens (B, T, txt_in_dim).
            t: flow times (B,) in [0, 1] (t = 0 data, t = 1 noise), or None for a backbone
                used without time conditioning (FlowMo's encoder).
            grid: (rows, cols) of the patch grid, rows * cols = N. A backbone sees only the
                tokens, not the image, so it can check the count but not the shape: pass the
                grid :func:`~flowmo.blocks.patchify` cut, (H / p, W / p).
            outputs: which heads to compute, a non-empty subset of :attr:`outputs`.

        Returns:
            (img_out (B, N, patch_dim), txt_out (B, T, txt_out_dim)) in the parameters' dtype;
            a head not asked for in ``outputs`` is None. Sample b of each output depends only
            on sample b of the inputs.
        """

    def compile_units(self) -> tuple[nn.Module, ...]:
        """The submodules to compile with ``torch.compile`` (default: the whole backbone)."""
        return (self,)
