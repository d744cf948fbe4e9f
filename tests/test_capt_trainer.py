"""The capt trainer on the tiny model: fresh symbols per epoch through the real dataloader, one mapping per row,
completion-only loss, row formats, exact gradient accumulation, LoRA through the CLI, inference, bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import datasets
import pytest
import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerControl, TrainerState
from trl import SFTConfig, SFTTrainer

from conftest import base_config, cpu_training_args, run_cli, write_config, write_jsonl
from trl_causal import CAPTConfig, CAPTTrainer, cli
from trl_causal.capt import NoEventsFound, PoolExhaustedError, generate_prontoqa
from trl_causal.capt.sft_rows import part_text
from trl_causal.errors import ConfigError, DataError
from trl_causal.configuration import parse_run_config
from trl_causal.train import SUMMARY_FILE, check_prepared_rows, read_run_record
from trl_causal.trainer.capt_trainer import InterventionEpochCallback, RowTokenizer

PROBLEM_ID = re.compile(r"Problem (\d+)\.")


def prontoqa_rows(n: int = 4, fmt: str = "text") -> list[dict]:
    """PrOntoQA rows with reasoning completions (which repeat the prompt's events), numbered "Problem i."."""
    rows = []
    for i, row in enumerate(generate_prontoqa(n, "id", hops=[1, 2, 3], target="reasoning", seed=3)):
        prompt, completion = f"Problem {i}.\n{row['prompt']}", row["completion"]
        user, assistant = [{"role": "user", "content": prompt}], [{"role": "assistant", "content": completion}]
        if fmt == "messages":
            rows.append({"messages": user + assistant})
        elif fmt == "conversational":
            rows.append({"prompt": user, "completion": assistant, "answer": row["answer"], "events": row["events"]})
        else:
            rows.append({"prompt": prompt, "completion": "\n" + completion, "answer": row["answer"], "events": row["events"]})
    return rows


def capt_args(tmp_path, **overrides) -> CAPTConfig:
    return CAPTConfig(**cpu_training_args(tmp_path / "out", **{"max_steps": 1, "disable_tqdm": True, **overrides}))


def make_trainer(tiny_model, tmp_path, rows, **overrides) -> CAPTTrainer:
    args = capt_args(tmp_path, **overrides)
    return CAPTTrainer(model=str(tiny_model), args=args, train_dataset=datasets.Dataset.from_list(rows))


def names_in(text: str, names: list[str]) -> list[str]:
    return [name for name in names if re.search(rf"\b{re.escape(name)}s?\b", text)]


def test_direct_use_trains_and_each_epoch_draws_fresh_symbols_that_the_seed_reproduces(tiny_model, tmp_path):
    rows = prontoqa_rows(4)
    trainer = make_trainer(tiny_model, tmp_path, rows, per_device_train_batch_size=4, max_steps=-1, num_train_epochs=3)
    tokenizer = trainer.processing_class
    collate, seen = trainer.data_collator, []  # what the collator produced, batch by batch (one batch per epoch)

    def recording_collator(examples):
        batch = collate(examples)
        texts = tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
        seen.append({int(PROBLEM_ID.search(text)[1]): text for text in texts})
        return batch

    trainer.data_collator = recording_collator
    assert trainer.train().global_step == 3 and len(seen) == 3
    for problem, row in enumerate(rows):
        texts = [epoch[problem] for epoch in seen]
        assert len(set(texts)) == 3, texts  # new symbols every epoch
        assert not any(names_in(text, row["events"]) for text in texts)

    again = make_trainer(tiny_model, tmp_path, rows)  # same seed: the same symbols, epoch by epoch
    for epoch, texts in enumerate(seen):
        again.train_dataset.set_epoch(epoch)
        for index in range(len(rows)):
            text = tokenizer.decode(again.train_dataset[index]["input_ids"], skip_special_tokens=True)
            assert text == texts[int(PROBLEM_ID.search(text)[1])]

    other_seed = make_trainer(tiny_model, tmp_path, rows, intervention_seed=1)
    assert other_seed.train_dataset.render(0) != again.train_dataset.render(0)
    # a seed sweep that copies the config with another `seed` draws other symbols (intervention_seed: None follows it)
    swept = CAPTTrainer(model=str(tiny_model), args=dataclasses.replace(again.args, seed=1), train_dataset=datasets.Dataset.from_list(rows))
    assert swept.train_dataset.render(0) == other_seed.train_dataset.render(0)

    # A run resumed in the middle of epoch 2 draws the symbols of epoch 2.
    InterventionEpochCallback(again.train_dataset).on_epoch_begin(again.args, TrainerState(epoch=2.5), TrainerControl())
    assert again.train_dataset.draw == 2


@pytest.mark.parametrize("fmt", ["text", "conversational", "messages"])
def test_prompt_and_completion_of_a_row_share_one_mapping(tiny_model, tmp_path, fmt):
    dataset = make_trainer(tiny_model, tmp_path, prontoqa_rows(4, fmt)).train_dataset
    for index in range(len(dataset)):
        template = dataset.interventions.templates[index]
        mapping = dataset.interventions.intervene(index, dataset.draw).mapping
        prompt, completion = (part_text(part) for part in dataset.render(index)[:2])
        used_in_completion = re.findall(r"\{(e\d+)\}", template.completion)
        assert used_in_completion, template.completion
        for key in used_in_completion:
            assert re.search(rf"\b{mapping[key]}\b", prompt) and re.search(rf"\b{mapping[key]}\b", completion)
        assert not names_in(prompt + completion, list(template.names.values()))
        assert template.completion_is_message == (fmt != "text")  # a chat answer opens its own sentence


def test_a_rows_tools_and_chat_template_kwargs_reach_the_chat_template_as_in_trl(tiny_model, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    model = tmp_path / "model"  # the tiny model with a template that writes the row's tools and persona
    shutil.copytree(tiny_model, model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.chat_template = (
        "{% if tools %}TOOLS: {{ tools | map(attribute='name') | join(',') }}\n{% endif %}"
        "{% if persona is defined %}PERSONA {{ persona }}\n{% endif %}" + tokenizer.chat_template
    )
    tokenizer.save_pretrained(model)
    rows = [
        dict(row, tools=json.dumps([{"name": "get_frog"}]), chat_template_kwargs={"persona": "pirate"})
        for row in prontoqa_rows(2, "messages")
    ]
    dataset = make_trainer(model, tmp_path, rows).train_dataset
    text = tokenizer.decode(dataset[0]["input_ids"])
    assert text.startswith("TOOLS: get_frog\nPERSONA pirate\n<|im_start|>user"), text[:80]
    sft = SFTTrainer(model=str(model), args=SFTConfig(**cpu_training_args(tmp_path / "sft")), train_dataset=datasets.Dataset.from_list(rows))
    assert tokenizer.decode(sft.train_dataset[0]["input_ids"]).startswith("TOOLS: get_frog\nPERSONA pirate\n")  # as TRL does


@pytest.mark.parametrize("fmt", ["text", "conversational", "messages"])
def test_loss_covers_the_completion_only_unless_capt_prompt_loss(tiny_model, tmp_path, fmt):
    rows = prontoqa_rows(2, fmt)
    default = make_trainer(tiny_model, tmp_path, rows).train_dataset
    item = default[0]
    _, completion, _ = default.render(0)
    start = next(i for i, label in enumerate(item["labels"]) if label != -100)
    assert start > 0 and set(item["labels"][:start]) == {-100}
    assert item["labels"][start:] == item["input_ids"][start:]
    learned = default.tokenize.tokenizer.decode(item["labels"][start:], skip_special_tokens=True)
    assert learned.strip() == part_text(completion).strip()

    with_prompt = make_trainer(tiny_model, tmp_path, rows, capt_prompt_loss=True).train_dataset[0]
    assert with_prompt["labels"] == with_prompt["input_ids"] == item["input_ids"]


@pytest.mark.parametrize("fmt", ["text", "conversational"])
@pytest.mark.parametrize("max_length", [None, 200])  # 200 truncates the longer row
def test_rows_are_tokenized_as_sft_trainer_does(tiny_model, tmp_path, fmt, max_length):
    rows = prontoqa_rows(2, fmt)
    sft = SFTTrainer(
        model=str(tiny_model),
        args=SFTConfig(output_dir=str(tmp_path), bf16=False, use_cpu=True, report_to="none", max_length=max_length),
        train_dataset=datasets.Dataset.from_list(rows),
    )
    tokenize = RowTokenizer(sft.processing_class, max_length=max_length)
    assert len(sft.train_dataset) == len(rows)
    for row, prepared in zip(rows, sft.train_dataset):
        expected = {"input_ids": prepared["input_ids"], "labels": prepared["labels"]}
        assert tokenize(row["prompt"], row["completion"]) == expected


def test_loss_is_exact_under_gradient_accumulation(tiny_model, tmp_path):
    rows = prontoqa_rows(2)  # completions of different lengths

    def trained_weights(**overrides):
        trainer = make_trainer(tiny_model, tmp_path, rows, optim="sgd", learning_rate=1.0, **overrides)
        trainer.train()
        return {name: p.detach().clone() for name, p in trainer.model.named_parameters()}

    one_batch = trained_weights(per_device_train_batch_size=2, gradient_accumulation_steps=1)
    accumulated = trained_weights(per_device_train_batch_size=1, gradient_accumulation_steps=2)
    for name, weight in one_batch.items():
        torch.testing.assert_close(accumulated[name], weight, atol=1e-6, rtol=1e-5, msg=name)


def test_cli_trains_lora_on_conversational_rows_then_evaluates_with_the_capt_pipeline(tiny_model, tmp_path, capsys):
    data = write_jsonl(tmp_path / "train.jsonl", prontoqa_rows(4, "conversational"))
    test = write_jsonl(tmp_path / "test.jsonl", prontoqa_rows(4, "conversational"))
    config = {"trainer": "capt", **base_config(tiny_model, data, tmp_path / "out")}
    config.update(use_peft=True, lora_r=4, lora_alpha=8, symbol_pool="nonsense", event_estimator="prontoqa")
    config.update(save_strategy="steps", save_steps=2)
    path = write_config(tmp_path / "cfg.yaml", config)

    result = run_cli("train", "--config", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trl-causal capt: events estimated with 'prontoqa' on 4 training rows, 0 without events" in result.stdout
    summary = json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())
    assert summary["trainer"] == "capt" and summary["steps"] == 2
    assert (tmp_path / "out" / "adapter_config.json").is_file()

    assert cli.main(["eval", "--config", str(path), "--split", f"test={test}"]) == 0  # reloads the adapter
    report = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert report["results"]["capt"]["splits"]["test"]["n"] == 4
    baseline = tmp_path / "sft-baseline"  # compared under the capt YAML, whose capt keys sft does not take
    shutil.copytree(tiny_model, baseline)
    (baseline / SUMMARY_FILE).write_text(json.dumps({"trainer": "sft"}))
    capsys.readouterr()
    assert cli.main(["eval", "--config", str(path), "--split", f"test={test}", "--compare", str(baseline), "--output", str(tmp_path / "c.json")]) == 0
    assert "ignoring" not in capsys.readouterr().err  # no "ignoring 'symbol_pool' ... not 'sft'" for the baseline

    # Another YAML (trainer sft, CAPT's default pool) evaluates the checkpoint as trained: capt, nonsense symbols
    checkpoint = tmp_path / "out" / "checkpoint-2"
    record = json.loads((checkpoint / SUMMARY_FILE).read_text())
    assert record["settings"]["symbol_pool"] == "nonsense" and (record["world_size"], record["distributed"]) == (1, "NO")
    other = write_config(tmp_path / "other.yaml", {**config, "trainer": "sft", "symbol_pool": "letters"})
    assert cli._checkpoint_args(parse_run_config(["--trainer", "capt"], str(other)), read_run_record(str(checkpoint))).symbol_pool == "nonsense"
    assert cli.main(["eval", "--config", str(other), "--checkpoint", str(checkpoint), "--split", f"test={test}", "--output", str(tmp_path / "e.json")]) == 0
    assert set(json.loads((tmp_path / "e.json").read_text())["results"]) == {"capt"}
    assert "was trained with symbol_pool='nonsense', which the YAML sets otherwise; it predicts as trained" in capsys.readouterr().err
    capt_run = parse_run_config(["--trainer", "capt"], str(other))
    chosen = cli._eval_settings(["symbol_pool=letters", "intervention_seed=7"], {"ckpt": capt_run})["ckpt"]  # --setting wins
    assert chosen == {"symbol_pool": "letters", "intervention_seed": 7}
    args = cli._checkpoint_args(capt_run, read_run_record(str(checkpoint)), chosen)
    assert (args.symbol_pool, args.intervention_seed) == ("letters", 7)
    assert cli.main(["eval", "--config", str(other), "--checkpoint", str(checkpoint), "--split", f"test={test}", "--setting", "symbol_pol=x"]) == 2
    assert "--setting 'symbol_pol=x': give KEY=VALUE with KEY a field of CAPTConfig" in capsys.readouterr().err


def test_a_checkpoint_saved_from_a_trl_script_predicts_as_trained(tiny_model, tmp_path, capsys):
    """No run record (TRL script, Axolotl): the checkpoint's own file gives the settings and the answer prefix, so
    prompts without a completion have their answers scored after " ", as training wrote them."""
    rows = [{"prompt": row["prompt"], "completion": " " + row["answer"]} for row in prontoqa_rows(4)]
    trainer = make_trainer(tiny_model, tmp_path, rows, symbol_pool="nonsense", event_estimator="prontoqa")
    trainer.train()
    trainer.save_model()
    checkpoint = trainer.args.output_dir
    assert not (tmp_path / "out" / SUMMARY_FILE).exists()
    assert CAPTTrainer.checkpoint_settings(checkpoint)["symbol_pool"] == "nonsense"
    with pytest.warns(UserWarning, match=rf"{checkpoint} was trained with symbol_pool='nonsense'.*the config given sets otherwise, and the predictor follows it"):
        predictor = CAPTTrainer.build_predictor(capt_args(tmp_path), trainer.model, trainer.processing_class, ["True", "False"], checkpoint_dir=checkpoint)
    with warnings.catch_warnings(record=True) as caught:  # settings only training reads are no prediction's concern
        warnings.simplefilter("always")
        same = dataclasses.replace(capt_args(tmp_path), symbol_pool="nonsense", event_estimator="prontoqa", capt_prompt_loss=True, on_no_events="drop")
        CAPTTrainer.build_predictor(same, trainer.model, trainer.processing_class, ["True", "False"], checkpoint_dir=checkpoint)
    assert not [w for w in caught if "sets otherwise" in str(w.message)]
    assert predictor.answer_prefix == " "
    assert CAPTTrainer.build_predictor(capt_args(tmp_path), trainer.model, trainer.processing_class, ["True"], checkpoint_dir=checkpoint, answer_prefix="").answer_prefix == ""

    data = write_jsonl(tmp_path / "train.jsonl", rows)
    test = write_jsonl(tmp_path / "test.jsonl", [{"prompt": row["prompt"], "answer": row["completion"].strip()} for row in rows])
    config = write_config(tmp_path / "cfg.yaml", {"trainer": "capt", **base_config(tiny_model, data, tmp_path / "unused")})
    output = tmp_path / "eval.json"
    assert cli.main(["eval", "--config", str(config), "--checkpoint", checkpoint, "--split", f"test={test}", "--output", str(output)]) == 0
    assert json.loads(output.read_text())["results"]["capt"]["answer_prefix"] == " "
    assert "was trained with symbol_pool='nonsense'" in capsys.readouterr().err
    assert json.loads(output.read_text())["results"]["capt"]["splits"]["test"]["rows_without_events"] == 0
    with warnings.catch_warnings(record=True) as caught:  # eval's --setting is said in its note, not as a warning
        warnings.simplefilter("always")
        assert cli.main(["eval", "--config", str(config), "--checkpoint", checkpoint, "--split", f"test={test}", "--output", str(output), "--setting", "symbol_pool=letters"]) == 0
    assert not [w for w in caught if "sets otherwise" in str(w.message)]
    # a prompt without events is scored as written: said, and counted, since its accuracy is not CAPT's
    plain = write_jsonl(tmp_path / "plain.jsonl", [*(json.loads(line) for line in test.read_text().splitlines()), {"prompt": "Is the sky blue?", "answer": "True"}])
    assert cli.main(["eval", "--config", str(config), "--checkpoint", checkpoint, "--split", f"plain={plain}", "--output", str(output)]) == 0
    assert "capt: 1 row of 5 in split 'plain' has no event its estimator recognises; it was scored unchanged" in capsys.readouterr().err
    assert json.loads(output.read_text())["results"]["capt"]["splits"]["plain"]["rows_without_events"] == 1
    assert json.loads(output.read_text())["results"]["capt"]["splits"]["plain"]["rows_failed"] == 0  # none failed: not an llm


def test_eval_checks_the_llm_endpoint_before_loading_a_model(tiny_model, tmp_path, capsys):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        base_url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"  # closed once the block ends
    checkpoint = tmp_path / "ckpt"  # a run record and a config, no weights: loading the model first would fail on that
    checkpoint.mkdir()
    shutil.copy(tiny_model / "config.json", checkpoint)
    settings = {"event_estimator": "llm", "event_estimator_kwargs": {"model": "m", "base_url": base_url, "timeout": 5}}
    (checkpoint / SUMMARY_FILE).write_text(json.dumps({"trainer": "capt", "settings": settings}))
    test = write_jsonl(tmp_path / "test.jsonl", [{"prompt": "Is Sally a cat?", "answer": "True"}])
    config = write_config(tmp_path / "cfg.yaml", {"trainer": "capt", **base_config(tiny_model, test, tmp_path / "out"), **settings})
    assert cli.main(["eval", "--config", str(config), "--checkpoint", str(checkpoint), "--split", f"test={test}", "--answers", "True,False"]) == 2
    assert f"Cannot reach the LLM endpoint {base_url}/models" in capsys.readouterr().err


def test_eval_takes_the_estimators_endpoint_key_and_paths_from_the_yaml_never_from_the_checkpoint(tiny_model, tmp_path, capsys, monkeypatch):
    """A run record (or the prediction file saved with the model) edited to name the llm estimator, its base_url and
    api_key_env: AWS_SECRET_ACCESS_KEY made eval send that variable and the prompts to that host, whatever the YAML
    said: the checkpoint's settings won over the YAML's."""
    import socket

    from trl_causal.trainer.capt_trainer import PREDICTION_FILE, save_prediction_files

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        base_url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"  # closed once the block ends
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "AKIA-VICTIM-SECRET")
    crafted = {"event_estimator": "llm", "event_estimator_kwargs": {"model": "m", "base_url": base_url, "api_key_env": "AWS_SECRET_ACCESS_KEY"}}
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    shutil.copy(tiny_model / "config.json", checkpoint)
    test = write_jsonl(tmp_path / "test.jsonl", [{"prompt": "Is Sally a cat?", "answer": "True"}])
    yaml_settings = {"trainer": "capt", **base_config(tiny_model, test, tmp_path / "out")}
    config = write_config(tmp_path / "cfg.yaml", {**yaml_settings, "event_estimator": "prontoqa"})
    refused = f"was trained with event_estimator_kwargs={crafted['event_estimator_kwargs']!r}, which eval never takes from a checkpoint"
    for saved in (SUMMARY_FILE, PREDICTION_FILE):  # a run record; a checkpoint without one (a TRL script's, Axolotl's)
        (checkpoint / saved).write_text(json.dumps({"trainer": "capt", "settings": crafted}))
        assert cli.main(["eval", "--config", str(config), "--checkpoint", str(checkpoint), "--split", f"test={test}", "--answers", "True,False"]) == 2
        err = capsys.readouterr().err
        assert refused in err and f"{config} does not set it: set `event_estimator_kwargs` in the YAML" in err
        assert "Cannot reach the LLM endpoint" not in err  # nothing was sent
        (checkpoint / saved).unlink()
    record = {"checkpoint": "ckpt", "settings": crafted}
    run = parse_run_config(["--trainer", "capt"], str(config))
    own = {"model": "mine", "base_url": "http://127.0.0.1:1/v1"}  # the YAML's or --setting's endpoint is the one used
    assert cli._checkpoint_args(run, record, {"event_estimator_kwargs": own}).event_estimator_kwargs == own
    mine = write_config(tmp_path / "mine.yaml", {**yaml_settings, "event_estimator": "llm", "event_estimator_kwargs": own})
    args = cli._checkpoint_args(parse_run_config([], str(mine)), record)
    assert (args.event_estimator, args.event_estimator_kwargs) == ("llm", own)
    assert "eval uses the YAML's {'model': 'mine', 'base_url': 'http://127.0.0.1:1/v1'} (it never takes" in capsys.readouterr().err
    # an honest record: a secret in the URL was hidden, and is the YAML's; the rest is as the YAML says: no note
    keyed = {"model": "m", "base_url": "http://127.0.0.1:1/v1?api-key=QUERY-SECRET"}
    honest = write_config(tmp_path / "honest.yaml", {**yaml_settings, "event_estimator": "llm", "event_estimator_kwargs": keyed})
    honest_run = parse_run_config([], str(honest))
    save_prediction_files(str(checkpoint), honest_run.training_args, None, None)
    assert "QUERY-SECRET" not in (checkpoint / PREDICTION_FILE).read_text()
    recorded = {"checkpoint": "ckpt", "settings": CAPTTrainer.checkpoint_settings(checkpoint)}
    assert cli._checkpoint_args(honest_run, recorded).event_estimator_kwargs == keyed
    assert capsys.readouterr().err == ""


def test_ctrl_c_while_preparing_the_data_is_one_line(tiny_model, tmp_path, capsys, monkeypatch):
    from trl_causal import train

    def interrupted(*args):
        raise KeyboardInterrupt  # as Ctrl-C during the event estimation of the trainer's __init__

    monkeypatch.setattr(train, "build_trainer", interrupted)
    data = write_jsonl(tmp_path / "train.jsonl", prontoqa_rows(2))
    config = write_config(tmp_path / "cfg.yaml", {"trainer": "capt", **base_config(tiny_model, data, tmp_path / "out")})
    assert train.cli(["--config", str(config)]) == train.INTERRUPTED_EXIT_CODE
    err = capsys.readouterr().err
    assert "interrupted while preparing the data and model, before training: nothing was trained." in err
    assert "Traceback" not in err


class ChangingEndpoint(ThreadingHTTPServer):
    """PROTOCOL-LEVEL STAND-IN for an OpenAI-compatible endpoint on loopback: it answers each row with its prontoqa
    template, except the first ask of a row that holds ``unsure``, which gets no JSON: asked again, it answers
    otherwise, as a sampling LLM may."""

    def __init__(self, unsure: str):
        super().__init__(("127.0.0.1", 0), ChangingEndpointHandler)
        self.unsure = unsure
        self.asked: list[str] = []  # the prompts asked about, in order
        self.base_url = f"http://127.0.0.1:{self.server_address[1]}/v1"


class ChangingEndpointHandler(BaseHTTPRequestHandler):
    server: ChangingEndpoint

    def log_message(self, *args):
        pass

    def do_POST(self):
        from trl_causal.capt import ProntoQAEstimator

        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        row = json.loads(request["messages"][-1]["content"])
        if self.server.unsure in row["prompt"] and row["prompt"] not in self.server.asked:
            answer = "I am not sure."
        else:
            template = ProntoQAEstimator().estimate(row["prompt"], row["completion"])
            answer = json.dumps({"prompt_template": template.prompt, "completion_template": template.completion, "events": template.names})
        self.server.asked.append(row["prompt"])
        body = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.slow
def test_cli_trains_on_two_processes_with_the_rows_the_main_process_estimated(tiny_model, tmp_path):
    """2-process DDP over gloo: rank 0 estimates and sends the other rank its templates, both ranks train. The ranks
    estimated one after the other and the llm cache keeps valid answers only, so the other rank asked the endpoint
    again for a row rank 0 had failed on, got a valid answer and trained on other rows than rank 0 (under
    on_no_events: drop a different number of them, and DDP hung). A key in base_url's query string stays out of the run
    record and the cache."""
    server = ChangingEndpoint(unsure="Problem 1.")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    data = write_jsonl(tmp_path / "train.jsonl", prontoqa_rows(8, "conversational"))
    settings = base_config(tiny_model, data, tmp_path / "out", num_processes=2, multi_gpu=True, main_process_port=29541)
    base_url = server.base_url + "?api-key=QUERY-SECRET"
    estimator = {"model": "stand-in", "base_url": base_url, "max_retries": 0, "cache_dir": str(tmp_path / "llm-cache")}
    path = write_config(tmp_path / "cfg.yaml", {"trainer": "capt", **settings, "event_estimator": "llm", "event_estimator_kwargs": estimator})
    try:
        result = run_cli("train", "--config", str(path), timeout=300)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2
    # reported by rank 0, and only rank 0 asked: once per row
    report = "events estimated with 'llm' on 8 training rows, 1 without events (kept unchanged, 1 of them because the estimator failed)"
    assert result.stdout.count(report) == 1, result.stdout[-3000:]
    assert len(server.asked) == 8 and len(set(server.asked)) == 8
    assert summary["settings"]["event_estimator_kwargs"]["base_url"] == server.base_url + "?api-key=<hidden>"
    assert [path for path in tmp_path.rglob("*.json") if "QUERY-SECRET" in path.read_text()] == []


def test_an_unexpected_estimation_error_of_the_main_process_stops_the_other_with_one_line(tiny_model, tmp_path):
    """Rank 0 failing with an error other than a DataError/ConfigError (here the llm estimator's corrupt weights)
    left rank 1 in the broadcast, to die of the lost connection (NCCL: to wait until killed)."""
    import shutil

    corrupt = tmp_path / "corrupt-llm"
    shutil.copytree(tiny_model, corrupt)
    for weights in corrupt.glob("*.safetensors"):
        weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    data = write_jsonl(tmp_path / "train.jsonl", prontoqa_rows(4, "conversational"))
    settings = base_config(tiny_model, data, tmp_path / "out", num_processes=2, multi_gpu=True, main_process_port=29543)
    estimator = {"model": str(corrupt), "max_retries": 0, "cache_dir": str(tmp_path / "llm-cache")}
    path = write_config(tmp_path / "cfg.yaml", {"trainer": "capt", **settings, "event_estimator": "llm", "event_estimator_kwargs": estimator})
    result = run_cli("train", "--config", str(path), timeout=300)
    assert result.returncode != 0
    assert "The main process failed to estimate events" in result.stderr and "Connection closed by peer" not in result.stderr


def test_predictor_estimates_and_intervenes_prompts_deterministically(tiny_model, tmp_path):
    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)
    rows = prontoqa_rows(2, "text") + prontoqa_rows(2, "conversational")
    predictor = CAPTTrainer.build_predictor(capt_args(tmp_path), model, tokenizer, ["True", "False"])
    prompts = predictor.prepare_prompts(rows)
    assert prompts == predictor.prepare_prompts(rows)
    assert isinstance(prompts[0], str) and prompts[2][0]["role"] == "user"
    for row, prompt in zip(rows, prompts):
        assert not names_in(part_text(prompt), row["events"])
        assert PROBLEM_ID.search(part_text(prompt))  # the rest of the text is kept
    assert set(predictor.predict(rows)) <= {"True", "False"}
    raw_prompts = [row["prompt"] for row in rows]  # strings and message lists, as a user holds them
    assert predictor.prepare_prompts(raw_prompts) == prompts and predictor.predict(raw_prompts) == predictor.predict(rows)
    small_pool = CAPTTrainer.build_predictor(capt_args(tmp_path, symbol_pool=["X", "Y", "Z"]), model, tokenizer, ["True", "False"])
    with pytest.raises(PoolExhaustedError, match=r"Row 0: The row has \d+ events but the 'list' symbol pool has 3 symbols"):
        small_pool.prepare_prompts(rows)



def test_predictor_runs_without_dropout_takes_any_iterable_of_rows_and_none(tiny_model, tmp_path):
    """A predictor built right after trainer.train() got the model in train mode: dropout made the scores of the
    same rows differ from call to call. No rows crashed in torch.stack; a generator of rows had no len()."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attention_dropout=0.5).train()
    predictor = CAPTTrainer.build_predictor(capt_args(tmp_path), model, tokenizer, ["True", "False"])
    reference = CAPTTrainer.build_predictor(capt_args(tmp_path), AutoModelForCausalLM.from_pretrained(tiny_model).eval(), tokenizer, ["True", "False"])
    rows = prontoqa_rows(2, "text") + prontoqa_rows(2, "conversational")
    prompts, written = predictor.prepare(rows)
    scores = predictor.score(prompts, predictor.answer_prefixes(rows), written)
    torch.testing.assert_close(scores, reference.score(prompts, reference.answer_prefixes(rows), written))
    assert model.training
    assert predictor.predict([]) == [] and predictor.predict(row for row in rows) == predictor.predict(rows)
    with pytest.raises(DataError, match=r"^Row 1: 'prompt' must be a text or a list of messages .*; this row has int "):
        predictor.predict([rows[0], 123])

def test_held_out_rows_draw_symbols_of_their_own_and_evaluation_draws_as_prediction(tiny_model, tmp_path):
    """Evaluation and prediction row k used the seed sequence of training row k's first epoch, so a held-out row with
    as many events got the very symbols training row k had. They now draw from a stream of their own, the same one."""
    rows = prontoqa_rows(8)
    trainer = CAPTTrainer(
        model=str(tiny_model), args=capt_args(tmp_path), train_dataset=datasets.Dataset.from_list(rows),
        eval_dataset=datasets.Dataset.from_list(rows),
    )
    train, held_out = trainer.train_dataset, trainer.eval_dataset
    assert train.draw == held_out.draw == 0
    differs = [k for k in range(8) if train.render(k) != held_out.render(k)]
    assert len(differs) >= 7, differs  # same rows, same draw: only the stream tells them apart
    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)
    predictor = CAPTTrainer.build_predictor(capt_args(tmp_path), model, tokenizer, ["True", "False"])
    assert predictor.prepare_prompts(rows) == [held_out.render(k)[0] for k in range(8)]


def test_a_held_out_rows_symbols_follow_from_its_prompt_not_its_place(tiny_model, tmp_path):
    """Held-out row k drew draw 0 of the held-out stream for position k, so a split's accuracy changed when its file
    was reordered or filtered. A row's symbols now follow from the seed and its prompt: alone, in a batch and in
    reversed order it is scored on the same intervened prompt, with the same scores."""
    rows = prontoqa_rows(6)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)
    predictor = CAPTTrainer.build_predictor(capt_args(tmp_path), model, tokenizer, ["True", "False"], batch_size=4)

    def scored(batch: list[dict]) -> dict[str, tuple[str, list[float]]]:
        prompts, written = predictor.prepare(batch)
        scores = predictor.score(prompts, predictor.answer_prefixes(batch), written)
        return {PROBLEM_ID.search(prompt)[1]: (prompt, row_scores) for prompt, row_scores in zip(prompts, scores.tolist())}

    together, backwards = scored(rows), scored(rows[::-1])
    alone = {problem: result for row in rows for problem, result in scored([row]).items()}
    assert len(together) == 6 and len({prompt for prompt, _ in together.values()}) == 6
    for problem, (prompt, scores) in together.items():
        for other in (backwards, alone):
            assert other[problem][0] == prompt
            assert other[problem][1] == pytest.approx(scores, abs=1e-5)
    # the trainer's evaluation rows too, and a training row keeps the symbols of its position and epoch
    trainer = CAPTTrainer(
        model=str(tiny_model), args=capt_args(tmp_path), train_dataset=datasets.Dataset.from_list(rows),
        eval_dataset={"all": datasets.Dataset.from_list(rows), "some": datasets.Dataset.from_list(rows[::-2])},
    )
    every, some = trainer.eval_dataset["all"], trainer.eval_dataset["some"]
    assert [some.render(k) for k in range(3)] == [every.render(k) for k in (5, 3, 1)]
    assert [every.render(k)[0] for k in range(6)] == [together[str(k)][0] for k in range(6)]
    assert trainer.train_dataset.interventions.rng(2, 1).integers(2**32) == np.random.default_rng([0, 1, 2]).integers(2**32)


def test_prediction_counts_the_rows_its_estimator_failed_on_and_shows_the_estimation_progress(tiny_model, tmp_path, capsys):
    """Eval reported a row the estimator failed on (an llm without a valid answer) as one without events: the
    predictor now keeps them apart (``rows_failed``), as training does; its estimation shows a progress bar."""
    from trl_causal.capt import EstimationFailed, ProntoQAEstimator
    from trl_causal.trainer.capt_trainer import CAPTPredictor

    class Unsure(ProntoQAEstimator):
        def estimate(self, prompt, completion=None, *, row=None):
            if "Problem 1." in prompt:
                raise EstimationFailed("no valid template within the retries")
            return super().estimate(prompt, completion, row=row)

    rows = prontoqa_rows(3) + [{"prompt": "Hello there.", "completion": " Hi."}]
    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)
    predictor = CAPTPredictor(model, tokenizer, ["True", "False"], estimator=Unsure())
    capsys.readouterr()
    predictor.predict(rows)
    assert predictor.rows_without_events == [1, 3] and predictor.rows_failed == [1]
    assert "Estimating events" in capsys.readouterr().err


def test_an_answer_that_names_an_event_is_written_with_the_rows_symbol(tiny_model, tmp_path):
    """Training writes the completion " Alice" with Alice's symbol; scoring and parsing at inference must too."""
    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)
    names = ["Alice", "Bob", "Carol"]
    rows = [{"prompt": f"Who came first, {a} or {b}? Answer:", "completion": f" {a}"} for a, b in [("Alice", "Bob"), ("Bob", "Carol")]]
    args = capt_args(tmp_path, event_estimator="vocabulary", event_estimator_kwargs={"terms": names})
    predictor = CAPTTrainer.build_predictor(args, model, tokenizer, names, mode="generate")
    prompts, written = predictor.prepare(rows)
    for prompt, answers, (first, second) in zip(prompts, written, [("Alice", "Bob"), ("Bob", "Carol")]):
        symbols = re.fullmatch(r"Who came first, (\w+) or (\w+)\? Answer:", prompt).groups()
        assert [answers[names.index(first)], answers[names.index(second)]] == list(symbols)
        absent = next(name for name in names if name not in (first, second))
        assert answers[names.index(absent)] == absent  # not an event of this row: written as given
    # A generation that names the symbol of an event is that event's answer.
    predictor.generate = lambda prompts: [f" {answers[names.index(row['completion'].strip())]}" for answers, row in zip(written, rows)]
    assert predictor.predict(rows) == ["Alice", "Bob"]


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one clear error each


