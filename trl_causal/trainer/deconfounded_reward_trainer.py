"""The ``deconfounded_reward`` trainer (DeconfoundLM, METHODS.md section 2; the data checks, the targets and the loss
terms are in ``trl_causal.deconfound``: ``observations``, ``targets``, ``texts``, ``losses``).

Rows are observations (text, outcome Y, confounders C), not preference pairs. Before training:

1. the rows are checked (numeric outcome, finite values, columns present; invalid rows dropped on request);
2. deconfounded mode: text features phi (``feature_source``), then cross-fitted partialling out gives theta with
   robust standard errors and r~ = Y - theta'(C - mean C); baselines use Y itself;
3. the target is t = (s - mean s) / sd s (s = r~ or Y, moments of the training rows); the report
   (``deconfounding_report.json``) is written beside the model.

The main process computes the targets and broadcasts them, so every rank trains on the same ones. Training is
TRL's reward modelling on a single-logit ``AutoModelForSequenceClassification``:

- ``regression``: L = sum_i (r_i - t_i)^2 / N;
- ``pairwise``: L = sum_(i,j) -log sigmoid(r_i - r_j - m_ij) / N over the pairs of one group with t_i > t_j;

with N the rows (pairs) of the whole accumulated batch over all processes, so gradient accumulation gives the
gradient of one large batch. ``covariate`` adds a linear head on the standardised C to the reward in training
(dropped at inference: the average over C of a linear term in centred C is zero); ``invariance`` adds
``invariance_weight * sum_j corr(r, C_j)^2`` over each micro-batch. The final save of a PEFT model writes the
adapters merged into the base weights, so the checkpoint loads without PEFT (checkpoints taken during training
keep the adapters, for resuming).
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

import datasets
import numpy as np
import torch
from accelerate.utils import broadcast_object_list, is_peft_model
from torch import nn
from transformers.data.data_collator import DataCollatorMixin
from transformers.utils import logging
from trl import RewardTrainer
from trl.trainer.utils import pad

from ..data import check_split_types, named_splits
from ..deconfound.confounders import one_hot_levels
from ..deconfound.features import check_layers
from ..deconfound.losses import centering_penalties, pairwise_losses, regression_losses, squared_correlations
from ..deconfound.observations import (
    Observations,
    dropped_by_column_entry,
    observation_columns,
    read_observations,
    repeated_rows,
    text_column_sets,
)
from ..deconfound.pairs import check_pair_groups, many_pairs_warning, preference_pairs
from ..deconfound.partial_out import check_design
from ..deconfound.targets import RewardTargets, check_outcome_varies, instruments, reward_targets
from ..deconfound.texts import check_lengths, feature_precision, text_features, tokenize_rows
from ..errors import ConfigError, DataError, TrlCausalError, count_rows, describe_rows, for_count
from ..paths import write_json_file
from .deconfounded_reward_config import DeconfoundedRewardConfig
from .mixins import CausalLossMixin, HeadsMixin, follow_log_level, log_num_tokens, prompt_learning_type, refuse_adapter
from .zero3 import full_parameters, whole_model_loading

logger = logging.get_logger(__name__)

REPORT_FILE = "deconfounding_report.json"
CONFOUNDER_MODES = ("covariate", "invariance")  # the modes whose loss reads the confounders


@dataclass
class DataCollatorForObservationalRewards(DataCollatorMixin):
    """Pads rows into ``input_ids`` / ``attention_mask`` (right) and stacks ``target`` [B] and, where the rows have
    them, ``confounders`` [B, k].

    Pair rows (``chosen_ids``, ``rejected_ids``) are stacked chosen first, then rejected, as TRL's
    ``DataCollatorForPreference`` does; their confounders follow the same order, and ``margin`` [B/2] comes along.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pairs = "chosen_ids" in examples[0]
        if pairs:
            sequences = [e["chosen_ids"] for e in examples] + [e["rejected_ids"] for e in examples]
        else:
            sequences = [e["input_ids"] for e in examples]
        input_ids = [torch.tensor(ids) for ids in sequences]
        output = {
            "input_ids": pad(input_ids, self.pad_token_id, "right", self.pad_to_multiple_of),
            "attention_mask": pad([torch.ones_like(ids) for ids in input_ids], 0, "right", self.pad_to_multiple_of),
        }
        if ("chosen_confounders" if pairs else "confounders") in examples[0]:
            sides = ("chosen_confounders", "rejected_confounders") if pairs else ("confounders",)
            output["confounders"] = torch.tensor([e[side] for side in sides for e in examples], dtype=torch.float)
        for key in ("target", "margin"):
            if key in examples[0]:
                output[key] = torch.tensor([e[key] for e in examples], dtype=torch.float)
        return output


