"""PrOntoQA (multi-hop deduction over a closed ontology): loaders, the event terms of a row, and a generator.

Two row schemas are read (METHODS.md section 1):

- the original generator's ``Facts`` (string), ``Query`` ("True or false: Sally is not bony."), ``claims``
  (the chain; the answer is True iff the last claim equals the queried statement) and ``next_steps``;
- ``question`` (the facts), ``query``, ``chain_of_thought`` (list of sentences), ``answer`` ("True"/"False").

Both become prompt = ``prompt_template.format(facts=..., query=...)`` and completion = the answer
("True"/"False") or, for ``target="reasoning"``, the chain then "Answer: True".

``generate_prontoqa`` writes problems of our own in the same sentence patterns, with an in-distribution
split over a real ontology (``id``) and two out-of-distribution splits: real words in false relations
(``anti``) and invented words (``nonsense``).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import ConfigError, DataError
from .morphology import looks_plural, pluralize, singular_candidates
from .rows import Target, check_target, read_json_file

Split = Literal["id", "anti", "nonsense"]
SPLITS: tuple[str, ...] = ("id", "anti", "nonsense")
MAX_HOPS = 5
DEFAULT_PROMPT_TEMPLATE = "{facts}\n{query}"
QUERY_PREFIX = "True or false: "

# ----------------------------------------------------------------------------------------------------------------
# Event terms of a row, read by PrOntoQA's sentence patterns

_LABEL_PREFIX = re.compile(r"^(?:[A-Za-z][A-Za-z ]{0,29}:\s*)+")  # "True or false: ", "Q: ", "Facts: "
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = r"[^\W\d_](?:[^\W\d_]|-)*"  # letters of any script ("Zoë", "café") and hyphens
# a word of a term: not one of the sentence pattern's own words, so "a jompus and a brimpus" parses as two terms
_CONTENT_WORD = rf"(?!(?i:a|an|and|or|is|are|not|that)\b){_WORD}"
_TERM = rf"{_CONTENT_WORD}(?: {_CONTENT_WORD}){{0,2}}"


def _conjuncts(group: str) -> str:
    """Terms joined by and / or, each with its own article or "not": "a jompus and a brimpus", "mean or small"."""
    one = rf"(?:not )?(?:(?:a|an) )?{_TERM}"
    return rf"(?P<{group}>{one}(?:,? (?:and|or) {one})*)"


_QUANTIFIED = re.compile(
    rf"(?:every|each|all|no) (?P<subject>{_TERM}) (?P<verb>is|are) (?P<negated>not )?{_conjuncts('objects')}",
    re.IGNORECASE,
)
# PrOntoQA-OOD's compound rule: "Everything that is a zumpus or a rompus is a gorpus."
_EVERYTHING = re.compile(
    rf"everything that is {_conjuncts('conditions')} is (?P<negated>not )?{_conjuncts('objects')}", re.IGNORECASE
)
_GENERIC_PLURAL = re.compile(rf"(?P<subject>{_TERM}) are (?P<negated>not )?{_conjuncts('objects')}")
_INDIVIDUAL = re.compile(rf"(?P<subject>{_WORD}|\d+) is (?P<negated>not )?{_conjuncts('objects')}")
_CONJUNCT = re.compile(r"(?:^|,? (?:and|or) )(?:not )?(?P<article>(?:a|an) )?", re.IGNORECASE)
# the answers of a query: never an event, or "All statements below are true." would rename the answer True
_FUNCTION_WORDS = {"is", "are", "not", "a", "an", "every", "each", "all", "no", "and", "or", "the", "true", "false"}


def _uncapitalize(phrase: str) -> str:
    return phrase[:1].lower() + phrase[1:]


def _is_term(phrase: str) -> bool:
    return not any(word.lower() in _FUNCTION_WORDS for word in phrase.split())


def _objects(conjuncts: str, role_without_article: str) -> list[tuple[str, str]]:
    """(term, role) of each conjunct: a noun after an article, else ``role_without_article``."""
    pieces = _CONJUNCT.split(conjuncts)  # ["", article or None, term, article or None, term, ...]
    return [(term, "noun" if article else role_without_article) for article, term in zip(pieces[1::2], pieces[2::2])]


def _singular(word: str, nouns: set[str]) -> str:
    candidates = singular_candidates(word)
    known = [candidate for candidate in candidates if candidate in nouns]
    return (known or candidates or [word])[0]


def prontoqa_event_terms(text: str) -> list[str]:
    """Event terms of a PrOntoQA text, in order of first appearance: concepts (singular, lowercase), properties
    and named individuals, read from sentences of the forms "Every/Each/All/No X is (not) (a) Y.", "Xs are (not)
    Y(s).", "Sally is (not) (a) Y.", "Everything that is (a) X or (a) Y is (a) Z.", where each Y may be terms joined by
    and / or ("a jompus and a brimpus", "mean or small"); a leading label such as "True or false:" is ignored, and
    the answer words true / false are never terms. In "Xs are Ys" the
    object is a noun if its singular is a concept seen elsewhere in the text or if it reads as a plural
    (``looks_plural``), else a property. Other sentences are ignored.
    """
    # (phrase, role): role is "noun", "plural-noun", "property", "plural-object" or "individual"
    parts: list[tuple[str, str]] = []
    for sentence in _SENTENCE_BREAK.split(text):
        sentence = _LABEL_PREFIX.sub("", sentence.strip()).rstrip(".!? ")
        if match := _QUANTIFIED.fullmatch(sentence):
            plural = match["verb"].lower() == "are"
            subject = (match["subject"], "plural-noun" if plural else "noun")
            found = [subject, *_objects(match["objects"], "plural-object" if plural else "property")]
        elif match := _EVERYTHING.fullmatch(sentence):
            found = [*_objects(match["conditions"], "property"), *_objects(match["objects"], "property")]
        elif match := _GENERIC_PLURAL.fullmatch(sentence):
            found = [(_uncapitalize(match["subject"]), "plural-noun"), *_objects(match["objects"], "plural-object")]
        elif (match := _INDIVIDUAL.fullmatch(sentence)) and not match["subject"][0].islower():  # a name or a number
            found = [(match["subject"], "individual"), *_objects(match["objects"], "property")]
        else:
            continue
        if all(_is_term(phrase) for phrase, _ in found):
            parts += found
    nouns = {phrase for phrase, role in parts if role == "noun"}
    nouns |= {_singular(phrase, nouns) for phrase, role in parts if role == "plural-noun"}
    terms = []
    for phrase, role in parts:
        if role == "plural-noun":
            phrase = _singular(phrase, nouns)
        elif role == "plural-object":
            singular = _singular(phrase, nouns)
            phrase = singular if singular in nouns or looks_plural(phrase) else phrase
        terms.append(phrase)
    return list(dict.fromkeys(terms))


# ----------------------------------------------------------------------------------------------------------------
# Loading the two published schemas


def query_statement(query: str) -> str:
    """The statement a query asks about: "True or false: Sally is not bony." -> "Sally is not bony."."""
    return re.sub(r"^\s*true or false:\s*", "", query, flags=re.IGNORECASE).strip()


def _normalized(statement: str) -> str:
    return " ".join(statement.split()).rstrip(".").strip().casefold()


def answer_from_claims(claims: Sequence[str], query: str) -> str:
    """"True" iff the last claim equals the queried statement (case, spaces and final period ignored)."""
    return "True" if _normalized(claims[-1]) == _normalized(query_statement(query)) else "False"


def prontoqa_completion(answer: str, chain: Sequence[str], target: Target) -> str:
    """``answer`` alone, or (``target="reasoning"``) the chain's sentences then "Answer: <answer>"."""
    return answer if target == "answer" else f"{' '.join(chain)}\nAnswer: {answer}"


