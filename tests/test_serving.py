"""Export for TensorFlow Serving, the Python API, the HEAR API and bin/embed.

The models are the release-0.1.0 fixtures (a 2-block encoder and a fine-tuned
multi-task model on it), placed in run directories as bin/pretrain and
bin/finetune leave them.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import (
    ROOT,
    Servicer,
    make_run,
    prediction_server,
    run_bin,
    user_env,
    write_audio,
)
from tolerances import assert_close_across_kernels

SIGNATURE_INPUTS = {"features": (tf.float32, 3), "lengths": (tf.int32, 1)}


def mixed_batch(seed=0):
    """Features of 3 rows of different lengths (padding beyond each)."""
    rng = np.random.default_rng(seed)
    lengths = np.array([70, 33, 5], np.int32)
    features = rng.standard_normal((3, 70, 324)).astype(np.float32)
    return features, lengths


@pytest.mark.parametrize("kind", ["pretrained", "finetuned"])
def test_exported_signatures_equal_the_keras_model(exported, kind):
    from m3bert_tf import runs

    run, path = exported[kind]
    model, _ = runs.load_model(run)
    loaded = tf.saved_model.load(path)
    features, lengths = mixed_batch()
    mask = np.arange(features.shape[1])[None] < lengths[:, None]
    encoder = model.encoder if kind == "finetuned" else model
    reference = encoder({"features": features, "padding_mask": mask}, training=False)
    out = loaded.signatures["embed"](
        features=tf.constant(features), lengths=tf.constant(lengths)
    )
    all_layers = loaded.signatures["embed_all_layers"](
        features=tf.constant(features), lengths=tf.constant(lengths)
    )
    assert out["frame_lengths"].numpy().tolist() == lengths.tolist()
    # The SavedModel's graph (fused by Grappler) against Keras eager: other kernels.
    for i, n in enumerate(lengths):
        expected = reference["sequence_output"][i, :n].numpy()
        what = f"{kind} row {i}"
        assert_close_across_kernels(out["frame_embeddings"][i, :n], expected, what=what)
        assert_close_across_kernels(out["clip_embedding"][i], expected.mean(0), what=what)
        np.testing.assert_array_equal(out["frame_embeddings"][i, n:], 0.0)  # padding zeroed
        assert_close_across_kernels(
            all_layers["frame_embeddings"][i, -1, :n], expected, what=what
        )
    assert all_layers["frame_embeddings"].shape[1] == encoder.num_layers
    if kind == "finetuned":
        full = model({"features": features, "padding_mask": mask}, training=False)
        predicted = loaded.signatures["predict"](
            features=tf.constant(features), lengths=tf.constant(lengths)
        )
        for task in model.tasks:
            assert_close_across_kernels(
                predicted[task["name"]], full[task["name"]], what=task["name"]
            )
        assert_close_across_kernels(
            out["clip_enrichment"], full["clip_embedding"], what="clip_enrichment"
        )
        labels = json.load(open(os.path.join(path, "labels.json")))
        for task in model.tasks:
            with open(os.path.join(path, "assets", f"labels_{task['name']}.txt")) as f:
                names = f.read().split()
            assert (
                labels[task["name"]]["names"]
                == names
                == list(task["classes"] or task["outputs"])
            )
    else:
        assert "predict" not in loaded.signatures


def test_saved_model_cli_lists_named_signatures(exported):
    _, path = exported["finetuned"]
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run(
        [cli, "show", "--dir", path, "--all"], capture_output=True, text=True, check=True
    ).stdout
    for name in (
        "embed", "embed_all_layers", "predict", "predict_clip", "serving_default",
        "embed_waveform", "predict_waveform", "embed_wav_bytes", "waveform_features",
    ):  # fmt: skip
        assert f"signature_def['{name}']" in shown
    for name in ("features", "lengths", "waveform", "wav_bytes"):
        assert f"inputs['{name}']" in shown
    for name in (
        "frame_embeddings",
        "clip_embedding",
        "frame_enrichment",
        "clip_enrichment",
    ):
        assert f"outputs['{name}']" in shown
    assert "shape: (-1, -1, 324)" in shown  # None batch and time


def test_warmup_records_parse_and_run(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    from m3bert_tf.serving import export

    _, path = exported["finetuned"]
    loaded = tf.saved_model.load(path)
    records = list(tf.data.TFRecordDataset(os.path.join(path, export.WARMUP_PATH)))
    assert len(records) == 16  # 8 signatures x batch 1 and 4
    for record in records:
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        out = loaded.signatures[request.model_spec.signature_name](**inputs)
        assert all(np.all(np.isfinite(v.numpy())) for v in out.values())


def test_export_never_overwrites_a_version(exported, tmp_path):
    run, path = exported["pretrained"]
    base = os.path.dirname(path)
    proc = subprocess.run(
        run_bin("export", f"--model_dir={run}", f"--export_dir={base}", "--version=1"),
        env=user_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "exists" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        run_bin("export", f"--model_dir={run}", f"--export_dir={base}"),
        env=user_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(n for n in os.listdir(base) if not n.startswith(".")) == ["1", "2"]
    assert "tensorflow_model_server" in proc.stdout
    assert proc.stderr.count("\n") <= 2, proc.stderr  # no walls of framework logs


def test_a_finetuned_run_on_a_url_exports_as_finetuned(exported, tmp_path):
    """The run's kind is read through `storage`: a fine-tuned run named by a
    file:// (or gs://) URL keeps its heads (os.path.exists said it had none)."""
    from m3bert_tf.serving import export

    run, _ = exported["finetuned"]
    path = export.export_run(
        f"file://{run}", f"file://{tmp_path}/export", log=lambda m: None
    )
    with open(os.path.join(path.removeprefix("file://"), export.EXPORT_INFO_NAME)) as f:
        info = json.load(f)
    assert info["kind"] == "finetuned" and "predict" in info["signatures"]


