"""The training script that ``trl-causal train`` launches through accelerate.

Also usable directly: ``accelerate launch [--config_file ...] -m trl_causal.train --config cfg.yaml``.
Accelerate keys in the YAML are ignored here (the launcher consumed them).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

from .configuration import (
    RunConfig,
    given_settings,
    hidden_secrets,
    is_first_process,
    method_settings,
    parse_run_config,
    with_current_secrets,
)
from .data import check_columns, check_streamed_steps, load_run_datasets
from .errors import ConfigError, TrlCausalError, count_rows, for_count
from .evaluation import training_answer_prefix
from .paths import read_json_file, write_json_file, writing_output_dir

SUMMARY_FILE = "trl_causal_run.json"
INTERRUPTED_EXIT_CODE = 130  # as a shell reports a command stopped by Ctrl-C (128 + SIGINT)
# How many processes `trl-causal train` asked accelerate to launch (set for the launched processes only).
REQUESTED_PROCESSES_ENV = "TRL_CAUSAL_NUM_PROCESSES"


def model_init_kwargs_of(model_args, training_args) -> dict[str, Any]:
    """The keyword arguments the model loads with, as TRL's scripts pass them: ``ModelConfig``'s, then the config's
    ``model_init_kwargs`` (with transformers' old name ``torch_dtype`` read as ``dtype``, which would lose to it)."""
    model_init_kwargs = dict(
        revision=model_args.model_revision,
        trust_remote_code=getattr(training_args, "trust_remote_code", False),
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
    )
    given = dict(getattr(training_args, "model_init_kwargs", None) or {})
    if "torch_dtype" in given and "dtype" not in given:
        given["dtype"] = given.pop("torch_dtype")
    return {**model_init_kwargs, **given}


def build_trainer(run: RunConfig, train_dataset, eval_dataset):
    """Instantiate the registered trainer with the same keyword arguments TRL's scripts pass."""
    import transformers
    from trl import get_quantization_config

    from .embedded import resolve_model_name_or_path

    model_args, training_args = run.model_args, run.training_args
    model_init_kwargs = training_args.model_init_kwargs = model_init_kwargs_of(model_args, training_args)
    kwargs = dict(
        model=resolve_model_name_or_path(model_args.model_name_or_path),
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        peft_config=peft_config_of(model_args),
        quantization_config=get_quantization_config(model_args),
    )
    # the model's config, read once for the checks before the weights load (None: loading the model says what is wrong)
    model_config = _load_or_none(transformers.AutoConfig, kwargs["model"], model_init_kwargs)
    check_lora_targets(model_config, kwargs["peft_config"], model_init_kwargs, run.trainer.kind, model_args.model_name_or_path)
    check_chat_template(kwargs["model"], training_args, train_dataset, model_init_kwargs)
    check_model_settings(run.trainer.trainer_class, training_args, model_config)
    try:
        return run.trainer.trainer_class(**accepted_kwargs(run.trainer.name, run.trainer.trainer_class, kwargs))
    except ValueError as error:
        if not raised_by_trl(error):
            raise
        hint = (
            " Give a chat template with `{% generation %}` markers (chat_template_path), or drop assistant_only_loss."
            if "{% generation %}" in str(error) else ""
        )
        raise TrlCausalError(f"TRL refused the settings or data: {error}{hint}") from error


def peft_config_of(model_args):
    """TRL's ``get_peft_config``, with PEFT's refusal of a setting (e.g. an unknown ``lora_task_type``) as one line."""
    from trl import get_peft_config

    try:
        return get_peft_config(model_args)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"PEFT refused the LoRA settings (use_peft, lora_r, lora_task_type, ...): {error}") from error


