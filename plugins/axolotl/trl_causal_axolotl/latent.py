"""``trainer: latent_shift`` on Axolotl's SFT path: trl_causal's ``LatentShiftTrainer`` on Axolotl's tokenized rows.

Latent-shift SFT (METHODS.md section 3) needs, per row, the prompt / completion boundary and the row's label.
Axolotl has already tokenized every row with the dataset's ``type:``, and its ``labels`` mask the untrained tokens
with -100, so the boundary is where the last trained span starts: exactly what ``LatentShiftTrainer`` uses (it pools
over the tokens before it; in a conversation whose assistant turns are all trained, that is all but the final
answer). The label is read from the trained text: each row's last trained span is decoded (special tokens skipped)
into a ``completion`` column, and ``LatentShiftTrainer`` maps it to its label
through the ``verbalizer`` (label -> answer text), as ``trl-causal train`` does with ``label_column: null``
(without a verbalizer, it is read from the data: each distinct answer is a label). A raw ``label_column`` cannot
be used: Axolotl drops the raw columns when it tokenizes.

The trainer is trl_causal's ``LatentShiftTrainer`` (TRL's ``SFTTrainer``) under Axolotl's trainer mixins; Axolotl's
training arguments are rebuilt as an ``AxolotlLatentShiftConfig`` (Axolotl's fields + ``LatentShiftConfig``) with
``skip_prepare_dataset`` (Axolotl's rows are already tokenized, truncated and masked) and ``max_length`` =
``sequence_len``. Axolotl's collator (``DataCollatorForSeq2Seq``, labels padded with -100) is kept.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from axolotl.core.trainers.mixins import DistributedParallelMixin, RngLoaderMixin
from axolotl.core.trainers.mixins.optimizer import OptimizerInitMixin, OptimizerMixin
from axolotl.core.trainers.mixins.scheduler import SchedulerMixin
from axolotl.core.training_args_base import AxolotlTrainingMixins
from trl_causal.errors import ConfigError, DataError
from trl_causal.trainer.latent_shift_config import LatentShiftConfig
from trl_causal.trainer.latent_shift_trainer import LATENT_SHIFT_FILE, LatentShiftTrainer

from .args import check_values, prompt_trained_setting, rebuilt_args

TRAINER = "latent_shift"
IGNORE = -100
# Keyword arguments Axolotl's builder gives its own SFT trainer that TRL's SFTTrainer does not take.
AXOLOTL_ONLY_KWARGS = ("dataset_tags", "eval_data_collator", "bench_data_collator")


@dataclasses.dataclass
class AxolotlLatentShiftConfig(AxolotlTrainingMixins, LatentShiftConfig):
    """Axolotl's training arguments plus ``LatentShiftConfig``'s fields."""


def check_config(values: dict[str, Any], output_dir: str, seed: int, **training: Any) -> LatentShiftConfig:
    """trl_causal's own ``LatentShiftConfig`` for the latent_shift keys of the YAML (``args.check_values``)."""
    return check_values(LatentShiftConfig, TRAINER, values, output_dir, seed, **training)


def check_axolotl_cfg(cfg) -> None:
    """Axolotl settings latent_shift cannot honour, named with the fix (raw YAML, before loading)."""
    if cfg.get("label_column") is not None:
        raise ConfigError(
            f"trainer: {TRAINER} on Axolotl reads each row's label from its trained text through the verbalizer: "
            "Axolotl drops raw columns such as the label column when it tokenizes. Remove `label_column` and set "
            "`verbalizer` (label -> answer text, e.g. `verbalizer: {positive: positive, negative: negative}`)."
        )
    if cfg.get("sample_packing"):
        raise ConfigError(
            f"trainer: {TRAINER} does not support `sample_packing: true`: it pools each row's own prompt tokens. Set "
            "`sample_packing: false`."
        )
    if cfg.get("pretraining_dataset") or cfg.get("streaming"):
        raise ConfigError(
            f"trainer: {TRAINER} needs a map-style dataset (it reads every row's label before training); remove "
            "`pretraining_dataset` / `streaming` and use `datasets:`."
        )
    setting = prompt_trained_setting(cfg)
    if setting:
        raise ConfigError(
            f"trainer: {TRAINER} does not support {setting}: it takes each row's prompt (which it pools) and its "
            "answer (which gives the label) from Axolotl's loss mask, and with the prompt trained too no row has a "
            "prompt. Remove it (train on the answer only, e.g. `type: chat_template` or `alpaca`)."
        )
    for key in ("use_dft", "use_eaft"):
        if cfg.get(key):
            raise ConfigError(f"trainer: {TRAINER} computes its own SFT loss; remove `{key}`.")


