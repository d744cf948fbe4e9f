"""Observational rows (a text, an outcome Y, confounders C, instruments Z, a group id) read into checked arrays.

``args`` is the ``deconfounded_reward`` trainer's config (``DeconfoundedRewardConfig``), read for its column names
and ``drop_invalid``, ``min_level_rows``, ``timestamp_features``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataError, describe_rows, for_count
from .confounders import build_confounder_matrix, describe_invalid_columns, invalid_confounder_rows, is_missing, numeric_column
from .partial_out import group_codes

if TYPE_CHECKING:
    import datasets


def text_column_sets(args: Any) -> tuple[tuple[str, ...], ...]:
    """The columns holding the scored text: ``text_column``, or TRL's ``prompt`` + ``completion``."""
    return ((args.text_column,),) if args.text_column is not None else (("prompt", "completion"),)


def observation_columns(args: Any) -> tuple[str, ...]:
    """Outcome, confounder, instrument and group columns named in the config."""
    columns = [
        args.outcome_column,
        *args.numeric_confounders,
        *args.categorical_confounders,
        *args.timestamp_confounders,
    ]
    columns += [*args.instrument_columns, *([args.group_column] if args.group_column else [])]
    return tuple(columns)


def repeated_rows(dataset: datasets.Dataset, args: Any) -> list[int]:
    """The rows that repeat an earlier row in every column the trainer reads (text, outcome, confounders, instrument,
    group): a log that holds an event twice, which then weighs twice in the partialling out, its standard errors and
    the pairs."""
    columns = [*text_column_sets(args)[0], *observation_columns(args)]
    seen: set[str] = set()
    repeated = []
    for index, values in enumerate(zip(*(dataset[column] for column in columns))):
        key = json.dumps(values, default=str)
        if key in seen:
            repeated.append(index)
        seen.add(key)
    return repeated


def _valid_text(row: Mapping[str, Any], text_column: str | None) -> bool:
    """A string, or a prompt and a completion that are both strings or both message lists."""
    if text_column is not None:
        return isinstance(row[text_column], str)
    return isinstance(row["prompt"], type(row["completion"])) and isinstance(row["prompt"], (str, list))


def check_text_types(dataset: datasets.Dataset, args: Any, split: str) -> None:
    """The scored texts are strings (``prompt`` / ``completion`` may also be message lists); a null counts as a missing
    text (``drop_invalid``), a number or any other value is an error naming the rows."""
    if args.text_column is not None:
        lists = [row for row, value in enumerate(dataset[args.text_column]) if isinstance(value, list)]
        if lists:
            raise DataError(
                f"text_column {args.text_column!r} of the {split} split holds message lists (e.g. row {lists[0]}), "
                "not strings. For chat data, give the prompt and the answer as message lists in `prompt` and "
                "`completion` and set `text_column: null`; they are then scored through the chat template."
            )
    allowed = str if args.text_column is not None else (str, list)
    for column in text_column_sets(args)[0]:
        values = dataset[column]
        wrong = [row for row, value in enumerate(values) if value is not None and not isinstance(value, allowed)]
        if wrong:
            value = values[wrong[0]]
            raise DataError(
                f"Column {column!r} of the {split} split holds the scored text, but it has {type(value).__name__} "
                f"values at {describe_rows(wrong)} (e.g. row {wrong[0]}: {value!r}), not "
                + ("strings. Is text_column the column of the texts?" if args.text_column is not None
                   else "strings or message lists. Convert them to strings.")
            )


@dataclass
class Observations:
    """Checked columns of one split: ``rows``, the indices of the kept rows in the split; Y [n]; C [n, k] with
    ``confounder_names``; Z [n, m] or None; group codes [n] or None; ``dropped``, the invalid rows dropped, and
    ``dropped_by_column``, how many of them each column made invalid (a row can count in several)."""

    rows: np.ndarray
    outcome: np.ndarray
    confounders: np.ndarray
    confounder_names: list[str]
    instrument: np.ndarray | None
    groups: np.ndarray | None
    dropped: int = 0
    dropped_by_column: dict[str, int] = field(default_factory=dict)

    def select(self, keep: np.ndarray) -> Observations:
        """The observations of the rows where ``keep`` is true."""
        return Observations(
            self.rows[keep],
            self.outcome[keep],
            self.confounders[keep],
            self.confounder_names,
            None if self.instrument is None else self.instrument[keep],
            None if self.groups is None else self.groups[keep],
            self.dropped,
            self.dropped_by_column,
        )


