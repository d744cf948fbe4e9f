"""Event estimation for CAPT (METHODS.md section 1, step 1): rows -> templates with placeholders.

An ``EventTemplate`` is a row whose events (entities, properties, causal variables) are replaced by
placeholders ``{e1}``, ``{e2}``, ... numbered in order of first appearance, plus the table
``names`` = {"e1": original name, ...}. A plural occurrence becomes ``{eN}s``. The prompt and the
completion of one row share one table, so both are rendered with one mapping.

Estimators are small classes with one method, ``estimate(prompt, completion=None, *, row=None)``;
their options are constructor keyword arguments, so a YAML block ``{name: ..., **options}`` builds
one. Nothing here imports torch, transformers or TRL.
"""

from __future__ import annotations

import itertools
import os
import re
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

from ..errors import ConfigError, DataError, count_rows, describe_rows
from .cladder import cladder_variables
from .morphology import plural_forms, pluralize
from .prontoqa import prontoqa_event_terms
from .rows import MESSAGE_BOUNDARY, decode_json

PLACEHOLDER_PATTERN = re.compile(r"\{(e[1-9][0-9]*)\}")
# A placeholder with the indefinite article before it, if any, which rendering makes agree with the symbol.
_RENDER_PATTERN = re.compile(r"(?:\b(?P<article>[Aa]n?)(?P<gap>[ \t]+))?\{(?P<key>e[1-9][0-9]*)\}(?P<plural>s\b)?")
PLACEHOLDER_KEY = re.compile(r"e[1-9][0-9]*")
# Braces that look meant as a placeholder: {E2}, {e 3}, {e0}, {e02} (validate names those that are not {eN})
_PLACEHOLDER_LIKE = re.compile(r"\{\s*[eE]\s*[0-9]+\s*\}")
# A placeholder glued to letters or digits ("{e1}egory", "pre{e1}"); "{e1}s" is its plural
_PLACEHOLDER_IN_WORD = re.compile(r"\w+\{e[1-9][0-9]*\}\w*|\{e[1-9][0-9]*\}(?!s\b)\w+")
# A word: letters, digits and underscores, hyphenated compounds kept whole ("cold-blooded").
WORD_PATTERN = re.compile(r"\w+(?:-\w+)*")
_MATCHABLE = re.compile(r"\w(?:.*\w)?", re.DOTALL)
_EDGE_PUNCTUATION = re.compile(r"^\W+|\W+$")
_SENTENCE_END = ".!?"


class NoEventsFound(DataError):
    """The estimator found no event in the row."""


class EstimationFailed(NoEventsFound):
    """The estimator could not tell the row's events (e.g. an LLM gave no valid template within its retries): counted
    as a row without events (``on_no_events``), and reported apart from the rows that have none."""


class EstimatorUnavailable(ConfigError):
    """The estimator cannot estimate any row (e.g. the ``llm`` estimator's endpoint refuses its key, or its model does
    not load): no fault of the row it was at."""


class TemplateError(DataError):
    """A template is inconsistent: unknown placeholders, completion placeholders the prompt lacks, or an
    original name left in the text."""


def placeholder_index(key: str) -> int:
    """The number N of placeholder key ``"eN"``."""
    return int(key[1:])


def placeholders_in(text: str) -> list[str]:
    """The placeholder keys used in ``text``, in order of first appearance, without repeats."""
    return list(dict.fromkeys(PLACEHOLDER_PATTERN.findall(text)))


def _starts_sentence(text: str, position: int) -> bool:
    """Whether ``position`` opens a sentence: the text before it is empty, ends with . ! or ?, or ends with a
    line break (spaces ignored)."""
    before = text[:position]
    stripped = before.rstrip()
    return not stripped or stripped[-1] in _SENTENCE_END or "\n" in before[len(stripped) :]


def _vowel_sound(symbol: str) -> bool:
    """Whether a symbol is said with a vowel first: a capital letter said by its name, alone or opening an acronym
    or a letter-digit code ("an F", "an FBI", "an X1", "a U2"), whose name does; else a word starting with a vowel
    letter, save the common exceptions ("a unicorn", "a European", "an hour")."""
    if symbol[:1].isupper() and (len(symbol) == 1 or symbol[1].isupper() or symbol[1].isdigit()):
        return symbol[0] in _VOWEL_SOUND_LETTERS
    word = symbol.lower()
    if word.startswith(_SILENT_H):
        return True
    return word[:1] in "aeiou" and not word.startswith(_CONSONANT_SOUND_VOWELS)


