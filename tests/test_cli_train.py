"""`trl-causal train` end to end on the tiny model: every registered trainer, the installed plugin, overrides."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from conftest import REPO, base_config, cpu_training_args, interrupt_after_first_step, reward_rows, run_cli, sft_rows, write_config, write_jsonl
from plugin_helpers import make_distribution, pip_install_target
from trl_causal.errors import ConfigError
from trl_causal.plugins import PluginManager
from trl_causal.train import SUMMARY_FILE

ROWS_BY_KIND = {"sft": sft_rows, "reward": reward_rows}


def observational_rows():
    from trl_causal.deconfound import simulate_observational_texts

    columns = simulate_observational_texts(n=40, group_size=4, seed=0)
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


# Trainers whose rows or settings differ from their kind's defaults: (rows, extra config).
TRAINER_SETUPS = {
    "deconfounded_reward": (observational_rows, {"numeric_confounders": ["confounder"], "feature_source": "tfidf", "n_folds": 3}),
}
AUTO_CLASS_BY_KIND = {"sft": "AutoModelForCausalLM", "reward": "AutoModelForSequenceClassification"}
BUILTIN_TRAINERS = [spec for spec in PluginManager(autoload=False).trainers]


def train(tmp_path, tiny_model, trainer, rows, *cli_args, env=None, **overrides):
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    config = write_config(tmp_path / "cfg.yaml", {"trainer": trainer, **base_config(tiny_model, data, tmp_path / "out", **overrides)})
    result = run_cli("train", "--config", str(config), *cli_args, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((tmp_path / "out" / SUMMARY_FILE).read_text()), result


@pytest.mark.parametrize("spec", BUILTIN_TRAINERS, ids=lambda spec: spec.name)
def test_every_builtin_trainer_trains_and_saves_a_reloadable_checkpoint(spec, tmp_path, tiny_model):
    import transformers

    rows, extra = TRAINER_SETUPS.get(spec.name, (ROWS_BY_KIND[spec.kind], {}))
    summary, result = train(tmp_path, tiny_model, spec.name, rows(), **extra)
    assert summary["trainer"] == spec.name and summary["steps"] == 2
    assert "checkpoint saved to" in result.stdout
    model = getattr(transformers, AUTO_CLASS_BY_KIND[spec.kind]).from_pretrained(tmp_path / "out")
    assert model.config.hidden_size == 32


def test_command_line_overrides_win_over_the_yaml_and_the_configs_notes_show_once(tmp_path, tiny_model):
    import accelerate
    import datasets
    import peft
    import torch
    import transformers
    import trl

    from trl_causal import __version__

    mixture = [{"path": "json", "data_files": str(tmp_path / "data.jsonl")}]  # beside dataset_name, which TRL then ignores
    secret = "hf_secret_not_recorded"
    summary, result = train(
        tmp_path, tiny_model, "sft", sft_rows(), "--max_steps", "1", "--trainer", "sft", "--hub_token", secret,
        max_steps=3, symbol_pool="letters", datasets=mixture, data_seed=7, model_init_kwargs={"token": secret},
    )
    assert summary["steps"] == 1 and "trained 'sft' on 16 rows for 1 step (world size 1)" in result.stdout
    assert result.stderr.count("note: ignoring 'symbol_pool'") == 1  # the launcher's, not again the training process's
    assert result.stderr.count("sets both `datasets` and `dataset_name`: the `datasets` mixture is loaded") == 1
    # the record says how to run it again: the config as the run used it (the command line's values won), secrets hidden
    reproduce = summary["reproduce"]
    assert reproduce["config_file"] == str(tmp_path / "cfg.yaml") and reproduce["cwd"] == os.getcwd()
    config = reproduce["config"]
    assert {key: config[key] for key in ("trainer", "max_steps", "seed", "data_seed", "model_name_or_path", "dataset_name")} == {
        "trainer": "sft", "max_steps": 1, "seed": 0, "data_seed": 7, "model_name_or_path": str(tiny_model), "dataset_name": str(tmp_path / "data.jsonl"),
    }
    assert config["datasets"][0]["path"] == "json" and config["datasets"][0]["data_files"] == str(tmp_path / "data.jsonl")
    assert (config["learning_rate"], config["per_device_train_batch_size"], config["gradient_accumulation_steps"]) == (1e-3, 2, 1)
    assert "symbol_pool" not in config and "use_peft" not in config  # a key the run ignored; no LoRA
    assert config["hub_token"] == "<hidden>" and config["model_init_kwargs"] == {"token": "<hidden>"}
    assert secret not in (tmp_path / "out" / SUMMARY_FILE).read_text()
    modules = (trl, transformers, torch, peft, accelerate, datasets)
    assert reproduce["versions"] == {"trl_causal": __version__, **{module.__name__: module.__version__ for module in modules}}


def test_null_on_the_command_line_unsets_a_yaml_setting(tmp_path, tiny_model):
    from trl_causal.configuration import parse_run_config

    settings = {"trainer": "deconfounded_reward", "outcome_column": "y", "numeric_confounders": ["c"], "text_column": "headline"}
    config = write_config(tmp_path / "cfg.yaml", {**settings, **base_config(tiny_model, tmp_path / "d.jsonl", tmp_path / "out")})
    assert parse_run_config(["--text_column", "null"], str(config)).training_args.text_column is None
    assert parse_run_config(["--text_column=NULL", "--group_column", "~"], str(config)).training_args.text_column is None
    assert parse_run_config(["--report_to", "none"], str(config)).training_args.report_to == []  # TRL's "none", not None
    assert parse_run_config(["--text_column", "null", "--text_column", "body"], str(config)).training_args.text_column == "body"
    assert parse_run_config(["--outcome_column", "null"], str(config)).training_args.outcome_column == "null"  # not optional
    # a list field takes no null, as in the YAML (argparse read it as the list ["null"], a column named "null")
    with pytest.raises(ConfigError, match=r"Key 'categorical_confounders' in the command line expects list, got None .* For none, give the empty list \[\] \(--categorical_confounders '\[\]'\)"):
        parse_run_config(["--categorical_confounders", "null"], str(config))
    assert parse_run_config(["--categorical_confounders", "[]"], str(config)).training_args.categorical_confounders == []
    from trl import TrlParser  # a TRL script's own parser hands "null" over as a string

    from trl_causal import DeconfoundedRewardConfig, LatentShiftConfig

    base = ["--output_dir", str(tmp_path), "--bf16", "false"]
    parsed, = TrlParser((DeconfoundedRewardConfig,)).parse_args_into_dataclasses(base + ["--outcome_column", "y", "--numeric_confounders", "c", "--text_column", "null"])
    assert parsed.text_column is None and parsed.outcome_column == "y"
    parsed, = TrlParser((LatentShiftConfig,)).parse_args_into_dataclasses(base + ["--label_column", "~", "--verbalizer", "None"])
    assert parsed.label_column is None and parsed.verbalizer is None


def test_a_report_to_integration_whose_package_is_missing_is_one_line_before_launch(tmp_path, tiny_model):
    from transformers.integrations import get_available_reporting_integrations

    from trl_causal.configuration import parse_run_config

    if "swanlab" in get_available_reporting_integrations():
        pytest.skip("swanlab is installed here")
    config = write_config(tmp_path / "cfg.yaml", {"trainer": "sft", **base_config(tiny_model, tmp_path / "d.jsonl", tmp_path / "out")})
    with pytest.raises(ConfigError, match=r"report_to in the command line names swanlab, whose package is not installed: `pip install swanlab`, or set `report_to: none`"):
        parse_run_config(["--report_to", "swanlab"], str(config))
    in_yaml = write_config(tmp_path / "swan.yaml", {"trainer": "sft", **base_config(tiny_model, tmp_path / "d.jsonl", tmp_path / "out", report_to="swanlab")})
    with pytest.raises(ConfigError, match=r"report_to in .*swan.yaml names swanlab"):
        parse_run_config([], str(in_yaml))
    assert parse_run_config(["--report_to", "none"], str(config)).training_args.report_to == []


def test_a_dict_or_list_field_takes_json_on_the_command_line(tmp_path, tiny_model):
    from trl_causal.configuration import parse_run_config

    config = write_config(tmp_path / "cfg.yaml", {"trainer": "sft", **base_config(tiny_model, tmp_path / "d.jsonl", tmp_path / "out")})
    # liger_kernel_config is `dict[str, bool] | None`: argparse read it with dict() ("invalid dict value")
    parsed = parse_run_config(["--liger_kernel_config", '{"rope": false}'], str(config)).training_args
    assert parsed.liger_kernel_config == {"rope": False}
    with pytest.raises(ConfigError, match=r"--liger_kernel_config takes a JSON object"):
        parse_run_config(["--liger_kernel_config", "rope=false"], str(config))
    # a list field: `--symbol_pool Foo Bar` (argparse), or the JSON list a YAML user writes
    capt = ["--trainer", "capt", "--symbol_pool"]
    assert parse_run_config([*capt, '["Foo", "Bar"]'], str(config)).training_args.symbol_pool == ["Foo", "Bar"]
    assert parse_run_config([*capt, "Foo", "Bar"], str(config)).training_args.symbol_pool == ["Foo", "Bar"]
    with pytest.raises(ConfigError, match=r"""--symbol_pool takes a JSON list, e.g. --symbol_pool '\["a", "b"\]'; got '\[Foo'"""):
        parse_run_config([*capt, "[Foo"], str(config))
    with pytest.raises(ConfigError, match=r"Unknown symbol pool 'Foo,Bar'.*on the command line `--symbol_pool A B C`"):
        parse_run_config([*capt, "Foo,Bar"], str(config))


def test_rows_that_truncation_drops_are_counted_and_none_left_is_an_error(tmp_path, tiny_model, capsys):
    from trl_causal import train as train_module

    rows = sft_rows(8)
    for row in rows[:3]:
        row["prompt"] = row["prompt"] * 6  # these fill max_length: TRL drops them (keep_start)
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    settings = base_config(tiny_model, data, tmp_path / "out", max_length=120, max_steps=1)
    config = write_config(tmp_path / "cfg.yaml", {"trainer": "sft", **settings})
    assert train_module.cli(["--config", str(config)]) == 0
    assert "3 of 8 training rows were dropped (TRL drops the rows that max_length=120 leaves" in capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())
    assert summary["train_rows"] == 5
    assert summary["answer_prefix"] == " "  # " True": eval scores answers of rows without a completion after a space
    assert train_module.cli(["--config", str(config), "--max_length", "8"]) == 2
    assert "No training row is left of the 8 loaded" in capsys.readouterr().err
    # packing puts all 8 rows into fewer sequences of max_length tokens: none is dropped
    assert train_module.cli(["--config", str(config), "--packing", "true", "--output_dir", str(tmp_path / "packed")]) == 0
    assert "dropped" not in capsys.readouterr().err
    assert json.loads((tmp_path / "packed" / SUMMARY_FILE).read_text())["train_rows"] == 8

    pairs = reward_rows(8)
    for row in pairs[:1]:
        row["chosen"] *= 12  # longer than max_length: TRL's RewardTrainer drops the pair
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    settings = base_config(tiny_model, data, tmp_path / "out-reward", max_length=60, max_steps=1)
    config = write_config(tmp_path / "reward.yaml", {"trainer": "reward", **settings})
    assert train_module.cli(["--config", str(config)]) == 0
    out = capsys.readouterr()
    assert "1 of 8 training rows was dropped (TRL's RewardTrainer drops the pairs whose chosen or rejected" in out.err
    assert "trained 'reward' on 7 rows" in out.out
    assert json.loads((tmp_path / "out-reward" / SUMMARY_FILE).read_text())["train_rows"] == 7

    streamed = write_config(tmp_path / "streamed.yaml", {"trainer": "sft", **settings, "dataset_name": str(tmp_path / "data.jsonl"), "output_dir": str(tmp_path / "out-streamed"), "dataset_streaming": True})
    assert train_module.cli(["--config", str(streamed)]) == 0
    assert "trained 'sft' on streamed rows for 1 step (" in capsys.readouterr().out
    from trl_causal.configuration import read_yaml

    unbounded = write_config(tmp_path / "unbounded.yaml", {**read_yaml(streamed), "max_steps": -1, "num_train_epochs": 1})
    assert train_module.cli(["--config", str(unbounded)]) == 2  # transformers' traceback, once the model had loaded
    assert "The training rows are streamed (`dataset_streaming: true`, or `streaming: true` beside `datasets:`), so they have no length to count epochs by: set `max_steps`" in capsys.readouterr().err
    # TRL's `streaming` streams a `datasets:` mixture only: beside dataset_name it changes nothing, which is said
    mistaken = write_config(tmp_path / "mistaken.yaml", {**read_yaml(streamed), "dataset_streaming": False, "streaming": True})
    assert train_module.cli(["--config", str(mistaken)]) == 0
    out = capsys.readouterr()
    assert "sets `streaming: true`, which streams a `datasets:` mixture only, so" in out.err and "is loaded whole" in out.err
    assert "trained 'sft' on 5 rows" in out.out  # not streamed: counted, 3 of 8 over max_length dropped


def test_settings_that_trls_trainer_refuses_are_one_line(tmp_path, tiny_model, capsys):
    import shutil

    from transformers import AutoTokenizer

    from trl_causal import train as train_module

    model = tmp_path / "model"  # a chat template without {% generation %} markers, which TRL cannot patch
    shutil.copytree(tiny_model, model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.chat_template = tokenizer.chat_template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    tokenizer.save_pretrained(model)
    rows = [{"messages": [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}]} for row in sft_rows(4)]
    data = write_jsonl(tmp_path / "chat.jsonl", rows)
    config = write_config(tmp_path / "cfg.yaml", {"trainer": "sft", **base_config(model, data, tmp_path / "out", assistant_only_loss=True)})
    assert train_module.cli(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "trl-causal: error: TRL refused the settings or data: The chat template is not training-compatible" in err
    assert "chat_template_path), or drop assistant_only_loss." in err and "Traceback" not in err


def test_full_weights_saved_over_an_earlier_lora_run_remove_its_adapter(tmp_path, tiny_model):
    from peft import PeftModel

    from trl_causal.evaluation import load_checkpoint

    summary, _ = train(tmp_path, tiny_model, "sft", sft_rows(), use_peft=True, lora_r=4, lora_alpha=8)
    assert (tmp_path / "out" / "adapter_config.json").is_file()
    lora = {key: summary["reproduce"]["config"][key] for key in ("use_peft", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")}
    assert lora == {"use_peft": True, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.05, "lora_target_modules": None}  # defaults too
    _, result = train(tmp_path, tiny_model, "sft", sft_rows())  # the same output_dir, full fine-tuning
    assert "removed the LoRA adapter an earlier run left" in result.stderr
    assert not any((tmp_path / "out" / name).exists() for name in ("adapter_config.json", "adapter_model.safetensors"))
    model, _ = load_checkpoint(tmp_path / "out")
    assert not isinstance(model, PeftModel)


def test_the_run_record_holds_the_fields_a_config_adds_to_its_base():
    from dataclasses import dataclass, field

    from transformers import TrainingArguments
    from trl import SFTConfig

    from trl_causal.train import method_settings
    from trl_causal.trainer.capt_config import CAPTConfig

    @dataclass
    class PlainArguments(TrainingArguments):  # a plugin's config may extend transformers' class, not TRL's
        alpha: float = field(default=0.5)

    assert method_settings(PlainArguments(output_dir="unused", use_cpu=True)) == {"alpha": 0.5}
    assert method_settings(SFTConfig(output_dir="unused", use_cpu=True, bf16=False)) == {}
    capt = method_settings(CAPTConfig(output_dir="unused", use_cpu=True, bf16=False, symbol_pool="nonsense", seed=3))
    assert capt["symbol_pool"] == "nonsense" and "learning_rate" not in capt
    assert capt["intervention_seed"] == 3  # None follows `seed`: recorded as used, so eval draws as training did


def test_a_checkpoint_file_whose_writing_fails_keeps_the_previous_one_whole(tmp_path):
    from trl_causal.paths import read_json_file, write_json_file

    write_json_file(tmp_path / "checkpoint-5", SUMMARY_FILE, {"trainer": "capt", "steps": 5})
    with pytest.raises(TypeError):  # json.dump fails after it has written the first key
        write_json_file(tmp_path / "checkpoint-5", SUMMARY_FILE, {"trainer": "capt", "steps": object()})
    assert read_json_file(tmp_path / "checkpoint-5", SUMMARY_FILE) == {"trainer": "capt", "steps": 5}
    assert sorted(path.name for path in (tmp_path / "checkpoint-5").iterdir()) == [SUMMARY_FILE]


def test_processes_that_save_one_json_file_at_once_each_leave_it_whole(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from trl_causal.errors import TrlCausalError
    from trl_causal.paths import read_json_file, write_json_file

    def save_and_read(writer: int) -> dict:  # two evals of one checkpoint write its eval_results.json
        write_json_file(tmp_path, "eval_results.json", {"writer": writer, "pad": "x" * (100_000 if writer % 2 else 10)})
        return read_json_file(tmp_path, "eval_results.json")

    with ThreadPoolExecutor(8) as pool:
        assert all(set(saved) == {"writer", "pad"} for saved in pool.map(save_and_read, range(400)))
    assert os.listdir(tmp_path) == ["eval_results.json"]
    for cut_short, detail in (('{"writer": 1', "Expecting"), ("[1]", "it holds a JSON list")):
        (tmp_path / "eval_results.json").write_text(cut_short)
        with pytest.raises(TrlCausalError, match=rf"^\S+eval_results.json holds no JSON object \({detail}.*save it again"):
            read_json_file(tmp_path, "eval_results.json")


def test_a_run_into_an_output_dir_another_run_writes_fails_before_it_loads_anything(tmp_path, tiny_model, monkeypatch, capsys):
    from trl_causal import train as train_module
    from trl_causal.paths import CACHE_ENV, writing_output_dir

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    data = write_jsonl(tmp_path / "data.jsonl", sft_rows())
    out = tmp_path / "out"
    config = write_config(tmp_path / "cfg.yaml", {"trainer": "sft", **base_config(tiny_model, data, out)})
    (tmp_path / "link").symlink_to(out, target_is_directory=True)  # another name of the same folder

    def load_run_datasets(*args, **kwargs):
        raise AssertionError("the run loaded its data")

    monkeypatch.setattr(train_module, "load_run_datasets", load_run_datasets)
    open_files = len(os.listdir("/dev/fd"))
    with writing_output_dir(out):  # what the other run holds
        for output_dir in (out, tmp_path / "link"):
            assert train_module.cli(["--config", str(config), "--output_dir", str(output_dir)]) == 2
            error = f"another trl-causal run (pid {os.getpid()}) is writing {output_dir}: give this run another output_dir, or wait for it."
            assert capsys.readouterr().err.splitlines()[-1] == f"trl-causal: error: {error}"
    assert not out.exists() and len(os.listdir("/dev/fd")) == open_files
    with pytest.raises(AssertionError, match="loaded its data"):  # released when that run ended
        train_module.cli(["--config", str(config)])


def test_a_fresh_run_into_another_trainers_output_dir_fails_naming_its_files(tmp_path):
    from trl_causal.errors import TrlCausalError
    from trl_causal.paths import write_json_file
    from trl_causal.train import check_output_dir_holds_no_other_run

    check_output_dir_holds_no_other_run(str(tmp_path / "new"), "capt")  # no such folder yet
    for folder in (tmp_path, tmp_path / "checkpoint-1", tmp_path / "checkpoint-3"):
        write_json_file(folder, SUMMARY_FILE, {"trainer": "latent_shift"})
    check_output_dir_holds_no_other_run(str(tmp_path), "latent_shift")  # a rerun of the same trainer: TRL's way
    message = r"holds a run of trainer 'latent_shift' \(the final model, checkpoint-3, checkpoint-1\)\. A 'capt' run there would mix"
    with pytest.raises(TrlCausalError, match=message):
        check_output_dir_holds_no_other_run(str(tmp_path), "capt")


def test_resuming_checks_the_checkpoints_trainer_and_notes_changed_settings(tmp_path, capsys):
    import json as json_module

    from trl_causal.errors import TrlCausalError
    from trl_causal.train import check_resumed_run

    (tmp_path / SUMMARY_FILE).write_text(json_module.dumps({"trainer": "capt", "settings": {"symbol_pool": "nonsense"}}))
    (tmp_path / "trainer_state.json").write_text(json_module.dumps({"global_step": 10}))
    with pytest.raises(TrlCausalError, match="was saved by trainer 'capt'; resume it with `trainer: capt`, not 'sft'"):
        check_resumed_run(str(tmp_path), "sft", {})
    assert check_resumed_run(str(tmp_path), "capt", {"symbol_pool": "letters"}, max_steps=12) == (10, {})
    assert "trained with symbol_pool='nonsense' (now 'letters')" in capsys.readouterr().err
    # a finished run resumed with the same max_steps: transformers would train an 11th step
    with pytest.raises(TrlCausalError, match=r"is at step 10 and max_steps is 10: nothing is left to train.*Raise max_steps"):
        check_resumed_run(str(tmp_path), "capt", {}, max_steps=10)
    # an epoch-based run that finished (as transformers records it): resumed with the same epochs, no step is left
    (tmp_path / "trainer_state.json").write_text(json_module.dumps({"global_step": 10, "max_steps": 10, "epoch": 2.0}))
    with pytest.raises(TrlCausalError, match=r"finished its run \(step 10 of 10, epoch 2\) and num_train_epochs is 2.*Raise num_train_epochs"):
        check_resumed_run(str(tmp_path), "capt", {}, num_train_epochs=2)
    check_resumed_run(str(tmp_path), "capt", {}, num_train_epochs=3)
    check_resumed_run(str(tmp_path), "capt", {}, max_steps=12, num_train_epochs=2)
    (tmp_path / "trainer_state.json").write_text(json_module.dumps({"global_step": 5, "max_steps": 10, "epoch": 1.0}))
    check_resumed_run(str(tmp_path), "capt", {}, num_train_epochs=2)  # stopped halfway: goes on


def test_secrets_are_hidden_by_their_names_and_a_hidden_one_is_never_a_change_nor_a_value(tmp_path, capsys):
    """HIDDEN_SETTINGS missed password, secret*, *_token and *_key, so a plugin estimator's keys went into the run
    record, the prediction file and eval's notes in clear. A recorded "<hidden>" is the current secret, not a change."""
    from trl_causal.configuration import HIDDEN, hidden_secrets, is_secret_name, settings_differing, with_current_secrets
    from trl_causal.train import check_resumed_run
    from trl_causal.trainer.capt_config import CAPTConfig

    secrets = ["token", "hub_token", "use_auth_token", "password", "passwd", "secret", "client_secret", "secret_key",
               "aws_secret_access_key", "api_key", "apiKey", "api-key", "apikey", "access_token", "private_key",
               "credentials", "auth", "Authorization"]
    harmless = ["api_key_env", "max_tokens", "num_tokens", "max_new_tokens", "keys", "pad_token", "eos_token", "author", "model"]
    assert [name for name in secrets if not is_secret_name(name)] == [] and [name for name in harmless if is_secret_name(name)] == []
    kwargs = {"api_key": "sk-1", "token": "t-2", "password": "p-3", "secret_key": "s-4", "api_key_env": "MY_KEY",
              "max_tokens": 9, "base_url": "http://bob:pw-5@host/v1?api-version=1&key=q-6"}
    assert hidden_secrets([{"event_estimator_kwargs": kwargs}]) == [{"event_estimator_kwargs": {
        "api_key": HIDDEN, "token": HIDDEN, "password": HIDDEN, "secret_key": HIDDEN, "api_key_env": "MY_KEY",
        "max_tokens": 9, "base_url": "http://<hidden>@host/v1?api-version=<hidden>&key=<hidden>"}}]
    # a hidden value is this run's secret where it has one there; else the setting counts as not recorded
    recorded = {"kwargs": {"api_key": HIDDEN, "model": "m"}, "seed": 1}
    assert with_current_secrets(recorded, {"kwargs": {"api_key": "sk-now", "model": "n"}}) == {"kwargs": {"api_key": "sk-now", "model": "m"}, "seed": 1}
    assert with_current_secrets(recorded, {"kwargs": {"model": "m"}}) == {"seed": 1}
    # a verbalizer's keys are class labels, not setting names: a label "token" is kept, and its change is a change
    labels = {"verbalizer": {"token": "yes", "auth": "no"}}
    assert hidden_secrets(labels) == labels and with_current_secrets(labels, {"verbalizer": {"token": "no", "auth": "yes"}}) == labels

    url = "http://127.0.0.1:1/v1?api-key="
    args = CAPTConfig(**cpu_training_args(tmp_path), event_estimator="llm", event_estimator_kwargs={"model": "m", "base_url": url + "now-7"})
    assert settings_differing(args, {"event_estimator_kwargs": {"model": "m", "base_url": url + HIDDEN}}) == {}
    assert settings_differing(args, {"event_estimator_kwargs": {"model": "old", "base_url": url + HIDDEN}}) == {
        "event_estimator_kwargs": {"model": "old", "base_url": url + HIDDEN}}
    (tmp_path / SUMMARY_FILE).write_text(json.dumps({"trainer": "capt", "settings": {"event_estimator_kwargs": {"api_key": HIDDEN, "model": "m"}}}))
    assert check_resumed_run(str(tmp_path), "capt", {"event_estimator_kwargs": {"api_key": "sk-now", "model": "m"}}) == (0, {})
    assert capsys.readouterr().err == ""
    check_resumed_run(str(tmp_path), "capt", {"event_estimator_kwargs": {"api_key": "sk-now", "model": "n"}})
    err = capsys.readouterr().err
    assert "trained with event_estimator_kwargs={'api_key': '<hidden>', 'model': 'm'} (now {'api_key': '<hidden>', 'model': 'n'})" in err


