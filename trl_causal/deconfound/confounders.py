"""Turning confounder columns (numeric, categorical, timestamps) into a numeric matrix C [n, k]."""

from __future__ import annotations

import math
import numbers
import re
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Literal, overload

import numpy as np

from ..errors import DataError, describe_rows, for_count

TIMESTAMP_FEATURES = ("weekday", "month", "trend")
WEEKDAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
SECONDS_PER_DAY = 86_400.0
MIN_LEVEL_ROWS = 5  # levels of fewer training rows are pooled into one (``min_level_rows``)
POOLED_LEVEL = "(other)"  # the name of the pooled level: x=(other)
_POOLED = object()  # its code, which no value of a column can equal
EPOCH_SECONDS = re.compile(r"[+-]?\d{9,10}(\.\d*)?")  # epoch seconds as text, 1973-2286: 8 digits are a date (20240506), 12 a minute
# calendar feature -> (level code of a datetime, level names)
CALENDAR_FEATURES = {
    "weekday": (datetime.weekday, dict(enumerate(WEEKDAY_NAMES))),
    "month": (lambda moment: moment.month, dict(enumerate(MONTH_NAMES, start=1))),
}


def describe_invalid_columns(masks: Mapping[str, np.ndarray]) -> str:
    """"'a': 2 (rows [1, 4]); 'b': 1 (rows [7])" for the columns whose row mask has any True."""
    return "; ".join(
        f"{name!r}: {int(mask.sum())} ({describe_rows(np.flatnonzero(mask))})" for name, mask in masks.items() if mask.any()
    )


def is_missing(value: Any) -> bool:
    """None, NaN, inf, NaT, pandas' NA or a blank string (a CSV's or spreadsheet's empty cell)."""
    if isinstance(value, str):
        return not value.strip()
    if type(value).__name__ == "NAType":  # pandas.NA, of nullable dtypes ("Int64", "string"), which refuses bool()
        return True
    if isinstance(value, np.datetime64):
        return bool(np.isnat(value))
    if isinstance(value, datetime) and value != value:  # pandas' NaT, a datetime that equals nothing
        return True
    return value is None or (isinstance(value, numbers.Real) and not math.isfinite(value))


