"""SFT with per-example loss weights: L = sum_i w_i sum_t l_it / N, N = loss tokens in the accumulated batch."""

import math
import numbers
from dataclasses import dataclass, field

import torch
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from trl_causal.configuration import check_column_names
from trl_causal.errors import DataError
from trl_causal.trainer import CausalLossMixin, ExtraColumnsMixin, causal_lm_token_losses, log_token_metrics, smoothing_own_logits


@dataclass
class WeightedSFTConfig(SFTConfig):
    """SFTConfig plus the name of the column that holds each row's loss weight."""

    weight_column: str = field(
        default="weight",
        metadata={"help": "Dataset column with a non-negative number per row; that row's token losses are scaled by it."},
    )

    def __post_init__(self):
        super().__post_init__()
        check_column_names(self, "weight_column")


def check_weights(dataset: Dataset, column: str) -> None:
    """Every row's weight is a finite number >= 0; the first row that breaks this is named."""
    for index, value in enumerate(dataset[column]):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
            raise DataError(
                f"Row {index} has {column}={value!r}: every row needs a finite number >= 0 as its loss weight "
                f"(weight_column: {column})."
            )


class WeightedSFTTrainer(CausalLossMixin, ExtraColumnsMixin, SFTTrainer):
    """``trl.SFTTrainer`` whose loss weights every row by its ``weight_column`` value."""

    def __init__(self, model, args: WeightedSFTConfig | None = None, train_dataset=None, **kwargs):
        if isinstance(train_dataset, Dataset):  # before training, not as a collator error mid-run
            check_weights(train_dataset, getattr(args, "weight_column", "weight"))
        with smoothing_own_logits():  # its loss smooths its own logits: no extra forward pass
            super().__init__(model, args, train_dataset=train_dataset, **kwargs)

    @staticmethod
    def required_columns(args: WeightedSFTConfig) -> tuple[str, ...]:
        return (args.weight_column,)

    def extra_columns(self) -> list[str]:
        return [self.args.weight_column]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weights = self.pop_extra_columns(inputs)[self.args.weight_column].float()
        labels = inputs.pop("labels")
        outputs = model(**inputs, use_cache=False)
        token_losses, mask = causal_lm_token_losses(outputs.logits, labels, self.args.label_smoothing_factor)
        loss_sum = (token_losses.sum(dim=1) * weights.to(token_losses.device)).sum()
        loss = self.token_mean(loss_sum, mask.sum(), num_items_in_batch)
        mask = inputs.get("attention_mask", torch.ones_like(inputs["input_ids"]))  # padding-free rows: every token is real
        log_token_metrics(self, "train" if model.training else "eval", outputs.logits, labels, mask)
        return (loss, outputs) if return_outputs else loss