def check_lora_targets(config, peft_config, model_init_kwargs: dict, kind: str, shown_name: str) -> None:
    """Fail in one line naming the key, before the model loads (PEFT's own errors are tracebacks after it, or none):
    ``use_peft`` without ``lora_target_modules`` on a model type PEFT has no default targets for (e.g. phi3, whose
    attention is one fused qkv_proj); a name in ``lora_target_modules`` or ``lora_modules_to_save`` that no module of
    the model has (checked on the model built on the meta device: no weights load). ``config``: the model's config
    (None: nothing to check); ``shown_name``: the model as the config names it."""
    if peft_config is None or config is None:
        return
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULT_TARGETS

    targets = peft_config.target_modules
    if targets is None and not getattr(peft_config, "target_parameters", None) and config.model_type not in DEFAULT_TARGETS:
        raise ConfigError(
            f"use_peft: PEFT has no default LoRA target modules for model_type {config.model_type!r}. Set lora_target_modules: "
            "`all-linear` (every linear layer but the output head), or the names of the model's projections."
        )
    names = _module_names(config, kind, model_init_kwargs.get("trust_remote_code", False))
    if names is None:  # a model this check cannot build on the meta device: loading it says what is wrong
        return
    built = f"the sequence classifier built from {shown_name}" if kind == "reward" else shown_name
    if isinstance(targets, str) and targets != "all-linear":
        if any(re.fullmatch(targets, name) for name in names):
            targets = None  # a regular expression of whole module paths (PEFT's reading of one string) that matches
        elif not targets.isidentifier():
            raise ConfigError(
                f"lora_target_modules {targets!r}, one entry, is a regular expression that PEFT matches against whole "
                f"module paths, and no module of {built} matches it; give the module names as a list of two or more, "
                "or a pattern such as '.*q_proj'."
            )
        else:  # TRL turns a one-name list ([q_proj]) into that string, which PEFT then finds nowhere: the name is meant
            peft_config.target_modules = targets = {targets}
    listed = {"lora_target_modules": targets, "lora_modules_to_save": peft_config.modules_to_save}
    for key, wanted in listed.items():
        wanted = [] if wanted is None or wanted == "all-linear" else [wanted] if isinstance(wanted, str) else wanted
        unknown = [target for target in wanted if not any(name == target or name.endswith(f".{target}") for name in names)]
        if unknown:
            leaves = sorted({name.rsplit(".", 1)[-1] for name in names if name and not name.rsplit(".", 1)[-1].isdigit()})
            raise ConfigError(f"{key} names {unknown}, which no module of {built} has; its modules are named: {', '.join(leaves)}.")


def _module_names(config, kind: str, trust_remote_code: bool) -> list[str] | None:
    """The module names of the model a trainer of ``kind`` trains, built on the meta device (no weights): the class of
    ``config.architectures[0]``, as TRL loads it, else AutoModelForCausalLM; AutoModelForSequenceClassification for a
    reward model. None where it cannot be built so (remote code that needs real tensors, an unknown class)."""
    import torch
    import transformers

    if kind == "reward":
        model_class = transformers.AutoModelForSequenceClassification
    else:
        architecture = (getattr(config, "architectures", None) or [None])[0]
        model_class = getattr(transformers, architecture or "", None) or transformers.AutoModelForCausalLM
    safe_ops = getattr(getattr(transformers, "initialization", None), "meta_device_safe_creation_ops", contextlib.nullcontext)
    try:
        with safe_ops(), torch.device("meta"):
            if model_class.__name__.startswith("Auto"):
                model = model_class.from_config(config, trust_remote_code=trust_remote_code)
            else:
                model = model_class._from_config(config)
    except Exception:  # any failure only means the check cannot run
        return None
    return [name for name, _ in model.named_modules()]


def check_model_settings(trainer_class, training_args, model_config) -> None:
    """The trainer's ``check_model_config`` on the model's config (None: nothing to check), before the model loads (a
    layer index past the model's last layer fails there, not once the weights have loaded and the rows are tokenized)."""
    check = getattr(trainer_class, "check_model_config", None)
    if check is not None and model_config is not None:
        check(training_args, model_config)


def _load_or_none(auto_class, model: str, model_init_kwargs: dict):
    """``auto_class.from_pretrained(model)`` at the run's revision and trust_remote_code, or None where it fails (loading
    the model later says what is wrong)."""
    try:
        return auto_class.from_pretrained(
            model, revision=model_init_kwargs.get("revision"), trust_remote_code=model_init_kwargs.get("trust_remote_code", False)
        )
    except (OSError, ValueError):
        return None


def check_chat_template(model: str, training_args, train_dataset, model_init_kwargs: dict) -> None:
    """Conversational rows are rendered by a chat template: a tokenizer without one, and no ``chat_template_path``,
    fail in one line before the model loads (transformers' error is a traceback from inside the trainer)."""
    import datasets
    import transformers
    from trl.data_utils import is_conversational

    if getattr(training_args, "chat_template_path", None) or not isinstance(train_dataset, datasets.Dataset):
        return
    if not len(train_dataset) or not is_conversational(train_dataset[0]):
        return
    # as TRL's trainers load it: a processor keeps its own chat template (chat_template.json)
    processor = _load_or_none(transformers.AutoProcessor, model, model_init_kwargs)
    templates = (getattr(processor, "chat_template", None), getattr(getattr(processor, "tokenizer", None), "chat_template", None))
    if processor is not None and templates == (None, None):
        raise ConfigError(
            f"The training rows are conversations (lists of messages), but the tokenizer of {model} has no chat "
            "template to render them. Set chat_template_path (a Jinja template file, or a tokenizer directory whose "
            "template to use), or give the rows as text (prompt / completion strings)."
        )


