"""The ``trl-causal`` command: ``train``, ``eval``, ``list``, ``dpo-pairs``, ``shift-data``, ``download-model``."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

from . import __version__
from .errors import TrlCausalError, count_rows, for_count

_python_format_warning = warnings.formatwarning
SPURIOUS_KINDS = ("platform", "stopword")  # trl_causal.latent_shift.data.SPURIOUS_VALUES, without importing torch
SAFE_PATH_ENV = "PYTHONSAFEPATH"  # set: Python (>= 3.11) leaves the current directory off sys.path

TRAIN_EPILOG = """\
Any field of the trainer's config, of ModelConfig or ScriptArguments can be set in the YAML or as
`--key value` (the command line wins). Accelerate keys (num_processes, config_file or
accelerate_config, mixed_precision, ...) launch through `accelerate launch`, as with `trl sft`.
Without --config, the trainer is --trainer NAME (default: sft) and the settings are --key value alone, as with
`trl sft`: trl-causal train --model_name_or_path M --dataset_name D
Show a trainer's fields with: trl-causal train --trainer NAME --help
"""


def _command_list(args: argparse.Namespace) -> int:
    from .plugins import get_plugin_manager

    with warnings.catch_warnings():  # each failure is listed below, once
        warnings.simplefilter("ignore")
        manager = get_plugin_manager()
    rows = [(s.name, s.kind, s.distribution, s.description) for s in sorted(manager.trainers, key=lambda s: s.name)]
    widths = [max(len(str(row[i])) for row in rows + [("name", "kind", "distribution", "")]) for i in range(3)]
    print(f"{'name':<{widths[0]}}  {'kind':<{widths[1]}}  {'distribution':<{widths[2]}}  description")
    for name, kind, distribution, description in rows:
        print(f"{name:<{widths[0]}}  {kind:<{widths[1]}}  {distribution:<{widths[2]}}  {description}")
    if args.estimators:
        print("\nevent estimators (for trainer: capt)")
        estimators = sorted(manager.event_estimators, key=lambda e: e.name)
        width = max(len(e.name) for e in estimators)
        for entry in estimators:
            print(f"  {entry.name:<{width}}  {entry.distribution:<{widths[2]}}  {entry.description}")
    for failure in manager.failures:
        print(f"\nwarning: plugin {failure.entry_point!r} from {failure.distribution!r} failed to load: {failure.error}", file=sys.stderr)
    for warning in manager.warnings:
        print(f"\nwarning: {warning}", file=sys.stderr)
    if manager.autoload_note:
        print(f"\n{manager.autoload_note}", file=sys.stderr)
    return 0


def _command_download_model(args: argparse.Namespace) -> int:
    from .embedded import ensure_embedded_model

    print(ensure_embedded_model(args.name, Path(args.cache_dir) if args.cache_dir else None))
    return 0


def _command_shift_data(args: argparse.Namespace) -> int:
    from .latent_shift.data import write_splits

    paths = write_splits(args.out, args.n_train, args.n_test, args.kind, args.seed, args.ambiguous, args.conversational)
    for path in paths.values():
        print(path)
    return 0


def _run_training_process(launch_args: argparse.Namespace) -> None:
    """accelerate's one-process launcher (``simple_launcher``), except on Ctrl-C: the training process gets it too
    and saves a checkpoint, so wait for it before passing the KeyboardInterrupt on. accelerate >= 1.16 terminates it
    instead (after 5 s, kills it), which lost the checkpoint and the message saying where it is. A SIGTERM sent to
    this process alone (`kill PID`) is passed on to the training process, which saves as on Ctrl-C."""
    from accelerate.commands.launch import prepare_simple_launcher_cmd_env

    command, env = prepare_simple_launcher_cmd_env(launch_args)
    process = subprocess.Popen(command, env=env)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: process.send_signal(signal.SIGTERM))
    try:
        process.wait()
    except KeyboardInterrupt:
        while process.poll() is None:
            with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C reaches the training process as well
                process.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command)


@contextlib.contextmanager
def _one_process_launcher():
    """``accelerate launch`` with ``_run_training_process`` as its launcher for one-process runs."""
    import accelerate.commands.launch as accelerate_launch

    simple_launcher = accelerate_launch.simple_launcher
    accelerate_launch.simple_launcher = _run_training_process
    try:
        yield
    finally:
        accelerate_launch.simple_launcher = simple_launcher


def _signal_name(returncode: int) -> str:
    """The signal that ended a process with ``returncode`` -N: "SIGKILL", with a likely cause for that one."""
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return name + (" (out of memory? the kernel's OOM killer sends SIGKILL)" if -returncode == signal.SIGKILL else "")


def _signal_exit(returncode: int) -> int:
    """The exit code of a training process that a signal killed (``returncode`` -N), as a shell gives it (128 + N),
    after a line naming the signal: the process had no chance to print an error of its own."""
    print(f"trl-causal: the training process was killed by {_signal_name(returncode)}.", file=sys.stderr)
    return 128 - returncode


def _command_train(args: argparse.Namespace, rest: list[str]) -> int:
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from .configuration import parse_run_config
    from .data import load_run_datasets
    from .embedded import check_model_source
    from .paths import check_writable_dir
    from .plugins import CONFIG_REPORTED_ENV
    from .train import INTERRUPTED_EXIT_CODE, REQUESTED_PROCESSES_ENV, check_run_columns

    run = parse_run_config(rest, args.config)
    # Check the data and the model source here, before any process starts or any model loads.
    train_dataset, eval_dataset = load_run_datasets(run.script_args, run.dataset_args, run.training_args.eval_strategy != "no")
    check_run_columns(run, train_dataset, eval_dataset)
    check_model_source(
        run.model_args.model_name_or_path,
        run.model_args.model_revision,
        getattr(run.training_args, "trust_remote_code", False),  # as train.build_trainer loads it
    )
    check_writable_dir(run.training_args.output_dir, "output_dir")

    script_args = ["--trainer", run.trainer.name] + (["--config", args.config] if args.config else []) + run.script_argv
    launch_args = launch_command_parser().parse_args(run.launch_args + ["--module", "trl_causal.train"] + script_args)
    if launch_args.num_processes:  # the training processes check that they got what was asked for
        os.environ[REQUESTED_PROCESSES_ENV] = str(launch_args.num_processes)
    os.environ[CONFIG_REPORTED_ENV] = "1"  # the config's notes, and plugins that failed to load, were shown above
    try:
        # `python -m trl_causal.train` would put the current directory first on the training processes' sys.path: a
        # torch.py or a plugin's dist-info folder there would load in them, where this process loads none of them
        with _one_process_launcher(), _environment(SAFE_PATH_ENV, "1"):
            launch_command(launch_args)
    except KeyboardInterrupt:  # one process: it saved and stopped (see _run_training_process)
        return INTERRUPTED_EXIT_CODE
    except SignalException:  # Ctrl-C under torchrun: its agent stopped the training processes, which said what was saved
        return INTERRUPTED_EXIT_CODE
    except subprocess.CalledProcessError as error:  # the training process already printed its error, unless killed
        return _signal_exit(error.returncode) if error.returncode < 0 else error.returncode
    except ChildFailedError as error:  # several processes (torchrun): each printed its own error above
        codes = sorted({failure.exitcode for failure in error.failures.values()})
        killed = [f"{code} ({_signal_name(code)})" for code in codes if code < 0]
        print(f"trl-causal: {len(error.failures)} training process(es) failed (exit code "
              f"{', '.join([*map(str, (code for code in codes if code >= 0)), *killed])}); their errors are above, "
              "except from a process killed by a signal.", file=sys.stderr)
        if own := [code for code in codes if code > 0]:
            return own[0]
        if signals := [code for code in codes if code < 0]:  # as a shell gives it; SIGTERM: the launcher stopping the rest
            return 128 - next((code for code in signals if code != -signal.SIGTERM), signals[0])
        return 1
    finally:
        os.environ.pop(REQUESTED_PROCESSES_ENV, None)
        os.environ.pop(CONFIG_REPORTED_ENV, None)
    return 0


MODEL_FILES = ("config.json", "adapter_config.json")  # a full checkpoint's, a PEFT adapter's


def holds_model(directory: str) -> bool:
    """Whether ``directory`` holds a saved model: a full checkpoint or a PEFT adapter (``MODEL_FILES``)."""
    return any(Path(directory, name).is_file() for name in MODEL_FILES)


MAX_IMPLIED_ANSWERS = 20  # more distinct completions than this are texts, not an answer set


def _eval_rows(run, split: str, max_rows: int | None) -> tuple[str, list[dict]]:
    """Rows of a split of the config's dataset, or of a file given as ``NAME=FILE``."""

    from .data import file_builder, load_any_dataset

    name, _, path = split.partition("=")
    if path:  # data of one split (a file, or a folder of files) is NAME; a saved DatasetDict or split folder must hold NAME
        source = Path(path)
        if source.is_dir():  # the folder's NAME.jsonl (datasets would file test_10.jsonl ... test_90.jsonl under "test")
            named = [file for file in source.glob(f"{name}.*") if file_builder(file) is not None]
            source = named[0] if len(named) == 1 else source
        try:
            dataset = load_any_dataset(str(source))
        except TrlCausalError:
            raise
        except Exception as error:  # datasets cannot read it, e.g. a folder of files with different columns
            raise TrlCausalError(
                f"--split {split}: {source} cannot be read as one dataset ({type(error).__name__}: {str(error).splitlines()[0]}). "
                f"Name a file (--split {name}=FOLDER/FILE.jsonl), or a folder that holds {name}.jsonl."
            ) from error
        # One file, or a folder of files datasets did not name by split, is NAME; a split named "train" is not NAME
        files = [] if source.is_file() else [file.name for file in source.iterdir()]
        by_split = {"dataset_dict.json", "dataset_info.json"} & set(files) or any(f.lower().startswith("train") for f in files)
        key = "train" if name not in dataset and list(dataset) == ["train"] and not by_split else name
        if key not in dataset:
            raise TrlCausalError(
                f"{path} has no split {name!r}; it has: {', '.join(dataset)}. Name one of those (--split SPLIT={path})."
            )
    else:
        if not run.script_args.dataset_name:
            raise TrlCausalError(
                "The config takes its data from `datasets:` (a mixture), not one `dataset_name`, so there is no split "
                f"{name!r} to read; pass the evaluation data as --split NAME=FILE."
            )
        dataset, key = load_any_dataset(run.script_args.dataset_name, run.script_args.dataset_config), name
        if key not in dataset:
            raise TrlCausalError(
                f"Dataset {run.script_args.dataset_name!r} has no split {key!r}; it has: {', '.join(dataset)}. "
                "Name one of those, or pass --split NAME=FILE."
            )
    rows = dataset[key]
    if max_rows:
        rows = rows.select(range(min(max_rows, len(rows))))
    return name, rows.to_list()


