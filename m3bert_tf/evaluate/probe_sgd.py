"""The probes trained by gradient steps: the MLP, and the linear probe of a
layer profile's weighted row (whose softmax layer weights train with it).

Every configuration of a grid trains at once: configurations of one hidden
width are stacked into [G, ...] weight arrays and updated together (Adam,
full float32, numpy), so a grid costs about one configuration's Python
overhead. The penalty is L2 on the weight matrices, `HyperParams.l2` times
their squared norm added to the mean loss, the linear probe's scale
(`probe_linear`); biases are not penalized, so the strongest penalty leaves
a probe that predicts the training mean (regression) or the class prior.
The epoch is chosen with the configuration (early stopping on valid).
"""

import numpy as np

from m3bert_tf.evaluate.scores import main_score
from m3bert_tf.tasks import TaskSpec

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
        self.params, self.penalized = [], []
        for number, (fan_in, fan_out) in enumerate(shapes):
            limit = np.sqrt(6.0 / (fan_in + fan_out))  # Glorot uniform
            if number == len(shapes) - 1:
                # The output layer starts at zero: the probe starts as the
                # audio-blind predictor, not as a random function of its input
                # (a Glorot-initialized MLP's outputs vary with a std of about
                # one target std, an R² near -1 before any training).
                limit = 0.0
            self.params.append(rng.uniform(-limit, limit, (g, fan_in, fan_out)))
            self.params.append(np.zeros((g, 1, fan_out)))
            self.penalized += [True, False]  # a weight matrix, its bias
        if layers:  # mixing logits, last: equal weights at the start
            self.params.append(np.zeros((g, 1, layers)))
            self.penalized.append(False)
        self.params = [p.astype(np.float32) for p in self.params]
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.tmp = [np.zeros_like(p) for p in self.params]
        self.t = 0
        self.lr = np.array([c.learning_rate for c in configs], np.float32)[:, None, None]
        self.l2 = np.array([2.0 * c.l2 for c in configs], np.float32)[:, None, None]
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
        """One Adam update from dLoss/dOutputs [G, n, O] and the L2 penalty."""
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
        for g, p, penalized in zip(grads, self.params, self.penalized, strict=True):
            if penalized:  # d(l2 * |W|²)/dW
                g += self.l2 * p
        self.t += 1
        b1, b2, eps = 0.9, 0.999, 1e-8
        # Bias corrections folded into the step size; every pass in place
        # (temporaries of this size would be allocated and freed every step).
        correction = np.sqrt(1 - b2**self.t) / (1 - b1**self.t)
        steps = [self.lr * correction] * len(self.params)
        if self.layers:  # the mixing logits: their own rate
            steps[-1] = LAYER_WEIGHT_LR * correction
        for p, g, m, v, tmp, step_size in zip(
            self.params, grads, self.m, self.v, self.tmp, steps, strict=True
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
            p -= tmp


def outputs_to_predictions(spec: TaskSpec, out, y_mean, y_std):
    """Outputs -> probabilities (softmax, sigmoid) or targets in their units."""
    if spec.kind == "classification":
        z = out - out.max(-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(-1, keepdims=True)
    if spec.kind == "multilabel":
        return 1.0 / (1.0 + np.exp(-out))
    return out * y_std + y_mean


def _loss_gradient(spec: TaskSpec, predictions, targets):
    """dLoss/dOutputs of the loss (cross-entropy, BCE or squared error, summed
    over the outputs) averaged over a batch's examples."""
    n = targets.shape[0]
    if spec.kind == "classification":
        onehot = np.eye(spec.num_outputs, dtype=np.float32)[targets[:, 0].astype(int)]
        return (predictions - onehot) / n
    return (predictions - targets) / n * (2.0 if spec.kind == "regression" else 1.0)


def train(spec: TaskSpec, x: dict, targets: np.ndarray, scoring, configs, seed: int,
          epochs: int, target_scale=(0.0, 1.0), eval_every: int = 5,
          batch_size: int = 64) -> tuple:  # fmt: skip
    """Trains every configuration on x["train"]; returns (chosen config, epoch,
    (valid predictions, test predictions, layer weights or None)), chosen by
    the validation main score (first in grid order on ties).

    Args:
      x: {split: [n, D] or [n, L, D]} standardized inputs.
      targets: [n_train, size] (regression targets standardized).
      scoring: (split, [G, n, O] predictions in the targets' units) -> ([G,
        units, O] predictions, the split's unit labels) (`probe.run_probe`).
      target_scale: (mean, std) of a regression's targets, to undo their
        standardization.
    """
    rng = np.random.default_rng(seed)
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
                predictions = outputs_to_predictions(spec, out, 0.0, 1.0)
                stack.step(
                    x["train"][rows],
                    _loss_gradient(spec, predictions, targets[rows]),
                    cache,
                )
        if epoch % eval_every and epoch != epochs:
            continue
        for stack in stacks:
            scored, labels = {}, {}
            for split in ("valid", "test"):
                out, _ = stack.forward(x[split])
                scored[split], labels[split] = scoring(
                    split, outputs_to_predictions(spec, out, *target_scale)
                )
            weights = stack.layer_weights() if stack.layers else [None] * len(stack.configs)
            for g, config in enumerate(stack.configs):
                score = main_score(spec, labels["valid"], scored["valid"][g])
                if np.isfinite(score) and score > best[config][0]:
                    found = (scored["valid"][g], scored["test"][g], weights[g])
                    best[config] = (score, epoch, found)
    chosen = max(configs, key=lambda c: (best[c][0], -configs.index(c)))
    return chosen, best[chosen][1], best[chosen][2]