def test_the_training_processes_import_nothing_from_the_current_directory(tmp_path, tiny_model, monkeypatch):
    """`accelerate launch --module` runs `python -m trl_causal.train`, which puts the current directory first on
    sys.path: a torch.py or a plugin's dist-info folder there loaded in the training processes (not in trl-causal)."""
    import accelerate.commands.launch

    from trl_causal import cli

    prepare = accelerate.commands.launch.prepare_simple_launcher_cmd_env

    def probe(launch_args):  # the training process's command, environment and directory, with a probe to run
        command, env = prepare(launch_args)
        assert command[1:3] == ["-m", "trl_causal.train"]
        return [command[0], "-c", "import importlib.util, sys; sys.exit(importlib.util.find_spec('shadowing') is not None)"], env

    monkeypatch.setattr(accelerate.commands.launch, "prepare_simple_launcher_cmd_env", probe)
    (tmp_path / "shadowing.py").write_text("")
    monkeypatch.chdir(tmp_path)
    data = write_jsonl(tmp_path / "data.jsonl", sft_rows())
    config = write_config(tmp_path / "cfg.yaml", {"trainer": "sft", **base_config(tiny_model, data, tmp_path / "out")})
    before = os.environ.get("PYTHONSAFEPATH")
    assert cli.main(["train", "--config", str(config)]) == 0
    assert os.environ.get("PYTHONSAFEPATH") == before


