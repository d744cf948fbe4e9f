"""Real two-process DDP and DeepSpeed ZeRO-3 on CPU (gloo): through `trl-causal train` and through plain `accelerate launch`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from conftest import REPO, base_config, interrupt_after_first_step, run_cli, write_config, write_jsonl
from test_capt_trainer import prontoqa_rows
from test_deconfounded_reward_trainer import DECONFOUND, observational_rows
from test_deconfounded_reward_trainer import build_trainer as build_deconfounded_trainer
from test_latent_shift_trainer import shift_rows
from trl_causal.train import SUMMARY_FILE
from trl_causal.trainer.deconfounded_reward_trainer import REPORT_FILE
from trl_causal.trainer.mixins import HEADS_FILE

pytestmark = pytest.mark.slow


def test_accelerate_launch_module_with_an_accelerate_config_file(tmp_path, tiny_model, sft_data):
    """`accelerate launch --config_file ddp.yaml -m trl_causal.train --config cfg.yaml` works unchanged."""
    path = write_config(tmp_path / "cfg.yaml", {"trainer": "sft", **base_config(tiny_model, sft_data, tmp_path / "out")})
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    result = subprocess.run(
        [accelerate, "launch", "--config_file", str(REPO / "example_configs" / "accelerate" / "ddp.yaml"),
         "--main_process_port", "29518", "-m", "trl_causal.train", "--config", str(path)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())
    assert summary["world_size"] == 2


def sft_fails_before_training(tmp_path, model, data, **settings) -> str:
    """`trl-causal train` of `sft` with these settings: asserts that it exits 2 with no traceback, having written
    neither the run summary nor a model; returns its stderr."""
    out = tmp_path / "out"
    config = {"trainer": "sft", **base_config(model, data, out, **settings)}
    result = run_cli("train", "--config", str(write_config(tmp_path / "cfg.yaml", config)))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not (out / SUMMARY_FILE).exists() and not (out / "model.safetensors").exists()
    return result.stderr


def test_ctrl_c_under_two_processes_stops_both_with_one_line_and_no_traceback(tmp_path, tiny_model, sft_data):
    out = tmp_path / "out"
    settings = dict(num_processes=2, multi_gpu=True, main_process_port=29563, max_steps=100_000)
    config = write_config(tmp_path / "cfg.yaml", {"trainer": "sft", **base_config(tiny_model, sft_data, out, **settings)})
    code, output = interrupt_after_first_step("train", "--config", str(config))
    assert code == 130 and "Traceback" not in output, output[-3000:]
    assert output.count(f"nothing was saved since: no checkpoint was saved in {out}") == 1  # rank 0 speaks for both


def test_cpu_flag_with_two_processes_fails_instead_of_training_one(tmp_path, tiny_model, sft_data):
    """accelerate's `cpu` flag starts one process whatever num_processes says (`accelerate launch --cpu
    --num_processes 2`): the run stops before training and says how to get DDP on CPUs."""
    stderr = sft_fails_before_training(tmp_path, tiny_model, sft_data, num_processes=2, cpu=True, main_process_port=29559)
    assert "num_processes 2 was asked for, but accelerate started 1 process(es)" in stderr
    assert "set `multi_gpu: true` and `use_cpu: true`" in stderr


FSDP_ACCELERATE_CONFIG = {
    "compute_environment": "LOCAL_MACHINE",
    "distributed_type": "FSDP",
    "fsdp_config": {"fsdp_version": 2, "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "fsdp_state_dict_type": "SHARDED_STATE_DICT"},
    "num_machines": 1,
    "num_processes": 2,
    "mixed_precision": "no",
}


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA devices accelerate sets FSDP up and the processes train together")
def test_fsdp_config_without_cuda_fails_instead_of_each_process_training_alone(tmp_path, tiny_model, sft_data):
    """Without CUDA, accelerate starts the processes of an FSDP config but sets each up as a lone process (world
    size 1): every one would train on all the rows and write the same output_dir. The run stops before training,
    says why and what to launch instead, and the launcher adds one line, not its traceback."""
    accelerate_config = write_config(tmp_path / "fsdp.yaml", FSDP_ACCELERATE_CONFIG)
    stderr = sft_fails_before_training(
        tmp_path, tiny_model, sft_data, use_cpu=False, accelerate_config=str(accelerate_config), main_process_port=29557
    )
    assert "the launcher started 2 processes but accelerate set up 1 to train together" in stderr
    assert "FSDP needs CUDA devices" in stderr
    assert "training process(es) failed (exit code" in stderr  # the launcher's one line


ZERO3 = {"accelerate_config": str(REPO / "example_configs" / "accelerate" / "deepspeed_zero3.yaml"), "mixed_precision": "no"}


def train_on_two_processes(run_dir, trainer: str, model, data, launch: dict, port: int, **options) -> dict:
    """`trl-causal train` for 2 steps on 2 CPU processes, output in ``run_dir / "out"``; returns the run summary.
    `num_processes` (and `multi_gpu` or `accelerate_config` from ``launch``) are keys of the training YAML: they go
    to accelerate's launcher, as with `trl sft`."""
    out = run_dir / "out"
    config = {"trainer": trainer, **base_config(model, data, out, num_processes=2, main_process_port=port, **launch), **options}
    result = run_cli("train", "--config", str(write_config(run_dir / "cfg.yaml", config)))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2
    return summary


def test_deepspeed_zero3_latent_shift_trains_like_ddp(tmp_path, tiny_model):
    """Without PEFT latent_shift keeps a frozen reference copy, and ZeRO-3 partitions the model before the copy. With
    the shipped ZeRO-3 config on two CPU processes (DeepSpeed's CPU accelerator over gloo) every step's losses equal
    those of two-process DDP."""
    data = write_jsonl(tmp_path / "train.jsonl", shift_rows(16))
    options = {"n_patches": 4, "per_device_train_batch_size": 4, "save_strategy": "steps", "save_steps": 2}
    logs = {}
    for port, (name, launch) in enumerate({"ddp": {"multi_gpu": True}, "zero3": ZERO3}.items(), start=29551):
        run_dir = tmp_path / name
        run_dir.mkdir()
        summary = train_on_two_processes(run_dir, "latent_shift", tiny_model, data, launch, port, **options)
        assert summary["distributed"] == {"ddp": "MULTI_CPU", "zero3": "DEEPSPEED ZeRO-3"}[name]
        history = json.loads((run_dir / "out" / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
        logs[name] = [{key: value for key, value in entry.items() if key.startswith("loss")} for entry in history if "loss" in entry]
    assert [set(step) for step in logs["zero3"]] == [{"loss", "loss_sft", "loss_causal", "loss_adj"}] * 2
    for ddp_step, zero3_step in zip(logs["ddp"], logs["zero3"], strict=True):
        assert zero3_step == pytest.approx(ddp_step, rel=1e-5)


ZERO3_BF16_SETUPS = {  # the trainers that attach heads: latent_shift always, deconfounded_reward in covariate mode
    "latent_shift": (lambda: shift_rows(16), {"n_patches": 4, "per_device_train_batch_size": 4}, "loss_adj"),
    "deconfounded_reward": (observational_rows, {**DECONFOUND, "mode": "covariate"}, "loss"),
}


@pytest.mark.parametrize("trainer", list(ZERO3_BF16_SETUPS))
def test_deepspeed_zero3_in_bf16_trains_the_heads_with_the_model(tmp_path, tiny_model, trainer):
    """The shipped ZeRO-3 config as it is (bf16). ZeRO-3 casts the weights to bf16 as they load and casts nothing
    later, and one partition holds one dtype, so heads attached in fp32 stopped DeepSpeed's set-up (an assertion in
    its defragment). The heads now take the dtype of the model's trainable weights and train with them."""
    rows, options, logged = ZERO3_BF16_SETUPS[trainer]
    data = write_jsonl(tmp_path / "train.jsonl", rows())
    launch = {"accelerate_config": ZERO3["accelerate_config"], "bf16": True}
    summary = train_on_two_processes(tmp_path, trainer, tiny_model, data, launch, 29561, **options, save_strategy="steps", save_steps=2)
    assert summary["distributed"] == "DEEPSPEED ZeRO-3"
    history = json.loads((tmp_path / "out" / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    losses = [entry[logged] for entry in history if logged in entry]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    with safe_open(tmp_path / "out" / HEADS_FILE, "pt") as heads:
        assert torch.bfloat16 in {heads.get_tensor(key).dtype for key in heads.keys()}


def test_deepspeed_zero3_deconfounded_reward_features_give_the_theta_of_one_process(tmp_path, tiny_model):
    """The feature pass runs on the frozen model before training, outside the DeepSpeed engine, on the main rank:
    under ZeRO-3 (two CPU processes) it gives the theta that one plain process computes on the same rows."""
    rows = observational_rows()
    options = {**DECONFOUND, "feature_source": "model"}
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    cache = {"feature_cache_dir": str(tmp_path / "features-zero3")}
    summary = train_on_two_processes(tmp_path, "deconfounded_reward", tiny_model, data, ZERO3, 29553, **options, **cache)
    assert summary["distributed"] == "DEEPSPEED ZeRO-3"
    zero3 = json.loads((tmp_path / "out" / REPORT_FILE).read_text())["deconfounding"]["effects"]["confounder"]

    one_process = build_deconfounded_trainer(tiny_model, tmp_path / "one", rows, **options, feature_cache_dir=str(tmp_path / "features-one"))
    expected = one_process.targets.report["deconfounding"]["effects"]["confounder"]
    assert zero3["theta"] == pytest.approx(expected["theta"], rel=1e-6)
    assert zero3["se"] == pytest.approx(expected["se"], rel=1e-6)


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_lora_deconfounded_reward_saves_the_merged_classifier(tmp_path, tiny_model, stage):
    """Under DeepSpeed the trainer hands its save a state dict gathered from the engine (under ZeRO-3 with PEFT the
    adapters' alone), and the final save wrote the unmerged adapter, not the plain single-logit classifier."""
    from transformers import AutoModelForSequenceClassification

    launch = {"accelerate_config": str(REPO / "example_configs" / "accelerate" / f"deepspeed_zero{stage}.yaml"), "mixed_precision": "no"}
    lora = {"use_peft": True, "lora_r": 4, "lora_target_modules": ["q_proj", "v_proj"], "learning_rate": 0.05}
    data = write_jsonl(tmp_path / "train.jsonl", observational_rows())
    summary = train_on_two_processes(tmp_path, "deconfounded_reward", tiny_model, data, launch, 29565 + stage, **DECONFOUND, **lora)
    assert summary["distributed"] == f"DEEPSPEED ZeRO-{stage}"
    out = tmp_path / "out"
    assert (out / "model.safetensors").is_file() and not (out / "adapter_model.safetensors").exists()
    merged, info = AutoModelForSequenceClassification.from_pretrained(out, output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys")), info
    assert merged.config.num_labels == 1
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged.state_dict()[name], base.state_dict()[name])  # the adapters are in it


def cache_valid_answers(estimator_options: dict, rows: list[dict]) -> None:
    """Put into the llm estimator's cache, for each row, the template the prontoqa estimator gives it, as an answer."""
    from trl_causal.capt import ProntoQAEstimator
    from trl_causal.capt.llm_estimator import LLMEstimator
    from trl_causal.capt.sft_rows import part_text, split_row

    estimator = LLMEstimator(**estimator_options)
    for row in rows:
        prompt, completion = (part_text(part) for part in split_row(row, "text"))
        template = ProntoQAEstimator().estimate(prompt, completion)
        answer = {"prompt_template": template.prompt, "completion_template": template.completion, "events": template.names}
        estimator.cache.put(estimator.cache_key(prompt, completion), answer, estimator.backend.identity)


def test_deepspeed_zero3_capt_llm_estimator_loads_its_model_whole(tmp_path, tiny_model):
    """Under ZeRO-3 only the main rank runs the `llm` estimator before training. Its model must load whole: a
    partitioned load is a collective that the waiting rank never joins (the run hung before). Three rows' answers
    are in the cache; the model is loaded for the fourth."""
    rows = prontoqa_rows(4, "conversational")
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    settings = base_config(tiny_model, data, tmp_path / "out", num_processes=2, main_process_port=29555, **ZERO3)
    estimator = {"model": str(tiny_model), "max_new_tokens": 4, "max_retries": 1, "cache_dir": str(tmp_path / "llm-cache")}
    cache_valid_answers(estimator, rows[:3])
    path = write_config(tmp_path / "cfg.yaml", {"trainer": "capt", **settings, "event_estimator": "llm", "event_estimator_kwargs": estimator})
    result = run_cli("train", "--config", str(path), timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    # the tiny model answers no JSON
    assert "events estimated with 'llm' on 4 training rows, 1 without events (kept unchanged, 1 of them because the estimator failed)" in result.stdout
    assert json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())["distributed"] == "DEEPSPEED ZeRO-3"
