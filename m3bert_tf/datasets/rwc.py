"""RWC Music Database: Musical Instrument Sound (RWC-MDB-I).

The instrument is read from the file name with `pattern`, a regular
expression with a group named "instrument"; by default the first two digits
of the RWC-MDB-I name (`011PFNOM.WAV` -> instrument "01"). Classes are the
instrument numbers found (50 in the full database). 60/20/20 by file,
stratified by instrument.
"""

import os
import re

from m3bert_tf.datasets.base import (
    AUDIO_EXTENSIONS,
    SPLIT_SEED,
    LoadResult,
    Option,
    Problem,
    Track,
    split_by_track,
)
from m3bert_tf.io import storage
from m3bert_tf.tasks import TaskSpec

DEFAULT_PATTERN = r"^(?P<instrument>\d{2})\d"
OPTIONS = (
    Option(
        "rwc_pattern", "pattern", DEFAULT_PATTERN,
        "regex on the file name with a group named 'instrument'",
    ),
    SPLIT_SEED,
)  # fmt: skip


def load(root: str, pattern: str = DEFAULT_PATTERN, seed: int = 0) -> LoadResult:
    regex = re.compile(pattern)
    if "instrument" not in regex.groupindex:
        raise ValueError(f"rwc_pattern={pattern!r} needs a group named 'instrument'")
    tracks, problems = [], []
    for directory, _, names in sorted(storage.walk(root)):
        for name in sorted(names):
            if not name.lower().endswith(AUDIO_EXTENSIONS):
                continue
            path = os.path.join(directory, name)
            match = regex.search(name)
            if not match:
                problems.append(
                    Problem(path, f"name does not match rwc_pattern {pattern!r}, skipped")
                )
                continue
            track_id = os.path.splitext(os.path.relpath(path, root))[0]
            tracks.append(
                Track(path, track_id, labels={"instrument": match.group("instrument")})
            )
    classes = tuple(sorted({t.labels["instrument"] for t in tracks}))
    split_by_track(tracks, seed, stratify="instrument")
    return LoadResult(
        tracks,
        {"instrument": TaskSpec("instrument", "classification", classes=classes)},
        problems,
    )