def test_resuming_refuses_settings_the_checkpoint_fixes_and_keeps_its_class_order(tmp_path, capsys):
    """A setting the saved heads or memory bank were built with, or a rate the restored optimizer keeps, cannot
    change on resume; a verbalizer unset or reordered takes the checkpoint's (its order is the heads' classes)."""
    import json as json_module

    from trl_causal.errors import TrlCausalError
    from trl_causal.train import check_resumed_run

    verbalizer = {"positive": "good", "negative": "bad"}
    recorded = {"verbalizer": verbalizer, "low_level_layer": 0, "heads_learning_rate": 0.001, "lambda_adj": 1.0}
    (tmp_path / SUMMARY_FILE).write_text(json_module.dumps({"trainer": "latent_shift", "settings": recorded}))
    fixed = ("verbalizer", "low_level_layer")
    for key, value in (("low_level_layer", 1), ("heads_learning_rate", 0.1), ("verbalizer", {"positive": "yes", "negative": "no"})):
        with pytest.raises(TrlCausalError, match=rf"trained with {key}=.* and this run sets .*Resume with {key}: "):
            check_resumed_run(str(tmp_path), "latent_shift", {**recorded, key: value}, fixed=fixed)
    reordered = {"negative": "bad", "positive": "good"}
    for now in (reordered, None):
        step, taken = check_resumed_run(str(tmp_path), "latent_shift", {**recorded, "verbalizer": now, "lambda_adj": 0.5}, fixed=fixed)
        assert list(taken["verbalizer"].items()) == list(verbalizer.items())
    assert "lambda_adj=1.0 (now 0.5)" in capsys.readouterr().err  # a loss weight may change
    assert check_resumed_run(str(tmp_path), "latent_shift", recorded, fixed=fixed) == (0, {})
    # a verbalizer the first run read from the data is checked by the trainer against the one its heads were built with
    (tmp_path / SUMMARY_FILE).write_text(json_module.dumps({"trainer": "latent_shift", "settings": {**recorded, "verbalizer": None}}))
    assert check_resumed_run(str(tmp_path), "latent_shift", recorded, fixed=fixed) == (0, {})


