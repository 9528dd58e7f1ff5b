#!/usr/bin/env python3
"""Speed and memory of topology scoring (point clouds → layer scores) on real, Gaussian and synthetic clouds.

    .venv/bin/python bench/bench_topology.py        # real N = 256, 320; gaussian, synthetic N = 256..2048
    .venv/bin/python bench/bench_topology.py --kinds real,gaussian,synthetic --sizes 128 --real-sizes 64 \\
        --depths 5 --dim 64 --out /tmp/bench_small.json                                        # a quick look

Kinds of clouds ``[N, depths, d]``, measured side by side in one run:

* ``real``: the bundled model's calibration states (``last_token`` points of its calib split, as
  ``method=topology`` with ``calib_limit=N`` collects them), computed here in a process of their own; its
  depths and width are the model's (13 depths, d = 160). N from ``--real-sizes``.
* ``gaussian``: ``torch.randn(N, depths, d)`` (seeded): no structure, so the kNN graphs change at every
  depth and the zigzag has the most bars: the worst case.
* ``synthetic``: ``lmms_topo_plugin.topology.synthetic.drifting_clouds`` (slowly rotating low-dimensional
  clouds with one abrupt transition): few bars, the easy case.

Each (kind, N) runs in a fresh process, so its peak RSS is its own (the clouds included: ``input``); the
engines run one after the other in it, each with its own ``--timeout`` (a timed-out engine's process is killed,
the row records it and the remaining engines continue in a fresh process). One row holds the split
``distances`` (``complexes.knn_indices`` of every depth), ``complexes`` (``symmetrised_edges`` +
``triangles``), per engine ``zigzag`` (``build_zigzag`` + ``raw_barcode``) and ``scores``
(``bars_to_depths`` + ``consistency`` + persistence images), and per engine ``total`` =
``analyze_topology(states, k=, engine=)`` timed on its own; simplices, zigzag operations and bars per
dimension; ``same`` = whether an engine's depth bars equal the first engine's exactly. Every stage is timed
after a warm-up on a tiny cloud (imports, first calls), each engine's total before its stages; ``--repeats`` > 1
takes medians.

Writes the rows, the command line, the machine and the versions to ``--out`` (default
``bench/results/topology.json``, atomically); ``bench/pages/topology.py`` renders the results page's table from it.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import multiprocessing
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "topology.json"
KINDS = ("real", "gaussian", "synthetic")
CLASSIC = "classic"  # the quadratic reference engine, run only up to --classic-max
TARGETS = ({"kind": "gaussian", "n": 512, "seconds": 5.0}, {"kind": "real", "n": 320, "seconds": 1.0})
SPAWN = multiprocessing.get_context("spawn")


# ---------------------------------------------------------------------------------------------- child processes


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(function, repeats: int):
    """``(last value, median wall seconds)`` of ``function()`` over ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        value = function()
        times.append(time.perf_counter() - start)
    return value, statistics.median(times)


def _digest(bars: dict) -> str:
    """A hash of depth bars ``{dim: [B, 3] int array}``: equal hashes = identical bars."""
    digest = hashlib.sha256()
    for dim in sorted(bars):
        array = bars[dim].astype("int64")
        digest.update(f"{dim}:{array.shape}".encode() + array.tobytes())
    return digest.hexdigest()


def real_states(sizes: list[int], path: str, send) -> dict:
    """The bundled model's ``last_token`` calibration clouds for each N, saved to ``path`` as ``{N: tensor}``."""
    import torch
    from tqdm import tqdm
    from transformers.utils import logging as transformers_logging

    from lmms_topo_plugin.calibration.collect import calibrate
    from lmms_topo_plugin.config.prune import PruneConfig
    from lmms_topo_plugin.models.loading import load_model
    from lmms_topo_plugin.pipeline import prepare

    def config(n: int):
        return PruneConfig.from_model_args({"method": "topology", "calib_limit": str(n), "device": "cpu",
                                            "sparsity": "0.25", "topo_points": "last_token"})

    transformers_logging.disable_progress_bar()
    tqdm.set_lock(threading.RLock())  # tqdm's default lock is a multiprocessing semaphore that a child leaks
    prepared = prepare(config(sizes[0]))
    loaded = load_model(prepared.config.load, prepared.pretrained, prepared.hf_config)
    states, seconds = {}, {}
    for n in sizes:
        prompts = prepare(config(n)).calibration_prompts
        start = time.perf_counter()
        stats = calibrate(loaded.adapter, loaded.processor, prompts, ("last_token",), batch_size=32,
                          show_progress=False)
        seconds[n] = time.perf_counter() - start
        states[n] = stats["last_token"].float().contiguous()
    torch.save(states, path)
    return {"pretrained": _shown_path(str(prepared.pretrained)), "calibrate_s": {str(n): s for n, s in seconds.items()},
            "shapes": {str(n): list(tensor.shape) for n, tensor in states.items()}}


