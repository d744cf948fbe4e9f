"""Loading datasets the way ``trl sft`` does, plus local files and early column checks."""

from __future__ import annotations

import dataclasses
import difflib
import re
from pathlib import Path
from typing import Any

from .errors import ConfigError, DataError

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")  # of a .json / .jsonl / .csv file, which `datasets` reads as it is
GLOB_CHARACTERS = "*?["
SHARD_NAME = re.compile(r"-\d+-of-\d+$")  # train-00000-of-00002.parquet: one split written in parts
# Columns a trainer kind can train on: any one of these sets must be present.
KIND_COLUMN_SETS = {
    "sft": (("messages",), ("prompt", "completion"), ("text",)),
    "reward": (("chosen", "rejected"),),
}


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or file_builder(Path(name)) is not None


def file_builder(path: Path) -> str | None:
    """The `datasets` builder of a data file by its suffix ("rows.jsonl.gz" -> "json"); None for another suffix."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if len(suffixes) > 1 and suffixes[-1] in COMPRESSIONS and suffixes[-2] != ".parquet":
        suffixes.pop()
    return FILE_BUILDERS.get(suffixes[-1]) if suffixes else None


def _load_local(source: str, *args, **kwargs):
    """``datasets.load_dataset`` on local data; data without rows (an empty file, a CSV of only its header) is one
    line naming it, where `datasets` raises a bare StopIteration or "Instruction "train" corresponds to no data"."""
    import datasets

    try:
        return datasets.load_dataset(*args, **kwargs)
    except (StopIteration, ValueError) as error:
        if isinstance(error, ValueError) and "corresponds to no data" not in str(error):
            raise
        raise DataError(f"Dataset {source} holds no rows (an empty file, or a CSV of only its header).") from None


def _data_files(name: str, files: list[Path], streaming: bool):
    """The ``train`` split of data files of one format."""
    builders = {file_builder(path) for path in files}
    if None in builders or len(builders) > 1:
        kinds = ", ".join(sorted({"".join(path.suffixes) or path.name for path in files}))
        what = f"file {name} has an unsupported suffix" if len(files) == 1 else f"{name!r} matches files of {kinds}"
        raise DataError(
            f"Dataset {what}; use {'' if len(files) == 1 else 'files of '}one of {', '.join(FILE_BUILDERS)} (json, "
            f"jsonl and csv also compressed: {', '.join(COMPRESSIONS)})."
        )
    builder, data_files = builders.pop(), {"train": [str(path) for path in files]}
    loaded = _load_local(name, builder, data_files=data_files, streaming=streaming)
    field = _wrapped_rows_field(loaded["train"]) if builder == "json" and not streaming else None
    if field is None:
        return loaded
    from .configuration import config_note

    config_note(f"{name} is one JSON object; its rows are read from its field {field!r}.")
    return _load_local(name, builder, data_files=data_files, field=field)


def _wrapped_rows_field(rows) -> str | None:
    """The field of a JSON file that is one object wrapping the rows ({"data": [{...}, ...]}): `datasets` reads such a
    file as one row; the one column that holds a list of objects, other than chat messages (a one-row file of
    conversations), is then the rows' field."""
    if rows.num_rows != 1:
        return None
    lists = [
        key for key, value in rows[0].items()
        if isinstance(value, list) and value and all(isinstance(item, dict) for item in value)
        and not all({"role", "content"} <= set(item) for item in value)
    ]
    return lists[0] if len(lists) == 1 else None


