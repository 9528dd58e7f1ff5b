"""CoMP's multi-mode pruning strategy (MPS): which pruning mode to advance at each stage.

Modes are names ("vision_params", "language_params", "projector_params", "vision_tokens", ...). Each stage the caller
asks :meth:`MultiModeScheduler.next_mode`, advances that mode by one step and reports its cost (Δ validation loss /
Δ FLOPs, lower is cheaper) with :meth:`MultiModeScheduler.report`, which ends the stage.

Rules: modes never run go first, in the given order (warm-up); then, with probability ρ, a mode drawn from
``softmax(I_m / τ)`` (exploration, favouring modes left alone longest); else the mode with the lowest smoothed cost.
``I_m`` is the number of stages since mode m last ran. A report ``c`` updates m's smoothed cost to
``λ·old + (1 − λ)·c`` with ``λ = max(λ0 − (λ0 / I_max)(I_m − 1), 0)``, so an old estimate counts less.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Iterable

import numpy as np

__all__ = ["StageRecord", "MultiModeScheduler"]


def _blend(lam: float, old: float, new: float) -> float:
    """``λ·old + (1 − λ)·new``, leaving out a term whose factor is 0 (so an infinite cost cannot give NaN)."""
    if lam == 0.0:
        return new
    if lam == 1.0:
        return old
    return lam * old + (1.0 - lam) * new


@dataclass(frozen=True)
class StageRecord:
    """One finished stage: which mode ran, why, its reported and its smoothed cost."""

    stage: int
    mode: str
    why: str  # "warmup" | "explore" | "cheapest" | "forced" (a report of a mode next_mode did not pick)
    cost: float
    smoothed: float


@dataclass
class MultiModeScheduler:
    """Deterministic MPS scheduler: the same seed and the same reported costs give the same choices."""

    lambda0: float = 0.4
    i_max: int = 5
    rho: float = 0.2
    tau: float = 5.0
    seed: int = 0
    explore: bool = True
    stage: int = field(default=0, init=False)
    last_run: dict[str, int] = field(default_factory=dict, init=False)
    smoothed: dict[str, float] = field(default_factory=dict, init=False)
    history: list[StageRecord] = field(default_factory=list, init=False)
    _pending: tuple[str, str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.lambda0 <= 1.0:
            raise ValueError(f"lambda0 must be in [0, 1], got {self.lambda0}")
        if self.i_max < 1:
            raise ValueError(f"i_max must be at least 1, got {self.i_max}")
        if not 0.0 <= self.rho <= 1.0:
            raise ValueError(f"rho must be in [0, 1], got {self.rho}")
        if self.tau <= 0:
            raise ValueError(f"tau must be positive, got {self.tau}")
        self._rng = np.random.default_rng(self.seed)

    def interval(self, mode: str) -> int:
        """``I_m`` at the current stage: stages since ``mode`` last ran (never run: ``stage + 1``)."""
        return self.stage - self.last_run.get(mode, -1)

    def smoothing(self, interval: int) -> float:
        """``λ`` for a mode that runs ``interval`` stages after its previous run."""
        return max(self.lambda0 - (self.lambda0 / self.i_max) * (interval - 1), 0.0)

    def exploration_probabilities(self, modes: Iterable[str]) -> np.ndarray:
        """``softmax(I_m / τ)`` over ``modes``, in their order."""
        logits = np.array([self.interval(m) / self.tau for m in modes], dtype=np.float64)
        weights = np.exp(logits - logits.max())
        return weights / weights.sum()

    def next_mode(self, available: Iterable[str]) -> tuple[str, str]:
        """The mode to advance this stage among ``available`` (in order), and why: warmup, explore or cheapest.

        Random draws (one uniform per post-warm-up call when exploring is on, plus one choice when it explores) come
        from the scheduler's own seeded generator; warm-up and ``explore=False`` draw nothing.
        """
        modes = list(dict.fromkeys(available))
        if not modes:
            raise ValueError("no mode available")
        fresh = [m for m in modes if m not in self.smoothed]
        if fresh:
            choice = (fresh[0], "warmup")
        elif self.explore and self._rng.random() < self.rho:
            pick = self._rng.choice(len(modes), p=self.exploration_probabilities(modes))
            choice = (modes[int(pick)], "explore")
        else:  # min keeps the first of equal costs: ties go to the given order
            choice = (min(modes, key=lambda m: self.smoothed[m]), "cheapest")
        self._pending = choice
        return choice

    def report(self, mode: str, cost: float) -> StageRecord:
        """``mode`` advanced at this stage with ``cost``: update its smoothed cost, record it, end the stage."""
        cost = float(cost)
        if math.isnan(cost):
            raise ValueError(f"cost of {mode!r} is NaN")
        if mode in self.smoothed:
            lam = self.smoothing(self.interval(mode))
            self.smoothed[mode] = _blend(lam, self.smoothed[mode], cost)
        else:
            self.smoothed[mode] = cost
        why = self._pending[1] if self._pending is not None and self._pending[0] == mode else "forced"
        record = StageRecord(self.stage, mode, why, cost, self.smoothed[mode])
        self.history.append(record)
        self.last_run[mode] = self.stage
        self.stage += 1
        self._pending = None
        return record

    def history_rows(self) -> list[dict]:
        """The history as plain dicts, for reports."""
        return [asdict(r) for r in self.history]
