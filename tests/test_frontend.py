"""The TensorFlow front end against the librosa extractor (the reference)."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import music_like
from tolerances import FRONTEND_ATOL

from m3bert_tf import schema
from m3bert_tf.features import frames as reference
from m3bert_tf.frontend import FrontEnd

# Before CMVN, where the math is the same: within 1e-3 (the bound).
EXACT_BLOCKS = ("chroma", "mfcc", "delta_mfcc", "mel")
EXACT_TOLERANCE = 1e-3
# The CQT's resampler differs from soxr's (frontend/cqt.py): per channel
# after CMVN, Pearson's r and the largest absolute difference.
CQT_MIN_R = 0.999
CQT_MAX_ABS = 0.1


def _noise(seconds, seed=0):
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(seconds * schema.SAMPLE_RATE))).astype(np.float32)


@pytest.fixture(scope="module", params=[False, True], ids=["tf", "builtin_ops"])
def fronts(request):
    """The front end, and its LiteRT form (`builtin_ops`: real CQT kernels,
    the DCT as a matrix, float32 CMVN) held to the same bounds."""
    return (
        FrontEnd(normalization="none", builtin_ops=request.param),
        FrontEnd(normalization="track", builtin_ops=request.param),
    )


@pytest.mark.parametrize("seconds", [1.0, 10.0, 30.0, 95.0])
@pytest.mark.parametrize("kind", ["music", "noise"])
def test_every_block_matches_librosa(fronts, kind, seconds):
    raw_front, track_front = fronts
    y = music_like(seconds, seed=5) if kind == "music" else _noise(seconds)
    want = reference.FeatureExtractor()(y)
    lengths = np.array([len(y)], np.int32)
    got, frame_lengths = raw_front.raw(y[None], lengths)
    got = got.numpy()[0]
    assert got.shape == want.shape and int(frame_lengths[0]) == len(want)
    errors = {
        b.name: float(np.abs(got[:, b.start : b.stop] - want[:, b.start : b.stop]).max())
        for b in schema.BLOCKS
    }
    normalized = track_front(y[None], lengths)[0].numpy()[0]
    expected = reference.cmvn(want)
    cqt = schema.BLOCK["cqt"]
    after = np.abs(normalized - expected)
    r = [
        np.corrcoef(normalized[:, c], expected[:, c])[0, 1]
        for c in range(cqt.start, cqt.stop)
        if expected[:, c].std() > 0
    ]
    print(
        f"\n{kind} {seconds:4.0f} s, max abs before CMVN: "
        + ", ".join(f"{k} {v:.1e}" for k, v in errors.items())
        + f"; after CMVN: cqt {after[:, cqt.start :].max():.3f} (min r {min(r):.5f}), "
        f"others {after[:, : cqt.start].max():.1e}"
    )
    for name in EXACT_BLOCKS:
        assert errors[name] < EXACT_TOLERANCE, (name, errors[name])
    assert min(r) > CQT_MIN_R
    assert after[:, cqt.start :].max() < CQT_MAX_ABS
    assert after[:, : cqt.start].max() < 1e-2


def test_rows_of_a_batch_do_not_see_each_other(fronts):
    """Two clips padded into one batch give each its own features: padding
    is not audio, and CMVN counts each row's real frames only."""
    _, front = fronts
    a, b = music_like(4.0, seed=1), _noise(9.0, seed=2)
    batch = np.zeros((2, len(b)), np.float32)
    batch[0, : len(a)], batch[1] = a, b
    features, frame_lengths = front(batch, np.array([len(a), len(b)], np.int32))
    alone, _ = front(a[None], np.array([len(a)], np.int32))
    n = int(frame_lengths[0])
    assert n == 1 + len(a) // schema.HOP_LENGTH
    # Alone and in a batch of two: other GEMM shapes (tolerances.FRONTEND_ATOL).
    assert np.abs(features[0, :n].numpy() - alone[0].numpy()).max() < FRONTEND_ATOL
    assert np.all(features[0, n:].numpy() == 0.0)


