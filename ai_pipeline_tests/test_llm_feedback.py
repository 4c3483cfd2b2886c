"""Feedback: the real HTTP service on 127.0.0.1 over SQLite and real PostgreSQL, the rebuild sensor, and ratings
through Dagster into preference pairs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

import dagster as dg
import duckdb
import pytest
import requests

from ai_pipeline.defs import build_defs
from ai_pipeline.defs.keys import CONSERVATION_CHECK, FEEDBACK_SENSOR, PAIRS_ACCOUNTED_CHECK
from ai_pipeline.defs.resources import FEEDBACK, FeedbackStore
from ai_pipeline.lib.llm.feedback import PostgresFeedbackStore, SqliteFeedbackStore, server
from ai_pipeline.settings import PROJECT_ROOT, Settings
from ai_pipeline_support.dagster_server import free_port
from ai_pipeline_tests.conftest import landing_zone

DAY = date(2024, 5, 2)


def _rating(message: str, rating, user: str = "u1", **extra) -> dict:
    return {
        "conversation_id": "t7",
        "message_id": message,
        "rating": rating,
        "user_id": user,
        "created_at": f"{DAY}T12:00:00Z",
        **extra,
    }


@contextmanager
def _service(store) -> Iterator[str]:
    service = server(store, "127.0.0.1", 0)
    thread = threading.Thread(target=service.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{service.server_port}"
    finally:
        service.shutdown()
        service.server_close()


def _exercise(base: str, store) -> None:
    good = [_rating("s7a", 5), _rating("s7b", "1", text="Too short, and wrong.")]
    answer = requests.post(f"{base}/feedback", json=good, timeout=10)
    assert answer.status_code == 201, answer.text
    assert answer.json()["accepted"] == 2 and answer.json()["already_stored"] == 0
    retried = requests.post(f"{base}/feedback", json=good, timeout=10)  # the same events again: stored once
    assert retried.status_code == 201 and retried.json()["accepted"] == 0 and retried.json()["already_stored"] == 2
    bad = [_rating("s7a", 6), _rating("s7a", True), {"message_id": "s7a", "rating": 3}, "five stars"]
    refused = requests.post(f"{base}/feedback", json=bad, timeout=10)
    assert refused.status_code == 422
    problems = {(e["index"], e["field"]) for e in refused.json()["errors"]}
    assert {(0, "rating"), (1, "rating"), (2, "conversation_id"), (2, "user_id"), (3, None)} <= problems
    assert requests.post(f"{base}/feedback", data=b"{not json", timeout=10).status_code == 400
    too_big = requests.post(f"{base}/feedback", data=b"x" * (1 << 21), timeout=10)
    assert too_big.status_code == 413
    assert requests.get(f"{base}/health", timeout=10).json() == {"ok": True, "stored": 2}
    assert store.count() == 2  # nothing of a refused batch was stored
    rows = store.read_day(DAY)
    assert [(r["message_id"], r["rating"], r["text"]) for r in rows] == [
        ("s7a", "5", None),
        ("s7b", "1", "Too short, and wrong."),
    ]
    arrivals = store.after(0)
    assert (arrivals.count, arrivals.days, arrivals.last_seq) == (2, [DAY], rows[-1]["seq"])


def test_the_service_validates_and_stores_feedback_in_sqlite(tmp_path):
    store = SqliteFeedbackStore(tmp_path / "feedback.sqlite")
    with _service(store) as base:
        _exercise(base, store)


def test_the_service_validates_and_stores_feedback_in_postgresql(pg_dsn, pg_schema):
    store = PostgresFeedbackStore(pg_dsn, f"{pg_schema}.feedback")
    with _service(store) as base:
        _exercise(base, store)
    assert store.uri.endswith(f"/{pg_schema}.feedback") and "@" not in store.uri


@pytest.mark.slow
def test_the_cli_serves_feedback_until_sigterm(tmp_path):
    port = free_port()
    env = {**os.environ, "AI_PIPELINE_HOME": str(tmp_path)}
    process = subprocess.Popen(
        [sys.executable, "-m", "ai_pipeline.cli", "feedback-server", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        banner = process.stdout.readline()
        assert banner.startswith(f"Feedback service on http://127.0.0.1:{port}/feedback, storing into {tmp_path}")
        answer = requests.post(f"http://127.0.0.1:{port}/feedback", json=_rating("s7a", 4), timeout=10)
        assert answer.status_code == 201 and answer.json()["accepted"] == 1
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    assert SqliteFeedbackStore(tmp_path / "feedback.sqlite").count() == 1


def test_the_sensor_rebuilds_once_enough_feedback_arrived(tmp_path):
    settings = Settings(home=tmp_path, start_date=date(2024, 5, 1))
    resource = FeedbackStore(path=str(tmp_path / "feedback.sqlite"), rebuild_count=3)
    defs = build_defs(settings, {FEEDBACK: resource})
    sensor = defs.resolve_sensor_def(FEEDBACK_SENSOR)
    store = resource.store()
    with _service(store) as base:
        requests.post(f"{base}/feedback", json=[_rating("s7a", 5), _rating("s7b", 1)], timeout=10)
        with dg.instance_for_test() as instance:
            context = dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources)
            first = sensor(context)
            assert isinstance(first, dg.SkipReason)
            assert first.skip_message == "2 new feedback events since the last rebuild, fewer than 3"
            requests.post(f"{base}/feedback", json=[_rating("s7a", 4, user="u2")], timeout=10)
            second = sensor(context)
            assert [r.partition_key for r in second.run_requests] == [DAY.isoformat()]
            assert json.loads(second.cursor) == {"watermark": 3, "pending": []}
            context.update_cursor(second.cursor)
            assert isinstance(sensor(context), dg.SkipReason)  # nothing new since


def _m(mid, role, text, hour, replies=(), **extra) -> dict:
    return {
        "message_id": mid,
        "role": role,
        "text": text,
        "lang": "en",
        "created_date": f"{DAY}T{hour:02d}:00:00Z",
        "replies": list(replies),
        **extra,
    }


@pytest.mark.slow
def test_ratings_become_preference_pairs_and_bad_ratings_are_quarantined(tmp_path):
    settings = Settings(home=tmp_path, start_date=date(2024, 5, 1))
    tree = {
        "message_tree_id": "t7",
        "prompt": _m(
            "q7",
            "prompter",
            "How long should I boil an egg for a soft yolk?",
            8,
            [
                _m("s7a", "assistant", "About six minutes in boiling water, then cool it in cold water.", 9),
                _m("s7b", "assistant", "Boil it for an hour or so, that should be fine.", 9),
                _m("s7c", "assistant", "Six to seven minutes, depending on the size of the egg.", 9),
            ],
        ),
    }
    for message in tree["prompt"]["replies"]:
        message["parent_id"] = "q7"
    folder = settings.landing / "chat_trees" / DAY.isoformat()
    folder.mkdir(parents=True)
    (folder / "trees.jsonl").write_text(json.dumps(tree) + "\n")
    (folder / "_SUCCESS").touch()
    resource = FeedbackStore(path=str(tmp_path / "feedback.sqlite"))
    store = resource.store()
    with _service(store) as base:
        ratings = [_rating("s7a", 5), _rating("s7a", 4, user="u2"), _rating("s7b", 1), _rating("s7b", 2, user="u2")]
        # u2 changes their mind about s7c later the same day: their latest rating counts.
        ratings += [_rating("s7c", 5, user="u2"), _rating("s7c", 3, user="u2", created_at=f"{DAY}T18:00:00Z")]
        assert requests.post(f"{base}/feedback", json=ratings, timeout=10).status_code == 201
    # Another writer of the store skipped the service's validation.
    store.add([{**_rating("s7a", "9", user="u3"), "feedback_id": "fb-bad", "text": None}])
    defs = build_defs(settings, {**landing_zone(settings), FEEDBACK: resource})
    lane = [
        "raw_chat_messages",
        "validated_chat_messages",
        "quarantined_chat_messages",
        "raw_feedback",
        "validated_feedback",
        "quarantined_feedback",
        "preference_pairs",
        "preference_kto",
        "preference_rejects",
    ]
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        partition_key=DAY.isoformat(),
        instance=dg.DagsterInstance.ephemeral(),
        asset_selection=[dg.AssetKey(a) for a in lane],
    )
    assert result.success
    checks = {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}
    assert checks[("validated_feedback", CONSERVATION_CHECK)].description == "7 rows in = 6 valid + 1 quarantined"
    assert checks[("preference_pairs", PAIRS_ACCOUNTED_CHECK)].passed
    with duckdb.connect(str(settings.warehouse), read_only=True) as conn:
        quarantined = conn.execute("select feedback_id, reasons from quarantined_feedback").fetchall()
        pairs = conn.execute(
            "select origin, source_id, chosen[1].content, rejected[1].content from preference_pairs"
        ).fetchall()
    assert [(q[0], [(r["field"], r["rule"]) for r in q[1]]) for q in quarantined] == [("fb-bad", [("rating", "le")])]
    # s7a averages 4.5, s7c 4 (u2's latest), s7b 1.5: the best against the worst.
    assert pairs == [
        (
            "ratings",
            "q7",
            "About six minutes in boiling water, then cool it in cold water.",
            "Boil it for an hour or so, that should be fine.",
        )
    ]
