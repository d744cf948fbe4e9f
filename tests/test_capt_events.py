"""Event estimation for CAPT: templates, term matching, the built-in estimators and their registration."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from trl_causal.capt import (
    render_names,
    CLadderEstimator,
    EventTemplate,
    LLMEstimator,
    NoEventsFound,
    ProntoQAEstimator,
    TemplateError,
    TemplateEstimator,
    TermMatcher,
    VocabularyEstimator,
    estimate_rows,
    generate_prontoqa,
    placeholders_in,
    prontoqa_event_terms,
    surviving_names,
)
from trl_causal.capt.morphology import plural_forms, singular_candidates
from trl_causal.errors import ConfigError, DataError
from trl_causal.plugins import PluginManager

CLADDER_ROW = {
    "given_info": "For husbands that don't set the alarm, the probability of ringing alarm is 8%. Wives matter.",
    "question": "Will alarm set by husband increase the chance of ringing alarm?",
    "answer": "yes",
    "meta": {
        "story_id": "alarm",
        "variable_mapping": {
            "Xname": "husband", "X1": "alarm set by husband", "X0": "alarm not set by husband",
            "Yname": "alarm clock", "Y1": "ringing alarm", "Y0": "silent alarm",
        },
    },
    "reasoning": {"step0": "Let V2 = wife; X = husband; Y = alarm clock.", "end": "yes"},
}


# --- templates ------------------------------------------------------------------------------------------------


def test_render_uses_one_mapping_for_prompt_and_completion():
    names = {"e1": "cat", "e2": "feline", "e3": "Sally"}
    template = EventTemplate("Every {e1} is a {e2}. {e3} is an {e1}.", "{e3} is a {e2}.", names)
    prompt, completion = template.render({"e1": "ovi", "e2": "bako", "e3": "zet"})
    assert prompt == "Every ovi is a bako. Zet is an ovi."  # article agrees; proper noun stays capitalised
    assert completion == "Zet is a bako."


def test_article_agrees_with_how_a_letter_symbol_is_said():
    template = EventTemplate("Sam is a {e1}. Max is an {e2}. Rex is a {e3}.", None, {"e1": "cat", "e2": "owl", "e3": "dog"})
    prompt, _ = template.render({"e1": "H", "e2": "U", "e3": "ur"})
    assert prompt == "Sam is an H. Max is a U. Rex is an ur."


@pytest.mark.parametrize(
    ("symbol", "article"),
    [("apple", "an"), ("unicorn", "a"), ("user", "a"), ("European", "a"), ("one", "a"), ("hour", "an"), ("honest", "an"), ("hat", "a")],
)
def test_render_article_follows_the_sound_of_the_symbol(symbol, article):
    assert EventTemplate("Max is a {e1}.", None, {"e1": "cat"}).render({"e1": symbol})[0] == f"Max is {article} {symbol}."


def test_render_capitalises_symbols_that_open_a_sentence_and_keeps_plural_suffix():
    template = EventTemplate("{e1}s are {e2}. Wow.\n{e1} is {e2}.", None, {"e1": "wumpus", "e2": "bony"})
    prompt, completion = template.render({"e1": "tap", "e2": "ruk"})
    assert prompt == "Taps are ruk. Wow.\nTap is ruk."
    assert completion is None


def test_render_without_symbol_for_a_placeholder_names_it():
    with pytest.raises(TemplateError, match=r"\{e2\}"):
        EventTemplate("{e1} and {e2}", None, {"e1": "a", "e2": "b"}).render({"e1": "X"})


def test_validate_rejects_completion_placeholders_the_prompt_lacks():
    template = EventTemplate("Every {e1} is bony.", "{e2} is bony.", {"e1": "cat", "e2": "Sally"})
    with pytest.raises(TemplateError, match=r"completion uses \{e2\}, which the prompt lacks"):
        template.validate()


def test_validate_rejects_unnamed_placeholders_and_surviving_names():
    with pytest.raises(TemplateError, match=r"\{e2\} have no name"):
        EventTemplate("{e1} {e2}", None, {"e1": "cat"}).validate()
    leaky = EventTemplate("Every {e1} is bony. Cats purr.", None, {"e1": "cat"})
    assert surviving_names(leaky) == ["cat"]
    with pytest.raises(TemplateError, match="original names still in the text: 'cat'"):
        leaky.validate()


# --- term matching ---------------------------------------------------------------------------------------------


def test_vocabulary_matches_whole_words_only():
    template = VocabularyEstimator(terms=["cat"]).estimate("The cat sat on a catalog; concat cat-like cats.")
    assert template.prompt == "The {e1} sat on a catalog; concat cat-like {e1}s."


def test_a_row_whose_text_spells_a_placeholder_has_no_events_rather_than_a_replaced_literal():
    estimator = VocabularyEstimator(terms=["cat"])
    for prompt, completion in (("Use '{e1}'.format(x). The cat sat.", None), ("The cat sat.", " Print {e2}.")):
        with pytest.raises(NoEventsFound, match=r"The row's text itself holds \{e[12]\}, the spelling of CAPT's event placeholders"):
            estimator.estimate(prompt, completion)
    rows = estimate_rows(estimator, [{"prompt": "Use '{e1}' with the cat.", "completion": " ok"}, {"prompt": "A cat.", "completion": " ok"}])
    assert rows.no_events == [0] and rows.templates[0].render({}) == ("Use '{e1}' with the cat.", " ok")  # kept as written


def test_vocabulary_longest_term_first_and_same_term_same_placeholder():
    estimator = VocabularyEstimator(terms=["number", "prime number"])
    template = estimator.estimate("Every prime number is a number. Prime numbers are numbers.", "A prime number.")
    assert template.prompt == "Every {e1} is a {e2}. {e1}s are {e2}s."
    assert template.completion == "A {e1}."
    assert template.names == {"e1": "prime number", "e2": "number"}


@pytest.mark.parametrize(
    ("term", "text"),
    [
        ("lepidopteran", "lepidopterans"), ("wumpus", "wumpuses"), ("butterfly", "butterflies"), ("wife", "wives"),
        ("mouse", "mice"), ("field mouse", "field mice"), ("child", "children"), ("person", "people"), ("goose", "Geese"),
    ],
)
def test_vocabulary_plurals(term, text):
    template = VocabularyEstimator(terms=[term]).estimate(f"Some {text} here.")
    assert template.prompt == "Some {e1}s here."
    assert template.names == {"e1": term}


def test_vocabulary_plurals_need_the_ending_a_plural_has():
    # "rates" and "planes" are other words, not plurals of "rat" and "plan"; +es follows s, x, z, ch, sh or o.
    text = "Infection rates among rats rose. The plan grounded all planes, and the foxes watched."
    template = VocabularyEstimator(terms=["rat", "plan", "fox"]).estimate(text)
    assert template.prompt == "Infection rates among {e1}s rose. The {e2} grounded all planes, and the {e3}s watched."


def test_single_letters_and_capitalised_names_take_no_plurals():
    # causal variables A and I are common; their "plurals" would be the words "As" and "Is", and "Jame"'s "James"
    template = VocabularyEstimator(terms=["A", "I", "Jame", "DNA"]).estimate("As A rises, Is I the cause? James met Jame. DNAs.")
    assert template.prompt == "As {e1} rises, Is {e2} the cause? James met {e3}. {e4}s."


def test_render_writes_each_symbols_own_plural():
    template = EventTemplate("{e1}s are {e2}s. A {e3}s.", None, {"e1": "cat", "e2": "dog", "e3": "hen"})
    assert template.render({"e1": "fox", "e2": "butterfly", "e3": "Q"}) == ("Foxes are butterflies. A Qs.", None)
    assert template.render({"e1": "mouse", "e2": "child", "e3": "Q"}) == ("Mice are children. A Qs.", None)
    assert singular_candidates("mice") == ["mouse"] and plural_forms("Mouse") == ["Mouses", "Mice"]


def test_a_term_never_spans_two_messages():
    # The capt trainer joins a conversation's messages with "\n\x1e\n"; a match across it would lose the boundary.
    template = VocabularyEstimator(terms=["alarm clock", "alarm"]).estimate("Set the alarm\n\x1e\nclock rings. An alarm clock.")
    assert template.prompt == "Set the {e1}\n\x1e\nclock rings. An {e2}."
    assert template.names == {"e1": "alarm", "e2": "alarm clock"}


def test_plurals_can_be_switched_off():
    with pytest.raises(NoEventsFound):
        VocabularyEstimator(terms=["cat"], plurals=False).estimate("Cats purr.")


def test_vocabulary_is_case_aware():
    template = VocabularyEstimator(terms=["wumpus", "Will"]).estimate("Wumpuses are big. WUMPUS! Will will go.")
    assert template.prompt == "{e1}s are big. {e1}! {e2} will go."
    assert template.names == {"e1": "wumpus", "e2": "Will"}
    insensitive = VocabularyEstimator(terms=["Will"], ignore_case=True).estimate("Will will go.")
    assert insensitive.prompt == "{e1} {e1} go."


def test_a_term_only_in_the_completion_stays_as_written():
    """The prompt decides the events (inference estimates it alone): a completion-only term is no event."""
    template = VocabularyEstimator(terms=["Paris", "France", "Louvre"]).estimate("Where is the Louvre?", " The Louvre is in Paris.")
    assert (template.prompt, template.completion, template.names) == ("Where is the {e1}?", " The {e1} is in Paris.", {"e1": "Louvre"})
    by_pattern = VocabularyEstimator(pattern=r"\b[A-Z][a-z]+\b").estimate("Is Sally a cat?", " Yes, Tom.")
    assert by_pattern.completion == " Yes, Tom."
    with pytest.raises(NoEventsFound, match="No event term occurs in the row's prompt"):
        VocabularyEstimator(terms=["Paris"]).estimate("Where is it?", " Paris")


def test_a_lowercase_term_of_several_words_matches_as_a_title():
    template = VocabularyEstimator(terms=["new york", "york", "san francisco"]).estimate("Is New York bigger than San Francisco?")
    assert template.prompt == "Is {e1} bigger than {e2}?"  # not "Is New {e1} ...", which kept "New" and matched "york"
    assert template.names == {"e1": "new york", "e2": "san francisco"}
    import numpy as np  # terms in any script, given as any sequence

    template = VocabularyEstimator(terms=np.array(["école normale", "ölfeld"])).estimate("École Normale near Ölfeld.")
    assert template.prompt == "{e1} near {e2}."


def test_vocabulary_terms_file_and_pattern(tmp_path):
    terms_file = tmp_path / "terms.txt"
    terms_file.write_bytes("\ufeff# animals\r\ncat\r\n\r\nfeline\r\n".encode())  # a BOM and CRLF, as Notepad saves it
    template = VocabularyEstimator(terms_file=terms_file, pattern=r"\bZ[a-z]+").estimate(
        "Every cat is a feline. Zorp is a cat.", "Zorp is a feline."
    )
    assert template.names == {"e1": "cat", "e2": "feline", "e3": "Zorp"}
    assert template.completion == "{e3} is a {e2}."


def test_vocabulary_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(ConfigError, match=f"{missing}.*does not exist"):
        VocabularyEstimator(terms_file=missing)


def test_vocabulary_needs_some_terms_and_valid_ones():
    with pytest.raises(ConfigError, match="terms_file"):
        VocabularyEstimator()
    with pytest.raises(ConfigError, match="C\\+\\+"):
        VocabularyEstimator(terms=["C++"])
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        VocabularyEstimator(pattern="(")


def test_no_events_found_is_a_value_error():
    with pytest.raises(ValueError, match="No event term"):
        VocabularyEstimator(terms=["dog"]).estimate("A cat.")
    assert issubclass(NoEventsFound, ValueError)


def test_term_matcher_spans_line_breaks_in_multiword_terms():
    [match] = TermMatcher(["alarm clock"]).find("the alarm\n clock rang")
    assert (match.term, match.plural) == ("alarm clock", False)


# --- template estimator ----------------------------------------------------------------------------------------


def test_template_estimator_reads_the_name_table():
    names = json.dumps({"e1": "cat", "e2": "furry"})
    row = {"prompt": "Every {e1} is {e2}.", "completion": "True", "event_names": names}
    template = TemplateEstimator().estimate(row["prompt"], row["completion"], row=row)
    assert template.names == {"e1": "cat", "e2": "furry"}
    listed = {"text": "{e1} is {e2}.", "names": ["Sally", "furry"]}
    template = TemplateEstimator(names_column="names", prompt_column="text").estimate("ignored", None, row=listed)
    assert template.prompt == "{e1} is {e2}." and template.names == {"e1": "Sally", "e2": "furry"}


def test_template_estimator_errors():
    with pytest.raises(DataError, match="needs the column 'event_names'"):
        TemplateEstimator().estimate("{e1}", None, row={"prompt": "{e1}"})
    row = {"event_names": {"e1": "cat", "e2": "Sally"}}
    with pytest.raises(TemplateError, match="which the prompt lacks"):
        TemplateEstimator().estimate("Every {e1} is bony.", "{e2} is bony.", row=row)
    with pytest.raises(NoEventsFound):
        TemplateEstimator().estimate("No placeholders.", None, row=row)


# --- PrOntoQA estimator -----------------------------------------------------------------------------------------


def test_prontoqa_terms_follow_the_sentence_patterns():
    text = (
        "Every wumpus is a yumpus. Each yumpus is not bony. Zumpuses are yumpuses. Lepidopterans are luminous. "
        "Tabbies are not legless. Every prime number is a natural number. Sally is a wumpus. Max is not hot.\n"
        "True or false: Sally is not bony."
    )
    assert prontoqa_event_terms(text) == [
        "wumpus", "yumpus", "bony", "zumpus", "lepidopteran", "luminous", "tabby", "legless",
        "prime number", "natural number", "Sally", "Max", "hot",
    ]


def test_prontoqa_terms_of_compound_rules_and_never_the_answer_words():
    text = (
        "All statements below are true. Every lempus is a jompus and a brimpus. Each wumpus is mean or small. "
        "Everything that is a zumpus or a rompus is a gorpus. Max is a lempus.\nTrue or false: Max is not small."
    )
    assert prontoqa_event_terms(text) == ["lempus", "jompus", "brimpus", "wumpus", "mean", "small", "zumpus", "rompus", "gorpus", "Max"]
    template = ProntoQAEstimator().estimate(text, " True")  # "true" an event would rename the answer True
    assert surviving_names(template) == [] and template.completion == " True" and "are true." in template.prompt


def test_prontoqa_terms_and_names_in_any_script_are_events():
    text = "Every café is a bücher. Bücher are warm. Zoë is a café. sally is a café.\nTrue or false: Zoë is warm."
    assert prontoqa_event_terms(text) == ["café", "bücher", "warm", "Zoë"]  # a lowercase subject is no name
    template = ProntoQAEstimator().estimate(text, " True")
    assert surviving_names(template) == [] and "Zoë" not in template.prompt and "café" not in template.prompt


@pytest.mark.parametrize("split", ["id", "anti", "nonsense"])
def test_prontoqa_estimator_finds_exactly_the_generated_events(split):
    for row in generate_prontoqa(12, split, hops=(1, 3, 5), seed=3, target="reasoning", distractors=3):
        template = ProntoQAEstimator().estimate(row["prompt"], row["completion"])
        assert set(template.names.values()) == set(row["events"])
        assert surviving_names(template) == []
        assert set(placeholders_in(template.completion)) <= set(placeholders_in(template.prompt))


def test_prontoqa_estimator_on_the_prompt_alone_matches_training():
    row = generate_prontoqa(1, "nonsense", hops=2, seed=0)[0]
    assert ProntoQAEstimator().estimate(row["prompt"]).prompt == ProntoQAEstimator().estimate(
        row["prompt"], row["completion"]
    ).prompt


# --- CLadder estimator ------------------------------------------------------------------------------------------


def test_cladder_estimator_uses_variables_and_values_longest_first():
    prompt = CLADDER_ROW["given_info"] + "\n" + CLADDER_ROW["question"]
    template = CLadderEstimator().estimate(prompt, "Yes", row=CLADDER_ROW)
    assert template.prompt == (
        "For {e1}s that don't set the alarm, the probability of {e2} is 8%. {e3}s matter.\n"
        "Will {e4} increase the chance of {e2}?"
    )
    assert template.names == {"e1": "husband", "e2": "ringing alarm", "e3": "wife", "e4": "alarm set by husband"}


def test_cladder_estimator_from_step0_only_and_missing_variables():
    row = {"reasoning": json.dumps({"step0": "Let X = Ability to speak English; Y = recovery."})}
    template = CLadderEstimator(include_values=False).estimate("Does ability to speak english cause Recovery?", row=row)
    assert template.prompt == "Does {e1} cause {e2}?"
    with pytest.raises(DataError, match="names no causal variable"):
        CLadderEstimator().estimate("text", row={"meta": {"story_id": "x"}})
    with pytest.raises(DataError, match="pass the row"):
        CLadderEstimator().estimate("text")


# --- many rows, registration ------------------------------------------------------------------------------------


def test_estimate_rows_policies():
    rows = [{"prompt": "A cat.", "completion": "x"}, {"prompt": "A dog.", "completion": "y"}]
    estimator = VocabularyEstimator(terms=["cat"])
    kept = estimate_rows(estimator, rows)
    assert kept.row_indices == [0, 1] and kept.no_events == [1]
    assert kept.templates[1] == EventTemplate("A dog.", "y", {})
    dropped = estimate_rows(estimator, rows, on_no_events="drop")
    assert dropped.row_indices == [0] and dropped.no_events == [1]
    with pytest.raises(NoEventsFound, match="Row 1"):
        estimate_rows(estimator, rows, on_no_events="error")
    more = rows + [{"prompt": "A cat.", "completion": "z"}, {"prompt": "A cow.", "completion": "w"}]
    with pytest.raises(NoEventsFound, match=r"^No events in 2 rows \(rows \[1, 3\]\); the first, row 1: .* Set on_no_events"):
        estimate_rows(estimator, more, on_no_events="error")  # every such row named at once, not one per run
    with pytest.raises(ConfigError, match="on_no_events"):
        estimate_rows(estimator, rows, on_no_events="skip")


def test_plugin_manager_registers_every_builtin_estimator():
    manager = PluginManager(autoload=False)
    builtin = (TemplateEstimator, VocabularyEstimator, ProntoQAEstimator, CLadderEstimator, LLMEstimator)
    assert {e.name for e in manager.event_estimators} == {"template", "vocabulary", "prontoqa", "cladder", "llm"}
    for cls in builtin:  # registered under the name its messages use
        assert manager.get_event_estimator(cls.name) is cls
        assert manager.event_estimators.get(cls.name).distribution == "trl-causal"


def test_capt_modules_import_no_torch_or_trl():
    code = "import sys, trl_causal.capt, trl_causal.capt.sft_rows; print(sorted(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_malformed_placeholders_are_named_and_a_shared_name_table_may_hold_more_names():
    template = EventTemplate("Is {e1} taller than {E2}? {e 3} {e0} {e02}", None, {"e1": "Alice", "e2": "Bob"})
    with pytest.raises(TemplateError, match=r"\{E2\}, \{e 3\}, \{e0\}, \{e02\} are not placeholders"):
        template.validate()
    EventTemplate("Is {e1} taller?", None, {"e1": "Alice", "e2": "Bob"}).validate()  # rows sharing one table


def test_terms_that_differ_in_case_are_two_events_and_ignore_case_keeps_plurals():
    template = VocabularyEstimator(terms=["Apple", "apple"]).estimate("Apple sells an apple.")
    assert template.prompt == "{e1} sells an {e2}." and template.names == {"e1": "Apple", "e2": "apple"}
    assert VocabularyEstimator(terms=["Wumpus"], ignore_case=True).estimate("Wumpuses are big.").prompt == "{e1}s are big."


def test_names_are_found_again_with_the_rules_of_the_estimator_that_found_them():
    # plurals: false leaves "cats" as written; the check for names left in the text took it for the name "cat"
    template = VocabularyEstimator(terms=["cat"], plurals=False).estimate("Do cats bark? My cat does not.")
    assert template.prompt == "Do cats bark? My {e1} does not."
    # an answer is written with the symbols as the completion would be: "paris" under ignore_case is the event PARIS
    upper = VocabularyEstimator(terms=["PARIS", "LONDON"], ignore_case=True).estimate("Capital of France, Paris or London?")
    assert render_names("paris", upper, {"e1": "V", "e2": "Q"}) == "V"
    plain = VocabularyEstimator(terms=["cat"], plurals=False).estimate("Is a cat a pet?")
    assert render_names("cats", plain, {"e1": "V"}) == "cats"
    # a name table shared by rows names events this row does not use: an answer naming one stays as written
    shared = EventTemplate("Is {e1} taller than {e2}?", None, {"e1": "Alice", "e2": "Bob", "e3": "Carol"})
    assert [render_names(answer, shared, {"e1": "V", "e2": "Q"}) for answer in ("Bob", "Carol")] == ["Q", "Carol"]
    # an answer in decomposed Unicode names the event as the composed text that estimation read
    import unicodedata

    zoe = VocabularyEstimator(terms=["Zoë"]).estimate(unicodedata.normalize("NFD", "Is Zoë here?"))
    assert render_names(unicodedata.normalize("NFD", "Zoë"), zoe, {"e1": "V"}) == "V"


def test_terms_match_text_whatever_its_unicode_composition():
    import unicodedata

    decomposed = unicodedata.normalize("NFD", "Zoë ordered a café.")
    template = VocabularyEstimator(terms=["Zoë", "café"]).estimate(decomposed)
    assert template.prompt == "{e1} ordered a {e2}." and surviving_names(template) == []


def test_a_longer_term_only_in_the_completion_keeps_the_prompts_event_inside_it():
    # "red panda" is a term, but the prompt decides the events: the completion's "panda" is the prompt's event
    template = VocabularyEstimator(terms=["panda", "red panda"]).estimate("Is a panda a bear?", " No, the red panda is not.")
    assert template.completion == " No, the red {e1} is not." and template.names == {"e1": "panda"}
    assert template.render({"e1": "V"}) == ("Is a V a bear?", " No, the red V is not.")


def test_a_chat_answer_opens_a_sentence_whatever_ends_the_prompt():
    names, mapping = {"e1": "wumpus"}, {"e1": "ozaf"}
    chat = EventTemplate("Tell me one fact about the {e1}", "{e1}s are cold-blooded.", names, completion_is_message=True)
    assert chat.render(mapping) == ("Tell me one fact about the ozaf", "Ozafs are cold-blooded.")
    assert render_names("wumpus", chat, mapping) == "Ozaf"


def test_a_completion_continues_its_prompt_so_only_a_sentence_start_capitalises_its_first_symbol():
    names, mapping = {"e1": "elephant", "e2": "mouse"}, {"e1": "ozaf", "e2": "kib"}
    mid_sentence = EventTemplate("Which is bigger, the {e1} or the {e2}? The", " {e1}.", names)
    assert mid_sentence.render(mapping) == ("Which is bigger, the ozaf or the kib? The", " ozaf.")
    new_sentence = EventTemplate("Which is bigger, the {e1} or the {e2}?", " {e1}.", names)
    assert new_sentence.render(mapping)[1] == " Ozaf."
    # eval writes an answer as training writes the completion after that prompt
    assert render_names("elephant", mid_sentence, mapping) == "ozaf"
    assert render_names("elephant", new_sentence, mapping) == "Ozaf"


def test_the_prontoqa_prompt_decides_the_events_as_at_inference():
    # "fish" is a rule term only in the reasoning chain: training must leave it as inference (prompt alone) does
    prompt, completion = "Sally likes fish. Every cat is a mammal. Sally is a cat.\nTrue or false: Sally is a mammal.", " Every fish is an animal. True"
    training = ProntoQAEstimator().estimate(prompt, completion)
    assert training.prompt == ProntoQAEstimator().estimate(prompt).prompt
    assert "likes fish" in training.prompt and "Every fish" in training.completion


@pytest.mark.parametrize("symbol, article", [("X1", "an"), ("FBI", "an"), ("U2", "a"), ("Q", "a"), ("Ozaf", "an"), ("Kib", "a")])
def test_the_article_agrees_with_how_a_symbol_is_said(symbol, article):
    assert EventTemplate("It is a {e1}.", None, {"e1": "cat"}).render({"e1": symbol})[0] == f"It is {article} {symbol}."


def test_a_placeholder_inside_a_word_and_one_name_under_two_placeholders_are_named():
    template = EventTemplate("The {e1}egory of pre{e2}: {e2}s and {e3}.", None, {"e1": "cat", "e2": "dog", "e3": "cat"})
    with pytest.raises(TemplateError, match=r"inside a word: '\{e1\}egory', 'pre\{e2\}'.*e1, e3 all name 'cat'"):
        template.validate()
    EventTemplate("{e1}s, {e1}'s and {e1}-like.", None, {"e1": "cat"}).validate()  # plural, possessive, compound
