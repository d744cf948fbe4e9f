"""Registers ``weighted_sft``. Classes are named by import path so ``trl-causal list`` stays fast."""

from trl_causal.hookspecs import hookimpl


@hookimpl
def register_trainers(register):
    register(
        "weighted_sft",
        trainer="trl_causal_weighted_sft.trainer:WeightedSFTTrainer",
        config="trl_causal_weighted_sft.trainer:WeightedSFTConfig",
        kind="sft",
        description="SFT where each row's token losses are scaled by the number in its weight column.",
    )
