"""The probe: a linear model and a one-hidden-layer MLP on frozen clip embeddings.

    result = run_probe(spec, data, grid=MLP_GRID, seed=0)
    result.chosen          # the HyperParams picked on the validation split
    result.valid, result.test   # metric dicts (`metrics.score_task`)

The paper's protocol: train on the train split, choose hyper-parameters
(hidden width, learning rate, weight decay, dropout, and the epoch: early
stopping) by the validation split's main score, report the test split's
scores of that choice alone. Inputs are z-scored with the train split's
statistics; regression targets too (predictions are scaled back).

Every configuration of a grid trains at once: configurations of one hidden
width are stacked into [G, ...] weight arrays and updated together (AdamW,
full float32, numpy), so a grid costs about one configuration's Python
overhead. Where the dataset's metric is per track, the predictions of a
track's chunks are averaged before scoring (`ProbeData.groups`).
"""

import dataclasses

import numpy as np

from m3bert_tf.tasks import TaskSpec
from m3bert_tf.tasks.metrics import score_task


@dataclasses.dataclass(frozen=True)
class HyperParams:
    """One probe configuration.

    Attributes:
      hidden: hidden units; 0 = the linear probe.
      learning_rate: AdamW's.
      weight_decay: AdamW's decoupled decay (per step, times the learning rate).
      dropout: on the hidden layer (MLP only).
    """

    hidden: int
    learning_rate: float
    weight_decay: float
    dropout: float = 0.0

    @property
    def probe(self) -> str:
        return "linear" if self.hidden == 0 else "mlp"

    def describe(self) -> str:
        text = f"lr {self.learning_rate:g}, wd {self.weight_decay:g}"
        return (
            text
            if self.hidden == 0
            else f"h {self.hidden}, {text}, dropout {self.dropout:g}"
        )


def grid(hidden=(0,), learning_rates=(1e-3, 1e-2), weight_decays=(0.0, 0.1),
         dropouts=(0.0,)) -> tuple[HyperParams, ...]:  # fmt: skip
    """Every combination, hidden width first."""
    return tuple(
        HyperParams(h, lr, wd, d if h else 0.0)
        for h in hidden
        for lr in learning_rates
        for wd in weight_decays
        for d in (dropouts if h else (0.0,))
    )


LINEAR_GRID = grid()
MLP_GRID = grid(hidden=(128, 512), dropouts=(0.0, 0.5))
GRIDS = {"linear": LINEAR_GRID, "mlp": MLP_GRID}


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


# Adam's rate for the layer-mixing logits: a probe's rate (1e-3) would move
# them by about 0.1 in a hundred steps, too little to leave equal weights.
LAYER_WEIGHT_LR = 0.05