_VOWEL_SOUND_LETTERS = frozenset("AEFHILMNORSX")
_CONSONANT_SOUND_VOWELS = ("uni", "use", "usu", "uti", "eu", "one", "once")  # "a unicorn", "a user", "a one"
_SILENT_H = ("hour", "honest", "honor", "honour", "heir")  # "an hour"


def render_text(text: str, mapping: Mapping[str, str], names: Mapping[str, str] | None = None, before: str = "") -> str:
    """Replace every ``{eN}`` in ``text`` by ``mapping["eN"]``, and every plural ``{eN}s`` by its plural
    (``pluralize``: "foxes", "butterflies"; a letter symbol gets an s).

    A symbol gets a capital first letter where it opens a sentence, or where the original name was
    capitalised (a proper noun such as "Sally"); otherwise it is written as drawn. ``before``: the text that ``text``
    continues (a completion continues its prompt), which decides whether the start of ``text`` opens a sentence.
    An article "a"/"an" just before a placeholder is made to agree with the symbol: "an" before a vowel sound
    ("an apple", "an H"), else "a".
    """
    names = names or {}

    def replace(match: re.Match[str]) -> str:
        key, article = match["key"], match["article"]
        symbol = pluralize(mapping[key]) if match["plural"] else mapping[key]
        if (article is None and _starts_sentence(before + text, len(before) + match.start())) or names.get(key, "")[:1].isupper():
            symbol = symbol[:1].upper() + symbol[1:]
        if article is None:
            return symbol
        agreeing = "an" if _vowel_sound(symbol) else "a"
        return (agreeing.capitalize() if article[0].isupper() else agreeing) + match["gap"] + symbol

    return _RENDER_PATTERN.sub(replace, text)


