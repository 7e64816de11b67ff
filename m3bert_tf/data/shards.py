"""Writing shards atomically, with a sidecar index that makes jobs resumable.

A shard `shard-00007.tfrecord` is written under a temporary name and renamed
when complete; before the rename, its index `shard-00007.index.json` (the
tracks it holds) is written the same way. So on disk:

- a shard file exists only complete, and its index exists beside it;
- an index without its shard, or any `*.tmp` file, is debris of a killed run:
  `scan_output_dir` removes it and its tracks are redone.

Readers take `*.tfrecord` (or the manifest's shard list) and never see a
half-written file.
"""

import glob
import json
import os

from m3bert_tf import schema

SHARD_PATTERN = "shard-{:05d}" + schema.SHARD_SUFFIX
INDEX_SUFFIX = ".index.json"
TMP_SUFFIX = ".tmp"


def write_json_atomic(path: str, value) -> None:
    """Writes JSON to `path` via a temporary file and a rename."""
    tmp = path + TMP_SUFFIX
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def index_path(shard_path: str) -> str:
    return shard_path[: -len(schema.SHARD_SUFFIX)] + INDEX_SUFFIX


class ShardWriter:
    """Writes serialized examples into one shard; nothing is visible until `close`.

    Args:
      path: final shard path.
    """

    def __init__(self, path: str):
        self.path = path
        self.tracks: list[dict] = []
        self.num_examples = 0
        # Imported here, not at module load, so that the extraction job's
        # worker processes boot while TensorFlow loads in the parent.
        import tensorflow as tf

        self._writer = tf.io.TFRecordWriter(path + TMP_SUFFIX)

    def add_track(self, serialized_chunks: list[bytes], entry: dict) -> None:
        """Adds every chunk of one track; `entry` describes it in the index."""
        for record in serialized_chunks:
            self._writer.write(record)
        self.num_examples += len(serialized_chunks)
        self.tracks.append(entry)

    def close(self) -> None:
        self._writer.close()
        write_json_atomic(
            index_path(self.path),
            {"num_examples": self.num_examples, "tracks": self.tracks},
        )
        os.replace(self.path + TMP_SUFFIX, self.path)


def scan_output_dir(output_dir: str) -> tuple[list[dict], int]:
    """Finds finished shards and removes debris of an interrupted run.

    Returns:
      ([{"shard": name, "num_examples": n, "tracks": [...]}] sorted by name,
       the next free shard number).
    """
    for tmp in glob.glob(os.path.join(output_dir, "*" + TMP_SUFFIX)):
        os.remove(tmp)
    finished, next_number = [], 0
    for idx in sorted(glob.glob(os.path.join(output_dir, "shard-*" + INDEX_SUFFIX))):
        shard = idx[: -len(INDEX_SUFFIX)] + schema.SHARD_SUFFIX
        number = int(os.path.basename(idx)[len("shard-") :][:5])
        next_number = max(next_number, number + 1)
        if not os.path.exists(shard):
            os.remove(idx)  # killed between the index and the shard rename
            continue
        with open(idx) as f:
            info = json.load(f)
        finished.append({"shard": os.path.basename(shard), **info})
    return finished, next_number
