"""Answer parsing, log-likelihood scoring and the `trl-causal eval` command on the tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import base_config, write_config, write_jsonl
from trl_causal import cli
from trl_causal.configuration import read_yaml
from trl_causal.errors import DataError
from trl_causal.evaluation import LMPredictor, eval_mode, gold_answers, load_checkpoint, parse_answer
from trl_causal.train import SUMMARY_FILE

ROWS = [
    {"prompt": "Every cat is a mammal. Sally is a cat. True or false: Sally is a mammal.", "answer": "True"},
    {"prompt": [{"role": "user", "content": "Happy Monday! True or false: it is Monday."}], "answer": "True"},
    {"prompt": "The food was bad. True or false: the food was good.", "answer": "False"},
]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is True.", "True"),
        ("false, because ... so the answer is TRUE", "True"),
        ("<answer>False</answer> though True appears later", "False"),
        ("Sally is a mammal.", None),
        ("Truest of all", None),
    ],
)
def test_parse_answer(text, expected):
    assert parse_answer(text, ["True", "False"]) == expected


def test_score_is_the_answer_log_likelihood_and_batching_does_not_change_it(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    predictor = LMPredictor(model, tokenizer, ["True", "False"], batch_size=16)
    scores = predictor.score([row["prompt"] for row in ROWS])

    prompt_ids = tokenizer(ROWS[2]["prompt"], add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer("False", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logprobs = model(torch.tensor([prompt_ids + answer_ids])).logits.log_softmax(-1)[0]
    manual = sum(logprobs[len(prompt_ids) - 1 + i, t].item() for i, t in enumerate(answer_ids))
    assert scores[2, 1].item() == pytest.approx(manual, abs=1e-4)

    predictor.batch_size = 1
    torch.testing.assert_close(predictor.score([row["prompt"] for row in ROWS]), scores, atol=1e-4, rtol=1e-4)
    assert predictor.predict(ROWS) == [["True", "False"][i] for i in scores.argmax(dim=1).tolist()]


def test_the_predictor_refuses_an_answer_set_or_rows_of_the_wrong_shape(tiny_model):
    from trl_causal.errors import ConfigError
    from trl_causal.evaluation import accuracy_report

    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_model).eval(), AutoTokenizer.from_pretrained(tiny_model)
    for answers, message in (("True", r"answers is the text 'True': give a list"), (["True", " "], "non-empty text"), (["True", "True"], "'True' twice")):
        with pytest.raises(ConfigError, match=message):
            LMPredictor(model, tokenizer, answers)  # a text was read as the answer set T, r, u, e
    predictor = LMPredictor(model, tokenizer, ["True", "False"])
    chat = [{"role": "user", "content": "Happy Monday! True or false: it is Monday."}]
    for rows, kind in ((ROWS[0]["prompt"], "str"), (ROWS[0], "dict"), (chat, "chat")):
        with pytest.raises(DataError, match=rf"Give a list of rows or prompts .* not one {kind}\."):
            predictor.predict(rows)  # a text was read letter by letter, a chat's messages as rows
    assert predictor.predict([chat]) == predictor.predict([ROWS[1]])
    with pytest.raises(DataError, match="3 predictions for 1 gold answers"):
        accuracy_report(["True", "False", "False"], ["True"])  # zip paired the first only: accuracy 1.0 of n=1
    assert LMPredictor(model, tokenizer, (answer for answer in ["True", "False"])).answers == ["True", "False"]
    assert len(predictor.predict(np.array([ROWS[0]["prompt"]], dtype=object))) == 1  # an array of prompts


def test_a_predictor_subclass_written_before_the_chat_template_settings_keeps_working(tiny_model):
    class Older(LMPredictor):  # overrides with the signatures LMPredictor had before template_kwargs
        def prompt_text(self, prompt):
            return super().prompt_text(prompt)

        def generate(self, prompts):
            return super().generate(prompts)

    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_model).eval(), AutoTokenizer.from_pretrained(tiny_model)
    for mode in ("score", "generate"):
        assert Older(model, tokenizer, ["True", "False"], mode=mode, max_new_tokens=2).predict(CHAT_ROWS) == LMPredictor(
            model, tokenizer, ["True", "False"], mode=mode, max_new_tokens=2
        ).predict(CHAT_ROWS)
    with pytest.raises(DataError, match="1 chat template settings for 3 prompts"):
        LMPredictor(model, tokenizer, ["True", "False"]).generate([row["prompt"] for row in ROWS], [{}])  # zip dropped two


def test_generate_mode_parses_or_reports_none(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    predictor = LMPredictor(model, tokenizer, ["True", "False"], mode="generate", max_new_tokens=4)
    generated = predictor.generate([row["prompt"] for row in ROWS])
    assert len(generated) == 3 and all(isinstance(text, str) for text in generated)
    assert predictor.predict(ROWS) == [parse_answer(text, ["True", "False"]) for text in generated]
    tokenizer.pad_token = None  # a tokenizer without a pad token (as many base models ship) generates a batch too
    assert predictor.generate([row["prompt"] for row in ROWS]) == generated and tokenizer.pad_token is None


def test_generate_mode_starts_a_plain_text_prompt_with_the_bos_that_training_puts_there(tiny_model):
    from tokenizers.processors import TemplateProcessing

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.bos_token = "<|im_start|>"  # a Llama-style tokenizer: BOS before every text
    bos = tokenizer.bos_token_id
    tokenizer._tokenizer.post_processor = TemplateProcessing(single="<|im_start|> $A", special_tokens=[("<|im_start|>", bos)])
    predictor = LMPredictor(model, tokenizer, ["True", "False"], mode="generate", max_new_tokens=1)
    inputs = []
    generate = model.generate
    model.generate = lambda **kwargs: inputs.append(kwargs["input_ids"][0].tolist()) or generate(**kwargs)
    predictor.generate([ROWS[0]["prompt"]])
    assert inputs[0][0] == bos and inputs[0] == predictor.answer_tokens(ROWS[0]["prompt"])[0][0]  # as scored and trained


def test_eval_command_compares_two_checkpoints_per_split(tiny_model, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "train.jsonl", ROWS)
    write_jsonl(data / "test.jsonl", ROWS)
    anti = write_jsonl(tmp_path / "anti.jsonl", [dict(row, answer={"True": "False", "False": "True"}[row["answer"]]) for row in ROWS])
    first, second = tmp_path / "a", tmp_path / "checkpoint-of-the-second-run"
    for checkpoint in (first, second):
        shutil.copytree(tiny_model, checkpoint)
        (checkpoint / SUMMARY_FILE).write_text(json.dumps({"trainer": "sft"}))
    config = write_config(tmp_path / "cfg.yaml", {"trainer": "sft", **base_config(tiny_model, data, first)})

    code = cli.main(["eval", "--config", str(config), "--compare", str(second), "--split", "test", "--split", f"anti={anti}"])
    assert code == 0
    report = json.loads((first / "eval_results.json").read_text())
    assert set(report["results"]) == {"sft", "sft:checkpoint-of-the-second-run"} and report["answers"] == ["False", "True"]
    test, flipped = (report["results"]["sft"]["splits"][s] for s in ("test", "anti"))
    assert test["n"] == flipped["n"] == 3
    assert test["accuracy"] + flipped["accuracy"] == pytest.approx(1.0)  # gold answers are complementary
    assert report["results"]["sft:checkpoint-of-the-second-run"]["splits"] == report["results"]["sft"]["splits"]  # identical weights
    out, err = capsys.readouterr()
    assert "anti" in out and "...t-of-the-second-run" in out  # a long label keeps its end in the table
    assert "trl-causal: sft:checkpoint-of-the-second-run: split 'anti', 3 rows" in err  # which one its progress bar counts


def test_multi_token_answers_are_scored_in_full(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    answers = ["Sally is a mammal", "no"]
    assert len(tokenizer(answers[0], add_special_tokens=False)["input_ids"]) > 1
    scores = LMPredictor(model, tokenizer, answers).score([ROWS[0]["prompt"]])
    ids = tokenizer(ROWS[0]["prompt"] + answers[0], add_special_tokens=False)["input_ids"]
    prompt_len = len(tokenizer(ROWS[0]["prompt"], add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logprobs = model(torch.tensor([ids])).logits.log_softmax(-1)[0]
    manual = sum(logprobs[t - 1, ids[t]].item() for t in range(prompt_len, len(ids)))
    assert scores[0, 0].item() == pytest.approx(manual, abs=1e-4)


def training_answer_logprob(model, tokenizer, row: dict) -> float:
    """Sum of log p over the completion tokens of ``row`` exactly as TRL's SFTTrainer tokenizes it for training
    (its supervised `labels`), leaving out the end-of-sequence/end-of-turn tokens that follow the answer."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(output_dir="unused", report_to="none", use_cpu=True, bf16=False, max_length=None)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list([row]), processing_class=tokenizer)
    example = trainer.train_dataset[0]
    ids = example["input_ids"]
    start = next(t for t, label in enumerate(example["labels"]) if label != -100)
    answer = row["completion"] if isinstance(row["completion"], str) else row["completion"][-1]["content"]
    n_answer = len(tokenizer(answer, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logprobs = model(torch.tensor([ids])).logits.log_softmax(-1)[0]
    return sum(logprobs[t - 1, ids[t]].item() for t in range(start, start + n_answer))


@pytest.mark.parametrize("conversational", [False, True], ids=["prompt-completion", "chat"])
def test_score_uses_the_answer_tokens_that_training_supervises(tiny_model, conversational):
    """Plain prompt/completion rows train on " positive" (leading space): scoring must score those tokens, not
    "positive". Chat rows train on the assistant content right after the generation prompt (no space)."""
    from trl_causal.latent_shift import generate_shift_dataset, to_prompt_completion

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rows = to_prompt_completion(generate_shift_dataset(2, 0.9, seed=0), instruction="{text}\nSentiment:", conversational=conversational)
    if not conversational:
        assert rows[0]["completion"].startswith(" ")
        spaced, bare = (tokenizer(a, add_special_tokens=False)["input_ids"] for a in (" positive", "positive"))
        assert spaced != bare, "the tiny tokenizer must tell the two apart, else the test proves nothing"
    answers = ["negative", "positive"]
    predictor = LMPredictor(model, tokenizer, answers)
    scores = predictor.score([row["prompt"] for row in rows], predictor.answer_prefixes(rows))
    for i, row in enumerate(rows):
        gold = answers.index(row["label"])
        assert scores[i, gold].item() == pytest.approx(training_answer_logprob(model, tokenizer, row), abs=1e-4)
    assert predictor.predict(rows) == [answers[i] for i in scores.argmax(dim=1).tolist()]
    if not conversational:  # answers that carry their own space are used as is; an explicit prefix wins over the rows
        spaced_answers = LMPredictor(model, tokenizer, [" negative", " positive"]).score([row["prompt"] for row in rows])
        torch.testing.assert_close(spaced_answers, scores)
        assert LMPredictor(model, tokenizer, answers, answer_prefix="").answer_prefixes(rows) == ["", ""]


@pytest.mark.parametrize("template", ["tiny", "qwen3"])
@pytest.mark.parametrize("space", ["", " "], ids=["bare", "spaced"])
def test_a_chat_answer_is_scored_where_training_puts_it_in_the_assistant_turn(tiny_model, template, space):
    """TRL trains a chat row on prompt + assistant message rendered together: Qwen3's template writes an empty think
    block before the message, and a message " positive" keeps its space. The scored answer tokens must be those of
    TRL's training sequence, with all before them as context."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    if template == "qwen3":
        import trl

        tokenizer.chat_template = (Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja").read_text()
    prompt = [{"role": "user", "content": "The food was bad. Sentiment?"}]
    rows = [{"prompt": prompt, "completion": [{"role": "assistant", "content": space + label}]} for label in ("negative", "positive")]
    args = SFTConfig(output_dir="unused", report_to="none", use_cpu=True, bf16=False, max_length=None)
    trained = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer).train_dataset
    predictor = LMPredictor(model, tokenizer, ["negative", "positive"])
    assert predictor.answer_prefixes(rows) == [space, space]
    if template == "qwen3":
        assert "<think>" in tokenizer.decode(trained[0]["input_ids"])
    for (context, answer), example, label in zip(predictor.answer_tokens(prompt, space), trained, ("negative", "positive")):
        ids, labels = example["input_ids"], example["labels"]
        assert ids[: len(context) + len(answer)] == context + answer  # the training sequence, not another one
        assert all(label_id == -100 for label_id in labels[: next(t for t, v in enumerate(labels) if v != -100)])
        assert len(context) >= labels.index(next(v for v in labels if v != -100))  # the prompt is context
        assert tokenizer.decode(answer) == space + label
    scores = predictor.score([prompt, prompt], predictor.answer_prefixes(rows))
    with torch.no_grad():
        logprobs = model(torch.tensor([trained[1]["input_ids"]])).logits.log_softmax(-1)[0]
    context, answer = predictor.answer_tokens(prompt, space)[1]
    manual = sum(logprobs[t - 1, trained[1]["input_ids"][t]].item() for t in range(len(context), len(context) + len(answer)))
    assert scores[1, 1].item() == pytest.approx(manual, abs=1e-4)


def test_a_chat_answer_is_found_in_the_assistant_turn_or_every_answer_is_scored_alike(tiny_model):
    """A template that renders the prompt alone otherwise (a system line only before a final user turn) made the
    prompt's own copy of an answer the scored tokens; one that rewrites the content (lower-cases it) left one answer
    unfound and scored it with its end-of-turn, the other without."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    turns = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] CONTENT }}<|im_end|>\n{% endfor %}"
    generation = "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    system = "{% if messages[-1]['role'] == 'user' %}<|im_start|>system\nReply.<|im_end|>\n{% endif %}"
    prompt = [{"role": "user", "content": "The food was bad. positive or negative?"}]
    predictor = LMPredictor(model, tokenizer, ["Positive", "negative"])

    tokenizer.chat_template = system + turns.replace("CONTENT", "") + generation
    for (context, answer), written in zip(predictor.answer_tokens(prompt), ["Positive", "negative"]):
        assert tokenizer.decode(answer) == written and tokenizer.decode(context).endswith("<|im_start|>assistant\n")
    tokenizer.chat_template = turns.replace("CONTENT", "| lower") + generation
    assert [tokenizer.decode(answer) for _, answer in predictor.answer_tokens(prompt)] == ["positive<|im_end|>\n", "negative<|im_end|>\n"]


def test_a_conversational_answer_column_gives_the_answer_texts():
    rows = [{"completion": [{"role": "assistant", "content": "yes"}]}, {"completion": [{"role": "assistant", "content": " no"}]}]
    assert gold_answers(rows, "completion", "test") == ["yes", "no"]  # not the repr of the message list
    assert gold_answers([{"label": 1}, {"label": True}], "label", "test") == ["1", "True"]
    asked = [{"messages": [{"role": "user", "content": "Is it?"}, {"role": "assistant", "content": "Yes"}]},
             {"messages": [{"role": "user", "content": "Is Wren a frog?"}]}]  # no answer: the question is no gold
    with pytest.raises(DataError, match=r"Split 'test': the 'messages' of row 1 does not end with an assistant message \(row 1 ends with 'user'\)"):
        gold_answers(asked, "messages", "test")


def test_macro_f1_averages_the_per_class_f1():
    from trl_causal.evaluation import accuracy_report, macro_f1

    gold = ["pos", "pos", "pos", "neg"]
    assert macro_f1(["pos", "pos", "pos", "pos"], gold) == pytest.approx((6 / 7 + 0.0) / 2)
    assert macro_f1(["pos", "neg", None, "neg"], gold) == pytest.approx((2 / 4 + 2 / 3) / 2)
    assert accuracy_report(gold, gold) == {"accuracy": 1.0, "macro_f1": 1.0, "n": 4, "unparsed": 0}


def test_the_article_a_is_not_the_answer_a():
    assert parse_answer(" S is taller. It is a fact.", ["S", "A"]) == "S"  # the article "a" is not the symbol "A"
    assert parse_answer("So the answer is A", ["S", "A"]) == "A"
    assert parse_answer("The answer is (b).", ["A", "B", "C", "D"]) == "B"  # other letters in any case
    assert parse_answer("<answer>a</answer>", ["A", "B"]) == "A"  # inside the tags case is ignored
    assert parse_answer("the answer is true", ["True", "False"]) == "True"


def test_parse_answer_takes_answers_that_start_or_end_with_punctuation():
    assert parse_answer("(A) looks right, but the answer is (B).", ["(A)", "(B)"]) == "(B)"
    assert parse_answer("<answer>-1</answer>", ["-1", "1"]) == "-1"
    assert parse_answer("see max(A)", ["(A)", "(B)"]) is None  # glued to a word: not the answer


def eval_config(tiny_model, tmp_path, rows: list[dict], **config) -> tuple[str, str]:
    """A config whose `test` split holds ``rows``, and a checkpoint (the tiny model) it evaluates."""
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    write_jsonl(data / "train.jsonl", rows)
    write_jsonl(data / "test.jsonl", rows)
    checkpoint = tmp_path / "checkpoint"
    if not checkpoint.exists():
        shutil.copytree(tiny_model, checkpoint)
    settings = {"trainer": "sft", **base_config(tiny_model, data, checkpoint), **config}
    return str(write_config(tmp_path / "cfg.yaml", settings)), str(checkpoint)


def eval_splits(config: str, split: str = "test", file: str = "", *args: str) -> dict:
    """The report of `trl-causal eval` on one split (of the config's dataset, or ``file``)."""
    output = Path(config).parent / "eval.json"
    split_arg = f"{split}={file}" if file else split
    assert cli.main(["eval", "--config", config, "--split", split_arg, "--output", str(output), *args]) == 0
    return json.loads(output.read_text())["results"]["sft"]["splits"][split]


CHAT_ROWS = [{"prompt": [{"role": "user", "content": row["prompt"]}] if isinstance(row["prompt"], str) else row["prompt"],
              "answer": row["answer"]} for row in ROWS]


def test_eval_reads_messages_rows_and_a_named_prompt_column_like_prompt_rows(tiny_model, tmp_path, capsys):
    expected = eval_splits(eval_config(tiny_model, tmp_path / "prompt", CHAT_ROWS)[0])
    messages = [{"messages": row["prompt"] + [{"role": "assistant", "content": row["answer"]}], "answer": row["answer"]} for row in CHAT_ROWS]
    assert eval_splits(eval_config(tiny_model, tmp_path / "messages", messages)[0]) == expected
    questions = [{"question": row["prompt"], "answer": row["answer"]} for row in CHAT_ROWS]
    config = eval_config(tiny_model, tmp_path / "question", questions)[0]
    assert eval_splits(config, "test", "", "--prompt_column", "question") == expected
    assert cli.main(["eval", "--config", config, "--split", "test"]) == 2
    assert "Row 0 of split 'test' has no prompt column 'prompt' and no `messages`; it has: answer, question. Name the prompt column with --prompt_column." in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["score", "generate"])
def test_eval_hands_a_rows_tools_and_chat_template_kwargs_to_the_chat_template_as_training_does(tiny_model, tmp_path, mode):
    rows = [dict(row, tools=json.dumps([{"name": "get_frog"}]), chat_template_kwargs={"persona": "pirate"}) for row in CHAT_ROWS]
    config, checkpoint = eval_config(tiny_model, tmp_path, rows)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    tokenizer.chat_template = (  # writes the tools and the persona, and refuses a prompt rendered without the persona
        "{% if persona is not defined %}{{ raise_exception('rendered without the row settings') }}{% endif %}"
        "{% if tools %}TOOLS: {{ tools | map(attribute='name') | join(',') }}\n{% endif %}PERSONA {{ persona }}\n"
        + tokenizer.chat_template
    )
    tokenizer.save_pretrained(checkpoint)
    assert set(eval_splits(config, "test", "", "--mode", mode)) >= {"accuracy"}
    predictor = LMPredictor(AutoModelForCausalLM.from_pretrained(checkpoint), tokenizer, ["True", "False"], mode=mode, max_new_tokens=2)
    context = predictor.answer_tokens(rows[0]["prompt"], "", None, predictor.template_kwargs(rows)[0])[0][0]
    assert tokenizer.decode(context).startswith("TOOLS: get_frog\nPERSONA pirate\n<|im_start|>user")
    assert len(predictor.predict(rows)) == len(rows)


def test_eval_of_a_reward_checkpoint_says_why_before_reading_data(tiny_model, tmp_path, capsys):
    config, checkpoint = eval_config(tiny_model, tmp_path, [{"chosen": "a", "rejected": "b"}], trainer="reward")
    assert cli.main(["eval", "--config", config]) == 2
    error = capsys.readouterr().err
    assert f"{checkpoint} was trained by 'reward', a reward trainer" in error and "AutoModelForSequenceClassification" in error


def test_eval_of_a_dataset_mixture_asks_for_split_files(tiny_model, tmp_path, capsys):
    config, _ = eval_config(tiny_model, tmp_path, ROWS)
    settings = yaml.safe_load(Path(config).read_text())
    data = settings.pop("dataset_name")
    settings["datasets"] = [{"path": "json", "data_files": f"{data}/train.jsonl"}]
    write_config(Path(config), settings)
    assert cli.main(["eval", "--config", config]) == 2
    error = capsys.readouterr().err
    assert "`datasets:` (a mixture)" in error and "--split NAME=FILE" in error
    assert eval_splits(config, "test", f"{data}/test.jsonl")["n"] == len(ROWS)


def test_eval_split_file_may_be_a_saved_dataset_holding_that_split(tiny_model, tmp_path, capsys):
    from datasets import Dataset, DatasetDict

    config, _ = eval_config(tiny_model, tmp_path, CHAT_ROWS)
    saved = tmp_path / "saved"
    DatasetDict({"validation": Dataset.from_list(CHAT_ROWS)}).save_to_disk(str(saved))
    assert eval_splits(config, "validation", str(saved))["n"] == len(CHAT_ROWS)
    assert cli.main(["eval", "--config", config, "--split", f"test={saved}"]) == 2
    assert f"{saved} has no split 'test'; it has: validation." in capsys.readouterr().err
    DatasetDict({"train": Dataset.from_list(CHAT_ROWS), "test": Dataset.from_list(CHAT_ROWS[:1])}).save_to_disk(str(saved / "dd"))
    assert cli.main(["eval", "--config", config, "--split", f"tset={saved / 'dd'}"]) == 2  # a typo is not the train split
    assert "has no split 'tset'; it has: train, test." in capsys.readouterr().err
    DatasetDict({"train": Dataset.from_list(CHAT_ROWS)}).save_to_disk(str(saved / "only_train"))
    assert cli.main(["eval", "--config", config, "--split", f"test={saved / 'only_train'}"]) == 2  # its train split is not "test"
    assert "has no split 'test'; it has: train." in capsys.readouterr().err
    assert eval_splits(config, "rows", str(tmp_path / "data" / "test.jsonl"))["n"] == len(ROWS)  # one file: its rows


def test_answers_and_gold_answers_are_compared_as_written_without_surrounding_spaces(tiny_model, tmp_path, capsys):
    rows = [dict(row, completion=" " + row["answer"]) for row in CHAT_ROWS]  # as plain-text completions are written
    config, _ = eval_config(tiny_model, tmp_path, rows)
    expected = eval_splits(config, "test", "", "--answers", "True,False")
    assert eval_splits(config, "test", "", "--answers", "True, False") == expected
    assert eval_splits(config, "test", "", "--answer_column", "completion", "--answers", "True,False") == expected
    assert cli.main(["eval", "--config", config, "--split", "test", "--answers", "Yes,No"]) == 2
    assert "Split 'test' has gold answers ['False', 'True'] (column 'answer', rows [0, 1, 2]) outside the answer set ['Yes', 'No']" in capsys.readouterr().err


def test_checkpoints_of_one_name_and_repeated_split_names_keep_every_result(tiny_model, tmp_path, capsys):
    config, checkpoint = eval_config(tiny_model, tmp_path, CHAT_ROWS)
    others = [tmp_path / run / "final" for run in ("a", "b")]
    for other in others:
        shutil.copytree(tiny_model, other)
    output = tmp_path / "compare.json"
    args = ["eval", "--config", config, "--split", "test", "--output", str(output)]
    assert cli.main(args + [arg for other in others for arg in ("--compare", str(other))]) == 0
    report = json.loads(output.read_text())
    assert list(report["results"]) == ["sft", "sft:final", f"sft:{others[1]}"]
    assert report["splits"] == {"test": str(tmp_path / "data")}  # where each split's rows came from
    assert cli.main(args + ["--compare", str(tmp_path / "nowhere")]) == 2
    assert f"Checkpoint directory not found: {tmp_path / 'nowhere'}" in capsys.readouterr().err
    failed = tmp_path / "failed"  # a run that failed before saving: its output_dir, a checkpoint-2 saved on the way
    (failed / "checkpoint-10").mkdir(parents=True)
    shutil.copytree(tiny_model, failed / "checkpoint-2")
    assert cli.main(args + ["--compare", str(failed)]) == 2
    err = capsys.readouterr().err
    assert f"{failed} (--compare) holds no trained model" in err and f"--checkpoint {failed / 'checkpoint-2'}," in err
    assert "Traceback" not in err
    assert cli.main(args + ["--split", "test=" + str(tmp_path / "data" / "test.jsonl")]) == 2
    assert "--split names ['test'] are given more than once" in capsys.readouterr().err


def test_without_an_answer_column_the_gold_is_the_completion_or_the_last_turn(tiny_model, tmp_path):
    messages = [{"messages": row["prompt"] + [{"role": "assistant", "content": row["answer"]}]} for row in CHAT_ROWS]
    expected = eval_splits(eval_config(tiny_model, tmp_path / "answer", CHAT_ROWS)[0])
    assert eval_splits(eval_config(tiny_model, tmp_path / "messages", messages)[0]) == expected
    completions = [{"prompt": row["prompt"], "completion": [{"role": "assistant", "content": row["answer"]}]} for row in CHAT_ROWS]
    assert eval_splits(eval_config(tiny_model, tmp_path / "completion", completions)[0]) == expected


def test_completions_that_are_texts_rather_than_answers_ask_for_the_answer_column(tiny_model, tmp_path, capsys):
    rows = [{"prompt": f"Question {i}?", "completion": f" Because {i} is {i}. So True."} for i in range(25)]
    config, _ = eval_config(tiny_model, tmp_path, rows)
    assert cli.main(["eval", "--config", config, "--split", "test"]) == 2
    assert "their completion holds 25 different texts (reasoning chains?)" in capsys.readouterr().err


def test_a_split_named_like_a_file_of_the_folder_reads_that_file(tiny_model, tmp_path):
    config, _ = eval_config(tiny_model, tmp_path, CHAT_ROWS)
    levels = tmp_path / "levels"  # as trl_causal.latent_shift.data writes them: test_10.jsonl ... test_90.jsonl
    levels.mkdir()
    write_jsonl(levels / "test_10.jsonl", CHAT_ROWS[:1])
    write_jsonl(levels / "test_90.jsonl", CHAT_ROWS)
    assert eval_splits(config, "test_90", str(levels))["n"] == len(CHAT_ROWS)
    assert eval_splits(config, "test_10", str(levels))["n"] == 1


def test_a_folder_that_datasets_cannot_read_as_one_split_is_one_error(tiny_model, tmp_path, capsys):
    config, _ = eval_config(tiny_model, tmp_path, CHAT_ROWS)
    mixed = tmp_path / "mixed"  # no test_10.* in it, and files whose columns differ
    mixed.mkdir()
    write_jsonl(mixed / "a.jsonl", CHAT_ROWS)
    write_jsonl(mixed / "b.jsonl", [{"other": 1}])
    assert cli.main(["eval", "--config", config, "--split", f"test_10={mixed}"]) == 2
    assert "cannot be read as one dataset" in capsys.readouterr().err


def test_rows_without_a_completion_are_scored_with_the_answer_prefix_training_recorded(tiny_model, tmp_path):
    from trl_causal.train import SUMMARY_FILE

    plain = [row for row in ROWS if isinstance(row["prompt"], str)]
    config, checkpoint = eval_config(tiny_model, tmp_path, plain)  # test rows: prompt + answer, no completion
    output = tmp_path / "eval.json"
    argv = ["eval", "--config", config, "--split", "test", "--output", str(output)]
    assert cli.main(argv) == 0 and json.loads(output.read_text())["results"]["sft"]["answer_prefix"] is None
    # trained on " True" / " False" completions: the run record says so, and answers are scored after a space
    (Path(checkpoint) / SUMMARY_FILE).write_text(json.dumps({"trainer": "sft", "settings": {}, "answer_prefix": " "}))
    assert cli.main(argv) == 0
    result = json.loads(output.read_text())["results"]["sft"]
    assert result["answer_prefix"] == " "
    model, tokenizer = load_checkpoint(checkpoint)
    expected = LMPredictor(model, tokenizer, ["False", "True"], answer_prefix=" ").predict(plain)
    assert result["splits"]["test"]["accuracy"] == sum(p == row["answer"] for p, row in zip(expected, plain)) / len(plain)


def test_each_split_finds_its_own_gold_column_and_splits_of_other_answers_get_a_note(tiny_model, tmp_path, capsys):
    config, _ = eval_config(tiny_model, tmp_path, ROWS)
    with_completion = write_jsonl(tmp_path / "completion.jsonl", [{"prompt": r["prompt"], "completion": " " + r["answer"]} for r in ROWS])
    output = tmp_path / "eval.json"
    argv = ["eval", "--config", config, "--split", "test", "--split", f"other={with_completion}", "--output", str(output)]
    assert cli.main(argv) == 0  # `answer` in one split, `completion` in the other
    splits = json.loads(output.read_text())["results"]["sft"]["splits"]
    assert splits["test"]["n"] == splits["other"]["n"] == len(ROWS)
    assert "share no gold answer" not in capsys.readouterr().err
    names = write_jsonl(tmp_path / "names.jsonl", [{"prompt": r["prompt"], "answer": name} for r, name in zip(ROWS, ["Wren", "Sally"] * len(ROWS))])
    assert cli.main([*argv[:-2], "--split", f"names={names}", "--output", str(output)]) == 0
    assert "splits 'test' and 'names', 'other' and 'names' share no gold answer, yet every split chooses from one answer set" in capsys.readouterr().err


def test_a_report_that_cannot_be_written_leaves_the_previous_file_and_says_so(tiny_model, tmp_path, capsys, monkeypatch):
    """The report was written in place: a full disk left half a JSON file where the previous one was, and a traceback."""
    from trl_causal import paths

    config, _ = eval_config(tiny_model, tmp_path, ROWS)
    output = tmp_path / "eval.json"
    output.write_text('{"previous": true}')

    def full_disk(content, handle, **kwargs):
        handle.write(json.dumps(content)[:100])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(paths.json, "dump", full_disk)
    assert cli.main(["eval", "--config", config, "--split", "test", "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert f"Could not write {output} ([Errno 28] No space left on device); the file there, if any, is left" in err
    assert "Traceback" not in err and "the splits scored before the stop are in" not in err
    assert json.loads(output.read_text()) == {"previous": True}


def test_a_stop_midway_keeps_the_splits_already_scored_and_bad_rows_fail_before_any_scoring(tiny_model, tmp_path, capsys):
    config, checkpoint = eval_config(tiny_model, tmp_path, ROWS)
    broken = tmp_path / "broken"  # a copy cut short: its weights file is truncated
    shutil.copytree(tiny_model, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    output = tmp_path / "partial.json"
    args = ["eval", "--config", config, "--split", "test", "--output", str(output)]
    assert cli.main(args + ["--compare", str(broken)]) == 2
    err = capsys.readouterr().err
    assert f"Cannot load the checkpoint {broken}:" in err and "Traceback" not in err
    assert f"the splits scored before the stop are in {output}" in err
    report = json.loads(output.read_text())
    assert report["complete"] is False and report["results"]["sft"]["splits"]["test"]["n"] == len(ROWS)
    assert cli.main(args) == 0 and json.loads(output.read_text())["complete"] is True

    later = write_jsonl(tmp_path / "later.jsonl", [*ROWS[:2], {"prompt": None, "answer": "True"}])
    output.unlink()
    assert cli.main(args + ["--split", f"later={later}"]) == 2
    err = capsys.readouterr().err
    assert "Row 2 of split 'later' has an empty prompt: its 'prompt' is null" in err
    assert not output.exists()  # checked before the first split was scored


def test_a_lora_checkpoint_whose_base_moved_loads_onto_the_configs_model(tiny_model, tmp_path, capsys):
    from peft import LoraConfig, get_peft_model

    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    config, checkpoint = eval_config(tiny_model, tmp_path, ROWS)
    shutil.rmtree(checkpoint)
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], task_type="CAUSAL_LM")
    get_peft_model(AutoModelForCausalLM.from_pretrained(base), lora).save_pretrained(checkpoint)  # records base
    AutoTokenizer.from_pretrained(base).save_pretrained(checkpoint)
    expected = eval_splits(config)
    moved = base.rename(tmp_path / "moved")  # the base model's new place; the config says where it is now
    assert eval_splits(str(write_config(Path(config), {**read_yaml(config), "model_name_or_path": str(moved)}))) == expected
    assert f"the base model that {checkpoint} was trained on, {base}, is not there; loading its adapter onto the config's model {moved}" in capsys.readouterr().err
    adapter_config = json.loads((Path(checkpoint) / "adapter_config.json").read_text())
    for gone in ("./gone/base", "gone-base", "C:\\models\\base"):  # relative paths of a TRL script; another OS's
        adapter_config["base_model_name_or_path"] = gone
        (Path(checkpoint) / "adapter_config.json").write_text(json.dumps(adapter_config))
        assert eval_splits(config) == expected and f"{gone}, is not there; loading its adapter onto the config's model" in capsys.readouterr().err
    nowhere = write_config(Path(config), {**read_yaml(config), "model_name_or_path": str(tmp_path / "nowhere")})
    assert cli.main(["eval", "--config", str(nowhere), "--split", "test", "--output", str(tmp_path / "e.json")]) == 2
    err = capsys.readouterr().err
    assert "was trained on the base model C:\\models\\base (base_model_name_or_path in its adapter_config.json), which is not there" in err
    assert "Traceback" not in err


def test_a_lora_checkpoints_base_loads_in_the_dtype_training_loaded_it(tiny_model, tmp_path):
    """Eval loaded a LoRA's base in its on-disk dtype: a run trained with `dtype: bfloat16` on a float32 base was
    scored on a float32 base (scores off by about 1e-3)."""
    from peft import LoraConfig, get_peft_model

    from trl_causal.configuration import parse_run_config
    from trl_causal.train import model_init_kwargs_of

    checkpoint = tmp_path / "adapter"
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], task_type="CAUSAL_LM")
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), lora).save_pretrained(checkpoint)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(checkpoint)
    config, _ = eval_config(tiny_model, tmp_path, ROWS, model_init_kwargs={"torch_dtype": "bfloat16"})
    run = parse_run_config([], config)
    dtype = model_init_kwargs_of(run.model_args, run.training_args)["dtype"]
    model, _ = load_checkpoint(checkpoint, dtype=dtype)
    assert dtype == "bfloat16" and model.get_base_model().model.embed_tokens.weight.dtype == torch.bfloat16
    assert load_checkpoint(checkpoint)[0].get_base_model().model.embed_tokens.weight.dtype == torch.float32


