"""DEAM: `MEMD_audio/<song_id>.mp3` with the song-level static annotations.

Annotations: every `static_annotations_averaged_songs_*.csv` under `root`
(columns song_id, valence_mean, arousal_mean, ...; headers may carry spaces).
Valence and arousal are rated on 1-9; they are scaled to [-1, 1] as
(x - 5) / 4, so 0 is the scale's neutral middle. 60/20/20 by song.
"""

import csv
import os

from m3bert_tf.datasets.base import SPLIT_SEED, LoadResult, Problem, Track, split_by_track
from m3bert_tf.io import storage
from m3bert_tf.tasks import TaskSpec

SPEC = TaskSpec("emotion", "regression", outputs=("valence", "arousal"))
OPTIONS = (SPLIT_SEED,)


def scale(rating: float) -> float:
    """1..9 -> -1..1."""
    return (rating - 5.0) / 4.0


def load(root: str, seed: int = 0) -> LoadResult:
    tracks, problems = [], []
    pattern = os.path.join(root, "**", "static_annotations_averaged_songs_*.csv")
    files = storage.glob(pattern, recursive=True)
    if not files:
        raise FileNotFoundError(f"{root}: no static_annotations_averaged_songs_*.csv found")
    for path in files:
        with storage.open(path, newline="") as f:
            reader = csv.DictReader(f, skipinitialspace=True)
            reader.fieldnames = [n.strip() for n in reader.fieldnames or []]
            for line_no, row in enumerate(reader, start=2):
                try:
                    song = str(int(float(row["song_id"])))
                    values = [
                        scale(float(row["valence_mean"])),
                        scale(float(row["arousal_mean"])),
                    ]
                except (KeyError, TypeError, ValueError):
                    problems.append(
                        Problem(
                            path,
                            "malformed row (needs song_id, valence_mean, arousal_mean)",
                            line_no,
                        )
                    )
                    continue
                audio = os.path.join(root, "MEMD_audio", f"{song}.mp3")
                if not storage.exists(audio):
                    problems.append(Problem(path, f"audio file missing: {audio}", line_no))
                    continue
                tracks.append(Track(audio, f"deam/{song}", labels={"emotion": values}))
    split_by_track(tracks, seed)
    return LoadResult(tracks, {"emotion": SPEC}, problems)