def test_installed_third_party_plugin_trains_by_name_and_a_broken_one_is_reported_once(tmp_path, tiny_model):
    site = pip_install_target(REPO / "plugins" / "weighted_sft", tmp_path / "site")
    broken = make_distribution(tmp_path / "src", "broken-plugin", "broken_plugin_mod", "import a_module_that_does_not_exist\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(pip_install_target(broken, tmp_path / "broken-site"))])}
    listed = run_cli("list", env=env)
    assert "weighted_sft" in listed.stdout and "trl-causal-weighted-sft" in listed.stdout
    assert (listed.stdout + listed.stderr).count("failed to load") == 1, listed.stdout + listed.stderr
    rows = [dict(row, weight=1.0 + i % 2) for i, row in enumerate(sft_rows())]
    summary, result = train(tmp_path, tiny_model, "weighted_sft", rows, env=env)
    assert summary["trainer"] == "weighted_sft" and summary["steps"] == 2
    assert result.stderr.count("'broken-plugin' failed to load") == 1, result.stderr[-3000:]  # not again per process
    assert "trl-causal: warning: trl_causal plugin 'broken_plugin_mod'" in result.stderr  # one line, no source line
    negative = write_jsonl(tmp_path / "negative.jsonl", [dict(row, weight=-1.0 if i == 3 else 1.0) for i, row in enumerate(sft_rows())])
    failed = run_cli("train", "--config", str(tmp_path / "cfg.yaml"), "--dataset_name", str(negative), env=env)
    assert failed.returncode == 2 and "Row 3 has weight=-1.0: every row needs a finite number >= 0 as its loss weight (weight_column: weight)" in failed.stderr, failed.stderr[-2000:]


def test_keys_of_another_trainer_are_set_aside_so_one_yaml_serves_both(tmp_path, tiny_model, capsys):
    """`weight_column` configures weighted_sft; the same YAML still runs as `trainer: sft`."""
    from trl_causal.configuration import parse_run_config

    config = write_config(tmp_path / "cfg.yaml", {"trainer": "sft", "weight_column": "w", **base_config(tiny_model, tmp_path / "d.jsonl", tmp_path / "out")})
    run = parse_run_config([], str(config))
    assert run.trainer.name == "sft" and not hasattr(run.training_args, "weight_column")
    assert "ignoring 'weight_column'" in capsys.readouterr().err
    weighted = parse_run_config(["--trainer", "weighted_sft"], str(config))
    assert weighted.training_args.weight_column == "w"


class TakesWhatItNames:
    def __init__(self, model, args=None, train_dataset=None, eval_dataset=None):
        pass


class TakesAnything:
    def __init__(self, model, **trainer_kwargs):
        pass


def test_a_trainer_gets_the_arguments_it_takes_and_never_silently_loses_peft():
    from trl_causal.errors import TrlCausalError
    from trl_causal.train import accepted_kwargs

    kwargs = {"model": "m", "args": "a", "train_dataset": [1], "eval_dataset": None, "peft_config": None, "quantization_config": None}
    assert accepted_kwargs("plain", TakesWhatItNames, kwargs) == {k: kwargs[k] for k in ("model", "args", "train_dataset", "eval_dataset")}
    with_peft = {**kwargs, "peft_config": "lora"}
    assert accepted_kwargs("open", TakesAnything, with_peft) == with_peft  # **trainer_kwargs takes everything
    with pytest.raises(TrlCausalError, match=r"Trainer 'plain' \(.*TakesWhatItNames\) takes no 'peft_config' \(from use_peft and the lora_\* keys\)"):
        accepted_kwargs("plain", TakesWhatItNames, with_peft)


def test_yaml_scalars_mean_what_they_say_for_accelerate_values_and_list_fields(tmp_path, tiny_model):
    from trl_causal.configuration import parse_run_config

    config = write_config(tmp_path / "cfg.yaml", {"trainer": "deconfounded_reward", **base_config(tiny_model, tmp_path, tmp_path / "out")})
    # Unquoted `no` is YAML's false; a bare number where a list of layers is expected.
    config.write_text(config.read_text() + "mixed_precision: no\nfeature_layers: -1\nnumeric_confounders: [c]\n")
    run = parse_run_config([], str(config))
    at = run.launch_args.index("--mixed_precision")
    assert run.launch_args[at + 1] == "no"
    assert run.training_args.feature_layers == [-1]


def test_accelerate_flags_on_the_command_line_take_true_or_false_and_override_the_yaml(tmp_path, tiny_model):
    from trl_causal.configuration import parse_run_config
    from trl_causal.errors import ConfigError

    config = write_config(tmp_path / "cfg.yaml", {"trainer": "sft", **base_config(tiny_model, tmp_path, tmp_path / "out"), "multi_gpu": True})
    assert "--multi_gpu" in parse_run_config([], str(config)).launch_args
    launch = parse_run_config(["--multi_gpu", "false", "--num_processes", "2"], str(config)).launch_args
    assert "--multi_gpu" not in launch and "false" not in launch and launch[launch.index("--num_processes") + 1] == "2"
    launch = parse_run_config(["--multi_gpu", "true", "--multi_gpu"], str(config)).launch_args
    assert launch.count("--multi_gpu") == 1 and "true" not in launch  # 'true' became the training script before
    with pytest.raises(ConfigError, match=r"--multi_gpu is an accelerate flag: give it alone, or `--multi_gpu true`"):
        parse_run_config(["--multi_gpu", "maybe"], str(config))


def test_resume_from_checkpoint_true_means_the_last_complete_checkpoint_and_a_bad_one_fails_first(tmp_path, capsys):
    from trl_causal.errors import TrlCausalError
    from trl_causal.train import resume_checkpoint

    for name in ("checkpoint-2", "checkpoint-10", "checkpoint-11", "checkpoint-12", "2024"):  # 2024: a folder of the user's
        (tmp_path / name).mkdir()
    for name in ("checkpoint-2", "checkpoint-10"):  # checkpoint-12: a save that died (disk full) before the state
        (tmp_path / name / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-11" / "trainer_state.json").write_text('{"global_step": 1')  # one killed as it wrote it
    last = str(tmp_path / "checkpoint-10")
    assert resume_checkpoint(True, str(tmp_path)) == resume_checkpoint("true", str(tmp_path)) == last  # YAML / command line
    note = "note: checkpoint-12, checkpoint-11 lack a whole trainer_state.json (a save that did not finish); resuming from"
    assert note in capsys.readouterr().err
    message = r"resume_from_checkpoint: the trainer_state.json of \S+checkpoint-11 holds no JSON object \(a save that did not finish"
    with pytest.raises(TrlCausalError, match=message):
        resume_checkpoint(str(tmp_path / "checkpoint-11"), str(tmp_path))
    assert resume_checkpoint(None, str(tmp_path)) is resume_checkpoint("False", str(tmp_path)) is None
    assert resume_checkpoint(str(tmp_path / "checkpoint-2"), str(tmp_path)) == str(tmp_path / "checkpoint-2")
    with pytest.raises(TrlCausalError, match=r"resume_from_checkpoint is true, but .*empty holds no complete checkpoint-N"):
        resume_checkpoint("true", str(tmp_path / "empty"))
    with pytest.raises(TrlCausalError, match=r"resume_from_checkpoint: .*checkpoint-3 is not a checkpoint directory"):
        resume_checkpoint(str(tmp_path / "checkpoint-3"), str(tmp_path))
    for broken in ("checkpoint-12", ""):  # a half-written checkpoint; the output_dir (the final model)
        with pytest.raises(TrlCausalError, match=r"holds no trainer_state.json, so it is no complete checkpoint"):
            resume_checkpoint(str(tmp_path / broken), str(tmp_path))
    (tmp_path / "checkpoint-2" / "trainer_state.json").unlink()
    (tmp_path / "checkpoint-10" / "trainer_state.json").unlink()
    with pytest.raises(TrlCausalError, match=r"checkpoint-12, checkpoint-11, checkpoint-10, checkpoint-2 lack a whole trainer_state.json"):
        resume_checkpoint(True, str(tmp_path))


@pytest.mark.parametrize("spec", BUILTIN_TRAINERS, ids=lambda spec: spec.name)
def test_every_trainer_prints_its_help(spec, capsys):
    from trl_causal import cli

    for flag in ("--help", "-h"):
        with pytest.raises(SystemExit) as exited:
            cli.main(["train", "--trainer", spec.name, flag])
        assert exited.value.code == 0
        assert "--output_dir" in capsys.readouterr().out


def test_ctrl_c_before_the_training_process_starts_is_one_line_and_exit_code_130(tmp_path, monkeypatch, capsys):
    from trl_causal import cli, configuration

    def pressed_ctrl_c(*args, **kwargs):  # Ctrl-C while the launcher still imports and reads the config
        raise KeyboardInterrupt

    monkeypatch.setattr(configuration, "parse_run_config", pressed_ctrl_c)
    assert cli.main(["train", "--config", str(tmp_path / "cfg.yaml")]) == 130
    assert capsys.readouterr().err.strip() == "trl-causal: interrupted before training started; nothing was saved."


def test_ctrl_c_saves_the_completed_steps_and_resume_goes_on_from_them(tmp_path, tiny_model):
    data = write_jsonl(tmp_path / "data.jsonl", sft_rows())
    out = tmp_path / "out"
    config = write_config(tmp_path / "cfg.yaml", {"trainer": "sft", **base_config(tiny_model, data, out, max_steps=100_000)})
    code, output = interrupt_after_first_step("train", "--config", str(config))
    assert code == 130 and "Traceback" not in output, output[-3000:]
    saved = re.search(r"interrupted after step (\d+); saved (\S+checkpoint-\d+)\. Continue with", output)
    assert saved, output[-3000:]
    step, checkpoint = int(saved[1]), Path(saved[2])
    assert (checkpoint / "optimizer.pt").is_file()
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == step
    record = json.loads((checkpoint / SUMMARY_FILE).read_text())
    assert record["trainer"] == "sft" and record["reproduce"]["config"]["max_steps"] == 100_000  # eval tells its trainer
    killed = out / f"checkpoint-{step + 1}"  # a later save killed as the Trainer wrote its state (in place)
    killed.mkdir()
    (killed / "trainer_state.json").touch()
    resumed = run_cli("train", "--config", str(config), "--max_steps", str(step + 2), "--resume_from_checkpoint", "true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"note: {killed.name} lack a whole trainer_state.json (a save that did not finish); resuming from {checkpoint}." in resumed.stderr
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["steps"] == step + 2 and summary["resumed_from_step"] == step
    assert f"for 2 steps (resumed at step {step}, {step + 2} in all; world size 1)" in resumed.stdout  # it said "for {step + 2} steps"


def test_sigterm_interrupts_once_and_then_waits_for_the_save():
    import signal
    import threading

    from trl_causal.train import sigterm_as_ctrl_c

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be set in the main thread")
    before = signal.getsignal(signal.SIGTERM)
    with sigterm_as_ctrl_c() as interrupted:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # the launcher's copy, during the save: ignored
        assert interrupted == [signal.SIGTERM]
    with sigterm_as_ctrl_c() as interrupted:
        interrupted.append("saving")  # after Ctrl-C, the caller's mark: a SIGTERM waits for the save too
        os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.parametrize("terminate", ["command", "group"])
def test_sigterm_saves_the_completed_steps_as_ctrl_c_does(tmp_path, tiny_model, terminate):
    """A scheduler stops a job with SIGTERM to its processes; `kill PID` sends it to the command alone."""
    data = write_jsonl(tmp_path / "data.jsonl", sft_rows())
    config = write_config(tmp_path / "cfg.yaml", {"trainer": "sft", **base_config(tiny_model, data, tmp_path / "out", max_steps=100_000)})
    code, output = interrupt_after_first_step("train", "--config", str(config), terminate=terminate)
    assert code == 130 and "Traceback" not in output, output[-3000:]
    saved = re.search(r"interrupted after step (\d+); saved (\S+checkpoint-\d+)\. Continue with", output)
    assert saved and (Path(saved[2]) / "trainer_state.json").is_file(), output[-3000:]


def test_an_output_dir_that_cannot_be_written_fails_before_launch(tmp_path, tiny_model, capsys):
    from trl_causal import cli

    data = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "Hi", "completion": " there"}] * 4)
    (tmp_path / "afile").write_text("")
    config = write_config(tmp_path / "cfg.yaml", {"trainer": "sft", **base_config(tiny_model, data, tmp_path / "afile" / "out")})
    assert cli.main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"trl-causal: error: output_dir {tmp_path / 'afile' / 'out'} cannot be written (Not a directory)" in err
    assert "Traceback" not in err



