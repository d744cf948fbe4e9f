"""Mixins for ``transformers.Trainer`` subclasses (TRL's, Axolotl's, or plain ones).

- ``ExtraColumnsMixin`` carries dataset columns (environment, confounders, labels, ...) past the
  column removal and the collator into ``compute_loss``.
- ``CausalLossMixin`` reduces our own losses so that gradient accumulation and DDP give the same
  gradients as one large batch.
- ``HeadsMixin`` attaches extra trainable modules to the model (so the optimizer, DDP and DeepSpeed
  see them) and saves / restores them with every checkpoint, separately from the model weights.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from transformers.integrations import is_deepspeed_zero3_enabled

from ..errors import ConfigError

HEADS_ATTR = "trl_causal_heads"
HEADS_FILE = "trl_causal_heads.safetensors"


class CarryColumnsCollator:
    """Wraps a collator: takes ``columns`` out of each example, collates the rest, puts them back batched.

    Numbers become tensors (so they move to the device with the batch); anything else stays a list.
    """

    def __init__(self, collator: Callable, columns: Sequence[str]):
        self.collator = collator
        self.columns = list(columns)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        carried = {c: [example[c] for example in examples] for c in self.columns if c in examples[0]}
        # the examples themselves stay untouched: a dataset may hand out the same dicts again next epoch
        batch = self.collator([{k: v for k, v in example.items() if k not in carried} for example in examples])
        for column, values in carried.items():
            is_number = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            batch[column] = torch.tensor(values) if is_number else values
        return batch


class ExtraColumnsMixin:
    """Keeps ``self.extra_columns()`` through TRL's column removal and collator to ``compute_loss``.

    Subclasses define ``extra_columns`` (from their config) and call ``self.pop_extra_columns(inputs)``
    in ``compute_loss`` before the model forward.
    """

    def extra_columns(self) -> list[str]:
        return []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        columns = self.extra_columns()
        if columns:
            merging = [name for name in ("packing", "padding_free", "eval_packing") if getattr(self.args, name, False)]
            if merging:
                raise ConfigError(
                    f"{' and '.join(f'{name}=True' for name in merging)} merges rows into one sequence, so the per-row "
                    f"columns {columns} cannot be carried; set {' and '.join(f'`{name}: false`' for name in merging)}."
                )
            self.data_collator = CarryColumnsCollator(self.data_collator, columns)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        self._signature_columns = list(self._signature_columns) + [
            c for c in self.extra_columns() if c not in self._signature_columns
        ]

    def pop_extra_columns(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Remove the carried columns from ``inputs`` (so the model never sees them) and return them."""
        return {c: inputs.pop(c) for c in self.extra_columns() if c in inputs}


