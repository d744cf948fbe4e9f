"""TRL SFT rows in CAPT, without torch: a row's prompt and completion (texts or message lists) as the texts the
estimator reads and back, the estimation of a split, and the checks and reports before training."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import DataError, describe_rows, for_count
from ..evaluation import check_part
from .events import EstimatedRows, EventEstimator, EventTemplate, TemplateError, estimate_rows
from .intervention import InterventionResult, PoolExhaustedError, RowInterventions
from .rows import MESSAGE_SEPARATOR

if TYPE_CHECKING:
    import datasets

    from ..evaluation import Prompt

logger = logging.getLogger(__name__)


def split_row(row: dict[str, Any], text_field: str = "text") -> tuple[Prompt, Prompt | None]:
    """(prompt, completion) of a TRL SFT row: ``prompt``/``completion`` (texts or message lists); ``messages``
    (the messages before the last one, and the last one, which must be the assistant's); or ``text_field``
    (completion None: the loss covers the whole text)."""
    if row.get("prompt") is not None:
        prompt, completion = row["prompt"], row.get("completion")
        if "completion" in row and completion is None:
            raise DataError("its 'completion' is empty (null): give every prompt its completion, or drop the row.")
        check_part(prompt, "'prompt'")
        if isinstance(prompt, list) and not prompt:
            raise DataError("its 'prompt' is an empty list of messages: capt estimates the events from the prompt.")
        if completion is not None:
            check_part(completion, "'completion'")
            if isinstance(prompt, str) != isinstance(completion, str):
                kinds = ["text" if isinstance(part, str) else "a list of messages" for part in (prompt, completion)]
                raise DataError(
                    f"its 'prompt' is {kinds[0]} and its 'completion' {kinds[1]}: give both as text, or both as "
                    "messages (the completion as [{'role': 'assistant', 'content': ...}])."
                )
        return prompt, completion
    if row.get("messages") is not None:
        messages = row["messages"]
        if not messages or messages[-1].get("role") != "assistant":
            raise DataError(
                "A `messages` row must end with an assistant message (the completion); this one ends with "
                f"{messages[-1].get('role') if messages else 'nothing'!r}."
            )
        if len(messages) == 1:
            raise DataError(
                "its `messages` hold only the assistant's answer: capt estimates the events from the turns before it "
                "(the prompt). Add the user's turn, or drop the row."
            )
        return messages[:-1], messages[-1:]
    if row.get(text_field) is not None:
        return row[text_field], None
    raise DataError(
        f"The row has none of prompt+completion, messages or {text_field!r}; it has: {', '.join(sorted(row))}."
    )


def part_text(part: Prompt) -> str:
    """A prompt or completion as one text: a message list's contents joined by ``MESSAGE_SEPARATOR``."""
    if isinstance(part, str):
        return part
    check_part(part)
    contents = [message.get("content") for message in part]
    other = next((index for index, content in enumerate(contents) if not isinstance(content, str)), None)
    if other is not None:
        raise DataError(
            f"The capt trainer reads messages whose content is text; message {other} ({part[other].get('role')!r}) of "
            f"this row has {type(contents[other]).__name__} content (e.g. a tool call or an image): give it text, or "
            "drop the row."
        )
    return MESSAGE_SEPARATOR.join(contents)


def with_text(part: Prompt, text: str) -> Prompt:
    """``part`` with its text replaced by ``text`` (the inverse of ``part_text``)."""
    if isinstance(part, str):
        return text
    contents = text.split(MESSAGE_SEPARATOR)
    if len(contents) != len(part):
        raise DataError(
            f"A rendered template has {len(contents)} message parts for {len(part)} messages: the event estimator must "
            "keep the separator between messages (and no message may contain it)."
        )
    return [{**message, "content": content} for message, content in zip(part, contents)]


def estimate_dataset(
    estimator: EventEstimator,
    rows: datasets.Dataset,
    *,
    on_no_events: str = "keep",
    text_field: str = "text",
    desc: str = "Estimating events",
    disable_progress: bool = False,
    require_events: bool = False,
) -> EstimatedRows:
    """Estimate every row once: prompt and completion texts (message contents joined) into one template
    (``estimate_rows``; ``require_events`` for training rows). The progress bar counts the rows estimated."""
    from tqdm.auto import tqdm

    roles = []  # per row, the roles of its prompt and completion messages (None for text), for check_message_parts

    def texts():
        for index, row in enumerate(rows):
            try:
                prompt, completion = split_row(row, text_field)
                roles.append((message_roles(prompt), message_roles(completion)))
                completion_text = None if completion is None else part_text(completion)
                yield {**row, "prompt": part_text(prompt), "completion": completion_text}
            except DataError as error:
                raise DataError(f"Row {index}: {error}") from error

    with tqdm(total=len(rows), desc=desc, disable=disable_progress) as bar:
        estimated = estimate_rows(
            estimator, texts(), on_no_events=on_no_events, require_events=require_events, progress=bar.update
        )
    for position, (template, row_index) in enumerate(zip(estimated.templates, estimated.row_indices)):
        check_message_parts(template, roles[row_index], row_index, estimator.name)
        if roles[row_index][1] is not None:  # a chat answer is a message of its own, not the prompt's next words
            estimated.templates[position] = dataclasses.replace(template, completion_is_message=True)
    return estimated


def estimation_report(
    args,
    no_events: Sequence[int],
    rows: int,
    pool: str,
    who: str = "trl-causal capt",
    hint: str = "",
    failed: Sequence[int] = (),
) -> tuple[str, str | None]:
    """The line that sums up the estimation of the training rows under ``args`` (a ``CAPTConfig``), and the warning
    about rows without events (None when every row has some); ``failed``: those of them the estimator failed on;
    ``hint`` adds a cause to check."""
    fate = "dropped" if args.on_no_events == "drop" else "kept unchanged"
    failures = f", {len(failed)} of them because the estimator failed" if failed else ""
    summary = (
        f"{who}: events estimated with {args.event_estimator!r} on {rows} training rows, {len(no_events)} without "
        f"events ({fate}{failures}); symbol pool {pool!r}, intervention seed {args.intervention_seed_value}."
    )
    if not no_events:
        return summary, None
    return summary, (
        f"{who}: {len(no_events)} of {rows} training rows {for_count(len(no_events), 'has', 'have')} no event that the "
        f"{args.event_estimator!r} estimator recognises, or gave no valid template for ({describe_rows(no_events)}); they are {fate}. Check event_estimator and "
        f"event_estimator_kwargs (the llm estimator logs each row it failed on){hint}."
    )


def evaluation_policy(on_no_events: str) -> str:
    """``on_no_events`` for evaluation rows, which are never dropped (every row is scored, as plain SFT scores it):
    ``drop`` keeps them unchanged; ``error`` still fails."""
    return "error" if on_no_events == "error" else "keep"


def multi_turn_rows(rows: datasets.Dataset, text_field: str = "text") -> list[int]:
    """The indices of the rows whose prompt (``split_row``) holds an assistant message: conversations of several
    turns, of which capt trains the last answer."""
    return [
        index for index, row in enumerate(rows) if "assistant" in (message_roles(split_row(row, text_field)[0]) or ())
    ]


def message_roles(part: Prompt | None) -> tuple[str, ...] | None:
    """The roles of a message list's messages; None for text."""
    return tuple(str(message.get("role")) for message in part) if isinstance(part, list) else None


def check_message_parts(template: EventTemplate, roles: tuple[tuple[str, ...] | None, ...], row_index: int, estimator: str) -> None:
    """A template of a conversational prompt or completion (``roles``: its messages' roles, None for text) must hold
    one part per message (joined by ``MESSAGE_SEPARATOR``), or rendering it back into the messages fails
    mid-training; fail now, naming the row."""
    for part_roles, text, what in zip(roles, (template.prompt, template.completion), ("prompt", "completion")):
        if part_roles is not None and text is not None and text.count(MESSAGE_SEPARATOR) != len(part_roles) - 1:
            raise TemplateError(
                f"Row {row_index}: the {estimator!r} estimator's template of the {what} has "
                f"{text.count(MESSAGE_SEPARATOR) + 1} part(s) for its {len(part_roles)} messages ({', '.join(part_roles)}). "
                f"A template of message rows holds one part per message content, joined by {MESSAGE_SEPARATOR!r}."
            )


def check_interventions(
    interventions: RowInterventions, row_indices: Sequence[int], progress: bool = False, split: str = "training"
) -> list[InterventionResult]:
    """Every row with the symbols of draw 0, so that a row the symbol pool cannot serve fails now, naming the row, not
    in the middle of training. (A list pool's usable symbols do not depend on the draw, so one draw tells.)"""
    from tqdm.auto import tqdm

    results = []
    rows = tqdm(row_indices, desc=f"Checking the symbol pool on the {split} rows", disable=not progress)
    for index, row_index in enumerate(rows):
        try:
            results.append(interventions.intervene(index, 0))
        except PoolExhaustedError as error:
            raise PoolExhaustedError(f"Row {row_index}: {error}") from error
    return results


def report_cut_completions(cut: Sequence[int], total: int, setting: str, fix: str, warn: bool = True) -> None:
    """Rows ``cut`` (of ``total`` training rows) keep no completion token under ``setting``: an error when that is
    every row, else (``warn``) a warning with their count and ``fix``."""
    if not cut:
        return
    if len(cut) == total:
        raise DataError(f"{setting} cuts the completion of every training row off, so nothing would train: {fix}.")
    if not warn:
        return
    logger.warning(
        f"{setting} cuts the completion of {len(cut)} of {total} training rows off ({describe_rows(cut)}); they train "
        f"nothing: {fix}."
    )
