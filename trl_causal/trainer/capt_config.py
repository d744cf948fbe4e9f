"""Configuration of the ``capt`` trainer (CAPT-SFT, METHODS.md section 1)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from trl import SFTConfig

from ..capt import NO_EVENTS_POLICIES, EventEstimator, build_symbol_pool
from ..errors import ConfigError, RegistryError, did_you_mean
from ..plugins import get_plugin_manager


@dataclass
class CAPTConfig(SFTConfig):
    r"""
    [`~trl.SFTConfig`] plus the settings of causality-aware post-training: how events are estimated in each row,
    which symbols replace them, and what the loss covers.

    Every training row is estimated once before training; each time a row is drawn (every epoch) its events get
    fresh symbols from `symbol_pool`, seeded by (`intervention_seed`, epoch, row). Evaluation rows are intervened
    once, each from a stream of its own seeded by (`intervention_seed`, its prompt), as prediction does. Rows are tokenized when drawn, so `dataset_kwargs.skip_prepare_dataset`
    is always set and `packing` is not supported.
    """

    _VALID_DICT_FIELDS = SFTConfig._VALID_DICT_FIELDS + ["event_estimator_kwargs"]

    event_estimator: str = field(
        default="prontoqa",
        metadata={
            "help": "Registered event estimator that turns each row into a template with placeholders: 'prontoqa' "
            "(PrOntoQA sentences), 'vocabulary' (terms from a list, a file or a regex), 'template' (the row already "
            "holds placeholders and a name table), 'cladder' (CLadder causal variables), 'llm' (a local causal LM or an "
            "OpenAI-compatible endpoint, set in event_estimator_kwargs), or one a plugin registers."
        },
    )
    event_estimator_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Options of the event estimator, as a mapping or a JSON object string; e.g. for 'vocabulary': "
            '{"terms": [...]}, {"terms_file": "terms.txt"} or {"pattern": "..."}.'
        },
    )
    symbol_pool: list[str] | str = field(
        default_factory=lambda: "letters",  # a factory: the argument parser reads no plain default of a list field
        metadata={
            "help": "Symbols that replace the events: 'letters' (A-Z, as in the paper), 'nonsense' (random "
            "pronounceable strings), 'pool' (event names of other training rows; saved with the model for inference), or a list of symbols."
        },
    )
    intervention_seed: int | None = field(
        default=None,
        metadata={"help": "Seed of the symbol draws (row i at epoch d uses the seed, d and i). Defaults to `seed`."},
    )
    capt_prompt_loss: bool = field(
        default=False,
        metadata={
            "help": "Put the loss on the prompt tokens too (the reference implementation does). Default: the loss "
            "covers the completion only (for `messages` rows: the last assistant message)."
        },
    )
    on_no_events: str = field(
        default="keep",
        metadata={
            "help": "What to do with a row in which the estimator finds no event: 'keep' it unchanged, 'drop' it, "
            "or stop with an 'error' naming the row. Such rows are counted and reported before training.",
            "choices": list(NO_EVENTS_POLICIES),
        },
    )

    def __post_init__(self):
        super().__post_init__()
        manager = get_plugin_manager()
        try:
            manager.event_estimators.get(self.event_estimator, manager.failures)
        except RegistryError as error:  # names the close registered ones
            raise ConfigError(f"event_estimator: {error}") from error
        if self.event_estimator_kwargs is None:
            self.event_estimator_kwargs = {}
        options = self.event_estimator_kwargs
        if not isinstance(options, dict):
            raise ConfigError(f"event_estimator_kwargs must be a mapping (or a JSON object string), not {options!r}.")
        signature = inspect.signature(self.event_estimator_class)
        try:
            signature.bind(**options)
        except TypeError as error:
            # keys only: a value may be a secret put here by mistake (an API key belongs in api_key_env's variable)
            raise ConfigError(
                f"event_estimator_kwargs with the keys {sorted(options)} do not fit the {self.event_estimator!r} "
                f"estimator ({error}); it takes: {', '.join(signature.parameters) or 'no options'}."
            ) from error
        if isinstance(self.symbol_pool, list) and len(self.symbol_pool) == 1:
            # the command line gives `--symbol_pool nonsense` as a list; one symbol is no pool (every event the same
            # symbol), so a single item is a pool's name, and a misspelt one gets its suggestion
            self.symbol_pool = self.symbol_pool[0]
        if self.symbol_pool != "pool":  # 'pool' needs the training rows; the others are checked now
            try:
                build_symbol_pool(self.symbol_pool)
            except ConfigError as error:
                how = (
                    " A list holds two or more symbols (one alone is read as a pool's name): a YAML list, or on the "
                    "command line `--symbol_pool A B C` or `--symbol_pool '[\"A\", \"B\", \"C\"]'`."
                    if isinstance(self.symbol_pool, str) else ""
                )
                raise ConfigError(f"symbol_pool: {error}{how}") from error
        if self.intervention_seed is not None and self.intervention_seed < 0:
            raise ConfigError(f"intervention_seed must be a non-negative integer, not {self.intervention_seed}.")
        if self.on_no_events not in NO_EVENTS_POLICIES:
            raise ConfigError(
                f"on_no_events is {self.on_no_events!r}; use one of {', '.join(NO_EVENTS_POLICIES)}."
                f"{did_you_mean(self.on_no_events, NO_EVENTS_POLICIES)}"
            )
        if self.completion_only_loss is not None and self.completion_only_loss == self.capt_prompt_loss:
            raise ConfigError(
                f"completion_only_loss={self.completion_only_loss} contradicts "
                f"capt_prompt_loss={self.capt_prompt_loss}; the capt trainer reads capt_prompt_loss (false: loss on the "
                "completion only), so leave completion_only_loss unset."
            )
        for name in ("packing", "eval_packing"):
            if getattr(self, name):
                raise ConfigError(
                    f"{name}=True is not supported by the capt trainer: rows are tokenized afresh at every draw. Set "
                    f"`{name}: false` (`padding_free: true` drops the padding without packing)."
                )
        if self.assistant_only_loss:
            raise ConfigError(
                "assistant_only_loss is not supported by the capt trainer; by default its loss already covers only the "
                "completion (for `messages` rows: the last assistant message). Remove assistant_only_loss."
            )
        if self.dataloader_persistent_workers and self.dataloader_num_workers > 0:
            raise ConfigError(
                "dataloader_persistent_workers=True keeps the first epoch's copy of the rows in the workers, so every "
                "epoch would see the same symbols; set it to false for the capt trainer."
            )
        self.dataset_kwargs = {**(self.dataset_kwargs or {}), "skip_prepare_dataset": True}

    @property
    def intervention_seed_value(self) -> int:
        """The seed of the symbol draws: ``intervention_seed``, or ``seed`` when that is None (read when used, so a
        copy of the config with another ``seed`` draws other symbols)."""
        return self.seed if self.intervention_seed is None else self.intervention_seed

    @property
    def event_estimator_class(self) -> type[EventEstimator]:
        """The estimator class registered as ``event_estimator`` (built-in or from a plugin)."""
        return get_plugin_manager().get_event_estimator(self.event_estimator)

    def build_event_estimator(self) -> EventEstimator:
        """A new estimator built with ``event_estimator_kwargs``; one whose class has no ``name`` takes the registered
        name, which messages use."""
        estimator = self.event_estimator_class(**self.event_estimator_kwargs)
        if not getattr(estimator, "name", None):
            estimator.name = self.event_estimator
        return estimator
