"""The reward model's targets from observations: t = (s - mean s) / sd s, with s = r~ = Y - theta'(C - mean C) from
cross-fitted partialling out (``mode: deconfounded``; with instruments, 2SLS) or s = Y (the baselines).

``args`` is the ``deconfounded_reward`` trainer's config (``DeconfoundedRewardConfig``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataError
from .observations import Observations, dropped_by_column_entry
from .partial_out import DeconfoundResult, partial_out


def confounder_column_of(name: str, args: Any) -> str:
    """The config column a confounder-matrix column comes from: itself (numeric), ``column=level`` (categorical, and a
    timestamp's weekday / month) or ``column_trend_days``."""
    for column in (*args.categorical_confounders, *args.timestamp_confounders):
        if name.startswith(f"{column}=") or name == f"{column}_trend_days":
            return column
    return name


def instruments(observations: Observations, args: Any) -> tuple[np.ndarray | None, list[str] | None]:
    """The instrument matrix of the 2SLS and its column names: Z, and beside it the columns of the confounders not in
    ``endogenous_confounders`` (exogenous: their own instruments); (None, None) without instruments. Fewer instruments
    than endogenous columns is an error naming those columns and the fix."""
    if observations.instrument is None:
        return None, None
    names = observations.confounder_names
    endogenous = args.endogenous_confounders or {confounder_column_of(name, args) for name in names}
    exogenous = [j for j, name in enumerate(names) if confounder_column_of(name, args) not in endogenous]
    moved = [name for j, name in enumerate(names) if j not in exogenous]
    if len(args.instrument_columns) < len(moved):
        fix = (
            "Name the confounders the instruments move in `endogenous_confounders`: the others then serve as their "
            "own instruments."
            if not args.endogenous_confounders
            else "Add instruments, or move fewer confounders into `endogenous_confounders`."
        )
        raise DataError(
            f"{len(args.instrument_columns)} instrument column(s) for {len(moved)} endogenous confounder-matrix columns "
            f"({', '.join(moved)}): 2SLS needs at least one instrument per such column. {fix}"
        )
    matrix = np.hstack([observations.instrument, observations.confounders[:, exogenous]])
    return matrix, [*args.instrument_columns, *(names[j] for j in exogenous)]


@dataclass
class RewardTargets:
    """t = (s - mean) / std with s = r~ = Y - theta'(C - mean C) (``result`` given) or s = Y (baselines)."""

    result: DeconfoundResult | None
    mean: float
    std: float
    report: dict[str, Any]

    def of(self, observations: Observations) -> np.ndarray:
        """Targets of any split: its r~ uses theta and mean C of the training rows."""
        scores = (
            observations.outcome
            if self.result is None
            else self.result.deconfound(observations.outcome, observations.confounders, observations.confounder_names)
        )
        return (scores - self.mean) / self.std


def varies(values: np.ndarray, scale: np.ndarray | None = None) -> bool:
    """Whether ``values`` spread beyond rounding: sd above 1000 float eps of the largest magnitude of ``scale`` (default
    ``values``: the numbers they were computed from)."""
    scale = values if scale is None else scale
    return bool(values.std() > 1e3 * np.finfo(float).eps * float(np.abs(scale).max()))


def exogenous_marked(deconfounding: dict[str, Any]) -> dict[str, Any]:
    """The deconfounding report with each confounder that is its own instrument marked ``exogenous`` in place of its
    first-stage F (the F of a column regressed on itself means nothing)."""
    for name in deconfounding.get("instruments", []):
        if name in deconfounding["effects"]:
            effect = deconfounding["effects"][name]
            effect.pop("first_stage_f", None)
            effect["exogenous"] = True
    return deconfounding


def check_outcome_varies(observations: Observations, args: Any) -> None:
    """An outcome with one value in every training row (up to rounding) is an error: there is nothing to learn."""
    if not varies(observations.outcome):
        raise DataError(
            f"The outcome column {args.outcome_column!r} has the same value in every training row (sd "
            f"{observations.outcome.std():.2g}): nothing to learn."
        )


def reward_targets(
    observations: Observations, args: Any, features: Callable[[], Any], progress: bool = True
) -> RewardTargets:
    """Deconfound the training rows (``features()`` is called only in deconfounded mode) and standardise the target.
    The data alone decides an outcome of one value and too few instruments: both fail before ``features()``."""
    check_outcome_varies(observations, args)
    seconds: dict[str, float] = {}
    result = None
    scores = observations.outcome
    if args.mode == "deconfounded":
        instrument, instrument_names = instruments(observations, args)
        start = time.perf_counter()
        phi = features()
        seconds["features"] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        result = partial_out(
            observations.outcome,
            observations.confounders,
            phi,
            n_folds=args.n_folds,
            outcome_learner=args.outcome_learner,
            confounder_learner=args.confounder_learner,
            instrument=instrument,
            seed=args.deconfound_seed_value,
            confounder_names=observations.confounder_names,
            progress=progress,
            instrument_names=instrument_names,
            groups=observations.groups,
        )
        seconds["partial_out"] = round(time.perf_counter() - start, 3)
        scores = result.deconfounded_outcome
    std = float(scores.std())
    # zero up to rounding; the outcome varies (checked above), so only partialling out can have made it so
    if not varies(scores, scale=observations.outcome):
        raise DataError(
            f"The confounders explain all of the outcome {args.outcome_column!r}: after partialling them out "
            f"r~ = Y - theta'(C - mean C) is the same in every training row (sd {std:.2g}, against sd(Y) = "
            f"{observations.outcome.std():.3g}), so nothing is left to learn. Check that no confounder is the outcome "
            "or a function of it."
        )
    mean = float(scores.mean())
    report = {
        "mode": args.mode,
        "objective": args.objective,
        "outcome_column": args.outcome_column,
        "feature_source": args.feature_source if result is not None else None,
        "rows": {"used": len(observations.rows), "dropped_invalid": observations.dropped, **dropped_by_column_entry(observations)},
        "target": {"mean": mean, "std": std},  # the reward model learns t = (s - mean) / std
        "deconfounding": None if result is None else {"seed": args.deconfound_seed_value, **exogenous_marked(result.to_report())},
        "seconds": seconds,
    }
    return RewardTargets(result, mean, std, report)
