"""The ``latent_shift`` trainer and its predictor (METHODS.md section 3; the math is in ``trl_causal.latent_shift``).

Per batch, ``L = L_SFT + lambda_causal * L_C + lambda_adj * L_adj`` from two forwards through the wrapped model:

- the trainable forward (``output_hidden_states=True``): the SFT loss, R1 from the last hidden layer and the
  patch features from ``hidden_states[low_level_layer]`` (detached: Phi is an input of the heads, not a path
  for gradients into the model; the default layer 0, the embeddings, is frozen under LoRA anyway);
- the frozen view under ``no_grad``: R0 from the last hidden layer of the PEFT model with its adapters disabled,
  or of a frozen copy of the model taken before training.

Pooling runs over the prompt tokens. In TRL 1.16 only ``input_ids``, ``attention_mask`` and ``labels`` reach
``compute_loss`` (the ``completion_mask`` is folded into ``labels`` when the dataset is prepared), so the prompt of a
row is its tokens before its last supervised span (the answer the label belongs to).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from accelerate.utils import is_peft_model
from datasets import Dataset, IterableDataset
from safetensors.torch import load_file
from torch import Tensor
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.utils import logging
from trl import SFTTrainer
from trl.models import prepare_deepspeed, prepare_fsdp

from ..data import check_columns, check_split_types, named_splits
from ..errors import ConfigError, DataError, count_rows, describe_rows
from ..evaluation import LMPredictor, Prompt, eval_mode, training_answer_prefix, warn_unlike_training
from ..latent_shift import LatentShiftHeads, LatentShiftLosses, prompt_token_mask
from ..latent_shift.labels import (
    COMPLETION_LABEL_COLUMN,
    check_answer_tokens,
    check_completion_column,
    labels_checked,
    loaded_row_numbers,
    verbalizer_from_data,
    with_completion_labels,
)
from ..paths import read_json_file, write_json_file
from .latent_shift_config import LatentShiftConfig
from .mixins import (
    HEADS_FILE,
    CausalLossMixin,
    ExtraColumnsMixin,
    HeadsMixin,
    causal_lm_token_losses,
    follow_log_level,
    log_token_metrics,
    prompt_learning_type,
    refuse_adapter,
    smoothing_own_logits,
)
from .zero3 import reload_pretrained

logger = logging.get_logger(__name__)

LATENT_SHIFT_FILE = "trl_causal_latent_shift.json"


def build_heads(
    args: LatentShiftConfig, hidden_size: int, n_labels: int, seed: int, low_level_size: int | None = None
) -> LatentShiftHeads:
    """The heads the config describes, for a model whose last hidden state has ``hidden_size`` features (and its
    low-level layer ``low_level_size``, default the same) and ``n_labels`` labels, initialised from ``seed`` without
    touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LatentShiftHeads(
            hidden_size,
            args.n_causal,
            args.d_phi,
            n_labels,
            low_level_size=low_level_size,
            n_patches=args.n_patches,
            bank_size=args.memory_bank_size,
            causal_hidden_sizes=args.causal_hidden_sizes,
            encoder_hidden_sizes=args.encoder_hidden_sizes,
            adjusted_hidden_sizes=args.adjusted_hidden_sizes,
        )


def hidden_state_widths(model: torch.nn.Module, hidden_size: int, layer: int, n_layers: int) -> tuple[int, int]:
    """Widths of the last hidden state (what the LM head reads) and of ``hidden_states[layer]``: ``hidden_size``,
    except the last one where the model projects it before its LM head (OPT's ``project_out`` to
    ``word_embed_proj_dim``, e.g. opt-350m: 512 of 1024)."""
    head = model.get_output_embeddings()  # a Linear, or PEFT's wrapper of it (LoRA, modules_to_save), which tell in_features
    last = getattr(head, "in_features", None) or hidden_size
    return last, last if layer == n_layers else hidden_size


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen, eval-mode deep copy of ``model`` that runs its own weights."""
    reference = copy.deepcopy(model)
    base = reference.get_base_model() if is_peft_model(reference) else reference
    base.__dict__.pop("forward", None)  # TRL's fused-LM-head patch: its closure would call the original model
    return reference.requires_grad_(False).eval()


def seeded_generator(entropy: Sequence[int]) -> torch.Generator:
    """A torch generator seeded from non-negative integers by numpy's SeedSequence (distinct entropies, unrelated
    streams)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([value % 2**63 for value in entropy]).generate_state(1)[0]))


