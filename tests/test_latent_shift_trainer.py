"""The latent_shift trainer on the tiny model: CLI, loss terms, frozen views, resume, bad input, predictor."""

from __future__ import annotations

import json
import math
import os
import warnings

import pytest
import torch
from datasets import Dataset, IterableDataset
from peft import LoraConfig
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import base_config, cpu_training_args, run_cli, write_config, write_jsonl
from trl_causal import cli
from trl_causal.configuration import parse_run_config, read_yaml
from trl_causal.errors import ConfigError, DataError
from trl_causal.evaluation import LMPredictor
from trl_causal.latent_shift import generate_shift_dataset, to_prompt_completion
from trl_causal.train import SUMMARY_FILE
from trl_causal.trainer.latent_shift_config import LatentShiftConfig
from trl_causal.trainer.latent_shift_trainer import LATENT_SHIFT_FILE, LatentShiftPredictor, LatentShiftTrainer, answers_of_classes
from trl_causal.trainer.mixins import HEADS_FILE

ANSWERS = ["negative", "positive"]
LORA = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")


pytestmark = pytest.mark.usefixtures("single_thread")


def shift_rows(n: int = 8, agreement: float = 0.9, seed: int = 0) -> list[dict]:
    """Prompt/completion rows of the shift benchmark with a short instruction."""
    return to_prompt_completion(generate_shift_dataset(n, agreement, seed=seed), instruction="{text}\nSentiment:")


def make_trainer(tiny_model, output_dir, rows=None, peft_config=None, trainer_kwargs=None, **overrides) -> LatentShiftTrainer:
    settings = dict(max_steps=1, per_device_train_batch_size=4, learning_rate=1e-2, lr_scheduler_type="constant", n_patches=4, label_column="label")
    args = LatentShiftConfig(**cpu_training_args(output_dir, **{**settings, **overrides}))
    dataset = rows if isinstance(rows, IterableDataset) else Dataset.from_list(rows if rows is not None else shift_rows())
    return LatentShiftTrainer(model=str(tiny_model), args=args, train_dataset=dataset, peft_config=peft_config, **(trainer_kwargs or {}))


def step_logs(trainer) -> list[dict]:
    return [log for log in trainer.state.log_history if "loss" in log]


