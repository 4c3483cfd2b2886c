"""The document sensor: new sources become partitions, changed files request a reload of their documents."""

import json

import dagster as dg

from ai_pipeline.defs.keys import (
    DOCUMENTS_SENSOR,
    RAW_DOCUMENTS,
)
from ai_pipeline.defs.policy import POLL_INTERVAL_S, sensor_interval
from ai_pipeline.defs.rag.assets import COLLECTIONS, built_state
from ai_pipeline.lib.rag import documents
from ai_pipeline.settings import Settings


def documents_sensor(settings: Settings) -> dg.SensorDefinition:
    """Registers every configured source as a partition and reloads the documents of a source whose files changed.

    The automation sensor then carries the change to chunks, embeddings and the vector collection.

    The cursor holds each source's fingerprint (names, sizes and modification times of its files, no content
    read); a run key of source and fingerprint means one run per state of the files, however often it ticks. A
    source the cursor does not know yet is not requested when its collection was last built from the same files
    (`built_state`).
    """

    @dg.sensor(
        name=DOCUMENTS_SENSOR,
        target=[RAW_DOCUMENTS],
        minimum_interval_seconds=sensor_interval(settings, POLL_INTERVAL_S),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="New document sources become partitions of the RAG assets; added, changed or deleted files "
        "request a reload of their documents, which automation carries down to the vector collection.",
    )
    def document_sources(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        known = json.loads(context.cursor) if context.cursor else {}
        existing = set(context.instance.get_dynamic_partitions(COLLECTIONS.name))
        new = [s.name for s in settings.doc_sources if s.name not in existing]
        current, requests, skipped = {}, [], []
        for source in settings.doc_sources:
            try:
                current[source.name] = documents.fingerprint(source.root, source.include)
            except (OSError, ValueError) as error:
                skipped.append(f"{source.name}: {error}")
                continue
            if current[source.name] == known.get(source.name):
                continue
            if source.name not in known and built_state(context.instance, source.name) == current[source.name]:
                continue  # built from these files by a run this sensor did not request (the CLI, before a restart)
            requests.append(dg.RunRequest(partition_key=source.name, run_key=f"{source.name}:{current[source.name]}"))
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[COLLECTIONS.build_add_request(new)] if new else [],
            cursor=json.dumps(current, sort_keys=True),
            skip_reason="; ".join(skipped) if skipped and not requests else None,
        )

    return document_sources
