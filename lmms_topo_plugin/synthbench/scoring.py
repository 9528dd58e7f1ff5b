"""Scoring used by the lmms-eval tasks: exact match after normalisation, POPE-style yes/no metrics.

The POPE aggregations take the whole task's `(gold, prediction)` pairs of normalised answers, with "yes" as the
positive class (any prediction other than "yes" counts as a "no"), and return one number for the task.
"""

from __future__ import annotations

from typing import Sequence

from lmms_topo_plugin.synthbench.text import normalize_answer

Pair = tuple[str, str]


def exact_match(prediction: str, answer: str) -> float:
    """1.0 when the normalised prediction equals the normalised answer, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(answer))


def pope_pair(prediction: str, answer: str) -> Pair:
    """The per-document item the POPE aggregations consume."""
    return normalize_answer(answer), normalize_answer(prediction)


def _confusion(pairs: Sequence[Pair]) -> tuple[int, int, int]:
    true_pos = sum(1 for gold, pred in pairs if gold == "yes" and pred == "yes")
    false_pos = sum(1 for gold, pred in pairs if gold != "yes" and pred == "yes")
    false_neg = sum(1 for gold, pred in pairs if gold == "yes" and pred != "yes")
    return true_pos, false_pos, false_neg


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def pope_precision(pairs: Sequence[Pair]) -> float:
    """Share of "yes" predictions that are right."""
    true_pos, false_pos, _ = _confusion(pairs)
    return _ratio(true_pos, true_pos + false_pos)


def pope_recall(pairs: Sequence[Pair]) -> float:
    """Share of "yes" answers predicted as "yes"."""
    true_pos, _, false_neg = _confusion(pairs)
    return _ratio(true_pos, true_pos + false_neg)


def pope_f1(pairs: Sequence[Pair]) -> float:
    """Harmonic mean of precision and recall (2TP / (2TP + FP + FN))."""
    true_pos, false_pos, false_neg = _confusion(pairs)
    return _ratio(2 * true_pos, 2 * true_pos + false_pos + false_neg)
