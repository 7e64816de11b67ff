"""Checkpoints that resume a run at the same step and data position, shared by jobs."""

import math

import tensorflow as tf


def open_checkpoints(directory, keep, objects: dict, make_iterator, log):
    """Restores the latest checkpoint in `directory`, if any.

    Args:
      directory: where checkpoints live.
      keep: how many to keep.
      objects: trackables to save besides the input iterator (model,
        optimizer, counters...).
      make_iterator: () -> a fresh, checkpointable tf.data iterator.
      log: one-line messages.

    Returns:
      (iterator, tf.train.CheckpointManager). When the input pipeline changed
      since the checkpoint (other data, shard count or batch size), `objects`
      are restored and the iterator starts at the data's beginning, with a
      message saying so.
    """

    def make(iterator):
        checkpoint = tf.train.Checkpoint(**objects, iterator=iterator)
        return tf.train.CheckpointManager(checkpoint, directory, keep)

    iterator = make_iterator()
    manager = make(iterator)
    latest = manager.latest_checkpoint
    if latest:
        try:
            manager.checkpoint.restore(latest).assert_existing_objects_matched()
        except (tf.errors.FailedPreconditionError, tf.errors.InvalidArgumentError) as e:
            iterator = make_iterator()
            manager = make(iterator)
            tf.train.Checkpoint(**objects).restore(latest).expect_partial()
            log(
                "the input pipeline changed since the checkpoint "
                f"({str(e).splitlines()[0][:160]}); restored the rest, reading the data "
                "from its start"
            )
        log(f"resumed from {latest}")
    return iterator, manager


def check_finite(job: str, loss: float, step: int, manager) -> None:
    """Raises FloatingPointError naming the last good checkpoint if `loss` is not finite."""
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"{job}: loss is {loss} at step {step}; stopped. The last good checkpoint is "
            f"{manager.latest_checkpoint or 'none'}. Lower --learning_rate or check the data."
        )
