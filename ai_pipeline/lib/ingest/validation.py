"""Vectorized contract validation: a Pydantic model compiled into Polars expressions.

`compile_contract` reads the model's own declarations (types, `Literal` choices, `StringConstraints`,
`ge`/`le`, the registered parsers and after-validators of `ai_pipeline.lib.ingest.contracts`) and builds, per
field, the ordered rules pydantic applies. Pydantic reports the first failing rule of each field; so does
this. A model using a validator this module does not know is refused at compile time rather than
validated differently.

Evaluation is staged for speed (`_check`): each parse runs once per row (a timestamp's regex groups are
extracted once and feed both its rules and its typed value), each rule reads the parsed columns, and the
lists of reasons are built only for the failing rows.

The row-by-row Pydantic path (`pydantic_decisions`) is kept as the reference: the property test and the
benchmark compare both on the same rows.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import annotated_types
import polars as pl
from pydantic import AfterValidator, BaseModel, BeforeValidator, StringConstraints, ValidationError
from pydantic.fields import FieldInfo

from ai_pipeline.lib.ingest import contracts
from ai_pipeline.lib.ingest.raw import LINEAGE_SCHEMA

REASON_DTYPE = pl.List(pl.Struct({"field": pl.String, "rule": pl.String, "message": pl.String, "value": pl.String}))
UTC_MICROS = pl.Datetime("us", "UTC")


@dataclass(frozen=True)
class Rule:
    name: str
    message: str
    fails: pl.Expr  # True where this rule fails, given that the earlier rules of the field passed


@dataclass(frozen=True)
class CompiledField:
    """One field's rules, evaluated in stages so that each parse runs once per row.

    `helpers` (named columns, e.g. a timestamp's regex groups) come first; then `typed`, which may read
    them, becomes the column `__<name>`; then `rules`, which may read both.
    """

    name: str
    rules: tuple[Rule, ...]
    typed: pl.Expr  # the parsed value, valid where no rule fails
    dtype: pl.DataType
    helpers: tuple[pl.Expr, ...] = ()

    @property
    def typed_column(self) -> str:
        return f"__{self.name}"


@dataclass(frozen=True)
class CompiledContract:
    model: type[BaseModel]
    fields: tuple[CompiledField, ...]

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def typed_schema(self) -> dict[str, pl.DataType]:
        return {f.name: f.dtype for f in self.fields}


def field_parts(info: FieldInfo) -> tuple[object, list[object]]:
    """The base type and the flat list of constraints, through `X | None` and nested `Annotated`."""
    annotation, metadata = info.annotation, list(info.metadata)
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        annotation = next(a for a in args if a is not type(None))
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        for item in extra:
            metadata.extend(item.metadata if isinstance(item, FieldInfo) else [item])
        annotation = base
    return annotation, metadata


def _timestamp(parts: pl.Expr) -> pl.Expr:
    """The parsed UTC datetime from the named groups of `contracts.TIMESTAMP_PATTERN` (null: not a date)."""
    day = parts.struct.field("date").str.to_date("%Y-%m-%d", strict=False)
    micros = parts.struct.field("fraction").str.pad_end(6, "0").cast(pl.Int64, strict=False).fill_null(0)
    sign = pl.when(parts.struct.field("sign") == "-").then(-1).otherwise(1)
    offset_minutes = sign * (
        parts.struct.field("off_hour").cast(pl.Int64, strict=False).fill_null(0) * 60
        + parts.struct.field("off_minute").cast(pl.Int64, strict=False).fill_null(0)
    )
    parsed = day.cast(pl.Datetime("us")) + pl.duration(
        hours=parts.struct.field("hour").cast(pl.Int64, strict=False),
        minutes=parts.struct.field("minute").cast(pl.Int64, strict=False) - offset_minutes,
        seconds=parts.struct.field("second").cast(pl.Int64, strict=False),
        microseconds=micros,
    )
    return parsed.dt.replace_time_zone("UTC")


def _parser_rules(func: object, name: str) -> tuple[list[Rule], pl.Expr, pl.DataType, tuple[pl.Expr, ...]]:
    """(rules, typed value, dtype, helper columns) of a registered parser applied to column `name`."""
    value, typed = pl.col(name), pl.col(f"__{name}")
    present = value.is_not_null()
    if func is contracts.parse_decimal:
        fails = present & ~value.str.contains(contracts.DECIMAL_PATTERN)
        rules = [Rule("type", "not a plain decimal number", fails)]
        return rules, value.cast(pl.Float64, strict=False), pl.Float64, ()
    if func is contracts.parse_number:
        fails = present & ~value.str.contains(contracts.NUMBER_PATTERN)
        return [Rule("type", "not a plain number", fails)], value.cast(pl.Float64, strict=False), pl.Float64, ()
    if func is contracts.parse_integer:
        fails = present & ~value.str.contains(contracts.INTEGER_PATTERN)
        return [Rule("type", "not an integer", fails)], value.cast(pl.Int64, strict=False), pl.Int64, ()
    if func is contracts.parse_boolean:
        fails = present & ~value.str.contains(contracts.BOOLEAN_PATTERN)
        truth = value.str.to_lowercase().is_in(["true", "1"])
        return [Rule("type", "not a boolean", fails)], pl.when(fails).then(None).otherwise(truth), pl.Boolean, ()
    if func is contracts.parse_timestamp:
        helper = f"__parts_{name}"
        parts = pl.col(helper)
        # The date group is not optional: it is null exactly where the pattern does not match.
        shape_ok = parts.struct.field("date").is_not_null()
        rules = [
            Rule("type", "not an ISO 8601 timestamp", present & ~shape_ok),
            # With the shape right, the parse is null only where the date is not a calendar date.
            Rule("calendar", "not a calendar date", shape_ok & typed.is_null()),
        ]
        extract = value.str.extract_groups(contracts.TIMESTAMP_PATTERN).alias(helper)
        return rules, _timestamp(parts), UTC_MICROS, (extract,)
    raise TypeError(f"contract parser {func!r} has no vectorized equivalent")


def _after_rule(func: object, typed: pl.Expr, partition_day: date | None) -> Rule | None:
    if func is contracts.plausible_time:
        lo, hi = contracts.EARLIEST_PLAUSIBLE, contracts.LATEST_PLAUSIBLE
        return Rule(
            "plausible",
            f"outside the plausible range [{lo:%Y-%m-%d}, {hi:%Y-%m-%d})",
            typed.is_not_null() & ~((typed >= lo) & (typed < hi)),
        )
    if func is contracts.must_be_false:
        return Rule("false", "is true", typed.is_not_null() & typed)
    if func is contracts.within_partition:
        if partition_day is None:
            return None
        start = datetime(partition_day.year, partition_day.month, partition_day.day, tzinfo=UTC)
        end = start + timedelta(days=1)
        # A row routed to another day than its own carries the routing rule instead (`_routing_reasons`).
        return Rule(
            "partition",
            f"outside the partition day {partition_day.isoformat()}",
            typed.is_not_null() & ~((typed >= start) & (typed < end)) & pl.col("_routing").is_null(),
        )
    raise TypeError(f"contract validator {func!r} has no vectorized equivalent")


def _compile_field(name: str, info: FieldInfo, partition_day: date | None) -> CompiledField:
    base, metadata = field_parts(info)
    value = pl.col(name)
    helpers: tuple[pl.Expr, ...] = ()
    rules: list[Rule] = []
    if info.is_required():
        rules.append(Rule("missing", "required value is missing", value.is_null()))
    parsers = [m.func for m in metadata if isinstance(m, BeforeValidator)]
    if parsers:
        parser_rules, typed, dtype, helpers = _parser_rules(parsers[0], name)
        rules += parser_rules
    elif typing.get_origin(base) is typing.Literal:
        choices = list(typing.get_args(base))
        rules.append(Rule("in_set", f"not one of {choices}", value.is_not_null() & ~value.is_in(choices)))
        typed, dtype = value, pl.String
    elif base is str:
        typed, dtype = value, pl.String
    else:
        raise TypeError(f"{name}: {base!r} needs a parser from ai_pipeline.lib.ingest.contracts")

    parsed = typed
    typed = pl.col(f"__{name}")  # the constraints read the parsed column, computed once
    for meta in metadata:
        if isinstance(meta, StringConstraints):
            if meta.min_length is not None:
                fails = typed.is_not_null() & (typed.str.len_chars() < meta.min_length)
                rules.append(Rule("min_length", f"shorter than {meta.min_length} characters", fails))
            if meta.max_length is not None:
                fails = typed.is_not_null() & (typed.str.len_chars() > meta.max_length)
                rules.append(Rule("max_length", f"longer than {meta.max_length} characters", fails))
            if meta.pattern is not None:
                fails = typed.is_not_null() & ~typed.str.contains(meta.pattern)
                rules.append(Rule("pattern", f"does not match {meta.pattern}", fails))
        elif isinstance(meta, annotated_types.Ge):
            rules.append(Rule("ge", f"less than {meta.ge}", typed.is_not_null() & (typed < meta.ge)))
        elif isinstance(meta, annotated_types.Le):
            rules.append(Rule("le", f"greater than {meta.le}", typed.is_not_null() & (typed > meta.le)))
        elif isinstance(meta, AfterValidator):
            rule = _after_rule(meta.func, typed, partition_day)
            if rule is not None:
                rules.append(rule)
        elif not isinstance(meta, BeforeValidator):
            raise TypeError(f"{name}: constraint {meta!r} has no vectorized equivalent")
    return CompiledField(name, tuple(rules), parsed, dtype, helpers)


def parsed_field(frame: pl.DataFrame, model: type[BaseModel], name: str) -> pl.Series:
    """One field's typed values as validation parses them (null where the text does not parse)."""
    compiled = next(f for f in compile_contract(model).fields if f.name == name)
    value = pl.when(pl.col(name) == "").then(None).otherwise(pl.col(name)).alias(name)
    return frame.lazy().select(value).with_columns(compiled.helpers).select(compiled.typed).collect().to_series()


def compile_contract(model: type[BaseModel], partition_day: date | None = None) -> CompiledContract:
    fields = tuple(_compile_field(name, info, partition_day) for name, info in model.model_fields.items())
    return CompiledContract(model, fields)


def prepare_raw(frame: pl.DataFrame, model: type[BaseModel]) -> pl.DataFrame:
    """Missing contract columns (and routing) as nulls; empty strings as null (the CSV convention)."""
    missing = {name: pl.String for name in [*model.model_fields, "_routing"]} | {"_arrival_date": pl.Date}
    for name, dtype in missing.items():
        if name not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=dtype).alias(name))
    return frame.with_columns(
        pl.when(pl.col(name) == "").then(None).otherwise(pl.col(name)).alias(name) for name in model.model_fields
    )


