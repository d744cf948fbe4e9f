"""`dataset_name` as a local file of each format, a saved `datasets` directory, or a directory of files."""

from __future__ import annotations

import subprocess
import sys

import pytest
from datasets import Dataset, DatasetDict

from conftest import REPO, sft_rows, write_jsonl
from trl_causal.data import check_columns, load_any_dataset
from trl_causal.errors import DataError

ROWS = sft_rows(6)


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_a_single_file_becomes_the_train_split(tmp_path, suffix):
    path = tmp_path / f"rows{suffix}"
    dataset = Dataset.from_list(ROWS)
    {".jsonl": dataset.to_json, ".json": dataset.to_json, ".csv": dataset.to_csv, ".parquet": dataset.to_parquet}[suffix](str(path))
    loaded = load_any_dataset(str(path))
    assert list(loaded) == ["train"] and loaded["train"]["prompt"] == [r["prompt"] for r in ROWS]


def test_a_directory_saved_by_datasets_keeps_its_splits(tmp_path):
    DatasetDict({"train": Dataset.from_list(ROWS[:4]), "test": Dataset.from_list(ROWS[4:])}).save_to_disk(tmp_path / "saved")
    loaded = load_any_dataset(str(tmp_path / "saved"))
    assert set(loaded) == {"train", "test"} and len(loaded["test"]) == 2


def test_a_directory_of_split_files(tmp_path):
    (tmp_path / "d").mkdir()
    write_jsonl(tmp_path / "d" / "train.jsonl", ROWS[:4])
    write_jsonl(tmp_path / "d" / "test.jsonl", ROWS[4:])
    loaded = load_any_dataset(str(tmp_path / "d"))
    assert len(loaded["train"]) == 4 and len(loaded["test"]) == 2


