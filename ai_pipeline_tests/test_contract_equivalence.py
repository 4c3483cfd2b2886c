"""The vectorized contract path decides exactly as the Pydantic models do, on adversarial rows.

`validation.vectorized_decisions` (Polars expressions compiled from the models) and
`validation.pydantic_decisions` (row-by-row `model_validate`) must return the same set of failing fields
for every row. Hypothesis mixes valid values with near-misses per field; a fixed table of the nastiest rows
with their expected failing fields written out guards against both paths being wrong the same way.
"""

from __future__ import annotations

import functools
from collections import Counter
from datetime import date, datetime, timedelta

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ai_pipeline.lib.ingest.contracts import EVENT_TYPES, Event, User
from ai_pipeline.lib.ingest.validation import (
    compile_contract,
    prepare_raw,
    pydantic_decisions,
    row_reasons,
    vectorized_decisions,
)

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
# Many rows per example: one vectorized call checks a whole batch, so the test stays fast.
BATCH = {"min_size": 50, "max_size": 200}

# Characters that are not ASCII but look like it, or are whitespace/control, or other scripts' digits.
UNICODE_DIGITS = "٠١٢٣٤٥٦٧٨٩"  # Arabic-Indic
FULLWIDTH_DIGITS = "０１２３４５６７８９"
NASTY_CHARS = "\n\r\t \u00a0\u2028\u200b\ufeff\x00é߀ａ" + UNICODE_DIGITS[:3] + FULLWIDTH_DIGITS[:3]

# Polars cannot hold lone surrogates (and no CSV can carry them): every other code point is fair game.
any_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=70)
nasty_text = st.text(alphabet=st.sampled_from(NASTY_CHARS + "aZ09_.:-@ &/%+"), max_size=12)
missing = st.sampled_from([None, ""])


