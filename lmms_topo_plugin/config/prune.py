"""``model_args`` for ``topo_pruned``: one validated config object, checked before any weights load."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

from lmms_topo_plugin.errors import ModelArgsError
from lmms_topo_plugin.config.params import Param, parse_params
from lmms_topo_plugin.scorers.registry import DENSE_METHOD, all_method_params, available_methods, get_method

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps|auto)$")


def _device_problem(value: str) -> str | None:
    return None if _DEVICE.match(value) else "expected cpu, cuda, cuda:N, mps or auto"


GENERAL_PARAMS: dict[str, Param] = {
    "pretrained": Param(str, None, "Hub id or local directory of the base model (default: the bundled model)"),
    "revision": Param(str, None, "Hub revision (branch, tag or commit) of pretrained (default: main)"),
    "method": Param(str, DENSE_METHOD, "layer-pruning method; 'none' evaluates the dense model"),
    "sparsity": Param(float, None, "fraction of decoder layers to remove", low=0.0, high=1.0, high_inclusive=False),
    "n_remove": Param(int, None, "number of decoder layers to remove (instead of sparsity)", low=0),
    "keep_first_last": Param(bool, True, "never remove the first or the last decoder layer"),
    "seed": Param(int, 0, "seed for random choices (random method, calibration sampling)", low=0),
    "calib_task": Param(str, None, "lmms-eval task whose documents calibrate (default: the bundled calib split)"),
    "calib_limit": Param(int, None, "number of calibration samples (default: the method's, 64; topology 256)",
                         low=1, high=100_000),
    "calib_batch_size": Param(int, 8, "batch size of the calibration pass", low=1, high=4096),
    "include_path": Param(str, None, "extra lmms-eval task directory for calib_task"),
    "device": Param(str, None, "cpu, cuda, cuda:N, mps or auto (default: cuda when available)", check=_device_problem),
    "dtype": Param(str, None, "weights dtype (default: float32 on cpu, auto elsewhere)",
                   choices=("auto", "float32", "float16", "bfloat16")),
    "device_map": Param(str, None, "transformers device_map, e.g. auto (overrides device placement)"),
    "attn_implementation": Param(str, None, "attention kernel", choices=("eager", "sdpa", "flash_attention_2")),
    "batch_size": Param(int, 1, "evaluation batch size", low=1, high=4096),
    "max_new_tokens": Param(int, 256, "generation length when a task does not set max_new_tokens", low=1),
    "use_cache": Param(bool, True, "use the KV cache while generating"),
    "cache_dir": Param(str, None, "where calibration statistics and scores are cached"),
    "recompute": Param(bool, False, "ignore cached calibration statistics and scores"),
    "backend": Param(str, "pytorch", "what answers the requests: the pruned PyTorch model, or (onnxruntime) the "
                     "ONNX build in pretrained=<dir written by topo-prune export --onnx>",
                     choices=("pytorch", "onnxruntime")),
    "onnx_precision": Param(str, "fp32", "backend=onnxruntime: which exported variant answers",
                            choices=("fp32", "fp16", "int4")),
    "report_dir": Param(str, None, "where the pruning report JSON goes (default: --output_path, else ./topo_prune_reports)"),
    "token_method": Param(str, None, "visual-token pruning during prefill (combinable with a layer method=)",
                          choices=("fastv", "halfv", "random")),
    "token_keep": Param(float, 0.5, "fraction of the visual tokens token_method keeps", low=0.0, high=1.0,
                        check=lambda value: None if value > 0 else "expected a float in (0, 1]"),
    "token_layer": Param(int, 2, "decoder layer (of the pruned model) from which visual tokens are dropped; "
                         "halfv: its IVR layer (topo-prune analyze --what entropy detects it); from 1 on, since generation "
                         "sizes its attention mask by layer 0's KV cache, which must hold the whole prompt", low=1),
    "token_anchor": Param(float, 0.1, "halfv: fraction of the kept visual tokens chosen by relevance (the rest by "
                          "diversity)", low=0.0, high=1.0),
    "token_ssr_mode": Param(str, "auto", "halfv step 2 from the SSR layer: freeze (visual tokens give keys and values "
                            "only), top5 (keep the 5% of the visual tokens the last token attends to most), off, or "
                            "auto (freeze when freezing the visual tokens there changes the next-token distribution by "
                            "a KL of at most 1e-3 on the calibration prompts, else top5)",
                            choices=("auto", "freeze", "top5", "off")),
    "token_ssr_layer": Param(int, None, "halfv: the SSR layer (of the pruned model) where step 2 starts; default: "
                             "detected (the visual entropy curve's minimum)", low=1),
}
TOKEN_KEYS = ("token_keep", "token_layer", "token_anchor", "token_ssr_mode", "token_ssr_layer")
HALFV_KEYS = ("token_anchor", "token_ssr_mode", "token_ssr_layer")


BUNDLED_CALIBRATION = "bundled:topo_synth/calib"


@dataclass
class PruneConfig:
    """Every option of a ``topo_pruned`` run, parsed and range-checked."""

    pretrained: str | None = None
    revision: str | None = None
    method: str = DENSE_METHOD
    sparsity: float | None = None
    n_remove: int | None = None
    keep_first_last: bool = True
    seed: int = 0
    calib_task: str | None = None
    calib_limit: int | None = None
    calib_batch_size: int = 8
    include_path: str | None = None
    device: str | None = None
    dtype: str | None = None
    device_map: str | None = None
    attn_implementation: str | None = None
    batch_size: int = 1
    max_new_tokens: int = 256
    use_cache: bool = True
    cache_dir: str | None = None
    recompute: bool = False
    report_dir: str | None = None
    backend: str = "pytorch"
    onnx_precision: str = "fp32"
    token_method: str | None = None
    token_keep: float = 0.5
    token_layer: int | None = 2  # None: token_method=halfv's IVR layer, detected after loading
    token_anchor: float = 0.1
    token_ssr_mode: str = "auto"  # halfv: "auto" is resolved after loading, by the freezing KL at the SSR layer
    token_ssr_layer: int | None = None  # halfv: None = its SSR layer, detected after loading
    method_params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_model_args(cls, given: dict[str, Any]) -> "PruneConfig":
        """Parse ``model_args`` (already split into a dict); raise :class:`ModelArgsError` on any problem."""
        given = {key: value for key, value in given.items() if value is not None}
        method = str(given.get("method", DENSE_METHOD))
        method_keys = set(all_method_params())
        general = {k: v for k, v in given.items() if k not in method_keys or k in GENERAL_PARAMS}
        own = {k: v for k, v in given.items() if k in method_keys and k not in GENERAL_PARAMS}
        unknown = sorted(set(general) - set(GENERAL_PARAMS))
        if unknown:
            allowed = sorted(set(GENERAL_PARAMS) | method_keys)
            raise ModelArgsError(f"model_args: unknown key {unknown[0]!r}; allowed keys: {', '.join(allowed)}")
        values = parse_params(GENERAL_PARAMS, general, where="topo_pruned")
        if method == DENSE_METHOD:
            if own:
                key = sorted(own)[0]
                owners = [name for name in available_methods()[1:] if key in get_method(name).params]
                raise ModelArgsError(f"model_args: {key!r} is a parameter of method={'/'.join(owners)}, "
                                     "not of method=none")
            method_params: dict[str, Any] = {}
        else:
            spec = get_method(method)
            stray = sorted(set(own) - set(spec.params))
            if stray:
                raise ModelArgsError(
                    f"model_args: {stray[0]!r} is not a parameter of method={method}; "
                    f"its parameters: {', '.join(sorted(spec.params)) or '(none)'}"
                )
            method_params = spec.parse(own)
        config = cls(**values, method_params=method_params)
        config._check_budget()
        config._check_backend()
        if config.token_method is None and (stray := [key for key in TOKEN_KEYS if key in given]):
            raise ModelArgsError(f"model_args: {stray[0]}= needs token_method= (fastv, halfv or random)")
        if config.token_method == "halfv" and "token_layer" not in given:
            config.token_layer = None  # its IVR layer, detected on the loaded model (tokens/auto_layer.py)
        if config.token_method not in (None, "halfv") and (stray := [key for key in HALFV_KEYS if key in given]):
            raise ModelArgsError(f"model_args: {stray[0]}= is a parameter of token_method=halfv, not of "
                                 f"token_method={config.token_method}")
        if config.token_method == "halfv" and not config.needs_token_detection:
            config.token_pruner()  # every HalfV parameter is given: check them together now
        return config

    @property
    def needs_token_detection(self) -> bool:
        """``token_method=halfv`` with a stage layer or the SSR mode left to the lifecycle of the loaded model."""
        return self.token_method == "halfv" and (
            self.token_layer is None or self.token_ssr_mode == "auto"
            or (self.token_ssr_mode != "off" and self.token_ssr_layer is None))

    def token_pruner(self):
        """The :class:`~lmms_topo_plugin.tokens.TokenPruner` of :attr:`token_pruning` (None without token_method)."""
        from lmms_topo_plugin.tokens import token_pruner

        return token_pruner(self.token_pruning)

    @property
    def token_pruning(self) -> dict[str, Any] | None:
        """The visual-token pruning asked for, as the pruning record states it (None without token_method)."""
        if self.token_method is None:
            return None
        record = {"method": self.token_method, "keep": self.token_keep, "layer": self.token_layer, "seed": self.seed}
        if self.token_method != "halfv":
            return record
        return record | {"anchor": self.token_anchor, "ssr_mode": self.token_ssr_mode, "ssr_layer": self.token_ssr_layer}

    @staticmethod
    def token_model_args(record: dict[str, Any] | None) -> dict[str, Any]:
        """The ``model_args`` that give back a :attr:`token_pruning` record (``{}`` for none)."""
        if not record:
            return {}
        args = {"token_method": record["method"], "token_keep": record["keep"], "token_layer": record["layer"]}
        if record["method"] != "halfv":
            return args
        # a record written before step 2 existed has no ssr_mode: step 1 alone
        args |= {"token_anchor": record["anchor"], "token_ssr_mode": record.get("ssr_mode", "off")}
        return args | ({"token_ssr_layer": record["ssr_layer"]} if record.get("ssr_layer") is not None else {})

    def _check_backend(self) -> None:
        if self.backend == "onnxruntime" and self.token_method is not None:
            raise ModelArgsError("model_args: token_method= cannot run with backend=onnxruntime: the ONNX graphs do not "
                                 "include token pruning")
        if self.backend == "onnxruntime" and (self.method != DENSE_METHOD or not self.pretrained):
            raise ModelArgsError("model_args: backend=onnxruntime evaluates an exported build as it is: give "
                                 "pretrained=<build dir> and no method (prune before export)")

    def _check_budget(self) -> None:
        if self.sparsity is not None and self.n_remove is not None:
            raise ModelArgsError("model_args: give either sparsity or n_remove, not both")
        removes = bool(self.sparsity) or bool(self.n_remove)
        if self.method == DENSE_METHOD and removes:
            raise ModelArgsError("model_args: method=none keeps every layer; set method= to prune, or drop sparsity/n_remove")
        if self.method != DENSE_METHOD and self.sparsity is None and self.n_remove is None:
            raise ModelArgsError(f"model_args: method={self.method} needs sparsity= (in [0, 1)) or n_remove=")

    def layers_to_remove(self, num_layers: int) -> int:
        """The layer budget for a decoder of ``num_layers``, checked against what the method can remove."""
        n = self.n_remove if self.n_remove is not None else int(round((self.sparsity or 0.0) * num_layers + 1e-9))
        if n == 0 or self.method == DENSE_METHOD:
            return 0
        candidates = self.removable_candidates(num_layers)
        limit = get_method(self.method).create({**self.method_params, "seed": self.seed}).max_removable(len(candidates))
        if n >= num_layers:
            raise ModelArgsError(
                f"model_args: removing {n} of {num_layers} decoder layers would remove every layer; "
                f"allowed: sparsity <= {limit / num_layers:.3f} or n_remove <= {limit}"
            )
        if n > limit:
            reason = " with keep_first_last=true" if self.keep_first_last else ""
            raise ModelArgsError(
                f"model_args: method={self.method} can remove at most {limit} of {num_layers} decoder layers{reason}, "
                f"asked for {n}; allowed: n_remove <= {limit} or sparsity <= {limit / num_layers:.3f}"
            )
        return n

    def removable_candidates(self, num_layers: int) -> list[int]:
        """Decoder layers a method may remove (first and last excluded when ``keep_first_last``)."""
        if self.keep_first_last:
            return list(range(1, num_layers - 1))
        return list(range(num_layers))

    @property
    def calibration_source(self) -> str:
        """Where the calibration documents come from: the lmms-eval task, or the bundled calib split."""
        return self.calib_task or BUNDLED_CALIBRATION

    def scorer_fingerprint(self) -> dict[str, Any]:
        """What determines the scores: method, its parameters and the seed."""
        return {"method": self.method, "params": self.method_params, "seed": self.seed}

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
