"""What the latent_shift heads learn from the frozen SmolLM2 view, and how many steps they need (issue 5 diagnostic).

    .venv/bin/python benchmarks/latent_shift_heads.py                         # both kinds, data seed 0, 3 head seeds
    .venv/bin/python benchmarks/latent_shift_heads.py --kinds platform --train_rows 64 --eval_rows 16 --steps 20 40   # smoke

The shift benchmark (benchmarks/latent_shift.py) trains 40 LoRA steps on a CPU, and its adjusted prediction sat at
chance. This script asks why, at a cost of minutes: it leaves the LoRA out and trains only the heads, with the
trainer's own code (LatentShiftHeads.losses and .predict, sizes, learning rate, batch size and entropy reading from
example_configs/latent_shift.yaml), on features of the embedded SmolLM2-135M-Instruct computed once:
R = last hidden layer mean-pooled over the prompt tokens (R1 = R0 = R: the limit in which the LoRA has not moved
the fine-tuned view, so L_C's alignment term is 0 and only its entropy terms act) and the patch features of the
embeddings (P = n_patches). Rows are the shift data of the benchmark (train at 90% agreement, --ambiguous mixed
reviews); tests at 90% and 10% agreement.

Reported at each step count in --steps, mean over head seeds: accuracy of the adjusted prediction (K = phi_samples
draws of Phi' from the memory bank, seeded) for
- shuffle_train / shuffle_test: the config's heads with that adjustment (lambda_causal 1, lambda_adj 1);
- shuffle_train_no_lc / shuffle_test_no_lc: the same with lambda_causal 0;
- shuffle_test_own_phi: the shuffle_test heads applied on each row's own Phi (no adjustment);
- probe: a linear probe (LayerNorm + Linear, the causal head's shape with one output per label) fitted to the labels on
  R with the same optimizer, batch and steps, i.e. what the frozen pooled representation says about the label.
Results: benchmarks/results/latent_shift_heads.json (+ .png: accuracy against steps at 90% and at 10% agreement).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from common import smaller_than_committed, write_results
from trl_causal.configuration import parse_run_config
from trl_causal.embedded import ensure_embedded_model
from trl_causal.latent_shift.adjustment import CausalHead, LatentShiftHeads, masked_mean_pool, patch_features
from trl_causal.latent_shift.data import make_splits, to_prompt_completion
from trl_causal.trainer.latent_shift_trainer import build_heads

REPO = Path(__file__).resolve().parents[1]
CONFIG = "example_configs/latent_shift.yaml"
LEVELS = {"90": "test_90", "10": "test_10"}
VARIANTS = {  # name -> (adjustment, lambda_causal)
    "shuffle_train": ("shuffle_train", 1.0),
    "shuffle_train_no_lc": ("shuffle_train", 0.0),
    "shuffle_test": ("shuffle_test", 1.0),
    "shuffle_test_no_lc": ("shuffle_test", 0.0),
}


@torch.no_grad()
def frozen_features(model, tokenizer, rows: list[dict], n_patches: int, batch_size: int = 32) -> dict[str, torch.Tensor]:
    """R [N, D] (last layer, mean over prompt tokens), f [N, D] (embedding patch features) and labels [N] (1 = positive)."""
    pooled, patches = [], []
    for start in tqdm(range(0, len(rows), batch_size), desc="frozen features", leave=False):
        batch = rows[start : start + batch_size]
        encoded = tokenizer([row["prompt"] for row in batch], return_tensors="pt", padding=True)
        hidden = model(**encoded, output_hidden_states=True).hidden_states
        pooled.append(masked_mean_pool(hidden[-1], encoded.attention_mask))
        patches.append(patch_features(hidden[0], encoded.attention_mask, n_patches)[0])
    labels = torch.tensor([int(row["label"] == "positive") for row in rows])
    return {"R": torch.cat(pooled), "f": torch.cat(patches), "y": labels}


def as_tokens(vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-pooled vectors [N, D] as one-token hidden states [N, 1, D] with their mask: pooling one token returns it."""
    return vectors.unsqueeze(1), torch.ones(vectors.shape[0], 1, dtype=torch.long)


