"""The YAML keys this plugin declares in Axolotl's schema, generated from trl_causal's config dataclasses.

Axolotl drops every YAML key that no plugin declares, so the plugin declares ``trainer`` and, for every trainer
registered with trl_causal (built-in or from a trl_causal plugin), the fields its config adds to TRL's
``SFTConfig`` / ``RewardConfig``. The fields are read from the dataclasses, not copied: one source of truth. Every
generated key defaults to ``None`` (unset), so the trainer's own default applies and an unset key never reaches the
trainer. Keys that Axolotl already has are left to Axolotl (they reach our trainers through Axolotl's training
arguments where TRL has the same name).
"""

from __future__ import annotations

import dataclasses
import typing
import warnings
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model
from trl_causal.configuration import union_members
from trl_causal.errors import ConfigError

TRAINER_KEY = "trainer"


def base_config_class(config_class: type) -> type:
    """The TRL config that ``config_class`` extends (``SFTConfig`` or ``RewardConfig``; else TrainingArguments)."""
    from transformers import TrainingArguments
    from trl import RewardConfig, SFTConfig

    for base in (SFTConfig, RewardConfig):
        if issubclass(config_class, base):
            return base
    return TrainingArguments


def added_fields(config_class: type) -> list[dataclasses.Field]:
    """The dataclass fields ``config_class`` adds to the TRL config it extends (in declaration order)."""
    inherited = {field.name for field in dataclasses.fields(base_config_class(config_class))}
    return [field for field in dataclasses.fields(config_class) if field.init and field.name not in inherited]


def _list_alternatives(annotation: Any) -> list[Any]:
    """The ``list[...]`` alternatives of an annotation (``list[str] | None`` -> [list[str]])."""
    return [arg for arg in union_members(annotation) if typing.get_origin(arg) is list]


def _takes_one_item(annotation: Any) -> bool:
    """A list field that takes nothing but lists (and None): one item given for it means a list of one."""
    alternatives = union_members(annotation)
    return bool(_list_alternatives(annotation)) and all(typing.get_origin(arg) is list or arg is type(None) for arg in alternatives)


def _field_type(config_class: type, name: str) -> Any:
    """The field's annotation; a list also takes one item (``numeric_confounders: clicks``), which the trainer's
    config turns into a list of one, as for ``trl-causal train``."""
    try:
        annotation = typing.get_type_hints(config_class)[name]
    except Exception:  # an annotation that cannot be evaluated: accept any value, the config validates it
        return Any
    items = [item for arg in _list_alternatives(annotation) for item in typing.get_args(arg)]
    return typing.Union[(annotation, *items)] if items else annotation


def trainer_fields() -> dict[str, dict[str, Any]]:
    """``{trainer name: {field name: (type, help)}}`` for every registered trainer whose config adds fields.

    A trainer whose config cannot be imported is skipped with a warning (it fails clearly only when selected), so
    one broken trl_causal plugin never breaks unrelated Axolotl runs.
    """
    from trl_causal.plugins import get_plugin_manager

    result: dict[str, dict[str, Any]] = {}
    for spec in get_plugin_manager().trainers:
        try:
            config_class = spec.config_class
        except Exception as error:  # noqa: BLE001 - reported, not fatal here
            warnings.warn(f"trl-causal-axolotl: the keys of trainer {spec.name!r} are not declared: {error}", stacklevel=2)
            continue
        fields = {}
        for field in added_fields(config_class):
            fields[field.name] = (_field_type(config_class, field.name), field.metadata.get("help", ""))
        if fields:
            result[spec.name] = fields
    return result


def axolotl_keys() -> set[str]:
    """Top-level keys of Axolotl's own schema (field names and their aliases, such as ``model_type``)."""
    from axolotl.utils.schemas.config import AxolotlInputConfig

    fields = AxolotlInputConfig.model_fields
    return set(fields) | {field.alias for field in fields.values() if field.alias}


# Axolotl dataset types that train every token of a row (no untrained prompt part).
FULLY_TRAINED_TYPES = ("completion",)
# The roles a chat_template dataset may train without training the prompt (Axolotl's names for the assistant).
ANSWER_ROLES = ("assistant", "gpt", "model")


