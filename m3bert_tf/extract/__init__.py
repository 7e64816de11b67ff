"""The extraction room: audio files -> 324-dim frame features -> TFRecord shards.

    from m3bert_tf import extract
    manifest = extract.run_extract(extract.ExtractConfig(input="music/", output_dir="shards/"))

- `encode`: one track in, its records out (the pure per-track step; no
  TensorFlow, so any runner calls it);
- `job`: the local job (a process pool, resumable, byte-identical for any
  worker count);
- `beam`: the same on Apache Beam;
- `manifest`: what a job writes besides shards (manifest.json, splits.csv).

The shard directory's layout (shards, indexes, digests) is `data/shards.py`'s;
listing the audio of an input is `datasets.find_tracks`'.
"""

from m3bert_tf.extract.job import (
    FAILURES_NAME,
    ExtractConfig,
    StrictStop,
    find_tracks,
    run_extract,
)

__all__ = ["FAILURES_NAME", "ExtractConfig", "StrictStop", "find_tracks", "run_extract"]
