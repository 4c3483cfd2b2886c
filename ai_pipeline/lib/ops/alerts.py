"""Failure alerts: the JSON a webhook receives, and its delivery (no Dagster here).

The alerting sensor (`ai_pipeline/defs/ops/alerts.py`) turns failed ERROR checks and failed runs from the
instance's event log into `Alert`s and posts them one at a time with `post`. Delivery is at least once: an
alert that could not be posted is posted again on the next tick, so every alert carries a stable `alert_id`
by which a receiver can drop a repeat (a POST whose answer was lost is the one case that repeats).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from pathlib import PurePath
from typing import Any
from urllib.parse import quote, urlsplit

import requests

CHECK_FAILED = "asset_check_failed"
RUN_FAILED = "run_failed"


class DeliveryError(RuntimeError):
    """A webhook did not accept an alert. The message names the host only: webhook paths often hold a secret."""


def json_safe(value: Any) -> Any:
    """`value` as plain JSON types: NaN and infinities become strings (JSON has none), exact decimals stay exact."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return json_safe(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [json_safe(v) for v in value]
        return items if isinstance(value, list | tuple) else sorted(items, key=repr)
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


def run_url(ui_url: str, run_id: str) -> str:
    return f"{ui_url.rstrip('/')}/runs/{quote(run_id)}"


def asset_url(ui_url: str, asset_path: list[str]) -> str:
    return f"{ui_url.rstrip('/')}/assets/{'/'.join(quote(part, safe='') for part in asset_path)}"


@dataclass(frozen=True)
class Alert:
    """One failure worth a human's attention: a failed ERROR check of an asset partition, or a failed run."""

    alert_id: str
    kind: str  # CHECK_FAILED or RUN_FAILED
    run_id: str
    job_name: str
    occurred_at: datetime
    description: str
    run_url: str
    asset_key: str | None = None
    asset_url: str | None = None
    partition: str | None = None
    check_name: str | None = None
    severity: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """One line for a chat channel (the `text` field Slack-style webhooks display)."""
        where = f" [{self.partition}]" if self.partition else ""
        if self.kind == CHECK_FAILED:
            head = f"{self.severity} check {self.check_name} failed on {self.asset_key}{where}"
        else:
            head = f"run of {self.job_name}{where} failed"
        return f"{head}: {self.description} ({self.run_url})"

    def payload(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "kind": self.kind,
            "text": self.summary,
            "asset_key": self.asset_key,
            "asset_url": self.asset_url,
            "partition": self.partition,
            "check_name": self.check_name,
            "severity": self.severity,
            "description": self.description,
            "metadata": json_safe(self.metadata),
            "run_id": self.run_id,
            "job_name": self.job_name,
            "run_url": self.run_url,
            "occurred_at": self.occurred_at.astimezone(UTC).isoformat(),
        }


def redacted(url: str) -> str:
    """scheme://host:port of a URL, without its path, query or credentials."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def post(url: str, alert: Alert, *, timeout_s: float) -> None:
    """POSTs the alert's JSON; anything but a 2xx answer within `timeout_s` raises DeliveryError."""
    target = redacted(url)
    try:
        response = requests.post(url, json=alert.payload(), timeout=timeout_s)
    except requests.Timeout:
        raise DeliveryError(f"alert {alert.alert_id}: no answer from {target} within {timeout_s} s") from None
    except requests.RequestException as exc:
        # The exception's own text contains the full URL: name only its kind.
        raise DeliveryError(f"alert {alert.alert_id}: cannot reach {target} ({type(exc).__name__})") from None
    if not 200 <= response.status_code < 300:
        raise DeliveryError(
            f"alert {alert.alert_id}: {target} answered HTTP {response.status_code}: {response.text[:200]!r}"
        )
