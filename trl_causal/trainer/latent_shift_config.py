"""Configuration of the ``latent_shift`` trainer (METHODS.md section 3)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from trl import SFTConfig

from ..configuration import check_finite_number, unset_null_words
from ..errors import ConfigError, did_you_mean
from ..latent_shift import ADJUSTMENTS, ENTROPY_MODES, PHI_SOURCES
from .mixins import lower_is_better_by_default

FROZEN_VIEWS = ("auto", "adapters", "reference")
TRL_COLUMNS = ("labels", "input_ids", "attention_mask", "completion_mask", "assistant_masks", "position_ids")  # TRL's own


@dataclass
class LatentShiftConfig(SFTConfig):
    r"""
    [`~trl.SFTConfig`] plus the settings of latent-shift adjusted SFT:
    L = L_SFT + lambda_causal * L_C + lambda_adj * L_adj, and the adjusted prediction at test time.

    Parameters:
        verbalizer (`dict[str, str]` or `str`, *optional*):
            Label -> answer text (a mapping, or the same as a JSON string). `None` reads it from the training data:
            each label's answer is its rows' completion text.
        label_column (`str` or `None`, *optional*):
            Column with each row's label. `None` (default): the label whose answer is the row's completion text.
        low_level_layer (`int`, *optional*, defaults to `0`):
            `hidden_states` index the low-level features Phi are pooled from (0 = the embeddings).
        n_patches (`int`, *optional*, defaults to `10`):
            Contiguous patches the prompt tokens are split into for Phi.
        n_causal (`int`, *optional*, defaults to `8`):
            Number of causal states c that the causal head g predicts.
        d_phi (`int`, *optional*, defaults to `32`):
            Size of the low-level feature vector Phi.
        causal_hidden_sizes, encoder_hidden_sizes, adjusted_hidden_sizes (`list[int]`):
            Hidden layer sizes of g, of the Phi encoder and of the adjusted head h.
        heads_learning_rate (`float` or `None`, *optional*, defaults to `1e-3`):
            Learning rate of the randomly initialised heads (g, the Phi encoder, h); `None`: `learning_rate`.
        lambda_causal (`float`, *optional*, defaults to `1.0`):
            Weight of L_C.
        lambda_adj (`float`, *optional*, defaults to `1.0`):
            Weight of L_adj.
        adjustment (`str`, *optional*, defaults to `"shuffle_train"`):
            `"shuffle_train"`: h is trained on Phi of other rows; `"shuffle_test"`: h is trained on the true pairs
            and only the prediction mixes in other rows' Phi.
        entropy_mode (`str`, *optional*, defaults to `"mutual_information"`):
            Entropy terms of L_C: `"mutual_information"` (of the batch's mean q minus the rows' mean entropy),
            `"marginal"` (of the batch's mean q) or `"per_example"`.
        phi_samples (`int`, *optional*, defaults to `20`):
            K, the Phi' drawn per input for the adjusted prediction.
        phi_source (`str`, *optional*, defaults to `"bank"`):
            Where the prediction draws Phi' from: `"bank"` (the memory bank filled in training) or `"batch"`; `"own"`
            uses each row's own Phi, i.e. no adjustment (the no-shuffle ablation, with `adjustment: shuffle_test`).
        memory_bank_size (`int`, *optional*, defaults to `1024`):
            Number of training rows whose patch features the memory bank keeps (saved with the heads).
        frozen_view (`str`, *optional*, defaults to `"auto"`):
            The frozen pretrained view that gives R0: `"adapters"` (the PEFT model with its adapters disabled),
            `"reference"` (a frozen copy of the model made before training) or `"auto"` (adapters with PEFT,
            reference without).
        latent_shift_seed (`int` or `None`, *optional*):
            Seed of the heads' initialisation, of the training shuffles (drawn per optimizer step and micro-batch,
            so a resumed run draws the same ones) and of the test-time draws; `None` uses `seed`.

    Defaults that differ from [`~trl.SFTConfig`]: `dataloader_drop_last=True` (the shuffle needs 2 rows per batch,
    so a last batch of one row is dropped) and `ddp_find_unused_parameters=False` (the heads run outside the model's
    DDP forward, so DDP must not search that forward's graph for unused parameters).
    """

    verbalizer: dict[str, str] | str | None = field(
        default=None,
        metadata={
            "help": "Label -> answer text, as a mapping or a JSON string, e.g. '{\"positive\": \"positive\", "
            "\"negative\": \"negative\"}'. Its order fixes the class order of the heads. None reads it from the "
            "training data: each label's answer is the (stripped) completion text of its rows."
        },
    )
    label_column: str | None = field(
        default=None,
        metadata={
            "help": "Column with each row's label (a key of the verbalizer). None: the label whose verbalizer answer "
            "is the row's completion text (the text itself when the verbalizer is read from the data)."
        },
    )
    low_level_layer: int = field(
        default=0,
        metadata={"help": "Index into the model's hidden_states of the layer Phi is pooled from (0 = the embeddings)."},
    )
    n_patches: int = field(
        default=10,
        metadata={
            "help": "Number of contiguous patches the prompt tokens are split into for Phi (paper: 10). A prompt "
            "with fewer tokens uses one patch per token; such rows are counted in the `patch_fallback_rows` metric."
        },
    )
    n_causal: int = field(default=8, metadata={"help": "Number of causal states c that the causal head g predicts."})
    d_phi: int = field(default=32, metadata={"help": "Size of the low-level feature vector Phi."})
    causal_hidden_sizes: list[int] = field(
        default_factory=list,
        metadata={"help": "Hidden layer sizes of the causal head g (after its LayerNorm); empty = one linear layer."},
    )
    encoder_hidden_sizes: list[int] = field(
        default_factory=lambda: [256],
        metadata={"help": "Hidden layer sizes of the MLP that turns the patch features into Phi."},
    )
    adjusted_hidden_sizes: list[int] = field(
        default_factory=lambda: [64],
        metadata={"help": "Hidden layer sizes of the adjusted head h([q1, Phi])."},
    )
    heads_learning_rate: float | None = field(
        default=1e-3,
        metadata={
            "help": "Learning rate of the heads g, the Phi encoder and h, which start from random weights (the model "
            "keeps `learning_rate`). null: the model's learning rate."
        },
    )
    lambda_causal: float = field(default=1.0, metadata={"help": "Weight of the causal alignment loss L_C (paper: 1)."})
    lambda_adj: float = field(default=1.0, metadata={"help": "Weight of the adjusted-head loss L_adj (paper: 1)."})
    adjustment: str = field(
        default="shuffle_train",
        metadata={
            "help": "shuffle_train: h is trained on [q1, Phi of another row] (a derangement of the batch); "
            "shuffle_test: h is trained on the true pairs and only the prediction mixes in other rows' Phi.",
            "choices": list(ADJUSTMENTS),
        },
    )
    entropy_mode: str = field(
        default="mutual_information",
        metadata={
            "help": "Entropy terms of L_C: mutual_information = entropy of the batch's mean q minus the mean entropy "
            "of each row's q (confident, balanced causal states); marginal = entropy of the batch's mean q only "
            "(uniform q for every row also minimises it); per_example = mean entropy of each row's q.",
            "choices": list(ENTROPY_MODES),
        },
    )
    phi_samples: int = field(
        default=20, metadata={"help": "K: Phi' drawn per input for the adjusted prediction (paper: 20)."}
    )
    phi_source: str = field(
        default="bank",
        metadata={
            "help": "Where the adjusted prediction draws Phi' from: bank (the memory bank filled in training; any "
            "batch size) or batch (the other rows of the test batch; needs 2 rows or more). own: each row's own Phi, i.e. "
            "no adjustment (the no-shuffle ablation when trained with adjustment=shuffle_test).",
            "choices": list(PHI_SOURCES),
        },
    )
    memory_bank_size: int = field(
        default=1024,
        metadata={"help": "Number of training rows whose patch features the memory bank keeps (saved with the heads)."},
    )
    frozen_view: str = field(
        default="auto",
        metadata={
            "help": "The frozen pretrained view that gives R0: adapters (the PEFT model with adapters disabled, no "
            "extra memory), reference (a frozen copy of the model taken before training), auto (adapters with PEFT, "
            "reference without).",
            "choices": list(FROZEN_VIEWS),
        },
    )
    latent_shift_seed: int | None = field(
        default=None,
        metadata={
            "help": "Seed of the heads' initialisation, of the training shuffles (drawn per optimizer step and "
            "micro-batch, so a resumed run draws the same ones) and of the test-time draws; None uses `seed`."
        },
    )
    dataloader_drop_last: bool = field(
        default=True,
        metadata={
            "help": "Drop the last incomplete training batch (default True here: the shuffle needs 2 rows per batch). "
            "Evaluation keeps every row; a last evaluation batch of one row adds L_SFT alone."
        },
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={
            "help": "Must stay False here: the heads run outside the model's DDP forward, so DDP's search for unused "
            "parameters would mark them ready (unused) when that forward ends and again when their gradients arrive "
            "in backward, which fails."
        },
    )

    @property
    def latent_shift_seed_value(self) -> int:
        """The seed of the heads, the training shuffles and the test-time draws: ``latent_shift_seed``, or ``seed`` when that is None (read
        when used, so a copy of the config with another ``seed`` starts other heads)."""
        return self.seed if self.latent_shift_seed is None else self.latent_shift_seed

    def __post_init__(self):
        if self.loss_type is None:  # TRL < 1.16 leaves it unset and would pick "chunked_nll"
            self.loss_type = "nll"
        lower_is_better_by_default(self, ("loss_sft", "loss_causal", "loss_adj"))
        super().__post_init__()
        unset_null_words(self, "label_column", "verbalizer")
        self.verbalizer = parse_verbalizer(self.verbalizer)
        if self.label_column in TRL_COLUMNS:
            raise ConfigError(
                f"label_column={self.label_column!r} is a column TRL reads as model input ({self.label_column!r} "
                "would be taken as token labels): rename the class column, e.g. to 'class_label'."
            )
        for name, choices in (
            ("adjustment", ADJUSTMENTS),
            ("entropy_mode", ENTROPY_MODES),
            ("phi_source", PHI_SOURCES),
            ("frozen_view", FROZEN_VIEWS),
        ):
            if getattr(self, name) not in choices:
                raise ConfigError(
                    f"{name}={getattr(self, name)!r} is not one of {', '.join(map(repr, choices))}."
                    f"{did_you_mean(getattr(self, name), choices)}"
                )
        for name, minimum in (
            ("n_patches", 1),
            ("n_causal", 2),
            ("d_phi", 1),
            ("phi_samples", 1),
            ("memory_bank_size", 1),
            ("low_level_layer", 0),
        ):
            if getattr(self, name) < minimum:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least {minimum}.")
        if self.latent_shift_seed is not None and self.latent_shift_seed < 0:
            raise ConfigError(f"latent_shift_seed must be a non-negative integer (or null for seed), not {self.latent_shift_seed}.")
        for name in ("causal_hidden_sizes", "encoder_hidden_sizes", "adjusted_hidden_sizes"):
            sizes = getattr(self, name)
            if any(isinstance(size, bool) or not isinstance(size, int) or size < 1 for size in sizes):
                raise ConfigError(f"{name}={sizes!r}: each hidden layer size must be an integer >= 1.")
        for name in ("lambda_causal", "lambda_adj"):
            check_finite_number(name, getattr(self, name))
        if self.heads_learning_rate is not None:
            check_finite_number("heads_learning_rate", self.heads_learning_rate, above=True, hint=", or null for learning_rate")
        if self.per_device_train_batch_size < 2:
            raise ConfigError(
                f"per_device_train_batch_size={self.per_device_train_batch_size}: latent_shift needs at least 2 rows "
                "per device batch, because the shuffle pairs each row with another row's Phi and L_C's entropy is "
                "taken over the batch. Set per_device_train_batch_size to 2 or more (gradient_accumulation_steps keeps "
                "the effective batch for L_SFT, but the shuffle and L_C's batch entropy stay per micro-batch)."
            )
        metric = (self.metric_for_best_model or "").removeprefix("eval_")
        if metric in ("loss_causal", "loss_adj") and self.per_device_eval_batch_size < 2:
            raise ConfigError(
                f"metric_for_best_model: {self.metric_for_best_model} is not logged with per_device_eval_batch_size=1 "
                "(a batch of one row has no other row to shuffle Phi with, so evaluation scores L_SFT alone); set "
                "per_device_eval_batch_size to 2 or more, or use `metric_for_best_model: loss`."
            )
        if self.completion_only_loss is False:
            raise ConfigError(
                "completion_only_loss=False: latent_shift pools over the prompt tokens, which it finds as the tokens "
                "before the last supervised span; leave completion_only_loss unset (or true)."
            )
        if self.packing or self.padding_free:
            raise ConfigError(
                "packing / padding_free merge rows, but latent_shift pools each row's own prompt; set `packing: false` "
                "and `padding_free: false`."
            )
        if self.neftune_noise_alpha:
            raise ConfigError(
                f"neftune_noise_alpha={self.neftune_noise_alpha}: NEFTune adds noise to the embedding layer's output, "
                "which latent_shift also reads for its frozen view R0 (the adapters-disabled model) and its patch "
                "features Phi, so training would store noised Phi in the memory bank that clean prediction draws "
                "from. Leave neftune_noise_alpha unset."
            )
        if self.ddp_find_unused_parameters:
            raise ConfigError(
                "ddp_find_unused_parameters=True: the heads run outside the model's DDP forward, so DDP would mark "
                "them ready (unused) when that forward ends and again when their gradients arrive in backward, which "
                "fails; leave it False."
            )
        if self.loss_type != "nll":
            raise ConfigError(f"loss_type={self.loss_type!r}: latent_shift computes the 'nll' SFT loss itself.")


def parse_verbalizer(value: dict | str | None) -> dict[str, str] | None:
    """The verbalizer as {label: answer} with string keys and stripped answers, after checking it."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ConfigError(
                f"verbalizer is {value!r}, which is no mapping of labels to answer texts ({error} as JSON). In the "
                "YAML write a mapping: `verbalizer: {positive: positive, negative: negative}`; on the command line, "
                "JSON: --verbalizer '{\"positive\": \"positive\", \"negative\": \"negative\"}'."
            ) from error
    if not isinstance(value, dict):
        raise ConfigError(f"verbalizer must map labels to answer texts, got {type(value).__name__}: {value!r}.")
    booleans = [(label, answer) for label, answer in value.items() if isinstance(answer, bool)]
    if booleans:
        raise ConfigError(
            f"verbalizer entry {booleans[0][0]!r}: {booleans[0][1]!r} answers with a boolean: YAML reads unquoted "
            "yes/no/true/false/on/off as booleans. Quote the answers, e.g. {\"pos\": \"yes\", \"neg\": \"no\"}."
        )
    # a boolean label (YAML's true:, or an unquoted yes:) is the text of a boolean label column: "True" / "False"
    verbalizer = {str(label): str(answer).strip() for label, answer in value.items()}
    if len(verbalizer) < 2:
        raise ConfigError(f"verbalizer needs at least 2 labels, got {verbalizer!r}.")
    empty = [label for label, answer in verbalizer.items() if not answer]
    if empty:
        raise ConfigError(f"verbalizer gives label(s) {empty} an empty answer.")
    by_answer: dict[str, str] = {}
    for label, answer in verbalizer.items():
        if answer in by_answer:
            raise ConfigError(f"verbalizer gives labels {by_answer[answer]!r} and {label!r} the same answer {answer!r}.")
        by_answer[answer] = label
    return verbalizer
