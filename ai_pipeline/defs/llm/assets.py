"""Chat logs and transcript pairs -> conversations -> SFT examples and preference pairs, day by day.

Assets (group `llm_data`): `conversations` + `conversation_rejects`, `sft_dataset` + `sft_rejects`,
`preference_pairs` + `preference_kto` + `preference_rejects`. The work is done by `ai_pipeline.lib.llm`
(`threads`, `datasets`, `gates`); these shells read the day from the warehouse, call it, and report counts and
checks. Every output carries `partition_date`; what a rule or a gate drops goes to the step's rejects table with the
rule and the reason, and a blocking check says the counts add up. The datasets pass the gates (personal data,
evaluation overlap, duplicates) before they are written, and checks verify what was written.
"""

from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from ai_pipeline.defs.execution import heavy_step
from ai_pipeline.defs.keys import (
    CONVERSATION_REJECTS,
    CONVERSATIONS,
    DECONTAMINATION_CHECK,
    DUCKDB_POOL,
    DUPLICATE_RATE_CHECK,
    EMPTY_MESSAGES_CHECK,
    LLM_GROUP,
    LLM_RELEASES,
    PAIRS_ACCOUNTED_CHECK,
    PAIRS_VALID_CHECK,
    PII_CHECK,
    PREFERENCE_KTO,
    PREFERENCE_PAIRS,
    PREFERENCE_REJECTS,
    RELEASE_CHECKS,
    SFT_ACCOUNTED_CHECK,
    SFT_DATASET,
    SFT_REJECTS,
    THREADED_CHECK,
    VALIDATED_CHAT_MESSAGES,
    VALIDATED_FEEDBACK,
    VALIDATED_TRANSCRIPT_PAIRS,
)
from ai_pipeline.defs.policy import DAILY_BACKFILL, OWNERS, daily_asset, partition_days
from ai_pipeline.defs.reporting import DayChecks
from ai_pipeline.defs.resources import query, table_exists
from ai_pipeline.lib.ingest.validation import compile_contract
from ai_pipeline.lib.llm import datasets, decontam, dedup, gates, pii, release, threads
from ai_pipeline.lib.llm.contracts import ChatMessage
from ai_pipeline.lib.llm.decontam import EvalIndex, build_index
from ai_pipeline.lib.llm.dedup import normalized
from ai_pipeline.lib.quality import Verdict
from ai_pipeline.settings import Settings

PARTITION = "partition_date"
_DAY_CONVERSATIONS = f"""
select * from main.{VALIDATED_CHAT_MESSAGES}
where partition_date <= ? and conversation_id in (
    select conversation_id from main.{VALIDATED_CHAT_MESSAGES} where partition_date = ? {{extra}}
)
"""


def _out(description: str) -> dg.AssetOut:
    return dg.AssetOut(
        description=description,
        group_name=LLM_GROUP,
        kinds={"python", "polars", "duckdb"},
        owners=OWNERS,
        metadata={"partition_expr": PARTITION},
    )


def _check(asset: str, name: str, description: str, partitions: dg.PartitionsDefinition) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name, asset=asset, partitions_def=partitions, description=description, blocking=True)


def _dated(frame: pl.DataFrame, day: date) -> pl.DataFrame:
    return frame.with_columns(pl.lit(day).alias(PARTITION))


def _messages(warehouse: DuckDBResource, day: date, extra: str = "") -> pl.DataFrame:
    """The valid messages (written up to `day`) of the conversations with a message written on `day`."""
    if not table_exists(warehouse, VALIDATED_CHAT_MESSAGES):
        return pl.DataFrame(schema={**compile_contract(ChatMessage).typed_schema, PARTITION: pl.Date})
    return query(warehouse, _DAY_CONVERSATIONS.format(extra=extra), [day, day])


def _accounted(inputs: int, kept: int, rejected: int, what: str, kept_as: str) -> Verdict:
    return Verdict(inputs == kept + rejected, "ERROR", f"{inputs} {what} = {kept} {kept_as} + {rejected} rejected")


def _rejects(frame: pl.DataFrame, name: str) -> dg.Output:
    """A step's rejects table, counted by rule."""
    by_rule = dict(Counter(frame["rule"]))
    return dg.Output(
        frame, output_name=name, metadata={"dagster/row_count": frame.height, "by_rule": dg.MetadataValue.json(by_rule)}
    )


