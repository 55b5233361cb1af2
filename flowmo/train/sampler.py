"""The trainer's data order: seeds derived from (seed, purpose, ...) and the step batch sampler that
gives every micro-batch of every step, on every rank, a fixed set of (epoch, index) keys."""

from __future__ import annotations

from typing import Iterator, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ["derive_seed", "StepBatchSampler"]


def derive_seed(*parts: Union[int, str]) -> int:
    """A 63-bit seed from a tuple of ints/strings (stable across processes and platforms)."""
    ints = [p if isinstance(p, int) else int.from_bytes(p.encode()[:8].ljust(8, b"\0"), "little") for p in parts]
    a, b = np.random.SeedSequence(ints).generate_state(2, dtype=np.uint32)
    return (int(a) << 31 | int(b)) & (2**63 - 1)


class _Indexed(torch.utils.data.Dataset):
    """Items addressed by (epoch, index); returns (image, newly found unreadable paths)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        before = set(getattr(self.dataset, "bad_paths", ()))
        image = self.dataset[index]
        bad = [str(p) for p in getattr(self.dataset, "bad_paths", ()) if p not in before]
        return image, bad


def _collate(items):
    images = torch.stack([i for i, _ in items])
    bad = [p for _, b in items for p in b]
    return images, bad


class StepBatchSampler(torch.utils.data.Sampler):
    """Micro-batches of (epoch, index) keys from ``start_step`` on, forever.

    Global position p of image j of micro-batch (step s, global micro m) is
    (s * world * accum + m) * batch + j with m = rank * accum + a; epoch p // n picks a
    permutation seeded by (seed, epoch); the item is perm[p % n].
    """

    def __init__(self, length: int, batch_size: int, grad_accum: int, world: int, rank: int, seed: int,
                 start_step: int = 0):
        self.n, self.b, self.accum, self.world, self.rank = length, batch_size, grad_accum, world, rank
        self.seed, self.start_step = seed, start_step
        self._perm: dict[int, Tensor] = {}

    def _permutation(self, epoch: int) -> Tensor:
        if epoch not in self._perm:
            g = torch.Generator().manual_seed(derive_seed(self.seed, "data", epoch))
            self._perm = {epoch: torch.randperm(self.n, generator=g)}
        return self._perm[epoch]

    def micro_batch(self, step: int, a: int) -> list[tuple[int, int]]:
        m = self.rank * self.accum + a
        base = (step * self.world * self.accum + m) * self.b
        out = []
        for p in range(base, base + self.b):
            epoch = p // self.n
            out.append((epoch, int(self._permutation(epoch)[p % self.n])))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        s = self.start_step
        while True:
            for a in range(self.accum):
                yield self.micro_batch(s, a)
            s += 1

    def __len__(self) -> int:  # pragma: no cover - infinite
        raise TypeError("StepBatchSampler is infinite")
