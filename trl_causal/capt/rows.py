"""Helpers shared by the data converters and estimators: the completion target, the message separator, JSON values
and row files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError, DataError

Target = Literal["answer", "reasoning"]
TARGETS: tuple[str, ...] = ("answer", "reasoning")

# The character that marks where one message of a conversation ends and the next begins (ASCII record separator).
MESSAGE_BOUNDARY = "\x1e"
# Joins the contents of a message list into one text for estimation; splits the rendered text back.
MESSAGE_SEPARATOR = f"\n{MESSAGE_BOUNDARY}\n"


def check_target(target: str) -> None:
    """``target`` must be "answer" (answer-only completion) or "reasoning" (the chain, then the answer)."""
    if target not in TARGETS:
        raise ConfigError(f"target is {target!r}; use 'answer' (answer only) or 'reasoning' (chain, then answer).")


def read_json_file(path: str | os.PathLike[str], what: str) -> Any:
    """The content of a ``.json`` file, or the list of rows of a ``.jsonl`` file (one JSON object per line)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"{what} file {str(path)!r} does not exist (resolved to {file.resolve()}).")
    text = file.read_text(encoding="utf-8")
    if file.suffix != ".jsonl":
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"{what} file {str(path)!r} is not valid JSON: {error}.") from error
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise DataError(f"{what} file {str(path)!r}, line {number}, is not valid JSON: {error.msg} (column {error.colno}).") from error
    return rows


def decode_json(value: Any, what: str) -> Any:
    """``value`` decoded if it is a JSON string (datasets often store dicts that way), else unchanged."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise DataError(f"{what} is a string but not valid JSON ({error}): {value[:200]!r}.") from error
