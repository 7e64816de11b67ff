"""One track in, its records out: the per-track extraction step of every runner.

    labels = label_vectors(track, specs)                        # raises TrackProblem
    framed = write_framed(track, extractor, labels, directory)  # raises TrackProblem
    framed.path       # a file of the track's records, framed as a shard holds them
    framed.entry      # the track's line in its shard index
    framed.sums       # raw-feature statistics sums, for the global statistics

No TensorFlow here (records are encoded and framed by `data.wire`). The
local pool's workers run `write_framed` and its parent appends those bytes
to a shard in input order (`extract/job.py`); an engine's workers run it
and stage the file in shared storage (`extract/staged.py`). Labels are
checked first (`label_vectors`), so a bad label costs no featurization.
"""

import os
import tempfile
from typing import NamedTuple

import numpy as np

from m3bert_tf.datasets.base import Problem, Track
from m3bert_tf.features import audio as audio_lib
from m3bert_tf.features import frames as frames_lib
from m3bert_tf.features import samples, streaming
from m3bert_tf.io import storage
from m3bert_tf.tasks import LabelError, TaskSpec


class TrackProblem(Exception):
    """A track that cannot be used; `.problem` says which file and why."""

    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


class Featurized(NamedTuple):
    """A track's features.

    chunks: [[chunk_frames, 324] float16], per-track CMVN'd, by the 30 s rule:
      a list, or a `SpilledChunks` that reads them one at a time.
    mean, std: [324] float32 raw per-channel statistics of the whole track.
    num_frames: frames of the whole track; duration_s: seconds of audio.
    source_sha256: the SHA-256 of the source file's bytes, read first (what
      a rerun compares to skip it: `extract.resume`).
    """

    chunks: object
    mean: np.ndarray
    std: np.ndarray
    num_frames: int
    duration_s: float
    source_sha256: str = ""


class SpilledChunks:
    """A track's chunks, read one at a time from its spilled features (a named
    temporary file), so that a long track never sits in memory whole. Picklable; iterating it reads the file once and
    deletes it (a file left by a killed job is the next run's debris:
    `shards.scan_output_dir` removes our temporary names)."""

    def __init__(self, detached: dict, num_frames: int):
        self.detached = detached
        self.bounds = frames_lib.chunk_bounds(num_frames)

    def __len__(self) -> int:
        return len(self.bounds)

    def __iter__(self):
        track = streaming.SpilledTrack.attach(self.detached)
        try:
            for start, stop in self.bounds:
                yield track.normalized(start, stop).astype(np.float16)
        finally:
            track.close()


class FramedTrack(NamedTuple):
    """A track's records framed in a local file (`write_framed`): what an
    extraction worker hands back. path: the file (ours to remove); records:
    how many; entry, sums: as in `EncodedTrack`; duration_s: seconds of audio."""

    path: str
    records: int
    entry: dict
    sums: dict
    duration_s: float


class EncodedTrack(NamedTuple):
    """records: the serialized chunks, an iterator (read once, as written)."""

    records: object
    entry: dict
    sums: dict


def label_vectors(track: Track, specs: dict[str, TaskSpec]) -> dict[str, list[float]]:
    """{task: stored label vector} of a track; raises TrackProblem on a bad label."""
    try:
        return {task: specs[task].encode(value) for task, value in track.labels.items()}
    except (LabelError, KeyError) as e:
        raise TrackProblem(Problem(track.path, f"bad label: {e}")) from None


