"""Loading documents from a folder: ids, titles, hashes, safe walking, skip reasons, HTML conversion."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from ai_pipeline.lib.rag.documents import (
    Document,
    Skipped,
    documents_frame,
    html_to_markdown,
    index_drift,
    load_documents,
)

MTIME = datetime(2024, 5, 17, 8, 30, 15, 123456, tzinfo=UTC)


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    ns = int(MTIME.timestamp()) * 1_000_000_000 + MTIME.microsecond * 1000
    os.utime(path, ns=(ns, ns))
    return path


def test_loads_markdown_text_and_html_from_nested_folders(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    md = write(root / "guide.md", "Intro line\n\n# The Guide\n\n## Part\n\nBody.\n")
    txt = write(root / "notes" / "todo.txt", b"\xef\xbb\xbfBuy milk.\n")  # BOM
    html = write(root / "notes" / "deep" / "page.html", "<h2>Sub</h2><h1>Page &amp; Title</h1><p>Hi</p>")
    write(root / "b" / "no_h1.md", "## Only a section\n\ntext\n")
    write(root / "b" / "setext.markdown", "Setext Title\n============\n\ntext\n")
    write(root / "b" / "front.md", "---\ndescription: Not a title.\n---\n\nBody only.\n")

    documents, skipped = load_documents(root, "kb")

    assert skipped == []
    assert [d.doc_id for d in documents] == [
        "kb:b/front.md",
        "kb:b/no_h1.md",
        "kb:b/setext.markdown",
        "kb:guide.md",
        "kb:notes/deep/page.html",
        "kb:notes/todo.txt",
    ]
    by_path = {d.path: d for d in documents}
    guide = by_path["guide.md"]
    assert guide == Document(
        doc_id="kb:guide.md",
        source="kb",
        path="guide.md",
        title="The Guide",
        text="Intro line\n\n# The Guide\n\n## Part\n\nBody.\n",
        content_hash=hashlib.sha256(md.read_bytes()).hexdigest(),
        updated_at=MTIME,
        size=len(md.read_bytes()),
        kind="markdown",
    )
    todo = by_path["notes/todo.txt"]
    assert (todo.text, todo.title, todo.kind, todo.size) == ("Buy milk.\n", "todo", "text", 13)
    assert todo.content_hash == hashlib.sha256(txt.read_bytes()).hexdigest()  # of the raw bytes, BOM included
    page = by_path["notes/deep/page.html"]
    assert (page.title, page.kind) == ("Page & Title", "html")  # the h1, not the first heading
    assert page.text == "## Sub\n\n# Page & Title\n\nHi\n"
    assert page.content_hash == hashlib.sha256(html.read_bytes()).hexdigest()
    assert by_path["b/no_h1.md"].title == "no_h1"  # an H2 is a section, not a title
    assert by_path["b/setext.markdown"].title == "Setext Title"
    assert by_path["b/front.md"].title == "front"  # front matter is not a setext heading
    assert all(d.updated_at == MTIME and d.updated_at.tzinfo is not None for d in documents)


def test_symlinks_are_reported_and_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside / "secret.md", "# SECRET\n")
    write(outside / "inner" / "also_secret.md", "SECRET too\n")
    root = tmp_path / "root"
    write(root / "real.md", "# Real\n")
    (root / "link.md").symlink_to(outside / "secret.md")  # absolute, to a file outside
    (root / "escape.md").symlink_to(Path("..") / "outside" / "secret.md")  # relative "../" escape
    (root / "linked_dir").symlink_to(outside, target_is_directory=True)
    (root / "sub").mkdir()
    (root / "sub" / "up").symlink_to(Path(".."), target_is_directory=True)  # a loop back to the root
    (root / "inside_link.md").symlink_to(root / "real.md")  # even a link inside the root is not followed

    documents, skipped = load_documents(root, "s")

    assert [d.path for d in documents] == ["real.md"]
    assert skipped == [
        Skipped("escape.md", "symlink (not followed)"),
        Skipped("inside_link.md", "symlink (not followed)"),
        Skipped("link.md", "symlink (not followed)"),
        Skipped("linked_dir", "symlink to a directory (not followed)"),
        Skipped("sub/up", "symlink to a directory (not followed)"),
    ]
    assert all("SECRET" not in d.text and ".." not in d.path for d in documents)


def test_unreadable_files_are_skipped_with_reasons(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root / "binary.md", b"# looks like text\x00\x01\x02")
    write(root / "latin1.txt", "café".encode("latin-1"))
    write(root / "big.md", b"x" * 101)
    write(root / "exact.md", b"y" * 100)
    write(root / "report.pdf", b"%PDF-1.4")
    write(root / "Makefile", b"all:\n")
    write(root / "nested" / "image.PNG", b"\x89PNG")

    documents, skipped = load_documents(root, "s", max_bytes=100)

    assert [(d.path, d.text) for d in documents] == [("exact.md", "y" * 100)]
    assert skipped == [
        Skipped("Makefile", "unsupported extension (none)"),
        Skipped("big.md", "larger than 100 bytes (101)"),
        Skipped("binary.md", "binary content (NUL byte at offset 17)"),
        Skipped("latin1.txt", "not UTF-8 (byte 0xe9 at offset 3)"),
        Skipped("nested/image.PNG", "unsupported extension .png"),
        Skipped("report.pdf", "unsupported extension .pdf"),
    ]


def test_suffixes_are_configurable_and_case_insensitive(tmp_path: Path) -> None:
    write(tmp_path / "A.MD", "# Upper\n")
    write(tmp_path / "b.txt", "text\n")
    documents, skipped = load_documents(tmp_path, "s", suffixes=(".md",))
    assert [(d.path, d.kind, d.title) for d in documents] == [("A.MD", "markdown", "Upper")]
    assert skipped == [Skipped("b.txt", "unsupported extension .txt")]


def test_hidden_files_and_folders_are_ignored_silently(tmp_path: Path) -> None:
    write(tmp_path / ".hidden.md", "# Hidden\n")
    write(tmp_path / ".git" / "notes.md", "# In git\n")
    write(tmp_path / "docs" / ".cache" / "page.bin", b"\x00")
    write(tmp_path / "docs" / "visible.md", "# Visible\n")
    documents, skipped = load_documents(tmp_path, "s")
    assert [d.path for d in documents] == ["docs/visible.md"]
    assert skipped == []


def test_missing_or_non_directory_root_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ValueError, match=f"{missing} does not exist"):
        load_documents(missing, "s")
    file = write(tmp_path / "file.md", "# x\n")
    with pytest.raises(ValueError, match=f"{file} is not a directory"):
        load_documents(file, "s")


def test_root_given_through_dot_dot_still_gives_relative_ids(tmp_path: Path) -> None:
    write(tmp_path / "root" / "a.md", "a\n")
    (tmp_path / "root" / "sub").mkdir()
    documents, skipped = load_documents(tmp_path / "root" / "sub" / "..", "s")
    assert ([d.doc_id for d in documents], skipped) == (["s:a.md"], [])


def test_html_is_converted_to_markdown_like_text() -> None:
    html = """<html><head><title>Ignored</title><style>h1 { color: red }</style></head><body>
    <h1>Main <code>title</code></h1>
    <p>Hello &amp; <b>world</b>,
       spread over lines.</p>
    <script>alert("dropped")</script>
    <h3>Code</h3>
    <pre><code class="language-python">def f():
    # not a heading
    return 1
