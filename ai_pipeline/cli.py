"""`ai-pipeline`: generate a sample, run the daily pipeline through Dagster, print what happened."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import sys
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from ai_pipeline.instance import instance_kind, prepare_instance_home
from ai_pipeline.lib.feature_store.features import FEATURE_DATE, HORIZON, USER
from ai_pipeline.lib.feature_store.training import DEFAULT_TTL, EntityError, read_entities, training_set
from ai_pipeline.lib.rag.retrieval import MODES
from ai_pipeline.settings import Settings

DEFAULT_DAYS = 7
DEMO_QUESTION = "How do I add my own folder of documents as a new collection?"
# The run's own log stays in the instance (and the UI); the terminal gets warnings and the summary.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class DayOutcome:
    day: str
    job: str  # the lane's daily job
    success: bool
    rows: dict[str, dict[str, int]] = field(default_factory=dict)  # entity -> in/valid/quarantined
    feature_rows: int | None = None
    checks_passed: int = 0
    checks_failed: list[str] = field(default_factory=list)  # "asset:check (SEVERITY): description"
    steps_failed: list[str] = field(default_factory=list)  # "step: error" of the day's (range) run


def _default_range(days: int) -> tuple[date, date]:
    end = datetime.now(UTC).date() - timedelta(days=1)
    return end - timedelta(days=days - 1), end


def _use_instance(settings: Settings):
    from dagster import DagsterInstance

    os.environ["DAGSTER_HOME"] = str(prepare_instance_home(settings, instance_kind()))
    return DagsterInstance.get()


def _resources(settings: Settings) -> dict:
    """The code location's resources: the embedded defaults with the environment's settings."""
    from ai_pipeline.defs.resources import resources_from_env

    return resources_from_env(settings)


def _resource(settings: Settings, key: str):
    """One resource, ready to use outside a run (its environment variables read)."""
    return _resources(settings)[key].process_config_and_initialize()


def run_days(settings: Settings, start: date, end: date, job_name: str | None = None) -> list[DayOutcome]:
    """A lane's daily job (the events lane's by default) over `start..end` in runs of partition ranges, one after
    another, as a backfill runs them: within a run every source of every day is read before any day is validated,
    so rows that arrived on another day of the range reach their own. Recorded in the configured Dagster instance;
    one outcome per day, from the checks' per-day results.

    The steps run where `AI_PIPELINE_EXECUTOR` says: in this process, or on the Celery workers (`ai-pipeline
    worker`), each range then a run of the code location's job (`ai_pipeline.definitions`, from the same
    environment) that this process orchestrates."""
    from ai_pipeline.defs.keys import DAILY_JOB
    from ai_pipeline.defs.policy import DAILY_BACKFILL

    job_name = job_name or DAILY_JOB
    instance = _use_instance(settings)
    execute = _executor_of(settings, job_name)
    outcomes: list[DayOutcome] = []
    first = start
    while first <= end:
        last = min(end, first + timedelta(days=DAILY_BACKFILL.max_partitions_per_run - 1))
        log = settings.home / "logs" / f"{job_name}-{first}-{last}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"Running {job_name} for {first}..{last} (dbt output: {log})", flush=True)
        tags = {
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        }
        # dagster-dbt echoes dbt's events to stdout; they go to the run's log file instead of the terminal.
        with log.open("w") as out, contextlib.redirect_stdout(out), execute(instance, tags) as result:
            outcomes += _day_outcomes(result, job_name, first, last)
        first = last + timedelta(days=1)
    return outcomes


def _executor_of(settings: Settings, job_name: str):
    """A context manager factory `(instance, tags) -> result` that runs `job_name` (a partition or range, by the
    tags) where `AI_PIPELINE_EXECUTOR` says."""
    import dagster as dg

    from ai_pipeline.defs.execution import executor_name

    mode = executor_name()
    if mode == "k8s":
        raise SystemExit(
            "AI_PIPELINE_EXECUTOR=k8s: runs start in the cluster (the UI, a sensor, or `dagster job launch`), "
            "not from this command"
        )
    if mode == "celery" and instance_kind() != "postgres":
        raise SystemExit(
            "AI_PIPELINE_EXECUTOR=celery needs the instance every worker reaches: AI_PIPELINE_INSTANCE=postgres"
        )
    if mode == "celery":
        import warnings

        from celery.exceptions import DuplicateTaskNameWarning

        # dagster-celery registers its one task again for every step it submits; Celery warns each time.
        warnings.filterwarnings("ignore", category=DuplicateTaskNameWarning)
        job = dg.build_reconstructable_job("ai_pipeline.definitions", "lane_job", reconstructable_args=(job_name,))

        def on_workers(instance, tags):
            return dg.execute_job(job, instance=instance, tags=tags, run_config=QUIET, raise_on_error=False)

        return on_workers
    from ai_pipeline.defs import build_defs

    local = build_defs(settings, _resources(settings)).resolve_job_def(job_name)

    @contextlib.contextmanager
    def in_process(instance, tags):
        yield local.execute_in_process(tags=tags, instance=instance, run_config=QUIET, raise_on_error=False)

    return in_process


def _day_outcomes(result, job: str, start: date, end: date) -> list[DayOutcome]:
    """One outcome per day of a range run, from its checks' per-day results."""
    from ai_pipeline.defs.keys import CONSERVATION_CHECK, ROWS_CHECK
    from ai_pipeline.event_log import root_error

    days = [start + timedelta(days=n) for n in range((end - start).days + 1)]
    steps = [
        f"{event.step_key}: {root_error(event.event_specific_data.error).splitlines()[0]}"
        for event in result.all_events
        if event.is_step_failure
    ]
    outcomes = {day.isoformat(): DayOutcome(day.isoformat(), job, result.success, steps_failed=steps) for day in days}
    for evaluation in result.get_asset_check_evaluations():
        # The checks of the models rebuilt in full (no partition) judge the state after the range: its last day.
        outcome = outcomes.get(evaluation.partition or end.isoformat())
        if outcome is None:
            continue
        name, meta = evaluation.asset_key.path[-1], evaluation.metadata
        if evaluation.check_name == CONSERVATION_CHECK and name.startswith("validated_"):
            outcome.rows[name.removeprefix("validated_")] = {
                "in": meta["rows_in"].value,
                "valid": meta["rows_valid"].value,
                "quarantined": meta["rows_quarantined"].value,
            }
        if evaluation.check_name == ROWS_CHECK:
            outcome.feature_rows = meta["rows"].value
        if evaluation.passed:
            outcome.checks_passed += 1
        else:
            outcome.checks_failed.append(
                f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name} ({evaluation.severity.value}): "
                f"{evaluation.description}"
            )
    return list(outcomes.values())


