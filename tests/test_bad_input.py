"""Bad input gets one clear error line (exit code 2), before any model loads, never a library traceback."""

from __future__ import annotations

import importlib
import re

import pytest
import torch

from conftest import base_config, reward_rows, sft_rows, write_config, write_jsonl
from plugin_helpers import make_distribution, pip_install_target
from test_registry import REGISTERS_TRAINER
from trl_causal import cli, plugins


@pytest.fixture(autouse=True)
def fresh_plugin_manager(monkeypatch):
    monkeypatch.setattr(plugins, "_manager", None)


@pytest.fixture
def config_for(tmp_path, sft_data):
    """Write a config for a model path that does not exist: any error must come before a model loads."""

    def make(**overrides):
        config = {"trainer": "sft", **base_config(tmp_path / "no-model-here", sft_data, tmp_path / "out")}
        config.update(overrides)
        return write_config(tmp_path / "cfg.yaml", config)

    return make


def fails_with(capsys, argv, *fragments):
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_unknown_trainer_suggests_closest(capsys, config_for):
    fails_with(capsys, ["train", "--config", str(config_for(trainer="capt_sft"))], "Unknown trainer 'capt_sft'", "Registered:")
    fails_with(capsys, ["train", "--config", str(config_for(trainer="sfft"))], "Did you mean 'sft'")


def test_unknown_yaml_key_suggests_closest_field_and_is_not_passed_to_accelerate(capsys, config_for):
    fails_with(capsys, ["train", "--config", str(config_for(learning_rat=0.1))], "Unknown key 'learning_rat'", "Did you mean 'learning_rate'")


def test_unknown_command_line_key(capsys, config_for):
    fails_with(capsys, ["train", "--config", str(config_for()), "--num_train_epoch", "2"], "'num_train_epoch'", "'num_train_epochs'")


