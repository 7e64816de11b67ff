"""The pre-training job: masked reconstruction under MirroredStrategy.

    run_pretrain(PretrainConfig(data=..., model_dir=...))

One optimizer step = `gradient_accumulation_steps` micro-batches on every
replica.
The loss is the Huber sum over every masked element of the global batch
divided by the global count of masked elements, so the step is the same on
one device or N replicas, with or without accumulation (up to float
rounding). Gradients are all-reduced, clipped by their global norm, then
applied.

`model_dir` is a run directory (`runs/`): config, normalization,
checkpoints (model, optimizer and input iterator every `checkpoint_every`
steps, `keep_checkpoints` kept), TensorBoard logs, and encoder.keras and
results.json at the end. Started again with the same command, a run resumes
from its last checkpoint at the same step, schedule and data position; a
changed config is refused unless only `PRETRAIN_MAY_CHANGE` fields changed.
"""

import dataclasses
import os
import sys

import tensorflow as tf

from m3bert_tf import runs
from m3bert_tf.data import pipeline, shards
from m3bert_tf.io import storage
from m3bert_tf.train import cluster, distribute
from m3bert_tf.train.checkpoints import random_states
from m3bert_tf.train.cluster import WorkerLost
from m3bert_tf.train.configs import (
    PRETRAIN_ADDED,
    PRETRAIN_MAY_CHANGE,
    ModelConfig,
    PretrainConfig,
)
from m3bert_tf.train.loop import Cadence, DatasetStream, open_session, run_loop
from m3bert_tf.train.objectives import Objective
from m3bert_tf.train.pretrain_data import (
    make_eval_dataset,
    pipeline_config,
    resolve_input_spec,
)
from m3bert_tf.train.pretrain_eval import eval_line, write_eval

__all__ = ["ModelConfig", "PretrainConfig", "Trainer", "WorkerLost", "run_pretrain"]


def build_models(config: PretrainConfig, heads: dict | None = None):
    """(encoder, pretrainer) for `config.model` (any input length), with the
    heads of `Objective.heads()` (default: the reconstruction head)."""
    from m3bert_tf.models.encoder import M3BertEncoder
    from m3bert_tf.models.pretrainer import M3BertPretrainer

    m = config.model
    encoder = M3BertEncoder(
        num_layers=m.num_layers, hidden_dim=m.hidden_dim, num_heads=m.num_heads,
        ffn_dim=m.ffn_dim, frame_stack=m.frame_stack,
        dropout=m.dropout, block=m.block, conv_kernel=m.conv_kernel, name="encoder",
    )  # fmt: skip
    return encoder, M3BertPretrainer(encoder, **(heads or {}), name="pretrainer")


