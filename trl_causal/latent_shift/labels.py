"""The labels of the ``latent_shift`` trainer's rows: read from the completions, checked against the verbalizer
(label -> answer text), and the verbalizer's answers checked to be told apart once tokenized."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from datasets import Dataset

from ..errors import ConfigError, DataError, count_rows, describe_rows
from ..evaluation import Prompt, completion_text

COMPLETION_LABEL_COLUMN = "completion_label"  # added when `label_column` is None: the completion text


def answer_of(completion: Prompt, row: int, split: str) -> str:
    """``completion_text``, naming the row whose completion is neither a text nor messages."""
    try:
        return completion_text(completion)
    except DataError as error:
        raise DataError(f"Row {row} of the {split} rows: {error}") from None


def with_completion_labels(dataset, label_column: str | None, verbalizer: dict[str, str] | None, split: str):
    """The rows with a ``completion_label`` column, the label whose verbalizer answer is the row's completion (read
    before TRL appends EOS), when ``label_column`` is None; otherwise the rows unchanged."""
    if label_column is not None:
        return dataset
    check_completion_column(dataset.column_names, split)
    label_of_answer = {answer: label for label, answer in (verbalizer or {}).items()}

    def add_label(row, index):
        answer = answer_of(row["completion"], index, split)
        return {COMPLETION_LABEL_COLUMN: label_of_answer.get(answer, answer)}

    return dataset.map(add_label, with_indices=True)


def check_completion_column(columns: Sequence[str] | None, split: str) -> None:
    """With ``label_column`` None each row's label is its completion: fail on rows without one."""
    if columns is not None and "completion" not in columns:
        raise ConfigError(
            f"The {split} rows have no 'completion' column (columns: {', '.join(columns)}), and latent_shift reads "
            "each row's label from its completion unless `label_column` names the column that holds it: set "
            "label_column (messages rows need one)."
        )


def verbalizer_from_data(dataset: Dataset, label_column: str) -> dict[str, str]:
    """{label: completion text} read from the rows, labels sorted; a label with two different completions is an error."""
    if "completion" not in dataset.column_names:
        raise ConfigError(
            f"verbalizer is not set and the data has no `completion` column to read the answers from; set "
            f"`verbalizer` (label -> answer text). Columns: {', '.join(dataset.column_names)}."
        )
    answers: dict[str, str] = {}
    for row, (label, completion) in enumerate(zip(dataset[label_column], dataset["completion"])):
        answer = answer_of(completion, row, "training")
        if answers.setdefault(str(label), answer) != answer:
            raise DataError(
                f"Cannot read the verbalizer from the data: label {label!r} has the completion {answers[str(label)]!r} "
                f"and, in row {row}, {answer!r}. Set `verbalizer` (label -> answer text)."
            )
    if len(answers) < 2:
        raise DataError(f"The training data holds {len(answers)} label(s) {sorted(answers)}; latent_shift needs 2 or more.")
    return dict(sorted(answers.items()))


def loaded_row_numbers(prepared: Dataset, loaded) -> list[int] | None:
    """For each row of ``prepared`` (the split after TRL's preparation, which keeps the rows' order and drops some),
    its number in ``loaded`` (the split as given), matched in order by the prompt (TRL adds EOS to the completion);
    None where they cannot be matched."""
    if not isinstance(loaded, Dataset):
        return None
    if len(loaded) == len(prepared):
        return list(range(len(prepared)))
    key = next((column for column in ("prompt", "messages") if column in prepared.column_names and column in loaded.column_names), None)
    if key is None:
        return None
    given = loaded[key]
    numbers, position = [], 0
    for row in prepared[key]:
        while position < len(given) and given[position] != row:
            position += 1
        if position == len(given):
            return None
        numbers.append(position)
        position += 1
    return numbers


