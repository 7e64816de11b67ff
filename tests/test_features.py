"""Parity of every block with librosa called directly, CMVN, chunking, float16."""

import librosa
import numpy as np
import pytest
from conftest import music_like

from m3bert_tf import schema
from m3bert_tf.features import banks, frames
from m3bert_tf.features.cqt import ConstantQ

SR, N_FFT, HOP = schema.SAMPLE_RATE, schema.N_FFT, schema.HOP_LENGTH
STFT = dict(n_fft=N_FFT, hop_length=HOP, window="hamming")
CQT = dict(hop_length=HOP, fmin=librosa.note_to_hz("C1"))


@pytest.fixture(scope="module")
def waveform():
    return music_like(7.3, SR, seed=5)


@pytest.fixture(scope="module")
def extractor():
    return frames.FeatureExtractor()


def direct_librosa(y, feature_set="paper"):
    """Each block computed the naive way: librosa's feature functions from y."""
    mfcc = librosa.feature.mfcc(y=y, sr=SR, n_mfcc=20, n_mels=128, **STFT)
    if feature_set == "paper":
        cqt = np.abs(librosa.cqt(y, sr=SR, n_bins=144, bins_per_octave=24, **CQT))
    else:
        cqt = librosa.feature.chroma_cqt(
            y=y, sr=SR, n_chroma=144, bins_per_octave=144, tuning=0.0, **CQT
        )
    return {
        "chroma": librosa.feature.chroma_stft(y=y, sr=SR, tuning=0.0, **STFT),
        "mfcc": mfcc,
        "delta_mfcc": librosa.feature.delta(mfcc),
        "mel": np.log(
            10 * librosa.feature.melspectrogram(y=y, sr=SR, n_mels=128, **STFT) + 1e-6
        ),
        "cqt": np.log(10 * cqt + 1e-6),
    }


@pytest.mark.parametrize("block", [b.name for b in schema.BLOCKS])
def test_block_equals_direct_librosa(waveform, extractor, block):
    ours = extractor(waveform)[:, schema.BLOCK[block].start : schema.BLOCK[block].stop]
    theirs = direct_librosa(waveform)[block].T
    assert ours.shape == theirs.shape == (1 + len(waveform) // HOP, schema.BLOCK[block].dim)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-3)


def test_cached_cqt_equals_librosa(waveform):
    cqt = ConstantQ(banks.cqt_bank(SR, HOP, librosa.note_to_hz("C1"), 144, 24))
    for y in (waveform, music_like(3.1, SR, seed=9)):  # the bank serves any signal
        theirs = np.abs(librosa.cqt(y, sr=SR, n_bins=144, bins_per_octave=24, **CQT))
        ours = cqt(y)
        assert ours.shape == theirs.shape
        # float32 FFTs against librosa's float64 ones: rounding of each octave's
        # largest response, nothing more.
        error = np.abs(ours - theirs) / theirs.max(axis=1, keepdims=True)
        print(f"CQT against librosa: {error.max():.1e} of a bin's largest value")
        assert error.max() < 1e-5


def test_authors_feature_set_uses_chroma_folded_cqt(waveform):
    ours = frames.FeatureExtractor(frames.FeatureConfig(feature_set="authors"))(waveform)
    block = schema.BLOCK["cqt"]
    theirs = direct_librosa(waveform, "authors")["cqt"].T
    np.testing.assert_allclose(
        ours[:, block.start : block.stop], theirs, rtol=1e-4, atol=1e-3
    )
    paper = frames.FeatureExtractor()(waveform)
    assert not np.allclose(paper[:, block.start : block.stop], theirs, atol=0.1)


def test_unknown_feature_set_names_the_field():
    with pytest.raises(ValueError, match="feature_set must be one of"):
        frames.FeatureConfig(feature_set="mfcc-only")


def test_cmvn_zero_mean_unit_variance_and_constant_channels_zero(waveform, extractor):
    x = extractor(waveform)
    x[:, 5] = 3.0  # a constant channel
    y = frames.cmvn(x)
    assert y.dtype == np.float32
    varying = np.ones(schema.NUM_FEATURES, bool)
    varying[5] = False
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y[:, varying].std(0), 1.0, atol=1e-3)
    assert np.all(y[:, 5] == 0.0)