@pytest.mark.slow
def test_cli_trains_with_lora_on_two_processes_saves_the_heads_and_evaluates(tiny_model, tmp_path):
    """`trl-causal train` with 2-process DDP over gloo: the frozen forward (adapters disabled, no grad) and the heads
    run through the wrapped model; the checkpoints hold the heads; `trl-causal eval` uses the adjusted predictor.
    Evaluation with uneven batches (3 rows, 2 per batch, `even_batches: false`) gives one process a batch of one row,
    which has no L_adj: it still joins the other's gathers (they fell out of step and failed)."""
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "train.jsonl", shift_rows(16))
    write_jsonl(tmp_path / "data" / "test.jsonl", shift_rows(3, seed=2))
    test = write_jsonl(tmp_path / "test.jsonl", shift_rows(6, agreement=0.1, seed=1))
    out = tmp_path / "out"
    settings = base_config(
        tiny_model, tmp_path / "data", out, save_strategy="steps", save_steps=1, num_processes=2, multi_gpu=True,
        main_process_port=29533, eval_strategy="steps", eval_steps=2, per_device_eval_batch_size=2,
        accelerator_config={"even_batches": False},
    )
    lora = {"use_peft": True, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0}
    config = write_config(tmp_path / "cfg.yaml", {"trainer": "latent_shift", **settings, **lora, "n_patches": 4})
    result = run_cli("train", "--config", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["world_size"] == 2
    evaluation = [entry for entry in json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"] if "eval_loss" in entry]
    assert evaluation and math.isfinite(evaluation[0]["eval_loss_adj"])  # from the process whose batch had 2 rows
    for directory in (out / "checkpoint-1", out):
        assert set(load_file(directory / HEADS_FILE)) >= {"memory_bank.vectors", "adjusted_head.mlp.0.weight"}
        assert json.loads((directory / LATENT_SHIFT_FILE).read_text())["verbalizer"] == dict(zip(ANSWERS, ANSWERS))
    # the bank holds the rows of both processes (DDP broadcasts rank 0's buffers: rank 0 must have gathered them)
    assert int(load_file(out / HEADS_FILE)["memory_bank.num_seen"]) == summary["steps"] * 2 * settings["per_device_train_batch_size"]
    assert (out / "adapter_model.safetensors").is_file()

    assert cli.main(["eval", "--config", str(config), "--split", f"shift_10={test}", "--answer_column", "label"]) == 0
    report = json.loads((out / "eval_results.json").read_text())
    assert report["results"]["latent_shift:adjusted"]["splits"]["shift_10"]["n"] == 6
    # split_batches shares per_device_train_batch_size among the processes: 2 rows make 1 per process, which trained
    # L_SFT alone, then failed in DDP's backward; it is refused before training
    split = write_config(tmp_path / "split.yaml", {**read_yaml(config), "accelerator_config": {"split_batches": True}, "eval_strategy": "no"})
    result = run_cli("train", "--config", str(split))
    assert result.returncode != 0 and "split_batches divides per_device_train_batch_size=2 among the 2 processes" in result.stderr


def weight_deltas_after_one_sgd_step(tiny_model, output_dir, batch_size, accumulation) -> dict[str, torch.Tensor]:
    trainer = make_trainer(
        tiny_model,
        output_dir,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        optim="sgd",
        learning_rate=1.0,
        weight_decay=0.0,
        max_grad_norm=0.0,
        adjustment="shuffle_test",  # with per-example entropies, every term is a mean over rows
        entropy_mode="per_example",
    )
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    return {name: before[name] - p.detach() for name, p in trainer.model.named_parameters()}


def test_gradient_accumulation_2x2_equals_batch_4(tiny_model, tmp_path):
    accumulated = weight_deltas_after_one_sgd_step(tiny_model, tmp_path / "ga", batch_size=2, accumulation=2)
    full = weight_deltas_after_one_sgd_step(tiny_model, tmp_path / "full", batch_size=4, accumulation=1)
    assert any(delta.abs().max() > 1e-4 for name, delta in full.items() if "trl_causal_heads" in name)
    for name in full:
        torch.testing.assert_close(accumulated[name], full[name], atol=2e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("view", ["adapters", "reference"])
def test_frozen_view_stays_the_pretrained_model(tiny_model, tmp_path, view):
    peft_config = LoraConfig(**LORA) if view == "adapters" else None
    trainer = make_trainer(tiny_model, tmp_path, peft_config=peft_config, max_steps=2, frozen_view=view)
    assert (trainer.reference_model is None) == (view == "adapters")
    frozen = trainer.model if trainer.reference_model is None else trainer.reference_model
    frozen_weights = {n: p.detach().clone() for n, p in frozen.named_parameters() if "lora_" not in n and "trl_causal_heads" not in n}
    trainer.train()
    assert all(torch.equal(frozen_weights[n], p) for n, p in frozen.named_parameters() if n in frozen_weights)

    inputs = {"input_ids": torch.tensor([[5, 6, 7, 8, 9]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    pretrained = AutoModelForCausalLM.from_pretrained(tiny_model)(**inputs, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(trainer._frozen_last_hidden(trainer.model, inputs), pretrained.detach())
    with torch.no_grad():
        trained = trainer.model(**inputs, output_hidden_states=True).hidden_states[-1]
    assert not torch.allclose(trained, pretrained), "training changed nothing, so the test proves nothing"


def test_logs_the_token_metrics_sft_logs_with_the_same_values_where_they_agree(tiny_model, tmp_path):
    from trl import SFTConfig, SFTTrainer

    rows = shift_rows(16)
    trainer = make_trainer(tiny_model, tmp_path / "ls", rows=rows, max_steps=2, logging_steps=1)
    trainer.train()
    settings = dict(max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2, lr_scheduler_type="constant", logging_steps=1)
    sft = SFTTrainer(model=str(tiny_model), args=SFTConfig(**cpu_training_args(tmp_path / "sft", **settings)), train_dataset=Dataset.from_list(rows))
    sft.train()
    first, sft_first = step_logs(trainer)[0], step_logs(sft)[0]
    for key in ("entropy", "mean_token_accuracy", "num_tokens"):  # absent before: dashboards could not compare runs
        assert key in first, key
    assert first["num_tokens"] == sft_first["num_tokens"] and step_logs(trainer)[1]["num_tokens"] == step_logs(sft)[1]["num_tokens"]
    # the first step's predictions come from the same initial weights and batch: same entropy and accuracy
    assert first["entropy"] == pytest.approx(sft_first["entropy"], rel=1e-4)
    assert first["mean_token_accuracy"] == pytest.approx(sft_first["mean_token_accuracy"])


def test_resume_gives_the_same_next_loss_heads_and_memory_bank(tiny_model, tmp_path):
    settings = dict(max_steps=2, gradient_accumulation_steps=2, save_strategy="steps", save_steps=1)
    rows = shift_rows(16)  # 4 rows per batch: the derangement is a random draw
    straight = make_trainer(tiny_model, tmp_path / "straight", rows=rows, **settings)
    straight.train()
    resumed = make_trainer(tiny_model, tmp_path / "resumed", rows=rows, **settings)
    resumed.train(resume_from_checkpoint=str(tmp_path / "straight" / "checkpoint-1"))
    last_straight, last_resumed = step_logs(straight)[-1], step_logs(resumed)[-1]
    for key in ("loss", "loss_sft", "loss_causal", "loss_adj"):
        assert last_resumed[key] == pytest.approx(last_straight[key], rel=1e-5), key
    resumed_state = resumed.heads.state_dict()
    for name, value in straight.heads.state_dict().items():
        torch.testing.assert_close(resumed_state[name], value, msg=name)
    other_sizes = make_trainer(tiny_model, tmp_path / "other", rows=rows, d_phi=16, **settings)  # the config changed
    with pytest.raises(ConfigError, match=r"checkpoint-1 was trained with d_phi 32 \(now 16\): its heads and memory bank"):
        other_sizes.train(resume_from_checkpoint=str(tmp_path / "straight" / "checkpoint-1"))
    # settings that fit the saved tensors but would mix other patch features into the memory bank
    for changed, message in (
        (dict(n_patches=3), r"n_patches 4 \(now 3\)"),
        (dict(low_level_layer=1), r"low_level_layer 0 \(now 1\)"),
        (dict(memory_bank_size=16), r"memory_bank_size 1024 \(now 16\)"),
    ):
        with pytest.raises(ConfigError, match=rf"checkpoint-1 was trained with {message}"):
            make_trainer(tiny_model, tmp_path / "changed", rows=rows, **changed, **settings).train(
                resume_from_checkpoint=str(tmp_path / "straight" / "checkpoint-1")
            )
    # a checkpoint without the description (saved settings) is compared on nothing: it read as low_level_layer None
    import shutil

    bare = shutil.copytree(tmp_path / "straight" / "checkpoint-1", tmp_path / "bare" / "checkpoint-1")
    (bare / LATENT_SHIFT_FILE).unlink()
    make_trainer(tiny_model, tmp_path / "from-bare", rows=rows, **settings).train(resume_from_checkpoint=str(bare))
    reordered = dict(reversed(list(straight.verbalizer.items())))  # the same mapping: classes swapped without the check
    with pytest.raises(ConfigError, match=r"checkpoint-1 was trained with the verbalizer .* \(the same labels in another order\)"):
        make_trainer(tiny_model, tmp_path / "reordered", rows=rows, verbalizer=reordered, **settings).train(
            resume_from_checkpoint=str(tmp_path / "straight" / "checkpoint-1")
        )


def test_the_adapters_view_is_the_base_model_without_dropout(tiny_model, tmp_path):
    """With LoRA, R0 comes from the model with its adapters disabled, in eval mode like the reference copy: under
    train mode the base model's dropout made R0 differ from call to call (up to 2.6 on this model)."""
    dropped = tmp_path / "dropout"
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attention_dropout=0.5)
    model.save_pretrained(dropped)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(dropped)
    trainer = make_trainer(dropped, tmp_path / "out", peft_config=LoraConfig(**LORA))
    tokenizer = trainer.processing_class
    inputs = dict(tokenizer(["the food was good", "the service was bad"], return_tensors="pt", padding=True))
    trainer.model.train()
    first, second = (trainer._frozen_last_hidden(trainer.model, inputs) for _ in range(2))
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert trainer.model.training  # restored for the training forward
    base = AutoModelForCausalLM.from_pretrained(dropped).eval()
    with torch.no_grad():
        torch.testing.assert_close(first, base(**inputs, output_hidden_states=True).hidden_states[-1])


def test_resume_with_lora_restores_the_adapters_and_the_heads(tiny_model, tmp_path):
    settings = dict(max_steps=2, save_strategy="steps", save_steps=1)
    rows = shift_rows(16)
    straight = make_trainer(tiny_model, tmp_path / "straight", rows=rows, peft_config=LoraConfig(**LORA), **settings)
    straight.train()
    resumed = make_trainer(tiny_model, tmp_path / "resumed", rows=rows, peft_config=LoraConfig(**LORA), **settings)
    resumed.train(resume_from_checkpoint=str(tmp_path / "straight" / "checkpoint-1"))
    assert step_logs(resumed)[-1]["loss"] == pytest.approx(step_logs(straight)[-1]["loss"], rel=1e-5)
    for name, value in straight.heads.state_dict().items():
        torch.testing.assert_close(resumed.heads.state_dict()[name], value, msg=name)


def test_evaluation_keeps_every_row_even_a_last_batch_of_one(tiny_model, tmp_path):
    trainer = make_trainer(tiny_model, tmp_path, per_device_eval_batch_size=8)
    three_rows = Dataset.from_list(shift_rows(3, seed=1))
    assert math.isfinite(trainer.evaluate(three_rows)["eval_loss"])  # 3 rows < one batch of 8: none may be dropped
    trainer.args.per_device_eval_batch_size = 2  # batches of 2 and 1: the last is scored by L_SFT alone
    assert math.isfinite(trainer.evaluate(three_rows)["eval_loss"])
    assert trainer.args.dataloader_drop_last  # training still drops a last batch of one


def test_eval_loss_sft_is_sfts_eval_loss_and_the_eval_terms_are_weighted_by_rows(tiny_model, tmp_path, monkeypatch):
    """On the same weights and rows, eval_loss_sft is SFTTrainer's eval_loss, which weights each batch by its rows
    and counts a last batch of one row (batches were averaged unweighted, and that row was left out); L_C and L_adj
    are weighted by rows too."""
    from trl import SFTConfig, SFTTrainer

    rows = Dataset.from_list(shift_rows(5, seed=1))
    args = SFTConfig(**cpu_training_args(tmp_path / "sft", per_device_eval_batch_size=2))
    sft = SFTTrainer(model=str(tiny_model), args=args, train_dataset=Dataset.from_list(shift_rows()))
    trainer = make_trainer(tiny_model, tmp_path / "ls", per_device_eval_batch_size=2)  # batches of 2, 2 and 1 rows
    assert trainer.evaluate(rows)["eval_loss_sft"] == pytest.approx(sft.evaluate(rows)["eval_loss"], rel=1e-6)
    adjusted, log_losses = [], trainer._log_losses

    def recording_log_losses(mode, loss_sft, auxiliary):
        adjusted.append(auxiliary.adjusted.item())
        log_losses(mode, loss_sft, auxiliary)

    monkeypatch.setattr(trainer, "_log_losses", recording_log_losses)
    trainer.args.per_device_eval_batch_size = 3  # batches of 3 and 2 rows
    assert trainer.evaluate(rows)["eval_loss_adj"] == pytest.approx((3 * adjusted[0] + 2 * adjusted[1]) / 5, rel=1e-6)


def test_evaluation_shuffles_the_same_way_every_time(tiny_model, tmp_path):
    rows = Dataset.from_list(shift_rows(8, seed=1))
    trainer = make_trainer(tiny_model, tmp_path, per_device_eval_batch_size=4)
    first = trainer.evaluate(rows)
    torch.manual_seed(123)  # whatever the global RNG holds
    assert trainer.evaluate(rows)["eval_loss_adj"] == first["eval_loss_adj"]


def test_evaluate_takes_raw_rows_and_reads_their_labels_from_the_completions(tiny_model, tmp_path):
    """As SFTTrainer.evaluate prepares raw rows passed to it, latent_shift adds their labels (label_column unset)."""
    trainer = make_trainer(tiny_model, tmp_path, label_column=None)
    test_rows = Dataset.from_list(shift_rows(4, seed=1))
    assert math.isfinite(trainer.evaluate(test_rows)["eval_loss_adj"])
    metrics = trainer.evaluate({"shift_10": Dataset.from_list(shift_rows(4, agreement=0.1, seed=2)), "shift_90": test_rows})
    assert math.isfinite(metrics["eval_shift_10_loss"]) and math.isfinite(metrics["eval_shift_90_loss"])
    bad = shift_rows(4, seed=1)
    bad[2]["completion"] = " neutral"
    with pytest.raises(DataError, match=r"The evaluation 'eval' split has labels that are not in the verbalizer .* in 1 row \(row 2\); row 2 has 'neutral'"):
        trainer.evaluate(Dataset.from_list(bad))


def test_compute_metrics_gets_the_labels(tiny_model, tmp_path):
    seen = []

    def compute_metrics(prediction):
        seen.append(prediction.label_ids)
        return {"rows": float(len(prediction.label_ids))}

    eval_rows = Dataset.from_list(shift_rows(4, seed=1))
    trainer = make_trainer(tiny_model, tmp_path, trainer_kwargs={"eval_dataset": eval_rows, "compute_metrics": compute_metrics})
    assert trainer.evaluate()["eval_rows"] == 4.0
    assert seen and seen[0].shape[0] == 4 and (seen[0] != -100).any()  # the LM labels, completion tokens unmasked


def test_the_pooled_prompt_of_a_conversation_is_everything_before_its_last_trained_answer():
    from trl_causal.latent_shift import prompt_token_mask

    ignored = -100  # user "Hi" | assistant "Sure" (trained) | user <review> | assistant "positive" (trained) | padding
    labels = torch.tensor([[ignored, ignored, 5, 6, ignored, ignored, 7, 8, ignored], [ignored, ignored, ignored, 4, 4, ignored, ignored, ignored, ignored]])
    attention = torch.tensor([[1] * 9, [1] * 7 + [0, 0]])
    assert prompt_token_mask(labels, attention).int().tolist() == [
        [1, 1, 1, 1, 1, 1, 0, 0, 0],  # the review (positions 4-5) is pooled, not only the first user turn
        [1, 1, 1, 0, 0, 0, 0, 0, 0],
    ]


def test_a_streamed_training_set_ending_in_one_row_trains_that_batch_by_sft_alone(tiny_model, tmp_path, caplog):
    rows = shift_rows(5)  # batches of 4 and 1: a stream's last batch cannot be dropped by a sampler
    stream = IterableDataset.from_generator(lambda: iter(rows))
    trainer = make_trainer(tiny_model, tmp_path, rows=stream, max_steps=3, verbalizer=dict(zip(ANSWERS, ANSWERS)))
    trainer.train()
    losses = step_logs(trainer)
    assert len(losses) == 3 and all(math.isfinite(log["loss"]) for log in losses)
    assert "(the end of a streamed dataset;" in caplog.text
    # rows in memory leave a last batch of one only when the user keeps it: the warning names that setting
    caplog.clear()
    make_trainer(tiny_model, tmp_path / "kept", rows=rows, max_steps=2, dataloader_drop_last=False).train()
    assert "a training batch of one row" in caplog.text and "`dataloader_drop_last: false`" in caplog.text
    assert "streamed" not in caplog.text


def test_label_smoothing_applies_to_l_sft_as_sft_applies_it(tiny_model, tmp_path):
    from trl import SFTConfig, SFTTrainer

    rows = shift_rows(8)
    settings = dict(max_steps=1, per_device_train_batch_size=4, learning_rate=1e-2, lr_scheduler_type="constant", label_smoothing_factor=0.5)
    sft = SFTTrainer(model=str(tiny_model), args=SFTConfig(**cpu_training_args(tmp_path / "sft", **settings)), train_dataset=Dataset.from_list(rows))
    sft.train()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        smoothed = make_trainer(tiny_model, tmp_path / "smoothed", rows=rows, label_smoothing_factor=0.5)
    assert not [w for w in caught if "label_smoothing_factor" in str(w.message)]  # TRL's "extra forward pass": not here
    smoothed.train()
    plain = make_trainer(tiny_model, tmp_path / "plain", rows=rows)
    plain.train()
    assert step_logs(smoothed)[0]["loss_sft"] == pytest.approx(step_logs(sft)[0]["loss"], rel=1e-5)
    assert step_logs(smoothed)[0]["loss_sft"] != pytest.approx(step_logs(plain)[0]["loss_sft"], rel=1e-4)


def test_evaluating_during_training_leaves_the_training_losses_as_they_were(tiny_model, tmp_path):
    """The training shuffles come from their own seeded generator: an evaluation's data loader, which draws from the
    global RNG, does not move them."""
    rows, held_out = shift_rows(16), Dataset.from_list(shift_rows(4, seed=1))
    settings = dict(max_steps=3, logging_steps=1)
    quiet = make_trainer(tiny_model, tmp_path / "quiet", rows=rows, **settings)
    quiet.train()
    evaluated = make_trainer(tiny_model, tmp_path / "evaluated", rows=rows, eval_strategy="steps", eval_steps=2, trainer_kwargs={"eval_dataset": held_out}, **settings)
    evaluated.train()
    assert any("eval_loss_adj" in log for log in evaluated.state.log_history)
    for log, evaluated_log in zip(step_logs(quiet), step_logs(evaluated), strict=True):
        for key in ("loss", "loss_adj", "loss_causal"):
            assert evaluated_log[key] == pytest.approx(log[key], rel=1e-6), (log["step"], key)


def test_the_best_model_has_the_lowest_loss_adj_and_reloads_with_its_heads_and_no_warning_that_they_are_missing(tiny_model, tmp_path, monkeypatch):
    """load_best_model_at_end loaded the checkpoint with the heads on the model: transformers listed every head
    weight as missing from the checkpoint, just before load_heads restored them from their own file. The best of
    `metric_for_best_model: loss_adj` is its lowest (transformers takes a name not ending in "loss" as greater-is-better)."""
    from transformers import Trainer

    missing = []
    monkeypatch.setattr(Trainer, "_issue_warnings_after_load", lambda self, result: missing.extend(result.missing_keys))
    held_out = Dataset.from_list(shift_rows(4, seed=1))
    trainer = make_trainer(
        tiny_model, tmp_path, rows=shift_rows(16), max_steps=2, eval_strategy="steps", eval_steps=1, save_strategy="steps",
        save_steps=1, load_best_model_at_end=True, metric_for_best_model="loss_adj", trainer_kwargs={"eval_dataset": held_out},
    )
    trainer.train()
    evaluated = {log["step"]: log["eval_loss_adj"] for log in trainer.state.log_history if "eval_loss_adj" in log}
    assert len(set(evaluated.values())) == 2
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{min(evaluated, key=evaluated.get)}"), evaluated
    assert not [key for key in missing if "trl_causal_heads" in key], missing
    best = load_file(os.path.join(trainer.state.best_model_checkpoint, HEADS_FILE))
    for name, value in trainer.heads.state_dict().items():
        torch.testing.assert_close(value, best[name])


def test_streamed_rows_are_checked_against_the_verbalizer_as_they_are_drawn(tiny_model, tmp_path):
    rows = shift_rows(8)
    rows[5]["completion"] = " negative" if rows[5]["label"] == "positive" else " positive"  # the other label's answer
    stream = IterableDataset.from_generator(lambda: iter(rows))
    trainer = make_trainer(tiny_model, tmp_path, rows=stream, max_steps=3, verbalizer=dict(zip(ANSWERS, ANSWERS)))
    with pytest.raises(DataError, match=r"In 1 row of the training split \(row 5\) the completion is not the label's verbalizer answer"):
        trainer.train()


# ---------------------------------------------------------------- bad input


def test_an_optimizer_passed_in_is_refused_since_the_heads_would_not_train(tiny_model, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with pytest.raises(ConfigError, match=r"LatentShiftTrainer trains heads.*optimizer_cls_and_kwargs"):
        LatentShiftTrainer(
            model=model,
            args=LatentShiftConfig(**cpu_training_args(tmp_path, per_device_train_batch_size=4, n_patches=4, label_column="label")),
            train_dataset=Dataset.from_list(shift_rows()),
            optimizers=(optimizer, None),
        )
    trainer = make_trainer(tiny_model, tmp_path, trainer_kwargs={"optimizer_cls_and_kwargs": (torch.optim.AdamW, {"lr": 1e-2})})
    before = {name: value.clone() for name, value in trainer.heads.named_parameters()}
    trainer.train()
    assert all(not torch.equal(before[name], value) for name, value in trainer.heads.named_parameters())


def test_messages_rows_without_a_label_column_name_the_setting(tiny_model, tmp_path, capsys):
    rows = [{"messages": [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}]} for row in shift_rows()]
    with pytest.raises(ConfigError, match=r"training rows have no 'completion' column \(columns: messages\).*set label_column"):
        make_trainer(tiny_model, tmp_path, rows=rows, label_column=None, assistant_only_loss=True)
    data = write_jsonl(tmp_path / "chat.jsonl", rows)  # the command line checks the columns before the trainer does
    config = write_config(tmp_path / "cfg.yaml", {"trainer": "latent_shift", **base_config(tiny_model, data, tmp_path / "out", assistant_only_loss=True)})
    assert cli.main(["train", "--config", str(config)]) == 2
    assert "`messages` rows need `label_column`" in capsys.readouterr().err


@pytest.mark.parametrize(
    "make_rows, settings, expected",
    [
        (lambda rows: [{"messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}],
                        "label": r["label"]} for r in rows], {}, r"needs: prompt\+completion\. It has: label, messages\..*`messages` rows need `label_column` .*, `assistant_only_loss: true`"),
        (lambda rows: [{"text": r["prompt"] + r["completion"], "label": r["label"]} for r in rows], {}, r"needs: prompt\+completion\. It has: label, text"),
        (lambda rows: [{**r, "sentiment_label": r["label"]} for r in rows], {"label_column": "sentiment"},
         r"needs: sentiment \(from label_column\) \(did you mean 'sentiment_label'"),
    ],
    ids=["messages-without-assistant-only-loss", "text-only", "misspelt-label-column"],
)
def test_rows_without_a_prompt_or_the_label_column_are_refused_before_the_model_loads(tmp_path, make_rows, settings, expected):
    # the model path does not exist: the rows must be refused before it is read
    with pytest.raises(DataError, match=expected):
        make_trainer(tmp_path / "no-model", tmp_path, rows=make_rows(shift_rows()), **settings)



@pytest.mark.parametrize(
    "label_column, source", [("label", "column 'label'"), (None, "its completion")], ids=["label-column", "completion"]
)
def test_label_outside_the_verbalizer_names_the_row(tiny_model, tmp_path, label_column, source):
    rows = shift_rows()
    for row in (3, 7):
        rows[row].update(label="neutral", completion=" neutral")
    verbalizer = {"pos": "positive", "neg": "negative"} if label_column is None else {"positive": "positive", "negative": "negative"}
    labels = ", ".join(map(repr, verbalizer))
    with pytest.raises(DataError, match=rf"The training split has labels that are not in the verbalizer \(labels: {labels}\) in 2 rows \(rows \[3, 7\]\); row 3 has 'neutral' \({source}\)"):
        make_trainer(tiny_model, tmp_path, rows=rows, verbalizer=verbalizer, label_column=label_column)


@pytest.mark.parametrize(
    "completions, message",
    [
        ({5: None}, r"Row 5 of the training rows: its completion is empty \(null\)"),
        (dict.fromkeys(range(8), 7), r"Row 0 of the training rows: its completion must be a text or a list of messages .* it is int '7'"),
        (dict.fromkeys(range(8), [" positive"]), r"Row 0 of the training rows: .* it is list \"\[' positive'\]\""),
    ],
    ids=["null", "int", "list of texts"],
)
@pytest.mark.parametrize("label_column", ["label", None], ids=["label-column", "completion"])
def test_a_completion_that_is_neither_text_nor_messages_names_the_row(tmp_path, completions, message, label_column):
    rows = [dict(row, completion=completions.get(index, row["completion"])) for index, row in enumerate(shift_rows())]
    verbalizer = {"positive": " positive", "negative": " negative"}
    with pytest.raises(DataError, match=message):  # before any model loads
        make_trainer(tmp_path / "no-model-here", tmp_path, rows=rows, verbalizer=verbalizer, label_column=label_column)


def test_colliding_verbalizer_answers_are_rejected(tiny_model, tmp_path):
    verbalizer = {"positive": "True", "negative": "True story"}
    rows = [{**row, "completion": " " + verbalizer[row["label"]]} for row in shift_rows()]
    with pytest.raises(ConfigError, match=r"the tokens of 'True' \[\d+(, \d+)*\] are a prefix of those of 'True story'"):
        make_trainer(tiny_model, tmp_path, rows=rows, verbalizer=verbalizer)


def test_answers_that_share_only_their_first_tokens_train_and_are_told_apart(tiny_model, tmp_path):
    verbalizer = {"positive": "very positive", "negative": "very negative"}
    rows = [{**row, "completion": " " + verbalizer[row["label"]]} for row in shift_rows()]
    trainer = make_trainer(tiny_model, tmp_path, rows=rows, verbalizer=verbalizer)
    trainer.train()
    trainer.save_model(str(tmp_path))
    model, tokenizer = AutoModelForCausalLM.from_pretrained(tmp_path).eval(), AutoTokenizer.from_pretrained(tmp_path)
    predictor = LatentShiftTrainer.build_predictor(trainer.args, model, tokenizer, list(verbalizer.values()), checkpoint_dir=str(tmp_path))
    test_rows = [{**row, "completion": " " + verbalizer[row["label"]]} for row in shift_rows(6, seed=3)]
    scores = predictor.score(predictor.prepare_prompts(test_rows), predictor.answer_prefixes(test_rows))
    assert not torch.equal(scores[:, 0], scores[:, 1])  # the answers' last tokens separate them


def test_a_boolean_label_column_takes_a_yaml_boolean_verbalizer_and_says_how_labels_compare(tmp_path):
    from trl_causal.latent_shift.labels import check_labels

    rows = Dataset.from_list([{"is_positive": row["label"] == "positive", "completion": " " + row["label"]} for row in shift_rows()])
    verbalizer = LatentShiftConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, verbalizer={True: "positive", False: "negative"}).verbalizer
    assert verbalizer == {"True": "positive", "False": "negative"}  # YAML's `true: positive` names the labels of a bool column
    check_labels(rows, "is_positive", verbalizer, "training")
    with pytest.raises(DataError, match=r"Labels compare as text: write 'True', not 'true'"):
        check_labels(rows, "is_positive", {"true": "positive", "false": "negative"}, "training")
    with pytest.raises(DataError, match=r"YAML reads unquoted yes/no/true/false labels as booleans"):
        check_labels(Dataset.from_list([{"y": "yes", "completion": " positive"}]), "y", verbalizer, "training")


def test_a_completion_that_is_not_its_labels_verbalizer_answer_names_the_row(tiny_model, tmp_path):
    rows = shift_rows()
    rows[5]["completion"] = " positive" if rows[5]["label"] == "negative" else " negative"
    with pytest.raises(DataError, match=rf"In 1 row of the training split \(row 5\) the completion is not the label's verbalizer answer: row 5 has label '{rows[5]['label']}' \(column 'label'\)"):
        make_trainer(tiny_model, tmp_path, rows=rows, verbalizer=dict(zip(ANSWERS, ANSWERS)))
    messages = [{"messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}],
                 "label": r["label"]} for r in rows]
    with pytest.raises(DataError, match=rf"\(row 5\) the last message is not the label's verbalizer answer: row 5 has label '{rows[5]['label']}'"):
        make_trainer(tmp_path / "no-model", tmp_path, rows=messages, verbalizer=dict(zip(ANSWERS, ANSWERS)), assistant_only_loss=True)


def test_a_class_column_named_like_a_trl_input_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"label_column='labels' is a column TRL reads.*class_label"):
        LatentShiftConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, label_column="labels")


@pytest.mark.parametrize(
    "answers, expected",
    [
        (["1", "2", "3"], ["1", "2", "3"]),  # the verbalizer's answers (e.g. --answer_column completion)
        (["2", "0", "1"], ["0", "1", "2"]),  # the labels (--answer_column label): not class 1 -> "1" of the answers
    ],
)
def test_each_class_is_named_in_one_answer_space(answers, expected):
    verbalizer = {"0": "1", "1": "2", "2": "3"}  # star ratings: labels 0-2 answered "1"-"3"
    assert answers_of_classes(verbalizer, answers) == expected
    with pytest.raises(ConfigError, match=r"neither every verbalizer answer.*--answers 1,2,3"):
        answers_of_classes(verbalizer, ["1", "3"])


def test_batch_size_one_is_rejected_from_the_yaml(tiny_model, tmp_path):
    settings = base_config(tiny_model, tmp_path / "data.jsonl", tmp_path / "out", per_device_train_batch_size=1)
    config = write_config(tmp_path / "cfg.yaml", {"trainer": "latent_shift", **settings})
    with pytest.raises(ConfigError, match=r"per_device_train_batch_size=1: latent_shift needs at least 2 rows.*shuffle"):
        parse_run_config([], str(config))


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"adjustment": "shuffle"}, "adjustment='shuffle'"),
        ({"frozen_view": "copy"}, "frozen_view='copy'"),
        ({"n_patches": 0}, "n_patches=0"),
        ({"lambda_adj": -1.0}, "lambda_adj=-1.0"),
        ({"heads_learning_rate": 0.0}, "heads_learning_rate=0.0"),
        ({"verbalizer": "positive"}, "verbalizer is 'positive', which is no mapping of labels to answer texts .* In the YAML write a mapping"),
        ({"verbalizer": {"a": "yes", "b": "yes"}}, "the same answer 'yes'"),
        ({"verbalizer": {"positive": True, "negative": False}}, "answers with a boolean: YAML reads unquoted yes/no"),
        ({"completion_only_loss": False}, "completion_only_loss=False"),
        ({"neftune_noise_alpha": 5.0}, "neftune_noise_alpha=5.0: NEFTune adds noise to the embedding layer's output"),
        (  # a batch of one row logs no L_adj: the best-model choice failed with transformers' KeyError at the first eval
            {"metric_for_best_model": "eval_loss_adj", "per_device_eval_batch_size": 1},
            "metric_for_best_model: eval_loss_adj is not logged with per_device_eval_batch_size=1",
        ),
    ],
)
def test_bad_settings_name_the_field(tmp_path, overrides, field):
    with pytest.raises(ConfigError, match=field):
        LatentShiftConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, **overrides)


