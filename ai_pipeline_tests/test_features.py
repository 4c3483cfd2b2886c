"""User features: the window features and the running state against brute-force references, point-in-time
correctness, determinism, the DuckDB round trip of states, coverage, the registry, and the feature checks."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import duckdb
import polars as pl
import polars.selectors as cs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ai_pipeline.lib.feature_store import feature_checks, features
from ai_pipeline.lib.ingest.sample import clean_events

# --- the expected features and state, written down independently of the registry -----------------------------

PIVOT_CATEGORIES = ("electronics", "books", "clothing", "home", "sports", "toys", "beauty", "grocery")
WINDOWED = ("amount_sum", "amount_mean", "event_count", "distinct_categories", "purchase_count")
TOTALS = ("first_event_at", "last_event_at", "active_days", "avg_daily_events")
PIVOT = tuple(f"category_{c}_{kind}" for c in PIVOT_CATEGORIES for kind in ("amount", "count"))
EXPECTED_NAMES = [f"{name}_{w}d" for w in (7, 30, 90) for name in WINDOWED] + [*TOTALS, *PIVOT]
WINDOWED_NAMES = [name for name in EXPECTED_NAMES if name.endswith(("_7d", "_30d", "_90d"))]
# The state: running totals (named like the daily partials they add up), then the per-user totals.
RUNNING = (
    "amount__sum",
    "amount__count",
    "event_id__count",
    "event_id__count__event_type_purchase",
    *(f"{kind}__category_{c}" for c in PIVOT_CATEGORIES for kind in ("amount__sum", "event_id__count")),
)
STATE_COLUMNS = [
    "user_id",
    "state_date",
    *RUNNING,
    "first_event_at",
    "last_event_at",
    "active_days",
    "last_active_day",
    "categories_last_seen",
]
SEEN_DTYPE = pl.List(pl.Struct({"category": pl.String, "last_seen": pl.Date}))
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


def _exact(amounts: Iterable[float | None]) -> Decimal:
    """The exact decimal total of amounts written with at most 9 decimal places (as the contract allows)."""
    return sum((Decimal(repr(a)) for a in amounts if a is not None), Decimal(0))


def _history(events: list[dict], start: date, day: date) -> list[dict]:
    """The events the computation of `day` sees: those on days in [start, day]."""
    return [e for e in events if _end_of(start - timedelta(days=1)) <= e["event_time"] < _end_of(day)]


def brute_force(events: list[dict], start: date, day: date) -> dict[str, dict]:
    """user -> feature -> value as of the end of `day`, history starting on `start`, straight from the
    definitions, one loop per user. Sums are exact decimals, converted to float once, as the definitions say."""
    end = _end_of(day)
    history = _history(events, start, day)
    result = {}
    for user in sorted({e["user_id"] for e in history}):
        mine = [e for e in history if e["user_id"] == user]

        def within(days: int, mine: list[dict] = mine) -> list[dict]:
            return [e for e in mine if end - timedelta(days=days) <= e["event_time"]]

        if not within(90):
            continue  # not active in the horizon: no row
        row: dict = {}
        for w in (7, 30, 90):
            window = within(w)
            amounts = [e["amount"] for e in window if e["amount"] is not None]
            total = float(_exact(amounts))
            row[f"amount_sum_{w}d"] = total
            row[f"amount_mean_{w}d"] = total / len(amounts) if amounts else None
            row[f"event_count_{w}d"] = len(window)
            row[f"distinct_categories_{w}d"] = len({e["category"] for e in window if e["category"] is not None})
            row[f"purchase_count_{w}d"] = len([e for e in window if e["event_type"] == "purchase"])
        # totals and pivot: since the start of history
        times = [e["event_time"] for e in mine]
        row["first_event_at"] = min(times)
        row["last_event_at"] = max(times)
        active = {t.date() for t in times}
        row["active_days"] = len(active)
        row["avg_daily_events"] = len(mine) / len(active)
        for category in PIVOT_CATEGORIES:
            mine_in = [e for e in mine if e["category"] == category]
            row[f"category_{category}_amount"] = float(_exact(e["amount"] for e in mine_in))
            row[f"category_{category}_count"] = len(mine_in)
        result[user] = row
    return result


def brute_force_state(events: list[dict], start: date, day: date) -> dict[str, dict]:
    """user -> state column -> value at the end of `day`, for every user with an event on a day in [start, day]."""
    history = _history(events, start, day)
    result = {}
    for user in sorted({e["user_id"] for e in history}):
        mine = [e for e in history if e["user_id"] == user]
        row: dict = {
            "user_id": user,
            "state_date": day,
            "amount__sum": _exact(e["amount"] for e in mine),
            "amount__count": len([e for e in mine if e["amount"] is not None]),
            "event_id__count": len(mine),
            "event_id__count__event_type_purchase": len([e for e in mine if e["event_type"] == "purchase"]),
        }
        for category in PIVOT_CATEGORIES:
            mine_in = [e for e in mine if e["category"] == category]
            row[f"amount__sum__category_{category}"] = _exact(e["amount"] for e in mine_in)
            row[f"event_id__count__category_{category}"] = len(mine_in)
        days = [e["event_time"].date() for e in mine]
        last_seen: dict[str, date] = {}
        for e in mine:
            if e["category"] is not None:
                last_seen[e["category"]] = max(last_seen.get(e["category"], date.min), e["event_time"].date())
        row |= {
            "first_event_at": min(e["event_time"] for e in mine),
            "last_event_at": max(e["event_time"] for e in mine),
            "active_days": len(set(days)),
            "last_active_day": max(days),
            "categories_last_seen": [{"category": c, "last_seen": last_seen[c]} for c in sorted(last_seen)],
        }
        result[user] = row
    return result


def _same(actual, expected) -> bool:
    """Exact equality of value and type: sums are exact decimals, so even the floats made from them agree."""
    return actual == expected and type(actual) is type(expected)


def assert_frame_matches(actual: pl.DataFrame, expected: dict[str, dict], columns: list[str], what: str) -> None:
    assert actual["user_id"].to_list() == sorted(expected), what
    for row in actual.iter_rows(named=True):
        want = expected[row["user_id"]]
        wrong = {n: (row[n], want[n]) for n in columns if not _same(row[n], want[n])}
        assert not wrong, f"user {row['user_id']}, {what}: (actual, expected) {wrong}"


def assert_matches_brute_force(events: list[dict], start: date, days: list[date]) -> list[pl.DataFrame]:
    """`run` from `start` over `days` (given in any order) equals the brute force, cell by cell."""
    daily = features.daily_aggregates(pl.DataFrame(events, schema=EVENT_SCHEMA))
    frames = list(features.run(daily, start, days))
    assert len(frames) == len(days)
    for day, actual in zip(sorted(days), frames, strict=True):
        expected = brute_force(events, start, day)
        assert actual.columns == ["user_id", "feature_date", *EXPECTED_NAMES]
        assert actual["feature_date"].to_list() == [day] * len(expected)
        assert_frame_matches(actual, expected, EXPECTED_NAMES, f"{day}, history from {start}")
    return frames


# --- property tests -------------------------------------------------------------------------------------------

START = date(2023, 11, 20)  # events over START + 0..100 days: four calendar months
DAY_US = 86_400_000_000
AMOUNTS = st.one_of(
    st.none(),
    st.integers(0, 100_000).map(lambda cents: cents / 100),
    st.integers(0, 10**13).map(lambda n: n / 10**9),  # all 9 decimal places the contract allows
)


@st.composite
def event_lists(draw, days: int = 100) -> list[dict]:
    n = draw(st.integers(0, 40))
    rows = []
    for i in range(n):
        offset = draw(st.integers(0, days))
        # the first and last microsecond of a day are where off-by-one errors live
        micros = draw(st.one_of(st.sampled_from([0, DAY_US - 1]), st.integers(0, DAY_US - 1)))
        at = datetime.combine(START + timedelta(days=offset), time(), UTC) + timedelta(microseconds=micros)
        category = draw(st.sampled_from([None, "books", "toys", "grocery", "home", "garden", "Books", "other stuff"]))
        rows.append(
            {
                "event_id": f"e{i}",
                "user_id": draw(st.sampled_from(["u1", "u2", "u3", "u4"])),
                "event_type": draw(st.sampled_from(["view", "click", "purchase", "logout", "signup", "cancellation"])),
                "event_time": at,
                "amount": draw(AMOUNTS),
                "category": category,
                "country": "DE",
            }
        )
    return rows


@pytest.mark.slow  # brute force over many simulated days
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=event_lists(),
    start_offset=st.integers(-5, 30),  # history may start before the first event or after some (ignored) ones
    # days early in history (partial windows) and long after the last events (users leave the horizon)
    day_offsets=st.lists(st.one_of(st.integers(0, 12), st.integers(0, 150)), min_size=1, max_size=3, unique=True),
)
def test_window_features_equal_a_brute_force_computation(
    events: list[dict], start_offset: int, day_offsets: list[int]
) -> None:
    start = START + timedelta(days=start_offset)
    assert_matches_brute_force(events, start, [start + timedelta(days=n) for n in day_offsets])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=event_lists(days=25), start_offset=st.integers(-3, 10))
def test_advance_state_equals_a_brute_force_state_day_after_day(events: list[dict], start_offset: int) -> None:
    start = START + timedelta(days=start_offset)
    daily = features.daily_aggregates(pl.DataFrame(events, schema=EVENT_SCHEMA))
    state = None
    for n in range(30):  # on past the last event: inactive days keep everything but the date
        day = start + timedelta(days=n)
        state = features.advance_state(state, daily, day)
        assert state.columns == STATE_COLUMNS
        assert state.schema == pl.Schema(features.state_schema())
        assert_frame_matches(state, brute_force_state(events, start, day), STATE_COLUMNS, f"state of {day}")


def test_brute_force_on_hand_made_edges() -> None:
    """Window edges, the start of history, null amounts and categories, a category outside the pivot."""
    day = date(2024, 3, 31)
    start = day - timedelta(days=95)

    def at(days_before: int, hh: int = 12, us: int = 0) -> datetime:
        return datetime.combine(day - timedelta(days=days_before), time(hh), UTC) + timedelta(microseconds=us)

    events = [
        # u1: 7d window starts at 2024-03-25 00:00; the event a microsecond before it is in 30d only
        {"user_id": "u1", "event_type": "purchase", "event_time": at(6, 0), "amount": 10.0, "category": "books"},
        {"user_id": "u1", "event_type": "view", "event_time": at(7, 23, 3_599_999_999), "amount": 30.0},
        {"user_id": "u1", "event_type": "purchase", "event_time": at(0, 23, 3_599_999_999), "category": "garden"},
        {"user_id": "u1", "event_type": "click", "event_time": at(89, 0), "amount": 5.0, "category": "books"},
        # outside the horizon, inside history: in the totals and the pivot, in no window
        {"user_id": "u1", "event_type": "click", "event_time": at(90, 23, 3_599_999_999), "amount": 1e6},
        {"user_id": "u1", "event_type": "click", "event_time": at(95, 0), "amount": 2.0, "category": "books"},
        {"user_id": "u1", "event_type": "view", "event_time": at(95, 23, 3_599_999_999)},
        # the last microsecond before the start of history and the first after the day are never seen
        {"user_id": "u1", "event_type": "purchase", "event_time": at(96, 23, 3_599_999_999), "category": "books"},
        {"user_id": "u1", "event_type": "purchase", "event_time": at(-1, 0), "amount": 1e6},
        # u2: only outside the horizon -> no row; u3: one null-amount event -> null means, zero sums
        {"user_id": "u2", "event_type": "view", "event_time": at(90), "amount": 3.0, "category": "toys"},
        {"user_id": "u3", "event_type": "view", "event_time": at(2), "category": None},
        # u4: an event before history is ignored, one in the horizon is all there is
        {"user_id": "u4", "event_type": "purchase", "event_time": at(100), "amount": 50.0, "category": "toys"},
        {"user_id": "u4", "event_type": "view", "event_time": at(10), "category": "toys"},
    ]
    events = [
        {"event_id": f"e{i}", "amount": None, "category": None, "country": "DE", **e} for i, e in enumerate(events)
    ]
    [frame] = assert_matches_brute_force(events, start, [day])
    assert frame["user_id"].to_list() == ["u1", "u3", "u4"]
    u1, u3, u4 = frame.rows(named=True)
    assert (u1["event_count_7d"], u1["event_count_30d"], u1["event_count_90d"]) == (2, 3, 4)
    assert (u1["amount_sum_7d"], u1["amount_sum_30d"], u1["amount_sum_90d"]) == (10.0, 40.0, 45.0)
    assert (u1["amount_mean_7d"], u1["amount_mean_90d"]) == (10.0, 15.0)
    assert (u1["distinct_categories_7d"], u1["distinct_categories_90d"], u1["purchase_count_7d"]) == (2, 2, 2)
    assert (u1["category_books_count"], u1["category_books_amount"], u1["category_toys_count"]) == (3, 17.0, 0)
    assert u1["first_event_at"] == at(95, 0) and u1["last_event_at"] == at(0, 23, 3_599_999_999)
    assert (u1["active_days"], u1["avg_daily_events"]) == (6, 7 / 6)
    assert u3["amount_mean_7d"] is None and u3["amount_sum_90d"] == 0.0 and u3["distinct_categories_90d"] == 0
    assert (u4["category_toys_count"], u4["category_toys_amount"], u4["first_event_at"]) == (1, 0.0, at(10))
    assert (u4["purchase_count_90d"], u4["active_days"]) == (0, 1)


# --- the events of the tests below ----------------------------------------------------------------------------

HISTORY_START = date(2023, 11, 10)  # the events start on 2023-11-01: nine days before history, ignored
D = date(2024, 2, 15)  # its 90-day window is all history
assert D - timedelta(days=89) > HISTORY_START


@pytest.fixture(scope="module")
def events() -> pl.DataFrame:
    return clean_events(date(2023, 11, 1), date(2024, 3, 31), events_per_day=30, users=25, seed=11)


@pytest.fixture(scope="module")
def daily(events: pl.DataFrame) -> pl.DataFrame:
    return features.daily_aggregates(events)


@pytest.fixture(scope="module")
def states(daily: pl.DataFrame) -> dict[date, pl.DataFrame]:
    """Every state from the start of history to D, advanced day by day."""
    result, state, day = {}, None, HISTORY_START
    while day <= D:
        state = features.advance_state(state, daily, day)
        result[day] = state
        day += timedelta(days=1)
    return result


def _run_one(daily: pl.DataFrame, day: date = D, start: date = HISTORY_START) -> pl.DataFrame:
    [frame] = features.run(daily, start, [day])
    return frame


def _features(events: pl.DataFrame, day: date = D) -> pl.DataFrame:
    return _run_one(features.daily_aggregates(events), day)


def _on(day: date) -> pl.Expr:
    return pl.col("event_time").dt.date() == day


# --- the running state ----------------------------------------------------------------------------------------


def test_a_state_is_the_state_before_plus_the_days_partials(events: pl.DataFrame, states: dict) -> None:
    previous = states[D - timedelta(days=1)]
    quiet = sorted(set(events.filter(_on(D))["user_id"]))[0]  # active on D, made inactive below
    t1, t2 = _end_of(D) - timedelta(hours=20), _end_of(D) - timedelta(microseconds=1)
    newcomer = pl.DataFrame(
        {
            "event_id": ["new-1", "new-2"],
            "user_id": ["newcomer", "newcomer"],
            "event_type": ["view", "purchase"],
            "event_time": [t2, t1],
            "amount": [None, 12.5],
            "category": [None, "books"],
            "country": ["DE", "DE"],
        },
        schema=EVENT_SCHEMA,
    )
    changed = pl.concat([events.filter(~(_on(D) & (pl.col("user_id") == quiet))), newcomer])
    daily = features.daily_aggregates(changed)
    today = daily.filter(pl.col("activity_date") == D)
    state = features.advance_state(previous, daily, D)
    assert features.advance_state(previous, today, D).equals(state)  # the other days' partials are not read
    assert state.columns == STATE_COLUMNS and state["state_date"].unique().to_list() == [D]

    before = {row["user_id"]: row for row in previous.iter_rows(named=True)}
    part = {row["user_id"]: row for row in today.iter_rows(named=True)}
    seen_today = {
        user: set(rows["category"].drop_nulls())
        for (user,), rows in changed.filter(_on(D)).partition_by("user_id", as_dict=True).items()
    }
    assert quiet in before and quiet not in part and "newcomer" in part and "newcomer" not in before
    assert state["user_id"].to_list() == sorted(before.keys() | part.keys())
    for row in state.iter_rows(named=True):
        user = row["user_id"]
        old, new = before.get(user), part.get(user)
        for name in RUNNING:
            assert row[name] == (old[name] if old else 0) + (new[name] if new else 0), (user, name)
        if new is None:  # inactive on D: everything kept but the date
            assert row == {**old, "state_date": D}, user
            continue
        assert row["active_days"] == (old["active_days"] if old else 0) + 1 and row["last_active_day"] == D
        assert row["first_event_at"] == (old["first_event_at"] if old else new["event_time__min"])
        assert row["last_event_at"] == new["event_time__max"]
        last_seen = {s["category"]: s["last_seen"] for s in (old["categories_last_seen"] if old else [])}
        last_seen |= dict.fromkeys(seen_today[user], D)
        assert row["categories_last_seen"] == [{"category": c, "last_seen": last_seen[c]} for c in sorted(last_seen)]

    [new] = state.filter(pl.col("user_id") == "newcomer").rows(named=True)
    assert new == {
        **dict.fromkeys(RUNNING, 0),
        "user_id": "newcomer",
        "state_date": D,
        "amount__sum": Decimal("12.5"),
        "amount__count": 1,
        "event_id__count": 2,
        "event_id__count__event_type_purchase": 1,
        "amount__sum__category_books": Decimal("12.5"),
        "event_id__count__category_books": 1,
        "first_event_at": t1,
        "last_event_at": t2,
        "active_days": 1,
        "last_active_day": D,
        "categories_last_seen": [{"category": "books", "last_seen": D}],
    }
    assert state["event_id__count"].sum() == previous["event_id__count"].sum() + today["event_id__count"].sum()


def _state_from_scratch(events: pl.DataFrame, start: date, day: date) -> pl.DataFrame:
    """The state of `day` aggregated in one go from the events of [start, day], without any earlier state."""

    def money(amount: pl.Expr) -> pl.Expr:
        return amount.cast(pl.Decimal(38, 9)).sum()

    mine = events.with_columns(pl.col("event_time").dt.date().alias("day")).filter(pl.col("day").is_between(start, day))
    totals = mine.group_by("user_id").agg(
        money(pl.col("amount")).alias("amount__sum"),
        pl.col("amount").count().alias("amount__count"),
        pl.len().alias("event_id__count"),
        (pl.col("event_type") == "purchase").sum().alias("event_id__count__event_type_purchase"),
        *(
            money(pl.col("amount").filter(pl.col("category") == c)).alias(f"amount__sum__category_{c}")
            for c in PIVOT_CATEGORIES
        ),
        *((pl.col("category") == c).sum().alias(f"event_id__count__category_{c}") for c in PIVOT_CATEGORIES),
        pl.col("event_time").min().alias("first_event_at"),
        pl.col("event_time").max().alias("last_event_at"),
        pl.col("day").n_unique().alias("active_days"),
        pl.col("day").max().alias("last_active_day"),
    )
    seen = (
        mine.filter(pl.col("category").is_not_null())
        .group_by("user_id", "category")
        .agg(pl.col("day").max().alias("last_seen"))
        .sort("user_id", "category")
        .group_by("user_id", maintain_order=True)
        .agg(pl.struct("category", "last_seen").alias("categories_last_seen"))
    )
    return (
        totals.join(seen, on="user_id", how="left")
        .with_columns(pl.col("categories_last_seen").fill_null(pl.lit([], dtype=SEEN_DTYPE)), state_date=pl.lit(day))
        .select(STATE_COLUMNS)
        .sort("user_id")
        .cast(features.state_schema())
    )


LONG_END = date(2024, 7, 5)  # 96 days after the last event: by then every user has left the horizon


@pytest.mark.slow  # brute force over many simulated days
def test_run_over_a_long_range_equals_states_computed_from_scratch(
    events: pl.DataFrame, daily: pl.DataFrame, states: dict
) -> None:
    scratch: dict[date, pl.DataFrame] = {}

    def from_scratch(day: date) -> pl.DataFrame:
        if day not in scratch:
            scratch[day] = _state_from_scratch(events, HISTORY_START, day)
        return scratch[day]

    for day, state in states.items():  # advanced day by day
        assert state.equals(from_scratch(day)), day

    days = [HISTORY_START + timedelta(days=n) for n in range((LONG_END - HISTORY_START).days + 1)]
    computed = dict(zip(days, features.run(daily, HISTORY_START, days), strict=True))
    heights, most_active = [], 0
    for day, frame in computed.items():
        needed = {d: from_scratch(d) for d in features.state_days(day) if d >= HISTORY_START}
        assert frame.equals(features.window_features(needed, day)), day
        verdict, _ = feature_checks.value_ranges(frame, day)
        assert verdict.passed, (day, verdict.description)
        heights.append(frame.height)
        most_active = max(most_active, frame["active_days"].max() or 0)
    assert heights[0] > 0 and max(heights) == 25 and heights[-1] == 0
    assert most_active > features.HORIZON  # the totals outgrow the horizon, and the range rules allow it

    # a few days, unordered: the same frames, in ascending order, though `run` drops the states it no longer needs
    some = [days[95], days[0], days[90], days[89], days[7]]
    for day, frame in zip(sorted(some), features.run(daily, HISTORY_START, some), strict=True):
        assert frame.equals(computed[day]), day


def test_features_from_states_read_back_from_duckdb_equal_the_in_memory_ones(
    daily: pl.DataFrame, states: dict, tmp_path
) -> None:
    """The Dagster assets store states (and partials) in DuckDB and compute from what they read back."""
    early = HISTORY_START + timedelta(days=10)  # a partial window: D-30 and D-90 are before history
    wanted = sorted(
        {*features.state_days(D), D - timedelta(days=1), *(d for d in features.state_days(early) if d >= HISTORY_START)}
    )
    stored = pl.concat([states[d] for d in wanted])  # noqa: F841 (DuckDB reads it by name)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:
        conn.execute("set TimeZone = 'America/New_York'")  # a session zone other than UTC
        conn.execute("create table user_feature_state as select * from stored")
        conn.execute("create table user_daily_aggregates as select * from daily")
        raw = conn.execute("select * from user_feature_state").pl()
        raw_daily = conn.execute("select * from user_daily_aggregates where activity_date = ?", [D]).pl()
    assert raw.schema["first_event_at"] == pl.Datetime("us", "America/New_York")  # the normalization matters

    def utc(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.with_columns(cs.datetime(time_zone="*").dt.convert_time_zone("UTC"))

    back = {key: frame for (key,), frame in utc(raw).partition_by("state_date", as_dict=True).items()}
    assert sorted(back) == wanted
    for day in wanted:
        assert back[day].sort("user_id").equals(states[day]), day
    for day in (D, early):
        needed = {d: back[d] for d in features.state_days(day) if d in back}
        assert features.window_features(needed, day).equals(features.window_features(states, day)), day
    # the state of D advanced from the state of D-1 and the partials of D, both read back
    assert features.advance_state(back[D - timedelta(days=1)], utc(raw_daily), D).equals(states[D])


# --- point in time --------------------------------------------------------------------------------------------


def test_features_of_a_day_ignore_everything_after_it(events: pl.DataFrame, states: dict) -> None:
    end = _end_of(D)
    base = _features(events)
    assert base.equals(features.window_features(states, D))
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


def test_daily_partials_of_later_or_earlier_days(daily: pl.DataFrame, states: dict) -> None:
    """Later days and days before the start of history change nothing; each day of history counts."""
    assert daily["activity_date"].max() > D and daily["activity_date"].min() < HISTORY_START
    base = features.window_features(states, D)  # from all of `daily`; equal to `run`'s (tested above)
    up_to_d = daily.filter(pl.col("activity_date") <= D)
    assert _run_one(up_to_d).equals(base)
    in_history = up_to_d.filter(pl.col("activity_date") >= HISTORY_START)
    assert in_history.height < up_to_d.height
    assert _run_one(in_history).equals(base)
    # the partials of D itself do count
    assert not _run_one(up_to_d.filter(pl.col("activity_date") < D)).equals(base)

    # a day of history before the horizon: no window reads it, the totals since the start of history do
    early = HISTORY_START + timedelta(days=3)
    assert early < D - timedelta(days=89)
    without = _run_one(daily.filter(pl.col("activity_date") != early))
    assert without.select("user_id", *WINDOWED_NAMES).equals(base.select("user_id", *WINDOWED_NAMES))
    active_early = set(daily.filter(pl.col("activity_date") == early)["user_id"])
    assert active_early
    for old, new in zip(base.iter_rows(named=True), without.iter_rows(named=True), strict=True):
        assert old["active_days"] - new["active_days"] == (old["user_id"] in active_early), old["user_id"]
    assert not without.select(PIVOT).equals(base.select(PIVOT))


def test_same_input_same_output_whatever_the_row_order(events: pl.DataFrame, daily: pl.DataFrame, states: dict) -> None:
    assert features.daily_aggregates(events).equals(daily)
    base = features.window_features(states, D)
    assert features.window_features(states, D).equals(base)
    before = D - timedelta(days=1)
    needed = [d for d in features.state_days(D) if d >= HISTORY_START]
    for seed in (1, 2, 3):
        shuffled = events.sample(fraction=1.0, shuffle=True, seed=seed)
        assert not shuffled["event_id"].equals(events["event_id"])
        assert features.daily_aggregates(shuffled).equals(daily), seed
        shuffled_daily = daily.sample(fraction=1.0, shuffle=True, seed=seed)
        shuffled_before = states[before].sample(fraction=1.0, shuffle=True, seed=seed)
        assert not shuffled_before["user_id"].equals(states[before]["user_id"])
        assert features.advance_state(shuffled_before, shuffled_daily, D).equals(states[D]), seed
        shuffled_states = {d: states[d].sample(fraction=1.0, shuffle=True, seed=seed) for d in needed}
        assert features.window_features(shuffled_states, D).equals(base), seed
    shuffled_daily = daily.sample(fraction=1.0, shuffle=True, seed=4)
    assert _run_one(shuffled_daily).equals(base)


def test_no_events_no_rows_with_the_full_schema() -> None:
    daily = features.daily_aggregates(pl.DataFrame(schema=EVENT_SCHEMA))
    assert daily.height == 0
    state = features.advance_state(None, daily, D)
    assert state.height == 0 and state.columns == STATE_COLUMNS
    assert state.schema == pl.Schema(features.state_schema())
    assert features.advance_state(state, daily, D + timedelta(days=1)).schema == state.schema
    frames = [*features.run(daily, D - timedelta(days=10), [D, D - timedelta(days=10)])]
    frames.append(features.window_features({D: state}, D))
    for frame in frames:
        assert frame.height == 0
        assert frame.schema == pl.Schema(features.feature_schema())


def test_output_schema_and_nullability(states: dict) -> None:
    frame = features.window_features(states, D)
    assert frame.schema == pl.Schema(features.feature_schema())
    assert frame.columns == ["user_id", "feature_date", *EXPECTED_NAMES]
    for f in features.FEATURES:
        assert f.nullable == f.name.startswith("amount_mean_"), f.name
        if not f.nullable:
            assert frame[f.name].null_count() == 0, f.name
    # purchases carry the only amounts in the sample, so some users have no mean in 7 days
    assert frame["amount_mean_7d"].null_count() > 0
    # a state has a value everywhere, categories included (an empty list for a user who never had one)
    state = states[D]
    assert state.columns == STATE_COLUMNS and state.schema == pl.Schema(features.state_schema())
    assert state.null_count().sum_horizontal().item() == 0
    assert state.schema["amount__sum"] == pl.Decimal(38, 9)


# --- coverage and the registry --------------------------------------------------------------------------------


def test_the_states_a_day_reads() -> None:
    assert features.state_days(D) == [D, D - timedelta(days=7), D - timedelta(days=30), D - timedelta(days=90)]


def test_coverage_at_the_start_of_history_is_partial() -> None:
    start = date(2024, 1, 1)
    day = start + timedelta(days=9)
    present = [start + timedelta(days=n) for n in range(10)]
    cover = features.coverage(day, start, present, features.state_days(day))
    assert cover.expected == [day - timedelta(days=7), day]  # D-30 and D-90: before history, not expected
    assert cover.missing == []
    assert cover.before_history == 80
    assert cover.partial and cover.complete
    verdict = feature_checks.completeness(cover)
    assert verdict.passed and verdict.severity == "WARN"
    assert (
        verdict.description == "all 2 upstream days present; partial window: 80 of 90 days before the start of history"
    )

    # the first state needs the state of the day before it, which is before history
    first = features.coverage(start, start, [], [start - timedelta(days=1)])
    assert first.expected == [] and first.complete and first.before_history == 89
    # the start of history itself is expected
    week = features.coverage(start + timedelta(days=7), start, present, features.state_days(start + timedelta(days=7)))
    assert week.expected == [start, start + timedelta(days=7)] and week.complete and week.before_history == 82
    # a day before history: the whole window is
    before = features.coverage(start - timedelta(days=5), start, [], [start - timedelta(days=6), start])
    assert before.expected == before.missing == [start] and before.before_history == 90
    # the last partial day and the first full one
    assert features.coverage(start + timedelta(days=88), start, present, []).before_history == 1
    full = features.coverage(start + timedelta(days=89), start, present, [])
    assert full.before_history == 0 and not full.partial


def test_coverage_reports_the_missing_days() -> None:
    start = date(2023, 1, 1)
    day = date(2024, 1, 31)
    needed = features.state_days(day)
    gaps = [day - timedelta(days=90), day]
    present = [d for d in needed if d not in gaps] + [date(2022, 5, 5), date(2024, 1, 1)]  # not needed: ignored
    cover = features.coverage(day, start, present, needed)
    assert cover.expected == sorted(needed)
    assert cover.missing == sorted(gaps)
    assert cover.before_history == 0
    assert not cover.partial and not cover.complete
    verdict = feature_checks.completeness(cover)
    assert not verdict.passed and verdict.description.startswith("2 upstream days missing")
    # a needed day before the start of history is never missing; the others are
    later_start = day - timedelta(days=60)
    cover = features.coverage(day, later_start, [day], needed)
    assert cover.expected == [day - timedelta(days=30), day - timedelta(days=7), day]
    assert cover.missing == [day - timedelta(days=30), day - timedelta(days=7)] and cover.before_history == 29
    full = features.coverage(day, start, needed, needed)
    assert full.complete and not full.partial
    verdict = feature_checks.completeness(full)
    assert verdict.passed and verdict.description == "all 4 upstream days present"


def test_registry_invariants() -> None:
    names = [f.name for f in features.FEATURES]
    assert len(names) == len(set(names))
    assert names == EXPECTED_NAMES
    families: dict[tuple, set[int | None]] = {}
    for f in features.FEATURES:
        families.setdefault((f.source, f.aggregation, f.where), set()).add(f.window_days)
    windowed = {family: windows for family, windows in families.items() if windows != {None}}
    assert len(windowed) == len(WINDOWED)
    assert all(windows == {7, 30, 90} for windows in windowed.values())
    for f in features.FEATURES:
        assert f.description
        if f.window_days is None:  # since the start of history: totals and pivot
            assert f.name in TOTALS or f.name in PIVOT, f.name
        else:
            assert f.name.endswith(f"_{f.window_days}d"), f.name
    assert [f.name for f in features.FEATURES if f.window_days] == WINDOWED_NAMES
    table = features.markdown_table().splitlines()
    assert len(table) == 2 + len(features.FEATURES)
    for f in features.FEATURES:
        [line] = [line for line in table if line.startswith(f"| `{f.name}` |")]
        assert ("| since start |" in line) == (f.window_days is None), line


# --- feature checks -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def day_features(states: dict) -> pl.DataFrame:
    return features.window_features(states, D)


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
        "category_books_count >= 0",
        "active_days >= 1",
        "first_event_at before the end of the day",
        "last_event_at before the end of the day",
        "last_event_at within the last 90 days",
        "first_event_at <= last_event_at",
    ]:
        assert rule in counts, rule
    # totals since the start of history are bounded by no window
    assert not [rule for rule in counts if rule.startswith(("active_days", "category_")) and "<=" in rule]
    assert "first_event_at within the last 90 days" not in counts


def _first_row_with(frame: pl.DataFrame, condition: pl.Expr) -> int:
    return frame.with_row_index("i").filter(condition)["i"][0]


def test_value_ranges_catch_each_corruption(day_features: pl.DataFrame) -> None:
    frame, end = day_features, _end_of(D)
    busy = _first_row_with(
        frame,
        (pl.col("amount_sum_30d") > 0)
        & (pl.col("event_count_30d") > 1)
        & (pl.col("last_event_at") < end - timedelta(hours=1)),
    )
    row = frame.row(busy, named=True)
    long_ago = end - timedelta(days=90, microseconds=1)
    corruptions = [
        ({"event_count_7d": -1}, {"event_count_7d >= 0"}),
        ({"category_books_amount": -0.01}, {"category_books_amount >= 0"}),
        ({"amount_mean_30d": row["amount_sum_30d"] + 1.0}, {"amount_mean_30d <= amount_sum_30d"}),
        ({"event_count_7d": row["event_count_30d"] + 1}, {"event_count_7d <= event_count_30d"}),
        ({"active_days": 0}, {"active_days >= 1"}),
        ({"last_event_at": end}, {"last_event_at before the end of the day"}),
        (
            {"first_event_at": end, "last_event_at": end},
            {"first_event_at before the end of the day", "last_event_at before the end of the day"},
        ),
        ({"first_event_at": long_ago, "last_event_at": long_ago}, {"last_event_at within the last 90 days"}),
        ({"first_event_at": row["last_event_at"] + timedelta(microseconds=1)}, {"first_event_at <= last_event_at"}),
    ]
    for changes, rules in corruptions:
        corrupt = frame
        for column, value in changes.items():
            corrupt = _set(corrupt, busy, column, value)
        verdict, counts = feature_checks.value_ranges(corrupt, D)
        broken = {name: n for name, n in counts.items() if n}
        assert not verdict.passed and broken == dict.fromkeys(rules, 1), (changes, broken)
        assert all(f"{rule}: 1 rows" in verdict.description for rule in rules)
    # the edges themselves are fine: an event in the first and in the last microsecond of the horizon
    for at in (end - timedelta(days=90), end - timedelta(microseconds=1)):
        edge = _set(_set(frame, busy, "first_event_at", at), busy, "last_event_at", at)
        assert feature_checks.value_ranges(edge, D)[0].passed, at


def test_null_rates(day_features: pl.DataFrame) -> None:
    verdict, rates = feature_checks.null_rates(day_features)
    assert verdict.passed, verdict.description
    assert rates["event_count_30d"] == 0.0
    assert rates["amount_mean_7d"] == day_features["amount_mean_7d"].null_count() / day_features.height > 0
    broken = _set(day_features, 3, "event_count_30d", None)
    verdict, rates = feature_checks.null_rates(broken)
    assert not verdict.passed and "event_count_30d" in verdict.description
    assert rates["event_count_30d"] == 1 / day_features.height
    assert not feature_checks.null_rates(_set(day_features, 3, "category_books_amount", None))[0].passed
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
