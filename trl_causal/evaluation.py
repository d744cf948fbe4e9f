"""Accuracy of a checkpoint on answer-set tasks: score fixed answers by log-likelihood, or generate and parse.

``LMPredictor`` is the plain pipeline (what ``trainer: sft`` gets). Trainers change it by defining
``build_predictor(cls, args, model, tokenizer, answers, mode, checkpoint_dir)``; CAPT, for instance,
rewrites each prompt (event estimation + intervention) in ``prepare_prompts`` before decoding.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError, DataError

Prompt = str | list[dict[str, str]]


def parse_answer(text: str, answers: Sequence[str]) -> str | None:
    """The answer a generation commits to: the content of the last ``<answer>...</answer>`` if any,
    else the last whole-word occurrence of one of ``answers`` (case-insensitive); None if neither."""
    tagged = re.findall(r"<answer>\s*(.*?)\s*</answer>", text, flags=re.IGNORECASE | re.DOTALL)
    if tagged:
        text = tagged[-1]
    pattern = r"\b(" + "|".join(re.escape(a) for a in sorted(answers, key=len, reverse=True)) + r")\b"
    found = re.findall(pattern, text, flags=re.IGNORECASE)
    if not found:
        return None
    by_lower = {a.lower(): a for a in answers}
    return by_lower[found[-1].lower()]


class LMPredictor:
    """Predicts one of ``answers`` per row with a causal LM.

    ``mode="score"``: argmax_a sum_t log p(a_t | prompt, a_<t) over the fixed answer set.
    ``mode="generate"``: greedy decoding, then ``parse_answer``.
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
    ):
        if mode not in ("score", "generate"):
            raise ConfigError(f"Prediction mode {mode!r} is not one of 'score', 'generate'.")
        if not answers:
            raise ConfigError("The answer set is empty: give the answers to choose from (e.g. True, False).")
        self.model = model
        self.tokenizer = tokenizer
        self.answers = list(answers)
        self.mode = mode
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.prompt_column = prompt_column

    def prepare_prompts(self, rows: Sequence[dict[str, Any]]) -> list[Prompt]:
        """The prompts to decode from; subclasses rewrite them here."""
        return [row[self.prompt_column] for row in rows]

    def prompt_text(self, prompt: Prompt) -> str:
        """Conversational prompts go through the chat template with the generation prompt."""
        if isinstance(prompt, str):
            return prompt
        return self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)

    def _batches(self, items: list, desc: str):
        from tqdm.auto import tqdm

        starts = range(0, len(items), self.batch_size)
        for start in tqdm(starts, desc=desc, disable=len(starts) < 2, leave=False):
            yield items[start : start + self.batch_size]

    def score(self, prompts: Sequence[Prompt]):
        """Log-likelihood of every answer after every prompt: a [rows, answers] tensor.

        Single-token answer sets (True/False, yes/no) take one forward per prompt; longer answers
        one forward per (prompt, answer) pair.
        """
        import torch

        answer_ids = [self.tokenizer(a, add_special_tokens=False)["input_ids"] for a in self.answers]
        prompt_ids = [self.tokenizer(self.prompt_text(p), add_special_tokens=False)["input_ids"] for p in prompts]
        if all(len(ids) == 1 for ids in answer_ids):
            first_tokens = torch.tensor([ids[0] for ids in answer_ids])
            last = [logprobs[-1, first_tokens] for logprobs in self._logprobs(prompt_ids, "scoring")]
            return torch.stack(last).cpu()
        pairs = [(p, a) for p in prompt_ids for a in answer_ids]
        scores = [
            logprobs[torch.arange(len(p) - 1, len(p) + len(a) - 1), torch.tensor(a)].sum()
            for (p, a), logprobs in zip(pairs, self._logprobs([p + a for p, a in pairs], "scoring"))
        ]
        return torch.stack(scores).view(len(prompts), len(self.answers)).cpu()

    def _logprobs(self, sequences: list[list[int]], desc: str):
        """Yield each sequence's next-token log-probabilities [length, vocab], batched with right padding."""
        import torch

        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        with torch.no_grad():
            for batch in self._batches(sequences, desc):
                length = max(len(ids) for ids in batch)
                input_ids = torch.full((len(batch), length), pad, dtype=torch.long)
                attention = torch.zeros_like(input_ids)
                for i, ids in enumerate(batch):
                    input_ids[i, : len(ids)] = torch.tensor(ids)
                    attention[i, : len(ids)] = 1
                logits = self.model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
                for i, ids in enumerate(batch):
                    yield logits[i, : len(ids)].float().log_softmax(-1).cpu()

    def generate(self, prompts: Sequence[Prompt]) -> list[str]:
        """Greedy continuations (new text only)."""
        import torch

        device = next(self.model.parameters()).device
        texts = [self.prompt_text(p) for p in prompts]
        outputs: list[str] = []
        side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"
        try:
            with torch.no_grad():
                for batch in self._batches(texts, "generating"):
                    encoded = self.tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
                    generated = self.model.generate(
                        **encoded, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=self.tokenizer.pad_token_id
                    )
                    new_tokens = generated[:, encoded["input_ids"].shape[1] :]
                    outputs += self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        finally:
            self.tokenizer.padding_side = side
        return outputs

    def predict(self, rows: Sequence[dict[str, Any]]) -> list[str | None]:
        """One answer per row (None when a generation names none of the answers)."""
        prompts = self.prepare_prompts(rows)
        if self.mode == "score":
            return [self.answers[i] for i in self.score(prompts).argmax(dim=1).tolist()]
        return [parse_answer(text, self.answers) for text in self.generate(prompts)]


def load_checkpoint(checkpoint: str | Path, kind: str = "sft"):
    """Model (in eval mode) and tokenizer from a full checkpoint or a PEFT adapter directory."""
    import transformers

    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise ConfigError(f"Checkpoint directory not found: {checkpoint}. Train first, or pass --checkpoint DIR.")
    auto = transformers.AutoModelForSequenceClassification if kind == "reward" else transformers.AutoModelForCausalLM
    if (checkpoint / "adapter_config.json").is_file():
        from peft import PeftModel

        base = json.loads((checkpoint / "adapter_config.json").read_text())["base_model_name_or_path"]
        model = PeftModel.from_pretrained(auto.from_pretrained(base), str(checkpoint))
    else:
        model = auto.from_pretrained(str(checkpoint))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(checkpoint))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


def build_predictor(trainer_cls, args, model, tokenizer, answers, mode: str = "score", checkpoint_dir=None) -> LMPredictor:
    """The trainer's own predictor if it defines ``build_predictor``, else the plain ``LMPredictor``."""
    if hasattr(trainer_cls, "build_predictor"):
        return trainer_cls.build_predictor(args, model, tokenizer, answers, mode=mode, checkpoint_dir=checkpoint_dir)
    return LMPredictor(model, tokenizer, answers, mode=mode)


def gold_answers(rows: Sequence[dict[str, Any]], column: str, split: str) -> list[str]:
    if rows and column not in rows[0]:
        raise DataError(f"Split {split!r} has no gold answer column {column!r}; it has: {', '.join(sorted(rows[0]))}.")
    return [str(row[column]) for row in rows]


def accuracy_report(predicted: Sequence[str | None], gold: Sequence[str]) -> dict[str, float | int]:
    correct = sum(p is not None and p.lower() == g.lower() for p, g in zip(predicted, gold))
    return {"accuracy": correct / max(len(gold), 1), "n": len(gold), "unparsed": sum(p is None for p in predicted)}
