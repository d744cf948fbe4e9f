"""Reading a ``trl sft``-style YAML config plus ``trainer:``, validating it early, splitting it.

A config is one YAML mapping. Its keys go to one of three places:

- ``trainer``: the registered trainer to run (command line ``--trainer`` wins);
- fields of the dataclasses that TRL's own scripts parse (``ScriptArguments``, the trainer's
  config class, ``ModelConfig``, ``DatasetMixtureConfig``);
- ``accelerate launch`` arguments (``num_processes``, ``config_file``, ``mixed_precision``, ...),
  plus TRL's ``accelerate_config`` shortcut.

Anything else is an error that suggests the closest valid key, never passed on silently.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import functools
import json
import math
import os
import re
import sys
import types
import typing
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, did_you_mean
from .plugins import CONFIG_REPORTED_ENV, TrainerSpec, get_plugin_manager

TRAINER_KEY = "trainer"
ENV_KEY = "env"
ACCELERATE_CONFIG_KEY = "accelerate_config"
# accelerate launch arguments that are not settings of a run
_NOT_LAUNCH_SETTINGS = {"help", "training_script", "training_script_args", "module", "no_python", "env"}


@dataclass
class RunConfig:
    """Everything one run needs, parsed and validated."""

    trainer: TrainerSpec
    script_args: Any
    training_args: Any
    model_args: Any
    dataset_args: Any
    launch_args: list[str]
    script_argv: list[str]
    config_path: str | None = None
    given_fields: tuple[str, ...] = ()  # the dataclass fields that the YAML and the command line set


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Load a YAML mapping; malformed YAML is reported with file, line and column."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"Config file not found: {path} (resolved to {path.resolve()}).")
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"Malformed YAML at {where}: {problem}.") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a YAML mapping of keys to values, not a {type(data).__name__}.")
    return data


@functools.cache
def _launch_actions() -> dict[str, argparse.Action]:
    """``accelerate launch``'s arguments by setting name (its parser, built once)."""
    from accelerate.commands.launch import launch_command_parser

    return {action.dest: action for action in launch_command_parser()._actions}


def accelerate_launch_keys() -> set[str]:
    """Names of the settings ``accelerate launch`` accepts."""
    return set(_launch_actions()) - _NOT_LAUNCH_SETTINGS | {ACCELERATE_CONFIG_KEY}


def dataclass_types(spec: TrainerSpec) -> tuple[type, ...]:
    """The dataclasses a run parses, in the order of TRL's own ``sft.py``."""
    from trl import DatasetMixtureConfig, ModelConfig, ScriptArguments

    return (ScriptArguments, spec.config_class, ModelConfig, DatasetMixtureConfig)


def config_field_types(classes: tuple[type, ...]) -> dict[str, Any]:
    """{field name: its type annotation} over the init fields of ``classes`` (the first class to name a field wins)."""
    types_by_name: dict[str, Any] = {}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.init:
                types_by_name.setdefault(f.name, hints.get(f.name, Any))
    return types_by_name


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _conforms(value: Any, annotation: Any, converted: bool = True) -> bool:
    """Whether a YAML value fits a field annotation. Where ``converted`` (a field's own value, which argparse converts)
    a string is accepted for a number or a boolean; not for the items of a list, which are handed over as they are."""
    if annotation is Any or annotation is None:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums and isinstance(value, str):  # `SomeEnum | str` fields take the enum's values as strings
            return any(_conforms(value, e) for e in enums)
        return any(_conforms(value, arg, converted) for arg in args)
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool) or (
            converted and isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0")
        )
    if annotation in (int, float):
        if isinstance(value, bool) or (isinstance(value, str) and not converted):
            return False
        if isinstance(value, str):
            try:
                converted = float(value)
            except ValueError:
                return False
            return annotation is float or converted.is_integer()
        return isinstance(value, int) or (annotation is float and isinstance(value, float)) or (
            isinstance(value, float) and value.is_integer()
        )
    if annotation is str:
        return isinstance(value, str)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        if isinstance(value, (list, dict)):  # unhashable: no member's value
            return False
        return value in {member.value for member in annotation} or value in annotation.__members__
    if origin is list and isinstance(value, list) and typing.get_args(annotation):
        return all(_conforms(item, typing.get_args(annotation)[0], converted=False) for item in value)
    if origin in (list, tuple, typing.Sequence) or annotation in (list, tuple):
        return isinstance(value, (list, tuple, str))
    if origin is dict or annotation is dict:
        return isinstance(value, (dict, str))
    return True


def _enum_values(annotation: Any) -> list[Any]:
    for arg in typing.get_args(annotation) or (annotation,):
        if isinstance(arg, type) and issubclass(arg, enum.Enum):
            return [member.value for member in arg]
        if typing.get_origin(arg) is typing.Literal:
            return list(typing.get_args(arg))
    return []


