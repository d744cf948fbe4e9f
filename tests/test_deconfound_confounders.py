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
    with pytest.raises(DataError, match=r"numeric confounder column 'price' must be numeric; it has non-numbers at row 2 \(e.g. row 2: 'cheap'\)"):
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


def test_one_hot_levels_name_the_level_each_one_hot_block_leaves_out():
    from trl_causal.deconfound.confounders import one_hot_levels

    columns = {
        "device": ["tablet", "mobile", None, "tablet", "mobile"],
        "ts": ["2024-03-05T10:00:00", "2024-02-07T10:00:00", "2024-04-12T10:00:00", "2024-03-08T10:00:00", None],
    }
    kept = [0, 1, 3]  # the rows build_confounder_matrix keeps: no missing value
    _, names, _, _ = build_confounder_matrix(columns, categorical=["device"], timestamps=["ts"], drop_invalid=True, min_level_rows=1)
    levels = one_hot_levels({key: [values[row] for row in kept] for key, values in columns.items()}, ["device"], ["ts"], min_level_rows=1)
    references = {block: level["reference"] for block, level in levels.items()}
    assert references == {"device": "mobile", "ts weekday": "Tue", "ts month": "Feb"}  # Tue, Wed, Fri; Feb, Mar
    assert "device=mobile" not in names and "device=tablet" in names
    assert "ts=Tue" not in names and {"ts=Wed", "ts=Fri", "ts=Mar"} <= set(names) and "ts=Feb" not in names
    assert list(one_hot_levels(columns, ["device"], ["ts"], ["trend"], min_level_rows=1)) == ["device"]  # a trend has no reference


def test_values_of_few_rows_are_pooled_into_one_level():
    """A long tail of values seen once: each one's theta would absorb its row's outcome, with a standard error near 0
    (a review found 50 of 58 such levels 'significant' with a true effect of 0). They become one level, the last,
    named in a warning and by one_hot_levels; too few of them to make a level of their own count as the reference."""
    from trl_causal.deconfound.confounders import one_hot_levels

    country = ["DE"] * 6 + ["FR"] * 5 + ["US"] * 7 + ["AT", "BE", "CH", "CZ", "DK"]
    with pytest.warns(UserWarning, match=r"'country': 5 values held by fewer than 5 training rows each \('AT', 'BE', 'CH', 'CZ', 'DK'\) are pooled into one level country=\(other\)"):
        matrix, names = build_confounder_matrix({"country": country}, categorical=["country"])
    assert names == ["country=FR", "country=US", "country=(other)"]
    assert matrix[-5:].tolist() == [[0, 0, 1]] * 5 and matrix[:6].sum() == 0  # DE, the reference
    levels = one_hot_levels({"country": country}, ["country"])["country"]
    assert levels == {"reference": "DE", "pooled": ["AT", "BE", "CH", "CZ", "DK"], "pooled_into": "(other)"}
    _, kept = build_confounder_matrix({"country": country}, categorical=["country"], min_level_rows=1)
    assert len(kept) == 7
    few = ["AT"] + country[:-5] + ["BE"]  # 2 rare values, 2 rows: the reference DE, not AT (which sorts first)
    with pytest.warns(UserWarning, match=r"2 values .* \('AT', 'BE'\) are counted as the reference level 'DE' \(together fewer than 5 rows\)"):
        matrix, names = build_confounder_matrix({"country": few}, categorical=["country"])
    assert names == ["country=FR", "country=US"] and matrix[0].tolist() == matrix[-1].tolist() == [0, 0]
    assert one_hot_levels({"country": few}, ["country"])["country"]["pooled_into"] == "DE"


def test_pooling_never_leaves_a_block_without_variance_nor_takes_a_name_the_data_has():
    """A log of 28 January days and one in February: pooling February into the reference would leave month no
    variance (an error where the column trained before), so a lone rare value stays a level of its own. A value
    named '(other)' in the data keeps its name; the pooled level takes another. Where every value is rare nothing
    can be pooled, and the warning says so."""
    days = [f"2024-01-{day:02d}" for day in range(1, 29)] + ["2024-02-01"]
    with pytest.warns(UserWarning, match=r"'month' feature .*: a value held by fewer than 5 training rows \('Feb'\) is kept as a level of its own, the only one beside 'Jan'"):
        _, names = build_confounder_matrix({"t": days}, timestamps=["t"], timestamp_features=["month"])
    assert names == ["t=Feb"]
    named = {"c": [1] * 40 + ["(other)"] * 40 + [2, 3, 4] * 2}
    with pytest.warns(UserWarning, match=r"pooled into one level c=\(\(other\)\)"):
        _, names = build_confounder_matrix(named, categorical=["c"])
    assert names == ["c=(other)", "c=((other))"]  # levels 1 (the reference), the data's '(other)', the pooled 2, 3, 4
    with pytest.warns(UserWarning, match=r"'c': every value is rare, 100 values held by fewer than 5 training rows each"):
        _, names = build_confounder_matrix({"c": [f"v{i % 100}" for i in range(400)]}, categorical=["c"])
    assert len(names) == 99


def test_a_whole_number_float_is_the_level_of_its_integer():
    """An int column with an empty cell reads as floats (16.0) from one file and as ints (16) from another: one level."""
    matrix, names = build_confounder_matrix({"hour": [16, 9, 16.0, 9.0, 16, 9]}, categorical=["hour"], fit_rows=2, min_level_rows=1)
    assert names == ["hour=16"] and matrix[:, 0].tolist() == [1, 0, 1, 0, 1, 0]


def test_pandas_missing_values_count_as_missing():
    pd = pytest.importorskip("pandas")
    columns = {
        "device": pd.Series(["web", None, "app", "web"], dtype="string"),
        "price": pd.Series([1.5, None, 2.0, 3.0], dtype="Float64"),
    }
    with pytest.raises(DataError, match=r"1 of 4 rows .*'price': 1 \(row 1\); 'device': 1 \(row 1\)"):
        build_confounder_matrix(columns, numeric=["price"], categorical=["device"], min_level_rows=1)
    _, names, kept, dropped = build_confounder_matrix(columns, numeric=["price"], categorical=["device"], drop_invalid=True, min_level_rows=1)
    assert names == ["price", "device=web"] and dropped == 1


def test_calendar_features_of_one_moment_agree_in_every_format():
    """2024-03-28T20:00:00-05:00 is Friday 01:00 UTC: its weekday is the one its epoch seconds give, as text too."""
    moments = ["2024-03-28T20:00:00-05:00", 1711674000, "1711674000", "2024-03-29 01:00:00 UTC", "2024-03-26T12:00:00"]
    matrix, names = build_confounder_matrix({"t": moments}, timestamps=["t"], timestamp_features=["weekday"], min_level_rows=1)
    assert names == ["t=Fri"] and matrix[:, 0].tolist() == [1, 1, 1, 1, 0]
    with pytest.raises(DataError, match=r"divide epoch milliseconds by 1000"):
        build_confounder_matrix({"t": ["2024-03-26", "1711674000000.5x"]}, timestamps=["t"])
    with pytest.raises(DataError, match=r"'202403290100'"):  # 12 digits: a compact minute, not seconds in the year 8383
        build_confounder_matrix({"t": ["2024-03-26", "202403290100"]}, timestamps=["t"])
