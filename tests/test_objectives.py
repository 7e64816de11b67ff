"""Pretraining objectives: BEST-RQ token targets from the seed alone, codebook
usage on the example corpus, a token loss that falls on a learnable signal
and not on noise, span masking's budget and noise fill, and every objective's
encoder exported and embedded as before."""

import json
import math
import os
import subprocess

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, run_bin, small_pipeline

from m3bert_tf import schema
from m3bert_tf.data import masking, pipeline
from m3bert_tf.train import distribute, pretrain
from m3bert_tf.train.configs import ObjectiveConfig
from m3bert_tf.train.objectives import Quantizer, usage_entropy

ENV = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}


def test_token_targets_come_from_the_seed_alone():
    """The quantizer is a function of its settings and the run's seed: no
    global generator (so every worker, replica count and resume has it)."""
    x = tf.random.stateless_normal([2, 40, schema.NUM_FEATURES], [1, 2])
    np.random.seed(5)
    tf.random.set_seed(5)
    a = Quantizer("blocks", 64, 8, 2, seed=3)(x)
    np.random.seed(6)
    tf.random.set_seed(6)
    b = Quantizer("blocks", 64, 8, 2, seed=3)(x)
    other = Quantizer("blocks", 64, 8, 2, seed=4)(x)
    assert a.shape == (2, 20, 5) and a.dtype == tf.int32  # 2 stacked frames, 5 blocks
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert np.mean(a.numpy() != other.numpy()) > 0.5
    # A frame's tokens depend on that frame alone: a batch split or cut
    # differently gives the same tokens.
    np.testing.assert_array_equal(
        Quantizer("blocks", 64, 8, 2, seed=3)(x[1:, :20]).numpy(), a.numpy()[1:, :10]
    )
    one = Quantizer("all", 64, 8, 1, seed=3)(x)
    assert one.shape == (2, 40, 1)


def test_codebook_usage_on_the_example_corpus(corpus_shards):
    """Over the example corpus's frames, the codes are spread: the usage
    entropy of every layout is at least 0.6 of log(size) (measured 0.7-0.9)."""
    config = small_pipeline(corpus_shards, batch_size=8)
    batches = list(pipeline.make_pretrain_dataset(config).take(6))
    targets = tf.concat([b[1] for b in batches], 0)
    real = tf.concat([b[0]["padding_mask"] for b in batches], 0)
    for layout in ("blocks", "all"):
        tokens = Quantizer(layout, 512, 16, 1, seed=0)(targets)
        entropy = float(usage_entropy(tokens, real, 512))
        print(f"{layout}: codebook usage entropy {entropy:.3f} of log(512)")
        assert entropy >= 0.6, layout


def _batches(kind: str, seed: int, n: int, objective_config, frames=64, batch=8):
    """(inputs, targets, masks) batches of synthetic examples, span-masked.
    "learnable": each example holds one of 6 fixed vectors over all its
    frames, plus a little noise (a masked frame's token is told by its
    neighbours); "noise": every frame independent (a masked frame's token by
    nothing)."""
    prototypes = np.random.default_rng(0).normal(size=(6, 1, schema.NUM_FEATURES))
    rng = np.random.default_rng(seed)
    config = masking.MaskingConfig(policy="span", span_frames=8, span_prob=0.5)
    out = []
    for i in range(n):
        if kind == "learnable":
            level = prototypes[rng.integers(0, 6, batch)]
            x = level + 0.1 * rng.normal(size=(batch, frames, schema.NUM_FEATURES))
        else:
            x = rng.normal(size=(batch, frames, schema.NUM_FEATURES))
        x = tf.constant(x, tf.float32)
        masked = [
            masking.mask_compact(x[j], frames, tf.constant([seed, i * batch + j]), config)
            for j in range(batch)
        ]
        inputs = tf.stack([m[0] for m in masked])
        masks = {k: tf.stack([m[1][k] for m in masked]) for k in masked[0][1]}
        padding = tf.ones([batch, frames], tf.bool)
        out.append(({"features": inputs, "padding_mask": padding}, x, masks))
    return out


