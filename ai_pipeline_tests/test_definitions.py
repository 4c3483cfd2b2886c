"""The code location loads, every asset carries its policy, and the graph matches its snapshot.

Set UPDATE_SNAPSHOTS=1 to rewrite the snapshot after a deliberate change; review the diff.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from ai_pipeline.defs import build_defs
from ai_pipeline.defs.keys import DAILY_JOB, DOCUMENTS_JOB, FEEDBACK_SENSOR, LLM_GROUP, TRAINING_JOB
from ai_pipeline.defs.policy import DAILY_BACKFILL, POLL_INTERVAL_S, REACT_INTERVAL_S
from ai_pipeline.instance import prepare_instance_home
from ai_pipeline.settings import PROJECT_ROOT, Settings

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_specs.json"


@pytest.fixture(scope="module")
def defs(tmp_path_factory) -> dg.Definitions:
    return build_defs(Settings(home=tmp_path_factory.mktemp("home")))


def _partitions(partitions: dg.PartitionsDefinition | None) -> str | None:
    if isinstance(partitions, dg.DailyPartitionsDefinition):
        return f"DailyPartitionsDefinition(start={partitions.start:%Y-%m-%d}, tz={partitions.timezone})"
    return repr(partitions)


def _spec_snapshot(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    checks_by_asset: dict[str, list[str]] = {}
    for check_key in graph.asset_check_keys:
        checks_by_asset.setdefault(check_key.asset_key.to_user_string(), []).append(check_key.name)
    snapshot = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        if not node.is_materializable:
            continue
        partitions = node.partitions_def
        snapshot[key.to_user_string()] = {
            "deps": sorted(d.to_user_string() for d in node.parent_keys),
            "partition_mappings": {
                d.to_user_string(): repr(graph.get_partition_mapping(key, d))
                for d in sorted(node.parent_keys)
                if graph.get_partition_mapping(key, d) != dg.TimeWindowPartitionMapping()
            },
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "owners": list(node.owners),
            "partitions": _partitions(partitions),
            "freshness": repr(node.freshness_policy),
            "automation": node.automation_condition.get_label() if node.automation_condition else None,
            "backfill": repr(node.backfill_policy),
            "checks": sorted(checks_by_asset.get(key.to_user_string(), [])),
        }
    return snapshot


# The dbt models that are not incremental (dbt_project.yml, defs/marts.py).
FULL_REBUILDS = {"stg_users", "dim_users"}


def test_every_asset_declares_its_policy(defs):
    graph = defs.resolve_asset_graph()
    materializable = [graph.get(k) for k in graph.get_all_asset_keys() if graph.get(k).is_materializable]
    assert len(materializable) >= 13
    for node in materializable:
        name = node.key.to_user_string()
        assert node.description, name
        assert node.group_name and node.group_name != "default", name
        assert node.kinds, name
        assert node.owners == ["team:data-platform"], name
        if node.group_name == "rag":  # one partition per document collection
            assert node.partitions_def == dg.DynamicPartitionsDefinition(name="document_collections"), name
        elif name in FULL_REBUILDS:  # dbt models that every run rebuilds whole: a partition would mean nothing
            assert node.partitions_def is None, name
        else:
            assert isinstance(node.partitions_def, dg.DailyPartitionsDefinition), name
        assert node.freshness_policy is not None, name
        # Daily assets backfill in runs of up to 30 days (defs/policy.py); a collection or a full rebuild is one run.
        expected = None if node.group_name == "rag" or name in FULL_REBUILDS else DAILY_BACKFILL
        assert node.backfill_policy == expected, name
        # Raw sources with a change feed are requested by their sensors; the polled ones (the API, the feedback
        # store) and everything else have an automation condition.
        sensor_fed = name.startswith("raw_") and name not in ("raw_api_events", "raw_feedback")
        assert (node.automation_condition is None) == sensor_fed, name


def test_every_asset_links_to_its_code_and_every_name_is_defined_once(defs):
    """One hop from a key in the UI to code: the asset's page links to the function that makes it (a landing source
    also to its YAML declaration, a dbt model to its SQL file), and each key and check name is a literal in
    `ai_pipeline/defs/keys.py` (a declared source's name in its defs.yaml, a dbt test's name in the dbt project)."""
    keys_module = (PROJECT_ROOT / "ai_pipeline" / "defs" / "keys.py").read_text()
    for spec in defs.resolve_all_asset_specs():
        name = spec.key.to_user_string()
        references = spec.metadata["dagster/code_references"].code_references
        files = [Path(r.file_path) for r in references]
        assert all(f.is_file() and f.is_relative_to(PROJECT_ROOT) for f in files), (name, files)
        python = [r for r in references if r.file_path.endswith(".py")]
        assert python, name
        for reference in python:  # the line starts the definition of a function (or its decorator)
            line = Path(reference.file_path).read_text().splitlines()[reference.line_number - 1]
            assert line.lstrip().startswith(("def ", "@")), (name, line)
        declarations = [f for f in files if f.name == "defs.yaml"]
        sql = [f for f in files if f.suffix == ".sql"]
        if declarations:
            assert f"name: {name.removeprefix('raw_')}" in declarations[0].read_text(), name
        elif sql:
            assert sql[0].stem == name and f'"{name}"' in keys_module, name
        else:
            assert f'"{name}"' in keys_module, name
    dbt_checks = set()
    for key in defs.resolve_asset_graph().asset_check_keys:
        if f'"{key.name}"' not in keys_module:
            dbt_checks.add(key)
    assert dbt_checks and all(
        k.asset_key.path[-1] in ("stg_users", "fct_user_daily_activity", "dim_users") for k in dbt_checks
    ), dbt_checks
    # No name is defined twice: keys.py names each one once, and no module of the Dagster layer spells it out (the
    # domain core in lib/ imports no Dagster: its table and metric names are its own).
    literals = re.findall(r'"([a-z0-9_]+)"', keys_module)
    assert len(literals) == len(set(literals))
    graph = defs.resolve_asset_graph()
    wired = {k.to_user_string() for k in graph.get_all_asset_keys()} | {k.name for k in graph.asset_check_keys}
    package = "\n".join(
        p.read_text()
        for p in (PROJECT_ROOT / "ai_pipeline").rglob("*.py")
        if p.name != "keys.py" and "lib" not in p.relative_to(PROJECT_ROOT).parts
    )
    assert sorted(n for n in set(literals) & wired if f'"{n}"' in package) == []


def test_asset_specs_match_snapshot(defs):
    current = _spec_snapshot(defs)
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())


def test_feature_windows_read_states_up_to_ninety_days_back(defs):
    graph = defs.resolve_asset_graph()
    windows, state = dg.AssetKey("user_window_features"), dg.AssetKey("user_feature_state")
    node = graph.get(windows)

    def upstream(child: dg.AssetKey, parent: dg.AssetKey, key: str) -> list[str]:
        mapping = graph.get_partition_mapping(child, parent)
        return sorted(
            mapping.get_upstream_mapped_partitions_result_for_partitions(
                node.partitions_def.subset_with_partition_keys([key]), node.partitions_def, node.partitions_def
            ).partitions_subset.get_partition_keys()
        )

    keys = upstream(windows, state, "2024-06-30")
    assert (keys[0], keys[-1], len(keys)) == ("2024-04-01", "2024-06-30", 91)
    assert upstream(state, state, "2024-06-30") == ["2024-06-29"]  # state D is state D-1 plus day D
    assert upstream(state, state, "2024-01-01") == []  # the start of history has no previous state


ENTITIES = ("chat_messages", "transcript_pairs", "feedback")


def test_the_lanes_jobs_cover_every_asset_once(defs):
    graph = defs.resolve_asset_graph()
    daily, training, documents = (
        {k.to_user_string() for k in defs.resolve_job_def(job).asset_layer.executable_asset_keys}
        for job in (DAILY_JOB, TRAINING_JOB, DOCUMENTS_JOB)
    )
    assert daily | training | documents == {k.to_user_string() for k in graph.materializable_asset_keys}
    assert not daily & training and not daily & documents and not training & documents
    assert documents == {"raw_documents", "document_chunks", "chunk_embeddings", "vector_collection"}
    # The training-data lane: its sources, validated and quarantined by their contracts, then its own group.
    assert training == {
        "raw_chat_messages",
        "raw_transcript_pairs",
        "raw_feedback",
        *(f"{kind}_{entity}" for kind in ("validated", "quarantined") for entity in ENTITIES),
        *(k.to_user_string() for k in graph.materializable_asset_keys if graph.get(k).group_name == LLM_GROUP),
    }
    assert {"raw_landing_events", "validated_events", "fct_user_daily_activity", "online_user_features"} <= daily


def test_entry_point_loads_without_heavy_imports(tmp_path):
    """`ai_pipeline.definitions:defs` loads in a fresh process without importing torch, GX or chromadb."""
    code = (
        "import sys; import ai_pipeline.definitions as d; "
        "heavy = [m for m in ('torch', 'great_expectations', 'chromadb', 'sentence_transformers') "
        "if m in sys.modules]; "
        "print(len(d.defs.resolve_asset_graph().get_all_asset_keys()), heavy)"
    )
    env = {**os.environ, "AI_PIPELINE_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    count, heavy = out.stdout.strip().split(" ", 1)
    assert int(count) >= 13
    assert heavy == "[]"


def test_every_sensor_runs_by_default(defs):
    """Dagster's implicit automation sensor starts stopped; ours are explicit and running."""
    sensors = {s.name: s for s in defs.sensors}
    assert {"pipeline_automation", "documents_automation", "document_sources", "landing_events_files"} <= set(sensors)
    assert {"operational_events_rows", "failure_alerts"} <= set(sensors)
    for name, sensor in sensors.items():
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING, name