def test_float16_round_trip_error(waveform, extractor, record_property):
    x = frames.cmvn(extractor(waveform))
    chunks = frames.to_chunks(x)
    assert all(c.dtype == np.float16 for c in chunks)
    error = np.abs(np.concatenate(chunks).astype(np.float32) - x)
    record_property("float16_max_abs_error", float(error.max()))
    record_property("float16_mean_abs_error", float(error.mean()))
    print(f"float16 round trip after CMVN: max {error.max():.2e}, mean {error.mean():.2e}")
    # float16 keeps 11 significant bits: relative error at most 2**-11.
    assert np.all(error <= np.abs(x) * 2.0**-11 + 1e-7)
    assert error.mean() < 1e-3


def frames_of(seconds: float) -> int:
    return 1 + int(seconds * SR) // HOP


@pytest.mark.parametrize(
    "seconds,expected",
    [
        (10, [431]),  # at most 30 s: one chunk
        (45, [969, 969]),  # 30-60 s: two equal halves
        (95, [1294, 1294, 1294]),  # longer: 30 s chunks; the 4.9 s rest is dropped
        (80, [1294, 1294, 858]),  # a rest of at least 15 s (19.9 s) is kept
        (30.0, [1292]),
    ],
)
def test_chunking_rule(seconds, expected):
    bounds = frames.chunk_bounds(frames_of(seconds))
    assert [stop - start for start, stop in bounds] == expected
    # Chunks never overlap and start where the previous one stopped.
    assert all(a[1] == b[0] for a, b in zip(bounds[:-1], bounds[1:], strict=True))


def test_chunking_on_real_features(extractor):
    x = extractor(music_like(45.0, SR, seed=2))
    chunks = frames.to_chunks(x)
    assert [len(c) for c in chunks] == [969, 969]
    np.testing.assert_array_equal(chunks[1][0], x[969].astype(np.float16))


# How far today's features are from those the first release wrote on the
# numpy 1.26.4 stack (tests/fixtures/features_numpy1.26.4.npz). Measured
# 2026-12-04, Intel Xeon: the power spectrum is a float32 FFT since
# extraction moved to `features.spectrum` (librosa's is float64), which moves
# MFCC, delta and mel values by one float16 step in about 2 % of cases; on
# numpy 2.x librosa's CQT filters also differ at float32 rounding (4e-7 of the
# largest bin), which the log spreads over the quietest top CQT bins. Stored
# float16 values that differ: "paper" 1.3 % (numpy 1.26) and 2.5 % (numpy 2),
# "authors" 1.0 % and 1.2 %; at most 0.0068 of a channel's standard deviation.
FIXTURE_FEATURE_ATOL = 0.01  # CMVN'd units: 1 % of a channel's std
FIXTURE_CHANGED_SHARE = 0.04
FIXTURE_STATS_RTOL = 1e-3


def test_features_equal_those_of_the_numpy_1_26_stack():
    """tests/fixtures/features_numpy1.26.4.npz was written on the TensorFlow
    2.17.1 / numpy 1.26.4 stack by the first release: on either line the
    features stay within the bounds above, so a model trained on shards of
    any release or line reads the others'."""
    import os
    import sys

    from conftest import FIXTURES

    sys.path.insert(0, FIXTURES)
    from make_features import featurize

    want = np.load(os.path.join(FIXTURES, "features_numpy1.26.4.npz"))
    got = featurize(want["pcm"], int(want["rate"]))
    assert set(got) == {k for k in want.files if k not in ("pcm", "rate")}
    for key, value in got.items():
        if key.endswith("_chunk"):
            changed = np.mean(value != want[key])
            print(f"{key}: {100 * changed:.2f} % of the stored values differ")
            assert changed <= FIXTURE_CHANGED_SHARE, (key, changed)
            np.testing.assert_allclose(value.astype(np.float32), want[key].astype(np.float32),
                                       rtol=0, atol=FIXTURE_FEATURE_ATOL, err_msg=key)  # fmt: skip
        else:
            np.testing.assert_allclose(
                value, want[key], rtol=FIXTURE_STATS_RTOL, err_msg=key
            )
