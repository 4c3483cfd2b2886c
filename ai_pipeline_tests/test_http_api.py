"""The HTTP events API source, against a real HTTP server on 127.0.0.1 (a thread in this process).

Routes (all speak the protocol of `ai_pipeline.lib.ingest.http_api`):
- /events        three deterministic pages
- /flaky         page 1 answers 503 twice, then 200
- /limited       page 1 answers 429 with Retry-After: 1 once, then 200
- /down          always 503
- /missing       404 with a body that echoes the Authorization header
- /slow          never answers within the client's timeout
- /junk          only non-object items
- /empty         no items
- /loop          next_page that does not advance
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime

import polars as pl
import pytest

from ai_pipeline.lib.ingest.contracts import Event
from ai_pipeline.lib.ingest.http_api import ApiError, fetch_events, to_text
from ai_pipeline.lib.ingest.raw import raw_schema
from ai_pipeline_tests.conftest import http_server

DAY = date(2024, 1, 5)
INGESTED_AT = datetime(2024, 1, 6, 3, 0, tzinfo=UTC)
TOKEN = "tok-3f9a0c17e2b44d55"

# Bodies are written as text so that number spellings (12.50, 1e3, NaN) reach the client as sent.
EVENTS_PAGES = {
    1: '{"items": ['
    '{"event_id": "e1", "user_id": "u1", "event_type": "purchase", "event_time": "2024-01-05T10:00:00Z",'
    ' "amount": 12.50, "category": "books", "country": "DE"},'
    '{"event_id": "e2", "user_id": "u2", "event_type": "click", "event_time": "2024-01-05T11:00:00Z",'
    ' "amount": null}'
    '], "next_page": 2}',
    2: '{"items": ['
    '{"eventId": "e3", "user_id": 7, "event_type": "view", "event_time": "2024-01-05T12:00:00Z",'
    ' "amount": 1e3, "extra": {"a": 1.50, "b": [true, null]}},'
    '{"event_id": "e4", "user_id": 123456789012345678901234567890, "event_type": "purchase",'
    ' "event_time": "2024-01-05T13:00:00Z", "amount": NaN, "category": false}'
    '], "next_page": 3}',
    3: '{"items": ['
    '{"event_id": "e5", "user_id": "u5", "event_type": "signup", "event_time": "2024-01-05T14:00:00Z",'
    ' "amount": Infinity, "country": "FR"},'
    '42, "text", null, ["e6"],'
    '{"event_id": "e7", "user_id": "u7", "event_type": "logout", "event_time": "2024-01-05T15:00:00Z",'
    ' "amount": 0.1}'
    '], "next_page": null}',
}
OK_PAGE = (
    '{"items": [{"event_id": "ok1", "user_id": "u1", "event_type": "click", "event_time": "2024-01-05T09:00:00Z"}],'
    ' "next_page": null}'
)


class FakeApi:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hits: Counter[tuple[str, int]] = Counter()
        self.requests: list[dict] = []
        self.release = threading.Event()  # lets /slow finish at teardown
        self.base = ""

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def handle(self, path: str, query: dict, headers: dict) -> tuple[int, dict, str]:
        page = int(query.get("page", "0"))
        with self.lock:
            self.hits[(path, page)] += 1
            hit = self.hits[(path, page)]
            self.requests.append({"path": path, "query": query, "headers": headers})
        return self.respond(path, page, hit, headers)

    def respond(self, path: str, page: int, hit: int, headers: dict) -> tuple[int, dict, str]:
        if path == "/events":
            return 200, {}, EVENTS_PAGES[page]
        if path == "/flaky":
            return (503, {}, "busy") if page == 1 and hit <= 2 else (200, {}, OK_PAGE)
        if path == "/limited":
            return (429, {"Retry-After": "1"}, "slow down") if hit == 1 else (200, {}, OK_PAGE)
        if path == "/down":
            return 503, {}, "service unavailable: maintenance window"
        if path == "/missing":
            return 404, {}, f"no such dataset; you sent {headers.get('Authorization')}"
        if path == "/slow":
            self.release.wait(10)
            return 200, {}, OK_PAGE
        if path == "/junk":
            return 200, {}, '{"items": [1, "two", null, [3], true], "next_page": null}'
        if path == "/empty":
            return 200, {}, '{"items": [], "next_page": null}'
        if path == "/loop":
            return 200, {}, '{"items": [], "next_page": 1}'
        return 500, {}, "unknown route"


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi()
    with http_server(fake.handle) as base:
        fake.base = base
        try:
            yield fake
        finally:
            fake.release.set()  # lets /slow finish before the server stops


def _fetch(url: str, **kwargs):
    kwargs.setdefault("backoff_s", 0.01)
    kwargs.setdefault("page_size", 2)
    return fetch_events(url, DAY, ingested_at=INGESTED_AT, **kwargs)


def test_all_pages_in_order_with_exact_values_and_lineage(api: FakeApi) -> None:
    raw, report = _fetch(api.url("/events"), token=TOKEN)

    assert raw.schema == pl.Schema(raw_schema(Event))
    assert raw.height == 2 + 2 + 6  # rows in == rows out
    assert [(r["path"], r["query"]) for r in api.requests] == [
        ("/events", {"date": "2024-01-05", "page": str(p), "page_size": "2"}) for p in (1, 2, 3)
    ]
    assert raw["_source_page"].to_list() == [1, 1, 2, 2, 3, 3, 3, 3, 3, 3]
    assert raw["_source_offset"].to_list() == [0, 1, 0, 1, 0, 1, 2, 3, 4, 5]
    assert raw["_source_uri"].to_list() == [
        api.url(f"/events?date=2024-01-05&page={p}&page_size=2") for p in [1, 1, 2, 2, 3, 3, 3, 3, 3, 3]
    ]
    assert raw["_source"].unique().to_list() == ["http_api"]
    assert raw["partition_date"].unique().to_list() == [DAY]
    assert raw["_ingested_at"].unique().to_list() == [INGESTED_AT]

    assert raw["event_id"].to_list() == ["e1", "e2", None, "e4", "e5", None, None, None, None, "e7"]
    assert raw["user_id"].to_list() == [
        "u1",
        "u2",
        "7",
        "123456789012345678901234567890",
        "u5",
        None,
        None,
        None,
        None,
        "u7",
    ]
    assert raw["amount"].to_list() == ["12.50", None, "1000", "nan", "inf", None, None, None, None, "0.1"]
    assert raw["category"].to_list() == ["books", None, None, "false", None, None, None, None, None, None]
    assert raw["country"].to_list() == ["DE", None, None, None, "FR", None, None, None, None, None]
    assert raw["event_time"][0] == "2024-01-05T10:00:00Z"
    assert json.loads(raw["_raw"][2]) == {
        "eventId": "e3",
        "user_id": 7,
        "event_type": "view",
        "event_time": "2024-01-05T12:00:00Z",
        "amount": 1e3,
        "extra": {"a": 1.5, "b": [True, None]},
    }
    assert '"amount": 12.50' in raw["_raw"][0]  # the item as sent

    errors = raw["_read_error"].to_list()
    assert errors[:5] == [None] * 5 and errors[9] is None
    assert errors[5:9] == [
        "item 1 of page 3 is not a JSON object (got number)",
        "item 2 of page 3 is not a JSON object (got string)",
        "item 3 of page 3 is not a JSON object (got null)",
        "item 4 of page 3 is not a JSON object (got array)",
    ]
    assert raw["_raw"][5:9].to_list() == ["42", '"text"', "null", '["e6"]']

    # one report over the union of keys of all pages
    assert report.rows == 10
    assert report.found == [
        "event_id",
        "user_id",
        "event_type",
        "event_time",
        "amount",
        "category",
        "country",
        "eventId",
        "extra",
    ]
    assert report.unknown == ["eventId", "extra"]  # event_id came first; the alias is a second, unused name
    assert report.error is None
    assert report.uri == api.url("/events?date=2024-01-05")

    # the token was sent, and is nowhere in the output
    assert {r["headers"].get("Authorization") for r in api.requests} == {f"Bearer {TOKEN}"}
    for column in raw.columns:
        assert not raw[column].cast(pl.String).str.contains(TOKEN, literal=True).any()
    assert TOKEN not in json.dumps(report.as_dict())


def test_retries_503_then_succeeds(api: FakeApi) -> None:
    raw, _ = _fetch(api.url("/flaky"), max_retries=3)
    assert raw["event_id"].to_list() == ["ok1"]
    assert api.hits[("/flaky", 1)] == 3


def test_retry_after_is_honoured(api: FakeApi) -> None:
    started = time.monotonic()
    raw, _ = _fetch(api.url("/limited"), max_retries=2)
    elapsed = time.monotonic() - started
    assert raw["event_id"].to_list() == ["ok1"]
    assert api.hits[("/limited", 1)] == 2
    assert elapsed >= 0.9  # lower bound only


def test_retries_exhausted_names_the_last_status(api: FakeApi) -> None:
    with pytest.raises(ApiError) as excinfo:
        _fetch(api.url("/down"), max_retries=2)
    assert excinfo.value.status == 503
    message = str(excinfo.value)
    assert "503" in message and "retries exhausted" in message and "maintenance window" in message
    assert api.url("/down?date=2024-01-05&page=1") in message
    assert api.hits[("/down", 1)] == 3


def test_client_error_is_not_retried_and_hides_the_token(api: FakeApi) -> None:
    with pytest.raises(ApiError) as excinfo:
        _fetch(api.url("/missing"), token=TOKEN, max_retries=5)
    message = str(excinfo.value)
    assert excinfo.value.status == 404
    assert api.url("/missing?date=2024-01-05&page=1&page_size=2") in message
    assert "404" in message and "no such dataset" in message
    assert TOKEN not in message and TOKEN not in repr(excinfo.value)
    assert api.hits[("/missing", 1)] == 1


def test_a_server_that_never_answers_fails_in_bounded_time(api: FakeApi) -> None:
    started = time.monotonic()
    with pytest.raises(ApiError, match="timed out") as excinfo:
        _fetch(api.url("/slow"), timeout_s=0.5, max_retries=1)
    elapsed = time.monotonic() - started
    assert api.url("/slow?date=2024-01-05&page=1") in str(excinfo.value)
    assert elapsed < 8  # far less than the 10 s the server would take: the timeout cut it short
    assert api.hits[("/slow", 1)] == 2  # the first try and one retry


def test_unreachable_server_is_an_api_error() -> None:
    with pytest.raises(ApiError, match="could not connect"):
        _fetch("http://127.0.0.1:9/events", timeout_s=0.5, max_retries=0)


def test_only_non_object_items_are_all_kept_as_read_errors(api: FakeApi) -> None:
    raw, report = _fetch(api.url("/junk"))
    assert raw.schema == pl.Schema(raw_schema(Event))
    assert raw.height == 5
    assert raw["_raw"].to_list() == ["1", '"two"', "null", "[3]", "true"]
    assert raw["_read_error"].null_count() == 0
    assert raw["_source_offset"].to_list() == [0, 1, 2, 3, 4]
    assert raw["_source_uri"].unique().to_list() == [api.url("/junk?date=2024-01-05&page=1&page_size=2")]
    assert report.rows == 5 and report.found == []


def test_empty_day(api: FakeApi) -> None:
    raw, report = _fetch(api.url("/empty"))
    assert raw.height == 0 and raw.schema == pl.Schema(raw_schema(Event))
    assert report.rows == 0


def test_next_page_must_advance(api: FakeApi) -> None:
    with pytest.raises(ApiError, match="next_page must be 2"):
        _fetch(api.url("/loop"))
    assert api.hits[("/loop", 1)] == 1


def test_credentials_in_the_base_url_stay_out_of_lineage(api: FakeApi) -> None:
    raw, report = _fetch(api.base.replace("http://", "http://alice:pw-9981@") + "/events")
    assert raw.height == 10
    assert not raw["_source_uri"].str.contains("pw-9981").any()
    assert "pw-9981" not in report.uri and "alice" not in report.uri


def test_value_to_text() -> None:
    from decimal import Decimal

    assert to_text(Decimal("12.50")) == "12.50"
    assert to_text(Decimal("1E+400")) == "1" + "0" * 400  # faithful; the contract's pattern rejects it later
    assert to_text(Decimal("-Infinity")) == "-inf"
    assert to_text(float("inf")) == "inf" and to_text(float("nan")) == "nan"
    assert to_text(2.5) == "2.5"
    assert to_text(10**20) == "100000000000000000000"
    assert to_text(False) == "false"
    assert to_text({"k": [Decimal("1.50"), None, "x"]}) == '{"k": [1.50, null, "x"]}'
