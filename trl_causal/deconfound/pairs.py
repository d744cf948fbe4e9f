"""Preference pairs ranked by an outcome within groups: for pairwise reward training and for DPO data.

``trl-causal dpo-pairs --config cfg.yaml --output pairs.jsonl`` writes, for the rows of the config's training split,
every pair of rows of one group (``group_column``) whose standardised target t (the deconfounded outcome r~ by
default; the raw outcome with ``--mode naive``) differs by more than ``min_pair_gap``, as TRL preference rows:
``chosen`` / ``rejected`` (the texts, or the completions of ``prompt`` + ``completion`` rows), ``prompt`` when the
rows have one, and ``score_chosen`` / ``score_rejected`` (their t). An answer repeated within a group counts once,
with the mean t of its copies.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError, TrlCausalError, count_rows, describe_rows, for_count
from .observations import read_observations
from .partial_out import group_codes
from .targets import reward_targets


MANY_PAIRS_PER_ROW = 10  # more within-group pairs per row than this (groups of about 20 rows or more) is warned about


def many_pairs_warning(n_rows: int, n_pairs: int, largest_group: int, what: str) -> str | None:
    """The warning for more than ``MANY_PAIRS_PER_ROW`` pairs per row, else None."""
    if n_pairs <= MANY_PAIRS_PER_ROW * n_rows:
        return None
    return (
        f"{what}: {n_rows} rows give {n_pairs} within-group pairs (largest group: {largest_group} rows): pairs grow with "
        "the square of a group's size. A finer group_column, or a larger min_pair_gap, gives fewer."
    )


def check_pair_groups(groups: np.ndarray | None, what: str, row_numbers: Sequence[int] | None = None) -> None:
    """Every group must have 2 rows or more (a pair compares rows of one group). ``row_numbers``: the rows' numbers in
    the data, to name the lone rows."""
    if groups is None:
        raise ConfigError(f"{what}: pairs compare rows that share a context; give the rows' group ids (the trainer's group_column).")
    codes, inverse, sizes = np.unique(group_codes(groups, len(groups)), return_inverse=True, return_counts=True)
    singletons = int((sizes == 1).sum())
    if singletons:
        lone = np.flatnonzero(sizes[inverse] == 1)
        where = f" ({describe_rows(np.asarray(row_numbers)[lone])})" if row_numbers is not None else ""
        raise DataError(
            f"{what}: {singletons} of {len(codes)} groups {for_count(singletons, 'has', 'have')} a single row{where}, and a pair needs 2 rows of one "
            "group. Drop those rows, or choose a coarser group_column (or, for the reward model, use objective: regression)."
        )


def preference_pairs(
    scores: Sequence[float] | np.ndarray,
    groups: np.ndarray | None,
    min_gap: float = 0.0,
    what: str = "pairs",
    single_row_groups: bool = False,
) -> np.ndarray:
    """(chosen i, rejected j) [m, 2]: every pair of rows of one group with s_i - s_j > ``min_gap``, group by group.
    A group of one row is an error unless ``single_row_groups`` (it then gives no pair)."""
    scores = np.asarray(scores, dtype=float)
    if not np.isfinite(scores).all():
        bad = np.flatnonzero(~np.isfinite(scores))
        raise DataError(f"{what}: the scores of {describe_rows(bad)} are NaN or infinite, so they rank nothing; drop those rows.")
    if groups is None or not single_row_groups:
        check_pair_groups(groups, what)
    pairs = []
    _, inverse, sizes = np.unique(group_codes(groups, len(scores)), return_inverse=True, return_counts=True)
    by_group = np.split(np.argsort(inverse, kind="stable"), np.cumsum(sizes)[:-1])  # each group's rows, in order
    for rows in by_group:
        first, second = np.triu_indices(len(rows), k=1)
        gap = scores[rows[first]] - scores[rows[second]]
        pairs.append(np.column_stack([rows[first], rows[second]])[gap > min_gap])
        pairs.append(np.column_stack([rows[second], rows[first]])[-gap > min_gap])
    pairs = np.concatenate(pairs)
    if not len(pairs):
        raise DataError(f"{what}: no two rows of a group have targets more than min_pair_gap={min_gap} apart.")
    return pairs


def merge_repeated_answers(
    rows: Sequence[dict[str, Any]], groups: np.ndarray, scores: np.ndarray, answer: str
) -> tuple[np.ndarray, np.ndarray]:
    """One row per distinct answer of a group (the first), scored by the mean target of its copies: ``(rows kept,
    their scores)``. Repeated answers, as best-of-n sampling gives, would otherwise pair with themselves
    (chosen = rejected) or both ways round."""
    members: dict[tuple[Any, str], list[int]] = {}
    for index, row in enumerate(rows):
        members.setdefault((groups[index].item(), json.dumps(row[answer], sort_keys=True)), []).append(index)
    kept = np.array([indices[0] for indices in members.values()])
    return kept, np.array([np.mean(scores[indices]) for indices in members.values()])


def dpo_rows(
    rows: Sequence[dict[str, Any]],
    pairs: np.ndarray,
    scores: np.ndarray,
    text_column: str | None,
    row_numbers: Sequence[int],
) -> list[dict[str, Any]]:
    """TRL preference rows: ``prompt`` (when the rows have one; both rows of a pair must share it), ``chosen``,
    ``rejected`` (texts, or completions when ``text_column`` is None) and ``score_chosen`` / ``score_rejected``."""
    answer = text_column or "completion"
    out = []
    for i, j in pairs:
        chosen, rejected = rows[i], rows[j]
        pair: dict[str, Any] = {}
        if "prompt" in chosen:
            if chosen["prompt"] != rejected["prompt"]:
                raise DataError(
                    f"Rows {row_numbers[i]} and {row_numbers[j]} share a group but not a prompt; a DPO pair needs one "
                    "prompt. Choose a group_column whose groups share their prompt (e.g. `group_column: prompt`)."
                )
            pair["prompt"] = chosen["prompt"]
        pair |= {
            "chosen": chosen[answer],
            "rejected": rejected[answer],
            "score_chosen": float(scores[i]),
            "score_rejected": float(scores[j]),
        }
        out.append(pair)
    return out


def write_dpo_pairs(config_path: str, output: str, overrides: Sequence[str] = ()) -> int:
    """Write the DPO pairs of the config's training rows to ``output`` (JSON lines); returns the number of pairs.

    ``overrides`` are ``--key value`` settings of the ``deconfounded_reward`` trainer that win over the YAML (e.g.
    ``--mode naive`` ranks by the raw outcome). Targets are computed as the trainer computes them.
    """
    from ..configuration import parse_run_config, read_yaml
    from ..data import check_split_types, load_run_datasets
    from ..paths import writable_output_file
    from .texts import text_features

    if Path(output).is_dir():
        raise ConfigError(f"--output {output} is a directory; dpo-pairs writes one JSON lines file: name the file, e.g. {Path(output) / 'pairs.jsonl'}.")
    try:
        run = parse_run_config(["--trainer", "deconfounded_reward", *overrides], config_path)
    except TrlCausalError as error:
        trainer = read_yaml(config_path).get("trainer", "deconfounded_reward")
        if trainer in ("deconfounded_reward", "reward"):  # `trainer: reward` on a deconfounded_reward file: its baseline
            raise
        raise type(error)(
            f"{error} ({config_path} is a config of trainer {trainer!r}; dpo-pairs reads a deconfounded_reward config: "
            "outcome and confounder columns, group_column.)"
        ) from error
    path = writable_output_file(Path(output), "the pairs file")  # before the deconfounding, not after it
    args = run.training_args
    if args.mode not in ("deconfounded", "naive"):
        raise ConfigError(
            f"dpo-pairs ranks by the deconfounded outcome (mode deconfounded) or by the raw outcome (--mode naive); "
            f"mode {args.mode!r} changes how a reward model trains, not the outcome, so it has no ranking of its own. "
            "Pass --mode deconfounded or --mode naive."
        )
    if args.group_column is None:
        raise ConfigError(
            f"dpo-pairs compares rows that share a context: set group_column in {config_path} "
            "(e.g. `group_column: prompt`)."
        )
    train, _ = load_run_datasets(run.script_args, run.dataset_args, need_eval=False)
    check_split_types({"train": train}, "deconfounded_reward", " (dpo-pairs ranks all rows by their deconfounded outcome)")
    observations = read_observations({"train": train}, args)["train"]
    _, group_sizes = np.unique(observations.groups, return_counts=True)
    if (group_sizes == 1).all():
        check_pair_groups(observations.groups, "dpo-pairs", observations.rows)  # the error: no group has a pair
    rows = train.select(observations.rows)

    def features():
        if args.feature_source == "tfidf":
            return text_features(args, rows, [])
        return _model_features(run, rows)

    targets = reward_targets(observations, args, features)
    all_rows = rows.to_list()
    kept, scores = merge_repeated_answers(all_rows, observations.groups, targets.of(observations), args.text_column or "completion")
    pairs = preference_pairs(scores, observations.groups[kept], args.min_pair_gap, "dpo-pairs", single_row_groups=True)
    if warning := many_pairs_warning(len(kept), len(pairs), int(group_sizes.max()), "dpo-pairs"):
        print(f"trl-causal: warning: {warning}", file=sys.stderr)
    lines = dpo_rows([all_rows[i] for i in kept], pairs, scores, args.text_column, observations.rows[kept])
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    effects = (targets.report["deconfounding"] or {}).get("effects", {})
    ranked_by = (
        "raw outcome"
        if targets.result is None
        else "deconfounded outcome ("
        + ", ".join(f"theta[{name}] = {e['theta']:.4g}" for name, e in effects.items())
        + ")"
    )
    dropped = f"; {count_rows(observations.dropped)} with a missing or non-finite value dropped" if observations.dropped else ""
    alone = int((group_sizes == 1).sum())
    alone = f"; {count_rows(alone)} alone in {for_count(alone, 'its', 'their')} group, which {for_count(alone, 'makes', 'make')} no pair" if alone else ""
    merged = len(all_rows) - len(kept)
    merged = (
        f"; {count_rows(merged)} that {for_count(merged, 'repeats', 'repeat')} an answer of "
        f"{for_count(merged, 'its', 'their')} group merged with it (mean outcome)" if merged else ""
    )
    print(
        f"trl-causal: wrote {len(lines)} DPO pairs from {len(rows)} rows ranked by the {ranked_by} to {path}"
        f"{dropped}{alone}{merged}"
    )
    return len(lines)


def _model_features(run, rows):
    """Pooled hidden states of the config's base model, as the trainer computes them (same tokens, same cache)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from ..embedded import check_model_source, resolve_model_name_or_path
    from .texts import text_features, tokenize_rows

    args = run.training_args
    check_model_source(run.model_args.model_name_or_path, run.model_args.model_revision, args.trust_remote_code)
    path = resolve_model_name_or_path(run.model_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(
        path, revision=run.model_args.model_revision, trust_remote_code=args.trust_remote_code
    )
    if args.eos_token is not None:
        tokenizer.eos_token = args.eos_token
    dtype = run.model_args.dtype if run.model_args.dtype is not None else torch.float32  # as TRL loads it: "auto" too
    model = AutoModel.from_pretrained(
        path, revision=run.model_args.model_revision, dtype=dtype, trust_remote_code=args.trust_remote_code
    )
    sequences = tokenize_rows(rows, args, tokenizer, "train")["input_ids"]
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return text_features(args, rows, sequences, model, pad_token_id)
