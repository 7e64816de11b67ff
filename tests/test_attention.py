"""The block's attention: Keras' own values, padded keys, the 16-bit dropout."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from m3bert_tf.layers.attention import (
    dot_product_attention,
    keep_mask_16bit,
    self_attention,
)
from m3bert_tf.layers.transformer import TransformerBlock


@pytest.mark.parametrize("frames", [13, 16, 21])
def test_block_attention_equals_keras_multi_head_attention(frames):
    """Keys padded to a multiple of 16 (or not, at 16) change nothing: the
    block's attention gives the MultiHeadAttention sublayer's own output."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, frames, 24)).astype("float32")
    lengths = np.array([frames, frames - 4, 5])
    mask = np.arange(frames)[None, :] < lengths[:, None]
    block = TransformerBlock(4, 32, dropout=0.1)
    block.build(x.shape)
    ours = np.asarray(self_attention(block.attention, x, mask, training=False))
    theirs = np.asarray(
        block.attention(
            x, x, attention_mask=np.broadcast_to(mask[:, None, :], (3, frames, frames))
        )
    )
    np.testing.assert_allclose(ours, theirs, atol=2e-6)
    unmasked = block.attention(x, x)
    np.testing.assert_allclose(
        self_attention(block.attention, x, None, training=False), unmasked, atol=2e-6
    )


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_keep_mask_has_the_rate_and_differs_per_draw(rate):
    seed = keras.random.SeedGenerator(7)
    first = np.asarray(keep_mask_16bit((4, 3, 250, 1000), rate, seed))
    second = np.asarray(keep_mask_16bit((4, 3, 250, 1000), rate, seed))
    assert first.shape == (4, 3, 250, 1000) and first.dtype == bool
    # 3M draws: the kept fraction's standard error is below 3e-4
    assert abs(first.mean() - (1 - rate)) < 2e-3
    assert abs(second.mean() - (1 - rate)) < 2e-3
    assert (first != second).mean() == pytest.approx(2 * rate * (1 - rate), abs=3e-3)
    # neighbours come from the two halves of one int32: no correlation
    pairs = first.reshape(-1, 2)
    assert (pairs[:, 0] & pairs[:, 1]).mean() == pytest.approx((1 - rate) ** 2, abs=3e-3)


def test_dropout_zeroes_probabilities_at_the_rate_and_rescales_the_rest():
    """With one-hot values the output is the dropped probabilities themselves:
    about `rate` of them zero, the rest the eval probabilities / (1 - rate);
    the padded keys (21 -> 32) and masked keys still get exactly 0."""
    frames, rate = 21, 0.25
    rng = np.random.default_rng(1)
    query, key = (rng.standard_normal((2, 3, frames, 8)).astype("float32") for _ in "qk")
    value = np.broadcast_to(np.eye(frames, dtype="float32"), (2, 3, frames, frames))
    mask = np.arange(frames)[None, :] < np.array([[frames], [15]])
    dropout = keras.layers.Dropout(rate, seed=3)
    clean = np.asarray(dot_product_attention(query, key, value, mask, dropout, False))
    dropped = np.asarray(dot_product_attention(query, key, value, mask, dropout, True))
    np.testing.assert_allclose(clean.sum(-1), 1.0, atol=1e-5)
    assert (clean[1, :, :, 15:] == 0).all() and (dropped[1, :, :, 15:] == 0).all()
    real = clean > 0
    zeroed = (dropped == 0) & real
    assert zeroed.sum() / real.sum() == pytest.approx(rate, abs=0.03)
    kept = real & ~zeroed
    np.testing.assert_allclose(dropped[kept], clean[kept] / (1 - rate), rtol=1e-5)


def test_attention_runs_with_frames_unknown_when_traced():
    """An any-length graph (frames None): the key padding is computed and the
    dropout falls back to Keras' own for a non-static key axis."""
    dropout = keras.layers.Dropout(0.1, seed=3)
    spec = tf.TensorSpec([None, 2, None, 8], tf.float32)

    @tf.function(input_signature=[spec, tf.TensorSpec([None, None], tf.bool)])
    def attend(x, mask):
        return dot_product_attention(x, x, x, mask, dropout, True)

    x = np.random.default_rng(2).standard_normal((2, 2, 19, 8)).astype("float32")
    mask = np.ones((2, 19), bool)
    out = attend(x, mask)
    assert out.shape == (2, 2, 19, 8) and np.isfinite(out).all()
    np.testing.assert_allclose(
        dot_product_attention(x, x, x, mask, dropout, False),
        tf.function(lambda a, m: dot_product_attention(a, a, a, m, dropout, False))(
            x, mask
        ),
        atol=1e-6,
    )
