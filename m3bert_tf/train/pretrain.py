"""The pre-training job: masked reconstruction under MirroredStrategy.

    run_pretrain(PretrainConfig(data=..., model_dir=...))

One optimizer step = `accumulation_steps` micro-batches on every replica.
The loss is the Huber sum over every masked element of the global batch
divided by the global count of masked elements, so the step is the same on
one device or N replicas, with or without accumulation (up to float
rounding). Gradients are all-reduced, clipped by their global norm, then
applied.

`model_dir` receives: flags.txt and config.json (the resolved config),
checkpoints/ (model, optimizer and input iterator every `checkpoint_every`
steps, `keep_checkpoints` kept), train/ and eval/ TensorBoard logs,
encoder.keras and results.json at the end. Started again with the same
command, a run resumes from its last checkpoint at the same step, schedule and
data position.
"""

import dataclasses
import json
import os
import sys
import time

import tensorflow as tf

from m3bert_tf.data import masking as masking_lib
from m3bert_tf.data import pipeline
from m3bert_tf.progress import Progress
from m3bert_tf.train.checkpoints import check_finite, open_checkpoints


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Encoder sizes (DESIGN.md "Model")."""

    num_layers: int = 4
    hidden_dim: int = 768
    num_heads: int = 12
    ffn_dim: int = 3072
    frame_stack: int = 1
    dropout: float = 0.1


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """One pre-training run.

    Attributes:
      data: shard dir, glob or comma-separated globs (training tracks).
      model_dir: checkpoints, logs, config and the final encoder.
      eval_data: shards for evaluation; "" = the tracks of `data` held out by
        `holdout_percent` (hash of track id; never trained on).
      model: encoder sizes.
      masking: masking policy.
      train_steps: optimizer steps (T of the schedule).
      global_batch_size: examples per optimizer step, all replicas and
        micro-batches together.
      accumulation_steps: micro-batches per step per replica.
      max_frames: example length (crop/pad).
      learning_rate: lmax of the schedule.
      warmup_fraction: w of the schedule.
      clip_norm: global gradient-norm clip (0 = none).
      mixed_precision: compute in bfloat16, keep float32 weights.
      xla: compile the forward/backward pass with XLA.
      num_cpu_replicas: with no GPU, split the CPU into this many logical
        devices (exercises the distributed path).
      checkpoint_every, keep_checkpoints: checkpoint cadence and retention.
      eval_every, eval_batches: evaluation cadence and size (0 = at the end only).
      log_every: steps between progress lines and TensorBoard scalars.
      shuffle_buffer, holdout_percent, seed: see `pipeline.PipelineConfig`.
    """

    data: str
    model_dir: str
    eval_data: str = ""
    model: ModelConfig = ModelConfig()
    masking: masking_lib.MaskingConfig = masking_lib.MaskingConfig()
    train_steps: int = 200_000
    global_batch_size: int = 128
    accumulation_steps: int = 1
    max_frames: int = 1294
    learning_rate: float = 2e-4
    warmup_fraction: float = 0.07
    clip_norm: float = 1.0
    mixed_precision: bool = False
    xla: bool = False
    num_cpu_replicas: int = 1
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    eval_every: int = 1000
    eval_batches: int = 20
    log_every: int = 100
    shuffle_buffer: int = 64
    holdout_percent: int = 5
    seed: int = 0

    def __post_init__(self):
        if self.train_steps < 1:
            raise ValueError(f"--train_steps must be >= 1, got {self.train_steps}")
        if self.max_frames % self.model.frame_stack:
            raise ValueError(
                f"--max_frames={self.max_frames} must be a multiple of "
                f"--frame_stack={self.model.frame_stack}"
            )


def make_strategy(num_cpu_replicas: int = 1) -> tf.distribute.Strategy:
    """MirroredStrategy over all GPUs; else over `num_cpu_replicas` logical CPUs.

    Splitting the CPU must happen before TensorFlow initializes its devices.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy()
    if num_cpu_replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * num_cpu_replicas
            )
        except RuntimeError as e:
            raise RuntimeError(
                f"--num_cpu_replicas={num_cpu_replicas}: TensorFlow already initialized its "
                "devices in this process; set it before any other TensorFlow work"
            ) from e
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][
        : max(num_cpu_replicas, 1)
    ]
    return tf.distribute.MirroredStrategy(devices=devices)


