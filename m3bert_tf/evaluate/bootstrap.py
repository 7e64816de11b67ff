"""Intervals and paired comparisons of test scores (numpy only).

    indices = resample_indices(num_units)            # [B, n], shared by a task's rows
    scores = resampled_scores(spec, labels, predictions_per_seed, indices)   # [B]
    low, high = interval(scores)
    compare(scores_a, scores_b, point_a, point_b)    # difference, interval, p

The test sample is the larger source of noise in a probe's score, the
probe's seed the smaller; both are in the interval. A task's test units
(tracks when chunks are scored per track, else examples) are resampled with
replacement B times, with the same resamples for every feature set of the
task, so that comparisons are paired. On each resample a row's score is the
mean over its probe seeds of the main metric (accuracy, ROC-AUC macro, mean
R²) of each seed's predictions; the 95 % interval is the 2.5th-97.5th
percentile of the B scores (the percentile bootstrap: Efron & Tibshirani,
"An Introduction to the Bootstrap", 1993). A difference between two rows is
taken on the same resamples (the paired bootstrap of system comparison in
speech and language processing: Bisani & Ney 2004, Koehn 2004); its
one-sided p-value for "A is no better than B" is (1 + #{d_b <= 0}) / (B + 1),
and a difference is resolved when its interval excludes 0.
"""

import numpy as np

from m3bert_tf.tasks.metrics import mean_r2, r2_per_output

RESAMPLES = 1000
LEVEL = 0.95


def resample_indices(
    num_units: int, resamples: int = RESAMPLES, seed: int = 0
) -> np.ndarray:
    """[resamples, num_units] int: units drawn with replacement, seeded."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, num_units, size=(resamples, num_units))


def _auc_columns(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """[C] ROC-AUC of each column (NaN where a column has one class only),
    from ranks (ties averaged), as sklearn's roc_auc_score."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=0)
    positives = labels.sum(0)
    negatives = len(labels) - positives
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * labels).sum(0) - positives * (positives + 1) / 2) / (
            positives * negatives
        )
    return np.where((positives > 0) & (negatives > 0), auc, np.nan)


def resampled_scores(
    spec, labels: np.ndarray, predictions: list, indices: np.ndarray
) -> np.ndarray:
    """[B] main score of each resample, averaged over the seeds.

    Args:
      spec: the task's `TaskSpec`.
      labels: [n, size] test labels of the units.
      predictions: per seed, [n, outputs] predictions of the same units.
      indices: [B, n] resamples (`resample_indices`).
    """
    per_seed = []
    for p in predictions:
        if spec.kind == "classification":
            correct = np.argmax(p, -1) == labels[:, 0].astype(int)
            per_seed.append(correct[indices].mean(1))
        elif spec.kind == "regression":
            # [B, n, O] -> [B, O]; a resample of constant targets is undefined (NaN)
            per_seed.append(mean_r2(r2_per_output(labels[indices], p[indices], axis=1)))
        else:
            per_seed.append(
                np.array([np.nanmean(_auc_columns(labels[i], p[i])) for i in indices])
            )
    return np.mean(per_seed, axis=0)


def interval(values: np.ndarray, level: float = LEVEL) -> list[float]:
    """[low, high]: the central `level` percentile interval of `values` (NaN-free)."""
    values = values[np.isfinite(values)]
    if not len(values):
        return [float("nan"), float("nan")]
    tail = 100 * (1 - level) / 2
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]


def compare(a: np.ndarray, b: np.ndarray, point_a: float, point_b: float) -> dict:
    """A against B on the same resamples: {"difference": point_a - point_b,
    "interval", "p" (one-sided, A no better than B), "resolved"}."""
    d = a - b
    d = d[np.isfinite(d)]
    low, high = interval(d)
    p = (1 + int(np.sum(d <= 0))) / (len(d) + 1)
    return {
        "difference": float(point_a - point_b),
        "interval": [low, high],
        "p": float(p),
        "resolved": bool(low > 0 or high < 0),
    }
