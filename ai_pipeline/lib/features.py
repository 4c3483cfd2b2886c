"""User features declared once, computed incrementally: events -> daily partials -> 7/30/90-day windows.

`FEATURES` is the registry. Each `Feature` names its source column, its aggregation, an optional row filter
and its window; from it come the daily partial aggregates (`daily_aggregates`, one row per user and active
day, computed once per day), the window features (`window_features`, which combine at most `HORIZON` days of
partials and never reads raw events), the tables' schemas, and the documentation (`markdown_table`).

Point in time: the features of day D are as of the END of D. They read partials of days in (D - window, D]
only, whatever else the input holds, and the partial of a day holds only that day's events.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import polars as pl

from ai_pipeline.lib.contracts import CATEGORIES

WINDOWS = (7, 30, 90)
HORIZON = max(WINDOWS)
USER = "user_id"
DAY = "activity_date"  # the partials' day
FEATURE_DATE = "feature_date"
TIMESTAMP = pl.Datetime("us", "UTC")

# Float sums depend on the order of their terms (and Polars drops a sort before a sum), so amounts are summed
# exactly, as decimals with the 9 places contracts.DECIMAL_PATTERN allows: the same features in any row order.
EXACT_SUM = pl.Decimal(38, 9)

# aggregation -> (partials it needs, how they combine over a window, dtype, may it be null)
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
    window_days: int
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
        Feature("first_event_at", "event_time", MIN, HORIZON, f"First event within the last {HORIZON} days."),
        Feature("last_event_at", "event_time", MAX, HORIZON, f"Last event within the last {HORIZON} days."),
        Feature("active_days", "event_time", ACTIVE_DAYS, HORIZON, f"Days with events, last {HORIZON} days."),
        Feature(
            "avg_daily_events",
            "event_id",
            PER_ACTIVE_DAY,
            HORIZON,
            f"Events per active day, last {HORIZON} days.",
        ),
    ]


def _pivot() -> list[Feature]:
    features = []
    for category in CATEGORIES:
        where = ("category", category)
        features += [
            Feature(
                f"category_{category}_amount_{HORIZON}d",
                "amount",
                SUM,
                HORIZON,
                f"Amount spent on {category}, last {HORIZON} days (0 when none).",
                where=where,
            ),
            Feature(
                f"category_{category}_count_{HORIZON}d",
                "event_id",
                COUNT,
                HORIZON,
                f"Events in {category}, last {HORIZON} days (0 when none).",
                where=where,
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
        "sum": lambda c: c.cast(EXACT_SUM).sum().cast(pl.Float64),
        "values": lambda c: c.drop_nulls().unique().sort(),
        "min": lambda c: c.min(),
        "max": lambda c: c.max(),
    }[kind](column)
    return expr.alias(_partial_name(feature, kind))


def partial_exprs(features: Sequence[Feature] = FEATURES) -> list[pl.Expr]:
    """One aggregation per distinct partial the registry needs, in registry order."""
    seen: dict[str, pl.Expr] = {}
    for feature in features:
        for kind in _partial_kinds(feature):
            seen.setdefault(_partial_name(feature, kind), _partial_expr(feature, kind))
    return list(seen.values())


def daily_aggregates(events: pl.DataFrame, features: Sequence[Feature] = FEATURES) -> pl.DataFrame:
    """One row per (user, UTC day of event_time) with every partial; sorted by day and user."""
    return (
        events.lazy()
        .with_columns(pl.col("event_time").dt.date().alias(DAY))
        .group_by(DAY, USER)
        .agg(partial_exprs(features))
        .sort(DAY, USER)
        .collect()
    )


# --- windows --------------------------------------------------------------------------------------------------


def _window_expr(feature: Feature, day: date) -> pl.Expr:
    inside = pl.col(DAY) > day - timedelta(days=feature.window_days)

    def total(kind: str) -> pl.Expr:
        return pl.col(_partial_name(feature, kind)).filter(inside)

    agg = feature.aggregation
    if agg == COUNT:
        expr = total("count").sum()
    elif agg == SUM:
        expr = total("sum").cast(EXACT_SUM).sum()
    elif agg == MEAN:
        count = total("count").sum()
        expr = pl.when(count > 0).then(total("sum").cast(EXACT_SUM).sum().cast(pl.Float64) / count)
    elif agg == DISTINCT:
        expr = total("values").explode().drop_nulls().n_unique()
    elif agg == MIN:
        expr = total("min").min()
    elif agg == MAX:
        expr = total("max").max()
    elif agg == ACTIVE_DAYS:
        expr = pl.col(DAY).filter(inside).count()
    else:  # PER_ACTIVE_DAY
        expr = total("count").sum() / pl.col(DAY).filter(inside).count()
    return expr.cast(feature.dtype).alias(feature.name)


def feature_schema(features: Sequence[Feature] = FEATURES) -> dict[str, pl.DataType]:
    return {USER: pl.String(), FEATURE_DATE: pl.Date(), **{f.name: f.dtype for f in features}}


def window_features(daily: pl.DataFrame, day: date, features: Sequence[Feature] = FEATURES) -> pl.DataFrame:
    """Features as of the end of `day` for every user with a partial in the `HORIZON` days ending `day`.

    Reads only the partials of days in (day - HORIZON, day]; anything else in `daily` is ignored.
    """
    horizon = max(f.window_days for f in features)
    recent = daily.lazy().filter(pl.col(DAY).is_between(day - timedelta(days=horizon - 1), day))
    return (
        recent.group_by(USER)
        .agg(_window_expr(f, day) for f in features)
        .with_columns(pl.lit(day).alias(FEATURE_DATE))
        .select(list(feature_schema(features)))
        .sort(USER)
        .collect()
        .cast(feature_schema(features))
    )


@dataclass(frozen=True)
class Coverage:
    """Which upstream days the window of `day` needs, and which of them are there."""

    day: date
    expected: list[date]  # days of the window on or after the start of history
    missing: list[date]  # expected days whose partials were never computed
    before_history: int  # window days before the start of history

    @property
    def partial(self) -> bool:
        return self.before_history > 0

    @property
    def complete(self) -> bool:
        return not self.missing


def window_days(day: date, horizon: int = HORIZON) -> list[date]:
    return [day - timedelta(days=n) for n in range(horizon - 1, -1, -1)]


def coverage(day: date, history_start: date, present: Iterable[date], horizon: int = HORIZON) -> Coverage:
    days = window_days(day, horizon)
    expected = [d for d in days if d >= history_start]
    have = set(present)
    return Coverage(day, expected, [d for d in expected if d not in have], len(days) - len(expected))


def markdown_table(features: Sequence[Feature] = FEATURES) -> str:
    """The registry as the README documents it."""
    lines = ["| feature | source | aggregation | window | dtype | description |", "|---|---|---|---|---|---|"]
    for f in features:
        source = f"{f.source} where {f.where[0]} = {f.where[1]}" if f.where else f.source
        lines.append(f"| `{f.name}` | {source} | {f.aggregation} | {f.window_days}d | {f.dtype} | {f.description} |")
    return "\n".join(lines)
