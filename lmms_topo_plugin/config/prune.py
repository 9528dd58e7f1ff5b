"""``model_args`` for ``topo_pruned``: one frozen config per concern, parsed and validated once, before any weights
load. The one parser (:meth:`PruneConfig.from_model_args`) serves lmms-eval, the CLI and the sweep's variants."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from lmms_topo_plugin.config.params import (
    MethodConfig, Param, did_you_mean, option, params_of, parse_config, parse_model_args_text,
)
from lmms_topo_plugin.config.recovery import RecoveryConfig
from lmms_topo_plugin.errors import ModelArgsError
from lmms_topo_plugin.scorers.registry import DENSE_METHOD, get_method, method_keys
from lmms_topo_plugin.tokens import TOKEN_METHODS, config_class as token_config_class
from lmms_topo_plugin.tokens.configs import TokenConfig

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps|auto)$")
BUNDLED_CALIBRATION = "bundled:topo_synth/calib"


def _device_problem(value: str) -> str | None:
    return None if _DEVICE.match(value) else "expected cpu, cuda, cuda:N, mps or auto"


@dataclass(frozen=True)
class LoadConfig:
    """Which checkpoint, and how it is loaded."""

    pretrained: str | None = option(str, None, "Hub id or local directory of the base model (default: the bundled "
                                    "model)")
    revision: str | None = option(str, None, "Hub revision (branch, tag or commit) of pretrained (default: main)")
    device: str | None = option(str, None, "cpu, cuda, cuda:N, mps or auto (default: cuda when available)",
                                check=_device_problem)
    dtype: str | None = option(str, None, "weights dtype (default: float32 on cpu, auto elsewhere)",
                               choices=("auto", "float32", "float16", "bfloat16"))
    device_map: str | None = option(str, None, "transformers device_map, e.g. auto (overrides device placement)")
    attn_implementation: str | None = option(str, None, "attention kernel",
                                             choices=("eager", "sdpa", "flash_attention_2"))


@dataclass(frozen=True)
class CalibrationConfig:
    """Where the calibration prompts come from and how they are run."""

    calib_task: str | None = option(str, None, "lmms-eval task whose documents calibrate (default: the bundled "
                                    "calib split)")
    calib_limit: int | None = option(int, None, "number of calibration samples (default: the method's, 64; "
                                     "topology 256)", low=1, high=100_000)
    calib_batch_size: int = option(int, 8, "batch size of the calibration pass", low=1, high=4096)
    include_path: str | None = option(str, None, "extra lmms-eval task directory for calib_task")

    @property
    def source(self) -> str:
        """Where the calibration documents come from: the lmms-eval task, or the bundled calib split."""
        return self.calib_task or BUNDLED_CALIBRATION


@dataclass(frozen=True)
class LayerConfig:
    """Which layer method, and its budget (its own parameters are ``params``)."""

    method: str = option(str, DENSE_METHOD, "pruning method (topo-prune methods lists them); 'none' evaluates the "
                         "dense model")
    sparsity: float | None = option(float, None, "fraction of decoder layers to remove (a width method: of the dense "
                                    "prefill FLOPs)", low=0.0, high=1.0, high_inclusive=False)
    n_remove: int | None = option(int, None, "number of decoder layers to remove (instead of sparsity)", low=0)
    keep_first_last: bool = option(bool, True, "never remove the first or the last decoder layer")
    params: MethodConfig = dataclasses.field(default_factory=MethodConfig)


@dataclass(frozen=True)
class EvaluationConfig:
    """How lmms-eval's requests are answered."""

    batch_size: int = option(int, 1, "evaluation batch size", low=1, high=4096)
    max_new_tokens: int = option(int, 256, "generation length when a task does not set max_new_tokens", low=1)
    use_cache: bool = option(bool, True, "use the KV cache while generating")
    backend: str = option(str, "pytorch", "what answers the requests: the pruned PyTorch model, or (onnxruntime) the "
                          "ONNX build in pretrained=<dir written by topo-prune export --onnx>",
                          choices=("pytorch", "onnxruntime"))
    onnx_precision: str = option(str, "fp32", "backend=onnxruntime: which exported variant answers",
                                 choices=("fp32", "fp16", "int4"))


@dataclass(frozen=True)
class RunConfig:
    """Seed, caching and where the report goes."""

    seed: int = option(int, 0, "seed for random choices (random method, calibration sampling)", low=0)
    cache_dir: str | None = option(str, None, "where calibration statistics and scores are cached")
    recompute: bool = option(bool, False, "ignore cached calibration statistics and scores")
    report_dir: str | None = option(str, None, "where the pruning report JSON goes (default: --output_path, else "
                                    "./topo_prune_reports)")


CONCERNS = {"load": LoadConfig, "calibration": CalibrationConfig, "layers": LayerConfig,
            "evaluation": EvaluationConfig, "run": RunConfig, "recovery": RecoveryConfig}


