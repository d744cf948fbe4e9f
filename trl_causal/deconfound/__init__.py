"""Deconfounding of observational outcomes (DeconfoundLM, METHODS.md section 2), on plain arrays.

``build_confounder_matrix`` turns confounder columns into C, ``partial_out`` estimates the confounders' causal
effect theta by cross-fitted partialling out (or partialling-out IV) and returns the deconfounded outcome
r~ = Y - theta'(C - mean C) from text features (``tfidf_features``, or a model's pooled hidden states:
``hidden_state_features``); ``preference_pairs`` ranks rows within groups by it; ``simulate_observational_texts``
makes data with a known truth.
The ``deconfounded_reward`` trainer reads its rows with ``observations`` and computes its targets with ``targets``;
``texts`` (tokens and model features of the scored texts) imports TRL and ``losses`` (its loss terms) torch: neither
is imported here, and nothing imported here imports torch, transformers or TRL.
"""

from .confounders import build_confounder_matrix
from .features import hidden_state_features, tfidf_features
from .pairs import preference_pairs
from .partial_out import (
    LEARNER_NAMES,
    DeconfoundResult,
    TextDeterminedWarning,
    WeakInstrumentWarning,
    make_learner,
    partial_out,
    remove_confounder_effect,
)
from .simulate import (
    MARKER,
    add_marker,
    causal_score,
    has_marker,
    remove_marker,
    simulate_observational_texts,
)

__all__ = [
    "LEARNER_NAMES",
    "MARKER",
    "DeconfoundResult",
    "TextDeterminedWarning",
    "WeakInstrumentWarning",
    "add_marker",
    "build_confounder_matrix",
    "causal_score",
    "has_marker",
    "hidden_state_features",
    "make_learner",
    "partial_out",
    "preference_pairs",
    "remove_confounder_effect",
    "remove_marker",
    "simulate_observational_texts",
    "tfidf_features",
]