def _held_out_ce(trainer, batches):
    totals = None
    for batch in batches:
        sums, _ = trainer.eval_step(batch)
        sums = {k: float(v) for k, v in sums.items()}
        totals = sums if totals is None else {k: totals[k] + sums[k] for k in totals}
    return trainer.objective.eval_results(totals)["token_ce"]


def _marginal_entropy(objective, batches):
    """The cross-entropy of the best guess without audio: the tokens'
    frequencies over the masked frames (nats)."""
    counts = np.zeros(objective.quantizer.size)
    for inputs, targets, masks in batches:
        tokens = objective.quantizer(targets).numpy()
        frames = objective.token_frames(inputs, masks).numpy()
        np.add.at(counts, tokens[frames].ravel(), 1)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


@pytest.mark.parametrize("kind", ["learnable", "noise"])
def test_the_token_loss_falls_on_a_learnable_signal_and_not_on_noise(kind):
    objective = ObjectiveConfig(
        kind="tokens", codebooks="all", codebook_size=32, codebook_dim=8
    )
    config = pretrain.PretrainConfig(
        data="unused", model_dir="unused", max_frames=64, global_batch_size=8,
        train_steps=150, learning_rate=3e-3, warmup_fraction=0.05, objective=objective,
        model=pretrain.ModelConfig(num_layers=1, hidden_dim=32, num_heads=2, ffn_dim=64,
                                   dropout=0.0),
    )  # fmt: skip
    trainer = pretrain.Trainer(config, distribute.make_strategy("one_device", 1))
    train = _batches(kind, 1, config.train_steps, objective)
    held_out = _batches(kind, 2, 8, objective)
    before = _held_out_ce(trainer, held_out)
    data = iter(tf.data.Dataset.from_generator(
        lambda: iter(train), output_signature=tf.nest.map_structure(
            tf.TensorSpec.from_tensor, train[0]),
    ))  # fmt: skip
    for _ in range(config.train_steps):
        trainer.train_step(data)
    after = _held_out_ce(trainer, held_out)
    marginal = _marginal_entropy(trainer.objective, held_out)
    print(f"{kind}: token CE {before:.3f} -> {after:.3f}; no-audio guess {marginal:.3f}; "
          f"uniform {math.log(32):.3f}")  # fmt: skip
    if kind == "learnable":
        assert after < 0.5 * marginal  # told by the unmasked frames
    else:
        assert after > 0.95 * marginal  # nothing to learn but the frequencies


def test_span_masking_budget_blocks_and_noise():
    config = masking.MaskingConfig(policy="span")
    x = tf.random.stateless_normal([1294, schema.NUM_FEATURES], [0, 1])
    fractions = []
    for i in range(40):
        inputs, masks = masking.mask_compact(x, 1200, tf.constant([i, 3]), config)
        frames = masks["frame"].numpy()
        fractions.append(frames[:1200].mean())
        assert not frames[1200:].any() and not masks["channel"].numpy().any()
        # runs of masked frames are whole blocks of 17, but at the edges
        edges = np.flatnonzero(np.diff(np.concatenate([[0], frames[:1200], [0]])))
        runs = np.diff(edges)[::2]
        assert np.all(runs[1:-1] % 17 == 0)
        kept = inputs.numpy()[~frames]
        np.testing.assert_array_equal(kept, x.numpy()[~frames])
        noise = inputs.numpy()[frames]
        assert abs(noise.std() - 0.1) < 0.005 and abs(noise.mean()) < 0.005
    assert np.mean(fractions) == pytest.approx(0.6, abs=0.02)
    # about 71 blocks an example: the fraction's std is 0.058
    assert 0.4 < min(fractions) and max(fractions) < 0.8


def test_the_span_policy_keeps_the_other_policies_masks():
    """SPAN's seed is a new stream: the first three components draw from the
    same three-way split of an example's seed as before SPAN existed, so the
    paper's policies mask exactly as in release 0.2.0."""
    x = tf.random.stateless_normal([300, schema.NUM_FEATURES], [3, 4])
    seed = tf.constant([7, 9], tf.int64)
    _, masks = masking.mask_compact(x, 250, seed, masking.MaskingConfig(policy="ccm"))
    split = tf.random.experimental.stateless_split(seed, 3)
    np.testing.assert_array_equal(
        masks["channel"].numpy(), masking.contiguous_channel_mask(split[1]).numpy()
    )