def general_params() -> dict[str, Param]:
    """``{key: Param}`` of every ``model_args`` key that is not a method's own or a token pruner's."""
    return {key: param for concern in CONCERNS.values() for key, param in params_of(concern).items()}


def token_params() -> dict[str, Param]:
    """``{key: Param}`` of every ``token_*`` key (the first pruner's default where they differ)."""
    params: dict[str, Param] = {}
    for pruner in TOKEN_METHODS.values():
        params = params_of(pruner.config_class) | params
    return params


@dataclass(frozen=True)
class PruneConfig:
    """Every option of a ``topo_pruned`` run, parsed and range-checked: one frozen config per concern. Nothing
    changes a config after parsing; a later stage that resolves a value makes a new one (``dataclasses.replace``)."""

    load: LoadConfig = dataclasses.field(default_factory=LoadConfig)
    calibration: CalibrationConfig = dataclasses.field(default_factory=CalibrationConfig)
    layers: LayerConfig = dataclasses.field(default_factory=LayerConfig)
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    recovery: RecoveryConfig = dataclasses.field(default_factory=RecoveryConfig)
    tokens: TokenConfig | None = None

    @classmethod
    def from_model_args(cls, given: dict[str, Any] | str) -> "PruneConfig":
        """Parse ``model_args`` (the ``key=value,...`` text or a dict); raise :class:`ModelArgsError` on any
        problem, naming the key and the allowed values."""
        if isinstance(given, str):
            given = parse_model_args_text(given)
        given = {key: value for key, value in given.items() if value is not None}
        general, methods, tokens = general_params(), method_keys(), token_params()
        unknown = sorted(set(given) - set(general) - set(methods) - set(tokens))
        if unknown:
            allowed = set(general) | set(methods) | set(tokens)
            raise ModelArgsError(f"model_args: unknown key {unknown[0]!r}{did_you_mean(unknown[0], allowed)}; "
                                 f"allowed keys: {', '.join(sorted(allowed))}")
        concerns = {name: parse_config(concern, {k: v for k, v in given.items() if k in params_of(concern)},
                                       where="topo_pruned") for name, concern in CONCERNS.items()}
        layers = concerns["layers"]
        own = {key: value for key, value in given.items() if key in methods}
        if layers.method == DENSE_METHOD:
            if own:
                key = sorted(own)[0]
                raise ModelArgsError(f"model_args: {key!r} is a parameter of method={'/'.join(methods[key])}, "
                                     "not of method=none")
        else:
            spec = get_method(layers.method)
            stray = sorted(set(own) - set(spec.params))
            if stray:
                raise ModelArgsError(f"model_args: {stray[0]!r} is not a parameter of method={layers.method}; "
                                     f"its parameters: {', '.join(sorted(spec.params)) or '(none)'}")
            concerns["layers"] = dataclasses.replace(layers, params=spec.parse(own))
        config = cls(**concerns, tokens=parse_tokens({k: v for k, v in given.items() if k in tokens}))
        check_recovery_keys(config.recovery, set(given))
        config.check()
        return config

    def check(self) -> None:
        """The checks across concerns (budget, backend, HalfV's stages when all are given)."""
        layers, backend = self.layers, self.evaluation.backend
        if layers.sparsity is not None and layers.n_remove is not None:
            raise ModelArgsError("model_args: give either sparsity or n_remove, not both")
        removes = bool(layers.sparsity) or bool(layers.n_remove)
        if layers.method == DENSE_METHOD and removes:
            raise ModelArgsError("model_args: method=none keeps every layer; set method= to prune, or drop "
                                 "sparsity/n_remove")
        if layers.method != DENSE_METHOD and layers.sparsity is None and layers.n_remove is None:
            raise ModelArgsError(f"model_args: method={layers.method} needs sparsity= (in [0, 1)) or n_remove=")
        if layers.method != DENSE_METHOD and get_method(layers.method).unit == "widths":
            if layers.n_remove is not None:
                raise ModelArgsError(f"model_args: method={layers.method} removes no layers: give sparsity= (the "
                                     "fraction of the dense model's prefill FLOPs to remove), not n_remove=")
            if self.tokens is not None:
                raise ModelArgsError(f"model_args: method={layers.method} chooses its own visual-token pruning "
                                     f"(comp: by its schedule; a width-only method: none): drop "
                                     f"token_method={self.tokens.token_method}")
        if backend == "onnxruntime" and self.tokens is not None:
            raise ModelArgsError("model_args: token_method= cannot run with backend=onnxruntime: the ONNX graphs do not "
                                 "include token pruning")
        if backend == "onnxruntime" and (layers.method != DENSE_METHOD or not self.load.pretrained):
            raise ModelArgsError("model_args: backend=onnxruntime evaluates an exported build as it is: give "
                                 "pretrained=<build dir> and no method (prune before export)")
        if self.recovery.enabled and layers.method == DENSE_METHOD:
            raise ModelArgsError("model_args: recover=kd trains a pruned model back towards the dense one; with "
                                 "method=none nothing is pruned: set method= and sparsity=, or drop recover=")
        if self.recovery.enabled and layers.method != DENSE_METHOD and not removes and self.tokens is None:
            raise ModelArgsError(f"model_args: recover=kd with {'n_remove=0' if layers.n_remove == 0 else 'sparsity=0'} "
                                 "has nothing to recover: the model is not pruned")
        if self.recovery.enabled and backend == "onnxruntime":
            raise ModelArgsError("model_args: recover=kd cannot run with backend=onnxruntime: the ONNX build is "
                                 "evaluated as it was exported (recover before exporting)")
        if self.tokens is not None and not self.tokens.needs_detection:
            self.token_pruner()  # every stage is given: check them together now

    @property
    def method(self) -> str:
        return self.layers.method

    @property
    def method_params(self) -> dict[str, Any]:
        """The layer method's own parameters (every one, defaults included)."""
        return self.layers.params.as_dict()

    @property
    def needs_token_detection(self) -> bool:
        """A token pruner with a stage layer or mode left to the lifecycle of the loaded model (HalfV)."""
        return self.tokens is not None and self.tokens.needs_detection

    @property
    def token_pruning(self) -> dict[str, Any] | None:
        """The visual-token pruning asked for, as the pruning record states it (None without token_method)."""
        return self.tokens.to_record(self.run.seed) if self.tokens is not None else None

    def token_pruner(self):
        """The :class:`~lmms_topo_plugin.tokens.TokenPruner` of :attr:`token_pruning` (None without token_method)."""
        from lmms_topo_plugin.tokens import token_pruner

        return token_pruner(self.token_pruning)

    def scorer_fingerprint(self) -> dict[str, Any]:
        """What determines the scores: method, its parameters and the seed."""
        return {"method": self.method, "params": self.method_params, "seed": self.run.seed}

    def with_values(self, **values: Any) -> "PruneConfig":
        """A new config with ``model_args`` keys of the concerns replaced (already typed values, not re-parsed)."""
        concerns = {name: getattr(self, name) for name in CONCERNS}
        for name, concern in CONCERNS.items():
            own = {key: value for key, value in values.items() if key in params_of(concern)}
            if own:
                concerns[name] = dataclasses.replace(concerns[name], **own)
        return dataclasses.replace(self, **concerns)

    def as_dict(self) -> dict[str, Any]:
        """Every key as ``model_args`` spells it, the method's own parameters under ``method_params`` (the report's
        ``config``)."""
        flat: dict[str, Any] = {}
        for name in CONCERNS:
            concern = getattr(self, name)
            flat |= {key: getattr(concern, key) for key in params_of(type(concern))}
        tokens = dataclasses.asdict(self.tokens) if self.tokens is not None else {"token_method": None}
        return flat | tokens | {"method_params": self.method_params}


