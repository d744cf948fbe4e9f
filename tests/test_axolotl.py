"""The Axolotl integration (plugins/axolotl): real `axolotl train` runs with `trainer: capt` and `trainer:
latent_shift` (SFT path) and `trainer: deconfounded_reward` (`reward_model: true` path), and the bad inputs.

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
    write_observational_rows(root / "observational.jsonl")
    write_shift_rows(root / "shift.jsonl")
    return root


def write_shift_rows(path: Path) -> None:
    """16 latent-shift sentiment rows (trl_causal.latent_shift.data) as chat messages; no label column: the plugin
    reads each label from the trained answer through the verbalizer."""
    from trl_causal.latent_shift.data import generate_shift_dataset, to_prompt_completion

    rows = to_prompt_completion(generate_shift_dataset(16, 0.9, seed=0), conversational=True)
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps({"messages": row["prompt"] + row["completion"]}) + "\n")


VERBALIZER = {"positive": "positive", "negative": "negative"}


OBSERVATIONAL_ROWS = 48
REWARD = {  # the `reward_model: true` path with trl-causal's deconfounded reward on observational rows
    "reward_model": True,
    "trainer": "deconfounded_reward",
    "numeric_confounders": ["confounder"],
    "group_column": "group",
    "feature_source": "tfidf",
    "n_folds": 3,
}


def write_observational_rows(path: Path) -> None:
    """Simulated observational rows: text, outcome, confounder, group (trl_causal.deconfound.simulate)."""
    from trl_causal.deconfound import simulate_observational_texts

    data = simulate_observational_texts(n=OBSERVATIONAL_ROWS, group_size=4, seed=0)
    with open(path, "w") as f:
        for values in zip(*data.values(), strict=True):
            f.write(json.dumps(dict(zip(data, values, strict=True))) + "\n")


def reward_changes(workdir: Path, **changes) -> dict:
    return {
        "plugins": [PLUGIN],
        **REWARD,
        "datasets": [{"path": str(workdir / "observational.jsonl"), "ds_type": "json"}],
        **changes,
    }


NULL = "<null>"  # a change that writes `key: null` into the YAML (None removes the key)


def config(workdir: Path, name: str, **changes) -> Path:
    cfg = yaml.safe_load((workdir / "base.yaml").read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = None if value == NULL else value
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def axolotl_train(path: Path, workdir: Path) -> str:
    """``axolotl train path`` in the Axolotl venv; its log (stdout + stderr), after asserting that it succeeded."""
    run = subprocess.run(
        [str(axolotl_bin()), "train", str(path)], cwd=workdir, env=axolotl_env(), capture_output=True, text=True, timeout=600
    )
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-6000:]
    return log


def test_the_example_configs_train_on_the_oldest_transformers_admitted(workdir):
    """This venv holds Axolotl's pin, transformers 5.20, the pyproject's minimum: the example configs' key
    activation_checkpointing (a newer name) is read there as gradient_checkpointing."""
    python = axolotl_bin().parent / "python"
    for example in ("sft", "latent_shift"):
        run = subprocess.run(
            [str(python), "-m", "trl_causal.cli", "train", "--config", f"example_configs/{example}.yaml", "--model_name_or_path",
             str(workdir / "tiny"), "--max_steps", "1", "--output_dir", str(workdir / f"oldest-{example}")],
            cwd=REPO, env=axolotl_env(), capture_output=True, text=True, timeout=600,
        )
        assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
        assert f"trl-causal: trained '{example}'" in run.stdout


def test_axolotl_train_with_capt(workdir):
    """The two added lines make `axolotl train` train with CAPT: events estimated, fresh symbols every epoch."""
    out = workdir / "out-capt"
    path = config(workdir, "capt", plugins=[PLUGIN], trainer="capt", output_dir=str(out))
    log = axolotl_train(path, workdir)
    assert "trl-causal capt (axolotl): events estimated with 'prontoqa' on 8 training rows, 0 without events" in log
    assert "`trainer: capt` with no `seed:` in the Axolotl YAML" in log  # unseeded rows and LoRA: not an A/B test
    assert "capt_rows_intervened" in log  # our counter in Axolotl's training log
    assert (out / "model.safetensors").is_file()
    summary = json.loads((out / "trl_causal_axolotl_run.json").read_text())
    assert summary["trainer"] == "capt" and summary["steps"] == 4
    assert summary["last_draw"] == 1  # the second epoch drew the symbols of draw 1
    assert summary["rows_drawn"] >= 16 and summary["rows_intervened"] == summary["rows_drawn"]


def test_axolotl_train_with_deconfounded_reward(workdir):
    """`trainer: deconfounded_reward` + `reward_model: true`: the raw observational rows reach trl-causal's trainer,
    which deconfounds them, writes the report and trains a single-logit classifier that Axolotl saves."""
    from transformers import AutoModelForSequenceClassification

    out = workdir / "out-reward"
    path = config(
        workdir,
        "reward",
        **reward_changes(workdir, micro_batch_size=8, num_epochs=1, max_steps=3, output_dir=str(out)),
    )
    log = axolotl_train(path, workdir)
    assert f"trl-causal deconfounded_reward: mode 'deconfounded', objective 'regression', {OBSERVATIONAL_ROWS}" in log
    assert "theta[confounder]" in log and "mean_reward" in log  # our report and our metric in Axolotl's log
    report = json.loads((out / "deconfounding_report.json").read_text())
    assert report["rows"] == {"used": OBSERVATIONAL_ROWS, "dropped_invalid": 0, "dropped_longer_than_max_length": 0, "trained": OBSERVATIONAL_ROWS}
    effect = report["deconfounding"]["effects"]["confounder"]
    assert effect["ci_low"] < effect["theta"] < effect["ci_high"] and effect["se"] > 0
    model, info = AutoModelForSequenceClassification.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert model.config.num_labels == 1 and not (out / "adapter_config.json").exists()


def test_axolotl_train_with_latent_shift(workdir):
    """`trainer: latent_shift` on Axolotl's chat_template rows: prompt = the untrained tokens, label = the trained
    answer through the verbalizer; the heads and verbalizer are saved beside the model, as by `trl-causal train`."""
    from safetensors import safe_open

    out = workdir / "out-latent-shift"
    path = config(
        workdir,
        "latent_shift",
        plugins=[PLUGIN],
        trainer="latent_shift",
        verbalizer=VERBALIZER,
        n_patches=4,
        datasets=[{"path": str(workdir / "shift.jsonl"), "ds_type": "json", "type": "chat_template"}],
        num_epochs=1,
        max_steps=3,
        output_dir=str(out),
    )
    log = axolotl_train(path, workdir)
    assert "trl-causal latent_shift (axolotl): 16 training rows" in log and "frozen view: reference copy" in log
    assert "loss_causal" in log and "loss_adj" in log  # our losses in Axolotl's training log
    assert (out / "model.safetensors").is_file() and (out / "trl_causal_heads.safetensors").is_file()
    with safe_open(out / "model.safetensors", "pt") as weights:  # the heads live in their own file only
        assert not [key for key in weights.keys() if "trl_causal_heads" in key]
    description = json.loads((out / "trl_causal_latent_shift.json").read_text())
    assert description["verbalizer"] == dict(sorted(VERBALIZER.items()))
    assert description["heads"]["n_labels"] == 2


EVALUATED_RUN = dict(val_set_size=0.25, eval_steps=1, num_epochs=1, max_steps=2)  # a quarter held out, evaluated every step


def test_axolotl_latent_shift_evaluates(workdir):
    """`trainer: latent_shift` with an evaluation split: the evaluation rows get their labels too, so Axolotl's
    evaluation runs and logs eval_loss (it used to fail with KeyError 'completion_label')."""
    path = config(
        workdir,
        "latent_shift_eval",
        plugins=[PLUGIN],
        trainer="latent_shift",
        verbalizer=VERBALIZER,
        n_patches=4,
        datasets=[{"path": str(workdir / "shift.jsonl"), "ds_type": "json", "type": "chat_template"}],
        dataset_prepared_path=str(workdir / "prepared-eval"),
        **EVALUATED_RUN,
        output_dir=str(workdir / "out-latent-shift-eval"),
    )
    log = axolotl_train(path, workdir)
    assert "trl-causal latent_shift (axolotl): 12 training rows" in log
    assert "'eval_loss'" in log and "'eval_loss_causal'" in log


NO_EVENT_ROW = {"messages": [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello."}]}


@pytest.fixture(scope="module")
def capt_pool_run(workdir) -> tuple[str, Path]:
    """`trainer: capt` with `symbol_pool: pool` on the PrOntoQA rows plus one row without events: (log, output_dir)."""
    data = workdir / "train_with_chat.jsonl"
    data.write_text((workdir / "train.jsonl").read_text() + json.dumps(NO_EVENT_ROW) + "\n")
    out = workdir / "out-capt-pool"
    path = config(
        workdir,
        "capt_pool",
        plugins=[PLUGIN],
        trainer="capt",
        symbol_pool="pool",
        datasets=[{"path": str(data), "ds_type": "json", "type": "chat_template"}],
        dataset_prepared_path=str(workdir / "prepared-pool"),
        num_epochs=1,
        max_steps=1,
        output_dir=str(out),
    )
    return axolotl_train(path, workdir), out


def test_axolotl_capt_saves_symbol_pool(capt_pool_run):
    """`symbol_pool: pool`: the training rows' names are saved in output_dir beside the final model, where
    `trl-causal eval` reads them (not only in checkpoint-N folders)."""
    from trl_causal import CAPTTrainer

    _, out = capt_pool_run
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / "capt_symbol_pool.json").read_text())["symbols"]
    assert CAPTTrainer.checkpoint_settings(out)["symbol_pool"] == "pool"  # eval predicts as trained, without a YAML


def test_axolotl_capt_warns_rows_without_events(capt_pool_run):
    """Rows in which the estimator finds no event are counted and named in a warning, as by `trl-causal train`."""
    log, _ = capt_pool_run
    assert "on 9 training rows, 1 without events (kept unchanged)" in log
    assert "1 of 9 training rows has no event that the 'prontoqa' estimator recognises, or gave no valid template for (row " in log  # which row: shuffled


# A trl-causal trainer (from a third-party distribution) that has no Axolotl trainer class: registered in the
# checking process only, through trl_causal's plugin manager, before Axolotl loads the plugin and its keys.
REGISTER_DUMMY = r"""
import types
import trl_causal.plugins as registry
from trl_causal.hookspecs import hookimpl

