"""Real two-process DDP on CPU (gloo): through `trl-causal train` and through plain `accelerate launch`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, base_config, write_config
from trl_causal.train import SUMMARY_FILE

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
