"""Landing sources are declared in YAML: a new one joins the graph with its checks and sensor, no Python written."""

from __future__ import annotations

from datetime import UTC, date, datetime

import dagster as dg
import duckdb
import pytest

from ai_pipeline.defs import build_defs
from ai_pipeline.defs.keys import DAILY_JOB, FILES_CHECK, SCHEMA_CHECK
from ai_pipeline.settings import Settings
from ai_pipeline.sources import BUILT_IN, SourceDeclarationError, load_sources
from ai_pipeline_tests.conftest import landing_zone

DAY = date(2024, 3, 31)  # the night British clocks go forward: local times and UTC differ by an hour after it
PARTNER = """\
type: ai_pipeline.components.LandingSource
attributes:
  name: partner_orders
  folder: partner
  contract: Event
  description: Orders from a partner's spreadsheet export (semicolon-separated, Windows encoding, local times).
  lateness_days: 3
  cadence_days: 7
  read:
    encoding: cp1252
    delimiter: ";"
  columns:
    Kunde: user_id
  required_columns: [Bestellung, Kunde, Menge, Preis, Zeit]
  derive:
    event_id: "'partner-' || Bestellung"
    amount: "try_cast(Menge as double) * try_cast(Preis as double)"
  timestamp:
    column: Zeit
    format: "%d.%m.%Y %H:%M"
    timezone: Europe/London
  constants:
    event_type: purchase
    country: Germany
  normalize:
    user_id: [trim, integer_text]
    category: [trim, lower]  # an optional field this export does not send: nothing to normalize
"""
EXPORT = (
    "Bestellung;Kunde;Menge;Preis;Zeit;Notiz\n"
    "1001;17850.0;2;9.5;31.03.2024 00:30;Käse\n"  # GMT: 00:30 UTC
    "1002; 17851 ;1;4.25;31.03.2024 23:10;\n"  # BST: 22:10 UTC
    "1003;17852;zwei;1.0;31.03.2024 12:00;\n"  # Menge is not a number
    "1004;17853;1;1.0;32.03.2024 12:00;\n"  # not a date
    + "".join(f"{n};{n};1;1.0;31.03.2024 15:00;\n" for n in range(2000, 2010))
).encode("cp1252")


@pytest.fixture
def declared(tmp_path):
    folder = tmp_path / "sources" / "partner_orders"
    folder.mkdir(parents=True)
    (folder / "defs.yaml").write_text(PARTNER)
    return Settings(home=tmp_path / "home", start_date=DAY, sources_dir=tmp_path / "sources")


def test_the_built_in_sources_are_declarations():
    built_in = ["chat_messages", "landing_events", "landing_users", "online_retail_events", "transcript_pairs"]
    assert sorted(p.parent.name for p in BUILT_IN.glob("*/defs.yaml")) == built_in
    assert [s.name for s in load_sources()] == built_in


def test_the_component_a_declaration_names_builds_a_lone_source_from_the_same_attributes(declared, monkeypatch):
    """`dg` loads a lone `defs.yaml` through the component; the project reads the same attributes as declarations."""
    from ai_pipeline.components import LandingSource
    from ai_pipeline.sources import COMPONENT_TYPE, SourceDeclaration

    assert COMPONENT_TYPE == f"{LandingSource.__module__}.{LandingSource.__name__}"
    assert issubclass(LandingSource, SourceDeclaration) and issubclass(LandingSource, dg.Component)
    declaration = load_sources(declared.sources_dir)[-1]
    component = LandingSource.model_validate(declaration.model_dump())
    assert component.mapping == declaration.mapping and component.read_options == declaration.read_options
    monkeypatch.setenv("AI_PIPELINE_HOME", str(declared.home))
    monkeypatch.setenv("AI_PIPELINE_START_DATE", DAY.isoformat())
    lone = component.build_defs(None)
    assert [k.to_user_string() for k in lone.resolve_asset_graph().get_all_asset_keys()] == ["raw_partner_orders"]
    assert [s.name for s in lone.sensors] == ["partner_orders_files"]


def test_a_yaml_declared_source_joins_the_graph_with_its_checks_and_sensor(declared):
    defs = build_defs(declared, landing_zone(declared))
    graph = defs.resolve_asset_graph()
    key = dg.AssetKey("raw_partner_orders")
    assert key in graph.get_all_asset_keys()
    assert {c.name for c in graph.asset_check_keys if c.asset_key == key} == {SCHEMA_CHECK, FILES_CHECK}
    assert key in graph.get(dg.AssetKey("validated_events")).parent_keys
    spec = next(s for s in defs.resolve_all_asset_specs() if s.key == key)
    assert spec.group_name == "raw" and "partner's spreadsheet export" in spec.description
    assert spec.freshness_policy.fail_window.to_timedelta().days == 14  # two missed weekly deliveries
    assert defs.resolve_sensor_def("partner_orders_files").default_status == dg.DefaultSensorStatus.RUNNING


