"""The trainers that ship with trl-causal, registered through the same hooks as third-party ones."""

from .hookspecs import hookimpl


@hookimpl
def register_trainers(register):
    register(
        "sft",
        trainer="trl:SFTTrainer",
        config="trl:SFTConfig",
        kind="sft",
        description="Plain TRL supervised fine-tuning (the baseline to A/B against).",
    )
    register(
        "reward",
        trainer="trl:RewardTrainer",
        config="trl:RewardConfig",
        kind="reward",
        description="Plain TRL reward modelling on chosen/rejected pairs (the naive baseline).",
    )
