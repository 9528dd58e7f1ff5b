"""The README's result tables are generated from bench/results/*.json (bench/readme_tables.py), never typed."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
    return module


readme_tables = _load("readme_tables")

QUALITY = {
    "dense": {"a": 1.0, "b": 0.9, "overall": 0.95},
    "methods": {
        "spacing": [
            {"fraction": 0.0, "removed": [[]], "runs": [{"a": 1.0, "b": 0.9, "overall": 0.95}]},
            {"fraction": 0.25, "removed": [[2]], "runs": [{"a": 0.5, "b": 0.7, "overall": 0.6}]},
        ],
        "random": [
            {"fraction": 0.0, "removed": [[]], "runs": [{"a": 1.0, "b": 0.9, "overall": 0.95}]},
            {"fraction": 0.25, "removed": [[1], [2]],
             "runs": [{"a": 0.4, "b": 0.6, "overall": 0.5}, {"a": 0.6, "b": 0.8, "overall": 0.7}]},
            {"fraction": 0.5, "removed": [[1, 2], [1, 3]],
             "runs": [{"a": 0.1, "b": 0.3, "overall": 0.2}, {"a": 0.3, "b": 0.5, "overall": 0.4}]},
        ],
        "topology": [
            {"fraction": 0.0, "removed": [[]], "runs": [{"a": 1.0, "b": 0.9, "overall": 0.95}]},
            {"fraction": 0.25, "removed": [[1]], "runs": [{"a": 0.7, "b": 0.5, "overall": 0.6}]},
            {"fraction": 0.5, "removed": [[1, 2]], "runs": [{"a": 0.2, "b": 0.2, "overall": 0.2}]},
        ],
    },
    "fractions": [0.0, 0.25, 0.5],
    "model": "tiny",
}

QUALITY_MARKDOWN = """\
| method | 0 (0 layers) | 0.25 (1 layer) | 0.5 (2 layers) |
|---|---|---|---|
| spacing | 0.950 | 0.600 | n/a |
| random | 0.950 | 0.600 (0.50..0.70) | 0.300 (0.20..0.40) |
| topology | 0.950 | 0.600 | 0.200 |

n/a: a budget the method cannot reach, so the run refused it: `spacing` at 0.5 (it never removes two adjacent
layers and keeps the first and the last).

Overall, topology ties spacing and random at 1 layer and is behind random at 2 layers (the best other layer method
at each budget; `random` counts with its mean over seeds):

| removed | topology | best other method | difference |
|---|---|---|---|
| 1 layer (0.25) | 0.600 | spacing, random 0.600 | +0.000 |
| 2 layers (0.5) | 0.200 | random 0.300 | -0.100 |

Per kind, the best method at each budget (exact match, mean over seeds; topology's own score in brackets where it
is not the best):

| kind | 1 layer | 2 layers |
|---|---|---|
| a | topology 0.70 | random, topology 0.20 |
| b | spacing, random 0.70 (topology 0.50) | random 0.40 (topology 0.20) |"""

SPEED = {
    "command": ".venv/bin/python bench/bench_topology.py --sizes 512 --classic-sizes 128",
    "argv": ["--sizes", "512", "--classic-sizes", "128"],
    "args": {"sizes": [512], "classic_sizes": [128], "depths": 9, "dim": 64, "k": 15, "seed": 0},
    "machine": {"cpu_count": 8, "cpus_available": 2, "platform": "Linux-x86_64"},
    "target": {"n": 512, "seconds": 3.0},
    "rows": [
        {"n": 128, "total_fast": 0.1234, "peak_mb": 300.4, "input_mb": 0.3, "bars": 40, "simplices": 1234,
         "zigzag_fast": 0.02, "total_classic": 1.5, "zigzag_classic": 1.0, "same": True},
        {"n": 512, "total_fast": 1.004, "peak_mb": 612.6, "input_mb": 1.1, "bars": 90, "simplices": 47264,
         "zigzag_fast": 0.1},
    ],
}

SPEED_MARKDOWN = """\
Speed (`.venv/bin/python bench/bench_topology.py --sizes 512 --classic-sizes 128`, 2 CPU cores, 9 depths, d = 64,
k = 15, point clouds → scores, calibration not included):

| N | simplices | fast total | classic total | speedup (total / zigzag only) | peak RSS |
|---|---|---|---|---|---|
| 128 | 1,234 | 0.12 s | 1.50 s | 12.2× / 50.0× | 300 MB |
| 512 | 47,264 | 1.00 s (target ≤ 3 s) | – | – | 613 MB |

The classic engine gave identical scores at N = 128."""


def test_quality_block_renders_known_input_exactly():
    assert readme_tables.quality_block(QUALITY) == QUALITY_MARKDOWN


def test_speed_block_renders_known_input_exactly():
    assert readme_tables.speed_block(SPEED) == SPEED_MARKDOWN


def test_speed_block_flags_a_classic_mismatch():
    data = json.loads(json.dumps(SPEED))
    data["rows"][0]["same"] = False
    assert readme_tables.speed_block(data).endswith("The classic engine gave DIFFERENT scores at N = 128.")


@pytest.mark.parametrize("name", sorted(readme_tables.BLOCKS))
def test_readme_block_equals_generator_output(name):
    """Editing a README table or its JSON without regenerating the other fails here."""
    current = readme_tables.readme_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    generated = readme_tables.render_blocks(ROOT / "bench" / "results")
    assert current[name] == generated[name], (
        f"README block {name!r} differs from bench/results/{readme_tables.BLOCKS[name][0]}; "
        "run python bench/readme_tables.py --write"
    )


def test_write_and_check_touch_only_the_blocks(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "quality.json").write_text(json.dumps(QUALITY))
    (results / "topology.json").write_text(json.dumps(SPEED))
    readme = tmp_path / "README.md"
    blocks = "".join(f"{readme_tables.begin_marker(name)}\nstale\n{readme_tables.end_marker(name)}\n\nprose {name}\n"
                     for name in readme_tables.BLOCKS)
    readme.write_text("# title\n\n" + blocks)
    args = ["--readme", str(readme), "--results", str(results)]
    assert readme_tables.main([*args, "--check"]) == 1
    assert readme_tables.main([*args, "--write"]) == 0
    assert readme_tables.main([*args, "--check"]) == 0
    text = readme.read_text()
    assert text.startswith("# title\n\n") and "stale" not in text
    assert QUALITY_MARKDOWN in text and SPEED_MARKDOWN in text
    assert all(f"prose {name}" in text for name in readme_tables.BLOCKS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "results"]  # no temporary file left


def test_missing_markers_are_an_error():
    with pytest.raises(KeyError, match="exactly one block"):
        readme_tables.readme_blocks("# no markers\n")


def test_bench_topology_writes_its_json_atomically(tmp_path):
    bench_topology = _load("bench_topology")
    out = tmp_path / "results" / "topology.json"
    bench_topology.write_json_atomic(out, SPEED)
    assert json.loads(out.read_text()) == SPEED
    assert [p.name for p in out.parent.iterdir()] == ["topology.json"]
    machine = bench_topology.machine_info()
    assert machine["cpus_available"] >= 1 and machine["platform"]