def _rule_column(field: CompiledField) -> str:
    return f"__rule_{field.name}"


def _check(frame: pl.DataFrame, contract: CompiledContract) -> pl.DataFrame:
    """Adds the typed values `__<field>` and, per field, `__rule_<field>`: the name of its first failing rule.

    Three passes, so that every parse (a timestamp's regex groups, a cast) runs once per row and each rule
    reads the parsed columns rather than re-deriving them.
    """
    helpers = [h for f in contract.fields for h in f.helpers]
    staged = frame.lazy()
    if helpers:
        staged = staged.with_columns(helpers)
    staged = staged.with_columns(f.typed.alias(f.typed_column) for f in contract.fields)
    first_failing = []
    for f in contract.fields:
        chain = None
        for rule in f.rules:
            name = pl.lit(rule.name, dtype=pl.String)
            chain = pl.when(rule.fails).then(name) if chain is None else chain.when(rule.fails).then(name)
        expr = chain.otherwise(None) if chain is not None else pl.lit(None, dtype=pl.String)
        first_failing.append(expr.alias(_rule_column(f)))
    helper_names = [h.meta.output_name() for h in helpers]
    # Lazy: Polars runs the passes in parallel over chunks of rows, about twice as fast here as eager.
    return staged.with_columns(first_failing).drop(helper_names).collect()