def test_a_new_signature_is_one_table_entry_and_one_method(exported, tmp_path, monkeypatch):
    """A test-only signature, registered in `signatures.SIGNATURES` with its
    `Computations` method and nothing else, is exported, listed in
    export.json, warmed up, served by the SavedModel and by a run directory."""
    from m3bert_tf.serving import api, export, graph, signatures

    def embed_doubled(self, features, lengths):
        return {"clip_doubled": 2.0 * self.embed(features, lengths)["clip_embedding"]}

    monkeypatch.setattr(graph.Computations, "embed_doubled", embed_doubled, raising=False)
    monkeypatch.setattr(
        signatures, "SIGNATURES",
        [*signatures.SIGNATURES, signatures.Signature("embed_doubled", "features")],
    )  # fmt: skip
    run, _ = exported["pretrained"]
    path = export.export_run(run, str(tmp_path / "export"), log=lambda m: None)
    with open(os.path.join(path, export.EXPORT_INFO_NAME)) as f:
        assert json.load(f)["signatures"][-1] == "embed_doubled"
    warmup = [
        r.numpy() for r in tf.data.TFRecordDataset(os.path.join(path, export.WARMUP_PATH))
    ]
    assert sum(b"embed_doubled" in r for r in warmup) == 2  # batch 1 and 4
    features = np.random.default_rng(0).standard_normal((1, 40, 324)).astype(np.float32)
    inputs = {"features": tf.constant(features), "lengths": tf.constant([40])}
    loaded = tf.saved_model.load(path)
    doubled = loaded.signatures["embed_doubled"](**inputs)["clip_doubled"]
    plain = loaded.signatures["embed"](**inputs)["clip_embedding"]
    np.testing.assert_allclose(doubled, 2 * plain.numpy(), rtol=1e-6)
    in_memory = api.load(run).backend
    assert "embed_doubled" in in_memory.signatures
    np.testing.assert_allclose(
        in_memory("embed_doubled", features, np.array([40], np.int32))["clip_doubled"],
        doubled, rtol=1e-5, atol=1e-6,
    )  # fmt: skip


