"""Nested records: a JSON line that holds a tree of messages becomes one raw row per message.

A conversation export (OpenAssistant's shape) has one tree a line: the root message under a key (`prompt`), each
message's replies under another (`replies`), recursively. `flatten_trees` walks each tree depth first (a reply after
its parent, siblings in file order) and gives every message a flat record: nested objects become dotted keys
(`labels.quality.value`), lists become JSON text, and the tree's own fields named in `inherit` are copied onto every
message (a message's own non-null value wins).

Counted independently of the walk: each tree holds as many messages as it has `"<id>":` keys, found by a regex over
its line's text (in JSON an unescaped quote can only delimit a key or a value, and a key follows `{` or `,`). A line
that cannot be read as a tree (not JSON, no message, a reply that is not an object) yields one row, its read error,
and counts as one: the line is quarantined whole, with its text.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal

from ai_pipeline.lib.ingest.formats import Records, TreeShape, printable, records_frame
from ai_pipeline.lib.ingest.raw import text_value

MAX_DEPTH = 3  # nested objects deeper than this stay JSON text


def _dotted(value: dict, prefix: str = "", depth: int = 1) -> dict[str, str | None]:
    flat: dict[str, str | None] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict) and depth < MAX_DEPTH:
            flat |= _dotted(item, f"{name}.", depth + 1)
        else:
            flat[name] = text_value(item)
    return flat


def counted_messages(line: str, shape: TreeShape) -> int:
    """Messages in one tree's line of text, by its id keys."""
    return len(re.findall(rf'[{{,]\s*"{re.escape(shape.id)}"\s*:', line))


def _walk(message: object, shape: TreeShape) -> tuple[list[dict], str | None]:
    """The tree's messages depth first, each without its replies; an error when the structure is not a tree."""
    found, stack = [], [message]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            return found, f"a message is a JSON {type(node).__name__}, not an object"
        replies = node.get(shape.children) or []
        if not isinstance(replies, list):
            return found, f"'{shape.children}' is a JSON {type(replies).__name__}, not a list"
        found.append({k: v for k, v in node.items() if k != shape.children})
        stack.extend(reversed(replies))
    return found, None


def flatten_trees(records: Records, shape: TreeShape, uri: str) -> Records:
    """`records` as read line by line (JSON Lines) -> one record per message (module docstring).

    The first message of a line carries the line's span; the others span 0 lines, so the line accounting
    (`Records.unaccounted`) still holds. `Records.counted` is the independent message count."""
    rows: list[dict[str, str | None]] = []
    offsets, spans, errors, raws, counted = [], [], [], [], 0
    for offset, span, error, raw in zip(
        records.offsets, records.spans, records.read_errors, records.raw_json, strict=True
    ):
        messages: list[dict] = []
        if error is None:
            tree = json.loads(raw, parse_float=Decimal)
            root = tree.get(shape.root) if shape.root else tree
            if root is None:
                error = f"{uri} line {offset}: no message under '{shape.root}'"
            else:
                messages, problem = _walk(root, shape)
                if problem:
                    messages, error = [], f"{uri} line {offset}: {problem}"
        if error is not None:
            counted += 1
            rows.append({})
            offsets.append(offset)
            spans.append(span)
            errors.append(error)
            raws.append(raw)
            continue
        counted += counted_messages(raw, shape)
        inherited = {key: text_value(tree.get(key)) for key in shape.inherit}
        for index, message in enumerate(messages):
            flat = _dotted(message)
            rows.append(flat | {k: v for k, v in inherited.items() if flat.get(k) is None})
            offsets.append(offset)
            spans.append(span if index == 0 else 0)
            errors.append(None)
            raws.append(printable(json.dumps(message, ensure_ascii=False, default=text_value)))
    names, frame = records_frame(rows)
    return Records(
        names,
        frame,
        offsets,
        spans,
        errors,
        raws,
        records.lines,
        header_lines=records.header_lines,
        blank_lines=records.blank_lines,
        counted=counted,
    )
