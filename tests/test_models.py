"""Layers and models: the shared contract, any length, padding, legacy files, the loss."""

import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import ROOT
from layer_testing import check_layer
from tolerances import assert_close_across_kernels

from m3bert_tf import runs
from m3bert_tf.layers.conformer import ConformerBlock
from m3bert_tf.layers.frame_stack import FrameStack, FrameUnstack
from m3bert_tf.layers.pooling import MaskedMeanPooling
from m3bert_tf.layers.position import SinusoidalPositionEncoding
from m3bert_tf.layers.transformer import TransformerBlock
from m3bert_tf.models.encoder import M3BertEncoder
from m3bert_tf.models.multitask import M3BertMultiTask
from m3bert_tf.models.pretrainer import M3BertPretrainer
from m3bert_tf.tasks import TaskSpec
from m3bert_tf.train.losses import huber, masked_huber

FIXTURES = os.path.join(ROOT, "tests", "fixtures")
TASKS = [
    TaskSpec("genre", "classification", classes=("a", "b", "c")).to_json(),
    TaskSpec("mood", "regression", outputs=("v", "a")).to_json(),
    TaskSpec("tags", "multilabel", classes=("p", "q")).to_json(),
]


def batch(lengths, frames=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((len(lengths), frames, 324)).astype("float32")
    mask = np.arange(frames)[None, :] < np.array(lengths)[:, None]
    return {"features": x * mask[:, :, None], "padding_mask": mask}


def small(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


MASK = np.array([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]], bool)
LAYERS = {
    "position": (
        lambda: SinusoidalPositionEncoding(max_wavelength=500.0),
        [small((2, 6, 12))],
    ),
    "transformer": (lambda: TransformerBlock(2, 16, dropout=0.0), [small((2, 6, 12))]),
    "conformer": (
        lambda: ConformerBlock(2, 16, conv_kernel=3, dropout=0.0),
        [small((2, 7, 12)), MASK],
    ),
    "frame_stack": (lambda: FrameStack(3), [small((2, 7, 4)), MASK]),
    "frame_unstack": (lambda: FrameUnstack(3), [small((2, 3, 12))]),
    "pooling": (lambda: MaskedMeanPooling(), [small((2, 7, 5)), MASK]),
    "encoder": (lambda: M3BertEncoder(2, 16, 2, 32, dropout=0.0), batch([12, 7])),
    "encoder_conformer": (
        lambda: M3BertEncoder(2, 16, 2, 32, dropout=0.0, block="conformer", conv_kernel=5),
        batch([12, 7]),
    ),
    "encoder_stacked": (
        lambda: M3BertEncoder(2, 16, 2, 32, frame_stack=3, dropout=0.0),
        batch([11, 7], frames=11),
    ),
    "pretrainer": (
        lambda: M3BertPretrainer(M3BertEncoder(1, 16, 2, 32, frame_stack=3, dropout=0.0)),
        batch([11, 7], frames=11),
    ),
    "multitask": (
        lambda: M3BertMultiTask(M3BertEncoder(1, 16, 2, 32, dropout=0.0), TASKS, 8, 0.0),
        batch([12, 5]),
    ),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_every_layer_and_model_keeps_the_contract(name, tmp_path):
    make, inputs = LAYERS[name]
    check_layer(make, inputs, tmp_path)


@pytest.mark.parametrize("frame_stack", [1, 3])
def test_models_take_any_length(frame_stack):
    model = M3BertPretrainer(M3BertEncoder(2, 16, 2, 32, frame_stack=frame_stack))
    assert model.encoder.inputs[0].shape == (None, None, 324)
    for frames in (1, 7, 37, 300):
        out = model(batch([frames], frames=frames))["reconstruction"]
        assert out.shape == (1, frames, 324)


def test_frame_stack_round_trip_and_mask():
    x = np.arange(2 * 6 * 4, dtype="float32").reshape(2, 6, 4)
    mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], bool)
    stacked, stacked_mask = FrameStack(2)(x, mask)
    assert stacked.shape == (2, 3, 8)
    np.testing.assert_array_equal(np.asarray(stacked_mask), [[1, 1, 1], [1, 1, 0]])
    np.testing.assert_array_equal(np.asarray(FrameUnstack(2)(stacked)), x)
    # A length that is not a multiple of k is padded, and the padding is masked.
    stacked, stacked_mask = FrameStack(4)(x, mask)
    assert stacked.shape == (2, 2, 16)
    np.testing.assert_array_equal(np.asarray(stacked_mask), [[1, 1], [1, 0]])
    np.testing.assert_array_equal(np.asarray(stacked)[0, 1, 8:], 0.0)
    np.testing.assert_array_equal(np.asarray(FrameUnstack(4)(stacked, x)), x)


