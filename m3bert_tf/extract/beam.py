"""The extraction job on Apache Beam: `bin/extract --runner=beam`.

    run_extract_beam(ExtractConfig(..., runner="beam", beam_options="--runner=DataflowRunner ..."))

The same pure per-track function as the local pool (`encode.encode_track`:
decode, featurize, serialize; no files written) runs in a Beam `ParDo`, so
DirectRunner here and Dataflow, Flink or Spark elsewhere do the work. Beam
writes the records (`WriteToTFRecord`, the tf.train.Example coder) into
`<output_dir>/beam-staging/`; a track that cannot be used goes to a side
output. Then this process, as the local job does, writes our index beside
each shard (the tracks and chunks it holds, read back from it; a track's
chunks may lie in more than one shard, Beam decides), moves the shards in
as `shard-NNNNN.tfrecord`, appends the failures to `failures.jsonl` and
writes the manifest.

Resuming: tracks in finished shards or recorded as failures are skipped,
as locally; a run killed while Beam works leaves only the staging
directory, removed by the next run.
"""

import contextlib
import dataclasses
import json
import logging
import os
import re
import shlex
import sys
import threading
import time

from m3bert_tf import schema
from m3bert_tf.data import shards
from m3bert_tf.datasets.base import Problem
from m3bert_tf.extract.encode import TrackProblem, encode_track
from m3bert_tf.extract.job import ExtractConfig, find_tracks
from m3bert_tf.extract.manifest import build_manifest
from m3bert_tf.extract.resume import FailureLog, resume_output
from m3bert_tf.io import storage
from m3bert_tf.io.locks import DirectoryLock

STAGING_DIR = "beam-staging"


def _encode_fn(feature_config, specs):
    """The DoFn that runs `encode_track` on each track (one extractor per worker)."""
    import apache_beam as beam

    class Encode(beam.DoFn):
        def setup(self):
            from m3bert_tf.features import frames as frames_lib
            from m3bert_tf.features import workers

            self.extractor = frames_lib.FeatureExtractor(feature_config)
            # As the local pool's workers: one BLAS thread (the parallelism
            # is across tracks, and the same float rounding), memory reused.
            workers.configure()

        def process(self, track):
            try:
                encoded = encode_track(track, self.extractor, specs)
            except TrackProblem as e:
                failure = dataclasses.asdict(e.problem)
                yield beam.pvalue.TaggedOutput("failures", json.dumps(failure))
                return
            summary = {"entry": encoded.entry, "sums": encoded.sums}  # JSON already
            yield beam.pvalue.TaggedOutput("tracks", json.dumps(summary))
            yield from encoded.records

    return Encode()