def test_embed_waveform_equals_embed_on_librosa_features(exported):
    """Raw audio through the exported front end gives what `embed` gives on
    the librosa extractor's features of the same audio, to the front end's
    tolerance carried through the encoder; a PredictRequest with a waveform
    runs against the loaded SavedModel as TF Serving would run it."""
    from conftest import music_like
    from tensorflow_serving.apis import predict_pb2

    from m3bert_tf.features import frames

    _, path = exported["finetuned"]
    loaded = tf.saved_model.load(path)
    y = music_like(3.0, seed=2)
    features = frames.cmvn(frames.FeatureExtractor()(y))
    by_features = loaded.signatures["embed"](
        features=tf.constant(features[None]), lengths=tf.constant([len(features)])
    )
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = "embed_waveform"
    request.inputs["waveform"].CopyFrom(tf.make_tensor_proto(y[None]))
    request.inputs["lengths"].CopyFrom(tf.make_tensor_proto(np.array([len(y)], np.int32)))
    response = Servicer(path).Predict(request, None)
    worst = {}
    for key in ("frame_embeddings", "clip_embedding", "clip_enrichment"):
        got = tf.make_ndarray(response.outputs[key])
        worst[key] = float(np.abs(got - by_features[key].numpy()).max())
    print(f"\nembed_waveform vs embed on librosa features, max abs: {worst} "
          f"(frame embeddings reach {np.abs(by_features['frame_embeddings']).max():.1f})")  # fmt: skip
    assert worst["frame_embeddings"] < 0.1
    assert worst["clip_embedding"] < 5e-3 and worst["clip_enrichment"] < 5e-3
    # The same audio as WAV bytes (16-bit: quantized), two files of other lengths.
    files = [
        tf.audio.encode_wav(y[:, None], 44100),
        tf.audio.encode_wav(y[:50000, None], 44100),
    ]
    by_bytes = loaded.signatures["embed_wav_bytes"](wav_bytes=tf.stack(files))
    assert by_bytes["frame_lengths"].numpy().tolist() == [
        1 + len(y) // 1024,
        1 + 50000 // 1024,
    ]
    assert (
        np.abs(by_bytes["clip_embedding"][0] - by_features["clip_embedding"][0]).max()
        < 5e-3
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="WAV files at 44100 Hz"):
        loaded.signatures["embed_wav_bytes"](
            wav_bytes=tf.stack([tf.audio.encode_wav(y[:, None], 22050)])
        )