class _Stack:
    """G configurations of one architecture, trained together; with `layers`
    L > 0 the input is [n, L, D] and each configuration also learns softmax
    weights over the L layers, its input being their weighted sum (SUPERB's
    layer weighting, trained with the probe)."""

    def __init__(self, configs, dim: int, outputs: int, rng: np.random.Generator,
                 layers: int = 0):  # fmt: skip
        self.configs = configs
        self.layers = layers
        g, h = len(configs), configs[0].hidden
        shapes = [(dim, h), (h, outputs)] if h else [(dim, outputs)]
        self.params = []
        for fan_in, fan_out in shapes:
            limit = np.sqrt(6.0 / (fan_in + fan_out))  # Glorot uniform
            self.params.append(rng.uniform(-limit, limit, (g, fan_in, fan_out)))
            self.params.append(np.zeros((g, 1, fan_out)))
        if layers:  # mixing logits, last: equal weights at the start
            self.params.append(np.zeros((g, 1, layers)))
        self.params = [p.astype(np.float32) for p in self.params]
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.tmp = [np.zeros_like(p) for p in self.params]
        self.t = 0
        self.lr = np.array([c.learning_rate for c in configs], np.float32)[:, None, None]
        self.wd = np.array([c.weight_decay for c in configs], np.float32)[:, None, None]
        self.keep = 1.0 - np.array([c.dropout for c in configs], np.float32)[:, None, None]

    def layer_weights(self) -> np.ndarray:
        """[G, L] softmax weights over the layers (layers > 0 only)."""
        logits = self.params[-1][:, 0]
        e = np.exp(logits - logits.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    def forward(self, x, rng=None):
        """x [n, D] ([n, L, D] with layers) -> ([G, n, O] outputs, what backward needs)."""
        mixed = (
            np.einsum("gl,nld->gnd", self.layer_weights(), x) if self.layers else x[None]
        )
        dense = self.params[: len(self.params) - bool(self.layers)]
        if len(dense) == 2:
            return mixed @ dense[0] + dense[1], (mixed, None, None, None)
        pre = mixed @ dense[0] + dense[1]
        hidden = np.maximum(pre, 0.0)
        if rng is not None:  # inverted dropout, a rate per configuration
            mask = (rng.random(hidden.shape, np.float32) < self.keep) / self.keep
            hidden = hidden * mask
        else:
            mask = None
        return hidden @ dense[2] + dense[3], (mixed, pre, hidden, mask)

    def step(self, x, grad_out, cache):
        """One AdamW update from dLoss/dOutputs [G, n, O]."""
        mixed, pre, hidden, mask = cache
        inputs = np.swapaxes(mixed, 1, 2)
        if pre is None:
            grads = [inputs @ grad_out, grad_out.sum(1, keepdims=True)]
            grad_first = grad_out
        else:
            grad_hidden = grad_out @ np.swapaxes(self.params[2], 1, 2)
            if mask is not None:
                grad_hidden = grad_hidden * mask
            grad_first = grad_hidden * (pre > 0)
            grads = [
                inputs @ grad_first, grad_first.sum(1, keepdims=True),
                np.swapaxes(hidden, 1, 2) @ grad_out, grad_out.sum(1, keepdims=True),
            ]  # fmt: skip
        if self.layers:  # through the weighted sum and the softmax to the logits
            grad_mixed = grad_first @ np.swapaxes(self.params[0], 1, 2)  # [G, n, D]
            grad_w = np.einsum("gnd,nld->gl", grad_mixed, x)
            w = self.layer_weights()
            grads.append((w * (grad_w - (w * grad_w).sum(-1, keepdims=True)))[:, None])
        self.t += 1
        b1, b2, eps = 0.9, 0.999, 1e-8
        # Bias corrections folded into the step size; every pass in place
        # (temporaries of this size would be allocated and freed every step).
        correction = np.sqrt(1 - b2**self.t) / (1 - b1**self.t)
        steps = [self.lr * correction] * len(self.params)
        decays = [1.0 - self.lr * self.wd] * len(self.params)
        if self.layers:  # the mixing logits: their own rate, no decay toward equal weights
            steps[-1], decays[-1] = LAYER_WEIGHT_LR * correction, 1.0
        for p, g, m, v, tmp, step_size, decay in zip(
            self.params, grads, self.m, self.v, self.tmp, steps, decays, strict=True
        ):
            m *= b1
            g *= 1 - b1
            m += g
            np.square(g, out=tmp)
            tmp *= (1 - b2) / (1 - b1) ** 2
            v *= b2
            v += tmp
            np.sqrt(v, out=tmp)
            tmp += eps
            np.divide(m, tmp, out=tmp)
            tmp *= step_size
            p *= decay
            p -= tmp


def _outputs_to_predictions(spec: TaskSpec, out, y_mean, y_std):
    if spec.kind == "classification":
        z = out - out.max(-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(-1, keepdims=True)
    if spec.kind == "multilabel":
        return 1.0 / (1.0 + np.exp(-out))
    return out * y_std + y_mean


def _loss_gradient(spec: TaskSpec, predictions, targets):
    """dLoss/dOutputs of the mean loss (cross-entropy, BCE or MSE) over a batch."""
    n = targets.shape[0]
    if spec.kind == "classification":
        onehot = np.eye(spec.num_outputs, dtype=np.float32)[targets[:, 0].astype(int)]
        return (predictions - onehot) / n
    return (
        (predictions - targets)
        / (n * targets.shape[1])
        * (2.0 if spec.kind == "regression" else 1.0)
    )


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
    """Trains every configuration on train, picks (configuration, epoch) by the
    validation main score (first in grid order on ties), scores test.

    Raises:
      ValueError: a split without examples.
    """
    for split in ("train", "valid", "test"):
        if len(data.x.get(split, ())) == 0:
            raise ValueError(f"task {spec.name}: no {split} examples to probe")
    rng = np.random.default_rng(seed)
    mean = data.x["train"].mean(0)
    std = np.maximum(data.x["train"].std(0), 1e-6)
    x = {s: ((v - mean) / std).astype(np.float32) for s, v in data.x.items()}
    y_mean = y_std = 0.0
    targets = data.y["train"].astype(np.float32)
    if spec.kind == "regression":
        y_mean = targets.mean(0)
        y_std = np.maximum(targets.std(0), 1e-6)
        targets = (targets - y_mean) / y_std
    groups = data.groups or {}
    average = {s: averaging(groups.get(s), len(data.y[s])) for s in ("valid", "test")}
    labels = {s: group_labels(spec, data.y[s], groups.get(s)) for s in ("valid", "test")}

    stacks = []
    for width in dict.fromkeys(c.hidden for c in configs):
        members = [c for c in configs if c.hidden == width]
        layers = x["train"].shape[1] if x["train"].ndim == 3 else 0
        stacks.append(_Stack(members, x["train"].shape[-1], spec.num_outputs, rng, layers))
    best = {c: (-np.inf, 0, None) for c in configs}  # valid score, epoch, predictions
    n = len(targets)
    for epoch in range(1, epochs + 1):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            for stack in stacks:
                out, cache = stack.forward(x["train"][rows], rng)
                predictions = _outputs_to_predictions(spec, out, 0.0, 1.0)
                stack.step(
                    x["train"][rows],
                    _loss_gradient(spec, predictions, targets[rows]),
                    cache,
                )
        if epoch % eval_every and epoch != epochs:
            continue
        for stack in stacks:
            scored = {}
            for split in ("valid", "test"):
                out, _ = stack.forward(x[split])
                scored[split] = average[split] @ _outputs_to_predictions(
                    spec, out, y_mean, y_std
                )
            weights = stack.layer_weights() if stack.layers else [None] * len(stack.configs)
            for g, config in enumerate(stack.configs):
                score = main_score(spec, labels["valid"], scored["valid"][g])
                if np.isfinite(score) and score > best[config][0]:
                    found = (scored["valid"][g], scored["test"][g], weights[g])
                    best[config] = (score, epoch, found)
    chosen = max(configs, key=lambda c: (best[c][0], -configs.index(c)))
    _, epoch, found = best[chosen]
    if found is None:
        raise ValueError(
            f"task {spec.name}: no configuration gave a finite validation score"
        )
    valid = score_task(spec, labels["valid"], found[0])
    test = score_task(spec, labels["test"], found[1])
    return ProbeResult(chosen, epoch, valid, test, labels["test"], found[1], found[2])


def main_score(spec: TaskSpec, labels: np.ndarray, predictions: np.ndarray) -> float:
    """`metrics.score_task(...)["score"]`, in numpy where that is quicker
    (accuracy, mean R²): it is computed for every configuration at every
    evaluation."""
    if spec.kind == "classification":
        return float(np.mean(np.argmax(predictions, -1) == labels[:, 0].astype(int)))
    if spec.kind == "regression" and len(labels) > 1:
        residual = ((labels - predictions) ** 2).sum(0)
        total = ((labels - labels.mean(0)) ** 2).sum(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(
                total > 0, 1.0 - residual / total, np.where(residual > 0, 0.0, 1.0)
            )
        return float(np.mean(r2))
    return score_task(spec, labels, predictions).get("score", -np.inf)
