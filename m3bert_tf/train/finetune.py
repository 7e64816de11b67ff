"""The multi-task fine-tuning job (M3BERT).

    run_finetune(FinetuneConfig(pretrained=..., data=..., model_dir=...))

The pretrained encoder (`<pretrained>/encoder.keras` from bin/pretrain) is
frozen, or all but its top `unfreeze_top_blocks` blocks are; the enrichment
layer and one head per task train on batches that mix every task. A task's
loss is the mean over the examples labeled for it in the batch (0, and no
gradient, when there are none); the total is their sum, or with
`uncertainty_weighting` the sum over the batch's labeled tasks of
exp(-s_t) L_t + s_t with learned s_t (Kendall et al. 2018). One device: the encoder is frozen, so the work is light.

Every `eval_every` steps the validation split is scored (accuracy;
ROC-AUC/PR-AUC macro; R² per output); the mean of the tasks' main scores
picks the best weights, and `patience` evaluations without improvement stop
the run. At the end the best weights are scored on validation and test,
printed as a table and written to metrics.json, and the model is saved as
multitask.keras. Checkpoints, resume, TensorBoard, progress and the NaN stop
work as in pre-training.
"""

import dataclasses
import json
import os
import sys

import numpy as np
import tensorflow as tf

from m3bert_tf.data import finetune_pipeline as data_lib
from m3bert_tf.progress import Progress
from m3bert_tf.tasks import TaskSpec
from m3bert_tf.train.checkpoints import check_finite, open_checkpoints


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning run.

    Attributes:
      pretrained: a bin/pretrain model_dir (its encoder.keras is loaded).
      data: labeled shard dirs or globs, comma-separated.
      model_dir: checkpoints, logs, best weights, metrics, final model.
      tasks: tasks to train; empty = every task in the data's manifests.
      train_steps: optimizer steps at most (early stopping may end sooner).
      batch_size: examples per step, all tasks mixed.
      max_frames: example length; 0 = the encoder's.
      learning_rate: Adam's (constant; the encoder is frozen).
      embedding_dim: width of the enrichment layer (the M3BERT embedding).
      dropout: on the clip embedding before the heads.
      unfreeze_top_blocks: encoder blocks (from the top) trained too.
      uncertainty_weighting: learn the task weights (Kendall et al.).
      task_sampling_temperature: P(task) ~ size^T (1 proportional, 0 uniform).
      eval_every, patience: validation cadence (steps) and early-stopping patience (evaluations).
      checkpoint_every, keep_checkpoints, log_every, seed: as in pre-training.
    """

    pretrained: str
    data: str
    model_dir: str
    tasks: tuple[str, ...] = ()
    train_steps: int = 5000
    batch_size: int = 32
    max_frames: int = 0
    learning_rate: float = 1e-3
    embedding_dim: int = 256
    dropout: float = 0.1
    unfreeze_top_blocks: int = 0
    uncertainty_weighting: bool = False
    task_sampling_temperature: float = 1.0
    eval_every: int = 250
    patience: int = 5
    checkpoint_every: int = 250
    keep_checkpoints: int = 3
    log_every: int = 50
    seed: int = 0


def task_losses(specs, labels, weights, outputs):
    """{task: mean loss over the batch's examples labeled for it} (0 if none)."""
    import keras

    losses = {}
    for spec in specs:
        y, p = labels[spec.name], tf.cast(outputs[spec.name], tf.float32)
        if spec.kind == "classification":
            per_example = keras.losses.sparse_categorical_crossentropy(
                tf.cast(y[:, 0], tf.int32), p
            )
        elif spec.kind == "multilabel":
            per_example = keras.losses.binary_crossentropy(y, p)  # mean over classes
        else:
            per_example = tf.reduce_mean(tf.square(y - p), axis=-1)
        w = weights[spec.name]
        losses[spec.name] = tf.math.divide_no_nan(
            tf.reduce_sum(per_example * w), tf.reduce_sum(w)
        )
    return losses


def score_task(spec: TaskSpec, labels: np.ndarray, predictions: np.ndarray) -> dict:
    """Metrics of one task on one split; "score" is the main one (higher is better)."""
    from sklearn.metrics import average_precision_score, r2_score, roc_auc_score

    if len(labels) == 0:
        return {"examples": 0}
    out = {"examples": int(len(labels))}
    if spec.kind == "classification":
        out["accuracy"] = float(
            np.mean(np.argmax(predictions, -1) == labels[:, 0].astype(int))
        )
        out["score"] = out["accuracy"]
    elif spec.kind == "multilabel":
        usable = [c for c in range(labels.shape[1]) if 0 < labels[:, c].sum() < len(labels)]
        if usable:
            out["roc_auc_macro"] = float(
                roc_auc_score(labels[:, usable], predictions[:, usable], average="macro")
            )
            out["pr_auc_macro"] = float(
                average_precision_score(
                    labels[:, usable], predictions[:, usable], average="macro"
                )
            )
            out["score"] = out["roc_auc_macro"]
    else:
        r2 = (
            r2_score(labels, predictions, multioutput="raw_values")
            if len(labels) > 1
            else [float("nan")]
        )
        for name, value in zip(spec.outputs, r2, strict=True):
            out[f"r2_{name}"] = float(value)
        out["score"] = float(np.mean(r2))
    return out


def chance_score(spec: TaskSpec, train_labels: np.ndarray, labels: np.ndarray) -> float:
    """The main score of a predictor that ignores the audio (fit on train labels).

    Majority class accuracy; ROC-AUC 0.5; R² of predicting the train mean.
    """
    if len(labels) == 0 or len(train_labels) == 0:
        return float("nan")
    if spec.kind == "classification":
        majority = np.bincount(
            train_labels[:, 0].astype(int), minlength=spec.num_outputs
        ).argmax()
        return float(np.mean(labels[:, 0] == majority))
    if spec.kind == "multilabel":
        return 0.5
    from sklearn.metrics import r2_score

    constant = np.repeat(train_labels.mean(0, keepdims=True), len(labels), 0)
    return float(np.mean(r2_score(labels, constant, multioutput="raw_values")))


class FinetuneTrainer:
    """Model, optimizer, task weights and the compiled step of one run."""

    def __init__(self, config: FinetuneConfig, specs: list[TaskSpec], encoder):
        import keras

        from m3bert_tf.models.multitask import M3BertMultiTask

        self.config = config
        self.specs = specs
        self.model = M3BertMultiTask(
            encoder,
            [s.to_json() for s in specs],
            config.embedding_dim,
            config.dropout,
            name="m3bert",
        )
        freeze_encoder(encoder, config.unfreeze_top_blocks)
        # log variances s_t of uncertainty weighting (unused otherwise)
        self.log_vars = tf.Variable(tf.zeros([len(specs)]), name="task_log_variances")
        self.variables = list(self.model.trainable_variables)
        if config.uncertainty_weighting:
            self.variables.append(self.log_vars)
        self.optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate)
        self.optimizer.build(self.variables)

    def total_loss(self, losses, weights=None):
        """Sum of the task losses; with uncertainty weighting
        sum_t present_t (exp(-s_t) L_t + s_t), present_t = 1 when the batch
        labels task t (so an absent task's s_t does not drift)."""
        values = tf.stack([losses[s.name] for s in self.specs])
        if not self.config.uncertainty_weighting:
            return tf.reduce_sum(values)
        if weights is None:
            present = tf.ones_like(values)
        else:
            present = tf.stack(
                [
                    tf.cast(tf.reduce_sum(weights[s.name]) > 0, tf.float32)
                    for s in self.specs
                ]
            )
        return tf.reduce_sum(present * (tf.exp(-self.log_vars) * values + self.log_vars))

    @tf.function
    def train_step(self, iterator):
        inputs, labels, weights = next(iterator)
        with tf.GradientTape() as tape:
            outputs = self.model(inputs, training=True)
            losses = task_losses(self.specs, labels, weights, outputs)
            loss = self.total_loss(losses, weights)
        grads = tape.gradient(loss, self.variables)
        self.optimizer.apply_gradients(zip(grads, self.variables, strict=True))
        return {"loss": loss, **{f"loss_{k}": v for k, v in losses.items()}}

    @tf.function
    def predict_step(self, inputs):
        outputs = self.model(inputs, training=False)
        return {s.name: outputs[s.name] for s in self.specs}

    def collect(self, dataset, predict=True) -> dict:
        """{task: (labels [n, size], predictions [n, outputs])} over a split.

        predict=False skips the model (predictions come back empty).
        """
        got = {s.name: ([], []) for s in self.specs}
        for inputs, labels, weights in dataset:
            preds = self.predict_step(inputs) if predict else None
            for s in self.specs:
                keep = weights[s.name].numpy() > 0
                got[s.name][0].append(labels[s.name].numpy()[keep])
                if predict:
                    got[s.name][1].append(preds[s.name].numpy()[keep])
        return {
            s.name: (
                np.concatenate(got[s.name][0]) if got[s.name][0] else np.zeros((0, s.size)),
                np.concatenate(got[s.name][1])
                if got[s.name][1]
                else np.zeros((0, s.num_outputs)),
            )
            for s in self.specs
        }

    def evaluate(self, dataset) -> dict:
        """{task: metrics} and "score": the mean of the tasks' main scores."""
        collected = self.collect(dataset)
        result = {s.name: score_task(s, *collected[s.name]) for s in self.specs}
        scores = [
            r["score"] for r in result.values() if np.isfinite(r.get("score", np.nan))
        ]
        result["score"] = float(np.mean(scores)) if scores else float("nan")
        return result