def _data_directory(path: Path, config: str | None, streaming: bool):
    """A folder of data files, split as `datasets` splits it by file name (train.jsonl -> train; test_10.jsonl and
    test_90.jsonl -> test). Where one split merges files of different names, each of them is also a split of its own
    name (test_10, test_90), with a note, so that a merged split is never read unknowingly and each file can be
    named."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    from .configuration import config_note

    try:
        grouped = DataFilesDict.from_patterns(get_data_patterns(str(path)), base_path=str(path))
    except Exception:  # no data files, or a layout datasets resolves otherwise: its own error and rules
        return _load_local(str(path), str(path), name=config, streaming=streaming)
    files = {str(split): [Path(str(file)) for file in split_files] for split, split_files in grouped.items()}
    stems = {split: [file.name.split(".")[0] for file in split_files] for split, split_files in files.items()}
    merged = {
        split: names for split, names in stems.items()
        if len(set(names)) > 1 and not any(SHARD_NAME.search(stem) for stem in names)
    }
    builders = {file_builder(file) for split_files in files.values() for file in split_files}
    if not merged or len(builders) != 1 or None in builders:
        return _load_local(str(path), str(path), name=config, streaming=streaming)
    data_files = {split: [str(file) for file in split_files] for split, split_files in files.items()}
    for split, names in merged.items():
        own = [stem for stem in names if re.fullmatch(r"\w+", stem) and stem not in data_files]
        data_files.update((stem, [str(file)]) for stem, file in zip(names, files[split]) if stem in own)
        config_note(
            f"split {split!r} of {path} holds {len(names)} files ({', '.join(file.name for file in files[split])}), "
            f"as datasets groups files by name; splits of their own: {', '.join(own)}."
        )
    return _load_local(str(path), builders.pop(), data_files=data_files, streaming=streaming)


def load_any_dataset(name: str, config: str | None = None, streaming: bool = False):
    """A ``DatasetDict`` from a hub id, a directory saved by ``datasets``, a data directory, a data file (also
    compressed: rows.jsonl.gz), or a glob of data files ("data/*.jsonl").

    A single file, or the files of a glob, become the ``train`` split.
    """
    import glob

    import datasets

    path = Path(name).expanduser()
    if path.is_file():
        return _data_files(name, [path], streaming)
    if any(character in name for character in GLOB_CHARACTERS) and not path.exists():
        files = sorted(Path(match) for match in glob.glob(str(path), recursive=True) if Path(match).is_file())
        if not files:
            raise DataError(f"Dataset {name!r} matches no file (resolved from {Path.cwd()}).")
        return _data_files(name, files, streaming)
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            loaded = datasets.load_from_disk(str(path))
            return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})
        return _data_directory(path, config, streaming)
    if _looks_like_path(name):
        raise DataError(
            f"Dataset {name!r} looks like a local path but does not exist (resolved to {path.resolve()}); paths in a "
            "config are relative to the directory you run from."
        )
    try:
        return datasets.load_dataset(name, name=config, streaming=streaming)
    except OSError as error:  # no connection, or the hub's DatasetNotFoundError (a FileNotFoundError)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(
            f"Dataset {name!r} is not a local file or directory (resolved to {path.resolve()}), and the Hugging Face "
            f"Hub (or its cache) does not give it: {reason}"
        ) from None


STREAMING_KEYS = "`dataset_streaming: true`, or `streaming: true` beside `datasets:`"  # TRL's two ways to stream


def load_mixture(dataset_args: Any):
    """TRL's ``get_dataset`` on the ``datasets:`` entries. An entry whose ``path`` is a local data file is read with
    its format's builder (``path: json, data_files: rows.jsonl``), as `datasets` takes no file as a path; entries
    whose columns have other types, which `datasets` cannot join, are one error naming them."""
    import datasets
    from trl import get_dataset

    entries = []
    for entry in dataset_args.datasets:
        path = Path(entry.path).expanduser()
        if entry.data_files is None and path.is_file():
            builder = file_builder(path)
            if builder is None:
                raise DataError(
                    f"datasets entry path: {entry.path!r} is a file of a format `datasets` does not read by its suffix; "
                    f"use a file ending in {', '.join(sorted(FILE_BUILDERS))} (JSON and CSV also compressed, e.g. .jsonl.gz)."
                )
            entry = dataclasses.replace(entry, path=builder, data_files=str(path))
        entries.append(entry)
    dataset_args = dataclasses.replace(dataset_args, datasets=entries)
    try:
        return get_dataset(dataset_args)
    except ValueError as error:  # datasets.concatenate_datasets: "The features can't be aligned ..."
        if "can't be aligned" not in str(error):
            raise
        features = {}
        for entry in dataset_args.datasets:
            loaded = datasets.load_dataset(
                entry.path, entry.name, data_dir=entry.data_dir, data_files=entry.data_files, split=entry.split,
                streaming=dataset_args.streaming,
            )
            if entry.columns is not None:
                loaded = loaded.select_columns(entry.columns)
            features[str(entry.data_files or entry.path)] = {name: str(feature) for name, feature in (loaded.features or {}).items()}
        columns = sorted({name for entry in features.values() for name in entry})
        differing = [name for name in columns if len({entry.get(name, "(none)") for entry in features.values()}) > 1]
        described = "; ".join(
            f"{source}: " + ", ".join(f"{name} {entry.get(name, '(none)')}" for name in differing) for source, entry in features.items()
        )
        raise DataError(
            f"The `datasets:` entries give the column(s) {', '.join(differing)} other types ({described}), which "
            "`datasets` cannot join into one split. Give every entry the same columns with the same types (e.g. write "
            "them in one file format: string and large_string come from different formats), or pick the columns with "
            "`columns:`."
        ) from None


def load_run_datasets(script_args: Any, dataset_args: Any, need_eval: bool):
    """The train split and (if ``need_eval``) the test split named in the config."""
    if dataset_args.datasets:
        dataset = load_mixture(dataset_args)
    else:
        dataset = load_any_dataset(script_args.dataset_name, script_args.dataset_config, script_args.dataset_streaming)
    source = script_args.dataset_name or "datasets"

    def split(key: str, option: str):
        if key not in dataset:
            raise DataError(
                f"Dataset {source!r} has no split {key!r} (set by `{option}`); it has: {', '.join(dataset)}."
            )
        return dataset[key]

    train = split(script_args.dataset_train_split, "dataset_train_split")
    test = split(script_args.dataset_test_split, "dataset_test_split") if need_eval else None
    return train, test


def named_splits(train_dataset: Any, eval_dataset: Any) -> dict[str, Any]:
    """The training rows as "train", then the evaluation rows by name: the keys of a dict of datasets, or "eval" for
    one dataset (as ``Trainer.evaluate`` names its metrics); none when ``eval_dataset`` is None. An evaluation split
    named "train" is an error, since it would stand in for the training rows."""
    evaluation = {} if eval_dataset is None else dict(eval_dataset) if isinstance(eval_dataset, dict) else {"eval": eval_dataset}
    if "train" in evaluation:
        raise ConfigError(
            "An evaluation split is named 'train', the name kept for the training rows; give it another name (e.g. "
            "'train_eval')."
        )
    return {"train": train_dataset, **evaluation}


def check_streamed_steps(train_dataset: Any, max_steps: int) -> None:
    """A streamed training split has no length, so transformers cannot count its steps: ``max_steps`` must be set."""
    import datasets

    if isinstance(train_dataset, datasets.IterableDataset) and max_steps <= 0:
        raise ConfigError(
            f"The training rows are streamed ({STREAMING_KEYS}), so they have no length to count epochs by: "
            "set `max_steps` (e.g. max_steps: 1000), or load them without streaming."
        )


def check_split_types(splits: dict[str, Any], trainer: str, why: str = "", streamed: bool = False) -> None:
    """Every split of ``named_splits`` is a ``datasets.Dataset`` (or, if ``streamed``, an ``IterableDataset``): a
    list, a ``DatasetDict`` or anything else is an error naming the split and how to pass it. ``why``: why the
    trainer needs map-style rows."""
    import datasets

    accepted = (datasets.Dataset, datasets.IterableDataset) if streamed else (datasets.Dataset,)
    for name, dataset in splits.items():
        if isinstance(dataset, accepted):
            continue
        fix = (
            f" Pass one of its splits, e.g. dataset[{next(iter(dataset), 'train')!r}]."
            if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict))
            else " Make one with datasets.Dataset.from_list(rows)." if isinstance(dataset, (list, tuple))
            else f" Load it without streaming: remove {STREAMING_KEYS} from the config (in a script, call "
            "load_dataset without streaming=True)." if isinstance(dataset, datasets.IterableDataset)
            else ""
        )
        raise DataError(
            f"The {trainer} trainer needs the {name} rows as a "
            + ("datasets.Dataset or IterableDataset" if streamed else f"map-style datasets.Dataset{why}")
            + f", not {type(dataset).__name__}.{fix}"
        )


def check_columns(
    dataset,
    kind: str,
    required: tuple[str, ...] = (),
    source: str = "dataset",
    column_sets: tuple[tuple[str, ...], ...] | None = None,
    hint: str = "",
    args: Any = None,
) -> None:
    """Fail early when a split lacks the columns a trainer needs, saying which ones exist.

    One of ``column_sets`` (default: the text columns of the trainer's kind, where an SFT config's
    ``dataset_text_field`` names the text column) must be present, and all of ``required``:
    a missing one is named with the fields of the config ``args`` that set it and the existing columns whose names
    are close. ``hint`` (how to name the text columns) is added when no column set is present.
    """
    names = dataset.column_names  # None for a streamed dataset whose builder knows no features (CSV): read a row
    columns = set(names) if names is not None else set(next(iter(dataset), {}))
    missing = []
    for column in required:
        if column in columns:
            continue
        settings = {} if args is None else {f.name: getattr(args, f.name) for f in dataclasses.fields(args)}
        fields = [name for name, value in settings.items() if value == column or (isinstance(value, list) and column in value)]
        close = difflib.get_close_matches(column, sorted(columns), n=2, cutoff=0.6)
        missing.append(
            column
            + (f" (from {', '.join(fields)})" if fields else "")
            + (f" (did you mean {' or '.join(map(repr, close))}?)" if close else "")
        )
    candidates = column_sets if column_sets is not None else KIND_COLUMN_SETS[kind]
    text_field = getattr(args, "dataset_text_field", None)
    if text_field:
        candidates = tuple((text_field,) if option == ("text",) else option for option in candidates)
    text_missing = not any(set(option) <= columns for option in candidates)
    if text_missing:
        missing.insert(0, " or ".join("+".join(option) for option in candidates))
    if missing:
        raise DataError(
            f"The {source} lacks the columns this trainer needs: {', '.join(missing)}. It has: "
            f"{', '.join(sorted(columns)) or 'no columns'}." + (f" {hint}" if hint and text_missing else "")
        )
