"""The extraction job on Apache Beam: `bin/extract --runner=beam` (any Beam
runner: DirectRunner here, the portable runner of Flink and Spark, Dataflow)
and `--runner=dask` (Beam's DaskRunner on a `dask.distributed` cluster).

    run_extract_beam(ExtractConfig(..., runner="beam", beam_options="--runner=PortableRunner ..."))
    run_extract_beam(ExtractConfig(..., runner="dask", dask_scheduler="10.0.0.5:8786"))

Two pipelines of one step each (`extract/staged.py`): pass 1 featurizes
each track on a worker and stages its framed records and its index entry in
`<output_dir>/beam-staging/`; this process plans the shards from the staged
JSON files by the local pool's rule; pass 2 writes each shard and its index
from a worker. The shards, indexes and manifest are byte-identical to the
local pool's for the same input. Each pass is Create -> Reshuffle -> ParDo
and nothing else (no side inputs, no tagged outputs, no Beam sinks): the
subset every runner executes alike, DaskRunner's included, and the
Reshuffle lets Dataflow spread the tracks over workers instead of fusing
them onto one.

Resuming: tracks in finished shards or recorded as failures are skipped,
as locally; a run killed while the engine works leaves finished shards
(kept) and the staging directory, removed by the next run. An engine that
fails (a worker lost for good, a task that keeps failing) ends the job with
one line naming the files left without a result.
"""

import contextlib
import logging
import os
import re
import shlex
import sys
import threading
import time

from m3bert_tf.data import shards
from m3bert_tf.extract import staged as staged_lib
from m3bert_tf.extract.encode import TrackProblem, label_vectors
from m3bert_tf.extract.job import EngineFailed, ExtractConfig, find_tracks
from m3bert_tf.extract.manifest import build_manifest
from m3bert_tf.extract.resume import FailureLog, resume_output
from m3bert_tf.io import storage
from m3bert_tf.io.locks import DirectoryLock
from m3bert_tf.io.progress import Progress

STAGING_DIR = "beam-staging"
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"


def _stage_fn(feature_config, staging: str):
    """Pass 1's DoFn: `staged.stage_track` on each TrackJob (one extractor
    and one local scratch directory per worker)."""
    import apache_beam as beam

    class Stage(beam.DoFn):
        def setup(self):
            self.extractor = staged_lib.worker_extractor(feature_config)
            self.scratch = storage.LocalScratch(staging, prefix="m3bert-stage-")

        def process(self, job):
            yield os.path.basename(
                staged_lib.stage_track(job, staging, self.extractor, self.scratch.path)
            )

        def teardown(self):
            self.scratch.close()

    return Stage()


def _write_fn(staging: str):
    """Pass 2's DoFn: `staged.write_shard` on each ShardPlan."""
    import apache_beam as beam

    class Write(beam.DoFn):
        def process(self, plan):
            yield staged_lib.write_shard(plan, staging)

    return Write()


