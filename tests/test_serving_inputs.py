"""Bad inputs to the serving signatures: refused inside the graph with a
message naming the input, the same through the loaded SavedModel, a gRPC
PredictRequest and the Python API; padding never matters."""

import grpc
import numpy as np
import pytest
import tensorflow as tf
from conftest import GRPC_UNLIMITED, prediction_server
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from m3bert_tf.serving.graph import MAX_FRAMES


@pytest.fixture(scope="module")
def served(exported):
    """(loaded SavedModel, gRPC stub of an in-process PredictionService on it)."""
    _, path = exported["finetuned"]
    server, port = prediction_server(path)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{port}", options=GRPC_UNLIMITED)
    )
    yield tf.saved_model.load(path), stub
    server.stop(None)


def rows(frames=20, batch=2, seed=0):
    return (
        np.random.default_rng(seed).standard_normal((batch, frames, 324)).astype(np.float32)
    )


def noise(seconds, rate=44100, batch=1):
    n = max(1, int(seconds * rate))
    return (0.1 * np.random.default_rng(1).standard_normal((batch, n))).astype(np.float32)


def with_nan(x, index):
    x = x.copy()
    x[index] = np.nan
    return x


def wav(samples: np.ndarray, rate=44100) -> bytes:
    return tf.audio.encode_wav(samples.reshape(-1, 1), rate).numpy()


BAD = [
    ("embed", {"features": rows(), "lengths": [0, 20]}, "lengths: every row needs at least 1 real frames"),
    ("embed", {"features": rows(), "lengths": [-3, 20]}, "lengths: every row needs at least 1 real frames"),
    ("embed", {"features": rows(), "lengths": [20]}, "lengths: one entry per row of features"),
    ("predict", {"features": rows(), "lengths": [21, 20]}, "exceeds the frames of features"),
    ("predict", {"features": with_nan(rows(), (0, 5, 3)), "lengths": [20, 20]},
     "features: NaN or infinity in a real frame"),
    ("embed", {"features": rows(MAX_FRAMES + 1, 1), "lengths": [MAX_FRAMES + 1]},
     f"features: at most {MAX_FRAMES} frames"),
    ("embed_waveform", {"waveform": noise(0.01), "lengths": [441]},
     "lengths: every row needs at least 8192 real samples"),
    ("embed_waveform", {"waveform": noise(0.0), "lengths": [1]}, "at least 8192 real samples"),
    ("predict_waveform", {"waveform": with_nan(noise(1.0), (0, 100)), "lengths": [44100]},
     "waveform: NaN or infinity in a real sample"),
    ("embed_waveform", {"waveform": noise(61.0), "lengths": [int(61.0 * 44100)]},
     "waveform: at most 2646000 samples (60 s) per row"),
    ("embed_wav_bytes", {"wav_bytes": [np.random.default_rng(0).bytes(3000)]},
     "wav_bytes: a row is not a WAV file"),
    ("embed_wav_bytes", {"wav_bytes": [wav(np.zeros(0, np.float32))]}, "at least 8192 real samples"),
]  # fmt: skip


@pytest.mark.parametrize("signature, inputs, message", BAD, ids=[m for _, _, m in BAD])
def test_bad_inputs_are_refused_naming_the_input(served, signature, inputs, message):
    loaded, stub = served
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    assert message in raised.value.message
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m3bert"
    request.model_spec.signature_name = signature
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    with pytest.raises(grpc.RpcError) as failed:
        stub.Predict(request, timeout=120)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in failed.value.details()  # what the client prints


@pytest.mark.parametrize(
    "name, value, message",
    [("features", rows()[0], "features: shape [20, 324], takes (None, None, 324)"),
     ("features", rows()[:, :, :300], "features: shape [2, 20, 300], takes (None, None, 324)"),
     ("lengths", np.array([20.0, 20.0], np.float32), "lengths: float32, takes int32")],
)  # fmt: skip
def test_requests_of_another_shape_or_dtype_are_refused_naming_the_input(
    served, name, value, message
):
    _, stub = served
    inputs = {"features": rows(), "lengths": np.array([20, 20], np.int32), name: value}
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = "embed"
    for key, array in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(array))
    with pytest.raises(grpc.RpcError) as failed:
        stub.Predict(request, timeout=120)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in failed.value.details()


def test_nan_in_padding_is_ignored(served):
    loaded, _ = served
    x = rows()
    lengths = tf.constant([12, 20])
    clean = loaded.signatures["predict"](features=tf.constant(x), lengths=lengths)
    dirty = loaded.signatures["predict"](
        features=tf.constant(with_nan(with_nan(x, (0, 15, 7)), (0, 19))), lengths=lengths
    )
    for task, value in clean.items():
        assert np.isfinite(dirty[task]).all()
        np.testing.assert_array_equal(dirty[task], value)
    waveform = noise(1.0, batch=2)
    waveform[0, 30000:] = np.inf
    out = loaded.signatures["embed_waveform"](
        waveform=tf.constant(waveform), lengths=tf.constant([30000, 44100])
    )
    assert np.isfinite(out["clip_embedding"]).all()


def test_the_python_api_refuses_what_the_savedmodel_refuses(exported):
    import m3bert_tf

    run, path = exported["finetuned"]
    bad = with_nan(noise(1.0), (0, 100))[0]
    for source, frontend in ((run, "librosa"), (path, "tf"), (path, "librosa")):
        model = m3bert_tf.load(source, frontend=frontend)
        with pytest.raises(
            (ValueError, tf.errors.InvalidArgumentError), match="NaN or infinity"
        ):
            model.embed(bad, 44100)


def test_the_front_end_alone_takes_long_audio_and_the_api_windows_it(served, exported):
    """waveform_features takes more than a window (up to 10 min: the Python
    API windows what it returns), so an export embeds a 70 s file as before."""
    import m3bert_tf

    loaded, _ = served
    y = noise(70.0)
    out = loaded.signatures["waveform_features"](
        waveform=tf.constant(y), lengths=tf.constant([y.shape[1]])
    )
    assert int(out["frame_lengths"][0]) == 1 + y.shape[1] // 1024
    embedded = m3bert_tf.load(exported["finetuned"][1]).embed(y[0], 44100)
    assert embedded["frame_embeddings"].shape[0] == 1 + y.shape[1] // 1024