def causal_lm_token_losses(
    logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token losses ``l_t = -(1 - eps) log p(y_{t+1} | y_<=t) - eps / V sum_v log p(v | y_<=t)`` ([B, T-1]; eps
    = ``label_smoothing``, transformers' ``label_smoothing_factor``, 0: the plain NLL) and their mask (labels != -100)."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    mask = shift_labels.ne(-100)
    losses = nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.clamp(min=0).reshape(-1),
        reduction="none",
        label_smoothing=label_smoothing,
    ).view_as(shift_labels)
    return losses * mask, mask


@contextlib.contextmanager
def smoothing_own_logits() -> Iterator[None]:
    """Around ``SFTTrainer.__init__`` of a trainer whose loss smooths its own logits (``causal_lm_token_losses``):
    without TRL's warning that ``label_smoothing_factor`` costs an extra forward pass, which it does not there."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`label_smoothing_factor` is deprecated in `SFTTrainer`", category=FutureWarning)
        yield


def log_num_tokens(trainer: Any, mode: str, attention_mask: torch.Tensor) -> None:
    """TRL's ``num_tokens`` metric, for a trainer that computes its own loss: the tokens trained on so far, over all
    processes (``_total_train_tokens``, which TRL's SFTTrainer and RewardTrainer keep); in training the batch adds its."""
    if mode == "train":
        trainer._total_train_tokens += trainer.accelerator.gather_for_metrics(attention_mask.sum()).sum().item()
    trainer._metrics[mode]["num_tokens"] = [trainer._total_train_tokens]


def log_token_metrics(trainer: Any, mode: str, logits: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor) -> None:
    """The metrics TRL's SFTTrainer logs, for an SFT trainer that computes its own loss, so that dashboards compare
    the two: ``entropy`` and ``mean_token_accuracy`` of the next-token predictions on the supervised tokens (``labels``
    not -100), over all processes, and ``num_tokens`` (``log_num_tokens``)."""
    from trl.trainer.utils import entropy_from_logits

    with torch.no_grad():
        supervised = labels[:, 1:].ne(-100)
        predicted = logits[:, :-1][supervised].float()  # [supervised tokens, vocabulary]
        entropy_sum = entropy_from_logits(predicted).sum()  # TRL's, as SFTTrainer computes it
        correct = predicted.argmax(-1).eq(labels[:, 1:][supervised]).sum()
        n_valid, entropy_sum, correct = (
            trainer.accelerator.gather_for_metrics(value).sum() for value in (supervised.sum(), entropy_sum, correct)
        )
    metrics = trainer._metrics[mode]
    metrics["entropy"].append((entropy_sum / n_valid).item() if n_valid > 0 else 0.0)
    metrics["mean_token_accuracy"].append((correct / n_valid).item() if n_valid > 0 else 0.0)
    log_num_tokens(trainer, mode, attention_mask)


def follow_log_level(args: Any, loggers: Sequence[str] = ("trl_causal",)) -> None:
    """Give the ``loggers`` (and the loggers below them) the level transformers' Trainer gives its own on this process:
    ``log_level`` on the main process, ``log_level_replica`` on the others, transformers' verbosity where they are
    ``passive`` (``TRANSFORMERS_VERBOSITY``). trl_causal's loggers are outside the ``transformers`` hierarchy, which
    the Trainer sets."""
    import logging

    level = args.get_process_log_level()
    for name in loggers:
        logging.getLogger(name).setLevel(level)


def lower_is_better_by_default(args: Any, metric_names: Sequence[str]) -> None:
    """Set ``args.greater_is_better`` False where it is unset and ``metric_for_best_model`` ends with one of
    ``metric_names`` (lower-is-better terms a trainer logs; with or without ``eval_``). Call it before
    ``TrainingArguments.__post_init__``, which takes a metric whose name does not end in "loss" as greater-is-better."""
    if args.greater_is_better is None and (args.metric_for_best_model or "").endswith(tuple(metric_names)):
        args.greater_is_better = False


def prompt_learning_type(model: Any, peft_config: Any) -> str | None:
    """The PEFT type of a prompt-learning adapter (``PREFIX_TUNING``, ``PROMPT_TUNING``, ``P_TUNING``, ...) given as
    ``peft_config`` or already on ``model``, else None: such adapters change no weight (nothing to merge), and all but
    prefix tuning put virtual tokens before each row's tokens."""
    config = peft_config if peft_config is not None else getattr(model, "active_peft_config", None)
    return str(getattr(config.peft_type, "value", config.peft_type)) if getattr(config, "is_prompt_learning", False) else None


def refuse_adapter(adapter: str, trainer: str, why: str, instead: str = "another adapter that changes the model's weights (DoRA, IA3, LoHa)") -> ConfigError:
    """The error for a PEFT adapter type ``trainer`` cannot train, saying ``why`` and what to use ``instead``."""
    return ConfigError(f"The {trainer} trainer cannot train a {adapter} adapter: {why}. Use LoRA (use_peft: true), or {instead}.")


class CausalLossMixin:
    """Loss reductions that are exact under gradient accumulation and DDP.

    The trainer says its loss is already scaled (``loss_is_scaled_for_ga = True``), so:

    - ``token_mean``: ``sum_t l_t / N`` with ``N`` the loss tokens of the whole accumulated batch
      (``num_items_in_batch``). With ``average_tokens_across_devices`` (transformers' default) ``N`` counts them over
      all ranks and the loss is multiplied by the number of processes (DDP averages gradients); without it, ``N`` is
      this rank's count and the loss is not scaled;
    - ``example_mean``: ``mean_i l_i / G`` over the ``G`` accumulation steps (exact when every
      micro-batch has the same number of rows, which the Trainer's samplers give).

    Where transformers passes no ``num_items_in_batch`` (a model whose forward takes no loss kwargs, e.g. Gemma 3),
    ``token_mean`` falls back to each micro-batch's own token mean, as TRL's SFTTrainer then does.
    """

    loss_is_scaled_for_ga = True

    def _training(self) -> bool:
        return self.model.training

    def token_mean(self, loss_sum: torch.Tensor, local_count: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        if num_items_in_batch is None or not self._training():
            return self.example_mean(loss_sum / local_count.clamp(min=1))
        loss = loss_sum / torch.as_tensor(num_items_in_batch, device=loss_sum.device).clamp(min=1)
        if self.args.average_tokens_across_devices:
            loss = loss * self.accelerator.num_processes
        return loss

    def example_mean(self, loss: torch.Tensor) -> torch.Tensor:
        loss = loss.mean()
        return loss / self.current_gradient_accumulation_steps if self._training() else loss


class HeadsMixin:
    """Extra trainable modules attached to the model as ``model.trl_causal_heads``.

    Attaching (rather than keeping them on the trainer) puts them in the optimizer and under
    DDP / DeepSpeed with the model. They are saved as ``trl_causal_heads.safetensors`` beside the
    model weights, left out of the model's own files, and restored on ``resume_from_checkpoint``.
    A config field ``heads_learning_rate`` (if set) gives the heads their own optimizer groups: they start
    from random weights, while the model's learning rate is sized for pretrained ones.
    """

    def _build_accelerator_args(self, **kwargs):
        # The heads run outside the model's DDP forward. DDP's search for unused parameters (transformers turns it on
        # without gradient checkpointing or for PEFT models) would mark them ready (unused) when that forward ends and
        # again when their gradients arrive in backward, which fails.
        if self.args.ddp_find_unused_parameters is None:
            self.args.ddp_find_unused_parameters = False
        return super()._build_accelerator_args(**kwargs)

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        heads_lr = getattr(self.args, "heads_learning_rate", None)
        if heads_lr is None or self.heads is None:
            return optimizer
        head_ids = {id(p) for p in self.heads.parameters()}
        for group in list(optimizer.param_groups):
            own = [p for p in group["params"] if id(p) in head_ids]
            if own:
                group["params"] = [p for p in group["params"] if id(p) not in head_ids]
                optimizer.add_param_group({**{k: v for k, v in group.items() if k != "params"}, "params": own, "lr": heads_lr})
        optimizer.param_groups[:] = [group for group in optimizer.param_groups if group["params"]]
        return optimizer

    def attach_heads(self, heads: nn.Module) -> None:
        if self.optimizer is not None:  # `optimizers=(optimizer, scheduler)`: built before the heads existed
            raise ConfigError(
                f"{type(self).__name__} trains heads that it builds after the model, so an optimizer passed in "
                "`optimizers` would leave them untrained. Pass `optimizer_cls_and_kwargs=(torch.optim.AdamW, "
                "{...})` instead (or set `optim` in the config): the trainer then builds the optimizer over the model "
                "and its heads."
            )
        parameter = next(self.model.parameters())
        heads = heads.to(device=parameter.device)
        if is_deepspeed_zero3_enabled():
            # ZeRO-3 gives the weights its fp16 / bf16 as they load and casts nothing later, while one partition
            # holds one dtype: the heads take the dtype of the model's trainable weights (DeepSpeed keeps fp32
            # master copies of them all).
            trainable = next((p for p in self.model.parameters() if p.requires_grad), parameter)
            heads = heads.to(dtype=trainable.dtype)
        self.model.add_module(HEADS_ATTR, heads)

    @property
    def heads(self) -> nn.Module | None:
        return getattr(self.accelerator.unwrap_model(self.model), HEADS_ATTR, None)

    def _save(self, output_dir: str | None = None, state_dict=None):
        from safetensors.torch import save_file

        output_dir = output_dir or self.args.output_dir
        heads = self.heads
        if heads is None:
            return super()._save(output_dir, state_dict=state_dict)
        if state_dict is not None:  # e.g. gathered by DeepSpeed: split our keys off
            prefix = f"{HEADS_ATTR}."
            heads_state = {k.split(prefix, 1)[1]: v for k, v in state_dict.items() if prefix in k}
            state_dict = {k: v for k, v in state_dict.items() if prefix not in k}
        else:
            heads_state = heads.state_dict()
        with self._without_heads():  # keep the model's own checkpoint standard
            super()._save(output_dir, state_dict=state_dict)
        # An empty state_dict is DeepSpeed's without gathered weights: the heads live in its checkpoint, as the model does.
        if self.args.should_save and heads_state:
            os.makedirs(output_dir, exist_ok=True)
            save_file({k: v.detach().contiguous().cpu() for k, v in heads_state.items()}, os.path.join(output_dir, HEADS_FILE))

    def detach_heads(self, model=None) -> nn.Module | None:
        """Take the heads off the (unwrapped) model, the trainer's by default, and return them (None if it has none):
        a later ``save_pretrained`` of the model leaves them out."""
        return self.accelerator.unwrap_model(model if model is not None else self.model)._modules.pop(HEADS_ATTR, None)

    @contextlib.contextmanager
    def _without_heads(self, model=None, keep_under_deepspeed: bool = False):
        """The model without its heads for the duration: its checkpoint is saved without them (``_save``), and loading
        one with them on would make transformers warn that the heads' keys are missing, just before ``load_heads``
        restores them from their own file. With ``keep_under_deepspeed`` they stay under DeepSpeed, whose engine
        loads them with the model."""
        owner = self.accelerator.unwrap_model(model if model is not None else self.model)
        heads = None if keep_under_deepspeed and self.is_deepspeed_enabled else self.detach_heads(owner)
        try:
            yield
        finally:
            if heads is not None:
                owner.add_module(HEADS_ATTR, heads)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        with self._without_heads(model, keep_under_deepspeed=True):
            super()._load_from_checkpoint(resume_from_checkpoint, model=model)
        self.load_heads(resume_from_checkpoint)

    def _load_optimizer_and_scheduler(self, checkpoint):
        try:
            super()._load_optimizer_and_scheduler(checkpoint)
        except ValueError as error:  # torch's, from Optimizer.load_state_dict
            if "parameter group" not in str(error):
                raise
            raise ConfigError(
                f"The optimizer saved in {checkpoint} has other parameter groups than this run's ({error}): a setting "
                "that adds or removes trained parameters changed (deconfounded_reward's mode to or from covariate, "
                "heads_learning_rate set or unset, use_peft or its target modules). Resume with the settings the "
                "checkpoint was trained with (its trl_causal_run.json lists them), or start a new run."
            ) from None

    def _load_best_model(self):
        with self._without_heads(keep_under_deepspeed=True):
            super()._load_best_model()
        self.load_heads(self.state.best_model_checkpoint)

    def load_heads(self, checkpoint_dir: str) -> None:
        """Restore the heads saved in ``checkpoint_dir``; a checkpoint without them is an error."""
        from safetensors.torch import load_file

        heads = self.heads
        if heads is None:
            return
        path = os.path.join(checkpoint_dir, HEADS_FILE)
        if not os.path.isfile(path):
            if self.is_deepspeed_enabled:
                return  # saved without gathered weights: DeepSpeed's engine restored the heads with the model
            raise ConfigError(
                f"{checkpoint_dir} holds no {HEADS_FILE}, which this trainer saves with every checkpoint that has heads: "
                "the checkpoint was trained with settings that build none (deconfounded_reward: a mode other than "
                "covariate), or is incomplete (a file removed, or a save that did not finish). Resume with the settings "
                "it was trained with (its trl_causal_run.json lists them), from another checkpoint-N, or train without "
                "resume_from_checkpoint."
            )
        try:
            heads.load_state_dict(load_file(path, device=str(next(heads.parameters()).device)))
        except RuntimeError as error:  # e.g. a size the config now sets otherwise (d_phi, n_causal, ...)
            mismatch = next((line.strip() for line in str(error).splitlines() if "size mismatch" in line), str(error).splitlines()[0])
            raise ConfigError(
                f"The heads saved in {checkpoint_dir} do not fit the heads this config builds ({mismatch}). Resume with "
                "the settings the checkpoint was trained with (its trl_causal_run.json lists them)."
            ) from None