def raised_by_trl(error: BaseException) -> bool:
    """Whether ``error`` was raised in TRL's own code: its trainers' checks of the config and data (e.g. a chat template
    without `{% generation %}` markers under assistant_only_loss), which a user fixes in the YAML or the data."""
    import trl

    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and frames[-1].filename.startswith(os.path.dirname(trl.__file__) + os.sep)


def accepted_kwargs(name: str, trainer_cls, kwargs: dict) -> dict:
    """The ``kwargs`` that ``trainer_cls.__init__`` takes (all of them if it has ``**kwargs``). A set one it does not take
    is an error: dropping ``peft_config`` would quietly turn ``use_peft: true`` into a full fine-tune."""
    parameters = inspect.signature(trainer_cls.__init__).parameters
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()):
        return kwargs
    refused = [key for key, value in kwargs.items() if value is not None and key not in parameters]
    if refused:
        settings = {"peft_config": "use_peft and the lora_* keys", "quantization_config": "load_in_4bit / load_in_8bit"}
        raise TrlCausalError(
            f"Trainer {name!r} ({trainer_cls.__module__}.{trainer_cls.__qualname__}) takes no "
            + ", ".join(f"{key!r}" + (f" (from {settings[key]})" if key in settings else "") for key in refused)
            + "; remove those settings from the config, or let the trainer's __init__ take them."
        )
    return {key: value for key, value in kwargs.items() if key in parameters}


def check_run_columns(run: RunConfig, train_dataset, eval_dataset) -> None:
    """Fail when a split lacks the trainer's columns: its kind's text columns, or the sets ``trainer_cls.column_sets(args)``
    gives (one must be present), and all of ``trainer_cls.required_columns(args)``; ``trainer_cls.columns_hint(args)``
    adds how to fix it."""
    trainer_cls, args = run.trainer.trainer_class, run.training_args
    needed = tuple(trainer_cls.required_columns(args)) if hasattr(trainer_cls, "required_columns") else ()
    text_columns = tuple(map(tuple, trainer_cls.column_sets(args))) if hasattr(trainer_cls, "column_sets") else None
    hint = trainer_cls.columns_hint(args) if hasattr(trainer_cls, "columns_hint") else ""
    for dataset, source in ((train_dataset, "training split"), (eval_dataset, "evaluation split")):
        if dataset is not None:
            check_columns(dataset, run.trainer.kind, needed, source, text_columns, hint, args)


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def remove_stale_adapter(output_dir: str, since: float) -> None:
    """Remove the LoRA adapter files that an earlier run left in ``output_dir`` when this run saved full weights
    there (files older than ``since``): eval, like PEFT, loads an adapter wherever ``adapter_config.json`` is."""
    since -= 2.0  # coarse file timestamps: only files clearly older than this run count
    stale = [name for name in ADAPTER_FILES if os.path.isfile(path := os.path.join(output_dir, name)) and os.path.getmtime(path) < since]
    if "adapter_config.json" in stale:
        for name in stale:
            os.remove(os.path.join(output_dir, name))
        print(f"trl-causal: removed the LoRA adapter an earlier run left in {output_dir} ({', '.join(stale)}): "
              "this run saved full weights there.", file=sys.stderr)


def read_run_record(checkpoint: str) -> dict:
    """What training recorded in a checkpoint (``SUMMARY_FILE``): its trainer and method settings, with
    ``checkpoint`` added; {} if it has none."""
    record = read_json_file(checkpoint, SUMMARY_FILE)
    return {} if record is None else {**record, "checkpoint": checkpoint}


def check_output_dir_holds_no_other_run(output_dir: str, trainer_name: str) -> None:
    """Before a fresh run: an ``output_dir`` whose run records (its own, its checkpoint-N folders') name another
    trainer is an error. The two runs' files would mix (that trainer's heads or report beside this one's model), and
    ``resume_from_checkpoint: true`` would later pick a checkpoint of either."""
    folders = [output_dir] + [path for _, path in checkpoints_in(output_dir)[0]]
    others = {}
    for folder in folders:
        trainer = read_run_record(folder).get("trainer", trainer_name)
        if trainer != trainer_name:
            others.setdefault(trainer, []).append(os.path.basename(folder) if folder != output_dir else "the final model")
    if others:
        held = "; ".join(f"trainer {name!r} ({', '.join(where)})" for name, where in others.items())
        raise TrlCausalError(
            f"output_dir {output_dir} holds a run of {held}. A {trainer_name!r} run there would mix the two runs' files "
            f"and checkpoints. Set another output_dir, or delete that one."
        )


