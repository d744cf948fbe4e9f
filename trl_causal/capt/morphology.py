"""English noun plurals (the regular rules and a table of common irregular ones), for matching event terms in text
and writing generated problems."""

from __future__ import annotations

VOWELS = "aeiou"
SIBILANT_ENDINGS = ("s", "x", "z", "ch", "sh")


# singular -> plural of common nouns that no rule gives (nouns whose plural is the singular need no entry)
IRREGULAR_PLURALS = {
    "man": "men", "woman": "women", "child": "children", "person": "people", "mouse": "mice", "louse": "lice",
    "goose": "geese", "foot": "feet", "tooth": "teeth", "ox": "oxen", "cactus": "cacti", "fungus": "fungi",
    "nucleus": "nuclei", "stimulus": "stimuli", "larva": "larvae", "criterion": "criteria", "phenomenon": "phenomena",
    "bacterium": "bacteria", "die": "dice",
}
IRREGULAR_SINGULARS = {plural: singular for singular, plural in IRREGULAR_PLURALS.items()}


def _irregular(noun: str, table: dict[str, str]) -> str | None:
    """``noun`` with its last word looked up in ``table`` (case as written: "Mouse" -> "Mice"); None if not there."""
    head, space, last = noun.rpartition(" ")
    found = table.get(last.lower())
    if found is None:
        return None
    if last.isupper() and len(last) > 1:
        found = found.upper()
    elif last[:1].isupper():
        found = found[:1].upper() + found[1:]
    return head + space + found


def _consonant_y(word: str) -> bool:
    return len(word) > 1 and word.endswith("y") and word[-2] not in VOWELS


def pluralize(noun: str) -> str:
    """The plural of ``noun`` (its last word): an irregular one from ``IRREGULAR_PLURALS``, else +es after
    s/x/z/ch/sh, consonant+y -> ies, else +s."""
    irregular = _irregular(noun, IRREGULAR_PLURALS)
    if irregular is not None:
        return irregular
    if noun.endswith(SIBILANT_ENDINGS):
        return noun + "es"
    if _consonant_y(noun):
        return noun[:-1] + "ies"
    return noun + "s"


def plural_forms(term: str) -> list[str]:
    """Every plural spelling accepted for ``term``: +s; +es after s/x/z/ch/sh or o; consonant+y -> ies; f, fe -> ves;
    the irregular plural of its last word ("field mouse" -> "field mice"). (+es after any other ending would read
    "rates" as a plural of "rat".)"""
    forms = [term + "s"]
    irregular = _irregular(term, IRREGULAR_PLURALS)
    if irregular is not None:
        forms.append(irregular)
    if term.endswith((*SIBILANT_ENDINGS, "o")):
        forms.append(term + "es")
    if _consonant_y(term):
        forms.append(term[:-1] + "ies")
    if term.endswith("fe"):
        forms.append(term[:-2] + "ves")
    elif term.endswith("f"):
        forms.append(term[:-1] + "ves")
    return forms


def singular_candidates(word: str) -> list[str]:
    """Singular nouns that ``word`` may be the plural of, the most likely first (inverse of ``plural_forms``)."""
    if word in IRREGULAR_SINGULARS:
        return [IRREGULAR_SINGULARS[word]]
    if word.endswith("ies") and len(word) > 3:
        return [word[:-3] + "y", word[:-1]]
    if word.endswith("ves") and len(word) > 3:
        return [word[:-1], word[:-3] + "fe", word[:-3] + "f"]
    if word.endswith("es") and word[:-2].endswith(SIBILANT_ENDINGS):
        return [word[:-2], word[:-1]]
    if word.endswith("s") and len(word) > 1:
        return [word[:-1]]
    return []


def looks_plural(word: str) -> bool:
    """Whether a word of unknown class reads as a plural noun: it ends in s, but not in ss, us or is
    (``legless``, ``luminous`` and ``nervous`` are adjectives)."""
    return word.endswith("s") and not word.endswith(("ss", "us", "is"))