class MergedAdapterSaveMixin:
    """With ``merge_adapters_on_save`` set, a PEFT model is saved with its adapters merged into the base weights:
    a plain transformers checkpoint. Place it after ``HeadsMixin`` (which takes the heads out first)."""

    merge_adapters_on_save = False

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        """Under DeepSpeed, ``Trainer.save_model`` hands ``_save`` a state dict gathered from the engine (under ZeRO-3
        with PEFT, the adapters' alone), which a merge cannot use: each rank gathers the whole model (ZeRO-3), and the
        main rank merges and writes it."""
        model = self.accelerator.unwrap_model(self.model)
        if not (self.merge_adapters_on_save and self.is_deepspeed_enabled and is_peft_model(model)):
            return super().save_model(output_dir, _internal_call)
        with full_parameters(model):
            if self.args.should_save:
                with whole_model_loading():  # the model plain_state_dict builds is this rank's alone: not partitioned
                    self._save(output_dir)
        self.accelerator.wait_for_everyone()
        if self.args.push_to_hub and not _internal_call:  # as Trainer.save_model ends
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)

    def _save(self, output_dir: str | None = None, state_dict=None):
        model = self.accelerator.unwrap_model(self.model)
        if not (self.merge_adapters_on_save and is_peft_model(model) and state_dict is None):
            return super()._save(output_dir, state_dict=state_dict)
        # Merging adds each adapter's delta to its base weights in place and unmerging subtracts it, which in bf16
        # does not give the weights back: they are restored from a copy.
        base_weights = {name: weight.detach().to("cpu", copy=True) for name, weight in model.named_parameters() if ".base_layer." in name}
        model.merge_adapter()
        peft_model, self.model = self.model, model.get_base_model()
        try:
            super()._save(output_dir, state_dict=plain_state_dict(self.model, model.active_adapter))
        finally:
            self.model = peft_model
            model.unmerge_adapter()
            with torch.no_grad():
                for name, weight in model.named_parameters():
                    if name in base_weights:
                        weight.copy_(base_weights[name])


def plain_state_dict(merged: nn.Module, adapter: str) -> dict[str, torch.Tensor]:
    """The weights of a PEFT model's base model whose adapters are merged, under the names of the plain model:
    each tensor of a tuner layer's ``base_layer``, of ``modules_to_save`` and of a ``token_adapter`` (trainable
    tokens) under its module's own name; the adapters' own tensors (LoRA, IA3, LoHa, LoKr, token deltas) and the
    original copies of saved modules left out. Every weight the plain model has must be there: a missing one would
    load as random weights, so it is an error."""
    from transformers import AutoModelForSequenceClassification

    with torch.device("meta"):
        plain = AutoModelForSequenceClassification.from_config(merged.config)
    expected = set(plain.state_dict())
    wrappers = (f".modules_to_save.{adapter}.", ".token_adapter.", ".base_layer.")
    state = {}
    for key, value in merged.state_dict().items():
        if ".original_module." in key:
            continue
        name = key
        for wrapper in wrappers:
            name = name.replace(wrapper, ".")
        if name in expected:
            state[name] = value
    missing = sorted(expected - set(state))
    if missing:
        raise TrlCausalError(
            f"Cannot write the merged reward model: the adapters' model gives no weight for {missing[:5]}. Save the "
            "adapter instead (trainer.model.save_pretrained(directory)), or train with LoRA."
        )
    return state


