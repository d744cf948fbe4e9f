"""CLadder (formal causal inference questions) rows -> prompt/completion rows, and their causal variables.

A CLadder JSON row has ``given_info``, ``question``, ``answer`` ("yes"/"no"), ``meta`` (``story_id``,
``graph_id``, ``query_type``, ``rung``, ... and often ``variable_mapping`` such as {"Xname": "husband",
"X1": "alarm set by husband", "X0": ...}) and ``reasoning`` (``step0`` .. ``step5``, ``end``; ``step0``
reads "Let X = husband; V2 = wife; Y = alarm clock."). Copies (e.g. the hub's ``CLADDER_HUB_ID``) may
name columns differently: pass ``columns`` to map them. Nothing here downloads anything.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, DataError
from .rows import Target, check_target, decode_json, read_json_file

CLADDER_HUB_ID = "causalnlp/CLadder"
CLADDER_FIELDS = ("given_info", "question", "answer", "background", "meta", "reasoning")
REQUIRED_FIELDS = ("given_info", "question", "answer")
ANSWER_COMPLETIONS = {"yes": "Yes", "no": "No"}
_ASSIGNMENT = re.compile(r"\s*([A-Za-z]\w*)\s*=\s*(.*?)\s*")
_MAPPING_KEY = re.compile(r"(?P<symbol>[A-Za-z]\w*?)(?:(?P<name>name)|(?P<value>[01]))")
_STEP_KEY = re.compile(r"step(\d+)")


@dataclass(frozen=True)
class CLadderVariable:
    """A causal variable: its symbol in the graph (X, Y, V2), its name, and the phrases of its values."""

    symbol: str
    name: str
    values: tuple[str, ...] = ()


def parse_step0(step0: str) -> dict[str, str]:
    """Variable symbol -> name from ``reasoning.step0``: "Let X = husband; V2 = wife; Y = alarm clock." gives
    {"X": "husband", "V2": "wife", "Y": "alarm clock"}."""
    text = re.sub(r"^\s*let\s+", "", step0, flags=re.IGNORECASE).strip().rstrip(".").strip()
    variables = {}
    for part in filter(str.strip, text.split(";")):
        assignment = _ASSIGNMENT.fullmatch(part)
        if assignment is None or not assignment.group(2):
            raise DataError(
                f"Cannot read the variable assignment {part.strip()!r} in step0 {step0!r}; expected 'Let X = name; "
                "Y = name.'."
            )
        variables[assignment.group(1)] = assignment.group(2)
    return variables


def _as_dict(value: Any, what: str) -> dict[str, Any]:
    """``value`` as a dict: a mapping as is, a JSON object string decoded, None as empty."""
    value = decode_json(value, what)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise DataError(f"{what} must be a dict (or a JSON object string), not {type(value).__name__}.")
    return dict(value)


def cladder_variables(
    row: Mapping[str, Any], *, reasoning_column: str = "reasoning", meta_column: str = "meta"
) -> list[CLadderVariable]:
    """The row's causal variables: names from ``reasoning.step0`` and from ``meta.variable_mapping``
    ("<symbol>name" keys), value phrases from the mapping ("<symbol>0" / "<symbol>1"); step0 order first. A step0
    that does not parse is an error only when the mapping names no variable either."""
    step0 = _as_dict(row.get(reasoning_column), f"Column {reasoning_column!r}").get("step0")
    if step0 is not None and not isinstance(step0, str):
        raise DataError(f"{reasoning_column}.step0 must be text such as 'Let X = husband; Y = alarm.', not {step0!r}.")
    unparsed = None  # a step0 that does not parse is fine while meta.variable_mapping names the variables
    try:
        names = parse_step0(step0) if step0 else {}
    except DataError as error:
        names, unparsed = {}, error
    meta = _as_dict(row.get(meta_column), f"Column {meta_column!r}")
    mapping = _as_dict(meta.get("variable_mapping"), f"{meta_column}.variable_mapping")
    values: dict[str, list[str]] = {}
    for key, phrase in mapping.items():
        parsed = _MAPPING_KEY.fullmatch(key)
        if parsed is None or phrase is None:
            continue
        symbol = parsed.group("symbol")
        if parsed.group("name"):
            names.setdefault(symbol, str(phrase))
        else:
            values.setdefault(symbol, []).append(str(phrase))
    if not names and unparsed is not None:
        raise unparsed
    if not names:
        raise DataError(
            f"The row names no causal variable: it needs {reasoning_column!r}.step0 ('Let X = ...; Y = ...') or "
            f"{meta_column!r}.variable_mapping ({{'Xname': ...}}). It has: {', '.join(sorted(row))}."
        )
    return [CLadderVariable(symbol, name, tuple(values.get(symbol, ()))) for symbol, name in names.items()]


def _resolve_columns(columns: Mapping[str, str] | None) -> dict[str, str]:
    resolved = {name: name for name in CLADDER_FIELDS}
    unknown = sorted(set(columns or {}) - set(CLADDER_FIELDS))
    if unknown:
        raise ConfigError(f"Unknown CLadder fields {unknown} in columns; map any of {', '.join(CLADDER_FIELDS)}.")
    resolved.update(columns or {})
    return resolved


def _reasoning_text(reasoning: Mapping[str, Any]) -> str:
    """``step0`` .. ``stepN`` in numeric order, then ``end``, one per line (null steps skipped)."""
    steps = sorted((int(m.group(1)), key) for key in reasoning if (m := _STEP_KEY.fullmatch(key)))
    lines = [str(reasoning[key]) for _, key in steps if reasoning[key] is not None]
    if reasoning.get("end") is not None:
        lines.append(str(reasoning["end"]))
    return "\n".join(lines)


def convert_cladder_rows(
    rows: Iterable[Mapping[str, Any]], target: Target = "answer", columns: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """CLadder rows -> {prompt, completion, answer, meta, reasoning}.

    prompt = background (row or meta), given_info and question, one per line; completion = "Yes"/"No"
    (``target="answer"``) or the reasoning steps then "Answer: Yes" (``target="reasoning"``). ``meta`` and
    ``reasoning`` are kept (as dicts) for the ``cladder`` event estimator. ``columns`` maps CLadder field ->
    the row's column name. A missing field or an answer other than yes/no raises ``DataError`` naming the
    row index and the field.
    """
    check_target(target)
    column = _resolve_columns(columns)
    converted = []
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise DataError(f"CLadder row {index} is {type(row).__name__} {row!r}, not an object of fields.")
        needed = list(REQUIRED_FIELDS) + (["reasoning"] if target == "reasoning" else [])
        for name in needed:
            if row.get(column[name]) in (None, ""):
                raise DataError(
                    f"CLadder row {index} lacks the field {name!r} (column {column[name]!r}); it has: "
                    f"{', '.join(sorted(row))}. Map the field with columns={{{name!r}: '<column>'}}."
                )
        answer = str(row[column["answer"]]).strip().lower()
        if answer not in ANSWER_COMPLETIONS:
            raise DataError(f"CLadder row {index} has answer {row[column['answer']]!r}; expected 'yes' or 'no'.")
        meta = _as_dict(row.get(column["meta"]), f"CLadder row {index}: field 'meta'")
        reasoning = _as_dict(row.get(column["reasoning"]), f"CLadder row {index}: field 'reasoning'")
        background = row.get(column["background"]) or meta.get("background")
        parts = (background, row[column["given_info"]], row[column["question"]])
        prompt = "\n".join(str(part).strip() for part in parts if part)
        completion = ANSWER_COMPLETIONS[answer]
        if target == "reasoning":
            completion = f"{_reasoning_text(reasoning)}\nAnswer: {completion}"
        converted.append(
            {"prompt": prompt, "completion": completion, "answer": answer, "meta": meta, "reasoning": reasoning}
        )
    return converted


def load_cladder_file(
    path: str | os.PathLike[str], target: Target = "answer", columns: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Convert a CLadder ``.json`` (a list of rows) or ``.jsonl`` file with ``convert_cladder_rows``."""
    rows = read_json_file(path, "CLadder")
    if not isinstance(rows, list):
        raise DataError(f"CLadder file {str(path)!r} must hold a list of rows, not {type(rows).__name__}.")
    return convert_cladder_rows(rows, target, columns)
