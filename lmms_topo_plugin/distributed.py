"""Multi-process evaluation: rank 0 calibrates and plans once, every rank applies the same plan."""

from __future__ import annotations

import os
import pickle
from typing import Any, Callable, TypeVar

import torch.distributed as dist

T = TypeVar("T")


class Rank0Failure(RuntimeError):
    """Raised on every rank when rank 0's result or exception cannot be sent to the other ranks as it is."""


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def join_launched_processes() -> str | None:
    """Under ``torchrun``/``accelerate launch`` (``WORLD_SIZE`` > 1): join the process group through accelerate
    (whose state lmms-eval gathers results with; nccl with CUDA, else gloo) and return this process's device
    (``cuda:LOCAL_RANK``, or ``None`` on CPU); ``None`` otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    PartialState()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else None


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def compute_on_rank0(compute: Callable[[], T]) -> T:
    """Run ``compute`` on rank 0 only and return its result on every rank (any picklable object).

    An exception on rank 0 is re-raised on every rank, so no process waits forever: rank 0 raises its own
    exception object, the others a copy of it (same type and message). An exception that does not survive pickling
    (unpicklable state, an ``__init__`` that its ``args`` cannot rebuild) reaches the other ranks as a
    :class:`Rank0Failure` naming its type and message; an unpicklable result is a :class:`Rank0Failure` on every
    rank, rank 0 included, so that all ranks fail alike.
    """
    if not is_distributed():
        return compute()
    payload: list = [None]
    own_error: BaseException | None = None
    if dist.get_rank() == 0:
        try:
            payload[0] = ("ok", compute())
        except Exception as error:  # re-raised below on every rank
            own_error = error
            payload[0] = ("error", error)
        payload[0] = _sendable(payload[0])
    dist.broadcast_object_list(payload, src=0)
    status, value = payload[0]
    if own_error is not None:
        raise own_error
    if status == "failure":
        raise Rank0Failure(value)
    if status == "error":
        raise value
    return value


def _sendable(item: tuple[str, Any]) -> tuple[str, Any]:
    """``item`` if it survives a pickle round trip (what the other ranks will do), else a one-line description."""
    status, value = item
    try:
        pickle.loads(pickle.dumps(item))
        return item
    except Exception as problem:
        if status == "error":
            return "failure", f"rank 0 failed: {type(value).__name__}: {value}"
        return "failure", (f"rank 0's result ({type(value).__name__}) cannot be sent to the other ranks: "
                           f"{type(problem).__name__}: {problem}")