def refuse_raw_rows(dataset, method: str) -> None:
    """Raw observational rows have no targets until deconfounded with the training theta: say how to pass them."""
    if isinstance(dataset, datasets.Dataset) and not {"input_ids", "chosen_ids"} & set(dataset.column_names):
        raise DataError(
            f"{method}() takes rows this trainer prepared: pass evaluation rows as eval_dataset when building the "
            "DeconfoundedRewardTrainer (their targets use the training rows' theta), then use trainer.eval_dataset. "
            "To score new texts, tokenize them and call the saved model (AutoModelForSequenceClassification)."
        )


class DeconfoundedRewardTrainer(CausalLossMixin, HeadsMixin, MergedAdapterSaveMixin, RewardTrainer):
    """``trl.RewardTrainer`` on observational rows, learning the outcome with the confounders' causal effect removed.

    Takes the same keyword arguments as ``RewardTrainer`` and a ``DeconfoundedRewardConfig``. ``train_dataset`` (and
    ``eval_dataset``) are map-style ``datasets.Dataset`` of rows with the text, outcome and confounder columns named in
    the config; evaluation targets use theta and the standardisation of the training rows. After ``train()``,
    ``save_model`` writes a single-logit sequence classifier that TRL's GRPO / RLOO trainers take as a reward
    model, and ``deconfounding_report.json``. With ``objective: regression``, ``compute_metrics`` receives the rewards
    as predictions and the standardised targets t as ``label_ids``.
    """

    _tag_names = ["trl", "reward-trainer", "trl-causal", "deconfounded-reward"]
    _name = "DeconfoundedReward"
    saved_file = REPORT_FILE  # every save writes it: eval knows a checkpoint of this trainer without a run record by it

    @staticmethod
    def check_model_config(args: DeconfoundedRewardConfig, model_config) -> None:
        """With ``feature_source: model``, ``feature_layers`` index the model's hidden states (train calls this before
        the model loads; the feature pass checks it again)."""
        if args.feature_source == "model":
            check_layers(args.feature_layers, model_config)

    @staticmethod
    def required_columns(args: DeconfoundedRewardConfig) -> tuple[str, ...]:
        return observation_columns(args)

    @staticmethod
    def column_sets(args: DeconfoundedRewardConfig) -> tuple[tuple[str, ...], ...]:
        return text_column_sets(args)

    @staticmethod
    def columns_hint(args: DeconfoundedRewardConfig) -> str:
        return (
            f"The scored text is read from text_column {args.text_column!r}; for prompt + completion rows set "
            "`text_column: null`." if args.text_column is not None else ""
        )

    def __init__(
        self,
        model,
        args: DeconfoundedRewardConfig | None = None,
        *,
        train_dataset=None,
        eval_dataset=None,
        peft_config=None,
        **kwargs,
    ):
        if not isinstance(args, DeconfoundedRewardConfig):
            raise ConfigError(
                "DeconfoundedRewardTrainer needs a DeconfoundedRewardConfig naming the outcome and confounder columns, "
                f"not {type(args).__name__}."
            )
        follow_log_level(args)
        if adapter := prompt_learning_type(model, peft_config):  # before the feature pass, not at the final save
            raise refuse_adapter(adapter, "deconfounded_reward", "its final save merges the adapters into a plain reward "
                                 "model, and a prompt-learning adapter changes no weight to merge")
        splits = named_splits(train_dataset, eval_dataset)
        observations = self._check_observations(splits, args)  # bad data fails here, before the model loads
        if peft_config is not None and peft_config.task_type != "SEQ_CLS":
            # SEQ_CLS trains the `score` head too (PEFT's modules_to_save); a copy leaves the caller's config as it was
            peft_config = replace(peft_config, task_type="SEQ_CLS")
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            peft_config=peft_config,
            **kwargs,
        )
        # PEFT's SEQ_CLS task type trains the head (score, classifier, ...) through a modules_to_save copy
        if not isinstance(model, str) and is_peft_model(model) and not any(
            ".modules_to_save." in n for n, p in self.model.named_parameters() if p.requires_grad
        ):
            logger.warning(
                "deconfounded_reward: the PEFT model passed in does not train its classification head, which stays at "
                "its random initialisation: build it with task_type='SEQ_CLS' (or modules_to_save=['score']), or pass "
                "the plain model and peft_config, which this trainer sets up so."
            )
        if kwargs.get("data_collator") is None:
            self.data_collator = DataCollatorForObservationalRewards(
                self.processing_class.pad_token_id, args.pad_to_multiple_of
            )
        if args.objective == "regression":  # compute_metrics gets the rewards and their targets t as label_ids
            self.label_names = ["target"]

        rows = {split: splits[split].select(obs.rows) for split, obs in observations.items()}
        tokenized = {split: tokenize_rows(rows[split], args, self.processing_class, split) for split in rows}
        pair_groups = {split: obs.groups for split, obs in observations.items()} if args.objective == "pairwise" else None
        check_lengths(tokenized, args.max_length, pair_groups)  # before the feature pass and the partialling out
        self.targets: RewardTargets = self._compute_targets(rows["train"], tokenized["train"], observations["train"])
        too_long, eval_rows = self._prepare_splits(tokenized, observations, eval_dataset)
        self.report = self._build_report(rows["train"], too_long, eval_rows)
        if args.mode == "covariate":
            self.attach_heads(nn.Linear(len(self.confounder_names), 1, bias=False))
            nn.init.zeros_(self.heads.weight)
        if self.accelerator.is_main_process:
            self.save_report(args.output_dir)
            self._print_summary()

    @staticmethod
    def _check_observations(splits: dict[str, datasets.Dataset], args: DeconfoundedRewardConfig) -> dict[str, Observations]:
        """The observations of each split, checked before the model loads: the columns and values, an outcome that
        varies, rows repeated in every column (a warning), the design and instruments of the partialling out, and the
        groups of the pairs."""
        check_split_types(splits, "deconfounded_reward", " (it deconfounds all rows before training)")
        observations = read_observations(splits, args)
        check_outcome_varies(observations["train"], args)
        train_dataset = splits["train"]
        if (repeated := repeated_rows(train_dataset, args)) and args.process_index == 0:
            logger.warning(
                f"{count_rows(len(repeated))} of the {len(train_dataset)} training rows "
                f"{for_count(len(repeated), 'repeats', 'repeat')} an earlier row in every column the trainer reads "
                f"({describe_rows(repeated)}): each copy weighs in the partialling out and its pairs. If the log holds "
                "events twice by mistake, drop the copies."
            )
        if args.mode == "deconfounded":
            train = observations["train"]
            check_design(train.confounders, train.confounder_names, args.n_folds, train.groups)
            instruments(train, args)  # enough instruments, before the feature pass
        if args.objective == "pairwise":
            for split, obs in observations.items():
                dropped = f" once {count_rows(obs.dropped)} with a missing value {for_count(obs.dropped, 'was', 'were')} dropped (drop_invalid)" if obs.dropped else ""
                check_pair_groups(
                    obs.groups, f"objective='pairwise', {split} split, group_column {args.group_column!r}{dropped}", obs.rows
                )
        return observations

    def _compute_targets(
        self, rows: datasets.Dataset, tokenized: datasets.Dataset, observations: Observations
    ) -> RewardTargets:
        """The targets of the training rows, computed on the main process (one feature pass) and broadcast, so that
        every rank trains on the same ones; under ZeRO-3 every rank takes part in gathering the weights the feature
        pass needs."""
        args = self.args
        targets = [None]
        network = self.accelerator.unwrap_model(self.model)
        with full_parameters(network) if args.feature_source == "model" else nullcontext():
            if self.accelerator.is_main_process:
                progress = not args.disable_tqdm
                pad_token_id = self.processing_class.pad_token_id

                def features():
                    return text_features(args, rows, tokenized["input_ids"], network, pad_token_id, progress)

                targets = [reward_targets(observations, args, features, progress)]
        return broadcast_object_list(targets)[0]

    def _prepare_splits(
        self, tokenized: dict[str, datasets.Dataset], observations: dict[str, Observations], eval_dataset
    ) -> tuple[int, dict[str, dict[str, Any]]]:
        """Sets the confounders' training moments, ``train_dataset`` and ``eval_dataset`` to the prepared rows
        (``_training_rows``); returns the training rows longer than ``max_length`` and the row counts of each
        evaluation split."""
        confounders = observations["train"].confounders
        self.confounder_names = observations["train"].confounder_names
        self.confounder_scale = (
            confounders.mean(axis=0),
            np.where(confounders.std(axis=0) > 0, confounders.std(axis=0), 1.0),
        )
        prepared = {split: self._training_rows(tokenized[split], observations[split], split) for split in observations}
        self.train_dataset, too_long = prepared.pop("train")
        eval_rows = {
            split: {
                "used": len(observations[split].rows),
                "dropped_invalid": observations[split].dropped,
                **dropped_by_column_entry(observations[split]),
                "dropped_longer_than_max_length": long_rows,
            }
            for split, (_, long_rows) in prepared.items()
        }
        for split, counts in eval_rows.items():
            if counts["dropped_invalid"] and self.accelerator.is_main_process:
                dropped = counts["dropped_invalid"]
                logger.warning(
                    f"{dropped} {split} {for_count(dropped, 'row', 'rows')} with a missing or non-finite value "
                    f"{for_count(dropped, 'is', 'are')} dropped (drop_invalid)."
                )
        if eval_dataset is not None:
            self.eval_dataset = {split: dataset for split, (dataset, _) in prepared.items()}
            if not isinstance(eval_dataset, dict):
                self.eval_dataset = self.eval_dataset["eval"]
        return too_long, eval_rows

    def _build_report(
        self, train_rows: datasets.Dataset, too_long: int, eval_rows: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        """The report: the targets' (theta, rows, target scale), the rows trained on and the pairs, the evaluation rows,
        the reference and pooled levels of the one-hot confounders, and the precision of the model feature pass."""
        args = self.args
        report = {
            **self.targets.report,
            "rows": {
                **self.targets.report["rows"],
                "dropped_longer_than_max_length": too_long,
                "trained": self.targets.report["rows"]["used"] - too_long,
                **({"pairs": len(self.train_dataset)} if args.objective == "pairwise" else {}),
            },
            **({"eval_rows": eval_rows} if eval_rows else {}),
        }
        if args.categorical_confounders or args.timestamp_confounders:  # what each one-hot theta is measured from
            levels = one_hot_levels(
                {column: train_rows[column] for column in (*args.categorical_confounders, *args.timestamp_confounders)},
                args.categorical_confounders,
                args.timestamp_confounders,
                args.timestamp_features,
                args.min_level_rows,
            )
            report["reference_levels"] = {block: level["reference"] for block, level in levels.items()}
            report["pooled_levels"] = {
                block: {"values": level["pooled"], "pooled_into": level["pooled_into"]} for block, level in levels.items() if level["pooled"]
            }
        if report["feature_source"] == "model":
            model_dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
            report["feature_precision"] = feature_precision(args, self.model) or model_dtype
        return report

    @property
    def trained_rows(self) -> int:
        """Training rows that train: the valid ones within max_length (pairs are built from them)."""
        return self.report["rows"]["trained"]

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        """Rows are prepared after ``RewardTrainer.__init__`` (their targets need the loaded model): unchanged here."""
        return dataset

    def _training_rows(
        self, tokenized: datasets.Dataset, observations: Observations, split: str
    ) -> tuple[datasets.Dataset, int]:
        """Rows (regression) or within-group pairs (pairwise) with targets, and standardised confounders where the mode
        reads them (covariate, invariance), and the number of rows dropped for being longer than ``max_length`` (as
        ``RewardTrainer`` drops long pairs)."""
        args = self.args
        lengths = np.array([len(ids) for ids in tokenized["input_ids"]])
        keep = lengths <= args.max_length if args.max_length is not None else np.ones(len(lengths), dtype=bool)
        too_long = int((~keep).sum())
        if too_long:
            logger.warning(
                f"{too_long} {split} {for_count(too_long, 'row is', 'rows are')} longer than max_length={args.max_length} "
                f"tokens and {for_count(too_long, 'is', 'are')} dropped."
            )
        observations = observations.select(keep)
        input_ids = [ids for ids, kept in zip(tokenized["input_ids"], keep, strict=True) if kept]
        target = self.targets.of(observations)
        confounders = None
        if args.mode in CONFOUNDER_MODES:  # float32 [rows, k], stored as such (no per-row Python lists)
            confounders = ((observations.confounders - self.confounder_scale[0]) / self.confounder_scale[1]).astype(np.float32)
        if args.objective == "regression":
            columns = {"input_ids": input_ids, "target": target.tolist()}
            return datasets.Dataset.from_dict(columns | ({} if confounders is None else {"confounders": confounders})), too_long
        # a group left with one row by dropping long rows gives no pair (check_lengths refused a split whose every
        # group is left so; a group of one in the data is an error)
        _, group_sizes = np.unique(observations.groups, return_counts=True)
        pairs = preference_pairs(
            target, observations.groups, args.min_pair_gap, f"{split} split (after dropping rows over max_length)",
            single_row_groups=bool(too_long),
        )
        if too_long and (single := int((group_sizes == 1).sum())):
            logger.warning(
                f"{single} {split} {for_count(single, 'group has', 'groups have')} one row left after dropping the "
                f"rows longer than max_length={args.max_length}; they give no pair. Raise max_length to keep them."
            )
        warning = many_pairs_warning(len(input_ids), len(pairs), int(group_sizes.max()), f"The {split} split")
        if warning and args.process_index == 0:
            logger.warning(f"{warning} Each pair is a training example.")
        columns = {"chosen_ids": [input_ids[i] for i in pairs[:, 0]], "rejected_ids": [input_ids[j] for j in pairs[:, 1]]}
        if confounders is not None:
            columns |= {"chosen_confounders": confounders[pairs[:, 0]], "rejected_confounders": confounders[pairs[:, 1]]}
        if args.margin_scale is not None:
            columns["margin"] = (args.margin_scale * (target[pairs[:, 0]] - target[pairs[:, 1]])).tolist()
        return datasets.Dataset.from_dict(columns), too_long

    def _print_summary(self) -> None:
        report = self.report
        rows = report["rows"]
        line = (
            f"trl-causal deconfounded_reward: mode {report['mode']!r}, objective {report['objective']!r}, "
            f"{rows['trained']} training rows" + (f" in {rows['pairs']} within-group pairs" if "pairs" in rows else "")
        )
        if rows["dropped_invalid"] or rows["dropped_longer_than_max_length"]:
            line += (
                f" ({rows['dropped_invalid']} invalid and {rows['dropped_longer_than_max_length']} longer than "
                "max_length dropped; the deconfounding used the valid ones)"
            )
        deconfounding = report["deconfounding"] or {}
        if deconfounding and report.get("reference_levels"):
            line += "\n  one-hot thetas are measured from the reference levels " + ", ".join(
                f"{block}={level}" for block, level in report["reference_levels"].items()
            )
        for block, pooled in report.get("pooled_levels", {}).items():
            count = len(pooled["values"])
            line += (
                f"\n  {block}: {count} {for_count(count, 'value', 'values')} of fewer than {self.args.min_level_rows} training "
                f"rows counted as the level {pooled['pooled_into']}"
            )
        if "instruments" in deconfounding:
            line += f"\n  partialling-out IV (2SLS), instruments: {', '.join(deconfounding['instruments'])}"
        for name, effect in deconfounding.get("effects", {}).items():
            line += (
                f"\n  theta[{name}] = {effect['theta']:.4g} (se {effect['se']:.3g}, "
                f"{deconfounding['ci_level']:.0%} CI [{effect['ci_low']:.4g}, {effect['ci_high']:.4g}], "
                f"text-free variance share {min(effect['residual_share'], 1.0):.2f}"  # over 1: the text predicts none
                + (
                    f", first-stage F {effect['first_stage_f']:.3g})" if "first_stage_f" in effect
                    else ", exogenous: its own instrument)" if effect.get("exogenous") else ")"
                )
            )
        self.accelerator.print(line + f"\n  report: {os.path.join(self.args.output_dir, REPORT_FILE)}")

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["input_ids", "target", "confounders", "margin"] + [
                f"{side}_{column}" for side in ("chosen", "rejected") for column in ("ids", "confounders")
            ]

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor:
        """N: rows (regression) or pairs (pairwise) in the accumulated batch, summed over the processes when
        ``average_tokens_across_devices`` (``CausalLossMixin.token_mean`` then multiplies by their number)."""
        count = sum(len(batch["input_ids"]) // (1 if "target" in batch else 2) for batch in batch_samples)
        count = torch.tensor(count, device=device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            count = self.accelerator.gather(count).sum()
        return count

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        confounders = inputs.get("confounders")  # covariate and invariance modes only
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
        rewards = outputs.logits.squeeze(-1).float()
        fitted = rewards + self.heads(confounders).squeeze(-1) if self.args.mode == "covariate" else rewards
        metrics = self._metrics[mode]
        if "target" in inputs:
            losses = regression_losses(fitted, inputs["target"])
        else:
            chosen, rejected = fitted.chunk(2)
            losses = pairwise_losses(chosen, rejected, inputs.get("margin", 0.0))
            if self.args.center_rewards_coefficient is not None:  # as RewardTrainer
                losses = losses + self.args.center_rewards_coefficient * centering_penalties(rewards)
            accuracy = (chosen > rejected).float().mean()
            metrics["accuracy"].append(self.accelerator.gather_for_metrics(accuracy).mean().item())
            margin = (chosen - rejected).detach().mean()
            metrics["margin"].append(self.accelerator.gather_for_metrics(margin).mean().item())
        loss_sum = losses.sum()
        if self.args.mode == "invariance":
            correlation = squared_correlations(rewards, confounders).sum()
            loss_sum = loss_sum + self.args.invariance_weight * correlation * len(losses)
            metrics["confounder_corr2"].append(self.accelerator.gather_for_metrics(correlation.detach()).mean().item())
        self._log_reward_metrics(mode, rewards.detach(), inputs["attention_mask"])
        loss = self.token_mean(loss_sum, torch.tensor(float(len(losses)), device=loss_sum.device), num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    def _log_reward_metrics(self, mode: str, rewards: torch.Tensor, attention_mask: torch.Tensor) -> None:
        """The metrics TRL's RewardTrainer logs besides accuracy and margin (which ``compute_loss`` logs with
        ``objective: pairwise``), so that dashboards and ``metric_for_best_model`` carry over: ``min_reward`` / ``mean_reward`` / ``max_reward`` of the model's rewards
        over all processes, and ``num_tokens``, the tokens trained on so far."""
        log_num_tokens(self, mode, attention_mask)
        metrics = self._metrics[mode]
        everyone = self.accelerator.gather_for_metrics(rewards)
        metrics["min_reward"].append(everyone.min().item())
        metrics["mean_reward"].append(everyone.mean().item())
        metrics["max_reward"].append(everyone.max().item())

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        """``RewardTrainer.evaluate`` on the evaluation rows given at init (raw rows need the training theta: pass them
        as ``eval_dataset`` when building the trainer)."""
        refuse_raw_rows(eval_dataset, "evaluate")
        return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix="test"):
        """``RewardTrainer.predict`` on rows this trainer prepared (e.g. ``trainer.eval_dataset``)."""
        refuse_raw_rows(test_dataset, "predict")
        return super().predict(test_dataset, ignore_keys, metric_key_prefix)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        """``RewardTrainer.save_model`` plus the report; the final save (not a checkpoint) merges PEFT adapters."""
        self.merge_adapters_on_save = not _internal_call
        try:
            super().save_model(output_dir, _internal_call)
        finally:
            self.merge_adapters_on_save = False
        if self.args.should_save:
            self.save_report(output_dir or self.args.output_dir)

    def save_report(self, output_dir: str) -> None:
        """``deconfounding_report.json``: theta, se, CI per confounder, rows used and dropped, target scale; in
        covariate mode also the learnt weight of each standardised confounder in the training-time reward."""
        report = dict(self.report)
        if self.args.mode == "covariate":
            weights = self.heads.weight.detach().float().cpu().view(-1).tolist()
            report["covariate_head"] = dict(zip(self.confounder_names, weights, strict=True))
        write_json_file(output_dir, REPORT_FILE, report)
