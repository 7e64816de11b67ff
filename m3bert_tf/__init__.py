"""m3bert_tf: M3BERT, a transformer encoder for music audio, in TensorFlow/Keras.

Importing the package is cheap: it pulls in neither TensorFlow, Keras nor
librosa. Each room imports what it needs:

- `m3bert_tf.schema`: the 324-dim frame layout and the record schema.
- `m3bert_tf.features`: audio decoding and librosa frame features (no TF).
- `m3bert_tf.data`: TFRecord shards (TensorFlow, no Keras).
- `m3bert_tf.extract`: the parallel, resumable extraction job; `encode`: its
  pure per-track step.
- `m3bert_tf.runs`: the run-directory layout and the model loaders.
- `m3bert_tf.metrics`: task metrics and the results table.
- `m3bert_tf.corpus`: the built-in synthetic example corpus.
- `m3bert_tf.serving`: SavedModel export, the Python API (`m3bert_tf.load`)
  and bin/embed's job; `m3bert_tf.hear`: the HEAR 2021 API.
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
