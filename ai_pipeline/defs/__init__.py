"""Everything the code location holds: the graph from Settings (data root, first day, sources), the outside systems
as resources (embedded defaults; `definitions.py` passes the environment's, tests their own)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from ai_pipeline.defs.features import feature_assets
from ai_pipeline.defs.ingest.assets import VALIDATED, ingest_assets, lane_assets, raw_keys
from ai_pipeline.defs.ingest.checks import ingest_checks
from ai_pipeline.defs.ingest.sensors import landing_files_sensor, late_rows_sensor, operational_rows_sensor
from ai_pipeline.defs.keys import (
    DAILY_JOB,
    DOCUMENTS_JOB,
    GX_EVENTS_CONTRACT_CHECK,
    GX_EVENTS_STATISTICS_CHECK,
    GX_USERS_CONTRACT_CHECK,
    LLM_GROUP,
    RAG_GROUP,
    TRAINING_JOB,
)
from ai_pipeline.defs.llm.assets import llm_assets
from ai_pipeline.defs.llm.sensors import feedback_sensor
from ai_pipeline.defs.marts import build_dbt_assets
from ai_pipeline.defs.ops.alerts import failure_alerts_sensor
from ai_pipeline.defs.ops.automation import apply_conditions, automation_sensors
from ai_pipeline.defs.ops.freshness import apply_freshness, lag_checks
from ai_pipeline.defs.policy import (
    DAILY_LANES,
    POLL_INTERVAL_S,
    REACT_INTERVAL_S,
    daily_partitions,
    lane_tags,
    sensor_interval,
)
from ai_pipeline.defs.rag.assets import rag_assets
from ai_pipeline.defs.rag.checks import collection_lag_check, rag_checks
from ai_pipeline.defs.rag.sensors import documents_sensor
from ai_pipeline.defs.resources import ALERT_WEBHOOK, FEEDBACK, LANDING, ONLINE_STORE, OPS_DB, embedded_resources
from ai_pipeline.lib.ingest import expectations
from ai_pipeline.settings import Settings
from ai_pipeline.sources import load_sources

LANES = {
    DAILY_JOB: "Every daily asset of the events lane for one day: raw sources, validation, dbt marts, features, the "
    "online store, and their checks.",
    TRAINING_JOB: "The training-data lane for one day: conversation trees, transcript pairs and feedback, validated, "
    "then threads, the SFT set, preference pairs and releases, and their checks (the gates included).",
    DOCUMENTS_JOB: "One document collection: documents, chunks, embeddings, the vector collection, and its checks (the "
    "retrieval gate included).",
}


def build_defs(
    settings: Settings,
    resources: Mapping[str, Any] | None = None,
    executor: dg.ExecutorDefinition = dg.in_process_executor,
) -> dg.Definitions:
    """`resources` replace the embedded defaults key by key; `executor` runs the steps (`defs/execution.py`)."""
    resources = {**embedded_resources(settings), **(resources or {})}
    partitions = daily_partitions(settings)
    sources = load_sources(settings.sources_dir)
    assets = ingest_assets(settings, partitions, sources)
    suites = {
        "events": {
            expectations.EVENTS_CONTRACT: GX_EVENTS_CONTRACT_CHECK,
            expectations.EVENTS_STATISTICS: GX_EVENTS_STATISTICS_CHECK,
        },
        "users": {expectations.USERS_CONTRACT: GX_USERS_CONTRACT_CHECK},
    }
    checks = [
        ingest_checks(
            v.entity,
            raw_keys(assets, v.model),
            suites=suites.get(v.entity, {}),
            partitions=partitions,
            unique_key=v.key if v.once else None,
        )
        for v in VALIDATED
    ]
    dbt_assets, dbt_resources = build_dbt_assets(settings, partitions)
    # Evaluated hourly on their own (automation conditions), not as part of a day's or a collection's run.
    hourly = [lag_checks(partitions), collection_lag_check(settings)]
    # Three lanes, each a job of its own: a day of one lane never waits for another lane's steps.
    training = lane_assets(assets, TRAINING_JOB) | dg.AssetSelection.groups(LLM_GROUP)
    documents = dg.AssetSelection.groups(RAG_GROUP)
    lanes = {
        DAILY_JOB: dg.AssetSelection.all() - documents - training,
        TRAINING_JOB: training,
        DOCUMENTS_JOB: documents,
    }
    jobs = {
        name: dg.define_asset_job(
            name,
            selection=lane - dg.AssetSelection.checks(*hourly),
            description=LANES[name],
            tags=lane_tags(name),
        )
        for name, lane in lanes.items()
    }
    react, poll = sensor_interval(settings, REACT_INTERVAL_S), sensor_interval(settings, POLL_INTERVAL_S)
    defs = dg.Definitions(
        # Each asset links to the function that makes it (and a landing source to its YAML declaration).
        assets=dg.with_source_code_references(
            [
                *assets,
                *dbt_assets,
                *feature_assets(settings, partitions, resources[ONLINE_STORE].backend),
                *rag_assets(settings),
                *llm_assets(settings, partitions),
            ]
        ),
        asset_checks=[*checks, rag_checks(settings), *hourly],
        jobs=list(jobs.values()),
        # The resources given to the sensor factories name the folder, table or webhook in the UI's descriptions.
        sensors=[
            *(landing_files_sensor(source, partitions, resources[LANDING], react) for source in sources),
            operational_rows_sensor(partitions, resources[OPS_DB], poll),
            late_rows_sensor([jobs[name] for name in DAILY_LANES], partitions, react),
            documents_sensor(settings),
            *automation_sensors(lanes, react),
            failure_alerts_sensor(resources[ALERT_WEBHOOK], react),
            feedback_sensor(partitions, resources[FEEDBACK], poll),
        ],
        resources={**resources, **dbt_resources},
        executor=executor,
    )
    return apply_freshness(apply_conditions(defs))
