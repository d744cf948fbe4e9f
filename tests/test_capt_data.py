"""PrOntoQA and CLadder data for CAPT: converters, loaders and the PrOntoQA-style generator."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from trl_causal.capt import (
    CLADDER_HUB_ID,
    CLadderEstimator,
    answer_from_claims,
    cladder_variables,
    convert_cladder_rows,
    convert_prontoqa_rows,
    estimate_rows,
    generate_prontoqa,
    load_cladder_file,
    load_prontoqa_file,
    parse_step0,
)
from trl_causal.capt.prontoqa import REAL_CONCEPTS, REAL_IS_A, real_ancestors, real_properties
from trl_causal.errors import ConfigError, DataError

FACTS_ROW = {
    "Facts": "Every wumpus is a yumpus. Yumpuses are not bony. Sally is a wumpus.",
    "Query": "True or false: Sally is not bony.",
    "claims": ["Sally is a wumpus.", "Sally is a yumpus.", "Sally is not bony."],
    "next_steps": ["Every wumpus is a yumpus.", "Yumpuses are not bony."],
}
CLADDER_ROW = {
    "question_id": 1,
    "given_info": "The overall probability of alarm set by husband is 74%.",
    "question": "Is ringing alarm more likely than silent alarm overall?",
    "answer": "Yes",
    "meta": {
        "story_id": "alarm", "rung": 1, "background": "Husband has a direct effect on alarm clock.",
        "variable_mapping": {"Xname": "husband", "X1": "alarm set by husband", "V21": "alarm set by wife"},
    },
    "reasoning": {"step0": "Let V2 = wife; X = husband; Y = alarm clock.", "step1": "V2->Y,X->Y", "end": "0.51 > 0"},
}


# --- PrOntoQA converters ----------------------------------------------------------------------------------------


def test_facts_schema_answer_is_whether_the_last_claim_is_the_query():
    [row] = convert_prontoqa_rows([FACTS_ROW])
    assert row == {"prompt": FACTS_ROW["Facts"] + "\n" + FACTS_ROW["Query"], "completion": "True", "answer": "True"}
    assert answer_from_claims(FACTS_ROW["claims"], "True or false: Sally is bony.") == "False"
    assert answer_from_claims(["sally is  NOT bony"], "Sally is not bony.") == "True"
    [reasoning] = convert_prontoqa_rows([FACTS_ROW], target="reasoning")
    assert reasoning["completion"] == " ".join(FACTS_ROW["claims"]) + "\nAnswer: True"


def test_common_schema_and_custom_prompt_template():
    row = {"question": "Cats are bony. Max is a cat.", "query": "True or false: Max is bony.",
           "chain_of_thought": ["Max is a cat.", "Cats are bony.", "Max is bony."], "answer": "true"}
    [converted] = convert_prontoqa_rows([row], target="reasoning", prompt_template="Facts: {facts}\nQ: {query}")
    assert converted["prompt"] == "Facts: Cats are bony. Max is a cat.\nQ: True or false: Max is bony."
    assert converted["completion"] == "Max is a cat. Cats are bony. Max is bony.\nAnswer: True"


def test_prontoqa_bad_rows_name_the_row_and_field():
    bad = dict(FACTS_ROW, claims=[])
    with pytest.raises(DataError, match="row 1 .* lacks the field 'claims'"):
        convert_prontoqa_rows([FACTS_ROW, bad])
    with pytest.raises(DataError, match="row 0 .* lacks the field 'chain_of_thought'"):
        convert_prontoqa_rows([{"question": "q", "query": "True or false: x.", "answer": "True"}], target="reasoning")
    with pytest.raises(DataError, match="row 0 has answer 'maybe'"):
        convert_prontoqa_rows([{"question": "q", "query": "x", "answer": "maybe"}])
    with pytest.raises(DataError, match="row 0 has neither 'Facts'.*it has: text"):
        convert_prontoqa_rows([{"text": "hello"}])
    with pytest.raises(ConfigError, match="target"):
        convert_prontoqa_rows([FACTS_ROW], target="cot")


def test_load_prontoqa_generator_json_and_jsonl(tmp_path):
    common = {"question": "Cats are bony. Max is a cat.", "query": "True or false: Max is not bony.",
              "chain_of_thought": ["Max is a cat.", "Cats are bony.", "Max is bony."], "answer": "False"}
    nested = tmp_path / "generated.json"
    nested.write_text(json.dumps({"example1": {"in_context_example0": FACTS_ROW, "test_example": common}}))
    assert [row["answer"] for row in load_prontoqa_file(nested)] == ["False"]
    lines = tmp_path / "rows.jsonl"
    lines.write_text(json.dumps(FACTS_ROW) + "\n" + json.dumps(common) + "\n")
    assert [row["answer"] for row in load_prontoqa_file(lines)] == ["True", "False"]
    with pytest.raises(DataError, match="does not exist"):
        load_prontoqa_file(tmp_path / "missing.json")
    single = tmp_path / "row.json"
    single.write_text(json.dumps(common))
    assert [row["answer"] for row in load_prontoqa_file(single)] == ["False"]
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"name": "x", "rows": 3}))
    with pytest.raises(DataError, match=r"neither one PrOntoQA row .* its keys: name, rows"):
        load_prontoqa_file(other)


# --- PrOntoQA generator -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["id", "anti", "nonsense"])
def test_generator_is_seeded_balanced_and_answers_follow_the_chain(split):
    rows = generate_prontoqa(30, split, hops=(1, 2, 3, 4, 5), seed=11, target="reasoning")
    assert rows == generate_prontoqa(30, split, hops=(1, 2, 3, 4, 5), seed=11, target="reasoning")
    assert rows != generate_prontoqa(30, split, hops=(1, 2, 3, 4, 5), seed=12, target="reasoning")
    assert Counter(row["answer"] for row in rows) == {"True": 15, "False": 15}
    assert Counter(row["hops"] for row in rows) == {h: 6 for h in range(1, 6)}
    for row in rows:
        chain = row["chain_of_thought"]
        assert len(chain) == 2 * row["hops"] + 1 and row["split"] == split
        assert answer_from_claims(chain, row["query"]) == row["answer"]
        rules = chain[1::2]
        assert all(rule in row["question"] for rule in rules)  # every step uses a stated fact
        assert chain[0] in row["question"]  # the individual's class is stated
        assert row["completion"].endswith("\nAnswer: " + row["answer"])


def _concept_chain(row: dict) -> list[str]:
    """The individual's concepts, read back from "Name is a/an X." steps of the chain of thought."""
    return [step.split(" is ", 1)[1].split(" ", 1)[1].rstrip(".") for step in row["chain_of_thought"][0::2][:-1]]


