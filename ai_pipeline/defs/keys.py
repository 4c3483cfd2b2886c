"""Every name the graph is wired by, defined once: asset keys, check names, groups, jobs, sensors, the pool.

Search for a key from the UI here to find its constant, then the constant to find the code that makes it (each
asset's page also links to its code). A landing source's raw asset is `raw_<name>`, its `name` in its
`ai_pipeline/defs/sources/<name>/defs.yaml`; the dbt models are named by their SQL files in `dbt_project/models/`.
"""

# ---------------------------------------------------------------------------------------------------- groups
RAW_GROUP = "raw"
VALIDATED_GROUP = "validated"
MARTS_GROUP = "marts"
FEATURES_GROUP = "features"
RAG_GROUP = "rag"
LLM_GROUP = "llm_data"

# ---------------------------------------------------------------------------------------------------- assets
RAW_OPERATIONAL_EVENTS = "raw_operational_events"
RAW_API_EVENTS = "raw_api_events"
RAW_FEEDBACK = "raw_feedback"
VALIDATED_EVENTS, QUARANTINED_EVENTS = "validated_events", "quarantined_events"
VALIDATED_USERS, QUARANTINED_USERS = "validated_users", "quarantined_users"
# dbt models (dbt_project/models/)
STG_USERS = "stg_users"
FCT_USER_DAILY_ACTIVITY, DIM_USERS = "fct_user_daily_activity", "dim_users"
USER_DAILY_AGGREGATES = "user_daily_aggregates"
USER_FEATURE_STATE = "user_feature_state"
USER_WINDOW_FEATURES = "user_window_features"
ONLINE_USER_FEATURES = "online_user_features"
RAW_DOCUMENTS = "raw_documents"
DOCUMENT_CHUNKS = "document_chunks"
CHUNK_EMBEDDINGS = "chunk_embeddings"
# The steps of `chunk_embeddings` (a graph: plan, one step per shard, write).
PLAN_EMBEDDINGS, EMBED_SHARD, WRITE_EMBEDDINGS = "plan_embeddings", "embed_shard", "write_embeddings"
VECTOR_COLLECTION = "vector_collection"
VALIDATED_CHAT_MESSAGES, QUARANTINED_CHAT_MESSAGES = "validated_chat_messages", "quarantined_chat_messages"
VALIDATED_TRANSCRIPT_PAIRS, QUARANTINED_TRANSCRIPT_PAIRS = "validated_transcript_pairs", "quarantined_transcript_pairs"
VALIDATED_FEEDBACK, QUARANTINED_FEEDBACK = "validated_feedback", "quarantined_feedback"
# The training-data lane (ai_pipeline/defs/llm/)
CONVERSATIONS, CONVERSATION_REJECTS = "conversations", "conversation_rejects"
SFT_DATASET, SFT_REJECTS = "sft_dataset", "sft_rejects"
PREFERENCE_PAIRS, PREFERENCE_KTO, PREFERENCE_REJECTS = "preference_pairs", "preference_kto", "preference_rejects"
LLM_RELEASES = "llm_releases"
# The validated and quarantined tables of each contract's entity.
ENTITY_TABLES = {
    "events": (VALIDATED_EVENTS, QUARANTINED_EVENTS),
    "users": (VALIDATED_USERS, QUARANTINED_USERS),
    "chat_messages": (VALIDATED_CHAT_MESSAGES, QUARANTINED_CHAT_MESSAGES),
    "transcript_pairs": (VALIDATED_TRANSCRIPT_PAIRS, QUARANTINED_TRANSCRIPT_PAIRS),
    "feedback": (VALIDATED_FEEDBACK, QUARANTINED_FEEDBACK),
}


def raw_key(source_name: str) -> str:
    """The raw asset of a declared landing source."""
    return f"raw_{source_name}"


