"""CAPT-SFT (METHODS.md section 1): SFT on rows whose events get fresh random symbols at every draw.

Before training every row is estimated once into an ``EventTemplate`` (``trl_causal.capt``). The training set
becomes an ``InterventionDataset``: row ``i`` read during epoch ``d`` is rendered with the symbols of
``RowInterventions(seed).intervene(i, d)`` and tokenized right then, so every epoch sees new symbols, the same seed
gives the same symbols, and nothing but the templates is stored. The epoch comes from the trainer state
(``InterventionEpochCallback``), so a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import torch
from accelerate.utils import broadcast_object_list
from transformers import PreTrainedTokenizerBase, TrainerCallback
from transformers.utils import logging
from trl import SFTTrainer

from ..capt import (
    MESSAGE_SEPARATOR,
    EstimatedRows,
    EventEstimator,
    InterventionResult,
    RowInterventions,
    SymbolPool,
    build_symbol_pool,
    estimate_rows,
    render_names,
)
from ..capt.sft_rows import (
    check_interventions,
    check_message_parts,
    estimate_dataset,
    estimation_report,
    evaluation_policy,
    message_roles,
    multi_turn_rows,
    part_text,
    report_cut_completions,
    split_row,
    with_text,
)
from ..configuration import hidden_secrets, method_settings
from ..data import check_split_types, named_splits
from ..errors import ConfigError, DataError, TrlCausalError, describe_rows, for_count
from ..evaluation import LMPredictor, Prompt, chat_template_kwargs, common_prefix_length, training_answer_prefix, warn_unlike_training
from ..paths import read_json_file, write_json_file
from .capt_config import CAPTConfig
from .mixins import follow_log_level
from .zero3 import whole_model_loading

logger = logging.get_logger(__name__)


@dataclass
class RowTokenizer:
    """Tokenizes a rendered row as ``SFTTrainer`` prepares one: the chat template for message lists, EOS after a
    text completion, labels -100 on the prompt unless ``prompt_loss``, truncation to ``max_length``."""

    tokenizer: PreTrainedTokenizerBase
    prompt_loss: bool = False
    max_length: int | None = None
    truncation_mode: str = "keep_start"

    def ids(self, part: Prompt, **chat_kwargs) -> list[int]:
        if isinstance(part, str):  # text: no chat template, so none of its arguments
            return self.tokenizer(text=part)["input_ids"]
        encoded = self.tokenizer.apply_chat_template(part, tokenize=True, return_dict=True, **chat_kwargs)
        return encoded["input_ids"]

    def with_eos(self, text: str) -> str:
        eos = self.tokenizer.eos_token
        return text if text.endswith(eos) else text + eos

    def __call__(self, prompt: Prompt, completion: Prompt | None, **chat_kwargs) -> dict[str, list[int]]:
        """``chat_kwargs``: the row's ``chat_template_kwargs`` for message lists (its tools, ...)."""
        if completion is None:  # language modeling: loss on every token
            input_ids = self.ids(prompt if isinstance(prompt, list) else self.with_eos(prompt), **chat_kwargs)
            labels = list(input_ids)
        else:
            if isinstance(completion, str):
                completion = self.with_eos(completion)
            prompt_ids = self.ids(prompt, add_generation_prompt=True, **chat_kwargs)
            input_ids = self.ids(prompt + completion, **chat_kwargs)
            start = common_prefix_length(prompt_ids, input_ids)  # where the completion starts, as in TRL
            labels = list(input_ids) if self.prompt_loss else [-100] * start + input_ids[start:]
        if self.max_length is not None:
            kept = slice(None, self.max_length) if self.truncation_mode == "keep_start" else slice(-self.max_length, None)
            input_ids, labels = input_ids[kept], labels[kept]
        return {"input_ids": input_ids, "labels": labels}


