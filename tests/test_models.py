"""Layers and models: config round trips, .keras reloads, padding, the loss."""

import keras
import numpy as np
import pytest

from m3bert_tf.layers.frame_stack import FrameStack, FrameUnstack
from m3bert_tf.layers.pooling import MaskedMeanPooling
from m3bert_tf.layers.position import SinusoidalPositionEncoding
from m3bert_tf.layers.transformer import TransformerBlock
from m3bert_tf.losses import huber, masked_huber
from m3bert_tf.models.encoder import M3BertEncoder
from m3bert_tf.models.pretrainer import M3BertPretrainer


def batch(lengths, frames=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((len(lengths), frames, 324)).astype("float32")
    mask = np.arange(frames)[None, :] < np.array(lengths)[:, None]
    return {"features": x * mask[:, :, None], "padding_mask": mask}


@pytest.mark.parametrize(
    "layer",
    [
        SinusoidalPositionEncoding(max_wavelength=500.0),
        TransformerBlock(num_heads=2, ffn_dim=16, dropout=0.0),
        FrameUnstack(3),
    ],
)
def test_layer_config_round_trip(layer):
    x = np.random.default_rng(0).standard_normal((2, 6, 12)).astype("float32")
    out = layer(x)
    clone = layer.__class__.from_config(layer.get_config())
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x), out, atol=1e-6)


def test_frame_stack_round_trip_and_mask():
    x = np.arange(2 * 6 * 4, dtype="float32").reshape(2, 6, 4)
    mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], bool)
    stacked, stacked_mask = FrameStack(2)(x, mask)
    assert stacked.shape == (2, 3, 8)
    np.testing.assert_array_equal(np.asarray(stacked_mask), [[1, 1, 1], [1, 1, 0]])
    np.testing.assert_array_equal(np.asarray(FrameUnstack(2)(stacked)), x)


def test_position_encoding_is_sinusoidal():
    out = np.asarray(SinusoidalPositionEncoding()(np.zeros((1, 5, 4), "float32")))
    np.testing.assert_allclose(out[0, :, 0], np.sin(np.arange(5)), atol=1e-6)
    np.testing.assert_allclose(out[0, :, 1], np.cos(np.arange(5)), atol=1e-6)
    np.testing.assert_allclose(out[0, :, 2], np.sin(np.arange(5) / 100.0), atol=1e-6)


@pytest.mark.parametrize("frame_stack", [1, 3])
def test_pretrainer_saves_and_reloads(tmp_path, frame_stack):
    encoder = M3BertEncoder(
        2, 16, 2, 32, max_frames=12, frame_stack=frame_stack, name="encoder"
    )
    model = M3BertPretrainer(encoder)
    x = batch([12, 7])
    out = model(x)["reconstruction"]
    assert out.shape == (2, 12, 324) and out.dtype == "float32"
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(
        np.asarray(reloaded(x)["reconstruction"]), np.asarray(out)
    )
    assert reloaded.encoder.get_config() == encoder.get_config()


def test_sublayer_names_match_attributes():
    block = TransformerBlock(num_heads=2, ffn_dim=8)
    block.build((1, 4, 8))
    for name in ("attention", "attention_norm", "ffn_inner", "ffn_outer", "ffn_norm"):
        assert getattr(block, name).name == name


def test_padding_is_never_attended_in_a_mixed_batch():
    encoder = M3BertEncoder(2, 16, 2, 32, max_frames=12, dropout=0.0)
    x = batch([12, 5, 9])
    out = np.asarray(encoder(x)["sequence_output"])
    # Change what sits in the padded frames: real frames' outputs must not move.
    noisy = dict(x)
    noisy["features"] = x["features"] + 50.0 * (~x["padding_mask"])[:, :, None]
    out2 = np.asarray(encoder(noisy)["sequence_output"])
    for i, n in enumerate([12, 5, 9]):
        np.testing.assert_allclose(out2[i, :n], out[i, :n], atol=1e-5)
    assert not np.allclose(out2[1, 5:], out[1, 5:])
    # And each example equals itself run alone, unpadded.
    alone = M3BertEncoder(2, 16, 2, 32, max_frames=None, dropout=0.0)
    alone.set_weights(encoder.get_weights())
    single = {
        "features": x["features"][1:2, :5],
        "padding_mask": x["padding_mask"][1:2, :5],
    }
    np.testing.assert_allclose(
        np.asarray(alone(single)["sequence_output"])[0], out[1, :5], atol=1e-5
    )


def test_masked_mean_ignores_padding():
    seq = np.array([[[1.0], [3.0], [100.0]]], "float32")
    np.testing.assert_allclose(
        np.asarray(MaskedMeanPooling()(seq, np.array([[1, 1, 0]], bool))), [[2.0]]
    )


def test_huber_values_and_weighted_normalization():
    t = np.zeros((1, 2, 3), "float32")
    p = np.array([[[0.5, 2.0, 0.0], [10.0, 0.0, -1.0]]], "float32")
    np.testing.assert_allclose(
        np.asarray(huber(t, p)), [[[0.125, 1.5, 0.0], [9.5, 0.0, 0.5]]]
    )
    w = np.array([[[1, 1, 0], [0, 0, 0]]], "float32")
    # Normalized by the weight sum (2), not by all 6 elements.
    np.testing.assert_allclose(float(masked_huber(t, p, w)), (0.125 + 1.5) / 2)
    assert float(masked_huber(t, p, np.zeros_like(w))) == 0.0
