"""The deconfounded_reward trainer on the tiny model: CLI run, theta on simulated data, objectives and modes, exact
gradient accumulation, DPO pairs, loading as a reward model in GRPO, and bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset

from conftest import base_config, cpu_training_args, run_cli, write_config, write_jsonl
from trl_causal import DeconfoundedRewardConfig, DeconfoundedRewardTrainer, cli, train
from trl_causal.deconfound import WeakInstrumentWarning, partial_out, simulate_observational_texts
from trl_causal.deconfound import hidden_state_features, tfidf_features
from trl_causal.deconfound.features import runs_bf16_natively
from trl_causal.errors import ConfigError, DataError
from trl_causal.trainer.deconfounded_reward_trainer import REPORT_FILE

DECONFOUND = {"numeric_confounders": ["confounder"], "group_column": "group", "feature_source": "tfidf", "n_folds": 3}


def observational_rows(n: int = 120, prompt_completion: bool = False, **simulation) -> list[dict]:
    """Simulated rows (groups of 4 sharing a prompt); as prompt + completion rows when asked."""
    data = simulate_observational_texts(n=n, group_size=4, **simulation)
    rows = [dict(zip(data, values, strict=True)) for values in zip(*data.values(), strict=True)]
    if prompt_completion:
        rows = [{**{k: v for k, v in row.items() if k != "text"}, "completion": " " + row["text"]} for row in rows]
    return rows


def reward_args(tmp_path: Path, **overrides) -> DeconfoundedRewardConfig:
    settings = base_config(Path("unused"), Path("unused"), tmp_path / "out")
    del settings["model_name_or_path"], settings["dataset_name"]
    return DeconfoundedRewardConfig(**{**settings, **DECONFOUND, **overrides})


def build_trainer(tiny_model, tmp_path, rows, **overrides) -> DeconfoundedRewardTrainer:
    return DeconfoundedRewardTrainer(
        model=str(tiny_model), args=reward_args(tmp_path, **overrides), train_dataset=Dataset.from_list(rows)
    )


def test_a_causal_lm_peft_config_trains_the_classifier_and_stays_as_the_caller_made_it(tiny_model, tmp_path):
    from peft import LoraConfig

    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")  # e.g. shared with a policy
    trainer = DeconfoundedRewardTrainer(
        model=str(tiny_model), args=reward_args(tmp_path), train_dataset=Dataset.from_list(observational_rows()), peft_config=lora
    )
    assert trainer.model.peft_config["default"].task_type == "SEQ_CLS"  # the score head trains with the adapters
    assert any("score" in name for name, p in trainer.model.named_parameters() if p.requires_grad)
    assert lora.task_type == "CAUSAL_LM"


def test_a_peft_model_whose_score_head_does_not_train_is_warned_about(tiny_model, tmp_path, caplog):
    """A PeftModel built without task_type='SEQ_CLS' freezes the random `score` head: the reward would be a random
    projection of the adapted features. Plain RewardTrainer says nothing; this trainer warns."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    def wrapped(task_type):
        base = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
        return get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type=task_type))

    for task_type, warned in ((None, True), ("SEQ_CLS", False)):
        caplog.clear()
        with caplog.at_level("WARNING"):
            DeconfoundedRewardTrainer(model=wrapped(task_type), args=reward_args(tmp_path), train_dataset=Dataset.from_list(observational_rows()))
        assert ("does not train its classification head" in caplog.text) == warned, task_type


@pytest.mark.parametrize("adapter", ["ia3", "lora_with_trainable_tokens"])
def test_the_final_save_merges_any_weight_adapter_into_a_plain_classifier(tiny_model, tmp_path, adapter):
    """The merged save renamed LoRA's keys only: IA3 (and LoHa, LoKr) left adapter tensors in model.safetensors, and
    trainable tokens lost embed_tokens, which then loaded as random weights. Every adapter now saves a classifier
    that loads with no missing or unexpected key and scores as the trained model."""
    from peft import IA3Config, LoraConfig
    from transformers import AutoModelForSequenceClassification

    config = (
        IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"])
        if adapter == "ia3" else LoraConfig(r=4, target_modules=["q_proj", "v_proj"], trainable_token_indices=[5, 6, 7])
    )
    trainer = DeconfoundedRewardTrainer(
        model=str(tiny_model), args=reward_args(tmp_path, max_steps=2, learning_rate=0.05), peft_config=config,
        train_dataset=Dataset.from_list(observational_rows()),
    )
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    reloaded, info = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved", output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys")), info
    batch = trainer.processing_class(["the service was bad", "great food"], return_tensors="pt", padding=True)
    with torch.no_grad():
        trainer.model.eval()
        torch.testing.assert_close(reloaded.eval()(**batch).logits, trainer.model(**batch).logits, atol=1e-5, rtol=1e-5)


def test_the_merged_save_leaves_a_bf16_models_weights_as_they_were(tiny_model, tmp_path):
    """The merge adds LoRA's delta to the base weights in place and the unmerge subtracts it, which in bf16 moved
    about a quarter of the adapted weights by an ulp: evaluation or training after save_model saw other weights."""
    from peft import LoraConfig

    trainer = DeconfoundedRewardTrainer(
        model=str(tiny_model), args=reward_args(tmp_path, max_steps=2, learning_rate=0.05, model_init_kwargs={"dtype": "bfloat16"}),
        peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]), train_dataset=Dataset.from_list(observational_rows()),
    )
    trainer.train()
    before = {name: weight.detach().clone() for name, weight in trainer.model.named_parameters()}
    assert before["base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"].dtype == torch.bfloat16
    trainer.save_model(str(tmp_path / "saved"))
    for name, weight in trainer.model.named_parameters():
        assert torch.equal(weight, before[name]), name


def test_prompt_learning_adapters_are_refused_before_any_work(tmp_path):
    """Prompt tuning trained, then crashed at the final save (nothing to merge); latent_shift failed in its loss."""
    from peft import PromptTuningConfig

    from trl_causal.trainer.latent_shift_config import LatentShiftConfig
    from trl_causal.trainer.latent_shift_trainer import LatentShiftTrainer

    prompt_tuning = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    with pytest.raises(ConfigError, match=r"deconfounded_reward trainer cannot train a PROMPT_TUNING adapter: its final save merges"):
        DeconfoundedRewardTrainer(model=str(tmp_path / "no-model"), args=reward_args(tmp_path), peft_config=prompt_tuning,
                                  train_dataset=Dataset.from_list(observational_rows()))
    args = LatentShiftConfig(**cpu_training_args(tmp_path / "ls", label_column="label"))
    with pytest.raises(ConfigError, match=r"latent_shift trainer cannot train a PROMPT_TUNING adapter: its virtual tokens"):
        LatentShiftTrainer(model=str(tmp_path / "no-model"), args=args, peft_config=prompt_tuning, train_dataset=Dataset.from_list([{"prompt": "a", "completion": " b", "label": "b"}]))


