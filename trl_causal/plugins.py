"""Plugin manager and registries of trainers and event estimators.

Built-in trainers and third-party ones come through the ``trl_causal`` entry-point group. Set
``TRL_CAUSAL_DISABLE_PLUGIN_AUTOLOAD=1`` to load only the entry points of ``trl-causal`` itself.
Nothing here imports torch: classes are resolved from their ``"module:Attr"`` paths on demand.
"""

from __future__ import annotations

import importlib
import inspect
import os
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Sequence

import pluggy

from . import hookspecs
from .errors import RegistryError, did_you_mean

ENTRY_POINT_GROUP = "trl_causal"
DISABLE_AUTOLOAD_ENV = "TRL_CAUSAL_DISABLE_PLUGIN_AUTOLOAD"
# Set by `trl-causal train` for the processes it launches: it has already read the config, and shown its notes and
# the warnings about plugins that failed to load.
CONFIG_REPORTED_ENV = "_TRL_CAUSAL_CONFIG_REPORTED"
OWN_DISTRIBUTION = "trl-causal"
TRAINER_KINDS = ("sft", "reward")


def import_target(path: str) -> Any:
    """The object a ``"module:Attr"`` import path names (ImportError or AttributeError where there is none)."""
    module_name, _, attr = path.partition(":")
    return getattr(importlib.import_module(module_name), attr)


class PluginWarning(UserWarning):
    """A plugin that failed to load, or a name two plugins register (``trl-causal`` prints it as one line)."""


@dataclass
class PluginFailure:
    """A plugin that could not be loaded: its distribution, entry point and the error."""

    distribution: str
    entry_point: str
    error: str


@dataclass
class Registered:
    """One registered name with the distribution that provides it and lazily imported objects."""

    name: str
    distribution: str
    description: str
    targets: dict[str, Any] = field(default_factory=dict)
    _resolved: dict[str, Any] = field(default_factory=dict, repr=False)

    def resolve(self, role: str) -> Any:
        """Import ``targets[role]`` if it is a ``"module:Attr"`` string, and cache it."""
        if role not in self._resolved:
            target = self.targets[role]
            if isinstance(target, str):
                try:
                    target = import_target(target)
                except (ImportError, AttributeError) as error:
                    raise RegistryError(
                        f"{self.name!r} (from distribution {self.distribution!r}) registers {role} {self.targets[role]!r}, "
                        f"which cannot be imported: {type(error).__name__}: {error}"
                    ) from error
            self._resolved[role] = target
        return self._resolved[role]


    def resolve_subclass(self, role: str, base: type, base_path: str, example: str) -> type:
        """``resolve(role)``, checked to be a subclass of ``base`` (imported as ``base_path``)."""
        cls = self.resolve(role)
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise RegistryError(
                f"{self.name!r} (from distribution {self.distribution!r}) registers {role} {cls!r}, which is not a "
                f"subclass of {base_path}. Register a subclass (e.g. of {example})."
            )
        return cls


@dataclass
class TrainerSpec(Registered):
    """A registered trainer: ``kind`` is ``"sft"`` or ``"reward"``."""

    kind: str = "sft"

    @property
    def trainer_class(self) -> type:
        """The trainer class, checked to be a ``transformers.Trainer`` subclass."""
        from transformers import Trainer

        return self.resolve_subclass("trainer", Trainer, "transformers.Trainer", "trl.SFTTrainer")

    @property
    def config_class(self) -> type:
        """The config class, checked to be a ``transformers.TrainingArguments`` subclass."""
        from transformers import TrainingArguments

        return self.resolve_subclass("config", TrainingArguments, "transformers.TrainingArguments", "trl.SFTConfig")