def _failed(contract: CompiledContract) -> pl.Expr:
    """True where the row cannot be read, is not on its own day, or some field fails a rule."""
    return pl.any_horizontal(
        pl.col("_read_error").is_not_null(),
        pl.col("_routing").is_not_null(),
        *[pl.col(_rule_column(f)).is_not_null() for f in contract.fields],
    )


def routing_field(model: type[BaseModel]) -> str | None:
    """The contract field that says which day a row belongs to: the one validated `within_partition`."""
    for name, info in model.model_fields.items():
        _, metadata = field_parts(info)
        if any(isinstance(m, AfterValidator) and m.func is contracts.within_partition for m in metadata):
            return name
    return None


def _routing_message(template: str) -> pl.Expr:
    parts = template.split("{arrival}")
    pieces = [pl.lit(parts[0])]
    for part in parts[1:]:
        pieces += [pl.col("_arrival_date").cast(pl.String), pl.lit(part)]
    return pl.concat_str(pieces)


def _routing_reasons(checked: pl.DataFrame, contract: CompiledContract) -> pl.DataFrame:
    """`__row`, `__field_index` and the reason of each readable row validated outside its own day."""
    name = routing_field(contract.model) or "_record"
    message = pl.lit(None, dtype=pl.String)
    for rule, template in contracts.ROUTING_RULES.items():
        message = pl.when(pl.col("_routing") == rule).then(_routing_message(template)).otherwise(message)
    return checked.filter(pl.col("_routing").is_not_null() & pl.col("_read_error").is_null()).select(
        "__row",
        pl.lit(contract.columns.index(name) if name in contract.columns else -1, dtype=pl.Int32).alias("__field_index"),
        pl.struct(
            field=pl.lit(name),
            rule=pl.col("_routing"),
            message=pl.coalesce(message, pl.col("_routing")),
            value=pl.col(name).cast(pl.String) if name in contract.columns else pl.lit(None, dtype=pl.String),
        ).alias("reasons"),
    )