def test_a_prompt_longer_than_the_models_positions_is_named(tiny_model):
    """Past GPT-2's position table the scoring and generation failed with an IndexError deep in torch."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=16, n_embd=16, n_layer=1, n_head=2)).eval()
    prompts = ["Is it?", "Every cat is a mammal. Sally is a cat. " * 4 + "True or false: Sally is a mammal."]
    for mode in ("score", "generate"):
        predictor = LMPredictor(gpt2, tokenizer, ["True", "False"], mode=mode, max_new_tokens=2)
        with pytest.raises(DataError, match=r"Row 1 is longer than the 16 positions the model takes \(row 1: \d+ tokens with"):
            predictor.predict(prompts)
        assert len(predictor.predict(prompts[:1])) == 1
    with pytest.raises(DataError, match=r"Cannot score answers after an empty prompt \(''\)"):
        LMPredictor(gpt2, tokenizer, ["True", "False"]).predict([""])


def test_a_results_file_that_cannot_be_written_fails_before_any_model_loads(tiny_model, tmp_path, capsys):
    config, _ = eval_config(tiny_model, tmp_path, ROWS)
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert cli.main(["eval", "--config", config, "--split", "test", "--output", str(blocked / "eval.json")]) == 2
    err = capsys.readouterr().err
    assert f"Cannot make the folder of the results file {blocked / 'eval.json'}" in err and "scored before the stop" not in err
    assert cli.main(["eval", "--config", config, "--split", "test", "--output", str(tmp_path)]) == 2
    assert f"--output {tmp_path} is a folder; eval writes one JSON file" in capsys.readouterr().err


def deleted_after(monkeypatch, owner, name: str, checkpoint) -> None:
    """``owner.name`` (a function or method) deletes ``checkpoint`` once it returns, as a training run's
    save_total_limit rotates a checkpoint out while eval reads or scores it."""
    original = getattr(owner, name)

    def then_deleted(*args, **kwargs):
        result = original(*args, **kwargs)
        shutil.rmtree(checkpoint, ignore_errors=True)
        return result

    monkeypatch.setattr(owner, name, then_deleted)


def test_a_checkpoint_deleted_while_eval_scores_it_is_not_made_again_to_hold_the_results(tiny_model, tmp_path, capsys, monkeypatch):
    """The default report re-made the deleted checkpoint's folder holding the report alone (a checkpoint to
    save_total_limit), which the next rotation deleted, results and all, after eval said it wrote them."""
    config, checkpoint = eval_config(tiny_model, tmp_path, ROWS)
    other = shutil.copytree(tiny_model, tmp_path / "other")
    deleted_after(monkeypatch, LMPredictor, "predict", checkpoint)
    assert cli.main(["eval", "--config", config, "--split", "test", "--compare", str(other)]) == 0
    out, err = capsys.readouterr()
    moved = tmp_path / "eval_results-checkpoint.json"
    assert not Path(checkpoint).exists()
    assert f"{checkpoint} was deleted while eval ran (a training run deletes its older checkpoint-N folders past save_total_limit), so the results go to {moved}" in err
    assert f"trl-causal: wrote {moved}" in out
    report = json.loads(moved.read_text())
    assert report["complete"] is True and {result["checkpoint"] for result in report["results"].values()} == {str(Path(checkpoint).resolve()), str(other)}


def test_a_checkpoint_deleted_or_incomplete_when_it_loads_is_named_with_what_is_missing(tiny_model, tmp_path, capsys, monkeypatch):
    """A checkpoint deleted after its weights loaded failed with "We couldn't connect to 'https://huggingface.co'", a copy
    without tokenizer.json with a traceback about sentencepiece; one deleted before it loaded (a --compare scored
    second) said "Train first"; one deleted while its trainer's predictor read its files was scored without them."""
    from trl_causal import evaluation
    from trl_causal.errors import ConfigError

    untokenized = shutil.copytree(tiny_model, tmp_path / "untokenized")
    (untokenized / "tokenizer.json").unlink()
    with pytest.raises(ConfigError, match=rf"Cannot load the tokenizer of the checkpoint {untokenized}: it has no tokenizer.json \(ValueError: "):
        load_checkpoint(untokenized)
    rotated = shutil.copytree(tiny_model, tmp_path / "rotated")
    with monkeypatch.context() as patched:
        deleted_after(patched, AutoModelForCausalLM, "from_pretrained", rotated)
        with pytest.raises(ConfigError, match=f"The checkpoint {rotated} was deleted while it was loaded or evaluated"):
            load_checkpoint(rotated)

    config, checkpoint = eval_config(tiny_model, tmp_path, ROWS)
    other = tmp_path / "other"
    args = ["eval", "--config", config, "--split", "test", "--compare", str(other), "--output", str(tmp_path / "eval.json")]
    # the --compare deleted while the first checkpoint is scored; the first deleted as its predictor is built
    for owner, name, deleted in ((LMPredictor, "predict", other), (evaluation, "build_predictor", Path(checkpoint))):
        for folder in (checkpoint, other):
            shutil.copytree(tiny_model, folder, dirs_exist_ok=True)
        with monkeypatch.context() as patched:
            deleted_after(patched, owner, name, deleted)
            assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert f"error: The checkpoint {deleted} was deleted while it was loaded or evaluated" in err, name
        assert "Traceback" not in err and not deleted.exists()


