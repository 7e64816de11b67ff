"""m3bert_tf: M3BERT, a transformer encoder for music audio, in TensorFlow/Keras.

The public API: `load` (a trained model: embed, predict), `hear` (the HEAR
2021 API), `__version__`. Importing the package is cheap: neither
TensorFlow, Keras nor librosa. The rooms, each importing only rooms above it
in this list (tests/test_walls.py holds them to it):

- `schema`, `version`, `fields`: the 324-dim layout and record schema; the
  version; what every config dataclass shares (the leaves every room reads).
- `io/`: every file read or written (local paths and URLs), one job per
  directory, progress lines.
- `features/`: decoding and librosa frame features (no TensorFlow).
- `tasks/`: task kinds and label encoding, metrics and the results table.
- `layers/`, `models/`: the Keras encoder and heads (no files, no flags).
- `datasets/`: labeled dataset loaders and what an `--input` names (no TF).
- `data/`: TFRecords, the shard directory, normalization, masking, windows
  over long inputs, the tf.data pipelines (TensorFlow, no Keras).
- `frontend/`: the features as TensorFlow core ops, for exported graphs.
- `runs/`: the run directory and model loaders; a frozen encoder's cached
  outputs.
- `extract/`: the extraction job, local and on Beam.
- `train/`: pre-training and fine-tuning (configs, losses, loops).
- `serving/`: export, the Python API, bin/embed (never `train/`).
- `evaluate/`: bin/evaluate and bin/correlate (never `train/`).
- `hear`: the HEAR API. `demo/`: the example corpus and `make demo`.
- `cli/`: the binaries' edge: flags generated from the config dataclasses,
  one-line errors.
"""

# librosa's numba kernels cache into a directory of ours, compiled once per
# environment by a job's parent (`features.kernels`): an environment variable
# only, set before anything imports librosa, and never over the user's own.
from m3bert_tf.features import kernels as _kernels  # noqa: E402
from m3bert_tf.version import __version__  # noqa: F401 (the public API)

_kernels.configure()


def load(path: str, frontend: str = "auto"):
    """A trained model from an export (`bin/export`) or a run directory, with
    `embed(waveform, sample_rate)`, `embed_file(path)` and, for a fine-tuned
    model, `predict(waveform, sample_rate)`; `frontend` "tf" | "librosa" |
    "auto" says how audio becomes features. See `m3bert_tf.serving.api`."""
    from m3bert_tf.serving.api import load as _load

    return _load(path, frontend)
