"""Observational text data with a known truth, for tests and benchmarks of deconfounded rewards.

Generative model, row i (all noises independent standard normal unless said):
    W_i                 context the writer sees (season, weekday mood): N(0, 1), one per row, or one per group with
                        ``shared_context`` (candidates written for one prompt in one context, as best-of-n samples are)
    text_i              topic + filler words; quality word q present w.p. sigmoid(logit p0 + kappa sign(w_q) W_i);
                        spurious marker "Happy Monday!" appended w.p. sigmoid(logit 0.24 + eta W_i)
    f_i = f(text_i)     causal score: (sum of weights w_q of quality words present - mu0) / sd0
    Z_i                 optional instrument: N(0, 1)
    U_i                 unobserved shock: N(0, 1)
    C_i = W_i + s Z_i + h U_i                                       (observed confounder)
    latent_i = f_i + gamma C_i + h U_i + noise e_i
    Y_i = latent_i (linear)   or   Y_i ~ Bernoulli(sigmoid(a latent_i)) (logistic click model)
with kappa = ``text_confounding``, eta = ``entanglement``, s = ``instrument_strength``, h = ``hidden_confounding``,
a = ``click_scale``. The marker has no effect on Y; it only co-occurs with high C. Text quality also rises with
W, so the naive slope of Y on C is biased; partialling out the text removes that bias; with h > 0 only the
instrument Z (which moves C but not the text or Y directly) identifies gamma. In the logistic model gamma is an
effect on the logit, not on P(click).
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

import numpy as np

from ..errors import ConfigError

MARKER = "Happy Monday!"
MARKER_BASE_RATE = 0.24
QUALITY_BASE_RATE = 0.25
QUALITY_WORD_WEIGHTS: dict[str, float] = {
    "clear": 1.0,
    "useful": 1.0,
    "concise": 0.9,
    "practical": 0.8,
    "proven": 0.8,
    "detailed": 0.7,
    "honest": 0.7,
    "tested": 0.6,
    "expert": 0.6,
    "fresh": 0.5,
    "clickbait": -1.0,
    "confusing": -0.9,
    "vague": -0.8,
    "outdated": -0.7,
    "shocking": -0.5,
}
FILLER_WORDS = (
    "the a guide tips for your new how to with and about today simple ideas plan week notes story update way get "
    "more from team this our what you need know start make it work all in one list"
).split()
TOPICS = (
    "budget travel", "home cooking", "python testing", "garden care", "running shoes", "remote work",
    "city cycling", "board games", "coffee brewing", "bird watching", "small business", "night photography",
)
FILLERS_PER_TEXT = 6
# f is standardised with the mean and sd of the raw score when every quality word has probability p0 (W = 0).
_WEIGHTS = np.array(list(QUALITY_WORD_WEIGHTS.values()))
RAW_SCORE_MEAN = QUALITY_BASE_RATE * _WEIGHTS.sum()
RAW_SCORE_SD = math.sqrt(QUALITY_BASE_RATE * (1 - QUALITY_BASE_RATE) * (_WEIGHTS**2).sum())


def causal_score(text: str) -> float:
    """f(text) = (sum_q w_q 1[q in text] - mu0) / sd0 over the quality words q; the marker does not count."""
    words = set(re.findall(r"[a-z]+", text.lower()))
    raw_score = sum(weight for word, weight in QUALITY_WORD_WEIGHTS.items() if word in words)
    return (raw_score - RAW_SCORE_MEAN) / RAW_SCORE_SD


def has_marker(text: str, marker: str = MARKER) -> bool:
    return marker in text


def add_marker(text: str, marker: str = MARKER) -> str:
    """The text with the marker appended (as the simulator places it); unchanged if it already has it."""
    return text if has_marker(text, marker) else f"{text} {marker}"


def remove_marker(text: str, marker: str = MARKER) -> str:
    """The text with every occurrence of the marker removed and spaces tidied."""
    return " ".join(text.replace(marker, " ").split())


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def simulate_observational_texts(
    n: int = 2000,
    gamma: float = 1.0,
    entanglement: float = 1.5,
    text_confounding: float = 0.5,
    noise: float = 1.0,
    outcome_model: Literal["linear", "logistic"] = "linear",
    click_scale: float = 1.0,
    instrument_strength: float | None = None,
    hidden_confounding: float = 0.0,
    group_size: int = 1,
    shared_context: bool = False,
    seed: int = 0,
) -> dict[str, list[Any]]:
    """Simulated observational log as a dict of equal-length lists (``datasets.Dataset.from_dict`` takes it).

    Columns: ``text`` (what a reward model scores), ``prompt`` (shared by the rows of a group), ``outcome``,
    ``confounder`` (C), ``instrument`` (Z; only when ``instrument_strength`` is given), ``group`` (id of
    ``group_size`` consecutive rows sharing a prompt), and for evaluation ``f`` (true causal score) and
    ``marker`` (whether the text carries the spurious marker). ``shared_context`` draws one context W per group
    instead of one per row. See the module docstring for the model.
    """
    if n < 1 or group_size < 1:
        raise ConfigError(f"n and group_size must be positive; got n={n}, group_size={group_size}.")
    if outcome_model not in ("linear", "logistic"):
        raise ConfigError(f"outcome_model must be 'linear' or 'logistic'; got {outcome_model!r}.")
    rng = np.random.default_rng(seed)
    groups = np.arange(n) // group_size
    context = rng.standard_normal(groups[-1] + 1)[groups] if shared_context else rng.standard_normal(n)
    quality_words = list(QUALITY_WORD_WEIGHTS)
    word_logits = _logit(QUALITY_BASE_RATE) + text_confounding * np.outer(context, np.sign(_WEIGHTS))
    words_present = rng.random((n, len(quality_words))) < _sigmoid(word_logits)
    marker = rng.random(n) < _sigmoid(_logit(MARKER_BASE_RATE) + entanglement * context)
    group_topics = rng.choice(len(TOPICS), size=groups[-1] + 1)

    texts, prompts = [], []
    for i in range(n):
        topic = TOPICS[group_topics[groups[i]]]
        words = [quality_words[j] for j in np.flatnonzero(words_present[i])]
        words += list(rng.choice(FILLER_WORDS, size=FILLERS_PER_TEXT, replace=False))
        body = " ".join(words[j] for j in rng.permutation(len(words)))
        text = f"{topic.capitalize()}: {body}."
        texts.append(add_marker(text) if marker[i] else text)
        prompts.append(f"Write a headline about {topic}.")
    f = np.array([causal_score(text) for text in texts])

    instrument = rng.standard_normal(n) if instrument_strength is not None else None
    shock = rng.standard_normal(n)
    confounder = context + hidden_confounding * shock
    if instrument is not None:
        confounder = confounder + instrument_strength * instrument
    latent = f + gamma * confounder + hidden_confounding * shock + noise * rng.standard_normal(n)
    if outcome_model == "linear":
        outcome = latent
    else:
        outcome = (rng.random(n) < _sigmoid(click_scale * latent)).astype(float)

    columns: dict[str, list[Any]] = {
        "text": texts,
        "prompt": prompts,
        "outcome": outcome.tolist(),
        "confounder": confounder.tolist(),
    }
    if instrument is not None:
        columns["instrument"] = instrument.tolist()
    columns |= {"group": groups.tolist(), "f": f.tolist(), "marker": marker.tolist()}
    return columns
