"""Hook specifications of trl_causal.

A plugin is a module (or object) with functions marked ``@hookimpl`` whose names match the specs
below. Built-in trainers and third-party ones register the same way, through the ``trl_causal``
entry-point group::

    [project.entry-points.trl_causal]
    my_plugin = "my_package.plugin"

Hooks are registrar-style (as in Simon Willison's ``llm``): each receives a ``register`` callable
and calls it once per thing it provides. Registration must stay cheap: pass classes as
``"module:Attr"`` strings so that listing trainers imports neither torch nor the plugin's code.
"""

import pluggy

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
