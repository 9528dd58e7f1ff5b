"""Run an ONNX build with ONNX Runtime: the checkpoint's own processor in Python, greedy decoding with KV cache.

On a GPU the decoder runs with I/O binding: the KV cache stays on the session's device from step to step (bound
as ``OrtValue``s, each step's present is the next step's past) and only the logits are copied out. On the CPU the
cache is host memory either way, and numpy feeding measured faster than binding (``bench/bench_onnx.py``: 0.61-0.65x
as fast bound on the bundled model, about even on a 12 x 768 one), so ``bind_cache`` defaults to binding only
where the decoder does not run on the host. Generation computes the logits of the last position only. Our decoder
graph grows the cache by concatenation; a decoder built by onnxruntime-genai's model builder (the manifest's
``decoder: builder``) is fed right-padded and holds its cache in one preallocated buffer per key/value, bound as
past and present at every step (:mod:`.shared_cache`), its logits computed by the build's ``lm_head`` graph.

    runner = OnnxVLM("build/")                       # CUDA when onnxruntime-gpu sees a GPU, else CPU
    runner.generate([Prompt.from_text("What is in the image?", [image])], max_new_tokens=16)

A session that did not get the provider it asked for is an error (ONNX Runtime silently falls back to CPU),
unless ``allow_cpu_fallback=True``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from loguru import logger

from lmms_topo_plugin.errors import MissingDependencyError, PluginError, UsageError
from lmms_topo_plugin.models.prompting import Prompt, encode
from lmms_topo_plugin.exporters.onnx.positions import mrope_positions, next_positions, text_positions
from lmms_topo_plugin.runtime import shared_cache

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


def read_manifest(build_dir: Path) -> dict:
    """The build's ``onnx/manifest.json``; a one-line :class:`UsageError` for a build format newer than this plugin
    reads (a manifest without a schema is from before schemas: version 1)."""
    from lmms_topo_plugin.records import ONNX_BUILD

    path = build_dir / "onnx" / "manifest.json"
    manifest = json.loads(path.read_text())
    stamp = {"schema": ONNX_BUILD.name, "version": 1} | {key: manifest[key] for key in ("schema", "version")
                                                           if key in manifest}
    if not ONNX_BUILD.holds(stamp):
        raise UsageError(f"{path} is a {stamp['schema']} v{stamp['version']} build; this lmms-topo-plugin reads "
                         f"{ONNX_BUILD.name} up to v{ONNX_BUILD.version}: upgrade the plugin, or export again with "
                         "this one")
    return manifest


def kv_heads_per_layer(manifest: dict) -> list[int]:
    """Each decoder layer's key/value heads: the manifest's ``kv_heads_per_layer``, or the one ``kv_heads`` of every
    layer in a build made before width pruning (which has no per-layer list)."""
    if "kv_heads_per_layer" in manifest:
        return list(manifest["kv_heads_per_layer"])
    return [manifest["kv_heads"]] * manifest["num_layers"]


class OnnxVLM:
    """The three sessions of a build directory (``<build>/onnx``) and the checkpoint's processor."""

    def __init__(self, build_dir: str | Path, provider: str = "auto", allow_cpu_fallback: bool = False,
                 precision: str = "fp32", threads: int | None = None, bind_cache: bool | None = None) -> None:
        from lmms_topo_plugin.families import adapter_class_for
        from lmms_topo_plugin.models.loading import load_config
        from lmms_topo_plugin.models.processors import load_processor

        ort = self._ort = _onnxruntime()
        build_dir = check_build(build_dir)
        self.manifest = read_manifest(build_dir)
        if precision not in self.manifest["precisions"]:
            raise PluginError(f"--precision: {build_dir} has {', '.join(self.manifest['precisions'])}, not {precision}")
        self.provider = choose_provider(provider)
        self.processor = load_processor(build_dir)
        self.adapter_class = adapter_class_for(load_config(str(build_dir)))
        generation = build_dir / "generation_config.json"
        # model.generate never picks these (its SuppressTokensLogitsProcessor); neither does greedy decoding here
        self.suppress_tokens = (json.loads(generation.read_text()).get("suppress_tokens") or []
                                if generation.exists() else [])
        # "builder": onnxruntime-genai's model builder made the decoder (builds before it have no "decoder": ours)
        self.decoder_kind = self.manifest.get("decoder", "torch")
        self.builder_decoder = self.decoder_kind == "builder"
        self.sessions = {}
        for name, graph in self.manifest["graphs"].items():
            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads  # e.g. 1, to compare with a one-thread PyTorch
            if name == "decoder_model_merged" and bind_cache is not False and not self.builder_decoder:
                # the cache is bound outputs that grow by a position per step and live on as the next step's
                # inputs; carved from the CPU arena they made a 12 x 768 decoder's steps slower (26.5 against 22.0 ms
                # per token, one thread, 16 steps after a 576-image-token prompt)
                options.enable_cpu_mem_arena = False
            file = graph["variants"][precision]
            session = ort.InferenceSession(str(build_dir / "onnx" / file), options,
                                           providers=[PROVIDERS[self.provider]])
            if PROVIDERS[self.provider] not in session.get_providers() and not allow_cpu_fallback:
                raise ProviderError(f"ONNX Runtime gave {file} {session.get_providers()} instead of "
                                    f"{PROVIDERS[self.provider]}; install onnxruntime-gpu matching this CUDA, or "
                                    "allow the CPU fallback (--allow-cpu-fallback)")
            self.sessions[name] = session
        self._logits_to_keep = {last: ort.OrtValue.ortvalue_from_numpy(np.array(int(last), dtype=np.int64))
                                for last in (False, True)}  # 0: every position, 1: the last
        # where the cache lives between steps (the CPU when a CUDA request was allowed to fall back)
        self.device_type = "cuda" if PROVIDERS["cuda"] in self.sessions["decoder_model_merged"].get_providers() else "cpu"
        # I/O binding where it saves copies (a device that is not the host); bind_cache=True forces it (tests, bench)
        self.bind_cache = self.device_type != "cpu" if bind_cache is None else bind_cache
        if self.builder_decoder:  # its shared buffers are always bound
            self.bind_cache = True
            if self.device_type == "cuda":
                logger.warning("topo_pruned: this build's decoder was made by onnxruntime-genai's model builder for "
                               "ONNX Runtime's CPU provider (fp32 GroupQueryAttention, which has no CUDA kernel): on "
                               "CUDA its attention may run on the CPU; re-export with --onnx-decoder torch for a GPU")
            decoder = self.sessions["decoder_model_merged"]
            past_type = {value.name: value.type for value in decoder.get_inputs()}
            self._cache_dtype = shared_cache.NUMPY_TYPES[past_type[self._past_names[0]]]
            self._hidden_dtype = shared_cache.NUMPY_TYPES[decoder.get_outputs()[0].type]

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
        takes them (:mod:`lmms_topo_plugin.families`: e.g. Qwen's runs once per image)."""
        from lmms_topo_plugin.families import ONNX_FAMILIES

        family = ONNX_FAMILIES[self.manifest["model_type"]]
        feed = {name: inputs[name].float().numpy() if name == "pixel_values" else inputs[name].numpy()
                for name in (*self.manifest["graphs"]["vision_encoder"]["inputs"], *family.run_inputs)}
        feed.update((name, np.asarray(value)) for name, value in self.manifest.get("vision_constants", {}).items())
        return family.run_vision(self.sessions["vision_encoder"], feed)

    def decode(self, embeds: np.ndarray, mask: np.ndarray, past: Sequence, positions: np.ndarray | None = None,
               last_only: bool = False, capacity: int | None = None) -> tuple[np.ndarray, list]:
        """One decoder run with I/O binding: the logits (on the host) and the grown cache as ``OrtValue``s on the
        session's device. ``past``: the previous run's cache as it came back (bound as it is: present of one step
        is past of the next without a copy), or numpy arrays (e.g. :meth:`empty_past`), put on the device first.
        Only the logits are copied out; ``last_only``: those of the last position ``[batch, 1, vocab]``, which a
        decoder with the ``logits_to_keep`` input (builds since it was added; the manifest's ``optional_inputs``)
        computes for that position alone. ``positions``: as in :meth:`decoder_step`.

        A model builder's decoder (:attr:`builder_decoder`) takes the same arguments and gives the same logits (in the
        left-padded layout); its cache is the shared buffers, returned as they were bound, each ``capacity``
        positions long when new (:meth:`decode_shared`)."""
        if self.builder_decoder:
            return self.decode_shared(embeds, mask, past, last_only, capacity)
        if positions is None:
            positions = text_positions(mask)[:, -embeds.shape[1]:]
            if self.manifest.get("position_ids", "text") == "mrope":
                positions = np.broadcast_to(positions, (3, *positions.shape))
        session = self.sessions["decoder_model_merged"]
        keep = "logits_to_keep" in self._optional_inputs
        if not self.bind_cache:
            feed = {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": positions,
                    **dict(zip(self._past_names, past))}
            if keep:
                feed["logits_to_keep"] = np.array(int(last_only), dtype=np.int64)
            logits, *present = session.run(None, feed)
            return (logits[:, -1:] if last_only and not keep else logits), present
        binding = session.io_binding()
        # every bound value is held here until the run: they may wrap numpy memory
        small = [np.ascontiguousarray(value) for value in (embeds, mask, positions)]
        for name, value in zip(("inputs_embeds", "attention_mask", "position_ids"), small):
            binding.bind_cpu_input(name, value)
        cache = [self.on_device(value) for value in past]
        for name, value in zip(self._past_names, cache):
            binding.bind_ortvalue_input(name, value)
        if keep:  # an input with a default in the graph, which bind_cpu_input does not accept
            binding.bind_ortvalue_input("logits_to_keep", self._logits_to_keep[last_only])
        binding.bind_output("logits", "cpu")
        for name in self._present_names:
            binding.bind_output(name, self.device_type)
        session.run_with_iobinding(binding)
        logits, *present = binding.get_outputs()
        logits = logits.numpy()
        return (logits[:, -1:] if last_only and not keep else logits), present

    def decode_shared(self, embeds: np.ndarray, mask: np.ndarray, past: Sequence, last_only: bool = False,
                      capacity: int | None = None) -> tuple[np.ndarray, list]:
        """:meth:`decode` for a model builder's decoder: the new tokens right-padded, no position ids, the cache the
        shared buffers (``past`` itself when it is buffers with room for ``mask``'s columns, else new ones of
        ``capacity`` positions with ``past`` copied in, :func:`.shared_cache.shared_buffers`), bound as past and
        present both; the decoder's hidden states come to the host and the ``lm_head`` graph computes the logits of
        each row's last real position (``last_only``) or of every position."""
        new = embeds.shape[1]
        shared_cache.check_padding(mask, new)
        embeds, graph_mask, order = shared_cache.right_padded(embeds, mask)
        buffers = shared_cache.shared_buffers(self._ort, past, mask.shape[1], capacity, self._cache_dtype,
                                              self.device_type)
        session = self.sessions["decoder_model_merged"]
        binding = session.io_binding()
        held = [np.ascontiguousarray(embeds, dtype=self._cache_dtype), graph_mask]  # alive until the run
        binding.bind_cpu_input("inputs_embeds", held[0])
        binding.bind_cpu_input("attention_mask", held[1])
        # a host buffer of the known shape: read back without wrapping every bound output (get_outputs)
        hidden = np.empty((*embeds.shape[:2], self.manifest["hidden_size"]), dtype=self._hidden_dtype)
        binding.bind_output("hidden_states", "cpu", 0, hidden.dtype, hidden.shape, hidden.ctypes.data)
        for past_name, present_name, buffer in zip(self._past_names, self._present_names, buffers):
            binding.bind_ortvalue_input(past_name, buffer)
            binding.bind_ortvalue_output(present_name, buffer)
        session.run_with_iobinding(binding)
        hidden = hidden.astype(np.float32, copy=False)
        if last_only:
            hidden = shared_cache.last_real(hidden, mask, new)
        logits = self.sessions["lm_head"].run(None, {"hidden_states": np.ascontiguousarray(hidden)})[0]
        return (logits if last_only else shared_cache.left_layout(logits, order)), buffers

    def on_device(self, value):
        """``value`` as an ``OrtValue`` on the decoder's device (as it is when it already is one)."""
        if isinstance(value, self._ort.OrtValue):
            return value
        return self._ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), self.device_type, 0)

    def decoder_step(self, embeds: np.ndarray, mask: np.ndarray, past: Sequence,
                     positions: np.ndarray | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """One decoder run: logits of the new positions and the grown cache, both as numpy arrays (the cache copied
        to the host; decoding loops use :meth:`decode`, which keeps it on the device). ``positions``: the new
        tokens' position ids (``prefill_inputs``' third value, then :func:`.positions.next_positions`); by default
        they are counted from the mask, which is right for LLaVA and for text-only prompts."""
        logits, present = self.decode(embeds, mask, past, positions)
        present = [value if isinstance(value, np.ndarray) else value.numpy() for value in present]
        if self.builder_decoder:  # the buffers' filled part (right-padded rows), which decode takes back
            present = [value[:, :, :mask.shape[1]] for value in present]
        return logits, present

    @property
    def _past_names(self) -> list[str]:
        # after inputs_embeds, attention_mask and (our decoder's) position_ids
        return [name for name in self.manifest["graphs"]["decoder_model_merged"]["inputs"]
                if name.startswith("past_key_values.")]

    @property
    def _present_names(self) -> list[str]:
        return self.manifest["graphs"]["decoder_model_merged"]["outputs"][1:]

    @property
    def _optional_inputs(self) -> dict[str, int]:
        return self.manifest["graphs"]["decoder_model_merged"].get("optional_inputs", {})

    def empty_past(self, batch: int) -> list[np.ndarray]:
        """The prefill's empty cache: a key and a value ``[batch, heads, 0, head_dim]`` per decoder layer, each
        with its layer's key/value heads (:func:`kv_heads_per_layer`)."""
        head_dim = self.manifest["head_dim"]
        return [np.zeros((batch, heads, 0, head_dim), dtype=np.float32)
                for heads in kv_heads_per_layer(self.manifest) for _ in ("key", "value")]

    def next_step(self, token: np.ndarray, mask: np.ndarray, past: Sequence, positions: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, list, np.ndarray]:
        """Feed one token per row after the cached positions: ``(logits, mask, past, positions)`` grown by one;
        the cache stays on the decoder's device (:meth:`decode`)."""
        mask = np.concatenate([mask, np.ones((len(token), 1), dtype=np.int64)], axis=1)
        embeds = self.sessions["embed_tokens"].run(None, {"input_ids": token[:, None].astype(np.int64)})[0]
        if not self.builder_decoder:  # the builder's decoder counts positions from the mask
            positions = next_positions(positions)
        logits, past = self.decode(embeds, mask, past, positions, last_only=True)
        return logits, mask, past, positions

    def generate_ids(self, prompts: Sequence[Prompt], max_new_tokens: int = 32) -> np.ndarray:
        """Greedy new token ids ``[batch, ≤ max_new_tokens]``, stopping when every row has produced eos."""
        embeds, mask, positions = self.prefill_inputs(prompts)
        logits, past = self.decode(embeds, mask, self.empty_past(len(prompts)), positions, last_only=True,
                                   capacity=mask.shape[1] + max_new_tokens)
        eos = self.processor.tokenizer.eos_token_id
        tokens, done = [], np.zeros(len(prompts), dtype=bool)
        for _ in range(max_new_tokens):
            token = self.greedy(logits)
            token = np.where(done, eos, token)
            tokens.append(token)
            done |= token == eos
            if done.all() or len(tokens) == max_new_tokens:  # no decoder run for a token nobody takes
                break
            logits, mask, past, positions = self.next_step(token, mask, past, positions)
        return np.stack(tokens, axis=1)

    def greedy(self, logits: np.ndarray) -> np.ndarray:
        """The next token of each row: the argmax of its last position's logits, suppressed tokens excluded."""
        scores = logits[:, -1]
        scores[:, self.suppress_tokens] = -np.inf
        return scores.argmax(-1)

    def benchmark(self, prompt: Prompt, new_tokens: int, repeats: int = 5,
                  clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
        """Medians over ``repeats`` runs after one warm-up: ``prefill_s`` (the processor's output to the first
        token's logits: vision graph, embedding, decoder over the prompt) and ``decode_s_per_token`` (``new_tokens``
        greedy steps with the cache, every step taken even past eos, so that each run times the same work);
        ``tokens_per_s`` is its inverse; ``prompt_tokens`` the prompt's length."""
        if new_tokens < 1 or repeats < 1:
            raise UsageError(f"benchmark: new tokens ({new_tokens}) and repeats ({repeats}) must be at least 1")
        prefill_times, decode_times = [], []
        for _ in range(repeats + 1):
            start = clock()
            embeds, mask, positions = self.prefill_inputs([prompt])
            logits, past = self.decode(embeds, mask, self.empty_past(1), positions, last_only=True,
                                       capacity=mask.shape[1] + new_tokens)
            prefilled = clock()
            for _ in range(new_tokens):
                logits, mask, past, positions = self.next_step(self.greedy(logits), mask, past, positions)
            prefill_times.append(prefilled - start)
            decode_times.append((clock() - prefilled) / new_tokens)
        decode_s = float(np.median(decode_times[1:]))  # the first run is the warm-up
        return {"prefill_s": float(np.median(prefill_times[1:])), "decode_s_per_token": decode_s,
                "tokens_per_s": 1.0 / decode_s, "prompt_tokens": int(embeds.shape[1]), "new_tokens": new_tokens,
                "repeats": repeats}

    def continuation_nll(self, prompt: Prompt, target_ids: list[int]) -> tuple[float, bool]:
        """Negative log-likelihood of ``target_ids`` after ``prompt``, and whether greedy decoding produces them."""
        embeds, mask, positions = self.prefill_inputs([prompt])
        tail = self.sessions["embed_tokens"].run(None, {"input_ids": np.array([target_ids], dtype=np.int64)})[0]
        embeds = np.concatenate([embeds, tail], axis=1)
        mask = np.concatenate([mask, np.ones((1, len(target_ids)), dtype=np.int64)], axis=1)
        positions = np.concatenate([positions, next_positions(positions, len(target_ids))], axis=-1)
        logits, _ = self.decode(embeds, mask, self.empty_past(1), positions)
        predicted = logits[0, -len(target_ids) - 1:-1].astype(np.float64)
        shifted = predicted - predicted.max(axis=-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        nll = -float(log_probs[np.arange(len(target_ids)), target_ids].sum())
        return nll, bool((predicted.argmax(axis=-1) == np.array(target_ids)).all())

    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int = 32) -> list[str]:
        ids = self.generate_ids(prompts, max_new_tokens)
        return [text.strip() for text in self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)]
