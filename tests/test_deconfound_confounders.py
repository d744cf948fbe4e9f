"""build_confounder_matrix: numeric, categorical and timestamp confounders, and its errors."""

from datetime import datetime, timezone

import numpy as np
import pytest

from trl_causal.deconfound import build_confounder_matrix
from trl_causal.errors import DataError


def test_numeric_and_categorical_columns():
    columns = {"price": [1, 2.5, "3", 4], "channel": ["web", "app", "web", "mail"]}
    matrix, names = build_confounder_matrix(columns, numeric=["price"], categorical=["channel"])
    # levels app < mail < web: "app" is the dropped reference level
    assert names == ["price", "channel=mail", "channel=web"]
    np.testing.assert_array_equal(matrix, [[1, 0, 1], [2.5, 0, 0], [3, 0, 1], [4, 1, 0]])


def test_timestamps_from_iso_datetime_and_epoch_agree():
    moments = [datetime(2024, 1, 1, 12), datetime(2024, 1, 2, 12), datetime(2024, 2, 7, 12)]  # Mon, Tue, Wed
    as_iso = [moment.isoformat() for moment in moments]
    as_epoch = [moment.replace(tzinfo=timezone.utc).timestamp() for moment in moments]
    results = [build_confounder_matrix({"t": values}, timestamps=["t"]) for values in (moments, as_iso, as_epoch)]
    for matrix, names in results:
        assert names == ["t=Tue", "t=Wed", "t=Feb", "t_trend_days"]
        np.testing.assert_allclose(matrix, [[0, 0, 0, 0], [1, 0, 0, 1], [0, 1, 1, 37]])


def test_timestamp_feature_subset():
    matrix, names = build_confounder_matrix(
        {"t": ["2024-01-01", "2024-01-03"]}, timestamps=["t"], timestamp_features=("trend",)
    )
    assert names == ["t_trend_days"]
    np.testing.assert_allclose(matrix[:, 0], [0, 2])


def test_non_numeric_value_in_numeric_column_names_column_and_rows():
    with pytest.raises(DataError, match=r"'price' has non-numeric values at row 2 \(e.g. 'cheap'\)"):
        build_confounder_matrix({"price": [1, 2, "cheap", 4]}, numeric=["price"])


def test_missing_values_are_counted_per_column():
    columns = {"price": [1.0, float("nan"), 3.0, float("inf"), 5.0], "channel": ["a", "b", None, "a", "b"]}
    message = r"3 of 5 rows .*'price': 2 \(rows \[1, 3\]\); 'channel': 1 \(row 2\).*drop_invalid"
    with pytest.raises(DataError, match=message):
        build_confounder_matrix(columns, numeric=["price"], categorical=["channel"])
    columns["channel"][0] = " "  # a blank cell is missing too, not a level of its own
    with pytest.raises(DataError, match=r"4 of 5 rows .*'channel': 2 \(rows \[0, 2\]\)"):
        build_confounder_matrix(columns, numeric=["price"], categorical=["channel"])


def test_a_pandas_nat_timestamp_is_missing():
    import pandas as pd

    columns = {"posted": [pd.Timestamp("2026-01-05"), pd.NaT, pd.Timestamp("2026-02-03"), pd.Timestamp("2026-03-02")]}
    with pytest.raises(DataError, match=r"1 of 4 rows .*'posted': 1 \(row 1\)"):
        build_confounder_matrix(columns, timestamps=["posted"])
    _, names, kept, dropped = build_confounder_matrix(columns, timestamps=["posted"], drop_invalid=True)
    assert kept.tolist() == [True, False, True, True] and dropped == 1 and "posted_trend_days" in names


def test_drop_invalid_returns_mask_and_count():
    columns = {"price": [1.0, None, 3.0, 4.0], "t": ["2024-01-01", "2024-01-02", None, "2024-01-09"]}
    matrix, names, kept_rows, n_dropped = build_confounder_matrix(
        columns, numeric=["price"], timestamps=["t"], timestamp_features=("trend",), drop_invalid=True
    )
    assert n_dropped == 2
    np.testing.assert_array_equal(kept_rows, [True, False, False, True])
    np.testing.assert_allclose(matrix, [[1, 0], [4, 8]])
    assert names == ["price", "t_trend_days"]