def import_history(settings: Settings, source_name: str, files: list[Path]) -> int:
    """A bulk export (months or years in one file) into the landing zone, every row on its own day.

    The files go into the folder of the earliest day they hold, where every row is at most days *after* its arrival
    day and so reaches its own day (`lib.routing`); then the daily job runs over their days, in ranges."""
    from ai_pipeline.defs.ingest.assets import contract_job
    from ai_pipeline.lib.ingest.landing import COMPLETION_MARKER, event_days
    from ai_pipeline.sources import load_sources

    sources = {s.name: s for s in load_sources(settings.sources_dir)}
    if source_name not in sources:
        print(f"error: no landing source {source_name!r}; declared: {', '.join(sorted(sources))}", file=sys.stderr)
        return 2
    source = sources[source_name]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        print(f"error: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    days = sorted({d for f in files for d in event_days(f, source.contract_model, source.mapping, source.read_options)})
    if not days:
        print(
            f"error: no readable event time in {', '.join(map(str, files))} (read as {source_name}): nothing to "
            "place by day; drop the files in the day folder they belong to",
            file=sys.stderr,
        )
        return 2
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    arrival, last = max(days[0], settings.start_date), min(days[-1], yesterday)
    folder = settings.landing / source.folder / arrival.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    for path in files:
        target = folder / path.name
        if target.exists() and target.read_bytes() != path.read_bytes():
            print(f"error: {target} exists with other content; rename the export", file=sys.stderr)
            return 2
        shutil.copyfile(path, target)
    (folder / COMPLETION_MARKER).touch()
    print(f"{len(files)} file(s) holding days {days[0]}..{days[-1]} placed in {folder}")
    if days[0] < settings.start_date:
        print(f"Rows before AI_PIPELINE_START_DATE ({settings.start_date}) are quarantined (before_start).")
    if days[-1] > yesterday:
        print(f"Rows after {yesterday} wait in the raw table until their day is a partition.")
    outcomes = run_days(settings, arrival, last, contract_job(source.contract_model))
    print_summary(settings, outcomes)
    return 0 if all(o.success for o in outcomes) else 1


@dataclass
class CollectionOutcome:
    name: str
    success: bool
    metadata: dict[str, object] = field(default_factory=dict)
    checks_failed: list[str] = field(default_factory=list)
    unchanged: bool = False  # built from the same files before: no run


def build_collections(settings: Settings) -> list[CollectionOutcome]:
    """One run of the documents job per configured document source, recorded in the configured instance."""
    from ai_pipeline.defs.keys import DOCUMENTS_JOB
    from ai_pipeline.defs.rag.assets import built_state, register_collections
    from ai_pipeline.lib.rag.documents import fingerprint

    instance = _use_instance(settings)
    register_collections(instance, settings)
    execute, outcomes = None, []
    for source in settings.doc_sources:
        if built_state(instance, source.name) == fingerprint(source.root, source.include):
            print(f"Collection {source.name}: no file under {source.root} changed since its last build", flush=True)
            outcomes.append(CollectionOutcome(source.name, True, unchanged=True))
            continue
        print(f"Building collection {source.name} from {source.root}", flush=True)
        execute = execute or _executor_of(settings, DOCUMENTS_JOB)
        with execute(instance, {"dagster/partition": source.name}) as result:
            outcomes.append(_collection_outcome(source.name, result))
    return outcomes


def _collection_outcome(name: str, result) -> CollectionOutcome:
    """What a run of the documents job did to one collection."""
    from ai_pipeline.defs.keys import GATE_CHECK

    outcome = CollectionOutcome(name, result.success)
    for event in result.get_asset_materialization_events():
        meta = event.materialization.metadata
        for key in ("embedded", "reused", "added", "updated", "deleted", "writes"):
            if key in meta:
                outcome.metadata[key] = meta[key].value
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.check_name == GATE_CHECK and "recall_at_5" in evaluation.metadata:
            outcome.metadata["recall@5"] = evaluation.metadata["recall_at_5"].value
        if not evaluation.passed:
            outcome.checks_failed.append(f"{evaluation.check_name} ({evaluation.severity.value})")
    return outcome


def print_collections(outcomes: list[CollectionOutcome]) -> None:
    print(f"\n{'collection':<16} {'run':<8} {'embedded/reused':<16} {'added/upd./del.':<16} {'recall@5':<9} checks")
    for o in outcomes:
        if o.unchanged:
            print(f"{o.name:<16} {'no-op':<8} {'-':<16} {'-':<16} {'-':<9} no file changed since the last build")
            continue
        m = o.metadata
        embedded = f"{m.get('embedded', '-')}/{m.get('reused', '-')}"
        writes = f"{m.get('added', '-')}/{m.get('updated', '-')}/{m.get('deleted', '-')}"
        failed = ", ".join(o.checks_failed) or "all passed"
        print(
            f"{o.name:<16} {'ok' if o.success else 'FAILED':<8} {embedded:<16} {writes:<16} "
            f"{m.get('recall@5', '-')!s:<9} {failed}"
        )


def print_search(settings: Settings, question: str, collection: str, k: int, mode: str | None = None) -> int:
    from ai_pipeline.defs.resources import EMBEDDER, VECTOR_STORE
    from ai_pipeline.lib.rag import retrieval

    names = [source.name for source in settings.doc_sources]
    if collection not in names:
        print(f"error: no document collection {collection!r}; configured: {', '.join(names)}", file=sys.stderr)
        return 2
    store, embedder = _resource(settings, VECTOR_STORE), _resource(settings, EMBEDDER)
    config = store.search_config(mode)
    question_vector = None if config.mode == retrieval.LEXICAL else embedder.embed_query(question)
    chunks = store.collection(collection, embedder.backend)
    hits = retrieval.search(chunks, store.lexical(collection), question, question_vector, k=k, config=config)
    print(f"{question}  ({collection}, top {k}, {config.mode} search)")
    for hit in hits:
        text = " ".join(hit.document.split())
        print(f"\n{hit.rank}. score {hit.score:.3f}  {hit.metadata['doc_id']}  [{hit.metadata['heading_path']}]")
        print(f"   {text[:300]}{'...' if len(text) > 300 else ''}")
    if not hits:
        print(f"No vectors in collection {collection}: build it first (ai-pipeline collections)", file=sys.stderr)
    return 0 if hits else 1


def print_summary(settings: Settings, outcomes: list[DayOutcome]) -> None:
    """The days run, by lane: rows and checks of the events lane's days, the training-data lane's counts, what
    failed in either, and where everything lives."""
    from ai_pipeline.defs.keys import DAILY_JOB, TRAINING_JOB
    from ai_pipeline.defs.resources import ONLINE_STORE, VECTOR_STORE, WAREHOUSE, location

    events = [o for o in outcomes if o.job == DAILY_JOB]
    if events:
        print(
            f"\n{'partition':<12} {'run':<8} {'events in/valid/quar.':<24} {'users in/valid/quar.':<22} "
            f"{'features':<9} checks"
        )
    for o in events:
        cells = []
        for entity in ("events", "users"):
            r = o.rows.get(entity)
            cells.append(f"{r['in']}/{r['valid']}/{r['quarantined']}" if r else "-")
        status = "ok" if o.success else "FAILED"
        checks = f"{o.checks_passed} passed, {len(o.checks_failed)} failed"
        features = "-" if o.feature_rows is None else str(o.feature_rows)
        print(f"{o.day:<12} {status:<8} {cells[0]:<24} {cells[1]:<22} {features:<9} {checks}")
    if any(o.job == TRAINING_JOB for o in outcomes):
        print_llm_summary(settings)
    steps = list(dict.fromkeys(f"{o.job}: {step}" for o in outcomes for step in o.steps_failed))
    if steps:
        print("\nFailed steps:")
        for step in steps:
            print(f"  - {step}")
    failed = [(o.day, name) for o in outcomes for name in o.checks_failed]
    if failed:
        print("\nFailed checks (the asset's Checks tab in the UI holds the metadata that explains them):")
        for day, name in failed:
            print(f"  - {day} {name}")
    print(
        f"\nData root:      {settings.home}"
        f"\nLanding zone:   {settings.landing}"
        f"\nWarehouse:      {location(_resource(settings, WAREHOUSE))}: raw_*, validated_*, quarantined_*, dbt marts, "
        "user_daily_aggregates, user_window_features = the offline feature store)"
        f"\nOnline store:   {_resource(settings, ONLINE_STORE).backend} (look up a user: ai-pipeline features USER_ID)"
        f"\nVector store:   {_resource(settings, VECTOR_STORE).location} (ask: ai-pipeline search QUESTION "
        "--collection project_docs)"
        f"\nDagster home:   {os.environ.get('DAGSTER_HOME')}"
        "\nOpen the UI:    make ui   (then http://127.0.0.1:3000; the runs above are under Runs)"
    )


def generate_chat(settings: Settings, start: date, end: date, seed: int, dirty_rate: float) -> None:
    """The training-data lane's sample: conversation trees, transcript pairs, and ratings in the feedback store."""
    from ai_pipeline.defs.resources import FEEDBACK
    from ai_pipeline.lib.llm.decontam import eval_texts
    from ai_pipeline.lib.llm.sample import generate

    golden = [text for _, path in settings.evaluation_sets for text in eval_texts(path)]
    days = generate(
        settings.landing,
        start,
        end,
        feedback_store=_resource(settings, FEEDBACK).store(),
        seed=seed,
        dirty_rate=dirty_rate,
        contaminate_with=golden,
    )
    print(
        f"Generated {sum(d.trees for d in days)} conversation trees ({sum(d.messages for d in days)} messages), "
        f"{sum(d.pairs for d in days)} transcript pairs and {sum(d.ratings for d in days)} ratings"
    )


def print_llm_summary(settings: Settings) -> None:
    """What the training-data lane made of the days run: counts, rejects by rule, the releases."""
    from ai_pipeline.defs import keys
    from ai_pipeline.defs.resources import WAREHOUSE, reading
    from ai_pipeline.lib.llm.release import releases

    def count(conn, table: str, by: str | None = None):
        exists = conn.execute(
            "select count(*) from information_schema.tables where table_schema = 'main' and table_name = ?", [table]
        ).fetchone()[0]
        if not exists:
            return (0, []) if by else 0
        if by is None:
            return conn.execute(f"select count(*) from main.{table}").fetchone()[0]
        rows = conn.execute(f"select {by}, count(*) from main.{table} group by 1 order by 2 desc, 1").fetchall()
        return sum(n for _, n in rows), rows

    def listed(rows) -> str:
        return ", ".join(f"{name} {n}" for name, n in rows) or "none"

    with reading(_resource(settings, WAREHOUSE)) as conn:
        valid, quarantined = (count(conn, t) for t in keys.ENTITY_TABLES["chat_messages"])
        threads, (_, thread_rejects) = count(conn, keys.CONVERSATIONS), count(conn, keys.CONVERSATION_REJECTS, "rule")
        sft, (_, sft_rejects) = count(conn, keys.SFT_DATASET), count(conn, keys.SFT_REJECTS, "rule")
        pairs, origins = count(conn, keys.PREFERENCE_PAIRS, "origin")
        _, pair_rejects = count(conn, keys.PREFERENCE_REJECTS, "rule")
        ratings = count(conn, keys.VALIDATED_FEEDBACK)
    print(
        f"\nTraining data (group {keys.LLM_GROUP}):"
        f"\n  messages       {valid} valid, {quarantined} quarantined; {ratings} ratings valid"
        f"\n  threads        {threads} (rejected: {listed(thread_rejects)})"
        f"\n  SFT examples   {sft} (rejected: {listed(sft_rejects)})"
        f"\n  pairs          {pairs}: {listed(origins)} (rejected: {listed(pair_rejects)})"
    )
    latest = {m["dataset"]: m for m in releases(settings.releases)}
    for dataset, manifest in sorted(latest.items()):
        print(f"  release        {dataset} {manifest['release_id']}: {manifest['rows']} rows, {manifest['path']}")
    if not latest:
        print("  release        none published (the release rules failed: see the llm_releases checks)")


def print_features(settings: Settings, user_ids: list[str]) -> int:
    from ai_pipeline.defs.resources import ONLINE_STORE

    store = _resource(settings, ONLINE_STORE).client()
    found = store.lookup(user_ids)
    print(f"Online store: {store.name}, feature date {store.feature_date()}")
    for row in found.iter_rows(named=True):
        if row[FEATURE_DATE] is not None:
            print(f"\n{row.pop(USER)}")
            for name, value in row.items():
                print(f"  {name:<34} {value}")
    missing = found.filter(found[FEATURE_DATE].is_null())[USER].to_list()
    if missing:
        print(f"No features for {', '.join(missing)} (unknown, or inactive for {HORIZON} days)", file=sys.stderr)
    return 1 if len(missing) == len(user_ids) else 0


def write_training_set(settings: Settings, entities: Path, output: Path, ttl: timedelta) -> int:
    import duckdb

    from ai_pipeline.defs.resources import WAREHOUSE, reading

    try:
        frame = read_entities(entities)
    except EntityError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    warehouse = _resource(settings, WAREHOUSE)
    try:
        with reading(warehouse) as conn:
            result = training_set(conn, frame, ttl=ttl)
    except duckdb.IOException as error:
        # DuckDB lets no other process open the file while a writer (a pipeline run) holds it.
        print(
            f"error: cannot read the warehouse {warehouse.database} now, a run may be writing it: {error}",
            file=sys.stderr,
        )
        return 3
    output.parent.mkdir(parents=True, exist_ok=True)
    result.write_parquet(output)
    matched = result[FEATURE_DATE].is_not_null().sum()
    print(f"Wrote {result.height} rows ({matched} with features, ttl {ttl}) to {output}")
    return 0


def serve_metrics(settings: Settings, host: str, port: int) -> int:
    """`ai-pipeline metrics`: the exporter in the foreground until Ctrl-C or SIGTERM (then a clean stop)."""
    from ai_pipeline.monitoring import serve
    from ai_pipeline.ui import interrupt_on_stop_signals

    interrupt_on_stop_signals()
    try:
        server, thread = serve(_use_instance(settings), host, port)
        print(f"Serving Prometheus metrics on http://{host}:{server.server_port}/metrics", flush=True)
        try:
            thread.join()
        finally:
            server.shutdown()
    except KeyboardInterrupt:
        print("Stopped the metrics exporter.", flush=True)
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def print_releases(settings: Settings, dataset: str | None) -> int:
    """The training-set releases under the data root, oldest first."""
    from ai_pipeline.lib.llm.release import releases

    found = releases(settings.releases, dataset)
    if not found:
        print(f"No releases under {settings.releases}" + (f" for {dataset}" if dataset else ""))
        return 0
    print(f"{'dataset':<18} {'release':<17} {'rows':>8}  {'days':<25} created")
    for manifest in found:
        days = manifest["partitions"]
        span = f"{days['first']}..{days['last']}" if days["count"] else "-"
        print(
            f"{manifest['dataset']:<18} {manifest['release_id']:<17} {manifest['rows']:>8}  {span:<25} "
            f"{manifest['created_at']}"
        )
    return 0


def export_release(settings: Settings, dataset: str, release_id: str, destination: Path, fmt: str) -> int:
    """Copies one release's files (its data in `fmt`, with the manifest and the card) to `destination`."""
    import shutil

    folder = settings.releases / dataset / release_id
    if not (folder / "manifest.json").is_file():
        print(f"No release {release_id} of {dataset} under {settings.releases} (`ai-pipeline releases` lists them)")
        return 2
    names = {"parquet": ["data.parquet"], "jsonl": ["data.jsonl"], "all": ["data.parquet", "data.jsonl"]}[fmt]
    destination.mkdir(parents=True, exist_ok=True)
    for name in [*names, "manifest.json", "README.md"]:
        shutil.copyfile(folder / name, destination / name)
        print(destination / name)
    return 0


def serve_feedback(settings: Settings, host: str, port: int) -> int:
    """The feedback service over the configured store, until Ctrl-C or SIGTERM."""
    from ai_pipeline.defs.resources import FEEDBACK
    from ai_pipeline.lib.llm.feedback import server
    from ai_pipeline.ui import interrupt_on_stop_signals

    interrupt_on_stop_signals()
    store = _resource(settings, FEEDBACK)
    service = server(store.store(), host, port)
    url = f"http://{host}:{service.server_port}/feedback"
    print(f"Feedback service on {url}, storing into {store.location}", flush=True)
    try:
        service.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        service.server_close()
    return 0


def start_worker(settings: Settings, name: str, concurrency: int) -> int:
    """A Celery worker of the fleet (`AI_PIPELINE_EXECUTOR=celery`): it runs the steps of the runs that reach its
    broker, against the PostgreSQL instance and the data root of its environment. This process becomes the worker
    (Ctrl-C or SIGTERM stops it; a step it was running goes back to the queue)."""
    from ai_pipeline.defs.execution import CELERY_SETTINGS, celery_broker

    if instance_kind() != "postgres":
        print("error: a worker needs the instance every worker reaches: AI_PIPELINE_INSTANCE=postgres", file=sys.stderr)
        return 2
    if not name.replace("-", "").replace("_", "").isalnum():
        print(f"error: worker name {name!r}: letters, digits, '-' and '_' only", file=sys.stderr)
        return 2
    broker, backend = celery_broker()
    # Celery reads its settings from the module `dagster_celery_config` when the worker imports its app.
    config = settings.home / "celery" / name
    config.mkdir(parents=True, exist_ok=True)
    lines = [f"broker_url = {broker!r}", f"result_backend = {backend!r}"]
    lines += [f"{key} = {value!r}" for key, value in CELERY_SETTINGS.items()]
    (config / "dagster_celery_config.py").write_text("\n".join(lines) + "\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(prepare_instance_home(settings, "postgres")),
        "PYTHONPATH": os.pathsep.join(p for p in (str(config), os.environ.get("PYTHONPATH", "")) if p),
    }
    celery = str(Path(sys.executable).parent / "celery")
    print(f"Worker {name}: steps from {broker.split('@')[-1]}, {concurrency} at a time", flush=True)
    args = ["-A", "dagster_celery.app", "worker", "-Q", "dagster", "-n", f"{name}@%h", "--loglevel", "INFO"]
    os.execve(celery, [celery, *args, "--concurrency", str(concurrency)], env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ai-pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write a realistic sample into the landing zone")
    run = sub.add_parser("run", help="materialize every daily asset for a date range through Dagster")
    demo = sub.add_parser("demo", help="generate a sample for the last days, run the pipeline, print a summary")
    for p in (gen, run):
        p.add_argument("--start", type=date.fromisoformat, required=True)
        p.add_argument("--end", type=date.fromisoformat, required=True)
    run.add_argument(
        "--job",
        action="append",
        help="one lane's daily job, daily_pipeline or training_data (repeatable); default: both, in that order",
    )
    for p in (gen, demo):
        p.add_argument("--events-per-day", type=int, default=2000)
        p.add_argument("--users", type=int, default=500)
        p.add_argument("--seed", type=int, default=42)
        p.add_argument("--dirty-rate", type=float, default=0.02)
    demo.add_argument("--days", type=int, default=DEFAULT_DAYS, help="days ending yesterday (UTC)")
    history = sub.add_parser(
        "import-history",
        help="load a bulk export (any number of days in one file) into a landing source, every row on its day",
    )
    history.add_argument("source", help="the landing source's name, e.g. online_retail_events")
    history.add_argument("files", nargs="+", type=Path)
    sub.add_parser("dagster-home", help="print the DAGSTER_HOME of the configured instance")
    sub.add_parser("collections", help="build every configured document collection through Dagster")
    search = sub.add_parser("search", help="ask a document collection; prints ranked chunks")
    search.add_argument("question")
    search.add_argument("--collection", default="project_docs")
    search.add_argument("--k", type=_positive, default=5, help="how many chunks to print (1 or more)")
    search.add_argument(
        "--mode",
        choices=MODES,
        help="dense (vectors), lexical (BM25) or hybrid (both, fused); default AI_PIPELINE_SEARCH_MODE or hybrid",
    )
    lookup = sub.add_parser("features", help="print users' features from the online store")
    lookup.add_argument("user_ids", nargs="+")
    training = sub.add_parser(
        "training-set", help="point-in-time features for an entity file (CSV/Parquet: user_id, event_timestamp)"
    )
    training.add_argument("entities", type=Path)
    training.add_argument("output", type=Path, help="Parquet file to write")
    training.add_argument("--ttl-days", type=float, default=DEFAULT_TTL.total_seconds() / 86400)
    exporter = sub.add_parser("metrics", help="serve Prometheus metrics read from the instance's event log")
    exporter.add_argument("--host", default="127.0.0.1")
    exporter.add_argument("--port", type=int, default=9108, help="0 picks a free port")
    listed = sub.add_parser("releases", help="list the training-set releases (SFT, preference pairs, KTO)")
    listed.add_argument("--dataset", help="only this dataset, e.g. sft_dataset")
    export = sub.add_parser("export-release", help="copy one release's files (data, manifest, card) to a folder")
    export.add_argument("dataset")
    export.add_argument("release_id")
    export.add_argument("destination", type=Path)
    export.add_argument("--format", choices=["parquet", "jsonl", "all"], default="all")
    service = sub.add_parser(
        "feedback-server", help="serve POST /feedback: ratings validated and stored (Ctrl-C stops)"
    )
    service.add_argument("--host", default="127.0.0.1")
    service.add_argument("--port", type=int, default=8087, help="0 picks a free port")
    worker = sub.add_parser(
        "worker", help="a Celery worker that runs steps of AI_PIPELINE_EXECUTOR=celery runs (Ctrl-C stops)"
    )
    worker.add_argument("--name", default=socket.gethostname().split(".")[0], help="unique in the fleet")
    worker.add_argument("--concurrency", type=int, default=1, help="steps at a time")
    ui = sub.add_parser("ui", help="run the Dagster webserver and daemon over the configured instance (Ctrl-C stops)")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)

    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if args.command == "dagster-home":
        print(prepare_instance_home(settings, instance_kind()))
        return 0
    if args.command == "import-history":
        return import_history(settings, args.source, args.files)
    if args.command == "search":
        return print_search(settings, args.question, args.collection, args.k, args.mode)
    if args.command == "collections":
        outcomes = build_collections(settings)
        print_collections(outcomes)
        return 0 if all(o.success for o in outcomes) else 1
    if args.command == "features":
        return print_features(settings, args.user_ids)
    if args.command == "training-set":
        return write_training_set(settings, args.entities, args.output, timedelta(days=args.ttl_days))
    if args.command == "releases":
        return print_releases(settings, args.dataset)
    if args.command == "export-release":
        return export_release(settings, args.dataset, args.release_id, args.destination, args.format)
    if args.command == "feedback-server":
        return serve_feedback(settings, args.host, args.port)
    if args.command == "metrics":
        return serve_metrics(settings, args.host, args.port)
    if args.command == "worker":
        return start_worker(settings, args.name, args.concurrency)
    if args.command == "ui":
        from ai_pipeline.ui import serve

        return serve(args.host, args.port)
    if args.command == "demo":
        args.start, args.end = _default_range(args.days)
        # The demo's history starts with its first day, so its feature windows are partial, not missing.
        settings = replace(settings, start_date=args.start)
    if args.command in ("generate", "demo"):
        from ai_pipeline.lib.ingest.sample import generate

        days = generate(
            settings.landing,
            args.start,
            args.end,
            events_per_day=args.events_per_day,
            users=args.users,
            seed=args.seed,
            dirty_rate=args.dirty_rate,
        )
        print(
            f"Generated {sum(d.event_rows for d in days)} events and {sum(d.user_rows for d in days)} user "
            f"records for {args.start}..{args.end} under {settings.landing}"
        )
        generate_chat(settings, args.start, args.end, args.seed, args.dirty_rate)
    if args.command in ("run", "demo"):
        from ai_pipeline.defs.keys import DAILY_JOB, TRAINING_JOB

        jobs = getattr(args, "job", None) or [DAILY_JOB, TRAINING_JOB]
        unknown = sorted(set(jobs) - {DAILY_JOB, TRAINING_JOB})
        if unknown:
            parser.error(f"--job {unknown[0]}: expected {DAILY_JOB} or {TRAINING_JOB}")
        outcomes = [o for job in jobs for o in run_days(settings, args.start, args.end, job)]
        collections = build_collections(settings) if args.command == "demo" else []
        print_summary(settings, outcomes)
        if collections:
            print_collections(collections)
            print()
            print_search(settings, DEMO_QUESTION, "project_docs", 3)
        return 0 if all(o.success for o in [*outcomes, *collections]) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
