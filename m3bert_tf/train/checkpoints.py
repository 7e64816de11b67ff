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

    @property
    def checkpoints(self) -> list[str]:
        """The kept checkpoints' paths, oldest first."""
        return list(self.manager.checkpoints)

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


# A checkpoint whose weights grew more than this over the one before it in
# a single save interval is taken as diverged (a run that diverged at 1e6
# times the learning rate had max |w| 9e5 against 1.0).
WEIGHT_GROWTH = 100.0


def _largest_weight(path: str) -> float:
    """max |w| over a checkpoint's floating-point variables (inf when one is
    not finite)."""
    import numpy as np

    reader = tf.train.load_checkpoint(path)
    largest = 0.0
    for name, dtype in reader.get_variable_to_dtype_map().items():
        if not dtype.is_floating:
            continue
        value = np.abs(np.asarray(reader.get_tensor(name), np.float64))
        if value.size:
            if not np.all(np.isfinite(value)):
                return math.inf
            largest = max(largest, float(value.max()))
    return largest


def last_good_checkpoint(checkpoints: list[str], step: int) -> str | None:
    """The newest checkpoint to go on from after the loss at `step` was bad.

    The loss at step s is computed with the weights saved at step s - 1, so
    a checkpoint saved at s - 1 is judged by that loss alone: it is named
    only when its weights are finite and no more than WEIGHT_GROWTH times
    the largest of the checkpoint before it (the bad loss then came from
    the data, not from the weights). An older checkpoint's weights passed
    the guard at the step after it was saved.
    """
    for i in range(len(checkpoints) - 1, -1, -1):
        path = checkpoints[i]
        if int(path.rsplit("-", 1)[1]) < step - 1:
            return path
        largest = _largest_weight(path)
        before = _largest_weight(checkpoints[i - 1]) if i else None
        if math.isfinite(largest) and (before is None or largest <= WEIGHT_GROWTH * before):
            return path
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
    that trips the guard is never saved; the message names the newest
    checkpoint whose weights were not what made the loss bad
    (`last_good_checkpoint`), and how to go on from it.
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
        """Raises FloatingPointError naming the last good checkpoint and how
        to go on from it; else takes the loss into the running level."""
        level, count = float(self.level.numpy()), int(self.count.numpy())
        relative = self.factor * max(level, 1e-12)
        if not math.isfinite(loss):
            problem = f"loss is {loss} at step {step}; stopped"
        elif count < self.warmup and loss > max(self.absolute, relative if count else 0.0):
            bound = max(self.absolute, relative if count else 0.0)
            problem = (
                f"loss {loss:.4g} at step {step} is above {bound:.4g}, more than any "
                "learning run reaches: the run diverged; stopped"
            )
        elif count >= self.warmup and loss > relative:
            problem = (
                f"loss {loss:.4g} at step {step} is {loss / max(level, 1e-12):.3g}x its "
                f"running level {level:.4g}: the run diverged; stopped"
            )
        else:
            self.level.assign(
                loss if count == 0 else (1 - self.smoothing) * level + self.smoothing * loss
            )
            self.count.assign_add(1)
            return
        raise FloatingPointError(f"{self.job}: {problem}. {self._advice(manager, step)}")

    def _advice(self, manager, step: int) -> str:
        kept = getattr(manager, "checkpoints", [])
        good = last_good_checkpoint(kept, step)
        if good is None:
            return (
                "The last good checkpoint is none. Check the data, or start again with a "
                "lower learning_rate."
            )
        newer = kept[kept.index(good) + 1 :]
        move = (
            f"move {', '.join(newer)} (and their .index/.data files) away and "
            if newer
            else ""
        )
        return (
            f"The last good checkpoint is {good}. Check the data; to go on from there, "
            f"{move}run the same command again, or start a new model_dir with a lower "
            "learning_rate (a resumed run keeps its own)."
        )
