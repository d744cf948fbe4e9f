"""The Axolotl plugin: ``plugins: [trl_causal_axolotl.CausalTrainerPlugin]`` + ``trainer: capt`` (or
``latent_shift`` on the SFT path, ``deconfounded_reward`` on the ``reward_model: true`` path).

Axolotl >= 0.21 also loads this class through the ``axolotl.plugins`` entry point on every run, so it is inert
unless the YAML sets ``trainer:`` or one of the keys it declares; when it does, the plugin must also be listed
under ``plugins:`` (without the entry point, Axolotl would silently drop the keys and train plainly, so a
forgotten line is an error here, not a silent fallback).
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Sequence
from typing import Any

from axolotl.integrations.base import BasePlugin
from trl_causal.errors import ConfigError, RegistryError

PLUGIN_PATH = "trl_causal_axolotl.CausalTrainerPlugin"
PLUGIN_NAMES = {PLUGIN_PATH, "trl_causal_axolotl.plugin.CausalTrainerPlugin"}
TRAINER_KEY = "trainer"

# trl_causal trainer name -> the Axolotl trainer class that runs it ("module:Class"). The baselines map to None:
# `trainer: sft` / `trainer: reward` is Axolotl's own trainer, so the same YAML A/B-tests a causal trainer.
AXOLOTL_TRAINERS: dict[str, str | None] = {
    "sft": None,
    "reward": None,
    "capt": "trl_causal_axolotl.capt:AxolotlCAPTTrainer",
    "deconfounded_reward": "trl_causal_axolotl.reward:AxolotlDeconfoundedRewardTrainer",
    "latent_shift": "trl_causal_axolotl.latent:AxolotlLatentShiftTrainer",
}
# Built-in trainers' modules, whose check_axolotl_cfg(cfg) and check_config(values, output_dir, seed, **training)
# run in register().
CHECKS = {"capt": ".capt", "latent_shift": ".latent", "deconfounded_reward": ".reward"}
# A third-party trl_causal trainer adds its Axolotl class through this entry-point group (name = trainer name).
ADAPTER_ENTRY_POINTS = "trl_causal_axolotl.trainers"


def _normalized(name: str) -> str:
    module, separator, attr = str(name).partition(":")
    return f"{module}.{attr}" if separator else str(name)


def plugin_listed(cfg) -> bool:
    return any(_normalized(name) in PLUGIN_NAMES for name in (cfg.get("plugins") or []))


def our_keys() -> dict[str, list[str]]:
    """Generated key -> trainers that own it (``trainer`` itself excluded)."""
    from .args import KEY_OWNERS

    return KEY_OWNERS


def axolotl_trainer_path(name: str) -> str | None:
    """``module:Class`` of the Axolotl trainer for ``name``; KeyError when there is none."""
    if name in AXOLOTL_TRAINERS:
        return AXOLOTL_TRAINERS[name]
    from importlib import metadata

    for entry_point in metadata.entry_points(group=ADAPTER_ENTRY_POINTS):
        if entry_point.name == name:
            return entry_point.value
    raise KeyError(name)


def selected_trainer(cfg):
    """The trl_causal ``TrainerSpec`` named by ``trainer:``, after every check; None when the plugin is not asked for.

    Raises ``ConfigError`` naming the key and the fix for: our keys without the plugin listed, keys without
    ``trainer:``, an unknown name (with the closest), Axolotl's ``rl:`` path, a kind that does not match
    ``reward_model``, keys of another trainer (the baselines ``sft`` / ``reward`` set them aside: see
    ``foreign_keys``), and trainers that do not run on Axolotl.
    """
    from trl_causal.plugins import get_plugin_manager

    name = cfg.get(TRAINER_KEY)
    owners = our_keys()
    set_keys = [key for key in owners if cfg.get(key) is not None]
    if name is None and not set_keys:
        return None
    if not plugin_listed(cfg):
        what = f"`trainer: {name}`" if name is not None else f"the trl-causal key(s) {', '.join(set_keys)}"
        raise ConfigError(
            f"{what} is set but the trl-causal Axolotl plugin is not enabled, so Axolotl would ignore it and train "
            f"without it. Add to the YAML:\n  plugins:\n    - {PLUGIN_PATH}\n(pip install trl-causal-axolotl if it "
            "is not installed)."
        )
    if name is None:
        trainers = sorted({t for key in set_keys for t in owners[key]})
        raise ConfigError(
            f"{', '.join(set_keys)} is set but `trainer:` is not; add `trainer: {trainers[0]}` (the trainer these "
            f"keys belong to: {', '.join(trainers)})."
        )
    if not isinstance(name, str):
        raise ConfigError(f"trainer: must be a trainer name such as capt, not {name!r}.")
    manager = get_plugin_manager()
    try:
        spec = manager.get_trainer(name)
    except RegistryError as error:
        raise ConfigError(f"trainer: {error}") from error
    if cfg.get("rl"):
        alternative = (
            "remove `rl:` to train it on Axolotl's SFT path"
            if spec.kind == "sft"
            else "remove `rl:` and set `reward_model: true`"
        )
        raise ConfigError(
            f"`trainer: {name}` cannot run on Axolotl's RL path (`rl: {cfg.get('rl')}`): trl-causal trainers run on "
            f"the SFT path and the `reward_model: true` path only. Either {alternative}, or drop `trainer:` to run "
            f"`rl: {cfg.get('rl')}` with Axolotl's own trainer (for preference pairs from observational data, "
            "`trl-causal dpo-pairs` writes DPO pairs ranked by a deconfounded reward)."
        )
    if cfg.get("process_reward_model"):
        raise ConfigError(f"`trainer: {name}` does not support `process_reward_model: true`; remove one of them.")
    if spec.kind == "reward" and not cfg.get("reward_model"):
        raise ConfigError(f"`trainer: {name}` trains a reward model: add `reward_model: true` to the YAML.")
    if spec.kind == "sft" and cfg.get("reward_model"):
        raise ConfigError(
            f"`trainer: {name}` is an SFT trainer but the YAML sets `reward_model: true`; remove `reward_model` or "
            "pick a reward trainer (trainer: reward)."
        )
    foreign = foreign_keys(cfg, name)
    if foreign and not is_baseline(name):
        hints = [f"{key} (a key of {', '.join(owners[key])})" for key in foreign]
        raise ConfigError(f"`trainer: {name}` takes no {', '.join(hints)}; remove it or change `trainer:`.")
    try:
        axolotl_trainer_path(name)
    except KeyError:
        supported = ", ".join(sorted(n for n in AXOLOTL_TRAINERS if n not in ("sft", "reward")))
        raise ConfigError(
            f"`trainer: {name}` is not supported on Axolotl yet: distribution {spec.distribution!r} provides no "
            f"Axolotl trainer for it. Train it with trl-causal's own launcher "
            f"(`trl-causal train --config cfg.yaml` with `trainer: {name}`), or use a trainer that runs on Axolotl: "
            f"{supported}."
        ) from None
    return spec


def is_baseline(name: str) -> bool:
    """``sft`` / ``reward``: Axolotl's own trainer, run on the YAML of a causal trainer for an A/B test."""
    return name in AXOLOTL_TRAINERS and AXOLOTL_TRAINERS[name] is None