def _day_results(context: dg.AssetExecutionContext, asset: str, checks: list[tuple]) -> Iterator:
    """(day, check, verdict, metadata) -> each check's result for its day."""
    per_day = DayChecks(context)
    for day, check, verdict, metadata in checks:
        yield from per_day.results(day, verdict, metadata, asset_key=asset, check_name=check)


def conversations_asset(partitions: dg.DailyPartitionsDefinition) -> dg.AssetsDefinition:
    @dg.multi_asset(
        name=f"{CONVERSATIONS}_op",
        outs={
            CONVERSATIONS: _out(
                "Threads: each path from a conversation's first message to a message without replies, as the tree "
                "stood at the end of the day its last message was written (partition = that day), with the ids, "
                "roles, texts, ranks and labels along it."
            ),
            CONVERSATION_REJECTS: _out(
                "The day's messages that are in no thread, with the rule and the reason: an orphan (its parent is not "
                "a valid message), roles that do not alternate, or below such a message."
            ),
        },
        deps=[VALIDATED_CHAT_MESSAGES],
        partitions_def=partitions,
        check_specs=[
            _check(
                CONVERSATIONS,
                THREADED_CHECK,
                "Every valid message of the day is in a thread of the day or rejected with its reason, never both.",
                partitions,
            )
        ],
        pool=DUCKDB_POOL,
        backfill_policy=DAILY_BACKFILL,
        can_subset=True,
    )
    def conversations(context: dg.AssetExecutionContext, warehouse: DuckDBResource):
        kept, rejected, checks = [], [], []
        for day in partition_days(context):
            messages = _messages(warehouse, day)
            built = threads.threads_for_day(messages, day)
            todays = set(messages.filter(pl.col(PARTITION) == day)["message_id"]) if messages.height else set()
            threaded = set(built.threads["message_ids"].explode().to_list()) & todays if built.threads.height else set()
            dropped = set(built.rejected["message_id"])
            verdict = Verdict(
                todays == threaded | dropped and not threaded & dropped,
                "ERROR",
                f"{len(todays)} messages of the day: {len(threaded)} in {built.threads.height} threads, "
                f"{len(dropped)} rejected",
            )
            checks.append((day, THREADED_CHECK, verdict, {"messages": len(todays), "threads": built.threads.height}))
            kept.append(_dated(built.threads, day))
            rejected.append(_dated(built.rejected, day))
        kept, rejected = pl.concat(kept), pl.concat(rejected)
        yield dg.Output(
            kept,
            output_name=CONVERSATIONS,
            metadata={
                "dagster/row_count": kept.height,
                "distinct_conversations": kept["conversation_id"].n_unique(),
                "turns_mean": round(kept["turns"].mean() or 0.0, 2),
                "languages": dg.MetadataValue.json(dict(Counter(kept["lang"]).most_common())),
            },
        )
        yield _rejects(rejected, CONVERSATION_REJECTS)
        yield from _day_results(context, CONVERSATIONS, checks)

    return conversations


DUPLICATE_RATE_LIMIT = 0.05
RELEASE_RULES = {
    "rows": "at least one row: an empty dataset fails (a lane with no input yet only warns)",
    "reply_length": f"5th percentile of reply length at least {release.MIN_P5_WORDS} words",
    "empty_replies": "no empty reply",
    "label_balance": f"labels within {release.MAX_IMBALANCE:g}x of each other, where there are labels",
}
GATE_CHECKS = {
    PII_CHECK: "No personal data (e-mail, phone, IP, card, IBAN, US SSN) is left in the rows written: `pii_mode: "
    "scrub` replaces it with a placeholder, `drop` drops the row; what was found, by kind, in the metadata.",
    DECONTAMINATION_CHECK: "No row written shares a 13-word sequence (a shorter item whole) with an evaluation set: "
    "the golden question sets and AI_PIPELINE_EVAL_SETS.",
    DUPLICATE_RATE_CHECK: "Exact and near-duplicate (MinHash, Jaccard >= 0.8) prompts and replies are dropped; WARN "
    f"when more than {DUPLICATE_RATE_LIMIT:.0%} of the day's rows that reached deduplication were duplicates.",
    EMPTY_MESSAGES_CHECK: "No turn of any row written is empty or blank.",
}