def _eval_settings(pairs: list[str] | None, runs: dict) -> dict:
    """``--setting KEY=VALUE`` of eval, per checkpoint of ``runs`` {checkpoint: its trainer's run config}: each
    checkpoint takes the settings its config has (a value that reads as JSON is taken as JSON: 40, true, {...}).
    A key no checkpoint's config has, or a value its field does not take, is an error, checked before any model loads."""
    import dataclasses
    import json

    from .configuration import checked_values, config_field_types

    settings: dict = {checkpoint: {} for checkpoint in runs}
    for pair in pairs or []:
        key, eq, value = pair.partition("=")
        takers = [c for c, run in runs.items() if key in {f.name for f in dataclasses.fields(run.training_args) if f.init}]
        if not eq or not takers:
            trainers = sorted({f"{type(run.training_args).__name__} (trainer {run.trainer.name!r})" for run in runs.values()})
            raise TrlCausalError(
                f"--setting {pair!r}: give KEY=VALUE with KEY a field of {' or '.join(trainers)}; "
                "`trl-causal train --trainer NAME --help` lists them."
            )
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        for checkpoint in takers:
            _check_eval_setting(pair, key, runs[checkpoint])
            field_types = config_field_types((type(runs[checkpoint].training_args),))
            settings[checkpoint][key] = checked_values({key: parsed}, field_types, f"--setting {pair!r}")[key]
        for checkpoint in runs.keys() - set(takers):
            print(f"trl-causal: note: --setting {pair} does not apply to {checkpoint} (trainer {runs[checkpoint].trainer.name!r}).", file=sys.stderr)
    return settings