def _is_list_type(annotation: Any) -> bool:
    """``list[...]``, ``list``, or an optional one."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_list_type(arg) for arg in typing.get_args(annotation))
    return annotation is list or typing.get_origin(annotation) is list


def _list_item_type(annotation: Any) -> Any:
    """X of a ``list[X]`` annotation, optionally in a union (``list[str] | str | None``); None for any other."""
    lists = [member for member in union_members(annotation) if typing.get_origin(member) is list and typing.get_args(member)]
    return typing.get_args(lists[0])[0] if len(lists) == 1 else None


def _is_string_or_list_type(annotation: Any) -> bool:
    """``str | list[str]``, optionally ``| None`` (``report_to``): HfArgumentParser reads such a field as one string."""
    members = union_members(annotation)
    return str in members and any(_is_list_type(member) for member in members)


def negatable_fields(classes: tuple[type, ...]) -> set[str]:
    """The boolean fields of ``classes`` that default to true: HfArgumentParser takes ``--no_KEY`` for those alone."""
    return {f.name for cls in classes for f in dataclasses.fields(cls) if f.init and f.default is True}


def _is_dict_type(annotation: Any) -> bool:
    """``dict[...]`` or ``dict``, optionally ``| None``; not ``dict | str`` (argparse hands those over as strings)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)] if typing.get_origin(annotation) in (typing.Union, types.UnionType) else [annotation]
    return bool(args) and all(a is dict or typing.get_origin(a) is dict for a in args)


def _json_value(key: str, value: str, expected: type) -> Any:
    """The value of ``--key '{...}'`` for a dict field, or of ``--key '[...]'`` for a list field: JSON, as the YAML's."""
    name, example = ("object", '{"name": 1}') if expected is dict else ("list", '["a", "b"]')
    try:
        decoded = json.loads(value)
    except json.JSONDecodeError as error:
        raise ConfigError(f"--{key} takes a JSON {name}, e.g. --{key} '{example}'; got {value!r} ({error}).") from None
    if not isinstance(decoded, expected):
        raise ConfigError(f"--{key} takes a JSON {name}, e.g. --{key} '{example}'; got {value!r}.")
    return decoded


def union_members(annotation: Any) -> tuple:
    """The alternatives of a union annotation (``int | None`` -> (int, NoneType)); any other annotation alone."""
    return typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else (annotation,)


def admits_none(annotation: Any) -> bool:
    """Whether a field annotation takes None (``str | None``, ``Optional[list[str]]``)."""
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in typing.get_args(annotation)


# A command-line value that means None, as YAML's null does. Not "none": `--report_to none` is the string TRL knows.
NULL_WORDS = ("null", "Null", "NULL", "~")


def unset_null_words(config: Any, *names: str) -> None:
    """Set each of the optional string fields ``names`` of ``config`` that holds a ``NULL_WORDS`` string, "None" or
    "" to None: a TRL script's TrlParser hands ``--text_column null`` over as the string "null", and an empty name
    (``--label_column "$UNSET"``) names no column, as YAML's empty value does."""
    for name in names:
        if getattr(config, name) in (*NULL_WORDS, "None", ""):
            setattr(config, name, None)


def check_column_names(config: Any, *names: str) -> None:
    """A ConfigError unless each of the fields ``names`` of ``config`` names a column: a non-empty string, or a list of
    them (an empty name would reach the data checks as a column that no dataset has)."""
    for name in names:
        value = getattr(config, name)
        if "" in (value if isinstance(value, list) else [value]):
            raise ConfigError(f"{name}={value!r} holds an empty column name: give the column's name.")


