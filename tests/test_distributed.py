"""Real two-process DDP and DeepSpeed ZeRO-3 on CPU (gloo): through `trl-causal train` and through plain `accelerate launch`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, base_config, run_cli, write_config, write_jsonl
from test_capt_trainer import prontoqa_rows
from test_deconfounded_reward_trainer import DECONFOUND, observational_rows
from test_latent_shift_trainer import shift_rows
from trl_causal.train import SUMMARY_FILE
from trl_causal.trainer.deconfounded_reward_trainer import REPORT_FILE

pytestmark = pytest.mark.slow


def test_yaml_accelerate_keys_launch_two_processes(tmp_path, tiny_model, sft_data):
    """`num_processes` / `multi_gpu` in the YAML go to accelerate's launcher, as with `trl sft`."""
    config = base_config(tiny_model, sft_data, tmp_path / "out", num_processes=2, multi_gpu=True, main_process_port=29517)
    path = write_config(tmp_path / "cfg.yaml", {"trainer": "sft", **config})
    result = subprocess.run(
        [sys.executable, "-m", "trl_causal.cli", "train", "--config", str(path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2


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


ZERO3_CASES = {
    # latent_shift without PEFT keeps a frozen reference copy; under ZeRO-3 the model is partitioned before the copy
    "latent_shift": lambda: (shift_rows(16), {"n_patches": 4, "per_device_train_batch_size": 4}),
    # the feature pass before training runs on the frozen model outside the engine, on the main rank only
    "deconfounded_reward": lambda: (observational_rows(), {**DECONFOUND, "feature_source": "model"}),
}


@pytest.mark.parametrize("trainer", sorted(ZERO3_CASES))
def test_deepspeed_zero3_trains_like_ddp(tmp_path, tiny_model, trainer):
    """The shipped ZeRO-3 accelerate config on two CPU processes (DeepSpeed's CPU accelerator over gloo) gives the
    same per-step losses as two-process DDP; for deconfounded_reward also the same theta from a fresh feature pass."""
    rows, extra = ZERO3_CASES[trainer]()
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    launches = {
        "ddp": {"multi_gpu": True},
        "zero3": {"accelerate_config": str(REPO / "example_configs" / "accelerate" / "deepspeed_zero3.yaml"), "mixed_precision": "no"},
    }
    logs, reports = {}, {}
    for port, (launch, keys) in enumerate(launches.items(), start=29551):
        out = tmp_path / launch
        settings = base_config(tiny_model, data, out, num_processes=2, main_process_port=port, **keys)
        extra_run = {**extra, "feature_cache_dir": str(tmp_path / f"features-{launch}")} if trainer == "deconfounded_reward" else extra
        path = write_config(tmp_path / f"{launch}.yaml", {"trainer": trainer, **settings, **extra_run, "save_strategy": "steps", "save_steps": 2})
        result = run_cli("train", "--config", str(path))
        assert result.returncode == 0, result.stderr[-3000:]
        summary = json.loads((out / SUMMARY_FILE).read_text())
        assert summary["world_size"] == 2 and summary["steps"] == 2
        assert summary["distributed"] == {"ddp": "MULTI_CPU", "zero3": "DEEPSPEED ZeRO-3"}[launch]
        history = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
        logs[launch] = [{key: value for key, value in entry.items() if key.startswith("loss")} for entry in history if "loss" in entry]
        if trainer == "deconfounded_reward":
            reports[launch] = json.loads((out / REPORT_FILE).read_text())["deconfounding"]["effects"]["confounder"]
    assert len(logs["zero3"]) == 2 and len(logs["zero3"][0]) == (4 if trainer == "latent_shift" else 1)
    for ddp_step, zero3_step in zip(logs["ddp"], logs["zero3"], strict=True):
        assert zero3_step == pytest.approx(ddp_step, rel=1e-5)
    if trainer == "deconfounded_reward":
        assert reports["zero3"]["theta"] == pytest.approx(reports["ddp"]["theta"], rel=1e-6)


def test_deepspeed_zero3_capt_llm_estimator_loads_its_model_whole(tmp_path, tiny_model):
    """Under ZeRO-3 only the main rank runs the `llm` estimator before training. Its model must load whole: a
    partitioned load is a collective that the waiting rank never joins (the run hung before)."""
    data = write_jsonl(tmp_path / "train.jsonl", prontoqa_rows(4, "conversational"))
    zero3 = {"accelerate_config": str(REPO / "example_configs" / "accelerate" / "deepspeed_zero3.yaml"), "mixed_precision": "no"}
    settings = base_config(tiny_model, data, tmp_path / "out", num_processes=2, main_process_port=29555, **zero3)
    estimator = {"model": str(tiny_model), "max_new_tokens": 4, "max_retries": 1, "cache_dir": str(tmp_path / "llm-cache")}
    path = write_config(tmp_path / "cfg.yaml", {"trainer": "capt", **settings, "event_estimator": "llm", "event_estimator_kwargs": estimator})
    result = run_cli("train", "--config", str(path), timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "events estimated with 'llm' on 4 training rows, 4 without events" in result.stdout  # the tiny model answers no JSON
    assert json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())["distributed"] == "DEEPSPEED ZeRO-3"
