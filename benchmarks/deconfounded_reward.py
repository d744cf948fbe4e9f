"""DeconfoundLM reward models (`deconfounded_reward`) against the naive, covariate and invariance baselines on the
observational-text simulator (METHODS.md section 2, issue 4).

    .venv/bin/python benchmarks/deconfounded_reward.py            # the committed run
    .venv/bin/python benchmarks/deconfounded_reward.py --smoke    # smoke run (tiny sizes, a few minutes; writes
                                                                  # results/deconfounded_reward_smoke.{json,png})

Data: `simulate_observational_texts` in its default, entangled setting (gamma = 1, entanglement 1.5, text
confounding 0.5, noise 1): Y = f(text) + gamma C + noise, with C (the context) raising both the quality words and
the spurious marker "Happy Monday!", which has no effect on Y.

1. Estimator: theta_hat on --estimator_datasets simulated datasets (seeds 100, 101, ...) of --estimator_rows rows,
   computed by the trainer's own target code (`read_observations` + `reward_targets`, i.e. cross-fitted
   `partial_out`, 5 folds, ridge learners) with `feature_source: tfidf`. TF-IDF, not SmolLM2 features, because
   50 datasets x 2000 rows through SmolLM2 do not fit the CPU budget; theta_hat with the SmolLM2 features of the
   reward-model training sets is reported too (`theta_training_sets`; with --feature_source tfidf, part 2 partials
   out on TF-IDF instead and writes results/deconfounded_reward_tfidf.{json,png}).
2. Reward models: NOT LoRA fine-tuning. On this 2-core CPU LoRA training of 4 modes x seeds to convergence is
   out of reach. Each reward model is a linear head on the frozen, mean-pooled last hidden states of the embedded
   SmolLM2-135M-Instruct (the last-layer block of the features phi the trainer's deconfounding stage uses, which
   by default, `feature_layers: [0, -1]`, also holds the mean input embeddings; computed by the trainer's
   `tokenize_rows` + `text_features`). Everything but the backbone is the trainer's code: targets from
   `read_observations` + `reward_targets` (deconfounded: cross-fitted partialling out on phi; naive / covariate /
   invariance: raw Y), standardised as the trainer does, and the loss is `DeconfoundedRewardTrainer.compute_loss`
   itself (regression objective; covariate: linear head on the standardised C, dropped at inference; invariance:
   + invariance_weight * corr(r, C)^2 per micro-batch), called on the head with a minimal stand-in for the
   trainer. Same optimiser and budget for every mode (AdamW, batch 32, 30 epochs, lr 1e-3 decaying linearly to 0,
   the Trainer's default schedule).
   `oracle` (benchmark only, a reference row) fits the head to the true f. Each head is trained on --train_rows
   (10k, the log size of the speed target; on 1500 rows, the earlier setting, the 576-weight heads were limited by
   the outcome noise, sd 1: see the README), per seed.
   Evaluation on held-out simulated rows (seed 1000): Spearman(reward, f); marker effect = mean over held-out
   texts without the marker of reward(text + marker) - reward(text), rewards mapped back to outcome units
   (reward * target std, the scale on which f enters Y with coefficient 1), divided by std(f); best-of-8 =
   groups of 8 held-out candidates sharing a topic (seed 20000), pick the argmax reward, mean true f of the picks.
   f is standardised to mean ~0, so a relative gain of two raw objective scores is ill-defined: the relative gain
   is computed on the gain over a random pick (mean f of all candidates); its ceiling is that of a perfect reward
   (the best candidate of every group). Two more candidate sets are scored beside the target's: the same candidates
   with the marker on a random half whatever the context, and fresh groups whose 8 candidates share one context W
   (simulator `shared_context`: best-of-n for one prompt).
2b. The same at each --sweep_text_confounding value (default 1.0 and 2.0) on fresh simulated data, to show where
   the invariance penalty's cost, and so the best-of-8 margin over it, grows (`text_confounding_sweep`).
3. Speed (real trainers, LoRA on SmolLM2, example_configs/deconfounded_reward.yaml: pairwise objective, 8 pairs per
   step): `deconfounded_reward` and TRL's `RewardTrainer` (`trainer: reward`) on the same pairs (ranked by the
   deconfounded targets, same seed, so the same batches), alternating in --speed_rounds rounds of --speed_steps
   steps; step_time_ratio = median step of deconfounded_reward / median step of reward (first step of each
   round left out). deconfound_time_share at 10k rows = (feature time + partialling-out time) / time of one
   training epoch; the feature time is projected from the rows/s of the trainer's feature pass (`text_features` on
   the speed run's model, adapters disabled) over --stage_rows fresh simulated rows, after one warm-up batch, in
   the config's precision (`feature_autocast: auto`: training is fp32, so bf16 where the CPU has bf16 units, as this
   one does, recorded in `feature_autocast_auto_resolved_to`) and, reported beside it, in fp32 (`feature_autocast:
   none`), with theta_hat partialled out on each pass's features, to show what the precision costs in accuracy
   (`stage_rows_theta_by_feature_autocast`); the partialling out is timed on 10k rows resampled from the
   embedded rows of part 2 (training, held-out and candidate rows, with their own Y and C; groups of 4), and the
   epoch time is steps per epoch (pairs of 10k simulated rows / 8) x the measured median step time.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from datasets import Dataset
from scipy.stats import spearmanr
from torch import nn

from common import smaller_than_committed, train_in_process, write_results
from trl_causal.deconfound import add_marker, has_marker, remove_marker, simulate_observational_texts
from trl_causal.deconfound.observations import Observations, read_observations
from trl_causal.deconfound.pairs import dpo_rows, preference_pairs
from trl_causal.deconfound.targets import reward_targets
from trl_causal.deconfound.texts import text_features, tokenize_rows
from trl_causal.trainer.deconfounded_reward_config import DeconfoundedRewardConfig
from trl_causal.trainer.deconfounded_reward_trainer import DeconfoundedRewardTrainer
from trl_causal.trainer.mixins import CausalLossMixin

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "example_configs" / "deconfounded_reward.yaml")
MODEL = "smollm2-135m-instruct"
GAMMA = 1.0
ENTANGLEMENT = 1.5
TEXT_CONFOUNDING = 0.5  # the simulator's defaults: the entangled setting the targets are judged in
MODES = ("deconfounded", "naive", "covariate", "invariance")
ROWS = (*MODES, "oracle")  # oracle: a reference head fitted to the true f (not a trainer mode)
CANDIDATE_SETS = {  # best-of-8 objective key -> label; the targets are judged on "objective"
    "objective": "own context",
    "objective_marker_decoupled": "marker decoupled",
    "objective_shared_context": "shared context",
}
PROJECTION_ROWS = 10_000


def simulate(
    n: int, seed: int, group_size: int = 1, text_confounding: float = TEXT_CONFOUNDING, shared_context: bool = False
) -> dict:
    """The simulator in its entangled setting (by default the simulator's default one)."""
    return simulate_observational_texts(
        n=n,
        gamma=GAMMA,
        entanglement=ENTANGLEMENT,
        text_confounding=text_confounding,
        group_size=group_size,
        shared_context=shared_context,
        seed=seed,
    )


def reward_config(mode: str, seed: int, output_dir: str, **overrides) -> DeconfoundedRewardConfig:
    """The trainer's config for the frozen-feature reward heads (regression objective, text column `text`)."""
    settings = dict(
        output_dir=output_dir,
        report_to="none",
        bf16=False,
        text_column="text",
        numeric_confounders=["confounder"],
        mode=mode,
        objective="regression",
        n_folds=5,
        per_device_train_batch_size=32,
        seed=seed,
    )
    return DeconfoundedRewardConfig(**(settings | overrides))


# --------------------------------------------------------------------------------------------- 1. estimator
def estimator_study(n_datasets: int, n_rows: int, output_dir: str) -> dict:
    thetas, lows, highs = [], [], []
    for i in range(n_datasets):
        data = simulate(n_rows, seed=100 + i)
        args = reward_config("deconfounded", i, output_dir, feature_source="tfidf")
        dataset = Dataset.from_dict(data)
        observations = read_observations({"train": dataset}, args)["train"]
        effect = reward_targets(observations, args, lambda: text_features(args, dataset, []), progress=False).result
        thetas.append(float(effect.theta[0]))
        lows.append(float(effect.ci_low[0]))
        highs.append(float(effect.ci_high[0]))
    covered = [low <= GAMMA <= high for low, high in zip(lows, highs)]
    errors = [abs(theta - GAMMA) for theta in thetas]
    return {
        "datasets": n_datasets,
        "rows_per_dataset": n_rows,
        "features": "tfidf (feature_source: tfidf), ridge learners, 5 folds",
        "gamma": GAMMA,
        "ci_coverage": statistics.fmean(covered),
        "median_abs_error": statistics.median(errors),
        "theta": thetas,
        "ci_low": lows,
        "ci_high": highs,
    }


# ------------------------------------------------------------------------------------------ 2. reward heads
class FeatureExtractor:
    """phi = the trainer's default features of the frozen embedded model (mean input embeddings and mean last hidden
    states), by the trainer's own functions; counts the rows and seconds of every uncached extraction."""

    def __init__(self, cache_dir: str, output_dir: str):
        from transformers import AutoModel, AutoTokenizer

        from trl_causal.embedded import resolve_model_name_or_path

        path = resolve_model_name_or_path(MODEL)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path, dtype=torch.float32)
        self.args = reward_config("deconfounded", 0, output_dir, feature_cache_dir=cache_dir)
        assert self.args.feature_layers[-1] == -1, "the reward heads read the last layer's block of phi"
        self.rows, self.seconds = 0, 0.0

    def __call__(self, texts: list[str], name: str) -> np.ndarray:
        rows = Dataset.from_dict({"text": list(texts)})
        sequences = tokenize_rows(rows, self.args, self.tokenizer, name)["input_ids"]
        start = time.perf_counter()
        phi = text_features(self.args, rows, sequences, self.model, self.tokenizer.pad_token_id, progress=False)
        seconds = time.perf_counter() - start
        self.rows, self.seconds = self.rows + len(texts), self.seconds + seconds
        print(f"  features of {len(texts)} {name} rows: {seconds:.0f} s", flush=True)
        return phi

    def last_layer(self, phi: np.ndarray) -> np.ndarray:
        """The last layer's block of phi (``feature_layers`` ends with -1): what the reward heads read, as a reward
        model's score head reads the last layer."""
        return phi[:, -self.model.config.hidden_size :]