def _perturb(base: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A valid-looking value with one near-miss applied: padding, a newline, a swapped or inserted character."""

    @st.composite
    def perturbed(draw: st.DrawFn) -> str:
        value = draw(base)
        kind = draw(st.sampled_from(["pad", "newline", "insert", "replace", "case", "truncate", "unicode"]))
        if kind == "pad":
            return draw(st.sampled_from(["", " ", "\t", "\u00a0"])) + value + draw(st.sampled_from(["", " ", "  "]))
        if kind == "newline":
            return value + draw(st.sampled_from(["\n", "\r\n", "\r"]))
        if kind == "truncate":
            return value[: draw(st.integers(0, max(len(value) - 1, 0)))]
        if kind == "case":
            return value.swapcase()
        if kind == "unicode":
            digits = draw(st.sampled_from([UNICODE_DIGITS, FULLWIDTH_DIGITS]))
            return value.translate(str.maketrans("0123456789", digits))
        position = draw(st.integers(0, len(value)))
        char = draw(st.sampled_from(NASTY_CHARS + "xZ_.:-+/ 0"))
        if kind == "insert" or not value:
            return value[:position] + char + value[position:]
        position = min(position, len(value) - 1)
        return value[:position] + char + value[position + 1 :]

    return perturbed()


def _field(valid: st.SearchStrategy[str], edges: list[str | None], near: st.SearchStrategy[str] | None = None):
    """Mostly valid values; then hand-picked edges, generated near-misses, missing values and noise."""
    edge = st.sampled_from(edges)
    return st.one_of(
        valid,
        valid,
        valid,
        edge,
        edge,
        near if near is not None else edge,
        _perturb(valid),
        missing,
        nasty_text,
        any_text,
    )


# --- identifiers ---------------------------------------------------------------------------------------
valid_id = st.one_of(
    st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.:\-]{0,15}\Z"),
    st.sampled_from(["e" + "1" * 63, "A:b.c_d-" + "9" * 55, "0", "evt-000001", "u_42"]),
)
ID_EDGES = [
    "a" * 64,
    "a" * 65,
    "e" + "1" * 63,
    "e" + "1" * 64,
    "_leading_underscore",
    "-leading-dash",
    ".dot",
    ":colon",
    "a b",
    "a\n",
    "\na",
    " a",
    "a ",
    "a\t",
    "a\r\n",
    "é",
    "evt-é",
    "ａbc",
    "١٢٣",
    "abc١",
    "x'; DROP TABLE events;--",
    "1 OR 1=1",
    "a/b",
    "a@b",
    "a,b",
    "A:B.C_D-E",
    "0",
    "\u200b",
    "a\x00",
    "None",
    "null",
    "a" * 1000,
]
ids = _field(valid_id, ID_EDGES, st.from_regex(r"\A[A-Za-z0-9_.:\- é\n]{0,3}[A-Za-z0-9_.:\-]{0,4}\s?\Z"))

# --- event types ---------------------------------------------------------------------------------------
valid_event_type = st.sampled_from(EVENT_TYPES)
EVENT_TYPE_EDGES = [
    *(t.upper() for t in EVENT_TYPES),
    *(t.capitalize() for t in EVENT_TYPES),
    *(f" {t}" for t in EVENT_TYPES),
    *(f"{t}\n" for t in EVENT_TYPES),
    *(f"{t} " for t in EVENT_TYPES),
    *(t[:-1] for t in EVENT_TYPES),
    "purchases",
    "cancelation",
    "sign_up",
    "log out",
    "clíck",
    "ｃｌｉｃｋ",
    "unknown",
]
event_types = _field(valid_event_type, EVENT_TYPE_EDGES)

# --- timestamps ----------------------------------------------------------------------------------------
# Offsets a valid timestamp may carry, in minutes east of UTC ("" is naive, which means UTC).
OFFSET_MINUTES = {
    "": 0,
    "Z": 0,
    "+00:00": 0,
    "-00:00": 0,
    "+23:59": 1439,
    "-23:59": -1439,
    "+05:30": 330,
    "+01:00": 60,
    "-01:00": -60,
    "-08:00": -480,
    "+14:00": 840,
}
PLAUSIBLE_EDGES = [
    datetime(2000, 1, 1),
    datetime(2100, 1, 1),
    datetime(2000, 2, 29, 12),
    datetime(2096, 2, 29, 12),
    datetime(2024, 2, 29, 12),
    datetime(2023, 12, 31, 23, 59, 59),
]
US = timedelta(microseconds=1)
INSTANT_DELTAS = [
    timedelta(0),
    -US,
    US,
    timedelta(seconds=-1),
    timedelta(hours=12),
    timedelta(days=1) - US,
    timedelta(days=1),
    timedelta(days=1) + US,
    timedelta(minutes=-1439),
    timedelta(minutes=1439),
    timedelta(days=1, minutes=1439),
    timedelta(days=1, minutes=-1439),
]


def _render(instant: datetime, offset: str, sep: str = "T", style: int = 0) -> str:
    """A UTC instant as an ISO 8601 string in the given offset; style 0: minimal fraction, 1: trimmed, 2: 6 digits."""
    local = instant + timedelta(minutes=OFFSET_MINUTES[offset])
    micro = f"{local.microsecond:06d}"
    fraction = ["" if local.microsecond == 0 else "." + micro, "." + (micro.rstrip("0") or "0"), "." + micro][style]
    return f"{local:%Y-%m-%d}{sep}{local:%H:%M:%S}{fraction}{offset}"


def _corruptions(text: str) -> list[str]:
    """Near-misses of a valid 'YYYY-MM-DDTHH:MM:SS[.f][offset]' string, each breaking one thing."""
    body, tail = text[:19], text[19:]
    out = [body[:5] + m + body[7:] + tail for m in ("13", "00", "1", "2-")]
    out += [body[:8] + d + body[10:] + tail for d in ("00", "32", "31", "30", "3")]
    out += [body[:5] + md + body[10:] + tail for md in ("02-30", "02-29", "04-31", "06-31")]
    out += [
        y + body[4:] + tail
        for y in ("0000", "0999", "1000", "1900", "1999", "2000", "2099", "2100", "2999", "3000", "9999", "20245")
    ]
    out += [body[:11] + "24" + body[13:] + tail, body[:14] + "60" + body[16:] + tail, body[:17] + "60" + tail]
    out += [body + frac + offset for frac in (".1234567", ".", ",5", ".٥", ".123456789") for offset in ("", "Z")]
    out += [body + off for off in ("+24:00", "+0530", "+05", "-12:60", "z", " Z", "UTC", "+00:00:00", "+5:30", "Z\n")]
    out += [body[:10] + sep + body[11:] + tail for sep in ("t", "_", "  ", "", "\n")]
    out += [text.translate(str.maketrans("0123456789", digits)) for digits in (UNICODE_DIGITS, FULLWIDTH_DIGITS)]
    out += [body[:4] + UNICODE_DIGITS[int(body[5])] + body[5:] + tail]
    out += [" " + text, text + " ", text + "\n", "\n" + text, "\t" + text, text[:10], text[:16], text[:13]]
    out += [body.replace("-", "/") + tail, body.replace("-", "") + tail, body.replace(":", "") + tail]
    return out


@functools.cache
def _timestamp_pools(day: date | None) -> tuple[list[str], list[str]]:
    """(valid-looking strings near the partition day's and the plausible range's boundaries, their near-misses)."""
    # An event's valid times sit around its partition day; a user's around the plausible range's edges.
    anchors = list(PLAUSIBLE_EDGES) if day is None else [datetime(day.year, day.month, day.day)]
    instants = sorted({anchor + delta for anchor in anchors for delta in INSTANT_DELTAS})
    valid = sorted(
        {
            _render(i, offset, sep, style)
            for i in instants
            for offset in OFFSET_MINUTES
            for sep in "T "
            for style in range(3)
        }
    )
    bases = valid[:: max(1, len(valid) // 40)]
    return valid, sorted({bad for text in bases for bad in _corruptions(text)})


@st.composite
def _anchored_timestamp(draw: st.DrawFn, day: date | None) -> str:
    """Any instant in or just around the partition day (or in and around the plausible range)."""
    if day is None:
        origin, span = datetime(1999, 12, 25), (100 * 365 + 40) * 86_400
    else:
        origin, span = datetime(day.year, day.month, day.day) - timedelta(hours=3), 30 * 3600
    instant = origin + timedelta(
        seconds=draw(st.integers(0, span)), microseconds=draw(st.sampled_from([0, 0, 1, 500_000, 999_999, 123_456]))
    )
    return _render(
        instant, draw(st.sampled_from(list(OFFSET_MINUTES))), draw(st.sampled_from("T ")), draw(st.integers(0, 2))
    )


@st.composite
def _assembled_timestamp(draw: st.DrawFn) -> str:
    """Parts drawn independently: most combinations are wrong somewhere (month 13, hour 24, 7-digit fraction...)."""
    year = draw(st.sampled_from([0, 999, 1000, 1900, 1999, 2000, 2024, 2099, 2100, 2999, 3000, 9999]))
    month, dom = draw(st.integers(0, 13)), draw(st.sampled_from([0, 1, 28, 29, 30, 31, 32]))
    hour, minute, second = draw(st.integers(0, 24)), draw(st.integers(0, 60)), draw(st.integers(0, 61))
    fraction = draw(st.sampled_from(["", ".5", ".123456", ".1234567", ".", ".000000001"]))
    offset = draw(st.sampled_from(["", "Z", "+00:00", "-00:00", "+23:59", "-23:59", "+24:00", "+0530", "z"]))
    sep = draw(st.sampled_from(["T", " ", "t", "_"]))
    return f"{year:04d}-{month:02d}-{dom:02d}{sep}{hour:02d}:{minute:02d}:{second:02d}{fraction}{offset}"


TIMESTAMP_EDGES = [
    "2024-02-29T00:00:00Z",
    "2023-02-29T00:00:00Z",
    "2024-02-30T00:00:00Z",
    "2100-02-29T00:00:00Z",
    "2000-02-29T00:00:00Z",
    "2024-13-01T00:00:00Z",
    "2024-00-10T00:00:00Z",
    "2024-04-31T00:00:00Z",
    "2024-01-01T24:00:00Z",
    "2024-01-01T23:59:60Z",
    "2024-01-01T23:60:00Z",
    "2024-01-01T00:00:00.1234567Z",
    "2024-01-01T00:00:00.123456Z",
    "2024-01-01T00:00:00.Z",
    "2024-01-01T00:00:00+24:00",
    "2024-01-01T00:00Z",
    "2024-01-01",
    "2024-01-01T00:00:00\n",
    " 2024-01-01T00:00:00Z",
    "2024-01-01T00:00:00Z ",
    "٢٠٢٤-٠١-٠١T00:00:00Z",
    "2024-01-01T00:00:00+05:30 ",
    "1900-01-01T00:00:00Z",
    "1999-12-31T23:59:59.999999Z",
    "2000-01-01T00:00:00Z",
    "1999-12-31T23:00:00-01:00",
    "2000-01-01T00:30:00+01:00",
    "2099-12-31T23:59:59.999999Z",
    "2100-01-01T00:00:00Z",
    "2100-01-01T00:30:00+01:00",
    "2099-12-31T23:30:00-01:00",
    "9999-12-31T23:59:59Z",
    "0000-01-01T00:00:00Z",
    "20240101T000000Z",
    "2024-W01-1T00:00:00Z",
    "1712345678",
    "now",
]


def valid_timestamps(day: date | None) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(_timestamp_pools(day)[0]), _anchored_timestamp(day))


def timestamps(day: date | None) -> st.SearchStrategy[str | None]:
    near_pool = st.sampled_from(_timestamp_pools(day)[1])
    return _field(valid_timestamps(day), TIMESTAMP_EDGES, st.one_of(near_pool, near_pool, _assembled_timestamp()))


# --- amounts and ages ----------------------------------------------------------------------------------
valid_amount = st.one_of(
    st.from_regex(r"\A[0-9]{1,7}(\.[0-9]{1,9})?\Z"),
    st.decimals(min_value=0, max_value=1_000_000, places=2, allow_nan=False).map(str),
    st.sampled_from(
        [
            "0",
            "0.0",
            "1000000",
            "1000000.0",
            "1000000.000000000",
            "999999.999999999",
            "0.000000001",
            "000000000000001",
            "0.5",
            "19.99",
        ]
    ),
)
AMOUNT_EDGES = [
    "0",
    "-0",
    "-0.0",
    "0.0",
    "00",
    "1e3",
    "1E3",
    "inf",
    "-inf",
    "Infinity",
    "nan",
    "NaN",
    " 1",
    "1 ",
    "1\n",
    "1.",
    ".5",
    "-.5",
    "+1",
    "1_000",
    "1,000",
    "0x10",
    "123456789012345",
    "1234567890123456",
    "-123456789012345",
    "1.123456789",
    "1.1234567890",
    "0.000000001",
    "0.0000000001",
    "1000000",
    "1000000.0",
    "1000000.000000000",
    "1000000.000000001",
    "1000000.00000001",
    "1000000.1",
    "1000001",
    "999999.999999999",
    "-1",
    "-0.000000001",
    "-1000000",
    "١٢",
    "１２",
    "1١",
    "1.٥",
    "--1",
    "1-",
]
amounts = _field(valid_amount, AMOUNT_EDGES, st.from_regex(r"\A[-+ ]?[0-9]{0,17}([.,][0-9]{0,11})?([eE][-+]?[0-9])?\Z"))

valid_age = st.integers(0, 150).map(str)
AGE_EDGES = [
    "0",
    "-0",
    "150",
    "151",
    "149",
    "-1",
    "030",
    "0150",
    "000000000000150",
    "0000000000000150",
    "1.0",
    "1.",
    "1e2",
    " 30",
    "30 ",
    "30\n",
    "+30",
    "1_0",
    "٣٠",
    "３０",
    "123456789012345",
    "1234567890123456",
    "9" * 40,
    "-" + "9" * 15,
    "nan",
    "--1",
]
ages = _field(valid_age, AGE_EDGES, st.from_regex(r"\A[-+ ]?[0-9]{0,18}(\.[0-9]?)?\Z"))

# --- labels and emails ---------------------------------------------------------------------------------
valid_label = st.one_of(
    st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9 &/_.\-]{0,15}\Z"),
    st.sampled_from(["US", "DE", "Home & Garden", "a/b_c.d-e", "x" * 64, "Books "]),
)
LABEL_EDGES = [
    "US",
    "Home & Garden",
    " US",
    "US\n",
    "é",
    "Ünited",
    "x" * 64,
    "x" * 65,
    "&x",
    "a,b",
    "a\tb",
    "日本",
    "-",
    "a" * 63 + " ",
]
labels = _field(valid_label, LABEL_EDGES)

valid_email = st.one_of(
    st.from_regex(r"\A[A-Za-z0-9._%+\-]{1,12}@[A-Za-z0-9\-]{1,8}(\.[A-Za-z0-9\-]{1,8}){0,2}\.[A-Za-z]{2,24}\Z"),
    st.sampled_from(["a@b.co", "a" * 242 + "@example.com", "A+tag@Sub.Example.ORG", "x@y." + "z" * 24]),
)
EMAIL_EDGES = [
    "a@b.co",
    "a@b.c",
    "a@b",
    "@b.co",
    "a@.co",
    "a@b.co.",
    "a@@b.co",
    "a b@c.co",
    "a@b.co\n",
    " a@b.co",
    "a@b.co ",
    "a@b." + "c" * 24,
    "a@b." + "c" * 25,
    "a@b.c0",
    "é@b.co",
    "a@bé.co",
    "a@b.ｃｏ",
    "a@b-.co",
    "a@-.co",
    "a" * 242 + "@example.com",
    "a" * 243 + "@example.com",
    "a" * 300 + "@b.co",
    "A+tag@Sub.Example.ORG",
    '"a"@b.co',
    "a@[127.0.0.1]",
    "a@b..co",
    "a@b_c.co",
]
emails = _field(valid_email, EMAIL_EDGES, st.from_regex(r"\A[a-z.é ]{0,3}@{0,2}[a-z\-_.]{0,4}(\.[a-z0-9]{0,3})?\n?\Z"))

# --- rows ----------------------------------------------------------------------------------------------
PARTITION_DAYS = [date(2024, 2, 29), date(2024, 3, 1), date(2000, 1, 1), date(2099, 12, 31), date(2023, 12, 31), None]


def _rows(valid: dict[str, st.SearchStrategy], adversarial: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    """Rows of adversarial values in every field, or valid rows with at most one field adversarial."""

    @st.composite
    def mostly_valid(draw: st.DrawFn) -> dict:
        row = {name: draw(strategy) for name, strategy in valid.items()}
        broken = draw(st.sampled_from([None, *adversarial]))
        if broken is not None:
            row[broken] = draw(adversarial[broken])
        return row

    return st.one_of(st.fixed_dictionaries(adversarial), mostly_valid())


def _optional(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str | None]:
    return st.one_of(valid, valid, missing)


def event_row(day: date | None) -> st.SearchStrategy[dict]:
    valid = {
        "event_id": valid_id,
        "user_id": valid_id,
        "event_type": valid_event_type,
        "event_time": valid_timestamps(day),
        "amount": _optional(valid_amount),
        "category": _optional(valid_label),
        "country": _optional(valid_label),
    }
    adversarial = {
        "event_id": ids,
        "user_id": ids,
        "event_type": event_types,
        "event_time": timestamps(day),
        "amount": amounts,
        "category": labels,
        "country": labels,
    }
    return _rows(valid, adversarial)


def event_batches() -> st.SearchStrategy[tuple[date | None, list[dict]]]:
    return st.sampled_from(PARTITION_DAYS).flatmap(lambda d: st.tuples(st.just(d), st.lists(event_row(d), **BATCH)))


user_row = _rows(
    {
        "user_id": valid_id,
        "age": _optional(valid_age),
        "email": valid_email,
        "signup_time": valid_timestamps(None),
        "country": _optional(valid_label),
    },
    {"user_id": ids, "age": ages, "email": emails, "signup_time": timestamps(None), "country": labels},
)


def _assert_same(model, rows, day=None):
    reference = pydantic_decisions(model, rows, day)
    vectorized = vectorized_decisions(model, rows, day)
    assert len(reference) == len(vectorized) == len(rows)
    mismatches = [
        (row, set(ref), set(vec)) for row, ref, vec in zip(rows, reference, vectorized, strict=True) if ref != vec
    ]
    assert not mismatches, f"{len(mismatches)} rows decided differently (row, pydantic, vectorized): {mismatches[:5]}"


@pytest.mark.slow  # hundreds of generated batches through both paths
@SETTINGS
@given(event_batches())
def test_event_paths_agree(case):
    day, rows = case
    _assert_same(Event, rows, day)


@pytest.mark.slow
@SETTINGS
@given(st.lists(user_row, **BATCH))
def test_user_paths_agree(rows):
    _assert_same(User, rows)


def user_batches() -> st.SearchStrategy[tuple[None, list[dict]]]:
    return st.lists(user_row, **BATCH).map(lambda rows: (None, rows))


@pytest.mark.slow
@settings(SETTINGS, max_examples=60)
@given(st.one_of(event_batches().map(lambda case: (Event, *case)), user_batches().map(lambda case: (User, *case))))
def test_typed_values_agree(case):
    """Where a row is valid, the vectorized typed values are the model's own (same instant, same number)."""
    model, day, rows = case
    frame = pl.DataFrame(
        {name: [row.get(name) for row in rows] for name in model.model_fields},
        schema=dict.fromkeys(model.model_fields, pl.String),
    ).with_columns(pl.lit(None, dtype=pl.String).alias("_read_error"))
    checked = row_reasons(prepare_raw(frame, model), compile_contract(model, day))
    typed = checked.select("reasons", *[f"__{name}" for name in model.model_fields]).to_dicts()
    for row, vectorized in zip(rows, typed, strict=True):
        if vectorized["reasons"]:
            continue
        clean = {k: None if v == "" else v for k, v in row.items()}
        try:
            expected = model.model_validate(clean, context={"partition_day": day}).model_dump()
        except ValidationError as exc:
            raise AssertionError(f"only the vectorized path accepts {row!r}: {exc}") from exc
        got = {name: vectorized[f"__{name}"] for name in model.model_fields}
        assert got == expected, row


@pytest.mark.parametrize("model, batches", [(Event, event_batches()), (User, user_batches())])
def test_strategies_reach_both_outcomes(model, batches):
    """Guards the generators themselves: every field is seen both passing and failing, rows both valid and not."""
    seen: Counter = Counter()

    @settings(SETTINGS, max_examples=15, database=None)
    @given(batches)
    def collect(case):
        day, rows = case
        for failing in pydantic_decisions(model, rows, day):
            seen["valid row" if not failing else "invalid row"] += 1
            for name in model.model_fields:
                seen[(name, name in failing)] += 1

    collect()
    for name in model.model_fields:
        assert seen[(name, True)] and seen[(name, False)], f"{name}: {seen}"
    assert seen["valid row"] and seen["invalid row"], seen


# --- fixed table: expected decisions written out -------------------------------------------------------
DAY = date(2024, 2, 29)
GOOD_EVENT = {
    "event_id": "evt-1",
    "user_id": "u_1",
    "event_type": "purchase",
    "event_time": "2024-02-29T12:00:00Z",
    "amount": "10.50",
    "category": "Home & Garden",
    "country": "US",
}
EVENT_CASES: list[tuple[dict, set[str]]] = [
    ({}, set()),
    # identifiers
    ({"user_id": ""}, {"user_id"}),
    ({"user_id": None}, {"user_id"}),
    ({"event_id": "a" * 64}, set()),
    ({"event_id": "a" * 65}, {"event_id"}),
    ({"event_id": "evt-1\n"}, {"event_id"}),
    ({"event_id": " evt-1"}, {"event_id"}),
    ({"event_id": "évt"}, {"event_id"}),
    ({"event_id": "x'; DROP TABLE events;--"}, {"event_id"}),
    ({"event_id": "_x"}, {"event_id"}),
    ({"event_id": "A:b.c_d-1"}, set()),
    # event types
    ({"event_type": "Purchase"}, {"event_type"}),
    ({"event_type": "purchase "}, {"event_type"}),
    ({"event_type": ""}, {"event_type"}),
    # timestamps
    ({"event_time": "2024-02-30T00:00:00Z"}, {"event_time"}),
    ({"event_time": "2023-02-29T00:00:00Z"}, {"event_time"}),
    ({"event_time": "2024-13-01T00:00:00Z"}, {"event_time"}),
    ({"event_time": "2024-02-29T24:00:00Z"}, {"event_time"}),
    ({"event_time": "2024-02-29T23:59:60Z"}, {"event_time"}),
    ({"event_time": "2024-02-29 12:00:00"}, set()),
    ({"event_time": "2024-02-29T12:00:00.123456Z"}, set()),
    ({"event_time": "2024-02-29T12:00:00.1234567Z"}, {"event_time"}),
    ({"event_time": "2024-02-29T12:00:00\n"}, {"event_time"}),
    ({"event_time": " 2024-02-29T12:00:00Z"}, {"event_time"}),
    ({"event_time": "٢٠٢٤-02-29T12:00:00Z"}, {"event_time"}),
    ({"event_time": "2024-02-29T00:00:00-00:00"}, set()),
    ({"event_time": "2024-02-29T00:00:00Z"}, set()),
    ({"event_time": "2024-02-29T00:00:00"}, set()),
    ({"event_time": "2024-02-29T23:59:59.999999Z"}, set()),
    ({"event_time": "2024-03-01T00:00:00Z"}, {"event_time"}),
    ({"event_time": "2024-02-28T23:59:59.999999Z"}, {"event_time"}),
    ({"event_time": "2024-03-01T00:30:00+01:00"}, set()),  # 23:30 UTC on the 29th
    ({"event_time": "2024-02-29T00:30:00+01:00"}, {"event_time"}),  # 23:30 UTC on the 28th
    ({"event_time": "2024-02-28T23:30:00-01:00"}, set()),  # 00:30 UTC on the 29th
    ({"event_time": "2024-02-29T23:59:00-23:59"}, {"event_time"}),
    ({"event_time": "2024-02-29T12:00:00+24:00"}, {"event_time"}),
    ({"event_time": ""}, {"event_time"}),
    # amounts
    ({"amount": "-1"}, {"amount"}),
    ({"amount": "0"}, set()),
    ({"amount": "-0"}, set()),
    ({"amount": "-0.0"}, set()),
    ({"amount": "1e3"}, {"amount"}),
    ({"amount": "inf"}, {"amount"}),
    ({"amount": "nan"}, {"amount"}),
    ({"amount": "NaN"}, {"amount"}),
    ({"amount": " 1"}, {"amount"}),
    ({"amount": "1."}, {"amount"}),
    ({"amount": ".5"}, {"amount"}),
    ({"amount": "1_000"}, {"amount"}),
    ({"amount": "123456789012345"}, {"amount"}),  # a plain decimal, but over 1,000,000
    ({"amount": "1234567890123456"}, {"amount"}),
    ({"amount": "1.123456789"}, set()),
    ({"amount": "1.1234567890"}, {"amount"}),
    ({"amount": "1000000"}, set()),
    ({"amount": "1000000.000000000"}, set()),
    ({"amount": "1000000.000000001"}, {"amount"}),
    ({"amount": "١٢"}, {"amount"}),
    ({"amount": ""}, set()),
    ({"amount": None}, set()),
    # labels
    ({"category": ""}, set()),
    ({"country": " US"}, {"country"}),
    ({"country": "x" * 65}, {"country"}),
    # several at once
    (
        {
            "event_id": "",
            "user_id": "a b",
            "event_type": "CLICK",
            "event_time": "2024-02-30T00:00:00Z",
            "amount": "-1",
            "category": "é",
            "country": "US\n",
        },
        {"event_id", "user_id", "event_type", "event_time", "amount", "category", "country"},
    ),
]

GOOD_USER = {
    "user_id": "u_1",
    "age": "30",
    "email": "a.b+tag@example.co.uk",
    "signup_time": "2024-02-29T12:00:00Z",
    "country": "US",
}
USER_CASES: list[tuple[dict, set[str]]] = [
    ({}, set()),
    ({"user_id": ""}, {"user_id"}),
    ({"age": "150"}, set()),
    ({"age": "151"}, {"age"}),
    ({"age": "-1"}, {"age"}),
    ({"age": "030"}, set()),
    ({"age": "-0"}, set()),
    ({"age": "1.0"}, {"age"}),
    ({"age": "9" * 40}, {"age"}),
    ({"age": "٣٠"}, {"age"}),
    ({"age": ""}, set()),
    ({"email": ""}, {"email"}),
    ({"email": "a@b"}, {"email"}),
    ({"email": "a@b.c"}, {"email"}),
    ({"email": "a@b.co\n"}, {"email"}),
    ({"email": "a" * 243 + "@example.com"}, {"email"}),
    ({"email": "a" * 242 + "@example.com"}, set()),
    ({"signup_time": "1999-12-31T23:59:59Z"}, {"signup_time"}),
    ({"signup_time": "1999-12-31T23:59:59.999999Z"}, {"signup_time"}),
    ({"signup_time": "2000-01-01T00:00:00Z"}, set()),
    ({"signup_time": "2099-12-31T23:59:59.999999Z"}, set()),
    ({"signup_time": "1999-12-31T23:30:00-01:00"}, set()),  # 00:30 UTC on 2000-01-01
    ({"signup_time": "2100-01-01T00:00:00Z"}, {"signup_time"}),
    ({"signup_time": "2100-01-01T00:30:00+01:00"}, set()),  # 23:30 UTC on 2099-12-31
    ({"signup_time": "1900-01-01T00:00:00Z"}, {"signup_time"}),
    ({"signup_time": "0000-01-01T00:00:00Z"}, {"signup_time"}),
    ({"signup_time": "9999-12-31T00:00:00Z"}, {"signup_time"}),
    ({"signup_time": "2100-02-29T00:00:00Z"}, {"signup_time"}),
    ({"signup_time": "2000-02-29T00:00:00Z"}, set()),
    ({"signup_time": "2023-06-01T12:00:00Z"}, set()),  # no partition for users
    ({"signup_time": "2023-06-01T24:00:00Z"}, {"signup_time"}),
    ({"signup_time": "2023-06-01t12:00:00Z"}, {"signup_time"}),
    ({"signup_time": "2023-06-01T12:00:00.1234567Z"}, {"signup_time"}),
]


@pytest.mark.parametrize(
    "model, good, cases, day", [(Event, GOOD_EVENT, EVENT_CASES, DAY), (User, GOOD_USER, USER_CASES, None)]
)
def test_fixed_nasty_rows(model, good, cases, day):
    rows = [{**good, **change} for change, _ in cases]
    expected = [frozenset(fields) for _, fields in cases]
    reference = pydantic_decisions(model, rows, day)
    vectorized = vectorized_decisions(model, rows, day)
    for (change, _), want, ref, vec in zip(cases, expected, reference, vectorized, strict=True):
        assert ref == want, f"pydantic: {change!r} -> {set(ref)}, expected {set(want)}"
        assert vec == want, f"vectorized: {change!r} -> {set(vec)}, expected {set(want)}"
