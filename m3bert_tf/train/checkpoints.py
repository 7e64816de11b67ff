"""Checkpoints that resume a run at the same step, shared by jobs (the data
position follows from the step: the inputs are addressed by it)."""

import math
import shutil
import tempfile

import tensorflow as tf


class WorkerCheckpoints:
    """A CheckpointManager's save as TensorFlow's multi-worker pattern has it.

    Saving is collective (every worker calls `save`): the chief writes the
    run's checkpoints; every other worker writes into a temporary directory
    of its own, removed after each save. Every worker restores from the
    chief's directory (a file system all workers see).
    """

    def __init__(self, manager: tf.train.CheckpointManager, is_chief: bool):
        self.manager, self.is_chief = manager, is_chief

    @property
    def latest_checkpoint(self):
        return self.manager.latest_checkpoint

    def save(self, checkpoint_number: int):
        if self.is_chief:
            return self.manager.save(checkpoint_number=checkpoint_number)
        scratch = tempfile.mkdtemp(prefix="m3bert-worker-checkpoint-")
        try:
            tf.train.CheckpointManager(self.manager.checkpoint, scratch, 1).save(
                checkpoint_number=checkpoint_number
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return None


def open_checkpoints(directory, keep, objects: dict, log, is_chief: bool = True):
    """Restores the newest readable checkpoint in `directory`, if any.

    Args:
      directory: where checkpoints live.
      keep: how many to keep.
      objects: trackables to save (model, optimizer, counters...). The input
        is not among them: jobs address it by step (`loop.DatasetStream`).
      log: one-line messages.

    Returns:
      A `WorkerCheckpoints` of `objects` (saves where `is_chief` says). A checkpoint whose files
      cannot be read (truncated, corrupted) is reported by name and the next
      older one is used.

    Raises:
      RuntimeError: checkpoints exist but none of them can be read.
    """
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(**objects), directory, keep)
    candidates = list(reversed(manager.checkpoints))  # newest first
    for path in candidates:
        try:
            # expect_partial: checkpoints of release 0.1 also hold an input iterator
            manager.checkpoint.restore(path).expect_partial()
        except (tf.errors.OpError, IndexError, ValueError, OSError) as e:
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            log(
                f"checkpoint {path} cannot be read ({path}.index or its .data files: "
                f"{reason}); trying the one before it"
            )
            continue
        log(f"resumed from {path}")
        return WorkerCheckpoints(manager, is_chief)
    if candidates:
        raise RuntimeError(
            f"{directory}: none of the checkpoints {', '.join(candidates)} can be read; "
            "move them away to start the run from scratch"
        )
    return WorkerCheckpoints(manager, is_chief)


def random_states(model) -> tf.train.Checkpoint:
    """A trackable holding the model's random-number states (dropout's seed
    generators), which Keras keeps out of TensorFlow checkpoints: saved with
    them, a resumed run draws the same dropout masks as an uninterrupted one."""
    states = sorted(
        (v for v in model.variables if v.path.endswith("seed_generator_state")),
        key=lambda v: v.path,
    )
    return tf.train.Checkpoint(**{f"state_{i:03d}": v.value for i, v in enumerate(states)})


class LossGuard:
    """Stops a run whose loss is not finite or explodes, before it is checkpointed.

    "Explodes", judged from the first step: for the first `warmup` steps,
    while the running level is young, a loss above `absolute` or above
    `factor` times the level, whichever is higher (the losses of these jobs
    are of order 1-10 on normalized features and targets: 1e6 is no
    learning, at any step); after them, above `factor` times the running
    level (an exponential moving average). The level is checkpointed with the
    run (`.trackable`), so a resumed run keeps judging against it. The step
    that trips the guard is never saved, so the newest checkpoint is the last
    good one, and the message names it.
    """

    def __init__(
        self, job: str, warmup: int = 20, factor: float = 1e3, smoothing: float = 0.05,
        absolute: float = 1e6,
    ):  # fmt: skip
        self.job, self.warmup, self.factor, self.smoothing = job, warmup, factor, smoothing
        self.absolute = absolute
        self.level = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="loss_level")
        self.count = tf.Variable(0, dtype=tf.int64, trainable=False, name="loss_count")
        self.trackable = tf.train.Checkpoint(level=self.level, count=self.count)

    def check(self, loss: float, step: int, manager) -> None:
        """Raises FloatingPointError naming the last good checkpoint."""
        good = f"The last good checkpoint is {manager.latest_checkpoint or 'none'}"
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"{self.job}: loss is {loss} at step {step}; stopped. {good}. "
                "Lower learning_rate or check the data."
            )
        level, count = float(self.level.numpy()), int(self.count.numpy())
        relative = self.factor * max(level, 1e-12)
        if count < self.warmup:
            bound = max(self.absolute, relative if count else 0.0)
            if loss > bound:
                raise FloatingPointError(
                    f"{self.job}: loss {loss:.4g} at step {step} is above {bound:.4g}, more "
                    f"than any learning run reaches: the run diverged; stopped. {good}. "
                    "Lower learning_rate or check the data."
                )
        elif loss > relative:
            raise FloatingPointError(
                f"{self.job}: loss {loss:.4g} at step {step} is {loss / max(level, 1e-12):.3g}x "
                f"its running level {level:.4g}: the run diverged; stopped. {good}. "
                "Lower learning_rate or check the data."
            )
        self.level.assign(
            loss if count == 0 else (1 - self.smoothing) * level + self.smoothing * loss
        )
        self.count.assign_add(1)
