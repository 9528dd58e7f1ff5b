"""The one place where the plugin works around lmms-eval bugs.

lmms-eval 0.7.x: ``evaluator.unwrap_generation_output`` turns every model output that is not a string
into ``str(output)``, including the ``(negative log-likelihood, is_greedy)`` pairs that ``loglikelihood``
must return. ``loglikelihood`` and ``multiple_choice`` tasks then fail in ``process_results`` (they unpack
a string). :func:`install_loglikelihood_fix` wraps that function so such pairs pass through unchanged.
It is installed once, when :mod:`lmms_topo_plugin.integrations.lmms_eval.model` is imported (lmms-eval imports it
for ``--model topo_pruned``; the sweep imports it before evaluating), and only if the running lmms-eval shows
the bug.
"""

from __future__ import annotations

from typing import Any


def _is_loglikelihood_pair(output: Any) -> bool:
    return (
        isinstance(output, tuple)
        and len(output) == 2
        and isinstance(output[0], float)
        and isinstance(output[1], bool)
    )


def install_loglikelihood_fix() -> bool:
    """Patch lmms-eval's evaluator if it stringifies ``(float, bool)``; return whether a patch is active."""
    try:
        from lmms_eval import evaluator
    except ImportError:
        return False
    original = evaluator.unwrap_generation_output
    if getattr(original, "_topo_pruned_fix", False):
        return True
    if original((0.5, True))[0] == (0.5, True):
        return False

    def unwrap_generation_output(output: Any):
        if _is_loglikelihood_pair(output):
            return output, None
        return original(output)

    unwrap_generation_output._topo_pruned_fix = True
    evaluator.unwrap_generation_output = unwrap_generation_output
    return True