@pytest.mark.parametrize(
    "settings, new_evaluations",
    [({"eval_steps": 2}, 0), ({"eval_steps": 3}, 0), ({"eval_steps": 2, "save_strategy": "steps", "save_steps": 2, "load_best_model_at_end": True}, 1)],
)
def test_the_final_evaluation_is_the_one_of_the_last_step_unless_the_best_model_was_loaded(tmp_path, tiny_model, settings, new_evaluations):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from trl_causal.train import final_evaluation

    settings = cpu_training_args(tmp_path, max_steps=4, eval_strategy="steps", **settings)
    trainer = SFTTrainer(model=str(tiny_model), args=SFTConfig(**settings), train_dataset=Dataset.from_list(sft_rows(8)), eval_dataset=Dataset.from_list(sft_rows(4)))
    trainer.train()
    logged = len(trainer.state.log_history)
    metrics = final_evaluation(trainer)
    # scoring the weights of step 4 again logged the same numbers twice, to every tracker (transformers evaluates
    # after the last step); the best checkpoint loaded at the end is another model, scored anew
    assert len(trainer.state.log_history) == logged + new_evaluations
    last = [log for log in trainer.state.log_history if "eval_loss" in log][-1]
    assert last["step"] == 4 and metrics["eval_loss"] == last["eval_loss"] and metrics["epoch"] == last["epoch"]