class FrozenFeatureHead(nn.Module):
    """The reward: a single-logit linear head on (standardised) frozen features, called like a sequence classifier."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        return SimpleNamespace(logits=self.score(input_ids))


class TrainerStandIn:
    """Just what `DeconfoundedRewardTrainer.compute_loss` reads from the trainer, so its loss code runs verbatim."""

    compute_loss = DeconfoundedRewardTrainer.compute_loss
    token_mean = CausalLossMixin.token_mean
    example_mean = CausalLossMixin.example_mean
    _training = CausalLossMixin._training
    current_gradient_accumulation_steps = 1

    def __init__(self, model: nn.Module, args: DeconfoundedRewardConfig, heads: nn.Module | None):
        self.model, self.args, self.heads = model, args, heads
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        self.accelerator = SimpleNamespace(gather_for_metrics=lambda value: value, num_processes=1)

    def _log_reward_metrics(self, mode: str, rewards: torch.Tensor, attention_mask) -> None:
        """RewardTrainer's reward and token metrics: a head trained outside a Trainer logs none."""


def train_head(
    phi: np.ndarray, target: np.ndarray, confounders: np.ndarray, args: DeconfoundedRewardConfig, epochs: int, lr: float
) -> FrozenFeatureHead:
    """AdamW on the trainer's loss; ``confounders`` standardised with the training rows' moments, as the trainer does."""
    torch.manual_seed(args.seed)
    head = FrozenFeatureHead(phi.shape[1])
    heads = None
    if args.mode == "covariate":  # as DeconfoundedRewardTrainer.__init__: zero-initialised linear head on C
        heads = nn.Linear(confounders.shape[1], 1, bias=False)
        nn.init.zeros_(heads.weight)
    host = TrainerStandIn(head, args, heads)
    parameters = list(head.parameters()) + (list(heads.parameters()) if heads is not None else [])
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)
    x = torch.tensor(phi, dtype=torch.float32)
    y = torch.tensor(target, dtype=torch.float32)
    c = torch.tensor(confounders, dtype=torch.float32)
    generator = torch.Generator().manual_seed(args.seed)
    batch = args.per_device_train_batch_size
    total_steps = epochs * (len(x) // batch)
    # linear decay to 0, the Trainer's default schedule (lr_scheduler_type: linear)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / total_steps)
    head.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x) - batch + 1, batch):  # full batches only (the invariance penalty is per batch)
            rows = order[start : start + batch]
            inputs = {"input_ids": x[rows], "attention_mask": None, "confounders": c[rows], "target": y[rows]}
            loss = host.compute_loss(head, inputs)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return head.eval()


