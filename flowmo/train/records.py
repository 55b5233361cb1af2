"""The trainer's records: ``metrics.jsonl`` (one JSON line per record, rank 0) and TensorBoard
scalars when ``train.log.tensorboard`` is on and TensorBoard is installed."""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["RecordsMixin"]


class RecordsMixin:
    """:class:`~flowmo.train.Trainer`'s metric records (they use its output folder, step and
    ``_writer``)."""

    def _record(self, metrics: dict[str, Any]) -> None:
        if not self.ctx.main:
            return
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": self.step, **metrics}) + "\n")
        if self.tc.log.tensorboard:
            if self._writer is None:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self._writer = SummaryWriter(str(self.out / "tensorboard"))
                except Exception as e:  # tensorboard not installed
                    self._writer = False
                    self._log(f"note: train.log.tensorboard is on but TensorBoard is unavailable "
                              f"({type(e).__name__}: {e}); install it (pip install tensorboard) for TensorBoard "
                              "scalars, or set train.log.tensorboard=false; the metrics are in metrics.jsonl")
            if self._writer:
                for k, v in metrics.items():
                    if isinstance(v, (int, float)) and math.isfinite(v):
                        self._writer.add_scalar(k, v, self.step)
