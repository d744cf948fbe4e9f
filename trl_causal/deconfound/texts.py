"""The scored texts of observational rows: what the reward model reads, tokenized as TRL's ``RewardTrainer`` does
(``tokenize_rows``), and their text features phi (``text_features``).

This module imports TRL (and so torch); the package does not import it. ``args`` is the ``deconfounded_reward``
trainer's config (``DeconfoundedRewardConfig``).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import numpy as np
from accelerate.utils import is_peft_model
from trl.data_utils import _tokenize, is_conversational
from trl.trainer.utils import global_then_local_main_first

from ..errors import DataError
from ..evaluation import position_limit
from .features import hidden_state_features, runs_bf16_natively, tfidf_features

if TYPE_CHECKING:
    import datasets


def scored_input(row: Mapping[str, Any], text_column: str | None, eos_token: str) -> str | list[dict[str, Any]]:
    """What the reward model reads, as TRL's ``RewardTrainer`` builds it: ``text + eos``, ``prompt + completion + eos``,
    or the message list ``prompt + completion`` (tokenized with the chat template)."""
    if text_column is None and is_conversational(row):
        return row["prompt"] + row["completion"]
    text = row[text_column] if text_column is not None else row["prompt"] + row["completion"]
    return text if text.endswith(eos_token) else text + eos_token


def scored_text(row: Mapping[str, Any], text_column: str | None) -> str:
    """The scored text as one string (message contents joined by newlines), for TF-IDF."""
    if text_column is not None:
        return row[text_column]
    if is_conversational(row):
        return "\n".join(str(message["content"]) for message in row["prompt"] + row["completion"])
    return row["prompt"] + row["completion"]


def text_features(
    args: Any,
    rows: datasets.Dataset,
    sequences: list[list[int]],
    model: Any = None,
    pad_token_id: int | None = None,
    progress: bool = True,
):
    """phi of the rows: TF-IDF of the scored texts, or the mean-pooled hidden states ``feature_layers`` of the frozen
    model (with PEFT: the adapters disabled) on the token ids ``sequences``, in the precision of ``feature_autocast``.
    A sequence longer than ``max_length`` (a row training drops) or than the model's positions gives the features of
    its first tokens."""
    if args.feature_source == "tfidf":
        return tfidf_features([scored_text(row, args.text_column) for row in rows])
    if limits := [limit for limit in (args.max_length, position_limit(model)) if limit]:
        sequences = [ids[: min(limits)] for ids in sequences]
    with model.disable_adapter() if is_peft_model(model) else nullcontext():
        return hidden_state_features(
            model,
            sequences,
            pad_token_id,
            args.feature_batch_size,
            args.feature_cache_dir,
            progress,
            autocast=feature_precision(args, model),
            layers=args.feature_layers,
        )


def feature_precision(args: Any, model: Any) -> str | None:
    """The autocast precision of the model feature pass on ``model``'s device (``feature_autocast``)."""
    device = next(model.parameters()).device
    return args.feature_autocast_precision(bf16_native=runs_bf16_natively(device), cpu=device.type == "cpu")


def tokenize_rows(rows: datasets.Dataset, args: Any, tokenizer, split: str) -> datasets.Dataset:
    """``input_ids`` of ``scored_input`` for every row (the other columns are dropped)."""
    with global_then_local_main_first():
        return rows.map(
            lambda row: {
                "input_ids": _tokenize(tokenizer, scored_input(row, args.text_column, tokenizer.eos_token))["input_ids"]
            },
            remove_columns=rows.column_names,
            num_proc=args.dataset_num_proc,
            desc=f"Tokenizing {split} rows",
        )


def check_lengths(
    tokenized: Mapping[str, datasets.Dataset], max_length: int | None, groups: Mapping[str, np.ndarray] | None = None
) -> None:
    """Fail on a split that dropping the rows longer than ``max_length`` tokens leaves without an example: one whose
    every row is longer, or, for pairs (``groups``: the group ids of each split's rows), one whose every group is left
    with one row."""
    if max_length is None:
        return
    for split, rows in tokenized.items():
        lengths = np.array([len(ids) for ids in rows["input_ids"]])
        if lengths.min() > max_length:
            raise DataError(
                f"All {len(rows)} rows of the {split} split are longer than max_length={max_length} tokens (the "
                f"shortest has {lengths.min()}), and rows over max_length are dropped: nothing would be left. Raise "
                "`max_length` or shorten the texts."
            )
        kept = lengths <= max_length
        if groups is None or kept.all():
            continue
        _, group_sizes = np.unique(groups[split][kept], return_counts=True)
        if (group_sizes == 1).all():
            use = "train on" if split == "train" else "evaluate"
            raise DataError(
                f"Dropping the {split} rows longer than max_length={max_length} leaves every group with one row, so "
                f"there is no pair to {use}: raise max_length."
            )