@pytest.mark.parametrize("heads_lr", [0.05, None])
def test_heads_train_at_their_own_learning_rate(tiny_model, tmp_path, heads_lr):
    trainer = make_trainer(tiny_model, tmp_path, heads_learning_rate=heads_lr, learning_rate=1e-3, weight_decay=0.1)
    trainer.train()
    heads = {id(p) for p in trainer.heads.parameters()}
    model_params = {id(p) for n, p in trainer.model.named_parameters() if p.requires_grad and id(p) not in heads}
    in_groups = [(id(p), group["lr"], group["weight_decay"]) for group in trainer.optimizer.param_groups for p in group["params"]]
    assert sorted(i for i, _, _ in in_groups) == sorted(heads | model_params)  # every trainable tensor, once
    assert {lr for i, lr, _ in in_groups if i in heads} == {heads_lr or 1e-3}
    assert {lr for i, lr, _ in in_groups if i in model_params} == {1e-3}
    assert {decay for i, _, decay in in_groups if i in heads} == {0.0, 0.1}  # the decay split survives


def test_more_patches_than_prompt_tokens_fall_back_and_are_counted(tiny_model, tmp_path):
    rows = shift_rows(8)
    trainer = make_trainer(tiny_model, tmp_path, rows=rows, n_patches=10_000, max_steps=2)
    trainer.train()
    assert [log["patch_fallback_rows"] for log in step_logs(trainer)] == [4, 8]
    evaluations = [trainer.evaluate(Dataset.from_list(rows[:4]))["eval_patch_fallback_rows"] for _ in range(2)]
    assert evaluations == [4, 4]  # each evaluation counts its own rows (the second said 8)