def test_position_encoding_is_sinusoidal():
    out = np.asarray(SinusoidalPositionEncoding()(np.zeros((1, 5, 4), "float32")))
    np.testing.assert_allclose(out[0, :, 0], np.sin(np.arange(5)), atol=1e-6)
    np.testing.assert_allclose(out[0, :, 1], np.cos(np.arange(5)), atol=1e-6)
    np.testing.assert_allclose(out[0, :, 2], np.sin(np.arange(5) / 100.0), atol=1e-6)


def test_sublayer_names_match_attributes():
    block = TransformerBlock(num_heads=2, ffn_dim=8)
    block.build((1, 4, 8))
    for name in ("attention", "attention_norm", "ffn_inner", "ffn_outer", "ffn_norm"):
        assert getattr(block, name).name == name
    encoder = M3BertEncoder(3, 16, 2, 32)
    assert [b.name for b in encoder.blocks] == [
        "transformer_0",
        "transformer_1",
        "transformer_2",
    ]
    assert all(isinstance(b, TransformerBlock) for b in encoder.blocks)
    conformer = M3BertEncoder(2, 16, 2, 32, block="conformer")
    assert [b.name for b in conformer.blocks] == ["conformer_0", "conformer_1"]
    assert all(isinstance(b, ConformerBlock) for b in conformer.blocks)
    assert conformer.get_config()["block"] == "conformer"
    # The convolution is depthwise: k x H weights, not k x H x H.
    assert conformer.blocks[0].depthwise.kernel.shape == (31, 16, 1)
    with pytest.raises(ValueError, match="block must be one of"):
        M3BertEncoder(1, 16, 2, 32, block="lstm")
    with pytest.raises(ValueError, match="conv_kernel must be odd"):
        ConformerBlock(2, 16, conv_kernel=4)


@pytest.mark.parametrize("block", ["transformer", "conformer"])
def test_padding_is_never_attended_in_a_mixed_batch(block):
    """Nothing in the padding reaches a real frame: not through attention, not
    through the Conformer's convolution (its kernel, 5, spans the boundary)."""
    encoder = M3BertEncoder(2, 16, 2, 32, dropout=0.0, block=block, conv_kernel=5)
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
    single = {
        "features": x["features"][1:2, :5],
        "padding_mask": x["padding_mask"][1:2, :5],
    }
    np.testing.assert_allclose(
        np.asarray(encoder(single)["sequence_output"])[0], out[1, :5], atol=1e-5
    )