def test_activation_checkpointing_is_read_as_gradient_checkpointing_where_transformers_lacks_the_new_name():
    from trl_causal.configuration import with_checkpointing_name

    pairs = [("activation_checkpointing", False), ("max_steps", 2)]
    older = {"gradient_checkpointing": bool, "max_steps": int}  # transformers 5.20's fields
    assert with_checkpointing_name(pairs, older) == [("gradient_checkpointing", False), ("max_steps", 2)]
    assert with_checkpointing_name(pairs, {**older, "activation_checkpointing": bool}) == pairs
    both = [("activation_checkpointing", False), ("gradient_checkpointing", True)]  # the newer name wins, on any version
    assert with_checkpointing_name(both, older) == [("gradient_checkpointing", False)]
    kwargs = [("activation_checkpointing_kwargs", {"use_reentrant": False})]  # and so is the `_kwargs` setting
    assert with_checkpointing_name(kwargs, {**older, "gradient_checkpointing_kwargs": dict}) == [("gradient_checkpointing_kwargs", {"use_reentrant": False})]


def test_a_training_process_killed_by_a_signal_is_named_with_the_shells_exit_code(tmp_path, tiny_model, monkeypatch, capsys):
    import signal
    import subprocess

    import accelerate.commands.launch

    from trl_causal import cli

    def killed(launch_args):  # as the kernel's OOM killer ends the training process
        raise subprocess.CalledProcessError(-signal.SIGKILL, ["python", "-m", "trl_causal.train"])

    monkeypatch.setattr(accelerate.commands.launch, "launch_command", killed)
    data = write_jsonl(tmp_path / "data.jsonl", sft_rows())
    config = write_config(tmp_path / "cfg.yaml", {"trainer": "sft", **base_config(tiny_model, data, tmp_path / "out")})
    assert cli.main(["train", "--config", str(config)]) == 128 + signal.SIGKILL
    assert "trl-causal: the training process was killed by SIGKILL (out of memory?" in capsys.readouterr().err


