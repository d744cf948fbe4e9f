"""Accuracy of a checkpoint on answer-set tasks: score fixed answers by log-likelihood, or generate and parse.

``LMPredictor`` is the plain pipeline (what ``trainer: sft`` gets). Trainers change it by defining
``build_predictor(cls, args, model, tokenizer, answers, mode, checkpoint_dir)``; CAPT, for instance,
rewrites each prompt (event estimation + intervention) in ``prepare_prompts`` before decoding.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, DataError, describe_rows, for_count

if TYPE_CHECKING:
    import torch

Prompt = str | list[dict[str, str]]


def chat_template_kwargs(row: dict[str, Any]) -> dict[str, Any]:
    """What TRL's SFT tokenization hands ``apply_chat_template`` from a row besides its messages: the row's ``tools``
    (a list, or its JSON text) and its ``chat_template_kwargs``."""
    tools = row.get("tools")
    tools = json.loads(tools) if isinstance(tools, str) else tools
    return {**({"tools": tools} if tools is not None else {}), **(row.get("chat_template_kwargs") or {})}


def parse_answer(text: str, answers: Sequence[str]) -> str | None:
    """The answer a generation commits to: the content of the last ``<answer>...</answer>`` if any,
    else the last whole-word occurrence of one of ``answers``; None if neither. Case is ignored, except that outside
    the tags the answers "A" and "I" are taken only as written: the article "a" is not the answer (or CAPT symbol) "A",
    nor the letter "i" the answer "I"."""
    tagged = re.findall(r"<answer>\s*(.*?)\s*</answer>", text, flags=re.IGNORECASE | re.DOTALL)
    if tagged:
        text = tagged[-1]
    # Whole words: no word character on either side (\b would need one at each end of the answer, e.g. not "(A)").
    pattern = r"(?<!\w)(" + "|".join(re.escape(a) for a in sorted(answers, key=len, reverse=True)) + r")(?!\w)"
    found = [word for word in re.findall(pattern, text, flags=re.IGNORECASE) if tagged or word.lower() not in ("a", "i") or word in answers]
    if not found:
        return None
    by_lower = {a.lower(): a for a in answers}
    return by_lower[found[-1].lower()]


def completion_text(completion: str | list[dict[str, Any]]) -> str:
    """The answer text of a completion: the stripped string, or the content of its last message."""
    if isinstance(completion, str):
        return completion.strip()
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict) and isinstance(completion[-1].get("content"), str):
        return completion[-1]["content"].strip()
    if completion is None:
        raise DataError("its completion is empty (null): give every row its answer, or drop the row.")
    raise DataError(
        "its completion must be a text or a list of messages whose last one holds the answer text; it is "
        f"{type(completion).__name__} {str(completion)[:80]!r}."
    )


def answer_prefix(completion: str | list[dict[str, Any]] | None) -> str:
    """What precedes the answer in a completion: the leading whitespace of a string, or of the content of a message
    list's last message (" positive" -> " ")."""
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        completion = completion[-1].get("content")
    return completion[: len(completion) - len(completion.lstrip())] if isinstance(completion, str) else ""


def training_answer_prefix(dataset) -> str | None:
    """What the training rows put before an answer (after a plain-text prompt, or at the start of the assistant
    message): the leading whitespace of the first row's ``completion`` (" positive" -> " "); None for rows without a
    completion (``messages`` rows: predictors read each row's own)."""
    names = dataset.column_names
    if names is not None and "completion" not in names:
        return None
    completion = next(iter(dataset), {}).get("completion")
    return answer_prefix(completion) if isinstance(completion, (str, list)) else None


def row_completion(row: dict[str, Any], prompt_column: str = "prompt") -> str | list[dict[str, Any]] | None:
    """A row's completion: its ``completion``, or in a conversational ``messages`` row the final assistant message
    (the part ``row_prompt`` leaves out); None without one."""
    if row.get("completion") is not None or prompt_column != "prompt" or row.get(prompt_column) is not None:
        return row.get("completion")
    messages = row.get("messages")
    return messages[-1:] if messages and messages[-1].get("role") == "assistant" else None


def check_part(part: Any, what: str = "a prompt or completion") -> None:
    """A prompt or completion is a text or a list of messages (dicts)."""
    if not isinstance(part, str) and not (isinstance(part, list) and all(isinstance(message, dict) for message in part)):
        raise DataError(
            f"{what} must be a text or a list of messages ({{'role': ..., 'content': ...}}); this row has "
            f"{type(part).__name__} {str(part)[:80]!r}."
        )