def check_finite_number(name: str, value: float, minimum: float = 0, above: bool = False, hint: str = "") -> None:
    """A ConfigError unless ``value`` is a finite number >= ``minimum`` (> where ``above``): NaN fails no comparison,
    and would train an all-NaN model."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (
        value <= minimum if above else value < minimum
    ):
        raise ConfigError(f"{name}={value!r} must be a finite number {'>' if above else '>='} {minimum}{hint}.")


def _numbers_as_lists(values: dict[str, Any], field_types: dict[str, Any]) -> dict[str, Any]:
    """A number where a list is expected (``feature_layers: -1``) is a list of one, as ``--feature_layers -1`` is."""
    return {
        key: [value]
        if key in field_types and _is_list_type(field_types[key]) and isinstance(value, (int, float)) and not isinstance(value, bool)
        else value
        for key, value in values.items()
    }


def _number_type(annotation: Any) -> type | None:
    """int or float for a (possibly optional) number field, else None."""
    options = union_members(annotation)
    numbers = [option for option in options if option in (int, float)]
    return numbers[0] if len(numbers) == 1 else None


def _numbers_as_their_type(values: dict[str, Any], field_types: dict[str, Any]) -> dict[str, Any]:
    """Numbers of a checked YAML as their field's type: ``max_steps: 2.0`` or ``1e2`` (a string to YAML) as an int,
    ``learning_rate: 1e-4`` as a float, ``feature_layers: [0, -1.0]`` as ints. argparse would pass the float on to
    crash inside torch, or fail on the string."""
    converted = dict(values)
    for key, value in values.items():
        if isinstance(value, list) and _list_item_type(field_types.get(key)) is int:
            converted[key] = [int(item) if isinstance(item, float) and item.is_integer() else item for item in value]
            continue
        kind = _number_type(field_types.get(key))
        if kind is None or isinstance(value, bool) or not isinstance(value, (int, float, str)) or (kind is int and isinstance(value, int)):
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        converted[key] = int(number) if kind is int and number.is_integer() else number if kind is float else value
    return converted


def checked_values(values: dict[str, Any], field_types: dict[str, Any], source: str) -> dict[str, Any]:
    """YAML-style ``values`` as their fields take them: a number where a list goes as a list of one, each checked
    against its field's type (a ConfigError names the key, the value and ``source``), numbers as the field's type."""
    values = _numbers_as_lists(values, field_types)
    _check_value_types({k: v for k, v in values.items() if k in field_types}, field_types, source)
    return _numbers_as_their_type(values, field_types)


def _check_value_types(values: dict[str, Any], field_types: dict[str, Any], source: str) -> None:
    for key, value in values.items():
        annotation = field_types[key]
        if not _conforms(value, annotation):
            choices = _enum_values(annotation)
            hint = f" Choose one of: {', '.join(map(str, choices))}." if choices else ""
            if isinstance(value, bool) and (choices or str in union_members(annotation)):
                hint += " YAML reads unquoted yes/no/true/false/on/off as a boolean: quote the word."
            if value is None and _is_list_type(annotation):
                hint = " For none, give the empty list []" + (f" (--{key} '[]')." if source == "the command line" else ".")
            item_type = _list_item_type(annotation)
            if isinstance(value, list) and item_type is not None:
                bad = next(item for item in value if not _conforms(item, item_type, converted=False))
                hint = f" Its items must be {_type_name(item_type)}: {bad!r} is {type(bad).__name__}."
            raise ConfigError(
                f"Key {key!r} in {source} expects {_type_name(annotation)}, got {value!r} "
                f"({type(value).__name__}).{hint}"
            )


def _fields_of_other_trainers(selected: TrainerSpec) -> dict[str, str]:
    """Config fields of the other registered trainers -> the trainer they belong to: of the trainers that have the
    field, the one with the fewest fields (`packing` belongs to `sft`, not to a plugin whose config extends SFTConfig)."""
    configs: list[tuple[int, str, tuple]] = []
    for spec in get_plugin_manager().trainers:
        if spec.name == selected.name:
            continue
        try:
            fields = dataclasses.fields(spec.config_class)
        except Exception:  # a broken plugin must not break another trainer's run
            continue
        configs.append((len(fields), spec.name, fields))
    owners: dict[str, str] = {}
    for _, name, fields in sorted(configs, key=lambda config: config[0]):
        for f in fields:
            owners.setdefault(f.name, name)
    return owners


def is_first_process() -> bool:
    """Rank 0 of a launch (or no launch): the process that prints what all of them would."""
    return int(os.environ.get("RANK", "0")) == 0


def config_note(message: str) -> None:
    """A note on the config, shown once: by ``trl-causal train``, not again by the training processes it launches."""
    if not os.environ.get(CONFIG_REPORTED_ENV) and is_first_process():
        print(f"trl-causal: note: {message}", file=sys.stderr)


def _drop_keys_of_other_trainers(values: dict[str, Any], known: set[str], spec: TrainerSpec, source: str) -> dict[str, Any]:
    """So one YAML serves `trainer: sft` and `trainer: capt`: the other trainer's keys are set aside, with a notice."""
    owners = _fields_of_other_trainers(spec) if any(key not in known for key in values) else {}
    kept = {}
    for key, value in values.items():
        if key not in known and key in owners:
            config_note(f"ignoring {key!r} from {source}: it configures trainer {owners[key]!r}, not {spec.name!r}.")
        else:
            kept[key] = value
    return kept


# Axolotl's names for settings that have another name here (an Axolotl YAML runs through the Axolotl plugin)
AXOLOTL_KEYS = {
    "base_model": "model_name_or_path",
    "micro_batch_size": "per_device_train_batch_size",
    "num_epochs": "num_train_epochs",
    "sequence_len": "max_length",
    "adapter": "use_peft",
}


# Settings that transformers 5 took away, and what replaced them (a key that transformers only renamed is mapped).
REPLACED_SETTINGS = {"group_by_length": "train_sampling_strategy: group_by_length"}