dummy = types.ModuleType("dummy_trl_causal_plugin")

@hookimpl
def register_trainers(register):
    register("dummy_sft", trainer="trl:SFTTrainer", config="trl:SFTConfig", kind="sft", description="test only")

dummy.register_trainers = register_trainers
manager = registry.get_plugin_manager()
manager.pm.register(dummy, name="dummy")
manager.distributions["dummy"] = "dummy-dist"
manager.trainers = manager._collect_trainers()
"""

# One Python process loads every config with axolotl's own `load_cfg` (what `axolotl train` runs first, where
# plugins register and Axolotl validates the YAML) and reports, per config, the trainer class or the error.
CHECK_CONFIGS = REGISTER_DUMMY + r"""
import json, sys
from axolotl.cli.config import load_cfg
from axolotl.integrations.base import PluginManager
results = {}
for path in sys.argv[1:]:
    try:
        cfg = load_cfg(path)
        trainer_cls = PluginManager.get_instance().get_trainer_cls(cfg)
        values = getattr(trainer_cls, "trl_causal_values", {})
        results[path] = {
            "ok": trainer_cls.__name__ if trainer_cls else None,
            "trainer": cfg.get("trainer"),
            "nulls": sorted(key for key, value in values.items() if value is None),
        }
    except Exception as error:
        results[path] = {"error": f"{type(error).__name__}: {error}"}