def beam_pipeline_options(config: ExtractConfig, num_elements: int):
    """Beam's PipelineOptions for one pass over `num_elements` elements:
    `--beam_options` (a command-line string); for runner=dask, Beam's
    DaskRunner on `config.dask_scheduler` with one Dask partition per
    element unless the options set them; without a runner, DirectRunner
    over `num_workers` processes (one: in this process)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    argv = shlex.split(config.beam_options)
    if config.runner == "dask":
        address = config.dask_scheduler
        argv += [f"--runner={DASK_RUNNER}",
                 "--dask_client_address=" + (address if "://" in address else f"tcp://{address}")]  # fmt: skip
        if not any(
            a.startswith(("--dask_npartitions", "--dask_partition_size")) for a in argv
        ):
            # DaskRunner's default puts up to 128 elements in one task: one worker's
            argv.append(f"--dask_npartitions={max(1, num_elements)}")
    elif not any(a.startswith("--runner") for a in argv):
        argv.append("--runner=DirectRunner")
        num_workers = config.num_workers or os.cpu_count() or 1
        if num_workers > 1:
            argv += [
                "--direct_running_mode=multi_processing",
                f"--direct_num_workers={num_workers}",
            ]
    return PipelineOptions(argv)


# What DirectRunner's worker processes log about themselves at start and exit.
_WORKER_NOTICE = re.compile(r"^(INFO|WARNING):(root|__main__|apache_beam[\w.]*):")


@contextlib.contextmanager
def _quiet_workers():
    """Drops the start-up and shut-down notices Beam's local worker processes
    write to the stderr they inherit (they configure their own logging);
    their other lines, errors included, pass through."""
    read_end, write_end = os.pipe()
    saved = os.dup(2)
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward():
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                if not _WORKER_NOTICE.match(line.decode(errors="replace")):
                    os.write(saved, line)

    thread = threading.Thread(target=forward, daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: forward() ends
        thread.join(timeout=10)
        os.close(saved)


class _Stalled(RuntimeError):
    pass


def _run_pass(config: ExtractConfig, name: str, items: list, fn, count, progress=None):
    """Runs one pass, Create(items) -> Reshuffle -> ParDo(fn), to its end.

    The engine reports nothing back, so a thread watches what the pass has
    written (`count()`: files staged, shards written) for the progress line
    and the stall guard: when it stays the same for
    `config.engine_stall_seconds`, the engine's job is cancelled and this
    raises (a worker lost where the engine does not start another: Beam's
    reference job service waits for it forever). Engines that run the job
    elsewhere (the portable runner, Dataflow, Dask) can be cancelled; the
    DirectRunner runs it inside `run()` and raises its workers' errors itself.
    """
    import apache_beam as beam

    pipeline = beam.Pipeline(options=beam_pipeline_options(config, len(items)))
    _ = (
        pipeline
        | f"{name}Items" >> beam.Create(items)
        | f"{name}Spread" >> beam.Reshuffle()
        | name >> beam.ParDo(fn)
    )  # fmt: skip
    stop, running = threading.Event(), {"result": None, "stalled": False}
    limit = config.engine_stall_seconds

    def watch():
        last, since = -1, time.monotonic()
        while not stop.wait(min(config.progress_interval, 5.0)):
            done = count()
            if progress is not None:
                progress.update(done)
            if done != last:
                last, since = done, time.monotonic()
            elif limit and time.monotonic() - since > limit and running["result"]:
                running["stalled"] = True
                with contextlib.suppress(Exception):
                    running["result"].cancel()
                return

    thread = threading.Thread(target=watch, daemon=True)
    with _quiet_workers():
        thread.start()
        try:
            running["result"] = result = pipeline.run()
            try:
                result.wait_until_finish()
            finally:
                client = getattr(result, "client", None)  # DaskRunner's connection
                if client is not None:
                    client.close()
        except Exception as e:
            if running["stalled"]:
                raise _Stalled(_stall_words(limit)) from e
            raise
        finally:
            stop.set()
            thread.join(timeout=10)
    if running["stalled"]:
        raise _Stalled(_stall_words(limit))
    if progress is not None:
        progress.update(count(), force=True)


def _stall_words(limit: float) -> str:
    return (
        f"nothing finished for {limit:.0f} s (engine_stall_seconds), so the job was "
        "cancelled: a worker may be lost where the engine does not start another"
    )


def _engine_failed(engine: str, error: Exception, left: list, total: int) -> EngineFailed:
    """One line: what the engine said (its last line) and the files left."""
    lines = [x.strip() for x in str(error).splitlines() if x.strip()]
    said = lines[-1][:300] if lines else ""
    if not isinstance(error, _Stalled):
        said = f"{type(error).__name__}: {said}"
    names = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
    return EngineFailed(
        f"the {engine} job failed ({said}); {len(left)} of {total} files have no "
        f"finished shard: {names}. Finished shards are kept: run the same command "
        "again to extract the rest"
    )


def _import_engine(runner: str):
    """Imports Apache Beam (and Dask's client for runner=dask) without their
    import-time notices (BigQuery clients missing, a slower pure-Python
    CRC): nothing a user of this job acts on."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        import apache_beam  # noqa: F401

        if runner == "dask":
            import dask.distributed  # noqa: F401
    except ImportError as e:
        extra = "dask" if runner == "dask" else "beam"
        raise ImportError(
            f"runner={runner} needs {'Dask and ' if runner == 'dask' else ''}Apache Beam: "
            f"pip install 'm3bert_tf[{extra}]' ({e})"
        ) from None
    finally:
        root.setLevel(level)
    logging.getLogger("apache_beam").setLevel(logging.ERROR)


def engine_name(config: ExtractConfig) -> str:
    if config.runner == "dask":
        return f"Dask ({config.dask_scheduler})"
    runner = re.search(r"--runner[= ](\S+)", config.beam_options)
    return f"Apache Beam ({runner.group(1) if runner else 'DirectRunner'})"


def run_extract_beam(config: ExtractConfig, log=None) -> dict:
    """Runs (or resumes) one extraction job on Beam or Dask; returns the
    manifest dict.

    Raises:
      FileNotFoundError: `config.source` names no audio (nothing is created).
      locks.DirectoryInUse: another job is writing into `config.output_dir`.
      ImportError: Apache Beam (or Dask) is not installed: the message says
        which extra to install.
      EngineFailed: the engine ended with an error (the message names the
        files left; finished shards are kept).
    """
    _import_engine(config.runner)  # fail before anything is created
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    loaded = find_tracks(config)
    with DirectoryLock(config.output_dir, "output_dir", lambda m: log(f"extract: {m}")):
        return _run_locked(config, loaded, log)


def _featurize(config, engine: str, jobs: list, staging: str, failures: FailureLog) -> list:
    """Pass 1: every job staged; returns the staged [(number, summary)] in
    input order. Tracks that could not be used go to `failures`, even when
    the engine then failed (the rerun skips them).

    Raises:
      EngineFailed: the engine failed, or left a track without a result.
    """
    progress = Progress("extract", len(jobs), "files", config.progress_interval)
    try:
        _run_pass(config, "Featurize", jobs, _stage_fn(config.features, staging),
                  lambda: staged_lib.count_staged(staging), progress)  # fmt: skip
        error = None
    except Exception as e:
        error = e
    done, failed, missing = staged_lib.read_staged(staging, jobs)
    for problem in failed:
        failures.add(problem)
    if error is not None or missing:
        failed_paths = {p.path for p in failed}
        left = [j.track.path for j in jobs if j.track.path not in failed_paths]
        why = error or RuntimeError("it reported success, but some files have no result")
        raise _engine_failed(engine, why, left, len(jobs)) from error
    return done


def _run_locked(config, loaded, log) -> dict:
    from m3bert_tf.features import workers

    engine = engine_name(config)
    staging = os.path.join(config.output_dir, STAGING_DIR)
    storage.rmtree(staging)  # a killed run's
    resumed = resume_output(config, loaded, log, engine)
    finished = resumed.finished
    failures = FailureLog(resumed.failures_path, log)
    jobs = []
    for track in resumed.todo:  # labels first, as the local pool: a bad label costs no work
        try:
            jobs.append(
                staged_lib.TrackJob(len(jobs), track, label_vectors(track, loaded.specs))
            )
        except TrackProblem as e:
            failures.add(e.problem)
    started, audio_seconds, plans = time.monotonic(), 0.0, []
    try:
        if jobs:
            storage.makedirs(staging)
            workers.prepare(config.features, log)  # the kernel cache, for workers here
            done = _featurize(config, engine, jobs, staging, failures)
            plans = staged_lib.plan_shards(
                done, config.output_dir, config.shard_size, resumed.next_number
            )
            try:
                _run_pass(config, "WriteShards", plans, _write_fn(staging),
                          lambda: sum(storage.exists(p.path) for p in plans))  # fmt: skip
            except Exception as e:
                left = [t[2]["source_path"] for p in plans if not storage.exists(p.path)
                        for t in p.tracks]  # fmt: skip
                raise _engine_failed(engine, e, left, len(jobs)) from e
            finished = finished + [staged_lib.finished_shard(p) for p in plans]
            audio_seconds = sum(summary["duration_s"] for _, summary in done)
    finally:
        failures.close()
    storage.rmtree(staging)
    problems = [p.to_json() for p in loaded.problems + resumed.refused]
    manifest = build_manifest(
        config, resumed.spec, resumed.task_specs, finished,
        problems + resumed.old_failures + failures.new,
    )  # fmt: skip
    storage.write_json(os.path.join(config.output_dir, shards.MANIFEST_NAME), manifest)
    manifest["run"] = {
        "files": len(resumed.todo),
        "seconds": time.monotonic() - started,
        "audio_seconds": audio_seconds,
        "new_failures": len(failures.new),
        "runner": engine,
        "shards_written": len(plans),
    }
    return manifest
