"""A frozen encoder's outputs for every labeled example, computed once.

    cache = open_cache(directory, source, log)      # builds it, or reuses it
    cache.ids("train")                # example numbers of a split
    cache.sequence(i)                 # [n_i, D] float32 (a read-only memmap)
    cache.labels[task][i], cache.has[task][i]

`source` (`CacheSource`) says what is cached: with `encoder` given, the
encoder's last-layer output of each whole example ([ceil(n / k), H]: windows
of `window` frames, stitched as `windows.plan` says, so every output frame
comes from the window where it is most central); without, the normalized
features themselves ([n, 324]), for jobs whose encoder trains too.

On disk, `<directory>/<key>/`: `sequences.f32` (every example's rows, one
after another), `index.npz` (offsets, splits, track ids, labels) and
`info.json`. The key is a digest of the encoder's config and weights, the
window, the normalization, the tasks and every shard read (its contents):
another encoder or other data is another cache, never a stale one. A cache is
written under a temporary name and renamed when complete.
"""

import dataclasses
import hashlib
import json
import os
import shutil
import zipfile
from typing import NamedTuple

import numpy as np

from m3bert_tf import schema
from m3bert_tf.data import shards, windows
from m3bert_tf.io import storage
from m3bert_tf.io.progress import Progress

SPLITS = ("train", "valid", "test")
FORMAT = 1


@dataclasses.dataclass(frozen=True)
class CacheSource:
    """What a cache holds.

    Attributes:
      data: labeled shard dirs or globs, comma-separated.
      label_sizes: {task: stored label width}, the tasks whose examples are kept.
      normalization, stats: as the encoder was trained (`data.normalization`).
      encoder: an `M3BertEncoder`, or None to cache the normalized features.
      window: input frames per encoder window (a multiple of its frame stack).
      batch_size: windows per encoder call.
    """

    data: str
    label_sizes: dict
    normalization: str
    stats: dict | None
    encoder: object = None
    window: int = schema.CHUNK_FRAMES
    batch_size: int = 16

    @property
    def frame_stack(self) -> int:
        return 1 if self.encoder is None else self.encoder.frame_stack

    @property
    def width(self) -> int:
        return schema.NUM_FEATURES if self.encoder is None else self.encoder.hidden_dim

    def key(self, files: list[str]) -> str:
        """A digest of everything the cached values depend on: the shards by
        their contents (`shards.content_digests`), never by name or size."""
        from m3bert_tf.data.shards import content_digests

        h = hashlib.sha256()
        description = {
            "format": FORMAT,
            "normalization": self.normalization,
            "stats": self.stats,
            "label_sizes": sorted(self.label_sizes.items()),
            "files": sorted(content_digests(files).values()),
        }
        if self.encoder is not None:
            description["encoder"] = self.encoder.get_config()
            description["window"] = self.window
        h.update(json.dumps(description, sort_keys=True, default=str).encode())
        if self.encoder is not None:
            for w in self.encoder.get_weights():
                h.update(np.ascontiguousarray(w).tobytes())
        return h.hexdigest()[:20]


