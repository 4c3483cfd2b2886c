"""An HTTP JSON events API, read one partition day at a time into the raw layer.

Protocol
--------
    GET {base_url}?date=YYYY-MM-DD&page=N&page_size=M
    Authorization: Bearer <token>            (only when a token is given)

    200 -> {"items": [ {...event...}, ... ], "next_page": N + 1 | null}

Pages start at 1 and are followed while `next_page` is not null; `next_page` must be the next page number
(anything else is a protocol error, so that a misbehaving server cannot loop the client forever).

Transport
---------
One `requests.Session` with urllib3's `Retry`: GET only, `total=max_retries` (connection errors, read
timeouts and the statuses 429/500/502/503/504 alike), exponential backoff `backoff_s * 2**(n-1)` between
consecutive retries (urllib3 2 retries the first time at once), and a `Retry-After` header honoured (capped at
`max_retry_after_s`). Every request carries a (connect, read) timeout of `timeout_s` each. Failures raise
`ApiError`, whose message names the URL, the status and the start of the body: a 4xx other than 429 at once
(no retry), a retryable status when retries are exhausted (the last status), a timeout or connection failure
after retries, a body that is not the protocol's JSON. The token goes in a header only; it never appears in
a URL, in lineage or in an error message (a body that echoes it is redacted).

Raw rows
--------
Every item of every page is one row, in page order then item order; the frame's columns are the union of
the items' keys (first seen first) and the schema report covers that union. Values become strings faithfully:
strings as they are, null -> None, true/false -> "true"/"false", integers as integers, numbers with a
fraction or exponent exactly as their decimal value without exponent (`12.50` stays `12.50`, `1e3` ->
`1000`), NaN/Infinity -> "nan"/"inf"/"-inf", nested objects/arrays -> JSON text. An item that is not a JSON
object becomes a row with a read error and all contract columns null. Lineage: `source="http_api"`, `uri` =
the page's request URL (credentials in the base URL are removed), `pages` = page number, `offsets` = index of
the item within its page, `raw_json` = the item as JSON.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import polars as pl
import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from ai_pipeline.lib.ingest.contracts import Event
from ai_pipeline.lib.ingest.raw import SchemaReport, SourceMapping, text_value, to_raw

SOURCE = "http_api"
RETRY_STATUSES = (429, 500, 502, 503, 504)
BODY_EXCERPT = 200


class ApiError(RuntimeError):
    """The events API could not be read: a client error, retries exhausted, a timeout, a protocol violation."""

    def __init__(self, message: str, *, url: str, status: int | None = None):
        super().__init__(message)
        self.url = url
        self.status = status


def _strip_credentials(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _redact(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


def make_session(
    *, token: str | None, max_retries: int, backoff_s: float, max_retry_after_s: int = 60
) -> requests.Session:
    options: dict[str, Any] = dict(
        total=max_retries,
        backoff_factor=backoff_s,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET"}),
        respect_retry_after_header=True,
        raise_on_status=False,  # the last response comes back, so that its status and body name the failure
        raise_on_redirect=True,
    )
    try:
        retry = Retry(**options, retry_after_max=max_retry_after_s)
    except TypeError:  # urllib3 without retry_after_max
        retry = Retry(**options)
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["Accept"] = "application/json"
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    return session


# ------------------------------------------------------------------------------------------ value to string


def _json_text(value: Any) -> str:
    """JSON text of a parsed value whose numbers are Decimal/int (kept exactly as sent)."""
    if isinstance(value, dict):
        members = (f"{json.dumps(str(k), ensure_ascii=False)}: {_json_text(v)}" for k, v in value.items())
        return "{" + ", ".join(members) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_json_text(v) for v in value) + "]"
    if isinstance(value, Decimal):
        if value.is_nan():
            return "NaN"
        if value.is_infinite():
            return "-Infinity" if value < 0 else "Infinity"
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def to_text(value: Any) -> str | None:
    """One JSON value -> its raw string: scalars as every source does, nested values as sent."""
    return _json_text(value) if isinstance(value, dict | list) else text_value(value)


def _parse_constant(name: str) -> Decimal:
    return Decimal({"NaN": "NaN", "Infinity": "Infinity", "-Infinity": "-Infinity"}[name])


# ------------------------------------------------------------------------------------------------- fetching


def _get_page(
    session: requests.Session, base_url: str, params: dict[str, Any], *, timeout_s: float, token: str | None
) -> tuple[str, dict[str, Any]]:
    """One page -> (its request URL, its parsed body)."""
    prepared = session.prepare_request(requests.Request("GET", base_url, params=params))
    url = _strip_credentials(prepared.url or base_url)
    try:
        response = session.send(prepared, timeout=(timeout_s, timeout_s))
    except requests.exceptions.RetryError as exc:  # only with raise_on_status; kept for safety
        raise ApiError(f"GET {url}: retries exhausted: {_redact(str(exc), token)}", url=url) from None
    except (requests.exceptions.Timeout, requests.exceptions.ConnectionError) as exc:
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        refused = isinstance(reason, urllib3.exceptions.NewConnectionError)  # a ConnectTimeoutError subclass
        timed_out = not refused and (
            isinstance(exc, requests.exceptions.Timeout) or isinstance(reason, urllib3.exceptions.TimeoutError)
        )
        what = f"timed out (timeout {timeout_s}s per connect/read)" if timed_out else "could not connect"
        raise ApiError(f"GET {url}: {what}, retries exhausted: {_redact(str(exc), token)}", url=url) from None
    except requests.exceptions.RequestException as exc:
        raise ApiError(f"GET {url}: request failed: {_redact(str(exc), token)}", url=url) from None
    body = response.text
    excerpt = _redact(body[:BODY_EXCERPT], token)
    status = response.status_code
    if status != 200:
        retried = len(response.raw.retries.history) if getattr(response.raw, "retries", None) else 0
        if status in RETRY_STATUSES:
            what = f"HTTP {status}, retries exhausted after {retried} retr{'y' if retried == 1 else 'ies'}"
        elif 400 <= status < 500:
            what = f"HTTP {status} (client error, not retried)"
        else:
            what = f"HTTP {status} (unexpected status)"
        raise ApiError(f"GET {url}: {what}; body starts {excerpt!r}", url=url, status=status)
    try:
        payload = json.loads(body, parse_float=Decimal, parse_constant=_parse_constant)
    except ValueError as exc:
        message = f"GET {url}: body is not JSON ({exc}); body starts {excerpt!r}"
        raise ApiError(message, url=url, status=status) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("items"), list):
        raise ApiError(
            f"GET {url}: expected an object with an 'items' list; body starts {excerpt!r}", url=url, status=status
        )
    return url, payload


def fetch_events(
    base_url: str,
    day: date,
    *,
    ingested_at: datetime,
    token: str | None = None,
    timeout_s: float = 10.0,
    max_retries: int = 5,
    backoff_s: float = 0.5,
    page_size: int = 500,
    max_retry_after_s: int = 60,
    mapping: SourceMapping | None = None,
) -> tuple[pl.DataFrame, SchemaReport]:
    """All pages of the partition day -> one raw frame (every item one row) and one schema report."""
    columns: dict[str, list[str | None]] = {}
    uris: list[str] = []
    pages: list[int] = []
    offsets: list[int] = []
    raws: list[str] = []
    errors: list[str | None] = []
    n = 0
    page = 1
    with make_session(
        token=token, max_retries=max_retries, backoff_s=backoff_s, max_retry_after_s=max_retry_after_s
    ) as session:
        while True:
            params = {"date": day.isoformat(), "page": page, "page_size": page_size}
            url, payload = _get_page(session, base_url, params, timeout_s=timeout_s, token=token)
            for index, item in enumerate(payload["items"]):
                if isinstance(item, dict):
                    for key, value in item.items():
                        column = columns.setdefault(str(key), [None] * n)
                        column.append(to_text(value))
                    error = None
                else:
                    error = f"item {index} of page {page} is not a JSON object (got {_json_kind(item)})"
                n += 1
                for column in columns.values():
                    if len(column) < n:
                        column.append(None)
                uris.append(url)
                pages.append(page)
                offsets.append(index)
                raws.append(_json_text(item))
                errors.append(error)
            next_page = payload.get("next_page")
            if next_page is None:
                break
            if isinstance(next_page, bool) or not isinstance(next_page, int) or next_page != page + 1:
                message = f"GET {url}: next_page must be {page + 1} or null, got {_json_text(next_page)}"
                raise ApiError(message, url=url, status=200)
            page = next_page
        report_uri = _strip_credentials(
            session.prepare_request(requests.Request("GET", base_url, params={"date": day.isoformat()})).url or base_url
        )
    frame = pl.DataFrame(columns, schema={c: pl.String for c in columns})
    lineage = dict(partition_day=day, source=SOURCE, uri=report_uri, ingested_at=ingested_at)
    raw, report = to_raw(
        frame, Event, **lineage, offsets=offsets, pages=pages, read_errors=errors, raw_json=raws, mapping=mapping
    )
    return raw.with_columns(pl.Series("_source_uri", uris, dtype=pl.String)), report


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    return "number"