def _unknown_key_error(key: str, source: str, spec: TrainerSpec, known: set[str]) -> ConfigError:
    owner = _fields_of_other_trainers(spec).get(key)
    if owner is not None:
        hint = f" It configures trainer {owner!r}: add `--trainer {owner}` (or `trainer: {owner}`)."
    elif key in REPLACED_SETTINGS and REPLACED_SETTINGS[key].partition(":")[0] in known:
        hint = f" transformers replaced it: set `{REPLACED_SETTINGS[key]}`."
    elif key in AXOLOTL_KEYS:
        hint = (
            f" {key!r} is Axolotl's name: here it is {AXOLOTL_KEYS[key]!r}. For an Axolotl YAML, run Axolotl with "
            "the trl_causal plugin (plugins/axolotl)."
        )
    else:
        hint = did_you_mean(key, sorted(known))  # `TRAINER:` is `trainer`
    return ConfigError(
        f"Unknown key {key!r} in {source}: it is not a field of {spec.config_class.__name__} (trainer "
        f"{spec.name!r}), ModelConfig, ScriptArguments or DatasetMixtureConfig, nor an accelerate launch "
        f"setting.{hint} Run `trl-causal train --trainer {spec.name} --help` for the full list."
    )


def _cli_pairs(argv: list[str]) -> list[tuple[str, list[str]]]:
    """Split ``--key value ...`` command-line arguments into (key, values) pairs."""
    pairs: list[tuple[str, list[str]]] = []
    for item in argv:
        if item == "-h":
            pairs.append(("help", []))
        elif item.startswith("--"):
            key, eq, value = item[2:].partition("=")
            pairs.append((key.replace("-", "_"), [value] if eq else []))
        elif pairs:
            pairs[-1][1].append(item)
        else:
            raise ConfigError(f"Unexpected command-line argument {item!r}: arguments are given as `--key value`.")
    return pairs


def _without_option(argv: list[str], key: str) -> list[str]:
    """``argv`` without the option ``--key`` and its values (a later setting of the key replaces it)."""
    kept, skipping = [], False
    for item in argv:
        if item.startswith("--"):
            skipping = item[2:].partition("=")[0] == key
        if not skipping:
            kept.append(item)
    return kept


def _launch_arg(key: str, value: Any) -> list[str]:
    """``accelerate launch`` arguments for one YAML setting. A flag (``multi_gpu: true``) is given or left out; a
    setting that takes a value gets it, where YAML's booleans mean the value's words: ``mixed_precision: no`` (unquoted,
    which YAML reads as false) is ``--mixed_precision no``."""
    action = _launch_actions().get(key)
    is_flag = action.nargs == 0 if action is not None else isinstance(value, bool)
    if is_flag:
        return [f"--{key}"] if value else []
    if value is None:
        return []
    if isinstance(value, bool):
        words = ("yes", "no") if "no" in (action.choices or ()) else ("true", "false")
        value = words[0] if value else words[1]
    return [f"--{key}", *map(str, value if isinstance(value, list) else [value])]


def _cli_launch_value(key: str, values: list[str]) -> Any:
    """The value of an ``accelerate launch`` setting given on the command line: a flag alone is true, and takes
    true/false (yes/no, 1/0) as the YAML does; a setting with a value takes its word(s)."""
    action = _launch_actions().get(key)
    if action is not None and action.nargs == 0:
        if not values:
            return True
        words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
        if len(values) == 1 and values[0].lower() in words:
            return words[values[0].lower()]
        raise ConfigError(f"--{key} is an accelerate flag: give it alone, or `--{key} true` / `--{key} false`; got {' '.join(values)!r}.")
    if not values:
        raise ConfigError(f"--{key} needs a value (an accelerate launch setting).")
    return values[0] if len(values) == 1 else list(values)


def resolve_accelerate_config(value: str) -> str:
    """A path to an accelerate config file (``~`` expanded), or the name of one TRL ships (``zero3``, ``multi_gpu``, ...)."""
    if Path(value).expanduser().is_file():
        return os.path.expanduser(value)
    import importlib.resources

    candidate = importlib.resources.files("trl.accelerate_configs").joinpath(f"{value}.yaml")
    if not candidate.is_file():
        shipped = sorted(p.name.removesuffix(".yaml") for p in importlib.resources.files("trl.accelerate_configs").iterdir() if p.name.endswith(".yaml"))
        raise ConfigError(
            f"accelerate_config {value!r} is neither a file nor one of the configs TRL ships ({', '.join(shipped)})."
        )
    return str(candidate)


LAUNCH_FILE_KEYS = ("config_file", "deepspeed_config_file")  # accelerate launch settings that name a file


def existing_launch_file(key: str, value: str, source: str) -> str:
    """The file an ``accelerate launch`` setting names, ``~`` expanded, once it is there: checked before the data,
    where accelerate fails with a traceback after the data checks."""
    path = Path(value).expanduser()
    if not path.is_file():
        fix = (
            "give an accelerate config file (`accelerate config` writes one), or `accelerate_config: NAME` for one TRL ships"
            if key == "config_file" else "give a DeepSpeed JSON config file"
        )
        raise ConfigError(f"{key} {value!r} in {source} is not a file (resolved to {path.resolve()}): {fix}.")
    return str(path)