class LatentShiftTrainer(HeadsMixin, CausalLossMixin, ExtraColumnsMixin, SFTTrainer):
    """``trl.SFTTrainer`` plus the causal head, the low-level encoder and the adjusted head of latent-shift SFT.

    Takes the same arguments as ``SFTTrainer`` with a [`LatentShiftConfig`]. Logs ``loss_sft``, ``loss_causal``,
    ``loss_adj`` and ``patch_fallback_rows`` (rows with fewer prompt tokens than ``n_patches``, so far). The heads,
    the memory bank and the verbalizer are saved in every checkpoint and restored on resume.
    """

    saved_file = LATENT_SHIFT_FILE  # every save writes it: eval knows a checkpoint of this trainer without a run record by it
    # what the saved heads fix: eval's --setting cannot change them
    settings_fixed_by_checkpoint = (
        "n_causal", "d_phi", "n_patches", "memory_bank_size", "causal_hidden_sizes", "encoder_hidden_sizes",
        "adjusted_hidden_sizes", "low_level_layer", "verbalizer", "label_column", "max_length", "truncation_mode",
    )
    _tag_names = ["trl", "sft", "trl-causal", "latent-shift"]
    _name = "LatentShift"

    def __init__(self, model, args: LatentShiftConfig | None = None, train_dataset=None, eval_dataset=None, **kwargs):
        args = LatentShiftConfig() if args is None else args
        if not isinstance(args, LatentShiftConfig):
            raise TypeError(f"LatentShiftTrainer needs a LatentShiftConfig, got {type(args).__name__}.")
        follow_log_level(args)
        if train_dataset is None:
            raise ValueError("`train_dataset` is required")
        adapter = prompt_learning_type(model, kwargs.get("peft_config"))
        if adapter is not None and adapter != "PREFIX_TUNING":
            raise refuse_adapter(adapter, "latent_shift", "its virtual tokens come before each row's tokens, where the "
                                 "trainer pools the prompt's hidden states", "prefix tuning, which adds no token, or another adapter")
        uses_peft = kwargs.get("peft_config") is not None or (not isinstance(model, str) and is_peft_model(model))
        frozen_view = args.frozen_view if args.frozen_view != "auto" else ("adapters" if uses_peft else "reference")
        if frozen_view == "adapters" and not uses_peft:
            raise ConfigError(
                "frozen_view='adapters' takes the frozen view from the PEFT model with its adapters disabled, but this "
                "model has no PEFT adapters: set `use_peft: true` (or pass peft_config), or use `frozen_view: reference`."
            )
        splits = named_splits(train_dataset, eval_dataset)
        check_split_types(splits, "latent_shift", streamed=True)
        for name, dataset in splits.items():
            # rows a tokenizing front end (Axolotl) prepared carry input_ids and are checked there
            if "input_ids" not in (dataset.column_names or []):
                split = "training split" if name == "train" else f"evaluation split {name!r}"
                if args.label_column is None:
                    check_completion_column(dataset.column_names, split.replace(" split", ""))
                check_columns(dataset, "sft", self.required_columns(args), split, self.column_sets(args), self.columns_hint(args), args)
        train_dataset, eval_dataset = self._settle_labels(args, train_dataset, eval_dataset)
        prefix = training_answer_prefix(train_dataset) or ""

        with smoothing_own_logits():
            super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset, **kwargs)
        processes = self.accelerator.num_processes
        if self.accelerator.split_batches and args.per_device_train_batch_size < 2 * processes:
            raise ConfigError(
                f"split_batches divides per_device_train_batch_size={args.per_device_train_batch_size} among the "
                f"{processes} processes, but latent_shift needs 2 rows per process (the shuffle pairs each row with "
                f"another row's Phi): set per_device_train_batch_size to {2 * processes} or more."
            )
        check_answer_tokens(getattr(self.processing_class, "tokenizer", self.processing_class), self.verbalizer, prefix)
        loaded = named_splits(train_dataset, eval_dataset)
        for name, prepared in named_splits(self.train_dataset, self.eval_dataset).items():
            self._check_prompt_tokens(prepared, "training split" if name == "train" else f"evaluation split {name!r}", loaded.get(name))
        self.answer_prefix = prefix
        self.class_of_label = {label: index for index, label in enumerate(self.verbalizer)}
        self.reference_model = self._frozen_reference() if frozen_view == "reference" else None
        self.attach_heads(self._new_heads())
        self._patch_fallback_rows = {"train": 0}  # rows so far: of the run, and ("eval") of the current evaluation
        self._warned_patch_fallback = False
        self._restart_evaluation()  # the generator of evaluate's and predict's shuffles, and the eval count
        self._shuffle_step, self._micro_batch = -1, 0  # where the last training shuffle was drawn
        if eval_dataset is not None and args.per_device_eval_batch_size < 2:
            logger.warning(
                "latent_shift: per_device_eval_batch_size=1 scores every evaluation row by L_SFT alone (the shuffle of "
                "Phi needs another row in the batch), so eval_loss has no L_C or L_adj; use 2 or more."
            )
        self._warned_one_row_batch = False

    def _settle_labels(self, args: LatentShiftConfig, train_dataset, eval_dataset):
        """Add the completion-label column if needed, set ``self.verbalizer`` and check every row's label against it."""
        train_dataset = with_completion_labels(train_dataset, args.label_column, args.verbalizer, "training")
        label_column = self.extra_columns(args)[0]
        if args.verbalizer is None and not isinstance(train_dataset, Dataset):
            raise ConfigError("verbalizer must be set for streamed (iterable) training data: it cannot be read up front.")
        self.verbalizer: dict[str, str] = args.verbalizer or verbalizer_from_data(train_dataset, label_column)
        train_dataset = labels_checked(train_dataset, label_column, self.verbalizer, "training")
        if isinstance(train_dataset, Dataset) and args.process_index == 0:
            seen = {str(label) for label in train_dataset[label_column]}
            unseen = [label for label in self.verbalizer if label not in seen]
            if unseen:
                logger.warning(
                    f"latent_shift: the verbalizer's label(s) {', '.join(map(repr, unseen))} have no training row: the "
                    "heads get a class that no row trains, and prediction may still choose it. Drop them from the "
                    "verbalizer, or add rows with them."
                )
        return train_dataset, self._labelled_eval(eval_dataset, args)

    def _labelled_eval(self, eval_dataset, args: LatentShiftConfig | None = None, name: str = "eval"):
        """Evaluation rows (a dataset or a dict of them) with their labels added and checked against the verbalizer,
        tokenized ones too (e.g. Axolotl's, with a ``completion`` column); split names and tokenized rows that
        already carry the label column unchanged."""
        args = args or self.args
        if isinstance(eval_dataset, dict):
            named_splits(None, eval_dataset)  # refuses an evaluation split named 'train'
            return {key: self._labelled_eval(dataset, args, key) for key, dataset in eval_dataset.items()}
        if eval_dataset is None or isinstance(eval_dataset, str):
            return eval_dataset
        columns = eval_dataset.column_names or []
        if "input_ids" in columns and self.extra_columns(args)[0] in columns:
            return eval_dataset
        eval_dataset = with_completion_labels(eval_dataset, args.label_column, args.verbalizer, f"evaluation {name!r}")
        return labels_checked(eval_dataset, self.extra_columns(args)[0], self.verbalizer, f"evaluation {name!r}")

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        """``SFTTrainer.evaluate``; raw rows passed here get their labels like the evaluation rows given at init. The
        shuffles of L_adj restart from ``latent_shift_seed`` on every call, so the same model scores the same."""
        self._restart_evaluation()
        return super().evaluate(self._labelled_eval(eval_dataset), ignore_keys, metric_key_prefix)

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix="test"):
        """``SFTTrainer.predict``, whose test_loss, like eval_loss, draws its shuffles afresh from ``latent_shift_seed``."""
        self._restart_evaluation()
        return super().predict(test_dataset, ignore_keys, metric_key_prefix)

    def _restart_evaluation(self) -> None:
        """The shuffles of L_adj restart from ``latent_shift_seed`` and the fallback count from 0: the same model and
        rows score the same, however often they are scored."""
        self._eval_generator = torch.Generator().manual_seed(self.args.latent_shift_seed_value)
        self._patch_fallback_rows["eval"] = 0

    def _frozen_reference(self) -> torch.nn.Module:
        """A frozen copy of the model as it is before training, placed like DPO's reference model (under ZeRO-3,
        where the model is already partitioned, loaded again from its path)."""
        if is_deepspeed_zero3_enabled():
            purpose = "frozen reference view (frozen_view: reference)"
            reference = reload_pretrained(self.model, self.args.model_init_kwargs, purpose)
        else:
            reference = frozen_copy(self.model)
        if self.is_deepspeed_enabled:
            return prepare_deepspeed(reference, self.accelerator)
        if self.is_fsdp_enabled:
            return prepare_fsdp(reference, self.accelerator)
        return self.accelerator.prepare_model(reference, evaluation_mode=True)

    def _new_heads(self) -> LatentShiftHeads:
        """The heads, initialised from ``latent_shift_seed`` without touching the global RNG."""
        args, text_config = self.args, self.model.config.get_text_config()
        self.check_model_config(args, self.model.config)
        last, low_level = hidden_state_widths(self.model, text_config.hidden_size, args.low_level_layer, text_config.num_hidden_layers)
        return build_heads(args, last, len(self.verbalizer), args.latent_shift_seed_value, low_level_size=low_level)

    @staticmethod
    def check_model_config(args: LatentShiftConfig, model_config) -> None:
        """``low_level_layer`` is one of the model's hidden states (train calls this before the model loads)."""
        n_layers = model_config.get_text_config().num_hidden_layers
        if args.low_level_layer > n_layers:
            raise ConfigError(
                f"low_level_layer={args.low_level_layer}, but the model's hidden_states run from 0 (embeddings) to "
                f"{n_layers}."
            )

    @staticmethod
    def required_columns(args: LatentShiftConfig) -> tuple[str, ...]:
        return (args.label_column,) if args.label_column else ()

    @staticmethod
    def column_sets(args: LatentShiftConfig) -> tuple[tuple[str, ...], ...]:
        """Rows with a prompt to pool: prompt/completion, or messages whose loss covers the assistant turns only and
        whose label a column gives (without one, the label is the completion's text)."""
        messages = args.assistant_only_loss and args.label_column is not None
        return (("prompt", "completion"), ("messages",)) if messages else (("prompt", "completion"),)

    @staticmethod
    def columns_hint(args: LatentShiftConfig) -> str:
        return (
            "latent_shift pools each row's prompt, so rows are prompt/completion (conversational too: "
            "prompt = the messages before the answer, completion = [the assistant message]); `messages` rows need "
            "`label_column` (the column of each row's label), `assistant_only_loss: true` and a chat template that "
            "marks the assistant turns with {% generation %}."
        )

    def extra_columns(self, args: LatentShiftConfig | None = None) -> list[str]:
        """The label column, carried to ``compute_loss``."""
        return [(args or self.args).label_column or COMPLETION_LABEL_COLUMN]

    def _class_indices(self, labels: Tensor | list, device: torch.device) -> Tensor:
        values = labels.tolist() if isinstance(labels, Tensor) else labels
        unknown = [value for value in values if str(value) not in self.class_of_label]
        if unknown:
            raise DataError(
                f"A batch holds label {unknown[0]!r}, which is not in the verbalizer (labels: "
                f"{', '.join(map(repr, self.verbalizer))})."
            )
        return torch.tensor([self.class_of_label[str(value)] for value in values], device=device)

    def _frozen_last_hidden(self, model, inputs: dict[str, Any]) -> Tensor:
        """The last hidden layer of the frozen view, without grad (only the last position's logits are computed). The
        adapters view runs the base model in eval mode, as the reference copy is: without dropout (BERT, GPT-2 and OPT
        have some), R0 is the same for the same row, as the frozen pretrained model's is."""
        with torch.no_grad():
            if self.reference_model is not None:
                return self.reference_model(**inputs, output_hidden_states=True, logits_to_keep=1).hidden_states[-1]
            unwrapped = self.accelerator.unwrap_model(model)
            training = unwrapped.training
            unwrapped.eval()
            try:
                with unwrapped.disable_adapter():
                    return model(**inputs, output_hidden_states=True, logits_to_keep=1).hidden_states[-1]
            finally:
                unwrapped.train(training)

    def _no_prompt_tokens(self, rows: str) -> DataError:
        """The error for ``rows`` ("rows [2, 5] of the batch") whose first token is already supervised."""
        cut = f" or max_length={self.args.max_length} with truncation_mode keep_end cut their prompt off" if (
            self.args.max_length is not None and self.args.truncation_mode == "keep_end"
        ) else ""
        return DataError(
            f"No prompt tokens in {rows}: the first token is already supervised (no prompt{cut}). "
            "latent_shift pools over the prompt: use prompt/completion data (or messages with "
            "assistant_only_loss=True)" + (", or raise max_length." if cut else ".")
        )

    def _check_prompt_tokens(self, prepared, split: str, loaded=None) -> None:
        """Before training: rows of a prepared map-style split (TRL has tokenized, truncated and labelled them) whose
        first token is supervised (an empty prompt; keep_end cutting the prompt off) fail now, by row, rather than at
        the batch that draws them. Rows are numbered as in ``loaded`` (the split as given) where they can be
        matched to it, else as TRL prepared it (it drops the rows that truncation leaves without a completion)."""
        if not isinstance(prepared, Dataset) or "labels" not in prepared.column_names:
            return
        bad = [row for row, labels in enumerate(prepared["labels"]) if labels and labels[0] != -100]
        if bad:
            first = prepared[bad[0]].get("prompt")
            numbers = loaded_row_numbers(prepared, loaded)
            where = f"{count_rows(len(bad))} of the {split}" + ("" if numbers else " as TRL prepared it")
            rows = [numbers[row] for row in bad] if numbers else bad
            example = f"; row {rows[0]}'s prompt: {str(first)[:80]!r}" if first is not None else ""
            raise self._no_prompt_tokens(f"{where} ({describe_rows(rows)}{example})")

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        labels = inputs["labels"]  # left in `inputs`: prediction_step hands them to compute_metrics
        class_index = self._class_indices(self.pop_extra_columns(inputs)[self.extra_columns()[0]], labels.device)
        model_inputs = {key: value for key, value in inputs.items() if key != "labels"} | {"use_cache": False}
        prompt_mask = prompt_token_mask(labels, inputs["attention_mask"])
        no_prompt = (prompt_mask.sum(1) == 0).nonzero().flatten().tolist()
        if no_prompt:  # a streamed split, which is not checked before training
            raise self._no_prompt_tokens(f"{describe_rows(no_prompt)} of the batch")

        # A batch of one row has no other row to shuffle with: L_SFT alone. In evaluation that is a last batch; in
        # training (where a last batch of one is dropped) the end of a one-process stream, which no sampler can drop
        # (accelerate fills the last batches of a stream shared by several processes).
        sft_only = labels.shape[0] < 2
        frozen_last_hidden = None if sft_only else self._frozen_last_hidden(model, model_inputs)
        outputs = model(**model_inputs, output_hidden_states=True)
        token_losses, token_mask = causal_lm_token_losses(outputs.logits, labels, self.args.label_smoothing_factor)
        loss = self.token_mean(token_losses.sum(), token_mask.sum(), num_items_in_batch)
        log_token_metrics(self, mode, outputs.logits, labels, inputs["attention_mask"])
        # L_SFT's share of the logged loss, scaled so that its mean over a step's micro-batches and processes is the
        # token mean over the whole accumulated batch, as TRL logs `loss`
        loss_sft = loss.detach() * (self.current_gradient_accumulation_steps if self._training() else 1)
        if sft_only:
            if mode == "train":
                self._one_row_training_batch()
            else:  # eval_loss counts the row, and so does loss_sft
                none = torch.tensor(float("nan"), device=loss.device)
                self._log_losses(mode, loss_sft, LatentShiftLosses(none, none, 0))
            return (loss, outputs) if return_outputs else loss
        auxiliary = self.heads.losses(
            outputs.hidden_states[-1],
            frozen_last_hidden,
            outputs.hidden_states[self.args.low_level_layer].detach(),
            prompt_mask,
            class_index,
            adjustment=self.args.adjustment,
            entropy_mode=self.args.entropy_mode,
            generator=self._training_shuffle_generator() if mode == "train" else self._eval_generator,
            gather=self.accelerator.gather if self.accelerator.num_processes > 1 else None,
        )
        loss = loss + self.example_mean(self.args.lambda_causal * auxiliary.causal + self.args.lambda_adj * auxiliary.adjusted)
        self._log_losses(mode, loss_sft, auxiliary)
        return (loss, outputs) if return_outputs else loss

    def _training_shuffle_generator(self) -> torch.Generator:
        """The generator of this micro-batch's shuffle, seeded from (``latent_shift_seed``, optimizer step, micro-batch
        within the step, process) alone: the training shuffles are the same whatever else draws random numbers (an
        evaluation's data loader too), and a resumed run draws the same ones again."""
        step = self.state.global_step
        self._micro_batch = self._micro_batch + 1 if step == self._shuffle_step else 0
        self._shuffle_step = step
        return seeded_generator([self.args.latent_shift_seed_value, step, self._micro_batch, self.accelerator.process_index])

    def _one_row_training_batch(self) -> None:
        """Warn (once) that a training batch of one row trains L_SFT alone; under DDP it is an error, since the
        other processes' heads wait in backward for gradients this one does not give."""
        cause = (
            "the end of a streamed dataset; a stream whose length is a multiple of per_device_train_batch_size "
            "avoids it"
            if isinstance(self.train_dataset, IterableDataset)
            else "the last batch of an epoch under `dataloader_drop_last: false`; the default, true, drops it"
        )
        if self.accelerator.num_processes > 1:  # split_batches with too few rows per process is refused at init
            raise DataError(
                f"A training batch of one row on process {self.accelerator.process_index} ({cause}): latent_shift "
                "shuffles Phi between rows, and under DDP every process must train the heads."
            )
        if not self._warned_one_row_batch:
            self._warned_one_row_batch = True
            logger.warning(
                f"latent_shift: a training batch of one row trains L_SFT alone, since the shuffle of Phi needs another "
                f"row ({cause}). Said once per run."
            )

    def _get_dataloader(self, dataset, description, batch_size, sampler_fn=None, is_training=False, dataloader_key=None):
        """``dataloader_drop_last`` applies to training only (the shuffle needs two rows); evaluation keeps every row."""
        drop_last = self.args.dataloader_drop_last
        self.args.dataloader_drop_last = drop_last and is_training
        try:
            return super()._get_dataloader(
                dataset, description, batch_size, sampler_fn=sampler_fn, is_training=is_training, dataloader_key=dataloader_key
            )
        finally:
            self.args.dataloader_drop_last = drop_last

    def _log_losses(self, mode: str, loss_sft: Tensor, auxiliary: LatentShiftLosses) -> None:
        """Add the batch's ``loss_sft``, ``loss_causal`` and ``loss_adj`` over all processes to the logged metrics: in
        training their mean, once per micro-batch (a log averages its window's); in evaluation once per row, weighted
        as transformers weights eval_loss, leaving out the auxiliary terms of batches of one row (NaN: none)."""
        metrics = self._metrics[mode]
        for name, value in (("loss_sft", loss_sft), ("loss_causal", auxiliary.causal), ("loss_adj", auxiliary.adjusted)):
            if mode == "train":
                metrics[name].append(self.accelerator.gather_for_metrics(value.detach()).mean().item())
                continue
            # as the evaluation loop repeats each batch's loss: gather_for_metrics keeps a last short batch's rows
            per_row = self.accelerator.gather_for_metrics(value.detach().repeat(self.args.eval_batch_size))
            if (scored := per_row[~per_row.isnan()]).numel():
                metrics[name].extend(scored.tolist())
        fallback = torch.tensor(auxiliary.n_patch_fallback, device=loss_sft.device)
        n_fallback = int(self.accelerator.gather_for_metrics(fallback).sum().item())
        if n_fallback and not self._warned_patch_fallback:
            self._warned_patch_fallback = True
            logger.warning(
                f"{n_fallback} row(s) have fewer prompt tokens than n_patches={self.args.n_patches}; they use one patch "
                "per token. The metric `patch_fallback_rows` counts them."
            )
        self._patch_fallback_rows[mode] += n_fallback
        metrics["patch_fallback_rows"] = [self._patch_fallback_rows[mode]]

    def _save(self, output_dir: str | None = None, state_dict=None):
        super()._save(output_dir, state_dict=state_dict)
        if self.args.should_save:
            description = {
                "heads": self.heads.config,
                "verbalizer": self.verbalizer,
                "low_level_layer": self.args.low_level_layer,
                # how the checkpoint predicts (LatentShiftPredictor's options), also for raw prompts without a completion
                "predictor": {
                    "answer_prefix": self.answer_prefix,
                    "phi_samples": self.args.phi_samples,
                    "phi_source": self.args.phi_source,
                    "seed": self.args.latent_shift_seed_value,
                    # how training cut prompt + completion, so that prediction pools the same prompt tokens
                    "max_length": getattr(self.args, "max_length", None),
                    "truncation_mode": getattr(self.args, "truncation_mode", "keep_start"),
                },
            }
            write_json_file(output_dir or self.args.output_dir, LATENT_SHIFT_FILE, description)

    def load_heads(self, checkpoint_dir: str) -> None:
        """``HeadsMixin.load_heads``, once the checkpoint is found to fix what this run sets: its verbalizer in the same
        order (the heads' classes are its labels in that order), and the low-level layer and head settings its heads
        and memory bank were built with (a changed ``n_patches`` or ``low_level_layer`` fits the saved tensors, yet
        mixes other features into the bank)."""
        description = read_json_file(checkpoint_dir, LATENT_SHIFT_FILE) or {}
        saved = description.get("verbalizer")
        if saved is not None and list(saved.items()) != list(self.verbalizer.items()):
            order = " (the same labels in another order)" if saved == self.verbalizer else ""
            raise ConfigError(
                f"{checkpoint_dir} was trained with the verbalizer {saved} and this run's is {self.verbalizer}{order}: "
                f"the heads' classes are its labels in that order. Set verbalizer to {json.dumps(saved)} to resume."
            )
        built = {"low_level_layer": self.args.low_level_layer, **self.heads.config}
        saved_built = {key: description[key] for key in ("low_level_layer",) if key in description} | description.get("heads", {})
        if changed := [key for key, value in built.items() if saved_built.get(key, value) != value]:
            setting = {"bank_size": "memory_bank_size", "hidden_size": "the model's hidden size",
                       "low_level_size": "the low-level layer's width", "n_labels": "the number of labels"}
            listed = ", ".join(f"{setting.get(key, key)} {saved_built[key]} (now {built[key]})" for key in changed)
            raise ConfigError(
                f"{checkpoint_dir} was trained with {listed}: its heads and memory bank were built with them. Resume "
                "with the settings it was trained with, or train without resume_from_checkpoint."
            )
        super().load_heads(checkpoint_dir)

    @classmethod
    def checkpoint_answers(cls, checkpoint_dir: str | os.PathLike) -> tuple[list[str], list[str]] | None:
        """The classes a checkpoint predicts: (labels, verbalizer answers) saved with its heads; None without them."""
        description = read_json_file(checkpoint_dir, LATENT_SHIFT_FILE)
        return None if description is None else (list(description["verbalizer"]), list(description["verbalizer"].values()))

    @classmethod
    def checkpoint_settings(cls, checkpoint_dir: str | os.PathLike) -> dict:
        """The prediction settings saved with the heads, as config fields: what eval uses for a checkpoint without
        a run record (trained from a TRL script or Axolotl)."""
        predictor = (read_json_file(checkpoint_dir, LATENT_SHIFT_FILE) or {}).get("predictor", {})
        names = {"phi_samples": "phi_samples", "phi_source": "phi_source", "seed": "latent_shift_seed"}
        return {field: predictor[key] for key, field in names.items() if key in predictor}

    @classmethod
    def build_predictor(cls, args, model, tokenizer, answers, mode="score", checkpoint_dir=None, **kwargs):
        """The [`LatentShiftPredictor`] of ``checkpoint_dir`` (heads, memory bank and verbalizer saved there).

        ``args`` gives ``phi_samples``, ``phi_source`` and ``latent_shift_seed``; ``kwargs`` override them.
        """
        if checkpoint_dir is None:
            raise ConfigError("latent_shift predicts with the heads saved in a checkpoint: pass its directory.")
        overridden = {"latent_shift_seed" if key == "seed" else key for key in kwargs}
        saved = {key: value for key, value in cls.checkpoint_settings(checkpoint_dir).items() if key not in overridden}
        warn_unlike_training(args, saved, checkpoint_dir)
        settings = dict(phi_samples=args.phi_samples, phi_source=args.phi_source, seed=args.latent_shift_seed_value)
        settings.update(kwargs)
        return LatentShiftPredictor.from_checkpoint(checkpoint_dir, model, tokenizer, answers, mode=mode, **settings)


