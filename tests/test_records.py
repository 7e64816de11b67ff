import numpy as np
import pytest
import tensorflow as tf

from m3bert_tf import schema
from m3bert_tf.data import records

MEAN = np.linspace(-3, 3, 324).astype(np.float32)
STD = np.linspace(0.5, 2, 324).astype(np.float32)


def test_encode_parse_round_trip_eager_and_in_map():
    x = np.random.default_rng(0).standard_normal((37, 324)).astype(np.float16)
    data = records.encode_example(
        x, MEAN, STD, "t/1", 2, "/a/b.wav", "train", {"genre": "rock"}
    )
    eager = records.parse_example(tf.constant(data))
    mapped = next(iter(tf.data.Dataset.from_tensors(data).map(records.parse_example)))
    for parsed in (eager, mapped):
        np.testing.assert_array_equal(
            parsed[schema.FEATURES_KEY].numpy(), x.astype(np.float32)
        )
        np.testing.assert_array_equal(parsed[schema.TRACK_MEAN_KEY].numpy(), MEAN)
        np.testing.assert_array_equal(parsed[schema.TRACK_STD_KEY].numpy(), STD)
        assert parsed[schema.NUM_FRAMES_KEY].numpy() == 37
        assert parsed[schema.TRACK_ID_KEY].numpy() == b"t/1"
        assert parsed[schema.CHUNK_INDEX_KEY].numpy() == 2
        assert parsed[schema.SPLIT_KEY].numpy() == b"train"
        assert parsed[schema.LABELS_KEY].numpy() == b'{"genre": "rock"}'


def test_features_are_raw_float16_bytes():
    x = np.ones((10, 324), np.float32)
    example = tf.train.Example.FromString(records.encode_example(x, MEAN, STD, "t", 0, "p"))
    raw = example.features.feature[schema.FEATURES_KEY].bytes_list.value[0]
    assert len(raw) == 10 * 324 * 2


def test_wrong_width_names_the_source():
    with pytest.raises(ValueError, match="song.wav: features must be"):
        records.encode_example(np.zeros((5, 100)), MEAN, STD, "t", 0, "song.wav")
    with pytest.raises(ValueError, match="song.wav: track_std must be"):
        records.encode_example(np.zeros((5, 324)), MEAN, STD[:10], "t", 0, "song.wav")


def _tensorflow_example(x, labels, label_vectors, chunk_index, split):
    """The same chunk built with TensorFlow's own protobuf classes."""

    def one(kind, value):
        if kind == "bytes":
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        if kind == "int64":
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        return tf.train.Feature(float_list=tf.train.FloatList(value=list(value)))

    import json

    feature = {
        schema.FEATURES_KEY: one("bytes", x.astype("<f2").tobytes()),
        schema.NUM_FRAMES_KEY: one("int64", x.shape[0]),
        schema.TRACK_MEAN_KEY: one("floats", MEAN),
        schema.TRACK_STD_KEY: one("floats", STD),
        schema.TRACK_ID_KEY: one("bytes", "tråck/1".encode()),
        schema.CHUNK_INDEX_KEY: one("int64", chunk_index),
        schema.SOURCE_PATH_KEY: one("bytes", b"/a/b.wav"),
        schema.SPLIT_KEY: one("bytes", split.encode()),
        schema.LABELS_KEY: one("bytes", json.dumps(labels).encode()),
        **{schema.LABEL_PREFIX + t: one("floats", v) for t, v in label_vectors.items()},
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


@pytest.mark.parametrize(
    "frames, chunk_index, split, label_vectors",
    [
        (1, 0, "", {}),
        (129, 7, "train", {"genre": [0.0, 1.0, 0.0]}),
        (1292, 300, "valid", {"mood": [0.25, -1.5], "empty": []}),
    ],
)
def test_records_are_tensorflows_bytes_written_without_tensorflow(
    tmp_path, frames, chunk_index, split, label_vectors
):
    """`wire` (what extraction workers use, no TensorFlow) gives exactly the
    bytes of TensorFlow's deterministic serialization and TFRecordWriter's
    framing, and TensorFlow's reader takes them (it checks the CRCs)."""
    from m3bert_tf.data import wire

    x = np.random.default_rng(frames).standard_normal((frames, 324)).astype(np.float16)
    labels = {"genre": "b"}
    ours = records.encode_example(
        x, MEAN, STD, "tråck/1", chunk_index, "/a/b.wav", split, labels, label_vectors
    )
    assert ours == _tensorflow_example(x, labels, label_vectors, chunk_index, split)
    path = str(tmp_path / "theirs.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(ours)
        writer.write(b"")
    with open(path, "rb") as f:
        assert f.read() == wire.frame(ours) + wire.frame(b"")
    (tmp_path / "ours.tfrecord").write_bytes(wire.frame(ours) * 2)
    read = [r.numpy() for r in tf.data.TFRecordDataset(str(tmp_path / "ours.tfrecord"))]
    assert read == [ours, ours]
    corrupt = bytearray(wire.frame(ours))
    corrupt[100] ^= 1
    (tmp_path / "bad.tfrecord").write_bytes(bytes(corrupt))
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset(str(tmp_path / "bad.tfrecord")))


def test_negative_and_large_int64_values_are_tensorflows():
    from m3bert_tf.data import wire

    for value in (-1, -(2**63), 2**63 - 1, 300, 0):
        theirs = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        assert wire.int64_feature(value) == theirs.SerializeToString()