class InterventionRows(torch.utils.data.Dataset):
    """Rows whose events get the symbols of draw ``draw``: item ``k`` is row ``estimated.row_indices[k]`` of ``rows``
    with ``interventions.intervene(k, draw)``. Subclasses turn that into a training item (``__getitem__``).
    Memory: the rows and their templates, O(rows)."""

    def __init__(self, rows, estimated: EstimatedRows, interventions: RowInterventions, draw: int = 0):
        self.rows = rows
        self.row_indices = estimated.row_indices
        self.no_events = estimated.no_events
        self.failed = estimated.failed
        self.interventions = interventions
        self.draw = draw

    def __len__(self) -> int:
        return len(self.row_indices)

    def set_epoch(self, epoch: int) -> None:
        """Use the symbols of draw ``epoch`` from now on."""
        self.draw = int(epoch)

    def row(self, index: int) -> Any:
        """Item ``index``'s source row."""
        return self.rows[self.row_indices[index]]

    def intervention(self, index: int) -> tuple[Any, InterventionResult]:
        """Item ``index``'s source row and its intervention under the current draw."""
        return self.row(index), self.interventions.intervene(index, self.draw)


class InterventionDataset(InterventionRows):
    """SFT rows (prompt/completion, messages or text) whose events get the symbols of the current draw, tokenized on
    access: one mapping for a row's prompt and completion."""

    column_names = ("input_ids", "labels")  # what an item holds (read by TRL's dataset checks)

    def __init__(
        self,
        rows: datasets.Dataset,
        estimated: EstimatedRows,
        interventions: RowInterventions,
        tokenize: RowTokenizer,
        text_field: str = "text",
        draw: int = 0,
    ):
        super().__init__(rows, estimated, interventions, draw)
        self.tokenize = tokenize
        self.text_field = text_field

    def render(self, index: int, result: InterventionResult | None = None) -> tuple[Prompt, Prompt | None, dict[str, Any]]:
        """Item ``index``'s prompt and completion, in the row's own format, with the symbols of the current draw (or of
        ``result``, its intervention already worked out), and the row's ``chat_template_kwargs``."""
        row, result = self.intervention(index) if result is None else (self.row(index), result)
        prompt, completion = split_row(row, self.text_field)
        completion = None if completion is None else with_text(completion, result.completion)
        return with_text(prompt, result.prompt), completion, chat_template_kwargs(row)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        prompt, completion, chat_kwargs = self.render(index)
        return self.tokenize(prompt, completion, **chat_kwargs)


class InterventionEpochCallback(TrainerCallback):
    """Gives the training rows the symbols of the current epoch, read from the trainer state (so a resumed run
    continues with the draws an uninterrupted one would use)."""

    def __init__(self, dataset: InterventionRows):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(int(state.epoch))


