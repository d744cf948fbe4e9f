"""CAPT-SFT against plain SFT on PrOntoQA-style deduction: in-distribution and two OOD splits.

    .venv/bin/python benchmarks/capt_prontoqa.py --steps 40                          # the issue's run (3 seeds)
    .venv/bin/python benchmarks/capt_prontoqa.py --seeds 0 --steps 4 --eval_rows 16  # smoke run (-> *_smoke: a run smaller than the committed one never overwrites it)
    .venv/bin/python benchmarks/capt_prontoqa.py --target reasoning                  # -> capt_prontoqa_reasoning.json
    .venv/bin/python benchmarks/capt_prontoqa.py --hops 1                            # one-hop problems -> capt_prontoqa_hops1.json
    .venv/bin/python benchmarks/capt_prontoqa.py --hops 1 --distractors 0            # no distractor rules -> capt_prontoqa_hops1_distractors0.json
    .venv/bin/python benchmarks/capt_prontoqa.py --lora_target_modules all-linear    # -> capt_prontoqa_lora-all-linear.json

Model: the embedded SmolLM2-135M-Instruct with LoRA. Both methods train from the same YAML
(example_configs/capt.yaml; only `trainer` differs) on 100 generated in-distribution rows, for the
same number of steps with the same hyperparameters and seed. Evaluation: --eval_rows rows of each
split (id: real ontology; anti: real words in false relations; nonsense: invented words), scored by
the log-likelihood of "True" vs "False" after the chat prompt; `capt` applies its estimation +
intervention pipeline to test prompts, `sft` does not.

Target style (--target): `answer` (default): answer-only completions ("True"/"False"), scored by
log-likelihood: one forward per row, and no row is lost to unparseable output. `reasoning`: the chain of
claims, then "Answer: True|False"; evaluated by greedy generation (at most --max_new_tokens) and parsing
the last answer word, so a row whose generation names no answer counts as wrong (`unparsed` in the
JSON); results go to results/capt_prontoqa_reasoning.{json,png}.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from datasets import Dataset

from common import mean_std, smaller_than_committed, train_in_process, write_results
from trl_causal.capt.prontoqa import generate_prontoqa, to_chat_rows
from trl_causal.evaluation import accuracy_report, build_predictor

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "example_configs" / "capt.yaml")
SPLITS = ("id", "anti", "nonsense")
METHODS = ("sft", "capt")
ANSWERS = ["True", "False"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--train_rows", type=int, default=100)
    parser.add_argument("--eval_rows", type=int, default=300)
    parser.add_argument("--learning_rate", type=float, default=None, help="default: the YAML's")
    parser.add_argument("--lora_target_modules", nargs="+", default=None, help="default: PEFT's for Llama (q_proj, v_proj); e.g. all-linear")
    parser.add_argument("--target", choices=["answer", "reasoning"], default="answer")
    parser.add_argument("--max_new_tokens", type=int, default=96, help="generation budget for --target reasoning")
    parser.add_argument("--hops", type=int, nargs="+", default=[1, 2, 3], help="rule applications per problem, cycled over the rows of every split")
    parser.add_argument("--distractors", type=int, default=2, help="rules per problem that cannot change the answer (generate_prontoqa's distractors)")
    args = parser.parse_args()

    evaluation = {split: to_chat_rows(generate_prontoqa(args.eval_rows, split, hops=args.hops, seed=10_000, distractors=args.distractors)) for split in SPLITS}
    per_seed: dict[str, dict[str, list[float]]] = {m: {s: [] for s in SPLITS} for m in METHODS}
    unparsed: dict[str, dict[str, list[int]]] = {m: {s: [] for s in SPLITS} for m in METHODS}
    mode = "score" if args.target == "answer" else "generate"
    step_seconds: dict[str, list[float]] = {m: [] for m in METHODS}
    for seed in args.seeds:
        train = Dataset.from_list(to_chat_rows(generate_prontoqa(args.train_rows, "id", hops=args.hops, seed=seed, target=args.target, distractors=args.distractors)))
        for method in METHODS:
            with tempfile.TemporaryDirectory() as output_dir:
                overrides = ["--trainer", method, "--seed", str(seed), "--max_steps", str(args.steps), "--output_dir", output_dir]
                if args.learning_rate is not None:
                    overrides += ["--learning_rate", str(args.learning_rate)]
                if args.lora_target_modules:
                    overrides += ["--lora_target_modules", *args.lora_target_modules]
                run, trainer, timer = train_in_process(CONFIG, overrides, train)
                model = trainer.model.eval()
                predictor = build_predictor(
                    run.trainer.trainer_class, run.training_args, model, trainer.processing_class, ANSWERS,
                    mode=mode, batch_size=32, max_new_tokens=args.max_new_tokens,
                )
                for split in SPLITS:
                    rows = evaluation[split]
                    report = accuracy_report(predictor.predict(rows), [row["answer"] for row in rows])
                    per_seed[method][split].append(100 * report["accuracy"])
                    unparsed[method][split].append(report["unparsed"])
                step_seconds[method].append(timer.median())
            print(f"seed {seed} {method}: " + ", ".join(f"{s} {per_seed[method][s][-1]:.1f}" for s in SPLITS) + f"; step {step_seconds[method][-1]:.2f} s", flush=True)

    accuracy = {m: {s: mean_std(per_seed[m][s])[0] for s in SPLITS} for m in METHODS}
    spread = {m: {s: mean_std(per_seed[m][s])[1] for s in SPLITS} for m in METHODS}
    ratios = [c / s for c, s in zip(step_seconds["capt"], step_seconds["sft"])]
    ood = {m: (accuracy[m]["anti"] + accuracy[m]["nonsense"]) / 2 for m in METHODS}
    targets = {
        "ood_gain_points": {"target": ">= 10", "measured": ood["capt"] - ood["sft"]},
        "id_drop_points": {"target": "<= 2", "measured": accuracy["sft"]["id"] - accuracy["capt"]["id"]},
        "step_time_ratio": {"target": "<= 1.03", "measured": mean_std(ratios)[0]},
    }
    results = {
        "model": "SmolLM2-135M-Instruct (embedded, LoRA r=16)",
        "lora_target_modules": args.lora_target_modules or "PEFT's default for Llama (q_proj, v_proj)",
        "config": "example_configs/capt.yaml",
        "target_style": "answer-only (True/False), scored by log-likelihood"
        if args.target == "answer"
        else f"reasoning (chain of claims, then Answer: True/False), greedy generation of <= {args.max_new_tokens} tokens, parsed",
        "hops": args.hops,
        "distractors": args.distractors,
        "train_rows": args.train_rows,
        "eval_rows_per_split": args.eval_rows,
        "steps": args.steps,
        "seeds": args.seeds,
        "accuracy": accuracy,
        "accuracy_std": spread,
        "accuracy_per_seed": per_seed,
        "unparsed_per_seed": unparsed,
        "step_seconds_median": step_seconds,
        "step_time_ratio": targets["step_time_ratio"]["measured"],
        "targets": targets,
    }
    name = "capt_prontoqa" if args.target == "answer" else "capt_prontoqa_reasoning"
    if args.hops != [1, 2, 3]:
        name += "_hops" + "".join(map(str, args.hops))
    if args.distractors != 2:
        name += f"_distractors{args.distractors}"
    if args.learning_rate is not None:
        name += f"_lr{args.learning_rate:g}"
    if args.lora_target_modules:
        name += "_lora-" + "-".join(args.lora_target_modules)
    floor = {"train_rows": 100, "eval_rows_per_split": 300, "steps": 40, "seeds": 3} if name == "capt_prontoqa" else None
    if smaller_than_committed(name, results, ("train_rows", "eval_rows_per_split", "steps", "seeds"), floor):
        name += "_smoke"  # never over committed results made with more rows, seeds or steps
    path = write_results(name, results)
    plot(results, path.with_suffix(".png"))

    print(f"\n{'method':<8}" + "".join(f"{s:>16}" for s in SPLITS) + f"{'step s':>10}")
    for m in METHODS:
        cells = "".join(f"{accuracy[m][s]:>9.1f} ± {spread[m][s]:<4.1f}" for s in SPLITS)
        print(f"{m:<8}{cells}{mean_std(step_seconds[m])[0]:>10.2f}")
    for name, target in targets.items():
        print(f"{name}: {target['measured']:.2f} (target {target['target']})")
    print(f"wrote {path} and {path.with_suffix('.png')}")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.38
    for i, method in enumerate(METHODS):
        xs = [j + (i - 0.5) * width for j in range(len(SPLITS))]
        ax.bar(xs, [results["accuracy"][method][s] for s in SPLITS], width, yerr=[results["accuracy_std"][method][s] for s in SPLITS], label=method, capsize=3)
    ax.set_xticks(range(len(SPLITS)), ["ID", "anti-commonsense", "nonsense"])
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.axhline(50, color="grey", lw=0.8, ls=":")
    ax.set_title(f"PrOntoQA, {len(results['seeds'])} seeds, {results['steps']} LoRA steps")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