class GatesConfig(dg.Config):
    """The gates' settings (`lib.llm.gates.GateConfig`)."""

    pii_mode: str = gates.GateConfig.pii
    near_duplicate_threshold: float = gates.GateConfig.near_duplicate_threshold

    def gates(self) -> gates.GateConfig:
        return gates.GateConfig(pii=self.pii_mode, near_duplicate_threshold=self.near_duplicate_threshold)


def _gate_specs(asset: str, partitions: dg.PartitionsDefinition) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            name, asset=asset, partitions_def=partitions, description=text, blocking=name != DUPLICATE_RATE_CHECK
        )
        for name, text in GATE_CHECKS.items()
    ]


def _gate_verdicts(gated: gates.Gated, evals: EvalIndex) -> list[tuple[str, Verdict, dict]]:
    """What the day's written rows hold, found again independently of the gates' own bookkeeping."""
    columns = [c for c, dtype in gated.kept.schema.items() if isinstance(dtype, pl.List) and dtype.inner == pl.Struct]
    rows = [[turn["content"] for c in columns for turn in row[c]] for row in gated.kept.iter_rows(named=True)]
    left = Counter(f.kind for texts in rows for text in texts for f in pii.find(text))
    overlapping = sum(1 for texts in rows if evals.match("\n".join(texts)))
    empty = sum(1 for texts in rows for text in texts if not text.strip())
    duplicates = sum(gated.duplicates.values())
    reached = gated.kept.height + duplicates
    rate = duplicates / reached if reached else 0.0
    found = {"found_" + kind: n for kind, n in sorted(gated.pii_found.items())}
    return [
        (
            PII_CHECK,
            Verdict(not left, "ERROR", f"personal data left: {dict(left)}" if left else "no personal data left"),
            {"rows": gated.kept.height, **found, "left": sum(left.values())},
        ),
        (
            DECONTAMINATION_CHECK,
            Verdict(not overlapping, "ERROR", f"{overlapping} rows overlap an evaluation set"),
            {"overlapping_rows": overlapping, "evaluation_items": evals.items},
        ),
        (
            DUPLICATE_RATE_CHECK,
            Verdict(
                rate <= DUPLICATE_RATE_LIMIT,
                "WARN",
                f"{duplicates} of {reached} rows were duplicates ({rate:.1%}; limit {DUPLICATE_RATE_LIMIT:.0%})",
            ),
            {"duplicate_rate": round(rate, 4), **{f"duplicates_{k}": n for k, n in gated.duplicates.items()}},
        ),
        (EMPTY_MESSAGES_CHECK, Verdict(not empty, "ERROR", f"{empty} empty turns"), {"empty_turns": empty}),
    ]


def _earlier(warehouse: DuckDBResource, table: str, day: date, schema: dict) -> pl.DataFrame:
    """The dataset's rows of the days before `day` (what a day's rows must not repeat)."""
    if not table_exists(warehouse, table):
        return pl.DataFrame(schema={**schema, PARTITION: pl.Date})
    return query(warehouse, f"select * from main.{table} where {PARTITION} < ?", [day])


class SftConfig(GatesConfig):
    """The SFT set's filters (`lib.llm.datasets.SftRecipe`) and gates, settable per run from the launchpad."""

    min_prompt_words: int = datasets.SftRecipe.min_prompt_words
    min_response_words: int = datasets.SftRecipe.min_response_words
    max_rank: int | None = datasets.SftRecipe.max_rank
    min_quality: float | None = datasets.SftRecipe.min_quality
    max_spam: float = datasets.SftRecipe.max_spam
    languages: list[str] | None = None
    excluded_states: list[str] = list(datasets.SftRecipe.excluded_states)
    excluded_patterns: list[str] = list(datasets.SftRecipe.excluded_patterns)

    def recipe(self) -> datasets.SftRecipe:
        return datasets.SftRecipe(
            min_prompt_words=self.min_prompt_words,
            min_response_words=self.min_response_words,
            max_rank=self.max_rank,
            min_quality=self.min_quality,
            max_spam=self.max_spam,
            languages=tuple(self.languages) if self.languages is not None else None,
            excluded_states=tuple(self.excluded_states),
            excluded_patterns=tuple(self.excluded_patterns),
        )