class InterventionPlanner:
    """Estimates the rows of each split once and draws their interventions, alike on every rank: under DDP only the
    main process estimates, and the others receive its templates (or its error), so every rank keeps the same rows,
    also with an estimator that may answer otherwise when asked again (an ``llm`` endpoint).

    ``texts`` turns a split into what the estimator reads (default: the rows themselves). The training split's plan
    sets ``symbol_pool`` (the config's ``symbol_pool: pool`` takes the training rows' names), which every later plan
    draws from.
    """

    def __init__(self, args: CAPTConfig, progress: bool = False, texts=None):
        self.args = args
        self.progress = progress
        self.texts = texts or (lambda rows: rows)
        self.event_estimator = args.build_event_estimator()
        self.symbol_pool: SymbolPool | None = None

    def estimate(self, rows, split: str, require_events: bool = False, on_no_events: str | None = None) -> EstimatedRows:
        """``estimate_dataset`` under ``on_no_events`` (default: the config's); an error in an evaluation split says
        which split it is in."""
        args = self.args
        outcome: list[EstimatedRows | DataError | ConfigError | None] = [None]
        if args.process_index == 0:
            try:
                with whole_model_loading():  # under ZeRO-3 a model that only this rank loads must load whole
                    outcome = [
                        estimate_dataset(
                            self.event_estimator,
                            self.texts(rows),
                            on_no_events=on_no_events or args.on_no_events,
                            text_field=args.dataset_text_field,
                            desc=f"Estimating events ({split} rows, {args.event_estimator!r})",
                            disable_progress=not self.progress,
                            require_events=require_events,
                        )
                    ]
            except (DataError, ConfigError) as error:
                outcome = [error]
                if split != "training":
                    outcome = [type(error)(f"In the {split} split: {error}")]
                    outcome[0].__cause__ = error
            except Exception as error:  # this rank raises it as it is, and the others that it happened
                broadcast_object_list([TrlCausalError(f"The main process failed to estimate events: {type(error).__name__}: {error}")])
                raise
        [estimated] = broadcast_object_list(outcome)
        if isinstance(estimated, Exception):
            raise estimated
        return estimated

    def _interventions(self, estimated: EstimatedRows, split: str, held_out: bool) -> tuple[RowInterventions, list[InterventionResult]]:
        """The rows' interventions and their draw-0 results (checked: the pool serves every row)."""
        interventions = RowInterventions(estimated.templates, self.symbol_pool, self.args.intervention_seed_value, held_out)
        return interventions, check_interventions(interventions, estimated.row_indices, self.progress, split)

    def training_plan(self, rows) -> tuple[EstimatedRows, RowInterventions, list[InterventionResult]]:
        """Estimate the training rows (a split without events is an error), build the symbol pool from them, and
        return the estimates, the interventions (each row drawn by its position) and their draw-0 results."""
        estimated = self.estimate(rows, "training", require_events=True)
        self.symbol_pool = build_symbol_pool(self.args.symbol_pool, estimated.templates)
        return estimated, *self._interventions(estimated, "training", held_out=False)

    def evaluation_plan(self, rows, split: str) -> tuple[EstimatedRows, RowInterventions]:
        """Estimate the rows of an evaluation split and check that the training rows' pool serves them; each row is
        held out (drawn by its content, as prediction does). Every evaluation row is evaluated, as with plain SFT:
        ``on_no_events: drop`` keeps rows without events unchanged (``error`` still fails), and a count is logged."""
        estimated = self.estimate(rows, split, on_no_events=evaluation_policy(self.args.on_no_events))
        if estimated.no_events and self.args.process_index == 0:
            logger.warning(
                f"capt: {len(estimated.no_events)} of {len(rows)} rows of the {split} split "
                f"{for_count(len(estimated.no_events), 'has', 'have')} no events ({describe_rows(estimated.no_events)}); "
                "they are evaluated unchanged."
            )
        return estimated, self._interventions(estimated, split, held_out=True)[0]


ADDED_TOKENS_MARGIN = 8  # tokens a tokenizer may add to a text beyond one per byte (BOS, ...)


def check_truncation(
    dataset: InterventionDataset,
    args: CAPTConfig,
    progress: bool = False,
    warn: bool = True,
    first_draw: Sequence[InterventionResult] | None = None,
) -> list[int]:
    """Rows that ``max_length`` leaves without a completion token train nothing (TRL's SFTTrainer drops them): an
    error when that is every row, else (``warn``) a warning with their count; returns them. Checked with the symbols
    of draw 0 (the first epoch's): a row near the limit may be cut in one epoch and not in another.

    Only ``keep_start`` can cut a completion off (``keep_end`` keeps every row's end), and only from a row whose prompt
    fills max_length. A token covers at least one byte of text, so a prompt (as templated) of fewer UTF-8 bytes than
    max_length, less a margin for the tokens a tokenizer adds (BOS), cannot: only longer prompts are tokenized.
    ``first_draw``: the rows' draw-0 interventions where ``check_interventions`` has worked them out already."""
    from tqdm.auto import tqdm

    if args.truncation_mode != "keep_start":
        return []
    tokenizer = dataset.tokenize.tokenizer

    def fills_max_length(index: int) -> bool:
        prompt, completion, chat_kwargs = dataset.render(index, None if first_draw is None else first_draw[index])
        text = prompt if isinstance(prompt, str) else tokenizer.apply_chat_template(
            prompt, tokenize=False, add_generation_prompt=True, **chat_kwargs
        )
        if len(text.encode("utf-8")) + ADDED_TOKENS_MARGIN < args.max_length:
            return False
        return all(label == -100 for label in dataset.tokenize(prompt, completion, **chat_kwargs)["labels"])  # rendered once

    indices = tqdm(range(len(dataset)), desc="Checking max_length", disable=not progress)
    cut = [dataset.row_indices[i] for i in indices if fills_max_length(i)]
    fix = f"raise max_length (now {args.max_length}), shorten the prompts, or set truncation_mode: keep_end to cut the prompts' starts instead"
    report_cut_completions(cut, len(dataset), f"max_length={args.max_length} (with the first epoch's symbols)", fix, warn)
    return cut