def test_malformed_yaml_names_file_and_line(capsys, tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("trainer: sft\nlearning_rate: 1e-4\n  max_steps: [3\n")
    fails_with(capsys, ["train", "--config", str(path)], f"Malformed YAML at {path}:3:")


def test_missing_config_file(capsys, tmp_path):
    fails_with(capsys, ["train", "--config", str(tmp_path / "nope.yaml")], "Config file not found")


def test_missing_dataset_file(capsys, config_for, tmp_path):
    missing = tmp_path / "data" / "train.jsonl"
    fails_with(capsys, ["train", "--config", str(config_for(dataset_name=str(missing)))], "does not exist", str(missing))


def test_dataset_without_needed_columns_says_which_exist(capsys, config_for, tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", reward_rows())
    fails_with(
        capsys,
        ["train", "--config", str(config_for(dataset_name=str(data)))],
        "lacks the columns",
        "prompt+completion",
        "It has: chosen, rejected",
    )


def test_missing_split_lists_the_splits(capsys, config_for):
    fails_with(capsys, ["train", "--config", str(config_for(dataset_train_split="training"))], "no split 'training'", "it has: train")


@pytest.mark.parametrize(
    "key, value, expected",
    [("max_steps", "many", "expects int"), ("learning_rate", [1, 2], "expects float"), ("lr_scheduler_type", "zigzag", "Choose one of")],
)
def test_value_of_the_wrong_type(capsys, config_for, key, value, expected):
    fails_with(capsys, ["train", "--config", str(config_for(**{key: value}))], f"Key {key!r}", expected)


def test_whole_numbers_written_as_floats_or_exponents_are_read_as_ints(config_for, tmp_path):
    from trl_causal.configuration import parse_run_config

    config = config_for(max_steps=2.0, lora_r=8.0, save_steps="1e2", learning_rate="1e-4")
    run = parse_run_config([], str(config))
    assert (run.training_args.max_steps, run.model_args.lora_r, run.training_args.save_steps) == (2, 8, 100)
    assert all(type(value) is int for value in (run.training_args.max_steps, run.model_args.lora_r))
    assert run.training_args.learning_rate == 1e-4
    assert parse_run_config([], str(config_for(seed=9007199254740993))).training_args.seed == 9007199254740993  # not via float
    with pytest.raises(Exception, match="Key 'max_steps'.*expects int, got 2.5"):
        parse_run_config([], str(config_for(max_steps=2.5)))


def test_trls_gradient_checkpointing_default_warns_only_when_the_config_sets_it(config_for):
    import warnings

    import yaml

    from trl_causal.configuration import parse_run_config

    def deprecation_warnings(argv, config):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            parse_run_config(argv, str(config))
        return [w for w in caught if "gradient_checkpointing" in str(w.message)]

    config = config_for()
    unset = yaml.safe_load(config.read_text())
    unset.pop("activation_checkpointing", None), unset.pop("gradient_checkpointing", None)  # the name of this transformers
    config.write_text(yaml.safe_dump(unset))
    assert deprecation_warnings([], config) == []  # TRL's default, not the user's key
    assert deprecation_warnings(["--trainer", "capt"], config) == []
    assert deprecation_warnings(["--no_gradient_checkpointing"], config)  # what the user wrote is deprecated
    config.write_text(yaml.safe_dump({**unset, "gradient_checkpointing": False}))
    assert deprecation_warnings([], config)
    assert deprecation_warnings([], config_for()) == []  # the example configs' key, `activation_checkpointing: false`
    run = parse_run_config([], str(config_for()))
    assert run.training_args.activation_checkpointing is False and run.training_args.gradient_checkpointing is False


def test_a_model_that_is_nowhere_fails_before_launch_with_a_suggestion(capsys, config_for, tmp_path):
    fails_with(capsys, ["train", "--config", str(config_for(model_name_or_path="smollm2-135m"))], "'smollm2-135m' is neither a local directory", "Did you mean 'smollm2-135m-instruct'?")
    fails_with(capsys, ["train", "--config", str(config_for())], "no-model-here' is neither a local directory")
    fails_with(capsys, ["train", "--config", str(config_for(model_name_or_path="someone/model"))], "the Hugging Face Hub (or its cache) does not give it")
    fails_with(capsys, ["download-model", "smollm2"], "Unknown embedded model 'smollm2'. Did you mean 'smollm2-135m-instruct'?")


def test_a_dataset_that_is_nowhere_and_a_mixture_entry_with_an_unknown_key(capsys, config_for, sft_data):
    fails_with(capsys, ["train", "--config", str(config_for(dataset_name="data/mytrain"))], "Dataset 'data/mytrain' is not a local file or directory", "Hub")
    mixture = config_for(dataset_name=None, datasets=[{"path": "json", "data_files": str(sft_data), "type": "chat_template"}])
    fails_with(capsys, ["train", "--config", str(mixture)], "Invalid settings", "'type'")


def test_command_line_values_argparse_rejects_give_one_line_and_no_flags_are_known(capsys, config_for):
    err = fails_with(capsys, ["train", "--config", str(config_for()), "--learning_rate", "abc"], "--learning_rate", "invalid float value: 'abc'", "--help")
    assert len(err.strip().splitlines()) == 1 and "usage:" not in err
    # a combination the config rejects names both places its values come from
    fails_with(capsys, ["train", "--config", str(config_for()), "--load_best_model_at_end", "true", "--eval_strategy", "steps"], "Invalid settings in", ".yaml and the command line", "load_best_model_at_end")
    from trl_causal.configuration import parse_run_config

    assert parse_run_config(["--no_remove_unused_columns"], str(config_for())).training_args.remove_unused_columns is False


def test_unknown_keys_of_another_trainer_or_of_axolotl_say_where_they_belong(capsys, config_for):
    fails_with(capsys, ["train", "--config", str(config_for()), "--event_estimator", "vocabulary"], "It configures trainer 'capt': add `--trainer capt`")
    fails_with(capsys, ["train", "--config", str(config_for(base_model="x"))], "'base_model' is Axolotl's name: here it is 'model_name_or_path'")
    # an SFTConfig field on a reward trainer belongs to `sft`, not to the plugin trainer whose config extends SFTConfig
    fails_with(capsys, ["train", "--config", str(config_for()), "--trainer", "reward", "--packing", "true"], "It configures trainer 'sft': add `--trainer sft`")


def test_plugin_registering_a_non_trainer_class(capsys, config_for, tmp_path, monkeypatch):
    source = make_distribution(tmp_path / "src", "odd-plugin", "odd_plugin_mod", REGISTERS_TRAINER.format(name="odd", trainer="collections:OrderedDict"))
    monkeypatch.syspath_prepend(str(pip_install_target(source, tmp_path / "site")))
    importlib.invalidate_caches()
    fails_with(capsys, ["train", "--config", str(config_for(trainer="odd"))], "odd-plugin", "not a subclass of transformers.Trainer")


def test_messages_name_one_row_or_many_in_the_right_number():
    from trl_causal.errors import count_rows, describe_rows

    assert describe_rows([3]) == "row 3"
    assert describe_rows([3, 8]) == "rows [3, 8]"
    assert describe_rows(range(12)) == "rows [0, 1, 2, 3, 4] and 7 more"
    assert (count_rows(1), count_rows(8)) == ("1 row", "8 rows")


def test_lora_without_target_modules_on_a_model_type_peft_has_no_default_for_names_the_key(config_for, tiny_model, tmp_path):
    """Phi3's attention is one fused qkv_proj, for which PEFT has no default LoRA targets: one line before the model
    loads, not PEFT's traceback after it; with lora_target_modules the trainer builds."""
    from transformers import AutoTokenizer, Phi3Config, Phi3ForCausalLM

    from trl_causal.configuration import parse_run_config
    from trl_causal.errors import ConfigError
    from trl_causal.train import build_trainer, load_run_datasets

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    config = Phi3Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    phi3 = tmp_path / "phi3"
    Phi3ForCausalLM(config).save_pretrained(phi3)
    tokenizer.save_pretrained(phi3)
    run = parse_run_config([], str(config_for(model_name_or_path=str(phi3), use_peft=True)))
    datasets = load_run_datasets(run.script_args, run.dataset_args, need_eval=False)
    with pytest.raises(ConfigError, match=r"PEFT has no default LoRA target modules for model_type 'phi3'. Set lora_target_modules: `all-linear`"):
        build_trainer(run, *datasets)
    run = parse_run_config([], str(config_for(model_name_or_path=str(phi3), use_peft=True, lora_target_modules="all-linear")))
    assert build_trainer(run, *datasets).model.peft_config["default"].target_modules


def test_lora_module_names_and_task_type_are_checked_before_the_model_loads(config_for, tiny_model, tmp_path):
    """A module name no module has was PEFT's traceback after the model loaded (lora_target_modules), or nothing at all
    (lora_modules_to_save: trained, saving no module); an unknown lora_task_type, a traceback. A one-name list, which
    TRL turns into a regular expression of the whole module path that PEFT then finds nowhere, trains that module."""
    from trl_causal.configuration import parse_run_config
    from trl_causal.errors import ConfigError
    from trl_causal.train import build_trainer, load_run_datasets

    def build(**settings):
        run = parse_run_config([], str(config_for(model_name_or_path=str(tiny_model), use_peft=True, **settings)))
        return build_trainer(run, *load_run_datasets(run.script_args, run.dataset_args, need_eval=False))

    with pytest.raises(ConfigError, match=r"lora_target_modules names \['qq_proj'\], which no module of .* has; its modules are named: .*q_proj"):
        build(lora_target_modules=["qq_proj", "v_proj"])
    with pytest.raises(ConfigError, match=r"lora_modules_to_save names \['head'\], which no module"):
        build(lora_target_modules=["q_proj", "v_proj"], lora_modules_to_save=["head"])
    with pytest.raises(ConfigError, match=r"PEFT refused the LoRA settings \(use_peft, lora_r, lora_task_type, ...\): Invalid task type: 'FOO'"):
        build(lora_task_type="FOO")
    trainer = build(lora_target_modules=["q_proj"])
    assert trainer.model.peft_config["default"].target_modules == {"q_proj"}
    assert any("q_proj.lora_A" in name for name, _ in trainer.model.named_parameters())
    pattern = build(lora_target_modules=[r".*\.(q_proj|v_proj)"])  # a regular expression that matches stays one
    assert {name.split(".")[-4] for name, _ in pattern.model.named_parameters() if "lora_A" in name} == {"q_proj", "v_proj"}
    with pytest.raises(ConfigError, match=r"qq_proj', one entry, is a regular expression that PEFT matches against whole module paths, and no module of"):
        build(lora_target_modules=[r".*\.qq_proj"])


def test_conversations_with_a_tokenizer_without_a_chat_template_name_chat_template_path(config_for, tiny_model, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    from trl_causal.configuration import parse_run_config
    from trl_causal.errors import ConfigError
    from trl_causal.train import build_trainer, load_run_datasets

    plain = tmp_path / "no-template"
    shutil.copytree(tiny_model, plain)
    tokenizer = AutoTokenizer.from_pretrained(plain)
    tokenizer.chat_template = None
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer.save_pretrained(plain)
    chats = write_jsonl(tmp_path / "chats.jsonl", [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}] * 4)
    run = parse_run_config([], str(config_for(model_name_or_path=str(plain), dataset_name=str(chats))))
    datasets = load_run_datasets(run.script_args, run.dataset_args, need_eval=False)
    with pytest.raises(ConfigError, match=r"are conversations .* has no chat template to render them\. Set chat_template_path"):
        build_trainer(run, *datasets)
    run = parse_run_config([], str(config_for(model_name_or_path=str(plain), dataset_name=str(chats), chat_template_path=str(tiny_model))))
    assert build_trainer(run, *datasets).processing_class.chat_template
    # a processor's own template (chat_template.json beside a tokenizer without one), which TRL's AutoProcessor reads
    import json
    from types import SimpleNamespace

    from transformers import AutoProcessor, CLIPImageProcessor

    from trl_causal.train import check_chat_template

    CLIPImageProcessor().save_pretrained(plain)
    preprocessor = json.loads((plain / "preprocessor_config.json").read_text())
    (plain / "preprocessor_config.json").write_text(json.dumps({**preprocessor, "processor_class": "LlavaProcessor"}))
    (plain / "chat_template.json").write_text(json.dumps({"chat_template": AutoTokenizer.from_pretrained(tiny_model).chat_template}))
    assert AutoTokenizer.from_pretrained(plain).chat_template is None and AutoProcessor.from_pretrained(plain).chat_template
    check_chat_template(str(plain), SimpleNamespace(chat_template_path=None), datasets[0], {})  # passes


def test_report_to_null_means_no_reporting_as_transformers_default_none_does(config_for):
    from trl_causal.configuration import parse_run_config

    # TrainingArguments read None as the name of an integration ([None]) and failed once the model was built
    assert parse_run_config(["--report_to", "null"], str(config_for())).training_args.report_to == []
    assert parse_run_config([], str(config_for(report_to=None))).training_args.report_to == []


def test_a_string_or_list_field_takes_several_values_and_none_stands_alone(capsys, config_for):
    # `--report_to a b` is a list, as for a list field (argparse read one string and left `b` over, "not used")
    fails_with(capsys, ["train", "--config", str(config_for()), "--report_to", "swanlab", "trackio"], "names swanlab, trackio")
    fails_with(capsys, ["train", "--config", str(config_for()), "--report_to", "none", "swanlab"], "report_to in the command line names 'none' beside 'swanlab'")


def test_no_key_sets_any_boolean_setting_false(config_for):
    """HfArgumentParser reads --no_KEY only for a boolean that defaults to true: --no_packing was "not used by the
    HfArgumentParser", and --no_bf16 (default None, which TRL turns on) too, the flag a CPU user reaches for."""
    from trl_causal.configuration import parse_run_config

    args = parse_run_config(["--no_packing", "--no_bf16"], str(config_for(packing=True, bf16=True))).training_args
    assert args.packing is False and args.bf16 is False


def test_the_command_line_checkpointing_setting_wins_over_the_yamls_under_either_name(config_for):
    from trl_causal.configuration import parse_run_config

    # every example config has `activation_checkpointing: false`, which transformers let win over the older name
    config = str(config_for(activation_checkpointing=False))
    args = parse_run_config(["--gradient_checkpointing", "true"], config).training_args
    assert args.activation_checkpointing is True and args.gradient_checkpointing is True
    assert parse_run_config(["--no_gradient_checkpointing"], str(config_for(activation_checkpointing=True))).training_args.activation_checkpointing is False
    config = str(config_for(activation_checkpointing_kwargs={"use_reentrant": True}))
    args = parse_run_config(["--gradient_checkpointing_kwargs", '{"use_reentrant": false}'], config).training_args
    assert args.activation_checkpointing_kwargs == {"use_reentrant": False}


def test_accelerate_config_files_are_checked_before_the_data_and_take_a_home_path(capsys, config_for, tmp_path, monkeypatch):
    from trl_causal.configuration import parse_run_config

    fails_with(capsys, ["train", "--config", str(config_for(config_file="missing.yaml"))], "config_file 'missing.yaml' in", "is not a file")
    fails_with(capsys, ["train", "--config", str(config_for()), "--deepspeed_config_file", "ds.json"], "deepspeed_config_file 'ds.json' in the command line is not a file")
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "acc.yaml").write_text("num_processes: 1\n")
    for key in ("config_file", "accelerate_config"):
        launch_args = parse_run_config([], str(config_for(**{key: "~/acc.yaml"}))).launch_args
        assert launch_args == ["--config_file", str(tmp_path / "acc.yaml")], launch_args
    assert parse_run_config([], "~/cfg.yaml").trainer.name == "sft"  # config_for wrote tmp_path/cfg.yaml


def test_an_upper_case_key_suggests_its_lower_case_name(capsys, config_for):
    fails_with(capsys, ["train", "--config", str(config_for(TRAINER="capt"))], "Unknown key 'TRAINER'", "Did you mean 'trainer'")


def test_outputs_that_cannot_be_written_fail_before_any_work(capsys, tmp_path, config_for):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    # once the config is read (a bad one makes no folder), before the data and the deconfounding stage
    config = str(config_for(trainer="deconfounded_reward", numeric_confounders=["confounder"], dataset_name=str(tmp_path / "no-data.jsonl")))
    fails_with(capsys, ["dpo-pairs", "--config", config, "--output", str(blocked / "pairs.jsonl")], f"Cannot make the folder of the pairs file {blocked / 'pairs.jsonl'}")
    fails_with(capsys, ["dpo-pairs", "--config", str(tmp_path / "nope.yaml"), "--output", str(tmp_path / "new" / "pairs.jsonl")], "Config file not found")
    assert not (tmp_path / "new").exists()
    fails_with(capsys, ["shift-data", "--out", str(blocked / "splits"), "--n_train", "4", "--n_test", "4"], f"--out {blocked / 'splits'} cannot be written")
    fails_with(capsys, ["eval", "--config", str(tmp_path / "nope.yaml"), "--output", "-"], "--output -: eval writes its JSON to a file")


@pytest.mark.skipif(torch.cuda.is_available(), reason="bf16 without use_cpu is refused only where there is no GPU")
def test_bf16_on_a_cpu_only_machine_names_both_fixes(capsys, config_for):
    fails_with(capsys, ["train", "--config", str(config_for(bf16=True, use_cpu=False))], "set `bf16: false`", "or `use_cpu: true` to train in bf16 on the CPU")


def test_model_init_kwargs_torch_dtype_loads_the_model_in_that_dtype(config_for, tiny_model):
    """transformers' old name `torch_dtype` in model_init_kwargs was silently beaten by the `dtype` (default float32)
    that the launcher passes: the run trained and saved in float32."""
    from trl_causal.configuration import parse_run_config
    from trl_causal.train import build_trainer, load_run_datasets

    run = parse_run_config([], str(config_for(model_name_or_path=str(tiny_model), model_init_kwargs={"torch_dtype": "bfloat16"})))
    trainer = build_trainer(run, *load_run_datasets(run.script_args, run.dataset_args, need_eval=False))
    assert next(trainer.model.parameters()).dtype == torch.bfloat16


def test_a_setting_transformers_replaced_names_its_replacement(capsys, config_for):
    fails_with(capsys, ["train", "--config", str(config_for(group_by_length=True))], "Unknown key 'group_by_length'", "set `train_sampling_strategy: group_by_length`")


@pytest.mark.parametrize(
    "settings, expected",
    [
        ({"numeric_confounders": [1, 2]}, r"Key 'numeric_confounders' .* got \[1, 2\] \(list\)\. Its items must be str: 1 is int"),
        ({"numeric_confounders": [None]}, r"Key 'numeric_confounders' .* Its items must be str: None is NoneType"),
        ({"numeric_confounders": [["a"]]}, r"Key 'numeric_confounders' .* Its items must be str: \['a'\] is list"),
        ({"outcome_column": 7}, r"Key 'outcome_column' .* expects str, got 7 \(int\)"),
        ({"outcome_column": None}, r"Key 'outcome_column' .* expects str, got None \(NoneType\)"),
        ({"group_column": True}, r"Key 'group_column' .* got True \(bool\)\. YAML reads unquoted yes/no/true/false/on/off as a boolean: quote the word"),
        ({"feature_layers": ["a"]}, r"Key 'feature_layers' .* Its items must be int: 'a' is str"),
        ({"feature_layers": [1.5]}, r"Key 'feature_layers' .* Its items must be int: 1.5 is float"),
        ({"feature_layers": [True]}, r"Key 'feature_layers' .* Its items must be int: True is bool"),
    ],
)
def test_values_and_list_items_of_the_wrong_type_name_the_key(capsys, config_for, settings, expected):
    """A number where a column name goes, or a list item of the wrong type, ended in a traceback inside the data
    checks or torch; it is one line naming the key, the value and the type it takes."""
    config = config_for(trainer="deconfounded_reward", **{"outcome_column": "y", "numeric_confounders": ["c"], **settings})
    code = cli.main(["train", "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert re.search(expected, err), err


def test_whole_floats_in_an_int_list_are_read_as_ints(config_for):
    from trl_causal.configuration import parse_run_config

    config = config_for(trainer="latent_shift", encoder_hidden_sizes=[16.0], causal_hidden_sizes=[8])
    sizes = parse_run_config([], str(config)).training_args.encoder_hidden_sizes
    assert sizes == [16] and type(sizes[0]) is int  # torch's Linear takes no float size


@pytest.mark.parametrize(
    "settings, expected",
    [
        ({"trainer": "capt", "on_no_events": "Keep"}, "on_no_events is 'Keep'; use one of error, keep, drop. Did you mean 'keep'?"),
        ({"trainer": "latent_shift", "adjustment": "shuffle-train"}, "Did you mean 'shuffle_train'"),
        ({"trainer": "deconfounded_reward", "numeric_confounders": ["c"], "objective": "Pairwise"}, "Did you mean 'pairwise'?"),
        ({"trainer": "weighted_sft", "weight_column": ""}, "weight_column='' holds an empty column name"),
        ({"trainer": "latent_shift", "lambda_adj": float("nan")}, "lambda_adj=nan must be a finite number >= 0"),
        ({"save_strategy": False}, "quote the word"),
    ],
)
def test_misspelt_choices_and_bad_values_of_the_trainers_fail_in_one_line(capsys, config_for, settings, expected):
    fails_with(capsys, ["train", "--config", str(config_for(**settings))], expected)


def test_a_layer_index_past_the_models_last_layer_fails_before_the_weights_load(capfd, tmp_path, tiny_model):
    """low_level_layer (latent_shift) and feature_layers (deconfounded_reward) are checked on the model's config:
    the model directory here holds only config.json and the tokenizer, so loading weights would fail otherwise."""
    import shutil

    config_only = tmp_path / "config-only"
    config_only.mkdir()
    for file in tiny_model.iterdir():
        if not file.name.endswith(".safetensors"):
            shutil.copy(file, config_only / file.name)
    rows = [
        {**row, "label": row["completion"].strip(), "outcome": float(i % 3), "confounder": float(i % 2)}
        for i, row in enumerate(sft_rows())
    ]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    settings = base_config(config_only, data, tmp_path / "out")
    latent_shift = {"trainer": "latent_shift", "label_column": "label", "low_level_layer": 5}
    fails_with(capfd, ["train", "--config", str(write_config(tmp_path / "ls.yaml", {**settings, **latent_shift}))],
               "low_level_layer=5, but the model's hidden_states run from 0 (embeddings) to 2.")
    reward = {"trainer": "deconfounded_reward", "text_column": None, "outcome_column": "outcome", "numeric_confounders": ["confounder"],
              "n_folds": 2, "feature_layers": [0, 7]}
    fails_with(capfd, ["train", "--config", str(write_config(tmp_path / "dr.yaml", {**settings, **reward}))],
               "Hidden-state layer(s) [7] out of range: the model returns 3 hidden states")
