"""User features: the window features against a brute-force reference, point-in-time correctness, determinism,
coverage, the registry, and the feature checks that judge a day of features."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ai_pipeline.lib import feature_checks, features
from ai_pipeline.lib.sample import clean_events

# --- the expected features, written down independently of the registry ---------------------------------------

PIVOT_CATEGORIES = ("electronics", "books", "clothing", "home", "sports", "toys", "beauty", "grocery")
WINDOWED = ("amount_sum", "amount_mean", "event_count", "distinct_categories", "purchase_count")
EXPECTED_NAMES = (
    [f"{name}_{w}d" for w in (7, 30, 90) for name in WINDOWED]
    + ["first_event_at", "last_event_at", "active_days", "avg_daily_events"]
    + [f"category_{c}_{kind}_90d" for c in PIVOT_CATEGORIES for kind in ("amount", "count")]
)
EVENT_SCHEMA = {
    "event_id": pl.String,
    "user_id": pl.String,
    "event_type": pl.String,
    "event_time": pl.Datetime("us", "UTC"),
    "amount": pl.Float64,
    "category": pl.String,
    "country": pl.String,
}


def _end_of(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(), UTC)


def brute_force(events: list[dict], day: date) -> dict[str, dict]:
    """user -> feature -> value as of the end of `day`, straight from the definitions, one loop per user."""
    end = _end_of(day)
    result = {}
    for user in sorted({e["user_id"] for e in events}):
        mine = [e for e in events if e["user_id"] == user]

        def within(days: int, mine: list[dict] = mine) -> list[dict]:
            return [e for e in mine if end - timedelta(days=days) <= e["event_time"] < end]

        last_90 = within(90)
        if not last_90:
            continue  # not active in the horizon: no row
        row: dict = {}
        for w in (7, 30, 90):
            window = within(w)
            amounts = [e["amount"] for e in window if e["amount"] is not None]
            row[f"amount_sum_{w}d"] = sum(amounts) if amounts else 0.0
            row[f"amount_mean_{w}d"] = sum(amounts) / len(amounts) if amounts else None
            row[f"event_count_{w}d"] = len(window)
            row[f"distinct_categories_{w}d"] = len({e["category"] for e in window if e["category"] is not None})
            row[f"purchase_count_{w}d"] = len([e for e in window if e["event_type"] == "purchase"])
        times = [e["event_time"] for e in last_90]
        row["first_event_at"] = min(times)
        row["last_event_at"] = max(times)
        active = {t.date() for t in times}
        row["active_days"] = len(active)
        row["avg_daily_events"] = len(last_90) / len(active)
        for category in PIVOT_CATEGORIES:
            mine_in = [e for e in last_90 if e["category"] == category]
            row[f"category_{category}_amount_90d"] = sum((e["amount"] for e in mine_in if e["amount"] is not None), 0.0)
            row[f"category_{category}_count_90d"] = len(mine_in)
        result[user] = row
    return result


def _same(actual, expected) -> bool:
    if isinstance(expected, float) and not isinstance(actual, bool):
        return actual is not None and math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-9)
    return actual == expected and type(actual) is type(expected)


def assert_matches_brute_force(events: list[dict], day: date) -> None:
    frame = pl.DataFrame(events, schema=EVENT_SCHEMA)
    actual = features.window_features(features.daily_aggregates(frame), day)
    expected = brute_force(events, day)
    assert actual.columns == ["user_id", "feature_date", *EXPECTED_NAMES]
    assert actual["user_id"].to_list() == sorted(expected)
    assert actual["feature_date"].to_list() == [day] * len(expected)
    for row in actual.iter_rows(named=True):
        want = expected[row["user_id"]]
        wrong = {n: (row[n], want[n]) for n in EXPECTED_NAMES if not _same(row[n], want[n])}
        assert not wrong, f"user {row['user_id']} on {day}: (actual, expected) {wrong}"


# --- property test --------------------------------------------------------------------------------------------

START = date(2023, 11, 20)  # events over START + 0..100 days: four calendar months
DAY_US = 86_400_000_000


@st.composite
def event_lists(draw) -> list[dict]:
    n = draw(st.integers(0, 40))
    rows = []
    for i in range(n):
        offset = draw(st.integers(0, 100))
        # the first and last microsecond of a day are where off-by-one errors live
        micros = draw(st.one_of(st.sampled_from([0, DAY_US - 1]), st.integers(0, DAY_US - 1)))
        at = datetime.combine(START + timedelta(days=offset), time(), UTC) + timedelta(microseconds=micros)
        amount = draw(st.one_of(st.none(), st.integers(0, 100_000).map(lambda c: c / 100)))
        category = draw(st.sampled_from([None, "books", "toys", "grocery", "home", "garden", "Books", "other stuff"]))
        rows.append(
            {
                "event_id": f"e{i}",
                "user_id": draw(st.sampled_from(["u1", "u2", "u3", "u4"])),
                "event_type": draw(st.sampled_from(["view", "click", "purchase", "logout", "signup", "cancellation"])),
                "event_time": at,
                "amount": amount,
                "category": category,
                "country": "DE",
            }
        )
    return rows


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=event_lists(), offsets=st.lists(st.integers(-3, 200), min_size=1, max_size=3))
def test_window_features_equal_a_brute_force_computation(events: list[dict], offsets: list[int]) -> None:
    for offset in offsets:
        assert_matches_brute_force(events, START + timedelta(days=offset))


def test_brute_force_on_hand_made_edges() -> None:
    """Window edges, null amounts and categories, a category outside the pivot, all deterministic."""
    day = date(2024, 3, 31)

    def at(days_before: int, hh: int = 12, us: int = 0) -> datetime:
        return datetime.combine(day - timedelta(days=days_before), time(hh), UTC) + timedelta(microseconds=us)

    events = [
        # u1: 7d window starts at 2024-03-25 00:00; the event a microsecond before it is in 30d only
        {"user_id": "u1", "event_type": "purchase", "event_time": at(6, 0), "amount": 10.0, "category": "books"},
        {"user_id": "u1", "event_type": "view", "event_time": at(7, 23, 3_599_999_999), "amount": 30.0},
        {"user_id": "u1", "event_type": "purchase", "event_time": at(0, 23, 3_599_999_999), "category": "garden"},
        {"user_id": "u1", "event_type": "click", "event_time": at(89, 0), "amount": 5.0, "category": "books"},
        {"user_id": "u1", "event_type": "click", "event_time": at(90, 23, 3_599_999_999), "amount": 1e6},
        # the next day's first microsecond is never part of `day`
        {"user_id": "u1", "event_type": "purchase", "event_time": at(-1, 0), "amount": 1e6},
        # u2: only outside the horizon -> no row; u3: one null-amount event -> null means, zero sums
        {"user_id": "u2", "event_type": "view", "event_time": at(90), "amount": 3.0, "category": "toys"},
        {"user_id": "u3", "event_type": "view", "event_time": at(2), "category": None},
    ]
    events = [
        {"event_id": f"e{i}", "amount": None, "category": None, "country": "DE", **e} for i, e in enumerate(events)
    ]
    assert_matches_brute_force(events, day)
    frame = features.window_features(features.daily_aggregates(pl.DataFrame(events, schema=EVENT_SCHEMA)), day)
    u1, u3 = frame.row(0, named=True), frame.row(1, named=True)
    assert frame["user_id"].to_list() == ["u1", "u3"]
    assert (u1["event_count_7d"], u1["event_count_30d"], u1["event_count_90d"]) == (2, 3, 4)
    assert (u1["amount_sum_7d"], u1["amount_sum_30d"], u1["amount_sum_90d"]) == (10.0, 40.0, 45.0)
    assert (u1["amount_mean_7d"], u1["amount_mean_90d"]) == (10.0, 15.0)
    assert (u1["distinct_categories_7d"], u1["distinct_categories_90d"]) == (2, 2)
    assert (u1["purchase_count_7d"], u1["category_books_count_90d"], u1["category_books_amount_90d"]) == (2, 2, 15.0)
    assert u1["first_event_at"] == at(89, 0) and u1["last_event_at"] == at(0, 23, 3_599_999_999)
    assert (u1["active_days"], u1["avg_daily_events"]) == (4, 1.0)
    assert u3["amount_mean_7d"] is None and u3["amount_sum_90d"] == 0.0 and u3["distinct_categories_90d"] == 0


# --- point in time --------------------------------------------------------------------------------------------

D = date(2024, 2, 15)


@pytest.fixture(scope="module")
def events() -> pl.DataFrame:
    return clean_events(date(2023, 11, 1), date(2024, 3, 31), events_per_day=30, users=25, seed=11)


def _features(events: pl.DataFrame, day: date = D) -> pl.DataFrame:
    return features.window_features(features.daily_aggregates(events), day)


def test_features_of_a_day_ignore_everything_after_it(events: pl.DataFrame) -> None:
    end = _end_of(D)
    base = _features(events)
    assert base.height > 10
    after = pl.col("event_time") >= end
    assert events.filter(after).height > 1000  # the test means something

    later = pl.DataFrame(
        {
            "event_id": ["late-1", "late-2", "late-3"],
            "user_id": [base["user_id"][0], "brand-new-user", base["user_id"][1]],
            "event_type": ["purchase", "purchase", "view"],
            "event_time": [end, end + timedelta(days=3), end + timedelta(microseconds=1)],
            "amount": [999.0, 5.0, None],
            "category": ["books", "toys", None],
            "country": ["DE", "FR", "DE"],
        },
        schema=EVENT_SCHEMA,
    )
    changed = events.with_columns(
        pl.when(after).then(pl.col("amount") * 10).otherwise(pl.col("amount")).alias("amount"),
        pl.when(after).then(pl.lit("something else")).otherwise(pl.col("category")).alias("category"),
        pl.when(after).then(pl.lit("purchase")).otherwise(pl.col("event_type")).alias("event_type"),
    )
    variants = {
        "later events added": pl.concat([events, later]),
        "later events changed": changed,
        "later events removed": events.filter(~after),
        "half of the later events removed": events.filter(~after | (pl.col("event_id").str.ends_with("0"))),
    }
    for what, variant in variants.items():
        assert _features(variant).equals(base), what

    # the last microsecond of D does belong to D: the same change there shows
    last = later.head(1).with_columns(pl.lit(end - timedelta(microseconds=1)).alias("event_time"))
    assert not _features(pl.concat([events, last])).equals(base)


def test_daily_partials_of_later_or_older_days_do_not_change_a_day(events: pl.DataFrame) -> None:
    daily = features.daily_aggregates(events)
    assert daily["activity_date"].max() > D
    base = features.window_features(daily, D)
    up_to_d = daily.filter(pl.col("activity_date") <= D)
    assert features.window_features(up_to_d, D).equals(base)
    # partials of the horizon only (the 90 days ending D) give the same frame too
    horizon = up_to_d.filter(pl.col("activity_date") > D - timedelta(days=90))
    assert horizon.height < up_to_d.height
    assert features.window_features(horizon, D).equals(base)
    # and one day fewer does not
    assert not features.window_features(up_to_d.filter(pl.col("activity_date") < D), D).equals(base)


def test_same_input_same_output_whatever_the_row_order(events: pl.DataFrame) -> None:
    daily = features.daily_aggregates(events)
    assert features.daily_aggregates(events).equals(daily)
    assert features.window_features(daily, D).equals(features.window_features(daily, D))
    for seed in (1, 2, 3):
        shuffled = events.sample(fraction=1.0, shuffle=True, seed=seed)
        assert not shuffled["event_id"].equals(events["event_id"])
        assert features.daily_aggregates(shuffled).equals(daily), seed
        shuffled_daily = daily.sample(fraction=1.0, shuffle=True, seed=seed)
        assert features.window_features(shuffled_daily, D).equals(features.window_features(daily, D)), seed
        assert _features(shuffled).equals(_features(events)), seed


def test_no_events_no_rows_with_the_full_schema() -> None:
    empty = pl.DataFrame(schema=EVENT_SCHEMA)
    frame = features.window_features(features.daily_aggregates(empty), D)
    assert frame.height == 0
    assert frame.schema == pl.Schema(features.feature_schema())


def test_output_schema_and_nullability(events: pl.DataFrame) -> None:
    frame = _features(events)
    assert frame.schema == pl.Schema(features.feature_schema())
    assert frame.columns == ["user_id", "feature_date", *EXPECTED_NAMES]
    for f in features.FEATURES:
        assert f.nullable == f.name.startswith("amount_mean_"), f.name
        if not f.nullable:
            assert frame[f.name].null_count() == 0, f.name
    # purchases carry the only amounts in the sample, so some users have no mean in 7 days
    assert frame["amount_mean_7d"].null_count() > 0


# --- coverage and the registry --------------------------------------------------------------------------------


def test_coverage_at_the_start_of_history_is_partial() -> None:
    start = date(2024, 1, 1)
    day = start + timedelta(days=9)
    present = [start + timedelta(days=n) for n in range(10)]
    cover = features.coverage(day, start, present)
    assert cover.expected == present
    assert cover.missing == []
    assert cover.before_history == 80
    assert cover.partial and cover.complete
    verdict = feature_checks.completeness(cover)
    assert verdict.passed and "10 of 90" in verdict.description and "80 days before" in verdict.description


def test_coverage_reports_the_missing_days() -> None:
    start = date(2023, 1, 1)
    day = date(2024, 1, 31)
    window = [day - timedelta(days=n) for n in range(89, -1, -1)]
    gaps = [date(2023, 11, 3), date(2024, 1, 31)]
    present = [d for d in window if d not in gaps] + [date(2022, 5, 5), date(2024, 2, 1)]  # outside: ignored
    cover = features.coverage(day, start, present)
    assert cover.expected == window
    assert window[0] == date(2023, 11, 3)
    assert cover.missing == gaps
    assert cover.before_history == 0
    assert not cover.partial and not cover.complete
    verdict = feature_checks.completeness(cover)
    assert not verdict.passed and "2 upstream days missing" in verdict.description
    full = features.coverage(day, start, window)
    assert full.complete and not full.partial and feature_checks.completeness(full).passed


def test_registry_invariants() -> None:
    names = [f.name for f in features.FEATURES]
    assert len(names) == len(set(names))
    assert names == EXPECTED_NAMES
    families: dict[tuple, set[int]] = {}
    for f in features.FEATURES:
        families.setdefault((f.source, f.aggregation, f.where), set()).add(f.window_days)
    windowed = {family: windows for family, windows in families.items() if min(windows) < features.HORIZON}
    assert len(windowed) == len(WINDOWED)
    assert all(windows == {7, 30, 90} for windows in windowed.values())
    for f in features.FEATURES:
        if (f.source, f.aggregation, f.where) in windowed:
            assert f.name.endswith(f"_{f.window_days}d"), f.name
    for f in features.FEATURES:
        assert f.window_days in (7, 30, 90) and f.description
    table = features.markdown_table().splitlines()
    assert len(table) == 2 + len(features.FEATURES)
    for name in EXPECTED_NAMES:
        assert len([line for line in table if line.startswith(f"| `{name}` |")]) == 1, name


# --- feature checks -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def day_features(events: pl.DataFrame) -> pl.DataFrame:
    return _features(events)


def _set(frame: pl.DataFrame, row: int, column: str, value) -> pl.DataFrame:
    series = frame[column].clone()
    series[row] = value
    return frame.with_columns(series)


def test_value_ranges_hold_on_real_features(day_features: pl.DataFrame) -> None:
    verdict, counts = feature_checks.value_ranges(day_features, D)
    assert verdict.passed, verdict.description
    assert len(counts) > 40 and set(counts.values()) == {0}
    for rule in [
        "event_count_7d >= 0",
        "amount_mean_30d <= amount_sum_30d",
        "event_count_7d <= event_count_30d",
        "distinct_categories_30d <= distinct_categories_90d",
        "1 <= active_days <= 90",
        "first_event_at within the window",
        "first_event_at <= last_event_at",
    ]:
        assert rule in counts, rule


def _first_row_with(frame: pl.DataFrame, condition: pl.Expr) -> int:
    return frame.with_row_index("i").filter(condition)["i"][0]


def test_value_ranges_catch_each_corruption(day_features: pl.DataFrame) -> None:
    frame = day_features
    busy = _first_row_with(frame, (pl.col("amount_sum_30d") > 0) & (pl.col("event_count_30d") > 1))
    row = frame.row(busy, named=True)
    corruptions = {
        "event_count_7d >= 0": ("event_count_7d", -1),
        "amount_mean_30d <= amount_sum_30d": ("amount_mean_30d", row["amount_sum_30d"] + 1.0),
        "event_count_7d <= event_count_30d": ("event_count_7d", row["event_count_30d"] + 1),
        "1 <= active_days <= 90": ("active_days", 0),
        "first_event_at within the window": ("first_event_at", _end_of(D) - timedelta(days=90, microseconds=1)),
        "last_event_at within the window": ("last_event_at", _end_of(D)),
    }
    for rule, (column, value) in corruptions.items():
        verdict, counts = feature_checks.value_ranges(_set(frame, busy, column, value), D)
        broken = {name: n for name, n in counts.items() if n}
        assert not verdict.passed and broken == {rule: 1}, (rule, broken)
        assert f"{rule}: 1 rows" in verdict.description


def test_null_rates(day_features: pl.DataFrame) -> None:
    verdict, rates = feature_checks.null_rates(day_features)
    assert verdict.passed, verdict.description
    assert rates["event_count_30d"] == 0.0
    assert rates["amount_mean_7d"] == day_features["amount_mean_7d"].null_count() / day_features.height > 0
    broken = _set(day_features, 3, "event_count_30d", None)
    verdict, rates = feature_checks.null_rates(broken)
    assert not verdict.passed and "event_count_30d" in verdict.description
    assert rates["event_count_30d"] == 1 / day_features.height
    # a null mean is not a defect
    null_mean = _set(day_features, 3, "amount_mean_90d", None)
    assert feature_checks.null_rates(null_mean)[0].passed


def test_row_count(day_features: pl.DataFrame) -> None:
    assert feature_checks.row_count(day_features, day_features.height).passed
    assert not feature_checks.row_count(day_features, day_features.height + 1).passed
    assert not feature_checks.row_count(pl.concat([day_features, day_features.head(1)]), day_features.height + 1).passed


def test_consistency(day_features: pl.DataFrame) -> None:
    offline = day_features
    assert offline["amount_mean_7d"].null_count() > 0  # null means must compare equal
    verdict = feature_checks.consistency(offline.clone(), offline)
    assert verdict.passed, verdict.description
    shuffled = offline.sample(fraction=1.0, shuffle=True, seed=5)
    assert feature_checks.consistency(shuffled, offline).passed

    changed = _set(offline, 2, "amount_sum_90d", offline["amount_sum_90d"][2] + 0.01)
    verdict = feature_checks.consistency(changed, offline)
    assert not verdict.passed and "1 online rows without an identical offline row" in verdict.description

    missing = offline.filter(pl.col("user_id") != offline["user_id"][4])
    verdict = feature_checks.consistency(missing, offline)
    assert not verdict.passed
    assert f"{offline.height - 1} vs {offline.height} rows" in verdict.description

    assert not feature_checks.consistency(offline.drop("active_days"), offline).passed
