"""The Axolotl integration (plugins/axolotl): a real `axolotl train` with `trainer: capt`, and the bad inputs.

Runs in .venv-axolotl (Python 3.12, axolotl 0.21.0), made by scripts/setup_axolotl.sh (called by
scripts/setup.sh). Without that venv the tests skip locally and fail under CI=true, so CI never skips them.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO, build_tiny_model

VENV = Path(os.environ.get("TRL_CAUSAL_AXOLOTL_VENV", REPO / ".venv-axolotl"))
PLUGIN = "trl_causal_axolotl.CausalTrainerPlugin"
pytestmark = pytest.mark.slow


def axolotl_bin() -> Path:
    binary = VENV / "bin" / "axolotl"
    if not binary.exists():
        message = f"{binary} is missing: run `bash scripts/setup_axolotl.sh` (scripts/setup.sh does) to create {VENV}."
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


def axolotl_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PATH=f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}",  # `axolotl train` execs `accelerate` from PATH
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        AXOLOTL_DO_NOT_TRACK="1",
        WANDB_MODE="disabled",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
    )
    env.pop("VIRTUAL_ENV", None)
    return env


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A tiny Llama, 8 PrOntoQA rows as chat messages, and an ordinary Axolotl SFT config (no trl-causal yet)."""
    from trl_causal.capt import generate_prontoqa, to_chat_rows

    axolotl_bin()
    root = tmp_path_factory.mktemp("axolotl")
    build_tiny_model(root / "tiny")
    rows = to_chat_rows(generate_prontoqa(8, "id", seed=0))
    with open(root / "train.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps({"messages": row["prompt"] + row["completion"]}) + "\n")
    base = {
        "base_model": str(root / "tiny"),
        "datasets": [{"path": str(root / "train.jsonl"), "ds_type": "json", "type": "chat_template"}],
        "chat_template": "tokenizer_default",
        "dataset_prepared_path": str(root / "prepared"),
        "val_set_size": 0,
        "sequence_len": 256,
        "sample_packing": False,
        "micro_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "num_epochs": 2,
        "optimizer": "adamw_torch",
        "lr_scheduler": "constant",
        "learning_rate": 0.001,
        "bf16": False,
        "fp16": False,
        "tf32": False,
        "logging_steps": 1,
        "save_strategy": "no",
        "output_dir": str(root / "out"),
    }
    (root / "base.yaml").write_text(yaml.safe_dump(base))
    return root


def config(workdir: Path, name: str, **changes) -> Path:
    cfg = yaml.safe_load((workdir / "base.yaml").read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_axolotl_train_with_capt(workdir):
    """The two added lines make `axolotl train` train with CAPT: events estimated, fresh symbols every epoch."""
    out = workdir / "out-capt"
    path = config(workdir, "capt", plugins=[PLUGIN], trainer="capt", output_dir=str(out))
    run = subprocess.run(
        [str(axolotl_bin()), "train", str(path)],
        cwd=workdir,
        env=axolotl_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-6000:]
    assert "trl-causal capt (axolotl): events estimated with 'prontoqa' on 8 training rows, 0 without events" in log
    assert "capt_rows_intervened" in log  # our counter in Axolotl's training log
    assert (out / "model.safetensors").is_file()
    summary = json.loads((out / "trl_causal_axolotl_run.json").read_text())
    assert summary["trainer"] == "capt" and summary["steps"] == 4
    assert summary["last_draw"] == 1  # the second epoch drew the symbols of draw 1
    assert summary["rows_drawn"] >= 16 and summary["rows_intervened"] == summary["rows_drawn"]


# One Python process loads every config with axolotl's own `load_cfg` (what `axolotl train` runs first, where
# plugins register and Axolotl validates the YAML) and reports, per config, the trainer class or the error.
CHECK_CONFIGS = r"""
import json, sys
from axolotl.cli.config import load_cfg
from axolotl.integrations.base import PluginManager
results = {}
for path in sys.argv[1:]:
    try:
        cfg = load_cfg(path)
        trainer_cls = PluginManager.get_instance().get_trainer_cls(cfg)
        results[path] = {"ok": trainer_cls.__name__ if trainer_cls else None, "trainer": cfg.get("trainer")}
    except Exception as error:
        results[path] = {"error": f"{type(error).__name__}: {error}"}
print("RESULTS" + json.dumps(results))
"""

CASES = {
    # name: (YAML changes, expected: a trainer class name / None, or words the error must contain)
    "plain": ({}, {"ok": None}),
    "baseline_sft": ({"plugins": [PLUGIN], "trainer": "sft"}, {"ok": None, "trainer": "sft"}),
    "capt": ({"plugins": [PLUGIN], "trainer": "capt", "symbol_pool": "nonsense"}, {"ok": "AxolotlCAPTTrainer"}),
    "rl_path": (
        {"plugins": [PLUGIN], "trainer": "capt", "rl": "dpo"},
        ["`trainer: capt` cannot run on Axolotl's RL path (`rl: dpo`)", "remove `rl:`"],
    ),
    "not_listed": ({"trainer": "capt"}, ["`trainer: capt` is set but the trl-causal Axolotl plugin is not enabled", PLUGIN]),
    "unknown": ({"plugins": [PLUGIN], "trainer": "capd"}, ["Unknown trainer 'capd'", "Did you mean 'capt'"]),
    "not_supported": (
        {"plugins": [PLUGIN], "trainer": "latent_shift"},
        ["`trainer: latent_shift` is not supported on Axolotl yet", "trl-causal train"],
    ),
    "reward_kind": ({"plugins": [PLUGIN], "trainer": "deconfounded_reward"}, ["add `reward_model: true`"]),
    "foreign_key": ({"plugins": [PLUGIN], "trainer": "capt", "lambda_causal": 0.5}, ["lambda_causal (a key of latent_shift)"]),
    "packing": ({"plugins": [PLUGIN], "trainer": "capt", "sample_packing": True}, ["sample_packing: false"]),
    "bad_value": ({"plugins": [PLUGIN], "trainer": "capt", "symbol_pool": "emoji"}, ["symbol_pool"]),
}


@pytest.fixture(scope="module")
def checked(workdir) -> dict:
    paths = {name: config(workdir, f"check-{name}", **changes) for name, (changes, _) in CASES.items()}
    run = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", CHECK_CONFIGS, *map(str, paths.values())],
        cwd=workdir,
        env=axolotl_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULTS")]
    assert run.returncode == 0 and lines, (run.stdout + run.stderr)[-6000:]
    results = json.loads(lines[-1].removeprefix("RESULTS"))
    return {name: results[str(path)] for name, path in paths.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_axolotl_config_checks(checked, name):
    result, expected = checked[name], CASES[name][1]
    if isinstance(expected, dict):
        assert "error" not in result, result
        for key, value in expected.items():
            assert result[key] == value, result
    else:
        assert "error" in result, f"{name}: expected an error, got {result}"
        for words in expected:
            assert words in result["error"], result["error"]
