"""Declared mappings of real exports into the event contract (configuration plus a small function)."""

from __future__ import annotations

import polars as pl

from ai_pipeline.lib.raw import SourceMapping


def _online_retail(frame: pl.DataFrame) -> pl.DataFrame:
    """UCI Online Retail: one row per invoice line.

    - event_id: invoice number and the line's position within its invoice (an invoice may list the same
      stock code twice; both lines are real sales).
    - event_type: invoices starting with "C" are cancellations, the rest purchases.
    - amount: Quantity * UnitPrice; a cancellation's is the refunded amount, so its absolute value.
      Unparseable factors pass through as text so the contract rejects them with the value shown.
    - event_time: "M/D/YY H:MM" (UTC) to ISO 8601; unparseable dates pass through as they are.
    """
    invoice = pl.col("InvoiceNo")
    quantity = pl.col("Quantity").cast(pl.Float64, strict=False)
    price = pl.col("UnitPrice").cast(pl.Float64, strict=False)
    amount = (quantity * price).abs().round(6)
    when = pl.col("InvoiceDate").str.strptime(pl.Datetime("us"), "%m/%d/%y %H:%M", strict=False)
    return frame.select(
        pl.format("{}-{}", invoice, pl.int_range(pl.len()).over(invoice) + 1).alias("event_id"),
        pl.col("user_id"),
        pl.when(invoice.str.starts_with("C"))
        .then(pl.lit("cancellation"))
        .otherwise(pl.lit("purchase"))
        .alias("event_type"),
        pl.when(when.is_null())
        .then(pl.col("InvoiceDate"))
        .otherwise(when.dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
        .alias("event_time"),
        pl.when(amount.is_null())
        .then(pl.format("{}*{}", pl.col("Quantity"), pl.col("UnitPrice")))
        .otherwise(amount.cast(pl.String))
        .alias("amount"),
        pl.col("country"),
    )


ONLINE_RETAIL = SourceMapping(
    renames={"CustomerID": "user_id", "Country": "country"},
    required_columns=("InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"),
    derive=_online_retail,
)
