"""Document files under a root folder -> `Document`s (the input of chunking), plus a report of what was skipped.

Loading is safe by construction: the root is walked (sorted, so the same tree always loads in the same order)
without following any symlink, files are opened with O_NOFOLLOW and re-checked with fstat, and a path that
resolves outside the root is never opened. What is not loaded is reported as a `Skipped` with a reason that a
person can act on, except hidden files and folders (names starting with "."), which are ignored silently: they
are tool state (.git, .cache, .DS_Store), not documents. Files with a suffix that is not loaded ARE reported
("unsupported extension .pdf"): a PDF or .rst file in a docs folder is most likely something the user expected
to be searchable, and a silent gap in a knowledge base is found much later than a line in a report.

The size limit is decided on fstat's size, before reading. Binary files (a NUL byte in the first 8 KB) and
files that are not UTF-8 are skipped, not decoded with replacement characters: mojibake in an index is worse
than a file reported as unreadable. A UTF-8 byte order mark is stripped.

HTML is converted to Markdown-like text with the standard library's `html.parser` (no extra dependency), so
chunking treats it like Markdown: h1-h6 -> "#" headings, <pre> -> fenced code, <p>/<div>/<li> -> paragraphs
and list lines, <table> rows -> pipe rows with a separator after the first row; <script>, <style> and the
<head> are dropped. It is a cheap conversion for documentation pages, not a browser.

The title is the document's first level-1 heading (ATX or setext; for HTML the first <h1>), else the file
stem. A lower-level heading is not used as a title: in real documentation sets (the pydantic docs, for one)
most pages have no H1 and their first heading is a section ("Field validators"), which as a title would be
prefixed to every other section's heading path.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatch
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath

import polars as pl
from markdown_it import MarkdownIt

DEFAULT_SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm")
SUFFIX_KINDS = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".html": "html", ".htm": "html"}
BINARY_PROBE = 8192  # bytes searched for a NUL byte, as git and grep do
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Document:
    doc_id: str  # "<source>:<posix path relative to the root>"
    source: str
    path: str  # posix, relative to the root
    title: str
    text: str  # UTF-8 decoded, BOM stripped; HTML converted to Markdown-like text
    content_hash: str  # sha256 hex of the raw bytes
    updated_at: datetime  # file mtime, UTC
    size: int  # bytes
    kind: str  # "markdown" | "text" | "html"


@dataclass(frozen=True)
class Skipped:
    path: str  # posix, relative to the root
    reason: str


def load_documents(
    root: Path,
    source: str,
    *,
    max_bytes: int = 1_000_000,
    suffixes: tuple[str, ...] = DEFAULT_SUFFIXES,
    include: tuple[str, ...] = ("*",),
) -> tuple[list[Document], list[Skipped]]:
    """Every loadable file under `root` as a Document, and every other non-hidden entry as a Skipped.

    `include` holds `fnmatch` patterns on the path relative to the root (`*` also matches `/`): entries that
    match none are not part of the source and are neither loaded nor reported.
    """
    root = Path(root)
    if not root.exists():
        raise ValueError(f"document root {root} does not exist")
    if not root.is_dir():
        raise ValueError(f"document root {root} is not a directory")
    real_root = root.resolve()
    wanted = {s.lower() for s in suffixes}
    documents: list[Document] = []
    skipped: list[Skipped] = []

    for rel, path, entry in _walk(root, include, skipped):
        name = rel.as_posix()
        if entry.is_symlink():
            what = "symlink to a directory" if path.is_dir() else "symlink"
            skipped.append(Skipped(name, f"{what} (not followed)"))
        elif not entry.is_file(follow_symlinks=False):
            skipped.append(Skipped(name, "not a regular file"))
        elif (suffix := PurePosixPath(entry.name).suffix.lower()) not in wanted:
            skipped.append(Skipped(name, f"unsupported extension {suffix or '(none)'}"))
        else:
            loaded = _load_file(path, rel, real_root, source, max_bytes, SUFFIX_KINDS.get(suffix, "text"))
            (documents if isinstance(loaded, Document) else skipped).append(loaded)
    return documents, skipped


def _walk(
    root: Path, include: tuple[str, ...], skipped: list[Skipped]
) -> Iterator[tuple[PurePosixPath, Path, os.DirEntry]]:
    """Non-hidden entries under `root` (folders entered, never through links) whose path matches `include`,
    in sorted order; a folder that cannot be listed is reported in `skipped` (the root itself raises)."""

    def walk(folder: Path, relative: PurePosixPath) -> Iterator[tuple[PurePosixPath, Path, os.DirEntry]]:
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            if not relative.parts:
                raise ValueError(f"document root {root} cannot be listed ({exc.strerror})") from exc
            skipped.append(Skipped(relative.as_posix(), f"folder cannot be listed ({exc.strerror})"))
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel, path = relative / entry.name, folder / entry.name
            if entry.is_dir(follow_symlinks=False):
                yield from walk(path, rel)
            elif any(fnmatch(rel.as_posix(), pattern) for pattern in include):
                yield rel, path, entry

    yield from walk(Path(root), PurePosixPath())


def fingerprint(root: Path, include: tuple[str, ...] = ("*",)) -> str:
    """A digest of the names, sizes and modification times of what `load_documents` would look at: it changes
    when a file is added, removed, renamed or rewritten, without reading any content."""
    digest = hashlib.sha256()
    for rel, _, entry in _walk(root, include, []):
        info = entry.stat(follow_symlinks=False)
        digest.update(f"{rel.as_posix()}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _load_file(
    path: Path, rel: PurePosixPath, real_root: Path, source: str, max_bytes: int, kind: str
) -> Document | Skipped:
    name = rel.as_posix()
    if not path.resolve().is_relative_to(real_root):
        return Skipped(name, f"resolves outside the root ({path.resolve()})")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:  # a symlink swapped in after the walk (ELOOP), or no permission
        return Skipped(name, f"cannot be opened ({exc.strerror})")
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            return Skipped(name, "not a regular file")
        if info.st_size > max_bytes:
            return Skipped(name, f"larger than {max_bytes} bytes ({info.st_size})")
        raw = handle.read(max_bytes + 1)
    if len(raw) > max_bytes:  # it grew after fstat
        return Skipped(name, f"larger than {max_bytes} bytes (more than {max_bytes} read)")
    nul = raw.find(b"\0", 0, BINARY_PROBE)
    if nul >= 0:
        return Skipped(name, f"binary content (NUL byte at offset {nul})")
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        return Skipped(name, f"not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})")
    if kind == "html":
        text = html_to_markdown(text)
    title = markdown_title(text) if kind in ("markdown", "html") else None
    return Document(
        doc_id=f"{source}:{name}",
        source=source,
        path=name,
        title=title or path.stem,
        text=text,
        content_hash=hashlib.sha256(raw).hexdigest(),
        updated_at=_EPOCH + timedelta(microseconds=info.st_mtime_ns // 1000),
        size=len(raw),
        kind=kind,
    )


@dataclass(frozen=True)
class IndexDrift:
    """How an index (document id -> content hash it was built from) differs from the source's documents now."""

    changed: list[str]
    added: list[str]  # in the source, not in the index (or indexed without chunks)
    deleted: list[str]  # in the index, gone from the source

    @property
    def stale(self) -> list[str]:
        return self.changed + self.added + self.deleted


