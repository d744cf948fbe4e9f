"""Event intervention for CAPT (METHODS.md section 1, step 2): placeholders -> fresh random symbols.

``intervene(template, pool, rng)`` draws one distinct symbol per event and renders prompt and completion
with that one mapping. ``RowInterventions`` makes the draws reproducible without copying the dataset:
row i at draw d (e.g. the epoch) uses ``numpy.random.default_rng([seed, d, i])``, so memory stays O(rows),
every draw sees new symbols, and the same (seed, draw, row) always gives the same text. Held-out rows (evaluation,
prediction) are known by their content instead of their position, so a row gets its symbols wherever it stands.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import string
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, DataError
from .events import PLACEHOLDER_PATTERN, WORD_PATTERN, EventTemplate, TermMatcher, is_matchable
from .morphology import pluralize

SYMBOL_POOLS = ("letters", "nonsense", "pool")
LETTERS: tuple[str, ...] = tuple(string.ascii_uppercase)
CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"


class PoolExhaustedError(DataError):
    """A row has more events than the symbol pool can supply."""


class SymbolPool(ABC):
    """Where symbols come from. ``draw`` returns ``count`` distinct symbols for which ``allowed`` is true."""

    name: str

    @abstractmethod
    def draw(self, count: int, rng: np.random.Generator, allowed: Callable[[str], bool]) -> list[str]:
        """``count`` distinct symbols, uniformly at random; ``PoolExhaustedError`` if too few are allowed."""


class ListPool(SymbolPool):
    """A fixed list of symbols: ``letters`` (A-Z, the paper's default), names taken from other rows (``pool``),
    or a user's list. Symbols are deduplicated ignoring case."""

    def __init__(self, symbols: Iterable[str], name: str = "list"):
        unique: dict[str, str] = {}
        for symbol in symbols:
            symbol = " ".join(str(symbol).split())
            if symbol:
                unique.setdefault(symbol.casefold(), symbol)
        if not unique:
            raise ConfigError(f"The symbol pool {name!r} is empty; give it at least one symbol.")
        self.symbols = list(unique.values())
        self.name = name

    @classmethod
    def from_templates(cls, templates: Iterable[EventTemplate]) -> ListPool:
        """The ``pool`` strategy: every event name of the given (training) rows. A row never receives its own
        names, since ``intervene`` disallows them, so each row gets names from other rows."""
        return cls((name for template in templates for name in template.names.values()), name="pool")

    def __len__(self) -> int:
        return len(self.symbols)

    def draw(self, count: int, rng: np.random.Generator, allowed: Callable[[str], bool]) -> list[str]:
        usable = [symbol for symbol in self.symbols if allowed(symbol)]
        if len(usable) < count:
            raise PoolExhaustedError(
                f"The row has {count} events but the {self.name!r} symbol pool has {len(self.symbols)} symbols, "
                f"{len(usable)} of them usable (the others are the row's own names or words). Use a bigger pool "
                "(e.g. symbol_pool: nonsense) or rows with fewer events."
            )
        return [usable[i] for i in rng.choice(len(usable), size=count, replace=False)]


class NonsensePool(SymbolPool):
    """Random pronounceable strings of ``min_length`` to ``max_length`` letters: consonants and vowels
    alternate, starting with either ("bako", "ifum", "tesiro")."""

    name = "nonsense"

    def __init__(self, min_length: int = 3, max_length: int = 6, max_attempts: int = 10_000):
        if not 1 <= min_length <= max_length:
            raise ConfigError(f"Nonsense symbol lengths {min_length}..{max_length} are invalid; need 1 <= min <= max.")
        self.min_length = min_length
        self.max_length = max_length
        self.max_attempts = max_attempts

    def word(self, rng: np.random.Generator) -> str:
        """One pronounceable string: length uniform in [min_length, max_length], letters alternating C/V."""
        length = int(rng.integers(self.min_length, self.max_length + 1))
        first = int(rng.integers(2))
        letters = [(CONSONANTS, VOWELS)[(first + i) % 2] for i in range(length)]
        return "".join(alphabet[rng.integers(len(alphabet))] for alphabet in letters)

    def draw(self, count: int, rng: np.random.Generator, allowed: Callable[[str], bool]) -> list[str]:
        symbols: dict[str, None] = {}
        for _ in range(self.max_attempts):
            if len(symbols) == count:
                break
            candidate = self.word(rng)
            if allowed(candidate):
                symbols[candidate] = None
        if len(symbols) < count:
            raise PoolExhaustedError(
                f"The row has {count} events but only {len(symbols)} distinct usable nonsense symbols of "
                f"{self.min_length}-{self.max_length} letters were found in {self.max_attempts} attempts. Allow longer "
                "symbols (max_length) or use rows with fewer events."
            )
        return list(symbols)


def build_symbol_pool(spec: str | Sequence[str], templates: Sequence[EventTemplate] = ()) -> SymbolPool:
    """A pool from its config value: "letters", "nonsense", "pool" (names of ``templates``), or a list of symbols."""
    if not isinstance(spec, str):
        return ListPool(spec, name="list")
    if spec == "letters":
        return ListPool(LETTERS, name="letters")
    if spec == "nonsense":
        return NonsensePool()
    if spec == "pool":
        if not any(template.names for template in templates):
            raise ConfigError("The 'pool' symbol pool takes the event names of the training rows; none were given.")
        return ListPool.from_templates(templates)
    close = difflib.get_close_matches(spec, SYMBOL_POOLS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"Unknown symbol pool {spec!r}.{hint} Use one of {', '.join(SYMBOL_POOLS)}, or a list of symbols."
    )


@dataclass(frozen=True)
class InterventionResult:
    """The intervened row: texts with symbols in place of events, and the mapping placeholder key -> symbol."""

    prompt: str
    completion: str | None
    mapping: dict[str, str]


def intervene(template: EventTemplate, pool: SymbolPool, rng: np.random.Generator) -> InterventionResult:
    """Draw one distinct symbol per event and render prompt and completion with that single mapping.

    A symbol never holds one of the row's event names (ignoring case: a ``pool`` name "alarm set by husband" may
    not stand in a row whose event is "husband"), and no form it can be written in (as drawn, capitalised at a
    sentence start, plural) is a word the template text already contains, in exact case: "A" is allowed beside the
    article "a", but "I" not where the text has "Is", which its plural would read as.
    """
    text = PLACEHOLDER_PATTERN.sub(" ", template.prompt + "\n" + (template.completion or ""))
    words = set(WORD_PATTERN.findall(text))
    matchable = [name for name in template.names.values() if is_matchable(name)]
    names = TermMatcher(matchable, ignore_case=True) if matchable else None

    def written_forms(symbol: str) -> set[str]:
        forms = {symbol, pluralize(symbol)}
        return forms | {form[:1].upper() + form[1:] for form in forms}

    def allowed(symbol: str) -> bool:
        if names is not None and names.find(symbol):
            return False
        return not written_forms(symbol) & words

    keys = template.placeholders
    mapping = dict(zip(keys, pool.draw(len(keys), rng, allowed))) if keys else {}
    prompt, completion = template.render(mapping)
    return InterventionResult(prompt, completion, mapping)


def _check_index(value: int, what: str) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer, not {value!r}.")


HELD_OUT_STREAM = 1  # appended to the seed of held-out rows: symbols of their own, never training row i's


def content_key(template: EventTemplate) -> int:
    """A number that identifies a row by its prompt: a hash of the template's prompt and name table (not of its
    completion, which prediction does not see)."""
    text = json.dumps([template.prompt, template.names], sort_keys=True, ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:16], "big")