@dataclass(frozen=True)
class EventTemplate:
    """A row with its events abstracted.

    ``prompt`` and ``completion`` hold placeholders ``{e1}``, ``{e2}``, ... (``{e1}s`` for a plural);
    ``names`` maps each placeholder key ("e1", without braces) to the original name. ``completion`` is
    None at inference, where only the prompt is estimated. A template with empty ``names`` renders the
    row unchanged. ``completion_is_message``: the completion is a message of its own (a chat answer), so its start
    opens a sentence; otherwise it continues the prompt's text. ``ignore_case`` and ``plurals``: the rules of the
    ``TermMatcher`` that found the names, which later searches for them (names left in the text, an answer that names
    an event) follow.
    """

    prompt: str
    completion: str | None = None
    names: dict[str, str] = field(default_factory=dict)
    completion_is_message: bool = False
    ignore_case: bool = False  # how the names are found in text: the estimator's TermMatcher rules
    plurals: bool = True

    def matcher(self, names: Iterable[str]) -> TermMatcher:
        """A ``TermMatcher`` of ``names`` with the rules that found this template's names."""
        return TermMatcher(names, ignore_case=self.ignore_case, plurals=self.plurals)

    @property
    def completion_context(self) -> str:
        """The text the completion continues, for ``render_text``'s sentence starts."""
        return "" if self.completion_is_message else self.prompt

    @property
    def placeholders(self) -> list[str]:
        """The placeholders the text uses, in numeric order: e1, e2, ..., e10 (a name table shared by several rows may
        name more)."""
        return sorted(placeholders_in(self.prompt + "\n" + (self.completion or "")), key=placeholder_index)

    def render(self, mapping: Mapping[str, str]) -> tuple[str, str | None]:
        """Prompt and completion with every placeholder replaced by ``mapping[key]`` (one mapping for both). A template
        without events is its row's text as written, braces and all."""
        if not self.names:
            return self.prompt, self.completion
        missing = [key for key in self.placeholders if key not in mapping]
        if missing:
            raise TemplateError(
                f"The mapping gives no symbol for {', '.join('{' + key + '}' for key in missing)}; it covers "
                f"{', '.join(sorted(mapping, key=placeholder_index)) or 'nothing'}. Map every placeholder of the "
                "template."
            )
        completion = None if self.completion is None else render_text(self.completion, mapping, self.names, self.completion_context)
        return render_text(self.prompt, mapping, self.names), completion

    def validate(self) -> None:
        """Raise ``TemplateError`` listing every problem: a key of ``names`` that is not ``eN``; a placeholder
        without a name; braces meant as one but malformed ({E2}, {e 3}, {e0}); a placeholder inside a word; one name
        under two placeholders; a placeholder in the completion that the prompt lacks; an original name still in the
        text (whole words, plurals included; a lowercase name also in capitalised or upper case)."""
        problems = []
        bad_keys = [key for key in self.names if not PLACEHOLDER_KEY.fullmatch(key)]
        if bad_keys:
            problems.append(f"name-table keys {bad_keys} are not of the form e1, e2, ...")
        in_prompt = placeholders_in(self.prompt)
        in_completion = placeholders_in(self.completion or "")
        unnamed = [key for key in dict.fromkeys(in_prompt + in_completion) if key not in self.names]
        if unnamed:
            problems.append(f"placeholders {', '.join('{' + key + '}' for key in unnamed)} have no name in the table")
        text = self.prompt + "\n" + (self.completion or "")
        malformed = [m for m in dict.fromkeys(_PLACEHOLDER_LIKE.findall(text)) if not PLACEHOLDER_PATTERN.fullmatch(m)]
        if malformed:
            problems.append(f"{', '.join(malformed)} are not placeholders (write {{e1}}, {{e2}}, ...: lowercase e, no space or leading 0)")
        inside = list(dict.fromkeys(_PLACEHOLDER_IN_WORD.findall(text)))
        if inside:
            problems.append(f"placeholders inside a word: {', '.join(map(repr, inside))} (a placeholder stands for a whole word)")
        by_name: dict[str, list[str]] = {}
        for key, name in self.names.items():
            by_name.setdefault(name.strip(), []).append(key)  # "Apple" and "apple" may be two events
        shared = [keys for keys in by_name.values() if len(keys) > 1]
        if shared:
            problems.append(
                "one name under several placeholders: " + "; ".join(f"{', '.join(keys)} all name {self.names[keys[0]]!r}" for keys in shared)
                + " (one placeholder per event, or it gets several symbols)"
            )
        prompt_lacks = [key for key in in_completion if key not in in_prompt]
        if prompt_lacks:
            problems.append(
                f"the completion uses {', '.join('{' + key + '}' for key in prompt_lacks)}, which the prompt lacks "
                "(the model could not know their symbols)"
            )
        survivors = surviving_names(self)
        if survivors:
            problems.append(f"original names still in the text: {', '.join(repr(name) for name in survivors)}")
        if problems:
            raise TemplateError(f"Invalid event template: {'; '.join(problems)}. Prompt template: {self.prompt!r}")


def surviving_names(template: EventTemplate) -> list[str]:
    """The names of ``template`` that still occur in its text outside placeholders."""
    text = PLACEHOLDER_PATTERN.sub(" ", template.prompt + "\n" + (template.completion or ""))
    names = list(dict.fromkeys(template.names.values()))
    matchable = [name for name in names if is_matchable(name)]
    found = {match.term for match in template.matcher(matchable).find(text)} if matchable else set()
    return [name for name in names if name in found or (not is_matchable(name) and name.strip() and name in text)]


def is_matchable(term: str) -> bool:
    """Whether ``term`` can be found as whole words: it starts and ends with a letter, digit or underscore."""
    return bool(_MATCHABLE.fullmatch(term.strip()))


@dataclass(frozen=True)
class TermMatch:
    """One occurrence of ``term`` at ``text[start:end]``; ``plural`` if it was a plural form."""

    start: int
    end: int
    term: str
    plural: bool


def takes_plurals(term: str, ignore_case: bool = False) -> bool:
    """Whether a term's plurals are matched: not for a single character (variables A and I would take the words "As"
    and "Is") nor for a capitalised name ("Jame" would take "James"), unless case is ignored; acronyms ("DNA" ->
    "DNAs") and lowercase terms do."""
    return len(term) > 1 and (ignore_case or not (term[0].isupper() and not term.isupper()))


