"""The fine-tuning model's trainer: losses, the compiled step, whole-clip scores.

    trainer = FinetuneTrainer(config, specs, encoder, max_frames)
    trainer.train_step((inputs, labels, weights))     # batches.CachedBatches
    trainer.evaluate(cache, "valid")                  # example_cache.ExampleCache

A task's loss is the mean over the examples labeled for it in the batch (0,
and no gradient, when there are none); the total is their sum, or with
`uncertainty_weighting` the sum over the batch's labeled tasks of
exp(-s_t) L_t + s_t with learned s_t (Kendall et al. 2018). Scores are of
whole examples: every frame, the enrichment pooled over all of them.
"""

import numpy as np
import tensorflow as tf

from m3bert_tf import schema
from m3bert_tf.data import windows
from m3bert_tf.tasks import TaskSpec
from m3bert_tf.tasks.metrics import score_task
from m3bert_tf.train.configs import FinetuneConfig


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


class FinetuneTrainer:
    """Model, optimizer, task weights and the compiled step of one run.

    Attributes:
      model: the `M3BertMultiTask` (what is saved).
      frozen: the whole encoder is frozen: training and evaluation run on
        its cached outputs ("sequence" inputs [B, T', H]) through
        `train_model`, the enrichment layer and heads alone; else on
        features through the whole model.
      window: input frames per encoder window on whole clips.
    """

    def __init__(
        self, config: FinetuneConfig, specs: list[TaskSpec], encoder, max_frames=None
    ):
        import keras

        from m3bert_tf.models.multitask import M3BertMultiTask
        from m3bert_tf.models.seeding import seed_weights
        from m3bert_tf.train.schedule import WarmupLinearDecay

        self.config = config
        self.specs = specs
        self.model = M3BertMultiTask(
            encoder,
            [s.to_json() for s in specs],
            config.embedding_dim,
            config.dropout,
            name="m3bert",
        )
        # the heads' weights and dropout from the run's seed; the encoder is loaded
        seed_weights(self.model, config.seed, skip=encoder)
        freeze_encoder(encoder, config.unfreeze_top_blocks)
        self.frozen = config.unfreeze_top_blocks == 0
        self.frame_stack = encoder.frame_stack
        self.window = windows.default_window_frames(
            max_frames or schema.CHUNK_FRAMES, encoder.frame_stack
        )
        self.train_model = (
            self._top_model(encoder.hidden_dim) if self.frozen else self.model
        )
        # log variances s_t of uncertainty weighting (unused otherwise)
        self.log_vars = tf.Variable(tf.zeros([len(specs)]), name="task_log_variances")
        self.variables = list(self.model.trainable_variables)
        if config.uncertainty_weighting:
            self.variables.append(self.log_vars)
        self.optimizer = keras.optimizers.Adam(
            learning_rate=WarmupLinearDecay(
                config.learning_rate, config.train_steps, config.warmup_fraction
            )
        )
        self.optimizer.build(self.variables)

    def _top_model(self, hidden_dim):
        """The layers above the encoder, on its outputs: {"sequence": [B, T', H],
        "padding_mask": [B, T']} -> the model's outputs (shared weights)."""
        import keras

        layer = self.model.get_layer
        sequence = keras.Input((None, hidden_dim), name="sequence")
        mask = keras.Input((None,), dtype="bool", name="padding_mask")
        frames = layer("enrichment")(sequence)
        clip = layer("pooling")(frames, mask)
        dropped = layer("head_dropout")(clip)
        outputs = {"frame_embedding": frames, "clip_embedding": clip}
        for s in self.specs:
            outputs[s.name] = layer(f"head_{s.name}")(dropped)
        return keras.Model(
            {"sequence": sequence, "padding_mask": mask}, outputs, name="top"
        )

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

    @tf.function(reduce_retracing=True)
    def train_step(self, batch):
        """One optimizer step on `(inputs, labels, weights)` (`batches.py`)."""
        inputs, labels, weights = batch
        with tf.GradientTape() as tape:
            outputs = self.train_model(inputs, training=True)
            losses = task_losses(self.specs, labels, weights, outputs)
            loss = self.total_loss(losses, weights)
        grads = tape.gradient(loss, self.variables)
        self.optimizer.apply_gradients(zip(grads, self.variables, strict=True))
        return {"loss": loss, **{f"loss_{k}": v for k, v in losses.items()}}

    @tf.function(reduce_retracing=True)
    def _run(self, inputs):
        outputs = self.train_model(inputs, training=False)
        keys = [s.name for s in self.specs] + ["frame_embedding"]
        return {k: tf.cast(outputs[k], tf.float32) for k in keys}

    def _heads(self, clip):
        """{task: [n, outputs]} of clip embeddings [n, E] (inference: no dropout)."""
        return {
            s.name: tf.cast(
                self.model.get_layer(f"head_{s.name}")(clip), tf.float32
            ).numpy()
            for s in self.specs
        }

    def clip_predictions(self, cache, ids, batch_size: int = 16) -> dict:
        """{task: [len(ids), outputs]} of whole examples of `cache`: every frame,
        the enrichment pooled over all of them."""
        out = {s.name: [] for s in self.specs}
        if self.frozen:  # per-frame layers on stitched encoder outputs: one pass
            for lo in range(0, len(ids), batch_size):
                x, mask = cache.padded(ids[lo : lo + batch_size])
                got = self._run({"sequence": x, "padding_mask": mask})
                for s in self.specs:
                    out[s.name].append(got[s.name].numpy())
        else:
            clips = np.stack([self._whole_clip(cache.sequence(i)) for i in ids])
            for name, value in self._heads(clips).items():
                out[name].append(value)
        return {
            s.name: np.concatenate(out[s.name])
            if ids.size
            else np.zeros((0, s.num_outputs))
            for s in self.specs
        }

    def _whole_clip(self, features) -> np.ndarray:
        """[E] mean enrichment over every frame of one example's features
        [n, 324], through encoder windows of `window` frames, stitched."""
        k, w = self.frame_stack, self.window
        plan = windows.plan(len(features), w, w, k)
        x = np.zeros((len(plan), min(w, len(features)), schema.NUM_FEATURES), np.float32)
        mask = np.zeros(x.shape[:2], bool)
        for row, win in enumerate(plan):
            x[row, : win.stop - win.start] = features[win.start : win.stop]
            mask[row, : win.stop - win.start] = True
        frames = self._run({"features": x, "padding_mask": mask})["frame_embedding"].numpy()
        kept = [frames[row, win.kept(k)] for row, win in enumerate(plan)]
        return np.concatenate(kept).astype(np.float64).mean(0).astype(np.float32)

    def collect(self, cache, split: str) -> dict:
        """{task: (labels [n, size], predictions [n, outputs])} over the whole
        examples of `split` labeled for each task."""
        ids = cache.ids(split)
        preds = self.clip_predictions(cache, ids)
        got = {}
        for s in self.specs:
            keep = cache.has[s.name][ids]
            got[s.name] = (cache.labels[s.name][ids[keep]], preds[s.name][keep])
        return got

    def evaluate(self, cache, split: str = "valid") -> dict:
        """{task: metrics} and "score": the mean of the tasks' main scores."""
        collected = self.collect(cache, split)
        result = {s.name: score_task(s, *collected[s.name]) for s in self.specs}
        scores = [
            r["score"] for r in result.values() if np.isfinite(r.get("score", np.nan))
        ]
        result["score"] = float(np.mean(scores)) if scores else float("nan")
        return result


def freeze_encoder(encoder, unfreeze_top_blocks: int) -> None:
    """Freezes the encoder but its top `unfreeze_top_blocks` transformer blocks."""
    blocks = encoder.blocks
    if unfreeze_top_blocks > len(blocks):
        raise ValueError(
            f"unfreeze_top_blocks={unfreeze_top_blocks}: the encoder has {len(blocks)} blocks"
        )
    encoder.trainable = unfreeze_top_blocks > 0
    top = {id(b) for b in blocks[len(blocks) - unfreeze_top_blocks :]}
    for layer in encoder.layers:
        layer.trainable = id(layer) in top
