"""CAPT-SFT on Axolotl's SFT path: Axolotl's tokenized rows, decoded, intervened per epoch, re-tokenized.

Axolotl tokenizes every row up front with the dataset's prompt strategy (``type: alpaca``, ``chat_template``,
``completion``, ...), so the raw text is gone by the time the trainer exists. This keeps every Axolotl dataset
type working: each tokenized row is cut into pieces (runs of trained / untrained tokens, special tokens on their
own), the text pieces are decoded, and trl_causal's event estimator reads the untrained pieces as the prompt and
the trained pieces as the completion (joined by trl_causal's message separator). Every time a row is drawn, its
events get the symbols of ``RowInterventions(seed).intervene(row, epoch)`` (the same estimator, symbol pools and
seeding as ``trainer: capt`` in trl-causal), and each piece whose text changed is tokenized again; unchanged
pieces and special tokens keep Axolotl's token ids and labels. The masking Axolotl chose (train on inputs or not,
which turns are trained) is kept piece by piece. Estimation and the evaluation rows' symbols are ``trainer: capt``'s
own (``InterventionPlanner``): under DDP the main process estimates and the other ranks receive its templates, and
an evaluation row's symbols follow from its prompt, not its place in the split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from axolotl.core.trainers.base import AxolotlTrainer
from transformers.utils import logging
from trl_causal.capt import MESSAGE_SEPARATOR, EstimatedRows, RowInterventions
from trl_causal.capt.sft_rows import estimation_report, report_cut_completions
from trl_causal.errors import ConfigError, DataError
from trl_causal.paths import write_json_file
from trl_causal.trainer.capt_config import CAPTConfig
from trl_causal.trainer.mixins import follow_log_level
from trl_causal.trainer.capt_trainer import (
    InterventionEpochCallback,
    InterventionPlanner,
    InterventionRows,
    save_prediction_files,
)

from .args import check_values, prompt_trained_setting

logger = logging.get_logger(__name__)

RUN_FILE = "trl_causal_axolotl_run.json"
IGNORE = -100


@dataclass
class Piece:
    """Tokens ``[start, end)`` of a row: trained (labels kept) or not, and whether it is one special token."""

    start: int
    end: int
    trained: bool
    special: bool


def row_pieces(input_ids: list[int], labels: list[int], special_ids: set[int]) -> list[Piece]:
    """Cut a tokenized row where training switches on or off, and around every special token."""
    pieces: list[Piece] = []
    for index, (token, label) in enumerate(zip(input_ids, labels)):
        trained, special = label != IGNORE, token in special_ids
        last = pieces[-1] if pieces else None
        if last and not special and not last.special and last.trained == trained:
            last.end = index + 1
        else:
            pieces.append(Piece(index, index + 1, trained, special))
    return pieces


class TokenRowCodec:
    """Decodes a tokenized row into (prompt, completion) texts for estimation and builds it again from them."""

    def __init__(self, tokenizer, max_length: int | None = None):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.special_ids = set(tokenizer.all_special_ids)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def texts(self, row: dict[str, Any]) -> tuple[list[Piece], list[str]]:
        input_ids, labels = list(row["input_ids"]), list(row["labels"])
        pieces = row_pieces(input_ids, labels, self.special_ids)
        return pieces, [self.decode(input_ids[p.start : p.end]) for p in pieces]

    def estimation_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """``{"prompt", "completion"}``: the untrained text pieces, and the trained ones (a row without trained text
        has no ``completion``, as a TRL prompt-only row)."""
        pieces, texts = self.texts(row)
        prompt = [t for p, t in zip(pieces, texts) if not p.special and not p.trained]
        completion = [t for p, t in zip(pieces, texts) if not p.special and p.trained]
        row = {"prompt": MESSAGE_SEPARATOR.join(prompt)}
        if completion:
            row["completion"] = MESSAGE_SEPARATOR.join(completion)
        return row

    def rebuild(self, row: dict[str, Any], prompt: str, completion: str | None) -> dict[str, list[int]]:
        """The row with its text pieces replaced by the rendered ``prompt`` / ``completion`` pieces."""
        pieces, texts = self.texts(row)
        rendered = {False: prompt.split(MESSAGE_SEPARATOR), True: (completion or "").split(MESSAGE_SEPARATOR)}
        expected = {flag: sum(1 for p in pieces if not p.special and p.trained == flag) for flag in (False, True)}
        for flag in (False, True):
            if expected[flag] and len(rendered[flag]) != expected[flag]:
                raise DataError(
                    f"A rendered row has {len(rendered[flag])} {'trained' if flag else 'prompt'} text pieces for "
                    f"{expected[flag]}: the event estimator must keep trl_causal's separator between pieces."
                )
        input_ids, labels = list(row["input_ids"]), list(row["labels"])
        out_ids: list[int] = []
        out_labels: list[int] = []
        position = {False: 0, True: 0}
        for piece, text in zip(pieces, texts):
            if piece.special:
                new_text = text
            else:
                new_text = rendered[piece.trained][position[piece.trained]]
                position[piece.trained] += 1
            if new_text == text:
                out_ids += input_ids[piece.start : piece.end]
                out_labels += labels[piece.start : piece.end]
            else:
                ids = self.tokenizer(new_text, add_special_tokens=False)["input_ids"]
                out_ids += ids
                out_labels += list(ids) if piece.trained else [IGNORE] * len(ids)
        if self.max_length is not None:
            out_ids, out_labels = out_ids[: self.max_length], out_labels[: self.max_length]
        item = {"input_ids": out_ids, "attention_mask": [1] * len(out_ids), "labels": out_labels}
        if "position_ids" in row:
            item["position_ids"] = list(range(len(out_ids)))
        return item


class EstimationRows:
    """Axolotl's tokenized rows as the text rows that trl_causal estimates (``TokenRowCodec.estimation_row``),
    decoded as they are read: under DDP only the main process, which estimates, decodes them."""

    def __init__(self, rows, codec: TokenRowCodec):
        self.rows = rows
        self.codec = codec

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return (self.codec.estimation_row(row) for row in self.rows)


class TokenInterventionDataset(InterventionRows):
    """Axolotl's tokenized rows whose events get the symbols of the current draw, re-tokenized on access.

    Stores the rows (Axolotl's dataset, not copied) and one template per row. ``intervened`` counts the items drawn
    with changed text (counted across DataLoader workers).
    """

    def __init__(self, rows, estimated: EstimatedRows, interventions: RowInterventions, codec: TokenRowCodec, draw=0):
        super().__init__(rows, estimated, interventions, draw)
        self.codec = codec
        # [drawn, intervened], in shared memory: DataLoader workers (Axolotl starts one by default) count here too.
        self.counts = torch.zeros(2, dtype=torch.int64).share_memory_()
        names = ["input_ids", "attention_mask", "labels"]
        if "position_ids" in rows.column_names:
            names.append("position_ids")
        self.column_names = names

    def rebuilt(self, index: int) -> tuple[dict[str, Any], dict[str, list[int]]]:
        """Item ``index``'s source row and its tokens with the symbols of the current draw."""
        row, result = self.intervention(index)
        return row, self.codec.rebuild(row, result.prompt, result.completion)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        row, item = self.rebuilt(index)
        self.counts += torch.tensor([1, int(item["input_ids"] != list(row["input_ids"]))])
        return item

    @property
    def drawn(self) -> int:
        return int(self.counts[0])

    @property
    def intervened(self) -> int:
        """Items drawn so far whose text the intervention changed (a row without events is drawn unchanged)."""
        return int(self.counts[1])


def rows_left_untrained(dataset: TokenInterventionDataset, indices=None) -> list[int]:
    """The rows (input indices) that the symbols of the current draw leave without a trained token (the codec cuts
    rows that the intervention made longer than its max_length)."""
    indices = range(len(dataset)) if indices is None else indices
    return [dataset.row_indices[i] for i in indices if all(label == IGNORE for label in dataset.rebuilt(i)[1]["labels"])]


def check_config(values: dict[str, Any], output_dir: str, seed: int, **training: Any) -> CAPTConfig:
    """trl_causal's own ``CAPTConfig`` for the CAPT keys of the YAML (``args.check_values``); its event estimator is
    built once, so that its options (a missing terms_file, a bad prompt_file) fail before anything loads."""
    config = check_values(CAPTConfig, "capt", values, output_dir, seed, **training)
    try:
        config.build_event_estimator()
    except ConfigError as error:
        raise ConfigError(f"trainer: capt: {error}") from error
    return config


def check_axolotl_cfg(cfg) -> None:
    """Axolotl settings that CAPT cannot honour, named with the fix."""
    if cfg.get("sample_packing"):
        raise ConfigError(
            "trainer: capt does not support `sample_packing: true`: interventions change row lengths every epoch, so "
            "packed bins computed up front would not hold. Set `sample_packing: false`."
        )
    if cfg.get("capt_prompt_loss") is not None:
        raise ConfigError(
            "`capt_prompt_loss` is for `trl-causal train`; under Axolotl, CAPT reads the prompt / completion boundary "
            "from Axolotl's loss mask, so the loss covers the completion only. Remove `capt_prompt_loss` (for a loss "
            "on the prompt too, train with `trl-causal train` and `capt_prompt_loss: true`)."
        )
    setting = prompt_trained_setting(cfg)
    if setting:
        raise ConfigError(
            f"trainer: capt does not support {setting}: CAPT reads the prompt / completion boundary from Axolotl's "
            "loss mask, and with the prompt trained too no row has a prompt, so no events are found and nothing is "
            "intervened. Remove it (train on the completion only, e.g. `type: chat_template` or `alpaca`), or train "
            "with `trl-causal train` and `capt_prompt_loss: true` for a loss on the prompt too."
        )
    if cfg.get("pretraining_dataset") or cfg.get("streaming"):
        raise ConfigError(
            "trainer: capt needs a map-style dataset (it estimates every row before training); remove "
            "`pretraining_dataset` / `streaming` and use `datasets:`."
        )


class AxolotlCAPTTrainer(AxolotlTrainer):
    """``AxolotlTrainer`` that trains with CAPT-SFT (METHODS.md section 1) on Axolotl's tokenized rows.

    ``trl_causal_values`` (set by the plugin on a subclass) holds the CAPT keys of the YAML.
    """

    tag_names = ["axolotl", "trl-causal", "capt"]
    trl_causal_values: dict[str, Any] = {}

    def __init__(self, *args, **kwargs):
        training_args = kwargs["args"]
        follow_log_level(training_args, ("trl_causal", "trl_causal_axolotl"))
        tokenizer = kwargs.get("processing_class")
        train_dataset, eval_dataset = kwargs.get("train_dataset"), kwargs.get("eval_dataset")
        if train_dataset is None or not hasattr(train_dataset, "column_names"):
            raise DataError("trainer: capt needs Axolotl's tokenized training dataset (a datasets.Dataset).")
        for name in ("input_ids", "labels"):
            if name not in train_dataset.column_names:
                raise DataError(
                    f"trainer: capt reads the tokenized column {name!r}, which Axolotl's training dataset lacks; it has "
                    f"{', '.join(train_dataset.column_names)}."
                )
        self.capt_args = check_config(
            self.trl_causal_values,
            training_args.output_dir,
            training_args.seed,
            dataloader_num_workers=training_args.dataloader_num_workers,
            dataloader_persistent_workers=training_args.dataloader_persistent_workers,
        )
        self.codec = TokenRowCodec(tokenizer, getattr(training_args, "max_seq_length", None))
        # Under DDP the main process estimates the rows and the others receive its templates (``InterventionPlanner``).
        progress = training_args.process_index == 0 and not training_args.disable_tqdm
        planner = InterventionPlanner(self.capt_args, progress, texts=lambda rows: EstimationRows(rows, self.codec))
        train_estimated, train_interventions, _ = planner.training_plan(train_dataset)
        self.symbol_pool = planner.symbol_pool
        eval_plan = None
        if eval_dataset is not None and hasattr(eval_dataset, "column_names"):
            eval_plan = planner.evaluation_plan(eval_dataset, "evaluation")
        planner.event_estimator.release()  # e.g. the llm estimator's model, which training has no use for
        super().__init__(*args, **kwargs)
        self.train_dataset = TokenInterventionDataset(train_dataset, train_estimated, train_interventions, self.codec)
        if eval_plan is not None:
            self.eval_dataset = TokenInterventionDataset(eval_dataset, *eval_plan, self.codec)
        self.add_callback(InterventionEpochCallback(self.train_dataset))
        if self.codec.max_length is not None:
            self._check_truncation()
        if self.accelerator.is_main_process:
            self._report(len(train_dataset))

    def _check_truncation(self) -> None:
        """Rows that the symbols of draw 0 make longer than ``sequence_len`` are cut back to it: those left without a
        trained token train nothing (Axolotl dropped the rows too long before the intervention, not these)."""
        from tqdm.auto import tqdm

        dataset, main = self.train_dataset, self.accelerator.is_main_process
        indices = tqdm(range(len(dataset)), desc="Checking sequence_len", disable=not main or self.args.disable_tqdm)
        cut = rows_left_untrained(dataset, indices)
        fix = (
            f"raise sequence_len (now {self.codec.max_length}), or use a symbol pool of shorter symbols (`symbol_pool: "
            "letters`); other draws may cut other rows"
        )
        report_cut_completions(cut, len(dataset), f"sequence_len={self.codec.max_length} after the intervention", fix, warn=main)

    def _report(self, rows: int, examples: int = 2) -> None:
        dataset = self.train_dataset
        summary, warning = estimation_report(
            self.capt_args,
            dataset.no_events,
            rows,
            self.symbol_pool.name,
            who="trl-causal capt (axolotl)",
            hint=", and that Axolotl leaves each row's prompt untrained (the estimator reads the untrained tokens as the prompt)",
            failed=dataset.failed,
        )
        self.accelerator.print(summary)
        if warning:
            logger.warning(warning)
        for index in range(min(examples, len(dataset))):
            text = self.codec.decode(dataset.rebuilt(index)[1]["input_ids"])
            self.accelerator.print(f"  row {dataset.row_indices[index]}, epoch 0: {text[:400]!r}")

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if isinstance(self.train_dataset, TokenInterventionDataset) and "loss" in logs:
            logs["capt_rows_intervened"] = self.train_dataset.intervened
        super().log(logs, start_time)

    def train(self, *args, **kwargs):
        result = super().train(*args, **kwargs)
        dataset = self.train_dataset
        summary = {
            "trainer": "capt",
            "host": "axolotl",
            "event_estimator": self.capt_args.event_estimator,
            "symbol_pool": self.symbol_pool.name,
            "intervention_seed": self.capt_args.intervention_seed_value,
            "train_rows": len(dataset),
            "rows_without_events": len(dataset.no_events),
            "rows_drawn": dataset.drawn,
            "rows_intervened": dataset.intervened,
            "last_draw": dataset.draw,
            "steps": self.state.global_step,
            "train_loss": result.training_loss,
        }
        if self.args.should_save:
            write_json_file(self.args.output_dir, RUN_FILE, summary)
        self.accelerator.print(
            f"trl-causal capt (axolotl): {summary['steps']} steps, {summary['rows_intervened']} of "
            f"{summary['rows_drawn']} rows the data loader drew intervened (its workers prefetch: more than trained; "
            f"draws 0..{summary['last_draw']}); summary in {RUN_FILE}."
        )
        return result

    def save_final(self, output_dir: str) -> None:
        """Right after training (the plugin's ``post_train``): the files the model predicts with
        (``save_prediction_files``: CAPT's settings, and with ``symbol_pool: pool`` the training rows' names) in
        ``output_dir``, beside the model Axolotl saves there next. Axolotl's rows take no answer prefix."""
        if self.args.should_save:
            save_prediction_files(output_dir, self.capt_args, self.symbol_pool, None)

    def _save(self, output_dir: str | None = None, state_dict=None):
        super()._save(output_dir, state_dict=state_dict)
        if self.args.should_save:
            save_prediction_files(output_dir or self.args.output_dir, self.capt_args, self.symbol_pool, None)
