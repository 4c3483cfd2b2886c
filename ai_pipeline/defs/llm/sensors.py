"""The feedback sensor: enough new ratings rebuild the preference sets of the days they rate."""

import json
from datetime import UTC, date, datetime

import dagster as dg

from ai_pipeline.defs.ingest.sensors import IN_RANGE, NOT_YET, day_status
from ai_pipeline.defs.keys import (
    FEEDBACK_SENSOR,
    PREFERENCE_KTO,
    PREFERENCE_PAIRS,
    PREFERENCE_REJECTS,
    QUARANTINED_FEEDBACK,
    RAW_FEEDBACK,
    TRAINING_JOB,
    VALIDATED_FEEDBACK,
)
from ai_pipeline.defs.policy import lane_tags
from ai_pipeline.defs.resources import FeedbackStore

REBUILT = [RAW_FEEDBACK, VALIDATED_FEEDBACK, QUARANTINED_FEEDBACK, PREFERENCE_PAIRS, PREFERENCE_KTO, PREFERENCE_REJECTS]


def feedback_sensor(
    partitions: dg.TimeWindowPartitionsDefinition, store: FeedbackStore, interval_s: int
) -> dg.SensorDefinition:
    """Counts the feedback stored beyond the watermark; from `rebuild_count` events on, requests the days they rate.

    Cursor: `{"watermark": the last arrival sequence handled, "pending": [days not yet partitions]}`. Below the
    count nothing moves: the events keep counting toward the next rebuild (and the daily poll of `raw_feedback`
    ingests them anyway)."""

    @dg.sensor(
        name=FEEDBACK_SENSOR,
        target=REBUILT,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Once {store.rebuild_count} new feedback events are stored (AI_PIPELINE_FEEDBACK_REBUILD_COUNT), "
        "requests the feedback and preference assets of the days they rate.",
        metadata={"store": store.location, "rebuild_count": store.rebuild_count},
    )
    def feedback_rebuild(context: dg.SensorEvaluationContext, feedback_store: FeedbackStore):
        state = json.loads(context.cursor) if context.cursor else {"watermark": 0, "pending": []}
        arrivals = feedback_store.store().after(state["watermark"])
        if arrivals.count < feedback_store.rebuild_count:
            return dg.SkipReason(
                f"{arrivals.count} new feedback events since the last rebuild, fewer than "
                f"{feedback_store.rebuild_count}"
            )
        today = datetime.now(UTC).date()
        requests, pending = [], []
        for day in sorted(set(arrivals.days) | {date.fromisoformat(d) for d in state["pending"]}):
            status, _ = day_status(partitions, day, today)
            if status == IN_RANGE:
                run_key = f"feedback:{day.isoformat()}:{arrivals.last_seq}"
                requests.append(
                    dg.RunRequest(partition_key=day.isoformat(), run_key=run_key, tags=lane_tags(TRAINING_JOB))
                )
            elif status == NOT_YET:
                pending.append(day.isoformat())
        context.log.info(
            f"{arrivals.count} new feedback events (up to #{arrivals.last_seq}): rebuilding "
            f"{[r.partition_key for r in requests]}, waiting for {pending}"
        )
        return dg.SensorResult(
            run_requests=requests, cursor=json.dumps({"watermark": arrivals.last_seq, "pending": pending})
        )

    return feedback_rebuild
