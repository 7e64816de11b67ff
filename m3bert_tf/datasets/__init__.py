"""Labeled dataset loaders, one per layout as its publisher distributes it.

    result = load("gtzan", "/data/gtzan", split_dir="/data/gtzan_splits")
    result.tracks    # [Track(path, track_id, split, labels={task: label})]
    result.specs     # {task: TaskSpec}
    result.problems  # [Problem(path, reason, line)]: reported, the rest loaded

No TensorFlow, no Keras. Tracks without a published split get a seeded
60/20/20 split by track (see `base.split_by_track`).
"""

from m3bert_tf.datasets.audio_files import find_tracks
from m3bert_tf.datasets.base import LoadResult, Problem, Track
from m3bert_tf.datasets.loaders import (
    LOADERS,
    DatasetOptions,
    load,
    refuse_conflicting_labels,
)

__all__ = [
    "LOADERS", "DatasetOptions", "LoadResult", "Problem", "Track", "find_tracks", "load",
    "refuse_conflicting_labels",
]  # fmt: skip
