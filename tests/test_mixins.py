"""The shared trainer machinery, exercised through real TRL trainers on the tiny model."""

from __future__ import annotations

import os
import sys
import warnings

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from torch import nn
from trl import SFTConfig, SFTTrainer

from conftest import REPO, cpu_training_args
from trl_causal.trainer import CausalLossMixin, HeadsMixin
from trl_causal.errors import ConfigError
from trl_causal.trainer.deconfounded_reward_config import DeconfoundedRewardConfig
from trl_causal.trainer.latent_shift_config import LatentShiftConfig
from trl_causal.trainer.mixins import HEADS_FILE, CarryColumnsCollator

sys.path.insert(0, str(REPO / "plugins" / "weighted_sft"))
from trl_causal_weighted_sft.trainer import WeightedSFTConfig, WeightedSFTTrainer  # noqa: E402

ROWS = {
    "prompt": ["Every cat is a mammal.", "Sally is a cat. Is Sally a mammal?", "Happy", "The food was good and the service"],
    "completion": [" True", " False, because the facts say so.", " Monday!", " was bad."],
    "weight": [1.0, 0.5, 2.0, 0.0],
}


def sgd_args(tmp_path, cls=SFTConfig, **overrides):
    """One plain SGD step (lr 1, no clipping, no decay): the weight change is the gradient."""
    sgd = dict(max_steps=1, learning_rate=1.0, optim="sgd", lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0)
    return cls(**cpu_training_args(tmp_path, **{**sgd, **overrides}))


def weights_after_one_step(tiny_model, tmp_path, batch_size, accumulation):
    args = sgd_args(
        tmp_path, WeightedSFTConfig, per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation
    )
    trainer = WeightedSFTTrainer(model=str(tiny_model), args=args, train_dataset=Dataset.from_dict(ROWS))
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    trainer.train()
    return {k: before[k] - v.detach() for k, v in trainer.model.named_parameters()}  # = lr * gradient


def test_gradient_accumulation_4x1_equals_batch_4(tiny_model, tmp_path):
    accumulated = weights_after_one_step(tiny_model, tmp_path / "ga", batch_size=1, accumulation=4)
    full = weights_after_one_step(tiny_model, tmp_path / "full", batch_size=4, accumulation=1)
    assert any(delta.abs().max() > 1e-4 for delta in full.values()), "the step changed nothing"
    for name in full:
        torch.testing.assert_close(accumulated[name], full[name], atol=2e-5, rtol=1e-4, msg=name)


def test_weight_column_reaches_the_loss(tiny_model, tmp_path):
    """Zero weights give a zero gradient: the column was carried through TRL to compute_loss."""
    rows = dict(ROWS, weight=[0.0] * 4)
    args = sgd_args(tmp_path, WeightedSFTConfig, per_device_train_batch_size=4)
    trainer = WeightedSFTTrainer(model=str(tiny_model), args=args, train_dataset=Dataset.from_dict(rows))
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    trainer.train()
    assert all(torch.equal(before[k], v) for k, v in trainer.model.named_parameters())


def test_the_example_plugin_applies_label_smoothing_and_logs_as_sft_does(tiny_model, tmp_path):
    """Weights of 1: the weighted loss is SFT's, label smoothing included (it was silently ignored), and so are TRL's
    token metrics (they were not logged: the plugin's loss replaces SFTTrainer's, which logs them)."""
    rows = Dataset.from_dict(dict(ROWS, weight=[1.0] * 4))
    settings = dict(per_device_train_batch_size=4, label_smoothing_factor=0.5)
    losses, logs = [], []
    for cls, trainer_cls in ((WeightedSFTConfig, WeightedSFTTrainer), (SFTConfig, SFTTrainer)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer = trainer_cls(model=str(tiny_model), args=sgd_args(tmp_path / cls.__name__, cls, **settings), train_dataset=rows)
        # TRL's warning of an extra forward pass holds for SFTTrainer only: the plugin smooths its own logits
        assert bool([w for w in caught if "label_smoothing_factor" in str(w.message)]) == (trainer_cls is SFTTrainer)
        trainer.train()
        losses.append(trainer.state.log_history[0]["loss"])
        logs.append(trainer.state.log_history[0])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for metric in ("entropy", "mean_token_accuracy", "num_tokens"):
        assert logs[0][metric] == pytest.approx(logs[1][metric], rel=1e-5), metric


class ProbeHead(nn.Module):
    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 2)


