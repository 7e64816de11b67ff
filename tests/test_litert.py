"""The model as LiteRT files (issue "The encoder on a phone"): builtin
operators only, the front end included, the SavedModel's outputs, the same
checks, and the same `Model` interface."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_bin, user_env, write_audio
from tolerances import FRONTEND_ATOL

import m3bert_tf
from m3bert_tf.serving import export, litert
from m3bert_tf.serving.graph import MAX_FRAMES

# LiteRT float32 against the SavedModel, features in: measured at most 2.0e-6
# over every output at 7-1000 frames (XNNPACK sums in another order).
BOUND = 2e-5
# Waveforms in: the front end's LiteRT form (float32 CMVN, the CQT by real
# time-domain kernels) moves the features by at most 5.4e-5, the embeddings
# by at most 1.7e-5 (0.5-31 s, the tiny model, 2026-12-07, AMD EPYC).
WAVEFORM_BOUND = 2e-4


@pytest.fixture(scope="module")
def lite(exported, tmp_path_factory):
    """(SavedModel version dir, its float32 model.tflite) of the fine-tuned run."""
    run, _ = exported["finetuned"]
    base = tmp_path_factory.mktemp("litert")
    path = export.export_run(run, str(base), log=lambda m: None, litert=True)
    return path, os.path.join(path, litert.LITERT_NAME)


def test_the_files_use_builtin_operators_only(lite):
    path, _ = lite
    info = json.load(open(os.path.join(path, "export.json")))["litert"]
    assert sorted(info["signatures"]) == sorted(litert.LITERT_SIGNATURES)
    for variant, name in litert.VARIANTS.items():
        tflite = os.path.join(path, name)
        assert info["files"][variant] == {"file": name, "bytes": os.path.getsize(tflite)}
        ops = litert.op_names(tflite)
        assert {"FULLY_CONNECTED", "SOFTMAX", "GELU"} <= ops, variant
        assert not [op for op in ops if op.startswith("Flex") or op == "CUSTOM"], ops
    assert {"RFFT2D", "CONV_2D"} <= litert.op_names(os.path.join(path, litert.LITERT_NAME))
    sizes = {v: f["bytes"] for v, f in info["files"].items()}
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]


@pytest.mark.parametrize("frames", [7, 100, 333])
def test_litert_outputs_equal_the_savedmodels(lite, frames):
    """7 frames: shorter than the training window; 333: not a power of two;
    rows of two lengths, the shorter one padded."""
    path, tflite = lite
    saved, small = m3bert_tf.load(path).backend, m3bert_tf.load(tflite).backend
    x = np.random.default_rng(frames).standard_normal((2, frames, 324)).astype(np.float32)
    lengths = np.array([frames, max(1, frames // 3)], np.int32)
    for signature in ("embed", "embed_all_layers", "predict"):
        a, b = small.call(signature, x, lengths), saved.call(signature, x, lengths)
        assert set(a) == set(b)
        for key in b:
            np.testing.assert_allclose(
                a[key], b[key], atol=BOUND, err_msg=f"{signature} {key}"
            )
    clip = saved.call("embed", x, lengths)["clip_enrichment"]
    for task, value in saved.call("predict_clip", clip).items():
        np.testing.assert_allclose(
            small.call("predict_clip", clip)[task], value, atol=BOUND
        )


def test_litert_refuses_what_the_savedmodel_refuses(lite):
    small = m3bert_tf.load(lite[1]).backend
    cases = [
        ((np.zeros((1, MAX_FRAMES + 1, 324), np.float32), np.array([MAX_FRAMES + 1], np.int32)),
         f"features: at most {MAX_FRAMES} frames per row"),
        ((np.zeros((0, 10, 324), np.float32), np.zeros(0, np.int32)),
         "a request needs at least one row"),
        ((np.full((1, 10, 324), np.nan, np.float32), np.array([10], np.int32)),
         "NaN or infinity in a real frame"),
        ((np.zeros((1, 10, 64), np.float32), np.array([10], np.int32)),
         "features: [batch, any, 324] is needed"),
        ((np.zeros((1, 10, 324), np.float32), np.array([11], np.int32)),
         "a row's length exceeds the frames"),
    ]  # fmt: skip
    for args, message in cases:
        with pytest.raises(ValueError) as raised:
            small.call("embed", *args)
        assert message in str(raised.value)
    padded = np.zeros((1, 10, 324), np.float32)
    padded[0, 5:] = np.nan  # padding: never looked at
    out = small.call("embed", padded, np.array([5], np.int32))
    assert np.isfinite(out["clip_embedding"]).all()


@pytest.mark.parametrize("seconds", [0.5, 31.3])
def test_waveforms_in_give_the_savedmodels_embeddings(lite, seconds):
    """0.5 s: shorter than a window; 31.3 s: longer than one, a frame count
    that is no power of two; through `m3bert_tf.load`, which takes the
    file's own front end."""
    path, tflite = lite
    small, saved = m3bert_tf.load(tflite), m3bert_tf.load(path, frontend="tf")
    assert small.frontend == "tf" and small.kind == "finetuned"
    y = np.random.default_rng(7).normal(0, 0.1, int(44100 * seconds)).astype(np.float32)
    a, b = small.embed(y, 44100), saved.embed(y, 44100)
    for key in b:
        np.testing.assert_allclose(a[key], b[key], atol=WAVEFORM_BOUND, err_msg=key)
    for task, probabilities in saved.predict(y, 44100).items():
        for name, value in probabilities.items():
            assert small.predict(y, 44100)[task][name] == pytest.approx(
                value, abs=WAVEFORM_BOUND
            )
    lengths = np.array([len(y)], np.int32)
    features = small.backend.waveform_features(y[None], lengths)["features"]
    np.testing.assert_allclose(
        features,
        saved.backend.waveform_features(y[None], lengths)["features"],
        atol=FRONTEND_ATOL,
    )
    with pytest.raises(ValueError, match="waveform: at most 26460000 samples"):
        small.backend.waveform_features(
            np.zeros((1, 26460001), np.float32), np.array([26460001], np.int32)
        )
    with pytest.raises(ValueError, match="waveform: a request needs at least one row"):
        small.backend.call(
            "embed_waveform", np.zeros((0, 44100), np.float32), np.zeros(0, np.int32)
        )


