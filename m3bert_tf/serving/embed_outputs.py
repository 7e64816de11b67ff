"""bin/embed's output directory: one `<track_id>.npz` per track, `index.csv`
and `embed.json` (the settings its embeddings were made with).

Ids become file names only inside the directory (`npz_path`); a finished
`.npz` is checked before it counts as done (`readable`); a second job into the
directory must use the same settings (`check_job`), and `index.csv` keeps
the rows of earlier inputs whose files are there (`write_index`).
"""

import csv
import io
import os
import shutil
import zipfile

import numpy as np

from m3bert_tf import runs
from m3bert_tf.datasets.base import Problem
from m3bert_tf.io import storage

INDEX_NAME = "index.csv"
JOB_NAME = "embed.json"
TMP_DIR = ".tmp"  # the job's scratch directory, removed when it ends: no id's
SOURCE_KEY = "source_sha256"  # in each .npz: the SHA-256 of the audio it was made from
NAME_MAX = 255  # bytes in one file name (ext4, XFS, btrfs, tmpfs, APFS, NTFS)


def npz_path(output_dir: str, track_id: str) -> str:
    """`<output_dir>/<track_id>.npz`, with "/" in the id as subdirectories.

    Raises:
      ValueError: an id that would leave `output_dir` or name no file (empty,
        absolute, a "." or ".." part, a backslash or NUL), that would land in
        the job's scratch directory (a first part ".tmp"), or with a part too
        long for a file name (over NAME_MAX bytes with ".npz").
    """
    parts = track_id.split("/")
    if (
        not track_id
        or "\\" in track_id
        or "\0" in track_id
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise ValueError(
            f"track id {track_id!r} cannot name a file inside the output directory "
            "(empty, absolute, or a '.', '..' or backslash in it)"
        )
    if parts[0] == TMP_DIR:
        raise ValueError(
            f"track id {track_id!r} would be written into {TMP_DIR}/, the job's scratch "
            "directory, which is removed when it ends: rename the file or its id"
        )
    longest = max(parts[:-1] + [parts[-1] + ".npz"], key=lambda p: len(p.encode()))
    if len(longest.encode()) > NAME_MAX:
        raise ValueError(
            f"track id {track_id[:40]!r}...: a file name of {len(longest.encode())} bytes, "
            f"over the {NAME_MAX} a file system allows: shorten the file name or its id"
        )
    return os.path.join(output_dir, *parts) + ".npz"


def readable(path: str) -> str | None:
    """None when the .npz at `path` is a whole output; else what is wrong."""
    try:
        with storage.open(path, "rb") as f, zipfile.ZipFile(f) as z:
            names = set(z.namelist())
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        return f"unreadable ({e})"
    missing = {"timestamps.npy", "frame_embeddings.npy", "duration_s.npy"} - names
    return f"missing {sorted(missing)}" if missing else None


def recorded_source(path: str) -> str | None:
    """The source digest a whole .npz was made from; None for one of 0.2
    and before, which kept none."""
    with storage.open(path, "rb") as f, np.load(f) as data:
        return str(data[SOURCE_KEY]) if SOURCE_KEY in data.files else None


def usable_tracks(tracks, output_dir: str):
    """(tracks whose ids name one file each, a Problem for each of the others):
    an id that leaves the output directory, or that two input files share
    (their outputs would overwrite each other), is refused for every file."""
    by_id: dict[str, list] = {}
    for t in tracks:
        by_id.setdefault(t.track_id, []).append(t)
    usable, problems = [], []
    for t in tracks:
        try:
            npz_path(output_dir, t.track_id)
        except ValueError as e:
            problems.append(Problem(t.path, str(e)))
            continue
        others = [o.path for o in by_id[t.track_id] if o is not t]
        if others:
            problems.append(Problem(
                t.path, f"track id {t.track_id!r} is also the id of {', '.join(others)}: "
                "one output file cannot hold both (rename one)",
            ))  # fmt: skip
            continue
        usable.append(t)
    return usable, problems


def pending(tracks, output_dir: str) -> int:
    """How many of `tracks` have no .npz in a local `output_dir` yet (read
    before the job's lock, to start no more model workers than that); every
    track of a remote one (a request per track is not worth the estimate).
    Under the lock the job decides, reading each."""
    local = storage.local_path(output_dir)
    if local is None:
        return len(tracks)
    count = 0
    for t in tracks:
        try:
            count += not os.path.exists(npz_path(local, t.track_id))
        except ValueError:  # refused, not embedded
            pass
    return count


def check_job(output_dir: str, job: dict) -> None:
    """Refuses to mix embeddings of another model, layer or windowing in one dir."""
    path = os.path.join(output_dir, JOB_NAME)
    if storage.exists(path):
        old = storage.read_json(path)
        changed = runs.config_changes(old["settings"], job["settings"])
        if changed:
            fields = ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in changed.items())
            raise runs.ConfigMismatch(
                f"output_dir={output_dir} holds embeddings made with other settings "
                f"({fields}); use a new output_dir"
            )
    else:
        storage.write_json(path, job)


