"""The ``trl-causal`` command: ``train``, ``list``, ``download-model``."""

from __future__ import annotations

import argparse
import subprocess
import sys

from .errors import TrlCausalError

TRAIN_EPILOG = """\
Any field of the trainer's config, of ModelConfig or ScriptArguments can be set in the YAML or as
`--key value` (the command line wins). Accelerate keys (num_processes, config_file or
accelerate_config, mixed_precision, ...) launch through `accelerate launch`, as with `trl sft`.
Show a trainer's fields with: trl-causal train --trainer NAME --help
"""


def _command_list(args: argparse.Namespace) -> int:
    from .plugins import get_plugin_manager

    manager = get_plugin_manager()
    rows = [(s.name, s.kind, s.distribution, s.description) for s in sorted(manager.trainers, key=lambda s: s.name)]
    widths = [max(len(str(row[i])) for row in rows + [("name", "kind", "distribution", "")]) for i in range(3)]
    print(f"{'name':<{widths[0]}}  {'kind':<{widths[1]}}  {'distribution':<{widths[2]}}  description")
    for name, kind, distribution, description in rows:
        print(f"{name:<{widths[0]}}  {kind:<{widths[1]}}  {distribution:<{widths[2]}}  {description}")
    if args.estimators:
        print("\nevent estimators (for trainer: capt)")
        for entry in sorted(manager.event_estimators, key=lambda e: e.name):
            print(f"  {entry.name}  ({entry.distribution})  {entry.description}")
    for failure in manager.failures:
        print(f"\nwarning: plugin {failure.entry_point!r} from {failure.distribution!r} failed to load: {failure.error}")
    return 0


def _command_download_model(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .embedded import ensure_embedded_model

    print(ensure_embedded_model(args.name, Path(args.cache_dir) if args.cache_dir else None))
    return 0


def _command_train(args: argparse.Namespace, rest: list[str]) -> int:
    from accelerate.commands.launch import launch_command, launch_command_parser

    from .configuration import parse_run_config
    from .data import check_columns, load_run_datasets
    from .train import required_columns

    run = parse_run_config(rest, args.config)
    # Check the data here, before any process starts or any model loads.
    train_dataset, eval_dataset = load_run_datasets(run.script_args, run.dataset_args, run.training_args.eval_strategy != "no")
    needed = required_columns(run)
    check_columns(train_dataset, run.trainer.kind, needed, "training split")
    if eval_dataset is not None:
        check_columns(eval_dataset, run.trainer.kind, needed, "evaluation split")

    script_args = ["--trainer", run.trainer.name] + (["--config", args.config] if args.config else []) + run.script_argv
    launch_args = launch_command_parser().parse_args(run.launch_args + ["--module", "trl_causal.train"] + script_args)
    try:
        launch_command(launch_args)
    except subprocess.CalledProcessError as error:  # the training process already printed its error
        return error.returncode or 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trl-causal", description="Causal fine-tuning trainers for TRL.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    train = commands.add_parser(
        "train",
        help="train with the trainer named by `trainer:` in a YAML config",
        epilog=TRAIN_EPILOG,
        add_help=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("--config", help="YAML config of the kind `trl sft --config` reads, plus `trainer: NAME`")
    listing = commands.add_parser("list", help="list the registered trainers")
    listing.add_argument("--estimators", action="store_true", help="also list the event estimators")
    parser.train_parser = train
    download = commands.add_parser("download-model", help="fetch and convert an embedded model; prints its path")
    download.add_argument("name", help="embedded model name, e.g. smollm2-135m-instruct")
    download.add_argument("--cache-dir", help="where to keep converted models (default: $TRL_CAUSAL_CACHE or ~/.cache/trl_causal/models)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, rest = parser.parse_known_args(argv)
    try:
        if args.command == "train":
            if ("--help" in rest or "-h" in rest) and "--trainer" not in rest and not args.config:
                print(parser.train_parser.format_help())
                return 0
            return _command_train(args, rest)
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        if args.command == "list":
            return _command_list(args)
        if args.command == "download-model":
            return _command_download_model(args)
        parser.print_help()
        return 0
    except TrlCausalError as error:
        print(f"trl-causal: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
