"""Where a rerun of extraction starts: what the output directory holds, what
is still true of it, and what is left to do (every runner calls
`resume_output` first).

A track is done only for the same source content: each shard index entry
and each failure record holds the SHA-256 of the source file's bytes
(`source_sha256`), and a rerun hashes the input files it would skip (about
1 GB/s on one core). A file changed since it was extracted is extracted
again, and its old records leave their shard: the shard is rewritten without
them under a new number whose index names the one it replaces
(`drop_tracks`), so a job killed in between leaves one of the two, never
both (`shards.scan_output_dir` finishes the replacement). A file changed
since it failed is tried again. Another file under the id of a track done
from elsewhere is refused, naming both.
"""

import dataclasses
import json
import os

from m3bert_tf.data import shards, wire
from m3bert_tf.data.normalization import sums_of
from m3bert_tf.data.shard_writer import ShardWriter
from m3bert_tf.data.shards import FAILURES_NAME, SPEC_NAME, TASKS_NAME
from m3bert_tf.datasets.base import LoadResult, Problem
from m3bert_tf.extract.manifest import write_splits
from m3bert_tf.io import storage


def _read_failures(path: str) -> list[dict]:
    out = []
    if storage.exists(path):
        with storage.open(path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # a line cut short by a kill
    return out


def _check_same(output_dir: str, name: str, value: dict, advice: str) -> None:
    """Writes `value` to output_dir/name, or checks it equals what an earlier run wrote."""
    path = os.path.join(output_dir, name)
    if storage.exists(path):
        with storage.open(path) as f:
            old = json.load(f)
        if old != json.loads(json.dumps(value)):
            if old.get("version", value.get("version")) != value.get("version"):
                advice = (
                    f"its shards are feature spec version {old.get('version')}, this release "
                    f"writes version {value['version']} (track statistics in every record): "
                    "extract the audio again into a new output_dir"
                )
            raise ValueError(
                f"output_dir={output_dir} was made with another spec ({path} differs); {advice}"
            )
    else:
        storage.write_json(path, value)


class FailureLog:
    """failures.jsonl, appended one structured problem per line as they
    happen, each with its file's `source_sha256` (None if unreadable): a
    rerun skips it only while the file is unchanged."""

    def __init__(self, path: str, log):
        self.path, self.lines = path, []
        if storage.is_url(path):  # object stores cannot append: rewritten whole
            self.lines = [json.dumps(r) for r in _read_failures(path)]
            self.file = None
        else:
            self.file = storage.open(path, "a")
        self.log = log
        self.new: list[dict] = []

    def add(self, problem: Problem) -> None:
        record = {
            **problem.to_json(),
            "source_sha256": storage.sha256_or_none(problem.path),
        }
        self.log(f"extract: skipped {record['reason']}")
        if self.file is None:
            self.lines.append(json.dumps(record))
            storage.write_atomic(self.path, "".join(x + "\n" for x in self.lines))
        else:
            with storage.writing(self.path):
                self.file.write(json.dumps(record) + "\n")
                self.file.flush()
        self.new.append(record)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


@dataclasses.dataclass
class Resumed:
    """What an output directory already holds, and what is left to do.

    refused: Problems of input files that cannot be extracted into this
    directory (an id already taken by another file), listed in the manifest.
    """

    spec: dict
    task_specs: dict
    finished: list
    next_number: int
    failures_path: str
    old_failures: list
    todo: list
    refused: list


def resume_output(config, loaded: LoadResult, log, runner: str = "") -> Resumed:
    """Checks the output directory's spec and tasks (or writes them), merges
    splits.csv, finds finished shards (removing a killed run's debris) and
    recorded failures, checks the sources of what they hold against the
    input files' bytes, rewrites shards that hold changed files, and lists
    the tracks left: the start of every runner.

    Raises:
      ValueError: the directory was made with another spec or other tasks.
    """
    spec = config.features.to_json()
    _check_same(
        config.output_dir, SPEC_NAME, spec, "use a new output_dir or the same feature_set"
    )
    task_specs = {name: s.to_json() for name, s in sorted(loaded.specs.items())}
    _check_same(
        config.output_dir, TASKS_NAME, task_specs,
        "the labels' tasks or classes changed: use a new output_dir",
    )  # fmt: skip
    for problem in loaded.problems:
        log(f"extract: {problem}")
    write_splits(config.output_dir, loaded.tracks)
    finished, next_number = shards.scan_output_dir(
        config.output_dir, lambda message: log(f"extract: {message}")
    )
    failures_path = os.path.join(config.output_dir, FAILURES_NAME)
    old_failures = _read_failures(failures_path)
    if config.retry_failed and old_failures:
        storage.remove(failures_path)
        old_failures = []
    extracted = {t["source_path"]: (s["shard"], t) for s in finished for t in s["tracks"]}
    failed = {f["path"]: f for f in old_failures}
    digests = storage.sha256_many(
        [t.path for t in loaded.tracks if t.path in extracted or t.path in failed],
        "extract: checking sources",
        config.progress_interval,
    )
    owners = {t["track_id"]: path for path, (_, t) in extracted.items()}
    todo, refused, changed, retried = [], [], {}, set()
    for track in loaded.tracks:
        if track.path in extracted:
            shard, entry = extracted[track.path]
            recorded, now = entry.get("source_sha256"), digests[track.path]
            if None in (recorded, now) or recorded == now:
                # The same bytes; or not comparable: a shard of 0.2 and before
                # (no digest kept), or a source unreadable now (kept, not lost).
                continue
            log(f"extract: {track.path} changed since it was extracted into {shard}: "
                "extracting it again")  # fmt: skip
            changed.setdefault(shard, set()).add(entry["track_id"])
        elif track.path in failed:
            if failed[track.path].get("source_sha256") == digests[track.path]:
                continue
            log(f"extract: {track.path} changed since it failed: trying it again")
            retried.add(track.path)
        elif owners.get(track.track_id, track.path) != track.path:
            refused.append(Problem(track.path, (
                f"track id {track.track_id!r} is already the id of {owners[track.track_id]} "
                f"in {config.output_dir}: one id per track (rename one, or extract into "
                "a new output_dir)"
            )))  # fmt: skip
            log(f"extract: {refused[-1]}")
            continue
        todo.append(track)
    if retried:
        old_failures = [f for f in old_failures if f["path"] not in retried]
        storage.write_atomic(
            failures_path, "".join(json.dumps(f) + "\n" for f in old_failures)
        )
    for shard, track_ids in sorted(changed.items()):
        finished, next_number = drop_tracks(
            config.output_dir, finished, shard, track_ids, next_number
        )
    log(
        f"extract: {len(loaded.tracks)} files in {config.source}; "
        f"{len(loaded.tracks) - len(todo) - len(refused)} already done ({len(finished)} "
        f"shards, {len(old_failures)} failures), {len(todo)} to do"
        + (f" on {runner}" if runner else "")
    )
    return Resumed(
        spec, task_specs, finished, next_number, failures_path, old_failures, todo, refused
    )


def drop_tracks(output_dir: str, finished: list, shard: str, track_ids: set, number: int):
    """Rewrites `shard` without the records of `track_ids`: the others are
    copied as bytes into shard `number`, whose index names `shard` as the one
    it replaces; then `shard` and its index are removed. Returns (finished
    shards, the next free number).

    The statistics of the tracks kept are taken from their records (each
    holds its track's mean and std), as extraction took them.
    """
    old = os.path.join(output_dir, shard)
    path = os.path.join(output_dir, shards.SHARD_PATTERN.format(number))
    writer = ShardWriter(path, replaces=shard)
    info = next(s for s in finished if s["shard"] == shard)
    with storage.open(old, "rb") as f:
        records = wire.unframe(f)
        for entry in info["tracks"]:
            chunks = [next(records) for _ in range(entry["num_chunks"])]
            if entry["track_id"] in track_ids:
                continue
            sums = {}
            for _, record in chunks:
                fields = wire.parse(record)
                if fields["chunk_index"] == 0:  # the track's statistics are counted once
                    sums = sums_of(
                        entry["track_frames"], fields["track_mean"], fields["track_std"]
                    )
            writer.add_records([framed for framed, _ in chunks], entry, sums)
    kept = [s for s in finished if s["shard"] != shard]
    if writer.num_examples:
        kept.append(writer.close())
    else:
        writer.abort()
    storage.remove(shards.index_path(old))
    storage.remove(old)
    return sorted(kept, key=lambda s: s["shard"]), number + 1