def write_index(output_dir: str, tracks) -> list[dict]:
    """index.csv of every finished track of the input, and of earlier inputs
    into the same directory whose files are still there (rebuilt, atomically)."""
    rows = []
    index = os.path.join(output_dir, INDEX_NAME)
    current = {t.track_id for t in tracks}
    if storage.exists(index):
        with storage.open(index, newline="") as f:
            rows = [
                r for r in csv.DictReader(f)
                if r["track_id"] not in current
                and storage.exists(os.path.join(output_dir, r["file"]))
            ]  # fmt: skip
    for track in tracks:
        path = npz_path(output_dir, track.track_id)
        if not storage.exists(path):
            continue
        with storage.open(path, "rb") as f, np.load(f) as data:
            frames, duration = len(data["timestamps"]), float(data["duration_s"])
        rows.append({
            "track_id": track.track_id, "source_path": track.path,
            "duration_s": round(duration, 3), "frames": frames,
            "file": os.path.relpath(path, output_dir),
        })  # fmt: skip
    text = io.StringIO()
    writer = csv.DictWriter(
        text, ["track_id", "source_path", "duration_s", "frames", "file"]
    )
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: r["track_id"]))
    storage.write_atomic(index, text.getvalue())
    return rows


class TrackOutput:
    """One track's outputs, streamed to temporary files until `write` makes the .npz."""

    def __init__(self, track, spilled, plan, path, tmp_dir):
        self.track, self.spilled, self.plan, self.path = track, spilled, plan, path
        self.remaining = len(plan)
        self.tmp_dir = tmp_dir
        self.files, self.shapes, self.sums = {}, {}, {}

    def add(self, frames: dict) -> None:
        with storage.writing(self.tmp_dir):
            self._add(frames)

    def _add(self, frames: dict) -> None:
        for key, value in frames.items():
            value = np.ascontiguousarray(value, dtype=np.float32)
            if key not in self.files:
                self.files[key] = open(
                    os.path.join(self.tmp_dir, f"{os.getpid()}-{id(self)}-{key}.raw"), "w+b"
                )
                self.shapes[key] = [0, *value.shape[1:]]
                self.sums[key] = np.zeros(value.shape[1:], np.float64)
            self.files[key].write(value.tobytes())
            self.shapes[key][0] += len(value)
            self.sums[key] += value.sum(axis=0, dtype=np.float64)
        self.remaining -= 1

    def write(self, frame_stack: int) -> None:
        """The .npz, atomically (written under a temporary name, then renamed);
        a failed write raises `storage.OutputError` naming it."""
        with storage.writing(self.path):
            storage.makedirs(os.path.dirname(self.path) or ".")
            temporary = os.path.join(self.tmp_dir, f"{os.getpid()}-{id(self)}.npz")
            self._write_npz(temporary, frame_stack)
        storage.put_file(temporary, self.path)
        self.close()

    def _write_npz(self, temporary: str, frame_stack: int) -> None:
        from m3bert_tf.data.windows import timestamps
        from m3bert_tf.serving.outputs import clip_key

        num_frames = self.shapes["frame_embeddings"][0]
        with zipfile.ZipFile(temporary, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
            small = {
                "timestamps": timestamps(num_frames, frame_stack),
                "duration_s": np.float64(self.spilled.duration_s),
                SOURCE_KEY: np.array(self.track.source_sha256),
            }
            for key, value in self.sums.items():
                small[clip_key(key)] = (value / max(num_frames, 1)).astype(np.float32)
            for key, value in small.items():
                with z.open(f"{key}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asarray(value))
            for key, handle in self.files.items():
                header = {
                    "descr": "<f4",
                    "fortran_order": False,
                    "shape": tuple(self.shapes[key]),
                }
                with z.open(f"{key}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array_header_1_0(f, header)
                    handle.seek(0)
                    shutil.copyfileobj(handle, f, 1 << 22)

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()
            os.remove(handle.name)
        self.files = {}
        self.spilled.close()
