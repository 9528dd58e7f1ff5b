#!/usr/bin/env python3
"""Speed and memory of topology scoring: point clouds → layer scores, fast vs classic zigzag engine.

    .venv/bin/python bench/bench_topology.py                       # N = 512, 1024, 2048 (fast); 128, 256 (both)
    .venv/bin/python bench/bench_topology.py --sizes 512 --classic-sizes 512

Data: seeded drifting clouds (``lmms_topo_plugin.topology.synthetic``) of ``--depths`` depths in ``--dim``
dimensions with one abrupt transition. Each size runs in a fresh process so that its peak RSS is its own.
Columns: ``total`` = ``analyze_topology`` wall time (kNN graphs, flag complexes, zigzag, scores, EPI);
``zigzag`` = building the zigzag and running the engine on precomputed complexes; ``same`` = whether the
classic engine gives identical scores; ``peak RSS`` = the process's peak resident memory, ``input`` = the
point clouds' own size (included in the peak).

Writes every measured row, the command line and the machine to ``--out`` (default
``bench/results/topology.json``, atomically); ``bench/readme_tables.py`` renders the README's speed table from it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import shlex
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

TARGET_N, TARGET_S = 512, 3.0
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "topology.json"


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - start


def measure(n: int, depths: int, dim: int, k: int, seed: int, classic: bool) -> dict:
    """One size in this (fresh) process: fast scores, peak RSS, and optionally the classic engine."""
    from lmms_topo_plugin.topology import analyze_topology
    from lmms_topo_plugin.topology.complexes import knn_flag_complex
    from lmms_topo_plugin.topology.synthetic import drifting_clouds
    from lmms_topo_plugin.topology.zigzag import build_zigzag, zigzag_barcode

    states = drifting_clouds(depths, n, dim, transition=2 * depths // 3, seed=seed)
    fast, fast_s = _timed(analyze_topology, states, k=k, engine="fast")
    row = {"n": n, "total_fast": fast_s, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "input_mb": states.numel() * 4 / 2**20, "bars": len(fast["bars_h0"]) + len(fast["bars_h1"])}
    complexes = [knn_flag_complex(states[:, depth], fast["params"]["k"]) for depth in range(depths)]
    row["simplices"] = len(build_zigzag(complexes).simplices)
    row["zigzag_fast"] = _timed(zigzag_barcode, complexes, "fast")[1]
    if classic:
        slow, row["total_classic"] = _timed(analyze_topology, states, k=k, engine="classic")
        row["zigzag_classic"] = _timed(zigzag_barcode, complexes, "classic")[1]
        row["same"] = {key: v for key, v in fast.items() if key != "params"} == {
            key: v for key, v in slow.items() if key != "params"}
    return row


def table(rows: list[dict], depths: int, dim: int) -> str:
    header = (f"{'N':>5} {'simplices':>9} {'bars':>5} {'total fast s':>12} {'zigzag fast s':>13} "
              f"{'total classic s':>15} {'zigzag classic s':>16} {'speedup total':>13} {'speedup zigzag':>14} "
              f"{'same':>5} {'peak RSS MB':>11} {'input MB':>8}")
    lines = [f"topology scoring, {depths} depths, d = {dim}", header, "-" * len(header)]
    for r in rows:
        classic = "total_classic" in r
        cells = [
            f"{r['n']:>5}", f"{r['simplices']:>9}", f"{r['bars']:>5}", f"{r['total_fast']:>12.2f}",
            f"{r['zigzag_fast']:>13.3f}",
            f"{r['total_classic']:>15.2f}" if classic else f"{'-':>15}",
            f"{r['zigzag_classic']:>16.2f}" if classic else f"{'-':>16}",
            f"{r['total_classic'] / r['total_fast']:>12.1f}x" if classic else f"{'-':>13}",
            f"{r['zigzag_classic'] / r['zigzag_fast']:>13.1f}x" if classic else f"{'-':>14}",
            f"{str(r['same']).lower():>5}" if classic else f"{'-':>5}",
            f"{r['peak_mb']:>11.0f}", f"{r['input_mb']:>8.0f}",
        ]
        lines.append(" ".join(cells))
    return "\n".join(lines)


def _shown_path(path: str) -> str:
    """``path`` relative to the repository root when it lies inside it (as the README writes commands)."""
    try:
        return str(Path(path).absolute().relative_to(ROOT))
    except ValueError:
        return path


def command_line() -> str:
    return shlex.join([_shown_path(sys.executable), _shown_path(sys.argv[0]), *sys.argv[1:]])


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_count": os.cpu_count(),
        "cpus_available": available,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "dionysus": _version("dionysus"),
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,  # other work on the box
    }


def write_json_atomic(path: Path, data: dict) -> None:
    """Write ``data`` to a temporary file in ``path``'s folder, then ``os.replace`` it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(data, indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make the result unreadable to others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048], help="N, fast engine only")
    parser.add_argument("--classic-sizes", type=int, nargs="*", default=[128, 256],
                        help="N run with both engines (classic is quadratic: about 15 s at N=256)")
    parser.add_argument("--depths", type=int, default=33)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--k", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results JSON (default: %(default)s)")
    args = parser.parse_args()
    started = datetime.now(timezone.utc)
    machine = machine_info()
    sizes = sorted(set(args.sizes) | set(args.classic_sizes))
    rows = []
    spawn = multiprocessing.get_context("spawn")
    for n in sizes:
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            rows.append(pool.submit(measure, n, args.depths, args.dim, args.k, args.seed,
                                    n in args.classic_sizes).result())
        print(f"done N={n}", flush=True)
    print(table(rows, args.depths, args.dim))
    for r in rows:
        if r["n"] == TARGET_N:
            verdict = "meets" if r["total_fast"] <= TARGET_S else "MISSES"
            print(f"N={TARGET_N}: {r['total_fast']:.2f} s {verdict} the {TARGET_S:.0f} s target")
    if hasattr(os, "getloadavg"):
        machine["loadavg_at_end"] = list(os.getloadavg())
    results = {
        "command": command_line(),
        "argv": sys.argv[1:],
        "args": {key: _shown_path(str(value)) if isinstance(value, Path) else value
                 for key, value in vars(args).items()},
        "started_utc": started.isoformat(timespec="seconds"),
        "machine": machine,
        "target": {"n": TARGET_N, "seconds": TARGET_S},
        "rows": rows,
    }
    write_json_atomic(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