def row_prompt(row: dict[str, Any], index: int, prompt_column: str = "prompt", where: str = "") -> Prompt:
    """The prompt of one row as the data holds it: its ``prompt_column`` (a text or a list of messages), or, in a
    conversational ``messages`` row, the messages before the final assistant answer (all of them when the last is not
    the assistant's). ``where`` names the rows in the error, e.g. " of split 'test'"."""
    if row.get(prompt_column) is not None:
        check_part(row[prompt_column], f"Row {index}{where}: {prompt_column!r}")
        return row[prompt_column]
    if prompt_column == "prompt" and row.get("messages"):
        messages = row["messages"]
        return messages[:-1] if messages[-1].get("role") == "assistant" else messages
    no_messages = " and no `messages`" if prompt_column == "prompt" else ""
    if prompt_column in row:
        raise DataError(
            f"Row {index}{where} has an empty prompt: its {prompt_column!r} is null{no_messages}. Give every row its "
            "prompt, or drop the row."
        )
    raise DataError(
        f"Row {index}{where} has no prompt column {prompt_column!r}{no_messages}; it has: {', '.join(sorted(row))}. "
        "Name the prompt column with --prompt_column."
    )


_modes_lock = threading.Lock()
_held_modes: dict[int, tuple[int, list[tuple[Any, bool]]]] = {}  # id(module) -> (blocks inside, (submodule, mode) before)


@contextmanager
def eval_mode(*modules):
    """Run the block with ``modules`` in eval mode (no dropout) and give every submodule its own mode back after it.
    Blocks that overlap on a module (predictions from several threads) restore it when the last of them ends."""
    with _modes_lock:
        entering = []  # every mode is read before any module is switched: one may be a submodule of another
        for module in modules:
            inside, modes = _held_modes.get(id(module), (0, []))
            if not inside:
                modes = [(submodule, submodule.training) for submodule in module.modules()]
                entering.append(module)
            _held_modes[id(module)] = (inside + 1, modes)
        for module in entering:
            module.eval()
    try:
        yield
    finally:
        with _modes_lock:
            for module in reversed(modules):
                inside, modes = _held_modes.pop(id(module))
                if inside > 1:
                    _held_modes[id(module)] = (inside - 1, modes)
                    continue
                for submodule, training in modes:  # parents before children: each ends in its own mode
                    submodule.train(training)


