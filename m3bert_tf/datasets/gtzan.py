"""GTZAN: `<root>/<genre>/<genre>.000NN.(wav|au)`, 10 genres.

Splits: the fault-filtered lists (train/valid/test list files in `split_dir`,
one `genre/genre.000NN.wav` or `genre.000NN` per line; tracks in no list are
left out, as the filtering intends); without them, a seeded 60/20/20 split
stratified by genre, with a warning among the problems.
"""

import os

from m3bert_tf.datasets.base import (
    SPLIT_SEED,
    LoadResult,
    Option,
    Problem,
    Track,
    audio_files,
    class_directories,
    split_by_track,
)  # fmt: skip
from m3bert_tf.io import storage
from m3bert_tf.tasks import TaskSpec

GENRES = (
    "blues",
    "classical",
    "country",
    "disco",
    "hiphop",
    "jazz",
    "metal",
    "pop",
    "reggae",
    "rock",
)
SPEC = TaskSpec("genre", "classification", classes=GENRES)
LIST_NAMES = {
    "train": ("train_filtered.txt", "train.txt"),
    "valid": ("valid_filtered.txt", "valid.txt", "validation.txt"),
    "test": ("test_filtered.txt", "test.txt"),
}


def _stem(name: str) -> str:
    return os.path.splitext(os.path.basename(name.strip()))[0]


OPTIONS = (
    Option(
        "split_dir", "split_dir", "", "dir of the fault-filtered train/valid/test lists"
    ),
    SPLIT_SEED,
)


def load(root: str, split_dir: str = "", seed: int = 0) -> LoadResult:
    tracks = {}
    found, problems = class_directories(root, GENRES, "genre")
    for entry, directory in found:
        for path in audio_files(directory):
            tracks[_stem(path)] = Track(path, _stem(path), labels={"genre": entry})
    if split_dir:
        listed = {}
        for split, names in LIST_NAMES.items():
            found = [
                os.path.join(split_dir, n)
                for n in names
                if storage.exists(os.path.join(split_dir, n))
            ]
            if not found:
                problems.append(
                    Problem(split_dir, f"no {split} list ({' or '.join(names)})")
                )
                continue
            with storage.open(found[0]) as f:
                for line_no, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    stem = _stem(line)
                    if stem not in tracks:
                        problems.append(
                            Problem(
                                found[0], f"{line.strip()!r} has no audio file", line_no
                            )
                        )
                        continue
                    tracks[stem].split = split
                    listed[stem] = tracks[stem]
        return LoadResult(list(listed.values()), {"genre": SPEC}, problems)
    problems.append(
        Problem(
            root,
            "no split_dir with the fault-filtered lists; using a seeded 60/20/20 split",
        )
    )
    result = list(tracks.values())
    split_by_track(result, seed, stratify="genre")
    return LoadResult(result, {"genre": SPEC}, problems)
