"""Machinery shared by the causal trainers (and usable in any ``transformers.Trainer`` subclass)."""

from .mixins import (
    CarryColumnsCollator,
    CausalLossMixin,
    ExtraColumnsMixin,
    HeadsMixin,
    causal_lm_token_losses,
    log_token_metrics,
    smoothing_own_logits,
)

__all__ = [
    "CarryColumnsCollator",
    "CausalLossMixin",
    "ExtraColumnsMixin",
    "HeadsMixin",
    "causal_lm_token_losses",
    "log_token_metrics",
    "smoothing_own_logits",
]
