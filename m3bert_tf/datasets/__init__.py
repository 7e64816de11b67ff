"""Labeled dataset loaders, one per layout as its publisher distributes it.

    result = load("gtzan", "/data/gtzan", split_dir="/data/gtzan_splits")
    result.tracks    # [Track(path, track_id, split, labels={task: label})]
    result.specs     # {task: TaskSpec}
    result.problems  # [Problem(path, reason, line)]: reported, the rest loaded

No TensorFlow, no Keras. Tracks without a published split get a seeded
60/20/20 split by track (see `base.split_by_track`).
"""

from m3bert_tf.datasets import ballroom, csv_manifest, deam, gtzan, jamendo, rwc
from m3bert_tf.datasets.base import LoadResult, Problem, Track

LOADERS = {
    "gtzan": gtzan.load,
    "mtg_jamendo_moodtheme": jamendo.load,
    "extended_ballroom": ballroom.load,
    "deam": deam.load,
    "rwc_instrument": rwc.load,
    "csv": csv_manifest.load,
}


def load(name: str, root: str, **options) -> LoadResult:
    """Runs the loader `name` (a key of LOADERS) on `root` with its options."""
    if name not in LOADERS:
        raise ValueError(f"--dataset must be one of {sorted(LOADERS)}, got {name!r}")
    return LOADERS[name](root, **options)


__all__ = ["LOADERS", "LoadResult", "Problem", "Track", "load"]
