"""trl-causal inside Axolotl: list ``trl_causal_axolotl.CausalTrainerPlugin`` under ``plugins:`` and set
``trainer: capt``. See README.md."""

from .plugin import CausalTrainerPlugin

__all__ = ["CausalTrainerPlugin"]
