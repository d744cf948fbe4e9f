"""The trainers and event estimators that ship with trl-causal, registered through the same hooks as third-party ones.

Classes are given as import paths, so listing them imports neither torch nor the method modules.
"""

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
    register(
        "deconfounded_reward",
        trainer="trl_causal.trainer.deconfounded_reward_trainer:DeconfoundedRewardTrainer",
        config="trl_causal.trainer.deconfounded_reward_config:DeconfoundedRewardConfig",
        kind="reward",
        description="DeconfoundLM: reward model on observational outcomes with the confounders' causal effect "
        "partialled out (Loghmani 2025).",
    )
    register(
        "latent_shift",
        trainer="trl_causal.trainer.latent_shift_trainer:LatentShiftTrainer",
        config="trl_causal.trainer.latent_shift_config:LatentShiftConfig",
        kind="sft",
        description="Latent-shift adjusted SFT: causal + adjusted heads, prediction mixes in other inputs' low-level features.",
    )
    register(
        "capt",
        trainer="trl_causal.trainer.capt_trainer:CAPTTrainer",
        config="trl_causal.trainer.capt_config:CAPTConfig",
        kind="sft",
        description="CAPT-SFT: events estimated once, replaced by fresh random symbols every epoch (Gui & Ji 2025).",
    )


@hookimpl
def register_event_estimators(register):
    register(
        "template",
        estimator="trl_causal.capt.events:TemplateEstimator",
        description="The row already holds placeholders {e1}, {e2}, ... and a name table column.",
    )
    register(
        "vocabulary",
        estimator="trl_causal.capt.events:VocabularyEstimator",
        description="Event terms from a list, a file or a regex: whole words, longest first, case-aware, plurals.",
    )
    register(
        "prontoqa",
        estimator="trl_causal.capt.events:ProntoQAEstimator",
        description="PrOntoQA rows: concepts, properties and the individual, read from the row's own sentences.",
    )
    register(
        "cladder",
        estimator="trl_causal.capt.events:CLadderEstimator",
        description="CLadder rows: the causal variables of reasoning.step0 / meta.variable_mapping.",
    )
    register(
        "llm",
        estimator="trl_causal.capt.llm_estimator:LLMEstimator",
        description="An LLM writes the template: a local transformers model or an OpenAI-compatible endpoint; "
        "validated, retried, cached on disk.",
    )
