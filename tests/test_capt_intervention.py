"""Event intervention for CAPT: symbol pools, one mapping per row, reproducible fresh draws."""

from __future__ import annotations

import re

import numpy as np
import pytest

from trl_causal.capt import (
    LETTERS,
    EventTemplate,
    ListPool,
    NonsensePool,
    PoolExhaustedError,
    ProntoQAEstimator,
    RowInterventions,
    build_symbol_pool,
    estimate_rows,
    generate_prontoqa,
    intervene,
    surviving_names,
)
from trl_causal.errors import ConfigError

TEMPLATE = EventTemplate(
    "Every {e1} is a {e2}. {e2}s are {e3}. {e4} is a {e1}.\nTrue or false: {e4} is {e3}.",
    "{e4} is a {e1}. {e4} is a {e2}. {e4} is {e3}.\nAnswer: True",
    {"e1": "cat", "e2": "feline", "e3": "agile", "e4": "Sally"},
)


def test_letters_give_distinct_symbols_and_one_mapping_for_prompt_and_completion():
    result = intervene(TEMPLATE, build_symbol_pool("letters"), np.random.default_rng(0))
    symbols = list(result.mapping.values())
    assert len(set(symbols)) == 4 and set(symbols) <= set(LETTERS)
    a, b, c, d = (result.mapping[key] for key in ("e1", "e2", "e3", "e4"))
    prompt = rf"Every {a} is an? {b}\. {b}s are {c}\. {d} is an? {a}\.\nTrue or false: {d} is {c}\."
    assert re.fullmatch(prompt, result.prompt)
    assert re.fullmatch(rf"{d} is an? {a}\. {d} is an? {b}\. {d} is {c}\.\nAnswer: True", result.completion)


def test_a_shared_name_table_spends_symbols_only_on_the_placeholders_a_row_uses():
    table = {f"e{i}": f"thing{i}" for i in range(1, 31)}  # 30 names, more than the 26 letters
    template = EventTemplate("Is {e1} bigger than {e2}?", " {e2}.", table)
    result = intervene(template, build_symbol_pool("letters"), np.random.default_rng(0))
    assert set(result.mapping) == {"e1", "e2"} and result.completion == f" {result.mapping['e2']}."


def test_same_seed_draw_row_gives_same_text_and_new_draws_give_new_symbols():
    rows = RowInterventions([TEMPLATE, TEMPLATE], build_symbol_pool("letters"), seed=7)
    again = RowInterventions([TEMPLATE, TEMPLATE], build_symbol_pool("letters"), seed=7)
    assert rows.intervene(1, 3) == again.intervene(1, 3)
    mappings = [tuple(rows.intervene(0, draw).mapping.values()) for draw in range(10)]
    assert len(set(mappings)) == 10  # every epoch sees new symbols
    assert rows.intervene(0, 0) != rows.intervene(1, 0)  # rows draw independently
    assert rows.intervene(0, 0) != RowInterventions([TEMPLATE], build_symbol_pool("letters"), seed=8).intervene(0, 0)
    assert len(rows) == 2 and rows.templates[0] is TEMPLATE  # nothing replicated


def test_row_interventions_reject_bad_indices():
    rows = RowInterventions([TEMPLATE], build_symbol_pool("letters"))
    with pytest.raises(IndexError, match="row_index 1 is out of range for 1 rows"):
        rows.intervene(1, 0)
    with pytest.raises(ValueError, match="draw must be a non-negative integer"):
        rows.intervene(0, -1)


def test_pool_exhaustion_says_how_many_events_and_how_big_the_pool_is():
    names = {f"e{i}": f"term{i}" for i in range(1, 28)}
    template = EventTemplate(" ".join("{" + key + "}" for key in names), None, names)
    with pytest.raises(PoolExhaustedError, match="27 events but the 'letters' symbol pool has 26 symbols"):
        intervene(template, build_symbol_pool("letters"), np.random.default_rng(0))
    with pytest.raises(PoolExhaustedError, match="3 events but the 'list' symbol pool has 2 symbols"):
        template = EventTemplate("{e1} {e2} {e3}", None, {"e1": "x", "e2": "y", "e3": "z"})
        intervene(template, ListPool(["P", "Q"]), np.random.default_rng(0))


