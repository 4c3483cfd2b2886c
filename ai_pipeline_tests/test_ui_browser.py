"""The Dagster UI in a real browser: Debian's chromium (/usr/bin/chromium) driven by Playwright, no browser
download. One webserver and daemon for the module (`ai_pipeline_support.dagster_server`, PostgreSQL-backed under
CI=true) over eight days of small generated landing files.

The flows a user clicks through: the asset graph, materializing one partition from the asset's "Materialize"
dialog, the check's result in the asset-check view, and a small backfill from the same dialog. What the pages
show is checked against what the landing reader computes and what the server recorded (GraphQL).

Screenshots of each step are saved under $AI_PIPELINE_TEST_ARTIFACTS/ui_browser/ (default: a pytest temporary
folder, printed on failure).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from ai_pipeline.defs.keys import SCHEMA_CHECK
from ai_pipeline.lib.ingest.landing import read_landing_day
from ai_pipeline.lib.ingest.sample import generate
from ai_pipeline.sources import load_sources
from ai_pipeline_support.dagster_server import DagsterServer, dagster_server
from ai_pipeline_tests.conftest import require

# The slow tier (not in `make test-fast`): a real browser against a running webserver and daemon.
pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
START = date(2024, 1, 1)
DAYS = [START + timedelta(days=i) for i in range(8)]
DAY = "2024-01-06"  # its landing file names a column twice, which fails the schema check
BACKFILL = ["2024-01-06", "2024-01-07", "2024-01-08"]
ASSET = "raw_landing_events"
UI_TIMEOUT_MS = 120_000  # pages poll the server; a loaded 2-core machine answers slowly

RUN_TAGS = """
query ($runId: ID!) { runOrError(runId: $runId) { ... on Run { status tags { key value } } } }
"""
BACKFILLS = """
{ partitionBackfillsOrError(limit: 10) { ... on PartitionBackfills { results { id assetSelection { path } } } } }
"""
PARTITION_STATS = """
query ($key: AssetKeyInput!, $partitions: [String!]) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      partitionStats { numMaterialized }
      latestMaterializationByPartition(partitions: $partitions) { partition }
    }
  }
}
"""
BACKFILL_RUNS = """
query ($tags: [ExecutionTag!]) {
  runsOrError(filter: {tags: $tags}) { ... on Runs { results { status tags { key value } } } }
}
"""


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = os.environ.get("AI_PIPELINE_TEST_ARTIFACTS")
    folder = (Path(root) if root else tmp_path_factory.mktemp("artifacts")) / "ui_browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require(CHROMIUM.exists(), f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterServer]:
    home = tmp_path_factory.mktemp("ui-browser") / "home"
    generate(home / "landing", DAYS[0], DAYS[-1], events_per_day=30, users=12, dirty_rate=0.05)
    with dagster_server(home, start_date=START) as running:
        # The "join the community" dialog of a fresh instance covers every page until dismissed once.
        assert running.query("mutation { setNuxSeen }")["setNuxSeen"] is True
        yield running


@pytest.fixture
def page(browser: Browser, artifacts: Path, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    opened = context.new_page()
    opened.set_default_timeout(UI_TIMEOUT_MS)
    expect.set_options(timeout=UI_TIMEOUT_MS)
    yield opened
    # The last state of every test, passed or failed, beside the named steps.
    opened.screenshot(path=str(artifacts / f"{request.node.name}-last.png"), full_page=True)
    context.close()


def _schema_verdict(server: DagsterServer, day: str) -> tuple[bool, str]:
    """The schema check's verdict and description for `day` as the landing reader computes them."""
    source = next(s for s in load_sources() if s.name == "landing_events")
    read = read_landing_day(
        server.settings.landing,
        source.folder,
        date.fromisoformat(day),
        source.contract_model,
        source=source.name,
        ingested_at=datetime.now(UTC),
        mapping=source.mapping,
    )
    errors = [r.error for r in read.reports if r.error]
    return not errors, errors[0] if errors else "ok"


def _launch_from_materialize_dialog(page: Page, server: DagsterServer, selection: str, button: str) -> None:
    """The asset page's "Materialize…" dialog: all partitions shown, `selection` typed, `button` clicked."""
    page.goto(f"{server.url}/assets/{ASSET}")
    page.get_by_role("button", name="Materialize…").first.click()
    dialog = page.get_by_role("dialog")
    # Only the last 90 days are offered at first; the test's days are older.
    dialog.get_by_text("Show all partitions").click()
    field = dialog.get_by_placeholder(re.compile(r"^ex: "))
    field.fill(selection)
    field.press("Enter")
    launch = dialog.get_by_role("button", name=button, exact=True)
    expect(launch).to_be_enabled()
    launch.click()