def check_labels(dataset: Dataset, label_column: str, verbalizer: dict[str, str], split: str, first_row: int = 0) -> None:
    """Fail on the rows whose label is not a key of the verbalizer, or whose completion is not its label's
    verbalizer answer (SFT would learn one answer, L_adj another class), naming the rows (``dataset`` holds the rows
    from number ``first_row`` on) and the first one's label."""
    # the answer SFT learns: the completion, or a messages row's last turn
    answer_column = next((c for c in ("completion", "messages") if c in dataset.column_names), None)
    completions = dataset[answer_column] if answer_column else None
    labels = dict(enumerate(dataset[label_column], start=first_row))
    unknown = [row for row, label in labels.items() if str(label) not in verbalizer]
    if unknown:
        row, label = unknown[0], labels[unknown[0]]
        source = "its completion" if label_column == COMPLETION_LABEL_COLUMN else f"column {label_column!r}"
        same_text = [key for key in verbalizer if key.lower() == str(label).lower()]
        hint = (
            f" Labels compare as text: write {str(label)!r}, not {same_text[0]!r}."
            if same_text
            else " (YAML reads unquoted yes/no/true/false labels as booleans, named 'True'/'False': quote them.)"
            if {"True", "False"} & set(verbalizer)
            else ""
        )
        raise DataError(
            f"The {split} split has labels that are not in the verbalizer (labels: {', '.join(map(repr, verbalizer))}) "
            f"in {count_rows(len(unknown))} ({describe_rows(unknown)}); row {row} has {label!r} ({source}). Add it to "
            f"`verbalizer` or fix the rows.{hint}"
        )
    if completions is None:
        return
    answered = {row: answer_of(completion, row, split) for row, completion in enumerate(completions, start=first_row)}
    mismatched = [row for row, label in labels.items() if answered[row] != verbalizer[str(label)]]
    if mismatched:
        row, label = mismatched[0], labels[mismatched[0]]
        raise DataError(
            f"In {count_rows(len(mismatched))} of the {split} split ({describe_rows(mismatched)}) the "
            f"{'completion' if answer_column == 'completion' else 'last message'} is not the label's verbalizer "
            f"answer: row {row} has label {label!r} (column {label_column!r}) and {answered[row]!r}, but the "
            f"verbalizer answers {str(label)!r} with {verbalizer[str(label)]!r}. Fix the rows or the verbalizer."
        )


def labels_checked(dataset, label_column: str, verbalizer: dict[str, str], split: str):
    """The split, its labels checked by ``check_labels``: a map-style one now, a streamed one (which cannot be checked
    up front) row by row as it is drawn."""
    if isinstance(dataset, Dataset):
        check_labels(dataset, label_column, verbalizer, split)
        return dataset

    def check(row, index):
        check_labels(Dataset.from_list([row]), label_column, verbalizer, split, first_row=index)
        return {}

    return dataset.map(check, with_indices=True)


def check_answer_tokens(tokenizer, verbalizer: dict[str, str], prefix: str = "") -> None:
    """Fail when two answers' tokens (of ``prefix + answer``, as they follow the prompt) collide: one sequence is a
    prefix of the other (or equal to it). Answers that only share their first tokens ("very positive" / "very
    negative") are fine: the LM head's prediction sums log-probabilities over all of an answer's tokens."""
    token_ids = {answer: tokenizer(prefix + answer, add_special_tokens=False)["input_ids"] for answer in verbalizer.values()}
    for (first, first_ids), (second, second_ids) in itertools.combinations(token_ids.items(), 2):
        (short, short_ids), (long, long_ids) = sorted(((first, first_ids), (second, second_ids)), key=lambda item: len(item[1]))
        if long_ids[: len(short_ids)] == short_ids:
            raise ConfigError(
                f"verbalizer answers {first!r} and {second!r} collide when tokenized after the prompt (as "
                f"{prefix + first!r} / {prefix + second!r}): the tokens of {short!r} {short_ids} are a prefix of those "
                f"of {long!r} {long_ids}, so the LM head cannot tell them apart (every sequence that says {long!r} "
                f"starts by saying {short!r}). Choose answers where neither is the other's start."
            )