CHECKPOINTING_NAMES = {  # transformers' older names of the checkpointing settings -> the names of recent releases
    "gradient_checkpointing": "activation_checkpointing",
    "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs",
}


def with_checkpointing_name(pairs: list[tuple[str, Any]], field_types: dict[str, Any]) -> list[tuple[str, Any]]:
    """(key, value) pairs with ``activation_checkpointing`` and ``activation_checkpointing_kwargs`` (the names of recent
    transformers 5 releases, which the example configs use) as ``gradient_checkpointing`` and
    ``gradient_checkpointing_kwargs`` where the installed transformers has only the older names (5.20, the oldest this
    package admits)."""
    if "activation_checkpointing" in field_types or "gradient_checkpointing" not in field_types:
        return pairs
    for old, new in CHECKPOINTING_NAMES.items():
        if any(key == new for key, _ in pairs):  # the new name wins, as in newer transformers
            pairs = [(key, value) for key, value in pairs if key != old]
    older = {new: old for old, new in CHECKPOINTING_NAMES.items()}
    return [(older.get(key, key), value) for key, value in pairs]


def without_checkpointing_set_otherwise(yaml_values: dict[str, Any], cli_keys: list[str]) -> dict[str, Any]:
    """The YAML's values without a checkpointing setting that the command line gives under its other name
    (``--gradient_checkpointing true`` over ``activation_checkpointing: false``): transformers reads the older name only
    where the newer one is unset, so the YAML's would win over the command line."""
    other_name = {**CHECKPOINTING_NAMES, **{new: old for old, new in CHECKPOINTING_NAMES.items()}}
    given = {key.removeprefix("no_") for key in cli_keys} | set(cli_keys)  # `--no_gradient_checkpointing` sets it too
    replaced = {other_name[key] for key in given if key in other_name}
    return {key: value for key, value in yaml_values.items() if key not in replaced}