def test_id_split_is_true_anti_split_is_false_nonsense_split_is_invented():
    for row in generate_prontoqa(20, "id", hops=(2, 4, 5), seed=0):
        concepts = _concept_chain(row)
        assert all(REAL_IS_A.get(child) == parent for child, parent in zip(concepts, concepts[1:]))
    for row in generate_prontoqa(20, "anti", hops=(2, 4, 5), seed=0):
        concepts = _concept_chain(row)
        assert all(c in REAL_CONCEPTS for c in concepts)
        assert all(parent not in real_ancestors(child) for child, parent in zip(concepts, concepts[1:]))
        prop_step = row["chain_of_thought"][-1]  # "Name is (not) prop."
        prop = prop_step.split()[-1].rstrip(".")
        assert real_properties(concepts[-1])[prop] is ("not" in prop_step.split())  # the chain's property is flipped
    for row in generate_prontoqa(20, "nonsense", hops=3, seed=0):
        assert not set(_concept_chain(row)) & set(REAL_CONCEPTS)
        assert all(concept.endswith("us") for concept in _concept_chain(row))


@pytest.mark.parametrize("split", ["id", "anti", "nonsense"])
def test_splits_share_one_structure_so_only_content_can_shift(split):
    """No surface cue answers a row in one split and misleads in another: the query's "not" is independent of
    the answer, and the queried property is stated twice, once with each truth (the first distractor)."""
    rows = generate_prontoqa(400, split, hops=(1, 2, 3), seed=4)
    negated = Counter((" not " in row["query"], row["answer"]) for row in rows)
    for query_negated in (True, False):
        true_share = negated[(query_negated, "True")] / (negated[(query_negated, "True")] + negated[(query_negated, "False")])
        assert 0.4 < true_share < 0.6, (query_negated, negated)
    for row in rows:
        prop = row["query"].rstrip(".").split()[-1]
        about_prop = [s for s in row["question"].split(". ") if s.rstrip(".").split()[-1] == prop]
        assert {" not " in f" {s} " for s in about_prop} == {True, False}, row["question"]


def test_generator_round_trips_through_the_common_schema_converter():
    for target in ("answer", "reasoning"):
        rows = generate_prontoqa(10, "nonsense", hops=(1, 3), seed=5, target=target, distractors=4)
        converted = convert_prontoqa_rows(rows, target=target)
        assert [(r["prompt"], r["completion"], r["answer"]) for r in rows] == [
            (c["prompt"], c["completion"], c["answer"]) for c in converted
        ]
        if target == "answer":
            assert {row["completion"] for row in rows} == {"True", "False"}