def test_a_yaml_declared_source_is_read_mapped_and_validated(declared):
    path = declared.landing / "partner" / DAY.isoformat() / "orders.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(EXPORT)
    job = build_defs(declared, landing_zone(declared)).resolve_job_def(DAILY_JOB)
    keys = [dg.AssetKey(k) for k in ("raw_partner_orders", "validated_events", "quarantined_events")]
    result = job.execute_in_process(partition_key=DAY.isoformat(), asset_selection=keys)
    assert result.success
    with duckdb.connect(str(declared.warehouse), read_only=True) as conn:
        valid = conn.execute("select * from validated_events order by event_id").pl()
        quarantined = conn.execute("select * from quarantined_events order by _source_offset").pl()
    assert valid.height == 12 and quarantined.height == 2
    assert valid.head(2).select("event_id", "user_id", "event_type", "amount", "country").rows() == [
        ("partner-1001", "17850", "purchase", 19.0, "Germany"),
        ("partner-1002", "17851", "purchase", 4.25, "Germany"),
    ]
    assert valid.head(2)["event_time"].to_list() == [
        datetime(2024, 3, 31, 0, 30, tzinfo=UTC),
        datetime(2024, 3, 31, 22, 10, tzinfo=UTC),
    ]
    reasons = {row["_source_offset"]: row["reasons"][0] for row in quarantined.to_dicts()}
    assert (reasons[4]["field"], reasons[4]["rule"]) == ("amount", "type")
    assert reasons[4]["value"] == "derived from Menge='zwei', Preis='1.0'"
    assert (reasons[5]["field"], reasons[5]["rule"], reasons[5]["value"]) == ("event_time", "type", "32.03.2024 12:00")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("contract: Event", "contract: Order"), "Input should be 'Event', 'User', 'ChatMessage' or 'TranscriptPair'"),
        (("    amount:", "    amout:"), "derive: ['amout'] are not fields of the contract"),
        (("[trim, integer_text]", "[trim, snake_case]"), "Input should be 'trim', 'lower', 'upper' or 'integer_text'"),
        (("Kunde: user_id", "Kunde: customer"), "columns map to ['customer'], which are not fields of Event"),
        (("* try_cast(Preis as double)", "* try_cast(Preis as double"), "derive amount: cannot parse"),
        (("type: ai_pipeline.components.LandingSource", "type: LandingSource"), "expected 'ai_pipeline.components"),
    ],
)
def test_a_broken_declaration_names_its_file_and_mistake(tmp_path, change, message):
    folder = tmp_path / "partner_orders"
    folder.mkdir()
    (folder / "defs.yaml").write_text(PARTNER.replace(*change))
    with pytest.raises(SourceDeclarationError) as error:
        load_sources(tmp_path)
    assert str(error.value).startswith(f"{folder / 'defs.yaml'}: ") and message in str(error.value)


def test_names_and_folders_are_unique(tmp_path):
    folder = tmp_path / "again"
    folder.mkdir()
    (folder / "defs.yaml").write_text(PARTNER.replace("name: partner_orders", "name: landing_events"))
    with pytest.raises(
        SourceDeclarationError, match=r"more than one landing source with the name \['landing_events'\]"
    ):
        load_sources(tmp_path)


def test_a_derived_expression_that_fails_is_a_schema_error_naming_it(declared):
    (declared.sources_dir / "partner_orders" / "defs.yaml").write_text(
        PARTNER.replace("try_cast(Menge as double)", "cast(Menge as double)")
    )
    path = declared.landing / "partner" / DAY.isoformat() / "orders.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(EXPORT)
    job = build_defs(declared, landing_zone(declared)).resolve_job_def(DAILY_JOB)
    result = job.execute_in_process(
        partition_key=DAY.isoformat(), asset_selection=[dg.AssetKey("raw_partner_orders")], raise_on_error=False
    )
    [schema] = [e for e in result.get_asset_check_evaluations() if e.check_name == SCHEMA_CHECK]
    assert not schema.passed and "cannot derive amount = cast(Menge as double)" in schema.description
    with duckdb.connect(str(declared.warehouse), read_only=True) as conn:
        raw = conn.execute("select _read_error from raw_partner_orders").pl()
    assert raw.height == 14 and raw["_read_error"].str.contains("cannot derive amount").all()