def answers_of_classes(verbalizer: dict[str, str], answers: Sequence[str]) -> list[str]:
    """Per class of the heads, the answer of ``answers`` that names it: its verbalizer answer when ``answers`` holds
    all of them, else its label when ``answers`` holds all the labels (e.g. eval's ``--answer_column label``).
    One space for all classes: with labels 0-4 answered "1"-"5", a per-class match would read class 1 as "1"."""
    by_text = {answer.strip().lower(): answer for answer in answers}
    for names in (list(verbalizer.values()), list(verbalizer)):
        if all(name.strip().lower() in by_text for name in names):
            return [by_text[name.strip().lower()] for name in names]
    raise ConfigError(
        f"The answers {list(answers)} hold neither every verbalizer answer {list(verbalizer.values())} nor every label "
        f"{list(verbalizer)}; the adjusted head predicts each of them. Name them all (trl-causal eval: "
        f"--answers {','.join(verbalizer.values())})."
    )


class LatentShiftPredictor(LMPredictor):
    """The adjusted prediction argmax_y 1/K sum_k softmax(h([q1(x), Phi'_k]))_y, with the plain LM-head one beside it.

    Phi' is drawn from the memory bank saved with the heads (``phi_source="bank"``, any batch size) or from the
    other rows of the batch (``"batch"``). Each row's draws come from a generator seeded by (``seed``, its pooled
    prompt tokens), so with the bank a row gets the same prediction on every call, whatever rows share its batch
    (with ``"batch"`` its draws pick among the other rows, so the batch matters). ``predict`` returns the adjusted
    answers; ``predict_both`` returns (adjusted, plain), the plain ones from ``LMPredictor`` (``mode`` "score" or
    "generate").
    """

    def __init__(
        self,
        model,
        tokenizer,
        answers: Sequence[str],
        heads: LatentShiftHeads,
        verbalizer: dict[str, str],
        *,
        low_level_layer: int = 0,
        phi_samples: int = 20,
        phi_source: str = "bank",
        seed: int = 0,
        max_length: int | None = None,
        truncation_mode: str = "keep_start",
        **kwargs,
    ):
        super().__init__(model, tokenizer, answers, **kwargs)
        if truncation_mode not in ("keep_start", "keep_end"):
            raise ConfigError(f"truncation_mode={truncation_mode!r} is not one of 'keep_start', 'keep_end'.")
        if len(verbalizer) != heads.config["n_labels"]:
            raise ConfigError(
                f"The heads predict {heads.config['n_labels']} labels but the verbalizer has {len(verbalizer)}."
            )
        self.heads = heads
        self.answer_of_class = answers_of_classes(verbalizer, self.answers)
        # The LM head learned the verbalizer's texts: score (or parse) those, also when the answers are the labels.
        text_of = dict(zip(self.answer_of_class, verbalizer.values()))
        self.written_answers = [text_of.get(answer, answer) for answer in self.answers]
        self.low_level_layer = low_level_layer
        self.phi_samples = phi_samples
        self.phi_source = phi_source
        self.seed = seed
        self.max_length = max_length
        self.truncation_mode = truncation_mode

    @classmethod
    def from_checkpoint(
        cls, checkpoint_dir: str | os.PathLike, model, tokenizer, answers: Sequence[str], **kwargs
    ) -> LatentShiftPredictor:
        """Load the heads (``trl_causal_heads.safetensors``) and their description saved by ``LatentShiftTrainer``,
        which also gives the options training used (answer prefix, Phi' draws, seed, truncation); ``kwargs`` win."""
        paths = [os.path.join(checkpoint_dir, name) for name in (LATENT_SHIFT_FILE, HEADS_FILE)]
        missing = [path for path in paths if not os.path.isfile(path)]
        if missing == paths[1:]:  # its own description is there: a copy left the heads behind
            raise ConfigError(
                f"{checkpoint_dir} lacks {HEADS_FILE}, which the latent_shift trainer saves beside {LATENT_SHIFT_FILE}: "
                "the folder is incomplete (a partial copy?). Copy it again from where training saved it."
            )
        if missing:
            raise ConfigError(f"{checkpoint_dir} lacks {', '.join(map(os.path.basename, missing))}: it was not saved by the latent_shift trainer.")
        description = read_json_file(checkpoint_dir, LATENT_SHIFT_FILE)
        heads = LatentShiftHeads.from_config(description["heads"])
        heads.load_state_dict(load_file(paths[1]))
        return cls(
            model,
            tokenizer,
            answers,
            heads,
            description["verbalizer"],
            low_level_layer=description["low_level_layer"],
            **{**description.get("predictor", {}), **kwargs},
        )

    def prepare(self, rows: Sequence[dict[str, Any]]) -> tuple[list[Prompt], list[list[str]]]:
        """The prompts, and the answers as the LM head writes them: each class's verbalizer answer."""
        return self.prepare_prompts(rows), [self.written_answers] * len(rows)

    def pooled_prompt_ids(self, rows: Sequence[dict[str, Any]]) -> list[list[int]]:
        """Per row, the prompt tokens that training pooled for such a row: tokenized as TRL tokenizes training rows
        (``completion_tokens``), up to where the prompt and prompt + completion diverge (a prompt ending in a space
        that merges into the answer's first token loses it, as in training; the shortest such prompt over the
        answers), and cut as TRL cuts prompt + completion to ``max_length``. ``keep_start`` keeps the prompt whole (TRL
        drops a row whose prompt fills max_length; a longer prompt keeps its first max_length - 1 tokens);
        ``keep_end`` keeps the prompt's last max_length - n tokens, n the tokens of the longest completion after it
        (with the end-of-sequence token TRL appends to a plain-text one)."""
        pooled = []
        prompts = list(zip(self.prepare_prompts(rows), self.answer_prefixes(rows), self.template_kwargs(rows)))
        for prompt, prefix, kwargs in self._rows(prompts, "tokenizing prompts"):
            splits = self.completion_tokens(prompt, prefix, self.written_answers, kwargs)
            ids, start = min(((ids, start) for ids, start, _, _ in splits), key=lambda split: split[1])
            ids = ids[:start]
            if self.max_length is not None and self.truncation_mode == "keep_start":
                ids = ids[: self.max_length - 1]
            elif self.max_length is not None:
                completion_length = max(len(full) - begin for full, begin, _, _ in splits) + isinstance(prompt, str)
                ids = ids[-max(self.max_length - completion_length, 1) :]
            pooled.append(ids)
        return pooled

    def adjusted_probabilities(self, rows: Iterable[dict[str, Any] | Prompt]) -> Tensor:
        """p(y | do(x)) per row over the verbalizer's labels: a [rows, labels] tensor."""
        rows = self.as_rows(rows)
        if not rows:
            return torch.zeros(0, len(self.answer_of_class))
        if self.phi_source == "batch" and self.batch_size < 2 and len(rows) > 1:
            raise ConfigError(
                "phi_source='batch' draws Phi' from the other rows of each batch, so batch_size must be 2 or more (it "
                "is 1); or draw from the memory bank (trl-causal eval: --setting phi_source=bank)."
            )
        token_ids = self.pooled_prompt_ids(rows)
        self.check_positions([len(ids) for ids in token_ids], "as pooled")
        device = next(self.model.parameters()).device
        if next(self.heads.parameters()).device != device:  # the model moved since (the heads keep their own dtype)
            self.heads.to(device)
        probabilities = []
        with eval_mode(self.model, self.heads), torch.no_grad():
            # Phi' from the batch needs another row in it: a last batch of one joins the one before.
            for batch in self._batches(token_ids, "adjusted prediction", min_last=2 if self.phi_source == "batch" else 1):
                input_ids, prompt_mask = self.padded(batch)
                hidden_states = self.model(
                    input_ids=input_ids, attention_mask=prompt_mask, output_hidden_states=True, logits_to_keep=1, use_cache=False
                ).hidden_states
                probabilities.append(
                    self.heads.predict(
                        hidden_states[-1],
                        prompt_mask,
                        low_hidden=hidden_states[self.low_level_layer],
                        k=self.phi_samples,
                        source=self.phi_source,
                        # each row's Phi' draws from (seed, its prompt tokens): the same whatever rows precede it
                        generator=[seeded_generator([self.seed, len(ids), *ids]) for ids in batch],
                    ).cpu()
                )
        return torch.cat(probabilities)

    def predict(self, rows: Iterable[dict[str, Any] | Prompt]) -> list[str | None]:
        """The adjusted answer per row."""
        return [self.answer_of_class[i] for i in self.adjusted_probabilities(rows).argmax(dim=1).tolist()]

    def predict_both(self, rows: Iterable[dict[str, Any] | Prompt]) -> tuple[list[str | None], list[str | None]]:
        """(adjusted answers, plain LM-head answers)."""
        rows = self.as_rows(rows)
        return self.predict(rows), super().predict(rows)