def test_symbols_avoid_words_of_the_row_and_event_names():
    template = EventTemplate("A {e1} is {e2}. I think so.", None, {"e1": "B", "e2": "dog"})
    pool = ListPool(["A", "I", "B", "Dog", "X", "Y"])
    for draw in range(30):
        assert set(intervene(template, pool, np.random.default_rng(draw)).mapping.values()) == {"X", "Y"}


def test_symbols_avoid_words_their_written_forms_would_be():
    # "I" would be written "Is" in the plural, and "let" as "Let" at a sentence start: both words of this row.
    template = EventTemplate("{e1}s help. Is it {e2}? Let us see.", None, {"e1": "cat", "e2": "dog"})
    pool = ListPool(["I", "let", "X", "zup"])
    for draw in range(30):
        assert set(intervene(template, pool, np.random.default_rng(draw)).mapping.values()) == {"X", "zup"}


def test_a_multi_word_symbol_holding_an_event_name_of_the_row_is_not_drawn():
    template = EventTemplate("{e1} has an effect on {e2}.", "Yes", {"e1": "husband", "e2": "wife"})
    pool = ListPool(["alarm set by husband", "ringing alarm", "sunny day"])
    for draw in range(30):
        assert set(intervene(template, pool, np.random.default_rng(draw)).mapping.values()) == {"ringing alarm", "sunny day"}


def test_pool_of_names_from_other_rows_never_gives_a_row_its_own_names():
    rows = generate_prontoqa(6, "id", hops=2, seed=0)
    templates = estimate_rows(ProntoQAEstimator(), rows).templates
    pool = build_symbol_pool("pool", templates)
    for index, template in enumerate(templates):
        result = intervene(template, pool, np.random.default_rng(index))
        own = {name.casefold() for name in template.names.values()}
        assert not own & {symbol.casefold() for symbol in result.mapping.values()}


def test_nonsense_symbols_are_pronounceable_and_distinct():
    symbols = NonsensePool().draw(200, np.random.default_rng(0), lambda symbol: True)
    assert len(set(symbols)) == 200
    alternating = re.compile(r"[aeiou]?(?:[bdfgklmnprstvz][aeiou])*[bdfgklmnprstvz]?")
    assert all(3 <= len(symbol) <= 6 and alternating.fullmatch(symbol) for symbol in symbols)


GREEK = "Alpha Beta Gamma Delta Epsilon Zeta Eta Theta Iota Kappa Lambda Omega".split()


@pytest.mark.parametrize("spec", ["letters", "nonsense", "pool", GREEK])
def test_no_original_name_survives_intervention(spec):
    rows = generate_prontoqa(8, "id", hops=(1, 2), seed=1, target="reasoning", distractors=1)
    templates = estimate_rows(ProntoQAEstimator(), rows).templates
    interventions = RowInterventions(templates, build_symbol_pool(spec, templates), seed=0)
    for index, template in enumerate(templates):
        result = interventions.intervene(index, draw=2)
        leaked = EventTemplate(result.prompt, result.completion, template.names)
        assert surviving_names(leaked) == [], (result.prompt, template.names)


def test_inference_template_renders_prompt_only_and_empty_template_is_unchanged():
    result = intervene(EventTemplate("Is {e1} bony?", None, {"e1": "Sally"}), build_symbol_pool("letters"),
                       np.random.default_rng(0))
    assert result.completion is None and re.fullmatch(r"Is [A-Z] bony\?", result.prompt)
    unchanged = intervene(EventTemplate("No events.", "x", {}), build_symbol_pool("letters"), np.random.default_rng(0))
    assert (unchanged.prompt, unchanged.completion, unchanged.mapping) == ("No events.", "x", {})


def test_build_symbol_pool_errors():
    with pytest.raises(ConfigError, match="Did you mean 'letters'"):
        build_symbol_pool("leters")
    with pytest.raises(ConfigError, match="event names of the training rows"):
        build_symbol_pool("pool")
    with pytest.raises(ConfigError, match="empty"):
        build_symbol_pool([" ", ""])


def test_a_list_of_one_symbol_is_a_pool_and_the_unknown_name_error_asks_for_no_more():
    assert build_symbol_pool(["Q"]).symbols == ["Q"]
    with pytest.raises(ConfigError, match=r"Use one of letters, nonsense, pool, or a list of symbols\.$"):
        build_symbol_pool("leters")
