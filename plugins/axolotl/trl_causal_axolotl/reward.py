"""``trainer: deconfounded_reward`` on Axolotl's ``reward_model: true`` path.

Axolotl's reward path tokenizes chosen/rejected pairs with the dataset's ``type:``; the deconfounded reward learns
from observational rows instead (a text, or ``prompt`` + ``completion``; an outcome; confounder columns). So the
plugin's ``load_datasets`` hook hands Axolotl the raw rows of the YAML's ``datasets:`` (and ``test_datasets:`` or
``val_set_size`` for evaluation), loaded with Axolotl's own loader (local files, the Hub, ``data_files``,
``split``, ``name``), untokenized. ``AxolotlDeconfoundedRewardTrainer`` is trl_causal's ``DeconfoundedRewardTrainer``
with Axolotl's trainer mixins (optimizers, schedulers, RNG) on top: it rebuilds Axolotl's training arguments as an
``AxolotlDeconfoundedRewardConfig`` (Axolotl's ``AxolotlTrainingMixins`` + trl_causal's ``DeconfoundedRewardConfig``,
so the YAML keys of ``deconfounded_reward`` get the same defaults and validation as ``trl-causal train``), drops the
keyword arguments that belong to Axolotl's pair path (its preference collator, ``dataset_tags``), and leaves the
rest (checking rows, deconfounding, tokenizing, targets, the report, the loss) to trl_causal.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import datasets
from axolotl.core.trainers.mixins import DistributedParallelMixin, RngLoaderMixin
from axolotl.core.trainers.mixins.optimizer import OptimizerInitMixin, OptimizerMixin
from axolotl.core.trainers.mixins.scheduler import SchedulerMixin
from axolotl.core.training_args_base import AxolotlTrainingMixins
from trl_causal.errors import ConfigError, DataError
from trl_causal.trainer.deconfounded_reward_config import DeconfoundedRewardConfig
from trl_causal.trainer.deconfounded_reward_trainer import REPORT_FILE, DeconfoundedRewardTrainer

from .args import check_values, rebuilt_args

TRAINER = "deconfounded_reward"
MERGED_DIR = "merged"  # where `axolotl merge-lora` writes too


@dataclasses.dataclass
class AxolotlDeconfoundedRewardConfig(AxolotlTrainingMixins, DeconfoundedRewardConfig):
    """Axolotl's training arguments (as ``AxolotlRewardConfig`` has them) plus ``DeconfoundedRewardConfig``'s fields."""


def check_config(values: dict[str, Any], output_dir: str, seed: int, **training: Any) -> DeconfoundedRewardConfig:
    """trl_causal's own ``DeconfoundedRewardConfig`` for the deconfounded_reward keys of the YAML
    (``args.check_values``)."""
    return check_values(DeconfoundedRewardConfig, TRAINER, values, output_dir, seed, **training)


def reward_config_from(args, values: dict[str, Any]) -> AxolotlDeconfoundedRewardConfig:
    """Axolotl's ``AxolotlRewardConfig`` ``args`` rebuilt with the ``deconfounded_reward`` keys of the YAML.

    ``max_length`` becomes Axolotl's ``sequence_len`` (as ``RewardTrainer`` drops longer pairs, longer rows are
    dropped and counted in the report).
    """
    overrides = {"max_length": args.max_seq_length} if getattr(args, "max_seq_length", None) else {}
    return rebuilt_args(args, AxolotlDeconfoundedRewardConfig, TRAINER, values, **overrides)


def check_axolotl_cfg(cfg) -> None:
    """Axolotl settings that the observational rows cannot honour, named with the fix (raw YAML, before loading)."""
    for key in ("sample_packing", "streaming", "pretraining_dataset"):
        if cfg.get(key):
            raise ConfigError(
                f"trainer: {TRAINER} does not support `{key}`: it deconfounds all rows of a map-style dataset before "
                f"training. Remove `{key}`."
            )
    if not cfg.get("datasets"):
        raise ConfigError(
            f"trainer: {TRAINER} reads observational rows from `datasets:`; add e.g.\n  datasets:\n    - path: "
            "rows.jsonl\n      ds_type: json\n(rows with the text, outcome and confounder columns)."
        )
    for key in ("datasets", "test_datasets"):
        for index, entry in enumerate(cfg.get(key) or []):
            if isinstance(entry, dict) and entry.get("type") is not None:
                raise ConfigError(
                    f"{key}[{index}].type: {entry['type']!r} is not used by trainer: {TRAINER}: it reads the raw "
                    "observational columns (text_column or prompt + completion, outcome_column, the confounder "
                    f"columns), not tokenized chosen/rejected pairs. Remove `type:` from {key}[{index}]."
                )


def _load_split(cfg, entries: list, split: str) -> datasets.Dataset:
    from axolotl.utils.data.shared import load_dataset_with_config
    from axolotl.utils.dict import DictDefault

    parts = []
    for entry in entries:
        entry = DictDefault(dict(entry))
        dataset = load_dataset_with_config(entry, cfg.hf_use_auth_token)
        if isinstance(dataset, datasets.DatasetDict):
            name = entry.split or split  # a `split:` that is not there is an error, never a fallback to another split
            if name not in dataset:
                fix = "fix its `split:`" if entry.split else "set `split:` on it"
                raise DataError(f"datasets: {entry.path} has the splits {', '.join(dataset)} but no {name!r}; {fix}.")
            dataset = dataset[name]
        if not isinstance(dataset, datasets.Dataset):
            raise DataError(f"trainer: {TRAINER} needs map-style datasets; {entry.path} is {type(dataset).__name__}.")
        if entry.shards:
            dataset = dataset.shuffle(seed=cfg.seed or 42).shard(num_shards=entry.shards, index=entry.shards_idx or 0)
        parts.append(dataset)
    if len(parts) == 1:
        return parts[0]
    try:
        return datasets.concatenate_datasets(parts)
    except ValueError as error:
        raise DataError(
            f"The {split} datasets of trainer: {TRAINER} must have the same columns to be concatenated: {error}"
        ) from error


def split_off_validation(rows, size: float, group_column: str | None, seed: int):
    """(train, validation): ``size`` (a share, or a number of rows when >= 1) of the rows; with a group column, whole
    groups (rows sharing a prompt), so that neither side gets a group cut to one row."""
    if group_column is None or group_column not in rows.column_names:
        split = rows.train_test_split(test_size=int(size) if size >= 1 else float(size), seed=seed)
        return split["train"], split["test"]
    from sklearn.model_selection import GroupShuffleSplit

    share = size / len(rows) if size >= 1 else float(size)
    groups = [repr(value) for value in rows[group_column]]
    train_rows, test_rows = next(GroupShuffleSplit(n_splits=1, test_size=share, random_state=seed).split(groups, groups=groups))
    return rows.select(sorted(train_rows)), rows.select(sorted(test_rows))


def load_observational_datasets(cfg):
    """Axolotl's ``TrainDatasetMeta`` holding the raw rows (untokenized): ``datasets:`` for training; for
    evaluation ``test_datasets:``, or a ``val_set_size`` share of the training rows."""
    from axolotl.common.datasets import TrainDatasetMeta
    from axolotl.utils.trainer import calculate_total_num_steps

    train = _load_split(cfg, cfg.datasets, "train")
    evaluation = None
    if cfg.test_datasets:
        evaluation = _load_split(cfg, cfg.test_datasets, "test")
    elif cfg.val_set_size:
        train, evaluation = split_off_validation(train, cfg.val_set_size, cfg.get("group_column"), cfg.seed or 42)
    steps = cfg.max_steps or calculate_total_num_steps(cfg, train)
    return TrainDatasetMeta(train_dataset=train, eval_dataset=evaluation, total_num_steps=steps)


class AxolotlDeconfoundedRewardTrainer(
    RngLoaderMixin,
    SchedulerMixin,
    OptimizerMixin,
    OptimizerInitMixin,
    DistributedParallelMixin,
    DeconfoundedRewardTrainer,
):
    """trl_causal's ``DeconfoundedRewardTrainer`` (METHODS.md section 2) built by Axolotl's reward-path builder.

    ``trl_causal_values`` (set by the plugin on a subclass) holds the ``deconfounded_reward`` keys of the YAML.
    """

    tag_names = ["axolotl", "reward", "trl-causal", "deconfounded-reward"]
    trl_causal_values: dict[str, Any] = {}

    def __init__(self, *args, **kwargs):
        kwargs.pop("dataset_tags", None)  # Axolotl passes it to every class but its own reward trainer
        kwargs.pop("data_collator", None)  # Axolotl's pair collator: our rows get trl_causal's collator
        kwargs["args"] = reward_config_from(kwargs["args"], self.trl_causal_values)
        super().__init__(*args, **kwargs)

    def save_final(self, output_dir: str) -> str | None:
        """Right after training (the plugin's ``post_train``), what ``trl-causal train`` saves at the end: a full
        fine-tune is saved to ``output_dir`` (single-logit classifier, report, and with ``mode: covariate`` the
        learnt head in ``trl_causal_heads.safetensors``); with LoRA, Axolotl's ``output_dir`` keeps the adapters (as
        ``axolotl merge-lora`` expects; the report is rewritten there) and the adapters merged into a plain
        single-logit classifier go to ``output_dir/merged``. The covariate head is then taken off the model, so that
        Axolotl's own final save (``model.save_pretrained``) writes a plain checkpoint. Returns the merged
        directory, if any."""
        from accelerate.utils import is_peft_model

        merged = None
        if is_peft_model(self.accelerator.unwrap_model(self.model)):
            if self.args.should_save:
                self.save_report(output_dir)
            merged = os.path.join(output_dir, MERGED_DIR)
            self.save_model(merged)
        else:
            self.save_model(output_dir)
        self.detach_heads()
        return merged


__all__ = [
    "REPORT_FILE",
    "AxolotlDeconfoundedRewardConfig",
    "AxolotlDeconfoundedRewardTrainer",
    "check_axolotl_cfg",
    "check_config",
    "load_observational_datasets",
    "reward_config_from",
]
