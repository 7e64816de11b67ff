"""Task metrics, the audio-blind reference score, and the per-task table.

Every metric is scikit-learn's: accuracy (classification), ROC-AUC and PR-AUC
macro over the classes that occur and are not everywhere (multi-label), R²
per output (regression). Each result has a "score": the task's main metric,
higher is better.
"""

import numpy as np

from m3bert_tf.tasks import TaskSpec


def score_task(spec: TaskSpec, labels: np.ndarray, predictions: np.ndarray) -> dict:
    """Metrics of one task on one split.

    Args:
      labels: [n, spec.size] stored label vectors (class index, multi-hot or values).
      predictions: [n, spec.num_outputs] probabilities or values.
    """
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        r2_score,
        roc_auc_score,
    )

    if len(labels) == 0:
        return {"examples": 0}
    out = {"examples": int(len(labels))}
    if spec.kind == "classification":
        out["accuracy"] = float(
            accuracy_score(labels[:, 0].astype(int), np.argmax(predictions, -1))
        )
        out["score"] = out["accuracy"]
    elif spec.kind == "multilabel":
        usable = [c for c in range(labels.shape[1]) if 0 < labels[:, c].sum() < len(labels)]
        if usable:
            y, p = labels[:, usable], predictions[:, usable]
            out["roc_auc_macro"] = float(roc_auc_score(y, p, average="macro"))
            out["pr_auc_macro"] = float(average_precision_score(y, p, average="macro"))
            out["score"] = out["roc_auc_macro"]
    else:
        r2 = (
            r2_score(labels, predictions, multioutput="raw_values")
            if len(labels) > 1
            else [float("nan")] * spec.size
        )
        for name, value in zip(spec.outputs, r2, strict=True):
            out[f"r2_{name}"] = float(value)
        out["score"] = float(np.mean(r2))
    return out


def chance_predictions(spec: TaskSpec, train_labels: np.ndarray, n: int) -> np.ndarray:
    """[n, outputs] predictions of a predictor that ignores the audio, fit on
    `train_labels`: the majority class, the tags' training rates, the
    training mean."""
    if spec.kind == "classification":
        majority = np.bincount(
            train_labels[:, 0].astype(int), minlength=spec.num_outputs
        ).argmax()
        predictions = np.zeros((n, spec.num_outputs))
        predictions[:, majority] = 1.0
        return predictions
    return np.repeat(train_labels.mean(0, keepdims=True), n, 0)


def chance_score(spec: TaskSpec, train_labels: np.ndarray, labels: np.ndarray) -> float:
    """The main score of a predictor that ignores the audio (fit on train labels).

    Majority-class accuracy; ROC-AUC 0.5; R² of predicting the train mean.
    """
    if len(labels) == 0 or len(train_labels) == 0:
        return float("nan")
    if spec.kind == "multilabel":
        return 0.5
    predictions = chance_predictions(spec, train_labels, len(labels))
    return score_task(spec, labels, predictions)["score"]


def format_table(tasks: dict, splits=("valid", "test"), scope: str = "") -> str:
    """The per-task table: split, examples, metrics, and the chance-level score.

    Args:
      tasks: {task: {split: metrics dict with "examples" and "chance"}}.
      scope: a line saying what a row's examples are (and how much of each
        was scored), printed under the header.
    """
    lines = [f"{'task':12s} {'split':6s} {'n':>5s}  metrics"]
    if scope:
        lines.append(f"({scope})")
    for task, per_split in tasks.items():
        for split in splits:
            m = per_split.get(split, {})
            values = ", ".join(
                f"{k} {v:.3f}"
                for k, v in m.items()
                if k not in ("examples", "score", "chance")
            )
            lines.append(
                f"{task:12s} {split:6s} {m.get('examples', 0):5d}  {values}"
                f"  (chance {m.get('chance', float('nan')):.3f})"
            )
    return "\n".join(lines)
