"""CoMP's collaborative importance: of tokens (CIT, from attention maps) and of parameters (CIP, token-weighted Wanda).

Pure functions on tensors. CIT scores each key token by how strongly the surviving heads attend to it; the scores,
rescaled to mean 1 (:func:`token_weights`), weight each token's contribution to a linear layer's input statistics
(:class:`WeightedSquares`), from which :func:`column_importance` scores the layer's input columns and
:func:`unit_importance` sums them per prunable unit (a head group, an MLP channel).
"""

from __future__ import annotations

import torch

__all__ = ["token_importance", "token_weights", "WeightedSquares", "column_importance", "unit_importance"]

# rows per float64 chunk in WeightedSquares.add: bounds the float64 copy to about 2**24 elements
_CHUNK_ELEMENTS = 1 << 24


def _as_bool(mask: torch.Tensor, shape: tuple[int, ...], name: str) -> torch.Tensor:
    """``mask`` (bool or 0/1) as a bool tensor of ``shape``."""
    if tuple(mask.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(mask.shape)}, expected {shape}")
    return mask if mask.dtype == torch.bool else mask != 0


def _query_rows(valid: torch.Tensor | None, query_valid: torch.Tensor | None, b: int, tq: int,
                tk: int) -> torch.Tensor | None:
    """Which query rows count ``[B, Tq]``: ``query_valid``, else the last ``Tq`` key positions of ``valid``."""
    if query_valid is not None:
        return _as_bool(query_valid, (b, tq), "query_valid")
    if valid is None:
        return None
    if tq > tk:
        raise ValueError(f"{tq} queries but {tk} keys: pass query_valid explicitly")
    return valid[:, tk - tq:]


def token_importance(attn: torch.Tensor, head_mask: torch.Tensor | None = None, valid: torch.Tensor | None = None,
                     query_valid: torch.Tensor | None = None) -> torch.Tensor:
    """CIT of one attention layer: ``S[b, i] = Σ_n max_h m_h·A[b, h, n, i]``, normalised to sum 1 over valid keys.

    ``attn`` ``[B, H, Tq, Tk]`` holds attention probabilities; ``head_mask`` ``[H]`` (bool or 0/1) multiplies each
    head's map, so a pruned head does not vote; ``valid`` ``[B, Tk]`` marks real (non-padding) keys. Query rows count
    where ``query_valid`` ``[B, Tq]`` says so, by default where ``valid`` does for the last ``Tq`` positions (the
    queries of self-attention, with or without a cache). Padding scores 0; a row whose valid scores are all 0 (every
    voting head masked) gets uniform scores. Returns float32 ``[B, Tk]``.
    """
    if attn.dim() != 4:
        raise ValueError(f"attn must be [B, H, Tq, Tk], got shape {tuple(attn.shape)}")
    b, h, tq, tk = attn.shape
    if head_mask is not None:
        keep = _as_bool(head_mask.to(attn.device), (h,), "head_mask")
        attn = attn * keep.to(attn.dtype).view(1, h, 1, 1)
    votes = attn.amax(dim=1)  # [B, Tq, Tk]: the strongest surviving head per (query, key)
    keys = None if valid is None else _as_bool(valid.to(attn.device), (b, tk), "valid")
    rows = _query_rows(keys, None if query_valid is None else query_valid.to(attn.device), b, tq, tk)
    if rows is not None:
        votes = votes.masked_fill(~rows.unsqueeze(-1), 0)
    scores = votes.sum(dim=1, dtype=torch.float64)  # [B, Tk]
    return _normalise(scores, keys).to(torch.float32)


