"""Hook specifications of trl_causal.

A plugin is a module (or object) with functions marked ``@hookimpl`` whose names match the specs
below. Built-in trainers and third-party ones register the same way, through the ``trl_causal``
entry-point group::

    [project.entry-points.trl_causal]
    my_plugin = "my_package.plugin"

Hooks are registrar-style (as in Simon Willison's ``llm``): each receives a ``register`` callable
and calls it once per thing it provides. Registration must stay cheap: pass classes as
``"module:Attr"`` strings so that listing trainers imports neither torch nor the plugin's code.

A registered trainer class may also define the optional attributes listed by ``OptionalTrainerAttributes``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import pluggy

if TYPE_CHECKING:
    from .evaluation import LMPredictor

hookspec = pluggy.HookspecMarker("trl_causal")
hookimpl = pluggy.HookimplMarker("trl_causal")


@hookspec
def register_trainers(register):
    """Register trainers.

    Call ``register(name, trainer=..., config=..., kind=..., description=...)`` once per trainer:

    - ``name``: what users write as ``trainer: <name>`` in their YAML.
    - ``trainer``: a ``transformers.Trainer`` subclass, or its import path ``"pkg.module:Class"``.
    - ``config``: its ``TrainingArguments`` subclass (e.g. an ``SFTConfig``), or its import path.
    - ``kind``: ``"sft"`` (prompt/completion, messages or text rows) or ``"reward"`` (preference
      or outcome rows; the model is loaded as a sequence classifier).
    - ``description``: one line shown by ``trl-causal list``.
    """


@hookspec
def register_event_estimators(register):
    """Register event estimators for the ``capt`` trainer.

    Call ``register(name, estimator=..., description=...)`` once per estimator:

    - ``name``: what users write as ``event_estimator: <name>``; the options in
      ``event_estimator_kwargs`` are the class's constructor keyword arguments.
    - ``estimator``: a ``trl_causal.capt.EventEstimator`` subclass, or its import path
      ``"pkg.module:Class"``. It implements ``estimate(prompt, completion=None, *, row=None)``,
      returning a validated ``trl_causal.capt.EventTemplate``: the texts with ``{e1}``, ``{e2}``, ...
      in place of the events and ``names`` {"e1": "original name", ...}
      (``trl_causal.capt.template_from_matcher`` builds one from a ``TermMatcher``), and raising
      ``trl_causal.capt.NoEventsFound`` for a row without events. ``completion`` is None at inference.
    - ``description``: one line shown by ``trl-causal list --estimators``.
    """


class OptionalTrainerAttributes(Protocol):
    """What ``trl-causal train`` and ``trl-causal eval`` read from a registered trainer class, or from the trainer,
    where it is defined (each one is looked up with ``getattr`` / ``hasattr``): define those that apply, none is
    required. ``args`` is the trainer's config. Documentation only: nothing subclasses or checks it."""

    saved_file: ClassVar[str]
    """A file every save of the trainer writes. eval scores a checkpoint that has no run record (trained by Axolotl
    or a TRL script) and lacks this file as a plain model (trainer ``sft``), not as one of this trainer."""

    settings_not_from_checkpoint: ClassVar[Sequence[str]]
    """Config fields eval never takes from a checkpoint's record or saved settings, because they may name a host, a
    credential, a path or a model to load (capt: ``event_estimator_kwargs``): the eval's YAML or ``--setting`` gives
    them."""

    settings_fixed_by_checkpoint: ClassVar[Sequence[str]]
    """Config fields that what the checkpoint saved fixes (e.g. the sizes of its heads): eval's ``--setting`` refuses
    them."""

    trained_rows: int | None
    """On the trainer: how many training rows train, for a trainer that builds its own items from the rows (``capt``
    after ``on_no_events``, ``deconfounded_reward`` after ``max_length``); the run summary reports it."""

    @staticmethod
    def required_columns(args: Any) -> Sequence[str]:
        """Columns every split must have: a missing one is an error before the model loads."""

    @staticmethod
    def check_model_config(args: Any, model_config: Any) -> None:
        """Called by train with the model's ``PretrainedConfig`` before the model loads: raise where a method setting
        does not fit the model (e.g. a layer index past its last layer)."""

    @staticmethod
    def column_sets(args: Any) -> Sequence[Sequence[str]]:
        """Sets of columns of which a split must hold one, in place of the trainer kind's text columns (e.g.
        ``[["text"], ["prompt", "completion"]]``)."""

    @staticmethod
    def columns_hint(args: Any) -> str:
        """A sentence on how to fix missing columns, added to that error."""

    @classmethod
    def checkpoint_settings(cls, checkpoint_dir: str | os.PathLike) -> dict[str, Any]:
        """The settings saved in the checkpoint, as config fields: what eval predicts with for a checkpoint that
        has no run record."""

    @classmethod
    def checkpoint_answers(cls, checkpoint_dir: str | os.PathLike) -> tuple[list[str], list[str]] | None:
        """(labels, answer texts) the checkpoint predicts, None if it did not save them: eval's answer set. A trainer
        that defines it gets the gold answers as they are (labels too) for its predictor to map, where another
        trainer's predictor gets each label's answer text."""

    @classmethod
    def check_predictor(cls, args: Any) -> None:
        """Called by eval before any model loads: raise if the predictor cannot run (e.g. an endpoint is down)."""

    @classmethod
    def build_predictor(
        cls, args: Any, model: Any, tokenizer: Any, answers: Sequence[str], mode: str = "score", checkpoint_dir=None, **kwargs
    ) -> LMPredictor:
        """The predictor eval scores the checkpoint with, in place of the plain ``LMPredictor`` (``kwargs``: its
        options, e.g. ``batch_size``)."""

    def end(self) -> None:
        """On the trainer, on every process, after training, the final save and the final evaluation."""
