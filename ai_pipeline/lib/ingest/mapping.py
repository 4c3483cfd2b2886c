"""How a source's own columns become the contract's, declared rather than coded (see `ai_pipeline.components`).

`declared_mapping` compiles a source's declaration into a `SourceMapping` for `raw.conform`:
- `columns`: source column -> contract field (on top of the contract's own aliases);
- `required_columns`: source columns every file must have (default: the contract's required fields);
- `derive`: contract field -> a SQL expression over the source's columns, all text as the file had them
  (Polars SQL: `abs(try_cast(Quantity as double) * try_cast(UnitPrice as double))`,
  `case when InvoiceNo like 'C%' then 'cancellation' else 'purchase' end`,
  `InvoiceNo || '-' || row_number() over (partition by InvoiceNo)` for an id numbered within a file);
- `timestamp`: the contract's time field parsed from a source column with a `strptime` format in a time zone;
- `constants`: contract field -> a fixed value;
- `normalize`: contract field -> named steps applied last (`trim`, `lower`, `upper`, `integer_text`: `17850.0` ->
  `17850`, as spreadsheets write integer ids).

Values that cannot be derived are never made up: where an expression or a time format gives nothing from inputs that
were there, the field carries the inputs as text (`derived from Quantity='a', UnitPrice='2.5'`), and the contract
quarantines the row with that value in its reason. An expression that fails as a whole (a strict cast of a
non-number) makes every row of the file a schema error naming the field and the expression.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl

NORMALIZERS = {
    "trim": lambda e: e.str.strip_chars(),
    "lower": lambda e: e.str.to_lowercase(),
    "upper": lambda e: e.str.to_uppercase(),
    "integer_text": lambda e: e.str.replace(r"^(-?[0-9]+)\.0+$", "${1}"),
}
# Derived numbers as the contract's decimals read them: at most 9 decimals, no exponent.
DECIMALS = 9


class MappingError(ValueError):
    """A declaration that cannot work: an unknown field, an expression that does not parse."""


@dataclass(frozen=True)
class TimestampSpec:
    field: str  # the contract field it fills
    column: str  # the source column it is read from
    format: str  # strptime
    timezone: str = "UTC"


def _as_text(value: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """A derived value as a file would have carried it; floats as plain decimals (no exponent, at most 9 places)."""
    if dtype.is_float():
        return value.cast(pl.Decimal(38, DECIMALS), strict=False).cast(pl.String).str.replace(r"\.?0+$", "")
    return value.cast(pl.String)


def _inputs_as_text(columns: Sequence[str]) -> pl.Expr:
    """`derived from A='a', B='b'`: what a value could not be made of, shown in the quarantine reason."""
    parts = [pl.lit("derived from ")]
    for i, name in enumerate(columns):
        parts += [pl.lit(f"{', ' if i else ''}{name}='"), pl.col(name).fill_null("null"), pl.lit("'")]
    return pl.concat_str(parts)


@dataclass(frozen=True)
class DeclaredMapping:
    derive: Mapping[str, str]
    timestamp: TimestampSpec | None
    constants: Mapping[str, str]
    normalize: Mapping[str, Sequence[str]]

    def __call__(self, source: pl.DataFrame, conformed: pl.DataFrame) -> pl.DataFrame:
        """`conformed` (the contract columns found so far) with the declared fields computed from `source`."""
        fields: dict[str, pl.Series] = {}
        for name, sql in self.derive.items():
            expr = pl.sql_expr(sql)
            inputs = list(dict.fromkeys(expr.meta.root_names()))
            try:
                value = source.select(expr.alias("__value")).to_series()
            except (pl.exceptions.PolarsError, ValueError) as exc:
                raise MappingError(f"{name} = {sql}: {str(exc).splitlines()[0]}") from exc
            given = pl.all_horizontal(pl.col(c).is_not_null() for c in inputs) if inputs else pl.lit(False)
            text = _as_text(pl.col("__value"), value.dtype)
            fields[name] = (
                source.with_columns(value)
                .select(pl.when(text.is_null() & given).then(_inputs_as_text(inputs)).otherwise(text))
                .to_series()
                .alias(name)
            )
        if self.timestamp is not None:
            spec = self.timestamp
            parsed = (
                pl.col(spec.column)
                .str.strptime(pl.Datetime("us"), spec.format, strict=False)
                .dt.replace_time_zone(spec.timezone, ambiguous="earliest", non_existent="null")
                .dt.convert_time_zone("UTC")
                .dt.strftime("%Y-%m-%dT%H:%M:%SZ")
            )
            fields[spec.field] = source.select(parsed.fill_null(pl.col(spec.column)).alias(spec.field)).to_series()
        out = conformed.with_columns(list(fields.values()))
        out = out.with_columns(pl.lit(value, dtype=pl.String).alias(name) for name, value in self.constants.items())
        # An optional field the input does not send has nothing to normalize.
        for name, steps in ((n, s) for n, s in self.normalize.items() if n in out.columns):
            expr = pl.col(name)
            for step in steps:
                expr = NORMALIZERS[step](expr)
            out = out.with_columns(expr.alias(name))
        return out


def declared_mapping(
    contract_fields: Sequence[str],
    *,
    derive: Mapping[str, str] | None = None,
    timestamp: TimestampSpec | None = None,
    constants: Mapping[str, str] | None = None,
    normalize: Mapping[str, Sequence[str]] | None = None,
) -> DeclaredMapping:
    """The computed part of a declaration, checked against the contract's fields (raises `MappingError`)."""
    derive, constants, normalize = dict(derive or {}), dict(constants or {}), dict(normalize or {})
    targets = {
        "derive": list(derive),
        "constants": list(constants),
        "normalize": list(normalize),
        "timestamp": [timestamp.field] if timestamp else [],
    }
    for key, names in targets.items():
        unknown = sorted(set(names) - set(contract_fields))
        if unknown:
            raise MappingError(f"{key}: {unknown} are not fields of the contract {list(contract_fields)}")
    for name, sql in derive.items():
        try:
            pl.sql_expr(sql)
        except Exception as exc:  # Polars raises several types for SQL it cannot parse
            raise MappingError(f"derive {name}: cannot parse {sql!r}: {exc}") from exc
    for name, steps in normalize.items():
        unknown = sorted(set(steps) - set(NORMALIZERS))
        if unknown:
            raise MappingError(f"normalize {name}: unknown step(s) {unknown}; known: {sorted(NORMALIZERS)}")
    return DeclaredMapping(derive, timestamp, constants, normalize)
