"""What a job does differently on a cluster: the lost-worker message, which
shards a worker reads, and its tf.data service job."""

import contextlib
import hashlib

import tensorflow as tf

from m3bert_tf.data import pipeline, shards
from m3bert_tf.train.distribute import Worker


class WorkerLost(RuntimeError):
    """A worker of a multi-worker run stopped (killed, preempted, unreachable)."""


@contextlib.contextmanager
def lost_worker_named(worker: Worker, job: str, checkpoints: str):
    """Turns the collective-op failure that a stopped peer causes into
    `WorkerLost`, one line saying what happened and what to do."""
    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.CancelledError) as e:
        if worker.count == 1:
            raise
        lines = [x.strip() for x in str(e).splitlines() if x.strip()]
        told = [x for x in lines if "aborted" in x or "onnection" in x]
        reason = (told or lines or [type(e).__name__])[0][:160]
        raise WorkerLost(
            f"{job}: a worker of the cluster stopped ({reason}). Start every worker "
            f"again with the same command: all resume from the last checkpoint in {checkpoints}"
        ) from None


def log_worker_files(data: str, worker: Worker, log) -> None:
    """Says which shard files this worker reads (or warns that there are
    fewer files than workers, so every worker reads all of them)."""
    files = shards.list_shards(data)
    if pipeline.shards_by_record(len(files), worker.count):
        log(
            f"warning: data has {len(files)} shard file(s) for {worker.count} workers: "
            "every worker reads all of them and keeps every "
            f"{worker.count}th example (write more, smaller shards: bin/extract --shard_size)"
        )
        return
    mine = pipeline.pipeline_files(files, worker.count, worker.index)
    names = [f.rsplit("/", 1)[-1] for f in mine]
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    log(f"reads {len(mine)} of {len(files)} shard files: {shown}")


def service_job(address: str, run_path: str, worker: Worker, start: int):
    """The tf.data service job of one input pipeline ("" address: None): one
    per run directory, worker and start, so a resumed run starts a new job."""
    if not address:
        return None
    run_key = hashlib.sha1(run_path.encode()).hexdigest()[:10]
    return pipeline.DataService(
        address, f"m3bert-pretrain-{run_key}-w{worker.index}-s{start}"
    )