@pytest.mark.parametrize(
    ("columns", "kinds", "message"),
    [
        ({"x": [2, 2, 2]}, {"numeric": ["x"]}, r"Numeric confounder column 'x' has the same value \(2\)"),
        ({"x": ["a", "a"]}, {"categorical": ["x"]}, r"Categorical confounder column 'x' has a single value \('a'\)"),
        ({"t": ["2024-01-01", "2024-01-08"]}, {"timestamps": ["t"]}, r"'weekday' feature of timestamp column 't'"),
        ({"t": ["2024-01-01", "2024-01-01"]}, {"timestamps": ["t"]}, r"'t' holds the same moment"),
    ],
)
def test_confounder_without_variance_is_an_error(columns, kinds, message):
    with pytest.raises(DataError, match=message):
        build_confounder_matrix(columns, **kinds)


@pytest.mark.parametrize(
    ("kinds", "message"),
    [
        ({}, "No confounder columns"),
        ({"numeric": ["missing"]}, r"\['missing'\] are not in the data"),
        ({"numeric": ["x"], "categorical": ["x"]}, "listed more than once"),
        ({"timestamps": ["t"], "timestamp_features": ("hour",)}, "timestamp_features must be"),
    ],
)
def test_bad_column_choices(kinds, message):
    with pytest.raises(DataError, match=message):
        build_confounder_matrix({"x": [1, 2], "t": ["2024-01-01", "2024-01-02"]}, **kinds)


def test_unparsable_timestamp_names_column_and_row():
    with pytest.raises(DataError, match=r"'t' has values that are not timestamps at row 1 \(e.g. 'yesterday'\)"):
        build_confounder_matrix({"t": ["2024-01-01", "yesterday"]}, timestamps=["t"])


def test_levels_come_from_the_fit_rows_and_a_level_only_later_rows_hold_counts_as_the_reference():
    # Training rows: web/mobile, January/February. Evaluation rows bring 'app' (sorting first) and March.
    columns = {
        "channel": ["web", "mobile", "web", "mobile", "app", "web"],
        "posted": ["2026-01-05", "2026-02-03", "2026-01-12", "2026-02-10", "2026-03-02", "2026-03-09"],
    }
    with pytest.warns(UserWarning) as caught:
        matrix, names = build_confounder_matrix(
            columns, categorical=["channel"], timestamps=["posted"], timestamp_features=["month"], fit_rows=4
        )
    messages = [str(warning.message) for warning in caught]
    assert any("'channel' has values that only rows outside the training rows hold ('app'); their rows count as "
               "the reference level 'mobile'" in m for m in messages), messages
    assert any("'month' feature of timestamp column 'posted'" in m and "('Mar')" in m for m in messages), messages
    assert names == ["channel=web", "posted=Feb"]
    np.testing.assert_array_equal(matrix, [[1, 0], [0, 1], [1, 0], [0, 1], [0, 0], [1, 0]])
    assert np.ptp(matrix[:4], axis=0).all()  # every column varies over the training rows


def test_reference_levels_name_the_level_each_one_hot_block_leaves_out():
    from trl_causal.deconfound.confounders import reference_levels

    columns = {
        "device": ["tablet", "mobile", None, "tablet", "mobile"],
        "ts": ["2024-03-05T10:00:00", "2024-02-07T10:00:00", "2024-04-12T10:00:00", "2024-03-08T10:00:00", None],
    }
    kept = [0, 1, 3]  # the rows build_confounder_matrix keeps: no missing value
    _, names, _, _ = build_confounder_matrix(columns, categorical=["device"], timestamps=["ts"], drop_invalid=True)
    references = reference_levels({key: [values[row] for row in kept] for key, values in columns.items()}, ["device"], ["ts"])
    assert references == {"device": "mobile", "ts weekday": "Tue", "ts month": "Feb"}  # Tue, Wed, Fri; Feb, Mar
    assert "device=mobile" not in names and "device=tablet" in names
    assert "ts=Tue" not in names and {"ts=Wed", "ts=Fri", "ts=Mar"} <= set(names) and "ts=Feb" not in names
    assert reference_levels(columns, ["device"], ["ts"], ["trend"]) == {"device": "mobile"}  # a trend has no reference


def test_a_categorical_level_is_its_text_whatever_type_each_split_gives_it():
    import warnings

    train, evaluation = [1, 2, 3, 10, 2, 1], ["1", "2", "3", "10"]  # ints in the training file, text in the eval file
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no level counts as unseen
        matrix, names = build_confounder_matrix({"platform": train + evaluation}, categorical=["platform"], fit_rows=len(train))
    assert names == ["platform=2", "platform=3", "platform=10"]  # numeric order, 1 the reference level
    np.testing.assert_array_equal(matrix[len(train):], matrix[[0, 1, 2, 3]])
