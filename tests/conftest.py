"""Shared fixtures: tiny checkpoints built offline, an isolated cache, offline Hugging Face libraries."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """Build each family's tiny checkpoint at most once per session: ``tiny_checkpoints(family)``."""
    from lmms_topo_plugin.testing.tiny_models import build_tiny_vlm

    built = {}

    def get(family: str, num_layers: int = 6):
        key = (family, num_layers)
        if key not in built:
            built[key] = build_tiny_vlm(family, tmp_path_factory.mktemp(f"{family}{num_layers}"), num_layers=num_layers)
        return built[key]

    return get


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own pruning cache and report directory."""
    monkeypatch.setenv("LMMS_TOPO_CACHE", str(tmp_path / "topo-cache"))
    return tmp_path / "topo-cache"
