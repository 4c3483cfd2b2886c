"""Where data lives and which sources are configured: read once from the environment.

Secrets (database DSNs, API tokens) come only from the environment, never from files in the repo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
DEFAULT_HOME = PROJECT_ROOT / ".data"
DEFAULT_START_DATE = "2024-01-01"


@dataclass(frozen=True)
class Settings:
    home: Path = DEFAULT_HOME
    start_date: date = date.fromisoformat(DEFAULT_START_DATE)
    # Operational PostgreSQL source (a libpq DSN); absent means the source contributes nothing.
    ops_dsn: str | None = None
    ops_table: str = "public.user_events"
    # HTTP events API; absent means the source contributes nothing.
    api_url: str | None = None
    api_token: str | None = field(default=None, repr=False)
    api_timeout_s: float = 10.0
    # Online feature store: "embedded" (SQLite under the data root) or "postgres" (online_dsn).
    online_store: str = "embedded"
    online_dsn: str | None = field(default=None, repr=False)
    online_table: str = "public.online_user_features"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            home=Path(env.get("AI_PIPELINE_HOME") or DEFAULT_HOME).resolve(),
            start_date=date.fromisoformat(env.get("AI_PIPELINE_START_DATE") or DEFAULT_START_DATE),
            ops_dsn=env.get("AI_PIPELINE_OPS_DSN") or None,
            ops_table=env.get("AI_PIPELINE_OPS_TABLE") or "public.user_events",
            api_url=env.get("AI_PIPELINE_API_URL") or None,
            api_token=env.get("AI_PIPELINE_API_TOKEN") or None,
            api_timeout_s=float(env.get("AI_PIPELINE_API_TIMEOUT_S") or 10.0),
            online_store=env.get("AI_PIPELINE_ONLINE_STORE") or "embedded",
            online_dsn=env.get("AI_PIPELINE_ONLINE_DSN") or None,
            online_table=env.get("AI_PIPELINE_ONLINE_TABLE") or "public.online_user_features",
        )

    def __post_init__(self):
        if self.online_store not in ("embedded", "postgres"):
            raise ValueError(f"AI_PIPELINE_ONLINE_STORE must be 'embedded' or 'postgres', not {self.online_store!r}")
        if self.online_store == "postgres" and not self.online_dsn:
            raise ValueError("AI_PIPELINE_ONLINE_STORE=postgres needs AI_PIPELINE_ONLINE_DSN (a libpq DSN)")

    def online_store_client(self):
        from ai_pipeline.lib.online_store import PostgresOnlineStore, SqliteOnlineStore

        if self.online_store == "postgres":
            return PostgresOnlineStore(self.online_dsn, self.online_table)
        return SqliteOnlineStore(self.home / "online_features.sqlite")

    @property
    def landing(self) -> Path:
        return self.home / "landing"

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def chroma(self) -> Path:
        return self.home / "chroma"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"