def test_bin_embed_takes_a_tflite_file(lite, tmp_path):
    path, tflite = lite
    music = tmp_path / "music"
    music.mkdir()
    write_audio(str(music / "a.wav"), 3.0, 44100, seed=1)
    out = tmp_path / "emb"
    res = subprocess.run(
        run_bin("embed", f"--model={tflite}", f"--input={music}", f"--output_dir={out}",
                "--num_workers=1"),
        env=user_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    expected = m3bert_tf.load(path, frontend="librosa").embed_file(str(music / "a.wav"))
    with np.load(out / "a.npz") as data:
        np.testing.assert_allclose(
            data["clip_embedding"], expected["clip_embedding"], atol=BOUND
        )


def test_the_file_runs_with_ai_edge_litert_alone(lite):
    """The docs' example, in a process where TensorFlow cannot be imported."""
    script = f"""
import sys
sys.modules["tensorflow"] = None  # no TensorFlow here
import numpy as np
from ai_edge_litert.interpreter import Interpreter

embed = Interpreter(model_path={lite[1]!r}).get_signature_runner("embed")
features = np.zeros((1, 100, 324), np.float32)  # normalized as export.json says
out = embed(features=features, lengths=np.array([100], np.int32))
print(out["clip_embedding"].shape, out["frame_embeddings"].shape)
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split("\n")[0] == "(1, 16) (1, 100, 16)"


def test_the_quantized_variants_score_cost_is_measured(lite, tmp_path):
    """Clip embeddings of labeled clips by float32 and int8, probed and
    paired as bin/evaluate pairs any two sets: the cost is measured and
    printed, not asserted (benchmarks/litert_bench.py measures it on the
    demo corpus)."""
    from conftest import extract_labeled

    from m3bert_tf import datasets
    from m3bert_tf.evaluate import job

    path, _ = lite
    rows = [
        (f"g{i}", ("train", "valid", "test")[i % 3], "genre", "ab"[i % 2])
        for i in range(18)
    ]
    data = extract_labeled(tmp_path, rows)
    tracks = datasets.find_tracks(str(tmp_path / "labels.csv")).tracks
    embeddings = []
    for variant in ("float32", "int8"):
        model = m3bert_tf.load(os.path.join(path, litert.VARIANTS[variant]))
        directory = tmp_path / variant
        directory.mkdir()
        for track in tracks:
            out = model.embed_file(track.path)
            np.savez(
                directory / f"{track.track_id}.npz", clip_embedding=out["clip_embedding"]
            )
        embeddings.append(f"{variant}={directory}")
    result = job.run_evaluate(
        job.EvaluateConfig(
            data=data, output_dir=str(tmp_path / "eval"), baselines=("mfcc",),
            embeddings=tuple(embeddings), probes=("linear",), seeds=1, epochs=5,
            added_value=False,
        ),
        log=lambda m: None,
    )  # fmt: skip
    (pair,) = [
        c
        for c in result["tasks"]["genre"]["comparisons"]
        if {c["a"], c["b"]} == {"float32", "int8"}
    ]
    assert np.isfinite(pair["difference"]) and len(pair["interval"]) == 2
    print(
        f"\nint8 against float32 (genre, {pair['a']} - {pair['b']}): {pair['difference']:+.3f}"
    )


def test_a_conformer_encoder_exports_with_builtin_operators(tmp_path):
    """The Conformer block's depthwise convolution is a LiteRT builtin, and its
    padding rule holds in the file: the SavedModel's and the LiteRT file's
    embeddings agree, a padded row included."""
    from m3bert_tf.models.encoder import M3BertEncoder, encoder_inputs
    from m3bert_tf.models.seeding import seed_weights

    encoder = M3BertEncoder(2, 16, 2, 32, dropout=0.0, block="conformer", conv_kernel=5)
    encoder(encoder_inputs(encoder))
    seed_weights(encoder, 3)
    run = tmp_path / "run"
    run.mkdir()
    encoder.save(str(run / "encoder.keras"))
    (run / "config.json").write_text(json.dumps({"max_frames": 64}))
    path = export.export_run(
        str(run), str(tmp_path / "export"), log=lambda m: None, litert=True
    )
    assert (
        json.load(open(os.path.join(path, "export.json")))["encoder"]["block"]
        == "conformer"
    )
    tflite = os.path.join(path, litert.LITERT_NAME)
    ops = litert.op_names(tflite)
    assert "DEPTHWISE_CONV_2D" in ops
    assert not [op for op in ops if op.startswith("Flex") or op == "CUSTOM"], ops
    saved, small = m3bert_tf.load(path).backend, m3bert_tf.load(tflite).backend
    for frames in (7, 100):
        x = (
            np.random.default_rng(frames)
            .standard_normal((2, frames, 324))
            .astype(np.float32)
        )
        lengths = np.array([frames, max(1, frames // 3)], np.int32)
        for signature in ("embed", "embed_all_layers"):
            a, b = small.call(signature, x, lengths), saved.call(signature, x, lengths)
            for key in b:
                np.testing.assert_allclose(
                    a[key], b[key], atol=BOUND, err_msg=f"{signature} {key}"
                )
