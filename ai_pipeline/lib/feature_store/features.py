"""User features declared once, computed incrementally: events -> daily partials -> running state -> windows.

`FEATURES` is the registry. Each `Feature` names its source column, its aggregation, an optional row filter
and its window (7, 30 or 90 days, or None for "since the start of history", the seed's per-user totals and
category pivot). From it come every table's columns and the documentation (`markdown_table`), and three steps,
each computed once per day:

1. `daily_aggregates`: one row per user and active day with the partials the registry needs (counts, exact
   decimal sums, the day's distinct categories, first and last event).
2. `advance_state`: the state at the end of day D is the state of D-1 plus D's partials: per user, running
   totals since the start of history, first/last event, active days, and the last day each category was seen.
   It touches D's partials and one row per known user, never older days.
3. `window_features`: a window of w days is a difference of running totals, state(D) - state(D-w), so a
   90-day window costs one join, not 90 days of partials and never raw events; distinct categories are the
   categories last seen within the window. Sums are decimals, so differences are exact.

Point in time: the features of day D are as of the END of D. State D holds partials of days <= D only, and a
day's partials hold only that day's events; nothing later can reach them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import polars as pl

from ai_pipeline.lib.ingest.contracts import CATEGORIES

WINDOWS = (7, 30, 90)
HORIZON = max(WINDOWS)
USER = "user_id"
DAY = "activity_date"  # the partials' day
STATE_DATE = "state_date"
FEATURE_DATE = "feature_date"
TIMESTAMP = pl.Datetime("us", "UTC")
# Sums are exact decimals with the 9 places contracts.DECIMAL_PATTERN allows: the same totals in any row order,
# and window differences without rounding drift.
EXACT_SUM = pl.Decimal(38, 9)
FIRST_EVENT, LAST_EVENT, ACTIVE, LAST_ACTIVE, SEEN = (
    "first_event_at",
    "last_event_at",
    "active_days",
    "last_active_day",
    "categories_last_seen",
)
SEEN_DTYPE = pl.List(pl.Struct({"category": pl.String, "last_seen": pl.Date}))

COUNT, SUM, MEAN, DISTINCT, MIN, MAX, ACTIVE_DAYS, PER_ACTIVE_DAY = (
    "count",
    "sum",
    "mean",
    "count_distinct",
    "min",
    "max",
    "active_days",
    "count_per_active_day",
)


@dataclass(frozen=True)
class Feature:
    name: str
    source: str  # the validated_events column it aggregates
    aggregation: str
    window_days: int | None  # None: since the start of history
    description: str
    where: tuple[str, str] | None = None  # (column, value): only events where column == value

    @property
    def dtype(self) -> pl.DataType:
        if self.aggregation in (COUNT, DISTINCT, ACTIVE_DAYS):
            return pl.Int64()
        if self.aggregation in (MIN, MAX):
            return TIMESTAMP
        return pl.Float64()

    @property
    def nullable(self) -> bool:
        """A mean of no values is null; every other feature of an active user has a value."""
        return self.aggregation == MEAN

    @property
    def numeric(self) -> bool:
        return self.dtype.is_numeric()


def _windowed() -> list[Feature]:
    features = []
    for w in WINDOWS:
        features += [
            Feature(f"amount_sum_{w}d", "amount", SUM, w, f"Total amount spent in the last {w} days."),
            Feature(f"amount_mean_{w}d", "amount", MEAN, w, f"Mean amount of events with an amount, last {w} days."),
            Feature(f"event_count_{w}d", "event_id", COUNT, w, f"Events in the last {w} days."),
            Feature(
                f"distinct_categories_{w}d", "category", DISTINCT, w, f"Distinct categories seen in the last {w} days."
            ),
            Feature(
                f"purchase_count_{w}d",
                "event_id",
                COUNT,
                w,
                f"Purchases in the last {w} days.",
                where=("event_type", "purchase"),
            ),
        ]
    return features


def _totals() -> list[Feature]:
    return [
        Feature(FIRST_EVENT, "event_time", MIN, None, "First event since the start of history."),
        Feature(LAST_EVENT, "event_time", MAX, None, "Last event (at most the feature date)."),
        Feature(ACTIVE, "event_time", ACTIVE_DAYS, None, "Days with at least one event."),
        Feature("avg_daily_events", "event_id", PER_ACTIVE_DAY, None, "Events per active day."),
    ]


def _pivot() -> list[Feature]:
    features = []
    for category in CATEGORIES:
        where = ("category", category)
        features += [
            Feature(
                f"category_{category}_amount", "amount", SUM, None, f"Amount spent on {category} (0 when none).", where
            ),
            Feature(
                f"category_{category}_count", "event_id", COUNT, None, f"Events in {category} (0 when none).", where
            ),
        ]
    return features


FEATURES: tuple[Feature, ...] = (*_windowed(), *_totals(), *_pivot())


# --- daily partials -------------------------------------------------------------------------------------------


def _partial_name(feature: Feature, kind: str) -> str:
    suffix = f"__{feature.where[0]}_{feature.where[1]}" if feature.where else ""
    return f"{feature.source}__{kind}{suffix}"


def _partial_kinds(feature: Feature) -> list[str]:
    return {
        COUNT: ["count"],
        SUM: ["sum"],
        MEAN: ["sum", "count"],
        DISTINCT: ["values"],
        MIN: ["min"],
        MAX: ["max"],
        ACTIVE_DAYS: [],
        PER_ACTIVE_DAY: ["count"],
    }[feature.aggregation]


def _partial_expr(feature: Feature, kind: str) -> pl.Expr:
    column = pl.col(feature.source)
    if feature.where:
        column = column.filter(pl.col(feature.where[0]) == feature.where[1])
    expr = {
        "count": lambda c: c.count().cast(pl.Int64),
        "sum": lambda c: c.cast(EXACT_SUM).sum().cast(EXACT_SUM),
        "values": lambda c: c.drop_nulls().unique().sort(),
        "min": lambda c: c.min(),
        "max": lambda c: c.max(),
    }[kind](column)
    return expr.alias(_partial_name(feature, kind))


def _partials(features: Sequence[Feature]) -> dict[str, pl.Expr]:
    """Every distinct partial the registry needs, in registry order."""
    seen: dict[str, pl.Expr] = {}
    for feature in features:
        for kind in _partial_kinds(feature):
            seen.setdefault(_partial_name(feature, kind), _partial_expr(feature, kind))
    return seen


def _running(features: Sequence[Feature]) -> list[str]:
    """The partials that add up over days (counts and sums): the state keeps their running totals."""
    return [name for name in _partials(features) if "__count" in name or "__sum" in name]


def daily_aggregates(events: pl.DataFrame, features: Sequence[Feature] = FEATURES) -> pl.DataFrame:
    """One row per (user, UTC day of event_time) with every partial; sorted by day and user."""
    return (
        events.lazy()
        .with_columns(pl.col("event_time").dt.date().alias(DAY))
        .group_by(DAY, USER)
        .agg(_partials(features).values())
        .sort(DAY, USER)
        .collect()
    )


# --- running state --------------------------------------------------------------------------------------------


def state_schema(features: Sequence[Feature] = FEATURES) -> dict[str, pl.DataType]:
    running = {name: (EXACT_SUM if "__sum" in name else pl.Int64()) for name in _running(features)}
    return {
        USER: pl.String(),
        STATE_DATE: pl.Date(),
        **running,
        FIRST_EVENT: TIMESTAMP,
        LAST_EVENT: TIMESTAMP,
        ACTIVE: pl.Int64(),
        LAST_ACTIVE: pl.Date(),
        SEEN: SEEN_DTYPE,
    }


def empty_state(features: Sequence[Feature] = FEATURES) -> pl.DataFrame:
    return pl.DataFrame(schema=state_schema(features))


def advance_state(
    previous: pl.DataFrame | None, daily: pl.DataFrame, day: date, features: Sequence[Feature] = FEATURES
) -> pl.DataFrame:
    """The state at the end of `day`: `previous` (the end of the day before; None at the start of history)
    plus the partials of `day` (other days in `daily` are ignored). One row per user seen so far."""
    schema = state_schema(features)
    running = _running(features)
    previous = empty_state(features) if previous is None else previous
    today = daily.lazy().filter(pl.col(DAY) == day)
    seen_today = (
        today.select(USER, pl.col("category__values").alias("category"))
        .explode("category")
        .filter(pl.col("category").is_not_null())
        .with_columns(pl.lit(day).alias("last_seen"))
    )
    # Today's users' earlier categories, less those seen again today (today is then their last day).
    seen_before = (
        previous.lazy()
        .join(today.select(USER), on=USER)
        .select(USER, SEEN)
        .explode(SEEN)
        .unnest(SEEN)
        .filter(pl.col("category").is_not_null())
        .join(seen_today.select(USER, "category"), on=[USER, "category"], how="anti")
    )
    seen = (
        pl.concat([seen_before, seen_today])
        .group_by(USER)
        .agg(pl.struct("category", "last_seen").sort_by("category").alias(f"{SEEN}__today"))
    )
    joined = (
        previous.lazy()
        .drop(STATE_DATE)
        .join(today.drop(DAY), on=USER, how="full", coalesce=True, suffix="__today")
        .join(seen, on=USER, how="left")
    )
    active_today = pl.col("event_time__min").is_not_null()
    return (
        joined.select(
            USER,
            pl.lit(day).alias(STATE_DATE),
            *[(pl.col(name).fill_null(0) + pl.col(f"{name}__today").fill_null(0)).alias(name) for name in running],
            pl.min_horizontal(FIRST_EVENT, "event_time__min").alias(FIRST_EVENT),
            pl.max_horizontal(LAST_EVENT, "event_time__max").alias(LAST_EVENT),
            (pl.col(ACTIVE).fill_null(0) + active_today.cast(pl.Int64)).alias(ACTIVE),
            pl.when(active_today).then(pl.lit(day)).otherwise(pl.col(LAST_ACTIVE)).alias(LAST_ACTIVE),
            pl.when(active_today)
            .then(pl.col(f"{SEEN}__today").fill_null(pl.lit([], dtype=SEEN_DTYPE)))
            .otherwise(pl.col(SEEN))
            .alias(SEEN),
        )
        .sort(USER)
        .collect()
        .cast(schema)
    )


# --- windows --------------------------------------------------------------------------------------------------


def _window_expr(feature: Feature, day: date) -> pl.Expr:
    """An expression over state(D) joined with state(D - w) (columns suffixed `__<w>d`, 0 when absent)."""

    def total(kind: str) -> pl.Expr:
        name = _partial_name(feature, kind)
        current = pl.col(name)
        return current if feature.window_days is None else current - pl.col(f"{name}__{feature.window_days}d")

    agg = feature.aggregation
    if agg in (COUNT, SUM):
        expr = total(_partial_kinds(feature)[0])
    elif agg == MEAN:
        expr = pl.when(total("count") > 0).then(total("sum").cast(pl.Float64) / total("count"))
    elif agg == DISTINCT:
        cutoff = day - timedelta(days=feature.window_days)
        expr = pl.col(SEEN).list.eval(pl.element().struct.field("last_seen") > cutoff).list.sum()
    elif agg == MIN:
        expr = pl.col(FIRST_EVENT)
    elif agg == MAX:
        expr = pl.col(LAST_EVENT)
    elif agg == ACTIVE_DAYS:
        expr = pl.col(ACTIVE)
    else:  # PER_ACTIVE_DAY
        expr = total("count") / pl.col(ACTIVE)
    return expr.cast(feature.dtype).alias(feature.name)


def feature_schema(features: Sequence[Feature] = FEATURES) -> dict[str, pl.DataType]:
    return {USER: pl.String(), FEATURE_DATE: pl.Date(), **{f.name: f.dtype for f in features}}


def state_days(day: date) -> list[date]:
    """The states the features of `day` read: `day` and `day - w` for every window."""
    return [day, *(day - timedelta(days=w) for w in WINDOWS)]


def window_features(
    states: Mapping[date, pl.DataFrame], day: date, features: Sequence[Feature] = FEATURES
) -> pl.DataFrame:
    """Features as of the end of `day` for every user with an event in the `HORIZON` days ending `day`.

    `states` maps a day to the state at its end; it must hold `day`, and `day - w` for every window unless that
    day is before the start of history (its running totals are then 0).
    """
    running = _running(features)
    empty = empty_state(features).select(USER, *running)
    frame = states[day].lazy().filter(pl.col(LAST_ACTIVE) > day - timedelta(days=HORIZON))
    for w in WINDOWS:
        past = states.get(day - timedelta(days=w), empty).select(USER, *running)
        frame = frame.join(
            past.lazy().rename({name: f"{name}__{w}d" for name in running}), on=USER, how="left"
        ).with_columns(pl.col(f"{name}__{w}d").fill_null(0) for name in running)
    return (
        frame.select(USER, pl.lit(day).alias(FEATURE_DATE), *(_window_expr(f, day) for f in features))
        .sort(USER)
        .collect()
        .cast(feature_schema(features))
    )


def run(
    daily: pl.DataFrame, history_start: date, days: Iterable[date], features: Sequence[Feature] = FEATURES
) -> Iterator[pl.DataFrame]:
    """Window features of each of `days` (ascending), advancing the state from `history_start` day by day, as
    the daily assets do; keeps only the states the windows still need."""
    wanted = sorted(days)
    states: dict[date, pl.DataFrame] = {}
    state, day = None, history_start
    for target in wanted:
        while day <= target:
            state = advance_state(state, daily, day, features)
            states[day] = state
            day += timedelta(days=1)
        yield window_features(states, target, features)
        for old in [d for d in states if d < target - timedelta(days=HORIZON)]:
            del states[old]


@dataclass(frozen=True)
class Coverage:
    """Which upstream days a computation needs, and which of them are there."""

    day: date
    expected: list[date]  # needed days on or after the start of history
    missing: list[date]  # expected days that were never computed
    before_history: int  # days of the `HORIZON`-day window ending `day` that are before the start of history

    @property
    def partial(self) -> bool:
        return self.before_history > 0

    @property
    def complete(self) -> bool:
        return not self.missing


def coverage(day: date, history_start: date, present: Iterable[date], needed: Iterable[date]) -> Coverage:
    """`needed` days before `history_start` are not expected (nothing was there); the others must be present."""
    expected = sorted(d for d in set(needed) if d >= history_start)
    have = set(present)
    before = max(0, min(HORIZON, (history_start - (day - timedelta(days=HORIZON - 1))).days))
    return Coverage(day, expected, [d for d in expected if d not in have], before)


def markdown_table(features: Sequence[Feature] = FEATURES) -> str:
    """The registry as the README documents it."""
    lines = ["| feature | source | aggregation | window | dtype | description |", "|---|---|---|---|---|---|"]
    for f in features:
        source = f"{f.source} where {f.where[0]} = {f.where[1]}" if f.where else f.source
        window = f"{f.window_days}d" if f.window_days else "since start"
        lines.append(f"| `{f.name}` | {source} | {f.aggregation} | {window} | {f.dtype} | {f.description} |")
    return "\n".join(lines)