class ExampleCache:
    """A finished cache, read-only (see the module docstring).

    Attributes:
      width: D, values per row.
      frame_stack: k; a row is k input frames.
      splits: [N] str; track_ids: [N] str.
      labels: {task: [N, size] float32}; has: {task: [N] bool}.
      lengths: [N] rows per example.
    """

    def __init__(self, path: str):
        self.path = path
        with open(os.path.join(path, "info.json")) as f:
            self.info = json.load(f)
        self.width = int(self.info["width"])
        self.frame_stack = int(self.info["frame_stack"])
        index = np.load(os.path.join(path, "index.npz"))
        self.offsets = index["offsets"]
        self.lengths = np.diff(self.offsets)
        self.splits = index["splits"].astype(str)
        self.track_ids = index["track_ids"].astype(str)
        tasks = self.info["tasks"]
        self.labels = {t: index[f"label_{i}"] for i, t in enumerate(tasks)}
        self.has = {t: index[f"has_{i}"] for i, t in enumerate(tasks)}
        rows = int(self.offsets[-1])
        size = os.path.getsize(os.path.join(path, "sequences.f32"))
        if size != rows * self.width * 4:
            raise ValueError(
                f"sequences.f32 holds {size} bytes, its index says {rows} x {self.width} float32"
            )
        self._rows = (
            np.memmap(
                os.path.join(path, "sequences.f32"),
                np.float32,
                "r",
                shape=(rows, self.width),
            )
            if rows
            else np.zeros((0, self.width), np.float32)
        )

    def __len__(self) -> int:
        return len(self.lengths)

    def ids(self, split: str, task: str | None = None) -> np.ndarray:
        """Example numbers of `split` (labeled for `task` when given), in data order."""
        keep = self.splits == split
        if task is not None:
            keep &= self.has[task]
        return np.flatnonzero(keep)

    def sequence(self, i: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """[rows, D] of example i (rows start:stop of it)."""
        lo = int(self.offsets[i])
        n = int(self.lengths[i])
        stop = n if stop is None else min(stop, n)
        return self._rows[lo + start : lo + stop]

    def padded(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """([len(ids), longest, D] zero-padded sequences, [len(ids), longest] bool mask)."""
        longest = max(int(self.lengths[i]) for i in ids)
        x = np.zeros((len(ids), longest, self.width), np.float32)
        mask = np.zeros((len(ids), longest), bool)
        for row, i in enumerate(ids):
            n = int(self.lengths[i])
            x[row, :n] = self.sequence(i)
            mask[row, :n] = True
        return x, mask


def open_cache(directory: str, source: CacheSource, log=print, job="cache") -> ExampleCache:
    """The cache of `source` under `directory`, built first when missing (with
    a `<job>: caching` progress line); caches of other sources there are removed.

    Raises:
      shards.DataError: the data holds no example of the tasks in any split.
    """
    from m3bert_tf.data.shards import list_shards

    files = list_shards(source.data)
    path = os.path.join(directory, source.key(files))
    if os.path.exists(os.path.join(path, "info.json")):
        try:
            cache = ExampleCache(path)
            log(f"{len(cache)} examples from the cache {path}")
            return cache
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            # Cut short or overwritten since it was made: made again, not trusted.
            log(
                f"the cache {path} is unreadable ({type(e).__name__}: {e}): making it again"
            )
            shutil.rmtree(path)
    os.makedirs(directory, exist_ok=True)
    for old in os.listdir(directory):  # ours only: a directory with our info.json
        if os.path.exists(os.path.join(directory, old, "info.json")) or old.endswith(
            storage.TMP_SUFFIX
        ):
            shutil.rmtree(os.path.join(directory, old))
            log(f"removed the stale cache {old} (another encoder, or other shard contents)")
    tmp = path + storage.TMP_SUFFIX
    os.makedirs(tmp)
    _build(tmp, files, source, f"{job}: caching")
    os.replace(tmp, path)
    cache = ExampleCache(path)
    log(f"{len(cache)} examples cached in {path}")
    return cache


class LabeledRecord(NamedTuple):
    """One labeled example as read from the shards.

    Attributes:
      track_id, split: as stored.
      features: [n, 324] float32, normalized as asked ("track": as stored).
      mean, std: [324] float32, the track's raw statistics.
      labels: {task: ([size] float32 label, has label)}.
    """

    track_id: str
    split: str
    features: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    labels: dict


def labeled_records(files: list[str], label_sizes: dict, normalization: str = "track",
                    stats: dict | None = None):  # fmt: skip
    """Yields (records read, LabeledRecord) for every record of a split in
    SPLITS labeled for one of the tasks in `label_sizes`, (records read, None)
    for every other record, in file order."""
    import tensorflow as tf

    from m3bert_tf.data import records
    from m3bert_tf.data.normalization import normalize

    tasks = list(label_sizes)

    def parse(serialized):
        ex = records.parse_example(serialized, label_sizes)
        mean, std = ex[schema.TRACK_MEAN_KEY], ex[schema.TRACK_STD_KEY]
        frames = normalize(ex[schema.FEATURES_KEY], mean, std, normalization, stats)
        return (
            ex[schema.TRACK_ID_KEY], ex[schema.SPLIT_KEY], frames, mean, std,
            {t: (ex[schema.LABEL_PREFIX + t], ex["has/" + t]) for t in tasks},
        )  # fmt: skip

    ds = tf.data.TFRecordDataset(files).map(
        parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    for n, (track, split, frames, mean, std, labels) in enumerate(
        ds.prefetch(4).as_numpy_iterator(), 1
    ):
        split = split.decode()
        if split in SPLITS and any(has for _, has in labels.values()):
            yield n, LabeledRecord(track.decode(), split, frames, mean, std, labels)
        else:
            yield n, None


def _encode_fn(encoder):
    """A compiled ([B, W, 324], [B, W] mask) -> [B, W', H] float32 of the encoder."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def run(features, mask):
        out = encoder({"features": features, "padding_mask": mask}, training=False)
        return tf.cast(out["sequence_output"], tf.float32)

    return run


def _build(path: str, files: list[str], source: CacheSource, name: str) -> None:
    progress = Progress(name, count_records(files), "records")
    meta = {"splits": [], "track_ids": [], "lengths": []}
    labels = {t: [] for t in source.label_sizes}
    has = {t: [] for t in source.label_sizes}
    run = _encode_fn(source.encoder) if source.encoder is not None else None
    k = source.frame_stack
    with open(os.path.join(path, "sequences.f32"), "wb") as out:
        pending = []  # (example number, window, features) waiting for a batch
        outputs: dict[int, list] = {}

        def flush():
            """Encodes the pending windows; writes every example now complete, in order."""
            if pending:
                x = np.zeros(
                    (source.batch_size, source.window, schema.NUM_FEATURES), np.float32
                )
                mask = np.zeros((source.batch_size, source.window), bool)
                for row, (_, _, feats) in enumerate(pending):
                    x[row, : len(feats)] = feats
                    mask[row, : len(feats)] = True
                encoded = run(x, mask).numpy()
                for row, (i, w, _) in enumerate(pending):
                    outputs[i].append(encoded[row, w.kept(k)])
                pending.clear()
            while order and done[order[0]]:
                i = order.pop(0)
                del done[i]
                out.write(np.concatenate(outputs.pop(i)).astype(np.float32).tobytes())

        order, done = [], {}  # examples not yet written; all their windows queued?
        i = -1
        for records_read, example in labeled_records(
            files, source.label_sizes, source.normalization, source.stats
        ):
            progress.update(records_read)
            if example is None:
                continue
            i += 1
            frames = example.features
            meta["splits"].append(example.split)
            meta["track_ids"].append(example.track_id)
            for t, (value, present) in example.labels.items():
                labels[t].append(value)
                has[t].append(bool(present))
            if run is None:
                meta["lengths"].append(len(frames))
                out.write(frames.astype(np.float32).tobytes())
            else:
                plan = windows.plan(len(frames), source.window, source.window, k)
                meta["lengths"].append(plan[-1].keep_stop)
                outputs[i], done[i] = [], False
                order.append(i)
                for w in plan:
                    pending.append((i, w, frames[w.start : w.stop]))
                    if len(pending) == source.batch_size:
                        flush()
                done[i] = True
        if run is not None:
            flush()
    if not meta["splits"]:
        from m3bert_tf.data.shards import DataError

        raise DataError(
            f"data={source.data}: no example of a train/valid/test split is labeled for "
            f"{', '.join(source.label_sizes)}"
        )
    tasks = list(source.label_sizes)
    arrays = {
        "offsets": np.concatenate([[0], np.cumsum(meta["lengths"])]).astype(np.int64),
        "splits": np.array(meta["splits"]),
        "track_ids": np.array(meta["track_ids"]),
    }
    for j, t in enumerate(tasks):
        arrays[f"label_{j}"] = np.array(labels[t], np.float32).reshape(
            len(meta["splits"]), source.label_sizes[t]
        )
        arrays[f"has_{j}"] = np.array(has[t], bool)
    np.savez(os.path.join(path, "index.npz"), **arrays)
    info = {
        "format": FORMAT,
        "width": source.width,
        "frame_stack": k,
        "window": source.window if source.encoder is not None else None,
        "what": "encoder last layer"
        if source.encoder is not None
        else "normalized features",
        "tasks": tasks,
        "examples": len(meta["splits"]),
        "data": source.data,
    }
    with open(os.path.join(path, "info.json"), "w") as f:
        json.dump(info, f, indent=1)


def count_records(files: list[str]) -> int:
    """Records in `files`, from their directories' manifests (0 when unknown)."""
    counts = {}
    for d in {os.path.dirname(f) for f in files}:
        try:
            with storage.open(os.path.join(d, shards.MANIFEST_NAME)) as f:
                manifest = json.load(f)
        except (OSError, ValueError):
            continue
        for s in manifest.get("shards", []):
            counts[os.path.join(d, s["name"])] = int(s.get("num_examples", 0))
    return sum(counts.get(f, 0) for f in files)