def check_resumed_run(
    checkpoint: str,
    trainer_name: str,
    settings: dict,
    max_steps: int = -1,
    num_train_epochs: float = 3.0,
    fixed: Sequence[str] = (),
) -> tuple[int, dict]:
    """Before any model loads: a checkpoint another trainer saved, or one that already finished what this run asks
    for (``max_steps``; without max_steps, the last step of ``num_train_epochs`` epochs), is an error; so is a
    recorded method setting this run changes where the checkpoint fixes it (``fixed``: what its heads and memory bank
    were built with; a ``*learning_rate``, which the restored optimizer and scheduler keep). Other changed settings
    (weights, draws, ...) are named in a note, secrets hidden; a recorded secret is this run's (``with_current_secrets``).
    A ``fixed`` verbalizer that is unset, or the same mapping in another order, takes the checkpoint's (its order is
    the heads' classes). Returns the checkpoint's step and the settings taken from the checkpoint."""
    state = read_json_file(checkpoint, TRAINER_STATE_FILE) or {}
    step = state.get("global_step", 0)
    if 0 < max_steps <= step:
        raise TrlCausalError(
            f"{checkpoint} is at step {step} and max_steps is {max_steps}: nothing is left to train (transformers "
            "would still train one more step). Raise max_steps to go on training."
        )
    finished = 0 < (state.get("max_steps") or 0) <= step and (state.get("epoch") or 0) >= num_train_epochs
    if max_steps <= 0 and finished:
        raise TrlCausalError(
            f"{checkpoint} finished its run (step {step} of {state['max_steps']}, epoch {state['epoch']:g}) and "
            f"num_train_epochs is {num_train_epochs:g}: nothing is left to train (transformers would train no step "
            "and save the same weights again). Raise num_train_epochs (or set max_steps) to go on training."
        )
    record = read_run_record(checkpoint)
    if record.get("trainer", trainer_name) != trainer_name:
        raise TrlCausalError(
            f"{checkpoint} was saved by trainer {record['trainer']!r}; resume it with `trainer: {record['trainer']}`, "
            f"not {trainer_name!r}."
        )
    recorded = with_current_secrets({key: value for key, value in record.get("settings", {}).items() if key in settings}, settings)
    taken = {
        key: value for key, value in recorded.items()
        if key == "verbalizer" and key in fixed and isinstance(value, dict) and settings[key] in (None, value)
        and list(value) != list(settings[key] or ())
    }
    changed = {key: value for key, value in recorded.items() if settings[key] != value and key not in taken}
    for key, value in changed.items():
        if key == "verbalizer" and value is None:
            continue  # read from the data: the trainer checks the mapping its heads were built with as they load
        if key in fixed or key.endswith("learning_rate"):
            why = (
                "the checkpoint's optimizer and scheduler keep the rate it was trained with" if key.endswith("learning_rate")
                else "the heads and memory bank it saved were built with it"
            )
            raise TrlCausalError(
                f"{checkpoint} was trained with {key}={hidden_secrets(value)!r} and this run sets "
                f"{hidden_secrets(settings[key])!r}: {why}. Resume with {key}: {json.dumps(hidden_secrets(value))}, or "
                "start a new run (another output_dir, or no resume_from_checkpoint)."
            )
    if (changed or taken) and is_first_process():
        notes = [f"{key}={hidden_secrets(value)!r} (now {hidden_secrets(settings[key])!r})" for key, value in changed.items()]
        notes += [f"{key}={hidden_secrets(value)!r} (taken from it: its order is the heads' classes)" for key, value in taken.items()]
        print(f"trl-causal: note: resuming {checkpoint}, trained with " + ", ".join(notes), file=sys.stderr)
    return step, taken