def scores(head: FrozenFeatureHead, phi: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return head(torch.tensor(phi, dtype=torch.float32)).logits.squeeze(-1).numpy().astype(float)


def reward_models(cli, extract: FeatureExtractor, output_dir: str, text_confounding: float = TEXT_CONFOUNDING) -> dict:
    held_out = simulate(cli.eval_rows, seed=1_000, text_confounding=text_confounding)
    f_eval = np.array(held_out["f"])
    plain = [i for i, text in enumerate(held_out["text"]) if not has_marker(text)]
    candidates = simulate(8 * cli.bo_groups, seed=20_000, group_size=8, text_confounding=text_confounding)
    # best-of-n proper: the 8 candidates of a group written in one context (one W per group)
    shared = simulate(8 * cli.bo_groups, 20_000, 8, text_confounding=text_confounding, shared_context=True)

    phi_eval = extract(held_out["text"], "held-out")
    phi_marked = extract([add_marker(held_out["text"][i]) for i in plain], "held-out + marker")
    phi_candidates = extract(candidates["text"], "best-of-8 candidate")
    # the same candidates with the marker on a random half, whatever their context: as a policy that has learned to
    # emit it would write them (f does not count the marker, so f_candidates stays the truth)
    with_marker = np.random.default_rng(20_001).random(len(candidates["text"])) < 0.5
    decoupled = [
        add_marker(remove_marker(text)) if marked else remove_marker(text)
        for text, marked in zip(candidates["text"], with_marker)
    ]
    phi_decoupled = extract(decoupled, "best-of-8 candidate, marker decoupled")
    phi_shared = extract(shared["text"], "best-of-8 candidate, shared context")
    f_candidates = np.array(candidates["f"]).reshape(cli.bo_groups, 8)
    candidate_sets = {  # CANDIDATE_SETS key -> (features, true f by group)
        "objective": (phi_candidates, f_candidates),
        "objective_marker_decoupled": (phi_decoupled, f_candidates),
        "objective_shared_context": (phi_shared, np.array(shared["f"]).reshape(cli.bo_groups, 8)),
    }

    def best_of_8(head: FrozenFeatureHead, features: np.ndarray, f_groups: np.ndarray) -> float:
        """Mean true f of the argmax-reward candidate of each group of 8."""
        picks = scores(head, features).reshape(cli.bo_groups, 8).argmax(axis=1)
        return float(f_groups[np.arange(cli.bo_groups), picks].mean())

    pool = {  # embedded rows with their outcome and confounder, for timing partial_out at 10k rows
        "phi": [phi_eval, phi_candidates],
        "outcome": [held_out["outcome"], candidates["outcome"]],
        "confounder": [held_out["confounder"], candidates["confounder"]],
    }
    per_seed: dict[str, dict[str, list[float]]] = {m: defaultdict(list) for m in ROWS}
    theta_model: list[dict] = []
    partial_out_seconds: list[float] = []
    for seed in cli.seeds:
        data = simulate(cli.train_rows, seed=seed, text_confounding=text_confounding)
        phi = extract(data["text"], f"training (seed {seed})")
        for key, value in (("phi", phi), ("outcome", data["outcome"]), ("confounder", data["confounder"])):
            pool[key].append(value)
        head_phi = extract.last_layer(phi)
        mean, std = head_phi.mean(axis=0), head_phi.std(axis=0)
        std = np.where(std > 0, std, 1.0)

        def standardised(features: np.ndarray) -> np.ndarray:
            return (extract.last_layer(features) - mean) / std

        dataset = Dataset.from_dict(data)
        for mode in ROWS:
            args = reward_config(mode if mode != "oracle" else "naive", seed, output_dir, feature_source=cli.feature_source)
            observations = read_observations({"train": dataset}, args)["train"]
            if mode == "oracle":
                f_train = np.array(data["f"])
                target_scale = float(f_train.std())
                target = (f_train - f_train.mean()) / target_scale
            else:
                deconfounding_features = (lambda: phi) if cli.feature_source == "model" else (lambda: text_features(args, dataset, []))
                targets = reward_targets(observations, args, deconfounding_features, progress=False)
                target, target_scale = targets.of(observations), targets.std
                if targets.result is not None:
                    effect = targets.report["deconfounding"]["effects"]["confounder"]
                    theta_model.append({"seed": seed, **{k: effect[k] for k in ("theta", "se", "ci_low", "ci_high")}})
                    partial_out_seconds.append(targets.report["seconds"]["partial_out"])
            confounders = observations.confounders
            confounders = (confounders - confounders.mean(axis=0)) / confounders.std(axis=0)
            head = train_head(standardised(phi), target, confounders, args, cli.head_epochs, cli.head_lr)

            reward = scores(head, standardised(phi_eval)) * target_scale  # outcome units
            marked = scores(head, standardised(phi_marked)) * target_scale
            per_seed[mode]["spearman"].append(float(spearmanr(reward, f_eval).statistic))
            per_seed[mode]["marker_effect"].append(float((marked - reward[plain]).mean() / f_eval.std()))
            for key, (features, f_groups) in candidate_sets.items():
                per_seed[mode][key].append(best_of_8(head, standardised(features), f_groups))
        print(
            f"text confounding {text_confounding}, seed {seed}: "
            + ", ".join(
                f"{m} rho {per_seed[m]['spearman'][-1]:.3f} marker {per_seed[m]['marker_effect'][-1]:+.3f} "
                f"bo8 {per_seed[m]['objective'][-1]:.3f} "
                f"(marker decoupled {per_seed[m]['objective_marker_decoupled'][-1]:.3f}, "
                f"shared context {per_seed[m]['objective_shared_context'][-1]:.3f})"
                for m in ROWS
            ),
            flush=True,
        )

    def mean_of(metric: str) -> dict[str, float]:
        return {m: statistics.fmean(per_seed[m][metric]) for m in ROWS}

    def sd_of(metric: str) -> dict[str, float]:
        return {m: (statistics.stdev(per_seed[m][metric]) if len(cli.seeds) > 1 else 0.0) for m in ROWS}

    quality = {
        "text_confounding": text_confounding,
        "spearman": mean_of("spearman"),
        "spearman_sd": sd_of("spearman"),
        "marker_effect": mean_of("marker_effect"),
        "marker_effect_sd": sd_of("marker_effect"),
    }
    for key, (_, f_groups) in candidate_sets.items():
        objective = mean_of(key)
        random_pick, best_pick = float(f_groups.mean()), float(f_groups.max(axis=1).mean())
        gain = {m: objective[m] - random_pick for m in ROWS}
        quality |= {
            key: objective,
            f"{key}_sd": sd_of(key),
            f"{key}_random_pick": random_pick,
            f"{key}_best_pick": best_pick,
            f"{key}_gain_over_random": gain,
            f"{key}_relative_gain_vs_invariance": relative_gain(gain["deconfounded"], gain["invariance"]),
            # what a perfect reward (always the best candidate) would gain over invariance
            f"{key}_relative_gain_vs_invariance_ceiling": relative_gain(best_pick - random_pick, gain["invariance"]),
        }
    return quality | {
        "per_seed": {m: dict(per_seed[m]) for m in ROWS},
        "theta_training_sets": theta_model,
        "f_eval_mean": float(f_eval.mean()),
        "f_eval_std": float(f_eval.std()),
        "held_out_rows": cli.eval_rows,
        "held_out_rows_without_marker": len(plain),
        "best_of_8_groups": cli.bo_groups,
        "partial_out_seconds": partial_out_seconds,
        "_pool": {key: np.concatenate(values) for key, values in pool.items()},
    }


def sweep_row(quality: dict) -> dict:
    """The quality numbers of one simulator setting that the text-confounding sweep compares."""
    row = {key: quality[key] for key in ("spearman", "marker_effect")}
    for key in CANDIDATE_SETS:
        for name in (key, f"{key}_random_pick", f"{key}_best_pick", f"{key}_relative_gain_vs_invariance",
                     f"{key}_relative_gain_vs_invariance_ceiling"):
            row[name] = quality[name]
        row[f"{key}_deconfounded_minus_naive"] = quality[key]["deconfounded"] - quality[key]["naive"]
    return row | {"theta_training_sets": quality["theta_training_sets"]}


def relative_gain(gain: float, baseline_gain: float) -> float:
    """(gain - baseline_gain) / |baseline_gain|, gains over a random pick (f has mean ~0, so ratios of raw best-of-8
    scores are ill-defined)."""
    return (gain - baseline_gain) / abs(baseline_gain)


# ------------------------------------------------------------------------------------------------ 3. speed
def observational_rows(data: dict) -> list[dict]:
    """Rows as in example_configs/data/observational.jsonl: prompt + completion (" " + text)."""
    keep = ("prompt", "outcome", "confounder", "group", "f", "marker")
    return [
        {**{k: data[k][i] for k in keep}, "completion": " " + data["text"][i]} for i in range(len(data["text"]))
    ]


def speed(cli, output_dir: str, cache_dir: str) -> dict:
    rows = Dataset.from_list(observational_rows(simulate(cli.speed_rows, seed=30_000, group_size=4)))
    steps = ["--max_steps", str(cli.speed_steps), "--seed", "0", "--disable_tqdm", "true"]
    seconds: dict[str, list[float]] = {"deconfounded_reward": [], "reward": []}
    pairs_dataset, feature_rates = None, None
    for round_ in range(cli.speed_rounds):
        overrides = [*steps, "--output_dir", f"{output_dir}/d{round_}", "--feature_cache_dir", cache_dir]
        run, trainer, timer = train_in_process(CONFIG, overrides, rows)
        seconds["deconfounded_reward"] += timer.seconds[1:]
        if feature_rates is None:
            args = run.training_args
            feature_rates, stage_theta = feature_pass(trainer, args, cli.stage_rows, f"{output_dir}/stage-features")
            auto_precision = trainer.report["feature_precision"]  # what the config's auto resolved to
            observations = read_observations({"train": rows}, args)["train"]
            ranked = trainer.targets.of(observations)
            pairs = preference_pairs(ranked, observations.groups, args.min_pair_gap)
            chosen_rejected = dpo_rows(rows.to_list(), pairs, ranked, None, observations.rows)
            pairs_dataset = Dataset.from_list(
                [{k: pair[k] for k in ("prompt", "chosen", "rejected")} for pair in chosen_rejected]
            )
            assert len(pairs_dataset) == len(trainer.train_dataset), "reward trainer must see the same pairs"
        del trainer
        overrides = ["--trainer", "reward", *steps, "--output_dir", f"{output_dir}/r{round_}"]
        run, trainer, timer = train_in_process(CONFIG, overrides, pairs_dataset)
        seconds["reward"] += timer.seconds[1:]
        del trainer
        print(
            f"speed round {round_}: median step deconfounded_reward "
            f"{statistics.median(seconds['deconfounded_reward']):.2f} s, reward {statistics.median(seconds['reward']):.2f} s",
            flush=True,
        )
    median = {name: statistics.median(values) for name, values in seconds.items()}
    return {
        "step_seconds": seconds,
        "median_step_seconds": median,
        "feature_rows_per_second": feature_rates,
        "stage_rows_theta_by_feature_autocast": stage_theta,
        "feature_autocast_auto_resolved_to": auto_precision,
        "pairs": len(pairs_dataset),
    }


def feature_pass(trainer, args, n_rows: int, cache_dir: str) -> tuple[dict[str, float], dict[str, float]]:
    """Rows/s of the trainer's feature pass on ``n_rows`` fresh simulated rows, and theta_hat partialled out on its
    features, per ``feature_autocast`` setting (``auto``, the config's own, and ``none``, the model's fp32); each pass
    starts from an empty cache after a warm-up batch that is not timed."""
    rows = Dataset.from_list(observational_rows(simulate(n_rows, seed=50_000, group_size=4)))
    sequences = tokenize_rows(rows, args, trainer.processing_class, "stage")["input_ids"]
    network, pad = trainer.accelerator.unwrap_model(trainer.model), trainer.processing_class.pad_token_id
    observations = read_observations({"train": rows}, args)["train"]
    rates, theta = {}, {}
    for autocast in ("auto", "none"):
        settings = copy.copy(args)
        settings.feature_autocast = autocast
        warm = args.feature_batch_size
        settings.feature_cache_dir = f"{cache_dir}/{autocast}-warm-up"
        text_features(settings, rows.select(range(warm)), sequences[:warm], network, pad, progress=False)
        settings.feature_cache_dir = f"{cache_dir}/{autocast}"
        start = time.perf_counter()
        phi = text_features(settings, rows, sequences, network, pad, progress=False)
        rates[autocast] = n_rows / (time.perf_counter() - start)
        effect = reward_targets(observations, settings, lambda: phi, progress=False).report["deconfounding"]
        theta[autocast] = effect["effects"]["confounder"]["theta"]
        print(f"feature pass, feature_autocast {autocast}: {rates[autocast]:.1f} rows/s, theta {theta[autocast]:.4f}", flush=True)
    return rates, theta


def projection(cli, pool: dict, median_step: float, feature_rates: dict[str, float], output_dir: str) -> dict:
    """deconfound_time_share at 10k rows (see the module docstring)."""
    n_unique = len(pool["phi"])
    # partial_out timed on 10k rows resampled from the embedded rows (their own Y and C). Resampling needs more unique
    # rows than feature dimensions (else ridge reproduces C from phi); the smoke run times it on its few rows instead.
    n_rows = PROJECTION_ROWS if n_unique > 2 * pool["phi"].shape[1] else n_unique
    take = np.random.default_rng(0).choice(n_unique, n_rows, replace=n_rows > n_unique)
    args = reward_config("deconfounded", 0, output_dir, group_column="group")
    observations = Observations(
        rows=np.arange(n_rows),
        outcome=pool["outcome"][take],
        confounders=pool["confounder"][take][:, None],
        confounder_names=["confounder"],
        instrument=None,
        groups=np.arange(n_rows) // 4,  # groups of 4, as in the speed setting (GroupKFold, cluster-robust SEs)
        dropped=0,
    )
    start = time.perf_counter()
    reward_targets(observations, args, lambda: pool["phi"][take], progress=False)
    partial_out_seconds = time.perf_counter() - start

    feature_seconds = {autocast: PROJECTION_ROWS / rate for autocast, rate in feature_rates.items()}
    simulated = simulate(PROJECTION_ROWS, seed=40_000, group_size=4)
    pairs = len(preference_pairs(simulated["outcome"], np.array(simulated["group"]), cli.min_pair_gap))
    steps_per_epoch = math.ceil(pairs / cli.speed_batch)
    epoch_seconds = steps_per_epoch * median_step
    stage_seconds = {autocast: seconds + partial_out_seconds for autocast, seconds in feature_seconds.items()}
    return {
        "rows": PROJECTION_ROWS,
        "feature_rows_per_second_measured": feature_rates,
        "feature_rows_measured": cli.stage_rows,
        "feature_seconds_projected": feature_seconds,
        "partial_out_rows": n_rows,
        "partial_out_unique_rows": n_unique,
        "partial_out_seconds_measured": partial_out_seconds,
        "deconfound_seconds": stage_seconds,
        "pairs_per_epoch": pairs,
        "steps_per_epoch": steps_per_epoch,
        "median_step_seconds_measured": median_step,
        "epoch_seconds_projected": epoch_seconds,
        "share_by_feature_autocast": {autocast: seconds / epoch_seconds for autocast, seconds in stage_seconds.items()},
        "share": stage_seconds["auto"] / epoch_seconds,  # the config's own precision
    }


# ------------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; results go to *_smoke.{json,png}")
    parser.add_argument(
        "--estimator_only",
        action="store_true",
        help="part 1 only (seconds): writes deconfounded_reward_estimator.{json,png}, never the full results",
    )
    parser.add_argument("--estimator_datasets", type=int, default=50)
    parser.add_argument("--estimator_rows", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--train_rows", type=int, default=10_000, help="rows each reward head is trained on")
    parser.add_argument("--eval_rows", type=int, default=600)
    parser.add_argument("--bo_groups", type=int, default=250, help="best-of-8 groups of held-out candidates")
    parser.add_argument(
        "--sweep_text_confounding",
        type=float,
        nargs="*",
        default=[1.0, 2.0],
        help=f"further text_confounding values (the default setting's is {TEXT_CONFOUNDING}) at which part 2 is rerun "
        "on fresh simulated data, to show where best-of-8 separates the modes",
    )
    parser.add_argument("--head_epochs", type=int, default=30)
    parser.add_argument("--head_lr", type=float, default=1e-3)
    parser.add_argument(
        "--feature_source",
        choices=("model", "tfidf"),
        default="model",
        help="features the deconfounding stage of part 2 partials out on (the reward heads always read the SmolLM2 features)",
    )
    parser.add_argument("--speed_rows", type=int, default=96)
    parser.add_argument("--stage_rows", type=int, default=1000, help="rows the feature pass is timed on")
    parser.add_argument("--speed_rounds", type=int, default=5)
    parser.add_argument("--speed_steps", type=int, default=6)
    parser.add_argument(
        "--feature_cache_dir",
        default=None,
        help="cache of the SmolLM2 features of part 2 (default: the trainer's, ~/.cache/trl_causal/features); the "
        "speed run always starts from an empty cache, so its feature time is measured",
    )
    cli = parser.parse_args()
    if cli.smoke:
        cli.estimator_datasets, cli.estimator_rows, cli.seeds, cli.train_rows = 3, 500, [0], 100
        cli.eval_rows, cli.bo_groups, cli.head_epochs = 32, 4, 5
        cli.speed_rows, cli.speed_rounds, cli.speed_steps, cli.stage_rows = 32, 1, 2, 64
    from trl_causal.configuration import parse_run_config

    yaml_args = parse_run_config([], CONFIG).training_args
    cli.speed_batch = yaml_args.per_device_train_batch_size * yaml_args.gradient_accumulation_steps
    cli.min_pair_gap = yaml_args.min_pair_gap
    started = time.perf_counter()
    if cli.estimator_only:
        with tempfile.TemporaryDirectory() as scratch:
            estimator = estimator_study(cli.estimator_datasets, cli.estimator_rows, scratch)
        name = "deconfounded_reward_estimator" + ("_smoke" if cli.smoke else "")
        path = write_results(name, {**estimator, "wall_seconds": time.perf_counter() - started})
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.8))
        plot_estimator(ax, estimator)
        fig.tight_layout()
        fig.savefig(path.with_suffix(".png"), dpi=120)
        print(f"CI coverage {estimator['ci_coverage']:.2f}, median |theta - gamma| {estimator['median_abs_error']:.4f}")
        print(f"wrote {path} and {path.with_suffix('.png')}")
        return

    with tempfile.TemporaryDirectory() as scratch:
        cache_dir = cli.feature_cache_dir
        print(f"1. estimator: {cli.estimator_datasets} datasets of {cli.estimator_rows} rows", flush=True)
        estimator = estimator_study(cli.estimator_datasets, cli.estimator_rows, f"{scratch}/estimator")
        print(
            f"  CI coverage {estimator['ci_coverage']:.2f}, median |theta - gamma| {estimator['median_abs_error']:.4f}",
            flush=True,
        )
        print("2. reward models (frozen SmolLM2 features + linear head)", flush=True)
        extract = FeatureExtractor(cache_dir, f"{scratch}/features-args")
        quality = reward_models(cli, extract, f"{scratch}/heads")
        sweep = {TEXT_CONFOUNDING: sweep_row(quality)}
        for text_confounding in cli.sweep_text_confounding:
            print(f"2b. reward models at text_confounding {text_confounding}", flush=True)
            swept = reward_models(cli, extract, f"{scratch}/heads-{text_confounding}", text_confounding)
            sweep[text_confounding] = sweep_row(swept)
        print("3. speed (LoRA, example_configs/deconfounded_reward.yaml)", flush=True)
        timing = speed(cli, f"{scratch}/speed", f"{scratch}/speed-features")  # fresh cache: features timed
        median_step = timing["median_step_seconds"]["deconfounded_reward"]
        share = projection(cli, quality.pop("_pool"), median_step, timing["feature_rows_per_second"], scratch)
    median = timing["median_step_seconds"]
    step_time_ratio = median["deconfounded_reward"] / median["reward"]
    relative_vs_invariance = quality["objective_relative_gain_vs_invariance"]
    spearman, marker, objective = quality["spearman"], quality["marker_effect"], quality["objective"]
    others = ("naive", "covariate", "invariance")
    targets = {
        "ci_coverage": {"target": ">= 0.90", "measured": estimator["ci_coverage"]},
        "spearman_deconfounded": {"target": ">= 0.9", "measured": spearman["deconfounded"]},
        "spearman_above_baselines": {
            "target": "deconfounded > naive, covariate, invariance",
            "measured": {m: spearman["deconfounded"] - spearman[m] for m in others},
        },
        "marker_effect_deconfounded": {"target": "|effect| <= 0.1", "measured": marker["deconfounded"]},
        "best_of_8_vs_invariance": {
            "target": ">= 0.16 relative (on the gain over a random pick)",
            "measured": relative_vs_invariance,
            "ceiling": quality["objective_relative_gain_vs_invariance_ceiling"],
        },
        "best_of_8_vs_naive": {
            "target": "deconfounded > naive",
            "measured": objective["deconfounded"] - objective["naive"],
        },
        "step_time_ratio": {"target": "<= 1.05", "measured": step_time_ratio},
        "deconfound_time_share": {"target": "<= 0.10 at 10k rows", "measured": share["share"]},
    }
    met = {
        "ci_coverage": estimator["ci_coverage"] >= 0.9,
        "spearman_deconfounded": spearman["deconfounded"] >= 0.9,
        "spearman_above_baselines": all(v > 0 for v in targets["spearman_above_baselines"]["measured"].values()),
        "marker_effect_deconfounded": abs(marker["deconfounded"]) <= 0.1,
        "best_of_8_vs_invariance": relative_vs_invariance >= 0.16,
        "best_of_8_vs_naive": objective["deconfounded"] > objective["naive"],
        "step_time_ratio": step_time_ratio <= 1.05,
        "deconfound_time_share": share["share"] <= 0.10,
    }
    for name in targets:
        targets[name]["met"] = met[name]
    results = {
        "reward_model": (
            "frozen-feature head, not LoRA: a linear single-logit head on the frozen mean-pooled last hidden states "
            "of the embedded SmolLM2-135M-Instruct (CPU time: LoRA training of every mode and seed does not fit a "
            "shared 2-core CPU); targets and loss are the deconfounded_reward trainer's own code (reward_targets, "
            "DeconfoundedRewardTrainer.compute_loss, regression objective); oracle = head fitted to the true f"
        ),
        "feature_source": f"{cli.feature_source} (the features the deconfounding stage of part 2 partials out on)",
        "simulator": {
            "gamma": GAMMA,
            "entanglement": ENTANGLEMENT,
            "text_confounding": TEXT_CONFOUNDING,
            "noise": 1.0,
            "outcome_model": "linear",
        },
        "seeds": cli.seeds,
        "train_rows": cli.train_rows,
        "head": {"epochs": cli.head_epochs, "lr": cli.head_lr, "batch": 32, "optimizer": "AdamW, no weight decay, linear decay to 0"},
        "ci_coverage": estimator["ci_coverage"],
        "theta_median_abs_error": estimator["median_abs_error"],
        "estimator": estimator,
        "spearman": spearman,
        "marker_effect": marker,
        "marker_effect_units": "mean reward(text + marker) - reward(text) over held-out texts without the marker, "
        "rewards in outcome units (head output x the trainer's target std), divided by std(f)",
        "objective": objective,
        "objective_definition": "best-of-8: mean true f of the argmax-reward candidate over groups of 8 held-out "
        "candidates sharing a topic (entangled setting)",
        "objective_relative_gain_vs_invariance": relative_vs_invariance,
        "objective_relative_gain_definition": "(gain_deconfounded - gain_invariance) / |gain_invariance|, gain = mean "
        "f of picks - mean f of all candidates (a random pick); f has mean ~0, so raw ratios are ill-defined. "
        "*_ceiling: the same with a perfect reward (the best candidate of every group) in place of deconfounded",
        "objective_candidate_sets": {
            "objective": "each candidate of a group from its own context W (one W per row), as logged; the target "
            "is judged on these",
            "objective_marker_decoupled": "the same candidates with the marker on a random half, whatever the context",
            "objective_shared_context": "fresh candidates, the 8 of a group written in one context (one W per group, "
            "simulator shared_context): best-of-n for one prompt, where the quality words and the marker no longer "
            "move together across the candidates",
        },
        "text_confounding_sweep": sweep,
        "reward_quality": quality,
        "step_time_ratio": step_time_ratio,
        "speed": {
            **timing,
            "setting": "LoRA r=16 on SmolLM2-135M-Instruct, example_configs/deconfounded_reward.yaml (pairwise, 8 "
            "pairs per step); both trainers on the same pairs and batches, alternating rounds",
        },
        "deconfound_time_share": share["share"],
        "deconfound_time_share_details": {
            **share,
            "definition": "(features + partial_out on 10k rows) / (one training epoch over 10k rows); feature time "
            "projected from the rows/s of the trainer's feature pass on stage_rows fresh rows after a warm-up batch, "
            f"in the config's precision (share; feature_autocast auto, which resolved to "
            f"{timing['feature_autocast_auto_resolved_to']} here) and in the model's fp32 (feature_autocast none; "
            "share_by_feature_autocast); partial_out timed on 10k rows resampled from the embedded rows of part 2; "
            "epoch time projected = steps per epoch x measured median step",
        },
        "targets": targets,
        "wall_seconds": time.perf_counter() - started,
    }
    name = "deconfounded_reward" + ("" if cli.feature_source == "model" else f"_{cli.feature_source}")
    if cli.smoke or smaller_than_committed(name, results, ("seeds", "train_rows")):
        name += "_smoke"  # never over committed results made with more seeds or rows
    path = write_results(name, results)
    plot(results, path.with_suffix(".png"))

    print(f"\n{'mode':<14}{'spearman':>10}{'marker':>10}{'best-of-8':>11}")
    for m in ROWS:
        print(f"{m:<14}{spearman[m]:>10.3f}{marker[m]:>+10.3f}{objective[m]:>11.3f}")
    print(f"{'random pick':<14}{'':>20}{quality['objective_random_pick']:>11.3f}")
    print(f"{'best pick':<14}{'':>20}{quality['objective_best_pick']:>11.3f}")
    print("\nbest-of-8, deconfounded vs invariance (relative gain over a random pick; ceiling = perfect reward) and "
          "deconfounded - naive:")
    print(f"{'text conf.':<11}{'candidates':<18}{'vs inv.':>9}{'ceiling':>9}{'- naive':>9}{'spearman d/n/i':>20}")
    for text_confounding, row in sweep.items():
        rho = row["spearman"]
        for key, label in CANDIDATE_SETS.items():
            print(f"{text_confounding:<11}{label:<18}{row[f'{key}_relative_gain_vs_invariance']:>+9.3f}"
                  f"{row[f'{key}_relative_gain_vs_invariance_ceiling']:>+9.3f}"
                  f"{row[f'{key}_deconfounded_minus_naive']:>+9.3f}"
                  f"{rho['deconfounded']:>8.3f}/{rho['naive']:.3f}/{rho['invariance']:.3f}")
    for name_, target in targets.items():
        value = target["measured"]
        shown = (
            ", ".join(f"{k} {v:+.3f}" for k, v in value.items()) if isinstance(value, dict) else f"{value:.3f}"
        )
        print(f"{name_}: {shown} (target {target['target']}: {'met' if target['met'] else 'MISSED'})")
    print(
        f"deconfound_time_share: {share['share']:.3f} with feature_autocast auto "
        f"({timing['feature_autocast_auto_resolved_to']}), {share['share_by_feature_autocast']['none']:.3f} in fp32"
    )
    print(f"wrote {path} and {path.with_suffix('.png')} in {results['wall_seconds'] / 60:.1f} min")


