"""The process-group collectives of evaluation: which process this is, every process's object
gathered on every process, and one result computed on rank 0 for all (used by the
:class:`~flowmo.metrics.Evaluator` and ``flowmo eval``)."""

from __future__ import annotations

from typing import Any, Callable, Optional

__all__ = ["world_and_rank", "gather_objects", "computed_on_rank0"]


def world_and_rank(distributed: Optional[bool]) -> tuple[int, int]:
    """``(world size, rank)`` of the default process group, or ``(1, 0)`` when not distributed.

    ``distributed``: True to require an initialised group (``RuntimeError`` if there is none),
    False for one process, None for the group when one is initialised with more than one rank.
    """
    import torch.distributed as dist

    use = distributed
    active = dist.is_available() and dist.is_initialized()
    if use is None:
        use = active and dist.get_world_size() > 1
    if use and not active:
        raise RuntimeError("distributed=True but no torch.distributed process group is initialised")
    return (dist.get_world_size(), dist.get_rank()) if use else (1, 0)


def gather_objects(obj: Any, world: int) -> list:
    """Every process's ``obj`` (picklable), in rank order: ``[obj]`` for one process, else
    ``all_gather_object`` over the default group (a collective: call it on every rank)."""
    if world <= 1:
        return [obj]
    import torch.distributed as dist

    gathered: list = [None] * world
    dist.all_gather_object(gathered, obj)
    return gathered


def computed_on_rank0(fn: Callable[[], Any], world: int, rank: int) -> Any:
    """``fn()`` computed once, on rank 0, and broadcast to every rank (a collective for
    ``world > 1``); an exception raised by ``fn`` on rank 0 is re-raised on every rank."""
    if world <= 1:
        return fn()
    import torch.distributed as dist

    box: list = [None]
    if rank == 0:
        try:
            box[0] = ("ok", fn())
        except Exception as e:  # noqa: BLE001 - re-raised on every rank
            box[0] = ("error", e)
    dist.broadcast_object_list(box, src=0)
    status, payload = box[0]
    if status == "error":
        raise payload
    return payload
