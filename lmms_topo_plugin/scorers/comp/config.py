"""``method=comp``'s own parameters (the ``comp_*`` keys of ``model_args``)."""

from __future__ import annotations

from dataclasses import dataclass

from lmms_topo_plugin.config.params import MethodConfig, option

PARAMETER_MODES = ("vision_params", "language_params", "projector_params")
MODES = (*PARAMETER_MODES, "vision_tokens")
LAYOUTS = ("per_layer", "uniform")


def check_modes(text: str) -> str | None:
    """``comp_modes``: ':'-separated names of :data:`MODES`, each at most once."""
    names = text.split(":")
    unknown = [name for name in names if name not in MODES]
    if unknown or len(set(names)) != len(names) or not names:
        return f"expected ':'-separated modes among {', '.join(MODES)}, each once"
    return None


@dataclass(frozen=True)
class WidthSearchConfig(MethodConfig):
    """What every width method's search takes: the layout of the widths, the stage size and the held-out
    prompts (the width-only baselines have no more)."""

    comp_widths: str = option(str, "per_layer", "per_layer: each layer keeps its own widths (the paper's global "
                              "ranking; the plugin rebuilds the shapes before loading the checkpoint); uniform: every "
                              "layer keeps the same widths, so the config alone describes them and plain "
                              "from_pretrained loads the checkpoint (vision heads and the projector stay whole)",
                              choices=LAYOUTS)
    comp_step: float = option(float, 0.05, "one stage prunes this fraction of a mode's dense units (or of the "
                              "visual tokens)", low=0.0, high=0.5,
                              check=lambda v: None if v > 0 else "expected a float in (0, 0.5]")
    comp_val: int = option(int, 8, "calibration prompts held out to count FLOPs and score each stage (KL of the "
                           "next-token distribution at the prompt's end to the dense model's)", low=1)
    comp_multiple: int = option(int, 1, "MLP and projector channels are dropped in blocks that leave each layer a "
                                "multiple of this many (e.g. 8, for kernels that like aligned widths; head groups are "
                                "whole units already); 1: channel by channel", low=1)


@dataclass(frozen=True)
class CompConfig(WidthSearchConfig):
    """CoMP: attention head groups and MLP channels (decoder, vision tower, projector) and visual tokens, pruned
    together in stages until ``sparsity`` of the dense model's prefill FLOPs is removed."""

    comp_modes: str = option(str, ":".join(MODES), "the modes the schedule may advance, ':'-separated: "
                             "vision_params (vision-tower heads and MLP channels), language_params (decoder heads "
                             "and MLP channels), projector_params (the projector's hidden channels), vision_tokens "
                             "(visual tokens dropped from comp_token_layer on)", check=check_modes)
    comp_token_layer: int = option(int, 2, "decoder layer from which vision_tokens drops visual tokens (ranked by "
                                   "the collaborative token importance)", low=1)
    comp_collaborative: bool = option(bool, True, "token-weighted parameter importance and head-masked token "
                                      "importance; false: plain activation norms and every head's attention (the "
                                      "ablation)")
    comp_schedule: str = option(str, "mps", "mps: each stage advances the mode of lowest smoothed cost "
                                "(quality lost per FLOP saved), re-scoring after every stage; joint: scores from the "
                                "dense model once, every mode advanced in turn (the ablation without MPS)",
                                choices=("mps", "joint"))
    comp_explore: float = option(float, 0.2, "probability that a stage's mode is drawn from softmax(stages since "
                                 "it ran / comp_tau) instead of the cheapest (0: exploration off)", low=0.0, high=1.0)
    comp_tau: float = option(float, 5.0, "temperature of the exploration draw",
                             check=lambda v: None if v > 0 else "expected a float > 0")
    comp_lambda0: float = option(float, 0.4, "weight of a mode's cost history right after it ran; it falls by "
                                 "comp_lambda0/comp_imax per stage it waits", low=0.0, high=1.0)
    comp_imax: int = option(int, 5, "stages after which a mode's cost history is forgotten", low=1)

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(self.comp_modes.split(":"))