def parse_run_config(argv: list[str], config_path: str | None = None) -> RunConfig:
    """Parse ``--config cfg.yaml`` plus ``--key value`` overrides (overrides win over the YAML).

    Raises ``ConfigError`` naming the key and its fix for unknown keys, wrong types and bad YAML.
    """
    from trl import TrlParser

    yaml_values: dict[str, Any] = dict(read_yaml(config_path)) if config_path else {}
    source = str(config_path) if config_path else "the command line"
    env = yaml_values.pop(ENV_KEY, {}) or {}
    if not isinstance(env, dict):
        raise ConfigError(f"Key 'env' in {source} must be a mapping of environment variables to values.")
    for name, value in env.items():
        os.environ[str(name)] = str(value)

    cli = _cli_pairs(argv)
    trainer_name = yaml_values.pop(TRAINER_KEY, "sft")
    for key, values in cli:
        if key == TRAINER_KEY:
            if len(values) != 1:
                raise ConfigError("--trainer takes exactly one value, e.g. `--trainer capt`.")
            trainer_name = values[0]
    if not isinstance(trainer_name, str):
        raise ConfigError(f"Key 'trainer' in {source} must be a trainer name (run `trl-causal list`), got {trainer_name!r}.")
    spec = get_plugin_manager().get_trainer(trainer_name)

    classes = dataclass_types(spec)
    field_types = config_field_types(classes)
    negatable = negatable_fields(classes)
    # `--no_KEY` is `--KEY false`: HfArgumentParser reads it for the booleans that default to true, this for the others
    # (`--no_packing`, `--no_bf16`, whose default None TRL resolves)
    cli = [
        (key[3:], ["false"])
        if key.startswith("no_") and not values and key[3:] not in negatable and bool in union_members(field_types.get(key[3:]))
        else (key, values)
        for key, values in cli
    ]
    yaml_values = without_checkpointing_set_otherwise(yaml_values, [key for key, _ in cli])
    yaml_values = dict(with_checkpointing_name(list(yaml_values.items()), field_types))
    cli = with_checkpointing_name(cli, field_types)
    launch_keys = accelerate_launch_keys() - set(field_types)
    known = set(field_types) | launch_keys | {TRAINER_KEY, ENV_KEY}

    yaml_values = _drop_keys_of_other_trainers(yaml_values, known, spec, source)
    for key in yaml_values:
        if key not in known:
            raise _unknown_key_error(key, source, spec, known)
    for key, _ in cli:
        negated = key.removeprefix("no_")  # `--no_KEY` sets a boolean field that defaults to true to false, as in --help
        if key in known or key == "help" or (negated != key and negated in negatable):
            continue
        raise _unknown_key_error(key, "the command line", spec, known)
    yaml_values = checked_values(yaml_values, field_types, source)

    # the command line overrides the YAML's launch settings key by key (`--multi_gpu false` undoes `multi_gpu: true`)
    launch_values = {key: value for key, value in yaml_values.items() if key in launch_keys}
    script_argv: list[str] = []
    for key, values in cli:
        if key in launch_keys:
            launch_values[key] = _cli_launch_value(key, values)
        elif key != TRAINER_KEY:
            script_argv += [f"--{key}", *values]
    last = dict(cli)
    for key in LAUNCH_FILE_KEYS:
        if isinstance(launch_values.get(key), str):
            launch_values[key] = existing_launch_file(key, launch_values[key], "the command line" if key in last else source)
    launch_args = [arg for key, value in launch_values.items() for arg in _launch_arg(key, value)]
    # `--text_column null` unsets a field as `text_column: null` does, which argparse cannot: the last setting counts
    nulls = {key: None for key, values in last.items() if len(values) == 1 and values[0] in NULL_WORDS and key in field_types}
    # a list field that takes no None refuses null, as in the YAML, where argparse would read a list of the word
    checked_values({key: None for key in nulls if _is_list_type(field_types[key])}, field_types, "the command line")
    preset = {key: None for key in nulls if admits_none(field_types[key])}
    # argparse cannot read a dict field: `--key '{"a": 1}'` is JSON, as the YAML's mapping would be
    preset.update(
        (key, _json_value(key, " ".join(values), dict))
        for key, values in last.items()
        if key not in preset and key in field_types and _is_dict_type(field_types[key])
    )
    # a list field takes `--key a b` (argparse) or, as the YAML's list would be written, `--key '["a", "b"]'`
    json_lists = {
        key: _json_value(key, values[0], list)
        for key, values in last.items()
        if key not in preset and key in field_types and _is_list_type(field_types[key])
        and len(values) == 1 and values[0].lstrip().startswith("[")
    }
    preset.update(checked_values(json_lists, field_types, "the command line"))
    # and so does a `str | list[str]` field, which argparse would read as one string: `--report_to none tensorboard`
    several = {
        key: values
        for key, values in last.items()
        if key not in preset and key in field_types and _is_string_or_list_type(field_types[key]) and len(values) > 1
    }
    preset.update(checked_values(several, field_types, "the command line"))
    parsed_argv = script_argv
    for key in preset:
        parsed_argv = _without_option(parsed_argv, key)
    if f"--{ACCELERATE_CONFIG_KEY}" in launch_args:
        at = launch_args.index(f"--{ACCELERATE_CONFIG_KEY}")
        resolved = resolve_accelerate_config(launch_args[at + 1])
        launch_args = ["--config_file", resolved] + launch_args[:at] + launch_args[at + 2 :]

    parser = TrlParser(classes, prog=f"trl-causal train --trainer {spec.name}")

    def one_line_error(message: str):  # argparse would print the whole usage (hundreds of lines) and exit
        raise ConfigError(f"{message} (on the command line). Run `trl-causal train --trainer {spec.name} --help` for the fields.")

    parser.error = one_line_error
    parser.set_defaults_with_config(**_null_reporting_as_none({**{k: v for k, v in yaml_values.items() if k in field_types}, **preset}))
    try:
        with warnings.catch_warnings():
            if not any("gradient_checkpointing" in key for key in [*yaml_values, *last]):
                # TRL's configs default gradient_checkpointing to True, which transformers 5 reports as a deprecated
                # name on every run: say nothing about a key the user did not write
                warnings.filterwarnings("ignore", message="`gradient_checkpointing", category=FutureWarning)
            script_args, training_args, model_args, dataset_args = parser.parse_args_into_dataclasses(args=parsed_argv)
    except ConfigError:
        raise
    except (ValueError, TypeError) as error:  # a config's __post_init__ on a combination of values; a `datasets:` entry's unknown key
        hint = (
            " On a CPU-only machine set `bf16: false` (float32; TRL's configs turn bf16 on by default), or `use_cpu: "
            "true` to train in bf16 on the CPU." if "bf16" in str(error) else ""
        )
        where = f"{source} and the command line" if config_path and script_argv else source
        raise ConfigError(f"Invalid settings in {where}: {error}{hint}") from error
    check_reporting_packages(training_args.report_to, "the command line" if "report_to" in last else source)
    if model_args.model_name_or_path is None:
        raise ConfigError(f"No model: set `model_name_or_path` in {source} (a hub id, a local directory, or an embedded model name such as 'smollm2-135m-instruct').")
    if dataset_args.datasets and script_args.dataset_name:
        config_note(f"{source} sets both `datasets` and `dataset_name`: the `datasets` mixture is loaded and "
                    f"dataset_name {script_args.dataset_name!r} is ignored, as TRL does.")
    if not dataset_args.datasets and not script_args.dataset_name:
        raise ConfigError(f"No data: set `dataset_name` in {source} (a hub id, a directory saved by `datasets`, or a .json/.jsonl/.csv/.parquet file).")
    if dataset_args.streaming and not dataset_args.datasets and not script_args.dataset_streaming:
        config_note(f"{source} sets `streaming: true`, which streams a `datasets:` mixture only, so {script_args.dataset_name!r} "
                    "is loaded whole, as TRL does; `dataset_streaming: true` streams dataset_name.")
    given = [key for key in yaml_values if key in field_types]
    given += [
        key if key in field_types else key.removeprefix("no_")
        for key, _ in cli
        if key in field_types or key.removeprefix("no_") in negatable
    ]
    return RunConfig(
        spec, script_args, training_args, model_args, dataset_args, launch_args, script_argv, config_path, tuple(dict.fromkeys(given))
    )


