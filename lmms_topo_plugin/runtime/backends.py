"""What answers lmms-eval's requests: the PyTorch model in memory, or an ONNX build run by ONNX Runtime.

``backend=onnxruntime`` (with ``pretrained=`` a directory written by ``topo-prune export --onnx``) evaluates the
artifact that will be deployed, so the accuracy a user publishes is the accuracy of what runs.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

from lmms_topo_plugin.errors import ModelArgsError
from lmms_topo_plugin.runtime.generation import continuation_nll, cut_at_stop, generate
from lmms_topo_plugin.models.loading import LoadedModel
from lmms_topo_plugin.models.prompting import Prompt


class TorchBackend:
    """The (pruned) transformers model in memory; with ``token_pruner``, attached around every request."""

    def __init__(self, loaded: LoadedModel, use_cache: bool = True, token_pruner: Any = None) -> None:
        self.loaded, self.use_cache, self.token_pruner = loaded, use_cache, token_pruner

    @property
    def device(self) -> Any:
        return self.loaded.model.device

    def _pruning(self):
        return self.token_pruner.attach(self.loaded.adapter) if self.token_pruner else nullcontext()

    def generate(self, prompts: Sequence[Prompt], settings: dict[str, Any], until: Sequence[str]) -> list[str]:
        with self._pruning():
            return generate(self.loaded, prompts, settings, until, use_cache=self.use_cache)

    def continuation_nll(self, prompt: Prompt, continuation: str) -> tuple[float, bool]:
        """With a token pruner, the pruner sees the prompt and the continuation in one forward."""
        with self._pruning():
            return continuation_nll(self.loaded, prompt, continuation)


class OnnxBackend:
    """An ONNX build (``<dir>/onnx``) with :class:`~lmms_topo_plugin.runtime.onnx_runner.OnnxVLM`; greedy only."""

    def __init__(self, build_dir: str, provider: str = "auto", precision: str = "fp32") -> None:
        if not (Path(build_dir) / "onnx" / "manifest.json").exists():
            raise ModelArgsError(f"model_args: backend=onnxruntime needs pretrained= a directory written by "
                                 f"`topo-prune export --onnx`; {build_dir!r} has no onnx/manifest.json")
        from lmms_topo_plugin.runtime.onnx_runner import OnnxVLM

        self.runner = OnnxVLM(build_dir, provider=provider, precision=precision)

    @property
    def device(self) -> str:
        return "cuda" if self.runner.provider == "cuda" else "cpu"

    def generate(self, prompts: Sequence[Prompt], settings: dict[str, Any], until: Sequence[str]) -> list[str]:
        if settings.get("do_sample") or settings.get("num_beams", 1) > 1:
            raise ModelArgsError("backend=onnxruntime decodes greedily; the task asks for sampling or beam search")
        ids = self.runner.generate_ids(prompts, settings["max_new_tokens"])
        texts = self.runner.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return [cut_at_stop(text, until).strip() for text in texts]

    def continuation_nll(self, prompt: Prompt, continuation: str) -> tuple[float, bool]:
        tokenizer = self.runner.processor.tokenizer
        target = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        return self.runner.continuation_nll(prompt, target) if target else (0.0, True)


def onnx_provider(device: str | None) -> str:
    """The ONNX Runtime provider for a ``device=`` value: cuda for ``cuda``/``cuda:N``, cpu for ``cpu``, else auto."""
    if device and device.startswith("cuda"):
        return "cuda"
    return "cpu" if device == "cpu" else "auto"