def sft_asset(settings: Settings, partitions: dg.DailyPartitionsDefinition) -> dg.AssetsDefinition:
    @dg.multi_asset(
        name=f"{SFT_DATASET}_op",
        outs={
            SFT_DATASET: _out(
                "Supervised fine-tuning examples in TRL's conversational format (`messages`: [{role, content}], "
                "roles user/assistant), one per thread that passes the recipe's filters (SftConfig) and the gates "
                "(personal data scrubbed, no evaluation overlap, no duplicate prompt or reply)."
            ),
            SFT_REJECTS: _out("The day's threads the recipe or a gate dropped, with the rule and the reason."),
        },
        deps=[CONVERSATIONS],
        partitions_def=partitions,
        check_specs=[
            _check(SFT_DATASET, SFT_ACCOUNTED_CHECK, "Threads of the day = examples + rejected threads.", partitions),
            *_gate_specs(SFT_DATASET, partitions),
        ],
        pool=DUCKDB_POOL,
        op_tags=heavy_step("training_gates"),
        backfill_policy=DAILY_BACKFILL,
        can_subset=True,
    )
    def sft_dataset(context: dg.AssetExecutionContext, config: SftConfig, warehouse: DuckDBResource):
        recipe, gate_config, evals = config.recipe(), config.gates(), build_index(settings.evaluation_sets)
        days = partition_days(context)
        gate = gates.Gates(
            gates.SFT, evals, gate_config, _earlier(warehouse, SFT_DATASET, days[0], datasets.SFT_COLUMNS)
        )
        kept, rejected, checks = [], [], []
        for day in days:
            day_threads = (
                query(warehouse, f"select * from main.{CONVERSATIONS} where {PARTITION} = ?", [day])
                if table_exists(warehouse, CONVERSATIONS)
                else pl.DataFrame(schema=threads.THREAD_COLUMNS)
            )
            built = datasets.sft_examples(day_threads, recipe)
            gated = gate.apply(built.kept)
            dropped = pl.concat([built.rejected, gated.rejected])
            verdict = _accounted(day_threads.height, gated.kept.height, dropped.height, "threads", "examples")
            checks.append((day, SFT_ACCOUNTED_CHECK, verdict, {"threads": day_threads.height}))
            checks += [(day, *result) for result in _gate_verdicts(gated, evals)]
            kept.append(_dated(gated.kept, day))
            rejected.append(_dated(dropped, day))
        kept, rejected = pl.concat(kept), pl.concat(rejected)
        yield dg.Output(
            kept,
            output_name=SFT_DATASET,
            metadata={
                "dagster/row_count": kept.height,
                "turns_mean": round(kept["turns"].mean() or 0.0, 2),
                "languages": dg.MetadataValue.json(dict(Counter(kept["lang"]).most_common())),
                "recipe": dg.MetadataValue.json(config.model_dump()),
            },
        )
        yield _rejects(rejected, SFT_REJECTS)
        yield from _day_results(context, SFT_DATASET, checks)

    return sft_dataset


def _well_formed(pairs: pl.DataFrame) -> Verdict:
    problems = []
    for pair in pairs.iter_rows(named=True):
        if not pair["prompt"] or pair["prompt"][-1]["role"] != "user":
            problems.append(f"{pair['pair_id']}: the prompt does not end with a user turn")
        elif normalized(pair["chosen"][-1]["content"]) == normalized(pair["rejected"][-1]["content"]):
            problems.append(f"{pair['pair_id']}: chosen = rejected")
    if pairs["pair_id"].n_unique() != pairs.height:
        problems.append("a pair id occurs twice")
    return Verdict(
        not problems,
        "ERROR",
        "; ".join(problems[:5]) if problems else f"{pairs.height} pairs: a user prompt, chosen != rejected, unique ids",
    )


class PairsConfig(GatesConfig):
    """The preference pairs' gates, settable per run from the launchpad."""