def test_pool_symbols_at_inference_are_the_training_rows_names_saved_with_the_model(tiny_model, tmp_path):
    trainer = make_trainer(tiny_model, tmp_path, prontoqa_rows(4), symbol_pool="pool")
    trainer.train()
    trainer.save_model()
    training_names = set(trainer.symbol_pool.symbols)
    model, tokenizer = trainer.model, trainer.processing_class
    test_rows = [{"prompt": row["prompt"], "completion": row["completion"]} for row in generate_prontoqa(6, "nonsense", seed=9)]
    test_names = {name for row in generate_prontoqa(6, "nonsense", seed=9) for name in row["events"]}

    saved = CAPTTrainer.build_predictor(trainer.args, model, tokenizer, ["True", "False"], checkpoint_dir=trainer.args.output_dir)
    assert set(saved.symbol_pool) == training_names
    prompts = saved.prepare_prompts(test_rows)
    assert not any(names_in(prompt, sorted(test_names - training_names)) for prompt in prompts)
    assert all(names_in(prompt, sorted(training_names)) for prompt in prompts)

    unsaved = CAPTTrainer.build_predictor(trainer.args, model, tokenizer, ["True", "False"])  # no checkpoint: the call's rows
    assert unsaved.symbol_pool == "pool"
    # a checkpoint that lost its pool (rotated away meanwhile, copied without it) drew from the call's rows silently
    os.remove(os.path.join(trainer.args.output_dir, "capt_symbol_pool.json"))
    with pytest.raises(ConfigError, match=r"has no capt_symbol_pool.json, the training rows' names"):
        CAPTTrainer.build_predictor(trainer.args, model, tokenizer, ["True", "False"], checkpoint_dir=trainer.args.output_dir)