def index_drift(
    current: list[Document], indexed: dict[str, str], *, modified_before: datetime | None = None
) -> IndexDrift:
    """The documents an index does not reflect. With `modified_before`, changed and added documents modified at
    or after it are left out (still within their grace period); a deletion has no time and always counts."""
    hashes = {d.doc_id: d.content_hash for d in current}
    due = {d.doc_id for d in current if modified_before is None or d.updated_at < modified_before}
    return IndexDrift(
        changed=sorted(d for d in hashes.keys() & indexed.keys() & due if hashes[d] != indexed[d]),
        added=sorted((hashes.keys() - indexed.keys()) & due),
        deleted=sorted(indexed.keys() - hashes.keys()),
    )


def documents_frame(documents: list[Document]) -> pl.DataFrame:
    """One row per document, sorted by doc_id."""
    schema = {
        "doc_id": pl.String,
        "source": pl.String,
        "path": pl.String,
        "title": pl.String,
        "text": pl.String,
        "content_hash": pl.String,
        "updated_at": pl.Datetime("us", "UTC"),
        "size": pl.Int64,
        "kind": pl.String,
    }
    rows = {name: [getattr(d, name) for d in documents] for name in schema}
    return pl.DataFrame(rows, schema=schema).sort("doc_id")


# --- Markdown helpers shared with chunking -------------------------------------------------------------------

