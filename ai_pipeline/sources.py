"""The configured raw sources. Adding a landing source is one entry here (plus, at most, a mapping)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from ai_pipeline.lib.contracts import Event, User
from ai_pipeline.lib.formats import ReadOptions
from ai_pipeline.lib.mappings import ONLINE_RETAIL
from ai_pipeline.lib.raw import SourceMapping


@dataclass(frozen=True)
class LandingSource:
    """Files under `<landing>/<folder>/<YYYY-MM-DD>/`, read into the `raw_<name>` asset."""

    name: str
    folder: str
    model: type[BaseModel]
    description: str
    mapping: SourceMapping | None = None
    lateness_days: int = 7  # rows up to this many days older than their arrival day still reach their own day
    cadence_days: int = 1  # a delivery is expected at least this often (freshness); a quiet day in between is fine
    read_options: ReadOptions = field(default_factory=ReadOptions)


LANDING_SOURCES = (
    LandingSource(
        "landing_events",
        "events",
        Event,
        "Event files (CSV, JSONL, Parquet) dropped in the landing zone by web, mobile and partner exports.",
    ),
    LandingSource(
        "online_retail_events",
        "online_retail",
        Event,
        "Online Retail invoice-line exports (UCI format), mapped into the event contract.",
        ONLINE_RETAIL,
    ),
    LandingSource(
        "landing_users",
        "users",
        User,
        "User profile files (CSV) dropped in the landing zone, when profiles change (not every day).",
        cadence_days=30,
    ),
)
EVENT_SOURCES = [s for s in LANDING_SOURCES if s.model is Event]
USER_SOURCES = [s for s in LANDING_SOURCES if s.model is User]