class RowInterventions:
    """Reproducible fresh symbols for a fixed list of templates: training row ``i`` at draw ``d`` is intervened with
    ``numpy.random.default_rng([seed, d, i])``. ``held_out`` rows (evaluation, prediction) use
    ``[seed, d, content_key, HELD_OUT_STREAM]``: known by their prompt, not their position, so a row's symbols do not
    change when its split is reordered or filtered, or the row is predicted alone, and never repeat those training
    row i had. Use the epoch (or any draw counter) as ``d``: each draw gets new symbols, the same (seed, d, row) the
    same text, and nothing but the templates is stored."""

    def __init__(self, templates: Sequence[EventTemplate], pool: SymbolPool, seed: int = 0, held_out: bool = False):
        _check_index(seed, "seed")
        self.templates = templates
        self.pool = pool
        self.seed = seed
        self.held_out = held_out

    def __len__(self) -> int:
        return len(self.templates)

    def rng(self, row_index: int, draw: int) -> np.random.Generator:
        """The generator of row ``row_index`` at draw ``draw``: ``default_rng([seed, draw, row_index])``, or for
        ``held_out`` rows ``default_rng([seed, draw, content_key, HELD_OUT_STREAM])``."""
        _check_index(row_index, "row_index")
        _check_index(draw, "draw")
        if self.held_out:
            return np.random.default_rng([self.seed, int(draw), content_key(self.templates[row_index]), HELD_OUT_STREAM])
        return np.random.default_rng([self.seed, int(draw), int(row_index)])

    def intervene(self, row_index: int, draw: int) -> InterventionResult:
        """Row ``row_index`` with the symbols of draw ``draw``."""
        if not 0 <= row_index < len(self.templates):
            raise IndexError(f"row_index {row_index} is out of range for {len(self.templates)} rows.")
        return intervene(self.templates[row_index], self.pool, self.rng(row_index, draw))