SYMBOL_POOL_FILE = "capt_symbol_pool.json"
# how a checkpoint predicts, for one without trl-causal's run record (trained from a TRL script or Axolotl)
PREDICTION_FILE = "trl_causal_capt.json"
# the method settings that CAPT's prediction reads
PREDICTION_SETTINGS = ("event_estimator", "event_estimator_kwargs", "symbol_pool", "intervention_seed")


def save_prediction_files(directory: str, args: CAPTConfig, symbol_pool, answer_prefix: str | None) -> None:
    """What ``build_predictor`` and eval read back from a checkpoint: ``PREDICTION_FILE`` (the method settings, secrets
    hidden, and the text the training rows put before the answer) and, with ``symbol_pool: pool``, the pool's names
    (``SYMBOL_POOL_FILE``), so that inference draws from the training rows' names too."""
    write_json_file(directory, PREDICTION_FILE, {"settings": hidden_secrets(method_settings(args)), "answer_prefix": answer_prefix})
    if args.symbol_pool == "pool":
        write_json_file(directory, SYMBOL_POOL_FILE, {"symbols": symbol_pool.symbols})


class CAPTTrainer(SFTTrainer):
    """``trl.SFTTrainer`` for causality-aware post-training (CAPT-SFT).

    Takes the same keyword arguments as ``SFTTrainer`` and a ``CAPTConfig``. Training rows (prompt/completion texts
    or message lists, ``messages``, or ``text``; a map-style ``datasets.Dataset``) are estimated once, then rendered
    with fresh symbols every epoch and tokenized when drawn. Evaluation rows are intervened with the fixed draw 0.
    The loss is TRL's, divided by the loss tokens of the whole accumulated batch (exact under gradient accumulation).
    """

    _tag_names = ["trl", "sft", "trl-causal", "capt"]
    _name = "CAPT"
    loss_is_scaled_for_ga = True
    saved_file = PREDICTION_FILE  # every save writes it: eval knows a checkpoint of this trainer without a run record by it
    # eval never takes these from a checkpoint: the estimator's options may name a host, an API key's variable, a path
    # or a model to load (the llm estimator's base_url, api_key_env, model, cache_dir, prompt_file)
    settings_not_from_checkpoint = ("event_estimator_kwargs",)

    def __init__(self, model, args: CAPTConfig | None = None, *, train_dataset=None, eval_dataset=None, **kwargs):
        args = self._capt_config(model, args)
        follow_log_level(args)
        if kwargs.get("formatting_func") is not None:
            raise ConfigError(
                "The capt trainer renders rows itself and takes no formatting_func; pass prompt/completion, messages "
                "or text rows."
            )
        splits = named_splits(train_dataset, eval_dataset)
        check_split_types(splits, "capt", " (it estimates every row before training)")
        # Everything about the data is settled before the model loads, so bad rows fail fast. Under DDP the main
        # process estimates the rows and the others receive its templates (``InterventionPlanner``).
        show_progress = args.process_index == 0 and not args.disable_tqdm
        self.planner = InterventionPlanner(args, show_progress)
        train_estimated, train_interventions, first_draw = self.planner.training_plan(train_dataset)
        self.symbol_pool = self.planner.symbol_pool
        eval_plans = {
            key: self.planner.evaluation_plan(rows, f"evaluation {key!r}") for key, rows in splits.items() if key != "train"
        }
        self.planner.event_estimator.release()  # e.g. the llm estimator's model, which training has no use for

        self.answer_prefix = training_answer_prefix(train_dataset)
        # TRL refuses padding_free with a max_length it would not enforce without packing; capt's RowTokenizer cuts
        # every row to max_length itself, so SFTTrainer is shown none while it sets up.
        max_length, args.max_length = args.max_length, None if args.padding_free else args.max_length
        try:
            super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset, **kwargs)
        finally:
            args.max_length = max_length
        # TRL's compute_loss divides by `num_items_in_batch`: have the Trainer always count it.
        self.model_accepts_loss_kwargs = True
        if not isinstance(self.processing_class, PreTrainedTokenizerBase):
            raise ConfigError("The capt trainer supports text models: processing_class must be a tokenizer.")
        self.row_tokenizer = RowTokenizer(
            self.processing_class, args.capt_prompt_loss, args.max_length, args.truncation_mode
        )
        self.train_dataset = self._intervention_dataset(train_dataset, train_estimated, train_interventions)
        if eval_plans:
            wrapped = {key: self._intervention_dataset(splits[key], *plan) for key, plan in eval_plans.items()}
            self.eval_dataset = wrapped if isinstance(eval_dataset, dict) else wrapped["eval"]
        self.add_callback(InterventionEpochCallback(self.train_dataset))
        self.cut_rows: list[int] = []  # rows max_length leaves without a completion token (first epoch's symbols)
        if args.max_length is not None and not args.capt_prompt_loss:
            self.cut_rows = check_truncation(
                self.train_dataset, args, show_progress, warn=self.accelerator.is_main_process, first_draw=first_draw
            )
        if self.accelerator.is_main_process:
            self._report(self.train_dataset, len(train_dataset))

    @property
    def trained_rows(self) -> int:
        """Training rows that train: all but those ``on_no_events: drop`` drops and those max_length leaves without a
        completion token (with the first epoch's symbols)."""
        return len(self.train_dataset) - len(self.cut_rows)

    @staticmethod
    def _capt_config(model, args) -> CAPTConfig:
        if isinstance(args, CAPTConfig):
            return args
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            return CAPTConfig(f"{str(name).split('/')[-1]}-CAPT")
        accepted = {f.name for f in dataclasses.fields(CAPTConfig) if f.init}
        converted = CAPTConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.name in accepted})
        logger.warning(
            f"CAPTTrainer got a {type(args).__name__}, not a CAPTConfig: the CAPT settings take their defaults "
            f"(event_estimator={converted.event_estimator!r}, symbol_pool={converted.symbol_pool!r}, on_no_events="
            f"{converted.on_no_events!r}). Pass a CAPTConfig to set them."
        )
        return converted

    def _intervention_dataset(self, rows, estimated: EstimatedRows, interventions: RowInterventions):
        return InterventionDataset(rows, estimated, interventions, self.row_tokenizer, self.args.dataset_text_field)

    def _intervene_eval(self, eval_dataset):
        """Raw evaluation rows (a dataset or a dict of them) as intervention datasets with the fixed draw 0."""
        if isinstance(eval_dataset, dict):
            return {key: self._intervene_eval(dataset) for key, dataset in eval_dataset.items()}
        if not isinstance(eval_dataset, datasets.Dataset):  # None, a name, or already intervened
            return eval_dataset
        return self._intervention_dataset(eval_dataset, *self.planner.evaluation_plan(eval_dataset, "evaluation"))

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        """``SFTTrainer.evaluate``; raw rows passed here are intervened like the evaluation rows given at init."""
        return super().evaluate(self._intervene_eval(eval_dataset), ignore_keys, metric_key_prefix)

    def _report(self, dataset: InterventionDataset, rows: int, examples: int = 2) -> None:
        """Print the rows without events, the conversations with earlier assistant turns, and a few intervened rows
        (main process)."""
        summary, warning = estimation_report(self.args, dataset.no_events, rows, self.symbol_pool.name, failed=dataset.failed)
        self.accelerator.print(summary)
        if warning:
            logger.warning(warning)
        multi_turn = multi_turn_rows(dataset.rows, dataset.text_field)
        if multi_turn:
            logger.warning(
                f"capt: {len(multi_turn)} of {rows} training rows ({describe_rows(multi_turn)}) "
                f"{for_count(len(multi_turn), 'is a conversation', 'are conversations')} with assistant turns before "
                "the last one: capt trains the last assistant message; the earlier ones are part of the prompt and get "
                "no loss."
            )
        for index in range(min(examples, len(dataset))):
            prompt, completion, _ = dataset.render(index)
            text = part_text(prompt) + ("" if completion is None else " => " + part_text(completion))
            shown = text.replace(MESSAGE_SEPARATOR, " | ")[:400]
            self.accelerator.print(f"  row {dataset.row_indices[index]}, epoch 0: {shown!r}")

    def _save(self, output_dir: str | None = None, state_dict=None):
        """The model and the files it predicts with (``save_prediction_files``)."""
        super()._save(output_dir, state_dict=state_dict)
        if self.args.should_save:
            save_prediction_files(output_dir or self.args.output_dir, self.args, self.symbol_pool, self.answer_prefix)

    @classmethod
    def checkpoint_settings(cls, checkpoint_dir: str | os.PathLike) -> dict:
        """The method settings saved with the model (estimator, symbol pool, seed, ...): what eval uses for a
        checkpoint without a run record (trained from a TRL script or Axolotl), but for ``settings_not_from_checkpoint``."""
        return (read_json_file(checkpoint_dir, PREDICTION_FILE) or {}).get("settings", {})

    @classmethod
    def check_predictor(cls, args: CAPTConfig) -> None:
        """Before any model loads: the event estimator can run (an ``llm`` estimator's endpoint or model is there)."""
        args.build_event_estimator().check_available()

    @classmethod
    def build_predictor(
        cls, args: CAPTConfig, model, tokenizer, answers: Sequence[str], mode: str = "score", checkpoint_dir=None, **kwargs
    ) -> CAPTPredictor:
        """The ``CAPTPredictor`` configured like ``args``. With ``symbol_pool: pool``, the names saved in
        ``checkpoint_dir`` by training are the pool (else the names of the rows of each predict call); the checkpoint's
        answer prefix is the predictor's. ``kwargs`` go to ``CAPTPredictor`` (batch_size, max_new_tokens,
        prompt_column, answer_prefix)."""
        prediction = read_json_file(checkpoint_dir, PREDICTION_FILE) or {}
        # the settings prediction reads (not capt_prompt_loss; on_no_events as eval reads it)
        saved = prediction.get("settings", {})
        compared = {key: saved[key] for key in PREDICTION_SETTINGS if key in saved}
        if "on_no_events" in saved and evaluation_policy(saved["on_no_events"]) != evaluation_policy(args.on_no_events):
            compared["on_no_events"] = saved["on_no_events"]
        warn_unlike_training(args, compared, checkpoint_dir)
        symbol_pool = args.symbol_pool
        if "answer_prefix" not in kwargs:  # rows without a completion: their answers follow what training put first
            kwargs["answer_prefix"] = prediction.get("answer_prefix")
        saved_pool = read_json_file(checkpoint_dir, SYMBOL_POOL_FILE) if symbol_pool == "pool" else None
        if saved_pool is None and symbol_pool == "pool" and saved.get("symbol_pool") == "pool":
            raise ConfigError(
                f"{checkpoint_dir} has no {SYMBOL_POOL_FILE}, the training rows' names that `symbol_pool: pool` predicts "
                "with (training saves it with the model): the checkpoint was deleted meanwhile (save_total_limit) or "
                "copied without it. Copy it from the run, or pass checkpoint_dir=None to draw from each call's rows."
            )
        if saved_pool is not None:
            symbol_pool = saved_pool["symbols"]
        return CAPTPredictor(
            model,
            tokenizer,
            answers,
            mode=mode,
            estimator=args.build_event_estimator(),
            symbol_pool=symbol_pool,
            seed=args.intervention_seed_value,
            on_no_events=args.on_no_events,
            **kwargs,
        )


