"""The skeleton every training job shares: run directory, checkpoints, summary
writers, and the step loop with its log / evaluation / checkpoint / NaN cadence.

    session = open_session("pretrain", run, config_dict, flags_text, may_change,
                           objects, make_stream, step_of, log)
    result = run_loop("pretrain", session, cadence, train_step, log, ...)

A job supplies its compiled `train_step(iterator) -> {"loss": ..., ...}`, an
optional `evaluate(step) -> stop_early` and an optional `on_log(step,
metrics, seconds) -> (extra scalars, extra text)`.
"""

import dataclasses
import time
from collections.abc import Callable

import tensorflow as tf

from m3bert_tf import runs
from m3bert_tf.io.progress import Progress
from m3bert_tf.train.checkpoints import LossGuard, WorkerCheckpoints, open_checkpoints


@dataclasses.dataclass(frozen=True)
class Cadence:
    """When the loop logs, evaluates and checkpoints (every N steps; 0 = at the end only)."""

    train_steps: int
    log_every: int
    checkpoint_every: int
    eval_every: int
    snapshot_every: int = 0  # 0 = never

    @staticmethod
    def due(step: int, every: int, last: int) -> bool:
        return step == last or (every > 0 and step % every == 0)


@dataclasses.dataclass(frozen=True)
class DatasetStream:
    """A tf.data input addressed by position: `make(start)` builds the dataset
    from example `start` of the stream, and step s begins at
    s x `examples_per_step`. Nothing of it goes into a checkpoint."""

    make: Callable[[int], tf.data.Dataset]
    examples_per_step: int

    def seek(self, step: int):
        return iter(self.make(step * self.examples_per_step))


@dataclasses.dataclass
class Session:
    """What a job opened in its run directory."""

    run: runs.RunDir
    iterator: object
    manager: WorkerCheckpoints
    step: int
    train_writer: object
    eval_writer: object
    guard: LossGuard


def summary_writer(run: runs.RunDir, name: str):
    """A TensorBoard writer under the run dir; a no-op writer off the chief."""
    if not run.is_chief():
        return tf.summary.create_noop_writer()
    return tf.summary.create_file_writer(run.file(name))


def open_session(
    job: str,
    run: runs.RunDir,
    config: dict,
    flags_text: str,
    may_change: tuple[str, ...],
    objects: dict,
    make_stream: Callable,
    step_of: Callable[[], int],
    log: Callable[[str], None],
    added: dict | None = None,
) -> Session:
    """Starts or resumes a run: config check, checkpoints restored (with the
    loss guard's running level), writers opened.

    The input is a stream addressed by step: `make_stream()` (called once the
    config is accepted, so a refused run prepares no input) returns it, and
    its `seek(step)` returns the iterator that starts at the restored step
    (`DatasetStream`, `batches.CachedBatches`), so a checkpoint holds no
    input buffers. `added`: fields new since an earlier release and the value
    a run stored without them had (`runs.RunDir.start`)."""
    guard = LossGuard(job)
    objects = {**objects, "loss_guard": guard.trackable}
    changes = run.start(config, flags_text, may_change, added)
    if changes:
        log(
            "config changed on resume: "
            + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changes.items())
        )
    manager = open_checkpoints(
        run.file(runs.CHECKPOINTS_DIR), config["keep_checkpoints"], objects, log,
        run.is_chief(),
    )  # fmt: skip
    step = step_of()
    iterator = make_stream().seek(step)
    return Session(
        run=run,
        iterator=iterator,
        manager=manager,
        step=step,
        train_writer=summary_writer(run, runs.TRAIN_LOGS_DIR),
        eval_writer=summary_writer(run, runs.EVAL_LOGS_DIR),
        guard=guard,
    )


@dataclasses.dataclass
class LoopResult:
    step: int
    metrics: dict
    stopped_early: bool
    evaluated_at_end: bool


def run_loop(
    job: str,
    session: Session,
    cadence: Cadence,
    train_step: Callable,
    evaluate: Callable[[int], bool] | None = None,
    on_log: Callable | None = None,
    stopped_early: bool = False,
    snapshot: Callable[[int], None] | None = None,
) -> LoopResult:
    """Steps from `session.step` to `cadence.train_steps` (or an early stop).

    Every step: the loss must be finite and not explode (`LossGuard`; else
    FloatingPointError naming the last good checkpoint). At log steps: the metrics go to TensorBoard and a
    progress line is printed. At evaluation steps: `evaluate(step)`, which
    may ask to stop. At checkpoint steps, the last step and an early stop:
    a checkpoint. Every `cadence.snapshot_every` steps: `snapshot(step)`.
    """
    step, last = session.step, cadence.train_steps
    progress = Progress(job, last, "steps", interval=0.0, start=step)
    metrics, evaluated, window_start, window_steps = {}, False, time.monotonic(), 0
    while step < last and not stopped_early:
        metrics = train_step(session.iterator)
        step += 1
        window_steps += 1
        loss = float(metrics["loss"])
        session.guard.check(loss, step, session.manager)
        if Cadence.due(step, cadence.log_every, last):
            seconds = max(time.monotonic() - window_start, 1e-9)
            scalars, text = on_log(step, window_steps, seconds) if on_log else ({}, "")
            with session.train_writer.as_default(step=step):
                for k, v in {**metrics, **scalars}.items():
                    tf.summary.scalar(k, v)
            progress.update(
                step, f"loss {loss:.4f}" + (f", {text}" if text else ""), force=True
            )
            window_start, window_steps = time.monotonic(), 0
        evaluated = False
        if evaluate is not None and Cadence.due(step, cadence.eval_every, last):
            stopped_early = bool(evaluate(step))
            evaluated = True
        if Cadence.due(step, cadence.checkpoint_every, last) or stopped_early:
            session.manager.save(checkpoint_number=step)
        if (
            snapshot is not None
            and cadence.snapshot_every
            and step % cadence.snapshot_every == 0
        ):
            snapshot(step)
    return LoopResult(step, metrics, stopped_early, evaluated)