class Registry:
    """Names -> registered things of one kind, with errors that suggest close names.

    A name that two distributions register is set aside: selecting it is an error naming both, and
    everything else keeps working."""

    def __init__(self, what: str):
        self.what = what
        self.entries: dict[str, Registered] = {}
        self.clashes: dict[str, list[str]] = {}  # name -> the distributions that register it

    def add(self, entry: Registered) -> None:
        if entry.name in self.clashes:
            self.clashes[entry.name].append(entry.distribution)
        elif entry.name in self.entries:
            self.clashes[entry.name] = [self.entries.pop(entry.name).distribution, entry.distribution]
        else:
            self.entries[entry.name] = entry

    def clash_message(self, name: str) -> str:
        distributions = list(dict.fromkeys(self.clashes[name]))
        if len(distributions) == 1:
            return f"Distribution {distributions[0]!r} registers the {self.what} {name!r} twice, so it cannot be selected; ask its authors to fix it."
        third_party = [d for d in distributions if d != OWN_DISTRIBUTION]
        return (
            f"Distributions {' and '.join(map(repr, distributions))} both register the {self.what} {name!r}, so it "
            f"cannot be selected. Uninstall {' or '.join(map(repr, third_party or distributions))}, or ask its authors "
            "for another name."
        )

    def get(self, name: str, failures: Sequence[PluginFailure] = (), note: str = "") -> Registered:
        """The entry registered as ``name``; an unknown name is an error with close names, the plugins that failed
        to load, and ``note`` (e.g. that third-party plugins were not loaded)."""
        if name in self.entries:
            return self.entries[name]
        if name in self.clashes:
            raise RegistryError(self.clash_message(name))
        message = f"Unknown {self.what} {name!r}.{did_you_mean(name, self.entries, cutoff=0.5)}"  # `CAPT` is close to `capt`
        message += f" Registered: {', '.join(sorted(self.entries))}."
        for failure in failures:
            message += (
                f" Note: plugin distribution {failure.distribution!r} failed to load ({failure.error}) and may "
                "provide it."
            )
        raise RegistryError(message + (f" {note}" if note else ""))

    def __iter__(self):
        return iter(self.entries.values())

    def __contains__(self, name: str) -> bool:
        return name in self.entries