class CAPTPredictor(LMPredictor):
    """``LMPredictor`` with CAPT's inference pipeline: events are estimated on each prompt alone and replaced by
    symbols (seeded by the row's content: draw 0 of ``RowInterventions(seed, held_out=True)``,
    as the trainer's evaluation rows are, so a row gets the same symbols alone, in any batch and at any position),
    then decoded.

    ``symbol_pool="pool"`` takes the names of the other rows of the same call; ``CAPTTrainer.build_predictor``
    passes the training rows' names instead when the checkpoint has them. A prompt without events is kept
    unchanged unless ``on_no_events="error"``.
    """

    def __init__(
        self,
        model,
        tokenizer,
        answers: Sequence[str],
        *,
        estimator: EventEstimator,
        symbol_pool: str | Sequence[str] = "letters",
        seed: int = 0,
        on_no_events: str = "keep",
        **predictor_kwargs,
    ):
        """``predictor_kwargs`` are ``LMPredictor``'s (mode, batch_size, max_new_tokens, prompt_column)."""
        super().__init__(model, tokenizer, answers, **predictor_kwargs)
        self.estimator = estimator
        self.symbol_pool = symbol_pool
        self.seed = seed
        self.on_no_events = on_no_events
        self.rows_without_events: list[int] = []  # of the last `prepare`: their prompts went to the model unchanged
        self.rows_failed: list[int] = []  # those of them the estimator failed on (e.g. no valid llm answer)

    def prepare_prompts(self, rows: Sequence[dict[str, Any]]) -> list[Prompt]:
        """Each row's prompt, in its own format, with its events (estimated on the prompt alone) replaced by symbols."""
        return self.prepare(rows)[0]

    def prepare(self, rows: Sequence[dict[str, Any]]) -> tuple[list[Prompt], list[list[str]]]:
        """The intervened prompts, and per row the answers written with the row's symbols: an answer that names an
        event of the prompt ("Alice") is written as training writes it in a completion ("V")."""
        from tqdm.auto import tqdm

        prompts = self.row_prompts(rows)
        with tqdm(total=len(prompts), desc="Estimating events", disable=len(prompts) < 2, leave=False) as bar:
            estimated = estimate_rows(
                self.estimator,
                ({**row, "prompt": part_text(prompt)} for row, prompt in zip(self.as_rows(rows), prompts)),
                completion_column=None,
                on_no_events=evaluation_policy(self.on_no_events),
                progress=bar.update,
            )
        self.rows_without_events = estimated.no_events
        self.rows_failed = estimated.failed
        for row_index, (template, prompt) in enumerate(zip(estimated.templates, prompts)):
            check_message_parts(template, (message_roles(prompt), None), row_index, self.estimator.name)
            # a chat prompt's answer is a message of its own, as training renders chat completions
            estimated.templates[row_index] = dataclasses.replace(template, completion_is_message=message_roles(prompt) is not None)
        pool = build_symbol_pool(self.symbol_pool, estimated.templates)
        interventions = RowInterventions(estimated.templates, pool, self.seed, held_out=True)
        # a row the pool cannot serve is named
        results = check_interventions(interventions, range(len(prompts)), len(prompts) > self.batch_size, "prediction")
        written = [
            [render_names(answer, template, result.mapping) for answer in self.answers]
            for template, result in zip(estimated.templates, self._rows(results, "writing the answers"))
        ]
        return [with_text(prompt, result.prompt) for prompt, result in zip(prompts, results)], written