# ---------------------------------------------------------------------------------------------------- checks
# raw_*
SCHEMA_CHECK = "schema_matches_contract"
FILES_CHECK = "every_file_record_read"
# validated_* / quarantined_*
CONSERVATION_CHECK = "rows_in_equal_valid_plus_quarantined"
QUARANTINE_RATE_CHECK = "quarantine_rate_below_threshold"
DUPLICATES_CHECK = "duplicate_keys_resolved"
UNIQUE_ACROSS_DAYS_CHECK = "key_unique_across_days"
EXPLAINED_CHECK = "every_row_has_reason_and_raw_record"
GX_EVENTS_CONTRACT_CHECK = "great_expectations_events_contract"
GX_EVENTS_STATISTICS_CHECK = "great_expectations_events_statistics"
GX_USERS_CONTRACT_CHECK = "great_expectations_users_contract"
# features
PARTIALS_CHECK = "partials_count_every_event"
STATE_CHECK = "running_totals_add_up"
NULLS_CHECK = "null_rates"
RANGES_CHECK = "value_ranges"
ROWS_CHECK = "one_row_per_active_user"
COMPLETENESS_CHECK = "window_complete"
DRIFT_CHECK = "feature_drift_psi"
CONSISTENCY_CHECK = "online_matches_offline"
# documents
LOADED_CHECK = "every_file_loaded_or_reported"
TOKENS_CHECK = "chunks_within_token_limit"
COVERAGE_CHECK = "every_chunk_embedded"
SYNC_CHECK = "vectors_match_chunks"
VALID_CHECK = "vectors_finite_and_normalized"
STALE_CHECK = "collection_reflects_sources"
GATE_CHECK = "retrieval_recall_at_5"
# training data
THREADED_CHECK = "every_message_threaded_or_rejected"
SFT_ACCOUNTED_CHECK = "every_thread_kept_or_rejected"
PAIRS_ACCOUNTED_CHECK = "every_candidate_paired_or_rejected"
PAIRS_VALID_CHECK = "pairs_well_formed"
PII_CHECK = "no_personal_data"
DECONTAMINATION_CHECK = "no_evaluation_overlap"
DUPLICATE_RATE_CHECK = "duplicate_rate_below_limit"
EMPTY_MESSAGES_CHECK = "no_empty_messages"
# release quality (lib/llm/release.py `qa` rule -> check)
RELEASE_CHECKS = {
    "rows": "release_not_empty",
    "reply_length": "release_reply_length",
    "empty_replies": "release_no_empty_replies",
    "label_balance": "release_label_balance",
}
# evaluated hourly on their own
PARTITION_LAG_CHECK = "latest_partition_on_time"
COLLECTIONS_LAG_CHECK = "collections_current"

# ------------------------------------------------------------------------------------------- jobs, sensors
DAILY_JOB = "daily_pipeline"
TRAINING_JOB = "training_data"
DOCUMENTS_JOB = "document_collections"
AUTOMATION_SENSOR = "pipeline_automation"
TRAINING_AUTOMATION_SENSOR = "training_data_automation"
DOCUMENTS_AUTOMATION_SENSOR = "documents_automation"
DOCUMENTS_SENSOR = "document_sources"
OPERATIONAL_SENSOR = "operational_events_rows"
LATE_ROWS_SENSOR = "late_rows"
ALERTS_SENSOR = "failure_alerts"
FEEDBACK_SENSOR = "feedback_rebuild"


def landing_sensor(source_name: str) -> str:
    """The sensor that watches a declared landing source's folder."""
    return f"{source_name}_files"


# A run of a lane's daily assets below the raw tables carries this tag, valued by the lane's job; the instance runs
# one such run per lane at a time (dagster.yaml, `tag_concurrency_limits`): the lane's state (features, deduplicated
# datasets) is cumulative, and two runs interleaved step by step would read each other's half-written days.
LANE_TAG = "ai_pipeline/lane"

# ------------------------------------------------------------------------------------------------------ pool
# DuckDB allows one writing process per file: every asset that writes the warehouse takes this pool,
# whose limit (1) is set in dagster.yaml.
DUCKDB_POOL = "duckdb_warehouse"