class PluginManager:
    """Loads plugins from the entry-point group and collects what their hooks register."""

    def __init__(self, autoload: bool | None = None):
        if autoload is None:
            autoload = os.environ.get(DISABLE_AUTOLOAD_ENV, "").lower() not in ("1", "true", "yes")
        self.autoload = autoload
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.distributions: dict[str, str] = {}  # plugin name -> distribution
        self.failures: list[PluginFailure] = []
        self.warnings: list[str] = []  # names that two distributions register
        self._load_entry_points(autoload)
        self._unload_unknown_hooks()
        self.trainers = self._collect_trainers()
        self.event_estimators = self._collect_event_estimators()

    def _load_entry_points(self, autoload: bool) -> None:
        for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
            distribution = entry_point.dist.name if entry_point.dist else "<unknown>"
            if not autoload and distribution != OWN_DISTRIBUTION:
                continue
            name = entry_point.name
            if self.pm.get_plugin(name) is not None:
                if self.distributions.get(name) == distribution:  # the same entry point listed twice (metadata copies)
                    continue
                name = f"{distribution}:{name}"  # another distribution's entry point of that name is a plugin too
            try:
                plugin = entry_point.load()
                self.pm.register(plugin, name=name)  # register checks the hooks' signatures
            except Exception as error:  # a broken plugin must not break the others
                self._fail(distribution, name, f"{type(error).__name__}: {error}")
                continue
            if not self.pm.get_hookcallers(plugin):
                self.pm.unregister(plugin)
                self._fail(
                    distribution,
                    name,
                    f"{entry_point.value!r} implements no trl_causal hook: mark its register_trainers / "
                    "register_event_estimators functions with @trl_causal.hookspecs.hookimpl",
                )
                continue
            self.distributions[name] = distribution
        if OWN_DISTRIBUTION not in self.distributions.values():  # running from a source tree without installed metadata
            from . import builtin

            name = "builtin" if self.pm.get_plugin("builtin") is None else f"{OWN_DISTRIBUTION}:builtin"
            self.pm.register(builtin, name=name)
            self.distributions[name] = OWN_DISTRIBUTION

    def _fail(self, distribution: str, plugin_name: str, error: str) -> None:
        """Record and warn about a plugin that could not be loaded; the others go on."""
        self.failures.append(PluginFailure(distribution, plugin_name, error))
        self._warn(f"trl_causal plugin {plugin_name!r} from distribution {distribution!r} failed to load: {error}")

    def _unload_unknown_hooks(self) -> None:
        """pluggy's ``check_pending`` per plugin: a plugin implementing a hook trl_causal does not define (a typo such
        as ``register_trainer``) is unloaded and recorded as failed, instead of failing every command."""
        known = [name for name in dir(hookspecs) if name.startswith("register_")]
        for hook_name, caller in list(vars(self.pm.hook).items()):
            if not isinstance(caller, pluggy.HookCaller) or caller.spec is not None:
                continue
            for impl in caller.get_hookimpls():
                if impl.optionalhook or self.pm.get_plugin(impl.plugin_name) is None:  # None: unloaded for another hook
                    continue
                self._fail(
                    self.distributions.pop(impl.plugin_name, "<unknown>"),
                    impl.plugin_name,
                    f"it implements the hook {hook_name!r}, which trl_causal does not define (its hooks: {', '.join(known)})",
                )
                self.pm.unregister(name=impl.plugin_name)

    def _call_registrar(self, hook_name: str, make_entry, usage: str) -> Registry:
        """Call every plugin's ``hook_name`` with a ``register`` that builds entries with ``make_entry(name,
        distribution, **kwargs)``; ``usage`` is how ``register`` is called, for the error of a call that does not fit."""
        registry = Registry(hook_name.removeprefix("register_").rstrip("s").replace("_", " "))
        hook = getattr(self.pm.hook, hook_name)
        for impl in reversed(hook.get_hookimpls()):  # registration order
            distribution = self.distributions.get(impl.plugin_name, "<unknown>")
            entries: list[Registered] = []

            def register(name: str, **kwargs: Any) -> None:
                try:
                    inspect.signature(make_entry).bind(name, distribution, **kwargs)
                except TypeError as error:
                    given = ", ".join([repr(name)] + [f"{key}=..." for key in kwargs])
                    raise RegistryError(f"register({given}) does not fit {usage}: {error}") from None
                entries.append(make_entry(name, distribution, **kwargs))

            try:
                impl.function(register=register)
            except Exception as error:  # e.g. register() without config=, or an unknown kind: only this plugin is lost
                self._fail(distribution, impl.plugin_name, f"{hook_name}: {type(error).__name__}: {error}")
                continue
            for entry in entries:
                registry.add(entry)
        for name in registry.clashes:
            self.warnings.append(registry.clash_message(name))
            self._warn(self.warnings[-1])
        return registry

    @staticmethod
    def _warn(message: str) -> None:
        """A ``PluginWarning``, unless the launching ``trl-causal train`` has shown it already."""
        if not os.environ.get(CONFIG_REPORTED_ENV):
            warnings.warn(message, PluginWarning, stacklevel=4)

    def _collect_trainers(self) -> Registry:
        def make(name: str, distribution: str, *, trainer, config, kind: str = "sft", description: str = ""):
            if kind not in TRAINER_KINDS:
                raise RegistryError(
                    f"Trainer {name!r} from distribution {distribution!r} has kind {kind!r}; use one of {TRAINER_KINDS}."
                )
            return TrainerSpec(name, distribution, description, {"trainer": trainer, "config": config}, kind=kind)

        return self._call_registrar(
            "register_trainers", make, "register(name, trainer=..., config=..., kind='sft' or 'reward', description='')"
        )

    def _collect_event_estimators(self) -> Registry:
        def make(name: str, distribution: str, *, estimator, description: str = ""):
            return Registered(name, distribution, description, {"estimator": estimator})

        return self._call_registrar("register_event_estimators", make, "register(name, estimator=..., description='')")

    @property
    def autoload_note(self) -> str:
        """What to add to an unknown-name error when third-party plugins were not loaded."""
        return "" if self.autoload else f"(Third-party plugins are not loaded: {DISABLE_AUTOLOAD_ENV} is set.)"

    def get_trainer(self, name: str) -> TrainerSpec:
        return self.trainers.get(name, self.failures, self.autoload_note)

    def get_event_estimator(self, name: str):
        """The ``EventEstimator`` subclass registered as ``name``."""
        from .capt.events import EventEstimator

        entry = self.event_estimators.get(name, self.failures, self.autoload_note)
        return entry.resolve_subclass(
            "estimator", EventEstimator, "trl_causal.capt.EventEstimator", "trl_causal.capt.VocabularyEstimator"
        )


_manager: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, loaded on first use."""
    global _manager
    if _manager is None:
        _manager = PluginManager()
    return _manager