def _rated(warehouse: DuckDBResource, day: date) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The valid messages and feedback (up to `day`) of the conversations rated on `day`."""
    if not table_exists(warehouse, VALIDATED_FEEDBACK) or not table_exists(warehouse, VALIDATED_CHAT_MESSAGES):
        return pl.DataFrame(), pl.DataFrame()
    rated_today = f"select conversation_id from main.{VALIDATED_FEEDBACK} where {PARTITION} = ?"
    messages = query(
        warehouse,
        f"select * from main.{VALIDATED_CHAT_MESSAGES} where {PARTITION} <= ? and conversation_id in ({rated_today})",
        [day, day],
    )
    ratings = query(
        warehouse,
        f"select * from main.{VALIDATED_FEEDBACK} where {PARTITION} <= ? and conversation_id in ({rated_today})",
        [day, day],
    )
    return messages, ratings


def preference_asset(settings: Settings, partitions: dg.DailyPartitionsDefinition) -> dg.AssetsDefinition:
    @dg.multi_asset(
        name=f"{PREFERENCE_PAIRS}_op",
        outs={
            PREFERENCE_PAIRS: _out(
                "Preference pairs in DPO's conversational format (`prompt`, `chosen`, `rejected`): the best- against "
                "the worst-ranked reply to the same message (partition: the day a ranked reply was written), the "
                "best- (>= 4) against the worst-rated (<= 2) reply by users' feedback (partition: the day of a "
                "rating), and each transcript pair's two last replies to their shared turns (its arrival day)."
            ),
            PREFERENCE_KTO: _out(
                "The same pairs unpaired, in KTO's form (`prompt`, `completion`, `label`): chosen True, rejected False."
            ),
            PREFERENCE_REJECTS: _out(
                "The day's candidates that gave no pair, with the rule and the reason (one ranked reply, tied ranks, "
                "identical replies, transcripts that differ before their last reply, ...)."
            ),
        },
        deps=[VALIDATED_CHAT_MESSAGES, VALIDATED_TRANSCRIPT_PAIRS, VALIDATED_FEEDBACK],
        partitions_def=partitions,
        check_specs=[
            _check(
                PREFERENCE_PAIRS,
                PAIRS_ACCOUNTED_CHECK,
                "Candidates of the day (prompts with a ranked reply written that day, transcript pairs) = pairs + "
                "rejected candidates.",
                partitions,
            ),
            _check(
                PREFERENCE_PAIRS,
                PAIRS_VALID_CHECK,
                "Every pair has a prompt ending with a user turn, a chosen reply that differs from the rejected one, "
                "and an id of its own.",
                partitions,
            ),
            *_gate_specs(PREFERENCE_PAIRS, partitions),
        ],
        pool=DUCKDB_POOL,
        op_tags=heavy_step("training_gates"),
        backfill_policy=DAILY_BACKFILL,
        can_subset=True,
    )
    def preference_pairs(context: dg.AssetExecutionContext, config: PairsConfig, warehouse: DuckDBResource):
        gate_config, evals = config.gates(), build_index(settings.evaluation_sets)
        days = partition_days(context)
        earlier = _earlier(warehouse, PREFERENCE_PAIRS, days[0], datasets.PAIR_COLUMNS)
        gate = gates.Gates(gates.PAIRS, evals, gate_config, earlier)
        kept, kto, rejected, checks = [], [], [], []
        for day in days:
            messages = _messages(warehouse, day, extra="and rank is not null and role = 'assistant'")
            ranked_today = messages.filter(
                (pl.col(PARTITION) == day) & pl.col("rank").is_not_null() & (pl.col("role") == "assistant")
            )
            prompts = ranked_today["parent_id"].unique().to_list() if ranked_today.height else []
            siblings = datasets.sibling_pairs(messages, prompts)
            transcripts = (
                query(
                    warehouse,
                    f"select chosen, rejected, _source_uri || ':' || _source_offset as item_id "
                    f"from main.{VALIDATED_TRANSCRIPT_PAIRS} where {PARTITION} = ?",
                    [day],
                )
                if table_exists(warehouse, VALIDATED_TRANSCRIPT_PAIRS)
                else pl.DataFrame(schema={"chosen": pl.String, "rejected": pl.String, "item_id": pl.String})
            )
            from_transcripts = datasets.transcript_pairs(transcripts)
            rated_messages, ratings = _rated(warehouse, day)
            rated_today = ratings.filter(pl.col(PARTITION) == day)["message_id"] if ratings.height else []
            rated_prompts = (
                rated_messages.filter(pl.col("message_id").is_in(list(rated_today)))["parent_id"].drop_nulls().unique()
                if rated_messages.height
                else pl.Series([], dtype=pl.String)
            ).to_list()
            from_ratings = datasets.rating_pairs(rated_messages, ratings, rated_prompts)
            gated = gate.apply(pl.concat([siblings.kept, from_transcripts.kept, from_ratings.kept]))
            pairs = gated.kept
            dropped = pl.concat(
                [
                    siblings.rejected.with_columns(origin=pl.lit("sibling_ranking")),
                    from_transcripts.rejected.with_columns(origin=pl.lit("transcript_pair")),
                    from_ratings.rejected.with_columns(origin=pl.lit("ratings")),
                    gated.rejected.with_columns(origin=pl.lit("gates")),
                ]
            )
            candidates = len(prompts) + transcripts.height + len(rated_prompts)
            accounted = _accounted(candidates, pairs.height, dropped.height, "candidates", "pairs")
            checks.append((day, PAIRS_ACCOUNTED_CHECK, accounted, {"candidates": candidates, "pairs": pairs.height}))
            checks.append((day, PAIRS_VALID_CHECK, _well_formed(pairs), {"pairs": pairs.height}))
            checks += [(day, *result) for result in _gate_verdicts(gated, evals)]
            kept.append(_dated(pairs, day))
            kto.append(_dated(datasets.kto_rows(pairs), day))
            rejected.append(_dated(dropped, day))
        kept, kto, rejected = pl.concat(kept), pl.concat(kto), pl.concat(rejected)
        yield dg.Output(
            kept,
            output_name=PREFERENCE_PAIRS,
            metadata={
                "dagster/row_count": kept.height,
                "by_origin": dg.MetadataValue.json(dict(Counter(kept["origin"]))),
                "gates": dg.MetadataValue.json(config.model_dump()),
            },
        )
        yield dg.Output(kto, output_name=PREFERENCE_KTO, metadata={"dagster/row_count": kto.height})
        yield _rejects(rejected, PREFERENCE_REJECTS)
        yield from _day_results(context, PREFERENCE_PAIRS, checks)

    return preference_pairs


# What each released dataset is, keyed by its asset: its id column, the replies a model is trained toward (what the
# release rules measure; a rejected reply is short or poor by nature: real HH-RLHF pairs reject "No." and "I don't
# know"), its labels, and its description.
RELEASED = {
    SFT_DATASET: (
        "example_id",
        lambda row: [row["messages"][-1]["content"]],
        None,
        "Supervised fine-tuning conversations (TRL's `messages` format), filtered and gated by ai_pipeline.",
    ),
    PREFERENCE_PAIRS: (
        "pair_id",
        lambda row: [row["chosen"][-1]["content"]],
        None,
        "Preference pairs (DPO's `prompt`/`chosen`/`rejected`) from sibling rankings and transcript pairs.",
    ),
    PREFERENCE_KTO: (
        "pair_id",
        lambda row: [row["completion"][-1]["content"]] if row["label"] else [],
        "label",
        "Unpaired preferences (KTO's `prompt`/`completion`/`label`).",
    ),
}


def code_version() -> str:
    """The package version, and the git commit when the code runs from a checkout."""
    import importlib.metadata
    import subprocess

    version = importlib.metadata.version("ai_pipeline")
    done = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True
    )
    return f"{version}+{done.stdout.strip()}" if done.returncode == 0 else version


def _upstream(context: dg.AssetExecutionContext, asset: str, days: list[str]) -> dict:
    """The runs that wrote the released partitions, and the distinct settings (recipe, gates) they ran with."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=days), limit=len(days) * 4
    ).records
    runs, settings_seen = {}, []
    for record in records:  # newest first
        if record.partition_key in runs:
            continue
        runs[record.partition_key] = record.run_id
        metadata = record.asset_materialization.metadata
        ran_with = {k: metadata[k].value for k in ("recipe", "gates") if k in metadata}
        if ran_with and ran_with not in settings_seen:
            settings_seen.append(ran_with)
    return {"runs_by_partition": dict(sorted(runs.items())), "settings": settings_seen}


