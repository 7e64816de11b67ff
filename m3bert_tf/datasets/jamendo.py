"""MTG-Jamendo mood/theme: the `autotagging_moodtheme` split TSVs.

`split_dir` (e.g. `data/splits/split-0`) holds
`autotagging_moodtheme-{train,validation,test}.tsv` with the columns TRACK_ID,
ARTIST_ID, ALBUM_ID, PATH, DURATION, TAGS (tags tab-separated, like
`mood/theme---happy`); the audio is `<root>/<PATH>` (the `.low.mp3` variant is
taken when only it exists). 56 tags, multi-label.
"""

import os

from m3bert_tf.datasets.base import LoadResult, Option, Problem, Track
from m3bert_tf.io import storage
from m3bert_tf.tasks import TaskSpec

TAGS = tuple(
    "action adventure advertising background ballad calm children christmas commercial cool "
    "corporate dark deep documentary drama dramatic dream emotional energetic epic fast film "
    "fun funny game groovy happy heavy holiday hopeful inspiring love meditative melancholic "
    "melodic motivational movie nature party positive powerful relaxing retro romantic sad "
    "sexy slow soft soundscape space sport summer trailer travel upbeat uplifting".split()
)
SPEC = TaskSpec("moodtheme", "multilabel", classes=TAGS)
PREFIX = "mood/theme---"
FILES = {"train": "train", "valid": "validation", "test": "test"}
OPTIONS = (  # official splits only: no seed
    Option(
        "split_dir", "split_dir", "",
        "dir of the autotagging_moodtheme-*.tsv split files (default: the root)",
    ),
)  # fmt: skip


def _audio(root, rel):
    path = os.path.join(root, rel)
    if storage.exists(path):
        return path
    low = os.path.splitext(path)[0] + ".low.mp3"
    return low if storage.exists(low) else ""


def load(root: str, split_dir: str = "") -> LoadResult:
    split_dir = split_dir or root
    tracks, problems = [], []
    for split, part in FILES.items():
        tsv = os.path.join(split_dir, f"autotagging_moodtheme-{part}.tsv")
        if not storage.exists(tsv):
            problems.append(Problem(tsv, f"missing, no {split} tracks"))
            continue
        with storage.open(tsv) as f:
            for line_no, line in enumerate(f, start=1):
                cols = line.rstrip("\n").split("\t")
                if line_no == 1 and cols[0] == "TRACK_ID":
                    continue
                if len(cols) < 6:
                    problems.append(
                        Problem(
                            tsv, f"malformed row ({len(cols)} columns, needs 6+)", line_no
                        )
                    )
                    continue
                tags = [c[len(PREFIX) :] for c in cols[5:] if c]
                bad = [c for c in cols[5:] if c and not c.startswith(PREFIX)]
                unknown = [t for t in tags if t not in TAGS]
                if bad or unknown or not tags:
                    tag = (bad or unknown or ["(none)"])[0]
                    problems.append(Problem(tsv, f"unknown tag {tag!r}", line_no))
                    continue
                path = _audio(root, cols[3])
                if not path:
                    missing = os.path.join(root, cols[3])
                    problems.append(Problem(tsv, f"audio file missing: {missing}", line_no))
                    continue
                tracks.append(Track(path, cols[0], split, {"moodtheme": "|".join(tags)}))
    return LoadResult(tracks, {"moodtheme": SPEC}, problems)