def _check_eval_setting(pair: str, key: str, run) -> None:
    """A setting the checkpoint's saved heads fix cannot change at prediction."""
    if key in getattr(run.trainer.trainer_class, "settings_fixed_by_checkpoint", ()):
        raise TrlCausalError(
            f"--setting {pair!r}: {key} is fixed by what the checkpoint saved (the {run.trainer.name} heads were "
            "built and trained with it), so prediction cannot change it."
        )


def _checkpoint_args(run, record: dict, overrides: dict | None = None):
    """The config's training arguments with the checkpoint's recorded method settings in place of the YAML's: a capt
    checkpoint intervenes with the estimator and pool it was trained with, whatever the YAML of this eval says.
    ``overrides`` (eval's ``--setting``) win over both. Never taken from the record: a secret (``with_current_secrets``)
    and the trainer's ``settings_not_from_checkpoint`` (capt's event_estimator_kwargs), which may name a host, an API
    key's variable, a path or a model to load. Those are the YAML's; one the checkpoint was trained with otherwise is
    an error where the YAML does not set it."""
    import dataclasses

    from .configuration import hidden_secrets, recorded_form, settings_differing, with_current_secrets

    overrides = overrides or {}
    checkpoint = record.get("checkpoint", "the checkpoint")
    saved = {key: value for key, value in record.get("settings", {}).items() if hasattr(run.training_args, key)}
    current = recorded_form({key: getattr(run.training_args, key) for key in saved})
    recorded = with_current_secrets(saved, current)
    from_config = [key for key in getattr(run.trainer.trainer_class, "settings_not_from_checkpoint", ()) if key in saved]
    from_config_differing = {}
    for key in from_config:
        value = recorded.pop(key, saved[key])
        if key not in overrides and hidden_secrets(value) != hidden_secrets(current[key]):
            from_config_differing[key] = hidden_secrets(value)
    settings = {**recorded, **overrides}
    differing = {key: value for key, value in settings_differing(run.training_args, recorded).items() if key not in overrides}
    if differing:
        print(
            f"trl-causal: note: {checkpoint} was trained with "
            + ", ".join(f"{key}={value!r}" for key, value in differing.items())
            + ", which the YAML sets otherwise; it predicts as trained (--setting KEY=VALUE overrides one).",
            file=sys.stderr,
        )
    for key, value in from_config_differing.items():
        if key not in run.given_fields:
            raise TrlCausalError(
                f"{checkpoint} was trained with {key}={value!r}, which eval never takes from a checkpoint (it may name "
                f"a host, an API key's variable, a path or a model to load), and {run.config_path} does not set it: set "
                f"`{key}` in the YAML as training did, or pass --setting {key}='{{...}}'."
            )
        print(
            f"trl-causal: note: {checkpoint} was trained with {key}={value!r}; eval uses the YAML's "
            f"{hidden_secrets(current[key])!r} (it never takes {key} from a checkpoint).",
            file=sys.stderr,
        )
    if not settings:
        return run.training_args
    try:  # replace() runs the config's checks on the new values
        return dataclasses.replace(run.training_args, **settings)
    except (TrlCausalError, ValueError, TypeError) as error:
        given = f" and --setting {', '.join(f'{k}={v!r}' for k, v in hidden_secrets(overrides).items())}" if overrides else ""
        raise TrlCausalError(f"{str(error).rstrip('.')} (prediction uses the settings the checkpoint recorded{given}).") from error


