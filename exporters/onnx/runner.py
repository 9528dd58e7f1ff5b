"""Run an ONNX build with ONNX Runtime: the checkpoint's own processor in Python, greedy decoding with KV cache.

    runner = OnnxVLM("build/")                       # CUDA when onnxruntime-gpu sees a GPU, else CPU
    runner.generate([Prompt.from_text("What is in the image?", [image])], max_new_tokens=16)

A session that did not get the provider it asked for is an error (ONNX Runtime silently falls back to CPU),
unless ``allow_cpu_fallback=True``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import MissingDependencyError, PluginError, UsageError
from ...prompting import Prompt, encode
from .positions import mrope_positions, next_positions, text_positions

PROVIDERS = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


class ProviderError(PluginError):
    """ONNX Runtime did not give a session the execution provider that was asked for."""


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as error:
        raise MissingDependencyError("the ONNX runner needs onnxruntime (CPU) or onnxruntime-gpu (CUDA): "
                                     "pip install 'lmms-topo-plugin[onnx]' or '[onnx-gpu]', never both") from error
    return onnxruntime


def choose_provider(requested: str) -> str:
    """``auto``: CUDA when this onnxruntime offers it, else CPU; ``cuda``/``cpu`` as asked."""
    available = _onnxruntime().get_available_providers()
    if requested == "auto":
        return "cuda" if PROVIDERS["cuda"] in available else "cpu"
    if requested not in PROVIDERS:
        raise PluginError(f"--provider: {requested!r} is not one of auto, cuda, cpu")
    return requested


def check_build(build_dir: str | Path) -> Path:
    """``build_dir`` if it holds an ONNX build (``onnx/manifest.json``); else a one-line :class:`UsageError`
    saying what the directory is instead and how to make a build."""
    build_dir = Path(build_dir)
    if not build_dir.is_dir():
        raise UsageError(f"{build_dir} is not a directory; give the --out directory of topo-prune export --onnx")
    if (build_dir / "onnx" / "manifest.json").is_file():
        return build_dir
    if (build_dir / "config.json").is_file():
        raise UsageError(f"{build_dir} is a checkpoint without an ONNX build (no onnx/manifest.json); export it with "
                         f"topo-prune export --onnx")
    raise UsageError(f"{build_dir} is not an ONNX build (no onnx/manifest.json); give the --out directory of "
                     f"topo-prune export --onnx")


class OnnxVLM:
    """The three sessions of a build directory (``<build>/onnx``) and the checkpoint's processor."""

    def __init__(self, build_dir: str | Path, provider: str = "auto", allow_cpu_fallback: bool = False,
                 precision: str = "fp32", threads: int | None = None) -> None:
        from ...adapters import adapter_class_for
        from ...loading import load_config
        from ...processors import load_processor

        ort = _onnxruntime()
        build_dir = check_build(build_dir)
        self.manifest = json.loads((build_dir / "onnx" / "manifest.json").read_text())
        if precision not in self.manifest["precisions"]:
            raise PluginError(f"--precision: {build_dir} has {', '.join(self.manifest['precisions'])}, not {precision}")
        self.provider = choose_provider(provider)
        self.processor = load_processor(build_dir)
        self.adapter_class = adapter_class_for(load_config(str(build_dir)))
        generation = build_dir / "generation_config.json"
        # model.generate never picks these (its SuppressTokensLogitsProcessor); neither does greedy decoding here
        self.suppress_tokens = (json.loads(generation.read_text()).get("suppress_tokens") or []
                                if generation.exists() else [])
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads  # e.g. 1, to compare with a one-thread PyTorch
        self.sessions = {}
        for name, graph in self.manifest["graphs"].items():
            file = graph["variants"][precision]
            session = ort.InferenceSession(str(build_dir / "onnx" / file), options,
                                           providers=[PROVIDERS[self.provider]])
            if PROVIDERS[self.provider] not in session.get_providers() and not allow_cpu_fallback:
                raise ProviderError(f"ONNX Runtime gave {file} {session.get_providers()} instead of "
                                    f"{PROVIDERS[self.provider]}; install onnxruntime-gpu matching this CUDA, or "
                                    "allow the CPU fallback (--allow-cpu-fallback)")
            self.sessions[name] = session

    def prefill_inputs(self, prompts: Sequence[Prompt]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(inputs_embeds, attention_mask, position_ids)`` of a left-padded batch, image features scattered in;
        ``position_ids`` as the decoder takes them (``[batch, seq]``, or ``[3, batch, seq]`` for M-RoPE)."""
        inputs = encode(self.processor, self.adapter_class, prompts)
        ids = inputs["input_ids"].numpy()
        mask = inputs["attention_mask"].numpy().astype(np.int64)
        embeds = self.sessions["embed_tokens"].run(None, {"input_ids": ids})[0]
        if "pixel_values" in inputs:
            embeds[ids == self.manifest["image_token_id"]] = self.image_features(inputs)
        if self.manifest.get("position_ids", "text") == "mrope":
            grid = inputs["image_grid_thw"].numpy() if "image_grid_thw" in inputs else None
            positions = mrope_positions(ids, mask, grid, self.manifest["image_token_id"],
                                        self.manifest["spatial_merge_size"])
        else:
            positions = text_positions(mask)
        return embeds, mask, positions

    def image_features(self, inputs) -> np.ndarray:
        """``[image tokens, hidden]`` of a processor batch's images, in order, fed as the family's vision graph
        takes them (:mod:`.families`: e.g. Qwen's runs once per image)."""
        from .families import FAMILIES

        family = FAMILIES[self.manifest["model_type"]]
        feed = {name: inputs[name].float().numpy() if name == "pixel_values" else inputs[name].numpy()
                for name in (*self.manifest["graphs"]["vision_encoder"]["inputs"], *family.run_inputs)}
        feed.update((name, np.asarray(value)) for name, value in self.manifest.get("vision_constants", {}).items())
        return family.run_vision(self.sessions["vision_encoder"], feed)

    def decoder_step(self, embeds: np.ndarray, mask: np.ndarray, past: list[np.ndarray],
                     positions: np.ndarray | None = None) -> tuple[np.ndarray, list]:
        """One decoder run: logits of the new positions and the grown cache. ``positions``: the new tokens'
        position ids (``prefill_inputs``' third value, then :func:`.positions.next_positions`); by default they
        are counted from the mask, which is right for LLaVA and for text-only prompts."""
        new = embeds.shape[1]
        if positions is None:
            positions = text_positions(mask)[:, -new:]
            if self.manifest.get("position_ids", "text") == "mrope":
                positions = np.broadcast_to(positions, (3, *positions.shape)).copy()
        feed = {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": positions}
        feed.update(zip(self._past_names, past))
        logits, *present = self.sessions["decoder_model_merged"].run(None, feed)
        return logits, present

    @property
    def _past_names(self) -> list[str]:
        return self.manifest["graphs"]["decoder_model_merged"]["inputs"][3:]

    def empty_past(self, batch: int) -> list[np.ndarray]:
        shape = (batch, self.manifest["kv_heads"], 0, self.manifest["head_dim"])
        return [np.zeros(shape, dtype=np.float32) for _ in self._past_names]

    def next_step(self, token: np.ndarray, mask: np.ndarray, past: list[np.ndarray], positions: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, list, np.ndarray]:
        """Feed one token per row after the cached positions: ``(logits, mask, past, positions)`` grown by one."""
        mask = np.concatenate([mask, np.ones((len(token), 1), dtype=np.int64)], axis=1)
        embeds = self.sessions["embed_tokens"].run(None, {"input_ids": token[:, None].astype(np.int64)})[0]
        positions = next_positions(positions)
        logits, past = self.decoder_step(embeds, mask, past, positions)
        return logits, mask, past, positions

    def generate_ids(self, prompts: Sequence[Prompt], max_new_tokens: int = 32) -> np.ndarray:
        """Greedy new token ids ``[batch, ≤ max_new_tokens]``, stopping when every row has produced eos."""
        embeds, mask, positions = self.prefill_inputs(prompts)
        logits, past = self.decoder_step(embeds, mask, self.empty_past(len(prompts)), positions)
        eos = self.processor.tokenizer.eos_token_id
        tokens, done = [], np.zeros(len(prompts), dtype=bool)
        for _ in range(max_new_tokens):
            scores = logits[:, -1]
            scores[:, self.suppress_tokens] = -np.inf
            token = scores.argmax(-1)
            token = np.where(done, eos, token)
            tokens.append(token)
            done |= token == eos
            if done.all():
                break
            logits, mask, past, positions = self.next_step(token, mask, past, positions)
        return np.stack(tokens, axis=1)

    def continuation_nll(self, prompt: Prompt, target_ids: list[int]) -> tuple[float, bool]:
        """Negative log-likelihood of ``target_ids`` after ``prompt``, and whether greedy decoding produces them."""
        embeds, mask, positions = self.prefill_inputs([prompt])
        tail = self.sessions["embed_tokens"].run(None, {"input_ids": np.array([target_ids], dtype=np.int64)})[0]
        embeds = np.concatenate([embeds, tail], axis=1)
        mask = np.concatenate([mask, np.ones((1, len(target_ids)), dtype=np.int64)], axis=1)
        positions = np.concatenate([positions, next_positions(positions, len(target_ids))], axis=-1)
        logits, _ = self.decoder_step(embeds, mask, self.empty_past(1), positions)
        predicted = logits[0, -len(target_ids) - 1:-1].astype(np.float64)
        shifted = predicted - predicted.max(axis=-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        nll = -float(log_probs[np.arange(len(target_ids)), target_ids].sum())
        return nll, bool((predicted.argmax(axis=-1) == np.array(target_ids)).all())

    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int = 32) -> list[str]:
        ids = self.generate_ids(prompts, max_new_tokens)
        return [text.strip() for text in self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)]
