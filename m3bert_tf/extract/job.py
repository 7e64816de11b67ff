"""The extraction job: audio files -> 324-dim frame features -> TFRecord shards.

    run_extract(ExtractConfig(input=..., output_dir=...))

Each file is decoded, featurized, normalized, serialized and framed as TFRecords
in a worker process (`encode.write_framed`: librosa, no TensorFlow, one filter
bank per process); the parent only appends the finished bytes to shards in
input order and writes them atomically (see `data/shards.py`), so that it
stays a small serial share of the work at any worker count. Re-running on the same output directory
resumes: tracks in finished shards and files already recorded as failures are
skipped. A file that cannot be used is reported in one line, appended to
`failures.jsonl` and listed in the manifest; the job goes on.
"""

import dataclasses
import multiprocessing
import os
import sys

from m3bert_tf import datasets
from m3bert_tf.data.shards import MANIFEST_NAME
from m3bert_tf.datasets.base import LoadResult, Problem, Track
from m3bert_tf.extract.encode import TrackProblem, label_vectors, write_framed
from m3bert_tf.extract.manifest import build_manifest
from m3bert_tf.extract.resume import FailureLog, resume_output
from m3bert_tf.features import workers
from m3bert_tf.features.config import FeatureConfig
from m3bert_tf.fields import at_least, check_choices, choice
from m3bert_tf.io import storage
from m3bert_tf.io.locks import DirectoryLock
from m3bert_tf.io.progress import Progress

RUNNERS = ("local", "beam", "dask")  # `extract.run` calls the one a config names


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExtractConfig:
    """One extraction job.

    Attributes:
      input: a directory (searched recursively for audio files), a glob or a
        CSV manifest (`datasets/csv_manifest.py`); or dataset and dataset_root.
      output_dir: where shards, indexes and manifest.json go.
      features: what to compute per file.
      num_workers: worker processes (0 = all cores).
      shard_size: examples (30 s chunks, about 0.84 MB each) per shard; a
        shard closes at the first track boundary at or past it.
      strict: stop at the first failed file (it is still recorded).
      retry_failed: try again files that an earlier run recorded as failed.
      progress_interval: seconds between progress lines.
      dataset: read a labeled dataset in its publisher's layout from dataset_root:
        a loader of `m3bert_tf.datasets.LOADERS` ("" = none, read input).
      dataset_root: root directory of dataset.
      dataset_options: the loaders' options (each loader reads its own).
      runner: local: a process pool on this machine; beam: Apache Beam (pip
        install 'm3bert_tf[beam]'; DirectRunner unless beam_options names one:
        PortableRunner for Flink and Spark, DataflowRunner); dask: Beam's
        DaskRunner on the Dask cluster at dask_scheduler (pip install
        'm3bert_tf[dask]').
      beam_options: Beam pipeline options, e.g. "--runner=DataflowRunner
        --project=P --region=R --temp_location=gs://B/tmp" (with runner=dask:
        DaskRunner's own, e.g. "--dask_connection_timeout=30").
      dask_scheduler: the Dask scheduler's address, HOST:PORT (or
        tcp://HOST:PORT), for runner=dask; its workers must reach output_dir.
      engine_stall_seconds: runner=beam or dask: when no file (then no shard)
        has finished for this long, cancel the engine's job and end with the
        files left (a worker lost where the engine does not start another);
        0 = wait forever. Not with the DirectRunner, which runs in this process.
    """

    input: str = ""
    output_dir: str
    dataset: str = choice("", ("",) + tuple(datasets.LOADERS))
    dataset_root: str = ""
    dataset_options: datasets.DatasetOptions = datasets.DatasetOptions()
    runner: str = choice("local", RUNNERS)
    beam_options: str = ""
    dask_scheduler: str = ""
    engine_stall_seconds: float = 3600.0
    features: FeatureConfig = FeatureConfig()
    num_workers: int = 0
    shard_size: int = 128
    strict: bool = False
    retry_failed: bool = False
    progress_interval: float = 5.0

    def __post_init__(self):
        check_choices(self)
        at_least(self, 1, "shard_size")
        at_least(self, 0, "num_workers")
        at_least(self, 0, "engine_stall_seconds")
        if bool(self.input) == bool(self.dataset):
            raise ValueError("input: give either input, or dataset with dataset_root")
        if bool(self.dataset) != bool(self.dataset_root):
            raise ValueError(
                f"dataset_root: needed with dataset, and only with it (dataset={self.dataset!r})"
            )
        if self.runner != "local" and self.strict:
            raise ValueError("strict: stops at the first failure, only with runner=local")
        if self.beam_options and self.runner == "local":
            raise ValueError("beam_options needs runner=beam or runner=dask")
        if bool(self.dask_scheduler) != (self.runner == "dask"):
            raise ValueError(
                "dask_scheduler: the Dask scheduler's HOST:PORT, needed with runner=dask "
                f"and only with it (runner={self.runner!r})"
            )
        if self.runner == "dask" and "--runner" in self.beam_options:
            raise ValueError(
                "beam_options: runner=dask runs Beam's DaskRunner; name no --runner"
            )

    @property
    def source(self) -> str:
        """What is read: input, or dataset_root with a dataset."""
        return self.dataset_root if self.dataset else self.input


