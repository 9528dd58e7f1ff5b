"""Domain-aware layer selection (docs/methods/domain-aware.md): remove the layers that change their input least in a domain.

``s_d(l)`` is the mean over domain ``d``'s calibration samples of the mean over each sample's real tokens of
``cos(h_l, h_{l+1})``. ``domain_math`` ranks by ``s_math``, ``domain_nonmath`` by ``s_nonmath`` and
``domain_mixed`` by ``w * s_math + (1 - w) * s_nonmath`` (``w = domain_weight``). Importance is ``1 - s``, so
the most input-preserving layers go first. All three calibrate on the same two labelled sets in one pass
(``calib_limit`` samples of each domain), so a sweep over the three reuses one calibration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from lmms_topo_plugin.calibration.sources import DOMAINS
from lmms_topo_plugin.config.params import MethodConfig, option
from lmms_topo_plugin.scorers.registry import register_layer_method
from lmms_topo_plugin.scorers.base import LayerScorer, LayerScores

@dataclass(frozen=True)
class DomainDataConfig(MethodConfig):
    """The two labelled calibration sets every domain-aware method scores on."""

    calib_task_math: str | None = option(str, None, "lmms-eval task whose documents are the math calibration set "
                                         "(default: the bundled calib split's math documents)")
    calib_task_nonmath: str | None = option(str, None, "lmms-eval task whose documents are the non-math calibration "
                                            "set (default: the bundled calib split's other documents)")


@dataclass(frozen=True)
class MixedDomainConfig(DomainDataConfig):
    domain_weight: float = option(float, 0.5, "weight w of the math similarity in w*s_math + (1-w)*s_nonmath",
                                  low=0.0, high=1.0)


class DomainSimilarity(LayerScorer):
    """The shared scorer; subclasses fix the weight of the math domain."""

    needs = ("sample_token_cosine",)
    domains = DOMAINS
    min_samples = 2
    math_weight: ClassVar[float]

    def __init__(self, config: DomainDataConfig, *, seed: int = 0) -> None:
        super().__init__(config, seed=seed)
        self.calibration_tasks = {"math": config.calib_task_math, "nonmath": config.calib_task_nonmath}
        self.weight = getattr(config, "domain_weight", self.math_weight)

    def score(self, stats: dict[str, torch.Tensor], num_layers: int) -> LayerScores:
        per_sample, labels = stats["sample_token_cosine"].double(), stats["sample_domain"]
        similarity = {domain: per_sample[labels == code].mean(dim=0) for code, domain in enumerate(DOMAINS)}
        mixed = self.weight * similarity["math"] + (1 - self.weight) * similarity["nonmath"]
        return LayerScores((1.0 - mixed).tolist(), {"math_similarity": similarity["math"].tolist(),
                                                    "nonmath_similarity": similarity["nonmath"].tolist(),
                                                    "math_weight": [self.weight]})


@register_layer_method("domain_math", config_class=DomainDataConfig, description="domain-aware: remove the layers "
                       "whose mean token cosine cos(h_l, h_{l+1}) on math calibration samples is highest")
class MathDomain(DomainSimilarity):
    math_weight = 1.0


@register_layer_method("domain_nonmath", config_class=DomainDataConfig, description="domain-aware: remove the "
                       "layers whose mean token cosine on non-math calibration samples is highest")
class NonMathDomain(DomainSimilarity):
    math_weight = 0.0


@register_layer_method("domain_mixed", config_class=MixedDomainConfig, description="domain-aware: remove the "
                       "layers with the highest domain_weight-mixed token cosine of the math and non-math samples")
class MixedDomain(DomainSimilarity):
    math_weight = 0.5