def test_the_asset_graph_shows_the_event_lane(page: Page, server: DagsterServer, artifacts: Path):
    page.goto(f"{server.url}/assets/validated_events?view=lineage")
    for name in ["raw_landing_events", "raw_online_retail_events", "validated_events", "user_daily_aggregates"]:
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    page.screenshot(path=str(artifacts / "01-asset-graph.png"))


def test_materialize_one_partition_and_see_its_check_result(page: Page, server: DagsterServer, artifacts: Path):
    _launch_from_materialize_dialog(page, server, DAY, "Launch 1 run")
    # The toast links the run it launched.
    page.get_by_role("link", name="View", exact=True).or_(
        page.get_by_role("button", name="View", exact=True)
    ).first.click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}$"))
    run_id = page.url.rsplit("/", 1)[-1]
    assert server.wait_for_run(run_id) == "SUCCESS", server.log_tail()
    run = server.query(RUN_TAGS, {"runId": run_id})["runOrError"]
    assert {t["key"]: t["value"] for t in run["tags"]}["dagster/partition"] == DAY
    page.reload()
    expect(page.get_by_text("Success", exact=True).first).to_be_visible()
    expect(page.get_by_text(f"partition: {DAY}")).to_be_visible()
    expect(page.get_by_text("RUN_SUCCESS").first).to_be_visible()  # the run's event log has loaded
    page.screenshot(path=str(artifacts / "02-run-of-one-partition.png"))

    # The asset-check view: the check's execution for that partition, with the reader's verdict and reason.
    passed, description = _schema_verdict(server, DAY)
    assert not passed and "doubled_column.csv" in description
    page.goto(f"{server.url}/assets/{ASSET}?view=checks")
    # The asset has two checks; the schema check is chosen from the list.
    page.get_by_text(SCHEMA_CHECK, exact=True).first.click()
    page.get_by_text("Execution history", exact=True).click()
    row = page.get_by_role("row").filter(has_text=description)
    expect(row).to_have_count(1)
    expect(row.get_by_text("Failed", exact=True)).to_be_visible()
    expect(row.get_by_text(DAY, exact=True)).to_be_visible()
    page.screenshot(path=str(artifacts / "03-check-results.png"))


def test_launch_a_small_backfill(page: Page, server: DagsterServer, artifacts: Path):
    _launch_from_materialize_dialog(page, server, f"[{BACKFILL[0]}...{BACKFILL[-1]}]", "Launch backfill")
    page.get_by_role("link", name="View", exact=True).or_(
        page.get_by_role("button", name="View", exact=True)
    ).first.click()
    page.wait_for_url(re.compile(r"/runs/b/[a-z]+"))
    backfill_id = page.url.rsplit("/", 1)[-1].split("?")[0]
    assert server.wait_for_backfill(backfill_id) == "COMPLETED_SUCCESS", server.log_tail()
    backfills = server.query(BACKFILLS)["partitionBackfillsOrError"]["results"]
    assert [b["assetSelection"] for b in backfills if b["id"] == backfill_id] == [[{"path": [ASSET]}]]
    runs = server.query(BACKFILL_RUNS, {"tags": [{"key": "dagster/backfill", "value": backfill_id}]})
    runs = runs["runsOrError"]["results"]
    assert {r["status"] for r in runs} == {"SUCCESS"}
    # One run for the range (runs of up to 30 days, the daily assets' backfill policy).
    assert [
        (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"])
        for tags in ({t["key"]: t["value"] for t in r["tags"]} for r in runs)
    ] == [(BACKFILL[0], BACKFILL[-1])]
    page.reload()
    expect(page.get_by_text("100% completed")).to_be_visible()
    expect(page.locator("body")).to_contain_text(re.compile(r"Status\s*Succeeded"))
    page.screenshot(path=str(artifacts / "04-backfill.png"))

    # The asset's Partitions tab counts what the server recorded, the backfilled days among them.
    stats = server.query(PARTITION_STATS, {"key": {"path": [ASSET]}, "partitions": BACKFILL})["assetNodeOrError"]
    assert [m and m["partition"] for m in stats["latestMaterializationByPartition"]] == BACKFILL
    page.goto(f"{server.url}/assets/{ASSET}?view=partitions")
    expect(page.get_by_text(f"Materialized ({stats['partitionStats']['numMaterialized']})")).to_be_visible()
    page.screenshot(path=str(artifacts / "05-asset-partitions.png"))