def per_replica_batch_size(config: PretrainConfig, num_replicas: int) -> int:
    """global_batch_size / (replicas x accumulation_steps), which must divide."""
    parts = num_replicas * config.accumulation_steps
    if config.global_batch_size % parts:
        raise ValueError(
            f"--global_batch_size={config.global_batch_size} is not divisible by "
            f"{num_replicas} replicas x --gradient_accumulation_steps="
            f"{config.accumulation_steps}"
        )
    return config.global_batch_size // parts


def build_models(config: PretrainConfig):
    """(encoder, pretrainer) for `config.model` at `config.max_frames`."""
    from m3bert_tf.models.encoder import M3BertEncoder
    from m3bert_tf.models.pretrainer import M3BertPretrainer

    m = config.model
    encoder = M3BertEncoder(
        num_layers=m.num_layers, hidden_dim=m.hidden_dim, num_heads=m.num_heads,
        ffn_dim=m.ffn_dim, max_frames=config.max_frames, frame_stack=m.frame_stack,
        dropout=m.dropout, name="encoder",
    )  # fmt: skip
    return encoder, M3BertPretrainer(encoder, name="pretrainer")


def pipeline_config(
    config: PretrainConfig, batch_size: int, data: str = ""
) -> pipeline.PipelineConfig:
    return pipeline.PipelineConfig(
        data=data or config.data,
        max_frames=config.max_frames,
        batch_size=batch_size,
        accumulation_steps=config.accumulation_steps,
        masking=config.masking,
        shuffle_buffer=config.shuffle_buffer,
        holdout_percent=config.holdout_percent,
        seed=config.seed,
    )


def make_eval_dataset(config: PretrainConfig, batch_size: int) -> tf.data.Dataset:
    """Held-out examples with masks fixed by the seed: every evaluation sees the same."""
    if config.eval_data:
        pc = dataclasses.replace(
            pipeline_config(config, batch_size, config.eval_data), holdout_percent=100
        )
    else:
        pc = pipeline_config(config, batch_size)
    pc = dataclasses.replace(pc, accumulation_steps=1, seed=config.seed + 1_000_003)
    return pipeline.make_pretrain_dataset(pc, training=False).take(config.eval_batches)


def weighted_sums(model, inputs, targets, weights, training):
    """Huber sums per masked kind and the weight sums, plus the reconstruction."""
    from m3bert_tf.losses import huber

    reconstruction = model(inputs, training=training)["reconstruction"]
    loss = huber(targets, reconstruction)
    sums = {}
    for kind, w in weights.items():
        sums[f"loss_{kind}"] = tf.reduce_sum(loss * w)
        sums[f"weight_{kind}"] = tf.reduce_sum(w)
    return sums, reconstruction


