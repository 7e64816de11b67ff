"""Extraction in two passes through shared storage: what a distributed
engine's workers do (`extract/beam.py`: Beam's runners, Dask), with no
engine imported here.

    stage_track(job, staging, extractor)      # pass 1, per track, on a worker
    plans = plan_shards(staged, shard_size, next_number)   # the job's process
    write_shard(plan, staging, output_dir)    # pass 2, per shard, on a worker

Pass 1 featurizes one track and leaves its records, framed as a shard holds
them, in `<staging>/<n>.records`, then its index entry and statistics sums
in `<n>.json` (or the reason it failed in `<n>.failed.json`); `n` is its
place in the input. The job's process reads only those small JSON files and
plans the shards by the local pool's rule (input order, a shard closes at
the first track boundary at or past `shard_size` examples), so the shards
are byte-identical to the local pool's for any engine and worker count.
Pass 2 concatenates each shard's staged records into the output directory
(`shard_writer.ShardWriter`: written under a temporary name, the index first,
then renamed). Workers share nothing with the job's process but storage
(a local disk, file://, gs://...): no result travels back through the
engine, so a worker retried after a kill writes the same bytes again.
"""

import dataclasses
import os
import uuid

from m3bert_tf.data import shards
from m3bert_tf.data.shard_writer import ShardWriter
from m3bert_tf.datasets.base import Problem, Track
from m3bert_tf.extract.encode import TrackProblem, write_framed
from m3bert_tf.io import storage

RECORDS_SUFFIX = ".records"
STAGED_SUFFIX = ".json"
FAILED_SUFFIX = ".failed.json"


def staged_name(number: int) -> str:
    """The staging file stem of the input's `number`-th track to do."""
    return f"{number:08d}"


@dataclasses.dataclass(frozen=True)
class TrackJob:
    """One track of pass 1: its place in the input, the track and its label
    vectors (checked by the job's process first, as the local pool does)."""

    number: int
    track: Track
    labels: dict


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """One shard of pass 2: its path and the staged tracks it holds, in
    input order, each (number, records, index entry, statistics sums)."""

    path: str
    tracks: tuple


_EXTRACTORS: dict = {}


def worker_extractor(feature_config):
    """The worker process's FeatureExtractor of `feature_config`, made once:
    DaskRunner sets a DoFn up again for every task (8 ms, an eighth of a
    30 s clip's featurizing). The first call also configures the process as
    the local pool's workers are (one BLAS thread, freed memory kept)."""
    if feature_config not in _EXTRACTORS:
        from m3bert_tf.features import frames as frames_lib
        from m3bert_tf.features import workers

        workers.configure()
        _EXTRACTORS[feature_config] = frames_lib.FeatureExtractor(feature_config)
    return _EXTRACTORS[feature_config]


def stage_track(job: TrackJob, staging: str, extractor, scratch: str) -> str:
    """Featurizes `job.track` and stages it (records, then its JSON); a
    track that cannot be used is staged as `<n>.failed.json`. `scratch` is
    a local directory for the spilled features (the staging directory
    itself when it is on this machine). Returns the JSON file written.

    Raises:
      storage.OutputError: the staging side cannot be written (the job stops).
    """
    stem = os.path.join(staging, staged_name(job.number))
    try:
        framed = write_framed(job.track, extractor, job.labels, scratch)
    except TrackProblem as e:
        storage.write_json(stem + FAILED_SUFFIX, dataclasses.asdict(e.problem))
        return stem + FAILED_SUFFIX
    storage.put_file(framed.path, stem + RECORDS_SUFFIX)
    summary = {
        "records": framed.records,
        "entry": framed.entry,
        "sums": framed.sums,
        "duration_s": framed.duration_s,
    }
    storage.write_json(stem + STAGED_SUFFIX, summary)
    return stem + STAGED_SUFFIX


def read_staged(staging: str, jobs: list[TrackJob]) -> tuple[list, list, list]:
    """What pass 1 left, in input order: ([(number, summary)], [Problem of
    a failed track], [TrackJob with no result]: none when the engine ran
    every element). The directory is listed once (an object store answers
    one listing faster than a question per track)."""
    present = {os.path.basename(p) for p in storage.glob(os.path.join(staging, "*.json"))}
    staged, failed, missing = [], [], []
    for job in jobs:
        stem = os.path.join(staging, staged_name(job.number))
        if os.path.basename(stem) + STAGED_SUFFIX in present:
            staged.append((job.number, storage.read_json(stem + STAGED_SUFFIX)))
        elif os.path.basename(stem) + FAILED_SUFFIX in present:
            failed.append(Problem(**storage.read_json(stem + FAILED_SUFFIX)))
        else:
            missing.append(job)
    return staged, failed, missing


def count_staged(staging: str) -> int:
    """Tracks pass 1 has finished so far (staged or failed): for progress."""
    return len(storage.glob(os.path.join(staging, "*" + STAGED_SUFFIX)))


def plan_shards(
    staged: list, output_dir: str, shard_size: int, next_number: int
) -> list[ShardPlan]:
    """The local pool's shards for the staged tracks (`read_staged`'s first
    list, in input order): a shard closes at the first track boundary at or
    past `shard_size` examples; numbers count on from `next_number`."""
    plans, current, examples = [], [], 0
    for number, summary in staged:
        current.append((number, summary["records"], summary["entry"], summary["sums"]))
        examples += summary["records"]
        if examples >= shard_size:
            plans.append(current)
            current, examples = [], 0
    if current:
        plans.append(current)
    return [
        ShardPlan(
            os.path.join(output_dir, shards.SHARD_PATTERN.format(next_number + i)),
            tuple(tracks),
        )
        for i, tracks in enumerate(plans)
    ]


def write_shard(plan: ShardPlan, staging: str) -> str:
    """Concatenates the staged records of `plan`'s tracks into its shard and
    index (the staged files stay for a retried attempt; the job removes the
    staging directory). Each attempt writes under a temporary name of its
    own, so two attempts of one shard never write into one file. Returns
    the shard's name."""
    writer = ShardWriter(plan.path, attempt=uuid.uuid4().hex[:12])
    try:
        for number, records, entry, sums in plan.tracks:
            staged = os.path.join(staging, staged_name(number) + RECORDS_SUFFIX)
            writer.add_framed(staged, records, entry, sums, remove=False)
        return writer.close()["shard"]
    except BaseException:
        writer.abort()
        raise


def finished_shard(plan: ShardPlan) -> dict:
    """The finished-shard record of a written `plan` (read from its index),
    as the manifest lists it.

    Raises:
      RuntimeError: the engine reported success but the shard or its index
        is not there or does not add up.
    """
    info = shards.read_index(plan.path) if storage.exists(plan.path) else None
    if info is None or info["num_examples"] != sum(t[1] for t in plan.tracks):
        raise RuntimeError(
            f"{plan.path}: the engine reported the shard written, but it is missing "
            "or its index does not add up"
        )
    return {"shard": os.path.basename(plan.path), **info}