def find_tracks(config: ExtractConfig) -> LoadResult:
    """The tracks, tasks and load problems of `config`'s input (`datasets.find_tracks`)."""
    return datasets.find_tracks(
        config.source,
        config.dataset,
        config.dataset_options.for_loader(config.dataset or "csv"),
    )


# --- Worker side (librosa only) ----------------------------------------------

_EXTRACTOR = None
_SPILL_DIR = None


def _init_worker(feature_config: FeatureConfig, spill_dir: str) -> None:
    global _EXTRACTOR, _SPILL_DIR
    from m3bert_tf.features.frames import FeatureExtractor

    _EXTRACTOR = FeatureExtractor(feature_config)
    workers.configure()  # one BLAS thread, freed memory kept for the next file
    # A track's features spill there and its framed records wait there
    # (temporary files, debris if killed) for the parent to append: no track
    # is ever whole in memory.
    _SPILL_DIR = spill_dir


def _start_workers(num_workers: int, feature_config: FeatureConfig, spill_dir: str):
    """The worker pool. On Linux the workers are forked from this process once
    it holds the extractor: they start in milliseconds with its libraries and
    filter banks (copy-on-write), where spawned ones would each import and load
    them (0.35 s a worker: a fifth of a 2-worker job's gain on 128 clips).
    This process has started no threads of its own (numpy's BLAS pool stops
    itself around a fork) and its directory lock is closed in the children
    (`io.locks`). Elsewhere (macOS, where forking is unsafe) they are spawned.
    """
    if sys.platform.startswith("linux"):
        _init_worker(feature_config, spill_dir)
        return multiprocessing.get_context("fork").Pool(
            num_workers, initializer=workers.leave_interrupts_to_the_job
        )
    return multiprocessing.get_context("spawn").Pool(
        num_workers, initializer=_init_spawned_worker, initargs=(feature_config, spill_dir)
    )


def _init_spawned_worker(feature_config: FeatureConfig, spill_dir: str) -> None:
    workers.leave_interrupts_to_the_job()
    _init_worker(feature_config, spill_dir)


def _encode_in_worker(job: tuple[Track, dict]):
    """(track, label vectors) -> its FramedTrack, or the Problem with it."""
    track, labels = job
    try:
        return write_framed(track, _EXTRACTOR, labels, _SPILL_DIR)
    except TrackProblem as e:
        return e.problem


# --- Parent side --------------------------------------------------------------


class StrictStop(RuntimeError):
    """`strict` is set and a file failed (it is recorded in failures.jsonl)."""