def plot_estimator(ax, estimator: dict) -> None:
    """Part 1: each simulated dataset's theta_hat and 95% CI, sorted; red where the CI misses gamma."""
    order = np.argsort(estimator["theta"])
    theta = np.array(estimator["theta"])[order]
    low, high = np.array(estimator["ci_low"])[order], np.array(estimator["ci_high"])[order]
    covered = (low <= GAMMA) & (GAMMA <= high)
    x = np.arange(len(theta))
    for mask, color in ((covered, "C0"), (~covered, "C3")):
        ax.errorbar(x[mask], theta[mask], yerr=[(theta - low)[mask], (high - theta)[mask]], fmt="o", ms=2, color=color,
                    lw=0.8)
    ax.axhline(GAMMA, color="k", lw=0.8)
    ax.set_title(f"theta_hat, 95% CI ({estimator['ci_coverage']:.0%} cover gamma)", fontsize=10)
    ax.set_xlabel("simulated dataset (sorted)")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quality = results["reward_quality"]
    fig, axes = plt.subplots(1, 5, figsize=(19, 3.8))
    colors = ["C0", "C1", "C2", "C3", "grey"]
    for ax, (metric, label) in zip(
        axes[:3],
        (("spearman", "Spearman(reward, f), held out"), ("marker_effect", "marker effect / sd(f)"),
         ("objective", "best-of-8: mean f of picks")),
    ):
        ax.bar(ROWS, [quality[metric][m] for m in ROWS], yerr=[quality[f"{metric}_sd"][m] for m in ROWS],
               color=colors, capsize=3)
        ax.set_title(label, fontsize=10)
        ax.tick_params(axis="x", rotation=30)
    axes[0].axhline(0.9, color="k", lw=0.8, ls=":")
    axes[1].axhspan(-0.1, 0.1, color="green", alpha=0.15)
    axes[1].axhline(0, color="k", lw=0.8)
    axes[2].axhline(quality["objective_random_pick"], color="k", lw=0.8, ls=":", label="random pick")
    axes[2].axhline(quality["objective_best_pick"], color="k", lw=0.8, ls="--", label="best pick")
    axes[2].legend(fontsize=8)
    plot_estimator(axes[3], results["estimator"])
    sweep = results["text_confounding_sweep"]
    kappas = sorted(sweep, key=float)  # float keys, or their strings when re-plotted from the JSON
    x = [float(k) for k in kappas]
    for (key, label), color in zip(CANDIDATE_SETS.items(), ("C0", "C1", "C2")):
        axes[4].plot(x, [sweep[k][f"{key}_relative_gain_vs_invariance"] for k in kappas], "o-", color=color,
                     label=label)
        axes[4].plot(x, [sweep[k][f"{key}_relative_gain_vs_invariance_ceiling"] for k in kappas], ":",
                     color=color, lw=0.8)
    axes[4].axhline(0.16, color="k", lw=0.8, ls="--", label="target 0.16")
    axes[4].set_title("best-of-8 vs invariance (dotted: perfect)", fontsize=10)
    axes[4].set_xlabel("simulator text_confounding")
    axes[4].legend(fontsize=8)
    fig.suptitle("deconfounded_reward on the simulator (frozen SmolLM2 features + linear head)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