def _reason_lists(checked: pl.DataFrame, contract: CompiledContract) -> pl.DataFrame:
    """`__row` and `reasons` of each failing row of `checked` (which carries `__row` and the rule columns).

    Every failing field with its first failing rule, in field order; a row that could not be read has its
    read error alone. Built long (one small frame per field, of its failing rows) and gathered per row:
    concatenating per-row lists of structs across columns is far slower in Polars.
    """
    unreadable = pl.col("_read_error").is_not_null()
    long = [
        checked.filter(unreadable).select(
            "__row",
            pl.lit(-1, dtype=pl.Int32).alias("__field_index"),
            pl.struct(
                field=pl.lit("_record"),
                rule=pl.lit("read_error"),
                message=pl.col("_read_error"),
                value=pl.lit(None, dtype=pl.String),
            ).alias("reasons"),
        ),
        _routing_reasons(checked, contract),
    ]
    for index, f in enumerate(contract.fields):
        rule = pl.col(_rule_column(f))
        messages = {r.name: r.message for r in f.rules}
        long.append(
            checked.filter(rule.is_not_null() & ~unreadable).select(
                "__row",
                pl.lit(index, dtype=pl.Int32).alias("__field_index"),
                pl.struct(
                    field=pl.lit(f.name),
                    rule=rule,
                    message=rule.replace_strict(messages, default=None, return_dtype=pl.String),
                    value=pl.col(f.name).cast(pl.String),
                ).alias("reasons"),
            )
        )
    return pl.concat(long).sort("__row", "__field_index").group_by("__row", maintain_order=True).agg(pl.col("reasons"))


def row_reasons(frame: pl.DataFrame, contract: CompiledContract) -> pl.DataFrame:
    """Adds `reasons` (every failing field with its first failing rule) and the typed values `__<field>`.

    A row that could not be read carries its read error alone: its field values are not the source's.
    """
    checked = _check(frame, contract).with_row_index("__row")
    reasons = _reason_lists(checked.filter(_failed(contract)), contract)
    typed = [f.typed_column for f in contract.fields]
    return (
        checked.join(reasons, on="__row", how="left")
        .sort("__row")
        .select(*frame.columns, pl.col("reasons").fill_null(pl.lit([], dtype=reasons.schema["reasons"])), *typed)
    )


@dataclass(frozen=True)
class ValidationResult:
    valid: pl.DataFrame
    quarantined: pl.DataFrame
    duplicates: int

    @property
    def rows_in(self) -> int:
        return self.valid.height + self.quarantined.height