@pytest.mark.parametrize("name", ["encoder", "multitask"])
def test_a_model_saved_by_release_0_1_0_loads_and_takes_any_length(name, tmp_path):
    """Release 0.1.0 saved a fixed max_frames (12): the file still loads, gives
    the outputs it gave then, and now takes any length."""
    run = tmp_path / "run"
    run.mkdir()
    target = runs.ENCODER_NAME if name == "encoder" else runs.MULTITASK_NAME
    shutil.copy(os.path.join(FIXTURES, f"{name}_v0.1.0.keras"), run / target)
    model = (
        runs.load_encoder(str(run)) if name == "encoder" else runs.load_multitask(str(run))
    )
    want = np.load(os.path.join(FIXTURES, "outputs_v0.1.0.npz"))
    inputs = {"features": want["features"], "padding_mask": want["padding_mask"]}
    out = model(inputs)
    # The stored outputs were computed on another CPU: within the cross-kernel bound.
    for key in (
        ("sequence_output",) if name == "encoder" else ("genre", "mood", "clip_embedding")
    ):
        assert_close_across_kernels(out[key], want[key], what=f"{name}/{key} vs 0.1.0")
        assert runs.load_encoder(str(run)).name == "encoder"  # the encoder inside
    longer = batch([40, 25], frames=40)
    assert (
        model(longer)["clip_embedding" if name != "encoder" else "sequence_output"].shape[0]
        == 2
    )


@pytest.mark.parametrize("name", ["encoder", "multitask"])
def test_a_model_saved_on_the_tensorflow_2_17_stack_loads_on_every_line(name, tmp_path):
    """Release 0.2.0's .keras files, written with TensorFlow 2.17.1 before the
    default line moved to 2.21 (tests/fixtures/make_keras.py), load through
    the run-directory loaders and give the outputs they gave then."""
    run = tmp_path / "run"
    run.mkdir()
    target = runs.ENCODER_NAME if name == "encoder" else runs.MULTITASK_NAME
    shutil.copy(os.path.join(FIXTURES, f"{name}_v0.2.0.keras"), run / target)
    loader = runs.load_encoder if name == "encoder" else runs.load_multitask
    model = loader(str(run))
    want = np.load(os.path.join(FIXTURES, "outputs_v0.2.0.npz"))
    out = model({"features": want["features"], "padding_mask": want["padding_mask"]})
    keys = (
        ("sequence_output",) if name == "encoder" else ("genre", "mood", "clip_embedding")
    )
    for key in keys:
        assert_close_across_kernels(out[key], want[key], what=f"{name}/{key} vs 0.2.0")


def test_load_encoder_names_the_directory(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=f"{tmp_path}: no encoder.keras or multitask.keras"
    ):
        runs.load_encoder(str(tmp_path))


JAX_SCRIPT = """
import json, sys
import numpy as np
import keras
import m3bert_tf.models.multitask, m3bert_tf.models.pretrainer
data = np.load(sys.argv[1])
out = {"backend": keras.backend.backend()}
for name in ("pretrainer", "multitask"):
    model = keras.saving.load_model(sys.argv[2] + f"/{name}.keras")
    result = model({"features": data["features"], "padding_mask": data["padding_mask"]})
    out[name] = {k: np.asarray(v).tolist() for k, v in result.items()}
print(json.dumps(out))
"""


def test_encoder_and_multitask_give_the_same_outputs_under_jax(tmp_path):
    """The keras.ops-only wall: the models run under JAX with TensorFlow's weights."""
    keras.utils.set_random_seed(4)
    encoder = M3BertEncoder(2, 16, 2, 32, frame_stack=3, dropout=0.0, name="encoder")
    models = {
        "pretrainer": M3BertPretrainer(encoder),
        "multitask": M3BertMultiTask(encoder, TASKS, 8, 0.0),
    }
    inputs = batch([11, 6, 9], frames=11, seed=2)
    np.savez(tmp_path / "inputs.npz", **inputs)
    want = {}
    for name, model in models.items():
        want[name] = {k: np.asarray(v) for k, v in model(inputs).items()}
        model.save(tmp_path / f"{name}.keras")
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
    res = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, str(tmp_path / "inputs.npz"), str(tmp_path)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["backend"] == "jax"
    for name, outputs in want.items():
        for key, value in outputs.items():
            assert_close_across_kernels(
                got[name][key], value, what=f"{name}/{key} jax vs tf"
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