class TermMatcher:
    """Finds terms in text as whole words, the longest term first.

    Rules: text is split into words (``WORD_PATTERN``); at each word the longest run of words that spells
    a term wins, then the scan continues after it. With ``plurals`` a run may also spell a plural of a
    term (``plural_forms``; ``takes_plurals`` says which terms have them). Case: with ``ignore_case`` case never
    matters; otherwise a term written in lowercase also matches its capitalised and upper-case forms ("wumpus" matches "Wumpuses"), while a
    term with a capital matches only itself and its upper case ("Will" does not match "will"); a lowercase term of
    several words also matches with every word capitalised ("new york" matches "New York").
    """

    def __init__(self, terms: Iterable[str], *, ignore_case: bool = False, plurals: bool = True):
        self.ignore_case = ignore_case
        self.plurals = plurals
        cleaned = list(dict.fromkeys(" ".join(term.split()) for term in terms if term.strip()))
        unmatchable = [term for term in cleaned if not is_matchable(term)]
        if unmatchable:
            raise ConfigError(
                f"Event terms {unmatchable} cannot be matched as whole words: a term must start and end with a "
                "letter, digit or underscore. Remove the surrounding punctuation."
            )
        self._forms: dict[str, tuple[str, bool]] = {}
        for term in cleaned:  # a term itself wins over another term's plural spelled the same
            for variant in self._case_variants(term):
                self._forms.setdefault(self._key(variant), (term, False))
        if plurals:
            for term in (term for term in cleaned if takes_plurals(term, ignore_case)):
                for form in plural_forms(term):
                    for variant in self._case_variants(form):
                        self._forms.setdefault(self._key(variant), (term, True))
        self._max_words = max((len(WORD_PATTERN.findall(term)) for term in cleaned), default=0)

    def _key(self, text: str) -> str:
        """How a spelling is looked up: spaces collapsed, Unicode composed (NFC: a term written "Zoe" + combining
        diaeresis is the text's "Zoë"), case folded under ``ignore_case``."""
        text = unicodedata.normalize("NFC", " ".join(text.split()))
        return text.casefold() if self.ignore_case else text

    def _case_variants(self, form: str) -> set[str]:
        """The spellings a form matches: itself and its upper case; a lowercase form also capitalised at its first
        word ("new york" -> "New york") and at every word ("New York", as names and titles write it)."""
        if self.ignore_case:
            return {form}
        variants = {form, form.upper()}
        if form[:1].islower():
            variants.add(form[0].upper() + form[1:])
            variants.add(re.sub(r"(?<![\w'])[^\W\d_]", lambda letter: letter[0].upper(), form))  # any script
        return variants

    def find(self, text: str) -> list[TermMatch]:
        """All non-overlapping occurrences, left to right."""
        words = [(match.start(), match.end()) for match in WORD_PATTERN.finditer(text)]
        matches: list[TermMatch] = []
        i = 0
        while i < len(words):
            for j in range(min(len(words), i + self._max_words) - 1, i - 1, -1):
                span = text[words[i][0] : words[j][1]]
                if MESSAGE_BOUNDARY in span:  # a term never spans two messages of a conversation
                    continue
                found = self._forms.get(self._key(span))
                if found is not None:
                    matches.append(TermMatch(words[i][0], words[j][1], *found))
                    i = j + 1
                    break
            else:
                i += 1
        return matches


def substitute_terms(text: str, matcher: TermMatcher, key_of: Callable[[str], str | None]) -> str:
    """``text`` with every occurrence of a term replaced by ``{key}`` (``{key}s`` for a plural), key = key_of(term);
    a term whose key is None stays as written."""
    pieces, last = [], 0
    for match in matcher.find(text):
        key = key_of(match.term)
        if key is None:
            continue
        pieces += [text[last : match.start], "{" + key + "}" + ("s" if match.plural else "")]
        last = match.end
    pieces.append(text[last:])
    return "".join(pieces)


