"""Multi-process evaluation: rank 0 calibrates and plans once, every rank applies the same plan."""

from __future__ import annotations

from typing import Callable, TypeVar

import torch.distributed as dist

T = TypeVar("T")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def compute_on_rank0(compute: Callable[[], T]) -> T:
    """Run ``compute`` on rank 0 only and return its result on every rank (any picklable object).

    An exception on rank 0 is re-raised on every rank, so no process waits forever.
    """
    if not is_distributed():
        return compute()
    payload: list = [None]
    if dist.get_rank() == 0:
        try:
            payload[0] = ("ok", compute())
        except Exception as error:  # re-raised below on every rank
            payload[0] = ("error", error)
    dist.broadcast_object_list(payload, src=0)
    status, value = payload[0]
    if status == "error":
        raise value
    return value