def foreign_keys(cfg, name: str) -> list[str]:
    """The trl-causal keys set in the YAML that trainer ``name`` does not take."""
    owners = our_keys()
    return [key for key, trainers in owners.items() if cfg.get(key) is not None and name not in trainers]


def other_plugins_keys() -> set[str]:
    """Keys declared by the other Axolotl plugins loaded for this run (all are loaded before any registers)."""
    import importlib

    from axolotl.integrations.base import PluginManager

    keys: set[str] = set()
    for path in PluginManager.get_instance().get_input_args():
        module, _, attr = str(path).rpartition(".")
        try:
            keys |= set(getattr(importlib.import_module(module), attr).model_fields)
        except Exception:  # noqa: BLE001 - a plugin whose keys cannot be read only weakens this typo check
            continue
    return keys


def part_of(key: str, keys: list[str]) -> list[str]:
    """The keys whose words (split at "_", a plural s ignored) hold all of ``key``'s: `estimator` of
    `event_estimator`, `symbols` of `symbol_pool`."""
    def words(name: str) -> set[str]:
        return {word.removesuffix("s") for word in name.lower().split("_") if word}

    return [name for name in keys if words(key) and words(key) <= words(name)][:1]


def check_key_spelling(cfg) -> None:
    """A top-level key that neither Axolotl nor a loaded plugin knows but is close to a trl-causal key: a typo that
    Axolotl would drop silently. ``ConfigError`` naming it and the key it is close to."""
    from .args import axolotl_keys

    ours = sorted({TRAINER_KEY, *our_keys()})
    known = axolotl_keys() | set(ours)
    unknown = [key for key in cfg if isinstance(key, str) and key not in known]
    if unknown:
        known |= other_plugins_keys()
    for key in unknown:
        if key in known:
            continue
        close = difflib.get_close_matches(key, ours, n=1, cutoff=0.8) or part_of(key, ours)
        if close:
            owners = our_keys().get(close[0])
            whose = f" (a key of trainer {', '.join(owners)})" if owners else ""
            raise ConfigError(
                f"Unknown key `{key}` in the Axolotl YAML; did you mean `{close[0]}`{whose}? Fix the spelling: "
                "Axolotl would silently ignore it."
            )


