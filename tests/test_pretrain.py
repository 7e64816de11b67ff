"""Pre-training: schedule, distribution, configs, resume and NaN behaviour."""

import glob
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, kill_after_checkpoints, run_bin, small_pipeline

from m3bert_tf.data import pipeline, shards
from m3bert_tf.train import distribute, pretrain
from m3bert_tf.train.schedule import WarmupLinearDecay

ENV = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
FINETUNE_FLAGFILE = os.path.join(ROOT, "configs", "tiny_finetune.flags")
TINY_OVERRIDES = ["--eval_batches=1", "--log_every=1", "--holdout_percent=20"]


def test_schedule_matches_the_papers_formula():
    lmax, total, w = 2e-4, 1000, 0.07
    schedule = WarmupLinearDecay(lmax, total, w)

    def paper(s):
        return min(lmax * s / (w * total), lmax * (total - s) / (total * (1 - w)))

    for step in (0, 35, 70, 500, 999, 1000):
        assert float(schedule(step)) == pytest.approx(paper(step), rel=1e-5, abs=1e-12)
    assert float(schedule(0)) == 0.0
    assert float(schedule(70)) == pytest.approx(lmax, rel=1e-5)  # end of warm-up
    assert float(schedule(1000)) == 0.0  # last step
    assert (
        WarmupLinearDecay.from_config(schedule.get_config()).get_config()
        == schedule.get_config()
    )


def test_global_batch_must_split_evenly():
    config = pretrain.PretrainConfig(
        data="x", model_dir="y", global_batch_size=10, gradient_accumulation_steps=4
    )
    with pytest.raises(ValueError, match="global_batch_size=10 is not divisible"):
        distribute.per_replica_batch_size(
            config.global_batch_size, 1, config.gradient_accumulation_steps
        )


def replica_check(shards, replicas, accumulation, objective="reconstruct"):
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tests", "replica_check.py"), shards, str(replicas),
         str(accumulation), objective],
        env=ENV, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("objective", ["reconstruct", "reconstruct+tokens"])