# The fixed thresholds behind a release (the recipe and the gates' settings are in its upstream runs' metadata).
THRESHOLDS = {
    "near_duplicate_jaccard": dedup.THRESHOLD,
    "near_duplicate_shingle_characters": dedup.SHINGLE,
    "evaluation_overlap_words": decontam.NGRAM,
    "evaluation_item_min_words": decontam.MIN_WORDS,
    "duplicate_rate_limit": DUPLICATE_RATE_LIMIT,
    "release_reply_words_p5": release.MIN_P5_WORDS,
    "release_label_imbalance": release.MAX_IMBALANCE,
}
# Where each released dataset's dropped inputs are (a KTO row comes from a pair).
REJECTS = {SFT_DATASET: SFT_REJECTS, PREFERENCE_PAIRS: PREFERENCE_REJECTS, PREFERENCE_KTO: PREFERENCE_REJECTS}


def _rejected_up_to(warehouse: DuckDBResource, table: str, day: date) -> int:
    if not table_exists(warehouse, table):
        return 0
    return int(query(warehouse, f"select count(*) as n from main.{table} where {PARTITION} <= ?", [day])["n"][0])


def release_asset(settings: Settings, partitions: dg.DailyPartitionsDefinition) -> dg.AssetsDefinition:
    @daily_asset(
        LLM_RELEASES,
        description="Immutable, versioned releases of the training sets as of the end of the day (every partition up "
        f"to it): Parquet and JSON Lines, a manifest and a dataset card per dataset, under {settings.releases}. "
        "Named by content: the same rows give the same release, written once. Published only when the release rules "
        "pass.",
        group_name=LLM_GROUP,
        kinds={"python", "parquet"},
        partitions_def=partitions,
        deps=list(RELEASED),
        check_specs=[
            # Not blocking: nothing is downstream of a release, and a dataset that breaks a rule is not published;
            # the failed check (ERROR) says so and alerts, without failing the run of the rest of the graph.
            dg.AssetCheckSpec(
                check,
                asset=LLM_RELEASES,
                partitions_def=partitions,
                description=f"Release rule `{rule}` ({RELEASE_RULES[rule]}) holds for every dataset: a dataset that "
                "breaks it is not published.",
            )
            for rule, check in RELEASE_CHECKS.items()
        ],
        pool=DUCKDB_POOL,
    )
    def llm_releases(context: dg.AssetExecutionContext, warehouse: DuckDBResource):
        version = code_version()
        published, checks = {}, []
        for day in partition_days(context):
            outcomes: dict[str, list[tuple[str, Verdict, dict]]] = {}
            for asset, (id_column, replies, label, description) in RELEASED.items():
                frame = (
                    query(warehouse, f"select * from main.{asset} where {PARTITION} <= ?", [day])
                    if table_exists(warehouse, asset)
                    else pl.DataFrame(schema={PARTITION: pl.Date})
                )
                rows = list(frame.iter_rows(named=True))
                rules = release.qa(
                    frame,
                    [text for row in rows for text in replies(row)],
                    [r[label] for r in rows] if label else None,
                    inputs=frame.height + _rejected_up_to(warehouse, REJECTS[asset], day),
                )

                outcomes[asset] = rules
                if not all(verdict.passed for _, verdict, _ in rules):
                    published[asset] = None
                    continue
                days = sorted({d.isoformat() for d in frame[PARTITION].to_list()})
                made = release.write_release(
                    settings.releases,
                    asset,
                    frame,
                    id_column=id_column,
                    description=description,
                    extra={
                        "code_version": version,
                        "upstream": _upstream(context, asset, days),
                        "thresholds": THRESHOLDS,
                    },
                )
                published[asset] = made
            for rule, check in RELEASE_CHECKS.items():
                found = [(asset, v, m) for asset, rules in outcomes.items() for r, v, m in rules if r == rule]
                failed = [(asset, v) for asset, v, _ in found if not v.passed]
                # As severe as the worst failure: a lane with no input yet only warns.
                severity = "ERROR" if any(v.severity == "ERROR" for _, v in failed) else "WARN"
                said = failed or [(asset, v) for asset, v, _ in found]
                verdict = Verdict(not failed, severity, "; ".join(f"{a}: {v.description}" for a, v in said))
                metadata = {f"{asset}_{k}": value for asset, _, m in found for k, value in m.items()}
                checks.append((day, check, verdict, metadata))
        # The files are the release: nothing goes through the IO manager.
        yield dg.MaterializeResult(
            asset_key=LLM_RELEASES,
            metadata={
                "published": dg.MetadataValue.json({a: (r.release_id if r else None) for a, r in published.items()}),
                "new_releases": sum(1 for r in published.values() if r and r.created),
                **{f"{a}_rows": (r.rows if r else 0) for a, r in published.items()},
            },
        )
        yield from _day_results(context, LLM_RELEASES, checks)

    return llm_releases


def llm_assets(settings: Settings, partitions: dg.DailyPartitionsDefinition) -> list[dg.AssetsDefinition]:
    return [
        conversations_asset(partitions),
        sft_asset(settings, partitions),
        preference_asset(settings, partitions),
        release_asset(settings, partitions),
    ]
