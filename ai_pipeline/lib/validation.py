"""Vectorized contract validation: a Pydantic model compiled into Polars expressions.

`compile_contract` reads the model's own declarations (types, `Literal` choices, `StringConstraints`,
`ge`/`le`, the registered parsers and after-validators of `ai_pipeline.lib.contracts`) and builds, per
field, the ordered rules pydantic applies. Pydantic reports the first failing rule of each field; so does
this. A model using a validator this module does not know is refused at compile time rather than
validated differently.

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

from ai_pipeline.lib import contracts

LINEAGE_COLUMNS = ("_source", "_source_uri", "_source_offset", "_source_page", "_ingested_at")
RAW_COLUMNS = ("partition_date", *LINEAGE_COLUMNS, "_raw", "_read_error")
REASON_DTYPE = pl.List(pl.Struct({"field": pl.String, "rule": pl.String, "message": pl.String, "value": pl.String}))
UTC_MICROS = pl.Datetime("us", "UTC")


@dataclass(frozen=True)
class Rule:
    name: str
    message: str
    fails: pl.Expr  # True where this rule fails, given that the earlier rules of the field passed


@dataclass(frozen=True)
class CompiledField:
    name: str
    rules: tuple[Rule, ...]
    typed: pl.Expr  # the parsed value, valid where no rule fails
    dtype: pl.DataType


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


def _field_parts(info: FieldInfo) -> tuple[object, list[object]]:
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


def _timestamp(value: pl.Expr) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(shape fails, calendar fails, parsed UTC datetime) for ISO 8601 strings."""
    shape_ok = value.str.contains(contracts.TIMESTAMP_PATTERN)
    parts = value.str.extract_groups(contracts.TIMESTAMP_PATTERN)
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
    return ~shape_ok, shape_ok & day.is_null(), parsed.dt.replace_time_zone("UTC")


def _parser_rules(func: object, value: pl.Expr) -> tuple[list[Rule], pl.Expr, pl.DataType]:
    present = value.is_not_null()
    if func is contracts.parse_decimal:
        fails = present & ~value.str.contains(contracts.DECIMAL_PATTERN)
        return [Rule("type", "not a plain decimal number", fails)], value.cast(pl.Float64, strict=False), pl.Float64
    if func is contracts.parse_integer:
        fails = present & ~value.str.contains(contracts.INTEGER_PATTERN)
        return [Rule("type", "not an integer", fails)], value.cast(pl.Int64, strict=False), pl.Int64
    if func is contracts.parse_timestamp:
        shape_fails, calendar_fails, parsed = _timestamp(value)
        rules = [
            Rule("type", "not an ISO 8601 timestamp", present & shape_fails),
            Rule("calendar", "not a calendar date", present & calendar_fails),
        ]
        return rules, parsed, UTC_MICROS
    raise TypeError(f"contract parser {func!r} has no vectorized equivalent")


def _after_rule(func: object, typed: pl.Expr, partition_day: date | None) -> Rule | None:
    if func is contracts.plausible_time:
        lo, hi = contracts.EARLIEST_PLAUSIBLE, contracts.LATEST_PLAUSIBLE
        return Rule(
            "plausible",
            f"outside the plausible range [{lo:%Y-%m-%d}, {hi:%Y-%m-%d})",
            typed.is_not_null() & ~((typed >= lo) & (typed < hi)),
        )
    if func is contracts.within_partition:
        if partition_day is None:
            return None
        start = datetime(partition_day.year, partition_day.month, partition_day.day, tzinfo=UTC)
        end = start + timedelta(days=1)
        return Rule(
            "partition",
            f"outside the partition day {partition_day.isoformat()}",
            typed.is_not_null() & ~((typed >= start) & (typed < end)),
        )
    raise TypeError(f"contract validator {func!r} has no vectorized equivalent")


def _compile_field(name: str, info: FieldInfo, partition_day: date | None) -> CompiledField:
    base, metadata = _field_parts(info)
    value = pl.col(name)
    rules: list[Rule] = []
    if info.is_required():
        rules.append(Rule("missing", "required value is missing", value.is_null()))
    parsers = [m.func for m in metadata if isinstance(m, BeforeValidator)]
    if parsers:
        parser_rules, typed, dtype = _parser_rules(parsers[0], value)
        rules += parser_rules
    elif typing.get_origin(base) is typing.Literal:
        choices = list(typing.get_args(base))
        rules.append(Rule("in_set", f"not one of {choices}", value.is_not_null() & ~value.is_in(choices)))
        typed, dtype = value, pl.String
    elif base is str:
        typed, dtype = value, pl.String
    else:
        raise TypeError(f"{name}: {base!r} needs a parser from ai_pipeline.lib.contracts")

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
    return CompiledField(name, tuple(rules), typed, dtype)


def compile_contract(model: type[BaseModel], partition_day: date | None = None) -> CompiledContract:
    fields = tuple(_compile_field(name, info, partition_day) for name, info in model.model_fields.items())
    return CompiledContract(model, fields)