def render_names(text: str, template: EventTemplate, mapping: Mapping[str, str]) -> str:
    """``text`` (an answer) written as the intervention of ``template``'s row writes its completion: each event name
    of the row, found by the template's matching rules, replaced by its placeholder's symbol in ``mapping``, e.g.
    "Alice" -> "V"; other text unchanged. The answer continues the prompt as the template's completion does."""
    # the events the row's symbols stand for: a shared name table may name others, which stay as written
    key_of = {name: key for key, name in template.names.items() if is_matchable(name) and key in mapping}
    if not key_of:
        return text
    text = unicodedata.normalize("NFC", text)  # as the row's text was read (template_from_matcher)
    placeholders = substitute_terms(text, template.matcher(key_of), key_of.__getitem__)
    return render_text(placeholders, mapping, template.names, template.completion_context)


def template_from_matcher(prompt: str, completion: str | None, matcher: TermMatcher) -> EventTemplate:
    """Replace every term occurrence by its placeholder (``{eN}``, or ``{eN}s`` for a plural), numbered by first
    appearance in the prompt. The prompt decides the events, as at inference, where it is estimated alone: a term
    keeps its placeholder in the completion, and one that occurs only in the completion stays as written ("Where is
    the Louvre?" -> " In Paris."), also where it holds one of the prompt's events ("panda" in the prompt, "red panda"
    in the completion -> "red {e1}"). The result is validated; ``NoEventsFound`` if no term occurs in the prompt, or if
    the row's own text holds a placeholder's spelling ("'{e1}'.format(x)"), which rendering would replace."""
    # composed Unicode: "Zoe" + a combining diaeresis (macOS file names, some editors) is the word "Zoë"
    prompt, completion = (None if text is None else unicodedata.normalize("NFC", text) for text in (prompt, completion))
    if literal := list(dict.fromkeys(PLACEHOLDER_PATTERN.findall(prompt + "\n" + (completion or "")))):
        raise NoEventsFound(
            f"The row's text itself holds {', '.join('{' + key + '}' for key in literal)}, the spelling of CAPT's event "
            "placeholders, which intervention would replace by a symbol; the row is left without events."
        )
    placeholder_of: dict[str, str] = {}

    def key_of(term: str) -> str:
        return placeholder_of.setdefault(term, f"e{len(placeholder_of) + 1}")

    prompt_template = substitute_terms(prompt, matcher, key_of)
    if not placeholder_of:
        raise NoEventsFound(f"No event term occurs in the row's prompt: {prompt[:200]!r}")
    names = {key: term for term, key in placeholder_of.items()}
    template = EventTemplate(prompt_template, None, names, ignore_case=matcher.ignore_case, plurals=matcher.plurals)
    if completion is not None:  # only the prompt's events: "red panda" there, "panda" in the prompt -> "red {e1}"
        completion = substitute_terms(completion, template.matcher(placeholder_of), placeholder_of.get)
    template = replace(template, completion=completion)
    template.validate()
    return template


class EventEstimator(ABC):
    """Turns a row into an ``EventTemplate``. Options are constructor keyword arguments."""

    name: ClassVar[str]

    @abstractmethod
    def estimate(
        self, prompt: str, completion: str | None = None, *, row: Mapping[str, Any] | None = None
    ) -> EventTemplate:
        """The validated template of one row; ``completion`` is None at inference. ``row`` is the full dataset
        row, for estimators that read other columns. Raises ``NoEventsFound`` when the row has no event."""

    #: how many rows ``estimate_rows`` hands to ``estimate_many`` at once
    batch_size: int = 1

    def estimate_many(
        self, items: Sequence[tuple[str, str | None, Mapping[str, Any]]]
    ) -> list[EventTemplate | NoEventsFound]:
        """Per (prompt, completion, row), its template or the ``NoEventsFound`` it fails with. One row at a time
        here; an estimator that answers rows together (``llm``) overrides it and sets ``batch_size``."""
        outcomes: list[EventTemplate | NoEventsFound] = []
        for prompt, completion, row in items:
            try:
                outcomes.append(self.estimate(prompt, completion, row=row))
            except NoEventsFound as error:
                outcomes.append(error)
        return outcomes

    def check_available(self) -> None:
        """Fail now if the estimator cannot run (``llm``: its endpoint or model); called before any model loads."""

    def release(self) -> None:
        """Free what estimation loaded (``llm``: its local model) once the rows are estimated."""