def freeze_encoder(encoder, unfreeze_top_blocks: int) -> None:
    """Freezes the encoder but its top `unfreeze_top_blocks` transformer blocks."""
    blocks = [layer for layer in encoder.layers if layer.name.startswith("transformer_")]
    if unfreeze_top_blocks > len(blocks):
        raise ValueError(
            f"--unfreeze_top_blocks={unfreeze_top_blocks}: the encoder has {len(blocks)} blocks"
        )
    encoder.trainable = unfreeze_top_blocks > 0
    top = (
        {b.name for b in blocks[len(blocks) - unfreeze_top_blocks :]}
        if unfreeze_top_blocks
        else set()
    )
    for layer in encoder.layers:
        layer.trainable = layer.name in top


def load_encoder(pretrained: str):
    """The encoder a bin/pretrain run saved in `pretrained`/encoder.keras."""
    import keras

    import m3bert_tf.models.encoder  # noqa: F401  (registers the classes it holds)

    path = os.path.join(pretrained, "encoder.keras")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"--pretrained={pretrained}: no encoder.keras (a bin/pretrain model_dir?)"
        )
    return keras.saving.load_model(path)


def format_table(metrics: dict) -> str:
    """The per-task table: split, examples, metrics, and the chance-level score."""
    lines = [f"{'task':12s} {'split':6s} {'n':>5s}  metrics"]
    for task, per_split in metrics["tasks"].items():
        for split in ("valid", "test"):
            m = per_split[split]
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


