"""trl_causal: causal fine-tuning trainers for TRL.

Trainers and configs are imported on first access, so ``import trl_causal`` (and ``trl-causal
list``) stays free of torch.
"""

import importlib

__version__ = "0.1.0"

_LAZY = {
    "get_plugin_manager": "trl_causal.plugins",
    "hookimpl": "trl_causal.hookspecs",
    "ExtraColumnsMixin": "trl_causal.trainer",
    "CausalLossMixin": "trl_causal.trainer",
    "HeadsMixin": "trl_causal.trainer",
    "CAPTConfig": "trl_causal.trainer.capt_config",
    "CAPTTrainer": "trl_causal.trainer.capt_trainer",
    "CAPTPredictor": "trl_causal.trainer.capt_trainer",
    "DeconfoundedRewardConfig": "trl_causal.trainer.deconfounded_reward_config",
    "DeconfoundedRewardTrainer": "trl_causal.trainer.deconfounded_reward_trainer",
    "LatentShiftConfig": "trl_causal.trainer.latent_shift_config",
    "LatentShiftTrainer": "trl_causal.trainer.latent_shift_trainer",
    "LatentShiftPredictor": "trl_causal.trainer.latent_shift_trainer",
    "LMPredictor": "trl_causal.evaluation",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trl_causal' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