class LMPredictor:
    """Predicts one of ``answers`` per row with a causal LM.

    ``mode="score"``: argmax_a sum_t log p(a_t | prompt, a_<t) over the fixed answer set, with the answer tokenized
    as training tokenizes the completion after the prompt (see ``answer_tokens``).
    ``mode="generate"``: greedy decoding, then ``parse_answer``.

    ``answer_prefix``: the text before the answer, between a plain-text prompt and the answer, or at the start of the
    assistant message after a chat prompt. ``None`` (default) reads it per row from the leading whitespace of the
    row's completion (" positive" -> " "; a chat's assistant message, also the last one of a ``messages`` row), i.e.
    from how the data writes the answer for training; rows without one get "".

    A row's ``tools`` / ``chat_template_kwargs`` reach ``prompt_text``, ``score`` and ``generate`` as
    ``template_kwargs``, passed only where some row has them: a subclass that overrides them should accept
    ``template_kwargs=None``.
    """

    def __init__(
        self,
        model,
        tokenizer,
        answers: Sequence[str],
        mode: str = "score",
        batch_size: int = 16,
        max_new_tokens: int = 128,
        prompt_column: str = "prompt",
        answer_prefix: str | None = None,
    ):
        if mode not in ("score", "generate"):
            raise ConfigError(f"Prediction mode {mode!r} is not one of 'score', 'generate'.")
        if isinstance(answers, str):
            raise ConfigError(f"answers is the text {answers!r}: give a list of the answers to choose from, e.g. ['True', 'False'].")
        answers = list(answers)  # a generator is read once
        if not answers:
            raise ConfigError("The answer set is empty: give the answers to choose from (e.g. True, False).")
        if bad := [answer for answer in answers if not isinstance(answer, str) or not answer.strip()]:
            raise ConfigError(f"Every answer must be a non-empty text; the answer set has {bad[0]!r}.")
        if repeated := sorted({answer for answer in answers if answers.count(answer) > 1}):
            raise ConfigError(f"The answer set names {', '.join(map(repr, repeated))} twice: give each answer once.")
        self.model = model
        self.tokenizer = tokenizer
        self.answers = answers
        self.mode = mode
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.prompt_column = prompt_column
        self.answer_prefix = answer_prefix

    def as_rows(self, rows: Iterable[dict[str, Any] | Prompt]) -> list[dict[str, Any]]:
        """Rows as a list of mappings (any iterable of them, read once): a raw prompt (a string, or a list of
        messages) is the row ``{prompt_column: prompt}``. A single row or prompt where the list of them belongs is an
        error (a string would be read letter by letter, a chat's messages as rows)."""
        single = isinstance(rows, (str, dict))
        rows = rows if single else list(rows)
        if single or rows and all(isinstance(row, dict) and "role" in row and self.prompt_column not in row for row in rows):
            raise DataError(
                "Give a list of rows or prompts (one prompt is [prompt]; one chat is [[{'role': ..., 'content': ...}]]), "
                f"not one {type(rows).__name__ if single else 'chat'}."
            )
        return [row if isinstance(row, dict) else {self.prompt_column: row} for row in rows]

    def row_prompts(self, rows: Sequence[dict[str, Any] | Prompt]) -> list[Prompt]:
        """Each row's prompt as the data holds it (``row_prompt``); a raw prompt as it is."""
        return [row_prompt(row, index, self.prompt_column) for index, row in enumerate(self.as_rows(rows))]

    def prepare_prompts(self, rows: Sequence[dict[str, Any]]) -> list[Prompt]:
        """The prompts to decode from; subclasses rewrite them here."""
        return self.row_prompts(rows)

    def prepare(self, rows: Sequence[dict[str, Any]]) -> tuple[list[Prompt], list[list[str]] | None]:
        """The prompts to decode from and, per row, how each of ``answers`` is written after its prompt (None: as
        given). A subclass that rewrites the prompts rewrites the answers with them."""
        return self.prepare_prompts(rows), None

    def answer_prefixes(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        """Per row, the text training puts before the answer: ``answer_prefix`` if set, else the leading whitespace of
        the row's completion ("" without one)."""
        if self.answer_prefix is not None:
            return [self.answer_prefix] * len(rows)
        return [answer_prefix(row_completion(row, self.prompt_column)) for row in self.as_rows(rows)]

    def template_kwargs(self, rows: Sequence[dict[str, Any] | Prompt]) -> list[dict[str, Any]]:
        """Per row, what its chat prompt hands the chat template besides the messages (``chat_template_kwargs``), as
        in training; {} for a raw prompt."""
        return [chat_template_kwargs(row) if isinstance(row, dict) else {} for row in rows]

    def answer_tokens(
        self,
        prompt: Prompt,
        prefix: str = "",
        answers: Sequence[str] | None = None,
        template_kwargs: dict[str, Any] | None = None,
    ) -> list[tuple[list[int], list[int]]]:
        """Per answer, (context ids, answer ids): the answer's tokens in the training sequence of ``completion_tokens``
        and all that precedes them."""
        return [(ids[:start], ids[start:end]) for ids, _, start, end in self.completion_tokens(prompt, prefix, answers, template_kwargs)]

    def completion_tokens(
        self,
        prompt: Prompt,
        prefix: str = "",
        answers: Sequence[str] | None = None,
        template_kwargs: dict[str, Any] | None = None,
    ) -> list[tuple[list[int], int, int, int]]:
        """Per answer, (ids, prompt length, answer start, answer end) as TRL tokenizes the prompt/completion row for
        training: ``ids`` is prompt + completion, tokenized whole (plain text with the tokenizer's special tokens, a
        chat by its template), its completion starts where it and the prompt tokenized alone diverge (the prompt
        length), and the answer is ``ids[answer start:answer end]``.

        The completion is ``prefix + answer`` (an answer that already starts with whitespace is used as is): after a
        plain-text prompt as text, after a chat prompt as the assistant message, rendered with the whole conversation.
        What a chat template writes around the message in the assistant turn is not the answer: what comes before it
        (e.g. an empty ``<think></think>`` block) is context, the end-of-turn after it is not scored.
        ``answers``: how this row writes the answers (default: as given); ``template_kwargs``: the row's tools etc.
        for the chat template."""
        answers = self.answers if answers is None else list(answers)
        chat = not isinstance(prompt, str)
        prompt_text = self.row_prompt_text(prompt, template_kwargs) if chat else prompt

        def tokenize(text: str) -> list[int]:  # a chat template writes its own special tokens
            return self.tokenizer(text, add_special_tokens=not chat)["input_ids"]

        prompt_ids = tokenize(prompt_text)
        if not prompt_ids:
            raise DataError(f"Cannot score answers after an empty prompt ({prompt!r}): give every row its prompt, or drop the row.")
        splits, located = [], []
        for answer in answers:
            completion = answer if answer[:1].isspace() else prefix + answer
            if not chat:
                ids = tokenize(prompt_text + completion)
                start = answer_start = common_prefix_length(prompt_ids, ids)
                answer_end = len(ids)
            else:
                text = self.tokenizer.apply_chat_template(
                    [*prompt, {"role": "assistant", "content": completion}], tokenize=False, **(template_kwargs or {})
                )
                ids = tokenize(text)
                start = common_prefix_length(prompt_ids, ids)
                answer_start, answer_end = start, len(ids)
                after_prompt = len(os.path.commonprefix([prompt_text, text]))
                written = completion if completion in text[after_prompt:] else completion.strip()  # templates may trim
                found = text.rfind(written, after_prompt)  # the assistant message is the last: not the prompt's copy
                located.append(found >= 0)
                if found >= 0:
                    answer_start = max(start, common_prefix_length(tokenize(text[:found]), ids))
                    answer_end = common_prefix_length(tokenize(text[: found + len(written)]), ids)
                    if answer_end <= answer_start:  # the answer's last token merges with what follows it
                        answer_end = len(ids)
            if start == 0 or answer_start >= answer_end:
                raise DataError(
                    f"Cannot score the answer {answer!r}: after the prompt it tokenizes to "
                    + ("no tokens." if start else "tokens that change the prompt's first token.")
                )
            splits.append((ids, start, answer_start, answer_end))
        if not all(located):  # a template that rewrites some answer: every answer is scored with the whole completion
            splits = [(ids, start, start, len(ids)) for ids, start, _, _ in splits]
        return splits

    def prompt_text(self, prompt: Prompt, template_kwargs: dict[str, Any] | None = None) -> str:
        """Conversational prompts go through the chat template with the generation prompt and ``template_kwargs``
        (the row's tools, ...)."""
        if isinstance(prompt, str):
            return prompt
        return self.tokenizer.apply_chat_template(
            prompt, tokenize=False, add_generation_prompt=True, **(template_kwargs or {})
        )

    def row_prompt_text(self, prompt: Prompt, template_kwargs: dict[str, Any] | None) -> str:
        """``prompt_text`` with a row's template settings, called without them where the row has none, so that a
        subclass written against ``prompt_text(prompt)`` keeps working."""
        return self.prompt_text(prompt, template_kwargs) if template_kwargs else self.prompt_text(prompt)

    def check_positions(self, lengths: Sequence[int], what: str) -> None:
        """``DataError`` naming the prompts whose ``lengths`` (in tokens, ``what`` they hold besides the prompt) pass
        the model's positions (``position_limit``): past them a position table fails deep in torch, and a rotary model
        reads positions it never learned."""
        limit = position_limit(self.model)
        if limit is not None and (over := [i for i, length in enumerate(lengths) if length > limit]):
            raise DataError(
                f"{describe_rows(over).capitalize()} {for_count(len(over), 'is', 'are')} longer than the {limit} positions "
                f"the model takes (row {over[0]}: {lengths[over[0]]} tokens {what}). Shorten those prompts, or leave them out."
            )

    def _rows(self, items: Sequence, desc: str):
        """``items`` one by one, with a progress bar where they fill more than one batch (the per-row work before
        the model runs: tokenizing, drawing symbols)."""
        from tqdm.auto import tqdm

        return tqdm(items, desc=desc, disable=len(items) <= self.batch_size, leave=False)

    def _batches(self, items: list, desc: str, min_last: int = 1):
        """``items`` in batches of ``batch_size``, with a progress bar; a last batch of fewer than ``min_last`` items
        joins the one before it."""
        from tqdm.auto import tqdm

        starts = list(range(0, len(items), self.batch_size))
        if len(starts) > 1 and len(items) - starts[-1] < min_last:
            starts.pop()
        ends = starts[1:] + [len(items)]
        for start, end in tqdm(list(zip(starts, ends)), desc=desc, disable=len(starts) < 2, leave=False):
            yield items[start:end]

    def score(
        self,
        prompts: Sequence[Prompt],
        prefixes: Sequence[str] | None = None,
        written: Sequence[Sequence[str]] | None = None,
        template_kwargs: Sequence[dict[str, Any]] | None = None,
    ):
        """Log-likelihood of every answer after every prompt: a [rows, answers] tensor.

        ``prefixes`` (one per prompt, default "") go between a plain-text prompt and the answer (``answer_tokens``);
        ``written`` (one list per prompt, default: the answers as given) is how each prompt's row writes the answers;
        ``template_kwargs`` (one per prompt, default none) what each chat prompt hands the chat template.
        A prompt whose answers are single tokens after one shared context takes one forward; otherwise each
        (prompt, answer) pair takes one.
        """
        prefixes = [""] * len(prompts) if prefixes is None else list(prefixes)
        written = [self.answers] * len(prompts) if written is None else list(written)
        template_kwargs = [{}] * len(prompts) if template_kwargs is None else list(template_kwargs)
        if not len(prefixes) == len(written) == len(template_kwargs) == len(prompts):
            raise DataError(
                f"{len(prefixes)} answer prefixes, {len(written)} answer lists and {len(template_kwargs)} chat "
                f"template settings for {len(prompts)} prompts."
            )
        jobs: list[tuple[list[int], list[tuple[int, list[int]]]]] = []  # (sequence, [(answer start, answer ids)])
        lengths = []
        for prompt, prefix, answers, kwargs in self._rows(list(zip(prompts, prefixes, written, template_kwargs)), "tokenizing"):
            pairs = self.answer_tokens(prompt, prefix, answers, kwargs)
            lengths.append(max(len(ctx) + len(ids) for ctx, ids in pairs))
            context = pairs[0][0]
            if all(len(ids) == 1 and ctx == context for ctx, ids in pairs):
                jobs.append((context, [(len(context), ids) for _, ids in pairs]))
            else:
                jobs += [(ctx + ids, [(len(ctx), ids)]) for ctx, ids in pairs]
        self.check_positions(lengths, "with its longest answer")
        return self._answer_logprobs(jobs, "scoring").view(len(prompts), len(self.answers)).cpu()

    @property
    def pad_token_id(self) -> int:
        """What a batch is padded with: the tokenizer's pad token, else its end-of-sequence token (as training pads a
        batch), else 0."""
        return next((token for token in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id) if token is not None), 0)

    def padded(self, batch: Sequence[Sequence[int]], side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` [rows, longest] of token id lists, on the model's device: each row
        padded with ``pad_token_id`` to the longest, on the right (scoring) or on the left (generation)."""
        import torch

        device = next(self.model.parameters()).device
        length, pad_token_id = max(map(len, batch)), self.pad_token_id

        def pad(values: list[int], filler: int) -> list[int]:
            padding = [filler] * (length - len(values))
            return padding + values if side == "left" else values + padding

        input_ids = torch.tensor([pad(list(ids), pad_token_id) for ids in batch], dtype=torch.long, device=device)
        attention_mask = torch.tensor([pad([1] * len(ids), 0) for ids in batch], dtype=torch.long, device=device)
        return input_ids, attention_mask

    def _answer_logprobs(self, jobs: list[tuple[list[int], list[tuple[int, list[int]]]]], desc: str) -> torch.Tensor:
        """Per job (a token sequence, and answers in it as (start, ids)), per answer, sum_t log p(ids[t] | the
        sequence before start + t): a flat CPU tensor, batched with right padding. Only the answers' positions are
        normalized over the vocabulary; each batch's sums come back as one tensor (no tensor per answer is kept)."""
        import torch

        sums = []
        with eval_mode(self.model), torch.no_grad():
            for batch in self._batches(jobs, desc):
                input_ids, attention_mask = self.padded([sequence for sequence, _ in batch])
                logits = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
                virtual = logits.shape[1] - input_ids.shape[1]  # positions a prompt-tuning adapter puts before the tokens
                batch_sums = []
                for row, (_, answers) in enumerate(batch):
                    # the token at position p is predicted by the logits at position p - 1
                    positions = [virtual + start - 1 + offset for start, ids in answers for offset in range(len(ids))]
                    tokens = torch.tensor([token for _, ids in answers for token in ids], device=logits.device)
                    logprobs = logits[row, positions].float().log_softmax(-1).gather(-1, tokens[:, None]).squeeze(-1)
                    batch_sums += [answer.sum() for answer in logprobs.split([len(ids) for _, ids in answers])]
                sums.append(torch.stack(batch_sums).cpu())
        return torch.cat(sums) if sums else torch.zeros(0)

    def generate(self, prompts: Sequence[Prompt], template_kwargs: Sequence[dict[str, Any]] | None = None) -> list[str]:
        """Greedy continuations (new text only); ``template_kwargs`` as in ``score``."""
        import torch

        template_kwargs = [{}] * len(prompts) if template_kwargs is None else template_kwargs
        if len(template_kwargs) != len(prompts):
            raise DataError(f"{len(template_kwargs)} chat template settings for {len(prompts)} prompts.")
        texts = [self.row_prompt_text(p, kwargs) for p, kwargs in zip(prompts, template_kwargs)]
        # Plain text takes the tokenizer's special tokens (a BOS), as training and score() tokenize it; a chat
        # template writes its own.
        special = all(isinstance(p, str) for p in prompts)
        prompt_ids = [self.tokenizer(text, add_special_tokens=special)["input_ids"] for text in texts]
        self.check_positions([len(ids) + self.max_new_tokens for ids in prompt_ids], f"with max_new_tokens={self.max_new_tokens}")
        outputs: list[str] = []
        with eval_mode(self.model), torch.no_grad():
            for batch in self._batches(prompt_ids, "generating"):
                # padded here, not by the tokenizer: its padding side and pad token are shared with every other caller
                input_ids, attention_mask = self.padded(batch, side="left")
                generated = self.model.generate(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    pad_token_id=self.pad_token_id,
                )
                outputs += self.tokenizer.batch_decode(generated[:, input_ids.shape[1] :], skip_special_tokens=True)
        return outputs

    def predict(self, rows: Iterable[dict[str, Any] | Prompt]) -> list[str | None]:
        """One answer per row (a data row, or a raw prompt: a string or a list of messages); None when a generation
        names none of the answers."""
        rows = self.as_rows(rows)
        if not rows:
            return []
        prompts, written = self.prepare(rows)
        written = [self.answers] * len(prompts) if written is None else written
        # the rows' chat template settings only where some row has them: a subclass written against
        # score(prompts, prefixes, written) / generate(prompts) keeps working
        template_kwargs = self.template_kwargs(rows)
        settings = (template_kwargs,) if any(template_kwargs) else ()
        if self.mode == "score":
            scores = self.score(prompts, self.answer_prefixes(rows), written, *settings)
            return [self.answers[i] for i in scores.argmax(dim=1).tolist()]
        generated = self.generate(prompts, *settings)
        parsed = [parse_answer(text, answers) for text, answers in zip(generated, written)]
        return [None if found is None else self.answers[answers.index(found)] for found, answers in zip(parsed, written)]


def position_limit(model) -> int | None:
    """The most tokens ``model`` takes: its config's ``max_position_embeddings`` (or GPT-2's ``n_positions``); None
    where it declares none."""
    config = model.config.get_text_config()
    limits = [getattr(config, key, None) for key in ("max_position_embeddings", "n_positions")]
    return min((limit for limit in limits if isinstance(limit, int) and limit > 0), default=None)


def common_prefix_length(ids: Sequence[int], other: Sequence[int]) -> int:
    """How many leading tokens ``ids`` and ``other`` share (TRL >= 1.16 has it as trl.data_utils.common_prefix_length;
    axolotl's pin, TRL 1.14.1, does not)."""
    length = 0
    for token, other_token in zip(ids, other):
        if token != other_token:
            break
        length += 1
    return length


class UnlikeTrainingWarning(UserWarning):
    """A predictor is built with other prediction settings than its checkpoint was trained with."""


def warn_unlike_training(args: Any, saved: dict[str, Any], checkpoint_dir: str | os.PathLike | None) -> None:
    """A warning naming the settings that ``args`` sets otherwise than the checkpoint was trained with (``saved``, its
    trainer's ``checkpoint_settings``): a predictor built from a fresh config would predict unlike training."""
    import warnings

    from .configuration import settings_differing

    if differing := settings_differing(args, saved):
        warnings.warn(
            f"{checkpoint_dir} was trained with {', '.join(f'{key}={value!r}' for key, value in differing.items())}; "
            "the config given sets otherwise, and the predictor follows it. Set these in the config to predict as "
            "trained (trl-causal eval does so).",
            UnlikeTrainingWarning,
            stacklevel=3,
        )


def adapter_base(checkpoint: Path, fallback: str | None = None) -> str:
    """The base model of a PEFT adapter directory: the ``base_model_name_or_path`` that training recorded, where it is
    a local directory or a model the hub (or its cache) gives; else (the base moved, or the adapter came from another
    machine) ``fallback``, the config's ``model_name_or_path`` (a directory, an embedded model's name or a hub id),
    with a note; neither there is an error naming both."""
    from .embedded import check_model_source, looks_like_a_path, resolve_model_name_or_path

    recorded = json.loads((checkpoint / "adapter_config.json").read_text())["base_model_name_or_path"]
    try:
        check_model_source(recorded)  # a local directory, or a model the hub (or its cache) gives
        return resolve_model_name_or_path(recorded)
    except ConfigError:
        pass
    if fallback is not None:
        fallback = resolve_model_name_or_path(fallback)  # an embedded model's name: its checkpoint on this machine
    if fallback is not None and (os.path.isdir(fallback) or not looks_like_a_path(fallback) and fallback != recorded):
        print(
            f"trl-causal: note: the base model that {checkpoint} was trained on, {recorded}, is not there; loading its "
            f"adapter onto the config's model {fallback}.",
            file=sys.stderr,
        )
        return fallback
    raise ConfigError(
        f"The LoRA adapter in {checkpoint} was trained on the base model {recorded} (base_model_name_or_path in its "
        "adapter_config.json), which is not there"
        + (f", nor is the config's model_name_or_path {fallback}" if fallback is not None else "")
        + ". Set model_name_or_path in the config to where that base model is now."
    )


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")  # what training saves of a (fast) tokenizer


def error_line(error: BaseException) -> str:
    """``error`` in one line: its type and the first line of its message (without a colon that announced the next)."""
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0].rstrip(': ')}"


def deleted_checkpoint_error(checkpoint: str | os.PathLike) -> ConfigError:
    """The error for a checkpoint whose folder (or model) vanished while it was read or evaluated, as a training run
    deletes its older ``checkpoint-N`` folders past ``save_total_limit``."""
    return ConfigError(
        f"The checkpoint {checkpoint} was deleted while it was loaded or evaluated (a training run deletes its older "
        "checkpoint-N folders past save_total_limit as it saves): evaluate a checkpoint that training keeps, or a copy."
    )


def load_checkpoint(checkpoint: str | Path, base_model: str | None = None, dtype: str | None = None):
    """Model (in eval mode, on the GPU when there is one) and tokenizer from a full checkpoint or a PEFT adapter
    directory (loaded onto ``adapter_base``; ``base_model``: the config's model, where the recorded base is gone;
    ``dtype``: the base's, as training loaded it; a full checkpoint loads as saved)."""
    import torch
    import transformers

    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise ConfigError(f"Checkpoint directory not found: {checkpoint}. Train first, or pass --checkpoint DIR.")
    adapter = (checkpoint / "adapter_config.json").is_file()
    base = adapter_base(checkpoint, base_model) if adapter else None
    try:
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(base, dtype=dtype), str(checkpoint))
        else:
            model = transformers.AutoModelForCausalLM.from_pretrained(str(checkpoint))
    except Exception as error:  # a truncated weights file (an interrupted copy) gives safetensors' or torch's own error
        if not checkpoint.is_dir():
            raise deleted_checkpoint_error(checkpoint) from error
        loaded = f" (a LoRA adapter on the base model {base})" if adapter else ""
        raise ConfigError(
            f"Cannot load the checkpoint {checkpoint}{loaded}: {error_line(error)}. If its files are incomplete or "
            "corrupt (an interrupted save or copy), save or copy it again."
        ) from error
    if torch.cuda.is_available():
        model.to("cuda")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(checkpoint))
    except Exception as error:  # a gone folder reads as a hub id: "We couldn't connect to 'https://huggingface.co'"
        if not checkpoint.is_dir():
            raise deleted_checkpoint_error(checkpoint) from error
        missing = [name for name in TOKENIZER_FILES if not (checkpoint / name).is_file()]
        raise ConfigError(
            f"Cannot load the tokenizer of the checkpoint {checkpoint}: "
            + (f"it has no {' nor '.join(missing)} ({error_line(error)})" if missing else error_line(error))
            + f". Copy the tokenizer files training saved with the model ({', '.join(TOKENIZER_FILES)}) from the run "
            "or its base model."
        ) from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


def build_predictor(
    trainer_cls, args, model, tokenizer, answers, mode: str = "score", checkpoint_dir=None, **kwargs
) -> LMPredictor:
    """The trainer's own predictor if it defines ``build_predictor``, else the plain ``LMPredictor``; ``kwargs`` are
    ``LMPredictor``'s options (batch_size, max_new_tokens, ...)."""
    if hasattr(trainer_cls, "build_predictor"):
        return trainer_cls.build_predictor(args, model, tokenizer, answers, mode=mode, checkpoint_dir=checkpoint_dir, **kwargs)
    return LMPredictor(model, tokenizer, answers, mode=mode, **kwargs)


GOLD_COLUMNS = ("answer", "completion", "messages")  # where the gold answer is, when --answer_column is not given


def default_answer_column(rows: Sequence[dict[str, Any]]) -> str:
    """The first of ``answer``, ``completion`` and ``messages`` (its last turn: the assistant's answer) the rows have."""
    return next((column for column in GOLD_COLUMNS if rows and column in rows[0]), GOLD_COLUMNS[0])


def gold_answers(rows: Sequence[dict[str, Any]], column: str, split: str) -> list[str]:
    if rows and column not in rows[0]:
        raise DataError(f"Split {split!r} has no gold answer column {column!r}; it has: {', '.join(sorted(rows[0]))}.")
    # A conversational completion column holds messages: its answer is the last message's content; " True" is "True".
    unanswered = [
        row for row, value in enumerate(row[column] for row in rows)
        if isinstance(value, list) and not (value and isinstance(value[-1], dict) and value[-1].get("role") == "assistant")
    ]
    if unanswered:
        last = rows[unanswered[0]][column][-1:] or [{}]
        raise DataError(
            f"Split {split!r}: the {column!r} of {describe_rows(unanswered)} does not end with an assistant message "
            f"(row {unanswered[0]} ends with {last[0].get('role', 'nothing')!r}), which would be its gold answer. "
            "Give those rows their answer, or name the gold column with --answer_column."
        )
    return [completion_text(row[column]) if isinstance(row[column], (list, str)) else str(row[column]) for row in rows]


def check_gold_in_answers(gold: dict[str, list[str]], answers: Sequence[str], column: str) -> None:
    """Fail when a split's gold answers hold a value outside the answer set (case-insensitive): no prediction could
    match it, and accuracy would count it wrong without saying why."""
    known = {answer.lower() for answer in answers}
    for split, values in gold.items():
        outside = sorted({value for value in values if value.lower() not in known})
        if outside:
            rows = [row for row, value in enumerate(values) if value.lower() not in known]
            raise DataError(
                f"Split {split!r} has gold answers {outside[:5]} (column {column!r}, {describe_rows(rows)}) outside the "
                f"answer set {list(answers)}: no prediction can match them. Add them to --answers, or name the column "
                "that holds the answers with --answer_column."
            )


def macro_f1(predicted: Sequence[str | None], gold: Sequence[str]) -> float:
    """Unweighted mean over the gold classes of F1 (case-insensitive; an unparsed prediction counts as wrong)."""
    predicted_lower = [None if p is None else p.lower() for p in predicted]
    gold_lower = [g.lower() for g in gold]
    scores = []
    for label in sorted(set(gold_lower)):
        true_positive = sum(p == label and g == label for p, g in zip(predicted_lower, gold_lower))
        n_predicted, n_gold = predicted_lower.count(label), gold_lower.count(label)
        scores.append(2 * true_positive / (n_predicted + n_gold) if n_predicted + n_gold else 0.0)
    return sum(scores) / max(len(scores), 1)


def accuracy_report(predicted: Sequence[str | None], gold: Sequence[str]) -> dict[str, float | int]:
    """Accuracy, macro-F1 over the gold classes, rows and unparsed predictions."""
    if len(predicted) != len(gold):
        raise DataError(f"{len(predicted)} predictions for {len(gold)} gold answers: give one prediction per row.")
    correct = sum(p is not None and p.lower() == g.lower() for p, g in zip(predicted, gold))
    return {
        "accuracy": correct / max(len(gold), 1),
        "macro_f1": macro_f1(predicted, gold),
        "n": len(gold),
        "unparsed": sum(p is None for p in predicted),
    }