def _cloud(spec: dict):
    import torch

    if spec["kind"] == "real":
        return torch.load(spec["real_path"])[spec["n"]]
    if spec["kind"] == "gaussian":
        generator = torch.Generator().manual_seed(spec["seed"])
        return torch.randn(spec["n"], spec["depths"], spec["dim"], generator=generator)
    from lmms_topo_plugin.topology.synthetic import drifting_clouds

    return drifting_clouds(spec["depths"], spec["n"], spec["dim"], transition=2 * spec["depths"] // 3,
                           seed=spec["seed"])


def measure(spec: dict, send) -> None:
    """One (kind, N) in this process: ``send((message, payload))`` after each stage (the parent keeps what came)."""
    import torch
    from loguru import logger

    from lmms_topo_plugin.topology import analyze_topology
    from lmms_topo_plugin.topology.analysis import effective_k
    from lmms_topo_plugin.topology.complexes import FlagComplex, knn_indices, symmetrised_edges, triangles
    from lmms_topo_plugin.topology.consistency import consistency, persistence_image, topological_activity
    from lmms_topo_plugin.topology.engines import raw_barcode
    from lmms_topo_plugin.topology.zigzag import bars_to_depths, build_zigzag

    logger.remove()  # analyze_topology's per-call warnings (e.g. "H1 carries no signal") would flood the output
    logger.add(sys.stderr, level="ERROR")
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    states = _cloud(spec)
    n, depths, dim = states.shape
    send(("cloud", {"depths": depths, "dim": dim, "input_mb": states.numel() * states.element_size() / 2**20,
                    "torch_threads": torch.get_num_threads()}))
    defaults = inspect.signature(analyze_topology).parameters
    alpha, sigma = defaults["alpha"].default, defaults["sigma"].default
    tiny = torch.randn(16, 3, 8, generator=torch.Generator().manual_seed(1))
    for engine in spec["engines"]:
        analyze_topology(tiny, k=3, engine=engine)  # imports and first calls stay out of the timings
    k, repeats = effective_k(spec["k"], n), spec["repeats"]
    neighbours, distances_s = _timed(lambda: [knn_indices(states[:, depth], k) for depth in range(depths)], repeats)

    def flag_complexes():
        graphs = [symmetrised_edges(rows) for rows in neighbours]
        return [FlagComplex(n, edges, triangles(edges, n)) for edges in graphs]

    complexes, complexes_s = _timed(flag_complexes, repeats)
    zigzag, build_s = _timed(lambda: build_zigzag(complexes), repeats)
    send(("common", {"k": k, "distances_s": distances_s, "complexes_s": complexes_s, "build_s": build_s,
                     "simplices": len(zigzag.simplices), "operations": len(zigzag.times), "peak_mb": _peak_mb()}))
    for engine in spec["engines"]:
        send(("start", engine))
        # the total first, as a run calls it (once); then the engine's stages on the shared complexes
        result, total_s = _timed(lambda: analyze_topology(states, k=spec["k"], engine=engine), repeats)
        raw, barcode_s = _timed(lambda: raw_barcode(zigzag, engine), repeats)

        def scores():
            bars = {d: bars_to_depths(values, depths) for d, values in raw.items()}
            consistency({f"h{d}": values for d, values in bars.items()}, depths, alpha)
            topological_activity([persistence_image(values, depths, sigma) for values in bars.values()])
            return bars

        bars, scores_s = _timed(scores, repeats)
        send(("engine", {"engine": engine, "status": "ok", "total_s": total_s, "zigzag_s": build_s + barcode_s,
                         "barcode_s": barcode_s, "scores_s": scores_s, "bars_h0": len(bars[0]), "bars_h1": len(bars[1]),
                         "raw_bars_h0": len(raw[0]), "raw_bars_h1": len(raw[1]), "bars_sha256": _digest(bars),
                         "params": result["params"], "peak_mb": _peak_mb()}))
    send(("done", {"peak_mb": _peak_mb()}))


