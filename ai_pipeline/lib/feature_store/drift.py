"""Feature drift: the population stability index (PSI) of each numeric feature against a reference sample from the
past, judged against what sampling noise alone produces at the sample sizes at hand.

PSI: bins are the reference's deciles (deduplicated, so a feature with many ties gets fewer bins), open at both ends
so that new extremes land in the outer bins; empty bins get a floor of `EPSILON` so the logarithm stays finite;
nulls are left out (the null-rate check watches them). The PSI values are what the UI plots.

The verdict. The industry's fixed cut-offs (0.1 "moderate", 0.25 "major"; Siddiqi, "Credit Risk Scorecards") ignore
sampling noise: on two samples of one distribution PSI is about `(1/n + 1/m) * chi2(k - 1)` for `n` and `m` values
in `k` bins, so with 100 values a side its mean is already 0.18 and the largest of 15 features exceeds 0.25 on most
days. And the chi-square approximation is too light in the tail for sparse or discrete features (up to 4x more
exceedances than nominal at 200 values), so it cannot set the threshold either. A feature drifts when its PSI is
- significant, by a permutation test over all features at once: the reference and current rows are pooled and
  split at random `PERMUTATIONS` times, and each split's PSI of every feature (bins re-derived from its reference
  part) is scaled by that feature's null mean `(1/n + 1/m)(k - 1)`; a feature is significant at level `alpha` when
  fewer than `alpha` of the splits reach its own scaled PSI with their largest scaled PSI over all features. That
  controls the chance of any alarm on unshifted data at `alpha` exactly, whatever the features' distributions and
  correlations (Westfall and Young's max-T); the seed is fixed, so a re-run gives the same verdict; and
- material: above the conventional cut-off, so that at large samples a tiny, real but irrelevant shift is no alarm.
  From `PERMUTE_FROM` values a side the noise is far below the cut-offs (null mean under 0.004), and the cut-off
  alone decides, so large days cost no permutations.

WARN: `WARN_ALPHA` and 0.1; ERROR: `ERROR_ALPHA` and 0.25. Below `MIN_SAMPLES` values on either side there is nothing
to judge ("not enough data"). `ai_pipeline_tests/test_drift.py` measures both error rates by a seeded simulation on
the project's own features, and `benchmarks/drift.py` prints them at more sample sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

BINS = 10
EPSILON = 1e-4
MIN_SAMPLES = 200
WARN_PSI = 0.1
ERROR_PSI = 0.25
# Family-wise false-alarm rates of the permutation test. Below 5%: a test that holds its level exactly lands on it
# half the time, and the bar is "at most 5% of unshifted days".
WARN_ALPHA = 0.025
ERROR_ALPHA = 0.005
PERMUTATIONS = 199
PERMUTE_FROM = 5_000  # values a side from which the cut-offs alone decide
SEED = 20240601


def _edges(reference: np.ndarray, bins: int = BINS) -> np.ndarray:
    return np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.bincount(np.searchsorted(edges, values, side="left"), minlength=edges.size + 1) / values.size


def _psi(ref: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """PSI of bin shares along the last axis; bins empty on both sides add nothing."""
    floor_ref, floor_cur = np.maximum(ref, EPSILON), np.maximum(cur, EPSILON)
    terms = (floor_cur - floor_ref) * np.log(floor_cur / floor_ref)
    return np.sum(np.where((ref == 0) & (cur == 0), 0.0, terms), axis=-1)


def psi(reference: np.ndarray, current: np.ndarray, bins: int = BINS) -> float:
    edges = _edges(reference, bins)
    return float(_psi(_shares(reference, edges), _shares(current, edges)))


def _row_quantiles(rows: np.ndarray) -> np.ndarray:
    """`np.quantile`'s linear deciles of each row, NaNs left out: `np.nanquantile` loops over rows in Python."""
    ordered = np.sort(rows, axis=1)  # NaNs last
    counts = np.sum(~np.isnan(rows), axis=1, keepdims=True)
    position = (counts - 1) * np.linspace(0, 1, BINS + 1)[None, 1:-1]
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, counts - 1)
    below, above = np.take_along_axis(ordered, low, axis=1), np.take_along_axis(ordered, high, axis=1)
    return below + (position - low) * (above - below)


def _split_psi(values: np.ndarray, splits: np.ndarray, n_reference: int) -> np.ndarray:
    """PSI of one feature for each split (row of `splits`: a permutation of the pooled rows, the first
    `n_reference` of them the reference); `values` has NaN where the feature is null. Vectorized over splits."""
    edges = _row_quantiles(values[splits[:, :n_reference]])  # splits x (BINS - 1)
    unique, index = np.unique(values[~np.isnan(values)], return_inverse=True)
    codes = np.full(values.shape, -1)
    codes[~np.isnan(values)] = index
    # Each distinct value's bin in each split: how many of the split's edges lie below it (duplicated edges only
    # skip bin numbers, which leaves the shares and the PSI unchanged).
    bin_of = (unique[None, :, None] > edges[:, None, :]).sum(axis=2)  # splits x distinct values
    rows = np.arange(splits.shape[0])[:, None]

    def shares(part: np.ndarray) -> np.ndarray:
        part_codes = codes[part]
        present = part_codes >= 0
        bins = np.where(present, bin_of[rows, np.maximum(part_codes, 0)], BINS)  # nulls to a discarded bin
        flat = (bins + rows * (BINS + 1)).ravel()
        counts = np.bincount(flat, minlength=splits.shape[0] * (BINS + 1)).reshape(-1, BINS + 1)[:, :BINS]
        return counts / np.maximum(present.sum(axis=1, keepdims=True), 1)

    return _psi(shares(splits[:, :n_reference]), shares(splits[:, n_reference:]))