def _invalid_rows(
    dataset: datasets.Dataset, args: Any, outcome: np.ndarray, instrument: np.ndarray | None, split: str
) -> dict[str, np.ndarray]:
    """Column -> rows with no text, or a missing / non-finite outcome, instrument, confounder or group value (a
    numeric confounder's "NaN" string included)."""
    text_columns = text_column_sets(args)[0]
    texts = dataset.select_columns(list(text_columns))
    problems: dict[str, np.ndarray] = {}

    def add(column: str, mask: np.ndarray) -> None:  # a column in two roles (the text and the group) keeps both masks
        problems[column] = problems[column] | mask if column in problems else mask

    add(args.outcome_column, ~np.isfinite(outcome))
    add("+".join(text_columns), ~np.array([_valid_text(row, args.text_column) for row in texts], dtype=bool))
    for j, column in enumerate(args.instrument_columns):
        add(column, ~np.isfinite(instrument[:, j]))
    numeric_values = {
        column: numeric_column(column, dataset[column], where=f" of the {split} split") for column in args.numeric_confounders
    }
    confounders = invalid_confounder_rows(dataset, numeric_values, args.categorical_confounders, args.timestamp_confounders)
    for column, mask in confounders.items():
        add(column, mask)
    if args.group_column is not None:  # a missing group id would put unrelated rows into one group (and one cluster)
        add(args.group_column, np.array([is_missing(value) for value in dataset[args.group_column]], dtype=bool))
    return problems


def read_observations(splits: Mapping[str, datasets.Dataset], args: Any) -> dict[str, Observations]:
    """Observations of each split, checked; C is built over all splits together, so columns and trend agree, with the
    levels of the first split (the training rows): a level only the other splits hold counts as the reference level.

    A row with no text or a missing / non-finite outcome, instrument or confounder is an error that counts such rows
    per column, or, with ``drop_invalid``, is dropped and counted.
    """
    confounder_columns = (*args.numeric_confounders, *args.categorical_confounders, *args.timestamp_confounders)
    parts = {}
    for split, dataset in splits.items():
        missing = [c for c in (*observation_columns(args), *text_column_sets(args)[0]) if c not in dataset.column_names]
        if missing:
            raise DataError(
                f"The {split} split lacks the columns {missing} named in the config; it has: "
                f"{', '.join(sorted(dataset.column_names))}."
            )
        check_text_types(dataset, args, split)
        where = f" of the {split} split"
        outcome = numeric_column(args.outcome_column, dataset[args.outcome_column], "outcome", where)
        instrument = None
        if args.instrument_columns:
            instrument = np.column_stack(
                [numeric_column(c, dataset[c], "instrument", where) for c in args.instrument_columns]
            )
        problems = _invalid_rows(dataset, args, outcome, instrument, split)
        invalid = np.logical_or.reduce(list(problems.values()))
        if invalid.any() and not args.drop_invalid:
            listed = describe_invalid_columns(problems)
            raise DataError(
                f"{int(invalid.sum())} of {len(dataset)} rows of the {split} split "
                f"{for_count(int(invalid.sum()), 'has', 'have')} a missing or non-finite value "
                f"(NaN/inf/None, or no text) - {listed}. Fix the data, or set `drop_invalid: true` to drop these rows."
            )
        rows = np.flatnonzero(~invalid)
        if not len(rows):
            raise DataError(f"All {len(dataset)} rows of the {split} split have a missing or non-finite value.")
        parts[split] = (
            dataset.select(rows),
            rows,
            outcome[rows],
            None if instrument is None else instrument[rows],
            int(invalid.sum()),
            {column: int(mask.sum()) for column, mask in problems.items() if mask.any()},
        )

    columns = {column: [value for part in parts.values() for value in part[0][column]] for column in confounder_columns}
    confounders, names = build_confounder_matrix(
        columns,
        args.numeric_confounders,
        args.categorical_confounders,
        args.timestamp_confounders,
        args.timestamp_features,
        fit_rows=len(next(iter(parts.values()))[1]),
        min_level_rows=args.min_level_rows,
    )
    observations, start = {}, 0
    for split, (kept, rows, outcome, instrument, dropped, by_column) in parts.items():
        groups = None if args.group_column is None else group_codes(kept[args.group_column], len(kept))
        observations[split] = Observations(
            rows, outcome, confounders[start : start + len(rows)], names, instrument, groups, dropped, by_column
        )
        start += len(rows)
    return observations


def dropped_by_column_entry(observations: Observations) -> dict[str, dict[str, int]]:
    """The report's ``dropped_invalid_by_column`` entry where rows were dropped: {column: rows it made invalid}."""
    return {"dropped_invalid_by_column": observations.dropped_by_column} if observations.dropped else {}