@contextlib.contextmanager
def _environment(name: str, value: str):
    """Within: the environment variable ``name`` is ``value``; after, as it was."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _notes_shown():
    """Within: the config's notes count as shown (``config_note`` says nothing)."""
    from .plugins import CONFIG_REPORTED_ENV

    return _environment(CONFIG_REPORTED_ENV, "1")


def _writable_results_file(output: Path) -> Path:
    """``output``, its folder made, once it is a file eval can write: before any model loads, not after the scoring."""
    from .paths import writable_output_file

    if output.is_dir():
        raise TrlCausalError(f"--output {output} is a folder; eval writes one JSON file: name it, e.g. --output {output / RESULTS_FILE}.")
    return writable_output_file(output, "the results file")


RESULTS_FILE = "eval_results.json"  # eval's report in the checkpoint it scores first, without --output


class _ResultsFile:
    """Where eval writes its report (``path``): ``--output``, else ``RESULTS_FILE`` in the first checkpoint. Should
    training delete that checkpoint while eval runs (past its save_total_limit), the report goes beside the
    checkpoint's folder, as ``eval_results-checkpoint-N.json``, with a warning: written into the folder, it would make
    the folder again, holding the report alone (counted as a checkpoint), until the next rotation deleted it."""

    def __init__(self, output: str | None, checkpoint: str):
        from .evaluation import deleted_checkpoint_error

        self.checkpoint = None if output else checkpoint  # the checkpoint that holds the report, while it is there
        if self.checkpoint is not None and not holds_model(checkpoint):
            raise deleted_checkpoint_error(checkpoint)
        self.path = _writable_results_file(Path(output or Path(checkpoint) / RESULTS_FILE))

    def write(self, report: dict) -> None:
        """``report`` into ``path``; beside the checkpoint that was to hold it, if that is gone (``path`` then moves)."""
        if self.checkpoint is not None and not holds_model(self.checkpoint):
            folder = Path(self.checkpoint).parent
            moved = (folder if folder.is_dir() else Path.cwd()) / f"{Path(RESULTS_FILE).stem}-{Path(self.checkpoint).name}.json"
            print(
                f"trl-causal: warning: {self.checkpoint} was deleted while eval ran (a training run deletes its older "
                f"checkpoint-N folders past save_total_limit), so the results go to {moved} rather than into a re-made "
                f"{self.checkpoint}; pass --output FILE to choose where.",
                file=sys.stderr,
            )
            self.path, self.checkpoint = moved, None
        _write_report(self.path, report)


def _command_eval(args: argparse.Namespace) -> int:
    from .configuration import parse_run_config
    from .evaluation import row_prompt

    if args.output == "-":
        raise TrlCausalError(
            "--output -: eval writes its JSON to a file, after every split scored (the table goes to the terminal); "
            "name a file, e.g. --output results.json."
        )
    run = parse_run_config([], args.config)
    checkpoints, records, trainer_names = _eval_checkpoints(args, run)
    requested = args.split or [run.script_args.dataset_test_split]
    names = [split.partition("=")[0] for split in requested]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise TrlCausalError(f"--split names {repeated} are given more than once; name each split differently (--split NAME=FILE).")
    splits = [_eval_rows(run, split, args.max_rows) for split in requested]
    gold, answers, text_of_label = _eval_answer_set(args, splits, checkpoints, trainer_names)
    with _notes_shown():  # the YAML read for another checkpoint's trainer: "ignoring 'symbol_pool'" would be noise
        runs = {
            checkpoint: run if trainer_name == run.trainer.name else parse_run_config(["--trainer", trainer_name], args.config)
            for checkpoint, trainer_name in zip(checkpoints, trainer_names)
        }
    settings = _eval_settings(args.setting, runs)  # before any model loads
    checkpoint_args = {checkpoint: _checkpoint_args(runs[checkpoint], record, settings[checkpoint]) for checkpoint, record in zip(checkpoints, records)}
    for checkpoint in checkpoints:  # e.g. capt's llm estimator: its endpoint is up
        trainer_cls = runs[checkpoint].trainer.trainer_class
        if hasattr(trainer_cls, "check_predictor"):
            trainer_cls.check_predictor(checkpoint_args[checkpoint])
    for name, rows in splits:  # before any model loads: a bad row of the last split would cost the others' scoring
        for index, row in enumerate(rows):
            row_prompt(row, index, args.prompt_column, f" of split {name!r}")
    results_file = _ResultsFile(args.output, checkpoints[0])
    sources = {split.partition("=")[0]: split.partition("=")[2] or run.script_args.dataset_name for split in requested}
    report = {"answers": answers, "mode": args.mode, "splits": sources, "complete": False, "results": {}}
    try:
        for checkpoint, trainer_name, record in zip(checkpoints, trainer_names, records):
            # Labels of a checkpoint's verbalizer: one without a verbalizer of its own (a `--compare`d sft baseline) scores
            # the label's answer text, which it learned, and its prediction is read back as the label.
            own_verbalizer = hasattr(runs[checkpoint].trainer.trainer_class, "checkpoint_answers")
            texts = text_of_label if text_of_label and not own_verbalizer else {}
            scored = [texts[answer] for answer in answers] if texts else answers
            predictor = _eval_predictor(args, runs[checkpoint], checkpoint_args[checkpoint], checkpoint, record, scored)
            _score_splits(predictor, trainer_name, checkpoint, splits, gold, {text: label for label, text in texts.items()}, report, results_file)
    except BaseException as error:
        written = not isinstance(error, ReportNotWritten) and results_file.path.is_file()
        if written and any(result["splits"] for result in report["results"].values()):
            print(f"trl-causal: the splits scored before the stop are in {results_file.path} (\"complete\": false).", file=sys.stderr)
        raise
    report["complete"] = True
    _print_eval_table(report["results"], splits)
    results_file.write(report)
    print(f"\ntrl-causal: wrote {results_file.path}")
    return 0


