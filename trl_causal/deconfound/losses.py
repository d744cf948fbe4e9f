"""The loss terms of the ``deconfounded_reward`` trainer on one batch of rewards r (torch; the package does not import
this module). Pair rows come stacked chosen first, then rejected, as TRL's ``DataCollatorForPreference`` stacks them.
"""

from __future__ import annotations

import torch
from torch import nn


def regression_losses(rewards: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(r_i - t_i)^2 for each row i [B]."""
    return (rewards - targets) ** 2


def pairwise_losses(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | float = 0.0) -> torch.Tensor:
    """-log sigmoid(r_chosen - r_rejected - m) for each pair [B/2]."""
    return -nn.functional.logsigmoid(chosen - rejected - margin)


def centering_penalties(rewards: torch.Tensor) -> torch.Tensor:
    """(r_chosen + r_rejected)^2 for each pair [B/2], the term TRL's ``center_rewards_coefficient`` weighs."""
    return rewards.view(2, -1).sum(dim=0) ** 2


def squared_correlations(rewards: torch.Tensor, confounders: torch.Tensor) -> torch.Tensor:
    """Invariance penalty corr(r, C_j)^2 = cov(r, C_j)^2 / (var r var C_j) in the batch, per confounder j [k] (0: C_j constant)."""
    r = rewards - rewards.mean()
    c = confounders - confounders.mean(dim=0)
    covariance = (r[:, None] * c).sum(dim=0)
    return covariance**2 / ((r**2).sum() * (c**2).sum(dim=0)).clamp(min=1e-12)