def _child(conn, target, args: tuple) -> None:
    """Run ``target(*args, send)`` and report its result or its traceback through ``conn``."""
    send = conn.send
    try:
        send(("result", target(*args, send)))
    except BaseException:
        send(("error", traceback.format_exc(limit=8)))
    finally:
        conn.close()


def _vm_hwm_mb(pid: int) -> float | None:
    """A live process's peak RSS from ``/proc`` (Linux), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _messages(target, args: tuple, timeout: float):
    """Run ``target`` in a fresh process; yield its messages. Each ``start`` message renews the ``timeout``
    deadline; past it the process is killed and ``("timed out", peak MB)`` is yielded; a crash yields
    ``("error", text)``."""
    receive, send = SPAWN.Pipe(duplex=False)
    process = SPAWN.Process(target=_child, args=(send, target, args), daemon=True)
    process.start()
    send.close()
    deadline = time.monotonic() + timeout
    try:
        while True:
            if not receive.poll(max(0.0, deadline - time.monotonic())):
                peak = _vm_hwm_mb(process.pid)
                process.kill()
                yield "timed out", peak
                return
            try:
                message, payload = receive.recv()
            except EOFError:
                process.join()
                yield "error", f"the process ended without a result (exit code {process.exitcode})"
                return
            if message == "start":
                deadline = time.monotonic() + timeout
            yield message, payload
            if message in ("result", "error"):
                return
    finally:
        if process.is_alive():
            process.kill()
        process.join()
        receive.close()


def run_row(spec: dict, engines: list[str], skipped: list[str], timeout: float) -> dict:
    """One (kind, N): the engines in order, each within ``timeout`` s; a failure costs only that engine."""
    row = {"kind": spec["kind"], "n": spec["n"], "engines": {}}
    if spec["kind"] != "real":  # known before the process reports (a real cloud's come from the model)
        row.update(depths=spec["depths"], dim=spec["dim"])
    pending = list(engines)
    peaks = []
    while pending:
        current = None  # the engine running, None while the shared stages run
        for message, payload in _messages(measure, ({**spec, "engines": list(pending)},), timeout):
            if message == "cloud":
                row.update({key: value for key, value in payload.items() if key not in row})
            elif message == "common":
                peaks.append(payload.pop("peak_mb"))
                row.update({key: value for key, value in payload.items() if key not in row})
            elif message == "start":
                current = payload
            elif message == "engine":
                peaks.append(payload["peak_mb"])
                row["engines"][payload.pop("engine")] = payload
                pending.remove(current)
                current = None
            elif message == "result":
                pending = []
            elif message in ("timed out", "error"):
                failed = {"status": "timed out", "timeout_s": timeout} if message == "timed out" else {
                    "status": "failed", "error": payload.strip().splitlines()[-1]}
                if message == "timed out" and payload is not None:
                    peaks.append(payload)
                    failed["peak_mb"] = payload
                if message == "error":
                    print(payload, file=sys.stderr)
                for engine in list(pending) if current is None else [current]:  # shared stages: every engine
                    row["engines"][engine] = failed
                    pending.remove(engine)
    for engine in skipped:
        row["engines"][engine] = {"status": "skipped"}
    row["engines"] = {engine: row["engines"][engine] for engine in [*engines, *skipped] if engine in row["engines"]}
    finished = [values for values in row["engines"].values() if values["status"] == "ok"]
    if finished:
        reference = finished[0]
        row.update({key: reference[key] for key in ("raw_bars_h0", "raw_bars_h1", "bars_h0", "bars_h1", "scores_s")})
    first = row["engines"].get(engines[0], {}) if engines else {}
    for values in finished if first.get("status") == "ok" else []:
        values["same"] = values["bars_sha256"] == first["bars_sha256"]
    row["peak_mb"] = max(peaks) if peaks else None
    return row


# ---------------------------------------------------------------------------------------------- parent


def _shown_path(path: str) -> str:
    """``path`` relative to the repository root when it lies inside it (as the results pages show commands)."""
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
        "numpy": _version("numpy"),
        "dionysus": _version("dionysus"),
        "lmms_topo_plugin": _version("lmms-topo-plugin"),
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,  # other work on the box
    }


def git_state() -> dict | None:
    """The checkout's commit and whether its tracked files differ from it, or None outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


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


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.replace(",", " ").split()]


