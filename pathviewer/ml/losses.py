"""Losses shared by the trainers (NGSD and label refinement)."""

from __future__ import annotations

import torch


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample cross entropy ``-sum_k y_k log p_k`` of ``(N, M)`` logits and soft labels.

    Computed in float32 whatever the logits' dtype (bfloat16 under autocast would lose the
    small log-probabilities that soft targets weigh).
    """
    return -(targets.float() * torch.log_softmax(logits.float(), dim=-1)).sum(dim=-1)