def test_unknown_estimator_suggests_the_closest_registered_one(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"event_estimator: Unknown event estimator 'prontoq'\. Did you mean 'prontoqa'"):
        capt_args(tmp_path, event_estimator="prontoq")
    values = {"trainer": "capt", **base_config(tmp_path, tmp_path / "d.jsonl", tmp_path), "event_estimator": "vocabluary"}
    config = write_config(tmp_path / "cfg.yaml", values)
    assert cli.main(["train", "--config", str(config)]) == 2
    assert "Did you mean 'vocabulary'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"event_estimator": "vocabulary", "event_estimator_kwargs": {"term": ["cat"]}}, "it takes: terms, terms_file"),
        ({"event_estimator_kwargs": '["not", "a", "mapping"]'}, "event_estimator_kwargs must be a mapping"),
        ({"symbol_pool": "leters"}, "symbol_pool: Unknown symbol pool 'leters'. Did you mean 'letters'"),
        ({"symbol_pool": ["nonsens"]}, "Unknown symbol pool 'nonsens'. Did you mean 'nonsense'"),  # --symbol_pool nonsens
        # a config's one-item list is read as a pool's name (`--symbol_pool Q`)
        ({"symbol_pool": ["Q"]}, "or a list of symbols. A list holds two or more symbols (one alone is read as a pool's name)"),
        ({"on_no_events": "skip"}, "on_no_events is 'skip'"),
        ({"completion_only_loss": False}, "contradicts capt_prompt_loss=False"),
        ({"packing": True}, "packing=True is not supported"),
        ({"eval_packing": True}, "eval_packing=True is not supported"),  # evaluation rows were padded, unpacked
    ],
)
def test_invalid_settings_name_the_field(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        capt_args(tmp_path, **overrides)


def test_padding_free_trains_rows_cut_to_max_length_by_capt(tiny_model, tmp_path):
    """TRL refuses padding_free with a max_length it would not enforce without packing; capt cuts rows itself, so it
    trains, on rows of at most max_length tokens flattened into one sequence."""
    trainer = make_trainer(tiny_model, tmp_path, prontoqa_rows(4), padding_free=True, max_length=120, per_device_train_batch_size=2)
    assert trainer.args.max_length == 120
    items = [trainer.train_dataset[k] for k in range(4)]
    assert all(len(item["input_ids"]) <= 120 for item in items) and max(len(item["input_ids"]) for item in items) == 120
    batch = trainer.data_collator(items)
    assert batch["input_ids"].shape == (1, sum(len(item["input_ids"]) for item in items)) and "position_ids" in batch
    trainer.train()
    assert np.isfinite(trainer.state.log_history[-1]["train_loss"])


def test_a_template_without_a_part_per_message_names_the_row_before_training(tiny_model, tmp_path):
    def row(system: bool) -> dict:
        turns = [{"role": "user", "content": "Does smoking cause cancer?"}, {"role": "assistant", "content": "yes"}]
        messages = ([{"role": "system", "content": "Be brief."}] if system else []) + turns
        return {"messages": messages, "tmpl": "Does {e1} cause {e2}?", "event_names": {"e1": "smoking", "e2": "cancer"}}

    with pytest.raises(DataError, match=r"Row 1: the 'template' estimator's template of the prompt has 1 part\(s\) for its 2 messages \(system, user\)"):
        make_trainer(tiny_model, tmp_path, [row(False), row(True)], event_estimator="template", event_estimator_kwargs={"prompt_column": "tmpl"})


def test_missing_vocabulary_terms_file_fails_before_the_model_loads(tmp_path):
    options = {"terms_file": str(tmp_path / "terms.txt")}
    with pytest.raises(ConfigError, match=r"terms file .*terms\.txt' does not exist"):
        make_trainer(tmp_path / "no-model", tmp_path, prontoqa_rows(2), event_estimator="vocabulary", event_estimator_kwargs=options)


def test_the_passes_over_every_row_before_training_show_progress_bars(tiny_model, tmp_path, capsys):
    make_trainer(tiny_model, tmp_path, prontoqa_rows(4), disable_tqdm=False, max_length=64)
    err = capsys.readouterr().err
    for stage in ("Estimating events (training rows", "Checking the symbol pool on the training rows: 100%", "Checking max_length: 100%"):
        assert stage in err, err[-2000:]


def test_each_row_is_intervened_once_before_training_and_the_max_length_check_sees_the_first_draw(tiny_model, tmp_path, monkeypatch):
    from trl_causal.capt.intervention import RowInterventions

    calls = []
    intervene = RowInterventions.intervene
    monkeypatch.setattr(RowInterventions, "intervene", lambda self, index, draw: calls.append((index, draw)) or intervene(self, index, draw))
    rows = prontoqa_rows(6)
    rows[2]["prompt"] = "Every wumpus is a tumpus. " * 60 + rows[2]["prompt"]  # max_length cuts its completion off
    trainer = make_trainer(tiny_model, tmp_path, rows, max_length=192)
    assert trainer.cut_rows == [2]
    training = [call for call in calls if call[1] == 0]
    assert sorted(set(training)) == [(index, 0) for index in range(6)] and len(training) <= 6 + 2  # + the 2 rows the summary shows


def test_row_with_more_events_than_the_pool_names_the_row(tmp_path):
    with pytest.raises(PoolExhaustedError, match=r"Row 0: The row has \d+ events but the 'list' symbol pool has 3 symbols"):
        make_trainer(tmp_path / "no-model", tmp_path, prontoqa_rows(2), symbol_pool=["X", "Y", "Z"])


@pytest.mark.parametrize(
    ("completions", "message"),
    [
        ([" True", None], r"Row 1: its 'completion' is empty \(null\): give every prompt its completion, or drop the row\."),
        ([0, 1], r"Row 0: 'completion' must be a text or a list of messages \(\{'role': ..., 'content': ...\}\); this row has int '0'\."),
        ([[" True", " False"], [" True"]], r"Row 0: 'completion' must be a text or a list of messages .* this row has list \"\[' True', ' False'\]\"\."),
        ([[{"role": "assistant", "content": " True"}]] * 2, r"Row 0: its 'prompt' is text and its 'completion' a list of messages: give both as text, or both as messages"),
        (None, r"Row 1: The capt trainer reads messages whose content is text; message 1 \('assistant'\) of this row has NoneType content \(e.g. a tool call"),
    ],
    ids=["null", "int", "list of texts", "text prompt, message completion", "tool call"],
)
def test_a_completion_that_is_not_text_names_the_row_instead_of_training_the_prompt_alone(tmp_path, completions, message):
    if completions is not None:
        rows = [dict(row, completion=completion) for row, completion in zip(prontoqa_rows(2), completions)]
    else:  # a chat row with a tool call: an assistant message without text
        rows = prontoqa_rows(2, "messages")
        rows[1]["messages"] = [*rows[1]["messages"][:1], {"role": "assistant", "content": None}, *rows[1]["messages"][1:]]
    with pytest.raises(DataError, match=message):
        make_trainer(tmp_path / "no-model", tmp_path, rows)


def test_rows_without_events_fail_keep_or_drop_by_on_no_events(tiny_model, tmp_path, capsys):
    rows = prontoqa_rows(3)
    rows.insert(1, {"prompt": "Hello there.", "completion": " Hi.", "answer": "True", "events": []})
    with pytest.raises(NoEventsFound, match=r"Row 1: No PrOntoQA sentence"):
        make_trainer(tmp_path / "no-model", tmp_path, rows, on_no_events="error")

    kept = make_trainer(tiny_model, tmp_path, rows).train_dataset
    assert len(kept) == 4 and kept.no_events == [1] and kept.render(1) == ("Hello there.", " Hi.", {})
    assert "1 without events (kept unchanged)" in capsys.readouterr().out
    dropping = make_trainer(tiny_model, tmp_path, rows, on_no_events="drop")
    dropped = dropping.train_dataset
    assert len(dropped) == 3 and dropped.row_indices == [0, 2, 3]
    assert check_prepared_rows(dropping, rows, "sft") == 3  # the run summary's train_rows
    with pytest.raises(NoEventsFound, match=r"None of the 2 rows has an event that the 'prontoqa' estimator recognises"):
        make_trainer(tmp_path / "no-model", tmp_path, [rows[1], rows[1]], on_no_events="drop")  # before the model loads


def test_evaluation_rows_without_events_are_all_evaluated_counted_and_named_by_split(tiny_model, tmp_path, caplog):
    rows = prontoqa_rows(3)
    test = [*prontoqa_rows(2), {"prompt": "Hello there.", "completion": " Hi.", "answer": "True", "events": []}]
    splits = {"train": datasets.Dataset.from_list(rows), "test": datasets.Dataset.from_list(test)}

    def trainer(model, **overrides):
        args = capt_args(tmp_path, **overrides)
        return CAPTTrainer(model=str(model), args=args, train_dataset=splits["train"], eval_dataset={"test": splits["test"]})

    dropping = trainer(tiny_model, on_no_events="drop")  # drops training rows only: eval_loss covers every test row, as sft's
    assert len(dropping.eval_dataset["test"]) == 3 and dropping.eval_dataset["test"].render(2)[:2] == ("Hello there.", " Hi.")
    assert "capt: 1 of 3 rows of the evaluation 'test' split has no events (row 2); they are evaluated unchanged." in caplog.text
    with pytest.raises(NoEventsFound, match=r"^In the evaluation 'test' split: Row 2: No PrOntoQA sentence"):
        trainer(tmp_path / "no-model", on_no_events="error")


def test_conversations_name_an_answer_without_a_prompt_and_count_earlier_answers(tiny_model, tmp_path, caplog):
    rows = prontoqa_rows(3, "messages")
    alone = [dict(rows[0], messages=rows[0]["messages"][-1:]), *rows[1:]]  # TRL trains it; capt has no prompt
    with pytest.raises(DataError, match=r"Row 0: its `messages` hold only the assistant's answer: capt estimates the events from the turns before it"):
        make_trainer(tiny_model, tmp_path, alone)
    user, answer = rows[1]["messages"]
    chat = [*rows[:1], {"messages": [{"role": "user", "content": "Hello."}, {"role": "assistant", "content": "Hi."}, user, answer]}, rows[2]]
    with caplog.at_level("WARNING"):
        make_trainer(tiny_model, tmp_path, chat)
    assert "capt: 1 of 3 training rows (row 1) is a conversation with assistant turns before the last one" in caplog.text


def test_max_length_that_cuts_completions_off_warns_or_fails_naming_it(tiny_model, tmp_path, caplog):
    rows = prontoqa_rows(4)
    uncut = make_trainer(tiny_model, tmp_path, rows).train_dataset
    prompt_lengths = [uncut[i]["labels"].index(next(t for t in uncut[i]["labels"] if t != -100)) for i in range(len(uncut))]
    with pytest.raises(DataError, match=r"max_length=5 \(with the first epoch.s symbols\) cuts the completion of every training row off.*truncation_mode: keep_end"):
        make_trainer(tiny_model, tmp_path, rows, max_length=5)
    longest = max(prompt_lengths)  # fills max_length: that row keeps no completion token, the shorter ones do
    assert min(prompt_lengths) < longest
    with caplog.at_level("WARNING"):
        trainer = make_trainer(tiny_model, tmp_path, rows, max_length=longest)
    cut = sum(length >= longest for length in prompt_lengths)
    assert f"max_length={longest} (with the first epoch's symbols) cuts the completion of {cut} of 4 training rows off" in caplog.text
    assert check_prepared_rows(trainer, rows, "sft") == 4 - cut  # the run summary's train_rows: the rows that train
    assert any(label != -100 for label in trainer.train_dataset[prompt_lengths.index(min(prompt_lengths))]["labels"])
    make_trainer(tiny_model, tmp_path, rows, max_length=5, truncation_mode="keep_end")  # keeps every row's end


def test_the_max_length_check_tokenizes_only_prompts_long_enough_to_fill_it(tiny_model, tmp_path, monkeypatch):
    from trl_causal.trainer.capt_trainer import check_truncation

    trainer = make_trainer(tiny_model, tmp_path, prontoqa_rows(4), max_length=4096)
    tokenized = []
    monkeypatch.setattr(RowTokenizer, "__call__", lambda self, prompt, completion: tokenized.append(prompt) or {"labels": [-100]})
    check_truncation(trainer.train_dataset, trainer.args)  # every prompt is far shorter than 4096 bytes
    assert tokenized == []
    trainer.args.max_length = 5
    with pytest.raises(DataError, match="cuts the completion of every training row off"):
        check_truncation(trainer.train_dataset, trainer.args)
    assert tokenized == [trainer.train_dataset.render(i)[0] for i in range(4)]  # each row rendered and tokenized once


def test_a_plain_sft_config_is_taken_with_capt_defaults_and_a_warning(tiny_model, tmp_path, caplog):
    args = SFTConfig(**cpu_training_args(tmp_path / "out", max_steps=1, disable_tqdm=True))
    with caplog.at_level("WARNING"):
        trainer = CAPTTrainer(model=str(tiny_model), args=args, train_dataset=datasets.Dataset.from_list(prontoqa_rows(2)))
    assert isinstance(trainer.args, CAPTConfig) and trainer.args.max_steps == 1
    assert "CAPTTrainer got a SFTConfig, not a CAPTConfig: the CAPT settings take their defaults (event_estimator='prontoqa'" in caplog.text


def test_the_readme_python_example_runs_as_written(tiny_model, tmp_path, capsys, monkeypatch):
    """The README's TRL-script example, with the tiny model for the embedded one and the output under tmp_path."""
    from conftest import REPO

    readme = (REPO / "README.md").read_text()
    code = readme.split("<!-- python-api -->\n```python\n", 1)[1].split("```", 1)[0]
    for written, used in (('str(ensure_embedded_model("smollm2-135m-instruct"))', repr(str(tiny_model))), ('"outputs/capt-script"', repr(str(tmp_path / "out")))):
        assert written in code, written  # else the test would download the embedded model or write into the repo
        code = code.replace(written, used)
    monkeypatch.chdir(REPO)
    exec(compile(code, "README.md", "exec"), {})
    answers = eval(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(answers) == 4 and set(answers) <= {"True", "False"}
    assert (tmp_path / "out" / "adapter_config.json").is_file()