def _row_field(row: Mapping[str, Any] | None, column: str, estimator: str) -> Any:
    if row is None:
        raise DataError(f"The {estimator!r} event estimator reads the column {column!r}; pass the dataset row as row=.")
    if row.get(column) is None:
        raise DataError(
            f"The {estimator!r} event estimator needs the column {column!r}, which the row lacks; the row has: "
            f"{', '.join(sorted(row))}. Set the estimator's column option to the column that holds it."
        )
    return row[column]


def parse_name_table(value: Any) -> dict[str, str]:
    """A name table from a dict (keys "e1" or "{e1}"), a JSON object string, or a list (item i -> e{i+1}).
    Null values are dropped (Arrow stores dicts with differing keys as one struct)."""
    value = decode_json(value, "The event name table")
    if isinstance(value, Mapping):
        return {str(key).strip("{}"): str(name) for key, name in value.items() if name is not None}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return {f"e{index + 1}": str(name) for index, name in enumerate(value)}
    raise DataError(f"The event name table must be a dict, a JSON object or a list, not {type(value).__name__}.")


class TemplateEstimator(EventEstimator):
    """The row already holds the template: placeholders in its texts and a name table in ``names_column``.

    By default the template texts are the prompt and completion handed to ``estimate``; set
    ``prompt_column`` / ``completion_column`` when they live in other columns (the completion column is
    read only when a completion is being estimated, i.e. not at inference).
    """

    name = "template"

    def __init__(
        self, names_column: str = "event_names", prompt_column: str | None = None, completion_column: str | None = None
    ):
        self.names_column = names_column
        self.prompt_column = prompt_column
        self.completion_column = completion_column

    def estimate(
        self, prompt: str, completion: str | None = None, *, row: Mapping[str, Any] | None = None
    ) -> EventTemplate:
        names = parse_name_table(_row_field(row, self.names_column, self.name))
        if self.prompt_column is not None:
            prompt = str(_row_field(row, self.prompt_column, self.name))
        if completion is not None and self.completion_column is not None:
            completion = str(_row_field(row, self.completion_column, self.name))
        if not placeholders_in(prompt):
            raise NoEventsFound(f"The template prompt holds no placeholder {{e1}}, {{e2}}, ...: {prompt[:200]!r}")
        template = EventTemplate(prompt, completion, names)
        template.validate()
        return template


