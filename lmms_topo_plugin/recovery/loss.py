"""The distillation loss: KL(teacher ‖ student) of the next-token distributions at the answer positions.

The teacher is kept as its ``k`` most likely tokens per position with their log-probabilities renormalised over
those ``k`` (:func:`top_k_targets`): memory ``positions × k`` instead of ``positions × vocab``. Over that support the
loss is ``Σ_i p_i (log p_i − log q_i)`` with ``q`` the student's full softmax, which equals
``KL(p ‖ q restricted and renormalised) − log q(support)``: never negative, zero only when the student puts the
teacher's renormalised probabilities on the teacher's tokens and nothing elsewhere, and exactly the KL of the full
distributions when ``k`` is at least the vocabulary size.

With ``recover_hidden`` a hidden-state term is added (:func:`hidden_token_losses`): at each answer position, the
squared error of the student's residual stream against the teacher's at matched depths, relative to the teacher's
squared norm there (scale-free: the stream's norm grows with depth), averaged over the depths.
"""

from __future__ import annotations

import torch


def top_k_targets(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, log_probs)`` of the ``k`` most likely tokens of each row of ``logits`` ``[positions, vocab]``
    (all of them, sorted, when ``k`` ≥ vocab), the log-probabilities renormalised over those tokens (float32)."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    values, ids = log_probs.topk(min(k, logits.shape[-1]), dim=-1)
    return ids, values - torch.logsumexp(values, dim=-1, keepdim=True)


def kd_token_losses(student_logits: torch.Tensor, teacher_ids: torch.Tensor,
                    teacher_log_probs: torch.Tensor) -> torch.Tensor:
    """Per position ``[positions]``: ``Σ_i p_i (log p_i − log q_i)`` over the teacher's tokens ``teacher_ids``
    (``p`` = ``exp(teacher_log_probs)``, ``q`` = softmax of ``student_logits`` ``[positions, vocab]``)."""
    student = torch.log_softmax(student_logits.float(), dim=-1).gather(-1, teacher_ids.long())
    teacher = teacher_log_probs.float()
    return (teacher.exp() * (teacher - student)).sum(dim=-1)


def kd_loss(student_logits: torch.Tensor, teacher_ids: torch.Tensor, teacher_log_probs: torch.Tensor) -> torch.Tensor:
    """The mean of :func:`kd_token_losses` over the answer positions (a scalar)."""
    return kd_token_losses(student_logits, teacher_ids, teacher_log_probs).mean()


def hidden_token_losses(student_states: torch.Tensor, teacher_states: torch.Tensor) -> torch.Tensor:
    """Per position ``[positions]``: the mean over depths of ``‖s − t‖² / ‖t‖²``, ``s`` and ``t`` the student's and
    the teacher's states ``[positions, depths, hidden]`` at matched depths."""
    teacher = teacher_states.float()
    error = (student_states.float() - teacher).pow(2).sum(dim=-1)
    return (error / teacher.pow(2).sum(dim=-1).clamp_min(1e-12)).mean(dim=-1)
