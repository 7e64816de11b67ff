"""Task metrics, the audio-blind reference score, and the per-task table.

Every metric is scikit-learn's: accuracy (classification), ROC-AUC and PR-AUC
macro over the classes that occur and are not everywhere (multi-label), R²
per output (regression; undefined, NaN, where the targets are constant). Each result has a "score": the task's main metric,
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
    from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score

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
        r2 = r2_per_output(labels, predictions)
        for name, value in zip(spec.outputs, r2, strict=True):
            out[f"r2_{name}"] = float(value)
        out["score"] = mean_r2(r2)
    return out


def r2_per_output(labels: np.ndarray, predictions: np.ndarray, axis: int = 0) -> np.ndarray:
    """R² of each output (the coefficient of determination, as scikit-learn's
    r2_score), reducing `axis`: NaN where it is undefined, the targets all
    equal (or fewer than two), never the 0 or 1 scikit-learn puts there
    (which made a constant task's every row "0.000, best" against "chance
    1.000")."""
    labels = np.asarray(labels, np.float64)
    residual = ((labels - predictions) ** 2).sum(axis)
    total = ((labels - labels.mean(axis, keepdims=True)) ** 2).sum(axis)
    constant = labels.max(axis) == labels.min(axis) if labels.shape[axis] else True
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(constant | (labels.shape[axis] < 2), np.nan, 1.0 - residual / total)


def mean_r2(r2: np.ndarray, axis: int = -1):
    """The mean over the outputs whose R² is defined; NaN where none is."""
    r2 = np.asarray(r2, np.float64)
    defined = np.isfinite(r2)
    count = defined.sum(axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(count > 0, np.where(defined, r2, 0.0).sum(axis) / count, np.nan)
    return float(mean) if mean.ndim == 0 else mean


def constant_outputs(spec: TaskSpec, labels: np.ndarray) -> dict[str, float]:
    """{output: its one value} of a regression task's outputs whose targets
    in `labels` [n, outputs] are all equal (R² is undefined there)."""
    if spec.kind != "regression" or not len(labels):
        return {}
    labels = np.asarray(labels, np.float64)
    same = labels.max(0) == labels.min(0)
    return {name: float(labels[0, i]) for i, name in enumerate(spec.outputs) if same[i]}


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


def number(value: float, form: str = ".3f") -> str:
    """A score for a table: "undefined" for NaN (an R² of constant targets,
    a split without examples), never "nan" or a number in its place."""
    return format(value, form) if np.isfinite(value) else "undefined"


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
                f"{k} {number(v)}"
                for k, v in m.items()
                if k not in ("examples", "score", "chance")
            )
            lines.append(
                f"{task:12s} {split:6s} {m.get('examples', 0):5d}  {values}"
                f"  (chance {number(m.get('chance', float('nan')))})"
            )
    return "\n".join(lines)