def _duplicate_losers(passing: pl.LazyFrame, key: str, contract: CompiledContract) -> pl.DataFrame:
    """Among rows that pass every rule, the first by lineage wins each key; the others get a reason.

    `passing` carries `__row`; returns `__row` and the `reasons` of each losing row. Only the rows whose key
    occurs more than once take part in the ranking.
    """
    order = ["_source", "_source_uri", "_source_offset"]
    content = [f"__{c}" for c in contract.columns]
    shared = passing.filter(pl.len().over(key) > 1).collect()
    ranked = shared.sort(order, maintain_order=True).with_columns(
        pl.col("__row").first().over(key).alias("__winner"),
        pl.concat_str(pl.col(order[0]), pl.col(order[1]), pl.col(order[2]).cast(pl.String), separator=":")
        .first()
        .over(key)
        .alias("__winner_lineage"),
        (pl.struct(content).hash() == pl.struct(content).hash().first().over(key)).alias("__identical"),
    )
    return ranked.filter(pl.col("__row") != pl.col("__winner")).select(
        "__row",
        pl.concat_list(
            pl.struct(
                field=pl.lit(key),
                rule=pl.lit("duplicate"),
                message=pl.format(
                    "{} duplicate of {}",
                    pl.when(pl.col("__identical")).then(pl.lit("identical")).otherwise(pl.lit("conflicting")),
                    pl.col("__winner_lineage"),
                ),
                value=pl.col(key),
            )
        ).alias("reasons"),
    )


def validate(
    raw: pl.DataFrame,
    model: type[BaseModel],
    *,
    partition_day: date | None = None,
    unique_key: str | None = None,
) -> ValidationResult:
    """Splits raw rows into typed valid rows and quarantined rows with every reason; nothing is lost.

    Reasons are built only for the rows that fail (the few), not for every row.
    """
    contract = compile_contract(model, partition_day)
    checked = _check(prepare_raw(raw, model), contract).with_row_index("__row")
    failed = _failed(contract)
    lineage = [c for c in LINEAGE_SCHEMA if c in checked.columns]
    quarantine_columns = [*lineage, *[pl.col(name).cast(pl.String) for name in contract.columns], "_raw"]

    failing = checked.filter(failed)
    quarantined = (
        failing.select("__row", *quarantine_columns)
        .join(_reason_lists(failing, contract), on="__row", how="inner")
        .sort("__row")
    )
    keep = ~failed
    duplicates = 0
    if unique_key is not None:
        losers = _duplicate_losers(checked.lazy().filter(~failed), unique_key, contract)
        duplicates = losers.height
        if duplicates:
            is_lost = pl.col("__row").is_in(losers.get_column("__row").implode())
            lost = checked.filter(is_lost).join(losers, on="__row").select("__row", *quarantine_columns, "reasons")
            quarantined = pl.concat([quarantined, lost]).sort("__row")
            keep = keep & ~is_lost

    typed = [pl.col(f.typed_column).cast(f.dtype).alias(f.name) for f in contract.fields]
    valid = checked.lazy().filter(keep).select(*typed, *lineage).collect()
    quarantined = quarantined.select(pl.exclude("__row", "reasons"), pl.col("reasons").cast(REASON_DTYPE))
    return ValidationResult(valid=valid, quarantined=quarantined, duplicates=duplicates)


def pydantic_decisions(
    model: type[BaseModel], rows: Iterable[dict], partition_day: date | None = None
) -> list[frozenset[str]]:
    """The reference path, row by row: the set of failing fields of each row (empty when valid)."""
    context = {"partition_day": partition_day}
    decisions = []
    for row in rows:
        try:
            model.model_validate({k: None if v == "" else v for k, v in row.items()}, context=context)
            decisions.append(frozenset())
        except ValidationError as exc:
            decisions.append(frozenset(str(err["loc"][0]) for err in exc.errors()))
    return decisions


def vectorized_decisions(
    model: type[BaseModel], rows: Sequence[dict], partition_day: date | None = None
) -> list[frozenset[str]]:
    """The vectorized path on the same rows, in the same shape as `pydantic_decisions`."""
    frame = pl.DataFrame(
        {name: [row.get(name) for row in rows] for name in model.model_fields},
        schema={name: pl.String for name in model.model_fields},
    ).with_columns(pl.lit(None, dtype=pl.String).alias("_read_error"))
    frame = prepare_raw(frame, model)
    checked = row_reasons(frame, compile_contract(model, partition_day))
    return [frozenset(r["field"] for r in reasons) for reasons in checked["reasons"].to_list()]
