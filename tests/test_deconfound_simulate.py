"""The observational text simulator and the marker helpers."""

import numpy as np

from trl_causal.deconfound import (
    MARKER,
    add_marker,
    causal_score,
    has_marker,
    remove_marker,
    simulate_observational_texts,
)


def test_columns_shapes_and_determinism():
    data = simulate_observational_texts(n=400, instrument_strength=1.0, group_size=4, seed=7)
    assert set(data) == {"text", "prompt", "outcome", "confounder", "instrument", "group", "f", "marker"}
    assert all(len(values) == 400 for values in data.values())
    assert data == simulate_observational_texts(n=400, instrument_strength=1.0, group_size=4, seed=7)
    assert "instrument" not in simulate_observational_texts(n=10)
    groups = np.array(data["group"])
    assert (np.bincount(groups) == 4).all()
    assert all(len({p for p, g in zip(data["prompt"], groups) if g == group}) == 1 for group in set(groups))


def test_f_is_the_causal_score_of_the_text_and_ignores_the_marker():
    data = simulate_observational_texts(n=300, seed=1)
    assert np.allclose(data["f"], [causal_score(text) for text in data["text"]])
    assert data["marker"] == [has_marker(text) for text in data["text"]]
    for text in data["text"][:20]:
        assert causal_score(add_marker(text)) == causal_score(remove_marker(text))
    f = np.array(simulate_observational_texts(n=5000, text_confounding=0.0, seed=2)["f"])
    assert abs(f.mean()) < 0.05 and abs(f.std() - 1) < 0.05  # standardised when text does not depend on C


def test_marker_helpers_round_trip():
    text = "Garden care: clear tips for your plan."
    marked = add_marker(text)
    assert marked == f"{text} {MARKER}" and add_marker(marked) == marked
    assert remove_marker(marked) == text and not has_marker(remove_marker(marked))


def test_entanglement_ties_the_marker_to_the_confounder_but_not_the_outcome():
    data = simulate_observational_texts(n=4000, entanglement=2.0, seed=3)
    marker, confounder = np.array(data["marker"]), np.array(data["confounder"])
    assert marker[confounder > 0].mean() > 2 * marker[confounder < 0].mean()
    # given f and C, the marker carries no information about the outcome
    design = np.column_stack([np.ones(4000), data["f"], confounder, marker])
    coefficients = np.linalg.lstsq(design, np.array(data["outcome"]), rcond=None)[0]
    assert abs(coefficients[3]) < 0.1
    unentangled = simulate_observational_texts(n=4000, entanglement=0.0, seed=3)
    assert abs(np.corrcoef(unentangled["marker"], unentangled["confounder"])[0, 1]) < 0.05


def test_logistic_click_model_gives_binary_outcomes_rising_with_the_confounder():
    data = simulate_observational_texts(n=2000, outcome_model="logistic", gamma=1.0, seed=4)
    outcome, confounder = np.array(data["outcome"]), np.array(data["confounder"])
    assert set(np.unique(outcome)) == {0.0, 1.0}
    assert outcome[confounder > 0.5].mean() > outcome[confounder < -0.5].mean() + 0.2


def test_shared_context_gives_every_row_of_a_group_the_same_context():
    shared = simulate_observational_texts(n=4000, group_size=8, shared_context=True, seed=5)
    confounder = np.array(shared["confounder"])
    assert (np.ptp(confounder.reshape(500, 8), axis=1) == 0).all()
    assert len(np.unique(confounder)) == 500
    # the context still moves the marker and the quality words, across groups
    marker, f = np.array(shared["marker"]), np.array(shared["f"])
    assert marker[confounder > 0].mean() > 2 * marker[confounder < 0].mean()
    assert f[confounder > 0].mean() > f[confounder < 0].mean() + 0.3
    independent = simulate_observational_texts(n=4000, group_size=8, seed=5)
    assert (np.ptp(np.array(independent["confounder"]).reshape(500, 8), axis=1) > 0).all()
