"""The extraction room: audio files -> 324-dim frame features -> TFRecord shards.

    from m3bert_tf import extract
    manifest = extract.run(extract.ExtractConfig(input="music/", output_dir="shards/"))

`run` calls the runner the config names (`RUNNERS`: "local", "beam", "dask").

- `encode`: one track in, its records out (the pure per-track step; no
  TensorFlow, so any runner calls it);
- `job`: the local job (a process pool, resumable, byte-identical for any
  worker count);
- `beam`: the same on Apache Beam's runners and on Dask, in two passes
  through shared storage (`staged`: the workers' steps);
- `manifest`: what a job writes besides shards (manifest.json, splits.csv).

The shard directory's layout (shards, indexes, digests) is `data/shards.py`'s;
listing the audio of an input is `datasets.find_tracks`'.
"""

from m3bert_tf.data.shards import FAILURES_NAME
from m3bert_tf.extract.job import (
    RUNNERS,
    EngineFailed,
    ExtractConfig,
    StrictStop,
    find_tracks,
    run_extract,
)


def run(config: ExtractConfig) -> dict:
    """Runs (or resumes) the extraction job of `config` on `config.runner`;
    returns the manifest dict.

    Raises:
      FileNotFoundError: the input names no audio (nothing is created).
      locks.DirectoryInUse: another job is writing into the output directory.
      StrictStop: `config.strict` and a file failed.
      ImportError: runner "beam" or "dask" without their libraries (the message
        says what to install).
      EngineFailed: Beam's or Dask's job failed (the message names the files left).
    """
    if config.runner in ("beam", "dask"):
        from m3bert_tf.extract import beam

        return beam.run_extract_beam(config)
    return run_extract(config)


__all__ = [
    "FAILURES_NAME", "RUNNERS", "EngineFailed", "ExtractConfig", "StrictStop", "find_tracks", "run",
    "run_extract",
]  # fmt: skip
