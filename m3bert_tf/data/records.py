"""Encoding and parsing one chunk as a `tf.train.Example` (schema in `schema.py`).

Encoding needs no TensorFlow (`wire`: extraction workers serialize their own
records); parsing is TensorFlow's, graph-safe for `Dataset.map`.
"""

import json

import numpy as np

from m3bert_tf import schema
from m3bert_tf.data import wire


def encode_example(
    features: np.ndarray,
    track_mean: np.ndarray,
    track_std: np.ndarray,
    track_id: str,
    chunk_index: int,
    source_path: str,
    split: str = "",
    labels: dict | None = None,
    label_vectors: dict | None = None,
) -> bytes:
    """Serializes one chunk.

    Args:
      features: [num_frames, 324] array (per-track CMVN'd), stored as
        little-endian float16 bytes.
      track_mean, track_std: [324] raw per-channel statistics of the whole
        track (features * std + mean gives back the raw features).
      track_id: id shared by every chunk of the track.
      chunk_index: 0-based position of the chunk in its track.
      source_path: the audio file it came from.
      split: "train" / "valid" / "test", or "" when not known.
      labels: {task: label} (JSON-serializable), or None: kept for people.
      label_vectors: {task: [float]} as `TaskSpec.encode` gives, stored as
        `label/<task>` float features: what fine-tuning reads.
    """
    if features.ndim != 2 or features.shape[1] != schema.NUM_FEATURES:
        raise ValueError(
            f"{source_path}: features must be [frames, {schema.NUM_FEATURES}], "
            f"got {features.shape}"
        )
    for name, value in (("track_mean", track_mean), ("track_std", track_std)):
        if np.shape(value) != (schema.NUM_FEATURES,):
            raise ValueError(
                f"{source_path}: {name} must be [{schema.NUM_FEATURES}], got {np.shape(value)}"
            )
    data = np.ascontiguousarray(features, dtype=schema.FEATURE_DTYPE).tobytes()
    feature = {
        schema.LABEL_PREFIX + task: wire.floats_feature(values)
        for task, values in (label_vectors or {}).items()
    }
    return wire.example(
        {
            **feature,
            schema.FEATURES_KEY: wire.bytes_feature(data),
            schema.NUM_FRAMES_KEY: wire.int64_feature(features.shape[0]),
            schema.TRACK_MEAN_KEY: wire.floats_feature(track_mean),
            schema.TRACK_STD_KEY: wire.floats_feature(track_std),
            schema.TRACK_ID_KEY: wire.bytes_feature(track_id.encode()),
            schema.CHUNK_INDEX_KEY: wire.int64_feature(chunk_index),
            schema.SOURCE_PATH_KEY: wire.bytes_feature(source_path.encode()),
            schema.SPLIT_KEY: wire.bytes_feature(split.encode()),
            schema.LABELS_KEY: wire.bytes_feature(json.dumps(labels or {}).encode()),
        }
    )


def feature_spec() -> dict:
    """{key: tf.io feature} of every schema key."""
    import tensorflow as tf

    return {
        schema.FEATURES_KEY: tf.io.FixedLenFeature([], tf.string),
        schema.NUM_FRAMES_KEY: tf.io.FixedLenFeature([], tf.int64),
        schema.TRACK_MEAN_KEY: tf.io.FixedLenFeature([schema.NUM_FEATURES], tf.float32),
        schema.TRACK_STD_KEY: tf.io.FixedLenFeature([schema.NUM_FEATURES], tf.float32),
        schema.TRACK_ID_KEY: tf.io.FixedLenFeature([], tf.string),
        schema.CHUNK_INDEX_KEY: tf.io.FixedLenFeature([], tf.int64),
        schema.SOURCE_PATH_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
        schema.SPLIT_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
        schema.LABELS_KEY: tf.io.FixedLenFeature([], tf.string, default_value="{}"),
    }


def parse_example(serialized, label_sizes: dict | None = None) -> dict:
    """Parses one serialized example (graph-safe, for `Dataset.map`).

    Args:
      label_sizes: {task: stored label width}; each becomes "label/<task>",
        a [width] float32 (zeros when absent) and "has/<task>", a bool.

    Returns a dict with "features" as [num_frames, 324] float32 and the other
    schema keys as scalars.
    """
    import tensorflow as tf

    spec = feature_spec()
    for task in label_sizes or {}:
        spec[schema.LABEL_PREFIX + task] = tf.io.VarLenFeature(tf.float32)
    parsed = tf.io.parse_single_example(serialized, spec)
    for task, size in (label_sizes or {}).items():
        values = tf.sparse.to_dense(parsed[schema.LABEL_PREFIX + task])
        present = tf.equal(tf.size(values), size)
        padded = tf.concat([values, tf.zeros([size])], 0)[:size]  # static width
        parsed[schema.LABEL_PREFIX + task] = padded * tf.cast(present, tf.float32)
        parsed["has/" + task] = present
    frames = tf.io.decode_raw(parsed[schema.FEATURES_KEY], tf.float16, little_endian=True)
    frames = tf.reshape(frames, [-1, schema.NUM_FEATURES])
    parsed[schema.FEATURES_KEY] = tf.cast(frames, tf.float32)
    return parsed


def read_examples(path: str) -> list[dict]:
    """Reads a whole shard eagerly into Python values (for tests and tools)."""
    import tensorflow as tf

    out = []
    for record in tf.data.TFRecordDataset(path):
        ex = parse_example(record)
        out.append(
            {
                key: (v.numpy().decode() if v.dtype == tf.string else v.numpy())
                for key, v in ex.items()
            }
        )
    return out
