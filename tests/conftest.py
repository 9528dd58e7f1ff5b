"""Shared fixtures: tiny checkpoints and their ONNX builds, built offline once per session; an isolated cache;
offline Hugging Face libraries."""

import os

import pytest

from cli import OFFLINE_ENV

for _name, _value in OFFLINE_ENV.items():
    os.environ.setdefault(_name, _value)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """Build each family's tiny checkpoint at most once per session: ``tiny_checkpoints(family)``."""
    from lmms_topo_plugin.families.tiny import build_tiny_vlm

    built = {}

    def get(family: str, num_layers: int = 6):
        key = (family, num_layers)
        if key not in built:
            built[key] = build_tiny_vlm(family, tmp_path_factory.mktemp(f"{family}{num_layers}"), num_layers=num_layers)
        return built[key]

    return get


@pytest.fixture(scope="session")
def onnx_builds(tiny_checkpoints, tmp_path_factory):
    """Each family's ONNX build at most once per session and settings: ``onnx_builds(family, precision)``
    (onnx_helpers.onnx_build_factory)."""
    from onnx_helpers import onnx_build_factory

    return onnx_build_factory(tiny_checkpoints, tmp_path_factory)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own pruning cache and report directory."""
    monkeypatch.setenv("LMMS_TOPO_CACHE", str(tmp_path / "topo-cache"))
    return tmp_path / "topo-cache"