@pytest.mark.parametrize(
    "objective, block", [("tokens", "transformer"), ("reconstruct+tokens", "conformer")]
)
def test_every_objective_exports_and_embeds_as_before(
    corpus_shards, tmp_path, objective, block
):
    """The heads used only in pretraining stay in the pretrainer: the run's
    encoder.keras and its SavedModel embed as a reconstruct run's do (with
    either block)."""
    from m3bert_tf import runs
    from m3bert_tf.serving import api, export

    run = tmp_path / "run"
    res = subprocess.run(
        run_bin("pretrain", f"--flagfile={os.path.join(ROOT, 'configs', 'tiny.flags')}",
                f"--data={corpus_shards}", f"--model_dir={run}", "--train_steps=2",
                "--max_frames=64", "--eval_batches=1", "--log_every=1", "--holdout_percent=20",
                f"--objective={objective}", "--masking=span", "--codebook_size=64",
                f"--block={block}", "--conv_kernel=7"),
        env=ENV, capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "token cross-entropy" in res.stderr and "codebook usage entropy" in res.stderr
    results = json.loads((run / "results.json").read_text())
    assert 0 < results["eval"]["codebook_entropy"] <= 1
    encoder = runs.load_encoder(str(run))
    assert type(encoder).__name__ == "M3BertEncoder"
    assert encoder.block == block and encoder.blocks[0].name == f"{block}_0"
    path = export.export_run(str(run), str(tmp_path / "export"), log=lambda m: None)
    features = tf.random.stateless_normal([2, 50, schema.NUM_FEATURES], [5, 6]).numpy()
    lengths = np.array([50, 31], np.int32)
    exported = api.load(path).backend("embed", features, lengths)
    in_memory = api.load(str(run)).backend("embed", features, lengths)
    np.testing.assert_allclose(
        exported["clip_embedding"], in_memory["clip_embedding"], atol=1e-5
    )


def test_the_clip_terms_positives_are_crops_of_one_record(corpus_shards):
    """With two views, each record gives two adjacent examples of a batch,
    cropped and masked with their own seeds; a resumed stream starts at the
    same pair."""
    config = pipeline.PipelineConfig(
        data=corpus_shards, max_frames=schema.CHUNK_FRAMES, batch_size=4, shuffle_buffer=8,
        holdout_percent=20, views=2, masking=masking.MaskingConfig(policy="span"),
    )  # fmt: skip
    batches = list(pipeline.make_pretrain_dataset(config).take(4))
    for _, targets, masks in batches:
        t, frames = targets.numpy(), masks["frame"].numpy()
        for i in (0, 2):  # clips under 30 s: no crop, the two views' targets are equal
            np.testing.assert_array_equal(t[i], t[i + 1])
            assert not np.array_equal(frames[i], frames[i + 1])  # masked apart
            assert not np.array_equal(t[i], t[(i + 2) % 4])  # another record
    resumed = pipeline.make_pretrain_dataset(config, start=2 * 4)
    for want, got in zip(batches[2:], resumed.take(2), strict=True):
        np.testing.assert_array_equal(got[1].numpy(), want[1].numpy())
    with pytest.raises(ValueError, match="batch_size=3 must be a multiple of views=2"):
        pipeline.PipelineConfig(data="x", batch_size=3, views=2)


def test_the_contrastive_term_finds_partners_and_not_strangers():
    from m3bert_tf.train.objectives import contrastive

    rng = np.random.default_rng(0)
    records = rng.normal(size=(4, 16))
    pairs = np.repeat(records, 2, axis=0) + 0.05 * rng.normal(size=(8, 16))
    ce, hit = contrastive(tf.constant(pairs, tf.float32), 0.1)
    assert np.all(hit.numpy() == 1) and ce.numpy().max() < 0.1
    ce, hit = contrastive(tf.constant(rng.normal(size=(8, 16)), tf.float32), 0.1)
    assert ce.numpy().mean() > 1.0  # unrelated crops: nothing tells the partner