def plain_number(value: Any) -> Any:
    """A whole-number int or float, Python's or numpy's, as a Python int (an int column with an empty cell reads as
    floats: 16.0 is 16); anything else as it is."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    return value


def level_text(value: Any) -> str:
    """A categorical level as text, so that one value reads the same from every file (``plain_number``: 16.0 is the
    level "16")."""
    return str(plain_number(value))


def _sorted_levels(values: Sequence[Any]) -> list[Any]:
    """The distinct values, numbers (also written as text) in numeric order first, then the rest as text."""

    def key(value: Any) -> tuple:
        try:
            return (0, float(value), str(value))
        except (TypeError, ValueError):
            return (1, 0.0, str(value))

    return sorted(set(values), key=key)


# Words that mean "missing" in a numeric cell: pandas' defaults (which also read "nan", "-nan", "#NA" as NaN, as
# float() does) and their lowercase forms
MISSING_WORDS = frozenset({"", "NA", "N/A", "n/a", "na", "#N/A", "<NA>", "NULL", "null", "None", "none"})


def parse_numbers(values: Sequence[Any]) -> tuple[np.ndarray, list[int]]:
    """Floats of ``values`` (None, a blank text and the words of ``MISSING_WORDS`` -> NaN; NaN and inf, also written
    as strings such as "NaN", stay NaN / inf, to be counted as invalid) and the rows whose value is not a number."""
    out = np.full(len(values), np.nan)
    bad_rows = []
    for row, value in enumerate(values):
        if is_missing(value) and not isinstance(value, numbers.Real) or isinstance(value, str) and value.strip() in MISSING_WORDS:
            continue
        try:
            out[row] = float(value)
        except (TypeError, ValueError):
            bad_rows.append(row)
    return out, bad_rows


def numeric_column(name: str, values: Sequence[Any], what: str = "numeric confounder", where: str = "") -> np.ndarray:
    """Floats of a column (``parse_numbers``: a missing value -> NaN); a non-numeric value is an error naming the rows.
    ``what``: the column's role, ``where``: the rows' place (" of the train split"), both for the message."""
    out, bad_rows = parse_numbers(values)
    if bad_rows:
        raise DataError(
            f"The {what} column {name!r}{where} must be numeric; it has non-numbers at {describe_rows(bad_rows)} (e.g. "
            f"row {bad_rows[0]}: {values[bad_rows[0]]!r}). Convert them to numbers; a missing value may be left empty or "
            "written NA, and is then counted as missing (`drop_invalid`)"
            + (", or make it a categorical confounder (`categorical_confounders`)." if what == "numeric confounder" else ".")
        )
    return out


def invalid_confounder_rows(
    columns: Mapping[str, Sequence[Any]],
    numeric_values: Mapping[str, np.ndarray],
    categorical: Sequence[str],
    timestamps: Sequence[str],
) -> dict[str, np.ndarray]:
    """Confounder column -> mask of its rows with a missing or non-finite value: NaN / inf of the parsed numeric columns
    ``numeric_values`` (``numeric_column``), an ``is_missing`` value of the categorical and timestamp ``columns``."""
    masks = {name: ~np.isfinite(values) for name, values in numeric_values.items()}
    for name in (*categorical, *timestamps):
        masks[name] = np.array([is_missing(value) for value in columns[name]], dtype=bool)
    return masks


def _parse_timestamp(value: Any) -> datetime:
    """A datetime from an ISO string (a trailing " UTC" too), a datetime/date, a numpy datetime64, or epoch seconds
    (a number, or digits as text); one with a UTC offset is converted to UTC, so that its weekday and month are
    those of the same moment written as epoch seconds. A naive one is taken as written (and as UTC for the trend)."""
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc) if value.tzinfo else value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, np.datetime64):
        return _parse_timestamp(value.astype("datetime64[us]").item())
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    if isinstance(value, str):
        text = value.strip()
        if EPOCH_SECONDS.fullmatch(text):
            return _parse_timestamp(float(text))
        return _parse_timestamp(datetime.fromisoformat(text.removesuffix(" UTC") + ("+00:00" if text.endswith(" UTC") else "")))
    raise TypeError(f"unsupported timestamp type {type(value).__name__}")


def _timestamp_column(name: str, values: Sequence[Any]) -> list[datetime | None]:
    parsed: list[datetime | None] = []
    bad_rows = []
    for row, value in enumerate(values):
        if is_missing(value):
            parsed.append(None)
            continue
        try:
            parsed.append(_parse_timestamp(value))
        except (TypeError, ValueError, OverflowError, OSError):
            parsed.append(None)
            bad_rows.append(row)
    if bad_rows:
        example = values[bad_rows[0]]
        raise DataError(
            f"Timestamp confounder column {name!r} has values that are not timestamps at {describe_rows(bad_rows)} "
            f"(e.g. {example!r}). Use ISO 8601 strings ('2024-05-06T09:30:00', '2024-05-06T09:30:00-05:00'), datetimes or "
            "epoch seconds (divide epoch milliseconds by 1000)."
        )
    return parsed


def _epoch_seconds(moment: datetime) -> float:
    """Seconds since the epoch; naive datetimes are read as UTC."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


@dataclass
class _Levels:
    """The one-hot levels of a block, from its fit rows: ``order`` (the reference first), the ``rare`` values (held by
    fewer than ``min_level_rows`` fit rows each), the level they count as (``pooled_into``: ``_POOLED``, a rare value
    kept alone, the reference, or None where nothing is pooled) and the names of all (``names``, with ``_POOLED``'s)."""

    order: list[Any]
    rare: set[Any]
    pooled_into: Any
    names: dict[Any, str]

    def code(self, code: Any) -> Any:
        """The level a row's value counts as (an unknown one, as any value outside ``order``, is the reference)."""
        return self.pooled_into if self.pooled_into is not None and code in self.rare else code

    def note(self, subject: str, min_rows: int, column: str) -> str | None:
        """The warning about the rare values (``column``: the name the one-hot columns start with), or None."""
        if not self.rare:
            return None
        many = len(self.rare) > 1
        listed = ", ".join(repr(self.names[code]) for code in _sorted_levels(self.rare)[:5]) + (", ..." if len(self.rare) > 5 else "")
        held = f"{f'{len(self.rare)} values' if many else 'a value'} held by fewer than {min_rows} training rows{' each' if many else ''} ({listed})"
        if self.pooled_into is None:
            what = f"{subject}: every value is rare, {held}: each one's effect is mostly its rows' noise"
        elif self.pooled_into is _POOLED:
            what = f"{subject}: {held} are pooled into one level {column}={self.names[_POOLED]}: a value's effect over a few rows is mostly their noise"
        elif self.pooled_into in self.rare:
            what = f"{subject}: {held} is kept as a level of its own, the only one beside {self.names[self.order[0]]!r}: its effect is mostly its rows' noise"
        else:
            what = (f"{subject}: {held} {'are' if many else 'is'} counted as the reference level {self.names[self.order[0]]!r} "
                    f"(together fewer than {min_rows} rows): a value's effect over a few rows is mostly their noise")
        return what + ", with a standard error that understates it. `min_level_rows` sets the threshold (1 keeps every value)."