class Trainer:
    """Holds the strategy, model, optimizer and compiled steps of one run."""

    def __init__(self, config: PretrainConfig, strategy: tf.distribute.Strategy):
        import keras

        from m3bert_tf.train.schedule import WarmupLinearDecay

        self.config = config
        self.strategy = strategy
        self.num_replicas = strategy.num_replicas_in_sync
        self.batch_size = per_replica_batch_size(config, self.num_replicas)
        if config.mixed_precision:
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
        with strategy.scope():
            self.encoder, self.model = build_models(config)
            self.schedule = WarmupLinearDecay(
                config.learning_rate, config.train_steps, config.warmup_fraction
            )
            self.optimizer = keras.optimizers.Adam(
                learning_rate=self.schedule, beta_1=0.9, beta_2=0.999, epsilon=1e-6
            )
            self.optimizer.build(self.model.trainable_variables)
        self._grads_fn = tf.function(self._micro_batch_grads, jit_compile=config.xla)

    def _micro_batch_grads(self, inputs, targets, weights):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            sums, _ = weighted_sums(self.model, inputs, targets, weights, training=True)
        # The gradient of the un-normalized sum: divided by the global weight
        # once every micro-batch and replica is in.
        grads = tape.gradient(sums["loss_total"], variables)
        return [tf.convert_to_tensor(g) for g in grads], sums

    def _replica_step(self, batch):
        inputs, targets, weights = batch
        accumulate = self.config.accumulation_steps
        if accumulate == 1:
            grads, sums = self._grads_fn(inputs, targets, weights)
        else:  # the batch has a leading [accumulation_steps] axis
            grads, sums = None, None
            for i in range(accumulate):
                micro = tf.nest.map_structure(
                    lambda x, i=i: x[i], (inputs, targets, weights)
                )
                g, s = self._grads_fn(*micro)
                grads = (
                    g if grads is None else [a + b for a, b in zip(grads, g, strict=True)]
                )
                sums = s if sums is None else {k: sums[k] + s[k] for k in sums}
        ctx = tf.distribute.get_replica_context()
        grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        sums = ctx.all_reduce(tf.distribute.ReduceOp.SUM, sums)
        count = tf.maximum(sums["weight_total"], 1.0)
        grads = [g / count for g in grads]
        grad_norm = tf.linalg.global_norm(grads)
        if self.config.clip_norm > 0:
            grads, _ = tf.clip_by_global_norm(
                grads, self.config.clip_norm, use_norm=grad_norm
            )
        # The optimizer all-reduces (sums) again: hand it 1/N of the total.
        grads = [g / self.num_replicas for g in grads]
        self.optimizer.apply_gradients(
            zip(grads, self.model.trainable_variables, strict=True)
        )
        metrics = {
            k: tf.math.divide_no_nan(sums[f"loss_{k}"], sums[f"weight_{k}"])
            for k in masking_lib.KINDS
        }
        metrics["loss"] = sums["loss_total"] / count
        metrics["grad_norm"] = grad_norm
        return metrics

    @tf.function
    def train_step(self, iterator):
        # One batch per replica from the host pipeline (see run_pretrain for
        # why this is not a tf.distribute iterator).
        batches = [next(iterator) for _ in range(self.num_replicas)]
        per_replica = self.strategy.experimental_distribute_values_from_function(
            lambda ctx: batches[ctx.replica_id_in_sync_group]
        )
        metrics = self.strategy.run(self._replica_step, args=(per_replica,))
        # Every replica holds the same all-reduced values.
        return tf.nest.map_structure(
            lambda v: self.strategy.experimental_local_results(v)[0], metrics
        )

    @tf.function
    def eval_step(self, batch):
        inputs, targets, weights = batch
        sums, reconstruction = weighted_sums(
            self.model, inputs, targets, weights, training=False
        )
        zero_sums, _ = weighted_sums(
            lambda x, training: {"reconstruction": tf.zeros_like(targets)},
            inputs, targets, weights, training=False,
        )  # fmt: skip
        sums.update({f"zero_{k}": v for k, v in zero_sums.items() if k.startswith("loss_")})
        return sums, reconstruction

    def evaluate(self, dataset) -> dict:
        """Held-out masked Huber loss (total and per kind) and predict-zero loss."""
        totals, image = None, None
        for batch in dataset:
            sums, reconstruction = self.eval_step(batch)
            sums = {k: float(v) for k, v in sums.items()}
            totals = sums if totals is None else {k: totals[k] + sums[k] for k in totals}
            if image is None:
                image = (batch[0]["features"][0], batch[1][0], reconstruction[0])
        if totals is None:
            return {}
        out = {}
        for kind in ("total", *masking_lib.KINDS):
            w = totals[f"weight_{kind}"]
            if w > 0:
                out[f"loss_{kind}"] = totals[f"loss_{kind}"] / w
                out[f"zero_loss_{kind}"] = totals[f"zero_loss_{kind}"] / w
        out["loss_vs_zero"] = out["loss_total"] / out["zero_loss_total"]
        out["image"] = image
        return out


def _image(x):
    """[T, 324] -> [1, 324, T, 1] in [0, 1], low channels at the bottom."""
    x = tf.transpose(tf.cast(x, tf.float32))[::-1]
    lo, hi = tf.reduce_min(x), tf.reduce_max(x)
    return ((x - lo) / tf.maximum(hi - lo, 1e-6))[None, :, :, None]


def _write_eval(writer, step, result):
    with writer.as_default(step=step):
        for k, v in result.items():
            if k != "image":
                tf.summary.scalar(k, v)
        masked, clean, recon = result["image"]
        tf.summary.image("input", _image(clean))
        tf.summary.image("masked_input", _image(masked))
        tf.summary.image("reconstruction", _image(recon))


