"""The embedder with the real all-MiniLM-L6-v2 (loaded once for the module), and the cache helpers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ai_pipeline.lib.rag.embedding import DIMENSION, MODEL_NAME, Embedder, model_path

# The slow tier (not in `make test-fast`): the embedding model.
pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parents[1]

TEXTS = [
    "Dagster schedules the daily job that rebuilds the feature tables.",
    "The cat slept on the warm windowsill all afternoon.",
    "Embeddings map each chunk of text to a vector of 384 numbers.",
    "Customers in Germany placed more orders in December than in any other month.",
    "Chroma stores the vectors and answers nearest-neighbour queries.",
]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    embedder = Embedder(batch_size=2)
    embedder.embed(["warm up"])  # loads the model once for the module
    return embedder


def test_model_ships_with_the_package() -> None:
    assert (model_path() / "config.json").is_file()
    assert (model_path() / "model.safetensors").is_file()
    assert Embedder.name == MODEL_NAME == "sentence-transformers/all-MiniLM-L6-v2"
    assert Embedder.dimension == DIMENSION == 384


def test_vectors_are_unit_float32_rows_in_order(embedder: Embedder) -> None:
    vectors = embedder.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert len({row.tobytes() for row in vectors}) == len(TEXTS)  # distinct texts, distinct rows
    reversed_ = embedder.embed(TEXTS[::-1])
    np.testing.assert_allclose(reversed_[::-1], vectors, atol=1e-5)  # row i belongs to text i


def test_deterministic_across_calls_and_instances(embedder: Embedder) -> None:
    first = embedder.embed(TEXTS)
    assert np.array_equal(first, embedder.embed(TEXTS))
    other = Embedder(batch_size=64)
    np.testing.assert_allclose(other.embed(TEXTS), first, atol=1e-5)


def test_batch_and_single_agree(embedder: Embedder) -> None:
    together = Embedder(batch_size=len(TEXTS)).embed(TEXTS)
    for text, row in zip(TEXTS, together, strict=True):
        single = embedder.embed_query(text)
        assert single.shape == (384,) and single.dtype == np.float32
        np.testing.assert_allclose(single, row, atol=1e-5)


def test_progress_is_reported_per_batch(embedder: Embedder) -> None:
    calls: list[tuple[int, int]] = []
    embedder.embed(TEXTS, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(2, 5), (4, 5), (5, 5)]
    calls.clear()
    Embedder(batch_size=64).embed(TEXTS, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(5, 5)]


def test_similar_sentences_score_higher_than_unrelated(embedder: Embedder) -> None:
    anchor, paraphrase, unrelated = embedder.embed(
        [
            "How do I reset my account password?",
            "I forgot my password and need to change it.",
            "The recipe calls for two cups of flour and an egg.",
        ]
    )
    assert anchor @ paraphrase > 0.5
    assert anchor @ unrelated < 0.2
    assert anchor @ paraphrase > anchor @ unrelated + 0.3


def test_empty_input() -> None:
    embedder = Embedder()
    empty = embedder.embed([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32
    assert embedder._model is None  # nothing to embed, nothing loaded
    with pytest.raises(TypeError):
        embedder.embed("a single string is not a list of texts")


def test_import_is_light() -> None:
    """Importing the module (as the Dagster code location does) loads neither torch nor sentence-transformers."""
    code = (
        "import sys; import ai_pipeline.lib.rag.embedding as e; e.model_path(); e.Embedder(); "
        "print([m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


def test_onnx_backends_agree_with_torch_and_do_not_depend_on_the_batch(embedder: Embedder, model_cache) -> None:
    reference = embedder.embed(TEXTS)
    int8 = Embedder(backend="onnx-int8", cache=model_cache, batch_size=2)  # first: it exports onnx on its way
    vectors = int8.embed(TEXTS)
    onnx = Embedder(backend="onnx", cache=model_cache)
    np.testing.assert_allclose(onnx.embed(TEXTS), reference, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    agreement = (vectors * reference).sum(axis=1)
    assert agreement.min() > 0.97 and agreement.mean() > 0.99, agreement
    assert not np.allclose(vectors, reference, atol=1e-3)  # really the quantized model
    # A vector is a function of the text: alone, in another batch or in another order, the same bits.
    assert all(np.array_equal(int8.embed_query(text), row) for text, row in zip(TEXTS, vectors, strict=True))
    assert np.array_equal(Embedder(backend="onnx-int8", cache=model_cache).embed(TEXTS[::-1])[::-1], vectors)


def test_export_is_cached_and_shared_by_concurrent_processes(model_cache) -> None:
    from ai_pipeline.lib.rag.embedding import export

    first = export("onnx-int8", model_cache)
    stamp = first.stat().st_mtime_ns
    assert export("onnx-int8", model_cache) == first and first.stat().st_mtime_ns == stamp  # reused, not redone
    assert sorted(p.name for p in first.parent.glob("*.onnx")) == ["onnx-int8.onnx", "onnx.onnx"]
    # Two processes exporting into one empty cache at once: one exports, the other waits and reuses its file.
    cache = model_cache / "concurrent"
    code = (
        "import sys; from pathlib import Path; from ai_pipeline.lib.rag.embedding import export; "
        "print(export('onnx', Path(sys.argv[1])))"
    )
    runs = [
        subprocess.Popen([sys.executable, "-c", code, str(cache)], stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = [run.communicate(timeout=300)[0].strip() for run in runs]
    assert all(run.returncode == 0 for run in runs) and outputs[0] == outputs[1]
    assert [p.name for p in Path(outputs[0]).parent.iterdir() if not p.name.startswith(".")] == ["onnx.onnx"]


def test_unknown_backend_and_missing_cache_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown embedding backend 'tensorrt'"):
        Embedder(backend="tensorrt")
    with pytest.raises(ValueError, match="needs a cache folder"):
        Embedder(backend="onnx")
