"""What a user's `--input` names, as tracks: a directory, a glob, a CSV
manifest, or a labeled dataset's root. Every job that reads audio lists it
here (extraction, embedding, correlation).

    loaded = find_tracks("music/")                       # every audio file below
    loaded = find_tracks("/data/gtzan", dataset="gtzan") # a loader of LOADERS
"""

import os

from m3bert_tf.datasets.base import AUDIO_EXTENSIONS, LoadResult, Track
from m3bert_tf.io import storage


def _track_id(path: str, root: str) -> str:
    return os.path.splitext(os.path.relpath(path, root))[0].replace(os.sep, "/")


def _unique_files(paths: list[str]) -> list[str]:
    """Files among `paths`, one per real file: a glob's "**" follows directory
    symlinks, so a loop (dir/loop -> ..) would list every file again and again."""
    seen, out = set(), []
    for p in sorted(paths, key=lambda p: (p.count(os.sep), p)):  # shortest path wins
        real = p if storage.is_url(p) else os.path.realpath(p)
        if storage.isfile(p) and real not in seen:
            seen.add(real)
            out.append(p)
    return out


def find_tracks(
    input: str,  # noqa: A002 (the --input flag)
    dataset: str = "",
    dataset_options: dict | None = None,
) -> LoadResult:
    """Resolves `input` to tracks (sorted by path), their tasks and load problems.

    Args:
      input: a directory (searched recursively), a glob, a CSV manifest, or
        with `dataset` the dataset's root directory.
      dataset: a loader name of `LOADERS` ("" = none).
      dataset_options: keyword options of that loader (or of the CSV's).

    Raises:
      FileNotFoundError: `input` names no audio.
    """
    from m3bert_tf.datasets.loaders import load

    options = dataset_options or {}
    if dataset:
        return load(dataset, input, **options)
    if input.lower().endswith(".csv") and storage.isfile(input):
        return load("csv", input, **options)
    if storage.isdir(input):
        paths = [
            os.path.join(d, name)
            for d, _, names in storage.walk(input)
            for name in names
            if name.lower().endswith(AUDIO_EXTENSIONS)
        ]
        root = input
    else:
        paths = _unique_files(storage.glob(input, recursive=True))
        root = os.path.commonpath([os.path.dirname(p) for p in paths]) if paths else ""
    if not paths:
        raise FileNotFoundError(f"input={input}: no audio files found")
    return LoadResult([Track(p, _track_id(p, root)) for p in sorted(paths)], {})