def run_finetune(config: FinetuneConfig, flags_text: str = "", log=None) -> dict:
    """Fine-tunes (or resumes); returns {"tasks": {task: {split: metrics}}, ...}."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    all_specs, counts = data_lib.read_task_info(config.data)
    names = config.tasks or tuple(sorted(all_specs))
    missing = [t for t in names if t not in all_specs]
    if missing:
        raise ValueError(
            f"--tasks: {missing} not in the data's manifests (it has {sorted(all_specs)})"
        )
    specs = [all_specs[t] for t in names]
    os.makedirs(config.model_dir, exist_ok=True)
    with open(os.path.join(config.model_dir, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(config), f, indent=1)
    if flags_text:
        with open(os.path.join(config.model_dir, "flags.txt"), "w") as f:
            f.write(flags_text)

    import keras

    keras.utils.set_random_seed(config.seed)  # weight init and dropout: reproducible runs
    encoder = load_encoder(config.pretrained)
    trainer = FinetuneTrainer(config, specs, encoder)
    data_config = data_lib.FinetuneDataConfig(
        data=config.data, tasks=tuple(names), max_frames=config.max_frames or encoder.max_frames,
        batch_size=config.batch_size, temperature=config.task_sampling_temperature, seed=config.seed,
    )  # fmt: skip
    train = data_lib.make_finetune_dataset(data_config, all_specs, counts, "train", True)
    valid = data_lib.make_finetune_dataset(data_config, all_specs, counts, "valid", False)
    test = data_lib.make_finetune_dataset(data_config, all_specs, counts, "test", False)
    probs = data_lib.mixing_probabilities(
        {t: counts.get(t, {}).get("train", 0) for t in names},
        config.task_sampling_temperature,
    )
    log("finetune: task sampling " + ", ".join(f"{t} {p:.2f}" for t, p in probs.items()))

    best = tf.Variable(-np.inf, dtype=tf.float64, name="best_score")
    bad_evals = tf.Variable(0, dtype=tf.int64, name="evaluations_without_improvement")
    best_path = os.path.join(config.model_dir, "best.weights.h5")
    iterator, manager = open_checkpoints(
        os.path.join(config.model_dir, "checkpoints"), config.keep_checkpoints,
        {"model": trainer.model, "optimizer": trainer.optimizer, "log_vars": trainer.log_vars,
         "best": best, "bad_evals": bad_evals},
        lambda: iter(train), lambda msg: log(f"finetune: {msg}"),
    )  # fmt: skip
    step = int(trainer.optimizer.iterations.numpy())
    writer = tf.summary.create_file_writer(os.path.join(config.model_dir, "train"))
    eval_writer = tf.summary.create_file_writer(os.path.join(config.model_dir, "eval"))
    progress = Progress("finetune", config.train_steps, "steps", interval=0.0, start=step)
    stopped_early = int(bad_evals.numpy()) >= config.patience
    while step < config.train_steps and not stopped_early:
        metrics = trainer.train_step(iterator)
        step += 1
        loss = float(metrics["loss"])
        check_finite("finetune", loss, step, manager)
        if step % config.log_every == 0 or step == config.train_steps:
            with writer.as_default(step=step):
                for k, v in metrics.items():
                    tf.summary.scalar(k, v)
            progress.update(step, f"loss {loss:.4f}", force=True)
        if step % config.eval_every == 0 or step == config.train_steps:
            result = trainer.evaluate(valid)
            with eval_writer.as_default(step=step):
                tf.summary.scalar("score", result["score"])
                for task in names:
                    for k, v in result[task].items():
                        tf.summary.scalar(f"{task}/{k}", v)
            improved = np.isfinite(result["score"]) and result["score"] > float(
                best.numpy()
            )
            if improved or not os.path.exists(best_path):
                best.assign(
                    result["score"] if np.isfinite(result["score"]) else best.numpy()
                )
                bad_evals.assign(0)
                trainer.model.save_weights(best_path)
            else:
                bad_evals.assign_add(1)
            log(
                f"finetune: validation at step {step}: score {result['score']:.4f} (best {float(best.numpy()):.4f})"
            )
            stopped_early = int(bad_evals.numpy()) >= config.patience
            if stopped_early:
                log(
                    f"finetune: no improvement in {config.patience} evaluations; stopping early"
                )
        if (
            step % config.checkpoint_every == 0
            or step == config.train_steps
            or stopped_early
        ):
            manager.save(checkpoint_number=step)

    if os.path.exists(best_path):
        trainer.model.load_weights(best_path)
    collected = {
        split: trainer.collect(ds) for split, ds in (("valid", valid), ("test", test))
    }
    train_labels = trainer.collect(
        data_lib.make_finetune_dataset(data_config, all_specs, counts, "train", False),
        predict=False,
    )
    table = {}
    for spec in specs:
        table[spec.name] = {}
        for split in ("valid", "test"):
            labels, preds = collected[split][spec.name]
            m = score_task(spec, labels, preds)
            m["chance"] = chance_score(spec, train_labels[spec.name][0], labels)
            table[spec.name][split] = m
    results = {"step": step, "stopped_early": bool(stopped_early), "tasks": table}
    with open(os.path.join(config.model_dir, "metrics.json"), "w") as f:
        json.dump(results, f, indent=1)
    trainer.model.save(os.path.join(config.model_dir, "multitask.keras"))
    return results