class Trainer:
    """Holds the strategy, model, optimizer and compiled steps of one run."""

    def __init__(self, config: PretrainConfig, strategy: tf.distribute.Strategy):
        import keras

        from m3bert_tf.models.seeding import seed_weights
        from m3bert_tf.train.schedule import WarmupLinearDecay

        self.config = config
        self.strategy = strategy
        self.num_replicas = strategy.num_replicas_in_sync
        self.batch_size = distribute.per_replica_batch_size(
            config.global_batch_size, self.num_replicas, config.gradient_accumulation_steps
        )
        # mixed_precision=auto: bf16 only where the hardware computes it
        self.policy, self.precision_warning = distribute.resolve_precision(
            config.mixed_precision, distribute.local_accelerators(), distribute.cpu_flags()
        )
        self.objective = Objective(config.objective, config.model.frame_stack, config.seed)
        with distribute.precision_policy(self.policy), strategy.scope():
            self.encoder, self.model = build_models(config, self.objective.heads())
            seed_weights(self.model, config.seed)  # weights and dropout: reproducible runs
            self.schedule = WarmupLinearDecay(
                config.learning_rate, config.train_steps, config.warmup_fraction
            )
            self.optimizer = keras.optimizers.Adam(
                learning_rate=self.schedule, beta_1=0.9, beta_2=0.999, epsilon=1e-6
            )
            self.optimizer.build(self.model.trainable_variables)
        self._grads_fn = tf.function(self._micro_batch_grads, jit_compile=config.xla)

    def _micro_batch_grads(self, inputs, targets, masks, counts):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            outputs = self.model(inputs, training=True)
            sums = self.objective.sums(outputs, inputs, targets, masks)
            # Each term over its count in the whole global batch (all-reduced
            # before the pass), so gradients add across micro-batches and replicas.
            loss = self.objective.loss(sums, counts)
        grads = tape.gradient(loss, variables)
        return [tf.convert_to_tensor(g) for g in grads], sums

    def _replica_step(self, batch):
        inputs, targets, masks = batch
        accumulate = self.config.gradient_accumulation_steps
        ctx = tf.distribute.get_replica_context()
        if accumulate == 1:
            micro_batches = [(inputs, targets, masks)]
        else:  # the batch has a leading [accumulation_steps] axis
            micro_batches = [
                tf.nest.map_structure(lambda x, i=i: x[i], (inputs, targets, masks))
                for i in range(accumulate)
            ]
        counts = None
        for micro_inputs, _, micro_masks in micro_batches:
            c = self.objective.counts(micro_inputs, micro_masks)
            counts = c if counts is None else {k: counts[k] + c[k] for k in counts}
        counts = ctx.all_reduce(tf.distribute.ReduceOp.SUM, counts)
        grads, sums = None, None
        for micro in micro_batches:
            g, s = self._grads_fn(*micro, counts)
            grads = g if grads is None else [a + b for a, b in zip(grads, g, strict=True)]
            sums = s if sums is None else {k: sums[k] + s[k] for k in sums}
        grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        sums = ctx.all_reduce(tf.distribute.ReduceOp.SUM, sums)
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
        metrics = self.objective.metrics(sums, counts, accumulate * self.num_replicas)
        metrics["grad_norm"] = grad_norm
        return metrics

    @tf.function
    def train_step(self, iterator):
        # One batch per local replica from this host's pipeline (see
        # _pretrain for why this is not a tf.distribute iterator); replicas
        # are numbered across workers, the local ones consecutively.
        local = distribute.local_replicas(self.strategy)
        batches = [next(iterator) for _ in range(local)]
        per_replica = self.strategy.experimental_distribute_values_from_function(
            lambda ctx: batches[ctx.replica_id_in_sync_group % local]
        )
        metrics = self.strategy.run(self._replica_step, args=(per_replica,))
        # Every replica holds the same all-reduced values.
        return tf.nest.map_structure(
            lambda v: self.strategy.experimental_local_results(v)[0], metrics
        )

    @tf.function
    def eval_step(self, batch):
        return self.objective.eval_sums(self.model, *batch)

    def evaluate(self, dataset) -> dict:
        """Held-out scores of the objective (`Objective.eval_results`) and an
        example's (masked input, clean input, reconstruction) for TensorBoard."""
        totals, image = None, None
        for batch in dataset:
            sums, reconstruction = self.eval_step(batch)
            sums = {k: float(v) for k, v in sums.items()}
            totals = sums if totals is None else {k: totals[k] + sums[k] for k in totals}
            if image is None:
                image = (batch[0]["features"][0], batch[1][0], reconstruction[0])
        if totals is None:
            return {}
        return {**self.objective.eval_results(totals), "image": image}