def test_two_replicas_and_accumulation_equal_one_device(corpus_shards, objective):
    """Each term is divided by its count over the whole global batch: token
    targets and losses are the same on 2 replicas or 2 micro-batches."""
    one = replica_check(corpus_shards, 1, 1, objective)
    two = replica_check(corpus_shards, 2, 1, objective)
    accumulated = replica_check(corpus_shards, 1, 2, objective)
    assert two["replicas"] == 2
    for other in (two, accumulated):
        assert other["loss"] == pytest.approx(one["loss"], rel=1e-5)
        assert other["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-4)
        # The update was the same too: the second step's loss and the weights agree.
        assert other["loss_2"] == pytest.approx(one["loss_2"], rel=1e-4)
        assert other["weights"] == pytest.approx(one["weights"], rel=1e-5)


def test_the_training_stream_starts_at_any_position(corpus_shards):
    """Each pass holds every training example once, in a new order, and the
    stream started at position p is the whole stream from p on: what lets a
    checkpoint hold the step instead of the input's buffers."""
    config = small_pipeline(corpus_shards)
    files = shards.list_shards(corpus_shards)
    per_pass = sum(pipeline.training_counts(files, 20))
    whole = [
        x.numpy() for x in pipeline.training_stream(files, config, 0).take(3 * per_pass)
    ]
    first, second = whole[:per_pass], whole[per_pass : 2 * per_pass]
    assert (
        len(set(first)) == per_pass and sorted(first) == sorted(second) and first != second
    )
    for start in (1, 7, 8, 9, per_pass - 1, per_pass, per_pass + 13):
        got = [x.numpy() for x in pipeline.training_stream(files, config, start).take(9)]
        assert got == whole[start : start + 9], start
    batches = list(pipeline.make_pretrain_dataset(config).take(5))
    resumed = pipeline.make_pretrain_dataset(config, start=3 * 2)  # crops and masks too
    for want, got in zip(batches[3:], resumed.take(2), strict=True):
        np.testing.assert_array_equal(
            got[0]["features"].numpy(), want[0]["features"].numpy()
        )
        np.testing.assert_array_equal(got[1].numpy(), want[1].numpy())


@pytest.mark.parametrize(
    "flagfile",
    sorted(set(glob.glob(os.path.join(ROOT, "configs", "*.flags"))) - {FINETUNE_FLAGFILE}),
)
def test_every_config_parses_and_runs_one_step(flagfile, corpus_shards, tmp_path):
    args = [
        f"--flagfile={flagfile}", f"--data={corpus_shards}", f"--model_dir={tmp_path}",
        "--train_steps=1", "--global_batch_size=2", "--max_frames=64", *TINY_OVERRIDES,
    ]  # fmt: skip
    res = subprocess.run(
        run_bin("pretrain", *args), env=ENV, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["step"] == 1 and np.isfinite(results["train"]["loss"])
    flags_text = (tmp_path / "flags.txt").read_text()
    for line in open(flagfile):
        if line.startswith("--num_layers") or line.startswith("--hidden_dim"):
            assert line.strip() in flags_text
    assert os.path.exists(tmp_path / "encoder.keras")


def tiny_args(shards, model_dir, steps):
    return [
        f"--flagfile={os.path.join(ROOT, 'configs', 'tiny.flags')}", f"--data={shards}",
        f"--model_dir={model_dir}", f"--train_steps={steps}", "--checkpoint_every=10",
        "--eval_every=0", "--max_frames=64", *TINY_OVERRIDES,
    ]  # fmt: skip


@pytest.mark.slow
def test_killed_pretraining_resumes_where_it_stopped(corpus_shards, tmp_path):
    argv = run_bin("pretrain", *tiny_args(corpus_shards, tmp_path, 400))
    killed_at = kill_after_checkpoints(argv, tmp_path / "checkpoints", 2, ENV)
    assert not (tmp_path / "results.json").exists(), "the run finished before the kill"
    assert killed_at >= 20

    res = subprocess.run(argv, env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resumed from {tmp_path / 'checkpoints' / f'ckpt-{killed_at}'}" in res.stderr
    assert f"step {killed_at} of 400" in res.stderr  # continues, does not restart
    assert json.loads((tmp_path / "results.json").read_text())["step"] == 400
    final = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    assert final.endswith("ckpt-400")


@pytest.mark.slow
def test_tiny_config_learns_the_example_corpus(pretrained_corpus):
    """Held-out masked Huber falls below half of predicting zeros (the mean)."""
    results = os.path.join(pretrained_corpus["pretrained"], "results.json")
    result = json.loads(open(results).read())["eval"]
    print(
        f"held-out masked Huber {result['loss_total']:.4f} vs predict-zero "
        f"{result['zero_loss_total']:.4f}: ratio {result['loss_vs_zero']:.3f}"
    )
    assert result["loss_vs_zero"] < 0.5
    # Both masked kinds learned something.
    assert result["loss_channel"] < 0.6 * result["zero_loss_channel"]
    assert result["loss_frame"] < result["zero_loss_frame"]


@pytest.mark.slow
def test_an_encoder_trained_at_256_frames_embeds_any_length(pretrained_corpus):
    """Saved with a None time dimension: 37, 256 and 1294 frames all embed, and
    the first 37 frames alone equal them padded to 256 under the mask."""
    from m3bert_tf import runs

    encoder = runs.load_encoder(pretrained_corpus["pretrained"])
    assert runs.read_config(pretrained_corpus["pretrained"])["max_frames"] == 256
    rng = np.random.default_rng(0)
    for frames in (37, 256, 1294):
        out = encoder(
            {
                "features": rng.standard_normal((2, frames, 324)).astype("float32"),
                "padding_mask": np.ones((2, frames), bool),
            }
        )["sequence_output"]
        assert out.shape == (2, frames, encoder.hidden_dim)
    x = rng.standard_normal((1, 37, 324)).astype("float32")
    alone = encoder({"features": x, "padding_mask": np.ones((1, 37), bool)})
    padded = encoder(
        {
            "features": np.pad(x, [(0, 0), (0, 256 - 37), (0, 0)]),
            "padding_mask": np.arange(256)[None] < 37,
        }
    )
    np.testing.assert_allclose(
        np.asarray(padded["sequence_output"])[:, :37],
        np.asarray(alone["sequence_output"]),
        atol=1e-5,
    )


def test_mixed_precision_auto_picks_bf16_only_where_the_hardware_has_it():
    resolve = distribute.resolve_precision
    no_bf16 = {"avx2", "avx512f", "avx512_vnni", "fma"}  # this Xeon
    assert resolve("auto", [], no_bf16) == (None, None)  # float32
    assert resolve("auto", [], no_bf16 | {"avx512_bf16"}) == ("mixed_bfloat16", None)
    assert resolve("auto", [], {"amx_bf16", "amx_tile"}) == ("mixed_bfloat16", None)
    assert resolve("auto", ["gpu:8.0"], set()) == ("mixed_bfloat16", None)
    assert resolve("auto", ["gpu:7.0"], no_bf16 | {"avx512_bf16"}) == (None, None)
    assert resolve("auto", ["tpu"], set()) == ("mixed_bfloat16", None)
    assert resolve("fp32", ["tpu"], set()) == (None, None)
    policy, warning = resolve("bf16", [], no_bf16)
    assert policy == "mixed_bfloat16" and "slower than float32" in warning
    assert resolve("bf16", [], {"avx512_bf16"}) == ("mixed_bfloat16", None)
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        resolve("yes", [], set())


def test_a_onednn_isa_cap_below_bf16_means_no_bf16_flags(monkeypatch):
    """ONEDNN_MAX_CPU_ISA=AVX2 (how the suite reproduces an AVX2-only CPU's
    numbers) leaves oneDNN without bf16 kernels: auto must pick float32 then."""
    flags = {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}
    monkeypatch.setattr(
        "builtins.open", lambda *a, **k: io.StringIO(f"flags : {' '.join(flags)}\n")
    )
    assert distribute.cpu_flags({}) == flags
    assert distribute.cpu_flags({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}) == flags
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        capped = distribute.cpu_flags({name: "avx2"})
        assert capped == {"avx2", "avx512f"}
        assert distribute.resolve_precision("auto", [], capped) == (None, None)


def test_mixed_precision_does_not_leak_into_the_next_job():
    import keras

    config = pretrain.PretrainConfig(
        data="unused", model_dir="unused", max_frames=16, global_batch_size=2,
        model=pretrain.ModelConfig(num_layers=1, hidden_dim=16, num_heads=2, ffn_dim=32),
        mixed_precision="bf16",
    )  # fmt: skip
    trainer = pretrain.Trainer(config, distribute.make_strategy("mirrored", 1))
    assert trainer.encoder.blocks[0].dtype_policy.name == "mixed_bfloat16"
    assert keras.mixed_precision.dtype_policy().name == "float32"