def test_one_setting_sets_every_sensors_interval(defs, tmp_path):
    """Each sensor ticks at its own interval (30 s reacting, 60 s polling) unless AI_PIPELINE_SENSOR_INTERVAL_S sets
    one for all of them."""
    intervals = {s.name: s.minimum_interval_seconds for s in defs.sensors}
    polling = {"operational_events_rows", "document_sources", FEEDBACK_SENSOR}
    assert {name for name, seconds in intervals.items() if seconds == POLL_INTERVAL_S} == polling
    assert {name for name, seconds in intervals.items() if seconds == REACT_INTERVAL_S} == set(intervals) - polling
    env = {"AI_PIPELINE_HOME": str(tmp_path), "AI_PIPELINE_SENSOR_INTERVAL_S": "5"}
    fast = build_defs(Settings.from_env(env))
    assert {s.name: s.minimum_interval_seconds for s in fast.sensors} == dict.fromkeys(intervals, 5)
    for value, error in [("soon", "whole number of seconds"), ("0", "at least 1 second")]:
        with pytest.raises(ValueError, match=f"AI_PIPELINE_SENSOR_INTERVAL_S must be .*{error}"):
            Settings.from_env({**env, "AI_PIPELINE_SENSOR_INTERVAL_S": value})


def test_dg_lists_the_whole_graph_with_each_assets_source(defs, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AI_PIPELINE_", "DAGSTER_"))}
    env |= {"AI_PIPELINE_HOME": str(tmp_path), "DAGSTER_HOME": str(prepare_instance_home(Settings(home=tmp_path)))}
    dg_cli = Path(sys.executable).parent / "dg"
    out = subprocess.run(
        [str(dg_cli), "list", "defs", "--json"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    listed = json.loads(out.stdout)
    graph = defs.resolve_asset_graph()
    assert {a["asset_key"] for a in listed["assets"]} == {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert all(a["source"] and (PROJECT_ROOT / a["source"].rsplit(":", 1)[0]).is_file() for a in listed["assets"])
    assert len(listed["asset_checks"]) == len(graph.asset_check_keys)
    assert {r["name"] for r in listed["resources"]} >= {
        "warehouse",
        "io_manager",
        "landing_zone",
        "ops_database",
        "events_api",
        "online_store",
        "chroma",
        "embedder",
        "alert_webhook",
        "dbt",
    }


def test_the_document_collections_come_from_the_environment(tmp_path):
    (tmp_path / "kb").mkdir()
    extra = {"AI_PIPELINE_DOC_SOURCES": f"kbase={tmp_path / 'kb'}"}
    names = [s.name for s in Settings.from_env(extra).doc_sources]
    assert names == ["project_docs", "kbase"]
    alone = Settings.from_env({**extra, "AI_PIPELINE_PROJECT_DOCS": "off"}).doc_sources
    assert [(s.name, s.root) for s in alone] == [("kbase", tmp_path / "kb")]
    assert Settings.from_env({"AI_PIPELINE_PROJECT_DOCS": "off"}).doc_sources == ()
    with pytest.raises(ValueError, match="AI_PIPELINE_PROJECT_DOCS must be 'on' or 'off'"):
        Settings.from_env({"AI_PIPELINE_PROJECT_DOCS": "no"})