def _normalise(scores: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """``scores`` (float64, ``[B, T]``) zeroed off ``valid`` and scaled to sum 1 per row; all-zero rows → uniform."""
    keys = torch.ones_like(scores, dtype=torch.bool) if valid is None else valid
    scores = scores.masked_fill(~keys, 0)
    total = scores.sum(dim=1, keepdim=True)
    uniform = keys.to(scores.dtype) / keys.sum(dim=1, keepdim=True).clamp(min=1)
    return torch.where(total > 0, scores / total.clamp(min=torch.finfo(scores.dtype).tiny), uniform)


def token_weights(importance: torch.Tensor | None, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Token weights ω ``[B, T]``: importance rescaled to mean 1 over each row's valid tokens, padding 0.

    ``importance`` need not be normalised (only its ratios matter) but must be non-negative; ``None`` means plain
    (ω = 1 on every valid token, so the statistics reduce to Wanda's) and then ``valid`` gives the shape. A row whose
    valid importance is all 0 gets ω = 1. Returns float32.
    """
    if importance is None:
        if valid is None:
            raise ValueError("token_weights needs importance or valid")
        return (valid if valid.dtype == torch.bool else valid != 0).to(torch.float32)
    if importance.dim() != 2:
        raise ValueError(f"importance must be [B, T], got shape {tuple(importance.shape)}")
    if bool((importance < 0).any()):
        raise ValueError("importance must be non-negative")
    keys = None if valid is None else _as_bool(valid.to(importance.device), tuple(importance.shape), "valid")
    shares = _normalise(importance.to(torch.float64), keys)
    count = shares.new_full((shares.shape[0], 1), shares.shape[1]) if keys is None else keys.sum(1, keepdim=True)
    return (shares * count).to(torch.float32)


class WeightedSquares:
    """Accumulates ``Σ_n ω_n X[n, j]²`` per input column j of a linear layer over calibration batches, in float64.

    ``tokens`` counts the rows added (with ``weights``, those of nonzero weight); ``weight_sum`` is ``Σ_n ω_n``.
    """

    def __init__(self) -> None:
        self._total: torch.Tensor | None = None
        self.tokens = 0
        self.weight_sum = 0.0

    def add(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        """Add a batch: ``x`` ``[..., C]`` (``[B, T, C]`` or ``[N, C]``), ``weights`` shaped ``x[..., 0]`` or None."""
        if x.dim() < 2:
            raise ValueError(f"x must be [..., C] with at least 2 dims, got shape {tuple(x.shape)}")
        if weights is not None and tuple(weights.shape) != tuple(x.shape[:-1]):
            raise ValueError(f"weights have shape {tuple(weights.shape)}, expected {tuple(x.shape[:-1])}")
        rows = x.reshape(-1, x.shape[-1])
        omega = None if weights is None else weights.reshape(-1).to(device=x.device, dtype=torch.float64)
        if self._total is None:
            self._total = torch.zeros(rows.shape[1], dtype=torch.float64, device=x.device)
        elif self._total.shape[0] != rows.shape[1]:
            raise ValueError(f"x has {rows.shape[1]} columns, earlier batches had {self._total.shape[0]}")
        step = max(1, _CHUNK_ELEMENTS // max(1, rows.shape[1]))
        for start in range(0, rows.shape[0], step):
            chunk = rows[start:start + step].to(torch.float64).square()
            if omega is not None:
                chunk = chunk * omega[start:start + step, None]
            self._total += chunk.sum(dim=0)
        self.tokens += rows.shape[0] if omega is None else int((omega != 0).sum())
        self.weight_sum += float(rows.shape[0]) if omega is None else float(omega.sum())

    @property
    def total(self) -> torch.Tensor:
        """``[C]`` float64: the accumulated weighted squares per column."""
        if self._total is None:
            raise ValueError("no batch added yet")
        return self._total


def column_importance(weight: torch.Tensor, squares: torch.Tensor | WeightedSquares) -> torch.Tensor:
    """CIP of a linear's input columns: ``mean_i |W[i, j]| · sqrt(Σ_n ω_n X[n, j]²)``, float64 ``[in]``.

    ``weight`` is ``[out, in]``; ``squares`` the column statistics (a tensor ``[in]`` or a :class:`WeightedSquares`).
    With ω ≡ 1 this is Wanda's score averaged over each column: ``mean_i |W_ij| · ‖X_j‖₂``.
    """
    total = squares.total if isinstance(squares, WeightedSquares) else squares
    if weight.dim() != 2 or total.shape != (weight.shape[1],):
        raise ValueError(f"weight {tuple(weight.shape)} and squares {tuple(total.shape)} do not match "
                         "([out, in] and [in])")
    magnitude = weight.detach().to(torch.float64).abs().mean(dim=0)
    return magnitude * total.to(device=magnitude.device, dtype=torch.float64).clamp(min=0).sqrt()


def unit_importance(column_scores: torch.Tensor, unit_width: int) -> torch.Tensor:
    """Per-unit importance ``[units]``: the sum over each unit's ``unit_width`` consecutive columns."""
    if unit_width < 1 or column_scores.dim() != 1 or column_scores.shape[0] % unit_width:
        raise ValueError(f"{tuple(column_scores.shape)} columns do not split into units of width {unit_width}")
    return column_scores.view(-1, unit_width).sum(dim=1)
