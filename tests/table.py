"""One table of what the plugin offers and what the parametrized tests need of each (NVIDIA kvpress's
``tests/default_presses.py``): the layer methods, the visual-token pruners and the architecture families.

Rows come from the product's own registries (``available_methods()``, ``TOKEN_METHODS``, ``TINY_MODEL_TYPES``),
so a method, pruner or family added to the product is a row here, and every test that draws from this table
covers it (test_table.py checks that nothing here names what the product no longer has). What a row needs beyond
what the registry says is stated below, next to its reason; a new row gets the defaults, which put it in every
subset: a family or method with no sibling to stand in for it is tested everywhere until someone says otherwise.

Where a test deliberately covers a subset of the families (for speed, or one of each kind), the subset is a field
of the rows here, with why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmms_topo_plugin.families import ONNX_MODEL_TYPES, TINY_MODEL_TYPES, tiny_recipe
from lmms_topo_plugin.scorers.registry import DENSE_METHOD, available_methods, get_method
from lmms_topo_plugin.tokens import TOKEN_METHODS, TokenPruner
from lmms_topo_plugin.topology.engines import DIONYSUS_ENGINES

# ---------------------------------------------------------------------------------------------------- families


@dataclass(frozen=True)
class FamilyRow:
    name: str  # a model_type with a tiny random-weight recipe (lmms_topo_plugin.families.TINY_MODEL_TYPES)
    mrope: bool  # three M-RoPE position ids per token (Qwen2-VL's rotary scheme), from the tiny recipe
    onnx: bool  # topo-prune export --onnx supports it
    # the layer method its lmms-eval CLI run (test_lmms_eval_cli.py) prunes with: spread so that every family runs
    # one method and the methods with their own code paths (topology's plots) run on some family
    lmms_eval_method: str = "block_influence"
    # in the subset that the per-family calibration, export and decode-loop tests cover: one of each decoder and
    # vision pairing (CLIP + Llama, Qwen2-VL's ViT + M-RoPE, Idefics3); a sibling that shares the other's decoder
    # and hooks is left to the tests that run every family
    representative: bool = True
    # token pruners are also checked with eager attention on it (one Llama and one M-RoPE decoder; sdpa on all)
    eager: bool = True
    # HalfV's step 2 (the SSR layer: freeze, top5) is checked on it (a Llama, an M-RoPE and an Idefics3 decoder)
    token_ssr: bool = True
    # HalfV's freezing of deep layers on the other tokens is checked on it (one Llama, one M-RoPE decoder)
    halfv_freeze: bool = True


# what each family's row says beyond the defaults
_FAMILY_NOTES: dict[str, dict] = {
    "llava": dict(),
    # LLaVA's decoder and CLIP tower; its own anyres tiling is checked by test_tiny_models and test_onnx_llava_next
    "llava_next": dict(lmms_eval_method="angular", representative=False, eager=False, token_ssr=False,
                       halfv_freeze=False),
    "qwen2_vl": dict(lmms_eval_method="topology", token_ssr=False, halfv_freeze=False),
    # Qwen2-VL's M-RoPE decoder, with another vision tower
    "qwen2_5_vl": dict(lmms_eval_method="angular", representative=False, eager=False),
    "idefics3": dict(eager=False, halfv_freeze=False),
}

FAMILY_TABLE: dict[str, FamilyRow] = {
    name: FamilyRow(name, mrope=tiny_recipe(name).mrope, onnx=name in ONNX_MODEL_TYPES, **_FAMILY_NOTES.get(name, {}))
    for name in TINY_MODEL_TYPES}


def families(**having: bool) -> tuple[str, ...]:
    """The family names whose rows have every field in ``having`` as given (all of them without arguments),
    in the product's order: ``families(representative=True)``, ``families(mrope=True, onnx=True)``."""
    return tuple(name for name, row in FAMILY_TABLE.items()
                 if all(getattr(row, key) == value for key, value in having.items()))


FAMILIES = families()
REPRESENTATIVE_FAMILIES = families(representative=True)
MROPE_FAMILIES = families(mrope=True, onnx=True)  # the ONNX builds whose runner computes M-RoPE positions

# ------------------------------------------------------------------------------------------------ layer methods


@dataclass(frozen=True)
class LayerMethodRow:
    name: str  # a registered method= (lmms_topo_plugin.scorers.registry.available_methods(), not the dense none)
    calibrates: bool  # scores come from a calibration pass (the scorer needs statistics); else no samples are read
    domains: tuple[str, ...]  # labelled calibration domains: calib_limit samples are read from each
    min_samples: int  # the fewest calibration samples (per domain) it accepts
    dionysus_args: str | None  # model_args under which it needs dionysus (a dionysus engine), None if never
    # model_args (besides pretrained) of a tiny run that removes 2 layers: enough samples that its scores differ
    # over the candidate layers
    tiny_args: dict[str, str] = field(default_factory=dict)
    # domain-aware methods: the weight of the math domain in its score (domain_mixed: the domain_weight= tests give)
    math_weight: float | None = None

    def model_args(self, pretrained, **extra) -> str:
        """The tiny run's ``model_args`` as lmms-eval takes them, for ``pretrained``, updated by ``extra``."""
        return ",".join(f"{key}={value}" for key, value in
                        {"pretrained": str(pretrained), **self.tiny_args, **extra}.items())

    @property
    def samples(self) -> int:
        """The calibration samples its tiny run reads (0 if it does not calibrate)."""
        return int(self.tiny_args["calib_limit"]) * max(1, len(self.domains)) if self.calibrates else 0