def test_a_compressed_file_and_a_glob_of_files_become_the_train_split(tmp_path):
    import gzip
    import json

    with gzip.open(tmp_path / "rows.jsonl.gz", "wt") as file:
        file.write("\n".join(json.dumps(row) for row in ROWS))
    assert load_any_dataset(str(tmp_path / "rows.jsonl.gz"))["train"]["prompt"] == [row["prompt"] for row in ROWS]
    write_jsonl(tmp_path / "part-1.jsonl", ROWS[:2])
    write_jsonl(tmp_path / "part-2.jsonl", ROWS[2:])
    assert len(load_any_dataset(str(tmp_path / "part-*.jsonl"))["train"]) == len(ROWS)
    assert len(load_any_dataset(str(tmp_path / "*.jsonl*"))["train"]) == 2 * len(ROWS)  # plain and compressed JSON lines
    with pytest.raises(DataError, match=r"'.*\*\.csv' matches no file"):
        load_any_dataset(str(tmp_path / "*.csv"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"matches files of .jsonl, .jsonl.gz, .txt; use files of one of"):
        load_any_dataset(str(tmp_path / "*"))


def test_files_that_datasets_merges_into_one_split_are_also_splits_of_their_own(tmp_path, capsys):
    folder = tmp_path / "shift"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", ROWS[:2])
    write_jsonl(folder / "test_10.jsonl", ROWS[2:3])
    write_jsonl(folder / "test_90.jsonl", ROWS[3:6])
    loaded = load_any_dataset(str(folder))
    assert {split: len(rows) for split, rows in loaded.items()} == {"train": 2, "test": 4, "test_10": 1, "test_90": 3}
    assert "split 'test' of" in capsys.readouterr().err
    shards = tmp_path / "shards"  # the parts of one split stay that split alone
    shards.mkdir()
    write_jsonl(shards / "train-00000-of-00002.jsonl", ROWS[:3])
    write_jsonl(shards / "train-00001-of-00002.jsonl", ROWS[3:])
    assert {split: len(rows) for split, rows in load_any_dataset(str(shards)).items()} == {"train": 6}
    assert "holds" not in capsys.readouterr().err


def test_a_json_object_wrapping_the_rows_is_read_from_its_field_and_a_one_row_chat_file_is_not(tmp_path, capsys):
    import json

    (tmp_path / "wrapped.json").write_text(json.dumps({"version": 2, "data": ROWS}))
    assert load_any_dataset(str(tmp_path / "wrapped.json"))["train"].to_list() == ROWS
    assert "is one JSON object; its rows are read from its field 'data'" in capsys.readouterr().err
    chat = {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Yes."}]}
    (tmp_path / "chat.jsonl").write_text(json.dumps(chat) + "\n")
    assert load_any_dataset(str(tmp_path / "chat.jsonl"))["train"].to_list() == [chat]


def test_a_file_or_folder_without_rows_is_one_line_naming_it(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "header.csv").write_text("prompt,completion\n")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "train.jsonl").write_text("")
    for name in ("empty.jsonl", "header.csv", "folder"):
        with pytest.raises(DataError, match=rf"^Dataset {tmp_path / name} holds no rows \(an empty file, or a CSV of only its header\)\.$"):
            load_any_dataset(str(tmp_path / name))


def test_a_mixture_entry_may_be_a_local_file_and_entries_of_other_column_types_are_named(tmp_path):
    from trl import DatasetMixtureConfig
    from trl.scripts.utils import DatasetConfig

    from trl_causal.data import load_mixture

    rows = sft_rows()
    first, second = write_jsonl(tmp_path / "a.jsonl", rows[:3]), write_jsonl(tmp_path / "b.jsonl", rows[3:5])
    mixture = load_mixture(DatasetMixtureConfig(datasets=[DatasetConfig(path=str(first)), DatasetConfig(path=str(second))]))
    assert mixture["train"]["prompt"] == [row["prompt"] for row in rows[:5]]
    Dataset.from_list(rows[:2]).to_csv(tmp_path / "c.csv", index=False)
    entries = [DatasetConfig(path=str(first)), DatasetConfig(path=str(tmp_path / "c.csv"))]
    with pytest.raises(DataError, match=r"give the column\(s\) completion, prompt other types \(.*a.jsonl: completion Value\('string'\)"):
        load_mixture(DatasetMixtureConfig(datasets=entries))


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "rows.txt"
    path.write_text("hello")
    with pytest.raises(DataError, match="unsupported suffix"):
        load_any_dataset(str(path))


def test_extra_required_columns_are_named(tmp_path):
    with pytest.raises(DataError, match=r"lacks the columns this trainer needs: environment\. It has: completion, prompt"):
        check_columns(Dataset.from_list(ROWS), "sft", ("environment",))


def test_text_rows_are_read_from_the_configs_dataset_text_field():
    from trl import SFTConfig

    from trl_causal import CAPTConfig

    rows = Dataset.from_list([{"content": "Every cat is a mammal."}])
    for config in (SFTConfig, CAPTConfig):
        check_columns(rows, "sft", args=config(output_dir="unused", bf16=False, dataset_text_field="content"))
        with pytest.raises(DataError, match=r"needs: messages or prompt\+completion or text\. It has: content"):
            check_columns(rows, "sft", args=config(output_dir="unused", bf16=False))


def test_columns_of_a_streamed_csv_are_read_from_its_first_row(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("prompt,completion\nIs it?,Yes\n")
    streamed = load_any_dataset(str(path), streaming=True)["train"]
    assert streamed.column_names is None  # the CSV builder knows no features up front
    check_columns(streamed, "sft")
    with pytest.raises(DataError, match=r"lacks the columns this trainer needs: environment\. It has: completion, prompt"):
        check_columns(streamed, "sft", ("environment",))


def test_named_splits_name_one_evaluation_dataset_eval_and_refuse_one_named_train():
    from trl_causal.data import named_splits
    from trl_causal.errors import ConfigError

    train, held_out = Dataset.from_list(ROWS), Dataset.from_list(ROWS[:1])
    assert named_splits(train, None) == {"train": train}
    assert named_splits(train, held_out) == {"train": train, "eval": held_out}
    assert list(named_splits(train, {"a": held_out, "b": held_out})) == ["train", "a", "b"]
    with pytest.raises(ConfigError, match=r"An evaluation split is named 'train'.*'train_eval'"):
        named_splits(train, {"train": held_out})


@pytest.mark.parametrize("trainer", ["capt", "deconfounded_reward", "latent_shift"])
def test_a_trainer_given_a_list_or_a_datasetdict_says_how_to_pass_a_split(trainer):
    from trl_causal import CAPTConfig, CAPTTrainer, DeconfoundedRewardConfig, DeconfoundedRewardTrainer, LatentShiftConfig, LatentShiftTrainer

    trainer_cls, config = {
        "capt": (CAPTTrainer, CAPTConfig(output_dir="unused", bf16=False)),
        "deconfounded_reward": (DeconfoundedRewardTrainer, DeconfoundedRewardConfig(output_dir="unused", bf16=False, numeric_confounders=["c"])),
        "latent_shift": (LatentShiftTrainer, LatentShiftConfig(output_dir="unused", bf16=False, verbalizer={"positive": "positive", "negative": "negative"})),
    }[trainer]
    rows = Dataset.from_list(ROWS)  # no model loads: the container fails first
    with pytest.raises(DataError, match=rf"The {trainer} trainer needs the train rows as .*, not list\. Make one with datasets\.Dataset\.from_list\(rows\)"):
        trainer_cls("no-model-here", config, train_dataset=ROWS)
    with pytest.raises(DataError, match=r"needs the train rows as .*, not DatasetDict\. Pass one of its splits, e\.g\. dataset\['train'\]"):
        trainer_cls("no-model-here", config, train_dataset=DatasetDict({"train": rows, "test": rows}))
    if trainer != "latent_shift":  # it streams
        with pytest.raises(DataError, match=r"needs the train rows as a map-style datasets.Dataset \(it .* before training\), not IterableDataset\. Load it without streaming: remove `dataset_streaming: true`"):
            trainer_cls("no-model-here", config, train_dataset=rows.to_iterable_dataset())


def test_the_shipped_example_data_is_what_make_example_data_writes(tmp_path):
    """Every file under example_configs/data (but the dpo-pairs output) comes from scripts/make_example_data.py, byte
    for byte: the example configs' headers point there, where they gave multi-line commands that failed when copied."""
    shipped = REPO / "example_configs" / "data"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "make_example_data.py"), str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    written = sorted(path.name for path in tmp_path.iterdir())
    assert written == sorted(path.name for path in shipped.iterdir() if path.name != "observational_pairs_naive.jsonl")
    for name in written:
        assert (tmp_path / name).read_bytes() == (shipped / name).read_bytes(), name