def adjusted_accuracy(heads: LatentShiftHeads, test: dict, k: int, seed: int, source: str = "bank") -> float:
    hidden, mask = as_tokens(test["R"])
    heads.eval()
    with torch.no_grad():
        probs = heads.predict(hidden, mask, low_hidden=as_tokens(test["f"])[0], k=k, source=source, generator=torch.Generator().manual_seed(seed))
    heads.train()
    return 100 * (probs.argmax(-1) == test["y"]).float().mean().item()


def fit(args, module: torch.nn.Module, batch_loss, train: dict, seed: int, checkpoints: list[int], evaluate) -> dict:
    """AdamW at the heads' learning rate on ``batch_loss(index, generator)`` over random batches of the training rows
    for max(checkpoints) steps; ``{step: evaluate()}`` at every checkpoint."""
    optimizer = torch.optim.AdamW(module.parameters(), lr=args.heads_learning_rate, weight_decay=args.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    results = {}
    for step in range(1, max(checkpoints) + 1):
        index = torch.randint(len(train["y"]), (args.per_device_train_batch_size,), generator=generator)
        loss = batch_loss(index, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step in checkpoints:
            results[step] = evaluate()
    return results


def train_heads(args, data: dict, adjustment: str, lambda_causal: float, seed: int, checkpoints: list[int]) -> dict:
    """Train the config's heads; accuracy at each checkpoint: {"adjusted" | "own_phi": {step: {level: %}}}."""
    train = data["train"]
    heads = build_heads(args, train["R"].shape[1], 2, seed)

    def batch_loss(index, generator):
        hidden, mask = as_tokens(train["R"][index])
        losses = heads.losses(hidden, hidden, as_tokens(train["f"][index])[0], mask, train["y"][index],
                              adjustment=adjustment, entropy_mode=args.entropy_mode, generator=generator)
        return lambda_causal * losses.causal + args.lambda_adj * losses.adjusted

    def evaluate():
        return {
            curve: {lv: adjusted_accuracy(heads, data[split], args.phi_samples, seed, source) for lv, split in LEVELS.items()}
            for curve, source in (("adjusted", "bank"), ("own_phi", "own"))
        }

    by_step = fit(args, heads, batch_loss, train, seed, checkpoints, evaluate)
    return {curve: {step: accuracies[curve] for step, accuracies in by_step.items()} for curve in ("adjusted", "own_phi")}


def train_probe(args, data: dict, seed: int, checkpoints: list[int]) -> dict:
    """Linear probe on R (the causal head's shape, one output per label) fitted to the labels: {step: {level: %}}."""
    train = data["train"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = CausalHead(train["R"].shape[1], 2)

    def evaluate():
        with torch.no_grad():
            return {lv: 100 * (probe(data[s]["R"]).argmax(-1) == data[s]["y"]).float().mean().item() for lv, s in LEVELS.items()}

    def batch_loss(index, _generator):
        return F.cross_entropy(probe(train["R"][index]), train["y"][index])

    return fit(args, probe, batch_loss, train, seed, checkpoints, evaluate)


def mean_curve(curves: list[dict], checkpoints: list[int]) -> dict[str, dict[str, float]]:
    """{step: {level: mean accuracy}} over ``curves``, with the steps as strings (JSON keys)."""
    return {str(step): {lv: statistics.fmean(c[step][lv] for c in curves) for lv in LEVELS} for step in checkpoints}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", choices=("platform", "stopword"), default=["platform", "stopword"])
    parser.add_argument("--data_seed", type=int, default=0)
    parser.add_argument("--head_seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train_rows", type=int, default=640)
    parser.add_argument("--eval_rows", type=int, default=200)
    parser.add_argument("--ambiguous", type=float, default=0.3)
    parser.add_argument("--steps", type=int, nargs="+", default=[40, 100, 200, 400, 800, 1600])
    cli = parser.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    args = parse_run_config([], str(REPO / CONFIG)).training_args
    path = ensure_embedded_model("smollm2-135m-instruct")
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()
    checkpoints = sorted(cli.steps)
    names = [*VARIANTS, "shuffle_test_own_phi", "probe"]
    runs: dict[str, dict[str, list[dict]]] = {name: {} for name in names}  # name -> kind -> one curve per head seed
    for kind in cli.kinds:
        splits = make_splits(cli.train_rows, cli.eval_rows, kind, seed=cli.data_seed, ambiguous=cli.ambiguous)
        data = {name: frozen_features(model, tokenizer, to_prompt_completion(splits[name]), args.n_patches) for name in ("train", *LEVELS.values())}
        for seed in tqdm(cli.head_seeds, desc=f"{kind}: head seeds"):
            for name, (adjustment, lambda_causal) in VARIANTS.items():
                curves = train_heads(args, data, adjustment, lambda_causal, seed, checkpoints)
                runs[name].setdefault(kind, []).append(curves["adjusted"])
                if name == "shuffle_test":
                    runs["shuffle_test_own_phi"].setdefault(kind, []).append(curves["own_phi"])
            runs["probe"].setdefault(kind, []).append(train_probe(args, data, seed, checkpoints))

    accuracy = {name: mean_curve([c for curves in by_kind.values() for c in curves], checkpoints) for name, by_kind in runs.items()}
    results = {
        "model": "SmolLM2-135M-Instruct (embedded), frozen: no LoRA; R1 = R0 = mean-pooled last layer over the prompt",
        "config": CONFIG,
        "heads": {key: getattr(args, key) for key in ("n_causal", "d_phi", "n_patches", "heads_learning_rate", "per_device_train_batch_size", "entropy_mode", "lambda_adj", "phi_samples")},
        "kinds": cli.kinds,
        "data_seed": cli.data_seed,
        "head_seeds": cli.head_seeds,
        "train_rows": cli.train_rows,
        "eval_rows_per_level": cli.eval_rows,
        "ambiguous": cli.ambiguous,
        "accuracy": accuracy,
        "accuracy_definition": "accuracy (%) at test agreement 90 and 10 after each number of head steps, mean over kinds and head seeds",
        "per_kind": {name: {kind: mean_curve(curves, checkpoints) for kind, curves in by_kind.items()} for name, by_kind in runs.items()},
    }
    results["steps"] = checkpoints
    name = "latent_shift_heads"
    if smaller_than_committed(name, results, ("kinds", "head_seeds", "train_rows", "eval_rows_per_level", "steps")):
        name += "_smoke"  # never over committed results made with more kinds, seeds, rows or step counts
    out = write_results(name, results)
    plot(results, checkpoints, out.with_suffix(".png"))
    print(f"\naccuracy (%) at agreement 90 / 10, mean over {len(cli.kinds)} kind(s) x {len(cli.head_seeds)} head seed(s)")
    print(f"{'steps':<22}" + "".join(f"{s:>12}" for s in checkpoints))
    for name in names:
        print(f"{name:<22}" + "".join(f"{accuracy[name][str(s)]['90']:>6.1f}/{accuracy[name][str(s)]['10']:<5.1f}" for s in checkpoints))
    print(f"wrote {out} and {out.with_suffix('.png')}")


def plot(results: dict, checkpoints: list[int], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, level in zip(axes, LEVELS):
        for name, curve in results["accuracy"].items():
            ax.plot(checkpoints, [curve[str(s)][level] for s in checkpoints], marker="o", label=name)
        ax.set_xscale("log")
        ax.axhline(50, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("head training steps (batch 8)")
        ax.set_title(f"test agreement {level}%")
    axes[0].set_ylabel("accuracy (%)")
    axes[1].legend(fontsize=8)
    fig.suptitle("latent_shift heads on frozen SmolLM2 features (no LoRA)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
