"""The real training-data samples the LLM benchmarks read (../shared/data/llm): where they are, and their messages."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OASST = DATA / "llm" / "oasst2_trees.jsonl"
HH = DATA / "llm" / "hh_rlhf_harmless_test.jsonl.gz"
# A turn of an HH-RLHF transcript starts with one of these.
TURN = re.compile(r"\n\n(?:Human|Assistant): ")


def require_data() -> None:
    missing = [p for p in (OASST, HH) if not p.is_file()]
    if missing:
        sys.exit(
            f"error: real data missing: {', '.join(str(p) for p in missing)}\n"
            f"The benchmark reads the shared data sets from {DATA} (../shared/data beside the checkout)."
        )


def messages(message: dict) -> Iterator[dict]:
    """An OASST message and every reply below it, depth first."""
    yield message
    for reply in message.get("replies") or []:
        yield from messages(reply)
