"""Extended Ballroom: `<root>/<Dance>/<id>.mp3`, 13 dances; 60/20/20 by track."""

import os

from m3bert_tf.datasets.base import (
    SPLIT_SEED,
    LoadResult,
    Track,
    audio_files,
    class_directories,
    split_by_track,
)  # fmt: skip
from m3bert_tf.tasks import TaskSpec

DANCES = (
    "Chacha", "Foxtrot", "Jive", "Pasodoble", "Quickstep", "Rumba", "Salsa", "Samba",
    "Slowwaltz", "Tango", "Viennesewaltz", "Waltz", "Wcswing",
)  # fmt: skip
SPEC = TaskSpec("ballroom", "classification", classes=DANCES)
OPTIONS = (SPLIT_SEED,)


def load(root: str, seed: int = 0) -> LoadResult:
    tracks = []
    found, problems = class_directories(root, DANCES, "dance")
    for entry, directory in found:
        for path in audio_files(directory):
            track_id = f"{entry}/{os.path.splitext(os.path.basename(path))[0]}"
            tracks.append(Track(path, track_id, labels={"ballroom": entry}))
    split_by_track(tracks, seed, stratify="ballroom")
    return LoadResult(tracks, {"ballroom": SPEC}, problems)