def _fit_levels(fit_codes: Sequence[Any], min_rows: int, level_names: Mapping[Any, str]) -> _Levels:
    """The levels of the fit rows: values of ``min_rows`` fit rows or more each are levels of their own; the rarer
    ones form one more level (``(other)``; a single one keeps its name) where together they hold ``min_rows`` rows or
    the block would have no other level, else they count as the reference. Where every value is rare, nothing is
    pooled (``note`` warns)."""
    counts = Counter(fit_codes)
    rare = {code for code, count in counts.items() if count < min_rows}
    frequent = _sorted_levels([code for code in counts if code not in rare])
    names = dict(level_names)
    pooled_name = POOLED_LEVEL
    while pooled_name in {names[code] for code in counts}:  # a value of the data already has that name
        pooled_name = f"({pooled_name})"
    names[_POOLED] = pooled_name
    if not rare or not frequent:
        return _Levels(_sorted_levels(list(counts)), rare, None, names)
    if sum(counts[code] for code in rare) >= min_rows or len(frequent) == 1:
        alone = next(iter(rare)) if len(rare) == 1 else _POOLED
        return _Levels(frequent + [alone], rare, alone, names)
    return _Levels(frequent, rare, frequent[0], names)


def _one_hot(
    name: str,
    codes: Sequence[Any],
    level_names: Mapping[Any, str],
    subject: str,
    fix: str,
    fit: np.ndarray,
    min_rows: int,
) -> tuple[np.ndarray, list[str]]:
    """One-hot columns of the levels present in the ``fit`` rows but the first (the reference level, absorbed by the
    intercept). Values of fewer than ``min_rows`` fit rows are pooled (``_fit_levels``), with a warning: the theta of
    a level of one row absorbs that row's outcome, with a standard error near 0. A value seen only outside the ``fit``
    rows counts as the reference level, with a warning."""
    levels = _fit_levels([code for code, in_fit in zip(codes, fit) if in_fit], min_rows, level_names)
    if note := levels.note(subject, min_rows, name):
        warnings.warn(note, stacklevel=4)
    level_names = levels.names
    known = set(levels.order) | levels.rare
    unseen = sorted({level_names[code] for code in codes if code not in known})
    if unseen:
        warnings.warn(
            f"{subject} has values that only rows outside the training rows hold ({', '.join(map(repr, unseen))}); "
            f"their rows count as the reference level {level_names[levels.order[0]]!r}.",
            stacklevel=4,
        )
    if len(levels.order) < 2:
        raise DataError(
            f"{subject} has a single value ({level_names[levels.order[0]]!r}) in all used rows, "
            f"so it has no variance and its effect cannot be estimated; {fix}."
        )
    index = {level: position for position, level in enumerate(levels.order)}
    positions = np.fromiter((index.get(levels.code(code), 0) for code in codes), dtype=int, count=len(codes))
    matrix = (positions[:, None] == np.arange(1, len(levels.order))[None, :]).astype(float)
    return matrix, [f"{name}={level_names[level]}" for level in levels.order[1:]]


def _timestamp_features(
    name: str, moments: Sequence[datetime], features: Sequence[str], fit: np.ndarray, min_rows: int
) -> tuple[list[np.ndarray], list[str]]:
    """Weekday one-hot (Mon..Sun), month one-hot (Jan..Dec), trend = days since the earliest row."""
    blocks, names = [], []
    for feature in features:
        if feature == "trend":
            seconds = np.array([_epoch_seconds(moment) for moment in moments])
            block, block_names = ((seconds - seconds.min()) / SECONDS_PER_DAY)[:, None], [f"{name}_trend_days"]
        else:
            code_of, level_names = CALENDAR_FEATURES[feature]
            codes = [code_of(moment) for moment in moments]
            subject = f"The {feature!r} feature of timestamp column {name!r}"
            block, block_names = _one_hot(name, codes, level_names, subject, "remove it from `timestamp_features`", fit, min_rows)
        blocks.append(block)
        names.extend(block_names)
    return blocks, names