def _reason(field: CompiledField) -> pl.Expr:
    chain = None
    for rule in field.rules:
        struct = pl.struct(
            field=pl.lit(field.name),
            rule=pl.lit(rule.name),
            message=pl.lit(rule.message),
            value=pl.col(field.name),
        )
        chain = pl.when(rule.fails).then(struct) if chain is None else chain.when(rule.fails).then(struct)
    return chain.otherwise(None) if chain is not None else pl.lit(None)


def prepare_raw(frame: pl.DataFrame, model: type[BaseModel]) -> pl.DataFrame:
    """Missing contract columns as null strings; empty strings as null (the CSV convention)."""
    for name in model.model_fields:
        if name not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(name))
    return frame.with_columns(
        pl.when(pl.col(name) == "").then(None).otherwise(pl.col(name)).alias(name) for name in model.model_fields
    )


def row_reasons(frame: pl.DataFrame, contract: CompiledContract) -> pl.DataFrame:
    """Adds `reasons` (every failing field with its first failing rule) and the typed values `__<field>`.

    A row that could not be read carries its read error alone: its field values are not the source's.
    """
    read_error = pl.struct(
        field=pl.lit("_record"),
        rule=pl.lit("read_error"),
        message=pl.col("_read_error"),
        value=pl.lit(None, dtype=pl.String),
    )
    field_reasons = pl.concat_list([_reason(f) for f in contract.fields]).list.drop_nulls()
    reasons = (
        pl.when(pl.col("_read_error").is_not_null()).then(pl.concat_list(read_error)).otherwise(field_reasons)
    )
    return frame.with_columns(
        reasons.alias("reasons"),
        *[f.typed.alias(f"__{f.name}") for f in contract.fields],
    )


@dataclass(frozen=True)
class ValidationResult:
    valid: pl.DataFrame
    quarantined: pl.DataFrame
    duplicates: int

    @property
    def rows_in(self) -> int:
        return self.valid.height + self.quarantined.height


def _resolve_duplicates(checked: pl.DataFrame, key: str, contract: CompiledContract) -> tuple[pl.DataFrame, int]:
    """Among rows that pass every rule, the first by lineage wins each key; the others get a reason."""
    order = ["_source", "_source_uri", "_source_offset"]
    candidates = checked.with_row_index("__row").filter(pl.col("reasons").list.len() == 0)
    content = [f"__{c}" for c in contract.columns]
    ranked = candidates.sort(order).with_columns(
        pl.col("__row").first().over(key).alias("__winner"),
        pl.concat_str(pl.col(order[0]), pl.col(order[1]), pl.col(order[2]).cast(pl.String), separator=":")
        .first()
        .over(key)
        .alias("__winner_lineage"),
        (pl.struct(content).hash() == pl.struct(content).hash().first().over(key)).alias("__identical"),
    )
    losers = ranked.filter(pl.col("__row") != pl.col("__winner")).select(
        "__row",
        pl.struct(
            field=pl.lit(key),
            rule=pl.lit("duplicate"),
            message=pl.format(
                "{} duplicate of {}",
                pl.when(pl.col("__identical")).then(pl.lit("identical")).otherwise(pl.lit("conflicting")),
                pl.col("__winner_lineage"),
            ),
            value=pl.col(key),
        ).alias("__dup"),
    )
    if losers.height == 0:
        return checked, 0
    marked = (
        checked.with_row_index("__row")
        .join(losers, on="__row", how="left")
        .sort("__row")
        .with_columns(
            pl.when(pl.col("__dup").is_not_null())
            .then(pl.concat_list(pl.col("reasons"), pl.concat_list(pl.col("__dup"))))
            .otherwise(pl.col("reasons"))
            .alias("reasons")
        )
        .drop("__row", "__dup")
    )
    return marked, losers.height


def validate(
    raw: pl.DataFrame,
    model: type[BaseModel],
    *,
    partition_day: date | None = None,
    unique_key: str | None = None,
) -> ValidationResult:
    """Splits raw rows into typed valid rows and quarantined rows with every reason; nothing is lost."""
    contract = compile_contract(model, partition_day)
    prepared = prepare_raw(raw, model)
    checked = row_reasons(prepared, contract)
    duplicates = 0
    if unique_key is not None:
        checked, duplicates = _resolve_duplicates(checked, unique_key, contract)
    is_valid = pl.col("reasons").list.len() == 0
    lineage = [c for c in ("partition_date", *LINEAGE_COLUMNS) if c in checked.columns]
    valid = checked.filter(is_valid).select(
        *[pl.col(f"__{f.name}").cast(f.dtype).alias(f.name) for f in contract.fields], *lineage
    )
    quarantined = checked.filter(~is_valid).select(
        *lineage,
        *[pl.col(name).cast(pl.String) for name in contract.columns],
        "_raw",
        pl.col("reasons").cast(REASON_DTYPE),
    )
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
