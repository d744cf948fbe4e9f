"""Helpers shared by the benchmark scripts: run a registered trainer in-process, time its steps, write results."""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

RESULTS = Path(__file__).resolve().parent / "results"


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step (forward, backward, update)."""

    def __init__(self):
        self.seconds: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)

    def median(self, skip: int = 1) -> float:
        """Median step time, leaving out the first ``skip`` warm-up steps."""
        return statistics.median(self.seconds[skip:] or self.seconds)


def train_in_process(config: str, overrides: list[str], train_dataset):
    """Train with the trainer a YAML + overrides select, exactly as `trl-causal train` builds it; returns (trainer, timer)."""
    from trl_causal.configuration import parse_run_config
    from trl_causal.train import build_trainer

    run = parse_run_config(overrides, config)
    trainer = build_trainer(run, train_dataset, None)
    timer = StepTimer()
    trainer.add_callback(timer)
    trainer.train()
    return run, trainer, timer


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def command_line() -> str:
    """The command that runs this benchmark, as typed from the repository root."""
    return " ".join([".venv/bin/python", *[a if i else f"benchmarks/{Path(a).name}" for i, a in enumerate(sys.argv)]])


def write_results(name: str, results: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    results["command"] = command_line()
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=2))
    return path


def smaller_than_committed(name: str, results: dict, sizes: tuple[str, ...], floor: dict | None = None) -> bool:
    """Whether a run is smaller, in any of ``sizes`` (keys of ``results``: a number, or a list counted by its length:
    seeds, kinds, step checkpoints), than the run that wrote ``results/<name>.json`` or than ``floor`` (the issue's
    sizes). Such a run writes ``<name>_smoke``: a smoke run never overwrites the committed results."""
    path = RESULTS / f"{name}.json"
    committed = json.loads(path.read_text()) if path.is_file() else {}

    def size(value) -> float:
        return len(value) if isinstance(value, list) else value or 0

    return any(size(results[key]) < max(size(committed.get(key)), (floor or {}).get(key, 0)) for key in sizes)