def run_pretrain(config: PretrainConfig, flags_text: str = "", log=None) -> dict:
    """Trains (or resumes) to `config.train_steps`; returns the final results.

    Raises:
      runs.ConfigMismatch: `model_dir` holds a run with another config, or the
        data is of another feature spec than the run's.
      locks.DirectoryInUse: another job is running in `model_dir`.
      WorkerLost: under multi-worker, another worker stopped.
      FloatingPointError: the loss became NaN or infinite (nothing is saved
        after the last good checkpoint).
      shards.DataError: a shard is missing, replaced or corrupted (named).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    strategy = distribute.make_strategy(
        config.strategy, config.num_cpu_replicas, config.tpu
    )
    worker = distribute.worker_of(strategy)
    job = f"pretrain{worker.label()}"
    run = runs.RunDir(config.model_dir, lambda: worker.is_chief)
    with (
        run.lock(lambda msg: log(f"{job}: {msg}")),
        cluster.lost_worker_named(worker, job, run.file(runs.CHECKPOINTS_DIR)),
    ):
        try:
            return _pretrain(
                config, strategy, worker, run, flags_text, lambda msg: log(f"{job}: {msg}")
            )
        except tf.errors.DataLossError as e:  # a shard the manifest had no digest for
            raise shards.name_corrupt_shard(config.data, e) from None


def _pretrain(
    config: PretrainConfig, strategy, worker, run: runs.RunDir, flags_text: str, log
) -> dict:
    inputs = resolve_input_spec(config, run)
    stats = inputs["stats"]

    trainer = Trainer(config, strategy)
    # tf.distribute's distributed iterators cannot be checkpointed (TF 2.17).
    # So the host's input pipeline is built for its InputContext exactly as
    # distribute_datasets_from_function would, read through a plain tf.data
    # iterator (each replica gets its own batch), and it is addressed by
    # position: a resumed run starts it at step x global batch, and no input
    # buffer goes into a checkpoint.
    # Under multi-worker each worker builds its own pipeline from its
    # InputContext (files sharded by worker) and reads global batch / workers
    # examples a step, so a resumed run starts each at step x that.
    data_config = pipeline_config(config, trainer.batch_size, stats=stats)
    context = distribute.host_input_context(strategy)
    stream = DatasetStream(
        lambda start: pipeline.make_pretrain_dataset(
            data_config,
            True,
            context,
            start,
            cluster.service_job(config.data_service, run.path, worker, start),
        ),
        config.global_batch_size // worker.count,
    )
    if worker.count > 1:
        cluster.log_worker_files(config.data, worker, log)
    eval_dataset = make_eval_dataset(
        config, trainer.batch_size * trainer.num_replicas, stats
    )
    session = open_session(
        "pretrain", run, dataclasses.asdict(config), flags_text, PRETRAIN_MAY_CHANGE,
        {"model": trainer.model, "optimizer": trainer.optimizer,
         "random": random_states(trainer.model)}, lambda: stream,
        lambda: int(trainer.optimizer.iterations.numpy()), log, PRETRAIN_ADDED,
    )  # fmt: skip
    run.write_json(runs.INPUT_SPEC_NAME, inputs)
    if config.data_service:
        log(
            f"input pipeline on the tf.data service at {config.data_service}: its workers "
            "take whole units of the stream in the order they answer, so the example "
            "order is not reproduced exactly"
            + (
                f"; resumed: the stream restarts at example {session.step} x "
                f"{stream.examples_per_step} (re-seeded from the step)"
                if session.step
                else ""
            )
        )
    if trainer.precision_warning:
        log(f"warning: {trainer.precision_warning}")
    where = f" on {worker.count} workers" if worker.count > 1 else ""
    log(
        f"{strategy.num_replicas_in_sync} replica(s){where}, per-replica batch "
        f"{trainer.batch_size} x {config.gradient_accumulation_steps} accumulation = global "
        f"{config.global_batch_size}, {trainer.policy or 'float32'} "
        f"(mixed_precision={config.mixed_precision}); step {session.step} of {config.train_steps}"
    )
    frames_per_step = config.global_batch_size * config.max_frames
    eval_writer, last_eval = session.eval_writer, {}

    def on_log(step, steps, seconds):
        rate = frames_per_step * steps / seconds
        return {"learning_rate": trainer.schedule(step - 1), "frames_per_second": rate}, (
            f"{rate:.0f} frames/s"
        )

    def evaluate(step):
        last_eval.clear()
        last_eval.update(trainer.evaluate(eval_dataset))
        if last_eval:
            write_eval(eval_writer, step, last_eval)
            log(f"eval at step {step}: {eval_line(last_eval)}")
        return False

    cadence = Cadence(
        config.train_steps, config.log_every, config.checkpoint_every, config.eval_every,
        config.snapshot_every,
    )  # fmt: skip

    def snapshot(step):
        if run.is_chief():
            _save_keras(trainer.encoder, runs.snapshot_file(run.path, step))

    result = run_loop(
        f"pretrain{worker.label()}", session, cadence, trainer.train_step, evaluate, on_log,
        snapshot=snapshot,
    )  # fmt: skip
    if not result.evaluated_at_end:  # resumed at the last step: evaluate what was restored
        last_eval.update(trainer.evaluate(eval_dataset))
    if run.is_chief():
        _save_keras(trainer.encoder, run.file(runs.ENCODER_NAME))
    results = {
        "step": result.step,
        "train": {k: float(v) for k, v in result.metrics.items()},
        "eval": {k: v for k, v in last_eval.items() if k != "image"},
        "num_replicas": strategy.num_replicas_in_sync,
    }
    run.write_json(runs.RESULTS_NAME, results)
    return results


def _save_keras(model, path: str) -> None:
    """`model.save(path)` through a temporary name and a rename: a reader
    never sees half a file (Keras writes the zip in place)."""
    directory = os.path.dirname(path)
    storage.makedirs(directory)
    partial = os.path.join(directory, f".{os.path.basename(path)}.partial.keras")
    model.save(partial)
    storage.replace(partial, path)