def test_generator_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="split"):
        generate_prontoqa(2, "ood")
    with pytest.raises(ConfigError, match="hops"):
        generate_prontoqa(2, hops=6)
    with pytest.raises(ConfigError, match="target"):
        generate_prontoqa(2, target="cot")


# --- CLadder ----------------------------------------------------------------------------------------------------


def test_parse_step0():
    assert parse_step0("Let X = ability to speak english; V2 = wife; Y = alarm clock.") == {
        "X": "ability to speak english", "V2": "wife", "Y": "alarm clock",
    }
    with pytest.raises(DataError, match="'V2 wife'"):
        parse_step0("Let X = husband; V2 wife.")


def test_cladder_variables_merge_step0_and_meta():
    variables = cladder_variables(CLADDER_ROW)
    assert [(v.symbol, v.name, v.values) for v in variables] == [
        ("V2", "wife", ("alarm set by wife",)),
        ("X", "husband", ("alarm set by husband",)),
        ("Y", "alarm clock", ()),
    ]


def test_a_step0_that_does_not_parse_is_fine_while_the_mapping_names_the_variables():
    row = {**CLADDER_ROW, "reasoning": {**CLADDER_ROW["reasoning"], "step0": "Let X = husband; V2 wife."}}
    assert [v.name for v in cladder_variables(row)] == ["husband"]  # from meta.variable_mapping
    with pytest.raises(DataError, match="'V2 wife'"):
        cladder_variables({**row, "meta": {}})


def test_convert_cladder_rows():
    [row] = convert_cladder_rows([CLADDER_ROW])
    assert row["prompt"] == "\n".join(
        [CLADDER_ROW["meta"]["background"], CLADDER_ROW["given_info"], CLADDER_ROW["question"]]
    )
    assert (row["completion"], row["answer"]) == ("Yes", "yes")
    assert row["reasoning"]["step0"].startswith("Let V2")
    [reasoning] = convert_cladder_rows([CLADDER_ROW], target="reasoning")
    assert reasoning["completion"] == "Let V2 = wife; X = husband; Y = alarm clock.\nV2->Y,X->Y\n0.51 > 0\nAnswer: Yes"


def test_cladder_columns_are_mapped_by_name_and_bad_rows_name_row_and_field():
    renamed = {"info": CLADDER_ROW["given_info"], "question": "Q?", "label": "no", "meta": json.dumps({"rung": 2})}
    [row] = convert_cladder_rows([renamed], columns={"given_info": "info", "answer": "label"})
    assert (row["prompt"], row["completion"], row["meta"]) == (CLADDER_ROW["given_info"] + "\nQ?", "No", {"rung": 2})
    with pytest.raises(DataError, match="row 1 lacks the field 'question'"):
        convert_cladder_rows([CLADDER_ROW, {k: v for k, v in CLADDER_ROW.items() if k != "question"}])
    with pytest.raises(DataError, match="row 0 has answer 'perhaps'"):
        convert_cladder_rows([dict(CLADDER_ROW, answer="perhaps")])
    with pytest.raises(ConfigError, match="Unknown CLadder fields \\['prompt'\\]"):
        convert_cladder_rows([CLADDER_ROW], columns={"prompt": "text"})


def test_malformed_cladder_input_names_the_row_or_line(tmp_path):
    with pytest.raises(DataError, match=r"CLadder row 1 is NoneType None, not an object of fields"):
        convert_cladder_rows([CLADDER_ROW, None])
    with pytest.raises(DataError, match=r"reasoning\.step0 must be text .*not \['Let X = a'\]"):
        cladder_variables({"reasoning": {"step0": ["Let X = a"]}})
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(CLADDER_ROW) + "\n\n" + json.dumps(CLADDER_ROW) + "\n" + '{"question": "Q?",' + "\n")
    with pytest.raises(DataError, match=r"rows\.jsonl', line 4, is not valid JSON"):
        load_cladder_file(path)
    rows = [{"prompt": "Does C++ pay?", "completion": "Yes", "reasoning": {"step0": "Let X = C++; Y = salary."}}] * 2
    with pytest.raises(ConfigError, match=r"Row 0: Event terms \['C\+\+'\] cannot be matched as whole words"):
        estimate_rows(CLadderEstimator(include_values=False), rows)


def test_load_cladder_file(tmp_path):
    path = tmp_path / "cladder.json"
    path.write_text(json.dumps([CLADDER_ROW, dict(CLADDER_ROW, answer="no")]))
    assert [row["completion"] for row in load_cladder_file(path)] == ["Yes", "No"]
    assert CLADDER_HUB_ID == "causalnlp/CLadder"
