"""Requests that used to take a process down (issue "Nothing lost when the
disk fills", items 8 and 10): every entry point has a documented maximum,
checked before anything large is allocated, and a bad request gets one line
naming the input."""

import numpy as np
import pytest
import soundfile
import tensorflow as tf

import m3bert_tf
from m3bert_tf.serving.graph import MAX_FRONTEND_SECONDS, MAX_REQUEST_SECONDS, MAX_SECONDS


def noise(seconds, batch=1, rate=44100):
    n = int(seconds * rate)
    return np.random.default_rng(0).normal(0, 0.1, (batch, n)).astype(np.float32)


@pytest.fixture(scope="module")
def models(exported):
    run, path = exported["finetuned"]
    return {
        "export": m3bert_tf.load(path, frontend="tf"),
        "run": m3bert_tf.load(run, frontend="librosa"),
        "saved": tf.saved_model.load(path),
    }


def test_waveform_signatures_have_a_cap_per_request(models):
    saved = models["saved"]
    rows = int(MAX_REQUEST_SECONDS // MAX_SECONDS) + 1  # one row of 60 s too many
    y = noise(MAX_SECONDS, rows)
    with pytest.raises(tf.errors.InvalidArgumentError, match="samples per request"):
        saved.signatures["embed_waveform"](
            waveform=tf.constant(y), lengths=tf.constant([y.shape[1]] * rows)
        )
    long = noise(MAX_FRONTEND_SECONDS + 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at most 26460000 samples"):
        saved.signatures["waveform_features"](
            waveform=tf.constant(long), lengths=tf.constant([long.shape[1]])
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least one row"):
        saved.signatures["embed_waveform"](
            waveform=tf.zeros([0, 44100]), lengths=tf.zeros([0], tf.int32)
        )
    out = saved.signatures["embed_waveform"](  # the most a request may hold still runs
        waveform=tf.constant(noise(2.0, 2)), lengths=tf.constant([88200, 88200])
    )
    assert out["clip_embedding"].shape[0] == 2


@pytest.mark.parametrize("rate", [1, 44.1, 500, 400_000, float("nan")])
def test_the_python_api_refuses_a_sample_rate_before_resampling(models, rate):
    for model in (models["export"], models["run"]):
        with pytest.raises(ValueError, match="a whole number of Hz from 1000 to 384000"):
            model.embed(np.zeros(1000, np.float32), rate)


def test_the_tf_front_end_refuses_audio_longer_than_it_holds(models, tmp_path):
    """Refused before decoding (a file) or resampling (a waveform), with the
    front end that takes any length named."""
    seconds = MAX_FRONTEND_SECONDS + 60
    with pytest.raises(ValueError, match="11.0 min of audio.*frontend='librosa'"):
        models["export"].embed(np.zeros(int(seconds * 1000), np.float32), 1000)
    path = tmp_path / "long.wav"
    soundfile.write(path, np.zeros(int(seconds * 1000), np.int16), 1000)
    with pytest.raises(ValueError, match=f"{path}: 11.0 min of audio"):
        models["export"].embed_file(str(path))


def test_bad_requests_through_the_python_api_are_one_line_errors(models):
    for model in (models["export"], models["run"]):
        width = model.enrichment_dim
        cases = [
            (("embed", np.zeros((10, 324), np.float32), np.array([10], np.int32)),
             "embed: features: [batch, any, 324] is needed, got shape [10, 324]"),
            (("embed", np.zeros((1, 5, 2, 324), np.float32), np.array([5], np.int32)),
             "features: [batch, any, 324] is needed, got shape [1, 5, 2, 324]"),
            (("predict_clip", np.zeros((1, 64), np.float32)),
             f"predict_clip: clip_enrichment: [batch, {width}] is needed, got shape [1, 64]"),
            (("predict_clip", np.full((1, width), np.nan, np.float32)),
             "predict_clip: clip_enrichment: NaN or infinity"),
        ]  # fmt: skip
        for args, message in cases:
            with pytest.raises(ValueError) as raised:
                model.backend.call(*args)
            assert str(raised.value) == message or message in str(raised.value)
            assert "\n" not in str(raised.value)
    with pytest.raises(
        ValueError, match="embed_wav_bytes: waveform: a request needs at least"
    ):
        models["export"].backend.call("embed_wav_bytes", np.array([], object))
    with pytest.raises(ValueError, match="embed_waveform: not served by this model"):
        models["run"].backend.call(
            "embed_waveform", noise(1.0), np.array([44100], np.int32)
        )


def test_hear_answers_zero_sounds_with_empty_tensors(exported):
    from m3bert_tf import hear

    model = hear.load_model(exported["pretrained"][1])
    scene = hear.get_scene_embeddings(tf.zeros([0, 44100]), model)
    frames, stamps = hear.get_timestamp_embeddings(tf.zeros([0, 44100]), model)
    assert scene.shape == (0, model.scene_embedding_size)
    assert frames.shape == (0, 0, model.timestamp_embedding_size) and stamps.shape == (0, 0)
