"""What every loader returns, and the seeded split by track."""

import dataclasses
import os
import random

from m3bert_tf.io import storage
from m3bert_tf.tasks import TaskSpec

SPLITS = ("train", "valid", "test")
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".au", ".aif", ".aiff")


@dataclasses.dataclass(frozen=True)
class Option:
    """One keyword option of a loader, declared beside it (its module's
    `OPTIONS`): bin/extract's flag `--<name>` and `ExtractConfig.dataset_options.<name>`.

    Attributes:
      name: the flag and config field; loaders sharing an option share it.
      keyword: the loader function's argument it is passed as.
      default: its value when not given (its type is the flag's).
      help: what it means for this loader (one line).
    """

    name: str
    keyword: str
    default: object
    help: str


SPLIT_SEED = Option("split_seed", "seed", 0, "seed of the 60/20/20 split by track")


@dataclasses.dataclass
class Track:
    """One audio file to extract.

    Attributes:
      path: the audio file.
      track_id: shared by every chunk of it; splits are by track id.
      split: "train", "valid", "test" or "" (unknown).
      labels: {task: label} (text, or numbers for regression).
      source_sha256: the SHA-256 of the file's bytes, set where it is read
        ("" before): what an output made from it records.
    """

    path: str
    track_id: str
    split: str = ""
    labels: dict = dataclasses.field(default_factory=dict)
    source_sha256: str = ""


@dataclasses.dataclass(frozen=True)
class Problem:
    """One input that could not be used: where it is and why.

    Attributes:
      path: the file at fault (a manifest, a list, an audio file, a directory).
      reason: one human sentence.
      line: 1-based line in `path` (0 = the whole file).
    """

    path: str
    reason: str
    line: int = 0

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.reason}"

    @classmethod
    def from_error(cls, path: str, error: Exception, expected=()) -> "Problem":
        """The Problem of a file whose reading raised `error`: an `expected`
        error's own words, less the path they start with (the Problem holds
        it); any other error with its type (a bug or an odd file must not end
        a long job)."""
        if isinstance(error, expected):
            return cls(path, str(error).removeprefix(f"{path}: "))
        return cls(path, f"{type(error).__name__}: {error}")

    def to_json(self) -> dict:
        return {"path": self.path, "line": self.line, "reason": str(self)}


@dataclasses.dataclass
class LoadResult:
    """Tracks, the tasks they label, and every problem met."""

    tracks: list[Track]
    specs: dict[str, TaskSpec]
    problems: list[Problem] = dataclasses.field(default_factory=list)


def audio_files(directory: str) -> list[str]:
    """Audio files directly in `directory`, sorted."""
    return sorted(
        os.path.join(directory, n)
        for n in storage.listdir(directory)
        if n.lower().endswith(AUDIO_EXTENSIONS)
    )


def split_by_track(tracks: list[Track], seed: int = 0, stratify: str = "") -> None:
    """Gives every track without a split one of train/valid/test, 60/20/20.

    Seeded, by track id (all files of a track share its split); with
    `stratify`, within each class of that task so every class is in every split.
    """
    groups: dict[str, list[str]] = {}
    for t in tracks:
        if not t.split:
            key = str(t.labels.get(stratify, "")) if stratify else ""
            groups.setdefault(key, [])
            if t.track_id not in groups[key]:
                groups[key].append(t.track_id)
    assignment = {}
    rng = random.Random(seed)
    for key in sorted(groups):
        ids = sorted(groups[key])
        rng.shuffle(ids)
        n = len(ids)
        cut1, cut2 = round(0.6 * n), round(0.8 * n)
        for i, track_id in enumerate(ids):
            assignment[track_id] = "train" if i < cut1 else "valid" if i < cut2 else "test"
    for t in tracks:
        if not t.split:
            t.split = assignment[t.track_id]


def class_directories(root: str, classes: tuple[str, ...], what: str):
    """([(class, directory)], problems) for a `<root>/<class>/` layout.

    A directory that names no known class is a problem ("unknown <what>
    directory, skipped"); plain files in `root` are ignored.
    """
    found, problems = [], []
    for entry in sorted(storage.listdir(root)):
        directory = os.path.join(root, entry)
        if not storage.isdir(directory):
            continue
        if entry in classes:
            found.append((entry, directory))
        else:
            problems.append(Problem(directory, f"unknown {what} directory, skipped"))
    return found, problems