def _names(text: str) -> list[str]:
    return [part for part in text.replace(",", " ").split()]


def _progress(row: dict) -> str:
    cells = []
    for engine, values in row["engines"].items():
        if values["status"] == "ok":
            same = "" if "same" not in values or values["same"] else ", DIFFERENT bars"
            cells.append(f"{engine} {values['total_s']:.2f} s (zigzag {values['zigzag_s']:.2f} s{same})")
        else:
            cells.append(f"{engine} {values['status']}")
    bars = f"{row['raw_bars_h0']}+{row['raw_bars_h1']} bars, " if "raw_bars_h0" in row else ""
    peak = f", peak {row['peak_mb']:.0f} MB" if row.get("peak_mb") else ""
    return f"{row['kind']} N={row['n']}: {bars}{'; '.join(cells)}{peak}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", type=_names, default=list(KINDS), help="comma-separated, of: " + ", ".join(KINDS))
    parser.add_argument("--sizes", type=_ints, default=[256, 512, 1024, 2048], help="N of gaussian and synthetic")
    parser.add_argument("--real-sizes", type=_ints, default=[256, 320],
                        help="N of real (calibration prompts; the calib split has 320)")
    parser.add_argument("--depths", type=int, default=33, help="depths of gaussian and synthetic")
    parser.add_argument("--dim", type=int, default=4096, help="width d of gaussian and synthetic")
    parser.add_argument("--k", type=int, default=15)
    parser.add_argument("--engines", type=_names, default=None,
                        help="comma-separated zigzag engines (default: every one in topology.engines.ENGINES)")
    parser.add_argument("--classic-max", type=int, default=256,
                        help=f"largest N the quadratic {CLASSIC!r} engine runs at (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds per engine of a row, and for the shared stages (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per stage, median (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default 0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results JSON (default: %(default)s)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.kinds) - set(KINDS))
    if unknown:
        parser.error(f"unknown kinds {', '.join(unknown)}; known: {', '.join(KINDS)}")
    if args.engines is None:
        from lmms_topo_plugin.topology.engines import ENGINES

        args.engines = list(ENGINES)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = datetime.now(timezone.utc)
    machine = machine_info()
    results = {
        "command": command_line(),
        "argv": sys.argv[1:] if argv is None else argv,
        "args": {key: _shown_path(str(value)) if isinstance(value, Path) else value
                 for key, value in vars(args).items()},
        "started_utc": started.isoformat(timespec="seconds"),
        "machine": machine,
        "git": git_state(),
        "engines": args.engines,
        "classic_max": args.classic_max,
        "targets": [dict(target) for target in TARGETS],
        "rows": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench_topology.") as folder:
        real_path = str(Path(folder) / "real_states.pt")
        if "real" in args.kinds and args.real_sizes:
            print(f"calibration pass of the bundled model for N = {args.real_sizes} ...", flush=True)
            for message, payload in _messages(real_states, (sorted(set(args.real_sizes)), real_path), args.timeout):
                if message == "result":
                    results["real"] = payload
                elif message in ("timed out", "error"):
                    raise SystemExit(f"real states: {message}" + (f"\n{payload}" if message == "error" else ""))
        for kind in args.kinds:
            for n in sorted(set(args.real_sizes if kind == "real" else args.sizes)):
                spec = {"kind": kind, "n": n, "depths": args.depths, "dim": args.dim, "k": args.k, "seed": args.seed,
                        "repeats": args.repeats, "threads": args.threads, "real_path": real_path}
                skipped = [engine for engine in args.engines if engine == CLASSIC and n > args.classic_max]
                engines = [engine for engine in args.engines if engine not in skipped]
                results["rows"].append(run_row(spec, engines, skipped, args.timeout))
                print(_progress(results["rows"][-1]), flush=True)
    if hasattr(os, "getloadavg"):
        machine["loadavg_at_end"] = list(os.getloadavg())
    results["finished_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_json_atomic(args.out, results)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from pages import topology as topology_page

    print("\n" + topology_page.topology_speed_block(results) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
