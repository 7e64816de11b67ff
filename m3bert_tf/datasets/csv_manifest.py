"""A generic CSV manifest for anyone's own data: `path,track_id,split,task,label`.

Only `path` is required. Relative paths are relative to the CSV. Rows naming
the same path merge their {task: label}. Each task's kind and classes are
inferred from all its labels (`tasks.infer_spec`): numbers -> regression,
"a|b" -> multi-label, else classification. Tracks without a split get a
seeded 60/20/20 split by track. A split must be train, valid or test, and a
track id has one split and one label per task (its clips are scored as one
track): other rows are reported (file and line) and skipped, and the job that
loaded them exits 1.
"""

import csv
import os

from m3bert_tf.datasets.base import (
    SPLIT_SEED,
    SPLITS,
    LoadResult,
    Problem,
    Track,
    split_by_track,
)  # fmt: skip
from m3bert_tf.io import storage
from m3bert_tf.tasks import infer_spec

OPTIONS = (SPLIT_SEED,)  # for the rows without a split


def load(csv_path: str, seed: int = 0, check_audio: bool = True) -> LoadResult:
    base = os.path.dirname(storage.abspath(csv_path))
    tracks: dict[str, Track] = {}
    split_of: dict[str, tuple[str, int]] = {}  # track_id -> (split, first line)
    label_of: dict[tuple, tuple[str, int]] = {}  # (track_id, task) -> (label, first line)
    problems = []
    with storage.open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        if "path" not in (reader.fieldnames or []):
            raise ValueError(f"{csv_path}: needs a 'path' column, has {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            rel = (row.get("path") or "").strip()
            task = (row.get("task") or "").strip()
            label = (row.get("label") or "").strip()
            if not rel or bool(task) != bool(label):
                problems.append(
                    Problem(
                        csv_path,
                        "malformed row (needs a path, and a label with its task)",
                        line,
                    )
                )
                continue
            path = storage.join_normalized(base, rel)
            if check_audio and not storage.exists(path):
                problems.append(Problem(csv_path, f"audio file missing: {path}", line))
                continue
            default_id = os.path.splitext(os.path.relpath(path, base))[0].replace(
                os.sep, "/"
            )
            track_id = (row.get("track_id") or "").strip() or default_id
            split = (row.get("split") or "").strip()
            if split and split not in SPLITS:
                problems.append(
                    Problem(
                        csv_path,
                        f"unknown split {split!r} (use {', '.join(SPLITS)} or leave it empty)",
                        line,
                    )
                )
                continue
            if split and split_of.setdefault(track_id, (split, line))[0] != split:
                first, first_line = split_of[track_id]
                problems.append(
                    Problem(
                        csv_path,
                        f"track {track_id!r} is in split {split!r} here but {first!r} on line "
                        f"{first_line}: a track belongs to one split",
                        line,
                    )
                )
                continue
            if task:
                first, first_line = label_of.setdefault((track_id, task), (label, line))
                if first != label:
                    problems.append(
                        Problem(
                            csv_path,
                            f"track {track_id!r} has {task} label {label!r} here but "
                            f"{first!r} on line {first_line}: a track has one label per "
                            "task (clips that differ need their own track_id)",
                            line,
                        )
                    )
                    continue
            track = tracks.setdefault(path, Track(path, track_id))
            track.split = split or track.split
            if task:
                track.labels[task] = label
    if not tracks and not problems:
        raise FileNotFoundError(f"{csv_path}: no rows")
    by_task: dict[str, list[str]] = {}
    for t in tracks.values():
        for task, label in t.labels.items():
            by_task.setdefault(task, []).append(label)
    specs = {name: infer_spec(name, labels) for name, labels in sorted(by_task.items())}
    result = sorted(tracks.values(), key=lambda t: t.path)
    split_by_track(result, seed)
    return LoadResult(result, specs, problems)