class HeadSFTTrainer(HeadsMixin, CausalLossMixin, SFTTrainer):
    """SFT plus an auxiliary head on the mean last hidden state (predicts whether the row is even)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        torch.manual_seed(1)
        self.attach_heads(ProbeHead(self.model.config.hidden_size))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs, output_hidden_states=True, use_cache=False)
        pooled = outputs.hidden_states[-1].mean(dim=1)
        logits = self.heads.linear(pooled)
        target = (inputs["input_ids"].sum(dim=1) % 2).long()
        loss = outputs.loss + self.example_mean(nn.functional.cross_entropy(logits, target, reduction="none"))
        return (loss, outputs) if return_outputs else loss


@pytest.mark.parametrize(("setting", "extra"), [("packing", {}), ("padding_free", {"max_length": None})])
def test_settings_that_merge_rows_are_refused_when_columns_are_carried(tiny_model, tmp_path, setting, extra):
    args = sgd_args(tmp_path, WeightedSFTConfig, **{setting: True, **extra})
    with pytest.raises(ConfigError, match=rf"{setting}=True merges rows .* \['weight'\] .* `{setting}: false`"):
        WeightedSFTTrainer(model=str(tiny_model), args=args, train_dataset=Dataset.from_dict(ROWS))


def test_carried_columns_leave_the_examples_as_they_were():
    examples = [{"input_ids": [1, 2], "weight": 0.5}, {"input_ids": [3], "weight": 2.0}]
    collator = CarryColumnsCollator(lambda rows: {"n": len(rows), "keys": sorted(rows[0])}, ["weight"])
    for _ in range(2):  # a dataset may hand out the same dicts again next epoch
        batch = collator(examples)
        assert batch["keys"] == ["input_ids"] and batch["weight"].tolist() == [0.5, 2.0]
    assert examples[0] == {"input_ids": [1, 2], "weight": 0.5}


def head_trainer(tiny_model, output_dir, **overrides):
    settings = dict(max_steps=2, learning_rate=0.1, per_device_train_batch_size=2, save_strategy="steps", save_steps=1)
    args = sgd_args(output_dir, **{**settings, **overrides})
    return HeadSFTTrainer(model=str(tiny_model), args=args, train_dataset=Dataset.from_dict(ROWS))


def test_heads_are_trained_saved_apart_and_restored_on_resume(tiny_model, tmp_path):
    straight = head_trainer(tiny_model, tmp_path / "straight")
    initial = {k: v.clone() for k, v in straight.heads.state_dict().items()}
    straight.train()
    final_losses = [log["loss"] for log in straight.state.log_history if "loss" in log]
    assert not torch.equal(initial["linear.weight"], straight.heads.linear.weight.detach()), "head not trained"

    checkpoint = tmp_path / "straight" / "checkpoint-1"
    saved = load_file(checkpoint / HEADS_FILE)
    assert set(saved) == {"linear.weight", "linear.bias"}
    model_keys = load_file(checkpoint / "model.safetensors")
    assert not any("trl_causal_heads" in k for k in model_keys), "heads leaked into the model's own checkpoint"

    resumed = head_trainer(tiny_model, tmp_path / "resumed")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    resumed_losses = [log["loss"] for log in resumed.state.log_history if "loss" in log]
    assert resumed_losses[-1] == pytest.approx(final_losses[-1], rel=1e-5)
    torch.testing.assert_close(resumed.heads.linear.weight, straight.heads.linear.weight)


def test_resume_from_a_checkpoint_without_heads_or_with_other_optimizer_groups_fails_clearly(tiny_model, tmp_path):
    trainer = head_trainer(tiny_model, tmp_path / "a", max_steps=1)
    trainer.train()
    checkpoint = tmp_path / "a" / "checkpoint-1"
    heads = (checkpoint / HEADS_FILE).read_bytes()
    os.remove(checkpoint / HEADS_FILE)
    with pytest.raises(ConfigError, match=rf"checkpoint-1 holds no {HEADS_FILE}, .* trained with settings that build none"):
        head_trainer(tiny_model, tmp_path / "b").train(resume_from_checkpoint=str(checkpoint))
    # an optimizer saved with other parameter groups (e.g. deconfounded_reward's mode: covariate adds its head's)
    (checkpoint / HEADS_FILE).write_bytes(heads)
    optimizer = torch.load(checkpoint / "optimizer.pt", weights_only=False)
    optimizer["param_groups"][0]["params"].pop()
    torch.save(optimizer, checkpoint / "optimizer.pt")
    with pytest.raises(ConfigError, match=r"optimizer saved in .*checkpoint-1 has other parameter groups than this run's"):
        head_trainer(tiny_model, tmp_path / "c").train(resume_from_checkpoint=str(checkpoint))


def test_a_save_without_gathered_weights_writes_no_empty_heads_file(tiny_model, tmp_path):
    # DeepSpeed ZeRO-3 without stage3_gather_16bit_weights_on_model_save calls _save with an empty state_dict.
    trainer = head_trainer(tiny_model, tmp_path / "out", max_steps=1)
    trainer._save(str(tmp_path / "ungathered"), state_dict={})
    assert not (tmp_path / "ungathered" / HEADS_FILE).exists()
    trainer._save(str(tmp_path / "gathered"))
    assert set(load_file(tmp_path / "gathered" / HEADS_FILE)) == {"linear.weight", "linear.bias"}


INVARIANCE = {"mode": "invariance", "numeric_confounders": ["c"], "per_device_train_batch_size": 4}


@pytest.mark.parametrize(
    ("config_class", "settings", "metric", "greater_is_better"),
    [
        (LatentShiftConfig, {}, "loss_adj", False),
        (LatentShiftConfig, {}, "eval_loss_causal", False),
        (LatentShiftConfig, {}, "loss_sft", False),
        (LatentShiftConfig, {"greater_is_better": True}, "loss_adj", True),  # the user's own choice stays
        (LatentShiftConfig, {}, "mean_token_accuracy", True),
        (DeconfoundedRewardConfig, INVARIANCE, "confounder_corr2", False),
        (DeconfoundedRewardConfig, INVARIANCE, "eval_confounder_corr2", False),
        (DeconfoundedRewardConfig, INVARIANCE, "mean_reward", True),
    ],
)
def test_the_best_of_a_lower_is_better_term_is_its_lowest(tmp_path, config_class, settings, metric, greater_is_better):
    """transformers takes a metric whose name does not end in "loss" as greater-is-better: load_best_model_at_end
    kept the worst checkpoint by loss_adj or confounder_corr2."""
    args = config_class(**cpu_training_args(tmp_path, metric_for_best_model=metric, **settings))
    assert args.greater_is_better is greater_is_better
