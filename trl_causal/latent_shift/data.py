"""The shift benchmark of ``latent_shift``: synthetic binary-sentiment reviews with a spurious feature.

Each row comes from a latent environment u in {env_a, env_b}. The environment leaves a low-level
footprint s(u) in the text and, within a split, is tied to the label:

    P(u = aligned(y)) = agreement,   aligned(positive) = env_a,  aligned(negative) = env_b,

so the spurious feature agrees with the label in a fraction ``agreement`` of the rows (train 0.9;
test 0.9 in distribution, then 0.7, 0.5, 0.3 and 0.1, where the link is reversed). Two kinds:

- ``platform``: the text ends in the platform tag, "amazon.xxx" (env_a) or "yelp.yyy" (env_b);
- ``stopword``: 2-3 extra copies of a stop word, "so" (env_a) or "the" (env_b), are inserted
  between random words ("so" never occurs otherwise).

The label is the sentiment of the review text, except in a fraction ``ambiguous`` of the rows (default
0) whose text is mixed, one clause of each polarity: there the content says nothing about the label,
as in real reviews whose stars the text does not settle, and only the spurious feature is
informative, so a fine-tuned model has a reason to use it. Counts are stratified, so every split has
balanced labels and hits its agreement (and ambiguous fraction) exactly (up to rounding). The test
splits hold the same reviews and differ only in their spurious features.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any, Literal, Sequence

from ..errors import ConfigError, DataError
from ..paths import check_writable_dir

SpuriousKind = Literal["platform", "stopword"]
LABELS: tuple[str, str] = ("positive", "negative")
ALIGNED_ENVIRONMENT = {"positive": "env_a", "negative": "env_b"}
UNALIGNED_ENVIRONMENT = {"positive": "env_b", "negative": "env_a"}
SPURIOUS_VALUES: dict[str, dict[str, str]] = {
    "platform": {"env_a": "amazon.xxx", "env_b": "yelp.yyy"},
    "stopword": {"env_a": "so", "env_b": "the"},
}
TRAIN_AGREEMENT = 0.9
TEST_AGREEMENTS: tuple[float, ...] = (0.9, 0.7, 0.5, 0.3, 0.1)
DEFAULT_VERBALIZER = {"positive": "positive", "negative": "negative"}
DEFAULT_INSTRUCTION = (
    "Read the review and answer with one word, positive or negative.\n\nReview: {text}\n\nSentiment:"
)

# Each domain: its nouns and the adjectives that fit them, on top of the general adjectives.
DOMAINS: dict[str, dict[str, tuple[str, ...]]] = {
    "food": {
        "nouns": (
            "pizza", "pasta", "burger", "steak", "salad", "soup", "dessert", "coffee", "espresso", "sushi",
            "curry", "sandwich", "breakfast", "brunch", "bread", "cheesecake", "lasagna", "ramen", "taco",
            "milkshake", "buffet", "menu", "wine list", "tasting menu",
        ),
        "positive": ("delicious", "tasty", "fresh", "flavorful", "generous", "crispy", "mouthwatering"),
        "negative": ("bland", "stale", "greasy", "soggy", "inedible", "undercooked", "salty"),
    },
    "hospitality": {
        "nouns": (
            "service", "staff", "waiter", "front desk", "room", "bed", "view", "pool", "lobby", "shower",
            "hotel", "location", "balcony", "shuttle", "flight", "seat", "lounge", "cruise", "campsite",
            "atmosphere", "patio", "tour guide",
        ),
        "positive": ("friendly", "welcoming", "spotless", "cozy", "spacious", "relaxing", "attentive"),
        "negative": ("rude", "dirty", "noisy", "cramped", "filthy", "smelly", "chaotic"),
    },
    "electronics": {
        "nouns": (
            "battery", "screen", "charger", "keyboard", "camera", "speaker", "headset", "laptop", "phone",
            "tablet", "router", "printer", "mouse", "monitor", "smartwatch", "sound quality", "remote",
            "blender", "vacuum cleaner", "coffee maker", "microwave", "kettle", "toaster", "drone",
        ),
        "positive": ("reliable", "responsive", "sturdy", "intuitive", "powerful", "sleek", "efficient"),
        "negative": ("defective", "laggy", "flimsy", "buggy", "clunky", "unreliable", "glitchy"),
    },
    "media": {
        "nouns": (
            "movie", "plot", "ending", "soundtrack", "acting", "novel", "album", "audiobook", "documentary",
            "sequel", "video game", "storyline", "podcast", "concert", "musical", "season finale",
        ),
        "positive": ("gripping", "moving", "hilarious", "captivating", "clever", "memorable", "beautiful"),
        "negative": ("boring", "tedious", "predictable", "forgettable", "confusing", "dull", "pointless"),
    },
    "home": {
        "nouns": (
            "jacket", "fabric", "dress", "sweater", "backpack", "mattress", "sofa", "desk chair", "lamp",
            "rug", "umbrella", "suitcase", "raincoat", "wallet", "blanket", "bookshelf",
        ),
        "positive": ("comfortable", "soft", "durable", "elegant", "warm", "well made", "stylish"),
        "negative": ("uncomfortable", "scratchy", "flimsy", "shoddy", "itchy", "badly stitched", "wobbly"),
    },
    "services": {
        "nouns": (
            "delivery", "customer support", "app", "website", "checkout process", "refund process",
            "installation", "repair", "haircut", "massage", "subscription", "driver", "cleaning crew",
            "car wash", "dentist", "plumber",
        ),
        "positive": ("fast", "professional", "helpful", "thorough", "efficient", "affordable", "painless"),
        "negative": ("slow", "unprofessional", "unhelpful", "careless", "overpriced", "sloppy", "painful"),
    },
}
DETERMINERS = ("the", "this", "my", "our", "that")
GENERAL_ADJECTIVES = {
    "positive": (
        "great", "excellent", "wonderful", "fantastic", "amazing", "delightful", "superb", "lovely",
        "outstanding", "impressive", "flawless", "brilliant", "pleasant", "charming", "solid", "terrific",
        "enjoyable", "satisfying", "perfect", "stunning", "polished", "refreshing", "dependable", "superior",
    ),
    "negative": (
        "terrible", "awful", "horrible", "disappointing", "mediocre", "dreadful", "poor", "useless",
        "frustrating", "lousy", "unpleasant", "subpar", "abysmal", "atrocious", "dismal", "pathetic",
        "underwhelming", "miserable", "shabby", "second-rate", "inferior", "regrettable", "appalling", "bad",
    ),
}
INTENSIFIERS = (
    "really", "very", "extremely", "quite", "incredibly", "truly", "remarkably", "pretty", "rather",
    "absolutely", "genuinely", "exceptionally", "surprisingly", "thoroughly", "unbelievably",
    "fairly", "totally", "seriously",
)
CONTEXTS = (
    "for the price", "on our last visit", "after a few days", "compared to last time", "at first",
    "this time", "in my experience", "by any standard", "for a weekday", "during the holidays",
    "after two weeks of use", "on a busy night", "out of the box", "for what it is", "from day one",
    "in the end", "given the reviews", "for a first try",
)
OPENERS = ("Overall", "To be fair", "In short", "Well", "Frankly", "All in all", "Simply put")
# {subj}: determiner + noun; {adj}: optional intensifier + adjective; {ctx}: a context phrase.
AFFIRMED_TEMPLATES = (
    "{subj} was {adj}.",
    "{subj} is {adj}.",
    "{subj} felt {adj}.",
    "{subj} seemed {adj} {ctx}.",
    "I found {subj} {adj}.",
    "{subj} turned out to be {adj}.",
    "{ctx}, {subj} was {adj}.",
    "to be honest, {subj} was {adj}.",
    "we all thought {subj} was {adj}.",
)
# Negation flips the sentiment: these take an adjective of the *opposite* polarity.
NEGATED_TEMPLATES = (
    "{subj} was not {adj}.",
    "{subj} was never {adj}.",
    "{subj} was far from {adj}.",
    "I would not call {subj} {adj}.",
    "{subj} did not feel {adj} {ctx}.",
    "nobody could say {subj} was {adj}.",
    "{subj} is not {adj} at all.",
)
VERDICTS = {
    "positive": (
        "I would recommend it to anyone.", "We will definitely come back.", "It was worth every penny.",
        "I loved every minute of it.", "Five stars from me.", "I would buy it again.", "Highly recommended.",
        "It exceeded my expectations.", "I am very happy with it.", "My whole family enjoyed it.",
        "I keep telling my friends about it.", "It made my day.", "I have no complaints at all.",
        "I could not be happier.", "Nothing went wrong.", "I will not shop anywhere else.",
    ),
    "negative": (
        "I want my money back.", "I will never order again.", "It was a complete waste of money.",
        "I regret buying it.", "Avoid at all costs.", "I would give zero stars if I could.", "It ruined our evening.",
        "I returned it after a week.", "I am very unhappy with it.", "Never again.",
        "It fell short of my expectations.", "I would not recommend it.", "It was not worth the money.",
        "We will not be coming back.", "I cannot recommend it.", "Nothing worked as promised.",
    ),
}
NEUTRAL_SENTENCES = (
    "We went there on a Tuesday.", "I bought it last month.", "It arrived in a brown box.",
    "My sister picked it for me.", "We ordered online.", "I used it for about two weeks.",
    "The place is near the station.", "We were a group of four.", "It was my first time trying it.",
    "I paid with a card.", "This was a birthday gift.", "We stayed for three nights.",
    "I read it over the weekend.", "The order came on Friday.", "I watched it with friends.",
    "We booked it a month ahead.", "My partner chose it.", "I had seen it advertised online.",
    "We parked across the street.", "I tried it after work.",
)


def _sentiment_clause(rng: random.Random, label: str) -> str:
    """One clause whose sentiment is ``label``: an affirmed adjective of that polarity, a negated opposite one, or a verdict."""
    if rng.random() < 0.25:
        return rng.choice(VERDICTS[label])
    negated = rng.random() < 0.3
    polarity = ("negative" if label == "positive" else "positive") if negated else label
    domain = DOMAINS[rng.choice(tuple(DOMAINS))]
    adjective = rng.choice(GENERAL_ADJECTIVES[polarity] + domain[polarity])
    if rng.random() < 0.4:
        adjective = f"{rng.choice(INTENSIFIERS)} {adjective}"
    template = rng.choice(NEGATED_TEMPLATES if negated else AFFIRMED_TEMPLATES)
    clause = template.format(
        subj=f"{rng.choice(DETERMINERS)} {rng.choice(domain['nouns'])}", adj=adjective, ctx=rng.choice(CONTEXTS)
    )
    return clause[0].upper() + clause[1:]


def review_text(rng: random.Random, label: str) -> str:
    """A review of 1-3 sentiment clauses of polarity ``label`` mixed with 0-2 neutral sentences, sometimes opened by a discourse marker."""
    sentences = [_sentiment_clause(rng, label) for _ in range(rng.choices((1, 2, 3), weights=(35, 40, 25))[0])]
    sentences += rng.sample(NEUTRAL_SENTENCES, rng.choices((0, 1, 2), weights=(45, 35, 20))[0])
    rng.shuffle(sentences)
    if rng.random() < 0.2:
        first = sentences[0] if sentences[0].startswith("I ") else sentences[0][0].lower() + sentences[0][1:]
        sentences[0] = f"{rng.choice(OPENERS)}, {first}"
    return " ".join(sentences)


def mixed_review_text(rng: random.Random) -> str:
    """A review whose content is balanced: one positive and one negative clause, with 0-1 neutral sentences."""
    sentences = [_sentiment_clause(rng, label) for label in LABELS]
    sentences += rng.sample(NEUTRAL_SENTENCES, rng.randint(0, 1))
    rng.shuffle(sentences)
    return " ".join(sentences)


def _stratified(rng: random.Random, labels: Sequence[str], fraction: float) -> set[int]:
    """round(fraction * n) row indices, drawn with ``rng`` within each label: floor(fraction * count) of a label's
    count rows, and the rows that rounding the whole split leaves go to the labels with the largest remainders (so a
    split of 10 at 0.5 has 5 such rows, not 2 + 2)."""
    rows_of = {label: [i for i, row_label in enumerate(labels) if row_label == label] for label in LABELS}
    wanted = {label: fraction * len(rows) for label, rows in rows_of.items()}
    counts = {label: math.floor(want) for label, want in wanted.items()}
    by_remainder = sorted(LABELS, key=lambda label: counts[label] - wanted[label])  # largest remainder first
    for label in by_remainder[: round(fraction * len(labels)) - sum(counts.values())]:
        counts[label] += 1
    chosen: set[int] = set()
    for label in LABELS:
        chosen.update(rng.sample(rows_of[label], counts[label]))
    return chosen


def inject_spurious(rng: random.Random, text: str, kind: SpuriousKind, value: str) -> str:
    """The text with its environment's footprint: a platform tag at the end, or 2-3 stop words between random words."""
    if kind == "platform":
        return f"{text} {value}"
    words = text.split()
    for _ in range(rng.randint(2, 3)):
        words.insert(rng.randint(1, len(words) - 1), value)
    return " ".join(words)