def test_it_runs_as_a_graph_of_any_batch_and_length(fronts):
    _, front = fronts
    fn = tf.function(
        front.__call__,
        input_signature=[
            tf.TensorSpec([None, None], tf.float32),
            tf.TensorSpec([None], tf.int32),
        ],
    )
    for samples in (44100, 3 * 44100 + 17):
        y = _noise(samples / schema.SAMPLE_RATE)[None]
        out, lengths = fn(y, np.array([y.shape[1]], np.int32))
        assert out.shape == (1, 1 + y.shape[1] // schema.HOP_LENGTH, schema.NUM_FEATURES)
    ops = {op.type for op in fn.get_concrete_function().graph.get_operations()}
    assert not {"PyFunc", "EagerPyFunc"} & ops


@pytest.mark.parametrize("rate", [48000, 22050, 16000])
def test_the_resampler_matches_soxr(rate):
    """The export's core-op resampler (`--input_sample_rate`) against soxr "HQ",
    which the librosa path uses; each row cut at its own length."""
    import soxr

    from m3bert_tf.frontend.resample import Resampler

    y = music_like(5.0, sample_rate=rate, seed=1)
    want = soxr.resample(y, rate, schema.SAMPLE_RATE, quality="HQ")
    batch = np.zeros((2, len(y)), np.float32)
    batch[0], batch[1, : len(y) // 2] = y, y[: len(y) // 2]
    got, lengths = Resampler(rate)(batch, np.array([len(y), len(y) // 2], np.int32))
    got = got.numpy()
    assert lengths.numpy().tolist() == [len(want), -(-(len(y) // 2) * 44100 // rate)]
    difference = np.abs(got[0, : len(want)] - want)
    relative = np.sqrt((difference**2).mean() / (want**2).mean())
    print(f"\n{rate} Hz -> 44.1 kHz vs soxr HQ: max abs {difference.max():.1e}, "
          f"relative rms {relative:.1e}")  # fmt: skip
    assert difference.max() < 5e-3 and relative < 2e-3
    assert np.all(got[1, int(lengths[1]) :] == 0.0)


def test_global_and_no_normalization_and_a_tf_data_pipeline():
    """ "global" uses the stored statistics, "none" gives the raw features;
    the front end maps over a tf.data pipeline of waveforms."""
    y = music_like(3.0, seed=7)
    raw = reference.FeatureExtractor()(y)
    stats = {"mean": raw.mean(0).tolist(), "std": (raw.std(0) + 0.5).tolist()}
    lengths = np.array([len(y)], np.int32)
    from m3bert_tf.data.normalization import global_scale

    mean, std = global_scale(stats)
    expected = (raw - mean) / std
    got = FrontEnd(normalization="global", stats=stats)(y[None], lengths)[0].numpy()[0]
    cqt = schema.BLOCK["cqt"].start
    assert np.abs(got[:, :cqt] - expected[:, :cqt]).max() < 1e-3
    assert np.abs(got[:, cqt:] - expected[:, cqt:]).max() < 0.2
    none = FrontEnd(normalization="none")(y[None], lengths)[0].numpy()[0]
    assert np.abs(none[:, :cqt] - raw[:, :cqt]).max() < 1e-3
    with pytest.raises(ValueError, match="statistics"):
        FrontEnd(normalization="global")

    front = FrontEnd(normalization="track")
    clips = [music_like(1.0, seed=1), _noise(2.0, seed=2)]
    dataset = tf.data.Dataset.from_generator(
        lambda: iter(clips), output_signature=tf.TensorSpec([None], tf.float32)
    ).map(lambda w: front(w[None], tf.shape(w)[:1])[0][0])
    shapes = [x.shape for x in dataset]
    assert shapes == [(1 + len(c) // schema.HOP_LENGTH, schema.NUM_FEATURES) for c in clips]
