"""Writing one shard of the shard directory (its layout is `shards.py`'s):
the records, then the index beside it, then the shard renamed in.

    writer = ShardWriter(os.path.join(output_dir, shards.SHARD_PATTERN.format(7)))
    writer.add_framed(path, num_records, entry, sums)   # one track, in order
    finished = writer.close()   # {"shard": name, **its index}
"""

import errno
import hashlib
import os

from m3bert_tf.data import wire
from m3bert_tf.data.shards import INDEX_FIELDS, TMP_SUFFIX, index_path
from m3bert_tf.io import storage


def write_index(
    shard_path: str,
    num_examples: int,
    num_bytes: int,
    sha256: str,
    tracks: list,
    stats: dict,
    replaces: str = "",
) -> dict:
    """Writes the index beside `shard_path` (before the shard's own rename)
    and returns it: the one writer of the record, for the local and the
    Beam writer alike.

    Args:
      num_examples: records in the shard (the sum of its tracks' num_chunks).
      num_bytes, sha256: the shard file's size and digest.
      tracks: one entry per track ({"track_id", "num_chunks", ...}).
      stats: {split: raw-feature sums} of the tracks whose first chunk is here.
      replaces: the shard this one replaces (written without some tracks),
        removed once this one is whole (`scan_output_dir` finishes it).
    """
    chunks = sum(int(t["num_chunks"]) for t in tracks)
    if chunks != num_examples:
        raise ValueError(
            f"{shard_path}: its tracks hold {chunks} chunks, the shard {num_examples} records"
        )
    info = dict(
        zip(INDEX_FIELDS, (num_examples, num_bytes, sha256, tracks, stats), strict=True)
    )
    if replaces:
        info["replaces"] = replaces
    storage.write_json(index_path(shard_path), info)
    return info


class ShardWriter:
    """Writes framed TFRecords into one shard; nothing is visible until `close`.

    No TensorFlow: records are framed by `wire`, and the size and SHA-256 the
    index records are taken as the bytes go out (the shard is not read back).

    Args:
      path: final shard path.
      replaces: the shard this one replaces (`write_index`).
      attempt: a name part of this writer's own for the temporary file, where
        two attempts may write one shard at once (an engine's retried task).
    """

    COPY_BLOCK = 1 << 20

    def __init__(self, path: str, replaces: str = "", attempt: str = ""):
        self.path, self.replaces = path, replaces
        self.tmp = f"{path}.{attempt}{TMP_SUFFIX}" if attempt else path + TMP_SUFFIX
        self.tracks: list[dict] = []
        self.stats: dict[str, dict] = {}
        self.num_examples = 0
        self.bytes = 0
        self._hash = hashlib.sha256()
        with storage.writing(path):
            self._file = storage.open(self.tmp, "wb")

    def _write(self, data: bytes) -> None:
        with storage.writing(self.path):
            self._file.write(data)
        self._hash.update(data)
        self.bytes += len(data)

    def _add_entry(self, entry: dict, sums: dict) -> None:
        from m3bert_tf.data.normalization import add_sums

        self.tracks.append(entry)
        if sums:  # none for a track whose first chunk is in another shard
            split = entry.get("split") or ""
            self.stats[split] = add_sums(self.stats.get(split), sums)

    def add_track(self, serialized_chunks, entry: dict, sums: dict) -> None:
        """Adds every chunk of one track (an iterable of serialized examples,
        written as they come); `entry` describes it in the index, `sums` are
        its raw-feature statistics (`normalization.sums_of`)."""
        for record in serialized_chunks:
            self._write(wire.frame(record))
            self.num_examples += 1
        self._add_entry(entry, sums)

    def add_records(self, framed: list[bytes], entry: dict, sums: dict) -> None:
        """Adds one track's records already framed (copied from another shard)."""
        for record in framed:
            self._write(record)
        self.num_examples += len(framed)
        self._add_entry(entry, sums)

    def add_framed(
        self, framed_path: str, num_records: int, entry: dict, sums: dict, remove=True
    ) -> None:
        """Appends a track's records already framed by a worker (a file of
        `encode.write_framed`, removed here unless `remove` is False), copied as bytes."""
        with storage.open(framed_path, "rb") as f:
            while block := f.read(self.COPY_BLOCK):
                self._write(block)
        if remove:
            storage.remove(framed_path)
        self.num_examples += num_records
        self._add_entry(entry, sums)

    def abort(self) -> None:
        """Removes what was written; nothing is listed."""
        self._file.close()
        storage.remove(self.tmp)

    def close(self) -> dict:
        """Writes the shard and its index under their final names, once the
        shard's size on disk is the size of what was written; returns the
        finished shard's entry ({"shard": name, **its index})."""
        with storage.writing(self.path):
            self._file.close()
        written = storage.size(self.tmp)
        if written != self.bytes:
            raise storage.OutputError(
                errno.EIO, f"{written} of {self.bytes} bytes on disk", self.path
            )
        self.sha256 = self._hash.hexdigest()
        info = write_index(
            self.path, self.num_examples, self.bytes, self.sha256, self.tracks, self.stats,
            self.replaces,
        )  # fmt: skip
        storage.replace(self.tmp, self.path)
        return {"shard": os.path.basename(self.path), **info}
