"""The loaders by name, and the check every loaded dataset passes."""

from m3bert_tf.datasets import ballroom, csv_manifest, deam, gtzan, jamendo, rwc
from m3bert_tf.datasets.base import LoadResult, Problem

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
        raise ValueError(f"dataset must be one of {sorted(LOADERS)}, got {name!r}")
    return refuse_conflicting_labels(LOADERS[name](root, **options))


def refuse_conflicting_labels(result: LoadResult) -> LoadResult:
    """The result without the files of a track id whose files disagree on a
    task's label (each such file becomes a Problem): a track is scored as
    one, with one label per task."""
    labels: dict[tuple, dict] = {}
    for t in result.tracks:
        for task, label in t.labels.items():
            labels.setdefault((t.track_id, task), {})[t.path] = label
    bad = {
        path: f"track {track_id!r} has {task} labels {sorted(set(map(str, by_path.values())))} "
        "across its files: a track has one label per task"
        for (track_id, task), by_path in labels.items()
        if len(set(map(str, by_path.values()))) > 1
        for path in by_path
    }
    if not bad:
        return result
    return LoadResult(
        [t for t in result.tracks if t.path not in bad],
        result.specs,
        result.problems + [Problem(path, reason) for path, reason in sorted(bad.items())],
    )
