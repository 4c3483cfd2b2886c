"""Population stability index (PSI) of each numeric feature against a reference sample from the past.

Bins are the reference's deciles (deduplicated, so a feature with many ties gets fewer bins), open at both
ends so that new extremes land in the outer bins. Empty bins get a floor of `EPSILON` so the logarithm stays
finite. Nulls are left out (the null-rate check watches them).

Thresholds are the industry convention (Siddiqi, "Credit Risk Scorecards"; also Evidently's default):
below 0.1 no significant shift, 0.1-0.25 a moderate shift worth a look, above 0.25 a major shift.
Below `MIN_SAMPLES` values on either side PSI is too noisy to judge, and the verdict is "not enough data".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

BINS = 10
EPSILON = 1e-4
MIN_SAMPLES = 100
WARN_PSI = 0.1
ERROR_PSI = 0.25


def psi(reference: np.ndarray, current: np.ndarray, bins: int = BINS) -> float:
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref = np.bincount(np.searchsorted(edges, reference, side="left"), minlength=edges.size + 1) / reference.size
    cur = np.bincount(np.searchsorted(edges, current, side="left"), minlength=edges.size + 1) / current.size
    ref, cur = np.maximum(ref, EPSILON), np.maximum(cur, EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


@dataclass(frozen=True)
class DriftReport:
    scores: dict[str, float]  # feature -> PSI, for features with enough data on both sides
    insufficient: list[str]  # features with fewer than MIN_SAMPLES values on a side
    reference_rows: int
    current_rows: int

    @property
    def worst(self) -> tuple[str, float] | None:
        return max(self.scores.items(), key=lambda item: item[1]) if self.scores else None

    @property
    def status(self) -> str:
        """ "ok", "warn", "error" or "not enough data"."""
        if not self.scores:
            return "not enough data"
        _, score = self.worst
        return "error" if score > ERROR_PSI else "warn" if score > WARN_PSI else "ok"

    def describe(self) -> str:
        if not self.scores:
            return (
                f"not enough data: {self.reference_rows} reference and {self.current_rows} current rows "
                f"(at least {MIN_SAMPLES} values needed on each side)"
            )
        name, score = self.worst
        drifted = sorted(f for f, s in self.scores.items() if s > WARN_PSI)
        text = f"max PSI {score:.3f} ({name}); {len(drifted)} of {len(self.scores)} features above {WARN_PSI}"
        return text + (f": {', '.join(drifted)}" if drifted else "")


def drift(
    reference: pl.DataFrame, current: pl.DataFrame, features: Sequence[str], min_samples: int = MIN_SAMPLES
) -> DriftReport:
    """PSI of each feature; a frame without a feature's column (e.g. no reference yet) counts as no values."""

    def values(frame: pl.DataFrame, name: str) -> np.ndarray:
        return frame[name].drop_nulls().cast(pl.Float64).to_numpy() if name in frame.columns else np.empty(0)

    scores, insufficient = {}, []
    for name in features:
        ref, cur = values(reference, name), values(current, name)
        if ref.size < min_samples or cur.size < min_samples:
            insufficient.append(name)
        else:
            scores[name] = round(psi(ref, cur), 6)
    return DriftReport(scores, insufficient, reference.height, current.height)
