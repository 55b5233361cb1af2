"""The trainer's counters, saved in every checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Counters"]


@dataclass
class Counters:
    """Non-finite losses (in total and in a row), the unreadable images skipped, images seen."""

    nonfinite_total: int = 0
    nonfinite_streak: int = 0
    skipped_images: list[str] = field(default_factory=list)
    images_seen: int = 0