def test_an_export_for_48_khz_clients_resamples_in_the_graph(exported, tmp_path):
    """bin/export --input_sample_rate=48000: the waveform signatures take 48 kHz
    audio; their output equals the librosa path's on the same audio (soxr to
    44.1 kHz) within the front end's tolerance; the APIs hand audio at 48 kHz."""
    import m3bert_tf
    import m3bert_tf.hear as hear

    run, _ = exported["finetuned"]
    base = tmp_path / "export48"
    proc = subprocess.run(
        run_bin("export", f"--model_dir={run}", f"--export_dir={base}",
                "--input_sample_rate=48000"),
        env=user_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    path = str(base / "1")
    assert json.load(open(os.path.join(path, "export.json")))["input_sample_rate"] == 48000
    from conftest import music_like

    y = music_like(4.0, sample_rate=48000, seed=4)
    model = m3bert_tf.load(path)
    assert (model.frontend, model.input_rate, hear.load_model(path).sample_rate) == (
        "tf",
        48000,
        48000,
    )
    by_tf = model.embed(y, 48000)
    by_librosa = m3bert_tf.load(path, frontend="librosa").embed(y, 48000)
    worst = float(np.abs(by_tf["clip_enrichment"] - by_librosa["clip_enrichment"]).max())
    print(f"\n48 kHz export vs the librosa path: clip enrichment max abs {worst:.1e}")
    assert by_tf["frame_embeddings"].shape == by_librosa["frame_embeddings"].shape
    # Two resamplers (soxr, ours: 7.8e-4 relative rms apart) and two front ends.
    assert worst < 1e-2
    loaded = tf.saved_model.load(path)
    wav = tf.audio.encode_wav(y[:, None], 48000)
    out = loaded.signatures["embed_wav_bytes"](wav_bytes=tf.stack([wav]))
    assert int(out["frame_lengths"][0]) == len(by_tf["timestamps"])


def test_waveform_export_runs_with_tensorflow_alone(exported):
    """No librosa, soundfile or m3bert_tf needed to serve raw audio."""
    _, path = exported["finetuned"]
    code = (
        "import sys\n"
        "for name in ('librosa', 'soundfile', 'm3bert_tf', 'soxr'):\n"
        "    sys.modules[name] = None\n"
        "import numpy as np, tensorflow as tf\n"
        f"model = tf.saved_model.load({path!r})\n"
        "y = np.random.default_rng(0).standard_normal((2, 44100)).astype(np.float32) * 0.1\n"
        "out = model.signatures['predict_waveform'](waveform=y, lengths=np.array([44100, 30000], np.int32))\n"
        "print(sorted((k, v.shape.as_list()) for k, v in out.items()))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**user_env(), "PYTHONPATH": ""})  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert "('genre', [2," in res.stdout


def test_grpc_client_round_trip(exported):
    """The gRPC client code of docs/serve.md against an in-process PredictionService."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    run, path = exported["pretrained"]
    server, port = prediction_server(path)
    try:
        features, lengths = mixed_batch(1)
        # --- as in docs/serve.md ---
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "m3bert"
        request.model_spec.signature_name = "embed"
        request.inputs["features"].CopyFrom(tf.make_tensor_proto(features))
        request.inputs["lengths"].CopyFrom(tf.make_tensor_proto(lengths))
        response = stub.Predict(request, timeout=60)
        clip = tf.make_ndarray(response.outputs["clip_embedding"])
        # ---
    finally:
        server.stop(None)
    from m3bert_tf import runs

    model, _ = runs.load_model(run)
    mask = np.arange(features.shape[1])[None] < lengths[:, None]
    reference = model({"features": features, "padding_mask": mask}, training=False)
    for i, n in enumerate(lengths):
        assert_close_across_kernels(
            clip[i], reference["sequence_output"][i, :n].numpy().mean(0), what=f"row {i}"
        )


def test_readme_rest_body_feeds_the_signature(exported):
    """The REST body of docs/serve.md (row format "instances") parsed and fed to the signature."""
    readme = open(os.path.join(ROOT, "docs", "serve.md")).read()
    body = readme.split("<!-- rest-body -->")[1].split("```json")[1].split("```")[0]
    request = json.loads(body)
    _, path = exported["pretrained"]
    signature = tf.saved_model.load(path).signatures[request["signature_name"]]
    spec = signature.structured_input_signature[1]
    rows = request["instances"]
    inputs = {
        name: tf.constant([row[name] for row in rows], dtype=spec[name].dtype)
        for name in spec
    }
    for name, (dtype, rank) in SIGNATURE_INPUTS.items():
        assert inputs[name].dtype == dtype and inputs[name].shape.rank == rank
    out = signature(**inputs)
    assert out["clip_embedding"].shape[0] == len(rows)


def test_python_api_from_run_and_export_agree(exported):
    import m3bert_tf

    run, path = exported["finetuned"]
    waveform = np.random.default_rng(0).standard_normal(22050 * 5).astype(np.float32) * 0.1
    # The same features both ways (librosa's); the TF front end is tested below.
    a, b = m3bert_tf.load(run), m3bert_tf.load(path, frontend="librosa")
    for layer in ("last", "all", "mean", 0):
        ea, eb = (
            a.embed(waveform, 22050, layer=layer),
            b.embed(waveform, 22050, layer=layer),
        )
        assert ea.keys() == eb.keys()
        for key in ea:
            np.testing.assert_allclose(ea[key], eb[key], atol=1e-5)
    frames = 1 + (5 * 44100) // 1024
    assert ea["frame_embeddings"].shape == (frames, a.hidden_dim)
    full = a.embed(waveform, 22050, layer="all")
    assert full["frame_embeddings"].shape == (frames, a.num_layers, a.hidden_dim)
    np.testing.assert_allclose(
        full["frame_embeddings"][:, 0], ea["frame_embeddings"], atol=1e-6
    )
    predicted = b.predict(waveform, 22050)
    genre = predicted["genre"]
    assert set(genre) == {"a", "b", "c"} and abs(sum(genre.values()) - 1) < 1e-5
    # The whole track: the heads on the mean enrichment of every frame.
    assert b.plan(frames)[0].stop < frames, "more than one window"
    stitched = b.embed(waveform, 22050)  # the windows predict uses
    heads = a.backend.predict_clip(stitched["frame_enrichment"].mean(0, keepdims=True))
    from_run = a.predict(waveform, 22050)
    for task in heads:
        np.testing.assert_allclose(
            list(predicted[task].values()), heads[task][0], atol=1e-5
        )
        np.testing.assert_allclose(
            list(predicted[task].values()), list(from_run[task].values()), atol=1e-5
        )


def test_python_and_hear_apis_of_an_export_need_neither_librosa_nor_soundfile(exported):
    """An export's `m3bert_tf.load(...).embed` and the HEAR API run through the
    TensorFlow front end inside it: equal to the librosa path within the front
    end's tolerance, and in a process where librosa and soundfile cannot load."""
    import m3bert_tf

    _, path = exported["finetuned"]
    waveform = np.random.default_rng(3).standard_normal(44100 * 5).astype(np.float32) * 0.1
    by_tf, by_librosa = m3bert_tf.load(path), m3bert_tf.load(path, frontend="librosa")
    assert (by_tf.frontend, by_librosa.frontend) == ("tf", "librosa")
    a, b = by_tf.embed(waveform, 44100), by_librosa.embed(waveform, 44100)
    assert a["frame_embeddings"].shape == b["frame_embeddings"].shape
    worst = float(np.abs(a["clip_enrichment"] - b["clip_enrichment"]).max())
    print(f"\nclip enrichment, TF front end vs librosa: max abs {worst:.1e}")
    assert worst < 5e-3
    code = (
        "import sys\n"
        "for name in ('librosa', 'soundfile'):\n"
        "    sys.modules[name] = None\n"
        "import numpy as np, m3bert_tf, m3bert_tf.hear as hear\n"
        "y = (np.random.default_rng(3).standard_normal(44100 * 5) * 0.1).astype(np.float32)\n"
        f"model = m3bert_tf.load({path!r})\n"
        "print('clip', np.round(model.embed(y, 44100)['clip_enrichment'][:3], 4).tolist())\n"
        "print('predict', sorted(model.predict(y, 44100)))\n"
        f"scene = hear.get_scene_embeddings(y[None], hear.load_model({path!r}))\n"
        "print('scene', scene.shape.as_list())\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=user_env())  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"clip {np.round(a['clip_enrichment'][:3], 4).tolist()}" in res.stdout
    assert "predict ['genre'," in res.stdout and "scene [1, " in res.stdout
    # A run directory runs the same front end when asked (librosa by default).
    run_tf = m3bert_tf.load(exported["finetuned"][0], frontend="tf")
    np.testing.assert_allclose(
        run_tf.embed(waveform, 44100)["clip_enrichment"], a["clip_enrichment"], atol=1e-5
    )
    assert m3bert_tf.load(exported["finetuned"][0]).frontend == "librosa"


def test_windows_are_stitched_and_equal_each_window_alone(exported, tmp_path):
    """A 70 s file in 64-frame windows (and overlapping ones): every window's
    frames equal embedding that window's features alone; overlap keeps the
    most central copy."""
    import soundfile

    import m3bert_tf
    from m3bert_tf.data import windows
    from m3bert_tf.features import frames, streaming

    _, path = exported["pretrained"]
    model = m3bert_tf.load(path, frontend="librosa")
    audio = write_audio(str(tmp_path / "long.wav"), 70.0, 44100, seed=5)
    out = model.embed_file(audio)
    with streaming.spill_file(audio, model.extractor) as track:
        plan = model.plan(track.num_frames)
        assert plan[0].stop - plan[0].start == 64 and len(plan) == -(
            -track.num_frames // 64
        )
        assert plan[-1].stop == track.num_frames and plan[-1].stop - plan[-1].start == 64
        for w in plan[:3] + plan[-2:]:
            alone = model.run_windows(
                [model.window_features(track, w.start, w.stop)], "embed"
            )
            kept = alone[0]["frame_embeddings"][
                w.keep_start - w.start : w.keep_stop - w.start
            ]
            np.testing.assert_allclose(
                out["frame_embeddings"][w.keep_start : w.keep_stop], kept, atol=1e-5
            )
        # A window's audio alone (with 3 s of audio context, so its edge frames
        # see what they see inside the track), normalized with the track's
        # statistics, gives the same embeddings.
        w = plan[20]
        y, _ = soundfile.read(audio, dtype="float32")
        context = 3 * 44100 // 1024
        first = (w.start - context) * 1024
        piece = y[first : (w.stop + context) * 1024]
        with streaming.spill_waveform(piece, 44100, model.extractor) as alone:
            raw = alone.raw(context, context + w.stop - w.start)
        features = frames.apply_cmvn(raw, track.mean, track.std)
        embedded = model.run_windows([features], "embed")[0]["frame_embeddings"]
        # Tolerance: the features of the piece differ from the track's by
        # float32 noise (resampling another edge), ~1e-5 relative.
        np.testing.assert_allclose(
            out["frame_embeddings"][w.start : w.stop], embedded, atol=2e-3
        )
        overlapping = model.embed_track(track, window_seconds=1.4, hop_seconds=0.7)
    assert overlapping["frame_embeddings"].shape == out["frame_embeddings"].shape
    plan = windows.plan(1000, 60, 30)
    owners = np.concatenate(
        [[i] * (w.keep_stop - w.keep_start) for i, w in enumerate(plan)]
    )
    assert len(owners) == 1000
    for j in (100, 500, 990):  # each frame from the window whose center is nearest
        centers = [abs((w.start + w.stop) / 2 - (j + 0.5)) if w.start <= j < w.stop else 1e9
                   for w in plan]  # fmt: skip
        assert owners[j] == int(np.argmin(centers))
    np.testing.assert_allclose(np.diff(out["timestamps"]), 1024 / 44100)


def test_hear_api_shapes_and_timestamps(exported):
    import m3bert_tf.hear as hear

    _, path = exported["finetuned"]
    model = hear.load_model(path)
    assert isinstance(model, tf.Module) and model.sample_rate == 44100
    hop_ms = 1024 / 44100 * 1000
    for seconds in (1.07, 1.98, 2.74, 4.0):
        audio = tf.random.uniform((3, int(seconds * 44100)), -0.5, 0.5, seed=1)
        emb, ts = hear.get_timestamp_embeddings(audio, model)
        assert emb.dtype == tf.float32 and ts.dtype == tf.float32
        assert emb.shape[:2] == ts.shape and emb.shape[2] == model.timestamp_embedding_size
        diffs = np.diff(ts.numpy(), axis=1)
        assert np.all(np.abs(diffs - hop_ms) < 1e-3)
        assert ts.numpy()[0, 0] == 0.0
        assert seconds * 1000 - ts.numpy()[0, -1] <= 2 * hop_ms
        scene = hear.get_scene_embeddings(audio, model)
        assert scene.dtype == tf.float32
        assert scene.shape == (3, model.scene_embedding_size)
        np.testing.assert_allclose(scene, emb.numpy().mean(axis=1), atol=1e-5)
    with pytest.raises(ValueError, match="needs a model"):
        hear.load_model("")


def test_the_real_hear_validator_passes(exported, tmp_path):
    _, path = exported["pretrained"]
    validator = os.path.join(os.path.dirname(sys.executable), "hear-validator")
    proc = subprocess.run(
        [validator, "m3bert_tf.hear", "--model", path],
        env=user_env(), capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Looks good!" in proc.stdout


def test_bin_embed_skips_bad_files_resumes_and_refuses_other_settings(exported, tmp_path):
    _, path = exported["finetuned"]
    music = tmp_path / "music"
    (music / "sub").mkdir(parents=True)
    write_audio(str(music / "a.wav"), 3.0, 22050, seed=1)
    write_audio(str(music / "sub" / "b.flac"), 5.0, 44100, channels=2, seed=2)
    (music / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    out = tmp_path / "emb"
    argv = run_bin("embed", f"--model={path}", f"--input={music}", f"--output_dir={out}")
    proc = subprocess.run(argv, env=user_env(), capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert "broken.wav" in proc.stderr and "Traceback" not in proc.stderr
    index = open(out / "index.csv").read().splitlines()
    assert index[0] == "track_id,source_path,duration_s,frames,file"
    assert [row.split(",")[0] for row in index[1:]] == ["a", "sub/b"]
    with np.load(out / "sub" / "b.npz") as data:
        frames = 1 + (5 * 44100) // 1024
        assert data["frame_embeddings"].shape == (frames, 16)
        assert data["frame_enrichment"].shape == (frames, 8)
        assert data["timestamps"].shape == (frames,)
        np.testing.assert_allclose(
            data["clip_embedding"], data["frame_embeddings"].mean(0), atol=1e-5
        )
    mtime = os.path.getmtime(out / "a.npz")
    proc = subprocess.run(argv, env=user_env(), capture_output=True, text=True)
    assert "2 already done" in proc.stdout and os.path.getmtime(out / "a.npz") == mtime
    proc = subprocess.run(
        argv + ["--layer=all"], env=user_env(), capture_output=True, text=True
    )
    assert proc.returncode == 2 and "layer: last -> all" in proc.stderr
    other = run_bin(
        "embed", f"--model={path}", f"--input={music}", f"--output_dir={tmp_path / 'x'}"
    )
    proc = subprocess.run(
        other + ["--layer=7"], env=user_env(), capture_output=True, text=True
    )
    assert proc.returncode == 2 and "the model has 2 blocks" in proc.stderr
    assert not (tmp_path / "x").exists()  # refused before anything is written

    # --frontend=tf: the workers decode, the export's front end makes the
    # features; the same files fail, the embeddings agree with librosa's.
    from m3bert_tf.serving import embed_job

    config = embed_job.EmbedConfig(
        model=path, input=str(music), output_dir=str(tmp_path / "tf"), frontend="tf",
        num_workers=0, progress_interval=1e9,
    )  # fmt: skip
    result = embed_job.run_embed(config)
    assert result["embedded"] == 2 and [p["path"] for p in result["failed"]] == [
        str(music / "broken.wav")
    ]
    with (
        np.load(tmp_path / "tf" / "sub" / "b.npz") as a,
        np.load(out / "sub" / "b.npz") as b,
    ):
        assert a["frame_embeddings"].shape == b["frame_embeddings"].shape
        assert np.abs(a["clip_enrichment"] - b["clip_enrichment"]).max() < 5e-3
    proc = subprocess.run(argv + ["--frontend=tf"], env=user_env(), capture_output=True,
                          text=True)  # fmt: skip
    assert proc.returncode == 2 and "frontend: librosa -> tf" in proc.stderr


def test_global_normalization_feeds_the_model_as_training_did(tmp_path):
    """A run trained on "global" features: the API normalizes with the same
    rule as the pipelines (`data.normalization.normalize`), flat channels too."""
    import m3bert_tf
    from m3bert_tf.data.normalization import normalize
    from m3bert_tf.features import streaming

    run = make_run(tmp_path / "run", "pretrained")
    rng = np.random.default_rng(0)
    std = rng.uniform(0.5, 3.0, 324)
    std[5] = 0.0  # a channel flat over the training data
    stats = {"frames": 1000, "mean": rng.normal(0, 2, 324).tolist(), "std": std.tolist()}
    with open(os.path.join(run, "input_spec.json"), "w") as f:
        json.dump({"feature_spec": None, "normalization": "global", "stats": stats}, f)
    model = m3bert_tf.load(run)
    waveform = rng.standard_normal(44100 * 3).astype(np.float32) * 0.1
    with streaming.spill_waveform(waveform, 44100, model.extractor) as track:
        raw = track.raw(0, 100)
        fed = model.window_features(track, 0, 100)
    ones, zeros = np.ones(324, np.float32), np.zeros(324, np.float32)
    expected = normalize(tf.constant(raw), zeros, ones, "global", stats).numpy()
    np.testing.assert_allclose(fed, expected, rtol=1e-6, atol=1e-6)


def test_every_input_kind_warms_up_with_what_its_specs_take():
    """The input-kind table is the one place: each kind's warm-up example
    fits the TensorSpecs its signatures are exported with, and `feed` names
    them as clients send them."""
    import types

    from m3bert_tf.serving import signatures

    computations = types.SimpleNamespace(enrichment_dim=5, input_sample_rate=16000)
    rng = np.random.default_rng(0)
    for signature in signatures.SIGNATURES:
        specs = signatures.input_specs(signature, computations)
        example = signatures.warmup_example(signature, computations, 4, 12, rng)
        assert list(example) == [s.name for s in specs], signature.name
        fed = signatures.feed(signature.name, list(example.values()))
        for spec in specs:
            assert spec.is_compatible_with(fed[spec.name]), (signature.name, spec)
