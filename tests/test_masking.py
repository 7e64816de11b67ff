"""Masking statistics over many draws, eager vs tf.data, and padding."""

import numpy as np
import pytest
import tensorflow as tf

from m3bert_tf import schema
from m3bert_tf.data import masking

T = 1294


def draw(config, n, length=T, frames=T, seed=0):
    x = tf.random.stateless_normal([frames, schema.NUM_FEATURES], [seed, 1])
    fn = tf.function(lambda s: masking.mask_example(x, length, s, config))
    return x, [fn(tf.constant([seed, i], tf.int64)) for i in range(n)]


def test_span_length_distribution_has_the_papers_mean():
    probs = masking.span_length_probs(masking.MaskingConfig())
    assert abs(sum(p * k for p, k in zip(probs, range(2, 8), strict=True)) - 3.87) < 0.01


def test_cfm_budget_span_lengths_and_choices():
    config = masking.MaskingConfig(policy="cfm")
    x, outs = draw(config, 200)
    fractions, lengths, kinds = [], [], {"zero": 0, "replace": 0, "keep": 0}
    for inputs, w in outs:
        frame = w["frame"].numpy()[:, 0] > 0
        fractions.append(frame.mean())
        # Runs of masked frames: each is one span unless spans touch.
        edges = np.flatnonzero(np.diff(np.concatenate([[0], frame.astype(int), [0]])))
        runs = edges[1::2] - edges[::2]
        lengths.extend(runs[runs <= 7])
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            seg_in, seg_x = inputs.numpy()[start:stop], x.numpy()[start:stop]
            if np.all(seg_in == 0):
                kinds["zero"] += 1
            elif np.array_equal(seg_in, seg_x):
                kinds["keep"] += 1
            else:
                kinds["replace"] += 1
        assert np.all(w["channel"].numpy() == 0) and np.all(w["patch"].numpy() == 0)
    assert abs(np.mean(fractions) - 0.15) < 0.01
    assert min(lengths) >= 2 and max(lengths) <= 7
    assert abs(np.mean(lengths) - 3.87) < 0.25  # touching spans merge into runs
    total = sum(kinds.values())
    assert abs(kinds["zero"] / total - 0.7) < 0.05
    assert abs(kinds["replace"] / total - 0.2) < 0.05
    assert abs(kinds["keep"] / total - 0.1) < 0.04


def test_replaced_spans_come_from_the_same_track():
    config = masking.MaskingConfig(policy="cfm", zero_prob=0.0, replace_prob=1.0)
    x, outs = draw(config, 5)
    rows = {tuple(r) for r in np.round(x.numpy(), 5)}
    for inputs, w in outs:
        masked = w["frame"].numpy()[:, 0] > 0
        for r in np.round(inputs.numpy()[masked], 5):
            assert tuple(r) in rows


def test_per_clip_choice_is_one_choice_per_clip():
    config = masking.MaskingConfig(policy="cfm", per_clip_choice=True)
    x, outs = draw(config, 30)
    for inputs, w in outs:
        masked = w["frame"].numpy()[:, 0] > 0
        zeroed = np.all(inputs.numpy()[masked] == 0, axis=1)
        assert zeroed.all() or not zeroed.any()


def test_ccm_width_and_start_are_uniform_inside_spectral_channels():
    config = masking.MaskingConfig(policy="ccm")
    _, outs = draw(config, 400)
    widths, starts = [], []
    for _, w in outs:
        channels = np.flatnonzero(w["channel"].numpy()[0])
        assert (
            channels.min() >= schema.SPECTRAL_START
            and channels.max() < schema.SPECTRAL_STOP
        )
        assert np.array_equal(channels, np.arange(channels[0], channels[-1] + 1))
        assert np.all(w["channel"].numpy()[:, channels] == 1)  # every frame
        widths.append(len(channels))
        starts.append(channels[0] - schema.SPECTRAL_START)
    widths = np.array(widths)
    assert abs(widths.mean() - 136.5) < 8  # U{1..272}: mean 136.5, sd 78.5
    assert widths.min() < 30 and widths.max() > 240
    # Given the width, the start is uniform in [0, 272 - c].
    relative = np.array(starts) / np.maximum(272 - widths, 1)
    assert abs(relative[widths < 262].mean() - 0.5) < 0.06


def test_patch_coverage_near_15_percent():
    config = masking.MaskingConfig(policy="pm")
    _, outs = draw(config, 30)
    for inputs, w in outs:
        patch = w["patch"].numpy()
        assert 0.15 <= patch.mean() < 0.16
        assert np.all(inputs.numpy()[patch > 0] == 0)


@pytest.mark.parametrize("policy", masking.POLICIES)
def test_eager_equals_tf_data_map(policy):
    config = masking.MaskingConfig(policy=policy)
    x = tf.random.stateless_normal([300, schema.NUM_FEATURES], [3, 4])
    seed = tf.constant([7, 9], tf.int64)
    eager = masking.mask_example(x, 250, seed, config)
    mapped = next(
        iter(
            tf.data.Dataset.from_tensors((x, seed)).map(
                lambda f, s: masking.mask_example(f, 250, s, config)
            )
        )
    )
    np.testing.assert_array_equal(eager[0].numpy(), mapped[0].numpy())
    for kind in eager[1]:
        np.testing.assert_array_equal(eager[1][kind].numpy(), mapped[1][kind].numpy())
    other = masking.mask_example(x, 250, tf.constant([7, 10], tf.int64), config)
    assert not np.array_equal(eager[1]["total"].numpy(), other[1]["total"].numpy())


@pytest.mark.parametrize("policy", masking.POLICIES)
def test_padding_is_never_masked(policy):
    config = masking.MaskingConfig(policy=policy)
    for length in (3, 40, 299):
        x = tf.concat(
            [
                tf.random.stateless_normal([length, 324], [1, length]),
                tf.zeros([300 - length, 324]),
            ],
            0,
        )
        for i in range(10):
            inputs, w = masking.mask_example(
                x, length, tf.constant([i, length], tf.int64), config
            )
            assert np.all(w["total"].numpy()[length:] == 0)
            assert np.all(inputs.numpy()[length:] == 0)
            assert w["total"].numpy()[:length].sum() > 0


def test_unknown_policy_names_the_field():
    with pytest.raises(ValueError, match="masking must be one of"):
        masking.MaskingConfig(policy="random")