def latent_shift_config_from(args, values: dict[str, Any]) -> AxolotlLatentShiftConfig:
    """Axolotl's ``AxolotlTrainingArguments`` ``args`` rebuilt with the ``latent_shift`` keys of the YAML."""
    return rebuilt_args(
        args,
        AxolotlLatentShiftConfig,
        TRAINER,
        values,
        max_length=getattr(args, "max_seq_length", None) or 1024,
        dataset_kwargs={"skip_prepare_dataset": True},  # Axolotl's rows are tokenized, truncated and masked
        packing=False,
        padding_free=False,
        ddp_find_unused_parameters=False,
        loss_type="nll",  # the SFT loss latent_shift computes itself (trl 1.14's SFTConfig defaults to chunked_nll)
    )


def with_completion_text(dataset, tokenizer, split: str):
    """Axolotl's tokenized rows plus ``completion``: the decoded last trained span, the final answer (special tokens
    skipped)."""
    for name in ("input_ids", "labels"):
        if name not in dataset.column_names:
            raise DataError(
                f"trainer: {TRAINER} reads the tokenized column {name!r}, which Axolotl's {split} dataset lacks; it "
                f"has {', '.join(dataset.column_names)}."
            )

    def add(row):
        labels = row["labels"]
        end = max((position for position, label in enumerate(labels) if label != IGNORE), default=-1) + 1
        start = end
        while start > 0 and labels[start - 1] != IGNORE:
            start -= 1
        return {"completion": tokenizer.decode(row["input_ids"][start:end], skip_special_tokens=True)}

    return dataset.map(add, desc=f"trl-causal latent_shift: reading the {split} labels")


class AxolotlLatentShiftTrainer(
    RngLoaderMixin,
    SchedulerMixin,
    OptimizerMixin,
    OptimizerInitMixin,
    DistributedParallelMixin,
    LatentShiftTrainer,
):
    """trl_causal's ``LatentShiftTrainer`` built by Axolotl's SFT-path builder on Axolotl's tokenized rows.

    ``trl_causal_values`` (set by the plugin on a subclass) holds the ``latent_shift`` keys of the YAML.
    """

    tag_names = ["axolotl", "trl-causal", "latent-shift"]
    trl_causal_values: dict[str, Any] = {}

    def __init__(self, *args, **kwargs):
        for name in AXOLOTL_ONLY_KWARGS:
            kwargs.pop(name, None)
        kwargs["args"] = latent_shift_config_from(kwargs["args"], self.trl_causal_values)
        tokenizer = kwargs.get("processing_class")
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
        train_dataset, eval_dataset = kwargs.get("train_dataset"), kwargs.get("eval_dataset")
        if train_dataset is None or not hasattr(train_dataset, "column_names"):
            raise DataError(f"trainer: {TRAINER} needs Axolotl's tokenized training dataset (a datasets.Dataset).")
        kwargs["train_dataset"] = with_completion_text(train_dataset, tokenizer, "training")
        if eval_dataset is not None and hasattr(eval_dataset, "column_names"):
            kwargs["eval_dataset"] = with_completion_text(eval_dataset, tokenizer, "evaluation")
        super().__init__(*args, **kwargs)
        self.accelerator.print(
            f"trl-causal latent_shift (axolotl): {len(self.train_dataset)} training rows, labels read from the trained "
            f"text through the verbalizer {self.verbalizer}; frozen view: "
            f"{'reference copy' if self.reference_model is not None else 'adapters disabled'}."
        )

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if "attention_mask" not in self._signature_columns:  # Axolotl's rows carry it; compute_loss reads it
            self._signature_columns = [*self._signature_columns, "attention_mask"]

    def create_model_card(self, model_name=None, dataset_name=None, tags=None, dataset_tags=None):
        """TRL's model card; Axolotl passes its SFT trainers ``dataset_tags``, which become TRL's ``dataset_name``."""
        if dataset_name is None and dataset_tags:
            dataset_name = ", ".join(dataset_tags)
        return super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)

    def save_final(self, output_dir: str) -> str | None:
        """Right after training (the plugin's ``post_train``): ``save_model`` writes the model (or its adapters) with
        the heads, the memory bank and the verbalizer (``trl_causal_heads.safetensors``,
        ``trl_causal_latent_shift.json``) beside it, as ``trl-causal train`` saves them. The heads are then taken off
        the model, so that Axolotl's own final save (``model.save_pretrained``) writes a plain checkpoint."""
        self.save_model(output_dir)
        self.detach_heads()
        return None


__all__ = [
    "LATENT_SHIFT_FILE",
    "AxolotlLatentShiftConfig",
    "AxolotlLatentShiftTrainer",
    "check_axolotl_cfg",
    "check_config",
    "latent_shift_config_from",
]
