"""Cross-fitted partialling out (double machine learning) of the confounders' causal effect on an outcome.

Partially linear model: Y = theta'C + l(phi) + e, with phi the text features and C the confounders.
With r_Y = Y - E[Y|phi] and r_C = C - E[C|phi] (nuisances fitted on the other folds), theta is the OLS
coefficient of r_Y on r_C (Robinson 1988; Chernozhukov et al. 2018). With an instrument Z that moves C but not
Y directly, theta is the 2SLS coefficient of r_Y on r_C instrumented by r_Z = Z - E[Z|phi].
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import LassoCV, LinearRegression, Ridge, RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import GroupKFold, KFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import get_tags
from tqdm.auto import tqdm

from ..errors import ConfigError, DataError, describe_rows, for_count
from .confounders import is_missing, plain_number

LEARNER_NAMES = ("ridge", "lasso", "random_forest", "gradient_boosting", "linear")
RIDGE_ALPHAS = np.logspace(-2, 5, 8)
MIN_RESIDUAL_SHARE = 0.01
MOSTLY_TEXT_SHARE = 0.25  # a confounder with less of its variance left than this is warned about (without instrument)
FEW_GROUPS = 20  # fewer (effective) clusters than this make cluster-robust standard errors too small (a warning)
INNER_FOLDS = 3  # folds of whole clusters in which a nuisance learner chooses its penalty (with_group_folds)
WEAK_INSTRUMENT_F = 10.0


class TextDeterminedWarning(UserWarning):
    """Partialling out the text leaves a confounder little of its variance (under ``MOSTLY_TEXT_SHARE``)."""


class WeakInstrumentWarning(UserWarning):
    """The first-stage F statistic of an instrument is below 10 (Staiger & Stock rule of thumb)."""


def make_learner(learner: str | RegressorMixin, seed: int = 0, sparse: bool = False) -> RegressorMixin:
    """A fresh scikit-learn regressor for a nuisance function E[target | phi].

    ``ridge``: RidgeCV (alpha by leave-one-out over 1e-2..1e5, one per target) on standardised features, or, for
    ``sparse`` features (TF-IDF, whose rows are already on one scale), on the features as they are: scaling each
    column by its spread blows rare terms (a campaign's id in its prompt) up into what an L2 fit leans on;
    ``lasso``: LassoCV (3-fold) on standardised features, sparse ones too (L1 selects terms rather than spreading
    weight over them, so scaled-up rare terms do not take over its fit as they take over an L2 fit);
    ``random_forest``: RandomForestRegressor (200 trees, leaves >= 5 rows); ``gradient_boosting``:
    HistGradientBoostingRegressor (dense features only); ``linear``: LinearRegression. An estimator instance is cloned (unfitted copy), never modified.
    """
    if not isinstance(learner, str):
        if not (hasattr(learner, "fit") and hasattr(learner, "predict")):
            raise ConfigError(
                f"Learner {learner!r} is neither a name in {list(LEARNER_NAMES)} nor a scikit-learn regressor."
            )
        return clone(learner)
    if learner == "ridge":
        ridge = RidgeCV(alphas=RIDGE_ALPHAS, alpha_per_target=True)
        return ridge if sparse else make_pipeline(StandardScaler(with_mean=False), ridge)
    if learner == "lasso":
        return make_pipeline(StandardScaler(with_mean=False), LassoCV(cv=3))
    if learner == "random_forest":
        return RandomForestRegressor(n_estimators=200, min_samples_leaf=5, random_state=seed)
    if learner == "gradient_boosting":
        return HistGradientBoostingRegressor(random_state=seed)
    if learner == "linear":
        return LinearRegression()
    raise ConfigError(
        f"Unknown learner {learner!r}; use one of {list(LEARNER_NAMES)} or a scikit-learn regressor instance."
    )


def _learner_label(learner: str | RegressorMixin) -> str:
    return learner if isinstance(learner, str) else type(learner).__name__


def remove_confounder_effect(
    y: Sequence[float] | np.ndarray, confounders: np.ndarray, theta: np.ndarray, confounder_mean: np.ndarray
) -> np.ndarray:
    """r~ = y - theta'(C - mean C): the confounders' causal effect removed, the outcome's mean kept. y [n] (or [n, 1]),
    C [n] or [n, k] with k = len(theta), all finite."""
    outcome = _outcome_vector(y)
    confounders = _as_float_matrix(confounders, "confounder matrix", len(outcome))
    if confounders.shape[1] != len(theta):
        raise DataError(
            f"The confounder matrix has {confounders.shape[1]} columns but theta has {len(theta)}: give C as [n, k], "
            "one row per outcome, in the columns theta was estimated on."
        )
    _check_finite(confounders, "confounder matrix", [f"column {j}" for j in range(confounders.shape[1])])
    return outcome - (confounders - confounder_mean) @ theta


@dataclass
class DeconfoundResult:
    """Estimated causal effects theta of the confounders on the outcome, and the deconfounded outcome.

    Arrays indexed by confounder have length k = len(confounder_names). ``residual_share[j]`` is the share of the
    variance of confounder j left after partialling out the text, sum (C_j - E[C_j|phi])^2 / sum (C_j - mean C_j)^2;
    ``outcome_residual_share`` the same share for the outcome. Out-of-fold fits can predict worse than the mean, so a
    share can exceed 1 where the text predicts none of the variance. ``first_stage_f`` (IV only) is the first-stage F
    statistic of each confounder (Sanderson-Windmeijer conditional F when k > 1). With groups, ``effective_groups`` is
    n^2 / sum_g n_g^2, the count of equal-sized groups the cluster-robust standard errors rest on.
    """

    theta: np.ndarray
    se: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    confounder_names: list[str]
    n: int
    n_folds: int
    residual_share: np.ndarray
    outcome_residual_share: float
    confounder_mean: np.ndarray
    deconfounded_outcome: np.ndarray
    first_stage_f: np.ndarray | None
    ci_level: float
    outcome_learner: str
    confounder_learner: str
    n_groups: int | None
    instrument_names: list[str] | None = None
    effective_groups: float | None = None

    @property
    def p_value(self) -> np.ndarray:
        """Two-sided p-value of theta_j = 0, 2 * (1 - Phi(|theta_j / se_j|))."""
        normal = NormalDist()
        return np.array([2.0 * (1.0 - normal.cdf(abs(t / s))) for t, s in zip(self.theta, self.se)])

    def deconfound(
        self, y: Sequence[float] | np.ndarray, confounders: np.ndarray, confounder_names: Sequence[str] | None = None
    ) -> np.ndarray:
        """r~ = y - theta'(C - mean C) for new rows, mean C taken over the rows theta was estimated on.

        ``confounder_names``: the names of the columns of ``confounders``; they must be ``self.confounder_names`` (in any
        order). New rows built alone may one-hot other levels: build C over the estimation rows and the new rows
        together (``build_confounder_matrix(..., fit_rows=n_estimation_rows)``) so that the columns agree.
        """
        confounders = _as_float_matrix(confounders, "confounder matrix", len(_outcome_vector(y)))
        if confounder_names is not None:
            added = sorted(set(confounder_names) - set(self.confounder_names))
            missing = sorted(set(self.confounder_names) - set(confounder_names))
            if added or missing or len(confounder_names) != confounders.shape[1]:
                raise DataError(
                    f"The new rows' confounder columns differ from those theta was estimated on: not estimated {added}, "
                    f"absent {missing}. Build C over the estimation rows and the new rows together "
                    "(build_confounder_matrix(..., fit_rows=n_estimation_rows))."
                )
            confounders = confounders[:, [list(confounder_names).index(name) for name in self.confounder_names]]
        elif confounders.shape[1] != len(self.confounder_names):
            raise DataError(
                f"The new rows have {confounders.shape[1]} confounder columns; theta has {len(self.confounder_names)} "
                f"({', '.join(self.confounder_names)})."
            )
        return remove_confounder_effect(y, confounders, self.theta, self.confounder_mean)

    def to_report(self) -> dict[str, Any]:
        """JSON-serialisable summary (numbers and strings, one entry per confounder; nothing of length n)."""
        p_values = self.p_value
        effects = {
            name: {
                "theta": float(self.theta[j]),
                "se": float(self.se[j]),
                "ci_low": float(self.ci_low[j]),
                "ci_high": float(self.ci_high[j]),
                "p_value": float(p_values[j]),
                "residual_share": float(self.residual_share[j]),
                "mean": float(self.confounder_mean[j]),
                **(
                    {"first_stage_f": float(self.first_stage_f[j]), "weak_instrument": bool(self.first_stage_f[j] < WEAK_INSTRUMENT_F)}
                    if self.first_stage_f is not None
                    else {}
                ),
            }
            for j, name in enumerate(self.confounder_names)
        }
        return {
            "method": "partialling_out_iv" if self.first_stage_f is not None else "partialling_out",
            **({"instruments": list(self.instrument_names)} if self.instrument_names is not None else {}),
            "n": self.n,
            "n_folds": self.n_folds,
            "n_groups": self.n_groups,
            **({"effective_groups": self.effective_groups} if self.effective_groups is not None else {}),
            "ci_level": self.ci_level,
            "standard_errors": "cluster_robust_CR1" if self.n_groups is not None else "heteroskedasticity_robust_HC1",
            "outcome_learner": self.outcome_learner,
            "confounder_learner": self.confounder_learner,
            "outcome_residual_share": float(self.outcome_residual_share),
            "effects": effects,
        }


def _as_float_matrix(values: Any, what: str, n_rows: int | None) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, on any device and in any dtype (numpy has no bf16), as float64
        values = values.detach().cpu().double().numpy()
    try:
        matrix = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as error:
        text = [str(name) for name in getattr(values, "columns", []) if not _holds_numbers(values[name])]
        where = f" (columns {text} hold text)" if text else ""
        raise DataError(
            f"The {what} must be numeric{where}: {error}. One-hot encode categorical columns, e.g. with "
            "trl_causal.deconfound.build_confounder_matrix(columns, numeric=[...], categorical=[...])."
        ) from None
    if matrix.ndim == 1:
        matrix = matrix[:, None]
    if matrix.ndim != 2:
        raise DataError(f"The {what} must be a vector or an [n, k] matrix; got shape {matrix.shape}.")
    if n_rows is not None and len(matrix) != n_rows:
        raise DataError(f"The {what} has {len(matrix)} rows but the outcome has {n_rows}.")
    return matrix


def _holds_numbers(values: Any) -> bool:
    try:
        np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        return False
    return True


def _outcome_vector(y: Any) -> np.ndarray:
    """The outcome [n] from a vector or an [n, 1] column, numeric and finite."""
    outcome = _as_float_matrix(y, "outcome", None)
    if outcome.shape[1] != 1:
        raise DataError(f"The outcome must be one value per row; got shape {np.shape(y)}.")
    _check_finite(outcome, "outcome", ["outcome"])
    return outcome[:, 0]


def _check_finite(matrix: np.ndarray, what: str, column_names: Sequence[str]) -> None:
    bad = ~np.isfinite(matrix)
    if not bad.any():
        return
    bad_rows = np.flatnonzero(bad.any(axis=1))
    by_column = ", ".join(f"{column_names[j]!r}: {int(bad[:, j].sum())}" for j in np.flatnonzero(bad.any(axis=0)))
    raise DataError(
        f"The {what} has NaN/inf in {len(bad_rows)} of {len(matrix)} rows ({describe_rows(bad_rows)}; "
        f"per column {by_column}). Drop or fix those rows (in the outcome, confounders, instrument and texts alike) "
        "before deconfounding."
    )


def _check_features(features: Any, n_rows: int) -> Any:
    """Dense float array (a torch tensor too) or scipy sparse matrix [n, d] without NaN/inf."""
    if hasattr(features, "detach"):
        features = features.detach().cpu().double().numpy()
    if sp.issparse(features):
        features = sp.csr_matrix(features, dtype=float)
        row_of_entry = np.repeat(np.arange(features.shape[0]), np.diff(features.indptr))
        bad_rows = np.unique(row_of_entry[~np.isfinite(features.data)])
        if len(bad_rows):
            raise DataError(
                f"The text feature matrix has NaN/inf in {len(bad_rows)} of {features.shape[0]} rows "
                f"({describe_rows(bad_rows)}). Recompute the features for those rows or drop them."
            )
    else:
        features = _as_float_matrix(features, "text feature matrix", None)
        _check_finite(features, "text feature matrix", [f"feature {j}" for j in range(features.shape[1])])
    if features.shape[0] != n_rows:
        raise DataError(f"The text feature matrix has {features.shape[0]} rows but the outcome has {n_rows}.")
    return features


def _check_learners(learners: Sequence[str | RegressorMixin], features: Any, seed: int) -> None:
    """Fail before any fitting on an unknown learner name, or a dense-only learner given sparse features."""
    models = [make_learner(learner, seed) for learner in learners]
    if sp.issparse(features):
        dense_only = [
            _learner_label(learner) for learner, model in zip(learners, models) if not get_tags(model).input_tags.sparse
        ]
        if dense_only:
            raise ConfigError(f"Learners {dense_only} need dense features; pass features.toarray() or use 'ridge'.")


def _named_finite_matrix(
    values: Any, what: str, n_rows: int, names: Sequence[str] | None, names_argument: str
) -> tuple[np.ndarray, list[str]]:
    """A float matrix with one name per column (default: a DataFrame's column names, a Series' name, else
    ``<what's first word>_<j>``), checked for NaN/inf."""
    matrix = _as_float_matrix(values, what, n_rows)
    columns = matrix.shape[1]
    if names is None and hasattr(values, "columns"):
        names = [str(name) for name in values.columns]
    elif names is None and columns == 1 and getattr(values, "name", None) is not None:
        names = [str(values.name)]
    names = list(names) if names is not None else [f"{what.split()[0]}_{j}" for j in range(columns)]
    if len(names) != columns:
        raise DataError(f"{names_argument} has {len(names)} names but the {what} has {columns} columns.")
    _check_finite(matrix, what, names)
    return matrix, names


def _check_instrument(
    instrument: Any, instrument_names: Sequence[str] | None, n_rows: int, n_confounders: int
) -> tuple[np.ndarray, list[str]]:
    matrix, names = _named_finite_matrix(instrument, "instrument", n_rows, instrument_names, "instrument_names")
    m = matrix.shape[1]
    constant = [name for name, spread in zip(names, np.ptp(matrix, axis=0)) if spread == 0]
    if constant:
        raise DataError(f"Instruments {constant} have the same value in every row (no variance), so they cannot move "
                        "the confounders; remove them or use an instrument that varies.")
    if m < n_confounders:
        raise DataError(
            f"{m} instrument column(s) for {n_confounders} confounders: 2SLS needs at least one instrument per "
            "confounder. Confounders that are not endogenous can be their own instruments: add their columns to the "
            "instrument matrix."
        )
    return matrix, names


def _warn_weak_instruments(first_stage_f: np.ndarray, names: Sequence[str]) -> None:
    for name, statistic in zip(names, first_stage_f):
        if statistic < WEAK_INSTRUMENT_F:
            warnings.warn(
                f"Weak instrument for confounder {name!r}: first-stage F = {statistic:.2f} < {WEAK_INSTRUMENT_F:g}. "
                "The IV estimate is biased towards OLS and its confidence interval is unreliable; use a stronger "
                "instrument or more rows.",
                WeakInstrumentWarning,
                stacklevel=3,
            )


def _final_step(learner: RegressorMixin) -> RegressorMixin:
    """The estimator that fits: the last step of a pipeline, or the learner itself."""
    return learner.steps[-1][1] if isinstance(learner, Pipeline) else learner


class _RidgePath:
    """Ridge fits (with intercept) of every target column of T on X for any penalties, from one eigendecomposition:
    with Xc, Tc centred, G = Xc'Xc = V diag(lam) V' gives W(alpha) = V diag(1/(lam + alpha)) V'Xc'Tc; where rows are
    fewer than features, the kernel K = Xc Xc' = U diag(lam) U' gives W(alpha) = Xc'U diag(1/(lam + alpha)) U'Tc.
    X dense or sparse [n, p], T [n, k]."""

    def __init__(self, x: Any, targets: np.ndarray):
        self.x, self.x_mean = x, np.asarray(x.mean(axis=0)).ravel()
        self.t_mean = targets.mean(axis=0)
        centered_targets = targets - self.t_mean
        self.primal = x.shape[1] <= x.shape[0]
        if self.primal:  # G = X'X - n m m'
            gram = x.T @ x
            gram = (gram.toarray() if sp.issparse(gram) else gram) - x.shape[0] * np.outer(self.x_mean, self.x_mean)
            self.eigenvalues, self.vectors = np.linalg.eigh(gram)
            self.projected = self.vectors.T @ np.asarray(x.T @ centered_targets)  # V'Xc'Tc = V'X'Tc (Tc sums to 0) [p, k]
        else:  # K = X X' - (X m) 1' - 1 (X m)' + m'm
            row_dot_mean = np.asarray(x @ self.x_mean).ravel()
            kernel = x @ x.T
            kernel = (kernel.toarray() if sp.issparse(kernel) else kernel) - row_dot_mean[:, None] - row_dot_mean[None, :]
            self.eigenvalues, self.vectors = np.linalg.eigh(kernel + self.x_mean @ self.x_mean)
            self.projected = self.vectors.T @ centered_targets  # U'Tc [n, k]
        self.eigenvalues = np.clip(self.eigenvalues, 0.0, None)  # round-off below zero

    def coefficients(self, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(W [p, k], intercepts [k]) with target j penalised by alphas[j]."""
        weights = self.vectors @ (self.projected / (self.eigenvalues[:, None] + alphas[None, :]))
        if not self.primal:  # dual weights D [n, k]: W = Xc'D = X'D - m (1'D)
            weights = np.asarray(self.x.T @ weights) - np.outer(self.x_mean, weights.sum(axis=0))
        return weights, self.t_mean - self.x_mean @ weights


class GroupFoldRidgeCV(RegressorMixin, BaseEstimator):
    """Ridge regression with its own penalty per target column, chosen from ``alphas`` by the best mean R^2 over the
    given ``cv`` folds (train, test row indices), as ``RidgeCV(cv=folds)`` chooses for one target; all targets and
    penalties come from one eigendecomposition per fold (``_RidgePath``), where RidgeCV would search each target on
    its own. ``with_group_folds`` passes folds of whole clusters."""

    def __init__(self, alphas: Sequence[float] = tuple(RIDGE_ALPHAS), cv: Sequence[tuple[np.ndarray, np.ndarray]] = ()):
        self.alphas = alphas
        self.cv = cv

    def fit(self, x: Any, y: np.ndarray) -> GroupFoldRidgeCV:
        if not len(self.cv):
            raise ConfigError("GroupFoldRidgeCV chooses its penalties on the folds `cv`: give at least one (train, test) split.")
        x = x.tocsr() if sp.issparse(x) else x  # rows are indexed
        targets = np.asarray(y, dtype=float).reshape(x.shape[0], -1)
        alphas = np.asarray(self.alphas, dtype=float)
        scores = np.zeros((len(alphas), targets.shape[1]))
        for train, test in self.cv:
            path = _RidgePath(x[train], targets[train])
            for index, alpha in enumerate(alphas):
                weights, intercepts = path.coefficients(np.full(targets.shape[1], alpha))
                predicted = np.asarray(x[test] @ weights) + intercepts
                scores[index] += r2_score(targets[test], predicted, multioutput="raw_values")
        self.alpha_ = alphas[scores.argmax(axis=0)]  # first best on ties, as GridSearchCV
        self.coef_, self.intercept_ = _RidgePath(x, targets).coefficients(self.alpha_)
        self._one_target = np.ndim(y) == 1
        return self

    def predict(self, x: Any) -> np.ndarray:
        predicted = np.asarray(x @ self.coef_) + self.intercept_
        return predicted[:, 0] if self._one_target else predicted


def _fits_targets_jointly(learner: RegressorMixin) -> bool:
    """True where one multi-output fit equals separate per-target fits (and is cheaper): least squares, ridge with a
    fixed alpha, RidgeCV or GroupFoldRidgeCV choosing an alpha per target. Not a RidgeCV with one shared alpha, nor
    multi-task models."""
    final_step = _final_step(learner)
    if type(final_step) is RidgeCV:
        return bool(final_step.alpha_per_target)
    return type(final_step) in (LinearRegression, Ridge, GroupFoldRidgeCV)


def with_group_folds(learner: RegressorMixin, groups: np.ndarray) -> RegressorMixin:
    """``learner`` choosing its penalty by folds that keep the clusters ``groups`` whole, as the cross-fitting folds
    do, where RidgeCV (leave-one-out) and LassoCV (k-fold) split rows: rows of one cluster share a prompt, so a held-out
    row's cluster mates vouch for a penalty that fits the clusters' own words and misses on new clusters. RidgeCV
    becomes a GroupFoldRidgeCV over its alphas, which also chooses a penalty per target. Other learners, and fewer than
    2 clusters, are left as they are."""
    n_groups = len(np.unique(groups))
    final_step = _final_step(learner)
    if type(final_step) not in (RidgeCV, LassoCV) or n_groups < 2:
        return learner
    folds = list(GroupKFold(min(INNER_FOLDS, n_groups)).split(groups, groups=groups))
    if isinstance(final_step, LassoCV):
        learner = clone(learner)
        _final_step(learner).set_params(cv=folds)
        return learner
    ridge = GroupFoldRidgeCV(alphas=tuple(final_step.alphas), cv=folds)
    return make_pipeline(*[clone(step) for _, step in learner.steps[:-1]], ridge) if isinstance(learner, Pipeline) else ridge


def _fit_predict(learner: RegressorMixin, x_train: Any, targets_train: np.ndarray, x_test: Any) -> np.ndarray:
    """Predictions [n_test, t] of E[target|phi] for each target column."""
    if _fits_targets_jointly(learner):
        model = clone(learner).fit(x_train, targets_train if targets_train.shape[1] > 1 else targets_train[:, 0])
        return np.asarray(model.predict(x_test), dtype=float).reshape(x_test.shape[0], -1)
    return np.column_stack([clone(learner).fit(x_train, column).predict(x_test) for column in targets_train.T])


def _cross_fit_residuals(
    blocks: Sequence[tuple[np.ndarray, str | RegressorMixin]],
    features: Any,
    folds: list,
    seed: int,
    progress: bool,
    groups: np.ndarray | None = None,
) -> list[np.ndarray]:
    """target - E^(-k)[target|phi] for each (target [n, t], learner) block, nuisances fitted on the folds but k; with
    ``groups``, a learner given by name chooses its penalty by folds of whole clusters (``with_group_folds``); an
    instance is used as given.

    Blocks with the same learner are stacked into one target matrix, so a linear learner fits once per fold.
    """
    sparse = sp.issparse(features)
    by_learner: dict[Any, list[int]] = {}
    for index, (_, learner) in enumerate(blocks):
        by_learner.setdefault(learner if isinstance(learner, str) else id(learner), []).append(index)
    stacked = [
        (np.hstack([blocks[index][0] for index in indices]), make_learner(blocks[indices[0]][1], seed, sparse))
        for indices in by_learner.values()
    ]
    named = [isinstance(blocks[indices[0]][1], str) for indices in by_learner.values()]
    stacked_residuals = [np.empty_like(target) for target, _ in stacked]
    for train, test in tqdm(folds, desc="deconfound: cross-fitting folds", disable=not progress):
        for residual, (target, model), by_name in zip(stacked_residuals, stacked, named):
            model = with_group_folds(model, groups[train]) if groups is not None and by_name else model
            residual[test] = target[test] - _fit_predict(model, features[train], target[train], features[test])
    residuals: list[np.ndarray] = [np.empty(0)] * len(blocks)
    for indices, residual in zip(by_learner.values(), stacked_residuals):
        widths = [blocks[index][0].shape[1] for index in indices]
        for index, part in zip(indices, np.split(residual, np.cumsum(widths)[:-1], axis=1)):
            residuals[index] = part
    return residuals


def _residual_share(residual: np.ndarray, original: np.ndarray) -> np.ndarray:
    """sum r^2 / sum (x - mean x)^2 per column: the variance share left after partialling out phi."""
    return (residual**2).sum(axis=0) / ((original - original.mean(axis=0)) ** 2).sum(axis=0)


def _check_not_text_function(share: np.ndarray, names: Sequence[str], what: str, minimum: float) -> None:
    too_small = [(name, value) for name, value in zip(names, share) if value < minimum]
    if too_small:
        listed = ", ".join(f"{name!r} ({value:.2%} left)" for name, value in too_small)
        raise DataError(
            f"The {what} {listed} {'is' if len(too_small) == 1 else 'are'} (almost) a function of the text "
            "features: partialling out the text leaves "
            f"less than {minimum:.0%} of its variance, so its effect on the outcome cannot be told apart from the "
            "text's. Drop it, or pass an instrument column that moves it independently of the text."
        )


def _warn_mostly_text(share: np.ndarray, names: Sequence[str]) -> None:
    """Warn of confounders the text nearly determines: their theta rests on the little variance left, and takes up
    whatever of the text's own effect the nuisance fit misses."""
    mostly = [(name, value) for name, value in zip(names, share) if value < MOSTLY_TEXT_SHARE]
    if mostly:
        listed = ", ".join(f"{name!r} ({value:.1%} left)" for name, value in mostly)
        warnings.warn(
            f"The text nearly determines the confounder{'s' if len(mostly) > 1 else ''} {listed}: "
            f"{for_count(len(mostly), 'its', 'their')} theta rests on the little variance that partialling out the text "
            "leaves, and takes up what the text features miss of the text's own effect. Pass an instrument column "
            "that moves it independently of the text, or drop it.",
            TextDeterminedWarning,
            stacklevel=3,
        )


def _check_full_rank(matrix: np.ndarray, names: Sequence[str], what: str) -> None:
    """Fail when the columns of ``matrix`` are linearly dependent (rank under numpy's matrix_rank tolerance,
    sigma_max * max(n, k) * eps), naming each column that the ones before it span: from one QR decomposition, column j
    is spanned where |R_jj| (its distance from the columns before it) is within that tolerance."""
    singular_values = np.linalg.svd(matrix, compute_uv=False)
    tolerance = singular_values.max() * max(matrix.shape) * np.finfo(singular_values.dtype).eps  # matrix_rank's
    if (singular_values > tolerance).sum() == matrix.shape[1]:
        return
    r = np.linalg.qr(matrix, mode="r")
    redundant = [name for name, distance in zip(names, np.abs(np.diag(r))) if distance <= tolerance]
    raise DataError(
        f"The {what} columns {redundant or list(names)} are (after partialling out the text) "
        + ("linear combinations of the other columns" if redundant else "nearly linearly dependent together")
        + ", so their effects are not identified. Drop them (e.g. a derived feature already implied by another column, "
        "or all levels of a one-hot group)."
    )


def _first_stage_f(c_res: np.ndarray, z_res: np.ndarray) -> np.ndarray:
    """Sanderson-Windmeijer conditional first-stage F per confounder (the usual F of r_Cj on r_Z when k = 1).

    For confounder j: delta = 2SLS of r_Cj on the other confounders r_C-j (instruments r_Z);
    F_j = [(TSS - RSS) / (m - k + 1)] / [RSS / (n - m)] of the regression of r_Cj - r_C-j delta on r_Z.
    """
    n, m = z_res.shape
    k = c_res.shape[1]
    statistics = []
    for j in range(k):
        target = c_res[:, j]
        if k > 1:
            others = np.delete(c_res, j, axis=1)
            others_fitted = z_res @ np.linalg.lstsq(z_res, others, rcond=None)[0]
            target = target - others @ np.linalg.lstsq(others_fitted, target, rcond=None)[0]
        fitted = z_res @ np.linalg.lstsq(z_res, target, rcond=None)[0]
        rss = float(((target - fitted) ** 2).sum())
        tss = float((target**2).sum())
        statistics.append(((tss - rss) / (m - k + 1)) / (rss / (n - m)))
    return np.array(statistics)


def _robust_fit(
    design: np.ndarray, regressors: np.ndarray, target: np.ndarray, groups: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """theta = (D'D)^-1 D'y with sandwich covariance (D'D)^-1 [sum_g s_g s_g'] (D'D)^-1 * small-sample factor.

    D = regressors for OLS, D = r_Z (r_Z'r_Z)^-1 r_Z'r_C (first-stage fit) for 2SLS; e = y - regressors theta;
    s_g = sum over rows i of cluster g of D_i e_i (each row its own cluster without groups: HC1, factor n/(n-k);
    with groups: CR1, factor G/(G-1) (n-1)/(n-k)).
    """
    n, k = design.shape
    theta = np.linalg.lstsq(design, target, rcond=None)[0]
    scores = design * (target - regressors @ theta)[:, None]
    if groups is None:
        factor = n / (n - k)
    else:
        _, cluster = np.unique(groups, return_inverse=True)
        cluster_scores = np.zeros((cluster.max() + 1, k))
        np.add.at(cluster_scores, cluster, scores)
        n_clusters = len(cluster_scores)
        scores, factor = cluster_scores, n_clusters / (n_clusters - 1) * (n - 1) / (n - k)
    bread = np.linalg.inv(design.T @ design)
    return theta, factor * bread @ (scores.T @ scores) @ bread


def group_codes(groups: Sequence[Any] | np.ndarray, n_rows: int) -> np.ndarray:
    """Integer codes [n] of the group ids, one per row, in order of first appearance; ids are told apart by their
    repr, so 1 and "1" are two groups (as two files' ids would be), while 1, 1.0 and np.int64(1) are one. A missing
    id (None, NaN, blank) is an error naming its rows: it would put unrelated rows into one cluster."""
    ids = list(groups.tolist() if hasattr(groups, "tolist") else groups)
    if len(ids) != n_rows or any(isinstance(value, (list, tuple, np.ndarray)) for value in ids):
        raise DataError(f"groups must hold one id per row ({n_rows} rows); got {len(ids)} entries, or lists among them.")
    missing = [row for row, value in enumerate(ids) if is_missing(value)]
    if missing:
        raise DataError(
            f"groups has missing ids (None/NaN/blank) at {describe_rows(missing)}: a missing id would put unrelated "
            "rows into one cluster. Give those rows an id of their own, or drop them."
        )
    codes: dict[str, int] = {}
    # a numpy scalar as the Python value it holds, a whole number as its int: 1, 1.0 and np.int64(1) are one id
    plain = (plain_number(value.item() if isinstance(value, np.generic) else value) for value in ids)
    return np.array([codes.setdefault(repr(value), len(codes)) for value in plain], dtype=int)


def effective_groups(groups: np.ndarray) -> float:
    """n^2 / sum_g n_g^2: the number of equal-sized clusters that weigh as much (the number of groups when they are
    of one size; near 1 when one group holds most rows), which cluster-robust standard errors rest on."""
    sizes = np.unique(groups, return_counts=True)[1].astype(float)
    return float(sizes.sum() ** 2 / (sizes**2).sum())


def check_design(
    confounders: np.ndarray, names: Sequence[str], n_folds: int, groups: Sequence[Any] | np.ndarray | None = None
) -> int:
    """Fail on what no text features can fix: a constant confounder, fewer rows (or groups) than folds, no more rows
    than confounder columns. Returns the number of cross-fitting units (rows, or groups)."""
    n, k = confounders.shape
    constant = [name for name, spread in zip(names, np.ptp(confounders, axis=0)) if spread == 0]
    if constant:
        raise DataError(f"Confounders {constant} have the same value in every row (no variance); remove them.")
    group_ids = None if groups is None else group_codes(groups, n)
    n_units = n if group_ids is None else len(np.unique(group_ids))
    if n_folds < 2:
        raise ConfigError(f"n_folds must be at least 2 for cross-fitting; got {n_folds}.")
    if n_units < n_folds:
        unit = "rows" if group_ids is None else "groups"
        raise DataError(
            f"Only {n_units} {unit} for n_folds={n_folds} cross-fitting folds; need at least one per fold. "
            "Lower n_folds or add data."
        )
    if n <= k:
        raise DataError(f"Only {n} rows for {k} confounder columns; need more rows than confounder columns.")
    return n_units


def partial_out(
    y: Sequence[float] | np.ndarray,
    confounders: np.ndarray,
    features: Any,
    n_folds: int = 5,
    outcome_learner: str | RegressorMixin = "ridge",
    confounder_learner: str | RegressorMixin = "ridge",
    instrument: np.ndarray | None = None,
    seed: int = 0,
    confounder_names: Sequence[str] | None = None,
    progress: bool = True,
    *,
    instrument_names: Sequence[str] | None = None,
    groups: Sequence[Any] | np.ndarray | None = None,
    ci_level: float = 0.95,
    min_residual_share: float = MIN_RESIDUAL_SHARE,
) -> DeconfoundResult:
    """Estimate theta in Y = theta'C + l(phi) + e by cross-fitted partialling out and deconfound Y.

    Args:
        y: outcome [n] (float, or 0/1: then theta is a linear-probability effect).
        confounders: C [n] or [n, k], e.g. from ``build_confounder_matrix``.
        features: text features phi [n, d], dense or scipy sparse (e.g. TF-IDF, pooled hidden states).
        n_folds: K cross-fitting folds; E[Y|phi], E[C|phi] (and E[Z|phi]) for rows in fold k are fitted on the
            other K-1 folds.
        outcome_learner, confounder_learner: nuisance regressors, a name in ``LEARNER_NAMES`` or an instance.
        instrument: Z [n] or [n, m], m >= k, moving C but not Y directly: theta by 2SLS of r_Y on r_C with
            instruments r_Z. Exogenous confounders can serve as their own instruments (stack them into Z).
        groups: cluster ids (rows sharing a prompt): folds keep clusters whole, standard errors are
            cluster-robust (CR1) instead of HC1.
        min_residual_share: a confounder (or instrument) with less than this share of its variance left after
            partialling out the text is an error.

    Returns:
        ``DeconfoundResult`` with theta, robust se, normal CIs at ``ci_level`` and the deconfounded outcome
        r~ = Y - theta'(C - mean C).
    """
    if not 0 < ci_level < 1:
        raise ConfigError(f"ci_level={ci_level!r} must be a probability between 0 and 1, e.g. 0.95 for 95% intervals.")
    outcome = _outcome_vector(y)[:, None]
    n = len(outcome)
    confounder_matrix, names = _named_finite_matrix(confounders, "confounder matrix", n, confounder_names, "confounder_names")
    n_units = check_design(confounder_matrix, names, n_folds, groups)
    features = _check_features(features, n)
    group_ids = None if groups is None else group_codes(groups, n)
    effective = None if group_ids is None else effective_groups(group_ids)
    if effective is not None and effective < FEW_GROUPS:
        largest = int(np.bincount(group_ids).max())
        few = f"Only {n_units} groups" if n_units < FEW_GROUPS else (
            f"The {n_units} groups weigh as {effective:.2f} groups of one size (n^2 / sum of squared group sizes; the "
            f"largest group holds {largest} of {n} rows)"
        )
        warnings.warn(
            f"{few}: cluster-robust standard errors from fewer than {FEW_GROUPS} groups (of one size) understate the "
            "uncertainty, so the confidence intervals are too narrow. A finer group column gives more groups, and "
            "more of a similar size.",
            stacklevel=2,
        )

    _check_learners((outcome_learner, confounder_learner), features, seed)
    blocks = [(outcome, outcome_learner), (confounder_matrix, confounder_learner)]
    if instrument is not None:
        instrument_matrix, z_names = _check_instrument(instrument, instrument_names, n, confounder_matrix.shape[1])
        blocks.append((instrument_matrix, confounder_learner))

    if group_ids is None:
        folds = list(KFold(n_folds, shuffle=True, random_state=seed).split(outcome))
    else:
        folds = list(GroupKFold(n_folds, shuffle=True, random_state=seed).split(outcome, groups=group_ids))
    residuals = _cross_fit_residuals(blocks, features, folds, seed, progress, group_ids)
    y_res, c_res = residuals[0][:, 0], residuals[1]
    residual_share = _residual_share(c_res, confounder_matrix)
    _check_not_text_function(residual_share, names, "confounder", min_residual_share)
    if instrument is None:
        _warn_mostly_text(residual_share, names)
    _check_full_rank(c_res, names, "confounder")

    first_stage_f = None
    design = c_res
    if instrument is not None:
        z_res = residuals[2]
        _check_not_text_function(_residual_share(z_res, instrument_matrix), z_names, "instrument", min_residual_share)
        _check_full_rank(z_res, z_names, "instrument")
        first_stage_f = _first_stage_f(c_res, z_res)
        _warn_weak_instruments(first_stage_f, names)
        design = z_res @ np.linalg.lstsq(z_res, c_res, rcond=None)[0]
    theta, covariance = _robust_fit(design, c_res, y_res, group_ids)
    se = np.sqrt(np.diag(covariance))
    z_value = NormalDist().inv_cdf(0.5 + ci_level / 2)
    confounder_mean = confounder_matrix.mean(axis=0)
    return DeconfoundResult(
        theta=theta,
        se=se,
        ci_low=theta - z_value * se,
        ci_high=theta + z_value * se,
        confounder_names=names,
        n=n,
        n_folds=n_folds,
        residual_share=residual_share,
        outcome_residual_share=float(_residual_share(y_res[:, None], outcome)[0]),
        confounder_mean=confounder_mean,
        deconfounded_outcome=remove_confounder_effect(outcome[:, 0], confounder_matrix, theta, confounder_mean),
        first_stage_f=first_stage_f,
        ci_level=ci_level,
        outcome_learner=_learner_label(outcome_learner),
        confounder_learner=_learner_label(confounder_learner),
        n_groups=None if group_ids is None else n_units,
        instrument_names=None if instrument is None else list(z_names),
        effective_groups=None if effective is None else round(effective, 2),
    )