print("RESULTS" + json.dumps(results))
"""

CASES = {
    # name: (YAML changes, expected: a trainer class name / None, or words the error must contain[, changes]);
    # "REWARD" as the changes: the `reward_model: true` YAML of `reward_changes`, plus the optional third item.
    "plain": ({}, {"ok": None}),
    "baseline_sft": ({"plugins": [PLUGIN], "trainer": "sft"}, {"ok": None, "trainer": "sft"}),
    "capt": ({"plugins": [PLUGIN], "trainer": "capt", "symbol_pool": "nonsense"}, {"ok": "AxolotlCAPTTrainer"}),
    "rl_path": (
        {"plugins": [PLUGIN], "trainer": "capt", "rl": "dpo"},
        ["`trainer: capt` cannot run on Axolotl's RL path (`rl: dpo`)", "remove `rl:`"],
    ),
    "not_listed": ({"trainer": "capt"}, ["`trainer: capt` is set but the trl-causal Axolotl plugin is not enabled", PLUGIN]),
    "unknown": ({"plugins": [PLUGIN], "trainer": "capd"}, ["Unknown trainer 'capd'", "Did you mean 'capt'"]),
    "not_supported": (  # a registered trl-causal trainer without an Axolotl class
        {"plugins": [PLUGIN], "trainer": "dummy_sft"},
        [
            "`trainer: dummy_sft` is not supported on Axolotl yet",
            "'dummy-dist' provides no Axolotl trainer",
            "trl-causal train",
        ],
    ),
    "latent_shift": (
        {"plugins": [PLUGIN], "trainer": "latent_shift", "verbalizer": VERBALIZER},
        {"ok": "AxolotlLatentShiftTrainer", "trainer": "latent_shift"},
    ),
    "latent_shift_label_column": (
        {"plugins": [PLUGIN], "trainer": "latent_shift", "label_column": "label"},
        ["Remove `label_column`", "verbalizer"],
    ),
    "latent_shift_batch": (
        {"plugins": [PLUGIN], "trainer": "latent_shift", "micro_batch_size": 1},
        ["trainer: latent_shift: micro_batch_size=1", "Set micro_batch_size to 2 or more"],
    ),
    "latent_shift_default_batch": (  # no micro_batch_size line: Axolotl's default, 1
        {"plugins": [PLUGIN], "trainer": "latent_shift", "micro_batch_size": None},
        ["trainer: latent_shift: micro_batch_size=1", "Set micro_batch_size to 2 or more"],
    ),
    "latent_shift_packing": (
        {"plugins": [PLUGIN], "trainer": "latent_shift", "sample_packing": True},
        ["sample_packing: false"],
    ),
    "deconfounded_reward": (
        "REWARD",
        {"ok": "AxolotlDeconfoundedRewardTrainer", "trainer": "deconfounded_reward"},
    ),
    "reward_dataset_type": (
        "REWARD",
        ["datasets[0].type: 'chat_template' is not used by trainer: deconfounded_reward", "Remove `type:`"],
        {"datasets": [{"path": "rows.jsonl", "ds_type": "json", "type": "chat_template"}]},
    ),
    "reward_bad_value": (
        "REWARD",
        ["trainer: deconfounded_reward: mode='deconfound' is not one of"],
        {"mode": "deconfound"},
    ),
    "reward_no_confounders": (
        "REWARD",
        ["trainer: deconfounded_reward: No confounder columns", "numeric_confounders"],
        {"numeric_confounders": None},
    ),
    "reward_packing": ("REWARD", ["does not support `sample_packing`"], {"sample_packing": True}),
    # `key: null` means None for the trainer (prompt + completion rows), not the key's default (`text`)
    "reward_text_column_null": (
        "REWARD",
        {"ok": "AxolotlDeconfoundedRewardTrainer", "nulls": ["text_column"]},
        {"text_column": NULL},
    ),
    "latent_shift_null_size": (
        {"plugins": [PLUGIN], "trainer": "latent_shift", "verbalizer": VERBALIZER, "n_causal": NULL, "causal_hidden_sizes": NULL},
        ["trainer: latent_shift: `n_causal`, `causal_hidden_sizes` cannot be null in the Axolotl YAML"],
    ),
    "reward_confounder_as_a_string": (  # one item for a list, as `trl-causal train` takes it
        "REWARD",
        {"ok": "AxolotlDeconfoundedRewardTrainer"},
        {"numeric_confounders": "confounder"},
    ),
    "latent_shift_heads_learning_rate_null": (
        {"plugins": [PLUGIN], "trainer": "latent_shift", "verbalizer": VERBALIZER, "heads_learning_rate": NULL},
        {"ok": "AxolotlLatentShiftTrainer", "nulls": ["heads_learning_rate"]},
    ),
    "reward_kind": ({"plugins": [PLUGIN], "trainer": "deconfounded_reward"}, ["add `reward_model: true`"]),
    "foreign_key": ({"plugins": [PLUGIN], "trainer": "capt", "lambda_causal": 0.5}, ["lambda_causal (a key of latent_shift)"]),
    "packing": ({"plugins": [PLUGIN], "trainer": "capt", "sample_packing": True}, ["sample_packing: false"]),
    "capt_prompt_loss": (
        {"plugins": [PLUGIN], "trainer": "capt", "capt_prompt_loss": True},
        ["Remove `capt_prompt_loss`", "trl-causal train"],
    ),
    # CAPT and latent_shift read the prompt from Axolotl's loss mask: settings that train the prompt too are refused.
    "capt_train_on_inputs": (
        {"plugins": [PLUGIN], "trainer": "capt", "train_on_inputs": True},
        ["trainer: capt does not support `train_on_inputs: true`", "no events are found"],
    ),
    "capt_completion_type": (
        {
            "plugins": [PLUGIN],
            "trainer": "capt",
            "datasets": [{"path": "rows.jsonl", "ds_type": "json", "type": "completion"}],
        },
        ["trainer: capt does not support `datasets[0].type: completion`"],
    ),
    "latent_shift_train_on_inputs": (
        {"plugins": [PLUGIN], "trainer": "latent_shift", "verbalizer": VERBALIZER, "train_on_inputs": True},
        ["trainer: latent_shift does not support `train_on_inputs: true`", "no row has a prompt"],
    ),
    "capt_roles_to_train_user": (
        {
            "plugins": [PLUGIN],
            "trainer": "capt",
            "datasets": [{"path": "rows.jsonl", "ds_type": "json", "type": "chat_template", "roles_to_train": ["user", "assistant"]}],
        },
        ["trainer: capt does not support `datasets[0].roles_to_train` with 'user'"],
    ),
    "latent_shift_completion_type": (
        {
            "plugins": [PLUGIN],
            "trainer": "latent_shift",
            "datasets": [{"path": "rows.jsonl", "ds_type": "json", "type": "completion"}],
        },
        ["trainer: latent_shift does not support `datasets[0].type: completion`"],
    ),
    # A misspelt trl-causal key is an error naming the closest key; Axolotl's own keys (learning_rate, close to
    # heads_learning_rate, is in every YAML here) are left alone.
    "typo": (
        {"plugins": [PLUGIN], "trainer": "capt", "symbol_pol": "nonsense"},
        ["Unknown key `symbol_pol`", "did you mean `symbol_pool` (a key of trainer capt)"],
    ),
    "typo_trainer": ({"plugins": [PLUGIN], "trainr": "capt"}, ["Unknown key `trainr`", "did you mean `trainer`"]),
    "key_part": (  # not close in spelling, but a part of a key: Axolotl would drop it silently
        {"plugins": [PLUGIN], "trainer": "capt", "estimator": "vocabulary"},
        ["Unknown key `estimator`", "did you mean `event_estimator`"],
    ),
    # The baselines run on the YAML of a causal trainer: its keys are set aside (with a note).
    "baseline_sft_latent_shift_keys": (
        {"plugins": [PLUGIN], "trainer": "sft", "verbalizer": VERBALIZER, "n_patches": 4, "lambda_causal": 0.5},
        {"ok": None, "trainer": "sft"},
    ),
    "baseline_sft_capt_keys": (
        {"plugins": [PLUGIN], "trainer": "sft", "symbol_pool": "pool"},
        {"ok": None, "trainer": "sft"},
    ),
    "bad_value": ({"plugins": [PLUGIN], "trainer": "capt", "symbol_pool": "emoji"}, ["symbol_pool"]),
    "missing_terms_file": (
        {"plugins": [PLUGIN], "trainer": "capt", "event_estimator": "vocabulary", "event_estimator_kwargs": {"terms_file": "nope.txt"}},
        ["trainer: capt: The vocabulary terms file 'nope.txt' does not exist"],
    ),
}


def case_changes(workdir: Path, name: str) -> dict:
    changes, *extra = CASES[name][0], *CASES[name][2:]
    if changes == "REWARD":  # the reward-path YAML, with the case's own changes
        changes = reward_changes(workdir, **(extra[0] if extra else {}))
    return changes


@pytest.fixture(scope="module")
def checked(workdir) -> dict:
    paths = {name: config(workdir, f"check-{name}", **case_changes(workdir, name)) for name in CASES}
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


# Rows that an intervention makes longer than sequence_len lose their answer to the cut: the plugin's codec on
# rows tokenized by the tiny model's tokenizer, with a pool of long symbols, in the Axolotl venv.
CUT_ROWS = r"""
import json, sys
from datasets import Dataset
from transformers import AutoTokenizer
from trl_causal.capt import ListPool, RowInterventions, VocabularyEstimator, estimate_rows
from trl_causal_axolotl.capt import TokenInterventionDataset, TokenRowCodec, rows_left_untrained

tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
rows = []
for prompt, answer in [("Is Sally a cat?", " Sally is."), ("Is the dog red?", " No.")]:
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    rows.append({"input_ids": prompt_ids + answer_ids, "labels": [-100] * len(prompt_ids) + answer_ids})
dataset = Dataset.from_list(rows)
longest = max(len(row["input_ids"]) for row in rows)
codec = TokenRowCodec(tokenizer, max_length=longest + 1)
estimated = estimate_rows(VocabularyEstimator(terms=["Sally"]), (codec.estimation_row(row) for row in dataset))
pool = ListPool(["Bartholomew Montgomery Fitzgerald Wellington"])
rows = TokenInterventionDataset(dataset, estimated, RowInterventions(estimated.templates, pool, 0), codec)
print("RESULT" + json.dumps(rows_left_untrained(rows)))
"""


def test_axolotl_capt_finds_rows_the_intervention_pushes_past_sequence_len(workdir):
    run = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", CUT_ROWS, str(workdir / "tiny")],
        cwd=workdir, env=axolotl_env(), capture_output=True, text=True, timeout=300,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT")]
    assert run.returncode == 0 and lines, (run.stdout + run.stderr)[-4000:]
    assert json.loads(lines[-1].removeprefix("RESULT")) == [0]  # the row naming Sally; the other has no event


SPLIT_GROUPS = r"""
import json
from datasets import Dataset
from trl_causal_axolotl.reward import split_off_validation

