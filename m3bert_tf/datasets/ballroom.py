"""Extended Ballroom: `<root>/<Dance>/<id>.mp3`, 13 dances; 60/20/20 by track."""

import os

from m3bert_tf.datasets.base import LoadResult, Track, audio_files, split_by_track
from m3bert_tf.tasks import TaskSpec

DANCES = (
    "Chacha", "Foxtrot", "Jive", "Pasodoble", "Quickstep", "Rumba", "Salsa", "Samba",
    "Slowwaltz", "Tango", "Viennesewaltz", "Waltz", "Wcswing",
)  # fmt: skip
SPEC = TaskSpec("ballroom", "classification", classes=DANCES)


def load(root: str, seed: int = 0) -> LoadResult:
    tracks, problems = [], []
    for entry in sorted(os.listdir(root)):
        directory = os.path.join(root, entry)
        if not os.path.isdir(directory):
            continue
        if entry not in DANCES:
            problems.append(f"{directory}: unknown dance directory, skipped")
            continue
        for path in audio_files(directory):
            track_id = f"{entry}/{os.path.splitext(os.path.basename(path))[0]}"
            tracks.append(Track(path, track_id, labels={"ballroom": entry}))
    split_by_track(tracks, seed, stratify="ballroom")
    return LoadResult(tracks, {"ballroom": SPEC}, problems)