@dataclass(frozen=True)
class Score:
    psi: float
    reference_values: int
    current_values: int
    bins: int  # bins holding a value on either side
    p_value: float | None  # of the permutation test over all features; None where the cut-off alone decides

    @property
    def null_mean(self) -> float:
        """What PSI averages on two samples of one distribution (chi-square approximation)."""
        return (1 / self.reference_values + 1 / self.current_values) * max(self.bins - 1, 1)

    def drifted(self, alpha: float, floor: float) -> bool:
        return self.psi > floor and (self.p_value is None or self.p_value <= alpha)


@dataclass(frozen=True)
class DriftReport:
    details: dict[str, Score]  # feature -> its PSI, sample and significance, for features with enough data
    insufficient: list[str]  # features with fewer than the minimum values on a side
    reference_rows: int
    current_rows: int

    @property
    def scores(self) -> dict[str, float]:
        """Feature -> PSI (what the UI plots)."""
        return {name: round(score.psi, 6) for name, score in self.details.items()}

    def drifted(self, alpha: float, floor: float) -> list[str]:
        return sorted(name for name, score in self.details.items() if score.drifted(alpha, floor))

    @property
    def worst(self) -> tuple[str, float] | None:
        return max(self.scores.items(), key=lambda item: item[1]) if self.details else None

    @property
    def status(self) -> str:
        """ "ok", "warn", "error" or "not enough data"."""
        if not self.details:
            return "not enough data"
        if self.drifted(ERROR_ALPHA, ERROR_PSI):
            return "error"
        return "warn" if self.drifted(WARN_ALPHA, WARN_PSI) else "ok"

    def describe(self) -> str:
        if not self.details:
            return (
                f"not enough data: {self.reference_rows} reference and {self.current_rows} current rows "
                f"(at least {MIN_SAMPLES} values needed on each side)"
            )
        name, score = self.worst
        worst = self.details[name]
        noise = "" if worst.p_value is None else f", p={worst.p_value:.3f} over {len(self.details)} features"
        drifted = self.drifted(WARN_ALPHA, WARN_PSI)
        text = (
            f"max PSI {score:.3f} ({name}{noise}; noise alone averages {worst.null_mean:.3f} at "
            f"{worst.reference_values}/{worst.current_values} values); {len(drifted)} of {len(self.details)} "
            "features drifted"
        )
        return text + (f": {', '.join(drifted)}" if drifted else "")


def _values(frame: pl.DataFrame, name: str) -> np.ndarray:
    """The feature as floats with NaN for nulls; a frame without the column has no values."""
    if name not in frame.columns:
        return np.full(frame.height, np.nan)
    return frame[name].cast(pl.Float64).fill_nan(None).to_numpy().astype(float)


def drift(
    reference: pl.DataFrame, current: pl.DataFrame, features: Sequence[str], min_samples: int = MIN_SAMPLES
) -> DriftReport:
    """PSI of each feature and, where samples are small enough for noise to matter, its permutation p-value."""
    observed: dict[str, tuple[float, int, int, int]] = {}
    pooled: dict[str, np.ndarray] = {}
    insufficient = []
    for name in features:
        ref, cur = _values(reference, name), _values(current, name)
        ref_values, cur_values = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
        if ref_values.size < min_samples or cur_values.size < min_samples:
            insufficient.append(name)
            continue
        edges = _edges(ref_values)
        ref_shares, cur_shares = _shares(ref_values, edges), _shares(cur_values, edges)
        occupied = int(np.count_nonzero((ref_shares > 0) | (cur_shares > 0)))
        observed[name] = (float(_psi(ref_shares, cur_shares)), ref_values.size, cur_values.size, occupied)
        pooled[name] = np.concatenate([ref, cur])
    small = [n for n, (_, r, c, _) in observed.items() if min(r, c) < PERMUTE_FROM]
    p_values = _max_t_p_values({n: pooled[n] for n in small}, observed, reference.height) if small else {}
    details = {name: Score(*values, p_values.get(name)) for name, values in observed.items()}
    return DriftReport(details, insufficient, reference.height, current.height)


def _max_t_p_values(
    pooled: dict[str, np.ndarray], observed: dict[str, tuple[float, int, int, int]], n_reference: int
) -> dict[str, float]:
    """Single-step max-T permutation p-values (Westfall and Young) of the features in `pooled`."""
    rows = next(iter(pooled.values())).size
    rng = np.random.default_rng(SEED)
    splits = np.argsort(rng.random((PERMUTATIONS, rows)), axis=1)
    scale = {n: (1 / r + 1 / c) * max(k - 1, 1) for n, (_, r, c, k) in observed.items() if n in pooled}
    largest = np.max([_split_psi(pooled[n], splits, n_reference) / scale[n] for n in pooled], axis=0)
    return {n: (1 + int(np.sum(largest >= observed[n][0] / scale[n]))) / (PERMUTATIONS + 1) for n in pooled}
