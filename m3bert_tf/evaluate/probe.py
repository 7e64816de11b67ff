"""The probes: a linear model and a one-hidden-layer MLP on frozen clip embeddings.

    result = run_probe(spec, data, grid=MLP_GRID, seed=0)
    result.chosen          # the HyperParams picked on the validation split
    result.valid, result.test   # metric dicts (`metrics.score_task`)

The paper's protocol: train on the train split, choose hyper-parameters
(the L2 strength; for the MLP also its hidden width, dropout and epoch:
early stopping) by the validation split's main score, report the test
split's scores of that choice alone. Inputs are z-scored with the train
split's statistics; regression targets too (predictions are scaled back).

The linear probe is solved (`probe_linear`: scikit-learn's logistic and
ridge regression); the MLP, and the linear probe of a layer profile's
weighted row, train by Adam in numpy (`probe_sgd`). Both penalize the
squared L2 norm of their weights with strengths over several decades
(`L2_DECADES`), the strongest enough to fall back to the audio-blind
predictor, so a probe chosen on validation is not far below it however
small the training set and wide the input. Where the dataset's metric is
per track, the predictions of a track's chunks are averaged before scoring
(`ProbeData.groups`).
"""

import dataclasses

import numpy as np

from m3bert_tf.evaluate.scores import main_score
from m3bert_tf.tasks import TaskSpec
from m3bert_tf.tasks.metrics import score_task

__all__ = ["HyperParams", "ProbeData", "ProbeResult", "main_score", "run_probe"]


@dataclasses.dataclass(frozen=True)
class HyperParams:
    """One probe configuration.

    Attributes:
      hidden: hidden units; 0 = a linear probe.
      learning_rate: Adam's, for a trained probe (ignored when `solved`).
      l2: weight of the weights' squared L2 norm against the mean loss per
        example (biases are not penalized).
      dropout: on the hidden layer (MLP only).
      solved: a linear probe fitted to convergence (scikit-learn), not trained
        by steps (`probe_linear`).
    """

    hidden: int
    learning_rate: float
    l2: float
    dropout: float = 0.0
    solved: bool = False

    @property
    def probe(self) -> str:
        return "linear" if self.hidden == 0 else "mlp"

    def describe(self) -> str:
        if self.solved:
            return f"l2 {self.l2:g}"
        text = f"lr {self.learning_rate:g}, l2 {self.l2:g}"
        return (
            text
            if self.hidden == 0
            else f"h {self.hidden}, {text}, dropout {self.dropout:g}"
        )


# Strongest first: on a tie of validation scores the stronger penalty wins.
# 100 on z-scored inputs leaves weights near 0: the audio-blind predictor.
L2_DECADES = (1e2, 1e1, 1.0, 1e-1, 1e-2, 1e-3, 1e-4)
MLP_L2 = (1.0, 1e-2, 1e-4)
# A trained linear probe (a layer profile's weighted row): Adam's rate.
TRAINED_LINEAR_LR = 1e-2


def grid(hidden=(0,), learning_rates=(1e-3,), l2s=MLP_L2, dropouts=(0.0,),
         solved=False) -> tuple[HyperParams, ...]:  # fmt: skip
    """Every combination, hidden width first."""
    return tuple(
        HyperParams(h, 0.0 if solved else lr, l2, d if h else 0.0, solved)
        for h in hidden
        for lr in (learning_rates if not solved else (0.0,))
        for l2 in l2s
        for d in (dropouts if h else (0.0,))
    )


LINEAR_GRID = grid(l2s=L2_DECADES, solved=True)
MLP_GRID = grid(hidden=(128, 512), l2s=MLP_L2, dropouts=(0.0, 0.5))
GRIDS = {"linear": LINEAR_GRID, "mlp": MLP_GRID}


def trained_twin(configs) -> tuple[HyperParams, ...]:
    """A solved grid as configurations trained by steps (same strengths):
    for inputs a solver cannot take ([n, L, D], whose layer weights train)."""
    return tuple(
        dataclasses.replace(c, learning_rate=TRAINED_LINEAR_LR, solved=False)
        if c.solved
        else c
        for c in configs
    )


@dataclasses.dataclass
class ProbeData:
    """One task's examples, split.

    Attributes:
      x: {split: [n, D] float32 embeddings}.
      y: {split: [n, spec.size] float32 stored labels}.
      groups: {split: [n] int} examples with one id are scored as one (their
        predictions averaged: chunks of a track); None = every example alone.
    """

    x: dict
    y: dict
    groups: dict | None = None


