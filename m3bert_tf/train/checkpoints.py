"""Checkpoints that resume a run at the same step and data position, shared by jobs."""

import math

import tensorflow as tf


def _restore(objects, make_iterator, directory, keep, path, log):
    """(iterator, manager) restored from `path`; see `open_checkpoints`."""

    def make(iterator):
        checkpoint = tf.train.Checkpoint(**objects, iterator=iterator)
        return tf.train.CheckpointManager(checkpoint, directory, keep)

    iterator = make_iterator()
    manager = make(iterator)
    try:
        manager.checkpoint.restore(path).assert_existing_objects_matched()
    except (tf.errors.FailedPreconditionError, tf.errors.InvalidArgumentError) as e:
        iterator = make_iterator()
        manager = make(iterator)
        tf.train.Checkpoint(**objects).restore(path).expect_partial()
        log(
            "the input pipeline changed since the checkpoint "
            f"({str(e).splitlines()[0][:160]}); restored the rest, reading the data "
            "from its start"
        )
    return iterator, manager


def open_checkpoints(directory, keep, objects: dict, make_iterator, log):
    """Restores the newest readable checkpoint in `directory`, if any.

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
      message saying so. A checkpoint whose files cannot be read (truncated,
      corrupted) is reported by name and the next older one is used.

    Raises:
      RuntimeError: checkpoints exist but none of them can be read.
    """
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(**objects), directory, keep)
    candidates = list(reversed(manager.checkpoints))  # newest first
    if not candidates:
        iterator = make_iterator()
        manager = tf.train.CheckpointManager(
            tf.train.Checkpoint(**objects, iterator=iterator), directory, keep
        )
        return iterator, manager
    for path in candidates:
        try:
            iterator, manager = _restore(objects, make_iterator, directory, keep, path, log)
        except (tf.errors.OpError, IndexError, ValueError, OSError) as e:
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            log(
                f"checkpoint {path} cannot be read ({path}.index or its .data files: "
                f"{reason}); trying the one before it"
            )
            continue
        log(f"resumed from {path}")
        return iterator, manager
    raise RuntimeError(
        f"{directory}: none of the checkpoints {', '.join(candidates)} can be read; move "
        "them away to start the run from scratch"
    )


def check_finite(job: str, loss: float, step: int, manager) -> None:
    """Raises FloatingPointError naming the last good checkpoint if `loss` is not finite."""
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"{job}: loss is {loss} at step {step}; stopped. The last good checkpoint is "
            f"{manager.latest_checkpoint or 'none'}. Lower --learning_rate or check the data."
        )