def prompt_trained_setting(cfg) -> str | None:
    """The YAML setting under which Axolotl trains the prompt tokens too (``train_on_inputs: true``, a dataset of
    ``type: completion``, or ``roles_to_train`` with a role that is not the assistant's), so that its loss mask no
    longer tells the prompt from the completion; None otherwise."""
    if cfg.get("train_on_inputs"):
        return "`train_on_inputs: true`"
    for index, dataset in enumerate(cfg.get("datasets") or []):
        if not isinstance(dataset, dict):
            continue
        kind = dataset.get("type")
        if isinstance(kind, str) and kind.split(":")[0].split(".")[0] in FULLY_TRAINED_TYPES:
            return f"`datasets[{index}].type: {kind}`"
        prompt_roles = [role for role in dataset.get("roles_to_train") or [] if role not in ANSWER_ROLES]
        if prompt_roles:
            return f"`datasets[{index}].roles_to_train` with {', '.join(map(repr, prompt_roles))}"
    return None


def build_input_model() -> tuple[type[BaseModel], dict[str, list[str]]]:
    """The pydantic model Axolotl merges into its config schema: ``trainer`` plus every trainer's added fields."""
    definitions: dict[str, Any] = {
        TRAINER_KEY: (
            Optional[str],
            Field(
                default=None,
                json_schema_extra={
                    "description": "trl-causal trainer to train with (e.g. capt); `trl-causal list` shows them. "
                    "Unset: Axolotl's own trainer."
                },
            ),
        )
    }
    owners: dict[str, list[str]] = {}
    taken = axolotl_keys()
    for trainer, fields in trainer_fields().items():
        for name, (annotation, help_text) in fields.items():
            if name in taken:
                continue
            owners.setdefault(name, []).append(trainer)
            if name in definitions:  # two trainers share a key: keep it, accept either type
                if definitions[name][0] != Optional[annotation]:
                    definitions[name] = (Optional[Any], definitions[name][1])
                continue
            definitions[name] = (
                Optional[annotation],
                Field(default=None, json_schema_extra={"description": f"[trl-causal {trainer}] {help_text}"}),
            )
    model = create_model(
        "TrlCausalArgs",
        __config__=ConfigDict(arbitrary_types_allowed=True, protected_namespaces=()),
        **definitions,
    )
    model.__doc__ = "YAML keys of the trl-causal trainers (declared by trl_causal_axolotl.CausalTrainerPlugin)."
    return model, owners


def build_config(config_class: type, trainer: str, settings: dict[str, Any]) -> Any:
    """``config_class(**settings)``; its ``ConfigError`` is raised again under ``trainer: <name>:``, with Axolotl's
    name for the per-device batch size. One item where a list is expected is a list of one (``_field_type``)."""
    hints = typing.get_type_hints(config_class)
    settings = {
        key: [value] if value is not None and not isinstance(value, list) and key in hints and _takes_one_item(hints[key]) else value
        for key, value in settings.items()
    }
    try:
        return config_class(**settings)
    except ConfigError as error:
        message = str(error).replace("per_device_train_batch_size", "micro_batch_size")
        raise ConfigError(f"trainer: {trainer}: {message}") from error


def check_values(config_class: type, trainer: str, values: dict[str, Any], output_dir: str, seed: int, **training: Any):
    """trl_causal's own config for the keys of ``trainer`` set in the YAML (plus the ``training`` arguments it checks,
    unset ones left out): the same defaults and validation as ``trl-causal train``, before anything loads."""
    training = {key: value for key, value in training.items() if value is not None}
    settings = dict(output_dir=output_dir, seed=seed, bf16=False, fp16=False, report_to="none", **training)
    return build_config(config_class, trainer, {**settings, **values})


def rebuilt_args(args, config_class: type, trainer: str, values: dict[str, Any], **overrides: Any):
    """Axolotl's training ``args`` rebuilt as ``config_class`` (Axolotl's fields plus our config's), with
    ``overrides`` and then the YAML ``values`` of ``trainer`` on top."""
    accepted = {field.name for field in dataclasses.fields(config_class) if field.init}
    settings = {field.name: getattr(args, field.name) for field in dataclasses.fields(args) if field.init}
    settings = {key: value for key, value in settings.items() if key in accepted}
    return build_config(config_class, trainer, {**settings, **overrides, **values})


# KEY_OWNERS: generated key -> the trainers whose config has it.
TrlCausalArgs, KEY_OWNERS = build_input_model()