@dataclasses.dataclass
class ProbeResult:
    """The choice on the validation split and its scores.

    Attributes:
      test_labels, test_predictions: [units, size] and [units, outputs] of the
        test split's scored units (tracks or examples), for the intervals.
      layer_weights: the chosen configuration's softmax weights over the
        layers when the embeddings were [n, L, D] (the layer profile).
    """

    chosen: HyperParams
    epoch: int
    valid: dict
    test: dict
    test_labels: np.ndarray | None = None
    test_predictions: np.ndarray | None = None
    layer_weights: np.ndarray | None = None  # [L], inputs of [n, L, D] only


def averaging(groups, n: int) -> np.ndarray:
    """[groups, n] float32 matrix whose product with [..., n, O] predictions
    averages the rows of each group (groups in order of first appearance);
    the identity when `groups` is None."""
    if groups is None:
        return np.eye(n, dtype=np.float32)
    _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    rank = np.empty(len(first), int)
    rank[np.argsort(first)] = np.arange(len(first))
    matrix = np.zeros((len(first), n), np.float32)
    matrix[rank[inverse], np.arange(n)] = 1.0
    return matrix / matrix.sum(1, keepdims=True)


def group_labels(spec: TaskSpec, y: np.ndarray, groups) -> np.ndarray:
    """[groups, size] labels of each group (its examples share one label).

    Raises:
      ValueError: a group whose examples carry different labels (scoring it
        as one would average predictions against a label it does not have).
    """
    matrix = averaging(groups, len(y))
    mean = matrix @ y
    if groups is not None and len(y):
        member = matrix.argmax(0)  # each example's group
        differs = np.abs(y - mean[member]).max(axis=-1) > 1e-6
        if differs.any():
            track = str(np.asarray(groups)[np.flatnonzero(differs)[0]])  # not np.str_(...)
            raise ValueError(
                f"task {spec.name}: track {track!r} has examples with different labels, "
                "so per-track scoring cannot merge them (score per example, or fix the "
                "labels: bin/extract refuses such data)"
            )
    return np.round(mean) if spec.kind == "classification" else mean


def run_probe(spec: TaskSpec, data: ProbeData, configs=MLP_GRID, seed: int = 0,
              epochs: int = 100, eval_every: int = 5, batch_size: int = 64) -> ProbeResult:  # fmt: skip
    """Fits every configuration on train, picks (configuration, epoch) by the
    validation main score (first in grid order on ties), scores test.

    A grid of solved configurations runs in `probe_linear` (deterministic:
    `seed` and `epochs` unused), other grids in `probe_sgd`.

    Raises:
      ValueError: a split without examples, or no finite validation score.
    """
    from m3bert_tf.evaluate import probe_linear, probe_sgd

    for split in ("train", "valid", "test"):
        if len(data.x.get(split, ())) == 0:
            raise ValueError(f"task {spec.name}: no {split} examples to probe")
    mean = data.x["train"].mean(0)
    std = np.maximum(data.x["train"].std(0), 1e-6)
    x = {s: ((v - mean) / std).astype(np.float32) for s, v in data.x.items()}
    groups = data.groups or {}
    average = {s: averaging(groups.get(s), len(data.y[s])) for s in ("valid", "test")}
    labels = {s: group_labels(spec, data.y[s], groups.get(s)) for s in ("valid", "test")}

    def scoring(split, predictions):
        return average[split] @ predictions, labels[split]

    targets = data.y["train"].astype(np.float32)
    if x["train"].ndim == 3:
        configs = trained_twin(configs)
    if all(c.solved for c in configs):
        chosen, epoch, found = probe_linear.solve(spec, x, targets, scoring, configs)
    else:
        scale = (0.0, 1.0)
        if spec.kind == "regression":
            scale = (targets.mean(0), np.maximum(targets.std(0), 1e-6))
            targets = (targets - scale[0]) / scale[1]
        chosen, epoch, found = probe_sgd.train(
            spec, x, targets, scoring, configs, seed, epochs, scale, eval_every, batch_size
        )
    if found is None:
        raise ValueError(
            f"task {spec.name}: no configuration gave a finite validation score"
        )
    valid = score_task(spec, labels["valid"], found[0])
    test = score_task(spec, labels["test"], found[1])
    return ProbeResult(chosen, epoch, valid, test, labels["test"], found[1], found[2])