def beam_pipeline_options(beam_options: str, num_workers: int):
    """Beam's PipelineOptions from `--beam_options` (a command-line string);
    without a runner, DirectRunner over `num_workers` processes (one: in
    this process)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    argv = shlex.split(beam_options)
    if not any(a.startswith("--runner") for a in argv):
        argv.append("--runner=DirectRunner")
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


def _run_beam(config: ExtractConfig, tracks, specs, staging: str, beam_options: str):
    import apache_beam as beam
    import tensorflow as tf

    num_workers = config.num_workers or os.cpu_count() or 1
    num_shards = max(1, -(-len(tracks) // config.shard_size))
    options = beam_pipeline_options(beam_options, num_workers)
    with _quiet_workers(), beam.Pipeline(options=options) as p:
        out = (
            p
            | "Tracks" >> beam.Create(tracks)
            | "Encode" >> beam.ParDo(_encode_fn(config.features, specs)).with_outputs(
                "failures", "tracks", main="records"
            )
        )  # fmt: skip
        _ = (
            out.records
            | "ToExample" >> beam.Map(tf.train.Example.FromString)
            | "Write" >> beam.io.WriteToTFRecord(
                os.path.join(staging, "part"), coder=beam.coders.ProtoCoder(tf.train.Example),
                file_name_suffix=shards.SHARD_SUFFIX, num_shards=num_shards,
            )
        )  # fmt: skip
        for name in ("failures", "tracks"):
            _ = getattr(out, name) | f"Write{name}" >> beam.io.WriteToText(
                os.path.join(staging, name), file_name_suffix=".jsonl"
            )


def _read_lines(pattern: str) -> list[dict]:
    out = []
    for path in storage.glob(pattern):
        with storage.open(path) as f:
            out.extend(json.loads(line) for line in f if line.strip())
    return out


def _shard_contents(path: str) -> dict[str, dict]:
    """{track_id: {"chunks", "frames", "first"}} of one written shard."""
    import tensorflow as tf

    contents: dict[str, dict] = {}
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        feature = tf.train.Example.FromString(record).features.feature
        track = feature[schema.TRACK_ID_KEY].bytes_list.value[0].decode()
        frames = len(feature[schema.FEATURES_KEY].bytes_list.value[0]) // (
            2 * schema.NUM_FEATURES
        )
        info = contents.setdefault(track, {"chunks": 0, "frames": 0, "first": False})
        info["chunks"] += 1
        info["frames"] += frames
        info["first"] |= feature[schema.CHUNK_INDEX_KEY].int64_list.value[0] == 0
    return contents


def _move_in(
    staging: str, output_dir: str, summaries: dict, next_number: int
) -> list[dict]:
    """Writes our index beside each staged shard and moves both in; returns
    the finished-shard records the manifest takes."""
    from m3bert_tf.data import shards
    from m3bert_tf.data.normalization import add_sums

    finished = []
    for part in storage.glob(os.path.join(staging, "part*" + shards.SHARD_SUFFIX)):
        contents = _shard_contents(part)
        if not contents:
            continue
        tracks, stats = [], {}
        for track_id, info in sorted(contents.items()):
            summary = summaries[track_id]
            entry = {
                **summary["entry"],
                "num_chunks": info["chunks"],
                "num_frames": info["frames"],
            }
            tracks.append(entry)
            if info["first"]:  # a track's statistics count once: in its first chunk's shard
                split = entry.get("split") or ""
                stats[split] = add_sums(stats.get(split), summary["sums"])
        path = os.path.join(output_dir, shards.SHARD_PATTERN.format(next_number))
        next_number += 1
        info = shards.write_index(
            path,
            sum(t["num_chunks"] for t in tracks),
            storage.size(part),
            storage.sha256(part),
            tracks,
            stats,
        )
        storage.replace(part, path)
        finished.append({"shard": os.path.basename(path), **info})
    return finished


def _import_beam():
    """Imports Apache Beam without its import-time notices (BigQuery clients
    missing, a slower pure-Python CRC): nothing a user of this job acts on."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        import apache_beam  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f"runner=beam needs Apache Beam: pip install 'm3bert_tf[beam]' ({e})"
        ) from None
    finally:
        root.setLevel(level)
    logging.getLogger("apache_beam").setLevel(logging.ERROR)


def run_extract_beam(config: ExtractConfig, log=None) -> dict:
    """Runs (or resumes) one extraction job on Beam; returns the manifest dict.

    Raises:
      FileNotFoundError: `config.source` names no audio (nothing is created).
      locks.DirectoryInUse: another job is writing into `config.output_dir`.
      ImportError: Apache Beam is not installed (pip install 'm3bert_tf[beam]').
    """
    _import_beam()  # fail before anything is created
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    loaded = find_tracks(config)
    with DirectoryLock(config.output_dir, "output_dir", lambda m: log(f"extract: {m}")):
        return _run_locked(config, loaded, config.beam_options, log)


def _run_locked(config, loaded, beam_options, log) -> dict:
    from m3bert_tf.data import shards

    staging = os.path.join(config.output_dir, STAGING_DIR)
    storage.rmtree(staging)  # a killed run's
    resumed = resume_output(config, loaded, log, "Apache Beam")
    todo, finished, failures_path = resumed.todo, resumed.finished, resumed.failures_path
    failures = FailureLog(failures_path, log)
    started, audio_seconds = time.monotonic(), 0.0
    try:
        if todo:
            _run_beam(config, todo, loaded.specs, staging, beam_options)
            summaries = {
                s["entry"]["track_id"]: s
                for s in _read_lines(os.path.join(staging, "tracks*.jsonl"))
            }
            for record in _read_lines(os.path.join(staging, "failures*.jsonl")):
                failures.add(Problem(**record))
            finished += _move_in(staging, config.output_dir, summaries, resumed.next_number)
            audio_seconds = sum(s["entry"]["duration_s"] for s in summaries.values())
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
        "files": len(todo),
        "seconds": time.monotonic() - started,
        "audio_seconds": audio_seconds,
        "new_failures": len(failures.new),
        "runner": f"Apache Beam ({beam_options or 'DirectRunner'})",
    }
    return manifest