def _null_reporting_as_none(values: dict[str, Any]) -> dict[str, Any]:
    """``report_to: null`` (or ``--report_to null``) as ``"none"``, transformers' default: no reporting, where
    TrainingArguments would take the null for an integration's name and fail once the model is built."""
    return {**values, "report_to": "none"} if "report_to" in values and values["report_to"] is None else values


REPORTING_PACKAGES = {  # report_to integrations that transformers finds by their package alone, and its pip name
    # (azure_ml and dagshub depend on mlflow as well, comet_ml on its configuration, kubeflow on an environment
    # variable: they are left to transformers)
    "tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "clearml": "clearml", "dvclive": "dvclive",
    "neptune": "neptune", "codecarbon": "codecarbon", "swanlab": "swanlab", "trackio": "trackio",
}


def check_reporting_packages(report_to: list[str] | str | None, source: str) -> None:
    """A ``report_to`` integration whose package is missing, or ``none`` / ``all`` beside other names, is one line before
    launch, where transformers fails with a traceback once the data is loaded and the model built."""
    from transformers.integrations import get_available_reporting_integrations

    named = [report_to] if isinstance(report_to, str) else list(report_to or [])
    words = [name for name in named if name in ("none", "all")]
    if words and len(named) > 1:
        raise ConfigError(
            f"report_to in {source} names {words[0]!r} beside {', '.join(repr(n) for n in named if n != words[0])}: "
            f"{words[0]!r} stands alone (`report_to: {words[0]}`), or name the integrations alone."
        )
    missing = [name for name in named if name in REPORTING_PACKAGES and name not in get_available_reporting_integrations()]
    if missing:
        packages = " ".join(REPORTING_PACKAGES[name] for name in missing)
        raise ConfigError(
            f"report_to in {source} names {', '.join(missing)}, whose package is not installed: `pip install {packages}`, "
            "or set `report_to: none`."
        )


def recorded_form(value: Any) -> Any:
    """A setting as the run record stores it (JSON: tuples as lists, enums as their values, dataclasses (a `datasets:`
    entry) as mappings of their fields)."""

    def as_json(item):
        return dataclasses.asdict(item) if dataclasses.is_dataclass(item) else getattr(item, "value", str(item))

    return json.loads(json.dumps(value, default=as_json))


HIDDEN = "<hidden>"  # what a record or a message shows in place of a secret
# Words of a setting's name that say its value is a secret (``hub_token``, ``api_key``, ``aws_secret_access_key``,
# ``password``, ``Authorization``), and the names that only name one (``api_key_env``: a variable) or are no secret
# (``max_tokens``, ``pad_token``: a tokenizer's special token).
_SECRET_WORDS = re.compile(r"(^|_)(token|password|passwd|secrets?|credentials?|auth|authorization|apikey|(api|access|private)_key)(_|$)")
_NOT_SECRET_NAMES = re.compile(r"(_env|_tokens|^(pad|eos|bos|unk|sep|cls|mask)_token)$")
DATA_KEYED_SETTINGS = frozenset({"verbalizer"})  # mappings whose keys are data (class labels), not names of settings


