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