def featurize_track(
    track: Track, extractor: frames_lib.FeatureExtractor, spill_dir: str | None = None
) -> Featurized:
    """Decodes and featurizes one file (librosa only, no TensorFlow), block by
    block: memory is bounded by a block of audio, not by the track
    (`features.streaming`).

    Args:
      spill_dir: None: the chunks come back as a list in memory. A directory:
        they stay in a temporary file there and come back as `SpilledChunks`
        (the extraction job's workers, for tracks of any length).

    Raises:
      TrackProblem: the file is missing, undecodable, silent, too short, or
        anything else went wrong with it (a bug or an odd file must not end
        a long job).
    """
    try:
        spilled = streaming.spill(
            samples.file_samples(track.path), extractor, track.path,
            min_duration=extractor.config.min_duration, reject_silent=True,
            directory=spill_dir, named=spill_dir is not None,
        )  # fmt: skip
        digest = storage.sha256(track.path)
    except Exception as e:
        if isinstance(e, storage.OutputError):  # the output side's: the job stops
            raise
        if storage.is_output_error(e):
            where = e.filename or spill_dir or "the temporary directory"
            raise storage.OutputError(e.errno, e.strerror, where) from None
        raise TrackProblem(
            Problem.from_error(track.path, e, audio_lib.AudioError)
        ) from None
    if spill_dir is not None:
        chunks = SpilledChunks(spilled.detach(), spilled.num_frames)
    else:
        with spilled:
            chunks = [
                spilled.normalized(start, stop).astype(np.float16)
                for start, stop in frames_lib.chunk_bounds(spilled.num_frames)
            ]
    return Featurized(
        chunks=chunks,
        mean=spilled.mean.astype(np.float32),
        std=spilled.std.astype(np.float32),
        num_frames=spilled.num_frames,
        duration_s=spilled.duration_s,
        source_sha256=digest,
    )


def serialize_track(
    track: Track, featurized: Featurized, labels: dict[str, list[float]]
) -> EncodedTrack:
    """A featurized track -> its records, index entry and statistics sums."""
    from m3bert_tf.data import records
    from m3bert_tf.data.normalization import sums_of

    serialized = (
        records.encode_example(
            chunk,
            featurized.mean,
            featurized.std,
            track.track_id,
            i,
            track.path,
            track.split,
            track.labels,
            labels,
        )  # fmt: skip
        for i, chunk in enumerate(featurized.chunks)
    )
    bounds = frames_lib.chunk_bounds(featurized.num_frames)
    entry = {
        "source_path": track.path,
        "track_id": track.track_id,
        "split": track.split,
        "tasks": sorted(track.labels),
        "num_chunks": len(bounds),
        "num_frames": int(sum(stop - start for start, stop in bounds)),
        "track_frames": featurized.num_frames,
        "duration_s": round(featurized.duration_s, 3),
        "source_sha256": featurized.source_sha256,
    }
    return EncodedTrack(
        serialized, entry, sums_of(featurized.num_frames, featurized.mean, featurized.std)
    )


def write_framed(
    track: Track, extractor: frames_lib.FeatureExtractor, labels: dict, directory: str
) -> FramedTrack:
    """Featurizes one track and writes its records, serialized and framed as
    a shard holds them, into a new file in `directory` (named with our
    temporary suffix: debris if the job is killed). Memory stays bounded by
    a chunk: features spill to `directory` and are read back one at a time.

    Raises:
      TrackProblem: naming the file and the reason (no file is left).
    """
    from m3bert_tf.data import wire

    featurized = featurize_track(track, extractor, directory)
    encoded = serialize_track(track, featurized, labels)
    out = tempfile.NamedTemporaryFile(  # noqa: SIM115 (handed over, removed by the parent)
        dir=directory, prefix=".records-", suffix=storage.TMP_SUFFIX, delete=False
    )
    count = 0
    try:
        with out, storage.writing(out.name):
            for record in encoded.records:
                out.write(wire.frame(record))
                count += 1
    except storage.OutputError:
        os.remove(out.name)
        raise  # the output side's: the job stops, naming the file
    except Exception as e:
        os.remove(out.name)
        raise TrackProblem(Problem(track.path, f"{type(e).__name__}: {e}")) from None
    return FramedTrack(out.name, count, encoded.entry, encoded.sums, featurized.duration_s)