def is_secret_name(name: str) -> bool:
    """Whether a setting (or a URL's query parameter) named ``name`` holds a secret: its name has a word such as token,
    password, secret, credential(s), auth, api_key or access_key, in any case and with ``-`` or camelCase between words;
    not ``api_key_env`` (it names the variable), ``max_tokens`` or ``pad_token``."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower().replace("-", "_")
    return bool(_SECRET_WORDS.search(words)) and not _NOT_SECRET_NAMES.search(words)


def hidden_url(url: str) -> str:
    """``url`` with a user name and password in it, and every value of its query string, as ``HIDDEN``: a query
    string may carry a key under any name (``key=``, ``code=``, ``sig=``). A string without a scheme and host is
    returned as is."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # an unclosed "[" (of an IPv6 address): what follows the scheme is hidden whole
        return f"{url.partition('://')[0]}://{HIDDEN}"
    if not (parts.scheme and parts.netloc):
        return url
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{HIDDEN}@{host}" if "@" in parts.netloc else host
    query = "&".join(f"{name}={HIDDEN}" if eq else name for name, eq, _ in (pair.partition("=") for pair in parts.query.split("&")))
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def hidden_secrets(value: Any) -> Any:
    """``value`` with what a mapping in it holds under a secret's name (``is_secret_name``) as ``HIDDEN``, at any depth
    (a Hub token in ``model_init_kwargs``, an API key in ``event_estimator_kwargs``), and the credentials of a URL
    (``hidden_url``): what a run record or a message may show of a setting."""
    if isinstance(value, dict):
        return {
            key: item if key in DATA_KEYED_SETTINGS else HIDDEN if is_secret_name(str(key)) and item is not None else hidden_secrets(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [hidden_secrets(item) for item in value]
    if isinstance(value, str) and "://" in value:
        return hidden_url(value)
    return value


_NOT_RECORDED = object()


def _with_current_secret(recorded: Any, current: Any, secret: bool = False) -> Any:
    """``recorded`` with each hidden secret in it (under a secret's name, or a string holding ``HIDDEN``) replaced by
    ``current``'s at the same place; ``_NOT_RECORDED`` where ``current`` (itself ``_NOT_RECORDED`` where absent) has
    none there, or a URL other than the recorded one."""
    if secret:
        return current
    if isinstance(recorded, str) and HIDDEN in recorded:
        return current if isinstance(current, str) and hidden_secrets(current) == recorded else _NOT_RECORDED
    if isinstance(recorded, dict):
        current = current if isinstance(current, dict) else {}
        items = {
            key: item if key in DATA_KEYED_SETTINGS
            else _with_current_secret(item, current.get(key, _NOT_RECORDED), is_secret_name(str(key)) and item is not None)
            for key, item in recorded.items()
        }
        return _NOT_RECORDED if any(item is _NOT_RECORDED for item in items.values()) else items
    if isinstance(recorded, list):
        current = current if isinstance(current, list) and len(current) == len(recorded) else [_NOT_RECORDED] * len(recorded)
        items = [_with_current_secret(item, other) for item, other in zip(recorded, current)]
        return _NOT_RECORDED if any(item is _NOT_RECORDED for item in items) else items
    return recorded


def with_current_secrets(recorded: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """The settings of a run record (``recorded``, secrets hidden) with each secret in them taken from ``current``
    (this run's settings, as JSON) at the same place: a secret is never taken from a record. A setting whose secret
    ``current`` does not hold is left out, as not recorded."""
    settings = {key: _with_current_secret({key: value}, current) for key, value in recorded.items()}  # each on its own
    return {key: setting[key] for key, setting in settings.items() if setting is not _NOT_RECORDED}


def given_settings(run: RunConfig, always: tuple[str, ...] = ()) -> dict[str, Any]:
    """The trainer and the settings the run's YAML and command line gave (``run.given_fields``), and those of
    ``always``, with the values the run uses, as JSON and with secrets hidden (``hidden_secrets``): a config that runs
    it again. The YAML's ``env`` and the accelerate launch settings are not among them."""
    values: dict[str, Any] = {}
    for args in (run.dataset_args, run.model_args, run.training_args, run.script_args):  # the first class of a field wins
        values.update((f.name, getattr(args, f.name)) for f in dataclasses.fields(args) if f.init)
    keys = dict.fromkeys([*run.given_fields, *always])
    return hidden_secrets(recorded_form({TRAINER_KEY: run.trainer.name, **{key: values[key] for key in keys}}))


def settings_differing(args: Any, recorded: dict[str, Any]) -> dict[str, Any]:
    """The recorded method settings that ``args`` sets otherwise, {key: recorded value, secrets hidden}: both as
    ``method_settings`` gives them (a field left None that follows another, ``latent_shift_seed``: ``seed``, as its
    ``<key>_value``). A recorded secret is this run's (``with_current_secrets``): it never differs."""
    current = recorded_form(method_settings(args))
    recorded = with_current_secrets(recorded, current)
    return {key: hidden_secrets(value) for key, value in recorded.items() if key in current and current[key] != value}


def method_settings(args) -> dict:
    """The fields that a trainer's config adds to the TRL config it extends (CAPT's estimator and symbol pool,
    latent_shift's draws, ...), as JSON values: with the trainer's name they tell eval how the checkpoint predicts.
    A field that defaults to another (``intervention_seed`` None: ``seed``) is recorded as used, its ``<field>_value``."""
    from transformers import TrainingArguments

    # a plugin's config may extend transformers' TrainingArguments directly
    base = next((cls for cls in type(args).__mro__ if cls.__module__.split(".")[0] == "trl"), TrainingArguments)
    added = {f.name for f in dataclasses.fields(args) if f.init} - {f.name for f in dataclasses.fields(base)}
    values = args.to_dict()
    return {name: values[name] if values[name] is not None else getattr(args, f"{name}_value", None) for name in sorted(added)}