# Block structure only: inline parsing (emphasis, links) is half of markdown-it's time and only headings need it.
MARKDOWN = MarkdownIt("commonmark").enable("table").disable("inline")
_INLINE = MarkdownIt("commonmark")
_ATTR_LIST = re.compile(r"\s*\{\s*[#.:][^}]*\}\s*$")  # MkDocs "## Title {#anchor}"
_YAML_KEY = re.compile(r"[A-Za-z_][\w-]*\s*:")
_REF_LINK = re.compile(r"\[([^\]]*)\]\[[^\]]*\]")  # "[text][ref]" left as text when the ref is not defined


def heading_text(source: str) -> str:
    """The plain text of a heading's Markdown: markup dropped, code spans kept as text, "{#anchor}" removed."""
    children = [c for token in _INLINE.parseInline(source) for c in token.children or []]
    text = "".join(
        c.content if c.type in ("text", "code_inline") else (" " if c.type in ("softbreak", "hardbreak") else "")
        for c in children
    )
    text = _REF_LINK.sub(r"\1", _ATTR_LIST.sub("", text))
    return " ".join(text.split())


def front_matter_lines(lines: list[str]) -> int:
    """How many leading lines are YAML front matter ("---" ... "---"/"..."), 0 when there is none."""
    if len(lines) < 3 or lines[0].rstrip() != "---" or not _YAML_KEY.match(lines[1]):
        return 0  # a leading "---" that is a thematic break
    for i in range(1, min(len(lines), 200)):
        if lines[i].rstrip() in ("---", "..."):
            return i + 1
    return 0