def test_a_prompt_tuning_checkpoint_is_scored_on_its_own_tokens_positions(tiny_model):
    """A prompt-tuning adapter puts its virtual tokens before the row's: the logits of token j sit at position
    n_virtual + j, where eval read position j (the argmax changed on 11 of 16 rows in a review). Reference: the base
    model run on the virtual embeddings followed by the tokens' own."""
    from peft import PromptTuningConfig, get_peft_model

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)).eval()
    sequences = [tokenizer("Every cat is a mammal. True")["input_ids"], tokenizer("Sally is a cat.")["input_ids"]]
    # every token after the first, as one answer
    scored = LMPredictor(model, tokenizer, ["True", "False"])._answer_logprobs([(ids, [(1, ids[1:])]) for ids in sequences], "scoring")
    with torch.no_grad():
        virtual = model.get_prompt(batch_size=1)
        for ids, logprob in zip(sequences, scored):
            embeds = torch.cat([virtual, base.get_input_embeddings()(torch.tensor([ids]))], dim=1)
            reference = base(inputs_embeds=embeds).logits[0, 4:].log_softmax(-1)
            torch.testing.assert_close(logprob, reference[torch.arange(len(ids) - 1), ids[1:]].sum(), atol=1e-5, rtol=1e-5)


def test_a_plain_checkpoint_without_a_run_record_is_scored_as_sft_under_a_method_config(tiny_model, tmp_path, capsys):
    """A baseline that Axolotl or a TRL script trained has no trl-causal run record, and eval took its trainer from
    --config: under the capt YAML it was scored through capt's pipeline (as 'capt'), under latent_shift's it failed.
    Without that trainer's own files it is now a plain model, with a note."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from conftest import cpu_training_args

    rows = [{"prompt": "Every cat is a mammal. Sally is a cat. True or false: Sally is a mammal.", "completion": " True"}] * 4
    baseline = tmp_path / "baseline"
    SFTTrainer(model=str(tiny_model), args=SFTConfig(**cpu_training_args(baseline, max_steps=1)), train_dataset=Dataset.from_list(rows)).save_model(str(baseline))
    test = write_jsonl(tmp_path / "test.jsonl", [{"prompt": row["prompt"], "answer": "True"} for row in rows])
    method_keys = {"capt": {}, "latent_shift": {}, "deconfounded_reward": {"numeric_confounders": ["c"]}}
    for trainer, keys in method_keys.items():  # under the reward config it was "trained by a reward trainer"
        config = write_config(tmp_path / f"{trainer}.yaml", {"trainer": trainer, **base_config(tiny_model, test, tmp_path / "unused"), **keys})
        output = tmp_path / f"{trainer}.json"
        assert cli.main(["eval", "--config", str(config), "--checkpoint", str(baseline), "--split", f"test={test}", "--answers", "True,False", "--output", str(output)]) == 0
        assert f"none of the files the {trainer} trainer saves: it is scored as a plain model (trainer 'sft')" in capsys.readouterr().err
        assert list(json.loads(output.read_text())["results"]) == ["sft"]


def test_predictions_run_without_dropout_and_give_the_model_its_mode_back(tiny_model):
    """A predictor built right after trainer.train() (the README's TRL script) got the model in train mode: dropout
    made the scores of the same rows differ from call to call."""
    reference = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attention_dropout=0.5).train()
    model.model.layers[0].eval()  # a part in a mode of its own keeps it
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    prompts = [row["prompt"] for row in ROWS]
    scores = LMPredictor(model, tokenizer, ["True", "False"]).score(prompts)
    torch.testing.assert_close(scores, LMPredictor(reference, tokenizer, ["True", "False"]).score(prompts))
    generating = LMPredictor(model, tokenizer, ["True", "False"], mode="generate", max_new_tokens=8)
    assert generating.generate(prompts) == LMPredictor(reference, tokenizer, ["True", "False"], mode="generate", max_new_tokens=8).generate(prompts)
    assert model.training and not model.model.layers[0].training and model.model.layers[1].training
    with eval_mode(model):
        with eval_mode(model):  # blocks that overlap (threads) restore the mode when the last one ends
            pass
        assert not model.training
    assert model.training and not model.model.layers[0].training
    with eval_mode(model, model.model.layers[1]):  # a module and one of its submodules (latent_shift's attached heads)
        assert not model.model.layers[1].training
    assert model.training and model.model.layers[1].training and not model.model.layers[0].training


def test_generate_pads_its_batches_itself_and_leaves_the_shared_tokenizer_alone(tiny_model):
    """generate set the tokenizer's padding side and pad token for its call: calls from other threads saw them."""
    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_model).eval(), AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.pad_token = None  # a batch is padded with the end-of-sequence token
    seen = []
    generate = model.generate
    model.generate = lambda **kwargs: seen.append((tokenizer.padding_side, tokenizer.pad_token)) or generate(**kwargs)
    prompts = ["Sally is a cat.", "Every cat is a mammal. Every mammal is an animal. Sally is a cat. True or false:", "Happy Monday!"]
    predictor = LMPredictor(model, tokenizer, ["True", "False"], mode="generate", max_new_tokens=6)
    batched = predictor.generate(prompts)
    assert batched == [predictor.generate([prompt])[0] for prompt in prompts]
    assert seen == [("right", None)] * 4 and (tokenizer.padding_side, tokenizer.pad_token) == ("right", None)


def test_predict_takes_any_iterable_of_rows_none_and_names_a_prompt_of_the_wrong_type(tiny_model):
    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_model).eval(), AutoTokenizer.from_pretrained(tiny_model)
    for mode in ("score", "generate"):
        predictor = LMPredictor(model, tokenizer, ["True", "False"], mode=mode, max_new_tokens=2)
        assert predictor.predict([]) == [] and predictor.predict(row for row in []) == []
        assert predictor.predict(row for row in ROWS) == predictor.predict(ROWS)
    assert predictor.score([]).shape == (0, 2)
    for prompt, kind in ((123, "int"), (["not", "messages"], "list"), (b"bytes", "bytes")):
        with pytest.raises(DataError, match=rf"^Row 1: 'prompt' must be a text or a list of messages .*; this row has {kind} "):
            predictor.predict([ROWS[0], prompt])