</code></pre>
    <ul><li>one</li><li><p>two</p><ul><li>nested</li></ul></li></ul>
    <table><tr><th>Name</th><th>a|b</th></tr><tr><td>x</td><td>1</td></tr><tr><td>y</td></tr></table>
    <!-- a comment -->
    </body></html>"""
    assert html_to_markdown(html) == (
        "# Main `title`\n\n"
        "Hello & world, spread over lines.\n\n"
        "### Code\n\n"
        "```python\ndef f():\n    # not a heading\n    return 1\n```\n\n"
        "- one\n- two\n  - nested\n\n"
        "| Name | a\\|b |\n| --- | --- |\n| x | 1 |\n| y |  |\n"
    )


def test_documents_frame_has_one_typed_row_per_document(tmp_path: Path) -> None:
    write(tmp_path / "z.md", "# Z\n")
    write(tmp_path / "a.txt", "a\n")
    documents, _ = load_documents(tmp_path, "s")
    frame = documents_frame(list(reversed(documents)))
    assert frame.schema == pl.Schema(
        {
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
    )
    assert frame["doc_id"].to_list() == ["s:a.txt", "s:z.md"]
    assert frame["updated_at"].to_list() == [MTIME, MTIME]
    assert frame["title"].to_list() == ["a", "Z"]
    assert documents_frame([]).height == 0


def _doc(doc_id: str, content_hash: str, updated_at: datetime) -> Document:
    return Document(doc_id, "s", doc_id, doc_id, "text", content_hash, updated_at, 4, "text")


def test_index_drift_names_changed_new_and_deleted_and_leaves_fresh_changes_in_their_grace():
    old, new = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)
    current = [_doc("a", "h1", old), _doc("b", "h2-new", old), _doc("c", "h3", old), _doc("d", "h4", new)]
    indexed = {"a": "h1", "b": "h2", "gone": "h5", "d": "h4-old"}
    drift = index_drift(current, indexed)
    assert (drift.changed, drift.added, drift.deleted) == (["b", "d"], ["c"], ["gone"])
    assert drift.stale == ["b", "d", "c", "gone"]
    graced = index_drift(current, indexed, modified_before=new)
    assert (graced.changed, graced.added, graced.deleted) == (["b"], ["c"], ["gone"])
