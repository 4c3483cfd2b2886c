"""Verdicts on one day of window features, derived from the registry (no rule is written per feature)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta

import polars as pl

from ai_pipeline.lib.feature_store.features import (
    ACTIVE_DAYS,
    COUNT,
    DISTINCT,
    FEATURES,
    HORIZON,
    MAX,
    MEAN,
    MIN,
    PER_ACTIVE_DAY,
    SUM,
    USER,
    Coverage,
    Feature,
)
from ai_pipeline.lib.quality import Verdict

TOLERANCE = 1e-9  # relative, for sums of floats added in different orders


def null_rates(frame: pl.DataFrame, features: Sequence[Feature] = FEATURES) -> tuple[Verdict, dict[str, float]]:
    """Null rate of every feature; a feature that cannot be null (everything but means) must have none."""
    rates = {f.name: (frame[f.name].null_count() / frame.height if frame.height else 0.0) for f in features}
    bad = sorted(f.name for f in features if not f.nullable and rates[f.name] > 0)
    if bad:
        return Verdict(False, "ERROR", f"nulls in features that always have a value: {', '.join(bad)}"), rates
    worst = max(rates, key=rates.get)
    return Verdict(True, "ERROR", f"no unexpected nulls; highest null rate {rates[worst]:.2%} ({worst})"), rates


def _family(f: Feature) -> tuple:
    return f.source, f.aggregation, f.where


def range_rules(day: date, features: Sequence[Feature] = FEATURES) -> dict[str, pl.Expr]:
    """Rule name -> expression true on a violating row."""
    by_key = {(_family(f), f.window_days): f for f in features}
    rules: dict[str, pl.Expr] = {}
    end = datetime.combine(day + timedelta(days=1), time())  # naive UTC, compared with naive UTC values
    for f in features:
        col = pl.col(f.name)
        if f.aggregation in (COUNT, SUM, DISTINCT, PER_ACTIVE_DAY, MEAN):
            rules[f"{f.name} >= 0"] = col < 0
        if f.aggregation == ACTIVE_DAYS:
            rules[f"{f.name} >= 1"] = col < 1
        if f.aggregation == MEAN:
            total = by_key.get(((f.source, SUM, f.where), f.window_days))
            if total is not None:
                rules[f"{f.name} <= {total.name}"] = col > pl.col(total.name) * (1 + TOLERANCE) + TOLERANCE
        if f.aggregation in (MIN, MAX):
            rules[f"{f.name} before the end of the day"] = col.dt.replace_time_zone(None) >= end
        if f.aggregation == MAX:  # every user in a day's features had an event in the horizon
            rules[f"{f.name} within the last {HORIZON} days"] = col.dt.replace_time_zone(None) < end - timedelta(
                days=HORIZON
            )
        if f.aggregation == MIN:
            latest = by_key.get(((f.source, MAX, f.where), f.window_days))
            if latest is not None:
                rules[f"{f.name} <= {latest.name}"] = col > pl.col(latest.name)
        if f.aggregation in (COUNT, SUM, DISTINCT) and f.window_days:
            wider = [
                g for (family, days), g in by_key.items() if family == _family(f) and days and days > f.window_days
            ]
            if wider:
                nearest = min(wider, key=lambda g: g.window_days)
                rules[f"{f.name} <= {nearest.name}"] = col > pl.col(nearest.name) * (1 + TOLERANCE) + TOLERANCE
    return rules


def value_ranges(
    frame: pl.DataFrame, day: date, features: Sequence[Feature] = FEATURES
) -> tuple[Verdict, dict[str, int]]:
    rules = range_rules(day, features)
    counts = frame.select(expr.fill_null(False).sum().alias(name) for name, expr in rules.items()).row(0, named=True)
    broken = {name: n for name, n in counts.items() if n}
    if broken:
        text = "; ".join(f"{name}: {n} rows" for name, n in sorted(broken.items()))
        return Verdict(False, "ERROR", f"{len(broken)} of {len(rules)} range rules broken: {text}"), counts
    return Verdict(True, "ERROR", f"all {len(rules)} range rules hold on {frame.height} rows"), counts


def row_count(frame: pl.DataFrame, active_users: int) -> Verdict:
    rows, users = frame.height, frame[USER].n_unique()
    if rows == active_users == users:
        return Verdict(True, "ERROR", f"{rows} rows, one per user active in the window")
    return Verdict(
        False, "ERROR", f"{rows} rows for {users} distinct users, but {active_users} users were active in the window"
    )


def completeness(cover: Coverage) -> Verdict:
    if cover.missing:
        return Verdict(False, "ERROR", f"{len(cover.missing)} upstream days missing: {cover.missing[:5]}")
    text = f"all {len(cover.expected)} upstream days present"
    if cover.partial:
        return Verdict(
            True,
            "WARN",
            f"{text}; partial window: {cover.before_history} of {HORIZON} days before the start of history",
        )
    return Verdict(True, "WARN", text)


def consistency(online: pl.DataFrame, offline: pl.DataFrame) -> Verdict:
    """Online rows must equal the offline rows of the latest feature date, exactly."""
    if online.columns != offline.columns:
        return Verdict(False, "ERROR", f"columns differ: online {online.columns}, offline {offline.columns}")
    online, offline = online.sort(USER), offline.sort(USER)
    if online.height != offline.height or not online.equals(offline):
        diff = online.join(offline, on=online.columns, how="anti", nulls_equal=True).height
        return Verdict(
            False,
            "ERROR",
            f"online store differs from the offline store: {online.height} vs {offline.height} rows, "
            f"{diff} online rows without an identical offline row",
        )
    return Verdict(True, "ERROR", f"{online.height} users identical online and offline")
