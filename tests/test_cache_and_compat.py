"""Atomic cache writes and the lmms-eval log-likelihood unwrap fix."""

import os

import pytest
import torch

from lmms_topo_plugin.cache import DiskCache, atomic_write_bytes, cache_key
from lmms_topo_plugin.integrations.lmms_eval.compat import install_loglikelihood_fix


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "entry.json"
    atomic_write_bytes(target, b"old")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["entry.json"]


def test_disk_cache_roundtrip_and_disable(tmp_path):
    cache = DiskCache(tmp_path)
    key = cache_key("a", {"b": 1})
    assert key == cache_key("a", {"b": 1}) != cache_key("a", {"b": 2})
    cache.put_json("scores", key, {"v": [1, 2]})
    cache.put_tensors("stats", key, {"t": torch.arange(6.0).reshape(2, 3)})
    assert cache.get_json("scores", key) == {"v": [1, 2]}
    assert torch.equal(cache.get_tensors("stats", key)["t"], torch.arange(6.0).reshape(2, 3))
    disabled = DiskCache(tmp_path, enabled=False)
    assert disabled.get_json("scores", key) is None and disabled.get_tensors("stats", key) is None


def test_loglikelihood_pairs_survive_lmms_eval_unwrap():
    from lmms_eval import evaluator
    from lmms_eval.api.instance import GenerationResult

    assert install_loglikelihood_fix()
    assert install_loglikelihood_fix()  # idempotent
    assert evaluator.unwrap_generation_output((1.5, False)) == ((1.5, False), None)
    assert evaluator.unwrap_generation_output("text") == ("text", None)
    assert evaluator.unwrap_generation_output(GenerationResult(text="t"))[0] == "t"