# what each method's row says beyond what its registration says: its tiny run's model_args, and math_weight
_METHOD_NOTES: dict[str, dict] = {
    # 3 samples make every kNN graph complete and every layer's score equal (test_uninformative_scores.py)
    "topology": dict(calib_limit="16"),
    "domain_math": dict(math_weight=1.0),
    "domain_nonmath": dict(math_weight=0.0),
    "domain_mixed": dict(math_weight=0.3, domain_weight="0.3"),
}


def _method_row(name: str) -> LayerMethodRow:
    spec = get_method(name)
    notes = dict(_METHOD_NOTES.get(name, {}))
    math_weight = notes.pop("math_weight", None)
    scorer = spec.scorer_class
    engines = "topo_engine" in spec.params
    tiny_args = {"method": name, "n_remove": "2", "device": "cpu", "calib_limit": str(max(4, scorer.min_samples)),
                 **notes}
    return LayerMethodRow(name, calibrates=bool(scorer.needs), domains=tuple(scorer.domains),
                          min_samples=scorer.min_samples,
                          dionysus_args=f"topo_engine={DIONYSUS_ENGINES[0]}" if engines else None,
                          tiny_args=tiny_args, math_weight=math_weight)


LAYER_METHODS: dict[str, LayerMethodRow] = {name: _method_row(name) for name in available_methods()
                                            if name != DENSE_METHOD and get_method(name).unit == "layers"}
# methods that prune widths (heads, channels) and visual tokens, by a search on the loaded model
WIDTH_METHODS: tuple[str, ...] = tuple(name for name in available_methods()
                                       if name != DENSE_METHOD and get_method(name).unit == "widths")


DOMAIN_METHODS = tuple(row for row in LAYER_METHODS.values() if row.domains)
DIONYSUS_METHODS = tuple(row for row in LAYER_METHODS.values() if row.dionysus_args)

# ------------------------------------------------------------------------------------------------ token pruners


@dataclass(frozen=True)
class TokenCase:
    id: str  # the pytest id
    method: str  # token_method= (lmms_topo_plugin.tokens.TOKEN_METHODS)
    params: dict = field(default_factory=dict)  # the pruner's constructor arguments
    # the model_args that give this pruner (None where one of its parameters has no model_args key)
    model_args: str | None = None

    def pruner(self) -> TokenPruner:
        return TOKEN_METHODS[self.method](**self.params)


# each pruner's cases: its first step at layer 1 or 2, keeping a quarter or a half; HalfV's step 2 each way
_TOKEN_CASES: dict[str, list[TokenCase]] = {
    "fastv": [TokenCase("fastv", "fastv", dict(layer=1, keep=0.25),
                        "token_method=fastv,token_keep=0.25,token_layer=1")],
    "random": [TokenCase("random", "random", dict(layer=2, keep=0.5, seed=3),
                         "token_method=random,token_keep=0.5,token_layer=2,seed=3")],
    "cit": [TokenCase("cit", "cit", dict(layer=1, keep=0.25), "token_method=cit,token_keep=0.25,token_layer=1")],
    "halfv": [
        TokenCase("halfv", "halfv", dict(layer=1, keep=0.5, anchor=0.2),
                  "token_method=halfv,token_keep=0.5,token_layer=1,token_anchor=0.2,token_ssr_mode=off"),
        TokenCase("halfv-freeze", "halfv", dict(layer=1, keep=0.5, anchor=0.2, ssr_layer=2, ssr_mode="freeze"),
                  "token_method=halfv,token_keep=0.5,token_layer=1,token_anchor=0.2,token_ssr_mode=freeze,"
                  "token_ssr_layer=2"),
        TokenCase("halfv-top5", "halfv", dict(layer=1, keep=0.5, anchor=0.2, ssr_layer=2, ssr_mode="top5",
                                              ssr_keep=0.25)),  # ssr_keep has no model_args key
    ],
}

TOKEN_CASES: tuple[TokenCase, ...] = tuple(
    case for name in TOKEN_METHODS
    for case in _TOKEN_CASES.get(name, [TokenCase(name, name, {}, f"token_method={name}")]))


def stale_notes() -> list[str]:
    """Names the notes above give that the product no longer has (test_table.py wants none)."""
    return ([f"family {name}" for name in _FAMILY_NOTES if name not in FAMILY_TABLE]
            + [f"method {name}" for name in _METHOD_NOTES if name not in LAYER_METHODS]
            + [f"token method {name}" for name in _TOKEN_CASES if name not in TOKEN_METHODS])


def ids(rows) -> list[str]:
    """pytest ids of rows: their names (or a case's id)."""
    return [getattr(row, "id", None) or row.name for row in rows]


__all__ = ["DIONYSUS_METHODS", "DOMAIN_METHODS", "FAMILIES", "FAMILY_TABLE", "FamilyRow", "LAYER_METHODS",
           "LayerMethodRow", "WIDTH_METHODS", "MROPE_FAMILIES", "REPRESENTATIVE_FAMILIES", "TOKEN_CASES", "TokenCase", "families",
           "ids", "stale_notes"]
