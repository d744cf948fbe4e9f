"""trl-causal inside Axolotl: list ``trl_causal_axolotl.CausalTrainerPlugin`` under ``plugins:`` and set
``trainer: capt`` / ``latent_shift`` (SFT path) or ``trainer: deconfounded_reward`` with ``reward_model: true``.
See README.md."""

from .plugin import CausalTrainerPlugin

__all__ = ["CausalTrainerPlugin"]