def effective_micro_batch_size(cfg) -> int | None:
    """``micro_batch_size`` as Axolotl will use it: 1 when unset (its default), unless ``batch_size`` derives it."""
    value = cfg.get("micro_batch_size")
    return 1 if value is None and not cfg.get("batch_size") else value


def explicit_nulls(cfg) -> list[str]:
    """The trl-causal keys the raw YAML sets to null (``text_column: null``): once Axolotl has validated the config,
    every key it declares is None when unset, so only the raw YAML tells "null" from "not given"."""
    return [key for key in our_keys() if key in cfg and cfg[key] is None]


def check_nulls(nulls: Sequence[str], trainer: str) -> None:
    """A key of ``trainer`` set to null whose field takes no None is an error (as in ``trl-causal train``)."""
    from trl_causal.configuration import admits_none

    from .args import trainer_fields

    fields = trainer_fields().get(trainer, {})
    refused = [key for key in nulls if key in fields and not admits_none(fields[key][0])]
    if refused:
        raise ConfigError(
            f"trainer: {trainer}: {', '.join(f'`{key}`' for key in refused)} cannot be null in the Axolotl YAML: give "
            "a value, or remove the line for the default."
        )


def trainer_values(cfg, name: str, nulls: Sequence[str] = ()) -> dict[str, Any]:
    """The YAML keys of trainer ``name`` that are set, and those of ``nulls`` (set to null: None, not the default)."""
    return {
        key: cfg.get(key)
        for key, owners in our_keys().items()
        if name in owners and (cfg.get(key) is not None or key in nulls)
    }