def test_train_without_a_config_takes_the_trainer_in_either_form_and_defaults_to_sft(tmp_path, capsys):
    from trl_causal import cli

    with pytest.raises(SystemExit) as exited:
        cli.main(["train", "--trainer=capt", "--help"])
    assert exited.value.code == 0 and "--event_estimator" in capsys.readouterr().out
    # `trl sft`'s form: the settings alone, trainer sft (it printed the usage and exited 2, with no error)
    data = write_jsonl(tmp_path / "data.jsonl", sft_rows())
    assert cli.main(["train", "--model_name_or_path", str(tmp_path / "no-model"), "--dataset_name", str(data), "--bf16", "false"]) == 2
    out, err = capsys.readouterr()
    assert f"{tmp_path / 'no-model'}' is neither a local directory" in err and out == ""
    assert cli.main(["train"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "usage: trl-causal train [--config CONFIG] [--trainer NAME]" in err and "error: give --config" in err
    assert cli.main(["train", "--help"]) == 0 and "--trainer NAME" in capsys.readouterr().out


def test_eval_paths_given_with_a_quoted_home_are_expanded(tmp_path, monkeypatch):
    from trl_causal import cli

    monkeypatch.setenv("HOME", str(tmp_path))
    args = cli.build_parser().parse_args(
        ["eval", "--config", "c.yaml", "--split", "t2=~/my data/rows.jsonl", "--split", "test", "--checkpoint", "~/ck", "--compare", "~/other", "--output", "~/r.json"]
    )
    assert args.split == [f"t2={tmp_path}/my data/rows.jsonl", "test"]
    assert (args.checkpoint, args.compare, args.output) == (f"{tmp_path}/ck", [f"{tmp_path}/other"], f"{tmp_path}/r.json")


def test_version_and_the_plugin_warnings_of_list_go_where_they_belong(monkeypatch, capsys):
    from trl_causal import __version__, cli, plugins

    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.strip() == f"trl-causal {__version__}"
    manager = PluginManager(autoload=False)
    monkeypatch.setattr(plugins, "_manager", manager)
    monkeypatch.setattr(manager, "warnings", ["plugin 'x' registers a name twice"], raising=False)
    assert cli.main(["list"]) == 0
    out, err = capsys.readouterr()
    assert "sft" in out and "warning: plugin 'x' registers a name twice" in err and "warning" not in out


def test_processes_killed_by_signals_under_torchrun_are_named_with_the_shells_exit_code(tmp_path, tiny_model, monkeypatch, capsys):
    """torchrun's ChildFailedError said "exit code -15, -9" and exited 1: the SIGKILLed process prints nothing."""
    import signal

    import accelerate.commands.launch
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from trl_causal import cli

    def killed(launch_args):  # rank 1 killed by the OOM killer, rank 0 stopped by the launcher
        failures = {rank: ProcessFailure(local_rank=rank, pid=100 + rank, exitcode=code, error_file=str(tmp_path / "none"))
                    for rank, code in ((0, -signal.SIGTERM), (1, -signal.SIGKILL))}
        raise ChildFailedError("trl_causal.train", failures)

    monkeypatch.setattr(accelerate.commands.launch, "launch_command", killed)
    data = write_jsonl(tmp_path / "data.jsonl", sft_rows())
    config = write_config(tmp_path / "cfg.yaml", {"trainer": "sft", **base_config(tiny_model, data, tmp_path / "out")})
    assert cli.main(["train", "--config", str(config)]) == 128 + signal.SIGKILL
    assert "exit code -15 (SIGTERM), -9 (SIGKILL (out of memory?" in capsys.readouterr().err