def _require(row: Mapping[str, Any], index: int, fields: Sequence[str], schema: str) -> None:
    for name in fields:
        if row.get(name) in (None, "", []):
            raise DataError(
                f"PrOntoQA row {index} ({schema} schema) lacks the field {name!r}; it has: {', '.join(sorted(row))}."
            )


def _chain(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else [str(sentence) for sentence in value]


def _normalized_answer(value: Any, index: int) -> str:
    text = str(value).strip().capitalize()
    if text not in ("True", "False"):
        raise DataError(f"PrOntoQA row {index} has answer {value!r}; expected True or False.")
    return text


def convert_prontoqa_rows(
    rows: Iterable[Mapping[str, Any]], target: Target = "answer", prompt_template: str = DEFAULT_PROMPT_TEMPLATE
) -> list[dict[str, str]]:
    """PrOntoQA rows of either schema (chosen per row: ``Facts`` or ``question``) -> {prompt, completion, answer}.

    Original schema: requires ``Facts``, ``Query``, ``claims``; answer = ``answer_from_claims``; the chain is
    ``claims``. Common schema: requires ``question``, ``query``, ``answer``, and ``chain_of_thought`` for
    ``target="reasoning"``. A missing field raises ``DataError`` naming the row index and the field.
    """
    check_target(target)
    converted = []
    for index, row in enumerate(rows):
        if "Facts" in row:
            _require(row, index, ("Facts", "Query", "claims"), "Facts/Query/claims")
            facts, query, chain = row["Facts"], row["Query"], _chain(row["claims"])
            answer = answer_from_claims(chain, query)
        elif "question" in row:
            needed = ("question", "query", "answer") + (("chain_of_thought",) if target == "reasoning" else ())
            _require(row, index, needed, "question/query/chain_of_thought/answer")
            facts, query, chain = row["question"], row["query"], _chain(row.get("chain_of_thought") or [])
            answer = _normalized_answer(row["answer"], index)
        else:
            raise DataError(
                f"PrOntoQA row {index} has neither 'Facts' (with 'Query', 'claims') nor 'question' (with 'query', "
                f"'chain_of_thought', 'answer'); it has: {', '.join(sorted(row))}."
            )
        prompt = prompt_template.format(facts=str(facts).strip(), query=str(query).strip())
        converted.append({"prompt": prompt, "completion": prontoqa_completion(answer, chain, target), "answer": answer})
    return converted


def load_prontoqa_file(
    path: str | os.PathLike[str], target: Target = "answer", prompt_template: str = DEFAULT_PROMPT_TEMPLATE
) -> list[dict[str, str]]:
    """Convert a PrOntoQA file: ``.jsonl``, a JSON list of rows, one row object, or the generator's JSON object of
    examples ({"example1": {"in_context_example0": ..., "test_example": row}, ...}, of which the test examples are read)."""
    data = read_json_file(path, "PrOntoQA")
    if isinstance(data, Mapping):
        if "question" in data or "Facts" in data:  # a single row
            data = [data]
        elif all(isinstance(example, Mapping) for example in data.values()):
            data = [example.get("test_example", example) for example in data.values()]
        else:
            raise DataError(
                f"{path} holds a JSON object that is neither one PrOntoQA row ('question' or 'Facts') nor the "
                f"generator's examples (every value an object); its keys: {', '.join(list(map(str, data))[:5])}."
            )
    return convert_prontoqa_rows(data, target, prompt_template)


# ----------------------------------------------------------------------------------------------------------------
# Generator: a real ontology (true facts), false relations over its words, and invented words

# child -> parent: every edge is true.
REAL_IS_A: dict[str, str] = {
    "tabby": "cat", "cat": "feline", "feline": "carnivore", "carnivore": "mammal", "mammal": "vertebrate",
    "vertebrate": "animal", "poodle": "dog", "dog": "canine", "canine": "carnivore", "cow": "ruminant",
    "ruminant": "mammal", "sparrow": "songbird", "songbird": "bird", "eagle": "raptor", "raptor": "bird",
    "bird": "vertebrate", "frog": "amphibian", "amphibian": "vertebrate", "cobra": "snake", "snake": "reptile",
    "reptile": "vertebrate", "butterfly": "lepidopteran", "lepidopteran": "insect", "insect": "arthropod",
    "arthropod": "invertebrate", "invertebrate": "animal", "tarantula": "spider", "spider": "arachnid",
    "arachnid": "arthropod", "prime number": "natural number", "natural number": "integer",
    "integer": "rational number", "rational number": "real number", "real number": "number",
    "fraction": "rational number",
}
# concept -> (property, holds): true facts; a concept inherits its ancestors' facts (the nearest wins). Most
# properties have holders of both truths, so a row can state the opposite fact of another concept as a distractor.
REAL_PROPERTIES: dict[str, tuple[tuple[str, bool], ...]] = {
    "animal": (("multicellular", True), ("abstract", False)),
    "vertebrate": (("bony", True),),
    "invertebrate": (("bony", False),),
    "mammal": (
        ("warm-blooded", True), ("furry", True), ("cold-blooded", False), ("feathered", False), ("scaly", False),
        ("slimy", False), ("legless", False),
    ),
    "carnivore": (("carnivorous", True), ("herbivorous", False)),
    "feline": (("agile", True),),
    "cat": (("small", True), ("large", False)),
    "tabby": (("striped", True),),
    "dog": (("loyal", True),),
    "poodle": (("curly", True), ("striped", False)),
    "ruminant": (("herbivorous", True), ("carnivorous", False)),
    "cow": (("large", True), ("small", False), ("venomous", False)),
    "bird": (("feathered", True), ("warm-blooded", True), ("cold-blooded", False), ("furry", False), ("legless", False)),
    "songbird": (("small", True), ("large", False)),
    "raptor": (("carnivorous", True),),
    "eagle": (("large", True), ("small", False)),
    "amphibian": (("cold-blooded", True), ("warm-blooded", False), ("scaly", False), ("feathered", False)),
    "frog": (("slimy", True), ("hairy", False)),
    "reptile": (("cold-blooded", True), ("scaly", True), ("warm-blooded", False), ("furry", False), ("feathered", False)),
    "snake": (("legless", True), ("hairy", False)),
    "cobra": (("venomous", True),),
    "arthropod": (("segmented", True),),
    "insect": (("six-legged", True), ("eight-legged", False)),
    "lepidopteran": (("winged", True),),
    "butterfly": (("colorful", True),),
    "arachnid": (("eight-legged", True), ("six-legged", False)),
    "spider": (("venomous", True), ("winged", False)),
    "tarantula": (("hairy", True),),
    "number": (("abstract", True), ("multicellular", False)),
    "real number": (("imaginary", False),),
    "rational number": (("irrational", False),),
    "integer": (("fractional", False),),
    "natural number": (("negative", False),),
    "prime number": (("composite", False),),
    "fraction": (("fractional", True),),
}
REAL_CONCEPTS: tuple[str, ...] = tuple(dict.fromkeys([*REAL_IS_A, *REAL_IS_A.values()]))
ADJECTIVES: tuple[str, ...] = tuple(dict.fromkeys(p for facts in REAL_PROPERTIES.values() for p, _ in facts))
INDIVIDUALS = ("Sally", "Max", "Alex", "Rex", "Stella", "Fae", "Wren", "Polly", "Sam", "Lily", "Leo", "Nora")
_ONSETS = ("b", "d", "g", "j", "l", "n", "r", "s", "t", "v", "w", "y", "z", "br", "gr", "sh", "st", "tr", "pl")
_NUCLEI = ("a", "e", "i", "o", "u")
_CODAS = ("mp", "rp", "lp", "mb", "rm", "lm", "rb")


def real_ancestors(concept: str) -> list[str]:
    """The concept's ancestors in ``REAL_IS_A``, nearest first."""
    ancestors = []
    while concept in REAL_IS_A:
        concept = REAL_IS_A[concept]
        ancestors.append(concept)
    return ancestors


def real_properties(concept: str) -> dict[str, bool]:
    """Every true (property -> holds) fact of ``concept``, its own and inherited (the nearest concept wins)."""
    facts: dict[str, bool] = {}
    for node in [concept, *real_ancestors(concept)]:
        for prop, holds in REAL_PROPERTIES.get(node, ()):
            facts.setdefault(prop, holds)
    return facts


def _draw_real_fact(rng: np.random.Generator, concept: str, holds: bool | None = None) -> tuple[str, bool]:
    """A true fact of ``concept`` (of truth ``holds`` when given)."""
    facts = [(prop, truth) for prop, truth in sorted(real_properties(concept).items()) if holds in (None, truth)]
    return facts[rng.integers(len(facts))]


@functools.cache
def real_holders(prop: str, holds: bool) -> frozenset[str]:
    """The real concepts of which "``prop``" has truth ``holds`` (own or inherited fact)."""
    return frozenset(concept for concept in REAL_CONCEPTS if real_properties(concept).get(prop) is holds)


def nonsense_noun(rng: np.random.Generator) -> str:
    """A PrOntoQA-style invented noun: onset + vowel + coda + "us" ("wumpus", "zorpus", "brimpus")."""
    return "".join(str(rng.choice(part)) for part in (_ONSETS, _NUCLEI, _CODAS)) + "us"


@dataclass(frozen=True)
class Rule:
    """"Every ``subject`` is (not) ``obj``": ``obj`` is a concept if ``is_concept``, else a property."""

    subject: str
    obj: str
    is_concept: bool
    holds: bool = True


def _article(noun: str) -> str:
    return "an" if noun[0] in "aeiou" else "a"


def _capitalize(sentence: str) -> str:
    return sentence[0].upper() + sentence[1:]


def rule_sentence(rule: Rule, rng: np.random.Generator) -> str:
    """One of PrOntoQA's surface forms, drawn: "Every X is (not) (a) Y.", "Each X is ...", "Xs are (not) Y(s)."."""
    negation = "" if rule.holds else "not "
    form = rng.integers(3)
    if form == 2:
        obj = pluralize(rule.obj) if rule.is_concept else rule.obj
        return _capitalize(f"{pluralize(rule.subject)} are {negation}{obj}.")
    obj = f"{_article(rule.obj)} {rule.obj}" if rule.is_concept else rule.obj
    return f"{('Every', 'Each')[form]} {rule.subject} is {negation}{obj}."


def _statement(name: str, obj: str, is_concept: bool, holds: bool = True) -> str:
    return f"{name} is {'' if holds else 'not '}{f'{_article(obj)} {obj}' if is_concept else obj}."


def _draw_new(rng: np.random.Generator, candidates: Sequence[str], taken: set[str]) -> str | None:
    free = [candidate for candidate in candidates if candidate not in taken]
    return str(free[rng.integers(len(free))]) if free else None


def _new_nonsense(rng: np.random.Generator, taken: set[str]) -> str:
    while (noun := nonsense_noun(rng)) in taken:
        pass
    return noun


def _chain_and_property(rng: np.random.Generator, split: str, hops: int, holds: bool) -> tuple[list[str], str]:
    """The individual's concepts c0 .. c_{hops-1} (each is-a the next) and the property that the rule about the
    last one states with truth ``holds``. ``holds`` is drawn per row in every split, so neither the rule's nor
    the query's "not" says anything about the answer. id: a real path and a true fact of that truth that some
    concept outside the path holds the other way (the first distractor states it); anti: a false path and a
    real fact of the opposite truth, flipped; nonsense: invented nouns and any adjective."""
    if split == "id":
        options = [
            (chain, prop)
            for start in REAL_CONCEPTS
            if len(real_ancestors(start)) >= hops - 1
            for chain in [[start, *real_ancestors(start)[: hops - 1]]]
            for prop, truth in sorted(real_properties(chain[-1]).items())
            if truth is holds and real_holders(prop, not holds) - set(chain)
        ]
        return options[rng.integers(len(options))]
    if split == "anti":
        chain = [REAL_CONCEPTS[rng.integers(len(REAL_CONCEPTS))]]
        while len(chain) < hops:
            false_parents = [c for c in REAL_CONCEPTS if c not in real_ancestors(chain[-1])]
            chain.append(_draw_new(rng, false_parents, set(chain)))
        return chain, _draw_real_fact(rng, chain[-1], not holds)[0]
    invented: list[str] = []
    for _ in range(hops):
        invented.append(_new_nonsense(rng, set(invented)))
    return invented, str(rng.choice(ADJECTIVES))


def _distractors(
    rng: np.random.Generator, split: str, chain: list[str], prop: str, holds: bool, count: int
) -> list[Rule]:
    """Up to ``count`` rules whose subjects are outside the chain (so they cannot change the answer), in one
    pattern for every split: first "Every D is (not) <prop>" with the opposite truth, then alternately an is-a
    rule into the chain and another property. id: true facts only; anti: false ones; nonsense: invented nouns."""
    rules: list[Rule] = []
    for index in range(count):
        used = set(chain) | {rule.subject for rule in rules}
        if split == "nonsense":
            subject = _new_nonsense(rng, used)
            parents = chain
        else:
            if index == 0 and split == "id":
                candidates = sorted(real_holders(prop, not holds))
            elif index % 2 and split == "id":  # concepts below a chain concept, when there are any
                candidates = [c for c in REAL_CONCEPTS if set(real_ancestors(c)) & set(chain)] or REAL_CONCEPTS
            else:
                candidates = REAL_CONCEPTS
            subject = _draw_new(rng, candidates, used)
            if subject is None:  # every real concept is already used
                break
            parents = [c for c in chain if (c in real_ancestors(subject)) is (split == "id")]
        if index == 0:
            rules.append(Rule(subject, prop, False, not holds))
        elif index % 2 and parents:
            rules.append(Rule(subject, parents[rng.integers(len(parents))], True))
        elif split == "nonsense":
            rules.append(Rule(subject, str(rng.choice(ADJECTIVES)), False, bool(rng.integers(2))))
        else:
            other, truth = _draw_real_fact(rng, subject)
            rules.append(Rule(subject, other, False, truth if split == "id" else not truth))
    return rules


def _generate_row(
    rng: np.random.Generator,
    split: str,
    hops: int,
    answer: bool,
    distractors: int,
    target: Target,
    prompt_template: str,
) -> dict[str, Any]:
    holds = bool(rng.integers(2))
    chain, prop = _chain_and_property(rng, split, hops, holds)
    name = str(rng.choice(INDIVIDUALS))
    rules = [Rule(chain[i], chain[i + 1], True) for i in range(hops - 1)] + [Rule(chain[-1], prop, False, holds)]
    rules_and_distractors = rules + _distractors(rng, split, chain, prop, holds, distractors)
    sentences = {rule: rule_sentence(rule, rng) for rule in rules_and_distractors}
    stated = list(sentences.values())
    facts = [stated[i] for i in rng.permutation(len(stated))]
    facts.append(_statement(name, chain[0], True))
    query = QUERY_PREFIX + _statement(name, prop, False, holds if answer else not holds)
    chain_of_thought = [_statement(name, chain[0], True)]
    for rule in rules:
        chain_of_thought += [sentences[rule], _statement(name, rule.obj, rule.is_concept, rule.holds)]
    answer_text = "True" if answer else "False"
    facts_text = " ".join(facts)
    events = {name} | {term for rule in sentences for term in (rule.subject, rule.obj)}
    return {
        "prompt": prompt_template.format(facts=facts_text, query=query),
        "completion": prontoqa_completion(answer_text, chain_of_thought, target),
        "answer": answer_text,
        "split": split,
        "hops": hops,
        "events": sorted(events),
        "question": facts_text,
        "query": query,
        "chain_of_thought": chain_of_thought,
    }


def generate_prontoqa(
    n: int,
    split: Split = "id",
    hops: int | Sequence[int] = 3,
    seed: int = 0,
    target: Target = "answer",
    distractors: int = 2,
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
) -> list[dict[str, Any]]:
    """``n`` PrOntoQA-style True/False deduction problems, deterministic in ``seed``.

    Row i proves a property of a named individual in ``hops`` rule applications (hops - 1 is-a rules, then
    one property rule); a sequence of hops is cycled over the rows. Answers are balanced (True for exactly
    ceil(n/2) rows, in a seeded order). Each row: prompt, completion (``target``), answer, split, hops,
    events (its event terms: concepts, properties, the individual), and question / query /
    chain_of_thought in the common PrOntoQA schema (so ``convert_prontoqa_rows`` reproduces it).
    """
    if split not in SPLITS:
        raise ConfigError(f"split is {split!r}; use one of {', '.join(SPLITS)}.")
    check_target(target)
    hop_cycle = [hops] if isinstance(hops, int) else list(hops)
    if not hop_cycle or any(not 1 <= h <= MAX_HOPS for h in hop_cycle):
        raise ConfigError(f"hops is {hops!r}; use numbers from 1 to {MAX_HOPS}.")
    if n < 0 or distractors < 0:
        raise ConfigError(f"n ({n}) and distractors ({distractors}) must not be negative.")
    split_code = SPLITS.index(split)
    true_rows = np.random.default_rng([seed, split_code]).permutation(n) < (n + 1) // 2
    return [
        _generate_row(
            np.random.default_rng([seed, split_code, index]),
            split,
            hop_cycle[index % len(hop_cycle)],
            bool(true_rows[index]),
            distractors,
            target,
            prompt_template,
        )
        for index in range(n)
    ]


CHAT_INSTRUCTION = "\nAnswer with True or False."


def to_chat_rows(rows: Sequence[Mapping[str, Any]], instruction: str = CHAT_INSTRUCTION) -> list[dict[str, Any]]:
    """Prompt/completion as chat messages (user: prompt + instruction; assistant: completion), so an
    instruct model's chat template applies; keeps ``answer``, ``split``, ``hops`` and ``events``."""
    return [
        {
            "prompt": [{"role": "user", "content": row["prompt"] + instruction}],
            "completion": [{"role": "assistant", "content": row["completion"]}],
            **{key: row[key] for key in ("answer", "split", "hops", "events") if key in row},
        }
        for row in rows
    ]
