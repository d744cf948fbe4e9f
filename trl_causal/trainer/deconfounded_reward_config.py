"""Configuration of the ``deconfounded_reward`` trainer (DeconfoundLM, METHODS.md section 2)."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import RewardConfig

from ..configuration import check_column_names, check_finite_number, unset_null_words
from ..deconfound.confounders import MIN_LEVEL_ROWS, TIMESTAMP_FEATURES
from ..deconfound.partial_out import LEARNER_NAMES
from ..errors import ConfigError, did_you_mean
from .mixins import lower_is_better_by_default

MODES = ("deconfounded", "naive", "covariate", "invariance")
OBJECTIVES = ("regression", "pairwise")
FEATURE_SOURCES = ("model", "tfidf")
FEATURE_AUTOCAST = ("auto", "none", "bf16", "fp16")
_LIST_FIELDS = (
    "numeric_confounders",
    "categorical_confounders",
    "timestamp_confounders",
    "timestamp_features",
    "instrument_columns",
    "endogenous_confounders",
)


@dataclass
class DeconfoundedRewardConfig(RewardConfig):
    r"""
    [`~trl.RewardConfig`] plus the settings of a reward model trained on observational outcomes with the causal
    effect of known confounders removed.

    Rows hold a text (`text_column`, or TRL's `prompt` + `completion`), an outcome Y and confounders C. Before
    training, theta is estimated by cross-fitted partialling out of the text features phi in
    Y = theta'C + l(phi) + e (2SLS on the residuals when `instrument_columns` are given), and the reward model learns
    the deconfounded outcome r~ = Y - theta'(C - mean C), standardised to mean 0 and variance 1.
    The rows are tokenized by the trainer (the reward model scores `text + eos`, or the chat template of
    `prompt + completion`); rows longer than `max_length` are dropped, as TRL's `RewardTrainer` drops pairs.
    """

    outcome_column: str = field(
        default="outcome",
        metadata={"help": "Column with the observed outcome Y (a number, or 0/1 such as a click)."},
    )
    text_column: str | None = field(
        default="text",
        metadata={
            "help": "Column with the text the reward scores. Set to null to score TRL's `prompt` + `completion` "
            "columns (plain texts or message lists)."
        },
    )
    numeric_confounders: list[str] = field(
        default_factory=list, metadata={"help": "Columns of numeric confounders (price, audience size, ...)."}
    )
    categorical_confounders: list[str] = field(
        default_factory=list,
        metadata={"help": "Columns of categorical confounders (one-hot coded, first level as reference)."},
    )
    timestamp_confounders: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Columns of timestamps (ISO strings, or epoch seconds as numbers or text), turned into "
            "`timestamp_features`. Weekday and month are those in UTC of a timestamp with an offset "
            "('2024-03-28T20:00:00-05:00' is a Friday, as its epoch seconds are); a timestamp without one is taken as written."
        },
    )
    min_level_rows: int = field(
        default=MIN_LEVEL_ROWS,
        metadata={
            "help": "Values of a categorical confounder (and weekdays, months) held by fewer training rows than this "
            "are pooled, with a warning and `pooled_levels` in the report: into one level `column=(other)`, or, where "
            "together they hold fewer rows than this, into the reference level. Where the reference is the only value "
            "held by this many rows, they form the other level however few (`column=(other)`, or a lone rare value "
            "under its own name); where every value is rare, none is pooled. The effect of a value of one row is that "
            "row's noise, with a standard error near 0. 1 keeps every value."
        },
    )
    timestamp_features: list[str] = field(
        default_factory=lambda: list(TIMESTAMP_FEATURES),
        metadata={
            "help": "Features derived from each timestamp column: weekday (one-hot), month (one-hot), trend (days "
            "since the earliest row)."
        },
    )
    instrument_columns: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Instrument columns Z that move the confounders but not the outcome directly; theta is then "
            "estimated by partialling-out IV, which needs at least one instrument per column of the confounder "
            "matrix that the instruments move (see endogenous_confounders). A first-stage F below 10 gives a warning."
        },
    )
    endogenous_confounders: list[str] = field(
        default_factory=list,
        metadata={
            "help": "With instrument_columns: the confounder columns the instruments move. The other confounders "
            "are taken as exogenous and serve as their own instruments, so a categorical or timestamp confounder "
            "(several matrix columns) needs no instrument of its own. Default: every confounder column is endogenous."
        },
    )
    group_column: str | None = field(
        default=None,
        metadata={
            "help": "Column whose rows share a context (e.g. the prompt). Cross-fitting folds keep groups whole, "
            "standard errors are cluster-robust, and `objective: pairwise` and DPO pairs compare rows of one group."
        },
    )
    feature_source: str = field(
        default="model",
        metadata={
            "help": "Text features phi for partialling out: model (mean-pooled hidden states of the frozen base model, "
            "see feature_layers; cached on disk) or tfidf (TF-IDF of the words).",
            "choices": list(FEATURE_SOURCES),
        },
    )
    feature_layers: list[int] = field(
        default_factory=lambda: [0, -1],
        metadata={
            "help": "With feature_source model: the hidden states whose masked means over the tokens are concatenated "
            "into phi; 0 is the input embeddings (which words occur), -1 the last layer (words in context). Both by "
            "default, from the one forward pass: what the last layer alone misses of E[C | text] biases theta (see "
            "the README's deconfounded_reward benchmark)."
        },
    )
    feature_batch_size: int = field(
        default=32, metadata={"help": "Rows per forward pass when computing the model's text features."}
    )
    feature_autocast: str = field(
        default="auto",
        metadata={
            "help": "Precision of the model feature pass: auto (bf16 when `bf16` is on, fp16 when `fp16` is, off a CPU, "
            "where training ignores `fp16`; else "
            "bf16 where the device has bf16 matrix units (Ampere+ GPUs, CPUs with AVX512-BF16 or AMX), otherwise the "
            "model's own dtype), none (the model's own dtype), bf16 or fp16 (torch.autocast). The features only "
            "feed the nuisance regressions, so their precision barely moves theta.",
            "choices": list(FEATURE_AUTOCAST),
        },
    )
    feature_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Directory of cached model features, keyed by model and token ids; nothing deletes them (rows "
            "x hidden size x layers x 4 bytes per file). Default: $TRL_CAUSAL_CACHE/features, else "
            "~/.cache/trl_causal/features."
        },
    )
    n_folds: int = field(default=5, metadata={"help": "Cross-fitting folds K of the partialling out."})
    deconfound_seed: int | None = field(
        default=None,
        metadata={
            "help": "Seed of the cross-fitting folds and of the random learners (forest, boosting), so of theta and "
            "the targets; recorded in the report. Defaults to `seed`: set it to vary the training seed alone."
        },
    )
    outcome_learner: str = field(
        default="ridge",
        metadata={
            "help": "scikit-learn learner of E[Y|phi]. ridge: RidgeCV (standardised model features; TF-IDF as it is), "
            "its alpha chosen by leave-one-out, or with group_column by folds of whole groups.",
            "choices": list(LEARNER_NAMES),
        },
    )
    confounder_learner: str = field(
        default="ridge",
        metadata={"help": "scikit-learn learner of E[C|phi] (and E[Z|phi]).", "choices": list(LEARNER_NAMES)},
    )
    objective: str = field(
        default="regression",
        metadata={
            "help": "regression: MSE between the reward and the standardised target t. pairwise: Bradley-Terry loss "
            "-log sigmoid(r_i - r_j - m_ij) on the pairs of rows of one group (`group_column`) with t_i > t_j.",
            "choices": list(OBJECTIVES),
        },
    )
    margin_scale: float | None = field(
        default=None,
        metadata={
            "help": "pairwise: margin m_ij = margin_scale * (t_i - t_j) in the Bradley-Terry loss (TRL's `margin`). "
            "None: no margin."
        },
    )
    min_pair_gap: float = field(
        default=0.0,
        metadata={
            "help": "pairwise and DPO pairs: only rows whose standardised targets differ by more than this pair."
        },
    )
    mode: str = field(
        default="deconfounded",
        metadata={
            "help": "deconfounded: learn r~ (the method). Baselines: naive (learn raw Y), covariate (learn raw Y with "
            "a linear head on C added to the reward in training, dropped at inference, which averages it out), "
            "invariance (learn raw Y plus `invariance_weight` * sum_j corr(reward, C_j)^2 over the batch, ODIN-style).",
            "choices": list(MODES),
        },
    )
    invariance_weight: float = field(
        default=1.0, metadata={"help": "mode invariance: weight of the decorrelation penalty."}
    )
    drop_invalid: bool = field(
        default=False,
        metadata={
            "help": "Drop rows with a missing or non-finite outcome, confounder or instrument (counted and reported). "
            "Default: such rows are an error that counts them."
        },
    )

    def __post_init__(self):
        lower_is_better_by_default(self, ("confounder_corr2",))
        super().__post_init__()
        unset_null_words(self, "text_column", "group_column", "feature_cache_dir")
        for name in _LIST_FIELDS:
            if isinstance(getattr(self, name), str):  # `instrument_columns: z` in a YAML
                setattr(self, name, [getattr(self, name)])
        check_column_names(self, "outcome_column", *(name for name in _LIST_FIELDS if name != "timestamp_features"))
        if isinstance(self.feature_layers, int):  # `feature_layers: -1` in a YAML
            self.feature_layers = [self.feature_layers]
        if not self.feature_layers:
            raise ConfigError("feature_layers is empty: give hidden-state indices to pool, e.g. [0, -1].")
        for name, choices in (
            ("mode", MODES),
            ("objective", OBJECTIVES),
            ("feature_source", FEATURE_SOURCES),
            ("feature_autocast", FEATURE_AUTOCAST),
            ("outcome_learner", LEARNER_NAMES),
            ("confounder_learner", LEARNER_NAMES),
        ):
            if getattr(self, name) not in choices:
                raise ConfigError(
                    f"{name}={getattr(self, name)!r} is not one of {', '.join(map(repr, choices))}."
                    f"{did_you_mean(getattr(self, name), choices)}"
                )
        if self.objective == "pairwise" and getattr(self, "train_sampling_strategy", None) == "group_by_length":
            raise ConfigError(
                "train_sampling_strategy: group_by_length sorts rows by their input_ids, and the pairwise objective "
                "trains on pairs (chosen_ids / rejected_ids): use the default `random`, or `objective: regression`."
            )
        if not (self.numeric_confounders or self.categorical_confounders or self.timestamp_confounders):
            raise ConfigError(
                "No confounder columns: name at least one under numeric_confounders, categorical_confounders or "
                "timestamp_confounders."
            )
        roles = {
            "numeric_confounders": self.numeric_confounders,
            "categorical_confounders": self.categorical_confounders,
            "timestamp_confounders": self.timestamp_confounders,
            "instrument_columns": self.instrument_columns,
        }
        for role, columns in roles.items():
            if self.outcome_column in (columns or []):
                raise ConfigError(
                    f"{role} lists the outcome column {self.outcome_column!r}: the outcome cannot explain itself "
                    f"(partialling it out leaves nothing to learn). Remove it from {role}."
                )
        confounder_columns = [*self.numeric_confounders, *self.categorical_confounders, *self.timestamp_confounders]
        if self.endogenous_confounders and not self.instrument_columns:
            raise ConfigError(
                "endogenous_confounders names the confounders that instrument_columns move; set instrument_columns, "
                "or remove endogenous_confounders."
            )
        if unknown := [column for column in self.endogenous_confounders or [] if column not in confounder_columns]:
            raise ConfigError(
                f"endogenous_confounders names {unknown}, which are not confounder columns; use some of "
                f"{confounder_columns}."
            )
        unknown = [feature for feature in self.timestamp_features if feature not in TIMESTAMP_FEATURES]
        if unknown or not self.timestamp_features:
            raise ConfigError(
                f"timestamp_features={self.timestamp_features} must be a non-empty subset of "
                f"{list(TIMESTAMP_FEATURES)}."
            )
        if self.deconfound_seed is not None and self.deconfound_seed < 0:
            raise ConfigError(f"deconfound_seed must be a non-negative integer (or null for seed), not {self.deconfound_seed}.")
        for name, minimum in (("n_folds", 2), ("feature_batch_size", 1), ("min_level_rows", 1)):
            if getattr(self, name) < minimum:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least {minimum}.")
        for name in ("invariance_weight", "min_pair_gap", "margin_scale"):
            if getattr(self, name) is not None:
                check_finite_number(name, getattr(self, name))
        if self.objective == "pairwise" and self.group_column is None:
            raise ConfigError(
                "objective='pairwise' compares rows that share a context: set group_column (e.g. `group_column: "
                "prompt`), or use objective: regression."
            )
        # transformers looks the metric up at the first evaluation, and fails there before any checkpoint is saved
        metric = (self.metric_for_best_model or "").removeprefix("eval_")
        if metric in ("accuracy", "margin") and self.objective == "regression":
            raise ConfigError(
                f"metric_for_best_model: {self.metric_for_best_model} is logged with objective: pairwise only (it "
                "compares the rewards of a pair); objective: regression logs loss, min_reward, mean_reward and "
                "max_reward: use `metric_for_best_model: loss`, or set objective: pairwise."
            )
        if metric == "confounder_corr2" and self.mode != "invariance":
            raise ConfigError(
                f"metric_for_best_model: {self.metric_for_best_model} is logged in mode: invariance only (mode is "
                f"{self.mode!r}); use `metric_for_best_model: loss`."
            )
        if self.objective == "regression" and self.margin_scale is not None:
            raise ConfigError("margin_scale applies to objective: pairwise; remove it or set objective: pairwise.")
        if self.objective == "regression" and self.center_rewards_coefficient is not None:
            raise ConfigError(
                "center_rewards_coefficient applies to objective: pairwise; the regression target is already centred."
            )
        # the correlation of two values is +-1 whatever they are: a penalty without gradient
        minimum = 3 if self.objective == "regression" else 2
        if self.mode == "invariance" and self.per_device_train_batch_size < minimum:
            rows = "rows (two values always correlate fully)" if self.objective == "regression" else "pairs (the two rows of one pair always correlate fully)"
            raise ConfigError(
                f"mode='invariance' correlates rewards with the confounders over each micro-batch, which needs {minimum} "
                f"or more {rows}: set per_device_train_batch_size to {minimum} or more (gradient_accumulation_steps "
                "does not widen the micro-batch)."
            )

    @property
    def deconfound_seed_value(self) -> int:
        """The seed of the folds and learners: ``deconfound_seed``, or ``seed`` when that is None."""
        return self.seed if self.deconfound_seed is None else self.deconfound_seed

    def feature_autocast_precision(self, bf16_native: bool = False, cpu: bool = False) -> str | None:
        """The autocast precision of the model feature pass: "bf16", "fp16", or None (the model's own dtype).
        ``bf16_native``: the pass runs on a device with bf16 matrix units (``runs_bf16_natively``); ``cpu``: on a
        CPU, where accelerate has no fp16 autocast, so that training with ``fp16`` runs in fp32."""
        if self.feature_autocast == "auto":
            fp16 = self.fp16 and not cpu
            return "bf16" if self.bf16 else "fp16" if fp16 else "bf16" if bf16_native else None
        return None if self.feature_autocast == "none" else self.feature_autocast
