"""The shift benchmark generator: agreement levels, balance, spurious footprints, SFT rows."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter

import pytest

from trl_causal.errors import ConfigError, DataError
from trl_causal.latent_shift import SPURIOUS_VALUES, generate_shift_dataset, make_splits, to_prompt_completion
from trl_causal import cli
from trl_causal.latent_shift.data import DOMAINS, GENERAL_ADJECTIVES

KINDS = ("platform", "stopword")


@pytest.fixture(scope="module", params=KINDS)
def splits(request):
    return request.param, make_splits(1000, 1000, request.param, seed=0)


def test_splits_hit_their_agreement_levels_with_balanced_labels(splits):
    _, named = splits
    assert list(named) == ["train", "test_90", "test_70", "test_50", "test_30", "test_10"]
    targets = {"train": 0.9, "test_90": 0.9, "test_70": 0.7, "test_50": 0.5, "test_30": 0.3, "test_10": 0.1}
    for name, rows in named.items():
        assert len(rows) == 1000
        realised = sum(row["agrees"] for row in rows) / len(rows)
        assert abs(realised - targets[name]) <= 0.03, (name, realised)
        assert Counter(row["label"] for row in rows) == {"positive": 500, "negative": 500}
        for value in SPURIOUS_VALUES[splits[0]].values():  # both spurious values occur in both labels
            assert sum(row["spurious"] == value for row in rows) > 0


@pytest.mark.parametrize("n", [3, 7, 10, 11])
def test_small_splits_round_their_agreement_and_ambiguous_counts_over_the_whole_split(n):
    for agreement in (0.1, 0.3, 0.5, 0.7, 0.9):
        rows = generate_shift_dataset(n, agreement, "platform", seed=1, ambiguous=0.5)
        assert sum(row["agrees"] for row in rows) == round(agreement * n), agreement  # per label, 10 rows at 0.5 gave 4
        assert sum(row["ambiguous"] for row in rows) == round(0.5 * n)
        for label in ("positive", "negative"):  # spread over the labels: each within one row of its share
            rows_of_label = [row for row in rows if row["label"] == label]
            assert abs(sum(row["agrees"] for row in rows_of_label) - agreement * len(rows_of_label)) < 1


def test_agreement_is_the_label_link_of_the_spurious_value(splits):
    kind, named = splits
    aligned = {"positive": SPURIOUS_VALUES[kind]["env_a"], "negative": SPURIOUS_VALUES[kind]["env_b"]}
    for rows in named.values():
        for row in rows:
            assert row["agrees"] == (row["spurious"] == aligned[row["label"]])
            assert row["spurious"] == SPURIOUS_VALUES[kind][row["environment"]]


def test_the_spurious_value_is_visible_in_the_text(splits):
    kind, named = splits
    for row in named["train"]:
        words = row["text"].split()
        if kind == "platform":
            assert words[-1] == row["spurious"]
            assert "amazon.xxx" not in words[:-1] and "yelp.yyy" not in words[:-1]
        elif row["spurious"] == "so":
            assert words.count("so") in (2, 3)
        else:
            assert "so" not in words


def test_test_splits_share_reviews_and_differ_only_in_the_spurious_feature():
    named = make_splits(50, 200, "platform", seed=3)
    bodies = {name: [row["text"].rsplit(" ", 1)[0] for row in rows] for name, rows in named.items()}
    assert bodies["test_90"] == bodies["test_10"] == bodies["test_50"]
    assert not set(bodies["train"]) & set(bodies["test_90"])
    assert [row["label"] for row in named["test_90"]] == [row["label"] for row in named["test_10"]]


def test_reviews_are_varied(splits):
    _, named = splits
    texts = [row["text"] for row in named["train"]]
    lengths = [len(text.split()) for text in texts]
    assert min(lengths) <= 8 and max(lengths) >= 25
    assert len(set(texts)) >= 990
    vocabulary = {word.strip(".,!").lower() for text in texts for word in text.split()}
    assert len(vocabulary) >= 300
    negations = [text for text in texts if any(f" {cue} " in f" {text.lower()} " for cue in ("not", "never", "far from"))]
    assert len(negations) > 100


def test_each_sentence_carries_the_label_and_negation_flips_the_adjective():
    positive = set(GENERAL_ADJECTIVES["positive"]) | {word for domain in DOMAINS.values() for word in domain["positive"]}
    negative = set(GENERAL_ADJECTIVES["negative"]) | {word for domain in DOMAINS.values() for word in domain["negative"]}
    assert not positive & negative
    flipped = {"positive": "negative", "negative": "positive"}
    n_affirmed = n_negated = 0
    for row in generate_shift_dataset(400, 0.5, "platform", seed=1):
        for sentence in re.split(r"(?<=\.)\s+", row["text"]):
            words = [word.strip(".,").lower() for word in sentence.split()]
            found = {"positive" for w in words if w in positive} | {"negative" for w in words if w in negative}
            if not found:
                continue
            negated = bool({"not", "never", "nobody"} & set(words)) or "far from" in sentence
            assert found == {flipped[row["label"]] if negated else row["label"]}, (row["label"], sentence)
            n_negated += negated
            n_affirmed += not negated
    assert n_negated > 50 and n_affirmed > 200


def test_ambiguous_rows_have_mixed_text_and_leave_the_clear_ones_unchanged():
    clear = generate_shift_dataset(400, 0.9, "stopword", seed=2)
    rows = generate_shift_dataset(400, 0.9, "stopword", seed=2, ambiguous=0.3)
    assert Counter((row["label"], row["ambiguous"]) for row in rows) == {
        ("positive", True): 60, ("positive", False): 140, ("negative", True): 60, ("negative", False): 140
    }
    assert [row["agrees"] for row in rows] == [row["agrees"] for row in clear]  # same environments, same agreement
    polarity = {
        label: set(GENERAL_ADJECTIVES[label]) | {word for domain in DOMAINS.values() for word in domain[label]}
        for label in ("positive", "negative")
    }
    for row in rows:
        if row["ambiguous"]:
            sentences = [s for s in re.split(r"(?<=\.)\s+", row["text"]) if {w.strip(".,").lower() for w in s.split()} & (polarity["positive"] | polarity["negative"])]
            assert len(sentences) <= 2, row["text"]  # one clause per polarity (a verdict clause names no adjective)
    assert not any(row["ambiguous"] for row in clear)
    with pytest.raises(ConfigError, match="ambiguous=1.5"):
        generate_shift_dataset(10, 0.9, "platform", ambiguous=1.5)


def test_generation_is_deterministic_in_the_seed():
    assert make_splits(100, 100, "stopword", seed=5) == make_splits(100, 100, "stopword", seed=5)
    assert generate_shift_dataset(100, 0.9, "platform", seed=5) != generate_shift_dataset(100, 0.9, "platform", seed=6)


def test_bad_generator_arguments_say_how_to_fix_them():
    with pytest.raises(ConfigError, match="fraction"):
        generate_shift_dataset(10, 90, "platform")
    with pytest.raises(ConfigError, match="'platform', 'stopword'"):
        generate_shift_dataset(10, 0.9, "emoji")


def test_prompt_completion_rows_use_the_verbalizer():
    rows = generate_shift_dataset(4, 0.9, "platform", seed=0)
    plain = to_prompt_completion(rows)
    assert plain[0]["completion"] == f" {rows[0]['label']}"
    assert rows[0]["text"] in plain[0]["prompt"] and plain[0]["prompt"].endswith("Sentiment:")
    assert plain[0]["label"] == rows[0]["label"] and "text" not in plain[0]

    chat = to_prompt_completion(rows, verbalizer={"positive": "Good", "negative": "Bad"}, conversational=True)
    assert chat[0]["prompt"] == [{"role": "user", "content": plain[0]["prompt"]}]
    assert chat[0]["completion"] == [{"role": "assistant", "content": {"positive": "Good", "negative": "Bad"}[rows[0]["label"]]}]

    with pytest.raises(DataError, match="label 'negative' is not in the verbalizer"):
        to_prompt_completion([{"text": "x", "label": "negative"}], verbalizer={"positive": "yes"})
    with pytest.raises(ConfigError, match="must contain"):
        to_prompt_completion(rows, instruction="Classify this review.")


def test_command_line_writes_every_split(tmp_path, capsys):
    assert cli.main(["shift-data", "--out", str(tmp_path), "--kind", "stopword", "--n_train", "20", "--n-test", "10"]) == 0
    files = sorted(path.name for path in tmp_path.iterdir())
    assert files == ["test_10.jsonl", "test_30.jsonl", "test_50.jsonl", "test_70.jsonl", "test_90.jsonl", "train.jsonl"]
    first = json.loads((tmp_path / "train.jsonl").read_text().splitlines()[0])
    assert {"prompt", "completion", "label", "spurious", "environment", "agrees"} <= set(first)
    assert first["spurious"] in ("so", "the")
    assert tuple(SPURIOUS_VALUES) == cli.SPURIOUS_KINDS  # the choices --help lists
    with pytest.raises(SystemExit):
        cli.main(["shift-data", "--out", str(tmp_path), "--kind", "stopwords"])
    assert "invalid choice: 'stopwords'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["shift-data", "--out", str(tmp_path), "--n-test", "-1"])
    assert "argument --n_test/--n-test: must be a whole number of at least 1, not '-1'" in capsys.readouterr().err
    assert cli.main(["shift-data", "--out", str(tmp_path / "train.jsonl")]) == 2
    assert f"--out {tmp_path / 'train.jsonl'} is a file; the split files go into a directory" in capsys.readouterr().err
    older = subprocess.run(  # the older spelling still writes the splits
        [sys.executable, "-m", "trl_causal.latent_shift.data", "--out", str(tmp_path / "old"), "--n-train", "4", "--n-test", "2"],
        capture_output=True, text=True,
    )
    assert older.returncode == 0 and (tmp_path / "old" / "test_10.jsonl").is_file(), older.stderr