def check_recovery_keys(recovery: RecoveryConfig, given: set[str]) -> None:
    """A ``recover_*`` key refused where it would do nothing: without ``recover=kd``, or ``recover_lora_rank`` with
    ``recover_params=full``."""
    keys = sorted(key for key in given & set(params_of(RecoveryConfig)) if key != "recover")
    if keys and not recovery.enabled:
        raise ModelArgsError(f"model_args: {keys[0]}= needs recover=kd")
    if "recover_lora_rank" in given and recovery.recover_params != "lora":
        raise ModelArgsError(f"model_args: recover_lora_rank= is a parameter of recover_params=lora, not of "
                             f"recover_params={recovery.recover_params}")


def parse_tokens(given: dict[str, Any]) -> TokenConfig | None:
    """The token pruner's config from the ``token_*`` keys (None without ``token_method``)."""
    method = given.get("token_method")
    if method is None:
        if given:
            *others, last = sorted(TOKEN_METHODS)
            raise ModelArgsError(f"model_args: {sorted(given)[0]}= needs token_method= ({', '.join(others)} or {last})")
        return None
    if method not in TOKEN_METHODS:
        raise ModelArgsError(f"model_args: token_method={method!r} is not valid; expected one of "
                             f"{', '.join(sorted(TOKEN_METHODS))}")
    config_class = token_config_class(method)
    if stray := sorted(set(given) - set(params_of(config_class))):
        owners = sorted(name for name, pruner in TOKEN_METHODS.items() if stray[0] in params_of(pruner.config_class))
        raise ModelArgsError(f"model_args: {stray[0]}= is a parameter of token_method={'/'.join(owners)}, not of "
                             f"token_method={method}")
    return parse_config(config_class, given, where=f"token_method={method}")


def tokens_of(model_args: dict[str, Any]) -> TokenConfig | None:
    """The token config in a report's ``config`` (resolved values; older reports list every token key)."""
    method = model_args.get("token_method")
    if method is None:
        return None
    keys = params_of(token_config_class(method))
    return token_config_class(method)(**{key: model_args[key] for key in keys if key in model_args})