def _eval_checkpoints(args: argparse.Namespace, run) -> tuple[list[str], list[dict], list[str]]:
    """The checkpoints eval scores (``--checkpoint`` or the config's output_dir, then every ``--compare``), each
    checked to hold a trained model of an sft-kind trainer, with its run record and the name of its trainer."""
    from .plugins import get_plugin_manager
    from .train import checkpoints_in, read_run_record

    checkpoints = [args.checkpoint or run.training_args.output_dir] + (args.compare or [])
    for index, checkpoint in enumerate(checkpoints):
        given = "--compare" if index else ("--checkpoint" if args.checkpoint else f"the output_dir of {args.config}")
        if not Path(checkpoint).is_dir():
            raise TrlCausalError(
                f"Checkpoint directory not found: {checkpoint} ({given}). Train first, or pass the directory of a "
                "trained model (one with config.json, or an adapter's adapter_config.json)."
            )
        if not holds_model(checkpoint):
            saved = [path for _, path in checkpoints_in(checkpoint)[0] if holds_model(path)]
            raise TrlCausalError(
                f"{checkpoint} ({given}) holds no trained model: neither config.json nor adapter_config.json (a run "
                "that failed or stopped before its final save leaves it so). "
                + (f"Pass one of its checkpoints, e.g. --checkpoint {saved[0]}, or train again." if saved else "Train first.")
            )
    records = [read_run_record(checkpoint) for checkpoint in checkpoints]
    trainer_names = [record.get("trainer") or _unrecorded_trainer(checkpoint, run) for checkpoint, record in zip(checkpoints, records)]
    for checkpoint, trainer_name, record in zip(checkpoints, trainer_names, records):
        spec = get_plugin_manager().get_trainer(trainer_name)
        if spec.kind == "reward":
            raise TrlCausalError(
                f"{checkpoint} was trained by {trainer_name!r}, a reward trainer: its model gives one score per text, "
                "not an answer to a prompt, so it has no accuracy to report here. Load it with "
                "AutoModelForSequenceClassification (as TRL's GRPO and RLOO trainers do) to score texts; "
                "`trl-causal eval` evaluates the answers of sft-kind trainers (sft, capt, latent_shift, ...)."
            )
        if "settings" not in record and hasattr(spec.trainer_class, "checkpoint_settings"):  # trained from a TRL script, Axolotl
            record.update(settings=spec.trainer_class.checkpoint_settings(checkpoint), checkpoint=checkpoint)
    return checkpoints, records, trainer_names


def _unrecorded_trainer(checkpoint: str, run) -> str:
    """The trainer of a checkpoint without a run record (trained by Axolotl or a TRL script): the config's, unless that
    trainer writes a file of its own at every save (``saved_file``) and the checkpoint lacks it; it is then a plain
    model, ``sft``."""
    saved_file = getattr(run.trainer.trainer_class, "saved_file", None)
    if saved_file is None or Path(checkpoint, saved_file).is_file():
        return run.trainer.name
    print(
        f"trl-causal: note: {checkpoint} has no trl-causal run record and none of the files the {run.trainer.name} "
        "trainer saves: it is scored as a plain model (trainer 'sft'), as Axolotl's or TRL's SFT trains one.",
        file=sys.stderr,
    )
    return "sft"