def test_logged_loss_sft_does_not_depend_on_how_the_batch_is_split(tiny_model, tmp_path):
    """TRL's `loss` is the token mean over the accumulated batch; loss_sft averaged each micro-batch's own mean, so
    8 rows as 4 x 2 logged another L_SFT than as 8 x 1 (answers of different lengths), on the same gradients."""
    verbalizer = {"positive": "good", "negative": "bad, and not good at all"}
    labels = ["positive"] * 7 + ["negative"]  # whichever micro-batch holds the negative row has more answer tokens
    rows = [dict(row, label=label, completion=" " + verbalizer[label]) for row, label in zip(shift_rows(8), labels)]
    first_logs = []
    for size in (8, 4):
        trainer = make_trainer(
            tiny_model, tmp_path / str(size), rows=rows, per_device_train_batch_size=size,
            gradient_accumulation_steps=8 // size, verbalizer=verbalizer,
        )
        trainer.train()
        first_logs.append(step_logs(trainer)[0])
    whole, split = first_logs
    assert split["loss_sft"] == pytest.approx(whole["loss_sft"], rel=1e-5)


def test_adapters_view_without_peft_is_rejected(tiny_model, tmp_path):
    with pytest.raises(ConfigError, match=r"frozen_view='adapters'.*no PEFT adapters.*use_peft"):
        make_trainer(tiny_model, tmp_path, frozen_view="adapters")