def one_hot_levels(
    columns: Mapping[str, Sequence[Any]],
    categorical: Sequence[str] = (),
    timestamps: Sequence[str] = (),
    timestamp_features: Sequence[str] = TIMESTAMP_FEATURES,
    min_level_rows: int = MIN_LEVEL_ROWS,
) -> dict[str, dict[str, Any]]:
    """For each one-hot block of ``build_confounder_matrix`` over the rows given (the training rows): ``reference``,
    the level it leaves out, absorbed by the intercept, which the theta of every other level of the block is measured
    from; ``pooled``, the rare values it pools, and ``pooled_into``, the level they count as: ``(other)`` or the
    reference. {"device": {"reference": "desktop", "pooled": []}, "ts weekday": {"reference": "Mon", ...}, "ts month":
    ...}; missing values are passed over."""
    blocks = {name: ([level_text(v) for v in columns[name] if not is_missing(v)], None) for name in categorical}
    for name in timestamps:
        moments = [moment for moment in _timestamp_column(name, columns[name]) if moment is not None]
        for feature in timestamp_features:
            if feature in CALENDAR_FEATURES:
                code_of, level_names = CALENDAR_FEATURES[feature]
                blocks[f"{name} {feature}"] = ([code_of(moment) for moment in moments], level_names)
    summary = {}
    for block, (codes, level_names) in blocks.items():
        levels = _fit_levels(codes, min_level_rows, level_names or {code: code for code in codes})
        summary[block] = {
            "reference": levels.names[levels.order[0]],
            "pooled": [levels.names[code] for code in _sorted_levels(levels.rare)] if levels.pooled_into is not None else [],
            **({"pooled_into": levels.names[levels.pooled_into]} if levels.pooled_into is not None else {}),
        }
    return summary


@overload
def build_confounder_matrix(
    columns: Mapping[str, Sequence[Any]],
    numeric: Sequence[str] = ...,
    categorical: Sequence[str] = ...,
    timestamps: Sequence[str] = ...,
    timestamp_features: Sequence[str] = ...,
    drop_invalid: Literal[False] = ...,
    fit_rows: int | None = ...,
    min_level_rows: int = ...,
) -> tuple[np.ndarray, list[str]]: ...


@overload
def build_confounder_matrix(
    columns: Mapping[str, Sequence[Any]],
    numeric: Sequence[str] = ...,
    categorical: Sequence[str] = ...,
    timestamps: Sequence[str] = ...,
    timestamp_features: Sequence[str] = ...,
    *,
    drop_invalid: Literal[True],
    fit_rows: int | None = ...,
    min_level_rows: int = ...,
) -> tuple[np.ndarray, list[str], np.ndarray, int]: ...