def _eval_answer_set(
    args: argparse.Namespace, splits: list[tuple[str, list[dict]]], checkpoints: list[str], trainer_names: list[str]
) -> tuple[dict[str, list[str]], list[str], dict[str, str] | None]:
    """Each split's gold answers, the answer set every split chooses from (``--answers``, else a checkpoint's
    verbalizer, else all splits' gold answers together), and {label: answer text} when the gold answers are a
    verbalizer's labels. Checked: every gold answer is in the set."""
    from .evaluation import check_gold_in_answers, default_answer_column, gold_answers

    columns = {name: args.answer_column or default_answer_column(rows) for name, rows in splits}  # each split its own
    column = ", ".join(dict.fromkeys(columns.values()))
    gold = {name: gold_answers(rows, columns[name], name) for name, rows in splits}
    answers = [a.strip() for a in args.answers.split(",") if a.strip()] if args.answers else sorted({a for values in gold.values() for a in values})
    apart = [(a, b) for (a, gold_a), (b, gold_b) in itertools.combinations(gold.items(), 2) if not set(gold_a) & set(gold_b)]
    if apart and not args.answers:  # e.g. a True/False split beside a split of names
        print(
            f"trl-causal: note: splits {', '.join(f'{a!r} and {b!r}' for a, b in apart[:3])} share no gold answer, yet "
            "every split chooses from one answer set, all splits' gold answers together. Evaluate such splits in "
            "separate runs, or give --answers.",
            file=sys.stderr,
        )
    classes, text_of_label = (None, None) if args.answers else _checkpoint_classes(
        checkpoints, trainer_names, answers, column, bool(args.answer_column)
    )
    answers = classes or answers
    if not classes and not args.answers and not args.answer_column and column != "answer" and len(answers) > MAX_IMPLIED_ANSWERS:
        raise TrlCausalError(
            f"The rows have no `answer` column, and their {column} holds {len(answers)} different texts (reasoning "
            "chains?), which is no answer set to choose from. Name the gold column with --answer_column, or give "
            "the answers with --answers."
        )
    check_gold_in_answers(gold, answers, column)
    gold_texts = {value for values in gold.values() for value in values}
    recased = sorted({f"{answer!r} (gold: {value!r})" for value in gold_texts for answer in answers if answer != value and answer.lower() == value.lower()})
    if recased and args.mode == "score":  # right for CLadder (answer "yes", trained on "Yes"), wrong if trained on "yes"
        print(
            f"trl-causal: note: the model is scored on the answer texts as given, {', '.join(recased)}; gold answers "
            "match them ignoring case. If the model was trained to write the gold texts, give --answers as they are written.",
            file=sys.stderr,
        )
    return gold, answers, text_of_label


def _eval_predictor(args: argparse.Namespace, run, training_args, checkpoint: str, record: dict, answers: list[str]):
    """The checkpoint's model and tokenizer in its trainer's predictor, with the settings it predicts by."""
    from .evaluation import UnlikeTrainingWarning, build_predictor, deleted_checkpoint_error, load_checkpoint
    from .train import model_init_kwargs_of

    dtype = model_init_kwargs_of(run.model_args, training_args).get("dtype")  # a LoRA's base, as training loaded it
    if not holds_model(checkpoint):  # it did when eval started; a training run's save_total_limit may delete it since
        raise deleted_checkpoint_error(checkpoint)
    model, tokenizer = load_checkpoint(checkpoint, run.model_args.model_name_or_path, dtype)
    with warnings.catch_warnings():  # its settings are the checkpoint's, but for --setting, said by _checkpoint_args
        warnings.simplefilter("ignore", UnlikeTrainingWarning)
        predictor = build_predictor(run.trainer.trainer_class, training_args, model, tokenizer, answers, args.mode, checkpoint)
    if not holds_model(checkpoint):  # the files a trainer's predictor reads from it (capt's symbol pool) went with it
        raise deleted_checkpoint_error(checkpoint)
    predictor.batch_size, predictor.prompt_column = args.batch_size, args.prompt_column
    if predictor.answer_prefix is None and record.get("answer_prefix") is not None:
        predictor.answer_prefix = record["answer_prefix"]  # rows without a completion: as training wrote answers
    return predictor


def _score_splits(
    predictor,
    trainer_name: str,
    checkpoint: str,
    splits: list[tuple[str, list[dict]]],
    gold: dict[str, list[str]],
    label_of: dict[str, str],
    report: dict,
    results_file: _ResultsFile,
) -> None:
    """Every split's accuracy for one checkpoint into ``report["results"]``, under a label that names it apart from
    the others (the trainer's name, else with the checkpoint's folder), written to ``results_file`` after each split.
    ``label_of`` reads a predicted answer text back as its label."""
    from .evaluation import accuracy_report

    results = report["results"]
    candidates = (trainer_name, f"{trainer_name}:{Path(checkpoint).name}", f"{trainer_name}:{checkpoint}")
    taken = {result_label.removesuffix(":adjusted").removesuffix(":plain") for result_label in results}
    label = next((candidate for candidate in candidates if candidate not in taken), f"{trainer_name}:{checkpoint}#{len(results)}")
    # A predictor with `predict_both` (latent_shift) gives its own prediction and the plain LM head's side by side.
    kinds = ("adjusted", "plain") if hasattr(predictor, "predict_both") else (None,)
    labels = {kind: label if kind is None else f"{label}:{kind}" for kind in kinds}
    for kind, column in labels.items():
        results[column] = {
            "trainer": trainer_name,
            "checkpoint": str(Path(checkpoint).resolve()),
            "scored_answers": predictor.answers,  # what it chose from (a label's answer text for a baseline)
            "answer_prefix": predictor.answer_prefix,  # None: each row's completion tells it
            "splits": {},
        }
        if kind is not None:
            results[column]["prediction"] = kind
    for name, rows in splits:
        print(f"trl-causal: {label}: split {name!r}, {count_rows(len(rows))}", file=sys.stderr)  # above its progress bar
        predictions = predictor.predict_both(rows) if kinds != (None,) else (predictor.predict(rows),)
        unchanged = getattr(predictor, "rows_without_events", None)  # capt: prompts it found no event in, or failed on
        failed = getattr(predictor, "rows_failed", [])  # capt: those of them its estimator failed on (llm: no valid answer)
        if unchanged:
            failures = f" ({len(failed)} of them because the estimator failed; it logs why)" if failed else ""
            print(
                f"trl-causal: note: {label}: {count_rows(len(unchanged))} of {len(rows)} in split {name!r} "
                f"{for_count(len(unchanged), 'has', 'have')} no event its estimator recognises{failures}; "
                f"{for_count(len(unchanged), 'it was', 'they were')} scored unchanged (rows_without_events and "
                "rows_failed in the JSON).",
                file=sys.stderr,
            )
        for column, predicted in zip(labels.values(), predictions):
            predicted = [label_of.get(answer, answer) for answer in predicted]
            results[column]["splits"][name] = accuracy_report(predicted, gold[name])
            if unchanged is not None:
                results[column]["splits"][name]["rows_without_events"] = len(unchanged)
                results[column]["splits"][name]["rows_failed"] = len(failed)
        results_file.write(report)  # a finished split survives a later failure or Ctrl-C