@pytest.mark.parametrize(
    "low_level_layer, low_level_size, lora",
    [(0, 32, None), (2, 16, None), (0, 32, {"modules_to_save": ["lm_head"]})],  # TRL refuses LoRA on lm_head itself
)
def test_heads_take_the_widths_a_projecting_model_returns(tiny_model, tmp_path, low_level_layer, low_level_size, lora):
    """OPT (e.g. opt-350m) projects its last hidden state to word_embed_proj_dim before the LM head: the causal head
    reads that width (also where PEFT wraps the LM head), the low-level encoder the width of its layer; the checkpoint
    predicts with them."""
    from transformers import OPTConfig, OPTForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    config = OPTConfig(
        vocab_size=len(tokenizer), hidden_size=32, word_embed_proj_dim=16, ffn_dim=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    opt = tmp_path / "opt"
    OPTForCausalLM(config).save_pretrained(opt)
    tokenizer.save_pretrained(opt)
    peft_config = None if lora is None else LoraConfig(**{**LORA, **lora})
    trainer = make_trainer(opt, tmp_path / "out", max_steps=2, low_level_layer=low_level_layer, peft_config=peft_config)
    assert (trainer.heads.config["hidden_size"], trainer.heads.config["low_level_size"]) == (16, low_level_size)
    trainer.train()
    assert all(math.isfinite(log["loss_adj"]) for log in step_logs(trainer))
    out = tmp_path / "out"
    trainer.save_model(str(out))
    model, tokenizer = AutoModelForCausalLM.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    predictor = LatentShiftTrainer.build_predictor(trainer.args, model, tokenizer, ANSWERS, checkpoint_dir=str(out))
    assert set(predictor.predict(shift_rows(3, seed=1))) <= set(ANSWERS)


# ---------------------------------------------------------------- prediction


@pytest.fixture(scope="module")
def trained_checkpoint(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("latent_shift")
    trainer = make_trainer(tiny_model, out, max_steps=2)
    trainer.train()
    trainer.save_model(str(out))
    return trainer.args, out


def test_predictor_is_deterministic_and_predicts_one_row_at_a_time_from_the_bank(trained_checkpoint):
    args, out = trained_checkpoint
    model, tokenizer = AutoModelForCausalLM.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    predictor = LatentShiftTrainer.build_predictor(args, model, tokenizer, ANSWERS, checkpoint_dir=str(out))
    assert isinstance(predictor, LatentShiftPredictor) and isinstance(predictor, LMPredictor)
    rows = shift_rows(6, agreement=0.1, seed=3)

    probabilities = predictor.adjusted_probabilities(rows)
    assert probabilities.shape == (6, 2)
    torch.testing.assert_close(probabilities.sum(1), torch.ones(6))
    assert torch.equal(predictor.adjusted_probabilities(rows), probabilities)
    predictor.batch_size = 1
    torch.testing.assert_close(predictor.adjusted_probabilities(rows), probabilities)
    other_seed = LatentShiftTrainer.build_predictor(args, model, tokenizer, ANSWERS, checkpoint_dir=str(out), seed=1)
    assert not torch.equal(other_seed.adjusted_probabilities(rows), probabilities)
    # a row's Phi' draws are its own: alone, or after other rows, it gets the same probabilities (the draws of one
    # generator per call gave row i those after the rows before it: eval's accuracy was not one-at-a-time serving's)
    predictor.batch_size = 16
    alone = torch.cat([predictor.adjusted_probabilities([row]) for row in rows])
    torch.testing.assert_close(alone, probabilities)
    torch.testing.assert_close(predictor.adjusted_probabilities(rows[::-1]), probabilities.flip(0))

    adjusted, plain = predictor.predict_both(rows)
    assert adjusted == [ANSWERS[i] for i in probabilities.argmax(1).tolist()]
    assert plain == LMPredictor(model, tokenizer, ANSWERS).predict(rows)



def test_predictor_runs_without_dropout_and_gives_the_model_and_heads_their_modes_back(trained_checkpoint):
    """A predictor built right after trainer.train() got the model in train mode: dropout made the adjusted
    probabilities of the same rows differ from call to call."""
    args, out = trained_checkpoint
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, attention_dropout=0.5).train()
    predictor = LatentShiftTrainer.build_predictor(args, model, tokenizer, ANSWERS, checkpoint_dir=str(out))
    predictor.heads.train()
    rows = shift_rows(6, agreement=0.1, seed=3)
    reference = LatentShiftTrainer.build_predictor(args, AutoModelForCausalLM.from_pretrained(out).eval(), tokenizer, ANSWERS, checkpoint_dir=str(out))
    torch.testing.assert_close(predictor.adjusted_probabilities(rows), reference.adjusted_probabilities(rows))
    assert predictor.predict_both(rows) == reference.predict_both(rows)
    assert model.training and predictor.heads.training


def test_predictor_takes_any_iterable_of_rows_none_and_names_a_prompt_of_the_wrong_type(trained_checkpoint):
    args, out = trained_checkpoint
    model, tokenizer = AutoModelForCausalLM.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    predictor = LatentShiftTrainer.build_predictor(args, model, tokenizer, ANSWERS, checkpoint_dir=str(out))
    assert predictor.predict([]) == [] and predictor.predict_both([]) == ([], [])
    assert predictor.adjusted_probabilities([]).shape == (0, 2)
    rows = shift_rows(3, agreement=0.1, seed=3)
    assert predictor.predict_both(row for row in rows) == predictor.predict_both(rows)
    for prompt, kind in ((123, "int"), (["not", "messages"], "list"), (b"bytes", "bytes")):
        with pytest.raises(DataError, match=rf"^Row 1: 'prompt' must be a text or a list of messages .*; this row has {kind} "):
            predictor.predict([rows[0], prompt])


def test_the_heads_follow_the_model_to_another_dtype_or_device_after_the_predictor_is_built(trained_checkpoint):
    """The heads went to the model's device once, when the predictor was built: a model moved later (e.g. to the GPU)
    met them on the old one. They keep their own dtype (they cast the hidden states to it)."""
    args, out = trained_checkpoint
    model, tokenizer = AutoModelForCausalLM.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    predictor = LatentShiftTrainer.build_predictor(args, model, tokenizer, ANSWERS, checkpoint_dir=str(out))
    rows = shift_rows(4, agreement=0.1, seed=3)
    probabilities = predictor.adjusted_probabilities(rows)
    model.to(torch.float64)
    torch.testing.assert_close(predictor.adjusted_probabilities(rows), probabilities, atol=1e-5, rtol=1e-4)
    assert predictor.heads.dtype == torch.float32
    if torch.cuda.is_available():
        model.to("cuda")
        torch.testing.assert_close(predictor.adjusted_probabilities(rows), probabilities, atol=1e-4, rtol=1e-3)
        assert next(predictor.heads.parameters()).is_cuda

def test_answers_given_as_labels_are_scored_as_the_texts_the_lm_head_learned(tiny_model, tmp_path):
    rows = [{**row, "label": ANSWERS.index(row["label"])} for row in shift_rows()]  # labels 0/1 answered " negative"/" positive"
    trainer = make_trainer(tiny_model, tmp_path, rows=rows, max_steps=2)
    trainer.train()
    trainer.save_model(str(tmp_path))
    model, tokenizer = AutoModelForCausalLM.from_pretrained(tmp_path).eval(), AutoTokenizer.from_pretrained(tmp_path)
    test_rows = shift_rows(12, agreement=0.1, seed=3)
    by_label = LatentShiftTrainer.build_predictor(trainer.args, model, tokenizer, ["0", "1"], checkpoint_dir=str(tmp_path))
    by_text = LMPredictor(model, tokenizer, ANSWERS).score(by_label.prepare_prompts(test_rows), by_label.answer_prefixes(test_rows))
    assert by_label.predict_both(test_rows)[1] == [str(i) for i in by_text.argmax(1).tolist()]


def test_a_checkpoint_predicts_raw_prompts_with_the_options_it_was_trained_with(tiny_model, tmp_path):
    trainer = make_trainer(tiny_model, tmp_path, max_steps=2, phi_samples=3, latent_shift_seed=7, phi_source="batch")
    trainer.train()
    trainer.save_model(str(tmp_path))
    model, tokenizer = AutoModelForCausalLM.from_pretrained(tmp_path).eval(), AutoTokenizer.from_pretrained(tmp_path)
    predictor = LatentShiftPredictor.from_checkpoint(tmp_path, model, tokenizer, ANSWERS)  # a TRL script's own predictor
    assert (predictor.phi_samples, predictor.seed, predictor.phi_source, predictor.answer_prefix) == (3, 7, "batch", " ")
    rows = shift_rows(6, agreement=0.1, seed=3)
    prompts = [row["prompt"] for row in rows]  # raw prompts: no completion tells the answer's leading space
    torch.testing.assert_close(
        predictor.score(prompts, predictor.answer_prefixes(prompts), [predictor.written_answers] * 6),
        LMPredictor(model, tokenizer, ANSWERS).score(prompts, [" "] * 6),
    )
    assert predictor.predict_both(prompts) == predictor.predict_both(rows)
    assert LatentShiftPredictor.from_checkpoint(tmp_path, model, tokenizer, ANSWERS, phi_samples=5).phi_samples == 5
    # a predictor built from a config that differs from training says so
    fresh = LatentShiftConfig(**cpu_training_args(tmp_path / "fresh"), label_column="label")
    with pytest.warns(UserWarning, match=r"was trained with phi_samples=3, phi_source='batch', latent_shift_seed=7"):
        LatentShiftTrainer.build_predictor(fresh, model, tokenizer, ANSWERS, checkpoint_dir=str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:  # kwargs that give the trained settings back: nothing to say
        warnings.simplefilter("always")
        LatentShiftTrainer.build_predictor(fresh, model, tokenizer, ANSWERS, checkpoint_dir=str(tmp_path), phi_samples=3, phi_source="batch", seed=7)
    assert not [w for w in caught if "sets otherwise" in str(w.message)]
    other = tmp_path / "other"  # heads alone (deconfounded_reward's covariate head has that file too): not latent_shift's
    other.mkdir()
    (other / HEADS_FILE).write_bytes((tmp_path / HEADS_FILE).read_bytes())
    with pytest.raises(ConfigError, match="it was not saved by the latent_shift trainer"):
        LatentShiftPredictor.from_checkpoint(other, model, tokenizer, ANSWERS)
    (tmp_path / HEADS_FILE).unlink()  # a copy that left the heads behind
    with pytest.raises(ConfigError, match=rf"lacks {HEADS_FILE}, which the latent_shift trainer saves beside .*: the folder is incomplete"):
        LatentShiftPredictor.from_checkpoint(tmp_path, model, tokenizer, ANSWERS)


def test_rows_without_prompt_tokens_fail_before_training_naming_the_rows(tiny_model, tmp_path):
    with pytest.raises(DataError, match=r"No prompt tokens in 8 rows of the training split \(rows \[0, 1, 2, 3, 4\] and 3 more.*\): the first token is already supervised.*max_length=3 with truncation_mode keep_end cut their prompt off.*raise max_length"):
        make_trainer(tiny_model, tmp_path, max_length=3, truncation_mode="keep_end")
    rows = shift_rows()
    rows[5]["prompt"] = ""  # a row whose prompt is empty (TRL then supervises its first token)
    with pytest.raises(DataError, match=r"No prompt tokens in 1 row of the training split \(row 5; row 5's prompt: ''\)"):
        make_trainer(tiny_model, tmp_path, rows)
    rows = shift_rows(12)
    for row in (0, 1):  # prompts so long that max_length leaves no completion token: TRL drops these rows
        rows[row]["prompt"] = "word " * 200 + rows[row]["prompt"]
    for row in (5, 9):
        rows[row]["prompt"] = ""
    with pytest.raises(DataError, match=r"No prompt tokens in 2 rows of the training split \(rows \[5, 9\]; row 5's prompt: ''\)"):
        make_trainer(tiny_model, tmp_path, rows, max_length=64)  # numbered as in the data, not as TRL kept them


@pytest.mark.parametrize("conversational", [False, True], ids=["prompt-completion", "chat"])
@pytest.mark.parametrize("truncation_mode", ["keep_start", "keep_end"])
def test_prediction_pools_the_prompt_tokens_training_pooled_under_max_length(tiny_model, tmp_path, truncation_mode, conversational):
    """keep_end keeps the last max_length tokens of prompt + completion, and a chat's completion ends in the template's
    end-of-turn (two tokens here, "<|im_end|>" and a newline), a plain text's in the EOS TRL appends."""
    rows = to_prompt_completion(generate_shift_dataset(16, 0.9, seed=0), instruction="{text}\nSentiment:", conversational=conversational)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)

    def prompt_ids(prompt):
        return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"] if conversational else tokenizer(prompt)["input_ids"]

    lengths = sorted(len(prompt_ids(row["prompt"])) for row in rows)
    max_length = lengths[len(lengths) // 2]  # keep_start drops the longer half, keep_end cuts it
    trainer = make_trainer(tiny_model, tmp_path, rows=rows, max_length=max_length, truncation_mode=truncation_mode)
    trainer.train()
    trainer.save_model(str(tmp_path))
    predictor = LatentShiftTrainer.build_predictor(trainer.args, trainer.model, tokenizer, ANSWERS, checkpoint_dir=str(tmp_path))
    assert (predictor.max_length, predictor.truncation_mode) == (max_length, truncation_mode)  # read from the checkpoint

    trained = trainer.train_dataset  # as TRL prepared it: truncated, rows left without completion dropped
    key = json.dumps
    pooled = {key(row["prompt"]): [t for t, label in zip(row["input_ids"], row["labels"]) if label == -100] for row in trained}
    by_prompt = {key(row["prompt"]): row for row in rows}
    space = "" if conversational else " "
    longest = max(ANSWERS, key=lambda answer: len(tokenizer(space + answer, add_special_tokens=False)["input_ids"]))
    assert len(trained) < len(rows) if truncation_mode == "keep_start" else len(trained) == len(rows)
    for row in trained:
        predicted = predictor.pooled_prompt_ids([by_prompt[key(row["prompt"])]])[0]
        training = pooled[key(row["prompt"])]
        if truncation_mode == "keep_start" or row["label"] == longest:
            assert predicted == training
        else:  # keep_end cut a shorter answer's prompt a little later: the prediction keeps a suffix of it
            assert training[len(training) - len(predicted) :] == predicted and len(predicted) >= len(training) - 2
    too_long = [row for row in rows if key(row["prompt"]) not in {key(r["prompt"]) for r in trained}] or rows
    assert all(len(ids) < max_length for ids in predictor.pooled_prompt_ids(too_long))


def test_prediction_pools_what_training_pooled_when_the_prompts_space_merges_into_the_answer(tiny_model, tmp_path):
    """A prompt ending in a space before a completion without one: the tiny tokenizer merges the space into
    "negative" (not into "positive"), and TRL starts the completion where prompt and prompt + completion diverge,
    leaving the lone space out of the prompt. The prediction, not knowing the answer, pools the context no answer's
    tokens reach into: that of "negative" rows."""
    rows = [{**row, "prompt": row["prompt"] + " ", "completion": row["completion"].strip()} for row in shift_rows(8)]
    assert {row["completion"] for row in rows} == set(ANSWERS)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    trainer = make_trainer(tiny_model, tmp_path, rows=rows)
    trainer.train()
    trainer.save_model(str(tmp_path))
    predictor = LatentShiftTrainer.build_predictor(trainer.args, trainer.model, tokenizer, ANSWERS, checkpoint_dir=str(tmp_path))
    trained = {row["prompt"]: [t for t, label in zip(row["input_ids"], row["labels"]) if label == -100] for row in trainer.train_dataset}
    for row, pooled in zip(rows, predictor.pooled_prompt_ids(rows)):
        prompt_ids = tokenizer(row["prompt"])["input_ids"]
        assert pooled == prompt_ids[:-1]  # without the lone space
        assert trained[row["prompt"]] == (pooled if row["completion"] == "negative" else prompt_ids)


def test_batch_source_needs_two_rows_and_the_checkpoint_needs_its_heads(trained_checkpoint, tmp_path):
    args, out = trained_checkpoint
    model, tokenizer = AutoModelForCausalLM.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    predictor = LatentShiftTrainer.build_predictor(args, model, tokenizer, ANSWERS, checkpoint_dir=str(out), phi_source="batch")
    assert predictor.adjusted_probabilities(shift_rows(4)).shape == (4, 2)
    predictor.batch_size = 2
    assert predictor.adjusted_probabilities(shift_rows(3)).shape == (3, 2)  # the last row joins the batch before it
    predictor.batch_size = 1
    with pytest.raises(ConfigError, match=r"batch_size must be 2 or more \(it is 1\).*--setting phi_source=bank"):
        predictor.adjusted_probabilities(shift_rows(3))
    predictor.batch_size = 2
    with pytest.raises(DataError, match="memory bank"):
        predictor.adjusted_probabilities(shift_rows(1))
    own = LatentShiftTrainer.build_predictor(args, model, tokenizer, ANSWERS, checkpoint_dir=str(out), phi_source="own")
    own_batched = own.adjusted_probabilities(shift_rows(4))
    own.batch_size = 1  # no draws: the no-shuffle prediction of a row does not depend on its batch
    torch.testing.assert_close(own.adjusted_probabilities(shift_rows(4)), own_batched)
    with pytest.raises(ConfigError, match=LATENT_SHIFT_FILE):
        LatentShiftTrainer.build_predictor(args, model, tokenizer, ANSWERS, checkpoint_dir=str(tmp_path))


def test_eval_command_reports_the_adjusted_and_the_plain_prediction(trained_checkpoint, tiny_model, tmp_path, capsys):
    args, out = trained_checkpoint
    test_rows = shift_rows(6, agreement=0.1, seed=3)
    test = write_jsonl(tmp_path / "test.jsonl", test_rows)
    settings = base_config(tiny_model, test, out, n_patches=4, label_column="label")
    config = write_config(tmp_path / "cfg.yaml", {"trainer": "latent_shift", **settings})
    output = tmp_path / "eval.json"
    assert cli.main(["eval", "--config", str(config), "--split", f"shift_10={test}", "--answer_column", "label", "--output", str(output)]) == 0
    results = json.loads(output.read_text())["results"]
    assert set(results) == {"latent_shift:adjusted", "latent_shift:plain"}
    assert [results[name]["prediction"] for name in sorted(results)] == ["adjusted", "plain"]

    model, tokenizer = AutoModelForCausalLM.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    predictor = LatentShiftTrainer.build_predictor(args, model, tokenizer, ANSWERS, checkpoint_dir=str(out))
    gold = [row["label"] for row in test_rows]
    for name, predicted in zip(("latent_shift:adjusted", "latent_shift:plain"), predictor.predict_both(test_rows)):
        expected = sum(p == g for p, g in zip(predicted, gold)) / len(gold)
        assert results[name]["splits"]["shift_10"]["accuracy"] == pytest.approx(expected), name
        assert set(results[name]["splits"]["shift_10"]) == {"accuracy", "macro_f1", "n", "unparsed"}
    header = capsys.readouterr().out
    assert "latent_shift:adjusted" in header and "latent_shift:plain" in header


def test_a_copy_of_the_config_with_another_seed_starts_other_heads(tmp_path):
    import dataclasses

    from trl_causal.trainer.latent_shift_trainer import build_heads

    args = LatentShiftConfig(**cpu_training_args(tmp_path, label_column="label"))
    swept = dataclasses.replace(args, seed=1)  # latent_shift_seed None follows `seed`, also in a copy
    assert (args.latent_shift_seed, args.latent_shift_seed_value, swept.latent_shift_seed_value) == (None, args.seed, 1) and args.seed != 1
    first, second = (build_heads(a, 32, 2, a.latent_shift_seed_value).state_dict() for a in (args, swept))
    assert not torch.equal(first["causal_head.mlp.0.weight"], second["causal_head.mlp.0.weight"])


def test_eval_takes_the_answer_set_from_the_checkpoints_verbalizer(trained_checkpoint, tiny_model, tmp_path, capsys):
    args, out = trained_checkpoint
    one_class = [row for row in shift_rows(12, agreement=0.1, seed=3) if row["label"] == "negative"][:3]
    test = write_jsonl(tmp_path / "negative.jsonl", one_class)
    config = write_config(tmp_path / "cfg.yaml", {"trainer": "latent_shift", **base_config(tiny_model, test, out, n_patches=4, label_column="label")})
    output = tmp_path / "eval.json"
    for gold_column in ("label", None):  # labels, and the completions' answer texts
        argv = ["eval", "--config", str(config), "--split", f"neg={test}", "--output", str(output)]
        assert cli.main(argv + (["--answer_column", gold_column] if gold_column else [])) == 0, capsys.readouterr().err
        assert json.loads(output.read_text())["answers"] == ["negative", "positive"]  # not just the one gold class
    outside = write_jsonl(tmp_path / "outside.jsonl", [dict(one_class[0], completion=" neutral")])
    assert cli.main(["eval", "--config", str(config), "--split", f"odd={outside}"]) == 2
    assert "gold answers ['neutral'] (column 'completion') are neither labels" in capsys.readouterr().err


def test_eval_of_a_checkpoint_without_a_run_record_predicts_with_its_saved_settings(trained_checkpoint, tiny_model, tmp_path, capsys):
    args, out = trained_checkpoint  # saved by a TRL script: heads and predictor settings, no trl_causal_run.json
    assert not (out / SUMMARY_FILE).exists()
    test = write_jsonl(tmp_path / "test.jsonl", shift_rows(4, agreement=0.1, seed=3))
    settings = base_config(tiny_model, test, out, n_patches=4, label_column="label", phi_samples=args.phi_samples + 5)
    config = write_config(tmp_path / "cfg.yaml", {"trainer": "latent_shift", **settings})
    assert cli.main(["eval", "--config", str(config), "--split", f"t={test}", "--output", str(tmp_path / "e.json")]) == 0
    assert f"was trained with phi_samples={args.phi_samples}, which the YAML sets otherwise; it predicts as trained" in capsys.readouterr().err


def test_eval_settings_are_checked_and_those_the_heads_fix_are_refused(trained_checkpoint, tiny_model, tmp_path, capsys):
    _, out = trained_checkpoint
    test = write_jsonl(tmp_path / "test.jsonl", shift_rows(4, agreement=0.1, seed=3))
    config = write_config(tmp_path / "cfg.yaml", {"trainer": "latent_shift", **base_config(tiny_model, test, out, n_patches=4, label_column="label")})
    argv = ["eval", "--config", str(config), "--split", f"t={test}", "--output", str(tmp_path / "e.json")]
    assert cli.main(argv + ["--setting", "phi_source=bnk"]) == 2
    assert "phi_source='bnk' is not one of 'bank', 'batch', 'own'" in capsys.readouterr().err  # the field's own name
    for fixed in ("low_level_layer=1", "max_length=64"):
        assert cli.main(argv + ["--setting", fixed]) == 2
        assert f"{fixed.partition('=')[0]} is fixed by what the checkpoint saved" in capsys.readouterr().err
    assert cli.main(argv + ["--setting", "latent_shift_seed_value=3"]) == 2  # a property, not a field
    assert "give KEY=VALUE with KEY a field of LatentShiftConfig" in capsys.readouterr().err
    for wrong, shown in (("phi_samples=abc", "'abc' (str)"), ("phi_samples=true", "True (bool)")):  # checked as the YAML's values are
        assert cli.main(argv + ["--setting", wrong]) == 2
        assert f"Key 'phi_samples' in --setting '{wrong}' expects int, got {shown}." in capsys.readouterr().err
    assert cli.main(argv + ["--setting", "phi_samples=0"]) == 2  # the config's own check, the error first
    assert "error: phi_samples=0 must be at least 1 (prediction uses the settings the checkpoint recorded and --setting phi_samples=0)." in capsys.readouterr().err
    assert cli.main(argv + ["--compare", str(tmp_path / "nowhere")]) == 2
    assert f"Checkpoint directory not found: {tmp_path / 'nowhere'} (--compare)" in capsys.readouterr().err
    for flag in ("--batch_size", "--max_rows"):
        with pytest.raises(SystemExit):
            cli.main(argv + [flag, "0"])
        assert f"argument {flag}: must be a whole number of at least 1, not '0'" in capsys.readouterr().err
    assert cli.main(argv + ["--setting", "phi_samples=3", "--answers", "POSITIVE,NEGATIVE"]) == 0
    assert "scored on the answer texts as given, 'NEGATIVE' (gold: 'negative'), 'POSITIVE' (gold: 'positive')" in capsys.readouterr().err


def test_eval_compares_an_sft_baseline_on_the_verbalizer_texts_of_the_labels(tiny_model, tmp_path, capsys):
    rows = [{**row, "label": ANSWERS.index(row["label"])} for row in shift_rows()]  # labels 0/1 answered " negative"/" positive"
    trainer = make_trainer(tiny_model, tmp_path / "ls", rows=rows, max_steps=1)
    trainer.train()
    trainer.save_model(str(tmp_path / "ls"))
    test_rows = [{**row, "label": ANSWERS.index(row["label"])} for row in shift_rows(6, agreement=0.1, seed=3)]
    test = write_jsonl(tmp_path / "test.jsonl", test_rows)
    config = write_config(tmp_path / "cfg.yaml", {"trainer": "latent_shift", **base_config(tiny_model, test, tmp_path / "ls", n_patches=4, label_column="label")})
    import shutil

    baseline_dir = tmp_path / "sft"  # as `trainer: sft` saves it: the model and its run record
    shutil.copytree(tiny_model, baseline_dir)
    (baseline_dir / SUMMARY_FILE).write_text(json.dumps({"trainer": "sft", "settings": {}}))
    output = tmp_path / "eval.json"
    argv = ["eval", "--config", str(config), "--compare", str(baseline_dir), "--split", f"t={test}", "--answer_column", "label",
            "--output", str(output), "--setting", "phi_samples=3"]
    assert cli.main(argv) == 0
    assert "--setting phi_samples=3 does not apply to" in capsys.readouterr().err  # the sft baseline has no such field
    baseline = json.loads(output.read_text())["results"]["sft"]
    assert baseline["scored_answers"] == ANSWERS  # the texts it learned, not the labels "0" / "1"
    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_model).eval(), AutoTokenizer.from_pretrained(tiny_model)
    predicted = [str(ANSWERS.index(answer)) for answer in LMPredictor(model, tokenizer, ANSWERS).predict(test_rows)]
    assert baseline["splits"]["t"]["accuracy"] == sum(p == str(r["label"]) for p, r in zip(predicted, test_rows)) / len(test_rows)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("name", ["lambda_causal", "lambda_adj", "heads_learning_rate"])
def test_non_finite_weights_and_rates_are_refused(tmp_path, name, value):
    """NaN fails `< 0` as every comparison does, and trained an all-NaN checkpoint with exit 0."""
    with pytest.raises(ConfigError, match=rf"{name}={value} must be a finite number >=? 0"):
        LatentShiftConfig(**cpu_training_args(tmp_path, per_device_train_batch_size=2, **{name: value}))


@pytest.mark.parametrize("name", ["causal_hidden_sizes", "encoder_hidden_sizes", "adjusted_hidden_sizes"])
@pytest.mark.parametrize("sizes", [[0], [64, -100]])
def test_hidden_sizes_below_one_are_refused(tmp_path, name, sizes):
    with pytest.raises(ConfigError, match=rf"{name}=.*each hidden layer size must be an integer >= 1"):
        LatentShiftConfig(**cpu_training_args(tmp_path, per_device_train_batch_size=2, **{name: sizes}))


def test_a_misspelt_adjustment_suggests_the_close_one_and_an_empty_label_column_is_unset(tmp_path):
    with pytest.raises(ConfigError, match=r"adjustment='shuffle-train' is not one of .* Did you mean 'shuffle_train'"):
        LatentShiftConfig(**cpu_training_args(tmp_path, per_device_train_batch_size=2, adjustment="shuffle-train"))
    assert LatentShiftConfig(**cpu_training_args(tmp_path, per_device_train_batch_size=2, label_column="")).label_column is None


def test_a_negative_latent_shift_seed_is_refused_as_capt_refuses_a_negative_intervention_seed(tmp_path):
    with pytest.raises(ConfigError, match=r"latent_shift_seed must be a non-negative integer \(or null for seed\), not -1"):
        LatentShiftConfig(**cpu_training_args(tmp_path, per_device_train_batch_size=2, latent_shift_seed=-1))


def test_a_verbalizer_label_without_training_rows_is_warned_about(tiny_model, tmp_path, caplog):
    verbalizer = {**dict(zip(ANSWERS, ANSWERS)), "mixed": "mixed"}
    make_trainer(tiny_model, tmp_path, verbalizer=verbalizer)
    assert "the verbalizer's label(s) 'mixed' have no training row" in caplog.text


def test_the_trainers_warnings_follow_log_level(tiny_model, tmp_path, caplog):
    """The project's loggers are outside transformers' hierarchy, which the Trainer sets from log_level: its warnings
    printed under `log_level: error` (and on every rank with `log_level_replica: error`)."""
    import logging

    import transformers

    rows = Dataset.from_list(shift_rows(4))
    project_level = logging.getLogger("trl_causal").level
    try:  # passive: transformers' verbosity (warning), which a Trainer with a log_level sets for the whole process
        for log_level, shown in (("passive", True), ("error", False)):
            caplog.clear()
            make_trainer(tiny_model, tmp_path / log_level, per_device_eval_batch_size=1, log_level=log_level,
                         trainer_kwargs={"eval_dataset": rows})
            assert ("per_device_eval_batch_size=1 scores every evaluation row" in caplog.text) is shown, log_level
    finally:
        transformers.logging.set_verbosity_warning()
        logging.getLogger("trl_causal").setLevel(project_level)
