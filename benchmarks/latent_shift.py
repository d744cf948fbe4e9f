"""Latent-shift adjusted SFT against SFT and WiSE-FT under a shifting spurious feature (issue 5, METHODS.md section 3).

    .venv/bin/python benchmarks/latent_shift.py                                              # the issue's run
    .venv/bin/python benchmarks/latent_shift.py --kinds platform --seeds 0 --steps 2 --train_rows 16 --eval_rows 4   # smoke run (-> *_smoke)

Model: the embedded SmolLM2-135M-Instruct with LoRA; every method trains from example_configs/latent_shift.yaml
(its LoRA, learning rate, batch size 8, ...), built as `trl-causal train` builds it (common.train_in_process), on the
same rows for the same --steps with the same seed; only the overrides below differ.

Data: trl_causal.latent_shift.data, both spurious kinds (platform suffix "amazon.xxx"/"yelp.yyy", stop word
"so"/"the"), --train_rows training rows at 90% agreement between the spurious feature and the label, and --eval_rows
test reviews rendered at 90/70/50/30/10% agreement (the same reviews at every level; only the spurious feature
differs). A fraction --ambiguous (default 0.3) of the reviews in every split have mixed text, one clause of each
polarity, so their label is not in the content: without them the sentiment words settle every row, and plain SFT
ignored the spurious feature (98% at both 90% and 10% agreement, platform kind, seed 0, before this option), leaving
no shift to adjust for.
Prompt/completion rows with the default instruction; completion " positive" / " negative".

Methods (predictions score " positive" vs " negative" after the prompt, as the completion is trained):
- sft: `trainer: sft`, plain LM head.
- wise_ft: the sft model with its LoRA update scaled by 0.5. With LoRA, W = W0 + s*B*A, so this *is* the weight
  interpolation 0.5*W0 + 0.5*W_sft (all other weights are shared); no training.
- latent_shift_shuffle_train / latent_shift_shuffle_test: `trainer: latent_shift` with that `adjustment`;
  the adjusted prediction (K = phi_samples draws of Phi' from the memory bank, seeded) and, as *_plain, the LM head.
- latent_shift: the adjusted prediction of the config's default adjustment (shuffle_train). Fixed before the run,
  not picked on test accuracy.
- c_only: `lambda_adj: 0` (L_SFT + L_C); h is then untrained, so it predicts with the plain LM head.
- no_shuffle: h trained on the true pairs (that is exactly the shuffle_test training, so it reuses that model) and
  applied on them: `phi_source: own` (h([q1(x), Phi(x)]), no draws).
Step time: median optimizer-step time of latent_shift (shuffle_train) over that of sft on the same data, batch and
seed, in the same run; `step_time_ratio` is its mean over kinds and seeds (the first step is left out).

Test prompts that repeat across agreement levels (platform kind: a review has one of two suffixes) are predicted
once. Results: benchmarks/results/latent_shift.json (+ .png: accuracy against agreement, one line per method); runs
with other sizes than the issue's (--steps, --train_rows, --eval_rows, --ambiguous, --extra) write latent_shift_smoke.*,
and runs of some kinds or seeds only latent_shift_partial.*.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import tempfile
from pathlib import Path

from datasets import Dataset

from common import RESULTS, command_line, mean_std, train_in_process, write_results
from trl_causal.evaluation import LMPredictor, accuracy_report, build_predictor
from trl_causal.latent_shift.data import TEST_AGREEMENTS, make_splits, split_name, to_prompt_completion

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "example_configs" / "latent_shift.yaml")
RUNS = RESULTS / "latent_shift_runs"  # one file per (kind, seed, settings), reused by a later run with the same ones
KINDS = ("platform", "stopword")
LEVELS = tuple(str(round(a * 100)) for a in TEST_AGREEMENTS)  # "90", "70", "50", "30", "10"
ANSWERS = ["negative", "positive"]
DEFAULT_ADJUSTMENT = "shuffle_train"  # LatentShiftConfig's default
METHODS = (
    "sft",
    "wise_ft",
    "latent_shift",
    "latent_shift_shuffle_train",
    "latent_shift_shuffle_train_plain",
    "latent_shift_shuffle_test",
    "latent_shift_shuffle_test_plain",
    "c_only",
    "no_shuffle",
)
PLOTTED = ("sft", "wise_ft", "latent_shift_shuffle_train", "latent_shift_shuffle_test", "c_only", "no_shuffle")


@contextlib.contextmanager
def scaled_lora(model, factor: float):
    """Scale every LoRA update by ``factor`` (0.5: WiSE-FT's interpolation halfway between base and fine-tuned)."""
    from peft.tuners.lora import LoraLayer

    layers = [module for module in model.modules() if isinstance(module, LoraLayer)]
    if not layers:
        raise RuntimeError("WiSE-FT here scales the LoRA update, but the model has no LoRA layers.")
    saved = [dict(layer.scaling) for layer in layers]
    for layer in layers:
        for name in layer.scaling:
            layer.scaling[name] *= factor
    try:
        yield
    finally:
        for layer, scaling in zip(layers, saved):
            layer.scaling.update(scaling)


def predict_levels(predict, tests: dict[str, list[dict]]) -> dict[str, dict]:
    """accuracy_report per level; each distinct prompt is predicted once. ``predict(rows)`` -> list or tuple of lists."""
    unique: dict[str, dict] = {}
    for rows in tests.values():
        for row in rows:
            unique.setdefault(row["prompt"], row)
    outputs = predict(list(unique.values()))
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    by_prompt = [dict(zip(unique, predicted)) for predicted in outputs]
    return [
        {level: accuracy_report([p[row["prompt"]] for row in rows], [row["label"] for row in rows]) for level, rows in tests.items()}
        for p in by_prompt
    ]


def run_one(kind: str, seed: int, args) -> dict:
    """Train the four models of one (kind, seed) and report every method at every level; plus the step times."""
    splits = make_splits(args.train_rows, args.eval_rows, kind, seed=seed, ambiguous=args.ambiguous)
    train = Dataset.from_list(to_prompt_completion(splits["train"]))
    tests = {level: to_prompt_completion(splits[split_name(int(level) / 100)]) for level in LEVELS}
    reports: dict[str, dict] = {}
    step_seconds: dict[str, float] = {}
    trainings = {
        "sft": ["--trainer", "sft"],
        "shuffle_train": ["--trainer", "latent_shift", "--adjustment", "shuffle_train"],
        "shuffle_test": ["--trainer", "latent_shift", "--adjustment", "shuffle_test"],
        "c_only": ["--trainer", "latent_shift", "--lambda_adj", "0"],
    }
    for name, overrides in trainings.items():
        with tempfile.TemporaryDirectory() as output_dir:
            common = ["--seed", str(seed), "--max_steps", str(args.steps), "--output_dir", output_dir]
            run, trainer, timer = train_in_process(CONFIG, overrides + common + args.extra, train)
            model, tokenizer = trainer.model.eval(), trainer.processing_class
            if name == "sft":
                step_seconds["sft"] = timer.median()
                predictor = LMPredictor(model, tokenizer, ANSWERS)
                (reports["sft"],) = predict_levels(predictor.predict, tests)
                with scaled_lora(model, 0.5):
                    (reports["wise_ft"],) = predict_levels(predictor.predict, tests)
            elif name == "c_only":
                (reports["c_only"],) = predict_levels(LMPredictor(model, tokenizer, ANSWERS).predict, tests)
            else:
                if name == DEFAULT_ADJUSTMENT:
                    step_seconds["latent_shift"] = timer.median()
                trainer.save_model(output_dir)  # the predictor loads the heads from the checkpoint
                predictor = build_predictor(run.trainer.trainer_class, run.training_args, model, tokenizer, ANSWERS, checkpoint_dir=output_dir)
                adjusted, plain = predict_levels(predictor.predict_both, tests)
                reports[f"latent_shift_{name}"], reports[f"latent_shift_{name}_plain"] = adjusted, plain
                if name == "shuffle_test":
                    predictor.phi_source = "own"
                    (reports["no_shuffle"],) = predict_levels(predictor.predict, tests)
    reports["latent_shift"] = reports[f"latent_shift_{DEFAULT_ADJUSTMENT}"]
    return {"reports": reports, "step_seconds": step_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--train_rows", type=int, default=320, help="default 320: one epoch of 40 steps x batch 8 (not recomputed from --steps)")
    parser.add_argument("--eval_rows", type=int, default=100, help="test reviews per agreement level")
    parser.add_argument("--ambiguous", type=float, default=0.3, help="fraction of reviews with mixed text, every split")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="overrides for every training, e.g. --bf16 true")
    args = parser.parse_args()

    per_run: dict[str, dict[str, dict[str, list[float]]]] = {
        metric: {m: {level: [] for level in LEVELS} for m in METHODS} for metric in ("accuracy", "macro_f1")
    }
    step_seconds: dict[str, list[float]] = {"sft": [], "latent_shift": []}
    runs = []
    def sizes(values) -> dict:
        return {"steps": values.steps, "train_rows": values.train_rows, "eval_rows": values.eval_rows, "ambiguous": values.ambiguous, "extra": values.extra}

    settings = sizes(args)
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]  # smoke runs never clobber real ones
    # Other sizes than the issue's (a smoke run) write beside the committed results, never over them, and so does a run
    # of some kinds or seeds only (its run files are the issue's, which the full run reuses); both are .gitignore'd
    defaults = parser.parse_args([])
    issue_sizes = settings == sizes(defaults)
    runs_dir = RUNS if issue_sizes else RESULTS / "latent_shift_runs_smoke"
    complete = (args.kinds, args.seeds) == (defaults.kinds, defaults.seeds)
    results_name = "latent_shift_smoke" if not issue_sizes else "latent_shift" if complete else "latent_shift_partial"
    for kind in args.kinds:
        for seed in args.seeds:
            path = runs_dir / f"{kind}-seed{seed}-{digest}.json"
            saved = json.loads(path.read_text()) if path.exists() else None
            if saved is not None:
                print(f"{kind} seed {seed}: reusing {path.relative_to(REPO)} (made by: {saved['command']})", flush=True)
            else:
                saved = {"settings": settings, "command": command_line(), **run_one(kind, seed, args)}
                runs_dir.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(saved, indent=2))  # a crash later loses nothing finished
            reports = saved["reports"]
            for method in METHODS:
                for level in LEVELS:
                    for metric in per_run:
                        per_run[metric][method][level].append(100 * reports[method][level][metric])
            for name in step_seconds:
                step_seconds[name].append(saved["step_seconds"][name])
            runs.append({"kind": kind, "seed": seed, "command": saved["command"]})
            print(
                f"{kind} seed {seed}: "
                + ", ".join(f"{m} 90/10 {reports[m]['90']['accuracy']:.0%}/{reports[m]['10']['accuracy']:.0%}" for m in PLOTTED)
                + f"; step s sft {step_seconds['sft'][-1]:.2f}, latent_shift {step_seconds['latent_shift'][-1]:.2f}",
                flush=True,
            )

    summary = {metric: {m: {lv: mean_std(v)[0] for lv, v in by_level.items()} for m, by_level in per_metric.items()} for metric, per_metric in per_run.items()}
    spread = {m: {lv: mean_std(v)[1] for lv, v in by_level.items()} for m, by_level in per_run["accuracy"].items()}
    ratios = [ls / sft for ls, sft in zip(step_seconds["latent_shift"], step_seconds["sft"])]
    accuracy = summary["accuracy"]
    targets = {
        "ood10_gain_over_sft_points": {"target": ">= 8", "measured": accuracy["latent_shift"]["10"] - accuracy["sft"]["10"]},
        "ood10_minus_wise_ft_points": {"target": ">= 0", "measured": accuracy["latent_shift"]["10"] - accuracy["wise_ft"]["10"]},
        "id90_gap_to_sft_points": {"target": "|gap| <= 2", "measured": accuracy["latent_shift"]["90"] - accuracy["sft"]["90"]},
        "step_time_ratio": {"target": "<= 1.4", "measured": mean_std(ratios)[0]},
    }
    for target in targets.values():
        value, bound = target["measured"], float(target["target"].split()[-1])
        target["met"] = abs(value) <= bound if target["target"].startswith("|") else (value <= bound if "<=" in target["target"] else value >= bound)
    results = {
        "model": "SmolLM2-135M-Instruct (embedded, LoRA r=16 from example_configs/latent_shift.yaml)",
        "config": "example_configs/latent_shift.yaml",
        "kinds": args.kinds,
        "seeds": args.seeds,
        "steps": args.steps,
        "per_device_train_batch_size": 8,
        "train_rows": args.train_rows,
        "train_agreement": 90,
        "ambiguous": args.ambiguous,
        "eval_rows_per_level": args.eval_rows,
        "extra_overrides": args.extra,
        "default_adjustment": DEFAULT_ADJUSTMENT,
        "methods": {
            "sft": "trainer sft, LM head",
            "wise_ft": "sft with its LoRA update scaled by 0.5 (= 0.5 base + 0.5 fine-tuned weights)",
            "latent_shift": f"adjusted prediction of the default adjustment ({DEFAULT_ADJUSTMENT})",
            "latent_shift_shuffle_train": "adjustment shuffle_train, adjusted prediction (K draws from the memory bank)",
            "latent_shift_shuffle_train_plain": "adjustment shuffle_train, LM head",
            "latent_shift_shuffle_test": "adjustment shuffle_test, adjusted prediction (K draws from the memory bank)",
            "latent_shift_shuffle_test_plain": "adjustment shuffle_test, LM head",
            "c_only": "lambda_adj 0 (L_SFT + L_C), LM head",
            "no_shuffle": "the shuffle_test model with h applied on each row's own Phi (phi_source own)",
        },
        "accuracy": accuracy,
        "macro_f1": summary["macro_f1"],
        "accuracy_std": spread,
        "per_run": {"runs": runs, **per_run},
        "step_seconds_median": step_seconds,
        "step_time_ratio": targets["step_time_ratio"]["measured"],
        "targets": targets,
    }
    path = write_results(results_name, results)
    plot(results, path.with_suffix(".png"))

    print(f"\naccuracy / macro-F1 (%), mean over {len(args.kinds)} kind(s) x {len(args.seeds)} seed(s); test agreement level:")
    print(f"{'method':<34}" + "".join(f"{level + '%':>14}" for level in LEVELS))
    for m in METHODS:
        print(f"{m:<34}" + "".join(f"{accuracy[m][lv]:>7.1f} / {summary['macro_f1'][m][lv]:<4.1f}" for lv in LEVELS))
    print(f"step seconds (median): sft {mean_std(step_seconds['sft'])[0]:.2f}, latent_shift {mean_std(step_seconds['latent_shift'])[0]:.2f}")
    for name, target in targets.items():
        print(f"{name}: {target['measured']:.2f} (target {target['target']}: {'met' if target['met'] else 'MISSED'})")
    print(f"wrote {path} and {path.with_suffix('.png')}")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    xs = [int(level) for level in LEVELS]
    for method in PLOTTED:
        ax.plot(xs, [results["accuracy"][method][level] for level in LEVELS], marker="o", label=method)
    ax.set_xlabel("test agreement of the spurious feature with the label (%)")
    ax.set_ylabel("accuracy (%)")
    ax.invert_xaxis()
    ax.axhline(50, color="grey", lw=0.8, ls=":")
    ax.set_title(f"Shift benchmark, {len(results['kinds'])} kind(s) x {len(results['seeds'])} seed(s), {results['steps']} LoRA steps")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