def build_confounder_matrix(
    columns: Mapping[str, Sequence[Any]],
    numeric: Sequence[str] = (),
    categorical: Sequence[str] = (),
    timestamps: Sequence[str] = (),
    timestamp_features: Sequence[str] = TIMESTAMP_FEATURES,
    drop_invalid: bool = False,
    fit_rows: int | None = None,
    min_level_rows: int = MIN_LEVEL_ROWS,
) -> tuple[np.ndarray, list[str]] | tuple[np.ndarray, list[str], np.ndarray, int]:
    """The confounder matrix C [n, k] and its column names, built from named data columns.

    - numeric column ``x``: one float column ``x``;
    - categorical column ``x`` with levels l0 < l1 < ...: one-hot columns ``x=l1``, ``x=l2``, ... (l0 dropped,
      since sum_l 1[x=l] = 1 is collinear with the intercept); a whole-number float is the level of its integer
      (16.0 is "16"); the values of fewer than ``min_level_rows`` fit rows each are pooled (with a warning) into
      one level ``x=(other)``, the last, or, where together they hold fewer rows than that, into the reference level;
      but where the reference is the only value of ``min_level_rows`` fit rows or more, they form the last level
      however few (``x=(other)``, or a single one under its own name), and where every value is rare none is pooled;
    - timestamp column ``t`` (ISO string, datetime or epoch seconds; weekday and month in UTC where the timestamp
      has an offset, else as written): for each of ``timestamp_features``,
      ``weekday`` -> one-hot ``t=Tue`` ..., ``month`` -> one-hot ``t=Feb`` ..., ``trend`` -> ``t_trend_days``
      (days since the earliest row).

    A row with a missing or non-finite value (None, NaN, inf) in any confounder column is invalid. By default
    invalid rows raise a ``DataError`` that counts them per column. With ``drop_invalid=True`` they are dropped
    instead and the result is ``(C, names, kept_rows, n_dropped)``, ``kept_rows`` a boolean mask over the input
    rows to apply to the outcome and texts as well. A confounder with no variance in the kept rows is an error.

    ``fit_rows``: only the first ``fit_rows`` rows (the training rows, when evaluation rows follow them) define the
    categorical and calendar levels and the reference level; a level the others alone hold counts as the reference
    level (a warning names it). Default: all rows.
    """
    if not isinstance(min_level_rows, numbers.Integral) or isinstance(min_level_rows, bool) or min_level_rows < 1:
        raise DataError(f"min_level_rows must be a whole number of at least 1 (1 keeps every value); got {min_level_rows!r}.")
    kinds = {"numeric": list(numeric), "categorical": list(categorical), "timestamps": list(timestamps)}
    _check_column_names(columns, kinds, timestamp_features)
    names_in_order = [name for kind in kinds.values() for name in kind]
    n_rows = len(columns[names_in_order[0]])

    numeric_values = {name: numeric_column(name, columns[name]) for name in kinds["numeric"]}
    timestamp_values = {name: _timestamp_column(name, columns[name]) for name in kinds["timestamps"]}
    invalid_by_column = invalid_confounder_rows(columns, numeric_values, kinds["categorical"], kinds["timestamps"])
    invalid = np.zeros(n_rows, dtype=bool)
    for column_invalid in invalid_by_column.values():
        invalid |= column_invalid
    if invalid.any() and not drop_invalid:
        per_column = describe_invalid_columns(invalid_by_column)
        raise DataError(
            f"{int(invalid.sum())} of {n_rows} rows {for_count(int(invalid.sum()), 'has', 'have')} missing or non-finite (None/NaN/inf) confounder values — "
            f"{per_column}. Fix the data, or pass drop_invalid=True to drop these rows (you get the row mask back)."
        )
    kept_rows = ~invalid
    if not kept_rows.any():
        raise DataError(f"All {n_rows} rows have missing or non-finite confounder values; nothing is left.")
    kept_indices = np.flatnonzero(kept_rows)
    fit = kept_indices < (n_rows if fit_rows is None else fit_rows)  # the kept rows that define the levels

    blocks: list[np.ndarray] = []
    confounder_names: list[str] = []
    for name in kinds["numeric"]:
        values = numeric_values[name][kept_rows]
        if np.ptp(values) == 0:
            raise DataError(
                f"Numeric confounder column {name!r} has the same value ({values[0]:g}) in all used rows, so it has "
                "no variance and its effect cannot be estimated; remove it from the confounders."
            )
        blocks.append(values[:, None])
        confounder_names.append(name)
    for name in kinds["categorical"]:
        values = [level_text(columns[name][row]) for row in kept_indices]  # a level is its text: 2 in one file is "2" in another
        block, block_names = _one_hot(
            name,
            values,
            {value: value for value in values},
            f"Categorical confounder column {name!r}",
            "remove it from the confounders",
            fit,
            min_level_rows,
        )
        blocks.append(block)
        confounder_names.extend(block_names)
    for name in kinds["timestamps"]:
        moments = [timestamp_values[name][row] for row in kept_indices]
        if len({_epoch_seconds(moment) for moment in moments}) < 2:
            raise DataError(
                f"Timestamp confounder column {name!r} holds the same moment in all used rows, so it has no "
                "variance; remove it from the confounders."
            )
        time_blocks, time_names = _timestamp_features(name, moments, timestamp_features, fit, min_level_rows)
        blocks.extend(time_blocks)
        confounder_names.extend(time_names)
    matrix = np.hstack(blocks)
    if drop_invalid:
        return matrix, confounder_names, kept_rows, int(invalid.sum())
    return matrix, confounder_names


def _check_column_names(
    columns: Mapping[str, Sequence[Any]], kinds: Mapping[str, list[str]], timestamp_features: Sequence[str]
) -> None:
    names = [name for kind in kinds.values() for name in kind]
    if not names:
        raise DataError(
            "No confounder columns given: name at least one under `numeric`, `categorical` or `timestamps`."
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DataError(f"Confounder columns {repeated} are listed more than once; list each under one kind only.")
    missing = [name for name in names if name not in columns]
    if missing:
        raise DataError(f"Confounder columns {missing} are not in the data; available columns: {sorted(columns)}.")
    lengths = {name: len(columns[name]) for name in names}
    if len(set(lengths.values())) > 1:
        raise DataError(f"Confounder columns have different lengths: {lengths}.")
    unknown = [feature for feature in timestamp_features if feature not in TIMESTAMP_FEATURES]
    if unknown or (kinds["timestamps"] and not timestamp_features):
        raise DataError(
            f"timestamp_features must be a non-empty subset of {list(TIMESTAMP_FEATURES)}; "
            f"got {list(timestamp_features)}."
        )