def markdown_title(text: str) -> str | None:
    """The plain text of the first level-1 heading outside code, lists and quotes, if any."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    skip = front_matter_lines(lines)
    tokens = MARKDOWN.parse("\n" * skip + "\n".join(lines[skip:]))
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and token.level == 0 and token.tag == "h1":
            title = heading_text(tokens[i + 1].content)
            if title:
                return title
    return None


# --- HTML -> Markdown-like text ------------------------------------------------------------------------------

_BLOCK_TAGS = {
    "p", "div", "section", "article", "header", "footer", "main", "nav", "aside", "blockquote", "figure",
    "figcaption", "dl", "dt", "dd", "ul", "ol", "hr", "details", "summary", "form", "body", "html",
}  # fmt: skip
_DROPPED = {"script", "style", "head", "noscript", "template", "svg"}


class _HtmlToMarkdown(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[tuple[str, bool]] = []  # (text, is a list item): items are joined by one newline
        self.inline: list[str] = []  # text of the current paragraph / heading / list line
        self.prefix = ""  # "## " or "- " for the current line
        self.item = False  # the current line is a list item
        self.heading: int = 0
        self.dropped = 0  # depth inside script/style/head
        self.pre: list[str] | None = None
        self.pre_lang = ""
        self.lists: list[list[int]] = []  # per open list: [item counter], -1 for unordered
        self.table: list[list[str]] | None = None
        self.cell: list[str] | None = None

    def flush(self, end: bool = False) -> None:
        """The current paragraph, heading or list item -> a block. A block tag inside an empty item (<li><p>)
        keeps the item's "- " for the text to come; the end of the heading or item always resets it."""
        text = " ".join("".join(self.inline).split())
        if text:
            indent = "  " * max(0, len(self.lists) - 1) if self.item else ""
            self.blocks.append((indent + self.prefix + text, self.item))
        if text or end:
            self.inline, self.prefix, self.heading, self.item = [], "", 0, False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROPPED:
            self.dropped += 1
        if self.dropped:
            return
        if self.pre is not None:
            if tag == "code" and not self.pre_lang:
                self.pre_lang = _language(attrs)
            return
        if self.table is not None and tag in ("tr", "td", "th"):
            if tag == "tr":
                self.table.append([])
            else:
                self.cell = []
            return
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self.flush()
            self.heading = int(tag[1])
            self.prefix = "#" * self.heading + " "
        elif tag == "pre":
            self.flush()
            self.pre, self.pre_lang = [], _language(attrs)
        elif tag == "table":
            self.flush()
            self.table = []
        elif tag in ("ul", "ol"):
            self.flush()
            self.lists.append([0 if tag == "ol" else -1])
        elif tag == "li":
            self.flush()
            counter = self.lists[-1] if self.lists else [-1]
            if counter[0] >= 0:
                counter[0] += 1
            self.prefix = f"{counter[0]}. " if counter[0] >= 0 else "- "
            self.item = True
        elif tag == "br":
            self.flush()
        elif tag == "code":
            self.text("`")
        elif tag in _BLOCK_TAGS:
            self.flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROPPED:
            self.dropped = max(0, self.dropped - 1)
            return
        if self.dropped:
            return
        if self.pre is not None:
            if tag == "pre":
                code = "".join(self.pre).strip("\n")
                fence = "`" * max(3, _longest_backtick_run(code) + 1)
                self.blocks.append((f"{fence}{self.pre_lang}\n{code}\n{fence}", False))
                self.pre = None
            return
        if self.table is not None:
            if tag in ("td", "th") and self.cell is not None:
                if not self.table:
                    self.table.append([])
                self.table[-1].append(" ".join("".join(self.cell).split()).replace("|", "\\|"))
                self.cell = None
            elif tag == "table":
                if any(self.table):
                    self.blocks.append((_pipe_table(self.table), False))
                self.table = None
            return
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6", "li"):
            self.flush(end=True)
        elif tag in ("ul", "ol"):
            self.flush(end=True)
            if self.lists:
                self.lists.pop()
        elif tag == "code":
            self.text("`")
        elif tag in _BLOCK_TAGS:
            self.flush()

    def handle_data(self, data: str) -> None:
        if self.dropped:
            return
        if self.pre is not None:
            self.pre.append(data)
        elif self.cell is not None:
            self.cell.append(data)
        elif self.table is None:
            self.text(data)

    def text(self, data: str) -> None:
        self.inline.append(data)

    def result(self) -> str:
        if self.pre is not None:  # an unclosed <pre>
            self.handle_endtag("pre")
        if self.table is not None:
            self.handle_endtag("table")
        self.flush(end=True)
        out = ""
        for i, (text, item) in enumerate(self.blocks):
            out += ("" if i == 0 else "\n" if item and self.blocks[i - 1][1] else "\n\n") + text
        return out + "\n" if out else ""


def _language(attrs: list[tuple[str, str | None]]) -> str:
    for name, value in attrs:
        if name == "class" and value:
            for cls in value.split():
                if cls.startswith(("language-", "lang-")):
                    return cls.split("-", 1)[1]
    return ""


def _longest_backtick_run(text: str) -> int:
    return max((len(m) for m in re.findall(r"`+", text)), default=0)


def _pipe_table(rows: list[list[str]]) -> str:
    rows = [r for r in rows if r]
    width = max(len(r) for r in rows)
    lines = ["| " + " | ".join(r + [""] * (width - len(r))) + " |" for r in rows]
    lines.insert(1, "|" + " --- |" * width)
    return "\n".join(lines)


def html_to_markdown(html: str) -> str:
    """HTML -> Markdown-like text (see the module docstring)."""
    parser = _HtmlToMarkdown()
    parser.feed(html)
    parser.close()
    return parser.result()
