"""The linear probe, solved: L2-regularized logistic regression (classes,
tags) and ridge regression (scikit-learn), one fit per strength.

Each configuration's `l2` is the weight of the squared L2 norm of the
weights against the mean loss per training example (cross-entropy; a
regression's squared errors summed over its standardized outputs), the same
scale as the trained probes' (`probe_sgd`): scikit-learn's `C = 1 / (2 n l2)`
for `LogisticRegression`, `alpha = n l2` for `Ridge`. The intercept is never
penalized, so the strongest strengths of the grid (`probe.L2_DECADES`) reach
the audio-blind predictor: the training mean of a regression, the class
prior. A probe chosen on validation over that range cannot score much below
predicting the mean, which a grid of weak penalties could (small training
sets with wide inputs overfit, and would bias every table towards narrow
feature sets). The fits are deterministic: the probe seed changes nothing.
"""

import warnings

import numpy as np

from m3bert_tf.evaluate.scores import main_score
from m3bert_tf.tasks import TaskSpec

MAX_ITER = 1000  # lbfgs iterations per fit; the strongest penalties converge in tens


def _logistic(x: np.ndarray, labels: np.ndarray, num_classes: int, l2_values):
    """Per l2 (strongest first, each fit warm-started from the one before):
    (l2, x -> [n, num_classes] probabilities)."""
    from sklearn.linear_model import LogisticRegression

    present = np.unique(labels)
    n = len(labels)
    if len(present) < 2:  # one class in train: its prior is all a model can say
        constant = np.zeros(num_classes, np.float32)
        constant[int(present[0])] = 1.0
        for l2 in l2_values:
            yield l2, lambda z, c=constant: np.tile(c, (len(z), 1))
        return
    model = LogisticRegression(max_iter=MAX_ITER, warm_start=True)
    for l2 in l2_values:
        model.set_params(C=1.0 / (2.0 * n * l2))
        model.fit(x, labels)
        coef, intercept, classes = (
            model.coef_.copy(),
            model.intercept_.copy(),
            model.classes_,
        )

        def predict(z, coef=coef, intercept=intercept, classes=classes):
            logits = z @ coef.T + intercept
            if logits.shape[1] == 1:  # two classes: one logit for the second
                probabilities = 1.0 / (1.0 + np.exp(-logits))
                probabilities = np.concatenate([1.0 - probabilities, probabilities], 1)
            else:
                e = np.exp(logits - logits.max(1, keepdims=True))
                probabilities = e / e.sum(1, keepdims=True)
            out = np.zeros((len(z), num_classes), np.float32)
            out[:, classes.astype(int)] = probabilities
            return out

        yield l2, predict


def _fits(spec: TaskSpec, x: np.ndarray, targets: np.ndarray, l2_values):
    """Per l2: (l2, x -> [n, outputs] predictions in the targets' units)."""
    n = len(targets)
    if spec.kind == "classification":
        yield from _logistic(x, targets[:, 0].astype(int), spec.num_outputs, l2_values)
        return
    if spec.kind == "multilabel":  # one binary logistic regression per tag
        columns = [list(_logistic(x, targets[:, c].astype(int), 2, l2_values))
                   for c in range(targets.shape[1])]  # fmt: skip
        for i, l2 in enumerate(l2_values):
            predictors = [column[i][1] for column in columns]
            yield l2, lambda z, p=predictors: np.stack([f(z)[:, 1] for f in p], 1)
        return
    from sklearn.linear_model import Ridge

    mean, std = targets.mean(0), np.maximum(targets.std(0), 1e-6)
    for l2 in l2_values:
        model = Ridge(alpha=n * l2).fit(x, (targets - mean) / std)
        yield l2, lambda z, m=model: m.predict(z).reshape(len(z), -1) * std + mean


def solve(spec: TaskSpec, x: dict, targets: np.ndarray, scoring, configs) -> tuple:
    """(chosen config, epoch 0, (valid predictions, test predictions, None)):
    every configuration fitted on x["train"], the best validation main score
    chosen (first in grid order on ties: order the grid strongest first, so a
    tie goes to the stronger penalty).

    Args:
      x: {split: [n, D]} standardized inputs.
      targets: [n_train, size] labels as stored.
      scoring: (split, [1, n, O] predictions) -> ([1, units, O], unit labels).
    """
    by_l2 = {c.l2: c for c in configs}
    strongest_first = sorted(by_l2, reverse=True)
    found, scores = {}, {}
    with warnings.catch_warnings():
        # lbfgs stopping at MAX_ITER on the weakest penalties, and numpy's
        # overflow in exp of a saturated logit: neither changes a choice.
        warnings.simplefilter("ignore")
        with np.errstate(over="ignore"):
            for l2, predict in _fits(spec, x["train"], targets, strongest_first):
                scored, labels = {}, {}
                for split in ("valid", "test"):
                    predictions, labels[split] = scoring(split, predict(x[split])[None])
                    scored[split] = predictions[0]
                scores[l2] = main_score(spec, labels["valid"], scored["valid"])
                found[l2] = (scored["valid"], scored["test"], None)
    valid = [c for c in configs if np.isfinite(scores[c.l2])]
    if not valid:
        return configs[0], 0, None
    chosen = max(valid, key=lambda c: (scores[c.l2], -configs.index(c)))
    return chosen, 0, found[chosen.l2]