def _check_kind(kind: str) -> None:
    if kind not in SPURIOUS_VALUES:
        raise ConfigError(f"spurious kind {kind!r} is unknown; use one of {', '.join(map(repr, SPURIOUS_VALUES))}.")


def generate_shift_dataset(
    n: int, agreement: float, kind: SpuriousKind = "platform", seed: int = 0, ambiguous: float = 0.0
) -> list[dict[str, Any]]:
    """``n`` rows {text, label, spurious, environment, agrees, ambiguous} with P(spurious agrees with label) = ``agreement``.

    Labels are balanced (an odd n gets one extra positive); exactly round(agreement * n) rows come from their
    label's aligned environment and round(ambiguous * n) rows have mixed text (``mixed_review_text``), each
    spread over the labels as evenly as their counts allow. The labels and review texts depend on (n, seed,
    ambiguous) only, so splits that differ only in ``agreement`` or ``kind`` hold the same reviews with
    different spurious features. Deterministic in ``seed``.
    """
    _check_kind(kind)
    for name, value in (("agreement", agreement), ("ambiguous", ambiguous)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name}={value} must be a fraction in [0, 1], e.g. 0.9 for 90%.")
    if n < 1:
        raise ConfigError(f"n={n} must be at least 1.")
    text_rng = random.Random(f"latent_shift/text/{seed}")
    labels = ["positive"] * (n - n // 2) + ["negative"] * (n // 2)
    text_rng.shuffle(labels)
    mixed = _stratified(random.Random(f"latent_shift/ambiguous/{seed}"), labels, ambiguous)
    texts = [mixed_review_text(text_rng) if i in mixed else review_text(text_rng, label) for i, label in enumerate(labels)]

    spurious_rng = random.Random(f"latent_shift/{kind}/{seed}/{agreement}")
    aligned = _stratified(spurious_rng, labels, agreement)
    rows = []
    for i, (text, label) in enumerate(zip(texts, labels)):
        environment = (ALIGNED_ENVIRONMENT if i in aligned else UNALIGNED_ENVIRONMENT)[label]
        value = SPURIOUS_VALUES[kind][environment]
        rows.append(
            {
                "text": inject_spurious(spurious_rng, text, kind, value),
                "label": label,
                "spurious": value,
                "environment": environment,
                "agrees": i in aligned,
                "ambiguous": i in mixed,
            }
        )
    return rows


def split_name(agreement: float) -> str:
    """``test_90`` for agreement 0.9."""
    return f"test_{round(agreement * 100)}"


def make_splits(
    n_train: int,
    n_test: int,
    kind: SpuriousKind = "platform",
    seed: int = 0,
    train_agreement: float = TRAIN_AGREEMENT,
    test_agreements: Sequence[float] = TEST_AGREEMENTS,
    ambiguous: float = 0.0,
) -> dict[str, list[dict[str, Any]]]:
    """{"train": agreement 0.9, "test_90": ..., "test_70": ..., "test_50": ..., "test_30": ..., "test_10": ...}.

    The test splits share one set of reviews (seeded apart from train) and differ only in their
    spurious features, so accuracy differences between them come from the shift alone. ``ambiguous``:
    the fraction of rows with mixed text, in every split.
    """
    splits = {"train": generate_shift_dataset(n_train, train_agreement, kind, 2 * seed, ambiguous)}
    for agreement in test_agreements:
        splits[split_name(agreement)] = generate_shift_dataset(n_test, agreement, kind, 2 * seed + 1, ambiguous)
    return splits


def to_prompt_completion(
    rows: Sequence[dict[str, Any]],
    verbalizer: dict[str, str] | None = None,
    instruction: str = DEFAULT_INSTRUCTION,
    conversational: bool = False,
) -> list[dict[str, Any]]:
    """SFT rows {prompt, completion, label, spurious, environment, agrees, ambiguous}: prompt = instruction with the text, completion = verbalizer[label].

    ``conversational=False``: plain strings, the completion with a leading space (" positive").
    ``conversational=True``: a user message and an assistant message, for chat templates.
    """
    verbalizer = DEFAULT_VERBALIZER if verbalizer is None else verbalizer
    if "{text}" not in instruction:
        raise ConfigError(f"the instruction must contain '{{text}}' where the review goes; got {instruction!r}.")
    sft_rows = []
    for row in rows:
        if row["label"] not in verbalizer:
            raise DataError(
                f"label {row['label']!r} is not in the verbalizer (labels: {sorted(verbalizer)}); add an answer for it."
            )
        prompt, answer = instruction.format(text=row["text"]), verbalizer[row["label"]]
        extra = {key: value for key, value in row.items() if key != "text"}
        if conversational:
            sft_rows.append(
                {
                    "prompt": [{"role": "user", "content": prompt}],
                    "completion": [{"role": "assistant", "content": answer}],
                    **extra,
                }
            )
        else:
            sft_rows.append({"prompt": prompt, "completion": f" {answer}", **extra})
    return sft_rows


def write_jsonl(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """One JSON object per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_splits(
    out: Path,
    n_train: int = 2000,
    n_test: int = 500,
    kind: SpuriousKind = "platform",
    seed: int = 0,
    ambiguous: float = 0.0,
    conversational: bool = False,
) -> dict[str, Path]:
    """Write ``out/train.jsonl`` and ``out/test_XX.jsonl`` of ``make_splits`` as prompt/completion SFT rows; returns {split: path}."""
    if Path(out).exists() and not Path(out).is_dir():
        raise ConfigError(f"--out {out} is a file; the split files go into a directory: name a new or existing one.")
    check_writable_dir(out, "--out")
    return {
        name: write_jsonl(to_prompt_completion(rows, conversational=conversational), Path(out) / f"{name}.jsonl")
        for name, rows in make_splits(n_train, n_test, kind, seed, ambiguous=ambiguous).items()
    }


if __name__ == "__main__":  # the older spelling of `trl-causal shift-data`
    import sys

    from ..cli import main

    raise SystemExit(main(["shift-data", *sys.argv[1:]]))
