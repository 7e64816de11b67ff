"""The main score of a task's predictions, quick: chosen on at every evaluation
of every probe configuration (`probe`, `probe_sgd`, `probe_linear`)."""

import numpy as np

from m3bert_tf.tasks import TaskSpec
from m3bert_tf.tasks.metrics import mean_r2, r2_per_output, score_task


def main_score(spec: TaskSpec, labels: np.ndarray, predictions: np.ndarray) -> float:
    """`metrics.score_task(...)["score"]`, in numpy where that is quicker
    (accuracy, mean R²): it is computed for every configuration at every
    evaluation."""
    if spec.kind == "classification":
        return float(np.mean(np.argmax(predictions, -1) == labels[:, 0].astype(int)))
    if spec.kind == "regression":
        return mean_r2(r2_per_output(labels, predictions))
    return score_task(spec, labels, predictions).get("score", -np.inf)


def valid_score(row: dict) -> float:
    """A results row's mean validation main score over its seeds (and folds)."""
    return float(np.nanmean([s["valid"].get("score", np.nan) for s in row["seeds"]]))


def chosen_on_valid(rows: list[dict]) -> dict:
    """Of rows of one feature set (one per probe), the one whose probe has the
    best mean validation score: the row every summary, plot and added-value
    choice reports (first in order on ties)."""
    return max(rows, key=valid_score)