def cli_config(tmp_path, tiny_model, rows, **overrides) -> Path:
    data = write_jsonl(tmp_path / "observational.jsonl", rows)
    config = {
        "trainer": "deconfounded_reward",
        **base_config(tiny_model, data, tmp_path / "out"),
        **DECONFOUND,
        **overrides,
    }
    return write_config(tmp_path / "cfg.yaml", config)


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory, tiny_model) -> Path:
    """`trl-causal train` with LoRA: the final checkpoint holds merged weights."""
    tmp_path = tmp_path_factory.mktemp("deconfounded")
    config = cli_config(
        tmp_path, tiny_model, observational_rows(), use_peft=True, lora_r=4, lora_target_modules=["q_proj", "v_proj"]
    )
    result = run_cli("train", "--config", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "theta[confounder]" in result.stdout
    return tmp_path / "out"


def test_cli_writes_a_single_logit_classifier_and_the_report(trained_checkpoint):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model, info = AutoModelForSequenceClassification.from_pretrained(trained_checkpoint, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert model.config.num_labels == 1 and not (trained_checkpoint / "adapter_config.json").exists()
    tokenizer = AutoTokenizer.from_pretrained(trained_checkpoint)
    assert model(**tokenizer(["Good food.", "Bad food."], return_tensors="pt", padding=True)).logits.shape == (2, 1)
    report = json.loads((trained_checkpoint / REPORT_FILE).read_text())
    effect = report["deconfounding"]["effects"]["confounder"]
    assert effect["ci_low"] < effect["theta"] < effect["ci_high"] and effect["se"] > 0
    assert report["mode"] == "deconfounded" and report["rows"]["used"] == 120


def test_checkpoint_is_the_reward_model_of_a_grpo_run(trained_checkpoint, tiny_model, tmp_path):
    from trl import GRPOConfig, GRPOTrainer

    prompts = Dataset.from_dict({"prompt": ["Write a headline about coffee.", "Write a headline about cats."] * 2})
    args = GRPOConfig(
        tmp_path / "grpo",
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=4,
        max_steps=1,
        use_cpu=True,
        bf16=False,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        gradient_checkpointing=False,
    )
    trainer = GRPOTrainer(model=str(tiny_model), reward_funcs=str(trained_checkpoint), args=args, train_dataset=prompts)
    trainer.train()
    assert f"rewards/{trained_checkpoint.name}/mean" in trainer.state.log_history[0]


def test_theta_close_to_gamma_with_tfidf_features_and_targets_lose_the_confounder(tiny_model, tmp_path):
    rows = observational_rows(n=1200, gamma=1.0, seed=0)
    trainer = build_trainer(tiny_model, tmp_path, rows, n_folds=5)
    effect = trainer.report["deconfounding"]["effects"]["confounder"]
    assert abs(effect["theta"] - 1.0) < 0.1 and effect["ci_low"] <= 1.0 <= effect["ci_high"]
    target = np.array(trainer.train_dataset["target"])
    assert abs(target.mean()) < 1e-6 and abs(target.std() - 1) < 1e-6
    f, confounder, outcome = (np.array([row[key] for row in rows]) for key in ("f", "confounder", "outcome"))
    deconfounded = (
        target * trainer.report["target"]["std"] + trainer.report["target"]["mean"]
    )  # r~ - f = (gamma - theta) C + e
    assert abs(np.corrcoef(deconfounded - f, confounder)[0, 1]) < 0.1 < 0.5 < np.corrcoef(outcome - f, confounder)[0, 1]
    assert (tmp_path / "out" / REPORT_FILE).is_file()


@pytest.mark.parametrize(
    "mode, objective",
    [("deconfounded", "pairwise"), ("naive", "regression"), ("covariate", "pairwise"), ("invariance", "regression")],
)
def test_modes_and_objectives_train_and_save_a_plain_checkpoint(mode, objective, tiny_model, tmp_path):
    from safetensors.torch import load_file

    trainer = build_trainer(
        tiny_model,
        tmp_path,
        observational_rows(),
        mode=mode,
        objective=objective,
        feature_source="model",  # used by mode deconfounded only
        feature_cache_dir=str(tmp_path / "features"),
        gradient_accumulation_steps=2,
        **({"margin_scale": 0.5} if objective == "pairwise" else {}),
        **({"per_device_train_batch_size": 3} if mode == "invariance" else {}),  # its correlation needs 3 rows
    )
    columns = trainer.train_dataset.column_names
    assert ("chosen_ids" in columns and "margin" in columns) if objective == "pairwise" else ("target" in columns)
    if objective == "pairwise":
        assert len(trainer.train_dataset) <= 30 * 6  # within-group pairs only: 30 groups of 4
    # the confounders travel with the rows only where the loss reads them, as float32
    confounder_columns = [column for column in columns if column.endswith("confounders")]
    assert confounder_columns == ([] if mode in ("deconfounded", "naive") else ["chosen_confounders", "rejected_confounders"] if objective == "pairwise" else ["confounders"])
    assert all(trainer.train_dataset.features[column].feature.dtype == "float32" for column in confounder_columns)
    trainer.train()
    logs = trainer.state.log_history[0]
    assert np.isfinite(logs["loss"]) and ("accuracy" in logs) == (objective == "pairwise")
    assert ("margin" in logs) == (objective == "pairwise")  # metric_for_best_model: margin works as with RewardTrainer
    assert logs["min_reward"] <= logs["mean_reward"] <= logs["max_reward"] and logs["num_tokens"] > 0  # RewardTrainer's too
    assert ("confounder_corr2" in logs) == (mode == "invariance")
    assert (trainer.report["deconfounding"] is None) == (mode != "deconfounded")
    if mode == "deconfounded":  # feature_autocast auto, training in fp32: bf16 where the CPU has bf16 units
        assert trainer.report["feature_precision"] == ("bf16" if runs_bf16_natively("cpu") else "float32")
    else:
        assert "feature_precision" not in trainer.report
    trainer.save_model(str(tmp_path / "saved"))
    assert not any("trl_causal_heads" in key for key in load_file(tmp_path / "saved" / "model.safetensors"))
    report = json.loads((tmp_path / "saved" / REPORT_FILE).read_text())
    if mode == "covariate":  # the head on C is trained, reported, and not part of the reward model
        assert report["covariate_head"]["confounder"] != 0.0


def test_model_features_are_masked_means_cached_by_backbone_and_tokens(tiny_model, tmp_path):
    from transformers import AutoModel, AutoModelForSequenceClassification

    backbone = AutoModel.from_pretrained(tiny_model)
    sequences = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    phi = hidden_state_features(backbone, sequences, pad_token_id=0, batch_size=2, cache_dir=tmp_path, progress=False)
    with torch.no_grad():
        expected = backbone(input_ids=torch.tensor([sequences[1]])).last_hidden_state.mean(dim=1)[0].numpy()
    np.testing.assert_allclose(phi[1], expected, atol=1e-5)
    classifier = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)  # same backbone
    np.testing.assert_array_equal(
        hidden_state_features(classifier, sequences, 0, cache_dir=tmp_path, progress=False), phi
    )
    assert len(list(tmp_path.glob("*.npy"))) == 1
    # no sequence, or one without tokens, is named rather than cached as None or pooled to a zero vector
    for empty, message in (([], "No token sequences to pool"), ([[5, 6], []], r"1 row \(row 1\) has none")):
        with pytest.raises(DataError, match=message):
            hidden_state_features(backbone, empty, 0, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.npy"))) == 1


def test_model_features_of_a_long_text_are_those_of_its_first_tokens(tiny_model, tmp_path):
    """Rows that training drops as longer than max_length still feed the nuisance regressions, and were pooled
    whole: past a model's position table (GPT-2's n_positions) an IndexError deep in torch."""
    from transformers import GPT2Config, GPT2Model

    from trl_causal.deconfound.texts import text_features

    gpt2 = GPT2Model(GPT2Config(vocab_size=64, n_positions=8, n_embd=16, n_layer=1, n_head=2)).eval()
    sequences = [list(range(3, 23)), [5, 6, 7]]
    args = reward_args(tmp_path, feature_source="model", max_length=None, feature_layers=[-1], feature_autocast="none")
    cut = hidden_state_features(gpt2, [ids[:8] for ids in sequences], 0, cache_dir=None, progress=False, layers=[-1])
    np.testing.assert_array_equal(text_features(args, None, sequences, gpt2, 0, progress=False), cut)
    args = reward_args(tmp_path, feature_source="model", max_length=4, feature_layers=[-1], feature_autocast="none")
    cut = hidden_state_features(gpt2, [ids[:4] for ids in sequences], 0, cache_dir=None, progress=False, layers=[-1])
    np.testing.assert_array_equal(text_features(args, None, sequences, gpt2, 0, progress=False), cut)


def test_model_features_concatenate_the_pooled_layers(tiny_model, tmp_path):
    from transformers import AutoModel

    backbone = AutoModel.from_pretrained(tiny_model)
    sequences = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    last = hidden_state_features(backbone, sequences, 0, cache_dir=tmp_path, progress=False)
    both = hidden_state_features(backbone, sequences, 0, cache_dir=tmp_path, progress=False, layers=[0, -1])
    hidden = last.shape[1]
    embeddings = backbone.get_input_embeddings().weight.detach().numpy()
    np.testing.assert_allclose(both[1, :hidden], embeddings[sequences[1]].mean(axis=0), atol=1e-6)
    np.testing.assert_array_equal(both[:, hidden:], last)
    assert len(list(tmp_path.glob("*.npy"))) == 2
    with pytest.raises(ConfigError, match=r"layer\(s\) \[3\] out of range: the model returns 3 hidden states"):
        hidden_state_features(backbone, sequences, 0, cache_dir=tmp_path, progress=False, layers=[0, 3])


def test_feature_layers_default_to_embeddings_and_last_layer(tmp_path):
    assert reward_args(tmp_path).feature_layers == [0, -1]
    assert reward_args(tmp_path, feature_layers=-1).feature_layers == [-1]
    with pytest.raises(ConfigError, match="feature_layers is empty"):
        reward_args(tmp_path, feature_layers=[])


def test_model_features_under_bf16_autocast_are_close_and_cached_apart(tiny_model, tmp_path):
    from transformers import AutoModel

    backbone = AutoModel.from_pretrained(tiny_model)
    sequences = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    exact = hidden_state_features(backbone, sequences, 0, cache_dir=tmp_path, progress=False)
    low = hidden_state_features(backbone, sequences, 0, cache_dir=tmp_path, progress=False, autocast="bf16")
    assert low.dtype == np.float32 and not np.array_equal(low, exact)  # a bf16 pass, not the fp32 cache entry
    np.testing.assert_allclose(low, exact, atol=0.05 * np.abs(exact).max())
    assert len(list(tmp_path.glob("*.npy"))) == 2
    with pytest.raises(ConfigError, match="autocast='fp8'"):
        hidden_state_features(backbone, sequences, 0, cache_dir=tmp_path, progress=False, autocast="fp8")


@pytest.mark.parametrize(
    "setting, flags, native, cpu, expected",
    [
        ("auto", {}, False, False, None),
        ("auto", {}, True, False, "bf16"),
        ("auto", {"bf16": True}, False, False, "bf16"),
        ("auto", {"fp16": True}, True, False, "fp16"),
        ("auto", {"fp16": True}, True, True, "bf16"),  # training ignores fp16 on a CPU; emulated fp16 was 4x slower
        ("auto", {"fp16": True}, False, True, None),
        ("none", {"bf16": True}, True, False, None),
        ("bf16", {}, False, False, "bf16"),
    ],
)
def test_feature_autocast_follows_training_then_the_hardware_unless_set(tmp_path, setting, flags, native, cpu, expected):
    args = reward_args(tmp_path, feature_autocast=setting, **flags)
    assert args.feature_autocast_precision(bf16_native=native, cpu=cpu) == expected


def test_bf16_is_native_only_on_devices_with_bf16_units():
    cpu_has_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert runs_bf16_natively("cpu") == cpu_has_bf16
    assert runs_bf16_natively("meta") is False


def test_unknown_feature_autocast_is_named(tmp_path):
    with pytest.raises(ConfigError, match="feature_autocast=False"):  # what YAML makes of `feature_autocast: no`
        reward_args(tmp_path, feature_autocast=False)


def test_a_best_model_metric_the_objective_does_not_log_is_refused_before_training(tmp_path):
    """metric_for_best_model: accuracy, as RewardTrainer users set it, failed with transformers' KeyError at the
    first evaluation under the regression objective (which logs no accuracy), before any checkpoint was saved."""
    with pytest.raises(ConfigError, match=r"metric_for_best_model: eval_accuracy is logged with objective: pairwise only"):
        reward_args(tmp_path, metric_for_best_model="eval_accuracy", eval_strategy="steps", load_best_model_at_end=True, save_strategy="steps")
    with pytest.raises(ConfigError, match=r"confounder_corr2 is logged in mode: invariance only"):
        reward_args(tmp_path, metric_for_best_model="confounder_corr2")
    assert reward_args(tmp_path, metric_for_best_model="accuracy", objective="pairwise").metric_for_best_model == "accuracy"


def test_evaluation_rows_get_targets_from_the_training_theta(tiny_model, tmp_path):
    rows = observational_rows(n=160, seed=2)
    trainer = DeconfoundedRewardTrainer(
        model=str(tiny_model),
        args=reward_args(tmp_path),
        train_dataset=Dataset.from_list(rows[:120]),
        eval_dataset=Dataset.from_list(rows[120:]),
    )
    outcome, confounder = (np.array([row[key] for row in rows[120:]]) for key in ("outcome", "confounder"))
    targets = trainer.targets
    expected = (
        outcome - targets.result.theta[0] * (confounder - targets.result.confounder_mean[0]) - targets.mean
    ) / targets.std
    np.testing.assert_allclose(trainer.eval_dataset["target"], expected, rtol=1e-6)
    assert np.isfinite(trainer.evaluate()["eval_loss"])
    predicted = trainer.predict(trainer.eval_dataset)
    assert predicted.predictions.shape[0] == 40
    np.testing.assert_allclose(predicted.label_ids, expected, rtol=1e-5)  # compute_metrics gets the targets
    for method in (trainer.evaluate, trainer.predict):  # raw rows have no targets without the training theta
        with pytest.raises(DataError, match=rf"{method.__name__}\(\) takes rows this trainer prepared"):
            method(Dataset.from_list(rows[120:]))


def test_gradient_accumulation_gives_the_gradient_of_one_large_batch(tiny_model, tmp_path):
    """One SGD step on 4 rows equals two accumulated micro-batches of 2 rows (same rows: same sampler seed)."""
    rows = observational_rows()

    def weights_after_one_step(batch_size: int, accumulation: int) -> dict[str, torch.Tensor]:
        trainer = build_trainer(
            tiny_model,
            tmp_path / f"{batch_size}x{accumulation}",
            rows,
            optim="sgd",
            learning_rate=0.5,
            max_steps=1,
            lr_scheduler_type="constant",
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
        )
        trainer.train()
        return {name: p.detach().clone() for name, p in trainer.model.named_parameters()}

    large, accumulated = weights_after_one_step(4, 1), weights_after_one_step(2, 2)
    for name, value in large.items():
        torch.testing.assert_close(accumulated[name], value, rtol=1e-4, atol=1e-6, msg=name)


def test_dpo_pairs_are_ranked_by_the_deconfounded_outcome_within_groups(tiny_model, tmp_path, capsys):
    rows = observational_rows(n=200, prompt_completion=True, seed=1)
    config = cli_config(tmp_path, tiny_model, rows, text_column=None, n_folds=5)
    for mode in ("deconfounded", "naive"):
        output = tmp_path / f"pairs_{mode}.jsonl"
        assert cli.main(["dpo-pairs", "--config", str(config), "--output", str(output), "--mode", mode]) == 0
        pairs = [json.loads(line) for line in output.read_text().splitlines()]
        outcome = np.array([row["outcome"] for row in rows])
        if mode == "deconfounded":  # r~ = Y - theta (C - mean C), theta from the same cross-fitting
            confounder = np.array([row["confounder"] for row in rows])
            texts = [row["prompt"] + row["completion"] for row in rows]
            result = partial_out(
                outcome,
                confounder,
                tfidf_features(texts),
                n_folds=5,
                seed=0,
                groups=[row["group"] for row in rows],
                progress=False,
            )
            score = result.deconfounded_outcome
        else:
            score = outcome
        by_completion = {
            row["completion"]: (row["group"], row["prompt"], s) for row, s in zip(rows, score, strict=True)
        }
        assert len(pairs) == 50 * 6  # every pair of the 4 rows of each of 50 groups
        for pair in pairs:
            (group, prompt, chosen), (other_group, _, rejected) = (
                by_completion[pair["chosen"]],
                by_completion[pair["rejected"]],
            )
            assert group == other_group and pair["prompt"] == prompt
            assert chosen > rejected and pair["score_chosen"] > pair["score_rejected"]
    assert "ranked by the raw outcome" in capsys.readouterr().out
    # covariate / invariance change how a reward model trains, not the outcome: no ranking of their own
    assert cli.main(["dpo-pairs", "--config", str(config), "--output", str(tmp_path / "p.jsonl"), "--mode", "covariate"]) == 2
    assert "mode 'covariate' changes how a reward model trains, not the outcome" in capsys.readouterr().err
    assert cli.main(["dpo-pairs", "--config", str(config), "--output", str(tmp_path)]) == 2
    assert f"--output {tmp_path} is a directory; dpo-pairs writes one JSON lines file" in capsys.readouterr().err
    from trl_causal.configuration import read_yaml

    sft_config = write_config(tmp_path / "sft.yaml", {**read_yaml(config), "trainer": "sft", "numeric_confounders": None})
    assert cli.main(["dpo-pairs", "--config", str(sft_config), "--output", str(tmp_path / "p.jsonl")]) == 2
    assert f"({sft_config} is a config of trainer 'sft'; dpo-pairs reads a deconfounded_reward config" in capsys.readouterr().err
    missing = write_config(tmp_path / "missing.yaml", {**read_yaml(config), "model_name_or_path": str(tmp_path / "no-model")})
    assert cli.main(["dpo-pairs", "--config", str(missing), "--output", str(tmp_path / "p.jsonl"), "--feature_source", "model"]) == 2
    err = capsys.readouterr().err  # was a hundred lines of tracebacks ending at the Hub
    assert f"model_name_or_path '{tmp_path / 'no-model'}' is neither a local directory" in err and "Traceback" not in err
    streamed = write_config(tmp_path / "streamed.yaml", {**read_yaml(config), "dataset_streaming": True})
    assert cli.main(["dpo-pairs", "--config", str(streamed), "--output", str(tmp_path / "p.jsonl")]) == 2
    err = capsys.readouterr().err  # was a TypeError traceback from the first numeric column
    assert "needs the train rows as a map-style datasets.Dataset (dpo-pairs ranks all rows" in err and "Traceback" not in err


def test_dpo_pairs_load_the_model_in_the_dtype_training_loads_it(tiny_model, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_causal.configuration import parse_run_config
    from trl_causal.deconfound import texts
    from trl_causal.deconfound.pairs import _model_features

    bf16 = tmp_path / "tiny-bf16"
    AutoModelForCausalLM.from_pretrained(tiny_model).to(torch.bfloat16).save_pretrained(bf16)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(bf16)
    config = cli_config(tmp_path, bf16, observational_rows(), feature_source="model", dtype="auto")
    features, seen = texts.text_features, []

    def spy(args, rows, sequences, model=None, *rest):
        seen.append(next(model.parameters()).dtype)
        return features(args, rows, sequences, model, *rest)

    monkeypatch.setattr(texts, "text_features", spy)
    _model_features(parse_run_config([], str(config)), Dataset.from_list(observational_rows()[:8]))
    assert seen == [torch.bfloat16]  # `dtype: auto` is the checkpoint's dtype, as TRL loads the reward model


def test_pairs_refuse_scores_that_rank_nothing():
    from trl_causal.deconfound import preference_pairs  # exported with the other array functions

    with pytest.raises(DataError, match=r"the scores of row 1 are NaN or infinite"):
        preference_pairs([0.1, np.nan, 0.3, 0.9], np.array([0, 0, 1, 1]))  # its pairs were dropped silently


def test_pairs_read_group_ids_as_the_trainer_does():
    """Group ids of mixed types (1 and "1" are two groups, as in the trainer, where numpy failed to sort them) and a
    missing id, which would join unrelated rows, named by its row."""
    from trl_causal.deconfound import preference_pairs

    assert preference_pairs([1, 2, 3, 1, 2, 3], [1, 1, 1, "1", "1", "1"]).tolist() == [[1, 0], [2, 0], [2, 1], [4, 3], [5, 3], [5, 4]]
    with pytest.raises(DataError, match=r"groups has missing ids \(None/NaN/blank\) at row 1"):
        preference_pairs([1, 2, 3], [1, float("nan"), "a"])


def test_dpo_pairs_count_a_repeated_answer_once_with_its_mean_outcome(tiny_model, tmp_path, capsys):
    rows = observational_rows(n=44, prompt_completion=True, seed=1)  # 11 groups of 4
    rows[1]["completion"] = rows[0]["completion"]  # group 0 samples one answer twice, with two outcomes
    rows[40]["outcome"] = None  # group 10 keeps 3 rows
    config = cli_config(tmp_path, tiny_model, rows, text_column=None, n_folds=5, drop_invalid=True)
    output = tmp_path / "pairs.jsonl"
    assert cli.main(["dpo-pairs", "--config", str(config), "--output", str(output), "--mode", "naive"]) == 0
    assert "from 43 rows ranked by the raw outcome" in (out := capsys.readouterr().out)
    assert "; 1 row with a missing or non-finite value dropped; 1 row that repeats an answer of its group merged with it (mean outcome)" in out
    pairs = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(pairs) == 9 * 6 + 3 + 3  # group 0 has 3 distinct answers, group 10 three rows
    assert all(pair["chosen"] != pair["rejected"] for pair in pairs)
    ordered = {(pair["chosen"], pair["rejected"]) for pair in pairs}
    assert not any((rejected, chosen) in ordered for chosen, rejected in ordered)
    repeated = [pair for pair in pairs if rows[0]["completion"] in (pair["chosen"], pair["rejected"])]
    mean = np.mean([rows[0]["outcome"], rows[1]["outcome"]])
    outcomes = np.array([row["outcome"] for row in rows if row["outcome"] is not None])
    standardised = (mean - outcomes.mean()) / outcomes.std()
    for pair in repeated:
        score = pair["score_chosen"] if pair["chosen"] == rows[0]["completion"] else pair["score_rejected"]
        assert score == pytest.approx(standardised, rel=1e-6)


def test_dpo_pairs_skip_and_count_rows_alone_in_their_group_and_warn_of_many_pairs(tiny_model, tmp_path, capsys):
    """dpo-pairs refused singleton groups (advising `objective: regression`, which it refuses too) though it then
    handled them; it now writes the other groups' pairs and counts the lone rows. A group of 40 rows (780 pairs
    from 44 rows) is warned about, as in training."""
    rows = observational_rows(n=44, prompt_completion=True, seed=1)  # 11 groups of 4
    for row in rows[40:]:
        row["group"] = f"alone-{row['outcome']}"  # group 10's four rows each alone
    config = cli_config(tmp_path, tiny_model, rows, text_column=None, n_folds=5)
    output = tmp_path / "pairs.jsonl"
    assert cli.main(["dpo-pairs", "--config", str(config), "--output", str(output), "--mode", "naive"]) == 0
    out = capsys.readouterr()
    assert "wrote 60 DPO pairs from 44 rows" in out.out and "; 4 rows alone in their group, which make no pair" in out.out
    assert len(output.read_text().splitlines()) == 10 * 6 and "within-group pairs" not in out.err
    for row in rows[:40]:
        row["group"], row["prompt"] = 0, rows[0]["prompt"]
    config = cli_config(tmp_path, tiny_model, rows, text_column=None, n_folds=5)
    assert cli.main(["dpo-pairs", "--config", str(config), "--output", str(output), "--mode", "naive"]) == 0
    assert "dpo-pairs: 44 rows give 780 within-group pairs (largest group: 40 rows)" in capsys.readouterr().err


# --- bad input: one line from the training script, before the model loads where the data alone decides --------


def train_fails_with(capsys, config: Path, *fragments: str) -> str:
    code = train.cli(["--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("trl-causal: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_missing_outcome_column_fails_before_launch(tmp_path, tiny_model, capsys):
    config = cli_config(tmp_path, tiny_model, observational_rows(), outcome_column="clicks")
    assert cli.main(["train", "--config", str(config)]) == 2
    assert "lacks the columns this trainer needs: clicks" in (err := capsys.readouterr().err)
    assert "text_column" not in err  # the text column is there: no hint about it
    split = [dict(row, prompt=row["text"][:10], completion=row["text"][10:]) for row in observational_rows()]
    config = cli_config(tmp_path, tiny_model, [{k: v for k, v in row.items() if k != "text"} for row in split])
    assert cli.main(["train", "--config", str(config)]) == 2
    assert "lacks the columns this trainer needs: text. It has: completion" in (err := capsys.readouterr().err)
    assert "for prompt + completion rows set `text_column: null`" in err


def test_non_numeric_outcome(tmp_path, tiny_model, capsys):
    rows = [dict(row, outcome="high" if row["outcome"] > 0 else "low") for row in observational_rows()]
    train_fails_with(
        capsys, cli_config(tmp_path, tiny_model, rows), "outcome column 'outcome'", "must be numeric; it has non-numbers at rows [0, 1, 2, 3, 4] and 115 more (e.g. row 0:"
    )


def test_missing_values_through_trl_causal_train_are_counted_in_one_line(tmp_path, tiny_model):
    rows = observational_rows()
    for row, column in ((3, "outcome"), (8, "outcome"), (11, "confounder")):
        rows[row][column] = None
    result = run_cli("train", "--config", str(cli_config(tmp_path, tiny_model, rows)))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("trl-causal: error:")]
    assert len(error) == 1, result.stderr[-3000:]
    for fragment in (
        "3 of 120 rows",
        "'outcome': 2 (rows [3, 8])",
        "'confounder': 1 (row 11)",
        "drop_invalid: true",
    ):
        assert fragment in error[0]


def test_drop_invalid_drops_and_counts_nan_inf_and_missing_group_rows(tiny_model, tmp_path, caplog):
    rows = observational_rows()
    rows[2]["outcome"], rows[5]["confounder"], rows[9]["group"] = float("inf"), float("nan"), None
    with pytest.raises(DataError, match=r"3 of 120 rows .*'group': 1 \(row 9\)"):
        build_trainer(tiny_model, tmp_path, rows)  # a missing group id is not a group of its own
    trainer = build_trainer(tiny_model, tmp_path, rows, drop_invalid=True)
    assert trainer.report["rows"] == {
        "used": 117, "dropped_invalid": 3, "dropped_invalid_by_column": {"outcome": 1, "confounder": 1, "group": 1},
        "dropped_longer_than_max_length": 0, "trained": 117,
    }
    # evaluation rows are counted too, per split
    held_out = observational_rows(n=40, seed=5)
    held_out[1]["outcome"] = None
    with caplog.at_level("WARNING"):
        with_eval = DeconfoundedRewardTrainer(
            model=str(tiny_model),
            args=reward_args(tmp_path, drop_invalid=True),
            train_dataset=Dataset.from_list(rows),
            eval_dataset={"held_out": Dataset.from_list(held_out)},
        )
    assert len(with_eval.eval_dataset["held_out"]) == 39
    assert "1 held_out row with a missing or non-finite value is dropped (drop_invalid)." in caplog.text
    assert with_eval.report["eval_rows"] == {
        "held_out": {"used": 39, "dropped_invalid": 1, "dropped_invalid_by_column": {"outcome": 1}, "dropped_longer_than_max_length": 0}
    }
    assert "eval_rows" not in trainer.report  # no evaluation split


def test_drop_invalid_drops_nan_and_inf_written_as_strings_in_a_numeric_confounder(tiny_model, tmp_path):
    rows = [dict(row, confounder=str(row["confounder"]), outcome=str(row["outcome"])) for row in observational_rows()]  # quoted, as some exports write them
    rows[4]["confounder"], rows[7]["confounder"] = "NaN", "-inf"
    rows[9]["outcome"], rows[12]["outcome"] = " ", "n/a"  # a CSV's blank cell, a spreadsheet's missing mark
    with pytest.raises(DataError, match=r"4 of 120 rows .*'outcome': 2 \(rows \[9, 12\]\).*'confounder': 2 \(rows \[4, 7\]\).*drop_invalid: true"):
        build_trainer(tiny_model, tmp_path, rows)
    trainer = build_trainer(tiny_model, tmp_path, rows, drop_invalid=True)
    assert trainer.report["rows"]["dropped_invalid"] == 4
    rows[4]["confounder"] = "cheap"
    with pytest.raises(DataError, match=r"numeric confounder column 'confounder' of the train split must be numeric; it has non-numbers at row 4\b.*Convert them to numbers; a missing value may be left empty or written NA"):
        build_trainer(tiny_model, tmp_path, rows, drop_invalid=True)


def test_every_row_longer_than_max_length_fails_before_the_feature_pass(tiny_model, tmp_path):
    with pytest.raises(DataError, match=r"All 120 rows of the train split are longer than max_length=3 tokens \(the shortest has \d+\)"):
        build_trainer(tiny_model, tmp_path, observational_rows(), max_length=3)


def test_the_outcome_listed_as_a_confounder_or_instrument_is_refused(tmp_path):
    for role in ("numeric_confounders", "instrument_columns"):
        with pytest.raises(ConfigError, match=rf"{role} lists the outcome column 'outcome'"):
            reward_args(tmp_path, **{role: ["confounder", "outcome"]})
    assert reward_args(tmp_path, instrument_columns=None).instrument_columns is None  # None: no instruments


def test_length_grouped_sampling_is_refused_for_pairs_and_kept_for_rows(tmp_path):
    # transformers' LengthGroupedSampler reads input_ids, which pairs lack: a traceback after the feature pass
    with pytest.raises(ConfigError, match="group_by_length sorts rows by their input_ids, and the pairwise objective"):
        reward_args(tmp_path, objective="pairwise", train_sampling_strategy="group_by_length")
    assert reward_args(tmp_path, objective="regression", train_sampling_strategy="group_by_length").train_sampling_strategy == "group_by_length"


def test_confounders_that_explain_all_of_the_outcome_leave_nothing_to_learn(tiny_model, tmp_path):
    rows = [dict(row, clicks=2 * row["outcome"] + 1) for row in observational_rows()]  # the outcome under another name
    with pytest.raises(DataError, match=r"The confounders explain all of the outcome 'outcome'.*sd\(Y\)"):
        build_trainer(tiny_model, tmp_path, rows, numeric_confounders=["confounder", "clicks"])


def test_a_messages_column_as_text_column_points_to_prompt_and_completion(tiny_model, tmp_path):
    rows = [dict(row, messages=[{"role": "user", "content": row["text"]}]) for row in observational_rows()]
    with pytest.raises(DataError, match=r"text_column 'messages' of the train split holds message lists \(e.g. row 0\).*text_column: null"):
        build_trainer(tiny_model, tmp_path, rows, text_column="messages")


def test_a_text_column_of_numbers_is_named_and_a_null_text_in_a_column_of_two_roles_counts(tiny_model, tmp_path):
    rows = observational_rows()
    with pytest.raises(DataError, match=r"Column 'group' of the train split holds the scored text, but it has int values at rows \[0, 1, 2, 3, 4\] and 115 more \(e\.g\. row 0: 0\), not strings\. Is text_column"):
        build_trainer(tiny_model, tmp_path, rows, text_column="group", group_column="group")
    prompt_completion = [dict(row, completion=7) for row in observational_rows(prompt_completion=True)]
    with pytest.raises(DataError, match=r"Column 'completion' .* int values at rows \[0, 1, 2, 3, 4\] and 115 more \(e\.g\. row 0: 7\), not strings or message lists"):
        build_trainer(tiny_model, tmp_path, prompt_completion, text_column=None)
    texts = [dict(row, label=row["text"]) for row in rows]
    texts[5]["label"] = None  # the text, and a categorical confounder: the missing text is counted, not overwritten
    with pytest.raises(DataError, match=r"1 of 120 rows of the train split has a missing .* 'label': 1 \(row 5\)"):
        build_trainer(tiny_model, tmp_path, texts, text_column="label", categorical_confounders=["label"])


def test_confounder_without_variance(tmp_path, tiny_model, capsys):
    rows = [dict(row, confounder=1.0) for row in observational_rows()]
    train_fails_with(capsys, cli_config(tmp_path, tiny_model, rows), "'confounder'", "no variance")


def test_confounder_that_the_text_determines_suggests_an_instrument(tmp_path, tiny_model, capsys):
    rows = observational_rows(n=200)
    topics = sorted({row["text"].split(":")[0] for row in rows})
    rows = [dict(row, confounder=float(topics.index(row["text"].split(":")[0]))) for row in rows]  # the topic's number
    config = cli_config(tmp_path, tiny_model, rows, group_column=None, n_folds=5)
    train_fails_with(capsys, config, "'confounder'", "function of the text", "instrument")


def test_weak_instrument_warns_with_the_first_stage_f(tiny_model, tmp_path):
    rows = observational_rows(n=400, instrument_strength=0.02, hidden_confounding=1.0, seed=3)
    with pytest.warns(WeakInstrumentWarning, match=r"first-stage F = \d+\.\d\d < 10"):
        trainer = build_trainer(tiny_model, tmp_path, rows, instrument_columns="instrument")
    assert trainer.report["deconfounding"]["method"] == "partialling_out_iv"


def test_an_instrument_beside_a_categorical_confounder_instruments_the_endogenous_one_only(tiny_model, tmp_path, capsys):
    rows = observational_rows(n=800, instrument_strength=1.0, hidden_confounding=1.0, seed=4)
    for i, row in enumerate(rows):
        row["channel"] = ("email", "app", "web")[i % 3]  # exogenous: one-hot, 2 columns of the confounder matrix
    settings = {"instrument_columns": "instrument", "categorical_confounders": ["channel"], "feature_source": "tfidf"}
    with pytest.raises(DataError, match=r"1 instrument column\(s\) for 3 endogenous confounder-matrix columns \(confounder, channel=email, channel=web\).*`endogenous_confounders`"):
        build_trainer(tmp_path / "no-model", tmp_path, rows, **settings)  # before the model loads
    trainer = build_trainer(tiny_model, tmp_path, rows, **settings, endogenous_confounders=["confounder"])
    deconfounding = trainer.report["deconfounding"]
    assert deconfounding["method"] == "partialling_out_iv"
    effect = deconfounding["effects"]["confounder"]
    assert effect["ci_low"] < 1.0 < effect["ci_high"] and effect["first_stage_f"] > 10  # gamma = 1
    assert deconfounding["instruments"] == ["instrument", "channel=email", "channel=web"]  # the exogenous ones too
    out = capsys.readouterr().out
    assert "partialling-out IV (2SLS), instruments: instrument, channel=email, channel=web" in out
    assert f"first-stage F {effect['first_stage_f']:.3g})" in out
    assert "theta[channel=email]" in out and "exogenous: its own instrument)" in out  # no F of a column with itself
    assert deconfounding["effects"]["channel=web"]["exogenous"] and "first_stage_f" not in deconfounding["effects"]["channel=web"]
    assert trainer.report["reference_levels"] == {"channel": "app"}  # theta[channel=email] is measured from "app"
    assert "one-hot thetas are measured from the reference levels channel=app" in out
    with pytest.raises(ConfigError, match=r"endogenous_confounders names \['chanel'\], which are not confounder columns"):
        reward_args(tmp_path, **settings, endogenous_confounders=["chanel"])
    with pytest.raises(ConfigError, match="endogenous_confounders names the confounders that instrument_columns move"):
        reward_args(tmp_path, endogenous_confounders=["confounder"])


def test_a_long_tail_of_category_values_is_pooled_and_reported(tiny_model, tmp_path, capsys):
    """Countries of a click log: three common ones, and 30 seen once each (whose thetas would each absorb one row's
    outcome). Pooled into one level, in the matrix, the report and the summary; an int column read with an empty
    cell (floats) gives the same levels as the ints."""
    rows = observational_rows(n=240, seed=5)
    for i, row in enumerate(rows):
        row["country"] = f"C{i}" if i % 8 == 7 else ("DE", "FR", "US")[i % 3]
        row["hour"] = float(i % 2) if i < 120 else i % 2
    with pytest.warns(UserWarning, match=r"'country': 30 values held by fewer than 5 training rows each .* are pooled into one level country=\(other\)"):
        trainer = build_trainer(tiny_model, tmp_path, rows, categorical_confounders=["country", "hour"], feature_source="tfidf")
    effects = trainer.report["deconfounding"]["effects"]
    assert [name for name in effects if name != "confounder"] == ["country=FR", "country=US", "country=(other)", "hour=1"]
    assert trainer.report["pooled_levels"] == {"country": {"values": sorted(f"C{i}" for i in range(7, 240, 8)), "pooled_into": "(other)"}}
    assert trainer.report["reference_levels"] == {"country": "DE", "hour": "0"}
    assert "country: 30 values of fewer than 5 training rows counted as the level (other)" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"min_level_rows=0 must be at least 1"):
        reward_args(tmp_path, min_level_rows=0)


def test_rows_that_repeat_an_earlier_row_are_counted(tiny_model, tmp_path, caplog):
    rows = observational_rows()
    rows[7] = dict(rows[3])  # a log that wrote one event twice
    rows[9] = dict(rows[3], outcome=rows[3]["outcome"] + 1)  # the same text and context, another outcome: no copy
    with caplog.at_level("WARNING"):
        build_trainer(tiny_model, tmp_path, rows)
    assert "1 row of the 120 training rows repeats an earlier row in every column the trainer reads (row 7)" in caplog.text


def test_an_outcome_of_one_value_fails_before_the_model_loads_in_every_mode(tmp_path):
    from trl_causal.deconfound.observations import Observations
    from trl_causal.deconfound.targets import reward_targets

    rows = [dict(row, outcome=1.0) for row in observational_rows()]
    for mode in ("deconfounded", "naive"):
        with pytest.raises(DataError, match=r"^The outcome column 'outcome' has the same value in every training row \(sd 0\): nothing to learn\.$"):
            build_trainer(tmp_path / "no-model", tmp_path, rows, mode=mode)  # before the feature pass and partial_out
    # reward_targets, which dpo-pairs calls without a trainer, checks what the data decides before the feature pass
    rng = np.random.default_rng(0)
    observations = Observations(np.arange(50), np.ones(50), rng.normal(size=(50, 2)), ["a", "b"], rng.normal(size=(50, 1)), None)

    def feature_pass():
        raise AssertionError("the feature pass ran before the data checks")

    with pytest.raises(DataError, match="same value in every training row"):
        reward_targets(observations, reward_args(tmp_path, numeric_confounders=["a", "b"]), feature_pass, progress=False)
    observations.outcome = rng.normal(size=50)
    with pytest.raises(DataError, match=r"1 instrument column\(s\) for 2 endogenous confounder-matrix columns"):
        reward_targets(observations, reward_args(tmp_path, numeric_confounders=["a", "b"], instrument_columns=["z"]), feature_pass, progress=False)
    observations.outcome = 1e6 + 1e-8 * rng.normal(size=50)  # one value up to rounding: no mode has anything to learn
    for mode in ("naive", "deconfounded"):
        with pytest.raises(DataError, match=r"same value in every training row \(sd 1\.\de-08\): nothing to learn"):
            reward_targets(observations, reward_args(tmp_path, numeric_confounders=["a", "b"], mode=mode), feature_pass, progress=False)


def test_fewer_rows_than_folds(tmp_path, tiny_model, capsys):
    train_fails_with(
        capsys,
        cli_config(tmp_path, tiny_model, observational_rows()[:3], group_column=None, n_folds=5),
        "Only 3 rows for n_folds=5",
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n_folds": 50}, r"Only 30 groups for n_folds=50"),
        ({"constant_in_train": True}, r"Confounders \['confounder'\] have the same value in every row"),
    ],
)
def test_design_errors_come_before_the_model_loads(tmp_path, change, message):
    """A design no text features can fix fails before the model is loaded and the feature pass runs (the model
    path here does not exist, so loading it first would fail on that instead). A confounder constant in the training
    rows only (the evaluation rows vary) passes the check over all rows."""
    rows = observational_rows()
    constant = change.pop("constant_in_train", False)
    train_rows = [dict(row, confounder=1.0) for row in rows] if constant else rows
    with pytest.raises(DataError, match=message):
        DeconfoundedRewardTrainer(
            model=str(tmp_path / "no-model"),
            args=reward_args(tmp_path, **change),
            train_dataset=Dataset.from_list(train_rows),
            eval_dataset=Dataset.from_list(rows[:40]),
        )


def test_singleton_groups_under_pairwise(tmp_path, tiny_model, capsys):
    rows = [dict(row, group=i // 2 if i < 100 else i) for i, row in enumerate(observational_rows())]
    train_fails_with(
        capsys,
        cli_config(tmp_path, tiny_model, rows, objective="pairwise"),
        "20 of 70 groups have a single row (rows [100, 101, 102, 103, 104] and 15 more)",
    )
    rows = [dict(row, group=i // 2) for i, row in enumerate(observational_rows())]
    rows[31]["outcome"] = None  # its pair mate, row 30, is left alone by drop_invalid: the message says why
    train_fails_with(
        capsys,
        cli_config(tmp_path, tiny_model, rows, objective="pairwise", drop_invalid=True),
        "train split, group_column 'group' once 1 row with a missing value was dropped (drop_invalid): 1 of 60 groups has a single row (row 30)",
    )


def test_pairwise_groups_that_max_length_leaves_with_one_row_give_no_pair(tiny_model, tmp_path, caplog, capsys, monkeypatch):
    from transformers import AutoTokenizer

    from trl_causal.trainer import deconfounded_reward_trainer

    rows = [dict(row, group=i // 2) for i, row in enumerate(observational_rows(n=40))]
    for row in rows[0:10:2]:  # the first row of groups 0-4
        row["text"] = row["text"] * 30
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    max_length = max(len(tokenizer(row["text"])["input_ids"]) for row in rows[10:]) + 2
    with caplog.at_level("WARNING"):
        trainer = build_trainer(tiny_model, tmp_path, rows, objective="pairwise", max_length=max_length)
    assert f"5 train groups have one row left after dropping the rows longer than max_length={max_length}" in caplog.text
    assert len(trainer.train_dataset) > 0
    # the deconfounding used all 40 rows; 35 train
    pairs = len(trainer.train_dataset)
    assert trainer.report["rows"] == {"used": 40, "dropped_invalid": 0, "dropped_longer_than_max_length": 5, "trained": 35, "pairs": pairs}
    assert f"35 training rows in {pairs} within-group pairs (0 invalid and 5 longer than max_length dropped" in capsys.readouterr().out
    assert train.check_prepared_rows(trainer, rows, "reward") == 35  # the run summary's train_rows
    assert "5 train rows are longer than max_length" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        build_trainer(tiny_model, tmp_path, rows[8:], objective="pairwise", max_length=max_length)  # row 8 is long
    assert f"1 train row is longer than max_length={max_length} tokens and is dropped." in caplog.text

    def no_feature_pass(*args, **kwargs):
        raise AssertionError("the features and the partialling out ran before the rows were checked")

    # a split whose every group loses a row fails before the feature pass and the partialling out, in words for its use
    monkeypatch.setattr(deconfounded_reward_trainer, "reward_targets", no_feature_pass)
    every_group_long = [dict(row, text=row["text"] * 30) if i % 2 else row for i, row in enumerate(rows)]
    with pytest.raises(DataError, match="Dropping the eval rows longer than max_length=.* leaves every group with one row, so there is no pair to evaluate: raise max_length"):
        DeconfoundedRewardTrainer(
            model=str(tiny_model),
            args=reward_args(tmp_path, objective="pairwise", max_length=max_length),
            train_dataset=Dataset.from_list(rows[10:]),
            eval_dataset=Dataset.from_list(every_group_long),
        )
    with pytest.raises(DataError, match="leaves every group with one row, so there is no pair to train on: raise max_length"):
        build_trainer(tiny_model, tmp_path, every_group_long, objective="pairwise", max_length=max_length)


def test_pairwise_counts_its_pairs_and_warns_when_large_groups_make_many(tiny_model, tmp_path, caplog, capsys):
    rows = [dict(row, group=i // 40) for i, row in enumerate(observational_rows(n=120))]  # 3 groups of 40 rows
    with caplog.at_level("WARNING"):
        trainer = build_trainer(tiny_model, tmp_path, rows, objective="pairwise", feature_source="tfidf")
    pairs = len(trainer.train_dataset)
    assert pairs > 10 * 120 and trainer.report["rows"]["pairs"] == pairs
    assert f"The train split: 120 rows give {pairs} within-group pairs (largest group: 40 rows)" in caplog.text
    assert f"120 training rows in {pairs} within-group pairs" in capsys.readouterr().out
    caplog.clear()
    with caplog.at_level("WARNING"):
        small = build_trainer(tiny_model, tmp_path, observational_rows(n=120), objective="pairwise", feature_source="tfidf")
    assert small.report["rows"]["pairs"] == len(small.train_dataset) <= 30 * 6 and "within-group pairs (largest" not in caplog.text


def test_pairwise_needs_a_group_column(tmp_path):
    with pytest.raises(ConfigError, match="set group_column"):
        reward_args(tmp_path, objective="pairwise", group_column=None)


@pytest.mark.parametrize("objective, size, needs", [("regression", 2, "3 or more rows"), ("pairwise", 1, "2 or more pairs")])
def test_invariance_needs_three_rows_or_two_pairs_per_micro_batch(tmp_path, objective, size, needs):
    # two rewards (two rows, or one pair's two rows) correlate fully with any confounder that differs: the penalty
    # would be a constant without gradient (at batch 2 a review measured the very update of mode naive)
    with pytest.raises(ConfigError, match=rf"needs {needs} .*gradient_accumulation_steps does not widen"):
        reward_args(tmp_path, mode="invariance", objective=objective, per_device_train_batch_size=size)
    reward_args(tmp_path, mode="invariance", objective=objective, per_device_train_batch_size=size + 1)


def test_evaluation_rows_with_a_level_unseen_in_training_count_as_the_reference_level(tiny_model, tmp_path):
    rows = [dict(row, channel="web" if i % 2 else "mail") for i, row in enumerate(observational_rows(n=64, seed=3))]
    evaluation = [dict(row, channel="app") for row in rows[48:]]  # 'app' sorts before both training levels
    with pytest.warns(UserWarning, match=r"'channel' has values that only rows outside the training rows hold \('app'\)"):
        trainer = DeconfoundedRewardTrainer(
            model=str(tiny_model),
            args=reward_args(tmp_path, categorical_confounders=["channel"]),
            train_dataset=Dataset.from_list(rows[:48]),
            eval_dataset={"held_out": Dataset.from_list(evaluation)},
        )
    assert trainer.confounder_names == ["confounder", "channel=web"]
    assert np.isfinite(trainer.evaluate()["eval_held_out_loss"])
    with pytest.raises(ConfigError, match=r"An evaluation split is named 'train'.*'train_eval'"):
        DeconfoundedRewardTrainer(
            model=str(tiny_model), args=reward_args(tmp_path), train_dataset=Dataset.from_list(rows[:48]),
            eval_dataset={"train": Dataset.from_list(rows[48:])},
        )


def test_feature_cache_tells_apart_backbones_that_share_embeddings_and_precisions(tiny_model, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel, AutoModelForSequenceClassification

    from trl_causal.deconfound.features import model_fingerprint

    base = AutoModel.from_pretrained(tiny_model)
    retrained = AutoModel.from_pretrained(tiny_model)
    with torch.no_grad():
        retrained.layers[0].mlp.down_proj.weight.add_(0.1)  # same embeddings, another layer
    assert model_fingerprint(retrained) != model_fingerprint(base)
    assert model_fingerprint(AutoModel.from_pretrained(tiny_model, dtype=torch.bfloat16)) != model_fingerprint(base)
    classifier = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
    lora = get_peft_model(classifier, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="SEQ_CLS"))
    assert model_fingerprint(lora) == model_fingerprint(classifier) == model_fingerprint(base)  # head, adapters: not backbone


def test_an_unwritable_feature_cache_warns_and_keeps_the_features(tiny_model, tmp_path):
    from transformers import AutoModel

    not_a_directory = tmp_path / "cache"
    not_a_directory.write_text("a file where the cache directory should be")
    with pytest.warns(UserWarning, match=r"Could not cache the text features in .*cache"):
        phi = hidden_state_features(AutoModel.from_pretrained(tiny_model), [[5, 6], [7]], 0, cache_dir=not_a_directory, progress=False)
    assert phi.shape[0] == 2 and np.isfinite(phi).all()
    assert not list(tmp_path.glob("**/*.tmp.npy"))


def test_tfidf_without_words_names_the_fix():
    from trl_causal.deconfound.features import tfidf_features

    with pytest.raises(DataError, match=r"TF-IDF found no words in the 3 texts .*`feature_source: model`"):
        tfidf_features(["A", "B", "5"])


def test_a_cache_file_that_cannot_be_read_or_has_other_rows_is_computed_again(tiny_model, tmp_path):
    from transformers import AutoModel

    backbone = AutoModel.from_pretrained(tiny_model)
    sequences = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    phi = hidden_state_features(backbone, sequences, 0, cache_dir=tmp_path, progress=False)
    cached, = tmp_path.glob("*.npy")
    nan = phi.copy()
    nan[0, 0] = np.nan  # taken as the data's own NaN, the error blamed the rows
    for damage in (cached.read_bytes()[:100], b"", np.zeros((10, phi.shape[1]), dtype=np.float32), phi.astype(np.float64), nan):
        if isinstance(damage, np.ndarray):
            np.save(cached, damage)
        else:
            cached.write_bytes(damage)
        with pytest.warns(UserWarning, match=f"The cached text features {cached} (cannot be read|holds an array of shape|holds float64 values|holds values that are not finite)"):
            np.testing.assert_array_equal(hidden_state_features(backbone, sequences, 0, cache_dir=tmp_path, progress=False), phi)
        np.testing.assert_array_equal(np.load(cached), phi)  # replaced by the features computed again
    # the features are written under a fresh name, then renamed: the old fixed name could be a planted link
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    cached.unlink()
    cached.with_suffix(f".{os.getpid()}.tmp.npy").symlink_to(victim)
    np.testing.assert_array_equal(hidden_state_features(backbone, sequences, 0, cache_dir=tmp_path, progress=False), phi)
    assert victim.read_text() == "keep me" and not cached.is_symlink()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("name", ["invariance_weight", "min_pair_gap", "margin_scale"])
def test_non_finite_weights_are_refused(tmp_path, name, value):
    """NaN fails `< 0` as every comparison does, and trained an all-NaN reward model with exit 0."""
    with pytest.raises(ConfigError, match=rf"{name}={value} must be a finite number >= 0"):
        reward_args(tmp_path, objective="pairwise", **{name: value})


@pytest.mark.parametrize(
    "name, value, suggested",
    [("objective", "Pairwise", "pairwise"), ("feature_autocast", "BF16", "bf16"), ("mode", "deconfound", "deconfounded")],
)
def test_a_misspelt_choice_suggests_the_close_one(tmp_path, name, value, suggested):
    with pytest.raises(ConfigError, match=rf"{name}='{value}' is not one of .* Did you mean '{suggested}'"):
        reward_args(tmp_path, **{name: value})


def test_an_empty_column_name_is_refused_or_unset(tmp_path):
    for name, value in (("outcome_column", ""), ("numeric_confounders", ["confounder", ""]), ("instrument_columns", [""])):
        with pytest.raises(ConfigError, match=rf"{name}=.* holds an empty column name"):
            reward_args(tmp_path, **{name: value})
    args = reward_args(tmp_path, group_column="", text_column="")  # as null, like YAML's empty value
    assert (args.group_column, args.text_column) == (None, None)


def test_deconfound_seed_alone_sets_the_folds_and_is_reported(tmp_path):
    """The folds followed the training `seed`: a seed sweep of the reward model moved theta too."""
    from trl_causal.deconfound.observations import Observations
    from trl_causal.deconfound.targets import reward_targets

    rng = np.random.default_rng(0)
    confounder, phi = rng.normal(size=(80, 1)), rng.normal(size=(80, 3))
    outcome = confounder[:, 0] + phi @ [1.0, -1.0, 0.5] + rng.normal(size=80)
    observations = Observations(np.arange(80), outcome, confounder, ["confounder"], None, None)

    def effect(**settings):
        args = reward_args(tmp_path, group_column=None, **settings)
        deconfounding = reward_targets(observations, args, lambda: phi, progress=False).report["deconfounding"]
        return deconfounding["seed"], deconfounding["effects"]["confounder"]["theta"]

    assert effect(seed=1)[1] != effect(seed=2)[1]  # deconfound_seed unset: the training seed
    assert effect(seed=1, deconfound_seed=7)[1] == effect(seed=2, deconfound_seed=7)[1]
    assert effect(seed=2, deconfound_seed=7)[0] == 7
