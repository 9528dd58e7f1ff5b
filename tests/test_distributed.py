"""Every rank ends with rank 0's plan (two gloo processes on the CPU)."""

import socket

import torch.distributed as dist
import torch.multiprocessing as mp

from lmms_topo_plugin.distributed import compute_on_rank0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    calls = []

    def plan():
        calls.append(rank)
        return {"removed_layers": [2, 5], "computed_by": rank}

    results[rank] = (compute_on_rank0(plan), calls)
    dist.destroy_process_group()


def test_plan_is_computed_once_and_shared():
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_worker, args=(_free_port(), results), nprocs=2, join=True)
    for rank in (0, 1):
        plan, calls = results[rank]
        assert plan == {"removed_layers": [2, 5], "computed_by": 0}
        assert calls == ([0] if rank == 0 else [])