class CausalTrainerPlugin(BasePlugin):
    """Runs trl-causal's trainers (``trainer: capt`` / ``latent_shift`` / ``deconfounded_reward``) inside Axolotl;
    inert unless ``trainer:`` is set."""

    def get_input_args(self) -> str:
        return "trl_causal_axolotl.args.TrlCausalArgs"

    def register(self, cfg):
        """Called with the raw YAML before Axolotl validates it or loads anything: every configuration error of
        ours surfaces here, before the model or the data load (the Axolotl settings a trainer cannot honour, then
        trl_causal's own config validation of its keys). A baseline (``sft`` / ``reward``) sets the other trainer's
        keys aside with a note, as ``trl-causal train`` does on its YAML."""
        if plugin_listed(cfg):
            check_key_spelling(cfg)
        spec = selected_trainer(cfg)
        self.explicit_nulls = explicit_nulls(cfg)
        if spec is not None:
            check_nulls(self.explicit_nulls, spec.name)
        foreign = foreign_keys(cfg, spec.name) if spec is not None and is_baseline(spec.name) else []
        if foreign:
            trainers = ", ".join(sorted({t for key in foreign for t in our_keys()[key]}))
            print(
                f"trl-causal: note: ignoring {', '.join(foreign)} from the Axolotl YAML: keys of trainer {trainers}, "
                f"not of `trainer: {spec.name}` (Axolotl's own trainer).",
                file=sys.stderr,
            )
        if spec is not None and cfg.get("seed") is None:
            print(
                f"trl-causal: note: `trainer: {spec.name}` with no `seed:` in the Axolotl YAML: Axolotl then shuffles "
                "the rows and initialises LoRA from fresh randomness, so two runs (say this one and its baseline) "
                "differ from the first step. Add `seed: 42` for a comparison, and delete `dataset_prepared_path`'s "
                "folder once: rows prepared without a seed keep their random order.",
                file=sys.stderr,
            )
        if spec is None or spec.name not in CHECKS:
            return
        import importlib

        module = importlib.import_module(CHECKS[spec.name], __package__)
        module.check_axolotl_cfg(cfg)
        module.check_config(
            trainer_values(cfg, spec.name, self.explicit_nulls),
            cfg.get("output_dir") or "./outputs",
            42 if cfg.get("seed") is None else cfg.get("seed"),
            per_device_train_batch_size=effective_micro_batch_size(cfg),
            dataloader_num_workers=cfg.get("dataloader_num_workers"),
            dataloader_persistent_workers=cfg.get("dataloader_persistent_workers"),
        )

    def load_datasets(self, cfg, preprocess: bool = False):
        """``trainer: deconfounded_reward``: the raw observational rows of ``datasets:`` (Axolotl would tokenize
        them as chosen/rejected pairs); None otherwise, so Axolotl loads the data itself."""
        spec = selected_trainer(cfg)
        if spec is None or spec.name != "deconfounded_reward":
            return None
        from .reward import load_observational_datasets

        return load_observational_datasets(cfg)

    def post_trainer_create(self, cfg, trainer):
        self._trainer = trainer

    def post_train(self, cfg, model):
        """Our trainers' final files, once, on the first call: axolotl 0.21 calls this right after
        ``trainer.train()`` (all processes still up, before its own final save) and again at the very end.
        ``capt`` saves its symbol pool (``symbol_pool: pool``); ``deconfounded_reward`` saves its report (and, with
        LoRA, the merged single-logit classifier to ``output_dir/merged``); ``latent_shift`` saves its heads and
        verbalizer; both then take their heads off the model, so that Axolotl's own final save writes a plain
        checkpoint."""
        trainer = getattr(self, "_trainer", None)
        if trainer is not None and hasattr(trainer, "save_final"):
            merged = trainer.save_final(cfg.output_dir)
            if merged:
                trainer.accelerator.print(f"trl-causal deconfounded_reward (axolotl): merged classifier in {merged}")
        self._trainer = None

    def get_trainer_cls(self, cfg):
        spec = selected_trainer(cfg)
        if spec is None:
            return None
        path = axolotl_trainer_path(spec.name)
        if path is None:  # the baselines: Axolotl's own trainer
            return None
        from trl_causal.plugins import import_target

        base = import_target(path)
        values = trainer_values(cfg, spec.name, getattr(self, "explicit_nulls", ()))
        return type(base.__name__, (base,), {"trl_causal_values": values, "__module__": base.__module__})
