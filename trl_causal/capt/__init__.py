"""CAPT-SFT building blocks without torch (METHODS.md section 1): event estimation, event intervention, and
PrOntoQA / CLadder data.

Pipeline per row: ``estimator.estimate(prompt, completion, row=row)`` -> ``EventTemplate`` (once, before
training); then ``RowInterventions(templates, pool, seed).intervene(row_index, draw)`` -> the row's text with
fresh symbols for that draw (e.g. the epoch). At inference: estimate the prompt alone, intervene, decode.
"""

from .cladder import (
    CLADDER_HUB_ID,
    CLadderVariable,
    cladder_variables,
    convert_cladder_rows,
    load_cladder_file,
    parse_step0,
)
from .events import (
    NO_EVENTS_POLICIES,
    CLadderEstimator,
    EstimatedRows,
    EstimationFailed,
    EventEstimator,
    EventTemplate,
    NoEventsFound,
    ProntoQAEstimator,
    TemplateError,
    TemplateEstimator,
    TermMatcher,
    VocabularyEstimator,
    estimate_rows,
    placeholders_in,
    render_names,
    render_text,
    surviving_names,
    template_from_matcher,
)
from .intervention import (
    LETTERS,
    SYMBOL_POOLS,
    InterventionResult,
    ListPool,
    NonsensePool,
    PoolExhaustedError,
    RowInterventions,
    SymbolPool,
    build_symbol_pool,
    intervene,
)
from .llm_estimator import LLMEstimator
from .prontoqa import (
    SPLITS,
    answer_from_claims,
    convert_prontoqa_rows,
    generate_prontoqa,
    to_chat_rows,
    load_prontoqa_file,
    prontoqa_event_terms,
)
from .rows import MESSAGE_SEPARATOR

__all__ = [
    "CLADDER_HUB_ID",
    "LETTERS",
    "MESSAGE_SEPARATOR",
    "NO_EVENTS_POLICIES",
    "SPLITS",
    "SYMBOL_POOLS",
    "CLadderEstimator",
    "CLadderVariable",
    "EstimatedRows",
    "EstimationFailed",
    "EventEstimator",
    "EventTemplate",
    "InterventionResult",
    "LLMEstimator",
    "ListPool",
    "NoEventsFound",
    "NonsensePool",
    "PoolExhaustedError",
    "ProntoQAEstimator",
    "RowInterventions",
    "SymbolPool",
    "TemplateError",
    "TemplateEstimator",
    "TermMatcher",
    "VocabularyEstimator",
    "answer_from_claims",
    "build_symbol_pool",
    "cladder_variables",
    "convert_cladder_rows",
    "convert_prontoqa_rows",
    "estimate_rows",
    "generate_prontoqa",
    "to_chat_rows",
    "intervene",
    "load_cladder_file",
    "load_prontoqa_file",
    "parse_step0",
    "placeholders_in",
    "prontoqa_event_terms",
    "render_names",
    "render_text",
    "surviving_names",
    "template_from_matcher",
]