class ReportNotWritten(TrlCausalError):
    """The evaluation report could not be written (a full disk, a quota)."""


def _write_report(output: Path, report: dict) -> None:
    """``report`` as the JSON file ``output``, whole or not at all: a failed write leaves the file as it was."""
    from .paths import write_json_file

    try:
        write_json_file(output.parent, output.name, report)
    except OSError as error:
        raise ReportNotWritten(
            f"Could not write {output} ({error}); the file there, if any, is left as it was (an earlier split's "
            "results of this run, or an earlier run's)."
        ) from None


def _print_eval_table(results: dict, splits: list[tuple[str, list[dict]]]) -> None:
    """One row per split, one accuracy column per result label, and the split's row count."""
    labels = list(results)
    # a long label keeps its end, where checkpoints of one run differ (latent_shift:checkpoint-10 / -20)
    headers = [label if len(label) <= 22 else "..." + label[-19:] for label in labels]
    print("\n" + "split".ljust(16) + "".join(header.rjust(24) for header in headers) + "rows".rjust(8))
    for name, rows in splits:
        cells = "".join(_accuracy_cell(results[label]["splits"][name]).rjust(24) for label in labels)
        print(name[:16].ljust(16) + cells + str(len(rows)).rjust(8))


def _checkpoint_classes(
    checkpoints: list[str], trainer_names: list[str], gold: list[str], column: str, column_given: bool
) -> tuple[list[str] | None, dict[str, str] | None]:
    """The answer set of the first checkpoint that knows its classes (``checkpoint_answers``, e.g. latent_shift's
    verbalizer): its labels when the gold answers are labels (with {label: answer text}), else its answer texts (and
    None); (None, None) when no checkpoint knows. A gold answer outside both is an error: no prediction could match it."""
    from .plugins import get_plugin_manager

    for checkpoint, trainer_name in zip(checkpoints, trainer_names):
        trainer_cls = get_plugin_manager().get_trainer(trainer_name).trainer_class
        known = trainer_cls.checkpoint_answers(checkpoint) if hasattr(trainer_cls, "checkpoint_answers") else None
        if known is None:
            continue
        labels, texts = known
        if set(gold) <= set(labels):
            return labels, dict(zip(labels, texts))
        if set(gold) <= set(texts):
            return texts, None
        outside = sorted(set(gold) - set(labels) - set(texts))
        raise TrlCausalError(
            f"The gold answers {outside[:5]} (column {column!r}) are neither labels {labels} nor answers {texts} of "
            f"the verbalizer {checkpoint} was trained with; no prediction can match them. Fix those rows"
            + ("." if column_given else ", or name the gold column with --answer_column.")
        )
    return None, None


def _accuracy_cell(report: dict) -> str:
    """"62.5%", or "0.0% (3 unparsed)" when generations named no answer."""
    return f"{report['accuracy']:.1%}" + (f" ({report['unparsed']} unparsed)" if report["unparsed"] else "")