# settings the run record's `reproduce` holds even where the config leaves them at their defaults
REPRODUCED_SETTINGS = (
    "seed", "learning_rate", "max_steps", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps"
)
LORA_SETTINGS = ("use_peft", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")  # with use_peft


def reproduction(run: RunConfig) -> dict:
    """The run record's ``reproduce``, what runs the training again: ``cwd``, the directory it ran from (relative paths
    in the config are as given); ``config_file``, the YAML the run read (absolute; None without one); ``config``, a config that reruns it (``given_settings``: the trainer and the settings of the YAML
    and the command line as the run used them, secrets hidden), with ``REPRODUCED_SETTINGS`` and, with use_peft,
    ``LORA_SETTINGS``; ``versions``, those of trl_causal and the packages it trains with. ``world_size`` and
    ``distributed`` record the launch."""
    import accelerate
    import datasets
    import peft
    import torch
    import transformers
    import trl

    from . import __version__

    always = REPRODUCED_SETTINGS + (LORA_SETTINGS if run.model_args.use_peft else ())
    return {
        "cwd": os.getcwd(),
        "config_file": os.path.abspath(run.config_path) if run.config_path else None,
        "config": given_settings(run, always),
        "versions": {"trl_causal": __version__}
        | {module.__name__: module.__version__ for module in (trl, transformers, torch, peft, accelerate, datasets)},
    }


def run_record_callback(trainer_name: str, settings: dict, answer_prefix: str | None = None, **setup):
    """A callback that writes ``{"trainer", "settings", "answer_prefix", **setup}`` (``setup``: e.g. world_size,
    distributed, reproduce) as ``SUMMARY_FILE`` into every ``checkpoint-N`` the run saves, so that eval tells a
    checkpoint's trainer and settings, and a reader how it was trained, without the final summary."""
    from transformers import TrainerCallback

    class RunRecord(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            if state.is_world_process_zero and os.path.isdir(folder):
                record = {"trainer": trainer_name, "settings": settings, "answer_prefix": answer_prefix, **setup}
                write_json_file(folder, SUMMARY_FILE, record)

    return RunRecord()


def distributed_setup(accelerator) -> str:
    """How the run was distributed, as accelerate set it up: "NO", "MULTI_CPU" or "MULTI_GPU" (DDP), "DEEPSPEED ZeRO-3", ..."""
    setup = accelerator.distributed_type.value
    plugin = accelerator.state.deepspeed_plugin
    return f"{setup} ZeRO-{plugin.zero_stage}" if plugin is not None else setup


def check_world_size(num_processes: int, setup: str, output_dir: str) -> None:
    """Fail before the trainer is built (and before any event estimation or feature pass) when the processes would
    not train together as asked. ``num_processes``: how many accelerate set up to train together; ``setup``: its
    distributed_type.

    - ``trl-causal train`` asked for ``num_processes`` N > 1 but the launcher started one process: accelerate's
      ``cpu`` flag does that whatever ``num_processes`` says, as does ``num_processes`` without ``multi_gpu`` on a
      machine without GPUs.
    - The launcher started N processes but accelerate set each up alone (world size 1): every one would train on
      all the rows and write the same ``output_dir``. Seen without CUDA with an FSDP config, or a DDP config and
      no ``use_cpu``.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    requested = int(os.environ.get(REQUESTED_PROCESSES_ENV, launched))
    if requested != launched:
        raise TrlCausalError(
            f"num_processes {requested} was asked for, but accelerate started {launched} process(es) "
            f"(distributed_type {setup}). For DDP on CPUs set `multi_gpu: true` and `use_cpu: true` in the YAML; "
            "accelerate's `cpu: true` (`--cpu`) starts one process whatever num_processes says."
        )
    if launched != num_processes:
        raise TrlCausalError(
            f"the launcher started {launched} processes but accelerate set up {num_processes} to train "
            f"together (distributed_type {setup}), so each would train alone and all would write {output_dir}. "
            "Without CUDA devices set `use_cpu: true` in the YAML and launch DDP (`multi_gpu: true`, as "
            "example_configs/accelerate/ddp.yaml does) or DeepSpeed (example_configs/accelerate/deepspeed_zero3.yaml); "
            "FSDP needs CUDA devices."
        )


class TrainingInterrupted(TrlCausalError):
    """Training was stopped by Ctrl-C; the message says what was saved."""


@contextlib.contextmanager
def sigterm_as_ctrl_c():
    """While inside, the first SIGTERM (what a scheduler sends before it stops a job, or `kill PID`) raises
    KeyboardInterrupt as Ctrl-C does, so that training saves what it has done. Yields a list: once anything is in it
    (the first SIGTERM, or the caller's mark after Ctrl-C), SIGTERMs are ignored, so that one a launcher passes on
    cannot cut the save short."""
    received: list = []
    if threading.current_thread() is not threading.main_thread():  # signal handlers can only be set there
        yield received
        return

    def interrupt(signum, frame):
        if not received:
            received.append(signum)
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def train_or_save_on_interrupt(trainer, resume_from: str | None):
    """``trainer.train()``. Ctrl-C (or SIGTERM) in a one-process run first saves the completed steps as
    ``checkpoint-N`` in ``output_dir`` (model, optimizer, scheduler, RNG and trainer state), so
    ``resume_from_checkpoint: true`` goes on from there. A multi-process run keeps what ``save_steps`` saved (saving
    would need every process)."""
    with sigterm_as_ctrl_c() as interrupted:
        try:
            return trainer.train(resume_from_checkpoint=resume_from)
        except KeyboardInterrupt:
            interrupted.append("saving")  # a SIGTERM from now on (e.g. torchrun's after Ctrl-C) waits for the save
            save_on_interrupt(trainer)


def save_on_interrupt(trainer) -> None:
    """After Ctrl-C: save the completed steps of a one-process run as ``checkpoint-N``, then raise
    ``TrainingInterrupted`` saying what was saved."""
    step, output_dir = trainer.state.global_step, trainer.args.output_dir
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or step == 0:
        _, complete = checkpoints_in(output_dir)
        last = (
            f"the last checkpoint is {complete[0]} (`--resume_from_checkpoint true` goes on from there)"
            if complete else f"no checkpoint was saved in {output_dir}"
        )
        raise TrainingInterrupted(f"interrupted at step {step}; nothing was saved since: {last}.") from None
    trainer._save_checkpoint(trainer.model, trial=None)
    trainer.control = trainer.callback_handler.on_save(trainer.args, trainer.state, trainer.control)  # as a save_steps save
    raise TrainingInterrupted(
        f"interrupted after step {step}; saved {os.path.join(output_dir, f'checkpoint-{step}')}. Continue with "
        "`--resume_from_checkpoint true`."
    ) from None


TRAINER_STATE_FILE = "trainer_state.json"  # the Trainer writes it last into a checkpoint (in place): whole = complete


def saved_trainer_state(checkpoint: str) -> dict | None:
    """The trainer state that ``checkpoint`` holds (``TRAINER_STATE_FILE``); None where a save did not finish: the
    file is missing, or cut short (the Trainer writes it in place)."""
    try:
        return read_json_file(checkpoint, TRAINER_STATE_FILE)
    except TrlCausalError:
        return None


def checkpoints_in(output_dir: str) -> tuple[list[tuple[int, str]], list[str]]:
    """The ``checkpoint-N`` folders of ``output_dir`` as (N, path), newest first, and the paths of the complete ones
    (holding a whole ``trainer_state.json``: ``saved_trainer_state``), newest first."""
    import re

    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    pattern = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")  # as transformers' get_last_checkpoint
    found = []
    if os.path.isdir(output_dir):
        for name in os.listdir(output_dir):
            if (match := pattern.match(name)) and os.path.isdir(os.path.join(output_dir, name)):
                found.append((int(match[1]), os.path.join(output_dir, name)))
    found.sort(reverse=True)
    return found, [path for _, path in found if saved_trainer_state(path) is not None]


def resume_checkpoint(value: str | bool | None, output_dir: str) -> str | None:
    """The checkpoint directory to resume from, checked before any model loads. ``true`` (also as the string that
    ``--resume_from_checkpoint true`` gives) means the last complete ``checkpoint-N`` in ``output_dir`` (one a failed
    save left without a whole ``trainer_state.json`` is passed over, with a note); ``false`` or unset: none."""
    if isinstance(value, str) and value.lower() in ("true", "false"):
        value = value.lower() == "true"
    if not value:
        return None
    if value is True:
        found, complete = checkpoints_in(output_dir)
        if not complete:
            raise TrlCausalError(
                f"resume_from_checkpoint is true, but {output_dir} holds no complete checkpoint-N directory to resume "
                + (f"from ({', '.join(os.path.basename(path) for _, path in found)} lack a whole {TRAINER_STATE_FILE}: "
                   "a save that did not finish); " if found else "from; ")
                + "name a checkpoint directory, or train without it (checkpoints are written every save_steps)."
            )
        newest = next(step for step, path in found if path == complete[0])
        skipped = [path for step, path in found if step > newest]
        if skipped and is_first_process():
            print(
                f"trl-causal: note: {', '.join(map(os.path.basename, skipped))} lack a whole {TRAINER_STATE_FILE} (a "
                f"save that did not finish); resuming from {complete[0]}.",
                file=sys.stderr,
            )
        return complete[0]
    if not os.path.isdir(value):
        raise TrlCausalError(f"resume_from_checkpoint: {value} is not a checkpoint directory (resolved to {os.path.abspath(value)}).")
    if not os.path.isfile(os.path.join(value, TRAINER_STATE_FILE)):
        raise TrlCausalError(
            f"resume_from_checkpoint: {value} holds no {TRAINER_STATE_FILE}, so it is no complete checkpoint (a "
            "training run's output_dir holds the final model, its checkpoint-N folders the resumable states; a save "
            "that did not finish leaves none). Give a checkpoint-N directory, or `true` for the last complete one."
        )
    if saved_trainer_state(value) is None:
        raise TrlCausalError(
            f"resume_from_checkpoint: the {TRAINER_STATE_FILE} of {value} holds no JSON object (a save that did not "
            "finish cut it short), so it is no complete checkpoint. Give another checkpoint-N directory, or `true` for "
            "the last complete one."
        )
    return value


def check_prepared_rows(trainer, loaded, kind: str) -> int | None:
    """The number of training rows that train (None for a streamed split). For the rows TRL's preparation keeps
    (a ``datasets.Dataset``), fewer than were loaded is a note and none an error: TRL's SFT drops the rows that
    truncation to max_length leaves without a completion token, its RewardTrainer the pairs whose chosen or rejected
    text is longer than max_length. Packed rows (``packing``) all train, as sequences of max_length tokens that TRL's
    packing fills, so their count is not compared. A trainer that builds its own items says how many rows train
    (``trained_rows``: capt after on_no_events, deconfounded_reward after max_length)."""
    import datasets

    if getattr(trainer, "trained_rows", None) is not None:
        return trainer.trained_rows
    if not hasattr(loaded, "__len__"):
        return None
    max_length = getattr(trainer.args, "max_length", None)
    if max_length is None or getattr(trainer.args, "packing", False) or not isinstance(trainer.train_dataset, datasets.Dataset):
        return len(loaded)
    kept = len(trainer.train_dataset)
    if kind == "sft":
        cause = (
            f"TRL drops the rows that max_length={max_length} leaves without a completion token (truncation_mode "
            f"{getattr(trainer.args, 'truncation_mode', 'keep_start')!r})"
        )
        fix = "Raise max_length, set truncation_mode: keep_end, or shorten the prompts."
    else:
        cause = f"TRL's RewardTrainer drops the pairs whose chosen or rejected text is longer than max_length={max_length} tokens"
        fix = "Raise max_length, or shorten the texts."
    if kept == 0:
        raise TrlCausalError(f"No training row is left of the {len(loaded)} loaded: {cause}. {fix}")
    if kept < len(loaded) and trainer.accelerator.is_main_process:
        dropped = len(loaded) - kept
        print(f"trl-causal: {dropped} of {len(loaded)} training rows {for_count(dropped, 'was', 'were')} dropped ({cause}); "
              f"{kept} train.", file=sys.stderr)
    return kept


def final_evaluation(trainer) -> dict:
    """The metrics of the trained model: those of the evaluation that ``eval_strategy`` ran after the last step (all of
    its splits; transformers evaluates there), else a new ``trainer.evaluate()``: the same weights are not scored, and
    logged to every tracker, twice. With ``load_best_model_at_end`` the model is the best checkpoint's, scored anew."""
    state = trainer.state
    if not trainer.args.load_best_model_at_end:
        last = [
            log for log in state.log_history
            if log.get("step") == state.global_step and any(key.startswith("eval_") and key.endswith("_runtime") for key in log)
        ]
        if last:
            return {key: value for log in last for key, value in log.items() if key != "step"}
    return trainer.evaluate()


@contextlib.contextmanager
def output_dir_held(training_args):
    """While inside, the launch's main process holds ``writing_output_dir(output_dir)``, so that no other run writes
    there. Where another run holds it, every process of the launch stops with that error (they learn it from the main
    process: none goes on to load the model, then to fail as the main process leaves)."""
    from accelerate.utils import broadcast_object_list

    training_args.device  # sets up the distributed state (the processes' group) that the trainer will use
    refusal = [None]
    with contextlib.ExitStack() as held:
        if is_first_process():
            try:
                held.enter_context(writing_output_dir(training_args.output_dir))
            except TrlCausalError as error:
                refusal = [str(error)]
        broadcast_object_list(refusal)
        if refusal[0] is not None:
            raise TrlCausalError(refusal[0])
        yield


def main(run: RunConfig) -> dict:
    """Load data, check it, train, save, and print a short summary; returns the summary. The main process holds
    ``output_dir``'s lock throughout (``output_dir_held``): a second run into it fails before it loads anything.
    Under a distributed launch (WORLD_SIZE > 1) every rank exits the process here instead, once all have saved."""
    with output_dir_held(run.training_args):
        start = time.time()
        training_args = run.training_args
        need_eval = training_args.eval_strategy != "no"
        train_dataset, eval_dataset = load_run_datasets(run.script_args, run.dataset_args, need_eval)
        check_streamed_steps(train_dataset, training_args.max_steps)
        check_run_columns(run, train_dataset, eval_dataset)

        resume_from = resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
        state = training_args.distributed_state
        check_world_size(training_args.world_size, state.distributed_type.value if state else "NO", training_args.output_dir)
        settings = method_settings(training_args)
        first_step = 0
        if resume_from is not None:
            first_step, taken = check_resumed_run(
                resume_from,
                run.trainer.name,
                settings,
                training_args.max_steps,
                training_args.num_train_epochs,
                getattr(run.trainer.trainer_class, "settings_fixed_by_checkpoint", ()),
            )
            for key, value in taken.items():
                setattr(training_args, key, value)
            settings.update(taken)
        else:
            check_output_dir_holds_no_other_run(training_args.output_dir, run.trainer.name)
        reproduce = reproduction(run)  # before build_trainer sets model_init_kwargs
        try:
            trainer = build_trainer(run, train_dataset, eval_dataset)
        except KeyboardInterrupt:  # e.g. during capt's event estimation (the llm estimator has cached its answers so far)
            raise TrainingInterrupted("interrupted while preparing the data and model, before training: nothing was trained.") from None
        train_rows = check_prepared_rows(trainer, train_dataset, run.trainer.kind)
        prefix = training_answer_prefix(train_dataset)
        setup = {"world_size": trainer.accelerator.num_processes, "distributed": distributed_setup(trainer.accelerator)}
        recorded = hidden_secrets(settings)  # what the run record holds of them
        trainer.add_callback(run_record_callback(run.trainer.name, recorded, prefix, **setup, reproduce=reproduce))
        result = train_or_save_on_interrupt(trainer, resume_from)
        trainer.save_model(training_args.output_dir)
        if trainer.accelerator.is_main_process:
            remove_stale_adapter(training_args.output_dir, start)
        summary = {
            "trainer": run.trainer.name,
            "model": run.model_args.model_name_or_path,
            "train_rows": train_rows,
            "steps": trainer.state.global_step,
            **({"resumed_from_step": first_step} if resume_from is not None else {}),
            "train_loss": result.training_loss,  # the mean over the steps of this run (transformers' training_loss)
            **setup,
            "seconds": round(time.time() - start, 1),
            "output_dir": os.path.abspath(training_args.output_dir),
            "settings": recorded,
            "answer_prefix": prefix,
            "reproduce": reproduce,
        }
        if eval_dataset is not None:
            summary["eval"] = final_evaluation(trainer)
        if trainer.accelerator.is_main_process:
            write_json_file(training_args.output_dir, SUMMARY_FILE, summary)
            setup = "" if summary["distributed"] == "NO" else f", {summary['distributed']}"
            trained_steps = summary["steps"] - first_step
            trainer.accelerator.print(
                f"\ntrl-causal: trained {summary['trainer']!r} on "
                + ("streamed rows" if summary["train_rows"] is None else count_rows(summary["train_rows"]))
                + f" for {trained_steps} {for_count(trained_steps, 'step', 'steps')} ("
                + (f"resumed at step {first_step}, {summary['steps']} in all; " if resume_from is not None else "")
                + f"world size {summary['world_size']}{setup}) in {summary['seconds']} s; mean train loss "
                f"{summary['train_loss']:.4f}.\ntrl-causal: checkpoint saved to {summary['output_dir']}"
            )
        trainer.accelerator.wait_for_everyone()  # no rank tears the process group down while another still uses it
        if hasattr(trainer, "end"):
            trainer.end()
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            _exit_before_teardown()  # main's frame still holds the trainer (and DDP's reducer with it)
        return summary


def _exit_before_teardown() -> None:
    """Leave the process before the trainer is released: every rank has passed the final barrier and saved.
    Tearing DDP's reducer down, which happens as soon as the trainer is released (when ``main`` returns), can
    block forever in ProcessGroupGloo's destructor once a peer process has already exited (seen with torch 2.13).
    ``os._exit`` skips atexit hooks, so trackers that finish in one (wandb: its logged steps and summary) finish first."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _split_config_flag(argv: list[str]) -> tuple[str | None, list[str]]:
    if "--config" not in argv:
        return None, argv
    at = argv.index("--config")
    if at + 1 >= len(argv):
        raise TrlCausalError("--config needs a path to a YAML file.")
    return argv[at + 1], argv[:at] + argv[at + 2 :]


def cli(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        config_path, rest = _split_config_flag(argv)
        main(parse_run_config(rest, config_path))
    except TrainingInterrupted as error:
        if is_first_process():  # one line for all the processes
            print(f"trl-causal: {error}", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    except TrlCausalError as error:
        print(f"trl-causal: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