def run_pretrain(config: PretrainConfig, flags_text: str = "", log=None) -> dict:
    """Trains (or resumes) to `config.train_steps`; returns the final results.

    Raises:
      FloatingPointError: the loss became NaN or infinite (nothing is saved
        after the last good checkpoint).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    strategy = make_strategy(config.num_cpu_replicas)
    os.makedirs(config.model_dir, exist_ok=True)
    with open(os.path.join(config.model_dir, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(config), f, indent=1)
    if flags_text:
        with open(os.path.join(config.model_dir, "flags.txt"), "w") as f:
            f.write(flags_text)

    import keras

    keras.utils.set_random_seed(config.seed)  # weight init and dropout: reproducible runs
    trainer = Trainer(config, strategy)
    train_config = pipeline_config(config, trainer.batch_size)
    # tf.distribute's distributed iterators cannot be checkpointed (TF 2.17),
    # and resuming at the same data position needs that. So the host's input
    # pipeline is built for its InputContext exactly as
    # distribute_datasets_from_function would, read through a plain,
    # checkpointable tf.data iterator, and each replica gets its own batch.
    context = tf.distribute.InputContext(
        num_input_pipelines=1, input_pipeline_id=0,
        num_replicas_in_sync=strategy.num_replicas_in_sync,
    )  # fmt: skip
    dataset = pipeline.make_pretrain_dataset(train_config, True, context)
    eval_dataset = make_eval_dataset(config, trainer.batch_size * trainer.num_replicas)
    iterator, manager = open_checkpoints(
        os.path.join(config.model_dir, "checkpoints"), config.keep_checkpoints,
        {"model": trainer.model, "optimizer": trainer.optimizer},
        lambda: iter(dataset), lambda msg: log(f"pretrain: {msg}"),
    )  # fmt: skip
    step = int(trainer.optimizer.iterations.numpy())
    train_writer = tf.summary.create_file_writer(os.path.join(config.model_dir, "train"))
    eval_writer = tf.summary.create_file_writer(os.path.join(config.model_dir, "eval"))
    log(
        f"pretrain: {strategy.num_replicas_in_sync} replica(s), per-replica batch "
        f"{trainer.batch_size} x {config.accumulation_steps} accumulation = global "
        f"{config.global_batch_size}; step {step} of {config.train_steps}"
    )

    progress = Progress("pretrain", config.train_steps, "steps", interval=0.0, start=step)
    frames_per_step = config.global_batch_size * config.max_frames
    metrics, result, window_start, window_steps = {}, {}, time.monotonic(), 0
    while step < config.train_steps:
        metrics = trainer.train_step(iterator)
        step += 1
        window_steps += 1
        loss = float(metrics["loss"])
        check_finite("pretrain", loss, step, manager)
        if step % config.log_every == 0 or step == config.train_steps:
            elapsed = time.monotonic() - window_start
            rate = frames_per_step * window_steps / max(elapsed, 1e-9)
            with train_writer.as_default(step=step):
                for k, v in metrics.items():
                    tf.summary.scalar(k, v)
                tf.summary.scalar("learning_rate", trainer.schedule(step - 1))
                tf.summary.scalar("frames_per_second", rate)
            progress.update(step, f"loss {loss:.4f}, {rate:.0f} frames/s", force=True)
            window_start, window_steps = time.monotonic(), 0
        if step % config.checkpoint_every == 0 or step == config.train_steps:
            manager.save(checkpoint_number=step)
        if (
            config.eval_every and step % config.eval_every == 0
        ) or step == config.train_steps:
            result = trainer.evaluate(eval_dataset)
            if result:
                _write_eval(eval_writer, step, result)
                log(
                    f"pretrain: eval at step {step}: masked Huber {result['loss_total']:.4f}, "
                    f"predict-zero {result['zero_loss_total']:.4f} "
                    f"(ratio {result['loss_vs_zero']:.3f})"
                )
    if not result:  # resumed at the last step: evaluate what was restored
        result = trainer.evaluate(eval_dataset)
    trainer.encoder.save(os.path.join(config.model_dir, "encoder.keras"))
    results = {
        "step": step,
        "train": {k: float(v) for k, v in metrics.items()},
        "eval": {k: v for k, v in result.items() if k != "image"},
        "num_replicas": strategy.num_replicas_in_sync,
    }
    with open(os.path.join(config.model_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    return results