def read_terms_file(path: str | os.PathLike[str]) -> list[str]:
    """Terms from a text file, one per line; blank lines and lines starting with # are skipped."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(
            f"The vocabulary terms file {str(path)!r} does not exist (resolved to {file.resolve()}). Give an existing "
            "file with one event term per line, or list the terms inline with `terms: [...]`."
        )
    lines = (line.strip() for line in file.read_text(encoding="utf-8-sig").splitlines())  # -sig: a BOM is no text
    return [line for line in lines if line and not line.startswith("#")]


class VocabularyEstimator(EventEstimator):
    """Events are given terms: a list (``terms``), a file with one per line (``terms_file``), and/or every match
    of a regular expression (``pattern``; each distinct matched string, without punctuation at its ends, is a
    term). Matching follows
    ``TermMatcher``: whole words, longest first, case-aware (or ``ignore_case``), plurals (``plurals``).
    Names in the table are the terms as given."""

    name = "vocabulary"

    def __init__(
        self,
        terms: Sequence[str] | str | None = None,
        terms_file: str | os.PathLike[str] | None = None,
        pattern: str | None = None,
        ignore_case: bool = False,
        plurals: bool = True,
    ):
        if isinstance(terms, str) and "," in terms:
            raise ConfigError(
                f"The 'vocabulary' estimator's terms is one string, {terms!r}, which would be a single term; give a "
                "list: `terms: [" + ", ".join(term.strip() for term in terms.split(",") if term.strip()) + "]`."
            )
        listed = [terms] if isinstance(terms, str) else [] if terms is None else list(terms)
        if terms_file is not None:
            listed += read_terms_file(terms_file)
        if not listed and pattern is None:
            raise ConfigError(
                "The 'vocabulary' event estimator needs its events: set `terms` (a list), `terms_file` (one term per "
                "line) or `pattern` (a regular expression)."
            )
        try:
            self.pattern = None if pattern is None else re.compile(pattern)
        except re.error as error:
            raise ConfigError(
                f"The vocabulary pattern {pattern!r} is not a valid regular expression: {error}."
            ) from error
        self.terms = listed
        self.ignore_case = ignore_case
        self.plurals = plurals
        self._matcher = TermMatcher(listed, ignore_case=ignore_case, plurals=plurals)

    def estimate(
        self, prompt: str, completion: str | None = None, *, row: Mapping[str, Any] | None = None
    ) -> EventTemplate:
        matcher = self._matcher
        if self.pattern is not None:
            matches = (match.group(0) for match in self.pattern.finditer(prompt))  # the prompt decides the events
            found = [stripped for match in matches if (stripped := _EDGE_PUNCTUATION.sub("", match))]
            matcher = TermMatcher(self.terms + found, ignore_case=self.ignore_case, plurals=self.plurals)
        return template_from_matcher(prompt, completion, matcher)


class ProntoQAEstimator(EventEstimator):
    """PrOntoQA rows: events are the ontology's entity and property terms and the named individual, read from
    the prompt's own sentences by PrOntoQA's fixed patterns (``prontoqa_event_terms``), so any closed ontology
    works, real, false or invented."""

    name = "prontoqa"

    def estimate(
        self, prompt: str, completion: str | None = None, *, row: Mapping[str, Any] | None = None
    ) -> EventTemplate:
        terms = prontoqa_event_terms(prompt)  # the prompt decides the events, as at inference, where it is all there is
        if not terms:
            raise NoEventsFound(f"No PrOntoQA sentence ('Every X is a Y.', 'Sally is a X.', ...) in: {prompt[:200]!r}")
        return template_from_matcher(prompt, completion, TermMatcher(terms))


class CLadderEstimator(EventEstimator):
    """CLadder rows: events are the story's causal variables, read from ``meta.variable_mapping`` and/or
    ``reasoning.step0`` ("Let X = husband; V2 = wife; Y = alarm clock."), matched case-insensitively, longest
    first. With ``include_values`` the value phrases of meta ("alarm set by husband") are events too, which
    is what the question text mostly uses."""

    name = "cladder"

    def __init__(self, include_values: bool = True, reasoning_column: str = "reasoning", meta_column: str = "meta"):
        self.include_values = include_values
        self.reasoning_column = reasoning_column
        self.meta_column = meta_column

    def estimate(
        self, prompt: str, completion: str | None = None, *, row: Mapping[str, Any] | None = None
    ) -> EventTemplate:
        if row is None:
            raise DataError(
                "The 'cladder' event estimator reads the causal variables from the row's "
                f"{self.reasoning_column!r}.step0 or {self.meta_column!r}.variable_mapping; pass the row as row=."
            )
        variables = cladder_variables(row, reasoning_column=self.reasoning_column, meta_column=self.meta_column)
        terms = [variable.name for variable in variables]
        if self.include_values:
            terms += [value for variable in variables for value in variable.values]
        return template_from_matcher(prompt, completion, TermMatcher(terms, ignore_case=True))


# What becomes of a row without events (``estimate_rows``'s and the config's ``on_no_events``).
NoEventsPolicy = Literal["error", "keep", "drop"]
NO_EVENTS_POLICIES: tuple[str, ...] = get_args(NoEventsPolicy)


@dataclass
class EstimatedRows:
    """Templates of the rows that are kept, with ``row_indices[k]`` the input index of ``templates[k]``;
    ``no_events`` lists the input indices where no event was found (kept unchanged or dropped), ``failed`` those of
    them where the estimator failed (``EstimationFailed``) rather than found none."""

    templates: list[EventTemplate]
    row_indices: list[int]
    no_events: list[int]
    failed: list[int] = field(default_factory=list)


def estimate_rows(
    estimator: EventEstimator,
    rows: Iterable[Mapping[str, Any]],
    *,
    prompt_column: str = "prompt",
    completion_column: str | None = "completion",
    on_no_events: NoEventsPolicy = "keep",
    require_events: bool = False,
    progress: Callable[[int], Any] | None = None,
) -> EstimatedRows:
    """Estimate every row once (before training). A row without events is, by ``on_no_events``: ``keep``-ed
    as an empty template (rendered unchanged), ``drop``-ped, or an ``error`` naming the row index. With
    ``require_events`` (training rows) no row with an event at all is an error: CAPT would change nothing.
    ``progress(n)`` is called as each ``n`` rows are estimated."""
    if on_no_events not in NO_EVENTS_POLICIES:
        raise ConfigError(f"on_no_events is {on_no_events!r}; use one of {', '.join(NO_EVENTS_POLICIES)}.")
    result = EstimatedRows([], [], [])
    first_missing: tuple[int, NoEventsFound] | None = None  # under "error": the first row without events
    numbered = enumerate(rows)
    while chunk := list(itertools.islice(numbered, max(1, estimator.batch_size))):
        items = []
        for index, row in chunk:
            if prompt_column not in row:
                raise DataError(f"Row {index} has no column {prompt_column!r}; it has: {', '.join(sorted(row))}.")
            items.append((row[prompt_column], row.get(completion_column) if completion_column is not None else None, row))
        try:
            outcomes = estimator.estimate_many(items)
        except EstimatorUnavailable as error:
            where = f"row {chunk[0][0]}" if len(chunk) == 1 else f"rows {chunk[0][0]}-{chunk[-1][0]}"
            raise type(error)(f"{error} (The {estimator.name!r} estimator stopped at {where}.)") from error
        except (DataError, ConfigError) as error:  # e.g. a CLadder variable name that cannot be matched as words
            where = f"Row {chunk[0][0]}" if len(chunk) == 1 else f"Rows {chunk[0][0]}-{chunk[-1][0]}"
            raise type(error)(f"{where}: {error}") from error
        if progress is not None:
            progress(len(chunk))
        for (index, _), (prompt, completion, _), outcome in zip(chunk, items, outcomes):
            if isinstance(outcome, NoEventsFound):
                if on_no_events == "error" and first_missing is None:
                    first_missing = index, outcome
                result.no_events.append(index)
                if isinstance(outcome, EstimationFailed):
                    result.failed.append(index)
                if on_no_events == "drop":
                    continue
                outcome = EventTemplate(prompt, completion, {})
            result.templates.append(outcome)
            result.row_indices.append(index)
    if first_missing is not None:
        index, outcome = first_missing
        where = f"Row {index}" if len(result.no_events) == 1 else (
            f"No events in {count_rows(len(result.no_events))} ({describe_rows(result.no_events)}); the first, row {index}"
        )
        raise NoEventsFound(
            f"{where}: {outcome} Set on_no_events to 'keep' or 'drop' to train on such rows unchanged or skip them."
        ) from outcome
    if on_no_events == "drop" and result.no_events and not result.templates:
        keep = "" if require_events else ", or set on_no_events to 'keep' to train on the rows unchanged"
        raise NoEventsFound(
            f"{_why_no_events(estimator.name, result)}, and on_no_events is 'drop': no row is left. Check "
            f"event_estimator and event_estimator_kwargs{keep}."
        )
    if require_events and result.templates and not any(template.names for template in result.templates):
        raise NoEventsFound(
            f"{_why_no_events(estimator.name, result)}, so CAPT would train on the rows unchanged, as plain SFT. "
            "Check event_estimator and event_estimator_kwargs, or train with `trainer: sft`."
        )
    return result


def _why_no_events(estimator: str, result: EstimatedRows) -> str:
    """Why no row has an event: the estimator failed on every row, or found none (in some, failing)."""
    failed = len(result.failed)
    if failed == len(result.no_events):
        return f"The {estimator!r} estimator failed on all {failed} rows (it logs each row's last problem)"
    return (
        f"None of the {len(result.no_events)} rows has an event that the {estimator!r} estimator recognises"
        + (f" ({failed} of them: the estimator failed)" if failed else "")
    )