class EngineFailed(RuntimeError):
    """Beam's or Dask's job ended with an error (`extract/beam.py`); the
    message names the files left without a result (finished shards are kept
    for the rerun)."""


def run_extract(config: ExtractConfig, log=None) -> dict:
    """Runs (or resumes) one extraction job; returns the manifest dict.

    Raises:
      FileNotFoundError: `config.source` names no audio (nothing is created).
      locks.DirectoryInUse: another job is writing into `config.output_dir`.
      StrictStop: `config.strict` and a file failed.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    loaded = find_tracks(config)  # before anything is created: a bad input leaves no trace
    with DirectoryLock(config.output_dir, "output_dir", lambda m: log(f"extract: {m}")):
        return _run_locked(config, loaded, log)


def _run_locked(config: ExtractConfig, loaded: LoadResult, log) -> dict:
    from m3bert_tf.data import shards
    from m3bert_tf.data.shard_writer import ShardWriter

    resumed = resume_output(config, loaded, log)
    spec, task_specs, todo = resumed.spec, resumed.task_specs, resumed.todo
    finished, next_number = resumed.finished, resumed.next_number
    failures_path, old_failures = resumed.failures_path, resumed.old_failures

    failures = FailureLog(failures_path, log)
    jobs = []
    for track in todo:  # labels first: a bad label costs no featurization
        try:
            jobs.append((track, label_vectors(track, loaded.specs)))
        except TrackProblem as e:
            failures.add(e.problem)
    num_workers = config.num_workers or os.cpu_count() or 1
    num_workers = max(1, min(num_workers, len(jobs)))
    if jobs:  # once, here: workers only read the kernel and filter bank caches
        workers.prepare(config.features, log)
    audio_seconds = 0.0
    progress = Progress("extract", len(todo), "files", config.progress_interval)
    # Features wait in a local file between the passes: the output dir when
    # it is on this machine (a killed run's debris is removed with its
    # shards'), else a directory of this job's own, removed when it ends.
    scratch = storage.LocalScratch(config.output_dir, prefix="m3bert-extract-")
    spill_dir = scratch.path
    writer, pool = None, None
    try:
        if num_workers == 1:
            _init_worker(config.features, spill_dir)
            results = (_encode_in_worker(j) for j in jobs)
        else:
            pool = _start_workers(num_workers, config.features, spill_dir)
            # In input order, so the shards are the same for any worker count
            # (workers run ahead; only the writing waits).
            results = pool.imap(_encode_in_worker, jobs, chunksize=1)
        for count, result in enumerate(results, start=len(failures.new) + 1):
            if isinstance(result, Problem):
                failures.add(result)
                if config.strict:
                    raise StrictStop(f"stopped at the first failure (strict): {result}")
            else:
                audio_seconds += result.duration_s
                if writer is None:
                    name = shards.SHARD_PATTERN.format(next_number)
                    writer = ShardWriter(os.path.join(config.output_dir, name))
                    next_number += 1
                writer.add_framed(result.path, result.records, result.entry, result.sums)
                if writer.num_examples >= config.shard_size:
                    finished.append(writer.close())
                    writer = None
            hours_rate = audio_seconds / 3600 / max(progress.elapsed, 1e-9)
            progress.update(
                count, f"{hours_rate:.3f} audio-h/s, {len(failures.new)} failed"
            )
        if writer is not None:
            finished.append(writer.close())
    finally:
        failures.close()
        if pool is not None:
            pool.terminate()
            pool.join()
        scratch.close()
    problems = [p.to_json() for p in loaded.problems + resumed.refused]
    manifest = build_manifest(
        config, spec, task_specs, finished, problems + old_failures + failures.new
    )
    storage.write_json(os.path.join(config.output_dir, MANIFEST_NAME), manifest)
    manifest["run"] = {
        "files": len(todo),
        "seconds": progress.elapsed,
        "audio_seconds": audio_seconds,
        "new_failures": len(failures.new),
        "num_workers": num_workers,
    }
    return manifest