rows = Dataset.from_list([{"group": i // 4, "text": str(i)} for i in range(120)])  # 30 groups of 4
train, validation = split_off_validation(rows, 0.25, "group", 42)
plain_train, plain_validation = split_off_validation(rows, 0.25, None, 42)
print("RESULT" + json.dumps([list(train["group"]), list(validation["group"]), len(plain_validation)]))
"""


def test_axolotl_val_set_size_keeps_groups_whole(workdir):
    """`val_set_size` with a group_column splits off whole groups: a random split of rows left groups of one
    (an error under `objective: pairwise`, blaming the data)."""
    run = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", SPLIT_GROUPS], cwd=workdir, env=axolotl_env(), capture_output=True, text=True, timeout=300
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT")]
    assert run.returncode == 0 and lines, (run.stdout + run.stderr)[-4000:]
    train, validation, plain = json.loads(lines[-1].removeprefix("RESULT"))
    assert not set(train) & set(validation) and len(validation) == 32 and plain == 30  # 8 of 30 groups; 25% of rows
    assert all(train.count(group) == 4 for group in train) and all(validation.count(group) == 4 for group in validation)


# The plugin's capt trainer built on tokenized PrOntoQA rows, in the Axolotl venv, with only its own part of __init__
# (AxolotlTrainer's, which loads the model and the Accelerator, is skipped). `held_out`: the evaluation split in two
# orders; `rank1`: the trainer as DDP rank 1, which receives the main rank's templates.
CAPT_TRAINER = r"""
import json, sys, types
from transformers import AutoTokenizer, TrainingArguments
from datasets import Dataset
from axolotl.core.trainers.base import AxolotlTrainer
from trl_causal.capt import EstimatedRows, ProntoQAEstimator, estimate_rows, generate_prontoqa
from trl_causal.trainer import capt_trainer
from trl_causal.trainer.capt_config import CAPTConfig
from trl_causal_axolotl.capt import AxolotlCAPTTrainer, TokenRowCodec

def bare_init(self, *args, **kwargs):
    self.args = kwargs["args"]
    self.accelerator = types.SimpleNamespace(is_main_process=False)

AxolotlTrainer.__init__ = bare_init
AxolotlTrainer.add_callback = lambda self, callback: None
mode, tiny, output_dir = sys.argv[1:]
tokenizer = AutoTokenizer.from_pretrained(tiny)

def tokenized(rows):
    items = []
    for row in rows:
        prompt_ids = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(" " + row["completion"], add_special_tokens=False)["input_ids"]
        items.append({"input_ids": prompt_ids + answer_ids, "labels": [-100] * len(prompt_ids) + answer_ids})
    return Dataset.from_list(items)

def trainer(train, held_out=None):
    values = {"on_no_events": "drop", "symbol_pool": "nonsense"}
    trainer_class = type("AxolotlCAPTTrainer", (AxolotlCAPTTrainer,), {"trl_causal_values": values})
    args = TrainingArguments(output_dir=output_dir, report_to="none", bf16=False, seed=0)
    return trainer_class(args=args, processing_class=tokenizer, train_dataset=train, eval_dataset=held_out)

def texts(dataset):
    return [tokenizer.decode(dataset[index]["input_ids"]) for index in range(len(dataset))]

rows = generate_prontoqa(6, "id", seed=0)
train = tokenized(rows)
if mode == "held_out":
    held_out = tokenized(rows + [{"prompt": "Say hello.", "completion": "Hello."}])  # the last row has no event
    reordered = held_out.select(range(len(held_out) - 1, -1, -1))
    first, second = trainer(train, held_out), trainer(train, reordered)
    result = {
        "train": texts(first.train_dataset),
        "eval": texts(first.eval_dataset),
        "reordered": texts(second.eval_dataset)[::-1],
        "raw": texts(held_out),
    }
else:
    main_rank_rows = [0, 2, 4]  # e.g. an llm endpoint failed on the others (on_no_events: drop)
    codec = TokenRowCodec(tokenizer)
    templates = estimate_rows(ProntoQAEstimator(), (codec.estimation_row(train[i]) for i in main_rank_rows)).templates
    sent, estimated = [], []
    TrainingArguments.process_index = property(lambda self: 1)

    def broadcast_object_list(objects):
        sent.append(list(objects))
        return [EstimatedRows(templates, main_rank_rows, [1, 3, 5], [1, 3, 5])]

    def counting(build):
        def build_event_estimator(self):
            estimator = build(self)
            estimate_many = estimator.estimate_many
            estimator.estimate_many = lambda items: estimated.append(len(items)) or estimate_many(items)
            return estimator
        return build_event_estimator

    capt_trainer.broadcast_object_list = broadcast_object_list
    CAPTConfig.build_event_estimator = counting(CAPTConfig.build_event_estimator)
    rank1 = trainer(train)
    result = {"estimated": estimated, "sent": sent, "rows": rank1.train_dataset.row_indices, "failed": rank1.train_dataset.failed}
print("RESULT" + json.dumps(result))
"""


def run_capt_trainer(workdir: Path, mode: str) -> dict:
    run = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", CAPT_TRAINER, mode, str(workdir / "tiny"), str(workdir / f"out-capt-{mode}")],
        cwd=workdir, env=axolotl_env(), capture_output=True, text=True, timeout=300,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT")]
    assert run.returncode == 0 and lines, (run.stdout + run.stderr)[-4000:]
    return json.loads(lines[-1].removeprefix("RESULT"))


def test_axolotl_capt_evaluation_rows_get_symbols_of_their_own(workdir):
    """An evaluation row's symbols follow from its prompt (the same in any order of the split), not from its place:
    evaluation row k used to get training row k's first-epoch symbols. Evaluation rows without events are kept
    unchanged under `on_no_events: drop`, as by `trl-causal train`."""
    result = run_capt_trainer(workdir, "held_out")
    train, evaluated = result["train"], result["eval"]
    assert evaluated == result["reordered"]
    assert len(evaluated) == 7 and evaluated[6] == result["raw"][6]
    assert all(evaluated[k] not in (train[k], result["raw"][k]) for k in range(6))


def test_axolotl_capt_estimates_on_the_main_process_only(workdir):
    """Under DDP a rank other than the main one estimates nothing and trains on the main rank's rows (with an llm
    estimator ranks that estimated for themselves got other answers, kept other rows, and hung under drop)."""
    result = run_capt_trainer(workdir, "rank1")
    assert result["estimated"] == [] and result["sent"] == [[None]]
    assert result["rows"] == [0, 2, 4] and result["failed"] == [1, 3, 5]


def test_axolotl_capt_evaluates(workdir):
    """`trainer: capt` with an evaluation split: its rows are estimated and intervened as held-out rows, and
    Axolotl's evaluation logs eval_loss."""
    path = config(
        workdir,
        "capt_eval",
        plugins=[PLUGIN],
        trainer="capt",
        dataset_prepared_path=str(workdir / "prepared-capt-eval"),
        **EVALUATED_RUN,
        output_dir=str(workdir / "out-capt-eval"),
    )
    log = axolotl_train(path, workdir)
    assert "trl-causal capt (axolotl): events estimated with 'prontoqa' on 6 training rows, 0 without events" in log
    assert "'eval_loss'" in log
