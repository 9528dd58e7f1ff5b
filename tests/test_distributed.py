"""Every rank ends with rank 0's plan, or rank 0's error (two gloo processes on the CPU)."""

import datetime
import socket
import threading

import torch.distributed as dist
import torch.multiprocessing as mp

from lmms_topo_plugin.distributed import Rank0Failure, compute_on_rank0, is_distributed
from lmms_topo_plugin.errors import ModelArgsError

ERROR_MESSAGE = "model_args: calib_task='no_such_task' is not an lmms-eval task"


class StepError(Exception):
    """An exception whose ``args`` cannot rebuild it: pickling it works, unpickling it does not."""

    def __init__(self, step, message):
        super().__init__(f"{step}: {message}")


def _with_a_lock():
    error = ValueError("scores are locked")
    error.lock = threading.Lock()  # unpicklable state
    return error


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _init(rank: int, port: int) -> None:
    # a timeout, so that a rank left waiting in a broadcast fails the test instead of hanging it
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))


def _worker(rank: int, port: int, results) -> None:
    _init(rank, port)
    calls = []

    def plan():
        calls.append(rank)
        return {"removed_layers": [2, 5], "computed_by": rank}

    results[rank] = (compute_on_rank0(plan), calls)
    dist.destroy_process_group()


def _outcome(compute):
    try:
        return ("returned", compute_on_rank0(compute))
    except Exception as error:  # what this rank sees
        return ("raised", f"{type(error).__module__}.{type(error).__qualname__}", str(error))


def _failing_worker(rank: int, port: int, results) -> None:
    _init(rank, port)
    calls = []

    def failing_plan():
        calls.append(rank)
        raise ModelArgsError(ERROR_MESSAGE)

    def fail_with(error):
        raise error

    outcomes = [_outcome(failing_plan), _outcome(lambda: fail_with(StepError("calibrate", "boom"))),
                _outcome(lambda: fail_with(_with_a_lock())), _outcome(lambda: (lambda: "unpicklable result"))]
    # the process group is still usable afterwards: the next collective call completes on both ranks
    after = compute_on_rank0(lambda: f"rank {rank} computed this")
    results[rank] = (outcomes, calls, after)
    dist.destroy_process_group()


def _name(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def test_plan_is_computed_once_and_shared():
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_worker, args=(_free_port(), results), nprocs=2, join=True)
    for rank in (0, 1):
        plan, calls = results[rank]
        assert plan == {"removed_layers": [2, 5], "computed_by": 0}
        assert calls == ([0] if rank == 0 else [])


def test_an_error_on_rank0_is_raised_on_every_rank():
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_failing_worker, args=(_free_port(), results), nprocs=2, join=True)
    assert results[0][0][3] == results[1][0][3]  # an unsendable result fails every rank alike, rank 0 included
    for rank in (0, 1):
        outcomes, calls, after = results[rank]
        # a picklable exception: the same type and message on every rank
        assert outcomes[0] == ("raised", _name(ModelArgsError), ERROR_MESSAGE), (rank, outcomes[0])
        assert calls == ([0] if rank == 0 else [])
        # exceptions that do not survive pickling: rank 0 raises its own, the others name its type and message
        if rank == 0:
            assert outcomes[1] == ("raised", _name(StepError), "calibrate: boom")
            assert outcomes[2] == ("raised", "builtins.ValueError", "scores are locked")
        else:
            assert outcomes[1] == ("raised", _name(Rank0Failure), "rank 0 failed: StepError: calibrate: boom")
            assert outcomes[2] == ("raised", _name(Rank0Failure), "rank 0 failed: ValueError: scores are locked")
        status, error_type, message = outcomes[3]
        assert (status, error_type) == ("raised", _name(Rank0Failure)), (rank, outcomes[3])
        assert message.startswith("rank 0's result (function) cannot be sent to the other ranks: "), message
        assert after == "rank 0 computed this"


def test_without_a_process_group_compute_runs_here():
    assert not is_distributed()
    calls = []
    assert compute_on_rank0(lambda: calls.append("here") or "result") == "result"
    assert calls == ["here"]