def _at_least_one(value: str) -> int:
    """An argparse type: a whole number of at least 1 (a batch size, a row count)."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {value!r}")
    return number


def _split_argument(value: str) -> str:
    """An argparse type: eval's ``--split NAME`` or ``NAME=FILE``, with ``~`` in FILE expanded (the shell leaves a
    quoted one), as the paths of a config are."""
    name, eq, path = value.partition("=")
    return f"{name}={os.path.expanduser(path)}" if eq else value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trl-causal", description="Causal fine-tuning trainers for TRL.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    train = commands.add_parser(
        "train",
        help="train with the trainer named by `trainer:` in a YAML config",
        epilog=TRAIN_EPILOG,
        add_help=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("--config", help="YAML config of the kind `trl sft --config` reads, plus `trainer: NAME`")
    train.add_argument(
        "--trainer", metavar="NAME", help="the registered trainer to run (default: the config's `trainer:`, else sft); `trl-causal list` names them"
    )
    listing = commands.add_parser("list", help="list the registered trainers")
    listing.add_argument("--estimators", action="store_true", help="also list the event estimators")
    parser.train_parser = train
    evaluate = commands.add_parser("eval", help="accuracy per evaluation split, optionally for several checkpoints side by side")
    evaluate.add_argument("--config", required=True, help="the YAML the model was trained with")
    evaluate.add_argument("--checkpoint", type=os.path.expanduser, help="checkpoint directory (default: the config's output_dir)")
    evaluate.add_argument(
        "--compare", action="append", type=os.path.expanduser, metavar="DIR", help="another checkpoint to evaluate side by side (repeatable)"
    )
    evaluate.add_argument("--split", action="append", type=_split_argument, metavar="NAME[=FILE]", help="split of the config's dataset, or NAME=FILE (repeatable; default: dataset_test_split)")
    evaluate.add_argument("--answers", help="comma-separated answer set (default: the distinct gold answers)")
    evaluate.add_argument(
        "--answer_column", help="column with the gold answer (default: answer, else completion, else a messages row's last turn)"
    )
    evaluate.add_argument(
        "--prompt_column", default="prompt", help="column with the prompt (default: prompt, else a `messages` row's turns before the answer)"
    )
    evaluate.add_argument("--mode", choices=("score", "generate"), default="score", help="score the answer set by log-likelihood, or generate and parse")
    evaluate.add_argument(
        "--setting",
        action="append",
        metavar="KEY=VALUE",
        help="a trainer setting for prediction, over the one the checkpoint recorded and the YAML's (repeatable; "
        "JSON values are read as JSON), e.g. phi_samples=40 or event_estimator_kwargs='{\"base_url\": \"...\"}'",
    )
    evaluate.add_argument("--max_rows", type=_at_least_one, help="evaluate at most this many rows per split")
    evaluate.add_argument("--batch_size", type=_at_least_one, default=16, help="prompts per forward pass (default: 16)")
    evaluate.add_argument(
        "--output",
        type=os.path.expanduser,
        help="JSON results file (default: CHECKPOINT/eval_results.json; eval_results-CHECKPOINT.json beside it if "
        "training deletes CHECKPOINT meanwhile)",
    )
    pairs = commands.add_parser(
        "dpo-pairs",
        help="DPO preference pairs (prompt/chosen/rejected) ranked by the deconfounded outcome, within groups",
        epilog="Further `--key value` settings of the deconfounded_reward trainer win over the YAML, e.g. `--mode naive` "
        "ranks by the raw outcome.",
    )
    pairs.add_argument("--config", required=True, help="YAML of the deconfounded_reward trainer (data, columns, group_column)")
    pairs.add_argument("--output", required=True, type=os.path.expanduser, help="JSON lines file to write")
    shift = commands.add_parser(
        "shift-data",
        help="write the latent_shift benchmark data: train.jsonl (spurious agreement 90%%) and test_90 ... test_10.jsonl",
    )
    shift.add_argument("--out", required=True, type=os.path.expanduser, help="directory for the split files")
    shift.add_argument(
        "--kind",
        choices=SPURIOUS_KINDS,
        default="platform",
        help="the spurious feature: platform (a tag such as amazon.xxx) or stopword (an inserted stop word)",
    )
    shift.add_argument("--n_train", "--n-train", type=_at_least_one, default=2000, help="training rows (default: 2000)")
    shift.add_argument("--n_test", "--n-test", type=_at_least_one, default=500, help="rows per test split (default: 500)")
    shift.add_argument("--seed", type=int, default=0)
    shift.add_argument("--ambiguous", type=float, default=0.0, help="fraction of rows with mixed text, where only the spurious feature tells the label (default: 0)")
    shift.add_argument("--conversational", action="store_true", help="chat messages instead of plain strings")
    download = commands.add_parser("download-model", help="fetch and convert an embedded model; prints its path")
    download.add_argument("name", help="embedded model name, e.g. smollm2-135m-instruct")
    download.add_argument("--cache_dir", "--cache-dir", type=os.path.expanduser, help="where to keep converted models (default: $TRL_CAUSAL_CACHE/models, else ~/.cache/trl_causal/models)")
    return parser


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """Plugin warnings as one line; others as Python writes them."""
    from .plugins import PluginWarning

    if issubclass(category, PluginWarning):
        return f"trl-causal: warning: {message}\n"
    return _python_format_warning(message, category, filename, lineno, line)


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _format_warning
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, rest = parser.parse_known_args(argv)
    try:
        if args.command == "train":
            if not args.config and not args.trainer and set(rest) <= {"--help", "-h"}:
                if rest:
                    print(parser.train_parser.format_help())
                    return 0
                parser.train_parser.print_usage(sys.stderr)
                print("trl-causal train: error: give --config CONFIG.yaml, or the settings as --key value "
                      "(`--help` says more).", file=sys.stderr)
                return 2
            return _command_train(args, (["--trainer", args.trainer] if args.trainer else []) + rest)
        if args.command == "dpo-pairs":
            from .deconfound.pairs import write_dpo_pairs

            write_dpo_pairs(args.config, args.output, rest)
            return 0
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        if args.command == "list":
            return _command_list(args)
        if args.command == "eval":
            return _command_eval(args)
        if args.command == "download-model":
            return _command_download_model(args)
        if args.command == "shift-data":
            return _command_shift_data(args)
        parser.print_help()
        return 0
    except TrlCausalError as error:
        print(f"trl-causal: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # train: before the training process started (importing, reading data); or another command
        before = " before training started; nothing was saved" if args.command == "train" else ""
        print(f"\ntrl-causal: interrupted{before}.", file=sys.stderr)
        return 128 + signal.SIGINT


if __name__ == "__main__":
    raise SystemExit(main())
